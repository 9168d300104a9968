/*
 * The HTTP/1.1 request head: parsing, and the checks RFC 6455, section 4.2.1, asks of a
 * WebSocket opening handshake. It does no I/O, so the fuzzer can drive it directly.
 */
#ifndef INCSEARCHD_HTTP_H
#define INCSEARCHD_HTTP_H

#include <stddef.h>

struct http_request {
        char method[16];
        char target[1024];
        unsigned version_minor; /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
        /* Header values, NUL-terminated, inside the caller's head buffer; NULL when absent. */
        const char *host;
        const char *origin;
        const char *upgrade;
        const char *connection;
        const char *ws_key;
        const char *ws_version;
        unsigned duplicate; /* a header that must appear once appeared twice */
};

/*
 * Parses the request head in HEAD, LEN bytes ending with the blank line, NUL-terminated and
 * modified in place. Returns 0, or -1 when the request line or a header line is malformed.
 */
int http_parse(char *head, size_t len, struct http_request *req);

/* Returns 1 if the comma-separated header VALUE contains TOKEN, compared without case. */
int http_has_token(const char *value, const char *token);

/*
 * Checks REQ as a WebSocket opening handshake. Returns 0 if valid, else the HTTP status to
 * answer with (400, or 426 for a version other than 13) and sets *REASON.
 */
int http_check_upgrade(const struct http_request *req, const char **reason);

/* Returns 1 if ORIGIN is one of the space-separated origins in ALLOWED, or ALLOWED is empty. */
int http_origin_allowed(const char *allowed, const char *origin);

#endif
