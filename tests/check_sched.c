/*
 * End-to-end tests of the scheduling: the API's pause signals, retries, connection reuse, the
 * result cache, coalescing, and a chaos run that kills workers while clients type.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "harness.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

static struct harness sched;

static void sched_teardown(void)
{
        harness_stop_all(&sched);
}

static long long sched_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sched_sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

static int sched_connect(void)
{
        int fd = wsc_connect(sched.port);

        ck_assert_msg(fd >= 0, "WebSocket handshake with 127.0.0.1:%d failed", sched.port);
        return fd;
}

/* Reads the next text frame as JSON, or returns NULL after TIMEOUT_MS. */
static json_object *sched_recv(int fd, int timeout_ms)
{
        struct wsc_frame frame;
        json_object *obj;

        for (;;) {
                if (wsc_recv(fd, &frame, timeout_ms) != 1)
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

static json_object *sched_expect(int fd, int timeout_ms)
{
        json_object *obj = sched_recv(fd, timeout_ms);

        if (obj == NULL)
                harness_dump_log(&sched, "incsearchd.log");
        ck_assert_msg(obj != NULL, "no message within %d ms", timeout_ms);
        return obj;
}

static void sched_send(int fd, const char *text, long long seq)
{
        char message[512];

        snprintf(message, sizeof(message), "{\"q\":\"%s\",\"seq\":%lld}", text, seq);
        ck_assert_int_eq(wsc_send_text(fd, message), 0);
}

/* Sends a query and expects results for it, returning the reply. */
static json_object *sched_results(int fd, const char *text, long long seq, int timeout_ms)
{
        json_object *reply;

        sched_send(fd, text, seq);
        reply = sched_expect(fd, timeout_ms);
        ck_assert_msg(strcmp(harness_json_string(reply, "type"), "results") == 0, "'%s' got %s",
                      text, json_object_to_json_string(reply));
        ck_assert_int_eq(harness_json_int(reply, "seq"), seq);
        return reply;
}

static int sched_cached(json_object *reply)
{
        json_object *value;

        return json_object_object_get_ex(reply, "cached", &value) && json_object_get_boolean(value);
}

START_TEST(sched_sequential_calls_one_connection)
{
        struct harness_options options = {.workers = "1",
                                          .extra_sections = "[cache]\nmax_bytes = 0\n"};
        static const char *const words[] = {"a", "ab", "b", "c", "d", "fr", "ge", "it", "ja", "no"};
        long long before, after;
        int fd;

        harness_start(&sched, &options);
        fd = sched_connect();
        before = harness_api_stat(&sched, "connections");
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
                json_object_put(sched_results(fd, words[i], (long long)i + 1, 5000));
        close(fd);
        after = harness_api_stat(&sched, "connections");
        /* Each /stats request is a connection of its own, counted when accepted. */
        ck_assert_int_eq(after - before, 2);
        ck_assert_int_eq(harness_api_stat(&sched, "requests"), 10);
}
END_TEST

START_TEST(sched_cache_hit_normalized)
{
        json_object *reply;
        int a, b;

        harness_start(&sched, NULL);
        a = sched_connect();
        b = sched_connect();
        reply = sched_results(a, "Switz", 1, 5000);
        ck_assert(!sched_cached(reply));
        json_object_put(reply);

        /* Case and white space differ, and the query text in the reply is the client's own. */
        reply = sched_results(b, "  SWITZ ", 1, 5000);
        ck_assert(sched_cached(reply));
        ck_assert_str_eq(harness_json_string(reply, "q"), "  SWITZ ");
        json_object_put(reply);
        reply = sched_results(b, "\xc3\x89GYPT", 2, 5000);
        ck_assert(!sched_cached(reply));
        json_object_put(reply);
        reply = sched_results(a, "\xc3\xa9gypt", 2, 5000);
        ck_assert(sched_cached(reply));
        json_object_put(reply);
        close(a);
        close(b);
        ck_assert_int_eq(harness_api_stat(&sched, "requests"), 2);
}
END_TEST

START_TEST(sched_cache_ttl_expires)
{
        struct harness_options options = {.extra_sections = "[cache]\nttl_ms = 300\n"};
        json_object *reply;
        int fd;

        harness_start(&sched, &options);
        fd = sched_connect();
        json_object_put(sched_results(fd, "peru", 1, 5000));
        sched_sleep_ms(500);
        reply = sched_results(fd, "peru", 2, 5000);
        ck_assert(!sched_cached(reply));
        json_object_put(reply);
        close(fd);
        ck_assert_int_eq(harness_api_stat(&sched, "requests"), 2);
}
END_TEST

START_TEST(sched_equal_queries_coalesced)
{
        struct harness_options options = {.faults = 1};
        json_object *reply;
        int a, b, c;

        harness_start(&sched, &options);
        a = sched_connect();
        b = sched_connect();
        c = sched_connect();
        sched_send(a, "fault:slow:800:japan", 1);
        sched_sleep_ms(200);
        sched_send(b, "FAULT:SLOW:800:JAPAN", 7);
        sched_send(c, "fault:slow:800:japan", 3);
        reply = sched_expect(b, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 7);
        ck_assert_str_eq(harness_json_string(reply, "q"), "FAULT:SLOW:800:JAPAN");
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        json_object_put(reply);
        reply = sched_expect(a, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 1);
        json_object_put(reply);
        reply = sched_expect(c, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 3);
        json_object_put(reply);
        ck_assert_int_eq(harness_api_stat(&sched, "requests"), 1);
        close(a);
        close(b);
        close(c);
}
END_TEST

/* Returns 1 if incsearchd's log in the harness folder contains TEXT. */
static int sched_log_contains(const char *text)
{
        char path[160], line[1024];
        int found = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/incsearchd.log", sched.dir);
        f = fopen(path, "r");
        if (f == NULL)
                return 0;
        while (!found && fgets(line, sizeof(line), f) != NULL)
                found = strstr(line, text) != NULL;
        fclose(f);
        return found;
}

/* When the leader leaves, the waiter that came first takes over, not the one that came last. */
START_TEST(sched_coalesced_oldest_waiter_promoted)
{
        struct harness_options options = {.faults = 1, .rate = "1", .burst = "1"};
        json_object *reply;
        int a, b, c, d;

        harness_start(&sched, &options);
        a = sched_connect();
        b = sched_connect();
        c = sched_connect();
        d = sched_connect();
        /* Slots go lowest first: a 0, b 1, c 2, d 3. The first query spends the only token. */
        json_object_put(sched_results(a, "peru", 1, 5000));
        sched_send(b, "CHILE", 1);
        sched_send(c, "chile", 1);
        sched_send(d, "Chile", 1);
        close(b);
        reply = sched_expect(c, 5000);
        ck_assert_str_eq(harness_json_string(reply, "q"), "chile");
        json_object_put(reply);
        reply = sched_expect(d, 5000);
        ck_assert_str_eq(harness_json_string(reply, "q"), "Chile");
        json_object_put(reply);
        ck_assert(sched_log_contains("slot 2 seq 1 now carries the query its flight waits for"));
        ck_assert(!sched_log_contains("slot 3 seq 1 now carries the query its flight waits for"));
        close(a);
        close(c);
        close(d);
}
END_TEST

/* A waiter whose leader disconnects takes over the query and is still answered. */
START_TEST(sched_coalesced_leader_leaves)
{
        struct harness_options options = {.faults = 1, .rate = "1", .burst = "1"};
        json_object *reply;
        int a, b, c;

        harness_start(&sched, &options);
        a = sched_connect();
        b = sched_connect();
        c = sched_connect();
        /* The first query spends the only token, so the next two wait in the FIFO. */
        json_object_put(sched_results(a, "peru", 1, 5000));
        sched_send(b, "chile", 1);
        sched_send(c, "chile", 1);
        close(b);
        reply = sched_expect(c, 5000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_int_eq(harness_json_int(reply, "seq"), 1);
        json_object_put(reply);
        close(a);
        close(c);
}
END_TEST

/* A 429 with Retry-After pauses every worker, and the query is answered after the pause. */
START_TEST(sched_retry_after_pauses_all)
{
        struct harness_options options = {.faults = 1, .workers = "3"};
        long long start, took;
        json_object *reply;
        int a, b;

        harness_start(&sched, &options);
        a = sched_connect();
        b = sched_connect();
        start = sched_now_ms();
        sched_send(a, "fault:429:1:japan", 1);
        sched_sleep_ms(200);
        sched_send(b, "peru", 1);
        reply = sched_expect(b, 5000);
        took = sched_now_ms() - start;
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_msg(took >= 900, "peru answered %lld ms after the 429, inside the pause", took);
        json_object_put(reply);
        reply = sched_expect(a, 5000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_int_eq(harness_json_int(reply, "seq"), 1);
        json_object_put(reply);
        ck_assert_int_eq(harness_api_stat(&sched, "requests"), 3);
        close(a);
        close(b);
}
END_TEST

/* Retry-After forms: 0 retries at once, a date, none or garbage back off; 503 acts like 429. */
START_TEST(sched_retry_after_forms)
{
        struct harness_options options = {.faults = 1,
                                          .extra_sections = "[cache]\nmax_bytes = 0\n"};
        const char *forms[] = {"429:0", "429:none", "429:soon", "503:1", NULL};
        char date[64];
        int fd;

        harness_start(&sched, &options);
        fd = sched_connect();
        for (int i = 0; i < 5; i++) {
                time_t soon = time(NULL) + 2;
                char text[200];
                json_object *reply;
                struct tm tm;

                /* The last form is an HTTP-date 2 s ahead. */
                gmtime_r(&soon, &tm);
                strftime(date, sizeof(date), "429:%a, %d %b %Y %H:%M:%S GMT", &tm);
                snprintf(text, sizeof(text), "fault:%s:peru", forms[i] != NULL ? forms[i] : date);
                reply = sched_results(fd, text, i + 1, 8000);
                json_object_put(reply);
        }
        close(fd);
        ck_assert_int_eq(harness_api_stat(&sched, "requests"), 10);
}
END_TEST

START_TEST(sched_max_wait_rejected)
{
        struct harness_options options = {.faults = 1, .extra_api = "max_wait_ms = 1000"};
        json_object *reply;
        int fd;

        harness_start(&sched, &options);
        fd = sched_connect();
        sched_send(fd, "fault:429:30", 1);
        reply = sched_expect(fd, 5000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "error");
        ck_assert_str_eq(harness_json_string(reply, "error"), "upstream_rejected");
        /* The message names the pause, not an API that did not answer. */
        ck_assert_ptr_nonnull(strstr(harness_json_string(reply, "message"), "asked for a pause"));
        json_object_put(reply);
        /* The API asked for 30 s, so the next query cannot be answered in time either. */
        sched_send(fd, "peru", 2);
        reply = sched_expect(fd, 5000);
        ck_assert_str_eq(harness_json_string(reply, "error"), "upstream_rejected");
        json_object_put(reply);
        close(fd);
        ck_assert_int_eq(harness_api_stat(&sched, "requests"), 1);
}
END_TEST

START_TEST(sched_ratelimit_reset_pauses)
{
        struct harness_options options = {.faults = 1};
        long long start, took;
        json_object *reply;
        int fd;

        harness_start(&sched, &options);
        fd = sched_connect();
        start = sched_now_ms();
        json_object_put(sched_results(fd, "fault:reset:1:japan", 1, 5000));
        reply = sched_results(fd, "peru", 2, 5000);
        took = sched_now_ms() - start;
        ck_assert_msg(took >= 900, "peru called %lld ms after zero remaining calls", took);
        json_object_put(reply);
        close(fd);
}
END_TEST

START_TEST(sched_5xx_retried)
{
        struct harness_options options = {.faults = 1, .extra_api = "max_wait_ms = 1500"};
        json_object *reply;
        int fd;

        harness_start(&sched, &options);
        fd = sched_connect();
        sched_send(fd, "fault:500", 1);
        reply = sched_expect(fd, 5000);
        ck_assert_str_eq(harness_json_string(reply, "error"), "upstream_error");
        json_object_put(reply);
        close(fd);
        ck_assert_int_ge(harness_api_stat(&sched, "requests"), 3);
}
END_TEST

enum { SCHED_CHAOS_CLIENTS = 8, SCHED_CHAOS_WORKERS = 4 };

struct sched_typist {
        int fd;
        long long sent, received;
        long long replies; /* results and errors received */
        json_object *last;
};

/* Reads what a typist's connection has, checking that no result is older than one before it. */
static void sched_typist_read(struct sched_typist *t, int timeout_ms)
{
        json_object *obj;

        while ((obj = sched_recv(t->fd, timeout_ms)) != NULL) {
                long long seq = harness_json_int(obj, "seq");

                ck_assert_msg(seq > t->received, "result for seq %lld after seq %lld", seq,
                              t->received);
                t->received = seq;
                t->replies++;
                json_object_put(t->last);
                t->last = obj;
                timeout_ms = 0;
        }
}

#define SCHED_FAKETIME_LIB "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

static void sched_write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");

        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        fclose(f);
}

/*
 * Steps incsearchd's wall clock back an hour and then forward an hour with libfaketime while
 * clients type against a tight limit. CLOCK_MONOTONIC stays real, as it does when NTP steps
 * the clock, so the bucket must not notice: no call beyond the demo API's limit, every last
 * query answered, and no more calls than burst + rate * T.
 */
START_TEST(sched_wall_clock_steps_ignored)
{
        char offset_path[128], preload[160], offset_env[192];
        /* In the sanitizer build ASan must come first among the preloads; libfaketime is
         * loaded before it, so ASAN_OPTIONS turns off ASan's check of that order. */
        const char *env[] = {preload,
                             offset_env,
                             "FAKETIME_NO_CACHE=1",
                             "FAKETIME_DONT_FAKE_MONOTONIC=1",
                             "ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0",
                             NULL};
        struct harness_options options = {.api_rate = "3",
                                          .api_burst = "2",
                                          .rate = "2.5",
                                          .burst = "2",
                                          .daemon_env = env,
                                          .extra_sections = "[cache]\nmax_bytes = 0\n"};
        static const char *const words[] = {"switzerland", "germany", "norway"};
        struct sched_typist typists[3] = {0};
        long long start, elapsed_ms, requests;

        ck_assert_msg(access(SCHED_FAKETIME_LIB, R_OK) == 0,
                      "%s is missing; install the Debian package faketime", SCHED_FAKETIME_LIB);
        snprintf(offset_path, sizeof(offset_path), "/tmp/incsearchd-faketime-%d", (int)getpid());
        snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", SCHED_FAKETIME_LIB);
        snprintf(offset_env, sizeof(offset_env), "FAKETIME_TIMESTAMP_FILE=%s", offset_path);
        sched_write_file(offset_path, "+0\n");

        harness_start(&sched, &options);
        for (int i = 0; i < 3; i++)
                typists[i].fd = sched_connect();
        start = sched_now_ms();
        for (long long step = 0; sched_now_ms() - start < 4500; step++) {
                elapsed_ms = sched_now_ms() - start;
                if (step == 50)
                        sched_write_file(offset_path, "-3600\n");
                if (step == 100)
                        sched_write_file(offset_path, "+3600\n");
                for (int i = 0; i < 3; i++) {
                        char text[64];

                        snprintf(text, sizeof(text), "%.*s",
                                 (int)(1 + (size_t)step % strlen(words[i])), words[i]);
                        sched_send(typists[i].fd, text, ++typists[i].sent);
                        sched_typist_read(&typists[i], 0);
                }
                sched_sleep_ms(30);
        }
        for (int i = 0; i < 3; i++) {
                struct sched_typist *t = &typists[i];

                for (int waited = 0; t->received < t->sent && waited < 15000; waited += 100)
                        sched_typist_read(t, 100);
                ck_assert_msg(t->received == t->sent, "'%s': last seq %lld unanswered (got %lld)",
                              words[i], t->sent, t->received);
                json_object_put(t->last);
                close(t->fd);
        }
        elapsed_ms = sched_now_ms() - start;
        requests = harness_api_stat(&sched, "requests");
        unlink(offset_path);
        ck_assert_int_eq(harness_api_stat(&sched, "violations"), 0);
        ck_assert_msg(requests * 1000 <= 2 * 1000 + 2500 * elapsed_ms / 1000 + 1000,
                      "%lld calls in %lld ms", requests, elapsed_ms);
}
END_TEST

/* Returns 1 while PID exists and is not a zombie. */
static int sched_alive(pid_t pid)
{
        char path[64], state = 'X';
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        f = fopen(path, "r");
        if (f == NULL)
                return 0;
        if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
                state = 'X';
        fclose(f);
        return state != 'Z' && state != 'X';
}

/*
 * A daemon killed with SIGKILL takes its workers with it, and the next incsearchd with the
 * same shm_name replaces the segment the dead one left behind.
 */
START_TEST(sched_daemon_death_stops_workers)
{
        char daemon_log[160], shm_path[128];
        char *daemon_argv[] = {"incsearchd", "-c", sched.conf_path, NULL};
        pid_t workers[16];
        json_object *reply;
        unsigned n;
        int status, fd;

        harness_start(&sched, NULL);
        for (int waited = 0; harness_children(sched.daemon_pid, workers, 16) < 2 && waited < 3000;
             waited += 50)
                sched_sleep_ms(50);
        n = harness_children(sched.daemon_pid, workers, 16);
        ck_assert_uint_eq(n, 2);
        ck_assert_int_eq(kill(sched.daemon_pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(sched.daemon_pid, &status, 0), sched.daemon_pid);
        sched.daemon_pid = 0;
        for (unsigned i = 0; i < n; i++) {
                for (int waited = 0; sched_alive(workers[i]) && waited < 5000; waited += 50)
                        sched_sleep_ms(50);
                ck_assert_msg(!sched_alive(workers[i]), "worker %d outlived the daemon",
                              (int)workers[i]);
        }

        snprintf(shm_path, sizeof(shm_path), "/dev/shm%s", sched.shm_name);
        ck_assert_msg(access(shm_path, F_OK) == 0, "%s is gone; nothing stale to replace",
                      shm_path);
        snprintf(daemon_log, sizeof(daemon_log), "%s/incsearchd.log", sched.dir);
        sched.daemon_pid = harness_spawn("incsearchd", daemon_argv, daemon_log);
        ck_assert_int_eq(harness_wait_port(sched.port, 5000), 0);
        fd = sched_connect();
        reply = sched_results(fd, "peru", 1, 5000);
        json_object_put(reply);
        close(fd);
}
END_TEST

/*
 * Clients type nonstop while a worker is killed with SIGKILL every 200 ms for 10 s. Every
 * client's last query must be answered with results, no result may follow a newer one, the
 * demo API must see no call beyond its limit, and the pool must be back to full size.
 */
START_TEST(sched_chaos_kill_workers)
{
        struct harness_options options = {.api_rate = "40",
                                          .api_burst = "10",
                                          .rate = "35",
                                          .burst = "8",
                                          .workers = "4",
                                          .extra_sections = "[cache]\nmax_bytes = 0\n"};
        static const char *const words[] = {"switzerland", "germany", "norway", "japan",
                                            "brazil",      "canada",  "france", "peru"};
        struct sched_typist typists[SCHED_CHAOS_CLIENTS] = {0};
        long long start, next_kill;
        pid_t workers[16];
        unsigned kills = 0, n;

        harness_start(&sched, &options);
        for (int i = 0; i < SCHED_CHAOS_CLIENTS; i++)
                typists[i].fd = sched_connect();
        srandom(7);
        start = sched_now_ms();
        next_kill = start + 200;
        for (long long step = 0; sched_now_ms() - start < 10000; step++) {
                for (int i = 0; i < SCHED_CHAOS_CLIENTS; i++) {
                        struct sched_typist *t = &typists[i];
                        size_t len = strlen(words[i]);
                        char text[64];

                        snprintf(text, sizeof(text), "%.*s", (int)(1 + step % len), words[i]);
                        sched_send(t->fd, text, ++t->sent);
                        sched_typist_read(t, 0);
                }
                if (sched_now_ms() >= next_kill) {
                        n = harness_children(sched.daemon_pid, workers, 16);
                        if (n > 0 && kill(workers[random() % n], SIGKILL) == 0)
                                kills++;
                        next_kill += 200;
                }
                sched_sleep_ms(30);
        }
        ck_assert_uint_ge(kills, 20);

        /* The last keystroke is the whole word, whose results must contain it. */
        for (int i = 0; i < SCHED_CHAOS_CLIENTS; i++) {
                struct sched_typist *t = &typists[i];

                sched_send(t->fd, words[i], ++t->sent);
        }
        for (int i = 0; i < SCHED_CHAOS_CLIENTS; i++) {
                struct sched_typist *t = &typists[i];

                for (int waited = 0; t->received < t->sent && waited < 20000; waited += 100)
                        sched_typist_read(t, 100);
                if (t->received != t->sent)
                        harness_dump_log(&sched, "incsearchd.log");
                ck_assert_msg(t->received == t->sent, "'%s': last seq %lld unanswered (got %lld)",
                              words[i], t->sent, t->received);
                ck_assert_msg(strcmp(harness_json_string(t->last, "type"), "results") == 0,
                              "'%s': last reply %s", words[i], json_object_to_json_string(t->last));
                json_object_put(t->last);
                close(t->fd);
        }
        ck_assert_int_eq(harness_api_stat(&sched, "violations"), 0);
        for (int waited = 0; waited < 15000; waited += 100) {
                if (harness_children(sched.daemon_pid, workers, 16) == SCHED_CHAOS_WORKERS)
                        break;
                sched_sleep_ms(100);
        }
        ck_assert_uint_eq(harness_children(sched.daemon_pid, workers, 16), SCHED_CHAOS_WORKERS);
}
END_TEST

enum { SCHED_TRACE_CLIENTS = 20 };

/*
 * A recorded typing trace: client i types sched_trace_words[i % 8] one key every 40 ms, and
 * the clients start 15 ms apart. Popular words are thus typed by several clients at once and
 * again a moment later, as on a real search page.
 */
static const char *const sched_trace_words[] = {"switzerland", "germany", "norway", "japan",
                                                "brazil",      "canada",  "sweden", "spain"};

/*
 * Plays the trace against a fresh incsearchd with CACHE_SECTION. Returns the API calls and
 * stores in *DELIVERED the replies the clients received.
 */
static long long sched_play_trace(const char *cache_section, long long *delivered)
{
        struct harness_options options = {.api_rate = "200",
                                          .api_burst = "50",
                                          .rate = "150",
                                          .burst = "40",
                                          .extra_sections = cache_section};
        struct sched_typist typists[SCHED_TRACE_CLIENTS] = {0};
        long long start, calls;
        size_t done = 0;

        harness_start(&sched, &options);
        for (int i = 0; i < SCHED_TRACE_CLIENTS; i++)
                typists[i].fd = sched_connect();
        start = sched_now_ms();
        while (done < SCHED_TRACE_CLIENTS) {
                long long now = sched_now_ms() - start;

                done = 0;
                for (int i = 0; i < SCHED_TRACE_CLIENTS; i++) {
                        struct sched_typist *t = &typists[i];
                        const char *word = sched_trace_words[i % 8];
                        long long keys = (now - 15 * i) / 40 + 1;
                        char text[64];

                        if (t->sent >= (long long)strlen(word)) {
                                done++;
                        } else if (keys > t->sent) {
                                snprintf(text, sizeof(text), "%.*s", (int)(t->sent + 1), word);
                                sched_send(t->fd, text, ++t->sent);
                        }
                        sched_typist_read(t, 0);
                }
                sched_sleep_ms(5);
        }
        *delivered = 0;
        for (int i = 0; i < SCHED_TRACE_CLIENTS; i++) {
                struct sched_typist *t = &typists[i];

                for (int waited = 0; t->received < t->sent && waited < 10000; waited += 100)
                        sched_typist_read(t, 100);
                ck_assert_msg(t->received == t->sent, "client %d: last seq %lld unanswered", i,
                              t->sent);
                *delivered += t->replies;
                json_object_put(t->last);
                close(t->fd);
        }
        calls = harness_api_stat(&sched, "requests");
        ck_assert_int_eq(harness_api_stat(&sched, "violations"), 0);
        harness_stop_all(&sched);
        return calls;
}

/* The trace with and without the cache; `make bench` prints the numbers. */
START_TEST(sched_trace_cache_saves_calls)
{
        long long without, with, delivered_without, delivered_with;
        size_t keys = 0;

        for (int i = 0; i < SCHED_TRACE_CLIENTS; i++)
                keys += strlen(sched_trace_words[i % 8]);
        without = sched_play_trace("[cache]\nmax_bytes = 0\n", &delivered_without);
        with = sched_play_trace("", &delivered_with);
        printf("typing trace, %d clients, %zu keystrokes:\n"
               "  without the cache: %lld API calls, %lld replies, %.2f calls per reply\n"
               "  with the cache and coalescing: %lld API calls, %lld replies, %.2f calls per "
               "reply\n",
               SCHED_TRACE_CLIENTS, keys, without, delivered_without,
               (double)without / (double)delivered_without, with, delivered_with,
               (double)with / (double)delivered_with);
        ck_assert_int_lt(with, without);
}
END_TEST

Suite *sched_suite(void)
{
        Suite *s = suite_create("sched");
        TCase *tc = tcase_create("scheduling");
        TCase *trace = tcase_create("trace");
        TCase *chaos = tcase_create("chaos");

        tcase_add_checked_fixture(tc, NULL, sched_teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, sched_sequential_calls_one_connection);
        tcase_add_test(tc, sched_cache_hit_normalized);
        tcase_add_test(tc, sched_cache_ttl_expires);
        tcase_add_test(tc, sched_equal_queries_coalesced);
        tcase_add_test(tc, sched_coalesced_leader_leaves);
        tcase_add_test(tc, sched_coalesced_oldest_waiter_promoted);
        tcase_add_test(tc, sched_retry_after_pauses_all);
        tcase_add_test(tc, sched_retry_after_forms);
        tcase_add_test(tc, sched_max_wait_rejected);
        tcase_add_test(tc, sched_ratelimit_reset_pauses);
        tcase_add_test(tc, sched_5xx_retried);
        tcase_add_test(tc, sched_wall_clock_steps_ignored);
        tcase_add_test(tc, sched_daemon_death_stops_workers);
        suite_add_tcase(s, tc);

        tcase_add_checked_fixture(trace, NULL, sched_teardown);
        tcase_set_timeout(trace, 90);
        tcase_add_test(trace, sched_trace_cache_saves_calls);
        suite_add_tcase(s, trace);

        tcase_add_checked_fixture(chaos, NULL, sched_teardown);
        tcase_set_timeout(chaos, 90);
        tcase_add_test(chaos, sched_chaos_kill_workers);
        suite_add_tcase(s, chaos);
        return s;
}
