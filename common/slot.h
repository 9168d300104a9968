/*
 * Slots and the pending FIFO in shared memory. Every function here must be called with the
 * segment's lock held (shm_lock), and none of them blocks.
 */
#ifndef INCSEARCHD_SLOT_H
#define INCSEARCHD_SLOT_H

#include <stdint.h>

#include "shm.h"

/* Gives free slot INDEX to a new connection and returns its new generation. */
uint32_t slot_open(struct shm *shm, uint32_t index);

/* Frees slot INDEX. Its FIFO entry, if any, stays and is skipped when it reaches the head. */
void slot_close(struct shm *shm, uint32_t index);

/*
 * Stores query SEQ as the slot's latest, overwriting a pending one (latest wins). The slot
 * keeps its place in the FIFO if it already has one. Returns 1 when the slot was pushed onto
 * the FIFO, so the caller must wake the workers, and 0 otherwise. SUPERSEDED is set
 * when a pending query was overwritten.
 */
int slot_submit(struct shm *shm, uint32_t index, uint64_t seq, const char *query, uint32_t len,
                uint64_t now_ns, int *superseded);

/*
 * Records SEQ as the slot's latest query when the daemon replies to it itself (a short or
 * invalid query), so that no API call is made for an older pending one. Returns 1 if a
 * pending query was dropped.
 */
int slot_supersede(struct shm *shm, uint32_t index, uint64_t seq);

/* Marks query SEQ of slot INDEX answered, unless a newer one has replaced it meanwhile. */
void slot_answered(struct shm *shm, uint32_t index, uint32_t generation, uint64_t seq);

/*
 * Puts slot INDEX back at the head of the FIFO if SEQ is still its latest query and it is in
 * flight, after the worker calling the API for it died or the API asked for a pause. It was
 * taken from the head, so it keeps its turn and PENDING_SINCE_NS, the time it first became
 * pending. Returns 1 if requeued, so the caller must wake the workers.
 */
int slot_requeue(struct shm *shm, uint32_t index, uint32_t generation, uint64_t seq,
                 uint64_t pending_since_ns);

/* A query copied out of its slot by a worker. */
struct slot_job {
        uint32_t slot;
        uint32_t generation;
        uint64_t seq;
        uint64_t pending_since_ns;
        uint32_t query_len;
        char *query; /* caller's buffer of max_query_bytes */
};

enum slot_take_result {
        SLOT_TAKE_OK,       /* JOB is filled in and one token was spent */
        SLOT_TAKE_EMPTY,    /* no pending slot */
        SLOT_TAKE_NO_TOKEN, /* a slot is pending, but the next token is due in *wait_ns */
        SLOT_TAKE_EXPIRED,  /* JOB is filled in, no token spent: it waited max_wait_ns already */
        SLOT_TAKE_STALE,    /* slot_retry only: a newer query or a closed connection replaced it */
};

/*
 * Refills the bucket and, if a token is available, spends it on the oldest pending slot,
 * copies that query into JOB and marks the slot in flight. Entries of slots that were closed
 * or answered meanwhile are dropped from the head without spending a token. A head that has
 * been pending for the header's max_wait_ns is taken without a token, as SLOT_TAKE_EXPIRED.
 * With SLOT_TAKE_NO_TOKEN, *WAIT_NS is the time until a token is due or the head expires.
 */
enum slot_take_result slot_take(struct shm *shm, uint64_t now_ns, struct slot_job *job,
                                uint64_t *wait_ns);

/*
 * Spends a token on calling the API again for JOB, which the caller has in flight, if it is
 * still its slot's latest query. Returns SLOT_TAKE_OK, SLOT_TAKE_STALE, SLOT_TAKE_EXPIRED
 * without a token once it has been pending for max_wait_ns, or SLOT_TAKE_NO_TOKEN with
 * *WAIT_NS.
 */
/*
 * The token a take or a retry spends: one from BUCKET, or, without a bucket, one the caller
 * already has (HELD is 1, and the call clears it when it spends it). Without either, the head
 * can only expire.
 */
struct slot_token {
        struct bucket *bucket;
        int held;
};

/*
 * slot_take and slot_retry with the token from TOKEN instead of the header's bucket. With no
 * token to spend, SLOT_TAKE_NO_TOKEN's *WAIT_NS is the time until the head expires.
 */
enum slot_take_result slot_take_token(struct shm *shm, struct slot_token *token, uint64_t now_ns,
                                      struct slot_job *job, uint64_t *wait_ns);
enum slot_take_result slot_retry_token(struct shm *shm, struct slot_token *token, uint64_t now_ns,
                                       const struct slot_job *job, uint64_t *wait_ns);

enum slot_take_result slot_retry(struct shm *shm, uint64_t now_ns, const struct slot_job *job,
                                 uint64_t *wait_ns);

#endif
