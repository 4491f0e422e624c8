/*
 * test_extract_pipeline.c - `ftsync extract` end to end, against the MongoDB replica-set double
 * (or FTSYNC_TEST_MONGO_URI) and a private redis-server: what it queues is right, in order,
 * resumable, and survives what the server throws at it.
 *
 * What is pinned (issue 4, "Tests"):
 *   - inserts, updates, replaces and deletes from ftsync-workload appear as index/delete
 *     actions, one per change, in the change stream's order, with increasing versions equal to
 *     the cluster times; insert and replace bodies are the projected documents; the token
 *     advances (invariant 1 seen from outside: it never gets ahead of the stream);
 *   - a snapshot of 50,000 documents with concurrent writes, killed (SIGKILL) mid-scan and
 *     restarted, continues where it was (not from the beginning) and the stream reproduces the
 *     collection (invariant 3);
 *   - fail points (closeConnection on getMore, a ResumableChangeStreamError, a step-down):
 *     the same extract process goes on, no change lost, nothing dead-lettered;
 *   - history lost (the double keeps only 200 events; the extractor stopped while 1,500
 *     writes and some deletes happen): the resync path runs (a snapshot and then a sweep are
 *     queued) and the stream again reproduces the collection, deletions included.
 * "Reproduces the collection" is the replay model of extract_harness.h compared document by
 * document with the collection, projected as extract projects it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "assertions.h"

#include <inttypes.h>
#include <signal.h>
#include <sys/wait.h>

#include <mongoc/mongoc.h>

#include "extract_fixture.h"
#include "extract_harness.h"
#include "mongo_double.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif

/* How long a test waits for an entry it expects (an ASan build under load is slow). */
#define ENTRY_WAIT_MS 60000
/* How long a clean stop may take. */
#define STOP_WAIT_MS 15000
/* Documents of the snapshot test, and how many must be queued before it is killed. */
#define SNAPSHOT_DOCS    50000
#define SNAPSHOT_KILL_AT 15000
/* Markers: _id values the workload never uses (its ids are 10, 20, 30... from --id-start). */
#define MARKER_START  1
#define MARKER_MIDDLE 3
#define MARKER_END    5

static fts_test_extract_bed_t bed;

typedef struct {
    fts_test_pipeline_t p;
    fts_test_extract_t *extract;
    fts_test_mongo_double_t *own_mongo; /* a test's own double (history lost) */
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    /* No random choices here: the seed is unused. */
    return fts_test_extract_bed_start(&bed, FTSYNC_BINARY, FTSYNC_WORKLOAD, NULL, 0) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fts_test_extract_bed_stop(&bed);
    return 0;
}

static fixture_t *fixture_new(const char *mongo_uri, const char *prefix)
{
    fixture_t *f = bson_malloc0(sizeof *f);
    fts_test_extract_bed_pipeline(&bed, &f->p, mongo_uri, prefix);
    return f;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f) {
        fts_test_extract_destroy(f->extract);
        fts_test_pipeline_cleanup(&f->p);
        fts_test_mongo_double_destroy(f->own_mongo);
        bson_free(f);
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void workload(fixture_t *f, const char *count, const char *seed, const char *id_start,
                     const char *mix)
{
    const char *args[] = {"--count", count,   "--seed", seed, "--id-start",
                          id_start,  "--mix", mix,      NULL};
    int status = fts_test_pipeline_workload_run(&f->p, args, 120000);
    if (status != 0) {
        fail_msg("ftsync-workload exited %d", status);
    }
}

/* The cluster time saved with the token, as a version ("s.i" or a decimal version). */
static uint64_t token_cluster_time(fixture_t *f)
{
    char *text = fts_test_redis_hget(f->p.redis, f->p.token_key, "cluster_time");
    uint64_t value = 0;
    if (text) {
        uint32_t seconds = 0;
        uint32_t increment = 0;
        if (sscanf(text, "%" SCNu32 ".%" SCNu32, &seconds, &increment) == 2) {
            value = fts_version_from_timestamp(seconds, increment);
        } else {
            value = strtoull(text, NULL, 10);
        }
    }
    free(text);
    return value;
}

/* Reads every change event from the snapshot time of the start marker up to the end marker,
 * checks each is in the stream. Returns the changes (caller cleans up). */
static fts_test_changes_t collect_changes(fixture_t *f, const fts_test_entry_t *start_marker)
{
    fts_test_changes_t changes = {0};
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_collect_changes(
            f->p.client, f->p.db, f->p.collection, start_marker->action.ts_seconds,
            start_marker->action.ts_increment, MARKER_END, 30000, &changes, &err)) {
        fail_msg("collecting the change events: %s", err.message);
    }
    return changes;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_workload_actions_in_order(void **state)
{
    fixture_t *f = *state = fixture_new(fts_test_mongo_double_uri(bed.mongo), "xorder");
    char id_text[32];

    fts_test_pipeline_insert_marker(&f->p, MARKER_START);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    snprintf(id_text, sizeof id_text, "%d", MARKER_START);
    size_t first = fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                                FTS_ACTION_FROM_SNAPSHOT, ENTRY_WAIT_MS);
    assert_int_equal(first, 0);
    fts_test_entry_t start_marker = f->p.entries.items[first];
    assert_int_equal(start_marker.action.version,
                     fts_version_from_timestamp(start_marker.action.ts_seconds,
                                                start_marker.action.ts_increment));

    workload(f, "400", "11", "10", "insert=40,update=30,replace=15,delete=15");
    fts_test_pipeline_insert_marker(&f->p, MARKER_MIDDLE);
    snprintf(id_text, sizeof id_text, "%d", MARKER_MIDDLE);
    size_t middle = fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                                 FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    /* The checkpoint follows the queue: give it a moment to cover the middle marker. */
    uint64_t middle_version = f->p.entries.items[middle].action.version;
    uint64_t deadline = fts_test_monotonic_ms() + 10000;
    uint64_t token_time_1 = token_cluster_time(f);
    while (token_time_1 < middle_version && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(50);
        token_time_1 = token_cluster_time(f);
    }
    char *token_1 = fts_test_redis_hget(f->p.redis, f->p.token_key, "token");
    assert_non_null(token_1);
    assert_true(token_time_1 >= middle_version);

    workload(f, "400", "12", "100000", "insert=40,update=30,replace=15,delete=15");
    fts_test_pipeline_insert_marker(&f->p, MARKER_END);
    snprintf(id_text, sizeof id_text, "%d", MARKER_END);
    size_t end = fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                              FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    uint64_t end_version = f->p.entries.items[end].action.version;
    deadline = fts_test_monotonic_ms() + 10000;
    uint64_t token_time_2 = token_cluster_time(f);
    while (token_time_2 < end_version && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(50);
        token_time_2 = token_cluster_time(f);
    }
    char *token_2 = fts_test_redis_hget(f->p.redis, f->p.token_key, "token");
    assert_non_null(token_2);
    assert_true(token_time_2 >= end_version);
    assert_true(token_time_2 > token_time_1);
    assert_string_not_equal(token_1, token_2);
    free(token_1);
    free(token_2);

    /* One change entry per change event, in the same order, same id, same version. */
    fts_test_changes_t changes = collect_changes(f, &start_marker);
    size_t next = first + 1;
    uint64_t last_version = start_marker.action.version;
    /* Changes at or before the snapshot time (the start marker's own insert) are covered by
     * the snapshot; the change stream opened at that time (inclusive) may repeat them. */
    while (next < f->p.entries.count &&
           f->p.entries.items[next].action.version <= start_marker.action.version) {
        next++;
    }
    for (size_t i = 0; i < changes.count; i++) {
        const fts_test_change_t *change = &changes.items[i];
        if (change->version <= start_marker.action.version) {
            continue;
        }
        if (next >= f->p.entries.count) {
            fail_msg("change %zu (%s of %s) has no entry: the stream ended", i, change->op,
                     change->id);
        }
        const fts_test_entry_t *entry = &f->p.entries.items[next++];
        if (entry->sweep || entry->action.origin != FTS_ACTION_FROM_CHANGE ||
            strcmp(fts_test_entry_id(entry), change->id) != 0 ||
            entry->action.version != change->version) {
            fail_msg("change %zu (%s of %s, version %" PRIu64 ") but entry %s is %s of %s, "
                     "version %" PRIu64 ", origin %s",
                     i, change->op, change->id, change->version, entry->stream_id,
                     fts_action_op_name(entry->action.op), fts_test_entry_id(entry),
                     entry->action.version, fts_action_origin_name(entry->action.origin));
        }
        assert_true(entry->action.version > last_version);
        last_version = entry->action.version;
        if (strcmp(change->op, "delete") == 0) {
            assert_int_equal(entry->action.op, FTS_ACTION_DELETE);
        } else if (strcmp(change->op, "insert") == 0 || strcmp(change->op, "replace") == 0) {
            assert_int_equal(entry->action.op, FTS_ACTION_INDEX);
            assert_non_null(change->body);
            assert_string_equal(entry->action.body, change->body);
        } else {
            assert_string_equal(change->op, "update");
            /* index of the looked-up document, or delete when it was gone by then */
            assert_true(entry->action.op == FTS_ACTION_INDEX ||
                        entry->action.op == FTS_ACTION_DELETE);
        }
        char expected_ns[256];
        snprintf(expected_ns, sizeof expected_ns, "%s.%s", f->p.db, f->p.collection);
        assert_string_equal(entry->action.ns, expected_ns);
    }
    assert_int_equal(next, end + 1);
    fprintf(stderr, "(%zu changes, each queued once, in order)\n", changes.count);
    fts_test_changes_cleanup(&changes);

    fts_test_pipeline_assert_replay_equals_collection(&f->p, NULL, "actions in order");
    fts_test_pipeline_assert_no_dead_letters(&f->p);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
}

/* Bulk-inserts SNAPSHOT_DOCS documents {_id: 2i, name, n, tags} before extract starts. */
static void seed_snapshot_collection(fixture_t *f)
{
    bson_error_t error;
    for (int32_t base = 0; base < SNAPSHOT_DOCS; base += 1000) {
        mongoc_bulk_operation_t *bulk =
            mongoc_collection_create_bulk_operation_with_opts(f->p.coll, NULL);
        for (int32_t i = base; i < base + 1000; i++) {
            char name[64];
            snprintf(name, sizeof name, "seeded app %d – Café №%d", i, i % 97);
            bson_t *doc = BCON_NEW("_id", BCON_INT32(2 * i), "name", BCON_UTF8(name), "n",
                                   BCON_INT32(i), "tags", "[", BCON_UTF8("a"), BCON_UTF8("ü"), "]");
            mongoc_bulk_operation_insert(bulk, doc);
            bson_destroy(doc);
        }
        bson_t reply;
        bool ok = mongoc_bulk_operation_execute(bulk, &reply, &error);
        bson_destroy(&reply);
        mongoc_bulk_operation_destroy(bulk);
        if (!ok) {
            fail_msg("seeding the collection: %s", error.message);
        }
    }
}

/* The test's own writes to seeded documents during the scan: updates and deletes among
 * _id in [2*from, 2*to). */
static void touch_seeded(fixture_t *f, int32_t from, int32_t to, int32_t step, bool delete_them)
{
    bson_error_t error;
    for (int32_t i = from; i < to; i += step) {
        bson_t *filter = BCON_NEW("_id", BCON_INT32(2 * i));
        bool ok;
        if (delete_them) {
            ok = mongoc_collection_delete_one(f->p.coll, filter, NULL, NULL, &error);
        } else {
            bson_t *update = BCON_NEW("$set", "{", "touched", BCON_BOOL(true), "}", "$inc", "{",
                                      "n", BCON_INT32(1), "}");
            ok = mongoc_collection_update_one(f->p.coll, filter, update, NULL, NULL, &error);
            bson_destroy(update);
        }
        bson_destroy(filter);
        if (!ok) {
            fail_msg("writing _id %d: %s", 2 * i, error.message);
        }
    }
}

static size_t count_snapshot_entries(const fts_test_entries_t *entries, size_t from, size_t to)
{
    size_t count = 0;
    for (size_t i = from; i < to; i++) {
        if (!entries->items[i].sweep &&
            entries->items[i].action.origin == FTS_ACTION_FROM_SNAPSHOT) {
            count++;
        }
    }
    return count;
}

static void test_snapshot_killed_mid_scan(void **state)
{
    fixture_t *f = *state = fixture_new(fts_test_mongo_double_uri(bed.mongo), "xsnap");
    fts_test_pipeline_set(&f->p, "FTSYNC_BATCH_SIZE", "500");
    seed_snapshot_collection(f);

    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    /* Concurrent writes of the workload's own documents (ids from 1,000,000 up) for ~4 s. */
    const char *args[] = {"--count", "4000",   "--seed", "31", "--id-start",
                          "1000000", "--rate", "1000",   NULL};
    pid_t writer = fts_test_pipeline_workload_spawn(&f->p, args);
    assert_true(writer > 0);
    touch_seeded(f, 0, 500, 5, false);

    /* Kill -9 once SNAPSHOT_KILL_AT snapshot entries are queued, the scan not finished. */
    uint64_t deadline = fts_test_monotonic_ms() + 120000;
    size_t queued = 0;
    fts_error_t err;
    fts_error_clear(&err);
    while (queued < SNAPSHOT_KILL_AT) {
        if (fts_test_monotonic_ms() > deadline || !fts_test_extract_running(f->extract)) {
            fts_test_extract_print_log_tail(f->extract, 40);
            fail_msg("the snapshot did not queue %d documents (%zu queued)", SNAPSHOT_KILL_AT,
                     queued);
        }
        fts_test_sleep_ms(10);
        if (!fts_test_stream_follow(f->p.redis, f->p.stream_key, &f->p.entries, &err)) {
            fail_msg("%s", err.message);
        }
        queued = count_snapshot_entries(&f->p.entries, 0, f->p.entries.count);
    }
    char *last_id = fts_test_redis_hget(f->p.redis, f->p.snapshot_key, "last_id");
    assert_true(fts_test_extract_kill(f->extract, SIGKILL));
    fts_test_extract_destroy(f->extract);
    f->extract = NULL;
    if (!fts_test_stream_follow(f->p.redis, f->p.stream_key, &f->p.entries, &err)) {
        fail_msg("%s", err.message);
    }
    size_t before_kill = f->p.entries.count;
    size_t snapshot_before = count_snapshot_entries(&f->p.entries, 0, before_kill);
    assert_true(snapshot_before < SNAPSHOT_DOCS);
    char *started_at = fts_test_redis_hget(f->p.redis, f->p.snapshot_key, "started_at");
    if (!started_at) {
        fail_msg("no snapshot position in %s after a kill mid-scan", f->p.snapshot_key);
    }
    fprintf(stderr, "(killed mid-scan: %zu snapshot entries queued, last_id %s)\n", snapshot_before,
            last_id ? last_id : "(none)");
    free(last_id);
    free(started_at);

    /* While it is down: deletes ahead of the scan, updates behind and ahead of it. */
    touch_seeded(f, SNAPSHOT_DOCS - 2000, SNAPSHOT_DOCS, 10, true);
    touch_seeded(f, 0, 2000, 7, false);
    touch_seeded(f, SNAPSHOT_DOCS - 5000, SNAPSHOT_DOCS - 2000, 11, false);

    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    touch_seeded(f, 20000, 30000, 13, false);
    touch_seeded(f, 30000, 31000, 9, true);
    int status = fts_test_wait_pid(writer, 120000);
    if (status != 0) {
        fail_msg("ftsync-workload exited %d", status);
    }
    fts_test_pipeline_insert_marker(&f->p, MARKER_END);
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%d", MARKER_END);
    /* _id 5 is below the scan's position after the restart: it can only come as a change. */
    fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                 FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    /* The scan must have finished (the change stream follows it). */

    /* Resumed, not restarted: documents queued before the kill are read again at most once
     * more for the last unconfirmed batches. */
    fts_test_docs_t *seen_before = fts_test_docs_new();
    for (size_t i = 0; i < before_kill; i++) {
        const fts_test_entry_t *entry = &f->p.entries.items[i];
        if (!entry->sweep && entry->action.origin == FTS_ACTION_FROM_SNAPSHOT) {
            fts_test_replay_apply(seen_before, entry);
        }
    }
    size_t again = 0;
    size_t snapshot_after = 0;
    for (size_t i = before_kill; i < f->p.entries.count; i++) {
        const fts_test_entry_t *entry = &f->p.entries.items[i];
        if (!entry->sweep && entry->action.origin == FTS_ACTION_FROM_SNAPSHOT) {
            snapshot_after++;
            if (fts_test_docs_version(seen_before, fts_test_entry_id(entry)) != 0) {
                again++;
            }
        }
    }
    fts_test_docs_destroy(seen_before);
    fprintf(stderr, "(after the restart: %zu snapshot entries, %zu of them read again)\n",
            snapshot_after, again);
    assert_true(snapshot_after > 0);
    /* A restart from the beginning would read all SNAPSHOT_KILL_AT or more again. */
    assert_true(again <= SNAPSHOT_KILL_AT / 3);

    fts_test_pipeline_assert_replay_equals_collection(&f->p, NULL, "snapshot killed mid-scan");
    fts_test_pipeline_assert_no_dead_letters(&f->p);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
}

/* Runs an admin command; returns the reply's "count" (configureFailPoint: how often the fail
 * point fired since it was last set, as mongod reports it), or -1 when there is none. */
static int64_t run_admin(fixture_t *f, bson_t *command)
{
    bson_error_t error;
    bson_t reply;
    bool ok = mongoc_client_command_simple(f->p.client, "admin", command, NULL, &reply, &error);
    int64_t count = -1;
    bson_iter_t iter;
    if (ok && bson_iter_init_find(&iter, &reply, "count") && BSON_ITER_HOLDS_NUMBER(&iter)) {
        count = bson_iter_as_int64(&iter);
    }
    bson_destroy(&reply);
    bson_destroy(command);
    if (!ok) {
        fail_msg("admin command failed: %s", error.message);
    }
    return count;
}

/* Inserts a marker and waits until it is queued as a change: the extract read past whatever
 * happened before it. */
static void marker_queued(fixture_t *f, int32_t id)
{
    char id_text[32];
    fts_test_pipeline_insert_marker(&f->p, id);
    snprintf(id_text, sizeof id_text, "%d", (int)id);
    fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                 FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
}

static void test_fail_points(void **state)
{
    fixture_t *f = *state = fixture_new(fts_test_mongo_double_uri(bed.mongo), "xfail");
    if (fts_test_mongo_double_is_external(bed.mongo)) {
        /* A real server has failCommand only with enableTestCommands; the double always. */
        fprintf(stderr, "(external deployment: it must run with enableTestCommands=1)\n");
    }
    fts_test_pipeline_insert_marker(&f->p, MARKER_START);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    pid_t pid = fts_test_extract_pid(f->extract);
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%d", MARKER_START);
    size_t first = fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                                FTS_ACTION_FROM_SNAPSHOT, ENTRY_WAIT_MS);
    fts_test_entry_t start_marker = f->p.entries.items[first];

    workload(f, "200", "41", "10", "insert=50,update=30,replace=10,delete=10");

    /* 1. the connection closed on the next getMore of the change stream */
    run_admin(f, BCON_NEW("configureFailPoint", "failCommand", "mode", "{", "times", BCON_INT32(1),
                          "}", "data", "{", "failCommands", "[", BCON_UTF8("getMore"), "]",
                          "closeConnection", BCON_BOOL(true), "appName", BCON_UTF8("ftsync"), "}"));
    workload(f, "200", "42", "100000", "insert=50,update=30,replace=10,delete=10");
    marker_queued(f, 7);

    /* 2. an error labelled ResumableChangeStreamError on getMore (the reply of setting it
     *    tells that the first one fired) */
    int64_t fired = run_admin(
        f, BCON_NEW("configureFailPoint", "failCommand", "mode", "{", "times", BCON_INT32(1), "}",
                    "data", "{", "failCommands", "[", BCON_UTF8("getMore"), "]", "errorCode",
                    BCON_INT32(2), "errorLabels", "[", BCON_UTF8("ResumableChangeStreamError"), "]",
                    "appName", BCON_UTF8("ftsync"), "}"));
    assert_int_equal(fired, 1);
    workload(f, "200", "43", "200000", "insert=50,update=30,replace=10,delete=10");
    marker_queued(f, 9);
    fired = run_admin(f, BCON_NEW("configureFailPoint", "failCommand", "mode", "off"));
    assert_int_equal(fired, 1);

    /* 3. a step-down (forced: the double, like a one-member set, has no other member) */
    run_admin(f, BCON_NEW("replSetStepDown", BCON_INT32(2), "secondaryCatchUpPeriodSecs",
                          BCON_INT32(1), "force", BCON_BOOL(true)));
    fts_test_pipeline_insert_marker(
        &f->p, MARKER_MIDDLE); /* retried until the server takes writes again */
    workload(f, "200", "44", "300000", "insert=50,update=30,replace=10,delete=10");

    fts_test_pipeline_insert_marker(&f->p, MARKER_END);
    snprintf(id_text, sizeof id_text, "%d", MARKER_END);
    fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                 FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);

    /* No manual action: the same process throughout. */
    assert_true(fts_test_extract_running(f->extract));
    assert_int_equal(fts_test_extract_pid(f->extract), pid);

    fts_test_changes_t changes = collect_changes(f, &start_marker);
    size_t missing = fts_test_changes_missing(&changes, &f->p.entries, "fail points");
    fprintf(stderr, "(%zu changes through three failures)\n", changes.count);
    fts_test_changes_cleanup(&changes);
    assert_int_equal(missing, 0);
    fts_test_pipeline_assert_replay_equals_collection(&f->p, NULL, "fail points");
    fts_test_pipeline_assert_no_dead_letters(&f->p);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
}

static void test_history_lost_resyncs(void **state)
{
    fts_error_t err;
    fts_error_clear(&err);
    const char *args[] = {"--history-events", "200", NULL};
    fts_test_mongo_double_t *own = fts_test_mongo_double_start(args, &err);
    if (!own) {
        fail_msg("cannot start the MongoDB double: %s", err.message);
    }
    fixture_t *f = *state = fixture_new(fts_test_mongo_double_uri(own), "xhist");
    f->own_mongo = own;
    fts_test_pipeline_set(&f->p, "FTSYNC_ON_HISTORY_LOST", "resync");

    fts_test_pipeline_insert_marker(&f->p, MARKER_START);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%d", MARKER_START);
    fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                 FTS_ACTION_FROM_SNAPSHOT, ENTRY_WAIT_MS);
    workload(f, "150", "51", "10", "insert=80,update=20");
    fts_test_pipeline_insert_marker(&f->p, MARKER_MIDDLE);
    snprintf(id_text, sizeof id_text, "%d", MARKER_MIDDLE);
    fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX,
                                 FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    /* let the checkpoint cover it, then stop */
    fts_test_sleep_ms(1000);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
    if (!fts_test_stream_follow(f->p.redis, f->p.stream_key, &f->p.entries, &err)) {
        fail_msg("%s", err.message);
    }
    size_t before_restart = f->p.entries.count;

    /* While it is stopped: deletes and updates of indexed documents, then far more writes
     * than the double keeps history for. */
    bson_error_t error;
    for (int32_t id = 10; id <= 400; id += 30) {
        bson_t *filter = BCON_NEW("_id", BCON_INT32(id));
        mongoc_collection_delete_one(f->p.coll, filter, NULL, NULL, &error);
        bson_destroy(filter);
    }
    bson_t *filter = BCON_NEW("_id", "{", "$gte", BCON_INT32(500), "$lt", BCON_INT32(900), "}");
    bson_t *update = BCON_NEW("$set", "{", "while_stopped", BCON_BOOL(true), "}");
    if (!mongoc_collection_update_many(f->p.coll, filter, update, NULL, NULL, &error)) {
        fail_msg("update_many: %s", error.message);
    }
    bson_destroy(filter);
    bson_destroy(update);
    workload(f, "1500", "52", "500000", "insert=50,update=25,replace=10,delete=15");

    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    /* The resync: a snapshot, then a sweep at the snapshot's version. */
    uint64_t deadline = fts_test_monotonic_ms() + ENTRY_WAIT_MS;
    long sweep = -1;
    while (sweep < 0) {
        if (fts_test_monotonic_ms() > deadline) {
            fts_test_extract_print_log_tail(f->extract, 40);
            fail_msg("no sweep entry after the history was lost");
        }
        fts_test_sleep_ms(100);
        if (!fts_test_stream_follow(f->p.redis, f->p.stream_key, &f->p.entries, &err)) {
            fail_msg("%s", err.message);
        }
        for (size_t i = before_restart; i < f->p.entries.count && sweep < 0; i++) {
            if (f->p.entries.items[i].sweep) {
                sweep = (long)i;
            }
        }
    }
    const fts_test_entry_t *sweep_entry = &f->p.entries.items[sweep];
    char expected_ns[256];
    snprintf(expected_ns, sizeof expected_ns, "%s.%s", f->p.db, f->p.collection);
    assert_string_equal(sweep_entry->action.ns, expected_ns);
    size_t resnapshot = count_snapshot_entries(&f->p.entries, before_restart, (size_t)sweep);
    fprintf(stderr, "(resync: %zu snapshot entries, then a sweep below version %" PRIu64 ")\n",
            resnapshot, sweep_entry->action.version);
    assert_true(resnapshot > 0);
    for (size_t i = before_restart; i < (size_t)sweep; i++) {
        const fts_test_entry_t *entry = &f->p.entries.items[i];
        if (entry->action.origin == FTS_ACTION_FROM_SNAPSHOT) {
            /* every re-read document survives the sweep */
            assert_true(entry->action.version >= sweep_entry->action.version);
        }
    }
    char *log = fts_test_extract_log(f->extract);
    /* a log line says it happened ("history_lost_total=" alone, on every stop, does not) */
    assert_contains(log, "history lost");
    free(log);

    fts_test_pipeline_insert_marker(&f->p, MARKER_END);
    snprintf(id_text, sizeof id_text, "%d", MARKER_END);
    fts_test_pipeline_wait_entry(&f->p, f->extract, id_text, FTS_ACTION_INDEX, 0, ENTRY_WAIT_MS);
    fts_test_pipeline_assert_replay_equals_collection(&f->p, NULL, "history lost");
    fts_test_pipeline_assert_no_dead_letters(&f->p);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
}

/* With an id field other than _id and the id map off (FTSYNC_ID_MAP=off; the default, auto,
 * turns it on: test_extract_idmap.c), a delete event carries only documentKey {_id}: extract
 * needs the pre-image to name the index document. With FTSYNC_MONGO_PRE_IMAGES it gets it;
 * without, it stops with a clear error (exit 3) instead of guessing, and the token stays before
 * the delete (invariant 1). */
static void test_custom_id_field_needs_pre_images(void **state)
{
    fixture_t *f = fixture_new(fts_test_mongo_double_uri(bed.mongo), "preimages");
    *state = f;
    bson_error_t error;
    bson_t *create = BCON_NEW("create", BCON_UTF8(f->p.collection), "changeStreamPreAndPostImages",
                              "{", "enabled", BCON_BOOL(true), "}");
    mongoc_database_t *database = mongoc_client_get_database(f->p.client, f->p.db);
    if (!mongoc_database_command_simple(database, create, NULL, NULL, &error)) {
        fail_msg("create with pre-images: %s", error.message);
    }
    bson_destroy(create);
    mongoc_database_destroy(database);

    fts_test_pipeline_set(&f->p, "FTSYNC_ID_FIELD", "id");
    fts_test_pipeline_set(&f->p, "FTSYNC_ID_MAP", "off");
    fts_test_pipeline_set(&f->p, "FTSYNC_FIELDS", "name");
    fts_test_pipeline_set(&f->p, "FTSYNC_MONGO_PRE_IMAGES", "required");
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    for (int32_t i = 1; i <= 3; i++) {
        bson_t *doc =
            BCON_NEW("_id", BCON_INT32(1000 + i), "id", BCON_INT32(i), "name", BCON_UTF8("app"));
        if (!mongoc_collection_insert_one(f->p.coll, doc, NULL, NULL, &error)) {
            fail_msg("insert: %s", error.message);
        }
        bson_destroy(doc);
    }
    bson_t *selector = BCON_NEW("_id", BCON_INT32(1002));
    if (!mongoc_collection_delete_one(f->p.coll, selector, NULL, NULL, &error)) {
        fail_msg("delete: %s", error.message);
    }
    bson_destroy(selector);

    /* The delete names the document by its id field, taken from the pre-image. */
    size_t deleted = fts_test_pipeline_wait_entry(&f->p, f->extract, "2", FTS_ACTION_DELETE,
                                                  FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    assert_string_equal(f->p.entries.items[deleted].action.id, "2");
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
    fts_test_pipeline_assert_replay_equals_collection(&f->p, NULL,
                                                      "custom id field with pre-images");

    /* Without pre-images the same delete is an error an operator must resolve. */
    fts_test_pipeline_set(&f->p, "FTSYNC_MONGO_PRE_IMAGES", "off");
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    selector = BCON_NEW("_id", BCON_INT32(1003));
    if (!mongoc_collection_delete_one(f->p.coll, selector, NULL, NULL, &error)) {
        fail_msg("delete: %s", error.message);
    }
    bson_destroy(selector);
    /* Wait for it to stop on its own; WNOWAIT leaves the status for fts_test_extract_stop. */
    int status = 0;
    bool exited = false;
    pid_t pid = fts_test_extract_pid(f->extract);
    for (int waited = 0; waited < ENTRY_WAIT_MS && !exited; waited += 100) {
        siginfo_t info = {0};
        exited =
            waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
        if (!exited) {
            fts_test_sleep_ms(100);
        }
    }
    exited = exited && fts_test_extract_stop(f->extract, STOP_WAIT_MS, &status);
    char *log = fts_test_extract_log(f->extract);
    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 3) {
        fts_test_extract_print_log_tail(f->extract, 40);
        fail_msg("expected ftsync extract to stop with status 3 at a delete it cannot name");
    }
    assert_contains(log, "pre-image");
    free(log);
    fts_test_extract_destroy(f->extract);
    f->extract = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_workload_actions_in_order, teardown),
        cmocka_unit_test_teardown(test_snapshot_killed_mid_scan, teardown),
        cmocka_unit_test_teardown(test_fail_points, teardown),
        cmocka_unit_test_teardown(test_history_lost_resyncs, teardown),
        cmocka_unit_test_teardown(test_custom_id_field_needs_pre_images, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
