/*
 * Calls to the search API with the libcurl multi interface: up to max_inflight calls run at
 * once in one worker, and the multi handle keeps connections to the API alive between calls.
 */
#ifndef INCSEARCHD_API_H
#define INCSEARCHD_API_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "conf.h"
#include "reply.h"
#include "ipc.h"
#include "shm.h"
#include "slot.h"

/* The deepest nesting accepted in an API body. */
#define API_MAX_DEPTH REPLY_MAX_DEPTH

/* One API call, running or waiting for its retry. */
struct api_call {
        CURL *easy; /* kept across calls, so its connection to the API is reused */
        struct slot_job job;
        unsigned attempts;    /* calls made for this job, retries included */
        uint64_t retry_at_ns; /* CLOCK_MONOTONIC time of the next attempt, 0 when none is due */
        uint64_t started_ns;  /* CLOCK_MONOTONIC time the current attempt started */
        int busy;             /* a job is assigned */
        int running;          /* added to the multi handle */
        char *url;            /* buffer for the URL with the query filled in */
        size_t url_cap;
        char *body; /* response body, up to max_result_bytes */
        size_t body_len;
        int body_too_large;
        const struct conf *conf;
};

struct api {
        const struct conf *conf;
        CURLM *multi;
        struct curl_slist *headers;
        struct api_call calls[SHM_MAX_INFLIGHT]; /* the first conf->max_inflight are used */
};

/* The worker's next step for a finished call. */
enum api_action {
        API_DELIVER,  /* send the reply: results, or an error that a retry cannot fix */
        API_RETRY,    /* timeout, connection error or 5xx: retry after a backoff */
        API_THROTTLE, /* 429 or 503: pause every worker, then call again */
};

/* The outcome of a finished call. */
struct api_outcome {
        enum api_action action;
        enum ipc_status status;
        const char *error_code; /* client error code when status is not IPC_STATUS_OK */
        char message[256];      /* for the client and the log */
        const char *body; /* the API's JSON body when status is IPC_STATUS_OK, until the call's
                             next attempt */
        size_t body_len;
        long http_status;  /* 0 when no response arrived */
        int has_delay;     /* Retry-After or a zero RateLimit remaining gave delay_ns */
        uint64_t delay_ns; /* pause the API asked for, from now */
};

int api_init(struct api *api, const struct conf *conf);

/*
 * Checks that TEXT is one JSON value a browser's JSON.parse accepts: strict syntax, valid
 * UTF-8, nesting up to API_MAX_DEPTH, and no NaN or infinite numbers. Returns 1 if so.
 */
int api_json_valid(const char *text, size_t len);
void api_free(struct api *api);

/*
 * Percent-encodes LEN bytes of TEXT into OUT per RFC 3986: unreserved characters stay, every
 * other byte becomes %XX. OUT needs 3 * LEN + 1 bytes. Returns the encoded length.
 */
size_t api_encode_query(const char *text, size_t len, char *out);

/*
 * Parses a Retry-After value (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date, the
 * latter compared with NOW_WALL. Stores the delay in *DELAY_NS (0 for a date in the past) and
 * returns 0, or returns -1 for a value that is neither.
 */
int api_parse_retry_after(const char *value, time_t now_wall, uint64_t *delay_ns);

/*
 * Parses a rate-limit reset value: seconds until the reset, or, when it is larger than any
 * sensible window (over 1e9), the reset time in epoch seconds, compared with NOW_WALL.
 * Returns 0 with *DELAY_NS, or -1 for a value that is not a non-negative integer.
 */
int api_parse_reset(const char *value, time_t now_wall, uint64_t *delay_ns);

/*
 * Starts the call for CALL->job on the multi handle. Returns 0, or -1 with OUTCOME filled in
 * when the URL cannot be built.
 */
int api_start(struct api *api, struct api_call *call, struct api_outcome *outcome);

/* Finishes CALL, which curl reported done with RC, and classifies its response into OUTCOME. */
void api_finish(struct api *api, struct api_call *call, CURLcode rc, struct api_outcome *outcome);

#endif
