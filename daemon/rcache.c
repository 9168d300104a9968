#include "rcache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "incsearchd.h"
#include "log.h"
#include "reply.h"

#define RCACHE_RETRY_MIN_MS 100  /* first reconnect delay after Redis went down */
#define RCACHE_RETRY_MAX_MS 5000 /* cap of the doubling reconnect delay */
/* Commands waiting for a reply. More means Redis lags, and lookups skip it rather than queue. */
#define RCACHE_MAX_PENDING 1024
#define RCACHE_KEY_INFIX "cache:"

enum rcache_state {
        RCACHE_OFF,
        RCACHE_CONNECTING, /* the connection and its AUTH, SELECT and PING are under way */
        RCACHE_UP,
        RCACHE_DOWN, /* waiting for the next reconnect */
};

enum rcache_kind {
        RCACHE_HANDSHAKE, /* AUTH or SELECT */
        RCACHE_READY,     /* the PING that ends the handshake */
        RCACHE_GET,
        RCACHE_SET,
};

/* One command sent to Redis; GETs are also the handle that rcache_get returns. */
struct rcache_lookup {
        struct rcache_lookup *prev, *next; /* in rcache.pending_head, oldest first */
        uint64_t deadline_ns;              /* CLOCK_MONOTONIC */
        enum rcache_kind kind;
        rcache_done_fn *done; /* NULL for other kinds and once cancelled */
        void *arg;
        size_t key_len;
        char key[]; /* the normalized query of a GET, for logs */
};

static struct {
        redisAsyncContext *ctx; /* NULL while disconnected */
        enum rcache_state state;
        int down_logged;             /* the current outage has been logged */
        struct conf_redis_addr addr; /* where ctx connects */
        char where[300];             /* addr without user and password, for logs */
        struct rcache_lookup *pending_head, *pending_tail;
        unsigned pending;
        struct event *deadline; /* fires at the oldest command's deadline */
        struct event *retry;    /* the next reconnect */
        uint32_t retry_ms;
        struct rcache_stats counters;
        struct log_limit bad_value_limit, error_limit;
        char *key; /* scratch for a full Redis key */
} rcache;

static const char *const rcache_state_names[] = {"off", "connecting", "up", "down"};

static void rcache_connect(void);

static int rcache_same_addr(const struct conf_redis_addr *a, const struct conf_redis_addr *b)
{
        return strcmp(a->host, b->host) == 0 && a->port == b->port &&
               strcmp(a->path, b->path) == 0 && strcmp(a->user, b->user) == 0 &&
               strcmp(a->password, b->password) == 0 && a->db == b->db;
}

static void rcache_describe(const struct conf_redis_addr *addr)
{
        if (addr->path[0] != '\0')
                snprintf(rcache.where, sizeof(rcache.where), "unix:%s db %u", addr->path, addr->db);
        else
                snprintf(rcache.where, sizeof(rcache.where), "%s:%u db %u", addr->host,
                         (unsigned)addr->port, addr->db);
}

/* Writes KEY into OUT for a log line, with bytes below 0x20 and DEL as '?'. */
static void rcache_printable(const char *key, size_t len, char *out, size_t out_len)
{
        size_t n = 0;

        for (size_t i = 0; i < len && n + 1 < out_len; i++) {
                unsigned char c = (unsigned char)key[i];

                out[n++] = c < 0x20 || c == 0x7F ? '?' : (char)c;
        }
        out[n] = '\0';
}

/* Builds redis_key_prefix + "cache:" + KEY in the scratch buffer and returns its length. */
static size_t rcache_full_key(const char *key, size_t key_len)
{
        const char *prefix = daemon_state.conf.redis_key_prefix;
        size_t prefix_len = strlen(prefix), infix_len = strlen(RCACHE_KEY_INFIX);

        memcpy(rcache.key, prefix, prefix_len);
        memcpy(rcache.key + prefix_len, RCACHE_KEY_INFIX, infix_len);
        memcpy(rcache.key + prefix_len + infix_len, key, key_len);
        return prefix_len + infix_len + key_len;
}

/* Connection state */

static void rcache_schedule_retry(void)
{
        struct timeval wait = {(time_t)(rcache.retry_ms / 1000),
                               (suseconds_t)(rcache.retry_ms % 1000) * 1000};

        event_add(rcache.retry, &wait);
        rcache.retry_ms =
            rcache.retry_ms * 2 > RCACHE_RETRY_MAX_MS ? RCACHE_RETRY_MAX_MS : rcache.retry_ms * 2;
}

/* Records that Redis cannot be used for REASON, logging it once per outage, and plans a retry. */
static void rcache_went_down(const char *reason)
{
        if (!rcache.down_logged)
                log_warn("shared cache: Redis at %s is unavailable (%s); queries go to the API "
                         "until it is back, reconnecting every %u ms at most",
                         rcache.where, reason, RCACHE_RETRY_MAX_MS);
        else
                log_debug("shared cache: Redis at %s still unavailable (%s)", rcache.where, reason);
        rcache.down_logged = 1;
        rcache.state = RCACHE_DOWN;
        rcache_schedule_retry();
}

/*
 * Drops the connection. hiredis calls back every pending command with no reply, so every
 * lookup ends as an error. Inside a hiredis callback those calls come after it returns.
 */
static void rcache_disconnect(void)
{
        redisAsyncContext *ac = rcache.ctx;

        if (ac == NULL)
                return;
        rcache.ctx = NULL;
        redisAsyncFree(ac);
}

static void rcache_fail(const char *reason)
{
        rcache_disconnect();
        rcache_went_down(reason);
}

static void rcache_connect_cb(const redisAsyncContext *ac, int status)
{
        if (status == REDIS_OK || ac != rcache.ctx)
                return;
        /* hiredis frees the context after this callback. */
        rcache.ctx = NULL;
        rcache_went_down(ac->errstr[0] != '\0' ? ac->errstr : "connect failed");
}

static void rcache_disconnect_cb(const redisAsyncContext *ac, int status)
{
        (void)status;
        if (ac != rcache.ctx)
                return; /* dropped on purpose */
        rcache.ctx = NULL;
        rcache_went_down(ac->errstr[0] != '\0' ? ac->errstr : "connection closed by Redis");
}

/* Commands */

static void rcache_unlink(struct rcache_lookup *l)
{
        if (l->prev != NULL)
                l->prev->next = l->next;
        else
                rcache.pending_head = l->next;
        if (l->next != NULL)
                l->next->prev = l->prev;
        else
                rcache.pending_tail = l->prev;
        rcache.pending--;
}

static void rcache_arm_deadline(void)
{
        uint64_t now = shm_now_ns(), due_us;
        struct timeval wait;

        if (rcache.pending_head == NULL) {
                event_del(rcache.deadline);
                return;
        }
        due_us = rcache.pending_head->deadline_ns > now
                     ? (rcache.pending_head->deadline_ns - now) / 1000 + 1
                     : 0;
        wait.tv_sec = (time_t)(due_us / 1000000);
        wait.tv_usec = (suseconds_t)(due_us % 1000000);
        event_add(rcache.deadline, &wait);
}

/*
 * Redis answers in the order of the commands, so the oldest pending command has the earliest
 * deadline, and a missed one means the connection is of no use for the rest either.
 */
static void rcache_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
        char reason[64];

        (void)fd;
        (void)what;
        (void)arg;
        if (rcache.pending_head == NULL || rcache.ctx == NULL)
                return;
        if (rcache.pending_head->deadline_ns > shm_now_ns()) {
                rcache_arm_deadline();
                return;
        }
        snprintf(reason, sizeof(reason), "no reply within redis_timeout_ms, %u ms",
                 daemon_state.conf.redis_timeout_ms);
        rcache_fail(reason);
}

static void rcache_log_bad_value(const struct rcache_lookup *l, const char *problem)
{
        char key[256];

        rcache_printable(l->key, l->key_len, key, sizeof(key));
        log_limited(&rcache.bad_value_limit, LOG_LEVEL_WARN,
                    "shared cache: the value of Redis key %s" RCACHE_KEY_INFIX
                    "%s %s; ignoring it and calling the API",
                    daemon_state.conf.redis_key_prefix, key, problem);
}

/* Returns what is wrong with the value in a GET reply, or NULL with the value in *RESULTS. */
static const char *rcache_parse_value(const redisReply *reply, json_object **results)
{
        if (reply->type != REDIS_REPLY_STRING)
                return "is not a string";
        if (reply->len > (size_t)daemon_state.conf.max_result_bytes)
                return "is larger than max_result_bytes";
        *results = reply_json_parse(reply->str, reply->len);
        if (*results == NULL)
                return "is not valid JSON in UTF-8";
        return NULL;
}

/* Checks a GET reply and returns the results in it, or NULL after counting the outcome. */
static json_object *rcache_check_value(const struct rcache_lookup *l, const redisReply *reply)
{
        json_object *results = NULL;
        const char *problem;

        if (reply == NULL) {
                rcache.counters.errors++;
                return NULL;
        }
        /* GETRANGE returns an empty string for a missing key, a value never stored. */
        if (reply->type == REDIS_REPLY_NIL ||
            (reply->type == REDIS_REPLY_STRING && reply->len == 0)) {
                rcache.counters.misses++;
                return NULL;
        }
        /* A key of another type is a bad value that the API's result will replace. */
        if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "WRONGTYPE", 9) == 0) {
                rcache.counters.bad_values++;
                rcache_log_bad_value(l, "is not a string");
                return NULL;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
                char key[256];

                rcache.counters.errors++;
                rcache_printable(l->key, l->key_len, key, sizeof(key));
                log_limited(&rcache.error_limit, LOG_LEVEL_WARN,
                            "shared cache: Redis GETRANGE on key %s" RCACHE_KEY_INFIX
                            "%s failed: %s",
                            daemon_state.conf.redis_key_prefix, key, reply->str);
                return NULL;
        }
        problem = rcache_parse_value(reply, &results);
        if (problem != NULL) {
                rcache.counters.bad_values++;
                rcache_log_bad_value(l, problem);
                return NULL;
        }
        rcache.counters.hits++;
        return results;
}

static void rcache_handshake_reply(redisAsyncContext *ac, const redisReply *reply)
{
        char reason[256];

        if (reply == NULL || reply->type != REDIS_REPLY_ERROR || ac != rcache.ctx)
                return;
        snprintf(reason, sizeof(reason), "it rejected AUTH or SELECT: %s; check redis_url",
                 reply->str);
        rcache_fail(reason);
}

static void rcache_ready_reply(redisAsyncContext *ac, const redisReply *reply)
{
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR || ac != rcache.ctx)
                return;
        if (rcache.down_logged)
                log_info("shared cache: Redis at %s is back; queries use it again", rcache.where);
        else
                log_info("shared cache: connected to Redis at %s", rcache.where);
        rcache.down_logged = 0;
        rcache.state = RCACHE_UP;
        rcache.retry_ms = RCACHE_RETRY_MIN_MS;
}

static void rcache_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
        const redisReply *reply = r;
        struct rcache_lookup *l = privdata;
        json_object *results;

        rcache_unlink(l);
        switch (l->kind) {
        case RCACHE_HANDSHAKE:
                rcache_handshake_reply(ac, reply);
                break;
        case RCACHE_READY:
                rcache_ready_reply(ac, reply);
                break;
        case RCACHE_GET:
                results = rcache_check_value(l, reply);
                if (l->done != NULL)
                        l->done(l->arg, results);
                json_object_put(results);
                break;
        case RCACHE_SET:
                if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
                        rcache.counters.errors++;
                        log_limited(&rcache.error_limit, LOG_LEVEL_WARN,
                                    "shared cache: Redis SET failed: %s", reply->str);
                }
                break;
        }
        free(l);
}

/*
 * Sends one command of ARGC words. Returns the pending command, or NULL when it could not be
 * sent; KEY, the normalized query, goes into a GET's logs.
 */
static struct rcache_lookup *rcache_send(enum rcache_kind kind, int argc, const char **argv,
                                         const size_t *lens, const char *key, size_t key_len)
{
        struct rcache_lookup *l = malloc(sizeof(*l) + key_len);

        if (l == NULL || rcache.ctx == NULL) {
                free(l);
                return NULL;
        }
        memset(l, 0, sizeof(*l));
        l->kind = kind;
        l->deadline_ns = shm_now_ns() + (uint64_t)daemon_state.conf.redis_timeout_ms * 1000000ULL;
        l->key_len = key_len;
        if (key_len > 0)
                memcpy(l->key, key, key_len);
        if (redisAsyncCommandArgv(rcache.ctx, rcache_reply_cb, l, argc, argv, lens) != REDIS_OK) {
                free(l);
                return NULL;
        }
        l->prev = rcache.pending_tail;
        if (rcache.pending_tail != NULL)
                rcache.pending_tail->next = l;
        else
                rcache.pending_head = l;
        rcache.pending_tail = l;
        if (rcache.pending++ == 0)
                rcache_arm_deadline();
        return l;
}

/* Sends AUTH and SELECT when redis_url asks for them, then the PING that marks Redis up. */
static void rcache_handshake(void)
{
        const struct conf_redis_addr *a = &rcache.addr;
        const char *argv[3];
        size_t lens[3];
        char db[16];
        int argc = 0;

        if (a->password[0] != '\0') {
                argv[argc++] = "AUTH";
                if (a->user[0] != '\0')
                        argv[argc++] = a->user;
                argv[argc++] = a->password;
                for (int i = 0; i < argc; i++)
                        lens[i] = strlen(argv[i]);
                rcache_send(RCACHE_HANDSHAKE, argc, argv, lens, NULL, 0);
        }
        if (a->db != 0) {
                snprintf(db, sizeof(db), "%u", a->db);
                argv[0] = "SELECT";
                argv[1] = db;
                lens[0] = 6;
                lens[1] = strlen(db);
                rcache_send(RCACHE_HANDSHAKE, 2, argv, lens, NULL, 0);
        }
        argv[0] = "PING";
        lens[0] = 4;
        if (rcache_send(RCACHE_READY, 1, argv, lens, NULL, 0) == NULL)
                rcache_fail("cannot send PING");
}

/*
 * Starts a connection. The TCP connect is non-blocking and bounded by the handshake's deadline.
 * TODO: hiredis resolves a host name in redis_url with a blocking getaddrinfo, so a slow DNS
 * stalls the event loop. An IP address or a Unix socket avoids that.
 */
static void rcache_connect(void)
{
        const struct conf_redis_addr *a = &rcache.addr;
        redisAsyncContext *ac;
        char reason[256];

        rcache.state = RCACHE_CONNECTING;
        ac = a->path[0] != '\0' ? redisAsyncConnectUnix(a->path)
                                : redisAsyncConnect(a->host, (int)a->port);
        if (ac == NULL) {
                rcache_went_down("out of memory");
                return;
        }
        if (ac->err != 0) {
                snprintf(reason, sizeof(reason), "%s", ac->errstr);
                redisAsyncFree(ac);
                rcache_went_down(reason);
                return;
        }
        if (redisLibeventAttach(ac, daemon_state.base) != REDIS_OK) {
                redisAsyncFree(ac);
                rcache_went_down("cannot attach to the event loop");
                return;
        }
        redisAsyncSetConnectCallback(ac, rcache_connect_cb);
        redisAsyncSetDisconnectCallback(ac, rcache_disconnect_cb);
        rcache.ctx = ac;
        rcache_handshake();
}

static void rcache_retry_cb(evutil_socket_t fd, short what, void *arg)
{
        (void)fd;
        (void)what;
        (void)arg;
        if (rcache.state == RCACHE_DOWN)
                rcache_connect();
}

/* Interface */

int rcache_init(void)
{
        struct daemon *d = &daemon_state;

        rcache.key = malloc(sizeof(d->conf.redis_key_prefix) + strlen(RCACHE_KEY_INFIX) +
                            4 * (size_t)d->conf.max_query_bytes + 1);
        rcache.deadline = evtimer_new(d->base, rcache_deadline_cb, NULL);
        rcache.retry = evtimer_new(d->base, rcache_retry_cb, NULL);
        if (rcache.key == NULL || rcache.deadline == NULL || rcache.retry == NULL)
                return -1;
        rcache.state = RCACHE_OFF;
        rcache_reload();
        return 0;
}

void rcache_free(void)
{
        for (struct rcache_lookup *l = rcache.pending_head; l != NULL; l = l->next)
                l->done = NULL;
        rcache_disconnect();
        if (rcache.deadline != NULL)
                event_free(rcache.deadline);
        if (rcache.retry != NULL)
                event_free(rcache.retry);
        free(rcache.key);
        memset(&rcache, 0, sizeof(rcache));
}

void rcache_reload(void)
{
        const struct conf *conf = &daemon_state.conf;

        if (conf->cache_shared == 0) {
                if (rcache.state != RCACHE_OFF)
                        log_info("shared cache: off; disconnecting from Redis at %s", rcache.where);
                rcache_disconnect();
                event_del(rcache.retry);
                rcache.state = RCACHE_OFF;
                rcache.down_logged = 0;
                return;
        }
        if (rcache.state != RCACHE_OFF && rcache_same_addr(&rcache.addr, &conf->redis))
                return;
        if (rcache.state != RCACHE_OFF)
                log_info("shared cache: redis_url changed; leaving Redis at %s", rcache.where);
        rcache_disconnect();
        event_del(rcache.retry);
        rcache.addr = conf->redis;
        rcache_describe(&rcache.addr);
        rcache.down_logged = 0;
        rcache.retry_ms = RCACHE_RETRY_MIN_MS;
        rcache_connect();
}

/* Returns 1 if a command may go to Redis now, counting a skipped lookup when COUNT is set. */
static int rcache_usable(int count)
{
        if (rcache.state == RCACHE_OFF)
                return 0;
        if (rcache.state == RCACHE_UP && rcache.pending < RCACHE_MAX_PENDING)
                return 1;
        if (count)
                rcache.counters.skipped++;
        return 0;
}

/*
 * Reads at most max_result_bytes + 1 bytes with GETRANGE rather than GET, so that a huge value
 * planted in Redis is never read whole into the daemon's memory.
 */
struct rcache_lookup *rcache_get(const char *key, size_t key_len, rcache_done_fn *done, void *arg)
{
        const char *argv[4] = {"GETRANGE", rcache.key, "0", NULL};
        size_t lens[4] = {8, 0, 1, 0};
        struct rcache_lookup *l;
        char end[16];

        if (!rcache_usable(1))
                return NULL;
        snprintf(end, sizeof(end), "%u", daemon_state.conf.max_result_bytes);
        argv[3] = end;
        lens[3] = strlen(end);
        lens[1] = rcache_full_key(key, key_len);
        l = rcache_send(RCACHE_GET, 4, argv, lens, key, key_len);
        if (l == NULL) {
                rcache.counters.errors++;
                return NULL;
        }
        l->done = done;
        l->arg = arg;
        return l;
}

void rcache_cancel(struct rcache_lookup *lookup)
{
        lookup->done = NULL;
}

void rcache_store(const char *key, size_t key_len, const char *results, size_t results_len)
{
        const struct conf *conf = &daemon_state.conf;
        const char *argv[5] = {"SET", rcache.key, results, "PX", NULL};
        size_t lens[5] = {3, 0, results_len, 2, 0};
        char ttl[16];

        /* Another instance would reject a value over its max_result_bytes as a bad value. */
        if (!rcache_usable(0) || results_len > conf->max_result_bytes)
                return;
        snprintf(ttl, sizeof(ttl), "%u", conf->cache_shared_ttl_ms);
        argv[4] = ttl;
        lens[4] = strlen(ttl);
        lens[1] = rcache_full_key(key, key_len);
        if (rcache_send(RCACHE_SET, 5, argv, lens, NULL, 0) != NULL)
                rcache.counters.stored++;
}

void rcache_stats(struct rcache_stats *stats)
{
        *stats = rcache.counters;
        stats->state = rcache_state_names[rcache.state];
}
