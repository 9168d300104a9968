/*
 * incsearch-loadgen: the load generator behind `make bench`. One process drives many WebSocket
 * clients over epoll against an incsearchd on loopback, and can play a fast search API itself
 * so that keystroke-to-request and response-to-client times are read from one clock.
 */
#ifndef INCSEARCH_LOADGEN_H
#define INCSEARCH_LOADGEN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LG_NS_PER_MS ((uint64_t)1000000)
#define LG_NS_PER_SEC ((uint64_t)1000000000)

/* epoll data of a responder socket: this bit set, the responder's index in the low bits. */
#define LG_TAG_RESPONDER ((uint64_t)1 << 40)

enum lg_conn_state {
        LG_CONNECTING, /* non-blocking connect in progress */
        LG_HANDSHAKE,  /* upgrade request sent, waiting for 101 */
        LG_OPEN,       /* WebSocket open */
        LG_CLOSED
};

/* One WebSocket client connection. */
struct lg_conn {
        int fd;
        enum lg_conn_state state;
        uint8_t mask[4]; /* masking key of every frame this connection sends */
        uint8_t *in;     /* received bytes not parsed yet */
        size_t in_len;
        size_t in_cap;
        uint8_t *out; /* bytes a write could not take yet */
        size_t out_len;
        size_t out_cap;
};

/* The incsearchd port that clients connect to, and their source addresses. */
struct lg_target {
        int port;           /* incsearchd on 127.0.0.1 */
        unsigned src_first; /* connection i binds 127.0.0.(src_first + i % src_count) */
        unsigned src_count;
};

struct lg_pool {
        int epfd;
        struct lg_conn *conns;
        uint32_t count;
        uint32_t open;    /* connections in LG_OPEN */
        uint32_t failed;  /* refused, reset, or given a status other than 101 */
        uint32_t pending; /* still connecting or in the handshake when lg_pool_open returned */
        struct lg_target target;
};

/*
 * Called by lg_conn_read for each complete frame from the server. Server frames are never
 * masked. PAYLOAD is valid only during the call.
 */
typedef void lg_frame_cb(uint32_t index, unsigned opcode, const uint8_t *payload, size_t len,
                         void *arg);

uint64_t lg_now_ns(void);
void lg_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void lg_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Raises the soft open-file limit to the hard one and returns it. */
uint64_t lg_raise_nofile(void);

/* Returns utime + stime of process PID in seconds, or -1 if it cannot be read. */
double lg_process_cpu_s(pid_t pid);

/* Returns this process's user + system CPU time in seconds. */
double lg_self_cpu_s(void);

/*
 * Creates the epoll set and COUNT connections, then connects and upgrades them with at most
 * MAX_INFLIGHT handshakes at once. Returns when every connection is open or failed, or when
 * none has progressed for STALL_MS. Exits on a local error such as a failed socket().
 */
void lg_pool_open(struct lg_pool *pool, const struct lg_target *target, uint32_t count,
                  unsigned max_inflight, unsigned stall_ms);

/* Closes every connection and the epoll set. */
void lg_pool_close(struct lg_pool *pool);

/*
 * Reads once from the socket and calls CB per complete frame. Returns 1 after reading, 0 when
 * there was nothing to read, or -1 when the connection ended or sent a malformed frame, in
 * which case it is closed.
 */
int lg_conn_read(struct lg_pool *pool, uint32_t index, lg_frame_cb *cb, void *arg);

/* Sends a masked frame, queueing what the socket cannot take. Returns 0 or -1. */
int lg_conn_send(struct lg_pool *pool, uint32_t index, unsigned opcode, const void *payload,
                 size_t len);

/* Writes queued bytes after EPOLLOUT. Returns 0 or -1. */
int lg_conn_flush(struct lg_pool *pool, uint32_t index);

/*
 * Encodes a masked client frame with FIN set into OUT, which has room for len + 14 bytes.
 * Returns the frame's length.
 */
size_t lg_frame_encode(uint8_t *out, unsigned opcode, const uint8_t mask[4], const void *payload,
                       size_t len);

/* Finds "KEY": in a JSON text and copies its string value or reads its integer value. */
int lg_json_string(const uint8_t *text, size_t len, const char *key, char *out, size_t out_len);
int lg_json_int(const uint8_t *text, size_t len, const char *key, int64_t *out);

/* A growing array of durations in nanoseconds. */
struct lg_samples {
        uint64_t *ns;
        size_t count;
        size_t cap;
};

void lg_samples_add(struct lg_samples *samples, uint64_t ns);
/* Sorts the samples and returns the value at quantile Q (0 to 1), or 0 when there are none. */
uint64_t lg_samples_quantile(struct lg_samples *samples, double q);
/* Prints NAME_p50_us=, NAME_p99_us=, NAME_max_us= and NAME_count= lines. */
void lg_samples_print(struct lg_samples *samples, const char *name);
void lg_samples_free(struct lg_samples *samples);

/*
 * The fast search API: it responds to GET /search?q=... at once with 200 and a small JSON body and
 * calls a hook with the query and the times the request arrived and the response was written.
 */
typedef void lg_request_cb(const char *query, uint64_t request_ns, uint64_t response_ns, void *arg);

struct lg_responder;

/* Listens on 127.0.0.1:PORT and adds its sockets to EPFD. Exits if it cannot listen. */
struct lg_responder *lg_responder_new(int epfd, int port, lg_request_cb *cb, void *arg);
/* Handles an epoll event whose data carries LG_TAG_RESPONDER. */
void lg_responder_event(struct lg_responder *responder, uint64_t tag, uint32_t events);
uint64_t lg_responder_requests(const struct lg_responder *responder);
void lg_responder_free(struct lg_responder *responder);

/* Scenarios. Each reads its options from ARGV and prints key=value lines on stdout. */
int lg_hold_main(int argc, char **argv);
int lg_ingest_main(int argc, char **argv);
int lg_latency_main(int argc, char **argv);
int lg_typing_main(int argc, char **argv);
int lg_startup_main(int argc, char **argv);
/* Prints a TCP port on 127.0.0.1 that was free a moment ago. */
int lg_port_main(int argc, char **argv);

/* Reads a number from the demo API's GET /stats on 127.0.0.1:PORT. Returns it, or -1. */
long long lg_api_stat(int port, const char *name);

/* Parses a decimal option value in [MIN, MAX] or exits with a message naming OPTION. */
long long lg_parse_number(const char *text, long long min, long long max, const char *option);

#endif
