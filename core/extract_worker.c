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
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "action.h"
#include "extract_worker.h"
#include "log.h"
#include "transform.h"

#define COMPONENT "worker"

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
    free(position->token);
    free(position->last_id);
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
        fts_action_cleanup(&worker->actions[i]);
    }
    worker->count = 0;
    position_clear(&worker->position);
    return ok;
}

static const char *string_field(const bson_t *doc, const char *name)
{
    bson_iter_t iter;
    if (bson_iter_init_find(&iter, doc, name) && BSON_ITER_HOLDS_UTF8(&iter)) {
        return bson_iter_utf8(&iter, NULL);
    }
    return NULL;
}

static bool timestamp_field(const bson_t *doc, const char *name, uint32_t *seconds,
                            uint32_t *increment)
{
    bson_iter_t iter;
    if (bson_iter_init_find(&iter, doc, name) && BSON_ITER_HOLDS_TIMESTAMP(&iter)) {
        bson_iter_timestamp(&iter, seconds, increment);
        return true;
    }
    return false;
}

static bool document_field(const bson_t *doc, const char *name, bson_t *out)
{
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, doc, name) || !BSON_ITER_HOLDS_DOCUMENT(&iter)) {
        return false;
    }
    uint32_t len = 0;
    const uint8_t *data = NULL;
    bson_iter_document(&iter, &len, &data);
    return bson_init_static(out, data, len);
}

static bool bool_field(const bson_t *doc, const char *name)
{
    bson_iter_t iter;
    return bson_iter_init_find(&iter, doc, name) && BSON_ITER_HOLDS_BOOL(&iter) &&
           bson_iter_bool(&iter);
}

/* Reads a token position from an "event" or "token" frame into worker->position. */
static bool take_token_position(worker_t *worker, const bson_t *frame, uint32_t seconds,
                                uint32_t increment, fts_error_t *err)
{
    const char *token = string_field(frame, "tok");
    const char *kind = string_field(frame, "kind");
    fts_token_kind_t token_kind;
    if (!token || !*token || !kind || !fts_token_kind_parse(kind, &token_kind)) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                             "a frame from the extract parent has no valid tok/kind");
    }
    position_clear(&worker->position);
    worker->position.set = true;
    worker->position.kind = FTS_CHECKPOINT_TOKEN;
    worker->position.token = strdup(token);
    worker->position.token_kind = token_kind;
    worker->position.cluster_seconds = seconds;
    worker->position.cluster_increment = increment;
    return true;
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
    const char *type = string_field(frame, "t");
    bson_t payload;
    fts_action_t *action = &worker->actions[worker->count];
    bool produced = false;
    bool transformed = false;
    bool careful = bool_field(frame, "careful");
    uint32_t seconds = 0, increment = 0;

    if (!type) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "a frame without a type; stopping");
        return FTS_WORKER_EXIT_RETRY;
    }
    if (strcmp(type, "event") == 0) {
        if (!document_field(frame, "ev", &payload)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "an event frame without ev; stopping");
            return FTS_WORKER_EXIT_RETRY;
        }
        timestamp_field(&payload, "clusterTime", &seconds, &increment);
        transformed = fts_transform_event(worker->transform, &payload, action, &produced, &err);
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
        if (!take_token_position(worker, frame, seconds, increment, &err)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "%s", err.message);
            return FTS_WORKER_EXIT_RETRY;
        }
    } else if (strcmp(type, "snap") == 0) {
        const char *ns = string_field(frame, "ns");
        const char *last_id = string_field(frame, "last_id");
        bson_iter_t iter;
        if (!document_field(frame, "doc", &payload) || !ns || !last_id ||
            !timestamp_field(frame, "started", &seconds, &increment) ||
            !bson_iter_init_find(&iter, frame, "queued") || !BSON_ITER_HOLDS_INT64(&iter)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "a malformed snap frame; stopping");
            return FTS_WORKER_EXIT_RETRY;
        }
        transformed = fts_transform_snapshot(worker->transform, &payload, ns, seconds, increment,
                                             action, &produced, &err);
        position_clear(&worker->position);
        worker->position.set = true;
        worker->position.kind = FTS_CHECKPOINT_SNAPSHOT;
        worker->position.started_seconds = seconds;
        worker->position.started_increment = increment;
        worker->position.last_id = strdup(last_id);
        worker->position.queued = (uint64_t)bson_iter_int64(&iter);
    } else if (strcmp(type, "token") == 0) {
        timestamp_field(frame, "ct", &seconds, &increment);
        if (!take_token_position(worker, frame, seconds, increment, &err)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "%s", err.message);
            return FTS_WORKER_EXIT_RETRY;
        }
        return -1;
    } else if (strcmp(type, "sweep") == 0) {
        const char *ns = string_field(frame, "ns");
        if (!ns || !timestamp_field(frame, "started", &seconds, &increment)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "a malformed sweep frame; stopping");
            return FTS_WORKER_EXIT_RETRY;
        }
        fts_action_init(action);
        action->op = FTS_ACTION_SWEEP;
        action->origin = FTS_ACTION_FROM_SNAPSHOT;
        action->version = fts_version_from_timestamp(seconds, increment);
        action->ts_seconds = seconds;
        action->ts_increment = increment;
        action->ns = strdup(ns);
        transformed = produced = true;
    } else {
        fts_log(FTS_LOG_ERROR, COMPONENT, "a frame of unknown type %s; stopping", type);
        return FTS_WORKER_EXIT_RETRY;
    }

    if (!transformed) {
        /* Bad input concerning this one event: dead-letter it, move past it (invariant 5). */
        char reason[FTS_ERROR_MESSAGE_SIZE + 32];
        snprintf(reason, sizeof reason, "transform failed: %s", err.message);
        if (!dead_letter_after_batch(worker, &payload, reason)) {
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
            if (!dead_letter_after_batch(worker, &payload, reason)) {
                return FTS_WORKER_EXIT_RETRY;
            }
            return -1;
        }
        worker->count++;
    }
    if (careful || worker->count == worker->capacity) {
        if (!flush(worker, &err)) {
            fts_log(FTS_LOG_ERROR, COMPONENT, "queueing failed: %s", err.message);
            return FTS_WORKER_EXIT_RETRY;
        }
    }
    return -1;
}

fts_transform_t *fts_extract_worker_transform_new(const fts_config_t *config, fts_error_t *err)
{
    fts_on_drop_t on_drop = FTS_ON_DROP_DELETE;
    fts_on_drop_parse(config->on_drop, &on_drop); /* checked by the parent */
    fts_transform_options_t options = {
        .id_field = config->id_field,
        .fields = &config->fields,
        .on_drop = on_drop,
        .plugin_path = config->transform_plugin,
    };
    return fts_transform_new(&options, err);
}

int fts_extract_worker_loop(fts_transform_t *transform, size_t batch_size,
                            const fts_queue_port_t *queue, const fts_channel_port_t *channel)
{
    int status = FTS_WORKER_EXIT_RETRY;
    fts_error_t err;
    worker_t worker = {0};
    worker.queue = queue;
    worker.transform = transform;
    worker.capacity = batch_size;
    worker.actions = calloc(worker.capacity, sizeof *worker.actions);
    worker.argv = calloc(worker.capacity, sizeof *worker.argv);
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
    if (worker.actions) {
        for (size_t i = 0; i < worker.capacity; i++) {
            fts_action_cleanup(&worker.actions[i]);
        }
    }
    free(worker.actions);
    free(worker.argv);
    position_clear(&worker.position);
    return status;
}
