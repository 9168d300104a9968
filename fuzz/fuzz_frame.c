/*
 * libFuzzer target for the WebSocket frame parser. The input is a client's byte stream after
 * the handshake. It is parsed the way client.c reads it: each frame once from a header-sized
 * prefix and, when that is not enough, again from the whole frame. The first input byte sets
 * max_message_bytes, so that the limit is fuzzed too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct ws_parser parser;
        struct ws_frame frame;
        uint8_t *buf;
        size_t pos = 1;

        if (size < 1)
                return 0;
        buf = malloc(size);
        if (buf == NULL)
                return 0;
        memcpy(buf, data, size);
        ws_parser_init(&parser, 64 + (uint32_t)data[0] * 16);

        while (pos < size) {
                uint8_t head[WS_MAX_HEADER];
                size_t avail = size - pos;
                size_t copied = avail < sizeof(head) ? avail : sizeof(head);
                enum ws_frame_kind kind;

                memcpy(head, buf + pos, copied);
                kind = ws_parse(&parser, head, copied, &frame);
                if (kind == WS_FRAME_MORE && (frame.size == 0 || frame.size > avail))
                        break;
                if (kind == WS_FRAME_MORE)
                        kind = ws_parse(&parser, buf + pos, frame.size, &frame);
                if (kind == WS_FRAME_ERROR) {
                        if (parser.close_code < 1000 || parser.error == NULL)
                                abort();
                        break;
                }
                /* A complete frame must fit in what was fed, and a control payload in 125. */
                if (kind == WS_FRAME_MORE || frame.size > avail || frame.size == 0)
                        abort();
                if (kind != WS_FRAME_TEXT && frame.len > 125)
                        abort();
                if (parser.message_len > parser.max_message_bytes)
                        abort();
                if (kind == WS_FRAME_CLOSE)
                        break;
                pos += frame.size;
        }
        free(buf);
        return 0;
}
