/*
 * test_admin_server.c - the admin endpoint's server (adapters/http/admin_http.c) in this
 * process, on a free loopback port: routes, status codes and JSON reasons, GET/HEAD only, the
 * check and status callbacks, and a port already taken refused with a clear error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <bson/bson.h>
#include <curl/curl.h>

#include "admin_http.h"
#include "buffer.h"
#include "clock.h"
#include "metrics.h"

typedef struct {
    long status;
    char *body;
    char *content_type;
} answer_t;

static size_t on_body(char *data, size_t size, size_t count, void *arg)
{
    fts_buffer_append(arg, data, size * count);
    return size * count;
}

static answer_t request_host(const char *host, int port, const char *method, const char *path)
{
    char url[128];
    snprintf(url, sizeof url, "http://%s:%d%s", host, port, path);
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    fts_buffer_t body = {0};
    fts_buffer_append_str(&body, "");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    answer_t answer = {0};
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
    char *type = NULL;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type);
    answer.content_type = bson_strdup(type ? type : "");
    curl_easy_cleanup(curl);
    answer.body = fts_buffer_steal(&body);
    return answer;
}

static answer_t request(int port, const char *method, const char *path)
{
    return request_host("127.0.0.1", port, method, path);
}

static void answer_cleanup(answer_t *answer)
{
    bson_free(answer->body);
    bson_free(answer->content_type);
}

/* The tree check of a test: fails readiness only, with a fixed reason. */
static bool check_not_ready(void *context, bool ready, char *reason, size_t reason_size)
{
    int *calls = context;
    (*calls)++;
    if (ready) {
        snprintf(reason, reason_size, "run: load is not running");
        return false;
    }
    return true;
}

static bool status_ok(void *context, char **json, fts_error_t *err)
{
    (void)context;
    (void)err;
    *json = bson_strdup("{\"stream\":{\"length\":3}}");
    return true;
}

static bool status_failed(void *context, char **json, fts_error_t *err)
{
    (void)context;
    *json = NULL;
    return fts_error_set(err, FTS_ERROR_REDIS, 1, "Redis does not answer");
}

static void test_routes_codes_and_methods(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("7.7.7");
    fts_metrics_install(metrics);
    fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_INDEXED, 3);
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_RUNNING);
    fts_signal_set(FTS_SIGNAL_LOAD_PROGRESS_MS, fts_clock_monotonic_ms());
    int calls = 0;
    fts_admin_options_t options = {.address = "127.0.0.1:0",
                                   .metrics = metrics,
                                   .roles = FTS_METRICS_ROLE_LOAD,
                                   .stall_ms = 60000,
                                   .check = check_not_ready,
                                   .check_context = &calls};
    fts_error_t err;
    fts_admin_server_t *server = fts_admin_server_start(&options, &err);
    assert_non_null(server);
    int port = fts_admin_server_port(server);
    assert_true(port > 0);

    answer_t a = request(port, "GET", "/metrics");
    assert_int_equal(a.status, 200);
    assert_string_equal(a.content_type, FTS_METRICS_CONTENT_TYPE);
    assert_non_null(strstr(a.body, "ftsync_items_total{result=\"indexed\"} 3\n"));
    assert_non_null(strstr(a.body, "ftsync_build_info{version=\"7.7.7\"} 1\n"));
    assert_null(strstr(a.body, "ftsync_events_read_total")); /* not this role's */
    answer_cleanup(&a);

    a = request(port, "HEAD", "/metrics");
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "");
    answer_cleanup(&a);

    a = request(port, "GET", "/healthz");
    assert_int_equal(a.status, 200);
    assert_string_equal(a.content_type, "application/json");
    assert_string_equal(a.body, "{\"status\":\"ok\"}\n");
    answer_cleanup(&a);

    /* The block says ready; the extra check says not. */
    fts_signal_set(FTS_SIGNAL_LOAD_REDIS_OK, 1);
    fts_signal_set(FTS_SIGNAL_ES_OK, 1);
    a = request(port, "GET", "/readyz");
    assert_int_equal(a.status, 503);
    assert_string_equal(a.body,
                        "{\"status\":\"not ready\",\"reason\":\"run: load is not running\"}\n");
    answer_cleanup(&a);
    assert_int_equal(calls, 2);

    /* The block's own reason comes first, JSON-escaped. */
    fts_metric_set(FTS_METRIC_PENDING, 0, 2);
    fts_signal_set(FTS_SIGNAL_LOAD_PROGRESS_MS, fts_clock_monotonic_ms() - 120000);
    a = request(port, "GET", "/healthz");
    assert_int_equal(a.status, 503);
    assert_non_null(strstr(a.body, "{\"status\":\"unhealthy\",\"reason\":\"load: 2 entries held"));
    answer_cleanup(&a);

    a = request(port, "GET", "/status");
    assert_int_equal(a.status, 501);
    assert_string_equal(a.body,
                        "{\"status\":\"unavailable\",\"reason\":\"not built in this branch\"}\n");
    answer_cleanup(&a);

    static const char *const refused[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        a = request(port, refused[i], "/metrics");
        assert_int_equal(a.status, 405);
        answer_cleanup(&a);
    }
    a = request(port, "GET", "/metrics/../secrets");
    assert_int_equal(a.status, 404);
    answer_cleanup(&a);
    a = request(port, "GET", "/healthz?verbose=1"); /* the query does not change the route */
    assert_int_equal(a.status, 503);
    answer_cleanup(&a);

    /* The same port again: refused, naming the address. */
    char taken[64];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", port);
    fts_admin_options_t second = options;
    second.address = taken;
    assert_null(fts_admin_server_start(&second, &err));
    assert_int_equal(err.domain, FTS_ERROR_SYSTEM);
    assert_non_null(strstr(err.message, taken));

    fts_admin_server_stop(server);
    fts_metrics_destroy(metrics);
}

static void test_status_callback(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("x");
    fts_admin_options_t options = {.address = "[::1]:0",
                                   .metrics = metrics,
                                   .roles = FTS_METRICS_ROLE_ALL,
                                   .stall_ms = 1000,
                                   .status = status_ok};
    fts_error_t err;
    fts_admin_server_t *server = fts_admin_server_start(&options, &err);
    if (!server) {
        /* No IPv6 loopback on this machine: the same on IPv4. */
        options.address = "127.0.0.1:0";
        server = fts_admin_server_start(&options, &err);
    }
    assert_non_null(server);
    bool v6 = strcmp(options.address, "[::1]:0") == 0;
    answer_t a =
        request_host(v6 ? "[::1]" : "127.0.0.1", fts_admin_server_port(server), "GET", "/status");
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "{\"stream\":{\"length\":3}}");
    answer_cleanup(&a);
    fts_admin_server_stop(server);

    options.address = "127.0.0.1:0";
    options.status = status_failed;
    server = fts_admin_server_start(&options, &err);
    assert_non_null(server);
    a = request(fts_admin_server_port(server), "GET", "/status");
    assert_int_equal(a.status, 503);
    assert_string_equal(a.body,
                        "{\"status\":\"unavailable\",\"reason\":\"Redis does not answer\"}\n");
    answer_cleanup(&a);
    fts_admin_server_stop(server);
    fts_metrics_destroy(metrics);
}

static void test_bad_address(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("x");
    fts_admin_options_t options = {.address = "nowhere", .metrics = metrics};
    fts_error_t err;
    assert_null(fts_admin_server_start(&options, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_non_null(strstr(err.message, "FTSYNC_ADMIN_ADDR"));
    fts_admin_server_stop(NULL);
    fts_metrics_destroy(metrics);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_codes_and_methods),
        cmocka_unit_test(test_status_callback),
        cmocka_unit_test(test_bad_address),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
