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

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>

#include "incsearchd.h"
#include "log.h"
#include "slot.h"
#include "version.h"
#include "ws.h"

#define SERVER_HANDSHAKE_TIMEOUT_S 10
#define SERVER_ACCEPT_PAUSE_MS 100

struct http_request {
        char method[16];
        char target[1024];
        const char *upgrade; /* header values, NUL-terminated, inside the request copy */
        const char *connection;
        const char *ws_key;
        const char *ws_version;
};

/* Rejections and accept failures that a flood of clients can cause, logged at a capped rate. */
static struct log_limit server_reject_limit, server_accept_limit;

static void server_read_cb(struct bufferevent *bev, void *arg);
static void server_write_cb(struct bufferevent *bev, void *arg);
static void server_event_cb(struct bufferevent *bev, short what, void *arg);

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
        bufferevent_free(client->bev);
        free(client->message);
        free(client);
        d->connections--;
}

/* Flushes what is queued, then closes: the write callback finishes the job. */
static void server_finish(struct client *client)
{
        client->state = CLIENT_CLOSING;
        bufferevent_disable(client->bev, EV_READ);
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

/* Returns 1 if the comma-separated header VALUE contains TOKEN, compared without case. */
static int http_has_token(const char *value, const char *token)
{
        size_t token_len = strlen(token);

        while (value != NULL && *value != '\0') {
                const char *end;
                size_t len;

                while (*value == ' ' || *value == '\t' || *value == ',')
                        value++;
                end = value;
                while (*end != '\0' && *end != ',')
                        end++;
                len = (size_t)(end - value);
                while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
                        len--;
                if (len == token_len && strncasecmp(value, token, len) == 0)
                        return 1;
                value = end;
        }
        return 0;
}

/*
 * Parses the request head in HEAD (NUL-terminated, modified in place). Returns 0, or -1 when
 * the request line or a header line is malformed.
 */
static int http_parse(char *head, struct http_request *req)
{
        char *line = head, *next, *colon, *value, *version;

        memset(req, 0, sizeof(*req));
        next = strstr(line, "\r\n");
        if (next == NULL)
                return -1;
        *next = '\0';
        if (sscanf(line, "%15s %1023s", req->method, req->target) != 2)
                return -1;
        version = strrchr(line, ' ');
        if (version == NULL || strncmp(version + 1, "HTTP/1.", 7) != 0)
                return -1;

        for (line = next + 2; *line != '\0'; line = next + 2) {
                next = strstr(line, "\r\n");
                if (next == NULL)
                        return -1;
                *next = '\0';
                if (*line == '\0')
                        break;
                colon = strchr(line, ':');
                if (colon == NULL || colon == line)
                        return -1;
                *colon = '\0';
                value = colon + 1;
                while (*value == ' ' || *value == '\t')
                        value++;
                for (char *end = value + strlen(value);
                     end > value && isspace((unsigned char)end[-1]);)
                        *--end = '\0';
                if (strcasecmp(line, "Upgrade") == 0)
                        req->upgrade = value;
                else if (strcasecmp(line, "Connection") == 0)
                        req->connection = value;
                else if (strcasecmp(line, "Sec-WebSocket-Key") == 0)
                        req->ws_key = value;
                else if (strcasecmp(line, "Sec-WebSocket-Version") == 0)
                        req->ws_version = value;
        }
        return 0;
}

static void server_upgrade(struct client *client, const struct http_request *req)
{
        struct daemon *d = &daemon_state;
        char accept[WS_ACCEPT_LEN + 1];
        struct evbuffer *out;

        if (req->upgrade == NULL || !http_has_token(req->upgrade, "websocket") ||
            req->connection == NULL || !http_has_token(req->connection, "upgrade") ||
            req->ws_key == NULL || !ws_key_valid(req->ws_key, strlen(req->ws_key))) {
                server_respond_text(client, 400, "Bad Request", NULL);
                return;
        }
        if (req->ws_version == NULL || strcmp(req->ws_version, "13") != 0) {
                server_respond_text(client, 426, "Upgrade Required",
                                    "Sec-WebSocket-Version: 13\r\n");
                return;
        }
        if (d->free_count == 0) {
                log_limited(&server_reject_limit, LOG_LEVEL_WARN,
                            "client %llu (%s) rejected: all %u slots are in use (max_clients)",
                            (unsigned long long)client->id, client->peer, d->conf.max_clients);
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

        out = bufferevent_get_output(client->bev);
        evbuffer_add_printf(out,
                            "HTTP/1.1 101 Switching Protocols\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: %s\r\n\r\n",
                            accept);
        client_upgraded(client);
}

static void server_route(struct client *client, struct http_request *req)
{
        char *query = strchr(req->target, '?');

        if (query != NULL)
                *query = '\0';
        if (strcmp(req->method, "GET") != 0) {
                server_respond_text(client, 405, "Method Not Allowed", "Allow: GET\r\n");
                return;
        }
        if (strcmp(req->target, "/ws") == 0) {
                server_upgrade(client, req);
        } else if (strcmp(req->target, "/") == 0 || strcmp(req->target, "/index.html") == 0) {
                server_respond(client, 200, "OK", "text/html; charset=utf-8", NULL, page_index_html,
                               (size_t)(page_index_html_end - page_index_html));
        } else if (strcmp(req->target, "/incsearch.js") == 0) {
                server_respond(client, 200, "OK", "application/javascript; charset=utf-8", NULL,
                               page_client_js, (size_t)(page_client_js_end - page_client_js));
        } else {
                server_respond_text(client, 404, "Not Found", NULL);
        }
}

static void server_read_request(struct client *client)
{
        struct evbuffer *in = bufferevent_get_input(client->bev);
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        struct http_request req;
        char head[HTTP_MAX_HEADER_BYTES + 1];
        size_t head_len;

        if (end.pos < 0) {
                if (evbuffer_get_length(in) > HTTP_MAX_HEADER_BYTES)
                        server_respond_text(client, 431, "Request Header Fields Too Large", NULL);
                return;
        }
        head_len = (size_t)end.pos + 4;
        if (head_len > HTTP_MAX_HEADER_BYTES) {
                server_respond_text(client, 431, "Request Header Fields Too Large", NULL);
                return;
        }
        evbuffer_remove(in, head, head_len);
        head[head_len] = '\0';
        if (memchr(head, '\0', head_len) != NULL || http_parse(head, &req) < 0) {
                server_respond_text(client, 400, "Bad Request", NULL);
                return;
        }
        server_route(client, &req);
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
}

static void server_event_cb(struct bufferevent *bev, short what, void *arg)
{
        struct client *client = arg;

        (void)bev;
        if (what & BEV_EVENT_TIMEOUT)
                log_debug("client %llu (%s): handshake timed out after %d s",
                          (unsigned long long)client->id, client->peer, SERVER_HANDSHAKE_TIMEOUT_S);
        else if (what & BEV_EVENT_ERROR)
                log_debug("client %llu (%s): %s", (unsigned long long)client->id, client->peer,
                          evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        server_close_client(client);
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

static void server_accept_cb(struct evconnlistener *listener, evutil_socket_t fd,
                             struct sockaddr *sa, int socklen, void *arg)
{
        struct daemon *d = &daemon_state;
        struct timeval handshake = {SERVER_HANDSHAKE_TIMEOUT_S, 0};
        struct client *client;
        int one = 1;

        (void)listener;
        (void)socklen;
        (void)arg;
        client = calloc(1, sizeof(*client));
        if (client == NULL) {
                log_warn("out of memory accepting a connection; closing it");
                evutil_closesocket(fd);
                return;
        }
        client->bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
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
        server_format_peer(sa, client->peer, sizeof(client->peer));
        d->connections++;

        bufferevent_setcb(client->bev, server_read_cb, server_write_cb, server_event_cb, client);
        bufferevent_setwatermark(client->bev, EV_READ, 0, HTTP_MAX_HEADER_BYTES + 1);
        bufferevent_set_timeouts(client->bev, &handshake, NULL);
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
                log_limited(&server_accept_limit, LOG_LEVEL_WARN,
                            "accept failed: %s; pausing accept for %d ms with %u connections open",
                            evutil_socket_error_to_string(err), SERVER_ACCEPT_PAUSE_MS,
                            d->connections);
                evconnlistener_disable(listener);
                evtimer_add(d->listener_resume, &pause);
                return;
        }
        log_limited(&server_accept_limit, LOG_LEVEL_WARN, "accept failed: %s",
                    evutil_socket_error_to_string(err));
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
        log_info("listening on http://%s/", addr);
        return 0;
}
