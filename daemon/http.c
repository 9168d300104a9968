#include "http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ws.h"

int http_has_token(const char *value, const char *token)
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

/* Stores VALUE in *FIELD, flagging a second occurrence of a header that must be unique. */
static void http_set_once(struct http_request *req, const char **field, const char *value)
{
        if (*field != NULL)
                req->duplicate = 1;
        *field = value;
}

static void http_store_header(struct http_request *req, const char *name, const char *value)
{
        if (strcasecmp(name, "Host") == 0)
                http_set_once(req, &req->host, value);
        else if (strcasecmp(name, "Origin") == 0)
                http_set_once(req, &req->origin, value);
        else if (strcasecmp(name, "Upgrade") == 0)
                http_set_once(req, &req->upgrade, value);
        else if (strcasecmp(name, "Connection") == 0)
                http_set_once(req, &req->connection, value);
        else if (strcasecmp(name, "Sec-WebSocket-Key") == 0)
                http_set_once(req, &req->ws_key, value);
        else if (strcasecmp(name, "Sec-WebSocket-Version") == 0)
                http_set_once(req, &req->ws_version, value);
}

/* Returns 1 if C may appear in a header field name (an RFC 7230 token character). */
static int http_token_char(char c)
{
        return c > ' ' && c < 0x7F && strchr("\"(),/:;<=>?@[\\]{}", c) == NULL;
}

/* Parses one "Name: value" line, NUL-terminated, in place. Returns 0 or -1. */
static int http_parse_header(struct http_request *req, char *line)
{
        char *colon = strchr(line, ':'), *value, *end;

        if (colon == NULL || colon == line)
                return -1;
        for (char *c = line; c < colon; c++) {
                if (!http_token_char(*c))
                        return -1; /* also rejects obsolete line folding and space before ':' */
        }
        *colon = '\0';
        value = colon + 1;
        while (*value == ' ' || *value == '\t')
                value++;
        end = value + strlen(value);
        while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
                *--end = '\0';
        http_store_header(req, line, value);
        return 0;
}

int http_parse(char *head, size_t len, struct http_request *req)
{
        char *line = head, *next, *version;

        memset(req, 0, sizeof(*req));
        if (len < 4 || memchr(head, '\0', len) != NULL || memcmp(head + len - 4, "\r\n\r\n", 4))
                return -1;
        next = strstr(line, "\r\n");
        *next = '\0';
        if (sscanf(line, "%15s %1023s", req->method, req->target) != 2)
                return -1;
        version = strrchr(line, ' ');
        if (version == NULL ||
            (strcmp(version + 1, "HTTP/1.1") != 0 && strcmp(version + 1, "HTTP/1.0") != 0))
                return -1;
        req->version_minor = (unsigned)(version[8] - '0');

        for (line = next + 2; *line != '\0'; line = next + 2) {
                next = strstr(line, "\r\n");
                *next = '\0';
                if (*line == '\0')
                        break;
                if (http_parse_header(req, line) < 0)
                        return -1;
        }
        return 0;
}

int http_check_upgrade(const struct http_request *req, const char **reason)
{
        if (strcmp(req->method, "GET") != 0 || req->version_minor < 1) {
                *reason = "the handshake must be a GET request over HTTP/1.1";
                return 400;
        }
        if (req->duplicate) {
                *reason = "a handshake header appears more than once";
                return 400;
        }
        if (req->host == NULL) {
                *reason = "missing Host";
                return 400;
        }
        if (req->upgrade == NULL || !http_has_token(req->upgrade, "websocket")) {
                *reason = "Upgrade does not contain websocket";
                return 400;
        }
        if (req->connection == NULL || !http_has_token(req->connection, "upgrade")) {
                *reason = "Connection does not contain upgrade";
                return 400;
        }
        if (req->ws_version == NULL || strcmp(req->ws_version, "13") != 0) {
                *reason = "Sec-WebSocket-Version is not 13";
                return 426;
        }
        if (req->ws_key == NULL || !ws_key_valid(req->ws_key, strlen(req->ws_key))) {
                *reason = "Sec-WebSocket-Key is not base64 of 16 bytes";
                return 400;
        }
        return 0;
}

int http_origin_allowed(const char *allowed, const char *origin)
{
        size_t origin_len = origin != NULL ? strlen(origin) : 0;

        while (*allowed == ' ')
                allowed++;
        if (*allowed == '\0')
                return 1;
        while (*allowed != '\0') {
                size_t len = strcspn(allowed, " ");

                if (origin != NULL && len == origin_len && strncasecmp(allowed, origin, len) == 0)
                        return 1;
                allowed += len;
                while (*allowed == ' ')
                        allowed++;
        }
        return 0;
}
