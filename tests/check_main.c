/*
 * Runs every suite. Each test runs in a child process (Check's default), so a crash fails one
 * test and the rest go on. CK_RUN_SUITE selects one suite by name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "suites.h"

int main(void)
{
        SRunner *runner;
        unsigned kept;
        int failed;

        harness_begin();
        runner = srunner_create(conf_suite());
        srunner_add_suite(runner, bucket_suite());
        srunner_add_suite(runner, slot_suite());
        srunner_add_suite(runner, ws_suite());
        srunner_add_suite(runner, api_suite());
        srunner_add_suite(runner, places_suite());
        srunner_add_suite(runner, http_suite());
        srunner_add_suite(runner, limit_suite());
        srunner_add_suite(runner, e2e_suite());
        srunner_add_suite(runner, ws_protocol_suite());
        srunner_add_suite(runner, defence_suite());
        srunner_add_suite(runner, sched_suite());
        srunner_add_suite(runner, query_suite());
        srunner_add_suite(runner, ops_suite());
        srunner_add_suite(runner, nginx_suite());
        srunner_add_suite(runner, redis_suite());
        srunner_add_suite(runner, rcache_suite());
        srunner_add_suite(runner, tls_suite());
        srunner_run_all(runner, CK_NORMAL);
        failed = srunner_ntests_failed(runner);
        srunner_free(runner);
        /* A failed test skips its teardown: its folders stay for reading, its segments go. */
        kept = harness_sweep(failed != 0 || getenv("INCSEARCHD_KEEP_LOGS") != NULL);
        if (kept > 0)
                fprintf(stderr, "kept %u test folders with their logs: /tmp/incsearchd-run%d-*\n",
                        kept, (int)getpid());
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
