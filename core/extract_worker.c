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
 *      the parent turns into a clear error state;
 *   7. with the id map on (README.md, Extract: the id map), a delete the event cannot name is
 *      named by the map, and one the map does not know either is dead-lettered with a reason
 *      naming its _id (counted; never guessed, never a stop), unless the map is known complete
 *      at the delete's time (below); an update that changed the id field's value deletes the
 *      old index id before indexing the new one. Where two documents can map to one index id
 *      (fts_transform_owners), every action goes to the queue with the _id of its document,
 *      and the queue dead-letters, in the append itself, an action whose index id another
 *      document holds (README.md, Extract: index ids): the check needs the owners as they are
 *      when the entries are written, which only the queue has.
 * A snapshot ends with a sweep at its start time V, and the sweep's append writes V into the
 * map under ID_MAP_COMPLETE_SINCE too. (With FTSYNC_NS_FIELD=off only a resync has a sweep,
 * which load dead-letters asking for the documents below V to be removed by hand: that covers
 * the deletes below as well.) From V on the map knows every document the
 * snapshot or a later event indexed, so a delete at or after V of a document it does not know
 * was deleted before the scan reached it: this snapshot never indexed it, and the sweep
 * removes any older copy (its version is below V). Such a delete is counted and logged, not
 * dead-lettered. The marker lives in the map's own hash, so a Redis that loses the map loses
 * the marker with it.
 * The map is resolved when a batch is flushed: one id_map_get (HMGET) for every event of the
 * batch that reads it, then the batch is walked in order over an overlay of the map as the
 * batch changes it (an insert and a delete of one document can be in one batch), and the
 * resulting map changes go into the same append as the entries and the checkpoint.
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

/* The id map's field holding "<seconds>.<increment>" of the latest sweep's snapshot time (see
 * the top of this file). Source ids are canonical extended JSON, which never looks like this. */
#define ID_MAP_COMPLETE_SINCE "complete-since"

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

/* One produced action of the batch, with what it means for the id map. */
typedef struct {
    fts_action_t action;
    fts_id_map_need_t need;
    char *event_json; /* LOOKUP only: the event, for a dead letter when the map does not know
                       * the document; owned */
    char *owner;      /* with owners on: the _id of the document the action is about
                       * (canonical extended JSON), NULL for a drop or sweep; owned */
} item_t;

typedef struct {
    const fts_queue_port_t *queue;
    fts_transform_t *transform;
    size_t capacity;
    item_t *items;
    size_t count;
    pending_position_t position;
    uint64_t unknown_deletes;     /* events dead-lettered because no index id could be named */
    uint64_t deletes_not_indexed; /* deletes of documents the snapshot never indexed */
    uint64_t collisions;          /* actions dead-lettered because another document holds their
                                   * index id */
} worker_t;

/* ---- The overlay: the id map as the batch so far changes it ---- */

typedef struct {
    const char *key; /* borrowed from an item's need */
    char *value;     /* owned; NULL: no entry (unknown, or removed) */
    bool touched;    /* the batch changed it: written with the append */
} overlay_slot_t;

typedef struct {
    overlay_slot_t *slots;
    size_t size; /* a power of two, at least twice the keys */
} overlay_t;

static uint64_t key_hash(const char *key)
{
    uint64_t hash = 1469598103934665603ull; /* FNV-1a */
    for (; *key; key++) {
        hash = (hash ^ (unsigned char)*key) * 1099511628211ull;
    }
    return hash;
}

static void overlay_init(overlay_t *overlay, size_t keys)
{
    overlay->size = 16;
    while (overlay->size < 2 * keys) {
        overlay->size *= 2;
    }
    overlay->slots = bson_malloc0(overlay->size * sizeof *overlay->slots);
}

/* The slot of key, added (no value, untouched) when absent; *added says which. */
static overlay_slot_t *overlay_slot(overlay_t *overlay, const char *key, bool *added)
{
    size_t i = (size_t)key_hash(key) & (overlay->size - 1);
    while (overlay->slots[i].key && strcmp(overlay->slots[i].key, key) != 0) {
        i = (i + 1) & (overlay->size - 1);
    }
    *added = !overlay->slots[i].key;
    overlay->slots[i].key = key;
    return &overlay->slots[i];
}

static void overlay_set(overlay_slot_t *slot, const char *value, size_t len)
{
    bson_free(slot->value);
    slot->value = value ? bson_strndup(value, len) : NULL;
    slot->touched = true;
}

static void overlay_cleanup(overlay_t *overlay)
{
    for (size_t i = 0; i < overlay->size; i++) {
        bson_free(overlay->slots[i].value);
    }
    bson_free(overlay->slots);
    memset(overlay, 0, sizeof *overlay);
}

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

static void item_clear(item_t *item)
{
    fts_action_cleanup(&item->action);
    fts_id_map_need_cleanup(&item->need);
    bson_free(item->event_json);
    item->event_json = NULL;
    bson_free(item->owner);
    item->owner = NULL;
}

/* What one flush sends, built from the items. */
typedef struct {
    fts_action_t **actions; /* in stream order; borrowed from items or extra */
    const char **owners;    /* owners[i]: the _id of actions[i]'s document; borrowed */
    size_t count;
    fts_action_t *extra; /* the deletes of ids an update replaced; owned */
    size_t extra_count;
    fts_dead_letter_t *dead; /* deletes nobody could name */
    const char **dead_items; /* 2 per dead letter: "event", json (borrowed) */
    char **reasons;          /* owned */
    size_t dead_count;
    fts_id_map_change_t *map;
    size_t map_count;
    overlay_slot_t *overlay_slots; /* what map points into; freed by flush */
    size_t overlay_size;
} flush_plan_t;

static void plan_cleanup(flush_plan_t *plan)
{
    for (size_t i = 0; i < plan->extra_count; i++) {
        fts_action_cleanup(&plan->extra[i]);
    }
    for (size_t i = 0; i < plan->dead_count; i++) {
        bson_free(plan->reasons[i]);
    }
    bson_free(plan->actions);
    bson_free(plan->owners);
    bson_free(plan->extra);
    bson_free(plan->dead);
    bson_free(plan->dead_items);
    bson_free(plan->reasons);
    bson_free(plan->map);
    memset(plan, 0, sizeof *plan);
}

/* A delete of the index id an update or replace replaced (prior), with the item's version. */
static fts_action_t *plan_extra_delete(flush_plan_t *plan, const fts_action_t *index,
                                       const char *prior, size_t prior_len)
{
    fts_action_t *extra = &plan->extra[plan->extra_count++];
    fts_action_init(extra);
    extra->op = FTS_ACTION_DELETE;
    extra->origin = index->origin;
    extra->ts_seconds = index->ts_seconds;
    extra->ts_increment = index->ts_increment;
    extra->version = index->version;
    extra->ns = bson_strdup(index->ns);
    extra->id = bson_strndup(prior, prior_len);
    extra->id_len = prior_len;
    return extra;
}

static void plan_dead_letter(worker_t *worker, flush_plan_t *plan, item_t *item, char *reason)
{
    size_t n = plan->dead_count++;
    plan->dead_items[2 * n] = "event";
    plan->dead_items[2 * n + 1] =
        item->event_json ? item->event_json : "(the event is not kept; see the reason)";
    plan->reasons[n] = reason;
    plan->dead[n] = (fts_dead_letter_t){
        .items = &plan->dead_items[2 * n], .count = 2, .reason = reason, .stage = "transform"};
    worker->unknown_deletes++;
    /* Counted when found; the queue logs it again once it is written (a failed append re-sends
     * the batch, which finds it again). */
    fts_log(FTS_LOG_WARN, COMPONENT,
            "event to dead-letter with this batch: %s unknown_delete_total=%llu", reason,
            (unsigned long long)worker->unknown_deletes);
}

/* True if the map, as the batch so far left it, is complete at action's time: a sweep at
 * or before it wrote ID_MAP_COMPLETE_SINCE (see the top of this file). */
static bool map_complete_at(overlay_t *overlay, const fts_action_t *action)
{
    bool added;
    const overlay_slot_t *slot = overlay_slot(overlay, ID_MAP_COMPLETE_SINCE, &added);
    unsigned seconds, increment;
    char end;
    if (!slot->value || sscanf(slot->value, "%u.%u%c", &seconds, &increment, &end) != 2) {
        return false; /* no sweep since the map began, or a hand-edited value */
    }
    return action->ts_seconds > seconds ||
           (action->ts_seconds == seconds && action->ts_increment >= increment);
}

/* Resolves the id map for the batch (see the top of this file) into plan. */
static bool plan_build(worker_t *worker, flush_plan_t *plan, fts_error_t *err)
{
    bool ok = false;
    size_t reads = 0;
    const char **keys = NULL;
    char **values = NULL;
    overlay_t overlay = {0};
    fts_error_t invalid;
    memset(plan, 0, sizeof *plan);
    plan->actions = bson_malloc0((2 * worker->count + 1) * sizeof *plan->actions);
    plan->owners = bson_malloc0((2 * worker->count + 1) * sizeof *plan->owners);
    plan->extra = bson_malloc0((worker->count + 1) * sizeof *plan->extra);
    plan->dead = bson_malloc0((worker->count + 1) * sizeof *plan->dead);
    plan->dead_items = bson_malloc0((2 * worker->count + 1) * sizeof *plan->dead_items);
    plan->reasons = bson_malloc0((worker->count + 1) * sizeof *plan->reasons);
    plan->map = bson_malloc0((worker->count + 1) * sizeof *plan->map);

    /* The map as it is before the batch, for every document the batch reads it for. */
    keys = bson_malloc0((worker->count + 1) * sizeof *keys);
    values = bson_malloc0((worker->count + 1) * sizeof *values);
    bool lookups = false;
    for (size_t i = 0; i < worker->count; i++) {
        fts_id_map_use_t use = worker->items[i].need.use;
        if ((use == FTS_ID_MAP_CHANGE && !worker->items[i].need.prior_id) ||
            use == FTS_ID_MAP_LOOKUP || use == FTS_ID_MAP_LOOKUP_KEEP) {
            keys[reads++] = worker->items[i].need.source_id;
        }
        lookups = lookups || use == FTS_ID_MAP_LOOKUP;
    }
    if (lookups) { /* a delete the map does not know asks whether the map is complete */
        keys[reads++] = ID_MAP_COMPLETE_SINCE;
    }
    if (reads > 0 &&
        !worker->queue->ops->id_map_get(worker->queue->context, keys, reads, values, err)) {
        goto cleanup;
    }
    overlay_init(&overlay, worker->count + 1); /* + ID_MAP_COMPLETE_SINCE */
    for (size_t i = 0; i < reads; i++) {
        bool added;
        overlay_slot_t *slot = overlay_slot(&overlay, keys[i], &added);
        if (added) {
            slot->value = values[i];
            values[i] = NULL;
        }
    }

    /* The batch in order, over the overlay. */
    for (size_t i = 0; i < worker->count; i++) {
        item_t *item = &worker->items[i];
        fts_id_map_need_t *need = &item->need;
        fts_action_t *action = &item->action;
        bool added;
        overlay_slot_t *slot =
            need->use != FTS_ID_MAP_NONE ? overlay_slot(&overlay, need->source_id, &added) : NULL;
        if (action->op == FTS_ACTION_SWEEP && fts_transform_id_map(worker->transform)) {
            char since[32];
            int len =
                snprintf(since, sizeof since, "%u.%u", action->ts_seconds, action->ts_increment);
            overlay_set(overlay_slot(&overlay, ID_MAP_COMPLETE_SINCE, &added), since, (size_t)len);
        }
        switch (need->use) {
        case FTS_ID_MAP_NONE:
            break;
        case FTS_ID_MAP_SET:
            overlay_set(slot, action->id, action->id_len);
            break;
        case FTS_ID_MAP_CHANGE: {
            const char *prior = need->prior_id ? need->prior_id : slot->value;
            size_t prior_len = need->prior_id ? need->prior_id_len : (prior ? strlen(prior) : 0);
            if (prior && (prior_len != action->id_len || memcmp(prior, action->id, prior_len))) {
                /* The id field changed: the old index document goes first (invariant 7). */
                fts_action_t *extra = plan_extra_delete(plan, action, prior, prior_len);
                if (fts_action_validate(extra, &invalid)) {
                    /* Same document: it releases the old index id, the index claims the new. */
                    plan->owners[plan->count] = item->owner;
                    plan->actions[plan->count++] = extra;
                } else {
                    plan_dead_letter(worker, plan, item,
                                     bson_strdup_printf("transform failed: update of _id %s: its "
                                                        "former index id (from the id map) is "
                                                        "not an index id, so it is not deleted: "
                                                        "%s",
                                                        need->source_id, invalid.message));
                }
            }
            overlay_set(slot, action->id, action->id_len);
            break;
        }
        case FTS_ID_MAP_REMOVE:
            overlay_set(slot, NULL, 0);
            break;
        case FTS_ID_MAP_LOOKUP:
        case FTS_ID_MAP_LOOKUP_KEEP:
            if (!slot->value) {
                if (need->use == FTS_ID_MAP_LOOKUP && map_complete_at(&overlay, action)) {
                    worker->deletes_not_indexed++;
                    fts_metric_add(FTS_METRIC_DELETES_NOT_INDEXED, 0, 1);
                    fts_log(FTS_LOG_INFO, COMPONENT,
                            "delete of _id %s at %u.%u on %s: not indexed (deleted after the "
                            "snapshot began, before its scan reached it); nothing to delete, "
                            "the snapshot's sweep removes any older copy "
                            "deletes_not_indexed_total=%llu",
                            need->source_id, action->ts_seconds, action->ts_increment, action->ns,
                            (unsigned long long)worker->deletes_not_indexed);
                } else if (need->use == FTS_ID_MAP_LOOKUP) {
                    plan_dead_letter(
                        worker, plan, item,
                        bson_strdup_printf(
                            "transform failed: delete of _id %s at %u.%u on %s: the event does "
                            "not carry the id field and the id map does not know the document: "
                            "deleted while a snapshot ran, before the scan reached it (then it "
                            "was never indexed from this snapshot), indexed before the map "
                            "existed, or the map was lost; if the index still holds it, remove "
                            "it by hand (a re-snapshot rebuilds the map)",
                            need->source_id, action->ts_seconds, action->ts_increment, action->ns));
                }
                /* LOOKUP_KEEP: the delete event that follows speaks for it. */
                continue;
            }
            action->id_len = strlen(slot->value);
            action->id = bson_strndup(slot->value, action->id_len);
            if (need->use == FTS_ID_MAP_LOOKUP) {
                overlay_set(slot, NULL, 0);
            }
            if (!fts_action_validate(action, &invalid)) {
                /* Only a hand-edited map holds an id the index would refuse. */
                plan_dead_letter(worker, plan, item,
                                 bson_strdup_printf("transform failed: delete of _id %s: the id "
                                                    "map's entry is not an index id: %s",
                                                    need->source_id, invalid.message));
                continue;
            }
            break;
        }
        plan->owners[plan->count] = item->owner;
        plan->actions[plan->count++] = action;
    }
    for (size_t i = 0; i < overlay.size; i++) {
        overlay_slot_t *slot = &overlay.slots[i];
        if (slot->key && slot->touched) {
            plan->map[plan->map_count++] =
                (fts_id_map_change_t){.source_id = slot->key,
                                      .index_id = slot->value,
                                      .index_id_len = slot->value ? strlen(slot->value) : 0};
        }
    }
    ok = true;

cleanup:
    for (size_t i = 0; i < reads; i++) {
        bson_free(values[i]);
    }
    bson_free(values);
    bson_free(keys);
    if (!ok) {
        overlay_cleanup(&overlay);
        plan_cleanup(plan);
        return false;
    }
    /* The map changes point at the overlay's values: keep them until the append is done. */
    plan->overlay_slots = overlay.slots;
    plan->overlay_size = overlay.size;
    return true;
}

/* Appends the batch with the pending position, then empties both. */
static bool flush(worker_t *worker, fts_error_t *err)
{
    if (worker->count == 0 && !worker->position.set) {
        return true;
    }
    bool ok = false;
    flush_plan_t plan;
    fts_action_argv_t *argv = NULL;
    bool *collided = NULL; /* which actions the queue dead-lettered for a collision */
    if (!plan_build(worker, &plan, err)) {
        goto cleanup;
    }
    argv = bson_malloc0((plan.count + 1) * sizeof *argv);
    const char *stream_key = worker->queue->ops->stream_key(worker->queue->context);
    size_t encoded = 0;
    for (size_t i = 0; i < plan.count; i++) {
        /* Every action was validated when it was made, except the id a lookup filled in,
         * which came from an action validated before (the map holds only queued ids). */
        if (!fts_action_encode(plan.actions[i], stream_key, &argv[encoded], err)) {
            fts_error_prefix(err, "an action built from the id map");
            goto cleanup;
        }
        encoded++;
    }
    fts_checkpoint_t checkpoint;
    position_to_checkpoint(&worker->position, &checkpoint);
    collided = bson_malloc0((plan.count + 1) * sizeof *collided);
    fts_queue_batch_t batch = {
        .actions = argv,
        .count = encoded,
        .dead = plan.dead,
        .dead_count = plan.dead_count,
        .map = plan.map,
        .map_count = plan.map_count,
        .owners = fts_transform_owners(worker->transform) ? plan.owners : NULL,
        .collided = collided,
    };
    ok = worker->queue->ops->append(worker->queue->context, &batch,
                                    worker->position.set ? &checkpoint : NULL, err);
    if (ok) { /* counted into the parent's shared block (core/metrics.h) */
        size_t collisions = 0;
        for (size_t i = 0; i < encoded; i++) {
            if (collided[i]) {
                collisions++;
            } else {
                fts_metric_add(FTS_METRIC_ACTIONS_QUEUED, (unsigned)plan.actions[i]->op - 1, 1);
            }
        }
        if (collisions > 0) {
            /* Dead-lettered by the queue instead of queued (the queue logged each reason). */
            worker->collisions += collisions;
            fts_metric_add(FTS_METRIC_DEAD_LETTERS, FTS_STAGE_TRANSFORM, collisions);
            fts_log(FTS_LOG_WARN, COMPONENT,
                    "%zu action(s) dead-lettered: another document holds their index id "
                    "id_collision_total=%llu",
                    collisions, (unsigned long long)worker->collisions);
        }
    }

cleanup:
    if (plan.overlay_slots) {
        overlay_t overlay = {.slots = plan.overlay_slots, .size = plan.overlay_size};
        overlay_cleanup(&overlay);
    }
    plan_cleanup(&plan);
    bson_free(collided);
    bson_free(argv);
    for (size_t i = 0; i < worker->count; i++) {
        item_clear(&worker->items[i]);
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
    item_t *item = &worker->items[worker->count];
    fts_action_t *action = &item->action;
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
        transformed = fts_transform_event_mapped(worker->transform, payload, action, &produced,
                                                 &item->need, &err);
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
        transformed = fts_transform_snapshot_mapped(
            worker->transform, payload, message.ns, message.started.seconds,
            message.started.increment, action, &produced, &item->need, &err);
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
    fts_action_argv_t argv;
    if (produced && item->need.use == FTS_ID_MAP_LOOKUP) {
        /* Its id comes from the map at flush time; a dead letter then needs the event. */
        item->event_json = bson_as_relaxed_extended_json(payload, NULL);
    } else if (produced && item->need.use != FTS_ID_MAP_LOOKUP_KEEP) {
        /* Encoded again at flush: here only to refuse a bad action while the event is at
         * hand. */
        if (!fts_action_encode(action, worker->queue->ops->stream_key(worker->queue->context),
                               &argv, &err)) {
            /* validate refused what the transform made: treat it as a bad event. */
            item_clear(item);
            char reason[FTS_ERROR_MESSAGE_SIZE + 32];
            snprintf(reason, sizeof reason, "action refused: %s", err.message);
            if (!dead_letter_after_batch(worker, payload, reason)) {
                return FTS_WORKER_EXIT_RETRY;
            }
            return -1;
        }
    }
    if (produced && fts_transform_owners(worker->transform) &&
        (action->op == FTS_ACTION_INDEX || action->op == FTS_ACTION_DELETE)) {
        item->owner = message.kind == FTS_WORKER_MESSAGE_SNAPSHOT
                          ? fts_transform_source_id(NULL, payload)
                          : fts_transform_source_id(payload, NULL);
    }
    if (produced) {
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
    worker.items = bson_malloc0(worker.capacity * sizeof *worker.items);
    for (size_t i = 0; i < worker.capacity; i++) {
        fts_action_init(&worker.items[i].action);
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
        item_clear(&worker.items[i]);
    }
    bson_free(worker.items);
    position_clear(&worker.position);
    return status;
}
