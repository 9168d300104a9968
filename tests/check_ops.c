/*
 * Operations: the latency histogram, bucket changes on reload, the config dump and the secret
 * check, and black-box tests of incsearchctl, GET /metrics, reload and the systemd
 * notifications against the real daemon on loopback.
 */
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "bucket.h"
#include "conf.h"
#include "harness.h"
#include "histogram.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

static struct harness ops;

static void ops_teardown(void)
{
        harness_stop_all(&ops);
}

static void ops_sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

/*
 * Runs a program from the build folder with ARGS (a shell-quoted string) and returns its exit
 * status, with stdout and stderr together in OUT.
 */
static int ops_run(const char *program, const char *args, char *out, size_t len)
{
        char command[1024];

        snprintf(command, sizeof(command), "%s/%s %s", harness_build_dir(), program, args);
        return harness_run_shell(command, out, len);
}

/* Runs incsearchctl against the test daemon. */
static int ops_ctl(const char *args, char *out, size_t len)
{
        char full[512];

        snprintf(full, sizeof(full), "-s %s %s", ops.control_path, args);
        return ops_run("incsearchctl", full, out, len);
}

/* Returns incsearchctl --json status, parsed. */
static json_object *ops_status(void)
{
        static char out[65536];
        json_object *status;

        ck_assert_int_eq(ops_ctl("--json status", out, sizeof(out)), 0);
        status = json_tokener_parse(out);
        ck_assert_msg(status != NULL, "not JSON: %s", out);
        return status;
}

/* Reads a number at a dotted PATH such as "api.calls"; -1 if missing. */
static double ops_number(json_object *obj, const char *path)
{
        char key[64];
        const char *dot;

        while ((dot = strchr(path, '.')) != NULL) {
                snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
                if (!json_object_object_get_ex(obj, key, &obj))
                        return -1;
                path = dot + 1;
        }
        if (!json_object_object_get_ex(obj, path, &obj))
                return -1;
        return json_object_get_double(obj);
}

/* Sends query TEXT with SEQ and waits for the text frame that replies to it. */
static json_object *ops_query(int fd, const char *text, long long seq)
{
        char message[256];
        struct wsc_frame frame;
        json_object *reply;

        snprintf(message, sizeof(message), "{\"q\":\"%s\",\"seq\":%lld}", text, seq);
        ck_assert_int_eq(wsc_send_text(fd, message), 0);
        for (;;) {
                int r = wsc_recv(fd, &frame, 10000);

                if (r != 1)
                        harness_dump_log(&ops, "incsearchd.log");
                ck_assert_msg(r == 1, "no reply to %s", text);
                if (frame.opcode == WS_OP_TEXT)
                        break;
                wsc_frame_free(&frame);
        }
        reply = json_tokener_parse((const char *)frame.payload);
        wsc_frame_free(&frame);
        ck_assert_ptr_nonnull(reply);
        return reply;
}

static int ops_log_contains(const char *needle)
{
        char path[256], line[2048];
        int found = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/incsearchd.log", ops.dir);
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        while (!found && fgets(line, sizeof(line), f) != NULL)
                found = strstr(line, needle) != NULL;
        fclose(f);
        return found;
}

/* Waits up to 5 s for NEEDLE in the daemon's log. */
static int ops_wait_log(const char *needle)
{
        for (int waited = 0; waited < 5000; waited += 50) {
                if (ops_log_contains(needle))
                        return 1;
                ops_sleep_ms(50);
        }
        return 0;
}

/* Replaces the line starting with PREFIX in the test daemon's config by LINE. */
static void ops_edit_conf(const char *prefix, const char *line)
{
        char command[512];

        snprintf(command, sizeof(command), "sed -i 's|^%s.*|%s|' %s", prefix, line, ops.conf_path);
        ck_assert_int_eq(system(command), 0);
}

START_TEST(histogram_percentiles)
{
        static struct histogram h;

        ck_assert_uint_eq(histogram_percentile_us(&h, 50), 0);
        for (int i = 0; i < 90; i++)
                histogram_record(&h, 150); /* bucket up to 200 us */
        for (int i = 0; i < 9; i++)
                histogram_record(&h, 3000); /* up to 5000 us */
        histogram_record(&h, 70000000);     /* past the last bound */
        ck_assert_uint_eq(atomic_load(&h.count), 100);
        ck_assert_uint_eq(histogram_percentile_us(&h, 50), 200);
        ck_assert_uint_eq(histogram_percentile_us(&h, 90), 200);
        ck_assert_uint_eq(histogram_percentile_us(&h, 99), 5000);
        ck_assert_uint_eq(histogram_percentile_us(&h, 100), 70000000);
        ck_assert_uint_eq(atomic_load(&h.max_us), 70000000);
        ck_assert_uint_eq(atomic_load(&h.buckets[HISTOGRAM_BUCKETS - 1]), 1);
        ck_assert_uint_eq(histogram_bound_us(HISTOGRAM_BUCKETS - 1), UINT64_MAX);
}
END_TEST

START_TEST(histogram_percentile_capped_at_max)
{
        static struct histogram h;

        histogram_record(&h, 130);
        ck_assert_uint_eq(histogram_percentile_us(&h, 50), 130);
        histogram_record(&h, 0);
        ck_assert_uint_eq(atomic_load(&h.buckets[0]), 1);
}
END_TEST

START_TEST(bucket_reconfigure_clips_down)
{
        struct bucket b;

        bucket_init(&b, 10000, 8, 0);
        bucket_reconfigure(&b, 2000, 3, 1000);
        ck_assert_int_eq(b.tokens, 3 * BUCKET_UNIT);
        ck_assert_int_eq(b.capacity, 3 * BUCKET_UNIT);
        ck_assert_uint_eq(b.rate_milli, 2000);
}
END_TEST

START_TEST(bucket_reconfigure_never_adds)
{
        struct bucket b;

        bucket_init(&b, 10000, 2, 0);
        b.tokens = BUCKET_UNIT / 2;
        /* A larger burst at the same instant keeps the half token. */
        bucket_reconfigure(&b, 10000, 50, 0);
        ck_assert_int_eq(b.tokens, BUCKET_UNIT / 2);
        ck_assert_int_eq(b.capacity, 50 * BUCKET_UNIT);
        /* Tokens then accrue at the new rate: 100 calls/s for 10 ms is one call. */
        bucket_reconfigure(&b, 100000, 50, 0);
        bucket_refill(&b, 10000000);
        ck_assert_int_eq(b.tokens, BUCKET_UNIT / 2 + BUCKET_UNIT);
}
END_TEST

/* Checks incsearchd -t -v on tests/conf/NAME.conf against NAME.expected. */
static void ops_check_dump(const char *name)
{
        char copy[64], args[256], out[8192], expected_path[256], expected[8192];
        FILE *f;
        size_t n;
        int fd;

        /* A copy with mode 0600, since the file may hold a header and git keeps 0644. */
        snprintf(copy, sizeof(copy), "/tmp/incsearchd-dump-XXXXXX");
        fd = mkstemp(copy);
        ck_assert_int_ge(fd, 0);
        close(fd);
        snprintf(args, sizeof(args), "cp %s/conf/%s.conf %s", getenv("INCSEARCHD_TESTS"), name,
                 copy);
        ck_assert_int_eq(system(args), 0);
        snprintf(args, sizeof(args), "-t -v -c %s", copy);
        ck_assert_int_eq(ops_run("incsearchd", args, out, sizeof(out)), 0);
        unlink(copy);

        snprintf(expected_path, sizeof(expected_path), "%s/conf/%s.expected",
                 getenv("INCSEARCHD_TESTS"), name);
        f = fopen(expected_path, "r");
        ck_assert_ptr_nonnull(f);
        n = fread(expected, 1, sizeof(expected) - 1, f);
        expected[n] = '\0';
        fclose(f);
        ck_assert_str_eq(out, expected);
}

START_TEST(conf_dump_minimal)
{
        ops_check_dump("minimal");
}
END_TEST

START_TEST(conf_dump_every_key)
{
        ops_check_dump("full");
}
END_TEST

/* Writes TEXT to a new file in /tmp, mode 0600, and returns its path in PATH. */
static void ops_write_temp(char *path, size_t len, const char *text)
{
        FILE *f;
        int fd;

        snprintf(path, len, "/tmp/incsearchd-ops-XXXXXX");
        fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        f = fdopen(fd, "w");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        fclose(f);
}

START_TEST(conf_secret_readable_rejected)
{
        char path[64], errors[1024];
        struct conf *conf = malloc(sizeof(*conf));

        ops_write_temp(path, sizeof(path),
                       "[api]\nurl = http://127.0.0.1:1/s?q={q}\nrate = 1\nburst = 1\n"
                       "header = X-Api-Key: TOPSECRET\n");
        ck_assert_int_eq(conf_load(conf, path, errors, sizeof(errors)), 0);

        chmod(path, 0640);
        ck_assert_int_eq(conf_load(conf, path, errors, sizeof(errors)), 1);
        ck_assert_ptr_nonnull(strstr(errors, ":5: the file contains an API header"));
        ck_assert_ptr_nonnull(strstr(errors, "readable by its group (mode 0640)"));
        ck_assert_ptr_nonnull(strstr(errors, "run chmod 600"));
        ck_assert_ptr_null(strstr(errors, "TOPSECRET"));

        chmod(path, 0604);
        ck_assert_int_eq(conf_load(conf, path, errors, sizeof(errors)), 1);
        ck_assert_ptr_nonnull(strstr(errors, "readable by others"));
        unlink(path);
        free(conf);
}
END_TEST

START_TEST(conf_metrics_allow_prefixes)
{
        struct conf *conf = malloc(sizeof(*conf));
        uint8_t v4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
        uint8_t v6[16] = {0xfd, 0x12};
        char path[64], errors[1024];

        ops_write_temp(path, sizeof(path),
                       "[server]\nmetrics_allow = 10.0.0.0/8 fd00::/8\n"
                       "[api]\nurl = http://127.0.0.1:1/s?q={q}\nrate = 1\nburst = 1\n");
        ck_assert_int_eq(conf_load(conf, path, errors, sizeof(errors)), 0);
        unlink(path);
        ck_assert_uint_eq(conf->metrics_prefix_count, 2);
        ck_assert(conf_prefix_match(conf->metrics_prefixes, 2, v4));
        ck_assert(conf_prefix_match(conf->metrics_prefixes, 2, v6));
        v4[12] = 11;
        ck_assert(!conf_prefix_match(conf->metrics_prefixes, 2, v4));
        ck_assert(!conf_prefix_match(conf->metrics_prefixes, 0, v6));

        ops_write_temp(path, sizeof(path),
                       "[server]\nmetrics_allow = 10.0.0.0/33\n"
                       "[api]\nurl = http://127.0.0.1:1/s?q={q}\nrate = 1\nburst = 1\n");
        ck_assert_int_eq(conf_load(conf, path, errors, sizeof(errors)), 1);
        ck_assert_ptr_nonnull(strstr(errors, ":2: invalid value '10.0.0.0/33' for metrics_allow"));
        unlink(path);
        free(conf);
}
END_TEST

START_TEST(ctl_status_figures_move)
{
        char out[8192];
        json_object *before, *after, *reply;
        int fd;

        struct stat st;

        harness_start(&ops, NULL);
        /* The harness waits for the listener; the control socket is made just after it. */
        for (int waited = 0; stat(ops.control_path, &st) < 0 && waited < 3000; waited += 20)
                usleep(20000);
        ck_assert_int_eq(stat(ops.control_path, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_uint_eq(st.st_mode & 0777, 0660);
        before = ops_status();
        ck_assert_int_eq((int)ops_number(before, "workers.alive"), 2);
        ck_assert_int_eq((int)ops_number(before, "clients.now"), 0);
        ck_assert_int_eq((int)ops_number(before, "queries.received"), 0);

        fd = wsc_connect(ops.port);
        ck_assert_int_ge(fd, 0);
        reply = ops_query(fd, "fra", 1);
        json_object_put(reply);
        reply = ops_query(fd, "fran", 2);
        json_object_put(reply);

        after = ops_status();
        ck_assert_int_eq((int)ops_number(after, "clients.now"), 1);
        ck_assert_int_eq((int)ops_number(after, "clients.peak"), 1);
        ck_assert_int_eq((int)ops_number(after, "clients.total"), 1);
        ck_assert_int_eq((int)ops_number(after, "queries.received"), 2);
        ck_assert_int_eq((int)ops_number(after, "api.calls"), 2);
        ck_assert_int_eq((int)ops_number(after, "results.delivered"), 2);
        ck_assert_int_eq((int)ops_number(after, "latency.api.count"), 2);
        ck_assert_int_eq((int)ops_number(after, "latency.queue_wait.count"), 2);
        ck_assert_int_eq((int)ops_number(after, "latency.keystroke_to_result.count"), 2);
        ck_assert(ops_number(after, "latency.keystroke_to_result.max_ms") > 0);
        ck_assert(ops_number(after, "bucket.rate") == 45);
        ck_assert_int_eq((int)ops_number(after, "bucket.burst"), 8);

        /* The text output reads from the same reply. */
        ck_assert_int_eq(ops_ctl("status", out, sizeof(out)), 0);
        ck_assert_ptr_nonnull(strstr(out, "clients   1 now, 1 peak, 1 total"));
        ck_assert_ptr_nonnull(strstr(out, "queries   2 received"));
        ck_assert_ptr_nonnull(strstr(out, "keystroke to result"));

        ck_assert_int_eq(ops_ctl("clients", out, sizeof(out)), 0);
        ck_assert_ptr_nonnull(strstr(out, "127.0.0.1:"));
        ck_assert_ptr_nonnull(strstr(out, " idle"));
        ck_assert_int_eq(ops_ctl("workers", out, sizeof(out)), 0);
        ck_assert_ptr_nonnull(strstr(out, "worker pid"));
        close(fd);
        json_object_put(before);
        json_object_put(after);
}
END_TEST

/*
 * incsearchctl workers counts every restart of a worker, also of one that had run long enough
 * not to count as crash-looping.
 */
START_TEST(ctl_workers_count_restarts)
{
        static char out[65536];
        json_object *reply, *workers;
        pid_t pids[8];
        uint64_t restarts = 0;

        harness_start(&ops, NULL);
        for (int waited = 0; harness_children(ops.daemon_pid, pids, 8) < 2 && waited < 3000;
             waited += 50)
                usleep(50000);
        ck_assert_uint_eq(harness_children(ops.daemon_pid, pids, 8), 2);
        /* Past the supervisor's crash-loop window of one second. */
        usleep(1500000);
        ck_assert_int_eq(kill(pids[0], SIGKILL), 0);
        for (int waited = 0; waited < 5000; waited += 50) {
                pid_t now[8];
                unsigned n = harness_children(ops.daemon_pid, now, 8);

                if (n == 2 && now[0] != pids[0] && now[1] != pids[0])
                        break;
                usleep(50000);
        }
        usleep(200000);
        ck_assert_int_eq(ops_ctl("--json workers", out, sizeof(out)), 0);
        reply = json_tokener_parse(out);
        ck_assert_msg(reply != NULL, "not JSON: %s", out);
        ck_assert(json_object_object_get_ex(reply, "workers", &workers));
        for (size_t i = 0; i < json_object_array_length(workers); i++)
                restarts +=
                    (uint64_t)harness_json_int(json_object_array_get_idx(workers, i), "restarts");
        ck_assert_uint_eq(restarts, 1);
        json_object_put(reply);
        ck_assert_int_eq(ops_ctl("workers", out, sizeof(out)), 0);
        ck_assert_msg(strstr(out, " 1\n") != NULL, "no worker with 1 restart in:\n%s", out);
}
END_TEST

START_TEST(ctl_errors_and_usage)
{
        char out[2048];

        ck_assert_int_eq(
            ops_run("incsearchctl", "-s /nonexistent/ctl.sock status", out, sizeof(out)), 1);
        ck_assert_ptr_nonnull(strstr(out, "incsearchd is not running"));
        ck_assert_int_eq(ops_run("incsearchctl", "frobnicate", out, sizeof(out)), 2);
        ck_assert_ptr_nonnull(strstr(out, "valid ones are status, clients"));
        ck_assert_int_eq(ops_run("incsearchctl", "log", out, sizeof(out)), 2);

        harness_start(&ops, NULL);
        ck_assert_int_eq(ops_ctl("log loud", out, sizeof(out)), 1);
        ck_assert_ptr_nonnull(strstr(out, "error, warn, info or debug"));
}
END_TEST

START_TEST(ctl_log_level_reaches_workers)
{
        char out[2048];
        json_object *reply;
        int fd;

        harness_start(&ops, NULL);
        ck_assert_int_eq(ops_ctl("log info", out, sizeof(out)), 0);
        ck_assert_ptr_nonnull(strstr(out, "log level info"));
        fd = wsc_connect(ops.port);
        reply = ops_query(fd, "peru", 1);
        json_object_put(reply);
        /* The worker applies the level before its next call and logs it. */
        ck_assert(ops_wait_log("log level set to info from debug"));
        ck_assert(ops_wait_log("configuration applied"));
        close(fd);
}
END_TEST

START_TEST(reload_rate_keeps_clients)
{
        char out[2048];
        json_object *status, *reply;
        int fd;

        harness_start(&ops, NULL);
        fd = wsc_connect(ops.port);
        reply = ops_query(fd, "chi", 1);
        json_object_put(reply);

        ops_edit_conf("rate =", "rate = 2.5");
        ops_edit_conf("burst =", "burst = 2");
        ops_edit_conf("listen =", "listen = 127.0.0.1:1");
        ck_assert_int_eq(ops_ctl("reload", out, sizeof(out)), 0);
        ck_assert_ptr_nonnull(strstr(out, "rate 2.500/s, burst 2"));
        ck_assert_ptr_nonnull(strstr(out, "restart to apply listen"));

        status = ops_status();
        ck_assert(ops_number(status, "bucket.rate") == 2.5);
        ck_assert_int_eq((int)ops_number(status, "bucket.burst"), 2);
        ck_assert(ops_number(status, "bucket.tokens") <= 2);
        json_object_put(status);

        /* The same connection still gets results, and the port did not move. */
        reply = ops_query(fd, "chil", 2);
        json_object_put(reply);
        ck_assert_int_eq(harness_wait_port(ops.port, 1000), 0);
        ck_assert(ops_wait_log("configuration applied: API rate 2.500/s burst 2"));
        close(fd);
}
END_TEST

START_TEST(reload_invalid_changes_nothing)
{
        char out[2048];
        json_object *status;

        harness_start(&ops, NULL);
        ops_edit_conf("rate =", "rate = fast");
        ops_edit_conf("burst =", "burst = 0");
        ck_assert_int_eq(ops_ctl("reload", out, sizeof(out)), 1);
        ck_assert_ptr_nonnull(strstr(out, "invalid value 'fast' for rate"));
        ck_assert_ptr_nonnull(strstr(out, "invalid value '0' for burst"));
        status = ops_status();
        ck_assert(ops_number(status, "bucket.rate") == 45);
        json_object_put(status);
        ck_assert(ops_log_contains("reload of"));

        /* SIGHUP takes the same path. */
        kill(ops.daemon_pid, SIGHUP);
        ck_assert(ops_wait_log("SIGHUP received"));
        ck_assert_int_eq(harness_wait_port(ops.port, 1000), 0);
}
END_TEST

START_TEST(metrics_prometheus_text)
{
        static char body[65536];
        json_object *reply;
        int fd;

        harness_start(&ops, NULL);
        fd = wsc_connect(ops.port);
        reply = ops_query(fd, "nor", 1);
        json_object_put(reply);
        ck_assert_int_eq(harness_http_get(ops.port, "/metrics", body, sizeof(body)), 200);
        ck_assert_ptr_nonnull(strstr(body, "# TYPE incsearchd_queries_total counter\n"
                                           "incsearchd_queries_total 1\n"));
        ck_assert_ptr_nonnull(strstr(body, "incsearchd_api_calls_total 1\n"));
        ck_assert_ptr_nonnull(strstr(body, "incsearchd_api_errors_total{kind=\"http_429\"} 0\n"));
        ck_assert_ptr_nonnull(strstr(body, "# TYPE incsearchd_api_call_seconds histogram\n"));
        ck_assert_ptr_nonnull(strstr(body, "incsearchd_api_call_seconds_bucket{le=\"+Inf\"} 1\n"));
        ck_assert_ptr_nonnull(strstr(body, "incsearchd_api_call_seconds_count 1\n"));
        ck_assert_ptr_nonnull(
            strstr(body, "incsearchd_keystroke_to_result_seconds_bucket{le=\"0.0001\"}"));
        close(fd);
}
END_TEST

START_TEST(metrics_other_address_forbidden)
{
        static const struct harness_options options = {.extra_server =
                                                           "metrics_allow = 10.9.8.7\n"};
        char body[1024];

        harness_start(&ops, &options);
        ck_assert_int_eq(harness_http_get(ops.port, "/metrics", body, sizeof(body)), 403);
}
END_TEST

START_TEST(control_stale_socket_replaced)
{
        char *argv[] = {"incsearchd", "-c", ops.conf_path, NULL};
        char log[160], out[4096];
        int status;

        /* A daemon killed with SIGKILL leaves its control socket file behind. */
        harness_start(&ops, NULL);
        kill(ops.daemon_pid, SIGKILL);
        waitpid(ops.daemon_pid, &status, 0);
        ck_assert_int_eq(access(ops.control_path, F_OK), 0);
        ck_assert_int_eq(ops_ctl("status", out, sizeof(out)), 1);
        ck_assert_ptr_nonnull(strstr(out, "incsearchd is not running"));

        snprintf(log, sizeof(log), "%s/incsearchd.log", ops.dir);
        ops.daemon_pid = harness_spawn("incsearchd", argv, log);
        ck_assert_int_eq(harness_wait_port(ops.port, 5000), 0);
        ck_assert(ops_wait_log("removing stale control socket"));
        ck_assert_int_eq(ops_ctl("status", out, sizeof(out)), 0);
        ck_assert_ptr_nonnull(strstr(out, "workers   2 of 2 alive"));

        /* A clean stop removes it. */
        harness_stop(ops.daemon_pid);
        ops.daemon_pid = 0;
        ck_assert_int_eq(access(ops.control_path, F_OK), -1);
}
END_TEST

START_TEST(control_regular_file_kept)
{
        char out[4096], args[256];
        FILE *f;

        harness_start(&ops, NULL);
        harness_stop(ops.daemon_pid);
        ops.daemon_pid = 0;
        f = fopen(ops.control_path, "w");
        ck_assert_ptr_nonnull(f);
        fclose(f);
        snprintf(args, sizeof(args), "-c %s", ops.conf_path);
        ck_assert_int_eq(ops_run("incsearchd", args, out, sizeof(out)), 1);
        ck_assert_ptr_nonnull(strstr(out, "exists and is not a socket"));
        ck_assert_int_eq(access(ops.control_path, F_OK), 0);
}
END_TEST

/* Reads datagrams from FD until one contains NEEDLE or 5 s pass. */
static int ops_notify_wait(int fd, const char *needle)
{
        char buf[512];

        for (int waited = 0; waited < 5000; waited += 20) {
                ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

                if (n > 0) {
                        buf[n] = '\0';
                        if (strstr(buf, needle) != NULL)
                                return 1;
                        continue;
                }
                ops_sleep_ms(20);
        }
        return 0;
}

START_TEST(notify_ready_reload_stopping)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        char dir[64], out[2048];
        int fd;

        harness_make_dir(dir, sizeof(dir), "notify");
        snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/notify", dir);
        fd = socket(AF_UNIX, SOCK_DGRAM, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
        /* Each test runs in its own process, so the variable reaches only this daemon. */
        setenv("NOTIFY_SOCKET", addr.sun_path, 1);
        setenv("WATCHDOG_USEC", "400000", 1);

        harness_start(&ops, NULL);
        ck_assert(ops_notify_wait(fd, "READY=1"));
        ck_assert(ops_notify_wait(fd, "WATCHDOG=1"));
        ck_assert_int_eq(ops_ctl("reload", out, sizeof(out)), 0);
        ck_assert(ops_notify_wait(fd, "RELOADING=1"));
        ck_assert(ops_notify_wait(fd, "READY=1"));
        kill(ops.daemon_pid, SIGTERM);
        ck_assert(ops_notify_wait(fd, "STOPPING=1"));
        close(fd);
        unlink(addr.sun_path);
        rmdir(dir);
}
END_TEST

START_TEST(privileges_dropped_as_root)
{
        static const struct harness_options options = {.extra_server = "user = nobody\n"};
        char path[64], line[256], out[4096];
        struct stat st;
        int uid = -1;
        FILE *f;

        if (geteuid() != 0)
                return; /* only root can switch users */
        harness_start(&ops, &options);
        snprintf(path, sizeof(path), "/proc/%d/status", (int)ops.daemon_pid);
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        while (fgets(line, sizeof(line), f) != NULL)
                if (sscanf(line, "Uid: %d", &uid) == 1)
                        break;
        fclose(f);
        ck_assert_int_eq(uid, 65534);
        ck_assert(ops_wait_log("switched to user nobody"));

        /* The control socket belongs to nobody's group, and root can still use it. */
        ck_assert_int_eq(stat(ops.control_path, &st), 0);
        ck_assert_uint_eq(st.st_gid, getpwnam("nobody")->pw_gid);
        ck_assert_int_eq(ops_ctl("status", out, sizeof(out)), 0);
}
END_TEST

Suite *ops_suite(void)
{
        Suite *s = suite_create("ops");
        TCase *unit = tcase_create("unit");
        TCase *daemon = tcase_create("daemon");

        tcase_add_test(unit, histogram_percentiles);
        tcase_add_test(unit, histogram_percentile_capped_at_max);
        tcase_add_test(unit, bucket_reconfigure_clips_down);
        tcase_add_test(unit, bucket_reconfigure_never_adds);
        tcase_add_test(unit, conf_dump_minimal);
        tcase_add_test(unit, conf_dump_every_key);
        tcase_add_test(unit, conf_secret_readable_rejected);
        tcase_add_test(unit, conf_metrics_allow_prefixes);
        suite_add_tcase(s, unit);

        tcase_add_checked_fixture(daemon, NULL, ops_teardown);
        tcase_set_timeout(daemon, 60);
        tcase_add_test(daemon, ctl_status_figures_move);
        tcase_add_test(daemon, ctl_workers_count_restarts);
        tcase_add_test(daemon, ctl_errors_and_usage);
        tcase_add_test(daemon, ctl_log_level_reaches_workers);
        tcase_add_test(daemon, reload_rate_keeps_clients);
        tcase_add_test(daemon, reload_invalid_changes_nothing);
        tcase_add_test(daemon, metrics_prometheus_text);
        tcase_add_test(daemon, metrics_other_address_forbidden);
        tcase_add_test(daemon, control_stale_socket_replaced);
        tcase_add_test(daemon, control_regular_file_kept);
        tcase_add_test(daemon, notify_ready_reload_stopping);
        tcase_add_test(daemon, privileges_dropped_as_root);
        suite_add_tcase(s, daemon);
        return s;
}
