/*
 * The ingest scenario: every client writes blocks of small masked query frames as fast as the
 * socket takes them, each block ending with a ping. incsearchd sends the pongs in order, so a
 * pong means it has read every frame of that block. A client keeps at most INGEST_WINDOW blocks
 * without their pong, which keeps the socket buffers short. So when the sending time ends, the
 * daemon has little left to read, and the frames counted are the frames it has read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loadgen.h"

#define INGEST_BLOCK_FRAMES 256
#define INGEST_WINDOW 4
#define INGEST_FIRST_SEQ 1000000000ULL /* 10 digits, so each frame keeps its length */
#define INGEST_SEQ_DIGITS 10
#define INGEST_QUERY "swi"
#define INGEST_DIGITS_AT (sizeof("{\"q\":\"" INGEST_QUERY "\",\"seq\":") - 1)
#define INGEST_DRAIN_S 30
#define WS_OP_TEXT 0x1
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA

struct ingest_client {
        uint8_t *block; /* INGEST_BLOCK_FRAMES text frames, then one ping */
        size_t block_len;
        size_t written;                         /* bytes of the current block already written */
        size_t seq_offset[INGEST_BLOCK_FRAMES]; /* where each frame's seq digits start */
        uint64_t next_seq;
        uint64_t blocks_sent;
        uint64_t pongs;
};

struct ingest {
        struct lg_pool pool;
        struct ingest_client *clients;
        int json; /* JSON frames {"q":..,"seq":..}; 0 for plain-text frames */
        int sending;
        uint64_t blocks_sent;
        uint64_t pongs;
        uint64_t results;
        uint64_t errors;
};

/* Builds a client's block once. JSON blocks get their seq digits rewritten for each send. */
static void ingest_build(struct ingest *in, uint32_t index)
{
        struct ingest_client *c = &in->clients[index];
        const uint8_t *mask = in->pool.conns[index].mask;
        char payload[64];
        int len = in->json ? snprintf(payload, sizeof(payload), "{\"q\":\"%s\",\"seq\":%llu}",
                                      INGEST_QUERY, INGEST_FIRST_SEQ)
                           : snprintf(payload, sizeof(payload), "%s", INGEST_QUERY);

        c->block = malloc(INGEST_BLOCK_FRAMES * ((size_t)len + 14) + 14);
        if (c->block == NULL)
                lg_fatal("out of memory building frames");
        for (int i = 0; i < INGEST_BLOCK_FRAMES; i++) {
                size_t frame = lg_frame_encode(c->block + c->block_len, WS_OP_TEXT, mask, payload,
                                               (size_t)len);

                /* Payloads under 126 bytes have a 2-byte header and the 4-byte mask key. */
                c->seq_offset[i] = c->block_len + 6 + INGEST_DIGITS_AT;
                c->block_len += frame;
        }
        c->block_len += lg_frame_encode(c->block + c->block_len, WS_OP_PING, mask, "", 0);
        c->next_seq = INGEST_FIRST_SEQ;
        c->written = c->block_len; /* no block started yet */
}

static void ingest_number(struct ingest_client *c, const uint8_t *mask)
{
        for (int i = 0; i < INGEST_BLOCK_FRAMES; i++) {
                uint64_t seq = c->next_seq++;

                for (int d = INGEST_SEQ_DIGITS - 1; d >= 0; d--) {
                        c->block[c->seq_offset[i] + (size_t)d] =
                            (uint8_t)('0' + seq % 10) ^ mask[(INGEST_DIGITS_AT + (size_t)d) & 3];
                        seq /= 10;
                }
        }
}

/*
 * Writes until the socket is full, the window is full, or sending has ended and the current
 * block is out. Returns -1 if the connection failed.
 */
static int ingest_write(struct ingest *in, uint32_t index)
{
        struct ingest_client *c = &in->clients[index];
        struct lg_conn *conn = &in->pool.conns[index];

        for (;;) {
                ssize_t n;

                if (c->written == c->block_len) {
                        if (!in->sending || c->blocks_sent - c->pongs >= INGEST_WINDOW)
                                return 0;
                        if (in->json)
                                ingest_number(c, conn->mask);
                        c->written = 0;
                        c->blocks_sent++;
                        in->blocks_sent++;
                }
                n = write(conn->fd, c->block + c->written, c->block_len - c->written);
                if (n < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -1;
                c->written += (size_t)n;
        }
}

static void ingest_on_frame(uint32_t index, unsigned opcode, const uint8_t *payload, size_t len,
                            void *arg)
{
        struct ingest *in = arg;

        if (opcode == WS_OP_PONG) {
                in->clients[index].pongs++;
                in->pongs++;
        } else if (opcode == WS_OP_TEXT) {
                if (memmem(payload, len, "\"type\":\"error\"", 14) != NULL)
                        in->errors++;
                else
                        in->results++;
        }
}

static void ingest_event(struct ingest *in, uint32_t index)
{
        int n;

        /* Edge-triggered: read until the socket is empty, then write what the window allows. */
        while ((n = lg_conn_read(&in->pool, index, ingest_on_frame, in)) > 0)
                ;
        if (n < 0)
                return;
        if (ingest_write(in, index) < 0)
                lg_warn("connection %u failed while sending: %s", index, strerror(errno));
}

/* Sends until DEADLINE, then waits for the pong of every block sent. */
static void ingest_run(struct ingest *in, uint64_t deadline)
{
        struct epoll_event events[256];

        in->sending = 1;
        for (uint32_t i = 0; i < in->pool.count; i++) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = i};

                if (in->pool.conns[i].state != LG_OPEN)
                        continue;
                epoll_ctl(in->pool.epfd, EPOLL_CTL_MOD, in->pool.conns[i].fd, &ev);
                ingest_event(in, i);
        }
        while (in->sending || in->pongs < in->blocks_sent) {
                int n = epoll_wait(in->pool.epfd, events, 256, 50);
                uint64_t now = lg_now_ns();

                if (n < 0 && errno != EINTR)
                        lg_fatal("epoll_wait failed: %s", strerror(errno));
                if (in->sending && now >= deadline) {
                        in->sending = 0;
                        deadline = now + INGEST_DRAIN_S * LG_NS_PER_SEC;
                } else if (!in->sending && now >= deadline) {
                        lg_warn("%llu of %llu pongs after %d s; giving up",
                                (unsigned long long)in->pongs, (unsigned long long)in->blocks_sent,
                                INGEST_DRAIN_S);
                        return;
                }
                for (int i = 0; i < n; i++) {
                        uint32_t index = (uint32_t)events[i].data.u64;

                        if (in->pool.conns[index].state == LG_OPEN)
                                ingest_event(in, index);
                }
        }
}

int lg_ingest_main(int argc, char **argv)
{
        struct lg_target target = {.src_first = 2, .src_count = 16};
        struct ingest in = {.json = 1};
        long long clients = 64, seconds = 5;
        double daemon_cpu, self_cpu, elapsed;
        uint64_t start, frames;
        pid_t daemon_pid = 0;
        int opt;

        while ((opt = getopt(argc, argv, "p:P:n:d:f:")) != -1) {
                switch (opt) {
                case 'p':
                        target.port = (int)lg_parse_number(optarg, 1, 65535, "-p");
                        break;
                case 'P':
                        daemon_pid = (pid_t)lg_parse_number(optarg, 1, 1 << 30, "-P");
                        break;
                case 'n':
                        clients = lg_parse_number(optarg, 1, 10000, "-n");
                        break;
                case 'd':
                        seconds = lg_parse_number(optarg, 1, 600, "-d");
                        break;
                case 'f':
                        if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0)
                                lg_fatal("invalid -f \"%s\": expected json or text", optarg);
                        in.json = strcmp(optarg, "json") == 0;
                        break;
                default:
                        return 1;
                }
        }
        if (target.port == 0 || daemon_pid == 0)
                lg_fatal("ingest needs -p PORT and -P DAEMON_PID");

        lg_pool_open(&in.pool, &target, (uint32_t)clients, 256, 5000);
        if (in.pool.open == 0)
                lg_fatal("no client could connect to port %d", target.port);
        in.clients = calloc(in.pool.count, sizeof(*in.clients));
        if (in.clients == NULL)
                lg_fatal("out of memory for %u clients", in.pool.count);
        for (uint32_t i = 0; i < in.pool.count; i++)
                if (in.pool.conns[i].state == LG_OPEN)
                        ingest_build(&in, i);

        daemon_cpu = lg_process_cpu_s(daemon_pid);
        self_cpu = lg_self_cpu_s();
        start = lg_now_ns();
        ingest_run(&in, start + (uint64_t)seconds * LG_NS_PER_SEC);
        elapsed = (double)(lg_now_ns() - start) / 1e9;
        daemon_cpu = lg_process_cpu_s(daemon_pid) - daemon_cpu;
        self_cpu = lg_self_cpu_s() - self_cpu;
        frames = in.pongs * INGEST_BLOCK_FRAMES;

        printf("clients=%u\nframe_kind=%s\nframes=%llu\nelapsed_s=%.3f\n", in.pool.open,
               in.json ? "json" : "text", (unsigned long long)frames, elapsed);
        printf("frames_per_s=%.0f\n", (double)frames / elapsed);
        printf("daemon_cpu_s=%.2f\nloadgen_cpu_s=%.2f\n", daemon_cpu, self_cpu);
        printf("frames_per_daemon_cpu_s=%.0f\n",
               daemon_cpu > 0 ? (double)frames / daemon_cpu : 0.0);
        printf("daemon_cpu_s_per_million=%.3f\n",
               frames > 0 ? daemon_cpu * 1e6 / (double)frames : 0.0);
        printf("results=%llu\nerrors=%llu\nblocks_without_pong=%llu\n",
               (unsigned long long)in.results, (unsigned long long)in.errors,
               (unsigned long long)(in.blocks_sent - in.pongs));
        for (uint32_t i = 0; i < in.pool.count; i++)
                free(in.clients[i].block);
        free(in.clients);
        lg_pool_close(&in.pool);
        return 0;
}
