/*
 * libFuzzer target for the HTTP request head parser and the WebSocket handshake checks. The
 * input is used as the bytes that arrived on a new connection.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct http_request req;
        const char *reason = NULL;
        char *head = malloc(size + 1);

        if (head == NULL)
                return 0;
        memcpy(head, data, size);
        head[size] = '\0';
        if (http_parse(head, size, &req) == 0) {
                if (http_check_upgrade(&req, &reason) != 0 && reason == NULL)
                        abort();
                http_origin_allowed("https://a.example http://b.example:8080", req.origin);
                if (req.connection != NULL)
                        http_has_token(req.connection, "upgrade");
        }
        free(head);
        return 0;
}
