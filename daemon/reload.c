/*
 * Reloading the configuration file on SIGHUP or incsearchctl reload, without dropping any
 * connection. Keys that size or name resources made at start keep their running values.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "incsearchd.h"
#include "rcache.h"
#include "tls.h"

/* The next configuration; static because struct conf is too large for the stack of a callback. */
static struct conf reload_next;

/*
 * Re-reads the configuration file, and the TLS certificate and key it names, and applies them.
 * Returns 0 with a summary in MESSAGE, or -1 with every error of an invalid file, or the reason
 * the TLS files are unusable, in MESSAGE, in which case nothing changes.
 */
int reload_conf(char *message, size_t message_len)
{
        struct daemon *d = &daemon_state;
        char errors[8192], changed[256];
        int count, kept;

        message[0] = '\0';
        notify_reloading();
        count = conf_load(&reload_next, d->conf.path, errors, sizeof(errors));
        if (count > 0) {
                log_error("reload of %s failed with %d error%s; the running configuration stays:",
                          d->conf.path, count, count == 1 ? "" : "s");
                for (char *save = NULL, *line = strtok_r(errors, "\n", &save); line != NULL;
                     line = strtok_r(NULL, "\n", &save)) {
                        log_error("%s", line);
                        snprintf(message + strnlen(message, message_len),
                                 message_len - strnlen(message, message_len), "%s%s",
                                 message[0] != '\0' ? "\n" : "", line);
                }
                notify_ready();
                return -1;
        }
        /* The files are read as the user incsearchd runs as by now, which may not be root. */
        if (tls_configure(&reload_next, errors, sizeof(errors)) < 0) {
                log_error("reload of %s failed: %s; the running configuration stays", d->conf.path,
                          errors);
                snprintf(message, message_len, "%s", errors);
                notify_ready();
                return -1;
        }

        kept = conf_keep_restart_keys(&d->conf, &reload_next, changed, sizeof(changed));
        if (kept > 0)
                log_warn("reload: %s changed but %s only at restart; keeping the running "
                         "value%s",
                         changed, kept == 1 ? "applies" : "apply", kept == 1 ? "" : "s");
        d->conf = reload_next;
        log_level = d->conf.log_level;
        if (d->conf.max_result_bytes > d->max_result_bytes_seen)
                d->max_result_bytes_seen = d->conf.max_result_bytes;

        daemon_lock();
        bucket_reconfigure(&d->shm.header->bucket, d->conf.rate_milli, d->conf.burst, shm_now_ns());
        d->shm.header->max_wait_ns = (uint64_t)d->conf.max_wait_ms * 1000000ULL;
        shm_unlock(&d->shm);
        supervisor_send_conf();
        rcache_reload();

        snprintf(message, message_len,
                 "reloaded %s: rate %" PRIu64 ".%03" PRIu64 "/s, burst %u, timeout %u ms%s%s",
                 d->conf.path, d->conf.rate_milli / 1000, d->conf.rate_milli % 1000, d->conf.burst,
                 d->conf.api_timeout_ms, kept > 0 ? "; restart to apply " : "",
                 kept > 0 ? changed : "");
        log_info("%s", message);
        notify_ready();
        return 0;
}

/* Sets the log level of the daemon and every worker until the next reload or restart. */
void reload_set_log_level(enum log_level level)
{
        struct daemon *d = &daemon_state;

        enum log_level old = log_level;

        /* Logged at info under whichever of the two levels shows it, before or after. */
        log_info("log level set to %s from %s", log_level_name(level), log_level_name(old));
        d->conf.log_level = level;
        log_level = level;
        if (old < LOG_LEVEL_INFO)
                log_info("log level set to %s from %s", log_level_name(level), log_level_name(old));
        supervisor_send_conf();
}
