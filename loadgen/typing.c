/*
 * The fairness and freshness scenario: clients type place names one key at a time at a fixed
 * rate, wait for the result of each word's last query, pause, and type the next word.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loadgen.h"

#define TYPING_PAUSE_MIN_MS 250
#define TYPING_PAUSE_SPREAD_MS 500
#define WS_OP_TEXT 0x1

static const char *const typing_words[] = {
    "switzerland", "germany", "france",   "austria", "italy",     "spain",     "portugal",
    "norway",      "sweden",  "finland",  "denmark", "poland",    "hungary",   "greece",
    "ireland",     "belgium", "canada",   "mexico",  "brazil",    "argentina", "chile",
    "peru",        "japan",   "india",    "kenya",   "egypt",     "morocco",   "nigeria",
    "australia",   "iceland", "bavaria",  "texas",   "ontario",   "quebec",    "bern",
    "zurich",      "geneva",  "normandy", "tuscany", "catalonia",
};

enum typing_state { TYPING_KEYS, TYPING_WAITING, TYPING_PAUSED, TYPING_DONE };

struct typing_client {
        enum typing_state state;
        const char *word;
        size_t typed;       /* characters of word sent so far */
        uint64_t next_ns;   /* next key, or end of the pause */
        uint64_t seq;       /* last seq sent */
        int64_t newest_seq; /* newest seq received, -1 before any */
        uint64_t last_key_ns;
};

struct typing {
        struct lg_pool pool;
        struct typing_client *clients;
        struct lg_samples last_wait; /* a word's last key to that query's result */
        uint64_t key_ns;             /* time between keys */
        uint64_t keys, words_typed, words_answered, word_errors, results, errors;
        uint64_t stale_after_fresh;
        uint32_t waiting;
};

static void typing_pause(struct typing_client *c, uint64_t now)
{
        c->state = TYPING_PAUSED;
        c->next_ns = now + (uint64_t)(TYPING_PAUSE_MIN_MS + random() % TYPING_PAUSE_SPREAD_MS) *
                               LG_NS_PER_MS;
}

static void typing_on_frame(uint32_t index, unsigned opcode, const uint8_t *payload, size_t len,
                            void *arg)
{
        struct typing *t = arg;
        struct typing_client *c = &t->clients[index];
        int error = memmem(payload, len, "\"type\":\"error\"", 14) != NULL;
        uint64_t now = lg_now_ns();
        int64_t seq;

        if (opcode != WS_OP_TEXT || lg_json_int(payload, len, "seq", &seq) < 0)
                return;
        if (error)
                t->errors++;
        else
                t->results++;

        /* A result for an older query after one for a newer query breaks freshness. */
        if (seq < c->newest_seq)
                t->stale_after_fresh++;
        else
                c->newest_seq = seq;

        if (c->state == TYPING_WAITING && (uint64_t)seq == c->seq) {
                lg_samples_add(&t->last_wait, now - c->last_key_ns);
                t->words_answered++;
                if (error)
                        t->word_errors++;
                t->waiting--;
                typing_pause(c, now);
        }
}

static void typing_key(struct typing *t, uint32_t index, uint64_t now)
{
        struct typing_client *c = &t->clients[index];
        char text[96];
        int len;

        c->typed++;
        c->seq++;
        len = snprintf(text, sizeof(text), "{\"q\":\"%.*s\",\"seq\":%llu}", (int)c->typed, c->word,
                       (unsigned long long)c->seq);
        c->last_key_ns = now;
        if (lg_conn_send(&t->pool, index, WS_OP_TEXT, text, (size_t)len) < 0) {
                c->state = TYPING_DONE;
                return;
        }
        t->keys++;
        if (c->typed == strlen(c->word)) {
                c->state = TYPING_WAITING;
                t->words_typed++;
                t->waiting++;
        } else {
                c->next_ns += t->key_ns;
        }
}

/* Runs every key and pause that is due; after STOP_NS no new word is started. */
static void typing_tick(struct typing *t, uint64_t now, uint64_t stop_ns)
{
        for (uint32_t i = 0; i < t->pool.count; i++) {
                struct typing_client *c = &t->clients[i];

                if (c->state == TYPING_DONE || c->state == TYPING_WAITING || now < c->next_ns)
                        continue;
                if (t->pool.conns[i].state != LG_OPEN) {
                        c->state = TYPING_DONE;
                        continue;
                }
                if (c->state == TYPING_PAUSED) {
                        if (now >= stop_ns) {
                                c->state = TYPING_DONE;
                                continue;
                        }
                        c->word = typing_words[(size_t)random() %
                                               (sizeof(typing_words) / sizeof(typing_words[0]))];
                        c->typed = 0;
                        c->state = TYPING_KEYS;
                        c->next_ns = now;
                }
                typing_key(t, i, now);
        }
}

static int typing_busy(const struct typing *t)
{
        for (uint32_t i = 0; i < t->pool.count; i++)
                if (t->clients[i].state == TYPING_KEYS || t->clients[i].state == TYPING_WAITING)
                        return 1;
        return 0;
}

static void typing_loop(struct typing *t, uint64_t seconds, uint64_t drain_s)
{
        struct epoll_event events[256];
        uint64_t start = lg_now_ns(), stop = start + seconds * LG_NS_PER_SEC;
        uint64_t deadline = stop + drain_s * LG_NS_PER_SEC;

        /* Clients start within the first second, not all on the same millisecond. */
        for (uint32_t i = 0; i < t->pool.count; i++) {
                t->clients[i].state = TYPING_PAUSED;
                t->clients[i].newest_seq = -1;
                t->clients[i].next_ns = start + (uint64_t)random() % LG_NS_PER_SEC;
        }
        for (;;) {
                uint64_t now = lg_now_ns();
                int n;

                if (now >= deadline || (now >= stop && !typing_busy(t)))
                        return;
                typing_tick(t, now, stop);
                n = epoll_wait(t->pool.epfd, events, 256, 1);
                if (n < 0 && errno != EINTR)
                        lg_fatal("epoll_wait failed: %s", strerror(errno));
                for (int i = 0; i < n; i++) {
                        uint32_t index = (uint32_t)events[i].data.u64;

                        if (events[i].events & EPOLLOUT)
                                lg_conn_flush(&t->pool, index);
                        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                                lg_conn_read(&t->pool, index, typing_on_frame, t);
                }
        }
}

int lg_typing_main(int argc, char **argv)
{
        struct lg_target target = {.src_first = 2, .src_count = 16};
        struct typing t;
        long long clients = 1000, keys_per_s = 8, seconds = 15, drain_s = 30;
        long long requests_before, violations_before;
        int api_port = 0, opt;

        memset(&t, 0, sizeof(t));
        while ((opt = getopt(argc, argv, "p:A:n:k:d:w:")) != -1) {
                switch (opt) {
                case 'p':
                        target.port = (int)lg_parse_number(optarg, 1, 65535, "-p");
                        break;
                case 'A':
                        api_port = (int)lg_parse_number(optarg, 1, 65535, "-A");
                        break;
                case 'n':
                        clients = lg_parse_number(optarg, 1, 19000, "-n");
                        break;
                case 'k':
                        keys_per_s = lg_parse_number(optarg, 1, 1000, "-k");
                        break;
                case 'd':
                        seconds = lg_parse_number(optarg, 1, 600, "-d");
                        break;
                case 'w':
                        drain_s = lg_parse_number(optarg, 0, 600, "-w");
                        break;
                default:
                        return 1;
                }
        }
        if (target.port == 0 || api_port == 0)
                lg_fatal("typing needs -p PORT and -A API_PORT (the demo API, for its /stats)");

        t.key_ns = LG_NS_PER_SEC / (uint64_t)keys_per_s;
        lg_pool_open(&t.pool, &target, (uint32_t)clients, 512, 5000);
        if (t.pool.open == 0)
                lg_fatal("no client could connect to port %d", target.port);
        t.clients = calloc(t.pool.count, sizeof(*t.clients));
        if (t.clients == NULL)
                lg_fatal("out of memory for %u clients", t.pool.count);

        requests_before = lg_api_stat(api_port, "requests");
        violations_before = lg_api_stat(api_port, "violations");
        typing_loop(&t, (uint64_t)seconds, (uint64_t)drain_s);
        long long api_calls = lg_api_stat(api_port, "requests") - requests_before;
        long long violations = lg_api_stat(api_port, "violations") - violations_before;

        printf("clients=%u\nkeys_per_s=%lld\nkeys=%llu\nwords_typed=%llu\nwords_answered=%llu\n",
               t.pool.open, keys_per_s, (unsigned long long)t.keys,
               (unsigned long long)t.words_typed, (unsigned long long)t.words_answered);
        printf("words_unanswered=%u\nword_errors=%llu\nresults=%llu\nerrors=%llu\n", t.waiting,
               (unsigned long long)t.word_errors, (unsigned long long)t.results,
               (unsigned long long)t.errors);
        printf("api_calls=%lld\napi_violations=%lld\n", api_calls, violations);
        printf("api_calls_per_word=%.3f\n",
               t.words_typed > 0 ? (double)api_calls / (double)t.words_typed : 0.0);
        printf("stale_after_fresh=%llu\n", (unsigned long long)t.stale_after_fresh);
        lg_samples_print(&t.last_wait, "last_query_wait");
        lg_pool_close(&t.pool);
        return 0;
}
