/*
 * test_reset_token_other_collection.c - `ftsync reset-token --to-token` given the resume token
 * of another collection's change event. mongod opens a change stream there, but its resume
 * check never sees that token (the stream filters the other collection's event out), so the
 * first event of the watched collection after it fails with 280 ChangeStreamFatalError
 * "cannot resume stream; the resume token was not found." (the double answers the same,
 * test/double/changestream.c). Checked here:
 *   - when the watched collection has an event after the token, reset-token's check reads it
 *     and refuses (exit 2, nothing written), saying the token is not one of this collection's;
 *   - when it has none yet, reset-token cannot tell and saves the token; extract then stops at
 *     the first event (FTSYNC_ON_HISTORY_LOST=stop: exit 3) with a message naming the problem,
 *     and has queued nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bson/bson.h>
#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>

#include "buffer.h"
#include "extract_harness.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "testbed.h"

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
    mongoc_client_t *client;
    char db[64];
    char *dir;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = bson_malloc0(sizeof *f);
    fts_error_t err;
    f->mongo = fts_test_mongo_double_start(NULL, &err);
    f->redis = f->mongo ? fts_test_redis_server_start(NULL, &err) : NULL;
    if (!f->redis) {
        fprintf(stderr, "cannot start the servers: %s\n", err.message);
        return -1;
    }
    f->client = mongoc_client_new(fts_test_mongo_double_uri(f->mongo));
    fts_test_mongo_unique_name("resetother", f->db, sizeof f->db);
    f->dir = bson_strdup_printf("%s/reset-other-XXXXXX", fts_testbed_dir());
    if (!mkdtemp(f->dir)) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    mongoc_database_t *db = mongoc_client_get_database(f->client, f->db);
    mongoc_database_drop(db, NULL);
    mongoc_database_destroy(db);
    mongoc_client_destroy(f->client);
    fts_test_redis_server_destroy(f->redis);
    fts_test_mongo_double_destroy(f->mongo);
    if (!getenv("FTSYNC_TEST_KEEP_LOGS")) {
        char *command = bson_strdup_printf("rm -rf '%s'", f->dir);
        if (system(command) != 0) {
            fprintf(stderr, "cannot remove %s\n", f->dir);
        }
        bson_free(command);
    }
    bson_free(f->dir);
    bson_free(f);
    return 0;
}

static void insert(fixture_t *f, const char *collection, int id)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(f->client, f->db, collection);
    bson_t *doc = BCON_NEW("_id", BCON_INT32(id), "name", BCON_UTF8("x"));
    bson_error_t error;
    if (!mongoc_collection_insert_one(coll, doc, NULL, NULL, &error)) {
        fail_msg("insert into %s failed: %s", collection, error.message);
    }
    bson_destroy(doc);
    mongoc_collection_destroy(coll);
}

/* Inserts a document into collection and returns the resume token of its change event, as
 * extended JSON (bson_free). */
static char *token_of_an_insert(fixture_t *f, const char *collection, int id)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(f->client, f->db, collection);
    bson_t *pipeline = bson_new();
    bson_t *options = BCON_NEW("maxAwaitTimeMS", BCON_INT64(200));
    mongoc_change_stream_t *stream = mongoc_collection_watch(coll, pipeline, options);
    const bson_t *event = NULL;
    mongoc_change_stream_next(stream, &event); /* opens it before the insert */
    insert(f, collection, id);
    char *token = NULL;
    for (int i = 0; i < 50 && !token; i++) {
        if (mongoc_change_stream_next(stream, &event)) {
            bson_iter_t iter, child;
            assert_true(bson_iter_init_find(&iter, event, "_id") &&
                        BSON_ITER_HOLDS_DOCUMENT(&iter));
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&iter, &len, &data);
            bson_t id_doc;
            assert_true(bson_init_static(&id_doc, data, len));
            assert_true(bson_iter_init_find(&child, &id_doc, "_data"));
            token = bson_as_relaxed_extended_json(&id_doc, NULL);
        }
    }
    bson_error_t error;
    if (mongoc_change_stream_error_document(stream, &error, NULL)) {
        fail_msg("the change stream of %s failed: %s", collection, error.message);
    }
    assert_non_null(token);
    mongoc_change_stream_destroy(stream);
    bson_destroy(options);
    bson_destroy(pipeline);
    mongoc_collection_destroy(coll);
    return token;
}

static void env_for(fixture_t *f, const char *collection, const char *pipeline)
{
    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_MONGO_URI", fts_test_mongo_double_uri(f->mongo), 1);
    setenv("FTSYNC_MONGO_DB", f->db, 1);
    setenv("FTSYNC_MONGO_COLLECTION", collection, 1);
    setenv("FTSYNC_STATE_REDIS_URL", fts_test_redis_server_url(f->redis), 1);
    unsetenv("FTSYNC_QUEUE_REDIS_URL");
    setenv("FTSYNC_PIPELINE", pipeline, 1);
    setenv("FTSYNC_MONGO_MAX_AWAIT_MS", "100", 1);
    setenv("FTSYNC_LEASE_TTL_MS", "3000", 1);
    setenv("FTSYNC_ON_HISTORY_LOST", "stop", 1);
    setenv("FTSYNC_ADMIN_ADDR", "off", 1);
}

/* Runs `ftsync reset-token --to-token token --yes`: its exit status, *output what it printed
 * (bson_free). */
static int reset_token(fixture_t *f, const char *token, char **output)
{
    char *log_path = bson_strdup_printf("%s/reset-token.log", f->dir);
    unlink(log_path);
    const char *const args[] = {"reset-token", "--to-token", token, "--yes", NULL};
    pid_t pid = fts_test_spawn(FTSYNC_BINARY, args, log_path);
    assert_true(pid > 0);
    int status = fts_test_wait_pid(pid, 60000);
    fts_buffer_t text = {0};
    fts_error_t err;
    fts_buffer_append_str(&text, "");
    (void)fts_buffer_read_file(&text, log_path, 1024 * 1024, &err);
    *output = fts_buffer_steal(&text);
    bson_free(log_path);
    return status;
}

/* The saved token's JSON of pipeline (bson_free), NULL when none is saved. */
static char *saved_token(fixture_t *f, const char *pipeline)
{
    fts_error_t err;
    redisContext *redis = fts_test_redis_connect(fts_test_redis_server_url(f->redis), &err);
    assert_non_null(redis);
    char key[160];
    fts_test_key(pipeline, "token", key, sizeof key);
    char *token = fts_test_redis_hget(redis, key, "token");
    redisFree(redis);
    return token;
}

static void test_refused_when_an_event_follows(void **state)
{
    fixture_t *f = *state;
    insert(f, "items", 1); /* the watched collection exists */
    char *token = token_of_an_insert(f, "other", 1);
    insert(f, "items", 2); /* an event of the watched collection after the token */

    char pipeline[64];
    snprintf(pipeline, sizeof pipeline, "resetother%ld", (long)getpid());
    env_for(f, "items", pipeline);
    char *output = NULL;
    int status = reset_token(f, token, &output);
    if (status != 2 || !strstr(output, "refusing") ||
        !strstr(output, "the token is not one of this collection's") ||
        !strstr(output, "another collection's") ||
        !strstr(output, "280 (ChangeStreamFatalError)") || !strstr(output, "nothing was changed")) {
        fail_msg("reset-token with another collection's token: exit %d: %s", status, output);
    }
    char *saved = saved_token(f, pipeline);
    assert_null(saved);
    bson_free(output);
    bson_free(token);
}

static void test_extract_stops_at_the_first_event(void **state)
{
    fixture_t *f = *state;
    insert(f, "quiet", 1);
    char *token = token_of_an_insert(f, "other", 2);

    char pipeline[64];
    snprintf(pipeline, sizeof pipeline, "resetotherx%ld", (long)getpid());
    env_for(f, "quiet", pipeline);
    /* Nothing of "quiet" follows the token yet: the check cannot tell, the token is saved. */
    char *output = NULL;
    int status = reset_token(f, token, &output);
    if (status != 0) {
        fail_msg("reset-token exited %d: %s", status, output);
    }
    bson_free(output);
    char *saved = saved_token(f, pipeline);
    assert_non_null(saved);
    bson_free(saved);

    char *log_path = bson_strdup_printf("%s/extract.log", f->dir);
    const char *const args[] = {"extract", NULL};
    pid_t extract = fts_test_spawn(FTSYNC_BINARY, args, log_path);
    assert_true(extract > 0);
    sleep(1); /* the stream is open at the token */
    insert(f, "quiet", 2);
    int exit_status = fts_test_wait_pid(extract, 30000);
    fts_buffer_t text = {0};
    fts_error_t err;
    fts_buffer_append_str(&text, "");
    (void)fts_buffer_read_file(&text, log_path, 16 * 1024 * 1024, &err);
    char *log = fts_buffer_steal(&text);
    if (exit_status != 3 || !strstr(log, "another collection's") ||
        !strstr(log, "resume token was not found")) {
        fail_msg("extract did not stop with status 3 naming the problem (status %d): %s",
                 exit_status, log);
    }
    bson_free(log);
    /* Nothing was queued from the wrong position. */
    redisContext *redis = fts_test_redis_connect(fts_test_redis_server_url(f->redis), &err);
    assert_non_null(redis);
    char key[160];
    fts_test_key(pipeline, "stream", key, sizeof key);
    assert_true(fts_test_redis_xlen(redis, key) <= 0);
    redisFree(redis);
    bson_free(log_path);
    bson_free(token);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refused_when_an_event_follows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extract_stops_at_the_first_event, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return failed;
}
