/*
 * The shared result cache: results kept in Redis under redis_key_prefix + "cache:" + the
 * normalized query, so that a result one incsearchd instance got from the API serves the other
 * instances too. The daemon keeps one asynchronous hiredis connection on its event loop.
 *
 * Redis is an optimization here, never a dependency: a GET that fails, finds a bad value or
 * gets no reply within redis_timeout_ms counts as a miss, and while Redis is down no query waits
 * for it. Values read from Redis are checked like API bodies before a browser sees them.
 */
#ifndef INCSEARCHD_RCACHE_H
#define INCSEARCHD_RCACHE_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

struct rcache_lookup;

/*
 * Receives the outcome of a lookup: the results stored for the key, valid only during the call
 * and owned by the shared cache, or NULL for a miss, an error, a bad value or the deadline.
 */
typedef void rcache_done_fn(void *arg, json_object *results);

/* The figures of incsearchctl status and GET /metrics. */
struct rcache_stats {
        const char *state; /* "off", "connecting", "up" or "down" */
        uint64_t hits, misses, errors, bad_values;
        uint64_t skipped; /* lookups not tried because Redis was down or too far behind */
        uint64_t stored;  /* SET commands sent */
};

/* Connects when [cache] shared = redis. Returns 0, or -1 when out of memory. */
int rcache_init(void);

/* Disconnects, and drops every pending lookup without calling it back. */
void rcache_free(void);

/* Applies a reloaded configuration: connects, reconnects to a new address, or disconnects. */
void rcache_reload(void);

/*
 * Starts a GET for the normalized query KEY. Returns a handle, or NULL when the shared cache
 * is off or Redis is down, in which case DONE is never called. Otherwise DONE is called once
 * with ARG from the event loop, unless rcache_cancel comes first.
 */
struct rcache_lookup *rcache_get(const char *key, size_t key_len, rcache_done_fn *done, void *arg);

/* Stops LOOKUP from calling back; the reply, when it comes, still fills the counters. */
void rcache_cancel(struct rcache_lookup *lookup);

/* Stores RESULTS, JSON text from the API, for KEY with a TTL of shared_ttl_ms. */
void rcache_store(const char *key, size_t key_len, const char *results, size_t results_len);

void rcache_stats(struct rcache_stats *stats);

#endif
