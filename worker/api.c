#include "api.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

static size_t api_write_cb(char *data, size_t size, size_t count, void *arg)
{
        struct api *api = arg;
        size_t len = size * count;

        if (api->body_len + len > api->conf->max_result_bytes) {
                api->body_too_large = 1;
                return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
        }
        memcpy(api->body + api->body_len, data, len);
        api->body_len += len;
        return len;
}

int api_init(struct api *api, const struct conf *conf)
{
        memset(api, 0, sizeof(*api));
        api->conf = conf;
        api->curl = curl_easy_init();
        api->body = malloc(conf->max_result_bytes);
        api->url_cap = strlen(conf->api_url) + 8 * (3 * (size_t)conf->max_query_bytes) + 1;
        api->url = malloc(api->url_cap);
        if (api->curl == NULL || api->body == NULL || api->url == NULL)
                goto fail;
        for (unsigned i = 0; i < conf->header_count; i++) {
                struct curl_slist *list = curl_slist_append(api->headers, conf->headers[i]);

                if (list == NULL)
                        goto fail;
                api->headers = list;
        }

        curl_easy_setopt(api->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(api->curl, CURLOPT_TIMEOUT_MS, (long)conf->api_timeout_ms);
        curl_easy_setopt(api->curl, CURLOPT_USERAGENT, conf->user_agent);
        curl_easy_setopt(api->curl, CURLOPT_HTTPHEADER, api->headers);
        curl_easy_setopt(api->curl, CURLOPT_WRITEFUNCTION, api_write_cb);
        curl_easy_setopt(api->curl, CURLOPT_WRITEDATA, api);
        curl_easy_setopt(api->curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(api->curl, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(api->curl, CURLOPT_ACCEPT_ENCODING, "");
        return 0;

fail:
        api_free(api);
        return -1;
}

void api_free(struct api *api)
{
        if (api->curl != NULL)
                curl_easy_cleanup(api->curl);
        curl_slist_free_all(api->headers);
        free(api->body);
        free(api->url);
        memset(api, 0, sizeof(*api));
}

size_t api_encode_query(const char *text, size_t len, char *out)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t n = 0;

        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)text[i];

                if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~') {
                        out[n++] = (char)c;
                } else {
                        out[n++] = '%';
                        out[n++] = hex[c >> 4];
                        out[n++] = hex[c & 0xF];
                }
        }
        out[n] = '\0';
        return n;
}

/* Fills the URL template, replacing each "{q}" with the encoded query. Returns -1 if too long. */
static int api_build_url(struct api *api, const char *query, size_t len)
{
        char encoded[3 * 65536 + 1];
        size_t encoded_len = api_encode_query(query, len, encoded);
        const char *t = api->conf->api_url;
        size_t n = 0;

        while (*t != '\0') {
                if (strncmp(t, "{q}", 3) == 0) {
                        if (n + encoded_len >= api->url_cap)
                                return -1;
                        memcpy(api->url + n, encoded, encoded_len);
                        n += encoded_len;
                        t += 3;
                } else {
                        if (n + 1 >= api->url_cap)
                                return -1;
                        api->url[n++] = *t++;
                }
        }
        api->url[n] = '\0';
        return 0;
}

/* Returns 0 if OBJ or anything inside it is a number JSON cannot represent. */
static int api_json_finite(json_object *obj)
{
        switch (json_object_get_type(obj)) {
        case json_type_double:
                return isfinite(json_object_get_double(obj));
        case json_type_array:
                for (size_t i = 0; i < json_object_array_length(obj); i++) {
                        if (!api_json_finite(json_object_array_get_idx(obj, i)))
                                return 0;
                }
                return 1;
        case json_type_object: {
                json_object_object_foreach(obj, key, value)
                {
                        (void)key;
                        if (!api_json_finite(value))
                                return 0;
                }
                return 1;
        }
        default:
                return 1;
        }
}

int api_json_valid(const char *text, size_t len)
{
        struct json_tokener *tok = json_tokener_new_ex(API_MAX_DEPTH);
        json_object *parsed;
        int valid;

        if (tok == NULL || len > INT32_MAX) {
                json_tokener_free(tok);
                return 0;
        }
        /* Strict mode rejects comments, single quotes and trailing bytes other than whitespace. */
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        parsed = json_tokener_parse_ex(tok, text, (int)len);
        valid = parsed != NULL && json_tokener_get_parse_end(tok) == len && api_json_finite(parsed);
        json_object_put(parsed);
        json_tokener_free(tok);
        return valid;
}

enum ipc_status api_call(struct api *api, const char *query, size_t len, const char **error_code,
                         char *message, size_t message_len)
{
        long status = 0;
        CURLcode rc;

        if (api_build_url(api, query, len) < 0) {
                *error_code = REPLY_UPSTREAM_ERROR;
                snprintf(message, message_len, "API URL too long");
                return IPC_STATUS_UPSTREAM_ERROR;
        }
        api->body_len = 0;
        api->body_too_large = 0;
        curl_easy_setopt(api->curl, CURLOPT_URL, api->url);
        rc = curl_easy_perform(api->curl);
        if (rc == CURLE_OPERATION_TIMEDOUT) {
                *error_code = REPLY_UPSTREAM_TIMEOUT;
                snprintf(message, message_len, "the API did not answer within %u ms",
                         api->conf->api_timeout_ms);
                return IPC_STATUS_TIMEOUT;
        }
        if (rc == CURLE_WRITE_ERROR && api->body_too_large) {
                *error_code = REPLY_UPSTREAM_ERROR;
                snprintf(message, message_len, "the API response is larger than %u bytes",
                         api->conf->max_result_bytes);
                return IPC_STATUS_UPSTREAM_ERROR;
        }
        if (rc != CURLE_OK) {
                *error_code = REPLY_UPSTREAM_ERROR;
                snprintf(message, message_len, "API call failed: %s", curl_easy_strerror(rc));
                return IPC_STATUS_UPSTREAM_ERROR;
        }

        curl_easy_getinfo(api->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status == 429) {
                /* TODO: honour Retry-After by pausing every worker instead of failing the query. */
                *error_code = REPLY_UPSTREAM_REJECTED;
                snprintf(message, message_len,
                         "the API rejected the call: rate limit exceeded (429)");
                return IPC_STATUS_REJECTED;
        }
        if (status < 200 || status > 299) {
                *error_code = REPLY_UPSTREAM_ERROR;
                snprintf(message, message_len, "the API answered HTTP %ld", status);
                return IPC_STATUS_UPSTREAM_ERROR;
        }

        if (!api_json_valid(api->body, api->body_len)) {
                *error_code = REPLY_UPSTREAM_ERROR;
                snprintf(message, message_len, "the API response is not valid JSON");
                return IPC_STATUS_UPSTREAM_ERROR;
        }
        return IPC_STATUS_OK;
}
