/*
 * incsearchd, the front process: it terminates WebSockets, writes each client's latest query
 * into that client's shared-memory slot, supervises the workers and delivers their results.
 */
#ifndef INCSEARCHD_H
#define INCSEARCHD_H

#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "conf.h"
#include "limit.h"
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
        uint64_t deadline_ms;   /* CLOCK_MONOTONIC end of the handshake */
        uint16_t reject_status; /* HTTP status to answer with instead of serving, 0 if admitted */
        uint8_t ip_counted;     /* counted in the per-address table */
        uint8_t ping_sent;      /* a keepalive ping is waiting for any data from the peer */

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
        unsigned restarts;
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

/* page.S: the demo page, embedded at build time */
extern const char page_index_html[], page_index_html_end[];
extern const char page_client_js[], page_client_js_end[];

#endif
