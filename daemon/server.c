/*
 * The listening socket and the HTTP side of each connection: the demo page, and the
 * WebSocket handshake that hands the connection to client.c.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "http.h"
#include "incsearchd.h"
#include "log.h"
#include "slot.h"
#include "tls.h"
#include "version.h"
#include "ws.h"

#define SERVER_ACCEPT_PAUSE_MS 100
/* Time a rejected connection gets to send its request head, so it can read the answer. */
#define SERVER_REJECT_TIMEOUT_MS 1000

/* Rejections, failed TLS handshakes and accept failures, which a flood of clients can cause, are
 * logged at a capped rate. */
static struct log_limit server_reject_limit, server_tls_limit, server_accept_limit;

/* Pauses of accept since descriptors ran out, 0 when accepting normally. The episode is logged
 * when it starts and when it ends, not at every pause. */
static unsigned long server_accept_pauses;

static void server_read_cb(struct bufferevent *bev, void *arg);
static void server_write_cb(struct bufferevent *bev, void *arg);
static void server_event_cb(struct bufferevent *bev, short what, void *arg);

uint64_t server_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval server_timeval(uint64_t ms)
{
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

        return tv;
}

void server_close_client(struct client *client)
{
        struct daemon *d = &daemon_state;

        if (client->slot != UINT32_MAX) {
                daemon_lock();
                slot_close(&d->shm, client->slot);
                shm_unlock(&d->shm);
                d->clients[client->slot] = NULL;
                d->free_slots[d->free_count++] = client->slot;
                log_debug("client %llu (%s) closed, slot %u freed", (unsigned long long)client->id,
                          client->peer, client->slot);
        }
        if (client->ip_counted)
                limit_ip_release(&client->addr);
        if (client->reject_status != 0)
                d->rejecting--;
        else
                d->connections--;
        client_batch_forget(client);
        if (client->tls_deadline != NULL)
                event_free(client->tls_deadline);
        tls_close_notify(client->bev);
        bufferevent_free(client->bev);
        free(client->message);
        free(client->pending);
        free(client);
}

/*
 * Flushes what is queued, then closes: the write callback finishes the job. A peer that stops
 * reading gets ping_timeout_ms to take the bytes before the event callback closes it.
 */
void server_finish(struct client *client)
{
        struct timeval flush = server_timeval(daemon_state.conf.ping_timeout_ms);

        client->state = CLIENT_CLOSING;
        bufferevent_disable(client->bev, EV_READ);
        bufferevent_set_timeouts(client->bev, NULL, &flush);
        if (evbuffer_get_length(bufferevent_get_output(client->bev)) == 0)
                server_close_client(client);
}

static void server_respond(struct client *client, int status, const char *reason,
                           const char *content_type, const char *extra_headers, const void *body,
                           size_t len)
{
        struct evbuffer *out = bufferevent_get_output(client->bev);

        evbuffer_add_printf(out,
                            "HTTP/1.1 %d %s\r\n"
                            "Server: incsearchd/%s\r\n"
                            "Content-Type: %s\r\n"
                            "Content-Length: %zu\r\n"
                            "Cache-Control: no-cache\r\n"
                            "%s"
                            "Connection: close\r\n\r\n",
                            status, reason, INCSEARCHD_VERSION, content_type, len,
                            extra_headers != NULL ? extra_headers : "");
        evbuffer_add(out, body, len);
        server_finish(client);
}

static void server_respond_text(struct client *client, int status, const char *reason,
                                const char *extra_headers)
{
        char body[128];
        int n = snprintf(body, sizeof(body), "%d %s\n", status, reason);

        log_limited(&server_reject_limit, LOG_LEVEL_INFO, "client %llu (%s): HTTP %d %s",
                    (unsigned long long)client->id, client->peer, status, reason);
        server_respond(client, status, reason, "text/plain; charset=utf-8", extra_headers, body,
                       (size_t)n);
}

static void server_upgrade(struct client *client, const struct http_request *req)
{
        struct daemon *d = &daemon_state;
        char accept[WS_ACCEPT_LEN + 1];
        const char *reason = NULL;
        struct evbuffer *out;
        int status = http_check_upgrade(req, &reason);

        if (status == 426) {
                shm_count(&d->shm, rejected_handshake);
                log_debug("client %llu (%s): %s", (unsigned long long)client->id, client->peer,
                          reason);
                server_respond_text(client, 426, "Upgrade Required",
                                    "Sec-WebSocket-Version: 13\r\n");
                return;
        }
        if (status != 0) {
                shm_count(&d->shm, rejected_handshake);
                log_debug("client %llu (%s): %s", (unsigned long long)client->id, client->peer,
                          reason);
                server_respond_text(client, 400, "Bad Request", NULL);
                return;
        }
        if (!http_origin_allowed(d->conf.allowed_origins, req->origin)) {
                shm_count(&d->shm, rejected_origin);
                log_debug("client %llu (%s): Origin %s is not in allowed_origins",
                          (unsigned long long)client->id, client->peer,
                          req->origin != NULL ? req->origin : "(missing)");
                server_respond_text(client, 403, "Forbidden", NULL);
                return;
        }
        if (d->free_count == 0) {
                /* Not reached while max_connections bounds admission; kept as the last guard. */
                shm_count(&d->shm, rejected_max_connections);
                log_limited(&server_reject_limit, LOG_LEVEL_WARN,
                            "client %llu (%s) rejected: all %u slots are in use (max_connections)",
                            (unsigned long long)client->id, client->peer, d->conf.max_connections);
                server_respond_text(client, 503, "Service Unavailable", "Retry-After: 5\r\n");
                return;
        }
        if (ws_accept_key(req->ws_key, strlen(req->ws_key), accept) < 0) {
                server_respond_text(client, 500, "Internal Server Error", NULL);
                return;
        }

        client->slot = d->free_slots[--d->free_count];
        daemon_lock();
        client->generation = slot_open(&d->shm, client->slot);
        shm_unlock(&d->shm);
        d->clients[client->slot] = client;
        shm_count(&d->shm, clients_total);
        if (d->conf.max_connections - d->free_count > d->clients_peak)
                d->clients_peak = d->conf.max_connections - d->free_count;

        /* No Sec-WebSocket-Extensions or -Protocol: every offered extension and subprotocol is
         * declined, which RFC 6455, section 4.2.2, allows. */
        out = bufferevent_get_output(client->bev);
        evbuffer_add_printf(out,
                            "HTTP/1.1 101 Switching Protocols\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: %s\r\n\r\n",
                            accept);
        client_upgraded(client);
}

/* Answers a connection that was turned away at accept, now that its request head is read. */
static void server_reject(struct client *client)
{
        if (client->reject_status == 429)
                server_respond_text(client, 429, "Too Many Requests", "Retry-After: 5\r\n");
        else
                server_respond_text(client, 503, "Service Unavailable", "Retry-After: 5\r\n");
}

static void server_metrics(struct client *client)
{
        struct evbuffer *body;

        if (!metrics_allowed(client)) {
                log_debug("client %llu (%s): GET /metrics from an address not in metrics_allow",
                          (unsigned long long)client->id, client->peer);
                server_respond_text(client, 403, "Forbidden", NULL);
                return;
        }
        body = evbuffer_new();
        if (body == NULL) {
                server_respond_text(client, 500, "Internal Server Error", NULL);
                return;
        }
        metrics_render(body);
        server_respond(client, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL,
                       evbuffer_pullup(body, -1), evbuffer_get_length(body));
        evbuffer_free(body);
}

static void server_route(struct client *client, struct http_request *req)
{
        char *query = strchr(req->target, '?');

        if (query != NULL)
                *query = '\0';
        if (client->reject_status != 0) {
                server_reject(client);
                return;
        }
        if (strcmp(req->method, "GET") != 0) {
                server_respond_text(client, 405, "Method Not Allowed", "Allow: GET\r\n");
                return;
        }
        if (strcmp(req->target, "/ws") == 0) {
                server_upgrade(client, req);
        } else if (strcmp(req->target, "/") == 0 || strcmp(req->target, "/index.html") == 0) {
                server_respond(client, 200, "OK", "text/html; charset=utf-8", NULL, page_index_html,
                               (size_t)(page_index_html_end - page_index_html));
        } else if (strcmp(req->target, "/metrics") == 0) {
                server_metrics(client);
        } else if (strcmp(req->target, "/incsearch.js") == 0) {
                server_respond(client, 200, "OK", "application/javascript; charset=utf-8", NULL,
                               page_client_js, (size_t)(page_client_js_end - page_client_js));
        } else {
                server_respond_text(client, 404, "Not Found", NULL);
        }
}

static void server_header_too_large(struct client *client)
{
        shm_count(&daemon_state.shm, rejected_header_size);
        server_respond_text(client, 431, "Request Header Fields Too Large", NULL);
}

/* Keeps the read timeout at the time left until the handshake deadline. Returns -1 if passed. */
static int server_handshake_time_left(struct client *client)
{
        uint64_t now = server_now_ms();
        struct timeval left;

        if (now >= client->deadline_ms)
                return -1;
        left = server_timeval(client->deadline_ms - now);
        bufferevent_set_timeouts(client->bev, &left, NULL);
        return 0;
}

static void server_read_request(struct client *client)
{
        struct daemon *d = &daemon_state;
        struct evbuffer *in = bufferevent_get_input(client->bev);
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        struct http_request req;
        size_t head_len;
        char *head;

        if (end.pos < 0) {
                if (evbuffer_get_length(in) > d->conf.max_header_bytes)
                        server_header_too_large(client);
                else if (server_handshake_time_left(client) < 0)
                        server_event_cb(client->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, client);
                return;
        }
        head_len = (size_t)end.pos + 4;
        if (head_len > d->conf.max_header_bytes) {
                server_header_too_large(client);
                return;
        }
        head = malloc(head_len + 1);
        if (head == NULL) {
                server_respond_text(client, 503, "Service Unavailable", NULL);
                return;
        }
        evbuffer_remove(in, head, head_len);
        head[head_len] = '\0';
        if (http_parse(head, head_len, &req) < 0) {
                shm_count(&d->shm, rejected_handshake);
                server_respond_text(client, 400, "Bad Request", NULL);
        } else {
                server_route(client, &req);
        }
        free(head);
}

static void server_read_cb(struct bufferevent *bev, void *arg)
{
        struct client *client = arg;

        switch (client->state) {
        case CLIENT_HTTP:
                server_read_request(client);
                break;
        case CLIENT_WEBSOCKET:
                client_read_frames(client);
                break;
        case CLIENT_CLOSING:
                evbuffer_drain(bufferevent_get_input(bev),
                               evbuffer_get_length(bufferevent_get_input(bev)));
                break;
        }
}

static void server_write_cb(struct bufferevent *bev, void *arg)
{
        struct client *client = arg;

        if (client->state == CLIENT_CLOSING &&
            evbuffer_get_length(bufferevent_get_output(bev)) == 0)
                server_close_client(client);
        else if (client->state == CLIENT_WEBSOCKET)
                client_write_drained(client);
}

/* Starts the HTTP side once the TLS handshake is done, within the same deadline. */
static void server_tls_ready(struct client *client)
{
        SSL *ssl = bufferevent_openssl_get_ssl(client->bev);

        if (client->tls_deadline != NULL)
                event_free(client->tls_deadline);
        client->tls_deadline = NULL;
        log_debug("client %llu (%s): %s with %s", (unsigned long long)client->id, client->peer,
                  SSL_get_version(ssl), SSL_get_cipher_name(ssl));
        if (server_handshake_time_left(client) < 0)
                server_event_cb(client->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, client);
}

/* Logs why a connection ends before its TLS handshake finished. */
static void server_tls_failed(struct client *client, short what)
{
        char reason[256];

        if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
                log_debug("client %llu (%s): closed before the TLS handshake finished",
                          (unsigned long long)client->id, client->peer);
                return;
        }
        tls_describe_error(client->bev, reason, sizeof(reason));
        log_limited(&server_tls_limit, LOG_LEVEL_INFO, "client %llu (%s): TLS handshake failed: %s",
                    (unsigned long long)client->id, client->peer, reason);
}

static void server_event_cb(struct bufferevent *bev, short what, void *arg)
{
        struct client *client = arg;
        char reason[256];

        if (what & BEV_EVENT_CONNECTED) {
                server_tls_ready(client);
                return;
        }
        if ((what & BEV_EVENT_TIMEOUT) && client->state == CLIENT_WEBSOCKET) {
                client_timed_out(client);
                return;
        }
        if ((what & BEV_EVENT_TIMEOUT) && client->state == CLIENT_HTTP) {
                shm_count(&daemon_state.shm, handshake_timeouts);
                log_debug("client %llu (%s): no request head within handshake_timeout_ms%s",
                          (unsigned long long)client->id, client->peer,
                          tls_handshake_done(bev) ? "" : " (TLS handshake unfinished)");
        } else if (what & BEV_EVENT_TIMEOUT) {
                log_debug("client %llu (%s): peer did not read its last bytes in time",
                          (unsigned long long)client->id, client->peer);
        } else if (!tls_handshake_done(bev)) {
                server_tls_failed(client, what);
        } else if (what & BEV_EVENT_ERROR) {
                tls_describe_error(bev, reason, sizeof(reason));
                log_debug("client %llu (%s): %s", (unsigned long long)client->id, client->peer,
                          reason);
        }
        server_close_client(client);
}

/*
 * Ends a TLS handshake at the connection's deadline. The read timeout alone would not: libevent
 * restarts it on every byte, so a peer sending its ClientHello slowly would never time out.
 */
static void server_tls_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
        struct client *client = arg;

        (void)fd;
        (void)what;
        server_event_cb(client->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, client);
}

static void server_format_peer(const struct sockaddr *sa, char *out, size_t len)
{
        char addr[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;

        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

                inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
                port = ntohs(sin->sin_port);
                snprintf(out, len, "%s:%u", addr, port);
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

                inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
                port = ntohs(sin6->sin6_port);
                snprintf(out, len, "[%s]:%u", addr, port);
        } else {
                snprintf(out, len, "unknown");
        }
}

/*
 * Applies the admission limits to a new connection. One over a limit is answered with
 * client->reject_status once its request head arrives, so that the client can read the answer.
 */
static void server_admit(struct client *client)
{
        struct daemon *d = &daemon_state;
        int counted;

        if (d->connections >= d->conf.max_connections) {
                shm_count(&d->shm, rejected_max_connections);
                log_debug("client %llu (%s) rejected: %u connections open (max_connections)",
                          (unsigned long long)client->id, client->peer, d->connections);
                client->reject_status = 503;
                return;
        }
        if (!limit_new_connection(d->conf.max_new_connections_per_second, server_now_ms())) {
                shm_count(&d->shm, rejected_rate);
                log_debug("client %llu (%s) rejected: over max_new_connections_per_second (%u)",
                          (unsigned long long)client->id, client->peer,
                          d->conf.max_new_connections_per_second);
                client->reject_status = 503;
                return;
        }
        counted = limit_ip_acquire(&client->addr, d->conf.max_connections_per_ip);
        if (counted == 0) {
                shm_count(&d->shm, rejected_per_ip);
                log_debug("client %llu (%s) rejected: %u connections open from this address "
                          "(max_connections_per_ip)",
                          (unsigned long long)client->id, client->peer,
                          limit_ip_count(&client->addr));
                client->reject_status = 429;
                return;
        }
        if (counted < 0) {
                log_warn("out of memory counting connections per address; rejecting %s",
                         client->peer);
                client->reject_status = 503;
                return;
        }
        client->ip_counted = d->conf.max_connections_per_ip != 0;
}

static void server_accept_cb(struct evconnlistener *listener, evutil_socket_t fd,
                             struct sockaddr *sa, int socklen, void *arg)
{
        struct daemon *d = &daemon_state;
        struct timeval handshake;
        struct client *client;
        int one = 1;

        (void)listener;
        (void)socklen;
        (void)arg;
        if (server_accept_pauses > 0) {
                log_info("accepting connections again after %lu pauses, %u connections open",
                         server_accept_pauses, d->connections);
                server_accept_pauses = 0;
        }
        client = calloc(1, sizeof(*client));
        if (client == NULL) {
                log_warn("out of memory accepting a connection; closing it");
                evutil_closesocket(fd);
                return;
        }
        client->bev = tls_bufferevent_new(d->base, fd);
        if (client->bev == NULL) {
                log_warn("cannot set up a connection; closing it");
                evutil_closesocket(fd);
                free(client);
                return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        client->id = ++d->next_client_id;
        client->slot = UINT32_MAX;
        client->last_seq = -1;
        client->last_delivered = -1;
        client->connected_ms = server_now_ms();
        server_format_peer(sa, client->peer, sizeof(client->peer));
        limit_addr_from(sa, &client->addr);
        server_admit(client);
        if (client->reject_status != 0)
                d->rejecting++;
        else
                d->connections++;
        client->deadline_ms =
            server_now_ms() +
            (client->reject_status != 0 ? SERVER_REJECT_TIMEOUT_MS : d->conf.handshake_timeout_ms);
        handshake = server_timeval(client->deadline_ms - server_now_ms());

        bufferevent_setcb(client->bev, server_read_cb, server_write_cb, server_event_cb, client);
        bufferevent_setwatermark(client->bev, EV_READ, 0, d->conf.max_header_bytes + 1);
        bufferevent_set_timeouts(client->bev, &handshake, NULL);
        if (!tls_handshake_done(client->bev)) {
                client->tls_deadline = evtimer_new(d->base, server_tls_deadline_cb, client);
                if (client->tls_deadline == NULL ||
                    evtimer_add(client->tls_deadline, &handshake) < 0) {
                        log_warn("out of memory timing the TLS handshake of %s; closing it",
                                 client->peer);
                        server_close_client(client);
                        return;
                }
        }
        bufferevent_enable(client->bev, EV_READ | EV_WRITE);
}

static void server_resume_cb(evutil_socket_t fd, short what, void *arg)
{
        (void)fd;
        (void)what;
        (void)arg;
        evconnlistener_enable(daemon_state.listener);
}

static void server_accept_error_cb(struct evconnlistener *listener, void *arg)
{
        struct daemon *d = &daemon_state;
        struct timeval pause = {0, SERVER_ACCEPT_PAUSE_MS * 1000};
        int err = EVUTIL_SOCKET_ERROR();

        (void)arg;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                /* Accepting again at once would spin: wait for a descriptor to free up. */
                if (server_accept_pauses++ == 0)
                        log_warn("accept failed: %s with %u connections open; pausing accept "
                                 "for %d ms at a time until a descriptor frees up",
                                 evutil_socket_error_to_string(err), d->connections,
                                 SERVER_ACCEPT_PAUSE_MS);
                evconnlistener_disable(listener);
                evtimer_add(d->listener_resume, &pause);
                return;
        }
        log_limited(&server_accept_limit, LOG_LEVEL_WARN, "accept failed: %s",
                    evutil_socket_error_to_string(err));
}

/* Closes the listener for good; connections already accepted go on. */
void server_stop_accepting(void)
{
        struct daemon *d = &daemon_state;

        if (d->listener == NULL)
                return;
        evtimer_del(d->listener_resume);
        evconnlistener_free(d->listener);
        d->listener = NULL;
}

int server_listen(void)
{
        struct daemon *d = &daemon_state;
        struct sockaddr_storage ss;
        int sslen = sizeof(ss);
        char addr[sizeof(d->conf.listen_host) + 16];

        if (strchr(d->conf.listen_host, ':') != NULL)
                snprintf(addr, sizeof(addr), "[%.255s]:%u", d->conf.listen_host,
                         d->conf.listen_port);
        else
                snprintf(addr, sizeof(addr), "%.255s:%u", d->conf.listen_host, d->conf.listen_port);
        if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) < 0) {
                log_error("invalid listen address %s: expected a numeric IPv4 or IPv6 address",
                          addr);
                return -1;
        }
        d->listener = evconnlistener_new_bind(d->base, server_accept_cb, NULL,
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                                  LEV_OPT_CLOSE_ON_EXEC,
                                              1024, (struct sockaddr *)&ss, sslen);
        if (d->listener == NULL) {
                log_error("cannot listen on %s: %s", addr,
                          evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
                return -1;
        }
        evconnlistener_set_error_cb(d->listener, server_accept_error_cb);
        d->listener_resume = evtimer_new(d->base, server_resume_cb, NULL);
        log_info("listening on %s://%s/", tls_enabled() ? "https" : "http", addr);
        return 0;
}
