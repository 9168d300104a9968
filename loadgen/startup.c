/*
 * The startup scenario, time from exec to an accepted TCP connect on the listening port, and the
 * free-port helper the bench script uses to place its instances.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

#define STARTUP_TIMEOUT_MS 10000
#define STARTUP_POLL_NS 200000

static int startup_try_connect(int port)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;

        if (fd >= 0)
                close(fd);
        return ok;
}

int lg_port_main(int argc, char **argv)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sin);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        (void)argc;
        (void)argv;
        if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
            getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
                lg_fatal("cannot find a free port on 127.0.0.1: %s", strerror(errno));
        close(fd);
        printf("%d\n", ntohs(sin.sin_port));
        return 0;
}

int lg_startup_main(int argc, char **argv)
{
        struct timespec pause = {0, STARTUP_POLL_NS};
        int port = 0, opt, status;
        uint64_t start;
        pid_t pid;

        while ((opt = getopt(argc, argv, "p:")) != -1) {
                if (opt != 'p')
                        return 1;
                port = (int)lg_parse_number(optarg, 1, 65535, "-p");
        }
        if (port == 0 || optind >= argc)
                lg_fatal("startup needs -p PORT -- PROGRAM ARG...");

        start = lg_now_ns();
        pid = fork();
        if (pid < 0)
                lg_fatal("fork failed: %s", strerror(errno));
        if (pid == 0) {
                /* stdout may be a pipe the bench reads to its end: keep the daemon off it. */
                dup2(STDERR_FILENO, STDOUT_FILENO);
                execv(argv[optind], argv + optind);
                fprintf(stderr, "cannot run %s: %s\n", argv[optind], strerror(errno));
                _exit(127);
        }

        while (!startup_try_connect(port)) {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        lg_fatal("%s exited before it accepted on port %d; see its log",
                                 argv[optind], port);
                if (lg_now_ns() - start > STARTUP_TIMEOUT_MS * LG_NS_PER_MS) {
                        kill(pid, SIGTERM);
                        lg_fatal("%s did not accept on port %d within %d ms; stopped it",
                                 argv[optind], port, STARTUP_TIMEOUT_MS);
                }
                nanosleep(&pause, NULL);
        }
        printf("startup_ms=%.2f\npid=%ld\n", (double)(lg_now_ns() - start) / 1e6, (long)pid);
        return 0;
}
