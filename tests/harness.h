/* Helpers for tests that run the real programs on free loopback ports. */
#ifndef INCSEARCHD_HARNESS_H
#define INCSEARCHD_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#include <json-c/json.h>

/* Returns the build folder holding the programs: $INCSEARCHD_BUILD, or "build". */
const char *harness_build_dir(void);

/*
 * Records the test runner's pid, which names every temporary folder and shared-memory segment
 * of this run, so that harness_sweep finds them. Call it before the tests run.
 */
void harness_begin(void);

/*
 * Creates a new folder /tmp/incsearchd-runPID-KIND-XXXXXX into DIR (of LEN bytes), failing the
 * test if it cannot.
 */
void harness_make_dir(char *dir, size_t len, const char *kind);

/*
 * Removes the shared-memory segments this run left behind (a test that fails skips its
 * teardown) and, unless KEEP_DIRS, its temporary folders. Returns how many folders it kept.
 */
unsigned harness_sweep(int keep_dirs);

/* Runs a shell COMMAND and returns its exit status, with stdout and stderr together in OUT. */
int harness_run_shell(const char *command, char *out, size_t len);

/* Returns a TCP port on 127.0.0.1 that was free a moment ago. */
int harness_free_port(void);

/*
 * Starts PROGRAM (a file in the build folder) with ARGV (NULL-terminated, argv[0] included),
 * stderr and stdout appended to LOG_PATH. The child gets SIGTERM if the test process dies.
 */
pid_t harness_spawn(const char *program, char *const argv[], const char *log_path);

/* Like harness_spawn, with ENV ("NAME=value" strings, NULL-terminated) added to the child's. */
pid_t harness_spawn_env(const char *program, char *const argv[], const char *log_path,
                        const char *const *env);

/* Waits up to TIMEOUT_MS for a TCP connect to 127.0.0.1:PORT to succeed. Returns 0 or -1. */
int harness_wait_port(int port, int timeout_ms);

/* Sends SIGTERM, waits up to 3 s, then SIGKILL. Returns the wait status. */
int harness_stop(pid_t pid);

/* Fetches http://127.0.0.1:PORT/PATH into BODY (NUL-terminated). Returns the HTTP status or -1. */
int harness_http_get(int port, const char *path, char *body, size_t len);

/* Sends raw REQUEST and reads the whole response into OUT. Returns bytes read or -1. */
ssize_t harness_http_raw(int port, const char *request, char *out, size_t len);

/* A demo API and an incsearchd in front of it, each on its own free port. */
struct harness {
        pid_t api_pid; /* 0 when the demo API belongs to another harness */
        pid_t daemon_pid;
        int api_port;
        int port;
        char dir[64]; /* temporary folder for the config and the logs */
        char conf_path[128];
        char shm_name[64];
        char control_path[128]; /* the control socket, in dir */
};

struct harness_options {
        const char *api_rate;             /* demo API's -r, default "50" */
        const char *api_burst;            /* demo API's -b, default "10" */
        const char *rate;                 /* incsearchd's [api] rate, default "45" */
        const char *burst;                /* default "8" */
        const char *workers;              /* default "2" */
        const char *timeout_ms;           /* [api] timeout_ms, default "2000" */
        const char *extra_server;         /* more [server] lines */
        const char *extra_api;            /* more [api] lines */
        const char *extra_sections;       /* more sections at the end, such as "[cache]\n..." */
        int faults;                       /* start the demo API with -F */
        const char *const *daemon_env;    /* "NAME=value" strings for incsearchd, NULL-terminated */
        const struct harness *shared_api; /* use this harness's demo API instead of starting one */
};

/* Starts both programs and waits for their ports; fails the test if either does not come up. */
void harness_start(struct harness *h, const struct harness_options *options);

/* Stops both programs. */
void harness_stop_all(struct harness *h);

/* A redis-server from Debian on a free loopback port, with no persistence. */
struct harness_redis {
        pid_t pid;
        int port;
        char dir[64];
        const char *password; /* set before the start: --requirepass, and in url */
        char url[128];        /* "redis://[:PASSWORD@]127.0.0.1:PORT/0", for redis_url */
};

/*
 * Starts redis-server and waits until it answers PING; fails the test if it does not. Starting
 * it again after harness_redis_stop reuses the port, so that a daemon configured with the URL
 * finds it again.
 */
void harness_redis_start(struct harness_redis *r);

/* Stops the server (SIGTERM) and keeps the port and folder for a later start. */
void harness_redis_stop(struct harness_redis *r);

/* Stops the server and removes its folder. */
void harness_redis_free(struct harness_redis *r);

/* Sends one command (its words in ARGV, NULL-terminated) and stores the reply line in OUT. */
int harness_redis_command(const struct harness_redis *r, const char *const argv[], char *out,
                          size_t len);

/*
 * Writes a new self-signed certificate for 127.0.0.1 and localhost, and its key, with the
 * openssl command. Fails the test if openssl does.
 */
void harness_make_cert(const char *cert_path, const char *key_path);

/* Reads a number from the demo API's /stats. */
long long harness_api_stat(const struct harness *h, const char *name);

/* Stores up to MAX pids of PARENT's children, from /proc, and returns how many there are. */
unsigned harness_children(pid_t parent, pid_t *pids, unsigned max);

/* Returns the string member KEY of OBJ, or "" when it is missing. */
const char *harness_json_string(json_object *obj, const char *key);

/* Returns the integer member KEY of OBJ, or -1 when it is missing. */
long long harness_json_int(json_object *obj, const char *key);

/* Prints a log file to stderr, for a failing test. */
void harness_dump_log(const struct harness *h, const char *name);

#endif
