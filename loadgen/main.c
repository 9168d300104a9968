/* incsearch-loadgen: picks the scenario named by the first argument. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

struct lg_scenario {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *usage;
};

static const struct lg_scenario lg_scenarios[] = {
    {"port", lg_port_main, "port\n    print a TCP port on 127.0.0.1 that was free a moment ago"},
    {"startup", lg_startup_main,
     "startup -p PORT -- PROGRAM ARG...\n"
     "    start PROGRAM, print the ms until 127.0.0.1:PORT accepts and its pid; leave it running"},
    {"hold", lg_hold_main,
     "hold -p PORT -n CLIENTS [-S FIRST] [-s COUNT] [-t STALL_MS] [-d SECONDS]\n"
     "    open CLIENTS idle WebSockets from 127.0.0.FIRST.. (COUNT addresses), print \"ready\",\n"
     "    keep them until SIGTERM or SECONDS (default 120)"},
    {"ingest", lg_ingest_main,
     "ingest -p PORT -P DAEMON_PID [-n CLIENTS] [-d SECONDS] [-f json|text]\n"
     "    send query frames as fast as possible, then a ping per client; print frames per\n"
     "    second and the daemon's CPU seconds per million frames"},
    {"latency", lg_latency_main,
     "latency -p PORT -a API_PORT [-n CLIENTS] [-r KEYS_PER_S] [-d SECONDS]\n"
     "    serve a fast API on API_PORT; time keystroke-to-request and response-to-client"},
    {"typing", lg_typing_main,
     "typing -p PORT -A API_PORT [-n CLIENTS] [-k KEYS_PER_S] [-d SECONDS] [-w DRAIN_S]\n"
     "    clients type words; print API calls per word, last-query waits, stale results"},
};

static void lg_usage(FILE *out)
{
        fprintf(out, "usage: incsearch-loadgen SCENARIO [options]\n"
                     "Load only the incsearchd and API you started on 127.0.0.1.\n"
                     "Results are key=value lines on stdout. Scenarios:\n");
        for (size_t i = 0; i < sizeof(lg_scenarios) / sizeof(lg_scenarios[0]); i++)
                fprintf(out, "  %s\n", lg_scenarios[i].usage);
}

int main(int argc, char **argv)
{
        if (argc < 2 || strcmp(argv[1], "-h") == 0) {
                lg_usage(argc < 2 ? stderr : stdout);
                return argc < 2;
        }
        srandom((unsigned)(time(NULL) ^ getpid()));
        lg_raise_nofile();
        for (size_t i = 0; i < sizeof(lg_scenarios) / sizeof(lg_scenarios[0]); i++) {
                if (strcmp(argv[1], lg_scenarios[i].name) == 0)
                        return lg_scenarios[i].run(argc - 1, argv + 1);
        }
        fprintf(stderr, "incsearch-loadgen: unknown scenario \"%s\"\n", argv[1]);
        lg_usage(stderr);
        return 1;
}
