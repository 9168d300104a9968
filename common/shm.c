#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static size_t shm_align(size_t n, size_t to)
{
        return (n + to - 1) / to * to;
}

static size_t shm_fifo_offset(void)
{
        return shm_align(sizeof(struct shm_header), 64);
}

static size_t shm_slots_offset(uint32_t slot_count)
{
        return shm_align(shm_fifo_offset() + (size_t)slot_count * sizeof(uint32_t), 64);
}

static void shm_set_pointers(struct shm *shm, void *base, size_t size)
{
        shm->header = base;
        shm->fifo = (uint32_t *)((char *)base + shm_fifo_offset());
        shm->slots = (char *)base + shm_slots_offset(shm->header->slot_count);
        shm->size = size;
        shm->pid = getpid();
}

uint64_t shm_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Returns the pid of a live incsearchd that owns the segment NAME, or 0. */
static pid_t shm_live_owner(const char *name)
{
        struct shm_header h;
        pid_t pid = 0;
        int fd = shm_open(name, O_RDONLY, 0);

        if (fd < 0)
                return 0;
        if (read(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) && h.magic == SHM_MAGIC &&
            h.daemon_pid > 0 && h.daemon_pid != getpid() &&
            (kill(h.daemon_pid, 0) == 0 || errno == EPERM))
                pid = h.daemon_pid;
        close(fd);
        return pid;
}

int shm_create(struct shm *shm, const char *name, uint32_t slot_count, uint32_t max_query_bytes,
               uint64_t rate_milli, uint32_t burst, pid_t *owner)
{
        size_t slot_size = shm_align(sizeof(struct slot) + max_query_bytes, 64);
        size_t size = shm_slots_offset(slot_count) + slot_size * slot_count;
        struct shm_header *h;
        void *base;
        int fd, saved;

        /* A segment left by a crashed run contains nothing worth keeping, but a live one does. */
        *owner = shm_live_owner(name);
        if (*owner != 0) {
                errno = EBUSY;
                return -1;
        }
        if (shm_unlink(name) < 0 && errno != ENOENT)
                return -1;
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0)
                return -1;
        if (ftruncate(fd, (off_t)size) < 0)
                goto fail;
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
                goto fail;
        close(fd);

        /* ftruncate gives zeroed pages, so every slot starts as SLOT_FREE with generation 0. */
        h = base;
        h->magic = SHM_MAGIC;
        h->layout_version = SHM_LAYOUT_VERSION;
        h->slot_count = slot_count;
        h->max_query_bytes = max_query_bytes;
        h->slot_size = slot_size;
        h->total_size = size;
        h->created_ns = shm_now_ns();
        if (sem_init(&h->lock, 1, 1) < 0) {
                saved = errno;
                munmap(base, size);
                shm_unlink(name);
                errno = saved;
                return -1;
        }
        h->daemon_pid = getpid();
        bucket_init(&h->bucket, rate_milli, burst, h->created_ns);
        h->bucket.tokens = 0;
        h->redis.fallback = h->bucket; /* replaced at each switch to redis_fallback = local_share */
        shm_set_pointers(shm, base, size);
        return 0;

fail:
        saved = errno;
        close(fd);
        shm_unlink(name);
        errno = saved;
        return -1;
}

int shm_attach(struct shm *shm, const char *name, char *error, size_t error_len)
{
        struct shm_header *h;
        struct stat st;
        void *base;
        int fd;

        fd = shm_open(name, O_RDWR, 0);
        if (fd < 0) {
                snprintf(error, error_len, "shm_open %s: %s", name, strerror(errno));
                return -1;
        }
        if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct shm_header)) {
                snprintf(error, error_len, "shared memory %s is too small", name);
                close(fd);
                return -1;
        }
        base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (base == MAP_FAILED) {
                snprintf(error, error_len, "mmap %s: %s", name, strerror(errno));
                return -1;
        }
        h = base;
        if (h->magic != SHM_MAGIC || h->layout_version != SHM_LAYOUT_VERSION ||
            h->total_size != (uint64_t)st.st_size ||
            h->slot_size < sizeof(struct slot) + h->max_query_bytes ||
            shm_slots_offset(h->slot_count) + h->slot_size * h->slot_count != h->total_size) {
                snprintf(
                    error, error_len,
                    "shared memory %s has the wrong layout (magic %08x, version %u, size %llu); "
                    "the daemon and worker binaries must come from the same build",
                    name, h->magic, h->layout_version, (unsigned long long)st.st_size);
                munmap(base, (size_t)st.st_size);
                return -1;
        }
        shm_set_pointers(shm, base, (size_t)st.st_size);
        return 0;
}

void shm_detach(struct shm *shm)
{
        if (shm->header != NULL)
                munmap(shm->header, shm->size);
        memset(shm, 0, sizeof(*shm));
}

void shm_destroy(struct shm *shm, const char *name)
{
        if (shm->header != NULL) {
                sem_destroy(&shm->header->lock);
        }
        shm_detach(shm);
        shm_unlink(name);
}

void shm_lock(struct shm *shm)
{
        while (sem_wait(&shm->header->lock) < 0)
                ; /* only EINTR is possible for a valid semaphore */
        atomic_store(&shm->header->lock_owner, shm->pid);
}

int shm_lock_timed(struct shm *shm, unsigned timeout_ms)
{
        struct timespec deadline;
        uint64_t at = shm_now_ns() + (uint64_t)timeout_ms * 1000000ULL;

        deadline.tv_sec = (time_t)(at / 1000000000ULL);
        deadline.tv_nsec = (long)(at % 1000000000ULL);
        while (sem_clockwait(&shm->header->lock, CLOCK_MONOTONIC, &deadline) < 0) {
                if (errno == ETIMEDOUT)
                        return -1;
        }
        atomic_store(&shm->header->lock_owner, shm->pid);
        return 0;
}

void shm_unlock(struct shm *shm)
{
        atomic_store(&shm->header->lock_owner, 0);
        sem_post(&shm->header->lock);
}
