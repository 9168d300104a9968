#include "wsclient.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ws.h"

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
                int r = poll(&pfd, 1, timeout_ms);
                ssize_t n;

                if (r == 0)
                        return 0;
                if (r < 0)
                        return -1;
                n = read(fd, (char *)buf + got, len - got);
                if (n <= 0)
                        return -1;
                got += (size_t)n;
        }
        return 1;
}

int wsc_connect_raw(int port, const char *request, char *response, size_t len)
{
        int fd = wsc_tcp_connect(port);
        size_t used = 0;

        if (fd < 0)
                return -1;
        if (write(fd, request, strlen(request)) != (ssize_t)strlen(request))
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
        response[used] = '\0';
        return fd;
fail:
        close(fd);
        return -1;
}

int wsc_connect(int port)
{
        char response[1024];
        int fd = wsc_connect_raw(port,
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
                close(fd);
                return -1;
        }
        return fd;
}

int wsc_send_raw(int fd, const void *data, size_t len)
{
        return write(fd, data, len) == (ssize_t)len ? 0 : -1;
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
