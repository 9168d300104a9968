/*
 * TLS on the listener: https and wss with a certificate each test makes, failed and unfinished
 * handshakes, certificate reloads, and start-up with unusable files.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "harness.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

static struct harness tls;

/* The test's own folder for certificates, apart from the harness's, which starts later. */
static char tls_dir[64];
static char tls_cert[128], tls_key[128];
static char tls_server[512];

static void tls_setup(void)
{
        signal(SIGPIPE, SIG_IGN);
        harness_make_dir(tls_dir, sizeof(tls_dir), "tls");
        snprintf(tls_cert, sizeof(tls_cert), "%s/cert.pem", tls_dir);
        snprintf(tls_key, sizeof(tls_key), "%s/key.pem", tls_dir);
        harness_make_cert(tls_cert, tls_key);
        snprintf(tls_server, sizeof(tls_server), "tls_cert = %s\ntls_key = %s\n", tls_cert,
                 tls_key);
}

static void tls_teardown(void)
{
        char command[128];

        harness_stop_all(&tls);
        snprintf(command, sizeof(command), "rm -rf '%s'", tls_dir);
        if (system(command) != 0)
                fprintf(stderr, "cannot remove %s\n", tls_dir);
}

static void tls_sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

/* Starts the demo API and a TLS incsearchd with the test's certificate and EXTRA [server] lines. */
static void tls_start(const char *extra)
{
        static char server[1024];
        struct harness_options options = {.extra_server = server};

        snprintf(server, sizeof(server), "%s%s", tls_server, extra != NULL ? extra : "");
        harness_start(&tls, &options);
}

/* Runs incsearchctl reload against the test daemon. */
static int tls_reload(char *out, size_t len)
{
        char command[512];

        snprintf(command, sizeof(command), "%s/incsearchctl -s %s reload", harness_build_dir(),
                 tls.control_path);
        return harness_run_shell(command, out, len);
}

/* Replaces the line starting with PREFIX in the test daemon's config by LINE (sed syntax). */
static void tls_edit_conf(const char *prefix, const char *line)
{
        char command[1024];

        snprintf(command, sizeof(command), "sed -i 's|^%s.*|%s|' %s", prefix, line, tls.conf_path);
        ck_assert_int_eq(system(command), 0);
}

/* Returns 1 if one line of the daemon's log contains NEEDLE and, unless NULL, ALSO. */
static int tls_log_contains(const char *needle, const char *also)
{
        char path[256], line[2048];
        int found = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/incsearchd.log", tls.dir);
        f = fopen(path, "r");
        ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
        while (!found && fgets(line, sizeof(line), f) != NULL)
                found =
                    strstr(line, needle) != NULL && (also == NULL || strstr(line, also) != NULL);
        fclose(f);
        return found;
}

/* Waits up to 5 s for a line with NEEDLE and ALSO in the daemon's log. */
static int tls_wait_log_line(const char *needle, const char *also)
{
        for (int waited = 0; waited < 5000; waited += 50) {
                if (tls_log_contains(needle, also))
                        return 1;
                tls_sleep_ms(50);
        }
        return 0;
}

static int tls_wait_log(const char *needle)
{
        return tls_wait_log_line(needle, NULL);
}

/* Sends query TEXT with SEQ on FD and checks that the results for it arrive. */
static void tls_expect_results(int fd, const char *text, long long seq)
{
        char message[256];
        struct wsc_frame frame;
        json_object *reply;
        int r;

        snprintf(message, sizeof(message), "{\"q\":\"%s\",\"seq\":%lld}", text, seq);
        ck_assert_int_eq(wsc_send_text(fd, message), 0);
        do {
                r = wsc_recv(fd, &frame, 10000);
                if (r != 1)
                        harness_dump_log(&tls, "incsearchd.log");
                ck_assert_msg(r == 1, "no reply to %s", text);
                if (frame.opcode != WS_OP_TEXT)
                        wsc_frame_free(&frame);
        } while (frame.opcode != WS_OP_TEXT);
        reply = json_tokener_parse((const char *)frame.payload);
        ck_assert_msg(reply != NULL, "not JSON: %s", frame.payload);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_int_eq(harness_json_int(reply, "seq"), seq);
        json_object_put(reply);
        wsc_frame_free(&frame);
}

/* Returns the SHA-256 of the certificate in PATH, as the client computes it. */
static void tls_file_fingerprint(const char *path, unsigned char sha256[32])
{
        unsigned len = 0;
        FILE *f = fopen(path, "r");
        X509 *cert;

        ck_assert_ptr_nonnull(f);
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
        ck_assert_ptr_nonnull(cert);
        ck_assert_int_eq(X509_digest(cert, EVP_sha256(), sha256, &len), 1);
        ck_assert_uint_eq(len, 32);
        X509_free(cert);
}

/* Connects with wss and stores the fingerprint of the certificate the server sent. */
static int tls_connect_fingerprint(unsigned char sha256[32])
{
        char alpn[32];
        int fd = wsc_connect_tls(tls.port, tls_cert);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(wsc_tls_peer(fd, sha256, alpn, sizeof(alpn)), 0);
        return fd;
}

/* Returns 1 once the server has closed FD: a read finds the end of the stream or a reset. */
static int tls_peer_closed(int fd, int timeout_ms)
{
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char byte;

        if (poll(&pfd, 1, timeout_ms) <= 0)
                return 0;
        return recv(fd, &byte, 1, MSG_DONTWAIT) <= 0;
}

START_TEST(tls_wss_query_and_https)
{
        static char body[65536];
        unsigned char sha256[32], expected[32];
        char alpn[32];
        int fd;

        tls_start(NULL);
        ck_assert(tls_wait_log("listening on https://"));
        fd = wsc_connect_tls(tls.port, tls_cert);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(wsc_tls_peer(fd, sha256, alpn, sizeof(alpn)), 0);
        ck_assert_str_eq(alpn, "http/1.1");
        tls_file_fingerprint(tls_cert, expected);
        ck_assert_mem_eq(sha256, expected, 32);
        tls_expect_results(fd, "chi", 1);
        tls_expect_results(fd, "chil", 2);
        wsc_close(fd);

        ck_assert_int_eq(wsc_https_get(tls.port, tls_cert, "/", body, sizeof(body)), 200);
        ck_assert_ptr_nonnull(strstr(body, "<html"));
        ck_assert_int_eq(wsc_https_get(tls.port, tls_cert, "/incsearch.js", body, sizeof(body)),
                         200);
        ck_assert_ptr_nonnull(strstr(body, "wss:"));
        ck_assert_int_eq(wsc_https_get(tls.port, tls_cert, "/metrics", body, sizeof(body)), 200);
        ck_assert_ptr_nonnull(strstr(body, "incsearchd_uptime_seconds"));
}
END_TEST

START_TEST(tls_plain_http_closed)
{
        char out[1024];
        int fd;

        tls_start(NULL);
        fd = wsc_connect_tls(tls.port, tls_cert);
        ck_assert_int_ge(fd, 0);
        tls_expect_results(fd, "par", 1);

        /* No HTTP response: the bytes are not a ClientHello, so the handshake fails. */
        ck_assert_int_ge(
            harness_http_raw(tls.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", out, sizeof(out)), 0);
        ck_assert_ptr_null(strstr(out, "HTTP/1.1"));
        ck_assert(tls_wait_log_line("TLS handshake failed: http request", "(127.0.0.1:"));
        ck_assert_int_eq(harness_http_raw(tls.port, "\x16\x03\x01\x00\x05hello", out, sizeof(out)),
                         0);
        ck_assert(tls_wait_log("TLS handshake failed: "));

        /* The open connection and new ones are served as before. */
        tls_expect_results(fd, "pari", 2);
        wsc_close(fd);
        fd = wsc_connect_tls(tls.port, tls_cert);
        ck_assert_int_ge(fd, 0);
        tls_expect_results(fd, "ber", 1);
        wsc_close(fd);
}
END_TEST

START_TEST(tls_silent_client_timeout)
{
        char response[8];
        int fd;

        tls_start("handshake_timeout_ms = 500\n");
        fd = wsc_connect_raw(tls.port, "", response, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_msg(tls_peer_closed(fd, 5000), "a client that sent nothing is still open");
        close(fd);
        ck_assert(tls_wait_log("(TLS handshake unfinished)"));
}
END_TEST

START_TEST(tls_slow_client_hello_timeout)
{
        /* A handshake record header announcing 512 bytes, whose body then comes one at a time. */
        static const char record[] = "\x16\x03\x01\x02\x00";
        char response[8];
        int fd, closed = 0;

        tls_start("handshake_timeout_ms = 500\n");
        fd = wsc_connect_raw(tls.port, "", response, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(send(fd, record, 5, MSG_NOSIGNAL), 5);
        /* A byte every 150 ms restarts libevent's read timeout, but not the deadline. */
        for (int i = 0; i < 30 && !closed; i++) {
                closed = tls_peer_closed(fd, 150);
                if (!closed && send(fd, "\x01", 1, MSG_NOSIGNAL) != 1)
                        closed = 1;
        }
        ck_assert_msg(closed, "a ClientHello sent byte by byte kept the connection open for 4.5 s");
        close(fd);
}
END_TEST

START_TEST(tls_reload_new_certificate)
{
        unsigned char old_sha[32], new_sha[32], expected[32];
        char out[2048];
        int old_fd, new_fd;

        tls_start(NULL);
        old_fd = tls_connect_fingerprint(old_sha);
        tls_expect_results(old_fd, "ber", 1);

        harness_make_cert(tls_cert, tls_key);
        tls_file_fingerprint(tls_cert, expected);
        ck_assert_mem_ne(expected, old_sha, 32);
        ck_assert_int_eq(tls_reload(out, sizeof(out)), 0);

        new_fd = tls_connect_fingerprint(new_sha);
        ck_assert_mem_eq(new_sha, expected, 32);
        tls_expect_results(new_fd, "lon", 1);
        /* The connection made before the reload keeps its session and is still served. */
        tls_expect_results(old_fd, "berl", 2);
        wsc_close(old_fd);
        wsc_close(new_fd);
}
END_TEST

START_TEST(tls_reload_mismatched_key)
{
        unsigned char before[32], after[32];
        char other_cert[160], other_key[160], line[256], out[2048];
        int fd;

        tls_start(NULL);
        fd = tls_connect_fingerprint(before);
        wsc_close(fd);

        snprintf(other_cert, sizeof(other_cert), "%s/other-cert.pem", tls_dir);
        snprintf(other_key, sizeof(other_key), "%s/other-key.pem", tls_dir);
        harness_make_cert(other_cert, other_key);
        snprintf(line, sizeof(line), "tls_key = %s", other_key);
        tls_edit_conf("tls_key =", line);
        ck_assert_int_eq(tls_reload(out, sizeof(out)), 1);
        ck_assert_msg(strstr(out, "does not match the certificate in tls_cert") != NULL, "%s", out);
        ck_assert_ptr_nonnull(strstr(out, other_key));
        ck_assert(tls_wait_log("the running configuration stays"));

        fd = tls_connect_fingerprint(after);
        ck_assert_mem_eq(after, before, 32);
        tls_expect_results(fd, "ams", 1);
        wsc_close(fd);

        /* A missing file is rejected the same way. */
        tls_edit_conf("tls_key =", "tls_key = /nonexistent/key.pem");
        ck_assert_int_eq(tls_reload(out, sizeof(out)), 1);
        ck_assert_msg(strstr(out, "tls_key /nonexistent/key.pem: No such file or directory") !=
                          NULL,
                      "%s", out);
}
END_TEST

START_TEST(tls_reload_turns_on_and_off)
{
        static char body[65536];
        char line[512], out[2048];
        int plain_fd, tls_fd;

        harness_start(&tls, NULL);
        plain_fd = wsc_connect(tls.port);
        ck_assert_int_ge(plain_fd, 0);

        /* On: new connections need TLS, the plain one keeps working. */
        snprintf(line, sizeof(line), "log_level = debug\\ntls_cert = %s\\ntls_key = %s", tls_cert,
                 tls_key);
        tls_edit_conf("log_level =", line);
        ck_assert_int_eq(tls_reload(out, sizeof(out)), 0);
        ck_assert(tls_wait_log("TLS on: new connections are HTTPS and WSS"));
        ck_assert_int_lt(harness_http_get(tls.port, "/", body, sizeof(body)), 0);
        tls_fd = wsc_connect_tls(tls.port, tls_cert);
        ck_assert_int_ge(tls_fd, 0);
        tls_expect_results(tls_fd, "mad", 1);
        tls_expect_results(plain_fd, "mad", 1);

        /* Off again: plain for new connections, the TLS one keeps working. */
        tls_edit_conf("tls_", "");
        ck_assert_int_eq(tls_reload(out, sizeof(out)), 0);
        ck_assert(tls_wait_log("TLS off: new connections are plain HTTP and WebSocket"));
        ck_assert_int_eq(harness_http_get(tls.port, "/", body, sizeof(body)), 200);
        tls_expect_results(tls_fd, "madr", 2);
        tls_expect_results(plain_fd, "madr", 2);
        wsc_close(tls_fd);
        wsc_close(plain_fd);
}
END_TEST

START_TEST(tls_start_missing_key)
{
        char conf_path[160], command[512], out[4096];
        FILE *f;

        snprintf(conf_path, sizeof(conf_path), "%s/incsearchd.conf", tls_dir);
        f = fopen(conf_path, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f,
                "[server]\nlisten = 127.0.0.1:%d\nshm_name = /incsearchd-tls-%d\n"
                "control_socket = %s/control.sock\ntls_cert = %s\ntls_key = %s/missing.pem\n"
                "[api]\nurl = http://127.0.0.1:1/?q={q}\nrate = 1\nburst = 1\n",
                harness_free_port(), (int)getpid(), tls_dir, tls_cert, tls_dir);
        fclose(f);

        snprintf(command, sizeof(command), "%s/incsearchd -t -c %s", harness_build_dir(),
                 conf_path);
        ck_assert_int_eq(harness_run_shell(command, out, sizeof(out)), 1);
        ck_assert_msg(strstr(out, "missing.pem: No such file or directory") != NULL, "%s", out);

        snprintf(command, sizeof(command), "%s/incsearchd -c %s", harness_build_dir(), conf_path);
        ck_assert_int_eq(harness_run_shell(command, out, sizeof(out)), 1);
        ck_assert_msg(strstr(out, "missing.pem: No such file or directory") != NULL, "%s", out);
        ck_assert_ptr_nonnull(strstr(out, "not starting"));

        /* A key that is not PEM gets OpenSSL's reason. */
        snprintf(command, sizeof(command), "echo junk > %s/missing.pem && %s/incsearchd -t -c %s",
                 tls_dir, harness_build_dir(), conf_path);
        ck_assert_int_eq(harness_run_shell(command, out, sizeof(out)), 1);
        ck_assert_msg(strstr(out, "no PEM private key read (OpenSSL: ") != NULL, "%s", out);
}
END_TEST

Suite *tls_suite(void)
{
        Suite *s = suite_create("tls");
        TCase *tc = tcase_create("listener");

        tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, tls_wss_query_and_https);
        tcase_add_test(tc, tls_plain_http_closed);
        tcase_add_test(tc, tls_silent_client_timeout);
        tcase_add_test(tc, tls_slow_client_hello_timeout);
        tcase_add_test(tc, tls_reload_new_certificate);
        tcase_add_test(tc, tls_reload_mismatched_key);
        tcase_add_test(tc, tls_reload_turns_on_and_off);
        tcase_add_test(tc, tls_start_missing_key);
        suite_add_tcase(s, tc);
        return s;
}
