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

#include "extract_fixture.h"
#include "extract_harness.h"
#include "test_rng.h"

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

static fts_test_extract_bed_t bed;

typedef struct {
    fts_test_pipeline_t p;
    fts_test_extract_t *extract;
    fts_test_extract_t *second;
    fts_test_rng_t rng; /* the seeded kill moments */
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    return fts_test_extract_bed_start(&bed, FTSYNC_BINARY, FTSYNC_WORKLOAD, NULL,
                                      CHAOS_DEFAULT_SEED)
               ? 0
               : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    fts_test_extract_bed_stop(&bed);
    return 0;
}

static fixture_t *fixture_new(const char *prefix)
{
    fixture_t *f = bson_malloc0(sizeof *f);
    fts_test_extract_bed_pipeline(&bed, &f->p, NULL, prefix);
    return f;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f) {
        fts_test_extract_destroy(f->extract);
        fts_test_extract_destroy(f->second);
        fts_test_pipeline_cleanup(&f->p);
        bson_free(f);
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void follow(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_stream_follow(f->p.redis, f->p.stream_key, &f->p.entries, &err)) {
        fail_msg("%s", err.message);
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
    f->rng.state = bed.seed + seed_offset;
    fprintf(stderr, "(seed %" PRIu64 ", killing the %s)\n", bed.seed,
            kill_worker ? "worker" : "extract process");

    fts_test_pipeline_insert_marker(&f->p, MARKER_START);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    size_t first = fts_test_pipeline_wait_entry_number(
        &f->p, f->extract, MARKER_START, FTS_ACTION_INDEX, FTS_ACTION_FROM_SNAPSHOT, ENTRY_WAIT_MS);
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
        unsigned pause =
            CHAOS_PAUSE_MIN_MS +
            (unsigned)(fts_test_rng_next(&f->rng) % (CHAOS_PAUSE_MAX_MS - CHAOS_PAUSE_MIN_MS + 1));
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
            f->extract = fts_test_pipeline_start_or_fail(&f->p);
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

    fts_test_pipeline_insert_marker(&f->p, MARKER_END);
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, MARKER_END, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
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
    fts_test_pipeline_assert_replay_equals_collection(&f->p, NULL, prefix);
    fts_test_pipeline_assert_no_dead_letters(&f->p);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
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
    fts_test_pipeline_insert_marker(&f->p, MARKER_START);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    pid_t pid = fts_test_extract_pid(f->extract);
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, MARKER_START, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_SNAPSHOT, ENTRY_WAIT_MS);

    for (int32_t id = 100; id < 105; id++) {
        fts_test_pipeline_insert_doc(&f->p, id, false);
    }
    fts_test_pipeline_insert_doc(&f->p, 105, true);
    for (int32_t id = 106; id <= 110; id++) {
        fts_test_pipeline_insert_doc(&f->p, id, false);
    }
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, 110, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    /* and the pipeline still goes on afterwards */
    fts_test_pipeline_insert_doc(&f->p, 111, false);
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, 111, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
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
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
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
    fts_test_pipeline_insert_marker(&f->p, MARKER_START);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, MARKER_START, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_SNAPSHOT, ENTRY_WAIT_MS);
    assert_true(lease_held_by(f, fts_test_extract_pid(f->extract)));

    f->second = fts_test_pipeline_start_or_fail(&f->p);
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
        fts_test_pipeline_insert_doc(&f->p, id, false);
    }
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, 199, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
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
        fts_test_pipeline_insert_doc(&f->p, id, false);
    }
    fts_test_pipeline_wait_entry_number(&f->p, f->second, 219, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    uint64_t caught_up_ms = fts_test_monotonic_ms() - killed_at;
    fprintf(stderr,
            "(lease taken over %" PRIu64 " ms after the kill; new writes queued after %" PRIu64
            " ms)\n",
            handover_ms, caught_up_ms);
    fts_test_pipeline_assert_replay_equals_collection(&f->p, NULL, "two extractors");
    fts_test_pipeline_assert_no_dead_letters(&f->p);
    fts_test_extract_stop_clean(&f->second, STOP_WAIT_MS);
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
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
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
    fts_test_pipeline_assert_no_dead_letters(&f->p);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
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
