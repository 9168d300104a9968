/*
 * A search API that responds to every GET at once with 200 and a fixed small JSON body, with no
 * rate limit, inside the load generator's event loop. Requests on one keep-alive connection
 * get their responses in order.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loadgen.h"

#define RESPONDER_MAX_CONNS 256
#define RESPONDER_BUF 16384
#define RESPONDER_LISTENER RESPONDER_MAX_CONNS /* tag index of the listening socket */

static const char responder_body[] = "{\"results\":[{\"name\":\"bench\"}]}";

struct responder_conn {
        int fd;
        size_t len;
        char buf[RESPONDER_BUF];
};

struct lg_responder {
        int epfd;
        int listen_fd;
        lg_request_cb *cb;
        void *arg;
        uint64_t requests;
        char response[256];
        size_t response_len;
        struct responder_conn conns[RESPONDER_MAX_CONNS];
};

struct lg_responder *lg_responder_new(int epfd, int port, lg_request_cb *cb, void *arg)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct epoll_event ev = {.events = EPOLLIN,
                                 .data.u64 = LG_TAG_RESPONDER | RESPONDER_LISTENER};
        struct lg_responder *r = calloc(1, sizeof(*r));
        int one = 1;

        if (r == NULL)
                lg_fatal("out of memory creating the API responder");
        r->epfd = epfd;
        r->cb = cb;
        r->arg = arg;
        for (int i = 0; i < RESPONDER_MAX_CONNS; i++)
                r->conns[i].fd = -1;
        r->response_len = (size_t)snprintf(r->response, sizeof(r->response),
                                           "HTTP/1.1 200 OK\r\n"
                                           "Content-Type: application/json\r\n"
                                           "Content-Length: %zu\r\n\r\n%s",
                                           sizeof(responder_body) - 1, responder_body);

        r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (r->listen_fd < 0)
                lg_fatal("socket() for the API responder failed: %s", strerror(errno));
        setsockopt(r->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(r->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
            listen(r->listen_fd, 128) < 0)
                lg_fatal("API responder cannot listen on 127.0.0.1:%d: %s; pick another port", port,
                         strerror(errno));
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, r->listen_fd, &ev) < 0)
                lg_fatal("epoll_ctl ADD failed: %s", strerror(errno));
        return r;
}

static void responder_close(struct lg_responder *r, struct responder_conn *c)
{
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->len = 0;
}

static void responder_accept(struct lg_responder *r)
{
        int fd, one = 1;

        while ((fd = accept4(r->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                int i;

                for (i = 0; i < RESPONDER_MAX_CONNS && r->conns[i].fd >= 0; i++)
                        ;
                if (i == RESPONDER_MAX_CONNS) {
                        lg_warn("API responder: more than %d connections; closing the new one",
                                RESPONDER_MAX_CONNS);
                        close(fd);
                        continue;
                }
                struct epoll_event ev = {.events = EPOLLIN,
                                         .data.u64 = LG_TAG_RESPONDER | (uint64_t)i};

                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                r->conns[i].fd = fd;
                r->conns[i].len = 0;
                if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                        lg_fatal("epoll_ctl ADD failed: %s", strerror(errno));
        }
}

/* Copies the q parameter of the request line in HEAD into QUERY, undecoded. */
static void responder_query(const char *head, char *query, size_t len)
{
        const char *p = strstr(head, "?q=");
        size_t n = 0;

        if (p == NULL)
                p = strstr(head, "&q=");
        if (p != NULL)
                for (p += 3; *p != '&' && *p != ' ' && *p != '\r' && *p != '\0' && n + 1 < len;)
                        query[n++] = *p++;
        query[n] = '\0';
}

static void responder_read(struct lg_responder *r, struct responder_conn *c)
{
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
        char *end;

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                responder_close(r, c);
                return;
        }
        c->len += (size_t)n;
        c->buf[c->len] = '\0';

        /* Requests carry no body: each ends at its blank line. */
        while ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
                uint64_t request_ns = lg_now_ns();
                size_t used = (size_t)(end + 4 - c->buf);
                char query[256];

                *end = '\0';
                responder_query(c->buf, query, sizeof(query));
                if (write(c->fd, r->response, r->response_len) != (ssize_t)r->response_len) {
                        lg_warn("API responder: short write of a response; closing");
                        responder_close(r, c);
                        return;
                }
                r->requests++;
                if (r->cb != NULL)
                        r->cb(query, request_ns, lg_now_ns(), r->arg);
                c->len -= used;
                memmove(c->buf, c->buf + used, c->len + 1);
        }
        if (c->len == sizeof(c->buf) - 1) {
                lg_warn("API responder: request head over %d bytes; closing", RESPONDER_BUF);
                responder_close(r, c);
        }
}

void lg_responder_event(struct lg_responder *r, uint64_t tag, uint32_t events)
{
        uint64_t index = tag & ~LG_TAG_RESPONDER;

        (void)events;
        if (index == RESPONDER_LISTENER)
                responder_accept(r);
        else if (index < RESPONDER_MAX_CONNS && r->conns[index].fd >= 0)
                responder_read(r, &r->conns[index]);
}

uint64_t lg_responder_requests(const struct lg_responder *r)
{
        return r->requests;
}

void lg_responder_free(struct lg_responder *r)
{
        if (r == NULL)
                return;
        for (int i = 0; i < RESPONDER_MAX_CONNS; i++)
                if (r->conns[i].fd >= 0)
                        responder_close(r, &r->conns[i]);
        close(r->listen_fd);
        free(r);
}
