#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "reply.h"
#include "suites.h"

static const char *api_encode(const char *text)
{
        static char out[256];

        api_encode_query(text, strlen(text), out);
        return out;
}

START_TEST(api_encode_unreserved_kept)
{
        ck_assert_str_eq(api_encode("AZaz09-._~"), "AZaz09-._~");
}
END_TEST

START_TEST(api_encode_reserved_escaped)
{
        ck_assert_str_eq(api_encode("a b&c=d/e?f#g+h%"), "a%20b%26c%3Dd%2Fe%3Ff%23g%2Bh%25");
        ck_assert_str_eq(api_encode("Z\xc3\xbcrich"), "Z%C3%BCrich");
        ck_assert_str_eq(api_encode(""), "");
}
END_TEST

START_TEST(api_retry_after_seconds)
{
        uint64_t delay = 1;

        ck_assert_int_eq(api_parse_retry_after("120", 0, &delay), 0);
        ck_assert_uint_eq(delay, 120000000000ULL);
        ck_assert_int_eq(api_parse_retry_after(" 0 ", 0, &delay), 0);
        ck_assert_uint_eq(delay, 0);
        ck_assert_int_eq(api_parse_retry_after("99999999", 0, &delay), 0);
        ck_assert_uint_eq(delay, 86400000000000ULL);
}
END_TEST

START_TEST(api_retry_after_date)
{
        uint64_t delay = 1;

        /* 784111777 is Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110. */
        ck_assert_int_eq(api_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111770, &delay),
                         0);
        ck_assert_uint_eq(delay, 7000000000ULL);
        ck_assert_int_eq(api_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111800, &delay),
                         0);
        ck_assert_uint_eq(delay, 0);
}
END_TEST

START_TEST(api_retry_after_invalid)
{
        uint64_t delay;

        ck_assert_int_eq(api_parse_retry_after("", 0, &delay), -1);
        ck_assert_int_eq(api_parse_retry_after("soon", 0, &delay), -1);
        ck_assert_int_eq(api_parse_retry_after("-5", 0, &delay), -1);
        ck_assert_int_eq(api_parse_retry_after("5s", 0, &delay), -1);
}
END_TEST

START_TEST(api_reset_seconds_or_epoch)
{
        uint64_t delay;

        ck_assert_int_eq(api_parse_reset("30", 1700000000, &delay), 0);
        ck_assert_uint_eq(delay, 30000000000ULL);
        ck_assert_int_eq(api_parse_reset("1700000012", 1700000000, &delay), 0);
        ck_assert_uint_eq(delay, 12000000000ULL);
        ck_assert_int_eq(api_parse_reset("1600000000", 1700000000, &delay), 0);
        ck_assert_uint_eq(delay, 0);
        ck_assert_int_eq(api_parse_reset("1.5", 0, &delay), -1);
}
END_TEST

START_TEST(reply_results_shape)
{
        size_t len;
        const char *results = "[{\"name\":\"Sweden\"}]";
        char *text = reply_results(7, "sw\"", 3, results, strlen(results), &len);

        ck_assert_ptr_nonnull(text);
        ck_assert_str_eq(text,
                         "{\"type\":\"results\",\"seq\":7,\"q\":\"sw\\\"\",\"results\":[{\"name\":"
                         "\"Sweden\"}],\"cached\":false}");
        ck_assert_uint_eq(len, strlen(text));
        free(text);
}
END_TEST

START_TEST(reply_error_shape)
{
        size_t len;
        char *text = reply_error(3, "x", 1, REPLY_UPSTREAM_TIMEOUT, "slow", &len);

        ck_assert_str_eq(text,
                         "{\"type\":\"error\",\"seq\":3,\"q\":\"x\",\"error\":\"upstream_timeout\","
                         "\"message\":\"slow\"}");
        free(text);
        text = reply_error(-1, NULL, 0, REPLY_BAD_REQUEST, "bad", &len);
        ck_assert_str_eq(text,
                         "{\"type\":\"error\",\"error\":\"bad_request\",\"message\":\"bad\"}");
        free(text);
}
END_TEST

START_TEST(api_json_accepts_valid)
{
        static const char *const valid[] = {"[]",
                                            "{}",
                                            "[1, 2.5, -3e2]\n",
                                            "{\"a\": [true, null]}",
                                            "\"Z\u00fcrich\"",
                                            "  [\"\\u0000\"]  "};

        for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
                ck_assert_msg(api_json_valid(valid[i], strlen(valid[i])), "rejected: %s", valid[i]);
}
END_TEST

START_TEST(api_json_rejects_invalid)
{
        static const char *const invalid[] = {
            "",
            "[1",
            "{\"r\":NaN}",
            "[Infinity]",
            "[-Infinity]",
            "[1e999]",
            "{\"q\":'a'}",
            "[1]/*c*/",
            "[1] x",
            "[\"\xc3\x28\"]",
            "[\"\xc0\xaf\"]",
            "[\"\xed\xa0\x80\"]",
            "[\"\xf4\x90\x80\x80\"]",
            "[1][2]",
        };

        for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
                ck_assert_msg(!api_json_valid(invalid[i], strlen(invalid[i])), "accepted: %s",
                              invalid[i]);
}
END_TEST

START_TEST(api_json_depth_limit)
{
        char text[2 * (API_MAX_DEPTH + 1) + 1];

        memset(text, '[', API_MAX_DEPTH);
        memset(text + API_MAX_DEPTH, ']', API_MAX_DEPTH);
        ck_assert(api_json_valid(text, 2 * API_MAX_DEPTH));
        memset(text, '[', API_MAX_DEPTH + 1);
        memset(text + API_MAX_DEPTH + 1, ']', API_MAX_DEPTH + 1);
        ck_assert(!api_json_valid(text, 2 * (API_MAX_DEPTH + 1)));
}
END_TEST

Suite *api_suite(void)
{
        Suite *s = suite_create("api");
        TCase *tc = tcase_create("encoding");

        tcase_add_test(tc, api_encode_unreserved_kept);
        tcase_add_test(tc, api_encode_reserved_escaped);
        tcase_add_test(tc, api_json_accepts_valid);
        tcase_add_test(tc, api_json_rejects_invalid);
        tcase_add_test(tc, api_json_depth_limit);
        tcase_add_test(tc, api_retry_after_seconds);
        tcase_add_test(tc, api_retry_after_date);
        tcase_add_test(tc, api_retry_after_invalid);
        tcase_add_test(tc, api_reset_seconds_or_epoch);
        tcase_add_test(tc, reply_results_shape);
        tcase_add_test(tc, reply_error_shape);
        suite_add_tcase(s, tc);
        return s;
}
