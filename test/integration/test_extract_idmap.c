/*
 * test_extract_idmap.c - the original service's configuration end to end (issue 11, section
 * 1): FTSYNC_ID_FIELD=id, FTSYNC_FIELDS=name,short_description,developers,publishers,
 * updated_at, documents whose `_id` is an ObjectId and whose integer `id` is the index id,
 * against the MongoDB replica-set double (no pre-images), a private redis-server and the test
 * bed's search engine (FTSYNC_TEST_ES_URL).
 *
 * What is pinned (each failed before the id map: the first delete stopped extract with exit 3,
 * and an id change left the old index document for ever):
 *   - inserts, updates, id changes (update and replace) and deletes, with kill -9 of the extract
 *     process (4 times) and of its transform worker alone (twice) at seeded random moments in
 *     between: replaying the stream gives exactly the
 *     collection, document by document, nothing is dead-lettered, and the index the loader
 *     builds from it equals the collection document by document (_id and _source);
 *   - the workload generator's documents with --object-ids (Steam-shaped, `_id` an ObjectId
 *     made from `id`), inserts, updates, replaces and deletes, kill -9 of extract twice while
 *     it writes: the stream replays to the collection, nothing dead-lettered;
 *   - the id map lost (the hash deleted by hand): a delete nobody can name is dead-lettered with
 *     a reason naming its _id, counted, and extract goes on; `reset-token --clear` (a
 *     re-snapshot) rebuilds the map, after which deletes are followed again.
 * The seed of the operations and kill moments is FTSYNC_TEST_SEED (default below).
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
/* Documents before extract starts (the snapshot fills the map with them). */
#define INITIAL_DOCS 300
/* Operations written while extract runs and is killed, and the kills among them. */
#define OPERATIONS 3000
#define KILLS      6
#define LEASE_TTL  "2000"
/* The index id of the marker written last: extract is done when it is in the stream. */
#define MARKER_ID    9999999
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
    fts_test_rng_t rng; /* the seeded operations and kill moments */
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    return fts_test_extract_bed_start(&bed, FTSYNC_BINARY, FTSYNC_WORKLOAD, NULL, DEFAULT_SEED)
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

static long long dead_count(fixture_t *f)
{
    return fts_test_redis_xlen(f->p.redis, f->p.dead_key);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_original_configuration_with_kills(void **state)
{
    fixture_t *f = *state = fixture_new("idmap-chaos");
    f->rng.state = bed.seed;
    fprintf(stderr, "(seed %" PRIu64 ")\n", bed.seed);

    for (int i = 0; i < INITIAL_DOCS; i++) {
        fts_test_apps_insert(&f->apps, f->apps.next_id++);
    }
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    /* Once this is queued the snapshot's time is fixed: every operation below is a change
     * event after it (so each delete and id change must show up as a delete entry). */
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID - 1);

    /* Kill -9 the extract process at seeded moments among the operations. */
    uint64_t kill_at[KILLS];
    for (int k = 0; k < KILLS; k++) {
        kill_at[k] = (uint64_t)(k + 1) * OPERATIONS / (KILLS + 1) +
                     fts_test_rng_next(&f->rng) % (OPERATIONS / (KILLS + 1) / 2);
    }
    int next_kill = 0;
    for (uint64_t op = 0; op < OPERATIONS; op++) {
        if (next_kill < KILLS && op == kill_at[next_kill]) {
            if (next_kill % 3 == 2) {
                /* The worker alone, perhaps mid-append: the parent restarts it from the saved
                 * position. */
                pid_t worker = fts_test_extract_worker_pid(f->extract, 10000);
                assert_true(worker > 0);
                assert_true(fts_test_kill_pid(worker, SIGKILL));
            } else {
                assert_true(fts_test_extract_kill(f->extract, SIGKILL));
                fts_test_extract_destroy(f->extract);
                f->extract = fts_test_pipeline_start_or_fail(&f->p);
            }
            next_kill++;
        }
        fts_test_apps_random_change(&f->apps, &f->rng);
        if (op % 100 == 0) {
            fts_test_sleep_ms((long)(fts_test_rng_next(&f->rng) % 40));
        }
    }
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID);
    size_t deletes = 0;
    for (size_t i = 0; i < f->p.entries.count; i++) {
        deletes += f->p.entries.items[i].action.op == FTS_ACTION_DELETE;
    }
    fprintf(stderr,
            "(%u inserts, %u updates, %u id changes, %u replaces, %u deletes, %d kills; %zu "
            "entries, %zu of them deletes)\n",
            f->apps.counts[FTS_TEST_APPS_INSERT], f->apps.counts[FTS_TEST_APPS_UPDATE],
            f->apps.counts[FTS_TEST_APPS_ID_CHANGE], f->apps.counts[FTS_TEST_APPS_REPLACE],
            f->apps.counts[FTS_TEST_APPS_DELETE], next_kill, f->p.entries.count, deletes);
    /* Deletes of removed documents and of replaced ids were queued. */
    assert_true(deletes >=
                f->apps.counts[FTS_TEST_APPS_ID_CHANGE] + f->apps.counts[FTS_TEST_APPS_DELETE]);

    /* Every delete was named (by the map), nothing needed an operator. */
    assert_int_equal(dead_count(f), 0);
    assert_true(fts_test_extract_running(f->extract));
    fts_test_pipeline_assert_replay_equals_collection(&f->p, f->extract, "idmap chaos");

    /* The index built from the stream is the collection. */
    fts_test_apps_start_loading(&f->apps, &f->load, &f->load_ready, FTSYNC_BINARY,
                                fts_test_redis_server_url(bed.redis), "idmap");
    fts_test_apps_assert_index_equals_collection(&f->apps, &f->load, "idmap");
}

static void test_lost_map_dead_letters_then_resnapshot_rebuilds(void **state)
{
    fixture_t *f = *state = fixture_new("idmap-lost");
    for (int i = 0; i < 20; i++) {
        fts_test_apps_insert(&f->apps, f->apps.next_id++);
    }
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID);

    /* The map is gone (a Redis without persistence, a careless operator): a delete nobody
     * can name is dead-lettered with its _id, and extract goes on. */
    char ids_key[160];
    fts_test_key(f->p.pipeline, "ids", ids_key, sizeof ids_key);
    redisReply *reply = redisCommand(f->p.redis, "DEL %s", ids_key);
    assert_non_null(reply);
    assert_int_equal(reply->integer, 1);
    freeReplyObject(reply);
    fts_test_app_t victim = f->apps.live[0];
    fts_test_apps_delete_at(&f->apps, 0);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID + 1);
    assert_int_equal(dead_count(f), 1);
    fts_test_raw_entries_t dead = {0};
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_stream_read_raw(f->p.redis, f->p.dead_key, &dead, &err));
    const char *reason = fts_test_raw_field(&dead, 0, "reason");
    assert_non_null(reason);
    char oid_hex[25];
    fts_test_apps_oid_hex(victim.oid, oid_hex);
    assert_contains(reason, oid_hex);
    assert_contains(reason, "id map does not know");
    assert_string_equal(fts_test_raw_field(&dead, 0, "stage"), "transform");
    fts_test_raw_entries_cleanup(&dead);
    assert_true(fts_test_extract_running(f->extract));
    char *log = fts_test_extract_log(f->extract);
    assert_contains(log, "unknown_delete_total=1");
    free(log);

    /* A re-snapshot rebuilds the map: stop, reset-token --clear, start; deletes work again. */
    int status = 0;
    assert_true(fts_test_extract_stop(f->extract, 15000, &status));
    fts_test_extract_destroy(f->extract);
    f->extract = NULL;
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/reset.log", f->p.dir);
    char pipeline_arg[160];
    snprintf(pipeline_arg, sizeof pipeline_arg, "%s", f->p.pipeline);
    setenv("FTSYNC_PIPELINE", pipeline_arg, 1);
    setenv("FTSYNC_STATE_REDIS_URL", fts_test_redis_server_url(bed.redis), 1);
    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_ADMIN_ADDR", "off", 1);
    const char *reset_args[] = {"reset-token", "--clear", "--yes", NULL};
    pid_t reset = fts_test_spawn(FTSYNC_BINARY, reset_args, log_path);
    assert_true(reset > 0);
    assert_int_equal(fts_test_wait_pid(reset, 30000), 0);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID + 2);
    /* An entry per live document, plus the snapshot sweep's complete-since marker. */
    reply = redisCommand(f->p.redis, "HLEN %s", ids_key);
    assert_non_null(reply);
    assert_int_equal(reply->integer, (long long)f->apps.live_count + 1);
    freeReplyObject(reply);
    reply = redisCommand(f->p.redis, "HEXISTS %s complete-since", ids_key);
    assert_non_null(reply);
    assert_int_equal(reply->integer, 1);
    freeReplyObject(reply);
    fts_test_app_t second = f->apps.live[1];
    fts_test_apps_delete_at(&f->apps, 1);
    fts_test_apps_wait_entry(&f->apps, f->extract, second.id, FTS_ACTION_DELETE);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID + 3);
    assert_int_equal(dead_count(f), 1);
}

/* The workload generator's Steam-shaped documents with ObjectId _ids (--object-ids), deletes
 * among the changes, kill -9 of extract twice while it writes. */
static void test_workload_with_object_ids(void **state)
{
    fixture_t *f = *state = fixture_new("idmap-workload");
    const char *initial[] = {"--count", "500", "--mix",        "insert=100",
                             "--seed",  "7",   "--object-ids", NULL};
    assert_int_equal(fts_test_pipeline_workload_run(&f->p, initial, 120000), 0);
    f->extract = fts_test_pipeline_start_or_fail(&f->p);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID - 1);
    const char *changes[] = {
        "--count", "3000", "--mix",        "insert=30,update=35,replace=15,delete=20",
        "--seed",  "8",    "--id-start",   "100000",
        "--rate",  "1500", "--object-ids", NULL};
    pid_t writer = fts_test_pipeline_workload_spawn(&f->p, changes);
    assert_true(writer > 0);
    for (int k = 0; k < 2; k++) {
        fts_test_sleep_ms(600);
        assert_true(fts_test_extract_kill(f->extract, SIGKILL));
        fts_test_extract_destroy(f->extract);
        f->extract = fts_test_pipeline_start_or_fail(&f->p);
    }
    assert_int_equal(fts_test_wait_pid(writer, 180000), 0);
    fts_test_apps_wait_caught_up(&f->apps, f->extract, MARKER_ID);
    assert_int_equal(dead_count(f), 0);
    fts_test_pipeline_assert_replay_equals_collection(&f->p, f->extract, "idmap workload");
    /* The documents really have ObjectId _ids and integer ids that differ from them. */
    bson_t *query = bson_new();
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(f->p.coll, query, opts, NULL);
    const bson_t *doc = NULL;
    assert_true(mongoc_cursor_next(cursor, &doc));
    bson_iter_t iter;
    assert_true(bson_iter_init_find(&iter, doc, "_id") && BSON_ITER_HOLDS_OID(&iter));
    assert_true(bson_iter_init_find(&iter, doc, "id") && BSON_ITER_HOLDS_INT32(&iter));
    mongoc_cursor_destroy(cursor);
    bson_destroy(opts);
    bson_destroy(query);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_original_configuration_with_kills, teardown),
        cmocka_unit_test_teardown(test_lost_map_dead_letters_then_resnapshot_rebuilds, teardown),
        cmocka_unit_test_teardown(test_workload_with_object_ids, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
