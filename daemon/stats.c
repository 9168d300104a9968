/*
 * The figures that incsearchctl status and GET /metrics report, read once from shared memory
 * and the daemon's state, so that both outputs always agree.
 */
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "incsearchd.h"
#include "version.h"

static void stats_latency(const struct histogram *h, struct stats_latency *out)
{
        out->count = atomic_load_explicit(&h->count, memory_order_relaxed);
        out->sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
        out->p50_us = histogram_percentile_us(h, 50);
        out->p90_us = histogram_percentile_us(h, 90);
        out->p99_us = histogram_percentile_us(h, 99);
        out->max_us = atomic_load_explicit(&h->max_us, memory_order_relaxed);
}

/*
 * Names where tokens come from now: this host's bucket, Redis, the local share of the rate
 * while Redis is down, or nowhere (redis_fallback = closed while Redis is down).
 */
static const char *stats_bucket_source(const struct daemon *d, int redis_down)
{
        if (d->conf.rate_limit_backend != CONF_RATE_REDIS)
                return "shm";
        if (!redis_down)
                return "redis";
        return d->conf.redis_fallback == CONF_FALLBACK_LOCAL_SHARE ? "local_share" : "none";
}

/* Reads the bucket in use and the FIFO under the lock; the bucket is refilled on a copy only. */
static void stats_bucket(struct stats *stats)
{
        struct daemon *d = &daemon_state;
        struct shm_header *h = d->shm.header;
        uint64_t now = shm_now_ns();
        uint64_t paused_until, shared_pause;
        struct bucket copy;

        daemon_lock();
        stats->bucket_source =
            stats_bucket_source(d, atomic_load_explicit(&h->redis.down, memory_order_relaxed));
        copy = strcmp(stats->bucket_source, "local_share") == 0 ? h->redis.fallback : h->bucket;
        stats->fifo_depth = h->fifo_count;
        shm_unlock(&d->shm);

        bucket_refill(&copy, now);
        stats->bucket_micro_tokens = copy.tokens > 0 ? (uint64_t)copy.tokens : 0;
        stats->rate_milli = copy.rate_milli;
        stats->burst = (uint32_t)(copy.capacity / BUCKET_UNIT);
        /* During a pause the API asked for, the bucket's refill time is the pause's end. */
        paused_until = copy.last_refill_ns;
        /* With Redis, a pause that another host's 429 set reaches this host through Redis. */
        shared_pause = atomic_load_explicit(&h->redis.pause_until_ns, memory_order_relaxed);
        if (d->conf.rate_limit_backend == CONF_RATE_REDIS && shared_pause > paused_until)
                paused_until = shared_pause;
        stats->pause_left_ms = paused_until > now ? (paused_until - now) / 1000000 : 0;
}

/* The shared rate limit's state, which the workers keep in the header. */
static void stats_redis(struct stats *stats)
{
        struct daemon *d = &daemon_state;
        struct shm_redis *r = &d->shm.header->redis;

        stats->redis_backend = d->conf.rate_limit_backend == CONF_RATE_REDIS;
        stats->redis_fallback = d->conf.redis_fallback;
        stats->redis_down = atomic_load_explicit(&r->down, memory_order_relaxed);
        stats->redis_errors = atomic_load_explicit(&r->errors, memory_order_relaxed);
        stats->redis_switches = atomic_load_explicit(&r->switches, memory_order_relaxed);
        stats->redis_granted = atomic_load_explicit(&r->granted, memory_order_relaxed);
        stats->redis_dropped = atomic_load_explicit(&r->dropped, memory_order_relaxed);
}

void stats_collect(struct stats *stats)
{
        struct daemon *d = &daemon_state;
        struct shm *shm = &d->shm;

        memset(stats, 0, sizeof(*stats));
        stats->uptime_ms = (shm_now_ns() - d->started_ns) / 1000000;
        stats->workers_configured = d->conf.workers;
        for (unsigned i = 0; i < d->conf.workers; i++)
                stats->workers_alive += d->workers[i].pid > 0;
        stats->worker_restarts = shm_counter(shm, worker_restarts);
        stats->clients_now = d->conf.max_connections - d->free_count;
        stats->clients_peak = d->clients_peak;
        stats->clients_total = shm_counter(shm, clients_total);

        stats->queries = shm_counter(shm, queries);
        stats->superseded = shm_counter(shm, superseded);
        stats->queries_too_long = shm_counter(shm, queries_too_long);
        stats->api_calls = shm_counter(shm, api_calls);
        stats->cache_hits = shm_counter(shm, cache_hits);
        stats->coalesced = shm_counter(shm, coalesced);
        stats->delivered = shm_counter(shm, delivered);
        stats->stale_dropped = shm_counter(shm, stale_dropped);
        stats->requeued = shm_counter(shm, requeued);
        stats->api_errors = shm_counter(shm, api_errors);
        stats->api_timeouts = shm_counter(shm, api_timeouts);
        stats->api_5xx = shm_counter(shm, api_5xx);
        stats->api_429 = shm_counter(shm, api_429);
        stats->api_bad_body = shm_counter(shm, api_bad_body);
        stats->api_failed = shm_counter(shm, api_failed);

        stats_bucket(stats);
        stats_redis(stats);
        stats_latency(&shm->header->queue_wait, &stats->queue_wait);
        stats_latency(&shm->header->api_time, &stats->api_time);
        stats_latency(&shm->header->keystroke, &stats->keystroke);
        rcache_stats(&stats->shared_cache);
}

static void stats_add(json_object *obj, const char *key, uint64_t value)
{
        json_object_object_add(obj, key, json_object_new_uint64(value));
}

static json_object *stats_latency_json(const struct stats_latency *l)
{
        json_object *obj = json_object_new_object();

        stats_add(obj, "count", l->count);
        json_object_object_add(obj, "p50_ms", json_object_new_double((double)l->p50_us / 1000));
        json_object_object_add(obj, "p90_ms", json_object_new_double((double)l->p90_us / 1000));
        json_object_object_add(obj, "p99_ms", json_object_new_double((double)l->p99_us / 1000));
        json_object_object_add(obj, "max_ms", json_object_new_double((double)l->max_us / 1000));
        return obj;
}

static json_object *stats_shared_cache_json(const struct rcache_stats *r)
{
        json_object *obj = json_object_new_object();

        json_object_object_add(obj, "state", json_object_new_string(r->state));
        stats_add(obj, "hits", r->hits);
        stats_add(obj, "misses", r->misses);
        stats_add(obj, "errors", r->errors);
        stats_add(obj, "bad_values", r->bad_values);
        stats_add(obj, "skipped", r->skipped);
        stats_add(obj, "stored", r->stored);
        return obj;
}

json_object *stats_json(const struct stats *s)
{
        json_object *root = json_object_new_object();
        json_object *workers = json_object_new_object(), *clients = json_object_new_object();
        json_object *queries = json_object_new_object(), *api = json_object_new_object();
        json_object *errors = json_object_new_object(), *results = json_object_new_object();
        json_object *bucket = json_object_new_object(), *latency = json_object_new_object();

        json_object_object_add(root, "version", json_object_new_string(INCSEARCHD_VERSION));
        stats_add(root, "pid", (uint64_t)getpid());
        stats_add(root, "uptime_ms", s->uptime_ms);

        stats_add(workers, "configured", s->workers_configured);
        stats_add(workers, "alive", s->workers_alive);
        stats_add(workers, "restarts", s->worker_restarts);
        json_object_object_add(root, "workers", workers);

        stats_add(clients, "now", s->clients_now);
        stats_add(clients, "peak", s->clients_peak);
        stats_add(clients, "total", s->clients_total);
        json_object_object_add(root, "clients", clients);

        stats_add(queries, "received", s->queries);
        stats_add(queries, "superseded", s->superseded);
        stats_add(queries, "too_long", s->queries_too_long);
        stats_add(queries, "pending", s->fifo_depth);
        json_object_object_add(root, "queries", queries);

        stats_add(api, "calls", s->api_calls);
        stats_add(api, "cache_hits", s->cache_hits);
        stats_add(api, "coalesced", s->coalesced);
        stats_add(api, "requeued", s->requeued);
        stats_add(errors, "total", s->api_errors);
        stats_add(errors, "timeout", s->api_timeouts);
        stats_add(errors, "http_5xx", s->api_5xx);
        stats_add(errors, "http_429", s->api_429);
        stats_add(errors, "bad_body", s->api_bad_body);
        stats_add(errors, "other", s->api_failed);
        json_object_object_add(api, "errors", errors);
        json_object_object_add(root, "api", api);

        stats_add(results, "delivered", s->delivered);
        stats_add(results, "stale_dropped", s->stale_dropped);
        json_object_object_add(root, "results", results);

        /* With the bucket in Redis, no host can read its tokens. */
        if (strcmp(s->bucket_source, "shm") == 0 || strcmp(s->bucket_source, "local_share") == 0)
                json_object_object_add(
                    bucket, "tokens",
                    json_object_new_double((double)s->bucket_micro_tokens / BUCKET_UNIT));
        json_object_object_add(bucket, "rate",
                               json_object_new_double((double)s->rate_milli / 1000));
        stats_add(bucket, "burst", s->burst);
        stats_add(bucket, "pause_left_ms", s->pause_left_ms);
        json_object_object_add(bucket, "source", json_object_new_string(s->bucket_source));
        json_object_object_add(root, "bucket", bucket);

        if (s->redis_backend) {
                json_object *redis = json_object_new_object();

                json_object_object_add(redis, "up", json_object_new_boolean(!s->redis_down));
                json_object_object_add(
                    redis, "fallback",
                    json_object_new_string(
                        s->redis_fallback == CONF_FALLBACK_LOCAL_SHARE ? "local_share" : "closed"));
                json_object_object_add(redis, "fallback_active",
                                       json_object_new_boolean(s->redis_down != 0));
                stats_add(redis, "errors", s->redis_errors);
                stats_add(redis, "switches", s->redis_switches);
                stats_add(redis, "tokens_granted", s->redis_granted);
                stats_add(redis, "tokens_dropped", s->redis_dropped);
                json_object_object_add(root, "redis", redis);
        }

        json_object_object_add(latency, "queue_wait", stats_latency_json(&s->queue_wait));
        json_object_object_add(latency, "api", stats_latency_json(&s->api_time));
        json_object_object_add(latency, "keystroke_to_result", stats_latency_json(&s->keystroke));
        json_object_object_add(root, "latency", latency);
        json_object_object_add(root, "shared_cache", stats_shared_cache_json(&s->shared_cache));
        return root;
}
