/*
 * TLS on the listener with OpenSSL and libevent's bufferevent_openssl. The running context
 * belongs to this file. Every connection's SSL holds its own reference to the context it was
 * accepted with, so a reload that installs a new one leaves open connections as they are.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "log.h"
#include "tls.h"

/* The context for connections accepted from now on; NULL while TLS is off. */
static SSL_CTX *tls_ctx;

/* Stores the reason of OpenSSL's latest error in OUT and clears the thread's error queue. */
static void tls_openssl_reason(char *out, size_t len)
{
        unsigned long err = ERR_peek_last_error();
        const char *reason = ERR_reason_error_string(err);

        if (err == 0)
                snprintf(out, len, "no reason given");
        else if (reason != NULL)
                snprintf(out, len, "%s", reason);
        else
                ERR_error_string_n(err, out, len);
        ERR_clear_error();
}

/* Opens PATH for a clearer error than OpenSSL's when it cannot be read. */
static int tls_check_readable(const char *key, const char *path, char *error, size_t error_len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0) {
                snprintf(error, error_len,
                         "%s %s: %s; it must be readable by the user incsearchd runs as", key, path,
                         strerror(errno));
                return -1;
        }
        close(fd);
        return 0;
}

/* Declines every passphrase prompt: OpenSSL's default would wait for one on the terminal. */
static int tls_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
        (void)buf;
        (void)size;
        (void)rwflag;
        (void)arg;
        return 0;
}

static EVP_PKEY *tls_read_key(const char *path, char *error, size_t error_len)
{
        char reason[256];
        EVP_PKEY *key = NULL;
        BIO *bio = BIO_new_file(path, "r");

        if (bio != NULL)
                key = PEM_read_bio_PrivateKey(bio, NULL, tls_no_passphrase, NULL);
        BIO_free(bio);
        if (key == NULL) {
                tls_openssl_reason(reason, sizeof(reason));
                snprintf(error, error_len,
                         "tls_key %s: no PEM private key read (OpenSSL: %s); the key must be "
                         "unencrypted PEM",
                         path, reason);
        }
        return key;
}

/* Selects http/1.1 when the client offers it, and no protocol otherwise. */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                           const unsigned char *in, unsigned int in_len, void *arg)
{
        static const unsigned char http11[] = "\x08http/1.1";
        unsigned char *selected;

        (void)ssl;
        (void)arg;
        if (SSL_select_next_proto(&selected, out_len, http11, sizeof(http11) - 1, in, in_len) !=
            OPENSSL_NPN_NEGOTIATED)
                return SSL_TLSEXT_ERR_NOACK;
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
}

/* Builds the context from CONF's files. Returns it, or NULL with the reason in ERROR. */
static SSL_CTX *tls_context_new(const struct conf *conf, char *error, size_t error_len)
{
        char reason[256];
        EVP_PKEY *key = NULL;
        SSL_CTX *ctx = NULL;

        if (tls_check_readable("tls_cert", conf->tls_cert, error, error_len) < 0 ||
            tls_check_readable("tls_key", conf->tls_key, error, error_len) < 0)
                return NULL;
        ctx = SSL_CTX_new(TLS_server_method());
        if (ctx == NULL) {
                tls_openssl_reason(reason, sizeof(reason));
                snprintf(error, error_len, "cannot create a TLS context: %s", reason);
                return NULL;
        }
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        /* A peer that closes without close_notify reads as end of file, as browsers do. */
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
        /* Idle connections then hold no record buffers: 15 KiB each instead of 24 (OpenSSL 3.0,
         * 1000 idle WSS connections). */
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);

        if (SSL_CTX_use_certificate_chain_file(ctx, conf->tls_cert) != 1) {
                tls_openssl_reason(reason, sizeof(reason));
                snprintf(error, error_len, "tls_cert %s: no PEM certificate read (OpenSSL: %s)",
                         conf->tls_cert, reason);
                goto fail;
        }
        key = tls_read_key(conf->tls_key, error, error_len);
        if (key == NULL)
                goto fail;
        if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), key) != 1) {
                tls_openssl_reason(reason, sizeof(reason));
                snprintf(error, error_len,
                         "tls_key %s does not match the certificate in tls_cert %s (OpenSSL: %s)",
                         conf->tls_key, conf->tls_cert, reason);
                goto fail;
        }
        if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
                tls_openssl_reason(reason, sizeof(reason));
                snprintf(error, error_len, "tls_key %s: cannot use the key (OpenSSL: %s)",
                         conf->tls_key, reason);
                goto fail;
        }
        EVP_PKEY_free(key);
        return ctx;

fail:
        EVP_PKEY_free(key);
        SSL_CTX_free(ctx);
        return NULL;
}

int tls_check(const struct conf *conf, char *error, size_t error_len)
{
        SSL_CTX *ctx;

        if (conf->tls_cert[0] == '\0')
                return 0;
        ctx = tls_context_new(conf, error, error_len);
        if (ctx == NULL)
                return -1;
        SSL_CTX_free(ctx);
        return 0;
}

/* Logs the subject, expiry and SHA-256 fingerprint of CTX's certificate from PATH. */
static void tls_log_certificate(SSL_CTX *ctx, const char *path)
{
        X509 *cert = SSL_CTX_get0_certificate(ctx);
        unsigned char digest[EVP_MAX_MD_SIZE];
        char subject[256], expiry[32] = "?", fingerprint[2 * EVP_MAX_MD_SIZE + 1] = "";
        unsigned digest_len = 0;
        struct tm tm;

        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1)
                strftime(expiry, sizeof(expiry), "%Y-%m-%d %H:%M:%S UTC", &tm);
        if (X509_digest(cert, EVP_sha256(), digest, &digest_len) == 1)
                for (unsigned i = 0; i < digest_len; i++)
                        snprintf(fingerprint + 2 * i, 3, "%02x", digest[i]);
        log_info("TLS certificate %s: subject %s, valid until %s, SHA-256 %s", path, subject,
                 expiry, fingerprint);
        if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
                log_warn("TLS certificate %s expired at %s; clients will reject it", path, expiry);
}

int tls_configure(const struct conf *conf, char *error, size_t error_len)
{
        SSL_CTX *ctx = NULL;

        if (conf->tls_cert[0] != '\0') {
                ctx = tls_context_new(conf, error, error_len);
                if (ctx == NULL)
                        return -1;
                tls_log_certificate(ctx, conf->tls_cert);
        }
        if (tls_ctx != NULL && ctx == NULL)
                log_info("TLS off: new connections are plain HTTP and WebSocket");
        else if (tls_ctx == NULL && ctx != NULL)
                log_info("TLS on: new connections are HTTPS and WSS");
        SSL_CTX_free(tls_ctx);
        tls_ctx = ctx;
        return 0;
}

int tls_enabled(void)
{
        return tls_ctx != NULL;
}

struct bufferevent *tls_bufferevent_new(struct event_base *base, evutil_socket_t fd)
{
        struct bufferevent *bev;
        SSL *ssl;

        if (tls_ctx == NULL)
                return bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
        ssl = SSL_new(tls_ctx);
        if (ssl == NULL) {
                ERR_clear_error();
                return NULL;
        }
        /* On failure libevent 2.1 frees SSL itself, because of BEV_OPT_CLOSE_ON_FREE. */
        bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL)
                return NULL;
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        return bev;
}

int tls_handshake_done(struct bufferevent *bev)
{
        SSL *ssl = bufferevent_openssl_get_ssl(bev);

        return ssl == NULL || SSL_is_init_finished(ssl);
}

void tls_describe_error(struct bufferevent *bev, char *out, size_t len)
{
        unsigned long err = bufferevent_get_openssl_error(bev);
        int socket_error = EVUTIL_SOCKET_ERROR();
        const char *reason;

        if (err != 0) {
                reason = ERR_reason_error_string(err);
                if (reason != NULL)
                        snprintf(out, len, "%s", reason);
                else
                        ERR_error_string_n(err, out, len);
        } else if (socket_error != 0) {
                snprintf(out, len, "%s", evutil_socket_error_to_string(socket_error));
        } else {
                snprintf(out, len, "connection closed by the peer");
        }
}

void tls_close_notify(struct bufferevent *bev)
{
        SSL *ssl = bufferevent_openssl_get_ssl(bev);

        if (ssl == NULL || !SSL_is_init_finished(ssl))
                return;
        /* One non-blocking try: the socket is closed next, whatever it returns. */
        SSL_shutdown(ssl);
        ERR_clear_error();
}

void tls_free(void)
{
        SSL_CTX_free(tls_ctx);
        tls_ctx = NULL;
}
