#include "query.h"

#include <string.h>

#define QUERY_MAX_SEQ 9007199254740991LL /* 2^53-1, the largest exact JavaScript integer */

struct query_cursor {
        const char *p;
        const char *end;
};

static inline void query_skip_space(struct query_cursor *c)
{
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
                c->p++;
}

static inline int query_expect(struct query_cursor *c, char ch)
{
        query_skip_space(c);
        if (c->p == c->end || *c->p != ch)
                return 0;
        c->p++;
        return 1;
}

/* Reads a string with no escapes and no control characters. The codec has checked UTF-8. */
static inline int query_string(struct query_cursor *c, const char **start, size_t *len)
{
        const char *s;

        if (!query_expect(c, '"'))
                return 0;
        for (s = c->p; s < c->end && *s != '"'; s++) {
                if (*s == '\\' || (unsigned char)*s < 0x20)
                        return 0;
        }
        if (s == c->end)
                return 0;
        *start = c->p;
        *len = (size_t)(s - c->p);
        c->p = s + 1;
        return 1;
}

/* Reads a non-negative integer in JSON's form: no sign, no leading zero, no fraction. */
static inline int query_integer(struct query_cursor *c, int64_t *value)
{
        int64_t n = 0;
        const char *start;

        query_skip_space(c);
        start = c->p;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
                if (c->p - start >= 16)
                        return 0;
                n = n * 10 + (*c->p - '0');
                c->p++;
        }
        if (c->p == start || (c->p - start > 1 && *start == '0') || n > QUERY_MAX_SEQ)
                return 0;
        if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
                return 0;
        *value = n;
        return 1;
}

int query_parse_fast(const char *text, size_t len, struct query_message *out)
{
        struct query_cursor c = {text, text + len};
        int has_q = 0;

        memset(out, 0, sizeof(*out));
        if (!query_expect(&c, '{'))
                return 0;
        for (int member = 0; member < 2; member++) {
                const char *key;
                size_t key_len;

                if (!query_string(&c, &key, &key_len) || !query_expect(&c, ':'))
                        return 0;
                if (key_len == 1 && key[0] == 'q' && !has_q) {
                        if (!query_string(&c, &out->q, &out->q_len))
                                return 0;
                        has_q = 1;
                } else if (key_len == 3 && memcmp(key, "seq", 3) == 0 && !out->has_seq) {
                        if (!query_integer(&c, &out->seq))
                                return 0;
                        out->has_seq = 1;
                } else {
                        return 0;
                }
                query_skip_space(&c);
                if (c.p < c.end && *c.p == '}')
                        break;
                if (!query_expect(&c, ','))
                        return 0;
        }
        if (!has_q || !query_expect(&c, '}'))
                return 0;
        query_skip_space(&c);
        return c.p == c.end;
}
