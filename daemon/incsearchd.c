/*
 * incsearchd: type-ahead search over WebSocket in front of a rate-limited HTTP API.
 * This file contains start-up, signals and shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#include "cache.h"
#include "incsearchd.h"
#include "log.h"
#include "tls.h"
#include "version.h"

struct daemon daemon_state;

static void usage(FILE *out)
{
        fprintf(out,
                "usage: incsearchd [-hntvV] [-c file]\n"
                "  -c file  configuration file (default %s)\n"
                "  -t, -n   check the configuration file, and the TLS files it names, and exit:\n"
                "           0 if valid, 1 if not\n"
                "  -v       with -t, print the configuration with every default filled in,\n"
                "           without reading the TLS files\n"
                "  -V       print the version and exit\n"
                "  -h       print this help and exit\n"
                "incsearchd runs in the foreground and logs to stderr.\n",
                CONF_DEFAULT_PATH);
}

/*
 * Looks up the account to run as: the configured user and group when started as root, else
 * the current ones. Returns 0 with *UID and *GID set, or -1 with the reason logged.
 */
static int daemon_lookup_account(uid_t *uid, gid_t *gid)
{
        const struct conf *conf = &daemon_state.conf;
        struct passwd *pw;
        struct group *gr;

        *uid = geteuid();
        *gid = getegid();
        if (*uid != 0 || conf->user[0] == '\0') {
                if (conf->group[0] != '\0' && (gr = getgrnam(conf->group)) != NULL)
                        *gid = gr->gr_gid;
                return 0;
        }
        pw = getpwnam(conf->user);
        if (pw == NULL) {
                log_error("user %s not found; create it (make install does) or change user in "
                          "[server]",
                          conf->user);
                return -1;
        }
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
        if (conf->group[0] != '\0') {
                gr = getgrnam(conf->group);
                if (gr == NULL) {
                        log_error("group %s not found; create it or change group in [server]",
                                  conf->group);
                        return -1;
                }
                *gid = gr->gr_gid;
        }
        return 0;
}

/* Switches to UID and GID when running as root, after the sockets are bound. */
static void daemon_drop_privileges(uid_t uid, gid_t gid)
{
        const struct conf *conf = &daemon_state.conf;

        if (geteuid() != 0)
                return;
        if (conf->user[0] == '\0') {
                log_warn("running as root: set user in [server] to switch to an unprivileged "
                         "user after binding");
                return;
        }
        if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
                log_fatal("cannot switch to user %s (uid %d gid %d): %s", conf->user, (int)uid,
                          (int)gid, strerror(errno));
        if (setuid(0) == 0)
                log_fatal("switched to user %s, but could get root back; refusing to run",
                          conf->user);
        log_info("switched to user %s (uid %d, gid %d)", conf->user, (int)uid, (int)gid);
}

static int daemon_load_conf(const char *path)
{
        char errors[8192];
        int count = conf_load(&daemon_state.conf, path, errors, sizeof(errors));

        if (count > 0) {
                fputs(errors, stderr);
                fprintf(stderr, "incsearchd: %d error%s in %s; not starting\n", count,
                        count == 1 ? "" : "s", path);
                return -1;
        }
        return 0;
}

/* The worker program lives next to this one: build/ in the tree, the sbin folder when installed. */
static int daemon_find_worker(void)
{
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n < 0) {
                log_error("cannot read /proc/self/exe: %s", strerror(errno));
                return -1;
        }
        self[n] = '\0';
        snprintf(daemon_state.worker_path, sizeof(daemon_state.worker_path), "%s/incsearchd-worker",
                 dirname(self));
        if (access(daemon_state.worker_path, X_OK) < 0) {
                log_error("worker program %s: %s", daemon_state.worker_path, strerror(errno));
                return -1;
        }
        return 0;
}

/*
 * Descriptors kept free of clients when max_connections is derived: stdio, the listener, the
 * event loop's own, the shared memory, log files, and one socket pair end per worker.
 */
#define DAEMON_FD_RESERVE 32

/*
 * Raises the soft limit on open files to the hard limit, since each client is a descriptor.
 * Returns the soft limit in force afterwards.
 */
static rlim_t daemon_raise_nofile(void)
{
        struct rlimit rl;
        rlim_t before;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 1024;
        before = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                log_warn("cannot raise the open-file limit from %llu to %llu: %s",
                         (unsigned long long)before, (unsigned long long)rl.rlim_max,
                         strerror(errno));
                return before;
        }
        log_info("open-file limit: soft %llu (was %llu), hard %llu",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)before,
                 (unsigned long long)rl.rlim_max);
        return rl.rlim_cur;
}

/* Sets max_connections, when the config leaves it out, to what the descriptor limit allows. */
static void daemon_derive_max_connections(rlim_t nofile)
{
        struct conf *conf = &daemon_state.conf;
        rlim_t reserve = DAEMON_FD_RESERVE + conf->workers;

        if (conf->max_connections != 0)
                return;
        if (nofile == RLIM_INFINITY || nofile > CONF_MAX_CONNECTIONS + reserve)
                conf->max_connections = CONF_MAX_CONNECTIONS;
        else if (nofile > reserve)
                conf->max_connections = (uint32_t)(nofile - reserve);
        else
                conf->max_connections = 1;
        log_info("max_connections %u, from the open-file limit %llu less %llu reserved",
                 conf->max_connections, (unsigned long long)nofile, (unsigned long long)reserve);
}

static int daemon_alloc_slots(void)
{
        struct daemon *d = &daemon_state;
        uint32_t n = d->conf.max_connections;

        d->clients = calloc(n, sizeof(*d->clients));
        d->free_slots = calloc(n, sizeof(*d->free_slots));
        if (d->clients == NULL || d->free_slots == NULL)
                return -1;
        /* Lowest index on top, so the slots in use stay dense. */
        for (uint32_t i = 0; i < n; i++)
                d->free_slots[i] = n - 1 - i;
        d->free_count = n;
        return 0;
}

static void daemon_signal_cb(evutil_socket_t sig, short what, void *arg)
{
        struct daemon *d = &daemon_state;

        (void)what;
        (void)arg;
        switch (sig) {
        case SIGCHLD:
                supervisor_reap();
                break;
        case SIGHUP: {
                char message[8192];

                log_info("SIGHUP received; reloading %s", d->conf.path);
                reload_conf(message, sizeof(message));
                break;
        }
        default:
                if (d->stopping) {
                        log_info("signal %d (%s) received again; stopping now", (int)sig,
                                 strsignal((int)sig));
                        event_base_loopbreak(d->base);
                        break;
                }
                log_info("signal %d (%s) received; stopping", (int)sig, strsignal((int)sig));
                notify_stopping();
                shutdown_start();
                break;
        }
}

static void daemon_add_signal(int sig)
{
        struct event *ev = evsignal_new(daemon_state.base, sig, daemon_signal_cb, NULL);

        if (ev == NULL || evsignal_add(ev, NULL) < 0)
                log_fatal("cannot handle signal %d", sig);
}

int main(int argc, char **argv)
{
        struct daemon *d = &daemon_state;
        const char *conf_path = CONF_DEFAULT_PATH;
        char resolved[PATH_MAX], tls_error[2048];
        int check_only = 0, dump = 0, opt;
        pid_t owner;
        uid_t uid;
        gid_t gid;

        while ((opt = getopt(argc, argv, "c:hntvV")) != -1) {
                switch (opt) {
                case 'c':
                        conf_path = optarg;
                        break;
                case 'n':
                case 't':
                        check_only = 1;
                        break;
                case 'v':
                        dump = 1;
                        break;
                case 'V':
                        printf("incsearchd %s\n", INCSEARCHD_VERSION);
                        return 0;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 1;
                }
        }
        if (optind != argc) {
                usage(stderr);
                return 1;
        }

        /* Workers re-read the file from their own start, so give them a path that cannot move. */
        if (realpath(conf_path, resolved) != NULL)
                conf_path = resolved;
        if (daemon_load_conf(conf_path) < 0)
                return 1;
        /* The dump shows the file as parsed, also on a host that lacks the TLS files. */
        if (check_only) {
                if (!dump && tls_check(&d->conf, tls_error, sizeof(tls_error)) < 0) {
                        fprintf(stderr, "incsearchd: %s\n", tls_error);
                        return 1;
                }
                if (dump)
                        conf_dump(&d->conf, stdout);
                else
                        printf("configuration OK\n");
                return 0;
        }
        log_init("incsearchd", d->conf.log_level);
        if (daemon_find_worker() < 0)
                return 1;
        daemon_derive_max_connections(daemon_raise_nofile());
        signal(SIGPIPE, SIG_IGN);

        if (daemon_alloc_slots() < 0)
                log_fatal("out of memory allocating %u client slots", d->conf.max_connections);
        d->base = event_base_new();
        if (d->base == NULL)
                log_fatal("cannot create the event loop");
        daemon_add_signal(SIGINT);
        daemon_add_signal(SIGTERM);
        daemon_add_signal(SIGHUP);
        daemon_add_signal(SIGCHLD);
        if (cache_init() < 0)
                log_fatal("out of memory setting up the result cache");
        /* Before privileges are dropped, so that a key only root can read works. */
        if (tls_configure(&d->conf, tls_error, sizeof(tls_error)) < 0) {
                log_error("%s; not starting", tls_error);
                return 1;
        }
        /* Listen first: a second instance on the same port must fail before it touches the
         * shared memory of the first. */
        if (server_listen() < 0 || daemon_lookup_account(&uid, &gid) < 0 ||
            control_listen(uid, gid) < 0)
                return 1;
        daemon_drop_privileges(uid, gid);
        if (shm_create(&d->shm, d->conf.shm_name, d->conf.max_connections, d->conf.max_query_bytes,
                       d->conf.rate_milli, d->conf.burst, &owner) < 0) {
                if (errno == EBUSY)
                        log_fatal("shared memory %s is in use by incsearchd pid %d; stop it or "
                                  "set another shm_name",
                                  d->conf.shm_name, (int)owner);
                log_fatal("cannot create shared memory %s: %s", d->conf.shm_name, strerror(errno));
        }
        d->shm.header->max_wait_ns = (uint64_t)d->conf.max_wait_ms * 1000000ULL;
        d->started_ns = shm_now_ns();
        d->max_result_bytes_seen = d->conf.max_result_bytes;
        supervisor_start();
        notify_start_watchdog();
        notify_ready();
        log_info("incsearchd %s started: %u workers, %u slots, API rate %llu.%03llu/s burst %u, "
                 "config %s",
                 INCSEARCHD_VERSION, d->conf.workers, d->conf.max_connections,
                 (unsigned long long)(d->conf.rate_milli / 1000),
                 (unsigned long long)(d->conf.rate_milli % 1000), d->conf.burst, d->conf.path);

        event_base_dispatch(d->base);

        supervisor_stop();
        server_stop_accepting();
        cache_free();
        tls_free();
        control_close();
        shm_destroy(&d->shm, d->conf.shm_name);
        log_info("stopped");
        return 0;
}
