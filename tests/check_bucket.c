#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bucket.h"
#include "shm.h"
#include "suites.h"

#define NS_PER_S 1000000000ULL

/* Spends tokens until the bucket refuses, at one instant. Returns how many it granted. */
static unsigned bucket_drain(struct bucket *b, uint64_t now)
{
        uint64_t wait;
        unsigned granted = 0;

        while (bucket_take(b, now, &wait) == 0)
                granted++;
        return granted;
}

START_TEST(bucket_starts_full)
{
        struct bucket b;

        bucket_init(&b, 10000, 5, NS_PER_S);
        ck_assert_uint_eq(bucket_drain(&b, NS_PER_S), 5);
}
END_TEST

START_TEST(bucket_refills_at_rate)
{
        struct bucket b;
        uint64_t wait = 0;

        bucket_init(&b, 10000, 5, 0); /* 10 per second */
        ck_assert_uint_eq(bucket_drain(&b, 0), 5);
        ck_assert_int_eq(bucket_take(&b, 0, &wait), -1);
        ck_assert_uint_eq(wait, 100000000ULL);
        ck_assert_int_eq(bucket_take(&b, 99999999ULL, &wait), -1);
        ck_assert_uint_eq(wait, 1);
        ck_assert_int_eq(bucket_take(&b, 100000000ULL, &wait), 0);
        /* Half a second later, five more tokens have accrued. */
        ck_assert_uint_eq(bucket_drain(&b, 600000000ULL), 5);
}
END_TEST

START_TEST(bucket_capped_after_long_idle)
{
        struct bucket b;

        bucket_init(&b, 10000, 5, 0);
        bucket_drain(&b, 0);
        ck_assert_uint_eq(bucket_drain(&b, 3600 * NS_PER_S), 5);
        ck_assert_uint_eq(bucket_drain(&b, 365ULL * 24 * 3600 * NS_PER_S), 5);
}
END_TEST

START_TEST(bucket_clock_backwards_adds_nothing)
{
        struct bucket b;
        uint64_t wait;

        bucket_init(&b, 1000, 1, 10 * NS_PER_S);
        ck_assert_int_eq(bucket_take(&b, 10 * NS_PER_S, &wait), 0);
        ck_assert_int_eq(bucket_take(&b, 5 * NS_PER_S, &wait), -1);
        ck_assert_int_eq(bucket_take(&b, 11 * NS_PER_S, &wait), 0);
}
END_TEST

START_TEST(bucket_fractional_rate)
{
        struct bucket b;
        uint64_t wait;

        bucket_init(&b, 500, 1, 0); /* one call every 2 s */
        ck_assert_int_eq(bucket_take(&b, 0, &wait), 0);
        ck_assert_int_eq(bucket_take(&b, NS_PER_S, &wait), -1);
        ck_assert_uint_eq(wait, NS_PER_S);
        ck_assert_int_eq(bucket_take(&b, 2 * NS_PER_S, &wait), 0);
}
END_TEST

/* Rates in thousandths per second and bursts for the window test. */
static const struct {
        uint64_t rate_milli;
        uint32_t burst;
} bucket_cases[] = {
    {1000, 1}, {10000, 10}, {9000, 8}, {2500, 3}, {333, 2}, {100000, 50}, {1000000, 1},
};

/*
 * Tries to take tokens at random moments (some bursts, some gaps) and checks that, over every
 * window [t_i, t_j] of grants, at most burst + rate * (t_j - t_i) tokens were granted.
 */
START_TEST(bucket_window_bound)
{
        uint64_t rate_milli = bucket_cases[_i].rate_milli;
        uint32_t burst = bucket_cases[_i].burst;
        enum { ATTEMPTS = 4000 };
        uint64_t *granted = malloc(sizeof(*granted) * ATTEMPTS);
        uint64_t now = 5 * NS_PER_S, wait;
        unsigned count = 0;
        struct bucket b;

        ck_assert_ptr_nonnull(granted);
        srandom(42 + (unsigned)_i);
        bucket_init(&b, rate_milli, burst, now);
        for (unsigned i = 0; i < ATTEMPTS; i++) {
                /* Mostly short steps, sometimes a long idle gap that lets the burst build up. */
                uint64_t step = (uint64_t)random() % (2 * NS_PER_S * 1000 / rate_milli / 3 + 1);

                if (random() % 50 == 0)
                        step += (uint64_t)random() % (20 * NS_PER_S);
                now += step;
                if (bucket_take(&b, now, &wait) == 0)
                        granted[count++] = now;
                ck_assert_int_ge(b.tokens, 0);
                ck_assert_int_le(b.tokens, b.capacity);
        }
        ck_assert_uint_gt(count, 0);
        for (unsigned i = 0; i < count; i++) {
                for (unsigned j = i; j < count; j++) {
                        /* Compare in micro-tokens to stay in integers: n * 1e6 <= burst * 1e6 +
                         * rate * T. */
                        uint64_t window = granted[j] - granted[i];
                        uint64_t allowed =
                            (uint64_t)burst * 1000000ULL +
                            (uint64_t)((__uint128_t)window * rate_milli / 1000000ULL);
                        uint64_t n = j - i + 1;

                        /* Only a failure reaches Check: a passing ck_assert still sends the
                         * parent a message, and 8 million of them crawl under ASan. */
                        if (n * 1000000ULL > allowed)
                                ck_abort_msg("rate %llu/1000 s burst %u: %llu grants in %llu ns",
                                             (unsigned long long)rate_milli, burst,
                                             (unsigned long long)n, (unsigned long long)window);
                }
        }
        free(granted);
}
END_TEST

START_TEST(bucket_pause_empties_and_holds)
{
        struct bucket b;
        uint64_t wait = 0;

        bucket_init(&b, 10000, 5, 0); /* 10 per second */
        ck_assert_int_eq(bucket_pause(&b, 2 * NS_PER_S), 1);
        ck_assert_int_eq(b.tokens, 0);
        /* Nothing accrues during the pause, and the wait covers its rest plus one token. */
        ck_assert_int_eq(bucket_take(&b, NS_PER_S, &wait), -1);
        ck_assert_uint_eq(wait, NS_PER_S + 100000000ULL);
        ck_assert_int_eq(bucket_take(&b, 2 * NS_PER_S, &wait), -1);
        ck_assert_uint_eq(wait, 100000000ULL);
        /* After it, calls resume at the rate, not as a burst. */
        ck_assert_uint_eq(bucket_drain(&b, 2 * NS_PER_S + 100000000ULL), 1);
        ck_assert_uint_eq(bucket_drain(&b, 2 * NS_PER_S + 300000000ULL), 2);
}
END_TEST

START_TEST(bucket_pause_never_shortened)
{
        struct bucket b;
        uint64_t wait;

        bucket_init(&b, 10000, 5, 0);
        ck_assert_int_eq(bucket_pause(&b, 5 * NS_PER_S), 1);
        ck_assert_int_eq(bucket_pause(&b, 3 * NS_PER_S), 0);
        ck_assert_int_eq(bucket_take(&b, 4 * NS_PER_S, &wait), -1);
        ck_assert_uint_eq(bucket_drain(&b, 6 * NS_PER_S), 5);
}
END_TEST

/* The exact burst after idle time, never burst + 1, at any moment of a refill period. */
START_TEST(bucket_idle_gives_exact_burst)
{
        struct bucket b;

        bucket_init(&b, 7000, 4, 0);
        for (uint64_t t = 1; t <= 100; t++) {
                ck_assert_uint_eq(bucket_drain(&b, t * 10 * NS_PER_S + t * 1234567ULL), 4);
                ck_assert_int_ge(b.tokens, 0);
        }
}
END_TEST

enum { BUCKET_PROCESSES = 8, BUCKET_ATTEMPTS = 1000 };

/* Shared by the processes of the stress test: an injected clock and every grant's time. */
struct bucket_shared {
        uint64_t now_ns;
        unsigned grants;
        int negative; /* set if any process saw tokens below zero */
        uint64_t granted_ns[BUCKET_PROCESSES * BUCKET_ATTEMPTS];
};

static void bucket_stress_child(struct shm *shm, struct bucket_shared *shared, unsigned seed)
{
        uint64_t wait;

        shm->pid = getpid();
        srandom(seed);
        for (unsigned i = 0; i < BUCKET_ATTEMPTS; i++) {
                /* Steps of 0 to 20 ms, sometimes an idle gap of up to 3 s. */
                uint64_t step = (uint64_t)random() % 20000000ULL;

                if (random() % 200 == 0)
                        step += (uint64_t)random() % (3 * NS_PER_S);
                shm_lock(shm);
                shared->now_ns += step;
                if (bucket_take(&shm->header->bucket, shared->now_ns, &wait) == 0)
                        shared->granted_ns[shared->grants++] = shared->now_ns;
                if (shm->header->bucket.tokens < 0)
                        shared->negative = 1;
                shm_unlock(shm);
        }
        _exit(0);
}

/*
 * Eight processes make 1,000 attempts each against one segment's bucket, with a clock they
 * share and advance under the lock. Over every window of grants, at most burst + rate * T.
 */
START_TEST(bucket_processes_share_limit)
{
        uint64_t rate_milli = 20000, burst = 5; /* 20 per second */
        struct bucket_shared *shared;
        char name[64];
        struct shm shm;
        pid_t pids[BUCKET_PROCESSES], owner;

        shared =
            mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ck_assert_ptr_ne(shared, MAP_FAILED);
        shared->now_ns = NS_PER_S;
        snprintf(name, sizeof(name), "/incsearchd-check-bucket-%d", (int)getpid());
        ck_assert_int_eq(shm_create(&shm, name, 4, 16, rate_milli, (uint32_t)burst, &owner), 0);
        bucket_init(&shm.header->bucket, rate_milli, (uint32_t)burst, shared->now_ns);

        for (unsigned i = 0; i < BUCKET_PROCESSES; i++) {
                pids[i] = fork();
                ck_assert_int_ge(pids[i], 0);
                if (pids[i] == 0)
                        bucket_stress_child(&shm, shared, 100 + i);
        }
        for (unsigned i = 0; i < BUCKET_PROCESSES; i++) {
                int status;

                ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
                ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        shm_destroy(&shm, name);

        ck_assert_int_eq(shared->negative, 0);
        ck_assert_uint_gt(shared->grants, burst);
        for (unsigned i = 0; i < shared->grants; i++) {
                for (unsigned j = i; j < shared->grants; j++) {
                        uint64_t window = shared->granted_ns[j] - shared->granted_ns[i];
                        uint64_t allowed = burst * 1000000ULL + (uint64_t)((__uint128_t)window *
                                                                           rate_milli / 1000000ULL);
                        uint64_t n = j - i + 1;

                        ck_assert_msg(n * 1000000ULL <= allowed, "%llu grants in %llu ns",
                                      (unsigned long long)n, (unsigned long long)window);
                }
        }
        munmap(shared, sizeof(*shared));
}
END_TEST

Suite *bucket_suite(void)
{
        Suite *s = suite_create("bucket");
        TCase *tc = tcase_create("tokens");

        tcase_add_test(tc, bucket_starts_full);
        tcase_add_test(tc, bucket_refills_at_rate);
        tcase_add_test(tc, bucket_capped_after_long_idle);
        tcase_add_test(tc, bucket_clock_backwards_adds_nothing);
        tcase_add_test(tc, bucket_fractional_rate);
        tcase_add_test(tc, bucket_pause_empties_and_holds);
        tcase_add_test(tc, bucket_pause_never_shortened);
        tcase_add_test(tc, bucket_idle_gives_exact_burst);
        tcase_add_test(tc, bucket_processes_share_limit);
        tcase_add_loop_test(tc, bucket_window_bound, 0,
                            sizeof(bucket_cases) / sizeof(bucket_cases[0]));
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
        return s;
}
