#include "api.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

#define API_NS_PER_S 1000000000ULL
#define API_MAX_DELAY_S 86400ULL /* a longer pause than a day is taken as a day */
#define API_EPOCH_THRESHOLD 1000000000ULL

static size_t api_write_cb(char *data, size_t size, size_t count, void *arg)
{
        struct api_call *call = arg;
        size_t len = size * count;

        if (call->body_len + len > call->conf->max_result_bytes) {
                call->body_too_large = 1;
                return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
        }
        memcpy(call->body + call->body_len, data, len);
        call->body_len += len;
        return len;
}

static int api_init_call(struct api *api, struct api_call *call)
{
        const struct conf *conf = api->conf;

        call->conf = conf;
        call->easy = curl_easy_init();
        call->body = malloc(conf->max_result_bytes);
        call->url_cap = strlen(conf->api_url) + 8 * (3 * (size_t)conf->max_query_bytes) + 1;
        call->url = malloc(call->url_cap);
        call->job.query = malloc(conf->max_query_bytes);
        if (call->easy == NULL || call->body == NULL || call->url == NULL ||
            call->job.query == NULL)
                return -1;

        curl_easy_setopt(call->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(call->easy, CURLOPT_TIMEOUT_MS, (long)conf->api_timeout_ms);
        curl_easy_setopt(call->easy, CURLOPT_USERAGENT, conf->user_agent);
        curl_easy_setopt(call->easy, CURLOPT_HTTPHEADER, api->headers);
        curl_easy_setopt(call->easy, CURLOPT_WRITEFUNCTION, api_write_cb);
        curl_easy_setopt(call->easy, CURLOPT_WRITEDATA, call);
        curl_easy_setopt(call->easy, CURLOPT_PRIVATE, call);
        curl_easy_setopt(call->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(call->easy, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(call->easy, CURLOPT_ACCEPT_ENCODING, "");
        curl_easy_setopt(call->easy, CURLOPT_TCP_KEEPALIVE, 1L);
        return 0;
}

int api_init(struct api *api, const struct conf *conf)
{
        memset(api, 0, sizeof(*api));
        api->conf = conf;
        api->multi = curl_multi_init();
        if (api->multi == NULL)
                goto fail;
        for (unsigned i = 0; i < conf->header_count; i++) {
                struct curl_slist *list = curl_slist_append(api->headers, conf->headers[i]);

                if (list == NULL)
                        goto fail;
                api->headers = list;
        }
        for (unsigned i = 0; i < conf->max_inflight; i++) {
                if (api_init_call(api, &api->calls[i]) < 0)
                        goto fail;
        }
        return 0;

fail:
        api_free(api);
        return -1;
}

void api_free(struct api *api)
{
        for (unsigned i = 0; i < SHM_MAX_INFLIGHT; i++) {
                struct api_call *call = &api->calls[i];

                if (call->easy != NULL) {
                        if (call->running)
                                curl_multi_remove_handle(api->multi, call->easy);
                        curl_easy_cleanup(call->easy);
                }
                free(call->body);
                free(call->url);
                free(call->job.query);
        }
        if (api->multi != NULL)
                curl_multi_cleanup(api->multi);
        curl_slist_free_all(api->headers);
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
static int api_build_url(struct api_call *call, const char *query, size_t len)
{
        char encoded[3 * 65536 + 1];
        size_t encoded_len = api_encode_query(query, len, encoded);
        const char *t = call->conf->api_url;
        size_t n = 0;

        while (*t != '\0') {
                if (strncmp(t, "{q}", 3) == 0) {
                        if (n + encoded_len >= call->url_cap)
                                return -1;
                        memcpy(call->url + n, encoded, encoded_len);
                        n += encoded_len;
                        t += 3;
                } else {
                        if (n + 1 >= call->url_cap)
                                return -1;
                        call->url[n++] = *t++;
                }
        }
        call->url[n] = '\0';
        return 0;
}

static int api_parse_seconds(const char *value, uint64_t *seconds)
{
        char *end;
        unsigned long long n;

        while (*value == ' ' || *value == '\t')
                value++;
        if (!isdigit((unsigned char)*value))
                return -1;
        errno = 0;
        n = strtoull(value, &end, 10);
        while (*end == ' ' || *end == '\t')
                end++;
        if (errno != 0 || *end != '\0')
                return -1;
        *seconds = n;
        return 0;
}

static uint64_t api_seconds_to_ns(uint64_t seconds)
{
        return (seconds > API_MAX_DELAY_S ? API_MAX_DELAY_S : seconds) * API_NS_PER_S;
}

static uint64_t api_until_epoch(uint64_t epoch, time_t now_wall)
{
        if ((int64_t)epoch <= (int64_t)now_wall)
                return 0;
        return api_seconds_to_ns(epoch - (uint64_t)now_wall);
}

int api_parse_retry_after(const char *value, time_t now_wall, uint64_t *delay_ns)
{
        uint64_t seconds;
        time_t date;

        if (api_parse_seconds(value, &seconds) == 0) {
                *delay_ns = api_seconds_to_ns(seconds);
                return 0;
        }
        date = curl_getdate(value, NULL);
        if (date < 0)
                return -1;
        *delay_ns = api_until_epoch((uint64_t)date, now_wall);
        return 0;
}

int api_parse_reset(const char *value, time_t now_wall, uint64_t *delay_ns)
{
        uint64_t seconds;

        if (api_parse_seconds(value, &seconds) < 0)
                return -1;
        if (seconds > API_EPOCH_THRESHOLD)
                *delay_ns = api_until_epoch(seconds, now_wall);
        else
                *delay_ns = api_seconds_to_ns(seconds);
        return 0;
}

/* Returns the value of response header NAME, or NULL. */
static const char *api_header(struct api_call *call, const char *name)
{
        struct curl_header *header;

        if (curl_easy_header(call->easy, name, 0, CURLH_HEADER, -1, &header) != CURLHE_OK)
                return NULL;
        return header->value;
}

/*
 * Reads the rate-limit headers (X-RateLimit-Remaining and -Reset, or RateLimit-Remaining and
 * -Reset): with zero calls remaining, the API wants no call before the reset.
 */
static void api_read_ratelimit(struct api_call *call, struct api_outcome *outcome)
{
        static const char *const prefixes[] = {"X-RateLimit-", "RateLimit-"};
        char name[64];
        const char *value;
        uint64_t remaining;

        for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
                snprintf(name, sizeof(name), "%sRemaining", prefixes[i]);
                value = api_header(call, name);
                if (value == NULL || api_parse_seconds(value, &remaining) < 0 || remaining > 0)
                        continue;
                snprintf(name, sizeof(name), "%sReset", prefixes[i]);
                value = api_header(call, name);
                if (value != NULL && api_parse_reset(value, time(NULL), &outcome->delay_ns) == 0) {
                        outcome->has_delay = 1;
                        return;
                }
        }
}

int api_start(struct api *api, struct api_call *call, struct api_outcome *outcome)
{
        if (api_build_url(call, call->job.query, call->job.query_len) < 0) {
                memset(outcome, 0, sizeof(*outcome));
                outcome->action = API_DELIVER;
                outcome->status = IPC_STATUS_UPSTREAM_ERROR;
                outcome->error_code = REPLY_UPSTREAM_ERROR;
                snprintf(outcome->message, sizeof(outcome->message), "API URL too long");
                return -1;
        }
        call->body_len = 0;
        call->body_too_large = 0;
        call->started_ns = shm_now_ns();
        call->attempts++;
        curl_easy_setopt(call->easy, CURLOPT_URL, call->url);
        if (curl_multi_add_handle(api->multi, call->easy) != CURLM_OK) {
                memset(outcome, 0, sizeof(*outcome));
                outcome->action = API_RETRY;
                outcome->status = IPC_STATUS_UPSTREAM_ERROR;
                outcome->error_code = REPLY_UPSTREAM_ERROR;
                snprintf(outcome->message, sizeof(outcome->message),
                         "cannot start the API call in libcurl");
                return -1;
        }
        call->running = 1;
        return 0;
}

static void api_fail(struct api_outcome *outcome, enum api_action action, enum ipc_status status,
                     const char *code, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void api_fail(struct api_outcome *outcome, enum api_action action, enum ipc_status status,
                     const char *code, const char *fmt, ...)
{
        va_list ap;

        outcome->action = action;
        outcome->status = status;
        outcome->error_code = code;
        va_start(ap, fmt);
        vsnprintf(outcome->message, sizeof(outcome->message), fmt, ap);
        va_end(ap);
}

int api_json_valid(const char *text, size_t len)
{
        json_object *parsed = reply_json_parse(text, len);

        json_object_put(parsed);
        return parsed != NULL;
}

/* Checks the body of a 2xx response; the reply carries it as received. */
static void api_check_body(struct api_call *call, struct api_outcome *outcome)
{
        if (!api_json_valid(call->body, call->body_len)) {
                api_fail(outcome, API_DELIVER, IPC_STATUS_UPSTREAM_ERROR, REPLY_UPSTREAM_ERROR,
                         "the API response is not valid JSON");
                return;
        }
        outcome->action = API_DELIVER;
        outcome->status = IPC_STATUS_OK;
        outcome->body = call->body;
        outcome->body_len = call->body_len;
}

void api_finish(struct api *api, struct api_call *call, CURLcode rc, struct api_outcome *outcome)
{
        const char *retry_after;

        memset(outcome, 0, sizeof(*outcome));
        curl_multi_remove_handle(api->multi, call->easy);
        call->running = 0;

        if (rc == CURLE_OPERATION_TIMEDOUT) {
                api_fail(outcome, API_RETRY, IPC_STATUS_TIMEOUT, REPLY_UPSTREAM_TIMEOUT,
                         "the API did not answer within %u ms", call->conf->api_timeout_ms);
                return;
        }
        if (rc == CURLE_WRITE_ERROR && call->body_too_large) {
                api_fail(outcome, API_DELIVER, IPC_STATUS_UPSTREAM_ERROR, REPLY_UPSTREAM_ERROR,
                         "the API response is larger than %u bytes", call->conf->max_result_bytes);
                return;
        }
        if (rc != CURLE_OK) {
                api_fail(outcome, API_RETRY, IPC_STATUS_UPSTREAM_ERROR, REPLY_UPSTREAM_ERROR,
                         "API call failed: %s", curl_easy_strerror(rc));
                return;
        }

        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &outcome->http_status);
        if (outcome->http_status == 429 || outcome->http_status == 503) {
                retry_after = api_header(call, "Retry-After");
                if (retry_after != NULL &&
                    api_parse_retry_after(retry_after, time(NULL), &outcome->delay_ns) == 0)
                        outcome->has_delay = 1;
                else
                        api_read_ratelimit(call, outcome);
                api_fail(outcome, API_THROTTLE, IPC_STATUS_REJECTED, REPLY_UPSTREAM_REJECTED,
                         "the API rejected the call with HTTP %ld (rate limit)",
                         outcome->http_status);
                return;
        }
        if (outcome->http_status >= 500 && outcome->http_status <= 599) {
                api_fail(outcome, API_RETRY, IPC_STATUS_UPSTREAM_ERROR, REPLY_UPSTREAM_ERROR,
                         "the API answered HTTP %ld", outcome->http_status);
                return;
        }
        if (outcome->http_status < 200 || outcome->http_status > 299) {
                api_fail(outcome, API_DELIVER, IPC_STATUS_UPSTREAM_ERROR, REPLY_UPSTREAM_ERROR,
                         "the API answered HTTP %ld", outcome->http_status);
                return;
        }
        api_check_body(call, outcome);
        api_read_ratelimit(call, outcome);
}
