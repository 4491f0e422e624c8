/*
 * mongo_source.c - the change stream, cluster time and snapshot scan of `ftsync extract`, on
 * libmongoc (see mongo_source.h).
 *
 * Invariants kept here:
 *   - the position handed out is libmongoc's cached resume token, which the driver advances
 *     with events and post-batch tokens; after an invalidate it is pinned to the invalidate's
 *     _id, and whenever the token is or may be an invalidate's the caller is told to save it
 *     for startAfter, so a restart never meets 260 on a good position (invariant 1 relies on
 *     the caller saving a token only after the events before it are queued);
 *   - every error libmongoc gives up on comes out, classified history-lost or retryable, with
 *     the server's code and message (invariant 5: nothing is swallowed); the resumes it does
 *     by itself are counted and logged (seen through command monitoring: an aggregate sent
 *     from inside mongoc_change_stream_next is a resume);
 *   - a resumed scan starts strictly after the given _id in the server's _id order, including
 *     _ids of BSON types that sort later, so a crash mid-scan neither skips nor restarts;
 *   - libmongoc's log goes through fts_log, whose secret scrubbing covers the URI's password;
 *   - an event over 16 MB is handed out whole, and only once it is whole: while its
 *     fragments come in, next() says IDLE (one read per call, so the caller can renew its
 *     lease) and the token it reports is the one before the event; once whole, the last
 *     fragment's, past the event. So a saved position never stands inside an event. In the
 *     re-read fallback the event is read with batches of one so that the event without its
 *     images is exactly the one that was too large, and no event before it is lost or
 *     repeated.
 *
 * The source is the extract's source port (extract_ports.h): its functions take the port's
 * types and the port's table (fts_mongo_source_port) only adapts the context pointer.
 */
#include "mongo_source.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mongo_uri.h"
#include "permanent.h"

/* The log component of everything this adapter (and libmongoc) prints. */
#define COMPONENT "mongo"

/* Server error codes that mean a change stream's position is gone (mongod's error_codes.yml). */
#define CODE_CAPPED_POSITION_LOST    136
#define CODE_INVALID_RESUME_TOKEN    260
#define CODE_CHANGE_STREAM_FATAL     280
#define CODE_CHANGE_STREAM_HIST_LOST 286

/* Server error codes that need an operator (permanent.h): Unauthorized (13, the user lacks a
 * privilege), AuthenticationFailed (18, wrong user or password), and 40573, what a standalone
 * mongod answers a $changeStream (jstests/change_streams/change_stream_standalone.js:
 * "notReplicaSetErrorCode = 40573"; the manual: change streams need a replica set or a
 * sharded cluster). */
#define CODE_UNAUTHORIZED          13
#define CODE_AUTHENTICATION_FAILED 18
#define CODE_NOT_REPLICA_SET       40573

/* What mongod answers an aggregate whose resumeAfter/startAfter token it cannot parse:
 * FailedToParse (9) for a _data that is not hex, 50811 when the hex is no KeyString, and the
 * location codes of its resume-token decoder (src/mongo/db/pipeline/resume_token.cpp); the
 * double answers the same. Only counted as "position gone" when they answer the opening of a
 * stream at a saved token: there nothing but the token can be unparsable. */
static const int token_parse_codes[] = {
    9,       40646,   40647,   40648,   40649,   50793,   50794,   50795, 50796,
    50811,   50854,   50855,   50870,   50872,   51055,   51056,   51057, 6189500,
    6189501, 6189502, 6189503, 6189504, 6189505, 7182501, 7182504,
};

/* A saved token is printed in messages up to this many bytes. */
#define TOKEN_SHOWN_MAX 200

/* How the stream is read with respect to events larger than 16 MB. */
typedef enum {
    LARGE_NORMAL = 0, /* as configured (plus the split stage once one was needed) */
    LARGE_PROBE,      /* no split stage on this server: batches of one event, so that the
                       * next BSONObjectTooLarge leaves the token right before that event */
    LARGE_PROJECTED   /* reading that one event without its large parts (batches of one) */
} large_mode_t;

/* mongod's error for an event over 16 MB, and its answer to an unknown stage. */
#define CODE_BSON_OBJECT_TOO_LARGE 10334
#define CODE_UNRECOGNIZED_STAGE    40324
/* Events LARGE_PROBE reads one by one before it gives up waiting for the large one (it may
 * have shrunk meanwhile: updateLookup reads the document as it is now). */
#define PROBE_EVENTS 1000
/* Empty reads tolerated while the rest of a split event is awaited. */
#define FRAGMENT_WAIT_ROUNDS 10

struct fts_mongo_source {
    mongoc_client_t *client;
    mongoc_database_t *database;
    mongoc_collection_t *collection; /* collection scope only */
    char *masked_uri;
    char *ns; /* "db.coll" in collection scope, "db" in database scope; for messages */
    fts_mongo_source_options_t options;
    char **collections; /* database scope filter, NULL-terminated copy; NULL = all */
    bson_t pipeline;    /* {pipeline: [...]} appended after $changeStream */

    mongoc_change_stream_t *stream;
    bool opened_with_token; /* resumeAfter or startAfter: a 260 means the token is bad */
    bool in_next;           /* inside mongoc_change_stream_next (for the monitoring callbacks) */
    bool invalidated;       /* the last event was an invalidate; the stream is over */
    bool start_after_open;  /* opened with startAfter and no event returned since */
    bson_t invalidate_token;
    uint64_t resumes;
    int server_code;
    char last_failure[256]; /* the failed getMore behind the next automatic resume */

    /* Events larger than 16 MB (see "large events" below). split_stage and split_unsupported
     * are learnt once and kept for the source's life; the rest belongs to one open stream. */
    bool split_stage;       /* pipelines end with $changeStreamSplitLargeEvent */
    bool split_unsupported; /* the server refused that stage: large events are re-read */
    large_mode_t mode;
    int projected_level; /* LARGE_PROJECTED: 1 drops fullDocument and updateDescription, 2
                          * also fullDocumentBeforeChange */
    uint64_t probe_left; /* LARGE_PROBE: events still read one by one before going back */
    bool reopen_normal;  /* reopen in LARGE_NORMAL at the current token before reading on */
    int32_t fragment_of; /* fragments of the split event being reassembled; 0 = none */
    int32_t fragment_next;
    bson_t assembling; /* the fields of its fragments so far */
    bson_t held_token; /* the position before its first fragment (held_valid: there was one) */
    bool held_valid;
    int fragment_idle_rounds; /* reads without a fragment while one is awaited */
    bson_t whole;             /* the last event built here (reassembled or re-read), handed out */
    uint64_t split_events;
    uint64_t reread_events;
    /* Where the stream was last opened by fts_mongo_source_open, to reopen there after a 10334
     * that came before libmongoc had any token. */
    fts_source_from_t opened_from; /* 0: from now on */
    bson_t opened_token;
    fts_timestamp_t opened_time;
};

struct fts_mongo_scan {
    fts_mongo_source_t *source;
    mongoc_collection_t *collection;
    mongoc_cursor_t *cursor;
    char *ns;
    uint64_t count;
};

/* --- process set-up and libmongoc's log --- */

/* libmongoc calls this with its logging lock held: it must not log through libmongoc again.
 * Each level has its own format string so that fts_log's repeat limiter (which tells call
 * sites apart by format) holds back repeated warnings without hiding an error behind them. */
static void route_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                             void *data)
{
    (void)data;
    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        fts_log(FTS_LOG_ERROR, COMPONENT, "%s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_WARNING:
        fts_log(FTS_LOG_WARN, COMPONENT, "%.100s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO:
        fts_log(FTS_LOG_INFO, COMPONENT, "%.101s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_DEBUG:
    case MONGOC_LOG_LEVEL_TRACE:
    default:
        break; /* far too chatty for ftsync's debug level, and may quote whole commands */
    }
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_process(void)
{
    /* The handler first, so that whatever mongoc_init says is routed too. */
    mongoc_log_set_handler(route_mongoc_log, NULL);
    mongoc_init();
}

void fts_mongo_init(void)
{
    pthread_once(&init_once, init_process);
}

void fts_mongo_source_options_init(fts_mongo_source_options_t *options)
{
    memset(options, 0, sizeof *options);
    options->max_await_time_ms = FTS_MONGO_DEFAULT_MAX_AWAIT_TIME_MS;
    options->scan_batch_size = FTS_MONGO_DEFAULT_SCAN_BATCH_SIZE;
}

/* --- errors --- */

bool fts_mongo_error_is_history_lost(const fts_error_t *err)
{
    return err && err->domain == FTS_ERROR_MONGO && err->code == FTS_SOURCE_HISTORY_LOST;
}

static const char *reply_code_name(const bson_t *reply)
{
    bson_iter_t iter;
    if (reply && bson_iter_init_find(&iter, reply, "codeName") && BSON_ITER_HOLDS_UTF8(&iter)) {
        return bson_iter_utf8(&iter, NULL);
    }
    return "unnamed";
}

static bool is_token_parse_code(int code)
{
    for (size_t i = 0; i < sizeof token_parse_codes / sizeof token_parse_codes[0]; i++) {
        if (token_parse_codes[i] == code) {
            return true;
        }
    }
    return false;
}

/* How an error relates to the stream's position. */
typedef enum {
    POSITION_NONE,      /* not a change stream (ping, scan) */
    POSITION_STREAM,    /* a change stream without a token in play */
    POSITION_TOKEN,     /* a change stream started from, or holding, a token */
    POSITION_TOKEN_OPEN /* the opening of a change stream at a saved token */
} position_role_t;

/* Turns what libmongoc reported into err, classified by what the error says about the
 * stream's position (see mongo_source.h). Returns false. */
static bool fail_from_mongoc(fts_mongo_source_t *source, const char *what, const char *ns,
                             const bson_error_t *error, const bson_t *reply, position_role_t role,
                             fts_error_t *err)
{
    int server_code = error->domain == MONGOC_ERROR_SERVER ? (int)error->code : 0;
    source->server_code = server_code;
    /* Refused credentials come from libmongoc's handshake (client error "Authentication
     * failed.") or from the server's reply to a command; either needs an operator, and is
     * retried like the rest in case one fixes it (permanent.h). */
    if ((error->domain == MONGOC_ERROR_CLIENT && error->code == MONGOC_ERROR_CLIENT_AUTHENTICATE) ||
        server_code == CODE_AUTHENTICATION_FAILED || server_code == CODE_UNAUTHORIZED) {
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_ERROR_CODE_AUTH,
                             "%s on %s (%s): credentials refused: %s (libmongoc error %u.%u)", what,
                             ns, source->masked_uri, error->message, error->domain, error->code);
    }
    if (server_code == CODE_NOT_REPLICA_SET) {
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_ERROR_CODE_NOT_REPLICA_SET,
                             "%s on %s (%s): change streams refused, not a replica set: server "
                             "error %d (%s): %s",
                             what, ns, source->masked_uri, server_code, reply_code_name(reply),
                             error->message);
    }
    if (server_code == 0) {
        /* Network, server selection, a reply that made no sense: worth retrying. */
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_MONGO_RETRYABLE,
                             "%s on %s (%s): %s (libmongoc error %u.%u)", what, ns,
                             source->masked_uri, error->message, error->domain, error->code);
    }
    bool lost = false;
    if (role != POSITION_NONE) {
        lost = server_code == CODE_CHANGE_STREAM_HIST_LOST ||
               server_code == CODE_CAPPED_POSITION_LOST ||
               server_code == CODE_CHANGE_STREAM_FATAL ||
               (server_code == CODE_INVALID_RESUME_TOKEN && role != POSITION_STREAM) ||
               (role == POSITION_TOKEN_OPEN && is_token_parse_code(server_code));
    }
    if (lost && server_code == CODE_CHANGE_STREAM_FATAL) {
        /* 280 "the resume token was not found": the stream went past the token without seeing
         * it, which a token of another collection does too (it is not in this stream). */
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_SOURCE_HISTORY_LOST,
                             "%s on %s: the change stream cannot continue: its token is not in "
                             "this collection's stream (gone, or another collection's): server "
                             "error %d (%s): %s",
                             what, ns, server_code, reply_code_name(reply), error->message);
    }
    if (lost) {
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_SOURCE_HISTORY_LOST,
                             "%s on %s: the change stream cannot continue from its position, a "
                             "resync is needed: server error %d (%s): %s",
                             what, ns, server_code, reply_code_name(reply), error->message);
    }
    return fts_error_set(err, FTS_ERROR_MONGO, FTS_MONGO_RETRYABLE,
                         "%s on %s: server error %d (%s): %s", what, ns, server_code,
                         reply_code_name(reply), error->message);
}

/* --- command monitoring: telling libmongoc's own resumes apart --- */

static void on_command_started(const mongoc_apm_command_started_t *event)
{
    fts_mongo_source_t *source = mongoc_apm_command_started_get_context(event);
    if (!source->in_next ||
        strcmp(mongoc_apm_command_started_get_command_name(event), "aggregate") != 0) {
        return;
    }
    /* An aggregate from inside mongoc_change_stream_next: libmongoc resumes the stream. */
    source->resumes++;
    fts_log(FTS_LOG_WARN, COMPONENT, "change stream on %s interrupted (%s); libmongoc resumes it",
            source->ns, source->last_failure[0] ? source->last_failure : "cursor lost");
    source->last_failure[0] = '\0';
}

static void on_command_failed(const mongoc_apm_command_failed_t *event)
{
    fts_mongo_source_t *source = mongoc_apm_command_failed_get_context(event);
    if (!source->in_next) {
        return;
    }
    bson_error_t error;
    mongoc_apm_command_failed_get_error(event, &error);
    snprintf(source->last_failure, sizeof source->last_failure, "%.40s failed: %.200s",
             mongoc_apm_command_failed_get_command_name(event), error.message);
}

/* --- making and ending a source --- */

static bool check_name(const char *what, const char *name, const char *forbidden, fts_error_t *err)
{
    if (!name || !*name) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                             "the MongoDB %s name is empty", what);
    }
    size_t bad = strcspn(name, forbidden);
    if (name[bad] != '\0') {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "the MongoDB %s name \"%s\" contains '%c', which MongoDB does not "
                             "allow there",
                             what, name, name[bad]);
    }
    return true;
}

static bool check_options(const char *database, const char *collection,
                          const fts_mongo_source_options_t *options, fts_error_t *err)
{
    /* Database names may not contain /\. "$*<>:|? or spaces; collection names no '$'. */
    if (!check_name("database", database, "/\\. \"$*<>:|?", err)) {
        return false;
    }
    if (options->scope == FTS_SCOPE_COLLECTION) {
        if (!check_name("collection", collection, "$", err)) {
            return false;
        }
        if (options->collections && options->collections[0]) {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "a collection filter is for a database-wide change stream; "
                                 "this source follows the collection %s.%s",
                                 database, collection);
        }
    } else if (options->scope == FTS_SCOPE_DATABASE) {
        if (collection) {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "a database-wide source on %s takes its collections from the "
                                 "collection filter, not the collection \"%s\"",
                                 database, collection);
        }
        for (size_t i = 0; options->collections && options->collections[i]; i++) {
            if (!check_name("collection", options->collections[i], "$", err)) {
                return false;
            }
        }
    } else {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "unknown change stream scope %d", (int)options->scope);
    }
    if ((unsigned)options->full_document > FTS_FULL_DOCUMENT_REQUIRED) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "unknown fullDocument mode %d", (int)options->full_document);
    }
    if ((unsigned)options->full_document_before_change > FTS_PRE_IMAGES_REQUIRED) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "unknown fullDocumentBeforeChange mode %d",
                             (int)options->full_document_before_change);
    }
    if (options->batch_size < 0 || options->scan_batch_size < 0) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "batch sizes must not be negative (change stream %d, scan %d)",
                             (int)options->batch_size, (int)options->scan_batch_size);
    }
    if (options->max_await_time_ms < 0) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "maxAwaitTimeMS must not be negative (%lld)",
                             (long long)options->max_await_time_ms);
    }
    return true;
}

/* {pipeline: [{$match: {$or: [{ns.coll: {$in: names}}, {to.coll: {$in: names}},
 *                             {operationType: {$in: [dropDatabase, invalidate]}}]}}]} */
static void build_collection_filter(char **names, bson_t *pipeline)
{
    bson_t stages, stage, match, or, clause, in;
    const char *paths[] = {"ns.coll", "to.coll"};
    char key[16];
    const char *k;

    BSON_APPEND_ARRAY_BEGIN(pipeline, "pipeline", &stages);
    BSON_APPEND_DOCUMENT_BEGIN(&stages, "0", &stage);
    BSON_APPEND_DOCUMENT_BEGIN(&stage, "$match", &match);
    BSON_APPEND_ARRAY_BEGIN(&match, "$or", & or);
    for (uint32_t p = 0; p < 2; p++) {
        bson_uint32_to_string(p, &k, key, sizeof key);
        BSON_APPEND_DOCUMENT_BEGIN(& or, k, &clause);
        bson_t field;
        BSON_APPEND_DOCUMENT_BEGIN(&clause, paths[p], &field);
        BSON_APPEND_ARRAY_BEGIN(&field, "$in", &in);
        for (uint32_t i = 0; names[i]; i++) {
            bson_uint32_to_string(i, &k, key, sizeof key);
            BSON_APPEND_UTF8(&in, k, names[i]);
        }
        bson_append_array_end(&field, &in);
        bson_append_document_end(&clause, &field);
        bson_append_document_end(& or, &clause);
    }
    BSON_APPEND_DOCUMENT_BEGIN(& or, "2", &clause);
    bson_t field;
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "operationType", &field);
    BSON_APPEND_ARRAY_BEGIN(&field, "$in", &in);
    BSON_APPEND_UTF8(&in, "0", "dropDatabase");
    BSON_APPEND_UTF8(&in, "1", "invalidate");
    bson_append_array_end(&field, &in);
    bson_append_document_end(&clause, &field);
    bson_append_document_end(& or, &clause);
    bson_append_array_end(&match, & or);
    bson_append_document_end(&stage, &match);
    bson_append_document_end(&stages, &stage);
    bson_append_array_end(pipeline, &stages);
}

/* Bounds every call by options->call_timeout_ms where the URI says nothing (see the option). */
static void apply_call_timeout(mongoc_uri_t *parsed, const fts_mongo_source_options_t *options)
{
    if (options->call_timeout_ms <= 0) {
        return;
    }
    int64_t await_ms = options->max_await_time_ms > 0 ? options->max_await_time_ms
                                                      : FTS_MONGO_DEFAULT_MAX_AWAIT_TIME_MS;
    int64_t timeout = options->call_timeout_ms;
    if (timeout < await_ms + 1000) {
        timeout = await_ms + 1000;
    }
    if (timeout > INT32_MAX) {
        timeout = INT32_MAX;
    }
    int32_t bound = (int32_t)timeout;
    if (!mongoc_uri_has_option(parsed, MONGOC_URI_SOCKETTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_SOCKETTIMEOUTMS, bound);
    }
    if (!mongoc_uri_has_option(parsed, MONGOC_URI_SERVERSELECTIONTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, bound);
    }
    if (!mongoc_uri_has_option(parsed, MONGOC_URI_CONNECTTIMEOUTMS) &&
        bound < MONGOC_DEFAULT_CONNECTTIMEOUTMS) {
        mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_CONNECTTIMEOUTMS, bound);
    }
}

fts_mongo_source_t *fts_mongo_source_new(const char *uri, const char *database,
                                         const char *collection,
                                         const fts_mongo_source_options_t *options,
                                         fts_error_t *err)
{
    fts_mongo_source_t *source = NULL;
    mongoc_uri_t *parsed = NULL;
    fts_mongo_source_options_t defaults;

    fts_mongo_init();
    if (!options) {
        fts_mongo_source_options_init(&defaults);
        options = &defaults;
    }
    if (!uri) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING, "no MongoDB URI given");
        goto cleanup;
    }
    if (!check_options(database, collection, options, err)) {
        goto cleanup;
    }
    source = bson_malloc0(sizeof *source);
    bson_init(&source->pipeline);
    bson_init(&source->invalidate_token);
    bson_init(&source->assembling);
    bson_init(&source->held_token);
    bson_init(&source->whole);
    bson_init(&source->opened_token);
    /* Checks the URI, masks it for messages and registers its password as a log secret. */
    if (!fts_mongo_uri_check(uri, &source->masked_uri, err)) {
        goto fail;
    }
    bson_error_t error;
    parsed = mongoc_uri_new_with_error(uri, &error);
    if (!parsed) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID, "invalid MongoDB URI %s",
                      source->masked_uri);
        goto fail;
    }
    if (!mongoc_uri_get_appname(parsed)) {
        mongoc_uri_set_appname(parsed, "ftsync");
    }
    apply_call_timeout(parsed, options);
    source->client = mongoc_client_new_from_uri_with_error(parsed, &error);
    if (!source->client) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "cannot make a MongoDB client for %s: %s", source->masked_uri, error.message);
        goto fail;
    }
    mongoc_client_set_error_api(source->client, MONGOC_ERROR_API_VERSION_2);
    mongoc_apm_callbacks_t *callbacks = mongoc_apm_callbacks_new();
    mongoc_apm_set_command_started_cb(callbacks, on_command_started);
    mongoc_apm_set_command_failed_cb(callbacks, on_command_failed);
    mongoc_client_set_apm_callbacks(source->client, callbacks, source);
    mongoc_apm_callbacks_destroy(callbacks);

    source->options = *options;
    source->options.collections = NULL;
    if (source->options.max_await_time_ms == 0) {
        source->options.max_await_time_ms = FTS_MONGO_DEFAULT_MAX_AWAIT_TIME_MS;
    }
    if (source->options.scan_batch_size == 0) {
        source->options.scan_batch_size = FTS_MONGO_DEFAULT_SCAN_BATCH_SIZE;
    }
    source->database = mongoc_client_get_database(source->client, database);
    if (options->scope == FTS_SCOPE_COLLECTION) {
        source->collection = mongoc_client_get_collection(source->client, database, collection);
        source->ns = bson_strdup_printf("%s.%s", database, collection);
    } else {
        source->ns = bson_strdup(database);
        size_t count = 0;
        while (options->collections && options->collections[count]) {
            count++;
        }
        if (count > 0) {
            source->collections = bson_malloc0((count + 1) * sizeof *source->collections);
            for (size_t i = 0; i < count; i++) {
                source->collections[i] = bson_strdup(options->collections[i]);
            }
            build_collection_filter(source->collections, &source->pipeline);
        }
    }
    goto cleanup;

fail:
    fts_mongo_source_destroy(source);
    source = NULL;
cleanup:
    mongoc_uri_destroy(parsed);
    return source;
}

/* Ends the stream and what belongs to it, keeping what the source learnt about large events
 * and where it was opened (for reopen_here). */
static void end_stream(fts_mongo_source_t *source)
{
    mongoc_change_stream_destroy(source->stream);
    source->stream = NULL;
    source->invalidated = false;
    source->start_after_open = false;
    source->opened_with_token = false;
    bson_reinit(&source->invalidate_token);
    source->last_failure[0] = '\0';
    source->fragment_of = 0;
    source->fragment_next = 0;
    source->fragment_idle_rounds = 0;
    bson_reinit(&source->assembling);
}

void fts_mongo_source_close(fts_mongo_source_t *source)
{
    if (!source) {
        return;
    }
    end_stream(source);
    source->mode = LARGE_NORMAL;
    source->reopen_normal = false;
    source->projected_level = 0;
    source->probe_left = 0;
    bson_reinit(&source->whole);
}

void fts_mongo_source_destroy(fts_mongo_source_t *source)
{
    if (!source) {
        return;
    }
    fts_mongo_source_close(source);
    mongoc_collection_destroy(source->collection);
    mongoc_database_destroy(source->database);
    mongoc_client_destroy(source->client);
    for (size_t i = 0; source->collections && source->collections[i]; i++) {
        bson_free(source->collections[i]);
    }
    bson_free(source->collections);
    bson_destroy(&source->pipeline);
    bson_destroy(&source->invalidate_token);
    bson_destroy(&source->assembling);
    bson_destroy(&source->held_token);
    bson_destroy(&source->whole);
    bson_destroy(&source->opened_token);
    bson_free(source->masked_uri);
    bson_free(source->ns);
    bson_free(source);
}

/* --- the change stream --- */

/* A resume token the server could accept: a document with a _data string (MongoDB 4.2 and
 * later refuse anything else with 40647; the double too). NULL when it is, else what is
 * wrong. */
static const char *token_problem(const bson_t *token)
{
    bson_iter_t iter;
    if (!token || bson_empty(token)) {
        return "it is empty";
    }
    if (!bson_iter_init_find(&iter, token, "_data")) {
        return "it has no _data field";
    }
    if (!BSON_ITER_HOLDS_UTF8(&iter)) {
        return "its _data is not a string";
    }
    return NULL;
}

static bool fail_bad_token(fts_mongo_source_t *source, const bson_t *token, const char *problem,
                           fts_error_t *err)
{
    char *json = token ? bson_as_canonical_extended_json(token, NULL) : NULL;
    fts_error_set(err, FTS_ERROR_MONGO, FTS_SOURCE_HISTORY_LOST,
                  "opening the change stream on %s: the saved position %.*s is not a resume "
                  "token (%s); a resync is needed",
                  source->ns, TOKEN_SHOWN_MAX, json ? json : "(none)", problem);
    bson_free(json);
    return false;
}

static bool handle_large_failure(fts_mongo_source_t *source, fts_error_t *err);

/* An event's operationType, "?" when it has none. */
static const char *event_operation(const bson_t *event)
{
    bson_iter_t iter;
    if (bson_iter_init_find(&iter, event, "operationType") && BSON_ITER_HOLDS_UTF8(&iter)) {
        return bson_iter_utf8(&iter, NULL);
    }
    return "?";
}

/* The pipeline for the current mode: the source's own stages, then in LARGE_PROJECTED a $project
 * without the event's large parts, or else the split stage once one was needed (it must come
 * last). MongoDB manual, $changeStreamSplitLargeEvent: "Use a $project stage to include only
 * the fields necessary" is the documented way to keep an event under 16 MB. */
static void build_pipeline(const fts_mongo_source_t *source, bson_t *out)
{
    bson_t stages, stage, spec;
    bson_iter_t iter, old;
    uint32_t n = 0;
    char key[16];
    const char *k;

    BSON_APPEND_ARRAY_BEGIN(out, "pipeline", &stages);
    if (bson_iter_init_find(&iter, &source->pipeline, "pipeline") &&
        bson_iter_recurse(&iter, &old)) {
        while (bson_iter_next(&old)) {
            bson_uint32_to_string(n++, &k, key, sizeof key);
            bson_append_iter(&stages, k, -1, &old);
        }
    }
    if (source->mode == LARGE_PROJECTED) {
        bson_uint32_to_string(n++, &k, key, sizeof key);
        BSON_APPEND_DOCUMENT_BEGIN(&stages, k, &stage);
        BSON_APPEND_DOCUMENT_BEGIN(&stage, "$project", &spec);
        BSON_APPEND_INT32(&spec, "fullDocument", 0);
        BSON_APPEND_INT32(&spec, "updateDescription", 0);
        if (source->projected_level >= 2) {
            BSON_APPEND_INT32(&spec, "fullDocumentBeforeChange", 0);
        }
        bson_append_document_end(&stage, &spec);
        bson_append_document_end(&stages, &stage);
    } else if (source->split_stage) {
        bson_uint32_to_string(n++, &k, key, sizeof key);
        BSON_APPEND_DOCUMENT_BEGIN(&stages, k, &stage);
        BSON_APPEND_DOCUMENT_BEGIN(&stage, "$changeStreamSplitLargeEvent", &spec);
        bson_append_document_end(&stage, &spec);
        bson_append_document_end(&stages, &stage);
    }
    bson_append_array_end(out, &stages);
}

/* Opens the stream (none may be open) from `from` (0: now; token for the token kinds, time
 * for START_AT_TIME) in the current mode. */
static bool open_stream(fts_mongo_source_t *source, fts_source_from_t from, const bson_t *token,
                        fts_timestamp_t time, fts_error_t *err)
{
    bson_t opts = BSON_INITIALIZER;
    bson_t pipeline = BSON_INITIALIZER;

    source->server_code = 0;
    /* The settings' names are the server's option values (config.c). */
    BSON_APPEND_UTF8(&opts, "fullDocument", fts_full_document_names[source->options.full_document]);
    if (source->options.full_document_before_change != FTS_PRE_IMAGES_OFF) {
        BSON_APPEND_UTF8(&opts, "fullDocumentBeforeChange",
                         fts_pre_images_names[source->options.full_document_before_change]);
    }
    if (source->mode != LARGE_NORMAL) {
        /* One event per batch: a BSONObjectTooLarge then fails the batch of that event alone,
         * and the token before it is the token right before the large event. */
        BSON_APPEND_INT32(&opts, "batchSize", 1);
    } else if (source->options.batch_size > 0) {
        BSON_APPEND_INT32(&opts, "batchSize", source->options.batch_size);
    }
    BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", source->options.max_await_time_ms);
    switch ((int)from) {
    case 0: /* from now on */
        break;
    case FTS_SOURCE_RESUME_AFTER:
    case FTS_SOURCE_START_AFTER:
        BSON_APPEND_DOCUMENT(&opts, from == FTS_SOURCE_RESUME_AFTER ? "resumeAfter" : "startAfter",
                             token);
        source->opened_with_token = true;
        source->start_after_open = from == FTS_SOURCE_START_AFTER;
        break;
    case FTS_SOURCE_START_AT_TIME:
        BSON_APPEND_TIMESTAMP(&opts, "startAtOperationTime", time.seconds, time.increment);
        break;
    }
    build_pipeline(source, &pipeline);
    if (source->collection) {
        source->stream = mongoc_collection_watch(source->collection, &pipeline, &opts);
    } else {
        source->stream = mongoc_database_watch(source->database, &pipeline, &opts);
    }
    bson_destroy(&pipeline);
    bson_destroy(&opts);
    bson_error_t error;
    const bson_t *reply = NULL;
    if (mongoc_change_stream_error_document(source->stream, &error, &reply)) {
        fail_from_mongoc(source, "opening the change stream", source->ns, &error, reply,
                         source->opened_with_token ? POSITION_TOKEN_OPEN : POSITION_STREAM, err);
        end_stream(source);
        return false;
    }
    return true;
}

/* Reopens the stream where it stands now, in the current mode: at libmongoc's token, which
 * becomes the position to come back to should this open fail too, or where the stream was
 * last opened when libmongoc has none. */
static bool reopen_here(fts_mongo_source_t *source, fts_error_t *err)
{
    const bson_t *current =
        source->stream ? mongoc_change_stream_get_resume_token(source->stream) : NULL;
    if (current) {
        bson_reinit(&source->opened_token);
        bson_concat(&source->opened_token, current);
        /* startAfter takes any token, also an invalidate's (see the top). */
        source->opened_from =
            source->start_after_open ? FTS_SOURCE_START_AFTER : FTS_SOURCE_RESUME_AFTER;
    }
    end_stream(source);
    return open_stream(source, source->opened_from, &source->opened_token, source->opened_time,
                       err);
}

bool fts_mongo_source_open(fts_mongo_source_t *source, const fts_source_position_t *position,
                           fts_error_t *err)
{
    bool ok = false;
    bson_t *token = NULL;

    fts_mongo_source_close(source);
    source->server_code = 0;
    source->opened_from = position ? position->from : (fts_source_from_t)0;
    bson_reinit(&source->opened_token);
    source->opened_time = (fts_timestamp_t){0, 0};

    switch (position ? position->from : 0) {
    case 0: /* no position: from now on */
        break;
    case FTS_SOURCE_RESUME_AFTER:
    case FTS_SOURCE_START_AFTER: {
        token = fts_mongo_token_from_json(position->token, err);
        if (!token) {
            /* A saved text that is no JSON object: no resume is possible, resync. */
            err->domain = FTS_ERROR_MONGO;
            err->code = FTS_SOURCE_HISTORY_LOST;
            goto cleanup;
        }
        const char *problem = token_problem(token);
        if (problem) {
            fail_bad_token(source, token, problem, err);
            goto cleanup;
        }
        bson_concat(&source->opened_token, token);
        break;
    }
    case FTS_SOURCE_START_AT_TIME:
        /* libmongoc takes a zero timestamp for "not given" and would start from now. */
        if (position->time.seconds == 0 && position->time.increment == 0) {
            fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                          "opening the change stream on %s: startAtOperationTime 0:0 is not a "
                          "cluster time",
                          source->ns);
            goto cleanup;
        }
        source->opened_time = position->time;
        break;
    default:
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "opening the change stream on %s: unknown start position %d", source->ns,
                      (int)position->from);
        goto cleanup;
    }

    ok = open_stream(source, source->opened_from, &source->opened_token, source->opened_time, err);
    /* The first batch may already hold an event over 16 MB, or the server may refuse the split
     * stage: handle_large_failure reopens as it must. */
    if (!ok && handle_large_failure(source, err)) {
        ok = true;
    }

cleanup:
    bson_destroy(token);
    return ok;
}

static bool is_invalidate(const bson_t *event)
{
    bson_iter_t iter;
    return bson_iter_init_find(&iter, event, "operationType") && BSON_ITER_HOLDS_UTF8(&iter) &&
           strcmp(bson_iter_utf8(&iter, NULL), "invalidate") == 0;
}

/* Adds a fragment of a split event to the one being reassembled. *done: it was the last, and
 * source->whole holds the event with the last fragment's _id (so its token, the position the
 * caller saves, is past the whole event and never inside it). */
static bool add_fragment(fts_mongo_source_t *source, const bson_t *fragment, bool *done,
                         fts_error_t *err)
{
    bson_iter_t iter, split;
    int32_t number = 0, of = 0;
    *done = false;
    if (bson_iter_init_find(&iter, fragment, "splitEvent") && bson_iter_recurse(&iter, &split)) {
        while (bson_iter_next(&split)) {
            if (strcmp(bson_iter_key(&split), "fragment") == 0 && BSON_ITER_HOLDS_INT32(&split)) {
                number = bson_iter_int32(&split);
            } else if (strcmp(bson_iter_key(&split), "of") == 0 && BSON_ITER_HOLDS_INT32(&split)) {
                of = bson_iter_int32(&split);
            }
        }
    }
    if (number == 1) {
        bson_reinit(&source->assembling);
        source->fragment_of = of;
        source->fragment_next = 1;
    }
    if (of < 1 || number < 1 || number > of || number != source->fragment_next ||
        of != source->fragment_of) {
        int32_t expected = source->fragment_next;
        source->fragment_of = 0;
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_MONGO_RETRYABLE,
                             "reading the change stream on %s: got fragment %d of %d of a split "
                             "event where fragment %d was due",
                             source->ns, (int)number, (int)of, (int)expected);
    }
    bson_iter_init(&iter, fragment);
    while (bson_iter_next(&iter)) {
        if (strcmp(bson_iter_key(&iter), "_id") != 0 &&
            strcmp(bson_iter_key(&iter), "splitEvent") != 0) {
            bson_append_iter(&source->assembling, NULL, 0, &iter);
        }
    }
    source->fragment_next++;
    if (number < of) {
        return true;
    }
    bson_reinit(&source->whole);
    bson_iter_init_find(&iter, fragment, "_id"); /* libmongoc made sure there is one */
    bson_append_iter(&source->whole, "_id", 3, &iter);
    bson_concat(&source->whole, &source->assembling);
    bson_reinit(&source->assembling);
    source->fragment_of = 0;
    source->split_events++;
    *done = true;
    fts_log(FTS_LOG_INFO, COMPONENT,
            "change stream on %s: the %s event over 16 MB came in %d fragments "
            "($changeStreamSplitLargeEvent); reassembled it (%u bytes) as one event",
            source->ns, event_operation(&source->whole), (int)of, source->whole.len);
    return true;
}

/* Builds source->whole from an event read without its large parts (LARGE_PROJECTED): the
 * document is read again by _id, as updateLookup would, and stands as fullDocument (null when
 * it is gone) wherever the stream would have carried one. */
static bool reread_event(fts_mongo_source_t *source, const bson_t *event, fts_error_t *err)
{
    bson_iter_t iter, ns, key;
    const char *op = event_operation(event);
    const char *coll_name = NULL;
    bool wants_document =
        strcmp(op, "insert") == 0 || strcmp(op, "replace") == 0 || strcmp(op, "update") == 0;
    bool ok = false;
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, read_concern;
    mongoc_collection_t *collection = NULL;
    mongoc_cursor_t *cursor = NULL;
    const bson_t *found = NULL;
    char *id_json = NULL;

    bson_reinit(&source->whole);
    bson_concat(&source->whole, event);
    if (bson_iter_init_find(&iter, event, "documentKey") && bson_iter_recurse(&iter, &key) &&
        bson_iter_find(&key, "_id")) {
        bson_t id_doc = BSON_INITIALIZER;
        bson_append_iter(&id_doc, "_id", 3, &key);
        id_json = bson_as_relaxed_extended_json(&id_doc, NULL);
        if (wants_document) {
            bson_append_iter(&filter, "_id", 3, &key);
        }
        bson_destroy(&id_doc);
    }
    if (bson_iter_init_find(&iter, event, "ns") && bson_iter_recurse(&iter, &ns) &&
        bson_iter_find(&ns, "coll") && BSON_ITER_HOLDS_UTF8(&ns)) {
        coll_name = bson_iter_utf8(&ns, NULL);
    }
    if (wants_document) {
        if (!coll_name || bson_empty(&filter)) {
            fts_error_set(err, FTS_ERROR_MONGO, FTS_MONGO_RETRYABLE,
                          "reading the change stream on %s: a large %s event without ns.coll or "
                          "documentKey._id cannot be re-read",
                          source->ns, op);
            goto cleanup;
        }
        collection = mongoc_database_get_collection(source->database, coll_name);
        BSON_APPEND_INT32(&opts, "limit", 1);
        BSON_APPEND_DOCUMENT_BEGIN(&opts, "readConcern", &read_concern);
        BSON_APPEND_UTF8(&read_concern, "level", "majority");
        bson_append_document_end(&opts, &read_concern);
        cursor = mongoc_collection_find_with_opts(collection, &filter, &opts, NULL);
        if (!mongoc_cursor_next(cursor, &found)) {
            bson_error_t error;
            const bson_t *reply = NULL;
            if (mongoc_cursor_error_document(cursor, &error, &reply)) {
                fail_from_mongoc(source, "re-reading the document of a large change event",
                                 source->ns, &error, reply, POSITION_NONE, err);
                goto cleanup;
            }
            found = NULL;
        }
        if (found) {
            BSON_APPEND_DOCUMENT(&source->whole, "fullDocument", found);
        } else {
            BSON_APPEND_NULL(&source->whole, "fullDocument");
        }
    }
    source->reread_events++;
    fts_log(FTS_LOG_WARN, COMPONENT,
            "change stream on %s: the %s event of documentKey %s is over 16 MB and the server "
            "cannot split it (no $changeStreamSplitLargeEvent before MongoDB 6.0.9): read it "
            "without fullDocument and updateDescription%s, its document re-read by _id (%s)",
            source->ns, op, id_json ? id_json : "?",
            source->projected_level >= 2 ? " and without its pre-image" : "",
            !wants_document ? "not needed"
            : found         ? "found"
                            : "gone: fullDocument null");
    ok = true;

cleanup:
    bson_free(id_json);
    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(collection);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return ok;
}

/* After an open or read failed (err filled by fail_from_mongoc): when it is about an event over
 * 16 MB, or the server refusing the split stage, takes the next step and reopens (true; the
 * read goes on); else false, err untouched. The steps: add $changeStreamSplitLargeEvent; when
 * the server does not know it (40324), read one event per batch until the large one fails
 * again, then read that one without its large parts (then also without its pre-image), re-read
 * its document and go back to normal reading (next()). */
static bool handle_large_failure(fts_mongo_source_t *source, fts_error_t *err)
{
    if (source->server_code == CODE_UNRECOGNIZED_STAGE && source->split_stage) {
        source->split_stage = false;
        source->split_unsupported = true;
        source->mode = LARGE_PROBE;
        source->probe_left = PROBE_EVENTS;
        fts_log(FTS_LOG_WARN, COMPONENT,
                "change stream on %s: the server does not know $changeStreamSplitLargeEvent "
                "(MongoDB before 6.0.9: %s); events over 16 MB will be read without their "
                "images and their documents re-read by _id",
                source->ns, err->message);
        return reopen_here(source, err) || handle_large_failure(source, err);
    }
    if (source->server_code != CODE_BSON_OBJECT_TOO_LARGE) {
        return false;
    }
    if (!source->split_unsupported && !source->split_stage) {
        source->split_stage = true;
        fts_log(FTS_LOG_INFO, COMPONENT,
                "change stream on %s: an event is over 16 MB (%s); reopening at the last "
                "position with $changeStreamSplitLargeEvent to read it in fragments",
                source->ns, err->message);
        return reopen_here(source, err) || handle_large_failure(source, err);
    }
    if (!source->split_unsupported) {
        return false; /* split, and still too large: nothing more to try */
    }
    switch (source->mode) {
    case LARGE_NORMAL:
        source->mode = LARGE_PROBE;
        source->probe_left = PROBE_EVENTS;
        break;
    case LARGE_PROBE:
        source->mode = LARGE_PROJECTED;
        source->projected_level = 1;
        break;
    case LARGE_PROJECTED:
        if (source->projected_level >= 2) {
            return false;
        }
        source->projected_level = 2;
        break;
    }
    return reopen_here(source, err) || handle_large_failure(source, err);
}

bool fts_mongo_source_next(fts_mongo_source_t *source, fts_source_next_t *what,
                           const bson_t **event, fts_error_t *err)
{
    *event = NULL;
    *what = FTS_SOURCE_NEXT_IDLE;
    if (!source->stream) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "the change stream on %s is not open", source->ns);
    }
    if (source->invalidated) {
        /* The server closed the cursor with the invalidate; libmongoc would only say "no
         * more" at once, again and again. */
        *what = FTS_SOURCE_NEXT_INVALIDATED;
        return true;
    }
    if (source->reopen_normal) {
        /* Past the large event (or done probing): back to the configured batches. */
        source->reopen_normal = false;
        source->mode = LARGE_NORMAL;
        source->projected_level = 0;
        /* Idle after the reopen, read on at the next call. */
        return reopen_here(source, err) || handle_large_failure(source, err);
    }
    /* One read per call: the caller gets control back between the steps of a large event
     * (a reopen, each fragment), to renew its lease and save the (unchanged) position. */
    if (source->split_stage && source->fragment_of == 0) {
        /* The position to report while a split event is being reassembled: the one before
         * its first fragment. */
        const bson_t *current = mongoc_change_stream_get_resume_token(source->stream);
        source->held_valid = current != NULL;
        bson_reinit(&source->held_token);
        if (current) {
            bson_concat(&source->held_token, current);
        }
    }
    const bson_t *doc = NULL;
    source->in_next = true;
    bool got = mongoc_change_stream_next(source->stream, &doc);
    source->in_next = false;
    if (got) {
        bson_iter_t iter;
        if (bson_iter_init_find(&iter, doc, "splitEvent")) {
            bool done;
            source->fragment_idle_rounds = 0;
            if (!add_fragment(source, doc, &done, err)) {
                return false;
            }
            if (!done) {
                return true; /* idle: the position stays before the event */
            }
            doc = &source->whole;
        } else if (source->fragment_of > 0) {
            source->fragment_of = 0;
            return fts_error_set(err, FTS_ERROR_MONGO, FTS_MONGO_RETRYABLE,
                                 "reading the change stream on %s: a split event ended after %d "
                                 "of its %d fragments",
                                 source->ns, (int)source->fragment_next - 1,
                                 (int)source->fragment_of);
        } else if (source->mode == LARGE_PROJECTED) {
            if (!reread_event(source, doc, err)) {
                return false;
            }
            doc = &source->whole;
            source->reopen_normal = true;
        } else if (source->mode == LARGE_PROBE && --source->probe_left == 0) {
            source->reopen_normal = true;
        }
        if (is_invalidate(doc)) {
            uint32_t len;
            const uint8_t *data;
            bson_t id;
            /* libmongoc made sure the event has a document _id. */
            if (bson_iter_init_find(&iter, doc, "_id") && BSON_ITER_HOLDS_DOCUMENT(&iter)) {
                bson_iter_document(&iter, &len, &data);
                if (bson_init_static(&id, data, len)) {
                    bson_destroy(&source->invalidate_token);
                    bson_copy_to(&id, &source->invalidate_token);
                    source->invalidated = true;
                }
            }
            fts_log(FTS_LOG_INFO, COMPONENT,
                    "change stream on %s invalidated (the collection or database was dropped or "
                    "renamed)",
                    source->ns);
        }
        /* Only a whole event ends the startAfter window (a fragment's held token may still
         * be the invalidate's). */
        source->start_after_open = false;
        *what = FTS_SOURCE_NEXT_EVENT;
        *event = doc;
        return true;
    }
    bson_error_t error;
    const bson_t *reply = NULL;
    if (mongoc_change_stream_error_document(source->stream, &error, &reply)) {
        bool token_in_play = source->opened_with_token ||
                             mongoc_change_stream_get_resume_token(source->stream) != NULL;
        fail_from_mongoc(source, "reading the change stream", source->ns, &error, reply,
                         token_in_play ? POSITION_TOKEN : POSITION_STREAM, err);
        source->fragment_of = 0;
        /* A large event: reopened as it must be (idle meanwhile), or the error stands. */
        return handle_large_failure(source, err);
    }
    if (source->fragment_of > 0 && ++source->fragment_idle_rounds >= FRAGMENT_WAIT_ROUNDS) {
        /* The server sends a split event's fragments back to back. */
        source->fragment_of = 0;
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_MONGO_RETRYABLE,
                             "reading the change stream on %s: the rest of a split event did not "
                             "come",
                             source->ns);
    }
    if (source->mode == LARGE_PROBE && source->fragment_of == 0) {
        source->reopen_normal = true; /* caught up: the large event is gone */
    }
    return true;
}

const bson_t *fts_mongo_source_resume_token(fts_mongo_source_t *source)
{
    if (source->invalidated) {
        return &source->invalidate_token;
    }
    if (source->fragment_of > 0) {
        /* Never a fragment's token: the event is not whole yet. */
        return source->held_valid ? &source->held_token : NULL;
    }
    return source->stream ? mongoc_change_stream_get_resume_token(source->stream) : NULL;
}

char *fts_mongo_source_resume_token_json(fts_mongo_source_t *source)
{
    const bson_t *token = fts_mongo_source_resume_token(source);
    return token ? bson_as_canonical_extended_json(token, NULL) : NULL;
}

bool fts_mongo_source_token_needs_start_after(const fts_mongo_source_t *source)
{
    return source->invalidated || source->start_after_open;
}

uint64_t fts_mongo_source_resume_count(const fts_mongo_source_t *source)
{
    return source->resumes;
}

void fts_mongo_source_large_events(const fts_mongo_source_t *source, uint64_t *split,
                                   uint64_t *reread)
{
    *split = source->split_events;
    *reread = source->reread_events;
}

int fts_mongo_source_server_code(const fts_mongo_source_t *source)
{
    return source->server_code;
}

bson_t *fts_mongo_token_from_json(const char *json, fts_error_t *err)
{
    if (!json) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING, "no resume token given");
        return NULL;
    }
    const char *start = json + strspn(json, " \t\r\n");
    if (*start != '{') {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                      "the resume token \"%.*s\" is not a JSON object", TOKEN_SHOWN_MAX, json);
        return NULL;
    }
    bson_error_t error;
    bson_t *token = bson_new_from_json((const uint8_t *)json, -1, &error);
    if (!token) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                      "the resume token \"%.*s\" is not valid extended JSON: %s", TOKEN_SHOWN_MAX,
                      json, error.message);
    }
    return token;
}

/* --- cluster time --- */

bool fts_mongo_source_cluster_time(fts_mongo_source_t *source, fts_timestamp_t *now,
                                   fts_error_t *err)
{
    bool ok = false;
    bson_t command = BSON_INITIALIZER;
    bson_t opts = BSON_INITIALIZER;
    bson_t projection, read_concern;
    bson_t reply;
    bson_error_t error;
    bson_iter_t iter;

    source->server_code = 0;
    /* A one-document majority read. Its operationTime is the majority-committed point: every
     * write at or before it is visible to the scan that follows, which a ping's operationTime
     * (the last applied write, possibly ahead of a write still in flight) does not promise. */
    const char *collection = source->collection    ? mongoc_collection_get_name(source->collection)
                             : source->collections ? source->collections[0]
                                                   : "ftsync";
    BSON_APPEND_UTF8(&command, "find", collection);
    BSON_APPEND_DOCUMENT_BEGIN(&command, "projection", &projection);
    BSON_APPEND_INT32(&projection, "_id", 1);
    bson_append_document_end(&command, &projection);
    BSON_APPEND_INT32(&command, "limit", 1);
    BSON_APPEND_BOOL(&command, "singleBatch", true);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "readConcern", &read_concern);
    BSON_APPEND_UTF8(&read_concern, "level", "majority");
    bson_append_document_end(&opts, &read_concern);
    if (!mongoc_client_read_command_with_opts(source->client,
                                              mongoc_database_get_name(source->database), &command,
                                              NULL, &opts, &reply, &error)) {
        fail_from_mongoc(source, "reading the cluster time (a majority read)", source->ns, &error,
                         &reply, POSITION_NONE, err);
        goto cleanup;
    }
    if (bson_iter_init_find(&iter, &reply, "operationTime") && BSON_ITER_HOLDS_TIMESTAMP(&iter)) {
        bson_iter_timestamp(&iter, &now->seconds, &now->increment);
        ok = true;
        goto cleanup;
    }
    /* Not $clusterTime instead: it may run ahead of what a read can see yet. */
    fts_error_set(err, FTS_ERROR_MONGO, FTS_ERROR_CODE_UNSUPPORTED,
                  "the reply of %s to a majority read on %s has no operationTime: change "
                  "streams need a replica set or a sharded cluster",
                  source->masked_uri, source->ns);

cleanup:
    bson_destroy(&reply);
    bson_destroy(&opts);
    bson_destroy(&command);
    return ok;
}

/* --- topology --- */

fts_mongo_topology_t fts_mongo_hello_topology(const bson_t *hello, const char **set_name)
{
    bson_iter_t iter;
    if (set_name) {
        *set_name = NULL;
    }
    if (bson_iter_init_find(&iter, hello, "setName") && BSON_ITER_HOLDS_UTF8(&iter)) {
        if (set_name) {
            *set_name = bson_iter_utf8(&iter, NULL);
        }
        return FTS_MONGO_REPLICA_SET;
    }
    /* mongos says so in msg (the manual's hello page: "isdbgrid"); it has no setName. */
    if (bson_iter_init_find(&iter, hello, "msg") && BSON_ITER_HOLDS_UTF8(&iter) &&
        strcmp(bson_iter_utf8(&iter, NULL), "isdbgrid") == 0) {
        return FTS_MONGO_SHARDED;
    }
    return FTS_MONGO_STANDALONE;
}

bool fts_mongo_source_topology(fts_mongo_source_t *source, char *description, size_t size,
                               fts_error_t *err)
{
    bool ok = false;
    bson_t command = BSON_INITIALIZER;
    bson_t reply;
    bson_error_t error;

    source->server_code = 0;
    BSON_APPEND_INT32(&command, "hello", 1);
    if (!mongoc_client_read_command_with_opts(source->client, "admin", &command, NULL, NULL, &reply,
                                              &error)) {
        fail_from_mongoc(source, "hello", source->ns, &error, &reply, POSITION_NONE, err);
        goto cleanup;
    }
    const char *set_name = NULL;
    switch (fts_mongo_hello_topology(&reply, &set_name)) {
    case FTS_MONGO_REPLICA_SET:
        snprintf(description, size, "replica set %s", set_name);
        ok = true;
        break;
    case FTS_MONGO_SHARDED:
        snprintf(description, size, "sharded cluster (mongos)");
        ok = true;
        break;
    case FTS_MONGO_STANDALONE:
        fts_error_set(err, FTS_ERROR_MONGO, FTS_ERROR_CODE_NOT_REPLICA_SET,
                      "hello on %s (%s): a standalone server (no setName, not a mongos): change "
                      "streams need a replica set or a sharded cluster",
                      source->ns, source->masked_uri);
        break;
    }

cleanup:
    bson_destroy(&reply);
    bson_destroy(&command);
    return ok;
}

/* --- snapshot scan --- */

/* mongod's sort order of BSON types ("canonical types"), with the $type number of each. */
static const struct {
    bson_type_t type;
    int type_number;
    int canonical;
} type_order[] = {
    {BSON_TYPE_MINKEY, -1, -1},     {BSON_TYPE_UNDEFINED, 6, 0},    {BSON_TYPE_NULL, 10, 5},
    {BSON_TYPE_DOUBLE, 1, 10},      {BSON_TYPE_INT32, 16, 10},      {BSON_TYPE_INT64, 18, 10},
    {BSON_TYPE_DECIMAL128, 19, 10}, {BSON_TYPE_UTF8, 2, 15},        {BSON_TYPE_SYMBOL, 14, 15},
    {BSON_TYPE_DOCUMENT, 3, 20},    {BSON_TYPE_ARRAY, 4, 25},       {BSON_TYPE_BINARY, 5, 30},
    {BSON_TYPE_OID, 7, 35},         {BSON_TYPE_BOOL, 8, 40},        {BSON_TYPE_DATE_TIME, 9, 45},
    {BSON_TYPE_TIMESTAMP, 17, 47},  {BSON_TYPE_REGEX, 11, 50},      {BSON_TYPE_DBPOINTER, 12, 55},
    {BSON_TYPE_CODE, 13, 60},       {BSON_TYPE_CODEWSCOPE, 15, 65}, {BSON_TYPE_MAXKEY, 127, 100},
};

static int canonical_type(bson_type_t type)
{
    for (size_t i = 0; i < sizeof type_order / sizeof type_order[0]; i++) {
        if (type_order[i].type == type) {
            return type_order[i].canonical;
        }
    }
    return 0;
}

/* {_id: {$gt: after}} finds only _ids of after's own type bracket (MongoDB compares across
 * brackets for sorting, not for $gt), so the _ids of brackets that sort later are added:
 * {$or: [{_id: {$gt: after}}, {_id: {$type: [later types]}}]}. */
static void build_scan_filter(const bson_value_t *after_id, bson_t *filter)
{
    bson_t or, clause, condition, types;
    char key[16];
    const char *k;
    int bracket = canonical_type(after_id->value_type);
    uint32_t later = 0;

    BSON_APPEND_ARRAY_BEGIN(filter, "$or", & or);
    BSON_APPEND_DOCUMENT_BEGIN(& or, "0", &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "_id", &condition);
    BSON_APPEND_VALUE(&condition, "$gt", after_id);
    bson_append_document_end(&clause, &condition);
    bson_append_document_end(& or, &clause);
    BSON_APPEND_DOCUMENT_BEGIN(& or, "1", &clause);
    BSON_APPEND_DOCUMENT_BEGIN(&clause, "_id", &condition);
    BSON_APPEND_ARRAY_BEGIN(&condition, "$type", &types);
    for (size_t i = 0; i < sizeof type_order / sizeof type_order[0]; i++) {
        if (type_order[i].canonical > bracket) {
            bson_uint32_to_string(later++, &k, key, sizeof key);
            BSON_APPEND_INT32(&types, k, type_order[i].type_number);
        }
    }
    bson_append_array_end(&condition, &types);
    bson_append_document_end(&clause, &condition);
    bson_append_document_end(& or, &clause);
    bson_append_array_end(filter, & or);

    if (later == 0) {
        /* After a MaxKey nothing sorts later: the plain comparison is all there is. */
        bson_reinit(filter);
        BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &condition);
        BSON_APPEND_VALUE(&condition, "$gt", after_id);
        bson_append_document_end(filter, &condition);
    }
}

fts_mongo_scan_t *fts_mongo_scan_new(fts_mongo_source_t *source, const char *collection,
                                     const bson_value_t *after_id, fts_error_t *err)
{
    fts_mongo_scan_t *scan = NULL;
    bson_t filter = BSON_INITIALIZER;
    bson_t opts = BSON_INITIALIZER;
    bson_t sort;

    if (!collection && !source->collection) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_MISSING,
                      "a snapshot scan of the database %s needs a collection name", source->ns);
        goto cleanup;
    }
    if (collection && !check_name("collection", collection, "$", err)) {
        goto cleanup;
    }
    scan = bson_malloc0(sizeof *scan);
    scan->source = source;
    if (collection) {
        scan->collection = mongoc_database_get_collection(source->database, collection);
    } else {
        scan->collection = mongoc_collection_copy(source->collection);
    }
    scan->ns = bson_strdup_printf("%s.%s", mongoc_database_get_name(source->database),
                                  mongoc_collection_get_name(scan->collection));
    if (after_id) {
        build_scan_filter(after_id, &filter);
    }
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT32(&opts, "batchSize", source->options.scan_batch_size);
    scan->cursor = mongoc_collection_find_with_opts(scan->collection, &filter, &opts, NULL);

cleanup:
    bson_destroy(&filter);
    bson_destroy(&opts);
    return scan;
}

bool fts_mongo_scan_next(fts_mongo_scan_t *scan, const bson_t **doc, fts_error_t *err)
{
    *doc = NULL;
    scan->source->server_code = 0;
    if (mongoc_cursor_next(scan->cursor, doc)) {
        scan->count++;
        return true;
    }
    *doc = NULL;
    bson_error_t error;
    const bson_t *reply = NULL;
    if (mongoc_cursor_error_document(scan->cursor, &error, &reply)) {
        char what[96];
        snprintf(what, sizeof what, "scanning after %llu documents",
                 (unsigned long long)scan->count);
        return fail_from_mongoc(scan->source, what, scan->ns, &error, reply, POSITION_NONE, err);
    }
    return true;
}

uint64_t fts_mongo_scan_count(const fts_mongo_scan_t *scan)
{
    return scan->count;
}

void fts_mongo_scan_destroy(fts_mongo_scan_t *scan)
{
    if (!scan) {
        return;
    }
    mongoc_cursor_destroy(scan->cursor);
    mongoc_collection_destroy(scan->collection);
    bson_free(scan->ns);
    bson_free(scan);
}

/* --- the source port --- */

static bool port_open(void *context, const fts_source_position_t *position, fts_error_t *err)
{
    return fts_mongo_source_open(context, position, err);
}

static void port_close(void *context)
{
    fts_mongo_source_close(context);
}

static bool port_next(void *context, fts_source_next_t *what, const bson_t **event,
                      fts_error_t *err)
{
    return fts_mongo_source_next(context, what, event, err);
}

static char *port_resume_token_json(void *context)
{
    return fts_mongo_source_resume_token_json(context);
}

static bool port_token_needs_start_after(void *context)
{
    return fts_mongo_source_token_needs_start_after(context);
}

static bool port_cluster_time(void *context, fts_timestamp_t *now, fts_error_t *err)
{
    return fts_mongo_source_cluster_time(context, now, err);
}

static void *port_scan_new(void *context, const char *collection, const bson_value_t *after_id,
                           fts_error_t *err)
{
    return fts_mongo_scan_new(context, collection, after_id, err);
}

static bool port_scan_next(void *context, void *scan, const bson_t **doc, fts_error_t *err)
{
    (void)context;
    return fts_mongo_scan_next(scan, doc, err);
}

static void port_scan_destroy(void *context, void *scan)
{
    (void)context;
    fts_mongo_scan_destroy(scan);
}

static const fts_source_ops_t source_ops = {
    .open = port_open,
    .close = port_close,
    .next = port_next,
    .resume_token_json = port_resume_token_json,
    .token_needs_start_after = port_token_needs_start_after,
    .cluster_time = port_cluster_time,
    .scan_new = port_scan_new,
    .scan_next = port_scan_next,
    .scan_destroy = port_scan_destroy,
};

fts_source_port_t fts_mongo_source_port(fts_mongo_source_t *source)
{
    return (fts_source_port_t){.ops = &source_ops, .context = source};
}
