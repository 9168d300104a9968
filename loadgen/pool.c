/*
 * WebSocket client connections over one epoll set: connect from a spread of loopback source
 * addresses, upgrade, send masked frames, parse the server's frames.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loadgen.h"

#define POOL_READ_CHUNK 16384
#define POOL_MAX_RESPONSE_HEAD 4096
#define POOL_MAX_FRAME (16 * 1024 * 1024)

/* The key from RFC 6455 section 1.3; incsearchd checks its form, not its value. */
static const char pool_upgrade_request[] = "GET /ws HTTP/1.1\r\n"
                                           "Host: 127.0.0.1\r\n"
                                           "Upgrade: websocket\r\n"
                                           "Connection: Upgrade\r\n"
                                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                           "Sec-WebSocket-Version: 13\r\n\r\n";

static void pool_reserve(uint8_t **buf, size_t *cap, size_t need)
{
        size_t grown = *cap == 0 ? 1024 : *cap;
        uint8_t *p;

        if (need <= *cap)
                return;
        while (grown < need)
                grown *= 2;
        p = realloc(*buf, grown);
        if (p == NULL)
                lg_fatal("out of memory growing a buffer to %zu bytes", grown);
        *buf = p;
        *cap = grown;
}

static void pool_conn_close(struct lg_pool *pool, struct lg_conn *conn)
{
        if (conn->fd >= 0) {
                epoll_ctl(pool->epfd, EPOLL_CTL_DEL, conn->fd, NULL);
                close(conn->fd);
        }
        if (conn->state == LG_OPEN)
                pool->open--;
        conn->fd = -1;
        conn->state = LG_CLOSED;
        free(conn->in);
        free(conn->out);
        conn->in = conn->out = NULL;
        conn->in_len = conn->in_cap = conn->out_len = conn->out_cap = 0;
}

static int pool_conn_start(struct lg_pool *pool, uint32_t index)
{
        struct lg_conn *conn = &pool->conns[index];
        const struct lg_target *t = &pool->target;
        struct sockaddr_in src = {.sin_family = AF_INET};
        struct sockaddr_in dst = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)t->port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = index};
        int one = 1;

        conn->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (conn->fd < 0)
                lg_fatal("socket() for connection %u failed: %s (open-file limit %llu)", index,
                         strerror(errno), (unsigned long long)lg_raise_nofile());
        setsockopt(conn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        /* Without IP_BIND_ADDRESS_NO_PORT, bind() would pick the port before the destination is
         * known, and each source address would give only one range of ephemeral ports. */
        setsockopt(conn->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        src.sin_addr.s_addr = htonl(0x7f000000u | (t->src_first + index % t->src_count));
        if (bind(conn->fd, (struct sockaddr *)&src, sizeof(src)) < 0)
                lg_fatal("bind to source 127.0.0.%u failed: %s",
                         t->src_first + index % t->src_count, strerror(errno));

        for (int i = 0; i < 4; i++)
                conn->mask[i] = (uint8_t)random();
        conn->state = LG_CONNECTING;
        if (connect(conn->fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
                pool_conn_close(pool, conn);
                return -1;
        }
        if (epoll_ctl(pool->epfd, EPOLL_CTL_ADD, conn->fd, &ev) < 0)
                lg_fatal("epoll_ctl ADD failed: %s", strerror(errno));
        return 0;
}

static void pool_set_events(struct lg_pool *pool, uint32_t index, uint32_t events)
{
        struct epoll_event ev = {.events = events, .data.u64 = index};

        if (epoll_ctl(pool->epfd, EPOLL_CTL_MOD, pool->conns[index].fd, &ev) < 0)
                lg_fatal("epoll_ctl MOD failed: %s", strerror(errno));
}

/* Advances one connection through connect and handshake. Returns 1 when it left that phase. */
static int pool_conn_progress(struct lg_pool *pool, uint32_t index)
{
        struct lg_conn *conn = &pool->conns[index];
        int err = 0;
        socklen_t len = sizeof(err);
        ssize_t n;
        uint8_t *end;

        if (conn->state == LG_CONNECTING) {
                if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0)
                        goto failed;
                n = write(conn->fd, pool_upgrade_request, sizeof(pool_upgrade_request) - 1);
                if (n != (ssize_t)sizeof(pool_upgrade_request) - 1)
                        goto failed;
                conn->state = LG_HANDSHAKE;
                pool_set_events(pool, index, EPOLLIN);
                return 0;
        }

        pool_reserve(&conn->in, &conn->in_cap, conn->in_len + POOL_MAX_RESPONSE_HEAD);
        n = read(conn->fd, conn->in + conn->in_len, conn->in_cap - conn->in_len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0)
                goto failed;
        conn->in_len += (size_t)n;
        end = memmem(conn->in, conn->in_len, "\r\n\r\n", 4);
        if (end == NULL) {
                if (conn->in_len > POOL_MAX_RESPONSE_HEAD)
                        goto failed;
                return 0;
        }
        if (conn->in_len < 12 || memcmp(conn->in, "HTTP/1.1 101", 12) != 0)
                goto failed;

        /* Frames sent right behind the 101 stay for lg_conn_read. */
        conn->in_len -= (size_t)(end + 4 - conn->in);
        memmove(conn->in, end + 4, conn->in_len);
        conn->state = LG_OPEN;
        pool->open++;
        return 1;

failed:
        pool->failed++;
        pool_conn_close(pool, conn);
        return 1;
}

void lg_pool_open(struct lg_pool *pool, const struct lg_target *target, uint32_t count,
                  unsigned max_inflight, unsigned stall_ms)
{
        struct epoll_event events[256];
        uint64_t last_progress = lg_now_ns();
        uint32_t started = 0, settled = 0;

        memset(pool, 0, sizeof(*pool));
        pool->target = *target;
        if (pool->target.src_count == 0)
                pool->target.src_count = 1;
        pool->count = count;
        pool->epfd = epoll_create1(EPOLL_CLOEXEC);
        pool->conns = calloc(count, sizeof(*pool->conns));
        if (pool->epfd < 0 || (count > 0 && pool->conns == NULL))
                lg_fatal("cannot set up %u connections: %s", count, strerror(errno));
        for (uint32_t i = 0; i < count; i++)
                pool->conns[i].fd = -1;

        while (settled < count) {
                int n;

                while (started < count && started - settled < max_inflight) {
                        if (pool_conn_start(pool, started) < 0) {
                                pool->failed++;
                                settled++;
                        }
                        started++;
                }
                n = epoll_wait(pool->epfd, events, 256, 100);
                if (n < 0 && errno != EINTR)
                        lg_fatal("epoll_wait failed: %s", strerror(errno));
                for (int i = 0; i < n; i++) {
                        uint32_t index = (uint32_t)events[i].data.u64;

                        if (pool->conns[index].state != LG_OPEN &&
                            pool->conns[index].state != LG_CLOSED &&
                            pool_conn_progress(pool, index)) {
                                settled++;
                                last_progress = lg_now_ns();
                        }
                }
                if (lg_now_ns() - last_progress > stall_ms * LG_NS_PER_MS)
                        break;
        }
        pool->pending = count - settled;
}

void lg_pool_close(struct lg_pool *pool)
{
        for (uint32_t i = 0; i < pool->count; i++)
                pool_conn_close(pool, &pool->conns[i]);
        free(pool->conns);
        close(pool->epfd);
        pool->conns = NULL;
}

size_t lg_frame_encode(uint8_t *out, unsigned opcode, const uint8_t mask[4], const void *payload,
                       size_t len)
{
        const uint8_t *p = payload;
        size_t h = 0;

        out[h++] = (uint8_t)(0x80 | opcode);
        if (len < 126) {
                out[h++] = (uint8_t)(0x80 | len);
        } else if (len <= 0xffff) {
                out[h++] = 0x80 | 126;
                out[h++] = (uint8_t)(len >> 8);
                out[h++] = (uint8_t)len;
        } else {
                out[h++] = 0x80 | 127;
                for (int shift = 56; shift >= 0; shift -= 8)
                        out[h++] = (uint8_t)(len >> shift);
        }
        memcpy(out + h, mask, 4);
        h += 4;
        for (size_t i = 0; i < len; i++)
                out[h + i] = p[i] ^ mask[i & 3];
        return h + len;
}

int lg_conn_flush(struct lg_pool *pool, uint32_t index)
{
        struct lg_conn *conn = &pool->conns[index];
        ssize_t n;

        if (conn->out_len == 0)
                return 0;
        n = write(conn->fd, conn->out, conn->out_len);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
                pool_conn_close(pool, conn);
                return -1;
        }
        if (n > 0) {
                conn->out_len -= (size_t)n;
                memmove(conn->out, conn->out + n, conn->out_len);
        }
        pool_set_events(pool, index, conn->out_len > 0 ? EPOLLIN | EPOLLOUT : EPOLLIN);
        return 0;
}

int lg_conn_send(struct lg_pool *pool, uint32_t index, unsigned opcode, const void *payload,
                 size_t len)
{
        struct lg_conn *conn = &pool->conns[index];

        if (conn->state != LG_OPEN)
                return -1;
        pool_reserve(&conn->out, &conn->out_cap, conn->out_len + len + 14);
        conn->out_len +=
            lg_frame_encode(conn->out + conn->out_len, opcode, conn->mask, payload, len);
        return lg_conn_flush(pool, index);
}

/* Parses one server frame at P. Returns its total length, 0 if incomplete, -1 if malformed. */
static ssize_t pool_parse_frame(const uint8_t *p, size_t avail, unsigned *opcode,
                                const uint8_t **payload, size_t *len)
{
        size_t h = 2;
        uint64_t n;

        if (avail < 2)
                return 0;
        if (p[1] & 0x80)
                return -1;
        n = p[1] & 0x7f;
        if (n == 126) {
                if (avail < 4)
                        return 0;
                n = (uint64_t)p[2] << 8 | p[3];
                h = 4;
        } else if (n == 127) {
                if (avail < 10)
                        return 0;
                n = 0;
                for (int i = 2; i < 10; i++)
                        n = n << 8 | p[i];
                h = 10;
        }
        if (n > POOL_MAX_FRAME)
                return -1;
        if (avail < h + n)
                return 0;
        *opcode = p[0] & 0x0f;
        *payload = p + h;
        *len = (size_t)n;
        return (ssize_t)(h + n);
}

int lg_conn_read(struct lg_pool *pool, uint32_t index, lg_frame_cb *cb, void *arg)
{
        struct lg_conn *conn = &pool->conns[index];
        size_t done = 0;
        ssize_t n;

        if (conn->state != LG_OPEN)
                return -1;
        pool_reserve(&conn->in, &conn->in_cap, conn->in_len + POOL_READ_CHUNK);
        n = read(conn->fd, conn->in + conn->in_len, conn->in_cap - conn->in_len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                pool_conn_close(pool, conn);
                return -1;
        }
        conn->in_len += (size_t)n;

        for (;;) {
                const uint8_t *payload;
                unsigned opcode;
                size_t len;
                ssize_t used =
                    pool_parse_frame(conn->in + done, conn->in_len - done, &opcode, &payload, &len);

                if (used < 0) {
                        lg_warn("connection %u: malformed frame from the server; closing it",
                                index);
                        pool_conn_close(pool, conn);
                        return -1;
                }
                if (used == 0)
                        break;
                done += (size_t)used;
                cb(index, opcode, payload, len, arg);
                if (conn->state != LG_OPEN)
                        return -1;
        }
        conn->in_len -= done;
        memmove(conn->in, conn->in + done, conn->in_len);

        /* An idle connection keeps no buffer, so 10,000 clients stay cheap for this process. */
        if (conn->in_len == 0) {
                free(conn->in);
                conn->in = NULL;
                conn->in_cap = 0;
        }
        return 1;
}
