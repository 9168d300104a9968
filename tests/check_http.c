#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "suites.h"

#define HTTP_KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

/* Parses TEXT into REQ through a writable copy that stays alive until the next call. */
static int http_parse_text(const char *text, struct http_request *req)
{
        static char head[4096];

        snprintf(head, sizeof(head), "%s", text);
        return http_parse(head, strlen(head), req);
}

START_TEST(http_parse_headers)
{
        struct http_request req;

        ck_assert_int_eq(
            http_parse_text("GET /ws?x=1 HTTP/1.1\r\nhost: a\r\nUPGRADE:  websocket \r\n"
                            "Connection:keep-alive, Upgrade\r\n" HTTP_KEY
                            "Sec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n"
                            "X-Other: y\r\n\r\n",
                            &req),
            0);
        ck_assert_str_eq(req.method, "GET");
        ck_assert_str_eq(req.target, "/ws?x=1");
        ck_assert_uint_eq(req.version_minor, 1);
        ck_assert_str_eq(req.host, "a");
        ck_assert_str_eq(req.upgrade, "websocket");
        ck_assert_str_eq(req.connection, "keep-alive, Upgrade");
        ck_assert_str_eq(req.origin, "https://a.example");
        ck_assert_uint_eq(req.duplicate, 0);
}
END_TEST

START_TEST(http_parse_rejects_malformed)
{
        static const char *const bad[] = {
            "GET /ws HTTP/1.1\r\nHost: a\r\n",                /* no blank line */
            "GET /ws\r\n\r\n",                                /* no version */
            "GET /ws HTTP/2.0\r\n\r\n",                       /* unsupported version */
            "GET /ws HTTP/1.1\r\nHost a\r\n\r\n",             /* no colon */
            "GET /ws HTTP/1.1\r\n: a\r\n\r\n",                /* empty name */
            "GET /ws HTTP/1.1\r\nHost : a\r\n\r\n",           /* space before the colon */
            "GET /ws HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", /* obsolete line folding */
        };
        struct http_request req;
        char nul[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                ck_assert_msg(http_parse_text(bad[i], &req) == -1, "accepted: %s", bad[i]);
        ck_assert_int_eq(http_parse(nul, sizeof(nul) - 1, &req), -1);
}
END_TEST

/* A handshake with one header replaced, and the status http_check_upgrade must return. */
struct http_case {
        const char *request;
        int status;
};

static const struct http_case http_cases[] = {
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" HTTP_KEY
     "Sec-WebSocket-Version: 13\r\n\r\n",
     0},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, "
     "upgrade\r\n" HTTP_KEY "Sec-WebSocket-Version: 13\r\n\r\n",
     0},
    {"POST /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" HTTP_KEY
     "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"GET /ws HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" HTTP_KEY
     "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" HTTP_KEY
     "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n" HTTP_KEY
     "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n" HTTP_KEY
     "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" HTTP_KEY
         HTTP_KEY "Sec-WebSocket-Version: 13\r\n\r\n",
     400},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" HTTP_KEY
     "Sec-WebSocket-Version: 8\r\n\r\n",
     426},
    {"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" HTTP_KEY "\r\n",
     426},
};

START_TEST(http_check_upgrade_cases)
{
        const struct http_case *c = &http_cases[_i];
        struct http_request req;
        const char *reason = NULL;

        ck_assert_int_eq(http_parse_text(c->request, &req), 0);
        ck_assert_int_eq(http_check_upgrade(&req, &reason), c->status);
        if (c->status != 0)
                ck_assert_ptr_nonnull(reason);
}
END_TEST

START_TEST(http_origin_list)
{
        const char *allowed = "https://a.example  http://b.example:8080";

        ck_assert_int_eq(http_origin_allowed("", NULL), 1);
        ck_assert_int_eq(http_origin_allowed("", "https://evil.example"), 1);
        ck_assert_int_eq(http_origin_allowed(allowed, "https://a.example"), 1);
        ck_assert_int_eq(http_origin_allowed(allowed, "http://b.example:8080"), 1);
        ck_assert_int_eq(http_origin_allowed(allowed, "http://b.example"), 0);
        ck_assert_int_eq(http_origin_allowed(allowed, "https://a.example.evil"), 0);
        ck_assert_int_eq(http_origin_allowed(allowed, "null"), 0);
        ck_assert_int_eq(http_origin_allowed(allowed, NULL), 0);
}
END_TEST

START_TEST(http_tokens)
{
        ck_assert_int_eq(http_has_token("keep-alive, Upgrade", "upgrade"), 1);
        ck_assert_int_eq(http_has_token(" upgrade ,x", "upgrade"), 1);
        ck_assert_int_eq(http_has_token("upgraded", "upgrade"), 0);
        ck_assert_int_eq(http_has_token("", "upgrade"), 0);
}
END_TEST

Suite *http_suite(void)
{
        Suite *s = suite_create("http");
        TCase *tc = tcase_create("request");

        tcase_add_test(tc, http_parse_headers);
        tcase_add_test(tc, http_parse_rejects_malformed);
        tcase_add_loop_test(tc, http_check_upgrade_cases, 0,
                            sizeof(http_cases) / sizeof(http_cases[0]));
        tcase_add_test(tc, http_origin_list);
        tcase_add_test(tc, http_tokens);
        suite_add_tcase(s, tc);
        return s;
}
