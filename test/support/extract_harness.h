/*
 * extract_harness.h - what the integration tests of `ftsync extract` share: running the
 * process, reading what it queued, and checking that what it queued reproduces the collection.
 *
 *   - Process: fts_test_extract_start runs `<binary> extract` with a clean environment
 *     (every inherited FTSYNC_* variable removed except FTSYNC_TESTBED_DIR; then
 *     FTSYNC_ADMIN_ADDR=off, FTSYNC_ENV_FILE=/dev/null, FTSYNC_LOG_LEVEL=info; then the
 *     caller's NAME=value list, which wins), stdout and stderr appended to a log file. The
 *     transform worker is found as a child of the extract process (/proc/<pid>/task/ * /children).
 *     No extract outlives the test: destroy kills it (SIGKILL) and its worker, an atexit
 *     handler kills any left running, and the process gets PR_SET_PDEATHSIG.
 *   - Stream: fts_test_stream_read reads `ftsync:{P}:stream` with XRANGE in pages and decodes
 *     each entry with fts_action_decode (core/action.h); `op sweep` means "delete every
 *     document of ns whose version is below version".
 *   - Replay model: id -> (version, body or deleted), an entry applied only when its version is
 *     greater than the stored one (Elasticsearch's external versioning; equal is a no-op);
 *     sweep V deletes every id whose stored version is below V; drop deletes everything of ns.
 *   - Final state: the collection read from MongoDB, projected (core/projection.h) with the
 *     same FTSYNC_ID_FIELD / FTSYNC_FIELDS, compared document by document with the replay;
 *     the first differences are printed to stderr.
 * Tests only; single-threaded. Redis is spoken to with hiredis directly (a plain connection,
 * no reconnect: the tests' Redis does not go away).
 */
#ifndef FTS_TEST_EXTRACT_HARNESS_H
#define FTS_TEST_EXTRACT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>

#include "action.h"
#include "error.h"
#include "test_time.h"

/* Entries per XRANGE page. */
#define FTS_TEST_STREAM_PAGE 2000
/* How many differences fts_test_replay_compare prints before it only counts. */
#define FTS_TEST_COMPARE_PRINT_MAX 10

/* ---- the extract process ------------------------------------------------------------------ */

typedef struct fts_test_extract fts_test_extract_t;

/* Starts `<binary> extract` (binary: the test's FTSYNC_BINARY). env: NULL-terminated
 * "NAME=value" strings; log_path: file its stdout and stderr are appended to (copied). */
fts_test_extract_t *fts_test_extract_start(const char *binary, const char *const *env,
                                           const char *log_path, fts_error_t *err);

/* The extract process's pid (0 once it was reaped). */
pid_t fts_test_extract_pid(const fts_test_extract_t *extract);

/* The pid of the extract process's first child (its transform worker), waiting up to
 * timeout_ms for one to exist; 0 if none did. */
pid_t fts_test_extract_worker_pid(const fts_test_extract_t *extract, unsigned timeout_ms);

/* Sends sig to the extract process. With SIGKILL also waits for it (and reaps it), then waits
 * up to 5 s for the worker it had to go away, and kills that one if it did not. Returns false
 * when it was no longer running. */
bool fts_test_extract_kill(fts_test_extract_t *extract, int sig);

/* SIGTERM, then waits up to timeout_ms; true when it exited, with its wait status in
 * *status. Kills it (SIGKILL) and returns false when it did not exit in time. */
bool fts_test_extract_stop(fts_test_extract_t *extract, unsigned timeout_ms, int *status);

/* True while the process runs (reaps it, without blocking, when it ended). */
bool fts_test_extract_running(fts_test_extract_t *extract);

/* The whole log so far (malloc'd, NUL-terminated; the caller frees). */
char *fts_test_extract_log(const fts_test_extract_t *extract);

/* Prints the last lines of the log to stderr. */
void fts_test_extract_print_log_tail(const fts_test_extract_t *extract, unsigned lines);

/* Kills (SIGKILL) the process and its worker if they run. Accepts NULL. */
void fts_test_extract_destroy(fts_test_extract_t *extract);

/* Sends sig to pid (a worker) and waits up to 5 s for it to be gone. */
bool fts_test_kill_pid(pid_t pid, int sig);

/* ---- Redis -------------------------------------------------------------------------------- */

/* A plain hiredis connection to a redis://host:port/db URL (no password: the tests' server). */
redisContext *fts_test_redis_connect(const char *url, fts_error_t *err);

/* Writes "ftsync:{pipeline}:<suffix>" to out. Returns out. */
char *fts_test_key(const char *pipeline, const char *suffix, char *out, size_t size);

/* XLEN of key (0 when it does not exist); -1 on error. */
long long fts_test_redis_xlen(redisContext *redis, const char *key);

/* A field of a hash, malloc'd (caller frees); NULL when absent. */
char *fts_test_redis_hget(redisContext *redis, const char *key, const char *field);

/* GET key, malloc'd; NULL when absent. */
char *fts_test_redis_get(redisContext *redis, const char *key);

/* ---- stream entries ----------------------------------------------------------------------- */

typedef struct {
    char stream_id[48]; /* "<ms>-<seq>" */
    bool sweep;         /* op sweep (action.op FTS_ACTION_SWEEP): no id, no body */
    fts_action_t action;
} fts_test_entry_t;

typedef struct {
    fts_test_entry_t *items;
    size_t count;
    size_t cap;
} fts_test_entries_t;

/* Appends every entry of the stream key after the stream id `after` (NULL: from the start) to
 * out. An entry that does not decode is an error naming its stream id. */
bool fts_test_stream_read(redisContext *redis, const char *key, const char *after,
                          fts_test_entries_t *out, fts_error_t *err);

void fts_test_entries_cleanup(fts_test_entries_t *entries);

/* The raw field/value pairs of every entry of a stream (for the dead-letter stream): for
 * entry i, fields[i] is a malloc'd NULL-terminated array field, value, field, value... */
typedef struct {
    char ***fields;
    char **ids;
    size_t count;
} fts_test_raw_entries_t;

bool fts_test_stream_read_raw(redisContext *redis, const char *key, fts_test_raw_entries_t *out,
                              fts_error_t *err);
/* The value of field in raw entry i, or NULL. */
const char *fts_test_raw_field(const fts_test_raw_entries_t *entries, size_t i, const char *field);
void fts_test_raw_entries_cleanup(fts_test_raw_entries_t *entries);

/* The id of an entry as a NUL-terminated string (ids of the tests are plain text). */
const char *fts_test_entry_id(const fts_test_entry_t *entry);

/* ---- replay model and final state --------------------------------------------------------- */

typedef struct fts_test_docs fts_test_docs_t;

fts_test_docs_t *fts_test_docs_new(void);
void fts_test_docs_destroy(fts_test_docs_t *docs);

/* Applies one entry the way the index would (see the top of this file). */
void fts_test_replay_apply(fts_test_docs_t *docs, const fts_test_entry_t *entry);

/* Applies every entry in order. */
void fts_test_replay_all(fts_test_docs_t *docs, const fts_test_entries_t *entries);

/* Documents not deleted. */
size_t fts_test_docs_live_count(const fts_test_docs_t *docs);

/* The body of a live document, or NULL (deleted or never seen). Borrowed. */
const char *fts_test_docs_body(const fts_test_docs_t *docs, const char *id);

/* The stored version of id (live or deleted), 0 when never seen. */
uint64_t fts_test_docs_version(const fts_test_docs_t *docs, const char *id);

/* Reads db.collection and puts every document in docs, projected with id_field and fields
 * (NULL: the defaults, as FTSYNC_ID_FIELD and FTSYNC_FIELDS unset). */
bool fts_test_collection_state(mongoc_client_t *client, const char *db, const char *collection,
                               const char *id_field, const char *fields, fts_test_docs_t *docs,
                               fts_error_t *err);

/* Compares the live documents of replay and expected; prints the first differences (label
 * prefixes each line) and returns how many documents differ (0: equal). */
size_t fts_test_replay_compare(const fts_test_docs_t *replay, const fts_test_docs_t *expected,
                               const char *label);

/* ---- small helpers ------------------------------------------------------------------------ */

/* Runs program with argv (NULL-terminated, without the program name), stdout and stderr
 * appended to log_path, the child killed should the test die (PR_SET_PDEATHSIG). Returns its
 * pid (-1 on failure); fts_test_wait_pid collects the exit status. */
pid_t fts_test_spawn(const char *program, const char *const *argv, const char *log_path);

/* Waits for pid; returns its exit code, or 128 + signal, or -1 after timeout_ms (then it is
 * killed). */
int fts_test_wait_pid(pid_t pid, unsigned timeout_ms);

/* ---- following the stream and checking changes -------------------------------------------- */

/* Reads the entries appended since the last call into entries (whose last item marks where
 * the previous read stopped). */
bool fts_test_stream_follow(redisContext *redis, const char *key, fts_test_entries_t *entries,
                            fts_error_t *err);

/* Follows the stream until an entry with id (and origin, 0 = any; op, 0 = any) is in entries,
 * or timeout_ms passed. Returns the index of the first such entry, or -1. */
long fts_test_stream_wait_for(redisContext *redis, const char *key, fts_test_entries_t *entries,
                              const char *id, int op, int origin, unsigned timeout_ms);

/* One change event as MongoDB reports it. */
typedef struct {
    char *id;         /* documentKey._id as the projection spells an id */
    char op[16];      /* insert, update, replace, delete, ... */
    uint64_t version; /* from its clusterTime */
    char *body;       /* insert, replace: the projected fullDocument; NULL otherwise */
} fts_test_change_t;

typedef struct {
    fts_test_change_t *items;
    size_t count;
} fts_test_changes_t;

/* Opens a change stream on db.collection at startAtOperationTime (seconds, increment) and
 * collects every event until the insert of the document whose _id is the int32 end_id. */
bool fts_test_collect_changes(mongoc_client_t *client, const char *db, const char *collection,
                              uint32_t seconds, uint32_t increment, int32_t end_id,
                              unsigned timeout_ms, fts_test_changes_t *out, fts_error_t *err);
void fts_test_changes_cleanup(fts_test_changes_t *changes);

/* How many changes have no change entry with the same id and version (a delete must be a
 * delete; insert/replace/update an index, or a delete when the update's lookup found no
 * document). Prints the first few missing. */
size_t fts_test_changes_missing(const fts_test_changes_t *changes,
                                const fts_test_entries_t *entries, const char *label);

/* ---- one pipeline under test -------------------------------------------------------------- */

/* Settings given to each started extract, at most. */
#define FTS_TEST_PIPELINE_ENV_MAX 32

/* A pipeline under test: a database and collection, a pipeline name (key prefix), the keys,
 * a scratch directory for logs and reports, the extract environment, the test's own MongoDB
 * client and Redis connection, and the entries read so far. */
typedef struct {
    const char *binary;   /* FTSYNC_BINARY */
    const char *workload; /* FTSYNC_WORKLOAD */
    const char *mongo_uri;
    const char *redis_url;
    char db[96];
    char collection[64];
    char pipeline[96];
    char stream_key[160];
    char token_key[160];
    char snapshot_key[160];
    char dead_key[160];
    char lease_key[160];
    char dir[1024];
    char env[FTS_TEST_PIPELINE_ENV_MAX][1200];
    const char *envp[FTS_TEST_PIPELINE_ENV_MAX + 1];
    size_t env_count;
    mongoc_client_t *client;
    mongoc_collection_t *coll;
    redisContext *redis;
    fts_test_entries_t entries; /* what fts_test_stream_follow/wait_for have read so far */
    unsigned starts;            /* extract processes started: names their logs */
} fts_test_pipeline_t;

/* Fills p for a fresh database and pipeline named after prefix (unique in this process), the
 * collection "apps", and the environment every extract gets (URIs, names, batch size 200). */
bool fts_test_pipeline_init(fts_test_pipeline_t *p, const char *binary, const char *workload,
                            const char *mongo_uri, const char *redis_url, const char *prefix,
                            fts_error_t *err);

/* Sets (or replaces) one setting of the extract environment. */
void fts_test_pipeline_set(fts_test_pipeline_t *p, const char *name, const char *value);

/* Starts an extract with p's environment; its log is <dir>/extract-<n>.log. */
fts_test_extract_t *fts_test_pipeline_start(fts_test_pipeline_t *p, fts_error_t *err);

/* Inserts {_id: id, name: name}, retrying for up to timeout_ms while the server refuses
 * writes (a step-down). */
bool fts_test_pipeline_insert(fts_test_pipeline_t *p, int32_t id, const char *name,
                              unsigned timeout_ms, fts_error_t *err);

/* Runs ftsync-workload on p's collection with extra arguments (NULL-terminated); its output
 * goes to <dir>/workload.log. spawn returns its pid, run waits and returns its exit code. */
pid_t fts_test_pipeline_workload_spawn(fts_test_pipeline_t *p, const char *const *args);
int fts_test_pipeline_workload_run(fts_test_pipeline_t *p, const char *const *args,
                                   unsigned timeout_ms);

/* Reads the whole stream afresh, replays it and compares it with the collection (default
 * projection unless FTSYNC_ID_FIELD / FTSYNC_FIELDS are set in p). Returns the number of
 * documents that differ, or (size_t)-1 when something could not be read (printed). */
size_t fts_test_pipeline_check_final(fts_test_pipeline_t *p, const char *label);

/* Closes the connections and removes the scratch directory (kept when FTSYNC_TEST_KEEP_LOGS
 * is set; a failing test has printed its logs' tails already). */
void fts_test_pipeline_cleanup(fts_test_pipeline_t *p);

#endif
