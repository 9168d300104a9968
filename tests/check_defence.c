/*
 * The daemon's defences against hostile or broken clients: admission limits, the handshake
 * timeout, keepalive, the output cap, the Origin check, the graceful stop, and a client from
 * another WebSocket implementation.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

static struct harness defence;

#define DEFENCE_HANDSHAKE                                                                          \
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"     \
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

static void defence_teardown(void)
{
        harness_stop_all(&defence);
}

/* Connects with HEADERS added to the handshake and returns the socket; *STATUS gets the code. */
static int defence_handshake(const char *headers, int *status)
{
        char request[1024], response[1024];
        int fd;

        snprintf(request, sizeof(request), DEFENCE_HANDSHAKE "%s\r\n", headers);
        fd = wsc_connect_raw(defence.port, request, response, sizeof(response));
        ck_assert_int_ge(fd, 0);
        *status = -1;
        sscanf(response, "HTTP/1.1 %d", status);
        return fd;
}

/* Reads frames until one of OPCODE arrives within TIMEOUT_MS. Returns 1 or 0. */
static int defence_wait_for(int fd, unsigned opcode, int timeout_ms, struct wsc_frame *frame)
{
        while (wsc_recv(fd, frame, timeout_ms) == 1) {
                if (frame->opcode == opcode)
                        return 1;
                wsc_frame_free(frame);
        }
        return 0;
}

START_TEST(defence_max_connections)
{
        struct harness_options options = {.extra_server = "max_connections = 2\n"};
        int a, b, c, status;

        harness_start(&defence, &options);
        a = defence_handshake("", &status);
        ck_assert_int_eq(status, 101);
        b = defence_handshake("", &status);
        ck_assert_int_eq(status, 101);
        c = defence_handshake("", &status);
        ck_assert_int_eq(status, 503);
        close(c);
        close(a);
        /* A slot that frees up is taken again. */
        for (int i = 0; i < 50 && status != 101; i++) {
                usleep(50000);
                close(defence_handshake("", &status));
        }
        ck_assert_int_eq(status, 101);
        close(b);
}
END_TEST

START_TEST(defence_new_connection_rate)
{
        struct harness_options options = {.extra_server = "max_new_connections_per_second = 3\n"};
        int status, accepted = 0, rejected = 0;

        harness_start(&defence, &options);
        /* harness_start's port probe took one token; the burst is 3 a second. */
        for (int i = 0; i < 8; i++) {
                close(defence_handshake("", &status));
                accepted += status == 101;
                rejected += status == 503;
        }
        ck_assert_int_le(accepted, 4);
        ck_assert_int_ge(rejected, 4);
        ck_assert_int_eq(accepted + rejected, 8);
}
END_TEST

START_TEST(defence_connections_per_ip)
{
        struct harness_options options = {.extra_server = "max_connections_per_ip = 2\n"};
        int a, b, c, status;

        harness_start(&defence, &options);
        usleep(100000); /* the port probe's connection has closed */
        a = defence_handshake("", &status);
        ck_assert_int_eq(status, 101);
        b = defence_handshake("", &status);
        ck_assert_int_eq(status, 101);
        c = defence_handshake("", &status);
        ck_assert_int_eq(status, 429);
        close(a);
        close(b);
        close(c);
}
END_TEST

START_TEST(defence_origin_checked)
{
        struct harness_options options = {
            .extra_server = "allowed_origins = https://a.example http://127.0.0.1:8080\n"};
        int status;

        harness_start(&defence, &options);
        close(defence_handshake("Origin: https://a.example\r\n", &status));
        ck_assert_int_eq(status, 101);
        close(defence_handshake("Origin: https://evil.example\r\n", &status));
        ck_assert_int_eq(status, 403);
        close(defence_handshake("", &status));
        ck_assert_int_eq(status, 403);
}
END_TEST

START_TEST(defence_handshake_timeout)
{
        struct harness_options options = {.extra_server = "handshake_timeout_ms = 500\n"};
        char response[64];
        struct wsc_frame frame;
        int fd;

        harness_start(&defence, &options);
        fd = wsc_connect_raw(defence.port, "GET /ws HTTP/1.1\r\n", response, 0);
        ck_assert_int_ge(fd, 0);
        /* A byte every 200 ms keeps resetting a plain read timeout, but not the deadline. */
        for (int i = 0; i < 6; i++) {
                usleep(200000);
                if (send(fd, "X", 1, MSG_NOSIGNAL) != 1)
                        break;
        }
        ck_assert_int_eq(wsc_recv(fd, &frame, 2000), -1);
        close(fd);
}
END_TEST

START_TEST(defence_keepalive_ping_and_timeout)
{
        struct harness_options options = {.extra_server =
                                              "ping_interval_ms = 300\nping_timeout_ms = 300\n"};
        struct wsc_frame frame;
        int fd, r;

        harness_start(&defence, &options);
        fd = wsc_connect(defence.port);
        ck_assert_int_ge(fd, 0);
        /* Answered pings keep the connection open. */
        for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(defence_wait_for(fd, WS_OP_PING, 2000, &frame), 1);
                ck_assert_int_eq(wsc_send(fd, 1, WS_OP_PONG, frame.payload, frame.len), 0);
                wsc_frame_free(&frame);
        }
        /* A ping left unanswered ends the connection. */
        ck_assert_int_eq(defence_wait_for(fd, WS_OP_PING, 2000, &frame), 1);
        wsc_frame_free(&frame);
        r = wsc_recv(fd, &frame, 3000);
        ck_assert_int_eq(r, -1);
        close(fd);
}
END_TEST

START_TEST(defence_slow_reader_bounded)
{
        struct harness_options options = {.extra_server = "max_output_bytes = 4096\n"};
        char ping[120];
        int fd, rcvbuf = 1024, closed = 0;

        harness_start(&defence, &options);
        signal(SIGPIPE, SIG_IGN);
        fd = wsc_connect(defence.port);
        ck_assert_int_ge(fd, 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        /*
         * Pings that the daemon must answer and cannot drop, from a client that never reads.
         * Once the kernel buffers are full the pongs queue in the daemon, which must close the
         * connection at max_output_bytes; 100000 pings are 12.6 MB, far above those buffers.
         */
        memset(ping, 'p', sizeof(ping));
        for (int i = 0; i < 100000 && !closed; i++)
                closed = wsc_send(fd, 1, WS_OP_PING, ping, sizeof(ping)) < 0;
        close(fd);
        ck_assert_msg(closed, "the daemon kept a client that reads nothing");
        /* It still serves others. */
        fd = wsc_connect(defence.port);
        ck_assert_int_ge(fd, 0);
        close(fd);
}
END_TEST

START_TEST(defence_sigterm_going_away)
{
        struct wsc_frame frame;
        int fd, status;

        harness_start(&defence, NULL);
        fd = wsc_connect(defence.port);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kill(defence.daemon_pid, SIGTERM), 0);
        ck_assert_int_eq(defence_wait_for(fd, WS_OP_CLOSE, 5000, &frame), 1);
        ck_assert_uint_ge(frame.len, 2);
        ck_assert_uint_eq((unsigned)frame.payload[0] << 8 | frame.payload[1], 1001);
        wsc_frame_free(&frame);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CLOSE, "\x03\xe9", 2), 0);
        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), -1);
        close(fd);
        status = harness_stop(defence.daemon_pid);
        defence.daemon_pid = 0;
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

START_TEST(defence_python_websockets_interop)
{
        char script[512], port[16];
        pid_t pid;
        int status;

        harness_start(&defence, NULL);
        snprintf(script, sizeof(script), "%s/interop.py",
                 getenv("INCSEARCHD_TESTS") != NULL ? getenv("INCSEARCHD_TESTS") : "tests");
        snprintf(port, sizeof(port), "%d", defence.port);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                execl("/usr/bin/python3", "python3", script, port, (char *)NULL);
                _exit(127);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "%s failed with status %d; is python3-websockets installed?", script,
                      WEXITSTATUS(status));
}
END_TEST

Suite *defence_suite(void)
{
        Suite *s = suite_create("defence");
        TCase *tc = tcase_create("daemon");

        /*
         * The slow-reader test pushes megabytes of pongs into the daemon's socket buffer, which
         * loopback autotuning lets grow to several megabytes, before the cap can bite. Under
         * the sanitizers on a busy machine that took over 30 s once.
         */
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, NULL, defence_teardown);
        tcase_add_test(tc, defence_max_connections);
        tcase_add_test(tc, defence_new_connection_rate);
        tcase_add_test(tc, defence_connections_per_ip);
        tcase_add_test(tc, defence_origin_checked);
        tcase_add_test(tc, defence_handshake_timeout);
        tcase_add_test(tc, defence_keepalive_ping_and_timeout);
        tcase_add_test(tc, defence_slow_reader_bounded);
        tcase_add_test(tc, defence_sigterm_going_away);
        tcase_add_test(tc, defence_python_websockets_interop);
        suite_add_tcase(s, tc);
        return s;
}
