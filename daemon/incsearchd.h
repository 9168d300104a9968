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
#include "shm.h"

#define HTTP_MAX_HEADER_BYTES 8192

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

        uint32_t slot; /* UINT32_MAX until upgraded */
        uint32_t generation;
        int64_t last_seq;       /* latest query seq received, -1 before the first */
        int64_t last_delivered; /* seq of the last result sent, -1 before the first */

        /* A text message split over fragments, kept until its last one arrives. */
        uint8_t *message;
        size_t message_len;
        uint32_t message_utf8; /* ws_utf8_feed state over the fragments so far */
        unsigned in_message;   /* a fragmented text message is open */
        unsigned close_sent;
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
        uint32_t connections; /* open TCP connections, upgraded or not */

        struct worker workers[SHM_MAX_WORKERS];
        char worker_path[4096];
        int stopping;
};

extern struct daemon daemon_state;

/* server.c: the listener and the HTTP side of a connection */
int server_listen(void);
void server_close_client(struct client *client);

/* client.c: the WebSocket side of a connection */
void client_upgraded(struct client *client);
void client_read_frames(struct client *client);
void client_send_text(struct client *client, const char *text, size_t len);
void client_deliver(uint32_t slot, uint32_t generation, uint64_t seq, const char *body, size_t len);

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
