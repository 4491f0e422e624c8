/*
 * load_harness.h - what the integration tests of `ftsync load` share: running loader
 * processes, writing stream entries as extract would, a model of what the index must hold, and
 * checking Elasticsearch against that model document by document.
 *
 *   - Processes: fts_test_loader_start runs `<binary> load` with a clean environment (every
 *     inherited FTSYNC_* variable removed except FTSYNC_TESTBED_DIR, then the caller's
 *     NAME=value list), stdin from /dev/null, stdout and stderr appended to a log file of its
 *     own. No loader outlives the test: destroy kills it (SIGKILL), an atexit handler kills any
 *     left running, and the process gets PR_SET_PDEATHSIG.
 *   - Entries: written with pipelined XADDs in the format of core/action.h (fts_action_encode),
 *     version V carrying the cluster time V >> 32 . V & 0xffffffff as `ts`.
 *   - Model: per document id, the action with the highest version wins (Elasticsearch's
 *     external versioning: an older or equal version changes nothing, a delete leaves a
 *     tombstone that keeps older index actions out): index -> present with that body (plus
 *     the ns field with the action's ns, which the loader writes) and `_version` equal to
 *     the version; delete -> absent. Entries written as "rejected" (the mapping refuses them)
 *     change nothing: they must end in the dead-letter stream. A drop or sweep of ns at
 *     version V deletes, at V, every document of that ns present below V when it is written
 *     (the barrier makes what comes before it in the stream land first).
 *   - Drained: XINFO GROUPS says the `loaders` group has no pending entry and nothing left to
 *     read (lag 0, or its last-delivered-id is the stream's last-generated-id).
 *   - Final state: after a refresh, `_mget` in chunks for every id ever written: present or
 *     absent as the model says, `_source` equal as JSON regardless of key order
 *     (sorted_bson.h), `_version` equal; and `_count` equal to the number of present ids. The
 *     first differences are printed to stderr.
 * Tests only; single-threaded. Elasticsearch is spoken to with libcurl directly, Redis with
 * hiredis (a plain connection; fts_test_load_reconnect after a restart of the server).
 */
#ifndef FTS_TEST_LOAD_HARNESS_H
#define FTS_TEST_LOAD_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "buffer.h"
#include "error.h"
#include "test_time.h"

/* XADDs sent before their replies are read. */
#define FTS_TEST_LOAD_PIPELINE 1000
/* Ids per _mget request. */
#define FTS_TEST_LOAD_MGET_CHUNK 500
/* How many differences fts_test_load_check_index prints before it only counts. */
#define FTS_TEST_LOAD_PRINT_MAX 10
/* Settings given to each loader, at most; loaders one bed starts, at most. */
#define FTS_TEST_LOAD_ENV_MAX     48
#define FTS_TEST_LOAD_LOADERS_MAX 64
/* The consumer group the loaders read in. */
#define FTS_TEST_LOAD_GROUP "loaders"
/* The ns of entries written without one. */
#define FTS_TEST_LOAD_NS "ftsync_test.apps"
/* The field the loaders write each document's ns into (FTSYNC_NS_FIELD's default). */
#define FTS_TEST_LOAD_NS_FIELD "_ftsync_ns"

/* ---- HTTP to Elasticsearch ---------------------------------------------------------------- */

/* method url with an optional body (JSON, or NDJSON for _bulk), 30 s timeout. True when an
 * HTTP answer came (whatever its status), with the status in *status and the body in out
 * (emptied first; may be NULL). */
bool fts_test_http(const char *method, const char *url, const char *body, size_t body_len,
                   long *status, fts_buffer_t *out, fts_error_t *err);

/* ---- loader processes --------------------------------------------------------------------- */

typedef struct fts_test_loader fts_test_loader_t;

/* Starts `<binary> load`. env: NULL-terminated "NAME=value" strings (copied before fork);
 * log_path: file its stdout and stderr are appended to (copied). */
fts_test_loader_t *fts_test_loader_start(const char *binary, const char *const *env,
                                         const char *log_path, fts_error_t *err);

/* The process id (0 once it was reaped). */
pid_t fts_test_loader_pid(const fts_test_loader_t *loader);

/* Its consumer name if it was started by a bed (fts_test_load_start_loader), else "". */
const char *fts_test_loader_consumer(const fts_test_loader_t *loader);

const char *fts_test_loader_log_path(const fts_test_loader_t *loader);

/* True while the process runs (reaps it, without blocking, when it ended; its wait status is
 * then kept for fts_test_loader_wait). */
bool fts_test_loader_running(fts_test_loader_t *loader);

/* Sends sig. False when the process no longer runs. */
bool fts_test_loader_signal(fts_test_loader_t *loader, int sig);

/* kill -9 and reap. False when the process no longer ran. */
bool fts_test_loader_kill9(fts_test_loader_t *loader);

/* Waits up to timeout_ms for the process to end. Returns its exit code, or 128 + the signal
 * that ended it, or -1 when it still runs after timeout_ms (it is left running). */
int fts_test_loader_wait(fts_test_loader_t *loader, unsigned timeout_ms);

/* The whole log so far (NUL-terminated; the caller frees it with bson_free). */
char *fts_test_loader_log(const fts_test_loader_t *loader);

/* The log's size in bytes now (where a later part starts). */
long fts_test_loader_log_size(const fts_test_loader_t *loader);

/* Prints the last lines of the log to stderr. */
void fts_test_loader_print_log_tail(const fts_test_loader_t *loader, unsigned lines);

/* Kills (SIGKILL) the process if it runs and frees. Accepts NULL. */
void fts_test_loader_destroy(fts_test_loader_t *loader);

/* Lines of text[from, to) (byte offsets), and how many of them contain needle (NULL: none). */
size_t fts_test_count_lines(const char *text, size_t from, size_t to, const char *needle,
                            size_t *matching);

/* ---- one pipeline and index under test ---------------------------------------------------- */

typedef struct fts_test_load_model fts_test_load_model_t;
typedef struct fts_test_load_written fts_test_load_written_t;

/* The consumer group as XINFO GROUPS and XINFO STREAM report it. */
typedef struct {
    bool exists;
    long long consumers;
    long long pending;
    long long lag; /* -1 when Redis did not say (nil) */
    long long length;
    char last_delivered[48];
    char last_generated[48];
} fts_test_group_state_t;

typedef struct {
    const char *binary;   /* FTSYNC_BINARY */
    const char *doc_type; /* fts_testbed_doc_type(): "doc" or NULL (typeless) */
    char ns_field[64];    /* expected in every document; "" when the loaders write none */
    char redis_url[256];
    char es_url[256];
    char name[64]; /* what names the pipeline, the index, the consumers, the logs */
    char pipeline[128];
    char index[160];
    char stream_key[192];
    char dead_key[192];
    char dir[1024];
    char env[FTS_TEST_LOAD_ENV_MAX][1200];
    size_t env_count;
    redisContext *redis;
    fts_test_load_model_t *model;
    fts_test_load_written_t *written; /* every entry written, in order */
    size_t queued;                    /* of which not yet sent (fts_test_load_flush) */
    fts_test_loader_t *loaders[FTS_TEST_LOAD_LOADERS_MAX]; /* every loader started, dead or not */
    bool expected_end[FTS_TEST_LOAD_LOADERS_MAX];          /* the test killed or stopped it */
    size_t loader_count;
} fts_test_load_t;

/* Fills t for a fresh pipeline and index named after name (unique in this process: the pid
 * is added), with the environment every loader gets: the Redis and Elasticsearch URLs, the
 * index, FTSYNC_ES_DOC_TYPE when the test's engine needs one (fts_testbed_doc_type()), the
 * index definition, and test-sized settings (read block 500 ms, claim idle 5 s, retries
 * 100 ms .. 2 s, stop timeout 5 s, bulks of 500 actions, admin endpoint off, logfmt at info).
 * Connects to Redis and creates a scratch directory for the logs under fts_testbed_dir(). Nothing
 * is created in Redis or Elasticsearch. */
bool fts_test_load_init(fts_test_load_t *t, const char *binary, const char *definition_path,
                        const char *redis_url, const char *es_url, const char *name,
                        fts_error_t *err);

/* Sets (or replaces) one setting of the loaders' environment (for loaders started later). */
void fts_test_load_set(fts_test_load_t *t, const char *setting, const char *value);

/* Starts a loader with t's environment and consumer name consumer (NULL: a new one,
 * "<name>-c<n>"); its log is <dir>/loader-<n>.log. NULL on failure (printed). */
fts_test_loader_t *fts_test_load_start_loader(fts_test_load_t *t, const char *consumer,
                                              fts_error_t *err);

/* Loaders of t that still run. */
size_t fts_test_load_running(fts_test_load_t *t);

/* kill -9 a loader of t (one the test expects to end). */
bool fts_test_load_kill9(fts_test_load_t *t, fts_test_loader_t *loader);

/* SIGTERM a loader of t and wait up to timeout_ms: its exit code (128 + signal when a signal
 * ended it), -1 when it did not end in time (then it is killed). *elapsed_ms: how long it took. */
int fts_test_load_stop(fts_test_load_t *t, fts_test_loader_t *loader, unsigned timeout_ms,
                       uint64_t *elapsed_ms);

/* False (err naming it, its exit status, log tail printed) when a loader ended that the test
 * did not end itself. */
bool fts_test_load_check_loaders(fts_test_load_t *t, fts_error_t *err);

/* Queue an entry (sent by fts_test_load_flush). Returns its sequence number (0, 1, 2... over
 * t's life). version: 1 .. 2^63-1, cluster time version >> 32 below 2^31. */
size_t fts_test_load_index(fts_test_load_t *t, const char *id, uint64_t version, const char *body);
size_t fts_test_load_delete(fts_test_load_t *t, const char *id, uint64_t version);
/* An index action of another ns than the default one (a collection sharing the index). */
size_t fts_test_load_index_ns(fts_test_load_t *t, const char *ns, const char *id, uint64_t version,
                              const char *body);
/* A drop (every document of ns) or a sweep (every document of ns below version). */
size_t fts_test_load_drop(fts_test_load_t *t, const char *ns, uint64_t version);
size_t fts_test_load_sweep(fts_test_load_t *t, const char *ns, uint64_t version);
/* An index action the mapping refuses: expected in the dead-letter stream, not in the index. */
size_t fts_test_load_index_rejected(fts_test_load_t *t, const char *id, uint64_t version,
                                    const char *body);

/* Sends every queued entry (pipelined XADDs) and applies each to the model once Redis took
 * it. */
bool fts_test_load_flush(fts_test_load_t *t, fts_error_t *err);

/* The stream id Redis gave entry seq ("" while not flushed). Borrowed. */
const char *fts_test_load_stream_id(const fts_test_load_t *t, size_t seq);

/* Entries written (flushed) so far. */
size_t fts_test_load_written_count(const fts_test_load_t *t);

/* Connects again (after a restart of the Redis server). */
bool fts_test_load_reconnect(fts_test_load_t *t, fts_error_t *err);

bool fts_test_load_group_state(fts_test_load_t *t, fts_test_group_state_t *state, fts_error_t *err);

/* Entries pending for one consumer of the group (XINFO CONSUMERS); 0 when it is not known to
 * the group, -1 on error. */
long long fts_test_load_consumer_pending(fts_test_load_t *t, const char *consumer);

/* Waits up to timeout_ms until the group has nothing pending and nothing left to read;
 * prints progress every 10 s. Fails early when a loader ended that the test did not end. */
bool fts_test_load_wait_drained(fts_test_load_t *t, unsigned timeout_ms, fts_error_t *err);

/* Compares the index with the model (see the top of this file); label prefixes each printed
 * line. Returns the number of differences (0: equal), or (size_t)-1 when Elasticsearch could
 * not be asked (printed). */
size_t fts_test_load_check_index(fts_test_load_t *t, const char *label);

/* Ids in the model, present ids. */
size_t fts_test_load_model_ids(const fts_test_load_t *t);
size_t fts_test_load_model_present(const fts_test_load_t *t);

/* XLEN of the dead-letter stream (-1 on error). */
long long fts_test_load_dead_count(fts_test_load_t *t);

/* Prints the last lines of every loader's log. */
void fts_test_load_print_logs(fts_test_load_t *t, unsigned lines);

/* Kills the loaders, deletes the index and the pipeline's keys, removes the scratch directory
 * (kept when FTSYNC_TEST_KEEP_LOGS is set). */
void fts_test_load_cleanup(fts_test_load_t *t);

#endif
