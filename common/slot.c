#include "slot.h"

#include <string.h>

static void slot_fifo_push(struct shm *shm, uint32_t index)
{
        struct shm_header *h = shm->header;
        uint32_t tail = (h->fifo_head + h->fifo_count) % h->slot_count;

        /* Each slot is in the FIFO at most once (in_fifo), so it never contains more than
         * slot_count.
         */
        shm->fifo[tail] = index;
        h->fifo_count++;
        shm_slot(shm, index)->in_fifo = 1;
}

static void slot_fifo_push_front(struct shm *shm, uint32_t index)
{
        struct shm_header *h = shm->header;

        h->fifo_head = (h->fifo_head + h->slot_count - 1) % h->slot_count;
        shm->fifo[h->fifo_head] = index;
        h->fifo_count++;
        shm_slot(shm, index)->in_fifo = 1;
}

static void slot_fifo_pop(struct shm *shm)
{
        struct shm_header *h = shm->header;

        shm_slot(shm, shm->fifo[h->fifo_head])->in_fifo = 0;
        h->fifo_head = (h->fifo_head + 1) % h->slot_count;
        h->fifo_count--;
}

static int slot_make_pending(struct shm *shm, struct slot *s, uint32_t index, uint64_t now_ns)
{
        s->state = SLOT_PENDING;
        s->pending_since_ns = now_ns;
        if (s->in_fifo)
                return 0;
        slot_fifo_push(shm, index);
        return 1;
}

uint32_t slot_open(struct shm *shm, uint32_t index)
{
        struct slot *s = shm_slot(shm, index);

        s->generation++;
        s->state = SLOT_IDLE;
        s->seq = 0;
        s->query_len = 0;
        return s->generation;
}

void slot_close(struct shm *shm, uint32_t index)
{
        struct slot *s = shm_slot(shm, index);

        s->generation++;
        s->state = SLOT_FREE;
        s->query_len = 0;
}

int slot_submit(struct shm *shm, uint32_t index, uint64_t seq, const char *query, uint32_t len,
                uint64_t now_ns, int *superseded)
{
        struct slot *s = shm_slot(shm, index);

        if (len > shm->header->max_query_bytes)
                len = shm->header->max_query_bytes;
        memcpy(s->query, query, len);
        s->query_len = len;
        s->seq = seq;
        *superseded = s->state == SLOT_PENDING;
        if (s->state == SLOT_PENDING)
                return 0; /* keeps its place and its pending_since_ns */
        return slot_make_pending(shm, s, index, now_ns);
}

int slot_supersede(struct shm *shm, uint32_t index, uint64_t seq)
{
        struct slot *s = shm_slot(shm, index);
        int dropped = s->state == SLOT_PENDING;

        s->seq = seq;
        s->query_len = 0;
        if (s->state == SLOT_PENDING)
                s->state = SLOT_IDLE;
        return dropped;
}

void slot_answered(struct shm *shm, uint32_t index, uint32_t generation, uint64_t seq)
{
        struct slot *s = shm_slot(shm, index);

        if (s->generation == generation && s->state == SLOT_INFLIGHT && s->seq == seq)
                s->state = SLOT_IDLE;
}

int slot_requeue(struct shm *shm, uint32_t index, uint32_t generation, uint64_t seq,
                 uint64_t pending_since_ns)
{
        struct slot *s = shm_slot(shm, index);

        if (s->generation != generation || s->state != SLOT_INFLIGHT || s->seq != seq)
                return 0;
        s->state = SLOT_PENDING;
        s->pending_since_ns = pending_since_ns;
        if (s->in_fifo)
                return 0;
        slot_fifo_push_front(shm, index);
        return 1;
}

/* Spends TOKEN's token: returns 0, or -1 with *WAIT_NS (UINT64_MAX when none can come). */
static int slot_spend(struct slot_token *token, uint64_t now_ns, uint64_t *wait_ns)
{
        if (token->bucket != NULL)
                return bucket_take(token->bucket, now_ns, wait_ns);
        if (token->held) {
                token->held = 0;
                return 0;
        }
        *wait_ns = UINT64_MAX;
        return -1;
}

enum slot_take_result slot_take_token(struct shm *shm, struct slot_token *token, uint64_t now_ns,
                                      struct slot_job *job, uint64_t *wait_ns)
{
        struct shm_header *h = shm->header;
        struct slot *s;
        uint32_t index;

        uint64_t expires_ns;
        enum slot_take_result result = SLOT_TAKE_OK;

        for (;;) {
                if (h->fifo_count == 0)
                        return SLOT_TAKE_EMPTY;
                index = shm->fifo[h->fifo_head];
                s = shm_slot(shm, index);
                if (s->state == SLOT_PENDING)
                        break;
                slot_fifo_pop(shm);
        }
        expires_ns = s->pending_since_ns + h->max_wait_ns;
        if (h->max_wait_ns > 0 && now_ns >= expires_ns) {
                result = SLOT_TAKE_EXPIRED;
        } else if (slot_spend(token, now_ns, wait_ns) < 0) {
                if (h->max_wait_ns > 0 && expires_ns - now_ns < *wait_ns)
                        *wait_ns = expires_ns - now_ns;
                return SLOT_TAKE_NO_TOKEN;
        }

        slot_fifo_pop(shm);
        s->state = SLOT_INFLIGHT;
        job->slot = index;
        job->generation = s->generation;
        job->seq = s->seq;
        job->pending_since_ns = s->pending_since_ns;
        job->query_len = s->query_len;
        memcpy(job->query, s->query, s->query_len);
        return result;
}

enum slot_take_result slot_take(struct shm *shm, uint64_t now_ns, struct slot_job *job,
                                uint64_t *wait_ns)
{
        struct slot_token token = {.bucket = &shm->header->bucket};

        return slot_take_token(shm, &token, now_ns, job, wait_ns);
}

enum slot_take_result slot_retry_token(struct shm *shm, struct slot_token *token, uint64_t now_ns,
                                       const struct slot_job *job, uint64_t *wait_ns)
{
        struct slot *s = shm_slot(shm, job->slot);
        uint64_t expires_ns = job->pending_since_ns + shm->header->max_wait_ns;

        if (s->generation != job->generation || s->state != SLOT_INFLIGHT || s->seq != job->seq)
                return SLOT_TAKE_STALE;
        if (shm->header->max_wait_ns > 0 && now_ns >= expires_ns)
                return SLOT_TAKE_EXPIRED;
        if (slot_spend(token, now_ns, wait_ns) < 0) {
                if (shm->header->max_wait_ns > 0 && expires_ns - now_ns < *wait_ns)
                        *wait_ns = expires_ns - now_ns;
                return SLOT_TAKE_NO_TOKEN;
        }
        return SLOT_TAKE_OK;
}

enum slot_take_result slot_retry(struct shm *shm, uint64_t now_ns, const struct slot_job *job,
                                 uint64_t *wait_ns)
{
        struct slot_token token = {.bucket = &shm->header->bucket};

        return slot_retry_token(shm, &token, now_ns, job, wait_ns);
}
