/*
 * The graceful stop on SIGTERM or SIGINT, in two bounded phases on a 50 ms timer:
 *
 *   drain  the listener is closed and new queries get the error "overloaded", while the API
 *          calls in flight finish and their results are delivered; it ends when no worker is
 *          calling the API, or after the API's timeout_ms and one more second.
 *   close  every WebSocket gets a close frame with 1001 (going away); it ends when all of them
 *          are closed, or after SHUTDOWN_CLOSE_MS.
 *
 * Then the event loop ends, main() stops the workers, and the daemon exits with status 0.
 */
#include "incsearchd.h"
#include "log.h"

#define SHUTDOWN_TICK_MS 50
#define SHUTDOWN_CLOSE_MS 2000

enum shutdown_phase {
        SHUTDOWN_DRAIN,
        SHUTDOWN_CLOSE,
};

static enum shutdown_phase shutdown_phase;

/* Returns the API calls that workers hold at the moment, running or waiting to retry. */
static unsigned shutdown_busy_workers(void)
{
        struct daemon *d = &daemon_state;
        unsigned busy = 0;

        for (unsigned i = 0; i < d->conf.workers; i++) {
                for (unsigned j = 0; j < SHM_MAX_INFLIGHT; j++)
                        busy += __atomic_load_n(&d->shm.header->workers[i].jobs[j].busy,
                                                __ATOMIC_RELAXED) != 0;
        }
        return busy;
}

static void shutdown_close_clients(void)
{
        struct daemon *d = &daemon_state;
        unsigned count = 0;

        for (uint32_t slot = 0; slot < d->conf.max_connections; slot++) {
                struct client *client = d->clients[slot];

                if (client != NULL && client->state == CLIENT_WEBSOCKET) {
                        client_close(client, WS_CLOSE_GOING_AWAY, "server shutting down");
                        count++;
                }
        }
        log_info("sent close 1001 to %u WebSocket clients", count);
}

static void shutdown_tick_cb(evutil_socket_t fd, short what, void *arg)
{
        struct daemon *d = &daemon_state;
        uint64_t now = server_now_ms();

        (void)fd;
        (void)what;
        (void)arg;
        if (shutdown_phase == SHUTDOWN_DRAIN) {
                unsigned busy = shutdown_busy_workers();

                if (busy != 0 && now < d->shutdown_deadline_ms)
                        return;
                if (busy != 0)
                        log_warn("%u API calls still in flight at the shutdown deadline; their "
                                 "results are lost",
                                 busy);
                shutdown_phase = SHUTDOWN_CLOSE;
                d->shutdown_deadline_ms = now + SHUTDOWN_CLOSE_MS;
                shutdown_close_clients();
                return;
        }
        if (d->free_count == d->conf.max_connections || now >= d->shutdown_deadline_ms) {
                if (d->free_count != d->conf.max_connections)
                        log_warn("%u WebSocket clients did not finish the close handshake in %d ms",
                                 d->conf.max_connections - d->free_count, SHUTDOWN_CLOSE_MS);
                event_del(d->shutdown_timer);
                event_base_loopbreak(d->base);
        }
}

void shutdown_start(void)
{
        struct daemon *d = &daemon_state;
        struct timeval tick = {0, SHUTDOWN_TICK_MS * 1000};

        d->stopping = 1;
        server_stop_accepting();
        shutdown_phase = SHUTDOWN_DRAIN;
        d->shutdown_deadline_ms = server_now_ms() + d->conf.api_timeout_ms + 1000;
        d->shutdown_timer = event_new(d->base, -1, EV_PERSIST, shutdown_tick_cb, NULL);
        if (d->shutdown_timer == NULL || event_add(d->shutdown_timer, &tick) < 0) {
                log_warn("cannot start the shutdown timer; stopping at once");
                event_base_loopbreak(d->base);
                return;
        }
        log_info("waiting for %u API calls in flight, at most %u ms", shutdown_busy_workers(),
                 d->conf.api_timeout_ms + 1000);
}
