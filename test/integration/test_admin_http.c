/*
 * test_admin_http.c - the admin endpoint of running processes, against the test bed's Redis
 * and Elasticsearch and the MongoDB double:
 *   - `ftsync run` serves one endpoint for the tree: /metrics passes `promtool check metrics`
 *     and its counters equal what the test wrote; a real Prometheus server (Debian's
 *     prometheus package) scrapes it every second and the lag is read back through its query
 *     API; /healthz turns 503 while the double's getMore is held by a blockConnection fail
 *     point, and 200 again once it is off;
 *   - `ftsync load` against an Elasticsearch stand-in that answers every bulk request with 503:
 *     /healthz and /readyz turn 503 with the loader's reason, and 200 again once bulks succeed;
 *   - `ftsync extract` whose transform worker crashes on a poison document again and again:
 *     /healthz says it restarts in a loop, and 200 again once the event is dead-lettered;
 *   - the endpoint is read-only: other methods get 405; /status serves `ftsync status --json`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bson/bson.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>

#include "admin_probe.h"
#include "extract_harness.h"
#include "http_capture.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "test_time.h"
#include "testbed.h"

#define DOCS    50
#define DELETES 10

/* ---- small helpers ------------------------------------------------------------------------ */

/* promtool (Debian's prometheus package) lints a scrape; fails the test with its complaint. */
static void assert_promtool_accepts(const char *dir, const char *text)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/scrape.txt", dir);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs(text, file);
    fclose(file);
    char command[1300];
    snprintf(command, sizeof command, "promtool check metrics < '%s'", path);
    if (system(command) != 0) {
        fail_msg("promtool check metrics refused the scrape:\n%s", text);
    }
}

static void mongo_command(mongoc_client_t *client, const char *json)
{
    bson_error_t error;
    bson_t *command = bson_new_from_json((const uint8_t *)json, -1, &error);
    assert_non_null(command);
    bson_t reply;
    if (!mongoc_client_command_simple(client, "admin", command, NULL, &reply, &error)) {
        fail_msg("%s: %s", json, error.message);
    }
    bson_destroy(&reply);
    bson_destroy(command);
}

/* ---- run: metrics, Prometheus, a stalled change stream ------------------------------------ */

static void
test_run_serves_metrics_prometheus_reads_them_and_a_stall_turns_healthz_red(void **state)
{
    (void)state;
    fts_error_t err;
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(NULL, &err);
    if (!mongo) {
        fail_msg("cannot start the MongoDB double: %s", err.message);
    }
    const char *redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    const char *es_url = fts_testbed_es_url();
    char *dir = fts_test_scratch_dir_new("admin-run");
    char name[64];
    snprintf(name, sizeof name, "admin%ld", (long)getpid());

    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_MONGO_URI", fts_test_mongo_double_uri(mongo), 1);
    setenv("FTSYNC_MONGO_DB", name, 1);
    setenv("FTSYNC_MONGO_COLLECTION", "apps", 1);
    setenv("FTSYNC_MONGO_MAX_AWAIT_MS", "200", 1);
    setenv("FTSYNC_STATE_REDIS_URL", redis_url, 1);
    setenv("FTSYNC_ES_URL", es_url, 1);
    setenv("FTSYNC_ES_INDEX", name, 1);
    if (fts_testbed_doc_type()) { /* Elasticsearch 1.5; OpenSearch is typeless */
        setenv("FTSYNC_ES_DOC_TYPE", fts_testbed_doc_type(), 1);
    } else {
        unsetenv("FTSYNC_ES_DOC_TYPE");
    }
    setenv("FTSYNC_ES_INDEX_DEFINITION", fts_testbed_index_definition(), 1);
    setenv("FTSYNC_PIPELINE", name, 1);
    setenv("FTSYNC_BULK_MAX_WAIT_MS", "50", 1);
    setenv("FTSYNC_ADMIN_ADDR", "127.0.0.1:0", 1);
    setenv("FTSYNC_HEALTH_STALL_MS", "3000", 1);
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/run.log", dir);
    int port;
    pid_t run = fts_test_admin_start(FTSYNC_BINARY, "run", log_path, &port);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    char url[128];
    char *body = NULL;

    /* Read-only. */
    snprintf(url, sizeof url, "%s/metrics", base);
    assert_int_equal(fts_test_http_status("POST", url, NULL), 405);
    assert_int_equal(fts_test_http_status("DELETE", url, NULL), 405);
    snprintf(url, sizeof url, "%s/status", base);
    /* 200 when every server answered, 503 with what could be read otherwise: either way the
     * report of `ftsync status --json`, naming this pipeline. */
    long status_code = fts_test_http_status(NULL, url, &body);
    assert_true(status_code == 200 || status_code == 503);
    assert_non_null(strstr(body, "\"pipeline\""));
    assert_non_null(strstr(body, "\"versions\""));
    assert_null(strstr(body, "not built in this branch"));
    bson_free(body);
    snprintf(url, sizeof url, "%s/nothing", base);
    assert_int_equal(fts_test_http_status(NULL, url, NULL), 404);

    /* Ready once extract follows the stream and load has Elasticsearch and Redis. */
    snprintf(url, sizeof url, "%s/readyz", base);
    if (!fts_test_http_wait_for(url, 200, "\"ready\"", 90000, &body) ||
        !fts_test_log_wait_for(log_path, "following the change stream", 30000)) {
        fts_test_log_print_tail(log_path);
        fail_msg("the tree did not become ready: %s", body);
    }
    bson_free(body);

    /* Write: DOCS inserts, then DELETES deletes. */
    mongoc_client_t *client = mongoc_client_new(fts_test_mongo_double_uri(mongo));
    assert_non_null(client);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, name, "apps");
    for (int i = 0; i < DOCS; i++) {
        bson_t *doc = BCON_NEW("_id", BCON_INT32(i), "name", BCON_UTF8("an app"));
        bson_error_t error;
        if (!mongoc_collection_insert_one(coll, doc, NULL, NULL, &error)) {
            fail_msg("insert: %s", error.message);
        }
        bson_destroy(doc);
    }
    for (int i = 0; i < DELETES; i++) {
        bson_t *filter = BCON_NEW("_id", BCON_INT32(i));
        bson_error_t error;
        if (!mongoc_collection_delete_one(coll, filter, NULL, NULL, &error)) {
            fail_msg("delete: %s", error.message);
        }
        bson_destroy(filter);
    }

    /* The counters reach what was written, and stay there. */
    uint64_t deadline = fts_test_monotonic_ms() + 60000;
    for (;;) {
        body = fts_test_admin_metrics(port);
        /* With two bulks in flight a document's delete can reach the index before its insert,
         * which then meets the newer tombstone: a conflict, and just as settled. */
        double applied = fts_test_metrics_sample(body, "ftsync_items_total{result=\"indexed\"}") +
                         fts_test_metrics_sample(body, "ftsync_items_total{result=\"deleted\"}") +
                         fts_test_metrics_sample(body, "ftsync_items_total{result=\"not_found\"}") +
                         fts_test_metrics_sample(body, "ftsync_items_total{result=\"conflict\"}");
        if (applied >= DOCS + DELETES &&
            fts_test_metrics_sample(body, "ftsync_pending_entries") == 0) {
            break;
        }
        if (fts_test_monotonic_ms() >= deadline) {
            fts_test_log_print_tail(log_path);
            fail_msg("the loader did not apply %d actions in 60 s:\n%s", DOCS + DELETES, body);
        }
        bson_free(body);
        fts_test_sleep_ms(250);
    }
    assert_promtool_accepts(dir, body);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_events_read_total"), DOCS + DELETES);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_snapshot_documents_read_total"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_actions_queued_total{op=\"index\"}"),
                     DOCS);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_actions_queued_total{op=\"delete\"}"),
                     DELETES);
    /* Each index action is indexed, or met its own document's newer delete (a conflict);
     * each delete deleted it, or found it not there yet. */
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_items_total{result=\"indexed\"}") +
                         fts_test_metrics_sample(body, "ftsync_items_total{result=\"conflict\"}"),
                     DOCS);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_items_total{result=\"deleted\"}") +
                         fts_test_metrics_sample(body, "ftsync_items_total{result=\"not_found\"}"),
                     DELETES);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_items_total{result=\"dead_lettered\"}"),
                     0);
    assert_int_equal(
        fts_test_metrics_sample(body, "ftsync_dead_letters_total{stage=\"transform\"}"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_dead_letters_total{stage=\"load\"}"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_worker_restarts_total"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_history_lost_total"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_lease_held"), 1);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_replication_lag_seconds"),
                     0); /* caught up */
    assert_true(fts_test_metrics_sample(body, "ftsync_bulk_requests_total{outcome=\"answered\"}") >=
                1);
    assert_true(fts_test_metrics_sample(body, "ftsync_bulk_duration_seconds_count") >= 1);
    assert_non_null(strstr(body, "ftsync_build_info{version=\"" FTSYNC_VERSION "\"} 1\n"));
    bson_free(body);
    snprintf(url, sizeof url, "%s/healthz", base);
    assert_true(fts_test_http_wait_for(url, 200, "\"ok\"", 5000, NULL));

    /* A real Prometheus scrapes the tree every second; the lag comes back through its API. */
    int prometheus_port = fts_test_free_port();
    assert_true(prometheus_port > 0);
    char config_path[1200];
    snprintf(config_path, sizeof config_path, "%s/prometheus.yml", dir);
    FILE *config = fopen(config_path, "w");
    assert_non_null(config);
    fprintf(config,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: ftsync\n    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n",
            port);
    fclose(config);
    char config_arg[1300], storage_arg[1300], listen_arg[64], prometheus_log[1200];
    snprintf(config_arg, sizeof config_arg, "--config.file=%s", config_path);
    snprintf(storage_arg, sizeof storage_arg, "--storage.tsdb.path=%s/tsdb", dir);
    snprintf(listen_arg, sizeof listen_arg, "--web.listen-address=127.0.0.1:%d", prometheus_port);
    snprintf(prometheus_log, sizeof prometheus_log, "%s/prometheus.log", dir);
    const char *const prometheus_args[] = {config_arg, storage_arg, listen_arg, NULL};
    pid_t prometheus = fts_test_spawn("/usr/bin/prometheus", prometheus_args, prometheus_log);
    assert_true(prometheus > 0);
    snprintf(url, sizeof url,
             "http://127.0.0.1:%d/api/v1/query?query=ftsync_replication_lag_seconds",
             prometheus_port);
    if (!fts_test_http_wait_for(url, 200, "\"__name__\":\"ftsync_replication_lag_seconds\"", 60000,
                                &body)) {
        fts_test_log_print_tail(prometheus_log);
        fail_msg("Prometheus did not return the lag: %s", body);
    }
    assert_non_null(strstr(body, "\"status\":\"success\""));
    assert_non_null(strstr(body, "\"job\":\"ftsync\""));
    assert_non_null(strstr(body, "\"0\"]")); /* the value: caught up */
    bson_free(body);
    snprintf(url, sizeof url,
             "http://127.0.0.1:%d/api/v1/"
             "query?query=ftsync_items_total%%7Bresult%%3D%%22indexed%%22%%7D",
             prometheus_port);
    assert_true(fts_test_http_wait_for(url, 200, "\"50\"]", 10000, NULL));
    kill(prometheus, SIGTERM);
    assert_int_equal(fts_test_wait_pid(prometheus, 30000), 0);

    /* The change stream stalls: every getMore is held 8 s. */
    mongo_command(client, "{\"configureFailPoint\": \"failCommand\", \"mode\": \"alwaysOn\", "
                          "\"data\": {\"failCommands\": [\"getMore\"], \"blockConnection\": true, "
                          "\"blockTimeMS\": 8000}}");
    snprintf(url, sizeof url, "%s/healthz", base);
    if (!fts_test_http_wait_for(url, 503, "MongoDB returned nothing", 15000, &body)) {
        fts_test_log_print_tail(log_path);
        fail_msg("a stalled change stream left /healthz at: %s", body);
    }
    assert_non_null(strstr(body, "\"status\":\"unhealthy\""));
    bson_free(body);
    mongo_command(client, "{\"configureFailPoint\": \"failCommand\", \"mode\": \"off\"}");
    if (!fts_test_http_wait_for(url, 200, "\"ok\"", 20000, &body)) {
        fts_test_log_print_tail(log_path);
        fail_msg("/healthz did not recover after the stall: %s", body);
    }
    bson_free(body);

    kill(run, SIGTERM);
    assert_int_equal(fts_test_wait_pid(run, 30000), 0);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    fts_test_mongo_double_destroy(mongo);
    fts_test_scratch_dir_destroy(dir);
}

/* ---- load: an Elasticsearch that answers every bulk with 503 -------------------------------- */

static void test_load_healthz_turns_red_while_elasticsearch_answers_503(void **state)
{
    (void)state;
    fts_error_t err;
    const char *redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    /* Start-up: GET / (a 7.x cluster), HEAD of the index (it exists), GET of its mapping
     * (marked with this version scheme, README.md "Load"); then every request, the bulks
     * included, gets 503. */
    fts_http_capture_queue_reply(es, 200, "application/json",
                                 "{\"name\":\"stand-in\",\"cluster_name\":\"test\",\"version\":"
                                 "{\"number\":\"7.10.2\"},\"tagline\":\"You Know, for Search\"}");
    fts_http_capture_queue_reply(es, 200, "application/json", "");
    fts_http_capture_queue_reply(es, 200, "application/json",
                                 "{\"stand-in\":{\"mappings\":{\"_meta\":{\"ftsync\":"
                                 "{\"version_scheme\":2}}}}}");
    fts_http_capture_set_reply(es, 503, "application/json",
                               "{\"error\":\"unavailable\",\"status\":503}");

    char *dir = fts_test_scratch_dir_new("admin-load");
    char name[64];
    snprintf(name, sizeof name, "adminload%ld", (long)getpid());
    redisContext *redis = fts_test_redis_connect(redis_url, &err);
    assert_non_null(redis);
    char stream[160];
    fts_test_key(name, "stream", stream, sizeof stream);
    redisReply *reply = redisCommand(redis,
                                     "XADD %s * op index id a1 version 4294967297 ns db.apps ts "
                                     "1.1 origin change body {\"name\":\"x\"}",
                                     stream);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    freeReplyObject(reply);

    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_STATE_REDIS_URL", redis_url, 1);
    setenv("FTSYNC_ES_URL", fts_http_capture_url(es), 1);
    setenv("FTSYNC_ES_INDEX", name, 1);
    unsetenv("FTSYNC_ES_DOC_TYPE");
    unsetenv("FTSYNC_ES_INDEX_DEFINITION");
    setenv("FTSYNC_PIPELINE", name, 1);
    setenv("FTSYNC_ADMIN_ADDR", "127.0.0.1:0", 1);
    setenv("FTSYNC_HEALTH_STALL_MS", "2000", 1);
    setenv("FTSYNC_RETRY_BASE_MS", "100", 1);
    setenv("FTSYNC_RETRY_MAX_MS", "500", 1);
    setenv("FTSYNC_BULK_MAX_WAIT_MS", "10", 1);
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/load.log", dir);
    int port;
    pid_t load = fts_test_admin_start(FTSYNC_BINARY, "load", log_path, &port);
    char url[128];
    char *body = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
    if (!fts_test_http_wait_for(url, 503, "load: 1 entries held and none settled", 20000, &body)) {
        fts_test_log_print_tail(log_path);
        fail_msg("bulks answered 503 left /healthz at: %s", body);
    }
    bson_free(body);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", port);
    assert_true(
        fts_test_http_wait_for(url, 503, "Elasticsearch gives no usable answer", 5000, NULL));
    body = fts_test_admin_metrics(port);
    assert_true(fts_test_metrics_sample(body, "ftsync_bulk_requests_total{outcome=\"failed\"}") >=
                1);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_items_total{result=\"indexed\"}"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_pending_entries"), 1);
    assert_true(fts_test_metrics_sample(body, "ftsync_replication_lag_seconds") >
                1000000); /* ts 1.1: 1970 */
    assert_promtool_accepts(dir, body);
    bson_free(body);

    /* Elasticsearch is back. */
    fts_http_capture_set_reply(es, 200, "application/json",
                               "{\"took\":1,\"errors\":false,\"items\":[{\"index\":{\"_index\":"
                               "\"x\",\"_id\":\"a1\",\"_version\":4294967297,\"result\":"
                               "\"created\",\"status\":201}}]}");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
    if (!fts_test_http_wait_for(url, 200, "\"ok\"", 20000, &body)) {
        fts_test_log_print_tail(log_path);
        fail_msg("/healthz did not recover once Elasticsearch answered: %s", body);
    }
    bson_free(body);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", port);
    assert_true(fts_test_http_wait_for(url, 200, "\"ready\"", 5000, NULL));
    body = fts_test_admin_metrics(port);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_items_total{result=\"indexed\"}"), 1);
    assert_int_equal(
        fts_test_metrics_sample(body, "ftsync_bulk_requests_total{outcome=\"answered\"}"), 1);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_pending_entries"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_replication_lag_seconds"), 0);
    bson_free(body);

    kill(load, SIGTERM);
    assert_int_equal(fts_test_wait_pid(load, 30000), 0);
    redisFree(redis);
    fts_http_capture_destroy(es);
    fts_test_scratch_dir_destroy(dir);
}

/* ---- extract: a transform worker that keeps crashing -------------------------------------- */

static void test_extract_healthz_turns_red_while_the_worker_restarts_in_a_loop(void **state)
{
    (void)state;
    fts_error_t err;
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(NULL, &err);
    if (!mongo) {
        fail_msg("cannot start the MongoDB double: %s", err.message);
    }
    const char *redis_url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    char *dir = fts_test_scratch_dir_new("admin-extract");
    char name[64];
    snprintf(name, sizeof name, "adminpoison%ld", (long)getpid());
    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_MONGO_URI", fts_test_mongo_double_uri(mongo), 1);
    setenv("FTSYNC_MONGO_DB", name, 1);
    setenv("FTSYNC_MONGO_COLLECTION", "apps", 1);
    setenv("FTSYNC_MONGO_MAX_AWAIT_MS", "200", 1);
    setenv("FTSYNC_STATE_REDIS_URL", redis_url, 1);
    setenv("FTSYNC_PIPELINE", name, 1);
    setenv("FTSYNC_ADMIN_ADDR", "127.0.0.1:0", 1);
    /* Long enough that the restart backoff never looks like a stalled stream. */
    setenv("FTSYNC_HEALTH_STALL_MS", "60000", 1);
    setenv("FTSYNC_TRANSFORM_PLUGIN", FTSYNC_TEST_PLUGIN_POISON, 1);
    setenv("FTSYNC_WORKER_CRASH_LIMIT", "6", 1);
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/extract.log", dir);
    int port;
    pid_t extract = fts_test_admin_start(FTSYNC_BINARY, "extract", log_path, &port);
    if (!fts_test_log_wait_for(log_path, "following the change stream", 30000)) {
        fts_test_log_print_tail(log_path);
        fail_msg("extract did not start following the change stream");
    }
    char url[128];
    char *body = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
    assert_true(fts_test_http_wait_for(url, 200, "\"ok\"", 5000, NULL));
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", port);
    assert_true(fts_test_http_wait_for(url, 200, "\"ready\"", 10000, NULL));

    /* A document the plugin crashes on: the worker dies on it until the crash limit
     * dead-letters it. */
    mongoc_client_t *client = mongoc_client_new(fts_test_mongo_double_uri(mongo));
    mongoc_collection_t *coll = mongoc_client_get_collection(client, name, "apps");
    bson_t *doc = BCON_NEW("_id", BCON_INT32(1), "poison", BCON_BOOL(true));
    bson_error_t error;
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
    if (!fts_test_http_wait_for(url, 503, "restarting in a loop", 40000, &body)) {
        fts_test_log_print_tail(log_path);
        fail_msg("a worker crashing again and again left /healthz at: %s", body);
    }
    bson_free(body);
    /* Dead-lettered, then a worker that keeps running ends the loop. */
    if (!fts_test_http_wait_for(url, 200, "\"ok\"", 40000, &body)) {
        fts_test_log_print_tail(log_path);
        fail_msg("/healthz did not recover once the poison event was dead-lettered: %s", body);
    }
    bson_free(body);
    body = fts_test_admin_metrics(port);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_worker_restarts_total"), 6);
    assert_int_equal(
        fts_test_metrics_sample(body, "ftsync_dead_letters_total{stage=\"transform\"}"), 1);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_actions_queued_total{op=\"index\"}"), 0);
    assert_int_equal(fts_test_metrics_sample(body, "ftsync_lease_held"), 1);
    assert_null(strstr(body, "ftsync_items_total")); /* extract serves its own role's metrics */
    assert_promtool_accepts(dir, body);
    bson_free(body);

    kill(extract, SIGTERM);
    assert_int_equal(fts_test_wait_pid(extract, 30000), 0);
    unsetenv("FTSYNC_TRANSFORM_PLUGIN");
    unsetenv("FTSYNC_WORKER_CRASH_LIMIT");
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    fts_test_mongo_double_destroy(mongo);
    fts_test_scratch_dir_destroy(dir);
}

int main(void)
{
    mongoc_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_run_serves_metrics_prometheus_reads_them_and_a_stall_turns_healthz_red),
        cmocka_unit_test(test_load_healthz_turns_red_while_elasticsearch_answers_503),
        cmocka_unit_test(test_extract_healthz_turns_red_while_the_worker_restarts_in_a_loop),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    mongoc_cleanup();
    return failed;
}
