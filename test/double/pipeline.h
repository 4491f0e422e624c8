/*
 * pipeline.h - the aggregation stages the double runs on a collection (change streams are
 * changestream.h's business).
 *
 * Stages: $match, $sort, $skip, $limit, $project, $unset, $count, $group (with _id a constant,
 * null or "$field" path, and $sum, $avg, $min, $max, $first, $last, $push, $addToSet, $count
 * accumulators over constants or "$field" paths; this is what drivers' countDocuments sends)
 * and a leading $collStats {count: {}} (estimatedDocumentCount). Anything else fails with
 * mongod's "Unrecognized pipeline stage name" (40324) or a clear "not supported" error.
 */
#ifndef FTS_DOUBLE_PIPELINE_H
#define FTS_DOUBLE_PIPELINE_H

#include "errors.h"
#include "query.h"
#include "server.h"

#include <bson/bson.h>
#include <stdbool.h>

/* Runs pipeline over coll (NULL: an empty collection); out receives the resulting documents. */
bool fts_double_pipeline_run(fts_double_server_t *srv, const fts_double_coll_t *coll,
                             const bson_t *pipeline, fts_double_docvec_t *out,
                             fts_double_error_t *err);

#endif
