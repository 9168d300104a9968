/*
 * The configuration file (/etc/incsearchd.conf by default): "[section]" headers, "key = value"
 * lines and "#" comments. The daemon and every worker read the same file.
 */
#ifndef INCSEARCHD_CONF_H
#define INCSEARCHD_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#define CONF_DEFAULT_PATH "/etc/incsearchd.conf"
#define CONF_MAX_HEADERS 16
#define CONF_MAX_QUERY_BYTES 65536        /* upper bound of max_query_bytes */
#define CONF_MAX_RATE_MILLI 1000000000ULL /* 1,000,000 tokens per second */
#define CONF_MAX_BURST 1000000
#define CONF_MAX_CONNECTIONS 16777216
#define CONF_DEFAULT_CONTROL_SOCKET "/run/incsearchd/control.sock"
#define CONF_MAX_METRICS_ALLOW 16

/* An address prefix such as 127.0.0.0/8; IPv4 is stored as IPv4-mapped IPv6 with prefix + 96. */
struct conf_prefix {
        uint8_t addr[16];
        uint8_t bits; /* 0 to 128 */
};

/* Location of the token bucket. */
enum conf_rate_backend {
        CONF_RATE_SHM,   /* this host's shared memory */
        CONF_RATE_REDIS, /* a Redis server that every host shares */
};

/* Workers' behaviour while Redis cannot be reached. */
enum conf_redis_fallback {
        CONF_FALLBACK_CLOSED,      /* no API calls; queries end in overloaded after max_wait_ms */
        CONF_FALLBACK_LOCAL_SHARE, /* spend rate / expected_hosts from the local bucket */
};

/* A parsed redis_url: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:PATH[?db=DB]. */
struct conf_redis_addr {
        char host[256]; /* empty for a Unix socket */
        uint16_t port;  /* 6379 unless given */
        char path[108]; /* the Unix socket, empty for TCP */
        char user[64];  /* empty for the default user */
        char password[256];
        uint32_t db;
};

struct conf {
        char path[4096];

        /* [server] */
        char listen_host[256];
        uint16_t listen_port;
        uint32_t max_connections; /* open connections and shared-memory slots; 0 until derived */
        uint32_t max_new_connections_per_second; /* accepted per second, 0 for no limit */
        uint32_t max_connections_per_ip;         /* 0 for no limit */
        uint32_t handshake_timeout_ms;           /* from accept to the end of the request head */
        uint32_t max_header_bytes;               /* largest HTTP request head, in bytes */
        uint32_t max_output_bytes;               /* queued outgoing bytes per connection */
        uint32_t ping_interval_ms;  /* quiet time before the server pings, 0 for never */
        uint32_t ping_timeout_ms;   /* time a pinged peer has to send anything */
        char allowed_origins[2048]; /* space-separated exact origins, empty for any */
        uint32_t max_query_bytes;   /* maximum query length, in bytes of UTF-8 */
        uint32_t max_result_bytes;  /* largest API response body accepted, in bytes */
        uint32_t max_message_bytes; /* largest WebSocket message accepted from a client, in bytes */
        uint32_t min_query_chars;   /* shorter queries get empty results without an API call */
        char shm_name[64];          /* POSIX shared-memory object, "/name" */
        enum log_level log_level;
        char control_socket[108]; /* Unix socket path for incsearchctl, sun_path sized */
        char metrics_allow[1024]; /* space-separated addresses and prefixes allowed GET /metrics */
        struct conf_prefix metrics_prefixes[CONF_MAX_METRICS_ALLOW]; /* metrics_allow, parsed */
        unsigned metrics_prefix_count;
        char user[64];       /* user to switch to when started as root, empty to stay root */
        char group[64];      /* group for that and for the control socket, empty for user's group */
        char tls_cert[1024]; /* PEM certificate chain; with tls_key, the listener speaks TLS */
        char tls_key[1024];  /* PEM private key for tls_cert */

        /* [api] */
        char api_url[2048]; /* contains "{q}", replaced by the percent-encoded query */
        uint32_t api_timeout_ms;
        char user_agent[256];
        char headers[CONF_MAX_HEADERS][1024]; /* "Name: value" lines sent with every call */
        unsigned header_count;
        uint64_t rate_milli;    /* average API calls allowed, in thousandths of a call per second */
        uint32_t burst;         /* calls that may go at once after an idle time */
        uint32_t max_wait_ms;   /* a query not answered within this gets upstream_rejected */
        uint32_t retry_base_ms; /* first backoff after a timeout, connection error or 5xx */
        uint32_t retry_max_ms;  /* cap of the doubling backoff, also for a 429 without a delay */
        uint32_t rate_limit_backend;  /* enum conf_rate_backend */
        char redis_url[1024];         /* as written, for the dump and for logs */
        struct conf_redis_addr redis; /* redis_url, parsed */
        char redis_key_prefix[128];   /* prepended to every key incsearchd writes in Redis */
        uint32_t redis_timeout_ms;    /* connect and reply deadline of each Redis command */
        uint32_t redis_fallback;      /* enum conf_redis_fallback */
        uint32_t expected_hosts;      /* hosts sharing the limit, for local_share */

        /* [workers] */
        uint32_t workers;
        uint32_t max_inflight; /* API calls one worker runs at once */

        /* [cache] */
        uint64_t cache_max_bytes;     /* result cache size in bytes; 0 turns the cache off */
        uint32_t cache_ttl_ms;        /* age after which a cached result is no longer used */
        uint32_t cache_shared;        /* 1: results are also shared through Redis (redis_url) */
        uint32_t cache_shared_ttl_ms; /* lifetime of a result stored in Redis */
};

/*
 * Loads PATH into CONF, starting from the defaults. Every bad line is reported as
 * "path:line: message" into ERRORS, newline-separated and truncated to ERRORS_LEN.
 * Returns the number of errors, so 0 means CONF is complete and valid.
 */
int conf_load(struct conf *conf, const char *path, char *errors, size_t errors_len);

/*
 * Writes CONF to OUT as a config file with every key, in a fixed order. Header values are
 * replaced by "<hidden>", since they may carry an API key.
 */
void conf_dump(const struct conf *conf, FILE *out);

/*
 * Keeps in NEXT the values from CURRENT of the keys that apply only at start (listen,
 * max_connections, shm_name, max_query_bytes, workers, rate_limit_backend, control_socket,
 * user and group), and
 * writes the names of those whose value NEXT had changed into CHANGED, space-separated.
 * Returns how many changed.
 */
int conf_keep_restart_keys(const struct conf *current, struct conf *next, char *changed,
                           size_t changed_len);

/* Parses a redis_url into ADDR. Returns 0, or -1 if it is not one of the two forms. */
int conf_parse_redis_url(const char *url, struct conf_redis_addr *addr);

/* Returns 1 if the 16-byte address ADDR (IPv4 mapped into IPv6) is in one of the prefixes. */
int conf_prefix_match(const struct conf_prefix *prefixes, unsigned count, const uint8_t *addr);

#endif
