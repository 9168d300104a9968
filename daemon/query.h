/*
 * A fast parser for the client message every keystroke sends, {"q": "text", "seq": n}. It
 * takes the common shape only, which json-c parses to the same query and seq (check_query.c
 * compares the two), and leaves every other message to json-c.
 */
#ifndef INCSEARCHD_QUERY_H
#define INCSEARCHD_QUERY_H

#include <stddef.h>
#include <stdint.h>

struct query_message {
        const char *q; /* points into the message, with no escapes to undo */
        size_t q_len;
        int has_seq;
        int64_t seq; /* 0 to 2^53-1 when has_seq */
};

/*
 * Parses TEXT if it is a JSON object with exactly the members "q" (a string with no backslash
 * and no control character) and optionally "seq" (digits, at most 2^53-1), in either order,
 * with JSON white space anywhere between tokens. Returns 1 with OUT filled, or 0 when the
 * message needs the full JSON parser, which also reports the errors.
 */
int query_parse_fast(const char *text, size_t len, struct query_message *out);

#endif
