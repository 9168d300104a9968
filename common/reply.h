/* The JSON messages that incsearchd sends to clients, built with json-c. */
#ifndef INCSEARCHD_REPLY_H
#define INCSEARCHD_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/* Error codes of the client protocol. */
#define REPLY_BAD_REQUEST "bad_request"
#define REPLY_QUERY_TOO_LONG "query_too_long"
#define REPLY_UPSTREAM_TIMEOUT "upstream_timeout"
#define REPLY_UPSTREAM_ERROR "upstream_error"
#define REPLY_UPSTREAM_REJECTED "upstream_rejected"
#define REPLY_OVERLOADED "overloaded"

/* The deepest nesting accepted in an API body; a reply around it adds one level. */
#define REPLY_MAX_DEPTH 64

/*
 * Builds {"type":"results","seq":SEQ,"q":QUERY,"results":RESULTS,"cached":false}. RESULTS is
 * JSON text that the caller has validated, copied as it is (NULL means an empty array). Returns
 * a malloc'd string and its length, or NULL when out of memory.
 */
char *reply_results(int64_t seq, const char *query, size_t query_len, const char *results,
                    size_t results_len, size_t *len);

/* Like reply_results, for a result from the cache: "cached" is true. */
char *reply_cached_results(int64_t seq, const char *query, size_t query_len, const char *results,
                           size_t results_len, size_t *len);

/*
 * Builds {"type":"error","seq":SEQ,"q":QUERY,"error":CODE,"message":MESSAGE}. A negative SEQ
 * or a NULL QUERY leaves that member out, for a message that could not be parsed. Returns a
 * malloc'd string and its length, or NULL when out of memory.
 */
char *reply_error(int64_t seq, const char *query, size_t query_len, const char *code,
                  const char *message, size_t *len);

/*
 * Parses TEXT if it is one JSON value that a browser's JSON.parse accepts: strict syntax, valid
 * UTF-8, nesting up to REPLY_MAX_DEPTH, and no NaN or infinite numbers. Returns the value, which
 * the caller puts, or NULL when TEXT is not such a value or is the literal null.
 */
json_object *reply_json_parse(const char *text, size_t len);

#endif
