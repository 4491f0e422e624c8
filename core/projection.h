/*
 * projection.h - from one MongoDB document, the Elasticsearch document id and JSON body.
 *
 * Configured by FTSYNC_ID_FIELD (which field is the index _id; default "_id") and FTSYNC_FIELDS
 * (which fields are copied, each "source" or "source:target"; empty copies the whole document).
 * The field list is parsed and checked once, when the projection is built, so a bad setting
 * stops the service at start-up instead of dead-lettering every document (invariant 6).
 *
 * Rules:
 *   - id: ObjectId -> 24 lowercase hex digits; string -> itself (1..FTS_ACTION_ID_MAX bytes of
 *     valid UTF-8 without NUL); int32/int64 -> decimal; double with an integral value in the
 *     int64 range -> decimal ("5", never "5.0", so 5 and 5.0 name the same document); anything
 *     else, or no such field, is an error (FTS_ERROR_INPUT) naming the field. Different types
 *     can give the same id (the string "5" and the number 5): that is the price of plain ids.
 *   - id_field and sources may be dotted paths ("prices.us.final"), resolved through embedded
 *     documents and arrays ("tags.0"); a field whose name itself contains a dot cannot be named.
 *   - body: a JSON object (json_convert.h) that never contains "_id", because Elasticsearch 7+
 *     refuses metadata fields in the body. With no field list the whole document is copied,
 *     top-level _id left out; with a list, fields appear in the list's order under their
 *     target names, and a field missing from the document is simply absent.
 *   - targets are plain names: a dotted source needs a rename ("prices.us.final:price");
 *     targets must be unique and may not be an Elasticsearch metadata field (_id, _index...).
 */
#ifndef FTS_PROJECTION_H
#define FTS_PROJECTION_H

#include <stdbool.h>

#include <bson/bson.h>

#include "buffer.h"
#include "config.h"
#include "error.h"

typedef struct fts_projection fts_projection_t;

/* Builds a projection. id_field NULL means "_id"; fields NULL or empty means the whole
 * document. Both are copied. Refuses (FTS_ERROR_CONFIG, naming the item) empty names, empty
 * path segments, duplicate targets, a target containing '.', and metadata-field targets. */
fts_projection_t *fts_projection_new(const char *id_field, const fts_string_list_t *fields,
                                     fts_error_t *err);
void fts_projection_destroy(fts_projection_t *projection);

/* Index ids tagged with their value's type (FTSYNC_ID_FORMAT=typed; README.md, Extract: index
 * ids): "o:" + 24 hex digits for an ObjectId, "i:" + decimal for an int32, int64 or whole
 * double (numbers MongoDB holds equal stay one id), "s:" + the text for a string. Off (plain)
 * by default: the value alone, so an integer and the string of its digits share an id. */
void fts_projection_set_id_typed(fts_projection_t *projection, bool typed);

/* The configured id field ("_id" by default). Borrowed until the projection is destroyed. */
const char *fts_projection_id_field(const fts_projection_t *projection);

/* Appends the document's id (raw bytes, not JSON; tagged when typed) to id. A missing field fails
 * with FTS_ERROR_CODE_MISSING, a value that cannot be an id with FTS_ERROR_CODE_INVALID; both
 * FTS_ERROR_INPUT. On failure id is left as it was. */
bool fts_projection_document_id(const fts_projection_t *projection, const bson_t *doc,
                                fts_buffer_t *id, fts_error_t *err);

/* Appends the JSON body for doc to body. Fails (FTS_ERROR_INPUT) only on corrupt BSON, leaving
 * body as it was. */
bool fts_projection_body(const fts_projection_t *projection, const bson_t *doc, fts_buffer_t *body,
                         fts_error_t *err);

#endif
