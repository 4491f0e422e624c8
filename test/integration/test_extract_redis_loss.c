/*
 * test_extract_redis_loss.c - Redis losing its data under a running pipeline (issue 13, item 1,
 * the extract side; README.md, Reliability): a private redis-server without persistence, the
 * MongoDB double, extract and one loader against the test bed's search engine.
 *
 * What is pinned (before the epoch marker, the running extractor wrote its remembered token
 * back into the emptied Redis within about 1.5 s and went on: the changes queued and not yet
 * loaded were gone for good, silently, and the index kept documents deleted meanwhile):
 *   - FLUSHALL while changes are being written, then later a restart of the server without
 *     persistence, each followed by more changes: extract logs "Redis lost its data", counts
 *     ftsync_queue_data_lost_total{what="stream"} in /metrics, resyncs (snapshot and sweep),
 *     and in the end the index equals the collection document by document.
 * The seed of the operations is FTSYNC_TEST_SEED (default below).
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

#include "apps_collection.h"
#include "extract_fixture.h"
#include "extract_harness.h"
#include "load_harness.h"
#include "redis_server.h"
#include "test_rng.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif
#define INITIAL_DOCS 200
/* Operations written before and after each loss. */
#define OPERATIONS   400
#define LEASE_TTL    "2000"
#define MARKER_ID    9999990
#define DEFAULT_SEED UINT64_C(20261203)
/* The first id of the documents the test writes. */
#define FIRST_ID 100000

static fts_test_extract_bed_t bed;

typedef struct {
    fts_test_pipeline_t p;
    fts_test_extract_t *extract;
    fts_test_load_t load;
    bool load_ready;
    fts_test_apps_t apps;
    fts_test_rng_t rng; /* the seeded operations and pauses */
    char admin_addr[64];
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    /* No persistence: a restart comes back empty. */
    const char *args[] = {"--appendonly", "no", NULL};
    return fts_test_extract_bed_start(&bed, FTSYNC_BINARY, FTSYNC_WORKLOAD, args, DEFAULT_SEED)
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
    fts_test_pipeline_set(&f->p, "FTSYNC_ID_FIELD", "id");
    fts_test_pipeline_set(&f->p, "FTSYNC_FIELDS", FTS_TEST_APPS_FIELDS);
    fts_test_pipeline_set(&f->p, "FTSYNC_LEASE_TTL_MS", LEASE_TTL);
    fts_test_pipeline_set(&f->p, "FTSYNC_BATCH_SIZE", "50");
    snprintf(f->admin_addr, sizeof f->admin_addr, "127.0.0.1:%d", fts_test_free_port());
    fts_test_pipeline_set(&f->p, "FTSYNC_ADMIN_ADDR", f->admin_addr);
    fts_test_apps_init(&f->apps, &f->p, FIRST_ID);
    return f;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f) {
        fts_test_extract_destroy(f->extract);
        if (f->load_ready) {
            fts_test_load_cleanup(&f->load);
        }
        fts_test_pipeline_cleanup(&f->p);
        bson_free(f);
    }
    return 0;
}

/* The test's own Redis connection after a restart of the server. */
static void reconnect(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    redisFree(f->p.redis);
    f->p.redis = fts_test_redis_connect(fts_test_redis_server_url(bed.redis), &err);
    if (!f->p.redis) {
        fail_msg("cannot reconnect to Redis: %s", err.message);
    }
    assert_true(fts_test_load_reconnect(&f->load, &err));
}

/* The value of ftsync_queue_data_lost_total{what="stream"} on extract's /metrics (-1: none). */
static long long data_lost_counter(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    char url[128];
    snprintf(url, sizeof url, "http://%s/metrics", f->admin_addr);
    long status = 0;
    fts_buffer_t body = {0};
    long long value = -1;
    if (fts_test_http("GET", url, NULL, 0, &status, &body, &err) && status == 200 && body.data) {
        const char *line = strstr(body.data, "ftsync_queue_data_lost_total{what=\"stream\"} ");
        if (line) {
            value =
                strtoll(line + strlen("ftsync_queue_data_lost_total{what=\"stream\"} "), NULL, 10);
        }
    }
    fts_buffer_destroy(&body);
    return value;
}

static void operations(fixture_t *f, unsigned count)
{
    for (unsigned op = 0; op < count; op++) {
        fts_test_apps_random_change(&f->apps, &f->rng);
        if (op % 50 == 0) {
            fts_test_sleep_ms((long)(fts_test_rng_next(&f->rng) % 40));
        }
    }
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_flushall_and_restart_without_persistence_resync(void **state)
{
    fixture_t *f = *state = fixture_new("redisloss");
    f->rng.state = bed.seed;
    fprintf(stderr, "(seed %" PRIu64 ")\n", bed.seed);
    for (int i = 0; i < INITIAL_DOCS; i++) {
        fts_test_apps_insert(&f->apps, f->apps.next_id++);
    }
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID);
    fts_test_apps_start_loading(&f->apps, &f->load, &f->load_ready, FTSYNC_BINARY,
                                fts_test_redis_server_url(bed.redis), "redisloss");
    operations(f, OPERATIONS);

    /* FLUSHALL in the middle of the writes: what was queued and not loaded is gone. */
    redisReply *reply = redisCommand(f->p.redis, "FLUSHALL");
    assert_non_null(reply);
    freeReplyObject(reply);
    operations(f, OPERATIONS);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID + 1);

    /* A restart without persistence, with more writes around it. */
    operations(f, OPERATIONS / 2);
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_redis_server_restart(bed.redis, &err)) {
        fail_msg("cannot restart redis-server: %s", err.message);
    }
    reconnect(f);
    operations(f, OPERATIONS / 2);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID + 2);

    assert_true(fts_test_extract_running(f->extract));
    char *log = fts_test_extract_log(f->extract);
    assert_non_null(log);
    bool logged = strstr(log, "Redis lost its data") != NULL;
    free(log);
    if (!logged) {
        fts_test_extract_print_log_tail(f->extract, 60);
        fail_msg("extract did not log that Redis lost its data");
    }
    long long counted = data_lost_counter(f);
    fprintf(stderr,
            "(%u inserts, %u updates, %u id changes, %u replaces, %u deletes; "
            "data_lost_total{stream}=%lld)\n",
            f->apps.counts[FTS_TEST_APPS_INSERT], f->apps.counts[FTS_TEST_APPS_UPDATE],
            f->apps.counts[FTS_TEST_APPS_ID_CHANGE], f->apps.counts[FTS_TEST_APPS_REPLACE],
            f->apps.counts[FTS_TEST_APPS_DELETE], counted);
    assert_true(counted >= 2);
    fts_test_apps_assert_index_equals_collection(&f->apps, &f->load, "redisloss");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_flushall_and_restart_without_persistence_resync, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
