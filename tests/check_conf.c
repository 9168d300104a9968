#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "suites.h"

static char conf_path[64];

static void conf_write(const char *text)
{
        FILE *f;
        int fd;

        snprintf(conf_path, sizeof(conf_path), "/tmp/incsearchd-conf-XXXXXX");
        fd = mkstemp(conf_path);
        ck_assert_int_ge(fd, 0);
        f = fdopen(fd, "w");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        fclose(f);
}

static int conf_try(struct conf *conf, const char *text, char *errors, size_t len)
{
        int n;

        conf_write(text);
        n = conf_load(conf, conf_path, errors, len);
        unlink(conf_path);
        return n;
}

/* Returns the expected "path:line: " prefix followed by REST. */
static const char *conf_expect(unsigned line, const char *rest)
{
        static char expected[256];

        snprintf(expected, sizeof(expected), "%s:%u: %s", conf_path, line, rest);
        return expected;
}

static const char conf_minimal[] = "[api]\n"
                                   "url = http://127.0.0.1:1/s?q={q}\n"
                                   "rate = 10\n"
                                   "burst = 5\n";

/* The required [api] lines, so that a test can leave out the one its bad line sets. */
static const char *const conf_required[] = {"url = http://127.0.0.1:1/s?q={q}", "rate = 10",
                                            "burst = 5"};

START_TEST(conf_good_file)
{
        struct conf conf;
        char errors[1024];
        int n = conf_try(&conf,
                         "# a comment\n"
                         "[server]\n"
                         "listen = [::1]:9000\n"
                         "max_connections = 100\n"
                         "  min_query_chars = 2   \n"
                         "log_level = debug\n"
                         "\n"
                         "[api]\n"
                         "url = https://api.example.com/v1/search?query={q}&n=5\n"
                         "rate = 2.5\n"
                         "burst = 4\n"
                         "header = X-Api-Key: secret\n"
                         "header = Accept: application/json\n"
                         "[workers]\n"
                         "workers = 3\n",
                         errors, sizeof(errors));

        ck_assert_msg(n == 0, "unexpected errors: %s", errors);
        ck_assert_str_eq(conf.listen_host, "::1");
        ck_assert_uint_eq(conf.listen_port, 9000);
        ck_assert_uint_eq(conf.max_connections, 100);
        ck_assert_uint_eq(conf.min_query_chars, 2);
        ck_assert_int_eq(conf.log_level, LOG_LEVEL_DEBUG);
        ck_assert_str_eq(conf.api_url, "https://api.example.com/v1/search?query={q}&n=5");
        ck_assert_uint_eq(conf.rate_milli, 2500);
        ck_assert_uint_eq(conf.burst, 4);
        ck_assert_uint_eq(conf.header_count, 2);
        ck_assert_str_eq(conf.headers[0], "X-Api-Key: secret");
        ck_assert_uint_eq(conf.workers, 3);
}
END_TEST

START_TEST(conf_defaults_apply)
{
        struct conf conf;
        char errors[1024];

        ck_assert_int_eq(conf_try(&conf, conf_minimal, errors, sizeof(errors)), 0);
        ck_assert_str_eq(conf.listen_host, "127.0.0.1");
        ck_assert_uint_eq(conf.listen_port, 8080);
        ck_assert_uint_eq(conf.max_query_bytes, 256);
        ck_assert_uint_eq(conf.min_query_chars, 1);
        ck_assert_uint_eq(conf.workers, 2);
        ck_assert_str_eq(conf.shm_name, "/incsearchd");
        ck_assert_uint_eq(conf.rate_milli, 10000);
}
END_TEST

/* One bad line and the message it must produce. */
struct conf_bad_case {
        const char *line;
        const char *message;
};

static const struct conf_bad_case conf_bad_cases[] = {
    {"colour = blue", "unknown key colour in [api]"},
    {"rate = fast", "invalid value 'fast' for rate"},
    {"rate = 0", "invalid value '0' for rate"},
    {"rate = 1.2345", "invalid value '1.2345' for rate"},
    {"burst = -1", "invalid value '-1' for burst"},
    {"burst = 2000000", "invalid value '2000000' for burst"},
    {"timeout_ms = 10s", "invalid value '10s' for timeout_ms"},
    {"url = ftp://x/{q}", "invalid value 'ftp://x/{q}' for url"},
    {"header = no colon here", "invalid header"},
    {"just some words", "invalid line 'just some words'"},
    {"[nosuch]", "unknown section [nosuch]"},
    {"[server", "invalid section header '[server'"},
    {"rate_limit_backend = etcd", "invalid value 'etcd' for rate_limit_backend: expected shm or "
                                  "redis"},
    {"redis_fallback = open", "invalid value 'open' for redis_fallback"},
    {"redis_url = http://127.0.0.1:6379", "invalid redis_url: expected redis://"},
    {"redis_url = redis://:secret@h:99999", "invalid redis_url"},
    {"redis_url = unix:relative.sock", "invalid redis_url"},
    {"expected_hosts = 0", "invalid value '0' for expected_hosts"},
    {"redis_key_prefix =", "empty redis_key_prefix"},
};

START_TEST(conf_bad_line_reported)
{
        const struct conf_bad_case *c = &conf_bad_cases[_i];
        struct conf conf;
        char text[512] = "[api]\n", errors[1024];
        unsigned line = 1;
        int n;

        /* The bad line comes last, after the required keys it does not set itself. */
        for (size_t i = 0; i < sizeof(conf_required) / sizeof(conf_required[0]); i++) {
                size_t key_len = strcspn(conf_required[i], " ");

                if (strncmp(c->line, conf_required[i], key_len) == 0 && c->line[key_len] == ' ')
                        continue;
                strcat(text, conf_required[i]);
                strcat(text, "\n");
                line++;
        }
        strcat(text, c->line);
        strcat(text, "\n");
        line++;

        n = conf_try(&conf, text, errors, sizeof(errors));
        ck_assert_msg(n == 1, "line '%s': expected 1 error, got %d: %s", c->line, n, errors);
        ck_assert_msg(strncmp(errors, conf_expect(line, c->message),
                              strlen(conf_expect(line, c->message))) == 0,
                      "line '%s': expected '%s', got '%s'", c->line, conf_expect(line, c->message),
                      errors);
}
END_TEST

/* A redis_url and what it must parse into; a NULL host means it must be refused. */
struct conf_redis_case {
        const char *url;
        const char *host, *path, *user, *password;
        unsigned port, db;
};

static const struct conf_redis_case conf_redis_cases[] = {
    {"redis://127.0.0.1", "127.0.0.1", "", "", "", 6379, 0},
    {"redis://cache.internal:6380/3", "cache.internal", "", "", "", 6380, 3},
    {"redis://:pw@10.0.0.5:7000/", "10.0.0.5", "", "", "pw", 7000, 0},
    {"redis://app:p:w@h", "h", "", "app", "p:w", 6379, 0},
    {"redis://[::1]:6390/1", "::1", "", "", "", 6390, 1},
    {"unix:/run/redis/redis.sock", "", "/run/redis/redis.sock", "", "", 6379, 0},
    {"unix:///run/redis.sock?db=4", "", "/run/redis.sock", "", "", 6379, 4},
    {"redis://", NULL, NULL, NULL, NULL, 0, 0},
    {"redis://h:0", NULL, NULL, NULL, NULL, 0, 0},
    {"redis://h:12x", NULL, NULL, NULL, NULL, 0, 0},
    {"redis://h/db", NULL, NULL, NULL, NULL, 0, 0},
    {"redis://[::1/0", NULL, NULL, NULL, NULL, 0, 0},
    {"redis://nopassword@h", NULL, NULL, NULL, NULL, 0, 0},
    {"unix:/x.sock?database=1", NULL, NULL, NULL, NULL, 0, 0},
    {"rediss://h", NULL, NULL, NULL, NULL, 0, 0},
};

START_TEST(conf_redis_url_forms)
{
        const struct conf_redis_case *c = &conf_redis_cases[_i];
        struct conf_redis_addr addr;
        int r = conf_parse_redis_url(c->url, &addr);

        if (c->host == NULL) {
                ck_assert_msg(r == -1, "%s was accepted", c->url);
                return;
        }
        ck_assert_msg(r == 0, "%s was refused", c->url);
        ck_assert_str_eq(addr.host, c->host);
        ck_assert_str_eq(addr.path, c->path);
        ck_assert_str_eq(addr.user, c->user);
        ck_assert_str_eq(addr.password, c->password);
        ck_assert_uint_eq(addr.port, c->port);
        ck_assert_uint_eq(addr.db, c->db);
}
END_TEST

START_TEST(conf_tls_needs_both)
{
        struct conf conf;
        char text[512], errors[1024];

        snprintf(text, sizeof(text), "[server]\ntls_cert = /etc/x.pem\n%s", conf_minimal);
        ck_assert_int_eq(conf_try(&conf, text, errors, sizeof(errors)), 1);
        ck_assert_msg(strstr(errors, "tls_cert and tls_key must be set together") != NULL, "%s",
                      errors);
        /* The message points at the key that was set, not at the end of the file. */
        ck_assert_str_eq(errors, conf_expect(2, "tls_cert and tls_key must be set together\n"));
}
END_TEST

START_TEST(conf_duplicate_key)
{
        struct conf conf;
        char text[512], errors[1024];

        snprintf(text, sizeof(text), "%srate = 3\n", conf_minimal);
        ck_assert_int_eq(conf_try(&conf, text, errors, sizeof(errors)), 1);
        ck_assert_str_eq(errors, conf_expect(5, "duplicate key rate, first set on line 3\n"));
}
END_TEST

START_TEST(conf_listen_must_be_numeric)
{
        struct conf conf;
        char text[512], errors[1024];

        snprintf(text, sizeof(text), "[server]\nlisten = localhost:8080\n%s", conf_minimal);
        ck_assert_int_eq(conf_try(&conf, text, errors, sizeof(errors)), 1);
        ck_assert_str_eq(errors,
                         conf_expect(2, "invalid value 'localhost:8080' for listen: expected "
                                        "a numeric ADDRESS:PORT, such as 127.0.0.1:8080 or "
                                        "[::1]:8080\n"));
}
END_TEST

START_TEST(conf_key_outside_section)
{
        struct conf conf;
        char errors[1024];

        ck_assert_int_eq(conf_try(&conf,
                                  "workers = 2\n[api]\nurl = http://a/{q}\nrate = 1\nburst = 1\n",
                                  errors, sizeof(errors)),
                         1);
        ck_assert_str_eq(errors, conf_expect(1, "key workers outside any section\n"));
}
END_TEST

START_TEST(conf_missing_required_key)
{
        struct conf conf;
        char errors[1024];

        ck_assert_int_eq(
            conf_try(&conf, "[api]\nurl = http://a/{q}\nburst = 1\n", errors, sizeof(errors)), 1);
        ck_assert_str_eq(errors, conf_expect(3, "missing required key rate in [api]\n"));
}
END_TEST

START_TEST(conf_every_error_in_one_pass)
{
        struct conf conf;
        char errors[2048];
        int n = conf_try(&conf,
                         "[server]\n"
                         "max_connections = 0\n"
                         "bogus = 1\n"
                         "[api]\n"
                         "url = http://a/{q}\n"
                         "rate = x\n"
                         "burst = 1\n",
                         errors, sizeof(errors));

        ck_assert_int_eq(n, 3);
        ck_assert_ptr_nonnull(
            strstr(errors, conf_expect(2, "invalid value '0' for max_connections")));
        ck_assert_ptr_nonnull(strstr(errors, conf_expect(3, "unknown key bogus in [server]")));
        ck_assert_ptr_nonnull(strstr(errors, conf_expect(6, "invalid value 'x' for rate")));
}
END_TEST

START_TEST(conf_secret_header_not_echoed)
{
        struct conf conf;
        char text[512], errors[1024];

        snprintf(text, sizeof(text), "%sheader = Bad Name: s3cret\n", conf_minimal);
        ck_assert_int_eq(conf_try(&conf, text, errors, sizeof(errors)), 1);
        ck_assert_ptr_null(strstr(errors, "s3cret"));
}
END_TEST

START_TEST(conf_missing_file)
{
        struct conf conf;
        char errors[1024];

        ck_assert_int_eq(conf_load(&conf, "/nonexistent/incsearchd.conf", errors, sizeof(errors)),
                         1);
        ck_assert_str_eq(
            errors, "/nonexistent/incsearchd.conf:0: cannot open: No such file or directory\n");
}
END_TEST

Suite *conf_suite(void)
{
        Suite *s = suite_create("conf");
        TCase *tc = tcase_create("load");

        tcase_add_test(tc, conf_good_file);
        tcase_add_test(tc, conf_defaults_apply);
        tcase_add_loop_test(tc, conf_bad_line_reported, 0,
                            sizeof(conf_bad_cases) / sizeof(conf_bad_cases[0]));
        tcase_add_loop_test(tc, conf_redis_url_forms, 0,
                            (int)(sizeof(conf_redis_cases) / sizeof(conf_redis_cases[0])));
        tcase_add_test(tc, conf_tls_needs_both);
        tcase_add_test(tc, conf_duplicate_key);
        tcase_add_test(tc, conf_listen_must_be_numeric);
        tcase_add_test(tc, conf_key_outside_section);
        tcase_add_test(tc, conf_missing_required_key);
        tcase_add_test(tc, conf_every_error_in_one_pass);
        tcase_add_test(tc, conf_secret_header_not_echoed);
        tcase_add_test(tc, conf_missing_file);
        suite_add_tcase(s, tc);
        return s;
}
