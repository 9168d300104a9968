#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "places.h"

#define PLACES_COUNTRIES_FILE "iso_3166-1.json"
#define PLACES_SUBDIVISIONS_FILE "iso_3166-2.json"

/* Search groups in result order. PLACES_RANK_NONE marks a place that does not match. */
enum places_rank {
        PLACES_RANK_COUNTRY_NAME,
        PLACES_RANK_SUBDIVISION_NAME,
        PLACES_RANK_WORD,
        PLACES_RANK_COUNTRY_OF_SUBDIVISION,
        PLACES_RANK_NONE
};

struct place {
        const char *name;            /* UTF-8, as returned in results */
        const char *code;            /* "CH" or "CH-ZH" */
        const char *type;            /* "Country" or the subdivision type */
        const struct place *country; /* NULL for a country */
        const char *alias;           /* ISO name of a country listed by common name, or NULL */
        const char *key;             /* folded name */
        const char *alias_key;       /* folded alias, or NULL */
};

struct places {
        json_object *countries_json;    /* owns the strings of every place */
        json_object *subdivisions_json; /* owns the strings of every place */
        struct place *list;             /* sorted by key, then code */
        size_t count;
        char *keys; /* storage for key and alias_key of every place */
};

/*
 * ASCII folding of the code points first..last. letters contains one byte per
 * code point: the lowercase base letter of its compatibility decomposition
 * (NFKD), or a letter picked by hand where there is none (Ø to o, Ł to l,
 * Ə to a). '.' keeps the code point unchanged, and '*' marks one listed in
 * places_fold_extra. A NULL letters drops every code point of the block.
 */
struct places_fold_block {
        uint32_t first;
        uint32_t last;
        const char *letters;
};

static const struct places_fold_block places_fold_blocks[] = {
    /* Latin-1 Supplement letters and Latin Extended-A */
    {0x00c0, 0x017f,
     "aaaaaa*ceeeeiiiidnooooo.ouuuuy**aaaaaa*ceeeeiiiidnooooo.ouuuuy*y"
     "aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiii**jjkkklllllll"
     "lllnnnnnnnnnoooooo**rrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs"},
    /* Latin Extended-B */
    {0x0180, 0x024f,
     "...............a................oo.............uu..............."
     ".............aaiioouuuuuuuuuuaaaaa....ggkkoooo..j...gg..nnaa...."
     "aaaaeeeeiiiioooorrrruuuusstt..hh......aaeeooooooooyy............"
     "................"},
    /* Combining Diacritical Marks, left by names stored in decomposed form */
    {0x0300, 0x036f, NULL},
    /* Latin Extended Additional, which includes the Vietnamese letters */
    {0x1e00, 0x1eff,
     "aabbbbbbccddddddddddeeeeeeeeeeffgghhhhhhhhhhiiiikkkkkkllllllllmm"
     "mmmmnnnnnnnnoooooooopppprrrrrrrrssssssssssttttttttuuuuuuuuuuvvvv"
     "wwwwwwwwwwxxxxyyzzzzzzhtwy.s..*.aaaaaaaaaaaaaaaaaaaaaaaaeeeeeeee"
     "eeeeeeeeiiiioooooooooooooooooooooooouuuuuuuuuuuuuuyyyyyyyy......"},
};

/*
 * Code points that fold to more than one letter, the schwa of Azerbaijani
 * names, which English spellings write as "a" (Gəncə, Ganja), and apostrophe
 * variants that fold to "'" so that they act as word boundaries.
 */
static const struct {
        uint32_t codepoint;
        const char *ascii;
} places_fold_extra[] = {
    {0x00c6, "ae"}, {0x00de, "th"}, {0x00df, "ss"}, {0x00e6, "ae"}, {0x00fe, "th"},
    {0x0132, "ij"}, {0x0133, "ij"}, {0x0152, "oe"}, {0x0153, "oe"}, {0x1e9e, "ss"},
    {0x0259, "a"},  {0x02bb, "'"},  {0x02bc, "'"},  {0x2018, "'"},  {0x2019, "'"},
};

static const size_t places_nextra = sizeof(places_fold_extra) / sizeof(places_fold_extra[0]);
static const size_t places_nblocks = sizeof(places_fold_blocks) / sizeof(places_fold_blocks[0]);

/*
 * Decodes the UTF-8 sequence at s, of at most len bytes, into *codepoint and
 * returns its length, or 0 when the sequence is invalid, overlong or a
 * surrogate.
 */
static size_t places_utf8_decode(const unsigned char *s, size_t len, uint32_t *codepoint)
{
        static const uint32_t min_by_length[] = {0, 0, 0x80, 0x800, 0x10000};
        size_t n, i;
        uint32_t c;

        if (s[0] < 0xc0 || s[0] > 0xf4)
                return 0;
        if (s[0] < 0xe0)
                n = 2;
        else if (s[0] < 0xf0)
                n = 3;
        else
                n = 4;
        if (n > len)
                return 0;

        c = s[0] & (0x7f >> n);
        for (i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3f);
        }
        if (c < min_by_length[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                return 0;

        *codepoint = c;
        return n;
}

/*
 * Writes the ASCII folding of codepoint to out, at most two bytes, and
 * returns its length: 0 drops the code point, -1 keeps its bytes unchanged.
 */
static int places_fold_codepoint(uint32_t codepoint, char *out)
{
        const struct places_fold_block *block;
        size_t i, len;
        char letter;

        for (i = 0; i < places_nextra; i++) {
                if (places_fold_extra[i].codepoint != codepoint)
                        continue;
                len = strlen(places_fold_extra[i].ascii);
                memcpy(out, places_fold_extra[i].ascii, len);
                return (int)len;
        }

        for (i = 0; i < places_nblocks; i++) {
                block = &places_fold_blocks[i];
                if (codepoint < block->first || codepoint > block->last)
                        continue;
                if (block->letters == NULL)
                        return 0;
                letter = block->letters[codepoint - block->first];
                if (letter < 'a' || letter > 'z')
                        return -1;
                out[0] = letter;
                return 1;
        }
        return -1;
}

/*
 * Folds len bytes of UTF-8 at in to lowercase ASCII where it can, writes the
 * result and a NUL to out, and returns the folded length. out needs len + 1
 * bytes, which is enough because every folded code point takes at least as
 * many bytes in UTF-8 as its folding. Invalid UTF-8 bytes are copied unchanged.
 */
static size_t places_fold(const char *in, size_t len, char *out)
{
        const unsigned char *s = (const unsigned char *)in;
        size_t i = 0, n = 0, seqlen;
        uint32_t codepoint;
        int folded;

        while (i < len) {
                if (s[i] < 0x80) {
                        out[n++] = (s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i];
                        i++;
                        continue;
                }

                seqlen = places_utf8_decode(s + i, len - i, &codepoint);
                if (seqlen == 0) {
                        out[n++] = s[i++];
                        continue;
                }

                folded = places_fold_codepoint(codepoint, out + n);
                if (folded < 0) {
                        memcpy(out + n, s + i, seqlen);
                        n += seqlen;
                } else {
                        n += folded;
                }
                i += seqlen;
        }
        out[n] = '\0';
        return n;
}

/* Returns 0..675 for a code that starts with two capital letters, or -1. */
static int places_alpha2_index(const char *code)
{
        if (code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z')
                return -1;
        return (code[0] - 'A') * 26 + (code[1] - 'A');
}

/* Returns the string value of key in a JSON object, or NULL if it has none. */
static const char *places_string_field(json_object *entry, const char *key)
{
        json_object *value;

        if (!json_object_object_get_ex(entry, key, &value) ||
            !json_object_is_type(value, json_type_string))
                return NULL;
        return json_object_get_string(value);
}

/*
 * Parses dir/file and stores in *array the top-level array named key.
 * Returns the parsed document, which owns the array, or NULL with err set.
 */
static json_object *places_read_array(const char *dir, const char *file, const char *key,
                                      json_object **array, char *err, size_t errlen)
{
        char path[4096];
        const char *reason;
        json_object *root;
        int fd;

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path)) {
                snprintf(err, errlen, "%s/%s: path too long", dir, file);
                return NULL;
        }
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                return NULL;
        }
        root = json_object_from_fd(fd);
        close(fd);
        if (root == NULL) {
                reason = json_util_get_last_err();
                snprintf(err, errlen, "%s: invalid JSON: %s", path,
                         reason != NULL ? reason : "unknown error");
                return NULL;
        }
        if (!json_object_object_get_ex(root, key, array) ||
            !json_object_is_type(*array, json_type_array)) {
                snprintf(err, errlen, "%s: no top-level array \"%s\"", path, key);
                json_object_put(root);
                return NULL;
        }
        return root;
}

static int places_add_countries(struct places *places, json_object *array, const char *dir,
                                char *err, size_t errlen)
{
        size_t i, n = json_object_array_length(array);
        const char *name, *code, *common_name;
        json_object *entry;
        struct place *place;

        for (i = 0; i < n; i++) {
                entry = json_object_array_get_idx(array, i);
                name = places_string_field(entry, "name");
                code = places_string_field(entry, "alpha_2");
                common_name = places_string_field(entry, "common_name");
                if (name == NULL || name[0] == '\0') {
                        snprintf(err, errlen, "%s/%s: entry %zu: missing \"name\"", dir,
                                 PLACES_COUNTRIES_FILE, i);
                        return -1;
                }
                if (code == NULL || strlen(code) != 2 || places_alpha2_index(code) == -1) {
                        snprintf(err, errlen,
                                 "%s/%s: entry %zu: \"alpha_2\" is missing or not two capital "
                                 "letters",
                                 dir, PLACES_COUNTRIES_FILE, i);
                        return -1;
                }

                place = &places->list[places->count++];
                place->code = code;
                place->type = "Country";
                if (common_name != NULL && common_name[0] != '\0') {
                        place->name = common_name;
                        place->alias = name;
                } else {
                        place->name = name;
                }
        }
        return 0;
}

static int places_add_subdivisions(struct places *places, json_object *array, const char *dir,
                                   char *err, size_t errlen)
{
        size_t i, n = json_object_array_length(array);
        const char *name, *code, *type;
        json_object *entry;
        struct place *place;

        for (i = 0; i < n; i++) {
                entry = json_object_array_get_idx(array, i);
                name = places_string_field(entry, "name");
                code = places_string_field(entry, "code");
                type = places_string_field(entry, "type");
                if (name == NULL || name[0] == '\0' || type == NULL) {
                        snprintf(err, errlen, "%s/%s: entry %zu: missing \"name\" or \"type\"", dir,
                                 PLACES_SUBDIVISIONS_FILE, i);
                        return -1;
                }
                if (code == NULL || places_alpha2_index(code) == -1 || code[2] != '-' ||
                    code[3] == '\0') {
                        snprintf(err, errlen,
                                 "%s/%s: entry %zu: \"code\" is missing or not of the form "
                                 "\"CC-X\"",
                                 dir, PLACES_SUBDIVISIONS_FILE, i);
                        return -1;
                }

                place = &places->list[places->count++];
                place->name = name;
                place->code = code;
                place->type = type;
        }
        return 0;
}

/* Sets key and alias_key of every place, all stored in places->keys. */
static int places_make_keys(struct places *places)
{
        size_t i, size = 0;
        struct place *place;
        char *next;

        for (i = 0; i < places->count; i++) {
                place = &places->list[i];
                size += strlen(place->name) + 1;
                if (place->alias != NULL)
                        size += strlen(place->alias) + 1;
        }
        if ((places->keys = malloc(size)) == NULL)
                return -1;

        next = places->keys;
        for (i = 0; i < places->count; i++) {
                place = &places->list[i];
                place->key = next;
                next += places_fold(place->name, strlen(place->name), next) + 1;
                if (place->alias != NULL) {
                        place->alias_key = next;
                        next += places_fold(place->alias, strlen(place->alias), next) + 1;
                }
        }
        return 0;
}

static int places_compare(const void *a, const void *b)
{
        const struct place *pa = a, *pb = b;
        int order = strcmp(pa->key, pb->key);

        return order != 0 ? order : strcmp(pa->code, pb->code);
}

/* Points each subdivision at its country. Runs after sorting, which moves places. */
static int places_link_countries(struct places *places, const char *dir, char *err, size_t errlen)
{
        const struct place *by_alpha2[26 * 26] = {NULL};
        struct place *place;
        size_t i;
        int index;

        for (i = 0; i < places->count; i++) {
                place = &places->list[i];
                /* Loading checked that a code has two letters, then nothing or '-'. */
                if (place->code[2] != '\0')
                        continue;
                index = places_alpha2_index(place->code);
                if (by_alpha2[index] != NULL) {
                        snprintf(err, errlen, "%s/%s: duplicate \"alpha_2\" \"%s\"", dir,
                                 PLACES_COUNTRIES_FILE, place->code);
                        return -1;
                }
                by_alpha2[index] = place;
        }

        for (i = 0; i < places->count; i++) {
                place = &places->list[i];
                if (place->code[2] != '-')
                        continue;
                place->country = by_alpha2[places_alpha2_index(place->code)];
                if (place->country == NULL) {
                        snprintf(err, errlen, "%s/%s: \"%s\" belongs to no country in %s", dir,
                                 PLACES_SUBDIVISIONS_FILE, place->code, PLACES_COUNTRIES_FILE);
                        return -1;
                }
        }
        return 0;
}

struct places *places_load(const char *dir, char *err, size_t errlen)
{
        json_object *countries, *subdivisions;
        struct places *places;
        size_t capacity;

        if ((places = calloc(1, sizeof(*places))) == NULL)
                goto nomem;

        places->countries_json =
            places_read_array(dir, PLACES_COUNTRIES_FILE, "3166-1", &countries, err, errlen);
        if (places->countries_json == NULL)
                goto fail;
        places->subdivisions_json =
            places_read_array(dir, PLACES_SUBDIVISIONS_FILE, "3166-2", &subdivisions, err, errlen);
        if (places->subdivisions_json == NULL)
                goto fail;

        capacity = json_object_array_length(countries) + json_object_array_length(subdivisions);
        if ((places->list = calloc(capacity + 1, sizeof(*places->list))) == NULL)
                goto nomem;
        if (places_add_countries(places, countries, dir, err, errlen) == -1 ||
            places_add_subdivisions(places, subdivisions, dir, err, errlen) == -1)
                goto fail;
        if (places_make_keys(places) == -1)
                goto nomem;

        qsort(places->list, places->count, sizeof(*places->list), places_compare);
        if (places_link_countries(places, dir, err, errlen) == -1)
                goto fail;
        return places;

nomem:
        snprintf(err, errlen, "loading places from %s: out of memory", dir);
fail:
        places_free(places);
        return NULL;
}

void places_free(struct places *places)
{
        if (places == NULL)
                return;
        free(places->keys);
        free(places->list);
        json_object_put(places->subdivisions_json);
        json_object_put(places->countries_json);
        free(places);
}

size_t places_count(const struct places *places)
{
        return places->count;
}

static int places_has_prefix(const struct place *place, const char *query, size_t len)
{
        if (strncmp(place->key, query, len) == 0)
                return 1;
        return place->alias_key != NULL && strncmp(place->alias_key, query, len) == 0;
}

static int places_is_word_boundary(char c)
{
        return c == ' ' || c == '-' || c == '\'' || c == '(' || c == ')' || c == '/';
}

/* Returns whether a word after the first one in key starts with query. */
static int places_key_has_word_prefix(const char *key, const char *query, size_t len)
{
        size_t i;

        for (i = 1; key[i] != '\0'; i++) {
                if (places_is_word_boundary(key[i - 1]) && strncmp(key + i, query, len) == 0)
                        return 1;
        }
        return 0;
}

static int places_has_word_prefix(const struct place *place, const char *query, size_t len)
{
        if (places_key_has_word_prefix(place->key, query, len))
                return 1;
        return place->alias_key != NULL && places_key_has_word_prefix(place->alias_key, query, len);
}

static enum places_rank places_rank(const struct place *place, const char *query, size_t len)
{
        if (places_has_prefix(place, query, len))
                return place->country == NULL ? PLACES_RANK_COUNTRY_NAME
                                              : PLACES_RANK_SUBDIVISION_NAME;
        if (places_has_word_prefix(place, query, len))
                return PLACES_RANK_WORD;
        if (place->country != NULL && places_has_prefix(place->country, query, len))
                return PLACES_RANK_COUNTRY_OF_SUBDIVISION;
        return PLACES_RANK_NONE;
}

static int places_add_string(json_object *object, const char *key, const char *value)
{
        json_object *string;

        if ((string = json_object_new_string(value)) == NULL)
                return -1;
        if (json_object_object_add(object, key, string) != 0) {
                json_object_put(string);
                return -1;
        }
        return 0;
}

static json_object *places_to_json(const struct place *place)
{
        json_object *object;

        if ((object = json_object_new_object()) == NULL)
                return NULL;
        if (places_add_string(object, "name", place->name) == -1 ||
            places_add_string(object, "code", place->code) == -1 ||
            places_add_string(object, "type", place->type) == -1 ||
            (place->country != NULL &&
             places_add_string(object, "country", place->country->name) == -1)) {
                json_object_put(object);
                return NULL;
        }
        return object;
}

static int places_is_space(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Appends to results the places of one rank, up to limit results in all. */
static int places_append_rank(const struct places *places, enum places_rank rank, const char *query,
                              size_t len, json_object *results, size_t limit)
{
        json_object *object;
        size_t i;

        for (i = 0; i < places->count && json_object_array_length(results) < limit; i++) {
                if (places_rank(&places->list[i], query, len) != rank)
                        continue;
                if ((object = places_to_json(&places->list[i])) == NULL)
                        return -1;
                if (json_object_array_add(results, object) != 0) {
                        json_object_put(object);
                        return -1;
                }
        }
        return 0;
}

json_object *places_search(const struct places *places, const char *query, size_t limit)
{
        json_object *results;
        char *folded = NULL;
        size_t len;
        int rank;

        if ((results = json_object_new_array()) == NULL)
                return NULL;

        while (places_is_space(*query))
                query++;
        len = strlen(query);
        while (len > 0 && places_is_space(query[len - 1]))
                len--;
        if (len == 0 || limit == 0)
                return results;

        if ((folded = malloc(len + 1)) == NULL)
                goto fail;
        /* A query of combining accents only folds to nothing and matches nothing. */
        if ((len = places_fold(query, len, folded)) == 0)
                goto done;

        for (rank = 0; rank < PLACES_RANK_NONE; rank++) {
                if (places_append_rank(places, rank, folded, len, results, limit) == -1)
                        goto fail;
        }
done:
        free(folded);
        return results;

fail:
        free(folded);
        json_object_put(results);
        return NULL;
}
