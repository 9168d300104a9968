/*
 * The shipped nginx config, etc/nginx/incsearchd.conf, run by Debian's nginx in front of two
 * incsearchd instances that share one demo API. TLS ends at nginx and WebSocket connections are
 * balanced over both instances. The per-address limit holds, and new connections go to the
 * other instance when one stops. tests/nginx_client.py is the wss client.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
#include "harness.h"
#include "suites.h"

#define NGINX_PROGRAM "/usr/sbin/nginx"
#define NGINX_ORIGIN "https://search.example.com" /* the server_name of the shipped file */
#define NGINX_MAX_CONF 16384

static struct harness nginx_a, nginx_b;
static char nginx_dir[64];
static pid_t nginx_pid, nginx_client_pid;
static int nginx_client_in = -1, nginx_client_out = -1;

static const char *nginx_tests_dir(void)
{
        const char *dir = getenv("INCSEARCHD_TESTS");

        return dir != NULL ? dir : "tests";
}

/* Reads the shipped config into TEXT, NUL-terminated. */
static void nginx_read_shipped(char *text, size_t size)
{
        char path[512];
        size_t n;
        FILE *f;

        snprintf(path, sizeof(path), "%s/../etc/nginx/incsearchd.conf", nginx_tests_dir());
        f = fopen(path, "r");
        ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
        n = fread(text, 1, size - 1, f);
        ck_assert_msg(feof(f), "%s is larger than %zu bytes", path, size - 1);
        fclose(f);
        text[n] = '\0';
}

/* Replaces the one occurrence of FROM in TEXT with TO. Fails if FROM is missing or repeated. */
static void nginx_replace(char *text, size_t size, const char *from, const char *to)
{
        char *at = strstr(text, from);
        size_t from_len = strlen(from), to_len = strlen(to), tail;

        ck_assert_msg(at != NULL, "etc/nginx/incsearchd.conf no longer contains \"%s\"", from);
        ck_assert_msg(strstr(at + from_len, from) == NULL,
                      "etc/nginx/incsearchd.conf contains \"%s\" more than once", from);
        tail = strlen(at + from_len) + 1;
        ck_assert_uint_lt((size_t)(at - text) + to_len + tail, size);
        memmove(at + to_len, at + from_len, tail);
        memcpy(at, to, to_len);
}

/*
 * Writes the shipped config with the listen address, the two upstream addresses and the
 * certificate paths replaced, and nothing else, then a main config around it that keeps every
 * file nginx writes in nginx_dir.
 */
static void nginx_write_conf(int port)
{
        char text[NGINX_MAX_CONF], to[256], path[128];
        struct passwd *pw = getpwuid(geteuid());
        struct group *gr = getgrgid(getegid());
        FILE *f;

        nginx_read_shipped(text, sizeof(text));
        snprintf(to, sizeof(to), "listen 127.0.0.1:%d ssl;", port);
        nginx_replace(text, sizeof(text), "listen 443 ssl;", to);
        snprintf(to, sizeof(to), "server 127.0.0.1:%d ", nginx_a.port);
        nginx_replace(text, sizeof(text), "server 10.0.0.11:8080 ", to);
        snprintf(to, sizeof(to), "server 127.0.0.1:%d ", nginx_b.port);
        nginx_replace(text, sizeof(text), "server 10.0.0.12:8080 ", to);
        snprintf(to, sizeof(to), "%s/cert.pem", nginx_dir);
        nginx_replace(text, sizeof(text), "/etc/ssl/certs/search.example.com.pem", to);
        snprintf(to, sizeof(to), "%s/key.pem", nginx_dir);
        nginx_replace(text, sizeof(text), "/etc/ssl/private/search.example.com.key", to);
        snprintf(path, sizeof(path), "%s/incsearchd.conf", nginx_dir);
        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        fclose(f);

        snprintf(path, sizeof(path), "%s/nginx.conf", nginx_dir);
        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        /* As root, nginx's workers would otherwise switch to the user nobody. */
        if (geteuid() == 0 && pw != NULL && gr != NULL)
                fprintf(f, "user %s %s;\n", pw->pw_name, gr->gr_name);
        fprintf(f,
                "worker_processes 2;\n"
                "pid %1$s/nginx.pid;\n"
                "error_log %1$s/error.log info;\n"
                "events {\n    worker_connections 256;\n}\n"
                "http {\n"
                "    access_log %1$s/access.log;\n"
                "    client_body_temp_path %1$s/body;\n"
                "    proxy_temp_path %1$s/proxy;\n"
                "    fastcgi_temp_path %1$s/fastcgi;\n"
                "    uwsgi_temp_path %1$s/uwsgi;\n"
                "    scgi_temp_path %1$s/scgi;\n"
                "    include %1$s/incsearchd.conf;\n"
                "}\n",
                nginx_dir);
        fclose(f);
}

/* Starts nginx with the prefix, config and error log options, then ARG1 and ARG2 (or NULL). */
static pid_t nginx_spawn(const char *log_name, const char *arg1, const char *arg2)
{
        char conf[128], error_log[128], log[128];
        char *argv[] = {"nginx", "-p", nginx_dir,    "-e",         error_log,
                        "-c",    conf, (char *)arg1, (char *)arg2, NULL};

        snprintf(conf, sizeof(conf), "%s/nginx.conf", nginx_dir);
        snprintf(error_log, sizeof(error_log), "%s/error.log", nginx_dir);
        snprintf(log, sizeof(log), "%s/%s", nginx_dir, log_name);
        return harness_spawn(NGINX_PROGRAM, argv, log);
}

static void nginx_dump(const char *name)
{
        struct harness h = {0};

        snprintf(h.dir, sizeof(h.dir), "%s", nginx_dir);
        harness_dump_log(&h, name);
}

/* Checks the config with nginx -t: it must pass with no warning. */
static void nginx_check_conf(void)
{
        char path[128], line[1024];
        int status, ok = 0, successful = 0, warned = 0;
        pid_t pid = nginx_spawn("nginx-t.log", "-t", NULL);
        FILE *f;

        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        snprintf(path, sizeof(path), "%s/nginx-t.log", nginx_dir);
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        while (fgets(line, sizeof(line), f) != NULL) {
                ok |= strstr(line, "syntax is ok") != NULL;
                successful |= strstr(line, "test is successful") != NULL;
                warned |= strstr(line, "[warn]") != NULL || strstr(line, "[emerg]") != NULL;
        }
        fclose(f);
        if (!ok || !successful || warned || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                nginx_dump("nginx-t.log");
        ck_assert_msg(ok && successful && !warned && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "nginx -t rejected or warned about the config in %s", nginx_dir);
}

/* Starts nginx in the foreground on a free port and returns the port. */
static int nginx_start(void)
{
        int port = 0;

        for (int attempt = 0; attempt < 3 && nginx_pid == 0; attempt++) {
                port = harness_free_port();
                nginx_write_conf(port);
                if (attempt == 0)
                        nginx_check_conf();
                nginx_pid = nginx_spawn("nginx.log", "-g", "daemon off;");
                if (harness_wait_port(port, 5000) < 0) {
                        harness_stop(nginx_pid);
                        nginx_pid = 0;
                }
        }
        if (nginx_pid == 0)
                nginx_dump("error.log");
        ck_assert_msg(nginx_pid != 0, "nginx did not start; see %s/error.log", nginx_dir);
        return port;
}

/* Starts tests/nginx_client.py for nginx on PORT, with pipes to its stdin and stdout. */
static void nginx_client_start(int port)
{
        char script[512], port_text[16], cafile[128], log[128];
        int to_client[2], from_client[2];

        snprintf(script, sizeof(script), "%s/nginx_client.py", nginx_tests_dir());
        snprintf(port_text, sizeof(port_text), "%d", port);
        snprintf(cafile, sizeof(cafile), "%s/cert.pem", nginx_dir);
        snprintf(log, sizeof(log), "%s/client.log", nginx_dir);
        ck_assert_int_eq(pipe2(to_client, O_CLOEXEC), 0);
        ck_assert_int_eq(pipe2(from_client, O_CLOEXEC), 0);
        nginx_client_pid = fork();
        ck_assert_int_ge(nginx_client_pid, 0);
        if (nginx_client_pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

                dup2(to_client[0], STDIN_FILENO);
                dup2(from_client[1], STDOUT_FILENO);
                if (fd >= 0)
                        dup2(fd, STDERR_FILENO);
                execl("/usr/bin/python3", "python3", script, port_text, cafile, NGINX_ORIGIN,
                      (char *)NULL);
                _exit(127);
        }
        close(to_client[0]);
        close(from_client[1]);
        nginx_client_in = to_client[1];
        nginx_client_out = from_client[0];
}

/* Sends COMMAND to the client and stores its reply line in REPLY, waiting at most 30 s. */
static void nginx_ask(const char *command, char *reply, size_t len)
{
        char line[256];
        size_t used = 0;
        int n = snprintf(line, sizeof(line), "%s\n", command);

        ck_assert_int_eq(write(nginx_client_in, line, (size_t)n), n);
        for (;;) {
                struct pollfd pfd = {.fd = nginx_client_out, .events = POLLIN};
                char c;

                ck_assert_msg(poll(&pfd, 1, 30000) == 1, "no reply to \"%s\" within 30 s", command);
                ck_assert_msg(read(nginx_client_out, &c, 1) == 1,
                              "nginx_client.py exited during \"%s\"; see %s/client.log", command,
                              nginx_dir);
                if (c == '\n')
                        break;
                if (used + 1 < len)
                        reply[used++] = c;
        }
        reply[used] = '\0';
}

/* Sends COMMAND and fails unless the reply is EXPECTED. */
static void nginx_expect(const char *command, const char *expected)
{
        char reply[1024];

        nginx_ask(command, reply, sizeof(reply));
        if (strcmp(reply, expected) != 0)
                nginx_dump("error.log");
        ck_assert_msg(strcmp(reply, expected) == 0, "\"%s\" got \"%s\", expected \"%s\"", command,
                      reply, expected);
}

/* Returns H's incsearchd_clients gauge, the WebSocket clients connected to it now. */
static long nginx_clients_now(const struct harness *h)
{
        static char body[65536];
        const char *at;

        ck_assert_int_eq(harness_http_get(h->port, "/metrics", body, sizeof(body)), 200);
        at = strstr(body, "\nincsearchd_clients ");
        ck_assert_ptr_nonnull(at);
        return strtol(at + strlen("\nincsearchd_clients "), NULL, 10);
}

/*
 * Waits up to 5 s for the two instances to hold A and B clients (-1 for either count) and
 * fails with both counts if they do not.
 */
static void nginx_expect_clients(long a, long b)
{
        long now_a = -1, now_b = -1;

        for (int waited = 0; waited <= 5000; waited += 50) {
                now_a = nginx_clients_now(&nginx_a);
                now_b = nginx_b.daemon_pid != 0 ? nginx_clients_now(&nginx_b) : -1;
                if ((a < 0 || now_a == a) && (b < 0 || now_b == b))
                        return;
                usleep(50000);
        }
        ck_abort_msg("instances hold %ld and %ld clients, expected %ld and %ld", now_a, now_b, a,
                     b);
}

static void nginx_setup(void)
{
        harness_make_dir(nginx_dir, sizeof(nginx_dir), "nginx");
}

static void nginx_teardown(void)
{
        char command[160];

        if (nginx_client_in >= 0)
                close(nginx_client_in);
        if (nginx_client_out >= 0)
                close(nginx_client_out);
        harness_stop(nginx_client_pid);
        harness_stop(nginx_pid);
        harness_stop_all(&nginx_b);
        harness_stop_all(&nginx_a);
        if (getenv("INCSEARCHD_KEEP_LOGS") == NULL) {
                snprintf(command, sizeof(command), "rm -rf '%s'", nginx_dir);
                if (system(command) != 0)
                        fprintf(stderr, "cannot remove %s\n", nginx_dir);
        }
}

START_TEST(nginx_balances_two_instances)
{
        /* allowed_origins lists the public origin: nginx passes the browser's Origin on. */
        static const struct harness_options a_options = {
            .extra_server = "max_connections_per_ip = 0\nallowed_origins = " NGINX_ORIGIN "\n"};
        struct harness_options b_options = a_options;
        char cert[128], key[128], command[32];
        int on_a[4], status;

        harness_start(&nginx_a, &a_options);
        b_options.shared_api = &nginx_a;
        harness_start(&nginx_b, &b_options);
        snprintf(cert, sizeof(cert), "%s/cert.pem", nginx_dir);
        snprintf(key, sizeof(key), "%s/key.pem", nginx_dir);
        harness_make_cert(cert, key);
        nginx_client_start(nginx_start());

        /*
         * Four connections opened one after the other, noting where each lands. Then the two on
         * instance a are closed: least_conn sends the next two to a, where round robin would
         * send one to each instance.
         */
        for (int i = 0; i < 4; i++) {
                long before = nginx_clients_now(&nginx_a);

                nginx_expect("open 1", "ok");
                on_a[i] = nginx_clients_now(&nginx_a) > before;
        }
        nginx_expect_clients(2, 2);
        for (int i = 0; i < 4; i++) {
                snprintf(command, sizeof(command), "drop %d", i);
                if (on_a[i])
                        nginx_expect(command, "ok");
        }
        nginx_expect_clients(0, 2);
        nginx_expect("open 2", "ok");
        nginx_expect_clients(2, 2);

        nginx_expect("get /", "ok 200");
        nginx_expect("get /metrics", "ok 403");
        nginx_expect("handshake https://other.example.com", "ok 403");

        /* limit_conn allows 16 connections from one address. */
        nginx_expect("open 12", "ok");
        nginx_expect("handshake " NGINX_ORIGIN, "ok 429");
        nginx_expect("close", "ok");
        nginx_expect_clients(0, 0);

        /* With one instance stopped, every new connection reaches the other one. */
        harness_stop(nginx_b.daemon_pid);
        nginx_b.daemon_pid = 0;
        nginx_expect("open 3", "ok");
        nginx_expect_clients(3, -1);
        nginx_expect("close", "ok");

        close(nginx_client_in);
        nginx_client_in = -1;
        ck_assert_int_eq(waitpid(nginx_client_pid, &status, 0), nginx_client_pid);
        nginx_client_pid = 0;
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        status = harness_stop(nginx_pid);
        nginx_pid = 0;
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "nginx did not exit cleanly on SIGTERM");
}
END_TEST

/* Returns the seconds of "DIRECTIVE Ns;" in the shipped config's /ws location. */
static long nginx_ws_seconds(const char *directive)
{
        char text[NGINX_MAX_CONF];
        const char *ws, *at;

        nginx_read_shipped(text, sizeof(text));
        ws = strstr(text, "location = /ws {");
        ck_assert_ptr_nonnull(ws);
        at = strstr(ws, directive);
        ck_assert_msg(at != NULL && at < strchr(ws, '}'), "no %s in location /ws", directive);
        return strtol(at + strlen(directive), NULL, 10);
}

/* An idle client gets incsearchd's ping, or is closed by incsearchd, before nginx cuts it off. */
START_TEST(nginx_timeout_above_ping)
{
        char path[512], errors[1024];
        struct conf conf;
        long read_ms = nginx_ws_seconds("proxy_read_timeout ") * 1000;

        snprintf(path, sizeof(path), "%s/../etc/incsearchd.conf", nginx_tests_dir());
        ck_assert_int_eq(conf_load(&conf, path, errors, sizeof(errors)), 0);
        ck_assert_int_gt(read_ms, (long)conf.ping_interval_ms + (long)conf.ping_timeout_ms);
}
END_TEST

Suite *nginx_suite(void)
{
        Suite *s = suite_create("nginx");
        TCase *tc = tcase_create("nginx");

        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, nginx_setup, nginx_teardown);
        tcase_add_test(tc, nginx_balances_two_instances);
        tcase_add_test(tc, nginx_timeout_above_ping);
        suite_add_tcase(s, tc);
        return s;
}
