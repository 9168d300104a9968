/*
 * The WebSocket side of a connection: frames in, queries into the client's slot, results and
 * errors out.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <json-c/json.h>

#include "cache.h"
#include "incsearchd.h"
#include "log.h"
#include "reply.h"
#include "slot.h"
#include "query.h"
#include "ws.h"

/*
 * The largest seq accepted: 2^53-1, the largest integer a JavaScript number represents exactly. The
 * bound also keeps the next automatic seq, last_seq + 1, from overflowing.
 */
#define CLIENT_MAX_SEQ 9007199254740991LL

/* Room for frames that arrive behind the one being read, beyond the largest message. */
#define CLIENT_READ_SLACK 4096

/* Bad input and misbehaving peers are logged, but no client can flood the log with them. */
static struct log_limit client_bad_input_limit;

static size_t client_queued(const struct client *client)
{
        return evbuffer_get_length(bufferevent_get_output(client->bev));
}

static void client_add_frame(struct client *client, unsigned opcode, const void *payload,
                             size_t len)
{
        struct evbuffer *out = bufferevent_get_output(client->bev);
        uint8_t header[WS_MAX_HEADER];
        size_t header_len = ws_header_encode(header, 1, opcode, len, NULL);

        evbuffer_add(out, header, header_len);
        evbuffer_add(out, payload, len);
}

/*
 * Queues a frame that must not be dropped: a pong, a ping or a close. A peer that lets them
 * pile up over max_output_bytes is closed without a close frame, which it would not read.
 * Returns -1 if the client was freed.
 */
static int client_send_frame(struct client *client, unsigned opcode, const void *payload,
                             size_t len)
{
        struct daemon *d = &daemon_state;

        if (client_queued(client) + len + WS_MAX_HEADER > d->conf.max_output_bytes) {
                shm_count(&d->shm, closed_slow);
                log_limited(&client_bad_input_limit, LOG_LEVEL_INFO,
                            "client %llu (%s) slot %u: closed, %zu bytes queued and not read "
                            "(max_output_bytes)",
                            (unsigned long long)client->id, client->peer, client->slot,
                            client_queued(client));
                server_close_client(client);
                return -1;
        }
        client_add_frame(client, opcode, payload, len);
        return 0;
}

/*
 * Queues a result or an error for a query. When the peer is not reading and the frame would
 * take the queue over max_output_bytes, it waits as the one pending result and replaces an
 * older one there, since only the latest result matters to a type-ahead client.
 */
void client_send_text(struct client *client, const char *text, size_t len)
{
        struct daemon *d = &daemon_state;
        size_t queued;
        char *copy;

        if (client->state != CLIENT_WEBSOCKET)
                return;
        queued = client_queued(client);
        /* An empty queue takes any one frame, so a result larger than the cap still goes. */
        if (client->pending == NULL &&
            (queued == 0 || queued + len + WS_MAX_HEADER <= d->conf.max_output_bytes)) {
                client_add_frame(client, WS_OP_TEXT, text, len);
                return;
        }
        copy = malloc(len);
        if (copy == NULL) {
                log_warn("client %llu: out of memory keeping a result of %zu bytes; dropping it",
                         (unsigned long long)client->id, len);
                return;
        }
        memcpy(copy, text, len);
        if (client->pending != NULL) {
                shm_count(&d->shm, results_dropped_slow);
                log_debug("client %llu slot %u: older unsent result dropped, peer not reading",
                          (unsigned long long)client->id, client->slot);
        }
        free(client->pending);
        client->pending = copy;
        client->pending_len = len;
}

/* Called when the output queue is empty: sends the pending result, if any. */
void client_write_drained(struct client *client)
{
        if (client->pending == NULL)
                return;
        client_add_frame(client, WS_OP_TEXT, client->pending, client->pending_len);
        free(client->pending);
        client->pending = NULL;
        client->pending_len = 0;
}

/*
 * Handles the read timeout of an upgraded connection, which is the keepalive timer: after
 * ping_interval_ms without data a ping goes out, and a peer that then sends nothing within
 * ping_timeout_ms is closed.
 */
void client_timed_out(struct client *client)
{
        struct daemon *d = &daemon_state;
        struct timeval wait = {(time_t)(d->conf.ping_timeout_ms / 1000),
                               (suseconds_t)(d->conf.ping_timeout_ms % 1000) * 1000};

        if (client->ping_sent) {
                shm_count(&d->shm, ping_timeouts);
                log_limited(&client_bad_input_limit, LOG_LEVEL_INFO,
                            "client %llu (%s) slot %u: no answer to a ping within %u ms; closing",
                            (unsigned long long)client->id, client->peer, client->slot,
                            d->conf.ping_timeout_ms);
                server_close_client(client);
                return;
        }
        if (client_send_frame(client, WS_OP_PING, "", 0) < 0)
                return;
        shm_count(&d->shm, pings_sent);
        client->ping_sent = 1;
        bufferevent_set_timeouts(client->bev, &wait, NULL);
        /* libevent disables reading when the read timeout fires. */
        bufferevent_enable(client->bev, EV_READ);
}

/* Restarts the keepalive timer: any data from the peer shows that it is alive. */
static void client_alive(struct client *client)
{
        struct daemon *d = &daemon_state;
        struct timeval interval = {(time_t)(d->conf.ping_interval_ms / 1000),
                                   (suseconds_t)(d->conf.ping_interval_ms % 1000) * 1000};

        client->ping_sent = 0;
        bufferevent_set_timeouts(client->bev, d->conf.ping_interval_ms != 0 ? &interval : NULL,
                                 NULL);
}

/* Sends a close frame with CODE (0 for none), then closes once it is flushed. */
void client_close(struct client *client, unsigned code, const char *reason)
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
                if (client_send_frame(client, WS_OP_CLOSE, payload, len) < 0)
                        return;
                client->close_sent = 1;
        }
        server_finish(client);
}

static void client_fail(struct client *client, unsigned code, const char *reason)
{
        struct daemon *d = &daemon_state;

        if (code == WS_CLOSE_TOO_BIG)
                shm_count(&d->shm, messages_too_big);
        else if (code != WS_CLOSE_INTERNAL_ERROR)
                shm_count(&d->shm, protocol_errors);
        log_limited(&client_bad_input_limit, LOG_LEVEL_INFO,
                    "client %llu (%s) slot %u: closing with %u: %s", (unsigned long long)client->id,
                    client->peer, client->slot, code, reason);
        client_close(client, code, reason);
}

static void client_send_error(struct client *client, int64_t seq, const char *query,
                              size_t query_len, const char *code, const char *message)
{
        size_t len;
        char *text = reply_error(seq, query, query_len, code, message, &len);

        log_limited(&client_bad_input_limit, LOG_LEVEL_INFO,
                    "client %llu (%s) slot %u: %s for seq %lld: %s", (unsigned long long)client->id,
                    client->peer, client->slot, code, (long long)seq, message);
        if (text == NULL) {
                log_warn("client %llu: out of memory building an error message",
                         (unsigned long long)client->id);
                return;
        }
        client_send_text(client, text, len);
        free(text);
}

/*
 * Counts the UTF-8 characters in valid UTF-8 TEXT, stopping at LIMIT. White space at either
 * end is not counted, because the cache and the API see the query trimmed.
 */
static size_t client_count_chars(const char *text, size_t len, size_t limit)
{
        size_t chars = 0;

        while (len > 0 && isspace((unsigned char)*text)) {
                text++;
                len--;
        }
        while (len > 0 && isspace((unsigned char)text[len - 1]))
                len--;

        for (size_t i = 0; i < len && chars < limit; i++) {
                if (((unsigned char)text[i] & 0xC0) != 0x80)
                        chars++;
        }
        return chars;
}

void client_reply_now(struct client *client, int64_t seq, char *text, size_t text_len)
{
        struct daemon *d = &daemon_state;

        daemon_lock();
        if (slot_supersede(&d->shm, client->slot, (uint64_t)seq))
                shm_count(&d->shm, superseded);
        shm_unlock(&d->shm);
        if (text == NULL) {
                log_warn("client %llu slot %u: out of memory building the reply for seq %lld",
                         (unsigned long long)client->id, client->slot, (long long)seq);
                return;
        }
        client_send_text(client, text, text_len);
        free(text);
        client->last_delivered = seq;
        shm_count(&d->shm, delivered);
}

/* Replies at once to a query that needs no API call, and drops any older one still pending. */
static void client_answer_locally(struct client *client, int64_t seq, const char *query, size_t len,
                                  const char *error_code, const char *message)
{
        char *text;
        size_t text_len = 0;

        if (error_code != NULL) {
                log_limited(&client_bad_input_limit, LOG_LEVEL_INFO,
                            "client %llu (%s) slot %u: %s for seq %lld",
                            (unsigned long long)client->id, client->peer, client->slot, error_code,
                            (long long)seq);
                text = reply_error(seq, query, len, error_code, message, &text_len);
        } else {
                text = reply_results(seq, query, len, NULL, 0, &text_len);
        }
        client_reply_now(client, seq, text, text_len);
}

/*
 * The newest query read from one client in one batch of frames. Only it matters, because the
 * latest query wins, so the older ones in a batch never reach the cache or the shared-memory
 * lock. client_read_frames submits it when the batch ends.
 */
static struct {
        struct client *client; /* NULL when no query is deferred */
        int64_t seq;
        size_t len;
        char text[CONF_MAX_QUERY_BYTES];
} client_batch;

void client_batch_forget(struct client *client)
{
        if (client_batch.client == client)
                client_batch.client = NULL;
}

/* Drops CLIENT's deferred query because a newer one replaced it. */
static void client_batch_supersede(struct client *client)
{
        if (client_batch.client != client)
                return;
        client_batch.client = NULL;
        shm_count(&daemon_state.shm, superseded);
}

/* Queues the deferred query for an API call, unless the cache or an equal call answers it. */
static void client_batch_flush(void)
{
        struct daemon *d = &daemon_state;
        struct client *client = client_batch.client;
        int64_t seq = client_batch.seq;
        const char *query = client_batch.text;
        size_t len = client_batch.len;
        int pushed, superseded;

        if (client == NULL)
                return;
        client_batch.client = NULL;
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

static void client_submit(struct client *client, int64_t seq, const char *query, size_t len)
{
        struct daemon *d = &daemon_state;

        shm_count(&d->shm, queries);
        client->last_seq = seq;
        cache_leave(client);
        client_batch_supersede(client);
        client->queries++;

        if (len > d->conf.max_query_bytes) {
                /* Echo only the allowed length, cut at a character boundary, so that a long
                 * query cannot make the reply larger than the bound on queries. */
                size_t echo = d->conf.max_query_bytes;

                while (echo > 0 && ((unsigned char)query[echo] & 0xC0) == 0x80)
                        echo--;
                shm_count(&d->shm, queries_too_long);
                client_answer_locally(client, seq, query, echo, REPLY_QUERY_TOO_LONG,
                                      "query is longer than max_query_bytes");
                return;
        }
        if (client_count_chars(query, len, d->conf.min_query_chars) < d->conf.min_query_chars) {
                client_answer_locally(client, seq, query, len, NULL, NULL);
                return;
        }
        if (client_batch.client != NULL)
                client_batch_flush(); /* another client's query: submit it rather than lose it */
        client_batch.client = client;
        client_batch.seq = seq;
        client_batch.len = len;
        memcpy(client_batch.text, query, len);
}

/*
 * Checks the seq of a query, numbering it when the client sent none, and submits it. A query
 * that arrives while the daemon shuts down gets error overloaded.
 */
static void client_query(struct client *client, int has_seq, int64_t seq, const char *query,
                         size_t len)
{
        if (!has_seq) {
                seq = client->last_seq < 1 ? 1 : client->last_seq + 1;
                if (seq > CLIENT_MAX_SEQ) {
                        client_send_error(client, -1, query, len, REPLY_BAD_REQUEST,
                                          "the next seq would pass 2^53-1; reconnect");
                        return;
                }
        } else if (seq <= client->last_seq) {
                client_send_error(client, seq, query, len, REPLY_BAD_REQUEST,
                                  "\"seq\" must increase with every query");
                return;
        }
        if (daemon_state.stopping) {
                client_send_error(client, seq, query, len, REPLY_OVERLOADED,
                                  "the server is shutting down; reconnect in a few seconds");
                return;
        }
        client_submit(client, seq, query, len);
}

/* Parses a JSON message the fast parser left, with json-c in strict mode, and submits it. */
static void client_handle_json(struct client *client, const char *text, size_t len)
{
        static struct json_tokener *tok;
        json_object *obj, *q, *seq_obj;
        int64_t seq = 0;
        int has_seq;

        /* One tokener for the daemon's life: creating one per message costs a locale copy. */
        if (tok == NULL) {
                tok = json_tokener_new();
                if (tok == NULL)
                        return;
                json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        }
        json_tokener_reset(tok);
        obj = json_tokener_parse_ex(tok, text, (int)len);
        if (obj == NULL || json_tokener_get_parse_end(tok) != len ||
            !json_object_is_type(obj, json_type_object)) {
                client_send_error(
                    client, -1, NULL, 0, REPLY_BAD_REQUEST,
                    "message is not valid JSON: send {\"q\": text, \"seq\": n} or plain text");
                goto done;
        }
        has_seq = json_object_object_get_ex(obj, "seq", &seq_obj);
        if (has_seq) {
                errno = 0;
                seq = json_object_get_int64(seq_obj);
                if (!json_object_is_type(seq_obj, json_type_int) || seq < 0 || errno != 0 ||
                    seq > CLIENT_MAX_SEQ)
                        seq = -1;
        }
        if (!json_object_object_get_ex(obj, "q", &q) || !json_object_is_type(q, json_type_string)) {
                client_send_error(client, seq, NULL, 0, REPLY_BAD_REQUEST,
                                  "missing or non-string \"q\"");
                goto done;
        }
        if (has_seq && seq < 0) {
                client_send_error(client, -1, json_object_get_string(q),
                                  (size_t)json_object_get_string_len(q), REPLY_BAD_REQUEST,
                                  "\"seq\" must be an integer from 0 to 2^53-1");
                goto done;
        }
        client_query(client, has_seq, seq, json_object_get_string(q),
                     (size_t)json_object_get_string_len(q));
done:
        json_object_put(obj);
}

/*
 * Handles one complete text message: a JSON object {"q": text, "seq": n} or, when the text
 * does not start with "{", the query text itself.
 */
static void client_handle_message(struct client *client, const char *text, size_t len)
{
        struct query_message message;
        const char *s = text;

        while (s < text + len && isspace((unsigned char)*s))
                s++;
        if (s == text + len || *s != '{') {
                client_query(client, 0, 0, text, len);
                return;
        }
        if (query_parse_fast(s, len - (size_t)(s - text), &message)) {
                client_query(client, message.has_seq, message.seq, message.q, message.q_len);
                return;
        }
        client_handle_json(client, text, len);
}

/* Adds a text fragment to the message being assembled. Returns -1 if the client was closed. */
static int client_append(struct client *client, const struct ws_frame *frame)
{
        uint8_t *grown;

        if (frame->message_start)
                client->message_len = 0;
        if (frame->len == 0)
                return 0;
        /* The parser has checked the total against max_message_bytes, so this stays bounded. */
        grown = realloc(client->message, client->message_len + frame->len);
        if (grown == NULL) {
                client_fail(client, WS_CLOSE_INTERNAL_ERROR, "out of memory");
                return -1;
        }
        client->message = grown;
        memcpy(client->message + client->message_len, frame->payload, frame->len);
        client->message_len += frame->len;
        return 0;
}

static void client_handle_text(struct client *client, const struct ws_frame *frame)
{
        if (frame->message_start && frame->message_end) {
                /* The common case: a whole message in one frame, handled without a copy. */
                client_handle_message(client, (const char *)frame->payload, frame->len);
                return;
        }
        if (client_append(client, frame) < 0 || !frame->message_end)
                return;
        client_handle_message(client, (const char *)client->message, client->message_len);
        free(client->message);
        client->message = NULL;
        client->message_len = 0;
}

/* Handles one complete frame. Returns -1 if the client is closing, and may then be freed. */
static int client_handle_frame(struct client *client, enum ws_frame_kind kind,
                               const struct ws_frame *frame)
{
        switch (kind) {
        case WS_FRAME_PING:
                if (client_send_frame(client, WS_OP_PONG, frame->payload, frame->len) < 0)
                        return -1;
                break;
        case WS_FRAME_PONG:
                break;
        case WS_FRAME_CLOSE:
                client_close(client, client->parser.close_code, "");
                return -1;
        case WS_FRAME_TEXT:
                client_handle_text(client, frame);
                break;
        case WS_FRAME_ERROR:
        case WS_FRAME_MORE:
                break;
        }
        return client->state == CLIENT_WEBSOCKET ? 0 : -1;
}

/* Reads and handles every complete frame in CLIENT's input. Returns -1 if CLIENT is closing,
 * and may then be freed. */
static int client_read_batch(struct client *client)
{
        struct evbuffer *in = bufferevent_get_input(client->bev);
        size_t avail = evbuffer_get_length(in), done = 0;
        uint8_t *buf;

        if (client->ping_sent)
                client_alive(client);
        if (avail == 0)
                return 0;

        /*
         * Parse from one contiguous view and drain once at the end: every drain below the read
         * watermark re-arms the read event, which cost more than parsing when done per frame.
         * The input is bounded by that watermark, so the view stays small.
         */
        buf = evbuffer_pullup(in, -1);
        if (buf == NULL) {
                client_fail(client, WS_CLOSE_INTERNAL_ERROR, "out of memory");
                return -1;
        }
        while (client->state == CLIENT_WEBSOCKET) {
                struct ws_frame frame;
                enum ws_frame_kind kind =
                    ws_parse(&client->parser, buf + done, avail - done, &frame);

                /* The header is checked first, so a frame to reject is never waited for. */
                if (kind == WS_FRAME_MORE)
                        break;
                if (kind == WS_FRAME_ERROR) {
                        client_fail(client, client->parser.close_code, client->parser.error);
                        return -1;
                }
                if (client_handle_frame(client, kind, &frame) < 0)
                        return -1; /* the client may be freed, and nothing after a close counts */
                done += frame.size;
        }
        evbuffer_drain(in, done);
        return client->state == CLIENT_WEBSOCKET ? 0 : -1;
}

void client_read_frames(struct client *client)
{
        uint64_t queries = client->queries;

        /* One clock read per batch, not per query, for incsearchctl clients. */
        if (client_read_batch(client) == 0 && client->queries != queries)
                client->last_query_ns = shm_now_ns();
        client_batch_flush();
}

void client_upgraded(struct client *client)
{
        struct daemon *d = &daemon_state;

        client->state = CLIENT_WEBSOCKET;
        ws_parser_init(&client->parser, d->conf.max_message_bytes);
        client_alive(client);
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
        if ((int64_t)seq == client->last_seq)
                histogram_record(&d->shm.header->keystroke,
                                 (shm_now_ns() - client->last_query_ns) / 1000);
}
