#include "cache.h"

#include <inttypes.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include <json-c/json.h>

#include "log.h"
#include "rcache.h"
#include "reply.h"
#include "slot.h"

#define CACHE_ENTRY_BUCKETS 4096
#define CACHE_SWEEP_MS 250 /* how often flights are checked for leaders that left */

struct cache_entry {
        struct cache_entry *hash_next;
        struct cache_entry *lru_prev, *lru_next; /* most recently used first */
        char *results;                           /* JSON text of the results, after key */
        size_t results_len;
        uint64_t stored_ns; /* CLOCK_MONOTONIC */
        size_t bytes;       /* counted against [cache] max_bytes */
        size_t key_len;
        char key[];
};

struct cache_flight;

/* A slot's part in a flight; cache.members has one per slot. */
struct cache_member {
        struct cache_flight *flight; /* NULL when in none */
        struct cache_member *next;   /* next waiter of the flight */
        uint32_t slot;
        uint32_t generation;
        int64_t seq;
        char *query; /* the client's own text, for its reply */
        size_t query_len;
};

struct cache_flight {
        struct cache_flight *hash_next;
        struct cache_flight *all_prev, *all_next;
        struct cache_member *leader; /* whose slot carries the query */
        struct cache_member *waiters;
        struct rcache_lookup *lookup; /* the shared cache's GET, NULL when none is under way */
        size_t key_len;
        char key[];
};

static struct {
        struct cache_entry *entries[CACHE_ENTRY_BUCKETS];
        struct cache_entry *lru_head, *lru_tail;
        uint64_t bytes;
        struct cache_flight **flights; /* hash buckets, max_clients of them */
        struct cache_flight *all;
        struct cache_member *members; /* by slot */
        char *key;                    /* scratch for a normalized query */
        locale_t utf8;
        struct event *sweep;
} cache;

static uint64_t cache_hash(const char *key, size_t len)
{
        uint64_t h = 14695981039346656037ULL; /* FNV-1a */

        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
        return h;
}

/* Decodes one code point of valid UTF-8 at S, storing its length in *LEN. */
static uint32_t cache_decode(const unsigned char *s, size_t *len)
{
        if (s[0] < 0x80) {
                *len = 1;
                return s[0];
        }
        if (s[0] < 0xE0) {
                *len = 2;
                return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
        }
        if (s[0] < 0xF0) {
                *len = 3;
                return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        }
        *len = 4;
        return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
               (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

static size_t cache_encode(uint32_t c, char *out)
{
        if (c < 0x80) {
                out[0] = (char)c;
                return 1;
        }
        if (c < 0x800) {
                out[0] = (char)(0xC0 | c >> 6);
                out[1] = (char)(0x80 | (c & 0x3F));
                return 2;
        }
        if (c < 0x10000) {
                out[0] = (char)(0xE0 | c >> 12);
                out[1] = (char)(0x80 | (c >> 6 & 0x3F));
                out[2] = (char)(0x80 | (c & 0x3F));
                return 3;
        }
        out[0] = (char)(0xF0 | c >> 18);
        out[1] = (char)(0x80 | (c >> 12 & 0x3F));
        out[2] = (char)(0x80 | (c >> 6 & 0x3F));
        out[3] = (char)(0x80 | (c & 0x3F));
        return 4;
}

size_t cache_normalize(const char *query, size_t len, char *out)
{
        const unsigned char *s = (const unsigned char *)query;
        size_t i = 0, n = 0, step;
        int space = 0;

        if (cache.utf8 == (locale_t)0)
                cache.utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
        while (i < len) {
                uint32_t c = cache_decode(s + i, &step);

                if (i + step > len)
                        break; /* a truncated character; the WebSocket layer lets none through */
                i += step;
                if (iswspace_l((wint_t)c, cache.utf8)) {
                        space = n > 0;
                        continue;
                }
                if (space)
                        out[n++] = ' ';
                space = 0;
                n += cache_encode((uint32_t)towlower_l((wint_t)c, cache.utf8), out + n);
        }
        out[n] = '\0';
        return n;
}

static int cache_client_current(uint32_t slot, uint32_t generation)
{
        struct client *client = daemon_state.clients[slot];

        return client != NULL && client->generation == generation &&
               client->state == CLIENT_WEBSOCKET;
}

/* The result cache */

static void cache_unlink_entry(struct cache_entry *e)
{
        struct cache_entry **p =
            &cache.entries[cache_hash(e->key, e->key_len) % CACHE_ENTRY_BUCKETS];

        while (*p != e)
                p = &(*p)->hash_next;
        *p = e->hash_next;
        if (e->lru_prev != NULL)
                e->lru_prev->lru_next = e->lru_next;
        else
                cache.lru_head = e->lru_next;
        if (e->lru_next != NULL)
                e->lru_next->lru_prev = e->lru_prev;
        else
                cache.lru_tail = e->lru_prev;
        cache.bytes -= e->bytes;
        free(e);
}

static void cache_push_front(struct cache_entry *e)
{
        e->lru_prev = NULL;
        e->lru_next = cache.lru_head;
        if (cache.lru_head != NULL)
                cache.lru_head->lru_prev = e;
        cache.lru_head = e;
        if (cache.lru_tail == NULL)
                cache.lru_tail = e;
}

/* Returns the fresh entry for KEY, moved to the front of the LRU list, or NULL. */
static struct cache_entry *cache_lookup(const char *key, size_t key_len, uint64_t now_ns)
{
        struct cache_entry *e = cache.entries[cache_hash(key, key_len) % CACHE_ENTRY_BUCKETS];
        uint64_t ttl_ns = (uint64_t)daemon_state.conf.cache_ttl_ms * 1000000ULL;

        while (e != NULL && (e->key_len != key_len || memcmp(e->key, key, key_len) != 0))
                e = e->hash_next;
        if (e == NULL)
                return NULL;
        if (now_ns - e->stored_ns >= ttl_ns) {
                cache_unlink_entry(e);
                return NULL;
        }
        if (e != cache.lru_head) {
                e->lru_prev->lru_next = e->lru_next;
                if (e->lru_next != NULL)
                        e->lru_next->lru_prev = e->lru_prev;
                else
                        cache.lru_tail = e->lru_prev;
                cache_push_front(e);
        }
        return e;
}

/* Returns RESULTS as compact JSON text, valid while RESULTS lives. */
static const char *cache_results_text(json_object *results, size_t *len)
{
        return json_object_to_json_string_length(
            results, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

/* Stores RESULTS for KEY, evicting the least recently used entries to stay within max_bytes. */
static void cache_store(const char *key, size_t key_len, json_object *results)
{
        uint64_t max_bytes = daemon_state.conf.cache_max_bytes;
        struct cache_entry *old, *e;
        size_t text_len = 0;
        const char *text;

        if (max_bytes == 0)
                return;
        text = cache_results_text(results, &text_len);
        old = cache_lookup(key, key_len, shm_now_ns());
        if (old != NULL)
                cache_unlink_entry(old);
        if (sizeof(*e) + key_len + text_len > max_bytes)
                return;
        e = malloc(sizeof(*e) + key_len + 1 + text_len);
        if (e == NULL) {
                log_warn("out of memory caching a result of %zu bytes", text_len);
                return;
        }
        e->results = e->key + key_len + 1;
        memcpy(e->results, text, text_len);
        e->results_len = text_len;
        e->stored_ns = shm_now_ns();
        e->bytes = sizeof(*e) + key_len + text_len;
        e->key_len = key_len;
        memcpy(e->key, key, key_len + 1);
        while (cache.lru_tail != NULL && cache.bytes + e->bytes > max_bytes)
                cache_unlink_entry(cache.lru_tail);
        e->hash_next = cache.entries[cache_hash(key, key_len) % CACHE_ENTRY_BUCKETS];
        cache.entries[cache_hash(key, key_len) % CACHE_ENTRY_BUCKETS] = e;
        cache_push_front(e);
        cache.bytes += e->bytes;
}

/* Flights */

static struct cache_flight **cache_flight_bucket(const char *key, size_t key_len)
{
        return &cache.flights[cache_hash(key, key_len) % daemon_state.conf.max_connections];
}

static struct cache_flight *cache_find_flight(const char *key, size_t key_len)
{
        struct cache_flight *f = *cache_flight_bucket(key, key_len);

        while (f != NULL && (f->key_len != key_len || memcmp(f->key, key, key_len) != 0))
                f = f->hash_next;
        return f;
}

static struct cache_flight *cache_new_flight(const char *key, size_t key_len)
{
        struct cache_flight **bucket = cache_flight_bucket(key, key_len);
        struct cache_flight *f = calloc(1, sizeof(*f) + key_len + 1);

        if (f == NULL)
                return NULL;
        f->key_len = key_len;
        memcpy(f->key, key, key_len + 1);
        f->hash_next = *bucket;
        *bucket = f;
        f->all_next = cache.all;
        if (cache.all != NULL)
                cache.all->all_prev = f;
        cache.all = f;
        return f;
}

static void cache_clear_member(struct cache_member *m)
{
        free(m->query);
        m->query = NULL;
        m->flight = NULL;
        m->next = NULL;
}

static void cache_destroy_flight(struct cache_flight *f)
{
        struct cache_flight **p = cache_flight_bucket(f->key, f->key_len);

        while (*p != f)
                p = &(*p)->hash_next;
        *p = f->hash_next;
        if (f->all_prev != NULL)
                f->all_prev->all_next = f->all_next;
        else
                cache.all = f->all_next;
        if (f->all_next != NULL)
                f->all_next->all_prev = f->all_prev;
        if (f->lookup != NULL)
                rcache_cancel(f->lookup);
        if (f->leader != NULL)
                cache_clear_member(f->leader);
        while (f->waiters != NULL) {
                struct cache_member *w = f->waiters;

                f->waiters = w->next;
                cache_clear_member(w);
        }
        free(f);
}

/* Queues waiter W's query in its own slot, making it the flight's leader. */
static void cache_queue_leader(struct cache_flight *f, struct cache_member *w)
{
        struct daemon *d = &daemon_state;
        int pushed, superseded;

        f->leader = w;
        daemon_lock();
        pushed = slot_submit(&d->shm, w->slot, (uint64_t)w->seq, w->query, (uint32_t)w->query_len,
                             shm_now_ns(), &superseded);
        shm_unlock(&d->shm);
        if (pushed)
                supervisor_wake();
        log_debug("slot %u seq %" PRId64 " now carries the query its flight waits for", w->slot,
                  w->seq);
}

/*
 * Gives a flight whose leader left to its first waiter still connected, or ends it. While the
 * shared cache's GET is under way, the new leader's query is queued only if that misses.
 */
static void cache_promote(struct cache_flight *f)
{
        f->leader = NULL;
        while (f->waiters != NULL) {
                struct cache_member *w = f->waiters;
                struct client *client = daemon_state.clients[w->slot];

                f->waiters = w->next;
                w->next = NULL;
                if (cache_client_current(w->slot, w->generation) && client->last_seq == w->seq) {
                        if (f->lookup != NULL)
                                f->leader = w;
                        else
                                cache_queue_leader(f, w);
                        return;
                }
                cache_clear_member(w);
        }
        cache_destroy_flight(f);
}

/* Adds M at the end of F's waiters, so that the one waiting longest is promoted first. */
static void cache_append_waiter(struct cache_flight *f, struct cache_member *m)
{
        struct cache_member **p = &f->waiters;

        while (*p != NULL)
                p = &(*p)->next;
        m->next = NULL;
        *p = m;
}

static void cache_remove_waiter(struct cache_flight *f, struct cache_member *m)
{
        struct cache_member **p = &f->waiters;

        while (*p != NULL && *p != m)
                p = &(*p)->next;
        if (*p == m)
                *p = m->next;
        cache_clear_member(m);
}

void cache_leave(struct client *client)
{
        struct cache_member *m = &cache.members[client->slot];
        struct cache_flight *f = m->flight;

        if (f == NULL)
                return;
        if (f->leader == m) {
                cache_clear_member(m);
                cache_promote(f);
        } else {
                cache_remove_waiter(f, m);
        }
}

/* Removes members whose connection closed, so that no flight waits on a leader that left. */
static void cache_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
        struct cache_flight *f = cache.all, *next;
        struct cache_member **p;

        (void)fd;
        (void)what;
        (void)arg;
        for (; f != NULL; f = next) {
                next = f->all_next;
                p = &f->waiters;
                while (*p != NULL) {
                        struct cache_member *w = *p;

                        if (cache_client_current(w->slot, w->generation)) {
                                p = &w->next;
                                continue;
                        }
                        *p = w->next;
                        cache_clear_member(w);
                }
                if (f->leader != NULL &&
                    !cache_client_current(f->leader->slot, f->leader->generation)) {
                        cache_clear_member(f->leader);
                        cache_promote(f);
                        next = cache.all; /* promote may have freed flights after this one */
                }
        }
}

static rcache_done_fn cache_shared_done;

static int cache_set_member(struct cache_member *m, struct client *client, int64_t seq,
                            const char *query, size_t len)
{
        m->query = malloc(len + 1);
        if (m->query == NULL)
                return -1;
        memcpy(m->query, query, len);
        m->query_len = len;
        m->slot = client->slot;
        m->generation = client->generation;
        m->seq = seq;
        m->next = NULL;
        return 0;
}

static void cache_answer_hit(struct client *client, int64_t seq, const char *query, size_t len,
                             struct cache_entry *e)
{
        size_t text_len = 0;
        char *text = reply_cached_results(seq, query, len, e->results, e->results_len, &text_len);

        shm_count(&daemon_state.shm, cache_hits);
        client_reply_now(client, seq, text, text_len);
}

/*
 * Asks the shared cache for F's query before any API call. Returns 1 when the GET went out,
 * after dropping CLIENT's older query if still queued, because the newest query wins. Returns
 * 0 when the caller must queue query SEQ now.
 */
static int cache_ask_shared(struct cache_flight *f, struct client *client, int64_t seq)
{
        struct daemon *d = &daemon_state;

        f->lookup = rcache_get(f->key, f->key_len, cache_shared_done, f);
        if (f->lookup == NULL)
                return 0;
        daemon_lock();
        if (slot_supersede(&d->shm, client->slot, (uint64_t)seq))
                shm_count(&d->shm, superseded);
        shm_unlock(&d->shm);
        log_debug("client %llu slot %u: seq %" PRId64 " waits for the shared cache",
                  (unsigned long long)client->id, client->slot, seq);
        return 1;
}

int cache_submit(struct client *client, int64_t seq, const char *query, size_t len)
{
        struct daemon *d = &daemon_state;
        struct cache_member *m = &cache.members[client->slot];
        size_t key_len = cache_normalize(query, len, cache.key);
        struct cache_entry *e = cache_lookup(cache.key, key_len, shm_now_ns());
        struct cache_flight *f;

        if (e != NULL) {
                cache_answer_hit(client, seq, query, len, e);
                return 1;
        }
        f = cache_find_flight(cache.key, key_len);
        if (f != NULL) {
                if (cache_set_member(m, client, seq, query, len) < 0)
                        return 0;
                m->flight = f;
                cache_append_waiter(f, m);
                daemon_lock();
                if (slot_supersede(&d->shm, client->slot, (uint64_t)seq))
                        shm_count(&d->shm, superseded);
                shm_unlock(&d->shm);
                shm_count(&d->shm, coalesced);
                log_debug("client %llu slot %u: seq %" PRId64 " waits for an equal query",
                          (unsigned long long)client->id, client->slot, seq);
                return 1;
        }
        f = cache_new_flight(cache.key, key_len);
        if (f == NULL || cache_set_member(m, client, seq, query, len) < 0) {
                if (f != NULL)
                        cache_destroy_flight(f);
                return 0; /* queued without coalescing */
        }
        m->flight = f;
        f->leader = m;
        return cache_ask_shared(f, client, seq);
}

/* Returns the client of member M if it still waits for an answer to its query, else NULL. */
static struct client *cache_member_client(const struct cache_member *m)
{
        struct client *client = daemon_state.clients[m->slot];

        if (!cache_client_current(m->slot, m->generation) || client->last_seq != m->seq ||
            m->seq <= client->last_delivered)
                return NULL;
        return client;
}

/* Sends TEXT (malloc'd, freed here; NULL when building it ran out of memory) as M's answer. */
static void cache_send_member(struct client *client, const struct cache_member *m, char *text,
                              size_t text_len)
{
        if (text == NULL) {
                log_warn("client %llu: out of memory building a coalesced reply",
                         (unsigned long long)client->id);
                return;
        }
        client_send_text(client, text, text_len);
        free(text);
        client->last_delivered = m->seq;
        shm_count(&daemon_state.shm, delivered);
}

/* Sends the result or error in REPLY to member M under M's own seq and query text. */
static void cache_answer_member(const struct cache_member *m, json_object *reply)
{
        struct client *client = cache_member_client(m);
        json_object *results, *code, *message;
        const char *results_text;
        size_t text_len = 0, results_len;
        char *text;

        if (client == NULL)
                return;
        if (json_object_object_get_ex(reply, "results", &results)) {
                results_text = cache_results_text(results, &results_len);
                text = reply_results(m->seq, m->query, m->query_len, results_text, results_len,
                                     &text_len);
        } else if (json_object_object_get_ex(reply, "error", &code) &&
                   json_object_object_get_ex(reply, "message", &message))
                text = reply_error(m->seq, m->query, m->query_len, json_object_get_string(code),
                                   json_object_get_string(message), &text_len);
        else
                return;
        cache_send_member(client, m, text, text_len);
}

/* Sends RESULTS_TEXT, results read from the shared cache, to member M as a cached result. */
static void cache_answer_shared(const struct cache_member *m, const char *results_text,
                                size_t results_len)
{
        struct client *client = cache_member_client(m);
        size_t text_len = 0;
        char *text;

        if (client == NULL)
                return;
        text = reply_cached_results(m->seq, m->query, m->query_len, results_text, results_len,
                                    &text_len);
        cache_send_member(client, m, text, text_len);
}

/*
 * Ends flight F's shared-cache GET. A hit answers the flight and fills the local cache, with no
 * token spent; anything else queues the query of the leader, or of the next waiter if the
 * leader left.
 */
static void cache_shared_done(void *arg, json_object *results)
{
        struct cache_flight *f = arg;
        struct cache_member *leader = f->leader;
        const char *text;
        size_t text_len = 0;

        f->lookup = NULL;
        if (results != NULL) {
                cache_store(f->key, f->key_len, results);
                text = cache_results_text(results, &text_len);
                for (struct cache_member *w = f->waiters; w != NULL; w = w->next)
                        cache_answer_shared(w, text, text_len);
                if (leader != NULL) {
                        shm_count(&daemon_state.shm, cache_hits);
                        cache_answer_shared(leader, text, text_len);
                }
                cache_destroy_flight(f);
                return;
        }
        if (leader != NULL && cache_member_client(leader) != NULL) {
                cache_queue_leader(f, leader);
                return;
        }
        if (leader != NULL)
                cache_clear_member(leader);
        cache_promote(f);
}

/* Answers a flight's leader with a result its own call did not produce, and drops its call. */
static void cache_answer_leader(const struct cache_member *leader, json_object *reply)
{
        struct daemon *d = &daemon_state;

        daemon_lock();
        slot_supersede(&d->shm, leader->slot, (uint64_t)leader->seq);
        shm_unlock(&d->shm);
        cache_answer_member(leader, reply);
}

void cache_result(uint32_t slot, uint32_t generation, uint64_t seq, const char *body, size_t len)
{
        struct json_tokener *tok = json_tokener_new_ex(REPLY_MAX_DEPTH + 1);
        json_object *reply = NULL, *q, *results;
        struct cache_flight *f;
        struct cache_member *leader;
        size_t key_len;

        if (tok != NULL)
                reply = json_tokener_parse_ex(tok, body, (int)len);
        json_tokener_free(tok);
        if (reply == NULL || !json_object_object_get_ex(reply, "q", &q) ||
            (size_t)json_object_get_string_len(q) > daemon_state.conf.max_query_bytes) {
                json_object_put(reply);
                return;
        }
        key_len = cache_normalize(json_object_get_string(q), (size_t)json_object_get_string_len(q),
                                  cache.key);
        if (json_object_object_get_ex(reply, "results", &results)) {
                size_t text_len = 0;
                const char *text = cache_results_text(results, &text_len);

                cache_store(cache.key, key_len, results);
                rcache_store(cache.key, key_len, text, text_len);
        }

        f = cache_find_flight(cache.key, key_len);
        if (f != NULL) {
                leader = f->leader;
                for (struct cache_member *w = f->waiters; w != NULL; w = w->next)
                        cache_answer_member(w, reply);
                if (leader != NULL && (leader->slot != slot || leader->generation != generation ||
                                       (uint64_t)leader->seq != seq))
                        cache_answer_leader(leader, reply);
                cache_destroy_flight(f);
        }
        json_object_put(reply);
}

int cache_init(void)
{
        struct daemon *d = &daemon_state;
        struct timeval every = {0, CACHE_SWEEP_MS * 1000};

        cache.flights = calloc(d->conf.max_connections, sizeof(*cache.flights));
        cache.members = calloc(d->conf.max_connections, sizeof(*cache.members));
        cache.key = malloc(4 * (size_t)d->conf.max_query_bytes + 1);
        cache.utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
        cache.sweep = event_new(d->base, -1, EV_PERSIST, cache_sweep_cb, NULL);
        if (cache.flights == NULL || cache.members == NULL || cache.key == NULL ||
            cache.utf8 == (locale_t)0 || cache.sweep == NULL || event_add(cache.sweep, &every) < 0)
                return -1;
        return rcache_init();
}

void cache_free(void)
{
        while (cache.all != NULL)
                cache_destroy_flight(cache.all);
        while (cache.lru_head != NULL)
                cache_unlink_entry(cache.lru_head);
        rcache_free(); /* after the flights, which cancel their lookups */
        if (cache.sweep != NULL)
                event_free(cache.sweep);
        if (cache.utf8 != (locale_t)0)
                freelocale(cache.utf8);
        free(cache.flights);
        free(cache.members);
        free(cache.key);
        memset(&cache, 0, sizeof(cache));
}
