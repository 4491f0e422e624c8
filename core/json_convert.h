/*
 * json_convert.h - BSON to plain JSON, deterministically, for the bodies sent to Elasticsearch.
 *
 * Elasticsearch speaks plain JSON, not MongoDB's extended JSON, so every BSON type is mapped to
 * the JSON value a search index can use (table below). The same document always gives the same
 * bytes: field order is kept, numbers have one spelling, nothing depends on the locale or the
 * clock. The output is always valid UTF-8 and valid JSON, whatever the input holds; a document
 * that is not well-formed BSON is refused with an error naming the field path where it broke,
 * and nothing is left appended (invariant 6: no partial write).
 *
 *   BSON type            JSON
 *   double               shortest decimal that reads back to the same double; an integral value
 *                        keeps a ".0" (1.0, -0.0) so it stays a floating-point number for JSON
 *                        readers (Elasticsearch's dynamic mapping, libbson); NaN, ±Inf -> null
 *   string               string; invalid UTF-8 -> U+FFFD per maximal ill-formed subpart
 *   document / array     object / array, order kept (duplicate keys are kept as they are)
 *   binary (any subtype) string, standard base64 with padding
 *   undefined            null
 *   ObjectId             string, 24 lowercase hex digits
 *   bool                 true / false
 *   date                 string "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) for years 0000-9999,
 *                        otherwise the number of milliseconds since the epoch
 *   null                 null
 *   regex                string "/pattern/options"
 *   DBPointer            {"$ref": collection, "$id": 24-hex ObjectId}
 *   JavaScript code      string (the code)
 *   symbol               string
 *   code with scope      string (the code; the scope is left out)
 *   int32                number
 *   timestamp            {"t": seconds, "i": increment}
 *   int64                number when -2^53 <= v <= 2^53, else a string of its decimal digits
 *   decimal128           string, as bson_decimal128_to_string spells it ("1.10", "NaN", ...)
 *   minKey / maxKey      null
 * Keys are JSON strings with the same UTF-8 repair.
 */
#ifndef FTS_JSON_CONVERT_H
#define FTS_JSON_CONVERT_H

#include <stdbool.h>
#include <stddef.h>

#include <bson/bson.h>

#include "buffer.h"
#include "error.h"

/* Deepest nesting of documents and arrays converted. MongoDB stores at most 100 levels (180
 * with its own wrappers); the bound keeps the recursion's stack use small and known. */
#define FTS_JSON_MAX_DEPTH 200

/* Appends doc as a JSON object to out. On failure (corrupt BSON, nesting deeper than
 * FTS_JSON_MAX_DEPTH) fills err (FTS_ERROR_INPUT) and leaves out as it was. */
bool fts_json_append_bson(fts_buffer_t *out, const bson_t *doc, fts_error_t *err);

/* Like fts_json_append_bson, leaving out every top-level field named skip_key (NULL: none).
 * Used to copy a whole MongoDB document without its _id. */
bool fts_json_append_bson_without(fts_buffer_t *out, const bson_t *doc, const char *skip_key,
                                  fts_error_t *err);

/* Appends the value iter points at (not its key) as JSON. Same failure rules; error messages
 * name the path from iter's key down. */
bool fts_json_append_value(fts_buffer_t *out, const bson_iter_t *iter, fts_error_t *err);

/* Appends text as a quoted JSON string, replacing invalid UTF-8 with U+FFFD. Never fails. */
void fts_json_append_string(fts_buffer_t *out, const char *text, size_t len);

/* True when text is well-formed UTF-8 (no overlong forms, no surrogates, nothing above
 * U+10FFFF). Embedded NUL bytes are well-formed UTF-8 and accepted. */
bool fts_utf8_validate(const char *text, size_t len);

#endif
