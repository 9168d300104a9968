/*
 * incsearch-demo-api: a search API over Debian's iso-codes place names that
 * plays the rate-limited third-party upstream in front of which incsearchd
 * runs. It serves GET /search?q=TEXT&limit=N from one token bucket, responds
 * with 429 and Retry-After when the bucket is empty, and counts requests at
 * GET /stats. With -F, fault: queries make it misbehave for tests.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>

#include "places.h"

#define DEMOAPI_NAME "incsearch-demo-api"
#define DEMOAPI_DEFAULT_LISTEN "127.0.0.1:8081"
#define DEMOAPI_DEFAULT_RATE "10"
#define DEMOAPI_DEFAULT_BURST 10
#define DEMOAPI_DEFAULT_DIR "/usr/share/iso-codes/json"
#define DEMOAPI_MAX_RATE 1000000  /* requests per second */
#define DEMOAPI_MAX_BURST 1000000 /* requests */
#define DEMOAPI_DEFAULT_LIMIT 10  /* results */
#define DEMOAPI_MAX_LIMIT 50      /* results */
#define DEMOAPI_MAX_SLOW_MS 60000
#define DEMOAPI_BIG_BYTES (2 * 1024 * 1024)
#define DEMOAPI_MAX_HEADERS_BYTES 16384
#define DEMOAPI_MAX_BODY_BYTES 4096
#define DEMOAPI_FAULT_PREFIX "fault:"
#define DEMOAPI_MAX_REJECTED 256

/*
 * One token in bucket units of 1e-12 token. With the rate in 1e-3 tokens per
 * second, nanoseconds times rate is exactly the number of units earned, so
 * refills never round and the bucket does not drift.
 */
#define DEMOAPI_TOKEN ((uint64_t)1000000000000)
#define DEMOAPI_NS_PER_SEC ((uint64_t)1000000000)

struct demoapi_options {
        const char *listen; /* "ADDR:PORT" */
        const char *dir;
        uint64_t rate;  /* 1e-3 requests per second */
        uint64_t burst; /* requests */
        int faults;
        int verbose;
};

struct demoapi_bucket {
        uint64_t level;    /* 1e-12 tokens */
        uint64_t capacity; /* 1e-12 tokens */
        uint64_t rate;     /* 1e-3 tokens per second, at least 1 */
        uint64_t refilled; /* CLOCK_MONOTONIC time of the last refill, ns */
};

struct demoapi;

/* A fault:slow request waiting for its timer. */
struct demoapi_slow {
        TAILQ_ENTRY(demoapi_slow) entry;
        struct demoapi *api;
        struct evhttp_request *req;
        struct evhttp_connection *evcon; /* NULL once evhttp has detached req from it */
        struct event *timer;
        char *query; /* searched when the timer fires */
        size_t limit;
};

TAILQ_HEAD(demoapi_slow_list, demoapi_slow);

/* Program state. main() owns the only instance. */
struct demoapi {
        struct event_base *base;
        struct evhttp *http;
        struct event *sigint;
        struct event *sigterm;
        struct places *places;
        struct demoapi_bucket bucket;
        struct demoapi_slow_list slow;
        char *big_body; /* fault:big response, built on first use */
        size_t big_body_len;
        char rate_text[32]; /* the effective rate, as logged and in /stats */
        uint64_t burst;
        uint64_t requests;                    /* /search requests received */
        uint64_t served;                      /* /search requests that got a token */
        uint64_t violations;                  /* /search requests rejected with 429 */
        uint64_t connections;                 /* TCP connections accepted */
        char *rejected[DEMOAPI_MAX_REJECTED]; /* fault:429 and fault:503 queries rejected once */
        unsigned rejected_count;
        int faults;
        int verbose;
        int stop_signal;
};

static void demoapi_log(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Writes one line to stderr, "incsearch-demo-api[PID] level: message". */
static void demoapi_log(const char *level, const char *fmt, ...)
{
        int saved_errno = errno;
        char message[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        fprintf(stderr, "%s[%ld] %s: %s\n", DEMOAPI_NAME, (long)getpid(), level, message);
        errno = saved_errno;
}

/* Writes libevent's own messages, such as a failed name lookup, in the same format. */
static void demoapi_libevent_log_cb(int severity, const char *message)
{
        const char *level = "debug";

        if (severity >= EVENT_LOG_ERR)
                level = "error";
        else if (severity == EVENT_LOG_WARN)
                level = "warn";
        else if (severity == EVENT_LOG_MSG)
                level = "info";
        demoapi_log(level, "libevent: %s", message);
}

static uint64_t demoapi_now_ns(void)
{
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        return (uint64_t)now.tv_sec * DEMOAPI_NS_PER_SEC + (uint64_t)now.tv_nsec;
}

static void demoapi_bucket_init(struct demoapi_bucket *bucket, uint64_t rate, uint64_t burst)
{
        bucket->capacity = burst * DEMOAPI_TOKEN;
        bucket->level = bucket->capacity;
        bucket->rate = rate;
        bucket->refilled = demoapi_now_ns();
}

static void demoapi_bucket_refill(struct demoapi_bucket *bucket, uint64_t now)
{
        uint64_t elapsed, missing;

        if (now <= bucket->refilled)
                return;
        elapsed = now - bucket->refilled;
        bucket->refilled = now;

        /* elapsed * rate is computed only when it is at most missing, so it cannot overflow. */
        missing = bucket->capacity - bucket->level;
        if (elapsed > missing / bucket->rate)
                bucket->level = bucket->capacity;
        else
                bucket->level += elapsed * bucket->rate;
}

/*
 * Takes one token and returns 0, or returns -1 and stores in *retry_after the
 * whole seconds, at least 1, until the bucket contains a token again.
 */
static int demoapi_bucket_take(struct demoapi_bucket *bucket, uint64_t now, uint64_t *retry_after)
{
        uint64_t wait_ns;

        demoapi_bucket_refill(bucket, now);
        if (bucket->level >= DEMOAPI_TOKEN) {
                bucket->level -= DEMOAPI_TOKEN;
                return 0;
        }

        wait_ns = (DEMOAPI_TOKEN - bucket->level + bucket->rate - 1) / bucket->rate;
        *retry_after = (wait_ns + DEMOAPI_NS_PER_SEC - 1) / DEMOAPI_NS_PER_SEC;
        if (*retry_after == 0)
                *retry_after = 1;
        return -1;
}

static const char *demoapi_method_name(enum evhttp_cmd_type method)
{
        switch (method) {
        case EVHTTP_REQ_GET:
                return "GET";
        case EVHTTP_REQ_POST:
                return "POST";
        case EVHTTP_REQ_HEAD:
                return "HEAD";
        case EVHTTP_REQ_PUT:
                return "PUT";
        case EVHTTP_REQ_DELETE:
                return "DELETE";
        case EVHTTP_REQ_OPTIONS:
                return "OPTIONS";
        case EVHTTP_REQ_TRACE:
                return "TRACE";
        case EVHTTP_REQ_CONNECT:
                return "CONNECT";
        case EVHTTP_REQ_PATCH:
                return "PATCH";
        }
        return "?";
}

static const char *demoapi_reason(int status)
{
        switch (status) {
        case 200:
                return "OK";
        case 400:
                return "Bad Request";
        case 404:
                return "Not Found";
        case 405:
                return "Method Not Allowed";
        case 429:
                return "Too Many Requests";
        case 500:
                return "Internal Server Error";
        }
        return "Unknown";
}

/*
 * Logs one request at debug level: peer, method, URI, then the status and body
 * size, or outcome when there was no response. Control bytes and bytes outside
 * ASCII in the URI are printed as '?' so that a client cannot forge log lines.
 */
static void demoapi_log_request(struct evhttp_request *req, const char *outcome)
{
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        const char *uri = evhttp_request_get_uri(req);
        char printable[256], *host = NULL;
        ev_uint16_t port = 0;
        size_t i;

        for (i = 0; uri[i] != '\0' && i < sizeof(printable) - 1; i++)
                printable[i] = (uri[i] > ' ' && uri[i] < 0x7f) ? uri[i] : '?';
        printable[i] = '\0';
        if (evcon != NULL)
                evhttp_connection_get_peer(evcon, &host, &port);

        demoapi_log("debug", "%s:%u %s %s%s %s", host != NULL ? host : "-", port,
                    demoapi_method_name(evhttp_request_get_command(req)), printable,
                    uri[i] != '\0' ? "..." : "", outcome);
}

/* Sends status with the body already in the request's output buffer. */
static void demoapi_send(struct demoapi *api, struct evhttp_request *req, int status)
{
        char outcome[64];

        if (api->verbose) {
                snprintf(outcome, sizeof(outcome), "%d %zu bytes", status,
                         evbuffer_get_length(evhttp_request_get_output_buffer(req)));
                demoapi_log_request(req, outcome);
        }
        evhttp_send_reply(req, status, demoapi_reason(status), NULL);
}

static void demoapi_send_json(struct demoapi *api, struct evhttp_request *req, int status,
                              json_object *json)
{
        struct evbuffer *body = evhttp_request_get_output_buffer(req);
        const char *text;
        size_t len;

        text = json_object_to_json_string_length(
            json, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        if (text == NULL || evbuffer_add(body, text, len) == -1) {
                demoapi_log("warn", "out of memory for a %d response", status);
                evbuffer_drain(body, evbuffer_get_length(body));
                status = 500;
        }
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        demoapi_send(api, req, status);
}

static void demoapi_send_error(struct demoapi *api, struct evhttp_request *req, int status,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Sends status with the body {"error": message}. */
static void demoapi_send_error(struct demoapi *api, struct evhttp_request *req, int status,
                               const char *fmt, ...)
{
        json_object *json, *message;
        char text[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);

        json = json_object_new_object();
        message = json_object_new_string(text);
        if (json != NULL && message != NULL && json_object_object_add(json, "error", message) == 0)
                message = NULL;
        json_object_put(message);
        demoapi_send_json(api, req, status, json);
        json_object_put(json);
}

static void demoapi_send_method_not_allowed(struct demoapi *api, struct evhttp_request *req)
{
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        demoapi_send_error(api, req, 405, "method %s not allowed; use GET",
                           demoapi_method_name(evhttp_request_get_command(req)));
}

static void demoapi_send_search(struct demoapi *api, struct evhttp_request *req, const char *query,
                                size_t limit)
{
        json_object *results = places_search(api->places, query, limit);

        if (results == NULL) {
                demoapi_log("warn", "out of memory searching for %zu places", limit);
                demoapi_send_error(api, req, 500, "out of memory");
                return;
        }
        demoapi_send_json(api, req, 200, results);
        json_object_put(results);
}

/*
 * Decodes len bytes of a query string value from percent-encoding, with '+' as
 * space, into *value for the caller to free. Returns 1, or -1 if the value
 * decodes to a string with a NUL byte or memory runs out.
 */
static int demoapi_decode_param(const char *text, size_t len, char **value)
{
        size_t decoded_len;
        char *raw;

        if ((raw = strndup(text, len)) == NULL)
                return -1;
        *value = evhttp_uridecode(raw, 1, &decoded_len);
        free(raw);
        if (*value == NULL)
                return -1;
        if (strlen(*value) != decoded_len) {
                free(*value);
                *value = NULL;
                return -1;
        }
        return 1;
}

/*
 * Finds name in the raw query string of a URI, which may be NULL, and stores
 * its decoded value in *value for the caller to free. Returns 1 if found, 0 if
 * missing, and -1 as demoapi_decode_param() does.
 */
static int demoapi_query_param(const char *query, const char *name, char **value)
{
        size_t name_len = strlen(name), field_len, key_len;
        const char *field = query, *equals;

        *value = NULL;
        while (field != NULL && *field != '\0') {
                field_len = strcspn(field, "&");
                equals = memchr(field, '=', field_len);
                key_len = equals != NULL ? (size_t)(equals - field) : field_len;
                if (key_len == name_len && strncmp(field, name, name_len) == 0) {
                        if (equals == NULL)
                                return demoapi_decode_param("", 0, value);
                        return demoapi_decode_param(equals + 1, field_len - key_len - 1, value);
                }
                field = field[field_len] == '&' ? field + field_len + 1 : NULL;
        }
        return 0;
}

/* Parses a decimal number of results from 1 to DEMOAPI_MAX_LIMIT. */
static int demoapi_parse_limit(const char *text, size_t *limit)
{
        unsigned long value;
        char *end;

        if (text[0] < '0' || text[0] > '9')
                return -1;
        errno = 0;
        value = strtoul(text, &end, 10);
        if (errno != 0 || *end != '\0' || value < 1 || value > DEMOAPI_MAX_LIMIT)
                return -1;
        *limit = value;
        return 0;
}

/*
 * Reads q and limit from the request into *query, for the caller to free, and
 * *limit. On a bad request sends 400 and returns -1.
 */
static int demoapi_search_params(struct demoapi *api, struct evhttp_request *req, char **query,
                                 size_t *limit)
{
        const char *raw = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
        char *limit_text;
        int found;

        found = demoapi_query_param(raw, "q", query);
        if (found <= 0) {
                demoapi_send_error(api, req, 400,
                                   found == 0
                                       ? "missing parameter q; use /search?q=TEXT&limit=N"
                                       : "invalid parameter q: it contains %%00, a NUL byte");
                return -1;
        }

        *limit = DEMOAPI_DEFAULT_LIMIT;
        found = demoapi_query_param(raw, "limit", &limit_text);
        if (found == 1 && demoapi_parse_limit(limit_text, limit) == 0)
                found = 0;
        if (found != 0) {
                demoapi_send_error(api, req, 400,
                                   "invalid limit \"%.64s\": expected an integer from 1 to %d",
                                   limit_text != NULL ? limit_text : "", DEMOAPI_MAX_LIMIT);
                free(limit_text);
                free(*query);
                *query = NULL;
                return -1;
        }
        free(limit_text);
        return 0;
}

static void demoapi_slow_free(struct demoapi_slow *slow)
{
        TAILQ_REMOVE(&slow->api->slow, slow, entry);
        event_free(slow->timer);
        free(slow->query);
        free(slow);
}

static void demoapi_slow_cb(evutil_socket_t fd, short events, void *arg)
{
        struct demoapi_slow *slow = arg;

        (void)fd;
        (void)events;
        /* A request whose client has gone is freed by evhttp when it is sent. */
        demoapi_send_search(slow->api, slow->req, slow->query, slow->limit);
        demoapi_slow_free(slow);
}

/*
 * Runs when evhttp frees a connection. A request still attached to it is
 * freed with it, so its timer must go. A request that evhttp detached
 * because the client closed stays alive until it is sent, so its timer stays.
 */
static void demoapi_slow_closed_cb(struct evhttp_connection *evcon, void *arg)
{
        struct demoapi *api = arg;
        struct demoapi_slow *slow, *next;

        for (slow = TAILQ_FIRST(&api->slow); slow != NULL; slow = next) {
                next = TAILQ_NEXT(slow, entry);
                if (slow->evcon != evcon)
                        continue;
                if (evhttp_request_get_connection(slow->req) == evcon) {
                        demoapi_slow_free(slow);
                } else {
                        /*
                         * NOTE: libevent 2.1.12 stops reading while a request waits
                         * for its response, so it never detaches one on close and this
                         * branch is untested.
                         */
                        slow->evcon = NULL;
                }
        }
}

/* Parses "MS" or "MS:TEXT" with MS from 0 to DEMOAPI_MAX_SLOW_MS. */
static int demoapi_parse_slow(const char *spec, unsigned long *ms, const char **text)
{
        char *end;

        if (spec[0] < '0' || spec[0] > '9')
                return -1;
        errno = 0;
        *ms = strtoul(spec, &end, 10);
        if (errno != 0 || *ms > DEMOAPI_MAX_SLOW_MS || (*end != '\0' && *end != ':'))
                return -1;
        *text = *end == ':' ? end + 1 : "";
        return 0;
}

/* Responds to fault:slow:MS[:TEXT] with the results for TEXT after MS milliseconds. */
static void demoapi_fault_slow(struct demoapi *api, struct evhttp_request *req, const char *query,
                               size_t limit)
{
        const char *spec = query + strlen(DEMOAPI_FAULT_PREFIX "slow:"), *text;
        struct demoapi_slow *slow;
        struct timeval delay;
        unsigned long ms;

        if (demoapi_parse_slow(spec, &ms, &text) == -1) {
                demoapi_send_error(api, req, 400,
                                   "invalid fault query \"%.64s\": expected fault:slow:MS[:TEXT] "
                                   "with MS from 0 to %d",
                                   query, DEMOAPI_MAX_SLOW_MS);
                return;
        }

        if ((slow = calloc(1, sizeof(*slow))) == NULL || (slow->query = strdup(text)) == NULL ||
            (slow->timer = evtimer_new(api->base, demoapi_slow_cb, slow)) == NULL) {
                if (slow != NULL)
                        free(slow->query);
                free(slow);
                demoapi_log("warn", "out of memory delaying a fault:slow request");
                demoapi_send_error(api, req, 500, "out of memory");
                return;
        }
        slow->api = api;
        slow->req = req;
        slow->evcon = evhttp_request_get_connection(req);
        slow->limit = limit;
        TAILQ_INSERT_TAIL(&api->slow, slow, entry);
        evhttp_connection_set_closecb(slow->evcon, demoapi_slow_closed_cb, api);

        delay.tv_sec = ms / 1000;
        delay.tv_usec = (ms % 1000) * 1000;
        evtimer_add(slow->timer, &delay);
}

/* Returns 1 the first time QUERY is seen, remembering it, and 0 afterwards. */
static int demoapi_first_rejection(struct demoapi *api, const char *query)
{
        char *copy;

        for (unsigned i = 0; i < api->rejected_count; i++) {
                if (strcmp(api->rejected[i], query) == 0)
                        return 0;
        }
        if (api->rejected_count == DEMOAPI_MAX_REJECTED || (copy = strdup(query)) == NULL)
                return 1;
        api->rejected[api->rejected_count++] = copy;
        return 1;
}

/*
 * Responds to fault:STATUS:RETRY[:TEXT], STATUS being 429 or 503, with STATUS and the header
 * Retry-After: RETRY ("none" leaves it out). With TEXT, which must not contain a colon, only
 * the first request for this query is rejected and later ones get the results for TEXT.
 */
static void demoapi_fault_throttle(struct demoapi *api, struct evhttp_request *req,
                                   const char *query, size_t limit)
{
        const char *spec = query + strlen(DEMOAPI_FAULT_PREFIX), *retry = spec + 4, *text;
        int status = strncmp(spec, "503:", 4) == 0 ? 503 : 429;
        char value[64];
        size_t len;

        /* The last colon starts TEXT, since an HTTP-date contains colons itself. */
        text = strrchr(retry, ':');
        len = text != NULL ? (size_t)(text - retry) : strlen(retry);
        if (text != NULL && !demoapi_first_rejection(api, query)) {
                demoapi_send_search(api, req, text + 1, limit);
                return;
        }
        snprintf(value, sizeof(value), "%.*s", (int)(len < sizeof(value) ? len : sizeof(value) - 1),
                 retry);
        if (strcmp(value, "none") != 0)
                evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", value);
        demoapi_send_error(api, req, status, "injected fault for query \"%.64s\"", query);
}

/* Responds to fault:reset:VALUE:TEXT with the results for TEXT and X-RateLimit-Remaining: 0,
 * X-RateLimit-Reset: VALUE. */
static void demoapi_fault_reset(struct demoapi *api, struct evhttp_request *req, const char *query,
                                size_t limit)
{
        const char *spec = query + strlen(DEMOAPI_FAULT_PREFIX "reset:");
        const char *text = strchr(spec, ':');
        struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
        char value[64];

        if (text == NULL || (size_t)(text - spec) >= sizeof(value)) {
                demoapi_send_error(api, req, 400,
                                   "invalid fault query \"%.64s\": expected fault:reset:VALUE:TEXT",
                                   query);
                return;
        }
        snprintf(value, sizeof(value), "%.*s", (int)(text - spec), spec);
        evhttp_add_header(headers, "X-RateLimit-Remaining", "0");
        evhttp_add_header(headers, "X-RateLimit-Reset", value);
        demoapi_send_search(api, req, text + 1, limit);
}

/* Closes the connection of req without a response, which frees req. */
static void demoapi_fault_close(struct demoapi *api, struct evhttp_request *req)
{
        if (api->verbose)
                demoapi_log_request(req, "closed without response");
        /*
         * This is safe in a request callback because evhttp_connection_done() in
         * libevent's http.c does not touch an incoming connection after the
         * callback returns.
         */
        evhttp_connection_free(evhttp_request_get_connection(req));
}

/* Builds a JSON array of filler places of at least DEMOAPI_BIG_BYTES. */
static int demoapi_make_big_body(struct demoapi *api)
{
        size_t size = DEMOAPI_BIG_BYTES + 256, len = 0, i;
        char *body;

        if ((body = malloc(size)) == NULL)
                return -1;
        body[len++] = '[';
        for (i = 0; len < DEMOAPI_BIG_BYTES; i++) {
                len += snprintf(body + len, size - len,
                                "%s{\"name\":\"Filler %06zu\",\"code\":\"ZZ-%06zu\","
                                "\"type\":\"Filler\",\"country\":\"Nowhere\"}",
                                i > 0 ? "," : "", i, i);
        }
        body[len++] = ']';

        api->big_body = body;
        api->big_body_len = len;
        return 0;
}

static void demoapi_fault_big(struct demoapi *api, struct evhttp_request *req)
{
        struct evbuffer *body = evhttp_request_get_output_buffer(req);

        if ((api->big_body == NULL && demoapi_make_big_body(api) == -1) ||
            evbuffer_add_reference(body, api->big_body, api->big_body_len, NULL, NULL) == -1) {
                demoapi_log("warn", "out of memory building the fault:big response");
                demoapi_send_error(api, req, 500, "out of memory");
                return;
        }
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        demoapi_send(api, req, 200);
}

static void demoapi_fault_bad_json(struct demoapi *api, struct evhttp_request *req)
{
        evbuffer_add_printf(evhttp_request_get_output_buffer(req), "this is not json");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        demoapi_send(api, req, 200);
}

/* Handles a query that starts with DEMOAPI_FAULT_PREFIX, which only -F enables. */
static void demoapi_fault(struct demoapi *api, struct evhttp_request *req, const char *query,
                          size_t limit)
{
        const char *fault = query + strlen(DEMOAPI_FAULT_PREFIX);

        if (strcmp(fault, "500") == 0)
                demoapi_send_error(api, req, 500, "injected fault for query \"%s\"", query);
        else if (strcmp(fault, "badjson") == 0)
                demoapi_fault_bad_json(api, req);
        else if (strncmp(fault, "slow:", 5) == 0)
                demoapi_fault_slow(api, req, query, limit);
        else if (strcmp(fault, "close") == 0)
                demoapi_fault_close(api, req);
        else if (strcmp(fault, "big") == 0)
                demoapi_fault_big(api, req);
        else if (strncmp(fault, "429:", 4) == 0 || strncmp(fault, "503:", 4) == 0)
                demoapi_fault_throttle(api, req, query, limit);
        else if (strncmp(fault, "reset:", 6) == 0)
                demoapi_fault_reset(api, req, query, limit);
        else
                demoapi_send_error(api, req, 400,
                                   "unknown fault query \"%.64s\"; expected fault:500, "
                                   "fault:badjson, fault:slow:MS[:TEXT], fault:close, fault:big, "
                                   "fault:429:RETRY[:TEXT], fault:503:RETRY[:TEXT] or "
                                   "fault:reset:VALUE:TEXT",
                                   query);
}

static void demoapi_search_cb(struct evhttp_request *req, void *arg)
{
        struct demoapi *api = arg;
        uint64_t retry_after;
        char header[32], *query;
        size_t limit;

        api->requests++;
        if (demoapi_bucket_take(&api->bucket, demoapi_now_ns(), &retry_after) == -1) {
                api->violations++;
                snprintf(header, sizeof(header), "%llu", (unsigned long long)retry_after);
                evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", header);
                demoapi_send_error(api, req, 429, "rate limit exceeded");
                return;
        }
        api->served++;

        if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
                demoapi_send_method_not_allowed(api, req);
                return;
        }
        if (demoapi_search_params(api, req, &query, &limit) == -1)
                return;

        if (api->faults && strncmp(query, DEMOAPI_FAULT_PREFIX, strlen(DEMOAPI_FAULT_PREFIX)) == 0)
                demoapi_fault(api, req, query, limit);
        else
                demoapi_send_search(api, req, query, limit);
        free(query);
}

static int demoapi_add_uint64(json_object *object, const char *key, uint64_t value)
{
        json_object *number = json_object_new_uint64(value);

        if (number == NULL || json_object_object_add(object, key, number) != 0) {
                json_object_put(number);
                return -1;
        }
        return 0;
}

static void demoapi_stats_cb(struct evhttp_request *req, void *arg)
{
        struct demoapi *api = arg;
        json_object *stats, *rate;

        if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
                demoapi_send_method_not_allowed(api, req);
                return;
        }

        if ((stats = json_object_new_object()) == NULL)
                goto nomem;
        if (demoapi_add_uint64(stats, "requests", api->requests) == -1 ||
            demoapi_add_uint64(stats, "served", api->served) == -1 ||
            demoapi_add_uint64(stats, "violations", api->violations) == -1 ||
            demoapi_add_uint64(stats, "connections", api->connections) == -1)
                goto nomem;

        /* Serialized from rate_text, so that 0.1 is not printed as 0.10000000000000001. */
        rate = json_object_new_double_s(strtod(api->rate_text, NULL), api->rate_text);
        if (rate == NULL || json_object_object_add(stats, "rate", rate) != 0) {
                json_object_put(rate);
                goto nomem;
        }
        if (demoapi_add_uint64(stats, "burst", api->burst) == -1)
                goto nomem;

        demoapi_send_json(api, req, 200, stats);
        json_object_put(stats);
        return;

nomem:
        json_object_put(stats);
        demoapi_log("warn", "out of memory building the /stats response");
        demoapi_send_error(api, req, 500, "out of memory");
}

/* Counts each accepted connection; evhttp then uses the socket-less bufferevent it returns. */
static struct bufferevent *demoapi_connection_cb(struct event_base *base, void *arg)
{
        struct demoapi *api = arg;

        api->connections++;
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

static void demoapi_not_found_cb(struct evhttp_request *req, void *arg)
{
        const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

        demoapi_send_error(arg, req, 404, "no such path \"%.64s\"; use /search?q=TEXT or /stats",
                           path != NULL ? path : "");
}

static void demoapi_signal_cb(evutil_socket_t signum, short events, void *arg)
{
        struct demoapi *api = arg;

        (void)events;
        api->stop_signal = signum;
        event_base_loopbreak(api->base);
}

static void demoapi_usage(FILE *out)
{
        fprintf(out,
                "usage: %s [-Fhv] [-b burst] [-d dir] [-l addr:port] [-r rate]\n"
                "  -b burst      token bucket size in requests, 1 to %d (default %d)\n"
                "  -d dir        directory of iso_3166-1.json and iso_3166-2.json\n"
                "                (default %s)\n"
                "  -F            answer the fault queries fault:500, fault:badjson,\n"
                "                fault:slow:MS[:TEXT], fault:close, fault:big,\n"
                "                fault:429:RETRY[:TEXT], fault:503:RETRY[:TEXT] and\n"
                "                fault:reset:VALUE:TEXT\n"
                "  -h            print this help and exit\n"
                "  -l addr:port  listen address and TCP port; port 0 picks a free port\n"
                "                (default %s)\n"
                "  -r rate       token refill rate in requests per second, 0.001 to %d,\n"
                "                rounded to 3 decimals (default %s)\n"
                "  -v            log one line per request\n",
                DEMOAPI_NAME, DEMOAPI_MAX_BURST, DEMOAPI_DEFAULT_BURST, DEMOAPI_DEFAULT_DIR,
                DEMOAPI_DEFAULT_LISTEN, DEMOAPI_MAX_RATE, DEMOAPI_DEFAULT_RATE);
}

/* Parses requests per second into *rate in 1e-3 requests per second. */
static int demoapi_parse_rate(const char *text, uint64_t *rate)
{
        double value;
        char *end;

        errno = 0;
        value = strtod(text, &end);
        /* The comparisons also reject NaN. */
        if (end == text || *end != '\0' || errno != 0 || !(value > 0 && value <= DEMOAPI_MAX_RATE))
                return -1;
        *rate = (uint64_t)(value * 1000 + 0.5);
        return *rate > 0 ? 0 : -1;
}

static int demoapi_parse_burst(const char *text, uint64_t *burst)
{
        unsigned long value;
        char *end;

        if (text[0] < '0' || text[0] > '9')
                return -1;
        errno = 0;
        value = strtoul(text, &end, 10);
        if (errno != 0 || *end != '\0' || value < 1 || value > DEMOAPI_MAX_BURST)
                return -1;
        *burst = value;
        return 0;
}

static void demoapi_option_error(int option, const char *value, const char *expected)
{
        demoapi_log("error", "invalid -%c value \"%s\": expected %s", option, value, expected);
        exit(1);
}

static void demoapi_parse_options(int argc, char **argv, struct demoapi_options *options)
{
        int option;

        options->listen = DEMOAPI_DEFAULT_LISTEN;
        options->dir = DEMOAPI_DEFAULT_DIR;
        options->burst = DEMOAPI_DEFAULT_BURST;
        options->faults = 0;
        options->verbose = 0;
        demoapi_parse_rate(DEMOAPI_DEFAULT_RATE, &options->rate);

        opterr = 0;
        while ((option = getopt(argc, argv, ":b:d:Fhl:r:v")) != -1) {
                switch (option) {
                case 'b':
                        if (demoapi_parse_burst(optarg, &options->burst) == -1)
                                demoapi_option_error(option, optarg,
                                                     "a whole number of requests from 1 to "
                                                     "1000000");
                        break;
                case 'd':
                        options->dir = optarg;
                        break;
                case 'F':
                        options->faults = 1;
                        break;
                case 'h':
                        demoapi_usage(stdout);
                        exit(0);
                case 'l':
                        options->listen = optarg;
                        break;
                case 'r':
                        if (demoapi_parse_rate(optarg, &options->rate) == -1)
                                demoapi_option_error(option, optarg,
                                                     "requests per second from 0.001 to 1000000");
                        break;
                case 'v':
                        options->verbose = 1;
                        break;
                case ':':
                        demoapi_log("error", "option -%c requires a value; see -h", optopt);
                        exit(1);
                default:
                        demoapi_log("error", "unknown option -%c; see -h", optopt);
                        exit(1);
                }
        }
        if (optind < argc) {
                demoapi_log("error", "unexpected argument \"%s\"; see -h", argv[optind]);
                exit(1);
        }
}

/*
 * Splits "ADDR:PORT" or "[ADDR]:PORT" into host, of hostlen bytes, and port.
 * Returns -1 if the form or the port is invalid.
 */
static int demoapi_parse_listen(const char *text, char *host, size_t hostlen, uint16_t *port)
{
        const char *colon = strrchr(text, ':'), *start = text;
        unsigned long value;
        size_t len;
        char *end;

        if (colon == NULL || colon == text || colon[1] < '0' || colon[1] > '9')
                return -1;
        errno = 0;
        value = strtoul(colon + 1, &end, 10);
        if (errno != 0 || *end != '\0' || value > 65535)
                return -1;

        len = colon - text;
        if (text[0] == '[' && colon[-1] == ']') {
                start = text + 1;
                len -= 2;
        }
        if (len == 0 || len >= hostlen)
                return -1;
        memcpy(host, start, len);
        host[len] = '\0';
        *port = value;
        return 0;
}

/* Formats the local address of a listening socket as "ADDR:PORT" or "[ADDR]:PORT". */
static void demoapi_format_bound(evutil_socket_t fd, char *out, size_t outlen)
{
        char host[NI_MAXHOST], service[NI_MAXSERV];
        struct sockaddr_storage address;
        socklen_t len = sizeof(address);

        if (getsockname(fd, (struct sockaddr *)&address, &len) == -1 ||
            getnameinfo((struct sockaddr *)&address, len, host, sizeof(host), service,
                        sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
                snprintf(out, outlen, "an unknown address");
                return;
        }
        snprintf(out, outlen, strchr(host, ':') != NULL ? "[%s]:%s" : "%s:%s", host, service);
}

/* Binds the HTTP server to listen, "ADDR:PORT", and formats the bound address into bound. */
static int demoapi_listen(struct demoapi *api, const char *listen, char *bound, size_t boundlen)
{
        struct evhttp_bound_socket *bound_socket;
        char host[256];
        uint16_t port;

        if (demoapi_parse_listen(listen, host, sizeof(host), &port) == -1) {
                demoapi_log("error", "invalid -l value \"%s\": expected ADDR:PORT, such as %s",
                            listen, DEMOAPI_DEFAULT_LISTEN);
                return -1;
        }
        errno = 0;
        bound_socket = evhttp_bind_socket_with_handle(api->http, host, port);
        if (bound_socket == NULL) {
                demoapi_log("error", "failed to listen on %s: %s; choose another -l ADDR:PORT",
                            listen, errno != 0 ? strerror(errno) : "address not usable");
                return -1;
        }
        demoapi_format_bound(evhttp_bound_socket_get_fd(bound_socket), bound, boundlen);
        return 0;
}

static int demoapi_setup_http(struct demoapi *api)
{
        if ((api->http = evhttp_new(api->base)) == NULL)
                return -1;
        /* Every method reaches the callbacks, which respond with 405 in JSON. */
        evhttp_set_allowed_methods(api->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                  EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                  EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                                  EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
        evhttp_set_max_headers_size(api->http, DEMOAPI_MAX_HEADERS_BYTES);
        evhttp_set_max_body_size(api->http, DEMOAPI_MAX_BODY_BYTES);
        if (evhttp_set_cb(api->http, "/search", demoapi_search_cb, api) != 0 ||
            evhttp_set_cb(api->http, "/stats", demoapi_stats_cb, api) != 0)
                return -1;
        evhttp_set_gencb(api->http, demoapi_not_found_cb, api);
        evhttp_set_bevcb(api->http, demoapi_connection_cb, api);
        return 0;
}

static int demoapi_setup_signals(struct demoapi *api)
{
        /* A client that closes during a response must not end the process. */
        signal(SIGPIPE, SIG_IGN);
        api->sigint = evsignal_new(api->base, SIGINT, demoapi_signal_cb, api);
        api->sigterm = evsignal_new(api->base, SIGTERM, demoapi_signal_cb, api);
        if (api->sigint == NULL || api->sigterm == NULL || evsignal_add(api->sigint, NULL) != 0 ||
            evsignal_add(api->sigterm, NULL) != 0)
                return -1;
        return 0;
}

/* Formats a rate in 1e-3 requests per second without trailing zeros: 10, 2.5, 0.001. */
static void demoapi_format_rate(uint64_t rate, char *out, size_t outlen)
{
        int len;

        len = snprintf(out, outlen, "%llu.%03llu", (unsigned long long)(rate / 1000),
                       (unsigned long long)(rate % 1000));
        while (len > 0 && out[len - 1] == '0')
                out[--len] = '\0';
        if (len > 0 && out[len - 1] == '.')
                out[--len] = '\0';
}

/* Frees what main() set up, in an order that lets evhttp free its requests last. */
static void demoapi_cleanup(struct demoapi *api)
{
        struct demoapi_slow *slow;

        while ((slow = TAILQ_FIRST(&api->slow)) != NULL) {
                /* evhttp_free() frees the requests still on a connection, not detached ones. */
                if (slow->evcon == NULL)
                        evhttp_request_free(slow->req);
                demoapi_slow_free(slow);
        }
        if (api->http != NULL)
                evhttp_free(api->http);
        if (api->sigint != NULL)
                event_free(api->sigint);
        if (api->sigterm != NULL)
                event_free(api->sigterm);
        if (api->base != NULL)
                event_base_free(api->base);
        places_free(api->places);
        free(api->big_body);
        for (unsigned i = 0; i < api->rejected_count; i++)
                free(api->rejected[i]);
}

int main(int argc, char **argv)
{
        struct demoapi_options options;
        struct demoapi api;
        char err[512], bound[NI_MAXHOST + 16];

        demoapi_parse_options(argc, argv, &options);
        event_set_log_callback(demoapi_libevent_log_cb);

        memset(&api, 0, sizeof(api));
        TAILQ_INIT(&api.slow);
        api.faults = options.faults;
        api.verbose = options.verbose;
        api.burst = options.burst;
        demoapi_format_rate(options.rate, api.rate_text, sizeof(api.rate_text));
        demoapi_bucket_init(&api.bucket, options.rate, options.burst);

        if ((api.places = places_load(options.dir, err, sizeof(err))) == NULL) {
                demoapi_log("error",
                            "failed to load places: %s; install iso-codes or pass its "
                            "json directory with -d",
                            err);
                return 1;
        }
        if ((api.base = event_base_new()) == NULL || demoapi_setup_http(&api) == -1 ||
            demoapi_setup_signals(&api) == -1) {
                demoapi_log("error", "failed to set up libevent: out of memory");
                demoapi_cleanup(&api);
                return 1;
        }
        if (demoapi_listen(&api, options.listen, bound, sizeof(bound)) == -1) {
                demoapi_cleanup(&api);
                return 1;
        }

        demoapi_log("info",
                    "listening on %s, rate %s requests/s, burst %llu, %zu places, fault "
                    "queries %s",
                    bound, api.rate_text, (unsigned long long)api.burst, places_count(api.places),
                    api.faults ? "on" : "off");
        if (event_base_dispatch(api.base) == -1) {
                demoapi_log("error", "event loop failed: %s", strerror(errno));
                demoapi_cleanup(&api);
                return 1;
        }

        demoapi_log("info",
                    "stopping on %s after %llu search requests, %llu served, %llu rate "
                    "limited",
                    api.stop_signal == SIGINT ? "SIGINT" : "SIGTERM",
                    (unsigned long long)api.requests, (unsigned long long)api.served,
                    (unsigned long long)api.violations);
        demoapi_cleanup(&api);
        return 0;
}
