/*
 * query.h - query filters, projections and sorts, evaluated the way mongod evaluates them for
 * the subset the double supports.
 *
 * Filters: implicit equality (top level and dotted paths, through arrays as mongod does: {a.b: 1}
 * matches {a: [{b: 1}]} and {tags: "x"} matches {tags: ["x", "y"]}), $eq $ne $gt $gte $lt $lte
 * (within one type bracket, numbers across types), $in $nin $exists $type $size $all $elemMatch
 * $not $regex (POSIX extended syntax with \d \w \s translated) $mod, and $and $or $nor $comment.
 * Anything else ($expr, $where, $text, geo) is refused with a clear error instead of guessed.
 * The same matcher filters change events for a change stream's $match.
 *
 * Projections: inclusion or exclusion of (dotted) fields, with _id included unless excluded.
 * Sorts: any number of fields, 1 or -1, mongod's BSON order, missing fields sort as null.
 */
#ifndef FTS_DOUBLE_QUERY_H
#define FTS_DOUBLE_QUERY_H

#include "errors.h"
#include "store.h"

#include <bson/bson.h>
#include <stdbool.h>

/* Checks that the filter only uses what the matcher supports; error code 2 (BadValue) else. */
bool fts_double_match_validate(const bson_t *filter, fts_double_error_t *err);
/* Whether doc matches a validated filter. */
bool fts_double_match(const bson_t *doc, const bson_t *filter);
/* Whether one value satisfies a document of operators ({$gte: 3, $lt: 5}), as for $pull and
 * $elemMatch. The operators are validated by fts_double_match_validate({x: ops}). */
bool fts_double_match_value(const bson_value_t *value, const bson_t *ops);

typedef struct fts_double_projection fts_double_projection_t;
/* NULL with err set on a bad projection; an empty spec projects nothing away. */
fts_double_projection_t *fts_double_projection_new(const bson_t *spec, fts_double_error_t *err);
void fts_double_projection_destroy(fts_double_projection_t *proj);
/* Appends the projected fields of doc to out (an empty, initialised document). */
void fts_double_projection_apply(const fts_double_projection_t *proj, const bson_t *doc,
                                 bson_t *out);

bool fts_double_sort_validate(const bson_t *spec, fts_double_error_t *err);
/* Sorts docs by a validated spec; ties keep their order (the _id order of a scan). */
void fts_double_sort(fts_double_doc_t **docs, size_t count, const bson_t *spec);

/* A growable list of document references. */
typedef struct {
    fts_double_doc_t **items;
    size_t count, cap;
} fts_double_docvec_t;

/* Appends, taking over the caller's reference. */
void fts_double_docvec_push(fts_double_docvec_t *vec, fts_double_doc_t *doc);
/* Drops every reference and the array. */
void fts_double_docvec_destroy(fts_double_docvec_t *vec);

/* The documents of coll (NULL: none) matching filter, sorted, skipped and limited (limit 0: no
 * limit), as new references in out. Filter and sort are validated here. */
bool fts_double_query_collect(const fts_double_coll_t *coll, const bson_t *filter,
                              const bson_t *sort, int64_t skip, int64_t limit,
                              fts_double_docvec_t *out, fts_double_error_t *err);

/* Calls fn for every value a (dotted) path reaches in doc, following arrays as mongod's
 * matcher does; `expanded` says the value is an element of an array the path ended on. */
typedef void (*fts_double_path_fn)(const bson_value_t *value, bool expanded, void *arg);
void fts_double_path_values(const bson_t *doc, const char *path, fts_double_path_fn fn, void *arg);

#endif
