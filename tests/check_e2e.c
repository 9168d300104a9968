/*
 * End-to-end tests: the demo API and incsearchd run as real processes on free loopback
 * ports, and WebSocket clients talk to incsearchd over real sockets.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "harness.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

static struct harness e2e;

static void e2e_teardown(void)
{
        harness_stop_all(&e2e);
}

/* Reads frames until a text frame arrives and returns it parsed; fails the test on timeout. */
static json_object *e2e_next_json(int fd, int timeout_ms)
{
        struct wsc_frame frame;
        json_object *obj;

        for (;;) {
                int r = wsc_recv(fd, &frame, timeout_ms);

                if (r != 1)
                        harness_dump_log(&e2e, "incsearchd.log");
                ck_assert_msg(r == 1, "no message within %d ms (%s)", timeout_ms,
                              r == 0 ? "timeout" : "connection closed");
                if (frame.opcode == WS_OP_TEXT)
                        break;
                wsc_frame_free(&frame);
        }
        obj = json_tokener_parse((const char *)frame.payload);
        ck_assert_msg(obj != NULL, "not JSON: %s", frame.payload);
        wsc_frame_free(&frame);
        return obj;
}

/* Returns 1 if the results array of OBJ has a place named NAME. */
static int e2e_has_place(json_object *obj, const char *name)
{
        json_object *results;

        if (!json_object_object_get_ex(obj, "results", &results) ||
            !json_object_is_type(results, json_type_array))
                return 0;
        for (size_t i = 0; i < json_object_array_length(results); i++) {
                json_object *place = json_object_array_get_idx(results, i);

                if (strcmp(harness_json_string(place, "name"), name) == 0)
                        return 1;
        }
        return 0;
}

static int e2e_connect(void)
{
        int fd = wsc_connect(e2e.port);

        ck_assert_msg(fd >= 0, "WebSocket handshake with 127.0.0.1:%d failed", e2e.port);
        return fd;
}

/* Sends {"q": TEXT, "seq": SEQ} and returns the reply. */
static json_object *e2e_query(int fd, const char *text, long long seq, int timeout_ms)
{
        char message[512];

        snprintf(message, sizeof(message), "{\"q\":\"%s\",\"seq\":%lld}", text, seq);
        ck_assert_int_eq(wsc_send_text(fd, message), 0);
        return e2e_next_json(fd, timeout_ms);
}

/* Expects a close frame with CODE and then the end of the connection. */
static void e2e_expect_close(int fd, unsigned code)
{
        struct wsc_frame frame;

        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), 1);
        ck_assert_uint_eq(frame.opcode, WS_OP_CLOSE);
        ck_assert_uint_ge(frame.len, 2);
        ck_assert_uint_eq((unsigned)frame.payload[0] << 8 | frame.payload[1], code);
        wsc_frame_free(&frame);
        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), -1);
        close(fd);
}

static void e2e_sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

/* A client typing one word a key at a time. */
struct e2e_typist {
        int fd;
        const char *word;
        const char *expect; /* a place its final results must contain */
        long long sent;     /* seq of the last query sent */
        long long received; /* seq of the last result received */
        json_object *last;
};

/* Reads whatever the typist's connection has, checking that seqs only increase. */
static void e2e_typist_read(struct e2e_typist *t, int timeout_ms)
{
        struct wsc_frame frame;

        while (wsc_recv(t->fd, &frame, timeout_ms) == 1) {
                json_object *obj = json_tokener_parse((const char *)frame.payload);
                long long seq;

                wsc_frame_free(&frame);
                ck_assert_ptr_nonnull(obj);
                seq = harness_json_int(obj, "seq");
                ck_assert_msg(seq > t->received, "'%s': result for seq %lld after seq %lld",
                              t->word, seq, t->received);
                t->received = seq;
                json_object_put(t->last);
                t->last = obj;
                if (t->received == t->sent)
                        return;
                timeout_ms = 0;
        }
}

static void e2e_type_words(struct e2e_typist *typists, unsigned count, long key_interval_ms)
{
        size_t longest = 0;

        for (unsigned i = 0; i < count; i++) {
                typists[i].fd = e2e_connect();
                typists[i].received = 0;
                if (strlen(typists[i].word) > longest)
                        longest = strlen(typists[i].word);
        }
        for (size_t k = 1; k <= longest; k++) {
                for (unsigned i = 0; i < count; i++) {
                        struct e2e_typist *t = &typists[i];
                        char message[256];

                        if (k > strlen(t->word))
                                continue;
                        snprintf(message, sizeof(message), "{\"q\":\"%.*s\",\"seq\":%zu}", (int)k,
                                 t->word, k);
                        ck_assert_int_eq(wsc_send_text(t->fd, message), 0);
                        t->sent = (long long)k;
                        e2e_typist_read(t, 0);
                }
                e2e_sleep_ms(key_interval_ms);
        }
        for (unsigned i = 0; i < count; i++) {
                struct e2e_typist *t = &typists[i];

                for (int waited = 0; t->received < t->sent && waited < 15000; waited += 100)
                        e2e_typist_read(t, 100);
                if (t->received != t->sent)
                        harness_dump_log(&e2e, "incsearchd.log");
                ck_assert_msg(t->received == t->sent,
                              "'%s': last query seq %lld unanswered (got %lld)", t->word, t->sent,
                              t->received);
                ck_assert_str_eq(harness_json_string(t->last, "type"), "results");
                ck_assert_str_eq(harness_json_string(t->last, "q"), t->word);
                ck_assert_msg(e2e_has_place(t->last, t->expect), "'%s': %s not in %s", t->word,
                              t->expect, json_object_to_json_string(t->last));
                json_object_put(t->last);
                close(t->fd);
        }
}

START_TEST(e2e_typing_clients_answered)
{
        struct e2e_typist typists[] = {
            {.word = "switz", .expect = "Switzerland"},
            {.word = "new zealand", .expect = "New Zealand"},
            {.word = "germany", .expect = "Germany"},
            {.word = "norway", .expect = "Norway"},
            {.word = "japan", .expect = "Japan"},
            {.word = "brazil", .expect = "Brazil"},
        };
        unsigned count = sizeof(typists) / sizeof(typists[0]);
        long long keys = 0;

        harness_start(&e2e, NULL);
        e2e_type_words(typists, count, 10);
        for (unsigned i = 0; i < count; i++)
                keys += (long long)strlen(typists[i].word);
        ck_assert_int_eq(harness_api_stat(&e2e, "violations"), 0);
        ck_assert_int_le(harness_api_stat(&e2e, "requests"), keys);
}
END_TEST

/* With a bucket far slower than the typing, most keystrokes must be superseded, not queued. */
START_TEST(e2e_slow_rate_latest_wins)
{
        struct harness_options options = {
            .api_rate = "3", .api_burst = "2", .rate = "2", .burst = "2", .workers = "3"};
        struct e2e_typist typists[] = {
            {.word = "switzerland", .expect = "Switzerland"},
            {.word = "france", .expect = "France"},
            {.word = "canada", .expect = "Canada"},
        };

        harness_start(&e2e, &options);
        e2e_type_words(typists, 3, 20);
        ck_assert_int_eq(harness_api_stat(&e2e, "violations"), 0);
        /* 23 keystrokes; the bucket allows 2 at once plus 2 per second while typing and waiting. */
        ck_assert_int_lt(harness_api_stat(&e2e, "requests"), 23);
}
END_TEST

START_TEST(e2e_page_served)
{
        char body[65536];

        harness_start(&e2e, NULL);
        ck_assert_int_eq(harness_http_get(e2e.port, "/", body, sizeof(body)), 200);
        ck_assert_ptr_nonnull(strstr(body, "<input"));
        ck_assert_int_eq(harness_http_get(e2e.port, "/incsearch.js", body, sizeof(body)), 200);
        ck_assert_int_eq(harness_http_get(e2e.port, "/missing", body, sizeof(body)), 404);
        ck_assert_int_gt(
            harness_http_raw(e2e.port, "POST / HTTP/1.1\r\nHost: x\r\n\r\n", body, sizeof(body)),
            0);
        ck_assert_ptr_nonnull(strstr(body, "405 Method Not Allowed"));
}
END_TEST

/* A handshake request with VERSION and KEY, and the status line it must get. */
static void e2e_expect_handshake(const char *version, const char *key, const char *status)
{
        char request[512], response[1024];
        int fd;

        snprintf(request, sizeof(request),
                 "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, "
                 "Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n\r\n",
                 key, version);
        fd = wsc_connect_raw(e2e.port, request, response, sizeof(response));
        ck_assert_int_ge(fd, 0);
        ck_assert_msg(strncmp(response, status, strlen(status)) == 0, "expected '%s', got '%s'",
                      status, response);
        close(fd);
}

START_TEST(e2e_handshake_checks)
{
        char response[1024];

        harness_start(&e2e, NULL);
        e2e_expect_handshake("13", "dGhlIHNhbXBsZSBub25jZQ==", "HTTP/1.1 101 ");
        e2e_expect_handshake("8", "dGhlIHNhbXBsZSBub25jZQ==", "HTTP/1.1 426 ");
        e2e_expect_handshake("13", "short", "HTTP/1.1 400 ");
        ck_assert_int_gt(harness_http_raw(e2e.port, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", response,
                                          sizeof(response)),
                         0);
        ck_assert_ptr_nonnull(strstr(response, "HTTP/1.1 400 "));
        ck_assert_int_gt(
            harness_http_raw(e2e.port,
                             "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
                             "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 7\r\n\r\n",
                             response, sizeof(response)),
            0);
        ck_assert_ptr_nonnull(strstr(response, "Sec-WebSocket-Version: 13\r\n"));
}
END_TEST

START_TEST(e2e_first_frame_with_handshake)
{
        uint8_t request[512];
        char response[1024];
        const char *head =
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        static const uint8_t mask[4] = {9, 8, 7, 6};
        size_t n = strlen(head);
        json_object *reply;
        int fd;

        harness_start(&e2e, NULL);
        memcpy(request, head, n);
        n += ws_header_encode(request + n, 1, WS_OP_TEXT, 5, mask);
        memcpy(request + n, "japan", 5);
        ws_mask(request + n, 5, mask, 0);
        request[n + 5] = '\0';
        /* wsc_connect_raw sends a C string, and the frame has no NUL byte in it. */
        ck_assert_uint_eq(strlen((char *)request), n + 5);
        fd = wsc_connect_raw(e2e.port, (char *)request, response, sizeof(response));
        ck_assert_int_ge(fd, 0);
        ck_assert_ptr_nonnull(strstr(response, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        reply = e2e_next_json(fd, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 1);
        ck_assert(e2e_has_place(reply, "Japan"));
        json_object_put(reply);
        close(fd);
}
END_TEST

START_TEST(e2e_plain_text_numbered)
{
        json_object *reply;
        int fd;

        harness_start(&e2e, NULL);
        fd = e2e_connect();
        ck_assert_int_eq(wsc_send_text(fd, "norw"), 0);
        reply = e2e_next_json(fd, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 1);
        ck_assert_str_eq(harness_json_string(reply, "q"), "norw");
        ck_assert(e2e_has_place(reply, "Norway"));
        json_object_put(reply);
        ck_assert_int_eq(wsc_send_text(fd, "{\"q\":\"peru\"}"), 0);
        reply = e2e_next_json(fd, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 2);
        json_object_put(reply);
        close(fd);
}
END_TEST

START_TEST(e2e_bad_json_keeps_connection)
{
        static const char *const bad[] = {"{bad",
                                          "{\"seq\":1}",
                                          "{\"q\":5}",
                                          "{\"q\":\"a\",\"seq\":-1}",
                                          "{\"q\":\"a\",\"seq\":\"x\"}",
                                          "{\"q\":\"a\"} trailing",
                                          "{\"q\":\"ita\",}",
                                          "{\"q\":\"ita\" /*c*/}",
                                          "{'q':'ita'}",
                                          "{\"q\":\"a\",\"seq\":00012}"};
        json_object *reply;
        int fd;

        harness_start(&e2e, NULL);
        fd = e2e_connect();
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                ck_assert_int_eq(wsc_send_text(fd, bad[i]), 0);
                reply = e2e_next_json(fd, 3000);
                ck_assert_str_eq(harness_json_string(reply, "type"), "error");
                ck_assert_msg(strcmp(harness_json_string(reply, "error"), "bad_request") == 0,
                              "'%s' got %s", bad[i], json_object_to_json_string(reply));
                json_object_put(reply);
        }
        reply = e2e_query(fd, "chil", 10, 5000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert(e2e_has_place(reply, "Chile"));
        json_object_put(reply);
        /* A seq that does not increase is rejected. */
        reply = e2e_query(fd, "chi", 10, 3000);
        ck_assert_str_eq(harness_json_string(reply, "error"), "bad_request");
        json_object_put(reply);
        close(fd);
}
END_TEST

START_TEST(e2e_short_and_long_queries)
{
        char message[600];
        json_object *reply, *results;
        int fd;

        harness_start(&e2e, NULL);
        fd = e2e_connect();
        reply = e2e_query(fd, "", 1, 3000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_int_eq(harness_json_int(reply, "seq"), 1);
        ck_assert(json_object_object_get_ex(reply, "results", &results));
        ck_assert_uint_eq(json_object_array_length(results), 0);
        json_object_put(reply);

        memset(message, 'a', sizeof(message));
        memcpy(message, "{\"q\":\"", 6);
        snprintf(message + 6 + 300, sizeof(message) - 306, "\",\"seq\":2}");
        ck_assert_int_eq(wsc_send_text(fd, message), 0);
        reply = e2e_next_json(fd, 3000);
        ck_assert_str_eq(harness_json_string(reply, "error"), "query_too_long");
        ck_assert_int_eq(harness_json_int(reply, "seq"), 2);
        json_object_put(reply);

        /* White space alone is shorter than min_query_chars once trimmed. */
        reply = e2e_query(fd, "   ", 3, 3000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert(json_object_object_get_ex(reply, "results", &results));
        ck_assert_uint_eq(json_object_array_length(results), 0);
        json_object_put(reply);
        close(fd);
        ck_assert_int_eq(harness_api_stat(&e2e, "requests"), 0);
}
END_TEST

START_TEST(e2e_fragments_and_ping)
{
        struct wsc_frame frame;
        json_object *reply;
        int fd;

        harness_start(&e2e, NULL);
        fd = e2e_connect();
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_TEXT, "{\"q\":\"sw", 8), 0);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_PING, "mid", 3), 0);
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_CONTINUATION, "", 0), 0);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CONTINUATION, "itz\",\"seq\":4}", 13), 0);
        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), 1);
        ck_assert_uint_eq(frame.opcode, WS_OP_PONG);
        ck_assert_str_eq((char *)frame.payload, "mid");
        wsc_frame_free(&frame);
        reply = e2e_next_json(fd, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 4);
        ck_assert(e2e_has_place(reply, "Switzerland"));
        json_object_put(reply);

        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CLOSE,
                                  "\x03\xe8"
                                  "bye",
                                  5),
                         0);
        e2e_expect_close(fd, 1000);
}
END_TEST

/* A frame that breaks the protocol and the close code it must get. */
static void e2e_expect_violation(const void *frame, size_t len, unsigned code)
{
        json_object *reply;
        int bad = e2e_connect(), good = e2e_connect();

        ck_assert_int_eq(wsc_send_raw(bad, frame, len), 0);
        e2e_expect_close(bad, code);
        /* Everyone else is still served. */
        reply = e2e_query(good, "peru", 1, 5000);
        ck_assert(e2e_has_place(reply, "Peru"));
        json_object_put(reply);
        close(good);
}

START_TEST(e2e_protocol_violations_closed)
{
        const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'};
        const uint8_t reserved_bit[] = {0xC1, 0x80, 0, 0, 0, 0};
        const uint8_t reserved_opcode[] = {0x83, 0x80, 0, 0, 0, 0};
        const uint8_t binary[] = {0x82, 0x81, 0, 0, 0, 0, 'x'};
        const uint8_t bad_utf8[] = {0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28};
        const uint8_t too_big[] = {0x81, 0xFE, 0x40, 0x00, 0, 0, 0, 0};
        const uint8_t long_ping[] = {0x89, 0xFE, 0x00, 0x7E, 0, 0, 0, 0};
        const uint8_t lone_continuation[] = {0x80, 0x80, 0, 0, 0, 0};
        const uint8_t bad_close_code[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xED};

        harness_start(&e2e, NULL);
        e2e_expect_violation(unmasked, sizeof(unmasked), 1002);
        e2e_expect_violation(reserved_bit, sizeof(reserved_bit), 1002);
        e2e_expect_violation(reserved_opcode, sizeof(reserved_opcode), 1002);
        e2e_expect_violation(binary, sizeof(binary), 1003);
        e2e_expect_violation(bad_utf8, sizeof(bad_utf8), 1007);
        e2e_expect_violation(too_big, sizeof(too_big), 1009);
        e2e_expect_violation(long_ping, sizeof(long_ping), 1002);
        e2e_expect_violation(lone_continuation, sizeof(lone_continuation), 1002);
        e2e_expect_violation(bad_close_code, sizeof(bad_close_code), 1002);
}
END_TEST

/* A query that makes the demo API misbehave and the error code the client must get. */
static void e2e_expect_upstream_error(int fd, const char *query, long long seq, const char *code)
{
        json_object *reply = e2e_query(fd, query, seq, 10000);

        ck_assert_str_eq(harness_json_string(reply, "type"), "error");
        ck_assert_msg(strcmp(harness_json_string(reply, "error"), code) == 0,
                      "'%s': expected %s, got %s", query, code, json_object_to_json_string(reply));
        ck_assert_int_eq(harness_json_int(reply, "seq"), seq);
        json_object_put(reply);
}

START_TEST(e2e_upstream_errors_reported)
{
        struct harness_options options = {
            .faults = 1, .timeout_ms = "500", .extra_api = "max_wait_ms = 1500"};
        json_object *reply;
        int fd;

        harness_start(&e2e, &options);
        fd = e2e_connect();
        e2e_expect_upstream_error(fd, "fault:500", 1, "upstream_error");
        e2e_expect_upstream_error(fd, "fault:badjson", 2, "upstream_error");
        e2e_expect_upstream_error(fd, "fault:slow:3000", 3, "upstream_timeout");
        e2e_expect_upstream_error(fd, "fault:close", 4, "upstream_error");
        e2e_expect_upstream_error(fd, "fault:big", 5, "upstream_error");
        reply = e2e_query(fd, "japa", 6, 5000);
        ck_assert(e2e_has_place(reply, "Japan"));
        json_object_put(reply);
        close(fd);
}
END_TEST

START_TEST(e2e_api_down_reported)
{
        struct harness_options options = {.extra_api = "max_wait_ms = 1000"};
        json_object *reply;
        int fd;

        harness_start(&e2e, &options);
        harness_stop(e2e.api_pid);
        e2e.api_pid = 0;
        fd = e2e_connect();
        reply = e2e_query(fd, "japa", 1, 5000);
        ck_assert_str_eq(harness_json_string(reply, "error"), "upstream_error");
        json_object_put(reply);
        close(fd);
}
END_TEST

START_TEST(e2e_worker_crash_requeues)
{
        struct harness_options options = {.faults = 1, .timeout_ms = "5000"};
        json_object *reply;
        pid_t workers[8];
        unsigned n;
        int fd;

        harness_start(&e2e, &options);
        fd = e2e_connect();
        /* Wait for both workers, then kill them while one is inside the slow call. */
        for (int waited = 0; harness_children(e2e.daemon_pid, workers, 8) < 2 && waited < 3000;
             waited += 50)
                e2e_sleep_ms(50);
        ck_assert_int_eq(wsc_send_text(fd, "{\"q\":\"fault:slow:1000\",\"seq\":1}"), 0);
        e2e_sleep_ms(300);
        n = harness_children(e2e.daemon_pid, workers, 8);
        ck_assert_uint_eq(n, 2);
        for (unsigned i = 0; i < n; i++)
                ck_assert_int_eq(kill(workers[i], SIGKILL), 0);

        /* The daemon restarts them and the query is called again. */
        reply = e2e_next_json(fd, 10000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_int_eq(harness_json_int(reply, "seq"), 1);
        json_object_put(reply);
        reply = e2e_query(fd, "japa", 2, 5000);
        ck_assert(e2e_has_place(reply, "Japan"));
        json_object_put(reply);
        close(fd);
        ck_assert_int_eq(kill(e2e.daemon_pid, 0), 0);
}
END_TEST

START_TEST(e2e_seq_beyond_safe_integer)
{
        json_object *reply;
        int fd;

        harness_start(&e2e, NULL);
        fd = e2e_connect();
        reply = e2e_query(fd, "peru", 9007199254740992LL, 3000);
        ck_assert_str_eq(harness_json_string(reply, "error"), "bad_request");
        json_object_put(reply);
        ck_assert_int_eq(wsc_send_text(fd, "{\"q\":\"peru\",\"seq\":18446744073709551615}"), 0);
        reply = e2e_next_json(fd, 3000);
        ck_assert_str_eq(harness_json_string(reply, "error"), "bad_request");
        json_object_put(reply);
        reply = e2e_query(fd, "peru", 9007199254740991LL, 5000);
        ck_assert_str_eq(harness_json_string(reply, "type"), "results");
        ck_assert_int_eq(harness_json_int(reply, "seq"), 9007199254740991LL);
        json_object_put(reply);
        close(fd);
}
END_TEST

/*
 * Kills every worker of the daemon with SIGKILL, once both have started: the daemon listens
 * before it starts them, so an open port does not mean they run. Returns how many it killed.
 */
static unsigned e2e_kill_workers(void)
{
        pid_t workers[8];
        unsigned n = 0;

        for (int waited = 0;
             (n = harness_children(e2e.daemon_pid, workers, 8)) < 2 && waited < 5000; waited += 50)
                e2e_sleep_ms(50);

        for (unsigned i = 0; i < n; i++)
                ck_assert_int_eq(kill(workers[i], SIGKILL), 0);
        return n;
}

/* Workers that die while sleeping for a token must not take the wake-ups of waiting queries
 * with them. */
START_TEST(e2e_worker_killed_waiting_token)
{
        struct harness_options options = {
            .api_rate = "2", .api_burst = "2", .rate = "0.5", .burst = "1", .workers = "2"};
        json_object *reply;
        pid_t workers[8];
        int a, b;

        harness_start(&e2e, &options);
        for (int waited = 0; harness_children(e2e.daemon_pid, workers, 8) < 2 && waited < 3000;
             waited += 50)
                e2e_sleep_ms(50);
        a = e2e_connect();
        b = e2e_connect();
        /* The bucket starts empty, so both queries wait about 2 s for a token. */
        ck_assert_int_eq(wsc_send_text(a, "{\"q\":\"japa\",\"seq\":1}"), 0);
        ck_assert_int_eq(wsc_send_text(b, "{\"q\":\"peru\",\"seq\":1}"), 0);
        e2e_sleep_ms(500);
        ck_assert_uint_eq(e2e_kill_workers(), 2);

        reply = e2e_next_json(a, 15000);
        ck_assert(e2e_has_place(reply, "Japan"));
        json_object_put(reply);
        reply = e2e_next_json(b, 15000);
        ck_assert(e2e_has_place(reply, "Peru"));
        json_object_put(reply);
        close(a);
        close(b);
        ck_assert_int_eq(harness_api_stat(&e2e, "violations"), 0);
}
END_TEST

/* Runs incsearchd with CONF_PATH to its exit and returns its log. */
static void e2e_run_to_exit(const char *conf_path, int *status, char *log, size_t len)
{
        char log_path[160];
        char *argv[] = {"incsearchd", "-c", (char *)conf_path, NULL};
        pid_t pid;
        FILE *f;
        size_t n;

        snprintf(log_path, sizeof(log_path), "%s/second.log", e2e.dir);
        pid = harness_spawn("incsearchd", argv, log_path);
        for (int waited = 0; waitpid(pid, status, WNOHANG) != pid; waited += 20) {
                ck_assert_msg(waited < 5000, "the second incsearchd did not exit");
                e2e_sleep_ms(20);
        }
        f = fopen(log_path, "r");
        ck_assert_ptr_nonnull(f);
        n = fread(log, 1, len - 1, f);
        log[n] = '\0';
        fclose(f);
        unlink(log_path);
}

START_TEST(e2e_second_instance_harmless)
{
        char other_conf[200], command[600], log[4096];
        json_object *reply;
        int status, fd;

        harness_start(&e2e, NULL);

        /* Same port: listening fails before the shared memory is touched. */
        e2e_run_to_exit(e2e.conf_path, &status, log, sizeof(log));
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
        ck_assert_msg(strstr(log, "cannot listen") != NULL, "got: %s", log);

        /* Another port, same control socket: the live socket is not taken over. */
        snprintf(other_conf, sizeof(other_conf), "%s/other.conf", e2e.dir);
        snprintf(command, sizeof(command), "sed 's/^listen = .*/listen = 127.0.0.1:%d/' %s > %s",
                 harness_free_port(), e2e.conf_path, other_conf);
        ck_assert_int_eq(system(command), 0);
        e2e_run_to_exit(other_conf, &status, log, sizeof(log));
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
        ck_assert_msg(strstr(log, "is in use by a running incsearchd") != NULL, "got: %s", log);
        ck_assert_int_eq(access(e2e.control_path, F_OK), 0);

        /* Another port and control socket, same shm_name: the running daemon's segment is left
         * alone. */
        snprintf(command, sizeof(command),
                 "sed -i 's|^control_socket = .*|control_socket = %s/other.sock|' %s", e2e.dir,
                 other_conf);
        ck_assert_int_eq(system(command), 0);
        e2e_run_to_exit(other_conf, &status, log, sizeof(log));
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
        ck_assert_msg(strstr(log, "is in use by incsearchd pid") != NULL, "got: %s", log);

        /* Restarted workers can still attach to the first daemon's segment. */
        ck_assert_uint_eq(e2e_kill_workers(), 2);
        fd = e2e_connect();
        reply = e2e_query(fd, "peru", 1, 10000);
        ck_assert(e2e_has_place(reply, "Peru"));
        json_object_put(reply);
        close(fd);
}
END_TEST

/* Restarted workers run with the daemon's configuration, not with later edits of the file. */
START_TEST(e2e_workers_ignore_edited_config)
{
        json_object *reply;
        FILE *f;
        int fd;

        harness_start(&e2e, NULL);
        f = fopen(e2e.conf_path, "a");
        ck_assert_ptr_nonnull(f);
        fputs("bogus = 1\n", f);
        fclose(f);
        ck_assert_uint_eq(e2e_kill_workers(), 2);
        fd = e2e_connect();
        reply = e2e_query(fd, "peru", 1, 10000);
        ck_assert(e2e_has_place(reply, "Peru"));
        json_object_put(reply);
        close(fd);
}
END_TEST

/* Frames that arrive in one read: only the newest query is called, and it is answered. */
START_TEST(e2e_batch_calls_latest)
{
        static const char *const words[] = {"s", "sw", "swi", "swit", "switz"};
        uint8_t frames[2048];
        size_t used = 0;
        json_object *reply;
        int fd;

        harness_start(&e2e, NULL);
        fd = e2e_connect();
        for (unsigned round = 0; round < 8; round++) {
                for (unsigned i = 0; i < 5; i++) {
                        static const uint8_t mask[4] = {1, 2, 3, 4};
                        char text[64];
                        int n = snprintf(text, sizeof(text), "{\"q\":\"%s\",\"seq\":%u}", words[i],
                                         round * 5 + i + 1);

                        used += ws_header_encode(frames + used, 1, WS_OP_TEXT, (uint64_t)n, mask);
                        memcpy(frames + used, text, (size_t)n);
                        ws_mask(frames + used, (size_t)n, mask, 0);
                        used += (size_t)n;
                }
        }
        ck_assert_int_eq(wsc_send_raw(fd, frames, used), 0);
        reply = e2e_next_json(fd, 5000);
        ck_assert_int_eq(harness_json_int(reply, "seq"), 40);
        ck_assert(e2e_has_place(reply, "Switzerland"));
        json_object_put(reply);
        close(fd);
        /* 40 queries in one write; a read may split them, but not into many batches. */
        ck_assert_int_le(harness_api_stat(&e2e, "requests"), 3);
}
END_TEST

START_TEST(e2e_invalid_config_exit)
{
        char dir[64], conf[128], log[128], text[4096];
        char *argv[] = {"incsearchd", "-c", conf, NULL};
        int status, fd;
        ssize_t n;
        FILE *f;
        pid_t pid;

        harness_make_dir(dir, sizeof(dir), "conf");
        snprintf(conf, sizeof(conf), "%s/bad.conf", dir);
        snprintf(log, sizeof(log), "%s/log", dir);
        f = fopen(conf, "w");
        ck_assert_ptr_nonnull(f);
        fputs("[api]\nurl = http://127.0.0.1:1/{q}\nrate = 5\nburst = lots\n", f);
        fclose(f);
        pid = harness_spawn("incsearchd", argv, log);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 1);
        fd = open(log, O_RDONLY);
        n = read(fd, text, sizeof(text) - 1);
        close(fd);
        ck_assert_int_gt(n, 0);
        text[n] = '\0';
        ck_assert_msg(strstr(text, ":4: invalid value 'lots' for burst") != NULL, "got: %s", text);
        unlink(conf);
        unlink(log);
        rmdir(dir);
}
END_TEST

Suite *e2e_suite(void)
{
        Suite *s = suite_create("e2e");
        TCase *tc = tcase_create("daemon");

        tcase_add_checked_fixture(tc, NULL, e2e_teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, e2e_typing_clients_answered);
        tcase_add_test(tc, e2e_slow_rate_latest_wins);
        tcase_add_test(tc, e2e_page_served);
        tcase_add_test(tc, e2e_handshake_checks);
        tcase_add_test(tc, e2e_first_frame_with_handshake);
        tcase_add_test(tc, e2e_plain_text_numbered);
        tcase_add_test(tc, e2e_bad_json_keeps_connection);
        tcase_add_test(tc, e2e_short_and_long_queries);
        tcase_add_test(tc, e2e_fragments_and_ping);
        tcase_add_test(tc, e2e_protocol_violations_closed);
        tcase_add_test(tc, e2e_upstream_errors_reported);
        tcase_add_test(tc, e2e_api_down_reported);
        tcase_add_test(tc, e2e_worker_crash_requeues);
        tcase_add_test(tc, e2e_invalid_config_exit);
        tcase_add_test(tc, e2e_seq_beyond_safe_integer);
        tcase_add_test(tc, e2e_batch_calls_latest);
        tcase_add_test(tc, e2e_worker_killed_waiting_token);
        tcase_add_test(tc, e2e_second_instance_harmless);
        tcase_add_test(tc, e2e_workers_ignore_edited_config);
        suite_add_tcase(s, tc);
        return s;
}
