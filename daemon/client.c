/*
 * The WebSocket side of a connection: frames in, queries into the client's slot, results and
 * errors out.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <json-c/json.h>

#include "cache.h"
#include "incsearchd.h"
#include "log.h"
#include "reply.h"
#include "slot.h"
#include "ws.h"

/* Room for frames that arrive behind the one being read, beyond the largest message. */
#define CLIENT_READ_SLACK 4096

static void client_send_frame(struct client *client, unsigned opcode, const void *payload,
                              size_t len)
{
        struct evbuffer *out = bufferevent_get_output(client->bev);
        uint8_t header[WS_MAX_HEADER];
        size_t header_len = ws_header_encode(header, 1, opcode, len, NULL);

        evbuffer_add(out, header, header_len);
        evbuffer_add(out, payload, len);
}

void client_send_text(struct client *client, const char *text, size_t len)
{
        if (client->state != CLIENT_WEBSOCKET)
                return;
        client_send_frame(client, WS_OP_TEXT, text, len);
}

/* Sends a close frame with CODE (0 for none), then closes once it is flushed. */
static void client_close(struct client *client, unsigned code, const char *reason)
{
        uint8_t payload[125];
        size_t len = 0;

        if (code != 0) {
                size_t reason_len = strlen(reason);

                if (reason_len > sizeof(payload) - 2)
                        reason_len = sizeof(payload) - 2;
                payload[0] = (uint8_t)(code >> 8);
                payload[1] = (uint8_t)code;
                memcpy(payload + 2, reason, reason_len);
                len = 2 + reason_len;
        }
        if (!client->close_sent) {
                client_send_frame(client, WS_OP_CLOSE, payload, len);
                client->close_sent = 1;
        }
        client->state = CLIENT_CLOSING;
        bufferevent_disable(client->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(client->bev)) == 0)
                server_close_client(client);
}

static void client_fail(struct client *client, unsigned code, const char *reason)
{
        log_debug("client %llu (%s) slot %u: closing with %u: %s", (unsigned long long)client->id,
                  client->peer, client->slot, code, reason);
        client_close(client, code, reason);
}

static void client_send_error(struct client *client, int64_t seq, const char *query,
                              size_t query_len, const char *code, const char *message)
{
        size_t len;
        char *text = reply_error(seq, query, query_len, code, message, &len);

        if (text == NULL) {
                log_warn("client %llu: out of memory building an error message",
                         (unsigned long long)client->id);
                return;
        }
        client_send_text(client, text, len);
        free(text);
}

/* Counts the UTF-8 characters in valid UTF-8 TEXT, stopping at LIMIT. */
static size_t client_count_chars(const char *text, size_t len, size_t limit)
{
        size_t chars = 0;

        for (size_t i = 0; i < len && chars < limit; i++) {
                if (((unsigned char)text[i] & 0xC0) != 0x80)
                        chars++;
        }
        return chars;
}

/* Replies at once to a query that needs no API call, and drops any older one still pending. */
static void client_answer_locally(struct client *client, int64_t seq, const char *query, size_t len,
                                  const char *error_code, const char *message)
{
        struct daemon *d = &daemon_state;
        char *text;
        size_t text_len;

        daemon_lock();
        if (slot_supersede(&d->shm, client->slot, (uint64_t)seq))
                shm_count(&d->shm, superseded);
        shm_unlock(&d->shm);

        if (error_code != NULL)
                text = reply_error(seq, query, len, error_code, message, &text_len);
        else
                text = reply_results(seq, query, len, NULL, &text_len);
        if (text == NULL) {
                log_warn("client %llu: out of memory building a reply",
                         (unsigned long long)client->id);
                return;
        }
        client_send_text(client, text, text_len);
        free(text);
        client->last_delivered = seq;
        shm_count(&d->shm, delivered);
}

static void client_submit(struct client *client, int64_t seq, const char *query, size_t len)
{
        struct daemon *d = &daemon_state;
        int pushed, superseded;

        shm_count(&d->shm, queries);
        client->last_seq = seq;
        cache_leave(client);

        if (len > d->conf.max_query_bytes) {
                client_answer_locally(client, seq, query, len, REPLY_QUERY_TOO_LONG,
                                      "query is longer than max_query_bytes");
                return;
        }
        if (client_count_chars(query, len, d->conf.min_query_chars) < d->conf.min_query_chars) {
                client_answer_locally(client, seq, query, len, NULL, NULL);
                return;
        }
        if (cache_submit(client, seq, query, len))
                return;

        daemon_lock();
        pushed = slot_submit(&d->shm, client->slot, (uint64_t)seq, query, (uint32_t)len,
                             shm_now_ns(), &superseded);
        shm_unlock(&d->shm);
        if (superseded)
                shm_count(&d->shm, superseded);
        if (pushed)
                supervisor_wake();
        log_debug("client %llu slot %u: query seq %" PRId64 " (%zu bytes)%s",
                  (unsigned long long)client->id, client->slot, seq, len,
                  superseded ? ", superseding a pending one" : "");
}

/*
 * Handles one complete text message: a JSON object {"q": text, "seq": n} or, when the text
 * does not start with "{", the query text itself.
 */
static void client_handle_message(struct client *client, const char *text, size_t len)
{
        struct json_tokener *tok;
        json_object *obj, *q, *seq_obj;
        const char *s = text;
        int64_t seq;

        while (s < text + len && isspace((unsigned char)*s))
                s++;
        if (s == text + len || *s != '{') {
                seq = client->last_seq < 1 ? 1 : client->last_seq + 1;
                client_submit(client, seq, text, len);
                return;
        }

        tok = json_tokener_new();
        if (tok == NULL)
                return;
        obj = json_tokener_parse_ex(tok, text, (int)len);
        if (obj == NULL || json_tokener_get_parse_end(tok) != len ||
            !json_object_is_type(obj, json_type_object)) {
                client_send_error(
                    client, -1, NULL, 0, REPLY_BAD_REQUEST,
                    "message is not valid JSON: send {\"q\": text, \"seq\": n} or plain text");
                goto done;
        }
        if (!json_object_object_get_ex(obj, "q", &q) || !json_object_is_type(q, json_type_string)) {
                client_send_error(client, -1, NULL, 0, REPLY_BAD_REQUEST,
                                  "missing or non-string \"q\"");
                goto done;
        }
        if (json_object_object_get_ex(obj, "seq", &seq_obj)) {
                errno = 0;
                seq = json_object_get_int64(seq_obj);
                if (!json_object_is_type(seq_obj, json_type_int) || seq < 0 || errno != 0) {
                        client_send_error(client, -1, json_object_get_string(q),
                                          (size_t)json_object_get_string_len(q), REPLY_BAD_REQUEST,
                                          "\"seq\" must be an integer from 0 to 2^63-1");
                        goto done;
                }
                if (seq <= client->last_seq) {
                        client_send_error(client, seq, json_object_get_string(q),
                                          (size_t)json_object_get_string_len(q), REPLY_BAD_REQUEST,
                                          "\"seq\" must increase with every query");
                        goto done;
                }
        } else {
                seq = client->last_seq < 1 ? 1 : client->last_seq + 1;
        }
        client_submit(client, seq, json_object_get_string(q),
                      (size_t)json_object_get_string_len(q));
done:
        json_object_put(obj);
        json_tokener_free(tok);
}

static void client_handle_close(struct client *client, const uint8_t *payload, size_t len)
{
        unsigned code;

        if (len == 0) {
                client_close(client, 0, "");
                return;
        }
        if (len == 1) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "close payload of 1 byte");
                return;
        }
        code = (unsigned)payload[0] << 8 | payload[1];
        if (!ws_close_code_valid(code)) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "invalid close code");
                return;
        }
        if (ws_utf8_feed(WS_UTF8_ACCEPT, payload + 2, len - 2) != WS_UTF8_ACCEPT) {
                client_fail(client, WS_CLOSE_INVALID_DATA, "close reason is not UTF-8");
                return;
        }
        client_close(client, code, "");
}

/* Adds a text fragment to the open message. Returns -1 if the client was closed. */
static int client_append(struct client *client, const uint8_t *payload, size_t len)
{
        struct daemon *d = &daemon_state;
        uint8_t *grown;

        if (client->message_len + len > d->conf.max_message_bytes) {
                client_fail(client, WS_CLOSE_TOO_BIG, "message is larger than max_message_bytes");
                return -1;
        }
        if (len > 0) {
                grown = realloc(client->message, client->message_len + len);
                if (grown == NULL) {
                        client_fail(client, WS_CLOSE_INTERNAL_ERROR, "out of memory");
                        return -1;
                }
                client->message = grown;
                memcpy(client->message + client->message_len, payload, len);
                client->message_len += len;
        }
        client->message_utf8 = ws_utf8_feed(client->message_utf8, payload, len);
        if (client->message_utf8 == WS_UTF8_REJECT) {
                client_fail(client, WS_CLOSE_INVALID_DATA, "text is not valid UTF-8");
                return -1;
        }
        return 0;
}

static void client_handle_data(struct client *client, const struct ws_header *h,
                               const uint8_t *payload)
{
        size_t len = (size_t)h->payload_len;

        if (h->opcode == WS_OP_BINARY) {
                client_fail(client, WS_CLOSE_UNSUPPORTED, "binary messages are not supported");
                return;
        }
        if (h->opcode == WS_OP_CONTINUATION && !client->in_message) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "continuation without a message");
                return;
        }
        if (h->opcode == WS_OP_TEXT && client->in_message) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one");
                return;
        }
        if (h->opcode == WS_OP_TEXT && h->fin) {
                /* The common case: a whole message in one frame, handled without a copy. */
                if (ws_utf8_feed(WS_UTF8_ACCEPT, payload, len) != WS_UTF8_ACCEPT) {
                        client_fail(client, WS_CLOSE_INVALID_DATA, "text is not valid UTF-8");
                        return;
                }
                client_handle_message(client, (const char *)payload, len);
                return;
        }
        if (h->opcode == WS_OP_TEXT) {
                client->in_message = 1;
                client->message_len = 0;
                client->message_utf8 = WS_UTF8_ACCEPT;
        }
        if (client_append(client, payload, len) < 0)
                return;
        if (!h->fin)
                return;
        client->in_message = 0;
        if (client->message_utf8 != WS_UTF8_ACCEPT) {
                client_fail(client, WS_CLOSE_INVALID_DATA, "text ends inside a UTF-8 character");
                return;
        }
        client_handle_message(client, (const char *)client->message, client->message_len);
        free(client->message);
        client->message = NULL;
        client->message_len = 0;
}

/* Checks a frame header against RFC 6455 and the limits. Returns 0, or -1 after closing. */
static int client_check_header(struct client *client, const struct ws_header *h)
{
        struct daemon *d = &daemon_state;
        int control = h->opcode >= 0x8;

        if (h->rsv != 0) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "reserved bits set");
                return -1;
        }
        if (!h->masked) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "client frames must be masked");
                return -1;
        }
        if ((h->opcode > WS_OP_BINARY && h->opcode < WS_OP_CLOSE) || h->opcode > WS_OP_PONG) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "reserved opcode");
                return -1;
        }
        if (control && (h->payload_len > 125 || !h->fin)) {
                client_fail(client, WS_CLOSE_PROTOCOL_ERROR,
                            "control frame too long or fragmented");
                return -1;
        }
        if (!control && h->payload_len > d->conf.max_message_bytes) {
                client_fail(client, WS_CLOSE_TOO_BIG, "message is larger than max_message_bytes");
                return -1;
        }
        return 0;
}

void client_read_frames(struct client *client)
{
        struct evbuffer *in = bufferevent_get_input(client->bev);

        while (client->state == CLIENT_WEBSOCKET) {
                uint8_t head[WS_MAX_HEADER];
                size_t avail = evbuffer_get_length(in);
                size_t copied = avail < sizeof(head) ? avail : sizeof(head);
                struct ws_header h;
                uint8_t *payload;
                int r;

                evbuffer_copyout(in, head, copied);
                r = ws_header_decode(head, copied, &h);
                if (r == 0)
                        return;
                if (r < 0) {
                        client_fail(client, WS_CLOSE_PROTOCOL_ERROR, "invalid 64-bit length");
                        return;
                }
                if (client_check_header(client, &h) < 0)
                        return;
                if (avail < h.header_len + h.payload_len)
                        return; /* the rest of the frame has not arrived yet */

                evbuffer_drain(in, h.header_len);
                payload = evbuffer_pullup(in, (ev_ssize_t)h.payload_len);
                if (payload == NULL && h.payload_len > 0) {
                        client_fail(client, WS_CLOSE_INTERNAL_ERROR, "out of memory");
                        return;
                }
                ws_mask(payload, (size_t)h.payload_len, h.mask, 0);

                switch (h.opcode) {
                case WS_OP_PING:
                        client_send_frame(client, WS_OP_PONG, payload, (size_t)h.payload_len);
                        break;
                case WS_OP_PONG:
                        break;
                case WS_OP_CLOSE:
                        client_handle_close(client, payload, (size_t)h.payload_len);
                        return; /* the client may be freed, and nothing after a close counts */
                default:
                        client_handle_data(client, &h, payload);
                        break;
                }
                if (client->state != CLIENT_WEBSOCKET)
                        return; /* closed by the handler, which may have freed it */
                evbuffer_drain(in, (size_t)h.payload_len);
        }
}

void client_upgraded(struct client *client)
{
        struct daemon *d = &daemon_state;

        client->state = CLIENT_WEBSOCKET;
        bufferevent_set_timeouts(client->bev, NULL, NULL);
        bufferevent_setwatermark(client->bev, EV_READ, 0,
                                 d->conf.max_message_bytes + WS_MAX_HEADER + CLIENT_READ_SLACK);
        log_debug("client %llu (%s) upgraded to WebSocket, slot %u generation %u",
                  (unsigned long long)client->id, client->peer, client->slot, client->generation);
        client_read_frames(client);
}

void client_deliver(uint32_t slot, uint32_t generation, uint64_t seq, const char *body, size_t len)
{
        struct daemon *d = &daemon_state;
        struct client *client = d->clients[slot];

        cache_result(slot, generation, seq, body, len);
        if (client == NULL || client->generation != generation ||
            client->state != CLIENT_WEBSOCKET) {
                shm_count(&d->shm, stale_dropped);
                log_debug("result for slot %u generation %u seq %" PRIu64
                          " dropped: connection closed",
                          slot, generation, seq);
                return;
        }
        if ((int64_t)seq <= client->last_delivered) {
                shm_count(&d->shm, stale_dropped);
                log_debug("client %llu slot %u: result for seq %" PRIu64 " dropped: seq %" PRId64
                          " already answered",
                          (unsigned long long)client->id, slot, seq, client->last_delivered);
                return;
        }
        client_send_text(client, body, len);
        client->last_delivered = (int64_t)seq;
        shm_count(&d->shm, delivered);
}
