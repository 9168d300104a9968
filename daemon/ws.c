#include "ws.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

/* The GUID that RFC 6455, section 1.3, appends to the client's key before hashing. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int ws_header_decode(const uint8_t *buf, size_t len, struct ws_header *header)
{
        size_t need = 2;
        uint64_t payload_len;

        if (len < 2)
                return 0;
        header->fin = buf[0] >> 7;
        header->rsv = (buf[0] >> 4) & 0x7;
        header->opcode = buf[0] & 0xF;
        header->masked = buf[1] >> 7;
        payload_len = buf[1] & 0x7F;

        if (payload_len == 126)
                need += 2;
        else if (payload_len == 127)
                need += 8;
        if (header->masked)
                need += 4;
        if (len < need)
                return 0;

        if (payload_len == 126) {
                payload_len = (uint64_t)buf[2] << 8 | buf[3];
        } else if (payload_len == 127) {
                payload_len = 0;
                for (int i = 0; i < 8; i++)
                        payload_len = payload_len << 8 | buf[2 + i];
                if (payload_len >> 63)
                        return -1;
        }
        header->payload_len = payload_len;
        if (header->masked)
                memcpy(header->mask, buf + need - 4, 4);
        header->header_len = need;
        return (int)need;
}

size_t ws_header_encode(uint8_t *out, unsigned fin, unsigned opcode, uint64_t payload_len,
                        const uint8_t *mask)
{
        size_t n = 2;

        out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0xF));
        out[1] = mask != NULL ? 0x80 : 0;
        if (payload_len < 126) {
                out[1] |= (uint8_t)payload_len;
        } else if (payload_len <= 0xFFFF) {
                out[1] |= 126;
                out[2] = (uint8_t)(payload_len >> 8);
                out[3] = (uint8_t)payload_len;
                n = 4;
        } else {
                out[1] |= 127;
                for (int i = 0; i < 8; i++)
                        out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
                n = 10;
        }
        if (mask != NULL) {
                memcpy(out + n, mask, 4);
                n += 4;
        }
        return n;
}

void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset)
{
        uint8_t rotated[8];
        uint64_t word;
        size_t i = 0;

        /* Eight bytes at a time with the mask rotated to OFFSET; memcpy keeps it alignment-safe. */
        for (int k = 0; k < 8; k++)
                rotated[k] = mask[(offset + (uint64_t)k) & 3];
        memcpy(&word, rotated, sizeof(word));
        for (; i + 8 <= len; i += 8) {
                uint64_t chunk;

                memcpy(&chunk, data + i, sizeof(chunk));
                chunk ^= word;
                memcpy(data + i, &chunk, sizeof(chunk));
        }
        for (; i < len; i++)
                data[i] ^= mask[(offset + i) & 3];
}

int ws_key_valid(const char *key, size_t len)
{
        static const char alphabet[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

        /*
         * 16 bytes encode to 22 base64 characters and "==". The last character carries only two
         * bits of data, so its low four bits are zero: it must be one of A, Q, g or w.
         */
        if (len != 24 || key[22] != '=' || key[23] != '=')
                return 0;
        for (size_t i = 0; i < 22; i++) {
                if (key[i] == '\0' || strchr(alphabet, key[i]) == NULL)
                        return 0;
        }
        return strchr("AQgw", key[21]) != NULL;
}

int ws_accept_key(const char *key, size_t len, char *out)
{
        unsigned char digest[SHA_DIGEST_LENGTH];
        char joined[128];

        if (len + sizeof(ws_guid) > sizeof(joined))
                return -1;
        memcpy(joined, key, len);
        memcpy(joined + len, ws_guid, sizeof(ws_guid) - 1);
        SHA1((const unsigned char *)joined, len + sizeof(ws_guid) - 1, digest);
        if (EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH) != WS_ACCEPT_LEN)
                return -1;
        return 0;
}

int ws_close_code_valid(unsigned code)
{
        if (code >= 1000 && code <= 1003)
                return 1;
        if (code >= 1007 && code <= 1014)
                return 1;
        return code >= 3000 && code <= 4999;
}

void ws_parser_init(struct ws_parser *parser, uint32_t max_message_bytes)
{
        memset(parser, 0, sizeof(*parser));
        parser->max_message_bytes = max_message_bytes;
        parser->utf8 = UTF8_ACCEPT;
}

static enum ws_frame_kind ws_fail(struct ws_parser *parser, unsigned code, const char *error)
{
        parser->closed = 1;
        parser->close_code = (uint16_t)code;
        parser->error = error;
        return WS_FRAME_ERROR;
}

/* Checks a decoded header against RFC 6455, section 5, and the message limit. */
static enum ws_frame_kind ws_check_header(struct ws_parser *parser, const struct ws_header *h)
{
        int control = h->opcode >= WS_OP_CLOSE;

        if (h->rsv != 0)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR, "reserved bits set");
        if ((h->opcode > WS_OP_BINARY && h->opcode < WS_OP_CLOSE) || h->opcode > WS_OP_PONG)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR, "reserved opcode");
        if (!h->masked)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR, "client frames must be masked");
        if (control && !h->fin)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR, "fragmented control frame");
        if (control && h->payload_len > 125)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR,
                               "control frame payload over 125 bytes");
        if (control)
                return WS_FRAME_MORE;
        if (h->opcode == WS_OP_CONTINUATION && !parser->in_message)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR, "continuation without a message");
        if (h->opcode != WS_OP_CONTINUATION && parser->in_message)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR,
                               "new data frame inside a fragmented message");
        if (h->opcode == WS_OP_BINARY)
                return ws_fail(parser, WS_CLOSE_UNSUPPORTED, "binary messages are not supported");
        if (h->payload_len > parser->max_message_bytes - parser->message_len)
                return ws_fail(parser, WS_CLOSE_TOO_BIG, "message over max_message_bytes");
        return WS_FRAME_MORE;
}

static enum ws_frame_kind ws_parse_close(struct ws_parser *parser, const uint8_t *payload,
                                         size_t len)
{
        unsigned code;

        if (len == 1)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR, "close payload of 1 byte");
        code = len == 0 ? 0 : (unsigned)payload[0] << 8 | payload[1];
        if (len >= 2 && !ws_close_code_valid(code))
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR, "invalid close code");
        if (len > 2 && utf8_feed(UTF8_ACCEPT, payload + 2, len - 2) != UTF8_ACCEPT)
                return ws_fail(parser, WS_CLOSE_INVALID_DATA, "close reason is not UTF-8");
        parser->closed = 1;
        parser->close_code = (uint16_t)code;
        return WS_FRAME_CLOSE;
}

static enum ws_frame_kind ws_parse_text(struct ws_parser *parser, struct ws_frame *frame)
{
        uint32_t utf8 = frame->header.opcode == WS_OP_TEXT ? UTF8_ACCEPT : parser->utf8;

        utf8 = utf8_feed(utf8, frame->payload, frame->len);
        if (utf8 == UTF8_REJECT)
                return ws_fail(parser, WS_CLOSE_INVALID_DATA, "text is not valid UTF-8");
        if (frame->header.fin && utf8 != UTF8_ACCEPT)
                return ws_fail(parser, WS_CLOSE_INVALID_DATA, "text ends inside a UTF-8 character");

        frame->message_start = frame->header.opcode == WS_OP_TEXT;
        frame->message_end = frame->header.fin;
        if (frame->header.fin) {
                parser->in_message = 0;
                parser->message_len = 0;
                parser->utf8 = UTF8_ACCEPT;
        } else {
                parser->in_message = 1;
                parser->message_len =
                    (frame->message_start ? 0 : parser->message_len) + (uint32_t)frame->len;
                parser->utf8 = utf8;
        }
        return WS_FRAME_TEXT;
}

enum ws_frame_kind ws_parse(struct ws_parser *parser, uint8_t *buf, size_t len,
                            struct ws_frame *frame)
{
        struct ws_header *h = &frame->header;
        enum ws_frame_kind kind;
        int r;

        memset(frame, 0, sizeof(*frame));
        if (parser->closed)
                return WS_FRAME_ERROR;
        r = ws_header_decode(buf, len, h);
        if (r < 0)
                return ws_fail(parser, WS_CLOSE_PROTOCOL_ERROR,
                               "64-bit length with the top bit set");
        if (r == 0)
                return WS_FRAME_MORE;
        kind = ws_check_header(parser, h);
        if (kind == WS_FRAME_ERROR)
                return kind;

        /* The header check bounds payload_len by max_message_bytes or 125, so this cannot wrap. */
        frame->size = h->header_len + (size_t)h->payload_len;
        if (len < frame->size)
                return WS_FRAME_MORE;
        frame->payload = buf + h->header_len;
        frame->len = (size_t)h->payload_len;
        ws_mask(frame->payload, frame->len, h->mask, 0);

        switch (h->opcode) {
        case WS_OP_PING:
                return WS_FRAME_PING;
        case WS_OP_PONG:
                return WS_FRAME_PONG;
        case WS_OP_CLOSE:
                return ws_parse_close(parser, frame->payload, frame->len);
        default:
                return ws_parse_text(parser, frame);
        }
}
