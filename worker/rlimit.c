#include "rlimit.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "shm.h"

#define RLIMIT_BACKOFF_MIN_MS 100ULL
#define RLIMIT_BACKOFF_MAX_MS 2000ULL
/* Maximum pause a worker sets (API_MAX_DELAY_S in api.c). A longer one in Redis is damage. */
#define RLIMIT_MAX_PAUSE_MS 86400000ULL
/* Maximum time a worker waits before it requests a token again, whatever wait Redis returned. */
#define RLIMIT_MAX_WAIT_NS 1000000000ULL

/*
 * KEYS[1] is the bucket and KEYS[2] the pause. ARGV[1] is the rate in thousandths of a call per
 * second, ARGV[2] the burst, and ARGV[3] the maximum pause a worker sets, in milliseconds.
 * ARGV[4] is 1 to empty the bucket first, because a host back from local_share has spent its own
 * tokens while the bucket here refilled. Returns 0 for a token, the microseconds until one is due,
 * or minus the microseconds left in the API's pause. The bucket holds GCRA's theoretical arrival
 * time in integer microseconds of Redis's clock. The interval is rounded up, so rounding only ever
 * slows calls down. The key has no TTL: a missing key means a new or restarted Redis, and starts
 * empty.
 *
 * A value that no run of these scripts can leave (another type, not a number, or further
 * ahead than an empty bucket after a pause that has ended) is replaced by an empty bucket, so
 * a damaged key costs at most one burst of waiting instead of stopping every host. A pause
 * longer than any worker sets is deleted for the same reason.
 */
const char rlimit_token_script[] =
    "local pause = redis.call('PTTL', KEYS[2])\n"
    "if pause > tonumber(ARGV[3]) then redis.call('DEL', KEYS[2])\n"
    "elseif pause > 0 then return -pause * 1000 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval = math.ceil(1000000000 / tonumber(ARGV[1]))\n"
    "local limit = interval * tonumber(ARGV[2])\n"
    "local value = redis.pcall('GET', KEYS[1])\n"
    "local tat = nil\n"
    "if type(value) == 'string' then tat = tonumber(value) end\n"
    "if not tat or tat ~= tat or tat > now + limit + interval + 2000 then\n"
    "  tat = now + limit\n"
    "  redis.call('SET', KEYS[1], string.format('%d', tat))\n"
    "end\n"
    "if ARGV[4] == '1' and tat < now + limit then\n"
    "  tat = now + limit\n"
    "  redis.call('SET', KEYS[1], string.format('%d', tat))\n"
    "end\n"
    "if tat < now then tat = now end\n"
    "local late = tat + interval - now - limit\n"
    "if late > 0 then return late end\n"
    "redis.call('SET', KEYS[1], string.format('%d', tat + interval))\n"
    "return 0\n";

/*
 * KEYS[1] the pause, KEYS[2] the bucket; ARGV[1] the pause in milliseconds, ARGV[2] and ARGV[3]
 * the rate and burst as above. Extends the pause, never shortens it, and empties the bucket
 * as of the pause's end, so that calls resume at the rate, one at a time. Returns 1 if it
 * extended the pause.
 */
const char rlimit_pause_script[] = "local ms = tonumber(ARGV[1])\n"
                                   "if redis.call('PTTL', KEYS[1]) >= ms then return 0 end\n"
                                   "redis.call('SET', KEYS[1], '1', 'PX', ms)\n"
                                   "local t = redis.call('TIME')\n"
                                   "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
                                   "local interval = math.ceil(1000000000 / tonumber(ARGV[2]))\n"
                                   "local empty = now + ms * 1000 + interval * tonumber(ARGV[3])\n"
                                   "local value = redis.pcall('GET', KEYS[2])\n"
                                   "local tat = nil\n"
                                   "if type(value) == 'string' then tat = tonumber(value) end\n"
                                   "if not tat or tat ~= tat or tat < empty then\n"
                                   "  redis.call('SET', KEYS[2], string.format('%d', empty))\n"
                                   "end\n"
                                   "return 1\n";

enum rlimit_command {
        RLIMIT_AUTH,
        RLIMIT_SELECT,
        RLIMIT_LOAD_TOKEN,
        RLIMIT_LOAD_PAUSE,
        RLIMIT_TOKEN,
        RLIMIT_TOKEN_AGAIN, /* the token request sent again after NOSCRIPT */
        RLIMIT_PAUSE,
        RLIMIT_ANNOUNCE,
};

static const char *const rlimit_command_names[] = {
    "AUTH", "SELECT", "SCRIPT LOAD", "SCRIPT LOAD", "EVALSHA", "EVALSHA", "EVALSHA", "GETSET",
};

void rlimit_url(const struct conf *conf, char *out, size_t len)
{
        const struct conf_redis_addr *a = &conf->redis;

        if (a->path[0] != '\0')
                snprintf(out, len, "unix:%s?db=%" PRIu32, a->path, a->db);
        else if (strchr(a->host, ':') != NULL)
                snprintf(out, len, "redis://[%s]:%u/%" PRIu32, a->host, a->port, a->db);
        else
                snprintf(out, len, "redis://%s:%u/%" PRIu32, a->host, a->port, a->db);
}

void rlimit_init(struct rlimit *r, const struct conf *conf)
{
        memset(r, 0, sizeof(*r));
        r->conf = conf;
}

static uint64_t rlimit_timeout_ns(const struct rlimit *r)
{
        return (uint64_t)r->conf->redis_timeout_ms * 1000000ULL;
}

/* Forgets the connection, which hiredis frees or has freed, and schedules the next one. */
static void rlimit_forget(struct rlimit *r, const char *what, const char *error)
{
        uint64_t ms = RLIMIT_BACKOFF_MIN_MS << (r->failures < 5 ? r->failures : 5);

        if (ms > RLIMIT_BACKOFF_MAX_MS)
                ms = RLIMIT_BACKOFF_MAX_MS;
        r->failures++;
        r->ac = NULL;
        r->ready = 0;
        r->want_read = r->want_write = 0;
        r->outstanding = 0;
        r->token_requested = 0;
        r->granted = 0;
        r->ask_after_ns = 0;
        /* Half of the backoff is jitter, so that the workers do not reconnect in step. */
        r->reconnect_ns = shm_now_ns() + ms * 500000ULL + (uint64_t)random() % (ms * 500000ULL);
        snprintf(r->error, sizeof(r->error), "%s: %s", what, error);
        r->event = RLIMIT_EVENT_DOWN;
}

/* Drops a connection that is still open, after an error reply or a missed deadline. */
static void rlimit_fail(struct rlimit *r, const char *what, const char *error)
{
        redisAsyncContext *ac = r->ac;

        rlimit_forget(r, what, error);
        /* Inside a callback hiredis frees it once the callback returns. */
        redisAsyncFree(ac);
}

void rlimit_close(struct rlimit *r)
{
        redisAsyncContext *ac = r->ac;

        /* An intended close: the next tick connects again at once. */
        r->reconnect_ns = 0;
        r->failures = 0;
        if (ac == NULL)
                return;
        r->ac = NULL;
        r->ready = 0;
        r->want_read = r->want_write = 0;
        r->outstanding = 0;
        r->token_requested = 0;
        r->granted = 0;
        r->ask_after_ns = 0;
        redisAsyncFree(ac);
}

/* The event hooks record what hiredis waits for; the worker's poll watches the socket. */
static struct rlimit *rlimit_of(void *privdata)
{
        redisAsyncContext *ac = privdata;
        struct rlimit *r = ac->data;

        return r != NULL && r->ac == ac ? r : NULL;
}

static void rlimit_add_read(void *privdata)
{
        struct rlimit *r = rlimit_of(privdata);

        if (r != NULL)
                r->want_read = 1;
}

static void rlimit_del_read(void *privdata)
{
        struct rlimit *r = rlimit_of(privdata);

        if (r != NULL)
                r->want_read = 0;
}

static void rlimit_add_write(void *privdata)
{
        struct rlimit *r = rlimit_of(privdata);

        if (r != NULL)
                r->want_write = 1;
}

static void rlimit_del_write(void *privdata)
{
        struct rlimit *r = rlimit_of(privdata);

        if (r != NULL)
                r->want_write = 0;
}

static void rlimit_cleanup(void *privdata)
{
        struct rlimit *r = rlimit_of(privdata);

        if (r != NULL)
                r->want_read = r->want_write = 0;
}

static void rlimit_connected(const redisAsyncContext *ac, int status)
{
        struct rlimit *r = ac->data;

        /* After a failed connect hiredis frees the context itself. */
        if (status != REDIS_OK && r->ac == ac)
                rlimit_forget(r, "connect", ac->errstr != NULL ? ac->errstr : "failed");
}

static void rlimit_disconnected(const redisAsyncContext *ac, int status)
{
        struct rlimit *r = ac->data;

        (void)status;
        if (r->ac == ac)
                rlimit_forget(r, "connection", ac->errstr != NULL ? ac->errstr : "closed");
}

static void rlimit_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata);

static int rlimit_send(struct rlimit *r, enum rlimit_command command, const char *format, ...)
{
        va_list ap;
        int rc;

        if (r->outstanding == 0)
                r->deadline_ns = shm_now_ns() + rlimit_timeout_ns(r);
        va_start(ap, format);
        rc = redisvAsyncCommand(r->ac, rlimit_reply, (void *)(intptr_t)command, format, ap);
        va_end(ap);
        if (rc != REDIS_OK) {
                rlimit_fail(r, rlimit_command_names[command], "cannot queue the command");
                return -1;
        }
        r->outstanding++;
        return 0;
}

static void rlimit_send_token(struct rlimit *r, enum rlimit_command command)
{
        const struct conf *c = r->conf;

        rlimit_send(r, command, "EVALSHA %s 2 %sbucket %spause %" PRIu64 " %" PRIu32 " %llu %d",
                    r->token_sha, c->redis_key_prefix, c->redis_key_prefix, c->rate_milli, c->burst,
                    RLIMIT_MAX_PAUSE_MS, r->drain ? 1 : 0);
}

void rlimit_announce(struct rlimit *r)
{
        const struct conf *c = r->conf;

        if (r->ac == NULL || !r->ready)
                return;
        rlimit_send(r, RLIMIT_ANNOUNCE, "GETSET %slimit %" PRIu64 ":%" PRIu32, c->redis_key_prefix,
                    c->rate_milli, c->burst);
}

/* Notes a different rate or burst that another host wrote, for the worker to log. */
static void rlimit_announced(struct rlimit *r, const redisReply *reply)
{
        char own[64];

        if (reply->type != REDIS_REPLY_STRING)
                return;
        snprintf(own, sizeof(own), "%" PRIu64 ":%" PRIu32, r->conf->rate_milli, r->conf->burst);
        if (strcmp(reply->str, own) != 0)
                snprintf(r->other_limit, sizeof(r->other_limit), "%.60s", reply->str);
}

/*
 * Stores the SHA1 of a loaded script. Once both are known, the connection is ready and requests
 * a token at once. Redis counts as up only after the token script has run, because a server can
 * accept connections and scripts and still fail every call of the script.
 */
static void rlimit_loaded(struct rlimit *r, char *sha, const redisReply *reply)
{
        if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
                rlimit_fail(r, "SCRIPT LOAD", "unexpected reply");
                return;
        }
        memcpy(sha, reply->str, 40);
        sha[40] = '\0';
        if (r->token_sha[0] != '\0' && r->pause_sha[0] != '\0' && !r->ready) {
                r->ready = 1;
                r->ready_ns = shm_now_ns();
                rlimit_announce(r);
                if (!r->token_requested && !r->granted) {
                        r->token_requested = 1;
                        rlimit_send_token(r, RLIMIT_TOKEN);
                }
        }
}

static void rlimit_token_reply(struct rlimit *r, const redisReply *reply)
{
        r->token_requested = 0;
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer == LLONG_MIN) {
                rlimit_fail(r, "EVALSHA", "unexpected reply to the token script");
                return;
        }
        r->pause_reported = 1;
        r->pause_until_ns = 0;
        if (reply->integer == 0) {
                r->granted = 1;
        } else {
                long long wait_us = reply->integer > 0 ? reply->integer : -reply->integer;
                uint64_t now = shm_now_ns(), wait_ns = (uint64_t)wait_us * 1000ULL;

                if (reply->integer < 0)
                        r->pause_until_ns = now + wait_ns;
                /* A long pause, or a wait from a damaged key, is checked again every second. */
                if (wait_us > (long long)(RLIMIT_MAX_WAIT_NS / 1000ULL))
                        wait_ns = RLIMIT_MAX_WAIT_NS;
                r->ask_after_ns = now + wait_ns;
        }
        r->failures = 0;
        r->event = RLIMIT_EVENT_UP;
}

static void rlimit_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
        enum rlimit_command command = (enum rlimit_command)(intptr_t)privdata;
        const char *name = rlimit_command_names[command];
        struct rlimit *r = ac->data;
        redisReply *reply = reply_ptr;

        if (r == NULL || r->ac != ac)
                return; /* a connection this worker has already dropped */
        if (reply == NULL) {
                /* hiredis is freeing the context: the connection broke. */
                rlimit_forget(r, name, ac->errstr != NULL ? ac->errstr : "connection lost");
                return;
        }
        if (r->outstanding > 0)
                r->outstanding--;
        r->deadline_ns = shm_now_ns() + rlimit_timeout_ns(r);
        if (reply->type == REDIS_REPLY_ERROR) {
                /* A restarted or flushed server has forgotten the script: load it and ask again.
                 * Redis runs the pipelined commands in order, so the second try finds it. */
                if (command == RLIMIT_TOKEN && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
                        r->token_sha[0] = '\0';
                        r->ready = 0;
                        if (rlimit_send(r, RLIMIT_LOAD_TOKEN, "SCRIPT LOAD %s",
                                        rlimit_token_script) == 0)
                                rlimit_send_token(r, RLIMIT_TOKEN_AGAIN);
                        return;
                }
                rlimit_fail(r, name, reply->str);
                return;
        }
        switch (command) {
        case RLIMIT_AUTH:
        case RLIMIT_SELECT:
                break;
        case RLIMIT_LOAD_TOKEN:
                rlimit_loaded(r, r->token_sha, reply);
                break;
        case RLIMIT_LOAD_PAUSE:
                rlimit_loaded(r, r->pause_sha, reply);
                break;
        case RLIMIT_TOKEN:
        case RLIMIT_TOKEN_AGAIN:
                rlimit_token_reply(r, reply);
                break;
        case RLIMIT_ANNOUNCE:
                rlimit_announced(r, reply);
                break;
        case RLIMIT_PAUSE:
                r->failures = 0;
                r->event = RLIMIT_EVENT_UP;
                break;
        }
}

static void rlimit_connect(struct rlimit *r)
{
        const struct conf_redis_addr *a = &r->conf->redis;
        redisAsyncContext *ac;

        ac = a->path[0] != '\0' ? redisAsyncConnectUnix(a->path)
                                : redisAsyncConnect(a->host, a->port);
        if (ac == NULL) {
                rlimit_forget(r, "connect", "out of memory");
                return;
        }
        if (ac->err) {
                rlimit_forget(r, "connect", ac->errstr);
                redisAsyncFree(ac);
                return;
        }
        ac->data = r;
        ac->ev.data = ac;
        ac->ev.addRead = rlimit_add_read;
        ac->ev.delRead = rlimit_del_read;
        ac->ev.addWrite = rlimit_add_write;
        ac->ev.delWrite = rlimit_del_write;
        ac->ev.cleanup = rlimit_cleanup;
        redisAsyncSetConnectCallback(ac, rlimit_connected);
        redisAsyncSetDisconnectCallback(ac, rlimit_disconnected);
        r->ac = ac;
        r->token_sha[0] = r->pause_sha[0] = '\0';

        /* hiredis sends these once the connection is up; each failure drops the connection. */
        if (a->password[0] != '\0' && a->user[0] != '\0')
                rlimit_send(r, RLIMIT_AUTH, "AUTH %s %s", a->user, a->password);
        else if (a->password[0] != '\0')
                rlimit_send(r, RLIMIT_AUTH, "AUTH %s", a->password);
        if (r->ac != NULL && a->db != 0)
                rlimit_send(r, RLIMIT_SELECT, "SELECT %" PRIu32, a->db);
        if (r->ac != NULL)
                rlimit_send(r, RLIMIT_LOAD_TOKEN, "SCRIPT LOAD %s", rlimit_token_script);
        if (r->ac != NULL)
                rlimit_send(r, RLIMIT_LOAD_PAUSE, "SCRIPT LOAD %s", rlimit_pause_script);
}

static void rlimit_lower(uint64_t *wait_ns, uint64_t now_ns, uint64_t at_ns)
{
        uint64_t in = at_ns > now_ns ? at_ns - now_ns : 0;

        if (in < *wait_ns)
                *wait_ns = in;
}

void rlimit_tick(struct rlimit *r, uint64_t now_ns, uint64_t *wait_ns)
{
        if (r->ac == NULL && now_ns >= r->reconnect_ns)
                rlimit_connect(r);
        if (r->ac == NULL) {
                rlimit_lower(wait_ns, now_ns, r->reconnect_ns);
                return;
        }
        if (r->outstanding == 0)
                return;
        if (now_ns >= r->deadline_ns) {
                char error[64];

                snprintf(error, sizeof(error), "no reply within redis_timeout_ms (%" PRIu32 " ms)",
                         r->conf->redis_timeout_ms);
                rlimit_fail(r, "command", error);
                rlimit_lower(wait_ns, now_ns, r->reconnect_ns);
                return;
        }
        rlimit_lower(wait_ns, now_ns, r->deadline_ns);
}

int rlimit_waitfd(const struct rlimit *r, struct curl_waitfd *fd)
{
        if (r->ac == NULL || (!r->want_read && !r->want_write))
                return 0;
        fd->fd = r->ac->c.fd;
        fd->events = (short)((r->want_read ? CURL_WAIT_POLLIN : 0) |
                             (r->want_write ? CURL_WAIT_POLLOUT : 0));
        fd->revents = 0;
        return 1;
}

void rlimit_handle(struct rlimit *r, short revents)
{
        /* Each call may free the context through a callback, so check it again. */
        if (r->ac != NULL && (revents & CURL_WAIT_POLLOUT))
                redisAsyncHandleWrite(r->ac);
        if (r->ac != NULL && (revents & (CURL_WAIT_POLLIN | CURL_WAIT_POLLPRI)))
                redisAsyncHandleRead(r->ac);
}

void rlimit_ask(struct rlimit *r, uint64_t now_ns, uint64_t *wait_ns)
{
        if (r->ac == NULL || !r->ready || r->token_requested || r->granted)
                return;
        if (now_ns < r->ask_after_ns) {
                rlimit_lower(wait_ns, now_ns, r->ask_after_ns);
                return;
        }
        r->token_requested = 1;
        rlimit_send_token(r, RLIMIT_TOKEN);
}

void rlimit_pause(struct rlimit *r, uint64_t delay_ms)
{
        const struct conf *c = r->conf;

        if (r->ac == NULL || !r->ready || delay_ms == 0)
                return;
        rlimit_send(r, RLIMIT_PAUSE,
                    "EVALSHA %s 2 %spause %sbucket %" PRIu64 " %" PRIu64 " %" PRIu32, r->pause_sha,
                    c->redis_key_prefix, c->redis_key_prefix, delay_ms, c->rate_milli, c->burst);
}
