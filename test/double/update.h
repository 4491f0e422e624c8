/*
 * update.h - applying update documents to a document, and describing what changed the way a
 * change stream's updateDescription does.
 *
 * Supported, as mongod 6.0 applies them: replacement documents; $set $unset $inc $mul $min $max
 * $rename $setOnInsert $currentDate $push ($each, $slice, $position) $addToSet ($each) $pop
 * $pull $pullAll, on top-level and dotted paths (numeric components address array elements).
 * New fields are appended in lexicographic order, as mongod 5.0+ does. Not supported, and
 * refused: positional operators ($, $[], $[id]), arrayFilters, $bit, pipeline updates.
 *
 * The update description follows mongod's modifier log: updatedFields holds each path an
 * operator set (at the first level it created), removedFields each path it removed, elements
 * appended by $push/$addToSet appear as "array.<index>", and $pop/$pull/$pullAll report the
 * whole new array. truncatedArrays is always empty: mongod only fills it for pipeline updates.
 * An update that leaves the document byte-for-byte unchanged is a no-op (no event, nModified 0).
 */
#ifndef FTS_DOUBLE_UPDATE_H
#define FTS_DOUBLE_UPDATE_H

#include "errors.h"

#include <bson/bson.h>
#include <stdbool.h>

/* Whether u is a replacement document (no leading $ operator); checks an operator document's
 * operators and paths. A pipeline (array) is refused. */
bool fts_double_update_check(const bson_value_t *u, bool *is_replacement, fts_double_error_t *err);

/* Applies operator update `update` to old_doc into new_doc (initialised, empty). inserting says
 * the document is being created by an upsert ($setOnInsert applies). desc (NULL: not wanted)
 * receives {updatedFields, removedFields, truncatedArrays}. */
bool fts_double_update_apply(const bson_t *old_doc, const bson_t *update, bool inserting,
                             bson_t *new_doc, bson_t *desc, fts_double_error_t *err);

/* Builds the replacement of old_doc (NULL for an upsert) by repl into new_doc: _id first and
 * kept from old_doc (id may be NULL; a different _id in repl is error 66). */
bool fts_double_update_replace(const bson_value_t *id, const bson_t *repl, bson_t *new_doc,
                               fts_double_error_t *err);

/* The document an upsert starts from: the equality conditions of the query. */
bool fts_double_update_upsert_seed(const bson_t *query, bson_t *seed, fts_double_error_t *err);

/* Copies doc into out with _id as the first field, generating an ObjectId when it has none,
 * as mongod does for every stored document. */
void fts_double_update_ensure_id(const bson_t *doc, bson_t *out);

#endif
