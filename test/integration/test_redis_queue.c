/*
 * test_redis_queue.c - pipelines, the action stream, checkpoints, backlog, trimming and dead
 * letters against real redis-servers (adapters/redis/redis_queue.c, redis_conn.c).
 *
 * Most tests share one private server (AOF on) and keep apart by a pipeline name of their
 * own; the tests that stop, kill or restart a server start their own, and the separate-
 * servers tests start a second one. What they pin: entries and checkpoint written together
 * (checked with plain XRANGE and HGETALL, and with INFO commandstats for "one MULTI"), the
 * checkpoint never ahead of the stream when a server dies mid-append (invariant 1), the
 * backlog the loaders see, and a trim that never removes what a group has not acknowledged
 * (invariant 4).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "assertions.h"

#include "action.h"
#include "redis_conn.h"
#include "redis_queue.h"
#include "redis_server.h"
#include "testbed.h"

/* A token checkpoint's "token" for the tests: a resume token's canonical extended JSON. */
#define TOKEN_TEXT(n) "{\"_data\":\"8265A1B2C3000000" #n "2B022C0100296E5A1004\"}"

/* The cluster time of action i in these tests. */
#define BASE_SECONDS 1795428000u

/* The shared private server of this program. */
static fts_test_redis_server_t *shared_server;

/* ---- Helpers ---- */

static fts_redis_options_t quick_options(void)
{
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.connect_timeout_ms = 1000;
    options.command_timeout_ms = 5000;
    options.reconnect_base_ms = 10;
    options.reconnect_cap_ms = 100;
    options.reconnect_max_wait_ms = 3000;
    return options;
}

static fts_redis_t *connect_ok(const char *url)
{
    fts_redis_options_t options = quick_options();
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_t *redis = fts_redis_new(url, &options, &err);
    if (!redis) {
        fail_msg("cannot connect to %s: %s", url, err.message);
    }
    return redis;
}

static fts_test_redis_server_t *start_server(void)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_redis_server_t *server = fts_test_redis_server_start(NULL, &err);
    if (!server) {
        fail_msg("cannot start redis-server: %s", err.message);
    }
    return server;
}

/* A pipeline name no other test (or earlier run against the shared testbed) uses. */
static void unique_pipeline(char *name, size_t size, const char *label)
{
    static int counter;
    snprintf(name, size, "t%d-%s-%d", (int)getpid(), label, ++counter);
}

static fts_redis_queue_t *queue_ok(fts_redis_t *state, fts_redis_t *queue, const char *pipeline)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_queue_t *result = fts_redis_queue_new(state, queue, pipeline, &err);
    if (!result) {
        fail_msg("cannot create the queue: %s", err.message);
    }
    /* As the extract parent does before its first frame: the epoch marker every checkpoint
     * write checks (a fresh pipeline has lost nothing). */
    unsigned lost = 99;
    if (!fts_redis_queue_check_epoch(result, &lost, &err)) {
        fail_msg("cannot set the epoch marker: %s", err.message);
    }
    assert_int_equal(lost, 0);
    return result;
}

/* Runs a command written out with printf formatting, split at spaces (the tests' arguments
 * hold none); fails the test when Redis fails or refuses. */
static redisReply *run(fts_redis_t *redis, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static redisReply *run(fts_redis_t *redis, const char *format, ...)
{
    char line[1024];
    const char *argv[32];
    int argc = 0;
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    for (char *word = strtok(line, " "); word && argc < 32; word = strtok(NULL, " ")) {
        argv[argc++] = word;
    }
    fts_error_t err;
    fts_error_clear(&err);
    redisReply *reply = fts_redis_command_argv(redis, argc, argv, NULL, &err);
    if (!reply) {
        fail_msg("%s failed: %s", argv[0], err.message);
    }
    return reply;
}

static long long run_integer(fts_redis_t *redis, const char *command, const char *key)
{
    redisReply *reply = run(redis, "%s %s", command, key);
    assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
    long long value = reply->integer;
    freeReplyObject(reply);
    return value;
}

static long long xlen(fts_redis_t *redis, const char *key)
{
    return run_integer(redis, "XLEN", key);
}

static bool exists(fts_redis_t *redis, const char *key)
{
    return run_integer(redis, "EXISTS", key) == 1;
}

/* The value of field in a field/value array reply, or NULL. */
static const redisReply *field_of(const redisReply *pairs, const char *field)
{
    for (size_t i = 0; i + 1 < pairs->elements; i += 2) {
        if (strcmp(pairs->element[i]->str, field) == 0) {
            return pairs->element[i + 1];
        }
    }
    return NULL;
}

static void assert_field(const redisReply *pairs, const char *field, const char *expected)
{
    const redisReply *value = field_of(pairs, field);
    if (!value) {
        fail_msg("no field \"%s\"", field);
    }
    assert_int_equal(value->type, REDIS_REPLY_STRING);
    assert_string_equal(value->str, expected);
}

/* How many times Redis ran command (lower case), from INFO commandstats. */
static long long calls_of(fts_redis_t *redis, const char *command)
{
    redisReply *info = run(redis, "INFO commandstats");
    char needle[64];
    snprintf(needle, sizeof needle, "cmdstat_%s:calls=", command);
    const char *at = strstr(info->str, needle);
    long long calls = at ? atoll(at + strlen(needle)) : 0;
    freeReplyObject(info);
    return calls;
}

/* The redis-server's pid, for tests that kill it. */
static pid_t server_pid(fts_redis_t *redis)
{
    redisReply *info = run(redis, "INFO server");
    const char *at = strstr(info->str, "process_id:");
    assert_non_null(at);
    pid_t pid = (pid_t)atol(at + strlen("process_id:"));
    freeReplyObject(info);
    return pid;
}

/* A batch of actions with their XADD arguments (which point into the actions). */
typedef struct {
    size_t count;
    fts_action_t *actions;
    fts_action_argv_t *argv;
} batch_t;

/* Action number i: an index of doc-<i> at cluster time (BASE_SECONDS + i).1, every fifth
 * one a delete; snapshot ones come from the snapshot. */
static batch_t *batch_new(const fts_redis_queue_t *queue, size_t first, size_t count, bool snapshot)
{
    batch_t *batch = calloc(1, sizeof *batch);
    assert_non_null(batch);
    batch->count = count;
    batch->actions = calloc(count ? count : 1, sizeof *batch->actions);
    batch->argv = calloc(count ? count : 1, sizeof *batch->argv);
    assert_non_null(batch->actions);
    assert_non_null(batch->argv);
    for (size_t k = 0; k < count; k++) {
        size_t i = first + k;
        fts_action_t *action = &batch->actions[k];
        char text[128];
        fts_action_init(action);
        action->op = (i % 5 == 4 && !snapshot) ? FTS_ACTION_DELETE : FTS_ACTION_INDEX;
        action->origin = snapshot ? FTS_ACTION_FROM_SNAPSHOT : FTS_ACTION_FROM_CHANGE;
        action->ts_seconds = BASE_SECONDS + (uint32_t)i;
        action->ts_increment = 1;
        action->version = fts_version_from_timestamp(action->ts_seconds, action->ts_increment);
        action->ns = strdup("shop.apps");
        snprintf(text, sizeof text, "doc-%zu", i);
        action->id = strdup(text);
        action->id_len = strlen(text);
        if (action->op == FTS_ACTION_INDEX) {
            snprintf(text, sizeof text, "{\"n\":%zu,\"name\":\"app %zu\"}", i, i);
            action->body = strdup(text);
            action->body_len = strlen(text);
        }
        fts_error_t err;
        fts_error_clear(&err);
        if (!fts_action_encode(action, fts_redis_queue_keys(queue)->stream, &batch->argv[k],
                               &err)) {
            fail_msg("cannot encode action %zu: %s", i, err.message);
        }
    }
    return batch;
}

static void batch_free(batch_t *batch)
{
    if (!batch) {
        return;
    }
    for (size_t k = 0; k < batch->count; k++) {
        fts_action_cleanup(&batch->actions[k]);
    }
    free(batch->actions);
    free(batch->argv);
    free(batch);
}

static fts_checkpoint_t token_checkpoint(const char *token, uint32_t seconds)
{
    fts_checkpoint_t checkpoint = {.kind = FTS_CHECKPOINT_TOKEN,
                                   .token = token,
                                   .token_kind = FTS_TOKEN_RESUME,
                                   .cluster_time.seconds = seconds,
                                   .cluster_time.increment = 1};
    return checkpoint;
}

static void append_ok(fts_redis_queue_t *queue, const batch_t *batch,
                      const fts_checkpoint_t *checkpoint)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_queue_append(queue, batch->argv, batch->count, checkpoint, &err)) {
        fail_msg("append failed: %s", err.message);
    }
}

static void checkpoint_ok(fts_redis_queue_t *queue, const fts_checkpoint_t *checkpoint)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_queue_checkpoint(queue, checkpoint, &err)) {
        fail_msg("checkpoint failed: %s", err.message);
    }
}

static void ensure_group_ok(fts_redis_queue_t *queue)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_queue_ensure_group(queue, &err)) {
        fail_msg("ensure_group failed: %s", err.message);
    }
}

/* The saved token (HGETALL) must be token; NULL: no token hash at all. */
static void assert_saved_token(fts_redis_t *state, const fts_redis_queue_t *queue,
                               const char *token)
{
    redisReply *hash = run(state, "HGETALL %s", fts_redis_queue_keys(queue)->token);
    if (!token) {
        assert_int_equal(hash->elements, 0);
    } else {
        assert_field(hash, "token", token);
    }
    freeReplyObject(hash);
}

/* Every entry of the stream, in order, is action first..first+count-1 of batch_new, with the
 * flat, readable fields of core/action.h, and decodes back to it. */
static void assert_stream_holds(fts_redis_t *redis, const char *key, size_t first, size_t count,
                                bool snapshot)
{
    redisReply *entries = run(redis, "XRANGE %s - +", key);
    assert_int_equal(entries->type, REDIS_REPLY_ARRAY);
    assert_int_equal(entries->elements, count);
    for (size_t k = 0; k < count; k++) {
        size_t i = first + k;
        const redisReply *entry = entries->element[k];
        assert_int_equal(entry->elements, 2);
        const redisReply *fields = entry->element[1];
        bool is_delete = i % 5 == 4 && !snapshot;
        char text[128];
        /* Field names in this order: op, id, version, ns, ts, origin[, body]. */
        const char *names[] = {"op", "id", "version", "ns", "ts", "origin", "body"};
        size_t expected_fields = is_delete ? 6 : 7;
        assert_int_equal(fields->elements, expected_fields * 2);
        for (size_t f = 0; f < expected_fields; f++) {
            assert_string_equal(fields->element[2 * f]->str, names[f]);
        }
        assert_field(fields, "op", is_delete ? "delete" : "index");
        snprintf(text, sizeof text, "doc-%zu", i);
        assert_field(fields, "id", text);
        snprintf(text, sizeof text, "%llu",
                 (unsigned long long)fts_version_from_timestamp(BASE_SECONDS + (uint32_t)i, 1));
        assert_field(fields, "version", text);
        assert_field(fields, "ns", "shop.apps");
        snprintf(text, sizeof text, "%u.1", BASE_SECONDS + (unsigned)i);
        assert_field(fields, "ts", text);
        assert_field(fields, "origin", snapshot ? "snapshot" : "change");
        if (!is_delete) {
            snprintf(text, sizeof text, "{\"n\":%zu,\"name\":\"app %zu\"}", i, i);
            assert_field(fields, "body", text);
        }

        /* And the loaders' decoder takes it. */
        fts_bytes_t items[16];
        for (size_t f = 0; f < fields->elements; f++) {
            items[f].data = fields->element[f]->str;
            items[f].len = fields->element[f]->len;
        }
        fts_action_t decoded;
        fts_error_t err;
        fts_error_clear(&err);
        if (!fts_action_decode(items, fields->elements, &decoded, &err)) {
            fail_msg("entry %zu does not decode: %s", k, err.message);
        }
        assert_int_equal(decoded.version,
                         fts_version_from_timestamp(BASE_SECONDS + (uint32_t)i, 1));
        fts_action_cleanup(&decoded);
    }
    freeReplyObject(entries);
}

/* The IDs of the stream's entries (at most 64), for XACK and XDEL. */
static size_t entry_ids(fts_redis_t *redis, const char *key, char ids[][FTS_REDIS_STREAM_ID_SIZE])
{
    redisReply *entries = run(redis, "XRANGE %s - +", key);
    size_t count = entries->elements < 64 ? entries->elements : 64;
    for (size_t i = 0; i < count; i++) {
        snprintf(ids[i], FTS_REDIS_STREAM_ID_SIZE, "%s", entries->element[i]->element[0]->str);
    }
    freeReplyObject(entries);
    return count;
}

/* Reads up to count new entries for consumer of group (XREADGROUP ... >); returns how many. */
static size_t read_group(fts_redis_t *redis, const char *key, const char *group,
                         const char *consumer, int count)
{
    redisReply *reply =
        run(redis, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s >", group, consumer, count, key);
    size_t got = 0;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
        got = reply->element[0]->element[1]->elements;
    }
    freeReplyObject(reply);
    return got;
}

static void ack(fts_redis_t *redis, const char *key, const char *group, const char *id)
{
    redisReply *reply = run(redis, "XACK %s %s %s", key, group, id);
    assert_int_equal(reply->integer, 1);
    freeReplyObject(reply);
}

static fts_backlog_t backlog_ok(fts_redis_queue_t *queue)
{
    fts_backlog_t backlog;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_queue_backlog(queue, &backlog, &err)) {
        fail_msg("backlog failed: %s", err.message);
    }
    return backlog;
}

static fts_trim_result_t trim_ok(fts_redis_queue_t *queue)
{
    fts_trim_result_t trim;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_queue_trim(queue, &trim, &err)) {
        fail_msg("trim failed: %s", err.message);
    }
    return trim;
}

/* The entry IDs left in the stream must be exactly ids[from..to). */
static void assert_remaining(fts_redis_t *redis, const char *key,
                             char ids[][FTS_REDIS_STREAM_ID_SIZE], size_t from, size_t to)
{
    char left[64][FTS_REDIS_STREAM_ID_SIZE];
    size_t count = entry_ids(redis, key, left);
    if (count != to - from) {
        fail_msg("%zu entries left, expected %zu (from entry %zu on)", count, to - from, from);
    }
    for (size_t i = 0; i < count; i++) {
        assert_string_equal(left[i], ids[from + i]);
    }
}

/* ---- Pipelines (redis_conn.c) ---- */

static void test_pipeline(void **state)
{
    (void)state;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_error_t err;
    fts_error_clear(&err);
    char key[64];
    char counter[64];
    snprintf(key, sizeof key, "pipe:%d:text", (int)getpid());
    snprintf(counter, sizeof counter, "pipe:%d:counter", (int)getpid());

    /* Three commands, the middle one refused: its error is its reply, the others ran. */
    const char *set[] = {"SET", key, "hello"};
    const char *incr[] = {"INCR", key};
    const char *get[] = {"GET", key};
    fts_redis_cmd_t cmds[] = {{3, set, NULL}, {2, incr, NULL}, {2, get, NULL}};
    redisReply *replies[3];
    assert_true(fts_redis_pipeline(redis, cmds, 3, replies, &err));
    assert_int_equal(replies[0]->type, REDIS_REPLY_STATUS);
    assert_int_equal(replies[1]->type, REDIS_REPLY_ERROR);
    assert_string_equal(replies[2]->str, "hello");
    assert_true(fts_redis_reply_check(redis, replies[0], "SET", &err));
    assert_false(fts_redis_reply_check(redis, replies[1], "INCR", &err));
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_int_equal(err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(err.message, "refused INCR: ERR value is not an integer");
    fts_redis_replies_free(replies, 3);
    assert_null(replies[0]);

    /* Nothing to send. */
    assert_true(fts_redis_pipeline(redis, cmds, 0, replies, &err));

    /* The connection ends part-way (QUIT answers, then closes): an error that says how far
     * it got, the connection dropped, and the command after QUIT neither run nor resent. */
    const char *incr_counter[] = {"INCR", counter};
    const char *quit[] = {"QUIT"};
    fts_redis_cmd_t broken[] = {{2, incr_counter, NULL}, {1, quit, NULL}, {2, incr_counter, NULL}};
    fts_error_clear(&err);
    assert_false(fts_redis_pipeline(redis, broken, 3, replies, &err));
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_contains(err.message, "after 2 of 3 replies");
    assert_contains(err.message, "not resent");
    assert_null(replies[0]);
    assert_null(replies[2]);
    redisReply *value = run(redis, "GET %s", counter);
    assert_string_equal(value->str, "1");
    freeReplyObject(value);
    assert_int_equal(fts_redis_connection_count(redis), 2);

    /* One server or two. */
    fts_redis_t *again = connect_ok(fts_test_redis_server_url(shared_server));
    char db1[128];
    snprintf(db1, sizeof db1, "redis://127.0.0.1:%d/1", fts_test_redis_server_port(shared_server));
    fts_redis_t *other_db = connect_ok(db1);
    assert_true(fts_redis_same_server(redis, redis));
    assert_true(fts_redis_same_server(redis, again));
    assert_false(fts_redis_same_server(redis, other_db));
    fts_redis_destroy(other_db);
    fts_redis_destroy(again);
    fts_redis_destroy(redis);
}

/* ---- The queue ---- */

static void test_ensure_group(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "group");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    assert_true(fts_redis_queue_is_atomic(queue));

    ensure_group_ok(queue);
    ensure_group_ok(queue); /* BUSYGROUP is fine */
    redisReply *groups = run(redis, "XINFO GROUPS %s", keys->stream);
    assert_int_equal(groups->elements, 1);
    assert_field(groups->element[0], "name", FTS_LOAD_GROUP);
    assert_field(groups->element[0], "last-delivered-id", "0-0");
    freeReplyObject(groups);
    assert_int_equal(xlen(redis, keys->stream), 0);

    /* Another pipeline whose stream key holds a string: a clear error at start-up. */
    char other[64];
    unique_pipeline(other, sizeof other, "wrongtype");
    fts_redis_queue_t *broken = queue_ok(redis, NULL, other);
    freeReplyObject(run(redis, "SET %s oops", fts_redis_queue_keys(broken)->stream));
    fts_error_t err;
    fts_error_clear(&err);
    assert_false(fts_redis_queue_ensure_group(broken, &err));
    assert_contains(err.message, "WRONGTYPE");
    assert_contains(err.message, fts_redis_queue_keys(broken)->stream);
    assert_contains(err.message, FTS_LOAD_GROUP);

    fts_redis_queue_destroy(broken);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_atomic_append_and_checkpoint(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "atomic");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);

    batch_t *batch = batch_new(queue, 0, 5, false);
    fts_checkpoint_t checkpoint = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 4);
    long long eval = calls_of(redis, "eval");
    long long multi = calls_of(redis, "multi");
    long long xadd = calls_of(redis, "xadd");
    long long hset = calls_of(redis, "hset");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long before_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    append_ok(queue, batch, &checkpoint);

    /* One step: five XADDs and the HSET in one script (no MULTI/EXEC, which would run the
     * HSET even after a failed XADD). */
    assert_int_equal(calls_of(redis, "eval") - eval, 1);
    assert_int_equal(calls_of(redis, "multi"), multi);
    assert_int_equal(calls_of(redis, "xadd") - xadd, 5);
    assert_int_equal(calls_of(redis, "hset") - hset, 1);

    /* Plain XRANGE shows the actions, in order, with readable fields. */
    assert_stream_holds(redis, keys->stream, 0, 5, false);

    /* Plain HGETALL shows the checkpoint. */
    redisReply *hash = run(redis, "HGETALL %s", keys->token);
    assert_int_equal(hash->elements, 8);
    assert_field(hash, "token", TOKEN_TEXT(1));
    assert_field(hash, "kind", "resume");
    char text[32];
    snprintf(text, sizeof text, "%u.1", BASE_SECONDS + 4);
    assert_field(hash, "cluster_time", text);
    long long updated = atoll(field_of(hash, "updated_at")->str);
    assert_true(updated >= before_ms && updated < before_ms + 10000);
    freeReplyObject(hash);
    assert_false(exists(redis, keys->snapshot));

    /* And it reads back as the position. */
    fts_position_t position;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_true(position.has_token);
    assert_false(position.has_snapshot);
    assert_string_equal(position.token, TOKEN_TEXT(1));
    assert_int_equal(position.token_kind, FTS_TOKEN_RESUME);
    assert_int_equal(position.cluster_time.seconds, BASE_SECONDS + 4);
    assert_int_equal(position.cluster_time.increment, 1);
    assert_int_equal((long long)position.token_updated_at_ms, updated);
    fts_position_cleanup(&position);

    /* A batch without checkpoint queues entries only; one action makes a small transaction. */
    batch_t *more = batch_new(queue, 5, 1, false);
    append_ok(queue, more, NULL);
    assert_stream_holds(redis, keys->stream, 0, 6, false);
    assert_saved_token(redis, queue, TOKEN_TEXT(1));

    batch_free(more);
    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_malformed_action_sends_nothing(void **state)
{
    (void)state;
    char pipeline[64];
    char other[64];
    unique_pipeline(pipeline, sizeof pipeline, "malformed");
    unique_pipeline(other, sizeof other, "elsewhere");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    fts_redis_queue_t *elsewhere = queue_ok(redis, NULL, other);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);

    /* Three good actions and one addressed to another pipeline's stream. */
    batch_t *good = batch_new(queue, 0, 4, false);
    batch_t *foreign = batch_new(elsewhere, 3, 1, false);
    fts_action_cleanup(&good->actions[3]);
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_action_encode(&foreign->actions[0], fts_redis_queue_keys(elsewhere)->stream,
                                  &good->argv[3], &err));
    fts_checkpoint_t checkpoint = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 3);
    long long xadd = calls_of(redis, "xadd");
    assert_false(fts_redis_queue_append(queue, good->argv, 4, &checkpoint, &err));
    assert_int_equal(err.domain, FTS_ERROR_INTERNAL);
    assert_contains(err.message, "action 4; nothing was sent");
    assert_int_equal(calls_of(redis, "xadd"), xadd);
    assert_false(exists(redis, keys->stream));
    assert_false(exists(redis, keys->token));

    /* A checkpoint that makes no sense is refused before sending too. */
    fts_checkpoint_t empty = token_checkpoint("", BASE_SECONDS);
    assert_false(fts_redis_queue_append(queue, good->argv, 3, &empty, &err));
    assert_contains(err.message, "token is empty");
    assert_false(exists(redis, keys->stream));

    good->count = 3; /* argv[3] points into foreign's action, freed with it */
    batch_free(foreign);
    batch_free(good);
    fts_redis_queue_destroy(elsewhere);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_failure_inside_the_transaction(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "txfail");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    fts_error_t err;

    /* The token key holds a string: the append script checks every key it writes before the
     * first write, so nothing is queued, the checkpoint is refused and reported (the caller
     * re-sends), the key left as it was. */
    freeReplyObject(run(redis, "SET %s not-a-hash", keys->token));
    batch_t *batch = batch_new(queue, 0, 3, false);
    fts_checkpoint_t checkpoint = token_checkpoint(TOKEN_TEXT(3), BASE_SECONDS + 2);
    fts_error_clear(&err);
    assert_false(fts_redis_queue_append(queue, batch->argv, 3, &checkpoint, &err));
    assert_contains(err.message, "checkpoint was not saved");
    assert_contains(err.message, "WRONGTYPE");
    assert_contains(err.message, keys->stream);
    redisReply *value = run(redis, "GET %s", keys->token);
    assert_string_equal(value->str, "not-a-hash");
    freeReplyObject(value);
    assert_int_equal(xlen(redis, keys->stream), 0);

    /* The stream key replaced by a string: the append script finds it before writing
     * anything, so neither entries nor checkpoint (MULTI/EXEC used to write the checkpoint
     * beside the failed XADDs). */
    freeReplyObject(run(redis, "DEL %s", keys->token));
    freeReplyObject(run(redis, "DEL %s", keys->stream));
    freeReplyObject(run(redis, "SET %s not-a-stream", keys->stream));
    fts_error_clear(&err);
    assert_false(fts_redis_queue_append(queue, batch->argv, 3, &checkpoint, &err));
    assert_contains(err.message, "checkpoint was not saved");
    assert_contains(err.message, "WRONGTYPE");
    assert_false(exists(redis, keys->token));
    value = run(redis, "GET %s", keys->stream);
    assert_string_equal(value->str, "not-a-stream");
    freeReplyObject(value);

    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

/* Issue 11, section 5: an XADD that fails while the append runs, past every check made before
 * sending (here the stream's ID space runs out after the first entry of the batch), must leave
 * the saved token where it was. MULTI/EXEC ran the HSET of the token anyway. */
static void test_failed_xadd_leaves_the_token(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "xaddfail");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    fts_error_t err;

    fts_checkpoint_t before = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 1);
    checkpoint_ok(queue, &before);
    /* One ID left: the batch's first XADD takes it, the second fails at run time. */
    freeReplyObject(
        run(redis, "XADD %s 18446744073709551615-18446744073709551614 op filler", keys->stream));
    batch_t *batch = batch_new(queue, 0, 3, false);
    fts_checkpoint_t after = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 3);
    fts_error_clear(&err);
    assert_false(fts_redis_queue_append(queue, batch->argv, 3, &after, &err));
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_contains(err.message, "exhausted");
    assert_contains(err.message, "checkpoint was not saved");
    assert_saved_token(redis, queue, TOKEN_TEXT(1));
    /* The entry before the failure stays (a re-sent batch duplicates it: harmless). */
    assert_int_equal(xlen(redis, keys->stream), 2);

    /* The same with id map changes: neither the map nor the token moves. */
    fts_id_map_change_t map[] = {
        {.source_id = "{ \"$numberInt\" : \"1\" }", .index_id = "101", .index_id_len = 3}};
    fts_queue_batch_t with_map = {.actions = batch->argv, .count = 3, .map = map, .map_count = 1};
    fts_error_clear(&err);
    assert_false(fts_redis_queue_append_batch(queue, &with_map, &after, &err));
    assert_contains(err.message, "exhausted");
    assert_false(exists(redis, keys->ids));
    assert_saved_token(redis, queue, TOKEN_TEXT(1));

    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

/* The id map is written by the append, with its entries and checkpoint, and read back with
 * HMGET; dead letters of the batch go to the dead-letter stream in the same step. */
static void test_id_map_append_and_read(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "idmap");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    char expected[FTS_REDIS_KEY_SIZE];
    snprintf(expected, sizeof expected, "ftsync:{%s}:ids", pipeline);
    assert_string_equal(keys->ids, expected);

    batch_t *batch = batch_new(queue, 0, 2, false);
    const char *oid = "{ \"$oid\" : \"65a000000000000000000001\" }";
    const char *two = "{ \"$numberInt\" : \"2\" }";
    fts_id_map_change_t map[] = {{.source_id = oid, .index_id = "101", .index_id_len = 3},
                                 {.source_id = two, .index_id = "102", .index_id_len = 3}};
    const char *items[] = {"event", "{\"operationType\":\"delete\"}"};
    fts_dead_letter_t dead = {
        .items = items, .count = 2, .reason = "unknown document", .stage = "transform"};
    fts_queue_batch_t first = {.actions = batch->argv,
                               .count = 2,
                               .dead = &dead,
                               .dead_count = 1,
                               .map = map,
                               .map_count = 2};
    fts_checkpoint_t checkpoint = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 1);
    fts_error_t err;
    fts_error_clear(&err);
    long long eval = calls_of(redis, "eval");
    if (!fts_redis_queue_append_batch(queue, &first, &checkpoint, &err)) {
        fail_msg("append: %s", err.message);
    }
    assert_int_equal(calls_of(redis, "eval") - eval, 1);
    assert_int_equal(xlen(redis, keys->stream), 2);
    assert_int_equal(xlen(redis, keys->dead), 1);
    assert_saved_token(redis, queue, TOKEN_TEXT(1));
    redisReply *value = fts_redis_command(redis, &err, "HGET %s %s", keys->ids, oid);
    assert_non_null(value);
    assert_string_equal(value->str, "101");
    freeReplyObject(value);

    /* A removal and an unknown document read back as NULL. */
    fts_id_map_change_t removal[] = {{.source_id = two}};
    fts_queue_batch_t second = {.actions = batch->argv, .count = 1, .map = removal, .map_count = 1};
    checkpoint = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 2);
    assert_true(fts_redis_queue_append_batch(queue, &second, &checkpoint, &err));
    const char *asked[] = {oid, two, "{ \"$numberInt\" : \"3\" }"};
    char *found[3];
    assert_true(fts_redis_queue_id_map_get(queue, asked, 3, found, &err));
    assert_string_equal(found[0], "101");
    assert_null(found[1]);
    assert_null(found[2]);
    bson_free(found[0]);

    /* The port reads the same. */
    fts_queue_port_t port = fts_redis_queue_port(queue);
    assert_true(port.ops->id_map_get(port.context, asked, 1, found, &err));
    assert_string_equal(found[0], "101");
    bson_free(found[0]);

    /* A map key of the wrong type: nothing written at all, the token stays. */
    freeReplyObject(run(redis, "DEL %s", keys->ids));
    freeReplyObject(run(redis, "SET %s oops", keys->ids));
    long long length = xlen(redis, keys->stream);
    checkpoint = token_checkpoint(TOKEN_TEXT(3), BASE_SECONDS + 3);
    fts_error_clear(&err);
    assert_false(fts_redis_queue_append_batch(queue, &first, &checkpoint, &err));
    assert_contains(err.message, "WRONGTYPE");
    assert_contains(err.message, keys->ids);
    assert_int_equal(xlen(redis, keys->stream), length);
    assert_saved_token(redis, queue, TOKEN_TEXT(2));
    fts_error_clear(&err);
    assert_false(fts_redis_queue_id_map_get(queue, asked, 1, found, &err));
    assert_null(found[0]);
    assert_contains(err.message, keys->ids);

    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

/* A batch of the given ops and index ids (a drop: id NULL), each re-encoded after batch_new. */
static batch_t *batch_of(const fts_redis_queue_t *queue, size_t count, const fts_action_op_t *ops,
                         const char *const *ids)
{
    batch_t *batch = batch_new(queue, 0, count, false);
    for (size_t k = 0; k < count; k++) {
        fts_action_t *action = &batch->actions[k];
        free(action->id);
        free(action->body);
        action->id = NULL;
        action->body = NULL;
        action->id_len = action->body_len = 0;
        action->op = ops[k];
        if (ids[k]) {
            action->id = strdup(ids[k]);
            action->id_len = strlen(ids[k]);
        }
        if (ops[k] == FTS_ACTION_INDEX) {
            action->body = strdup("{\"name\":\"x\"}");
            action->body_len = strlen(action->body);
        }
        fts_error_t err;
        fts_error_clear(&err);
        if (!fts_action_encode(action, fts_redis_queue_keys(queue)->stream, &batch->argv[k],
                               &err)) {
            fail_msg("cannot encode action %zu: %s", k, err.message);
        }
    }
    return batch;
}

/* The owner of index id in the owners hash; NULL when it has none (free it). */
static char *owner_of(fts_redis_t *redis, const fts_redis_keys_t *keys, const char *id)
{
    fts_error_t err;
    fts_error_clear(&err);
    redisReply *reply = fts_redis_command(redis, &err, "HGET %s %s", keys->owners, id);
    assert_non_null(reply);
    char *owner = reply->type == REDIS_REPLY_STRING ? strdup(reply->str) : NULL;
    freeReplyObject(reply);
    return owner;
}

static void assert_owner(fts_redis_t *redis, const fts_redis_keys_t *keys, const char *id,
                         const char *expected)
{
    char *owner = owner_of(redis, keys, id);
    if (!expected) {
        if (owner) {
            fail_msg("index id %s is held by %s; expected no owner", id, owner);
        }
        return;
    }
    if (!owner) {
        fail_msg("index id %s has no owner; expected %s", id, expected);
    }
    assert_string_equal(owner, expected);
    free(owner);
}

/* The owners of the index ids (README.md, Extract: index ids), checked by the append script
 * itself: two documents mapping to one index id within one batch, a delete of the index id
 * another document holds, releases, a drop, the check off, a key of the wrong type. */
static void test_owners_dead_letter_collisions(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "owners");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    char expected[FTS_REDIS_KEY_SIZE];
    snprintf(expected, sizeof expected, "ftsync:{%s}:owners", pipeline);
    assert_string_equal(keys->owners, expected);
    const char *number = "{ \"$numberInt\" : \"424242\" }";
    const char *text = "\"424242\"";
    fts_error_t err;
    fts_error_clear(&err);

    /* One batch: the number claims 424242, the string's index and delete collide, the
     * number's own second index goes through. */
    const fts_action_op_t ops1[] = {FTS_ACTION_INDEX, FTS_ACTION_INDEX, FTS_ACTION_INDEX,
                                    FTS_ACTION_DELETE};
    const char *ids1[] = {"424242", "424242", "424242", "424242"};
    const char *owners1[] = {number, text, number, text};
    batch_t *batch = batch_of(queue, 4, ops1, ids1);
    bool collided[4] = {true, false, true, false};
    fts_queue_batch_t first = {
        .actions = batch->argv, .count = 4, .owners = owners1, .collided = collided};
    fts_checkpoint_t checkpoint = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 1);
    long long eval = calls_of(redis, "eval");
    if (!fts_redis_queue_append_batch(queue, &first, &checkpoint, &err)) {
        fail_msg("append: %s", err.message);
    }
    assert_int_equal(calls_of(redis, "eval") - eval, 1);
    assert_false(collided[0]);
    assert_true(collided[1]);
    assert_false(collided[2]);
    assert_true(collided[3]);
    assert_int_equal(xlen(redis, keys->stream), 2);
    assert_int_equal(xlen(redis, keys->dead), 2);
    assert_saved_token(redis, queue, TOKEN_TEXT(1)); /* the dead letters are the record */
    assert_owner(redis, keys, "424242", number);
    redisReply *dead = run(redis, "XRANGE %s - +", keys->dead);
    assert_int_equal(dead->elements, 2);
    const char *dead_ops[] = {"index", "delete"};
    for (size_t i = 0; i < 2; i++) {
        const redisReply *fields = dead->element[i]->element[1];
        assert_field(fields, "op", dead_ops[i]);
        assert_field(fields, "id", "424242");
        assert_field(fields, "source_id", text);
        assert_field(fields, "owner_id", number);
        assert_field(fields, "stage", "extract");
        const redisReply *reason = field_of(fields, "reason");
        assert_non_null(reason);
        assert_contains(reason->str, number);
        assert_contains(reason->str, text);
        assert_contains(reason->str, "FTSYNC_ID_FORMAT=typed");
        assert_non_null(field_of(fields, "failed_at"));
    }
    freeReplyObject(dead);
    batch_free(batch);

    /* The number's delete releases the id; the string can then claim it. */
    const fts_action_op_t ops2[] = {FTS_ACTION_DELETE, FTS_ACTION_INDEX};
    const char *ids2[] = {"424242", "424242"};
    const char *owners2[] = {number, text};
    batch = batch_of(queue, 2, ops2, ids2);
    fts_queue_batch_t second = {
        .actions = batch->argv, .count = 2, .owners = owners2, .collided = collided};
    checkpoint = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 2);
    assert_true(fts_redis_queue_append_batch(queue, &second, &checkpoint, &err));
    assert_false(collided[0] || collided[1] || collided[2]);
    assert_int_equal(xlen(redis, keys->stream), 4);
    assert_int_equal(xlen(redis, keys->dead), 2);
    assert_owner(redis, keys, "424242", text);
    batch_free(batch);

    /* A drop releases every id; what follows it in the batch claims afresh. */
    const fts_action_op_t ops3[] = {FTS_ACTION_INDEX, FTS_ACTION_DROP, FTS_ACTION_INDEX};
    const char *ids3[] = {"7", NULL, "8"};
    const char *owners3[] = {"{ \"$numberInt\" : \"7\" }", NULL, "{ \"$numberInt\" : \"8\" }"};
    batch = batch_of(queue, 3, ops3, ids3);
    fts_queue_batch_t third = {
        .actions = batch->argv, .count = 3, .owners = owners3, .collided = collided};
    assert_true(fts_redis_queue_append_batch(queue, &third, NULL, &err));
    assert_false(collided[0] || collided[1] || collided[2]);
    assert_owner(redis, keys, "424242", NULL);
    assert_owner(redis, keys, "7", NULL);
    assert_owner(redis, keys, "8", "{ \"$numberInt\" : \"8\" }");
    batch_free(batch);

    /* Without owners (typed ids of _id) nothing is checked or kept. */
    const fts_action_op_t ops4[] = {FTS_ACTION_INDEX};
    const char *ids4[] = {"8"};
    batch = batch_of(queue, 1, ops4, ids4);
    fts_queue_batch_t fourth = {.actions = batch->argv, .count = 1, .collided = collided};
    long long length = xlen(redis, keys->stream);
    assert_true(fts_redis_queue_append_batch(queue, &fourth, NULL, &err));
    assert_false(collided[0] || collided[1] || collided[2]);
    assert_int_equal(xlen(redis, keys->stream), length + 1);
    assert_owner(redis, keys, "8", "{ \"$numberInt\" : \"8\" }");

    /* An owners key of the wrong type: nothing written, the token stays. */
    freeReplyObject(run(redis, "DEL %s", keys->owners));
    freeReplyObject(run(redis, "SET %s oops", keys->owners));
    const char *owners4[] = {"{ \"$numberInt\" : \"9\" }"};
    fourth.owners = owners4;
    checkpoint = token_checkpoint(TOKEN_TEXT(3), BASE_SECONDS + 3);
    fts_error_clear(&err);
    assert_false(fts_redis_queue_append_batch(queue, &fourth, &checkpoint, &err));
    assert_contains(err.message, "WRONGTYPE");
    assert_contains(err.message, keys->owners);
    assert_int_equal(xlen(redis, keys->stream), length + 1);
    assert_saved_token(redis, queue, TOKEN_TEXT(2));
    batch_free(batch);

    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

/* Clearing the position (reset-token --clear, a resync) deletes the owners of the index ids
 * too, where they live (the queue server): the snapshot that follows claims them again. */
static void test_clears_delete_owners(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "ownclear");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    fts_error_t err;
    fts_error_clear(&err);
    freeReplyObject(run(redis, "HSET %s 424242 x", keys->owners));
    assert_true(fts_redis_queue_clear_position(queue, &err));
    assert_false(exists(redis, keys->owners));
    freeReplyObject(run(redis, "HSET %s 424242 x", keys->owners));
    assert_true(fts_redis_queue_clear_for_resync(queue, &err));
    assert_false(exists(redis, keys->owners));
    assert_true(exists(redis, keys->snapshot)); /* the sweep flag */
    fts_redis_queue_destroy(queue);

    fts_test_redis_server_t *queue_server = start_server();
    fts_redis_t *queue_redis = connect_ok(fts_test_redis_server_url(queue_server));
    unique_pipeline(pipeline, sizeof pipeline, "ownclear");
    queue = queue_ok(redis, queue_redis, pipeline);
    keys = fts_redis_queue_keys(queue);
    assert_false(fts_redis_queue_is_atomic(queue));
    freeReplyObject(run(queue_redis, "HSET %s 424242 x", keys->owners));
    assert_true(fts_redis_queue_clear_for_resync(queue, &err));
    assert_false(exists(queue_redis, keys->owners));
    freeReplyObject(run(queue_redis, "HSET %s 424242 x", keys->owners));
    assert_true(fts_redis_queue_clear_position(queue, &err));
    assert_false(exists(queue_redis, keys->owners));
    assert_false(exists(redis, keys->snapshot));
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(queue_redis);
    fts_test_redis_server_destroy(queue_server);
    fts_redis_destroy(redis);
}

static void test_token_only_checkpoint(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "tokenonly");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    batch_t *batch = batch_new(queue, 0, 2, false);
    fts_checkpoint_t first = token_checkpoint(TOKEN_TEXT(4), BASE_SECONDS + 1);
    append_ok(queue, batch, &first);

    /* A post-batch token moved on with no event: the position advances, the stream not. */
    fts_checkpoint_t later = token_checkpoint(TOKEN_TEXT(5), BASE_SECONDS + 60);
    later.token_kind = FTS_TOKEN_START_AFTER;
    long long xadd = calls_of(redis, "xadd");
    long long eval = calls_of(redis, "eval");
    checkpoint_ok(queue, &later);
    assert_int_equal(calls_of(redis, "xadd"), xadd);
    /* One script: it checks the epoch marker and writes the position. */
    assert_int_equal(calls_of(redis, "eval") - eval, 1);
    assert_int_equal(xlen(redis, keys->stream), 2);
    redisReply *hash = run(redis, "HGETALL %s", keys->token);
    assert_field(hash, "token", TOKEN_TEXT(5));
    assert_field(hash, "kind", "start_after");
    freeReplyObject(hash);

    fts_position_t position;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_int_equal(position.token_kind, FTS_TOKEN_START_AFTER);
    assert_int_equal(position.cluster_time.seconds, BASE_SECONDS + 60);
    fts_position_cleanup(&position);

    assert_false(fts_redis_queue_checkpoint(queue, NULL, &err));

    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_snapshot_progress(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "snapshot");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    fts_position_t position;
    fts_error_t err;
    fts_error_clear(&err);

    /* An old token (history lost: a resync is starting). */
    fts_checkpoint_t old = token_checkpoint(TOKEN_TEXT(6), BASE_SECONDS - 100);
    checkpoint_ok(queue, &old);

    /* The snapshot starts: its hash replaces the token in one step. */
    fts_checkpoint_t progress = {
        .kind = FTS_CHECKPOINT_SNAPSHOT, .started.seconds = BASE_SECONDS, .started.increment = 2};
    checkpoint_ok(queue, &progress);
    assert_false(exists(redis, keys->token));
    redisReply *hash = run(redis, "HGETALL %s", keys->snapshot);
    assert_field(hash, "started_at", "1795428000.2");
    assert_field(hash, "queued", "0");
    assert_null(field_of(hash, "last_id"));
    freeReplyObject(hash);

    /* Two batches of documents, each with its progress. */
    batch_t *first = batch_new(queue, 0, 3, true);
    progress.last_id = "{\"$oid\":\"65a000000000000000000003\"}";
    progress.queued = 3;
    append_ok(queue, first, &progress);
    batch_t *second = batch_new(queue, 3, 2, true);
    progress.last_id = "{\"$oid\":\"65a000000000000000000005\"}";
    progress.queued = 5;
    append_ok(queue, second, &progress);
    assert_stream_holds(redis, keys->stream, 0, 5, true);
    hash = run(redis, "HGETALL %s", keys->snapshot);
    assert_field(hash, "started_at", "1795428000.2");
    assert_field(hash, "last_id", "{\"$oid\":\"65a000000000000000000005\"}");
    assert_field(hash, "queued", "5");
    freeReplyObject(hash);

    /* A restart mid-scan reads where to continue. */
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_false(position.has_token);
    assert_true(position.has_snapshot);
    assert_int_equal(position.started.seconds, BASE_SECONDS);
    assert_int_equal(position.started.increment, 2);
    assert_string_equal(position.last_id, "{\"$oid\":\"65a000000000000000000005\"}");
    assert_int_equal(position.queued, 5);
    fts_position_cleanup(&position);

    /* The first change-stream checkpoint ends the snapshot in the same step (script). */
    batch_t *change = batch_new(queue, 5, 1, false);
    fts_checkpoint_t token = token_checkpoint(TOKEN_TEXT(7), BASE_SECONDS + 5);
    long long eval = calls_of(redis, "eval");
    long long del = calls_of(redis, "del");
    append_ok(queue, change, &token);
    assert_int_equal(calls_of(redis, "eval") - eval, 1);
    assert_int_equal(calls_of(redis, "del") - del, 1);
    assert_false(exists(redis, keys->snapshot));
    assert_saved_token(redis, queue, TOKEN_TEXT(7));
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_true(position.has_token);
    assert_false(position.has_snapshot);
    fts_position_cleanup(&position);

    /* A snapshot started afresh leaves no last_id of an earlier one behind. */
    progress.queued = 9;
    checkpoint_ok(queue, &progress);
    progress.last_id = NULL;
    progress.queued = 0;
    progress.started.seconds = BASE_SECONDS + 500;
    checkpoint_ok(queue, &progress);
    hash = run(redis, "HGETALL %s", keys->snapshot);
    assert_null(field_of(hash, "last_id"));
    assert_field(hash, "queued", "0");
    assert_field(hash, "started_at", "1795428500.2");
    freeReplyObject(hash);

    batch_free(change);
    batch_free(second);
    batch_free(first);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_position_malformed_and_clear(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "position");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    fts_position_t position;
    fts_error_t err;
    fts_error_clear(&err);

    /* Nothing saved: a fresh start. */
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_false(position.has_token);
    assert_false(position.has_snapshot);

    /* Hand-edited nonsense is an error naming key and field, never a fresh start. */
    freeReplyObject(run(redis, "HSET %s token {} kind resumeAfter", keys->token));
    assert_false(fts_redis_queue_read_position(queue, &position, &err));
    assert_contains(err.message, keys->token);
    assert_contains(err.message, "\"kind\"");
    assert_null(position.token);

    /* Another type under the key: the server's refusal, named. */
    freeReplyObject(run(redis, "DEL %s", keys->token));
    freeReplyObject(run(redis, "SET %s x", keys->snapshot));
    assert_false(fts_redis_queue_read_position(queue, &position, &err));
    assert_contains(err.message, "WRONGTYPE");
    assert_contains(err.message, "saved position");

    /* reset-token --clear. */
    fts_checkpoint_t token = token_checkpoint(TOKEN_TEXT(8), BASE_SECONDS);
    freeReplyObject(run(redis, "DEL %s", keys->snapshot));
    checkpoint_ok(queue, &token);
    freeReplyObject(run(redis, "HSET %s started_at 1.1 queued 0", keys->snapshot));
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_true(position.has_token); /* both only by hand: the caller sees both */
    assert_true(position.has_snapshot);
    fts_position_cleanup(&position);
    assert_true(fts_redis_queue_clear_position(queue, &err));
    assert_false(exists(redis, keys->token));
    assert_false(exists(redis, keys->snapshot));
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_false(position.has_token);
    assert_false(position.has_snapshot);
    assert_false(position.sweep);

    /* The extract's resync: cleared, and the sweep noted in the same step; the flag stays
     * through the snapshot's checkpoints and goes with the first token checkpoint. */
    checkpoint_ok(queue, &token);
    assert_true(fts_redis_queue_clear_for_resync(queue, &err));
    assert_false(exists(redis, keys->token));
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_false(position.has_token);
    assert_false(position.has_snapshot);
    assert_true(position.sweep);
    fts_checkpoint_t snapshot = {.kind = FTS_CHECKPOINT_SNAPSHOT,
                                 .started = {BASE_SECONDS, 3},
                                 .last_id = "{\"$numberInt\":\"7\"}",
                                 .queued = 1};
    checkpoint_ok(queue, &snapshot);
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_true(position.has_snapshot);
    assert_int_equal(position.started.seconds, BASE_SECONDS);
    assert_int_equal(position.started.increment, 3);
    assert_string_equal(position.last_id, "{\"$numberInt\":\"7\"}");
    assert_true(position.sweep);
    fts_position_cleanup(&position);
    checkpoint_ok(queue, &token);
    assert_true(fts_redis_queue_read_position(queue, &position, &err));
    assert_true(position.has_token);
    assert_false(position.has_snapshot);
    assert_false(position.sweep);
    fts_position_cleanup(&position);

    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_backlog(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "backlog");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);

    /* No stream yet. */
    fts_backlog_t backlog = backlog_ok(queue);
    assert_int_equal(backlog.entries, 0);
    assert_false(backlog.group_exists);

    /* Entries but no loader group: all of them. */
    batch_t *batch = batch_new(queue, 0, 10, false);
    append_ok(queue, batch, NULL);
    backlog = backlog_ok(queue);
    assert_int_equal(backlog.entries, 10);
    assert_false(backlog.group_exists);
    assert_true(backlog.exact);

    /* The group (created after the entries, from the first one): all of them still, as lag. */
    ensure_group_ok(queue);
    backlog = backlog_ok(queue);
    assert_true(backlog.group_exists);
    assert_true(backlog.lag_known);
    assert_int_equal(backlog.entries, 10);
    assert_int_equal(backlog.lag, 10);
    assert_int_equal(backlog.pending, 0);

    /* A loader reads four (pending now) and acknowledges three. */
    assert_int_equal(read_group(redis, keys->stream, FTS_LOAD_GROUP, "loader-1", 4), 4);
    backlog = backlog_ok(queue);
    assert_int_equal(backlog.pending, 4);
    assert_int_equal(backlog.lag, 6);
    assert_int_equal(backlog.entries, 10);
    char ids[64][FTS_REDIS_STREAM_ID_SIZE];
    assert_int_equal(entry_ids(redis, keys->stream, ids), 10);
    for (int i = 0; i < 3; i++) {
        ack(redis, keys->stream, FTS_LOAD_GROUP, ids[i]);
    }
    backlog = backlog_ok(queue);
    assert_int_equal(backlog.entries, 7);
    assert_true(backlog.exact);

    /* Another group's progress does not count. */
    freeReplyObject(run(redis, "XGROUP CREATE %s audit 0", keys->stream));
    assert_int_equal(read_group(redis, keys->stream, "audit", "a", 10), 10);
    assert_int_equal(backlog_ok(queue).entries, 7);

    /* An XDEL past the last delivered entry makes the lag unknown: XLEN, an upper bound. */
    freeReplyObject(run(redis, "XDEL %s %s", keys->stream, ids[9]));
    backlog = backlog_ok(queue);
    assert_false(backlog.lag_known);
    assert_false(backlog.exact);
    assert_int_equal(backlog.length, 9);
    assert_int_equal(backlog.entries, 9);
    assert_true(backlog.entries >= 6); /* the true backlog: 1 pending + 5 undelivered */

    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_trim(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "trim");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    char ids[64][FTS_REDIS_STREAM_ID_SIZE];

    /* No stream, then a stream without groups: nothing is known acknowledged. */
    fts_trim_result_t trim = trim_ok(queue);
    assert_false(trim.trimmed);
    batch_t *batch = batch_new(queue, 0, 12, false);
    append_ok(queue, batch, NULL);
    trim = trim_ok(queue);
    assert_false(trim.trimmed);
    assert_int_equal(xlen(redis, keys->stream), 12);
    assert_int_equal(entry_ids(redis, keys->stream, ids), 12);

    /* A group that read nothing keeps everything. */
    ensure_group_ok(queue);
    trim = trim_ok(queue);
    assert_true(trim.trimmed);
    assert_int_equal(trim.removed, 0);
    assert_string_equal(trim.threshold, "0-1");

    /* loaders: read 0-5, acknowledged 0-3 (4, 5 pending). audit: read and acknowledged 0-2.
     * Everything below entry 3 is acknowledged by both: 0-2 go. */
    freeReplyObject(run(redis, "XGROUP CREATE %s audit 0", keys->stream));
    assert_int_equal(read_group(redis, keys->stream, FTS_LOAD_GROUP, "l1", 6), 6);
    for (int i = 0; i < 4; i++) {
        ack(redis, keys->stream, FTS_LOAD_GROUP, ids[i]);
    }
    assert_int_equal(read_group(redis, keys->stream, "audit", "a1", 3), 3);
    for (int i = 0; i < 3; i++) {
        ack(redis, keys->stream, "audit", ids[i]);
    }
    trim = trim_ok(queue);
    assert_int_equal(trim.removed, 3);
    assert_remaining(redis, keys->stream, ids, 3, 12);

    /* audit catches up completely; loaders' pending 4 holds the line, even after another
     * consumer claimed them (XAUTOCLAIM keeps them pending). */
    assert_int_equal(read_group(redis, keys->stream, "audit", "a1", 20), 9);
    for (int i = 3; i < 12; i++) {
        ack(redis, keys->stream, "audit", ids[i]);
    }
    freeReplyObject(run(redis, "XAUTOCLAIM %s %s l2 0 0-0 COUNT 10", keys->stream, FTS_LOAD_GROUP));
    trim = trim_ok(queue);
    assert_int_equal(trim.removed, 1);
    assert_string_equal(trim.threshold, ids[4]);
    assert_remaining(redis, keys->stream, ids, 4, 12);

    /* Pending acknowledged: now the undelivered ones (6-11) hold the line for loaders. */
    ack(redis, keys->stream, FTS_LOAD_GROUP, ids[4]);
    ack(redis, keys->stream, FTS_LOAD_GROUP, ids[5]);
    trim = trim_ok(queue);
    assert_int_equal(trim.removed, 2);
    assert_remaining(redis, keys->stream, ids, 6, 12);

    /* A third group joining from the start of what is left holds everything that is left. */
    freeReplyObject(run(redis, "XGROUP CREATE %s late 0", keys->stream));
    assert_int_equal(read_group(redis, keys->stream, FTS_LOAD_GROUP, "l1", 20), 6);
    for (int i = 6; i < 12; i++) {
        ack(redis, keys->stream, FTS_LOAD_GROUP, ids[i]);
    }
    trim = trim_ok(queue);
    assert_int_equal(trim.removed, 0);
    assert_remaining(redis, keys->stream, ids, 6, 12);

    /* Everyone has everything: the stream empties, the key and its groups stay. */
    assert_int_equal(read_group(redis, keys->stream, "late", "x", 20), 6);
    for (int i = 6; i < 12; i++) {
        ack(redis, keys->stream, "late", ids[i]);
    }
    trim = trim_ok(queue);
    assert_int_equal(trim.removed, 6);
    assert_int_equal(xlen(redis, keys->stream), 0);
    assert_true(exists(redis, keys->stream));
    /* New entries still get larger IDs and are kept until read. */
    batch_t *next = batch_new(queue, 12, 2, false);
    append_ok(queue, next, NULL);
    trim = trim_ok(queue);
    assert_int_equal(trim.removed, 0);
    assert_int_equal(xlen(redis, keys->stream), 2);

    batch_free(next);
    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_dead_letter(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "dead");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    batch_t *batch = batch_new(queue, 0, 2, false);
    fts_checkpoint_t before = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 1);
    append_ok(queue, batch, &before);

    /* The worker crashed three times on the event after them: dead-letter it and move the
     * checkpoint past it, in one transaction. */
    const char *items[] = {"op", "index", "id", "doc-2", "ns", "shop.apps", "ts", "1795428002.1"};
    fts_dead_letter_t dead = {.items = items,
                              .count = 8,
                              .reason = "the transform worker crashed 3 times (signal 11)",
                              .stage = "transform"};
    fts_checkpoint_t past = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 2);
    long long eval = calls_of(redis, "eval");
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_queue_dead_letter(queue, &dead, &past, &err));
    assert_int_equal(calls_of(redis, "eval") - eval, 1);
    assert_saved_token(redis, queue, TOKEN_TEXT(2));
    assert_int_equal(xlen(redis, keys->stream), 2);

    redisReply *entries = run(redis, "XRANGE %s - +", keys->dead);
    assert_int_equal(entries->elements, 1);
    const redisReply *fields = entries->element[0]->element[1];
    assert_int_equal(fields->elements, 14);
    for (size_t i = 0; i < 8; i++) {
        assert_string_equal(fields->element[i]->str, items[i]);
    }
    assert_string_equal(fields->element[8]->str, "reason");
    assert_field(fields, "reason", "the transform worker crashed 3 times (signal 11)");
    assert_field(fields, "stage", "transform");
    assert_true(atoll(field_of(fields, "failed_at")->str) > 1700000000000LL);
    freeReplyObject(entries);

    /* Binary-safe originals (lens given), no checkpoint; malformed requests are refused. */
    const char *binary[] = {"body", "a\0b"};
    const size_t binary_len[] = {4, 3};
    fts_dead_letter_t raw = {
        .items = binary, .lens = binary_len, .count = 2, .reason = "r", .stage = "load"};
    assert_true(fts_redis_queue_dead_letter(queue, &raw, NULL, &err));
    entries = run(redis, "XRANGE %s - +", keys->dead);
    assert_int_equal(entries->elements, 2);
    assert_int_equal(entries->element[1]->element[1]->element[1]->len, 3);
    freeReplyObject(entries);
    fts_dead_letter_t odd = {.items = items, .count = 3, .reason = "r", .stage = "s"};
    assert_false(fts_redis_queue_dead_letter(queue, &odd, &past, &err));
    fts_dead_letter_t no_reason = {.items = items, .count = 2, .stage = "s"};
    assert_false(fts_redis_queue_dead_letter(queue, &no_reason, &past, &err));
    assert_contains(err.message, "reason");

    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

/* ---- Two servers ---- */

/* Redis lost its data (issue 13, item 1; README.md, Reliability): once the epoch marker is
 * gone or changed, no checkpoint is written (the remembered position would claim entries that
 * are gone), the refusal says so with FTS_QUEUE_DATA_LOST, and the next check reports the loss
 * and sets a new marker; on two servers the state server's marker is checked too. */
static void test_epoch_marker_lost_refuses_checkpoints(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "epoch");
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    batch_t *batch = batch_new(queue, 0, 2, false);
    fts_checkpoint_t first = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 1);
    append_ok(queue, batch, &first);

    /* The marker is gone (FLUSHALL, a restart without persistence): refused, nothing written. */
    freeReplyObject(run(redis, "DEL %s", keys->epoch));
    fts_checkpoint_t later = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 2);
    fts_error_t err;
    fts_error_clear(&err);
    assert_false(fts_redis_queue_append(queue, batch->argv, batch->count, &later, &err));
    assert_int_equal(err.code, FTS_QUEUE_DATA_LOST);
    assert_contains(err.message, "Redis lost its data");
    assert_int_equal(xlen(redis, keys->stream), 2);
    assert_false(fts_redis_queue_checkpoint(queue, &later, &err));
    assert_int_equal(err.code, FTS_QUEUE_DATA_LOST);
    assert_saved_token(redis, queue, TOKEN_TEXT(1));

    /* A writer that never saw a marker (a new worker) refuses too when there is none. */
    fts_redis_queue_t *fresh = fts_redis_queue_new(redis, NULL, pipeline, &err);
    assert_non_null(fresh);
    assert_false(fts_redis_queue_checkpoint(fresh, &later, &err));
    assert_int_equal(err.code, FTS_QUEUE_DATA_LOST);

    /* The parent's check reports the loss and sets a new marker, which the new writer learns;
     * a writer that knew the old one is still refused. */
    unsigned lost = 0;
    fts_redis_t *parent_redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *parent = fts_redis_queue_new(parent_redis, NULL, pipeline, &err);
    assert_non_null(parent);
    assert_true(fts_redis_queue_check_epoch(parent, &lost, &err));
    assert_int_equal(lost, 0); /* it knew no marker: a fresh start, as far as it can tell */
    assert_true(fts_redis_queue_check_epoch(queue, &lost, &err));
    assert_int_equal(lost, FTS_DATA_LOST_STREAM);
    assert_true(fts_redis_queue_checkpoint(fresh, &later, &err));
    assert_saved_token(redis, queue, TOKEN_TEXT(2));
    assert_true(fts_redis_queue_check_epoch(parent, &lost, &err));
    assert_int_equal(lost, FTS_DATA_LOST_STREAM); /* queue set a newer one */
    assert_false(fts_redis_queue_checkpoint(fresh, &first, &err));
    assert_int_equal(err.code, FTS_QUEUE_DATA_LOST);
    assert_saved_token(redis, queue, TOKEN_TEXT(2));
    fts_redis_queue_destroy(parent);
    fts_redis_destroy(parent_redis);
    fts_redis_queue_destroy(fresh);

    /* Two servers: the state server lost its data, the queue server did not. The entries go
     * in, the checkpoint is refused on the state server. */
    fts_test_redis_server_t *queue_server = start_server();
    fts_redis_t *queue_redis = connect_ok(fts_test_redis_server_url(queue_server));
    char split[64];
    unique_pipeline(split, sizeof split, "epochsplit");
    fts_redis_queue_t *two = queue_ok(redis, queue_redis, split);
    const fts_redis_keys_t *two_keys = fts_redis_queue_keys(two);
    ensure_group_ok(two);
    batch_t *two_batch = batch_new(two, 0, 2, false);
    append_ok(two, two_batch, &first);
    freeReplyObject(run(redis, "DEL %s", two_keys->epoch));
    assert_false(fts_redis_queue_append(two, two_batch->argv, two_batch->count, &later, &err));
    assert_int_equal(err.code, FTS_QUEUE_DATA_LOST);
    assert_saved_token(redis, two, TOKEN_TEXT(1));
    assert_true(fts_redis_queue_check_epoch(two, &lost, &err));
    assert_int_equal(lost, FTS_DATA_LOST_STATE);
    /* A new process that finds a marker on the queue server only: the state server lost it. */
    freeReplyObject(run(redis, "DEL %s", two_keys->epoch));
    fts_redis_queue_t *two_fresh = fts_redis_queue_new(redis, queue_redis, split, &err);
    assert_true(fts_redis_queue_check_epoch(two_fresh, &lost, &err));
    assert_int_equal(lost, FTS_DATA_LOST_STATE);
    fts_redis_queue_destroy(two_fresh);

    batch_free(two_batch);
    fts_redis_queue_destroy(two);
    fts_redis_destroy(queue_redis);
    fts_test_redis_server_destroy(queue_server);
    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static void test_separate_servers(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "split");
    fts_test_redis_server_t *queue_server = start_server();
    fts_redis_t *state_redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_t *queue_redis = connect_ok(fts_test_redis_server_url(queue_server));
    fts_redis_queue_t *queue = queue_ok(state_redis, queue_redis, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    assert_false(fts_redis_queue_is_atomic(queue));
    ensure_group_ok(queue);

    batch_t *batch = batch_new(queue, 0, 4, false);
    fts_checkpoint_t checkpoint = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 3);
    long long xadd = calls_of(queue_redis, "xadd");
    long long queue_multi = calls_of(queue_redis, "multi");
    append_ok(queue, batch, &checkpoint);
    assert_int_equal(calls_of(queue_redis, "xadd") - xadd, 4);
    assert_int_equal(calls_of(queue_redis, "multi"), queue_multi);

    /* Streams on the queue server, position on the state server, nothing crossed over. */
    assert_stream_holds(queue_redis, keys->stream, 0, 4, false);
    assert_false(exists(state_redis, keys->stream));
    assert_saved_token(state_redis, queue, TOKEN_TEXT(1));
    assert_false(exists(queue_redis, keys->token));

    /* Dead letters go to the queue server, the checkpoint past them to the state server. */
    const char *items[] = {"op", "index", "id", "doc-4"};
    fts_dead_letter_t dead = {.items = items, .count = 4, .reason = "poison", .stage = "transform"};
    fts_checkpoint_t past = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 4);
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_queue_dead_letter(queue, &dead, &past, &err));
    assert_int_equal(xlen(queue_redis, keys->dead), 1);
    assert_false(exists(state_redis, keys->dead));
    assert_saved_token(state_redis, queue, TOKEN_TEXT(2));

    /* The id map lives with the stream: written by the script on the queue server, the token
     * on the state server only after it. */
    fts_id_map_change_t map[] = {
        {.source_id = "{ \"$numberInt\" : \"9\" }", .index_id = "109", .index_id_len = 3}};
    fts_queue_batch_t with_map = {.actions = batch->argv, .count = 0, .map = map, .map_count = 1};
    fts_checkpoint_t mapped = token_checkpoint(TOKEN_TEXT(3), BASE_SECONDS + 5);
    fts_error_clear(&err);
    assert_true(fts_redis_queue_append_batch(queue, &with_map, &mapped, &err));
    assert_true(exists(queue_redis, keys->ids));
    assert_false(exists(state_redis, keys->ids));
    assert_saved_token(state_redis, queue, TOKEN_TEXT(3));
    freeReplyObject(run(queue_redis, "DEL %s", keys->ids));

    /* Backlog and trim look at the queue server. */
    assert_int_equal(backlog_ok(queue).entries, 4);
    assert_true(trim_ok(queue).trimmed);

    /* Two connections to one server are one server. */
    fts_redis_t *again = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_queue_t *same = queue_ok(state_redis, again, pipeline);
    assert_true(fts_redis_queue_is_atomic(same));
    fts_redis_queue_destroy(same);
    fts_redis_destroy(again);

    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(queue_redis);
    fts_redis_destroy(state_redis);
    fts_test_redis_server_destroy(queue_server);
}

/* Kills the server (SIGKILL) from a child process after delay_ms, while this process is
 * blocked in an append that the server holds back (CLIENT PAUSE WRITE). Returns the child. */
static pid_t kill_later(pid_t server, long delay_ms)
{
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct timespec pause = {.tv_sec = delay_ms / 1000,
                                 .tv_nsec = (delay_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
        kill(server, SIGKILL);
        _exit(0);
    }
    return child;
}

/* Holds back every write on the server for a while (another connection), so that an append
 * sent now is in flight, not yet executed, when the server dies. */
static void pause_writes(const char *url)
{
    fts_redis_t *admin = connect_ok(url);
    freeReplyObject(run(admin, "CLIENT PAUSE 10000 WRITE"));
    fts_redis_destroy(admin);
}

static void restart_ok(fts_test_redis_server_t *server)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_redis_server_restart(server, &err)) {
        fail_msg("restart failed: %s", err.message);
    }
}

static void test_queue_server_dies_mid_append(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "queuedies");
    fts_test_redis_server_t *queue_server = start_server();
    fts_redis_t *state_redis = connect_ok(fts_test_redis_server_url(shared_server));
    fts_redis_t *queue_redis = connect_ok(fts_test_redis_server_url(queue_server));
    fts_redis_queue_t *queue = queue_ok(state_redis, queue_redis, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    batch_t *first = batch_new(queue, 0, 3, false);
    fts_checkpoint_t checkpoint1 = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 2);
    append_ok(queue, first, &checkpoint1);

    /* The queue server dies while the next batch is in flight. */
    batch_t *second = batch_new(queue, 3, 50, false);
    fts_checkpoint_t checkpoint2 = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 52);
    pid_t pid = server_pid(queue_redis);
    pause_writes(fts_test_redis_server_url(queue_server));
    pid_t child = kill_later(pid, 300);
    fts_error_t err;
    fts_error_clear(&err);
    bool appended = fts_redis_queue_append(queue, second->argv, 50, &checkpoint2, &err);
    waitpid(child, NULL, 0);
    assert_false(appended);
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_contains(err.message, "checkpoint was not saved");

    /* The checkpoint on the state server did not move. */
    assert_saved_token(state_redis, queue, TOKEN_TEXT(1));

    /* Back (AOF): the first batch is there, the second never ran; re-sending it works. */
    restart_ok(queue_server);
    assert_stream_holds(queue_redis, keys->stream, 0, 3, false);
    append_ok(queue, second, &checkpoint2);
    assert_stream_holds(queue_redis, keys->stream, 0, 53, false);
    assert_saved_token(state_redis, queue, TOKEN_TEXT(2));

    batch_free(second);
    batch_free(first);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(queue_redis);
    fts_redis_destroy(state_redis);
    fts_test_redis_server_destroy(queue_server);
}

static void test_restart_mid_append(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "restart");
    fts_test_redis_server_t *server = start_server();
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server));
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    batch_t *first = batch_new(queue, 0, 3, false);
    fts_checkpoint_t checkpoint1 = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 2);
    append_ok(queue, first, &checkpoint1);

    /* The server dies with the transaction in flight: neither entries nor checkpoint. */
    batch_t *second = batch_new(queue, 3, 20, false);
    fts_checkpoint_t checkpoint2 = token_checkpoint(TOKEN_TEXT(2), BASE_SECONDS + 22);
    pid_t pid = server_pid(redis);
    pause_writes(fts_test_redis_server_url(server));
    pid_t child = kill_later(pid, 300);
    fts_error_t err;
    fts_error_clear(&err);
    bool appended = fts_redis_queue_append(queue, second->argv, 20, &checkpoint2, &err);
    waitpid(child, NULL, 0);
    assert_false(appended);
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_contains(err.message, "not resent");

    restart_ok(server);
    fts_position_t position;
    fts_error_clear(&err);
    if (!fts_redis_queue_read_position(queue, &position, &err)) {
        fail_msg("read_position after restart: %s", err.message);
    }
    assert_string_equal(position.token, TOKEN_TEXT(1));
    fts_position_cleanup(&position);
    assert_stream_holds(redis, keys->stream, 0, 3, false);

    /* The caller re-sends from its checkpoint: the next append reconnects and succeeds. */
    append_ok(queue, second, &checkpoint2);
    assert_true(fts_redis_connection_count(redis) >= 2);
    assert_stream_holds(redis, keys->stream, 0, 23, false);
    assert_saved_token(redis, queue, TOKEN_TEXT(2));

    /* And all of it survives a clean restart (AOF). */
    restart_ok(server);
    assert_stream_holds(redis, keys->stream, 0, 23, false);
    assert_saved_token(redis, queue, TOKEN_TEXT(2));
    redisReply *groups = run(redis, "XINFO GROUPS %s", keys->stream);
    assert_int_equal(groups->elements, 1);
    freeReplyObject(groups);

    batch_free(second);
    batch_free(first);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
    fts_test_redis_server_destroy(server);
}

/* ---- The shared testbed server ---- */

static void test_shared_testbed_server(void **state)
{
    (void)state;
    const char *url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "testbed");
    fts_redis_t *redis = connect_ok(url);
    fts_redis_queue_t *queue = queue_ok(redis, NULL, pipeline);
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    ensure_group_ok(queue);
    batch_t *batch = batch_new(queue, 0, 3, false);
    fts_checkpoint_t checkpoint = token_checkpoint(TOKEN_TEXT(1), BASE_SECONDS + 2);
    append_ok(queue, batch, &checkpoint);
    assert_stream_holds(redis, keys->stream, 0, 3, false);
    assert_int_equal(backlog_ok(queue).entries, 3);
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_queue_clear_position(queue, &err));
    freeReplyObject(run(redis, "DEL %s", keys->stream));
    batch_free(batch);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(redis);
}

static int start_shared_server(void **state)
{
    (void)state;
    /* As in ftsync, where fts_signals_install() does it (see redis_conn.h). */
    signal(SIGPIPE, SIG_IGN);
    fts_error_t err;
    fts_error_clear(&err);
    shared_server = fts_test_redis_server_start(NULL, &err);
    if (!shared_server) {
        fprintf(stderr, "cannot start redis-server: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int stop_shared_server(void **state)
{
    (void)state;
    fts_test_redis_server_destroy(shared_server);
    shared_server = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_testbed_server),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_ensure_group),
        cmocka_unit_test(test_atomic_append_and_checkpoint),
        cmocka_unit_test(test_malformed_action_sends_nothing),
        cmocka_unit_test(test_failure_inside_the_transaction),
        cmocka_unit_test(test_failed_xadd_leaves_the_token),
        cmocka_unit_test(test_id_map_append_and_read),
        cmocka_unit_test(test_owners_dead_letter_collisions),
        cmocka_unit_test(test_clears_delete_owners),
        cmocka_unit_test(test_token_only_checkpoint),
        cmocka_unit_test(test_snapshot_progress),
        cmocka_unit_test(test_position_malformed_and_clear),
        cmocka_unit_test(test_backlog),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_separate_servers),
        cmocka_unit_test(test_epoch_marker_lost_refuses_checkpoints),
        cmocka_unit_test(test_queue_server_dies_mid_append),
        cmocka_unit_test(test_restart_mid_append),
    };
    return cmocka_run_group_tests(tests, start_shared_server, stop_shared_server);
}
