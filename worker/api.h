/* Calls to the search API with libcurl. */
#ifndef INCSEARCHD_API_H
#define INCSEARCHD_API_H

#include <stddef.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "conf.h"
#include "ipc.h"

#define API_MAX_DEPTH 64

struct api {
        const struct conf *conf;
        CURL *curl; /* kept across calls, so the connection to the API is reused */
        struct curl_slist *headers;
        char *url; /* buffer for the URL with the query filled in */
        size_t url_cap;
        char *body; /* response body, up to max_result_bytes */
        size_t body_len;
        int body_too_large;
};

int api_init(struct api *api, const struct conf *conf);
void api_free(struct api *api);

/*
 * Percent-encodes LEN bytes of TEXT into OUT per RFC 3986: unreserved characters stay, every
 * other byte becomes %XX. OUT needs 3 * LEN + 1 bytes. Returns the encoded length.
 */
size_t api_encode_query(const char *text, size_t len, char *out);

/*
 * Calls the API for QUERY. On success returns IPC_STATUS_OK, and api->body holds body_len
 * bytes of valid JSON until the next call. Otherwise returns the failure kind, with the client
 * error code in *ERROR_CODE and a message for the client in MESSAGE.
 */
enum ipc_status api_call(struct api *api, const char *query, size_t len, const char **error_code,
                         char *message, size_t message_len);

/*
 * Checks that TEXT is one JSON value a browser's JSON.parse accepts: strict syntax, valid
 * UTF-8, nesting up to API_MAX_DEPTH, and no NaN or infinite numbers. Returns 1 if so.
 */
int api_json_valid(const char *text, size_t len);

#endif
