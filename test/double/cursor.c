/*
 * cursor.c - the cursor registry and document batches (see cursor.h).
 */
#include "cursor.h"

#include "bsonval.h"
#include "changestream.h"
#include "eventlog.h"

#include <stdlib.h>
#include <string.h>

fts_double_cursor_t *fts_double_cursor_new(fts_double_server_t *srv, const char *db,
                                           const char *coll, const char *ns)
{
    fts_double_cursor_t *c = bson_malloc0(sizeof *c);
    /* Random-looking, positive, never 0 (which means "no cursor") and never reused. */
    srv->cursors.next_id += 1 + (rand() & 0xffff);
    c->id = srv->cursors.next_id;
    c->db = bson_strdup(db);
    c->coll = bson_strdup(coll);
    c->ns = bson_strdup(ns);
    c->last_used_ms = fts_double_now_ms();
    c->next = srv->cursors.head;
    if (srv->cursors.head) {
        srv->cursors.head->prev = c;
    }
    srv->cursors.head = c;
    srv->cursors.count++;
    return c;
}

fts_double_cursor_t *fts_double_cursor_find(fts_double_server_t *srv, int64_t id)
{
    for (fts_double_cursor_t *c = srv->cursors.head; c; c = c->next) {
        if (c->id == id) {
            c->last_used_ms = fts_double_now_ms();
            return c;
        }
    }
    return NULL;
}

void fts_double_cursors_expire(fts_double_server_t *srv)
{
    int64_t now = fts_double_now_ms();
    fts_double_cursor_t *next;
    for (fts_double_cursor_t *c = srv->cursors.head; c; c = next) {
        next = c->next;
        if (!c->waiting && now - c->last_used_ms > FTS_DOUBLE_CURSOR_TIMEOUT_MS) {
            fts_double_log(srv, "cursor %lld (%s) timed out", (long long)c->id, c->ns);
            fts_double_cursor_free(srv, c);
        }
    }
}

void fts_double_cursor_free(fts_double_server_t *srv, fts_double_cursor_t *cursor)
{
    if (!cursor) {
        return;
    }
    if (cursor->prev) {
        cursor->prev->next = cursor->next;
    } else {
        srv->cursors.head = cursor->next;
    }
    if (cursor->next) {
        cursor->next->prev = cursor->prev;
    }
    srv->cursors.count--;
    fts_double_docvec_destroy(&cursor->docs);
    fts_double_projection_destroy(cursor->projection);
    fts_double_stream_destroy(cursor->stream);
    bson_free(cursor->ns);
    bson_free(cursor->db);
    bson_free(cursor->coll);
    bson_free(cursor);
}

void fts_double_cursors_destroy(fts_double_server_t *srv)
{
    while (srv->cursors.head) {
        fts_double_cursor_free(srv, srv->cursors.head);
    }
}

void fts_double_cursor_reply_begin(bson_t *reply, bson_t *cursor_doc, bson_t *batch,
                                   const char *key)
{
    bson_append_document_begin(reply, "cursor", 6, cursor_doc);
    bson_append_array_begin(cursor_doc, key, -1, batch);
}

void fts_double_cursor_reply_end(bson_t *reply, bson_t *cursor_doc, bson_t *batch, int64_t id,
                                 const char *ns, const void *pbrt)
{
    bson_append_array_end(cursor_doc, batch);
    if (pbrt) {
        fts_double_token_append(cursor_doc, "postBatchResumeToken", pbrt);
    }
    bson_append_int64(cursor_doc, "id", 2, id);
    bson_append_utf8(cursor_doc, "ns", 2, ns, -1);
    bson_append_document_end(reply, cursor_doc);
}

bool fts_double_cursor_fill(fts_double_cursor_t *cursor, bson_t *batch, int64_t max)
{
    size_t bytes = 0;
    uint32_t n = 0;
    while (cursor->pos < cursor->docs.count && (max < 0 || (int64_t)n < max) &&
           bytes < FTS_DOUBLE_BATCH_BYTES) {
        fts_double_doc_t *doc = cursor->docs.items[cursor->pos++];
        bson_t view;
        char buf[16];
        const char *key = fts_double_index_key(n++, buf);
        fts_double_doc_view(doc, &view);
        if (cursor->projection) {
            bson_t projected;
            bson_append_document_begin(batch, key, -1, &projected);
            fts_double_projection_apply(cursor->projection, &view, &projected);
            bson_append_document_end(batch, &projected);
        } else {
            bson_append_document(batch, key, -1, &view);
        }
        bytes += doc->len;
        /* Handed out: the cursor need not keep the document alive any longer. */
        fts_double_doc_unref(doc);
        cursor->docs.items[cursor->pos - 1] = NULL;
    }
    return cursor->pos >= cursor->docs.count;
}

void fts_double_cursor_reply_docs(fts_double_server_t *srv, bson_t *reply, const char *db,
                                  const char *coll, const char *ns, fts_double_docvec_t *docs,
                                  fts_double_projection_t *projection, int64_t first_batch,
                                  bool single_batch)
{
    fts_double_cursor_t tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.docs = *docs;
    tmp.projection = projection;
    memset(docs, 0, sizeof *docs);

    bson_t cursor_doc, batch;
    fts_double_cursor_reply_begin(reply, &cursor_doc, &batch, "firstBatch");
    bool exhausted = fts_double_cursor_fill(&tmp, &batch, first_batch);
    int64_t id = 0;
    if (!exhausted && !single_batch) {
        fts_double_cursor_t *c = fts_double_cursor_new(srv, db, coll, ns);
        c->docs = tmp.docs;
        c->pos = tmp.pos;
        c->projection = tmp.projection;
        id = c->id;
    } else {
        fts_double_docvec_destroy(&tmp.docs);
        fts_double_projection_destroy(tmp.projection);
    }
    fts_double_cursor_reply_end(reply, &cursor_doc, &batch, id, ns, NULL);
}
