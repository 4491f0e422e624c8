/*
 * test_mongo_source.c - the MongoDB source of `ftsync extract` (adapters/mongo/mongo_source.h)
 * against the replica-set double, or the deployment FTSYNC_TEST_MONGO_URI names.
 *
 * What is pinned: events arrive in order, with mongod's shapes and increasing cluster times;
 * the resume token advances even while nothing happens; a saved token, an invalidate's token
 * (startAfter) and a noted cluster time each resume exactly where they should; a position
 * that is gone is told apart (history lost) from everything else (retryable); libmongoc's own
 * resumes lose nothing; a step-down is survived the way the extract loop would survive it; a
 * snapshot scan resumed after an _id returns every later document once, whatever its _id's
 * type; libmongoc's log lines come out through fts_log. Every test uses its own database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "assertions.h"

#include <mongoc/mongoc.h>

#include "backoff.h"
#include "log.h"
#include "mongo_double.h"
#include "test_time.h"
#include "mongo_source.h"

/* The await time the tests use: short, so idle reads are quick. */
#define AWAIT_MS 200
/* How long a test waits for an event it expects before failing. */
#define EVENT_WAIT_MS 10000

typedef struct {
    fts_test_mongo_double_t *server; /* the shared double (or external deployment) */
} group_t;

static group_t group;

typedef struct {
    const char *uri;
    char db[96];
    mongoc_client_t *client; /* the test's own writer, never the source's */
    mongoc_collection_t *coll;
    fts_mongo_source_t *source;
} fixture_t;

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static fts_test_mongo_double_t *start_double(const char *const *extra_args)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_mongo_double_t *server = fts_test_mongo_double_start(extra_args, &err);
    if (!server) {
        fail_msg("cannot start the MongoDB double: %s", err.message);
    }
    return server;
}

static int group_setup(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    group.server = fts_test_mongo_double_start(NULL, &err);
    if (!group.server) {
        fprintf(stderr, "cannot start the MongoDB double: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    bool stopped = fts_test_mongo_double_stop(group.server, &err);
    fts_test_mongo_double_destroy(group.server);
    if (!stopped) {
        fprintf(stderr, "the MongoDB double did not stop cleanly: %s\n", err.message);
        return -1;
    }
    return 0;
}

static void fixture_init(fixture_t *f, const char *uri)
{
    memset(f, 0, sizeof *f);
    f->uri = uri;
    fts_test_mongo_unique_name("ms", f->db, sizeof f->db);
    f->client = mongoc_client_new(uri);
    assert_non_null(f->client);
    mongoc_client_set_error_api(f->client, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_set_appname(f->client, "ftsync-test-writer");
    f->coll = mongoc_client_get_collection(f->client, f->db, "items");
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    fixture_init(f, fts_test_mongo_double_uri(group.server));
    *state = f;
    return 0;
}

static void fixture_cleanup(fixture_t *f)
{
    fts_mongo_source_destroy(f->source);
    f->source = NULL;
    if (f->client) {
        /* Whatever a test armed must not fail the next one. */
        bson_t *off = BCON_NEW("configureFailPoint", "failCommand", "mode", "off");
        mongoc_client_command_simple(f->client, "admin", off, NULL, NULL, NULL);
        bson_destroy(off);
        mongoc_database_t *db = mongoc_client_get_database(f->client, f->db);
        mongoc_database_drop(db, NULL);
        mongoc_database_destroy(db);
    }
    mongoc_collection_destroy(f->coll);
    mongoc_client_destroy(f->client);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    fixture_cleanup(f);
    free(f);
    return 0;
}

static fts_mongo_source_options_t quick_options(void)
{
    fts_mongo_source_options_t options;
    fts_mongo_source_options_init(&options);
    options.max_await_time_ms = AWAIT_MS;
    return options;
}

static fts_mongo_source_t *make_source(fixture_t *f, const char *collection,
                                       const fts_mongo_source_options_t *options)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_mongo_source_t *source = fts_mongo_source_new(f->uri, f->db, collection, options, &err);
    if (!source) {
        fail_msg("cannot make a source: %s", err.message);
    }
    return source;
}

static void open_ok(fts_mongo_source_t *source, const fts_source_position_t *position)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_mongo_source_open(source, position, &err)) {
        fail_msg("cannot open the change stream: %s", err.message);
    }
}

/* The next event, failing the test on an error or when none comes in time. */
static const bson_t *next_event(fts_mongo_source_t *source)
{
    uint64_t deadline = now_ms() + EVENT_WAIT_MS;
    while (now_ms() < deadline) {
        fts_error_t err;
        fts_error_clear(&err);
        fts_source_next_t what;
        const bson_t *event = NULL;
        if (!fts_mongo_source_next(source, &what, &event, &err)) {
            fail_msg("reading the change stream failed: %s", err.message);
        }
        if (what == FTS_SOURCE_NEXT_EVENT) {
            assert_non_null(event);
            return event;
        }
        assert_null(event);
        assert_int_equal(what, FTS_SOURCE_NEXT_IDLE);
    }
    fail_msg("no change event within %d ms", EVENT_WAIT_MS);
    return NULL;
}

static void expect_idle(fts_mongo_source_t *source)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_source_next_t what;
    const bson_t *event = NULL;
    if (!fts_mongo_source_next(source, &what, &event, &err)) {
        fail_msg("reading the change stream failed: %s", err.message);
    }
    if (what == FTS_SOURCE_NEXT_EVENT) {
        char *json = bson_as_canonical_extended_json(event, NULL);
        fail_msg("expected no event, got %s", json);
    }
    assert_int_equal(what, FTS_SOURCE_NEXT_IDLE);
}

static const char *event_string(const bson_t *event, const char *path)
{
    bson_iter_t iter, found;
    if (bson_iter_init(&iter, event) && bson_iter_find_descendant(&iter, path, &found) &&
        BSON_ITER_HOLDS_UTF8(&found)) {
        return bson_iter_utf8(&found, NULL);
    }
    return NULL;
}

static bool event_value(const bson_t *event, const char *path, bson_iter_t *found)
{
    bson_iter_t iter;
    return bson_iter_init(&iter, event) && bson_iter_find_descendant(&iter, path, found);
}

static int64_t event_int(const bson_t *event, const char *path)
{
    bson_iter_t found;
    if (!event_value(event, path, &found) || !BSON_ITER_HOLDS_NUMBER(&found)) {
        char *json = bson_as_canonical_extended_json(event, NULL);
        fail_msg("no number at %s in %s", path, json);
    }
    return bson_iter_as_int64(&found);
}

static bool event_is_null(const bson_t *event, const char *path)
{
    bson_iter_t found;
    return event_value(event, path, &found) && BSON_ITER_HOLDS_NULL(&found);
}

static uint64_t event_time(const bson_t *event)
{
    bson_iter_t found;
    assert_true(event_value(event, "clusterTime", &found));
    assert_true(BSON_ITER_HOLDS_TIMESTAMP(&found));
    uint32_t t, i;
    bson_iter_timestamp(&found, &t, &i);
    return (uint64_t)t << 32 | i;
}

static void assert_operation(const bson_t *event, const char *operation)
{
    const char *type = event_string(event, "operationType");
    if (!type || strcmp(type, operation) != 0) {
        char *json = bson_as_canonical_extended_json(event, NULL);
        fail_msg("expected a %s event, got %s", operation, json);
    }
}

/* The current token as JSON, failing when there is none; free with bson_free. */
static char *token_json(fts_mongo_source_t *source)
{
    char *json = fts_mongo_source_resume_token_json(source);
    assert_non_null(json);
    return json;
}

/* The event's own _id as JSON; free with bson_free. */
static char *event_id_json(const bson_t *event)
{
    bson_iter_t found;
    uint32_t len;
    const uint8_t *data;
    bson_t id;
    assert_true(event_value(event, "_id", &found));
    assert_true(BSON_ITER_HOLDS_DOCUMENT(&found));
    bson_iter_document(&found, &len, &data);
    assert_true(bson_init_static(&id, data, len));
    return bson_as_canonical_extended_json(&id, NULL);
}

/* The event's _id's _data string; free with bson_free. */
static char *event_id_data(const bson_t *event)
{
    bson_iter_t found;
    assert_true(event_value(event, "_id._data", &found));
    assert_true(BSON_ITER_HOLDS_UTF8(&found));
    return bson_strdup(bson_iter_utf8(&found, NULL));
}

/* The token's _data string (mongod's and the double's tokens sort by it). */
static char *token_data(fts_mongo_source_t *source)
{
    const bson_t *token = fts_mongo_source_resume_token(source);
    assert_non_null(token);
    bson_iter_t iter;
    assert_true(bson_iter_init_find(&iter, token, "_data"));
    assert_true(BSON_ITER_HOLDS_UTF8(&iter));
    return bson_strdup(bson_iter_utf8(&iter, NULL));
}

static void run_admin(fixture_t *f, bson_t *command)
{
    bson_error_t error;
    bson_t reply;
    if (!mongoc_client_command_simple(f->client, "admin", command, NULL, &reply, &error)) {
        char *json = bson_as_canonical_extended_json(command, NULL);
        fail_msg("%s failed: %s", json, error.message);
    }
    bson_destroy(&reply);
    bson_destroy(command);
}

static void insert_id(fixture_t *f, mongoc_collection_t *coll, int64_t id)
{
    bson_error_t error;
    bson_t *doc = BCON_NEW("_id", BCON_INT64(id), "n", BCON_INT64(id * 10));
    if (!mongoc_collection_insert_one(coll ? coll : f->coll, doc, NULL, NULL, &error)) {
        fail_msg("insert of %lld failed: %s", (long long)id, error.message);
    }
    bson_destroy(doc);
}

static void insert_range(fixture_t *f, int64_t first, int64_t last)
{
    for (int64_t id = first; id <= last; id++) {
        insert_id(f, NULL, id);
    }
}

static fts_source_position_t after_token(fts_source_from_t from, const char *token)
{
    fts_source_position_t position = {.from = from, .token = token};
    return position;
}

/* Reads inserts until the one of last_id, checking they are first_id..last_id in order. */
static void expect_inserts(fts_mongo_source_t *source, int64_t first_id, int64_t last_id)
{
    for (int64_t id = first_id; id <= last_id; id++) {
        const bson_t *event = next_event(source);
        assert_operation(event, "insert");
        assert_int_equal(event_int(event, "documentKey._id"), id);
    }
}

/* --- events, tokens, positions --- */

static void test_event_shapes_in_order(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);

    bson_error_t error;
    uint64_t last_time = 0;
    char ns_db[128];
    snprintf(ns_db, sizeof ns_db, "%s", f->db);

    bson_t *doc = BCON_NEW("_id", BCON_INT32(1), "name", BCON_UTF8("first"));
    assert_true(mongoc_collection_insert_one(f->coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
    const bson_t *event = next_event(f->source);
    assert_operation(event, "insert");
    assert_string_equal(event_string(event, "ns.db"), ns_db);
    assert_string_equal(event_string(event, "ns.coll"), "items");
    assert_int_equal(event_int(event, "documentKey._id"), 1);
    assert_int_equal(event_int(event, "fullDocument._id"), 1);
    assert_string_equal(event_string(event, "fullDocument.name"), "first");
    last_time = event_time(event);
    /* The token is the event's _id, or (the event ending its batch) a post-batch token at or
     * after it: mongod gives the event's own, the double a high-water mark at its time. */
    char *id = event_id_data(event);
    char *token = token_data(f->source);
    assert_true(strcmp(token, id) >= 0);
    bson_free(id);
    bson_free(token);
    assert_false(fts_mongo_source_token_needs_start_after(f->source));

    bson_t *selector = BCON_NEW("_id", BCON_INT32(1));
    bson_t *update = BCON_NEW("$set", "{", "name", BCON_UTF8("second"), "}");
    assert_true(mongoc_collection_update_one(f->coll, selector, update, NULL, NULL, &error));
    bson_destroy(update);
    event = next_event(f->source);
    assert_operation(event, "update");
    assert_int_equal(event_int(event, "documentKey._id"), 1);
    assert_string_equal(event_string(event, "updateDescription.updatedFields.name"), "second");
    /* updateLookup: the document as it is now. */
    assert_string_equal(event_string(event, "fullDocument.name"), "second");
    assert_true(event_time(event) > last_time);
    last_time = event_time(event);

    bson_t *replacement = BCON_NEW("other", BCON_UTF8("third"));
    assert_true(mongoc_collection_replace_one(f->coll, selector, replacement, NULL, NULL, &error));
    bson_destroy(replacement);
    event = next_event(f->source);
    assert_operation(event, "replace");
    assert_int_equal(event_int(event, "documentKey._id"), 1);
    assert_string_equal(event_string(event, "fullDocument.other"), "third");
    assert_null(event_string(event, "fullDocument.name"));
    assert_true(event_time(event) > last_time);
    last_time = event_time(event);

    assert_true(mongoc_collection_delete_one(f->coll, selector, NULL, NULL, &error));
    event = next_event(f->source);
    assert_operation(event, "delete");
    assert_int_equal(event_int(event, "documentKey._id"), 1);
    bson_iter_t found;
    assert_false(event_value(event, "fullDocument", &found));
    assert_true(event_time(event) > last_time);
    last_time = event_time(event);

    /* An update whose document is deleted before the event is read: updateLookup finds none
     * and says so with a null fullDocument (the transform turns that into a delete). */
    doc = BCON_NEW("_id", BCON_INT32(1), "name", BCON_UTF8("again"));
    assert_true(mongoc_collection_insert_one(f->coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
    update = BCON_NEW("$set", "{", "name", BCON_UTF8("gone soon"), "}");
    assert_true(mongoc_collection_update_one(f->coll, selector, update, NULL, NULL, &error));
    bson_destroy(update);
    assert_true(mongoc_collection_delete_one(f->coll, selector, NULL, NULL, &error));
    const char *expected[] = {"insert", "update", "delete"};
    for (size_t i = 0; i < 3; i++) {
        event = next_event(f->source);
        assert_operation(event, expected[i]);
        assert_true(event_time(event) > last_time);
        last_time = event_time(event);
        if (i == 1) {
            assert_true(event_is_null(event, "fullDocument"));
        }
    }
    expect_idle(f->source);
    bson_destroy(selector);
}

static void test_token_advances_while_idle(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);

    /* The aggregate's reply already carries a post-batch token. */
    uint64_t start = now_ms();
    expect_idle(f->source);
    uint64_t waited = now_ms() - start;
    assert_true(waited < 5000);
    char *before = token_data(f->source);

    /* Writes elsewhere move the cluster time; the watched collection stays quiet. */
    mongoc_collection_t *other = mongoc_client_get_collection(f->client, f->db, "elsewhere");
    for (int i = 0; i < 3; i++) {
        insert_id(f, other, i);
    }
    mongoc_collection_destroy(other);
    expect_idle(f->source);
    char *after = token_data(f->source);
    assert_true(strcmp(after, before) > 0);

    /* Resuming from the idle token sees what is written next, and nothing older. */
    char *saved = token_json(f->source);
    insert_range(f, 1, 2);
    fts_source_position_t position = after_token(FTS_SOURCE_RESUME_AFTER, saved);
    open_ok(f->source, &position);
    expect_inserts(f->source, 1, 2);
    expect_idle(f->source);

    bson_free(saved);
    bson_free(before);
    bson_free(after);
}

static void test_resume_after_saved_token(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    options.batch_size = 2; /* the stream spans several batches */
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);
    insert_range(f, 1, 5);
    expect_inserts(f->source, 1, 3);
    char *saved = token_json(f->source);
    fts_mongo_source_close(f->source);
    assert_null(fts_mongo_source_resume_token(f->source));

    insert_range(f, 6, 7);
    fts_source_position_t position = after_token(FTS_SOURCE_RESUME_AFTER, saved);
    open_ok(f->source, &position);
    expect_inserts(f->source, 4, 7);
    expect_idle(f->source);

    /* The same token again: the same events again (replays are the caller's business). */
    open_ok(f->source, &position);
    expect_inserts(f->source, 4, 7);
    bson_free(saved);
}

static void test_start_after_invalidate(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);
    insert_id(f, NULL, 1);
    expect_inserts(f->source, 1, 1);

    bson_error_t error;
    assert_true(mongoc_collection_drop(f->coll, &error));
    const bson_t *event = next_event(f->source);
    assert_operation(event, "drop");
    assert_string_equal(event_string(event, "ns.coll"), "items");
    assert_false(fts_mongo_source_token_needs_start_after(f->source));
    event = next_event(f->source);
    assert_operation(event, "invalidate");
    char *invalidate_id = event_id_json(event);
    assert_true(fts_mongo_source_token_needs_start_after(f->source));
    char *saved = token_json(f->source);
    assert_string_equal(saved, invalidate_id);

    /* The stream is over: next says so instead of waiting. */
    fts_error_t err;
    fts_source_next_t what;
    assert_true(fts_mongo_source_next(f->source, &what, &event, &err));
    assert_int_equal(what, FTS_SOURCE_NEXT_INVALIDATED);
    assert_null(event);
    assert_true(fts_mongo_source_token_needs_start_after(f->source));

    /* The collection comes back; startAfter the invalidate follows it. */
    insert_range(f, 2, 3);
    fts_source_position_t position = after_token(FTS_SOURCE_START_AFTER, saved);
    open_ok(f->source, &position);
    /* Until an event arrives the token may still be the invalidate's (mongod may return it as
     * the post-batch token): keep saving it for startAfter. */
    assert_true(fts_mongo_source_token_needs_start_after(f->source));
    expect_inserts(f->source, 2, 2);
    assert_false(fts_mongo_source_token_needs_start_after(f->source));
    expect_inserts(f->source, 3, 3);
    expect_idle(f->source);

    /* resumeAfter refuses an invalidate's token (mongod: 260 InvalidResumeToken). */
    position.from = FTS_SOURCE_RESUME_AFTER;
    fts_error_clear(&err);
    bool opened = fts_mongo_source_open(f->source, &position, &err);
    if (opened) {
        fts_source_next_t seen;
        const bson_t *ignored;
        opened = fts_mongo_source_next(f->source, &seen, &ignored, &err);
        if (opened) {
            fail_msg("resumeAfter an invalidate's token was accepted");
        }
    }
    assert_int_equal(err.domain, FTS_ERROR_MONGO);
    assert_int_equal(fts_mongo_source_server_code(f->source), 260);
    assert_true(fts_mongo_error_is_history_lost(&err));

    bson_free(saved);
    bson_free(invalidate_id);
}

static void test_start_at_operation_time(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    insert_id(f, NULL, 0); /* before the noted time: not wanted, though "at" it is allowed */

    fts_error_t err;
    fts_timestamp_t noted;
    assert_true(fts_mongo_source_cluster_time(f->source, &noted, &err));
    assert_true(noted.seconds > 0);
    uint64_t noted_version = (uint64_t)noted.seconds << 32 | noted.increment;
    insert_range(f, 1, 3);

    fts_source_position_t position = {.from = FTS_SOURCE_START_AT_TIME, .time = noted};
    open_ok(f->source, &position);
    const bson_t *event = next_event(f->source);
    assert_operation(event, "insert");
    assert_true(event_time(event) >= noted_version);
    if (event_int(event, "documentKey._id") == 0) {
        /* Only possible when the insert's time is the noted time itself. */
        assert_int_equal(event_time(event), noted_version);
        event = next_event(f->source);
    }
    assert_int_equal(event_int(event, "documentKey._id"), 1);
    expect_inserts(f->source, 2, 3);
    expect_idle(f->source);

    /* The cluster time moves forward. */
    fts_timestamp_t later;
    assert_true(fts_mongo_source_cluster_time(f->source, &later, &err));
    assert_true(((uint64_t)later.seconds << 32 | later.increment) > noted_version);

    /* 0:0 is no time: refused rather than taken for "now" as libmongoc would. */
    position.time.seconds = 0;
    position.time.increment = 0;
    assert_false(fts_mongo_source_open(f->source, &position, &err));
    assert_contains(err.message, "startAtOperationTime");
}

/* --- history lost and bad tokens --- */

static void test_history_lost(void **state)
{
    fixture_t *f = *state;
    fts_test_mongo_double_t *small = NULL;
    fixture_t local;
    if (!fts_test_mongo_double_is_external(group.server)) {
        const char *args[] = {"--history-events", "8", NULL};
        small = start_double(args);
        fixture_init(&local, fts_test_mongo_double_uri(small));
        f = &local;
    }
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);
    insert_id(f, NULL, 1);
    expect_inserts(f->source, 1, 1);
    char *saved = token_json(f->source);
    fts_mongo_source_close(f->source);

    fts_error_t err;
    fts_error_clear(&err);
    if (small) {
        insert_range(f, 2, 40); /* far more than the 8 events the double keeps */
    } else {
        /* A real server keeps its oplog: make it answer as if the history were gone. */
        run_admin(f, BCON_NEW("configureFailPoint", "failCommand", "mode", "{", "times",
                              BCON_INT32(1), "}", "data", "{", "failCommands", "[",
                              BCON_UTF8("aggregate"), "]", "errorCode", BCON_INT32(286), "}"));
    }
    fts_source_position_t position = after_token(FTS_SOURCE_RESUME_AFTER, saved);
    bool ok = fts_mongo_source_open(f->source, &position, &err);
    if (ok) {
        fts_source_next_t what;
        const bson_t *event;
        ok = fts_mongo_source_next(f->source, &what, &event, &err);
        if (ok) {
            fail_msg("resuming from a token older than the history did not fail");
        }
    }
    assert_int_equal(err.domain, FTS_ERROR_MONGO);
    assert_int_equal(err.code, FTS_SOURCE_HISTORY_LOST);
    assert_true(fts_mongo_error_is_history_lost(&err));
    assert_int_equal(fts_mongo_source_server_code(f->source), 286);
    assert_contains(err.message, "286");
    assert_contains(err.message, "ChangeStreamHistoryLost");
    assert_contains(err.message, f->db);

    /* The resync's way back in: a fresh stream from now works. */
    open_ok(f->source, NULL);
    expect_idle(f->source);

    bson_free(saved);
    if (small) {
        fixture_cleanup(&local);
        fts_error_clear(&err);
        assert_true(fts_test_mongo_double_stop(small, &err));
        fts_test_mongo_double_destroy(small);
    }
}

static void test_malformed_tokens(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    fts_error_t err;

    /* Not a resume token at all: refused before asking the server. */
    fts_source_position_t position = after_token(FTS_SOURCE_RESUME_AFTER, "{\"foo\": 1}");
    fts_error_clear(&err);
    assert_false(fts_mongo_source_open(f->source, &position, &err));
    assert_true(fts_mongo_error_is_history_lost(&err));
    assert_contains(err.message, "no _data");
    assert_contains(err.message, "\"foo\"");
    position.token = NULL;
    assert_false(fts_mongo_source_open(f->source, &position, &err));
    assert_true(fts_mongo_error_is_history_lost(&err));

    /* Shaped like one, but the server never issued it. */
    position =
        after_token(FTS_SOURCE_RESUME_AFTER, "{\"_data\": \"8200000001000000012B0229296E04\"}");
    fts_error_clear(&err);
    bool ok = fts_mongo_source_open(f->source, &position, &err);
    if (ok) {
        fts_source_next_t what;
        const bson_t *event;
        ok = fts_mongo_source_next(f->source, &what, &event, &err);
        if (ok) {
            fail_msg("a resume token the server never issued was accepted");
        }
    }
    if (!fts_mongo_error_is_history_lost(&err)) {
        fail_msg("a resume token the server never issued: %s", err.message);
    }
    assert_true(fts_mongo_source_server_code(f->source) > 0);
    fprintf(stderr, "(garbage token: %s)\n", err.message);
    if (!fts_test_mongo_double_is_external(group.server)) {
        /* Hex that is no KeyString: mongod's 50811, as the double answers. */
        assert_int_equal(fts_mongo_source_server_code(f->source), 50811);
    }

    /* Not even hex (mongod: FailedToParse), and _data of the wrong type (mongod: 40647). */
    position = after_token(FTS_SOURCE_START_AFTER, "{\"_data\": \"zz-not-hex\"}");
    fts_error_clear(&err);
    ok = fts_mongo_source_open(f->source, &position, &err);
    if (ok) {
        fts_source_next_t what;
        const bson_t *event;
        ok = fts_mongo_source_next(f->source, &what, &event, &err);
        assert_false(ok);
    }
    if (!fts_mongo_error_is_history_lost(&err)) {
        fail_msg("a resume token that is not hex: %s", err.message);
    }
    assert_int_equal(fts_mongo_source_server_code(f->source), 9);
    position =
        after_token(FTS_SOURCE_RESUME_AFTER,
                    "{\"_data\": {\"$binary\": {\"base64\": \"YWI=\", \"subType\": \"00\"}}}");
    fts_error_clear(&err);
    assert_false(fts_mongo_source_open(f->source, &position, &err));
    assert_true(fts_mongo_error_is_history_lost(&err));
    assert_contains(err.message, "not a string");

    /* A saved text that is no JSON object. */
    fts_error_clear(&err);
    assert_null(fts_mongo_token_from_json("not json", &err));
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    fts_error_clear(&err);
    assert_null(fts_mongo_token_from_json("{\"_data\": ", &err));
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    fts_error_clear(&err);
    assert_null(fts_mongo_token_from_json(NULL, &err));
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
}

/* --- fail points: libmongoc's own resumes, and errors it gives up on --- */

/* Arms failCommand for the next getMore of the source (its connection names app "ftsync"). */
static void fail_next_get_more(fixture_t *f, const char *how)
{
    bson_t *command;
    if (strcmp(how, "close") == 0) {
        command = BCON_NEW("configureFailPoint", "failCommand", "mode", "{", "times", BCON_INT32(1),
                           "}", "data", "{", "failCommands", "[", BCON_UTF8("getMore"), "]",
                           "closeConnection", BCON_BOOL(true), "appName", BCON_UTF8("ftsync"), "}");
    } else if (strcmp(how, "resumable") == 0) {
        /* BadValue is not resumable by itself: only the label makes libmongoc resume. */
        command =
            BCON_NEW("configureFailPoint", "failCommand", "mode", "{", "times", BCON_INT32(1), "}",
                     "data", "{", "failCommands", "[", BCON_UTF8("getMore"), "]", "errorCode",
                     BCON_INT32(2), "errorLabels", "[", BCON_UTF8("ResumableChangeStreamError"),
                     "]", "appName", BCON_UTF8("ftsync"), "}");
    } else {
        command = BCON_NEW("configureFailPoint", "failCommand", "mode", "{", "times", BCON_INT32(1),
                           "}", "data", "{", "failCommands", "[", BCON_UTF8("getMore"), "]",
                           "errorCode", BCON_INT32(atoi(how)), "errorLabels", "[", "]", "appName",
                           BCON_UTF8("ftsync"), "}");
    }
    run_admin(f, command);
}

static void resumed_without_loss(fixture_t *f, const char *how)
{
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);
    insert_id(f, NULL, 1);
    expect_inserts(f->source, 1, 1);
    uint64_t resumes = fts_mongo_source_resume_count(f->source);

    fail_next_get_more(f, how);
    insert_range(f, 2, 4);
    expect_inserts(f->source, 2, 4);
    expect_idle(f->source);
    assert_int_equal(fts_mongo_source_resume_count(f->source), resumes + 1);
}

static void test_close_connection_on_get_more(void **state)
{
    resumed_without_loss(*state, "close");
}

static void test_resumable_error_label_on_get_more(void **state)
{
    resumed_without_loss(*state, "resumable");
}

static void test_non_resumable_error_is_retryable(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);
    insert_id(f, NULL, 1);
    expect_inserts(f->source, 1, 1);
    char *checkpoint = token_json(f->source);

    fail_next_get_more(f, "2");
    insert_range(f, 2, 3);
    fts_error_t err;
    fts_error_clear(&err);
    fts_source_next_t what;
    const bson_t *event = NULL;
    assert_false(fts_mongo_source_next(f->source, &what, &event, &err));
    assert_null(event);
    assert_int_equal(err.domain, FTS_ERROR_MONGO);
    assert_int_equal(err.code, FTS_MONGO_RETRYABLE);
    assert_false(fts_mongo_error_is_history_lost(&err));
    assert_int_equal(fts_mongo_source_server_code(f->source), 2);
    assert_contains(err.message, "server error 2 ");
    assert_contains(err.message, "failCommand");
    /* The stream stays failed until reopened. */
    assert_false(fts_mongo_source_next(f->source, &what, &event, &err));

    /* What the caller does: reopen from its checkpoint. Nothing is lost. */
    fts_source_position_t position = after_token(FTS_SOURCE_RESUME_AFTER, checkpoint);
    open_ok(f->source, &position);
    expect_inserts(f->source, 2, 3);
    expect_idle(f->source);

    /* A getMore failing with ChangeStreamHistoryLost is history lost, not retryable. */
    fail_next_get_more(f, "286");
    fts_error_clear(&err);
    assert_false(fts_mongo_source_next(f->source, &what, &event, &err));
    assert_true(fts_mongo_error_is_history_lost(&err));
    assert_int_equal(fts_mongo_source_server_code(f->source), 286);

    /* CappedPositionLost and ChangeStreamFatalError too. */
    int codes[] = {136, 280};
    for (size_t i = 0; i < 2; i++) {
        open_ok(f->source, &position);
        char code[8];
        snprintf(code, sizeof code, "%d", codes[i]);
        fail_next_get_more(f, code);
        fts_error_clear(&err);
        bool ok = true;
        for (int reads = 0; ok && reads < 10; reads++) {
            ok = fts_mongo_source_next(f->source, &what, &event, &err);
        }
        assert_false(ok);
        assert_true(fts_mongo_error_is_history_lost(&err));
        assert_int_equal(fts_mongo_source_server_code(f->source), codes[i]);
    }
    bson_free(checkpoint);
}

/* Reopens source at checkpoint, with capped backoff, until it works (30 s at most). Every
 * failure on the way must be retryable. */
static void reopen_with_backoff(fts_mongo_source_t *source, const bson_t *checkpoint,
                                unsigned *reopens)
{
    fts_backoff_t backoff;
    fts_backoff_init(&backoff, 50, 500, 42);
    uint64_t deadline = now_ms() + 30000;
    char *json = bson_as_canonical_extended_json(checkpoint, NULL);
    fts_source_position_t position = after_token(FTS_SOURCE_RESUME_AFTER, json);
    for (;;) {
        fts_error_t err;
        fts_error_clear(&err);
        (*reopens)++;
        if (fts_mongo_source_open(source, &position, &err)) {
            bson_free(json);
            return;
        }
        if (err.code != FTS_MONGO_RETRYABLE) {
            fail_msg("reopening failed and is not retryable: %s", err.message);
        }
        fprintf(stderr, "(reopen failed, retrying: %s)\n", err.message);
        if (now_ms() > deadline) {
            fail_msg("could not reopen within 30 s: %s", err.message);
        }
        fts_test_sleep_ms((long)fts_backoff_next_ms(&backoff));
    }
}

/* The extract loop in small: read; after each event note the token as the checkpoint; on a
 * retryable error reopen from the checkpoint with capped backoff. Returns when the insert of
 * want_id arrived; fails the test after 30 s. */
static void follow_until(fts_mongo_source_t *source, bson_t **checkpoint, int64_t want_id,
                         int64_t *next_expected, unsigned *reopens)
{
    uint64_t deadline = now_ms() + 30000;
    while (now_ms() < deadline) {
        fts_error_t err;
        fts_error_clear(&err);
        fts_source_next_t what;
        const bson_t *event = NULL;
        if (!fts_mongo_source_next(source, &what, &event, &err)) {
            assert_false(fts_mongo_error_is_history_lost(&err));
            assert_int_equal(err.code, FTS_MONGO_RETRYABLE);
            fprintf(stderr, "(next failed, reopening: %s)\n", err.message);
            reopen_with_backoff(source, *checkpoint, reopens);
            continue;
        }
        if (what != FTS_SOURCE_NEXT_EVENT) {
            continue;
        }
        assert_operation(event, "insert");
        int64_t id = event_int(event, "documentKey._id");
        /* A replay after a reopen may repeat an event; it must never skip one. */
        assert_true(id <= *next_expected);
        if (id == *next_expected) {
            (*next_expected)++;
        }
        bson_destroy(*checkpoint);
        *checkpoint = bson_copy(fts_mongo_source_resume_token(source));
        if (id == want_id) {
            return;
        }
    }
    fail_msg("the insert of %lld did not arrive within 30 s", (long long)want_id);
}

/* Inserts id, retrying while the member is not primary. */
static void insert_when_writable(fixture_t *f, int64_t id)
{
    uint64_t deadline = now_ms() + 30000;
    bson_t *doc = BCON_NEW("_id", BCON_INT64(id));
    bson_error_t error;
    while (!mongoc_collection_insert_one(f->coll, doc, NULL, NULL, &error)) {
        if (now_ms() > deadline) {
            fail_msg("insert of %lld never succeeded: %s", (long long)id, error.message);
        }
        fts_test_sleep_ms(100);
    }
    bson_destroy(doc);
}

static void test_step_down(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    f->source = make_source(f, "items", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);
    insert_id(f, NULL, 1);
    expect_inserts(f->source, 1, 1);
    bson_t *checkpoint = bson_copy(fts_mongo_source_resume_token(f->source));

    /* force: a real one-member set has no electable secondary (the double needs none); mongod
     * wants secondaryCatchUpPeriodSecs <= the step-down period. */
    run_admin(f, BCON_NEW("replSetStepDown", BCON_INT32(2), "secondaryCatchUpPeriodSecs",
                          BCON_INT32(1), "force", BCON_BOOL(true)));
    /* The stream goes on, possibly through errors the caller retries. */
    int64_t next_expected = 2;
    unsigned reopens = 0;
    insert_when_writable(f, 2);
    follow_until(f->source, &checkpoint, 2, &next_expected, &reopens);

    /* Reopening while stepped down fails as retryable, and works once it is over. */
    run_admin(f, BCON_NEW("replSetStepDown", BCON_INT32(2), "secondaryCatchUpPeriodSecs",
                          BCON_INT32(1), "force", BCON_BOOL(true)));
    unsigned reopens_before = reopens;
    reopen_with_backoff(f->source, checkpoint, &reopens);
    insert_when_writable(f, 3);
    follow_until(f->source, &checkpoint, 3, &next_expected, &reopens);
    assert_int_equal(next_expected, 4);
    fprintf(stderr,
            "(step-down: %u reopens, %u of them while stepped down; %llu automatic "
            "resumes)\n",
            reopens, reopens - reopens_before,
            (unsigned long long)fts_mongo_source_resume_count(f->source));
    bson_destroy(checkpoint);
}

/* --- scope and images --- */

static void test_database_scope_with_filter(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    options.scope = FTS_SCOPE_DATABASE;
    const char *followed[] = {"items", "more", NULL};
    options.collections = followed;
    f->source = make_source(f, NULL, &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);

    mongoc_collection_t *more = mongoc_client_get_collection(f->client, f->db, "more");
    mongoc_collection_t *other = mongoc_client_get_collection(f->client, f->db, "other");
    insert_id(f, NULL, 1);
    insert_id(f, other, 2);
    insert_id(f, more, 3);
    insert_id(f, other, 4);
    insert_id(f, NULL, 5);
    int64_t want[] = {1, 3, 5};
    const char *colls[] = {"items", "more", "items"};
    for (size_t i = 0; i < 3; i++) {
        const bson_t *event = next_event(f->source);
        assert_operation(event, "insert");
        assert_int_equal(event_int(event, "documentKey._id"), want[i]);
        assert_string_equal(event_string(event, "ns.coll"), colls[i]);
    }
    expect_idle(f->source);

    /* Dropping a followed collection does not end a database stream. */
    bson_error_t error;
    assert_true(mongoc_collection_drop(more, &error));
    const bson_t *event = next_event(f->source);
    assert_operation(event, "drop");
    assert_string_equal(event_string(event, "ns.coll"), "more");
    assert_false(fts_mongo_source_token_needs_start_after(f->source));

    /* dropDatabase and the invalidate pass the filter. */
    mongoc_database_t *db = mongoc_client_get_database(f->client, f->db);
    assert_true(mongoc_database_drop(db, &error));
    mongoc_database_destroy(db);
    bool saw_drop_database = false;
    for (;;) {
        event = next_event(f->source);
        const char *type = event_string(event, "operationType");
        if (strcmp(type, "drop") == 0) {
            const char *coll = event_string(event, "ns.coll");
            assert_true(strcmp(coll, "items") == 0 || strcmp(coll, "more") == 0);
            continue;
        }
        if (strcmp(type, "dropDatabase") == 0) {
            saw_drop_database = true;
            continue;
        }
        assert_operation(event, "invalidate");
        break;
    }
    assert_true(saw_drop_database);
    assert_true(fts_mongo_source_token_needs_start_after(f->source));

    /* A scan in database scope must name its collection. */
    fts_error_t err;
    fts_error_clear(&err);
    assert_null(fts_mongo_scan_new(f->source, NULL, NULL, &err));
    assert_contains(err.message, "needs a collection");
    mongoc_collection_destroy(more);
    mongoc_collection_destroy(other);
}

static void test_pre_and_post_images(void **state)
{
    fixture_t *f = *state;
    bson_error_t error;
    mongoc_database_t *db = mongoc_client_get_database(f->client, f->db);
    bson_t *create_opts =
        BCON_NEW("changeStreamPreAndPostImages", "{", "enabled", BCON_BOOL(true), "}");
    mongoc_collection_t *created =
        mongoc_database_create_collection(db, "imaged", create_opts, &error);
    if (!created) {
        fail_msg("cannot create a collection with pre- and post-images: %s", error.message);
    }
    bson_destroy(create_opts);
    mongoc_database_destroy(db);

    fts_mongo_source_options_t options = quick_options();
    options.full_document = FTS_FULL_DOCUMENT_REQUIRED;
    options.full_document_before_change = FTS_PRE_IMAGES_REQUIRED;
    f->source = make_source(f, "imaged", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);

    bson_t *doc = BCON_NEW("_id", BCON_INT32(1), "v", BCON_INT32(1));
    assert_true(mongoc_collection_insert_one(created, doc, NULL, NULL, &error));
    bson_destroy(doc);
    bson_t *selector = BCON_NEW("_id", BCON_INT32(1));
    bson_t *update = BCON_NEW("$set", "{", "v", BCON_INT32(2), "}");
    assert_true(mongoc_collection_update_one(created, selector, update, NULL, NULL, &error));
    bson_destroy(update);
    update = BCON_NEW("$set", "{", "v", BCON_INT32(3), "}");
    assert_true(mongoc_collection_update_one(created, selector, update, NULL, NULL, &error));
    bson_destroy(update);
    assert_true(mongoc_collection_delete_one(created, selector, NULL, NULL, &error));
    bson_destroy(selector);

    const bson_t *event = next_event(f->source);
    assert_operation(event, "insert");
    /* Post-images are the document as of each update, not as of reading. */
    event = next_event(f->source);
    assert_operation(event, "update");
    assert_int_equal(event_int(event, "fullDocument.v"), 2);
    assert_int_equal(event_int(event, "fullDocumentBeforeChange.v"), 1);
    event = next_event(f->source);
    assert_operation(event, "update");
    assert_int_equal(event_int(event, "fullDocument.v"), 3);
    assert_int_equal(event_int(event, "fullDocumentBeforeChange.v"), 2);
    event = next_event(f->source);
    assert_operation(event, "delete");
    assert_int_equal(event_int(event, "fullDocumentBeforeChange.v"), 3);
    expect_idle(f->source);
    mongoc_collection_destroy(created);
}

/* --- snapshot scan --- */

#define SCAN_DOCS 3000

static void insert_many(fixture_t *f, int64_t first, int64_t count)
{
    bson_error_t error;
    mongoc_bulk_operation_t *bulk =
        mongoc_collection_create_bulk_operation_with_opts(f->coll, NULL);
    for (int64_t id = first; id < first + count; id++) {
        bson_t *doc = BCON_NEW("_id", BCON_INT64(id), "n", BCON_INT64(id));
        mongoc_bulk_operation_insert(bulk, doc);
        bson_destroy(doc);
    }
    if (!mongoc_bulk_operation_execute(bulk, NULL, &error)) {
        fail_msg("bulk insert failed: %s", error.message);
    }
    mongoc_bulk_operation_destroy(bulk);
}

/* Scans after after_id (NULL: all), checking _ids first..first+count-1 come once, in order. */
static void scan_expect(fts_mongo_source_t *source, const bson_value_t *after_id, int64_t first,
                        int64_t count)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_mongo_scan_t *scan = fts_mongo_scan_new(source, NULL, after_id, &err);
    if (!scan) {
        fail_msg("cannot start a scan: %s", err.message);
    }
    int64_t expected = first;
    for (;;) {
        const bson_t *doc = NULL;
        if (!fts_mongo_scan_next(scan, &doc, &err)) {
            fail_msg("scan failed: %s", err.message);
        }
        if (!doc) {
            break;
        }
        assert_int_equal(event_int(doc, "_id"), expected);
        assert_int_equal(event_int(doc, "n"), expected);
        expected++;
    }
    assert_int_equal(expected, first + count);
    assert_int_equal(fts_mongo_scan_count(scan), (uint64_t)count);
    fts_mongo_scan_destroy(scan);
}

static void test_snapshot_scan(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    options.scan_batch_size = 128; /* many batches */
    f->source = make_source(f, "items", &options);

    /* An empty (missing) collection scans to its end at once. */
    scan_expect(f->source, NULL, 0, 0);

    /* Inserted out of order: the scan sorts by _id. */
    insert_many(f, SCAN_DOCS / 2, SCAN_DOCS / 2);
    insert_many(f, 0, SCAN_DOCS / 2);
    scan_expect(f->source, NULL, 0, SCAN_DOCS);

    /* Resumed after an _id: each later document exactly once. */
    bson_value_t after = {.value_type = BSON_TYPE_INT64, .value.v_int64 = 1234};
    scan_expect(f->source, &after, 1235, SCAN_DOCS - 1235);
    /* The same point as another number type. */
    after.value_type = BSON_TYPE_INT32;
    after.value.v_int32 = 2999;
    scan_expect(f->source, &after, 0, 0);
    after.value_type = BSON_TYPE_DOUBLE;
    after.value.v_double = 2997.5;
    scan_expect(f->source, &after, 2998, 2);
}

static void test_scan_mixed_id_types(void **state)
{
    fixture_t *f = *state;
    fts_mongo_source_options_t options = quick_options();
    options.scan_batch_size = 2;
    f->source = make_source(f, "items", &options);

    bson_error_t error;
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "5f0000000000000000000001");
    bson_t *docs[] = {
        BCON_NEW("_id", BCON_INT32(2)),        BCON_NEW("_id", BCON_UTF8("b")),
        BCON_NEW("_id", BCON_OID(&oid)),       BCON_NEW("_id", BCON_INT32(1)),
        BCON_NEW("_id", BCON_UTF8("a")),       BCON_NEW("_id", BCON_BOOL(true)),
        BCON_NEW("_id", BCON_DATE_TIME(1000)),
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        assert_true(mongoc_collection_insert_one(f->coll, docs[i], NULL, NULL, &error));
        bson_destroy(docs[i]);
    }
    /* mongod's order: numbers, strings, ObjectId, bool, date. */
    const char *order[] = {"1", "2", "a", "b", "oid", "true", "date"};
    struct {
        bson_value_t after;
        size_t from; /* index in order of the first document expected */
    } cases[] = {
        {{.value_type = BSON_TYPE_INT32, .value.v_int32 = 0}, 0},
        {{.value_type = BSON_TYPE_INT32, .value.v_int32 = 1}, 1},
        {{.value_type = BSON_TYPE_INT64, .value.v_int64 = 2}, 2},
        {{.value_type = BSON_TYPE_UTF8, .value.v_utf8 = {.str = (char *)"a", .len = 1}}, 3},
        {{.value_type = BSON_TYPE_UTF8, .value.v_utf8 = {.str = (char *)"b", .len = 1}}, 4},
        {{.value_type = BSON_TYPE_OID, .value.v_oid = oid}, 5},
        {{.value_type = BSON_TYPE_BOOL, .value.v_bool = true}, 6},
        {{.value_type = BSON_TYPE_NULL}, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fts_error_t err;
        fts_error_clear(&err);
        fts_mongo_scan_t *scan = fts_mongo_scan_new(f->source, "items", &cases[c].after, &err);
        assert_non_null(scan);
        size_t expected = cases[c].from;
        const bson_t *doc;
        while (fts_mongo_scan_next(scan, &doc, &err) && doc) {
            assert_true(expected < 7);
            bson_iter_t iter;
            assert_true(bson_iter_init_find(&iter, doc, "_id"));
            char got[32];
            switch (bson_iter_type(&iter)) {
            case BSON_TYPE_INT32:
            case BSON_TYPE_INT64:
                snprintf(got, sizeof got, "%lld", (long long)bson_iter_as_int64(&iter));
                break;
            case BSON_TYPE_UTF8:
                snprintf(got, sizeof got, "%s", bson_iter_utf8(&iter, NULL));
                break;
            case BSON_TYPE_OID:
                snprintf(got, sizeof got, "oid");
                break;
            case BSON_TYPE_BOOL:
                snprintf(got, sizeof got, "%s", bson_iter_bool(&iter) ? "true" : "false");
                break;
            case BSON_TYPE_DATE_TIME:
                snprintf(got, sizeof got, "date");
                break;
            default:
                snprintf(got, sizeof got, "type %d", (int)bson_iter_type(&iter));
            }
            if (strcmp(got, order[expected]) != 0) {
                fail_msg("case %zu: expected _id %s, got %s", c, order[expected], got);
            }
            expected++;
        }
        assert_int_equal(err.code, 0);
        if (expected != 7) {
            fail_msg("case %zu: the scan stopped before _id %s", c, order[expected]);
        }
        fts_mongo_scan_destroy(scan);
    }
}

/* --- configuration and logging --- */

static void test_bad_configuration(void **state)
{
    fixture_t *f = *state;
    fts_error_t err;
    fts_mongo_source_options_t options = quick_options();

    fts_error_clear(&err);
    assert_null(fts_mongo_source_new("notmongo://x", f->db, "items", &options, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_null(fts_mongo_source_new(f->uri, "", "items", &options, &err));
    assert_contains(err.message, "database");
    assert_null(fts_mongo_source_new(f->uri, "a.b", "items", &options, &err));
    assert_contains(err.message, "'.'");
    assert_null(fts_mongo_source_new(f->uri, f->db, NULL, &options, &err));
    assert_contains(err.message, "collection");
    assert_null(fts_mongo_source_new(f->uri, f->db, "it$ems", &options, &err));
    assert_contains(err.message, "'$'");

    options.scope = FTS_SCOPE_DATABASE;
    assert_null(fts_mongo_source_new(f->uri, f->db, "items", &options, &err));
    assert_contains(err.message, "collection filter");
    options.scope = FTS_SCOPE_COLLECTION;
    const char *filter[] = {"x", NULL};
    options.collections = filter;
    assert_null(fts_mongo_source_new(f->uri, f->db, "items", &options, &err));
    assert_contains(err.message, "database-wide");
    options.collections = NULL;

    options.full_document = (fts_full_document_t)7;
    assert_null(fts_mongo_source_new(f->uri, f->db, "items", &options, &err));
    assert_contains(err.message, "fullDocument");
    options.full_document = FTS_FULL_DOCUMENT_UPDATE_LOOKUP;
    options.max_await_time_ms = -1;
    assert_null(fts_mongo_source_new(f->uri, f->db, "items", &options, &err));
    assert_contains(err.message, "maxAwaitTimeMS");
    options.max_await_time_ms = AWAIT_MS;

    /* next before open is a programming error, said clearly. */
    f->source = make_source(f, "items", &options);
    fts_source_next_t what;
    const bson_t *event;
    assert_false(fts_mongo_source_next(f->source, &what, &event, &err));
    assert_int_equal(err.domain, FTS_ERROR_INTERNAL);
    assert_null(fts_mongo_source_resume_token(f->source));
    assert_null(fts_mongo_source_resume_token_json(f->source));
}

static char *log_text;
static size_t log_size;
static FILE *log_stream;

static void test_driver_log_goes_through_fts_log(void **state)
{
    fixture_t *f = *state;
    fts_log_reset();
    log_stream = open_memstream(&log_text, &log_size);
    assert_non_null(log_stream);
    fts_log_set_stream(log_stream);
    fts_log_set_level(FTS_LOG_DEBUG);
    fts_log_set_repeat_interval_ms(0);

    /* libmongoc warns about an option it does not know while parsing the URI; the password
     * in it is registered as a secret by the source. */
    char uri[512];
    snprintf(uri, sizeof uri, "mongodb://ftsync:pa55w0rd-xyz@127.0.0.1:%d/?bogusOption=1",
             fts_test_mongo_double_port(group.server) ? fts_test_mongo_double_port(group.server)
                                                      : 27017);
    fts_error_t err;
    fts_error_clear(&err);
    fts_mongo_source_options_t options = quick_options();
    fts_mongo_source_t *source = fts_mongo_source_new(uri, f->db, "items", &options, &err);
    assert_non_null(source);
    fts_mongo_source_destroy(source);

    /* Anything libmongoc logs is scrubbed of secrets; its debug lines are dropped. */
    mongoc_log(MONGOC_LOG_LEVEL_WARNING, "cluster", "cannot use pa55w0rd-xyz here");
    mongoc_log(MONGOC_LOG_LEVEL_ERROR, "stream", "connection broke");
    mongoc_log(MONGOC_LOG_LEVEL_DEBUG, "cluster", "debug chatter");
    mongoc_log(MONGOC_LOG_LEVEL_TRACE, "cluster", "trace chatter");
    fflush(log_stream);
    const char *text = log_text ? log_text : "";
    fprintf(stderr, "%s", text);
    assert_contains(text, "level=warn component=mongo");
    assert_contains(text, "bogusoption"); /* libmongoc lowercases it */
    assert_contains(text, "msg=\"cluster: cannot use *** here\"");
    assert_contains(text, "level=error component=mongo msg=\"stream: connection broke\"");
    assert_not_contains(text, "pa55w0rd-xyz");
    assert_not_contains(text, "chatter");

    fts_log_reset();
    fclose(log_stream);
    log_stream = NULL;
    free(log_text);
    log_text = NULL;
}

/* --- events over 16 MB --- */

/* Two 7 MB strings make a 14 MB document; the update that sets the second one carries it in
 * updateDescription too, and with updateLookup and a pre-image the event is about 28 MB. */
#define LARGE_BYTES (7 * 1024 * 1024)

static bson_t *large_string_doc(const char *outer, const char *name, char fill)
{
    char *text = bson_malloc(LARGE_BYTES + 1);
    memset(text, fill, LARGE_BYTES);
    text[LARGE_BYTES] = '\0';
    bson_t *doc = bson_new();
    if (outer) {
        bson_t inner;
        BSON_APPEND_DOCUMENT_BEGIN(doc, outer, &inner);
        bson_append_utf8(&inner, name, -1, text, LARGE_BYTES);
        bson_append_document_end(doc, &inner);
    } else {
        BSON_APPEND_INT32(doc, "_id", 1);
        bson_append_utf8(doc, name, -1, text, LARGE_BYTES);
    }
    bson_free(text);
    return doc;
}

static size_t event_string_length(const bson_t *event, const char *path)
{
    bson_iter_t found;
    uint32_t length = 0;
    assert_true(event_value(event, path, &found));
    assert_true(BSON_ITER_HOLDS_UTF8(&found));
    bson_iter_utf8(&found, &length);
    return length;
}

/* Makes "imaged" (pre- and post-images on) in f's database and a source on it with updateLookup
 * and pre-images, opened now. */
static mongoc_collection_t *large_event_setup(fixture_t *f)
{
    bson_error_t error;
    mongoc_database_t *db = mongoc_client_get_database(f->client, f->db);
    bson_t *create_opts =
        BCON_NEW("changeStreamPreAndPostImages", "{", "enabled", BCON_BOOL(true), "}");
    mongoc_collection_t *created =
        mongoc_database_create_collection(db, "imaged", create_opts, &error);
    if (!created) {
        fail_msg("cannot create a collection with pre- and post-images: %s", error.message);
    }
    bson_destroy(create_opts);
    mongoc_database_destroy(db);
    fts_mongo_source_options_t options = quick_options();
    options.full_document = FTS_FULL_DOCUMENT_UPDATE_LOOKUP;
    options.full_document_before_change = FTS_PRE_IMAGES_WHEN_AVAILABLE;
    f->source = make_source(f, "imaged", &options);
    open_ok(f->source, NULL);
    expect_idle(f->source);
    return created;
}

/* insert {_id: 1, a: 7 MB}, insert {_id: 3}, update _id 1 with $set b: 7 MB (the large
 * event), insert {_id: 2}: all before the source reads, so that they share a batch. */
static void large_event_writes(mongoc_collection_t *coll)
{
    bson_error_t error;
    bson_t *doc = large_string_doc(NULL, "a", 'a');
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
    doc = BCON_NEW("_id", BCON_INT32(3));
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
    bson_t *selector = BCON_NEW("_id", BCON_INT32(1));
    bson_t *update = large_string_doc("$set", "b", 'b');
    if (!mongoc_collection_update_one(coll, selector, update, NULL, NULL, &error)) {
        fail_msg("the large update failed: %s", error.message);
    }
    bson_destroy(update);
    bson_destroy(selector);
    doc = BCON_NEW("_id", BCON_INT32(2));
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
}

/* The large update as the source hands it out: one whole event, no splitEvent, the document
 * as it is now. */
static void expect_large_update(const bson_t *event)
{
    assert_operation(event, "update");
    assert_int_equal(event_int(event, "documentKey._id"), 1);
    assert_false(event_value(event, "splitEvent", &(bson_iter_t){0}));
    assert_int_equal(event_string_length(event, "fullDocument.a"), LARGE_BYTES);
    assert_int_equal(event_string_length(event, "fullDocument.b"), LARGE_BYTES);
}

/* Reads the events of large_event_writes and checks them; returns the token saved after the
 * large update (bson_free it). */
static char *read_large_event_writes(fts_mongo_source_t *source)
{
    const bson_t *event = next_event(source);
    assert_operation(event, "insert");
    assert_int_equal(event_int(event, "documentKey._id"), 1);
    event = next_event(source);
    assert_operation(event, "insert");
    assert_int_equal(event_int(event, "documentKey._id"), 3);
    event = next_event(source);
    expect_large_update(event);
    /* The pre-image fits once the post-image is left out: both paths keep it. */
    assert_int_equal(event_string_length(event, "fullDocumentBeforeChange.a"), LARGE_BYTES);
    assert_false(event_value(event, "fullDocumentBeforeChange.b", &(bson_iter_t){0}));
    char *saved = token_json(source);
    /* The saved position is the event's own _id: past the whole event. */
    char *id = event_id_json(event);
    assert_string_equal(saved, id);
    bson_free(id);
    event = next_event(source);
    assert_operation(event, "insert");
    assert_int_equal(event_int(event, "documentKey._id"), 2);
    expect_idle(source);
    return saved;
}

/* An event over 16 MB: the server fails the stream with 10334; the source reopens with
 * $changeStreamSplitLargeEvent and hands out the reassembled event, once, in order, with the
 * last fragment's token; resuming from that token goes on after the whole event. */
static void test_large_event_reassembled(void **state)
{
    fixture_t *f = *state;
    mongoc_collection_t *coll = large_event_setup(f);
    large_event_writes(coll);
    char *saved = read_large_event_writes(f->source);
    const bson_t *event = NULL;
    uint64_t split, reread;
    fts_mongo_source_large_events(f->source, &split, &reread);
    assert_int_equal(split, 1);
    assert_int_equal(reread, 0);

    /* From the saved position: the next event, not a fragment of the large one. */
    fts_source_position_t position = after_token(FTS_SOURCE_RESUME_AFTER, saved);
    open_ok(f->source, &position);
    event = next_event(f->source);
    assert_operation(event, "insert");
    assert_int_equal(event_int(event, "documentKey._id"), 2);
    bson_free(saved);
    mongoc_collection_destroy(coll);
}

/* The same against a server without $changeStreamSplitLargeEvent (the double with
 * --no-split-stage, as mongod before 6.0.9): the large event comes without its images, its
 * document re-read by _id; nothing before or after it is lost or repeated. */
static void test_large_event_reread_without_split_stage(void **state)
{
    fixture_t *f = *state;
    if (fts_test_mongo_double_is_external(group.server)) {
        /* A real server cannot be told to forget the stage; the path is the double's. */
        return;
    }
    const char *args[] = {"--no-split-stage", NULL};
    fts_test_mongo_double_t *old = start_double(args);
    fixture_t local;
    fixture_init(&local, fts_test_mongo_double_uri(old));
    mongoc_collection_t *coll = large_event_setup(&local);
    large_event_writes(coll);
    char *saved = read_large_event_writes(local.source);
    uint64_t split, reread;
    fts_mongo_source_large_events(local.source, &split, &reread);
    assert_int_equal(split, 0);
    assert_int_equal(reread, 1);

    /* A second large update, read while the source is already in its normal mode again. */
    bson_error_t error;
    bson_t *selector = BCON_NEW("_id", BCON_INT32(1));
    bson_t *update = large_string_doc("$set", "b", 'c');
    assert_true(mongoc_collection_update_one(coll, selector, update, NULL, NULL, &error));
    bson_destroy(update);
    bson_destroy(selector);
    const bson_t *event = next_event(local.source);
    expect_large_update(event);
    bson_iter_t found;
    assert_true(event_value(event, "fullDocument.b", &found));
    assert_int_equal(bson_iter_utf8(&found, NULL)[0], 'c');
    fts_mongo_source_large_events(local.source, &split, &reread);
    assert_int_equal(reread, 2);
    (void)f;
    bson_free(saved);
    mongoc_collection_destroy(coll);
    fixture_cleanup(&local);
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_mongo_double_stop(old, &err));
    fts_test_mongo_double_destroy(old);
}

int main(void)
{
    /* Routes libmongoc's log before anything else uses libmongoc. */
    fts_mongo_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_event_shapes_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_advances_while_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_after_saved_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_after_invalidate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_at_operation_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_connection_on_get_more, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resumable_error_label_on_get_more, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_resumable_error_is_retryable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_scope_with_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pre_and_post_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_mixed_id_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_configuration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_driver_log_goes_through_fts_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_event_reassembled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_event_reread_without_split_stage, setup,
                                        teardown),
        /* Last: it steps the shared member down. */
        cmocka_unit_test_setup_teardown(test_step_down, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("mongo_source", tests, group_setup, group_teardown);
    return failed;
}
