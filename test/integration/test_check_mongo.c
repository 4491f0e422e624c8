/*
 * test_check_mongo.c - `ftsync check` checks extract's MongoDB when FTSYNC_MONGO_URI is set
 * (issue 13, item 8): against a private MongoDB double it says ok (exit 0) for the deployment,
 * the collection and a change stream; with credentials the double refuses it exits 1 with
 * "permanent (auth)" and never prints the password; against a closed port it exits 1 within
 * seconds, and so against a server that accepts and never answers; when aggregate answers 40573
 * (what a standalone answers a $changeStream, set through the failCommand fail point) it exits 1
 * with "permanent (not_replica_set)". Without FTSYNC_MONGO_URI there is no MongoDB line, and a URI
 * without FTSYNC_MONGO_DB is bad configuration (exit 2). Redis is a private redis-server,
 * Elasticsearch a stand-in that answers every request with one JSON object good for GET /, the
 * cluster health and HEAD.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>
#include <curl/curl.h>
#include <mongoc/mongoc.h>

#include "extract_harness.h"
#include "http_capture.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "testbed.h"

/* GET / (version), GET /_cluster/health (status) and HEAD of the index (200) in one answer. */
#define ES_ANSWER                                                                                  \
    "{\"name\":\"stand-in\",\"cluster_name\":\"test\",\"version\":{\"number\":\"7.10.2\"},"        \
    "\"tagline\":\"You Know, for Search\",\"status\":\"green\",\"number_of_nodes\":1}"

/* The password planted in URIs: it must never reach check's output. */
#define PLANTED_PASSWORD "planted-Secret-4711"

/* check gives up on a server it cannot reach within a few seconds. */
#define CHECK_MAX_MS 15000

typedef struct {
    fts_test_redis_server_t *redis;
    fts_http_capture_t *es;
    fts_test_mongo_double_t *mongo;
    char *dir;
} bed_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *read_file(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    FILE *file = fopen(path, "rb");
    if (!file) {
        return bson_strdup("");
    }
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, file)) > 0) {
        text = bson_realloc(text, len + n + 1);
        memcpy(text + len, chunk, n);
        len += n;
    }
    fclose(file);
    if (!text) {
        return bson_strdup("");
    }
    text[len] = '\0';
    return text;
}

static int setup(void **state)
{
    fts_error_t err;
    bed_t *bed = bson_malloc0(sizeof *bed);
    bed->redis = fts_test_redis_server_start(NULL, &err);
    assert_non_null(bed->redis);
    bed->es = fts_http_capture_new(&err);
    assert_non_null(bed->es);
    fts_http_capture_set_reply(bed->es, 200, "application/json", ES_ANSWER);
    bed->mongo = fts_test_mongo_double_start(NULL, &err);
    assert_non_null(bed->mongo);
    bed->dir = bson_strdup_printf("%s/check-mongo-XXXXXX", fts_testbed_dir());
    assert_non_null(mkdtemp(bed->dir));

    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_STATE_REDIS_URL", fts_test_redis_server_url(bed->redis), 1);
    unsetenv("FTSYNC_QUEUE_REDIS_URL");
    setenv("FTSYNC_ES_URL", fts_http_capture_url(bed->es), 1);
    setenv("FTSYNC_ES_INDEX", "checkmongo", 1);
    unsetenv("FTSYNC_ES_ALIAS");
    unsetenv("FTSYNC_ES_DOC_TYPE");
    unsetenv("FTSYNC_ES_INDEX_DEFINITION");
    setenv("FTSYNC_PIPELINE", "checkmongo", 1);
    setenv("FTSYNC_MONGO_URI", fts_test_mongo_double_uri(bed->mongo), 1);
    setenv("FTSYNC_MONGO_DB", "checkmongo", 1);
    setenv("FTSYNC_MONGO_COLLECTION", "items", 1);
    *state = bed;
    return 0;
}

static int teardown(void **state)
{
    bed_t *bed = *state;
    fts_test_mongo_double_destroy(bed->mongo);
    fts_http_capture_destroy(bed->es);
    fts_test_redis_server_destroy(bed->redis);
    if (!getenv("FTSYNC_TEST_KEEP_LOGS")) {
        char *command = bson_strdup_printf("rm -rf '%s'", bed->dir);
        if (system(command) != 0) {
            fprintf(stderr, "cannot remove %s\n", bed->dir);
        }
        bson_free(command);
    }
    bson_free(bed->dir);
    bson_free(bed);
    return 0;
}

/* Runs `ftsync check` with the current environment: its exit status, *output what it printed
 * (stdout and stderr), *elapsed_ms how long it took. */
static int run_check(const bed_t *bed, char **output, uint64_t *elapsed_ms)
{
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/check.log", bed->dir);
    unlink(log_path);
    const char *const args[] = {"check", NULL};
    uint64_t start = now_ms();
    pid_t check = fts_test_spawn(FTSYNC_BINARY, args, log_path);
    assert_true(check > 0);
    int status = fts_test_wait_pid(check, 60000);
    if (elapsed_ms) {
        *elapsed_ms = now_ms() - start;
    }
    *output = read_file(log_path);
    return status;
}

/* Whether output has a line starting with status ("ok" or "FAIL") for check `what` that
 * contains needle (NULL: any). */
static bool has_line(const char *output, const char *status, const char *what, const char *needle)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%-5s %-18s ", status, what);
    for (const char *line = output; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = bson_strndup(line, len);
        bool found =
            strncmp(copy, prefix, strlen(prefix)) == 0 && (!needle || strstr(copy, needle));
        bson_free(copy);
        if (found) {
            return true;
        }
        line = end ? end + 1 : NULL;
    }
    return false;
}

static void fail_point(const char *uri, bson_t *command)
{
    mongoc_client_t *client = mongoc_client_new(uri);
    assert_non_null(client);
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, "admin", command, NULL, NULL, &error);
    if (!ok) {
        fail_msg("configureFailPoint failed: %s", error.message);
    }
    bson_destroy(command);
    mongoc_client_destroy(client);
}

/* The double's URI with user ftsync-nobody and the planted password. */
static char *uri_with_password(const bed_t *bed)
{
    const char *uri = fts_test_mongo_double_uri(bed->mongo);
    assert_int_equal(strncmp(uri, "mongodb://", 10), 0);
    return bson_strdup_printf("mongodb://ftsync-nobody:%s@%s", PLANTED_PASSWORD, uri + 10);
}

static void test_a_replica_set_is_ok(void **state)
{
    bed_t *bed = *state;
    char *output = NULL;
    int status = run_check(bed, &output, NULL);
    if (status != 0 || !has_line(output, "ok", "mongodb", "replica set rs0") ||
        !has_line(output, "ok", "collection", "checkmongo.items") ||
        !has_line(output, "ok", "change stream", "checkmongo.items")) {
        fail_msg("ftsync check (exit %d) did not find the double good:\n%s", status, output);
    }
    bson_free(output);
}

static void test_without_a_mongo_uri_mongodb_is_not_checked(void **state)
{
    bed_t *bed = *state;
    unsetenv("FTSYNC_MONGO_URI");
    unsetenv("FTSYNC_MONGO_DB");
    unsetenv("FTSYNC_MONGO_COLLECTION");
    char *output = NULL;
    int status = run_check(bed, &output, NULL);
    if (status != 0 || strstr(output, "mongodb") || strstr(output, "change stream")) {
        fail_msg("ftsync check (exit %d) checked a MongoDB nobody configured:\n%s", status, output);
    }
    bson_free(output);
}

static void test_a_uri_without_database_is_bad_configuration(void **state)
{
    bed_t *bed = *state;
    unsetenv("FTSYNC_MONGO_DB");
    char *output = NULL;
    int status = run_check(bed, &output, NULL);
    if (status != 2 || !strstr(output, "FTSYNC_MONGO_DB: required") ||
        strstr(output, "FTSYNC_MONGO_COLLECTION")) {
        fail_msg("ftsync check (exit %d) did not refuse the configuration:\n%s", status, output);
    }
    bson_free(output);
}

static void test_refused_credentials_are_permanent(void **state)
{
    bed_t *bed = *state;
    char *uri = uri_with_password(bed);
    setenv("FTSYNC_MONGO_URI", uri, 1);
    char *output = NULL;
    int status = run_check(bed, &output, NULL);
    if (status != 1 || !has_line(output, "FAIL", "mongodb", "permanent (auth): ") ||
        !strstr(output, "FTSYNC_MONGO_URI")) {
        fail_msg("ftsync check (exit %d) did not say the credentials were refused:\n%s", status,
                 output);
    }
    if (strstr(output, PLANTED_PASSWORD)) {
        fail_msg("ftsync check printed the password:\n%s", output);
    }
    bson_free(output);
    bson_free(uri);
}

static void test_a_closed_port_fails_within_seconds(void **state)
{
    bed_t *bed = *state;
    char uri[200];
    snprintf(uri, sizeof uri, "mongodb://ftsync-nobody:%s@127.0.0.1:%d/?replicaSet=rs0",
             PLANTED_PASSWORD, fts_test_free_port());
    setenv("FTSYNC_MONGO_URI", uri, 1);
    char *output = NULL;
    uint64_t elapsed = 0;
    int status = run_check(bed, &output, &elapsed);
    if (status != 1 || !has_line(output, "FAIL", "mongodb", "127.0.0.1") ||
        strstr(output, "permanent")) {
        fail_msg("ftsync check (exit %d) did not say MongoDB is unreachable:\n%s", status, output);
    }
    if (elapsed > CHECK_MAX_MS) {
        fail_msg("ftsync check took %llu ms on a closed port", (unsigned long long)elapsed);
    }
    if (strstr(output, PLANTED_PASSWORD)) {
        fail_msg("ftsync check printed the password:\n%s", output);
    }
    /* The other servers are still checked. */
    assert_true(has_line(output, "ok", "state redis", NULL));
    assert_true(has_line(output, "ok", "index", NULL));
    bson_free(output);
}

static void test_a_server_that_never_answers_fails_within_seconds(void **state)
{
    bed_t *bed = *state;
    /* Accepts the connection, reads, never answers: neither refused nor a MongoDB. */
    fts_error_t err;
    fts_http_capture_t *silent = fts_http_capture_new(&err);
    assert_non_null(silent);
    fts_http_capture_set_stall(silent, true);
    const char *url = fts_http_capture_url(silent);
    assert_int_equal(strncmp(url, "http://", 7), 0);
    char uri[200];
    snprintf(uri, sizeof uri, "mongodb://%.*s/?replicaSet=rs0", (int)strcspn(url + 7, "/"),
             url + 7);
    setenv("FTSYNC_MONGO_URI", uri, 1);
    char *output = NULL;
    uint64_t elapsed = 0;
    int status = run_check(bed, &output, &elapsed);
    fts_http_capture_destroy(silent);
    if (status != 1 || !has_line(output, "FAIL", "mongodb", NULL)) {
        fail_msg("ftsync check (exit %d) did not fail on a silent server:\n%s", status, output);
    }
    if (elapsed > CHECK_MAX_MS) {
        fail_msg("ftsync check took %llu ms on a silent server", (unsigned long long)elapsed);
    }
    bson_free(output);
}

static void test_change_streams_refused_are_permanent(void **state)
{
    bed_t *bed = *state;
    const char *uri = fts_test_mongo_double_uri(bed->mongo);
    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "alwaysOn", "data", "{",
                             "failCommands", "[", BCON_UTF8("aggregate"), "]", "errorCode",
                             BCON_INT32(40573), "}"));
    char *output = NULL;
    int status = run_check(bed, &output, NULL);
    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "off"));
    if (status != 1 ||
        !has_line(output, "FAIL", "change stream", "permanent (not_replica_set): ")) {
        fail_msg("ftsync check (exit %d) did not say change streams are refused:\n%s", status,
                 output);
    }
    bson_free(output);
}

static void test_an_unreadable_collection_is_permanent(void **state)
{
    bed_t *bed = *state;
    const char *uri = fts_test_mongo_double_uri(bed->mongo);
    /* 13 Unauthorized: the user may not read the collection. */
    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "alwaysOn", "data", "{",
                             "failCommands", "[", BCON_UTF8("find"), "]", "errorCode",
                             BCON_INT32(13), "}"));
    char *output = NULL;
    int status = run_check(bed, &output, NULL);
    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "off"));
    if (status != 1 || !has_line(output, "FAIL", "collection", "permanent (auth): ")) {
        fail_msg("ftsync check (exit %d) did not say the collection is refused:\n%s", status,
                 output);
    }
    bson_free(output);
}

int main(void)
{
    mongoc_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_replica_set_is_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_a_mongo_uri_mongodb_is_not_checked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_uri_without_database_is_bad_configuration, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refused_credentials_are_permanent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_closed_port_fails_within_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_server_that_never_answers_fails_within_seconds,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_streams_refused_are_permanent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_unreadable_collection_is_permanent, setup,
                                        teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    mongoc_cleanup();
    return failed;
}
