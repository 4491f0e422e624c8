/*
 * test_extract_core.c - the extract loops of core/ (extract_worker.c, extract.c) driven through
 * fake ports in memory, no services: the worker's batching and checkpoints (a batch ends in one
 * append whose checkpoint is its last frame's position; a refused event is dead-lettered with
 * the position after it; a token-only frame checkpoints; a careful frame is queued on its own),
 * and the parent's decisions (backpressure stops reading; history lost with resync clears the
 * position, snapshots again and queues a sweep after the snapshot).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <bson/bson.h>

#include "assertions.h"
#include "extract.h"
#include "extract_worker.h"
#include "extract_ports.h"
#include "signals.h"

/* ---------------------------------------------------------------------------------------- */
/* A queue in memory                                                                        */

#define MAX_RECORDS 64
#define MAX_ACTIONS 16

typedef struct {
    size_t count;
    char ops[MAX_ACTIONS][16];
    char ids[MAX_ACTIONS][64];
    bool has_checkpoint;
    fts_checkpoint_kind_t kind;
    char token[128];
    fts_token_kind_t token_kind;
    fts_timestamp_t cluster_time;
    fts_timestamp_t started;
    char last_id[64];
    uint64_t queued;
    char reason[256]; /* dead letters */
    bool has_owners;  /* the append gave the owners of its actions */
    char owners[MAX_ACTIONS][64];
} record_t;

#define MAX_MAP 64

typedef struct {
    record_t appends[MAX_RECORDS];
    size_t append_count;
    /* The id map: keys[i] -> values[i] ("" = no entry), as the appends left it. */
    char map_keys[MAX_MAP][96];
    char map_values[MAX_MAP][64];
    size_t map_count;
    unsigned map_gets;      /* id_map_get calls */
    size_t map_get_keys[8]; /* how many keys each of the first calls asked for */
    record_t dead[MAX_RECORDS];
    size_t dead_count;
    fts_position_t saved; /* what read_position returns (copied) */
    unsigned clears;
    unsigned reads;
    uint64_t backlog;
    unsigned backlog_calls;
    unsigned backlog_calls_until_stop; /* 0: never */
    unsigned trims;
} fake_queue_t;

static void record_checkpoint(record_t *record, const fts_checkpoint_t *checkpoint)
{
    record->has_checkpoint = checkpoint != NULL;
    if (!checkpoint) {
        return;
    }
    record->kind = checkpoint->kind;
    snprintf(record->token, sizeof record->token, "%s", checkpoint->token ? checkpoint->token : "");
    record->token_kind = checkpoint->token_kind;
    record->cluster_time = checkpoint->cluster_time;
    record->started = checkpoint->started;
    snprintf(record->last_id, sizeof record->last_id, "%s",
             checkpoint->last_id ? checkpoint->last_id : "");
    record->queued = checkpoint->queued;
}

static const char *fq_stream_key(void *context)
{
    (void)context;
    return "ftsync:{t}:stream";
}

static bool fq_ensure_group(void *context, fts_error_t *err)
{
    (void)context;
    (void)err;
    return true;
}

/* The slot of key in the fake map (added empty when absent). */
static size_t map_slot(fake_queue_t *queue, const char *key)
{
    for (size_t i = 0; i < queue->map_count; i++) {
        if (strcmp(queue->map_keys[i], key) == 0) {
            return i;
        }
    }
    assert_true(queue->map_count < MAX_MAP);
    snprintf(queue->map_keys[queue->map_count], sizeof queue->map_keys[0], "%s", key);
    queue->map_values[queue->map_count][0] = '\0';
    return queue->map_count++;
}

static const char *map_value(fake_queue_t *queue, const char *key)
{
    return queue->map_values[map_slot(queue, key)];
}

static void map_put(fake_queue_t *queue, const char *key, const char *value)
{
    snprintf(queue->map_values[map_slot(queue, key)], sizeof queue->map_values[0], "%s", value);
}

static bool fq_id_map_get(void *context, const char *const *keys, size_t count, char **values,
                          fts_error_t *err)
{
    (void)err;
    fake_queue_t *queue = context;
    if (queue->map_gets < 8) {
        queue->map_get_keys[queue->map_gets] = count;
    }
    queue->map_gets++;
    for (size_t i = 0; i < count; i++) {
        const char *value = map_value(queue, keys[i]);
        values[i] = value[0] ? bson_strdup(value) : NULL;
    }
    return true;
}

static void record_dead(fake_queue_t *queue, const fts_dead_letter_t *dead,
                        const fts_checkpoint_t *checkpoint)
{
    assert_true(queue->dead_count < MAX_RECORDS);
    record_t *record = &queue->dead[queue->dead_count++];
    memset(record, 0, sizeof *record);
    snprintf(record->reason, sizeof record->reason, "%s", dead->reason);
    record_checkpoint(record, checkpoint);
}

static bool fq_append_actions(void *context, const fts_action_argv_t *actions, size_t count,
                              const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    (void)err;
    fake_queue_t *queue = context;
    assert_true(queue->append_count < MAX_RECORDS);
    record_t *record = &queue->appends[queue->append_count++];
    memset(record, 0, sizeof *record);
    assert_true(count <= MAX_ACTIONS);
    record->count = count;
    for (size_t i = 0; i < count; i++) {
        /* XADD key * op <op> id <id> ... */
        assert_string_equal(actions[i].argv[0], "XADD");
        assert_string_equal(actions[i].argv[1], "ftsync:{t}:stream");
        snprintf(record->ops[i], sizeof record->ops[i], "%.*s", (int)actions[i].argvlen[4],
                 actions[i].argv[4]);
        if (strcmp(actions[i].argv[5], "id") == 0) {
            snprintf(record->ids[i], sizeof record->ids[i], "%.*s", (int)actions[i].argvlen[6],
                     actions[i].argv[6]);
        }
    }
    record_checkpoint(record, checkpoint);
    return true;
}

/* Records the actions as one append, its dead letters (marked with the append's checkpoint)
 * and applies its map changes. */
static bool fq_append(void *context, const fts_queue_batch_t *batch,
                      const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    fake_queue_t *queue = context;
    for (size_t i = 0; i < batch->dead_count; i++) {
        record_dead(queue, &batch->dead[i], checkpoint);
    }
    for (size_t i = 0; i < batch->map_count; i++) {
        const fts_id_map_change_t *change = &batch->map[i];
        char value[64] = "";
        if (change->index_id) {
            snprintf(value, sizeof value, "%.*s", (int)change->index_id_len, change->index_id);
        }
        map_put(queue, change->source_id, value);
    }
    bool ok = fq_append_actions(context, batch->actions, batch->count, checkpoint, err);
    record_t *record = &queue->appends[queue->append_count - 1];
    record->has_owners = batch->owners != NULL;
    for (size_t i = 0; batch->owners && i < batch->count; i++) {
        snprintf(record->owners[i], sizeof record->owners[i], "%s",
                 batch->owners[i] ? batch->owners[i] : "(none)");
    }
    /* batch->collided: left false, the Redis adapter's script decides (test_redis_queue). */
    return ok;
}

static bool fq_checkpoint(void *context, const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    return fq_append_actions(context, NULL, 0, checkpoint, err);
}

static bool fq_dead_letter(void *context, const fts_dead_letter_t *dead,
                           const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    (void)err;
    record_dead(context, dead, checkpoint);
    return true;
}

static bool fq_read_position(void *context, fts_position_t *position, fts_error_t *err)
{
    (void)err;
    fake_queue_t *queue = context;
    queue->reads++;
    *position = queue->saved;
    position->token = queue->saved.token ? bson_strdup(queue->saved.token) : NULL;
    position->last_id = queue->saved.last_id ? bson_strdup(queue->saved.last_id) : NULL;
    queue->saved.data_lost = 0; /* a loss is reported once, as the Redis adapter does */
    return true;
}

static bool fq_clear_position(void *context, bool resync, fts_error_t *err)
{
    (void)err;
    fake_queue_t *queue = context;
    queue->clears++;
    fts_position_cleanup(&queue->saved);
    queue->saved.sweep = resync; /* what survives a crash right after the clear */
    return true;
}

static bool fq_backlog(void *context, fts_backlog_t *backlog, fts_error_t *err)
{
    (void)err;
    fake_queue_t *queue = context;
    queue->backlog_calls++;
    backlog->entries = queue->backlog;
    if (queue->backlog_calls_until_stop &&
        queue->backlog_calls >= queue->backlog_calls_until_stop) {
        fts_signals_request_stop();
    }
    return true;
}

static bool fq_trim(void *context, fts_trim_result_t *result, fts_error_t *err)
{
    (void)err;
    fake_queue_t *queue = context;
    queue->trims++;
    if (result) {
        memset(result, 0, sizeof *result);
    }
    return true;
}

static const fts_queue_ops_t fake_queue_ops = {
    .stream_key = fq_stream_key,
    .ensure_group = fq_ensure_group,
    .append = fq_append,
    .id_map_get = fq_id_map_get,
    .checkpoint = fq_checkpoint,
    .dead_letter = fq_dead_letter,
    .read_position = fq_read_position,
    .clear_position = fq_clear_position,
    .backlog = fq_backlog,
    .trim = fq_trim,
};

static fts_queue_port_t queue_port(fake_queue_t *queue)
{
    return (fts_queue_port_t){.ops = &fake_queue_ops, .context = queue};
}

/* ---------------------------------------------------------------------------------------- */
/* A channel in memory: frames in bursts; between bursts receive says AGAIN                  */

#define MAX_FRAMES 64

typedef struct {
    bson_t *frames[MAX_FRAMES];
    bool burst_end[MAX_FRAMES]; /* AGAIN after this frame */
    size_t count;
    size_t next;
    bool again_given;
    unsigned waits;
} fake_channel_t;

static void channel_add(fake_channel_t *channel, bson_t *frame, bool burst_end)
{
    assert_true(channel->count < MAX_FRAMES);
    channel->frames[channel->count] = frame;
    channel->burst_end[channel->count] = burst_end;
    channel->count++;
}

static fts_frame_status_t fc_receive(void *context, bson_t *frame, fts_error_t *err)
{
    (void)err;
    fake_channel_t *channel = context;
    if (channel->next > 0 && channel->burst_end[channel->next - 1] && !channel->again_given) {
        channel->again_given = true;
        return FTS_FRAME_AGAIN;
    }
    if (channel->next == channel->count) {
        return FTS_FRAME_END;
    }
    channel->again_given = false;
    bson_t *next = channel->frames[channel->next++];
    assert_true(bson_init_static(frame, bson_get_data(next), next->len));
    return FTS_FRAME_READY;
}

static bool fc_wait(void *context)
{
    fake_channel_t *channel = context;
    channel->waits++;
    return true;
}

static void channel_cleanup(fake_channel_t *channel)
{
    for (size_t i = 0; i < channel->count; i++) {
        bson_destroy(channel->frames[i]);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Frames                                                                                   */

static bson_t *insert_event(int32_t id, uint32_t increment, bool with_time)
{
    bson_t *event = bson_new();
    BSON_APPEND_UTF8(event, "operationType", "insert");
    if (with_time) {
        BSON_APPEND_TIMESTAMP(event, "clusterTime", 1700000000u, increment);
    }
    bson_t ns;
    BSON_APPEND_DOCUMENT_BEGIN(event, "ns", &ns);
    BSON_APPEND_UTF8(&ns, "db", "d");
    BSON_APPEND_UTF8(&ns, "coll", "c");
    bson_append_document_end(event, &ns);
    bson_t key;
    BSON_APPEND_DOCUMENT_BEGIN(event, "documentKey", &key);
    BSON_APPEND_INT32(&key, "_id", id);
    bson_append_document_end(event, &key);
    bson_t doc;
    BSON_APPEND_DOCUMENT_BEGIN(event, "fullDocument", &doc);
    BSON_APPEND_INT32(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "name", "app");
    bson_append_document_end(event, &doc);
    return event;
}

static bson_t *event_frame(int32_t id, uint32_t increment, bool with_time, const char *token,
                           bool careful)
{
    bson_t *event = insert_event(id, increment, with_time);
    bson_t *frame = bson_new();
    BSON_APPEND_UTF8(frame, "t", "event");
    BSON_APPEND_DOCUMENT(frame, "ev", event);
    BSON_APPEND_UTF8(frame, "tok", token);
    BSON_APPEND_UTF8(frame, "kind", "resume");
    BSON_APPEND_BOOL(frame, "careful", careful);
    bson_destroy(event);
    return frame;
}

static bson_t *token_frame(const char *token, const char *kind, uint32_t increment)
{
    bson_t *frame = bson_new();
    BSON_APPEND_UTF8(frame, "t", "token");
    BSON_APPEND_UTF8(frame, "tok", token);
    BSON_APPEND_UTF8(frame, "kind", kind);
    BSON_APPEND_TIMESTAMP(frame, "ct", 1700000000u, increment);
    return frame;
}

/* Runs the worker loop over the frames with a default transform, or with typed ids. */
static int run_worker_typed(fake_queue_t *queue, fake_channel_t *channel, size_t batch_size,
                            bool typed)
{
    fts_string_list_t fields = {0};
    fts_transform_options_t options = {
        .fields = &fields, .on_drop = FTS_ON_DROP_DELETE, .id_typed = typed};
    fts_error_t err;
    fts_transform_t *transform = fts_transform_new(&options, &err);
    if (!transform) {
        fail_msg("transform: %s", err.message);
    }
    fts_queue_port_t qport = queue_port(queue);
    static const fts_channel_ops_t fake_channel_ops = {.receive = fc_receive, .wait = fc_wait};
    fts_channel_port_t cport = {.ops = &fake_channel_ops, .context = channel};
    int status = fts_extract_worker_loop(transform, batch_size, &qport, &cport);
    fts_transform_destroy(transform);
    return status;
}

static int run_worker(fake_queue_t *queue, fake_channel_t *channel, size_t batch_size)
{
    return run_worker_typed(queue, channel, batch_size, false);
}

/* ---------------------------------------------------------------------------------------- */
/* The worker                                                                               */

static void test_worker_batch_one_append(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, event_frame(1, 1, true, "{\"_data\":\"01\"}", false), false);
    channel_add(&channel, event_frame(2, 2, true, "{\"_data\":\"02\"}", false), false);
    channel_add(&channel, event_frame(3, 3, true, "{\"_data\":\"03\"}", false), true);
    assert_int_equal(run_worker(&queue, &channel, 100), FTS_WORKER_EXIT_OK);

    assert_int_equal(queue.append_count, 1);
    record_t *append = &queue.appends[0];
    assert_int_equal(append->count, 3);
    assert_string_equal(append->ops[0], "index");
    assert_string_equal(append->ids[0], "1");
    assert_string_equal(append->ids[2], "3");
    assert_true(append->has_checkpoint);
    assert_int_equal(append->kind, FTS_CHECKPOINT_TOKEN);
    assert_string_equal(append->token, "{\"_data\":\"03\"}");
    assert_int_equal(append->token_kind, FTS_TOKEN_RESUME);
    assert_int_equal(append->cluster_time.increment, 3);
    assert_int_equal(queue.dead_count, 0);
    assert_int_equal(channel.waits, 1);
    channel_cleanup(&channel);
}

static void test_worker_batch_capacity_splits(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, event_frame(1, 1, true, "{\"_data\":\"01\"}", false), false);
    channel_add(&channel, event_frame(2, 2, true, "{\"_data\":\"02\"}", false), false);
    channel_add(&channel, event_frame(3, 3, true, "{\"_data\":\"03\"}", false), false);
    assert_int_equal(run_worker(&queue, &channel, 2), FTS_WORKER_EXIT_OK);
    /* A full batch is appended with the position of its own last frame. */
    assert_int_equal(queue.append_count, 2);
    assert_int_equal(queue.appends[0].count, 2);
    assert_string_equal(queue.appends[0].token, "{\"_data\":\"02\"}");
    assert_int_equal(queue.appends[1].count, 1);
    assert_string_equal(queue.appends[1].token, "{\"_data\":\"03\"}");
    channel_cleanup(&channel);
}

static void test_worker_refused_event_dead_lettered(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, event_frame(1, 1, true, "{\"_data\":\"01\"}", false), false);
    /* No clusterTime: the transform refuses it (no version). */
    channel_add(&channel, event_frame(2, 2, false, "{\"_data\":\"02\"}", false), false);
    channel_add(&channel, event_frame(3, 3, true, "{\"_data\":\"03\"}", false), false);
    assert_int_equal(run_worker(&queue, &channel, 100), FTS_WORKER_EXIT_OK);

    /* The batch before it goes first, without a checkpoint (the frame taken last is the
     * refused one)... */
    assert_int_equal(queue.append_count, 2);
    assert_int_equal(queue.appends[0].count, 1);
    assert_string_equal(queue.appends[0].ids[0], "1");
    assert_false(queue.appends[0].has_checkpoint);
    /* ...then the dead letter with the position after it, which covers both... */
    assert_int_equal(queue.dead_count, 1);
    assert_contains(queue.dead[0].reason, "transform failed");
    assert_contains(queue.dead[0].reason, "clusterTime");
    assert_true(queue.dead[0].has_checkpoint);
    assert_string_equal(queue.dead[0].token, "{\"_data\":\"02\"}");
    /* ...and the pipeline goes on. */
    assert_int_equal(queue.appends[1].count, 1);
    assert_string_equal(queue.appends[1].ids[0], "3");
    assert_string_equal(queue.appends[1].token, "{\"_data\":\"03\"}");
    channel_cleanup(&channel);
}

static void test_worker_token_frame_checkpoints(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, token_frame("{\"_data\":\"07\"}", "start_after", 7), true);
    assert_int_equal(run_worker(&queue, &channel, 100), FTS_WORKER_EXIT_OK);
    assert_int_equal(queue.append_count, 1);
    assert_int_equal(queue.appends[0].count, 0);
    assert_true(queue.appends[0].has_checkpoint);
    assert_string_equal(queue.appends[0].token, "{\"_data\":\"07\"}");
    assert_int_equal(queue.appends[0].token_kind, FTS_TOKEN_START_AFTER);
    assert_int_equal(queue.appends[0].cluster_time.increment, 7);
    channel_cleanup(&channel);
}

static void test_worker_careful_frame_alone(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, event_frame(1, 1, true, "{\"_data\":\"01\"}", true), false);
    channel_add(&channel, event_frame(2, 2, true, "{\"_data\":\"02\"}", true), false);
    assert_int_equal(run_worker(&queue, &channel, 100), FTS_WORKER_EXIT_OK);
    assert_int_equal(queue.append_count, 2);
    assert_int_equal(queue.appends[0].count, 1);
    assert_string_equal(queue.appends[0].token, "{\"_data\":\"01\"}");
    assert_int_equal(queue.appends[1].count, 1);
    assert_string_equal(queue.appends[1].token, "{\"_data\":\"02\"}");
    channel_cleanup(&channel);
}

/* ---------------------------------------------------------------------------------------- */
/* The id map (FTSYNC_ID_FIELD=id, documents whose _id is not their id)                      */

/* An event of type op on the document with _id source and, when id >= 0, id field id (in the
 * full document; in the pre-image too when pre_id >= 0). */
static bson_t *mapped_event(const char *op, int32_t source, int32_t id, int32_t pre_id,
                            uint32_t increment)
{
    bson_t *event = bson_new();
    BSON_APPEND_UTF8(event, "operationType", op);
    BSON_APPEND_TIMESTAMP(event, "clusterTime", 1700000000u, increment);
    bson_t ns;
    BSON_APPEND_DOCUMENT_BEGIN(event, "ns", &ns);
    BSON_APPEND_UTF8(&ns, "db", "d");
    BSON_APPEND_UTF8(&ns, "coll", "c");
    bson_append_document_end(event, &ns);
    bson_t key;
    BSON_APPEND_DOCUMENT_BEGIN(event, "documentKey", &key);
    BSON_APPEND_INT32(&key, "_id", source);
    bson_append_document_end(event, &key);
    if (id >= 0) {
        bson_t doc;
        BSON_APPEND_DOCUMENT_BEGIN(event, "fullDocument", &doc);
        BSON_APPEND_INT32(&doc, "_id", source);
        BSON_APPEND_INT32(&doc, "id", id);
        BSON_APPEND_UTF8(&doc, "name", "app");
        bson_append_document_end(event, &doc);
    }
    if (pre_id >= 0) {
        bson_t doc;
        BSON_APPEND_DOCUMENT_BEGIN(event, "fullDocumentBeforeChange", &doc);
        BSON_APPEND_INT32(&doc, "_id", source);
        BSON_APPEND_INT32(&doc, "id", pre_id);
        bson_append_document_end(event, &doc);
    }
    return event;
}

static bson_t *mapped_frame(const char *op, int32_t source, int32_t id, int32_t pre_id,
                            uint32_t increment, bool burst_end_hint)
{
    (void)burst_end_hint;
    bson_t *event = mapped_event(op, source, id, pre_id, increment);
    bson_t *frame = bson_new();
    char token[64];
    snprintf(token, sizeof token, "{\"_data\":\"%02u\"}", increment);
    BSON_APPEND_UTF8(frame, "t", "event");
    BSON_APPEND_DOCUMENT(frame, "ev", event);
    BSON_APPEND_UTF8(frame, "tok", token);
    BSON_APPEND_UTF8(frame, "kind", "resume");
    bson_destroy(event);
    return frame;
}

static bson_t *mapped_snapshot_frame(int32_t source, int32_t id, int64_t queued)
{
    bson_t *frame = bson_new();
    BSON_APPEND_UTF8(frame, "t", "snap");
    bson_t doc;
    BSON_APPEND_DOCUMENT_BEGIN(frame, "doc", &doc);
    BSON_APPEND_INT32(&doc, "_id", source);
    BSON_APPEND_INT32(&doc, "id", id);
    bson_append_document_end(frame, &doc);
    BSON_APPEND_UTF8(frame, "ns", "d.c");
    BSON_APPEND_TIMESTAMP(frame, "started", 1700000000u, 1);
    char last_id[64];
    snprintf(last_id, sizeof last_id, "{ \"$numberInt\" : \"%d\" }", source);
    BSON_APPEND_UTF8(frame, "last_id", last_id);
    BSON_APPEND_INT64(frame, "queued", queued);
    return frame;
}

/* The map key of _id n (canonical extended JSON of an int32). */
static const char *key_of(int32_t n)
{
    static char keys[8][48];
    static unsigned next;
    char *key = keys[next++ % 8];
    snprintf(key, sizeof keys[0], "{ \"$numberInt\" : \"%d\" }", n);
    return key;
}

/* Runs the worker with FTSYNC_ID_FIELD=id and the id map on or off. */
static int run_mapped_worker(fake_queue_t *queue, fake_channel_t *channel, size_t batch_size,
                             bool id_map)
{
    fts_string_list_t fields = {0};
    fts_transform_options_t options = {
        .fields = &fields, .id_field = "id", .id_map = id_map, .on_drop = FTS_ON_DROP_DELETE};
    fts_error_t err;
    fts_transform_t *transform = fts_transform_new(&options, &err);
    if (!transform) {
        fail_msg("transform: %s", err.message);
    }
    fts_queue_port_t qport = queue_port(queue);
    static const fts_channel_ops_t fake_channel_ops = {.receive = fc_receive, .wait = fc_wait};
    fts_channel_port_t cport = {.ops = &fake_channel_ops, .context = channel};
    int status = fts_extract_worker_loop(transform, batch_size, &qport, &cport);
    fts_transform_destroy(transform);
    return status;
}

static void test_idmap_insert_and_delete_in_one_batch(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, mapped_frame("insert", 1, 101, -1, 1, false), false);
    channel_add(&channel, mapped_frame("insert", 2, 102, -1, 2, false), false);
    channel_add(&channel, mapped_frame("delete", 1, -1, -1, 3, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);

    /* The delete found its index id in the batch itself, before Redis knew it. */
    assert_int_equal(queue.append_count, 1);
    record_t *append = &queue.appends[0];
    assert_int_equal(append->count, 3);
    assert_string_equal(append->ops[2], "delete");
    assert_string_equal(append->ids[2], "101");
    assert_string_equal(append->token, "{\"_data\":\"03\"}");
    assert_int_equal(queue.dead_count, 0);
    /* Written with the batch: 2 -> 102, 1 removed. */
    assert_string_equal(map_value(&queue, key_of(2)), "102");
    assert_string_equal(map_value(&queue, key_of(1)), "");
    channel_cleanup(&channel);
}

static void test_idmap_deletes_batch_their_lookups(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    map_put(&queue, key_of(7), "107");
    map_put(&queue, key_of(8), "108");
    channel_add(&channel, mapped_frame("delete", 7, -1, -1, 1, false), false);
    channel_add(&channel, mapped_frame("delete", 8, -1, -1, 2, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);

    /* One read of the map for the whole batch (HMGET: the two _ids and the map's
     * complete-since marker), two deletes, both entries gone. */
    assert_int_equal(queue.map_gets, 1);
    assert_int_equal(queue.map_get_keys[0], 3);
    assert_int_equal(queue.append_count, 1);
    assert_int_equal(queue.appends[0].count, 2);
    assert_string_equal(queue.appends[0].ids[0], "107");
    assert_string_equal(queue.appends[0].ids[1], "108");
    assert_string_equal(map_value(&queue, key_of(7)), "");
    assert_string_equal(map_value(&queue, key_of(8)), "");
    channel_cleanup(&channel);
}

static void test_idmap_unknown_delete_dead_lettered(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, mapped_frame("insert", 1, 101, -1, 1, false), false);
    channel_add(&channel, mapped_frame("delete", 9, -1, -1, 2, false), false);
    channel_add(&channel, mapped_frame("insert", 3, 103, -1, 3, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);

    /* Nobody knows _id 9: its event is dead-lettered inside the same append, naming the _id,
     * and the pipeline goes on (no stop, no guessed id). */
    assert_int_equal(queue.append_count, 1);
    assert_int_equal(queue.appends[0].count, 2);
    assert_string_equal(queue.appends[0].ids[0], "101");
    assert_string_equal(queue.appends[0].ids[1], "103");
    assert_string_equal(queue.appends[0].token, "{\"_data\":\"03\"}");
    assert_int_equal(queue.dead_count, 1);
    assert_contains(queue.dead[0].reason, "{ \"$numberInt\" : \"9\" }");
    assert_contains(queue.dead[0].reason, "id map does not know");
    assert_string_equal(queue.dead[0].token, "{\"_data\":\"03\"}");
    channel_cleanup(&channel);
}

static bson_t *sweep_frame(uint32_t increment)
{
    bson_t *frame = bson_new();
    BSON_APPEND_UTF8(frame, "t", "sweep");
    BSON_APPEND_UTF8(frame, "ns", "d.c");
    BSON_APPEND_TIMESTAMP(frame, "started", 1700000000u, increment);
    return frame;
}

/* A snapshot's sweep at V marks the map complete from V (in the sweep's own append): a delete
 * at or after V that the map does not know was never indexed by that snapshot (the sweep
 * removes older copies), so it is counted, not dead-lettered; one before V still is. */
static void test_idmap_unknown_delete_after_sweep_not_dead_lettered(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, mapped_frame("delete", 8, -1, -1, 2, false), false);
    channel_add(&channel, sweep_frame(5), false);
    channel_add(&channel, mapped_frame("delete", 9, -1, -1, 5, false), false);
    channel_add(&channel, mapped_frame("insert", 3, 103, -1, 6, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);

    assert_int_equal(queue.dead_count, 1);
    assert_contains(queue.dead[0].reason, "{ \"$numberInt\" : \"8\" }");
    assert_int_equal(queue.append_count, 1);
    assert_int_equal(queue.appends[0].count, 2); /* the sweep and the insert */
    assert_string_equal(map_value(&queue, "complete-since"), "1700000000.5");
    channel_cleanup(&channel);

    /* A later batch reads the marker from the map: after V skipped, before V dead-lettered. */
    fake_channel_t later = {0};
    channel_add(&later, mapped_frame("delete", 10, -1, -1, 7, false), false);
    channel_add(&later, mapped_frame("delete", 11, -1, -1, 4, false), true);
    assert_int_equal(run_mapped_worker(&queue, &later, 100, true), FTS_WORKER_EXIT_OK);
    assert_int_equal(queue.dead_count, 2);
    assert_contains(queue.dead[1].reason, "{ \"$numberInt\" : \"11\" }");
    channel_cleanup(&later);
}

static void test_idmap_id_change_deletes_old_id_first(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    map_put(&queue, key_of(5), "105");
    /* From the map: 105 -> 205. */
    channel_add(&channel, mapped_frame("update", 5, 205, -1, 1, false), false);
    /* From the pre-image (no map read needed): 205 -> 305, by a replace. */
    channel_add(&channel, mapped_frame("replace", 5, 305, 205, 2, false), false);
    /* Unchanged: no delete. */
    channel_add(&channel, mapped_frame("update", 5, 305, -1, 3, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);

    assert_int_equal(queue.append_count, 1);
    record_t *append = &queue.appends[0];
    assert_int_equal(append->count, 5);
    assert_string_equal(append->ops[0], "delete");
    assert_string_equal(append->ids[0], "105");
    assert_string_equal(append->ops[1], "index");
    assert_string_equal(append->ids[1], "205");
    assert_string_equal(append->ops[2], "delete");
    assert_string_equal(append->ids[2], "205");
    assert_string_equal(append->ops[3], "index");
    assert_string_equal(append->ids[3], "305");
    assert_string_equal(append->ops[4], "index");
    assert_string_equal(append->ids[4], "305");
    assert_int_equal(queue.map_gets, 1);
    assert_string_equal(map_value(&queue, key_of(5)), "305");
    channel_cleanup(&channel);
}

static void test_idmap_update_without_post_image(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    map_put(&queue, key_of(4), "104");
    /* Deleted after the update: updateLookup found nothing; its delete event follows. */
    channel_add(&channel, mapped_frame("update", 4, -1, -1, 1, false), false);
    channel_add(&channel, mapped_frame("delete", 4, -1, -1, 2, false), false);
    /* Never known: the update gives nothing, its delete is dead-lettered once. */
    channel_add(&channel, mapped_frame("update", 6, -1, -1, 3, false), false);
    channel_add(&channel, mapped_frame("delete", 6, -1, -1, 4, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);

    assert_int_equal(queue.append_count, 1);
    assert_int_equal(queue.appends[0].count, 2);
    assert_string_equal(queue.appends[0].ids[0], "104");
    assert_string_equal(queue.appends[0].ids[1], "104");
    assert_int_equal(queue.dead_count, 1);
    assert_contains(queue.dead[0].reason, "{ \"$numberInt\" : \"6\" }");
    assert_string_equal(map_value(&queue, key_of(4)), "");
    channel_cleanup(&channel);
}

static void test_idmap_snapshot_fills_the_map(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, mapped_snapshot_frame(1, 101, 1), false);
    channel_add(&channel, mapped_snapshot_frame(2, 102, 2), true);
    channel_add(&channel, mapped_frame("delete", 2, -1, -1, 5, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);
    assert_int_equal(queue.append_count, 2);
    assert_int_equal(queue.appends[0].kind, FTS_CHECKPOINT_SNAPSHOT);
    assert_int_equal(queue.map_gets, 1); /* the delete's, not the snapshot's */
    assert_string_equal(queue.appends[1].ids[0], "102");
    assert_string_equal(map_value(&queue, key_of(1)), "101");
    assert_string_equal(map_value(&queue, key_of(2)), "");
    channel_cleanup(&channel);
}

static void test_idmap_bad_entry_dead_lettered(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    /* Hand-edited entries that are no index ids (invalid UTF-8). */
    map_put(&queue, key_of(3), "\xff");
    map_put(&queue, key_of(4), "\xfe");
    channel_add(&channel, mapped_frame("delete", 3, -1, -1, 1, false), false);
    channel_add(&channel, mapped_frame("update", 4, 204, -1, 2, false), true);
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, true), FTS_WORKER_EXIT_OK);
    /* Neither is used as an id nor makes the worker retry for ever: each event is
     * dead-lettered with the reason, the update's new id is still indexed. */
    assert_int_equal(queue.append_count, 1);
    assert_int_equal(queue.appends[0].count, 1);
    assert_string_equal(queue.appends[0].ops[0], "index");
    assert_string_equal(queue.appends[0].ids[0], "204");
    assert_int_equal(queue.dead_count, 2);
    assert_contains(queue.dead[0].reason, "is not an index id");
    assert_contains(queue.dead[1].reason, "former index id");
    assert_string_equal(map_value(&queue, key_of(4)), "204");
    channel_cleanup(&channel);
}

/* Where two documents can map to one index id (plain ids; an id field other than _id), every
 * action reaches the queue with its document's _id, for the queue's owners check (README.md,
 * Extract: index ids); with typed ids of _id, none. */
static void test_owners_given_with_every_action(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, event_frame(1, 1, true, "{\"_data\":\"01\"}", false), false);
    channel_add(&channel, event_frame(2, 2, true, "{\"_data\":\"02\"}", false), true);
    assert_int_equal(run_worker(&queue, &channel, 100), FTS_WORKER_EXIT_OK);
    assert_int_equal(queue.append_count, 1);
    assert_true(queue.appends[0].has_owners);
    assert_string_equal(queue.appends[0].owners[0], "{ \"$numberInt\" : \"1\" }");
    assert_string_equal(queue.appends[0].owners[1], "{ \"$numberInt\" : \"2\" }");

    fake_queue_t typed = {0};
    channel.next = 0;
    channel.again_given = false;
    assert_int_equal(run_worker_typed(&typed, &channel, 100, true), FTS_WORKER_EXIT_OK);
    assert_int_equal(typed.append_count, 1);
    assert_int_equal(typed.appends[0].count, 2);
    assert_false(typed.appends[0].has_owners);
    channel_cleanup(&channel);

    /* With the id field: a snapshot document, an id change (the old id's delete and the new
     * index are both the document's), a delete named by the map. */
    fake_queue_t mapped = {0};
    fake_channel_t frames = {0};
    map_put(&mapped, key_of(5), "105");
    map_put(&mapped, key_of(7), "107");
    channel_add(&frames, mapped_snapshot_frame(3, 103, 1), true);
    channel_add(&frames, mapped_frame("update", 5, 205, -1, 1, false), false);
    channel_add(&frames, mapped_frame("delete", 7, -1, -1, 2, false), true);
    assert_int_equal(run_mapped_worker(&mapped, &frames, 100, true), FTS_WORKER_EXIT_OK);
    assert_int_equal(mapped.append_count, 2);
    assert_true(mapped.appends[0].has_owners);
    assert_string_equal(mapped.appends[0].ids[0], "103");
    assert_string_equal(mapped.appends[0].owners[0], key_of(3));
    record_t *append = &mapped.appends[1];
    assert_true(append->has_owners);
    assert_int_equal(append->count, 3);
    assert_string_equal(append->ops[0], "delete");
    assert_string_equal(append->ids[0], "105");
    assert_string_equal(append->owners[0], key_of(5));
    assert_string_equal(append->ops[1], "index");
    assert_string_equal(append->ids[1], "205");
    assert_string_equal(append->owners[1], key_of(5));
    assert_string_equal(append->ops[2], "delete");
    assert_string_equal(append->ids[2], "107");
    assert_string_equal(append->owners[2], key_of(7));
    channel_cleanup(&frames);
}

static void test_idmap_off_needs_pre_images(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    channel_add(&channel, mapped_frame("insert", 1, 101, -1, 1, false), false);
    channel_add(&channel, mapped_frame("delete", 1, -1, -1, 2, false), true);
    /* FTSYNC_ID_MAP=off keeps the old rule: the delete stops the worker (exit 3), after
     * queueing what came before it; no map is read or written. */
    assert_int_equal(run_mapped_worker(&queue, &channel, 100, false), FTS_WORKER_EXIT_UNSUPPORTED);
    assert_int_equal(queue.append_count, 1);
    assert_int_equal(queue.appends[0].count, 1);
    assert_int_equal(queue.map_gets, 0);
    assert_int_equal(queue.map_count, 0);
    /* With a pre-image the delete needs no map. */
    fake_queue_t again = {0};
    fake_channel_t with_pre = {0};
    channel_add(&with_pre, mapped_frame("delete", 1, -1, 101, 2, false), true);
    assert_int_equal(run_mapped_worker(&again, &with_pre, 100, false), FTS_WORKER_EXIT_OK);
    assert_string_equal(again.appends[0].ids[0], "101");
    channel_cleanup(&with_pre);
    channel_cleanup(&channel);
}

static void test_worker_bad_frame_retry(void **state)
{
    (void)state;
    fake_queue_t queue = {0};
    fake_channel_t channel = {0};
    bson_t *frame = bson_new();
    BSON_APPEND_UTF8(frame, "t", "nonsense");
    channel_add(&channel, frame, false);
    assert_int_equal(run_worker(&queue, &channel, 100), FTS_WORKER_EXIT_RETRY);
    assert_int_equal(queue.append_count, 0);
    channel_cleanup(&channel);
}

/* ---------------------------------------------------------------------------------------- */
/* The parent: fake source, lease and worker                                                */

typedef struct {
    /* open */
    unsigned opens;
    fts_source_position_t last_open;
    char last_open_token[128];
    unsigned history_lost_opens; /* fail this many opens with history lost */
    /* next */
    unsigned nexts;
    unsigned nexts_until_stop; /* 0: never */
    char token[128];
    bool poison_event; /* after each open, next hands out one event first */
    bool event_given;
    bson_t *event;
    /* cluster time and scan */
    fts_timestamp_t now;
    unsigned scans;
    int scan_docs; /* documents each scan returns */
    int scan_pos;
    int scan_handle;
} fake_source_t;

static bool fs_open(void *context, const fts_source_position_t *position, fts_error_t *err)
{
    fake_source_t *source = context;
    source->opens++;
    source->last_open = *position;
    snprintf(source->last_open_token, sizeof source->last_open_token, "%s",
             position->token ? position->token : "");
    source->last_open.token = NULL;
    source->event_given = false;
    if (source->history_lost_opens > 0) {
        source->history_lost_opens--;
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_SOURCE_HISTORY_LOST,
                             "ChangeStreamHistoryLost (286)");
    }
    return true;
}

static void fs_close(void *context)
{
    (void)context;
}

static bool fs_next(void *context, fts_source_next_t *what, const bson_t **event, fts_error_t *err)
{
    (void)err;
    fake_source_t *source = context;
    source->nexts++;
    if (source->poison_event && !source->event_given) {
        source->event_given = true;
        if (!source->event) {
            source->event = insert_event(13, 13, true);
        }
        snprintf(source->token, sizeof source->token, "{\"_data\":\"POISON\"}");
        *what = FTS_SOURCE_NEXT_EVENT;
        *event = source->event;
        return true;
    }
    snprintf(source->token, sizeof source->token, "{\"_data\":\"%04u\"}", source->nexts);
    *what = FTS_SOURCE_NEXT_IDLE;
    *event = NULL;
    if (source->nexts_until_stop && source->nexts >= source->nexts_until_stop) {
        fts_signals_request_stop();
    }
    return true;
}

static char *fs_resume_token_json(void *context)
{
    fake_source_t *source = context;
    return source->token[0] ? bson_strdup(source->token) : NULL;
}

static bool fs_token_needs_start_after(void *context)
{
    (void)context;
    return false;
}

static bool fs_cluster_time(void *context, fts_timestamp_t *now, fts_error_t *err)
{
    (void)err;
    fake_source_t *source = context;
    *now = source->now;
    return true;
}

static void *fs_scan_new(void *context, const char *collection, const bson_value_t *after_id,
                         fts_error_t *err)
{
    (void)collection;
    (void)after_id;
    (void)err;
    fake_source_t *source = context;
    source->scans++;
    source->scan_pos = 0;
    return &source->scan_handle;
}

static bool fs_scan_next(void *context, void *scan, const bson_t **doc, fts_error_t *err)
{
    (void)err;
    fake_source_t *source = context;
    assert_ptr_equal(scan, &source->scan_handle);
    static bson_t current;
    static bool have_current;
    if (have_current) {
        bson_destroy(&current);
        have_current = false;
    }
    if (source->scan_pos >= source->scan_docs) {
        *doc = NULL;
        return true;
    }
    source->scan_pos++;
    bson_init(&current);
    BSON_APPEND_INT32(&current, "_id", source->scan_pos);
    have_current = true;
    *doc = &current;
    return true;
}

static void fs_scan_destroy(void *context, void *scan)
{
    (void)context;
    (void)scan;
}

static const fts_source_ops_t fake_source_ops = {
    .open = fs_open,
    .close = fs_close,
    .next = fs_next,
    .resume_token_json = fs_resume_token_json,
    .token_needs_start_after = fs_token_needs_start_after,
    .cluster_time = fs_cluster_time,
    .scan_new = fs_scan_new,
    .scan_next = fs_scan_next,
    .scan_destroy = fs_scan_destroy,
};

static fts_source_port_t source_port(fake_source_t *source)
{
    return (fts_source_port_t){.ops = &fake_source_ops, .context = source};
}

static bool fl_acquire(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    (void)context;
    (void)err;
    memset(status, 0, sizeof *status);
    status->state = FTS_LEASE_ACQUIRED;
    return true;
}

static bool fl_release(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    (void)context;
    (void)err;
    memset(status, 0, sizeof *status);
    status->state = FTS_LEASE_RELEASED;
    return true;
}

static uint64_t fl_remaining_ms(void *context)
{
    (void)context;
    return 60000;
}

static const char *fl_owner(void *context)
{
    (void)context;
    return "test:1:0";
}

static const fts_lease_ops_t fake_lease_ops = {
    .acquire = fl_acquire,
    .renew = fl_acquire,
    .release = fl_release,
    .remaining_ms = fl_remaining_ms,
    .owner = fl_owner,
};

static const fts_lease_port_t fake_lease = {.ops = &fake_lease_ops, .context = NULL};

static const char *frame_type(const bson_t *frame)
{
    bson_iter_t iter;
    assert_true(bson_iter_init_find(&iter, frame, "t"));
    return bson_iter_utf8(&iter, NULL);
}

/* A worker that records the frames sent to it and ends cleanly when drained. */
typedef struct {
    bool running;
    bool crash_on_events; /* an event frame kills the worker (SIGSEGV) */
    bool crashed;
    bool closed; /* its channel was closed: like the real one, it ends (reapable at once) */
    unsigned spawns;
    bson_t *frames[256];
    size_t count;
} fake_worker_t;

static bool fw_spawn(void *context, fts_error_t *err)
{
    (void)err;
    fake_worker_t *worker = context;
    worker->running = true;
    worker->closed = false;
    worker->spawns++;
    return true;
}

static bool fw_running(void *context)
{
    return ((fake_worker_t *)context)->running;
}

static bool fw_send(void *context, const bson_t *frame, fts_error_t *err)
{
    (void)err;
    fake_worker_t *worker = context;
    assert_true(worker->running);
    assert_true(worker->count < 256);
    worker->frames[worker->count++] = bson_copy(frame);
    if (worker->crash_on_events && strcmp(frame_type(frame), "event") == 0) {
        worker->crashed = true;
    }
    return true;
}

static bool fw_reap(void *context, bool block, int *status)
{
    fake_worker_t *worker = context;
    if (worker->running && worker->crashed) {
        worker->running = false;
        worker->crashed = false;
        *status = SIGSEGV; /* a wait status: killed by SIGSEGV */
        return true;
    }
    if ((!block && !worker->closed) || !worker->running) {
        return false;
    }
    worker->running = false;
    *status = 0; /* exited 0 */
    return true;
}

static void fw_close(void *context)
{
    ((fake_worker_t *)context)->closed = true;
}

static void fw_nothing(void *context)
{
    (void)context;
}

static const fts_worker_ops_t fake_worker_ops = {
    .spawn = fw_spawn,
    .running = fw_running,
    .send = fw_send,
    .reap = fw_reap,
    .close = fw_close,
    .kill = fw_nothing,
};

static fts_worker_port_t worker_port(fake_worker_t *worker)
{
    return (fts_worker_port_t){.ops = &fake_worker_ops, .context = worker};
}

static void worker_cleanup(fake_worker_t *worker)
{
    for (size_t i = 0; i < worker->count; i++) {
        bson_destroy(worker->frames[i]);
    }
}

static fts_extract_options_t test_options(void)
{
    fts_extract_options_t options = {
        .db = "d",
        .collection = "c",
        .scope = FTS_SCOPE_COLLECTION,
        .on_history_lost = FTS_ON_HISTORY_LOST_RESYNC,
        .lease_ttl_ms = 30000,
        .backlog_max = 5,
        .trim_interval_ms = 60000,
        .worker_crash_limit = 3,
        .sweep_first_snapshot = true,
        .batch_size = 100,
    };
    return options;
}

static int run_parent(const fts_extract_options_t *options, fake_source_t *source,
                      fake_queue_t *queue, fake_worker_t *worker)
{
    fts_signals_reset();
    fts_source_port_t sport = source_port(source);
    fts_queue_port_t qport = queue_port(queue);
    fts_worker_port_t wport = worker_port(worker);
    fts_extract_ports_t ports = {
        .source = &sport, .queue = &qport, .lease = &fake_lease, .worker = &wport};
    int status = fts_extract_run(options, &ports);
    fts_signals_reset();
    return status;
}

static void test_parent_backpressure_stops_reading(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"_data\":\"AA\"}");
    queue.saved.token_kind = FTS_TOKEN_RESUME;
    queue.backlog = 6; /* > backlog_max 5 */
    queue.backlog_calls_until_stop = 3;

    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_OK);
    /* The stream was opened from the saved token, but never read while over the maximum. */
    assert_int_equal(source.opens, 1);
    assert_int_equal(source.last_open.from, FTS_SOURCE_RESUME_AFTER);
    assert_string_equal(source.last_open_token, "{\"_data\":\"AA\"}");
    assert_int_equal(source.nexts, 0);
    assert_true(queue.backlog_calls >= 3);
    assert_int_equal(worker.count, 0);
    assert_int_equal(worker.spawns, 1);
    fts_position_cleanup(&queue.saved);
    worker_cleanup(&worker);
}

static void test_parent_start_at_time(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    /* What `reset-token --to-time` saves: no token yet, start the stream at that time. */
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"$timestamp\":{\"t\":1700000000,\"i\":0}}");
    queue.saved.token_kind = FTS_TOKEN_START_AT;
    queue.saved.cluster_time = (fts_timestamp_t){1700000000, 0};
    queue.backlog = 6; /* > backlog_max 5: open, then stop without reading */
    queue.backlog_calls_until_stop = 3;

    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_OK);
    assert_int_equal(source.opens, 1);
    assert_int_equal(source.last_open.from, FTS_SOURCE_START_AT_TIME);
    assert_int_equal(source.last_open.time.seconds, 1700000000);
    assert_int_equal(source.last_open.time.increment, 0);
    fts_position_cleanup(&queue.saved);
    worker_cleanup(&worker);
}

static void test_parent_reads_below_max(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"_data\":\"AA\"}");
    queue.backlog = 0;
    source.nexts_until_stop = 3;

    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_OK);
    assert_int_equal(source.nexts, 3);
    /* Idle reads that moved the token become token frames, which the worker checkpoints. */
    assert_int_equal(worker.count, 3);
    for (size_t i = 0; i < worker.count; i++) {
        assert_string_equal(frame_type(worker.frames[i]), "token");
    }
    fts_position_cleanup(&queue.saved);
    worker_cleanup(&worker);
}

static void test_parent_history_lost_resyncs(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"_data\":\"OLD\"}");
    source.history_lost_opens = 1;
    source.now = (fts_timestamp_t){1700000100u, 4};
    source.scan_docs = 2;
    source.nexts_until_stop = 1;

    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_OK);
    /* The position was cleared once the worker was drained, and a new worker started. */
    assert_int_equal(queue.clears, 1);
    assert_int_equal(worker.spawns, 2);
    assert_int_equal(source.scans, 1);
    /* snap, snap, sweep, then the stream from the snapshot's time. */
    assert_true(worker.count >= 3);
    assert_string_equal(frame_type(worker.frames[0]), "snap");
    assert_string_equal(frame_type(worker.frames[1]), "snap");
    assert_string_equal(frame_type(worker.frames[2]), "sweep");
    bson_iter_t iter;
    assert_true(bson_iter_init_find(&iter, worker.frames[2], "started"));
    uint32_t seconds = 0, increment = 0;
    bson_iter_timestamp(&iter, &seconds, &increment);
    assert_int_equal(seconds, 1700000100u);
    assert_int_equal(increment, 4);
    assert_true(bson_iter_init_find(&iter, worker.frames[1], "queued"));
    assert_int_equal(bson_iter_int64(&iter), 2);
    assert_int_equal(source.opens, 2);
    assert_int_equal(source.last_open.from, FTS_SOURCE_START_AT_TIME);
    assert_int_equal(source.last_open.time.seconds, 1700000100u);
    assert_int_equal(source.last_open.time.increment, 4);
    fts_position_cleanup(&queue.saved);
    worker_cleanup(&worker);
}

/* Redis lost its data (the port's read says so): the remembered token is not followed, the
 * position is cleared and a resync runs, a snapshot then a sweep, as after a lost history. */
static void test_parent_data_lost_resyncs(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"_data\":\"OLD\"}");
    queue.saved.data_lost = FTS_DATA_LOST_STREAM;
    source.now = (fts_timestamp_t){1700000200u, 2};
    source.scan_docs = 2;
    source.nexts_until_stop = 1;

    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_OK);
    assert_int_equal(queue.clears, 1);
    assert_int_equal(source.scans, 1);
    assert_true(worker.count >= 3);
    assert_string_equal(frame_type(worker.frames[0]), "snap");
    assert_string_equal(frame_type(worker.frames[1]), "snap");
    assert_string_equal(frame_type(worker.frames[2]), "sweep");
    bson_iter_t iter;
    assert_true(bson_iter_init_find(&iter, worker.frames[2], "started"));
    uint32_t seconds = 0, increment = 0;
    bson_iter_timestamp(&iter, &seconds, &increment);
    assert_int_equal(seconds, 1700000200u);
    assert_int_equal(increment, 2);
    /* Never opened from the remembered token. */
    assert_int_equal(source.last_open.from, FTS_SOURCE_START_AT_TIME);
    fts_position_cleanup(&queue.saved);
    worker_cleanup(&worker);
}

/* A resync that dies after the clear, before its snapshot ends: the next run finds the
 * durable sweep flag (alone, or with the snapshot's progress) and still ends with the sweep;
 * a fresh pipeline's first snapshot notes the flag and ends with a sweep as well. */
static void test_parent_resync_sweep_survives_a_crash(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"_data\":\"OLD\"}");
    source.history_lost_opens = 1;
    source.now = (fts_timestamp_t){1700000100u, 4};
    source.scan_docs = 2;
    source.nexts_until_stop = 1;
    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_OK);
    /* The clear noted the sweep in the same step. */
    assert_int_equal(queue.clears, 1);
    assert_true(queue.saved.sweep);
    assert_false(queue.saved.has_token);
    assert_false(queue.saved.has_snapshot);
    worker_cleanup(&worker);

    /* "Killed" right after the clear: a new process starts from what the queue holds. */
    fake_source_t source2 = {.now = {1700000300u, 1}, .scan_docs = 2, .nexts_until_stop = 1};
    fake_worker_t worker2 = {0};
    assert_int_equal(run_parent(&options, &source2, &queue, &worker2), FTS_EXTRACT_EXIT_OK);
    assert_true(worker2.count >= 3);
    assert_string_equal(frame_type(worker2.frames[0]), "snap");
    assert_string_equal(frame_type(worker2.frames[1]), "snap");
    assert_string_equal(frame_type(worker2.frames[2]), "sweep");
    bson_iter_t iter;
    uint32_t seconds = 0, increment = 0;
    assert_true(bson_iter_init_find(&iter, worker2.frames[2], "started"));
    bson_iter_timestamp(&iter, &seconds, &increment);
    assert_int_equal(seconds, 1700000300u);
    assert_int_equal(increment, 1);
    worker_cleanup(&worker2);

    /* Killed in the middle of the snapshot: it continues from its progress and its start
     * version, and still ends with the sweep. */
    fts_position_cleanup(&queue.saved);
    queue.saved.has_snapshot = true;
    queue.saved.started = (fts_timestamp_t){1700000100u, 4};
    queue.saved.last_id = bson_strdup("{\"$numberInt\":\"1\"}");
    queue.saved.queued = 1;
    queue.saved.sweep = true;
    fake_source_t source3 = {.now = {1700000400u, 1}, .scan_docs = 1, .nexts_until_stop = 1};
    fake_worker_t worker3 = {0};
    assert_int_equal(run_parent(&options, &source3, &queue, &worker3), FTS_EXTRACT_EXIT_OK);
    assert_true(worker3.count >= 2);
    assert_string_equal(frame_type(worker3.frames[0]), "snap");
    assert_string_equal(frame_type(worker3.frames[1]), "sweep");
    assert_true(bson_iter_init_find(&iter, worker3.frames[1], "started"));
    bson_iter_timestamp(&iter, &seconds, &increment);
    assert_int_equal(seconds, 1700000100u);
    assert_int_equal(increment, 4);
    worker_cleanup(&worker3);

    /* Nothing saved and no flag (a new pipeline, `reset-token --clear`, or a Redis that lost
     * everything while no extractor ran): the first snapshot ends with a sweep too, and the
     * flag is saved before the snapshot starts, so that a crash does not lose it. */
    fts_position_cleanup(&queue.saved);
    queue.clears = 0;
    fake_source_t source4 = {.now = {1700000500u, 1}, .scan_docs = 2, .nexts_until_stop = 1};
    fake_worker_t worker4 = {0};
    assert_int_equal(run_parent(&options, &source4, &queue, &worker4), FTS_EXTRACT_EXIT_OK);
    assert_int_equal(queue.clears, 1);
    assert_true(worker4.count >= 3);
    assert_string_equal(frame_type(worker4.frames[0]), "snap");
    assert_string_equal(frame_type(worker4.frames[1]), "snap");
    assert_string_equal(frame_type(worker4.frames[2]), "sweep");
    assert_true(bson_iter_init_find(&iter, worker4.frames[2], "started"));
    bson_iter_timestamp(&iter, &seconds, &increment);
    assert_int_equal(seconds, 1700000500u);
    assert_int_equal(increment, 1);
    worker_cleanup(&worker4);

    /* With FTSYNC_NS_FIELD=off load cannot apply a sweep: a first snapshot queues none. */
    fts_position_cleanup(&queue.saved);
    queue.clears = 0;
    options.sweep_first_snapshot = false;
    fake_source_t source5 = {.now = {1700000600u, 1}, .scan_docs = 2, .nexts_until_stop = 1};
    fake_worker_t worker5 = {0};
    assert_int_equal(run_parent(&options, &source5, &queue, &worker5), FTS_EXTRACT_EXIT_OK);
    assert_int_equal(queue.clears, 0);
    assert_true(worker5.count >= 2);
    for (size_t i = 0; i < worker5.count; i++) {
        assert_string_not_equal(frame_type(worker5.frames[i]), "sweep");
    }
    worker_cleanup(&worker5);
    fts_position_cleanup(&queue.saved);
}

static void test_parent_history_lost_stop(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    options.on_history_lost = FTS_ON_HISTORY_LOST_STOP;
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"_data\":\"OLD\"}");
    source.history_lost_opens = 1;

    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_STOPPED);
    assert_int_equal(queue.clears, 0);
    assert_int_equal(source.scans, 0);
    fts_position_cleanup(&queue.saved);
    worker_cleanup(&worker);
}

static bool frame_careful(const bson_t *frame)
{
    bson_iter_t iter;
    return bson_iter_init_find(&iter, frame, "careful") && bson_iter_bool(&iter);
}

static void test_parent_poison_dead_lettered(void **state)
{
    (void)state;
    fts_extract_options_t options = test_options();
    fake_source_t source = {0};
    fake_queue_t queue = {0};
    fake_worker_t worker = {0};
    queue.saved.has_token = true;
    queue.saved.token = bson_strdup("{\"_data\":\"T0\"}");
    source.poison_event = true;
    source.nexts_until_stop = 6;
    worker.crash_on_events = true;

    assert_int_equal(run_parent(&options, &source, &queue, &worker), FTS_EXTRACT_EXIT_OK);
    /* Three crashes on the event after the same saved position: restarts in careful mode,
     * then the event goes to the dead-letter stream with the position after it. */
    assert_int_equal(worker.spawns, 4);
    size_t events = 0;
    for (size_t i = 0; i < worker.count; i++) {
        if (strcmp(frame_type(worker.frames[i]), "event") == 0) {
            assert_true(frame_careful(worker.frames[i]) == (events > 0));
            events++;
        }
    }
    assert_int_equal(events, 3);
    assert_int_equal(queue.dead_count, 1);
    assert_contains(queue.dead[0].reason, "crashed 3 times");
    assert_true(queue.dead[0].has_checkpoint);
    assert_string_equal(queue.dead[0].token, "{\"_data\":\"POISON\"}");
    /* Reading went on after it. */
    assert_true(source.nexts > 4);
    bson_destroy(source.event);
    fts_position_cleanup(&queue.saved);
    worker_cleanup(&worker);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_batch_one_append),
        cmocka_unit_test(test_worker_batch_capacity_splits),
        cmocka_unit_test(test_worker_refused_event_dead_lettered),
        cmocka_unit_test(test_worker_token_frame_checkpoints),
        cmocka_unit_test(test_worker_careful_frame_alone),
        cmocka_unit_test(test_worker_bad_frame_retry),
        cmocka_unit_test(test_idmap_insert_and_delete_in_one_batch),
        cmocka_unit_test(test_idmap_deletes_batch_their_lookups),
        cmocka_unit_test(test_idmap_unknown_delete_dead_lettered),
        cmocka_unit_test(test_idmap_unknown_delete_after_sweep_not_dead_lettered),
        cmocka_unit_test(test_idmap_id_change_deletes_old_id_first),
        cmocka_unit_test(test_idmap_update_without_post_image),
        cmocka_unit_test(test_idmap_snapshot_fills_the_map),
        cmocka_unit_test(test_idmap_bad_entry_dead_lettered),
        cmocka_unit_test(test_idmap_off_needs_pre_images),
        cmocka_unit_test(test_owners_given_with_every_action),
        cmocka_unit_test(test_parent_backpressure_stops_reading),
        cmocka_unit_test(test_parent_reads_below_max),
        cmocka_unit_test(test_parent_start_at_time),
        cmocka_unit_test(test_parent_history_lost_resyncs),
        cmocka_unit_test(test_parent_history_lost_stop),
        cmocka_unit_test(test_parent_data_lost_resyncs),
        cmocka_unit_test(test_parent_resync_sweep_survives_a_crash),
        cmocka_unit_test(test_parent_poison_dead_lettered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
