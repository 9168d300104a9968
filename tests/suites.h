/* The Check suites that check_main.c runs, one per module. */
#ifndef INCSEARCHD_SUITES_H
#define INCSEARCHD_SUITES_H

#include <check.h>

Suite *conf_suite(void);
Suite *bucket_suite(void);
Suite *slot_suite(void);
Suite *ws_suite(void);
Suite *api_suite(void);
Suite *places_suite(void);
Suite *e2e_suite(void);
Suite *http_suite(void);
Suite *limit_suite(void);
Suite *ws_protocol_suite(void);
Suite *defence_suite(void);
Suite *sched_suite(void);
Suite *query_suite(void);
Suite *ops_suite(void);
Suite *nginx_suite(void);
Suite *redis_suite(void);
Suite *rcache_suite(void);
Suite *tls_suite(void);

#endif
