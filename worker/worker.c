/*
 * incsearchd-worker: takes tokens from the global bucket and the oldest pending query from
 * shared memory, calls the API and sends the reply to the daemon. The daemon starts it with
 * the socket to itself as a file descriptor.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "conf.h"
#include "ipc.h"
#include "log.h"
#include "reply.h"
#include "shm.h"
#include "slot.h"

struct worker_state {
        struct conf conf;
        struct shm shm;
        struct api api;
        unsigned index;
        int fd;
        char *query; /* max_query_bytes */
        enum ipc_status last_status;
        uint64_t failures; /* consecutive failed calls, for logging once per episode */
};

static void worker_read_conf(struct worker_state *w);

static void worker_sleep_ns(uint64_t ns)
{
        struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ULL),
                              .tv_nsec = (long)(ns % 1000000000ULL)};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Logs the first failure of a run of failures and the recovery after it, not every call. */
static void worker_log_outcome(struct worker_state *w, const struct slot_job *job,
                               enum ipc_status status, const char *message)
{
        if (status == IPC_STATUS_OK) {
                if (w->failures > 0)
                        log_info("API calls succeed again after %" PRIu64 " failures", w->failures);
                w->failures = 0;
                return;
        }
        if (w->failures++ == 0 || status != w->last_status)
                log_warn("API call for slot %u seq %" PRIu64 " failed: %s", job->slot, job->seq,
                         message);
        else
                log_debug("API call for slot %u seq %" PRIu64 " failed: %s", job->slot, job->seq,
                          message);
}

/* Counts a failed call by kind, from the status and the HTTP code of the response, if any. */
static void worker_count_error(struct worker_state *w, enum ipc_status status)
{
        long http = 0;

        shm_count(&w->shm, api_errors);
        curl_easy_getinfo(w->api.curl, CURLINFO_RESPONSE_CODE, &http);
        if (status == IPC_STATUS_TIMEOUT)
                shm_count(&w->shm, api_timeouts);
        else if (http == 429)
                shm_count(&w->shm, api_429);
        else if (http >= 500 && http <= 599)
                shm_count(&w->shm, api_5xx);
        else if (http >= 200 && http <= 299)
                shm_count(&w->shm, api_bad_body);
        else
                shm_count(&w->shm, api_failed);
}

static void worker_handle(struct worker_state *w, const struct slot_job *job)
{
        struct ipc_header h = {.magic = IPC_MAGIC, .type = IPC_RESULT};
        const char *error_code = NULL;
        char message[256];
        enum ipc_status status;
        uint64_t start = shm_now_ns(), took;
        size_t len;
        char *body;

        shm_count(&w->shm, api_calls);
        atomic_fetch_add_explicit(&w->shm.header->workers[w->index].requests, 1,
                                  memory_order_relaxed);
        status =
            api_call(&w->api, job->query, job->query_len, &error_code, message, sizeof(message));
        took = shm_now_ns() - start;
        histogram_record(&w->shm.header->api_time, took / 1000);
        if (status != IPC_STATUS_OK)
                worker_count_error(w, status);
        worker_log_outcome(w, job, status, message);
        w->last_status = status;
        log_debug("slot %u seq %" PRIu64 ": API call took %.1f ms, status %d", job->slot, job->seq,
                  (double)took / 1e6, (int)status);

        if (status == IPC_STATUS_OK)
                body = reply_results((int64_t)job->seq, job->query, job->query_len, w->api.body,
                                     w->api.body_len, &len);
        else
                body = reply_error((int64_t)job->seq, job->query, job->query_len, error_code,
                                   message, &len);
        if (body == NULL)
                log_fatal("out of memory building the reply for slot %u", job->slot);

        h.length = (uint32_t)len;
        h.slot = job->slot;
        h.generation = job->generation;
        h.status = status;
        h.seq = job->seq;
        h.api_us = took / 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(took / 1000);
        if (ipc_send(w->fd, &h, body) < 0)
                log_fatal("cannot send the result to the daemon: %s", strerror(errno));
        free(body);

        shm_lock(&w->shm);
        w->shm.header->workers[w->index].busy = 0;
        shm_unlock(&w->shm);
}

/* Waits for a token and a pending query. Returns 1 with JOB filled, or 0 if nothing is pending. */
static int worker_take(struct worker_state *w, struct slot_job *job)
{
        struct shm_worker *me = &w->shm.header->workers[w->index];

        for (;;) {
                uint64_t now = shm_now_ns(), wait_ns = 0;
                enum slot_take_result r;

                shm_lock(&w->shm);
                r = slot_take(&w->shm, now, job, &wait_ns);
                if (r == SLOT_TAKE_OK) {
                        me->slot = job->slot;
                        me->generation = job->generation;
                        me->seq = job->seq;
                        me->busy = 1;
                }
                shm_unlock(&w->shm);

                if (r == SLOT_TAKE_OK) {
                        histogram_record(
                            &w->shm.header->queue_wait,
                            now > job->pending_since_ns ? (now - job->pending_since_ns) / 1000 : 0);
                        return 1;
                }
                if (r == SLOT_TAKE_EMPTY)
                        return 0;
                worker_sleep_ns(wait_ns);
        }
}

/*
 * Applies a configuration the daemon sent since the last call (a reload or a log level change),
 * between API calls. Settings that need a restart never differ: the daemon keeps their values.
 */
static void worker_apply_conf(struct worker_state *w)
{
        struct pollfd pfd = {.fd = w->fd, .events = POLLIN};

        while (poll(&pfd, 1, 0) == 1) {
                worker_read_conf(w);
                log_level = w->conf.log_level;
                api_free(&w->api);
                if (api_init(&w->api, &w->conf) < 0)
                        log_fatal("cannot set up libcurl with the reloaded configuration");
                log_info("configuration applied: API rate %" PRIu64 ".%03" PRIu64
                         "/s burst %u, timeout %u ms, log level %s",
                         w->conf.rate_milli / 1000, w->conf.rate_milli % 1000, w->conf.burst,
                         w->conf.api_timeout_ms, log_level_name(log_level));
        }
}

static void worker_run(struct worker_state *w)
{
        struct slot_job job = {.query = w->query};

        for (;;) {
                if (sem_wait(&w->shm.header->work) < 0) {
                        if (errno == EINTR)
                                continue;
                        log_fatal("waiting for work failed: %s", strerror(errno));
                }
                worker_apply_conf(w);
                if (worker_take(w, &job))
                        worker_handle(w, &job);
        }
}

/* Reads the configuration that the daemon sends first on the socket. */
static void worker_read_conf(struct worker_state *w)
{
        struct ipc_header h;

        errno = 0;
        if (ipc_read_full(w->fd, &h, sizeof(h)) < 0)
                log_fatal("cannot read the configuration from the daemon: %s",
                          errno != 0 ? strerror(errno) : "end of file");
        if (h.magic != IPC_MAGIC || h.type != IPC_CONF || h.length != sizeof(w->conf))
                log_fatal("invalid configuration message from the daemon (type %u, length %u); "
                          "the daemon and worker binaries must come from the same build",
                          h.type, h.length);
        if (ipc_read_full(w->fd, &w->conf, sizeof(w->conf)) < 0)
                log_fatal("cannot read the configuration from the daemon");
}

static void usage(void)
{
        fprintf(stderr,
                "usage: incsearchd-worker -i index -f fd\n"
                "incsearchd starts its workers itself; there is no need to run one by hand.\n");
        exit(1);
}

int main(int argc, char **argv)
{
        struct worker_state w = {.fd = -1};
        char errors[4096], role[32];
        struct stat st;
        int opt;

        while ((opt = getopt(argc, argv, "i:f:")) != -1) {
                switch (opt) {
                case 'i':
                        w.index = (unsigned)atoi(optarg);
                        break;
                case 'f':
                        w.fd = atoi(optarg);
                        break;
                default:
                        usage();
                }
        }
        if (w.fd < 0 || w.index >= SHM_MAX_WORKERS)
                usage();
        snprintf(role, sizeof(role), "incsearchd-worker/%u", w.index);
        log_init(role, LOG_LEVEL_INFO);
        if (fstat(w.fd, &st) < 0 || !S_ISSOCK(st.st_mode))
                log_fatal("file descriptor %d is not a socket to the daemon", w.fd);
        worker_read_conf(&w);
        log_level = w.conf.log_level;

        if (shm_attach(&w.shm, w.conf.shm_name, errors, sizeof(errors)) < 0)
                log_fatal("%s", errors);
        atomic_store(&w.shm.header->workers[w.index].pid, (int32_t)getpid());
        w.query = malloc(w.shm.header->max_query_bytes);
        if (w.query == NULL)
                log_fatal("out of memory");
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || api_init(&w.api, &w.conf) < 0)
                log_fatal("cannot set up libcurl");
        signal(SIGPIPE, SIG_IGN);
        log_debug("ready");

        worker_run(&w);
        return 0;
}
