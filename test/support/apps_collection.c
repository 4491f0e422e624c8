/*
 * apps_collection.c - seeded writes to a collection shaped like the original service's, and
 * the comparison of the index built from its stream with it (see apps_collection.h).
 *
 * The writes are the same for the same seed and step: documents take their content from the
 * step counter and every choice comes from the caller's generator, so a failing run repeats.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "apps_collection.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "extract_fixture.h"
#include "sorted_bson.h"
#include "testbed.h"

void fts_test_apps_init(fts_test_apps_t *apps, fts_test_pipeline_t *p, int32_t first_id)
{
    memset(apps, 0, sizeof *apps);
    apps->p = p;
    apps->next_oid = 1;
    apps->next_id = first_id;
}

void fts_test_apps_oid_hex(uint32_t n, char out[25])
{
    snprintf(out, 25, "65a0%020" PRIx32, n);
}

static void oid_of(uint32_t n, bson_oid_t *oid)
{
    char hex[25];
    fts_test_apps_oid_hex(n, hex);
    bson_oid_init_from_string(oid, hex);
}

/* A document as the original service stored it: integer id, the indexed fields, and one field
 * the index does not get. Never NULL: allocation failure aborts. */
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

/* {_id: the ObjectId of counter oid_number}. Never NULL: allocation failure aborts. */
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

/* Inserts a document with id at the current step (the caller counted the step). */
static void insert_at_step(fts_test_apps_t *apps, int32_t id)
{
    assert_true(apps->live_count < FTS_TEST_APPS_MAX);
    fts_test_app_t *doc = &apps->live[apps->live_count++];
    doc->oid = apps->next_oid++;
    doc->id = id;
    bson_t *body = app_document(doc->oid, doc->id, apps->step, true);
    bson_error_t error;
    write_ok(mongoc_collection_insert_one(apps->p->coll, body, NULL, NULL, &error), "insert",
             &error);
    bson_destroy(body);
}

void fts_test_apps_insert(fts_test_apps_t *apps, int32_t id)
{
    apps->step++;
    insert_at_step(apps, id);
}

void fts_test_apps_delete_at(fts_test_apps_t *apps, size_t which)
{
    assert_true(which < apps->live_count);
    bson_t *filter = filter_of(apps->live[which].oid);
    bson_error_t error;
    write_ok(mongoc_collection_delete_one(apps->p->coll, filter, NULL, NULL, &error), "delete",
             &error);
    bson_destroy(filter);
    apps->live[which] = apps->live[--apps->live_count];
}

void fts_test_apps_random_change(fts_test_apps_t *apps, fts_test_rng_t *rng)
{
    apps->step++;
    unsigned pick = (unsigned)(fts_test_rng_next(rng) % 100);
    if (apps->live_count < 20 || pick < 30) {
        insert_at_step(apps, apps->next_id++);
        apps->counts[FTS_TEST_APPS_INSERT]++;
        return;
    }
    size_t which = (size_t)(fts_test_rng_next(rng) % apps->live_count);
    fts_test_app_t *doc = &apps->live[which];
    if (pick >= 82) {
        apps->counts[FTS_TEST_APPS_DELETE]++;
        fts_test_apps_delete_at(apps, which);
        return;
    }
    bson_t *filter = filter_of(doc->oid);
    bson_error_t error;
    if (pick < 55) {
        apps->counts[FTS_TEST_APPS_UPDATE]++;
        char name[64];
        snprintf(name, sizeof name, "Renamed %" PRIu64, apps->step);
        bson_t *update = BCON_NEW("$set", "{", "name", BCON_UTF8(name), "}");
        write_ok(mongoc_collection_update_one(apps->p->coll, filter, update, NULL, NULL, &error),
                 "update", &error);
        bson_destroy(update);
    } else if (pick < 70) {
        apps->counts[FTS_TEST_APPS_ID_CHANGE]++;
        doc->id = apps->next_id++;
        bson_t *update = BCON_NEW("$set", "{", "id", BCON_INT32(doc->id), "}");
        write_ok(mongoc_collection_update_one(apps->p->coll, filter, update, NULL, NULL, &error),
                 "update of the id", &error);
        bson_destroy(update);
    } else {
        apps->counts[FTS_TEST_APPS_REPLACE]++;
        if (fts_test_rng_next(rng) % 2) {
            doc->id = apps->next_id++;
        }
        bson_t *replacement = app_document(doc->oid, doc->id, apps->step, false);
        write_ok(
            mongoc_collection_replace_one(apps->p->coll, filter, replacement, NULL, NULL, &error),
            "replace", &error);
        bson_destroy(replacement);
    }
    bson_destroy(filter);
}

size_t fts_test_apps_wait_entry(fts_test_apps_t *apps, const fts_test_extract_t *extract,
                                int32_t id, int op)
{
    return fts_test_pipeline_wait_entry_number(apps->p, extract, id, op, 0,
                                               FTS_TEST_APPS_ENTRY_WAIT_MS);
}

void fts_test_apps_wait_caught_up(fts_test_apps_t *apps, const fts_test_extract_t *extract,
                                  int32_t marker)
{
    fts_test_apps_insert(apps, marker);
    fts_test_apps_wait_entry(apps, extract, marker, FTS_ACTION_INDEX);
}

void fts_test_apps_start_loading(const fts_test_apps_t *apps, fts_test_load_t *load,
                                 bool *load_ready, const char *binary, const char *redis_url,
                                 const char *name)
{
    fts_error_t err;
    fts_error_clear(&err);
    const fts_test_pipeline_t *p = apps->p;
    if (!fts_test_load_init(load, binary, fts_testbed_index_definition(), redis_url,
                            fts_testbed_es_url(), name, &err)) {
        fail_msg("cannot set the loader up: %s", err.message);
    }
    *load_ready = true;
    /* The loader reads the extract's pipeline. */
    snprintf(load->pipeline, sizeof load->pipeline, "%s", p->pipeline);
    snprintf(load->stream_key, sizeof load->stream_key, "%s", p->stream_key);
    snprintf(load->dead_key, sizeof load->dead_key, "%s", p->dead_key);
    fts_test_load_set(load, "FTSYNC_PIPELINE", p->pipeline);
    if (!fts_test_load_start_loader(load, NULL, &err)) {
        fail_msg("cannot start ftsync load: %s", err.message);
    }
}

void fts_test_apps_assert_index_equals_collection(const fts_test_apps_t *apps,
                                                  fts_test_load_t *load, const char *label)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_wait_drained(load, FTS_TEST_APPS_DRAIN_WAIT_MS, &err)) {
        fts_test_load_print_logs(load, 30);
        fail_msg("the loader did not drain the stream: %s", err.message);
    }
    fts_test_docs_t *expected = fts_test_docs_new();
    if (!fts_test_collection_state(apps->p->client, apps->p->db, apps->p->collection, "id",
                                   FTS_TEST_APPS_FIELDS, expected, &err)) {
        fail_msg("cannot read the collection: %s", err.message);
    }
    char url[1024];
    long status = 0;
    snprintf(url, sizeof url, "%s/%s/_refresh", load->es_url, load->index);
    assert_true(fts_test_http("POST", url, "", 0, &status, NULL, &err));
    snprintf(url, sizeof url, "%s/%s/_search?size=%d", load->es_url, load->index,
             FTS_TEST_APPS_MAX + 10);
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
        snprintf(want_ns, sizeof want_ns, "%s.%s", apps->p->db, apps->p->collection);
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
                fprintf(stderr, "[%s] index has id %s, the collection has no such document\n",
                        label, id);
            }
            bson_destroy(&source);
            continue;
        }
        bson_t *want_doc = bson_new_from_json((const uint8_t *)want, -1, &error);
        assert_non_null(want_doc);
        char *got_json = fts_test_bson_sorted_json(&source);
        char *want_json = fts_test_bson_sorted_json(want_doc);
        if (strcmp(got_json, want_json) != 0 && differ++ < 10) {
            fprintf(stderr, "[%s] id %s: index %s, collection %s\n", label, id, got_json,
                    want_json);
        }
        bson_free(got_json);
        bson_free(want_json);
        bson_destroy(want_doc);
        bson_destroy(&source);
    }
    size_t live = fts_test_docs_live_count(expected);
    if (indexed != live) {
        fprintf(stderr, "[%s] index: %zu documents, collection: %zu\n", label, indexed, live);
        differ++;
    }
    bson_destroy(answer);
    fts_buffer_destroy(&body);
    fts_test_docs_destroy(expected);
    if (differ) {
        fts_test_load_print_logs(load, 30);
        fail_msg("the index differs from the collection (%zu differences)", differ);
    }
}
