#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "limit.h"
#include "suites.h"

static struct limit_addr limit_v4(uint32_t host)
{
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(host)};
        struct limit_addr key;

        ck_assert_int_eq(limit_addr_from((struct sockaddr *)&sin, &key), 0);
        return key;
}

START_TEST(limit_rate_bucket)
{
        /* Starts full with one second's worth, then refills per_second tokens a second. */
        for (int i = 0; i < 10; i++)
                ck_assert_int_eq(limit_new_connection(10, 1000), 1);
        ck_assert_int_eq(limit_new_connection(10, 1000), 0);
        ck_assert_int_eq(limit_new_connection(10, 1099), 0);
        ck_assert_int_eq(limit_new_connection(10, 1100), 1);
        ck_assert_int_eq(limit_new_connection(10, 1100), 0);
        /* A long idle time fills the bucket but no further. */
        for (int i = 0; i < 10; i++)
                ck_assert_int_eq(limit_new_connection(10, 100000), 1);
        ck_assert_int_eq(limit_new_connection(10, 100000), 0);
        ck_assert_int_eq(limit_new_connection(0, 100000), 1);
}
END_TEST

START_TEST(limit_per_address)
{
        struct limit_addr a = limit_v4(0x7F000001), b = limit_v4(0x7F000002);

        ck_assert_int_eq(limit_ip_acquire(&a, 2), 1);
        ck_assert_int_eq(limit_ip_acquire(&a, 2), 1);
        ck_assert_int_eq(limit_ip_acquire(&a, 2), 0);
        ck_assert_int_eq(limit_ip_acquire(&b, 2), 1);
        ck_assert_uint_eq(limit_ip_count(&a), 2);
        limit_ip_release(&a);
        ck_assert_int_eq(limit_ip_acquire(&a, 2), 1);
        limit_ip_release(&a);
        limit_ip_release(&a);
        limit_ip_release(&b);
        ck_assert_uint_eq(limit_ip_count(&a), 0);
        ck_assert_uint_eq(limit_ip_count(&b), 0);
}
END_TEST

START_TEST(limit_table_grows_and_deletes)
{
        /* Enough addresses to grow the table several times and to collide in it. */
        for (uint32_t i = 0; i < 5000; i++) {
                struct limit_addr key = limit_v4(0x0A000000 + i * 7);

                ck_assert_int_eq(limit_ip_acquire(&key, 3), 1);
        }
        for (uint32_t i = 0; i < 5000; i += 2) {
                struct limit_addr key = limit_v4(0x0A000000 + i * 7);

                limit_ip_release(&key);
        }
        for (uint32_t i = 0; i < 5000; i++) {
                struct limit_addr key = limit_v4(0x0A000000 + i * 7);

                ck_assert_uint_eq(limit_ip_count(&key), i % 2 == 0 ? 0 : 1);
        }
}
END_TEST

START_TEST(limit_ipv6_and_mapped)
{
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
        struct limit_addr v6, v4 = limit_v4(0x7F000001);

        inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
        ck_assert_int_eq(limit_addr_from((struct sockaddr *)&sin6, &v6), 0);
        ck_assert_int_eq(memcmp(&v6, &v4, sizeof(v4)), 0);
}
END_TEST

Suite *limit_suite(void)
{
        Suite *s = suite_create("limit");
        TCase *tc = tcase_create("admission");

        tcase_add_test(tc, limit_rate_bucket);
        tcase_add_test(tc, limit_per_address);
        tcase_add_test(tc, limit_table_grows_and_deletes);
        tcase_add_test(tc, limit_ipv6_and_mapped);
        suite_add_tcase(s, tc);
        return s;
}
