/* A small blocking WebSocket client for tests, built on the daemon's own frame codec. */
#ifndef INCSEARCHD_WSCLIENT_H
#define INCSEARCHD_WSCLIENT_H

#include <stddef.h>
#include <stdint.h>

struct wsc_frame {
        unsigned fin;
        unsigned opcode;
        uint8_t *payload; /* malloc'd and NUL-terminated; free with wsc_frame_free */
        size_t len;
};

/* Connects to 127.0.0.1:PORT and completes the handshake. Returns the socket or -1. */
int wsc_connect(int port);

/*
 * Connects, sends REQUEST as is and reads the response head into RESPONSE. Returns the
 * socket, with any bytes after the head left unread, or -1.
 */
int wsc_connect_raw(int port, const char *request, char *response, size_t len);

/*
 * The same over TLS: the server's certificate must verify against CA_PATH (a PEM file) and name
 * 127.0.0.1. Close these sockets with wsc_close.
 */
int wsc_connect_tls(int port, const char *ca_path);
int wsc_connect_raw_tls(int port, const char *ca_path, const char *request, char *response,
                        size_t len);

/*
 * Fetches https://127.0.0.1:PORT/PATH into BODY (NUL-terminated), verifying the server against
 * CA_PATH. Returns the HTTP status or -1.
 */
int wsc_https_get(int port, const char *ca_path, const char *path, char *body, size_t len);

/*
 * Stores the SHA-256 of the server's certificate in SHA256 and the protocol chosen by ALPN
 * ("" for none) in ALPN. Returns 0, or -1 when FD is not a TLS socket.
 */
int wsc_tls_peer(int fd, unsigned char sha256[32], char *alpn, size_t alpn_len);

/* Closes FD, ending its TLS session first if it has one. */
void wsc_close(int fd);

/* Sends one masked frame. Returns 0 or -1. */
int wsc_send(int fd, unsigned fin, unsigned opcode, const void *data, size_t len);

/* Sends a masked text frame holding TEXT. */
int wsc_send_text(int fd, const char *text);

/* Sends bytes as they are, for malformed frames. */
int wsc_send_raw(int fd, const void *data, size_t len);

/* Reads one frame. Returns 1, 0 on timeout, or -1 when the connection ended. */
int wsc_recv(int fd, struct wsc_frame *frame, int timeout_ms);

void wsc_frame_free(struct wsc_frame *frame);

#endif
