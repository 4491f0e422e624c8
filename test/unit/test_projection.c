/*
 * test_projection.c - index ids and bodies from MongoDB documents: every id type, field lists
 * with renames and dotted paths, the whole-document copy without _id, and every refused
 * configuration, including the original service's settings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "assertions.h"
#include "buffer.h"
#include "config.h"
#include "action.h"
#include "projection.h"

/* Builds a projection from FTSYNC_FIELDS-style text (NULL: no list), failing the test on error. */
static fts_projection_t *projection_from(const char *id_field, const char *fields)
{
    fts_string_list_t list = {0};
    fts_error_t err = {0};
    if (fields && !fts_string_list_parse(fields, &list, &err)) {
        fail_msg("bad test list %s: %s", fields, err.message);
    }
    fts_projection_t *projection = fts_projection_new(id_field, fields ? &list : NULL, &err);
    if (!projection) {
        fail_msg("projection refused: %s", err.message);
    }
    fts_string_list_cleanup(&list);
    return projection;
}

/* The error fts_projection_new gives for a list, which must be refused. */
static fts_error_t refusal(const char *id_field, const char *fields)
{
    fts_string_list_t list = {0};
    fts_error_t err = {0};
    if (fields && !fts_string_list_parse(fields, &list, &err)) {
        fail_msg("bad test list %s: %s", fields, err.message);
    }
    fts_projection_t *projection = fts_projection_new(id_field, fields ? &list : NULL, &err);
    if (projection) {
        fail_msg("projection of id %s, fields %s accepted", id_field ? id_field : "(default)",
                 fields ? fields : "(none)");
    }
    fts_string_list_cleanup(&list);
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    return err;
}

static void assert_body(const fts_projection_t *projection, const bson_t *doc, const char *expected)
{
    fts_buffer_t body = {0};
    fts_error_t err = {0};
    if (!fts_projection_body(projection, doc, &body, &err)) {
        fail_msg("body failed: %s", err.message);
    }
    assert_string_equal(body.data, expected);
    fts_buffer_destroy(&body);
}

static void assert_id(const fts_projection_t *projection, const bson_t *doc, const char *expected)
{
    fts_buffer_t id = {0};
    fts_error_t err = {0};
    if (!fts_projection_document_id(projection, doc, &id, &err)) {
        fail_msg("id failed: %s", err.message);
    }
    assert_string_equal(id.data, expected);
    assert_int_equal(id.len, strlen(expected));
    fts_buffer_destroy(&id);
}

static fts_error_t id_refusal(const fts_projection_t *projection, const bson_t *doc)
{
    fts_buffer_t id = {0};
    fts_error_t err = {0};
    fts_buffer_append_str(&id, "untouched");
    assert_false(fts_projection_document_id(projection, doc, &id, &err));
    assert_string_equal(id.data, "untouched");
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    fts_buffer_destroy(&id);
    return err;
}

/* ---------------------------------------------------------------------------------------- */
/* Ids                                                                                      */

static void test_id_types(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(NULL, NULL);
    assert_string_equal(fts_projection_id_field(projection), "_id");
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "5F1D7C3A9B1E8A0012345678");
    bson_t *doc = BCON_NEW("_id", BCON_OID(&oid));
    assert_id(projection, doc, "5f1d7c3a9b1e8a0012345678");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_UTF8("com.example.app"));
    assert_id(projection, doc, "com.example.app");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_UTF8("\xe6\x97\xa5\xe6\x9c\xac"));
    assert_id(projection, doc, "\xe6\x97\xa5\xe6\x9c\xac");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_INT32(-42));
    assert_id(projection, doc, "-42");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_INT64(INT64_MAX));
    assert_id(projection, doc, "9223372036854775807");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_INT64(INT64_MIN));
    assert_id(projection, doc, "-9223372036854775808");
    bson_destroy(doc);

    /* Whole doubles name the same document as the integer. */
    doc = BCON_NEW("_id", BCON_DOUBLE(5.0));
    assert_id(projection, doc, "5");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_DOUBLE(-0.0));
    assert_id(projection, doc, "0");
    bson_destroy(doc);

    /* The int64 range ends exactly: -2^63 is in, 2^63 (test_id_refused_types) is out. */
    doc = BCON_NEW("_id", BCON_DOUBLE(4611686018427387904.0));
    assert_id(projection, doc, "4611686018427387904");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_DOUBLE(-9223372036854775808.0));
    assert_id(projection, doc, "-9223372036854775808");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

/* FTSYNC_ID_FORMAT=typed (issue 13, item 2): the type tags the id, so an integer, the string
 * of its digits and an ObjectId and its hex string never share an index id; numbers MongoDB
 * holds equal (int32, int64, whole double) stay one id. */
static void test_id_typed(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(NULL, NULL);
    fts_projection_set_id_typed(projection, true);
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "65a0000000000000000000aa");
    bson_t *doc = BCON_NEW("_id", BCON_OID(&oid));
    assert_id(projection, doc, "o:65a0000000000000000000aa");
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_UTF8("65a0000000000000000000aa"));
    assert_id(projection, doc, "s:65a0000000000000000000aa");
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_INT32(424242));
    assert_id(projection, doc, "i:424242");
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_UTF8("424242"));
    assert_id(projection, doc, "s:424242");
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_INT64(424242));
    assert_id(projection, doc, "i:424242");
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_DOUBLE(-7.0));
    assert_id(projection, doc, "i:-7");
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_UTF8("i:1"));
    assert_id(projection, doc, "s:i:1");
    bson_destroy(doc);

    /* The tag counts toward Elasticsearch's 512 bytes. */
    char text[FTS_ACTION_ID_MAX + 1];
    memset(text, 'x', sizeof text - 1);
    text[FTS_ACTION_ID_MAX - 2] = '\0';
    doc = BCON_NEW("_id", BCON_UTF8(text));
    fts_buffer_t id = {0};
    fts_error_t err = {0};
    assert_true(fts_projection_document_id(projection, doc, &id, &err));
    assert_int_equal(id.len, FTS_ACTION_ID_MAX);
    fts_buffer_destroy(&id);
    bson_destroy(doc);
    text[FTS_ACTION_ID_MAX - 2] = 'x';
    text[FTS_ACTION_ID_MAX - 1] = '\0';
    doc = BCON_NEW("_id", BCON_UTF8(text));
    err = id_refusal(projection, doc);
    assert_int_equal(err.code, FTS_ERROR_CODE_INVALID);
    bson_destroy(doc);
    /* A refused type appends nothing, tag included. */
    doc = BCON_NEW("_id", BCON_BOOL(true));
    id_refusal(projection, doc);
    bson_destroy(doc);

    /* Plain (the default) keeps the value alone: the collision typed avoids. */
    fts_projection_set_id_typed(projection, false);
    doc = BCON_NEW("_id", BCON_UTF8("424242"));
    assert_id(projection, doc, "424242");
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_INT32(424242));
    assert_id(projection, doc, "424242");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

static void test_id_string_limits(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(NULL, NULL);
    char longest[513];
    memset(longest, 'x', 512);
    longest[512] = '\0';
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(longest));
    assert_id(projection, doc, longest);
    bson_destroy(doc);

    char too_long[514];
    memset(too_long, 'x', 513);
    too_long[513] = '\0';
    doc = BCON_NEW("_id", BCON_UTF8(too_long));
    fts_error_t err = id_refusal(projection, doc);
    assert_int_equal(err.code, FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "513 bytes");
    assert_contains(err.message, "\"_id\"");
    bson_destroy(doc);

    doc = BCON_NEW("_id", BCON_UTF8(""));
    err = id_refusal(projection, doc);
    assert_contains(err.message, "0 bytes");
    bson_destroy(doc);

    bson_t with_nul = BSON_INITIALIZER;
    bson_append_utf8(&with_nul, "_id", -1, "a\0b", 3);
    err = id_refusal(projection, &with_nul);
    assert_contains(err.message, "NUL");
    bson_destroy(&with_nul);

    bson_t invalid = BSON_INITIALIZER;
    bson_append_utf8(&invalid, "_id", -1, "caf\xe9", 4);
    err = id_refusal(projection, &invalid);
    assert_contains(err.message, "invalid UTF-8");
    bson_destroy(&invalid);
    fts_projection_destroy(projection);
}

static void test_id_refused_types(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(NULL, NULL);
    struct {
        bson_t *doc;
        const char *says;
    } cases[] = {
        {BCON_NEW("_id", BCON_DOUBLE(1.5)), "the double 1.5"},
        {BCON_NEW("_id", BCON_DOUBLE(NAN)), "not a whole number"},
        {BCON_NEW("_id", BCON_DOUBLE(INFINITY)), "not a whole number"},
        {BCON_NEW("_id", BCON_DOUBLE(9223372036854775808.0)), "64-bit range"},
        {BCON_NEW("_id", BCON_DOUBLE(1e19)), "64-bit range"},
        {BCON_NEW("_id", BCON_DOUBLE(-1e19)), "64-bit range"},
        {BCON_NEW("_id", "{", "a", BCON_INT32(1), "}"), "is a document"},
        {BCON_NEW("_id", "[", BCON_INT32(1), "]"), "is an array"},
        {BCON_NEW("_id", BCON_NULL), "is null"},
        {BCON_NEW("_id", BCON_BOOL(true)), "is a boolean"},
        {BCON_NEW("_id", BCON_DATE_TIME(0)), "is a date"},
        {BCON_NEW("_id", BCON_BIN(BSON_SUBTYPE_UUID, (const uint8_t *)"0123456789abcdef", 16)),
         "is binary data"},
        {BCON_NEW("_id", BCON_MINKEY), "cannot be an id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_error_t err = id_refusal(projection, cases[i].doc);
        assert_int_equal(err.code, FTS_ERROR_CODE_INVALID);
        assert_contains(err.message, "id field \"_id\"");
        assert_contains(err.message, cases[i].says);
        bson_destroy(cases[i].doc);
    }
    fts_projection_destroy(projection);
}

static void test_id_missing(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from("id", NULL);
    bson_t *doc = BCON_NEW("_id", BCON_INT32(1), "name", BCON_UTF8("x"));
    fts_error_t err = id_refusal(projection, doc);
    assert_int_equal(err.code, FTS_ERROR_CODE_MISSING);
    assert_string_equal(err.message, "the document has no id field \"id\"");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

static void test_id_dotted_path(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from("meta.ids.0.sku", NULL);
    bson_t *doc = BCON_NEW("meta", "{", "ids", "[", "{", "sku", BCON_INT64(77), "}", "]", "}");
    assert_id(projection, doc, "77");
    bson_destroy(doc);
    /* Through a scalar there is no path: missing, not a crash. */
    doc = BCON_NEW("meta", BCON_INT32(3));
    fts_error_t err = id_refusal(projection, doc);
    assert_int_equal(err.code, FTS_ERROR_CODE_MISSING);
    assert_contains(err.message, "meta.ids.0.sku");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

/* ---------------------------------------------------------------------------------------- */
/* Bodies                                                                                   */

static void test_whole_document_without_id(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(NULL, NULL);
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "5f1d7c3a9b1e8a0012345678");
    bson_t *doc = BCON_NEW("_id", BCON_OID(&oid), "name", BCON_UTF8("Chess"), "nested", "{", "_id",
                           BCON_INT32(9), "x", BCON_INT32(1), "}", "price", BCON_DOUBLE(2.5));
    assert_body(projection, doc,
                "{\"name\":\"Chess\",\"nested\":{\"_id\":9,\"x\":1},\"price\":2.5}");
    assert_id(projection, doc, "5f1d7c3a9b1e8a0012345678");
    bson_destroy(doc);
    fts_projection_destroy(projection);

    /* An empty list is the whole document too. */
    fts_string_list_t empty = {0};
    fts_error_t err = {0};
    projection = fts_projection_new("_id", &empty, &err);
    assert_non_null(projection);
    doc = BCON_NEW("_id", BCON_INT32(1), "a", BCON_INT32(2));
    assert_body(projection, doc, "{\"a\":2}");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

/* The original service: FTSYNC_ID_FIELD=id,
 * FTSYNC_FIELDS=name,short_description,developers,publishers,updated_at. */
static void test_original_service_configuration(void **state)
{
    (void)state;
    fts_projection_t *projection =
        projection_from("id", "name,short_description,developers,publishers,updated_at");
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "65f1d7c3a9b1e8a001234567");
    bson_t *doc = BCON_NEW("_id", BCON_OID(&oid), "id", BCON_INT32(1091500), "updated_at",
                           BCON_DATE_TIME(1795428000000LL), "name", BCON_UTF8("Cyberpunk 2077"),
                           "developers", "[", BCON_UTF8("CD PROJEKT RED"), "]", "publishers", "[",
                           BCON_UTF8("CD PROJEKT RED"), "]", "short_description",
                           BCON_UTF8("An open-world, action-adventure RPG \"set\" in 2077."),
                           "price", BCON_DOUBLE(59.99), "genres", "[", BCON_UTF8("RPG"), "]");
    assert_id(projection, doc, "1091500");
    assert_body(projection, doc,
                "{\"name\":\"Cyberpunk 2077\",\"short_description\":\"An open-world, "
                "action-adventure RPG \\\"set\\\" in 2077.\",\"developers\":[\"CD PROJEKT "
                "RED\"],\"publishers\":[\"CD PROJEKT RED\"],\"updated_at\":\"2026-11-23T10:00:"
                "00.000Z\"}");
    bson_destroy(doc);

    /* A document lacking some fields: they are simply absent. */
    doc = BCON_NEW("id", BCON_INT64(7), "name", BCON_UTF8("Tiny"), "publishers", BCON_NULL);
    assert_id(projection, doc, "7");
    assert_body(projection, doc, "{\"name\":\"Tiny\",\"publishers\":null}");
    bson_destroy(doc);

    /* None of them: an empty object. */
    doc = BCON_NEW("id", BCON_INT32(8));
    assert_body(projection, doc, "{}");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

static void test_renames_and_dotted_sources(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(
        "_id",
        "prices.us.final:price, name : title,tags.0:first_tag,missing.path:never,_id:mongo_id");
    bson_t *doc = BCON_NEW("_id", BCON_INT32(3), "name", BCON_UTF8("Go"), "prices", "{", "us", "{",
                           "final", BCON_DOUBLE(9.99), "initial", BCON_INT32(20), "}", "}", "tags",
                           "[", BCON_UTF8("board"), BCON_UTF8("classic"), "]");
    /* List order, target names, missing left out; _id may be copied under another name. */
    assert_body(projection, doc,
                "{\"price\":9.99,\"title\":\"Go\",\"first_tag\":\"board\",\"mongo_id\":3}");
    bson_destroy(doc);

    /* A dotted source ending on a document copies the document. */
    fts_projection_destroy(projection);
    projection = projection_from(NULL, "prices.us:us_prices,name");
    doc = BCON_NEW("prices", "{", "us", "{", "final", BCON_INT32(1), "}", "}", "name",
                   BCON_UTF8("n"));
    assert_body(projection, doc, "{\"us_prices\":{\"final\":1},\"name\":\"n\"}");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

static void test_same_source_twice(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(NULL, "name,name:name_exact");
    bson_t *doc = BCON_NEW("name", BCON_UTF8("x"));
    assert_body(projection, doc, "{\"name\":\"x\",\"name_exact\":\"x\"}");
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

static void test_bodies_append_and_keep_earlier_content(void **state)
{
    (void)state;
    fts_projection_t *projection = projection_from(NULL, "a");
    bson_t *doc = BCON_NEW("a", BCON_INT32(1));
    fts_buffer_t body = {0};
    fts_buffer_append_str(&body, "{\"index\":{}}\n");
    assert_true(fts_projection_body(projection, doc, &body, NULL));
    assert_string_equal(body.data, "{\"index\":{}}\n{\"a\":1}");
    fts_buffer_destroy(&body);
    bson_destroy(doc);
    fts_projection_destroy(projection);
}

static void test_corrupt_document(void **state)
{
    (void)state;
    bson_t *good =
        BCON_NEW("_id", BCON_INT32(1), "a", "{", "s", BCON_UTF8("xyz"), "}", "b", BCON_INT32(2));
    uint8_t *bytes = bson_malloc(good->len);
    memcpy(bytes, bson_get_data(good), good->len);
    for (uint32_t i = 0; i + 3 <= good->len; i++) {
        if (memcmp(bytes + i, "\x02s\0", 3) == 0) {
            bytes[i + 3] = 0xff; /* string length far past the end */
        }
    }
    bson_t bad;
    assert_true(bson_init_static(&bad, bytes, good->len));
    fts_error_t err = {0};
    fts_buffer_t body = {0};
    fts_buffer_append_str(&body, "kept");

    fts_projection_t *projected = projection_from(NULL, "a,b");
    assert_false(fts_projection_body(projected, &bad, &body, &err));
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    assert_contains(err.message, "a.s");
    assert_string_equal(body.data, "kept");

    /* A path through the damage is reported as corrupt, not as an absent field. */
    fts_projection_t *through = projection_from("a.t", "a.t:t");
    assert_false(fts_projection_body(through, &bad, &body, &err));
    assert_contains(err.message, "corrupt BSON on the way to field \"a.t\"");
    assert_string_equal(body.data, "kept");
    fts_error_t id_err = id_refusal(through, &bad);
    assert_int_equal(id_err.code, FTS_ERROR_CODE_INVALID);
    assert_contains(id_err.message, "corrupt BSON on the way to id field \"a.t\"");

    fts_projection_t *whole = projection_from(NULL, NULL);
    assert_false(fts_projection_body(whole, &bad, &body, &err));
    assert_contains(err.message, "a.s");
    assert_string_equal(body.data, "kept");

    fts_projection_destroy(projected);
    fts_projection_destroy(through);
    fts_projection_destroy(whole);
    fts_buffer_destroy(&body);
    bson_free(bytes);
    bson_destroy(good);
}

/* ---------------------------------------------------------------------------------------- */
/* Refused configurations                                                                   */

static void test_refused_field_lists(void **state)
{
    (void)state;
    struct {
        const char *id_field;
        const char *fields;
        const char *says;
    } cases[] = {
        {"", NULL, "id field \"\" is empty"},
        {"a..b", NULL, "id field \"a..b\""},
        {".a", NULL, "empty name between dots"},
        {"a.", NULL, "empty name between dots"},
        {NULL, ":title", "the source name is empty"},
        {NULL, "name:", "the target name after ':' is empty"},
        {NULL, "a:b:c", "one colon"},
        {NULL, "a..b:c", "\"a..b\" has an empty name between dots"},
        {NULL, ".a:c", "empty name between dots"},
        {NULL, "prices.us.final", "e.g. \"prices.us.final:final\""},
        {NULL, "price:prices.us", "the target \"prices.us\" contains '.'"},
        {NULL, "_id", "\"_id\" is an Elasticsearch metadata field"},
        {NULL, "name,mongo:_id", "\"_id\" is an Elasticsearch metadata field"},
        {NULL, "x:_source", "\"_source\" is an Elasticsearch metadata field"},
        {NULL, "x:_index", "metadata field"},
        {NULL, "x:_routing", "metadata field"},
        {NULL, "name,title:name", "both write the target \"name\""},
        {NULL, "a:t,b:t", "\"a:t\" and \"b:t\" both write the target \"t\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("refuse id %s fields %s\n", cases[i].id_field ? cases[i].id_field : "-",
                      cases[i].fields ? cases[i].fields : "-");
        fts_error_t err = refusal(cases[i].id_field, cases[i].fields);
        assert_contains(err.message, cases[i].says);
    }
    /* The _id rename suggestion is itself accepted. */
    fts_projection_destroy(projection_from(NULL, "_id:mongo_id"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_types),
        cmocka_unit_test(test_id_string_limits),
        cmocka_unit_test(test_id_typed),
        cmocka_unit_test(test_id_refused_types),
        cmocka_unit_test(test_id_missing),
        cmocka_unit_test(test_id_dotted_path),
        cmocka_unit_test(test_whole_document_without_id),
        cmocka_unit_test(test_original_service_configuration),
        cmocka_unit_test(test_renames_and_dotted_sources),
        cmocka_unit_test(test_same_source_twice),
        cmocka_unit_test(test_bodies_append_and_keep_earlier_content),
        cmocka_unit_test(test_corrupt_document),
        cmocka_unit_test(test_refused_field_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
