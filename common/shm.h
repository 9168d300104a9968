/*
 * The shared-memory segment that the daemon creates and every worker maps. Layout, in order:
 *
 *   struct shm_header    magic, sizes, the lock, the token bucket, the FIFO's head, counters
 *   uint32_t fifo[slot_count]      ring of slot indices waiting for an API call, oldest first
 *   struct slot ...      slot_count slots of slot_size bytes, one per WebSocket connection
 *
 * One process-shared semaphore (lock) guards the bucket, the FIFO and every slot's state, seq
 * and query. Critical sections hold integer arithmetic and short copies only: no allocation, no
 * logging, no system call but the semaphore's own.
 */
#ifndef INCSEARCHD_SHM_H
#define INCSEARCHD_SHM_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bucket.h"
#include "histogram.h"

#define SHM_MAGIC 0x31445349u /* "ISD1" in memory order */
#define SHM_LAYOUT_VERSION 6
#define SHM_MAX_WORKERS 64
#define SHM_MAX_INFLIGHT 16 /* API calls one worker may have in flight at once */

enum slot_state {
        SLOT_FREE,     /* no connection */
        SLOT_IDLE,     /* connected; its latest query is answered or needs no API call */
        SLOT_PENDING,  /* its latest query waits for an API call */
        SLOT_INFLIGHT, /* a worker is calling the API for seq */
};

struct slot {
        uint32_t generation;       /* increases each time the slot is given to a connection */
        uint32_t state;            /* enum slot_state */
        uint64_t seq;              /* the connection's latest query */
        uint64_t pending_since_ns; /* CLOCK_MONOTONIC time it became SLOT_PENDING */
        uint32_t in_fifo;          /* its index is in the FIFO, so it must not be pushed again */
        uint32_t query_len;        /* bytes in query */
        char query[];              /* max_query_bytes bytes, not NUL-terminated */
};

/* One query a worker holds, so that the supervisor can requeue it if the worker dies. */
struct shm_job {
        uint32_t busy; /* 1 while calling the API, or waiting to retry, for slot, generation, seq */
        uint32_t slot;
        uint32_t generation;
        uint32_t reserved;
        uint64_t seq;
        uint64_t pending_since_ns; /* CLOCK_MONOTONIC time the query first became pending */
};

struct shm_worker {
        _Atomic int32_t pid;
        uint32_t reserved;
        _Atomic uint64_t requests; /* API calls this worker slot has made, across restarts */
        struct shm_job jobs[SHM_MAX_INFLIGHT];
};

/* Counters that any process increments without the lock; they only ever grow. */
struct shm_counters {
        _Atomic uint64_t queries;       /* queries received from clients */
        _Atomic uint64_t superseded;    /* pending queries overwritten by a newer one */
        _Atomic uint64_t api_calls;     /* calls made to the API */
        _Atomic uint64_t api_errors;    /* calls that ended in an error of any kind */
        _Atomic uint64_t api_timeouts;  /* calls that took longer than timeout_ms */
        _Atomic uint64_t api_5xx;       /* responses with an HTTP 5xx status */
        _Atomic uint64_t api_429;       /* responses with HTTP 429 */
        _Atomic uint64_t api_bad_body;  /* 2xx answers whose body was not valid JSON or too large */
        _Atomic uint64_t api_failed;    /* other errors: no connection, other 4xx, URL too long */
        _Atomic uint64_t clients_total; /* WebSocket connections upgraded since start */
        _Atomic uint64_t delivered;     /* results and errors sent to clients */
        _Atomic uint64_t stale_dropped; /* results for an older seq or a closed connection */
        _Atomic uint64_t requeued;      /* queries put back after their worker died */
        _Atomic uint64_t worker_restarts;
        _Atomic uint64_t api_retries; /* calls repeated after a timeout, connection error or 5xx */
        _Atomic uint64_t api_throttled; /* 429 and 503 answers, and zero X-RateLimit-Remaining */
        _Atomic uint64_t pauses;        /* times the API's signals paused every worker */
        _Atomic uint64_t throttle_requeued; /* queries put back on the FIFO after a 429 or 503 */
        _Atomic uint64_t expired;           /* queries rejected because max_wait_ms passed */
        _Atomic uint64_t cache_hits;        /* queries answered from the result cache */
        _Atomic uint64_t coalesced;         /* queries that waited for an equal query's call */

        /* The front's limits: each counts the connections or messages it turned away. */
        _Atomic uint64_t rejected_max_connections; /* 503, max_connections reached */
        _Atomic uint64_t rejected_rate;            /* 503, max_new_connections_per_second */
        _Atomic uint64_t rejected_per_ip;          /* 429, max_connections_per_ip */
        _Atomic uint64_t rejected_origin;          /* 403, Origin not in allowed_origins */
        _Atomic uint64_t rejected_header_size;     /* 431, request head over max_header_bytes */
        _Atomic uint64_t rejected_handshake;       /* other 4xx answers to a handshake */
        _Atomic uint64_t handshake_timeouts;       /* no request head within the timeout */
        _Atomic uint64_t protocol_errors;          /* connections failed with 1002, 1003, 1007 */
        _Atomic uint64_t messages_too_big;         /* connections failed with 1009 */
        _Atomic uint64_t queries_too_long;         /* query_too_long errors */
        _Atomic uint64_t results_dropped_slow;     /* results replaced by a newer one unsent */
        _Atomic uint64_t closed_slow;              /* connections over max_output_bytes */
        _Atomic uint64_t pings_sent;               /* keepalive pings */
        _Atomic uint64_t ping_timeouts;            /* peers closed for not answering a ping */
};

/*
 * The shared rate limit's state on this host with rate_limit_backend = redis. Workers write it:
 * a worker whose Redis command fails sets down, one whose command succeeds clears it, and the
 * one that changes it logs the switch, so each switch is logged once per host.
 */
struct shm_redis {
        _Atomic uint32_t down;   /* 1 while Redis cannot be reached and the fallback applies */
        _Atomic uint32_t drain;  /* 1: empty the shared bucket when Redis is back (local_share) */
        _Atomic uint64_t errors; /* failed connects, error replies and commands past the timeout */
        _Atomic uint64_t switches; /* changes between up and down, both ways */
        _Atomic uint64_t granted;  /* tokens Redis gave this host's workers */
        _Atomic uint64_t dropped;  /* granted tokens that found no query left to spend them on */
        _Atomic uint64_t down_since_ns;  /* when the host last switched to its fallback */
        _Atomic uint64_t pause_until_ns; /* end of the API's pause that Redis last reported */
        /* redis_fallback = local_share: rate / expected_hosts, emptied at each switch; under lock
         */
        struct bucket fallback;
};

struct shm_header {
        uint32_t magic;
        uint32_t layout_version;
        uint32_t slot_count;
        uint32_t max_query_bytes;
        uint64_t slot_size;  /* bytes per slot, a multiple of 64 */
        uint64_t total_size; /* bytes of the whole segment */
        uint64_t created_ns; /* CLOCK_MONOTONIC */
        int32_t daemon_pid;  /* the incsearchd that created the segment */

        sem_t lock;
        _Atomic int32_t lock_owner; /* pid holding lock, 0 when free */
        uint64_t max_wait_ns;       /* a query pending longer gets upstream_rejected */

        /* During a pause that the API requested, bucket.last_refill_ns is the pause's end. */
        struct bucket bucket;
        uint32_t fifo_head;  /* index into fifo of the oldest entry */
        uint32_t fifo_count; /* entries in fifo, at most slot_count */

        struct shm_counters counters;
        struct shm_redis redis;
        struct histogram queue_wait; /* from a query entering the FIFO to a worker taking it */
        struct histogram api_time;   /* one API call, as the worker timed it */
        struct histogram keystroke;  /* from a query's arrival to its result being sent */
        struct shm_worker workers[SHM_MAX_WORKERS];
};

/* A process's handle on the mapped segment. */
struct shm {
        struct shm_header *header;
        uint32_t *fifo;
        char *slots;
        size_t size;
        pid_t pid; /* this process, recorded as the lock owner */
};

/*
 * Creates the segment NAME, removing a stale one left by an earlier run, and initialises the
 * header, the lock, an empty bucket and SLOT_COUNT free slots. The bucket starts empty so that
 * a restart cannot send the API a second burst. Returns 0, or -1 with errno; EBUSY means a
 * running incsearchd (its pid in *OWNER) uses NAME.
 */
int shm_create(struct shm *shm, const char *name, uint32_t slot_count, uint32_t max_query_bytes,
               uint64_t rate_milli, uint32_t burst, pid_t *owner);

/* Maps an existing segment and checks its magic, layout version and sizes. On failure returns
 * -1 and writes the reason into ERROR. */
int shm_attach(struct shm *shm, const char *name, char *error, size_t error_len);

void shm_detach(struct shm *shm);
void shm_destroy(struct shm *shm, const char *name);

void shm_lock(struct shm *shm);

/* Like shm_lock, but gives up after TIMEOUT_MS and returns -1. */
int shm_lock_timed(struct shm *shm, unsigned timeout_ms);

void shm_unlock(struct shm *shm);

uint64_t shm_now_ns(void);

static inline struct slot *shm_slot(const struct shm *shm, uint32_t index)
{
        return (struct slot *)(shm->slots + (size_t)index * shm->header->slot_size);
}

#define shm_count(shm, name)                                                                       \
        atomic_fetch_add_explicit(&(shm)->header->counters.name, 1, memory_order_relaxed)
#define shm_counter(shm, name)                                                                     \
        atomic_load_explicit(&(shm)->header->counters.name, memory_order_relaxed)

#endif
