/*
 * test_transform.c - change events and snapshot documents to actions: every operationType,
 * with and without fullDocument, custom id fields and pre-images, on_drop, and the transform
 * plugins of test/fixtures/plugins (keep, replace, drop, error, wrong ABI, a crash).
 *
 * Events are written in the shape libmongoc's change stream returns them (resume token _id,
 * clusterTime, wallTime, ns, documentKey, updateDescription, transaction fields), as extended
 * JSON with single quotes for legibility.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "action.h"
#include "assertions.h"
#include "transform.h"

#ifndef FTSYNC_TEST_PLUGIN_UPPERCASE
#error "core/CMakeLists.txt passes the test plugins' paths to this test"
#endif

#define TOKEN "'_id': {'_data': '8265539A80000000012B022C0100296E5A1004AB'}, "
#define TIME                                                                                       \
    "'clusterTime': {'$timestamp': {'t': 1700000000, 'i': 3}}, "                                   \
    "'wallTime': {'$date': '2023-11-14T22:13:20.000Z'}, "
#define NS      "'ns': {'db': 'shop', 'coll': 'apps'}, "
#define OID     "{'$oid': '65f1d7c3a9b1e8a001234567'}"
#define OID_HEX "65f1d7c3a9b1e8a001234567"
#define APP                                                                                        \
    "{'_id': " OID ", 'id': 1091500, 'name': 'Chess', 'short_description': 'Board game', "         \
    "'developers': ['A'], 'publishers': ['B'], 'updated_at': {'$date': "                           \
    "'2026-11-23T10:00:00.000Z'}, 'price': 2.5}"

/* The version of clusterTime 1700000000.3 (scheme 2: seconds since 2020-01-01 << 32 |
 * increment << 13, position 0 outside a transaction). */
static const uint64_t VERSION = (uint64_t)(1700000000u - 1577836800u) << 32 | 3u << 13;

/* Parses extended JSON written with single quotes, where a comma before a closing brace is
 * dropped so that the shared fragments above can all end with one. */
static bson_t *event_from(const char *json)
{
    char *text = malloc(strlen(json) + 1);
    size_t len = 0;
    for (const char *c = json; *c; c++) {
        if (*c == ',' && c[strspn(c + 1, " ") + 1] == '}') {
            continue;
        }
        text[len++] = *c == '\'' ? '"' : *c;
    }
    text[len] = '\0';
    bson_error_t error;
    bson_t *doc = bson_new_from_json((const uint8_t *)text, -1, &error);
    if (!doc) {
        fail_msg("bad test JSON %s: %s", text, error.message);
    }
    free(text);
    return doc;
}

static fts_transform_t *transform_with(const char *id_field, const char *fields,
                                       fts_on_drop_t on_drop, const char *plugin)
{
    fts_string_list_t list = {0};
    fts_error_t err = {0};
    if (fields) {
        assert_true(fts_string_list_parse(fields, &list, &err));
    }
    fts_transform_options_t options = {
        .id_field = id_field, .fields = &list, .on_drop = on_drop, .plugin_path = plugin};
    fts_transform_t *transform = fts_transform_new(&options, &err);
    if (!transform) {
        fail_msg("transform refused: %s", err.message);
    }
    fts_string_list_cleanup(&list);
    return transform;
}

static fts_transform_t *default_transform(void)
{
    return transform_with(NULL, NULL, FTS_ON_DROP_DELETE, NULL);
}

/* Transforms the event, expecting an action; checks it also encodes for the queue. */
static void expect_action(fts_transform_t *transform, const char *json, fts_action_t *action)
{
    bson_t *event = event_from(json);
    bool produced = false;
    fts_error_t err = {0};
    if (!fts_transform_event(transform, event, action, &produced, &err)) {
        fail_msg("transform failed: %s", err.message);
    }
    assert_true(produced);
    fts_action_argv_t argv;
    if (!fts_action_encode(action, "stream", &argv, &err)) {
        fail_msg("action does not encode: %s", err.message);
    }
    bson_destroy(event);
}

static void expect_nothing(fts_transform_t *transform, const char *json)
{
    bson_t *event = event_from(json);
    bool produced = true;
    fts_action_t action;
    fts_action_init(&action);
    assert_true(fts_transform_event(transform, event, &action, &produced, NULL));
    assert_false(produced);
    assert_null(action.ns);
    bson_destroy(event);
}

static fts_error_t expect_failure(fts_transform_t *transform, const char *json)
{
    bson_t *event = event_from(json);
    bool produced = true;
    fts_action_t action;
    fts_action_init(&action);
    fts_error_t err = {0};
    assert_false(fts_transform_event(transform, event, &action, &produced, &err));
    assert_false(produced);
    assert_null(action.ns);
    assert_null(action.id);
    assert_null(action.body);
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    bson_destroy(event);
    return err;
}

static void assert_change(const fts_action_t *action, fts_action_op_t op, const char *id,
                          const char *body)
{
    assert_int_equal(action->op, op);
    assert_int_equal(action->origin, FTS_ACTION_FROM_CHANGE);
    assert_true(action->version == VERSION);
    assert_int_equal(action->ts_seconds, 1700000000u);
    assert_int_equal(action->ts_increment, 3);
    assert_string_equal(action->ns, "shop.apps");
    if (id) {
        assert_string_equal(action->id, id);
        assert_int_equal(action->id_len, strlen(id));
    } else {
        assert_null(action->id);
    }
    if (body) {
        assert_string_equal(action->body, body);
        assert_int_equal(action->body_len, strlen(body));
    } else {
        assert_null(action->body);
    }
}

#define APP_BODY                                                                                   \
    "{\"id\":1091500,\"name\":\"Chess\",\"short_description\":\"Board game\","                     \
    "\"developers\":[\"A\"],\"publishers\":[\"B\"],\"updated_at\":\"2026-11-23T10:00:00.000Z\","   \
    "\"price\":2.5}"

/* ---------------------------------------------------------------------------------------- */
/* Event types                                                                              */

static void test_insert(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    fts_action_t action;
    fts_action_init(&action);
    expect_action(transform,
                  "{" TOKEN "'operationType': 'insert', " TIME "'fullDocument': " APP ", " NS
                  "'documentKey': {'_id': " OID "}}",
                  &action);
    assert_change(&action, FTS_ACTION_INDEX, OID_HEX, APP_BODY);
    fts_action_cleanup(&action);
    fts_transform_destroy(transform);
}

static void test_replace_and_update_with_document(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    fts_action_t action;
    fts_action_init(&action);
    expect_action(transform,
                  "{" TOKEN "'operationType': 'replace', " TIME "'fullDocument': " APP ", " NS
                  "'documentKey': {'_id': " OID "}}",
                  &action);
    assert_change(&action, FTS_ACTION_INDEX, OID_HEX, APP_BODY);
    /* The same action reused: what it held is released first. */
    /* (in a transaction: its token names the event's clusterTime, as mongod's do) */
    expect_action(transform,
                  "{'_id': {'_data': '826553F100000000032B022C0100296E5A1004AB'}, "
                  "'operationType': 'update', " TIME "'fullDocument': " APP ", " NS
                  "'documentKey': {'_id': " OID "}, 'updateDescription': {'updatedFields': "
                  "{'price': 2.5}, 'removedFields': ['old'], 'truncatedArrays': []}, "
                  "'txnNumber': {'$numberLong': '4'}, 'lsid': {'id': {'$binary': {'base64': "
                  "'AAAAAAAAAAAAAAAAAAAAAA==', 'subType': '04'}}, 'uid': {'$binary': {'base64': "
                  "'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', 'subType': '00'}}}}",
                  &action);
    assert_change(&action, FTS_ACTION_INDEX, OID_HEX, APP_BODY);
    fts_action_cleanup(&action);
    fts_transform_destroy(transform);
}

static void test_update_without_document_is_delete(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    fts_action_t action;
    fts_action_init(&action);
    /* updateLookup found nothing: fullDocument is null. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'update', " TIME NS "'documentKey': {'_id': " OID
                  "}, 'updateDescription': {'updatedFields': {'a': 1}, 'removedFields': []}, "
                  "'fullDocument': null}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, OID_HEX, NULL);
    /* No fullDocument field at all. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'update', " TIME NS "'documentKey': {'_id': 7}, "
                  "'updateDescription': {'updatedFields': {'a': 1}, 'removedFields': []}}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "7", NULL);
    fts_action_cleanup(&action);
    fts_transform_destroy(transform);
}

static void test_delete(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    fts_action_t action;
    fts_action_init(&action);
    expect_action(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS "'documentKey': {'_id': " OID
                  "}}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, OID_HEX, NULL);
    /* Ids of every kind are spelled as the index spelled them. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS
                  "'documentKey': {'_id': {'$numberDouble': '5.0'}}}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "5", NULL);
    expect_action(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS
                  "'documentKey': {'_id': 'com.example'}}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "com.example", NULL);
    fts_action_cleanup(&action);

    fts_error_t err = expect_failure(transform, "{" TOKEN "'operationType': 'delete', " TIME NS
                                                "'documentKey': {'_id': {'a': 1}}}");
    assert_int_equal(err.code, FTS_ERROR_CODE_INVALID);
    assert_contains(err.message,
                    "delete event on shop.apps at 1700000000.3: documentKey: id field \"_id\" "
                    "is a document");
    err = expect_failure(transform, "{" TOKEN "'operationType': 'delete', " TIME NS "}");
    assert_contains(err.message, "the event has no documentKey");
    err = expect_failure(transform,
                         "{" TOKEN "'operationType': 'delete', " TIME NS "'documentKey': 5}");
    assert_contains(err.message, "documentKey is neither a document nor null");
    fts_transform_destroy(transform);
}

static void test_drop_and_on_drop(void **state)
{
    (void)state;
    const char *drop = "{" TOKEN "'operationType': 'drop', " TIME NS "}";
    fts_transform_t *transform = default_transform();
    fts_action_t action;
    fts_action_init(&action);
    expect_action(transform, drop, &action);
    assert_change(&action, FTS_ACTION_DROP, NULL, NULL);
    fts_action_cleanup(&action);
    fts_transform_destroy(transform);

    transform = transform_with(NULL, NULL, FTS_ON_DROP_IGNORE, NULL);
    expect_nothing(transform, drop);
    fts_transform_destroy(transform);

    fts_on_drop_t on_drop = FTS_ON_DROP_IGNORE;
    assert_true(fts_on_drop_parse("delete", &on_drop));
    assert_int_equal(on_drop, FTS_ON_DROP_DELETE);
    assert_true(fts_on_drop_parse("ignore", &on_drop));
    assert_int_equal(on_drop, FTS_ON_DROP_IGNORE);
    assert_false(fts_on_drop_parse("Delete", &on_drop));
    assert_false(fts_on_drop_parse("", &on_drop));
    assert_string_equal(fts_on_drop_name(FTS_ON_DROP_DELETE), "delete");
    assert_string_equal(fts_on_drop_name(FTS_ON_DROP_IGNORE), "ignore");
}

static void test_invalidate_gives_nothing(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    expect_nothing(transform, "{" TOKEN "'operationType': 'invalidate', " TIME "}");
    /* An invalidate needs neither ns nor clusterTime. */
    expect_nothing(transform, "{" TOKEN "'operationType': 'invalidate'}");
    fts_transform_destroy(transform);
}

static void test_unsupported_events(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    fts_error_t err = expect_failure(transform, "{" TOKEN "'operationType': 'rename', " TIME NS
                                                "'to': {'db': 'shop', 'coll': 'apps_old'}}");
    assert_int_equal(err.code, FTS_TRANSFORM_UNSUPPORTED_EVENT);
    assert_contains(err.message, "rename event on shop.apps at 1700000000.3: ");
    assert_contains(err.message, "renamed");

    err = expect_failure(transform, "{" TOKEN "'operationType': 'dropDatabase', " TIME
                                    "'ns': {'db': 'shop'}}");
    assert_int_equal(err.code, FTS_TRANSFORM_UNSUPPORTED_EVENT);
    assert_contains(err.message, "dropDatabase event on shop at 1700000000.3: ");

    err = expect_failure(transform, "{" TOKEN "'operationType': 'createIndexes', " TIME NS "}");
    assert_int_equal(err.code, FTS_TRANSFORM_UNSUPPORTED_EVENT);
    assert_contains(err.message, "createIndexes event on shop.apps");
    assert_contains(err.message, "does not know this kind of change event");
    fts_transform_destroy(transform);
}

static void test_malformed_events(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    struct {
        const char *json;
        int code;
        const char *says;
    } cases[] = {
        {"{" TOKEN TIME NS "'documentKey': {'_id': 1}}", FTS_ERROR_CODE_MISSING,
         "change event without an operationType string"},
        {"{" TOKEN "'operationType': 5, " TIME NS "}", FTS_ERROR_CODE_MISSING,
         "without an operationType"},
        {"{" TOKEN "'operationType': 'delete', " NS "'documentKey': {'_id': 1}}",
         FTS_ERROR_CODE_MISSING, "delete event on shop.apps at ?: the event has no clusterTime"},
        {"{" TOKEN "'operationType': 'delete', 'clusterTime': 5, " NS "'documentKey': {'_id': 1}}",
         FTS_ERROR_CODE_MISSING, "no clusterTime timestamp"},
        {"{" TOKEN "'operationType': 'delete', " TIME "'documentKey': {'_id': 1}}",
         FTS_ERROR_CODE_MISSING, "delete event on ? at 1700000000.3: the event has no ns.db"},
        {"{" TOKEN "'operationType': 'insert', " TIME "'ns': {'db': 'shop'}, 'fullDocument': "
         "{'_id': 1}}",
         FTS_ERROR_CODE_MISSING, "no ns.db and ns.coll"},
        {"{" TOKEN "'operationType': 'insert', " TIME NS "'documentKey': {'_id': 1}}",
         FTS_ERROR_CODE_MISSING,
         "insert event on shop.apps at 1700000000.3: the event has no "
         "fullDocument"},
        {"{" TOKEN "'operationType': 'replace', " TIME NS "'fullDocument': null}",
         FTS_ERROR_CODE_MISSING,
         "replace event on shop.apps at 1700000000.3: the event has no "
         "fullDocument"},
        {"{" TOKEN "'operationType': 'update', " TIME NS "'documentKey': {'_id': 1}, "
         "'fullDocument': 'oops'}",
         FTS_ERROR_CODE_INVALID, "fullDocument is neither a document nor null"},
        {"{" TOKEN "'operationType': 'insert', " TIME NS "'fullDocument': {'name': 'x'}}",
         FTS_ERROR_CODE_MISSING, "the document has no id field \"_id\""},
        {"{" TOKEN "'operationType': 'insert', " TIME NS "'fullDocument': {'_id': [1, 2]}}",
         FTS_ERROR_CODE_INVALID, "id field \"_id\" is an array"},
        /* 2^31 seconds after 2020-01-01 (January 2088): past what version scheme 2 holds. */
        {"{" TOKEN "'operationType': 'delete', 'clusterTime': {'$timestamp': {'t': 3725320448, "
         "'i': 1}}, " NS "'documentKey': {'_id': 1}}",
         FTS_ERROR_CODE_INVALID, "outside what version scheme 2 can hold"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("malformed %zu\n", i);
        fts_error_t err = expect_failure(transform, cases[i].json);
        assert_int_equal(err.code, cases[i].code);
        assert_contains(err.message, cases[i].says);
    }
    fts_transform_destroy(transform);
}

/* ---------------------------------------------------------------------------------------- */
/* Custom id fields and pre-images                                                          */

static void test_original_service_configuration(void **state)
{
    (void)state;
    fts_transform_t *transform = transform_with(
        "id", "name,short_description,developers,publishers,updated_at", FTS_ON_DROP_DELETE, NULL);
    fts_action_t action;
    fts_action_init(&action);
    expect_action(transform,
                  "{" TOKEN "'operationType': 'insert', " TIME "'fullDocument': " APP ", " NS
                  "'documentKey': {'_id': " OID "}}",
                  &action);
    assert_change(&action, FTS_ACTION_INDEX, "1091500",
                  "{\"name\":\"Chess\",\"short_description\":\"Board game\",\"developers\":[\"A\"],"
                  "\"publishers\":[\"B\"],\"updated_at\":\"2026-11-23T10:00:00.000Z\"}");

    /* A delete with the pre-image finds the same id. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS "'documentKey': {'_id': " OID
                  "}, 'fullDocumentBeforeChange': " APP "}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "1091500", NULL);

    /* On a collection sharded by id, documentKey carries it. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS
                  "'documentKey': {'id': 1091500, '_id': " OID "}}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "1091500", NULL);

    /* An update whose lookup found nothing, with the pre-image. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'update', " TIME NS "'documentKey': {'_id': " OID
                  "}, 'updateDescription': {'updatedFields': {}, 'removedFields': []}, "
                  "'fullDocument': null, 'fullDocumentBeforeChange': " APP "}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "1091500", NULL);
    fts_action_cleanup(&action);

    /* Without a pre-image the delete cannot name the document: a clear error, not a guess. */
    fts_error_t err = expect_failure(transform, "{" TOKEN "'operationType': 'delete', " TIME NS
                                                "'documentKey': {'_id': " OID "}}");
    assert_int_equal(err.code, FTS_TRANSFORM_NEEDS_PRE_IMAGE);
    assert_contains(err.message, "delete event on shop.apps at 1700000000.3: documentKey "
                                 "{\"_id\":\"" OID_HEX "\"} has no id field \"id\"");
    assert_contains(err.message, "changeStreamPreAndPostImages");
    err = expect_failure(transform, "{" TOKEN "'operationType': 'update', " TIME NS
                                    "'documentKey': {'_id': " OID "}, 'fullDocument': null, "
                                    "'fullDocumentBeforeChange': null}");
    assert_int_equal(err.code, FTS_TRANSFORM_NEEDS_PRE_IMAGE);

    /* A pre-image without the id field is an error about the pre-image. */
    err = expect_failure(transform, "{" TOKEN "'operationType': 'delete', " TIME NS
                                    "'documentKey': {'_id': 1}, 'fullDocumentBeforeChange': "
                                    "{'_id': 1, 'name': 'x'}}");
    assert_int_equal(err.code, FTS_ERROR_CODE_MISSING);
    assert_contains(err.message, "fullDocumentBeforeChange: the document has no id field \"id\"");
    err = expect_failure(transform, "{" TOKEN "'operationType': 'delete', " TIME NS
                                    "'documentKey': {'_id': 1}, 'fullDocumentBeforeChange': 3}");
    assert_contains(err.message, "fullDocumentBeforeChange is neither a document nor null");
    fts_transform_destroy(transform);
}

/* The id map (FTSYNC_ID_MAP on): what each action means for it. */
static fts_transform_t *mapped_transform(bool id_map)
{
    fts_string_list_t list = {0};
    fts_error_t err = {0};
    assert_true(fts_string_list_parse("name", &list, &err));
    fts_transform_options_t options = {
        .id_field = "id", .id_map = id_map, .fields = &list, .on_drop = FTS_ON_DROP_DELETE};
    fts_transform_t *transform = fts_transform_new(&options, &err);
    if (!transform) {
        fail_msg("transform refused: %s", err.message);
    }
    fts_string_list_cleanup(&list);
    assert_int_equal(fts_transform_id_map(transform), id_map);
    return transform;
}

static void expect_mapped(fts_transform_t *transform, const char *json, fts_action_t *action,
                          fts_id_map_need_t *need)
{
    bson_t *event = event_from(json);
    bool produced = false;
    fts_error_t err = {0};
    if (!fts_transform_event_mapped(transform, event, action, &produced, need, &err)) {
        fail_msg("transform failed: %s", err.message);
    }
    assert_true(produced);
    bson_destroy(event);
}

#define OID_KEY "{ \"$oid\" : \"" OID_HEX "\" }"

static void test_id_map_needs(void **state)
{
    (void)state;
    fts_transform_t *transform = mapped_transform(true);
    fts_action_t action;
    fts_id_map_need_t need = {0};
    fts_action_init(&action);

    /* An insert sets the entry of its _id (canonical extended JSON). */
    expect_mapped(transform,
                  "{" TOKEN "'operationType': 'insert', " TIME "'fullDocument': " APP ", " NS
                  "'documentKey': {'_id': " OID "}}",
                  &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_SET);
    assert_string_equal(need.source_id, OID_KEY);
    assert_string_equal(action.id, "1091500");

    /* An update may change the id field: CHANGE, with the pre-image's id when there is one. */
    expect_mapped(transform,
                  "{" TOKEN "'operationType': 'update', " TIME NS "'documentKey': {'_id': " OID
                  "}, 'fullDocument': {'_id': " OID ", 'id': 7, 'name': 'n'}}",
                  &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_CHANGE);
    assert_null(need.prior_id);
    assert_string_equal(action.id, "7");
    expect_mapped(transform,
                  "{" TOKEN "'operationType': 'replace', " TIME NS "'documentKey': {'_id': " OID
                  "}, 'fullDocument': {'_id': " OID ", 'id': 8, 'name': 'n'}, "
                  "'fullDocumentBeforeChange': {'_id': " OID ", 'id': 7}}",
                  &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_CHANGE);
    assert_string_equal(need.prior_id, "7");
    assert_int_equal(need.prior_id_len, 1);

    /* A delete the event cannot name is left to the map: no id yet, the _id to look up. */
    expect_mapped(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS "'documentKey': {'_id': " OID
                  "}}",
                  &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_LOOKUP);
    assert_string_equal(need.source_id, OID_KEY);
    assert_int_equal(action.op, FTS_ACTION_DELETE);
    assert_null(action.id);
    assert_true(action.version == VERSION);
    assert_string_equal(action.ns, "shop.apps");

    /* An update whose post-image is gone keeps the entry for the delete that follows. */
    expect_mapped(transform,
                  "{" TOKEN "'operationType': 'update', " TIME NS "'documentKey': {'_id': " OID
                  "}, 'fullDocument': null}",
                  &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_LOOKUP_KEEP);

    /* A delete with its pre-image names the id and removes the entry. */
    expect_mapped(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS "'documentKey': {'_id': " OID
                  "}, 'fullDocumentBeforeChange': " APP "}",
                  &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_REMOVE);
    assert_string_equal(action.id, "1091500");

    /* A drop does not touch the map. */
    expect_mapped(transform, "{" TOKEN "'operationType': 'drop', " TIME NS "}", &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_NONE);
    assert_null(need.source_id);

    /* The snapshot sets entries. */
    bson_t *doc = event_from("{'_id': 5, 'id': 105, 'name': 'n'}");
    bool produced = false;
    fts_error_t err = {0};
    assert_true(fts_transform_snapshot_mapped(transform, doc, "shop.apps", 1700000000u, 1, &action,
                                              &produced, &need, &err));
    assert_int_equal(need.use, FTS_ID_MAP_SET);
    assert_string_equal(need.source_id, "{ \"$numberInt\" : \"5\" }");
    bson_destroy(doc);

    /* Without a need to fill (the plain call), the old rule holds even with the map on. */
    fts_error_t failure = expect_failure(transform, "{" TOKEN "'operationType': 'delete', " TIME NS
                                                    "'documentKey': {'_id': " OID "}}");
    assert_int_equal(failure.code, FTS_TRANSFORM_NEEDS_PRE_IMAGE);

    fts_id_map_need_cleanup(&need);
    fts_action_cleanup(&action);
    fts_transform_destroy(transform);

    /* Map off: no needs, and the delete fails as before. */
    transform = mapped_transform(false);
    expect_mapped(transform,
                  "{" TOKEN "'operationType': 'insert', " TIME "'fullDocument': " APP ", " NS
                  "'documentKey': {'_id': " OID "}}",
                  &action, &need);
    assert_int_equal(need.use, FTS_ID_MAP_NONE);
    bson_t *event = event_from("{" TOKEN "'operationType': 'delete', " TIME NS
                               "'documentKey': {'_id': " OID "}}");
    assert_false(fts_transform_event_mapped(transform, event, &action, &produced, &need, &err));
    assert_int_equal(err.code, FTS_TRANSFORM_NEEDS_PRE_IMAGE);
    assert_int_equal(need.use, FTS_ID_MAP_NONE);
    bson_destroy(event);
    fts_id_map_need_cleanup(&need);
    fts_action_cleanup(&action);
    fts_transform_destroy(transform);
}

static void test_snapshot_documents(void **state)
{
    (void)state;
    fts_transform_t *transform = transform_with("id", "name:title", FTS_ON_DROP_DELETE, NULL);
    bson_t *doc = event_from(APP);
    fts_action_t action;
    fts_action_init(&action);
    bool produced = false;
    fts_error_t err = {0};
    assert_true(fts_transform_snapshot(transform, doc, "shop.apps", 1699999000u, 0, &action,
                                       &produced, &err));
    assert_true(produced);
    assert_int_equal(action.op, FTS_ACTION_INDEX);
    assert_int_equal(action.origin, FTS_ACTION_FROM_SNAPSHOT);
    assert_true(action.version == fts_version_from_timestamp(1699999000u, 0));
    assert_int_equal(action.ts_seconds, 1699999000u);
    assert_int_equal(action.ts_increment, 0);
    assert_string_equal(action.ns, "shop.apps");
    assert_string_equal(action.id, "1091500");
    assert_string_equal(action.body, "{\"title\":\"Chess\"}");
    fts_action_cleanup(&action);
    bson_destroy(doc);

    doc = event_from("{'_id': 1, 'name': 'no id field'}");
    assert_false(fts_transform_snapshot(transform, doc, "shop.apps", 1699999000u, 0, &action,
                                        &produced, &err));
    assert_false(produced);
    assert_null(action.ns);
    assert_contains(err.message, "snapshot document of shop.apps: the document has no id field");
    bson_destroy(doc);

    /* The snapshot's time must be a real one: version 0 is refused. */
    doc = event_from(APP);
    assert_false(
        fts_transform_snapshot(transform, doc, "shop.apps", 0, 0, &action, &produced, &err));
    assert_contains(err.message, "outside what version scheme 2 can hold");
    bson_destroy(doc);
    fts_transform_destroy(transform);
}

static void test_bad_options(void **state)
{
    (void)state;
    fts_string_list_t list = {0};
    fts_error_t err = {0};
    assert_true(fts_string_list_parse("a:b.c", &list, &err));
    fts_transform_options_t options = {.fields = &list};
    assert_null(fts_transform_new(&options, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_contains(err.message, "contains '.'");
    fts_string_list_cleanup(&list);

    options = (fts_transform_options_t){.plugin_path = "/nonexistent/plugin.so"};
    assert_null(fts_transform_new(&options, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_contains(err.message, "cannot load transform plugin /nonexistent/plugin.so");
    fts_transform_destroy(NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Plugins                                                                                  */

#define INSERT_PREFIX "{" TOKEN "'operationType': 'insert', " TIME NS "'fullDocument': "

static void test_plugin_keep_replace_drop_error(void **state)
{
    (void)state;
    fts_transform_t *transform =
        transform_with(NULL, "name,kind", FTS_ON_DROP_DELETE, FTSYNC_TEST_PLUGIN_UPPERCASE);
    fts_action_t action;
    fts_action_init(&action);

    /* KEEP: no name to change. */
    expect_action(transform, INSERT_PREFIX "{'_id': 1, 'kind': 'game'}}", &action);
    assert_change(&action, FTS_ACTION_INDEX, "1", "{\"kind\":\"game\"}");

    /* REPLACE: the body comes from the replacement. */
    expect_action(transform, INSERT_PREFIX "{'_id': 2, 'name': 'Chess', 'kind': 'game'}}", &action);
    assert_change(&action, FTS_ACTION_INDEX, "2", "{\"name\":\"CHESS\",\"kind\":\"game\"}");

    /* DROP: the document leaves the index, so an update that filters it out removes it. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'update', " TIME NS "'documentKey': {'_id': 3}, "
                  "'fullDocument': {'_id': 3, 'name': 'x', 'drop_me': true}}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "3", NULL);
    fts_action_cleanup(&action);

    /* ERROR: the plugin's reason, on one line. */
    fts_error_t err = expect_failure(transform, INSERT_PREFIX "{'_id': 4, 'fail': true}}");
    assert_int_equal(err.code, FTS_PLUGIN_FAILED);
    assert_contains(err.message, "insert event on shop.apps at 1700000000.3: transform plugin ");
    assert_contains(err.message, "refused the document: uppercase_name: fail is set on this "
                                 "document");
    assert_not_contains(err.message, "\n");

    /* A result the ABI does not define is an error too. */
    err = expect_failure(transform, INSERT_PREFIX "{'_id': 5, 'bad_result': true}}");
    assert_int_equal(err.code, FTS_PLUGIN_FAILED);
    assert_contains(err.message, "returned 42");

    /* Deletes never reach the plugin. */
    expect_action(transform,
                  "{" TOKEN "'operationType': 'delete', " TIME NS "'documentKey': {'_id': 6}}",
                  &action);
    assert_change(&action, FTS_ACTION_DELETE, "6", NULL);
    fts_action_cleanup(&action);
    fts_transform_destroy(transform);
}

static void test_plugin_id_from_original_document(void **state)
{
    (void)state;
    /* The id field is "name", which the plugin upper-cases: the id keeps the original, as a
     * delete computed from documentKey or the pre-image would. */
    fts_transform_t *transform =
        transform_with("name", NULL, FTS_ON_DROP_DELETE, FTSYNC_TEST_PLUGIN_UPPERCASE);
    fts_action_t action;
    fts_action_init(&action);
    expect_action(transform, INSERT_PREFIX "{'_id': 1, 'name': 'chess'}}", &action);
    assert_change(&action, FTS_ACTION_INDEX, "chess", "{\"name\":\"CHESS\"}");
    fts_action_cleanup(&action);

    /* Snapshot documents go through the plugin too, and a drop becomes a delete. */
    bson_t *doc = event_from("{'_id': 1, 'name': 'gone', 'drop_me': true}");
    bool produced = false;
    assert_true(fts_transform_snapshot(transform, doc, "shop.apps", 1699999000u, 1, &action,
                                       &produced, NULL));
    assert_true(produced);
    assert_int_equal(action.op, FTS_ACTION_DELETE);
    assert_int_equal(action.origin, FTS_ACTION_FROM_SNAPSHOT);
    assert_string_equal(action.id, "gone");
    fts_action_cleanup(&action);
    bson_destroy(doc);
    fts_transform_destroy(transform);
}

static void test_plugin_loading_refusals(void **state)
{
    (void)state;
    fts_error_t err = {0};
    assert_null(fts_plugin_open(FTSYNC_TEST_PLUGIN_WRONG_ABI, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_int_equal(err.code, FTS_ERROR_CODE_UNSUPPORTED);
    assert_contains(err.message, "was built for plugin ABI version 99; this ftsync speaks "
                                 "version 1");

    /* A real shared library without the entry point. */
    assert_null(fts_plugin_open("libm.so.6", &err));
    assert_contains(err.message, "transform plugin libm.so.6 does not export "
                                 "ftsync_transform_document()");

    /* Not a shared library at all. */
    assert_null(fts_plugin_open(FTSYNC_SOURCE_DIR "/core/ftsync_plugin.h", &err));
    assert_contains(err.message, "cannot load transform plugin");

    fts_plugin_t *plugin = fts_plugin_open(FTSYNC_TEST_PLUGIN_UPPERCASE, &err);
    assert_non_null(plugin);
    assert_string_equal(fts_plugin_path(plugin), FTSYNC_TEST_PLUGIN_UPPERCASE);
    fts_plugin_close(plugin);
    fts_plugin_close(NULL);
}

/* The poison plugin (no ABI symbol: it is optional) keeps ordinary documents and kills the
 * process on a poison one, which is what the worker-crash tests rely on. */
static void test_poison_plugin_crashes_only_its_process(void **state)
{
    (void)state;
    fts_transform_t *transform =
        transform_with(NULL, NULL, FTS_ON_DROP_DELETE, FTSYNC_TEST_PLUGIN_POISON);
    fts_action_t action;
    fts_action_init(&action);
    expect_action(transform, INSERT_PREFIX "{'_id': 1, 'poison': false}}", &action);
    assert_change(&action, FTS_ACTION_INDEX, "1", "{\"poison\":false}");
    fts_action_cleanup(&action);

    bson_t *event = event_from(INSERT_PREFIX "{'_id': 2, 'poison': true}}");
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        bool produced = false;
        fts_transform_event(transform, event, &action, &produced, NULL);
        _exit(0); /* not reached */
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    bson_destroy(event);
    fts_transform_destroy(transform);
}

/* Every change of a transaction has the commit's clusterTime; its txnOpIndex (in the resume
 * token) orders them, so an insert and then a delete of one document in one transaction give
 * the delete the larger version (scheme 2), and a replay gives the same versions. */
static void test_transaction_positions(void **state)
{
    (void)state;
    fts_transform_t *transform = default_transform();
    fts_action_t insert, remove, again;
    fts_action_init(&insert);
    fts_action_init(&remove);
    fts_action_init(&again);
#define TXN                                                                                        \
    "'lsid': {'id': {'$binary': {'base64': 'AAAAAAAAAAAAAAAAAAAAAA==', 'subType': '04'}}}, "       \
    "'txnNumber': {'$numberLong': '7'}, "
    expect_action(transform,
                  "{'_id': {'_data': '826553F100000000032B022C0100296E'}, "
                  "'operationType': 'insert', " TIME "'fullDocument': " APP ", " NS TXN
                  "'documentKey': {'_id': " OID "}}",
                  &insert);
    expect_action(transform,
                  "{'_id': {'_data': '826553F100000000032B022C01002B026E'}, "
                  "'operationType': 'delete', " TIME NS TXN "'documentKey': {'_id': " OID "}}",
                  &remove);
    expect_action(transform,
                  "{'_id': {'_data': '826553F100000000032B022C01002B046E'}, "
                  "'operationType': 'insert', " TIME "'fullDocument': " APP ", " NS TXN
                  "'documentKey': {'_id': " OID "}}",
                  &again);
    assert_true(insert.version == VERSION);
    assert_true(remove.version == VERSION + 1);
    assert_true(again.version == VERSION + 2);
    assert_int_equal(remove.op, FTS_ACTION_DELETE);
    fts_action_cleanup(&insert);
    fts_action_cleanup(&remove);
    fts_action_cleanup(&again);

    /* A transaction's change whose token does not say where it stands stops the pipeline
     * instead of being written with a version that could lose to its neighbours. */
    fts_error_t err = expect_failure(transform, "{'_id': {'_data': 'ABCD'}, "
                                                "'operationType': 'delete', " TIME NS TXN
                                                "'documentKey': {'_id': " OID "}}");
    assert_int_equal(err.code, FTS_TRANSFORM_UNSUPPORTED_EVENT);
    assert_contains(err.message, "txnOpIndex");
#undef TXN
    fts_transform_destroy(transform);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert),
        cmocka_unit_test(test_transaction_positions),
        cmocka_unit_test(test_replace_and_update_with_document),
        cmocka_unit_test(test_update_without_document_is_delete),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_drop_and_on_drop),
        cmocka_unit_test(test_invalidate_gives_nothing),
        cmocka_unit_test(test_unsupported_events),
        cmocka_unit_test(test_malformed_events),
        cmocka_unit_test(test_original_service_configuration),
        cmocka_unit_test(test_snapshot_documents),
        cmocka_unit_test(test_id_map_needs),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_plugin_keep_replace_drop_error),
        cmocka_unit_test(test_plugin_id_from_original_document),
        cmocka_unit_test(test_plugin_loading_refusals),
        cmocka_unit_test(test_poison_plugin_crashes_only_its_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
