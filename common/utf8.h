/* Strict UTF-8 validation (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. The WebSocket codec checks text frames with it and workers check API bodies. */
#ifndef INCSEARCHD_UTF8_H
#define INCSEARCHD_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Incremental UTF-8 validation: start with state UTF8_ACCEPT, feed every chunk, and the
 * text is valid if the final state is UTF8_ACCEPT. UTF8_REJECT is final. */
#define UTF8_ACCEPT 0
#define UTF8_REJECT 1
uint32_t utf8_feed(uint32_t state, const uint8_t *data, size_t len);

#endif
