/*
 * Admission limits checked when a connection is accepted: the rate of new connections and the
 * open connections per client address. Both live in the daemon process only.
 */
#ifndef INCSEARCHD_LIMIT_H
#define INCSEARCHD_LIMIT_H

#include <stdint.h>
#include <sys/socket.h>

/* A client address as a table key: IPv4 addresses are stored as IPv4-mapped IPv6. */
struct limit_addr {
        uint8_t bytes[16];
};

/* Converts SA (AF_INET or AF_INET6) into KEY. Returns 0, or -1 for another family. */
int limit_addr_from(const struct sockaddr *sa, struct limit_addr *key);

/*
 * Takes one new-connection token at NOW_MS (CLOCK_MONOTONIC milliseconds) from a bucket of
 * PER_SECOND tokens a second and a burst of the same size. Returns 1 if one was left; always 1
 * when PER_SECOND is 0.
 */
int limit_new_connection(uint32_t per_second, uint64_t now_ms);

/*
 * Counts one more connection from KEY unless it already has MAX (0 for no limit). Returns 1 if
 * counted, 0 if over the limit, -1 when out of memory. Each counted one needs limit_ip_release.
 */
int limit_ip_acquire(const struct limit_addr *key, uint32_t max);
void limit_ip_release(const struct limit_addr *key);

/* Returns the open connections counted for KEY, for tests and logs. */
uint32_t limit_ip_count(const struct limit_addr *key);

#endif
