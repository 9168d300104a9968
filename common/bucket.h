/*
 * The token bucket that paces calls to the API: tokens accrue at an average rate up to a
 * capacity (the burst), and each call spends one. All arithmetic is in integers, and time comes
 * from the caller (CLOCK_MONOTONIC in nanoseconds) so that tests can inject a clock.
 */
#ifndef INCSEARCHD_BUCKET_H
#define INCSEARCHD_BUCKET_H

#include <stdint.h>

#define BUCKET_UNIT 1000000 /* micro-tokens per token */

struct bucket {
        int64_t tokens;          /* micro-tokens available, 0 <= tokens <= capacity */
        int64_t capacity;        /* micro-tokens: burst * BUCKET_UNIT */
        uint64_t rate_milli;     /* tokens per 1000 seconds, > 0 */
        uint64_t last_refill_ns; /* CLOCK_MONOTONIC time the tokens were last brought up to date */
};

/* Sets up a full bucket. RATE_MILLI must be 1..1e9 and BURST 1..1e6 (the config loader checks). */
void bucket_init(struct bucket *b, uint64_t rate_milli, uint32_t burst, uint64_t now_ns);

/* Adds the tokens earned since the last refill, up to the capacity. A clock that seems to go
 * backwards adds nothing. */
void bucket_refill(struct bucket *b, uint64_t now_ns);

/*
 * Refills, then spends one token and returns 0, or returns -1 and stores in WAIT_NS how long
 * until a whole token is due.
 */
int bucket_take(struct bucket *b, uint64_t now_ns, uint64_t *wait_ns);

/*
 * Empties the bucket and stops the refill until UNTIL_NS, for an API that asked for a pause.
 * A pause never ends earlier than one already in force. Returns 1 if it extended the pause.
 */
int bucket_pause(struct bucket *b, uint64_t until_ns);

/*
 * Changes the rate and the burst at NOW_NS, for a reload. Tokens earned until now count at the
 * old rate, and a smaller burst clips them down. A larger burst never adds tokens, so a reload
 * cannot send the API an extra burst.
 */
void bucket_reconfigure(struct bucket *b, uint64_t rate_milli, uint32_t burst, uint64_t now_ns);

#endif
