#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <json-c/json.h>

static pid_t harness_runner;

void harness_begin(void)
{
        harness_runner = getpid();
}

void harness_make_dir(char *dir, size_t len, const char *kind)
{
        snprintf(dir, len, "/tmp/incsearchd-run%d-%s-XXXXXX",
                 (int)(harness_runner != 0 ? harness_runner : getpid()), kind);
        ck_assert_msg(mkdtemp(dir) != NULL, "cannot create %s: %s", dir, strerror(errno));
}

unsigned harness_sweep(int keep_dirs)
{
        char shm_prefix[64], dir_prefix[64], command[512];
        unsigned kept = 0;
        struct dirent *entry;
        DIR *d;

        snprintf(shm_prefix, sizeof(shm_prefix), "incsearchd-test-%d-", (int)harness_runner);
        snprintf(dir_prefix, sizeof(dir_prefix), "incsearchd-run%d-", (int)harness_runner);
        d = opendir("/dev/shm");
        while (d != NULL && (entry = readdir(d)) != NULL) {
                char name[300];

                if (strncmp(entry->d_name, shm_prefix, strlen(shm_prefix)) != 0)
                        continue;
                snprintf(name, sizeof(name), "/%s", entry->d_name);
                shm_unlink(name);
        }
        if (d != NULL)
                closedir(d);
        d = opendir("/tmp");
        while (d != NULL && (entry = readdir(d)) != NULL) {
                if (strncmp(entry->d_name, dir_prefix, strlen(dir_prefix)) != 0)
                        continue;
                if (keep_dirs) {
                        kept++;
                        continue;
                }
                snprintf(command, sizeof(command), "rm -rf '/tmp/%s'", entry->d_name);
                if (system(command) != 0)
                        fprintf(stderr, "cannot remove /tmp/%s\n", entry->d_name);
        }
        if (d != NULL)
                closedir(d);
        return kept;
}

int harness_run_shell(const char *command, char *out, size_t len)
{
        char full[1024];
        size_t used = 0;
        FILE *p;
        int status;

        snprintf(full, sizeof(full), "%s 2>&1", command);
        p = popen(full, "r");
        ck_assert_ptr_nonnull(p);
        while (used + 1 < len) {
                size_t n = fread(out + used, 1, len - 1 - used, p);

                if (n == 0)
                        break;
                used += n;
        }
        out[used] = '\0';
        status = pclose(p);
        ck_assert(WIFEXITED(status));
        return WEXITSTATUS(status);
}

const char *harness_build_dir(void)
{
        const char *dir = getenv("INCSEARCHD_BUILD");

        return dir != NULL ? dir : "build";
}

int harness_free_port(void)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sin);
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
        close(fd);
        return ntohs(sin.sin_port);
}

pid_t harness_spawn(const char *program, char *const argv[], const char *log_path)
{
        return harness_spawn_env(program, argv, log_path, NULL);
}

pid_t harness_spawn_env(const char *program, char *const argv[], const char *log_path,
                        const char *const *env)
{
        char path[512];
        pid_t parent = getpid();
        pid_t pid;

        if (program[0] == '/')
                snprintf(path, sizeof(path), "%s", program);
        else
                snprintf(path, sizeof(path), "%s/%s", harness_build_dir(), program);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);

                prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (getppid() != parent)
                        _exit(1);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                        close(fd);
                }
                for (size_t i = 0; env != NULL && env[i] != NULL; i++)
                        putenv((char *)env[i]);
                execv(path, argv);
                fprintf(stderr, "cannot run %s: %s\n", path, strerror(errno));
                _exit(127);
        }
        return pid;
}

int harness_wait_port(int port, int timeout_ms)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

        for (int waited = 0; waited < timeout_ms; waited += 20) {
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                int ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;

                close(fd);
                if (ok)
                        return 0;
                usleep(20000);
        }
        return -1;
}

int harness_stop(pid_t pid)
{
        int status = 0;

        if (pid <= 0)
                return 0;
        kill(pid, SIGTERM);
        for (int i = 0; i < 300; i++) {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return status;
                usleep(10000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return status;
}

ssize_t harness_http_raw(int port, const char *request, char *out, size_t len)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        size_t used = 0;

        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
                close(fd);
                return -1;
        }
        if (write(fd, request, strlen(request)) < 0) {
                close(fd);
                return -1;
        }
        while (used + 1 < len) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                ssize_t n;

                if (poll(&pfd, 1, 5000) <= 0)
                        break;
                n = read(fd, out + used, len - 1 - used);
                if (n <= 0)
                        break;
                used += (size_t)n;
        }
        out[used] = '\0';
        close(fd);
        return (ssize_t)used;
}

int harness_http_get(int port, const char *path, char *body, size_t len)
{
        char request[512], *response = malloc(len + 4096), *start;
        int status = -1;

        ck_assert_ptr_nonnull(response);
        snprintf(request, sizeof(request),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
        if (harness_http_raw(port, request, response, len + 4096) > 0 &&
            sscanf(response, "HTTP/1.%*d %d", &status) == 1) {
                start = strstr(response, "\r\n\r\n");
                snprintf(body, len, "%s", start != NULL ? start + 4 : "");
        }
        free(response);
        return status;
}

static void harness_write_conf(struct harness *h, const struct harness_options *o)
{
        FILE *f = fopen(h->conf_path, "w");

        ck_assert_ptr_nonnull(f);
        /* incsearchd rejects a config file that contains a secret and that others can read. */
        ck_assert_int_eq(fchmod(fileno(f), 0600), 0);
        fprintf(f,
                "[server]\n"
                "listen = 127.0.0.1:%d\n"
                "shm_name = %s\n"
                "control_socket = %s\n"
                "%s"
                "log_level = debug\n"
                "%s\n"
                "[api]\n"
                "url = http://127.0.0.1:%d/search?q={q}&limit=10\n"
                "timeout_ms = %s\n"
                "rate = %s\n"
                "burst = %s\n"
                "%s\n"
                "[workers]\n"
                "workers = %s\n"
                "%s\n",
                h->port, h->shm_name, h->control_path,
                o->extra_server != NULL && strstr(o->extra_server, "max_connections =") != NULL
                    ? ""
                    : "max_connections = 64\n",
                o->extra_server != NULL ? o->extra_server : "", h->api_port,
                o->timeout_ms != NULL ? o->timeout_ms : "2000", o->rate != NULL ? o->rate : "45",
                o->burst != NULL ? o->burst : "8", o->extra_api != NULL ? o->extra_api : "",
                o->workers != NULL ? o->workers : "2",
                o->extra_sections != NULL ? o->extra_sections : "");
        fclose(f);
}

static unsigned harness_instances;

void harness_start(struct harness *h, const struct harness_options *o)
{
        static const struct harness_options defaults;
        char api_listen[64], api_log[128], daemon_log[128];

        if (o == NULL)
                o = &defaults;
        memset(h, 0, sizeof(*h));
        harness_make_dir(h->dir, sizeof(h->dir), "test");
        snprintf(h->conf_path, sizeof(h->conf_path), "%s/incsearchd.conf", h->dir);
        /* Two instances in one test need two segments. */
        snprintf(h->shm_name, sizeof(h->shm_name), "/incsearchd-test-%d-%d-%u",
                 (int)(harness_runner != 0 ? harness_runner : getpid()), (int)getpid(),
                 harness_instances++);
        snprintf(h->control_path, sizeof(h->control_path), "%s/control.sock", h->dir);
        snprintf(api_log, sizeof(api_log), "%s/demo-api.log", h->dir);
        snprintf(daemon_log, sizeof(daemon_log), "%s/incsearchd.log", h->dir);

        if (o->shared_api != NULL)
                h->api_port = o->shared_api->api_port;
        /* A port found free can be taken before it is bound, so each start gets three tries. */
        for (int attempt = 0; attempt < 3 && h->api_port == 0; attempt++) {
                h->api_port = harness_free_port();
                snprintf(api_listen, sizeof(api_listen), "127.0.0.1:%d", h->api_port);
                char *api_argv[] = {"incsearch-demo-api",
                                    "-l",
                                    api_listen,
                                    "-r",
                                    (char *)(o->api_rate != NULL ? o->api_rate : "50"),
                                    "-b",
                                    (char *)(o->api_burst != NULL ? o->api_burst : "10"),
                                    o->faults ? "-F" : NULL,
                                    NULL};
                h->api_pid = harness_spawn("incsearch-demo-api", api_argv, api_log);
                if (harness_wait_port(h->api_port, 5000) < 0) {
                        harness_stop(h->api_pid);
                        h->api_pid = 0;
                        h->api_port = 0;
                }
        }
        if (h->api_port == 0)
                harness_dump_log(h, "demo-api.log");
        ck_assert_msg(h->api_port != 0, "the demo API did not start");

        for (int attempt = 0; attempt < 3 && h->daemon_pid == 0; attempt++) {
                h->port = harness_free_port();
                harness_write_conf(h, o);
                char *daemon_argv[] = {"incsearchd", "-c", h->conf_path, NULL};
                h->daemon_pid =
                    harness_spawn_env("incsearchd", daemon_argv, daemon_log, o->daemon_env);
                if (harness_wait_port(h->port, 5000) < 0) {
                        harness_stop(h->daemon_pid);
                        h->daemon_pid = 0;
                }
        }
        if (h->daemon_pid == 0)
                harness_dump_log(h, "incsearchd.log");
        ck_assert_msg(h->daemon_pid != 0, "incsearchd did not start");
}

void harness_dump_log(const struct harness *h, const char *name)
{
        char path[256], line[1024];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", h->dir, name);
        f = fopen(path, "r");
        if (f == NULL)
                return;
        fprintf(stderr, "---- %s ----\n", path);
        while (fgets(line, sizeof(line), f) != NULL)
                fputs(line, stderr);
        fclose(f);
}

void harness_stop_all(struct harness *h)
{
        char command[160];

        harness_stop(h->daemon_pid);
        if (h->api_pid != 0)
                harness_stop(h->api_pid);
        h->daemon_pid = 0;
        h->api_pid = 0;
        /* A daemon a test killed with SIGKILL leaves its segment behind. */
        if (h->shm_name[0] != '\0')
                shm_unlink(h->shm_name);
        if (h->dir[0] != '\0' && getenv("INCSEARCHD_KEEP_LOGS") == NULL) {
                snprintf(command, sizeof(command), "rm -rf '%s'", h->dir);
                if (system(command) != 0)
                        fprintf(stderr, "cannot remove %s\n", h->dir);
        }
}

long long harness_api_stat(const struct harness *h, const char *name)
{
        char body[1024];
        json_object *stats, *value;
        long long n = -1;

        ck_assert_int_eq(harness_http_get(h->api_port, "/stats", body, sizeof(body)), 200);
        stats = json_tokener_parse(body);
        ck_assert_ptr_nonnull(stats);
        if (json_object_object_get_ex(stats, name, &value))
                n = json_object_get_int64(value);
        json_object_put(stats);
        return n;
}

unsigned harness_children(pid_t parent, pid_t *pids, unsigned max)
{
        char path[64];
        unsigned n = 0;
        FILE *f;
        int pid;

        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)parent, (int)parent);
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        while (n < max && fscanf(f, "%d", &pid) == 1)
                pids[n++] = pid;
        fclose(f);
        return n;
}

const char *harness_json_string(json_object *obj, const char *key)
{
        json_object *value;

        if (!json_object_object_get_ex(obj, key, &value))
                return "";
        return json_object_get_string(value);
}

long long harness_json_int(json_object *obj, const char *key)
{
        json_object *value;

        if (!json_object_object_get_ex(obj, key, &value))
                return -1;
        return json_object_get_int64(value);
}

/* Connects to 127.0.0.1:PORT with a 2 s receive timeout. Returns the socket or -1. */
static int harness_connect(int port)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct timeval tv = {.tv_sec = 2};
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        if (fd < 0)
                return -1;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

int harness_redis_command(const struct harness_redis *r, const char *const argv[], char *out,
                          size_t len)
{
        char request[4096], reply[4096];
        size_t used = 0, argc = 0;
        ssize_t n;
        char *end;
        int fd;

        while (argv[argc] != NULL)
                argc++;
        used = (size_t)snprintf(request, sizeof(request), "*%zu\r\n", argc);
        for (size_t i = 0; i < argc && used < sizeof(request); i++)
                used += (size_t)snprintf(request + used, sizeof(request) - used, "$%zu\r\n%s\r\n",
                                         strlen(argv[i]), argv[i]);
        ck_assert_uint_lt(used, sizeof(request));
        fd = harness_connect(r->port);
        if (fd < 0)
                return -1;
        if (write(fd, request, used) != (ssize_t)used) {
                close(fd);
                return -1;
        }
        n = read(fd, reply, sizeof(reply) - 1);
        close(fd);
        if (n <= 0)
                return -1;
        reply[n] = '\0';
        end = strstr(reply, "\r\n");
        if (end == NULL)
                return -1;
        *end = '\0';
        /* A bulk string's text follows its length line. */
        if (reply[0] == '$' && reply[1] != '-') {
                char *text = end + 2, *text_end = strstr(text, "\r\n");

                if (text_end != NULL)
                        *text_end = '\0';
                snprintf(out, len, "%s", text);
        } else {
                snprintf(out, len, "%s", reply);
        }
        return 0;
}

void harness_redis_start(struct harness_redis *r)
{
        char log[128], port[16];
        const char *const ping[] = {"PING", NULL};
        char answer[64];

        if (r->dir[0] == '\0') {
                harness_make_dir(r->dir, sizeof(r->dir), "redis");
        }
        snprintf(log, sizeof(log), "%s/redis.log", r->dir);
        for (int attempt = 0; attempt < 3 && r->pid == 0; attempt++) {
                int reuse = r->port != 0;

                if (!reuse)
                        r->port = harness_free_port();
                snprintf(port, sizeof(port), "%d", r->port);
                char *argv[] = {"redis-server",
                                "--port",
                                port,
                                "--bind",
                                "127.0.0.1",
                                "--save",
                                "",
                                "--appendonly",
                                "no",
                                "--dir",
                                r->dir,
                                "--daemonize",
                                "no",
                                r->password != NULL ? "--requirepass" : NULL,
                                (char *)r->password,
                                NULL};
                r->pid = harness_spawn_env("/usr/bin/redis-server", argv, log, NULL);
                for (int waited = 0; waited < 5000; waited += 20) {
                        /* With a password set, a running server replies NOAUTH. */
                        if (harness_redis_command(r, ping, answer, sizeof(answer)) == 0 &&
                            (strcmp(answer, "+PONG") == 0 || strncmp(answer, "-NOAUTH", 7) == 0)) {
                                snprintf(answer, sizeof(answer), "+PONG");
                                break;
                        }
                        answer[0] = '\0';
                        usleep(20000);
                }
                if (strcmp(answer, "+PONG") != 0) {
                        harness_stop(r->pid);
                        r->pid = 0;
                        if (!reuse)
                                r->port = 0;
                }
        }
        ck_assert_msg(r->pid != 0, "redis-server did not start; see %s", log);
        if (r->password != NULL)
                snprintf(r->url, sizeof(r->url), "redis://:%s@127.0.0.1:%d/0", r->password,
                         r->port);
        else
                snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d/0", r->port);
}

void harness_redis_stop(struct harness_redis *r)
{
        harness_stop(r->pid);
        r->pid = 0;
}

void harness_redis_free(struct harness_redis *r)
{
        char command[160];

        harness_redis_stop(r);
        if (r->dir[0] != '\0' && getenv("INCSEARCHD_KEEP_LOGS") == NULL) {
                snprintf(command, sizeof(command), "rm -rf '%s'", r->dir);
                if (system(command) != 0)
                        fprintf(stderr, "cannot remove %s\n", r->dir);
        }
        r->dir[0] = '\0';
}

void harness_make_cert(const char *cert_path, const char *key_path)
{
        char command[1024];

        snprintf(command, sizeof(command),
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                 "-days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
                 "-keyout '%s' -out '%s' 2>/dev/null",
                 key_path, cert_path);
        ck_assert_msg(system(command) == 0, "openssl could not make a certificate: %s", command);
}
