#include "reply.h"

#include <stdlib.h>
#include <string.h>

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
                                   json_object *results, int cached, size_t *len)
{
        json_object *obj = json_object_new_object();

        if (obj == NULL) {
                json_object_put(results);
                return NULL;
        }
        if (results == NULL)
                results = json_object_new_array();
        json_object_object_add(obj, "type", json_object_new_string("results"));
        json_object_object_add(obj, "seq", json_object_new_int64(seq));
        json_object_object_add(obj, "q", json_object_new_string_len(query, (int)query_len));
        json_object_object_add(obj, "results", results);
        json_object_object_add(obj, "cached", json_object_new_boolean(cached));
        return reply_serialize(obj, len);
}

char *reply_results(int64_t seq, const char *query, size_t query_len, json_object *results,
                    size_t *len)
{
        return reply_results_flagged(seq, query, query_len, results, 0, len);
}

char *reply_cached_results(int64_t seq, const char *query, size_t query_len, json_object *results,
                           size_t *len)
{
        return reply_results_flagged(seq, query, query_len, results, 1, len);
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
