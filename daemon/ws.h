/*
 * The WebSocket codec (RFC 6455): handshake key, frame headers, masking, UTF-8 checks and
 * close codes. It does no I/O; callers feed it bytes and act on what it returns.
 */
#ifndef INCSEARCHD_WS_H
#define INCSEARCHD_WS_H

#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

#define WS_MAX_HEADER 14 /* 2 + 8 bytes of 64-bit length + 4 bytes of mask */
#define WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

enum ws_opcode {
        WS_OP_CONTINUATION = 0x0,
        WS_OP_TEXT = 0x1,
        WS_OP_BINARY = 0x2,
        WS_OP_CLOSE = 0x8,
        WS_OP_PING = 0x9,
        WS_OP_PONG = 0xA,
};

enum ws_close_code {
        WS_CLOSE_NORMAL = 1000,
        WS_CLOSE_GOING_AWAY = 1001,
        WS_CLOSE_PROTOCOL_ERROR = 1002,
        WS_CLOSE_UNSUPPORTED = 1003,
        WS_CLOSE_INVALID_DATA = 1007,
        WS_CLOSE_POLICY = 1008,
        WS_CLOSE_TOO_BIG = 1009,
        WS_CLOSE_INTERNAL_ERROR = 1011,
};

struct ws_header {
        unsigned fin;
        unsigned rsv; /* the three reserved bits, 0 unless an extension was agreed */
        unsigned opcode;
        unsigned masked;
        uint8_t mask[4];
        uint64_t payload_len;
        size_t header_len; /* bytes of header before the payload */
};

/*
 * Decodes the frame header at the start of BUF. Returns the header length (2 to 14), 0 when
 * more bytes are needed, or -1 for a 64-bit length with its top bit set.
 */
int ws_header_decode(const uint8_t *buf, size_t len, struct ws_header *header);

/* Encodes a header with the shortest length form into OUT (WS_MAX_HEADER bytes); a non-NULL
 * MASK makes it a masked (client) frame. Returns the header length. */
size_t ws_header_encode(uint8_t *out, unsigned fin, unsigned opcode, uint64_t payload_len,
                        const uint8_t *mask);

/* XORs DATA with the mask, where OFFSET is DATA's position within the payload. */
void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset);

/* Checks that KEY is base64 of exactly 16 bytes. Returns 1 if valid. */
int ws_key_valid(const char *key, size_t len);

/* Computes Sec-WebSocket-Accept for KEY into OUT (WS_ACCEPT_LEN + 1 bytes). Returns 0 or -1. */
int ws_accept_key(const char *key, size_t len, char *out);

/* Returns 1 if a peer may send CODE in a close frame. */
int ws_close_code_valid(unsigned code);

/*
 * The server side of a client's frame stream, a state machine that does no I/O. Each call to
 * ws_parse looks at the bytes at the start of the caller's buffer:
 *
 *   WS_FRAME_MORE   the frame is not complete; frame->size is 0 while the header is incomplete,
 *                   else the whole frame's length, so the caller knows how much to wait for.
 *                   The header is already checked, so no caller buffers a frame it will reject.
 *   WS_FRAME_ERROR  the stream breaks RFC 6455 or a limit: fail the connection with
 *                   parser->close_code and parser->error as the reason.
 *   any other kind  one complete, valid frame of frame->size bytes, payload unmasked in place.
 *
 * The parser changes state only when it returns a complete frame, so calling it again on the
 * same bytes after WS_FRAME_MORE is safe. After WS_FRAME_CLOSE or WS_FRAME_ERROR it returns
 * WS_FRAME_ERROR for anything, since nothing after a close counts.
 */
enum ws_frame_kind {
        WS_FRAME_ERROR = -1,
        WS_FRAME_MORE = 0,
        WS_FRAME_TEXT,  /* a text message or one fragment of it; see frame->message_end */
        WS_FRAME_PING,  /* reply with a pong that carries the same payload */
        WS_FRAME_PONG,  /* a reply to a keepalive ping, or unsolicited; gets no reply */
        WS_FRAME_CLOSE, /* the peer's close: parser->close_code is its code, 0 when absent */
};

struct ws_parser {
        uint32_t max_message_bytes; /* text messages over this many bytes fail with 1009 */
        uint32_t message_len;       /* bytes of the open fragmented message so far */
        uint32_t utf8;              /* utf8_feed state across the open message */
        uint16_t close_code;        /* see WS_FRAME_ERROR and WS_FRAME_CLOSE */
        uint8_t in_message;         /* a fragmented text message is open */
        uint8_t closed;             /* a close frame arrived or the stream failed */
        const char *error;          /* static text for the log and the close reason */
};

struct ws_frame {
        struct ws_header header;
        uint8_t *payload;       /* inside the caller's buffer, unmasked */
        size_t len;             /* payload bytes */
        size_t size;            /* header and payload bytes */
        unsigned message_start; /* WS_FRAME_TEXT: the first fragment of a message */
        unsigned message_end;   /* WS_FRAME_TEXT: the last fragment, so the message is complete */
};

/* Starts a parser for a new connection. */
void ws_parser_init(struct ws_parser *parser, uint32_t max_message_bytes);

/* Parses the frame at the start of BUF; see enum ws_frame_kind for the result. */
enum ws_frame_kind ws_parse(struct ws_parser *parser, uint8_t *buf, size_t len,
                            struct ws_frame *frame);

#endif
