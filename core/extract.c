/*
 * extract.c - the parent of `ftsync extract` (extract.h): reads the source (snapshot, then the
 * change stream) and frames every event to the transform worker (extract_worker.c), which
 * queues the actions and checkpoints the position. Everything outside goes through ports.
 *
 * Process shape and fork hygiene: the first worker is spawned (by the caller) before a MongoDB
 * client exists. A crashed worker is spawned again later through the worker port, from a
 * parent that has a client; that child never uses it (cmd/worker_process.c).
 *
 * Invariants kept here:
 *   1. the parent never writes a position itself while the worker may still queue what comes
 *      before it: positions travel in the frames and the worker saves them with the actions;
 *      the only exceptions (dead-lettering a poison event, clearing for a resync) happen while
 *      no worker holds unqueued frames (it is dead, or was drained first);
 *   a Redis that lost its data (the queue port's read says so: README.md, Reliability) never
 *      gets the remembered position back: the position is cleared and a resync (snapshot,
 *      then sweep) runs, as after a lost history; the worker's checkpoints are refused
 *      meanwhile, so it ends and this parent reads the position (and the loss) again;
 *   4. backpressure: above FTSYNC_BACKLOG_MAX unacknowledged entries reading stops (the lease
 *      is still renewed and trimming goes on); nothing is dropped;
 *   5. every failure is retried (source errors, worker restarts, with capped backoff),
 *      dead-lettered (a poison event after FTSYNC_WORKER_CRASH_LIMIT crashes), or ends the
 *      process with status 3 and an error line naming the problem (an unsupported event,
 *      history lost with FTSYNC_ON_HISTORY_LOST=stop);
 *   one active extractor: reading happens only while the lease is ours; a renewal that finds
 *      it lost (or a local deadline that runs out) stops reading at once and kills the worker.
 *   A failure that needs an operator (wrong password, WRONGTYPE on ftsync's keys, a MongoDB
 *   that refuses the credentials or is no replica set) is retried like any other, and also
 *   reported (permanent.h: /readyz, metrics) until that server's next proper answer.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <bson/bson.h>

#include "backoff.h"
#include "clock.h"
#include "extract.h"
#include "extract_worker.h"
#include "log.h"
#include "metrics.h"
#include "extract_ports.h"
#include "permanent.h"
#include "signals.h"
#include "worker_message.h"
#include "wait_status.h"

#define COMPONENT "extract"

/* How often the backlog is read for backpressure. */
#define BACKLOG_CHECK_MS 1000
/* While paused or waiting, how long one sleep lasts between lease renewals and checks. */
#define IDLE_SLICE_MS 100
/* Restart backoff of the worker and reopen backoff of the source. */
#define RETRY_BASE_MS 200
#define RETRY_CAP_MS  10000
/* A worker that ran this long before it ended starts the restart backoff afresh. */
#define WORKER_HEALTHY_MS 10000

/* What a session (the time the lease is ours) ended with. */
typedef enum {
    SESSION_STOP = 0,   /* SIGTERM/SIGINT: stop cleanly */
    SESSION_LEASE_LOST, /* go back to standby */
    SESSION_FATAL       /* exit with ex->exit_status */
} session_end_t;

/* Where reading is: what the parent last handed to the worker (or read back from Redis). */
typedef enum {
    POS_NONE = 0, /* nothing saved: snapshot */
    POS_SNAPSHOT, /* snapshot started at snap_time, after last_id (if any) */
    POS_TOKEN,    /* after token */
    POS_TIME      /* stream from snap_time (just after a snapshot) */
} pos_kind_t;

typedef struct {
    const fts_extract_options_t *options;
    char ns[512];

    const fts_source_port_t *source;
    const fts_queue_port_t *queue;
    const fts_lease_port_t *lease;
    const fts_worker_port_t *worker;
    void *scan; /* of the source port; NULL: none */

    uint64_t worker_started_ms;
    fts_backoff_t worker_backoff;
    fts_backoff_t source_backoff;

    /* The position after the last frame sent. */
    pos_kind_t pos;
    char *token; /* POS_TOKEN: canonical extended JSON */
    fts_token_kind_t token_kind;
    fts_timestamp_t snap_time;
    bson_value_t last_id; /* POS_SNAPSHOT; value_type 0 (EOD) before the first document */
    uint64_t snap_queued;
    bool resync; /* queue a sweep at the end of this snapshot (all do unless ns_field is off) */
    fts_timestamp_t cluster_time; /* of the last event sent */
    bool streaming;               /* the change stream is open (else the scan, if any) */

    /* Poison handling. */
    char *crash_key;       /* the saved position at the last crash */
    unsigned crash_count;  /* crashes in a row at crash_key */
    char *careful_until;   /* send careful frames until this key was sent again */
    bool careful_session;  /* the current worker was started in careful mode */
    char *last_sent_key;   /* the key of the last event or document sent */
    bool dead_letter_next; /* the next event read goes to the dead-letter stream */
    int crash_signal;

    /* Timers (monotonic ms). */
    uint64_t next_renew_ms;
    uint64_t next_backlog_ms;
    uint64_t next_trim_ms;
    bool paused;
    uint64_t backlog;          /* as last read */
    uint64_t sent_since_check; /* frames sent since: the backlog may have grown by as many */

    bool reload_position; /* the next open must read the saved position first */

    uint64_t history_lost_count;
    uint64_t data_lost_count;
    bool data_lost_pending;     /* Redis lost its data: clear the position and resync first */
    uint64_t worker_quick_ends; /* worker ends in a row within WORKER_HEALTHY_MS of its start */
    int exit_status;
} extract_t;

/* ---------------------------------------------------------------------------------------- */
/* The worker                                                                               */

/* What a call's outcome says about its server for /readyz and the metrics (permanent.h):
 * err NULL when the server answered properly (ends a permanent state); a failure that needs an
 * operator starts or continues one; a transient failure changes nothing. */
static void redis_outcome(const fts_error_t *err)
{
    if (err) {
        fts_permanent_report_error(FTS_SERVER_REDIS, err);
    } else {
        fts_permanent_report(FTS_SERVER_REDIS, FTS_PERMANENT_NONE, NULL);
    }
}

static void mongo_outcome(const fts_error_t *err)
{
    if (err) {
        fts_permanent_report_error(FTS_SERVER_MONGODB, err);
    } else {
        fts_permanent_report(FTS_SERVER_MONGODB, FTS_PERMANENT_NONE, NULL);
    }
}

static bool spawn_worker(extract_t *ex, fts_error_t *err)
{
    if (!ex->worker->ops->spawn(ex->worker->context, err)) {
        return false;
    }
    ex->worker_started_ms = fts_clock_monotonic_ms();
    return true;
}

/* Closes the channel (the worker queues what it has and exits) and waits for it, for half the
 * lease TTL at most: a worker stuck on a Redis that never answers (it ignores SIGTERM, so only
 * its command timeout would end the wait) is then killed, so that a stop ends in bounded time
 * (issue 13, item 4). Killing it loses nothing: its position is saved only after what came
 * before is queued, so the next start reads the rest again. Returns the wait status, or -1
 * when there was no worker. */
static int drain_worker(extract_t *ex)
{
    ex->worker->ops->close(ex->worker->context);
    if (!ex->worker->ops->running(ex->worker->context)) {
        return -1;
    }
    int status = 0;
    uint64_t deadline = fts_clock_monotonic_ms() + ex->options->lease_ttl_ms / 2;
    while (!ex->worker->ops->reap(ex->worker->context, false, &status)) {
        if (!ex->worker->ops->running(ex->worker->context)) {
            return -1;
        }
        if (fts_clock_monotonic_ms() >= deadline) {
            fts_log(FTS_LOG_WARN, COMPONENT,
                    "the transform worker did not finish within %" PRIu64
                    " ms (half the lease TTL); killing it (what it had not queued is read again "
                    "from the saved position)",
                    ex->options->lease_ttl_ms / 2);
            ex->worker->ops->kill(ex->worker->context);
            if (!ex->worker->ops->reap(ex->worker->context, true, &status)) {
                status = -1;
            }
            return status;
        }
        /* Not fts_signals_sleep_ms: during a stop it would not sleep at all. */
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return status;
}

static void kill_worker(extract_t *ex)
{
    ex->worker->ops->kill(ex->worker->context);
    drain_worker(ex);
}

/* ---------------------------------------------------------------------------------------- */
/* Positions                                                                                */

static void clear_pos(extract_t *ex)
{
    bson_free(ex->token);
    ex->token = NULL;
    if (ex->last_id.value_type != 0) {
        bson_value_destroy(&ex->last_id);
    }
    memset(&ex->last_id, 0, sizeof ex->last_id);
    ex->pos = POS_NONE;
    ex->snap_queued = 0;
}

/* Canonical extended JSON of one value, e.g. {"$oid":"..."} or {"$numberInt":"7"}. */
static char *value_json(const bson_value_t *value)
{
    bson_t doc = BSON_INITIALIZER;
    bson_append_value(&doc, "v", 1, value);
    size_t len = 0;
    char *json = bson_as_canonical_extended_json(&doc, &len);
    bson_destroy(&doc);
    if (!json) {
        return NULL;
    }
    /* "{ "v" : <value> }" -> "<value>" */
    const char *start = strchr(json, ':');
    char *end = strrchr(json, '}');
    char *out = NULL;
    if (start && end && end > start) {
        start++;
        while (*start == ' ') {
            start++;
        }
        while (end > start && (end[-1] == ' ')) {
            end--;
        }
        out = bson_strndup(start, (size_t)(end - start));
    }
    bson_free(json);
    return out;
}

/* The reverse of value_json, into a value the caller destroys. */
static bool value_from_json(const char *json, bson_value_t *value, fts_error_t *err)
{
    char *wrapped = bson_strdup_printf("{\"v\": %s}", json);
    bson_error_t error;
    bson_t *doc = bson_new_from_json((const uint8_t *)wrapped, -1, &error);
    bson_free(wrapped);
    bson_iter_t iter;
    if (!doc || !bson_iter_init_find(&iter, doc, "v")) {
        bson_destroy(doc);
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "the saved snapshot last_id %s is not extended JSON", json);
    }
    bson_value_copy(bson_iter_value(&iter), value);
    bson_destroy(doc);
    return true;
}

/* A key naming a saved or sent position, to recognise the same one again. */
static char *position_key(const fts_position_t *saved)
{
    if (saved->has_token) {
        return bson_strdup_printf("token:%s", saved->token);
    }
    if (saved->has_snapshot) {
        return bson_strdup_printf("snap:%s", saved->last_id ? saved->last_id : "");
    }
    return bson_strdup("none");
}

/* Redis lost its data (README.md, Reliability): what was queued and not yet loaded is gone,
 * and whatever position a server still holds no longer says what is in the queue. Clears it
 * (pending until done, so that a failure here is not forgotten), recreates the loaders' group
 * (entries from now on are kept for them) and starts a resync: a snapshot, then a sweep of
 * what was deleted meanwhile, as after a lost history. */
static bool data_lost_resync(extract_t *ex, fts_error_t *err)
{
    if (!ex->queue->ops->clear_position(ex->queue->context, true, err) ||
        !ex->queue->ops->ensure_group(ex->queue->context, err)) {
        return false;
    }
    ex->data_lost_pending = false;
    clear_pos(ex);
    ex->pos = POS_NONE;
    ex->resync = true;
    return true;
}

/* Reads the saved position into ex (the worker must not be holding frames). */
static bool load_position(extract_t *ex, char **key, fts_error_t *err)
{
    fts_position_t saved;
    memset(&saved, 0, sizeof saved);
    if (!ex->queue->ops->read_position(ex->queue->context, &saved, err)) {
        redis_outcome(err);
        return false;
    }
    redis_outcome(NULL);
    if (saved.data_lost) {
        ex->data_lost_count++;
        ex->data_lost_pending = true;
        if (saved.data_lost & FTS_DATA_LOST_STATE) {
            fts_metric_add(FTS_METRIC_DATA_LOST, FTS_LOST_STATE, 1);
        }
        if (saved.data_lost & FTS_DATA_LOST_STREAM) {
            fts_metric_add(FTS_METRIC_DATA_LOST, FTS_LOST_STREAM, 1);
        }
        fts_log(FTS_LOG_ERROR, COMPONENT,
                "Redis lost its data (the epoch marker ftsync:{P}:epoch is gone or changed on "
                "the %s): changes queued and not loaded are gone; not writing the remembered "
                "position back; resyncing (a new snapshot, then a sweep of documents deleted "
                "meanwhile) data_lost_total=%llu",
                saved.data_lost == (FTS_DATA_LOST_STATE | FTS_DATA_LOST_STREAM)
                    ? "state and queue servers"
                : saved.data_lost & FTS_DATA_LOST_STATE ? "state server"
                                                        : "queue server",
                (unsigned long long)ex->data_lost_count);
    }
    if (ex->data_lost_pending) {
        bool ok = data_lost_resync(ex, err);
        if (ok && key) {
            *key = bson_strdup("none");
        }
        fts_position_cleanup(&saved);
        return ok;
    }
    clear_pos(ex);
    /* A resync snapshot restarted by a worker crash (ex->resync) or by a new process (the flag
     * clear_position(resync) saved with the clearing) still ends with its sweep. */
    ex->resync = !saved.has_token && (ex->resync || saved.sweep);
    if (!saved.has_token && !saved.has_snapshot && !ex->resync &&
        ex->options->sweep_first_snapshot) {
        /* Nothing saved: a new pipeline, `reset-token --clear`, or a Redis that lost
         * everything while no extractor ran, which no marker can tell from a new pipeline.
         * So every first snapshot ends with a sweep too (on a new index it finds nothing), noted
         * durably first so that a crash before its end does not lose it. */
        if (!ex->queue->ops->clear_position(ex->queue->context, true, err)) {
            fts_position_cleanup(&saved);
            return false;
        }
        ex->resync = true;
    }
    bool ok = true;
    if (saved.has_token && saved.token_kind == FTS_TOKEN_START_AT) {
        /* `reset-token --to-time`: no token yet, the stream starts at that cluster time. */
        ex->pos = POS_TIME;
        ex->snap_time = saved.cluster_time;
        ex->cluster_time = saved.cluster_time;
    } else if (saved.has_token) {
        ex->pos = POS_TOKEN;
        ex->token = bson_strdup(saved.token);
        ex->token_kind = saved.token_kind;
        ex->cluster_time = saved.cluster_time;
    } else if (saved.has_snapshot) {
        ex->pos = POS_SNAPSHOT;
        ex->snap_time = saved.started;
        ex->snap_queued = saved.queued;
        if (saved.last_id) {
            ok = value_from_json(saved.last_id, &ex->last_id, err);
        }
    }
    if (ok && key) {
        *key = position_key(&saved);
    }
    fts_position_cleanup(&saved);
    return ok;
}

/* Opens the scan or the stream at ex's position. Source errors come back as from the
 * port (FTS_SOURCE_HISTORY_LOST, or anything else to retry). */
static bool open_source(extract_t *ex, fts_error_t *err)
{
    ex->source->ops->scan_destroy(ex->source->context, ex->scan);
    ex->scan = NULL;
    ex->source->ops->close(ex->source->context);
    ex->streaming = false;
    const char *scan_collection =
        ex->options->scope == FTS_SCOPE_DATABASE ? ex->options->collection : NULL;

    if (ex->pos == POS_NONE) {
        /* A snapshot: note the time first, so that the stream that follows misses nothing. */
        if (!ex->source->ops->cluster_time(ex->source->context, &ex->snap_time, err)) {
            return false;
        }
        ex->pos = POS_SNAPSHOT;
        ex->snap_queued = 0;
        fts_log(FTS_LOG_INFO, COMPONENT,
                "no saved position: snapshot of the collection ns=%s started_at=%u.%u", ex->ns,
                ex->snap_time.seconds, ex->snap_time.increment);
    }
    if (ex->pos == POS_SNAPSHOT) {
        ex->scan =
            ex->source->ops->scan_new(ex->source->context, scan_collection,
                                      ex->last_id.value_type != 0 ? &ex->last_id : NULL, err);
        return ex->scan != NULL;
    }
    fts_source_position_t position = {.from = FTS_SOURCE_START_AT_TIME, .time = ex->snap_time};
    if (ex->pos == POS_TOKEN) {
        /* A saved token that is not JSON fails with FTS_SOURCE_HISTORY_LOST: no resume is
         * possible, resync (invariant 6: named, not guessed). */
        position.from = ex->token_kind == FTS_TOKEN_START_AFTER ? FTS_SOURCE_START_AFTER
                                                                : FTS_SOURCE_RESUME_AFTER;
        position.token = ex->token;
    }
    bool ok = ex->source->ops->open(ex->source->context, &position, err);
    ex->streaming = ok;
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* Frames                                                                                   */

/* Sends a message (worker_message.h) as one frame; false means the worker is gone (the caller
 * reaps and restarts it). */
static bool send_message(extract_t *ex, const fts_worker_message_t *message)
{
    fts_error_t err;
    bson_t frame = BSON_INITIALIZER;
    fts_worker_message_encode(message, &frame);
    bool sent = ex->worker->ops->send(ex->worker->context, &frame, &err);
    bson_destroy(&frame);
    if (!sent) {
        return false;
    }
    ex->sent_since_check++;
    return true;
}

/* Whether a frame with this key is to be careful, and the end of careful mode. */
static bool careful_for(extract_t *ex, const char *key)
{
    bson_free(ex->last_sent_key);
    ex->last_sent_key = bson_strdup(key);
    if (!ex->careful_until) {
        return false;
    }
    if (strcmp(ex->careful_until, key) == 0) {
        bson_free(ex->careful_until);
        ex->careful_until = NULL;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* Lease, backlog, trim: done between reads and while waiting                               */

/* Renews the lease when due, reads the backlog, trims. false: the lease is lost. */
static bool maintain(extract_t *ex)
{
    uint64_t now = fts_clock_monotonic_ms();
    fts_error_t err;
    uint64_t ttl = ex->options->lease_ttl_ms;
    if (now >= ex->next_renew_ms) {
        fts_lease_status_t status;
        if (ex->lease->ops->renew(ex->lease->context, &status, &err)) {
            if (status.state == FTS_LEASE_LOST) {
                fts_log(FTS_LOG_ERROR, COMPONENT,
                        "extractor lease lost: stopping reading (holder %s)", status.holder);
                return false;
            }
            ex->next_renew_ms = now + ttl / 3;
            fts_signal_set(FTS_SIGNAL_EXTRACT_REDIS_OK, 1);
            redis_outcome(NULL);
        } else {
            fts_signal_set(FTS_SIGNAL_EXTRACT_REDIS_OK, 0);
            redis_outcome(&err);
            fts_log(FTS_LOG_WARN, COMPONENT, "lease renewal failed: %s", err.message);
            ex->next_renew_ms = now + IDLE_SLICE_MS * 5;
        }
    }
    if (ex->lease->ops->remaining_ms(ex->lease->context) == 0) {
        fts_log(FTS_LOG_ERROR, COMPONENT,
                "extractor lease expired before it could be renewed: stopping reading");
        return false;
    }
    /* Read the backlog every second, and sooner when what was sent since could have taken it
     * past the maximum, so the stream stops near the maximum, not a second of reading later. */
    if (now >= ex->next_backlog_ms ||
        ex->backlog + ex->sent_since_check > ex->options->backlog_max) {
        ex->next_backlog_ms = now + BACKLOG_CHECK_MS;
        ex->sent_since_check = 0;
        fts_backlog_t backlog;
        if (ex->queue->ops->backlog(ex->queue->context, &backlog, &err)) {
            bool over = backlog.entries > ex->options->backlog_max;
            if (over && !ex->paused) {
                fts_log(FTS_LOG_WARN, COMPONENT, "paused: backlog %llu > max %llu",
                        (unsigned long long)backlog.entries,
                        (unsigned long long)ex->options->backlog_max);
            } else if (!over && ex->paused) {
                fts_log(FTS_LOG_INFO, COMPONENT, "resumed: backlog %llu <= max %llu",
                        (unsigned long long)backlog.entries,
                        (unsigned long long)ex->options->backlog_max);
            }
            ex->paused = over;
            ex->backlog = backlog.entries;
            fts_signal_set(FTS_SIGNAL_EXTRACT_PAUSED, over);
            fts_signal_set(FTS_SIGNAL_EXTRACT_REDIS_OK, 1);
            redis_outcome(NULL);
            fts_metric_set(FTS_METRIC_BACKLOG, 0, (double)backlog.entries);
        } else {
            fts_signal_set(FTS_SIGNAL_EXTRACT_REDIS_OK, 0);
            redis_outcome(&err);
            fts_log(FTS_LOG_WARN, COMPONENT, "reading the backlog failed: %s", err.message);
        }
    }
    /* A worker that has run long enough ends a restart loop (/healthz). */
    if (ex->worker_quick_ends && ex->worker->ops->running(ex->worker->context) &&
        now - ex->worker_started_ms > WORKER_HEALTHY_MS) {
        ex->worker_quick_ends = 0;
        fts_signal_set(FTS_SIGNAL_WORKER_QUICK_ENDS, 0);
    }
    if (now >= ex->next_trim_ms) {
        ex->next_trim_ms = now + ex->options->trim_interval_ms;
        fts_trim_result_t trim;
        if (ex->queue->ops->trim(ex->queue->context, &trim, &err)) {
            redis_outcome(NULL);
            if (trim.removed > 0) {
                fts_log(FTS_LOG_INFO, COMPONENT,
                        "trimmed acknowledged entries "
                        "removed=%llu below=%s",
                        (unsigned long long)trim.removed, trim.threshold);
            }
        } else {
            redis_outcome(&err);
            fts_log(FTS_LOG_WARN, COMPONENT, "trimming failed: %s", err.message);
        }
    }
    return true;
}

/* Waits ms while keeping the lease. false: lease lost or a stop was requested. */
static bool wait_maintaining(extract_t *ex, uint64_t ms)
{
    uint64_t until = fts_clock_monotonic_ms() + ms;
    while (!fts_signals_stop_requested()) {
        if (!maintain(ex)) {
            return false;
        }
        uint64_t now = fts_clock_monotonic_ms();
        if (now >= until) {
            return true;
        }
        uint64_t slice = until - now < IDLE_SLICE_MS ? until - now : IDLE_SLICE_MS;
        fts_signals_sleep_ms((unsigned long)slice);
    }
    return false;
}

/* ---------------------------------------------------------------------------------------- */
/* Failures                                                                                 */

typedef enum { STEP_OK = 0, STEP_REOPEN, STEP_END } step_t;

/* True for the signals a process raises on itself by what it does (a bad access, abort(), an
 * illegal instruction, a division by zero, a bad system call): a worker dying of one crashed
 * on the event it was transforming. Any other signal (SIGKILL, SIGHUP, ...) came from outside
 * and says nothing about the event. A SIGKILL while transforming (e.g. the OOM killer on a
 * huge event) is indistinguishable from an operator's kill -9; it is not counted, so such an
 * event is retried rather than dead-lettered. */
static bool worker_caused_death(int sig)
{
    switch (sig) {
    case SIGSEGV:
    case SIGBUS:
    case SIGABRT:
    case SIGILL:
    case SIGFPE:
    case SIGSYS:
    case SIGTRAP:
        return true;
    default:
        return false;
    }
}

/* The worker ended (status from waitpid). Decides what follows: a fatal stop (STEP_END with
 * ex->exit_status), or a restart and a reopen from the saved position (STEP_REOPEN). */
static step_t worker_ended(extract_t *ex, int status, session_end_t *end)
{
    char text[128];
    fts_wait_status_describe(status, text, sizeof text);
    ex->worker->ops->close(ex->worker->context); /* reaped already: a no-op */
    if (WIFEXITED(status) && WEXITSTATUS(status) == FTS_WORKER_EXIT_UNSUPPORTED) {
        fts_log(FTS_LOG_ERROR, COMPONENT,
                "stopped: the change stream has an event ftsync cannot follow (see the "
                "worker's error above); the saved position is before it state=error");
        ex->exit_status = FTS_EXTRACT_EXIT_STOPPED;
        *end = SESSION_FATAL;
        return STEP_END;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == FTS_WORKER_EXIT_CONFIG) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "stopped: the transform cannot be set up");
        ex->exit_status = FTS_EXTRACT_EXIT_USAGE;
        *end = SESSION_FATAL;
        return STEP_END;
    }
    if (fts_clock_monotonic_ms() - ex->worker_started_ms > WORKER_HEALTHY_MS) {
        fts_backoff_reset(&ex->worker_backoff);
        ex->worker_quick_ends = 0;
    } else {
        ex->worker_quick_ends++;
    }
    fts_signal_set(FTS_SIGNAL_WORKER_QUICK_ENDS, ex->worker_quick_ends);
    fts_error_t err;
    char *key = NULL;
    /* What was sent last, to know when careful mode can end. */
    char *last_sent = ex->last_sent_key;
    ex->last_sent_key = NULL;
    bool was_careful = ex->careful_session;
    if (!load_position(ex, &key, &err)) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot read the saved position: %s", err.message);
        /* Read it again before reopening, once Redis is back: reopening from what was sent
         * would skip what the dead worker never queued. */
        ex->reload_position = true;
        key = NULL;
    }
    if (WIFSIGNALED(status) && !worker_caused_death(WTERMSIG(status))) {
        /* Killed from outside (kill -9 by an operator, an OOM killer, a SIGHUP): nothing says
         * the event was at fault, so it is retried without counting toward
         * FTSYNC_WORKER_CRASH_LIMIT (issue 13, item 3). Careful mode is kept as it was. */
        fts_log(FTS_LOG_WARN, COMPONENT,
                "transform worker killed from outside (%s); restarting it from the saved "
                "position, not counted as a crash on the event",
                text);
    } else if (WIFSIGNALED(status)) {
        /* Only a crash of a careful worker (which checkpoints after every event) pins the
         * event right after the saved position as the one it dies on. */
        if (was_careful && key && ex->crash_key && strcmp(key, ex->crash_key) == 0) {
            ex->crash_count++;
        } else {
            bson_free(ex->crash_key);
            ex->crash_key = key ? bson_strdup(key) : NULL;
            ex->crash_count = 1;
        }
        ex->crash_signal = WTERMSIG(status);
        fts_log(FTS_LOG_ERROR, COMPONENT,
                "transform worker crashed; restarting it from the saved position in "
                "careful mode (%s) crashes_here=%u limit=%u",
                text, ex->crash_count, ex->options->worker_crash_limit);
        if (ex->crash_count >= ex->options->worker_crash_limit) {
            ex->dead_letter_next = true;
        }
        bson_free(ex->careful_until);
        ex->careful_until = last_sent ? bson_strdup(last_sent) : NULL;
        ex->careful_session = ex->careful_until != NULL;
    } else {
        ex->careful_session = false;
        fts_log(FTS_LOG_WARN, COMPONENT, "transform worker ended; restarting it (%s)", text);
    }
    bson_free(last_sent);
    bson_free(key);
    uint64_t delay = fts_backoff_next_ms(&ex->worker_backoff);
    if (!wait_maintaining(ex, delay)) {
        *end = fts_signals_stop_requested() ? SESSION_STOP : SESSION_LEASE_LOST;
        return STEP_END;
    }
    fts_metric_add(FTS_METRIC_WORKER_RESTARTS, 0, 1);
    if (!spawn_worker(ex, &err)) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot start the worker: %s", err.message);
        ex->exit_status = FTS_EXTRACT_EXIT_FAILURE;
        *end = SESSION_FATAL;
        return STEP_END;
    }
    return STEP_REOPEN;
}

/* Checks (without blocking) whether the worker ended. */
static step_t check_worker(extract_t *ex, session_end_t *end)
{
    if (!ex->worker->ops->running(ex->worker->context)) {
        return STEP_OK;
    }
    int status = 0;
    if (ex->worker->ops->reap(ex->worker->context, false, &status)) {
        return worker_ended(ex, status, end);
    }
    return STEP_OK;
}

/* A frame could not be written: the worker is gone or going; reap it. */
static step_t worker_gone(extract_t *ex, session_end_t *end)
{
    int status = 0;
    ex->worker->ops->close(ex->worker->context);
    if (ex->worker->ops->running(ex->worker->context) &&
        !ex->worker->ops->reap(ex->worker->context, true, &status)) {
        status = 0;
    }
    return worker_ended(ex, status, end);
}

/* A source error. History lost: resync or stop. Anything else: back off and reopen. */
static step_t source_failed(extract_t *ex, const fts_error_t *err, session_end_t *end)
{
    fts_signal_set(FTS_SIGNAL_MONGO_OK, 0);
    mongo_outcome(err);
    if (err->code == FTS_SOURCE_HISTORY_LOST) {
        ex->history_lost_count++;
        fts_metric_add(FTS_METRIC_HISTORY_LOST, 0, 1);
        if (ex->options->on_history_lost == FTS_ON_HISTORY_LOST_STOP) {
            fts_log(FTS_LOG_ERROR, COMPONENT,
                    "stopped: change stream history lost: the saved position is no "
                    "longer in the oplog; run `ftsync reset-token --clear --yes` to snapshot the "
                    "collection again: %s history_lost_total=%llu state=error",
                    err->message, (unsigned long long)ex->history_lost_count);
            ex->exit_status = FTS_EXTRACT_EXIT_STOPPED;
            *end = SESSION_FATAL;
            return STEP_END;
        }
        fts_log(FTS_LOG_ERROR, COMPONENT,
                "change stream history lost: resyncing (a new snapshot, then a sweep of "
                "documents deleted meanwhile): %s history_lost_total=%llu",
                err->message, (unsigned long long)ex->history_lost_count);
        /* Let the worker queue and checkpoint what it has, so nothing re-creates the old
         * position after it is cleared; then clear it. */
        int status = drain_worker(ex);
        if (status != -1 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            return worker_ended(ex, status, end);
        }
        fts_error_t clear_err;
        while (!ex->queue->ops->clear_position(ex->queue->context, true, &clear_err)) {
            redis_outcome(&clear_err);
            fts_log(FTS_LOG_ERROR, COMPONENT, "cannot clear the position: %s", clear_err.message);
            if (!wait_maintaining(ex, fts_backoff_next_ms(&ex->source_backoff))) {
                *end = fts_signals_stop_requested() ? SESSION_STOP : SESSION_LEASE_LOST;
                return STEP_END;
            }
        }
        clear_pos(ex);
        ex->resync = true;
        if (!spawn_worker(ex, &clear_err)) {
            ex->exit_status = FTS_EXTRACT_EXIT_FAILURE;
            *end = SESSION_FATAL;
            return STEP_END;
        }
        return STEP_REOPEN;
    }
    fts_log(FTS_LOG_WARN, COMPONENT, "MongoDB failed; reopening from the last position: %s",
            err->message);
    if (!wait_maintaining(ex, fts_backoff_next_ms(&ex->source_backoff))) {
        *end = fts_signals_stop_requested() ? SESSION_STOP : SESSION_LEASE_LOST;
        return STEP_END;
    }
    return STEP_REOPEN;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading                                                                                  */

/* Writes one event (or snapshot document) to the dead-letter stream with the position after
 * it: the worker is fresh and holds nothing, so every action before it is queued. */
static bool dead_letter_here(extract_t *ex, const bson_t *payload,
                             const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    char reason[256];
    snprintf(reason, sizeof reason,
             "the transform worker crashed %u times on this event (signal "
             "%d, %s)",
             ex->crash_count, ex->crash_signal, strsignal(ex->crash_signal));
    char *json = bson_as_relaxed_extended_json(payload, NULL);
    const char *items[] = {"event", json ? json : "(not representable as JSON)"};
    fts_dead_letter_t dead = {.items = items, .count = 2, .reason = reason, .stage = "transform"};
    bool ok = ex->queue->ops->dead_letter(ex->queue->context, &dead, checkpoint, err);
    bson_free(json);
    if (ok) {
        fts_metric_add(FTS_METRIC_DEAD_LETTERS, FTS_STAGE_TRANSFORM, 1);
        fts_log(FTS_LOG_ERROR, COMPONENT, "poison event dead-lettered: %s", reason);
        ex->dead_letter_next = false;
        ex->crash_count = 0;
        bson_free(ex->crash_key);
        ex->crash_key = NULL;
        bson_free(ex->careful_until);
        ex->careful_until = NULL;
    }
    return ok;
}

/* One snapshot document or the end of the scan. */
static step_t scan_step(extract_t *ex, session_end_t *end)
{
    fts_error_t err;
    const bson_t *doc = NULL;
    if (!ex->source->ops->scan_next(ex->source->context, ex->scan, &doc, &err)) {
        return source_failed(ex, &err, end);
    }
    fts_signal_set(FTS_SIGNAL_EXTRACT_LAST_READ_MS, fts_clock_monotonic_ms());
    fts_signal_set(FTS_SIGNAL_MONGO_OK, 1);
    mongo_outcome(NULL);
    if (doc) {
        fts_metric_add(FTS_METRIC_SNAPSHOT_DOCUMENTS, 0, 1);
    }
    if (!doc) {
        ex->source->ops->scan_destroy(ex->source->context, ex->scan);
        ex->scan = NULL;
        if (ex->resync) {
            fts_worker_message_t sweep = {
                .kind = FTS_WORKER_MESSAGE_SWEEP, .ns = ex->ns, .started = ex->snap_time};
            bool sent = send_message(ex, &sweep);
            if (!sent) {
                return worker_gone(ex, end);
            }
            /* resync stays set until a token is saved (load_position): a worker crash before
             * then resumes the snapshot, which ends with the sweep again (harmless). */
        }
        fts_log(FTS_LOG_INFO, COMPONENT,
                "snapshot read; following the change stream "
                "documents=%llu from=%u.%u",
                (unsigned long long)ex->snap_queued, ex->snap_time.seconds,
                ex->snap_time.increment);
        clear_pos(ex);
        ex->pos = POS_TIME;
        if (!open_source(ex, &err)) {
            return source_failed(ex, &err, end);
        }
        return STEP_OK;
    }
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, doc, "_id")) {
        return STEP_OK; /* every stored document has one */
    }
    char *id_json = value_json(bson_iter_value(&iter));
    if (!id_json) {
        return STEP_OK;
    }
    if (ex->last_id.value_type != 0) {
        bson_value_destroy(&ex->last_id);
    }
    bson_value_copy(bson_iter_value(&iter), &ex->last_id);
    ex->snap_queued++;

    if (ex->dead_letter_next) {
        fts_checkpoint_t checkpoint = {
            .kind = FTS_CHECKPOINT_SNAPSHOT,
            .started = ex->snap_time,
            .last_id = id_json,
            .queued = ex->snap_queued,
        };
        bool ok = dead_letter_here(ex, doc, &checkpoint, &err);
        bson_free(id_json);
        if (!ok) {
            return source_failed(ex, &err, end);
        }
        return STEP_OK;
    }
    char *key = bson_strdup_printf("snap:%s", id_json);
    fts_worker_message_t snap = {
        .kind = FTS_WORKER_MESSAGE_SNAPSHOT,
        .payload = doc,
        .ns = ex->ns,
        .started = ex->snap_time,
        .last_id = id_json,
        .queued = ex->snap_queued,
        .careful = careful_for(ex, key),
    };
    bool sent = send_message(ex, &snap);
    bson_free(key);
    bson_free(id_json);
    return sent ? STEP_OK : worker_gone(ex, end);
}

/* One change-stream read. */
static step_t stream_step(extract_t *ex, session_end_t *end)
{
    fts_error_t err;
    fts_source_next_t what;
    const bson_t *event = NULL;
    if (!ex->source->ops->next(ex->source->context, &what, &event, &err)) {
        return source_failed(ex, &err, end);
    }
    /* Any answer, an idle one too, is the progress /healthz looks for. */
    fts_signal_set(FTS_SIGNAL_EXTRACT_LAST_READ_MS, fts_clock_monotonic_ms());
    fts_signal_set(FTS_SIGNAL_MONGO_OK, 1);
    mongo_outcome(NULL);
    if (what == FTS_SOURCE_NEXT_EVENT) {
        fts_metric_add(FTS_METRIC_EVENTS_READ, 0, 1);
    }
    char *token = ex->source->ops->resume_token_json(ex->source->context);
    if (!token) {
        return STEP_OK; /* no token yet: nothing to save */
    }
    fts_token_kind_t kind = ex->source->ops->token_needs_start_after(ex->source->context)
                                ? FTS_TOKEN_START_AFTER
                                : FTS_TOKEN_RESUME;
    bool changed = ex->pos != POS_TOKEN || !ex->token || strcmp(ex->token, token) != 0 ||
                   ex->token_kind != kind;
    step_t result = STEP_OK;
    if (what == FTS_SOURCE_NEXT_EVENT) {
        bson_iter_t iter;
        if (bson_iter_init_find(&iter, event, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&iter)) {
            bson_iter_timestamp(&iter, &ex->cluster_time.seconds, &ex->cluster_time.increment);
        }
        if (ex->dead_letter_next) {
            fts_checkpoint_t checkpoint = {
                .kind = FTS_CHECKPOINT_TOKEN,
                .token = token,
                .token_kind = kind,
                .cluster_time = ex->cluster_time,
            };
            if (!dead_letter_here(ex, event, &checkpoint, &err)) {
                bson_free(token);
                return source_failed(ex, &err, end);
            }
        } else {
            char *key = bson_strdup_printf("token:%s", token);
            fts_worker_message_t message = {
                .kind = FTS_WORKER_MESSAGE_EVENT,
                .payload = event,
                .token = token,
                .token_kind = kind,
                .careful = careful_for(ex, key),
            };
            bool sent = send_message(ex, &message);
            bson_free(key);
            if (!sent) {
                bson_free(token);
                return worker_gone(ex, end);
            }
        }
    } else if (changed) {
        /* Idle or invalidated: the token moved without an event to queue. */
        fts_worker_message_t message = {.kind = FTS_WORKER_MESSAGE_TOKEN,
                                        .token = token,
                                        .token_kind = kind,
                                        .cluster_time = ex->cluster_time};
        bool sent = send_message(ex, &message);
        if (!sent) {
            bson_free(token);
            return worker_gone(ex, end);
        }
    }
    clear_pos(ex);
    ex->pos = POS_TOKEN;
    ex->token = bson_strdup(token);
    ex->token_kind = kind;
    bson_free(token);
    if (what == FTS_SOURCE_NEXT_INVALIDATED) {
        fts_log(FTS_LOG_WARN, COMPONENT,
                "change stream invalidated (collection dropped "
                "or renamed); reopening with startAfter ns=%s",
                ex->ns);
        ex->token_kind = FTS_TOKEN_START_AFTER;
        result = STEP_REOPEN;
    }
    fts_backoff_reset(&ex->source_backoff);
    return result;
}

/* The lease is ours: read until a stop, a lost lease or a fatal error. */
static session_end_t run_session(extract_t *ex)
{
    fts_error_t err;
    session_end_t end = SESSION_STOP;
    uint64_t now = fts_clock_monotonic_ms();
    ex->next_renew_ms = now + ex->options->lease_ttl_ms / 3;
    ex->next_backlog_ms = now;
    ex->next_trim_ms = now + ex->options->trim_interval_ms;
    ex->paused = false;

    while (!ex->queue->ops->ensure_group(ex->queue->context, &err)) {
        redis_outcome(&err);
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot create the loaders' group: %s", err.message);
        if (!wait_maintaining(ex, fts_backoff_next_ms(&ex->source_backoff))) {
            return fts_signals_stop_requested() ? SESSION_STOP : SESSION_LEASE_LOST;
        }
    }
    if (!ex->worker->ops->running(ex->worker->context) && !spawn_worker(ex, &err)) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot start the worker: %s", err.message);
        ex->exit_status = FTS_EXTRACT_EXIT_FAILURE;
        return SESSION_FATAL;
    }
    bool reload = true; /* read the saved position before opening */
    bool need_open = true;
    for (;;) {
        if (fts_signals_stop_requested()) {
            return SESSION_STOP;
        }
        if (!maintain(ex)) {
            return SESSION_LEASE_LOST;
        }
        step_t step = check_worker(ex, &end);
        if (step == STEP_END) {
            return end;
        }
        if (step == STEP_REOPEN) {
            /* worker_ended read the saved position back (or asks for it to be read). */
            need_open = true;
            reload = ex->reload_position;
            continue;
        }
        if (need_open) {
            if (reload && !load_position(ex, NULL, &err)) {
                fts_log(FTS_LOG_ERROR, COMPONENT, "cannot read the saved position: %s",
                        err.message);
                if (!wait_maintaining(ex, fts_backoff_next_ms(&ex->source_backoff))) {
                    return fts_signals_stop_requested() ? SESSION_STOP : SESSION_LEASE_LOST;
                }
                continue;
            }
            reload = false;
            ex->reload_position = false;
            if (!open_source(ex, &err)) {
                step = source_failed(ex, &err, &end);
                if (step == STEP_END) {
                    return end;
                }
                continue; /* reopen from ex's position (cleared after a resync) */
            }
            need_open = false;
            mongo_outcome(NULL);
            fts_log(FTS_LOG_INFO, COMPONENT, "reading ns=%s from=%s", ex->ns,
                    ex->scan               ? "snapshot"
                    : ex->pos == POS_TOKEN ? "token"
                                           : "snapshot time");
        }
        if (ex->paused) {
            if (!wait_maintaining(ex, IDLE_SLICE_MS * 2)) {
                return fts_signals_stop_requested() ? SESSION_STOP : SESSION_LEASE_LOST;
            }
            continue;
        }
        step = ex->scan ? scan_step(ex, &end) : stream_step(ex, &end);
        if (step == STEP_END) {
            return end;
        }
        if (step == STEP_REOPEN) {
            need_open = true;
            reload = ex->reload_position;
        }
    }
}

/* Waits as standby until the lease is ours. false: a stop was requested. */
static bool acquire_lease(extract_t *ex)
{
    fts_error_t err;
    char last_holder[FTS_LEASE_HOLDER_SIZE] = "";
    uint64_t interval = ex->options->lease_ttl_ms / 3;
    while (!fts_signals_stop_requested()) {
        fts_lease_status_t status;
        if (ex->lease->ops->acquire(ex->lease->context, &status, &err)) {
            redis_outcome(NULL);
            if (status.state == FTS_LEASE_ACQUIRED) {
                /* The stall clock starts with the session. */
                fts_signal_set(FTS_SIGNAL_EXTRACT_LAST_READ_MS, fts_clock_monotonic_ms());
                fts_signal_set(FTS_SIGNAL_EXTRACT_REDIS_OK, 1);
                fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_ACTIVE);
                fts_metric_set(FTS_METRIC_LEASE_HELD, 0, 1);
                fts_log(FTS_LOG_INFO, COMPONENT,
                        "extractor lease acquired: active "
                        "(owner %s)",
                        ex->lease->ops->owner(ex->lease->context));
                return true;
            }
            fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_STANDBY);
            if (strcmp(last_holder, status.holder) != 0) {
                fts_log(FTS_LOG_INFO, COMPONENT,
                        "standby: the extractor lease is held "
                        "(holder %s, expires in %lld ms)",
                        status.holder, (long long)status.holder_ttl_ms);
                snprintf(last_holder, sizeof last_holder, "%s", status.holder);
            }
        } else {
            redis_outcome(&err);
            fts_log(FTS_LOG_WARN, COMPONENT, "cannot reach the lease: %s", err.message);
        }
        fts_signals_sleep_ms((unsigned long)interval);
    }
    return false;
}

/* ---------------------------------------------------------------------------------------- */
/* The run                                                                                  */

int fts_extract_run(const fts_extract_options_t *options, const fts_extract_ports_t *ports)
{
    extract_t ex;
    memset(&ex, 0, sizeof ex);
    ex.options = options;
    ex.source = ports->source;
    ex.queue = ports->queue;
    ex.lease = ports->lease;
    ex.worker = ports->worker;
    ex.exit_status = FTS_EXTRACT_EXIT_OK;
    snprintf(ex.ns, sizeof ex.ns, "%s.%s", options->db, options->collection);
    fts_backoff_init(&ex.worker_backoff, RETRY_BASE_MS, RETRY_CAP_MS, 0);
    fts_backoff_init(&ex.source_backoff, RETRY_BASE_MS, RETRY_CAP_MS, 0);
    if (ex.worker->ops->running(ex.worker->context)) {
        ex.worker_started_ms = fts_clock_monotonic_ms();
    }
    fts_error_t err;
    int status = FTS_EXTRACT_EXIT_FAILURE;

    for (;;) {
        if (!acquire_lease(&ex)) {
            status = FTS_EXTRACT_EXIT_OK; /* stopped while standby */
            break;
        }
        session_end_t end = run_session(&ex);
        fts_metric_set(FTS_METRIC_LEASE_HELD, 0, 0);
        fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_STANDBY);
        ex.source->ops->scan_destroy(ex.source->context, ex.scan);
        ex.scan = NULL;
        ex.source->ops->close(ex.source->context);
        if (end == SESSION_LEASE_LOST) {
            /* Someone else may be active: stop this worker at once, whatever it holds (the
             * new holder re-reads from the saved position; replays are harmless). */
            kill_worker(&ex);
            clear_pos(&ex);
            continue;
        }
        if (end == SESSION_STOP) {
            /* Clean stop: the worker queues and checkpoints every frame it got, then exits. */
            int ws = drain_worker(&ex);
            char text[128];
            fts_wait_status_describe(ws, text, sizeof text);
            status = (ws == -1 || (WIFEXITED(ws) && WEXITSTATUS(ws) == 0))
                         ? FTS_EXTRACT_EXIT_OK
                         : FTS_EXTRACT_EXIT_FAILURE;
            fts_log(status == FTS_EXTRACT_EXIT_OK ? FTS_LOG_INFO : FTS_LOG_ERROR, COMPONENT,
                    "stopping: the worker queued what it had (worker: %s)",
                    ws == -1 ? "none" : text);
        } else {
            status = ex.exit_status;
        }
        fts_lease_status_t lease_status;
        if (!ex.lease->ops->release(ex.lease->context, &lease_status, &err)) {
            fts_log(FTS_LOG_WARN, COMPONENT,
                    "cannot release the lease (it expires by "
                    "itself): %s",
                    err.message);
        }
        break;
    }
    fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_NONE);
    fts_log(FTS_LOG_INFO, COMPONENT, "stopped exit_status=%d history_lost_total=%llu", status,
            (unsigned long long)ex.history_lost_count);

    clear_pos(&ex);
    bson_free(ex.crash_key);
    bson_free(ex.careful_until);
    bson_free(ex.last_sent_key);
    ex.source->ops->scan_destroy(ex.source->context, ex.scan);
    return status;
}
