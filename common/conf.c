#include "conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
        CONF_TYPE_SOCKET_PATH,
        CONF_TYPE_PREFIXES,
        CONF_TYPE_ACCOUNT,
        CONF_TYPE_CHOICE,    /* one of key->choices, stored as its index in a uint32_t */
        CONF_TYPE_REDIS_URL, /* stored as written, and parsed into conf->redis */
        CONF_TYPE_PATH,      /* an absolute file path, or empty */
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
        const char *const *choices; /* for CONF_TYPE_CHOICE, NULL-terminated */
};

static const char *const conf_backends[] = {"shm", "redis", NULL};
static const char *const conf_fallbacks[] = {"closed", "local_share", NULL};
static const char *const conf_shared_caches[] = {"off", "redis", NULL};

#define CONF_FIELD(field) offsetof(struct conf, field), sizeof(((struct conf *)0)->field)

static const struct conf_key conf_keys[] = {
    {CONF_SECTION_SERVER, "listen", CONF_TYPE_LISTEN, CONF_FIELD(listen_host), 0, 0, 0, 0, NULL},
    {CONF_SECTION_SERVER, "max_connections", CONF_TYPE_UINT, CONF_FIELD(max_connections), 1,
     CONF_MAX_CONNECTIONS, 0, 0, NULL},
    {CONF_SECTION_SERVER, "max_new_connections_per_second", CONF_TYPE_UINT,
     CONF_FIELD(max_new_connections_per_second), 0, 1000000, 0, 0, NULL},
    {CONF_SECTION_SERVER, "max_connections_per_ip", CONF_TYPE_UINT,
     CONF_FIELD(max_connections_per_ip), 0, CONF_MAX_CONNECTIONS, 0, 0, NULL},
    {CONF_SECTION_SERVER, "handshake_timeout_ms", CONF_TYPE_UINT, CONF_FIELD(handshake_timeout_ms),
     100, 600000, 0, 0, NULL},
    {CONF_SECTION_SERVER, "max_header_bytes", CONF_TYPE_UINT, CONF_FIELD(max_header_bytes), 1024,
     65536, 0, 0, NULL},
    {CONF_SECTION_SERVER, "max_output_bytes", CONF_TYPE_UINT, CONF_FIELD(max_output_bytes), 4096,
     67108864, 0, 0, NULL},
    {CONF_SECTION_SERVER, "ping_interval_ms", CONF_TYPE_UINT, CONF_FIELD(ping_interval_ms), 0,
     3600000, 0, 0, NULL},
    {CONF_SECTION_SERVER, "ping_timeout_ms", CONF_TYPE_UINT, CONF_FIELD(ping_timeout_ms), 100,
     600000, 0, 0, NULL},
    {CONF_SECTION_SERVER, "allowed_origins", CONF_TYPE_STRING, CONF_FIELD(allowed_origins), 0, 0, 0,
     0, NULL},
    {CONF_SECTION_SERVER, "max_query_bytes", CONF_TYPE_UINT, CONF_FIELD(max_query_bytes), 1,
     CONF_MAX_QUERY_BYTES, 0, 0, NULL},
    {CONF_SECTION_SERVER, "max_result_bytes", CONF_TYPE_UINT, CONF_FIELD(max_result_bytes), 1024,
     16777216, 0, 0, NULL},
    {CONF_SECTION_SERVER, "max_message_bytes", CONF_TYPE_UINT, CONF_FIELD(max_message_bytes), 64,
     1048576, 0, 0, NULL},
    {CONF_SECTION_SERVER, "min_query_chars", CONF_TYPE_UINT, CONF_FIELD(min_query_chars), 0, 1024,
     0, 0, NULL},
    {CONF_SECTION_SERVER, "shm_name", CONF_TYPE_SHM_NAME, CONF_FIELD(shm_name), 0, 0, 0, 0, NULL},
    {CONF_SECTION_SERVER, "log_level", CONF_TYPE_LOG_LEVEL, CONF_FIELD(log_level), 0, 0, 0, 0,
     NULL},
    {CONF_SECTION_SERVER, "control_socket", CONF_TYPE_SOCKET_PATH, CONF_FIELD(control_socket), 0, 0,
     0, 0, NULL},
    {CONF_SECTION_SERVER, "metrics_allow", CONF_TYPE_PREFIXES, CONF_FIELD(metrics_allow), 0, 0, 0,
     0, NULL},
    {CONF_SECTION_SERVER, "user", CONF_TYPE_ACCOUNT, CONF_FIELD(user), 0, 0, 0, 0, NULL},
    {CONF_SECTION_SERVER, "group", CONF_TYPE_ACCOUNT, CONF_FIELD(group), 0, 0, 0, 0, NULL},
    {CONF_SECTION_SERVER, "tls_cert", CONF_TYPE_PATH, CONF_FIELD(tls_cert), 0, 0, 0, 0, NULL},
    {CONF_SECTION_SERVER, "tls_key", CONF_TYPE_PATH, CONF_FIELD(tls_key), 0, 0, 0, 0, NULL},
    {CONF_SECTION_API, "url", CONF_TYPE_URL, CONF_FIELD(api_url), 0, 0, 1, 0, NULL},
    {CONF_SECTION_API, "timeout_ms", CONF_TYPE_UINT, CONF_FIELD(api_timeout_ms), 1, 600000, 0, 0,
     NULL},
    {CONF_SECTION_API, "user_agent", CONF_TYPE_STRING, CONF_FIELD(user_agent), 0, 0, 0, 0, NULL},
    {CONF_SECTION_API, "header", CONF_TYPE_HEADER, CONF_FIELD(headers), 0, 0, 0, 1, NULL},
    {CONF_SECTION_API, "rate", CONF_TYPE_RATE, CONF_FIELD(rate_milli), 0, 0, 1, 0, NULL},
    {CONF_SECTION_API, "burst", CONF_TYPE_UINT, CONF_FIELD(burst), 1, CONF_MAX_BURST, 1, 0, NULL},
    {CONF_SECTION_API, "max_wait_ms", CONF_TYPE_UINT, CONF_FIELD(max_wait_ms), 1, 3600000, 0, 0,
     NULL},
    {CONF_SECTION_API, "retry_base_ms", CONF_TYPE_UINT, CONF_FIELD(retry_base_ms), 1, 60000, 0, 0,
     NULL},
    {CONF_SECTION_API, "retry_max_ms", CONF_TYPE_UINT, CONF_FIELD(retry_max_ms), 1, 600000, 0, 0,
     NULL},
    {CONF_SECTION_API, "rate_limit_backend", CONF_TYPE_CHOICE, CONF_FIELD(rate_limit_backend), 0, 0,
     0, 0, conf_backends},
    {CONF_SECTION_API, "redis_url", CONF_TYPE_REDIS_URL, CONF_FIELD(redis_url), 0, 0, 0, 0, NULL},
    {CONF_SECTION_API, "redis_key_prefix", CONF_TYPE_STRING, CONF_FIELD(redis_key_prefix), 0, 0, 0,
     0, NULL},
    {CONF_SECTION_API, "redis_timeout_ms", CONF_TYPE_UINT, CONF_FIELD(redis_timeout_ms), 10, 60000,
     0, 0, NULL},
    {CONF_SECTION_API, "redis_fallback", CONF_TYPE_CHOICE, CONF_FIELD(redis_fallback), 0, 0, 0, 0,
     conf_fallbacks},
    {CONF_SECTION_API, "expected_hosts", CONF_TYPE_UINT, CONF_FIELD(expected_hosts), 1, 1000, 0, 0,
     NULL},
    {CONF_SECTION_WORKERS, "workers", CONF_TYPE_UINT, CONF_FIELD(workers), 1, 64, 0, 0, NULL},
    {CONF_SECTION_WORKERS, "max_inflight", CONF_TYPE_UINT, CONF_FIELD(max_inflight), 1,
     SHM_MAX_INFLIGHT, 0, 0, NULL},
    {CONF_SECTION_CACHE, "max_bytes", CONF_TYPE_UINT, CONF_FIELD(cache_max_bytes), 0, 1ULL << 40, 0,
     0, NULL},
    {CONF_SECTION_CACHE, "ttl_ms", CONF_TYPE_UINT, CONF_FIELD(cache_ttl_ms), 1, 86400000, 0, 0,
     NULL},
    {CONF_SECTION_CACHE, "shared", CONF_TYPE_CHOICE, CONF_FIELD(cache_shared), 0, 0, 0, 0,
     conf_shared_caches},
    {CONF_SECTION_CACHE, "shared_ttl_ms", CONF_TYPE_UINT, CONF_FIELD(cache_shared_ttl_ms), 1000,
     86400000, 0, 0, NULL},
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
        unsigned first_header_line;
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

static int conf_parse_prefixes(struct conf *conf, const char *value);

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
        snprintf(conf->control_socket, sizeof(conf->control_socket), "%s",
                 CONF_DEFAULT_CONTROL_SOCKET);
        conf_parse_prefixes(conf, "127.0.0.0/8 ::1");
        conf->api_timeout_ms = 2000;
        snprintf(conf->user_agent, sizeof(conf->user_agent), "incsearchd/%s", INCSEARCHD_VERSION);
        conf->max_wait_ms = 10000;
        conf->retry_base_ms = 100;
        conf->retry_max_ms = 2000;
        conf->workers = 2;
        conf->max_inflight = 4;
        conf->cache_max_bytes = 4194304;
        conf->cache_ttl_ms = 60000;
        snprintf(conf->redis_url, sizeof(conf->redis_url), "redis://127.0.0.1:6379/0");
        conf_parse_redis_url(conf->redis_url, &conf->redis);
        snprintf(conf->redis_key_prefix, sizeof(conf->redis_key_prefix), "incsearchd:");
        conf->redis_timeout_ms = 250;
        conf->expected_hosts = 1;
        conf->cache_shared_ttl_ms = 300000;
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

/* Parses "ADDRESS" or "ADDRESS/BITS" into PREFIX. Returns 0 or -1. */
static int conf_parse_prefix(const char *text, struct conf_prefix *prefix)
{
        char addr[INET6_ADDRSTRLEN];
        const char *slash = strchr(text, '/');
        size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
        uint64_t bits = 128;
        struct in_addr v4;

        if (len == 0 || len >= sizeof(addr))
                return -1;
        memcpy(addr, text, len);
        addr[len] = '\0';
        if (slash != NULL && conf_parse_uint(slash + 1, &bits) < 0)
                return -1;
        memset(prefix, 0, sizeof(*prefix));
        if (inet_pton(AF_INET, addr, &v4) == 1) {
                if (slash == NULL)
                        bits = 32;
                if (bits > 32)
                        return -1;
                prefix->addr[10] = 0xff;
                prefix->addr[11] = 0xff;
                memcpy(prefix->addr + 12, &v4, 4);
                prefix->bits = (uint8_t)(bits + 96);
                return 0;
        }
        if (inet_pton(AF_INET6, addr, prefix->addr) != 1 || bits > 128)
                return -1;
        prefix->bits = (uint8_t)bits;
        return 0;
}

/* Parses a space-separated list into conf->metrics_prefixes. Returns 0, or -1 on a bad entry. */
static int conf_parse_prefixes(struct conf *conf, const char *value)
{
        char copy[sizeof(conf->metrics_allow)], *save = NULL;
        unsigned count = 0;

        if (strlen(value) >= sizeof(copy))
                return -1;
        strcpy(copy, value);
        for (char *tok = strtok_r(copy, " \t", &save); tok != NULL;
             tok = strtok_r(NULL, " \t", &save)) {
                if (count == CONF_MAX_METRICS_ALLOW ||
                    conf_parse_prefix(tok, &conf->metrics_prefixes[count]) < 0)
                        return -1;
                count++;
        }
        conf->metrics_prefix_count = count;
        snprintf(conf->metrics_allow, sizeof(conf->metrics_allow), "%s", value);
        return 0;
}

int conf_prefix_match(const struct conf_prefix *prefixes, unsigned count, const uint8_t *addr)
{
        for (unsigned i = 0; i < count; i++) {
                unsigned bits = prefixes[i].bits, whole = bits / 8, rest = bits % 8;

                if (memcmp(prefixes[i].addr, addr, whole) != 0)
                        continue;
                if (rest != 0 &&
                    ((prefixes[i].addr[whole] ^ addr[whole]) & (0xff << (8 - rest)) & 0xff) != 0)
                        continue;
                return 1;
        }
        return 0;
}

/* Copies LEN bytes of TEXT into OUT of SIZE bytes; -1 if they do not fit. */
static int conf_copy(char *out, size_t size, const char *text, size_t len)
{
        if (len >= size)
                return -1;
        memcpy(out, text, len);
        out[len] = '\0';
        return 0;
}

int conf_parse_redis_url(const char *url, struct conf_redis_addr *addr)
{
        const char *s, *at, *host_end, *slash;
        uint64_t n;

        memset(addr, 0, sizeof(*addr));
        addr->port = 6379;
        if (strncmp(url, "unix:", 5) == 0) {
                const char *query;

                s = url + 5;
                while (s[0] == '/' && s[1] == '/')
                        s++;
                query = strchr(s, '?');
                if (s[0] != '/' || conf_copy(addr->path, sizeof(addr->path), s,
                                             query != NULL ? (size_t)(query - s) : strlen(s)) < 0)
                        return -1;
                if (query != NULL) {
                        if (strncmp(query, "?db=", 4) != 0 || conf_parse_uint(query + 4, &n) < 0 ||
                            n > 1000000)
                                return -1;
                        addr->db = (uint32_t)n;
                }
                return 0;
        }
        if (strncmp(url, "redis://", 8) != 0)
                return -1;
        s = url + 8;
        slash = strchr(s, '/');
        at = strchr(s, '@');
        if (at != NULL && (slash == NULL || at < slash)) {
                const char *colon = memchr(s, ':', (size_t)(at - s));

                if (colon == NULL ||
                    conf_copy(addr->user, sizeof(addr->user), s, (size_t)(colon - s)) < 0 ||
                    conf_copy(addr->password, sizeof(addr->password), colon + 1,
                              (size_t)(at - colon - 1)) < 0)
                        return -1;
                s = at + 1;
        }
        host_end = slash != NULL ? slash : s + strlen(s);
        if (s < host_end && s[0] == '[') {
                const char *close = memchr(s, ']', (size_t)(host_end - s));

                if (close == NULL ||
                    conf_copy(addr->host, sizeof(addr->host), s + 1, (size_t)(close - s - 1)) < 0)
                        return -1;
                s = close + 1;
        } else {
                const char *colon = memchr(s, ':', (size_t)(host_end - s));
                const char *end = colon != NULL ? colon : host_end;

                if (conf_copy(addr->host, sizeof(addr->host), s, (size_t)(end - s)) < 0)
                        return -1;
                s = end;
        }
        if (addr->host[0] == '\0')
                return -1;
        if (s < host_end) {
                char port[8];

                if (*s != ':' ||
                    conf_copy(port, sizeof(port), s + 1, (size_t)(host_end - s - 1)) < 0 ||
                    conf_parse_uint(port, &n) < 0 || n == 0 || n > 65535)
                        return -1;
                addr->port = (uint16_t)n;
        }
        if (slash != NULL && slash[1] != '\0') {
                if (conf_parse_uint(slash + 1, &n) < 0 || n > 1000000)
                        return -1;
                addr->db = (uint32_t)n;
        }
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
                if (p->first_header_line == 0)
                        p->first_header_line = p->line;
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
        case CONF_TYPE_SOCKET_PATH:
                if (value[0] != '/') {
                        conf_error(p, p->line,
                                   "invalid value '%s' for %s: expected an absolute path", value,
                                   key->name);
                        return;
                }
                break;
        case CONF_TYPE_PREFIXES:
                if (conf_parse_prefixes(p->conf, value) < 0)
                        conf_error(p, p->line,
                                   "invalid value '%s' for %s: expected at most %d addresses or "
                                   "prefixes such as 127.0.0.1, 10.0.0.0/8 or ::1",
                                   value, key->name, CONF_MAX_METRICS_ALLOW);
                return;
        case CONF_TYPE_ACCOUNT:
                for (const char *c = value; *c != '\0'; c++) {
                        if (!isalnum((unsigned char)*c) && strchr("._-", *c) == NULL) {
                                conf_error(p, p->line,
                                           "invalid value '%s' for %s: expected a user or group "
                                           "name of letters, digits, '.', '_' and '-'",
                                           value, key->name);
                                return;
                        }
                }
                break;
        case CONF_TYPE_CHOICE:
                for (uint32_t i = 0; key->choices[i] != NULL; i++) {
                        if (strcmp(value, key->choices[i]) == 0) {
                                *(uint32_t *)field = i;
                                return;
                        }
                }
                conf_error(p, p->line, "invalid value '%s' for %s: expected %s or %s", value,
                           key->name, key->choices[0], key->choices[1]);
                return;
        case CONF_TYPE_REDIS_URL:
                /* The URL may carry a password, so it is not echoed. */
                if (strlen(value) >= key->size ||
                    conf_parse_redis_url(value, &p->conf->redis) < 0) {
                        conf_error(
                            p, p->line,
                            "invalid %s: expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] "
                            "or unix:/PATH[?db=DB]",
                            key->name);
                        return;
                }
                break;
        case CONF_TYPE_PATH:
                if (value[0] != '\0' && value[0] != '/') {
                        conf_error(p, p->line,
                                   "invalid value '%s' for %s: expected an absolute path", value,
                                   key->name);
                        return;
                }
                break;
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

/* Returns the line that set the key NAME, or the last line if none did. */
static unsigned conf_key_line(const struct conf_parser *p, const char *name)
{
        for (size_t i = 0; i < CONF_KEY_COUNT; i++) {
                if (strcmp(conf_keys[i].name, name) == 0 && p->seen[i] != 0)
                        return p->seen[i];
        }
        return p->line;
}

int conf_load(struct conf *conf, const char *path, char *errors, size_t errors_len)
{
        struct conf_parser p = {
            .conf = conf, .path = path, .errors = errors, .errors_len = errors_len};
        enum conf_section section = CONF_SECTION_NONE;
        char line[4096];
        struct stat st;
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
        if (fstat(fileno(f), &st) < 0)
                st.st_mode = 0;
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
        if (p.first_header_line != 0 && (st.st_mode & (S_IRGRP | S_IROTH)) != 0)
                conf_error(&p, p.first_header_line,
                           "the file contains an API header, which may hold a secret, and is "
                           "readable by %s (mode %04o); run chmod 600 %s and make it owned by the "
                           "user incsearchd runs as",
                           (st.st_mode & S_IROTH) != 0 ? "others" : "its group",
                           (unsigned)(st.st_mode & 07777), path);
        if (p.error_count == 0 && conf->min_query_chars > conf->max_query_bytes)
                conf_error(&p, p.line, "min_query_chars (%u) is larger than max_query_bytes (%u)",
                           conf->min_query_chars, conf->max_query_bytes);
        /* Without a prefix the keys would be plain "bucket", "pause" and "cache:..." */
        if (conf->redis_key_prefix[0] == '\0')
                conf_error(&p, conf_key_line(&p, "redis_key_prefix"),
                           "empty redis_key_prefix: expected a prefix such as incsearchd: that "
                           "keeps incsearchd's keys apart from others in the same database");
        if ((conf->tls_cert[0] == '\0') != (conf->tls_key[0] == '\0'))
                conf_error(&p,
                           conf_key_line(&p, conf->tls_cert[0] != '\0' ? "tls_cert" : "tls_key"),
                           "tls_cert and tls_key must be set together");
        if (conf->redis.password[0] != '\0' && (st.st_mode & (S_IRGRP | S_IROTH)) != 0)
                conf_error(&p, p.line,
                           "redis_url holds a password and the file is readable by %s (mode "
                           "%04o); run chmod 600 %s",
                           (st.st_mode & S_IROTH) != 0 ? "others" : "its group",
                           (unsigned)(st.st_mode & 07777), path);
        return p.error_count;
}

void conf_dump(const struct conf *conf, FILE *out)
{
        int v6 = strchr(conf->listen_host, ':') != NULL;

        fprintf(out, "[server]\n");
        fprintf(out, "listen = %s%s%s:%u\n", v6 ? "[" : "", conf->listen_host, v6 ? "]" : "",
                conf->listen_port);
        if (conf->max_connections == 0)
                fprintf(out, "# max_connections is derived from the open-file limit at start\n");
        else
                fprintf(out, "max_connections = %u\n", conf->max_connections);
        fprintf(out, "max_new_connections_per_second = %u\n", conf->max_new_connections_per_second);
        fprintf(out, "max_connections_per_ip = %u\n", conf->max_connections_per_ip);
        fprintf(out, "handshake_timeout_ms = %u\n", conf->handshake_timeout_ms);
        fprintf(out, "max_header_bytes = %u\n", conf->max_header_bytes);
        fprintf(out, "max_output_bytes = %u\n", conf->max_output_bytes);
        fprintf(out, "ping_interval_ms = %u\n", conf->ping_interval_ms);
        fprintf(out, "ping_timeout_ms = %u\n", conf->ping_timeout_ms);
        fprintf(out, "allowed_origins = %s\n", conf->allowed_origins);
        fprintf(out, "max_query_bytes = %u\n", conf->max_query_bytes);
        fprintf(out, "max_message_bytes = %u\n", conf->max_message_bytes);
        fprintf(out, "max_result_bytes = %u\n", conf->max_result_bytes);
        fprintf(out, "min_query_chars = %u\n", conf->min_query_chars);
        fprintf(out, "shm_name = %s\n", conf->shm_name);
        fprintf(out, "log_level = %s\n", log_level_name(conf->log_level));
        fprintf(out, "control_socket = %s\n", conf->control_socket);
        fprintf(out, "metrics_allow = %s\n", conf->metrics_allow);
        fprintf(out, "user = %s\n", conf->user);
        fprintf(out, "group = %s\n", conf->group);
        fprintf(out, "tls_cert = %s\n", conf->tls_cert);
        fprintf(out, "tls_key = %s\n", conf->tls_key);

        fprintf(out, "\n[api]\n");
        fprintf(out, "url = %s\n", conf->api_url);
        fprintf(out, "timeout_ms = %u\n", conf->api_timeout_ms);
        fprintf(out, "user_agent = %s\n", conf->user_agent);
        for (unsigned i = 0; i < conf->header_count; i++) {
                const char *colon = strchr(conf->headers[i], ':');

                fprintf(out, "header = %.*s: <hidden>\n", (int)(colon - conf->headers[i]),
                        conf->headers[i]);
        }
        fprintf(out, "rate = %llu.%03llu\n", (unsigned long long)(conf->rate_milli / 1000),
                (unsigned long long)(conf->rate_milli % 1000));
        fprintf(out, "burst = %u\n", conf->burst);
        fprintf(out, "max_wait_ms = %u\n", conf->max_wait_ms);
        fprintf(out, "retry_base_ms = %u\n", conf->retry_base_ms);
        fprintf(out, "retry_max_ms = %u\n", conf->retry_max_ms);
        fprintf(out, "rate_limit_backend = %s\n", conf_backends[conf->rate_limit_backend]);
        if (conf->redis.password[0] != '\0')
                fprintf(out, "redis_url = <hidden>\n");
        else
                fprintf(out, "redis_url = %s\n", conf->redis_url);
        fprintf(out, "redis_key_prefix = %s\n", conf->redis_key_prefix);
        fprintf(out, "redis_timeout_ms = %u\n", conf->redis_timeout_ms);
        fprintf(out, "redis_fallback = %s\n", conf_fallbacks[conf->redis_fallback]);
        fprintf(out, "expected_hosts = %u\n", conf->expected_hosts);

        fprintf(out, "\n[workers]\n");
        fprintf(out, "workers = %u\n", conf->workers);
        fprintf(out, "max_inflight = %u\n", conf->max_inflight);

        fprintf(out, "\n[cache]\n");
        fprintf(out, "max_bytes = %llu\n", (unsigned long long)conf->cache_max_bytes);
        fprintf(out, "ttl_ms = %u\n", conf->cache_ttl_ms);
        fprintf(out, "shared = %s\n", conf_shared_caches[conf->cache_shared]);
        fprintf(out, "shared_ttl_ms = %u\n", conf->cache_shared_ttl_ms);
}

static void conf_note_change(char *changed, size_t len, int *count, const char *name)
{
        size_t used = strlen(changed);

        snprintf(changed + used, len - used, "%s%s", used > 0 ? " " : "", name);
        (*count)++;
}

#define CONF_KEEP(field, name)                                                                     \
        do {                                                                                       \
                if (memcmp(&current->field, &next->field, sizeof(next->field)) != 0) {             \
                        conf_note_change(changed, changed_len, &count, name);                      \
                        memcpy(&next->field, &current->field, sizeof(next->field));                \
                }                                                                                  \
        } while (0)

int conf_keep_restart_keys(const struct conf *current, struct conf *next, char *changed,
                           size_t changed_len)
{
        int count = 0;

        changed[0] = '\0';
        if (strcmp(current->listen_host, next->listen_host) != 0 ||
            current->listen_port != next->listen_port) {
                conf_note_change(changed, changed_len, &count, "listen");
                strcpy(next->listen_host, current->listen_host);
                next->listen_port = current->listen_port;
        }
        /* 0 in NEXT means the key is left out, so the value derived at start stays. */
        if (next->max_connections == 0)
                next->max_connections = current->max_connections;
        CONF_KEEP(max_connections, "max_connections");
        CONF_KEEP(max_query_bytes, "max_query_bytes");
        CONF_KEEP(workers, "workers");
        /* Switching live would let the unused bucket's tokens add to the shared limit's. */
        CONF_KEEP(rate_limit_backend, "rate_limit_backend");
        if (strcmp(current->shm_name, next->shm_name) != 0) {
                conf_note_change(changed, changed_len, &count, "shm_name");
                strcpy(next->shm_name, current->shm_name);
        }
        if (strcmp(current->control_socket, next->control_socket) != 0) {
                conf_note_change(changed, changed_len, &count, "control_socket");
                strcpy(next->control_socket, current->control_socket);
        }
        if (strcmp(current->user, next->user) != 0) {
                conf_note_change(changed, changed_len, &count, "user");
                strcpy(next->user, current->user);
        }
        if (strcmp(current->group, next->group) != 0) {
                conf_note_change(changed, changed_len, &count, "group");
                strcpy(next->group, current->group);
        }
        return count;
}
