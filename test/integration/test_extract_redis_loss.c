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

#include "extract_harness.h"
#include "load_harness.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "sorted_bson.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif
#define DEFINITION_PATH fts_testbed_index_definition()

#define ORIGINAL_FIELDS "name,short_description,developers,publishers,updated_at"
#define INITIAL_DOCS    200
/* Operations written before and after each loss. */
#define OPERATIONS    400
#define LEASE_TTL     "2000"
#define MARKER_ID     9999990
#define DEFAULT_SEED  UINT64_C(20261203)
#define ENTRY_WAIT_MS 90000
#define DRAIN_WAIT_MS 120000
#define MAX_DOCS      4000

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
    uint64_t seed;
} group_t;

static group_t group;

typedef struct {
    uint32_t oid;
    int32_t id;
} live_t;

typedef struct {
    fts_test_pipeline_t p;
    fts_test_extract_t *extract;
    fts_test_load_t load;
    bool load_ready;
    live_t live[MAX_DOCS];
    size_t live_count;
    uint32_t next_oid;
    int32_t next_id;
    uint64_t step;
    unsigned counts[5]; /* insert, update, id change, replace, delete */
    char admin_addr[64];
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    mongoc_init();
    const char *seed = getenv("FTSYNC_TEST_SEED");
    group.seed = seed && *seed ? strtoull(seed, NULL, 10) : DEFAULT_SEED;
    /* No persistence: a restart comes back empty. */
    const char *args[] = {"--appendonly", "no", NULL};
    group.redis = fts_test_redis_server_start(args, &err);
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
    assert_non_null(f);
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_pipeline_init(&f->p, FTSYNC_BINARY, FTSYNC_WORKLOAD,
                                fts_test_mongo_double_uri(group.mongo),
                                fts_test_redis_server_url(group.redis), prefix, &err)) {
        fail_msg("cannot set the pipeline up: %s", err.message);
    }
    fts_test_pipeline_set(&f->p, "FTSYNC_ID_FIELD", "id");
    fts_test_pipeline_set(&f->p, "FTSYNC_FIELDS", ORIGINAL_FIELDS);
    fts_test_pipeline_set(&f->p, "FTSYNC_LEASE_TTL_MS", LEASE_TTL);
    fts_test_pipeline_set(&f->p, "FTSYNC_BATCH_SIZE", "50");
    snprintf(f->admin_addr, sizeof f->admin_addr, "127.0.0.1:%d", fts_test_free_port());
    fts_test_pipeline_set(&f->p, "FTSYNC_ADMIN_ADDR", f->admin_addr);
    f->next_oid = 1;
    f->next_id = 100000;
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
        free(f);
    }
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void oid_of(uint32_t n, bson_oid_t *oid)
{
    char hex[25];
    snprintf(hex, sizeof hex, "65a0%020" PRIx32, n);
    bson_oid_init_from_string(oid, hex);
}

/* A document as the original service stored it: integer id, the indexed fields, and one field
 * the index does not get. */
static bson_t *app_document(uint32_t oid_number, int32_t id, uint64_t step, bool with_oid)
{
    bson_t *doc = bson_new();
    if (with_oid) {
        bson_oid_t oid;
        oid_of(oid_number, &oid);
        BSON_APPEND_OID(doc, "_id", &oid);
    }
    char text[64];
    BSON_APPEND_INT32(doc, "id", id);
    snprintf(text, sizeof text, "App %" PRId32 " step %" PRIu64, id, step);
    BSON_APPEND_UTF8(doc, "name", text);
    snprintf(text, sizeof text, "Déscription n°%" PRIu64, step % 97);
    BSON_APPEND_UTF8(doc, "short_description", text);
    bson_t list;
    BSON_APPEND_ARRAY_BEGIN(doc, "developers", &list);
    BSON_APPEND_UTF8(&list, "0", "Valve");
    bson_append_array_end(doc, &list);
    BSON_APPEND_ARRAY_BEGIN(doc, "publishers", &list);
    BSON_APPEND_UTF8(&list, "0", step % 2 ? "Valve" : "Ubisoft");
    bson_append_array_end(doc, &list);
    BSON_APPEND_DATE_TIME(doc, "updated_at", (int64_t)1609459200000 + (int64_t)step * 1000);
    BSON_APPEND_INT32(doc, "recommendations", (int32_t)(step % 1000));
    return doc;
}

static bson_t *filter_of(uint32_t oid_number)
{
    bson_oid_t oid;
    oid_of(oid_number, &oid);
    bson_t *filter = bson_new();
    BSON_APPEND_OID(filter, "_id", &oid);
    return filter;
}

static void write_ok(bool ok, const char *what, const bson_error_t *error)
{
    if (!ok) {
        fail_msg("%s failed: %s", what, error->message);
    }
}

static void op_insert(fixture_t *f, int32_t id)
{
    assert_true(f->live_count < MAX_DOCS);
    live_t *doc = &f->live[f->live_count++];
    doc->oid = f->next_oid++;
    doc->id = id;
    bson_t *body = app_document(doc->oid, doc->id, f->step, true);
    bson_error_t error;
    write_ok(mongoc_collection_insert_one(f->p.coll, body, NULL, NULL, &error), "insert", &error);
    bson_destroy(body);
}

/* One seeded operation: insert, update of a field, update of the id, replace (keeping or
 * changing the id), delete. Ids are never reused, as a unique index on id would ensure. */
static void random_operation(fixture_t *f)
{
    f->step++;
    unsigned pick = (unsigned)(rng_next() % 100);
    if (f->live_count < 20 || pick < 30) {
        op_insert(f, f->next_id++);
        f->counts[0]++;
        return;
    }
    size_t which = (size_t)(rng_next() % f->live_count);
    live_t *doc = &f->live[which];
    bson_t *filter = filter_of(doc->oid);
    bson_error_t error;
    if (pick < 55) {
        f->counts[1]++;
        char name[64];
        snprintf(name, sizeof name, "Renamed %" PRIu64, f->step);
        bson_t *update = BCON_NEW("$set", "{", "name", BCON_UTF8(name), "}");
        write_ok(mongoc_collection_update_one(f->p.coll, filter, update, NULL, NULL, &error),
                 "update", &error);
        bson_destroy(update);
    } else if (pick < 70) {
        f->counts[2]++;
        doc->id = f->next_id++;
        bson_t *update = BCON_NEW("$set", "{", "id", BCON_INT32(doc->id), "}");
        write_ok(mongoc_collection_update_one(f->p.coll, filter, update, NULL, NULL, &error),
                 "update of the id", &error);
        bson_destroy(update);
    } else if (pick < 82) {
        f->counts[3]++;
        if (rng_next() % 2) {
            doc->id = f->next_id++;
        }
        bson_t *replacement = app_document(doc->oid, doc->id, f->step, false);
        write_ok(mongoc_collection_replace_one(f->p.coll, filter, replacement, NULL, NULL, &error),
                 "replace", &error);
        bson_destroy(replacement);
    } else {
        f->counts[4]++;
        write_ok(mongoc_collection_delete_one(f->p.coll, filter, NULL, NULL, &error), "delete",
                 &error);
        f->live[which] = f->live[--f->live_count];
    }
    bson_destroy(filter);
}

/* ---- helpers ---------------------------------------------------------------------------- */

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

static size_t wait_entry(fixture_t *f, int32_t id, int op)
{
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%d", (int)id);
    long found = fts_test_stream_wait_for(f->p.redis, f->p.stream_key, &f->p.entries, id_text, op,
                                          0, ENTRY_WAIT_MS);
    if (found < 0) {
        if (f->extract) {
            fts_test_extract_print_log_tail(f->extract, 40);
        }
        fail_msg("no entry for id %s in %s within %d ms (%zu entries read)", id_text,
                 f->p.stream_key, ENTRY_WAIT_MS, f->p.entries.count);
    }
    return (size_t)found;
}

/* Writes a marker document and waits until extract queued it: everything before it is in. */
static void wait_caught_up(fixture_t *f, int32_t marker)
{
    f->step++;
    op_insert(f, marker);
    wait_entry(f, marker, FTS_ACTION_INDEX);
}

/* ---- the index side ----------------------------------------------------------------------- */

/* Points a load bed at the pipeline and starts one loader. */
static void start_loading(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    const char *es_url = fts_testbed_es_url();
    if (!fts_test_load_init(&f->load, FTSYNC_BINARY, DEFINITION_PATH,
                            fts_test_redis_server_url(group.redis), es_url, "redisloss", &err)) {
        fail_msg("cannot set the loader up: %s", err.message);
    }
    f->load_ready = true;
    /* The loader reads the extract's pipeline. */
    snprintf(f->load.pipeline, sizeof f->load.pipeline, "%s", f->p.pipeline);
    snprintf(f->load.stream_key, sizeof f->load.stream_key, "%s", f->p.stream_key);
    snprintf(f->load.dead_key, sizeof f->load.dead_key, "%s", f->p.dead_key);
    fts_test_load_set(&f->load, "FTSYNC_PIPELINE", f->p.pipeline);
    if (!fts_test_load_start_loader(&f->load, NULL, &err)) {
        fail_msg("cannot start ftsync load: %s", err.message);
    }
}

/* The index, document by document, against the collection projected as the original service
 * did: the same ids, and each _source equal as JSON whatever the key order. */
static void assert_index_equals_collection(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_wait_drained(&f->load, DRAIN_WAIT_MS, &err)) {
        fts_test_load_print_logs(&f->load, 30);
        fail_msg("the loader did not drain the stream: %s", err.message);
    }
    fts_test_docs_t *expected = fts_test_docs_new();
    if (!fts_test_collection_state(f->p.client, f->p.db, f->p.collection, "id", ORIGINAL_FIELDS,
                                   expected, &err)) {
        fail_msg("cannot read the collection: %s", err.message);
    }
    char url[1024];
    long status = 0;
    snprintf(url, sizeof url, "%s/%s/_refresh", f->load.es_url, f->load.index);
    assert_true(fts_test_http("POST", url, "", 0, &status, NULL, &err));
    snprintf(url, sizeof url, "%s/%s/_search?size=%d", f->load.es_url, f->load.index,
             MAX_DOCS + 10);
    fts_buffer_t body = {0};
    if (!fts_test_http("GET", url, NULL, 0, &status, &body, &err) || status != 200) {
        fail_msg("search failed (%ld): %s %s", status, err.message, body.data ? body.data : "");
    }
    bson_error_t error;
    bson_t *answer = bson_new_from_json((const uint8_t *)body.data, (ssize_t)body.len, &error);
    assert_non_null(answer);
    bson_iter_t iter;
    bson_iter_t hits;
    assert_true(bson_iter_init(&iter, answer) &&
                bson_iter_find_descendant(&iter, "hits.hits", &hits) &&
                BSON_ITER_HOLDS_ARRAY(&hits));
    bson_iter_t hit;
    assert_true(bson_iter_recurse(&hits, &hit));
    size_t indexed = 0;
    size_t differ = 0;
    while (bson_iter_next(&hit)) {
        bson_iter_t field;
        bson_iter_t id_iter;
        bson_iter_t source_iter;
        assert_true(bson_iter_recurse(&hit, &field));
        bson_iter_recurse(&hit, &id_iter);
        bson_iter_recurse(&hit, &source_iter);
        assert_true(bson_iter_find(&id_iter, "_id") && BSON_ITER_HOLDS_UTF8(&id_iter));
        assert_true(bson_iter_find(&source_iter, "_source") &&
                    BSON_ITER_HOLDS_DOCUMENT(&source_iter));
        const char *id = bson_iter_utf8(&id_iter, NULL);
        uint32_t len = 0;
        const uint8_t *data = NULL;
        bson_iter_document(&source_iter, &len, &data);
        bson_t stored;
        assert_true(bson_init_static(&stored, data, len));
        /* The loader marks every document with its collection (FTSYNC_NS_FIELD, README.md
         * "Drops and sweeps"): check the mark, then compare the rest with the collection. */
        bson_iter_t ns_iter;
        char want_ns[512];
        snprintf(want_ns, sizeof want_ns, "%s.%s", f->p.db, f->p.collection);
        assert_true(bson_iter_init_find(&ns_iter, &stored, "_ftsync_ns") &&
                    BSON_ITER_HOLDS_UTF8(&ns_iter));
        assert_string_equal(bson_iter_utf8(&ns_iter, NULL), want_ns);
        bson_t source;
        bson_init(&source);
        bson_copy_to_excluding_noinit(&stored, &source, "_ftsync_ns", NULL);
        indexed++;
        const char *want = fts_test_docs_body(expected, id);
        if (!want) {
            if (differ++ < 10) {
                fprintf(stderr,
                        "[redisloss] index has id %s, the collection has no such document\n", id);
            }
            bson_destroy(&source);
            continue;
        }
        bson_t *want_doc = bson_new_from_json((const uint8_t *)want, -1, &error);
        assert_non_null(want_doc);
        char *got_json = fts_test_bson_sorted_json(&source);
        char *want_json = fts_test_bson_sorted_json(want_doc);
        if (strcmp(got_json, want_json) != 0 && differ++ < 10) {
            fprintf(stderr, "[redisloss] id %s: index %s, collection %s\n", id, got_json,
                    want_json);
        }
        bson_free(got_json);
        bson_free(want_json);
        bson_destroy(want_doc);
        bson_destroy(&source);
    }
    size_t live = fts_test_docs_live_count(expected);
    if (indexed != live) {
        fprintf(stderr, "[redisloss] index: %zu documents, collection: %zu\n", indexed, live);
        differ++;
    }
    bson_destroy(answer);
    fts_buffer_destroy(&body);
    fts_test_docs_destroy(expected);
    if (differ) {
        fts_test_load_print_logs(&f->load, 30);
        fail_msg("the index differs from the collection (%zu differences)", differ);
    }
}

/* The test's own Redis connection after a restart of the server. */
static void reconnect(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    redisFree(f->p.redis);
    f->p.redis = fts_test_redis_connect(fts_test_redis_server_url(group.redis), &err);
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
        random_operation(f);
        if (op % 50 == 0) {
            fts_test_sleep_ms((long)(rng_next() % 40));
        }
    }
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_flushall_and_restart_without_persistence_resync(void **state)
{
    fixture_t *f = *state = fixture_new("redisloss");
    rng_state = group.seed;
    fprintf(stderr, "(seed %" PRIu64 ")\n", group.seed);
    for (int i = 0; i < INITIAL_DOCS; i++) {
        f->step++;
        op_insert(f, f->next_id++);
    }
    f->extract = start_extract(f);
    wait_caught_up(f, MARKER_ID);
    start_loading(f);
    operations(f, OPERATIONS);

    /* FLUSHALL in the middle of the writes: what was queued and not loaded is gone. */
    redisReply *reply = redisCommand(f->p.redis, "FLUSHALL");
    assert_non_null(reply);
    freeReplyObject(reply);
    operations(f, OPERATIONS);
    wait_caught_up(f, MARKER_ID + 1);

    /* A restart without persistence, with more writes around it. */
    operations(f, OPERATIONS / 2);
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_redis_server_restart(group.redis, &err)) {
        fail_msg("cannot restart redis-server: %s", err.message);
    }
    reconnect(f);
    operations(f, OPERATIONS / 2);
    wait_caught_up(f, MARKER_ID + 2);

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
            f->counts[0], f->counts[1], f->counts[2], f->counts[3], f->counts[4], counted);
    assert_true(counted >= 2);
    assert_index_equals_collection(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_flushall_and_restart_without_persistence_resync, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
