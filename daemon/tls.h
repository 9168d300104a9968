/*
 * TLS on the listener: one server context built from tls_cert and tls_key, used for the
 * connections accepted after it is installed and replaced on reload.
 */
#ifndef INCSEARCHD_TLS_H
#define INCSEARCHD_TLS_H

#include <stddef.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf.h"

/*
 * Builds a context from CONF's files and frees it: the check that incsearchd -t runs. Returns 0
 * when CONF has no TLS or its files are usable, else -1 with the path and OpenSSL's reason in
 * ERROR.
 */
int tls_check(const struct conf *conf, char *error, size_t error_len);

/*
 * Builds the context for CONF and installs it for new connections, or turns TLS off when CONF
 * has no tls_cert. Open connections keep the context they were accepted with. Returns 0, or -1
 * with the reason in ERROR, in which case the running context stays.
 */
int tls_configure(const struct conf *conf, char *error, size_t error_len);

/* Returns 1 while new connections get TLS. */
int tls_enabled(void);

/*
 * Returns a bufferevent for an accepted socket FD: a TLS one in the accepting state while TLS is
 * on, else a plain one. NULL when out of memory; FD stays open then.
 */
struct bufferevent *tls_bufferevent_new(struct event_base *base, evutil_socket_t fd);

/* Returns 1 when BEV is plain or its TLS handshake has finished. */
int tls_handshake_done(struct bufferevent *bev);

/* Stores why BEV failed in OUT: OpenSSL's reason on a TLS connection, else the socket error. */
void tls_describe_error(struct bufferevent *bev, char *out, size_t len);

/* Sends close_notify, without waiting for the peer's, on a TLS connection that is set up. */
void tls_close_notify(struct bufferevent *bev);

/* Frees the running context; open connections keep their reference. */
void tls_free(void);

#endif
