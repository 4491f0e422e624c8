/*
 * test_es_index_mark.c - the version-scheme mark put into an index definition before the
 * index is created (es_index.h): on typeless mappings, on every type of typed ones, on a
 * definition without mappings, keeping the operator's own _meta keys and replacing another
 * scheme's mark.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <bson/bson.h>

#include "action.h"
#include "assertions.h"
#include "es_index.h"

/* Marks definition (JSON) with scheme 2 and returns the result parsed (caller destroys). */
static bson_t *marked(const char *definition, const char *doc_type)
{
    fts_buffer_t in = {0}, out = {0};
    fts_error_t err = {0};
    fts_buffer_append_str(&in, definition);
    if (!fts_es_index_definition_mark(&in, doc_type, FTS_VERSION_SCHEME, &out, &err)) {
        fail_msg("mark failed: %s", err.message);
    }
    bson_error_t error;
    bson_t *doc = bson_new_from_json((const uint8_t *)out.data, (ssize_t)out.len, &error);
    if (!doc) {
        fail_msg("marked definition is not JSON: %s", error.message);
    }
    fts_buffer_destroy(&in);
    fts_buffer_destroy(&out);
    return doc;
}

static int64_t int_at(const bson_t *doc, const char *path)
{
    bson_iter_t iter, found;
    if (!bson_iter_init(&iter, doc) || !bson_iter_find_descendant(&iter, path, &found)) {
        fail_msg("no %s", path);
    }
    return bson_iter_as_int64(&found);
}

static bool has(const bson_t *doc, const char *path)
{
    bson_iter_t iter, found;
    return bson_iter_init(&iter, doc) && bson_iter_find_descendant(&iter, path, &found);
}

static void test_typeless(void **state)
{
    (void)state;
    bson_t *doc = marked("{\"settings\": {\"number_of_shards\": 1}, \"mappings\": {\"dynamic\": "
                         "false, \"_meta\": {\"owner\": \"search\", \"ftsync\": "
                         "{\"version_scheme\": 1}}, \"properties\": {\"name\": {\"type\": "
                         "\"text\"}}}}",
                         NULL);
    assert_int_equal(int_at(doc, "mappings._meta.ftsync.version_scheme"), 2);
    assert_true(has(doc, "mappings._meta.owner"));
    assert_true(has(doc, "mappings.properties.name.type"));
    assert_true(has(doc, "mappings.dynamic"));
    assert_int_equal(int_at(doc, "settings.number_of_shards"), 1);
    bson_destroy(doc);
}

static void test_typed_marks_every_type(void **state)
{
    (void)state;
    bson_t *doc = marked("{\"mappings\": {\"doc\": {\"properties\": {\"name\": {\"type\": "
                         "\"string\"}}}, \"other\": {\"dynamic\": false}}}",
                         "doc");
    assert_int_equal(int_at(doc, "mappings.doc._meta.ftsync.version_scheme"), 2);
    assert_int_equal(int_at(doc, "mappings.other._meta.ftsync.version_scheme"), 2);
    assert_true(has(doc, "mappings.doc.properties.name.type"));
    assert_false(has(doc, "mappings._meta"));
    bson_destroy(doc);
}

static void test_without_mappings(void **state)
{
    (void)state;
    bson_t *doc = marked("{\"settings\": {\"number_of_replicas\": 0}}", "doc");
    assert_int_equal(int_at(doc, "mappings.doc._meta.ftsync.version_scheme"), 2);
    bson_destroy(doc);
    doc = marked("{}", NULL);
    assert_int_equal(int_at(doc, "mappings._meta.ftsync.version_scheme"), 2);
    bson_destroy(doc);
}

static void test_mappings_not_an_object(void **state)
{
    (void)state;
    fts_buffer_t in = {0}, out = {0};
    fts_error_t err = {0};
    fts_buffer_append_str(&in, "{\"mappings\": [1]}");
    assert_false(fts_es_index_definition_mark(&in, NULL, 2, &out, &err));
    assert_contains(err.message, "\"mappings\" is not a JSON object");
    fts_buffer_destroy(&in);
    fts_buffer_destroy(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typeless),
        cmocka_unit_test(test_typed_marks_every_type),
        cmocka_unit_test(test_without_mappings),
        cmocka_unit_test(test_mappings_not_an_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
