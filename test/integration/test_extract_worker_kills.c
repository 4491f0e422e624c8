/*
 * test_extract_worker_kills.c - a transform worker killed from outside is not a crash on an
 * event (issue 13, item 3), against the MongoDB double and a private redis-server.
 *
 * With FTSYNC_WORKER_CRASH_LIMIT=1 one crash on an event dead-letters it. A kill -9 (or any signal
 * sent to it) of the worker by someone else says nothing about the event it was on, so:
 *   - the worker is killed with SIGKILL three times and with SIGHUP once (it ignores SIGTERM),
 * documents are inserted after each kill: every one is queued, nothing is dead-lettered;
 *   - the poison plugin (which aborts the worker on poison: true, a death the worker causes
 *     itself) still has its document dead-lettered at the first crash, and the documents after
 *     it are queued.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/wait.h>

#include <mongoc/mongoc.h>

#include "extract_fixture.h"
#include "extract_harness.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif
#ifndef FTSYNC_TEST_PLUGIN_POISON
#define FTSYNC_TEST_PLUGIN_POISON "poison.so"
#endif

#define ENTRY_WAIT_MS 60000
#define STOP_WAIT_MS  15000
#define MARKER_START  1

static fts_test_extract_bed_t bed;

typedef struct {
    fts_test_pipeline_t p;
    fts_test_extract_t *extract;
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

static fixture_t *fixture_new(const char *prefix)
{
    fixture_t *f = bson_malloc0(sizeof *f);
    fts_test_extract_bed_pipeline(&bed, &f->p, NULL, prefix);
    fts_test_pipeline_set(&f->p, "FTSYNC_WORKER_CRASH_LIMIT", "1");
    fts_test_pipeline_set(&f->p, "FTSYNC_TRANSFORM_PLUGIN", FTSYNC_TEST_PLUGIN_POISON);
    return f;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f) {
        fts_test_extract_destroy(f->extract);
        fts_test_pipeline_cleanup(&f->p);
        bson_free(f);
    }
    return 0;
}

/* True when an index entry for id is in the entries read so far. */
static bool queued(fixture_t *f, int32_t id)
{
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%d", (int)id);
    for (size_t i = 0; i < f->p.entries.count; i++) {
        const fts_test_entry_t *entry = &f->p.entries.items[i];
        if (!entry->sweep && entry->action.op == FTS_ACTION_INDEX &&
            strcmp(fts_test_entry_id(entry), id_text) == 0) {
            return true;
        }
    }
    return false;
}

/* Kills the current worker with sig and waits for its successor. */
static void kill_worker(fixture_t *f, int sig)
{
    pid_t worker = fts_test_extract_worker_pid(f->extract, 10000);
    if (worker <= 0) {
        fts_test_extract_print_log_tail(f->extract, 40);
        fail_msg("the extract process has no worker");
    }
    assert_true(fts_test_kill_pid(worker, sig));
    for (int i = 0; i < 300; i++) {
        pid_t next = fts_test_extract_worker_pid(f->extract, 100);
        if (next > 0 && next != worker) {
            return;
        }
        fts_test_sleep_ms(50);
    }
    fts_test_extract_print_log_tail(f->extract, 40);
    fail_msg("no new worker after killing %d", (int)worker);
}

static void test_kills_from_outside_dead_letter_nothing(void **state)
{
    fixture_t *f = *state = fixture_new("xkillout");
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_pipeline_insert(&f->p, MARKER_START, "marker", 30000, &err));
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, MARKER_START, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_SNAPSHOT, ENTRY_WAIT_MS);

    const int signals[] = {SIGKILL, SIGKILL, SIGHUP, SIGKILL};
    int32_t id = 100;
    for (size_t k = 0; k < sizeof signals / sizeof signals[0]; k++) {
        kill_worker(f, signals[k]);
        for (int i = 0; i < 3; i++) {
            fts_test_pipeline_insert_doc(&f->p, id++, false);
        }
        fts_test_pipeline_wait_entry_number(&f->p, f->extract, id - 1, FTS_ACTION_INDEX,
                                            FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    }
    for (int32_t check = 100; check < id; check++) {
        if (!queued(f, check)) {
            fail_msg("_id %d is not queued", (int)check);
        }
    }
    long long dead = fts_test_redis_xlen(f->p.redis, f->p.dead_key);
    if (dead != 0) {
        fts_test_extract_print_log_tail(f->extract, 40);
        fail_msg("%lld dead letters after kills from outside, expected none", dead);
    }

    /* A death the worker causes itself still counts: the poison document goes at limit 1. */
    fts_test_pipeline_insert_doc(&f->p, 500, true);
    fts_test_pipeline_insert_doc(&f->p, 501, false);
    fts_test_pipeline_wait_entry_number(&f->p, f->extract, 501, FTS_ACTION_INDEX,
                                        FTS_ACTION_FROM_CHANGE, ENTRY_WAIT_MS);
    assert_false(queued(f, 500));
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 1);
    fts_test_extract_stop_clean(&f->extract, STOP_WAIT_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kills_from_outside_dead_letter_nothing, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
