/*
 * Logging to stderr. Every line carries the time, the process role, its pid and the level,
 * so that the lines of the daemon and of its workers can be distinguished in one journal.
 */
#ifndef INCSEARCHD_LOG_H
#define INCSEARCHD_LOG_H

#include <stdarg.h>
#include <stdint.h>

enum log_level {
        LOG_LEVEL_ERROR,
        LOG_LEVEL_WARN,
        LOG_LEVEL_INFO,
        LOG_LEVEL_DEBUG,
};

/* The current level: messages above it are skipped before their arguments are formatted. */
extern enum log_level log_level;

void log_init(const char *role, enum log_level level);
void log_set_role(const char *role);
int log_level_parse(const char *name, enum log_level *level);
const char *log_level_name(enum log_level level);

/* Writes one line; errno is preserved. Callers use the macros below. */
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs at error level and exits with status 1. */
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * A cap on how often one kind of message is logged, for events that a client can cause at will:
 * at most LOG_LIMIT_PER_SECOND lines a second, then one line with the count of those skipped.
 */
#define LOG_LIMIT_PER_SECOND 10

struct log_limit {
        uint64_t second; /* CLOCK_MONOTONIC second of the current window */
        unsigned logged;
        unsigned long skipped;
};

/* Returns 1 if a message under LIMIT may be logged now. */
int log_limit_allow(struct log_limit *limit, enum log_level level);

#define log_limited(limit, level, ...)                                                             \
        do {                                                                                       \
                if (log_level >= (level) && log_limit_allow((limit), (level)))                     \
                        log_write((level), __VA_ARGS__);                                           \
        } while (0)

#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)                                                                              \
        do {                                                                                       \
                if (log_level >= LOG_LEVEL_WARN)                                                   \
                        log_write(LOG_LEVEL_WARN, __VA_ARGS__);                                    \
        } while (0)
#define log_info(...)                                                                              \
        do {                                                                                       \
                if (log_level >= LOG_LEVEL_INFO)                                                   \
                        log_write(LOG_LEVEL_INFO, __VA_ARGS__);                                    \
        } while (0)
#define log_debug(...)                                                                             \
        do {                                                                                       \
                if (log_level >= LOG_LEVEL_DEBUG)                                                  \
                        log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                   \
        } while (0)

#endif
