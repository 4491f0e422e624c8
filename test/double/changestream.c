/*
 * changestream.c - opening, reading, rendering and waiting on change streams (see
 * changestream.h).
 *
 * A stream is a position in the event log (the sequence of the next event to look at) plus a
 * scope and options. Reading walks the log from that position, skips events outside the scope,
 * renders the rest as mongod's event documents, runs them through the user's stages and
 * appends what survives to the batch. Resume checks follow mongod: a token whose event fell
 * off the log is ChangeStreamHistoryLost (286), a token that is not one of ours is
 * InvalidResumeToken (260), and so is resuming with resumeAfter from an invalidate. A token of
 * an event the stream does not watch (another collection's) opens the stream, and the first
 * event the stream would return fails with ChangeStreamFatalError (280) "cannot resume stream;
 * the resume token was not found.", as mongod's resume check does (position_stream).
 *
 * Large events (MongoDB manual, "Large change events" in Change Streams, and the
 * $changeStreamSplitLargeEvent stage page, new in 7.0 and 6.0.9): an event whose BSON, after the
 * user's stages, exceeds mongod's BSONObjMaxInternalSize (16 MB + 16 KB = 16,793,600 bytes)
 * fails the aggregate or getMore with 10334 BSONObjectTooLarge, which carries no error label
 * and so is not resumable. With {$changeStreamSplitLargeEvent: {}} as the last stage, an event
 * larger than mongod's kBSONObjMaxChangeEventSize (16,793,600 - 8 KB = 16,785,408 bytes) is
 * split instead: its top-level fields other than _id, ordered by (size, name), are packed
 * greedily into fragments of at most that size minus the token's, each fragment carrying its
 * own _id (the event's token with the fragment index appended, see fragment_token_append) and
 * splitEvent {fragment: n, of: total}. A resume from a fragment's token re-reads the event,
 * splits it again and continues with the next fragment (from the last one: with the next
 * event). A server started with --no-split-stage does not know the stage (40324), as mongod
 * before 6.0.9.
 *
 * Batches follow mongod's getMore: the first document always goes in, a later one only if the
 * batch stays within FTS_DOUBLE_BATCH_BYTES; an event that does not fit is read again by the
 * next getMore.
 */
#include "changestream.h"

#include "bsonval.h"
#include "conn.h"
#include "eventlog.h"
#include "txn.h"
#include "query.h"

#include <stdlib.h>
#include <string.h>

/* mongod's BSONObjMaxInternalSize: the largest event a change stream can return whole. */
#define MAX_EVENT_SIZE (16 * 1024 * 1024 + 16 * 1024)
/* mongod's kBSONObjMaxChangeEventSize (document_source_change_stream_split_large_event.h):
 * with $changeStreamSplitLargeEvent, events above this are split into fragments this big. */
#define SPLIT_EVENT_SIZE (MAX_EVENT_SIZE - 8 * 1024)
/* Hex digits a fragment's token adds to its event's token (the fragment index, from 0). */
#define FRAGMENT_HEX_LEN 4
#define SPLIT_STAGE      "$changeStreamSplitLargeEvent"

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
    /* The pipeline ends with $changeStreamSplitLargeEvent. */
    bool split;
    /* Fragments of a split event not yet returned (frags[next_frag..nfrags)); frag_seq is the
     * split event's sequence. */
    bson_t **frags;
    size_t nfrags;
    size_t next_frag;
    uint64_t frag_seq;
    /* Resumed from a fragment's token: the event at resume_seq is split again and its first
     * skip_fragments fragments are not returned. */
    bool resume_in_split;
    uint64_t resume_seq;
    size_t skip_fragments;
    /* Resumed (resumeAfter/startAfter) from the token of an event this stream does not watch
     * (another collection's): the stream never sees that token, so its first event fails with
     * 280 (position_stream); until then the post-batch token stays the client's token. */
    bool token_unseen;
    fts_double_token_t client_token;
    /* Resumed right after an invalidating event: the invalidate comes first. */
    bool pending_invalidate;
    uint64_t invalidate_seq;
    fts_double_ts_t invalidate_ts;
    int64_t invalidate_wall;
};

static void drop_fragments(fts_double_stream_t *s)
{
    for (size_t i = 0; i < s->nfrags; i++) {
        bson_destroy(s->frags[i]);
    }
    bson_free(s->frags);
    s->frags = NULL;
    s->nfrags = 0;
    s->next_frag = 0;
}

void fts_double_stream_destroy(fts_double_stream_t *stream)
{
    if (!stream) {
        return;
    }
    drop_fragments(stream);
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

/* Renders one event (or, with invalidate, the pending invalidate) and runs it through the
 * stages: *keep false when they filter it out, else out holds the document to return. */
static bool render_final(fts_double_server_t *srv, const fts_double_stream_t *s,
                         const fts_double_event_t *ev, bool invalidate, bson_t *out, bool *keep,
                         fts_double_token_t *token, fts_double_error_t *err)
{
    bson_t rendered = BSON_INITIALIZER;
    bool ok = true;
    *keep = true;
    if (invalidate) {
        render_invalidate(srv, s, &rendered, token);
    } else {
        fts_double_token_for_event(&srv->log, ev, FTS_DOUBLE_TOKEN_EVENT, token);
        ok = render_event(srv, s, ev, &rendered, err);
    }
    if (ok && s->nsteps == 0) {
        bson_concat(out, &rendered);
    } else if (ok) {
        bool rewritten;
        bson_t final = BSON_INITIALIZER;
        ok = run_steps(s, &rendered, keep, &final, &rewritten, err);
        if (ok && *keep) {
            bson_concat(out, rewritten ? &final : &rendered);
        }
        bson_destroy(&final);
    }
    bson_destroy(&rendered);
    return ok;
}

/* Whether a document of len bytes goes into a batch holding count documents of bytes bytes:
 * mongod's getMore always takes the first, a later one only within the batch limit. */
static bool batch_has_room(int64_t max, uint32_t count, size_t bytes, uint32_t len)
{
    if (max >= 0 && count >= max) {
        return false;
    }
    return count == 0 || bytes + len <= FTS_DOUBLE_BATCH_BYTES;
}

static void batch_add(bson_t *batch, uint32_t *count, size_t *bytes, const bson_t *doc)
{
    char buf[16];
    bson_append_document(batch, fts_double_index_key(*count, buf), -1, doc);
    *bytes += doc->len;
    (*count)++;
}

/* Appends the token of fragment index (from 0) of the event whose token is base: the event's
 * _data with the index as FRAGMENT_HEX_LEN more hex digits, so that it sorts after the event's
 * own token and before the next event's, like mongod's fragmentNum. */
static void fragment_token_append(bson_t *dst, const char *key, const fts_double_token_t *base,
                                  size_t index)
{
    bson_t tmp = BSON_INITIALIZER, doc;
    bson_iter_t it;
    char hex[FTS_DOUBLE_TOKEN_HEX_MAX + FRAGMENT_HEX_LEN + 1];
    fts_double_token_append(&tmp, "t", base);
    bool found = bson_iter_init_find(&it, &tmp, "t") && bson_iter_recurse(&it, &it) &&
                 bson_iter_find(&it, "_data") && BSON_ITER_HOLDS_UTF8(&it);
    BSON_ASSERT(found);
    snprintf(hex, sizeof hex, "%s%0*X", bson_iter_utf8(&it, NULL), FRAGMENT_HEX_LEN,
             (unsigned)index);
    bson_destroy(&tmp);
    bson_append_document_begin(dst, key, -1, &doc);
    bson_append_utf8(&doc, "_data", 5, hex, -1);
    bson_append_document_end(dst, &doc);
}

typedef struct {
    const char *key;
    uint32_t size; /* the whole element: type, key, value */
    uint32_t off;  /* its offset in the event */
} field_t;

static int compare_fields(const void *a, const void *b)
{
    const field_t *x = a, *y = b;
    if (x->size != y->size) {
        return x->size < y->size ? -1 : 1;
    }
    return strcmp(x->key, y->key);
}

/* Splits event (token: its resume token) into fragments as $changeStreamSplitLargeEvent does:
 * the top-level fields but _id, smallest first (then by name), each fragment filled while the
 * next field fits, every fragment starting with its own _id and splitEvent. Queues them on s
 * (the first `skip` left out). */
static bool split_event(fts_double_stream_t *s, const bson_t *event,
                        const fts_double_token_t *token, size_t skip, fts_double_error_t *err)
{
    bson_iter_t it;
    size_t n = 0;
    field_t *fields = bson_malloc0(bson_count_keys(event) * sizeof *fields);
    bson_iter_init(&it, event);
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "_id") != 0) {
            fields[n].key = bson_iter_key(&it);
            fields[n].off = it.off;
            fields[n].size = it.next_off - it.off;
            n++;
        }
    }
    if (n == 0) {
        bson_free(fields);
        return fts_double_error_set(err, 7182502,
                                    "Cannot split an empty event or an event containing solely "
                                    "'_id' field");
    }
    qsort(fields, n, sizeof *fields, compare_fields);
    bson_t probe = BSON_INITIALIZER;
    fragment_token_append(&probe, "_id", token, 0);
    size_t max = SPLIT_EVENT_SIZE - (probe.len - 5 - 4); /* the token document's own size */
    bson_destroy(&probe);

    bson_t **frags = NULL;
    size_t nfrags = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok;) {
        bson_t *frag = bson_new();
        bson_t split;
        fragment_token_append(frag, "_id", token, nfrags);
        bson_append_document_begin(frag, "splitEvent", -1, &split);
        bson_append_int32(&split, "fragment", -1, (int32_t)(nfrags + 1));
        bson_append_int32(&split, "of", -1, 0); /* set once the count is known */
        bson_append_document_end(frag, &split);
        size_t size = frag->len;
        do {
            bson_iter_t field;
            bson_iter_init_from_data_at_offset(&field, bson_get_data(event), event->len,
                                               fields[i].off, (uint32_t)strlen(fields[i].key));
            bson_append_iter(frag, fields[i].key, -1, &field);
            size += fields[i].size;
            i++;
        } while (i < n && size + fields[i].size <= max);
        if (size > max) {
            ok = fts_double_error_set(err, 7182500,
                                      "Splitting change event failed: fragment size %zu is "
                                      "greater than maximum allowed fragment size %zu",
                                      size, max);
        }
        frags = bson_realloc(frags, (nfrags + 1) * sizeof *frags);
        frags[nfrags++] = frag;
    }
    bson_free(fields);
    if (ok && skip > nfrags) {
        ok = fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                  "Attempted to resume from a split event, but the resumed stream "
                                  "produced a different split. Ensure that the pipeline used to "
                                  "resume is the same as the original");
    }
    drop_fragments(s);
    for (size_t f = 0; f < nfrags; f++) {
        if (!ok || f < skip) {
            bson_destroy(frags[f]);
            continue;
        }
        /* splitEvent.of: rewrite the fragment with the total (its layout is fixed above). */
        bson_t *done = bson_new();
        bson_iter_t field;
        bson_iter_init(&field, frags[f]);
        while (bson_iter_next(&field)) {
            if (strcmp(bson_iter_key(&field), "splitEvent") == 0) {
                bson_t split;
                bson_append_document_begin(done, "splitEvent", -1, &split);
                bson_append_int32(&split, "fragment", -1, (int32_t)(f + 1));
                bson_append_int32(&split, "of", -1, (int32_t)nfrags);
                bson_append_document_end(done, &split);
            } else {
                bson_append_iter(done, NULL, 0, &field);
            }
        }
        bson_destroy(frags[f]);
        s->frags = bson_realloc(s->frags, (s->nfrags + 1) * sizeof *s->frags);
        s->frags[s->nfrags++] = done;
    }
    bson_free(frags);
    return ok;
}

/* The _id of fragment f of the queue (a view into it). */
static void fragment_id(const bson_t *frag, bson_t *id)
{
    bson_iter_t it;
    uint32_t len;
    const uint8_t *data;
    bool found = bson_iter_init_find(&it, frag, "_id") && BSON_ITER_HOLDS_DOCUMENT(&it);
    BSON_ASSERT(found);
    bson_iter_document(&it, &len, &data);
    BSON_ASSERT(bson_init_static(id, data, len));
}

/* Reads the stream into batch. Returns false on error; *closed when the stream was
 * invalidated (the cursor must be closed); pbrt receives the postBatchResumeToken, or, when
 * the batch ended on a fragment, pbrt_frag (left empty otherwise) receives that fragment's. */
static bool stream_read(fts_double_server_t *srv, fts_double_stream_t *s, int64_t max, bool first,
                        bson_t *batch, uint32_t *count, bool *closed, fts_double_token_t *pbrt,
                        bson_t *pbrt_frag, fts_double_error_t *err)
{
    size_t bytes = 0;
    fts_double_token_t token;
    *count = 0;
    *closed = false;
    if (s->pending_invalidate && s->next_frag >= s->nfrags) {
        bson_t doc = BSON_INITIALIZER;
        bool keep;
        bool ok = render_final(srv, s, NULL, true, &doc, &keep, &token, err);
        if (ok && keep) {
            batch_add(batch, count, &bytes, &doc);
        }
        bson_destroy(&doc);
        if (!ok) {
            return false;
        }
        *pbrt = token;
        *closed = true;
        return true;
    }
    fts_double_eventlog_t *log = &srv->log;
    if (s->next_seq < log->first_seq && log->evicted > 0 && s->next_frag >= s->nfrags) {
        return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST,
                                    "Resume of change stream was not possible, as the resume "
                                    "point may no longer be in the oplog.");
    }
    bool have_last = false;
    bool last_is_frag = false;
    fts_double_token_t last;
    for (;;) {
        if (s->next_frag < s->nfrags) {
            /* The rest of a split event comes before anything else. */
            const bson_t *frag = s->frags[s->next_frag];
            if (!batch_has_room(max, *count, bytes, frag->len)) {
                break;
            }
            batch_add(batch, count, &bytes, frag);
            s->next_frag++;
            have_last = true;
            last_is_frag = true;
            bson_t id;
            fragment_id(frag, &id);
            bson_reinit(pbrt_frag);
            bson_concat(pbrt_frag, &id);
            if (s->next_frag == s->nfrags) {
                drop_fragments(s);
                if (s->pending_invalidate) {
                    break; /* the invalidate comes with the next getMore */
                }
            }
            continue;
        }
        if (s->next_seq >= log->next_seq || (max >= 0 && *count >= max) ||
            bytes >= FTS_DOUBLE_BATCH_BYTES) {
            break;
        }
        const fts_double_event_t *ev = fts_double_eventlog_get(log, s->next_seq);
        s->next_seq++;
        if (!ev || !in_scope(s, ev) ||
            (s->has_start_at && fts_double_ts_compare(ev->ts, s->start_at) < 0)) {
            continue;
        }
        if (s->token_unseen) {
            /* The first event past a token this stream never saw (position_stream). */
            fts_double_token_t surpassing;
            fts_double_token_for_event(log, ev, FTS_DOUBLE_TOKEN_EVENT, &surpassing);
            bson_t id = BSON_INITIALIZER;
            fts_double_token_append(&id, "_id", &surpassing);
            bson_iter_t it;
            char *id_json = NULL;
            if (bson_iter_init_find(&it, &id, "_id")) {
                id_json = fts_double_value_to_json(bson_iter_value(&it));
            }
            fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                 "%s :: caused by :: cannot resume stream; the resume token was "
                                 "not found. %s",
                                 first ? "PlanExecutor error during aggregation"
                                       : "Executor error during getMore",
                                 id_json ? id_json : "?");
            bson_free(id_json);
            bson_destroy(&id);
            return false;
        }
        bson_t doc = BSON_INITIALIZER;
        bool keep;
        if (!render_final(srv, s, ev, false, &doc, &keep, &token, err)) {
            bson_destroy(&doc);
            return false;
        }
        bool resuming_here = s->resume_in_split && ev->seq == s->resume_seq;
        if (keep && resuming_here && doc.len <= SPLIT_EVENT_SIZE) {
            bson_destroy(&doc);
            return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                        "Attempted to resume from a split event fragment, but the "
                                        "event in the resumed stream was not large enough to be "
                                        "split");
        }
        if (keep && s->split && doc.len > SPLIT_EVENT_SIZE) {
            size_t skip = resuming_here ? s->skip_fragments : 0;
            s->resume_in_split = false;
            bool ok = split_event(s, &doc, &token, skip, err);
            s->frag_seq = ev->seq;
            bson_destroy(&doc);
            if (!ok) {
                return false;
            }
            if (invalidates(s, ev)) {
                s->pending_invalidate = true;
                s->invalidate_seq = ev->seq;
                s->invalidate_ts = ev->ts;
                s->invalidate_wall = ev->wall_ms;
            }
            continue; /* the loop hands out its fragments */
        }
        if (keep && doc.len > MAX_EVENT_SIZE) {
            /* mongod's BSONObj size check when the executor serialises the event. */
            bson_iter_t id;
            char *id_json = NULL;
            if (bson_iter_init_find(&id, &doc, "_id")) {
                id_json = fts_double_value_to_json(bson_iter_value(&id));
            }
            fts_double_error_set(err, 10334,
                                 "%s :: caused by :: BSONObj size: %u (0x%X) is invalid. Size "
                                 "must be between 0 and %d(16MB) First element: _id: %s",
                                 first ? "PlanExecutor error during aggregation"
                                       : "Executor error during getMore",
                                 doc.len, doc.len, MAX_EVENT_SIZE, id_json ? id_json : "?");
            bson_free(id_json);
            bson_destroy(&doc);
            return false;
        }
        if (keep) {
            if (!batch_has_room(max, *count, bytes, doc.len)) {
                s->next_seq--; /* read again by the next getMore */
                bson_destroy(&doc);
                break;
            }
            batch_add(batch, count, &bytes, &doc);
            last = token;
            have_last = true;
            last_is_frag = false;
        }
        bson_destroy(&doc);
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
            bson_t inv = BSON_INITIALIZER;
            bool ok = render_final(srv, s, NULL, true, &inv, &keep, &token, err);
            if (ok && keep) {
                batch_add(batch, count, &bytes, &inv);
            }
            bson_destroy(&inv);
            if (!ok) {
                return false;
            }
            *pbrt = token;
            *closed = true;
            return true;
        }
    }
    if (have_last &&
        (s->next_seq < log->next_seq || s->next_frag < s->nfrags || s->pending_invalidate)) {
        /* A full batch: resume right after what it returned last. */
        if (!last_is_frag) {
            bson_reinit(pbrt_frag);
            *pbrt = last;
        }
        return true;
    }
    bson_reinit(pbrt_frag);
    if (s->next_frag < s->nfrags) {
        /* Nothing fitted (batchSize 0) while a split event is being returned: stay before its
         * next fragment. */
        if (s->next_frag > 0) {
            bson_t id;
            fragment_id(s->frags[s->next_frag - 1], &id);
            bson_concat(pbrt_frag, &id);
            return true;
        }
        s->next_seq = s->frag_seq; /* split again from the start by the next read */
        drop_fragments(s);
    }
    if (s->token_unseen) {
        /* Nothing past the client's token yet: the position stays there. */
        *pbrt = s->client_token;
    } else if (s->next_seq >= log->next_seq) {
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
    bson_t pbrt_frag = BSON_INITIALIZER;
    fts_double_cursor_reply_begin(reply, &cursor_doc, &batch, first ? "firstBatch" : "nextBatch");
    if (!stream_read(srv, cursor->stream, max, first, &batch, count, closed, &pbrt, &pbrt_frag,
                     err)) {
        bson_append_array_end(&cursor_doc, &batch);
        bson_append_document_end(reply, &cursor_doc);
        bson_destroy(&pbrt_frag);
        return false;
    }
    if (bson_empty(&pbrt_frag)) {
        fts_double_cursor_reply_end(reply, &cursor_doc, &batch, *closed ? 0 : cursor->id,
                                    cursor->ns, &pbrt);
    } else {
        /* The batch ended on a fragment: its token, which cursor.c cannot spell. */
        bson_append_array_end(&cursor_doc, &batch);
        bson_append_document(&cursor_doc, "postBatchResumeToken", -1, &pbrt_frag);
        bson_append_int64(&cursor_doc, "id", 2, *closed ? 0 : cursor->id);
        bson_append_utf8(&cursor_doc, "ns", 2, cursor->ns, -1);
        bson_append_document_end(reply, &cursor_doc);
    }
    bson_destroy(&pbrt_frag);
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

static bool parse_steps(fts_double_server_t *srv, fts_double_stream_t *s, bson_iter_t *pipeline,
                        fts_double_error_t *err)
{
    /* mongod parses every stage name before it checks what may follow $changeStream: an
     * unknown name fails with 40324 even after a stage that would be refused with 20. Before
     * 6.0.9 (--no-split-stage) $changeStreamSplitLargeEvent is such an unknown name. */
    bson_iter_t scan = *pipeline, named;
    while (bson_iter_next(&scan)) {
        if (BSON_ITER_HOLDS_DOCUMENT(&scan) && bson_iter_recurse(&scan, &named) &&
            bson_iter_next(&named) &&
            (strcmp(bson_iter_key(&named), SPLIT_STAGE) == 0
                 ? srv->no_split_stage
                 : !is_known_stage(bson_iter_key(&named)))) {
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
        } else if (strcmp(name, SPLIT_STAGE) == 0) {
            /* document_source_change_stream_split_large_event.cpp: an empty object, and the
             * last stage (which also makes it the only one). */
            bson_t spec;
            bson_iter_t rest = *pipeline;
            if (!BSON_ITER_HOLDS_DOCUMENT(&stage) ||
                !fts_double_value_as_doc(bson_iter_value(&stage), &spec) || !bson_empty(&spec)) {
                return fts_double_error_set(err, 7182800,
                                            "$changeStreamSplitLargeEvent spec should be an empty "
                                            "object");
            }
            if (bson_iter_next(&rest)) {
                return fts_double_error_set(err, 7182802,
                                            "$changeStreamSplitLargeEvent must be the last stage "
                                            "in the pipeline");
            }
            s->split = true;
            continue; /* no step: stream_read splits */
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
    /* A fragment's token: the event's token and the fragment index (fragment_token_append). */
    bson_t event_token = BSON_INITIALIZER;
    bson_value_t event_token_value;
    bool fragment_token = false;
    unsigned long fragment = 0;
    {
        bson_t doc;
        bson_iter_t it;
        uint32_t len = 0;
        const char *data = NULL;
        if (bson_init_static(&doc, token_value->value.v_doc.data,
                             token_value->value.v_doc.data_len) &&
            bson_iter_init_find(&it, &doc, "_data") && BSON_ITER_HOLDS_UTF8(&it)) {
            data = bson_iter_utf8(&it, &len);
        }
        size_t base_len = data ? fts_double_token_hex_len(data, len) : 0;
        if (base_len && len == base_len + FRAGMENT_HEX_LEN &&
            strspn(data + base_len, "0123456789ABCDEF") == FRAGMENT_HEX_LEN) {
            fragment_token = true;
            fragment = strtoul(data + base_len, NULL, 16);
            bson_append_utf8(&event_token, "_data", 5, data, (int)base_len);
            event_token_value.value_type = BSON_TYPE_DOCUMENT;
            event_token_value.value.v_doc.data = (uint8_t *)(uintptr_t)bson_get_data(&event_token);
            event_token_value.value.v_doc.data_len = event_token.len;
            token_value = &event_token_value;
        }
    }
    bool parsed = fts_double_token_parse(token_value, &token, err);
    bson_destroy(&event_token);
    if (!parsed) {
        return false;
    }
    if (fragment_token) {
        if (token.kind != FTS_DOUBLE_TOKEN_EVENT) {
            return fts_double_error_set(err, 50811,
                                        "KeyString format error: not a resume token issued by "
                                        "ftsync-mongo-double");
        }
        if (!s->split) {
            return fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_FATAL,
                                        "To resume from a split event, the $changeStream "
                                        "pipeline must end with a $changeStreamSplitLargeEvent "
                                        "stage");
        }
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
    if (!fragment_token && !in_scope(s, ev)) {
        /* A token of an event this stream does not watch: another collection's (or, for a
         * database stream, another database's). mongod's stream filters that event out before
         * its resume check (DocumentSourceEnsureResumeTokenPresent, src/mongo/db/pipeline/
         * document_source_change_stream_ensure_resume_token_present.cpp), so the check never
         * sees the token, and the first event the stream does return surpasses it: uassert
         * ChangeStreamFatalError (280) "cannot resume stream; the resume token was not found.
         * <that event's _id>", NonResumableChangeStreamError. The aggregate itself succeeds
         * when no such event follows yet. */
        s->token_unseen = true;
        s->client_token = token;
        return true;
    }
    if (fragment_token) {
        /* Split the event again and go on after that fragment (after its last one: with the
         * next event, split_event's check says so when nothing is left). */
        s->next_seq = token.seq;
        s->resume_in_split = true;
        s->resume_seq = token.seq;
        s->skip_fragments = fragment + 1;
        return true;
    }
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
    int mode = 0;

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
    if (!parse_steps(srv, s, &pipe, &cmd->err)) {
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
