#include <stdlib.h>
#include <string.h>

#include "suites.h"
#include "ws.h"

START_TEST(ws_accept_rfc_sample)
{
        const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
        char accept[WS_ACCEPT_LEN + 1];

        ck_assert_int_eq(ws_accept_key(key, strlen(key), accept), 0);
        ck_assert_str_eq(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(ws_key_validation)
{
        ck_assert_int_eq(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24), 1);
        ck_assert_int_eq(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23), 0);
        ck_assert_int_eq(ws_key_valid("dGhlIHNhbXBsZSBub25jZ===", 24), 0);
        ck_assert_int_eq(ws_key_valid("dGhlIHNhbXBsZSBub25j!Q==", 24), 0);
        ck_assert_int_eq(ws_key_valid("", 0), 0);
}
END_TEST

/* Payload lengths on each side of the 7-, 16- and 64-bit forms. */
static const uint64_t ws_lengths[] = {
    0, 1, 125, 126, 127, 65535, 65536, 1ULL << 32, (1ULL << 63) - 1};
static const size_t ws_header_lengths[] = {2, 2, 2, 4, 4, 4, 10, 10, 10};

START_TEST(ws_header_round_trip)
{
        static const uint8_t mask[4] = {0xA1, 0xB2, 0xC3, 0xD4};
        uint64_t len = ws_lengths[_i];

        for (int masked = 0; masked <= 1; masked++) {
                uint8_t buf[WS_MAX_HEADER];
                struct ws_header h;
                size_t n = ws_header_encode(buf, 1, WS_OP_TEXT, len, masked ? mask : NULL);

                ck_assert_uint_eq(n, ws_header_lengths[_i] + (masked ? 4 : 0));
                ck_assert_int_eq(ws_header_decode(buf, n, &h), (int)n);
                ck_assert_uint_eq(h.payload_len, len);
                ck_assert_uint_eq(h.fin, 1);
                ck_assert_uint_eq(h.opcode, WS_OP_TEXT);
                ck_assert_uint_eq(h.masked, (unsigned)masked);
                ck_assert_uint_eq(h.rsv, 0);
                if (masked)
                        ck_assert_int_eq(memcmp(h.mask, mask, 4), 0);
                /* Every shorter prefix returns 0, meaning more bytes are needed. */
                for (size_t cut = 0; cut < n; cut++)
                        ck_assert_int_eq(ws_header_decode(buf, cut, &h), 0);
        }
}
END_TEST

START_TEST(ws_decode_rfc_examples)
{
        /* RFC 6455, section 5.7: a masked "Hello" and an unmasked 256-byte binary header. */
        uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
        uint8_t binary[] = {0x82, 0x7E, 0x01, 0x00};
        struct ws_header h;

        ck_assert_int_eq(ws_header_decode(hello, sizeof(hello), &h), 6);
        ck_assert_uint_eq(h.payload_len, 5);
        ws_mask(hello + 6, 5, h.mask, 0);
        ck_assert_int_eq(memcmp(hello + 6, "Hello", 5), 0);

        ck_assert_int_eq(ws_header_decode(binary, sizeof(binary), &h), 4);
        ck_assert_uint_eq(h.opcode, WS_OP_BINARY);
        ck_assert_uint_eq(h.masked, 0);
        ck_assert_uint_eq(h.payload_len, 256);
}
END_TEST

START_TEST(ws_decode_flags)
{
        uint8_t frame[] = {0x70 | WS_OP_PING, 0x00};
        struct ws_header h;

        ck_assert_int_eq(ws_header_decode(frame, sizeof(frame), &h), 2);
        ck_assert_uint_eq(h.fin, 0);
        ck_assert_uint_eq(h.rsv, 7);
        ck_assert_uint_eq(h.opcode, WS_OP_PING);
}
END_TEST

START_TEST(ws_decode_rejects_top_bit)
{
        uint8_t frame[] = {0x81, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1};
        struct ws_header h;

        ck_assert_int_eq(ws_header_decode(frame, sizeof(frame), &h), -1);
}
END_TEST

START_TEST(ws_mask_split_offsets)
{
        static const uint8_t mask[4] = {1, 2, 3, 4};
        uint8_t whole[11] = "hello world", split[11] = "hello world";

        ws_mask(whole, sizeof(whole), mask, 0);
        ws_mask(split, 3, mask, 0);
        ws_mask(split + 3, 8, mask, 3);
        ck_assert_int_eq(memcmp(whole, split, sizeof(whole)), 0);
        ws_mask(whole, sizeof(whole), mask, 0);
        ck_assert_int_eq(memcmp(whole, "hello world", 11), 0);
}
END_TEST

static uint32_t ws_utf8(const char *s)
{
        return utf8_feed(UTF8_ACCEPT, (const uint8_t *)s, strlen(s));
}

START_TEST(ws_utf8_valid_text)
{
        ck_assert_uint_eq(ws_utf8("plain"), UTF8_ACCEPT);
        ck_assert_uint_eq(ws_utf8("Z\xc3\xbcrich"), UTF8_ACCEPT);
        ck_assert_uint_eq(ws_utf8("\xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"), UTF8_ACCEPT);
}
END_TEST

START_TEST(ws_utf8_invalid_text)
{
        ck_assert_uint_eq(ws_utf8("\xc0\xaf"), UTF8_REJECT);         /* overlong */
        ck_assert_uint_eq(ws_utf8("\xed\xa0\x80"), UTF8_REJECT);     /* surrogate */
        ck_assert_uint_eq(ws_utf8("\xf4\x90\x80\x80"), UTF8_REJECT); /* above U+10FFFF */
        ck_assert_uint_eq(ws_utf8("\x80"), UTF8_REJECT);
        ck_assert_uint_eq(ws_utf8("\xff"), UTF8_REJECT);
        ck_assert_uint_ne(ws_utf8("\xe2\x82"), UTF8_ACCEPT); /* truncated */
}
END_TEST

START_TEST(ws_utf8_split_code_point)
{
        const uint8_t euro[] = {0xe2, 0x82, 0xac};
        uint32_t state = utf8_feed(UTF8_ACCEPT, euro, 1);

        ck_assert_uint_ne(state, UTF8_REJECT);
        state = utf8_feed(state, euro + 1, 1);
        ck_assert_uint_ne(state, UTF8_ACCEPT);
        state = utf8_feed(state, euro + 2, 1);
        ck_assert_uint_eq(state, UTF8_ACCEPT);
}
END_TEST

START_TEST(ws_close_codes)
{
        ck_assert_int_eq(ws_close_code_valid(1000), 1);
        ck_assert_int_eq(ws_close_code_valid(1003), 1);
        ck_assert_int_eq(ws_close_code_valid(1007), 1);
        ck_assert_int_eq(ws_close_code_valid(3000), 1);
        ck_assert_int_eq(ws_close_code_valid(4999), 1);
        ck_assert_int_eq(ws_close_code_valid(999), 0);
        ck_assert_int_eq(ws_close_code_valid(1004), 0);
        ck_assert_int_eq(ws_close_code_valid(1005), 0);
        ck_assert_int_eq(ws_close_code_valid(1006), 0);
        ck_assert_int_eq(ws_close_code_valid(1015), 0);
        ck_assert_int_eq(ws_close_code_valid(2999), 0);
        ck_assert_int_eq(ws_close_code_valid(5000), 0);
}
END_TEST

/* Appends one frame with MASK_KEY applied (unless MASKED is 0) to BUF at *LEN. */
static void ws_put(uint8_t *buf, size_t *len, unsigned fin, unsigned opcode, const void *payload,
                   size_t n)
{
        static const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};

        *len += ws_header_encode(buf + *len, fin, opcode, n, mask);
        memcpy(buf + *len, payload, n);
        ws_mask(buf + *len, n, mask, 0);
        *len += n;
}

/* What the parser returned for one stream: the kinds in order and the close code. */
struct ws_run {
        int kinds[16];
        size_t lens[16];
        unsigned count;
        unsigned close_code;
        size_t consumed;
        int ended; /* an error or a close ended the stream */
};

/* Parses as much of BUF[0..LEN) as is complete, from RUN->consumed on, the way client.c does. */
static void ws_run_feed(struct ws_parser *parser, uint8_t *buf, size_t len, struct ws_run *run)
{
        while (run->count < 16 && !run->ended) {
                struct ws_frame frame;
                enum ws_frame_kind kind =
                    ws_parse(parser, buf + run->consumed, len - run->consumed, &frame);

                if (kind == WS_FRAME_MORE)
                        return;
                run->kinds[run->count] = kind;
                run->lens[run->count++] = frame.len;
                if (kind == WS_FRAME_ERROR || kind == WS_FRAME_CLOSE) {
                        run->close_code = parser->close_code;
                        run->ended = 1;
                        return;
                }
                run->consumed += frame.size;
        }
}

/* Runs STREAM whole, then split in two at every offset, then one byte at a time. */
static void ws_run_all_ways(const uint8_t *stream, size_t len, uint32_t max, struct ws_run *whole)
{
        uint8_t *buf = malloc(len + 1);

        ck_assert_ptr_nonnull(buf);
        for (size_t cut = 0; cut <= len + 1; cut++) {
                struct ws_parser parser;
                struct ws_run run = {.count = 0};

                memcpy(buf, stream, len);
                ws_parser_init(&parser, max);
                if (cut == len + 1) {
                        for (size_t n = 1; n <= len; n++) /* one byte at a time */
                                ws_run_feed(&parser, buf, n, &run);
                } else {
                        ws_run_feed(&parser, buf, cut, &run);
                        ws_run_feed(&parser, buf, len, &run);
                }
                if (cut == 0) {
                        *whole = run;
                        continue;
                }
                ck_assert_uint_eq(run.count, whole->count);
                ck_assert_int_eq(memcmp(run.kinds, whole->kinds, sizeof(run.kinds)), 0);
                ck_assert_uint_eq(run.close_code, whole->close_code);
        }
        free(buf);
}

START_TEST(ws_parse_fragments_and_ping)
{
        uint8_t stream[256];
        size_t len = 0;
        struct ws_run run;

        ws_put(stream, &len, 0, WS_OP_TEXT, "{\"q\":\"s", 7);
        ws_put(stream, &len, 1, WS_OP_PING, "mid", 3);
        ws_put(stream, &len, 0, WS_OP_CONTINUATION, "", 0);
        ws_put(stream, &len, 1, WS_OP_PONG, "unsolicited", 11);
        ws_put(stream, &len, 1, WS_OP_CONTINUATION, "w\"}", 3);
        ws_put(stream, &len, 1, WS_OP_TEXT, "", 0);
        ws_run_all_ways(stream, len, 1024, &run);
        ck_assert_uint_eq(run.count, 6);
        ck_assert_int_eq(run.kinds[0], WS_FRAME_TEXT);
        ck_assert_int_eq(run.kinds[1], WS_FRAME_PING);
        ck_assert_uint_eq(run.lens[1], 3);
        ck_assert_int_eq(run.kinds[2], WS_FRAME_TEXT);
        ck_assert_int_eq(run.kinds[3], WS_FRAME_PONG);
        ck_assert_int_eq(run.kinds[4], WS_FRAME_TEXT);
        ck_assert_int_eq(run.kinds[5], WS_FRAME_TEXT);
        ck_assert_uint_eq(run.consumed, len);
}
END_TEST

START_TEST(ws_parse_message_flags)
{
        uint8_t stream[64];
        size_t len = 0;
        struct ws_parser parser;
        struct ws_frame frame;

        ws_put(stream, &len, 0, WS_OP_TEXT, "ab", 2);
        ws_put(stream, &len, 1, WS_OP_CONTINUATION, "c", 1);
        ws_parser_init(&parser, 64);
        ck_assert_int_eq(ws_parse(&parser, stream, len, &frame), WS_FRAME_TEXT);
        ck_assert_uint_eq(frame.message_start, 1);
        ck_assert_uint_eq(frame.message_end, 0);
        ck_assert_int_eq(memcmp(frame.payload, "ab", 2), 0);
        ck_assert_uint_eq(parser.message_len, 2);
        ck_assert_int_eq(ws_parse(&parser, stream + frame.size, len - frame.size, &frame),
                         WS_FRAME_TEXT);
        ck_assert_uint_eq(frame.message_start, 0);
        ck_assert_uint_eq(frame.message_end, 1);
        ck_assert_uint_eq(frame.payload[0], 'c');
        ck_assert_uint_eq(parser.message_len, 0);
}
END_TEST

/* One stream that must fail, and the close code it must fail with. */
struct ws_bad_case {
        const char *name;
        uint8_t bytes[32];
        size_t len;
        unsigned code;
};

#define WS_MASK0 0x80 /* mask bit with the all-zero key that follows */

static const struct ws_bad_case ws_bad_cases[] = {
    {"unmasked", {0x81, 0x02, 'h', 'i'}, 4, 1002},
    {"rsv1", {0xC1, WS_MASK0, 0, 0, 0, 0}, 6, 1002},
    {"rsv3", {0x91, WS_MASK0, 0, 0, 0, 0}, 6, 1002},
    {"opcode 3", {0x83, WS_MASK0, 0, 0, 0, 0}, 6, 1002},
    {"opcode 0xB", {0x8B, WS_MASK0, 0, 0, 0, 0}, 6, 1002},
    {"binary", {0x82, WS_MASK0 | 1, 0, 0, 0, 0, 'x'}, 7, 1003},
    {"64-bit top bit", {0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 14, 1002},
    {"ping of 126", {0x89, 0xFE, 0x00, 0x7E, 0, 0, 0, 0}, 8, 1002},
    {"fragmented ping", {0x09, WS_MASK0, 0, 0, 0, 0}, 6, 1002},
    {"lone continuation", {0x80, WS_MASK0, 0, 0, 0, 0}, 6, 1002},
    {"text inside message",
     {0x01, WS_MASK0 | 1, 0, 0, 0, 0, 'a', 0x81, WS_MASK0 | 1, 0, 0, 0, 0, 'b'},
     14,
     1002},
    {"invalid UTF-8", {0x81, WS_MASK0 | 2, 0, 0, 0, 0, 0xC3, 0x28}, 8, 1007},
    {"surrogate", {0x81, WS_MASK0 | 3, 0, 0, 0, 0, 0xED, 0xA0, 0x80}, 9, 1007},
    {"ends inside a character", {0x81, WS_MASK0 | 1, 0, 0, 0, 0, 0xC3}, 7, 1007},
    {"over the limit in one frame", {0x81, 0xFE, 0x00, 0x41, 0, 0, 0, 0}, 8, 1009},
    {"over the limit in 64 bits", {0x81, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, 14, 1009},
    {"close of 1 byte", {0x88, WS_MASK0 | 1, 0, 0, 0, 0, 0x03}, 7, 1002},
    {"close 999", {0x88, WS_MASK0 | 2, 0, 0, 0, 0, 0x03, 0xE7}, 8, 1002},
    {"close 1004", {0x88, WS_MASK0 | 2, 0, 0, 0, 0, 0x03, 0xEC}, 8, 1002},
    {"close 1005", {0x88, WS_MASK0 | 2, 0, 0, 0, 0, 0x03, 0xED}, 8, 1002},
    {"close 1006", {0x88, WS_MASK0 | 2, 0, 0, 0, 0, 0x03, 0xEE}, 8, 1002},
    {"close 1015", {0x88, WS_MASK0 | 2, 0, 0, 0, 0, 0x03, 0xF7}, 8, 1002},
    {"close 2999", {0x88, WS_MASK0 | 2, 0, 0, 0, 0, 0x0B, 0xB7}, 8, 1002},
    {"close 5000", {0x88, WS_MASK0 | 2, 0, 0, 0, 0, 0x13, 0x88}, 8, 1002},
    {"close reason not UTF-8", {0x88, WS_MASK0 | 3, 0, 0, 0, 0, 0x03, 0xE8, 0xFF}, 9, 1007},
};

START_TEST(ws_parse_rejects)
{
        const struct ws_bad_case *c = &ws_bad_cases[_i];
        struct ws_run run;

        /* max_message_bytes 64, so that the 1009 cases stay short. */
        ws_run_all_ways(c->bytes, c->len, 64, &run);
        ck_assert_msg(run.count >= 1 && run.kinds[run.count - 1] == WS_FRAME_ERROR,
                      "%s: not rejected", c->name);
        ck_assert_msg(run.close_code == c->code, "%s: close code %u, expected %u", c->name,
                      run.close_code, c->code);
}
END_TEST

START_TEST(ws_parse_limit_across_fragments)
{
        uint8_t stream[256], payload[40];
        size_t len = 0;
        struct ws_run run;

        memset(payload, 'a', sizeof(payload));
        ws_put(stream, &len, 0, WS_OP_TEXT, payload, 40);
        ws_put(stream, &len, 0, WS_OP_CONTINUATION, payload, 24);
        ws_put(stream, &len, 1, WS_OP_CONTINUATION, payload, 1);
        ws_run_all_ways(stream, len, 64, &run);
        ck_assert_uint_eq(run.count, 3);
        ck_assert_int_eq(run.kinds[2], WS_FRAME_ERROR);
        ck_assert_uint_eq(run.close_code, 1009);
        /* Exactly at the limit is accepted. */
        len = 0;
        ws_put(stream, &len, 0, WS_OP_TEXT, payload, 40);
        ws_put(stream, &len, 1, WS_OP_CONTINUATION, payload, 24);
        ws_run_all_ways(stream, len, 64, &run);
        ck_assert_uint_eq(run.count, 2);
        ck_assert_int_eq(run.kinds[1], WS_FRAME_TEXT);
}
END_TEST

START_TEST(ws_parse_utf8_split_over_fragments)
{
        uint8_t stream[64];
        size_t len = 0;
        struct ws_run run;

        /* U+1F600 split 1 + 3 bytes, then "é" split 1 + 1 across frames. */
        ws_put(stream, &len, 0, WS_OP_TEXT, "\xF0", 1);
        ws_put(stream, &len, 0, WS_OP_CONTINUATION, "\x9F\x98\x80\xC3", 4);
        ws_put(stream, &len, 1, WS_OP_CONTINUATION, "\xA9", 1);
        ws_run_all_ways(stream, len, 64, &run);
        ck_assert_uint_eq(run.count, 3);
        ck_assert_int_eq(run.kinds[2], WS_FRAME_TEXT);
}
END_TEST

START_TEST(ws_parse_lengths_16_and_64)
{
        size_t sizes[] = {125, 126, 65535, 65536, 70000};

        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                uint8_t *stream = malloc(sizes[i] + WS_MAX_HEADER);
                uint8_t *payload = malloc(sizes[i]);
                size_t len = 0;
                struct ws_parser parser;
                struct ws_frame frame;

                ck_assert_ptr_nonnull(stream);
                ck_assert_ptr_nonnull(payload);
                memset(payload, 'x', sizes[i]);
                ws_put(stream, &len, 1, WS_OP_TEXT, payload, sizes[i]);
                ws_parser_init(&parser, 100000);
                ck_assert_int_eq(ws_parse(&parser, stream, len - 1, &frame), WS_FRAME_MORE);
                ck_assert_uint_eq(frame.size, len);
                ck_assert_int_eq(ws_parse(&parser, stream, len, &frame), WS_FRAME_TEXT);
                ck_assert_uint_eq(frame.len, sizes[i]);
                ck_assert_int_eq(memcmp(frame.payload, payload, sizes[i]), 0);
                free(stream);
                free(payload);
        }
}
END_TEST

START_TEST(ws_parse_close_then_nothing)
{
        uint8_t stream[64];
        size_t len = 0;
        struct ws_run run;

        ws_put(stream, &len, 1, WS_OP_CLOSE, "\x0B\xB8", 2); /* 3000 */
        ws_put(stream, &len, 1, WS_OP_TEXT, "after", 5);
        ws_run_all_ways(stream, len, 64, &run);
        ck_assert_uint_eq(run.count, 1);
        ck_assert_int_eq(run.kinds[0], WS_FRAME_CLOSE);
        ck_assert_uint_eq(run.close_code, 3000);
        len = 0;
        ws_put(stream, &len, 1, WS_OP_CLOSE, "", 0);
        ws_run_all_ways(stream, len, 64, &run);
        ck_assert_int_eq(run.kinds[0], WS_FRAME_CLOSE);
        ck_assert_uint_eq(run.close_code, 0);
}
END_TEST

Suite *ws_suite(void)
{
        Suite *s = suite_create("ws");
        TCase *tc = tcase_create("codec");

        tcase_add_test(tc, ws_accept_rfc_sample);
        tcase_add_test(tc, ws_key_validation);
        tcase_add_loop_test(tc, ws_header_round_trip, 0,
                            sizeof(ws_lengths) / sizeof(ws_lengths[0]));
        tcase_add_test(tc, ws_decode_rfc_examples);
        tcase_add_test(tc, ws_decode_flags);
        tcase_add_test(tc, ws_decode_rejects_top_bit);
        tcase_add_test(tc, ws_mask_split_offsets);
        tcase_add_test(tc, ws_utf8_valid_text);
        tcase_add_test(tc, ws_utf8_invalid_text);
        tcase_add_test(tc, ws_utf8_split_code_point);
        tcase_add_test(tc, ws_close_codes);
        suite_add_tcase(s, tc);

        tc = tcase_create("parser");
        tcase_add_test(tc, ws_parse_fragments_and_ping);
        tcase_add_test(tc, ws_parse_message_flags);
        tcase_add_loop_test(tc, ws_parse_rejects, 0,
                            sizeof(ws_bad_cases) / sizeof(ws_bad_cases[0]));
        tcase_add_test(tc, ws_parse_limit_across_fragments);
        tcase_add_test(tc, ws_parse_utf8_split_over_fragments);
        tcase_add_test(tc, ws_parse_lengths_16_and_64);
        tcase_add_test(tc, ws_parse_close_then_nothing);
        suite_add_tcase(s, tc);
        return s;
}
