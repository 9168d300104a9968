#include <string.h>

#include <check.h>
#include <json-c/json.h>

#include "places.h"
#include "suites.h"

/* Debian's iso-codes data, which the tests read as it is installed. */
#ifndef PLACES_TEST_DIR
#define PLACES_TEST_DIR "/usr/share/iso-codes/json"
#endif

static struct places *places;

static void places_setup(void)
{
        char err[512] = "";

        places = places_load(PLACES_TEST_DIR, err, sizeof(err));
        ck_assert_msg(places != NULL, "places_load: %s", err);
}

static void places_teardown(void)
{
        places_free(places);
        places = NULL;
}

static json_object *search(const char *query, size_t limit)
{
        json_object *results = places_search(places, query, limit);

        ck_assert_ptr_nonnull(results);
        ck_assert(json_object_is_type(results, json_type_array));
        return results;
}

/* Returns the string field key of result i, or NULL if it has none. */
static const char *field(json_object *results, size_t i, const char *key)
{
        json_object *value;

        if (!json_object_object_get_ex(json_object_array_get_idx(results, i), key, &value))
                return NULL;
        return json_object_get_string(value);
}

/* Returns the position of the result with code, or -1. */
static int find_code(json_object *results, const char *code)
{
        size_t i;

        for (i = 0; i < json_object_array_length(results); i++) {
                if (strcmp(field(results, i, "code"), code) == 0)
                        return (int)i;
        }
        return -1;
}

START_TEST(switz_country_then_cantons)
{
        json_object *results = search("switz", 50);
        size_t i, n = json_object_array_length(results);

        /* Switzerland and its 26 cantons. */
        ck_assert_uint_eq(n, 27);
        ck_assert_str_eq(field(results, 0, "name"), "Switzerland");
        ck_assert_str_eq(field(results, 0, "code"), "CH");
        ck_assert_str_eq(field(results, 0, "type"), "Country");
        ck_assert_ptr_null(field(results, 0, "country"));

        for (i = 1; i < n; i++) {
                ck_assert_msg(strncmp(field(results, i, "code"), "CH-", 3) == 0,
                              "result %zu has code %s", i, field(results, i, "code"));
                ck_assert_str_eq(field(results, i, "country"), "Switzerland");
                ck_assert_str_eq(field(results, i, "type"), "Canton");
        }
        ck_assert_str_eq(field(results, 1, "name"), "Aargau");
        ck_assert_str_eq(field(results, n - 1, "name"), "Zürich");
        json_object_put(results);
}
END_TEST

START_TEST(switz_each_keystroke)
{
        static const char *const prefixes[] = {"sw", "swi", "swit", "switz"};
        json_object *results;
        size_t i;

        for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
                results = search(prefixes[i], 10);
                ck_assert_msg(find_code(results, "CH") != -1, "\"%s\" misses Switzerland",
                              prefixes[i]);
                json_object_put(results);
        }

        results = search("switz", 10);
        ck_assert_uint_eq(json_object_array_length(results), 10);
        ck_assert_str_eq(field(results, 0, "code"), "CH");
        ck_assert_str_eq(field(results, 9, "country"), "Switzerland");
        json_object_put(results);
}
END_TEST

START_TEST(fold_case)
{
        json_object *lower = search("switz", 5);
        json_object *upper = search("SWITZ", 5);
        json_object *mixed = search("sWiTz", 5);

        ck_assert_str_eq(json_object_to_json_string(upper), json_object_to_json_string(lower));
        ck_assert_str_eq(json_object_to_json_string(mixed), json_object_to_json_string(lower));
        json_object_put(lower);
        json_object_put(upper);
        json_object_put(mixed);
}
END_TEST

START_TEST(fold_accents)
{
        static const struct {
                const char *query;
                const char *code;
                const char *name;
        } cases[] = {
            {"zur", "CH-ZH", "Zürich"},       {"ZÜRICH", "CH-ZH", "Zürich"},
            {"cote", "CI", "Côte d'Ivoire"},  {"côte d", "CI", "Côte d'Ivoire"},
            {"aland", "AX", "Åland Islands"}, {"ÅLAND", "AX", "Åland Islands"},
            {"curacao", "CW", "Curaçao"},     {"lodzkie", "PL-10", "Łódzkie"},
            {"ganca", "AZ-GA", "Gəncə"},      {"ha'il", "SA-06", "Ḩā'il"},
        };
        json_object *results;
        size_t i;
        int at;

        for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                results = search(cases[i].query, 50);
                at = find_code(results, cases[i].code);
                ck_assert_msg(at != -1, "\"%s\" misses %s", cases[i].query, cases[i].code);
                ck_assert_str_eq(field(results, at, "name"), cases[i].name);
                json_object_put(results);
        }

        results = search("cote", 10);
        ck_assert_str_eq(field(results, 0, "code"), "CI");
        json_object_put(results);
}
END_TEST

START_TEST(word_after_name_prefix)
{
        json_object *results = search("bissau", 10);

        /* The sector Bissau starts with the query, Guinea-Bissau has it as a later word. */
        ck_assert_uint_eq(json_object_array_length(results), 2);
        ck_assert_str_eq(field(results, 0, "code"), "GW-BS");
        ck_assert_str_eq(field(results, 1, "code"), "GW");
        json_object_put(results);

        results = search("guinea", 50);
        ck_assert_str_eq(field(results, 0, "name"), "Guinea");
        ck_assert_str_eq(field(results, 1, "name"), "Guinea-Bissau");
        ck_assert_int_gt(find_code(results, "GQ"), 1);
        ck_assert_int_gt(find_code(results, "PG"), 1);
        json_object_put(results);

        results = search("ivoire", 10);
        ck_assert_str_eq(field(results, 0, "code"), "CI");
        json_object_put(results);
}
END_TEST

START_TEST(common_name)
{
        json_object *results = search("south kor", 10);

        ck_assert_str_eq(field(results, 0, "name"), "South Korea");
        ck_assert_str_eq(field(results, 0, "code"), "KR");
        json_object_put(results);

        /* The ISO name still matches and the common name is returned. */
        results = search("korea, rep", 10);
        ck_assert_str_eq(field(results, 0, "name"), "South Korea");
        json_object_put(results);

        results = search("busan", 10);
        ck_assert_str_eq(field(results, 0, "country"), "South Korea");
        json_object_put(results);
}
END_TEST

START_TEST(limit_respected)
{
        static const size_t limits[] = {0, 1, 7, 50};
        json_object *results;
        size_t i;

        for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
                results = search("s", limits[i]);
                ck_assert_uint_eq(json_object_array_length(results), limits[i]);
                json_object_put(results);
        }
}
END_TEST

START_TEST(no_duplicates)
{
        json_object *results = search("s", 100000);
        size_t i, j, n = json_object_array_length(results);

        ck_assert_uint_gt(n, 100);
        for (i = 0; i < n; i++) {
                for (j = i + 1; j < n; j++)
                        ck_assert_str_ne(field(results, i, "code"), field(results, j, "code"));
        }
        json_object_put(results);
}
END_TEST

START_TEST(empty_query)
{
        static const char *const queries[] = {"", " ", "   ", "\t \n"};
        json_object *results;
        size_t i;

        for (i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
                results = search(queries[i], 10);
                ck_assert_uint_eq(json_object_array_length(results), 0);
                json_object_put(results);
        }

        results = search("  switz  ", 10);
        ck_assert_str_eq(field(results, 0, "code"), "CH");
        json_object_put(results);
}
END_TEST

START_TEST(no_match)
{
        json_object *results = search("qqqq", 10);

        ck_assert_uint_eq(json_object_array_length(results), 0);
        json_object_put(results);
}
END_TEST

START_TEST(load_missing_dir)
{
        char err[512] = "";
        struct places *missing = places_load("/nonexistent/iso-codes", err, sizeof(err));

        ck_assert_ptr_null(missing);
        ck_assert_msg(strstr(err, "/nonexistent/iso-codes/iso_3166-1.json") != NULL,
                      "error does not name the file: %s", err);
}
END_TEST

Suite *places_suite(void)
{
        Suite *suite = suite_create("places");
        TCase *search_case = tcase_create("search");
        TCase *load_case = tcase_create("load");

        tcase_add_unchecked_fixture(search_case, places_setup, places_teardown);
        tcase_add_test(search_case, switz_country_then_cantons);
        tcase_add_test(search_case, switz_each_keystroke);
        tcase_add_test(search_case, fold_case);
        tcase_add_test(search_case, fold_accents);
        tcase_add_test(search_case, word_after_name_prefix);
        tcase_add_test(search_case, common_name);
        tcase_add_test(search_case, limit_respected);
        tcase_add_test(search_case, no_duplicates);
        tcase_add_test(search_case, empty_query);
        tcase_add_test(search_case, no_match);
        suite_add_tcase(suite, search_case);

        tcase_add_test(load_case, load_missing_dir);
        suite_add_tcase(suite, load_case);
        return suite;
}
