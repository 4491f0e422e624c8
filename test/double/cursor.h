/*
 * cursor.h - server-side cursors: the rest of a find/aggregate/list result, or a change stream.
 *
 * A document cursor holds references to the documents its query matched when it ran (a
 * snapshot: later writes do not show up in it, which mongod does not promise either way) and
 * hands them out in batches: 101 documents in the first batch unless batchSize says otherwise,
 * then as many as fit in 16 MiB per getMore. A change-stream cursor holds the stream's
 * position; see changestream.h. Ids are random positive 64-bit numbers, as mongod's. A cursor
 * nobody asked for more from in 10 minutes is dropped, as mongod's cursorTimeoutMillis does.
 */
#ifndef FTS_DOUBLE_CURSOR_H
#define FTS_DOUBLE_CURSOR_H

#include "query.h"
#include "server.h"

#include <bson/bson.h>
#include <stdbool.h>

/* A batch stops growing once its documents reach this many bytes (mongod's 16 MiB). */
#define FTS_DOUBLE_BATCH_BYTES         (16 * 1024 * 1024 - 16 * 1024)
#define FTS_DOUBLE_DEFAULT_FIRST_BATCH 101
/* mongod's default cursorTimeoutMillis. */
#define FTS_DOUBLE_CURSOR_TIMEOUT_MS (10 * 60 * 1000)

typedef struct fts_double_stream fts_double_stream_t;

struct fts_double_cursor {
    int64_t id;
    char *ns;   /* reported in replies: "db.coll", "db.$cmd.aggregate", ... */
    char *db;   /* a getMore must name this database ... */
    char *coll; /* ... and this collection */
    /* document cursors */
    fts_double_docvec_t docs;
    size_t pos;
    fts_double_projection_t *projection; /* owned, may be NULL */
    /* change-stream cursors */
    fts_double_stream_t *stream;   /* owned, NULL for document cursors */
    fts_double_request_t *waiting; /* a getMore parked on this cursor */
    int64_t last_used_ms;
    fts_double_cursor_t *prev, *next;
};

/* Registers a cursor for ns ("db.coll"); getMore must then use db and coll. */
fts_double_cursor_t *fts_double_cursor_new(fts_double_server_t *srv, const char *db,
                                           const char *coll, const char *ns);
fts_double_cursor_t *fts_double_cursor_find(fts_double_server_t *srv, int64_t id);
/* Unregisters and frees (documents, projection, stream). A parked getMore must be gone. */
void fts_double_cursor_free(fts_double_server_t *srv, fts_double_cursor_t *cursor);
void fts_double_cursors_destroy(fts_double_server_t *srv);
/* Frees the cursors idle for longer than FTS_DOUBLE_CURSOR_TIMEOUT_MS (none that a getMore
 * waits on). */
void fts_double_cursors_expire(fts_double_server_t *srv);

/* Opens {cursor: {<key>: [ in reply; *batch receives the array. */
void fts_double_cursor_reply_begin(bson_t *reply, bson_t *cursor_doc, bson_t *batch,
                                   const char *key);
/* Closes it with the postBatchResumeToken (pbrt may be NULL), id and ns. */
void fts_double_cursor_reply_end(bson_t *reply, bson_t *cursor_doc, bson_t *batch, int64_t id,
                                 const char *ns, const void *pbrt);

/* Appends up to max documents (-1: no count limit) of a document cursor to batch; returns
 * whether the cursor is exhausted. */
bool fts_double_cursor_fill(fts_double_cursor_t *cursor, bson_t *batch, int64_t max);

/* Answers a whole result as a cursor reply: the first batch in firstBatch and, if more is
 * left, a registered cursor. Takes over docs and projection. */
void fts_double_cursor_reply_docs(fts_double_server_t *srv, bson_t *reply, const char *db,
                                  const char *coll, const char *ns, fts_double_docvec_t *docs,
                                  fts_double_projection_t *projection, int64_t first_batch,
                                  bool single_batch);

#endif
