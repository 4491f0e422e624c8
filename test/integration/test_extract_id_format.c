/*
 * test_extract_id_format.c - FTSYNC_ID_FORMAT end to end (issue 13, item 2; README.md, Index
 * ids): documents whose `_id`s differ only in type (the int32 424242 and the string "424242",
 * an ObjectId and the string of its 24 hex digits) through extract (the MongoDB double, a
 * private redis-server) and one loader into the test bed's search engine.
 *
 * What is pinned: with FTSYNC_ID_FORMAT=typed each of the four documents is its own index
 * document (i:424242, s:424242, o:<hex>, s:<hex>) with its own body, and deleting one leaves the
 * others. With plain, the default, the pairs share one index id each: the first document to
 * claim an index id keeps it (the owners hash ftsync:{P}:owners), the other's index action and
 * then its delete are dead-lettered with a reason naming both _ids, and the first document's
 * index document survives both (and `ftsync dlq replay`, which would undo that, leaves the dead
 * letters in place). The same with FTSYNC_ID_FIELD=id and two documents sharing an id value.
 * (Before the owners hash, the index silently held one document for two, and deleting either
 * removed it.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "assertions.h"

#include <mongoc/mongoc.h>

#include "extract_harness.h"
#include "extract_fixture.h"
#include "load_harness.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif
#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif
#define DEFINITION_PATH fts_testbed_index_definition()
#define DRAIN_WAIT_MS   120000
#define OID_HEX         "65a0000000000000000000aa"

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
} group_t;

static group_t group;

typedef struct {
    fts_test_pipeline_t p;
    fts_test_extract_t *extract;
    fts_test_load_t load;
    bool load_ready;
} fixture_t;

static int group_setup(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    mongoc_init();
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

/* A fixture with its own pipeline (prefix names it) on the group's servers, set in *state
 * for the teardown. */
static fixture_t *fixture_new(void **state, const char *prefix)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_pipeline_init(&f->p, FTSYNC_BINARY, FTSYNC_WORKLOAD,
                                fts_test_mongo_double_uri(group.mongo),
                                fts_test_redis_server_url(group.redis), prefix, &err)) {
        fail_msg("cannot set the pipeline up: %s", err.message);
    }
    return f;
}

static void insert_ok(fixture_t *f, bson_t *doc)
{
    bson_error_t error;
    if (!mongoc_collection_insert_one(f->p.coll, doc, NULL, NULL, &error)) {
        fail_msg("insert failed: %s", error.message);
    }
    bson_destroy(doc);
}

/* GET of one index document: its name field, or NULL when the index has no such id. */
static char *index_name(fixture_t *f, const char *id)
{
    fts_error_t err;
    fts_error_clear(&err);
    char url[1024];
    long status = 0;
    const char *type = fts_testbed_doc_type();
    snprintf(url, sizeof url, "%s/%s/%s/%s", f->load.es_url, f->load.index, type ? type : "_doc",
             id);
    fts_buffer_t body = {0};
    assert_true(fts_test_http("GET", url, NULL, 0, &status, &body, &err));
    char *name = NULL;
    if (status == 200) {
        bson_error_t error;
        bson_t *answer = bson_new_from_json((const uint8_t *)body.data, (ssize_t)body.len, &error);
        assert_non_null(answer);
        bson_iter_t iter;
        if (bson_iter_init(&iter, answer) &&
            bson_iter_find_descendant(&iter, "_source.name", &iter) &&
            BSON_ITER_HOLDS_UTF8(&iter)) {
            name = strdup(bson_iter_utf8(&iter, NULL));
        }
        bson_destroy(answer);
    } else {
        assert_int_equal(status, 404);
    }
    fts_buffer_destroy(&body);
    return name;
}

static void assert_index_name(fixture_t *f, const char *id, const char *expected)
{
    char *name = index_name(f, id);
    if (!expected) {
        if (name) {
            fail_msg("index id %s holds \"%s\"; expected no document", id, name);
        }
        return;
    }
    if (!name) {
        fts_test_load_print_logs(&f->load, 30);
        fail_msg("index id %s: no document; expected \"%s\"", id, expected);
    }
    assert_string_equal(name, expected);
    free(name);
}

static void refresh_and_drain(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_wait_drained(&f->load, DRAIN_WAIT_MS, &err)) {
        fts_test_load_print_logs(&f->load, 30);
        fail_msg("the loader did not drain the stream: %s", err.message);
    }
    char url[1024];
    long status = 0;
    snprintf(url, sizeof url, "%s/%s/_refresh", f->load.es_url, f->load.index);
    assert_true(fts_test_http("POST", url, "", 0, &status, NULL, &err));
}

static void test_typed_ids_keep_type_different_ids_apart(void **state)
{
    fixture_t *f = fixture_new(state, "idformat");
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_pipeline_set(&f->p, "FTSYNC_ID_FORMAT", "typed");
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, OID_HEX);
    /* Two before extract starts (the snapshot), two after (change events). */
    insert_ok(f, BCON_NEW("_id", BCON_INT32(424242), "name", BCON_UTF8("the integer")));
    insert_ok(f, BCON_NEW("_id", BCON_OID(&oid), "name", BCON_UTF8("the ObjectId")));
    f->extract = fts_test_pipeline_start(&f->p, &err);
    if (!f->extract) {
        fail_msg("cannot start ftsync extract: %s", err.message);
    }
    insert_ok(f, BCON_NEW("_id", BCON_UTF8("424242"), "name", BCON_UTF8("the string")));
    insert_ok(f, BCON_NEW("_id", BCON_UTF8(OID_HEX), "name", BCON_UTF8("the hex string")));

    if (!fts_test_load_init(&f->load, FTSYNC_BINARY, DEFINITION_PATH,
                            fts_test_redis_server_url(group.redis), fts_testbed_es_url(),
                            "idformat", &err)) {
        fail_msg("cannot set the loader up: %s", err.message);
    }
    f->load_ready = true;
    snprintf(f->load.pipeline, sizeof f->load.pipeline, "%s", f->p.pipeline);
    snprintf(f->load.stream_key, sizeof f->load.stream_key, "%s", f->p.stream_key);
    snprintf(f->load.dead_key, sizeof f->load.dead_key, "%s", f->p.dead_key);
    fts_test_load_set(&f->load, "FTSYNC_PIPELINE", f->p.pipeline);
    if (!fts_test_load_start_loader(&f->load, NULL, &err)) {
        fail_msg("cannot start ftsync load: %s", err.message);
    }
    /* The last insert is queued: everything before it is. */
    fts_test_pipeline_wait_entry(&f->p, f->extract, "s:" OID_HEX, 0, 0, 90000);
    refresh_and_drain(f);
    assert_index_name(f, "i:424242", "the integer");
    assert_index_name(f, "s:424242", "the string");
    assert_index_name(f, "o:" OID_HEX, "the ObjectId");
    assert_index_name(f, "s:" OID_HEX, "the hex string");
    assert_index_name(f, "424242", NULL);

    /* Deleting the string leaves the integer's document. */
    bson_t *filter = BCON_NEW("_id", BCON_UTF8("424242"));
    bson_error_t error;
    assert_true(mongoc_collection_delete_one(f->p.coll, filter, NULL, NULL, &error));
    bson_destroy(filter);
    fts_test_pipeline_wait_entry(&f->p, f->extract, "s:424242", FTS_ACTION_DELETE, 0, 90000);
    refresh_and_drain(f);
    assert_index_name(f, "s:424242", NULL);
    assert_index_name(f, "i:424242", "the integer");
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 0);
}

/* Starts the pipeline's extract and one loader on it. */
static void start_both(fixture_t *f)
{
    fts_error_t err;
    fts_error_clear(&err);
    f->extract = fts_test_pipeline_start(&f->p, &err);
    if (!f->extract) {
        fail_msg("cannot start ftsync extract: %s", err.message);
    }
    if (!fts_test_load_init(&f->load, FTSYNC_BINARY, DEFINITION_PATH,
                            fts_test_redis_server_url(group.redis), fts_testbed_es_url(),
                            "idformat", &err)) {
        fail_msg("cannot set the loader up: %s", err.message);
    }
    f->load_ready = true;
    snprintf(f->load.pipeline, sizeof f->load.pipeline, "%s", f->p.pipeline);
    snprintf(f->load.stream_key, sizeof f->load.stream_key, "%s", f->p.stream_key);
    snprintf(f->load.dead_key, sizeof f->load.dead_key, "%s", f->p.dead_key);
    fts_test_load_set(&f->load, "FTSYNC_PIPELINE", f->p.pipeline);
    if (!fts_test_load_start_loader(&f->load, NULL, &err)) {
        fail_msg("cannot start ftsync load: %s", err.message);
    }
}

/* Waits until the stream holds the index action of a marker document (_id int32 marker, name
 * "marker"), inserted now: everything the extract read before it is queued or dead-lettered. */
static void pass_marker(fixture_t *f, int32_t marker, const char *marker_id)
{
    insert_ok(f, BCON_NEW("_id", BCON_INT32(marker), "name", BCON_UTF8("marker")));
    fts_test_pipeline_wait_entry(&f->p, f->extract, marker_id, FTS_ACTION_INDEX, 0, 90000);
}

/* Dead letter i of the pipeline: stage extract, its op and index id, and a reason holding
 * each of the given texts (the two _ids). */
static void assert_collision_letter(fixture_t *f, size_t i, const char *op, const char *id,
                                    const char *holder, const char *other)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_raw_entries_t dead = {0};
    assert_true(fts_test_stream_read_raw(f->p.redis, f->p.dead_key, &dead, &err));
    if (dead.count <= i) {
        fts_test_extract_print_log_tail(f->extract, 40);
        fail_msg("%zu dead letters; expected one more", dead.count);
    }
    const char *reason = fts_test_raw_field(&dead, i, "reason");
    assert_non_null(reason);
    assert_string_equal(fts_test_raw_field(&dead, i, "stage"), "extract");
    assert_string_equal(fts_test_raw_field(&dead, i, "op"), op);
    assert_string_equal(fts_test_raw_field(&dead, i, "id"), id);
    if (!strstr(reason, holder) || !strstr(reason, other)) {
        fail_msg("the reason does not name both _ids (%s and %s): %s", holder, other, reason);
    }
    fts_test_raw_entries_cleanup(&dead);
}

/* Runs `ftsync dlq replay` with the pipeline's settings; returns its exit status and its output
 * in out (size bytes). */
static int dlq_replay(fixture_t *f, char *out, size_t size)
{
    const char *envp[FTS_TEST_PIPELINE_ENV_MAX + 256] = {0};
    size_t n = 0;
    for (size_t i = 0; environ[i] && n < 200; i++) {
        if (strncmp(environ[i], "FTSYNC_", 7) != 0) {
            envp[n++] = environ[i];
        }
    }
    envp[n++] = "FTSYNC_ENV_FILE=/dev/null";
    for (size_t i = 0; f->p.envp[i]; i++) {
        envp[n++] = f->p.envp[i];
    }
    int pipe_fds[2];
    assert_int_equal(pipe(pipe_fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipe_fds[1], 1);
        dup2(pipe_fds[1], 2);
        close(pipe_fds[0]);
        char *const argv[] = {(char *)FTSYNC_BINARY, (char *)"dlq", (char *)"replay", NULL};
        execve(FTSYNC_BINARY, argv, (char *const *)envp);
        _exit(127);
    }
    close(pipe_fds[1]);
    size_t len = 0;
    ssize_t got;
    while ((got = read(pipe_fds[0], out + len, size - 1 - len)) > 0) {
        len += (size_t)got;
        if (len == size - 1) {
            break;
        }
    }
    out[len] = '\0';
    close(pipe_fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void delete_ok(fixture_t *f, bson_t *filter)
{
    bson_error_t error;
    if (!mongoc_collection_delete_one(f->p.coll, filter, NULL, NULL, &error)) {
        fail_msg("delete failed: %s", error.message);
    }
    bson_destroy(filter);
}

static void test_plain_collisions_are_dead_lettered(void **state)
{
    fixture_t *f = fixture_new(state, "idplain");
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, OID_HEX);
    /* The integer and the ObjectId through the snapshot, the strings as change events. */
    insert_ok(f, BCON_NEW("_id", BCON_INT32(424242), "name", BCON_UTF8("the integer")));
    insert_ok(f, BCON_NEW("_id", BCON_OID(&oid), "name", BCON_UTF8("the ObjectId")));
    start_both(f);
    /* The snapshot is queued (its time is behind us), so the strings come as changes, later:
     * the documents already indexed hold their index ids. */
    fts_test_pipeline_wait_entry(&f->p, f->extract, OID_HEX, FTS_ACTION_INDEX,
                                 FTS_ACTION_FROM_SNAPSHOT, 90000);
    insert_ok(f, BCON_NEW("_id", BCON_UTF8("424242"), "name", BCON_UTF8("the string")));
    insert_ok(f, BCON_NEW("_id", BCON_UTF8(OID_HEX), "name", BCON_UTF8("the hex string")));
    pass_marker(f, 1, "1");
    refresh_and_drain(f);
    assert_index_name(f, "424242", "the integer");
    assert_index_name(f, OID_HEX, "the ObjectId");
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 2);
    assert_collision_letter(f, 0, "index", "424242", "{ \"$numberInt\" : \"424242\" }",
                            "\"424242\"");
    assert_collision_letter(f, 1, "index", OID_HEX, "{ \"$oid\" : \"" OID_HEX "\" }",
                            "\"" OID_HEX "\"");

    /* Deleting the dead-lettered string must not delete the integer's document. */
    delete_ok(f, BCON_NEW("_id", BCON_UTF8("424242")));
    pass_marker(f, 2, "2");
    refresh_and_drain(f);
    assert_index_name(f, "424242", "the integer");
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 3);
    assert_collision_letter(f, 2, "delete", "424242", "{ \"$numberInt\" : \"424242\" }",
                            "\"424242\"");

    /* A replay would do what the check refused: the dead letters stay. */
    char output[8192];
    int status = dlq_replay(f, output, sizeof output);
    if (status != 1 || !strstr(output, "replaying it would overwrite or delete")) {
        fail_msg("dlq replay exited %d: %s", status, output);
    }
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 3);
    refresh_and_drain(f);
    assert_index_name(f, "424242", "the integer");

    /* The integer's own delete goes through; then the string can take the id. */
    delete_ok(f, BCON_NEW("_id", BCON_INT32(424242)));
    insert_ok(f, BCON_NEW("_id", BCON_UTF8("424242"), "name", BCON_UTF8("the string again")));
    pass_marker(f, 3, "3");
    refresh_and_drain(f);
    assert_index_name(f, "424242", "the string again");
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 3);
}

static void test_id_field_duplicates_are_dead_lettered(void **state)
{
    fixture_t *f = fixture_new(state, "idfield");
    fts_test_pipeline_set(&f->p, "FTSYNC_ID_FIELD", "id");
    start_both(f);
    /* Two documents with one id value, most likely in one batch of the worker. */
    insert_ok(f, BCON_NEW("_id", BCON_INT32(1), "id", BCON_INT32(5), "name", BCON_UTF8("first")));
    insert_ok(f, BCON_NEW("_id", BCON_INT32(2), "id", BCON_INT32(5), "name", BCON_UTF8("second")));
    insert_ok(f, BCON_NEW("_id", BCON_INT32(3), "id", BCON_INT32(6), "name", BCON_UTF8("marker")));
    fts_test_pipeline_wait_entry(&f->p, f->extract, "6", FTS_ACTION_INDEX, 0, 90000);
    refresh_and_drain(f);
    assert_index_name(f, "5", "first");
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 1);
    assert_collision_letter(f, 0, "index", "5", "{ \"$numberInt\" : \"1\" }",
                            "{ \"$numberInt\" : \"2\" }");

    /* The second's delete (its id from the id map) must leave the first's document. */
    delete_ok(f, BCON_NEW("_id", BCON_INT32(2)));
    insert_ok(f, BCON_NEW("_id", BCON_INT32(4), "id", BCON_INT32(7), "name", BCON_UTF8("marker")));
    fts_test_pipeline_wait_entry(&f->p, f->extract, "7", FTS_ACTION_INDEX, 0, 90000);
    refresh_and_drain(f);
    assert_index_name(f, "5", "first");
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 2);
    assert_collision_letter(f, 1, "delete", "5", "{ \"$numberInt\" : \"1\" }",
                            "{ \"$numberInt\" : \"2\" }");

    /* The first's delete removes it. */
    delete_ok(f, BCON_NEW("_id", BCON_INT32(1)));
    fts_test_pipeline_wait_entry(&f->p, f->extract, "5", FTS_ACTION_DELETE, 0, 90000);
    refresh_and_drain(f);
    assert_index_name(f, "5", NULL);
    assert_int_equal(fts_test_redis_xlen(f->p.redis, f->p.dead_key), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_typed_ids_keep_type_different_ids_apart, teardown),
        cmocka_unit_test_teardown(test_plain_collisions_are_dead_lettered, teardown),
        cmocka_unit_test_teardown(test_id_field_duplicates_are_dead_lettered, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
