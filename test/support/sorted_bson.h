/*
 * sorted_bson.h - documents compared regardless of field order.
 *
 * MongoDB keeps field order, but which order an update leaves new fields in, or in which order
 * a generator wrote them, is not what the tests check: they compare documents with the keys of
 * every (sub)document sorted, arrays left in their own order.
 */
#ifndef FTS_TEST_SORTED_BSON_H
#define FTS_TEST_SORTED_BSON_H

#include <bson/bson.h>

/* Appends in's fields to out, keys of every document sorted recursively. */
void fts_test_bson_append_sorted(bson_t *out, const bson_t *in);

/* Canonical extended JSON of doc with its keys sorted; bson_free it. */
char *fts_test_bson_sorted_json(const bson_t *doc);

#endif
