/*
 * changestream.h - change streams: aggregate with a leading $changeStream stage, on a
 * collection, a database (aggregate: 1) or the whole deployment (allChangesForCluster on admin),
 * read from the event log and shaped as mongod 6.0 documents them.
 *
 * Options: resumeAfter, startAfter, startAtOperationTime, fullDocument (default, updateLookup,
 * whenAvailable, required), fullDocumentBeforeChange (off, whenAvailable, required),
 * showExpandedEvents (adds create events and collectionUUID); following stages: $match,
 * $project, $unset, evaluated on the event document, and a last $changeStreamSplitLargeEvent
 * (unless --no-split-stage) splitting events over 16 MB into fragments; without it such an
 * event fails the batch with 10334 (changestream.c). batchSize as for any cursor.
 *
 * Events carry _id (the resume token), operationType, clusterTime, wallTime, ns, documentKey,
 * fullDocument (insert and replace always; update with updateLookup: the document as it is
 * when the event is read, or null; with whenAvailable/required: the post-image the collection
 * recorded), fullDocumentBeforeChange (pre-images, for collections created or modified with
 * changeStreamPreAndPostImages: {enabled: true}), updateDescription, to (rename). Drop and
 * rename of the watched collection, and dropDatabase of the watched database, produce the
 * event, then an invalidate event, after which the cursor is closed (id 0).
 *
 * Every batch carries postBatchResumeToken: the last event's token when the batch stopped
 * because it was full, otherwise a high-water mark at the current cluster time, so it advances
 * even when the stream returns nothing. A getMore that finds nothing waits (parked, other
 * clients go on) up to its maxTimeMS, 1000 ms by default as mongod's awaitData, and is
 * answered as soon as a matching event is logged.
 */
#ifndef FTS_DOUBLE_CHANGESTREAM_H
#define FTS_DOUBLE_CHANGESTREAM_H

#include "commands.h"
#include "cursor.h"

#include <bson/bson.h>
#include <stdbool.h>

typedef struct fts_double_stream fts_double_stream_t;

/* Whether a pipeline starts with $changeStream. */
bool fts_double_pipeline_is_change_stream(const bson_t *pipeline);

/* Runs an aggregate whose pipeline starts with $changeStream. first_batch: cursor.batchSize
 * (-1 if none). */
fts_double_cmd_status_t fts_double_stream_aggregate(fts_double_cmd_t *cmd, const bson_t *pipeline,
                                                    int64_t first_batch);

/* A getMore on a change-stream cursor: answers at once if there is anything to say, else parks
 * the request for max_time_ms. */
fts_double_cmd_status_t fts_double_stream_get_more(fts_double_cmd_t *cmd,
                                                   fts_double_cursor_t *cursor, int64_t batch_size,
                                                   int64_t max_time_ms);

/* Called after events were appended: waiting getMores are answered on the next loop turn. */
void fts_double_stream_notify(fts_double_server_t *srv);
/* The loop turn itself (the server's wake event). */
void fts_double_stream_wake(fts_double_server_t *srv);

void fts_double_stream_destroy(fts_double_stream_t *stream);

#endif
