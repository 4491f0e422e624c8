/*
 * test_txn_versions.c - version scheme 2 end to end (core/action.h): changes of one document
 * inside one MongoDB transaction reach the index in their order, also past January 2038 and
 * with several loaders; and `ftsync load` refuses an index written with another scheme.
 *
 * A transaction's events all carry the commit's clusterTime. Under scheme 1 (seconds << 32 |
 * increment) an insert and a delete of one document in one transaction got equal versions, the
 * delete lost with a 409 and the document stayed; past 2038 the versions did not fit at all.
 * Here extract follows the MongoDB double (with its clock at the wall clock, or started in
 * 2039), transactions insert+delete, insert+update and delete+reinsert the same documents,
 * then 1, 2 or 3 loaders drain the stream into Elasticsearch (FTSYNC_TEST_ES_URL) and the index
 * must hold exactly what the collection holds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "assertions.h"

#include <bson/bson.h>
#include <inttypes.h>
#include <mongoc/mongoc.h>

#include "action.h"
#include "extract_harness.h"
#include "load_harness.h"
#include "mongo_double.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif
#ifndef FTSYNC_SOURCE_DIR
#define FTSYNC_SOURCE_DIR "."
#endif

#define DEFINITION_PATH fts_testbed_index_definition()

/* Documents of each kind (a_: deleted and inserted again, n_: inserted and deleted, u_:
 * inserted and updated), one transaction per i. */
#define DOCS 30
/* Actions extract queues: the snapshot's a_ documents, then six per transaction. */
#define EXPECTED_ENTRIES (DOCS + 6 * DOCS)
#define WAIT_MS          120000
#define DRAIN_TIMEOUT_MS 180000
#define STOP_TIMEOUT_MS  15000
#define LOG_LINES        40
/* 2039-09-18: past January 2038, where scheme 1's versions no longer fit a signed long. */
#define CLOCK_PAST_2038 "2200000000"

static const char *redis_url;
static const char *es_url;

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_pipeline_t pipeline;
    bool pipeline_ready;
    fts_test_extract_t *extract;
    fts_test_load_t load;
    bool load_ready;
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    es_url = fts_testbed_es_url();
    mongoc_init();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    mongoc_cleanup();
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f) {
        fts_test_extract_destroy(f->extract);
        if (f->load_ready) {
            fts_test_load_cleanup(&f->load);
        }
        if (f->pipeline_ready) {
            fts_test_pipeline_cleanup(&f->pipeline);
        }
        fts_test_mongo_double_destroy(f->mongo);
        free(f);
    }
    return 0;
}

static void fail_with_logs(fixture_t *f, const char *what, const fts_error_t *err)
{
    if (f->extract) {
        fts_test_extract_print_log_tail(f->extract, LOG_LINES);
    }
    if (f->load_ready) {
        fts_test_load_print_logs(&f->load, LOG_LINES);
    }
    if (f->mongo) {
        fts_test_mongo_double_print_log_tail(f->mongo, LOG_LINES);
    }
    fail_msg("%s: %s", what, err ? err->message : "");
}

/* A load bed (index, consumer group settings) named name. */
static fixture_t *fixture_new(void **state, const char *name)
{
    fixture_t *f = calloc(1, sizeof *f);
    *state = f;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_init(&f->load, FTSYNC_BINARY, DEFINITION_PATH, redis_url, es_url, name,
                            &err)) {
        fail_msg("cannot set up the load bed: %s", err.message);
    }
    f->load_ready = true;
    return f;
}

static void wait_for_entries(fixture_t *f, long long count)
{
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    long long have = 0;
    while ((have = fts_test_redis_xlen(f->load.redis, f->load.stream_key)) < count) {
        if (fts_test_monotonic_ms() > deadline || !fts_test_extract_running(f->extract)) {
            fts_error_t err;
            fts_error_clear(&err);
            fts_error_set(&err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_TIMEOUT,
                          "the stream has %lld entries, %lld expected", have, count);
            fail_with_logs(f, "waiting for extract", &err);
        }
        usleep(100 * 1000);
    }
}

static void insert_doc(fixture_t *f, mongoc_client_session_t *session, const char *id,
                       const char *name)
{
    bson_t opts = BSON_INITIALIZER;
    bson_error_t error;
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "name", BCON_UTF8(name));
    if (session && !mongoc_client_session_append(session, &opts, &error)) {
        fail_msg("session append: %s", error.message);
    }
    if (!mongoc_collection_insert_one(f->pipeline.coll, doc, &opts, NULL, &error)) {
        fail_msg("insert %s: %s", id, error.message);
    }
    bson_destroy(doc);
    bson_destroy(&opts);
}

static void delete_doc(fixture_t *f, mongoc_client_session_t *session, const char *id)
{
    bson_t opts = BSON_INITIALIZER;
    bson_error_t error;
    bson_t *selector = BCON_NEW("_id", BCON_UTF8(id));
    assert_true(mongoc_client_session_append(session, &opts, &error));
    if (!mongoc_collection_delete_one(f->pipeline.coll, selector, &opts, NULL, &error)) {
        fail_msg("delete %s: %s", id, error.message);
    }
    bson_destroy(selector);
    bson_destroy(&opts);
}

static void update_doc(fixture_t *f, mongoc_client_session_t *session, const char *id,
                       const char *name)
{
    bson_t opts = BSON_INITIALIZER;
    bson_error_t error;
    bson_t *selector = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *update = BCON_NEW("$set", "{", "name", BCON_UTF8(name), "}");
    assert_true(mongoc_client_session_append(session, &opts, &error));
    if (!mongoc_collection_update_one(f->pipeline.coll, selector, update, &opts, NULL, &error)) {
        fail_msg("update %s: %s", id, error.message);
    }
    bson_destroy(update);
    bson_destroy(selector);
    bson_destroy(&opts);
}

/* One transaction per i: insert+delete n_i, insert+update u_i, delete+reinsert a_i. */
static void run_transactions(fixture_t *f)
{
    bson_error_t error;
    for (int i = 0; i < DOCS; i++) {
        char n_id[16], u_id[16], a_id[16];
        snprintf(n_id, sizeof n_id, "n_%d", i);
        snprintf(u_id, sizeof u_id, "u_%d", i);
        snprintf(a_id, sizeof a_id, "a_%d", i);
        mongoc_client_session_t *session =
            mongoc_client_start_session(f->pipeline.client, NULL, &error);
        if (!session) {
            fail_msg("start session: %s", error.message);
        }
        if (!mongoc_client_session_start_transaction(session, NULL, &error)) {
            fail_msg("start transaction: %s", error.message);
        }
        insert_doc(f, session, n_id, "short-lived");
        delete_doc(f, session, n_id);
        insert_doc(f, session, u_id, "first");
        update_doc(f, session, u_id, "second");
        delete_doc(f, session, a_id);
        insert_doc(f, session, a_id, "again");
        if (!mongoc_client_session_commit_transaction(session, NULL, &error)) {
            fail_msg("commit: %s", error.message);
        }
        mongoc_client_session_destroy(session);
    }
}

/* Every document of the index: id -> name, as one search answer (DOCS * 3 at most). */
static void check_index(fixture_t *f, const char *label)
{
    char url[512];
    fts_error_t err;
    fts_error_clear(&err);
    long status = 0;
    fts_buffer_t body = {0};
    snprintf(url, sizeof url, "%s/%s/_refresh", es_url, f->load.index);
    assert_true(fts_test_http("POST", url, NULL, 0, &status, NULL, &err));
    snprintf(url, sizeof url, "%s/%s/_search", es_url, f->load.index);
    const char *query = "{\"size\":1000,\"version\":true,\"query\":{\"match_all\":{}}}";
    if (!fts_test_http("POST", url, query, strlen(query), &status, &body, &err) || status != 200) {
        fail_with_logs(f, "searching the index", &err);
    }
    bson_t reply;
    bson_error_t error;
    assert_true(bson_init_from_json(&reply, body.data, (ssize_t)body.len, &error));
    bool seen_u[DOCS] = {0}, seen_a[DOCS] = {0};
    size_t wrong = 0, total = 0;
    bson_iter_t hits, hit;
    assert_true(bson_iter_init(&hits, &reply) &&
                bson_iter_find_descendant(&hits, "hits.hits", &hits) &&
                bson_iter_recurse(&hits, &hit));
    while (bson_iter_next(&hit)) {
        bson_iter_t field;
        char id[64] = "", name[64] = "";
        if (bson_iter_recurse(&hit, &field) && bson_iter_find(&field, "_id")) {
            snprintf(id, sizeof id, "%s", bson_iter_utf8(&field, NULL));
        }
        if (bson_iter_recurse(&hit, &field) &&
            bson_iter_find_descendant(&field, "_source.name", &field)) {
            snprintf(name, sizeof name, "%s", bson_iter_utf8(&field, NULL));
        }
        total++;
        int i = atoi(id + 2);
        bool ok = i >= 0 && i < DOCS &&
                  ((id[0] == 'u' && strcmp(name, "second") == 0 && !seen_u[i]) ||
                   (id[0] == 'a' && strcmp(name, "again") == 0 && !seen_a[i]));
        if (ok) {
            (id[0] == 'u' ? seen_u : seen_a)[i] = true;
        } else {
            if (wrong++ < 10) {
                fprintf(stderr, "[%s] unexpected document %s (name \"%s\")\n", label, id, name);
            }
        }
    }
    for (int i = 0; i < DOCS; i++) {
        if (!seen_u[i] || !seen_a[i]) {
            if (wrong++ < 10) {
                fprintf(stderr, "[%s] missing %s_%d\n", label, seen_u[i] ? "a" : "u", i);
            }
        }
    }
    bson_destroy(&reply);
    fts_buffer_destroy(&body);
    if (wrong) {
        fts_test_load_print_logs(&f->load, LOG_LINES);
        fail_msg("[%s] the index differs from the collection in %zu documents (%zu in the index, "
                 "%d expected)",
                 label, wrong, total, 2 * DOCS);
    }
}

static void transactions_end_right(void **state, const char *name, int loaders, bool past_2038)
{
    fixture_t *f = fixture_new(state, name);
    fts_error_t err;
    fts_error_clear(&err);
    const char *clock_args[] = {"--clock-start", CLOCK_PAST_2038, NULL};
    f->mongo = fts_test_mongo_double_start(past_2038 ? clock_args : NULL, &err);
    if (!f->mongo) {
        fail_msg("cannot start the MongoDB double: %s", err.message);
    }
    if (!fts_test_pipeline_init(&f->pipeline, FTSYNC_BINARY, FTSYNC_WORKLOAD,
                                fts_test_mongo_double_uri(f->mongo), redis_url, name, &err)) {
        fail_msg("cannot set the pipeline up: %s", err.message);
    }
    f->pipeline_ready = true;
    /* Extract queues where the loaders of the bed read. */
    fts_test_pipeline_set(&f->pipeline, "FTSYNC_PIPELINE", f->load.pipeline);

    bson_error_t error;
    for (int i = 0; i < DOCS; i++) {
        char id[16];
        snprintf(id, sizeof id, "a_%d", i);
        insert_doc(f, NULL, id, "before");
    }
    (void)error;
    f->extract = fts_test_pipeline_start(&f->pipeline, &err);
    if (!f->extract) {
        fail_msg("cannot start extract: %s", err.message);
    }
    wait_for_entries(f, DOCS);
    run_transactions(f);
    wait_for_entries(f, EXPECTED_ENTRIES);

    for (int n = 0; n < loaders; n++) {
        if (!fts_test_load_start_loader(&f->load, NULL, &err)) {
            fail_with_logs(f, "cannot start ftsync load", &err);
        }
    }
    if (!fts_test_load_wait_drained(&f->load, DRAIN_TIMEOUT_MS, &err)) {
        fail_with_logs(f, "waiting for the loaders to drain the stream", &err);
    }
    check_index(f, name);
    assert_int_equal(fts_test_load_dead_count(&f->load), 0);
}

static void test_transactions_one_loader(void **state)
{
    transactions_end_right(state, "txn1", 1, false);
}

static void test_transactions_two_loaders_past_2038(void **state)
{
    transactions_end_right(state, "txn2", 2, true);
}

static void test_transactions_three_loaders_past_2038(void **state)
{
    transactions_end_right(state, "txn3", 3, true);
}

/* ---- load refuses an index written with another version scheme --------------------------- */

static void put_index(fixture_t *f, const char *body)
{
    char url[512];
    long status = 0;
    fts_error_t err;
    fts_error_clear(&err);
    fts_buffer_t answer = {0};
    snprintf(url, sizeof url, "%s/%s", es_url, f->load.index);
    assert_true(fts_test_http("PUT", url, body, strlen(body), &status, &answer, &err));
    if (status != 200) {
        fail_msg("creating index %s: HTTP %ld %.*s", f->load.index, status, (int)answer.len,
                 answer.data ? answer.data : "");
    }
    fts_buffer_destroy(&answer);
    snprintf(url, sizeof url, "%s/_cluster/health/%s?wait_for_status=yellow&timeout=30s", es_url,
             f->load.index);
    assert_true(fts_test_http("GET", url, NULL, 0, &status, NULL, &err));
}

/* Starts a loader and expects exit 2 with a message naming needle. */
static void expect_refusal(fixture_t *f, const char *needle)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_loader_t *loader = fts_test_load_start_loader(&f->load, NULL, &err);
    if (!loader) {
        fail_with_logs(f, "cannot start ftsync load", &err);
    }
    int code = fts_test_loader_wait(loader, STOP_TIMEOUT_MS);
    char *log = fts_test_loader_log(loader);
    if (code != 2 || !strstr(log, needle)) {
        fts_test_loader_print_log_tail(loader, LOG_LINES);
        bson_free(log);
        fail_msg("exit status %d (want 2) and a message naming \"%s\" (log above)", code, needle);
    }
    bson_free(log);
}

static void test_load_refuses_index_marked_with_another_scheme(void **state)
{
    fixture_t *f = fixture_new(state, "scheme1mark");
    /* Typed mappings and `string` on Elasticsearch 1.5, typeless and `text` on OpenSearch. */
    if (fts_testbed_doc_type()) {
        put_index(f, "{\"settings\":{\"number_of_shards\":1,\"number_of_replicas\":0},"
                     "\"mappings\":{\"doc\":{\"_meta\":{\"ftsync\":{\"version_scheme\":1}},"
                     "\"properties\":{\"name\":{\"type\":\"string\"}}}}}");
    } else {
        put_index(f, "{\"settings\":{\"number_of_shards\":1,\"number_of_replicas\":0},"
                     "\"mappings\":{\"_meta\":{\"ftsync\":{\"version_scheme\":1}},"
                     "\"properties\":{\"name\":{\"type\":\"text\"}}}}");
    }
    expect_refusal(f, "version scheme 1");
}

static void test_load_refuses_unmarked_index_with_scheme_1_versions(void **state)
{
    fixture_t *f = fixture_new(state, "scheme1docs");
    put_index(f, "{\"settings\":{\"number_of_shards\":1,\"number_of_replicas\":0}}");
    /* What an older ftsync wrote: cluster time 2026-11-23 as seconds << 32. */
    char url[512];
    long status = 0;
    fts_error_t err;
    fts_error_clear(&err);
    snprintf(url, sizeof url, "%s/%s/%s/old?version=7711304542322688001&version_type=external",
             es_url, f->load.index, fts_testbed_doc_type() ? fts_testbed_doc_type() : "_doc");
    const char *doc = "{\"name\":\"Notes\"}";
    assert_true(fts_test_http("PUT", url, doc, strlen(doc), &status, NULL, &err));
    assert_true(status == 200 || status == 201);
    snprintf(url, sizeof url, "%s/%s/_refresh", es_url, f->load.index);
    assert_true(fts_test_http("POST", url, NULL, 0, &status, NULL, &err));
    expect_refusal(f, "version scheme 1");
}

/* A new index gets the mark; an empty unmarked one is used, with a warning. */
static void test_load_marks_the_index_it_creates(void **state)
{
    fixture_t *f = fixture_new(state, "schememark");
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_loader_t *loader = fts_test_load_start_loader(&f->load, NULL, &err);
    if (!loader) {
        fail_with_logs(f, "cannot start ftsync load", &err);
    }
    char url[512];
    long status = 0;
    fts_buffer_t body = {0};
    snprintf(url, sizeof url, "%s/%s/_mapping", es_url, f->load.index);
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    while (!fts_test_http("GET", url, NULL, 0, &status, &body, &err) || status != 200) {
        assert_true(fts_test_monotonic_ms() < deadline);
        usleep(100 * 1000);
    }
    fts_buffer_append_char(&body, '\0');
    assert_contains(body.data, "\"version_scheme\":2");
    fts_buffer_destroy(&body);
    assert_true(fts_test_loader_running(loader));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_load_refuses_index_marked_with_another_scheme, teardown),
        cmocka_unit_test_teardown(test_load_refuses_unmarked_index_with_scheme_1_versions,
                                  teardown),
        cmocka_unit_test_teardown(test_load_marks_the_index_it_creates, teardown),
        cmocka_unit_test_teardown(test_transactions_one_loader, teardown),
        cmocka_unit_test_teardown(test_transactions_two_loaders_past_2038, teardown),
        cmocka_unit_test_teardown(test_transactions_three_loaders_past_2038, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
