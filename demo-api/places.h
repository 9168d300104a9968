/*
 * Countries and their subdivisions from Debian's iso-codes JSON files
 * (iso_3166-1.json and iso_3166-2.json), searched by name prefix.
 */
#ifndef PLACES_H
#define PLACES_H

#include <stddef.h>

#include <json-c/json.h>

struct places;

/*
 * Loads iso_3166-1.json and iso_3166-2.json from dir. On failure returns NULL
 * and writes a message that names the file into err.
 */
struct places *places_load(const char *dir, char *err, size_t errlen);

void places_free(struct places *places);

/* Returns the number of countries plus subdivisions. */
size_t places_count(const struct places *places);

/*
 * Searches for places whose folded name, or a word of it, starts with the
 * folded query, and returns a new json-c array of at most limit objects with
 * "name", "code", "type" and, for a subdivision, "country". Folding ignores
 * case, most Latin accents and surrounding whitespace. The caller releases
 * the array with json_object_put(). Returns NULL when out of memory.
 *
 * Results come in four groups: countries whose name starts with the query,
 * subdivisions whose name starts with it, places where a later word starts
 * with it, and last the subdivisions of countries whose name starts with it.
 * Each group is sorted by folded name.
 */
json_object *places_search(const struct places *places, const char *query, size_t limit);

#endif
