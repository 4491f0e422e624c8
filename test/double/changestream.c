/*
 * changestream.c - opening, reading, rendering and waiting on change streams (see
 * changestream.h).
 *
 * A stream is a position in the event log (the sequence of the next event to look at) plus a
 * scope and options. Reading walks the log from that position, skips events outside the scope,
 * renders the rest as mongod's event documents, runs them through the user's stages and
 * appends what survives to the batch. Resume checks follow mongod: a token whose event fell
 * off the log is ChangeStreamHistoryLost (286), a token that is not one of ours is
 * InvalidResumeToken (260), and so is resuming with resumeAfter from an invalidate.
 */
#include "changestream.h"

#include "bsonval.h"
#include "conn.h"
#include "eventlog.h"
#include "txn.h"
#include "query.h"

#include <string.h>

typedef enum { SCOPE_COLLECTION, SCOPE_DATABASE, SCOPE_CLUSTER } scope_t;
typedef enum { FD_DEFAULT, FD_UPDATE_LOOKUP, FD_WHEN_AVAILABLE, FD_REQUIRED } full_doc_t;
typedef enum { FDB_OFF, FDB_WHEN_AVAILABLE, FDB_REQUIRED } before_t;
typedef enum { STEP_MATCH, STEP_PROJECT } step_kind_t;

typedef struct {
    step_kind_t kind;
    bson_t *filter;                      /* $match */
    fts_double_projection_t *projection; /* $project, $unset */
} step_t;

struct fts_double_stream {
    scope_t scope;
    const fts_double_ns_t *ns; /* collection scope */
    char *db;                  /* collection and database scope */
    uint64_t next_seq;
    bool has_start_at; /* startAtOperationTime, which may lie in the future */
    fts_double_ts_t start_at;
    full_doc_t full_document;
    before_t before;
    bool expanded;
    step_t *steps;
    size_t nsteps;
    /* Resumed right after an invalidating event: the invalidate comes first. */
    bool pending_invalidate;
    uint64_t invalidate_seq;
    fts_double_ts_t invalidate_ts;
    int64_t invalidate_wall;
};

void fts_double_stream_destroy(fts_double_stream_t *stream)
{
    if (!stream) {
        return;
    }
    for (size_t i = 0; i < stream->nsteps; i++) {
        if (stream->steps[i].filter) {
            bson_destroy(stream->steps[i].filter);
        }
        fts_double_projection_destroy(stream->steps[i].projection);
    }
    bson_free(stream->steps);
    bson_free(stream->db);
    bson_free(stream);
}

bool fts_double_pipeline_is_change_stream(const bson_t *pipeline)
{
    bson_iter_t it, stage;
    return bson_iter_init(&it, pipeline) && bson_iter_next(&it) && BSON_ITER_HOLDS_DOCUMENT(&it) &&
           bson_iter_recurse(&it, &stage) && bson_iter_next(&stage) &&
           strcmp(bson_iter_key(&stage), "$changeStream") == 0;
}

static bool is_internal_db(const char *db)
{
    return strcmp(db, "admin") == 0 || strcmp(db, "config") == 0 || strcmp(db, "local") == 0;
}

static bool in_scope(const fts_double_stream_t *s, const fts_double_event_t *ev)
{
    if (is_internal_db(ev->ns->db)) {
        return false;
    }
    if (ev->op == FTS_DOUBLE_OP_CREATE && !s->expanded) {
        return false;
    }
    switch (s->scope) {
    case SCOPE_COLLECTION:
        return ev->ns == s->ns;
    case SCOPE_DATABASE:
        return strcmp(ev->ns->db, s->db) == 0;
    case SCOPE_CLUSTER:
        return true;
    }
    return false;
}

static bool invalidates(const fts_double_stream_t *s, const fts_double_event_t *ev)
{
    switch (s->scope) {
    case SCOPE_COLLECTION:
        return ev->ns == s->ns && (ev->op == FTS_DOUBLE_OP_DROP || ev->op == FTS_DOUBLE_OP_RENAME);
    case SCOPE_DATABASE:
        return ev->op == FTS_DOUBLE_OP_DROP_DATABASE && strcmp(ev->ns->db, s->db) == 0;
    case SCOPE_CLUSTER:
        return false;
    }
    return false;
}

/* ---- rendering ---- */

static void append_ns(bson_t *dst, const char *key, const fts_double_ns_t *ns)
{
    bson_t doc;
    bson_append_document_begin(dst, key, -1, &doc);
    bson_append_utf8(&doc, "db", 2, ns->db, -1);
    if (*ns->coll) {
        bson_append_utf8(&doc, "coll", 4, ns->coll, -1);
    }
    bson_append_document_end(dst, &doc);
}

static void append_doc_or_null(bson_t *dst, const char *key, const fts_double_doc_t *doc)
{
    if (doc) {
        bson_t view;
        fts_double_doc_view(doc, &view);
        bson_append_document(dst, key, -1, &view);
    } else {
        bson_append_null(dst, key, -1);
    }
}

static char *event_summary(const fts_double_event_t *ev)
{
    bson_value_t id;
    const fts_double_doc_t *doc = ev->post ? ev->post : ev->pre;
    char *key =
        doc && fts_double_doc_id(doc, &id) ? fts_double_value_to_json(&id) : bson_strdup("?");
    char *text = bson_strdup_printf("{operationType: \"%s\", ns: \"%s\", documentKey: {_id: %s}}",
                                    fts_double_op_name(ev->op), ev->ns->full, key);
    bson_free(key);
    return text;
}

static bool render_event(fts_double_server_t *srv, const fts_double_stream_t *s,
                         const fts_double_event_t *ev, bson_t *out, fts_double_error_t *err)
{
    fts_double_token_t token;
    fts_double_token_for_event(&srv->log, ev, FTS_DOUBLE_TOKEN_EVENT, &token);
    fts_double_token_append(out, "_id", &token);
    bson_append_utf8(out, "operationType", 13, fts_double_op_name(ev->op), -1);
    bson_append_timestamp(out, "clusterTime", 11, ev->ts.t, ev->ts.i);
    bson_append_date_time(out, "wallTime", 8, ev->wall_ms);
    if (s->expanded && ev->op != FTS_DOUBLE_OP_DROP_DATABASE) {
        bson_append_binary(out, "collectionUUID", 14, BSON_SUBTYPE_UUID, ev->uuid, 16);
    }
    if (ev->in_txn) {
        /* A transaction's change: its session and transaction number (txn.h). */
        bson_append_int64(out, "txnNumber", 9, ev->txn_number);
        fts_double_txn_append_lsid(out, ev->lsid);
    }

    bool crud = ev->op == FTS_DOUBLE_OP_INSERT || ev->op == FTS_DOUBLE_OP_UPDATE ||
                ev->op == FTS_DOUBLE_OP_REPLACE || ev->op == FTS_DOUBLE_OP_DELETE;
    if (ev->op == FTS_DOUBLE_OP_INSERT || ev->op == FTS_DOUBLE_OP_REPLACE) {
        append_doc_or_null(out, "fullDocument", ev->post);
    } else if (ev->op == FTS_DOUBLE_OP_UPDATE && s->full_document != FD_DEFAULT) {
        const fts_double_doc_t *full = NULL;
        if (s->full_document == FD_UPDATE_LOOKUP) {
            bson_value_t id;
            fts_double_coll_t *coll = fts_double_store_find(srv->store, ev->ns->db, ev->ns->coll);
            if (coll && fts_double_doc_id(ev->post, &id)) {
                full = fts_double_coll_get(coll, &id);
            }
        } else if (ev->images) {
            full = ev->post;
        } else if (s->full_document == FD_REQUIRED) {
            char *summary = event_summary(ev);
            fts_double_error_set(err, FTS_DOUBLE_E_NO_MATCHING_DOCUMENT,
                                 "Change stream was configured to require a post-image for all "
                                 "update, delete and replace events, but the post-image was not "
                                 "found for event: %s",
                                 summary);
            bson_free(summary);
            return false;
        }
        append_doc_or_null(out, "fullDocument", full);
    }
    if (crud && ev->op != FTS_DOUBLE_OP_INSERT && s->before != FDB_OFF) {
        if (!ev->images && s->before == FDB_REQUIRED) {
            char *summary = event_summary(ev);
            fts_double_error_set(err, FTS_DOUBLE_E_NO_MATCHING_DOCUMENT,
                                 "Change stream was configured to require a pre-image for all "
                                 "update, delete and replace events, but the pre-image was not "
                                 "found for event: %s",
                                 summary);
            bson_free(summary);
            return false;
        }
        append_doc_or_null(out, "fullDocumentBeforeChange", ev->images ? ev->pre : NULL);
    }
    append_ns(out, "ns", ev->ns);
    if (ev->op == FTS_DOUBLE_OP_RENAME) {
        append_ns(out, "to", ev->to);
        /* operationDescription only with expanded events; dropTarget (the UUID of the
         * collection the rename replaced) only when there was one.
         * https://www.mongodb.com/docs/v6.0/reference/change-events/rename/ */
        if (s->expanded) {
            bson_t desc;
            bson_append_document_begin(out, "operationDescription", -1, &desc);
            append_ns(&desc, "to", ev->to);
            if (ev->has_drop_target) {
                bson_append_binary(&desc, "dropTarget", -1, BSON_SUBTYPE_UUID, ev->drop_target, 16);
            }
            bson_append_document_end(out, &desc);
        }
    }
    if (ev->op == FTS_DOUBLE_OP_CREATE) {
        bson_t desc, index, key;
        bson_append_document_begin(out, "operationDescription", -1, &desc);
        bson_append_document_begin(&desc, "idIndex", -1, &index);
        bson_append_int32(&index, "v", 1, 2);
        bson_append_document_begin(&index, "key", 3, &key);
        bson_append_int32(&key, "_id", 3, 1);
        bson_append_document_end(&index, &key);
        bson_append_utf8(&index, "name", 4, "_id_", 4);
        bson_append_document_end(&desc, &index);
        bson_append_document_end(out, &desc);
    }
    if (crud) {
        bson_value_t id;
        const fts_double_doc_t *doc = ev->post ? ev->post : ev->pre;
        bson_t key;
        bson_append_document_begin(out, "documentKey", 11, &key);
        if (doc && fts_double_doc_id(doc, &id)) {
            bson_append_value(&key, "_id", 3, &id);
        }
        bson_append_document_end(out, &key);
    }
    if (ev->op == FTS_DOUBLE_OP_UPDATE && ev->update_desc) {
        bson_append_document(out, "updateDescription", 17, ev->update_desc);
    }
    return true;
}

/* The invalidate that follows the stream's pending invalidating event. */
static void render_invalidate(fts_double_server_t *srv, const fts_double_stream_t *s, bson_t *out,
                              fts_double_token_t *token)
{
    token->ts = s->invalidate_ts;
    token->kind = FTS_DOUBLE_TOKEN_INVALIDATE;
    token->seq = s->invalidate_seq;
    token->run = srv->log.run;
    fts_double_token_append(out, "_id", token);
    bson_append_utf8(out, "operationType", 13, "invalidate", 10);
    bson_append_timestamp(out, "clusterTime", 11, s->invalidate_ts.t, s->invalidate_ts.i);
    bson_append_date_time(out, "wallTime", 8, s->invalidate_wall);
}

/* Runs an event through the user's stages. *keep false: filtered out. out receives the final
 * document when a stage rewrote it (then *rewritten is true). */
static bool run_steps(const fts_double_stream_t *s, const bson_t *event, bool *keep, bson_t *out,
                      bool *rewritten, fts_double_error_t *err)
{
    const bson_t *current = event;
    bson_t *owned = NULL; /* the latest rewritten version, if any */
    *keep = true;
    *rewritten = false;
    for (size_t i = 0; i < s->nsteps && *keep; i++) {
        const step_t *step = &s->steps[i];
        if (step->kind == STEP_MATCH) {
            *keep = fts_double_match(current, step->filter);
            continue;
        }
        bson_t *next = bson_new();
        fts_double_projection_apply(step->projection, current, next);
        if (owned) {
            bson_destroy(owned);
        }
        owned = next;
        current = next;
    }
    bool ok = true;
    if (*keep && owned) {
        /* mongod refuses to hand out an event whose resume token a stage changed or removed. */
        bson_value_t before, after;
        if (!fts_double_doc_get(event, "_id", &before) ||
            !fts_double_doc_get(owned, "_id", &after) ||
            !fts_double_value_identical(&before, &after)) {
            ok = fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                      "Encountered an event whose _id field, which contains the "
                                      "resume token, was modified by the pipeline. Modifying "
                                      "the _id field of an event makes it impossible to resume "
                                      "the stream from that point. Only transformations that "
                                      "retain the unmodified _id field are allowed.");
        } else {
            bson_concat(out, owned);
            *rewritten = true;
        }
    }
    if (owned) {
        bson_destroy(owned);
    }
    return ok;
}

/* Renders one event (or, with invalidate, the pending invalidate) and appends it to batch if
 * the stages keep it. */
static bool emit(fts_double_server_t *srv, const fts_double_stream_t *s,
                 const fts_double_event_t *ev, bool invalidate, bson_t *batch, uint32_t *count,
                 size_t *bytes, fts_double_token_t *token, fts_double_error_t *err)
{
    char buf[16];
    const char *key = fts_double_index_key(*count, buf);
    bson_t rendered = BSON_INITIALIZER;
    bool ok = true;
    if (invalidate) {
        render_invalidate(srv, s, &rendered, token);
    } else {
        fts_double_token_for_event(&srv->log, ev, FTS_DOUBLE_TOKEN_EVENT, token);
        ok = render_event(srv, s, ev, &rendered, err);
    }
    if (ok && s->nsteps == 0) {
        bson_append_document(batch, key, -1, &rendered);
        *bytes += rendered.len;
        (*count)++;
    } else if (ok) {
        bool keep, rewritten;
        bson_t final = BSON_INITIALIZER;
        ok = run_steps(s, &rendered, &keep, &final, &rewritten, err);
        if (ok && keep) {
            bson_append_document(batch, key, -1, rewritten ? &final : &rendered);
            *bytes += rewritten ? final.len : rendered.len;
            (*count)++;
        }
        bson_destroy(&final);
    }
    bson_destroy(&rendered);
    return ok;
}

/* Reads the stream into batch. Returns false on error; *closed when the stream was
 * invalidated (the cursor must be closed); pbrt receives the postBatchResumeToken. */
static bool stream_read(fts_double_server_t *srv, fts_double_stream_t *s, int64_t max,
                        bson_t *batch, uint32_t *count, bool *closed, fts_double_token_t *pbrt,
                        fts_double_error_t *err)
{
    size_t bytes = 0;
    fts_double_token_t token;
    *count = 0;
    *closed = false;
    if (s->pending_invalidate) {
        if (!emit(srv, s, NULL, true, batch, count, &bytes, &token, err)) {
            return false;
        }
        *pbrt = token;
        *closed = true;
        return true;
    }
    fts_double_eventlog_t *log = &srv->log;
    if (s->next_seq < log->first_seq && log->evicted > 0) {
        return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST,
                                    "Resume of change stream was not possible, as the resume "
                                    "point may no longer be in the oplog.");
    }
    bool have_last = false;
    fts_double_token_t last;
    while (s->next_seq < log->next_seq) {
        if ((max >= 0 && *count >= max) || bytes >= FTS_DOUBLE_BATCH_BYTES) {
            if (have_last) {
                *pbrt = last; /* a full batch: resume right after its last event */
                return true;
            }
            break;
        }
        const fts_double_event_t *ev = fts_double_eventlog_get(log, s->next_seq);
        s->next_seq++;
        if (!ev || !in_scope(s, ev) ||
            (s->has_start_at && fts_double_ts_compare(ev->ts, s->start_at) < 0)) {
            continue;
        }
        uint32_t before = *count;
        if (!emit(srv, s, ev, false, batch, count, &bytes, &token, err)) {
            return false;
        }
        if (*count > before) {
            last = token;
            have_last = true;
        }
        if (invalidates(s, ev)) {
            /* The invalidate follows in this batch if there is room, else in the next one. */
            s->pending_invalidate = true;
            s->invalidate_seq = ev->seq;
            s->invalidate_ts = ev->ts;
            s->invalidate_wall = ev->wall_ms;
            if (max >= 0 && *count >= max && have_last) {
                *pbrt = last;
                return true;
            }
            if (!emit(srv, s, NULL, true, batch, count, &bytes, &token, err)) {
                return false;
            }
            *pbrt = token;
            *closed = true;
            return true;
        }
    }
    if (s->next_seq >= log->next_seq) {
        fts_double_token_hwm(log, pbrt);
    } else {
        /* Stopped before the end without returning anything (batchSize 0): stay before the
         * next unread event. */
        pbrt->ts = fts_double_eventlog_now(log);
        pbrt->kind = FTS_DOUBLE_TOKEN_HWM;
        pbrt->seq = s->next_seq;
        pbrt->run = log->run;
        const fts_double_event_t *next = fts_double_eventlog_get(log, s->next_seq);
        if (next) {
            fts_double_token_for_event(log, next, FTS_DOUBLE_TOKEN_EVENT, pbrt);
            pbrt->kind = FTS_DOUBLE_TOKEN_HWM;
            pbrt->ts.i--; /* just before that event */
            pbrt->seq = s->next_seq;
        }
    }
    return true;
}

/* Builds a cursor reply from the stream. Returns false on error (the cursor must go). */
static bool stream_reply(fts_double_server_t *srv, fts_double_cursor_t *cursor, int64_t max,
                         bool first, bson_t *reply, uint32_t *count, bool *closed,
                         fts_double_error_t *err)
{
    bson_t cursor_doc, batch;
    fts_double_token_t pbrt;
    fts_double_cursor_reply_begin(reply, &cursor_doc, &batch, first ? "firstBatch" : "nextBatch");
    if (!stream_read(srv, cursor->stream, max, &batch, count, closed, &pbrt, err)) {
        bson_append_array_end(&cursor_doc, &batch);
        bson_append_document_end(reply, &cursor_doc);
        return false;
    }
    fts_double_cursor_reply_end(reply, &cursor_doc, &batch, *closed ? 0 : cursor->id, cursor->ns,
                                &pbrt);
    return true;
}

/* ---- opening ---- */

/* The aggregation stage names mongod 6.0 knows ($changeStream's own internal stages aside), so
 * that an unknown one fails as mongod's parser fails it (40324, "Unrecognized pipeline stage
 * name") and a known one that may not follow $changeStream as its pipeline validation does (20).
 * https://www.mongodb.com/docs/v6.0/reference/operator/aggregation-pipeline/ */
static bool is_known_stage(const char *name)
{
    static const char *const stages[] = {"$addFields",
                                         "$bucket",
                                         "$bucketAuto",
                                         "$changeStream",
                                         "$collStats",
                                         "$count",
                                         "$currentOp",
                                         "$densify",
                                         "$documents",
                                         "$facet",
                                         "$fill",
                                         "$geoNear",
                                         "$graphLookup",
                                         "$group",
                                         "$indexStats",
                                         "$limit",
                                         "$listLocalSessions",
                                         "$listSessions",
                                         "$lookup",
                                         "$match",
                                         "$merge",
                                         "$out",
                                         "$planCacheStats",
                                         "$project",
                                         "$redact",
                                         "$replaceRoot",
                                         "$replaceWith",
                                         "$sample",
                                         "$search",
                                         "$searchMeta",
                                         "$set",
                                         "$setWindowFields",
                                         "$skip",
                                         "$sort",
                                         "$sortByCount",
                                         "$unionWith",
                                         "$unset",
                                         "$unwind"};
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
        if (strcmp(name, stages[i]) == 0) {
            return true;
        }
    }
    return false;
}

static bool parse_steps(fts_double_stream_t *s, bson_iter_t *pipeline, fts_double_error_t *err)
{
    /* mongod parses every stage name before it checks what may follow $changeStream: an
     * unknown name fails with 40324 even after a stage that would be refused with 20. */
    bson_iter_t scan = *pipeline, named;
    while (bson_iter_next(&scan)) {
        if (BSON_ITER_HOLDS_DOCUMENT(&scan) && bson_iter_recurse(&scan, &named) &&
            bson_iter_next(&named) && !is_known_stage(bson_iter_key(&named))) {
            return fts_double_error_set(err, FTS_DOUBLE_E_UNRECOGNIZED_STAGE,
                                        "Unrecognized pipeline stage name: '%s'",
                                        bson_iter_key(&named));
        }
    }
    size_t n = 0, cap = 0;
    while (bson_iter_next(pipeline)) {
        bson_iter_t stage;
        if (!BSON_ITER_HOLDS_DOCUMENT(pipeline) || !bson_iter_recurse(pipeline, &stage) ||
            !bson_iter_next(&stage)) {
            return fts_double_error_set(err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                        "Each element of the 'pipeline' array must be an object");
        }
        const char *name = bson_iter_key(&stage);
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            s->steps = bson_realloc(s->steps, cap * sizeof *s->steps);
        }
        step_t *step = &s->steps[n];
        memset(step, 0, sizeof *step);
        if (strcmp(name, "$match") == 0) {
            bson_t filter;
            if (!BSON_ITER_HOLDS_DOCUMENT(&stage) ||
                !fts_double_value_as_doc(bson_iter_value(&stage), &filter)) {
                return fts_double_error_set(err, 15959,
                                            "the match filter must be an expression "
                                            "in an object");
            }
            if (!fts_double_match_validate(&filter, err)) {
                return false;
            }
            step->kind = STEP_MATCH;
            step->filter = bson_copy(&filter);
        } else if (strcmp(name, "$project") == 0) {
            bson_t spec;
            if (!BSON_ITER_HOLDS_DOCUMENT(&stage) ||
                !fts_double_value_as_doc(bson_iter_value(&stage), &spec)) {
                return fts_double_error_set(err, 15969, "$project specification must be an object");
            }
            step->kind = STEP_PROJECT;
            step->projection = fts_double_projection_new(&spec, err);
            if (!step->projection) {
                return false;
            }
        } else if (strcmp(name, "$unset") == 0) {
            bson_t spec = BSON_INITIALIZER;
            if (BSON_ITER_HOLDS_UTF8(&stage)) {
                bson_append_int32(&spec, bson_iter_utf8(&stage, NULL), -1, 0);
            } else if (BSON_ITER_HOLDS_ARRAY(&stage)) {
                bson_iter_t fields;
                bson_iter_recurse(&stage, &fields);
                while (bson_iter_next(&fields)) {
                    if (BSON_ITER_HOLDS_UTF8(&fields)) {
                        bson_append_int32(&spec, bson_iter_utf8(&fields, NULL), -1, 0);
                    }
                }
            }
            step->kind = STEP_PROJECT;
            step->projection = fts_double_projection_new(&spec, err);
            bson_destroy(&spec);
            if (!step->projection) {
                return false;
            }
        } else if (strcmp(name, "$changeStream") == 0) {
            return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_NOT_FIRST,
                                        "$changeStream is only valid as the first stage in a "
                                        "pipeline");
        } else {
            /* A known stage (unknown ones failed above): mongod's own refusal for those a
             * change stream may not contain ($group, $sort, ...); also the double's for
             * $addFields/$set/$replaceRoot/$replaceWith/ $redact, which mongod allows (main.c lists
             * the difference). */
            return fts_double_error_set(err, FTS_DOUBLE_E_ILLEGAL_OPERATION,
                                        "%s is not permitted in a $changeStream pipeline by "
                                        "ftsync-mongo-double (supported: $match, $project, "
                                        "$unset)",
                                        name);
        }
        s->nsteps = ++n;
    }
    return true;
}

static bool parse_enum(const bson_value_t *v, const char *field, const char *const *names,
                       int count, int *out, fts_double_error_t *err)
{
    if (v->value_type != BSON_TYPE_UTF8) {
        return fts_double_error_set(err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                    "BSON field '$changeStream.%s' is the wrong type '%s', "
                                    "expected type 'string'",
                                    field, fts_double_type_alias(v->value_type));
    }
    for (int i = 0; i < count; i++) {
        if (strcmp(v->value.v_utf8.str, names[i]) == 0) {
            *out = i;
            return true;
        }
    }
    return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                "Enumeration value '%s' for field '$changeStream.%s' is not a "
                                "valid value.",
                                v->value.v_utf8.str, field);
}

static const char *const full_doc_names[] = {"default", "updateLookup", "whenAvailable",
                                             "required"};
static const char *const before_names[] = {"off", "whenAvailable", "required"};

/* Positions the stream from its resume option. */
static bool position_stream(fts_double_server_t *srv, fts_double_stream_t *s,
                            const bson_value_t *token_value, bool start_after,
                            fts_double_error_t *err)
{
    fts_double_eventlog_t *log = &srv->log;
    fts_double_token_t token;
    if (token_value->value_type != BSON_TYPE_DOCUMENT) {
        return fts_double_error_set(
            err, FTS_DOUBLE_E_TYPE_MISMATCH,
            "BSON field '$changeStream.%s' is the wrong type '%s', expected "
            "type 'object'",
            start_after ? "startAfter" : "resumeAfter",
            fts_double_type_alias(token_value->value_type));
    }
    if (!fts_double_token_parse(token_value, &token, err)) {
        return false;
    }
    if (token.run != log->run) {
        /* Issued by an earlier run of the double: that history is gone. */
        return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST,
                                    "Resume of change stream was not possible, as the resume point "
                                    "may no longer be in the oplog.");
    }
    if (token.kind == FTS_DOUBLE_TOKEN_HWM) {
        if (token.seq > log->next_seq) {
            return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                        "cannot resume stream; the resume token was not found.");
        }
        if (token.seq < log->first_seq && log->evicted > 0) {
            return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST,
                                        "Resume of change stream was not possible, as the resume "
                                        "point may no longer be in the oplog.");
        }
        s->next_seq = token.seq;
        return true;
    }
    if (token.kind == FTS_DOUBLE_TOKEN_INVALIDATE && !start_after) {
        return fts_double_error_set(err, FTS_DOUBLE_E_INVALID_RESUME_TOKEN,
                                    "Attempting to resume a change stream using 'resumeAfter' is "
                                    "not allowed from an invalidate notification.");
    }
    const fts_double_event_t *ev = fts_double_eventlog_get(log, token.seq);
    if (!ev) {
        if (token.seq < log->first_seq) {
            return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST,
                                        "Resume of change stream was not possible, as the resume "
                                        "point may no longer be in the oplog.");
        }
        return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                    "cannot resume stream; the resume token was not found.");
    }
    if (fts_double_ts_compare(ev->ts, token.ts) != 0) {
        return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                    "cannot resume stream; the resume token was not found.");
    }
    s->next_seq = token.seq + 1;
    if (token.kind == FTS_DOUBLE_TOKEN_EVENT && invalidates(s, ev)) {
        /* Resuming right after the drop/rename: the invalidate that followed comes first. */
        s->pending_invalidate = true;
        s->invalidate_seq = ev->seq;
        s->invalidate_ts = ev->ts;
        s->invalidate_wall = ev->wall_ms;
    }
    return true;
}

fts_double_cmd_status_t fts_double_stream_aggregate(fts_double_cmd_t *cmd, const bson_t *pipeline,
                                                    int64_t first_batch)
{
    fts_double_server_t *srv = cmd->srv;
    cmd->is_change_stream = true;
    fts_double_stream_t *s = bson_malloc0(sizeof *s);
    bson_iter_t pipe, stage_it, opt;
    bson_t spec;
    bson_value_t target;
    fts_double_doc_get(cmd->body, "aggregate", &target);
    bool all_for_cluster = false;
    const bson_value_t *resume = NULL, *start_after = NULL, *start_at = NULL;
    bson_value_t resume_v, start_after_v, start_at_v;
    int mode;

    bson_iter_init(&pipe, pipeline);
    bson_iter_next(&pipe);
    bson_iter_recurse(&pipe, &stage_it);
    bson_iter_next(&stage_it);
    if (!BSON_ITER_HOLDS_DOCUMENT(&stage_it) ||
        !fts_double_value_as_doc(bson_iter_value(&stage_it), &spec)) {
        fts_double_error_set(&cmd->err, FTS_DOUBLE_E_TYPE_MISMATCH,
                             "the $changeStream stage must be an object");
        goto fail;
    }
    bson_iter_init(&opt, &spec);
    while (bson_iter_next(&opt)) {
        const char *k = bson_iter_key(&opt);
        const bson_value_t *v = bson_iter_value(&opt);
        if (strcmp(k, "fullDocument") == 0) {
            if (!parse_enum(v, k, full_doc_names, 4, &mode, &cmd->err)) {
                goto fail;
            }
            s->full_document = (full_doc_t)mode;
        } else if (strcmp(k, "fullDocumentBeforeChange") == 0) {
            if (!parse_enum(v, k, before_names, 3, &mode, &cmd->err)) {
                goto fail;
            }
            s->before = (before_t)mode;
        } else if (strcmp(k, "resumeAfter") == 0) {
            resume_v = *v;
            resume = &resume_v;
        } else if (strcmp(k, "startAfter") == 0) {
            start_after_v = *v;
            start_after = &start_after_v;
        } else if (strcmp(k, "startAtOperationTime") == 0) {
            if (v->value_type != BSON_TYPE_TIMESTAMP) {
                fts_double_error_set(&cmd->err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                     "BSON field '$changeStream.startAtOperationTime' is the "
                                     "wrong type '%s', expected type 'timestamp'",
                                     fts_double_type_alias(v->value_type));
                goto fail;
            }
            start_at_v = *v;
            start_at = &start_at_v;
        } else if (strcmp(k, "allChangesForCluster") == 0) {
            all_for_cluster = fts_double_value_truthy(v);
        } else if (strcmp(k, "showExpandedEvents") == 0) {
            s->expanded = fts_double_value_truthy(v);
        } else if (strcmp(k, "showSystemEvents") == 0 || strcmp(k, "showMigrationEvents") == 0 ||
                   strcmp(k, "allowToRunOnConfigDB") == 0 ||
                   strcmp(k, "allowToRunOnSystemNS") == 0) {
            continue; /* nothing for the double to show */
        } else {
            fts_double_error_set(&cmd->err, FTS_DOUBLE_E_UNKNOWN_FIELD,
                                 "BSON field '$changeStream.%s' is an unknown field.", k);
            goto fail;
        }
    }
    if ((resume != NULL) + (start_after != NULL) + (start_at != NULL) > 1) {
        fts_double_error_set(&cmd->err, FTS_DOUBLE_E_MULTIPLE_RESUME_OPTIONS,
                             "Only one type of resume option is allowed, but multiple were "
                             "found.");
        goto fail;
    }

    /* Scope: a collection, a database (aggregate: 1), or the cluster (admin + flag). */
    char ns_text[512];
    const char *coll_for_getmore;
    if (target.value_type == BSON_TYPE_UTF8) {
        if (all_for_cluster) {
            fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_NAMESPACE,
                                 "A $changeStream with 'allChangesForCluster:true' may only be "
                                 "opened on the 'admin' database, and with no collection name");
            goto fail;
        }
        if (is_internal_db(cmd->db)) {
            fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_NAMESPACE,
                                 "$changeStream may not be opened on the internal %s database",
                                 cmd->db);
            goto fail;
        }
        s->scope = SCOPE_COLLECTION;
        s->ns = fts_double_store_intern(srv->store, cmd->db, target.value.v_utf8.str);
        s->db = bson_strdup(cmd->db);
        snprintf(ns_text, sizeof ns_text, "%s", s->ns->full);
        coll_for_getmore = s->ns->coll;
    } else {
        if (all_for_cluster) {
            if (strcmp(cmd->db, "admin") != 0) {
                fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_NAMESPACE,
                                     "A $changeStream with 'allChangesForCluster:true' may only "
                                     "be opened on the 'admin' database, and with no collection "
                                     "name");
                goto fail;
            }
            s->scope = SCOPE_CLUSTER;
        } else {
            if (is_internal_db(cmd->db)) {
                fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_NAMESPACE,
                                     "$changeStream may not be opened on the internal %s database",
                                     cmd->db);
                goto fail;
            }
            s->scope = SCOPE_DATABASE;
        }
        s->db = bson_strdup(cmd->db);
        snprintf(ns_text, sizeof ns_text, "%s.$cmd.aggregate", cmd->db);
        coll_for_getmore = "$cmd.aggregate";
    }
    if (!parse_steps(s, &pipe, &cmd->err)) {
        goto fail;
    }

    s->next_seq = srv->log.next_seq;
    if (resume || start_after) {
        if (!position_stream(srv, s, resume ? resume : start_after, start_after != NULL,
                             &cmd->err)) {
            goto fail;
        }
    } else if (start_at) {
        fts_double_ts_t ts = {start_at->value.v_timestamp.timestamp,
                              start_at->value.v_timestamp.increment};
        if (fts_double_ts_compare(ts, srv->log.floor) < 0) {
            fts_double_error_set(&cmd->err, FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST,
                                 "Resume of change stream was not possible, as the resume point "
                                 "may no longer be in the oplog.");
            goto fail;
        }
        s->next_seq = fts_double_eventlog_seek(&srv->log, ts);
        s->has_start_at = true;
        s->start_at = ts;
    }

    fts_double_cursor_t *cursor = fts_double_cursor_new(srv, cmd->db, coll_for_getmore, ns_text);
    cursor->stream = s;
    uint32_t count;
    bool closed;
    if (!stream_reply(srv, cursor, first_batch, true, &cmd->reply, &count, &closed, &cmd->err)) {
        fts_double_cursor_free(srv, cursor);
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (closed) {
        fts_double_cursor_free(srv, cursor);
    }
    return FTS_DOUBLE_CMD_OK;
fail:
    fts_double_stream_destroy(s);
    return FTS_DOUBLE_CMD_ERROR;
}

/* ---- waiting getMores ---- */

static void answer_waiting(fts_double_server_t *srv, fts_double_request_t *req, bool timed_out)
{
    fts_double_cursor_t *cursor = req->cursor;
    bson_t reply = BSON_INITIALIZER;
    uint32_t count = 0;
    bool closed = false;
    fts_double_error_t err = {0};
    bool ok = stream_reply(srv, cursor, req->batch_size > 0 ? req->batch_size : -1, false, &reply,
                           &count, &closed, &err);
    if (ok && count == 0 && !closed && !timed_out) {
        bson_destroy(&reply); /* nothing for this stream yet: keep waiting */
        return;
    }
    cursor->waiting = NULL;
    req->cursor = NULL;
    if (!ok || closed) {
        fts_double_cursor_free(srv, cursor);
    }
    if (ok) {
        fts_double_reply_ok(srv, req, &reply);
    } else {
        fts_double_reply_error(srv, req, &err, true);
    }
    bson_destroy(&reply);
}

static void on_getmore_timeout(fts_double_request_t *req)
{
    answer_waiting(req->conn->srv, req, true);
}

static void on_getmore_cancel(fts_double_request_t *req)
{
    /* mongod kills a getMore whose client went away, and with it the cursor. */
    fts_double_cursor_t *cursor = req->cursor;
    if (cursor) {
        cursor->waiting = NULL;
        req->cursor = NULL;
        fts_double_cursor_free(req->conn->srv, cursor);
    }
}

fts_double_cmd_status_t fts_double_stream_get_more(fts_double_cmd_t *cmd,
                                                   fts_double_cursor_t *cursor, int64_t batch_size,
                                                   int64_t max_time_ms)
{
    fts_double_server_t *srv = cmd->srv;
    cmd->is_change_stream = true;
    uint32_t count;
    bool closed;
    bson_t reply = BSON_INITIALIZER;
    if (!stream_reply(srv, cursor, batch_size > 0 ? batch_size : -1, false, &reply, &count, &closed,
                      &cmd->err)) {
        bson_destroy(&reply);
        fts_double_cursor_free(srv, cursor);
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (count > 0 || closed) {
        bson_concat(&cmd->reply, &reply);
        bson_destroy(&reply);
        if (closed) {
            fts_double_cursor_free(srv, cursor);
        }
        return FTS_DOUBLE_CMD_OK;
    }
    bson_destroy(&reply);
    fts_double_request_t *req = cmd->req;
    req->cursor = cursor;
    req->batch_size = (int32_t)batch_size;
    cursor->waiting = req;
    fts_double_request_park(req, &srv->stream_waiters, max_time_ms, on_getmore_timeout,
                            on_getmore_cancel);
    return FTS_DOUBLE_CMD_PARKED;
}

void fts_double_stream_notify(fts_double_server_t *srv)
{
    if (srv->stream_waiters.head) {
        event_active(srv->wake_ev, EV_READ, 0);
    }
}

void fts_double_stream_wake(fts_double_server_t *srv)
{
    fts_double_request_t *next;
    for (fts_double_request_t *req = srv->stream_waiters.head; req; req = next) {
        next = req->wait_next;
        answer_waiting(srv, req, false);
    }
}
