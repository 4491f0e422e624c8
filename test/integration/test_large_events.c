/*
 * test_large_events.c - change events larger than 16 MB, end to end: the MongoDB replica-set
 * double, `ftsync run` (extract and load), the test bed's Redis and Elasticsearch.
 *
 * What is pinned (issue 11, section 4): a 15 MB document inserted and then updated twice, each
 * update replacing its large field, with updateLookup and pre-images on: both update events are
 * over 16 MB (fullDocument, fullDocumentBeforeChange and updateDescription each near 15 MB),
 * which the server refuses with 10334 BSONObjectTooLarge. The index must end with the document
 * as the collection has it, at the last update's version, and a marker written after it must
 * arrive too (extract went on past the large events); each large event is logged once as read
 * through $changeStreamSplitLargeEvent, or, against a server without that stage (the double's
 * --no-split-stage, as MongoDB before 6.0.9), as re-read by _id. The 15 MB action is bigger
 * than the loader's 5 MB bulk limit (FTSYNC_BULK_MAX_BYTES) and must go out alone, not be
 * dead-lettered: the dead-letter stream stays empty.
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

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "buffer.h"
#include "extract_harness.h"
#include "load_harness.h"
#include "mongo_double.h"
#include "test_time.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_SOURCE_DIR
#define FTSYNC_SOURCE_DIR "."
#endif

/* The large field: 15 MB of words, so that Elasticsearch's analyser makes ordinary terms. */
#define LARGE_BYTES (15 * 1024 * 1024)
/* How long the index may take to show a change (an ASan build moving 15 MB documents). */
#define INDEX_WAIT_MS 120000
#define STOP_WAIT_MS  30000

static const char *redis_url;
static const char *es_url;

static int group_setup(void **state)
{
    (void)state;
    mongoc_init();
    redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    es_url = fts_testbed_es_url();
    return redis_url && es_url ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    mongoc_cleanup();
    return 0;
}

/* LARGE_BYTES of text: "v<version> " then words, so each version differs at its start. */
static char *large_text(int version)
{
    char *text = bson_malloc(LARGE_BYTES + 1);
    int n = snprintf(text, LARGE_BYTES, "v%d ", version);
    static const char *const words[] = {"large ", "event ", "split ", "fragment ", "index "};
    size_t at = (size_t)n;
    for (size_t w = 0; at < LARGE_BYTES; w++) {
        const char *word = words[w % 5];
        size_t len = strlen(word);
        if (at + len > LARGE_BYTES) {
            len = LARGE_BYTES - at;
        }
        memcpy(text + at, word, len);
        at += len;
    }
    text[LARGE_BYTES] = '\0';
    return text;
}

/* The document with index id in Elasticsearch (refreshed first); NULL when not there yet. */
static bson_t *es_get(const char *index, const char *id)
{
    char url[512];
    long status = 0;
    fts_buffer_t out;
    fts_error_t err;
    fts_error_clear(&err);
    snprintf(url, sizeof url, "%s/%s/_refresh", es_url, index);
    fts_buffer_init(&out);
    fts_test_http("POST", url, NULL, 0, &status, &out, &err);
    fts_buffer_destroy(&out);
    /* Typed path on es1, `_doc` on the typeless engine. */
    snprintf(url, sizeof url, "%s/%s/%s/%s", es_url, index,
             fts_testbed_doc_type() ? fts_testbed_doc_type() : "_doc", id);
    fts_buffer_init(&out);
    bson_t *doc = NULL;
    if (fts_test_http("GET", url, NULL, 0, &status, &out, &err) && status == 200 && out.len) {
        doc = bson_new_from_json((const uint8_t *)out.data, (ssize_t)out.len, NULL);
    }
    fts_buffer_destroy(&out);
    return doc;
}

static const char *doc_string(const bson_t *doc, const char *path, uint32_t *len)
{
    bson_iter_t iter, found;
    if (bson_iter_init(&iter, doc) && bson_iter_find_descendant(&iter, path, &found) &&
        BSON_ITER_HOLDS_UTF8(&found)) {
        return bson_iter_utf8(&found, len);
    }
    return NULL;
}

/* Waits until Elasticsearch has id with name `name`; returns that document (bson_destroy). */
static bson_t *wait_indexed(const char *index, const char *id, const char *name, pid_t run,
                            const char *log_path)
{
    uint64_t deadline = fts_test_monotonic_ms() + INDEX_WAIT_MS;
    while (fts_test_monotonic_ms() < deadline) {
        bson_t *doc = es_get(index, id);
        if (doc) {
            const char *got = doc_string(doc, "_source.name", NULL);
            if (got && strcmp(got, name) == 0) {
                return doc;
            }
            bson_destroy(doc);
        }
        if (kill(run, 0) != 0) {
            break;
        }
        fts_test_sleep_ms(200);
    }
    fts_buffer_t log;
    fts_buffer_init(&log);
    fts_error_t err;
    fts_error_clear(&err);
    fts_buffer_read_file(&log, log_path, 1 << 20, &err);
    fprintf(stderr, "--- ftsync run's log ---\n%s\n", log.data ? log.data : "");
    fts_buffer_destroy(&log);
    fail_msg("document %s with name \"%s\" not in the index %s within %d ms", id, name, index,
             INDEX_WAIT_MS);
    return NULL;
}

static void set_env(const char *name, const char *value)
{
    assert_int_equal(setenv(name, value, 1), 0);
}

/* The whole scenario against a double started with extra_args; `expect` is the log line each
 * large event must produce. */
static void large_document_updated_twice(const char *const *extra_args, const char *expect)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(extra_args, &err);
    if (!mongo) {
        fail_msg("cannot start the MongoDB double: %s", err.message);
    }
    char name[64], index[96], pipeline[96], log_path[1200], init_log[1200];
    fts_test_mongo_unique_name("large", name, sizeof name);
    snprintf(index, sizeof index, "%s-idx", name);
    snprintf(pipeline, sizeof pipeline, "%s-p", name);
    snprintf(log_path, sizeof log_path, "%s/%s-run.log", fts_testbed_dir(), name);
    snprintf(init_log, sizeof init_log, "%s/%s-init.log", fts_testbed_dir(), name);

    /* The collection, with pre- and post-images recorded (for FTSYNC_MONGO_PRE_IMAGES). */
    mongoc_client_t *client = mongoc_client_new(fts_test_mongo_double_uri(mongo));
    assert_non_null(client);
    mongoc_database_t *db = mongoc_client_get_database(client, name);
    bson_error_t error;
    bson_t *create_opts =
        BCON_NEW("changeStreamPreAndPostImages", "{", "enabled", BCON_BOOL(true), "}");
    mongoc_collection_t *coll = mongoc_database_create_collection(db, "apps", create_opts, &error);
    bson_destroy(create_opts);
    if (!coll) {
        fail_msg("cannot create the collection: %s", error.message);
    }

    set_env("FTSYNC_ENV_FILE", "/dev/null");
    set_env("FTSYNC_ADMIN_ADDR", "off");
    set_env("FTSYNC_LOG_LEVEL", "info");
    set_env("FTSYNC_MONGO_URI", fts_test_mongo_double_uri(mongo));
    set_env("FTSYNC_MONGO_DB", name);
    set_env("FTSYNC_MONGO_COLLECTION", "apps");
    set_env("FTSYNC_MONGO_FULL_DOCUMENT", "updateLookup");
    set_env("FTSYNC_MONGO_PRE_IMAGES", "whenAvailable");
    set_env("FTSYNC_STATE_REDIS_URL", redis_url);
    set_env("FTSYNC_ES_URL", es_url);
    set_env("FTSYNC_ES_INDEX", index);
    /* The engine the test bed names: a document type and the 1.x definition on es1 only. */
    if (fts_testbed_doc_type()) {
        set_env("FTSYNC_ES_DOC_TYPE", fts_testbed_doc_type());
    } else {
        unsetenv("FTSYNC_ES_DOC_TYPE");
    }
    set_env("FTSYNC_ES_INDEX_DEFINITION", fts_testbed_index_definition());
    set_env("FTSYNC_PIPELINE", pipeline);
    set_env("FTSYNC_ID_FIELD", "_id");
    set_env("FTSYNC_FIELDS", "name,short_description");

    const char *init_args[] = {"init-index", NULL};
    pid_t init = fts_test_spawn(FTSYNC_BINARY, init_args, init_log);
    assert_int_equal(fts_test_wait_pid(init, 60000), 0);
    const char *run_args[] = {"run", NULL};
    pid_t run = fts_test_spawn(FTSYNC_BINARY, run_args, log_path);
    assert_true(run > 0);
    /* The empty collection's snapshot is done once a first insert arrives in the index. */
    bson_t *doc = BCON_NEW("_id", BCON_INT32(1), "name", "first");
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
    bson_destroy(wait_indexed(index, "1", "first", run, log_path));

    /* The 15 MB document, then two updates that each replace its large field. */
    char *text = large_text(0);
    doc = BCON_NEW("_id", BCON_INT32(7), "name", "big", "short_description", BCON_UTF8(text));
    bson_free(text);
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
    bson_t *selector = BCON_NEW("_id", BCON_INT32(7));
    for (int version = 1; version <= 2; version++) {
        text = large_text(version);
        char new_name[32];
        snprintf(new_name, sizeof new_name, "big %d", version);
        bson_t *update = BCON_NEW("$set", "{", "name", BCON_UTF8(new_name), "short_description",
                                  BCON_UTF8(text), "}");
        bson_free(text);
        if (!mongoc_collection_update_one(coll, selector, update, NULL, NULL, &error)) {
            fail_msg("update %d failed: %s", version, error.message);
        }
        bson_destroy(update);
    }
    bson_destroy(selector);
    doc = BCON_NEW("_id", BCON_INT32(8), "name", "after");
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);

    /* The index ends with the document as the collection has it. */
    bson_t *indexed = wait_indexed(index, "7", "big 2", run, log_path);
    uint32_t len = 0;
    const char *body = doc_string(indexed, "_source.short_description", &len);
    assert_non_null(body);
    assert_int_equal(len, LARGE_BYTES);
    text = large_text(2);
    assert_true(memcmp(body, text, LARGE_BYTES) == 0);
    bson_free(text);
    bson_destroy(indexed);
    bson_destroy(wait_indexed(index, "8", "after", run, log_path));

    assert_int_equal(kill(run, SIGTERM), 0);
    assert_int_equal(fts_test_wait_pid(run, STOP_WAIT_MS), 0);
    /* Each large event said once how it was read; nothing was dead-lettered. Read once ftsync
     * stopped: the logger holds back a warning that repeats within a second (two large events
     * read back to back) and prints it, with suppressed=N, when the process ends. */
    fts_buffer_t log;
    fts_buffer_init(&log);
    assert_true(fts_buffer_read_file(&log, log_path, 64 << 20, &err));
    size_t said = 0;
    for (const char *p = log.data; p && (p = strstr(p, expect)); p += strlen(expect)) {
        said++;
    }
    /* Once per reading of each of the 2 large events; more only if extract read one again
     * from its checkpoint (a lease lost on a slow machine), which replays harmlessly. */
    if (said < 2) {
        fprintf(stderr, "--- ftsync run's log ---\n%s\n", log.data);
        fail_msg("\"%s\" logged %zu times, expected once for each of the 2 large events", expect,
                 said);
    }
    fts_buffer_destroy(&log);
    fts_error_clear(&err);
    redisContext *redis = fts_test_redis_connect(redis_url, &err);
    assert_non_null(redis);
    char key[256];
    assert_int_equal(fts_test_redis_xlen(redis, fts_test_key(pipeline, "dead", key, sizeof key)),
                     0);
    redisFree(redis);

    mongoc_collection_destroy(coll);
    mongoc_database_destroy(db);
    mongoc_client_destroy(client);
    fts_test_mongo_double_destroy(mongo);
}

/* MongoDB 6.0.9 and later: read through $changeStreamSplitLargeEvent and reassembled. */
static void test_large_document_split_stage(void **state)
{
    (void)state;
    large_document_updated_twice(NULL, "fragments ($changeStreamSplitLargeEvent); reassembled it");
}

/* Before 6.0.9 (the double's --no-split-stage): read without the images, re-read by _id. */
static void test_large_document_without_split_stage(void **state)
{
    (void)state;
    const char *args[] = {"--no-split-stage", NULL};
    large_document_updated_twice(args, "its document re-read by _id (found)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_document_split_stage),
        cmocka_unit_test(test_large_document_without_split_stage),
    };
    return cmocka_run_group_tests_name("large_events", tests, group_setup, group_teardown);
}
