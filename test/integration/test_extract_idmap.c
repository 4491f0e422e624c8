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
#ifndef FTSYNC_SOURCE_DIR
#define FTSYNC_SOURCE_DIR "."
#endif
#define DEFINITION_PATH fts_testbed_index_definition()

#define ORIGINAL_FIELDS "name,short_description,developers,publishers,updated_at"
/* Documents before extract starts (the snapshot fills the map with them). */
#define INITIAL_DOCS 300
/* Operations written while extract runs and is killed, and the kills among them. */
#define OPERATIONS 3000
#define KILLS      6
#define LEASE_TTL  "2000"
/* The index id of the marker written last: extract is done when it is in the stream. */
#define MARKER_ID     9999999
#define DEFAULT_SEED  UINT64_C(20261203)
#define ENTRY_WAIT_MS 90000
#define DRAIN_WAIT_MS 120000
/* At most this many live documents (one _search page holds them all). */
#define MAX_DOCS 4000

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
    uint64_t seed;
} group_t;

static group_t group;

/* One live document of the collection: its ObjectId number and its current id. */
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
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    mongoc_init();
    const char *seed = getenv("FTSYNC_TEST_SEED");
    group.seed = seed && *seed ? strtoull(seed, NULL, 10) : DEFAULT_SEED;
    group.redis = fts_test_redis_server_start(NULL, &err);
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

/* ---- helpers ------------------------------------------------------------------------------ */

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

static void assert_stream_equals_collection(fixture_t *f, const char *label)
{
    size_t differ = fts_test_pipeline_check_final(&f->p, label);
    if (differ != 0) {
        fts_test_extract_print_log_tail(f->extract, 40);
        fail_msg("%s: replaying the stream does not give the collection (%zd documents differ)",
                 label, (ssize_t)differ);
    }
}

static long long dead_count(fixture_t *f)
{
    return fts_test_redis_xlen(f->p.redis, f->p.dead_key);
}

/* ---- the index side ----------------------------------------------------------------------- */

/* Points a load bed at the pipeline and starts one loader. */
static void start_loading(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    const char *es_url = fts_testbed_es_url();
    if (!fts_test_load_init(&f->load, FTSYNC_BINARY, DEFINITION_PATH,
                            fts_test_redis_server_url(group.redis), es_url, "idmap", &err)) {
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
                fprintf(stderr, "[idmap] index has id %s, the collection has no such document\n",
                        id);
            }
            bson_destroy(&source);
            continue;
        }
        bson_t *want_doc = bson_new_from_json((const uint8_t *)want, -1, &error);
        assert_non_null(want_doc);
        char *got_json = fts_test_bson_sorted_json(&source);
        char *want_json = fts_test_bson_sorted_json(want_doc);
        if (strcmp(got_json, want_json) != 0 && differ++ < 10) {
            fprintf(stderr, "[idmap] id %s: index %s, collection %s\n", id, got_json, want_json);
        }
        bson_free(got_json);
        bson_free(want_json);
        bson_destroy(want_doc);
        bson_destroy(&source);
    }
    size_t live = fts_test_docs_live_count(expected);
    if (indexed != live) {
        fprintf(stderr, "[idmap] index: %zu documents, collection: %zu\n", indexed, live);
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

/* ---- tests -------------------------------------------------------------------------------- */

static void test_original_configuration_with_kills(void **state)
{
    fixture_t *f = *state = fixture_new("idmap-chaos");
    rng_state = group.seed;
    fprintf(stderr, "(seed %" PRIu64 ")\n", group.seed);

    for (int i = 0; i < INITIAL_DOCS; i++) {
        f->step++;
        op_insert(f, f->next_id++);
    }
    f->extract = start_extract(f);
    /* Once this is queued the snapshot's time is fixed: every operation below is a change
     * event after it (so each delete and id change must show up as a delete entry). */
    wait_caught_up(f, MARKER_ID - 1);

    /* Kill -9 the extract process at seeded moments among the operations. */
    uint64_t kill_at[KILLS];
    for (int k = 0; k < KILLS; k++) {
        kill_at[k] = (uint64_t)(k + 1) * OPERATIONS / (KILLS + 1) +
                     rng_next() % (OPERATIONS / (KILLS + 1) / 2);
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
                f->extract = start_extract(f);
            }
            next_kill++;
        }
        random_operation(f);
        if (op % 100 == 0) {
            fts_test_sleep_ms((long)(rng_next() % 40));
        }
    }
    wait_caught_up(f, MARKER_ID);
    size_t deletes = 0;
    for (size_t i = 0; i < f->p.entries.count; i++) {
        deletes += f->p.entries.items[i].action.op == FTS_ACTION_DELETE;
    }
    fprintf(stderr,
            "(%u inserts, %u updates, %u id changes, %u replaces, %u deletes, %d kills; %zu "
            "entries, %zu of them deletes)\n",
            f->counts[0], f->counts[1], f->counts[2], f->counts[3], f->counts[4], next_kill,
            f->p.entries.count, deletes);
    /* Deletes of removed documents and of replaced ids were queued. */
    assert_true(deletes >= f->counts[2] + f->counts[4]);

    /* Every delete was named (by the map), nothing needed an operator. */
    assert_int_equal(dead_count(f), 0);
    assert_true(fts_test_extract_running(f->extract));
    assert_stream_equals_collection(f, "idmap chaos");

    /* The index built from the stream is the collection. */
    start_loading(f);
    assert_index_equals_collection(f);
}

static void test_lost_map_dead_letters_then_resnapshot_rebuilds(void **state)
{
    fixture_t *f = *state = fixture_new("idmap-lost");
    for (int i = 0; i < 20; i++) {
        f->step++;
        op_insert(f, f->next_id++);
    }
    f->extract = start_extract(f);
    wait_caught_up(f, MARKER_ID);

    /* The map is gone (a Redis without persistence, a careless operator): a delete nobody
     * can name is dead-lettered with its _id, and extract goes on. */
    char ids_key[160];
    fts_test_key(f->p.pipeline, "ids", ids_key, sizeof ids_key);
    redisReply *reply = redisCommand(f->p.redis, "DEL %s", ids_key);
    assert_non_null(reply);
    assert_int_equal(reply->integer, 1);
    freeReplyObject(reply);
    live_t victim = f->live[0];
    bson_t *filter = filter_of(victim.oid);
    bson_error_t error;
    write_ok(mongoc_collection_delete_one(f->p.coll, filter, NULL, NULL, &error), "delete", &error);
    bson_destroy(filter);
    f->live[0] = f->live[--f->live_count];
    wait_caught_up(f, MARKER_ID + 1);
    assert_int_equal(dead_count(f), 1);
    fts_test_raw_entries_t dead = {0};
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_stream_read_raw(f->p.redis, f->p.dead_key, &dead, &err));
    const char *reason = fts_test_raw_field(&dead, 0, "reason");
    assert_non_null(reason);
    char oid_hex[25];
    snprintf(oid_hex, sizeof oid_hex, "65a0%020" PRIx32, victim.oid);
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
    setenv("FTSYNC_STATE_REDIS_URL", fts_test_redis_server_url(group.redis), 1);
    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_ADMIN_ADDR", "off", 1);
    const char *reset_args[] = {"reset-token", "--clear", "--yes", NULL};
    pid_t reset = fts_test_spawn(FTSYNC_BINARY, reset_args, log_path);
    assert_true(reset > 0);
    assert_int_equal(fts_test_wait_pid(reset, 30000), 0);
    f->extract = start_extract(f);
    wait_caught_up(f, MARKER_ID + 2);
    /* An entry per live document, plus the snapshot sweep's complete-since marker. */
    reply = redisCommand(f->p.redis, "HLEN %s", ids_key);
    assert_non_null(reply);
    assert_int_equal(reply->integer, (long long)f->live_count + 1);
    freeReplyObject(reply);
    reply = redisCommand(f->p.redis, "HEXISTS %s complete-since", ids_key);
    assert_non_null(reply);
    assert_int_equal(reply->integer, 1);
    freeReplyObject(reply);
    live_t second = f->live[1];
    filter = filter_of(second.oid);
    write_ok(mongoc_collection_delete_one(f->p.coll, filter, NULL, NULL, &error), "delete", &error);
    bson_destroy(filter);
    f->live[1] = f->live[--f->live_count];
    wait_entry(f, second.id, FTS_ACTION_DELETE);
    wait_caught_up(f, MARKER_ID + 3);
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
    f->extract = start_extract(f);
    wait_caught_up(f, MARKER_ID - 1);
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
        f->extract = start_extract(f);
    }
    assert_int_equal(fts_test_wait_pid(writer, 180000), 0);
    wait_caught_up(f, MARKER_ID);
    assert_int_equal(dead_count(f), 0);
    assert_stream_equals_collection(f, "idmap workload");
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
