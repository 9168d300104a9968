/*
 * The rate limit shared through Redis, from one worker's side: an asynchronous hiredis
 * connection driven from the worker's curl_multi_poll, and two Lua scripts. The token script
 * is GCRA on Redis's clock (TIME): every host and worker that asks shares one limit, and a key
 * that does not exist yet starts empty, so a Redis restart never hands out a fresh burst. The
 * pause script stores a 429 or 503 pause as a key with a TTL that only ever grows.
 *
 * Nothing here blocks but the name lookup of redis_url's host. hiredis 0.14 has no timeouts
 * of its own, so each command gets a deadline of redis_timeout_ms here; a reply later than
 * that counts as Redis being unavailable.
 */
#ifndef INCSEARCHD_RLIMIT_H
#define INCSEARCHD_RLIMIT_H

#include <stdint.h>

#include <curl/curl.h>
#include <hiredis/async.h>

#include "conf.h"

/* An event that the worker reports to the host's state after a call here. */
enum rlimit_event {
        RLIMIT_EVENT_NONE,
        RLIMIT_EVENT_UP,   /* a command succeeded */
        RLIMIT_EVENT_DOWN, /* a connect or command failed; the reason is in error */
};

struct rlimit {
        const struct conf *conf;
        redisAsyncContext *ac; /* NULL while disconnected */
        int ready;             /* both scripts are loaded on this connection */
        uint64_t ready_ns;     /* when it became ready */
        int want_read, want_write;
        char token_sha[41], pause_sha[41];
        unsigned outstanding;    /* replies still expected on this connection */
        uint64_t deadline_ns;    /* the oldest outstanding reply is late after this */
        uint64_t reconnect_ns;   /* no new connection before this */
        unsigned failures;       /* consecutive failures, for the reconnect backoff */
        int token_requested;     /* a token request is in flight */
        int granted;             /* Redis granted a token that is not spent yet */
        uint64_t ask_after_ns;   /* Redis replied that no token is due before this */
        uint64_t pause_until_ns; /* end of the shared pause in the last token reply, 0 for none */
        int pause_reported;      /* a token reply came since the worker last read the pause */
        int drain;               /* empty the bucket with the next token request */
        char other_limit[64]; /* "RATE_MILLI:BURST" another host wrote, until the worker logs it */
        enum rlimit_event event; /* set by the callbacks, read and cleared by the worker */
        char error[256];         /* the last failure, for the log */
};

/* Starts with no connection; the first rlimit_tick connects. CONF must outlive R. */
void rlimit_init(struct rlimit *r, const struct conf *conf);

/* Writes this host's rate and burst to Redis, noting another host's if they differ. */
void rlimit_announce(struct rlimit *r);

/* Drops the connection and any token; pending callbacks see a reply of NULL and ignore it. */
void rlimit_close(struct rlimit *r);

/*
 * Connects when due and fails a command that is past its deadline. Lowers *WAIT_NS to the
 * next time something is due here.
 */
void rlimit_tick(struct rlimit *r, uint64_t now_ns, uint64_t *wait_ns);

/* Fills FD with the socket and the events hiredis waits for. Returns 0 if there is none. */
int rlimit_waitfd(const struct rlimit *r, struct curl_waitfd *fd);

/* Lets hiredis read or write after the poll reported REVENTS (CURL_WAIT_POLL*) on its socket. */
void rlimit_handle(struct rlimit *r, short revents);

/*
 * Asks Redis for one token unless a request is in flight, a token is held, or Redis replied
 * that the next one is not due yet (then *WAIT_NS is lowered to that time). The reply sets granted,
 * or ask_after_ns.
 */
void rlimit_ask(struct rlimit *r, uint64_t now_ns, uint64_t *wait_ns);

/* Tells every host to make no call for DELAY_MS, the API's pause; a shorter pause is ignored. */
void rlimit_pause(struct rlimit *r, uint64_t delay_ms);

/* Writes redis_url without its user and password into OUT, for logs. */
void rlimit_url(const struct conf *conf, char *out, size_t len);

/* The Lua scripts, for tests that run them against a real server. */
extern const char rlimit_token_script[];
extern const char rlimit_pause_script[];

#endif
