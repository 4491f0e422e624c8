/*
 * test_extract_chaos.c - `ftsync extract` under crashes, poison, competition and a full queue,
 * against the MongoDB replica-set double (or FTSYNC_TEST_MONGO_URI) and a private redis-server.
 *
 * What is pinned (issue 4, "Tests"; invariants 1, 3, 4, 5):
 *   - kill -9 of the extract process, and separately of its transform worker, 10 times each
 *     at seeded random moments (0.2-0.9 s apart, each after the stream grew again) during a
 *     20,000-change workload (at 1,000 changes/s for worker kills, whose restarts back off,
 *     600/s for extract kills, whose restarts wait for the dead holder's 2 s lease to
 *     expire, so that the kills fall inside it): afterwards every change is in the stream at least
 *     once, replaying the stream gives exactly the collection, nothing is dead-lettered;
 *   - a poison document (the test plugin aborts the worker on poison: true) ends in the
 *     dead-letter stream with a reason; documents written after it are still queued;
 *   - two extractors: one lease holder, the other logs that it is on standby and queues
 *     nothing (every change queued exactly once); killing the active one hands over within
 *     5 s (lease TTL 2000 ms);
 *   - backpressure: no loader, FTSYNC_BACKLOG_MAX=500, 3,000 inserts: the stream stops
 *     growing between 500 and 500 + one batch (FTSYNC_BATCH_SIZE=100), and grows again once the
 *     test consumes and acknowledges entries as the `loaders` group would, until all 3,000 are
 *     queued.
 * The seed of the kill moments is FTSYNC_TEST_SEED (default below), printed by each run.
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

#include "extract_harness.h"
#include "mongo_double.h"
#include "redis_server.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif
#ifndef FTSYNC_TEST_PLUGIN_POISON
#define FTSYNC_TEST_PLUGIN_POISON "poison.so"
#endif

/* How long a test waits for an entry it expects (an ASan build under load is slow). */
#define ENTRY_WAIT_MS 60000
/* How long a clean stop may take. */
#define STOP_WAIT_MS 15000
/* The chaos runs: changes, their rate, kills, and the range of the pause before each kill. */
#define CHAOS_CHANGES "20000"
/* Killing the worker costs a restart after a backoff that grows while kills come faster than
 * every 10 s (0.2 s, 0.4 s...); killing the extract process a lease hand-over
 * (CHAOS_LEASE_TTL_MS: the dead holder never releases it). The rates keep most of the 10
 * kills inside the workload. */
#define CHAOS_RATE_WORKER_KILLS  "1000"
#define CHAOS_RATE_EXTRACT_KILLS "600"
#define CHAOS_LEASE_TTL_MS       "2000"
#define CHAOS_KILLS              10
#define CHAOS_PAUSE_MIN_MS       200
#define CHAOS_PAUSE_MAX_MS       900
/* Default seed of the kill moments. */
#define CHAOS_DEFAULT_SEED UINT64_C(20261124)
/* Backpressure: the maximum backlog, the batch size (the slack allowed), the inserts. */
#define BACKLOG_MAX     500
#define BACKLOG_BATCH   100
#define BACKLOG_INSERTS 3000
/* Lease TTL of the two-extractor test, and the hand-over bound. */
#define LEASE_TTL_MS    "2000"
#define HANDOVER_MAX_MS 5000
/* Markers: _id values the workload never uses (its ids are 10, 20, 30... from --id-start). */
#define MARKER_START 1
#define MARKER_END   5

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
    uint64_t seed;
} group_t;

static group_t group;

typedef struct {
    fts_test_pipeline_t p;
    fts_test_extract_t *extract;
    fts_test_extract_t *second;
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    mongoc_init();
    const char *seed = getenv("FTSYNC_TEST_SEED");
    group.seed = seed && *seed ? strtoull(seed, NULL, 10) : CHAOS_DEFAULT_SEED;
    group.redis = fts_test_redis_server_start(NULL, &err);
    if (!group.redis) {
        fprintf(stderr, "cannot start redis-server: %s\n", err.message);
        return -1;
    }
    group.mongo = fts_test_mongo_double_start(NULL, &err);
    if (!group.mongo) {
        fprintf(stderr, "cannot start the MongoDB double: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fts_test_mongo_double_destroy(group.mongo);
    fts_test_redis_server_destroy(group.redis);
    mongoc_cleanup();
    return 0;
}

static fixture_t *fixture_new(const char *prefix)
{
    fixture_t *f = calloc(1, sizeof *f);
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_pipeline_init(&f->p, FTSYNC_BINARY, FTSYNC_WORKLOAD,
                                fts_test_mongo_double_uri(group.mongo),
                                fts_test_redis_server_url(group.redis), prefix, &err)) {
        fail_msg("cannot set the pipeline up: %s", err.message);
    }
    return f;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f) {
        fts_test_extract_destroy(f->extract);
        fts_test_extract_destroy(f->second);
        fts_test_pipeline_cleanup(&f->p);
        free(f);
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* The seeded generator of the kill moments (splitmix64). */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static fts_test_extract_t *start_extract(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_extract_t *extract = fts_test_pipeline_start(&f->p, &err);
    if (!extract) {
        fail_msg("cannot start ftsync extract: %s", err.message);
    }
    return extract;
}

static void stop_clean(fts_test_extract_t **extract)
{
    int status = 0;
    bool exited = fts_test_extract_stop(*extract, STOP_WAIT_MS, &status);
    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fts_test_extract_print_log_tail(*extract, 40);
        fail_msg("ftsync extract did not exit 0 on SIGTERM (exited %d, status 0x%x)", exited,
                 status);
    }
    fts_test_extract_destroy(*extract);
    *extract = NULL;
}

static void insert_doc(fixture_t *f, int32_t id, bool poison)
{
    bson_t *doc =
        BCON_NEW("_id", BCON_INT32(id), "name", BCON_UTF8("doc"), "poison", BCON_BOOL(poison));
    bson_error_t error;
    bool ok = mongoc_collection_insert_one(f->p.coll, doc, NULL, NULL, &error);
    bson_destroy(doc);
    if (!ok) {
        fail_msg("insert of _id %d: %s", (int)id, error.message);
    }
}

static void insert_marker(fixture_t *f, int32_t id)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_pipeline_insert(&f->p, id, "marker", 30000, &err)) {
        fail_msg("%s", err.message);
    }
}

static size_t wait_entry(fixture_t *f, fts_test_extract_t *extract, int32_t id, int op, int origin)
{
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%d", (int)id);
    long found = fts_test_stream_wait_for(f->p.redis, f->p.stream_key, &f->p.entries, id_text, op,
                                          origin, ENTRY_WAIT_MS);
    if (found < 0) {
        if (extract) {
            fts_test_extract_print_log_tail(extract, 40);
        }
        fail_msg("no entry for id %s in %s within %d ms (%zu entries read)", id_text,
                 f->p.stream_key, ENTRY_WAIT_MS, f->p.entries.count);
    }
    return (size_t)found;
}

static void follow(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_stream_follow(f->p.redis, f->p.stream_key, &f->p.entries, &err)) {
        fail_msg("%s", err.message);
    }
}

static void assert_final_state(fixture_t *f, const char *label)
{
    size_t differ = fts_test_pipeline_check_final(&f->p, label);
    if (differ != 0) {
        fail_msg("%s: replaying the stream does not give the collection (%zd documents differ)",
                 label, (ssize_t)differ);
    }
}

static void assert_dead_letters_empty(fixture_t *f)
{
    long long dead = fts_test_redis_xlen(f->p.redis, f->p.dead_key);
    if (dead != 0) {
        fail_msg("%lld entries in the dead-letter stream %s, expected none", dead, f->p.dead_key);
    }
}

/* Waits up to timeout_ms for the stream to grow past length; true when it did. */
static bool wait_growth(fixture_t *f, long long length, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    while (fts_test_monotonic_ms() < deadline) {
        if (fts_test_redis_xlen(f->p.redis, f->p.stream_key) > length) {
            return true;
        }
        fts_test_sleep_ms(20);
    }
    return false;
}

/* ---- kill -9 during a workload ------------------------------------------------------------ */

/* True while the child pid runs (without reaping it: fts_test_wait_pid does that). */
static bool still_running(pid_t pid)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

static void chaos(void **state, bool kill_worker, const char *prefix, uint64_t seed_offset)
{
    fixture_t *f = *state = fixture_new(prefix);
    fts_test_pipeline_set(&f->p, "FTSYNC_LEASE_TTL_MS", CHAOS_LEASE_TTL_MS);
    rng_state = group.seed + seed_offset;
    fprintf(stderr, "(seed %" PRIu64 ", killing the %s)\n", group.seed,
            kill_worker ? "worker" : "extract process");

    insert_marker(f, MARKER_START);
    f->extract = start_extract(f);
    size_t first =
        wait_entry(f, f->extract, MARKER_START, FTS_ACTION_INDEX, FTS_ACTION_FROM_SNAPSHOT);
    fts_test_entry_t start_marker = f->p.entries.items[first];

    const char *args[] = {
        "--count", CHAOS_CHANGES,
        "--rate",  kill_worker ? CHAOS_RATE_WORKER_KILLS : CHAOS_RATE_EXTRACT_KILLS,
        "--seed",  "61",
        NULL};
    pid_t writer = fts_test_pipeline_workload_spawn(&f->p, args);
    assert_true(writer > 0);
    unsigned during_workload = 0;
    unsigned stalled = 0;
    for (unsigned kill_no = 0; kill_no < CHAOS_KILLS; kill_no++) {
        unsigned pause = CHAOS_PAUSE_MIN_MS +
                         (unsigned)(rng_next() % (CHAOS_PAUSE_MAX_MS - CHAOS_PAUSE_MIN_MS + 1));
        fts_test_sleep_ms(pause);
        long long length = fts_test_redis_xlen(f->p.redis, f->p.stream_key);
        if (still_running(writer)) {
            during_workload++;
        }
        if (kill_worker) {
            pid_t worker = fts_test_extract_worker_pid(f->extract, 10000);
            if (worker <= 0) {
                fts_test_extract_print_log_tail(f->extract, 40);
                fail_msg("kill %u: the extract process has no worker", kill_no);
            }
            assert_true(fts_test_kill_pid(worker, SIGKILL));
            if (!fts_test_extract_running(f->extract)) {
                fts_test_extract_print_log_tail(f->extract, 40);
                fail_msg("kill %u: the extract process died with its worker", kill_no);
            }
        } else {
            assert_true(fts_test_extract_kill(f->extract, SIGKILL));
            fts_test_extract_destroy(f->extract);
            f->extract = start_extract(f);
        }
        /* Progress before the next kill, so that no one event is crashed on three times in a
         * row (that would be a poison event, dead-lettered by design). */
        if (!wait_growth(f, length, still_running(writer) ? 15000 : 3000)) {
            stalled++;
        }
    }
    int status = fts_test_wait_pid(writer, 180000);
    if (status != 0) {
        fail_msg("ftsync-workload exited %d", status);
    }
    fprintf(stderr, "(%u of %u kills during the workload; %u not followed by progress)\n",
            during_workload, CHAOS_KILLS, stalled);
    assert_true(during_workload >= CHAOS_KILLS / 2);

    insert_marker(f, MARKER_END);
    wait_entry(f, f->extract, MARKER_END, FTS_ACTION_INDEX, FTS_ACTION_FROM_CHANGE);
    follow(f);

    fts_test_changes_t changes = {0};
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_collect_changes(f->p.client, f->p.db, f->p.collection,
                                  start_marker.action.ts_seconds, start_marker.action.ts_increment,
                                  MARKER_END, 60000, &changes, &err)) {
        fail_msg("collecting the change events: %s", err.message);
    }
    size_t missing = fts_test_changes_missing(&changes, &f->p.entries, prefix);
    fprintf(stderr, "(%zu changes, %zu stream entries)\n", changes.count, f->p.entries.count);
    fts_test_changes_cleanup(&changes);
    assert_int_equal(missing, 0);
    assert_final_state(f, prefix);
    assert_dead_letters_empty(f);
    stop_clean(&f->extract);
}

static void test_kill_extract_repeatedly(void **state)
{
    chaos(state, false, "xkillp", 0);
}

static void test_kill_worker_repeatedly(void **state)
{
    chaos(state, true, "xkillw", 1);
}

/* ---- poison ------------------------------------------------------------------------------- */

static void test_poison_document_dead_lettered(void **state)
{
    fixture_t *f = *state = fixture_new("xpoison");
    fts_test_pipeline_set(&f->p, "FTSYNC_TRANSFORM_PLUGIN", FTSYNC_TEST_PLUGIN_POISON);
    fts_test_pipeline_set(&f->p, "FTSYNC_WORKER_CRASH_LIMIT", "3");
    insert_marker(f, MARKER_START);
    f->extract = start_extract(f);
    pid_t pid = fts_test_extract_pid(f->extract);
    wait_entry(f, f->extract, MARKER_START, FTS_ACTION_INDEX, FTS_ACTION_FROM_SNAPSHOT);

    for (int32_t id = 100; id < 105; id++) {
        insert_doc(f, id, false);
    }
    insert_doc(f, 105, true);
    for (int32_t id = 106; id <= 110; id++) {
        insert_doc(f, id, false);
    }
    wait_entry(f, f->extract, 110, FTS_ACTION_INDEX, FTS_ACTION_FROM_CHANGE);
    /* and the pipeline still goes on afterwards */
    insert_doc(f, 111, false);
    wait_entry(f, f->extract, 111, FTS_ACTION_INDEX, FTS_ACTION_FROM_CHANGE);
    assert_true(fts_test_extract_running(f->extract));
    assert_int_equal(fts_test_extract_pid(f->extract), pid);

    for (int32_t id = 100; id <= 111; id++) {
        char id_text[16];
        snprintf(id_text, sizeof id_text, "%d", (int)id);
        bool queued = false;
        for (size_t i = 0; i < f->p.entries.count; i++) {
            const fts_test_entry_t *entry = &f->p.entries.items[i];
            if (!entry->sweep && entry->action.op == FTS_ACTION_INDEX &&
                strcmp(fts_test_entry_id(entry), id_text) == 0) {
                queued = true;
            }
        }
        if (queued != (id != 105)) {
            fail_msg("_id %d is %squeued", (int)id, queued ? "" : "not ");
        }
    }

    fts_test_raw_entries_t dead = {0};
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_stream_read_raw(f->p.redis, f->p.dead_key, &dead, &err)) {
        fail_msg("%s", err.message);
    }
    assert_int_equal(dead.count, 1);
    const char *reason = fts_test_raw_field(&dead, 0, "reason");
    assert_non_null(reason);
    assert_true(strlen(reason) > 0);
    assert_non_null(fts_test_raw_field(&dead, 0, "stage"));
    assert_non_null(fts_test_raw_field(&dead, 0, "failed_at"));
    /* The original fields name the poison document. */
    bool names_it = false;
    for (size_t j = 0; dead.fields[0][j] && dead.fields[0][j + 1]; j += 2) {
        const char *name = dead.fields[0][j];
        const char *value = dead.fields[0][j + 1];
        if (strcmp(name, "reason") != 0 && strcmp(name, "stage") != 0 &&
            strcmp(name, "failed_at") != 0 && strstr(value, "105") && strstr(value, "poison")) {
            names_it = true;
        }
    }
    assert_true(names_it);
    fprintf(stderr, "(dead letter: reason \"%s\")\n", reason);
    fts_test_raw_entries_cleanup(&dead);
    stop_clean(&f->extract);
}

/* ---- two extractors ----------------------------------------------------------------------- */

/* True when the lease's owner id ("host:pid:random") names pid. */
static bool lease_held_by(fixture_t *f, pid_t pid)
{
    char *owner = fts_test_redis_get(f->p.redis, f->p.lease_key);
    char needle[32];
    snprintf(needle, sizeof needle, ":%d:", (int)pid);
    bool held = owner && strstr(owner, needle);
    free(owner);
    return held;
}

static void test_two_extractors_one_reads(void **state)
{
    fixture_t *f = *state = fixture_new("xlease");
    fts_test_pipeline_set(&f->p, "FTSYNC_LEASE_TTL_MS", LEASE_TTL_MS);
    insert_marker(f, MARKER_START);
    f->extract = start_extract(f);
    wait_entry(f, f->extract, MARKER_START, FTS_ACTION_INDEX, FTS_ACTION_FROM_SNAPSHOT);
    assert_true(lease_held_by(f, fts_test_extract_pid(f->extract)));

    f->second = start_extract(f);
    /* Let the second one settle as standby, then write. */
    uint64_t deadline = fts_test_monotonic_ms() + 10000;
    char *log = fts_test_extract_log(f->second);
    while (!strstr(log, "standby") && fts_test_monotonic_ms() < deadline) {
        free(log);
        fts_test_sleep_ms(100);
        log = fts_test_extract_log(f->second);
    }
    assert_contains(log, "standby");
    free(log);
    for (int32_t id = 100; id < 200; id++) {
        insert_doc(f, id, false);
    }
    wait_entry(f, f->extract, 199, FTS_ACTION_INDEX, FTS_ACTION_FROM_CHANGE);
    fts_test_sleep_ms(1000);
    follow(f);
    assert_true(lease_held_by(f, fts_test_extract_pid(f->extract)));
    assert_true(fts_test_extract_running(f->second));
    /* Only one reads: every insert queued exactly once. */
    fts_test_docs_t *seen = fts_test_docs_new();
    for (size_t i = 0; i < f->p.entries.count; i++) {
        const fts_test_entry_t *entry = &f->p.entries.items[i];
        if (entry->sweep || entry->action.origin != FTS_ACTION_FROM_CHANGE) {
            continue;
        }
        if (fts_test_docs_version(seen, fts_test_entry_id(entry)) != 0) {
            fail_msg("id %s queued twice with two extractors running", fts_test_entry_id(entry));
        }
        fts_test_replay_apply(seen, entry);
    }
    fts_test_docs_destroy(seen);

    /* Kill the active one: the standby takes the lease within HANDOVER_MAX_MS. */
    pid_t second_pid = fts_test_extract_pid(f->second);
    assert_true(fts_test_extract_kill(f->extract, SIGKILL));
    uint64_t killed_at = fts_test_monotonic_ms();
    while (!lease_held_by(f, second_pid)) {
        if (fts_test_monotonic_ms() - killed_at > HANDOVER_MAX_MS) {
            fts_test_extract_print_log_tail(f->second, 40);
            fail_msg("the standby did not take the lease within %d ms", HANDOVER_MAX_MS);
        }
        fts_test_sleep_ms(20);
    }
    uint64_t handover_ms = fts_test_monotonic_ms() - killed_at;
    for (int32_t id = 200; id < 220; id++) {
        insert_doc(f, id, false);
    }
    wait_entry(f, f->second, 219, FTS_ACTION_INDEX, FTS_ACTION_FROM_CHANGE);
    uint64_t caught_up_ms = fts_test_monotonic_ms() - killed_at;
    fprintf(stderr,
            "(lease taken over %" PRIu64 " ms after the kill; new writes queued after %" PRIu64
            " ms)\n",
            handover_ms, caught_up_ms);
    assert_final_state(f, "two extractors");
    assert_dead_letters_empty(f);
    stop_clean(&f->second);
}

/* ---- backpressure ------------------------------------------------------------------------- */

/* XINFO STREAM's entries-added (Redis 7): entries ever appended, whatever was trimmed. */
static long long entries_added(fixture_t *f)
{
    redisReply *reply = redisCommand(f->p.redis, "XINFO STREAM %s", f->p.stream_key);
    long long added = -1;
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            if (reply->element[i]->type == REDIS_REPLY_STRING &&
                strcmp(reply->element[i]->str, "entries-added") == 0) {
                added = reply->element[i + 1]->integer;
            }
        }
    }
    freeReplyObject(reply);
    return added;
}

/* Waits until entries-added has not changed for quiet_ms; returns it. */
static long long wait_plateau(fixture_t *f, unsigned quiet_ms, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    long long last = entries_added(f);
    uint64_t since = fts_test_monotonic_ms();
    while (fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(50);
        long long now = entries_added(f);
        if (now != last) {
            last = now;
            since = fts_test_monotonic_ms();
        } else if (fts_test_monotonic_ms() - since >= quiet_ms) {
            return last;
        }
    }
    fail_msg("the stream kept growing for %u ms (%lld entries added)", timeout_ms, last);
    return -1;
}

/* Reads up to count new entries as a loader of the group `loaders` and acknowledges them,
 * replaying them into seen. Returns how many. */
static size_t consume_and_ack(fixture_t *f, unsigned count, fts_test_docs_t *seen)
{
    redisReply *reply =
        redisCommand(f->p.redis, "XREADGROUP GROUP loaders test-loader COUNT %u STREAMS %s >",
                     count, f->p.stream_key);
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        fail_msg("XREADGROUP: %s", reply ? reply->str : f->p.redis->errstr);
    }
    size_t acked = 0;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
        const redisReply *entries = reply->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            const redisReply *fields = entries->element[i]->element[1];
            fts_bytes_t items[32];
            size_t n = fields->elements < 32 ? fields->elements : 32;
            for (size_t j = 0; j < n; j++) {
                items[j].data = fields->element[j]->str;
                items[j].len = fields->element[j]->len;
            }
            fts_test_entry_t entry;
            memset(&entry, 0, sizeof entry);
            fts_error_t err;
            if (!fts_action_decode(items, n, &entry.action, &err)) {
                fail_msg("entry %s: %s", entries->element[i]->element[0]->str, err.message);
            }
            fts_test_replay_apply(seen, &entry);
            fts_action_cleanup(&entry.action);
            redisReply *ack = redisCommand(f->p.redis, "XACK %s loaders %s", f->p.stream_key,
                                           entries->element[i]->element[0]->str);
            assert_non_null(ack);
            assert_int_equal(ack->type, REDIS_REPLY_INTEGER);
            assert_int_equal(ack->integer, 1);
            freeReplyObject(ack);
            acked++;
        }
    }
    freeReplyObject(reply);
    return acked;
}

static void test_backpressure(void **state)
{
    fixture_t *f = *state = fixture_new("xback");
    char value[32];
    snprintf(value, sizeof value, "%d", BACKLOG_MAX);
    fts_test_pipeline_set(&f->p, "FTSYNC_BACKLOG_MAX", value);
    snprintf(value, sizeof value, "%d", BACKLOG_BATCH);
    fts_test_pipeline_set(&f->p, "FTSYNC_BATCH_SIZE", value);
    fts_test_pipeline_set(&f->p, "FTSYNC_TRIM_INTERVAL_MS", "500");
    f->extract = start_extract(f);
    /* The group exists once extract runs. */
    uint64_t deadline = fts_test_monotonic_ms() + 20000;
    while (entries_added(f) < 0 && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(50);
    }
    assert_true(entries_added(f) >= 0);

    char count[16];
    snprintf(count, sizeof count, "%d", BACKLOG_INSERTS);
    const char *args[] = {"--count", count, "--mix", "insert=1", "--seed", "71", NULL};
    assert_int_equal(fts_test_pipeline_workload_run(&f->p, args, 120000), 0);

    long long plateau = wait_plateau(f, 2000, 60000);
    fprintf(stderr, "(no loader: the stream stopped at %lld entries; maximum %d, slack %d)\n",
            plateau, BACKLOG_MAX, BACKLOG_BATCH);
    assert_true(plateau >= BACKLOG_MAX);
    assert_true(plateau <= BACKLOG_MAX + BACKLOG_BATCH);

    /* Acknowledge 300: it grows again. Then keep consuming until all inserts are queued. */
    fts_test_docs_t *seen = fts_test_docs_new();
    size_t acked = consume_and_ack(f, 300, seen);
    assert_int_equal(acked, 300);
    if (!wait_growth(f, fts_test_redis_xlen(f->p.redis, f->p.stream_key), 10000) &&
        entries_added(f) <= plateau) {
        fts_test_extract_print_log_tail(f->extract, 40);
        fail_msg("the stream did not grow again after 300 acknowledgements");
    }
    assert_true(entries_added(f) > plateau);
    /* Every insert, plus the sweep that ends the first snapshot (of an empty collection). */
    const size_t expected_entries = BACKLOG_INSERTS + 1;
    deadline = fts_test_monotonic_ms() + 60000;
    while (acked < expected_entries && fts_test_monotonic_ms() < deadline) {
        size_t got = consume_and_ack(f, 500, seen);
        if (got == 0) {
            fts_test_sleep_ms(50);
        }
        acked += got;
    }
    fprintf(stderr, "(%zu entries consumed and acknowledged in all)\n", acked);
    assert_int_equal(acked, expected_entries);
    /* Nothing dropped: the entries the loader got are the collection (the stream itself is
     * being trimmed of what was acknowledged, so it is not replayed from Redis here). */
    fts_test_docs_t *expected = fts_test_docs_new();
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_collection_state(f->p.client, f->p.db, f->p.collection, NULL, NULL, expected,
                                   &err)) {
        fail_msg("%s", err.message);
    }
    size_t differ = fts_test_replay_compare(seen, expected, "backpressure");
    fts_test_docs_destroy(expected);
    fts_test_docs_destroy(seen);
    assert_int_equal(differ, 0);
    assert_dead_letters_empty(f);
    stop_clean(&f->extract);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kill_extract_repeatedly, teardown),
        cmocka_unit_test_teardown(test_kill_worker_repeatedly, teardown),
        cmocka_unit_test_teardown(test_poison_document_dead_lettered, teardown),
        cmocka_unit_test_teardown(test_two_extractors_one_reads, teardown),
        cmocka_unit_test_teardown(test_backpressure, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
