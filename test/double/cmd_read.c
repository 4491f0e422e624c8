/*
 * cmd_read.c - find, getMore, killCursors, count, distinct and aggregate.
 */
#include "bsonval.h"
#include "changestream.h"
#include "commands.h"
#include "cursor.h"
#include "pipeline.h"
#include "query.h"

#include <stdio.h>
#include <string.h>

/* A non-negative integer option (skip, limit, batchSize); mongod's 51024 when negative. */
static bool non_negative(fts_double_cmd_t *cmd, const char *field, int64_t *out, bool *present)
{
    if (!fts_double_cmd_get_int64(cmd, field, out, present)) {
        return false;
    }
    if (*present && *out < 0) {
        return fts_double_error_set(&cmd->err, 51024,
                                    "BSON field '%s' value must be >= 0, actual value '%lld'",
                                    field, (long long)*out);
    }
    return true;
}

fts_double_cmd_status_t fts_double_cmd_find(fts_double_cmd_t *cmd)
{
    const char *name;
    bson_t filter, sort, proj;
    bool has_filter, has_sort, has_proj, has_skip, has_limit, has_batch, single_batch, tailable;
    int64_t skip = 0, limit = 0, batch = FTS_DOUBLE_DEFAULT_FIRST_BATCH;
    if (!fts_double_cmd_collection(cmd, &name) ||
        !fts_double_cmd_get_doc(cmd, "filter", &filter, &has_filter) ||
        !fts_double_cmd_get_doc(cmd, "sort", &sort, &has_sort) ||
        !fts_double_cmd_get_doc(cmd, "projection", &proj, &has_proj) ||
        !non_negative(cmd, "skip", &skip, &has_skip) ||
        !non_negative(cmd, "limit", &limit, &has_limit) ||
        !non_negative(cmd, "batchSize", &batch, &has_batch)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_cmd_get_bool(cmd, "singleBatch", false, &single_batch);
    fts_double_cmd_get_bool(cmd, "tailable", false, &tailable);
    if (tailable) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_BAD_VALUE,
                                   "tailable cursors are not supported by ftsync-mongo-double");
    }
    if (!has_batch) {
        batch = FTS_DOUBLE_DEFAULT_FIRST_BATCH;
    }
    fts_double_projection_t *projection =
        has_proj ? fts_double_projection_new(&proj, &cmd->err) : NULL;
    if (has_proj && !projection) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    fts_double_docvec_t docs = {0};
    if (!fts_double_query_collect(coll, has_filter ? &filter : NULL, has_sort ? &sort : NULL, skip,
                                  limit, &docs, &cmd->err)) {
        fts_double_projection_destroy(projection);
        return FTS_DOUBLE_CMD_ERROR;
    }
    char ns[512];
    snprintf(ns, sizeof ns, "%s.%s", cmd->db, name);
    fts_double_cursor_reply_docs(cmd->srv, &cmd->reply, cmd->db, name, ns, &docs, projection, batch,
                                 single_batch);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_get_more(fts_double_cmd_t *cmd)
{
    bson_value_t id_value, coll_value;
    if (!fts_double_doc_get(cmd->body, "getMore", &id_value) ||
        id_value.value_type != BSON_TYPE_INT64) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_TYPE_MISMATCH,
                                   "BSON field 'getMore.getMore' is the wrong type, expected type "
                                   "'long'");
    }
    if (!fts_double_doc_get(cmd->body, "collection", &coll_value) ||
        coll_value.value_type != BSON_TYPE_UTF8) {
        return fts_double_cmd_fail(cmd, 40414,
                                   "BSON field 'getMore.collection' is missing but a required "
                                   "field");
    }
    int64_t id = id_value.value.v_int64;
    int64_t batch = 0, max_time = 0;
    bool has_batch, has_max_time;
    if (!fts_double_cmd_get_int64(cmd, "batchSize", &batch, &has_batch) ||
        !fts_double_cmd_get_int64(cmd, "maxTimeMS", &max_time, &has_max_time)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_cursor_t *cursor = fts_double_cursor_find(cmd->srv, id);
    if (!cursor) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_CURSOR_NOT_FOUND, "cursor id %lld not found",
                                   (long long)id);
    }
    cmd->is_change_stream = cursor->stream != NULL;
    if (strcmp(cursor->db, cmd->db) != 0 ||
        strcmp(cursor->coll, coll_value.value.v_utf8.str) != 0) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_UNAUTHORIZED,
                                   "Requested getMore on namespace '%s.%s', but cursor belongs to "
                                   "a different namespace %s",
                                   cmd->db, coll_value.value.v_utf8.str, cursor->ns);
    }
    if (cursor->waiting) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_CURSOR_IN_USE,
                                   "cursor id %lld is already in use", (long long)id);
    }
    /* The cursor is checked out: failGetMoreAfterCursorCheckout may fail the getMore now, and
     * the error goes through the usual label rules (is_change_stream is known). mongod deletes
     * the cursor of a getMore that fails after checkout (getmore_cmd.cpp). */
    fts_double_fail_action_t fail;
    memset(&fail, 0, sizeof fail);
    if (fts_double_failpoint_check(&cmd->srv->fail_get_more, "getMore", cmd->req->conn->app_name,
                                   &fail)) {
        int code = fail.error_code;
        fts_double_fail_action_clear(&fail);
        fts_double_cursor_free(cmd->srv, cursor);
        return fts_double_cmd_fail(cmd, code, "Hit the 'failGetMoreAfterCursorCheckout' failpoint");
    }
    if (cursor->stream) {
        /* mongod's awaitData default: one second when the getMore names no maxTimeMS. */
        return fts_double_stream_get_more(cmd, cursor, has_batch ? batch : 0,
                                          has_max_time && max_time > 0 ? max_time : 1000);
    }
    if (has_max_time) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_BAD_VALUE,
                                   "cannot set maxTimeMS on getMore command for a non-awaitData "
                                   "cursor");
    }
    bson_t cursor_doc, array;
    fts_double_cursor_reply_begin(&cmd->reply, &cursor_doc, &array, "nextBatch");
    bool exhausted = fts_double_cursor_fill(cursor, &array, has_batch && batch > 0 ? batch : -1);
    fts_double_cursor_reply_end(&cmd->reply, &cursor_doc, &array, exhausted ? 0 : cursor->id,
                                cursor->ns, NULL);
    if (exhausted) {
        fts_double_cursor_free(cmd->srv, cursor);
    }
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_kill_cursors(fts_double_cmd_t *cmd)
{
    bson_value_t ids;
    bson_t list, killed, not_found, empty = BSON_INITIALIZER;
    if (!fts_double_doc_get(cmd->body, "cursors", &ids) || ids.value_type != BSON_TYPE_ARRAY) {
        return fts_double_cmd_fail(cmd, 40414,
                                   "BSON field 'killCursors.cursors' is missing but a required "
                                   "field");
    }
    fts_double_value_as_doc(&ids, &list);
    uint32_t nkilled = 0, nnot_found = 0;
    bson_iter_t it;
    bson_init(&killed);
    bson_init(&not_found);
    bson_iter_init(&it, &list);
    while (bson_iter_next(&it)) {
        int64_t id = fts_double_value_as_int64(bson_iter_value(&it));
        fts_double_cursor_t *cursor = fts_double_cursor_find(cmd->srv, id);
        char buf[16];
        if (!cursor) {
            bson_append_int64(&not_found, fts_double_index_key(nnot_found++, buf), -1, id);
            continue;
        }
        if (cursor->waiting) {
            /* The getMore parked on it is interrupted, as mongod's would be. */
            fts_double_request_t *waiting = cursor->waiting;
            fts_double_error_t err;
            cursor->waiting = NULL;
            waiting->cursor = NULL;
            fts_double_error_set(&err, FTS_DOUBLE_E_CURSOR_KILLED, "cursor id %lld was killed",
                                 (long long)id);
            fts_double_reply_error(cmd->srv, waiting, &err, true);
        }
        fts_double_cursor_free(cmd->srv, cursor);
        bson_append_int64(&killed, fts_double_index_key(nkilled++, buf), -1, id);
    }
    bson_append_array(&cmd->reply, "cursorsKilled", -1, &killed);
    bson_append_array(&cmd->reply, "cursorsNotFound", -1, &not_found);
    bson_append_array(&cmd->reply, "cursorsAlive", -1, &empty);
    bson_append_array(&cmd->reply, "cursorsUnknown", -1, &empty);
    bson_destroy(&killed);
    bson_destroy(&not_found);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_count(fts_double_cmd_t *cmd)
{
    const char *name;
    bson_t query;
    bool has_query, has_skip, has_limit;
    int64_t skip = 0, limit = 0;
    if (!fts_double_cmd_collection(cmd, &name) ||
        !fts_double_cmd_get_doc(cmd, "query", &query, &has_query) ||
        !non_negative(cmd, "skip", &skip, &has_skip)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (!fts_double_cmd_get_int64(cmd, "limit", &limit, &has_limit)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (limit < 0) {
        limit = -limit; /* mongod treats a negative count limit as its absolute value */
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    int64_t n;
    if (coll && (!has_query || bson_empty(&query))) {
        n = (int64_t)coll->count - skip;
        n = n < 0 ? 0 : n;
        if (limit > 0 && n > limit) {
            n = limit;
        }
    } else {
        fts_double_docvec_t docs = {0};
        if (!fts_double_query_collect(coll, has_query ? &query : NULL, NULL, skip, limit, &docs,
                                      &cmd->err)) {
            return FTS_DOUBLE_CMD_ERROR;
        }
        n = (int64_t)docs.count;
        fts_double_docvec_destroy(&docs);
    }
    bson_append_int32(&cmd->reply, "n", 1, (int32_t)n);
    return FTS_DOUBLE_CMD_OK;
}

typedef struct {
    bson_t *values;
    uint32_t count;
    bson_value_t *seen;
    size_t nseen, cap;
} distinct_ctx_t;

static void distinct_add(const bson_value_t *value, bool expanded, void *arg)
{
    distinct_ctx_t *ctx = arg;
    if (value->value_type == BSON_TYPE_ARRAY && !expanded) {
        return; /* its elements come next, one by one */
    }
    for (size_t i = 0; i < ctx->nseen; i++) {
        if (fts_double_value_compare(&ctx->seen[i], value) == 0) {
            return;
        }
    }
    if (ctx->nseen == ctx->cap) {
        ctx->cap = ctx->cap ? ctx->cap * 2 : 16;
        ctx->seen = bson_realloc(ctx->seen, ctx->cap * sizeof *ctx->seen);
    }
    ctx->seen[ctx->nseen++] = *value;
    char buf[16];
    bson_append_value(ctx->values, fts_double_index_key(ctx->count++, buf), -1, value);
}

fts_double_cmd_status_t fts_double_cmd_distinct(fts_double_cmd_t *cmd)
{
    const char *name;
    bson_t query;
    bool has_query;
    bson_value_t key;
    if (!fts_double_cmd_collection(cmd, &name) ||
        !fts_double_cmd_get_doc(cmd, "query", &query, &has_query)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (!fts_double_doc_get(cmd->body, "key", &key) || key.value_type != BSON_TYPE_UTF8) {
        return fts_double_cmd_fail(cmd, 40414,
                                   "BSON field 'distinct.key' is missing but a required field");
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    fts_double_docvec_t docs = {0};
    if (!fts_double_query_collect(coll, has_query ? &query : NULL, NULL, 0, 0, &docs, &cmd->err)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    bson_t values;
    distinct_ctx_t ctx = {&values, 0, NULL, 0, 0};
    bson_append_array_begin(&cmd->reply, "values", 6, &values);
    for (size_t i = 0; i < docs.count; i++) {
        bson_t view;
        fts_double_doc_view(docs.items[i], &view);
        fts_double_path_values(&view, key.value.v_utf8.str, distinct_add, &ctx);
    }
    bson_append_array_end(&cmd->reply, &values);
    bson_free(ctx.seen);
    fts_double_docvec_destroy(&docs);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_aggregate(fts_double_cmd_t *cmd)
{
    bson_value_t target, pipeline_value;
    bson_t pipeline, cursor_opts;
    bool has_cursor;
    fts_double_doc_get(cmd->body, "aggregate", &target);
    if (!fts_double_doc_get(cmd->body, "pipeline", &pipeline_value) ||
        pipeline_value.value_type != BSON_TYPE_ARRAY) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_TYPE_MISMATCH,
                                   "'pipeline' option must be specified as an array");
    }
    fts_double_value_as_doc(&pipeline_value, &pipeline);
    if (!fts_double_cmd_get_doc(cmd, "cursor", &cursor_opts, &has_cursor)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (!has_cursor) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                   "The 'cursor' option is required, except for aggregate with the "
                                   "explain argument");
    }
    int64_t batch = -1;
    bson_value_t bs;
    if (fts_double_doc_get(&cursor_opts, "batchSize", &bs)) {
        if (!fts_double_value_is_number(&bs) || fts_double_value_as_int64(&bs) < 0) {
            return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_BAD_VALUE,
                                       "cursor.batchSize must not be negative");
        }
        batch = fts_double_value_as_int64(&bs);
    }
    if (fts_double_pipeline_is_change_stream(&pipeline)) {
        return fts_double_stream_aggregate(cmd, &pipeline, batch);
    }
    if (target.value_type != BSON_TYPE_UTF8) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_INVALID_NAMESPACE,
                                   "{aggregate: 1} is only supported by ftsync-mongo-double for "
                                   "$changeStream; a collection is required");
    }
    const char *name;
    if (!fts_double_cmd_collection(cmd, &name)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    fts_double_docvec_t docs = {0};
    if (!fts_double_pipeline_run(cmd->srv, coll, &pipeline, &docs, &cmd->err)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    char ns[512];
    snprintf(ns, sizeof ns, "%s.%s", cmd->db, name);
    fts_double_cursor_reply_docs(cmd->srv, &cmd->reply, cmd->db, name, ns, &docs, NULL,
                                 batch < 0 ? FTS_DOUBLE_DEFAULT_FIRST_BATCH : batch, false);
    return FTS_DOUBLE_CMD_OK;
}
