/*
 * test_load_drop_sweep.c - `ftsync load` applying `drop` and `sweep` entries against the test bed's
 * Redis and Elasticsearch, checked document by document against the model
 * (test/support/load_harness.h), in an index shared with another collection.
 *
 * What is pinned (README.md, Load; invariants 2, 3 and 7):
 *   - a history-lost resync: documents indexed at v1, a snapshot re-indexing some at v2, a
 *     sweep at v2: only the stale documents of its ns vanish; those of the other collection
 *     at v1 stay; documents re-indexed at v3 right behind the sweep in the stream, and others
 *     re-written at v3 once the sweep has started (while it pages, 50 documents a page),
 *     survive; the sweep entry is acknowledged, nothing dead-lettered;
 *   - a dropped and recreated collection, every entry written before three loaders start (so
 *     actions before the drop are still in flight when a loader takes the drop): inserts and
 *     deletes before the drop are gone, the recreated collection's inserts (same ids and new
 *     ones) are there, the other collection is untouched - which needs the barrier;
 *   - a loader killed (kill -9) while it sweeps leaves the entry pending; another loader
 *     claims it and sweeps again from the start, and the index ends right;
 *   - FTSYNC_NS_FIELD=off: a sweep is dead-lettered with a reason, and the index keeps every
 *     document (nothing is touched that cannot be attributed).
 * Each test has its own pipeline and index (named after it and the pid).
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

#include <bson/bson.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>

#include "action.h"
#include "load_fixture.h"
#include "load_harness.h"
#include "testbed.h"
#include "test_time.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_SOURCE_DIR
#define FTSYNC_SOURCE_DIR "."
#endif

/* Another collection writing into the same index. */
#define OTHER_NS         "other_db.games"
#define DRAIN_TIMEOUT_MS 180000
#define START_TIMEOUT_MS 60000
#define LOG_LINES        40

static uint64_t base_version;
static const char *redis_url;
static const char *es_url;

static int group_setup(void **state)
{
    (void)state;
    redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    es_url = fts_testbed_es_url();
    base_version = fts_version_from_timestamp(1795428000u, 0);
    return 0;
}

/* Versions at cluster time base + seconds. */
static uint64_t at(uint32_t seconds, uint32_t increment)
{
    return fts_version_from_timestamp(1795428000u + seconds, increment);
}

/* Whether some loader's log holds needle. */
static bool some_log_contains(fts_test_load_t *t, const char *needle)
{
    bool found = false;
    for (size_t i = 0; i < t->loader_count && !found; i++) {
        char *log = fts_test_loader_log(t->loaders[i]);
        found = log && strstr(log, needle) != NULL;
        bson_free(log);
    }
    return found;
}

static void wait_for_log(fts_test_load_t *t, const char *needle)
{
    uint64_t deadline = fts_test_monotonic_ms() + START_TIMEOUT_MS;
    while (!some_log_contains(t, needle)) {
        if (fts_test_monotonic_ms() > deadline) {
            fts_test_load_print_logs(t, LOG_LINES);
            fail_msg("no loader logged \"%s\" within %d ms", needle, START_TIMEOUT_MS);
        }
        fts_test_sleep_ms(20);
    }
}

static void body_for(char *out, size_t size, const char *id, const char *revision)
{
    snprintf(out, size, "{\"name\":\"App %s\",\"short_description\":\"%s\"}", id, revision);
}

/* ---- tests -------------------------------------------------------------------------------- */

#define RESYNC_IDS        3000
#define RESYNC_SNAPSHOT   2000 /* a0 .. a1999 still in the collection: re-indexed at v2 */
#define RESYNC_BEHIND_END 2100 /* a2000 .. a2099 inserted again after the resync (v3) */
#define RESYNC_DURING     2900 /* a2900 .. a2999 re-written at v3 while the sweep pages */
#define OTHER_IDS         200

static void test_history_lost_sweep_removes_only_stale_documents(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "sweep");
    fts_test_load_set(t, "FTSYNC_SWEEP_PAGE_SIZE", "50");
    uint64_t v1 = at(0, 1);
    uint64_t v2 = at(100, 1);
    uint64_t v3 = at(200, 1);
    char id[32];
    char body[256];
    for (int n = 0; n < RESYNC_IDS; n++) {
        snprintf(id, sizeof id, "a%d", n);
        body_for(body, sizeof body, id, "v1");
        fts_test_load_index(t, id, v1, body);
    }
    for (int n = 0; n < OTHER_IDS; n++) {
        snprintf(id, sizeof id, "b%d", n);
        body_for(body, sizeof body, id, "other v1");
        fts_test_load_index_ns(t, OTHER_NS, id, v1, body);
    }
    fts_test_load_flush_or_fail(t);
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_index_equals_model(t, "before the history was lost");

    /* The resync: a snapshot at v2 of what is still in the collection, then the sweep; the
     * documents a2000.. were deleted while the history was lost. */
    for (int n = 0; n < RESYNC_SNAPSHOT; n++) {
        snprintf(id, sizeof id, "a%d", n);
        body_for(body, sizeof body, id, "v2 snapshot");
        fts_test_load_index(t, id, v2, body);
    }
    fts_test_load_sweep(t, FTS_TEST_LOAD_NS, v2);
    for (int n = RESYNC_SNAPSHOT; n < RESYNC_BEHIND_END; n++) {
        snprintf(id, sizeof id, "a%d", n);
        body_for(body, sizeof body, id, "v3 inserted again");
        fts_test_load_index(t, id, v3, body);
    }
    fts_test_load_flush_or_fail(t);
    wait_for_log(t, "started: every entry before it is acknowledged");
    for (int n = RESYNC_DURING; n < RESYNC_IDS; n++) {
        snprintf(id, sizeof id, "a%d", n);
        body_for(body, sizeof body, id, "v3 during the sweep");
        fts_test_load_index(t, id, v3, body);
    }
    fts_test_load_flush_or_fail(t);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_index_equals_model(t, "after the sweep");
    fts_test_load_expect_dead_count(t, 0);
    assert_true(some_log_contains(t, "sweep finished"));
    /* the stale ones are gone, the others all there */
    assert_int_equal(fts_test_load_model_present(t), RESYNC_SNAPSHOT +
                                                         (RESYNC_BEHIND_END - RESYNC_SNAPSHOT) +
                                                         (RESYNC_IDS - RESYNC_DURING) + OTHER_IDS);
}

#define DROP_IDS     2000
#define DROP_DELETED 300 /* c0 .. c299 deleted before the drop */
#define DROP_REUSED  500 /* c0 .. c499 inserted again into the new collection */
#define DROP_NEW     300 /* n0 .. n299 new in the new collection */

static void test_dropped_and_recreated_collection(void **state)
{
    fts_test_load_t *t = fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "drop");
    fts_test_load_set(t, "FTSYNC_BULK_MAX_ACTIONS", "100");
    uint64_t v = at(0, 1);
    uint64_t deleted_at = at(1, 1);
    uint64_t dropped_at = at(2, 1);
    uint64_t recreated_at = at(3, 1);
    char id[32];
    char body[256];
    for (int n = 0; n < DROP_IDS; n++) {
        snprintf(id, sizeof id, "c%d", n);
        body_for(body, sizeof body, id, "old collection");
        fts_test_load_index(t, id, v, body);
        if (n % 10 == 0) {
            snprintf(id, sizeof id, "o%d", n / 10);
            body_for(body, sizeof body, id, "other collection");
            fts_test_load_index_ns(t, OTHER_NS, id, v, body);
        }
    }
    for (int n = 0; n < DROP_DELETED; n++) {
        snprintf(id, sizeof id, "c%d", n);
        fts_test_load_delete(t, id, deleted_at);
    }
    fts_test_load_drop(t, FTS_TEST_LOAD_NS, dropped_at);
    for (int n = 0; n < DROP_REUSED; n++) {
        snprintf(id, sizeof id, "c%d", n);
        body_for(body, sizeof body, id, "new collection");
        fts_test_load_index(t, id, recreated_at, body);
    }
    for (int n = 0; n < DROP_NEW; n++) {
        snprintf(id, sizeof id, "n%d", n);
        body_for(body, sizeof body, id, "new collection");
        fts_test_load_index(t, id, recreated_at, body);
    }
    fts_test_load_flush_or_fail(t);
    /* Everything is queued before the loaders start: what precedes the drop is still in
     * flight in one loader while another takes the drop. */
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_index_equals_model(t, "after the drop and the new collection");
    fts_test_load_expect_dead_count(t, 0);
    assert_int_equal(fts_test_load_model_present(t), DROP_REUSED + DROP_NEW + DROP_IDS / 10);
    assert_true(some_log_contains(t, "drop finished"));
}

#define KILL_IDS 3000

static void test_loader_killed_mid_sweep_leaves_it_to_the_next(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "sweepkill");
    fts_test_load_set(t, "FTSYNC_SWEEP_PAGE_SIZE", "5");
    char id[32];
    char body[256];
    for (int n = 0; n < KILL_IDS; n++) {
        snprintf(id, sizeof id, "k%d", n);
        body_for(body, sizeof body, id, "v1");
        fts_test_load_index(t, id, at(0, 1), body);
    }
    fts_test_load_flush_or_fail(t);
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    /* a resync that kept only the first tenth: 2700 stale documents, 540 pages of deletes */
    for (int n = 0; n < KILL_IDS / 10; n++) {
        snprintf(id, sizeof id, "k%d", n);
        body_for(body, sizeof body, id, "v2");
        fts_test_load_index(t, id, at(10, 1), body);
    }
    fts_test_load_sweep(t, FTS_TEST_LOAD_NS, at(10, 1));
    fts_test_load_flush_or_fail(t);
    wait_for_log(t, "started: every entry before it is acknowledged");
    fts_test_sleep_ms(100); /* some pages deleted; hundreds to go */
    fts_test_loader_t *first = t->loaders[0];
    fts_test_group_state_t group;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_load_kill9(t, first));
    if (!fts_test_load_group_state(t, &group, &err)) {
        fts_test_load_fail_with_logs(t, "reading the group", &err);
    }
    /* killed mid-sweep: the sweep entry is still pending */
    assert_int_equal(group.pending, 1);
    /* another loader claims it once idle (FTSYNC_CLAIM_IDLE_MS 5 s) and sweeps again */
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_index_equals_model(t, "after the sweep was taken over");
    fts_test_load_expect_dead_count(t, 0);
    assert_int_equal(fts_test_load_model_present(t), KILL_IDS / 10);
}

static void test_sweep_without_ns_field_is_dead_lettered_and_touches_nothing(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "nonsfield");
    fts_test_load_set(t, "FTSYNC_NS_FIELD", "off");
    t->ns_field[0] = '\0'; /* the loaders write no ns into documents */
    char id[32];
    char body[256];
    for (int n = 0; n < 50; n++) {
        snprintf(id, sizeof id, "s%d", n);
        body_for(body, sizeof body, id, "v1");
        fts_test_load_index(t, id, at(0, 1), body);
    }
    fts_test_load_flush_or_fail(t);
    fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    /* Written past the model (which would apply it): the loader must not. */
    char version[32];
    snprintf(version, sizeof version, "%" PRIu64, at(9, 1));
    redisReply *reply =
        redisCommand(t->redis, "XADD %s * op sweep version %s ns %s ts %s origin change",
                     t->stream_key, version, FTS_TEST_LOAD_NS, "1795428009.1");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    freeReplyObject(reply);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_dead_count(t, 1);
    fts_test_load_expect_index_equals_model(t, "after the refused sweep");
    assert_true(some_log_contains(t, "FTSYNC_NS_FIELD is off"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_history_lost_sweep_removes_only_stale_documents,
                                  fts_test_load_fixture_teardown),
        cmocka_unit_test_teardown(test_dropped_and_recreated_collection,
                                  fts_test_load_fixture_teardown),
        cmocka_unit_test_teardown(test_loader_killed_mid_sweep_leaves_it_to_the_next,
                                  fts_test_load_fixture_teardown),
        cmocka_unit_test_teardown(test_sweep_without_ns_field_is_dead_lettered_and_touches_nothing,
                                  fts_test_load_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
