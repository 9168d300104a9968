/*
 * incsearchctl: the control tool for incsearchd. It sends one command over the daemon's control
 * socket, reads the JSON reply and prints it for people, or as it is with --json.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "conf.h"
#include "version.h"

#define CTL_MAX_REPLY (64u << 20) /* bytes; a clients list of 10000 entries is about 1.5 MB */

struct ctl_command {
        const char *name;
        int needs_arg;
        void (*print)(json_object *reply);
};

static void usage(FILE *out)
{
        fprintf(out,
                "usage: incsearchctl [-hV] [--json] [-s socket] command\n"
                "  -s socket  control socket of incsearchd (default %s)\n"
                "  --json     print the daemon's reply as one JSON object\n"
                "commands:\n"
                "  status       counters, bucket and latency percentiles\n"
                "  clients      one line per WebSocket client\n"
                "  workers      one line per worker process\n"
                "  reload       re-read the configuration file\n"
                "  log LEVEL    set the log level (error, warn, info, debug) in every process\n",
                CONF_DEFAULT_CONTROL_SOCKET);
}

static json_object *ctl_get(json_object *obj, const char *path)
{
        char key[64];
        const char *dot;

        while ((dot = strchr(path, '.')) != NULL) {
                snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
                if (!json_object_object_get_ex(obj, key, &obj))
                        return NULL;
                path = dot + 1;
        }
        return json_object_object_get_ex(obj, path, &obj) ? obj : NULL;
}

static uint64_t ctl_u64(json_object *obj, const char *path)
{
        return (uint64_t)json_object_get_int64(ctl_get(obj, path));
}

static double ctl_double(json_object *obj, const char *path)
{
        return json_object_get_double(ctl_get(obj, path));
}

static const char *ctl_string(json_object *obj, const char *path)
{
        json_object *value = ctl_get(obj, path);

        return value != NULL ? json_object_get_string(value) : "";
}

/* Formats milliseconds as "3d 04h 05m", "2h 03m 04s", "5m 06s" or "7.2s". */
static void ctl_duration(uint64_t ms, char *out, size_t len)
{
        uint64_t s = ms / 1000;

        if (s >= 86400)
                snprintf(out, len, "%" PRIu64 "d %02" PRIu64 "h %02" PRIu64 "m", s / 86400,
                         s / 3600 % 24, s / 60 % 60);
        else if (s >= 3600)
                snprintf(out, len, "%" PRIu64 "h %02" PRIu64 "m %02" PRIu64 "s", s / 3600,
                         s / 60 % 60, s % 60);
        else if (s >= 60)
                snprintf(out, len, "%" PRIu64 "m %02" PRIu64 "s", s / 60, s % 60);
        else
                snprintf(out, len, "%.1fs", (double)ms / 1000);
}

static void ctl_print_latency(json_object *reply, const char *label, const char *key)
{
        char path[96];
        json_object *l;

        snprintf(path, sizeof(path), "latency.%s", key);
        l = ctl_get(reply, path);
        printf("  %-20s %8" PRIu64 " %9.1f %9.1f %9.1f %9.1f\n", label, ctl_u64(l, "count"),
               ctl_double(l, "p50_ms"), ctl_double(l, "p90_ms"), ctl_double(l, "p99_ms"),
               ctl_double(l, "max_ms"));
}

/* The shared rate limit's line, shown with rate_limit_backend = redis. */
static void ctl_print_redis(json_object *r)
{
        json_object *up = ctl_get(r, "redis.up");

        printf("redis     %s, fallback %s%s, %" PRIu64 " tokens granted, %" PRIu64
               " dropped, %" PRIu64 " errors, %" PRIu64 " switches\n",
               up != NULL && json_object_get_boolean(up) ? "up" : "DOWN",
               ctl_string(r, "redis.fallback"),
               json_object_get_boolean(ctl_get(r, "redis.fallback_active")) ? " (active)" : "",
               ctl_u64(r, "redis.tokens_granted"), ctl_u64(r, "redis.tokens_dropped"),
               ctl_u64(r, "redis.errors"), ctl_u64(r, "redis.switches"));
}

/* The shared result cache's line. */
static void ctl_print_shared_cache(json_object *r)
{
        const char *state = ctl_string(r, "shared_cache.state");

        if (strcmp(state, "off") == 0) {
                printf("shared    off\n");
                return;
        }
        printf("shared    Redis %s, %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64
               " errors, %" PRIu64 " bad values, %" PRIu64 " skipped, %" PRIu64 " stored\n",
               state, ctl_u64(r, "shared_cache.hits"), ctl_u64(r, "shared_cache.misses"),
               ctl_u64(r, "shared_cache.errors"), ctl_u64(r, "shared_cache.bad_values"),
               ctl_u64(r, "shared_cache.skipped"), ctl_u64(r, "shared_cache.stored"));
}

/* The start of the bucket line: which bucket gives the tokens, and its size. */
static void ctl_print_bucket(json_object *r)
{
        const char *source = ctl_string(r, "bucket.source");

        if (strcmp(source, "redis") == 0)
                printf("bucket    shared in Redis, rate %.3f/s, burst %" PRIu64 ", ",
                       ctl_double(r, "bucket.rate"), ctl_u64(r, "bucket.burst"));
        else if (strcmp(source, "none") == 0)
                printf("bucket    none while Redis is down (redis_fallback closed), ");
        else
                printf("bucket    %.2f of %" PRIu64 " tokens, rate %.3f/s%s, ",
                       ctl_double(r, "bucket.tokens"), ctl_u64(r, "bucket.burst"),
                       ctl_double(r, "bucket.rate"),
                       strcmp(source, "local_share") == 0 ? " (local share while Redis is down)"
                                                          : "");
}

static void ctl_print_status(json_object *r)
{
        char uptime[32];
        uint64_t pause_ms = ctl_u64(r, "bucket.pause_left_ms");

        ctl_duration(ctl_u64(r, "uptime_ms"), uptime, sizeof(uptime));
        printf("incsearchd %s, pid %" PRIu64 ", up %s\n", ctl_string(r, "version"),
               ctl_u64(r, "pid"), uptime);
        printf("workers   %" PRIu64 " of %" PRIu64 " alive, %" PRIu64 " restarts\n",
               ctl_u64(r, "workers.alive"), ctl_u64(r, "workers.configured"),
               ctl_u64(r, "workers.restarts"));
        printf("clients   %" PRIu64 " now, %" PRIu64 " peak, %" PRIu64 " total\n",
               ctl_u64(r, "clients.now"), ctl_u64(r, "clients.peak"), ctl_u64(r, "clients.total"));
        printf("queries   %" PRIu64 " received, %" PRIu64 " superseded, %" PRIu64
               " too long, %" PRIu64 " pending\n",
               ctl_u64(r, "queries.received"), ctl_u64(r, "queries.superseded"),
               ctl_u64(r, "queries.too_long"), ctl_u64(r, "queries.pending"));
        printf("api       %" PRIu64 " calls, %" PRIu64 " cache hits, %" PRIu64
               " coalesced, %" PRIu64 " requeued\n",
               ctl_u64(r, "api.calls"), ctl_u64(r, "api.cache_hits"), ctl_u64(r, "api.coalesced"),
               ctl_u64(r, "api.requeued"));
        printf("errors    %" PRIu64 " timeouts, %" PRIu64 " 5xx, %" PRIu64 " 429s, %" PRIu64
               " bad bodies, %" PRIu64 " other\n",
               ctl_u64(r, "api.errors.timeout"), ctl_u64(r, "api.errors.http_5xx"),
               ctl_u64(r, "api.errors.http_429"), ctl_u64(r, "api.errors.bad_body"),
               ctl_u64(r, "api.errors.other"));
        printf("results   %" PRIu64 " delivered, %" PRIu64 " stale dropped\n",
               ctl_u64(r, "results.delivered"), ctl_u64(r, "results.stale_dropped"));
        ctl_print_bucket(r);
        if (pause_ms >= 10000)
                printf("paused for %.0f s at the API's request\n", (double)pause_ms / 1000);
        else if (pause_ms > 0)
                printf("paused for %" PRIu64 " ms at the API's request\n", pause_ms);
        else
                printf("not paused\n");
        if (ctl_get(r, "redis") != NULL)
                ctl_print_redis(r);
        ctl_print_shared_cache(r);
        printf("latency (ms)              count       p50       p90       p99       max\n");
        ctl_print_latency(r, "queue wait", "queue_wait");
        ctl_print_latency(r, "API call", "api");
        ctl_print_latency(r, "keystroke to result", "keystroke_to_result");
}

static void ctl_print_clients(json_object *r)
{
        json_object *list = ctl_get(r, "clients");
        size_t n = json_object_array_length(list);

        printf("%-8s %-40s %12s %8s %12s %s\n", "id", "address", "connected", "queries",
               "last query", "state");
        for (size_t i = 0; i < n; i++) {
                json_object *c = json_object_array_get_idx(list, i);
                char connected[32], last[32] = "-";

                ctl_duration(ctl_u64(c, "connected_ms"), connected, sizeof(connected));
                if (ctl_get(c, "last_query_ms") != NULL) {
                        ctl_duration(ctl_u64(c, "last_query_ms"), last, sizeof(last));
                        strncat(last, " ago", sizeof(last) - strlen(last) - 1);
                }
                printf("%-8" PRIu64 " %-40s %12s %8" PRIu64 " %12s %s\n", ctl_u64(c, "id"),
                       ctl_string(c, "address"), connected, ctl_u64(c, "queries"), last,
                       ctl_string(c, "state"));
        }
        if (ctl_u64(r, "left_out") > 0)
                printf("(%" PRIu64 " more clients not listed)\n", ctl_u64(r, "left_out"));
}

static void ctl_print_workers(json_object *r)
{
        json_object *list = ctl_get(r, "workers");
        size_t n = json_object_array_length(list);

        printf("%-6s %-8s %-11s %10s %8s\n", "worker", "pid", "state", "requests", "restarts");
        for (size_t i = 0; i < n; i++) {
                json_object *w = json_object_array_get_idx(list, i);

                printf("%-6" PRIu64 " %-8" PRIu64 " %-11s %10" PRIu64 " %8" PRIu64 "\n",
                       ctl_u64(w, "index"), ctl_u64(w, "pid"), ctl_string(w, "state"),
                       ctl_u64(w, "requests"), ctl_u64(w, "restarts"));
        }
}

static void ctl_print_message(json_object *r)
{
        printf("%s\n", ctl_string(r, "message"));
}

static void ctl_print_log(json_object *r)
{
        printf("log level %s\n", ctl_string(r, "log_level"));
}

static const struct ctl_command ctl_commands[] = {
    {"status", 0, ctl_print_status},   {"clients", 0, ctl_print_clients},
    {"workers", 0, ctl_print_workers}, {"reload", 0, ctl_print_message},
    {"log", 1, ctl_print_log},
};

#define CTL_COMMAND_COUNT (sizeof(ctl_commands) / sizeof(ctl_commands[0]))

/* Connects to PATH. Exits with status 1 and one line saying why when that fails. */
static int ctl_connect(const char *path)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(addr.sun_path)) {
                fprintf(stderr, "incsearchctl: socket path %s is too long: at most %zu bytes\n",
                        path, sizeof(addr.sun_path) - 1);
                exit(1);
        }
        memcpy(addr.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                fprintf(stderr, "incsearchctl: socket: %s\n", strerror(errno));
                exit(1);
        }
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
                return fd;
        if (errno == ENOENT || errno == ECONNREFUSED)
                fprintf(stderr,
                        "incsearchctl: incsearchd is not running (nothing listens on %s); start "
                        "it or pass its control_socket with -s\n",
                        path);
        else if (errno == EACCES)
                fprintf(stderr,
                        "incsearchctl: permission denied on %s; run as root or as a member of the "
                        "daemon's group\n",
                        path);
        else
                fprintf(stderr, "incsearchctl: cannot connect to %s: %s\n", path, strerror(errno));
        exit(1);
}

/* Sends LINE and reads the reply until the daemon closes. Returns it parsed, or exits. */
static json_object *ctl_request(int fd, const char *line)
{
        size_t used = 0, cap = 65536;
        char *buf = malloc(cap);
        json_object *reply;
        ssize_t n;

        if (buf == NULL || write(fd, line, strlen(line)) < 0 || write(fd, "\n", 1) < 0) {
                fprintf(stderr, "incsearchctl: cannot send the command: %s\n", strerror(errno));
                exit(1);
        }
        while ((n = read(fd, buf + used, cap - used - 1)) > 0) {
                used += (size_t)n;
                if (used + 1 == cap) {
                        if (cap >= CTL_MAX_REPLY) {
                                fprintf(stderr, "incsearchctl: reply larger than %u bytes\n",
                                        CTL_MAX_REPLY);
                                exit(1);
                        }
                        cap *= 2;
                        buf = realloc(buf, cap);
                        if (buf == NULL) {
                                fprintf(stderr, "incsearchctl: out of memory\n");
                                exit(1);
                        }
                }
        }
        if (n < 0) {
                fprintf(stderr, "incsearchctl: reading the reply failed: %s\n", strerror(errno));
                exit(1);
        }
        buf[used] = '\0';
        reply = json_tokener_parse(buf);
        if (reply == NULL || !json_object_is_type(reply, json_type_object)) {
                fprintf(stderr, "incsearchctl: invalid reply from incsearchd: %.200s\n", buf);
                exit(1);
        }
        free(buf);
        return reply;
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
            {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
        const char *path = CONF_DEFAULT_CONTROL_SOCKET;
        const struct ctl_command *command = NULL;
        char line[256];
        json_object *reply, *ok;
        int json = 0, opt, fd, status;

        while ((opt = getopt_long(argc, argv, "hjs:V", options, NULL)) != -1) {
                switch (opt) {
                case 'j':
                        json = 1;
                        break;
                case 's':
                        path = optarg;
                        break;
                case 'V':
                        printf("incsearchctl %s\n", INCSEARCHD_VERSION);
                        return 0;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (optind == argc) {
                usage(stderr);
                return 2;
        }
        for (size_t i = 0; i < CTL_COMMAND_COUNT; i++) {
                if (strcmp(argv[optind], ctl_commands[i].name) == 0)
                        command = &ctl_commands[i];
        }
        if (command == NULL) {
                fprintf(stderr,
                        "incsearchctl: unknown command %s; valid ones are status, clients, "
                        "workers, reload and log LEVEL\n",
                        argv[optind]);
                return 2;
        }
        if (argc - optind != 1 + command->needs_arg) {
                fprintf(stderr, "incsearchctl: %s takes %s\n", command->name,
                        command->needs_arg ? "one argument: error, warn, info or debug"
                                           : "no argument");
                return 2;
        }
        snprintf(line, sizeof(line), "%s%s%.200s", command->name, command->needs_arg ? " " : "",
                 command->needs_arg ? argv[optind + 1] : "");

        fd = ctl_connect(path);
        reply = ctl_request(fd, line);
        close(fd);
        ok = ctl_get(reply, "ok");
        status = ok != NULL && json_object_get_boolean(ok) ? 0 : 1;
        if (json)
                printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
        else if (status != 0)
                fprintf(stderr, "incsearchctl: %s failed:\n%s\n", command->name,
                        ctl_string(reply, "error"));
        else
                command->print(reply);
        json_object_put(reply);
        return status;
}
