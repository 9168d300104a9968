#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shm.h"
#include "slot.h"
#include "suites.h"

static struct shm slot_shm;
static char slot_shm_name[64];
static char slot_query[64];

static void slot_setup(void)
{
        snprintf(slot_shm_name, sizeof(slot_shm_name), "/incsearchd-check-slot-%d", (int)getpid());
        pid_t owner;

        ck_assert_int_eq(shm_create(&slot_shm, slot_shm_name, 8, 64, 1000000, 100, &owner), 0);
        /* The segment starts with an empty bucket; these tests want tokens to spend. */
        slot_shm.header->bucket.tokens = slot_shm.header->bucket.capacity;
}

static void slot_teardown(void)
{
        shm_destroy(&slot_shm, slot_shm_name);
}

static int slot_submit_text(uint32_t index, uint64_t seq, const char *text, uint64_t now)
{
        int superseded;

        return slot_submit(&slot_shm, index, seq, text, (uint32_t)strlen(text), now, &superseded);
}

static uint32_t slot_take_index(uint64_t now)
{
        struct slot_job job = {.query = slot_query};
        uint64_t wait;

        ck_assert_int_eq(slot_take(&slot_shm, now, &job, &wait), SLOT_TAKE_OK);
        return job.slot;
}

START_TEST(slot_header_sizes)
{
        struct shm other;
        char error[256];

        ck_assert_uint_eq(slot_shm.header->magic, SHM_MAGIC);
        ck_assert_uint_eq(slot_shm.header->slot_count, 8);
        ck_assert_uint_eq(slot_shm.header->slot_size % 64, 0);
        ck_assert_int_eq(shm_attach(&other, slot_shm_name, error, sizeof(error)), 0);
        ck_assert_uint_eq(other.header->total_size, slot_shm.header->total_size);
        shm_detach(&other);
}
END_TEST

START_TEST(slot_overwrite_keeps_one_entry)
{
        struct slot_job job = {.query = slot_query};
        uint64_t wait;
        int superseded;

        slot_open(&slot_shm, 3);
        ck_assert_int_eq(slot_submit(&slot_shm, 3, 1, "s", 1, 100, &superseded), 1);
        ck_assert_int_eq(superseded, 0);
        ck_assert_int_eq(slot_submit(&slot_shm, 3, 2, "sw", 2, 200, &superseded), 0);
        ck_assert_int_eq(superseded, 1);
        ck_assert_int_eq(slot_submit(&slot_shm, 3, 3, "swi", 3, 300, &superseded), 0);
        ck_assert_uint_eq(slot_shm.header->fifo_count, 1);

        ck_assert_int_eq(slot_take(&slot_shm, 400, &job, &wait), SLOT_TAKE_OK);
        ck_assert_uint_eq(job.slot, 3);
        ck_assert_uint_eq(job.seq, 3);
        ck_assert_uint_eq(job.query_len, 3);
        ck_assert_int_eq(memcmp(job.query, "swi", 3), 0);
        ck_assert_uint_eq(job.pending_since_ns, 100);
        ck_assert_int_eq(slot_take(&slot_shm, 500, &job, &wait), SLOT_TAKE_EMPTY);
}
END_TEST

START_TEST(slot_fifo_order)
{
        const uint32_t order[] = {5, 1, 7, 0};

        for (unsigned i = 0; i < 4; i++) {
                slot_open(&slot_shm, order[i]);
                ck_assert_int_eq(slot_submit_text(order[i], 1, "q", 100 + i), 1);
        }
        /* Overwriting the first keeps it first. */
        ck_assert_int_eq(slot_submit_text(5, 2, "qq", 200), 0);
        for (unsigned i = 0; i < 4; i++)
                ck_assert_uint_eq(slot_take_index(300), order[i]);
}
END_TEST

START_TEST(slot_reuse_new_generation)
{
        uint32_t first = slot_open(&slot_shm, 2);
        uint32_t second;

        slot_close(&slot_shm, 2);
        second = slot_open(&slot_shm, 2);
        ck_assert_uint_ne(first, second);
        ck_assert_uint_eq(shm_slot(&slot_shm, 2)->seq, 0);
}
END_TEST

START_TEST(slot_closed_skipped_without_token)
{
        struct slot_job job = {.query = slot_query};
        uint64_t wait;
        int64_t tokens;

        slot_open(&slot_shm, 1);
        slot_open(&slot_shm, 2);
        slot_submit_text(1, 1, "a", 100);
        slot_submit_text(2, 1, "b", 101);
        slot_close(&slot_shm, 1);
        tokens = slot_shm.header->bucket.tokens;
        ck_assert_int_eq(slot_take(&slot_shm, slot_shm.header->bucket.last_refill_ns, &job, &wait),
                         SLOT_TAKE_OK);
        ck_assert_uint_eq(job.slot, 2);
        ck_assert_int_eq(slot_shm.header->bucket.tokens, tokens - BUCKET_UNIT);
        ck_assert_uint_eq(slot_shm.header->fifo_count, 0);
}
END_TEST

START_TEST(slot_no_token_keeps_entry)
{
        struct slot_job job = {.query = slot_query};
        uint64_t now = slot_shm.header->bucket.last_refill_ns, wait = 0;

        slot_shm.header->bucket.tokens = 0;
        slot_open(&slot_shm, 4);
        slot_submit_text(4, 1, "a", now);
        ck_assert_int_eq(slot_take(&slot_shm, now, &job, &wait), SLOT_TAKE_NO_TOKEN);
        ck_assert_uint_gt(wait, 0);
        ck_assert_uint_eq(slot_shm.header->fifo_count, 1);
        ck_assert_int_eq(slot_take(&slot_shm, now + wait, &job, &wait), SLOT_TAKE_OK);
}
END_TEST

START_TEST(slot_superseded_not_called)
{
        struct slot_job job = {.query = slot_query};
        uint64_t wait;

        slot_open(&slot_shm, 6);
        slot_submit_text(6, 1, "abc", 100);
        ck_assert_int_eq(slot_supersede(&slot_shm, 6, 2), 1);
        ck_assert_int_eq(slot_take(&slot_shm, 200, &job, &wait), SLOT_TAKE_EMPTY);
}
END_TEST

START_TEST(slot_requeue_only_latest)
{
        struct slot_job job = {.query = slot_query};
        uint32_t generation = slot_open(&slot_shm, 0);
        uint64_t wait;

        slot_submit_text(0, 7, "x", 100);
        ck_assert_int_eq(slot_take(&slot_shm, 200, &job, &wait), SLOT_TAKE_OK);
        /* The worker died; seq 7 is still the latest, so it goes back. */
        ck_assert_int_eq(slot_requeue(&slot_shm, 0, generation, 7, 300), 1);
        ck_assert_int_eq(slot_take(&slot_shm, 400, &job, &wait), SLOT_TAKE_OK);
        ck_assert_uint_eq(job.seq, 7);
        /* A newer query replaced it: the dead worker's seq is not requeued. */
        slot_submit_text(0, 8, "xy", 500);
        ck_assert_int_eq(slot_requeue(&slot_shm, 0, generation, 7, 600), 0);
        /* A closed connection is not requeued either. */
        slot_close(&slot_shm, 0);
        ck_assert_int_eq(slot_requeue(&slot_shm, 0, generation, 8, 700), 0);
}
END_TEST

START_TEST(slot_answered_only_current)
{
        struct slot_job job = {.query = slot_query};
        uint32_t generation = slot_open(&slot_shm, 5);
        uint64_t wait;

        slot_submit_text(5, 1, "a", 100);
        slot_take(&slot_shm, 200, &job, &wait);
        slot_submit_text(5, 2, "ab", 300);
        slot_answered(&slot_shm, 5, generation, 1);
        ck_assert_uint_eq(shm_slot(&slot_shm, 5)->state, SLOT_PENDING);
        slot_take(&slot_shm, 400, &job, &wait);
        slot_answered(&slot_shm, 5, generation, 2);
        ck_assert_uint_eq(shm_slot(&slot_shm, 5)->state, SLOT_IDLE);
}
END_TEST

START_TEST(slot_requeue_keeps_turn)
{
        struct slot_job job = {.query = slot_query};
        uint32_t generation = slot_open(&slot_shm, 1);
        uint64_t wait;

        slot_open(&slot_shm, 2);
        slot_submit_text(1, 1, "a", 100);
        slot_submit_text(2, 1, "b", 110);
        ck_assert_int_eq(slot_take(&slot_shm, 200, &job, &wait), SLOT_TAKE_OK);
        ck_assert_uint_eq(job.slot, 1);
        /* A 429 sends it back: it goes before slot 2, with its first pending time. */
        ck_assert_int_eq(slot_requeue(&slot_shm, 1, generation, 1, job.pending_since_ns), 1);
        ck_assert_int_eq(slot_take(&slot_shm, 300, &job, &wait), SLOT_TAKE_OK);
        ck_assert_uint_eq(job.slot, 1);
        ck_assert_uint_eq(job.pending_since_ns, 100);
        ck_assert_uint_eq(slot_take_index(400), 2);
}
END_TEST

START_TEST(slot_max_wait_expires_head)
{
        struct slot_job job = {.query = slot_query};
        uint64_t now = slot_shm.header->bucket.last_refill_ns, wait = 0;
        int64_t tokens;

        slot_shm.header->max_wait_ns = 1000;
        slot_shm.header->bucket.tokens = 0;
        slot_open(&slot_shm, 3);
        slot_submit_text(3, 1, "a", now);
        /* No token: the wait ends when the query expires, before the token is due. */
        ck_assert_int_eq(slot_take(&slot_shm, now + 10, &job, &wait), SLOT_TAKE_NO_TOKEN);
        ck_assert_uint_eq(wait, 990);
        tokens = slot_shm.header->bucket.tokens;
        ck_assert_int_eq(slot_take(&slot_shm, now + 1000, &job, &wait), SLOT_TAKE_EXPIRED);
        ck_assert_uint_eq(job.slot, 3);
        ck_assert_int_eq(slot_shm.header->bucket.tokens, tokens);
        ck_assert_uint_eq(shm_slot(&slot_shm, 3)->state, SLOT_INFLIGHT);
}
END_TEST

START_TEST(slot_retry_only_latest)
{
        struct slot_job job = {.query = slot_query};
        uint32_t generation = slot_open(&slot_shm, 4);
        uint64_t wait;

        slot_submit_text(4, 1, "a", 100);
        ck_assert_int_eq(slot_take(&slot_shm, 200, &job, &wait), SLOT_TAKE_OK);
        ck_assert_int_eq(slot_retry(&slot_shm, 300, &job, &wait), SLOT_TAKE_OK);
        slot_shm.header->max_wait_ns = 1000;
        ck_assert_int_eq(slot_retry(&slot_shm, 1100, &job, &wait), SLOT_TAKE_EXPIRED);
        slot_shm.header->max_wait_ns = 0;
        slot_submit_text(4, 2, "ab", 400);
        ck_assert_int_eq(slot_retry(&slot_shm, 500, &job, &wait), SLOT_TAKE_STALE);
        slot_close(&slot_shm, 4);
        job.generation = generation;
        ck_assert_int_eq(slot_retry(&slot_shm, 600, &job, &wait), SLOT_TAKE_STALE);
}
END_TEST

/*
 * A held token (one Redis granted) is spent once and leaves the bucket alone. Without a token
 * the head waits until max_wait_ns and is then taken as expired, and so is a retry.
 */
START_TEST(slot_take_held_token)
{
        struct slot_job job = {.query = slot_query}, first;
        struct slot_token token = {.held = 1};
        int64_t tokens = slot_shm.header->bucket.tokens;
        uint64_t wait = 0;

        slot_shm.header->max_wait_ns = 1000;
        slot_open(&slot_shm, 1);
        slot_open(&slot_shm, 2);
        slot_submit_text(1, 1, "a", 100);
        slot_submit_text(2, 1, "b", 150);
        ck_assert_int_eq(slot_take_token(&slot_shm, &token, 200, &job, &wait), SLOT_TAKE_OK);
        ck_assert_uint_eq(job.slot, 1);
        ck_assert_int_eq(token.held, 0);
        ck_assert_int_eq(slot_shm.header->bucket.tokens, tokens);
        first = job;

        ck_assert_int_eq(slot_take_token(&slot_shm, &token, 300, &job, &wait), SLOT_TAKE_NO_TOKEN);
        ck_assert_uint_eq(wait, 850);
        ck_assert_int_eq(slot_retry_token(&slot_shm, &token, 300, &first, &wait),
                         SLOT_TAKE_NO_TOKEN);
        ck_assert_uint_eq(wait, 800);
        ck_assert_int_eq(slot_retry_token(&slot_shm, &token, 1100, &first, &wait),
                         SLOT_TAKE_EXPIRED);
        ck_assert_int_eq(slot_take_token(&slot_shm, &token, 1150, &job, &wait), SLOT_TAKE_EXPIRED);
        ck_assert_uint_eq(job.slot, 2);
        slot_shm.header->max_wait_ns = 0;
}
END_TEST

enum { SLOT_FAIR_CLIENTS = 50 };

/*
 * Fifty clients type nonstop, a new query every 10 ms each, against 5 calls per second with a
 * burst of 1, and each call is answered at once. The FIFO by pending time must bound every
 * wait by about N / r = 10 s: at most (N + 1) / r here, the extra 1 / r for the token in
 * progress when a query becomes pending. Each client is served about once per N / r.
 */
START_TEST(slot_fifo_bounds_wait)
{
        const uint64_t rate_milli = 5000, step_ns = 10000000ULL, run_ns = 120 * 1000000000ULL;
        const uint64_t bound_ns = (SLOT_FAIR_CLIENTS + 1) * 1000000000ULL * 1000 / rate_milli;
        uint32_t generations[SLOT_FAIR_CLIENTS];
        unsigned served[SLOT_FAIR_CLIENTS] = {0};
        uint64_t seq = 0, max_wait = 0, wait;
        struct slot_job job = {.query = slot_query};
        char name[64], text[16];
        struct shm shm;
        int superseded;
        pid_t owner;

        snprintf(name, sizeof(name), "/incsearchd-check-fair-%d", (int)getpid());
        ck_assert_int_eq(shm_create(&shm, name, SLOT_FAIR_CLIENTS, 64, rate_milli, 1, &owner), 0);
        bucket_init(&shm.header->bucket, rate_milli, 1, 0);
        for (uint32_t i = 0; i < SLOT_FAIR_CLIENTS; i++)
                generations[i] = slot_open(&shm, i);

        for (uint64_t now = 0; now < run_ns; now += step_ns) {
                seq++;
                for (uint32_t i = 0; i < SLOT_FAIR_CLIENTS; i++) {
                        snprintf(text, sizeof(text), "q%llu", (unsigned long long)seq);
                        slot_submit(&shm, i, seq, text, (uint32_t)strlen(text), now, &superseded);
                }
                while (slot_take(&shm, now, &job, &wait) == SLOT_TAKE_OK) {
                        if (now - job.pending_since_ns > max_wait)
                                max_wait = now - job.pending_since_ns;
                        ck_assert_uint_eq(job.seq, seq);
                        served[job.slot]++;
                        slot_answered(&shm, job.slot, generations[job.slot], job.seq);
                }
        }
        shm_destroy(&shm, name);

        ck_assert_msg(max_wait <= bound_ns, "a query waited %llu ns, bound %llu ns",
                      (unsigned long long)max_wait, (unsigned long long)bound_ns);
        for (uint32_t i = 0; i < SLOT_FAIR_CLIENTS; i++) {
                /* 120 s at 5 per second is 600 calls, 12 per client. */
                ck_assert_msg(served[i] >= 11 && served[i] <= 13, "client %u served %u times", i,
                              served[i]);
        }
}
END_TEST

START_TEST(shm_attach_rejects_wrong_layout)
{
        struct shm other;
        char error[256];

        slot_shm.header->layout_version = SHM_LAYOUT_VERSION + 1;
        ck_assert_int_eq(shm_attach(&other, slot_shm_name, error, sizeof(error)), -1);
        ck_assert_ptr_nonnull(strstr(error, "wrong layout"));
        ck_assert_int_eq(shm_attach(&other, "/incsearchd-check-none", error, sizeof(error)), -1);
}
END_TEST

START_TEST(shm_create_bucket_empty)
{
        struct shm other;
        char name[80];
        pid_t owner;

        snprintf(name, sizeof(name), "%.60s-empty", slot_shm_name);
        ck_assert_int_eq(shm_create(&other, name, 4, 16, 10000, 5, &owner), 0);
        ck_assert_int_eq(other.header->bucket.tokens, 0);
        ck_assert_int_eq(other.header->bucket.capacity, 5 * BUCKET_UNIT);
        shm_destroy(&other, name);
}
END_TEST

START_TEST(shm_create_refuses_live_owner)
{
        struct shm other;
        pid_t owner = 0;

        /* The Check runner that forked this test is alive, so it serves as another live daemon. */
        slot_shm.header->daemon_pid = getppid();
        ck_assert_int_eq(shm_create(&other, slot_shm_name, 8, 64, 1000, 1, &owner), -1);
        ck_assert_int_eq(errno, EBUSY);
        ck_assert_int_eq(owner, getppid());
        ck_assert_uint_eq(slot_shm.header->magic, SHM_MAGIC);
}
END_TEST

START_TEST(shm_create_replaces_stale)
{
        struct shm other;
        pid_t owner = 0;

        /* A pid that cannot exist marks the segment as left by a dead daemon. */
        slot_shm.header->daemon_pid = 0x7ffffff0;
        ck_assert_int_eq(shm_create(&other, slot_shm_name, 8, 64, 1000, 1, &owner), 0);
        ck_assert_int_eq(owner, 0);
        ck_assert_int_eq(other.header->daemon_pid, getpid());
        shm_detach(&other);
}
END_TEST

Suite *slot_suite(void)
{
        Suite *s = suite_create("slot");
        TCase *tc = tcase_create("fifo");

        tcase_add_checked_fixture(tc, slot_setup, slot_teardown);
        tcase_add_test(tc, slot_header_sizes);
        tcase_add_test(tc, slot_overwrite_keeps_one_entry);
        tcase_add_test(tc, slot_fifo_order);
        tcase_add_test(tc, slot_reuse_new_generation);
        tcase_add_test(tc, slot_closed_skipped_without_token);
        tcase_add_test(tc, slot_no_token_keeps_entry);
        tcase_add_test(tc, slot_superseded_not_called);
        tcase_add_test(tc, slot_requeue_only_latest);
        tcase_add_test(tc, slot_answered_only_current);
        tcase_add_test(tc, slot_requeue_keeps_turn);
        tcase_add_test(tc, slot_max_wait_expires_head);
        tcase_add_test(tc, slot_retry_only_latest);
        tcase_add_test(tc, slot_take_held_token);
        tcase_add_test(tc, slot_fifo_bounds_wait);
        tcase_add_test(tc, shm_attach_rejects_wrong_layout);
        tcase_add_test(tc, shm_create_bucket_empty);
        tcase_add_test(tc, shm_create_refuses_live_owner);
        tcase_add_test(tc, shm_create_replaces_stale);
        suite_add_tcase(s, tc);
        return s;
}
