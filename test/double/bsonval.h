/*
 * bsonval.h - BSON values the way mongod compares, orders and prints them.
 *
 * The double keeps collections ordered by _id and sorts query results, so it needs mongod's
 * total order over BSON values: first by canonical type bracket (MinKey < null < numbers <
 * strings < objects < arrays < binary < ObjectId < bool < date < timestamp < regex < MaxKey),
 * then by value within the bracket. Numbers of different types compare by value (1 == 1.0 ==
 * 1L), which is also why the _id index treats them as the same key.
 */
#ifndef FTS_DOUBLE_BSONVAL_H
#define FTS_DOUBLE_BSONVAL_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

/* mongod's canonical type bracket (lower sorts first). */
int fts_double_type_bracket(bson_type_t type);

/* Total order: <0, 0, >0. Values borrowed, only read. */
int fts_double_value_compare(const bson_value_t *a, const bson_value_t *b);

/* Whole documents compared as mongod compares embedded objects. */
int fts_double_doc_compare(const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len);

/* Same type and same bytes: what mongod calls a no-op write ("1" vs "1.0" differ). */
bool fts_double_value_identical(const bson_value_t *a, const bson_value_t *b);

/* Whether the value is a number (int32, int64, double, decimal128). */
bool fts_double_value_is_number(const bson_value_t *v);
/* A number as double/int64 (0 for non-numbers). */
double fts_double_value_as_double(const bson_value_t *v);
int64_t fts_double_value_as_int64(const bson_value_t *v);

/* mongod's type alias ("string", "objectId", ...) for $type. */
const char *fts_double_type_alias(bson_type_t type);

/* The value as mongod prints it inside messages (relaxed JSON); caller frees with bson_free. */
char *fts_double_value_to_json(const bson_value_t *v);

/* Array index keys "0", "1", ... without allocating: returns the key for i, using buf. */
const char *fts_double_index_key(uint32_t i, char buf[16]);

/* Reads a non-negative integer written in decimal with no sign or leading zero ("0", "12"):
 * how mongod decides a path component addresses an array element. */
bool fts_double_parse_index(const char *text, size_t len, uint32_t *out);

/* Looks up a top-level field; true and fills value (borrowing doc's bytes) when present. */
bool fts_double_doc_get(const bson_t *doc, const char *key, bson_value_t *value);

/* Looks up a dotted path through embedded documents only (no array traversal). */
bool fts_double_doc_get_path(const bson_t *doc, const char *path, bson_value_t *value);

/* A borrowed bson_t over an embedded document or array value. */
bool fts_double_value_as_doc(const bson_value_t *v, bson_t *out);

/* Truthiness of a projection / option value: numbers != 0, true. */
bool fts_double_value_truthy(const bson_value_t *v);

#endif
