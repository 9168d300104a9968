/*
 * Fewer API calls for the same answers: a result cache keyed by the normalized query, bounded
 * in bytes and aged by [cache] ttl_ms, and coalescing, where a query equal to one already
 * queued or in flight waits for that query's result instead of spending a token.
 *
 * Each slot belongs to at most one flight, the set of clients waiting for one normalized
 * query: its leader, whose slot carries the query through the FIFO and the API, and waiters,
 * whose slots stay idle. A flight ends when any result for its query arrives.
 */
#ifndef INCSEARCHD_CACHE_H
#define INCSEARCHD_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "incsearchd.h"

/* Sets up the cache and the flights for CONF. Returns 0, or -1 when out of memory. */
int cache_init(void);

void cache_free(void);

/*
 * Writes the normalized form of LEN bytes of valid UTF-8 QUERY into OUT: lowercase per
 * Unicode (C.UTF-8), leading and trailing white space removed, inner runs of white space
 * collapsed to one space. OUT needs 4 * LEN + 1 bytes. Returns the length written.
 */
size_t cache_normalize(const char *query, size_t len, char *out);

/*
 * Takes CLIENT out of the flight it belongs to, before it submits query SEQ. A leader's
 * flight passes to its first waiter, whose query is queued in its own slot.
 */
void cache_leave(struct client *client);

/*
 * Answers query SEQ from the cache, or attaches CLIENT to the flight of an equal query.
 * Returns 1 when the query needs nothing more from the caller, or 0 after making CLIENT the
 * leader of a new flight, when the caller must queue it in CLIENT's slot.
 */
int cache_submit(struct client *client, int64_t seq, const char *query, size_t len);

/*
 * Reads a worker's reply BODY for the query SEQ of SLOT, stores its results and answers every
 * client waiting for an equal query. The caller still delivers BODY to SLOT's client.
 */
void cache_result(uint32_t slot, uint32_t generation, uint64_t seq, const char *body, size_t len);

#endif
