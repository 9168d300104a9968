#include "limit.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/*
 * Open connections per address: an open-addressing hash table with linear probing. It keeps
 * one entry per address with open connections, so it is empty when the daemon is idle, and it
 * doubles when more than half full.
 */
struct limit_entry {
        struct limit_addr addr;
        uint32_t count; /* 0 marks a free entry */
};

static struct limit_entry *limit_table;
static uint32_t limit_capacity; /* entries, a power of two */
static uint32_t limit_used;

/* The new-connection bucket, in thousandths of a token so that refills never round to 0. */
static uint64_t limit_tokens_milli;
static uint64_t limit_refilled_ms;
static int limit_bucket_started;

int limit_addr_from(const struct sockaddr *sa, struct limit_addr *key)
{
        memset(key, 0, sizeof(*key));
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

                key->bytes[10] = 0xFF;
                key->bytes[11] = 0xFF;
                memcpy(key->bytes + 12, &sin->sin_addr, 4);
                return 0;
        }
        if (sa->sa_family == AF_INET6) {
                memcpy(key->bytes, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
                return 0;
        }
        return -1;
}

int limit_new_connection(uint32_t per_second, uint64_t now_ms)
{
        uint64_t burst_milli = (uint64_t)per_second * 1000;

        if (per_second == 0)
                return 1;
        if (!limit_bucket_started || limit_tokens_milli > burst_milli) {
                limit_bucket_started = 1;
                limit_tokens_milli = burst_milli;
                limit_refilled_ms = now_ms;
        }
        if (now_ms > limit_refilled_ms) {
                /* Capped at one second of refill, which fills the bucket, so this cannot overflow.
                 */
                uint64_t elapsed = now_ms - limit_refilled_ms;

                if (elapsed > 1000)
                        elapsed = 1000;
                limit_tokens_milli += elapsed * per_second;
                if (limit_tokens_milli > burst_milli)
                        limit_tokens_milli = burst_milli;
                limit_refilled_ms = now_ms;
        }
        if (limit_tokens_milli < 1000)
                return 0;
        limit_tokens_milli -= 1000;
        return 1;
}

static uint32_t limit_hash(const struct limit_addr *key)
{
        uint32_t h = 2166136261u; /* FNV-1a */

        for (int i = 0; i < 16; i++)
                h = (h ^ key->bytes[i]) * 16777619u;
        return h;
}

/* Returns the entry for KEY, or the free entry where it would go. The table is never full. */
static struct limit_entry *limit_find(struct limit_entry *table, uint32_t capacity,
                                      const struct limit_addr *key)
{
        uint32_t i = limit_hash(key) & (capacity - 1);

        while (table[i].count != 0 && memcmp(&table[i].addr, key, sizeof(*key)) != 0)
                i = (i + 1) & (capacity - 1);
        return &table[i];
}

static int limit_grow(void)
{
        uint32_t capacity = limit_capacity == 0 ? 64 : limit_capacity * 2;
        struct limit_entry *table = calloc(capacity, sizeof(*table));

        if (table == NULL)
                return -1;
        for (uint32_t i = 0; i < limit_capacity; i++) {
                if (limit_table[i].count != 0)
                        *limit_find(table, capacity, &limit_table[i].addr) = limit_table[i];
        }
        free(limit_table);
        limit_table = table;
        limit_capacity = capacity;
        return 0;
}

int limit_ip_acquire(const struct limit_addr *key, uint32_t max)
{
        struct limit_entry *entry;

        if (max == 0)
                return 1;
        if ((limit_used + 1) * 2 > limit_capacity && limit_grow() < 0)
                return -1;
        entry = limit_find(limit_table, limit_capacity, key);
        if (entry->count >= max)
                return 0;
        if (entry->count == 0) {
                entry->addr = *key;
                limit_used++;
        }
        entry->count++;
        return 1;
}

void limit_ip_release(const struct limit_addr *key)
{
        struct limit_entry *entry;
        uint32_t hole, i;

        if (limit_capacity == 0)
                return;
        entry = limit_find(limit_table, limit_capacity, key);
        if (entry->count == 0 || --entry->count > 0)
                return;
        limit_used--;

        /* Deletion without tombstones: shift back later entries that probed past the hole. */
        hole = (uint32_t)(entry - limit_table);
        for (i = (hole + 1) & (limit_capacity - 1); limit_table[i].count != 0;
             i = (i + 1) & (limit_capacity - 1)) {
                uint32_t home = limit_hash(&limit_table[i].addr) & (limit_capacity - 1);

                /* The entry may move to the hole only if its home is not between hole and i. */
                if (((i - home) & (limit_capacity - 1)) >= ((i - hole) & (limit_capacity - 1))) {
                        limit_table[hole] = limit_table[i];
                        limit_table[i].count = 0;
                        hole = i;
                }
        }
}

uint32_t limit_ip_count(const struct limit_addr *key)
{
        if (limit_capacity == 0)
                return 0;
        return limit_find(limit_table, limit_capacity, key)->count;
}
