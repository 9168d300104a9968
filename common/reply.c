#include "reply.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static char *reply_serialize(json_object *obj, size_t *len)
{
        const char *text;
        size_t text_len;
        char *copy;

        text = json_object_to_json_string_length(
            obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &text_len);
        copy = text != NULL ? malloc(text_len + 1) : NULL;
        if (copy != NULL) {
                memcpy(copy, text, text_len + 1);
                *len = text_len;
        }
        json_object_put(obj);
        return copy;
}

static char *reply_results_flagged(int64_t seq, const char *query, size_t query_len,
                                   const char *results, size_t results_len, int cached, size_t *len)
{
        static const char middle[] = ",\"results\":";
        const char *tail = cached ? ",\"cached\":true}" : ",\"cached\":false}";
        size_t tail_len = strlen(tail);
        json_object *q = json_object_new_string_len(query, (int)query_len);
        const char *q_text;
        size_t q_len, head_len;
        char head[64], *out, *p;

        if (q == NULL)
                return NULL;
        if (results == NULL) {
                results = "[]";
                results_len = 2;
        }
        q_text = json_object_to_json_string_length(
            q, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &q_len);
        head_len = (size_t)snprintf(head, sizeof(head),
                                    "{\"type\":\"results\",\"seq\":%lld,\"q\":", (long long)seq);

        /* The API's body is spliced in as received, so it is neither re-encoded nor grown. */
        *len = head_len + q_len + (sizeof(middle) - 1) + results_len + tail_len;
        out = malloc(*len + 1);
        if (out == NULL) {
                json_object_put(q);
                return NULL;
        }
        p = out;
        memcpy(p, head, head_len);
        p += head_len;
        memcpy(p, q_text, q_len);
        p += q_len;
        memcpy(p, middle, sizeof(middle) - 1);
        p += sizeof(middle) - 1;
        memcpy(p, results, results_len);
        p += results_len;
        memcpy(p, tail, tail_len + 1);
        json_object_put(q);
        return out;
}

char *reply_results(int64_t seq, const char *query, size_t query_len, const char *results,
                    size_t results_len, size_t *len)
{
        return reply_results_flagged(seq, query, query_len, results, results_len, 0, len);
}

char *reply_cached_results(int64_t seq, const char *query, size_t query_len, const char *results,
                           size_t results_len, size_t *len)
{
        return reply_results_flagged(seq, query, query_len, results, results_len, 1, len);
}

char *reply_error(int64_t seq, const char *query, size_t query_len, const char *code,
                  const char *message, size_t *len)
{
        json_object *obj = json_object_new_object();

        if (obj == NULL)
                return NULL;
        json_object_object_add(obj, "type", json_object_new_string("error"));
        if (seq >= 0)
                json_object_object_add(obj, "seq", json_object_new_int64(seq));
        if (query != NULL)
                json_object_object_add(obj, "q", json_object_new_string_len(query, (int)query_len));
        json_object_object_add(obj, "error", json_object_new_string(code));
        json_object_object_add(obj, "message", json_object_new_string(message));
        return reply_serialize(obj, len);
}

/* Returns 0 if OBJ or anything inside it is a number JSON cannot represent. */
static int reply_json_finite(json_object *obj)
{
        switch (json_object_get_type(obj)) {
        case json_type_double:
                return isfinite(json_object_get_double(obj));
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(obj); i++) {
                        if (!reply_json_finite(json_object_array_get_idx(obj, i)))
                                return 0;
                }
                return 1;
        case json_type_object: {
                json_object_object_foreach(obj, key, value)
                {
                        (void)key;
                        if (!reply_json_finite(value))
                                return 0;
                }
                return 1;
        }
        default:
                return 1;
        }
}

json_object *reply_json_parse(const char *text, size_t len)
{
        struct json_tokener *tok = json_tokener_new_ex(REPLY_MAX_DEPTH);
        json_object *parsed;

        /* json-c's own UTF-8 check lets overlong forms and surrogates through. */
        if (tok == NULL || len > INT32_MAX ||
            utf8_feed(UTF8_ACCEPT, (const uint8_t *)text, len) != UTF8_ACCEPT) {
                json_tokener_free(tok);
                return NULL;
        }
        /* Strict mode rejects comments and trailing bytes other than whitespace. */
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        parsed = json_tokener_parse_ex(tok, text, (int)len);
        if (parsed != NULL &&
            (json_tokener_get_parse_end(tok) != len || !reply_json_finite(parsed))) {
                json_object_put(parsed);
                parsed = NULL;
        }
        json_tokener_free(tok);
        return parsed;
}
