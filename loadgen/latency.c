/*
 * The latency scenario: clients connected, keystrokes at a fixed total rate, each from a client
 * with nothing outstanding, and this process as the API. Each query is "lgINDEX_N", so the
 * request, the response and the result frame are matched to its keystroke on one clock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loadgen.h"

#define LATENCY_DRAIN_S 5
#define LATENCY_LOST_NS (5 * LG_NS_PER_SEC)
#define WS_OP_TEXT 0x1

struct latency_client {
        uint64_t counter; /* the outstanding query's N, also its seq */
        uint64_t sent_ns; /* 0 when nothing is outstanding */
        uint64_t request_ns;
        uint64_t response_ns;
};

struct latency {
        struct lg_pool pool;
        struct latency_client *clients;
        struct lg_samples to_request; /* keystroke sent to API request received */
        struct lg_samples to_client;  /* API response written to result frame received */
        struct lg_samples round_trip; /* keystroke sent to result frame received */
        uint64_t sent, answered, errors, lost, busy, unmatched;
        uint32_t outstanding;
};

static int latency_parse_query(const char *query, uint32_t *index, uint64_t *counter)
{
        unsigned long long n;
        unsigned i;

        if (sscanf(query, "lg%u_%llu", &i, &n) != 2)
                return -1;
        *index = i;
        *counter = n;
        return 0;
}

static void latency_on_request(const char *query, uint64_t request_ns, uint64_t response_ns,
                               void *arg)
{
        struct latency *l = arg;
        struct latency_client *c;
        uint64_t counter;
        uint32_t index;

        if (latency_parse_query(query, &index, &counter) < 0 || index >= l->pool.count) {
                l->unmatched++;
                return;
        }
        c = &l->clients[index];
        if (c->sent_ns == 0 || c->counter != counter || c->request_ns != 0) {
                l->unmatched++;
                return;
        }
        c->request_ns = request_ns;
        c->response_ns = response_ns;
        lg_samples_add(&l->to_request, request_ns - c->sent_ns);
}

static void latency_on_frame(uint32_t index, unsigned opcode, const uint8_t *payload, size_t len,
                             void *arg)
{
        struct latency *l = arg;
        struct latency_client *c = &l->clients[index];
        uint64_t now = lg_now_ns(), counter;
        uint32_t query_index;
        char query[64];

        if (opcode != WS_OP_TEXT || c->sent_ns == 0)
                return;
        if (lg_json_string(payload, len, "q", query, sizeof(query)) < 0 ||
            latency_parse_query(query, &query_index, &counter) < 0 || query_index != index ||
            counter != c->counter)
                return;
        if (memmem(payload, len, "\"type\":\"error\"", 14) != NULL || c->response_ns == 0) {
                l->errors++;
        } else {
                lg_samples_add(&l->to_client, now - c->response_ns);
                lg_samples_add(&l->round_trip, now - c->sent_ns);
                l->answered++;
        }
        c->sent_ns = 0;
        l->outstanding--;
}

/* Sends one keystroke from the next client with nothing outstanding. */
static void latency_keystroke(struct latency *l, uint32_t *cursor)
{
        char text[96];
        int len;

        for (uint32_t tries = 0; tries < l->pool.count; tries++) {
                uint32_t index = (*cursor)++ % l->pool.count;
                struct latency_client *c = &l->clients[index];

                if (c->sent_ns != 0 || l->pool.conns[index].state != LG_OPEN)
                        continue;
                c->counter++;
                len = snprintf(text, sizeof(text), "{\"q\":\"lg%u_%llu\",\"seq\":%llu}", index,
                               (unsigned long long)c->counter, (unsigned long long)c->counter);
                c->request_ns = c->response_ns = 0;
                c->sent_ns = lg_now_ns();
                if (lg_conn_send(&l->pool, index, WS_OP_TEXT, text, (size_t)len) < 0) {
                        c->sent_ns = 0;
                        continue;
                }
                l->sent++;
                l->outstanding++;
                return;
        }
        l->busy++;
}

/* Gives up on queries older than LATENCY_LOST_NS so their clients can type again. */
static void latency_expire(struct latency *l, uint64_t now)
{
        for (uint32_t i = 0; i < l->pool.count; i++) {
                struct latency_client *c = &l->clients[i];

                /* A keystroke sent after NOW was read has sent_ns > now. */
                if (c->sent_ns != 0 && now > c->sent_ns + LATENCY_LOST_NS) {
                        c->sent_ns = 0;
                        l->lost++;
                        l->outstanding--;
                }
        }
}

static void latency_loop(struct latency *l, struct lg_responder *api, uint64_t interval_ns,
                         uint64_t seconds)
{
        struct epoll_event events[256];
        uint64_t start = lg_now_ns(), next_key = start, next_expire = start + LG_NS_PER_SEC;
        uint64_t stop_keys = start + seconds * LG_NS_PER_SEC;
        uint64_t stop = stop_keys + LATENCY_DRAIN_S * LG_NS_PER_SEC;
        uint32_t cursor = 0;

        for (;;) {
                uint64_t now = lg_now_ns();
                int n;

                if (now >= stop || (now >= stop_keys && l->outstanding == 0))
                        return;
                while (now < stop_keys && now >= next_key) {
                        latency_keystroke(l, &cursor);
                        next_key += interval_ns;
                }
                if (now >= next_expire) {
                        latency_expire(l, now);
                        next_expire = now + LG_NS_PER_SEC;
                }
                n = epoll_wait(l->pool.epfd, events, 256, 1);
                if (n < 0 && errno != EINTR)
                        lg_fatal("epoll_wait failed: %s", strerror(errno));
                for (int i = 0; i < n; i++) {
                        uint64_t tag = events[i].data.u64;

                        if (tag & LG_TAG_RESPONDER) {
                                lg_responder_event(api, tag, events[i].events);
                                continue;
                        }
                        if (events[i].events & EPOLLOUT)
                                lg_conn_flush(&l->pool, (uint32_t)tag);
                        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                                lg_conn_read(&l->pool, (uint32_t)tag, latency_on_frame, l);
                }
        }
}

int lg_latency_main(int argc, char **argv)
{
        struct lg_target target = {.src_first = 2, .src_count = 64};
        struct latency l;
        struct lg_responder *api;
        long long clients = 10, rate = 200, seconds = 5;
        int api_port = 0, opt;

        memset(&l, 0, sizeof(l));
        while ((opt = getopt(argc, argv, "p:a:n:r:d:")) != -1) {
                switch (opt) {
                case 'p':
                        target.port = (int)lg_parse_number(optarg, 1, 65535, "-p");
                        break;
                case 'a':
                        api_port = (int)lg_parse_number(optarg, 1, 65535, "-a");
                        break;
                case 'n':
                        clients = lg_parse_number(optarg, 1, 19000, "-n");
                        break;
                case 'r':
                        rate = lg_parse_number(optarg, 1, 100000, "-r");
                        break;
                case 'd':
                        seconds = lg_parse_number(optarg, 1, 600, "-d");
                        break;
                default:
                        return 1;
                }
        }
        if (target.port == 0 || api_port == 0)
                lg_fatal("latency needs -p PORT and -a API_PORT");

        lg_pool_open(&l.pool, &target, (uint32_t)clients, 512, 5000);
        if (l.pool.open == 0)
                lg_fatal("no client could connect to port %d", target.port);
        l.clients = calloc(l.pool.count, sizeof(*l.clients));
        if (l.clients == NULL)
                lg_fatal("out of memory for %u clients", l.pool.count);
        api = lg_responder_new(l.pool.epfd, api_port, latency_on_request, &l);

        latency_loop(&l, api, LG_NS_PER_SEC / (uint64_t)rate, (uint64_t)seconds);

        printf("clients=%u\nkeys_per_s=%lld\nsent=%llu\nanswered=%llu\nerrors=%llu\nlost=%llu\n",
               l.pool.open, rate, (unsigned long long)l.sent, (unsigned long long)l.answered,
               (unsigned long long)l.errors, (unsigned long long)l.lost);
        printf("busy=%llu\nunmatched_requests=%llu\napi_requests=%llu\n",
               (unsigned long long)l.busy, (unsigned long long)l.unmatched,
               (unsigned long long)lg_responder_requests(api));
        lg_samples_print(&l.to_request, "key_to_request");
        lg_samples_print(&l.to_client, "response_to_client");
        lg_samples_print(&l.round_trip, "round_trip");
        lg_responder_free(api);
        lg_pool_close(&l.pool);
        return 0;
}
