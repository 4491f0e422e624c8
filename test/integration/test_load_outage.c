/*
 * test_load_outage.c - `ftsync load` when a server goes away mid-run, and when it is stopped
 * with requests in flight.
 *
 * Runs on the engine FTSYNC_TEST_ENGINE names (CTest runs it on OpenSearch 2.19 and on
 * Elasticsearch 1.5.2).
 *
 * What is pinned (invariants 2 and 5 of README.md, Architecture; README.md "Logs": repeated
 * errors are rate-limited):
 *   - (a) a private node of the engine (test/support/es_server.h) stopped for 30 s while
 *     entries keep being written, then started again on the same port and data: nothing is
 *     lost (the index equals the model), the backlog drains, and the loader logs at most 60
 *     lines during the outage (the count is printed). Index and update entries only, on both
 *     engines: Elasticsearch 1.x keeps delete tombstones in memory only, so a node restart
 *     forgets them and a stale retry could legitimately undo a delete (the engine's behaviour,
 *     not the loader's); the test writes the same stream on both engines so that their
 *     results compare;
 *   - (b) a private redis-server (AOF on) stopped for 3 s, while the loader holds delivered
 *     and unacknowledged entries of a 30,000-entry backlog, and started again: the loader
 *     reconnects and finishes without loss, also loading 10,000 entries written afterwards;
 *   - (c) SIGTERM while entries are delivered and not yet acknowledged: exit status 0 within
 *     FTSYNC_STOP_TIMEOUT_MS (5 s) plus 3 s; a new loader with the same consumer name (a
 *     restarted pod) then finishes: everything acknowledged, the index equals the model.
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
#include <inttypes.h>
#include <signal.h>

#include "action.h"
#include "es_server.h"
#include "load_fixture.h"
#include "load_harness.h"
#include "redis_server.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_SOURCE_DIR
#define FTSYNC_SOURCE_DIR "."
#endif

#define TESTBED_SCRIPT FTSYNC_SOURCE_DIR "/test/tools/testbed.sh"

/* (a): entries before the outage, the outage, entries written per second during it, and the
 * bound on the lines the loader logs meanwhile. */
#define ES_WARMUP_ENTRIES    10000
#define ES_OUTAGE_MS         30000
#define ES_OUTAGE_PER_SECOND 1000
#define ES_OUTAGE_MAX_LINES  60
#define ES_IDS               8000
/* (b): entries before the Redis restart (a third as many after), and how long Redis stays
 * down. */
#define REDIS_ENTRIES 30000
#define REDIS_DOWN_MS 3000
/* (c): entries queued before the loader starts, the stop timeout and the slack allowed. */
#define TERM_ENTRIES      30000
#define TERM_STOP_MS      5000
#define TERM_SLACK_MS     3000
#define TERM_PENDING_WAIT 60000
/* How long a test waits for the loader to take its first entries. */
#define BUSY_WAIT_MS 60000

#define DRAIN_TIMEOUT_MS 180000
#define STOP_TIMEOUT_MS  15000
#define LOG_LINES        40

static const char *redis_url;
static const char *es_url;
static uint64_t base_version;

typedef struct {
    fts_test_load_t load;
    fts_test_es_server_t *es;
    fts_test_redis_server_t *redis;
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    es_url = fts_testbed_es_url();
    base_version = fts_version_from_timestamp(1795432000u, 0);
    return 0;
}

static int fixture_setup(void **state)
{
    *state = bson_malloc0(sizeof(fixture_t));
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture_t *f = *state;
    fts_test_load_cleanup(&f->load);
    fts_test_es_server_destroy(f->es);
    fts_test_redis_server_destroy(f->redis);
    bson_free(f);
    return 0;
}

static void expect_final_state(fts_test_load_t *t, const char *label)
{
    fts_test_load_expect_index_equals_model(t, label);
    long long dead = fts_test_load_dead_count(t);
    if (dead != 0) {
        fts_test_load_print_logs(t, LOG_LINES);
        fail_msg("%s: %lld entries were dead-lettered; none should be", label, dead);
    }
    fts_test_group_state_t group;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_load_group_state(t, &group, &err));
    assert_int_equal(group.pending, 0);
    assert_string_equal(group.last_delivered, group.last_generated);
}

/* count entries over ids "<prefix><n>" (n below ids), each an index at the next version. */
static void write_entries(fts_test_load_t *t, const char *prefix, size_t count, size_t ids,
                          size_t *seq)
{
    char id[48];
    char body[256];
    for (size_t i = 0; i < count; i++) {
        size_t n = *seq % ids;
        ++*seq;
        snprintf(id, sizeof id, "%s%zu", prefix, n);
        snprintf(body, sizeof body,
                 "{\"name\":\"Outage %zu\",\"short_description\":\"write %zu\",\"publishers\":"
                 "\"P\",\"updated_at\":\"2026-11-23T12:00:00.000Z\",\"seq\":%zu}",
                 n, *seq, *seq);
        fts_test_load_index(t, id, base_version + *seq, body);
    }
    fts_test_load_flush_or_fail(t);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_elasticsearch_outage(void **state)
{
    fixture_t *f = *state;
    fts_error_t err;
    fts_error_clear(&err);
    f->es = fts_test_es_server_start(TESTBED_SCRIPT, &err);
    if (!f->es) {
        fail_msg("cannot start a private Elasticsearch: %s", err.message);
    }
    fts_test_load_t *t = &f->load;
    fts_test_load_init_or_fail(t, FTSYNC_BINARY, redis_url, fts_test_es_server_url(f->es),
                               "esoutage");
    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, NULL);

    size_t seq = 0;
    write_entries(t, "e", ES_WARMUP_ENTRIES, ES_IDS, &seq);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    /* In flight when the node goes: a backlog written just before. */
    write_entries(t, "e", ES_WARMUP_ENTRIES / 2, ES_IDS, &seq);

    long log_before = fts_test_loader_log_size(loader);
    uint64_t outage_started = fts_test_monotonic_ms();
    if (!fts_test_es_server_stop(f->es, &err)) {
        fail_msg("cannot stop the private Elasticsearch: %s", err.message);
    }
    fprintf(stderr, "[esoutage] Elasticsearch stopped after %zu entries\n", seq);
    while (fts_test_monotonic_ms() - outage_started < ES_OUTAGE_MS) {
        write_entries(t, "e", ES_OUTAGE_PER_SECOND / 10, ES_IDS, &seq);
        fts_test_sleep_ms(100);
        if (!fts_test_load_check_loaders(t, &err)) {
            fts_test_load_fail_with_logs(t, "the loader died during the outage", &err);
        }
    }
    long log_after = fts_test_loader_log_size(loader);
    uint64_t outage_ms = fts_test_monotonic_ms() - outage_started;
    if (!fts_test_es_server_restart(f->es, &err)) {
        fail_msg("cannot start the private Elasticsearch again: %s", err.message);
    }
    fprintf(stderr, "[esoutage] Elasticsearch back after %.1f s down; %zu entries written\n",
            (double)outage_ms / 1000.0, seq);

    char *log = fts_test_loader_log(loader);
    size_t warnings = 0;
    size_t errors = 0;
    size_t lines =
        fts_test_count_lines(log, (size_t)log_before, (size_t)log_after, "level=warn", &warnings);
    fts_test_count_lines(log, (size_t)log_before, (size_t)log_after, "level=error", &errors);
    fprintf(stderr,
            "[esoutage] the loader logged %zu lines during the %.1f s outage (%zu warn, %zu "
            "error; at most %d allowed)\n",
            lines, (double)outage_ms / 1000.0, warnings, errors, ES_OUTAGE_MAX_LINES);
    if (lines > ES_OUTAGE_MAX_LINES) {
        fprintf(stderr, "---- what the loader logged during the outage ----\n%.*s---- end ----\n",
                (int)(log_after - log_before), log + log_before);
        bson_free(log);
        fail_msg("%zu lines logged during a %.1f s outage; repeated failures must be "
                 "rate-limited (at most %d lines)",
                 lines, (double)outage_ms / 1000.0, ES_OUTAGE_MAX_LINES);
    }
    bson_free(log);
    assert_true(lines > 0); /* the outage was noticed and said so */

    uint64_t drain_started = fts_test_monotonic_ms();
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fprintf(stderr, "[esoutage] backlog drained %.1f s after Elasticsearch came back\n",
            (double)(fts_test_monotonic_ms() - drain_started) / 1000.0);
    expect_final_state(t, "esoutage");
    fts_test_load_expect_clean_stop(t, loader, STOP_TIMEOUT_MS);
}

static void test_redis_restart(void **state)
{
    fixture_t *f = *state;
    fts_error_t err;
    fts_error_clear(&err);
    f->redis = fts_test_redis_server_start(NULL, &err);
    if (!f->redis) {
        fail_msg("cannot start a private redis-server: %s", err.message);
    }
    fts_test_load_t *t = &f->load;
    fts_test_load_init_or_fail(t, FTSYNC_BINARY, fts_test_redis_server_url(f->redis), es_url,
                               "redisrestart");
    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, NULL);

    size_t seq = 0;
    write_entries(t, "r", REDIS_ENTRIES, REDIS_ENTRIES / 2, &seq);
    /* Stop Redis while the loader is busy: entries delivered and not yet acknowledged. */
    fts_test_group_state_t group = {0};
    uint64_t deadline = fts_test_monotonic_ms() + BUSY_WAIT_MS;
    while (!(group.exists && group.pending > 0) && fts_test_monotonic_ms() < deadline) {
        if (!fts_test_load_group_state(t, &group, &err)) {
            fts_test_load_fail_with_logs(t, "reading the group", &err);
        }
        fts_test_sleep_ms(2);
    }
    if (group.pending == 0) {
        fts_test_load_fail_with_logs(t, "the loader took no entry within 60 s", NULL);
    }
    fprintf(stderr, "[redisrestart] stopping redis-server: %lld pending, last delivered %s of %s\n",
            group.pending, group.last_delivered, group.last_generated);
    if (!fts_test_redis_server_stop(f->redis, &err)) {
        fail_msg("cannot stop the private redis-server: %s", err.message);
    }
    fts_test_sleep_ms(REDIS_DOWN_MS);
    if (!fts_test_redis_server_restart(f->redis, &err)) {
        fail_msg("cannot start the private redis-server again: %s", err.message);
    }
    if (!fts_test_load_reconnect(t, &err)) {
        fail_msg("cannot reconnect to the restarted redis-server: %s", err.message);
    }
    fts_test_load_group_state(t, &group, &err);
    fprintf(stderr, "[redisrestart] redis-server back: %lld entries kept, %lld pending\n",
            group.length, group.pending);
    assert_int_equal(group.length, (long long)REDIS_ENTRIES); /* the AOF kept every entry */
    write_entries(t, "r", REDIS_ENTRIES / 3, REDIS_ENTRIES / 2, &seq);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    expect_final_state(t, "redisrestart");
    if (!fts_test_load_check_loaders(t, &err)) {
        fts_test_load_fail_with_logs(t, "the loader died", &err);
    }
    fts_test_load_expect_clean_stop(t, loader, STOP_TIMEOUT_MS);
}

static void test_sigterm_with_requests_in_flight(void **state)
{
    fixture_t *f = *state;
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_load_t *t = &f->load;
    fts_test_load_init_or_fail(t, FTSYNC_BINARY, redis_url, es_url, "sigterm");
    char stop_timeout[32];
    snprintf(stop_timeout, sizeof stop_timeout, "%d", TERM_STOP_MS);
    fts_test_load_set(t, "FTSYNC_STOP_TIMEOUT_MS", stop_timeout);
    fts_test_load_set(t, "FTSYNC_BULK_MAX_ACTIONS", "200");

    size_t seq = 0;
    write_entries(t, "s", TERM_ENTRIES, TERM_ENTRIES / 3, &seq);
    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, "sigterm-pod-0");

    /* SIGTERM once entries are delivered and not yet acknowledged (bulks on their way). */
    fts_test_group_state_t group = {0};
    uint64_t deadline = fts_test_monotonic_ms() + TERM_PENDING_WAIT;
    while (fts_test_monotonic_ms() < deadline) {
        if (!fts_test_load_group_state(t, &group, &err)) {
            fts_test_load_fail_with_logs(t, "reading the group", &err);
        }
        if (group.exists && group.pending > 0 && strcmp(group.last_delivered, "0-0") != 0) {
            break;
        }
        if (!fts_test_load_check_loaders(t, &err)) {
            fts_test_load_fail_with_logs(t, "the loader died", &err);
        }
        fts_test_sleep_ms(5);
    }
    if (group.pending == 0) {
        fts_test_load_fail_with_logs(t, "the loader took no entry within 60 s", NULL);
    }
    fts_test_sleep_ms(300); /* well into the work */
    fts_test_load_group_state(t, &group, &err);
    fprintf(stderr, "[sigterm] SIGTERM with %lld entries pending (delivered, not acknowledged)\n",
            group.pending);
    uint64_t elapsed = 0;
    int code = fts_test_load_stop(t, loader, TERM_STOP_MS + TERM_SLACK_MS, &elapsed);
    fprintf(stderr, "[sigterm] the loader exited with status %d %" PRIu64 " ms after SIGTERM\n",
            code, elapsed);
    if (code != 0) {
        fts_test_loader_print_log_tail(loader, LOG_LINES);
        fail_msg("exit status %d after %" PRIu64 " ms (want 0 within %d ms)", code, elapsed,
                 TERM_STOP_MS + TERM_SLACK_MS);
    }
    fts_test_load_group_state(t, &group, &err);
    fprintf(stderr, "[sigterm] after the stop: %lld pending, last delivered %s of %s\n",
            group.pending, group.last_delivered, group.last_generated);

    fts_test_loader_t *again = fts_test_load_start_loader_or_fail(t, "sigterm-pod-0");
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    expect_final_state(t, "sigterm");
    fts_test_load_expect_clean_stop(t, again, STOP_TIMEOUT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_elasticsearch_outage, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_redis_restart, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_with_requests_in_flight, fixture_setup,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
