#include <string.h>

#include <json-c/json.h>

#include "query.h"
#include "suites.h"

/* Messages the fast parser takes, with the query and seq it must find. */
static const struct {
        const char *text;
        const char *q;
        int has_seq;
        long long seq;
} query_fast_cases[] = {
    {"{\"q\":\"swi\",\"seq\":3}", "swi", 1, 3},
    {"{\"seq\":3,\"q\":\"swi\"}", "swi", 1, 3},
    {"{\"q\":\"swi\"}", "swi", 0, 0},
    {" { \"q\" : \"new york\" , \"seq\" : 0 } \n", "new york", 1, 0},
    {"{\"q\":\"\",\"seq\":9007199254740991}", "", 1, 9007199254740991LL},
    {"{\"q\":\"Z\xc3\xbcrich\",\"seq\":12}", "Z\xc3\xbcrich", 1, 12},
};

/* Messages the fast parser must leave to json-c: escapes, other members, other types. */
static const char *const query_slow_cases[] = {
    "{\"q\":\"a\\\"b\",\"seq\":1}",
    "{\"q\":\"a\\u00e9\"}",
    "{\"q\":\"a\",\"seq\":1,\"x\":2}",
    "{\"q\":\"a\",\"q\":\"b\"}",
    "{\"q\":\"a\",\"seq\":01}",
    "{\"q\":\"a\",\"seq\":-1}",
    "{\"q\":\"a\",\"seq\":1.5}",
    "{\"q\":\"a\",\"seq\":1e3}",
    "{\"q\":\"a\",\"seq\":9007199254740992}",
    "{\"q\":\"a\",\"seq\":\"1\"}",
    "{\"q\":5}",
    "{\"seq\":1}",
    "{\"q\":\"a\"} trailing",
    "{\"q\":\"a\",}",
    "{\"q\":\"a\"",
    "{'q':'a'}",
    "{\"q\":\"tab\there\"}",
    "{}",
    "",
};

START_TEST(query_fast_common_shape)
{
        struct query_message m;
        const char *text = query_fast_cases[_i].text;

        ck_assert_int_eq(query_parse_fast(text, strlen(text), &m), 1);
        ck_assert_uint_eq(m.q_len, strlen(query_fast_cases[_i].q));
        ck_assert_int_eq(memcmp(m.q, query_fast_cases[_i].q, m.q_len), 0);
        ck_assert_int_eq(m.has_seq, query_fast_cases[_i].has_seq);
        ck_assert_int_eq(m.seq, query_fast_cases[_i].seq);
}
END_TEST

/* Whatever the fast parser takes, json-c parses to the same query and seq. */
START_TEST(query_fast_agrees_with_jsonc)
{
        const char *text = query_fast_cases[_i].text;
        json_object *obj = json_tokener_parse(text), *q, *seq;
        struct query_message m;

        ck_assert_ptr_nonnull(obj);
        ck_assert_int_eq(query_parse_fast(text, strlen(text), &m), 1);
        ck_assert(json_object_object_get_ex(obj, "q", &q));
        ck_assert_str_eq(json_object_get_string(q), query_fast_cases[_i].q);
        ck_assert_int_eq(json_object_object_get_ex(obj, "seq", &seq), m.has_seq);
        if (m.has_seq)
                ck_assert_int_eq(json_object_get_int64(seq), m.seq);
        json_object_put(obj);
}
END_TEST

START_TEST(query_slow_left_to_jsonc)
{
        struct query_message m;
        const char *text = query_slow_cases[_i];

        ck_assert_msg(query_parse_fast(text, strlen(text), &m) == 0, "took: %s", text);
}
END_TEST

Suite *query_suite(void)
{
        Suite *s = suite_create("query");
        TCase *tc = tcase_create("parse");

        tcase_add_loop_test(tc, query_fast_common_shape, 0,
                            sizeof(query_fast_cases) / sizeof(query_fast_cases[0]));
        tcase_add_loop_test(tc, query_fast_agrees_with_jsonc, 0,
                            sizeof(query_fast_cases) / sizeof(query_fast_cases[0]));
        tcase_add_loop_test(tc, query_slow_left_to_jsonc, 0,
                            sizeof(query_slow_cases) / sizeof(query_slow_cases[0]));
        suite_add_tcase(s, tc);
        return s;
}
