/*
 * mongo_source.h - the MongoDB side of `ftsync extract`: one change stream (on a collection, or
 * on a database with a collection filter) read through libmongoc, the cluster time "now", and
 * the `_id`-ordered snapshot scan that precedes the first stream.
 *
 * What the caller keeps, and why the source hands out what it does:
 *   - the position to save is the driver's resume token (mongoc_change_stream_get_resume_token),
 *     never a document `_id`. It advances with every event and, while the stream is idle, with
 *     the server's post-batch resume token, so a quiet collection does not pin an old position
 *     (invariant 1 is the caller's: it saves a token only once what came before it is queued);
 *   - after an invalidate event (drop or rename of the watched collection, dropDatabase) the
 *     token is the invalidate's own `_id`, which only `startAfter` accepts (resumeAfter: 260).
 *     fts_mongo_source_token_needs_start_after() says so, so the caller saves it with that
 *     kind. It also says so after opening with startAfter until the first event: until then
 *     the server may hand the start token back as its post-batch token (libmongoc keeps
 *     using startAfter in that window for the same reason). startAfter accepts any token, so
 *     saving a plain one with that kind is harmless;
 *   - libmongoc resumes a stream by itself once after a resumable error (network error,
 *     ResumableChangeStreamError label, CursorNotFound); those resumes are invisible except
 *     for a log line and fts_mongo_source_resume_count(). An error it gives up on comes out
 *     of fts_mongo_source_next() classified by err->code:
 *       FTS_SOURCE_HISTORY_LOST the position is gone from the server's history (286
 *                               ChangeStreamHistoryLost, 136 CappedPositionLost, 280
 *                               ChangeStreamFatalError "resume token was not found", 260
 *                               InvalidResumeToken while a token was in play), or the saved
 *                               token is no resume token (no string _data; or the server
 *                               cannot parse it: 260 from the double, FailedToParse or a
 *                               resume-token location code from mongod): resync;
 *       FTS_ERROR_CODE_AUTH     credentials refused (libmongoc's "Authentication failed",
 *                               18 AuthenticationFailed, 13 Unauthorized), and
 *       FTS_ERROR_CODE_NOT_REPLICA_SET  change streams refused by a standalone (40573):
 *                               they need an operator (permanent.h), and are retried as the
 *                               next one is;
 *       FTS_MONGO_RETRYABLE     anything else: reopen from the last checkpoint after a capped
 *                               backoff (invariant 5: retried, and logged by the caller).
 *     The message names the namespace, the server's code and codeName and its message;
 *     fts_mongo_source_server_code() gives the code as a number;
 *   - events larger than 16 MB (MongoDB manual: "Large change events" in Change Streams, and
 *     the $changeStreamSplitLargeEvent page): the server fails such an event with 10334
 *     BSONObjectTooLarge, not resumable, so libmongoc gives up. next() then reopens by itself
 *     at its last token with {$changeStreamSplitLargeEvent: {}} as the last stage (kept from
 *     then on), reads the fragments (splitEvent {fragment, of}) and hands out one whole event
 *     whose _id, and the token then, is the last fragment's (until then each call says IDLE
 *     with the token before the event): a saved position never stands inside an event. The
 *     reassembled event may exceed 16 MB (the frames to the worker allow it, frame.h). Every
 *     step (reopen, fragment) is one call of next(), so the caller keeps renewing its lease. A
 * server without the stage (before 6.0.9: 40324) gets the fallback: batches of one event until the
 * large one fails again, that one event read without fullDocument and updateDescription (also
 * without fullDocumentBeforeChange if still too large) through a $project, its document read again
 * by _id (majority, as updateLookup; null when gone) as fullDocument, then back to normal reading.
 * Each large event is logged once (info: reassembled; warn: re-read) and counted
 *     (fts_mongo_source_large_events);
 *   - libmongoc's own log lines go through fts_log (component "mongo", its debug and trace
 *     levels dropped), so they share the format and the secret scrubbing; the URI's password
 *     is registered as a secret when the source is made.
 *
 * Fork hygiene: a source owns one mongoc_client_t, created by fts_mongo_source_new(). A process
 * that forks (the extract parent and its transform worker) forks before making its source; a
 * child must never use a client made by its parent. Not thread-safe: one source per thread.
 */
#ifndef FTS_MONGO_SOURCE_H
#define FTS_MONGO_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include <bson/bson.h>

#include "config.h"
#include "error.h"
#include "extract_ports.h"

/* err->code of FTS_ERROR_MONGO errors from opening or reading a stream other than
 * FTS_SOURCE_HISTORY_LOST (extract_ports.h): see the top. */
#define FTS_MONGO_RETRYABLE 1102

/* Defaults for the options left 0. */
#define FTS_MONGO_DEFAULT_MAX_AWAIT_TIME_MS 1000
#define FTS_MONGO_DEFAULT_SCAN_BATCH_SIZE   1000

/* The scope, post-image and pre-image modes are the settings' own enums (config.h): the
 * adapter takes them as parsed. There is no "default" post-image mode: the transform would take
 * an update without a document for one deleted after the update. */

typedef struct {
    fts_scope_t scope;
    /* FTS_SCOPE_DATABASE: the collections to follow, NULL-terminated (copied); NULL or
     * empty follows every collection. The stream gets a $match on ns.coll (and on to.coll, so
     * a rename onto a followed collection is seen); dropDatabase and invalidate always pass. */
    const char *const *collections;
    fts_full_document_t full_document;
    fts_pre_images_t full_document_before_change;
    int32_t batch_size;        /* events per change-stream batch; 0 = the server's default */
    int64_t max_await_time_ms; /* how long next waits for an event; 0 = default (1000) */
    int32_t scan_batch_size;   /* documents per snapshot-scan batch; 0 = default (1000) */
    /* Upper bound on one call to the server: socketTimeoutMS and serverSelectionTimeoutMS (and
     * connectTimeoutMS, when lower than libmongoc's 10 s) for the ones the URI does not set.
     * extract derives it from the lease TTL so that a server that accepts and never answers
     * fails the call before the lease expires (issue 13, item 4). Raised to
     * max_await_time_ms + 1000 if lower, so that an idle getMore is not cut off. 0 = libmongoc's
     * defaults (no socket timeout). */
    int32_t call_timeout_ms;
} fts_mongo_source_options_t;

typedef struct fts_mongo_source fts_mongo_source_t;
typedef struct fts_mongo_scan fts_mongo_scan_t;

/* Sets up libmongoc for this process, once: mongoc_init and the log handler. Called by
 * fts_mongo_source_new(); callable earlier, so that libmongoc's start-up messages are routed. */
void fts_mongo_init(void);

void fts_mongo_source_options_init(fts_mongo_source_options_t *options);

/* Makes a source for database.collection (collection scope; collection must be NULL in
 * database scope) on the deployment at uri, and its client. Nothing is sent to the server yet.
 * uri, database, collection and options are copied; options NULL = defaults. Errors:
 * FTS_ERROR_CONFIG (a bad URI, name or option value, named in the message). */
fts_mongo_source_t *fts_mongo_source_new(const char *uri, const char *database,
                                         const char *collection,
                                         const fts_mongo_source_options_t *options,
                                         fts_error_t *err);

/* Closes the stream and the client. Scans made from the source must be destroyed first.
 * Accepts NULL. */
void fts_mongo_source_destroy(fts_mongo_source_t *source);

/* The source port over source (borrowed: it must outlive the port). Its operations are the
 * functions below; a scan handle is an fts_mongo_scan_t. */
fts_source_port_t fts_mongo_source_port(fts_mongo_source_t *source);

/* Opens the change stream at position (closing any open one first); NULL: changes from now
 * on. The aggregate is sent now, so a position the server cannot resume from fails here:
 * FTS_SOURCE_HISTORY_LOST or FTS_MONGO_RETRYABLE as for next. A token that is no JSON object
 * (fts_mongo_token_from_json) or no resume token fails with FTS_SOURCE_HISTORY_LOST too. */
bool fts_mongo_source_open(fts_mongo_source_t *source, const fts_source_position_t *position,
                           fts_error_t *err);

/* Closes the change stream (kills its cursor); the source can be opened again. */
void fts_mongo_source_close(fts_mongo_source_t *source);

/* Reads the next event, waiting up to max_await_time_ms (FTS_SOURCE_NEXT_IDLE when none came).
 * On FTS_SOURCE_NEXT_EVENT *event is the event document (for an event over 16 MB, the whole
 * event built as the top says), borrowed until the next call of next, open, close or destroy;
 * otherwise *event is NULL. An invalidate event is handed out like any other; every call after
 * it says FTS_SOURCE_NEXT_INVALIDATED. After an error the stream stays failed: reopen it. */
bool fts_mongo_source_next(fts_mongo_source_t *source, fts_source_next_t *what,
                           const bson_t **event, fts_error_t *err);

/* The current resume token (the last event's _id, or the post-batch token when idle), NULL
 * before the server gave one. Borrowed until the next call of next, open, close or destroy. */
const bson_t *fts_mongo_source_resume_token(fts_mongo_source_t *source);

/* The same as canonical extended JSON, to be freed with bson_free(); NULL when there is none. */
char *fts_mongo_source_resume_token_json(fts_mongo_source_t *source);

/* True when the current token is, or may be, the _id of an invalidate event (see the top):
 * save it to be used with FTS_SOURCE_START_AFTER, as resumeAfter refuses an invalidate's. */
bool fts_mongo_source_token_needs_start_after(const fts_mongo_source_t *source);

/* Times libmongoc resumed a stream of this source by itself after a resumable error, since the
 * source was made (a metric; each resume is also logged as a warning). */
uint64_t fts_mongo_source_resume_count(const fts_mongo_source_t *source);

/* Events over 16 MB handed out whole since the source was made: *split reassembled from
 * $changeStreamSplitLargeEvent fragments, *reread built by re-reading the document (see the
 * top). */
void fts_mongo_source_large_events(const fts_mongo_source_t *source, uint64_t *split,
                                   uint64_t *reread);

/* The server's error code behind the last error of open, next or a scan (e.g. 286), 0 when
 * that error came from the client side (network, server selection) or there was none. */
int fts_mongo_source_server_code(const fts_mongo_source_t *source);

/* The deployment's cluster time now: the operationTime of a one-document majority read (a
 * `find` with limit 1 on the source's collection), i.e. the majority-committed point, which
 * unlike a ping's last-applied time never runs ahead of a write still in flight. Noted before
 * a snapshot scan, it is where the stream that follows the scan starts
 * (FTS_SOURCE_START_AT_TIME): every write at or before it is visible to the scan, every later
 * one is in the stream, so nothing changed during the scan is missed (a write at exactly that
 * time may come twice: replays are harmless). Errors are FTS_MONGO_RETRYABLE; a reply without
 * operationTime (not a replica set) is FTS_ERROR_CODE_UNSUPPORTED. */
bool fts_mongo_source_cluster_time(fts_mongo_source_t *source, fts_timestamp_t *now,
                                   fts_error_t *err);

/* What a deployment is, by its answer to hello. */
typedef enum {
    FTS_MONGO_STANDALONE = 0, /* neither: change streams are refused (40573) */
    FTS_MONGO_REPLICA_SET,    /* hello has setName */
    FTS_MONGO_SHARDED         /* hello's msg is "isdbgrid": a mongos */
} fts_mongo_topology_t;

/* Reads hello's answer; *set_name (may be NULL) is the replica set's name, borrowed from hello,
 * for FTS_MONGO_REPLICA_SET, else NULL. */
fts_mongo_topology_t fts_mongo_hello_topology(const bson_t *hello, const char **set_name);

/* Sends hello to the deployment (the first command also connects and authenticates) and
 * writes what it is to description ("replica set rs0", "sharded cluster (mongos)"), for
 * `ftsync check`. Errors are classified as for the other calls (FTS_ERROR_CODE_AUTH,
 * FTS_MONGO_RETRYABLE for an unreachable server...); a standalone fails with
 * FTS_ERROR_CODE_NOT_REPLICA_SET, as its refusal of a change stream would. */
bool fts_mongo_source_topology(fts_mongo_source_t *source, char *description, size_t size,
                               fts_error_t *err);

/* Parses a token saved as extended JSON (what fts_mongo_source_resume_token_json() gave); the
 * caller frees it with bson_destroy(). A text that is not a JSON object fails (NULL) with
 * FTS_ERROR_INPUT. Whether it is a resume token the server accepts is for open to find out. */
bson_t *fts_mongo_token_from_json(const char *json, fts_error_t *err);

/* Starts a snapshot scan of collection (NULL = the source's collection; required in database
 * scope) in ascending _id order, after_id excluded (NULL = from the first document), in
 * batches of scan_batch_size. A resumed scan also returns documents whose _id is of a BSON
 * type that sorts after after_id's (mixed _id types are allowed). Nothing is sent until the
 * first next. The scan borrows the source's client until fts_mongo_scan_destroy(). */
fts_mongo_scan_t *fts_mongo_scan_new(fts_mongo_source_t *source, const char *collection,
                                     const bson_value_t *after_id, fts_error_t *err);

/* The next document: true with *doc set (borrowed until the next call or destroy), true with
 * *doc NULL at the end, false on an error (FTS_MONGO_RETRYABLE: start a new scan after the last
 * _id the caller secured). */
bool fts_mongo_scan_next(fts_mongo_scan_t *scan, const bson_t **doc, fts_error_t *err);

/* Documents returned so far. */
uint64_t fts_mongo_scan_count(const fts_mongo_scan_t *scan);

/* Ends the scan (kills its cursor). Accepts NULL. */
void fts_mongo_scan_destroy(fts_mongo_scan_t *scan);

/* Whether err says the position is gone and only a resync can follow (FTS_SOURCE_HISTORY_LOST). */
bool fts_mongo_error_is_history_lost(const fts_error_t *err);

#endif
