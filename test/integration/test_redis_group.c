/*
 * test_redis_group.c - the loaders' asynchronous consumer group against real redis-servers.
 *
 * Every test runs its own server (test/support/redis_server.h) and its own libevent loop, and
 * inspects the server through a synchronous hiredis connection of its own. Besides the commands'
 * results they pin the promises of redis_group.h: every call completes once and never from
 * inside the call, a broken or silent server fails the call with a Redis error and the
 * connection comes back, and destroy calls nobody.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "assertions.h"

#include "log.h"
#include "redis_group.h"
#include "redis_server.h"
#include "test_time.h"

/* How long a test waits for a callback before failing. */
#define DEADLINE_MS 15000

#define STREAM   "ftsync:{t}:stream"
#define DEAD     "ftsync:{t}:dead"
#define GROUP    "loaders"
#define CONSUMER "loader-1"

/* What one callback reported, copied out of the borrowed arguments. */
typedef struct {
    int calls;
    bool during_call; /* the callback ran while the API call had not returned */
    bool failed;
    fts_error_t err;
    size_t count;
    char ids[16][FTS_STREAM_ID_SIZE];
    bool deleted_entry[16]; /* items NULL */
    char fields[16][256];   /* "f=v,f=v" */
    uint64_t deliveries[16];
    char cursor[FTS_STREAM_ID_SIZE];
    bool has_cursor;
    uint64_t deleted;
} result_t;

/* Set around every API call so that a callback can tell it ran synchronously. */
static bool in_call;

static void on_done(void *arg, const fts_error_t *err)
{
    result_t *result = arg;
    result->calls++;
    result->during_call = in_call;
    result->failed = err != NULL;
    if (err) {
        result->err = *err;
    }
}

static void on_entries(void *arg, const fts_stream_entry_t *entries, size_t count,
                       const char *next_cursor, uint64_t deleted, const fts_error_t *err)
{
    result_t *result = arg;
    on_done(arg, err);
    if (err) {
        assert_null(entries);
        assert_int_equal(count, 0);
        return;
    }
    assert_true(count <= 16);
    result->count = count;
    for (size_t i = 0; i < count; i++) {
        snprintf(result->ids[i], sizeof result->ids[i], "%s", entries[i].id);
        result->deliveries[i] = entries[i].deliveries;
        result->deleted_entry[i] = entries[i].items == NULL;
        result->fields[i][0] = '\0';
        for (size_t k = 0; entries[i].items && k + 1 < entries[i].count; k += 2) {
            char pair[128];
            snprintf(pair, sizeof pair, "%s%.*s=%.*s", k ? "," : "", (int)entries[i].items[k].len,
                     entries[i].items[k].data, (int)entries[i].items[k + 1].len,
                     entries[i].items[k + 1].data);
            strncat(result->fields[i], pair,
                    sizeof result->fields[i] - strlen(result->fields[i]) - 1);
        }
    }
    result->has_cursor = next_cursor != NULL;
    if (next_cursor) {
        snprintf(result->cursor, sizeof result->cursor, "%s", next_cursor);
    }
    result->deleted = deleted;
}

/* Per test: a server, a loop, a synchronous inspector. */
typedef struct {
    fts_test_redis_server_t *server;
    struct event_base *base;
    redisContext *sync;
    struct event *tick;
} fixture_t;

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static fixture_t *fixture_new(const char *const *extra_args)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    fts_error_t err;
    fts_error_clear(&err);
    f->server = fts_test_redis_server_start(extra_args, &err);
    if (!f->server) {
        fail_msg("cannot start redis-server: %s", err.message);
    }
    f->base = event_base_new();
    assert_non_null(f->base);
    /* A heartbeat, so that one loop iteration never waits longer than this. */
    f->tick = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
    struct timeval tv = {0, 5000};
    event_add(f->tick, &tv);
    f->sync = redisConnect("127.0.0.1", fts_test_redis_server_port(f->server));
    assert_non_null(f->sync);
    assert_int_equal(f->sync->err, 0);
    if (extra_args && extra_args[0] && strcmp(extra_args[0], "--requirepass") == 0) {
        redisReply *reply = redisCommand(f->sync, "AUTH %s", extra_args[1]);
        assert_non_null(reply);
        freeReplyObject(reply);
    }
    return f;
}

static int setup(void **state)
{
    *state = fixture_new(NULL);
    return 0;
}

static void fixture_free(fixture_t *f)
{
    if (!f) {
        return;
    }
    if (f->sync) {
        redisFree(f->sync);
    }
    event_free(f->tick);
    event_base_free(f->base);
    fts_test_redis_server_destroy(f->server);
    free(f);
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

/* A command on the inspector connection, reconnecting it (once) after a server restart. */
static redisReply *sync_command(fixture_t *f, const char *format, ...)
{
    redisReply *reply = NULL;
    for (int attempt = 0; attempt < 2 && !reply; attempt++) {
        if (f->sync->err) {
            redisFree(f->sync);
            f->sync = redisConnect("127.0.0.1", fts_test_redis_server_port(f->server));
            assert_non_null(f->sync);
        }
        va_list args;
        va_start(args, format);
        reply = redisvCommand(f->sync, format, args);
        va_end(args);
    }
    if (!reply) {
        fail_msg("inspector command failed: %s", f->sync->errstr);
    }
    return reply;
}

/* XADD, returning the new ID into id. */
static void xadd(fixture_t *f, const char *op, const char *doc, char id[FTS_STREAM_ID_SIZE])
{
    redisReply *reply = sync_command(f, "XADD %s * op %s id %s", STREAM, op, doc);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    snprintf(id, FTS_STREAM_ID_SIZE, "%s", reply->str);
    freeReplyObject(reply);
}

/* Runs the loop until *calls becomes non-zero, failing the test after DEADLINE_MS. */
static void wait_for(fixture_t *f, const int *calls)
{
    uint64_t deadline = fts_test_monotonic_ms() + DEADLINE_MS;
    while (*calls == 0) {
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("no callback within %d ms", DEADLINE_MS);
        }
        event_base_loop(f->base, EVLOOP_ONCE);
    }
}

static void run_loop_ms(fixture_t *f, uint64_t ms)
{
    uint64_t end = fts_test_monotonic_ms() + ms;
    while (fts_test_monotonic_ms() < end) {
        event_base_loop(f->base, EVLOOP_ONCE);
    }
}

static void wait_connected(fixture_t *f, fts_redis_group_t *group)
{
    uint64_t deadline = fts_test_monotonic_ms() + DEADLINE_MS;
    while (!fts_redis_group_connected(group)) {
        if (fts_test_monotonic_ms() > deadline) {
            fts_test_redis_server_print_log_tail(f->server, 20);
            fail_msg("the group did not connect within %d ms", DEADLINE_MS);
        }
        event_base_loop(f->base, EVLOOP_ONCE);
    }
}

static fts_redis_group_options_t quick_options(void)
{
    fts_redis_group_options_t options = {
        .stream_key = STREAM,
        .dead_key = DEAD,
        .group = GROUP,
        .consumer = CONSUMER,
        .connect_timeout_ms = 1000,
        .command_timeout_ms = 2000,
        .block_ms = 300,
        .claim_min_idle_ms = 100,
    };
    return options;
}

static fts_redis_group_t *group_new_url(fixture_t *f, const char *url,
                                        const fts_redis_group_options_t *options)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_group_t *group = fts_redis_group_new(f->base, url, options, &err);
    if (!group) {
        fail_msg("cannot create the group: %s", err.message);
    }
    return group;
}

static fts_redis_group_t *group_new(fixture_t *f)
{
    fts_redis_group_options_t options = quick_options();
    fts_redis_group_t *group = group_new_url(f, fts_test_redis_server_url(f->server), &options);
    wait_connected(f, group);
    return group;
}

/* The API calls, each checked to complete later and exactly once. */
static void ensure(fixture_t *f, fts_redis_group_t *group, result_t *result)
{
    memset(result, 0, sizeof *result);
    in_call = true;
    fts_redis_group_ensure(group, on_done, result);
    in_call = false;
    assert_int_equal(result->calls, 0);
    wait_for(f, &result->calls);
    assert_false(result->during_call);
}

static void ensure_ok(fixture_t *f, fts_redis_group_t *group)
{
    result_t result;
    ensure(f, group, &result);
    if (result.failed) {
        fail_msg("ensure failed: %s", result.err.message);
    }
}

static void read_entries(fixture_t *f, fts_redis_group_t *group, const char *start, size_t count,
                         result_t *result)
{
    memset(result, 0, sizeof *result);
    in_call = true;
    fts_redis_group_read(group, start, count, on_entries, result);
    in_call = false;
    assert_int_equal(result->calls, 0);
    wait_for(f, &result->calls);
    assert_false(result->during_call);
    if (result->failed) {
        fail_msg("read failed: %s", result->err.message);
    }
}

static void claim(fixture_t *f, fts_redis_group_t *group, const char *cursor, size_t count,
                  result_t *result)
{
    memset(result, 0, sizeof *result);
    in_call = true;
    fts_redis_group_claim(group, cursor, count, on_entries, result);
    in_call = false;
    assert_int_equal(result->calls, 0);
    wait_for(f, &result->calls);
    assert_false(result->during_call);
    if (result->failed) {
        fail_msg("claim failed: %s", result->err.message);
    }
}

static void settle(fixture_t *f, fts_redis_group_t *group, const fts_settlement_t *settlement,
                   result_t *result)
{
    memset(result, 0, sizeof *result);
    in_call = true;
    fts_redis_group_settle(group, settlement, on_done, result);
    in_call = false;
    assert_int_equal(result->calls, 0);
    wait_for(f, &result->calls);
    assert_false(result->during_call);
}

/* Extended XPENDING for one ID: its idle time and delivery count, false when not pending. */
static bool pending_of(fixture_t *f, const char *id, char *consumer, size_t consumer_size,
                       long long *idle, long long *deliveries)
{
    redisReply *reply = sync_command(f, "XPENDING %s %s %s %s 1", STREAM, GROUP, id, id);
    assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
    bool found = reply->elements == 1;
    if (found) {
        redisReply *row = reply->element[0];
        if (consumer) {
            snprintf(consumer, consumer_size, "%s", row->element[1]->str);
        }
        *idle = row->element[2]->integer;
        *deliveries = row->element[3]->integer;
    }
    freeReplyObject(reply);
    return found;
}

static long long pending_count(fixture_t *f)
{
    redisReply *reply = sync_command(f, "XPENDING %s %s", STREAM, GROUP);
    assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
    long long count = reply->element[0]->integer;
    freeReplyObject(reply);
    return count;
}

/* ---- tests ---- */

static void test_ensure_creates_group_and_busygroup_is_success(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_t *group = group_new(f);
    ensure_ok(f, group);
    redisReply *reply = sync_command(f, "XINFO GROUPS %s", STREAM);
    assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
    assert_int_equal(reply->elements, 1);
    freeReplyObject(reply);
    ensure_ok(f, group); /* BUSYGROUP */

    /* A key of another type: a server error naming the key. */
    reply = sync_command(f, "SET ftsync:{w}:stream text");
    freeReplyObject(reply);
    fts_redis_group_options_t options = quick_options();
    options.stream_key = "ftsync:{w}:stream";
    fts_redis_group_t *wrong = group_new_url(f, fts_test_redis_server_url(f->server), &options);
    wait_connected(f, wrong);
    result_t result;
    ensure(f, wrong, &result);
    assert_true(result.failed);
    assert_int_equal(result.err.domain, FTS_ERROR_REDIS);
    assert_int_equal(result.err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(result.err.message, "WRONGTYPE");
    assert_contains(result.err.message, "ftsync:{w}:stream");
    fts_redis_group_destroy(wrong);
    fts_redis_group_destroy(group);
}

static void test_read_new_entries_and_empty_block(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_t *group = group_new(f);
    ensure_ok(f, group);
    char a[FTS_STREAM_ID_SIZE], b[FTS_STREAM_ID_SIZE];
    xadd(f, "index", "doc-a", a);
    xadd(f, "delete", "doc-b", b);

    result_t result;
    read_entries(f, group, ">", 10, &result);
    assert_int_equal(result.count, 2);
    assert_string_equal(result.ids[0], a);
    assert_string_equal(result.fields[0], "op=index,id=doc-a");
    assert_int_equal(result.deliveries[0], 1);
    assert_string_equal(result.ids[1], b);
    assert_string_equal(result.fields[1], "op=delete,id=doc-b");
    assert_int_equal(result.deliveries[1], 1);
    assert_false(result.has_cursor);

    /* Nothing new: BLOCK runs out and the read completes empty after about block_ms. */
    uint64_t start = fts_test_monotonic_ms();
    read_entries(f, group, ">", 10, &result);
    uint64_t elapsed = fts_test_monotonic_ms() - start;
    assert_int_equal(result.count, 0);
    assert_true(elapsed >= 250);
    assert_true(elapsed < 2000);
    fts_redis_group_destroy(group);
}

static void test_history_read_counts_deliveries_and_deleted_entries(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_t *group = group_new(f);
    ensure_ok(f, group);
    char ids[3][FTS_STREAM_ID_SIZE];
    for (int i = 0; i < 3; i++) {
        xadd(f, "index", "doc", ids[i]);
    }
    result_t result;
    read_entries(f, group, ">", 10, &result);
    assert_int_equal(result.count, 3);

    read_entries(f, group, "0", 10, &result);
    assert_int_equal(result.count, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(result.ids[i], ids[i]);
        assert_int_equal(result.deliveries[i], 2);
        assert_string_equal(result.fields[i], "op=index,id=doc");
    }

    /* Deleted from the stream while pending: reported with items NULL. */
    redisReply *reply = sync_command(f, "XDEL %s %s", STREAM, ids[1]);
    freeReplyObject(reply);
    read_entries(f, group, "0", 10, &result);
    assert_int_equal(result.count, 3);
    assert_false(result.deleted_entry[0]);
    assert_true(result.deleted_entry[1]);
    assert_string_equal(result.ids[1], ids[1]);
    assert_false(result.deleted_entry[2]);
    assert_int_equal(result.deliveries[0], 3);
    assert_int_equal(result.deliveries[2], 3);

    /* After an ID: only the entries after it. */
    read_entries(f, group, ids[1], 10, &result);
    assert_int_equal(result.count, 1);
    assert_string_equal(result.ids[0], ids[2]);
    assert_int_equal(result.deliveries[0], 4);
    fts_redis_group_destroy(group);
}

static void test_claim_takes_idle_entries_of_another_consumer(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_t *group = group_new(f);
    ensure_ok(f, group);
    char ids[4][FTS_STREAM_ID_SIZE];
    for (int i = 0; i < 4; i++) {
        xadd(f, "index", "doc", ids[i]);
    }
    redisReply *reply =
        sync_command(f, "XREADGROUP GROUP %s other COUNT 10 STREAMS %s >", GROUP, STREAM);
    freeReplyObject(reply);
    reply = sync_command(f, "XDEL %s %s", STREAM, ids[3]);
    freeReplyObject(reply);

    /* Not idle long enough yet: nothing claimed. */
    result_t result;
    claim(f, group, "0-0", 10, &result);
    assert_int_equal(result.count, 0);
    assert_string_equal(result.cursor, "0-0");
    /* Redis 7 drops a deleted entry from the pending list whatever its idle time. */
    assert_int_equal(result.deleted, 1);

    fts_test_sleep_ms(150);
    claim(f, group, "0-0", 2, &result);
    assert_int_equal(result.count, 2);
    assert_string_equal(result.ids[0], ids[0]);
    assert_string_equal(result.ids[1], ids[1]);
    assert_int_equal(result.deliveries[0], 2);
    assert_int_equal(result.deliveries[1], 2);
    assert_string_equal(result.fields[0], "op=index,id=doc");
    assert_true(result.has_cursor);
    assert_string_equal(result.cursor, ids[2]);

    char cursor[FTS_STREAM_ID_SIZE];
    snprintf(cursor, sizeof cursor, "%s", result.cursor);
    claim(f, group, cursor, 10, &result);
    assert_int_equal(result.count, 1);
    assert_string_equal(result.ids[0], ids[2]);
    assert_int_equal(result.deliveries[0], 2);
    assert_string_equal(result.cursor, "0-0");
    assert_int_equal(result.deleted, 0);

    char owner[64];
    long long idle, deliveries;
    for (int i = 0; i < 3; i++) {
        assert_true(pending_of(f, ids[i], owner, sizeof owner, &idle, &deliveries));
        assert_string_equal(owner, CONSUMER);
    }
    assert_false(pending_of(f, ids[3], owner, sizeof owner, &idle, &deliveries));
    fts_redis_group_destroy(group);
}

static void test_touch_resets_idle_without_a_delivery(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_t *group = group_new(f);
    ensure_ok(f, group);
    char a[FTS_STREAM_ID_SIZE], b[FTS_STREAM_ID_SIZE];
    xadd(f, "index", "doc-a", a);
    xadd(f, "index", "doc-b", b);
    result_t result;
    read_entries(f, group, ">", 10, &result);
    assert_int_equal(result.count, 2);
    fts_test_sleep_ms(300);

    long long idle, deliveries;
    assert_true(pending_of(f, a, NULL, 0, &idle, &deliveries));
    assert_true(idle >= 300);

    const char *ids[] = {a, b};
    memset(&result, 0, sizeof result);
    in_call = true;
    fts_redis_group_touch(group, ids, 2, on_done, &result);
    in_call = false;
    assert_int_equal(result.calls, 0);
    wait_for(f, &result.calls);
    assert_false(result.during_call);
    assert_false(result.failed);

    for (int i = 0; i < 2; i++) {
        assert_true(pending_of(f, ids[i], NULL, 0, &idle, &deliveries));
        assert_true(idle < 200);
        assert_int_equal(deliveries, 1);
    }
    fts_redis_group_destroy(group);
}

static void test_settle_dead_letters_and_acks(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_t *group = group_new(f);
    ensure_ok(f, group);
    char ids[3][FTS_STREAM_ID_SIZE];
    xadd(f, "index", "doc-0", ids[0]);
    xadd(f, "index", "doc-1", ids[1]);
    xadd(f, "index", "doc-2", ids[2]);
    result_t result;
    read_entries(f, group, ">", 10, &result);
    assert_int_equal(result.count, 3);
    assert_int_equal(pending_count(f), 3);

    /* Nothing at all: settled without a word to the server. */
    fts_settlement_t nothing = {0};
    settle(f, group, &nothing, &result);
    assert_false(result.failed);

    fts_bytes_t items[] = {{"op", 2}, {"index", 5}, {"id", 2}, {"doc-1", 5}};
    fts_stream_entry_t entry = {.items = items, .count = 4, .deliveries = 3};
    snprintf(entry.id, sizeof entry.id, "%s", ids[1]);
    fts_load_dead_t dead = {
        .entry = &entry, .reason = "mapper_parsing_exception: bad", .deliveries = 3};
    const char *acks[] = {ids[0], ids[1], ids[2]};
    fts_settlement_t settlement = {.ack_ids = acks, .ack_count = 3, .dead = &dead, .dead_count = 1};
    uint64_t before = (uint64_t)time(NULL) * 1000u;
    settle(f, group, &settlement, &result);
    if (result.failed) {
        fail_msg("settle failed: %s", result.err.message);
    }
    assert_int_equal(pending_count(f), 0);

    redisReply *reply = sync_command(f, "XRANGE %s - +", DEAD);
    assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
    assert_int_equal(reply->elements, 1);
    redisReply *fields = reply->element[0]->element[1];
    const char *expected[] = {
        "op",    "index",      "id",       "doc-1",  "entry_id",
        ids[1],  "deliveries", "3",        "reason", "mapper_parsing_exception: bad",
        "stage", "load",       "consumer", CONSUMER};
    assert_int_equal(fields->elements, 16);
    for (size_t i = 0; i < 14; i++) {
        assert_string_equal(fields->element[i]->str, expected[i]);
    }
    assert_string_equal(fields->element[14]->str, "failed_at");
    uint64_t failed_at = strtoull(fields->element[15]->str, NULL, 10);
    assert_true(failed_at >= before && failed_at < before + 60000);
    freeReplyObject(reply);

    /* A dead-letter key of the wrong type: the script stops at its XADD, reported naming XADD
     * and the key, and - what MULTI/EXEC could not promise - the entry is NOT acknowledged. */
    char more[FTS_STREAM_ID_SIZE];
    xadd(f, "index", "doc-3", more);
    read_entries(f, group, ">", 10, &result);
    reply = sync_command(f, "SET %s text", DEAD);
    freeReplyObject(reply);
    snprintf(entry.id, sizeof entry.id, "%s", more);
    const char *more_acks[] = {more};
    fts_settlement_t broken = {
        .ack_ids = more_acks, .ack_count = 1, .dead = &dead, .dead_count = 1};
    settle(f, group, &broken, &result);
    assert_true(result.failed);
    assert_int_equal(result.err.domain, FTS_ERROR_REDIS);
    assert_int_equal(result.err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(result.err.message, "XADD");
    assert_contains(result.err.message, DEAD);
    reply = sync_command(f, "XPENDING %s %s - + 10", STREAM, GROUP);
    assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
    bool still_pending = false;
    for (size_t i = 0; i < reply->elements; i++) {
        if (strcmp(reply->element[i]->element[0]->str, more) == 0) {
            still_pending = true;
        }
    }
    assert_true(still_pending);
    freeReplyObject(reply);
    fts_redis_group_destroy(group);
}

static void on_barrier(void *arg, bool clear, const fts_error_t *err)
{
    result_t *result = arg;
    on_done(arg, err);
    result->count = clear ? 1 : 0;
}

/* The barrier of a drop or sweep (load_ports.h) against a real server: clear only once
 * nothing before the entry is pending in the group, whoever holds it. */
static bool barrier(fixture_t *f, fts_redis_group_t *group, const char *id)
{
    result_t result;
    memset(&result, 0, sizeof result);
    in_call = true;
    fts_redis_group_barrier(group, id, on_barrier, &result);
    in_call = false;
    assert_int_equal(result.calls, 0);
    wait_for(f, &result.calls);
    assert_false(result.during_call);
    if (result.failed) {
        fail_msg("barrier failed: %s", result.err.message);
    }
    return result.count == 1;
}

static void test_barrier_clears_once_everything_before_is_acknowledged(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_t *group = group_new(f);
    ensure_ok(f, group);
    char a[FTS_STREAM_ID_SIZE], b[FTS_STREAM_ID_SIZE], c[FTS_STREAM_ID_SIZE], d[FTS_STREAM_ID_SIZE];
    xadd(f, "index", "doc-a", a);
    xadd(f, "index", "doc-b", b);
    xadd(f, "sweep", "none", c);
    xadd(f, "index", "doc-d", d);
    /* a and b go to another consumer, c and d to us */
    redisReply *reply =
        sync_command(f, "XREADGROUP GROUP " GROUP " other COUNT 2 STREAMS " STREAM " >");
    freeReplyObject(reply);
    result_t result;
    read_entries(f, group, ">", 10, &result);
    assert_int_equal(result.count, 2);
    assert_string_equal(result.ids[0], c);

    assert_false(barrier(f, group, c)); /* a and b pending */
    reply = sync_command(f, "XACK " STREAM " " GROUP " %s", a);
    freeReplyObject(reply);
    assert_false(barrier(f, group, c)); /* b still pending */
    reply = sync_command(f, "XACK " STREAM " " GROUP " %s", b);
    freeReplyObject(reply);
    assert_true(barrier(f, group, c));  /* only c itself (and d after it) pending */
    assert_false(barrier(f, group, d)); /* c is before d */
    reply = sync_command(f, "XACK " STREAM " " GROUP " %s %s", c, d);
    freeReplyObject(reply);
    assert_true(barrier(f, group, d)); /* nothing pending up to d */
    fts_redis_group_destroy(group);
}

static void test_server_down_then_reconnect(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_options_t options = quick_options();
    options.block_ms = 10000;
    fts_redis_group_t *group = group_new_url(f, fts_test_redis_server_url(f->server), &options);
    wait_connected(f, group);
    ensure_ok(f, group);

    /* A blocked read outstanding when the server goes away fails. */
    result_t blocked;
    memset(&blocked, 0, sizeof blocked);
    fts_redis_group_read(group, ">", 10, on_entries, &blocked);
    run_loop_ms(f, 100);
    fts_error_t err;
    assert_true(fts_test_redis_server_stop(f->server, &err));
    wait_for(f, &blocked.calls);
    assert_true(blocked.failed);
    assert_int_equal(blocked.err.domain, FTS_ERROR_REDIS);
    assert_int_equal(blocked.calls, 1);

    /* While down: a Redis error, from the loop. */
    result_t result;
    ensure(f, group, &result);
    assert_true(result.failed);
    assert_int_equal(result.err.domain, FTS_ERROR_REDIS);
    run_loop_ms(f, 300);
    ensure(f, group, &result);
    assert_true(result.failed);
    assert_int_equal(result.err.domain, FTS_ERROR_REDIS);
    assert_false(fts_redis_group_connected(group));

    assert_true(fts_test_redis_server_restart(f->server, &err));
    wait_connected(f, group);
    ensure_ok(f, group);
    char id[FTS_STREAM_ID_SIZE];
    xadd(f, "index", "after", id);
    read_entries(f, group, ">", 10, &result);
    assert_int_equal(result.count, 1);
    assert_string_equal(result.ids[0], id);
    assert_int_equal(blocked.calls, 1);
    fts_redis_group_destroy(group);
}

static void test_silent_server_times_out_then_recovers(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_options_t options = quick_options();
    options.command_timeout_ms = 300;
    fts_redis_group_t *group = group_new_url(f, fts_test_redis_server_url(f->server), &options);
    wait_connected(f, group);
    ensure_ok(f, group);

    /* CLIENT PAUSE holds every client's commands (DEBUG SLEEP is disabled by default in
     * Redis 7); the watchdog drops our connection. */
    redisReply *reply = sync_command(f, "CLIENT PAUSE 1500 ALL");
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    result_t result;
    uint64_t start = fts_test_monotonic_ms();
    ensure(f, group, &result);
    assert_true(result.failed);
    assert_int_equal(result.err.code, FTS_ERROR_CODE_TIMEOUT);
    assert_true(fts_test_monotonic_ms() - start < 1400);
    assert_contains(result.err.message, "within 300 ms");

    wait_connected(f, group);
    ensure_ok(f, group);
    fts_redis_group_destroy(group);
}

static void test_password_and_db_from_url(void **state)
{
    (void)state;
    const char *args[] = {"--requirepass", "s3cret-pw", NULL};
    fixture_t *f = fixture_new(args);
    int port = fts_test_redis_server_port(f->server);
    char url[128];
    snprintf(url, sizeof url, "redis://:s3cret-pw@127.0.0.1:%d/2", port);
    fts_redis_group_options_t options = quick_options();
    fts_redis_group_t *group = group_new_url(f, url, &options);
    wait_connected(f, group);
    ensure_ok(f, group);
    redisReply *reply = sync_command(f, "SELECT 2");
    freeReplyObject(reply);
    reply = sync_command(f, "EXISTS %s", STREAM);
    assert_int_equal(reply->integer, 1);
    freeReplyObject(reply);
    fts_redis_group_destroy(group);

    snprintf(url, sizeof url, "redis://:wrong-pw@127.0.0.1:%d/0", port);
    group = group_new_url(f, url, &options);
    result_t result;
    ensure(f, group, &result);
    assert_true(result.failed);
    assert_int_equal(result.err.domain, FTS_ERROR_REDIS);
    assert_int_equal(result.err.code, FTS_ERROR_CODE_AUTH);
    assert_contains(result.err.message, "AUTH");
    assert_not_contains(result.err.message, "wrong-pw");
    assert_not_contains(result.err.message, "s3cret-pw");
    run_loop_ms(f, 200);
    assert_false(fts_redis_group_connected(group));
    fts_redis_group_destroy(group);
    fixture_free(f);
}

static void test_destroy_with_commands_outstanding_calls_nobody(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_options_t options = quick_options();
    options.block_ms = 5000;
    fts_redis_group_t *group = group_new_url(f, fts_test_redis_server_url(f->server), &options);
    wait_connected(f, group);
    ensure_ok(f, group);

    result_t results[5];
    memset(results, 0, sizeof results);
    fts_redis_group_read(group, ">", 10, on_entries, &results[0]);
    fts_redis_group_ensure(group, on_done, &results[1]);
    fts_settlement_t nothing = {0};
    fts_redis_group_settle(group, &nothing, on_done, &results[2]);
    run_loop_ms(f, 50); /* the blocked read is in flight */
    fts_redis_group_claim(group, "0-0", 10, on_entries, &results[3]);
    fts_redis_group_touch(group, NULL, 0, on_done, &results[4]);
    fts_redis_group_destroy(group);
    run_loop_ms(f, 200);
    for (int i = 0; i < 5; i++) {
        if (i != 1 && i != 2) {
            assert_int_equal(results[i].calls, 0);
        }
    }

    /* Also while still connecting. */
    memset(results, 0, sizeof results);
    group = group_new_url(f, fts_test_redis_server_url(f->server), &options);
    fts_redis_group_ensure(group, on_done, &results[0]);
    fts_redis_group_read(group, ">", 10, on_entries, &results[1]);
    fts_redis_group_destroy(group);
    run_loop_ms(f, 100);
    assert_int_equal(results[0].calls, 0);
    assert_int_equal(results[1].calls, 0);
}

static void test_bad_url_is_a_config_error(void **state)
{
    fixture_t *f = *state;
    fts_redis_group_options_t options = quick_options();
    fts_error_t err;
    fts_error_clear(&err);
    assert_null(fts_redis_group_new(f->base, "redis://:pw@host:99999/0", &options, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_not_contains(err.message, ":pw@");
    options.consumer = "";
    assert_null(fts_redis_group_new(f->base, fts_test_redis_server_url(f->server), &options, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_contains(err.message, "consumer");
}

int main(void)
{
    fts_log_set_level(FTS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ensure_creates_group_and_busygroup_is_success, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_new_entries_and_empty_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_read_counts_deliveries_and_deleted_entries,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_takes_idle_entries_of_another_consumer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_touch_resets_idle_without_a_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_dead_letters_and_acks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_barrier_clears_once_everything_before_is_acknowledged,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_down_then_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_server_times_out_then_recovers, setup,
                                        teardown),
        cmocka_unit_test(test_password_and_db_from_url),
        cmocka_unit_test_setup_teardown(test_destroy_with_commands_outstanding_calls_nobody, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_url_is_a_config_error, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
