/*
 * test_load_chaos.c - several `ftsync load` replicas in one consumer group, one of them killed
 * with SIGKILL at random moments while entries are written and loaded, against the test bed's
 * redis-server and search engine (FTSYNC_TEST_ENGINE: OpenSearch 2.19 or Elasticsearch 1.5.2;
 * CTest runs it on both).
 *
 * What is pinned (invariants 2, 3 and 5 of README.md, Architecture: entries of a consumer that
 * died are claimed by the others):
 *   - two loaders, then (second test) three loaders, FTSYNC_CLAIM_IDLE_MS 2000 and
 *     FTSYNC_CLAIM_INTERVAL_MS 500; while 40,000 or more entries (index and delete over 5,000
 *     ids, versions rising with every entry) are written, one loader chosen at random is
 *     killed with SIGKILL 10 times, 0.3-1.5 s apart, and a replacement started each time with
 *     a NEW consumer name, so that the dead one's pending entries can only be finished by
 *     another consumer claiming them;
 *   - afterwards: every entry is acknowledged (no entry pending in the group, none unread),
 *     the index equals the model document by document, the dead-letter stream is empty, and
 *     the surviving loaders stop with status 0 on SIGTERM.
 * FTSYNC_MAX_DELIVERIES is raised to 30: an entry claimed by a loader that is killed in turn is
 * delivered again, and ten kills must not push a healthy entry into the dead-letter stream.
 * The seed of the kill moments and of the workload is FTSYNC_TEST_SEED (default below),
 * printed by each run.
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

#include "action.h"
#include "load_harness.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_SOURCE_DIR
#define FTSYNC_SOURCE_DIR "."
#endif

/* The engine's definition of the apps index (deploy/index/apps.json, or the ES 1.x one). */
#define DEFINITION_PATH fts_testbed_index_definition()

/* The workload: at least this many entries over this many ids, written in chunks. */
#define CHAOS_MIN_ENTRIES    40000
#define CHAOS_IDS            5000
#define CHAOS_CHUNK          100
#define CHAOS_CHUNK_PAUSE_MS 25
/* Share of deletes among the entries, in percent. */
#define CHAOS_DELETE_PERCENT 20
/* Kills, and the range of the pause before each. */
#define CHAOS_KILLS        10
#define CHAOS_PAUSE_MIN_MS 300
#define CHAOS_PAUSE_MAX_MS 1500
#define CHAOS_DEFAULT_SEED UINT64_C(20261125)
/* How long a drain may take: the last kill's entries wait CLAIM_IDLE_MS before a claim. */
#define DRAIN_TIMEOUT_MS 150000
#define STOP_TIMEOUT_MS  15000
#define LOG_LINES        30
/* Loaders at once, at most. */
#define MAX_LIVE 3

static const char *redis_url;
static const char *es_url;
static uint64_t seed;

static int group_setup(void **state)
{
    (void)state;
    redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    es_url = fts_testbed_es_url();
    const char *text = getenv("FTSYNC_TEST_SEED");
    seed = text && *text ? strtoull(text, NULL, 10) : CHAOS_DEFAULT_SEED;
    return 0;
}

static int bed_teardown(void **state)
{
    fts_test_load_t *t = *state;
    if (t) {
        fts_test_load_cleanup(t);
        free(t);
    }
    return 0;
}

/* xorshift64*: the kill moments and the workload are reproducible from the seed. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static uint64_t random_between(uint64_t *s, uint64_t low, uint64_t high)
{
    return low + next_random(s) % (high - low + 1);
}

static void fail_with_logs(fts_test_load_t *t, const char *what, const fts_error_t *err)
{
    fts_test_load_print_logs(t, LOG_LINES);
    fail_msg("%s: %s", what, err ? err->message : "");
}

static fts_test_loader_t *start_loader(fts_test_load_t *t)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_loader_t *loader = fts_test_load_start_loader(t, NULL, &err);
    if (!loader) {
        fail_with_logs(t, "cannot start ftsync load", &err);
    }
    return loader;
}

static void write_chunk(fts_test_load_t *t, uint64_t *rng, uint64_t base_version, size_t *seq)
{
    char id[32];
    char body[256];
    for (int i = 0; i < CHAOS_CHUNK; i++) {
        unsigned n = (unsigned)(next_random(rng) % CHAOS_IDS);
        snprintf(id, sizeof id, "c%u", n);
        uint64_t version = base_version + ++*seq; /* the last entry written for an id wins */
        if (next_random(rng) % 100 < CHAOS_DELETE_PERCENT) {
            fts_test_load_delete(t, id, version);
        } else {
            snprintf(body, sizeof body,
                     "{\"name\":\"Chaos %u\",\"short_description\":\"write %zu\",\"developers\":"
                     "[\"D%u\"],\"updated_at\":\"2026-11-23T11:00:00.000Z\",\"n\":%zu}",
                     n, *seq, n % 17, *seq);
            fts_test_load_index(t, id, version, body);
        }
    }
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_flush(t, &err)) {
        fail_with_logs(t, "writing entries", &err);
    }
}

static void run_chaos(void **state, const char *name, size_t loaders)
{
    fts_test_load_t *t = calloc(1, sizeof *t);
    *state = t;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_init(t, FTSYNC_BINARY, DEFINITION_PATH, redis_url, es_url, name, &err)) {
        fail_msg("cannot set up the test bed: %s", err.message);
    }
    fts_test_load_set(t, "FTSYNC_CLAIM_IDLE_MS", "2000");
    fts_test_load_set(t, "FTSYNC_CLAIM_INTERVAL_MS", "500");
    fts_test_load_set(t, "FTSYNC_MAX_DELIVERIES", "30");
    fts_test_load_set(t, "FTSYNC_READ_BLOCK_MS", "200");
    /* Small bulks: more requests in flight at any moment a kill falls on. */
    fts_test_load_set(t, "FTSYNC_BULK_MAX_ACTIONS", "200");

    uint64_t rng = seed ^ (uint64_t)loaders;
    if (rng == 0) {
        rng = 1;
    }
    fprintf(stderr, "[%s] seed %" PRIu64 " (FTSYNC_TEST_SEED), %zu loaders, %d kills\n", name, seed,
            loaders, CHAOS_KILLS);
    uint64_t base_version = fts_version_from_timestamp(1795430000u, 0);

    fts_test_loader_t *live[MAX_LIVE] = {0};
    for (size_t i = 0; i < loaders; i++) {
        live[i] = start_loader(t);
    }
    uint64_t started = fts_test_monotonic_ms();
    size_t seq = 0;
    int kills = 0;
    long long orphaned_total = 0;
    uint64_t next_kill =
        fts_test_monotonic_ms() + random_between(&rng, CHAOS_PAUSE_MIN_MS, CHAOS_PAUSE_MAX_MS);
    while (kills < CHAOS_KILLS || seq < CHAOS_MIN_ENTRIES) {
        write_chunk(t, &rng, base_version, &seq);
        fts_test_sleep_ms(CHAOS_CHUNK_PAUSE_MS);
        if (!fts_test_load_check_loaders(t, &err)) {
            fail_with_logs(t, "a loader died that the test did not kill", &err);
        }
        if (kills < CHAOS_KILLS && fts_test_monotonic_ms() >= next_kill) {
            size_t victim = (size_t)(next_random(&rng) % loaders);
            fts_test_group_state_t group;
            fts_test_load_group_state(t, &group, &err);
            const char *consumer = fts_test_loader_consumer(live[victim]);
            int pid = (int)fts_test_loader_pid(live[victim]);
            if (!fts_test_load_kill9(t, live[victim])) {
                fail_with_logs(t, "the loader to kill was not running", NULL);
            }
            /* Read after the kill: what the dead consumer left for the others to claim. */
            long long orphaned = fts_test_load_consumer_pending(t, consumer);
            orphaned_total += orphaned > 0 ? orphaned : 0;
            fprintf(stderr,
                    "[%s] kill %d: SIGKILL to %s (pid %d) after %zu entries; it left %lld "
                    "pending (%lld in the group)\n",
                    name, kills + 1, consumer, pid, seq, orphaned, group.pending);
            live[victim] = start_loader(t);
            kills++;
            next_kill = fts_test_monotonic_ms() +
                        random_between(&rng, CHAOS_PAUSE_MIN_MS, CHAOS_PAUSE_MAX_MS);
        }
    }
    fprintf(stderr,
            "[%s] %zu entries written and %d kills in %.1f s; model: %zu ids, %zu present\n", name,
            seq, kills, (double)(fts_test_monotonic_ms() - started) / 1000.0,
            fts_test_load_model_ids(t), fts_test_load_model_present(t));

    if (!fts_test_load_wait_drained(t, DRAIN_TIMEOUT_MS, &err)) {
        fail_with_logs(t, "waiting for the loaders to drain the stream", &err);
    }
    fprintf(stderr, "[%s] drained %.1f s after the first write\n", name,
            (double)(fts_test_monotonic_ms() - started) / 1000.0);
    /* Some kills fell on a loader holding entries, so claims had to happen. */
    fprintf(stderr, "[%s] the killed loaders left %lld entries pending, all claimed since\n", name,
            orphaned_total);
    assert_true(orphaned_total > 0);
    fts_test_group_state_t group;
    assert_true(fts_test_load_group_state(t, &group, &err));
    assert_int_equal(group.pending, 0);
    assert_int_equal(group.length, (long long)seq);
    assert_string_equal(group.last_delivered, group.last_generated);

    size_t differences = fts_test_load_check_index(t, name);
    if (differences != 0) {
        fts_test_load_print_logs(t, LOG_LINES);
        fail_msg("the index differs from the model in %zu places (first ones above)", differences);
    }
    long long dead = fts_test_load_dead_count(t);
    if (dead != 0) {
        fts_test_load_print_logs(t, LOG_LINES);
        fail_msg("%lld entries were dead-lettered; none should be", dead);
    }
    for (size_t i = 0; i < loaders; i++) {
        uint64_t elapsed = 0;
        int code = fts_test_load_stop(t, live[i], STOP_TIMEOUT_MS, &elapsed);
        if (code != 0) {
            fts_test_loader_print_log_tail(live[i], LOG_LINES);
            fail_msg("loader %s: SIGTERM gave exit status %d after %" PRIu64 " ms (want 0)",
                     fts_test_loader_consumer(live[i]), code, elapsed);
        }
    }
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_two_loaders_kill9(void **state)
{
    run_chaos(state, "chaos2", 2);
}

static void test_three_loaders_kill9(void **state)
{
    run_chaos(state, "chaos3", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_two_loaders_kill9, bed_teardown),
        cmocka_unit_test_teardown(test_three_loaders_kill9, bed_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
