/*
 * RFC 6455 conformance of the running daemon: exact bytes in, exact bytes or close codes out.
 * The frame parser's own cases are in check_ws.c; these check what reaches the wire.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "suites.h"
#include "ws.h"
#include "wsclient.h"

static struct harness proto;

#define PROTO_HANDSHAKE                                                                            \
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"                            \
        "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"       \
        "Sec-WebSocket-Version: 13\r\n"

static void proto_teardown(void)
{
        harness_stop_all(&proto);
}

static int proto_connect(void)
{
        int fd = wsc_connect(proto.port);

        ck_assert_msg(fd >= 0, "WebSocket handshake with 127.0.0.1:%d failed", proto.port);
        return fd;
}

/* Reads frames until one of OPCODE arrives; fails the test on timeout or end of connection. */
static void proto_expect(int fd, unsigned opcode, struct wsc_frame *frame)
{
        for (;;) {
                int r = wsc_recv(fd, frame, 5000);

                ck_assert_msg(r == 1, "no frame with opcode %u (%s)", opcode,
                              r == 0 ? "timeout" : "connection closed");
                if (frame->opcode == opcode)
                        return;
                wsc_frame_free(frame);
        }
}

/* Expects a close frame with CODE, then the end of the TCP connection. */
static void proto_expect_close(int fd, unsigned code)
{
        struct wsc_frame frame;

        proto_expect(fd, WS_OP_CLOSE, &frame);
        ck_assert_uint_ge(frame.len, 2);
        ck_assert_uint_eq((unsigned)frame.payload[0] << 8 | frame.payload[1], code);
        wsc_frame_free(&frame);
        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), -1);
        close(fd);
}

START_TEST(proto_handshake_in_small_reads)
{
        const char *request = PROTO_HANDSHAKE "\r\n";
        char response[1024];
        size_t used = 0;
        int fd = -1;

        harness_start(&proto, NULL);
        fd = wsc_connect_raw(proto.port, "", response, 0);
        ck_assert_int_ge(fd, 0);
        /* Three bytes per write, each after a pause, so the daemon reads them separately. */
        for (size_t i = 0; i < strlen(request); i += 3) {
                size_t n = strlen(request + i) < 3 ? strlen(request + i) : 3;

                ck_assert_int_eq(write(fd, request + i, n), (ssize_t)n);
                usleep(2000);
        }
        while (used < sizeof(response) - 1 && strstr(response, "\r\n\r\n") == NULL) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                ssize_t n;

                ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
                n = read(fd, response + used, sizeof(response) - 1 - used);
                ck_assert_int_gt(n, 0);
                used += (size_t)n;
                response[used] = '\0';
        }
        ck_assert_msg(strncmp(response, "HTTP/1.1 101 ", 13) == 0, "got %s", response);
        ck_assert_ptr_nonnull(
            strstr(response, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        close(fd);
}
END_TEST

START_TEST(proto_extensions_declined)
{
        char response[1024];
        int fd;

        harness_start(&proto, NULL);
        fd = wsc_connect_raw(proto.port,
                             PROTO_HANDSHAKE "Sec-WebSocket-Extensions: permessage-deflate; "
                                             "client_max_window_bits\r\n"
                                             "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n",
                             response, sizeof(response));
        ck_assert_int_ge(fd, 0);
        ck_assert_msg(strncmp(response, "HTTP/1.1 101 ", 13) == 0, "got %s", response);
        ck_assert_ptr_null(strstr(response, "Sec-WebSocket-Extensions"));
        ck_assert_ptr_null(strstr(response, "Sec-WebSocket-Protocol"));
        /* Without the extension, a frame with RSV1 set is still an error. */
        ck_assert_int_eq(wsc_send_raw(fd, "\xC1\x80\0\0\0\0", 6), 0);
        proto_expect_close(fd, 1002);
}
END_TEST

/* Sends REQUEST and checks that the response starts with STATUS. */
static void proto_expect_status(const char *request, const char *status)
{
        char response[2048];

        ck_assert_int_gt(harness_http_raw(proto.port, request, response, sizeof(response)), 0);
        ck_assert_msg(strncmp(response, status, strlen(status)) == 0, "expected %s, got %s", status,
                      response);
}

START_TEST(proto_handshake_faults)
{
        char big[12000];

        harness_start(&proto, NULL);
        proto_expect_status("POST /ws HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 405 ");
        proto_expect_status("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n",
                            "HTTP/1.1 400 ");
        proto_expect_status(PROTO_HANDSHAKE "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                            "HTTP/1.1 400 ");
        proto_expect_status("GET /ws HTTP/1.1\r\nHost : a\r\n\r\n", "HTTP/1.1 400 ");
        /* A head over max_header_bytes (8192 by default) gets 431. */
        snprintf(big, sizeof(big), "GET /ws HTTP/1.1\r\nHost: a\r\nX-Filler: %09000d\r\n\r\n", 0);
        proto_expect_status(big, "HTTP/1.1 431 ");
}
END_TEST

START_TEST(proto_lengths_16_and_64_bit)
{
        static const uint8_t mask[4] = {1, 2, 3, 4};
        uint8_t frame[400];
        char text[300];
        struct wsc_frame reply;
        size_t n;
        int fd;

        harness_start(&proto, NULL);
        fd = proto_connect();
        /* A 300-byte query in the 16-bit form gets query_too_long, so it was read whole. */
        memset(text, 'a', sizeof(text));
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_TEXT, text, sizeof(text)), 0);
        proto_expect(fd, WS_OP_TEXT, &reply);
        ck_assert_ptr_nonnull(strstr((char *)reply.payload, "query_too_long"));
        wsc_frame_free(&reply);
        /* The 64-bit form for a short payload is legal, if not minimal. */
        frame[0] = 0x81;
        frame[1] = 0xFF;
        memset(frame + 2, 0, 8);
        frame[9] = 4;
        memcpy(frame + 10, mask, 4);
        memcpy(frame + 14, "peru", 4);
        ws_mask(frame + 14, 4, mask, 0);
        n = 18;
        ck_assert_int_eq(wsc_send_raw(fd, frame, n), 0);
        proto_expect(fd, WS_OP_TEXT, &reply);
        ck_assert_ptr_nonnull(strstr((char *)reply.payload, "\"q\":\"peru\""));
        wsc_frame_free(&reply);
        close(fd);
}
END_TEST

START_TEST(proto_unsolicited_pong_ignored)
{
        struct wsc_frame frame;
        int fd;

        harness_start(&proto, NULL);
        fd = proto_connect();
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_PONG, "hello", 5), 0);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_PING, "p1", 2), 0);
        /* The first frame back is the pong for the ping: the pong got no answer. */
        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), 1);
        ck_assert_uint_eq(frame.opcode, WS_OP_PONG);
        ck_assert_str_eq((char *)frame.payload, "p1");
        wsc_frame_free(&frame);
        close(fd);
}
END_TEST

START_TEST(proto_utf8_split_across_fragments)
{
        struct wsc_frame frame;
        int fd;

        harness_start(&proto, NULL);
        fd = proto_connect();
        /* "zürich" with the ü split between two fragments, and an empty fragment between. */
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_TEXT, "z\xC3", 2), 0);
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_CONTINUATION, "", 0), 0);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CONTINUATION, "\xBCrich", 5), 0);
        proto_expect(fd, WS_OP_TEXT, &frame);
        ck_assert_ptr_nonnull(strstr((char *)frame.payload, "\"q\":\"z\xC3\xBCrich\""));
        wsc_frame_free(&frame);
        /* An invalid sequence split the same way closes with 1007. */
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_TEXT, "z\xC3", 2), 0);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CONTINUATION, "(", 1), 0);
        proto_expect_close(fd, 1007);
}
END_TEST

START_TEST(proto_close_codes_echoed)
{
        static const unsigned valid[] = {1000, 1001, 1003, 1007, 1011, 3000, 4999};
        static const unsigned invalid[] = {0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535};

        harness_start(&proto, NULL);
        for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
                uint8_t payload[2] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i]};
                int fd = proto_connect();

                ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CLOSE, payload, 2), 0);
                proto_expect_close(fd, valid[i]);
        }
        for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
                uint8_t payload[2] = {(uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i]};
                int fd = proto_connect();

                ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CLOSE, payload, 2), 0);
                proto_expect_close(fd, 1002);
        }
}
END_TEST

START_TEST(proto_empty_close_and_data_after)
{
        struct wsc_frame frame;
        int fd;

        harness_start(&proto, NULL);
        fd = proto_connect();
        /* A close without a code, then a query in the same packet: the query is ignored. */
        {
                uint8_t both[64];
                size_t n = ws_header_encode(both, 1, WS_OP_CLOSE, 0, (const uint8_t *)"abcd");

                n += ws_header_encode(both + n, 1, WS_OP_TEXT, 4, (const uint8_t *)"\0\0\0\0");
                memcpy(both + n, "peru", 4);
                ck_assert_int_eq(wsc_send_raw(fd, both, n + 4), 0);
        }
        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), 1);
        ck_assert_uint_eq(frame.opcode, WS_OP_CLOSE);
        ck_assert_uint_eq(frame.len, 0);
        wsc_frame_free(&frame);
        ck_assert_int_eq(wsc_recv(fd, &frame, 3000), -1);
        close(fd);
}
END_TEST

START_TEST(proto_fragment_violations)
{
        int fd;

        harness_start(&proto, NULL);
        fd = proto_connect();
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_TEXT, "a", 1), 0);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_TEXT, "b", 1), 0);
        proto_expect_close(fd, 1002);
        fd = proto_connect();
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_PING, "a", 1), 0);
        proto_expect_close(fd, 1002);
        fd = proto_connect();
        ck_assert_int_eq(wsc_send_raw(fd, "\x81\xFF\x80\0\0\0\0\0\0\0\0\0\0\0", 14), 0);
        proto_expect_close(fd, 1002);
}
END_TEST

START_TEST(proto_message_limit_across_fragments)
{
        struct harness_options options = {.extra_server = "max_message_bytes = 100\n"};
        char chunk[60];
        int fd;

        harness_start(&proto, &options);
        memset(chunk, 'a', sizeof(chunk));
        fd = proto_connect();
        ck_assert_int_eq(wsc_send(fd, 0, WS_OP_TEXT, chunk, 60), 0);
        ck_assert_int_eq(wsc_send(fd, 1, WS_OP_CONTINUATION, chunk, 41), 0);
        proto_expect_close(fd, 1009);
}
END_TEST

Suite *ws_protocol_suite(void)
{
        Suite *s = suite_create("ws_protocol");
        TCase *tc = tcase_create("daemon");

        tcase_set_timeout(tc, 30);
        tcase_add_checked_fixture(tc, NULL, proto_teardown);
        tcase_add_test(tc, proto_handshake_in_small_reads);
        tcase_add_test(tc, proto_extensions_declined);
        tcase_add_test(tc, proto_handshake_faults);
        tcase_add_test(tc, proto_lengths_16_and_64_bit);
        tcase_add_test(tc, proto_unsolicited_pong_ignored);
        tcase_add_test(tc, proto_utf8_split_across_fragments);
        tcase_add_test(tc, proto_close_codes_echoed);
        tcase_add_test(tc, proto_empty_close_and_data_after);
        tcase_add_test(tc, proto_fragment_violations);
        tcase_add_test(tc, proto_message_limit_across_fragments);
        suite_add_tcase(s, tc);
        return s;
}
