#include <stdint.h>
#include <stdlib.h>

#include "bucket.h"
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

Suite *bucket_suite(void)
{
        Suite *s = suite_create("bucket");
        TCase *tc = tcase_create("tokens");

        tcase_add_test(tc, bucket_starts_full);
        tcase_add_test(tc, bucket_refills_at_rate);
        tcase_add_test(tc, bucket_capped_after_long_idle);
        tcase_add_test(tc, bucket_clock_backwards_adds_nothing);
        tcase_add_test(tc, bucket_fractional_rate);
        tcase_add_loop_test(tc, bucket_window_bound, 0,
                            sizeof(bucket_cases) / sizeof(bucket_cases[0]));
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
        return s;
}
