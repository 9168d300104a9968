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
        return ws_utf8_feed(WS_UTF8_ACCEPT, (const uint8_t *)s, strlen(s));
}

START_TEST(ws_utf8_valid_text)
{
        ck_assert_uint_eq(ws_utf8("plain"), WS_UTF8_ACCEPT);
        ck_assert_uint_eq(ws_utf8("Z\xc3\xbcrich"), WS_UTF8_ACCEPT);
        ck_assert_uint_eq(ws_utf8("\xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"),
                          WS_UTF8_ACCEPT);
}
END_TEST

START_TEST(ws_utf8_invalid_text)
{
        ck_assert_uint_eq(ws_utf8("\xc0\xaf"), WS_UTF8_REJECT);         /* overlong */
        ck_assert_uint_eq(ws_utf8("\xed\xa0\x80"), WS_UTF8_REJECT);     /* surrogate */
        ck_assert_uint_eq(ws_utf8("\xf4\x90\x80\x80"), WS_UTF8_REJECT); /* above U+10FFFF */
        ck_assert_uint_eq(ws_utf8("\x80"), WS_UTF8_REJECT);
        ck_assert_uint_eq(ws_utf8("\xff"), WS_UTF8_REJECT);
        ck_assert_uint_ne(ws_utf8("\xe2\x82"), WS_UTF8_ACCEPT); /* truncated */
}
END_TEST

START_TEST(ws_utf8_split_code_point)
{
        const uint8_t euro[] = {0xe2, 0x82, 0xac};
        uint32_t state = ws_utf8_feed(WS_UTF8_ACCEPT, euro, 1);

        ck_assert_uint_ne(state, WS_UTF8_REJECT);
        state = ws_utf8_feed(state, euro + 1, 1);
        ck_assert_uint_ne(state, WS_UTF8_ACCEPT);
        state = ws_utf8_feed(state, euro + 2, 1);
        ck_assert_uint_eq(state, WS_UTF8_ACCEPT);
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
        return s;
}
