#include "wsclient.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "ws.h"

/* The TLS session of each socket that has one, by descriptor. */
#define WSC_MAX_FD 4096
static SSL *wsc_tls[WSC_MAX_FD];

static SSL *wsc_tls_of(int fd)
{
        return fd >= 0 && fd < WSC_MAX_FD ? wsc_tls[fd] : NULL;
}

static ssize_t wsc_io_read(int fd, void *buf, size_t len)
{
        SSL *ssl = wsc_tls_of(fd);
        int n;

        if (ssl == NULL)
                return read(fd, buf, len);
        n = SSL_read(ssl, buf, (int)len);
        ERR_clear_error();
        return n > 0 ? n : -1;
}

static ssize_t wsc_io_write(int fd, const void *buf, size_t len)
{
        SSL *ssl = wsc_tls_of(fd);
        int n;

        if (ssl == NULL)
                return write(fd, buf, len);
        n = SSL_write(ssl, buf, (int)len);
        ERR_clear_error();
        return n > 0 ? n : -1;
}

static int wsc_tcp_connect(int port)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        if (fd < 0)
                return -1;
        if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* Reads exactly LEN bytes, waiting at most TIMEOUT_MS for each read. Returns 1, 0 or -1. */
static int wsc_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
        size_t got = 0;

        while (got < len) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                SSL *ssl = wsc_tls_of(fd);
                /* Bytes already decrypted wait in OpenSSL, not in the socket. */
                int r = ssl != NULL && SSL_pending(ssl) > 0 ? 1 : poll(&pfd, 1, timeout_ms);
                ssize_t n;

                if (r == 0)
                        return 0;
                if (r < 0)
                        return -1;
                n = wsc_io_read(fd, (char *)buf + got, len - got);
                if (n <= 0)
                        return -1;
                got += (size_t)n;
        }
        return 1;
}

/*
 * Runs a TLS handshake on FD that verifies the server against CA_PATH and 127.0.0.1, offering
 * ALPN http/1.1. Returns 0, or -1 with FD closed.
 */
static int wsc_tls_start(int fd, const char *ca_path)
{
        static const unsigned char alpn[] = "\x08http/1.1";
        struct timeval tv = {.tv_sec = 5};
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        SSL *ssl = NULL;

        if (ctx == NULL || fd >= WSC_MAX_FD ||
            SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1)
                goto fail;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ssl = SSL_new(ctx);
        if (ssl == NULL || X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1") != 1 ||
            SSL_set_alpn_protos(ssl, alpn, sizeof(alpn) - 1) != 0 || SSL_set_fd(ssl, fd) != 1)
                goto fail;
        /* A server that never responds fails the handshake instead of hanging the test. */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (SSL_connect(ssl) != 1) {
                ERR_print_errors_fp(stderr);
                goto fail;
        }
        SSL_CTX_free(ctx);
        wsc_tls[fd] = ssl;
        return 0;
fail:
        ERR_clear_error();
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
        return -1;
}

static int wsc_open(int port, const char *ca_path)
{
        int fd = wsc_tcp_connect(port);

        if (fd < 0 || ca_path == NULL)
                return fd;
        return wsc_tls_start(fd, ca_path) < 0 ? -1 : fd;
}

static int wsc_request_head(int port, const char *ca_path, const char *request, char *response,
                            size_t len)
{
        int fd = wsc_open(port, ca_path);
        size_t used = 0;

        if (fd < 0)
                return -1;
        if (wsc_io_write(fd, request, strlen(request)) != (ssize_t)strlen(request))
                goto fail;
        /* Byte by byte, so that frames after the head stay in the socket. */
        while (used + 1 < len) {
                if (wsc_read_full(fd, response + used, 1, 5000) != 1)
                        break;
                used++;
                response[used] = '\0';
                if (used >= 4 && memcmp(response + used - 4, "\r\n\r\n", 4) == 0)
                        return fd;
        }
        if (len > 0)
                response[used] = '\0';
        return fd;
fail:
        wsc_close(fd);
        return -1;
}

int wsc_connect_raw(int port, const char *request, char *response, size_t len)
{
        return wsc_request_head(port, NULL, request, response, len);
}

int wsc_connect_raw_tls(int port, const char *ca_path, const char *request, char *response,
                        size_t len)
{
        return wsc_request_head(port, ca_path, request, response, len);
}

static int wsc_upgrade(int port, const char *ca_path)
{
        char response[1024];
        int fd = wsc_request_head(port, ca_path,
                                  "GET /ws HTTP/1.1\r\n"
                                  "Host: 127.0.0.1\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n",
                                  response, sizeof(response));

        if (fd < 0)
                return -1;
        if (strncmp(response, "HTTP/1.1 101 ", 13) != 0) {
                wsc_close(fd);
                return -1;
        }
        return fd;
}

int wsc_connect(int port)
{
        return wsc_upgrade(port, NULL);
}

int wsc_connect_tls(int port, const char *ca_path)
{
        return wsc_upgrade(port, ca_path);
}

int wsc_https_get(int port, const char *ca_path, const char *path, char *body, size_t len)
{
        char request[512], head[4096];
        size_t used = 0;
        int status = -1, fd;

        snprintf(request, sizeof(request),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
        fd = wsc_request_head(port, ca_path, request, head, sizeof(head));
        if (fd < 0)
                return -1;
        if (sscanf(head, "HTTP/1.%*d %d", &status) != 1)
                status = -1;
        /* The body runs to the end of the connection, since every response has Connection: close.
         */
        while (used + 1 < len && wsc_read_full(fd, body + used, 1, 5000) == 1)
                used++;
        body[used] = '\0';
        wsc_close(fd);
        return status;
}

int wsc_tls_peer(int fd, unsigned char sha256[32], char *alpn, size_t alpn_len)
{
        SSL *ssl = wsc_tls_of(fd);
        const unsigned char *proto;
        unsigned proto_len, digest_len = 0;
        X509 *cert;
        int r;

        if (ssl == NULL)
                return -1;
        cert = SSL_get1_peer_certificate(ssl);
        if (cert == NULL)
                return -1;
        r = X509_digest(cert, EVP_sha256(), sha256, &digest_len) == 1 && digest_len == 32 ? 0 : -1;
        X509_free(cert);
        SSL_get0_alpn_selected(ssl, &proto, &proto_len);
        snprintf(alpn, alpn_len, "%.*s", (int)proto_len, proto != NULL ? (const char *)proto : "");
        return r;
}

void wsc_close(int fd)
{
        SSL *ssl = wsc_tls_of(fd);

        if (ssl != NULL) {
                SSL_shutdown(ssl);
                ERR_clear_error();
                SSL_free(ssl);
                wsc_tls[fd] = NULL;
        }
        close(fd);
}

int wsc_send_raw(int fd, const void *data, size_t len)
{
        return wsc_io_write(fd, data, len) == (ssize_t)len ? 0 : -1;
}

int wsc_send(int fd, unsigned fin, unsigned opcode, const void *data, size_t len)
{
        static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
        uint8_t header[WS_MAX_HEADER];
        size_t header_len = ws_header_encode(header, fin, opcode, len, mask);
        uint8_t *frame = malloc(header_len + len);
        int r;

        if (frame == NULL)
                return -1;
        memcpy(frame, header, header_len);
        memcpy(frame + header_len, data, len);
        ws_mask(frame + header_len, len, mask, 0);
        r = wsc_send_raw(fd, frame, header_len + len);
        free(frame);
        return r;
}

int wsc_send_text(int fd, const char *text)
{
        return wsc_send(fd, 1, WS_OP_TEXT, text, strlen(text));
}

int wsc_recv(int fd, struct wsc_frame *frame, int timeout_ms)
{
        uint8_t head[WS_MAX_HEADER];
        struct ws_header h;
        size_t have = 2;
        int r;

        memset(frame, 0, sizeof(*frame));
        r = wsc_read_full(fd, head, 2, timeout_ms);
        if (r != 1)
                return r;
        while ((r = ws_header_decode(head, have, &h)) == 0) {
                if (wsc_read_full(fd, head + have, 1, timeout_ms) != 1)
                        return -1;
                have++;
        }
        if (r < 0 || h.payload_len > 64 * 1024 * 1024)
                return -1;
        frame->fin = h.fin;
        frame->opcode = h.opcode;
        frame->len = (size_t)h.payload_len;
        frame->payload = malloc(frame->len + 1);
        if (frame->payload == NULL)
                return -1;
        if (frame->len > 0 && wsc_read_full(fd, frame->payload, frame->len, timeout_ms) != 1) {
                wsc_frame_free(frame);
                return -1;
        }
        frame->payload[frame->len] = '\0';
        return 1;
}

void wsc_frame_free(struct wsc_frame *frame)
{
        free(frame->payload);
        frame->payload = NULL;
}
