/*
 * extract_worker.c - the transform worker's loop of `ftsync extract` (extract_worker.h): frames
 * in over the channel port, actions out to the queue port, then the checkpoint of the last frame
 * queued.
 *
 * It runs in a child forked by the extract parent, so that a plugin or a document that crashes
 * the transform takes down only that process. Invariants kept:
 *   1. a position is saved only with, or after, every action of the frames before it: each
 *      flush is one queue append of the batch plus the position of its last frame;
 *   3. versions come from the frames (the event's clusterTime, the snapshot's time);
 *   5. a bad event is dead-lettered with its reason and the position moves past it; an event
 *      only an operator can resolve ends the worker with FTS_WORKER_EXIT_UNSUPPORTED, which
 *      the parent turns into a clear error state.
 * It knows no server: the queue and the channel are ports (extract_ports.h).
 */
#include <stdio.h>
#include <assert.h>
#include <string.h>

#include <bson/bson.h>

#include "action.h"
#include "extract_worker.h"
#include "log.h"
#include "metrics.h"
#include "transform.h"
#include "worker_message.h"

#define COMPONENT "worker"

_Static_assert(FTS_ACTION_INDEX - 1 == FTS_OP_INDEX && FTS_ACTION_DELETE - 1 == FTS_OP_DELETE &&
                   FTS_ACTION_DROP - 1 == FTS_OP_DROP && FTS_ACTION_SWEEP - 1 == FTS_OP_SWEEP,
               "actions_queued{op} labels follow fts_action_op_t");

/* The position after the last frame taken into the batch; strings owned. */
typedef struct {
    bool set;
    fts_checkpoint_kind_t kind;
    char *token;
    fts_token_kind_t token_kind;
    uint32_t cluster_seconds, cluster_increment;
    uint32_t started_seconds, started_increment;
    char *last_id;
    uint64_t queued;
} pending_position_t;

typedef struct {
    const fts_queue_port_t *queue;
    fts_transform_t *transform;
    size_t capacity;
    fts_action_t *actions;
    fts_action_argv_t *argv; /* argv[i] points into actions[i]; never copied */
    size_t count;
    pending_position_t position;
} worker_t;

static void position_clear(pending_position_t *position)
{
    bson_free(position->token);
    bson_free(position->last_id);
    memset(position, 0, sizeof *position);
}

static void position_to_checkpoint(const pending_position_t *position, fts_checkpoint_t *checkpoint)
{
    memset(checkpoint, 0, sizeof *checkpoint);
    checkpoint->kind = position->kind;
    checkpoint->token = position->token;
    checkpoint->token_kind = position->token_kind;
    checkpoint->cluster_time.seconds = position->cluster_seconds;
    checkpoint->cluster_time.increment = position->cluster_increment;
    checkpoint->started.seconds = position->started_seconds;
    checkpoint->started.increment = position->started_increment;
    checkpoint->last_id = position->last_id;
    checkpoint->queued = position->queued;
}

/* Appends the batch with the pending position, then empties both. */
static bool flush(worker_t *worker, fts_error_t *err)
{
    if (worker->count == 0 && !worker->position.set) {
        return true;
    }
    fts_checkpoint_t checkpoint;
    position_to_checkpoint(&worker->position, &checkpoint);
    bool ok = worker->queue->ops->append(worker->queue->context, worker->argv, worker->count,
                                         worker->position.set ? &checkpoint : NULL, err);
    for (size_t i = 0; i < worker->count; i++) {
        if (ok) { /* counted into the parent's shared block (core/metrics.h) */
            fts_metric_add(FTS_METRIC_ACTIONS_QUEUED, (unsigned)worker->actions[i].op - 1, 1);
        }
        fts_action_cleanup(&worker->actions[i]);
    }
    worker->count = 0;
    position_clear(&worker->position);
    return ok;
}

/* Takes the token position of an "event" or "token" message as the pending position. */
static void take_token_position(worker_t *worker, const fts_worker_message_t *message,
                                fts_timestamp_t cluster_time)
{
    position_clear(&worker->position);
    worker->position.set = true;
    worker->position.kind = FTS_CHECKPOINT_TOKEN;
    worker->position.token = bson_strdup(message->token);
    worker->position.token_kind = message->token_kind;
    worker->position.cluster_seconds = cluster_time.seconds;
    worker->position.cluster_increment = cluster_time.increment;
}

/* Dead-letters one event the transform refused, with the position after it. Everything before
 * it was flushed first, as the queue port's dead_letter requires. */
static bool dead_letter(worker_t *worker, const bson_t *payload, const char *reason,
                        fts_error_t *err)
{
    char *json = bson_as_relaxed_extended_json(payload, NULL);
    const char *items[] = {"event", json ? json : "(not representable as JSON)"};
    fts_dead_letter_t dead = {.items = items, .count = 2, .reason = reason, .stage = "transform"};
    fts_checkpoint_t checkpoint;
    position_to_checkpoint(&worker->position, &checkpoint);
    bool ok = worker->queue->ops->dead_letter(worker->queue->context, &dead,
                                              worker->position.set ? &checkpoint : NULL, err);
    bson_free(json);
    position_clear(&worker->position);
    if (ok) {
        fts_metric_add(FTS_METRIC_DEAD_LETTERS, FTS_STAGE_TRANSFORM, 1);
    }
    return ok;
}

/* Queues the batch gathered so far (without this frame's position, which the dead letter
 * writes), then dead-letters this frame's event. False (logged) when the queue failed. */
static bool dead_letter_after_batch(worker_t *worker, const bson_t *payload, const char *reason)
{
    fts_error_t err;
    pending_position_t mine = worker->position;
    memset(&worker->position, 0, sizeof worker->position);
    bool ok = flush(worker, &err);
    worker->position = mine;
    if (!ok || !dead_letter(worker, payload, reason, &err)) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "queueing failed: %s", err.message);
        return false;
    }
    return true;
}

/* Handles one frame. Returns an FTS_WORKER_EXIT_* status to end with, or -1 to go on. */
static int handle_frame(worker_t *worker, const bson_t *frame)
{
    fts_error_t err;
    fts_worker_message_t message;
    if (!fts_worker_message_decode(frame, &message, &err)) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "%s; stopping", err.message);
        return FTS_WORKER_EXIT_RETRY;
    }
    const bson_t *payload = message.payload;
    fts_action_t *action = &worker->actions[worker->count];
    bool produced = false;
    bool transformed = false;

    switch (message.kind) {
    case FTS_WORKER_MESSAGE_EVENT: {
        fts_timestamp_t cluster_time = {0, 0};
        bson_iter_t iter;
        if (bson_iter_init_find(&iter, payload, "clusterTime") &&
            BSON_ITER_HOLDS_TIMESTAMP(&iter)) {
            bson_iter_timestamp(&iter, &cluster_time.seconds, &cluster_time.increment);
        }
        transformed = fts_transform_event(worker->transform, payload, action, &produced, &err);
        if (!transformed && (err.code == FTS_TRANSFORM_UNSUPPORTED_EVENT ||
                             err.code == FTS_TRANSFORM_NEEDS_PRE_IMAGE)) {
            fts_error_t flush_err;
            if (!flush(worker, &flush_err)) {
                fts_log(FTS_LOG_ERROR, COMPONENT, "queueing failed: %s", flush_err.message);
                return FTS_WORKER_EXIT_RETRY;
            }
            fts_log(FTS_LOG_ERROR, COMPONENT,
                    "stopping: an event ftsync cannot follow; the position stays before "
                    "it: %s",
                    err.message);
            return FTS_WORKER_EXIT_UNSUPPORTED;
        }
        take_token_position(worker, &message, cluster_time);
        break;
    }
    case FTS_WORKER_MESSAGE_SNAPSHOT:
        transformed =
            fts_transform_snapshot(worker->transform, payload, message.ns, message.started.seconds,
                                   message.started.increment, action, &produced, &err);
        position_clear(&worker->position);
        worker->position.set = true;
        worker->position.kind = FTS_CHECKPOINT_SNAPSHOT;
        worker->position.started_seconds = message.started.seconds;
        worker->position.started_increment = message.started.increment;
        worker->position.last_id = bson_strdup(message.last_id);
        worker->position.queued = message.queued;
        break;
    case FTS_WORKER_MESSAGE_TOKEN:
        take_token_position(worker, &message, message.cluster_time);
        return -1;
    case FTS_WORKER_MESSAGE_SWEEP:
        fts_action_init(action);
        action->op = FTS_ACTION_SWEEP;
        action->origin = FTS_ACTION_FROM_SNAPSHOT;
        action->version =
            fts_version_from_timestamp(message.started.seconds, message.started.increment);
        action->ts_seconds = message.started.seconds;
        action->ts_increment = message.started.increment;
        action->ns = bson_strdup(message.ns);
        transformed = produced = true;
        break;
    }

    if (!transformed) {
        /* Bad input concerning this one event: dead-letter it, move past it (invariant 5). */
        char reason[FTS_ERROR_MESSAGE_SIZE + 32];
        snprintf(reason, sizeof reason, "transform failed: %s", err.message);
        if (!dead_letter_after_batch(worker, payload, reason)) {
            return FTS_WORKER_EXIT_RETRY;
        }
        fts_log(FTS_LOG_WARN, COMPONENT, "event dead-lettered: %s", reason);
        return -1;
    }
    if (produced) {
        if (!fts_action_encode(action, worker->queue->ops->stream_key(worker->queue->context),
                               &worker->argv[worker->count], &err)) {
            /* validate refused what the transform made: treat it as a bad event. */
            fts_action_cleanup(action);
            char reason[FTS_ERROR_MESSAGE_SIZE + 32];
            snprintf(reason, sizeof reason, "action refused: %s", err.message);
            if (!dead_letter_after_batch(worker, payload, reason)) {
                return FTS_WORKER_EXIT_RETRY;
            }
            return -1;
        }
        worker->count++;
    }
    if (message.careful || worker->count == worker->capacity) {
        if (!flush(worker, &err)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "queueing failed: %s", err.message);
            return FTS_WORKER_EXIT_RETRY;
        }
    }
    return -1;
}

int fts_extract_worker_loop(fts_transform_t *transform, size_t batch_size,
                            const fts_queue_port_t *queue, const fts_channel_port_t *channel)
{
    assert(batch_size > 0);
    int status = FTS_WORKER_EXIT_RETRY;
    fts_error_t err;
    worker_t worker = {0};
    worker.queue = queue;
    worker.transform = transform;
    worker.capacity = batch_size;
    worker.actions = bson_malloc0(worker.capacity * sizeof *worker.actions);
    worker.argv = bson_malloc0(worker.capacity * sizeof *worker.argv);
    for (size_t i = 0; i < worker.capacity; i++) {
        fts_action_init(&worker.actions[i]);
    }

    for (;;) {
        bson_t frame;
        fts_frame_status_t got = channel->ops->receive(channel->context, &frame, &err);
        if (got == FTS_FRAME_READY) {
            int end = handle_frame(&worker, &frame);
            if (end >= 0) {
                status = end;
                goto cleanup;
            }
            continue;
        }
        /* Nothing more right now, the end, or a broken stream: queue what is complete. */
        fts_error_t flush_err;
        if (!flush(&worker, &flush_err)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "queueing failed: %s", flush_err.message);
            status = FTS_WORKER_EXIT_RETRY;
            goto cleanup;
        }
        if (got == FTS_FRAME_END) {
            status = FTS_WORKER_EXIT_OK;
            goto cleanup;
        }
        if (got == FTS_FRAME_ERROR) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "the frame stream broke: %s", err.message);
            status = FTS_WORKER_EXIT_RETRY;
            goto cleanup;
        }
        if (!channel->ops->wait(channel->context)) {
            status = FTS_WORKER_EXIT_RETRY;
            goto cleanup;
        }
    }

cleanup:
    for (size_t i = 0; i < worker.capacity; i++) {
        fts_action_cleanup(&worker.actions[i]);
    }
    bson_free(worker.actions);
    bson_free(worker.argv);
    position_clear(&worker.position);
    return status;
}
