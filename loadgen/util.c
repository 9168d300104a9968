/* Clock, messages, process statistics, JSON lookups and percentiles for the load generator. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

uint64_t lg_now_ns(void)
{
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        return (uint64_t)now.tv_sec * LG_NS_PER_SEC + (uint64_t)now.tv_nsec;
}

/* Writes "incsearch-loadgen[PID] LEVEL: message" to stderr, keeping errno. */
static void lg_vlog(const char *level, const char *fmt, va_list ap)
{
        int saved_errno = errno;

        fprintf(stderr, "incsearch-loadgen[%ld] %s: ", (long)getpid(), level);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        errno = saved_errno;
}

void lg_fatal(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        lg_vlog("error", fmt, ap);
        va_end(ap);
        exit(1);
}

void lg_warn(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        lg_vlog("warn", fmt, ap);
        va_end(ap);
}

uint64_t lg_raise_nofile(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 0;
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        return (uint64_t)rl.rlim_cur;
}

double lg_process_cpu_s(pid_t pid)
{
        char path[64], buf[4096], *p;
        unsigned long long utime, stime;
        size_t n;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
        f = fopen(path, "r");
        if (f == NULL)
                return -1;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';

        /* The command name in field 2 may contain spaces, so fields are counted after its ')'. */
        p = strrchr(buf, ')');
        if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                                &utime, &stime) != 2)
                return -1;
        return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

double lg_self_cpu_s(void)
{
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Returns the first byte after "KEY": and any spaces, or NULL. */
static const uint8_t *json_find(const uint8_t *text, size_t len, const char *key)
{
        char pattern[64];
        int n = snprintf(pattern, sizeof(pattern), "\"%s\":", key);
        const uint8_t *p = memmem(text, len, pattern, (size_t)n);

        if (p == NULL)
                return NULL;
        p += n;
        while (p < text + len && *p == ' ')
                p++;
        return p;
}

/* The values looked up are our own ASCII queries, so escapes are not decoded. */
int lg_json_string(const uint8_t *text, size_t len, const char *key, char *out, size_t out_len)
{
        const uint8_t *p = json_find(text, len, key);
        size_t n = 0;

        if (p == NULL || p >= text + len || *p != '"')
                return -1;
        for (p++; p < text + len && *p != '"' && n + 1 < out_len; p++)
                out[n++] = (char)*p;
        out[n] = '\0';
        return p < text + len && *p == '"' ? 0 : -1;
}

int lg_json_int(const uint8_t *text, size_t len, const char *key, int64_t *out)
{
        const uint8_t *p = json_find(text, len, key);
        int64_t value = 0;
        int digits = 0, negative = 0;

        if (p == NULL)
                return -1;
        if (p < text + len && *p == '-') {
                negative = 1;
                p++;
        }
        for (; p < text + len && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
                value = value * 10 + (*p - '0');
        if (digits == 0)
                return -1;
        *out = negative ? -value : value;
        return 0;
}

void lg_samples_add(struct lg_samples *samples, uint64_t ns)
{
        if (samples->count == samples->cap) {
                size_t cap = samples->cap == 0 ? 1024 : samples->cap * 2;
                uint64_t *grown = realloc(samples->ns, cap * sizeof(*grown));

                if (grown == NULL)
                        lg_fatal("out of memory storing %zu samples", cap);
                samples->ns = grown;
                samples->cap = cap;
        }
        samples->ns[samples->count++] = ns;
}

static int samples_compare(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least Q of all samples at or below it. */
uint64_t lg_samples_quantile(struct lg_samples *samples, double q)
{
        size_t rank;

        if (samples->count == 0)
                return 0;
        qsort(samples->ns, samples->count, sizeof(*samples->ns), samples_compare);
        rank = (size_t)(q * (double)samples->count + 0.999999);
        if (rank < 1)
                rank = 1;
        if (rank > samples->count)
                rank = samples->count;
        return samples->ns[rank - 1];
}

void lg_samples_print(struct lg_samples *samples, const char *name)
{
        printf("%s_count=%zu\n", name, samples->count);
        printf("%s_p50_us=%.1f\n", name, (double)lg_samples_quantile(samples, 0.50) / 1e3);
        printf("%s_p99_us=%.1f\n", name, (double)lg_samples_quantile(samples, 0.99) / 1e3);
        printf("%s_max_us=%.1f\n", name, (double)lg_samples_quantile(samples, 1.0) / 1e3);
}

void lg_samples_free(struct lg_samples *samples)
{
        free(samples->ns);
        memset(samples, 0, sizeof(*samples));
}

long long lg_api_stat(int port, const char *name)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        static const char request[] =
            "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        char response[4096];
        size_t used = 0;
        int64_t value = -1;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
            write(fd, request, sizeof(request) - 1) != (ssize_t)sizeof(request) - 1) {
                lg_warn("GET /stats from 127.0.0.1:%d failed: %s", port, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        while (used < sizeof(response)) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                ssize_t n;

                if (poll(&pfd, 1, 5000) <= 0)
                        break;
                n = read(fd, response + used, sizeof(response) - used);
                if (n <= 0)
                        break;
                used += (size_t)n;
        }
        close(fd);
        if (lg_json_int((const uint8_t *)response, used, name, &value) < 0)
                lg_warn("GET /stats from 127.0.0.1:%d: no number \"%s\" in the response", port,
                        name);
        return value;
}

long long lg_parse_number(const char *text, long long min, long long max, const char *option)
{
        char *end;
        long long value;

        errno = 0;
        value = strtoll(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
                lg_fatal("invalid value \"%s\" for %s: expected an integer from %lld to %lld", text,
                         option, min, max);
        return value;
}
