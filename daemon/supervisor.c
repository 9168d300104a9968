/*
 * The worker pool: starting incsearchd-worker processes, reading their results, and
 * restarting any that die without losing the query it was working on.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "incsearchd.h"
#include "ipc.h"
#include "log.h"
#include "slot.h"

#define SUPERVISOR_WORKER_FD 3
#define SUPERVISOR_MIN_UPTIME_NS 1000000000ULL /* a worker that dies sooner is crash-looping */
#define SUPERVISOR_MAX_BACKOFF_MS 5000
#define SUPERVISOR_STOP_WAIT_MS 2000
#define SUPERVISOR_LOCK_WAIT_MS 100

static void supervisor_spawn(unsigned index);

static void supervisor_kill(unsigned index, const char *why)
{
        struct worker *w = &daemon_state.workers[index];

        log_error("worker %u (pid %d) %s; killing it", index, (int)w->pid, why);
        kill(w->pid, SIGKILL);
        /* The SIGCHLD handler reaps it and starts a new one. */
        if (w->bev != NULL) {
                bufferevent_free(w->bev);
                w->bev = NULL;
        }
}

/* Handles every complete message in worker INDEX's input. Returns -1 if the worker was killed. */
static int supervisor_read_messages(unsigned index)
{
        struct daemon *d = &daemon_state;
        struct worker *w = &d->workers[index];
        struct evbuffer *in = bufferevent_get_input(w->bev);
        size_t max_body = ipc_max_body(d->max_result_bytes_seen, d->conf.max_query_bytes);

        for (;;) {
                struct ipc_header h;
                char *body;

                if (evbuffer_get_length(in) < sizeof(h))
                        return 0;
                evbuffer_copyout(in, &h, sizeof(h));
                if (ipc_check_header(&h, max_body) < 0 || h.slot >= d->conf.max_connections) {
                        char why[160];

                        snprintf(
                            why, sizeof(why),
                            "sent an invalid message (magic %08x, type %u, length %u, slot %u)",
                            h.magic, h.type, h.length, h.slot);
                        supervisor_kill(index, why);
                        return -1;
                }
                if (evbuffer_get_length(in) < sizeof(h) + h.length)
                        return 0;
                evbuffer_drain(in, sizeof(h));
                body = (char *)evbuffer_pullup(in, h.length);

                daemon_lock();
                slot_answered(&d->shm, h.slot, h.generation, h.seq);
                shm_unlock(&d->shm);
                client_deliver(h.slot, h.generation, h.seq, body, h.length);
                evbuffer_drain(in, h.length);
        }
}

static void supervisor_read_cb(struct bufferevent *bev, void *arg)
{
        (void)bev;
        supervisor_read_messages((unsigned)(uintptr_t)arg);
}

static void supervisor_event_cb(struct bufferevent *bev, short what, void *arg)
{
        unsigned index = (unsigned)(uintptr_t)arg;
        struct worker *w = &daemon_state.workers[index];

        (void)what;
        /* The worker closed its end, so it is exiting; SIGCHLD does the rest. */
        log_debug("worker %u (pid %d) closed its socket", index, (int)w->pid);
        bufferevent_disable(bev, EV_READ);
}

static void supervisor_restart_cb(evutil_socket_t fd, short what, void *arg)
{
        (void)fd;
        (void)what;
        if (!daemon_state.stopping)
                supervisor_spawn((unsigned)(uintptr_t)arg);
}

static void supervisor_exec_worker(unsigned index, int fd, pid_t parent)
{
        struct daemon *d = &daemon_state;
        char index_arg[16], fd_arg[16];
        sigset_t none;

        /* The worker must not outlive the daemon, which may have died before prctl. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
                _exit(0);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (fd != SUPERVISOR_WORKER_FD) {
                if (dup2(fd, SUPERVISOR_WORKER_FD) < 0)
                        _exit(127);
                close(fd);
        } else {
                fcntl(fd, F_SETFD, 0);
        }
        snprintf(index_arg, sizeof(index_arg), "%u", index);
        snprintf(fd_arg, sizeof(fd_arg), "%d", SUPERVISOR_WORKER_FD);
        execl(d->worker_path, "incsearchd-worker", "-i", index_arg, "-f", fd_arg, (char *)NULL);
        log_error("cannot run worker %s: %s", d->worker_path, strerror(errno));
        _exit(127);
}

static void supervisor_spawn(unsigned index)
{
        struct daemon *d = &daemon_state;
        struct worker *w = &d->workers[index];
        struct timeval retry = {1, 0};
        struct ipc_header conf_header = {.magic = IPC_MAGIC, .type = IPC_CONF};
        int fds[2];
        pid_t pid, parent;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
                log_error("worker %u: socketpair failed: %s; retrying in 1 s", index,
                          strerror(errno));
                evtimer_add(w->restart_timer, &retry);
                return;
        }
        parent = getpid();
        pid = fork();
        if (pid < 0) {
                log_error("worker %u: fork failed: %s; retrying in 1 s", index, strerror(errno));
                close(fds[0]);
                close(fds[1]);
                evtimer_add(w->restart_timer, &retry);
                return;
        }
        if (pid == 0) {
                close(fds[0]);
                supervisor_exec_worker(index, fds[1], parent);
        }
        close(fds[1]);
        /* The socket is still blocking, and its buffer takes the whole config at once. */
        conf_header.length = sizeof(d->conf);
        if (ipc_send(fds[0], &conf_header, &d->conf) < 0)
                log_error("worker %u (pid %d): cannot send the configuration: %s", index, (int)pid,
                          strerror(errno));
        evutil_make_socket_nonblocking(fds[0]);
        w->pid = pid;
        w->fd = fds[0];
        w->started_ns = shm_now_ns();
        w->bev = bufferevent_socket_new(d->base, fds[0], BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(w->bev, supervisor_read_cb, NULL, supervisor_event_cb,
                          (void *)(uintptr_t)index);
        bufferevent_enable(w->bev, EV_READ | EV_WRITE);
        log_info("worker %u started, pid %d", index, (int)pid);
}

/*
 * Queues the daemon's configuration to every running worker, which applies it between API
 * calls. A worker started later gets it at start.
 */
void supervisor_send_conf(void)
{
        struct daemon *d = &daemon_state;
        struct ipc_header h = {.magic = IPC_MAGIC, .type = IPC_CONF, .length = sizeof(d->conf)};

        for (unsigned i = 0; i < d->conf.workers; i++) {
                struct worker *w = &d->workers[i];

                int fd, flags;

                if (w->pid == 0 || w->bev == NULL)
                        continue;
                /*
                 * Written whole, in blocking mode, straight to the socket like the wake bytes,
                 * so that no wake byte lands inside the message. The worker drains its socket
                 * at every poll, so the wait is short.
                 */
                fd = bufferevent_getfd(w->bev);
                flags = fcntl(fd, F_GETFL);
                fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
                if (ipc_send(fd, &h, &d->conf) < 0)
                        log_error("worker %u (pid %d): cannot send the configuration: %s", i,
                                  (int)w->pid, strerror(errno));
                fcntl(fd, F_SETFL, flags);
        }
}

void supervisor_start(void)
{
        struct daemon *d = &daemon_state;

        for (unsigned i = 0; i < d->conf.workers; i++) {
                d->workers[i].restart_timer =
                    evtimer_new(d->base, supervisor_restart_cb, (void *)(uintptr_t)i);
                supervisor_spawn(i);
        }
}

/* Releases the lock if dead worker PID held it, so that no process waits for it forever. */
static void supervisor_repair_lock(pid_t pid)
{
        struct shm_header *h = daemon_state.shm.header;
        int32_t owner = pid;

        if (atomic_compare_exchange_strong(&h->lock_owner, &owner, 0)) {
                log_warn("worker pid %d died holding the shared-memory lock; releasing it",
                         (int)pid);
                sem_post(&h->lock);
        }
}

/* Puts the queries that worker INDEX held back on the FIFO, those still their client's latest. */
static void supervisor_requeue(unsigned index)
{
        struct daemon *d = &daemon_state;
        struct shm_worker *sw = &d->shm.header->workers[index];
        struct shm_job held[SHM_MAX_INFLIGHT];
        int requeued[SHM_MAX_INFLIGHT] = {0}, any = 0;

        daemon_lock();
        for (unsigned i = 0; i < SHM_MAX_INFLIGHT; i++) {
                struct shm_job *job = &sw->jobs[i];

                held[i] = *job;
                if (job->busy)
                        requeued[i] = slot_requeue(&d->shm, job->slot, job->generation, job->seq,
                                                   job->pending_since_ns);
                job->busy = 0;
        }
        shm_unlock(&d->shm);

        for (unsigned i = 0; i < SHM_MAX_INFLIGHT; i++) {
                if (!requeued[i])
                        continue;
                any = 1;
                shm_count(&d->shm, requeued);
                log_warn("worker %u died holding slot %u seq %" PRIu64 "; requeued it", index,
                         held[i].slot, held[i].seq);
        }
        if (any)
                supervisor_wake();
}

void supervisor_wake(void)
{
        struct daemon *d = &daemon_state;
        static const char wake = IPC_WAKE;

        /*
         * A full socket buffer means the worker has wakes it has not read yet, so a failed
         * write loses nothing. The bufferevent never writes to this socket, so nothing
         * interleaves with this byte.
         */
        for (unsigned i = 0; i < d->conf.workers; i++) {
                /* Without its bufferevent, the worker's socket is closed and its number may
                 * belong to a client by now. */
                if (d->workers[i].bev != NULL)
                        (void)send(bufferevent_getfd(d->workers[i].bev), &wake, 1,
                                   MSG_DONTWAIT | MSG_NOSIGNAL);
        }
}

static void supervisor_worker_died(unsigned index, int status)
{
        struct daemon *d = &daemon_state;
        struct worker *w = &d->workers[index];
        uint64_t uptime = shm_now_ns() - w->started_ns;
        struct timeval delay = {0, 0};

        char how[96];

        if (WIFSIGNALED(status))
                snprintf(how, sizeof(how), "killed by signal %d (%s)", WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
        else
                snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
        /* Workers end at shutdown; at any other time a worker's end is a fault. */
        if (d->stopping)
                log_info("worker %u (pid %d) %s", index, (int)w->pid, how);
        else
                log_warn("worker %u (pid %d) %s", index, (int)w->pid, how);

        supervisor_repair_lock(w->pid);

        /* Deliver what it sent before it died, so that only unanswered queries are requeued. */
        if (w->bev != NULL) {
                struct evbuffer *in = bufferevent_get_input(w->bev);

                while (evbuffer_read(in, w->fd, -1) > 0)
                        ;
                if (supervisor_read_messages(index) == 0) {
                        bufferevent_free(w->bev);
                        w->bev = NULL;
                }
        }
        supervisor_requeue(index);
        atomic_store(&d->shm.header->workers[index].pid, 0);
        w->pid = 0;
        w->fd = -1;
        if (d->stopping)
                return;

        shm_count(&d->shm, worker_restarts);
        w->restarts_total++;
        w->restarts++;
        if (uptime < SUPERVISOR_MIN_UPTIME_NS) {
                unsigned shift = w->restarts < 6 ? w->restarts : 6;
                unsigned ms = 100u << shift;

                if (ms > SUPERVISOR_MAX_BACKOFF_MS)
                        ms = SUPERVISOR_MAX_BACKOFF_MS;
                delay.tv_sec = ms / 1000;
                delay.tv_usec = (ms % 1000) * 1000;
                log_warn("worker %u died %.1f s after start; restarting in %u ms", index,
                         (double)uptime / 1e9, ms);
        } else {
                w->restarts = 0;
        }
        evtimer_add(w->restart_timer, &delay);
}

void supervisor_reap(void)
{
        struct daemon *d = &daemon_state;
        pid_t pid;
        int status;

        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                unsigned i;

                for (i = 0; i < d->conf.workers; i++) {
                        if (d->workers[i].pid == pid)
                                break;
                }
                if (i == d->conf.workers) {
                        log_debug("reaped unknown child pid %d", (int)pid);
                        continue;
                }
                supervisor_worker_died(i, status);
        }
}

/*
 * Takes the shared-memory lock from the event loop. A worker that dies while holding it would
 * block the loop forever, so the wait is in short steps, and between them the dead are reaped
 * and the lock is repaired.
 */
void daemon_lock(void)
{
        struct daemon *d = &daemon_state;
        unsigned waited_ms = 0, ownerless_ms = 0;

        while (shm_lock_timed(&d->shm, SUPERVISOR_LOCK_WAIT_MS) < 0) {
                int32_t owner = atomic_load(&d->shm.header->lock_owner);

                waited_ms += SUPERVISOR_LOCK_WAIT_MS;
                supervisor_reap();
                /*
                 * A holder stores its pid right after sem_wait returns, so a lock that stays
                 * ownerless was taken by a process that died in between.
                 */
                ownerless_ms = owner == 0 ? ownerless_ms + SUPERVISOR_LOCK_WAIT_MS : 0;
                if (ownerless_ms >= 5 * SUPERVISOR_LOCK_WAIT_MS) {
                        log_warn("shared-memory lock held with no owner for %u ms; releasing it",
                                 ownerless_ms);
                        sem_post(&d->shm.header->lock);
                        ownerless_ms = 0;
                } else if (waited_ms % 1000 == 0) {
                        log_warn("waiting %u ms for the shared-memory lock held by pid %d",
                                 waited_ms, (int)owner);
                }
        }
}

void supervisor_stop(void)
{
        struct daemon *d = &daemon_state;
        unsigned waited_ms = 0;
        int running;

        d->stopping = 1;
        for (unsigned i = 0; i < d->conf.workers; i++) {
                if (d->workers[i].pid > 0)
                        kill(d->workers[i].pid, SIGTERM);
                if (d->workers[i].restart_timer != NULL)
                        evtimer_del(d->workers[i].restart_timer);
        }
        for (;;) {
                supervisor_reap();
                running = 0;
                for (unsigned i = 0; i < d->conf.workers; i++)
                        running += d->workers[i].pid > 0;
                if (running == 0 || waited_ms >= SUPERVISOR_STOP_WAIT_MS)
                        break;
                usleep(10000);
                waited_ms += 10;
        }
        for (unsigned i = 0; i < d->conf.workers; i++) {
                if (d->workers[i].pid > 0) {
                        log_warn("worker %u (pid %d) did not stop in %u ms; killing it", i,
                                 (int)d->workers[i].pid, SUPERVISOR_STOP_WAIT_MS);
                        kill(d->workers[i].pid, SIGKILL);
                        waitpid(d->workers[i].pid, NULL, 0);
                        d->workers[i].pid = 0;
                }
                if (d->workers[i].bev != NULL)
                        bufferevent_free(d->workers[i].bev);
                d->workers[i].bev = NULL;
        }
}
