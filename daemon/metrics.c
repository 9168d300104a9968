/*
 * GET /metrics: the figures of incsearchctl status in the Prometheus text exposition format
 * (version 0.0.4), with names prefixed incsearchd_ and units in the names.
 */
#include <inttypes.h>
#include <string.h>

#include "incsearchd.h"

int metrics_allowed(const struct client *client)
{
        const struct conf *conf = &daemon_state.conf;

        return conf_prefix_match(conf->metrics_prefixes, conf->metrics_prefix_count,
                                 client->addr.bytes);
}

static void metrics_one(struct evbuffer *out, const char *name, const char *type, const char *help,
                        uint64_t value)
{
        evbuffer_add_printf(out, "# HELP incsearchd_%s %s\n# TYPE incsearchd_%s %s\n", name, help,
                            name, type);
        evbuffer_add_printf(out, "incsearchd_%s %" PRIu64 "\n", name, value);
}

static void metrics_error(struct evbuffer *out, const char *kind, uint64_t value)
{
        evbuffer_add_printf(out, "incsearchd_api_errors_total{kind=\"%s\"} %" PRIu64 "\n", kind,
                            value);
}

/* Writes one histogram in seconds: cumulative buckets, then the sum and the count. */
static void metrics_histogram(struct evbuffer *out, const char *name, const char *help,
                              const struct histogram *h)
{
        uint64_t cumulative = 0;

        evbuffer_add_printf(out, "# HELP incsearchd_%s %s\n# TYPE incsearchd_%s histogram\n", name,
                            help, name);
        for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
                uint64_t bound = histogram_bound_us(i);

                cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
                if (bound == UINT64_MAX)
                        evbuffer_add_printf(out, "incsearchd_%s_bucket{le=\"+Inf\"} %" PRIu64 "\n",
                                            name, cumulative);
                else
                        evbuffer_add_printf(out, "incsearchd_%s_bucket{le=\"%g\"} %" PRIu64 "\n",
                                            name, (double)bound / 1e6, cumulative);
        }
        evbuffer_add_printf(out, "incsearchd_%s_sum %.6f\nincsearchd_%s_count %" PRIu64 "\n", name,
                            (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6,
                            name, cumulative);
}

/* The shared rate limit in Redis; left out with rate_limit_backend = shm. */
static void metrics_redis(struct evbuffer *out, const struct stats *s)
{
        if (!s->redis_backend)
                return;
        metrics_one(out, "redis_up", "gauge",
                    "1 while the workers reach Redis for the shared rate limit.", !s->redis_down);
        metrics_one(out, "redis_fallback_active", "gauge",
                    "1 while Redis is unavailable and redis_fallback applies.", s->redis_down != 0);
        metrics_one(out, "redis_errors_total", "counter",
                    "Failed Redis connects, error replies and replies past redis_timeout_ms.",
                    s->redis_errors);
        metrics_one(out, "redis_fallback_switches_total", "counter",
                    "Switches between the shared rate limit and the fallback, both ways.",
                    s->redis_switches);
        metrics_one(out, "redis_tokens_granted_total", "counter",
                    "Tokens the shared rate limit in Redis gave this host.", s->redis_granted);
        metrics_one(out, "redis_tokens_dropped_total", "counter",
                    "Granted tokens that found no query left to spend them on.", s->redis_dropped);
}

/* The shared result cache in Redis. */
static void metrics_shared_cache(struct evbuffer *out, const struct rcache_stats *r)
{
        static const char name[] = "incsearchd_shared_cache_lookups_total";

        metrics_one(out, "shared_cache_up", "gauge",
                    "1 while the shared result cache in Redis is connected, else 0.",
                    strcmp(r->state, "up") == 0);
        evbuffer_add_printf(out,
                            "# HELP %s Shared-cache lookups in Redis by result.\n"
                            "# TYPE %s counter\n",
                            name, name);
        evbuffer_add_printf(out, "%s{result=\"hit\"} %" PRIu64 "\n", name, r->hits);
        evbuffer_add_printf(out, "%s{result=\"miss\"} %" PRIu64 "\n", name, r->misses);
        evbuffer_add_printf(out, "%s{result=\"error\"} %" PRIu64 "\n", name, r->errors);
        evbuffer_add_printf(out, "%s{result=\"bad_value\"} %" PRIu64 "\n", name, r->bad_values);
        evbuffer_add_printf(out, "%s{result=\"skipped\"} %" PRIu64 "\n", name, r->skipped);
        metrics_one(out, "shared_cache_stores_total", "counter",
                    "Results from the API stored in the shared cache.", r->stored);
}

void metrics_render(struct evbuffer *out)
{
        struct shm_header *h = daemon_state.shm.header;
        struct stats s;

        stats_collect(&s);
        metrics_one(out, "uptime_seconds", "gauge", "Seconds since incsearchd started.",
                    s.uptime_ms / 1000);
        metrics_one(out, "workers", "gauge", "Worker processes running.", s.workers_alive);
        metrics_one(out, "worker_restarts_total", "counter", "Workers restarted after dying.",
                    s.worker_restarts);
        metrics_one(out, "clients", "gauge", "WebSocket clients connected.", s.clients_now);
        metrics_one(out, "clients_peak", "gauge", "Most WebSocket clients connected at once.",
                    s.clients_peak);
        metrics_one(out, "clients_total", "counter", "WebSocket connections accepted.",
                    s.clients_total);
        metrics_one(out, "queries_total", "counter", "Queries received from clients.", s.queries);
        metrics_one(out, "queries_superseded_total", "counter",
                    "Pending queries replaced by a newer one before their API call.", s.superseded);
        metrics_one(out, "api_calls_total", "counter", "Calls made to the search API.",
                    s.api_calls);
        metrics_one(out, "cache_hits_total", "counter", "Queries answered from the cache.",
                    s.cache_hits);
        metrics_one(out, "coalesced_total", "counter",
                    "Queries that shared another client's API call.", s.coalesced);
        metrics_one(out, "results_delivered_total", "counter", "Results and errors sent.",
                    s.delivered);
        metrics_one(out, "results_stale_total", "counter",
                    "Results dropped because a newer one was sent or the client left.",
                    s.stale_dropped);
        evbuffer_add_printf(out, "# HELP incsearchd_api_errors_total Failed API calls by kind.\n"
                                 "# TYPE incsearchd_api_errors_total counter\n");
        metrics_error(out, "timeout", s.api_timeouts);
        metrics_error(out, "http_5xx", s.api_5xx);
        metrics_error(out, "http_429", s.api_429);
        metrics_error(out, "bad_body", s.api_bad_body);
        metrics_error(out, "other", s.api_failed);
        /* With the bucket in Redis this host does not know its tokens, so the gauge is left out. */
        if (strcmp(s.bucket_source, "shm") == 0 || strcmp(s.bucket_source, "local_share") == 0)
                evbuffer_add_printf(
                    out,
                    "# HELP incsearchd_bucket_tokens Calls the token bucket in use allows now.\n"
                    "# TYPE incsearchd_bucket_tokens gauge\n"
                    "incsearchd_bucket_tokens %.6f\n",
                    (double)s.bucket_micro_tokens / BUCKET_UNIT);
        evbuffer_add_printf(out,
                            "# HELP incsearchd_bucket_rate_per_second Calls per second allowed.\n"
                            "# TYPE incsearchd_bucket_rate_per_second gauge\n"
                            "incsearchd_bucket_rate_per_second %.3f\n",
                            (double)s.rate_milli / 1000);
        metrics_one(out, "bucket_burst", "gauge", "Calls allowed at once after an idle time.",
                    s.burst);
        evbuffer_add_printf(
            out,
            "# HELP incsearchd_api_pause_seconds Time left in a pause after a 429.\n"
            "# TYPE incsearchd_api_pause_seconds gauge\n"
            "incsearchd_api_pause_seconds %.3f\n",
            (double)s.pause_left_ms / 1000);
        metrics_one(out, "queries_pending", "gauge", "Queries waiting for an API call.",
                    s.fifo_depth);
        metrics_redis(out, &s);
        metrics_shared_cache(out, &s.shared_cache);
        metrics_histogram(out, "queue_wait_seconds",
                          "Time from a query entering the queue to a worker taking it.",
                          &h->queue_wait);
        metrics_histogram(out, "api_call_seconds", "Duration of one API call.", &h->api_time);
        metrics_histogram(out, "keystroke_to_result_seconds",
                          "Time from a query's arrival to its result being sent.", &h->keystroke);
}
