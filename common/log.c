#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_level = LOG_LEVEL_INFO;

static char log_role[32] = "incsearchd";

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

void log_init(const char *role, enum log_level level)
{
        log_set_role(role);
        log_level = level;
}

void log_set_role(const char *role)
{
        snprintf(log_role, sizeof(log_role), "%s", role);
}

int log_level_parse(const char *name, enum log_level *level)
{
        for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
                if (strcmp(name, log_level_names[i]) == 0) {
                        *level = (enum log_level)i;
                        return 0;
                }
        }
        return -1;
}

const char *log_level_name(enum log_level level)
{
        if ((unsigned)level >= sizeof(log_level_names) / sizeof(log_level_names[0]))
                return "unknown";
        return log_level_names[level];
}

static void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
        char line[1024];
        struct timespec now;
        struct tm tm;
        int saved_errno = errno;
        int n;

        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     now.tv_nsec / 1000000, log_role, (int)getpid(), log_level_name(level));
        if (n > 0 && (size_t)n < sizeof(line))
                n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        if (n < 0)
                n = 0;
        if ((size_t)n >= sizeof(line) - 1)
                n = sizeof(line) - 2;
        line[n++] = '\n';

        /* One write per line, so that lines of several processes sharing stderr do not interleave.
         */
        if (write(STDERR_FILENO, line, (size_t)n) < 0) {
                /* Nothing sensible can be done when stderr is gone. */
        }
        errno = saved_errno;
}

void log_write(enum log_level level, const char *fmt, ...)
{
        va_list ap;

        if (level > log_level)
                return;
        va_start(ap, fmt);
        log_vwrite(level, fmt, ap);
        va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        log_vwrite(LOG_LEVEL_ERROR, fmt, ap);
        va_end(ap);
        exit(1);
}

int log_limit_allow(struct log_limit *limit, enum log_level level)
{
        struct timespec now;
        uint64_t second;

        clock_gettime(CLOCK_MONOTONIC, &now);
        second = (uint64_t)now.tv_sec;
        if (second != limit->second) {
                if (limit->skipped > 0)
                        log_write(level, "%lu more messages like the next one were not logged",
                                  limit->skipped);
                limit->second = second;
                limit->logged = 0;
                limit->skipped = 0;
        }
        if (limit->logged < LOG_LIMIT_PER_SECOND) {
                limit->logged++;
                return 1;
        }
        limit->skipped++;
        return 0;
}
