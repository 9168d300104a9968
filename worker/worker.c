/*
 * incsearchd-worker: takes tokens from the global bucket and the oldest pending queries from
 * shared memory, calls the API for up to max_inflight of them at once and sends each reply to
 * the daemon. The daemon starts it with the socket to itself as a file descriptor. The daemon
 * writes a byte to that socket whenever a query is queued, so one poll over it and curl's
 * sockets covers everything a worker waits for. The poll's timeout is the earliest of curl's
 * timers, the next token, the next retry and the end of a pause.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "conf.h"
#include "histogram.h"
#include "ipc.h"
#include "log.h"
#include "reply.h"
#include "rlimit.h"
#include "shm.h"
#include "slot.h"

#define WORKER_MAX_POLL_MS 1000 /* re-checks the FIFO at least this often */
#define WORKER_JITTER_NS 1000000ULL

struct worker_state {
        struct conf conf;
        struct shm shm;
        struct api api;
        unsigned index;
        int fd;
        enum ipc_status last_status;
        uint64_t failures;       /* consecutive failed calls, for logging once per episode */
        unsigned throttle_count; /* consecutive 429 or 503 without a usable delay */
        uint64_t pause_end_ns;   /* end of the last pause this worker logged */
        struct conf next_conf;   /* a reloaded configuration waiting for the calls to finish */
        int next_conf_pending;
        struct rlimit rl; /* the connection to Redis, with rate_limit_backend = redis */
};

/* The source of the next call's token. */
enum worker_source {
        WORKER_SOURCE_SHM,         /* the bucket in shared memory */
        WORKER_SOURCE_REDIS,       /* a token that Redis granted */
        WORKER_SOURCE_LOCAL_SHARE, /* Redis is down: this host's share of the rate */
        WORKER_SOURCE_NONE,        /* Redis is down and redis_fallback is closed */
};

static enum worker_source worker_source(const struct worker_state *w)
{
        if (w->conf.rate_limit_backend != CONF_RATE_REDIS)
                return WORKER_SOURCE_SHM;
        if (!atomic_load_explicit(&w->shm.header->redis.down, memory_order_relaxed))
                return WORKER_SOURCE_REDIS;
        return w->conf.redis_fallback == CONF_FALLBACK_LOCAL_SHARE ? WORKER_SOURCE_LOCAL_SHARE
                                                                   : WORKER_SOURCE_NONE;
}

static struct slot_token worker_token(struct worker_state *w, enum worker_source source)
{
        struct slot_token token = {0};

        if (source == WORKER_SOURCE_SHM)
                token.bucket = &w->shm.header->bucket;
        else if (source == WORKER_SOURCE_LOCAL_SHARE)
                token.bucket = &w->shm.header->redis.fallback;
        else if (source == WORKER_SOURCE_REDIS)
                token.held = w->rl.granted;
        return token;
}

/* Records that a take or retry spent the token Redis granted, if it did. */
static void worker_token_spent(struct worker_state *w, const struct slot_token *token)
{
        if (!w->rl.granted || token->bucket != NULL || token->held)
                return;
        w->rl.granted = 0;
        atomic_fetch_add_explicit(&w->shm.header->redis.granted, 1, memory_order_relaxed);
}

/*
 * Drops a granted token that no query took: a token kept for later would let calls bunch up
 * beyond the rate.
 */
static void worker_token_drop(struct worker_state *w)
{
        if (!w->rl.granted)
                return;
        w->rl.granted = 0;
        atomic_fetch_add_explicit(&w->shm.header->redis.granted, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&w->shm.header->redis.dropped, 1, memory_order_relaxed);
        log_debug("a token from Redis found no query to spend it on");
}

/* Logs the first failure of a run of failures and the recovery after it, not every call. */
static void worker_log_outcome(struct worker_state *w, const struct slot_job *job,
                               enum ipc_status status, const char *message)
{
        if (status == IPC_STATUS_OK) {
                if (w->failures > 0)
                        log_info("API calls succeed again after %" PRIu64 " failures", w->failures);
                w->failures = 0;
                return;
        }
        if (w->failures++ == 0 || status != w->last_status)
                log_warn("API call for slot %u seq %" PRIu64 " failed: %s", job->slot, job->seq,
                         message);
        else
                log_debug("API call for slot %u seq %" PRIu64 " failed: %s", job->slot, job->seq,
                          message);
        w->last_status = status;
}

/* Returns a backoff for the ATTEMPT-th retry: doubling from retry_base_ms up to retry_max_ms,
 * of which a random half is jitter, so that workers do not retry in step. */
static uint64_t worker_backoff_ns(const struct worker_state *w, unsigned attempt)
{
        uint64_t ms = w->conf.retry_base_ms;

        for (unsigned i = 1; i < attempt && ms < w->conf.retry_max_ms; i++)
                ms *= 2;
        if (ms > w->conf.retry_max_ms)
                ms = w->conf.retry_max_ms;
        return ms * 500000ULL + (uint64_t)random() % (ms * 500000ULL + 1);
}

static void worker_record(struct worker_state *w, unsigned index, const struct slot_job *job)
{
        struct shm_job *record = &w->shm.header->workers[w->index].jobs[index];

        record->slot = job->slot;
        record->generation = job->generation;
        record->seq = job->seq;
        record->pending_since_ns = job->pending_since_ns;
        record->busy = 1;
}

/* Forgets CALL's job in shared memory and here. Takes the lock. */
static void worker_release(struct worker_state *w, struct api_call *call)
{
        unsigned index = (unsigned)(call - w->api.calls);

        shm_lock(&w->shm);
        w->shm.header->workers[w->index].jobs[index].busy = 0;
        shm_unlock(&w->shm);
        call->busy = 0;
        call->retry_at_ns = 0;
        call->attempts = 0;
}

/*
 * Sends the reply for CALL's job to the daemon and frees the call. RESULTS is the API's body,
 * already checked by api_json_valid, when STATUS is IPC_STATUS_OK.
 */
static void worker_reply(struct worker_state *w, struct api_call *call, enum ipc_status status,
                         const char *error_code, const char *message, const char *results,
                         size_t results_len)
{
        struct ipc_header h = {.magic = IPC_MAGIC, .type = IPC_RESULT};
        const struct slot_job *job = &call->job;
        uint64_t took = call->started_ns > 0 ? shm_now_ns() - call->started_ns : 0;
        size_t len;
        char *body;

        if (status == IPC_STATUS_OK)
                body = reply_results((int64_t)job->seq, job->query, job->query_len, results,
                                     results_len, &len);
        else
                body = reply_error((int64_t)job->seq, job->query, job->query_len, error_code,
                                   message, &len);
        if (body == NULL)
                log_fatal("out of memory building the reply for slot %u", job->slot);

        h.length = (uint32_t)len;
        h.slot = job->slot;
        h.generation = job->generation;
        h.status = status;
        h.seq = job->seq;
        h.api_us = took / 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(took / 1000);
        if (ipc_send(w->fd, &h, body) < 0)
                log_fatal("cannot send the result to the daemon: %s", strerror(errno));
        free(body);
        worker_release(w, call);
}

static void worker_reply_expired(struct worker_state *w, struct api_call *call, uint64_t pause_ns)
{
        char message[160];

        shm_count(&w->shm, expired);
        if (worker_source(w) == WORKER_SOURCE_NONE) {
                snprintf(message, sizeof(message),
                         "the shared rate limit in Redis is unavailable and redis_fallback is "
                         "closed; no API call within max_wait_ms (%u ms)",
                         w->conf.max_wait_ms);
                log_debug("slot %u seq %" PRIu64 ": %s", call->job.slot, call->job.seq, message);
                worker_reply(w, call, IPC_STATUS_REJECTED, REPLY_OVERLOADED, message, NULL, 0);
                return;
        }
        if (pause_ns > 0)
                snprintf(
                    message, sizeof(message),
                    "the API asked for a pause of %.1f s, which ends after max_wait_ms (%u ms)",
                    (double)pause_ns / 1e9, w->conf.max_wait_ms);
        else
                snprintf(message, sizeof(message), "no API answer within max_wait_ms (%u ms)",
                         w->conf.max_wait_ms);
        log_debug("slot %u seq %" PRIu64 ": %s", call->job.slot, call->job.seq, message);
        worker_reply(w, call, IPC_STATUS_REJECTED, REPLY_UPSTREAM_REJECTED, message, NULL, 0);
}

/* Counts a failed call by kind, from its status and the HTTP code of its response, if any. */
static void worker_count_error(struct worker_state *w, enum ipc_status status, long http_status)
{
        shm_count(&w->shm, api_errors);
        if (status == IPC_STATUS_TIMEOUT)
                shm_count(&w->shm, api_timeouts);
        else if (http_status == 429)
                shm_count(&w->shm, api_429);
        else if (http_status >= 500 && http_status <= 599)
                shm_count(&w->shm, api_5xx);
        else if (http_status >= 200 && http_status <= 299)
                shm_count(&w->shm, api_bad_body);
        else
                shm_count(&w->shm, api_failed);
}

/* Starts an attempt for CALL, whose job already has its token. */
static void worker_start(struct worker_state *w, struct api_call *call)
{
        struct api_outcome outcome;

        shm_count(&w->shm, api_calls);
        atomic_fetch_add_explicit(&w->shm.header->workers[w->index].requests, 1,
                                  memory_order_relaxed);
        if (api_start(&w->api, call, &outcome) < 0) {
                worker_count_error(w, outcome.status, 0);
                worker_log_outcome(w, &call->job, outcome.status, outcome.message);
                worker_reply(w, call, outcome.status, outcome.error_code, outcome.message, NULL, 0);
        }
}

static struct api_call *worker_free_call(struct worker_state *w)
{
        for (unsigned i = 0; i < w->conf.max_inflight; i++) {
                if (!w->api.calls[i].busy)
                        return &w->api.calls[i];
        }
        return NULL;
}

static void worker_lower_wait(uint64_t *wait_ns, uint64_t candidate)
{
        if (candidate < *wait_ns)
                *wait_ns = candidate;
}

/*
 * Lowers *WAIT_NS for a query that found no token: to the next token of a bucket, with jitter
 * that spreads the workers waiting for it, or to the query's expiry, and requests a token
 * from Redis with the redis backend.
 */
static void worker_wait_token(struct worker_state *w, enum worker_source source,
                              const struct slot_token *token, uint64_t now, uint64_t token_wait,
                              uint64_t *wait_ns)
{
        if (source == WORKER_SOURCE_REDIS)
                rlimit_ask(&w->rl, now, wait_ns);
        if (token->bucket != NULL)
                token_wait += (uint64_t)random() % WORKER_JITTER_NS;
        worker_lower_wait(wait_ns, token_wait);
}

/* Takes pending queries while this worker has room and a token. */
static void worker_fill(struct worker_state *w, uint64_t *wait_ns)
{
        struct api_call *call;

        while ((call = worker_free_call(w)) != NULL) {
                uint64_t now = shm_now_ns(), token_wait = 0;
                enum worker_source source = worker_source(w);
                struct slot_token token = worker_token(w, source);
                enum slot_take_result r;

                shm_lock(&w->shm);
                r = slot_take_token(&w->shm, &token, now, &call->job, &token_wait);
                if (r == SLOT_TAKE_OK || r == SLOT_TAKE_EXPIRED)
                        worker_record(w, (unsigned)(call - w->api.calls), &call->job);
                shm_unlock(&w->shm);
                worker_token_spent(w, &token);
                if (r == SLOT_TAKE_OK && now > call->job.pending_since_ns)
                        histogram_record(&w->shm.header->queue_wait,
                                         (now - call->job.pending_since_ns) / 1000);

                if (r == SLOT_TAKE_EMPTY)
                        return;
                if (r == SLOT_TAKE_NO_TOKEN) {
                        worker_wait_token(w, source, &token, now, token_wait, wait_ns);
                        return;
                }
                call->busy = 1;
                call->attempts = 0;
                call->started_ns = 0;
                if (r == SLOT_TAKE_EXPIRED)
                        worker_reply_expired(w, call, 0);
                else
                        worker_start(w, call);
        }
}

/* Starts the retries that are due, each for a token, and drops those a newer query replaced. */
static void worker_retry_due(struct worker_state *w, uint64_t *wait_ns)
{
        for (unsigned i = 0; i < w->conf.max_inflight; i++) {
                struct api_call *call = &w->api.calls[i];
                uint64_t now = shm_now_ns(), token_wait = 0;
                enum worker_source source = worker_source(w);
                struct slot_token token;
                enum slot_take_result r;

                if (!call->busy || call->running || call->retry_at_ns == 0)
                        continue;
                if (call->retry_at_ns > now) {
                        worker_lower_wait(wait_ns, call->retry_at_ns - now);
                        continue;
                }
                token = worker_token(w, source);
                shm_lock(&w->shm);
                r = slot_retry_token(&w->shm, &token, now, &call->job, &token_wait);
                shm_unlock(&w->shm);
                worker_token_spent(w, &token);
                if (r == SLOT_TAKE_STALE) {
                        log_debug("slot %u seq %" PRIu64
                                  ": retry dropped, a newer query replaced it",
                                  call->job.slot, call->job.seq);
                        worker_release(w, call);
                } else if (r == SLOT_TAKE_EXPIRED) {
                        worker_reply_expired(w, call, 0);
                } else if (r == SLOT_TAKE_NO_TOKEN && token.bucket == NULL) {
                        /* Stays due: it goes as soon as Redis grants a token, or expires. */
                        worker_wait_token(w, source, &token, now, token_wait, wait_ns);
                } else if (r == SLOT_TAKE_NO_TOKEN) {
                        call->retry_at_ns =
                            now + token_wait + (uint64_t)random() % WORKER_JITTER_NS;
                        worker_lower_wait(wait_ns, call->retry_at_ns - now);
                } else {
                        call->retry_at_ns = 0;
                        shm_count(&w->shm, api_retries);
                        worker_start(w, call);
                }
        }
}

/* Pauses the bucket for every worker until DELAY_NS from now, logging once per episode. */
static void worker_pause(struct worker_state *w, uint64_t delay_ns, long http_status)
{
        uint64_t now = shm_now_ns();
        int extended;

        if (w->conf.rate_limit_backend == CONF_RATE_REDIS)
                rlimit_pause(&w->rl, (delay_ns + 999999) / 1000000);
        shm_lock(&w->shm);
        extended = bucket_pause(&w->shm.header->bucket, now + delay_ns);
        bucket_pause(&w->shm.header->redis.fallback, now + delay_ns);
        shm_unlock(&w->shm);
        if (!extended)
                return;
        shm_count(&w->shm, pauses);
        if (now >= w->pause_end_ns)
                log_warn("the API asked for a pause (HTTP %ld); no calls for %.3f s", http_status,
                         (double)delay_ns / 1e9);
        else
                log_debug("pause extended by HTTP %ld to %.3f s", http_status,
                          (double)delay_ns / 1e9);
        w->pause_end_ns = now + delay_ns;
}

/* Handles a 429 or 503: pause everyone, then put the query back at the head of the FIFO. */
static void worker_throttled(struct worker_state *w, struct api_call *call,
                             struct api_outcome *outcome)
{
        unsigned index = (unsigned)(call - w->api.calls);
        uint64_t delay_ns = outcome->delay_ns, now = shm_now_ns();
        int requeued;

        shm_count(&w->shm, api_throttled);
        /* A 429 or 503 is a failed call too, so errors.total covers every kind it lists. */
        shm_count(&w->shm, api_errors);
        if (outcome->http_status == 429)
                shm_count(&w->shm, api_429);
        if (!outcome->has_delay)
                delay_ns = worker_backoff_ns(w, ++w->throttle_count);
        if (delay_ns > 0)
                worker_pause(w, delay_ns, outcome->http_status);
        if (now + delay_ns - call->job.pending_since_ns >= w->shm.header->max_wait_ns) {
                worker_log_outcome(w, &call->job, outcome->status, outcome->message);
                worker_reply_expired(w, call, delay_ns);
                return;
        }

        shm_lock(&w->shm);
        requeued = slot_requeue(&w->shm, call->job.slot, call->job.generation, call->job.seq,
                                call->job.pending_since_ns);
        w->shm.header->workers[w->index].jobs[index].busy = 0;
        shm_unlock(&w->shm);
        if (requeued)
                shm_count(&w->shm, throttle_requeued);
        log_debug("slot %u seq %" PRIu64 ": HTTP %ld, %s", call->job.slot, call->job.seq,
                  outcome->http_status,
                  requeued ? "requeued" : "dropped, a newer query replaced it");
        call->busy = 0;
        call->attempts = 0;
}

/* Handles a timeout, connection error or 5xx: retry after a backoff if max_wait_ms allows. */
static void worker_failed(struct worker_state *w, struct api_call *call,
                          struct api_outcome *outcome)
{
        uint64_t retry_at = shm_now_ns() + worker_backoff_ns(w, call->attempts);

        worker_count_error(w, outcome->status, outcome->http_status);
        worker_log_outcome(w, &call->job, outcome->status, outcome->message);
        if (retry_at - call->job.pending_since_ns >= w->shm.header->max_wait_ns) {
                worker_reply(w, call, outcome->status, outcome->error_code, outcome->message, NULL,
                             0);
                return;
        }
        call->retry_at_ns = retry_at;
}

static void worker_finished(struct worker_state *w, struct api_call *call, CURLcode rc)
{
        struct api_outcome outcome;

        api_finish(&w->api, call, rc, &outcome);
        histogram_record(&w->shm.header->api_time, (shm_now_ns() - call->started_ns) / 1000);
        log_debug("slot %u seq %" PRIu64 ": attempt %u took %.1f ms, HTTP %ld, action %d",
                  call->job.slot, call->job.seq, call->attempts,
                  (double)(shm_now_ns() - call->started_ns) / 1e6, outcome.http_status,
                  (int)outcome.action);
        switch (outcome.action) {
        case API_THROTTLE:
                worker_throttled(w, call, &outcome);
                break;
        case API_RETRY:
                worker_failed(w, call, &outcome);
                break;
        case API_DELIVER:
                if (outcome.status == IPC_STATUS_OK)
                        w->throttle_count = 0;
                else
                        worker_count_error(w, outcome.status, outcome.http_status);
                worker_log_outcome(w, &call->job, outcome.status, outcome.message);
                if (outcome.has_delay)
                        worker_pause(w, outcome.delay_ns, outcome.http_status);
                worker_reply(w, call, outcome.status, outcome.error_code, outcome.message,
                             outcome.body, outcome.body_len);
                break;
        }
}

static void worker_read_conf(struct worker_state *w, struct conf *conf);

/*
 * Reads what the daemon sent: wake bytes, and a whole configuration message after a reload,
 * which is applied once no call is in flight. A closed socket means the daemon is gone, so exit.
 */
static void worker_drain_socket(struct worker_state *w)
{
        unsigned char buffer[256];

        for (;;) {
                ssize_t n = recv(w->fd, buffer, sizeof(buffer), MSG_DONTWAIT | MSG_PEEK), wakes = 0;

                if (n == 0) {
                        log_debug("the daemon closed the socket; exiting");
                        exit(0);
                }
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return;
                        log_fatal("reading from the daemon failed: %s", strerror(errno));
                }
                while (wakes < n && buffer[wakes] == IPC_WAKE)
                        wakes++;
                if (wakes > 0) {
                        if (recv(w->fd, buffer, (size_t)wakes, MSG_DONTWAIT) < 0 && errno != EINTR)
                                log_fatal("reading from the daemon failed: %s", strerror(errno));
                        continue;
                }
                /* The daemon writes a configuration whole, so a blocking read ends soon. */
                worker_read_conf(w, &w->next_conf);
                w->next_conf_pending = 1;
        }
}

/* Returns 1 if a call of this worker is in flight or waits for its retry. */
static int worker_busy(const struct worker_state *w)
{
        for (unsigned i = 0; i < w->conf.max_inflight; i++) {
                if (w->api.calls[i].busy)
                        return 1;
        }
        return 0;
}

/* Starts redis_fallback = local_share's bucket empty, at this host's share of the rate. */
static void worker_fallback_init(struct worker_state *w, uint64_t now)
{
        struct shm_header *h = w->shm.header;
        uint64_t rate = w->conf.rate_milli / w->conf.expected_hosts;
        uint32_t burst = w->conf.burst / w->conf.expected_hosts;

        bucket_init(&h->redis.fallback, rate > 0 ? rate : 1, burst > 0 ? burst : 1, now);
        h->redis.fallback.tokens = 0;
        /* A pause that the API requested applies to the fallback too. */
        if (h->bucket.last_refill_ns > now)
                h->redis.fallback.last_refill_ns = h->bucket.last_refill_ns;
}

/* Sets the host's Redis state to DOWN; the worker that changes it logs the switch. */
static void worker_redis_switch(struct worker_state *w, uint32_t down)
{
        struct shm_header *h = w->shm.header;
        uint64_t now = shm_now_ns();
        char url[512];
        int switched = 0;

        if (atomic_load_explicit(&h->redis.down, memory_order_relaxed) == down)
                return;
        /* Under the lock, so that a worker that reads down finds the fallback bucket ready. */
        shm_lock(&w->shm);
        if (atomic_load_explicit(&h->redis.down, memory_order_relaxed) != down) {
                if (down && w->conf.redis_fallback == CONF_FALLBACK_LOCAL_SHARE)
                        worker_fallback_init(w, now);
                if (down)
                        atomic_store_explicit(&h->redis.down_since_ns, now, memory_order_relaxed);
                /*
                 * Calls spent from the local share while the shared bucket refilled: the token
                 * request that brings the host back empties it, and nothing after it.
                 */
                atomic_store_explicit(&h->redis.drain,
                                      down && w->conf.redis_fallback == CONF_FALLBACK_LOCAL_SHARE,
                                      memory_order_relaxed);
                atomic_store_explicit(&h->redis.down, down, memory_order_relaxed);
                switched = 1;
        }
        shm_unlock(&w->shm);
        if (!switched)
                return;
        atomic_fetch_add_explicit(&h->redis.switches, 1, memory_order_relaxed);
        rlimit_url(&w->conf, url, sizeof(url));
        if (!down)
                log_info("Redis at %s replies again; API calls share its rate limit", url);
        else if (w->conf.redis_fallback == CONF_FALLBACK_LOCAL_SHARE)
                log_warn("Redis at %s is unavailable (%s); until it is back this host spends "
                         "rate / expected_hosts = %.3f calls per second on its own",
                         url, w->rl.error,
                         (double)(w->conf.rate_milli / w->conf.expected_hosts) / 1000);
        else
                log_warn("Redis at %s is unavailable (%s); until it is back no API call is made "
                         "and queries get overloaded after max_wait_ms",
                         url, w->rl.error);
}

/* Reports what the connection to Redis saw since the last call to the host's state. */
static void worker_redis_event(struct worker_state *w)
{
        enum rlimit_event event = w->rl.event;

        w->rl.event = RLIMIT_EVENT_NONE;
        /* The last token reply shows whether Redis has a pause now, for incsearchctl status. */
        if (w->rl.pause_reported) {
                atomic_store_explicit(&w->shm.header->redis.pause_until_ns, w->rl.pause_until_ns,
                                      memory_order_relaxed);
                w->rl.pause_reported = 0;
        }
        if (w->rl.other_limit[0] != '\0') {
                log_warn("another host shares this Redis bucket with rate and burst %s (in "
                         "thousandths of a call per second:burst), this host with %" PRIu64
                         ":%" PRIu32 "; every host must set the same rate and burst, or the API "
                         "sees more than its limit",
                         w->rl.other_limit, w->conf.rate_milli, w->conf.burst);
                w->rl.other_limit[0] = '\0';
        }
        if (event == RLIMIT_EVENT_DOWN) {
                atomic_fetch_add_explicit(&w->shm.header->redis.errors, 1, memory_order_relaxed);
                log_debug("Redis: %s", w->rl.error);
                worker_redis_switch(w, 1);
        } else if (event == RLIMIT_EVENT_UP &&
                   w->rl.ready_ns > atomic_load_explicit(&w->shm.header->redis.down_since_ns,
                                                         memory_order_relaxed)) {
                /*
                 * Only a connection made after the switch brings the host back. A reply on an
                 * older one may belong to a request sent before the failure that caused it.
                 */
                worker_redis_switch(w, 0);
        }
}

/* Returns 1 if a reload changed how this worker reaches Redis. */
static int worker_redis_changed(const struct conf *a, const struct conf *b)
{
        return strcmp(a->redis_url, b->redis_url) != 0 ||
               strcmp(a->redis_key_prefix, b->redis_key_prefix) != 0 ||
               a->redis_timeout_ms != b->redis_timeout_ms ||
               a->rate_limit_backend != b->rate_limit_backend;
}

/* Switches to a reloaded configuration once the calls made under the old one are done. */
static void worker_apply_conf(struct worker_state *w)
{
        if (!w->next_conf_pending || worker_busy(w))
                return;
        w->next_conf_pending = 0;
        api_free(&w->api);
        int limit_changed =
            w->conf.rate_milli != w->next_conf.rate_milli || w->conf.burst != w->next_conf.burst;

        if (worker_redis_changed(&w->conf, &w->next_conf))
                rlimit_close(&w->rl);
        w->conf = w->next_conf;
        if (limit_changed)
                rlimit_announce(&w->rl);
        if (atomic_load_explicit(&w->shm.header->redis.down, memory_order_relaxed) &&
            w->conf.redis_fallback == CONF_FALLBACK_LOCAL_SHARE) {
                uint64_t rate = w->conf.rate_milli / w->conf.expected_hosts;
                uint32_t burst = w->conf.burst / w->conf.expected_hosts;

                shm_lock(&w->shm);
                bucket_reconfigure(&w->shm.header->redis.fallback, rate > 0 ? rate : 1,
                                   burst > 0 ? burst : 1, shm_now_ns());
                shm_unlock(&w->shm);
        }
        log_level = w->conf.log_level;
        if (api_init(&w->api, &w->conf) < 0)
                log_fatal("cannot set up libcurl with the reloaded configuration");
        log_info("configuration applied: API rate %" PRIu64 ".%03" PRIu64
                 "/s burst %u, timeout %u ms, %u calls at once, log level %s",
                 w->conf.rate_milli / 1000, w->conf.rate_milli % 1000, w->conf.burst,
                 w->conf.api_timeout_ms, w->conf.max_inflight, log_level_name(log_level));
}

/*
 * Waits up to WAIT_NS for curl's sockets, curl's timers, a wake from the daemon or the
 * connection to Redis.
 */
static void worker_poll(struct worker_state *w, uint64_t wait_ns)
{
        struct curl_waitfd fds[2] = {{.fd = w->fd, .events = CURL_WAIT_POLLIN}};
        uint64_t wait_ms = (wait_ns + 999999) / 1000000;
        unsigned count = 1;
        CURLMcode mc;
        int ready;

        if (w->conf.rate_limit_backend == CONF_RATE_REDIS)
                count += (unsigned)rlimit_waitfd(&w->rl, &fds[1]);
        if (wait_ms > WORKER_MAX_POLL_MS)
                wait_ms = WORKER_MAX_POLL_MS;
        mc = curl_multi_poll(w->api.multi, fds, count, (int)wait_ms, &ready);
        if (mc != CURLM_OK)
                log_fatal("curl_multi_poll failed: %s", curl_multi_strerror(mc));
        if (count > 1 && fds[1].revents != 0)
                rlimit_handle(&w->rl, fds[1].revents);
        if (fds[0].revents != 0)
                worker_drain_socket(w);
}

/* Lets curl make progress and handles every finished call. */
static void worker_collect(struct worker_state *w)
{
        CURLMsg *msg;
        int running, left;

        curl_multi_perform(w->api.multi, &running);
        while ((msg = curl_multi_info_read(w->api.multi, &left)) != NULL) {
                struct api_call *call;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
                worker_finished(w, call, msg->data.result);
        }
}

static void worker_run(struct worker_state *w)
{
        for (;;) {
                uint64_t wait_ns = (uint64_t)WORKER_MAX_POLL_MS * 1000000ULL;

                worker_apply_conf(w);
                if (w->conf.rate_limit_backend == CONF_RATE_REDIS) {
                        w->rl.drain = (int)atomic_load_explicit(&w->shm.header->redis.drain,
                                                                memory_order_relaxed);
                        rlimit_tick(&w->rl, shm_now_ns(), &wait_ns);
                        worker_redis_event(w);
                }
                worker_retry_due(w, &wait_ns);
                /* While a reload waits for the running calls, no new call starts. */
                if (!w->next_conf_pending)
                        worker_fill(w, &wait_ns);
                worker_token_drop(w);
                worker_poll(w, wait_ns);
                worker_redis_event(w);
                worker_collect(w);
        }
}

/*
 * Reads the configuration that the daemon sends first on the socket, so that a worker restarted
 * later runs with the daemon's settings even if the file has been edited since.
 */
static void worker_read_conf(struct worker_state *w, struct conf *conf)
{
        struct ipc_header h;

        errno = 0;
        if (ipc_read_full(w->fd, &h, sizeof(h)) < 0)
                log_fatal("cannot read the configuration from the daemon: %s",
                          errno != 0 ? strerror(errno) : "end of file");
        if (h.magic != IPC_MAGIC || h.type != IPC_CONF || h.length != sizeof(*conf))
                log_fatal("invalid configuration message from the daemon (type %u, length %u); "
                          "the daemon and worker binaries must come from the same build",
                          h.type, h.length);
        if (ipc_read_full(w->fd, conf, sizeof(*conf)) < 0)
                log_fatal("cannot read the configuration from the daemon");
}

static void usage(void)
{
        fprintf(stderr,
                "usage: incsearchd-worker -i index -f fd\n"
                "incsearchd starts its workers itself; there is no need to run one by hand.\n");
        exit(1);
}

int main(int argc, char **argv)
{
        struct worker_state w = {.fd = -1};
        char errors[4096], role[32];
        struct stat st;
        int opt;

        while ((opt = getopt(argc, argv, "i:f:")) != -1) {
                switch (opt) {
                case 'i':
                        w.index = (unsigned)atoi(optarg);
                        break;
                case 'f':
                        w.fd = atoi(optarg);
                        break;
                default:
                        usage();
                }
        }
        if (w.fd < 0 || w.index >= SHM_MAX_WORKERS)
                usage();
        snprintf(role, sizeof(role), "incsearchd-worker/%u", w.index);
        log_init(role, LOG_LEVEL_INFO);
        if (fstat(w.fd, &st) < 0 || !S_ISSOCK(st.st_mode))
                log_fatal("file descriptor %d is not a socket to the daemon", w.fd);
        worker_read_conf(&w, &w.conf);
        log_level = w.conf.log_level;

        if (shm_attach(&w.shm, w.conf.shm_name, errors, sizeof(errors)) < 0)
                log_fatal("%s", errors);
        atomic_store(&w.shm.header->workers[w.index].pid, (int32_t)getpid());
        srandom((unsigned)getpid() ^ (unsigned)shm_now_ns());
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || api_init(&w.api, &w.conf) < 0)
                log_fatal("cannot set up libcurl");
        signal(SIGPIPE, SIG_IGN);
        rlimit_init(&w.rl, &w.conf);
        log_debug("ready");

        worker_run(&w);
        return 0;
}
