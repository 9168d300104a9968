/*
 * The control socket that incsearchctl talks to: a Unix stream socket, mode 0660 and owned by
 * the daemon's group. A client sends one command line and gets one JSON object and a newline
 * back, then the daemon closes the connection. Every reply has "ok"; a failed command has
 * "error" with the reason.
 */
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <json-c/json.h>

#include "incsearchd.h"
#include "slot.h"

#define CONTROL_MAX_LINE 256
#define CONTROL_TIMEOUT_S 5
#define CONTROL_MAX_CLIENTS_LISTED 10000

struct control_command {
        const char *name;
        json_object *(*run)(const char *arg);
};

static struct log_limit control_limit;

static json_object *control_ok(void)
{
        json_object *reply = json_object_new_object();

        json_object_object_add(reply, "ok", json_object_new_boolean(1));
        return reply;
}

static json_object *control_error(const char *message)
{
        json_object *reply = json_object_new_object();

        json_object_object_add(reply, "ok", json_object_new_boolean(0));
        json_object_object_add(reply, "error", json_object_new_string(message));
        return reply;
}

static json_object *control_status(const char *arg)
{
        struct stats stats;
        json_object *reply;

        (void)arg;
        stats_collect(&stats);
        reply = stats_json(&stats);
        json_object_object_add(reply, "ok", json_object_new_boolean(1));
        return reply;
}

static const char *control_client_state(const struct client *client)
{
        if (client->state == CLIENT_CLOSING)
                return "closing";
        switch (shm_slot(&daemon_state.shm, client->slot)->state) {
        case SLOT_PENDING:
                return "pending";
        case SLOT_INFLIGHT:
                return "api_call";
        default:
                return "idle";
        }
}

static json_object *control_clients(const char *arg)
{
        struct daemon *d = &daemon_state;
        json_object *reply = control_ok(), *list = json_object_new_array();
        uint64_t now_ms = server_now_ms(), now_ns = shm_now_ns();
        uint32_t listed = 0, left_out = 0;

        (void)arg;
        for (uint32_t i = 0; i < d->conf.max_connections; i++) {
                const struct client *c = d->clients[i];
                json_object *entry;

                if (c == NULL)
                        continue;
                if (listed == CONTROL_MAX_CLIENTS_LISTED) {
                        left_out++;
                        continue;
                }
                entry = json_object_new_object();
                json_object_object_add(entry, "id", json_object_new_uint64(c->id));
                json_object_object_add(entry, "address", json_object_new_string(c->peer));
                json_object_object_add(entry, "connected_ms",
                                       json_object_new_uint64(now_ms - c->connected_ms));
                json_object_object_add(entry, "queries", json_object_new_uint64(c->queries));
                if (c->last_query_ns != 0)
                        json_object_object_add(
                            entry, "last_query_ms",
                            json_object_new_uint64((now_ns - c->last_query_ns) / 1000000));
                json_object_object_add(entry, "state",
                                       json_object_new_string(control_client_state(c)));
                json_object_array_add(list, entry);
                listed++;
        }
        json_object_object_add(reply, "clients", list);
        json_object_object_add(reply, "left_out", json_object_new_uint64(left_out));
        return reply;
}

static json_object *control_workers(const char *arg)
{
        struct daemon *d = &daemon_state;
        json_object *reply = control_ok(), *list = json_object_new_array();

        (void)arg;
        for (unsigned i = 0; i < d->conf.workers; i++) {
                const struct worker *w = &d->workers[i];
                const struct shm_worker *sw = &d->shm.header->workers[i];
                json_object *entry = json_object_new_object();
                const char *state = "idle";
                unsigned calls = 0;

                for (unsigned j = 0; j < SHM_MAX_INFLIGHT; j++)
                        calls += __atomic_load_n(&sw->jobs[j].busy, __ATOMIC_RELAXED) != 0;
                if (w->pid == 0)
                        state = "restarting";
                else if (calls > 0)
                        state = "api_call";

                json_object_object_add(entry, "index", json_object_new_uint64(i));
                json_object_object_add(entry, "pid", json_object_new_int(w->pid));
                json_object_object_add(entry, "state", json_object_new_string(state));
                json_object_object_add(entry, "calls", json_object_new_uint64(calls));
                json_object_object_add(entry, "requests",
                                       json_object_new_uint64(atomic_load(&sw->requests)));
                json_object_object_add(entry, "restarts",
                                       json_object_new_uint64(w->restarts_total));
                json_object_array_add(list, entry);
        }
        json_object_object_add(reply, "workers", list);
        return reply;
}

static json_object *control_reload(const char *arg)
{
        char message[8192];
        json_object *reply;

        (void)arg;
        if (reload_conf(message, sizeof(message)) < 0)
                return control_error(message);
        reply = control_ok();
        json_object_object_add(reply, "message", json_object_new_string(message));
        return reply;
}

static json_object *control_log(const char *arg)
{
        enum log_level level;
        json_object *reply;

        if (arg == NULL || log_level_parse(arg, &level) < 0)
                return control_error("log needs a level: error, warn, info or debug");
        reload_set_log_level(level);
        reply = control_ok();
        json_object_object_add(reply, "log_level", json_object_new_string(log_level_name(level)));
        return reply;
}

static const struct control_command control_commands[] = {
    {"status", control_status}, {"clients", control_clients}, {"workers", control_workers},
    {"reload", control_reload}, {"log", control_log},
};

#define CONTROL_COMMAND_COUNT (sizeof(control_commands) / sizeof(control_commands[0]))

static json_object *control_run(char *line)
{
        char *arg = strchr(line, ' ');

        if (arg != NULL) {
                *arg++ = '\0';
                while (*arg == ' ')
                        arg++;
                if (*arg == '\0')
                        arg = NULL;
        }
        for (size_t i = 0; i < CONTROL_COMMAND_COUNT; i++) {
                if (strcmp(line, control_commands[i].name) == 0)
                        return control_commands[i].run(arg);
        }
        return control_error("unknown command; valid ones are status, clients, workers, reload "
                             "and log LEVEL");
}

static void control_done_cb(struct bufferevent *bev, void *arg)
{
        (void)arg;
        bufferevent_free(bev);
}

static void control_event_cb(struct bufferevent *bev, short what, void *arg)
{
        (void)what;
        (void)arg;
        bufferevent_free(bev);
}

static void control_reply(struct bufferevent *bev, json_object *reply)
{
        const char *text = json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN);

        bufferevent_disable(bev, EV_READ);
        bufferevent_write(bev, text, strlen(text));
        bufferevent_write(bev, "\n", 1);
        json_object_put(reply);
        bufferevent_setcb(bev, NULL, control_done_cb, control_event_cb, NULL);
}

static void control_read_cb(struct bufferevent *bev, void *arg)
{
        struct evbuffer *in = bufferevent_get_input(bev);
        size_t len;
        char *line;

        (void)arg;
        line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (line == NULL) {
                if (evbuffer_get_length(in) > CONTROL_MAX_LINE)
                        control_reply(bev, control_error("command line too long"));
                return;
        }
        if (len > CONTROL_MAX_LINE) {
                control_reply(bev, control_error("command line too long"));
        } else {
                log_debug("control command: %s", line);
                control_reply(bev, control_run(line));
        }
        free(line);
}

/*
 * Returns 1 if the peer on FD is root, runs as the daemon's user, or has the daemon's group as
 * its primary or a supplementary group. The socket's mode already limits who can connect; this
 * also covers a socket in a folder with looser permissions.
 */
static int control_peer_allowed(int fd)
{
        struct ucred cred;
        socklen_t len = sizeof(cred);
        gid_t groups[256];
        socklen_t groups_len = sizeof(groups);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return 0;
        if (cred.uid == 0 || cred.uid == geteuid() || cred.gid == getegid())
                return 1;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &groups_len) < 0)
                return 0;
        for (size_t i = 0; i < groups_len / sizeof(gid_t); i++) {
                if (groups[i] == getegid())
                        return 1;
        }
        log_limited(&control_limit, LOG_LEVEL_WARN,
                    "control connection from uid %d gid %d rejected: not root, the daemon's user "
                    "or a member of its group",
                    (int)cred.uid, (int)cred.gid);
        return 0;
}

static void control_accept_cb(evutil_socket_t fd, short what, void *arg)
{
        struct timeval timeout = {CONTROL_TIMEOUT_S, 0};
        struct bufferevent *bev;
        int conn;

        (void)what;
        (void)arg;
        conn = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (conn < 0) {
                if (errno != EAGAIN && errno != EINTR)
                        log_limited(&control_limit, LOG_LEVEL_WARN,
                                    "accepting a control connection failed: %s", strerror(errno));
                return;
        }
        bev = bufferevent_socket_new(daemon_state.base, conn, BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL) {
                close(conn);
                return;
        }
        bufferevent_setcb(bev, control_read_cb, NULL, control_event_cb, NULL);
        bufferevent_set_timeouts(bev, &timeout, &timeout);
        if (!control_peer_allowed(conn)) {
                control_reply(bev, control_error("permission denied: not root, the daemon's user "
                                                 "or a member of its group"));
                bufferevent_enable(bev, EV_WRITE);
                return;
        }
        bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/*
 * Removes PATH if it is a socket that no process listens on, left by a daemon that died. Returns
 * 0 when PATH is free to bind, or -1 with the reason logged.
 */
static int control_clear_stale(const char *path, const struct sockaddr_un *addr)
{
        struct stat st;
        int fd, connected;

        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                log_error("control socket %s: %s", path, strerror(errno));
                return -1;
        }
        if (!S_ISSOCK(st.st_mode)) {
                log_error("control socket %s exists and is not a socket; remove it or set "
                          "control_socket to another path",
                          path);
                return -1;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        connected = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0;
        close(fd);
        if (connected) {
                log_error("control socket %s is in use by a running incsearchd; stop it or set "
                          "control_socket to another path",
                          path);
                return -1;
        }
        log_info("removing stale control socket %s", path);
        if (unlink(path) < 0 && errno != ENOENT) {
                log_error("cannot remove stale control socket %s: %s", path, strerror(errno));
                return -1;
        }
        return 0;
}

/* Creates the socket's folder when it is missing, as systemd's RuntimeDirectory= would. */
static void control_make_folder(const char *path, uid_t owner, gid_t group)
{
        char copy[sizeof(daemon_state.conf.control_socket)];
        char *folder;

        memset(copy, 0, sizeof(copy));
        memcpy(copy, path, strnlen(path, sizeof(copy) - 1));
        folder = dirname(copy);
        if (mkdir(folder, 0750) == 0) {
                if (chown(folder, owner, group) < 0)
                        log_warn("cannot give %s to uid %d gid %d: %s", folder, (int)owner,
                                 (int)group, strerror(errno));
                log_info("created %s for the control socket", folder);
        }
}

int control_listen(uid_t owner, gid_t group)
{
        struct daemon *d = &daemon_state;
        const char *path = d->conf.control_socket;
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        mode_t old_mask;
        int fd, rc;

        d->control_fd = -1;
        /* The config loader keeps the path under sizeof(sun_path), NUL included. */
        memcpy(addr.sun_path, path, strnlen(path, sizeof(addr.sun_path) - 1));
        control_make_folder(path, owner, group);
        if (control_clear_stale(path, &addr) < 0)
                return -1;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                log_error("cannot create the control socket: %s", strerror(errno));
                return -1;
        }
        /* The umask makes the socket 0660 from the start, so no one connects before chmod. */
        old_mask = umask(0117);
        rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
        umask(old_mask);
        if (rc < 0 || listen(fd, 16) < 0) {
                log_error("cannot listen on control socket %s: %s", path, strerror(errno));
                close(fd);
                return -1;
        }
        if (chown(path, (uid_t)-1, group) < 0)
                log_warn("cannot give control socket %s to group %d: %s", path, (int)group,
                         strerror(errno));
        d->control_event = event_new(d->base, fd, EV_READ | EV_PERSIST, control_accept_cb, NULL);
        if (d->control_event == NULL || event_add(d->control_event, NULL) < 0) {
                close(fd);
                return -1;
        }
        d->control_fd = fd;
        log_info("control socket %s, mode 0660, group %d", path, (int)group);
        return 0;
}

void control_close(void)
{
        struct daemon *d = &daemon_state;

        if (d->control_fd < 0)
                return;
        event_free(d->control_event);
        close(d->control_fd);
        d->control_fd = -1;
        if (unlink(d->conf.control_socket) < 0 && errno != ENOENT)
                log_warn("cannot remove control socket %s: %s", d->conf.control_socket,
                         strerror(errno));
}
