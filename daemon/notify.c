/*
 * The systemd notification protocol (sd_notify(3) from libsystemd): READY=1 once serving,
 * RELOADING=1 and READY=1 around a reload, STOPPING=1 on shutdown, and WATCHDOG=1 from the event
 * loop at half the unit's WatchdogSec. Outside systemd NOTIFY_SOCKET is unset and every call
 * does nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "incsearchd.h"

static void notify_send(const char *state)
{
        int rc = sd_notify(0, state);

        if (rc < 0)
                log_warn("sd_notify(%s) failed: %s", state, strerror(-rc));
}

void notify_ready(void)
{
        notify_send("READY=1\nSTATUS=serving");
}

void notify_reloading(void)
{
        char state[96];

        /* systemd 253 and later match a reload by this timestamp; older ones ignore it. */
        snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, shm_now_ns() / 1000);
        notify_send(state);
}

void notify_stopping(void)
{
        notify_send("STOPPING=1");
}

static void notify_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
        (void)fd;
        (void)what;
        (void)arg;
        notify_send("WATCHDOG=1");
}

void notify_start_watchdog(void)
{
        struct daemon *d = &daemon_state;
        uint64_t usec = 0;
        struct timeval interval;

        if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
                return;
        /* Half the interval, as sd_watchdog_enabled(3) advises, so one late tick is not fatal. */
        usec /= 2;
        interval.tv_sec = (time_t)(usec / 1000000);
        interval.tv_usec = (suseconds_t)(usec % 1000000);
        d->watchdog_timer = event_new(d->base, -1, EV_PERSIST, notify_watchdog_cb, NULL);
        if (d->watchdog_timer == NULL || event_add(d->watchdog_timer, &interval) < 0)
                log_fatal("cannot start the watchdog timer");
        log_info("systemd watchdog: WATCHDOG=1 every %" PRIu64 " ms", usec / 1000);
}
