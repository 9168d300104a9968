/*
 * Messages between the daemon and a worker over their Unix stream socket: a fixed header
 * followed by LENGTH bytes of body. The daemon first sends its configuration, so that a worker
 * restarted later runs with the same settings even if the file has changed since. The worker
 * then sends one result per query, whose body is the complete JSON text that the daemon sends
 * to the client as one WebSocket text frame.
 */
#ifndef INCSEARCHD_IPC_H
#define INCSEARCHD_IPC_H

#include <stddef.h>
#include <stdint.h>

#define IPC_MAGIC 0x49504331u /* "IPC1" in memory order */

/* The byte the daemon sends a worker when a query is queued. It differs from the first byte of
 * IPC_MAGIC, so the worker distinguishes wakes from configuration messages by the first byte. */
#define IPC_WAKE 'w'

enum ipc_type {
        IPC_RESULT = 1, /* worker to daemon: the reply to one query, results or an error */
        IPC_CONF = 2,   /* daemon to worker: the struct conf the daemon runs with */
};

/* The outcome of an API call, for counters. The body already carries what the client needs. */
enum ipc_status {
        IPC_STATUS_OK,
        IPC_STATUS_TIMEOUT,
        IPC_STATUS_UPSTREAM_ERROR, /* connection failed, 5xx, non-JSON or oversized body */
        IPC_STATUS_REJECTED,       /* 429 or another 4xx */
};

struct ipc_header {
        uint32_t magic;
        uint32_t type;   /* enum ipc_type */
        uint32_t length; /* body bytes that follow */
        uint32_t slot;
        uint32_t generation;
        uint32_t status; /* enum ipc_status */
        uint64_t seq;
        uint32_t api_us; /* time spent in the API call, microseconds */
        uint32_t reserved;
};

/* The largest body a worker may send: the API's body plus the JSON envelope around it and the
 * query, whose every byte may take six when escaped. */
static inline size_t ipc_max_body(uint32_t max_result_bytes, uint32_t max_query_bytes)
{
        return (size_t)max_result_bytes + (size_t)max_query_bytes * 6 + 512;
}

/*
 * Checks a received header: magic, type and a length up to MAX_BODY. Returns 0 or -1; a
 * failure means the sender is broken, not that the data is late.
 */
int ipc_check_header(const struct ipc_header *header, size_t max_body);

/* Writes a whole message to a blocking socket, retrying short writes. Returns 0 or -1. */
int ipc_send(int fd, const struct ipc_header *header, const void *body);

/* Reads exactly LEN bytes from a blocking socket. Returns 0, or -1 on error or end of file. */
int ipc_read_full(int fd, void *buf, size_t len);

#endif
