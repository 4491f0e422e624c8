/*
 * extract_ports.c - the ports of `ftsync extract` filled from the adapters (extract_ports.h):
 * the MongoDB source, the Redis queue and lease, and the forked transform worker.
 *
 * Fork hygiene (DESIGN.md): the child resets its signals, keeps only stdin/out/err and its
 * socket (as fd 3), and runs the worker, which never calls into libmongoc: a worker forked
 * again after a crash, from a parent that has a MongoDB client, never uses the copy in its
 * memory. The parent reaps with WNOHANG while it reads, and waits only when it drains.
 * Invariant 1 is the queue adapter's (append, dead_letter); this file only converts structs.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "extract_ports.h"
#include "extract_proto.h"
#include "log.h"
#include "signals.h"

#define COMPONENT "extract"

_Static_assert(FTS_SOURCE_HISTORY_LOST == FTS_MONGO_HISTORY_LOST,
               "the source port's history-lost code is the MongoDB adapter's");
_Static_assert(FTS_LEASE_HOLDER_SIZE == FTS_REDIS_LEASE_OWNER_SIZE,
               "a lease holder fits the core's status");
_Static_assert(sizeof(((fts_trim_result_t *)0)->threshold) == FTS_REDIS_STREAM_ID_SIZE,
               "a stream ID fits the core's trim result");

/* ---------------------------------------------------------------------------------------- */
/* Source                                                                                   */

static bool source_open(void *context, const fts_source_position_t *position, fts_error_t *err)
{
    fts_mongo_position_t mongo = {.from = FTS_MONGO_START_AT_TIME};
    mongo.time.seconds = position->time.seconds;
    mongo.time.increment = position->time.increment;
    bson_t *token = NULL;
    if (position->from != FTS_SOURCE_START_AT_TIME) {
        token = fts_mongo_token_from_json(position->token, err);
        if (!token) {
            /* A saved token that is not JSON: no resume is possible, resync. */
            err->domain = FTS_ERROR_MONGO;
            err->code = FTS_MONGO_HISTORY_LOST;
            return false;
        }
        mongo.from = position->from == FTS_SOURCE_START_AFTER ? FTS_MONGO_START_AFTER
                                                              : FTS_MONGO_RESUME_AFTER;
        mongo.token = token;
    }
    bool ok = fts_mongo_source_open(context, &mongo, err);
    bson_destroy(token);
    return ok;
}

static void source_close(void *context)
{
    fts_mongo_source_close(context);
}

static bool source_next(void *context, fts_source_next_t *what, const bson_t **event,
                        fts_error_t *err)
{
    fts_mongo_next_t next = FTS_MONGO_NEXT_IDLE;
    bool ok = fts_mongo_source_next(context, &next, event, err);
    *what = next == FTS_MONGO_NEXT_EVENT         ? FTS_SOURCE_NEXT_EVENT
            : next == FTS_MONGO_NEXT_INVALIDATED ? FTS_SOURCE_NEXT_INVALIDATED
                                                 : FTS_SOURCE_NEXT_IDLE;
    return ok;
}

static char *source_resume_token_json(void *context)
{
    return fts_mongo_source_resume_token_json(context);
}

static bool source_token_needs_start_after(void *context)
{
    return fts_mongo_source_token_needs_start_after(context);
}

static bool source_cluster_time(void *context, fts_timestamp_t *now, fts_error_t *err)
{
    fts_mongo_timestamp_t time = {0, 0};
    if (!fts_mongo_source_cluster_time(context, &time, err)) {
        return false;
    }
    now->seconds = time.seconds;
    now->increment = time.increment;
    return true;
}

static void *source_scan_new(void *context, const char *collection, const bson_value_t *after_id,
                             fts_error_t *err)
{
    return fts_mongo_scan_new(context, collection, after_id, err);
}

static bool source_scan_next(void *context, void *scan, const bson_t **doc, fts_error_t *err)
{
    (void)context;
    return fts_mongo_scan_next(scan, doc, err);
}

static void source_scan_destroy(void *context, void *scan)
{
    (void)context;
    fts_mongo_scan_destroy(scan);
}

void fts_extract_source_port_init(fts_source_port_t *port, fts_mongo_source_t *source)
{
    memset(port, 0, sizeof *port);
    port->context = source;
    port->open = source_open;
    port->close = source_close;
    port->next = source_next;
    port->resume_token_json = source_resume_token_json;
    port->token_needs_start_after = source_token_needs_start_after;
    port->cluster_time = source_cluster_time;
    port->scan_new = source_scan_new;
    port->scan_next = source_scan_next;
    port->scan_destroy = source_scan_destroy;
}

/* ---------------------------------------------------------------------------------------- */
/* Queue                                                                                    */

static void to_redis_checkpoint(const fts_checkpoint_t *in, fts_redis_checkpoint_t *out)
{
    memset(out, 0, sizeof *out);
    out->kind = in->kind == FTS_CHECKPOINT_SNAPSHOT ? FTS_REDIS_CHECKPOINT_SNAPSHOT
                                                    : FTS_REDIS_CHECKPOINT_TOKEN;
    out->token = in->token;
    out->token_kind = in->token_kind == FTS_TOKEN_START_AFTER ? FTS_REDIS_TOKEN_START_AFTER
                                                              : FTS_REDIS_TOKEN_RESUME;
    out->cluster_seconds = in->cluster_time.seconds;
    out->cluster_increment = in->cluster_time.increment;
    out->started_seconds = in->started.seconds;
    out->started_increment = in->started.increment;
    out->last_id = in->last_id;
    out->queued = in->queued;
}

static const char *queue_stream_key(void *context)
{
    return fts_redis_queue_keys(context)->stream;
}

static bool queue_ensure_group(void *context, fts_error_t *err)
{
    return fts_redis_queue_ensure_group(context, err);
}

static bool queue_append(void *context, const fts_action_argv_t *actions, size_t count,
                         const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    fts_redis_checkpoint_t redis;
    if (checkpoint) {
        to_redis_checkpoint(checkpoint, &redis);
    }
    return fts_redis_queue_append(context, actions, count, checkpoint ? &redis : NULL, err);
}

static bool queue_checkpoint(void *context, const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    fts_redis_checkpoint_t redis;
    to_redis_checkpoint(checkpoint, &redis);
    return fts_redis_queue_checkpoint(context, &redis, err);
}

static bool queue_dead_letter(void *context, const fts_dead_letter_t *dead,
                              const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    fts_redis_dead_letter_t redis_dead = {
        .items = dead->items,
        .lens = dead->lens,
        .count = dead->count,
        .reason = dead->reason,
        .stage = dead->stage,
    };
    fts_redis_checkpoint_t redis;
    if (checkpoint) {
        to_redis_checkpoint(checkpoint, &redis);
    }
    return fts_redis_queue_dead_letter(context, &redis_dead, checkpoint ? &redis : NULL, err);
}

static bool queue_read_position(void *context, fts_position_t *position, fts_error_t *err)
{
    fts_redis_position_t saved;
    memset(&saved, 0, sizeof saved);
    memset(position, 0, sizeof *position);
    if (!fts_redis_queue_read_position(context, &saved, err)) {
        return false;
    }
    /* Both free with free(): the strings change hands. */
    position->has_token = saved.has_token;
    position->token = saved.token;
    position->token_kind =
        saved.token_kind == FTS_REDIS_TOKEN_START_AFTER ? FTS_TOKEN_START_AFTER : FTS_TOKEN_RESUME;
    position->cluster_time.seconds = saved.cluster_seconds;
    position->cluster_time.increment = saved.cluster_increment;
    position->has_snapshot = saved.has_snapshot;
    position->started.seconds = saved.started_seconds;
    position->started.increment = saved.started_increment;
    position->last_id = saved.last_id;
    position->queued = saved.queued;
    saved.token = NULL;
    saved.last_id = NULL;
    fts_redis_position_cleanup(&saved);
    return true;
}

static bool queue_clear_position(void *context, fts_error_t *err)
{
    return fts_redis_queue_clear_position(context, err);
}

static bool queue_backlog(void *context, fts_backlog_t *backlog, fts_error_t *err)
{
    fts_redis_backlog_t redis;
    if (!fts_redis_queue_backlog(context, &redis, err)) {
        return false;
    }
    backlog->entries = redis.entries;
    return true;
}

static bool queue_trim(void *context, fts_trim_result_t *result, fts_error_t *err)
{
    fts_redis_trim_t trim;
    memset(&trim, 0, sizeof trim);
    if (!fts_redis_queue_trim(context, &trim, err)) {
        return false;
    }
    if (result) {
        result->removed = trim.removed;
        snprintf(result->threshold, sizeof result->threshold, "%s", trim.threshold);
    }
    return true;
}

void fts_extract_queue_port_init(fts_queue_port_t *port, fts_redis_queue_t *queue)
{
    memset(port, 0, sizeof *port);
    port->context = queue;
    port->stream_key = queue_stream_key;
    port->ensure_group = queue_ensure_group;
    port->append = queue_append;
    port->checkpoint = queue_checkpoint;
    port->dead_letter = queue_dead_letter;
    port->read_position = queue_read_position;
    port->clear_position = queue_clear_position;
    port->backlog = queue_backlog;
    port->trim = queue_trim;
}

/* ---------------------------------------------------------------------------------------- */
/* Lease                                                                                    */

static void to_lease_status(const fts_redis_lease_status_t *in, fts_lease_status_t *out)
{
    out->state = in->state == FTS_REDIS_LEASE_ACQUIRED ? FTS_LEASE_ACQUIRED
                 : in->state == FTS_REDIS_LEASE_HELD   ? FTS_LEASE_HELD
                 : in->state == FTS_REDIS_LEASE_LOST   ? FTS_LEASE_LOST
                                                       : FTS_LEASE_RELEASED;
    snprintf(out->holder, sizeof out->holder, "%s", in->holder);
    out->holder_ttl_ms = in->holder_ttl_ms;
}

static bool lease_acquire(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    fts_redis_lease_status_t redis;
    memset(&redis, 0, sizeof redis);
    if (!fts_redis_lease_acquire(context, &redis, err)) {
        return false;
    }
    to_lease_status(&redis, status);
    return true;
}

static bool lease_renew(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    fts_redis_lease_status_t redis;
    memset(&redis, 0, sizeof redis);
    if (!fts_redis_lease_renew(context, &redis, err)) {
        return false;
    }
    to_lease_status(&redis, status);
    return true;
}

static bool lease_release(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    fts_redis_lease_status_t redis;
    memset(&redis, 0, sizeof redis);
    if (!fts_redis_lease_release(context, &redis, err)) {
        return false;
    }
    to_lease_status(&redis, status);
    return true;
}

static uint64_t lease_remaining_ms(void *context)
{
    return fts_redis_lease_remaining_ms(context);
}

static const char *lease_owner(void *context)
{
    return fts_redis_lease_owner(context);
}

void fts_extract_lease_port_init(fts_lease_port_t *port, fts_redis_lease_t *lease)
{
    memset(port, 0, sizeof *port);
    port->context = lease;
    port->acquire = lease_acquire;
    port->renew = lease_renew;
    port->release = lease_release;
    port->remaining_ms = lease_remaining_ms;
    port->owner = lease_owner;
}

/* ---------------------------------------------------------------------------------------- */
/* The worker process                                                                       */

static bool worker_spawn(void *context, fts_error_t *err)
{
    fts_extract_process_t *process = context;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "socketpair: %s", strerror(errno));
    }
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(sv[0]);
        close(sv[1]);
        return fts_error_set(err, FTS_ERROR_SYSTEM, saved, "fork: %s", strerror(saved));
    }
    if (pid == 0) {
        /* The child: default signal dispositions, but the parent decides when it stops, so
         * the SIGINT of a terminal (sent to the whole group) and a SIGTERM sent to the group
         * are ignored; it stops when the parent closes the socket. A Redis peer hanging up
         * must be an error, not a SIGPIPE. */
        fts_signals_reset();
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        /* Keep stdin/out/err and the socket (as fd 3); close everything else the parent
         * had: its Redis connections and, after a restart, its MongoDB sockets. */
        if (sv[1] != 3 && dup2(sv[1], 3) < 0) {
            _exit(FTS_WORKER_EXIT_RETRY);
        }
        close_range(4, ~0u, 0);
        _exit(fts_extract_worker_main(process->config, 3));
    }
    close(sv[1]);
    process->pid = pid;
    process->channel.fd = sv[0];
    fts_log(FTS_LOG_INFO, COMPONENT, "transform worker started pid=%d", (int)pid);
    return true;
}

static bool worker_running(void *context)
{
    fts_extract_process_t *process = context;
    return process->pid > 0;
}

static void worker_close(void *context)
{
    fts_extract_process_t *process = context;
    if (process->channel.fd >= 0) {
        close(process->channel.fd);
        process->channel.fd = -1;
    }
}

static bool worker_send(void *context, const bson_t *frame, fts_error_t *err)
{
    fts_extract_process_t *process = context;
    return process->channel_port.send(process->channel_port.context, frame, err);
}

static bool worker_reap(void *context, bool block, int *status)
{
    fts_extract_process_t *process = context;
    if (process->pid <= 0) {
        return false;
    }
    if (!block) {
        if (waitpid(process->pid, status, WNOHANG) != process->pid) {
            return false;
        }
        worker_close(process);
        process->pid = 0;
        return true;
    }
    worker_close(process); /* the worker waits for the end of its frames */
    bool reaped = true;
    while (waitpid(process->pid, status, 0) < 0) {
        if (errno != EINTR) {
            reaped = false;
            break;
        }
    }
    process->pid = 0;
    return reaped;
}

static void worker_kill(void *context)
{
    fts_extract_process_t *process = context;
    if (process->pid > 0) {
        kill(process->pid, SIGKILL);
    }
}

void fts_extract_worker_port_init(fts_worker_port_t *port, fts_extract_process_t *process,
                                  const fts_config_t *config)
{
    memset(process, 0, sizeof *process);
    process->config = config;
    fts_socket_channel_init(&process->channel, -1, &process->channel_port);
    memset(port, 0, sizeof *port);
    port->context = process;
    port->spawn = worker_spawn;
    port->running = worker_running;
    port->send = worker_send;
    port->reap = worker_reap;
    port->close = worker_close;
    port->kill = worker_kill;
}

void fts_extract_process_cleanup(fts_extract_process_t *process)
{
    int status = 0;
    worker_close(process);
    worker_reap(process, true, &status);
    fts_socket_channel_cleanup(&process->channel);
}
