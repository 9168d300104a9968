/*
 * The rate limit shared through Redis. The Lua scripts run against a real redis-server. Then
 * two incsearchd instances share one strict demo API (its rate and burst equal to each
 * instance's) while clients type on both, and Redis is stopped and started again under both
 * fallbacks. A control run with the shm backend shows that the test can fail.
 *
 * The demo API is a token bucket of the same rate and burst that starts full. It rejects a call
 * exactly when some window of length T saw more than burst + rate * T calls, so zero violations
 * is that bound for every window.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <hiredis/hiredis.h>
#include <json-c/json.h>

#include "harness.h"
#include "rlimit.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

#define REDIS_RATE "20"
#define REDIS_BURST "5"
#define REDIS_CLIENTS 3 /* per instance */

static struct harness_redis redis_server;
static struct harness redis_a, redis_b;

static void redis_teardown(void)
{
        harness_stop_all(&redis_b);
        harness_stop_all(&redis_a);
        harness_redis_free(&redis_server);
        memset(&redis_a, 0, sizeof(redis_a));
        memset(&redis_b, 0, sizeof(redis_b));
}

static long long redis_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void redis_sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

/* A synchronous hiredis connection to the test's server, for running the scripts directly. */
static redisContext *redis_connect(void)
{
        redisContext *c = redisConnect("127.0.0.1", redis_server.port);

        ck_assert_ptr_nonnull(c);
        ck_assert_msg(c->err == 0, "cannot connect to redis-server: %s", c->errstr);
        return c;
}

static void redis_load(redisContext *c, const char *script, char sha[41])
{
        redisReply *reply = redisCommand(c, "SCRIPT LOAD %s", script);

        ck_assert_ptr_nonnull(reply);
        ck_assert_int_eq(reply->type, REDIS_REPLY_STRING);
        snprintf(sha, 41, "%s", reply->str);
        freeReplyObject(reply);
}

/* Runs the token script for rate RATE_MILLI and BURST. Returns 0 for a token, else the wait. */
static long long redis_token(redisContext *c, const char *sha, const char *rate_milli,
                             const char *burst)
{
        redisReply *reply = redisCommand(c, "EVALSHA %s 2 t:bucket t:pause %s %s 86400000 0", sha,
                                         rate_milli, burst);
        long long value;

        ck_assert_ptr_nonnull(reply);
        ck_assert_msg(reply->type == REDIS_REPLY_INTEGER, "token script: %s",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "not an integer");
        value = reply->integer;
        freeReplyObject(reply);
        return value;
}

static void redis_command_ok(redisContext *c, const char *command)
{
        redisReply *reply = redisCommand(c, command);

        ck_assert_ptr_nonnull(reply);
        ck_assert_int_ne(reply->type, REDIS_REPLY_ERROR);
        freeReplyObject(reply);
}

/* A missing key starts empty: the first token is due one interval later, then the rate. */
START_TEST(redis_script_empty_then_rate)
{
        redisContext *c;
        char sha[41];
        long long wait;

        harness_redis_start(&redis_server);
        c = redis_connect();
        redis_load(c, rlimit_token_script, sha);
        /* 10 calls per second: one every 100 ms. */
        wait = redis_token(c, sha, "10000", "5");
        ck_assert_int_gt(wait, 0);
        ck_assert_int_le(wait, 100000);
        redis_sleep_ms(wait / 1000 + 2);
        ck_assert_int_eq(redis_token(c, sha, "10000", "5"), 0);
        wait = redis_token(c, sha, "10000", "5");
        ck_assert_int_gt(wait, 50000);
        ck_assert_int_le(wait, 100000);
        redisFree(c);
}
END_TEST

/* A full bucket (a bucket key in the past) gives the burst at once, then one per interval. */
START_TEST(redis_script_burst_then_rate)
{
        redisContext *c;
        char sha[41];

        harness_redis_start(&redis_server);
        c = redis_connect();
        redis_load(c, rlimit_token_script, sha);
        redis_command_ok(c, "SET t:bucket 0");
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(redis_token(c, sha, "10000", "5"), 0);
        ck_assert_int_gt(redis_token(c, sha, "10000", "5"), 0);
        redisFree(c);
}
END_TEST

/* A pause blocks every token and only ever grows. After it the bucket starts empty. */
START_TEST(redis_script_pause_honoured)
{
        redisContext *c;
        char token_sha[41], pause_sha[41];
        redisReply *reply;
        long long wait;

        harness_redis_start(&redis_server);
        c = redis_connect();
        redis_load(c, rlimit_token_script, token_sha);
        redis_load(c, rlimit_pause_script, pause_sha);
        redis_command_ok(c, "SET t:bucket 0");
        reply = redisCommand(c, "EVALSHA %s 2 t:pause t:bucket 400 10000 5", pause_sha);
        ck_assert_int_eq(reply->integer, 1);
        freeReplyObject(reply);
        reply = redisCommand(c, "EVALSHA %s 2 t:pause t:bucket 100 10000 5", pause_sha);
        ck_assert_int_eq(reply->integer, 0);
        freeReplyObject(reply);

        /* A pause is reported as minus the time left in it. */
        wait = redis_token(c, token_sha, "10000", "5");
        ck_assert_int_lt(wait, -300000);
        ck_assert_int_ge(wait, -400000);
        redis_sleep_ms(-wait / 1000 + 5);
        /* The pause emptied the bucket as of its end: the next token is an interval later. */
        wait = redis_token(c, token_sha, "10000", "5");
        ck_assert_int_gt(wait, 0);
        ck_assert_int_le(wait, 100000);
        redisFree(c);
}
END_TEST

/* A request with the drain flag empties a full bucket: the next token is an interval away. */
START_TEST(redis_script_drain_empties)
{
        redisContext *c;
        char sha[41];
        redisReply *reply;

        harness_redis_start(&redis_server);
        c = redis_connect();
        redis_load(c, rlimit_token_script, sha);
        redis_command_ok(c, "SET t:bucket 0");
        reply = redisCommand(c, "EVALSHA %s 2 t:bucket t:pause 10000 5 86400000 1", sha);
        ck_assert_ptr_nonnull(reply);
        ck_assert_int_eq(reply->type, REDIS_REPLY_INTEGER);
        ck_assert_int_gt(reply->integer, 0);
        ck_assert_int_le(reply->integer, 100000);
        freeReplyObject(reply);
        redisFree(c);
}
END_TEST

/* A pause longer than any worker sets is damage: the script deletes it and goes on. */
START_TEST(redis_script_long_pause_deleted)
{
        redisContext *c;
        char sha[41];
        redisReply *reply;

        harness_redis_start(&redis_server);
        c = redis_connect();
        redis_load(c, rlimit_token_script, sha);
        redis_command_ok(c, "SET t:bucket 0");
        redis_command_ok(c, "SET t:pause 1 PX 9000000000000");
        ck_assert_int_eq(redis_token(c, sha, "10000", "5"), 0);
        reply = redisCommand(c, "EXISTS t:pause");
        ck_assert_int_eq(reply->integer, 0);
        freeReplyObject(reply);
        redisFree(c);
}
END_TEST

/* Bucket values that no run of the scripts leaves behind, each set with SET unless noted. */
static const char *const redis_damaged_values[] = {
    "inf", "1e300", "nan", "notanumber", "99999999999999999999", "9223372036854775807", "hash",
};

/*
 * A damaged bucket key is replaced by an empty bucket: the next token is due within one
 * interval, not at the damaged time, and the pause script accepts the key too.
 */
START_TEST(redis_script_damaged_key_repaired)
{
        const char *value = redis_damaged_values[_i];
        redisContext *c;
        char token_sha[41], pause_sha[41];
        redisReply *reply;
        long long wait;

        harness_redis_start(&redis_server);
        c = redis_connect();
        redis_load(c, rlimit_token_script, token_sha);
        redis_load(c, rlimit_pause_script, pause_sha);
        redis_command_ok(c, "DEL t:bucket t:pause");
        if (strcmp(value, "hash") == 0) {
                redis_command_ok(c, "HSET t:bucket a b");
        } else {
                reply = redisCommand(c, "SET t:bucket %s", value);
                ck_assert_ptr_nonnull(reply);
                freeReplyObject(reply);
        }
        /* 10 calls per second, burst 5: an empty bucket has its next token within 100 ms. */
        wait = redis_token(c, token_sha, "10000", "5");
        ck_assert_msg(wait > 0 && wait <= 100000, "bucket %s: wait %lld us", value, wait);

        redis_command_ok(c, "DEL t:bucket");
        if (strcmp(value, "hash") == 0) {
                redis_command_ok(c, "HSET t:bucket a b");
        } else {
                reply = redisCommand(c, "SET t:bucket %s", value);
                freeReplyObject(reply);
        }
        reply = redisCommand(c, "EVALSHA %s 2 t:pause t:bucket 50 10000 5", pause_sha);
        ck_assert_ptr_nonnull(reply);
        ck_assert_msg(reply->type == REDIS_REPLY_INTEGER, "pause script on %s: %s", value,
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "not an integer");
        freeReplyObject(reply);
        redisFree(c);
}
END_TEST

/*
 * Four connections take turns asking as fast as they can for a second: the grants never
 * exceed burst + rate * T, measured from before the first call to after the last.
 */
START_TEST(redis_script_many_callers)
{
        redisContext *c[4];
        char sha[41];
        long long start, elapsed, granted = 0;

        harness_redis_start(&redis_server);
        for (int i = 0; i < 4; i++)
                c[i] = redis_connect();
        redis_load(c[0], rlimit_token_script, sha);
        redis_command_ok(c[0], "SET t:bucket 0");
        start = redis_now_ms();
        for (long i = 0; redis_now_ms() - start < 1000; i++)
                granted += redis_token(c[i % 4], sha, "50000", "5") == 0;
        elapsed = redis_now_ms() - start + 1;
        ck_assert_int_le(granted, 5 + 50 * elapsed / 1000 + 1);
        ck_assert_int_ge(granted, 5);
        for (int i = 0; i < 4; i++)
                redisFree(c[i]);
}
END_TEST

/* The URL in log lines leaves out the user and the password. */
START_TEST(redis_url_hides_password)
{
        struct conf conf = {0};
        char url[512];

        ck_assert_int_eq(
            conf_parse_redis_url("redis://app:secret@cache.example:6380/3", &conf.redis), 0);
        rlimit_url(&conf, url, sizeof(url));
        ck_assert_str_eq(url, "redis://cache.example:6380/3");
        ck_assert_int_eq(conf_parse_redis_url("unix:/run/redis.sock?db=2", &conf.redis), 0);
        rlimit_url(&conf, url, sizeof(url));
        ck_assert_str_eq(url, "unix:/run/redis.sock?db=2");
}
END_TEST

struct redis_typist {
        struct harness *h;
        int fd;
        long long sent, received;
        json_object *last;
};

static const char *const redis_words[] = {"switzerland", "germany", "norway",
                                          "japan",       "brazil",  "canada"};

static void redis_read(struct redis_typist *t, int timeout_ms)
{
        struct wsc_frame frame;

        while (wsc_recv(t->fd, &frame, timeout_ms) == 1) {
                if (frame.opcode == WS_OP_TEXT) {
                        json_object *obj = json_tokener_parse((const char *)frame.payload);
                        long long seq;

                        ck_assert_msg(obj != NULL, "not JSON: %s", frame.payload);
                        seq = harness_json_int(obj, "seq");
                        ck_assert_msg(seq > t->received, "result for seq %lld after %lld", seq,
                                      t->received);
                        t->received = seq;
                        json_object_put(t->last);
                        t->last = obj;
                }
                wsc_frame_free(&frame);
                timeout_ms = 0;
        }
}

static void redis_send(struct redis_typist *t, const char *text)
{
        char message[256];

        snprintf(message, sizeof(message), "{\"q\":\"%s\",\"seq\":%lld}", text, ++t->sent);
        ck_assert_int_eq(wsc_send_text(t->fd, message), 0);
}

/* Every client types prefixes of its word, a key each 30 ms, for MS milliseconds. */
static void redis_type(struct redis_typist *t, unsigned n, long ms)
{
        long long start = redis_now_ms();

        for (long step = 0; redis_now_ms() - start < ms; step++) {
                for (unsigned i = 0; i < n; i++) {
                        const char *word = redis_words[i % 6];
                        char text[64];

                        snprintf(text, sizeof(text), "%.*s", (int)(1 + step % strlen(word)), word);
                        redis_send(&t[i], text);
                        redis_read(&t[i], 0);
                }
                redis_sleep_ms(30);
        }
}

/*
 * Sends each client's whole word as its last query and waits, bounded, for the reply to it. Returns
 * how many got the error CODE, or results when CODE is NULL.
 */
static unsigned redis_finish(struct redis_typist *t, unsigned n, const char *code)
{
        unsigned matched = 0;

        for (unsigned i = 0; i < n; i++)
                redis_send(&t[i], redis_words[i % 6]);
        for (unsigned i = 0; i < n; i++) {
                const char *type;

                for (int waited = 0; t[i].received < t[i].sent && waited < 20000; waited += 100)
                        redis_read(&t[i], 100);
                if (t[i].received != t[i].sent)
                        harness_dump_log(t[i].h, "incsearchd.log");
                ck_assert_msg(t[i].received == t[i].sent, "client %u: seq %lld unanswered", i,
                              t[i].sent);
                type = harness_json_string(t[i].last, "type");
                if (code == NULL ? strcmp(type, "results") == 0
                                 : strcmp(harness_json_string(t[i].last, "error"), code) == 0)
                        matched++;
                else
                        fprintf(stderr, "client %u: %s\n", i,
                                json_object_to_json_string(t[i].last));
        }
        return matched;
}

/* Reads the value of METRIC from H's /metrics, or -1 if it is not there. */
static long long redis_metric(const struct harness *h, const char *metric)
{
        static char body[65536];
        char needle[128];
        const char *at;

        if (harness_http_get(h->port, "/metrics", body, sizeof(body)) != 200)
                return -1;
        snprintf(needle, sizeof(needle), "\n%s ", metric);
        at = strstr(body, needle);
        return at != NULL ? atoll(at + strlen(needle)) : -1;
}

/* Waits up to 15 s for both instances' incsearchd_redis_up to be UP. */
static void redis_wait_up(int up)
{
        for (int waited = 0; waited < 15000; waited += 50) {
                if (redis_metric(&redis_a, "incsearchd_redis_up") == up &&
                    redis_metric(&redis_b, "incsearchd_redis_up") == up)
                        return;
                redis_sleep_ms(50);
        }
        harness_dump_log(&redis_a, "incsearchd.log");
        ck_abort_msg("incsearchd_redis_up did not become %d on both instances", up);
}

/* Starts Redis and two instances with BACKEND_LINES in [api], each with the API's whole rate. */
static void redis_start_pair(const char *backend_lines, const char *extra_api)
{
        static char api[1024];
        struct harness_options options = {.api_rate = REDIS_RATE,
                                          .api_burst = REDIS_BURST,
                                          .rate = REDIS_RATE,
                                          .burst = REDIS_BURST,
                                          .extra_api = api,
                                          .extra_sections = "[cache]\nmax_bytes = 0\n"};

        harness_redis_start(&redis_server);
        snprintf(api, sizeof(api), "%s\nredis_url = %s\nredis_key_prefix = test%d:\n%s",
                 backend_lines, redis_server.url, (int)getpid(),
                 extra_api != NULL ? extra_api : "");
        harness_start(&redis_a, &options);
        options.shared_api = &redis_a;
        harness_start(&redis_b, &options);
}

static void redis_connect_typists(struct redis_typist *t)
{
        for (unsigned i = 0; i < 2 * REDIS_CLIENTS; i++) {
                t[i].h = i < REDIS_CLIENTS ? &redis_a : &redis_b;
                t[i].fd = wsc_connect(t[i].h->port);
                ck_assert_int_ge(t[i].fd, 0);
        }
}

static void redis_close_typists(struct redis_typist *t)
{
        for (unsigned i = 0; i < 2 * REDIS_CLIENTS; i++) {
                json_object_put(t[i].last);
                close(t[i].fd);
        }
}

/* Two instances, each configured with the API's whole rate, share it through Redis. */
START_TEST(redis_two_instances_share)
{
        struct redis_typist t[2 * REDIS_CLIENTS] = {0};
        char out[4096], command[512];
        FILE *p;
        size_t n;

        redis_start_pair("rate_limit_backend = redis", NULL);
        redis_connect_typists(t);
        redis_type(t, 2 * REDIS_CLIENTS, 5000);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);
        ck_assert_int_eq(harness_api_stat(&redis_a, "violations"), 0);
        /* Both instances made calls, so the limit was shared rather than won by one. */
        ck_assert_int_gt(redis_metric(&redis_a, "incsearchd_redis_tokens_granted_total"), 10);
        ck_assert_int_gt(redis_metric(&redis_b, "incsearchd_redis_tokens_granted_total"), 10);
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_up"), 1);

        snprintf(command, sizeof(command), "%s/incsearchctl -s %s status", harness_build_dir(),
                 redis_b.control_path);
        p = popen(command, "r");
        ck_assert_ptr_nonnull(p);
        n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        pclose(p);
        ck_assert_msg(strstr(out, "redis     up, fallback closed,") != NULL, "status: %s", out);
        redis_close_typists(t);
}
END_TEST

/* The same load with the shm backend: each instance spends the whole rate, so the API rejects
 * calls. */
START_TEST(redis_control_shm_violates)
{
        struct redis_typist t[2 * REDIS_CLIENTS] = {0};

        redis_start_pair("rate_limit_backend = shm", NULL);
        redis_connect_typists(t);
        redis_type(t, 2 * REDIS_CLIENTS, 5000);
        ck_assert_int_gt(harness_api_stat(&redis_a, "violations"), 0);
        redis_close_typists(t);
}
END_TEST

/*
 * redis_fallback = closed: with Redis stopped no call is made and the last queries end in
 * overloaded after max_wait_ms; once Redis is back, calls go through it again.
 */
START_TEST(redis_down_closed)
{
        struct redis_typist t[2 * REDIS_CLIENTS] = {0};
        long long calls;

        redis_start_pair("rate_limit_backend = redis\nredis_fallback = closed",
                         "max_wait_ms = 1500\n");
        redis_connect_typists(t);
        redis_type(t, 2 * REDIS_CLIENTS, 1500);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);

        harness_redis_stop(&redis_server);
        redis_wait_up(0);
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_fallback_active"), 1);
        redis_sleep_ms(300); /* calls started before the switch reach the API */
        calls = harness_api_stat(&redis_a, "requests");
        redis_type(t, 2 * REDIS_CLIENTS, 2000);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, "overloaded"), 2 * REDIS_CLIENTS);
        ck_assert_int_eq(harness_api_stat(&redis_a, "requests"), calls);

        harness_redis_start(&redis_server);
        redis_wait_up(1);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);
        ck_assert_int_gt(harness_api_stat(&redis_a, "requests"), calls);
        ck_assert_int_eq(harness_api_stat(&redis_a, "violations"), 0);
        ck_assert_int_ge(redis_metric(&redis_a, "incsearchd_redis_fallback_switches_total"), 2);
        redis_close_typists(t);
}
END_TEST

/*
 * redis_fallback = local_share with expected_hosts = 2: with Redis stopped each instance
 * spends half the rate, so calls go on without a violation; then Redis comes back.
 */
START_TEST(redis_down_local_share)
{
        struct redis_typist t[2 * REDIS_CLIENTS] = {0};
        long long calls, granted;

        redis_start_pair("rate_limit_backend = redis\nredis_fallback = local_share\n"
                         "expected_hosts = 2",
                         NULL);
        redis_connect_typists(t);
        redis_type(t, 2 * REDIS_CLIENTS, 1500);

        harness_redis_stop(&redis_server);
        redis_wait_up(0);
        calls = harness_api_stat(&redis_a, "requests");
        redis_type(t, 2 * REDIS_CLIENTS, 3000);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);
        ck_assert_int_gt(harness_api_stat(&redis_a, "requests"), calls + 10);
        ck_assert_int_eq(harness_api_stat(&redis_a, "violations"), 0);

        granted = redis_metric(&redis_a, "incsearchd_redis_tokens_granted_total");
        harness_redis_start(&redis_server);
        redis_wait_up(1);
        redis_type(t, 2 * REDIS_CLIENTS, 1500);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);
        ck_assert_int_gt(redis_metric(&redis_a, "incsearchd_redis_tokens_granted_total"), granted);
        ck_assert_int_eq(harness_api_stat(&redis_a, "violations"), 0);
        redis_close_typists(t);
}
END_TEST

/* Reads METRIC from H's /metrics as a decimal, or -1 if it is not there. */
static double redis_metric_double(const struct harness *h, const char *metric)
{
        static char body[65536];
        char needle[128];
        const char *at;

        if (harness_http_get(h->port, "/metrics", body, sizeof(body)) != 200)
                return -1;
        snprintf(needle, sizeof(needle), "\n%s ", metric);
        at = strstr(body, needle);
        return at != NULL ? strtod(at + strlen(needle), NULL) : -1;
}

/*
 * A pause set in Redis (as another host's 429 would) shows on every instance that asks for a
 * token during it, and the local bucket's tokens, which the Redis backend does not use, are
 * not reported.
 */
START_TEST(redis_shared_pause_shown)
{
        struct redis_typist t[2 * REDIS_CLIENTS] = {0};
        char key[64], answer[64];
        const char *pause[] = {"SET", key, "1", "PX", "4000", NULL};

        redis_start_pair("rate_limit_backend = redis\nredis_fallback = closed", NULL);
        redis_connect_typists(t);
        redis_type(t, 2 * REDIS_CLIENTS, 500);
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_bucket_tokens"), -1);
        snprintf(key, sizeof(key), "test%d:pause", (int)getpid());
        ck_assert_int_eq(harness_redis_command(&redis_server, pause, answer, sizeof(answer)), 0);
        ck_assert_str_eq(answer, "+OK");
        redis_type(t, 2 * REDIS_CLIENTS, 800);
        ck_assert_double_gt(redis_metric_double(&redis_a, "incsearchd_api_pause_seconds"), 1.0);
        ck_assert_double_gt(redis_metric_double(&redis_b, "incsearchd_api_pause_seconds"), 1.0);
        /* After the pause every last query is answered. */
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);
        redis_close_typists(t);
}
END_TEST

/*
 * A bucket key set far into the future by hand costs the instances no more than an empty
 * bucket: every last query still gets results.
 */
START_TEST(redis_far_future_key_recovers)
{
        struct redis_typist t[2 * REDIS_CLIENTS] = {0};
        char key[64], answer[64];
        const char *set[] = {"SET", key, "9223372036854775807", NULL};

        redis_start_pair("rate_limit_backend = redis\nredis_fallback = closed", NULL);
        redis_connect_typists(t);
        redis_type(t, 2 * REDIS_CLIENTS, 1000);
        snprintf(key, sizeof(key), "test%d:bucket", (int)getpid());
        ck_assert_int_eq(harness_redis_command(&redis_server, set, answer, sizeof(answer)), 0);
        ck_assert_str_eq(answer, "+OK");
        redis_type(t, 2 * REDIS_CLIENTS, 1000);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);
        ck_assert_int_eq(harness_api_stat(&redis_a, "violations"), 0);
        redis_close_typists(t);
}
END_TEST

/*
 * A Redis that accepts connections and scripts but fails every call of the token script (here
 * an ACL that denies EVALSHA) switches each host to its fallback once, without flapping back
 * each time a reconnect succeeds. local_share then answers, and allowing EVALSHA again brings
 * the shared limit back.
 */
START_TEST(redis_failing_script_no_flapping)
{
        struct redis_typist t[2 * REDIS_CLIENTS] = {0};
        const char *deny[] = {"ACL", "SETUSER", "default", "-evalsha", NULL};
        const char *allow[] = {"ACL", "SETUSER", "default", "+evalsha", NULL};
        char answer[64];

        redis_start_pair("rate_limit_backend = redis\nredis_fallback = local_share\n"
                         "expected_hosts = 2",
                         NULL);
        redis_connect_typists(t);
        redis_type(t, 2 * REDIS_CLIENTS, 500);
        ck_assert_int_eq(harness_redis_command(&redis_server, deny, answer, sizeof(answer)), 0);
        ck_assert_str_eq(answer, "+OK");
        redis_type(t, 2 * REDIS_CLIENTS, 3000);
        ck_assert_uint_eq(redis_finish(t, 2 * REDIS_CLIENTS, NULL), 2 * REDIS_CLIENTS);
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_up"), 0);
        /* One switch down per instance; a second worker may add one more, never a stream. */
        ck_assert_int_le(redis_metric(&redis_a, "incsearchd_redis_fallback_switches_total"), 2);
        ck_assert_int_le(redis_metric(&redis_b, "incsearchd_redis_fallback_switches_total"), 2);
        ck_assert_int_eq(harness_api_stat(&redis_a, "violations"), 0);

        ck_assert_int_eq(harness_redis_command(&redis_server, allow, answer, sizeof(answer)), 0);
        ck_assert_str_eq(answer, "+OK");
        redis_type(t, 2 * REDIS_CLIENTS, 500);
        redis_wait_up(1);
        redis_close_typists(t);
}
END_TEST

/* Replaces the line of H's config that starts with PREFIX by LINE. */
static void redis_edit_conf(const struct harness *h, const char *prefix, const char *line)
{
        char text[8192], out[8192] = "";
        char *saveptr = NULL;
        size_t n;
        FILE *f = fopen(h->conf_path, "r");

        ck_assert_ptr_nonnull(f);
        n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        for (char *l = strtok_r(text, "\n", &saveptr); l != NULL;
             l = strtok_r(NULL, "\n", &saveptr)) {
                strncat(out, strncmp(l, prefix, strlen(prefix)) == 0 ? line : l,
                        sizeof(out) - strlen(out) - 2);
                strcat(out, "\n");
        }
        f = fopen(h->conf_path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(out, f);
        fclose(f);
}

/* Counts the lines of H's daemon log that contain TEXT. */
static unsigned redis_log_count(const struct harness *h, const char *text)
{
        char path[256], line[2048];
        unsigned count = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/incsearchd.log", h->dir);
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        while (fgets(line, sizeof(line), f) != NULL)
                count += strstr(line, text) != NULL;
        fclose(f);
        return count;
}

/*
 * A Redis with a password, and a database other than 0 in redis_url: the workers' tokens and
 * the daemon's shared cache both authenticate and select it.
 */
START_TEST(redis_auth_and_database)
{
        static char api[512];
        struct harness_options options = {.api_rate = REDIS_RATE,
                                          .api_burst = REDIS_BURST,
                                          .rate = REDIS_RATE,
                                          .burst = REDIS_BURST,
                                          .extra_api = api,
                                          .extra_sections = "[cache]\nshared = redis\n"};
        struct redis_typist t = {0};
        redisContext *c;
        redisReply *reply;

        redis_server.password = "s3cret-pw";
        harness_redis_start(&redis_server);
        snprintf(api, sizeof(api),
                 "rate_limit_backend = redis\nredis_url = redis://:%s@127.0.0.1:%d/3\n"
                 "redis_key_prefix = auth%d:\n",
                 redis_server.password, redis_server.port, (int)getpid());
        harness_start(&redis_a, &options);
        t.h = &redis_a;
        t.fd = wsc_connect(redis_a.port);
        ck_assert_int_ge(t.fd, 0);
        ck_assert_uint_eq(redis_finish(&t, 1, NULL), 1);
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_up"), 1);

        c = redis_connect();
        reply = redisCommand(c, "AUTH %s", redis_server.password);
        ck_assert_int_eq(reply->type, REDIS_REPLY_STATUS);
        freeReplyObject(reply);
        redis_command_ok(c, "SELECT 3");
        reply = redisCommand(c, "EXISTS auth%d:bucket", (int)getpid());
        ck_assert_int_eq(reply->integer, 1);
        freeReplyObject(reply);
        /* The result of the client's last query, stored by the daemon's own connection. */
        for (int waited = 0; waited < 3000; waited += 50) {
                long long exists;

                reply = redisCommand(c, "EXISTS auth%d:cache:%s", (int)getpid(), redis_words[0]);
                exists = reply->integer;
                freeReplyObject(reply);
                if (exists == 1)
                        break;
                redis_sleep_ms(50);
        }
        reply = redisCommand(c, "EXISTS auth%d:cache:%s", (int)getpid(), redis_words[0]);
        ck_assert_int_eq(reply->integer, 1);
        freeReplyObject(reply);
        redisFree(c);
        json_object_put(t.last);
        close(t.fd);
}
END_TEST

/*
 * One host with expected_hosts = 1 spends the whole rate locally while Redis fails the token
 * script but keeps its data, so the bucket in Redis refills meanwhile. The token request that
 * brings the host back empties it, so no burst comes on top of the calls spent locally.
 */
START_TEST(redis_back_from_local_share_no_burst)
{
        static char api[512];
        struct harness_options options = {.api_rate = REDIS_RATE,
                                          .api_burst = REDIS_BURST,
                                          .rate = REDIS_RATE,
                                          .burst = REDIS_BURST,
                                          .extra_api = api,
                                          .extra_sections = "[cache]\nmax_bytes = 0\n"};
        struct redis_typist t[REDIS_CLIENTS] = {0};
        const char *deny[] = {"ACL", "SETUSER", "default", "-evalsha", NULL};
        const char *allow[] = {"ACL", "SETUSER", "default", "+evalsha", NULL};
        char answer[64];

        harness_redis_start(&redis_server);
        snprintf(api, sizeof(api),
                 "rate_limit_backend = redis\nredis_url = %s\nredis_key_prefix = one%d:\n"
                 "redis_fallback = local_share\nexpected_hosts = 1\n",
                 redis_server.url, (int)getpid());
        harness_start(&redis_a, &options);
        for (unsigned i = 0; i < REDIS_CLIENTS; i++) {
                t[i].h = &redis_a;
                t[i].fd = wsc_connect(redis_a.port);
                ck_assert_int_ge(t[i].fd, 0);
        }
        redis_type(t, REDIS_CLIENTS, 500);
        ck_assert_int_eq(harness_redis_command(&redis_server, deny, answer, sizeof(answer)), 0);
        redis_type(t, REDIS_CLIENTS, 3000);
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_up"), 0);
        ck_assert_int_eq(harness_redis_command(&redis_server, allow, answer, sizeof(answer)), 0);
        redis_type(t, REDIS_CLIENTS, 3000);
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_up"), 1);
        ck_assert_uint_eq(redis_finish(t, REDIS_CLIENTS, NULL), REDIS_CLIENTS);
        ck_assert_int_eq(harness_api_stat(&redis_a, "violations"), 0);
        for (unsigned i = 0; i < REDIS_CLIENTS; i++) {
                json_object_put(t[i].last);
                close(t[i].fd);
        }
}
END_TEST

/* A host reloaded with a rate other than the one the other host wrote to Redis warns. */
START_TEST(redis_mismatched_limit_warned)
{
        redis_start_pair("rate_limit_backend = redis\nredis_fallback = closed", NULL);
        redis_wait_up(1);
        redis_edit_conf(&redis_b, "rate =", "rate = 10");
        ck_assert_int_eq(kill(redis_b.daemon_pid, SIGHUP), 0);
        for (int waited = 0; waited < 10000; waited += 50) {
                if (redis_log_count(&redis_b, "another host shares this Redis bucket") > 0)
                        break;
                redis_sleep_ms(50);
        }
        ck_assert_uint_gt(redis_log_count(&redis_b, "another host shares this Redis bucket"), 0);
        ck_assert_uint_eq(redis_log_count(&redis_a, "another host shares this Redis bucket"), 0);
}
END_TEST

/*
 * An instance whose redis_url points at a port without a server logs the switch once (it has
 * two workers) and answers overloaded. A reload to the right URL makes its workers reconnect
 * without a restart, while a changed rate_limit_backend is kept until a restart.
 */
START_TEST(redis_reload_url_reconnects)
{
        struct harness_options options = {.extra_api = NULL,
                                          .extra_sections = "[cache]\nmax_bytes = 0\n"};
        static char api[512];
        char line[192], out[2048], command[512];
        struct redis_typist t = {.h = &redis_a};
        FILE *p;
        size_t n;

        harness_redis_start(&redis_server);
        snprintf(api, sizeof(api),
                 "rate_limit_backend = redis\nredis_url = redis://127.0.0.1:%d/0\n"
                 "max_wait_ms = 500\n",
                 harness_free_port());
        options.extra_api = api;
        harness_start(&redis_a, &options);
        for (int waited = 0; waited < 15000; waited += 50) {
                if (redis_metric(&redis_a, "incsearchd_redis_up") == 0)
                        break;
                redis_sleep_ms(50);
        }
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_up"), 0);
        t.fd = wsc_connect(redis_a.port);
        ck_assert_int_ge(t.fd, 0);
        ck_assert_uint_eq(redis_finish(&t, 1, "overloaded"), 1);
        ck_assert_uint_eq(redis_log_count(&redis_a, "until it is back"), 1);

        snprintf(line, sizeof(line), "redis_url = %s", redis_server.url);
        redis_edit_conf(&redis_a, "redis_url =", line);
        redis_edit_conf(&redis_a, "rate_limit_backend =", "rate_limit_backend = shm");
        snprintf(command, sizeof(command), "%s/incsearchctl -s %s reload 2>&1", harness_build_dir(),
                 redis_a.control_path);
        p = popen(command, "r");
        ck_assert_ptr_nonnull(p);
        n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        pclose(p);
        ck_assert_msg(strstr(out, "rate_limit_backend") != NULL, "reload: %s", out);
        for (int waited = 0; waited < 15000; waited += 50) {
                if (redis_metric(&redis_a, "incsearchd_redis_up") == 1)
                        break;
                redis_sleep_ms(50);
        }
        ck_assert_int_eq(redis_metric(&redis_a, "incsearchd_redis_up"), 1);
        ck_assert_uint_eq(redis_finish(&t, 1, NULL), 1);
        ck_assert_int_ge(redis_metric(&redis_a, "incsearchd_redis_tokens_granted_total"), 1);
        ck_assert_uint_eq(redis_log_count(&redis_a, "replies again"), 1);
        json_object_put(t.last);
        close(t.fd);
}
END_TEST

Suite *redis_suite(void)
{
        Suite *s = suite_create("redis");
        TCase *script = tcase_create("script");
        TCase *shared = tcase_create("shared");

        tcase_add_checked_fixture(script, NULL, redis_teardown);
        tcase_add_test(script, redis_script_empty_then_rate);
        tcase_add_test(script, redis_script_burst_then_rate);
        tcase_add_test(script, redis_script_pause_honoured);
        tcase_add_test(script, redis_script_many_callers);
        tcase_add_test(script, redis_url_hides_password);
        tcase_add_test(script, redis_script_drain_empties);
        tcase_add_test(script, redis_script_long_pause_deleted);
        tcase_add_loop_test(script, redis_script_damaged_key_repaired, 0,
                            (int)(sizeof(redis_damaged_values) / sizeof(redis_damaged_values[0])));
        suite_add_tcase(s, script);

        tcase_set_timeout(shared, 90);
        tcase_add_checked_fixture(shared, NULL, redis_teardown);
        tcase_add_test(shared, redis_two_instances_share);
        tcase_add_test(shared, redis_control_shm_violates);
        tcase_add_test(shared, redis_down_closed);
        tcase_add_test(shared, redis_down_local_share);
        tcase_add_test(shared, redis_reload_url_reconnects);
        tcase_add_test(shared, redis_far_future_key_recovers);
        tcase_add_test(shared, redis_shared_pause_shown);
        tcase_add_test(shared, redis_mismatched_limit_warned);
        tcase_add_test(shared, redis_auth_and_database);
        tcase_add_test(shared, redis_back_from_local_share_no_burst);
        tcase_add_test(shared, redis_failing_script_no_flapping);
        suite_add_tcase(s, shared);
        return s;
}
