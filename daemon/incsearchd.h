/*
 * incsearchd, the front process: it terminates WebSockets, writes each client's latest query
 * into that client's shared-memory slot, supervises the workers and delivers their results.
 */
#ifndef INCSEARCHD_H
#define INCSEARCHD_H

#include <stdint.h>
#include <sys/types.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "limit.h"
#include "rcache.h"
#include "shm.h"
#include "ws.h"

enum client_state {
        CLIENT_HTTP,      /* reading the request */
        CLIENT_WEBSOCKET, /* upgraded */
        CLIENT_CLOSING,   /* flushing the last bytes, then closed */
};

struct client {
        uint64_t id; /* connection number for logs */
        struct bufferevent *bev;
        enum client_state state;
        char peer[64]; /* "address:port" */
        struct limit_addr addr;
        uint64_t deadline_ms;       /* CLOCK_MONOTONIC end of the handshake */
        struct event *tls_deadline; /* closes at deadline_ms while the TLS handshake runs */
        uint16_t reject_status; /* HTTP status to answer with instead of serving, 0 if admitted */
        uint8_t ip_counted;     /* counted in the per-address table */
        uint8_t ping_sent;      /* a keepalive ping is waiting for any data from the peer */
        uint64_t connected_ms;  /* CLOCK_MONOTONIC time of accept */
        uint64_t queries;       /* queries received on this connection */
        uint64_t last_query_ns; /* CLOCK_MONOTONIC arrival of query last_seq, 0 before the first */

        uint32_t slot; /* UINT32_MAX until upgraded */
        uint32_t generation;
        int64_t last_seq;       /* latest query seq received, -1 before the first */
        int64_t last_delivered; /* seq of the last result sent, -1 before the first */

        struct ws_parser parser;
        /* A text message split over fragments, kept until its last one arrives. */
        uint8_t *message;
        size_t message_len;
        unsigned close_sent;

        /* The latest result that did not fit under max_output_bytes, sent once the queue drains. */
        char *pending;
        size_t pending_len;
};

struct worker {
        pid_t pid; /* 0 while not running */
        int fd;    /* daemon's end of the socket pair, -1 while not running */
        struct bufferevent *bev;
        unsigned restarts;       /* quick deaths in a row, for the restart backoff */
        uint64_t restarts_total; /* restarts of this worker since the daemon started */
        uint64_t started_ns;
        struct event *restart_timer;
};

/* The daemon's one global state. */
struct daemon {
        struct conf conf;
        struct shm shm;
        struct event_base *base;
        struct evconnlistener *listener;
        struct event *listener_resume; /* re-enables accept after running out of descriptors */

        struct client **clients; /* by slot index */
        uint32_t *free_slots;    /* stack of free slot indices */
        uint32_t free_count;
        uint64_t next_client_id;
        uint32_t connections; /* admitted TCP connections, upgraded or not */
        uint32_t rejecting;   /* connections waiting for their request head to be rejected */
        struct event *shutdown_timer;
        uint64_t shutdown_deadline_ms; /* CLOCK_MONOTONIC end of the current shutdown phase */

        struct worker workers[SHM_MAX_WORKERS];
        char worker_path[4096];
        int stopping;

        uint64_t started_ns;   /* CLOCK_MONOTONIC */
        uint32_t clients_peak; /* most WebSocket clients connected at once */
        /* The largest max_result_bytes since start: a worker may still send under an old one. */
        uint32_t max_result_bytes_seen;
        int control_fd; /* listening control socket, -1 if none */
        struct event *control_event;
        struct event *watchdog_timer;
};

/* A latency histogram reduced to what incsearchctl shows, in microseconds. */
struct stats_latency {
        uint64_t count;
        uint64_t sum_us;
        uint64_t p50_us, p90_us, p99_us, max_us;
};

/* One consistent reading of every figure that incsearchctl status and GET /metrics report. */
struct stats {
        uint64_t uptime_ms;
        unsigned workers_configured, workers_alive;
        uint64_t worker_restarts;
        uint32_t clients_now, clients_peak;
        uint64_t clients_total;
        uint64_t queries, superseded, queries_too_long;
        uint64_t api_calls, cache_hits, coalesced;
        uint64_t delivered, stale_dropped, requeued;
        uint64_t api_errors, api_timeouts, api_5xx, api_429, api_bad_body, api_failed;
        uint64_t bucket_micro_tokens; /* micro-tokens (BUCKET_UNIT per call) available now */
        uint64_t rate_milli;          /* calls per 1000 s */
        uint32_t burst;
        uint64_t pause_left_ms;    /* until API calls may start again after a 429 */
        const char *bucket_source; /* "shm", "redis", "local_share" or "none" */
        uint32_t fifo_depth;       /* slots waiting for an API call */
        struct stats_latency queue_wait, api_time, keystroke;

        /* The shared rate limit, with rate_limit_backend = redis. */
        int redis_backend;
        uint32_t redis_down;     /* 1 while the fallback applies */
        uint32_t redis_fallback; /* enum conf_redis_fallback */
        uint64_t redis_errors, redis_switches, redis_granted, redis_dropped;

        struct rcache_stats shared_cache; /* the shared result cache, with [cache] shared = redis */
};

extern struct daemon daemon_state;

/* server.c: the listener and the HTTP side of a connection */
int server_listen(void);
void server_close_client(struct client *client);
void server_finish(struct client *client);
void server_stop_accepting(void);
uint64_t server_now_ms(void);

/* client.c: the WebSocket side of a connection */
void client_upgraded(struct client *client);
void client_read_frames(struct client *client);

/*
 * Sends TEXT (malloc'd, freed here; NULL when building it ran out of memory) as the reply to
 * CLIENT's query SEQ, which needs no API call, and drops any older query still pending.
 */
void client_reply_now(struct client *client, int64_t seq, char *text, size_t text_len);

/* Drops CLIENT's query deferred by the current read, before CLIENT is freed. */
void client_batch_forget(struct client *client);
void client_send_text(struct client *client, const char *text, size_t len);
void client_deliver(uint32_t slot, uint32_t generation, uint64_t seq, const char *body, size_t len);
void client_write_drained(struct client *client);
void client_timed_out(struct client *client);
void client_close(struct client *client, unsigned code, const char *reason);

/* shutdown.c: the graceful stop on SIGTERM or SIGINT */
void shutdown_start(void);

/* supervisor.c: the worker pool */
void supervisor_start(void);
void supervisor_reap(void);
void supervisor_stop(void);
void daemon_lock(void);

/* Tells every worker that a query was queued. */
void supervisor_wake(void);
/* stats.c: the figures behind incsearchctl status and GET /metrics */
void stats_collect(struct stats *stats);
struct json_object *stats_json(const struct stats *stats);

/* metrics.c: GET /metrics in the Prometheus text format */
int metrics_allowed(const struct client *client);
void metrics_render(struct evbuffer *out);

/* control.c: the control socket for incsearchctl */
/* Binds the control socket, giving it to GROUP; OWNER and GROUP get a folder it creates. */
int control_listen(uid_t owner, gid_t group);
void control_close(void);

/* reload.c: SIGHUP and incsearchctl reload */
int reload_conf(char *message, size_t message_len);
void reload_set_log_level(enum log_level level);

/* notify.c: the systemd notification protocol */
void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_start_watchdog(void);

/* supervisor.c, for reload: sends the daemon's struct conf to every running worker */
void supervisor_send_conf(void);

/* page.S: the demo page, embedded at build time */
extern const char page_index_html[], page_index_html_end[];
extern const char page_client_js[], page_client_js_end[];

#endif
