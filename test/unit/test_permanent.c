/*
 * test_permanent.c - telling failures that need an operator from passing ones (core/permanent.h)
 * and what they show: the classification of errors and HTTP answers, the signal and counter a
 * report leaves in the metrics block, the two-label rendering and the /readyz reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

#include "buffer.h"
#include "metrics.h"
#include "permanent.h"

static fts_error_t error_of(fts_error_domain_t domain, int code, const char *message)
{
    fts_error_t err;
    fts_error_set(&err, domain, code, "%s", message);
    return err;
}

static void test_errors_are_classified(void **state)
{
    (void)state;
    fts_error_t err = error_of(FTS_ERROR_REDIS, FTS_ERROR_CODE_AUTH, "WRONGPASS invalid");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_AUTH);
    err = error_of(FTS_ERROR_ES, FTS_ERROR_CODE_AUTH, "GET /: HTTP 401: security_exception");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_AUTH);
    err = error_of(FTS_ERROR_ES, FTS_ERROR_CODE_AUTH,
                   "GET /: HTTP 401: security_exception: authentication expected API key type of "
                   "[rest], but API key [k] has type [cross_cluster]");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_API_KEY);
    err = error_of(FTS_ERROR_ES, FTS_ERROR_CODE_NOT_ELASTICSEARCH, "no version.number");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_NOT_ELASTICSEARCH);
    err = error_of(FTS_ERROR_ES, FTS_ERROR_CODE_TLS, "SSL certificate problem");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_TLS);
    /* Redis: someone else's key under ftsync's names; MongoDB (extract). */
    err = error_of(FTS_ERROR_REDIS, FTS_ERROR_CODE_SERVER,
                   "Redis at h:1 refused the checkpoint: WRONGTYPE Operation against a key "
                   "holding the wrong kind of value");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_WRONG_TYPE);
    err = error_of(FTS_ERROR_MONGO, FTS_ERROR_CODE_AUTH, "Authentication failed.");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_AUTH);
    err = error_of(FTS_ERROR_MONGO, FTS_ERROR_CODE_NOT_REPLICA_SET, "server error 40573");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_NOT_REPLICA_SET);
    err = error_of(FTS_ERROR_ES, FTS_ERROR_CODE_NOT_REPLICA_SET, "not Mongo's code here");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_NONE);
    err = error_of(FTS_ERROR_MONGO, FTS_ERROR_CODE_SERVER, "WRONGTYPE in a document");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_NONE);
    /* Transient. */
    const int transient[] = {FTS_ERROR_CODE_CONNECT, FTS_ERROR_CODE_TIMEOUT, FTS_ERROR_CODE_SERVER,
                             FTS_ERROR_CODE_PROTOCOL, FTS_ERROR_CODE_IO};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++) {
        err = error_of(FTS_ERROR_ES, transient[i], "connection refused");
        assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_NONE);
        err = error_of(FTS_ERROR_REDIS, transient[i], "LOADING");
        assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_NONE);
    }
    err = error_of(FTS_ERROR_CONFIG, FTS_ERROR_CODE_AUTH, "not a server's answer");
    assert_int_equal(fts_permanent_classify(&err), FTS_PERMANENT_NONE);
    assert_int_equal(fts_permanent_classify(NULL), FTS_PERMANENT_NONE);
}

static void test_http_answers_are_classified(void **state)
{
    (void)state;
    const char *denied = "{\"error\":{\"type\":\"security_exception\"},\"status\":403}";
    assert_int_equal(fts_permanent_classify_http(401, denied, strlen(denied)), FTS_PERMANENT_AUTH);
    assert_int_equal(fts_permanent_classify_http(403, denied, strlen(denied)), FTS_PERMANENT_AUTH);
    const char *key = "{\"error\":{\"reason\":\"authentication expected API key type of [rest], "
                      "but API key [x] has type [cross_cluster]\"},\"status\":401}";
    assert_int_equal(fts_permanent_classify_http(401, key, strlen(key)), FTS_PERMANENT_API_KEY);
    const char *html = "\n<html><body>Welcome to nginx</body></html>";
    assert_int_equal(fts_permanent_classify_http(200, html, strlen(html)),
                     FTS_PERMANENT_NOT_ELASTICSEARCH);
    assert_int_equal(fts_permanent_classify_http(200, "", 0), FTS_PERMANENT_NOT_ELASTICSEARCH);
    const char *bulk = " {\"took\":1,\"errors\":false,\"items\":[]}";
    assert_int_equal(fts_permanent_classify_http(200, bulk, strlen(bulk)), FTS_PERMANENT_NONE);
    /* Not NUL-terminated: only len bytes are read. */
    char cut[4] = {'<', 'h', 't', 'm'};
    assert_int_equal(fts_permanent_classify_http(200, cut, sizeof cut),
                     FTS_PERMANENT_NOT_ELASTICSEARCH);
    const long transient[] = {429, 500, 502, 503, 504, 404, 0};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++) {
        assert_int_equal(fts_permanent_classify_http(transient[i], html, strlen(html)),
                         FTS_PERMANENT_NONE);
    }
}

static void test_reports_show_in_metrics_and_readiness(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("x");
    fts_metrics_install(metrics);
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_RUNNING);
    fts_signal_set(FTS_SIGNAL_LOAD_REDIS_OK, 1);
    fts_signal_set(FTS_SIGNAL_ES_OK, 1);
    char reason[512];
    assert_true(fts_ready_check(metrics, FTS_METRICS_ROLE_LOAD, reason, sizeof reason));

    fts_permanent_report(FTS_SERVER_ELASTICSEARCH, FTS_PERMANENT_AUTH, "HTTP 401");
    fts_permanent_report(FTS_SERVER_ELASTICSEARCH, FTS_PERMANENT_AUTH, "HTTP 401");
    /* A transient failure neither starts nor ends the state. */
    fts_error_t refused = error_of(FTS_ERROR_ES, FTS_ERROR_CODE_CONNECT, "refused");
    fts_permanent_report_error(FTS_SERVER_ELASTICSEARCH, &refused);
    assert_false(fts_ready_check(metrics, FTS_METRICS_ROLE_LOAD, reason, sizeof reason));
    assert_non_null(
        strstr(reason, "load: permanent (auth): Elasticsearch refused the credentials"));
    assert_non_null(strstr(reason, "FTSYNC_ES_API_KEY"));
    assert_int_equal(
        fts_metrics_counter(metrics, FTS_METRIC_PERMANENT_ERRORS,
                            fts_permanent_label(FTS_SERVER_ELASTICSEARCH, FTS_PERMANENT_AUTH)),
        2);

    fts_buffer_t out = {0};
    fts_metrics_render(metrics, FTS_METRICS_ROLE_LOAD, 0, &out);
    fts_buffer_append_char(&out, '\0');
    assert_non_null(strstr(out.data, "ftsync_permanent_errors_total{server=\"elasticsearch\","
                                     "reason=\"auth\"} 2\n"));
    assert_non_null(strstr(out.data, "ftsync_permanent_errors_total{server=\"redis\","
                                     "reason=\"tls\"} 0\n"));
    assert_non_null(strstr(out.data, "ftsync_permanent_error{server=\"elasticsearch\"} 1\n"));
    assert_non_null(strstr(out.data, "ftsync_permanent_error{server=\"redis\"} 0\n"));
    assert_non_null(strstr(out.data, "ftsync_queue_data_lost_total{what=\"group\"} 0\n"));
    fts_buffer_destroy(&out);

    /* Fixed: the next proper answer ends it. */
    fts_permanent_report(FTS_SERVER_ELASTICSEARCH, FTS_PERMANENT_NONE, NULL);
    assert_true(fts_ready_check(metrics, FTS_METRICS_ROLE_LOAD, reason, sizeof reason));
    fts_buffer_t after = {0};
    fts_metrics_render(metrics, FTS_METRICS_ROLE_ALL, 0, &after);
    fts_buffer_append_char(&after, '\0');
    assert_non_null(strstr(after.data, "ftsync_permanent_error{server=\"elasticsearch\"} 0\n"));
    fts_buffer_destroy(&after);

    /* A permanent failure comes before "starting" in the reason. */
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_STARTING);
    fts_permanent_report(FTS_SERVER_REDIS, FTS_PERMANENT_AUTH, "WRONGPASS");
    assert_false(fts_ready_check(metrics, FTS_METRICS_ROLE_LOAD, reason, sizeof reason));
    assert_non_null(strstr(reason, "permanent (auth): Redis refused"));
    fts_permanent_report(FTS_SERVER_REDIS, FTS_PERMANENT_NONE, NULL);

    /* MongoDB's reason names its setting. */
    fts_permanent_report(FTS_SERVER_MONGODB, FTS_PERMANENT_NOT_REPLICA_SET, "40573");
    assert_false(fts_ready_check(metrics, FTS_METRICS_ROLE_EXTRACT, reason, sizeof reason));
    assert_non_null(strstr(reason, "extract: permanent (not_replica_set): MongoDB"));
    assert_non_null(strstr(reason, "FTSYNC_MONGO_URI"));
    fts_permanent_report(FTS_SERVER_MONGODB, FTS_PERMANENT_NONE, NULL);
    fts_metrics_destroy(metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_are_classified),
        cmocka_unit_test(test_http_answers_are_classified),
        cmocka_unit_test(test_reports_show_in_metrics_and_readiness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
