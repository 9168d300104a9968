#include "conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm.h"
#include "version.h"

enum conf_section {
        CONF_SECTION_NONE,
        CONF_SECTION_SERVER,
        CONF_SECTION_API,
        CONF_SECTION_WORKERS,
        CONF_SECTION_CACHE,
};

enum conf_type {
        CONF_TYPE_UINT,
        CONF_TYPE_STRING,
        CONF_TYPE_LISTEN,
        CONF_TYPE_RATE,
        CONF_TYPE_URL,
        CONF_TYPE_HEADER,
        CONF_TYPE_SHM_NAME,
        CONF_TYPE_LOG_LEVEL,
};

struct conf_key {
        enum conf_section section;
        const char *name;
        enum conf_type type;
        size_t offset;
        size_t size;       /* of the string buffer, for string types */
        uint64_t min, max; /* for CONF_TYPE_UINT */
        int required;
        int repeatable;
};

#define CONF_FIELD(field) offsetof(struct conf, field), sizeof(((struct conf *)0)->field)

static const struct conf_key conf_keys[] = {
    {CONF_SECTION_SERVER, "listen", CONF_TYPE_LISTEN, CONF_FIELD(listen_host), 0, 0, 0, 0},
    {CONF_SECTION_SERVER, "max_connections", CONF_TYPE_UINT, CONF_FIELD(max_connections), 1,
     CONF_MAX_CONNECTIONS, 0, 0},
    {CONF_SECTION_SERVER, "max_new_connections_per_second", CONF_TYPE_UINT,
     CONF_FIELD(max_new_connections_per_second), 0, 1000000, 0, 0},
    {CONF_SECTION_SERVER, "max_connections_per_ip", CONF_TYPE_UINT,
     CONF_FIELD(max_connections_per_ip), 0, CONF_MAX_CONNECTIONS, 0, 0},
    {CONF_SECTION_SERVER, "handshake_timeout_ms", CONF_TYPE_UINT, CONF_FIELD(handshake_timeout_ms),
     100, 600000, 0, 0},
    {CONF_SECTION_SERVER, "max_header_bytes", CONF_TYPE_UINT, CONF_FIELD(max_header_bytes), 1024,
     65536, 0, 0},
    {CONF_SECTION_SERVER, "max_output_bytes", CONF_TYPE_UINT, CONF_FIELD(max_output_bytes), 4096,
     67108864, 0, 0},
    {CONF_SECTION_SERVER, "ping_interval_ms", CONF_TYPE_UINT, CONF_FIELD(ping_interval_ms), 0,
     3600000, 0, 0},
    {CONF_SECTION_SERVER, "ping_timeout_ms", CONF_TYPE_UINT, CONF_FIELD(ping_timeout_ms), 100,
     600000, 0, 0},
    {CONF_SECTION_SERVER, "allowed_origins", CONF_TYPE_STRING, CONF_FIELD(allowed_origins), 0, 0, 0,
     0},
    {CONF_SECTION_SERVER, "max_query_bytes", CONF_TYPE_UINT, CONF_FIELD(max_query_bytes), 1,
     CONF_MAX_QUERY_BYTES, 0, 0},
    {CONF_SECTION_SERVER, "max_result_bytes", CONF_TYPE_UINT, CONF_FIELD(max_result_bytes), 1024,
     16777216, 0, 0},
    {CONF_SECTION_SERVER, "max_message_bytes", CONF_TYPE_UINT, CONF_FIELD(max_message_bytes), 64,
     1048576, 0, 0},
    {CONF_SECTION_SERVER, "min_query_chars", CONF_TYPE_UINT, CONF_FIELD(min_query_chars), 0, 1024,
     0, 0},
    {CONF_SECTION_SERVER, "shm_name", CONF_TYPE_SHM_NAME, CONF_FIELD(shm_name), 0, 0, 0, 0},
    {CONF_SECTION_SERVER, "log_level", CONF_TYPE_LOG_LEVEL, CONF_FIELD(log_level), 0, 0, 0, 0},
    {CONF_SECTION_API, "url", CONF_TYPE_URL, CONF_FIELD(api_url), 0, 0, 1, 0},
    {CONF_SECTION_API, "timeout_ms", CONF_TYPE_UINT, CONF_FIELD(api_timeout_ms), 1, 600000, 0, 0},
    {CONF_SECTION_API, "user_agent", CONF_TYPE_STRING, CONF_FIELD(user_agent), 0, 0, 0, 0},
    {CONF_SECTION_API, "header", CONF_TYPE_HEADER, CONF_FIELD(headers), 0, 0, 0, 1},
    {CONF_SECTION_API, "rate", CONF_TYPE_RATE, CONF_FIELD(rate_milli), 0, 0, 1, 0},
    {CONF_SECTION_API, "burst", CONF_TYPE_UINT, CONF_FIELD(burst), 1, CONF_MAX_BURST, 1, 0},
    {CONF_SECTION_API, "max_wait_ms", CONF_TYPE_UINT, CONF_FIELD(max_wait_ms), 1, 3600000, 0, 0},
    {CONF_SECTION_API, "retry_base_ms", CONF_TYPE_UINT, CONF_FIELD(retry_base_ms), 1, 60000, 0, 0},
    {CONF_SECTION_API, "retry_max_ms", CONF_TYPE_UINT, CONF_FIELD(retry_max_ms), 1, 600000, 0, 0},
    {CONF_SECTION_WORKERS, "workers", CONF_TYPE_UINT, CONF_FIELD(workers), 1, 64, 0, 0},
    {CONF_SECTION_WORKERS, "max_inflight", CONF_TYPE_UINT, CONF_FIELD(max_inflight), 1,
     SHM_MAX_INFLIGHT, 0, 0},
    {CONF_SECTION_CACHE, "max_bytes", CONF_TYPE_UINT, CONF_FIELD(cache_max_bytes), 0, 1ULL << 40, 0,
     0},
    {CONF_SECTION_CACHE, "ttl_ms", CONF_TYPE_UINT, CONF_FIELD(cache_ttl_ms), 1, 86400000, 0, 0},
};

#define CONF_KEY_COUNT (sizeof(conf_keys) / sizeof(conf_keys[0]))

static const char *const conf_section_names[] = {"", "server", "api", "workers", "cache"};

struct conf_parser {
        struct conf *conf;
        const char *path;
        unsigned line;
        char *errors;
        size_t errors_len;
        size_t errors_used;
        int error_count;
        unsigned seen[CONF_KEY_COUNT]; /* line of the first occurrence, 0 if absent */
};

static void conf_error(struct conf_parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conf_error(struct conf_parser *p, unsigned line, const char *fmt, ...)
{
        va_list ap;
        size_t left;
        int n;

        p->error_count++;
        if (p->errors == NULL || p->errors_used + 1 >= p->errors_len)
                return;
        left = p->errors_len - p->errors_used;
        n = snprintf(p->errors + p->errors_used, left, "%s:%u: ", p->path, line);
        if (n < 0 || (size_t)n >= left) {
                p->errors_used = p->errors_len - 1;
                return;
        }
        p->errors_used += (size_t)n;
        left -= (size_t)n;
        va_start(ap, fmt);
        n = vsnprintf(p->errors + p->errors_used, left, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n + 1 >= left) {
                p->errors_used = p->errors_len - 1;
                return;
        }
        p->errors_used += (size_t)n;
        p->errors[p->errors_used++] = '\n';
        p->errors[p->errors_used] = '\0';
}

static void conf_defaults(struct conf *conf)
{
        memset(conf, 0, sizeof(*conf));
        snprintf(conf->listen_host, sizeof(conf->listen_host), "127.0.0.1");
        conf->listen_port = 8080;
        conf->max_new_connections_per_second = 2000;
        conf->handshake_timeout_ms = 10000;
        conf->max_header_bytes = 8192;
        conf->max_output_bytes = 262144;
        conf->ping_interval_ms = 30000;
        conf->ping_timeout_ms = 10000;
        conf->max_query_bytes = 256;
        conf->max_result_bytes = 65536;
        conf->max_message_bytes = 4096;
        conf->min_query_chars = 1;
        snprintf(conf->shm_name, sizeof(conf->shm_name), "/incsearchd");
        conf->log_level = LOG_LEVEL_INFO;
        conf->api_timeout_ms = 2000;
        snprintf(conf->user_agent, sizeof(conf->user_agent), "incsearchd/%s", INCSEARCHD_VERSION);
        conf->max_wait_ms = 10000;
        conf->retry_base_ms = 100;
        conf->retry_max_ms = 2000;
        conf->workers = 2;
        conf->max_inflight = 4;
        conf->cache_max_bytes = 4194304;
        conf->cache_ttl_ms = 60000;
}

static char *conf_trim(char *s)
{
        char *end;

        while (isspace((unsigned char)*s))
                s++;
        end = s + strlen(s);
        while (end > s && isspace((unsigned char)end[-1]))
                *--end = '\0';
        return s;
}

static int conf_parse_uint(const char *value, uint64_t *out)
{
        char *end;
        unsigned long long n;

        if (!isdigit((unsigned char)value[0]))
                return -1;
        errno = 0;
        n = strtoull(value, &end, 10);
        if (errno != 0 || *end != '\0')
                return -1;
        *out = n;
        return 0;
}

/* Parses a decimal such as "10", "0.5" or "2.125" into thousandths. */
static int conf_parse_milli(const char *value, uint64_t *out)
{
        uint64_t whole = 0, frac = 0;
        int frac_digits = 0;
        const char *s = value;

        if (!isdigit((unsigned char)*s))
                return -1;
        for (; isdigit((unsigned char)*s); s++) {
                whole = whole * 10 + (uint64_t)(*s - '0');
                if (whole > CONF_MAX_RATE_MILLI)
                        return -1;
        }
        if (*s == '.') {
                s++;
                if (!isdigit((unsigned char)*s))
                        return -1;
                for (; isdigit((unsigned char)*s); s++) {
                        if (++frac_digits > 3)
                                return -1;
                        frac = frac * 10 + (uint64_t)(*s - '0');
                }
        }
        if (*s != '\0')
                return -1;
        while (frac_digits++ < 3)
                frac *= 10;
        *out = whole * 1000 + frac;
        return 0;
}

static int conf_parse_listen(struct conf *conf, const char *value)
{
        const char *colon = strrchr(value, ':');
        const char *host = value;
        struct in6_addr addr;
        size_t host_len;
        uint64_t port;

        if (colon == NULL || conf_parse_uint(colon + 1, &port) < 0 || port > 65535)
                return -1;
        host_len = (size_t)(colon - value);
        if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
                host++;
                host_len -= 2;
        }
        if (host_len == 0 || host_len >= sizeof(conf->listen_host))
                return -1;
        memcpy(conf->listen_host, host, host_len);
        conf->listen_host[host_len] = '\0';
        if (inet_pton(AF_INET, conf->listen_host, &addr) != 1 &&
            inet_pton(AF_INET6, conf->listen_host, &addr) != 1)
                return -1;
        conf->listen_port = (uint16_t)port;
        return 0;
}

static int conf_valid_header(const char *value)
{
        const char *colon = strchr(value, ':');

        if (colon == NULL || colon == value)
                return 0;
        for (const char *s = value; s < colon; s++) {
                if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
                        return 0;
        }
        for (const char *s = colon; *s != '\0'; s++) {
                if ((unsigned char)*s < 0x20 && *s != '\t')
                        return 0;
        }
        return 1;
}

static void conf_set(struct conf_parser *p, const struct conf_key *key, const char *value)
{
        char *field = (char *)p->conf + key->offset;
        uint64_t n;

        switch (key->type) {
        case CONF_TYPE_UINT:
                if (conf_parse_uint(value, &n) < 0 || n < key->min || n > key->max) {
                        conf_error(
                            p, p->line,
                            "invalid value '%s' for %s: expected an integer from %llu to %llu",
                            value, key->name, (unsigned long long)key->min,
                            (unsigned long long)key->max);
                        return;
                }
                if (key->size == sizeof(uint16_t))
                        *(uint16_t *)field = (uint16_t)n;
                else if (key->size == sizeof(uint64_t))
                        *(uint64_t *)field = n;
                else
                        *(uint32_t *)field = (uint32_t)n;
                return;
        case CONF_TYPE_RATE:
                if (conf_parse_milli(value, &n) < 0 || n == 0 || n > CONF_MAX_RATE_MILLI) {
                        conf_error(
                            p, p->line,
                            "invalid value '%s' for %s: expected calls per second from 0.001 to "
                            "1000000, with at most 3 decimals",
                            value, key->name);
                        return;
                }
                *(uint64_t *)field = n;
                return;
        case CONF_TYPE_LISTEN:
                if (conf_parse_listen(p->conf, value) < 0)
                        conf_error(p, p->line,
                                   "invalid value '%s' for %s: expected a numeric ADDRESS:PORT, "
                                   "such as 127.0.0.1:8080 or [::1]:8080",
                                   value, key->name);
                return;
        case CONF_TYPE_URL:
                if ((strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0) ||
                    strstr(value, "{q}") == NULL) {
                        conf_error(p, p->line,
                                   "invalid value '%s' for %s: expected an http:// or https:// URL "
                                   "containing {q}",
                                   value, key->name);
                        return;
                }
                break;
        case CONF_TYPE_HEADER:
                if (!conf_valid_header(value)) {
                        /* The value may carry a secret, so it is not echoed. */
                        conf_error(p, p->line, "invalid %s: expected \"Name: value\"", key->name);
                        return;
                }
                if (p->conf->header_count == CONF_MAX_HEADERS) {
                        conf_error(p, p->line, "too many %s lines: at most %d", key->name,
                                   CONF_MAX_HEADERS);
                        return;
                }
                if (strlen(value) >= sizeof(p->conf->headers[0])) {
                        conf_error(p, p->line, "%s too long: at most %zu bytes", key->name,
                                   sizeof(p->conf->headers[0]) - 1);
                        return;
                }
                strcpy(p->conf->headers[p->conf->header_count++], value);
                return;
        case CONF_TYPE_SHM_NAME:
                if (value[0] != '/' || value[1] == '\0' || strchr(value + 1, '/') != NULL) {
                        conf_error(
                            p, p->line,
                            "invalid value '%s' for %s: expected \"/name\" with no other '/'",
                            value, key->name);
                        return;
                }
                break;
        case CONF_TYPE_LOG_LEVEL:
                if (log_level_parse(value, (enum log_level *)field) < 0)
                        conf_error(p, p->line,
                                   "invalid value '%s' for %s: expected error, warn, info or debug",
                                   value, key->name);
                return;
        case CONF_TYPE_STRING:
                break;
        }

        /* The remaining types are strings stored as given. */
        if (strlen(value) >= key->size) {
                conf_error(p, p->line, "value for %s too long: at most %zu bytes", key->name,
                           key->size - 1);
                return;
        }
        strcpy(field, value);
}

static void conf_parse_line(struct conf_parser *p, char *line, enum conf_section *section)
{
        char *s = conf_trim(line);
        char *eq, *name, *value;

        if (*s == '\0' || *s == '#')
                return;
        if (*s == '[') {
                char *end = strchr(s, ']');

                *section = CONF_SECTION_NONE;
                if (end == NULL || end[1] != '\0') {
                        conf_error(p, p->line, "invalid section header '%s': expected [name]", s);
                        return;
                }
                *end = '\0';
                for (size_t i = 1; i < sizeof(conf_section_names) / sizeof(conf_section_names[0]);
                     i++) {
                        if (strcmp(s + 1, conf_section_names[i]) == 0) {
                                *section = (enum conf_section)i;
                                return;
                        }
                }
                conf_error(
                    p, p->line,
                    "unknown section [%s]: valid ones are [server], [api], [workers], [cache]",
                    s + 1);
                return;
        }

        eq = strchr(s, '=');
        if (eq == NULL) {
                conf_error(p, p->line, "invalid line '%s': expected key = value", s);
                return;
        }
        *eq = '\0';
        name = conf_trim(s);
        value = conf_trim(eq + 1);
        if (*section == CONF_SECTION_NONE) {
                conf_error(p, p->line, "key %s outside any section", name);
                return;
        }
        for (size_t i = 0; i < CONF_KEY_COUNT; i++) {
                const struct conf_key *key = &conf_keys[i];

                if (key->section != *section || strcmp(key->name, name) != 0)
                        continue;
                if (p->seen[i] != 0 && !key->repeatable) {
                        conf_error(p, p->line, "duplicate key %s, first set on line %u", name,
                                   p->seen[i]);
                        return;
                }
                if (p->seen[i] == 0)
                        p->seen[i] = p->line;
                conf_set(p, key, value);
                return;
        }
        conf_error(p, p->line, "unknown key %s in [%s]", name, conf_section_names[*section]);
}

int conf_load(struct conf *conf, const char *path, char *errors, size_t errors_len)
{
        struct conf_parser p = {
            .conf = conf, .path = path, .errors = errors, .errors_len = errors_len};
        enum conf_section section = CONF_SECTION_NONE;
        char line[4096];
        FILE *f;

        if (errors != NULL && errors_len > 0)
                errors[0] = '\0';
        conf_defaults(conf);
        snprintf(conf->path, sizeof(conf->path), "%s", path);

        f = fopen(path, "r");
        if (f == NULL) {
                conf_error(&p, 0, "cannot open: %s", strerror(errno));
                return p.error_count;
        }
        while (fgets(line, sizeof(line), f) != NULL) {
                p.line++;
                if (strchr(line, '\n') == NULL && !feof(f)) {
                        int c;

                        conf_error(&p, p.line, "line too long: at most %zu bytes",
                                   sizeof(line) - 2);
                        while ((c = fgetc(f)) != EOF && c != '\n')
                                ;
                        continue;
                }
                conf_parse_line(&p, line, &section);
        }
        if (ferror(f))
                conf_error(&p, p.line, "read failed: %s", strerror(errno));
        fclose(f);

        for (size_t i = 0; i < CONF_KEY_COUNT; i++) {
                if (conf_keys[i].required && p.seen[i] == 0)
                        conf_error(&p, p.line, "missing required key %s in [%s]", conf_keys[i].name,
                                   conf_section_names[conf_keys[i].section]);
        }
        if (p.error_count == 0 && conf->min_query_chars > conf->max_query_bytes)
                conf_error(&p, p.line, "min_query_chars (%u) is larger than max_query_bytes (%u)",
                           conf->min_query_chars, conf->max_query_bytes);
        return p.error_count;
}
