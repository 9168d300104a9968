#include "ipc.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

int ipc_read_full(int fd, void *buf, size_t len)
{
        size_t got = 0;

        while (got < len) {
                ssize_t n = read(fd, (char *)buf + got, len - got);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                got += (size_t)n;
        }
        return 0;
}

int ipc_check_header(const struct ipc_header *header, size_t max_body)
{
        if (header->magic != IPC_MAGIC || header->type != IPC_RESULT)
                return -1;
        if (header->length > max_body)
                return -1;
        return 0;
}

int ipc_send(int fd, const struct ipc_header *header, const void *body)
{
        struct iovec iov[2] = {
            {.iov_base = (void *)header, .iov_len = sizeof(*header)},
            {.iov_base = (void *)body, .iov_len = header->length},
        };
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};

        while (msg.msg_iovlen > 0) {
                ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -1;
                }
                while (msg.msg_iovlen > 0 && (size_t)n >= msg.msg_iov[0].iov_len) {
                        n -= (ssize_t)msg.msg_iov[0].iov_len;
                        msg.msg_iov++;
                        msg.msg_iovlen--;
                }
                if (msg.msg_iovlen > 0) {
                        msg.msg_iov[0].iov_base = (char *)msg.msg_iov[0].iov_base + n;
                        msg.msg_iov[0].iov_len -= (size_t)n;
                }
        }
        return 0;
}
