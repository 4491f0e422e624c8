/*
 * test_load_replay.c - `ftsync load` replaying a stream into the test bed's search engine
 * (FTSYNC_TEST_ENGINE: OpenSearch 2.19 or Elasticsearch 1.5.2; CTest runs it on both) from the
 * test bed's redis-server, checked document by document against a model of external
 * versioning (test/support/load_harness.h).
 *
 * What is pinned (invariants 2, 3 and 5):
 *   - 100,000 entries (50,000 index, 30,000 updates of the same ids at higher versions, 15,000
 *     deletes, 5,000 re-indexes of deleted ids), written in blocks while one loader runs: the
 *     index equals the model (present or absent, `_source`, `_version`, `_count`), no entry is
 *     pending or unread, the dead-letter stream is empty, and the loader stops with status 0;
 *   - out-of-order delivery: for some ids the higher version is in the stream before the
 *     lower one (index after index, and index after delete): the higher version stays; an entry
 *     written twice changes nothing;
 *   - a document the mapping refuses (both definitions map updated_at as a date; the value
 *     cannot be parsed as a date nor as a number of milliseconds) goes to the dead-letter
 *     stream with the engine's reason (MapperParsingException from ES 1.x, whose per-item error
 *     is a string; mapper_parsing_exception, the error object's type, from OpenSearch), its
 *     entry_id and the other
 *     fields of the contract, while the rest of the same batch (written before the loader
 *     started, so read and sent together) is indexed and acknowledged;
 *   - a bad setting (FTSYNC_CLAIM_IDLE_MS below its minimum) ends the loader with status 2
 *     and a message naming the variable, before anything is created;
 *   - a document type that does not fit the engine does too: FTSYNC_ES_DOC_TYPE set on
 *     OpenSearch 2.19 (which has no types: every action would be refused), or unset on
 *     Elasticsearch 1.5 (which needs one in every action); the loader tells which from GET /
 *     (version.distribution and version.number).
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
#include <inttypes.h>

#include "action.h"
#include "extract_harness.h"
#include "load_fixture.h"
#include "load_harness.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_SOURCE_DIR
#define FTSYNC_SOURCE_DIR "."
#endif

/* The replay: ids, and the ranges updated, deleted and re-indexed (ids are "d<n>"). */
#define REPLAY_IDS          50000
#define REPLAY_UPDATED_END  30000 /* d0 .. d29999 updated */
#define REPLAY_DELETED_FROM 20000 /* d20000 .. d34999 deleted */
#define REPLAY_DELETED_END  35000
#define REPLAY_REVIVED_FROM 30000 /* d30000 .. d34999 indexed again after the delete */
#define REPLAY_BLOCK        1000  /* ids per block; each block's four kinds are written together */
#define REPLAY_ENTRIES      100000
/* How long a drain may take (an ASan loader, the engine on two cores). */
#define DRAIN_TIMEOUT_MS 180000
#define STOP_TIMEOUT_MS  15000
/* Lines of each loader's log printed when a test fails. */
#define LOG_LINES 40

/* Cluster time 2026-11-23T... as extract would write it; every version is this plus a step. */
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

static void body_for(char *out, size_t size, const char *id, int revision)
{
    snprintf(out, size,
             "{\"name\":\"App %s\",\"short_description\":\"revision %d of %s, running "
             "fast\",\"developers\":[\"Studio %d\",\"Indie\"],\"publishers\":\"Pub "
             "%d\",\"updated_at\":\"2026-11-23T10:%02d:%02d.000Z\",\"extra\":{\"revision\":%d,"
             "\"tags\":[\"a\",\"b\"],\"score\":1.5}}",
             id, revision, id, revision, revision * 7, revision % 60, (revision * 13) % 60,
             revision);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_replay_100k(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "replay100k");
    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, NULL);
    uint64_t started = fts_test_monotonic_ms();

    char id[32];
    char body[512];
    for (int block = 0; block < REPLAY_IDS / REPLAY_BLOCK; block++) {
        int first = block * REPLAY_BLOCK;
        int end = first + REPLAY_BLOCK;
        for (int n = first; n < end; n++) {
            snprintf(id, sizeof id, "d%d", n);
            body_for(body, sizeof body, id, 1);
            fts_test_load_index(t, id, base_version + 1, body);
        }
        for (int n = first; n < end && n < REPLAY_UPDATED_END; n++) {
            snprintf(id, sizeof id, "d%d", n);
            body_for(body, sizeof body, id, 2);
            fts_test_load_index(t, id, base_version + 2, body);
        }
        for (int n = first; n < end; n++) {
            if (n >= REPLAY_DELETED_FROM && n < REPLAY_DELETED_END) {
                snprintf(id, sizeof id, "d%d", n);
                fts_test_load_delete(t, id, base_version + 3);
            }
        }
        for (int n = first; n < end; n++) {
            if (n >= REPLAY_REVIVED_FROM && n < REPLAY_DELETED_END) {
                snprintf(id, sizeof id, "d%d", n);
                body_for(body, sizeof body, id, 4);
                fts_test_load_index(t, id, base_version + 4, body);
            }
        }
        if (block % 5 == 4) {
            fts_test_load_flush_or_fail(t); /* the loader reads while the rest is written */
        }
    }
    fts_test_load_flush_or_fail(t);
    assert_int_equal(fts_test_load_written_count(t), REPLAY_ENTRIES);
    fprintf(stderr, "[replay100k] %d entries written in %.1f s; model: %zu ids, %zu present\n",
            REPLAY_ENTRIES, (double)(fts_test_monotonic_ms() - started) / 1000.0,
            fts_test_load_model_ids(t), fts_test_load_model_present(t));
    /* d0..19999 at revision 2, d30000..34999 at revision 4, d35000..49999 at revision 1. */
    assert_int_equal(fts_test_load_model_present(t), 40000);

    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fprintf(stderr, "[replay100k] loaded in %.1f s after the start of the writes\n",
            (double)(fts_test_monotonic_ms() - started) / 1000.0);
    fts_test_load_expect_index_equals_model(t, "replay100k");
    fts_test_load_expect_dead_count(t, 0);
    fts_test_group_state_t group;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_load_group_state(t, &group, &err));
    assert_int_equal(group.pending, 0);
    assert_int_equal(group.length, REPLAY_ENTRIES);
    assert_string_equal(group.last_delivered, group.last_generated);
    fts_test_load_expect_clean_stop(t, loader, STOP_TIMEOUT_MS);
}

static void test_out_of_order_keeps_higher_version(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "outoforder");
    char id[32];
    char body[512];
    /* Written before the loader starts, so that both versions of an id can land in one bulk
     * request as well as in consecutive ones. */
    for (int n = 0; n < 200; n++) {
        snprintf(id, sizeof id, "hi-first-%d", n);
        body_for(body, sizeof body, id, 20);
        fts_test_load_index(t, id, base_version + 20, body);
    }
    for (int n = 0; n < 200; n++) {
        snprintf(id, sizeof id, "hi-first-%d", n);
        body_for(body, sizeof body, id, 10);
        fts_test_load_index(t, id, base_version + 10, body);
    }
    /* A delete at a higher version before an index at a lower one: the tombstone wins. */
    for (int n = 0; n < 100; n++) {
        snprintf(id, sizeof id, "del-first-%d", n);
        fts_test_load_delete(t, id, base_version + 30);
        body_for(body, sizeof body, id, 25);
        fts_test_load_index(t, id, base_version + 25, body);
    }
    /* The same entry twice (a replay after a crash) changes nothing. */
    for (int n = 0; n < 100; n++) {
        snprintf(id, sizeof id, "twice-%d", n);
        body_for(body, sizeof body, id, 7);
        fts_test_load_index(t, id, base_version + 7, body);
        fts_test_load_index(t, id, base_version + 7, body);
    }
    fts_test_load_flush_or_fail(t);
    assert_int_equal(fts_test_load_model_present(t), 300);

    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_index_equals_model(t, "outoforder");
    fts_test_load_expect_dead_count(t, 0);

    /* Later, in a second pass, stale versions of everything arrive again. */
    for (int n = 0; n < 200; n++) {
        snprintf(id, sizeof id, "hi-first-%d", n);
        body_for(body, sizeof body, id, 11);
        fts_test_load_index(t, id, base_version + 11, body);
    }
    for (int n = 0; n < 100; n++) {
        snprintf(id, sizeof id, "del-first-%d", n);
        body_for(body, sizeof body, id, 29);
        fts_test_load_index(t, id, base_version + 29, body);
    }
    fts_test_load_flush_or_fail(t);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_index_equals_model(t, "outoforder-stale-again");
    fts_test_load_expect_dead_count(t, 0);
    fts_test_load_expect_clean_stop(t, loader, STOP_TIMEOUT_MS);
}

static void test_mapping_rejection_dead_letters_one_item(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "rejected");
    /* One bulk: wait long enough for every entry of the first read to be in it. */
    fts_test_load_set(t, "FTSYNC_BULK_MAX_WAIT_MS", "1000");
    char id[32];
    char body[512];
    size_t bad_seq = 0;
    for (int n = 0; n < 40; n++) {
        snprintf(id, sizeof id, "good-%d", n);
        body_for(body, sizeof body, id, 1);
        fts_test_load_index(t, id, base_version + 1, body);
        if (n == 20) {
            /* updated_at is a date: this is neither a date nor a number of milliseconds. */
            bad_seq = fts_test_load_index_rejected(
                t, "bad-1", base_version + 1,
                "{\"name\":\"Broken\",\"updated_at\":\"not a date, not a number\"}");
            /* A delete of a document that never existed: 404, which counts as done. */
            fts_test_load_delete(t, "never-there", base_version + 1);
        }
    }
    fts_test_load_flush_or_fail(t);
    const char *bad_stream_id = fts_test_load_stream_id(t, bad_seq);

    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, NULL);
    fts_test_load_wait_drained_or_fail(t, DRAIN_TIMEOUT_MS);
    fts_test_load_expect_index_equals_model(t, "rejected");
    fts_test_load_expect_dead_count(t, 1);

    fts_test_raw_entries_t dead = {0};
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_stream_read_raw(t->redis, t->dead_key, &dead, &err)) {
        fts_test_load_fail_with_logs(t, "reading the dead-letter stream", &err);
    }
    assert_int_equal(dead.count, 1);
    /* The original fields first, in their order, then what the loader adds. */
    static const char *const order[] = {"op",     "id",       "version",  "ns",         "ts",
                                        "origin", "body",     "entry_id", "deliveries", "reason",
                                        "stage",  "consumer", "failed_at"};
    char **fields = dead.fields[0];
    size_t field_count = 0;
    while (fields[field_count]) {
        field_count++;
    }
    assert_int_equal(field_count, 2 * (sizeof order / sizeof order[0]));
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (strcmp(fields[2 * i], order[i]) != 0) {
            fail_msg("dead letter field %zu is \"%s\", expected \"%s\"", i, fields[2 * i],
                     order[i]);
        }
    }
    assert_string_equal(fts_test_raw_field(&dead, 0, "op"), "index");
    assert_string_equal(fts_test_raw_field(&dead, 0, "id"), "bad-1");
    char version[32];
    snprintf(version, sizeof version, "%" PRIu64, base_version + 1);
    assert_string_equal(fts_test_raw_field(&dead, 0, "version"), version);
    assert_string_equal(fts_test_raw_field(&dead, 0, "entry_id"), bad_stream_id);
    assert_string_equal(fts_test_raw_field(&dead, 0, "stage"), "load");
    assert_string_equal(fts_test_raw_field(&dead, 0, "consumer"), fts_test_loader_consumer(loader));
    /* ES 1.x's per-item error is a string naming the Java exception; OpenSearch's is an object
     * whose type the judge quotes. */
    assert_contains(fts_test_raw_field(&dead, 0, "reason"),
                    fts_testbed_engine() == FTS_TEST_ENGINE_ES1 ? "MapperParsingException"
                                                                : "mapper_parsing_exception");
    assert_contains(fts_test_raw_field(&dead, 0, "body"), "not a date, not a number");
    uint64_t deliveries = 0;
    const char *deliveries_text = fts_test_raw_field(&dead, 0, "deliveries");
    assert_true(fts_decimal_parse(deliveries_text, strlen(deliveries_text), 1000, &deliveries));
    assert_true(deliveries >= 1);
    uint64_t failed_at = 0;
    const char *failed_at_text = fts_test_raw_field(&dead, 0, "failed_at");
    assert_true(fts_decimal_parse(failed_at_text, strlen(failed_at_text), UINT64_MAX, &failed_at));
    assert_true(failed_at > UINT64_C(1600000000000)); /* milliseconds since the epoch */
    fprintf(stderr, "[rejected] dead letter %s: reason=%s deliveries=%s\n", dead.ids[0],
            fts_test_raw_field(&dead, 0, "reason"), deliveries_text);
    fts_test_raw_entries_cleanup(&dead);
    fts_test_load_expect_clean_stop(t, loader, STOP_TIMEOUT_MS);
}

static void test_bad_setting_exits_2_naming_it(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "badsetting");
    fts_test_load_set(t, "FTSYNC_CLAIM_IDLE_MS", "500"); /* below the minimum, 1000 */
    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, NULL);
    int code = fts_test_loader_wait(loader, STOP_TIMEOUT_MS);
    char *log = fts_test_loader_log(loader);
    if (code != 2 || !strstr(log, "FTSYNC_CLAIM_IDLE_MS")) {
        fts_test_loader_print_log_tail(loader, LOG_LINES);
        bson_free(log);
        fail_msg("FTSYNC_CLAIM_IDLE_MS=500: exit status %d (want 2) and a message naming the "
                 "setting (log above)",
                 code);
    }
    bson_free(log);
    /* Nothing was started: no group, no index. */
    fts_test_group_state_t group;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_load_group_state(t, &group, &err));
    assert_false(group.exists);
    char url[512];
    snprintf(url, sizeof url, "%s/%s", t->es_url, t->index);
    long status = 0;
    assert_true(fts_test_http("HEAD", url, NULL, 0, &status, NULL, &err));
    assert_int_equal(status, 404);
}

static void test_doc_type_must_fit_the_engine(void **state)
{
    fts_test_load_t *t =
        fts_test_load_fixture_new(state, FTSYNC_BINARY, redis_url, es_url, "doctype");
    bool es1 = fts_testbed_engine() == FTS_TEST_ENGINE_ES1;
    /* The opposite of what the engine needs; an empty value counts as unset. */
    fts_test_load_set(t, "FTSYNC_ES_DOC_TYPE", es1 ? "" : "doc");
    fts_test_loader_t *loader = fts_test_load_start_loader_or_fail(t, NULL);
    int code = fts_test_loader_wait(loader, STOP_TIMEOUT_MS);
    char *log = fts_test_loader_log(loader);
    const char *want = es1 ? "needs a document type" : "has no document types";
    if (code != 2 || !strstr(log, "FTSYNC_ES_DOC_TYPE") || !strstr(log, want)) {
        fts_test_loader_print_log_tail(loader, LOG_LINES);
        free(log);
        fail_msg("FTSYNC_ES_DOC_TYPE %s on %s: exit status %d (want 2) and a message saying "
                 "\"%s\" (log above)",
                 es1 ? "unset" : "set", fts_testbed_engine_name(), code, want);
    }
    free(log);
    char url[512];
    snprintf(url, sizeof url, "%s/%s", t->es_url, t->index);
    long status = 0;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_http("HEAD", url, NULL, 0, &status, NULL, &err));
    assert_int_equal(status, 404); /* refused before the index was created */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_replay_100k, fts_test_load_fixture_teardown),
        cmocka_unit_test_teardown(test_out_of_order_keeps_higher_version,
                                  fts_test_load_fixture_teardown),
        cmocka_unit_test_teardown(test_mapping_rejection_dead_letters_one_item,
                                  fts_test_load_fixture_teardown),
        cmocka_unit_test_teardown(test_bad_setting_exits_2_naming_it,
                                  fts_test_load_fixture_teardown),
        cmocka_unit_test_teardown(test_doc_type_must_fit_the_engine,
                                  fts_test_load_fixture_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
