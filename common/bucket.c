#include "bucket.h"

/* Micro-tokens earned per nanosecond is rate_milli / 1e6, so tokens = ns * rate_milli / 1e6. */
#define BUCKET_NS_SCALE 1000000ULL

void bucket_init(struct bucket *b, uint64_t rate_milli, uint32_t burst, uint64_t now_ns)
{
        b->capacity = (int64_t)burst * BUCKET_UNIT;
        b->tokens = b->capacity;
        b->rate_milli = rate_milli;
        b->last_refill_ns = now_ns;
}

void bucket_refill(struct bucket *b, uint64_t now_ns)
{
        uint64_t elapsed, fill_ns, earned;

        if (now_ns <= b->last_refill_ns)
                return;
        elapsed = now_ns - b->last_refill_ns;

        /*
         * Cap the elapsed time at what fills an empty bucket, so the product below stays under
         * 2^63: capacity <= 1e12 micro-tokens gives at most about 1e18.
         */
        fill_ns = (uint64_t)b->capacity * BUCKET_NS_SCALE / b->rate_milli + 1;
        if (elapsed >= fill_ns) {
                b->tokens = b->capacity;
                b->last_refill_ns = now_ns;
                return;
        }
        earned = elapsed * b->rate_milli / BUCKET_NS_SCALE;
        if (earned == 0)
                return; /* keep last_refill_ns, so that short intervals are not rounded away */

        /* Advance the clock only by the time that earned whole micro-tokens, keeping the rest. */
        b->last_refill_ns += earned * BUCKET_NS_SCALE / b->rate_milli;
        b->tokens += (int64_t)earned;
        if (b->tokens >= b->capacity) {
                b->tokens = b->capacity;
                b->last_refill_ns = now_ns;
        }
}

int bucket_take(struct bucket *b, uint64_t now_ns, uint64_t *wait_ns)
{
        uint64_t missing;

        bucket_refill(b, now_ns);
        if (b->tokens >= BUCKET_UNIT) {
                b->tokens -= BUCKET_UNIT;
                return 0;
        }
        missing = (uint64_t)(BUCKET_UNIT - b->tokens);
        *wait_ns = (missing * BUCKET_NS_SCALE + b->rate_milli - 1) / b->rate_milli;
        if (now_ns > b->last_refill_ns) {
                uint64_t since = now_ns - b->last_refill_ns;

                *wait_ns = *wait_ns > since ? *wait_ns - since : 1;
        } else {
                /* A pause: the refill starts only at last_refill_ns. */
                *wait_ns += b->last_refill_ns - now_ns;
        }
        return -1;
}

int bucket_pause(struct bucket *b, uint64_t until_ns)
{
        b->tokens = 0;
        if (until_ns <= b->last_refill_ns)
                return 0;
        b->last_refill_ns = until_ns;
        return 1;
}

void bucket_reconfigure(struct bucket *b, uint64_t rate_milli, uint32_t burst, uint64_t now_ns)
{
        bucket_refill(b, now_ns);
        b->rate_milli = rate_milli;
        b->capacity = (int64_t)burst * BUCKET_UNIT;
        if (b->tokens > b->capacity)
                b->tokens = b->capacity;
        /*
         * Time not yet turned into tokens starts over, so the new rate never pays for it twice.
         * A pause keeps its end: last_refill_ns then lies in the future.
         */
        if (now_ns > b->last_refill_ns)
                b->last_refill_ns = now_ns;
}
