/*
 * test_double_conformance.c - does the MongoDB replica-set double (test/double/) behave as
 * MongoDB documents, as seen through the real libmongoc?
 *
 * Every test checks documented behaviour of a MongoDB 6.0 replica set, never the double's own
 * choices, so the whole file passes unchanged against a real replica set: with
 * FTSYNC_TEST_MONGO_URI set, support/mongo_double.c starts nothing, each test works in a
 * database of its own (fts_test_mongo_unique_name) and turns the failCommand and
 * failGetMoreAfterCursorCheckout fail points off again. Such a server needs `--setParameter
 * enableTestCommands=1` for configureFailPoint, and must be a single-node replica set for the
 * step-down test. Two things a real server cannot be made to do on demand (a history of a few
 * events or bytes) are checked on the double with
 * --history-events / --history-bytes and, against a real server, through the one door to the
 * same error any server has (startAtOperationTime Timestamp(1, 1)).
 *
 * Each test gets a double of its own (they start in milliseconds), so fail points and
 * step-downs cannot leak from one test into the next. Exact codes are asserted: 11000
 * DuplicateKey, 59 CommandNotFound, 48 NamespaceExists, 43 CursorNotFound, 286
 * ChangeStreamHistoryLost, 260 InvalidResumeToken, 9 FailedToParse, 280 ChangeStreamFatalError,
 * 10107 NotWritablePrimary. Where a code comes from the server's source rather than the manual,
 * the test names the source.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ctype.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "mongo_double.h"
#include "sorted_bson.h"
#include "test_time.h"

/* Temporary documents a test builds; all freed by the teardown. */
#define MAX_TMP 4096
/* Change streams and extra clients a test opens; closed by the teardown. */
#define MAX_STREAMS 16
#define MAX_CLIENTS 8
/* Commands the APM recorder keeps. */
#define MAX_RECORDED 1024
/* How long a test waits for an event it expects. */
#define EVENT_TIMEOUT_MS 10000
/* maxAwaitTimeMS of most streams: short, so waiting for "no event" loops quickly. */
#define STREAM_AWAIT_MS 200

/* ---- small helpers: temporary documents ---------------------------------------------------- */

static bson_t *tmp_docs[MAX_TMP];
static size_t tmp_count;

/* Registers doc to be destroyed by the teardown; returns it. */
static bson_t *keep(bson_t *doc)
{
    if (tmp_count == MAX_TMP) {
        fail_msg("more than %d temporary documents in one test", MAX_TMP);
    }
    tmp_docs[tmp_count++] = doc;
    return doc;
}

static void free_tmp(void)
{
    for (size_t i = 0; i < tmp_count; i++) {
        bson_destroy(tmp_docs[i]);
    }
    tmp_count = 0;
}

/* Copies text (which it frees) into one of a few static buffers for a failure message: a
 * failing assertion jumps out of the test, so nothing allocated for its message would be freed. */
static const char *msg(char *text)
{
    static char buffers[4][4096];
    static unsigned next;
    char *buffer = buffers[next++ % 4];
    snprintf(buffer, sizeof buffers[0], "%s", text ? text : "");
    bson_free(text);
    return buffer;
}

/* A document from printf-style extended JSON in which ' stands for " (so tests read like the
 * shell). Freed by the teardown. */
static bson_t *tmp_bson(const char *format, ...) __attribute__((format(printf, 1, 2)));
static bson_t *tmp_bson(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *text = bson_strdupv_printf(format, args);
    va_end(args);
    for (char *p = text; *p; p++) {
        if (*p == '\'') {
            *p = '"';
        }
    }
    bson_error_t error;
    bson_t *doc = bson_new_from_json((const uint8_t *)text, -1, &error);
    if (!doc) {
        fail_msg("bad JSON in the test: %s: %s", error.message, msg(text));
    }
    bson_free(text);
    return keep(doc);
}

/* ---- comparing documents regardless of field order ---------------------------------------- */

static int compare_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void assert_same_doc(const char *file, int line, const bson_t *actual,
                            const bson_t *expected)
{
    char *a = fts_test_bson_sorted_json(actual);
    char *e = fts_test_bson_sorted_json(expected);
    if (strcmp(a, e) != 0) {
        fail_msg("%s:%d: documents differ\n  actual:   %s\n  expected: %s", file, line, msg(a),
                 msg(e));
    }
    bson_free(a);
    bson_free(e);
}

#define ASSERT_DOC(actual, ...) assert_same_doc(__FILE__, __LINE__, (actual), tmp_bson(__VA_ARGS__))

/* ---- reading fields -------------------------------------------------------------------------- */

/* The field at a dotted path (dots descend), or fails the test. */
static bson_iter_t field_at(const char *file, int line, const bson_t *doc, const char *path)
{
    bson_iter_t iter, found;
    memset(&found, 0, sizeof found); /* fail_msg is not declared noreturn */
    if (!bson_iter_init(&iter, doc) || !bson_iter_find_descendant(&iter, path, &found)) {
        const char *text = msg(bson_as_canonical_extended_json(doc, NULL));
        fail_msg("%s:%d: no field \"%s\" in %s", file, line, path, text);
    }
    return found;
}

static bool has_field(const bson_t *doc, const char *path)
{
    bson_iter_t iter, found;
    return bson_iter_init(&iter, doc) && bson_iter_find_descendant(&iter, path, &found);
}

static const char *str_at(const char *file, int line, const bson_t *doc, const char *path)
{
    bson_iter_t iter = field_at(file, line, doc, path);
    if (!BSON_ITER_HOLDS_UTF8(&iter)) {
        fail_msg("%s:%d: field \"%s\" is not a string (type 0x%02x)", file, line, path,
                 (unsigned)bson_iter_type(&iter));
    }
    return bson_iter_utf8(&iter, NULL);
}
#define STR(doc, path) str_at(__FILE__, __LINE__, (doc), (path))

static int64_t int_at(const char *file, int line, const bson_t *doc, const char *path)
{
    bson_iter_t iter = field_at(file, line, doc, path);
    if (!BSON_ITER_HOLDS_NUMBER(&iter)) {
        fail_msg("%s:%d: field \"%s\" is not a number (type 0x%02x)", file, line, path,
                 (unsigned)bson_iter_type(&iter));
    }
    return bson_iter_as_int64(&iter);
}
#define INT(doc, path) int_at(__FILE__, __LINE__, (doc), (path))

static bool bool_at(const char *file, int line, const bson_t *doc, const char *path)
{
    bson_iter_t iter = field_at(file, line, doc, path);
    if (!BSON_ITER_HOLDS_BOOL(&iter)) {
        fail_msg("%s:%d: field \"%s\" is not a boolean (type 0x%02x)", file, line, path,
                 (unsigned)bson_iter_type(&iter));
    }
    return bson_iter_bool(&iter);
}
#define BOOL(doc, path) bool_at(__FILE__, __LINE__, (doc), (path))

/* The document or array at path, as a temporary bson_t. */
static bson_t *doc_at(const char *file, int line, const bson_t *doc, const char *path)
{
    bson_iter_t iter = field_at(file, line, doc, path);
    uint32_t length;
    const uint8_t *data;
    if (BSON_ITER_HOLDS_DOCUMENT(&iter)) {
        bson_iter_document(&iter, &length, &data);
    } else if (BSON_ITER_HOLDS_ARRAY(&iter)) {
        bson_iter_array(&iter, &length, &data);
    } else {
        fail_msg("%s:%d: field \"%s\" is not a document or array (type 0x%02x)", file, line, path,
                 (unsigned)bson_iter_type(&iter));
        return NULL;
    }
    return keep(bson_new_from_data(data, length));
}
#define DOC(doc, path) doc_at(__FILE__, __LINE__, (doc), (path))

static bson_type_t type_at(const char *file, int line, const bson_t *doc, const char *path)
{
    bson_iter_t iter = field_at(file, line, doc, path);
    return bson_iter_type(&iter);
}
#define TYPE(doc, path) type_at(__FILE__, __LINE__, (doc), (path))

static void timestamp_at(const char *file, int line, const bson_t *doc, const char *path,
                         uint32_t *t, uint32_t *i)
{
    bson_iter_t iter = field_at(file, line, doc, path);
    if (!BSON_ITER_HOLDS_TIMESTAMP(&iter)) {
        fail_msg("%s:%d: field \"%s\" is not a Timestamp (type 0x%02x)", file, line, path,
                 (unsigned)bson_iter_type(&iter));
    }
    bson_iter_timestamp(&iter, t, i);
}
#define TIMESTAMP(doc, path, t, i) timestamp_at(__FILE__, __LINE__, (doc), (path), (t), (i))

/* The keys of a document, sorted and joined by commas: "a,b,c". bson_free it. */
static char *keys_of(const bson_t *doc)
{
    size_t count = bson_count_keys(doc);
    const char **keys = bson_malloc0((count + 1) * sizeof *keys);
    bson_iter_t iter;
    size_t n = 0;
    if (bson_iter_init(&iter, doc)) {
        while (bson_iter_next(&iter) && n < count) {
            keys[n++] = bson_iter_key(&iter);
        }
    }
    qsort(keys, n, sizeof *keys, compare_keys);
    bson_string_t *joined = bson_string_new("");
    for (size_t i = 0; i < n; i++) {
        bson_string_append_printf(joined, "%s%s", i ? "," : "", keys[i]);
    }
    bson_free(keys);
    return bson_string_free(joined, false);
}

static void assert_keys(const char *file, int line, const bson_t *doc, const char *expected)
{
    char *actual = keys_of(doc);
    if (strcmp(actual, expected) != 0) {
        const char *text = msg(bson_as_canonical_extended_json(doc, NULL));
        fail_msg("%s:%d: keys are {%s}, expected {%s}, in %s", file, line, msg(actual), expected,
                 text);
    }
    bson_free(actual);
}
#define ASSERT_KEYS(doc, expected) assert_keys(__FILE__, __LINE__, (doc), (expected))

/* ---- recording commands (APM) ---------------------------------------------------------------- */

typedef struct {
    char name[32];
    int batch; /* documents in firstBatch/nextBatch of a successful reply; -1 otherwise */
    int64_t cursor_id;
    bool has_post_batch_resume_token;
} recorded_t;

static struct {
    bool on;
    size_t count;
    recorded_t entries[MAX_RECORDED];
} recorder;

static void record_succeeded(const mongoc_apm_command_succeeded_t *event)
{
    if (!recorder.on || recorder.count == MAX_RECORDED) {
        return;
    }
    recorded_t *entry = &recorder.entries[recorder.count++];
    snprintf(entry->name, sizeof entry->name, "%s",
             mongoc_apm_command_succeeded_get_command_name(event));
    entry->batch = -1;
    entry->cursor_id = 0;
    const bson_t *reply = mongoc_apm_command_succeeded_get_reply(event);
    bson_iter_t iter, found;
    static const char *const batch_paths[] = {"cursor.firstBatch", "cursor.nextBatch"};
    for (size_t i = 0; i < 2; i++) {
        if (bson_iter_init(&iter, reply) &&
            bson_iter_find_descendant(&iter, batch_paths[i], &found) &&
            BSON_ITER_HOLDS_ARRAY(&found)) {
            uint32_t length;
            const uint8_t *data;
            bson_iter_array(&found, &length, &data);
            bson_t batch;
            bson_init_static(&batch, data, length);
            entry->batch = (int)bson_count_keys(&batch);
        }
    }
    if (bson_iter_init(&iter, reply) && bson_iter_find_descendant(&iter, "cursor.id", &found) &&
        BSON_ITER_HOLDS_NUMBER(&found)) {
        entry->cursor_id = bson_iter_as_int64(&found);
    }
    entry->has_post_batch_resume_token =
        bson_iter_init(&iter, reply) &&
        bson_iter_find_descendant(&iter, "cursor.postBatchResumeToken", &found) &&
        BSON_ITER_HOLDS_DOCUMENT(&found);
}

static void record_start(void)
{
    recorder.count = 0;
    recorder.on = true;
}

/* ---- the fixture ------------------------------------------------------------------------------
 */

typedef struct {
    fts_test_mongo_double_t *server;
    mongoc_client_t *client;
    char db_name[96];
    mongoc_database_t *db;
    mongoc_collection_t *coll; /* "apps" in db_name */
    mongoc_change_stream_t *streams[MAX_STREAMS];
    size_t stream_count;
    mongoc_client_t *clients[MAX_CLIENTS];
    size_t client_count;
    char extra_dbs[4][96]; /* other databases a test created (dropped on a real server) */
    size_t extra_db_count;
    bool used_fail_point;
    /* The session of raw cursor commands: mongod refuses a getMore from another session than
     * the one that opened the cursor. */
    mongoc_client_session_t *raw_session;
} fixture_t;

/* Topology type libmongoc reported last ("ReplicaSetWithPrimary", ...). */
static char last_topology_type[64];

static void record_topology(const mongoc_apm_topology_changed_t *event)
{
    const mongoc_topology_description_t *td =
        mongoc_apm_topology_changed_get_new_description(event);
    snprintf(last_topology_type, sizeof last_topology_type, "%s",
             mongoc_topology_description_type(td));
}

static mongoc_client_t *new_client(fixture_t *f, const mongoc_uri_t *uri)
{
    mongoc_client_t *client = mongoc_client_new_from_uri(uri);
    assert_non_null(client);
    /* Version 2: a server's error arrives with domain MONGOC_ERROR_SERVER and the server's
     * code, whatever the command. */
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_set_appname(client, "ftsync-conformance");
    mongoc_apm_callbacks_t *callbacks = mongoc_apm_callbacks_new();
    mongoc_apm_set_command_succeeded_cb(callbacks, record_succeeded);
    mongoc_apm_set_topology_changed_cb(callbacks, record_topology);
    mongoc_client_set_apm_callbacks(client, callbacks, NULL);
    mongoc_apm_callbacks_destroy(callbacks);
    if (f->client_count == MAX_CLIENTS) {
        fail_msg("more than %d clients in one test", MAX_CLIENTS);
    }
    f->clients[f->client_count++] = client;
    return client;
}

static int setup_with(void **state, const char *const *extra_args)
{
    fixture_t *f = calloc(1, sizeof *f);
    fts_error_t err;
    fts_error_clear(&err);
    f->server = fts_test_mongo_double_start(extra_args, &err);
    if (!f->server) {
        fprintf(stderr, "cannot start the MongoDB double: %s\n", err.message);
        free(f);
        return -1;
    }
    recorder.on = false;
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(fts_test_mongo_double_uri(f->server), &error);
    if (!uri) {
        fprintf(stderr, "bad URI %s: %s\n", fts_test_mongo_double_uri(f->server), error.message);
        fts_test_mongo_double_destroy(f->server);
        free(f);
        return -1;
    }
    f->client = new_client(f, uri);
    mongoc_uri_destroy(uri);
    fts_test_mongo_unique_name("conformance", f->db_name, sizeof f->db_name);
    f->db = mongoc_client_get_database(f->client, f->db_name);
    f->coll = mongoc_database_get_collection(f->db, "apps");
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    int result = 0;
    recorder.on = false;
    for (size_t i = 0; i < f->stream_count; i++) {
        mongoc_change_stream_destroy(f->streams[i]);
    }
    if (f->raw_session) {
        mongoc_client_session_destroy(f->raw_session);
    }
    if (fts_test_mongo_double_is_external(f->server)) {
        /* A real server outlives the test: leave it as we found it. */
        bson_t *off = tmp_bson("{'configureFailPoint': 'failCommand', 'mode': 'off'}");
        bson_t *off_get_more =
            tmp_bson("{'configureFailPoint': 'failGetMoreAfterCursorCheckout', 'mode': 'off'}");
        if (f->used_fail_point) {
            mongoc_client_command_simple(f->client, "admin", off, NULL, NULL, NULL);
            mongoc_client_command_simple(f->client, "admin", off_get_more, NULL, NULL, NULL);
        }
        mongoc_database_drop(f->db, NULL);
        for (size_t i = 0; i < f->extra_db_count; i++) {
            mongoc_database_t *other = mongoc_client_get_database(f->client, f->extra_dbs[i]);
            mongoc_database_drop(other, NULL);
            mongoc_database_destroy(other);
        }
    }
    mongoc_collection_destroy(f->coll);
    mongoc_database_destroy(f->db);
    for (size_t i = 0; i < f->client_count; i++) {
        mongoc_client_destroy(f->clients[i]);
    }
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_mongo_double_stop(f->server, &err)) {
        fprintf(stderr, "the MongoDB double did not stop cleanly: %s\n", err.message);
        result = -1;
    }
    fts_test_mongo_double_destroy(f->server);
    free_tmp();
    free(f);
    return result;
}

/* ---- commands ----------------------------------------------------------------------------------
 */

#define ASSERT_OK(call, error)                                                                     \
    do {                                                                                           \
        if (!(call)) {                                                                             \
            fail_msg("%s failed: %s (domain %u, code %u)", #call, (error).message, (error).domain, \
                     (error).code);                                                                \
        }                                                                                          \
    } while (0)

/* Runs cmd in database db and returns the reply (temporary), failing the test on an error. */
static bson_t *command_ok(const char *file, int line, mongoc_client_t *client, const char *db,
                          const bson_t *cmd)
{
    bson_t reply;
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, db, cmd, NULL, &reply, &error);
    bson_t *copy = keep(bson_copy(&reply));
    bson_destroy(&reply);
    if (!ok) {
        const char *text = msg(bson_as_canonical_extended_json(cmd, NULL));
        fail_msg("%s:%d: %s failed: %s (domain %u, code %u)", file, line, text, error.message,
                 error.domain, error.code);
    }
    return copy;
}
#define COMMAND_OK(client, db, ...)                                                                \
    command_ok(__FILE__, __LINE__, (client), (db), tmp_bson(__VA_ARGS__))

/* Runs cmd expecting the server to refuse it with code; returns the reply (temporary). */
static bson_t *command_fails(const char *file, int line, mongoc_client_t *client, const char *db,
                             uint32_t code, const bson_t *cmd)
{
    bson_t local;
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, db, cmd, NULL, &local, &error);
    bson_t *reply = keep(bson_copy(&local));
    bson_destroy(&local);
    const char *text = msg(bson_as_canonical_extended_json(cmd, NULL));
    if (ok) {
        fail_msg("%s:%d: %s succeeded; expected error %u", file, line, text, code);
    }
    if (error.domain != MONGOC_ERROR_SERVER || error.code != code) {
        fail_msg("%s:%d: %s failed with domain %u code %u (%s); expected server error %u", file,
                 line, text, error.domain, error.code, error.message, code);
    }
    return reply;
}
#define COMMAND_FAILS(client, db, code, ...)                                                       \
    command_fails(__FILE__, __LINE__, (client), (db), (code), tmp_bson(__VA_ARGS__))

static void insert(const char *file, int line, mongoc_collection_t *coll, const bson_t *doc)
{
    bson_error_t error;
    if (!mongoc_collection_insert_one(coll, doc, NULL, NULL, &error)) {
        const char *text = msg(bson_as_canonical_extended_json(doc, NULL));
        fail_msg("%s:%d: inserting %s failed: %s (domain %u, code %u)", file, line, text,
                 error.message, error.domain, error.code);
    }
}
#define INSERT(coll, ...) insert(__FILE__, __LINE__, (coll), tmp_bson(__VA_ARGS__))

/* The documents find returns, as a JSON array of canonical sorted-key documents. */
static char *find_json(mongoc_collection_t *coll, const bson_t *filter, const bson_t *opts)
{
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    bson_string_t *out = bson_string_new("[");
    const bson_t *doc;
    bool first = true;
    while (mongoc_cursor_next(cursor, &doc)) {
        char *text = fts_test_bson_sorted_json(doc);
        bson_string_append_printf(out, "%s%s", first ? "" : ", ", text);
        bson_free(text);
        first = false;
    }
    bson_error_t error;
    bool failed = mongoc_cursor_error(cursor, &error);
    mongoc_cursor_destroy(cursor);
    if (failed) {
        bson_string_free(out, true);
        fail_msg("find failed: %s (domain %u, code %u)", error.message, error.domain, error.code);
    }
    bson_string_append(out, "]");
    return bson_string_free(out, false);
}

/* The _id values (integers) find returns, as "1,2,3". bson_free it. */
static char *find_ids(mongoc_collection_t *coll, const bson_t *filter, const bson_t *opts)
{
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    bson_string_t *out = bson_string_new("");
    const bson_t *doc;
    bool first = true;
    while (mongoc_cursor_next(cursor, &doc)) {
        bson_iter_t iter;
        if (!bson_iter_init_find(&iter, doc, "_id") || !BSON_ITER_HOLDS_NUMBER(&iter)) {
            const char *text = msg(bson_as_canonical_extended_json(doc, NULL));
            mongoc_cursor_destroy(cursor);
            bson_string_free(out, true);
            fail_msg("a found document has no numeric _id: %s", text);
        }
        bson_string_append_printf(out, "%s%" PRId64, first ? "" : ",", bson_iter_as_int64(&iter));
        first = false;
    }
    bson_error_t error;
    bool failed = mongoc_cursor_error(cursor, &error);
    mongoc_cursor_destroy(cursor);
    if (failed) {
        bson_string_free(out, true);
        fail_msg("find failed: %s (domain %u, code %u)", error.message, error.domain, error.code);
    }
    return bson_string_free(out, false);
}

static void assert_ids(const char *file, int line, mongoc_collection_t *coll, const bson_t *filter,
                       const bson_t *opts, const char *expected)
{
    char *ids = find_ids(coll, filter, opts);
    if (strcmp(ids, expected) != 0) {
        const char *f = msg(bson_as_canonical_extended_json(filter, NULL));
        const char *o = msg(opts ? bson_as_canonical_extended_json(opts, NULL) : bson_strdup("{}"));
        fail_msg("%s:%d: find %s with %s returned _ids [%s], expected [%s]", file, line, f, o,
                 msg(ids), expected);
    }
    bson_free(ids);
}
#define ASSERT_IDS(coll, filter, opts, expected)                                                   \
    assert_ids(__FILE__, __LINE__, (coll), (filter), (opts), (expected))

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* ---- change streams ----------------------------------------------------------------------------
 */

static mongoc_change_stream_t *track(fixture_t *f, mongoc_change_stream_t *stream)
{
    assert_non_null(stream);
    if (f->stream_count == MAX_STREAMS) {
        fail_msg("more than %d change streams in one test", MAX_STREAMS);
    }
    f->streams[f->stream_count++] = stream;
    return stream;
}

/* Fails the test if the stream has an error. */
static void stream_ok(const char *file, int line, mongoc_change_stream_t *stream)
{
    bson_error_t error;
    const bson_t *reply;
    if (mongoc_change_stream_error_document(stream, &error, &reply)) {
        const char *text =
            msg(reply ? bson_as_canonical_extended_json(reply, NULL) : bson_strdup(""));
        fail_msg("%s:%d: change stream error: %s (domain %u, code %u) %s", file, line,
                 error.message, error.domain, error.code, text);
    }
}
#define STREAM_OK(stream) stream_ok(__FILE__, __LINE__, (stream))

/* The next event (a temporary copy), waiting up to EVENT_TIMEOUT_MS. */
static bson_t *next_event(const char *file, int line, mongoc_change_stream_t *stream)
{
    uint64_t deadline = now_ms() + EVENT_TIMEOUT_MS;
    const bson_t *event;
    for (;;) {
        if (mongoc_change_stream_next(stream, &event)) {
            return keep(bson_copy(event));
        }
        stream_ok(file, line, stream);
        if (now_ms() > deadline) {
            fail_msg("%s:%d: no change event within %d ms", file, line, EVENT_TIMEOUT_MS);
        }
    }
}
#define NEXT_EVENT(stream) next_event(__FILE__, __LINE__, (stream))

/* Asserts that no event arrives for about ms milliseconds. */
static void expect_no_event(const char *file, int line, mongoc_change_stream_t *stream, int ms)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    const bson_t *event;
    while (now_ms() < deadline) {
        if (mongoc_change_stream_next(stream, &event)) {
            const char *text = msg(bson_as_canonical_extended_json(event, NULL));
            fail_msg("%s:%d: unexpected change event %s", file, line, text);
        }
        stream_ok(file, line, stream);
    }
}
#define EXPECT_NO_EVENT(stream, ms) expect_no_event(__FILE__, __LINE__, (stream), (ms))

/* Asserts that the stream failed, or fails when read, with server error code. */
static void expect_stream_error(const char *file, int line, mongoc_change_stream_t *stream,
                                uint32_t code)
{
    bson_error_t error;
    const bson_t *reply = NULL;
    uint64_t deadline = now_ms() + EVENT_TIMEOUT_MS;
    while (!mongoc_change_stream_error_document(stream, &error, &reply)) {
        const bson_t *event;
        if (mongoc_change_stream_next(stream, &event)) {
            const char *text = msg(bson_as_canonical_extended_json(event, NULL));
            fail_msg("%s:%d: expected error %u, got the event %s", file, line, code, text);
        }
        if (now_ms() > deadline) {
            fail_msg("%s:%d: expected error %u, got no error within %d ms", file, line, code,
                     EVENT_TIMEOUT_MS);
        }
    }
    if (error.domain != MONGOC_ERROR_SERVER || error.code != code) {
        fail_msg("%s:%d: change stream failed with domain %u code %u (%s); expected server "
                 "error %u",
                 file, line, error.domain, error.code, error.message, code);
    }
}
#define EXPECT_STREAM_ERROR(stream, code) expect_stream_error(__FILE__, __LINE__, (stream), (code))

static const char *token_data(const bson_t *token)
{
    bson_iter_t iter;
    if (!token || !bson_iter_init_find(&iter, token, "_data") || !BSON_ITER_HOLDS_UTF8(&iter)) {
        fail_msg("a resume token without a string _data");
    }
    return bson_iter_utf8(&iter, NULL);
}

/* Checks the fields every change event has: _id {_data: <hex string>}, operationType,
 * clusterTime (Timestamp) and wallTime (date, new in 6.0). See
 * https://www.mongodb.com/docs/v6.0/reference/change-events/ */
static void check_common_event_fields(const char *file, int line, const bson_t *event,
                                      const char *operation_type)
{
    bson_t *id = doc_at(file, line, event, "_id");
    const char *data = token_data(id);
    if (!*data) {
        fail_msg("%s:%d: empty resume token", file, line);
    }
    for (const char *p = data; *p; p++) {
        if (!isxdigit((unsigned char)*p)) {
            fail_msg("%s:%d: resume token _data \"%s\" is not a hex string", file, line, data);
        }
    }
    const char *actual = str_at(file, line, event, "operationType");
    if (strcmp(actual, operation_type) != 0) {
        const char *text = msg(bson_as_canonical_extended_json(event, NULL));
        fail_msg("%s:%d: operationType \"%s\", expected \"%s\": %s", file, line, actual,
                 operation_type, text);
    }
    uint32_t t, i;
    timestamp_at(file, line, event, "clusterTime", &t, &i);
    if (type_at(file, line, event, "wallTime") != BSON_TYPE_DATE_TIME) {
        fail_msg("%s:%d: wallTime is not a date", file, line);
    }
}
#define CHECK_EVENT(event, type) check_common_event_fields(__FILE__, __LINE__, (event), (type))

static mongoc_change_stream_t *watch_collection(fixture_t *f, mongoc_collection_t *coll,
                                                const bson_t *pipeline, const bson_t *opts)
{
    return track(f, mongoc_collection_watch(
                        coll, pipeline ? pipeline : tmp_bson("{}"),
                        opts ? opts : tmp_bson("{'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS)));
}

/* ==== handshake and topology ================================================================== */

/* hello: https://www.mongodb.com/docs/v6.0/reference/command/hello/ */
static void test_hello_fields(void **state)
{
    fixture_t *f = *state;
    bson_t *reply = COMMAND_OK(f->client, "admin", "{'hello': 1}");
    assert_true(BOOL(reply, "isWritablePrimary"));
    assert_false(BOOL(reply, "secondary"));
    const mongoc_uri_t *uri = mongoc_client_get_uri(f->client);
    const char *set_name = mongoc_uri_get_replica_set(uri);
    assert_non_null(set_name);
    assert_string_equal(STR(reply, "setName"), set_name);
    /* hosts lists the members; me is the one answering; primary names the primary. */
    const char *me = STR(reply, "me");
    assert_string_equal(STR(reply, "primary"), me);
    bson_t *hosts = DOC(reply, "hosts");
    bool listed = false;
    bson_iter_t iter;
    bson_iter_init(&iter, hosts);
    while (bson_iter_next(&iter)) {
        listed =
            listed || (BSON_ITER_HOLDS_UTF8(&iter) && strcmp(bson_iter_utf8(&iter, NULL), me) == 0);
    }
    assert_true(listed);
    assert_int_equal(INT(reply, "minWireVersion"), 0);
    assert_true(INT(reply, "maxWireVersion") >= 17); /* 17 is MongoDB 6.0 */
    assert_int_equal(INT(reply, "maxBsonObjectSize"), 16 * 1024 * 1024);
    assert_int_equal(INT(reply, "maxMessageSizeBytes"), 48000000);
    assert_int_equal(INT(reply, "maxWriteBatchSize"), 100000);
    assert_int_equal(INT(reply, "logicalSessionTimeoutMinutes"), 30);
    assert_int_equal(TYPE(reply, "localTime"), BSON_TYPE_DATE_TIME);
    assert_false(BOOL(reply, "readOnly"));
    /* 4.4+: the version of this member's view of the topology, for awaitable hello. */
    assert_int_equal(TYPE(reply, "topologyVersion.processId"), BSON_TYPE_OID);
    assert_int_equal(TYPE(reply, "topologyVersion.counter"), BSON_TYPE_INT64);
    assert_int_equal(INT(reply, "ok"), 1);
    /* Replica set members gossip the cluster time and report the operation time. */
    uint32_t t, i;
    TIMESTAMP(reply, "operationTime", &t, &i);
    TIMESTAMP(reply, "$clusterTime.clusterTime", &t, &i);
    assert_true(t > 0);
    assert_int_equal(TYPE(reply, "$clusterTime.signature"), BSON_TYPE_DOCUMENT);
}

/* isMaster is hello's old name and answers ismaster instead of isWritablePrimary. */
static void test_is_master_legacy_fields(void **state)
{
    fixture_t *f = *state;
    bson_t *reply = COMMAND_OK(f->client, "admin", "{'isMaster': 1}");
    assert_true(BOOL(reply, "ismaster"));
    assert_false(BOOL(reply, "secondary"));
    assert_string_equal(STR(reply, "setName"),
                        mongoc_uri_get_replica_set(mongoc_client_get_uri(f->client)));
    assert_true(INT(reply, "maxWireVersion") >= 17);
}

/* Drivers open a connection with a hello (or isMaster) in a legacy OP_QUERY on admin.$cmd,
 * answered with an OP_REPLY; MongoDB 6.0 still accepts exactly those two commands that way.
 * libmongoc and pymongo do this under the hood; here it is done by hand, byte by byte.
 * https://www.mongodb.com/docs/v6.0/reference/mongodb-wire-protocol/#op_query */
static int connect_to(const mongoc_host_list_t *host)
{
    char port[16];
    snprintf(port, sizeof port, "%u", (unsigned)host->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    if (getaddrinfo(host->host, port, &hints, &found) != 0) {
        fail_msg("cannot resolve %s", host->host_and_port);
    }
    int fd = -1;
    for (struct addrinfo *a = found; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(found);
    if (fd < 0) {
        fail_msg("cannot connect to %s", host->host_and_port);
    }
    return fd;
}

static void put_int32(uint8_t *at, int32_t value)
{
    uint32_t le = BSON_UINT32_TO_LE((uint32_t)value);
    memcpy(at, &le, 4);
}

static int32_t get_int32(const uint8_t *at)
{
    uint32_t le;
    memcpy(&le, at, 4);
    return (int32_t)BSON_UINT32_FROM_LE(le);
}

static bool read_all(int fd, uint8_t *buffer, size_t length)
{
    size_t done = 0;
    while (done < length) {
        ssize_t got = read(fd, buffer + done, length - done);
        if (got <= 0) {
            return false;
        }
        done += (size_t)got;
    }
    return true;
}

/* Sends {<command>: 1} as OP_QUERY and returns the one document of the OP_REPLY (temporary). */
static bson_t *op_query_command(int fd, const char *command, int32_t request_id)
{
    bson_t query = BSON_INITIALIZER;
    BSON_APPEND_INT32(&query, command, 1);
    static const char collection[] = "admin.$cmd";
    size_t length = 16 + 4 + sizeof collection + 4 + 4 + query.len;
    uint8_t *message = bson_malloc0(length);
    put_int32(message, (int32_t)length);
    put_int32(message + 4, request_id);
    put_int32(message + 8, 0);     /* responseTo */
    put_int32(message + 12, 2004); /* OP_QUERY */
    put_int32(message + 16, 0);    /* flags */
    memcpy(message + 20, collection, sizeof collection);
    put_int32(message + 20 + sizeof collection, 0);  /* numberToSkip */
    put_int32(message + 24 + sizeof collection, -1); /* numberToReturn: one document */
    memcpy(message + 28 + sizeof collection, bson_get_data(&query), query.len);
    bool sent = write(fd, message, length) == (ssize_t)length;
    bson_free(message);
    bson_destroy(&query);
    assert_true(sent);

    uint8_t header[16];
    assert_true(read_all(fd, header, sizeof header));
    int32_t total = get_int32(header);
    assert_true(total >= 36 + 5 && total <= 48000000);
    assert_int_equal(get_int32(header + 8), request_id); /* responseTo */
    assert_int_equal(get_int32(header + 12), 1);         /* OP_REPLY */
    uint8_t *body = bson_malloc((size_t)total - 16);
    bool received = read_all(fd, body, (size_t)total - 16);
    int32_t number_returned = received ? get_int32(body + 16) : -1;
    bson_t reply;
    bool parsed = number_returned == 1 && bson_init_static(&reply, body + 20, (size_t)total - 36);
    bson_t *copy = parsed ? keep(bson_copy(&reply)) : NULL;
    bson_free(body);
    if (!parsed) {
        fail_msg("OP_REPLY to %s: numberReturned %d, or not one BSON document", command,
                 number_returned);
    }
    return copy;
}

static void test_legacy_op_query_handshake(void **state)
{
    fixture_t *f = *state;
    int fd = connect_to(mongoc_uri_get_hosts(mongoc_client_get_uri(f->client)));
    bson_t *reply = op_query_command(fd, "isMaster", 7);
    assert_int_equal(INT(reply, "ok"), 1);
    assert_true(BOOL(reply, "ismaster"));
    assert_true(INT(reply, "maxWireVersion") >= 17);
    assert_string_equal(STR(reply, "setName"),
                        mongoc_uri_get_replica_set(mongoc_client_get_uri(f->client)));
    reply = op_query_command(fd, "hello", 8);
    assert_int_equal(INT(reply, "ok"), 1);
    assert_true(BOOL(reply, "isWritablePrimary"));
    assert_true(INT(reply, "maxWireVersion") >= 17);
    close(fd);
}

/* After the driver's own handshake (OP_QUERY hello at connection time) and topology scan, the
 * client sees a replica set with a writable primary. */
static void test_client_sees_replica_set_primary(void **state)
{
    fixture_t *f = *state;
    bson_error_t error;
    mongoc_server_description_t *sd = mongoc_client_select_server(f->client, true, NULL, &error);
    ASSERT_OK(sd, error);
    assert_string_equal(mongoc_server_description_type(sd), "RSPrimary");
    const bson_t *hello = mongoc_server_description_hello_response(sd);
    assert_string_equal(STR(hello, "setName"),
                        mongoc_uri_get_replica_set(mongoc_client_get_uri(f->client)));
    mongoc_server_description_destroy(sd);
    assert_string_equal(last_topology_type, "ReplicaSetWithPrimary");
}

static void test_ping_and_build_info(void **state)
{
    fixture_t *f = *state;
    bson_t *reply = COMMAND_OK(f->client, "admin", "{'ping': 1}");
    assert_int_equal(INT(reply, "ok"), 1);
    reply = COMMAND_OK(f->client, "admin", "{'buildInfo': 1}");
    const char *version = STR(reply, "version");
    bson_t *parts = DOC(reply, "versionArray");
    char expected[64];
    snprintf(expected, sizeof expected, "%" PRId64 ".%" PRId64 ".%" PRId64, INT(parts, "0"),
             INT(parts, "1"), INT(parts, "2"));
    /* "6.0.5" or "6.0.5-rc1": versionArray spells the same release. */
    assert_int_equal(strncmp(version, expected, strlen(expected)), 0);
    assert_true(INT(parts, "0") >= 6);
    assert_int_equal(INT(reply, "maxBsonObjectSize"), 16 * 1024 * 1024);
    assert_int_equal(INT(reply, "ok"), 1);
    if (strncmp(version, "6.0.", 4) == 0) {
        bson_t *hello = COMMAND_OK(f->client, "admin", "{'hello': 1}");
        assert_int_equal(INT(hello, "maxWireVersion"), 17);
    }
}

/* listCollections and listDatabases, minimal fields:
 * https://www.mongodb.com/docs/v6.0/reference/command/listCollections/
 * https://www.mongodb.com/docs/v6.0/reference/command/listDatabases/ */
static void test_list_collections_and_databases(void **state)
{
    fixture_t *f = *state;
    COMMAND_OK(f->client, f->db_name, "{'create': 'made'}");
    INSERT(f->coll, "{'_id': 1}");
    bson_t *reply = COMMAND_OK(f->client, f->db_name, "{'listCollections': 1}");
    char ns[200];
    snprintf(ns, sizeof ns, "%s.$cmd.listCollections", f->db_name);
    assert_string_equal(STR(reply, "cursor.ns"), ns);
    bson_t *batch = DOC(reply, "cursor.firstBatch");
    bool made = false, apps = false;
    bson_iter_t iter;
    bson_iter_init(&iter, batch);
    while (bson_iter_next(&iter)) {
        uint32_t length;
        const uint8_t *data;
        bson_iter_document(&iter, &length, &data);
        bson_t entry;
        bson_init_static(&entry, data, length);
        assert_string_equal(STR(&entry, "type"), "collection");
        made = made || strcmp(STR(&entry, "name"), "made") == 0;
        apps = apps || strcmp(STR(&entry, "name"), "apps") == 0;
    }
    assert_true(made);
    assert_true(apps);
    /* The driver's helper runs the same command through a cursor. */
    bson_error_t error;
    char **names = mongoc_database_get_collection_names_with_opts(f->db, NULL, &error);
    ASSERT_OK(names, error);
    size_t count = 0;
    while (names[count]) {
        count++;
    }
    assert_int_equal(count, 2);
    bson_strfreev(names);

    reply = COMMAND_OK(f->client, "admin", "{'listDatabases': 1}");
    batch = DOC(reply, "databases");
    bool found = false;
    bson_iter_init(&iter, batch);
    while (bson_iter_next(&iter)) {
        uint32_t length;
        const uint8_t *data;
        bson_iter_document(&iter, &length, &data);
        bson_t entry;
        bson_init_static(&entry, data, length);
        if (strcmp(STR(&entry, "name"), f->db_name) == 0) {
            found = true;
            assert_true(TYPE(&entry, "sizeOnDisk") == BSON_TYPE_INT64 ||
                        TYPE(&entry, "sizeOnDisk") == BSON_TYPE_INT32 ||
                        TYPE(&entry, "sizeOnDisk") == BSON_TYPE_DOUBLE);
            assert_false(BOOL(&entry, "empty"));
        }
    }
    assert_true(found);
    assert_true(has_field(reply, "totalSize"));
    /* nameOnly: just the names. */
    reply = COMMAND_OK(f->client, "admin", "{'listDatabases': 1, 'nameOnly': true}");
    bson_iter_init(&iter, DOC(reply, "databases"));
    while (bson_iter_next(&iter)) {
        uint32_t length;
        const uint8_t *data;
        bson_iter_document(&iter, &length, &data);
        bson_t entry;
        bson_init_static(&entry, data, length);
        ASSERT_KEYS(&entry, "name");
    }
}

/* Sessions (lsid), read and write concerns are accepted; endSessions answers ok. */
static void test_sessions_and_concerns_accepted(void **state)
{
    fixture_t *f = *state;
    bson_error_t error;
    mongoc_client_session_t *session = mongoc_client_start_session(f->client, NULL, &error);
    ASSERT_OK(session, error);
    bson_t *opts = tmp_bson("{'writeConcern': {'w': 'majority', 'wtimeout': 5000}}");
    ASSERT_OK(mongoc_client_session_append(session, opts, &error), error);
    ASSERT_OK(mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': 1, 'name': 'Portal'}"), opts,
                                           NULL, &error),
              error);
    bson_t *find_opts = tmp_bson("{'readConcern': {'level': 'majority'}}");
    ASSERT_OK(mongoc_client_session_append(session, find_opts, &error), error);
    char *found = find_json(f->coll, tmp_bson("{}"), find_opts);
    assert_string_equal(found, "[{ \"_id\" : { \"$numberInt\" : \"1\" }, \"name\" : \"Portal\" }]");
    bson_free(found);
    bson_t *lsid = keep(bson_copy(mongoc_client_session_get_lsid(session)));
    bson_t *end = keep(bson_new());
    bson_t sessions;
    bson_append_array_begin(end, "endSessions", -1, &sessions);
    bson_append_document(&sessions, "0", -1, lsid);
    bson_append_array_end(end, &sessions);
    bson_t *reply = command_ok(__FILE__, __LINE__, f->client, "admin", end);
    assert_int_equal(INT(reply, "ok"), 1);
    mongoc_client_session_destroy(session);
}

/* ==== CRUD ==================================================================================== */

/* Ten Steam-like applications, _id 1..10. */
static void insert_apps(fixture_t *f)
{
    for (int id = 1; id <= 10; id++) {
        INSERT(f->coll,
               "{'_id': %d, 'id': %d, 'name': 'app-%02d', 'type': '%s', 'is_free': %s, "
               "'score': %d, 'prices': {'us': {'currency': 'USD', 'final': %d}}, "
               "'developers': ['Studio %d']}",
               id, id, id, id % 3 == 0 ? "dlc" : "game", id % 2 ? "true" : "false", (id * 7) % 10,
               id * 100, id);
    }
}

static void test_find_equality_and_dotted(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    ASSERT_IDS(f->coll, tmp_bson("{'type': 'dlc'}"), tmp_bson("{'sort': {'_id': 1}}"), "3,6,9");
    ASSERT_IDS(f->coll, tmp_bson("{'_id': 4}"), NULL, "4");
    ASSERT_IDS(f->coll, tmp_bson("{'is_free': false, 'type': 'game'}"),
               tmp_bson("{'sort': {'_id': 1}}"), "2,4,8,10");
    ASSERT_IDS(f->coll, tmp_bson("{'prices.us.final': 500}"), NULL, "5");
    ASSERT_IDS(f->coll, tmp_bson("{'prices.us.currency': 'USD', 'type': 'dlc'}"),
               tmp_bson("{'sort': {'_id': 1}}"), "3,6,9");
    ASSERT_IDS(f->coll, tmp_bson("{'prices.eu.final': 500}"), NULL, "");
    ASSERT_IDS(f->coll, tmp_bson("{'name': 'nothing like it'}"), NULL, "");
    /* The whole document comes back as inserted. */
    char *found = find_json(f->coll, tmp_bson("{'_id': 2}"), NULL);
    bson_t *expected =
        tmp_bson("{'_id': 2, 'id': 2, 'name': 'app-02', 'type': 'game', 'is_free': false, "
                 "'score': 4, 'prices': {'us': {'currency': 'USD', 'final': 200}}, "
                 "'developers': ['Studio 2']}");
    char *expected_text = fts_test_bson_sorted_json(expected);
    char *wrapped = bson_strdup_printf("[%s]", expected_text);
    assert_string_equal(found, wrapped);
    bson_free(found);
    bson_free(expected_text);
    bson_free(wrapped);
}

static void test_find_in_and_ranges(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    bson_t *by_id = tmp_bson("{'sort': {'_id': 1}}");
    ASSERT_IDS(f->coll, tmp_bson("{'_id': {'$in': [2, 4, 99]}}"), by_id, "2,4");
    ASSERT_IDS(f->coll, tmp_bson("{'type': {'$in': ['dlc', 'demo']}}"), by_id, "3,6,9");
    ASSERT_IDS(f->coll, tmp_bson("{'_id': {'$gt': 3, '$lte': 6}}"), by_id, "4,5,6");
    ASSERT_IDS(f->coll, tmp_bson("{'_id': {'$gte': 9}}"), by_id, "9,10");
    ASSERT_IDS(f->coll, tmp_bson("{'_id': {'$lt': 3}}"), by_id, "1,2");
    ASSERT_IDS(f->coll, tmp_bson("{'prices.us.final': {'$gte': 800}}"), by_id, "8,9,10");
    ASSERT_IDS(f->coll, tmp_bson("{'score': {'$gt': 2, '$lt': 6}}"), by_id, "2,5,9");
    ASSERT_IDS(f->coll, tmp_bson("{'name': {'$gte': 'app-09'}}"), by_id, "9,10");
    ASSERT_IDS(f->coll, tmp_bson("{'_id': {'$gt': 2}, 'type': 'dlc'}"), by_id, "3,6,9");
}

static void test_find_sort_limit_skip_projection(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': -1}}"), "10,9,8,7,6,5,4,3,2,1");
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': -1}, 'limit': 3, 'skip': 1}"),
               "9,8,7");
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}, 'skip': 8}"), "9,10");
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}, 'skip': 20}"), "");
    /* score is (id * 7) % 10: 7,4,1,8,5,2,9,6,3,0 for ids 1..10 */
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'score': 1}}"), "10,3,6,9,2,5,8,1,4,7");
    ASSERT_IDS(f->coll, tmp_bson("{'type': 'game'}"),
               tmp_bson("{'sort': {'score': -1}, 'limit': 2}"), "7,4");
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'name': -1}, 'limit': 2}"), "10,9");
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'prices.us.final': -1}, 'limit': 1}"),
               "10");
    /* Projections: inclusion keeps _id unless excluded; exclusion drops the named fields. */
    char *found =
        find_json(f->coll, tmp_bson("{'_id': 3}"), tmp_bson("{'projection': {'name': 1}}"));
    assert_string_equal(found, "[{ \"_id\" : { \"$numberInt\" : \"3\" }, \"name\" : \"app-03\" }]");
    bson_free(found);
    found = find_json(f->coll, tmp_bson("{'_id': 3}"),
                      tmp_bson("{'projection': {'_id': 0, 'name': 1, 'prices.us.final': 1}}"));
    assert_string_equal(found, "[{ \"name\" : \"app-03\", \"prices\" : { \"us\" : { \"final\" : { "
                               "\"$numberInt\" : \"300\" } } } }]");
    bson_free(found);
    found = find_json(f->coll, tmp_bson("{'_id': 3}"),
                      tmp_bson("{'projection': {'prices': 0, 'developers': 0, 'score': 0, "
                               "'is_free': 0, 'id': 0}}"));
    assert_string_equal(found, "[{ \"_id\" : { \"$numberInt\" : \"3\" }, \"name\" : \"app-03\", "
                               "\"type\" : \"dlc\" }]");
    bson_free(found);
}

/* batchSize splits a result into a first batch and getMore batches; the last batch closes the
 * cursor (id 0). https://www.mongodb.com/docs/v6.0/reference/command/getMore/ */
static void test_find_batches_and_get_more(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    record_start();
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}, 'batchSize': 3}"),
               "1,2,3,4,5,6,7,8,9,10");
    recorder.on = false;
    char seen[256] = "";
    for (size_t i = 0; i < recorder.count; i++) {
        if (strcmp(recorder.entries[i].name, "find") == 0 ||
            strcmp(recorder.entries[i].name, "getMore") == 0) {
            size_t used = strlen(seen);
            snprintf(seen + used, sizeof seen - used, "%s%s:%d%s", used ? " " : "",
                     recorder.entries[i].name, recorder.entries[i].batch,
                     recorder.entries[i].cursor_id == 0 ? ":closed" : "");
        }
    }
    assert_string_equal(seen, "find:3 getMore:3 getMore:3 getMore:1:closed");
    /* A limit smaller than the batch closes the cursor at once. */
    record_start();
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}, 'limit': 2}"), "1,2");
    recorder.on = false;
    assert_true(recorder.count >= 1);
    assert_string_equal(recorder.entries[0].name, "find");
    assert_int_equal(recorder.entries[0].batch, 2);
    assert_true(recorder.entries[0].cursor_id == 0);
}

/* killCursors reports what it killed; a killed cursor is gone (43 CursorNotFound).
 * https://www.mongodb.com/docs/v6.0/reference/command/killCursors/ */
static void test_kill_cursors(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    bson_t *reply = COMMAND_OK(f->client, f->db_name, "{'find': 'apps', 'batchSize': 2}");
    assert_int_equal(bson_count_keys(DOC(reply, "cursor.firstBatch")), 2);
    char ns[200];
    snprintf(ns, sizeof ns, "%s.apps", f->db_name);
    assert_string_equal(STR(reply, "cursor.ns"), ns);
    int64_t id = INT(reply, "cursor.id");
    assert_true(id != 0);
    /* A getMore continues where the first batch stopped. */
    bson_t *more = keep(bson_new());
    BSON_APPEND_INT64(more, "getMore", id);
    BSON_APPEND_UTF8(more, "collection", "apps");
    BSON_APPEND_INT32(more, "batchSize", 3);
    reply = command_ok(__FILE__, __LINE__, f->client, f->db_name, more);
    assert_int_equal(bson_count_keys(DOC(reply, "cursor.nextBatch")), 3);
    assert_int_equal(INT(reply, "cursor.id"), id);

    bson_t *kill = keep(bson_new());
    bson_t cursors;
    BSON_APPEND_UTF8(kill, "killCursors", "apps");
    bson_append_array_begin(kill, "cursors", -1, &cursors);
    BSON_APPEND_INT64(&cursors, "0", id);
    bson_append_array_end(kill, &cursors);
    reply = command_ok(__FILE__, __LINE__, f->client, f->db_name, kill);
    bson_t *killed = DOC(reply, "cursorsKilled");
    assert_int_equal(bson_count_keys(killed), 1);
    assert_int_equal(INT(killed, "0"), id);
    assert_int_equal(bson_count_keys(DOC(reply, "cursorsNotFound")), 0);
    assert_int_equal(bson_count_keys(DOC(reply, "cursorsAlive")), 0);
    assert_int_equal(bson_count_keys(DOC(reply, "cursorsUnknown")), 0);

    bson_error_t error;
    bson_t get_more_reply;
    assert_false(
        mongoc_client_command_simple(f->client, f->db_name, more, NULL, &get_more_reply, &error));
    bson_destroy(&get_more_reply);
    assert_int_equal(error.domain, MONGOC_ERROR_SERVER);
    assert_int_equal(error.code, 43);
    /* Killing it again: not found. */
    reply = command_ok(__FILE__, __LINE__, f->client, f->db_name, kill);
    assert_int_equal(bson_count_keys(DOC(reply, "cursorsKilled")), 0);
    assert_int_equal(INT(DOC(reply, "cursorsNotFound"), "0"), id);
}

/* https://www.mongodb.com/docs/v6.0/reference/operator/update/ */
static void test_update_set_unset_inc(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1, 'name': 'Half-Life', 'short_description': 'A crowbar.', "
                    "'recommendations': {'total': 10}, 'prices': {'us': {'final': 999}}}");
    bson_error_t error;
    bson_t reply;
    ASSERT_OK(mongoc_collection_update_one(
                  f->coll, tmp_bson("{'_id': 1}"),
                  tmp_bson("{'$set': {'name': 'Half-Life 2', 'prices.us.final': 499, "
                           "'prices.eu': {'final': 599}, 'is_free': false}, "
                           "'$unset': {'short_description': ''}, "
                           "'$inc': {'recommendations.total': 5, 'views': 3}}"),
                  NULL, &reply, &error),
              error);
    assert_int_equal(INT(&reply, "matchedCount"), 1);
    assert_int_equal(INT(&reply, "modifiedCount"), 1);
    assert_int_equal(INT(&reply, "upsertedCount"), 0);
    bson_destroy(&reply);
    char *found = find_json(f->coll, tmp_bson("{'_id': 1}"), NULL);
    char *expected = fts_test_bson_sorted_json(
        tmp_bson("{'_id': 1, 'name': 'Half-Life 2', 'recommendations': {'total': 15}, "
                 "'prices': {'us': {'final': 499}, 'eu': {'final': 599}}, 'is_free': false, "
                 "'views': 3}"));
    char *wrapped = bson_strdup_printf("[%s]", expected);
    assert_string_equal(found, wrapped);
    bson_free(found);
    bson_free(expected);
    bson_free(wrapped);
    /* No document matches: nothing changes and nothing is created. */
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 2}"),
                                           tmp_bson("{'$set': {'name': 'x'}}"), NULL, &reply,
                                           &error),
              error);
    assert_int_equal(INT(&reply, "matchedCount"), 0);
    assert_int_equal(INT(&reply, "modifiedCount"), 0);
    bson_destroy(&reply);
    ASSERT_IDS(f->coll, tmp_bson("{}"), NULL, "1");
}

static void test_update_replacement_and_upsert(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1, 'name': 'Old', 'type': 'game', 'developers': ['A']}");
    bson_error_t error;
    bson_t reply;
    ASSERT_OK(mongoc_collection_replace_one(f->coll, tmp_bson("{'_id': 1}"),
                                            tmp_bson("{'name': 'New', 'is_free': true}"), NULL,
                                            &reply, &error),
              error);
    assert_int_equal(INT(&reply, "matchedCount"), 1);
    assert_int_equal(INT(&reply, "modifiedCount"), 1);
    bson_destroy(&reply);
    char *found = find_json(f->coll, tmp_bson("{'_id': 1}"), NULL);
    assert_string_equal(found, "[{ \"_id\" : { \"$numberInt\" : \"1\" }, \"is_free\" : true, "
                               "\"name\" : \"New\" }]");
    bson_free(found);

    /* Upsert with an operator update: the new document takes _id from the filter. */
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 42}"),
                                           tmp_bson("{'$set': {'name': 'Upserted'}}"),
                                           tmp_bson("{'upsert': true}"), &reply, &error),
              error);
    assert_int_equal(INT(&reply, "matchedCount"), 0);
    assert_int_equal(INT(&reply, "modifiedCount"), 0);
    assert_int_equal(INT(&reply, "upsertedCount"), 1);
    assert_int_equal(INT(&reply, "upsertedId"), 42);
    bson_destroy(&reply);
    found = find_json(f->coll, tmp_bson("{'_id': 42}"), NULL);
    assert_string_equal(found,
                        "[{ \"_id\" : { \"$numberInt\" : \"42\" }, \"name\" : \"Upserted\" }]");
    bson_free(found);
    /* Upsert with a replacement. */
    ASSERT_OK(mongoc_collection_replace_one(f->coll, tmp_bson("{'_id': 43}"),
                                            tmp_bson("{'name': 'Replaced in'}"),
                                            tmp_bson("{'upsert': true}"), &reply, &error),
              error);
    assert_int_equal(INT(&reply, "upsertedCount"), 1);
    assert_int_equal(INT(&reply, "upsertedId"), 43);
    bson_destroy(&reply);
    found = find_json(f->coll, tmp_bson("{'_id': 43}"), NULL);
    assert_string_equal(found,
                        "[{ \"_id\" : { \"$numberInt\" : \"43\" }, \"name\" : \"Replaced in\" }]");
    bson_free(found);
    /* An upsert that matches updates and creates nothing. */
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 42}"),
                                           tmp_bson("{'$set': {'name': 'Again'}}"),
                                           tmp_bson("{'upsert': true}"), &reply, &error),
              error);
    assert_int_equal(INT(&reply, "matchedCount"), 1);
    assert_int_equal(INT(&reply, "upsertedCount"), 0);
    assert_false(has_field(&reply, "upsertedId"));
    bson_destroy(&reply);
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "1,42,43");
}

static void test_update_multi(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    bson_error_t error;
    bson_t reply;
    ASSERT_OK(mongoc_collection_update_many(f->coll, tmp_bson("{'type': 'dlc'}"),
                                            tmp_bson("{'$set': {'flag': true}}"), NULL, &reply,
                                            &error),
              error);
    assert_int_equal(INT(&reply, "matchedCount"), 3);
    assert_int_equal(INT(&reply, "modifiedCount"), 3);
    bson_destroy(&reply);
    ASSERT_IDS(f->coll, tmp_bson("{'flag': true}"), tmp_bson("{'sort': {'_id': 1}}"), "3,6,9");
    /* Without multi, one document of many changes. */
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'type': 'game'}"),
                                           tmp_bson("{'$set': {'single': true}}"), NULL, &reply,
                                           &error),
              error);
    assert_int_equal(INT(&reply, "matchedCount"), 1);
    assert_int_equal(INT(&reply, "modifiedCount"), 1);
    bson_destroy(&reply);
    char *ids = find_ids(f->coll, tmp_bson("{'single': true}"), NULL);
    char *games = find_ids(f->coll, tmp_bson("{'single': true, 'type': 'game'}"), NULL);
    assert_true(*ids && strchr(ids, ',') == NULL);
    assert_string_equal(ids, games);
    bson_free(ids);
    bson_free(games);
    /* The raw command: multi: true with an operator update. */
    bson_t *reply_doc = COMMAND_OK(f->client, f->db_name,
                                   "{'update': 'apps', 'updates': [{'q': {'_id': {'$gt': 8}}, "
                                   "'u': {'$inc': {'score': 100}}, 'multi': true}]}");
    assert_int_equal(INT(reply_doc, "n"), 2);
    assert_int_equal(INT(reply_doc, "nModified"), 2);
    ASSERT_IDS(f->coll, tmp_bson("{'score': {'$gte': 100}}"), tmp_bson("{'sort': {'_id': 1}}"),
               "9,10");
    /* Setting a field to the value it has matches but does not modify. */
    reply_doc = COMMAND_OK(f->client, f->db_name,
                           "{'update': 'apps', 'updates': [{'q': {'_id': 1}, "
                           "'u': {'$set': {'name': 'app-01'}}}]}");
    assert_int_equal(INT(reply_doc, "n"), 1);
    assert_int_equal(INT(reply_doc, "nModified"), 0);
}

static void test_delete_one_and_many(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    bson_error_t error;
    bson_t reply;
    ASSERT_OK(
        mongoc_collection_delete_one(f->coll, tmp_bson("{'type': 'dlc'}"), NULL, &reply, &error),
        error);
    assert_int_equal(INT(&reply, "deletedCount"), 1);
    bson_destroy(&reply);
    ASSERT_OK(
        mongoc_collection_delete_many(f->coll, tmp_bson("{'type': 'dlc'}"), NULL, &reply, &error),
        error);
    assert_int_equal(INT(&reply, "deletedCount"), 2);
    bson_destroy(&reply);
    ASSERT_OK(mongoc_collection_delete_one(f->coll, tmp_bson("{'_id': 3}"), NULL, &reply, &error),
              error);
    assert_int_equal(INT(&reply, "deletedCount"), 0);
    bson_destroy(&reply);
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "1,2,4,5,7,8,10");
    ASSERT_OK(mongoc_collection_delete_many(f->coll, tmp_bson("{'_id': {'$in': [1, 2, 99]}}"), NULL,
                                            &reply, &error),
              error);
    assert_int_equal(INT(&reply, "deletedCount"), 2);
    bson_destroy(&reply);
    ASSERT_OK(mongoc_collection_delete_many(f->coll, tmp_bson("{}"), NULL, &reply, &error), error);
    assert_int_equal(INT(&reply, "deletedCount"), 5);
    bson_destroy(&reply);
    ASSERT_IDS(f->coll, tmp_bson("{}"), NULL, "");
}

/* count and aggregate [$match, $count]; $count of nothing yields no document at all.
 * https://www.mongodb.com/docs/v6.0/reference/operator/aggregation/count/ */
static void test_count_and_aggregate_count(void **state)
{
    fixture_t *f = *state;
    insert_apps(f);
    bson_t *reply = COMMAND_OK(f->client, f->db_name, "{'count': 'apps'}");
    assert_int_equal(INT(reply, "n"), 10);
    reply = COMMAND_OK(f->client, f->db_name, "{'count': 'apps', 'query': {'type': 'dlc'}}");
    assert_int_equal(INT(reply, "n"), 3);
    reply = COMMAND_OK(f->client, f->db_name, "{'count': 'nothing_here'}");
    assert_int_equal(INT(reply, "n"), 0);

    mongoc_cursor_t *cursor = mongoc_collection_aggregate(
        f->coll, MONGOC_QUERY_NONE,
        tmp_bson("{'pipeline': [{'$match': {'type': 'game', '_id': {'$gt': 2}}}, "
                 "{'$count': 'games'}]}"),
        NULL, NULL);
    const bson_t *doc;
    assert_true(mongoc_cursor_next(cursor, &doc));
    ASSERT_DOC(doc, "{'games': 5}");
    assert_false(mongoc_cursor_next(cursor, &doc));
    bson_error_t error;
    assert_false(mongoc_cursor_error(cursor, &error));
    mongoc_cursor_destroy(cursor);

    cursor = mongoc_collection_aggregate(
        f->coll, MONGOC_QUERY_NONE,
        tmp_bson("{'pipeline': [{'$match': {'type': 'nope'}}, {'$count': 'n'}]}"), NULL, NULL);
    assert_false(mongoc_cursor_next(cursor, &doc));
    assert_false(mongoc_cursor_error(cursor, &error));
    mongoc_cursor_destroy(cursor);

    /* $match alone returns the documents. */
    cursor = mongoc_collection_aggregate(
        f->coll, MONGOC_QUERY_NONE, tmp_bson("{'pipeline': [{'$match': {'_id': 7}}]}"), NULL, NULL);
    assert_true(mongoc_cursor_next(cursor, &doc));
    assert_int_equal(INT(doc, "_id"), 7);
    assert_false(mongoc_cursor_next(cursor, &doc));
    mongoc_cursor_destroy(cursor);
}

/* create, renameCollection, drop, dropDatabase.
 * https://www.mongodb.com/docs/v6.0/reference/command/renameCollection/ */
static void test_create_rename_drop(void **state)
{
    fixture_t *f = *state;
    COMMAND_OK(f->client, f->db_name, "{'create': 'fresh'}");
    /* 48 NamespaceExists */
    COMMAND_FAILS(f->client, f->db_name, 48, "{'create': 'fresh'}");
    mongoc_collection_t *src = mongoc_database_get_collection(f->db, "src");
    for (int i = 1; i <= 3; i++) {
        INSERT(src, "{'_id': %d}", i);
    }
    COMMAND_OK(f->client, "admin", "{'renameCollection': '%s.src', 'to': '%s.dst'}", f->db_name,
               f->db_name);
    mongoc_collection_t *dst = mongoc_database_get_collection(f->db, "dst");
    ASSERT_IDS(dst, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "1,2,3");
    ASSERT_IDS(src, tmp_bson("{}"), NULL, "");
    /* The target exists: refused unless dropTarget. */
    COMMAND_FAILS(f->client, "admin", 48, "{'renameCollection': '%s.dst', 'to': '%s.fresh'}",
                  f->db_name, f->db_name);
    COMMAND_OK(f->client, "admin",
               "{'renameCollection': '%s.dst', 'to': '%s.fresh', 'dropTarget': true}", f->db_name,
               f->db_name);
    mongoc_collection_t *fresh = mongoc_database_get_collection(f->db, "fresh");
    ASSERT_IDS(fresh, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "1,2,3");
    bson_error_t error;
    char **names = mongoc_database_get_collection_names_with_opts(f->db, NULL, &error);
    ASSERT_OK(names, error);
    assert_non_null(names[0]);
    assert_string_equal(names[0], "fresh");
    assert_null(names[1]);
    bson_strfreev(names);

    ASSERT_OK(mongoc_collection_drop(fresh, &error), error);
    ASSERT_IDS(fresh, tmp_bson("{}"), NULL, "");
    names = mongoc_database_get_collection_names_with_opts(f->db, NULL, &error);
    ASSERT_OK(names, error);
    assert_null(names[0]);
    bson_strfreev(names);

    INSERT(f->coll, "{'_id': 1}");
    COMMAND_OK(f->client, f->db_name, "{'dropDatabase': 1}");
    ASSERT_IDS(f->coll, tmp_bson("{}"), NULL, "");
    bson_t *reply = COMMAND_OK(f->client, "admin", "{'listDatabases': 1, 'nameOnly': true}");
    bson_iter_t iter;
    bson_iter_init(&iter, DOC(reply, "databases"));
    while (bson_iter_next(&iter)) {
        uint32_t length;
        const uint8_t *data;
        bson_iter_document(&iter, &length, &data);
        bson_t entry;
        bson_init_static(&entry, data, length);
        assert_string_not_equal(STR(&entry, "name"), f->db_name);
    }
    mongoc_collection_destroy(src);
    mongoc_collection_destroy(dst);
    mongoc_collection_destroy(fresh);
}

/* A duplicate _id is write error 11000 (DuplicateKey); ordered inserts stop there, unordered
 * ones go on. https://www.mongodb.com/docs/v6.0/reference/command/insert/ */
static void test_duplicate_key(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1, 'name': 'first'}");
    bson_error_t error;
    bson_t reply;
    assert_false(mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': 1, 'name': 'second'}"),
                                              NULL, &reply, &error));
    assert_int_equal(error.code, 11000);
    assert_int_equal(INT(&reply, "writeErrors.0.code"), 11000);
    assert_int_equal(INT(&reply, "writeErrors.0.index"), 0);
    bson_destroy(&reply);

    bson_t *docs[3] = {tmp_bson("{'_id': 4}"), tmp_bson("{'_id': 1}"), tmp_bson("{'_id': 5}")};
    assert_false(
        mongoc_collection_insert_many(f->coll, (const bson_t **)docs, 3, NULL, &reply, &error));
    assert_int_equal(error.code, 11000);
    assert_int_equal(INT(&reply, "insertedCount"), 1);
    assert_int_equal(INT(&reply, "writeErrors.0.index"), 1);
    assert_int_equal(INT(&reply, "writeErrors.0.code"), 11000);
    bson_destroy(&reply);
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "1,4");

    bson_t *more[3] = {tmp_bson("{'_id': 6}"), tmp_bson("{'_id': 1}"), tmp_bson("{'_id': 7}")};
    assert_false(mongoc_collection_insert_many(f->coll, (const bson_t **)more, 3,
                                               tmp_bson("{'ordered': false}"), &reply, &error));
    assert_int_equal(error.code, 11000);
    assert_int_equal(INT(&reply, "insertedCount"), 2);
    bson_destroy(&reply);
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "1,4,6,7");
    /* The first document is untouched. */
    char *found = find_json(f->coll, tmp_bson("{'_id': 1}"), NULL);
    assert_string_equal(found, "[{ \"_id\" : { \"$numberInt\" : \"1\" }, \"name\" : \"first\" }]");
    bson_free(found);
    /* The raw reply: ok 1, n counts what was written, writeErrors lists the rest. */
    bson_t *raw = COMMAND_OK(f->client, f->db_name,
                             "{'insert': 'apps', 'documents': [{'_id': 1}, {'_id': 8}], "
                             "'ordered': false}");
    assert_int_equal(INT(raw, "ok"), 1);
    assert_int_equal(INT(raw, "n"), 1);
    assert_int_equal(INT(raw, "writeErrors.0.code"), 11000);
    assert_int_equal(INT(raw, "writeErrors.0.index"), 0);
    assert_int_equal(TYPE(raw, "writeErrors.0.errmsg"), BSON_TYPE_UTF8);
}

/* An unknown command is error 59 CommandNotFound. */
static void test_unknown_command(void **state)
{
    fixture_t *f = *state;
    bson_t *reply = COMMAND_FAILS(f->client, "admin", 59, "{'frobnicateTheWidgets': 1}");
    assert_string_equal(STR(reply, "codeName"), "CommandNotFound");
    assert_int_equal(INT(reply, "ok"), 0);
    reply = COMMAND_FAILS(f->client, f->db_name, 59, "{'noSuchCommand': 'apps'}");
    assert_string_equal(STR(reply, "codeName"), "CommandNotFound");
}

/* ==== change streams ========================================================================= */

/* https://www.mongodb.com/docs/v6.0/reference/change-events/ (insert, update, replace,
 * delete). */
static void test_stream_event_shapes(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    INSERT(f->coll, "{'_id': 570, 'name': 'Dota 2', 'short_description': 'MOBA', "
                    "'recommendations': {'total': 10}, 'prices': {'us': {'final': 0}}}");
    bson_error_t error;
    ASSERT_OK(mongoc_collection_update_one(
                  f->coll, tmp_bson("{'_id': 570}"),
                  tmp_bson("{'$set': {'name': 'Dota 2 Reborn', 'prices.us.final': 99}, "
                           "'$unset': {'short_description': ''}, "
                           "'$inc': {'recommendations.total': 2}}"),
                  NULL, NULL, &error),
              error);
    ASSERT_OK(mongoc_collection_replace_one(f->coll, tmp_bson("{'_id': 570}"),
                                            tmp_bson("{'name': 'Dota 3', 'type': 'game'}"), NULL,
                                            NULL, &error),
              error);
    ASSERT_OK(mongoc_collection_delete_one(f->coll, tmp_bson("{'_id': 570}"), NULL, NULL, &error),
              error);

    bson_t *event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "insert");
    ASSERT_KEYS(event, "_id,clusterTime,documentKey,fullDocument,ns,operationType,wallTime");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'apps'}", f->db_name);
    ASSERT_DOC(DOC(event, "documentKey"), "{'_id': 570}");
    ASSERT_DOC(DOC(event, "fullDocument"),
               "{'_id': 570, 'name': 'Dota 2', 'short_description': 'MOBA', "
               "'recommendations': {'total': 10}, 'prices': {'us': {'final': 0}}}");

    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "update");
    /* Without fullDocument: updateLookup an update event has no fullDocument. */
    ASSERT_KEYS(event, "_id,clusterTime,documentKey,ns,operationType,updateDescription,wallTime");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'apps'}", f->db_name);
    ASSERT_DOC(DOC(event, "documentKey"), "{'_id': 570}");
    ASSERT_DOC(DOC(event, "updateDescription.updatedFields"),
               "{'name': 'Dota 2 Reborn', 'prices.us.final': 99, 'recommendations.total': 12}");
    ASSERT_DOC(DOC(event, "updateDescription"),
               "{'updatedFields': {'name': 'Dota 2 Reborn', 'prices.us.final': 99, "
               "'recommendations.total': 12}, 'removedFields': ['short_description'], "
               "'truncatedArrays': []}");

    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "replace");
    ASSERT_KEYS(event, "_id,clusterTime,documentKey,fullDocument,ns,operationType,wallTime");
    ASSERT_DOC(DOC(event, "documentKey"), "{'_id': 570}");
    ASSERT_DOC(DOC(event, "fullDocument"), "{'_id': 570, 'name': 'Dota 3', 'type': 'game'}");

    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "delete");
    ASSERT_KEYS(event, "_id,clusterTime,documentKey,ns,operationType,wallTime");
    ASSERT_DOC(DOC(event, "documentKey"), "{'_id': 570}");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'apps'}", f->db_name);
    EXPECT_NO_EVENT(stream, 300);
}

/* Events of one stream: clusterTime strictly increasing (no transactions here), resume tokens
 * strictly increasing (they are built to sort bytewise); the driver's resume token is the
 * latest event's _id. */
static void test_stream_cluster_time_and_tokens_ordered(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    bson_t *docs[4] = {tmp_bson("{'_id': 1}"), tmp_bson("{'_id': 2}"), tmp_bson("{'_id': 3}"),
                       tmp_bson("{'_id': 4}")};
    bson_error_t error;
    ASSERT_OK(mongoc_collection_insert_many(f->coll, (const bson_t **)docs, 4, NULL, NULL, &error),
              error);
    ASSERT_OK(mongoc_collection_update_many(f->coll, tmp_bson("{}"), tmp_bson("{'$inc': {'n': 1}}"),
                                            NULL, NULL, &error),
              error);
    ASSERT_OK(
        mongoc_collection_delete_many(f->coll, tmp_bson("{'_id': {'$lt': 3}}"), NULL, NULL, &error),
        error);
    uint32_t last_t = 0, last_i = 0;
    char *last_token = NULL;
    const char *expected_types[] = {"insert", "insert", "insert", "insert", "update",
                                    "update", "update", "update", "delete", "delete"};
    for (size_t n = 0; n < sizeof expected_types / sizeof *expected_types; n++) {
        bson_t *event = NEXT_EVENT(stream);
        CHECK_EVENT(event, expected_types[n]);
        uint32_t t, i;
        TIMESTAMP(event, "clusterTime", &t, &i);
        if (!(t > last_t || (t == last_t && i > last_i))) {
            fail_msg("event %zu: clusterTime (%u, %u) not after (%u, %u)", n, t, i, last_t, last_i);
        }
        last_t = t;
        last_i = i;
        const char *token = token_data(DOC(event, "_id"));
        if (last_token && strcmp(token, last_token) <= 0) {
            fail_msg("event %zu: resume token %s does not sort after %s", n, token, last_token);
        }
        bson_free(last_token);
        last_token = bson_strdup(token);
        /* The driver's resume token is never behind the event it returned last (it is that
         * event's _id, or the batch's postBatchResumeToken after the batch's last event). */
        const char *cached = token_data(mongoc_change_stream_get_resume_token(stream));
        if (strcmp(cached, token) < 0) {
            fail_msg("event %zu: the driver's resume token %s is behind the event's %s", n, cached,
                     token);
        }
    }
    bson_free(last_token);
}

/* fullDocument: updateLookup gives the document as it is when the event is looked up, which
 * may be later than the update; null when the document is gone by then.
 * https://www.mongodb.com/docs/v6.0/changeStreams/#lookup-full-document-for-update-operations */
static void test_stream_update_lookup(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1, 'v': 0}");
    mongoc_change_stream_t *stream = watch_collection(
        f, f->coll, NULL,
        tmp_bson("{'fullDocument': 'updateLookup', 'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS));
    STREAM_OK(stream);
    bson_error_t error;
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 1}"),
                                           tmp_bson("{'$set': {'v': 1}}"), NULL, NULL, &error),
              error);
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 1}"),
                                           tmp_bson("{'$set': {'v': 2, 'w': 'x'}}"), NULL, NULL,
                                           &error),
              error);
    INSERT(f->coll, "{'_id': 2, 'v': 10}");
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 2}"),
                                           tmp_bson("{'$set': {'v': 11}}"), NULL, NULL, &error),
              error);
    ASSERT_OK(mongoc_collection_delete_one(f->coll, tmp_bson("{'_id': 2}"), NULL, NULL, &error),
              error);

    bson_t *event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "update");
    ASSERT_DOC(DOC(event, "updateDescription.updatedFields"), "{'v': 1}");
    ASSERT_DOC(DOC(event, "fullDocument"), "{'_id': 1, 'v': 2, 'w': 'x'}");
    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "update");
    ASSERT_DOC(DOC(event, "updateDescription.updatedFields"), "{'v': 2, 'w': 'x'}");
    ASSERT_DOC(DOC(event, "fullDocument"), "{'_id': 1, 'v': 2, 'w': 'x'}");
    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "insert");
    ASSERT_DOC(DOC(event, "fullDocument"), "{'_id': 2, 'v': 10}");
    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "update");
    assert_int_equal(TYPE(event, "fullDocument"), BSON_TYPE_NULL);
    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "delete");
    assert_false(has_field(event, "fullDocument"));
}

/* A pipeline after $changeStream: $match on event fields, $project keeping _id (the resume
 * token; removing it is not allowed). */
static void test_stream_match_and_project(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *only = watch_collection(
        f, f->coll,
        tmp_bson("{'pipeline': [{'$match': {'operationType': {'$in': ['insert', 'delete']}}}, "
                 "{'$project': {'operationType': 1, 'documentKey': 1}}]}"),
        NULL);
    mongoc_change_stream_t *dlc = watch_collection(
        f, f->coll, tmp_bson("{'pipeline': [{'$match': {'fullDocument.type': 'dlc'}}]}"), NULL);
    STREAM_OK(only);
    STREAM_OK(dlc);
    INSERT(f->coll, "{'_id': 1, 'type': 'game'}");
    bson_error_t error;
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 1}"),
                                           tmp_bson("{'$set': {'type': 'dlc'}}"), NULL, NULL,
                                           &error),
              error);
    INSERT(f->coll, "{'_id': 2, 'type': 'dlc'}");
    ASSERT_OK(mongoc_collection_delete_one(f->coll, tmp_bson("{'_id': 1}"), NULL, NULL, &error),
              error);

    bson_t *event = NEXT_EVENT(only);
    ASSERT_KEYS(event, "_id,documentKey,operationType");
    assert_string_equal(STR(event, "operationType"), "insert");
    assert_int_equal(INT(event, "documentKey._id"), 1);
    event = NEXT_EVENT(only);
    ASSERT_KEYS(event, "_id,documentKey,operationType");
    assert_string_equal(STR(event, "operationType"), "insert");
    assert_int_equal(INT(event, "documentKey._id"), 2);
    event = NEXT_EVENT(only);
    ASSERT_KEYS(event, "_id,documentKey,operationType");
    assert_string_equal(STR(event, "operationType"), "delete");
    assert_int_equal(INT(event, "documentKey._id"), 1);
    EXPECT_NO_EVENT(only, 300);

    /* Only the insert of 2 has a fullDocument with type dlc (the update has none). */
    event = NEXT_EVENT(dlc);
    CHECK_EVENT(event, "insert");
    assert_int_equal(INT(event, "documentKey._id"), 2);
    EXPECT_NO_EVENT(dlc, 300);
}

/* batchSize limits the events per batch of a change stream's cursor. */
static void test_stream_batch_size(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(
        f, f->coll, NULL, tmp_bson("{'batchSize': 2, 'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS));
    STREAM_OK(stream);
    for (int i = 1; i <= 5; i++) {
        INSERT(f->coll, "{'_id': %d}", i);
    }
    record_start();
    for (int i = 1; i <= 5; i++) {
        bson_t *event = NEXT_EVENT(stream);
        assert_int_equal(INT(event, "documentKey._id"), i);
    }
    recorder.on = false;
    int batches = 0, events = 0;
    for (size_t i = 0; i < recorder.count; i++) {
        if (strcmp(recorder.entries[i].name, "getMore") == 0 && recorder.entries[i].batch > 0) {
            assert_true(recorder.entries[i].batch <= 2);
            batches++;
            events += recorder.entries[i].batch;
        }
    }
    assert_int_equal(events, 5);
    assert_true(batches >= 3);
}

/* A database stream sees every collection of the database; dropping one collection is a drop
 * event that does not invalidate it. A deployment stream sees every database. */
static void test_stream_database_and_deployment(void **state)
{
    fixture_t *f = *state;
    char other_db[96];
    fts_test_mongo_unique_name("conformance_other", other_db, sizeof other_db);
    snprintf(f->extra_dbs[f->extra_db_count++], sizeof f->extra_dbs[0], "%s", other_db);
    mongoc_change_stream_t *db_stream =
        track(f, mongoc_database_watch(f->db, tmp_bson("{}"),
                                       tmp_bson("{'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS)));
    mongoc_change_stream_t *all =
        track(f, mongoc_client_watch(f->client,
                                     tmp_bson("{'pipeline': [{'$match': {'ns.db': {'$in': ['%s', "
                                              "'%s']}}}]}",
                                              f->db_name, other_db),
                                     tmp_bson("{'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS)));
    STREAM_OK(db_stream);
    STREAM_OK(all);
    mongoc_collection_t *b = mongoc_database_get_collection(f->db, "b");
    mongoc_collection_t *elsewhere = mongoc_client_get_collection(f->client, other_db, "c");
    INSERT(f->coll, "{'_id': 1}");
    INSERT(b, "{'_id': 2}");
    INSERT(elsewhere, "{'_id': 3}");
    bson_error_t error;
    ASSERT_OK(mongoc_collection_drop(b, &error), error);
    INSERT(f->coll, "{'_id': 4}");

    bson_t *event = NEXT_EVENT(db_stream);
    CHECK_EVENT(event, "insert");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'apps'}", f->db_name);
    event = NEXT_EVENT(db_stream);
    CHECK_EVENT(event, "insert");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'b'}", f->db_name);
    event = NEXT_EVENT(db_stream);
    CHECK_EVENT(event, "drop");
    ASSERT_KEYS(event, "_id,clusterTime,ns,operationType,wallTime");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'b'}", f->db_name);
    event = NEXT_EVENT(db_stream);
    CHECK_EVENT(event, "insert");
    assert_int_equal(INT(event, "documentKey._id"), 4);
    EXPECT_NO_EVENT(db_stream, 300);

    const char *expected[][3] = {{"insert", "apps", "1"},
                                 {"insert", "b", "2"},
                                 {"insert", "c", "3"},
                                 {"drop", "b", ""},
                                 {"insert", "apps", "4"}};
    for (size_t i = 0; i < 5; i++) {
        event = NEXT_EVENT(all);
        CHECK_EVENT(event, expected[i][0]);
        assert_string_equal(STR(event, "ns.coll"), expected[i][1]);
        assert_string_equal(STR(event, "ns.db"), i == 2 ? other_db : f->db_name);
        if (*expected[i][2]) {
            assert_int_equal(INT(event, "documentKey._id"), atoi(expected[i][2]));
        }
    }
    EXPECT_NO_EVENT(all, 300);
    mongoc_collection_destroy(b);
    mongoc_collection_destroy(elsewhere);
}

/* resumeAfter a token delivers exactly the events after it. */
static void test_stream_resume_after(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    for (int i = 1; i <= 4; i++) {
        INSERT(f->coll, "{'_id': %d}", i);
    }
    bson_t *second = NULL;
    for (int i = 1; i <= 4; i++) {
        bson_t *event = NEXT_EVENT(stream);
        if (i == 2) {
            second = DOC(event, "_id");
        }
    }
    bson_t *opts = keep(bson_new());
    BSON_APPEND_DOCUMENT(opts, "resumeAfter", second);
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    mongoc_change_stream_t *resumed = watch_collection(f, f->coll, NULL, opts);
    STREAM_OK(resumed);
    assert_int_equal(INT(NEXT_EVENT(resumed), "documentKey._id"), 3);
    assert_int_equal(INT(NEXT_EVENT(resumed), "documentKey._id"), 4);
    EXPECT_NO_EVENT(resumed, 300);
    /* New events keep coming on the resumed stream. */
    INSERT(f->coll, "{'_id': 5}");
    assert_int_equal(INT(NEXT_EVENT(resumed), "documentKey._id"), 5);
}

/* startAtOperationTime: events at or after that cluster time. */
static void test_stream_start_at_operation_time(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    for (int i = 1; i <= 4; i++) {
        INSERT(f->coll, "{'_id': %d}", i);
    }
    uint32_t t = 0, i = 0;
    for (int n = 1; n <= 4; n++) {
        bson_t *event = NEXT_EVENT(stream);
        if (n == 2) {
            TIMESTAMP(event, "clusterTime", &t, &i);
        }
    }
    bson_t *opts = keep(bson_new());
    BSON_APPEND_TIMESTAMP(opts, "startAtOperationTime", t, i);
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    mongoc_change_stream_t *from = watch_collection(f, f->coll, NULL, opts);
    STREAM_OK(from);
    assert_int_equal(INT(NEXT_EVENT(from), "documentKey._id"), 2);
    assert_int_equal(INT(NEXT_EVENT(from), "documentKey._id"), 3);
    assert_int_equal(INT(NEXT_EVENT(from), "documentKey._id"), 4);
    EXPECT_NO_EVENT(from, 300);
}

/* Dropping the collection: a drop event, then invalidate, and the stream ends.
 * https://www.mongodb.com/docs/v6.0/reference/change-events/invalidate/ */
static void test_stream_drop_invalidates(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    INSERT(f->coll, "{'_id': 2}");
    bson_error_t error;
    ASSERT_OK(mongoc_collection_drop(f->coll, &error), error);
    CHECK_EVENT(NEXT_EVENT(stream), "insert");
    bson_t *event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "drop");
    ASSERT_KEYS(event, "_id,clusterTime,ns,operationType,wallTime");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'apps'}", f->db_name);
    event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "invalidate");
    assert_false(has_field(event, "documentKey"));
    /* The cursor is closed: nothing more, not even after new writes. */
    INSERT(f->coll, "{'_id': 3}");
    const bson_t *more;
    for (int n = 0; n < 3; n++) {
        assert_false(mongoc_change_stream_next(stream, &more));
    }
}

/* Renaming the collection: a rename event with `to`, then invalidate. */
static void test_stream_rename_invalidates(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    COMMAND_OK(f->client, "admin", "{'renameCollection': '%s.apps', 'to': '%s.renamed'}",
               f->db_name, f->db_name);
    bson_t *event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "rename");
    ASSERT_KEYS(event, "_id,clusterTime,ns,operationType,to,wallTime");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s', 'coll': 'apps'}", f->db_name);
    ASSERT_DOC(DOC(event, "to"), "{'db': '%s', 'coll': 'renamed'}", f->db_name);
    CHECK_EVENT(NEXT_EVENT(stream), "invalidate");
}

/* startAfter an invalidate token opens a new stream after it; resumeAfter it is refused with
 * 260 InvalidResumeToken ("Attempting to resume a change stream using 'resumeAfter' is not
 * allowed from an invalidate notification", src/mongo/db/pipeline/
 * document_source_change_stream.cpp). https://www.mongodb.com/docs/v6.0/changeStreams/#startafter
 */
static void test_stream_start_after_invalidate(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    bson_error_t error;
    ASSERT_OK(mongoc_collection_drop(f->coll, &error), error);
    CHECK_EVENT(NEXT_EVENT(stream), "drop");
    bson_t *invalidate = NEXT_EVENT(stream);
    CHECK_EVENT(invalidate, "invalidate");
    bson_t *token = DOC(invalidate, "_id");
    /* The driver's resume token is the invalidate's. */
    assert_string_equal(token_data(mongoc_change_stream_get_resume_token(stream)),
                        token_data(token));

    bson_t *opts = keep(bson_new());
    BSON_APPEND_DOCUMENT(opts, "startAfter", token);
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    mongoc_change_stream_t *after = watch_collection(f, f->coll, NULL, opts);
    STREAM_OK(after);
    INSERT(f->coll, "{'_id': 2, 'name': 'reborn'}");
    bson_t *event = NEXT_EVENT(after);
    CHECK_EVENT(event, "insert");
    ASSERT_DOC(DOC(event, "fullDocument"), "{'_id': 2, 'name': 'reborn'}");

    opts = keep(bson_new());
    BSON_APPEND_DOCUMENT(opts, "resumeAfter", token);
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    EXPECT_STREAM_ERROR(watch_collection(f, f->coll, NULL, opts), 260);
}

/* dropDatabase on a database stream: a drop per collection, dropDatabase, invalidate. */
static void test_stream_drop_database(void **state)
{
    fixture_t *f = *state;
    mongoc_collection_t *b = mongoc_database_get_collection(f->db, "b");
    INSERT(f->coll, "{'_id': 1}");
    INSERT(b, "{'_id': 1}");
    mongoc_change_stream_t *stream =
        track(f, mongoc_database_watch(f->db, tmp_bson("{}"),
                                       tmp_bson("{'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS)));
    STREAM_OK(stream);
    COMMAND_OK(f->client, f->db_name, "{'dropDatabase': 1}");
    bool dropped_apps = false, dropped_b = false;
    bson_t *event;
    for (;;) {
        event = NEXT_EVENT(stream);
        if (strcmp(STR(event, "operationType"), "drop") != 0) {
            break;
        }
        CHECK_EVENT(event, "drop");
        assert_string_equal(STR(event, "ns.db"), f->db_name);
        const char *coll = STR(event, "ns.coll");
        if (strcmp(coll, "apps") == 0 && !dropped_apps) {
            dropped_apps = true;
        } else if (strcmp(coll, "b") == 0 && !dropped_b) {
            dropped_b = true;
        } else {
            fail_msg("unexpected drop event for %s", coll);
        }
    }
    assert_true(dropped_apps);
    assert_true(dropped_b);
    CHECK_EVENT(event, "dropDatabase");
    ASSERT_KEYS(event, "_id,clusterTime,ns,operationType,wallTime");
    ASSERT_DOC(DOC(event, "ns"), "{'db': '%s'}", f->db_name);
    CHECK_EVENT(NEXT_EVENT(stream), "invalidate");
    mongoc_collection_destroy(b);
}

/* With no event for this stream, every batch still carries a postBatchResumeToken, and it
 * moves forward as the deployment's time does (here: writes to another collection), so the
 * driver's resume token advances while no event arrives.
 * https://www.mongodb.com/docs/v6.0/changeStreams/#resume-tokens-from-aggregate-and-getmore */
static void test_stream_post_batch_resume_token_advances_when_idle(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    const bson_t *initial = mongoc_change_stream_get_resume_token(stream);
    assert_non_null(initial);
    char *first = bson_strdup(token_data(initial));
    mongoc_collection_t *other = mongoc_database_get_collection(f->db, "other");
    record_start();
    bool advanced = false;
    for (int round = 0; round < 20 && !advanced; round++) {
        INSERT(other, "{'round': %d}", round);
        const bson_t *event;
        if (mongoc_change_stream_next(stream, &event)) {
            const char *text = msg(bson_as_canonical_extended_json(event, NULL));
            fail_msg("unexpected event %s", text);
        }
        STREAM_OK(stream);
        const char *now = token_data(mongoc_change_stream_get_resume_token(stream));
        if (strcmp(now, first) != 0) {
            if (strcmp(now, first) < 0) {
                fail_msg("the resume token went back from %s to %s", first, now);
            }
            advanced = true;
        }
    }
    recorder.on = false;
    assert_true(advanced);
    /* And every getMore reply carried one. */
    bool saw_get_more = false;
    for (size_t i = 0; i < recorder.count; i++) {
        if (strcmp(recorder.entries[i].name, "getMore") == 0) {
            saw_get_more = true;
            assert_int_equal(recorder.entries[i].batch, 0);
            assert_true(recorder.entries[i].has_post_batch_resume_token);
        }
    }
    assert_true(saw_get_more);
    bson_free(first);
    mongoc_collection_destroy(other);
}

typedef struct {
    const char *uri;
    const char *db;
    int delay_ms;
    bool ok;
    char message[600];
} delayed_insert_t;

static void *delayed_insert(void *arg)
{
    delayed_insert_t *job = arg;
    fts_test_sleep_ms(job->delay_ms);
    mongoc_client_t *client = mongoc_client_new(job->uri);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, job->db, "apps");
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_INT32(&doc, "_id", 77);
    bson_error_t error;
    job->ok = mongoc_collection_insert_one(coll, &doc, NULL, NULL, &error);
    if (!job->ok) {
        snprintf(job->message, sizeof job->message, "%s", error.message);
    }
    bson_destroy(&doc);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    return NULL;
}

/* A getMore on an idle change stream waits up to maxAwaitTimeMS, and returns as soon as an
 * event arrives. https://www.mongodb.com/docs/v6.0/reference/command/getMore/ */
static void test_stream_get_more_waits_max_await_time(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream =
        watch_collection(f, f->coll, NULL, tmp_bson("{'maxAwaitTimeMS': 1000}"));
    STREAM_OK(stream);
    const bson_t *event;
    uint64_t start = now_ms();
    assert_false(mongoc_change_stream_next(stream, &event));
    uint64_t waited = now_ms() - start;
    STREAM_OK(stream);
    if (waited < 900 || waited > 5000) {
        fail_msg("an idle getMore with maxAwaitTimeMS 1000 returned after %llu ms",
                 (unsigned long long)waited);
    }

    mongoc_change_stream_t *slow =
        watch_collection(f, f->coll, NULL, tmp_bson("{'maxAwaitTimeMS': 5000}"));
    STREAM_OK(slow);
    delayed_insert_t job = {
        .uri = fts_test_mongo_double_uri(f->server), .db = f->db_name, .delay_ms = 300};
    pthread_t writer;
    assert_int_equal(pthread_create(&writer, NULL, delayed_insert, &job), 0);
    start = now_ms();
    bool got = mongoc_change_stream_next(slow, &event);
    waited = now_ms() - start;
    pthread_join(writer, NULL);
    if (!job.ok) {
        fail_msg("the writer thread failed: %s", job.message);
    }
    STREAM_OK(slow);
    assert_true(got);
    assert_int_equal(INT(event, "documentKey._id"), 77);
    if (waited > 4000) {
        fail_msg("the event written after 300 ms arrived after %llu ms",
                 (unsigned long long)waited);
    }
}

/* ==== bounded history ======================================================================== */

/* 286 ChangeStreamHistoryLost: "Resume of change stream was not possible, as the resume point
 * may no longer be in the oplog" (src/mongo/db/pipeline/
 * document_source_change_stream_check_resumability.cpp). Timestamp(1, 1) is before the oldest
 * entry of any deployment's history, so this holds on every server. */
static void test_history_start_at_operation_time_too_old(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    bson_t *opts = keep(bson_new());
    BSON_APPEND_TIMESTAMP(opts, "startAtOperationTime", 1, 1);
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    EXPECT_STREAM_ERROR(watch_collection(f, f->coll, NULL, opts), 286);
}

static int setup_small_history_events(void **state)
{
    static const char *const args[] = {"--history-events", "16", NULL};
    return setup_with(state, args);
}

static int setup_small_history_bytes(void **state)
{
    static const char *const args[] = {"--history-bytes", "16384", NULL};
    return setup_with(state, args);
}

static void test_history_token_fell_off(void **state);

/* The same test, once with a history bounded by events and once by bytes. */
static void test_history_token_fell_off_events(void **state)
{
    test_history_token_fell_off(state);
}

static void test_history_token_fell_off_bytes(void **state)
{
    test_history_token_fell_off(state);
}

/* A token whose event has fallen off the history: resuming fails with 286. On the double the
 * history is made small (see the setups); a real server's oplog cannot be, so there the same
 * error is checked through startAtOperationTime Timestamp(1, 1). */
static void test_history_token_fell_off(void **state)
{
    fixture_t *f = *state;
    if (fts_test_mongo_double_is_external(f->server)) {
        fprintf(stderr, "note: FTSYNC_TEST_MONGO_URI is a real server whose history cannot be "
                        "made short; checking 286 through startAtOperationTime instead\n");
        test_history_start_at_operation_time_too_old(state);
        return;
    }
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    INSERT(f->coll, "{'_id': 0}");
    bson_t *token = DOC(NEXT_EVENT(stream), "_id");
    /* 200 events of about 1 KB: more than 16 events and more than 16 KB. */
    char padding[1001];
    memset(padding, 'x', sizeof padding - 1);
    padding[sizeof padding - 1] = '\0';
    for (int n = 1; n <= 200; n++) {
        INSERT(f->coll, "{'_id': %d, 'padding': '%s'}", n, padding);
    }
    bson_t *opts = keep(bson_new());
    BSON_APPEND_DOCUMENT(opts, "resumeAfter", token);
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    EXPECT_STREAM_ERROR(watch_collection(f, f->coll, NULL, opts), 286);
    /* The latest events are still there: resuming from a recent token works. */
    mongoc_change_stream_t *fresh = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(fresh);
    INSERT(f->coll, "{'_id': 1000}");
    INSERT(f->coll, "{'_id': 1001}");
    bson_t *recent = DOC(NEXT_EVENT(fresh), "_id");
    opts = keep(bson_new());
    BSON_APPEND_DOCUMENT(opts, "resumeAfter", recent);
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    mongoc_change_stream_t *resumed = watch_collection(f, f->coll, NULL, opts);
    STREAM_OK(resumed);
    assert_int_equal(INT(NEXT_EVENT(resumed), "documentKey._id"), 1001);
}

/* A token that is not a token. A real server answers a non-hex _data with 9 FailedToParse
 * ("resume token string was not a valid hex string", ResumeToken::getData in
 * src/mongo/db/pipeline/resume_token.cpp, 4.2 to 8.0). */
static void test_history_malformed_token(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    EXPECT_STREAM_ERROR(
        watch_collection(f, f->coll, NULL,
                         tmp_bson("{'resumeAfter': {'_data': 'this is not a resume token'}, "
                                  "'maxAwaitTimeMS': %d}",
                                  STREAM_AWAIT_MS)),
        9);
}

/* ==== fail points ============================================================================ */

/* failCommand: https://github.com/mongodb/mongo/wiki/The-%22failCommand%22-fail-point */
static void fail_point(fixture_t *f, const bson_t *cmd)
{
    f->used_fail_point = true;
    command_ok(__FILE__, __LINE__, f->client, "admin", cmd);
}

static void test_fail_point_always_on_and_off(void **state)
{
    fixture_t *f = *state;
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': 'alwaysOn', "
                           "'data': {'failCommands': ['insert'], 'errorCode': 2}}"));
    bson_error_t error;
    for (int i = 0; i < 3; i++) {
        assert_false(
            mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': %d}", i), NULL, NULL, &error));
        assert_int_equal(error.domain, MONGOC_ERROR_SERVER);
        assert_int_equal(error.code, 2);
    }
    bson_t *reply =
        COMMAND_FAILS(f->client, f->db_name, 2, "{'insert': 'apps', 'documents': [{'_id': 9}]}");
    assert_int_equal(INT(reply, "ok"), 0);
    /* Commands not listed are not affected. */
    ASSERT_IDS(f->coll, tmp_bson("{}"), NULL, "");
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': 'off'}"));
    INSERT(f->coll, "{'_id': 1}");
    ASSERT_IDS(f->coll, tmp_bson("{}"), NULL, "1");
}

static void test_fail_point_times(void **state)
{
    fixture_t *f = *state;
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 2}, "
                           "'data': {'failCommands': ['insert', 'find'], 'errorCode': 8}}"));
    bson_error_t error;
    assert_false(mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': 1}"), NULL, NULL, &error));
    assert_int_equal(error.code, 8);
    /* find is listed too and takes the second of the two. */
    mongoc_cursor_t *cursor =
        mongoc_collection_find_with_opts(f->coll, tmp_bson("{}"), tmp_bson("{}"), NULL);
    const bson_t *doc;
    assert_false(mongoc_cursor_next(cursor, &doc));
    assert_true(mongoc_cursor_error(cursor, &error));
    assert_int_equal(error.code, 8);
    mongoc_cursor_destroy(cursor);
    INSERT(f->coll, "{'_id': 2}");
    INSERT(f->coll, "{'_id': 3}");
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "2,3");
}

/* A getMore failing with the ResumableChangeStreamError label: the driver resumes from its
 * cached token and no event is lost or repeated. Without the label the error reaches the
 * application. (Change Streams spec: resumable iff the label, for wire version >= 9.) */
static void test_fail_point_resumable_change_stream_error(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    INSERT(f->coll, "{'_id': 1}");
    assert_int_equal(INT(NEXT_EVENT(stream), "documentKey._id"), 1);
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 1}, "
                           "'data': {'failCommands': ['getMore'], 'errorCode': 280, "
                           "'errorLabels': ['ResumableChangeStreamError']}}"));
    INSERT(f->coll, "{'_id': 2}");
    INSERT(f->coll, "{'_id': 3}");
    record_start();
    assert_int_equal(INT(NEXT_EVENT(stream), "documentKey._id"), 2);
    assert_int_equal(INT(NEXT_EVENT(stream), "documentKey._id"), 3);
    recorder.on = false;
    EXPECT_NO_EVENT(stream, 300);
    /* The driver did resume: a second aggregate. */
    bool aggregated = false;
    for (size_t i = 0; i < recorder.count; i++) {
        aggregated = aggregated || strcmp(recorder.entries[i].name, "aggregate") == 0;
    }
    assert_true(aggregated);

    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 1}, "
                           "'data': {'failCommands': ['getMore'], 'errorCode': 280}}"));
    INSERT(f->coll, "{'_id': 4}");
    EXPECT_STREAM_ERROR(stream, 280);
}

/* closeConnection: the server closes the connection instead of answering. */
static void test_fail_point_close_connection(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 1}, "
                           "'data': {'failCommands': ['count'], 'closeConnection': true}}"));
    bson_error_t error;
    bson_t reply;
    assert_false(mongoc_client_command_simple(f->client, f->db_name, tmp_bson("{'count': 'apps'}"),
                                              NULL, &reply, &error));
    bson_destroy(&reply);
    assert_int_equal(error.domain, MONGOC_ERROR_STREAM);
    /* The next command gets a new connection and an answer. */
    bson_t *answer = COMMAND_OK(f->client, f->db_name, "{'count': 'apps'}");
    assert_int_equal(INT(answer, "n"), 1);
}

/* blockConnection: the command is answered after blockTimeMS. */
static void test_fail_point_block_connection(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 1}, "
                           "'data': {'failCommands': ['count'], 'blockConnection': true, "
                           "'blockTimeMS': 700}}"));
    uint64_t start = now_ms();
    bson_t *answer = COMMAND_OK(f->client, f->db_name, "{'count': 'apps'}");
    uint64_t took = now_ms() - start;
    assert_int_equal(INT(answer, "n"), 1);
    if (took < 690) {
        fail_msg("a command blocked for 700 ms was answered after %llu ms",
                 (unsigned long long)took);
    }
    start = now_ms();
    COMMAND_OK(f->client, f->db_name, "{'count': 'apps'}");
    took = now_ms() - start;
    if (took > 500) {
        fail_msg("the fail point (times: 1) blocked a second command for %llu ms",
                 (unsigned long long)took);
    }
}

/* ==== where doubles commonly go wrong: injected errors, pipelines, renames ======================
 */

/* A change stream opened with a raw aggregate command on coll (spec: the $changeStream stage's
 * document); returns its cursor id. */
/* Options naming the fixture's raw session (started on first use); temporary. */
static bson_t *raw_opts(fixture_t *f)
{
    bson_error_t error;
    if (!f->raw_session) {
        f->raw_session = mongoc_client_start_session(f->client, NULL, &error);
        ASSERT_OK(f->raw_session, error);
    }
    bson_t *opts = keep(bson_new());
    ASSERT_OK(mongoc_client_session_append(f->raw_session, opts, &error), error);
    return opts;
}

/* Runs cmd with the raw session; returns the reply (temporary) and sets *ok. */
static bson_t *raw_command(fixture_t *f, const bson_t *cmd, bson_error_t *error, bool *ok)
{
    bson_t local;
    *ok = mongoc_client_command_with_opts(f->client, f->db_name, cmd, NULL, raw_opts(f), &local,
                                          error);
    bson_t *reply = keep(bson_copy(&local));
    bson_destroy(&local);
    return reply;
}

static int64_t raw_stream(fixture_t *f, const char *coll, const char *spec)
{
    bson_error_t error;
    bool ok;
    bson_t *reply = raw_command(f,
                                tmp_bson("{'aggregate': '%s', 'pipeline': [{'$changeStream': %s}], "
                                         "'cursor': {}}",
                                         coll, spec),
                                &error, &ok);
    ASSERT_OK(ok, error);
    int64_t id = INT(reply, "cursor.id");
    assert_true(id != 0);
    return id;
}

/* A getMore of cursor id on coll; returns the reply (temporary) and sets *ok. A change stream's
 * getMore (awaitData) waits at most 100 ms; others may not name maxTimeMS. */
static bson_t *raw_get_more(fixture_t *f, const char *coll, int64_t id, bool await_data,
                            bson_error_t *error, bool *ok)
{
    return raw_command(f,
                       tmp_bson("{'getMore': {'$numberLong': '%lld'}, 'collection': '%s'%s}",
                                (long long)id, coll, await_data ? ", 'maxTimeMS': 100" : ""),
                       error, ok);
}

/* A getMore of cursor id on coll that must fail with code; returns the reply (temporary). */
static bson_t *get_more_fails(const char *file, int line, fixture_t *f, const char *coll,
                              int64_t id, bool await_data, uint32_t code)
{
    bson_error_t error;
    bool ok;
    bson_t *reply = raw_get_more(f, coll, id, await_data, &error, &ok);
    if (ok) {
        fail_msg("%s:%d: getMore of cursor %lld succeeded; expected error %u", file, line,
                 (long long)id, code);
    }
    if (error.domain != MONGOC_ERROR_SERVER || error.code != code) {
        fail_msg("%s:%d: getMore failed with domain %u code %u (%s); expected server error %u",
                 file, line, error.domain, error.code, error.message, code);
    }
    return reply;
}
/* A change stream's getMore that must fail with code. */
#define GET_MORE_FAILS(f, coll, id, code)                                                          \
    get_more_fails(__FILE__, __LINE__, (f), (coll), (id), true, (code))

/* The failCommand fail point acts before the getMore has checked its cursor out, so mongod does
 * not yet know the getMore belongs to a change stream and attaches no ResumableChangeStreamError
 * label to an injected error, whatever its code; a driver therefore must not resume. Labels
 * given in data.errorLabels come back exactly as given. See "The failCommand fail point"
 * (https://github.com/mongodb/mongo/wiki/The-%22failCommand%22-fail-point) and the Change
 * Streams spec tests, which use failGetMoreAfterCursorCheckout for resumable codes because of
 * this (SERVER-46091). */
static void test_fail_point_injected_get_more_error_has_no_label(void **state)
{
    fixture_t *f = *state;
    int codes[] = {6 /* HostUnreachable */, 91 /* ShutdownInProgress */};
    for (size_t i = 0; i < 2; i++) {
        int64_t id = raw_stream(f, "apps", "{}");
        fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 1}, "
                               "'data': {'failCommands': ['getMore'], 'errorCode': %d}}",
                               codes[i]));
        bson_t *reply = GET_MORE_FAILS(f, "apps", id, (uint32_t)codes[i]);
        if (has_field(reply, "errorLabels")) {
            fail_msg("an injected error %d on getMore came back with errorLabels %s", codes[i],
                     msg(bson_as_canonical_extended_json(DOC(reply, "errorLabels"), NULL)));
        }
    }
    /* Given labels are returned as given. */
    int64_t id = raw_stream(f, "apps", "{}");
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 1}, "
                           "'data': {'failCommands': ['getMore'], 'errorCode': 91, "
                           "'errorLabels': ['ResumableChangeStreamError']}}"));
    bson_t *reply = GET_MORE_FAILS(f, "apps", id, 91);
    ASSERT_DOC(DOC(reply, "errorLabels"), "{'0': 'ResumableChangeStreamError'}");

    /* Through the driver: the unlabelled error reaches the application, no resume. */
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    INSERT(f->coll, "{'_id': 1}");
    assert_int_equal(INT(NEXT_EVENT(stream), "documentKey._id"), 1);
    fail_point(f, tmp_bson("{'configureFailPoint': 'failCommand', 'mode': {'times': 1}, "
                           "'data': {'failCommands': ['getMore'], 'errorCode': 6}}"));
    INSERT(f->coll, "{'_id': 2}");
    EXPECT_STREAM_ERROR(stream, 6);
}

/* failGetMoreAfterCursorCheckout fails a getMore after it checked its cursor out (data.errorCode,
 * InternalError if none); the error then goes through mongod's usual label rules, so a
 * resumable code on a change stream's getMore carries ResumableChangeStreamError and the driver
 * resumes. A getMore that fails after checkout deletes its cursor. Sources:
 * src/mongo/db/commands/getmore_cmd.cpp (the fail point, and the cursor deleted on an early
 * return), jstests/noPassthrough/failGetMoreAfterCursorCheckout.js, and the Change Streams spec
 * test change-streams-resume-errorLabels (SERVER-46091). */
static void test_fail_get_more_after_cursor_checkout(void **state)
{
    fixture_t *f = *state;
    bson_error_t error;
    bool ok;
    int64_t id = raw_stream(f, "apps", "{}");
    fail_point(f, tmp_bson("{'configureFailPoint': 'failGetMoreAfterCursorCheckout', "
                           "'mode': {'times': 1}, 'data': {'errorCode': 6}}"));
    bson_t *reply = GET_MORE_FAILS(f, "apps", id, 6);
    ASSERT_DOC(DOC(reply, "errorLabels"), "{'0': 'ResumableChangeStreamError'}");
    /* The cursor is gone. */
    GET_MORE_FAILS(f, "apps", id, 43);

    /* A code that is not resumable gets no label; nor does a find cursor's getMore. */
    id = raw_stream(f, "apps", "{}");
    fail_point(f, tmp_bson("{'configureFailPoint': 'failGetMoreAfterCursorCheckout', "
                           "'mode': 'alwaysOn', 'data': {'errorCode': 2}}"));
    reply = GET_MORE_FAILS(f, "apps", id, 2);
    assert_false(has_field(reply, "errorLabels"));
    for (int i = 1; i <= 3; i++) {
        INSERT(f->coll, "{'_id': %d}", i);
    }
    fail_point(f, tmp_bson("{'configureFailPoint': 'failGetMoreAfterCursorCheckout', "
                           "'mode': 'alwaysOn', 'data': {'errorCode': 6}}"));
    reply = raw_command(f, tmp_bson("{'find': 'apps', 'batchSize': 1}"), &error, &ok);
    ASSERT_OK(ok, error);
    id = INT(reply, "cursor.id");
    reply = get_more_fails(__FILE__, __LINE__, f, "apps", id, false, 6);
    assert_false(has_field(reply, "errorLabels"));
    /* off: getMores work again. */
    fail_point(f, tmp_bson("{'configureFailPoint': 'failGetMoreAfterCursorCheckout', "
                           "'mode': 'off'}"));
    reply = raw_command(f, tmp_bson("{'find': 'apps', 'batchSize': 1}"), &error, &ok);
    ASSERT_OK(ok, error);
    id = INT(reply, "cursor.id");
    reply = raw_get_more(f, "apps", id, false, &error, &ok);
    ASSERT_OK(ok, error);
    assert_int_equal(INT(reply, "cursor.nextBatch.0._id"), 2);

    /* Through the driver: it resumes from its cached token; nothing lost, nothing repeated. */
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    INSERT(f->coll, "{'_id': 11}");
    assert_int_equal(INT(NEXT_EVENT(stream), "documentKey._id"), 11);
    fail_point(f, tmp_bson("{'configureFailPoint': 'failGetMoreAfterCursorCheckout', "
                           "'mode': {'times': 1}, 'data': {'errorCode': 6}}"));
    INSERT(f->coll, "{'_id': 12}");
    INSERT(f->coll, "{'_id': 13}");
    record_start();
    assert_int_equal(INT(NEXT_EVENT(stream), "documentKey._id"), 12);
    assert_int_equal(INT(NEXT_EVENT(stream), "documentKey._id"), 13);
    recorder.on = false;
    EXPECT_NO_EVENT(stream, 300);
    bool aggregated = false;
    for (size_t i = 0; i < recorder.count; i++) {
        aggregated = aggregated || strcmp(recorder.entries[i].name, "aggregate") == 0;
    }
    assert_true(aggregated);
}

/* A stage name mongod does not know fails the aggregate with 40324 (Unrecognized pipeline stage
 * name) when the pipeline is parsed; a known stage that may not follow $changeStream fails with
 * 20 IllegalOperation ("... is not permitted in a $changeStream pipeline",
 * src/mongo/db/pipeline/pipeline.cpp).
 * https://www.mongodb.com/docs/v6.0/changeStreams/#modify-change-stream-output */
static void test_stream_unknown_stage(void **state)
{
    fixture_t *f = *state;
    bson_t *reply = COMMAND_FAILS(f->client, f->db_name, 40324,
                                  "{'aggregate': 'apps', 'pipeline': [{'$changeStream': {}}, "
                                  "{'$frobnicate': {}}], 'cursor': {}}");
    assert_string_equal(STR(reply, "codeName"), "Location40324");
    COMMAND_FAILS(f->client, f->db_name, 20,
                  "{'aggregate': 'apps', 'pipeline': [{'$changeStream': {}}, "
                  "{'$group': {'_id': null}}], 'cursor': {}}");
    mongoc_change_stream_t *stream =
        watch_collection(f, f->coll, tmp_bson("{'pipeline': [{'$frobnicate': {}}]}"), NULL);
    EXPECT_STREAM_ERROR(stream, 40324);
}

/* The UUID at path in doc (16 bytes). */
static const uint8_t *uuid_at(const char *file, int line, const bson_t *doc, const char *path)
{
    bson_iter_t iter = field_at(file, line, doc, path);
    bson_subtype_t subtype;
    uint32_t length;
    const uint8_t *data;
    if (!BSON_ITER_HOLDS_BINARY(&iter)) {
        fail_msg("%s:%d: field \"%s\" is not binary (type 0x%02x)", file, line, path,
                 (unsigned)bson_iter_type(&iter));
    }
    bson_iter_binary(&iter, &subtype, &length, &data);
    if (subtype != BSON_SUBTYPE_UUID || length != 16) {
        fail_msg("%s:%d: field \"%s\" is not a UUID (subtype %d, %u bytes)", file, line, path,
                 (int)subtype, length);
    }
    return data;
}
#define UUID_AT(doc, path) uuid_at(__FILE__, __LINE__, (doc), (path))

/* The next event of a raw change-stream cursor (getMores until one comes; temporary). */
static bson_t *raw_next_event(fixture_t *f, const char *coll, int64_t id)
{
    uint64_t deadline = now_ms() + EVENT_TIMEOUT_MS;
    while (now_ms() < deadline) {
        bson_error_t error;
        bool ok;
        bson_t *reply = raw_get_more(f, coll, id, true, &error, &ok);
        ASSERT_OK(ok, error);
        bson_t *batch = DOC(reply, "cursor.nextBatch");
        if (!bson_empty(batch)) {
            return DOC(batch, "0");
        }
    }
    fail_msg("no change event within %d ms", EVENT_TIMEOUT_MS);
    return NULL;
}

/* A rename with dropTarget onto an existing collection: with showExpandedEvents the rename event
 * carries operationDescription {to: {db, coll}, dropTarget: <UUID of the dropped target>}; without
 * it there is no operationDescription.
 * https://www.mongodb.com/docs/v6.0/reference/change-events/rename/ */
static void test_stream_rename_drop_target_description(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    COMMAND_OK(f->client, f->db_name, "{'insert': 'dst', 'documents': [{'_id': 2}]}");
    bson_t *listed =
        COMMAND_OK(f->client, f->db_name, "{'listCollections': 1, 'filter': {'name': 'dst'}}");
    const uint8_t *dst_uuid = UUID_AT(listed, "cursor.firstBatch.0.info.uuid");
    listed =
        COMMAND_OK(f->client, f->db_name, "{'listCollections': 1, 'filter': {'name': 'apps'}}");
    const uint8_t *apps_uuid = UUID_AT(listed, "cursor.firstBatch.0.info.uuid");
    int64_t expanded = raw_stream(f, "apps", "{'showExpandedEvents': true}");
    int64_t plain = raw_stream(f, "apps", "{}");
    COMMAND_OK(f->client, "admin",
               "{'renameCollection': '%s.apps', 'to': '%s.dst', 'dropTarget': true}", f->db_name,
               f->db_name);

    bson_t *event = raw_next_event(f, "apps", expanded);
    CHECK_EVENT(event, "rename");
    ASSERT_DOC(DOC(event, "to"), "{'db': '%s', 'coll': 'dst'}", f->db_name);
    bson_t *desc = DOC(event, "operationDescription");
    ASSERT_KEYS(desc, "dropTarget,to");
    ASSERT_DOC(DOC(desc, "to"), "{'db': '%s', 'coll': 'dst'}", f->db_name);
    assert_memory_equal(UUID_AT(desc, "dropTarget"), dst_uuid, 16);
    assert_memory_equal(UUID_AT(event, "collectionUUID"), apps_uuid, 16);

    event = raw_next_event(f, "apps", plain);
    CHECK_EVENT(event, "rename");
    ASSERT_KEYS(event, "_id,clusterTime,ns,operationType,to,wallTime");
}

/* ==== step-down =============================================================================== */

/* replSetStepDown makes the primary a secondary for the given seconds: hello reports no primary,
 * writes fail with 10107 NotWritablePrimary; afterwards (a single-node set elects itself) writes
 * succeed again. https://www.mongodb.com/docs/v6.0/reference/command/replSetStepDown/ */
static void test_step_down(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 1}");
    /* A direct connection keeps talking to the member whatever its state. */
    mongoc_uri_t *uri = mongoc_uri_copy(mongoc_client_get_uri(f->client));
    assert_int_equal(mongoc_uri_get_hosts(uri)->next == NULL, 1);
    mongoc_uri_set_option_as_bool(uri, MONGOC_URI_DIRECTCONNECTION, true);
    mongoc_uri_set_option_as_bool(uri, MONGOC_URI_RETRYWRITES, false);
    mongoc_client_t *direct = new_client(f, uri);
    mongoc_uri_destroy(uri);
    bson_t *hello = COMMAND_OK(direct, "admin", "{'hello': 1}");
    assert_true(BOOL(hello, "isWritablePrimary"));

    uint64_t stepped = now_ms();
    COMMAND_OK(f->client, "admin",
               "{'replSetStepDown': 3, 'secondaryCatchUpPeriodSecs': 0, 'force': true}");
    hello = COMMAND_OK(direct, "admin", "{'hello': 1}");
    assert_false(BOOL(hello, "isWritablePrimary"));
    assert_true(BOOL(hello, "secondary"));
    assert_false(has_field(hello, "primary"));
    assert_string_equal(STR(hello, "setName"),
                        mongoc_uri_get_replica_set(mongoc_client_get_uri(f->client)));
    bson_t *reply =
        COMMAND_FAILS(direct, f->db_name, 10107, "{'insert': 'apps', 'documents': [{'_id': 2}]}");
    assert_string_equal(STR(reply, "codeName"), "NotWritablePrimary");
    /* Since 4.4 a state change error carries the member's topologyVersion, so that a driver can
     * tell an error it already knows about (same version as its last hello: ignore it) from
     * news (mark the server Unknown). The SDAM specification's error handling relies on it;
     * see also SERVER-50735. */
    assert_same_doc(__FILE__, __LINE__, DOC(reply, "topologyVersion"),
                    DOC(hello, "topologyVersion"));
    COMMAND_FAILS(direct, f->db_name, 10107,
                  "{'update': 'apps', 'updates': [{'q': {'_id': 1}, 'u': {'$set': {'x': 1}}}]}");
    COMMAND_FAILS(direct, f->db_name, 10107,
                  "{'delete': 'apps', 'deletes': [{'q': {'_id': 1}, 'limit': 1}]}");

    /* Primary again after the step-down period. */
    bool primary = false;
    while (!primary && now_ms() - stepped < 40000) {
        fts_test_sleep_ms(200);
        hello = COMMAND_OK(direct, "admin", "{'hello': 1}");
        primary = BOOL(hello, "isWritablePrimary");
    }
    assert_true(primary);
    if (now_ms() - stepped < 2900) {
        fail_msg("primary again after %llu ms of a 3 s step-down",
                 (unsigned long long)(now_ms() - stepped));
    }
    INSERT(f->coll, "{'_id': 2}");
    bson_t *answer =
        COMMAND_OK(direct, f->db_name, "{'insert': 'apps', 'documents': [{'_id': 3}]}");
    assert_int_equal(INT(answer, "n"), 1);
    ASSERT_IDS(f->coll, tmp_bson("{}"), tmp_bson("{'sort': {'_id': 1}}"), "1,2,3");
}

/* ==== large change events ===================================================================== */

/* Sizes for events over 16 MB made of documents under it: a document of two 7 MB strings is
 * 14 MB; the update that set the second has it in updateDescription too, 21 MB in all. */
#define LARGE_FIELD_BYTES (7 * 1024 * 1024)

/* {_id: id, name: <bytes times fill>} (temporary). */
static bson_t *large_doc(int id, const char *name, size_t bytes, char fill)
{
    char *text = bson_malloc(bytes + 1);
    memset(text, fill, bytes);
    text[bytes] = '\0';
    bson_t *doc = keep(bson_new());
    BSON_APPEND_INT32(doc, "_id", id);
    bson_append_utf8(doc, name, -1, text, (int)bytes);
    bson_free(text);
    return doc;
}

/* {$set: {name: <bytes times fill>}} (temporary). */
static bson_t *large_set(const char *name, size_t bytes, char fill)
{
    char *text = bson_malloc(bytes + 1);
    memset(text, fill, bytes);
    text[bytes] = '\0';
    bson_t *update = keep(bson_new());
    bson_t set;
    BSON_APPEND_DOCUMENT_BEGIN(update, "$set", &set);
    bson_append_utf8(&set, name, -1, text, (int)bytes);
    bson_append_document_end(update, &set);
    bson_free(text);
    return update;
}

/* Updates {_id: 1, a: 7 MB} with $set b: 7 MB: with updateLookup the update's event
 * (fullDocument 14 MB, updatedFields 7 MB) is over 16 MB. Then inserts {_id: 2}. */
static void write_large_update_only(fixture_t *f)
{
    bson_error_t error;
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 1}"),
                                           large_set("b", LARGE_FIELD_BYTES, 'b'), NULL, NULL,
                                           &error),
              error);
    INSERT(f->coll, "{'_id': 2}");
}

/* Inserts {_id: 1, a: 7 MB}, then write_large_update_only. */
static void write_large_update(fixture_t *f)
{
    insert(__FILE__, __LINE__, f->coll, large_doc(1, "a", LARGE_FIELD_BYTES, 'a'));
    write_large_update_only(f);
}

static size_t string_length_at(const bson_t *doc, const char *path)
{
    bson_iter_t iter = field_at(__FILE__, __LINE__, doc, path);
    uint32_t length = 0;
    assert_true(BSON_ITER_HOLDS_UTF8(&iter));
    bson_iter_utf8(&iter, &length);
    return length;
}

/* An event over 16 MB fails the change stream with 10334 BSONObjectTooLarge, which carries no
 * ResumableChangeStreamError label: the driver gives up instead of resuming into the same
 * error. MongoDB manual, $changeStreamSplitLargeEvent: "If a change stream has large events
 * that exceed 16 MB, a BSONObjectTooLarge exception is returned." */
static void test_large_event_too_large(void **state)
{
    fixture_t *f = *state;
    mongoc_change_stream_t *stream = watch_collection(
        f, f->coll, NULL,
        tmp_bson("{'fullDocument': 'updateLookup', 'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS));
    STREAM_OK(stream);
    /* The insert is read first: a failed getMore loses the whole batch. */
    insert(__FILE__, __LINE__, f->coll, large_doc(1, "a", LARGE_FIELD_BYTES, 'a'));
    bson_t *event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "insert");
    assert_int_equal(string_length_at(event, "fullDocument.a"), LARGE_FIELD_BYTES);
    write_large_update_only(f);
    EXPECT_STREAM_ERROR(stream, 10334);
    bson_error_t error;
    const bson_t *reply = NULL;
    assert_true(mongoc_change_stream_error_document(stream, &error, &reply));
    assert_non_null(reply);
    assert_string_equal(STR(reply, "codeName"), "BSONObjectTooLarge");
    assert_false(has_field(reply, "errorLabels"));

    /* Opening at the token before it fails the same way, at the aggregate or its getMore. */
    bson_t *opts = keep(bson_new());
    BSON_APPEND_DOCUMENT(opts, "resumeAfter", DOC(event, "_id"));
    BSON_APPEND_UTF8(opts, "fullDocument", "updateLookup");
    BSON_APPEND_INT32(opts, "maxAwaitTimeMS", STREAM_AWAIT_MS);
    EXPECT_STREAM_ERROR(watch_collection(f, f->coll, NULL, opts), 10334);

    /* Without the post-image the event is small enough. */
    mongoc_change_stream_t *small = watch_collection(
        f, f->coll, NULL,
        tmp_bson("{'resumeAfter': %s, 'maxAwaitTimeMS': %d}",
                 msg(bson_as_canonical_extended_json(DOC(event, "_id"), NULL)), STREAM_AWAIT_MS));
    event = NEXT_EVENT(small);
    CHECK_EVENT(event, "update");
    assert_false(has_field(event, "fullDocument"));
    assert_int_equal(string_length_at(event, "updateDescription.updatedFields.b"),
                     LARGE_FIELD_BYTES);
}

/* $changeStreamSplitLargeEvent (MongoDB 7.0 and 6.0.9; manual page of the stage): events over
 * 16 MB come as fragments, each with splitEvent {fragment: n, of: total} and its own resume
 * token; the split is by top-level fields, none of them cut; the first fragment holds as many
 * fields as fit. Resuming from a fragment's token goes on with the next fragment, from the
 * last fragment's with the next event. Smaller events pass unchanged. */
static void test_large_event_split(void **state)
{
    fixture_t *f = *state;
    bson_t *pipeline = tmp_bson("{'pipeline': [{'$changeStreamSplitLargeEvent': {}}]}");
    bson_t *opts =
        tmp_bson("{'fullDocument': 'updateLookup', 'maxAwaitTimeMS': %d}", STREAM_AWAIT_MS);
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, pipeline, opts);
    STREAM_OK(stream);
    write_large_update(f);
    bson_t *insert_event = NEXT_EVENT(stream);
    CHECK_EVENT(insert_event, "insert");
    assert_false(has_field(insert_event, "splitEvent"));

    bson_t *fragments[8];
    int total = 0;
    bson_t *whole = keep(bson_new());
    for (int n = 1; n <= 8; n++) {
        bson_t *fragment = NEXT_EVENT(stream);
        fragments[n - 1] = fragment;
        assert_true(fragment->len <= 16 * 1024 * 1024);
        assert_int_equal(INT(fragment, "splitEvent.fragment"), n);
        total = (int)INT(fragment, "splitEvent.of");
        bson_iter_t iter;
        bson_iter_init(&iter, fragment);
        while (bson_iter_next(&iter)) {
            const char *key = bson_iter_key(&iter);
            if (strcmp(key, "_id") != 0 && strcmp(key, "splitEvent") != 0) {
                assert_false(has_field(whole, key)); /* no field is in two fragments */
                bson_append_iter(whole, key, -1, &iter);
            }
        }
        if (n == total) {
            break;
        }
    }
    assert_true(total >= 2);
    /* The fragments hold the whole event, fields uncut. */
    assert_string_equal(STR(whole, "operationType"), "update");
    assert_int_equal(INT(whole, "documentKey._id"), 1);
    assert_int_equal(string_length_at(whole, "fullDocument.a"), LARGE_FIELD_BYTES);
    assert_int_equal(string_length_at(whole, "fullDocument.b"), LARGE_FIELD_BYTES);
    assert_int_equal(string_length_at(whole, "updateDescription.updatedFields.b"),
                     LARGE_FIELD_BYTES);
    assert_true(has_field(whole, "clusterTime"));
    assert_true(has_field(whole, "ns"));
    /* The first fragment has the small fields (the event's context) first. */
    assert_true(has_field(fragments[0], "operationType"));
    assert_true(has_field(fragments[0], "documentKey"));
    /* Each fragment has its own token, ordered after the event before it. */
    const char *previous = token_data(DOC(insert_event, "_id"));
    for (int n = 0; n < total; n++) {
        const char *data = token_data(DOC(fragments[n], "_id"));
        assert_true(strcmp(previous, data) < 0);
        previous = data;
    }
    bson_t *after = NEXT_EVENT(stream);
    CHECK_EVENT(after, "insert");
    assert_int_equal(INT(after, "documentKey._id"), 2);
    assert_false(has_field(after, "splitEvent"));
    assert_true(strcmp(previous, token_data(DOC(after, "_id"))) < 0);

    /* Resuming from the first fragment's token: the second fragment comes next. */
    bson_t *resume = keep(bson_copy(opts));
    BSON_APPEND_DOCUMENT(resume, "resumeAfter", DOC(fragments[0], "_id"));
    mongoc_change_stream_t *resumed = watch_collection(f, f->coll, pipeline, resume);
    bson_t *event = NEXT_EVENT(resumed);
    assert_int_equal(INT(event, "splitEvent.fragment"), 2);
    assert_int_equal(INT(event, "splitEvent.of"), total);
    assert_string_equal(token_data(DOC(event, "_id")), token_data(DOC(fragments[1], "_id")));
    /* From the last fragment's token: the next event. */
    resume = keep(bson_copy(opts));
    BSON_APPEND_DOCUMENT(resume, "resumeAfter", DOC(fragments[total - 1], "_id"));
    resumed = watch_collection(f, f->coll, pipeline, resume);
    event = NEXT_EVENT(resumed);
    CHECK_EVENT(event, "insert");
    assert_int_equal(INT(event, "documentKey._id"), 2);
}

/* The stage must be the last one (document_source_change_stream_split_large_event.cpp:
 * 7182802) and its spec an empty object (7182800). */
static void test_large_event_split_stage_position(void **state)
{
    fixture_t *f = *state;
    COMMAND_FAILS(f->client, f->db_name, 7182802,
                  "{'aggregate': 'apps', 'pipeline': [{'$changeStream': {}}, "
                  "{'$changeStreamSplitLargeEvent': {}}, {'$match': {}}], 'cursor': {}}");
    COMMAND_FAILS(f->client, f->db_name, 7182800,
                  "{'aggregate': 'apps', 'pipeline': [{'$changeStream': {}}, "
                  "{'$changeStreamSplitLargeEvent': {'x': 1}}], 'cursor': {}}");
    COMMAND_OK(f->client, f->db_name,
               "{'aggregate': 'apps', 'pipeline': [{'$changeStream': {}}, {'$match': {}}, "
               "{'$changeStreamSplitLargeEvent': {}}], 'cursor': {}}");
}

static int setup_no_split_stage(void **state)
{
    static const char *const args[] = {"--no-split-stage", NULL};
    return setup_with(state, args);
}

/* A server before 6.0.9 does not know the stage: "Unrecognized pipeline stage name" (40324).
 * The double shows it with --no-split-stage; a real server (which has no such switch) is
 * checked through the same door with a stage no version knows. */
static void test_large_event_no_split_stage(void **state)
{
    fixture_t *f = *state;
    const char *stage = fts_test_mongo_double_is_external(f->server)
                            ? "$changeStreamSplitLargeEventNoSuchStage"
                            : "$changeStreamSplitLargeEvent";
    bson_t *reply = COMMAND_FAILS(f->client, f->db_name, 40324,
                                  "{'aggregate': 'apps', 'pipeline': [{'$changeStream': {}}, "
                                  "{'%s': {}}], 'cursor': {}}",
                                  stage);
    assert_string_equal(STR(reply, "codeName"), "Location40324");
}

/* ==== transactions, the way drivers run them ==================================================
 * https://www.mongodb.com/docs/v6.0/core/transactions/ and the drivers' Transactions spec: the
 * writes of a transaction are invisible outside it until commit; at commit every change event
 * has the commit's clusterTime, the session's lsid and the txnNumber, and their resume tokens
 * stay strictly ordered; an aborted transaction changes nothing and logs nothing. */

/* Documents of coll matching filter, as seen with opts (a session's, or none). */
static int64_t count_with(mongoc_collection_t *coll, const char *filter, const bson_t *opts)
{
    bson_error_t error;
    mongoc_cursor_t *cursor =
        mongoc_collection_find_with_opts(coll, tmp_bson("%s", filter), opts, NULL);
    const bson_t *doc;
    int64_t n = 0;
    while (mongoc_cursor_next(cursor, &doc)) {
        n++;
    }
    if (mongoc_cursor_error(cursor, &error)) {
        fail_msg("find %s failed: %s (code %u)", filter, error.message, error.code);
    }
    mongoc_cursor_destroy(cursor);
    return n;
}

static bson_t *session_opts(mongoc_client_session_t *session)
{
    bson_error_t error;
    bson_t *opts = keep(bson_new());
    ASSERT_OK(mongoc_client_session_append(session, opts, &error), error);
    return opts;
}

static void test_transaction_commit(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 0, 'name': 'before'}");
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    bson_error_t error;
    mongoc_client_session_t *session = mongoc_client_start_session(f->client, NULL, &error);
    ASSERT_OK(session, error);
    ASSERT_OK(mongoc_client_session_start_transaction(session, NULL, &error), error);
    bson_t *opts = session_opts(session);
    ASSERT_OK(mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': 1, 'name': 'a'}"), opts, NULL,
                                           &error),
              error);
    ASSERT_OK(mongoc_collection_delete_one(f->coll, tmp_bson("{'_id': 1}"), opts, NULL, &error),
              error);
    ASSERT_OK(mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': 2, 'name': 'b'}"), opts, NULL,
                                           &error),
              error);
    ASSERT_OK(mongoc_collection_update_one(f->coll, tmp_bson("{'_id': 2}"),
                                           tmp_bson("{'$set': {'name': 'b2'}}"), opts, NULL,
                                           &error),
              error);
    ASSERT_OK(mongoc_collection_delete_one(f->coll, tmp_bson("{'_id': 0}"), opts, NULL, &error),
              error);
    /* Inside: the transaction's own writes; outside: nothing of them yet, and no event. */
    assert_int_equal(count_with(f->coll, "{'_id': 2, 'name': 'b2'}", opts), 1);
    assert_int_equal(count_with(f->coll, "{}", opts), 1);
    assert_int_equal(count_with(f->coll, "{}", NULL), 1);
    assert_int_equal(count_with(f->coll, "{'_id': 0, 'name': 'before'}", NULL), 1);
    EXPECT_NO_EVENT(stream, 300);
    ASSERT_OK(mongoc_client_session_commit_transaction(session, NULL, &error), error);
    assert_int_equal(count_with(f->coll, "{}", NULL), 1);
    assert_int_equal(count_with(f->coll, "{'_id': 2, 'name': 'b2'}", NULL), 1);

    const char *expected[] = {"insert", "delete", "insert", "update", "delete"};
    const bson_t *lsid = mongoc_client_session_get_lsid(session);
    uint32_t first_t = 0, first_i = 0;
    char *last_token = NULL;
    for (size_t n = 0; n < sizeof expected / sizeof *expected; n++) {
        bson_t *event = NEXT_EVENT(stream);
        CHECK_EVENT(event, expected[n]);
        uint32_t t, i;
        TIMESTAMP(event, "clusterTime", &t, &i);
        if (n == 0) {
            first_t = t;
            first_i = i;
        } else if (t != first_t || i != first_i) {
            fail_msg("event %zu: clusterTime (%u, %u), not the commit's (%u, %u)", n, t, i, first_t,
                     first_i);
        }
        assert_int_equal(TYPE(event, "txnNumber"), BSON_TYPE_INT64);
        assert_int_equal(INT(event, "txnNumber"), 1);
        bson_iter_t event_id = field_at(__FILE__, __LINE__, event, "lsid.id");
        bson_iter_t session_id = field_at(__FILE__, __LINE__, lsid, "id");
        assert_true(bson_iter_value(&event_id)->value_type == BSON_TYPE_BINARY);
        assert_true(bson_iter_value(&event_id)->value.v_binary.data_len == 16);
        assert_memory_equal(bson_iter_value(&event_id)->value.v_binary.data,
                            bson_iter_value(&session_id)->value.v_binary.data, 16);
        const char *token = token_data(DOC(event, "_id"));
        if (last_token && strcmp(token, last_token) <= 0) {
            fail_msg("event %zu: resume token %s does not sort after %s", n, token, last_token);
        }
        bson_free(last_token);
        last_token = bson_strdup(token);
    }
    bson_free(last_token);
    /* A change after the commit is after all of them, without lsid or txnNumber. */
    INSERT(f->coll, "{'_id': 3}");
    bson_t *after = NEXT_EVENT(stream);
    CHECK_EVENT(after, "insert");
    assert_false(has_field(after, "lsid"));
    assert_false(has_field(after, "txnNumber"));
    uint32_t t, i;
    TIMESTAMP(after, "clusterTime", &t, &i);
    assert_true(t > first_t || (t == first_t && i > first_i));
    mongoc_client_session_destroy(session);
}

static void test_transaction_abort_changes_nothing(void **state)
{
    fixture_t *f = *state;
    INSERT(f->coll, "{'_id': 0}");
    mongoc_change_stream_t *stream = watch_collection(f, f->coll, NULL, NULL);
    STREAM_OK(stream);
    bson_error_t error;
    mongoc_client_session_t *session = mongoc_client_start_session(f->client, NULL, &error);
    ASSERT_OK(session, error);
    ASSERT_OK(mongoc_client_session_start_transaction(session, NULL, &error), error);
    bson_t *opts = session_opts(session);
    ASSERT_OK(mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': 1}"), opts, NULL, &error),
              error);
    ASSERT_OK(mongoc_collection_delete_one(f->coll, tmp_bson("{'_id': 0}"), opts, NULL, &error),
              error);
    ASSERT_OK(mongoc_client_session_abort_transaction(session, &error), error);
    assert_int_equal(count_with(f->coll, "{}", NULL), 1);
    assert_int_equal(count_with(f->coll, "{'_id': 0}", NULL), 1);
    /* The next event is the next write's: the aborted transaction logged none. */
    INSERT(f->coll, "{'_id': 7}");
    bson_t *event = NEXT_EVENT(stream);
    CHECK_EVENT(event, "insert");
    ASSERT_DOC(DOC(event, "documentKey"), "{'_id': 7}");
    mongoc_client_session_destroy(session);
}

/* Misuse answered as mongod's transaction participant answers it (transaction_participant.cpp
 * and error_labels.cpp): an unknown transaction is NoSuchTransaction (251) with the
 * TransientTransactionError label; a command that may not run in a transaction is 263. */
static void test_transaction_errors(void **state)
{
    fixture_t *f = *state;
    bson_error_t error;
    bson_t reply;
    bson_t *opts = raw_opts(f);
    bool ok = mongoc_client_command_with_opts(
        f->client, "admin",
        tmp_bson("{'commitTransaction': 1, 'txnNumber': {'$numberLong': '42'}, "
                 "'autocommit': false}"),
        NULL, opts, &reply, &error);
    bson_t *answer = keep(bson_copy(&reply));
    bson_destroy(&reply);
    assert_false(ok);
    assert_int_equal(error.code, 251);
    assert_string_equal(STR(answer, "codeName"), "NoSuchTransaction");
    assert_string_equal(STR(answer, "errorLabels.0"), "TransientTransactionError");
    ok = mongoc_client_command_with_opts(
        f->client, "admin",
        tmp_bson("{'abortTransaction': 1, 'txnNumber': {'$numberLong': '42'}, "
                 "'autocommit': false}"),
        NULL, opts, &reply, &error);
    bson_destroy(&reply);
    assert_false(ok);
    assert_int_equal(error.code, 251);

    mongoc_client_session_t *session = mongoc_client_start_session(f->client, NULL, &error);
    ASSERT_OK(session, error);
    ASSERT_OK(mongoc_client_session_start_transaction(session, NULL, &error), error);
    bson_t *in_txn = session_opts(session);
    ok = mongoc_collection_insert_one(f->coll, tmp_bson("{'_id': 1}"), in_txn, NULL, &error);
    ASSERT_OK(ok, error);
    ok = mongoc_client_command_with_opts(f->client, f->db_name,
                                         tmp_bson("{'count': 'apps', 'query': {}}"), NULL, in_txn,
                                         &reply, &error);
    bson_destroy(&reply);
    assert_false(ok);
    assert_int_equal(error.code, 263);
    ASSERT_OK(mongoc_client_session_abort_transaction(session, &error), error);
    mongoc_client_session_destroy(session);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_is_master_legacy_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_op_query_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_sees_replica_set_primary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_and_build_info, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_collections_and_databases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions_and_concerns_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_equality_and_dotted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_in_and_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_sort_limit_skip_projection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_batches_and_get_more, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_cursors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_set_unset_inc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_replacement_and_upsert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_multi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_one_and_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_count_and_aggregate_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_rename_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_event_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_cluster_time_and_tokens_ordered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_update_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_match_and_project, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_batch_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_database_and_deployment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_resume_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_start_at_operation_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_drop_invalidates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_rename_invalidates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_start_after_invalidate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_drop_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_post_batch_resume_token_advances_when_idle,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_get_more_waits_max_await_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_start_at_operation_time_too_old, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_history_token_fell_off_events,
                                        setup_small_history_events, teardown),
        cmocka_unit_test_setup_teardown(test_history_token_fell_off_bytes,
                                        setup_small_history_bytes, teardown),
        cmocka_unit_test_setup_teardown(test_history_malformed_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_point_always_on_and_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_point_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_point_resumable_change_stream_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fail_point_close_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_point_block_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_point_injected_get_more_error_has_no_label, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fail_get_more_after_cursor_checkout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_unknown_stage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_rename_drop_target_description, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_step_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_event_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_event_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_event_split_stage_position, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_event_no_split_stage, setup_no_split_stage,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transaction_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_abort_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transaction_errors, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("double_conformance", tests, NULL, NULL);
    mongoc_cleanup();
    return failed;
}
