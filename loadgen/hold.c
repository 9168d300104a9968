/* The hold scenario: many idle WebSocket clients, kept open while the bench reads /proc. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loadgen.h"

#define HOLD_MAX_INFLIGHT 512

static volatile sig_atomic_t hold_stop;

static void hold_on_signal(int sig)
{
        (void)sig;
        hold_stop = 1;
}

static void hold_drop_frame(uint32_t index, unsigned opcode, const uint8_t *payload, size_t len,
                            void *arg)
{
        (void)index;
        (void)opcode;
        (void)payload;
        (void)len;
        (void)arg;
}

int lg_hold_main(int argc, char **argv)
{
        struct lg_target target = {.src_first = 2, .src_count = 200};
        struct sigaction sa = {.sa_handler = hold_on_signal};
        struct epoll_event events[256];
        struct lg_pool pool;
        long long clients = 0, stall_ms = 5000, hold_s = 120;
        uint64_t start, deadline;
        int opt;

        while ((opt = getopt(argc, argv, "p:n:S:s:t:d:")) != -1) {
                switch (opt) {
                case 'p':
                        target.port = (int)lg_parse_number(optarg, 1, 65535, "-p");
                        break;
                case 'n':
                        clients = lg_parse_number(optarg, 1, 1000000, "-n");
                        break;
                case 'S':
                        target.src_first = (unsigned)lg_parse_number(optarg, 1, 254, "-S");
                        break;
                case 's':
                        target.src_count = (unsigned)lg_parse_number(optarg, 1, 254, "-s");
                        break;
                case 't':
                        stall_ms = lg_parse_number(optarg, 100, 600000, "-t");
                        break;
                case 'd':
                        hold_s = lg_parse_number(optarg, 1, 3600, "-d");
                        break;
                default:
                        return 1;
                }
        }
        if (target.port == 0 || clients == 0)
                lg_fatal("hold needs -p PORT and -n CLIENTS");
        if (target.src_first + target.src_count > 255)
                lg_fatal("source addresses 127.0.0.%u to .%u pass .254; lower -S or -s",
                         target.src_first, target.src_first + target.src_count - 1);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);

        start = lg_now_ns();
        lg_pool_open(&pool, &target, (uint32_t)clients, HOLD_MAX_INFLIGHT, (unsigned)stall_ms);
        printf("held=%u\nfailed=%u\npending=%u\nopen_s=%.3f\nready\n", pool.open, pool.failed,
               pool.pending, (double)(lg_now_ns() - start) / 1e9);
        fflush(stdout);

        deadline = lg_now_ns() + (uint64_t)hold_s * LG_NS_PER_SEC;
        while (!hold_stop && lg_now_ns() < deadline) {
                int n = epoll_wait(pool.epfd, events, 256, 200);

                if (n < 0 && errno != EINTR)
                        lg_fatal("epoll_wait failed: %s", strerror(errno));
                for (int i = 0; i < n; i++)
                        lg_conn_read(&pool, (uint32_t)events[i].data.u64, hold_drop_frame, NULL);
        }
        printf("still_open=%u\n", pool.open);
        lg_pool_close(&pool);
        return 0;
}
