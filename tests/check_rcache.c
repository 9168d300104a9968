/*
 * The shared result cache: a redis-server from Debian and two incsearchd instances that share
 * one demo API, all on free loopback ports. The demo API's request count shows which answers
 * cost an API call.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "harness.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

#define RCACHE_TEST_TTL_MS 60000

static struct harness_redis redis;
static struct harness one, two;

static void rcache_teardown(void)
{
        harness_stop_all(&two);
        harness_stop_all(&one);
        harness_redis_free(&redis);
}

static long long rcache_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rcache_sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

/*
 * Starts H with [cache] shared = SHARED and redis_timeout_ms = TIMEOUT_MS, using the demo API
 * of SHARED_API when that is not NULL. RATES, when not NULL, gives the rates and bursts.
 */
static void rcache_start_with(struct harness *h, const struct harness *shared_api,
                              const char *timeout_ms, const char *shared,
                              const struct harness_options *rates)
{
        static char api[2][256], sections[2][256];
        int i = h == &one ? 0 : 1;
        struct harness_options o = {0};

        if (rates != NULL)
                o = *rates;
        snprintf(api[i], sizeof(api[i]), "redis_url = %s\nredis_timeout_ms = %s\n", redis.url,
                 timeout_ms);
        snprintf(sections[i], sizeof(sections[i]), "[cache]\nshared = %s\nshared_ttl_ms = %d\n",
                 shared, RCACHE_TEST_TTL_MS);
        o.extra_api = api[i];
        o.extra_sections = sections[i];
        o.extra_server = "max_result_bytes = 4096\n";
        o.shared_api = shared_api;
        harness_start(h, &o);
}

static void rcache_start(struct harness *h, const struct harness *shared_api,
                         const char *timeout_ms, const char *shared)
{
        rcache_start_with(h, shared_api, timeout_ms, shared, NULL);
}

/* Returns the value of the metric line that starts with NAME and a space, or -1. */
static double rcache_metric(const struct harness *h, const char *name)
{
        static char body[131072];
        char *line;

        if (harness_http_get(h->port, "/metrics", body, sizeof(body)) != 200)
                return -1;
        for (line = body; line != NULL && *line != '\0'; line = strchr(line, '\n')) {
                if (*line == '\n')
                        line++;
                if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ' ')
                        return strtod(line + strlen(name) + 1, NULL);
        }
        return -1;
}

/* Waits up to TIMEOUT_MS for the metric NAME of H to reach VALUE. Returns 1 if it did. */
static int rcache_wait_metric(const struct harness *h, const char *name, double value,
                              int timeout_ms)
{
        for (int waited = 0; waited < timeout_ms; waited += 50) {
                if (rcache_metric(h, name) == value)
                        return 1;
                rcache_sleep_ms(50);
        }
        return 0;
}

static void rcache_expect_up(const struct harness *h)
{
        int up = rcache_wait_metric(h, "incsearchd_shared_cache_up", 1, 15000);

        if (!up)
                harness_dump_log(h, "incsearchd.log");
        ck_assert_msg(up, "incsearchd on port %d did not connect to Redis", h->port);
}

static double rcache_lookups(const struct harness *h, const char *result)
{
        char name[128];

        snprintf(name, sizeof(name), "incsearchd_shared_cache_lookups_total{result=\"%s\"}",
                 result);
        return rcache_metric(h, name);
}

static int rcache_connect(const struct harness *h)
{
        int fd = wsc_connect(h->port);

        ck_assert_msg(fd >= 0, "WebSocket handshake with 127.0.0.1:%d failed", h->port);
        return fd;
}

/* Reads text frames until one arrives and returns it parsed, or NULL after TIMEOUT_MS. */
static json_object *rcache_next(int fd, int timeout_ms)
{
        struct wsc_frame frame;
        json_object *obj;

        for (;;) {
                int r = wsc_recv(fd, &frame, timeout_ms);

                if (r != 1)
                        return NULL;
                if (frame.opcode == WS_OP_TEXT)
                        break;
                wsc_frame_free(&frame);
        }
        obj = json_tokener_parse((const char *)frame.payload);
        ck_assert_msg(obj != NULL, "not JSON: %s", frame.payload);
        wsc_frame_free(&frame);
        return obj;
}

static void rcache_send(int fd, const char *text, long long seq)
{
        char message[512];

        snprintf(message, sizeof(message), "{\"q\":\"%s\",\"seq\":%lld}", text, seq);
        ck_assert_int_eq(wsc_send_text(fd, message), 0);
}

/* Sends query TEXT and returns its results reply; fails the test on anything else. */
static json_object *rcache_query(const struct harness *h, int fd, const char *text, long long seq)
{
        json_object *reply;

        rcache_send(fd, text, seq);
        reply = rcache_next(fd, 5000);
        if (reply == NULL)
                harness_dump_log(h, "incsearchd.log");
        ck_assert_msg(reply != NULL, "no reply to \"%s\" within 5 s", text);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_int_eq(harness_json_int(reply, "seq"), seq);
        return reply;
}

static int rcache_cached(json_object *reply)
{
        json_object *cached;

        return json_object_object_get_ex(reply, "cached", &cached) &&
               json_object_get_boolean(cached);
}

/* Runs one Redis command; fails the test if Redis does not answer. */
static void rcache_redis(const char *const argv[], char *out, size_t len)
{
        ck_assert_int_eq(harness_redis_command(&redis, argv, out, len), 0);
}

/* Waits up to 3 s for KEY to exist in Redis, since results are stored after they are sent. */
static int rcache_wait_key(const char *key)
{
        const char *const exists[] = {"EXISTS", key, NULL};
        char out[64];

        for (int waited = 0; waited < 3000; waited += 20) {
                rcache_redis(exists, out, sizeof(out));
                if (strcmp(out, ":1") == 0)
                        return 1;
                rcache_sleep_ms(20);
        }
        return 0;
}

/* Returns 1 if the log file NAME of H contains TEXT. */
static int rcache_log_contains(const struct harness *h, const char *text)
{
        char path[256], line[2048];
        int found = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/incsearchd.log", h->dir);
        f = fopen(path, "r");
        if (f == NULL)
                return 0;
        while (!found && fgets(line, sizeof(line), f) != NULL)
                found = strstr(line, text) != NULL;
        fclose(f);
        return found;
}

/* A result from the API on one instance is answered on the other from Redis. */
START_TEST(rcache_hit_across_instances)
{
        const char *const pttl[] = {"PTTL", "incsearchd:cache:switz", NULL};
        json_object *first, *second, *again, *results1, *results2;
        long long calls;
        char out[64];
        int fd1, fd2;

        harness_redis_start(&redis);
        rcache_start(&one, NULL, "1000", "redis");
        rcache_start(&two, &one, "1000", "redis");
        rcache_expect_up(&one);
        rcache_expect_up(&two);
        fd1 = rcache_connect(&one);
        fd2 = rcache_connect(&two);

        first = rcache_query(&one, fd1, "switz", 1);
        ck_assert(!rcache_cached(first));
        ck_assert_msg(rcache_wait_key("incsearchd:cache:switz"), "the result was not stored");
        calls = harness_api_stat(&one, "requests");
        ck_assert_int_eq(calls, 1);

        /* Another spelling of the same normalized query. */
        second = rcache_query(&two, fd2, "  SWITZ ", 1);
        ck_assert(rcache_cached(second));
        ck_assert(json_object_object_get_ex(first, "results", &results1));
        ck_assert(json_object_object_get_ex(second, "results", &results2));
        ck_assert(json_object_equal(results1, results2));
        ck_assert_str_eq(harness_json_string(second, "q"), "  SWITZ ");
        ck_assert_int_eq(harness_api_stat(&one, "requests"), calls);
        ck_assert_int_eq(rcache_lookups(&two, "hit"), 1);

        /* The hit filled the second instance's local cache: no second GET. */
        again = rcache_query(&two, fd2, "switz", 2);
        ck_assert(rcache_cached(again));
        ck_assert_int_eq(rcache_lookups(&two, "hit"), 1);
        ck_assert_int_eq(harness_api_stat(&one, "requests"), calls);

        rcache_redis(pttl, out, sizeof(out));
        ck_assert_msg(out[0] == ':', "PTTL answered %s", out);
        ck_assert_int_gt(atol(out + 1), RCACHE_TEST_TTL_MS - 30000);
        ck_assert_int_le(atol(out + 1), RCACHE_TEST_TTL_MS);

        json_object_put(first);
        json_object_put(second);
        json_object_put(again);
        close(fd1);
        close(fd2);
}
END_TEST

/* Values planted in Redis that a browser must not get: the API answers instead. */
START_TEST(rcache_bad_values_ignored)
{
        static const char *const planted[][2] = {
            {"incsearchd:cache:alb", "[\"Albania\""},         /* not JSON */
            {"incsearchd:cache:bra", "[\"Bra\xc3\x28zil\"]"}, /* invalid UTF-8 */
            {"incsearchd:cache:chi", "[\"\xed\xa0\x80\"]"},   /* a surrogate */
            {"incsearchd:cache:den", "{\"n\": NaN}"},         /* not for JSON.parse */
            {"incsearchd:cache:fra", "[\""},                  /* over max_result_bytes */
            {"incsearchd:cache:ger", NULL},                   /* a list, not a string */
        };
        static const char *const queries[] = {"alb", "bra", "chi", "den", "fra", "ger"};
        char big[3001], out[4096];
        const char *const append_big[] = {"APPEND", "incsearchd:cache:fra", big, NULL};
        const char *const append_end[] = {"APPEND", "incsearchd:cache:fra", "\"]", NULL};
        long long calls;
        int fd;

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        harness_redis_start(&redis);
        rcache_start(&one, NULL, "1000", "redis");
        rcache_expect_up(&one);
        for (size_t i = 0; i < sizeof(planted) / sizeof(planted[0]); i++) {
                const char *const set[] = {"SET", planted[i][0], planted[i][1], NULL};
                const char *const push[] = {"RPUSH", planted[i][0], "a", "b", NULL};

                rcache_redis(planted[i][1] != NULL ? set : push, out, sizeof(out));
                ck_assert_str_eq(out, planted[i][1] != NULL ? "+OK" : ":2");
        }
        /* 6004 bytes of valid JSON, in pieces that fit the harness's request buffer. */
        rcache_redis(append_big, out, sizeof(out));
        rcache_redis(append_big, out, sizeof(out));
        rcache_redis(append_end, out, sizeof(out));
        ck_assert_str_eq(out, ":6004");
        fd = rcache_connect(&one);

        for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
                const char *const get[] = {"GET", planted[i][0], NULL};
                json_object *reply, *results;

                calls = harness_api_stat(&one, "requests");
                reply = rcache_query(&one, fd, queries[i], (long long)i + 1);
                ck_assert_msg(!rcache_cached(reply), "\"%s\" came from the bad value", queries[i]);
                ck_assert(json_object_object_get_ex(reply, "results", &results));
                ck_assert(json_object_is_type(results, json_type_array));
                ck_assert_int_gt(json_object_array_length(results), 0);
                ck_assert_int_eq(harness_api_stat(&one, "requests"), calls + 1);
                json_object_put(reply);

                /* The API's result replaces the bad value. */
                for (int waited = 0; waited < 3000; waited += 20) {
                        rcache_redis(get, out, sizeof(out));
                        if (out[0] == '[')
                                break;
                        rcache_sleep_ms(20);
                }
                ck_assert_msg(strncmp(out, "[{", 2) == 0, "%s holds %.60s", planted[i][0], out);
        }
        ck_assert_int_eq(rcache_lookups(&one, "bad_value"), 6);
        ck_assert_int_eq(rcache_lookups(&one, "hit"), 0);
        ck_assert(rcache_log_contains(&one, "the value of Redis key incsearchd:cache:alb is not "
                                            "valid JSON"));
        ck_assert(rcache_log_contains(&one, "incsearchd:cache:fra is larger than "
                                            "max_result_bytes"));
        ck_assert(rcache_log_contains(&one, "incsearchd:cache:ger is not a string"));
        close(fd);
}
END_TEST

/* Redis stops and starts again on the same port: queries go on, and sharing resumes. */
START_TEST(rcache_redis_restart)
{
        json_object *reply;
        long long calls;
        int fd1, fd2;

        harness_redis_start(&redis);
        rcache_start(&one, NULL, "1000", "redis");
        rcache_start(&two, &one, "1000", "redis");
        rcache_expect_up(&one);
        rcache_expect_up(&two);
        fd1 = rcache_connect(&one);
        fd2 = rcache_connect(&two);

        harness_redis_stop(&redis);
        ck_assert(rcache_wait_metric(&one, "incsearchd_shared_cache_up", 0, 5000));
        reply = rcache_query(&one, fd1, "nor", 1);
        ck_assert(!rcache_cached(reply));
        json_object_put(reply);
        reply = rcache_query(&two, fd2, "nor", 1);
        ck_assert(!rcache_cached(reply));
        json_object_put(reply);
        ck_assert_int_eq(harness_api_stat(&one, "requests"), 2);
        ck_assert(rcache_log_contains(&one, "is unavailable"));

        harness_redis_start(&redis);
        rcache_expect_up(&one);
        rcache_expect_up(&two);
        ck_assert(rcache_log_contains(&one, "is back"));
        reply = rcache_query(&one, fd1, "jap", 2);
        ck_assert(!rcache_cached(reply));
        json_object_put(reply);
        ck_assert(rcache_wait_key("incsearchd:cache:jap"));
        calls = harness_api_stat(&one, "requests");
        reply = rcache_query(&two, fd2, "jap", 2);
        ck_assert(rcache_cached(reply));
        json_object_put(reply);
        ck_assert_int_eq(harness_api_stat(&one, "requests"), calls);
        close(fd1);
        close(fd2);
}
END_TEST

/*
 * A newer query sent while the GET of the older one waits for a paused Redis wins: only its
 * reply arrives. An equal query from another client waits for the same GET.
 */
START_TEST(rcache_newer_query_wins)
{
        const char *const first[] = {"SET", "incsearchd:cache:first", "[\"first\"]", NULL};
        const char *const second[] = {"SET", "incsearchd:cache:second", "[\"second\"]", NULL};
        const char *const pause[] = {"CLIENT", "PAUSE", "600", "ALL", NULL};
        json_object *reply, *results;
        char out[64];
        int fd, other;

        harness_redis_start(&redis);
        rcache_start(&one, NULL, "3000", "redis");
        rcache_expect_up(&one);
        rcache_redis(first, out, sizeof(out));
        rcache_redis(second, out, sizeof(out));
        fd = rcache_connect(&one);
        other = rcache_connect(&one);

        rcache_redis(pause, out, sizeof(out));
        ck_assert_str_eq(out, "+OK");
        rcache_send(fd, "first", 1);
        rcache_sleep_ms(100);
        rcache_send(fd, "second", 2);
        rcache_sleep_ms(100);
        rcache_send(other, "SECOND", 7);

        reply = rcache_next(fd, 5000);
        ck_assert_ptr_nonnull(reply);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 2);
        ck_assert(rcache_cached(reply));
        ck_assert(json_object_object_get_ex(reply, "results", &results));
        ck_assert_str_eq(json_object_to_json_string(results), "[ \"second\" ]");
        json_object_put(reply);
        reply = rcache_next(fd, 700);
        ck_assert_msg(reply == NULL, "a second reply arrived: %s",
                      reply != NULL ? json_object_to_json_string(reply) : "");

        reply = rcache_next(other, 5000);
        ck_assert_ptr_nonnull(reply);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 7);
        ck_assert_str_eq(harness_json_string(reply, "q"), "SECOND");
        ck_assert(rcache_cached(reply));
        json_object_put(reply);
        ck_assert_int_eq(harness_api_stat(&one, "requests"), 0);
        close(fd);
        close(other);
}
END_TEST

/* A Redis that accepts commands but does not reply within redis_timeout_ms is skipped. */
START_TEST(rcache_deadline_falls_back)
{
        const char *const pause[] = {"CLIENT", "PAUSE", "1500", "ALL", NULL};
        json_object *reply;
        char out[64];
        int fd;

        harness_redis_start(&redis);
        rcache_start(&one, NULL, "200", "redis");
        rcache_expect_up(&one);
        fd = rcache_connect(&one);

        rcache_redis(pause, out, sizeof(out));
        reply = rcache_query(&one, fd, "swe", 1);
        ck_assert(!rcache_cached(reply));
        json_object_put(reply);
        ck_assert_int_eq(harness_api_stat(&one, "requests"), 1);
        ck_assert_int_ge(rcache_lookups(&one, "error"), 1);
        ck_assert(rcache_log_contains(&one, "no reply within redis_timeout_ms"));
        rcache_expect_up(&one);
        close(fd);
}
END_TEST

/* Replaces the first FROM in H's config file with TO and reloads with SIGHUP. */
static void rcache_reload(const struct harness *h, const char *from, const char *to)
{
        char text[8192], *at;
        size_t len;
        FILE *f = fopen(h->conf_path, "r");

        ck_assert_ptr_nonnull(f);
        len = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[len] = '\0';
        at = strstr(text, from);
        ck_assert_ptr_nonnull(at);
        f = fopen(h->conf_path, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        fclose(f);
        ck_assert_int_eq(kill(h->daemon_pid, SIGHUP), 0);
}

/* [cache] shared and shared_ttl_ms apply on reload, without a restart. */
START_TEST(rcache_reload_turns_on)
{
        const char *const pttl[] = {"PTTL", "incsearchd:cache:ger", NULL};
        json_object *reply;
        char out[64];
        int fd;

        harness_redis_start(&redis);
        rcache_start(&one, NULL, "1000", "off");
        ck_assert_int_eq(rcache_metric(&one, "incsearchd_shared_cache_up"), 0);
        rcache_reload(&one, "shared = off\nshared_ttl_ms = 60000",
                      "shared = redis\nshared_ttl_ms = 5000");
        rcache_expect_up(&one);
        fd = rcache_connect(&one);
        reply = rcache_query(&one, fd, "ger", 1);
        json_object_put(reply);
        ck_assert(rcache_wait_key("incsearchd:cache:ger"));
        rcache_redis(pttl, out, sizeof(out));
        ck_assert_msg(out[0] == ':', "PTTL answered %s", out);
        ck_assert_int_gt(atol(out + 1), 0);
        ck_assert_int_le(atol(out + 1), 5000);

        rcache_reload(&one, "shared = redis", "shared = off");
        ck_assert(rcache_wait_metric(&one, "incsearchd_shared_cache_up", 0, 5000));
        for (int waited = 0; waited < 5000 && !rcache_log_contains(&one, "shared cache: off");
             waited += 50)
                rcache_sleep_ms(50);
        ck_assert(rcache_log_contains(&one, "shared cache: off"));
        close(fd);
}
END_TEST

enum { RCACHE_TRACE_CLIENTS = 20 };

/*
 * The typing trace of the sched suite's trace case, with the clients split over two
 * instances: client i types rcache_trace_words[i % 8] on instance i / 8 % 2, so that every
 * word is typed on both, one key every 40 ms, and the clients start 15 ms apart.
 */
static const char *const rcache_trace_words[] = {"switzerland", "germany", "norway", "japan",
                                                 "brazil",      "canada",  "sweden", "spain"};

struct rcache_typist {
        int fd;
        long long sent, received, replies;
};

static void rcache_typist_read(struct rcache_typist *t, int timeout_ms)
{
        json_object *obj;

        while ((obj = rcache_next(t->fd, timeout_ms)) != NULL) {
                long long seq = harness_json_int(obj, "seq");

                ck_assert_msg(seq > t->received, "result for seq %lld after seq %lld", seq,
                              t->received);
                t->received = seq;
                t->replies++;
                json_object_put(obj);
                timeout_ms = 0;
        }
}

/*
 * Plays the trace against two fresh instances with [cache] shared = SHARED. Returns the API
 * calls and stores in *DELIVERED the replies the clients received.
 */
static long long rcache_play_trace(const char *shared, long long *delivered)
{
        /* The two instances together stay under the demo API's limit. */
        struct harness_options rates = {
            .api_rate = "200", .api_burst = "50", .rate = "75", .burst = "20"};
        struct rcache_typist typists[RCACHE_TRACE_CLIENTS] = {0};
        long long start, calls;
        size_t done = 0;

        rcache_start_with(&one, NULL, "1000", shared, &rates);
        rcache_start_with(&two, &one, "1000", shared, &rates);
        if (strcmp(shared, "redis") == 0) {
                rcache_expect_up(&one);
                rcache_expect_up(&two);
        }
        for (int i = 0; i < RCACHE_TRACE_CLIENTS; i++)
                typists[i].fd = rcache_connect(i / 8 % 2 == 0 ? &one : &two);
        start = rcache_now_ms();
        while (done < RCACHE_TRACE_CLIENTS) {
                long long now = rcache_now_ms() - start;

                done = 0;
                for (int i = 0; i < RCACHE_TRACE_CLIENTS; i++) {
                        struct rcache_typist *t = &typists[i];
                        const char *word = rcache_trace_words[i % 8];
                        long long keys = (now - 15 * i) / 40 + 1;
                        char text[64];

                        if (t->sent >= (long long)strlen(word)) {
                                done++;
                        } else if (keys > t->sent) {
                                snprintf(text, sizeof(text), "%.*s", (int)(t->sent + 1), word);
                                rcache_send(t->fd, text, ++t->sent);
                        }
                        rcache_typist_read(t, 0);
                }
                rcache_sleep_ms(5);
        }
        *delivered = 0;
        for (int i = 0; i < RCACHE_TRACE_CLIENTS; i++) {
                struct rcache_typist *t = &typists[i];

                for (int waited = 0; t->received < t->sent && waited < 10000; waited += 100)
                        rcache_typist_read(t, 100);
                ck_assert_msg(t->received == t->sent, "client %d: last seq %lld unanswered", i,
                              t->sent);
                *delivered += t->replies;
                close(t->fd);
        }
        calls = harness_api_stat(&one, "requests");
        ck_assert_int_eq(harness_api_stat(&one, "violations"), 0);
        harness_stop_all(&two);
        harness_stop_all(&one);
        return calls;
}

/* The trace over two instances with and without the shared cache; `make bench-cache` prints it. */
START_TEST(rcache_trace_two_instances)
{
        long long local, shared, delivered_local, delivered_shared;
        size_t keys = 0;

        for (int i = 0; i < RCACHE_TRACE_CLIENTS; i++)
                keys += strlen(rcache_trace_words[i % 8]);
        harness_redis_start(&redis);
        local = rcache_play_trace("off", &delivered_local);
        shared = rcache_play_trace("redis", &delivered_shared);
        printf("typing trace over two instances, %d clients, %zu keystrokes:\n"
               "  local caches only: %lld API calls, %lld replies, %.2f calls per reply\n"
               "  with the shared cache: %lld API calls, %lld replies, %.2f calls per reply\n",
               RCACHE_TRACE_CLIENTS, keys, local, delivered_local,
               (double)local / (double)delivered_local, shared, delivered_shared,
               (double)shared / (double)delivered_shared);
        ck_assert_int_lt(shared, local);
}
END_TEST

Suite *rcache_suite(void)
{
        Suite *s = suite_create("rcache");
        TCase *shared = tcase_create("shared");
        TCase *trace = tcase_create("trace");

        tcase_add_checked_fixture(shared, NULL, rcache_teardown);
        tcase_set_timeout(shared, 60);
        tcase_add_test(shared, rcache_hit_across_instances);
        tcase_add_test(shared, rcache_bad_values_ignored);
        tcase_add_test(shared, rcache_redis_restart);
        tcase_add_test(shared, rcache_newer_query_wins);
        tcase_add_test(shared, rcache_deadline_falls_back);
        tcase_add_test(shared, rcache_reload_turns_on);
        suite_add_tcase(s, shared);

        tcase_add_checked_fixture(trace, NULL, rcache_teardown);
        tcase_set_timeout(trace, 90);
        tcase_add_test(trace, rcache_trace_two_instances);
        suite_add_tcase(s, trace);
        return s;
}
