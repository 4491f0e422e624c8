/*
 * main.c - ftsync-mongo-double: an in-memory stand-in for a one-member MongoDB 6.0 replica set,
 * for ftsync's tests.
 *
 * WHAT IT IS
 *   Test infrastructure, not a database. No MongoDB server can be installed on the machines
 *   ftsync is developed and tested on, yet the whole extract side is about change streams. This
 *   program speaks MongoDB's wire protocol well enough that the real libmongoc (and pymongo)
 *   take it for replica set "rs0" with one primary, for everything ftsync and its tests do.
 *   Behaviour follows MongoDB's documentation (and mongod's error codes and labels), because
 *   every test of the extract side trusts it; where it knowingly differs, the list below says
 *   so. Every integration test can also run against a real replica set (FTSYNC_TEST_MONGO_URI).
 *   Everything lives in memory, in one thread, one libevent loop: no persistence, no
 *   users (a URI with credentials is refused with 18 AuthenticationFailed), no TLS.
 *   For speed (it must never be what a benchmark of ftsync measures) documents are shared,
 *   reference-counted BSON, collections are AVL trees keyed by _id, the event log is a ring
 *   buffer, and after each request the loop polls briefly without sleeping (server.h,
 *   FTS_DOUBLE_SPIN_US) so that a client in a tight loop does not pay a cross-CPU wake-up per
 *   round trip; an idle double sleeps.
 *
 * COMMAND LINE
 *   ftsync-mongo-double [--port N] [--bind ADDR] [--history-events N] [--history-bytes N]
 *                       [--seed FILE] [--no-split-stage] [--clock-start SECONDS]
 *                       [--verbose]
 *     --port N            TCP port; 0 (the default) picks a free one
 *     --bind ADDR         IPv4 address to listen on (default 127.0.0.1); hello reports
 *                         ADDR:PORT as the member's name (127.0.0.1 for 0.0.0.0)
 *     --history-events N  change events kept for resuming (default 100000; 0 = no limit)
 *     --history-bytes N   bytes of change events kept (default 0 = no limit)
 *     --seed FILE         extended JSON lines {"ns": "db.coll", "doc": {...}} loaded at start,
 *                         WITHOUT change events: they are the state before history begins
 *     --clock-start SECONDS  the cluster clock (clusterTime, operationTime, wallTime) starts at
 *                         this Unix time and runs at the wall clock's pace: cluster times past
 *                         January 2038 can be tested (timestamps' seconds are unsigned 32-bit)
 *     --verbose           log every command (truncated) and connection to stderr
 *   When it listens it prints exactly one line to stdout, `ftsync-mongo-double ready port=N`,
 *   and flushes it. SIGTERM or SIGINT stops it cleanly (exit status 0); a bad argument or a
 *   port in use exits with status 2 and a message on stderr.
 *
 * WHAT IT IMPLEMENTS
 *   - Wire protocol: OP_MSG (with document sequences) for everything; OP_QUERY for the opening
 *     hello/isMaster only (wire.h). No compression is advertised.
 *   - Topology: hello/isMaster as primary of rs0, maxWireVersion 17, topologyVersion and
 *     awaitable hello (streaming SDAM), $clusterTime/operationTime on every reply; ping,
 *     buildInfo (6.0.0), endSessions and friends, serverStatus, getParameter, whatsmyuri,
 *     connectionStatus, dbStats, replSetGetStatus (replset.h, cmd_admin.c).
 *   - CRUD: insert, update ($set $unset $inc $mul $min $max $rename $setOnInsert $currentDate
 *     $push $addToSet $pop $pull $pullAll, replacement, upsert, multi), delete, findAndModify,
 *     find (filters, sort, skip, limit, batchSize, singleBatch, projection), getMore,
 *     killCursors, count, distinct, aggregate ($match $sort $skip $limit $project $unset $count
 *     $group $collStats-count); duplicate _id is write error 11000 (cmd_crud.c, cmd_read.c,
 *     query.h, update.h, pipeline.h).
 *   - Catalog: create (changeStreamPreAndPostImages), collMod, drop, dropDatabase,
 *     renameCollection (dropTarget), listCollections, listDatabases, listIndexes, createIndexes,
 *     dropIndexes (cmd_catalog.c).
 *   - Change streams on a collection, a database and the cluster, with resumeAfter, startAfter,
 *     startAtOperationTime, fullDocument, fullDocumentBeforeChange, showExpandedEvents, $match,
 *     $project, $unset, invalidation, a bounded history (286 when a resume point fell off),
 *     postBatchResumeToken in every batch and getMore waiting up to maxTimeMS without holding up
 *     other clients (changestream.h, eventlog.h).
 *   - Large change events (MongoDB manual: "Large change events" in Change Streams and the
 *     $changeStreamSplitLargeEvent page): an event over 16,793,600 bytes (BSONObjMaxInternalSize)
 *     after the user's stages fails the aggregate/getMore with 10334 BSONObjectTooLarge, no
 *     error label (not resumable); with {$changeStreamSplitLargeEvent: {}} as the last stage
 *     (else 7182802; a non-empty spec 7182800) events over 16,785,408 bytes come as fragments
 *     split by top-level fields, smallest first, each with splitEvent {fragment, of} and its own
 *     resume token, from which a resume goes on with the next fragment; a batch takes a further
 *     document only while it stays within 16 MB, as mongod's getMore. --no-split-stage makes
 *     the stage unknown (40324), as on mongod before 6.0.9.
 *   - Faults: configureFailPoint failCommand (alwaysOn, times, skip, off; errorCode,
 *     errorLabels, closeConnection, blockConnection/blockTimeMS, writeConcernError, appName),
 *     failGetMoreAfterCursorCheckout (the same modes; errorCode, default 1 InternalError, and
 *     appName) and replSetStepDown / replSetStepUp (failpoint.h, replset.h). As on mongod, an
 *     error failCommand injects on getMore carries errorLabels if given and otherwise no
 *     ResumableChangeStreamError (failCommand acts before the cursor is checked out, so the
 *     getMore is not yet known to be a change stream's: drivers do not resume); an error from
 *     failGetMoreAfterCursorCheckout goes through the usual label rules (a resumable code on a
 *     change stream gets ResumableChangeStreamError) and deletes the cursor, as mongod's
 *     getMore does after a failure. Sources: "The failCommand fail point" in mongod's wiki,
 *     src/mongo/db/commands/getmore_cmd.cpp, the Change Streams spec tests (SERVER-46091).
 *   - Change-stream pipelines: a stage name mongod does not know fails with 40324
 *     (Unrecognized pipeline stage name) wherever it stands in the pipeline; a known stage other
 *     than $match/$project/$unset fails with 20 IllegalOperation, which is mongod's answer for
 *     stages a change stream may not contain ($group, $sort, ...).
 *   - rename events: `to` always; with showExpandedEvents also operationDescription {to: {db,
 *     coll}, dropTarget: <UUID of the collection dropTarget replaced>, the latter only when
 *     there was one} (https://www.mongodb.com/docs/v6.0/reference/change-events/rename/).
 *   - Transactions (txn.h): lsid + txnNumber + autocommit: false (+ startTransaction: true on
 *     the first command), commitTransaction and abortTransaction. Writes inside are invisible
 *     to other readers until commit and seen by the transaction's own reads; at commit every
 *     event gets the commit's one clusterTime, the session's lsid and the txnNumber, and the
 *     tokens are ordered by txnOpIndex; an abort leaves no change and no event. Misuse fails as
 *     on mongod: 225 TransactionTooOld, 251 NoSuchTransaction (with TransientTransactionError),
 *     256 TransactionCommitted, 263 OperationNotSupportedInTransaction (count, create, drop,
 *     $changeStream...), 50911, 72 InvalidOptions (autocommit: true).
 *   - Clock: --clock-start starts the cluster clock at a given second (past January 2038).
 *   - Unknown commands: CommandNotFound (59).
 *   - Authentication: saslStart, saslContinue and authenticate always fail with 18
 *     AuthenticationFailed "Authentication failed." (no users: a URI with credentials is
 *     refused as mongod refuses a wrong password, cmd_admin.c).
 *
 * WHERE IT KNOWINGLY DIFFERS FROM MONGOD
 *   - buildInfo says 6.0.0, yet $changeStreamSplitLargeEvent (6.0.9) is there unless
 *     --no-split-stage; outside a change stream the stage is unknown (40324), where mongod
 *     knows it and refuses it for not following $changeStream. A fragment's resume token is
 *     its event's token plus four hex digits (the fragment index), where mongod's KeyString
 *     carries a fragmentNum field.
 *   - Resume tokens start like mongod's KeyString tokens (clusterTime, version 1, tokenType,
 *     txnOpIndex), then follow the double's own hex layout (eventlog.h); they sort like mongod's
 *     and are opaque to drivers either way. tokenType is 128 on every token, also high-water
 *     marks (mongod's are 0), and a high-water mark's txnOpIndex is 2^32 - 1, so that it sorts
 *     after the events at its time, a transaction's included. Bad
 * tokens fail with mongod's codes (_data missing 40647, empty 40649, not hex 9 FailedToParse, hex
 * that is no token 50811); a genuine mongod token is "no token" here (50811), where mongod would
 * say 280 or 286; a token from an earlier run of the double is history lost (286).
 *   - A resume token of another collection's event (resumeAfter/startAfter): as on mongod the
 *     aggregate succeeds and the first event of the watched collection after it fails with 280
 *     ChangeStreamFatalError "cannot resume stream; the resume token was not found. <_id>"
 *     (mongod's DocumentSourceEnsureResumeTokenPresent); until that event the post-batch
 *     resume token stays the client's token, where mongod's may advance as a high-water mark
 *     (not checked against a server).
 *   - replSetStepDown succeeds without force: true and without electable secondaries (a real
 *     one-member set needs force: true); tests meant to run against both should pass force.
 *     Like mongod 4.2+, it closes no connection and a change-stream getMore in progress goes on
 *     waiting; new reads with a primary read preference fail with 13435, writes with 10107,
 *     each carrying the member's topologyVersion as mongod 4.4+ does.
 *   - Transactions (txn.h): no write conflicts (the commit applies the transaction's writes
 *     over whatever changed meanwhile), no transactionLifetimeLimitSeconds, no prepared
 *     transactions; the events' lsid.uid is the SHA-256 of "" (an unauthenticated user).
 *   - No retryable-write deduplication (a retried write runs again; failCommand
 *     closeConnection acts before the command, so a retry is still applied once), no session
 *     state beyond transactions, no users (every saslStart, saslContinue and authenticate fails
 *     with 18 AuthenticationFailed "Authentication failed.", as mongod answers a user it does not
 *     have; no saslSupportedMechs nor speculativeAuthenticate in hello), no TLS, no compression, no
 * exhaust (awaitable hello is answered without moreToCome), no collation, no hint, no explain, no
 *     $expr/$where/$text/geo, no positional update operators, no arrayFilters, no pipeline
 *     updates, no views, no capped collections, no secondary indexes beyond recording their
 *     specification (unique ones are refused).
 *   - Unknown fields in known commands are ignored, where mongod often refuses them (40415).
 *   - Find cursors are snapshots of the matching documents when the query ran.
 *   - $regex uses POSIX extended syntax (with \d \w \s), not PCRE.
 *   - updateDescription follows the modifier log for the supported operators (updatedFields at
 *     the first created level, "array.N" for appended elements, the whole array after $pop,
 *     $pull, $pullAll); truncatedArrays is always empty, disambiguatedPaths is never given.
 *   - showExpandedEvents adds create events and collectionUUID, not modify/createIndexes/
 *     dropIndexes events. A rename onto an existing collection (dropTarget) logs a drop event of
 *     the target first, then the rename event naming the dropped target's UUID; mongod reports
 *     the dropped target through the rename (its oplog entry's dropTarget) alone.
 *   - $addFields, $set, $replaceRoot, $replaceWith and $redact, which mongod allows after
 *     $changeStream, are refused there with 20 (only $match, $project, $unset run).
 *   - Cross-database renames keep the collection (mongod copies it).
 *   - A change-stream getMore whose connection closes kills its cursor.
 *   - listDatabases lists only databases that have collections (no admin/config/local).
 */
#include "changestream.h"
#include "conn.h"
#include "cursor.h"
#include "replset.h"
#include "seed.h"
#include "server.h"
#include "txn.h"

#include <errno.h>
#include <event2/event.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static bool log_enabled = false;

void fts_double_log(fts_double_server_t *srv, const char *format, ...)
{
    (void)srv;
    if (!log_enabled) {
        return;
    }
    char line[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    fprintf(stderr, "%ld.%03ld ftsync-mongo-double: %s\n", (long)tv.tv_sec,
            (long)(tv.tv_usec / 1000), line);
}

int64_t fts_double_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int64_t fts_double_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The event loop, polling without sleeping for a moment after each request (FTS_DOUBLE_SPIN_US)
 * and blocking otherwise. */
static void run_loop(fts_double_server_t *srv)
{
    while (!event_base_got_exit(srv->base) && !event_base_got_break(srv->base)) {
        bool spin = fts_double_mono_us() < srv->spin_until_us;
        if (spin) {
            /* Hands the CPU to the client if it runs on the same one; free otherwise. */
            sched_yield();
        }
        if (event_base_loop(srv->base, spin ? EVLOOP_NONBLOCK : EVLOOP_ONCE) < 0) {
            break;
        }
    }
}

typedef struct {
    int port;
    const char *bind;
    size_t history_events;
    size_t history_bytes;
    const char *seed;
    bool no_split_stage;
    size_t clock_start; /* 0: the wall clock */
    bool verbose;
} options_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ftsync-mongo-double [--port N] [--bind ADDR] [--history-events N]\n"
            "                           [--history-bytes N] [--seed FILE] [--no-split-stage]\n"
            "                           [--clock-start SECONDS] [--verbose]\n"
            "An in-memory MongoDB 6.0 replica-set double (set rs0) for ftsync's tests.\n"
            "  --port N            TCP port, 0 = any free port (default 0)\n"
            "  --bind ADDR         IPv4 address to listen on (default 127.0.0.1)\n"
            "  --history-events N  change events kept for resuming (default 100000, 0 = all)\n"
            "  --history-bytes N   bytes of change events kept (default 0 = no limit)\n"
            "  --seed FILE         extended JSON lines {\"ns\": \"db.coll\", \"doc\": {...}},\n"
            "                      loaded before start without change events\n"
            "  --no-split-stage    $changeStreamSplitLargeEvent is unknown (40324), as before\n"
            "                      mongod 6.0.9\n"
            "  --clock-start SECONDS  the cluster clock starts at this Unix time (1..2^32-1)\n"
            "                      and runs on at the wall clock's pace (default: now)\n"
            "  --verbose           log every command to stderr\n"
            "Prints \"ftsync-mongo-double ready port=N\" when listening; stops on SIGTERM.\n");
}

static bool parse_size(const char *text, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-') {
        return false;
    }
    *out = (size_t)v;
    return true;
}

/* Accepts "--name value" and "--name=value". */
static const char *option_value(int argc, char **argv, int *i, const char *name)
{
    size_t len = strlen(name);
    if (strncmp(argv[*i], name, len) != 0) {
        return NULL;
    }
    if (argv[*i][len] == '=') {
        return argv[*i] + len + 1;
    }
    if (argv[*i][len] == '\0' && *i + 1 < argc) {
        return argv[++*i];
    }
    return NULL;
}

static bool parse_options(int argc, char **argv, options_t *opts)
{
    opts->port = 0;
    opts->bind = "127.0.0.1";
    opts->history_events = 100000;
    opts->history_bytes = 0;
    opts->seed = NULL;
    opts->no_split_stage = false;
    opts->clock_start = 0;
    opts->verbose = false;
    for (int i = 1; i < argc; i++) {
        const char *v;
        size_t n;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(argv[i], "--no-split-stage") == 0) {
            opts->no_split_stage = true;
        } else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            opts->verbose = true;
        } else if ((v = option_value(argc, argv, &i, "--port"))) {
            if (!parse_size(v, &n) || n > 65535) {
                fprintf(stderr, "ftsync-mongo-double: --port %s is not a port number\n", v);
                return false;
            }
            opts->port = (int)n;
        } else if ((v = option_value(argc, argv, &i, "--bind"))) {
            opts->bind = v;
        } else if ((v = option_value(argc, argv, &i, "--history-events"))) {
            if (!parse_size(v, &opts->history_events)) {
                fprintf(stderr, "ftsync-mongo-double: --history-events %s is not a count\n", v);
                return false;
            }
        } else if ((v = option_value(argc, argv, &i, "--history-bytes"))) {
            if (!parse_size(v, &opts->history_bytes)) {
                fprintf(stderr, "ftsync-mongo-double: --history-bytes %s is not a size\n", v);
                return false;
            }
        } else if ((v = option_value(argc, argv, &i, "--seed"))) {
            opts->seed = v;
        } else if ((v = option_value(argc, argv, &i, "--clock-start"))) {
            if (!parse_size(v, &opts->clock_start) || opts->clock_start == 0 ||
                opts->clock_start > UINT32_MAX) {
                fprintf(stderr,
                        "ftsync-mongo-double: --clock-start %s is not a Unix time in "
                        "1..4294967295\n",
                        v);
                return false;
            }
        } else {
            fprintf(stderr, "ftsync-mongo-double: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return false;
        }
    }
    return true;
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    fts_double_server_t *srv = arg;
    fts_double_log(srv, "signal %d: stopping", (int)sig);
    event_base_loopexit(srv->base, NULL);
}

static void on_expire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_double_cursors_expire(arg);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_double_stream_wake(arg);
}

int main(int argc, char **argv)
{
    options_t opts;
    if (!parse_options(argc, argv, &opts)) {
        return 2;
    }
    log_enabled = opts.verbose;
    signal(SIGPIPE, SIG_IGN);
    struct timeval now;
    gettimeofday(&now, NULL);
    srand((unsigned)(now.tv_sec ^ now.tv_usec ^ ((unsigned)getpid() << 8)));

    fts_double_server_t srv;
    memset(&srv, 0, sizeof srv);
    srv.verbose = opts.verbose;
    srv.no_split_stage = opts.no_split_stage;
    srv.start_ms = fts_double_now_ms();
    srv.base = event_base_new();
    if (!srv.base) {
        fprintf(stderr, "ftsync-mongo-double: cannot create the event loop\n");
        return 2;
    }
    srv.store = fts_double_store_new();
    fts_double_eventlog_init(&srv.log, opts.history_events, opts.history_bytes);
    if (opts.clock_start) {
        fts_double_eventlog_set_clock(&srv.log, (int64_t)opts.clock_start);
    }
    fts_double_failpoint_init(&srv.failpoint, "failCommand", NULL);
    fts_double_failpoint_init(&srv.fail_get_more, "failGetMoreAfterCursorCheckout", "getMore");
    fts_double_replset_init(&srv);
    srv.cursors.next_id = ((int64_t)rand() << 16) + 1;
    srv.wake_ev = event_new(srv.base, -1, 0, on_wake, &srv);
    struct event *sig_term = evsignal_new(srv.base, SIGTERM, on_stop_signal, &srv);
    struct event *sig_int = evsignal_new(srv.base, SIGINT, on_stop_signal, &srv);
    event_add(sig_term, NULL);
    event_add(sig_int, NULL);
    struct event *expire = event_new(srv.base, -1, EV_PERSIST, on_expire, &srv);
    struct timeval every_minute = {60, 0};
    event_add(expire, &every_minute);

    int status = 0;
    char message[1024];
    if (opts.seed && !fts_double_seed_load(&srv, opts.seed, message, sizeof message)) {
        fprintf(stderr, "ftsync-mongo-double: --seed: %s\n", message);
        status = 2;
    } else if (!fts_double_listen(&srv, opts.bind, opts.port)) {
        status = 2;
    } else {
        fts_double_eventlog_mark_start(&srv.log);
        printf("ftsync-mongo-double ready port=%d\n", srv.port);
        fflush(stdout);
        fts_double_log(&srv, "listening on %s (history: %zu events, %zu bytes)", srv.host,
                       opts.history_events, opts.history_bytes);
        run_loop(&srv);
    }

    /* Connections first (their parked requests reference cursors), then everything else. */
    fts_double_conns_shutdown(&srv);
    fts_double_cursors_destroy(&srv);
    fts_double_replset_destroy(&srv);
    fts_double_failpoint_destroy(&srv.failpoint);
    fts_double_failpoint_destroy(&srv.fail_get_more);
    fts_double_txn_destroy_all(&srv);
    fts_double_eventlog_destroy(&srv.log);
    fts_double_store_destroy(srv.store);
    event_free(srv.wake_ev);
    event_free(expire);
    event_free(sig_term);
    event_free(sig_int);
    event_base_free(srv.base);
    return status;
}
