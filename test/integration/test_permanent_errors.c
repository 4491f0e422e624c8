/*
 * test_permanent_errors.c - failures that need an operator are told apart from passing ones,
 * and a loader whose consumer group vanished recreates it (issue 13, items 8 and 1):
 *   - `ftsync load` against an Elasticsearch stand-in that answers 401, then an HTML page, then
 *     JSON that is not Elasticsearch's: it keeps running and retrying, /readyz answers 503 naming
 *     the permanent reason, /metrics counts it (ftsync_permanent_errors_total{server,reason}) and
 *     shows ftsync_permanent_error{server} 1, `ftsync check` exits 1 with the reason; once the
 *     stand-in answers as Elasticsearch, /readyz is 200 and the gauge 0;
 *   - an Elasticsearch URL served by a TLS server (openssl s_server) whose self-signed
 *     certificate is not trusted: /readyz and `ftsync check` name "permanent (tls)";
 *   - the same with a private redis-server that requires another password than the one given,
 *     until the server's password is changed to the one ftsync has;
 *   - a loader reading a private redis-server that is FLUSHALLed, then restarted without
 *     persistence (each time the group and the stream are gone): new entries are still read
 *     and loaded, each loss is logged and counted (ftsync_queue_data_lost_total{what="group"}).
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
#include <sys/wait.h>
#include <unistd.h>

#include <bson/bson.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>

#include "admin_probe.h"
#include "extract_harness.h"
#include "http_capture.h"
#include "redis_server.h"
#include "test_time.h"
#include "testbed.h"

#define SERVER_INFO                                                                                \
    "{\"name\":\"stand-in\",\"cluster_name\":\"test\",\"version\":{\"number\":\"7.10.2\"},"        \
    "\"tagline\":\"You Know, for Search\"}"
#define UNAUTHORIZED                                                                               \
    "{\"error\":{\"root_cause\":[{\"type\":\"security_exception\",\"reason\":\"unable to "         \
    "authenticate with provided credentials\"}],\"type\":\"security_exception\",\"reason\":"       \
    "\"unable to authenticate with provided credentials\"},\"status\":401}"

/* ---- small helpers ------------------------------------------------------------------------ */

/* How long /readyz may take to tell a permanent failure, or its end. */
#define EXPECT_MS 20000

/* Runs `ftsync check` with the current environment: its exit status, *output its output. */
static int run_check(const char *dir, char **output)
{
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/check.log", dir);
    unlink(log_path);
    const char *const args[] = {"check", NULL};
    pid_t check = fts_test_spawn(FTSYNC_BINARY, args, log_path);
    assert_true(check > 0);
    int status = fts_test_wait_pid(check, 60000);
    *output = fts_test_log_read(log_path);
    return status;
}

static void common_env(const char *name, const char *redis_url, const char *es_url)
{
    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_STATE_REDIS_URL", redis_url, 1);
    unsetenv("FTSYNC_QUEUE_REDIS_URL");
    setenv("FTSYNC_ES_URL", es_url, 1);
    setenv("FTSYNC_ES_INDEX", name, 1);
    unsetenv("FTSYNC_ES_DOC_TYPE");
    unsetenv("FTSYNC_ES_INDEX_DEFINITION");
    setenv("FTSYNC_PIPELINE", name, 1);
    setenv("FTSYNC_ADMIN_ADDR", "127.0.0.1:0", 1);
    setenv("FTSYNC_RETRY_BASE_MS", "100", 1);
    setenv("FTSYNC_RETRY_MAX_MS", "300", 1);
    setenv("FTSYNC_BULK_MAX_WAIT_MS", "10", 1);
}

static void assert_running(pid_t pid)
{
    assert_int_equal(kill(pid, 0), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
}

/* ---- Elasticsearch: 401, an HTML page, JSON that is not Elasticsearch's -------------------- */

static void test_elasticsearch_permanent_errors_are_reported_until_fixed(void **state)
{
    (void)state;
    fts_error_t err;
    fts_test_redis_server_t *redis = fts_test_redis_server_start(NULL, &err);
    assert_non_null(redis);
    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    fts_http_capture_set_reply(es, 401, "application/json", UNAUTHORIZED);

    char *dir = fts_test_scratch_dir_new("permanent-es");
    char name[64];
    snprintf(name, sizeof name, "permes%ld", (long)getpid());
    common_env(name, fts_test_redis_server_url(redis), fts_http_capture_url(es));
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/load.log", dir);
    int port;
    pid_t load = fts_test_admin_start(FTSYNC_BINARY, "load", log_path, &port);

    const char *const auth[] = {"permanent", "auth", "FTSYNC_ES_API_KEY", NULL};
    fts_test_admin_expect(port, "/readyz", 503, auth, EXPECT_MS, log_path);
    char *text = fts_test_admin_metrics(port);
    assert_true(fts_test_metrics_sample(
                    text, "ftsync_permanent_errors_total{server=\"elasticsearch\",reason="
                          "\"auth\"}") >= 1);
    assert_int_equal(
        fts_test_metrics_sample(text, "ftsync_permanent_error{server=\"elasticsearch\"}"), 1);
    assert_int_equal(fts_test_metrics_sample(text, "ftsync_permanent_error{server=\"redis\"}"), 0);
    bson_free(text);
    assert_true(fts_test_log_wait_for(log_path, "permanent (auth): ", 5000));
    char *output = NULL;
    assert_int_equal(run_check(dir, &output), 1);
    if (!strstr(output, "permanent (auth)")) {
        fail_msg("ftsync check did not name the reason: %s", output);
    }
    bson_free(output);
    assert_running(load);

    fts_http_capture_set_reply(es, 200, "text/html",
                               "<html><body><h1>Welcome to nginx!</h1></body></html>");
    const char *const html[] = {"permanent", "not_elasticsearch", "FTSYNC_ES_URL", NULL};
    fts_test_admin_expect(port, "/readyz", 503, html, EXPECT_MS, log_path);
    /* The change of state is logged, though the last error line is only a second old. */
    assert_true(fts_test_log_wait_for(log_path, "permanent (not_elasticsearch): ", 5000));
    assert_running(load);
    fts_http_capture_set_reply(es, 200, "application/json", "{\"status\":\"ok\",\"items\":[]}");
    fts_test_sleep_ms(1000);
    fts_test_admin_expect(port, "/readyz", 503, html, EXPECT_MS, log_path);
    text = fts_test_admin_metrics(port);
    assert_true(fts_test_metrics_sample(
                    text, "ftsync_permanent_errors_total{server=\"elasticsearch\",reason="
                          "\"not_elasticsearch\"}") >= 2);
    bson_free(text);
    assert_int_equal(run_check(dir, &output), 1);
    if (!strstr(output, "permanent (not_elasticsearch)")) {
        fail_msg("ftsync check did not name the reason: %s", output);
    }
    bson_free(output);
    assert_running(load);

    /* Fixed: the stand-in answers as Elasticsearch (GET / and HEAD of the index). */
    fts_http_capture_set_reply(es, 200, "application/json", SERVER_INFO);
    const char *const ready[] = {"\"ready\"", NULL};
    fts_test_admin_expect(port, "/readyz", 200, ready, EXPECT_MS, log_path);
    text = fts_test_admin_metrics(port);
    assert_int_equal(
        fts_test_metrics_sample(text, "ftsync_permanent_error{server=\"elasticsearch\"}"), 0);
    bson_free(text);

    kill(load, SIGTERM);
    assert_int_equal(fts_test_wait_pid(load, 30000), 0);
    fts_http_capture_destroy(es);
    fts_test_redis_server_destroy(redis);
    fts_test_scratch_dir_destroy(dir);
}

/* ---- Elasticsearch behind a certificate nobody vouches for -------------------------------- */

static void test_a_refused_certificate_is_permanent(void **state)
{
    (void)state;
    fts_error_t err;
    fts_test_redis_server_t *redis = fts_test_redis_server_start(NULL, &err);
    assert_non_null(redis);
    char *dir = fts_test_scratch_dir_new("permanent-tls");
    char command[2600];
    snprintf(command, sizeof command,
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s/key.pem' -out '%s/cert.pem' "
             "-days 2 -subj /CN=localhost >/dev/null 2>&1",
             dir, dir);
    assert_int_equal(system(command), 0);
    /* A TLS server whose self-signed certificate FTSYNC_ES_CA_FILE (unset) does not trust. */
    int tls_port = fts_test_free_port();
    assert_true(tls_port > 0);
    char accept[64];
    char cert[1200];
    char key[1200];
    snprintf(accept, sizeof accept, "127.0.0.1:%d", tls_port);
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    const char *const server_args[] = {"s_server", "-accept", accept, "-cert", cert,
                                       "-key",     key,       "-www", NULL};
    char server_log[1200];
    snprintf(server_log, sizeof server_log, "%s/s_server.log", dir);
    pid_t server = fts_test_spawn("/usr/bin/openssl", server_args, server_log);
    assert_true(server > 0);

    char name[64];
    snprintf(name, sizeof name, "permtls%ld", (long)getpid());
    char es_url[128];
    snprintf(es_url, sizeof es_url, "https://127.0.0.1:%d", tls_port);
    common_env(name, fts_test_redis_server_url(redis), es_url);
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/load.log", dir);
    int port;
    pid_t load = fts_test_admin_start(FTSYNC_BINARY, "load", log_path, &port);
    const char *const tls[] = {"permanent (tls)", "FTSYNC_ES_CA_FILE", NULL};
    fts_test_admin_expect(port, "/readyz", 503, tls, EXPECT_MS, log_path);
    char *text = fts_test_admin_metrics(port);
    assert_true(fts_test_metrics_sample(
                    text, "ftsync_permanent_errors_total{server=\"elasticsearch\",reason="
                          "\"tls\"}") >= 1);
    bson_free(text);
    char *output = NULL;
    assert_int_equal(run_check(dir, &output), 1);
    if (!strstr(output, "permanent (tls)")) {
        fail_msg("ftsync check did not name the reason: %s", output);
    }
    bson_free(output);
    assert_running(load);

    kill(load, SIGTERM);
    assert_int_equal(fts_test_wait_pid(load, 30000), 0);
    kill(server, SIGTERM);
    (void)fts_test_wait_pid(server, 10000);
    fts_test_redis_server_destroy(redis);
    fts_test_scratch_dir_destroy(dir);
}

/* ---- Redis: a wrong password ------------------------------------------------------------- */

static void test_redis_wrong_password_is_reported_until_fixed(void **state)
{
    (void)state;
    fts_error_t err;
    const char *const args[] = {"--requirepass", "right-password", NULL};
    fts_test_redis_server_t *redis = fts_test_redis_server_start(args, &err);
    assert_non_null(redis);
    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    fts_http_capture_set_reply(es, 200, "application/json", SERVER_INFO);

    char *dir = fts_test_scratch_dir_new("permanent-redis");
    char name[64];
    snprintf(name, sizeof name, "permredis%ld", (long)getpid());
    char url[160];
    snprintf(url, sizeof url, "redis://:wrong-password@127.0.0.1:%d/0",
             fts_test_redis_server_port(redis));
    common_env(name, url, fts_http_capture_url(es));
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/load.log", dir);
    int port;
    pid_t load = fts_test_admin_start(FTSYNC_BINARY, "load", log_path, &port);

    const char *const redis_auth[] = {"permanent", "auth", "FTSYNC_STATE_REDIS_URL", NULL};
    fts_test_admin_expect(port, "/readyz", 503, redis_auth, EXPECT_MS, log_path);
    char *text = fts_test_admin_metrics(port);
    assert_true(fts_test_metrics_sample(
                    text, "ftsync_permanent_errors_total{server=\"redis\",reason=\"auth\"}") >= 1);
    assert_int_equal(fts_test_metrics_sample(text, "ftsync_permanent_error{server=\"redis\"}"), 1);
    bson_free(text);
    assert_true(fts_test_log_wait_for(log_path, "permanent (auth): ", 5000));
    char *output = NULL;
    assert_int_equal(run_check(dir, &output), 1);
    if (!strstr(output, "permanent (auth)") || strstr(output, "wrong-password")) {
        fail_msg("ftsync check did not name the reason (or showed the password): %s", output);
    }
    bson_free(output);
    assert_running(load);

    /* Fixed: the server now wants the password ftsync has. */
    redisContext *admin = redisConnect("127.0.0.1", fts_test_redis_server_port(redis));
    assert_true(admin && !admin->err);
    redisReply *auth_reply = redisCommand(admin, "AUTH right-password");
    assert_non_null(auth_reply);
    assert_int_equal(auth_reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(auth_reply);
    redisReply *reply = redisCommand(admin, "CONFIG SET requirepass wrong-password");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    redisFree(admin);
    const char *const ready[] = {"\"ready\"", NULL};
    fts_test_admin_expect(port, "/readyz", 200, ready, EXPECT_MS, log_path);
    text = fts_test_admin_metrics(port);
    assert_int_equal(fts_test_metrics_sample(text, "ftsync_permanent_error{server=\"redis\"}"), 0);
    bson_free(text);

    kill(load, SIGTERM);
    assert_int_equal(fts_test_wait_pid(load, 30000), 0);
    fts_http_capture_destroy(es);
    fts_test_redis_server_destroy(redis);
    fts_test_scratch_dir_destroy(dir);
}

/* ---- the consumer group vanishes --------------------------------------------------------- */

static void xadd(redisContext *redis, const char *stream, const char *id)
{
    redisReply *reply = redisCommand(redis,
                                     "XADD %s * op index id %s version 4294967297 ns db.apps ts "
                                     "1.1 origin change body {\"name\":\"x\"}",
                                     stream, id);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    freeReplyObject(reply);
}

static void set_bulk_reply(fts_http_capture_t *es, const char *id)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"took\":1,\"errors\":false,\"items\":[{\"index\":{\"_index\":\"x\",\"_id\":\"%s\","
             "\"_version\":4294967297,\"result\":\"created\",\"status\":201}}]}",
             id);
    fts_http_capture_set_reply(es, 200, "application/json", body);
}

/* Waits for the stand-in to get a bulk request naming id. */
static bool bulk_seen(fts_http_capture_t *es, const char *id, unsigned timeout_ms)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"_id\":\"%s\"", id);
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    do {
        size_t count = fts_http_capture_count(es);
        for (size_t i = 0; i < count; i++) {
            const fts_http_captured_t *request = fts_http_capture_get(es, i);
            if (strstr(request->uri, "_bulk") && request->body && strstr(request->body, needle)) {
                return true;
            }
        }
        fts_test_sleep_ms(100);
    } while (fts_test_monotonic_ms() < deadline);
    return false;
}

static void test_loader_recreates_a_vanished_group(void **state)
{
    (void)state;
    fts_error_t err;
    /* No persistence: a restart loses everything, like FLUSHALL. */
    const char *const no_persistence[] = {"--appendonly", "no", "--save", "", NULL};
    fts_test_redis_server_t *redis = fts_test_redis_server_start(no_persistence, &err);
    assert_non_null(redis);
    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    fts_http_capture_queue_reply(es, 200, "application/json", SERVER_INFO);
    fts_http_capture_queue_reply(es, 200, "application/json", "");
    /* The index's mapping carries this version scheme (README.md, Load). */
    fts_http_capture_queue_reply(
        es, 200, "application/json",
        "{\"stand-in\":{\"mappings\":{\"_meta\":{\"ftsync\":{\"version_scheme\":2}}}}}");
    set_bulk_reply(es, "a1");

    char *dir = fts_test_scratch_dir_new("permanent-group");
    char name[64];
    snprintf(name, sizeof name, "permgroup%ld", (long)getpid());
    common_env(name, fts_test_redis_server_url(redis), fts_http_capture_url(es));
    redisContext *client = fts_test_redis_connect(fts_test_redis_server_url(redis), &err);
    assert_non_null(client);
    char stream[160];
    fts_test_key(name, "stream", stream, sizeof stream);
    xadd(client, stream, "a1");

    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/load.log", dir);
    int port;
    pid_t load = fts_test_admin_start(FTSYNC_BINARY, "load", log_path, &port);
    assert_true(bulk_seen(es, "a1", 20000));
    const char *const ready[] = {"\"ready\"", NULL};
    fts_test_admin_expect(port, "/readyz", 200, ready, EXPECT_MS, log_path);

    /* Redis loses everything: the stream and its group. */
    redisReply *reply = redisCommand(client, "FLUSHALL");
    assert_non_null(reply);
    freeReplyObject(reply);
    fts_test_sleep_ms(500);
    set_bulk_reply(es, "b1");
    xadd(client, stream, "b1");
    if (!bulk_seen(es, "b1", 20000)) {
        fts_test_log_print_tail(log_path);
        fail_msg("the loader read nothing after the group vanished");
    }
    assert_true(fts_test_log_wait_for(log_path, "lost the consumer group", 5000));
    char *text = fts_test_admin_metrics(port);
    assert_int_equal(fts_test_metrics_sample(text, "ftsync_queue_data_lost_total{what=\"group\"}"),
                     1);
    bson_free(text);
    assert_running(load);

    /* Again, by a restart without persistence. */
    redisFree(client);
    assert_true(fts_test_redis_server_restart(redis, &err));
    client = fts_test_redis_connect(fts_test_redis_server_url(redis), &err);
    assert_non_null(client);
    reply = redisCommand(client, "EXISTS %s", stream);
    assert_non_null(reply);
    assert_int_equal(reply->integer, 0); /* the restart did lose the stream */
    freeReplyObject(reply);
    set_bulk_reply(es, "c1");
    xadd(client, stream, "c1");
    if (!bulk_seen(es, "c1", 20000)) {
        fts_test_log_print_tail(log_path);
        fail_msg("the loader read nothing after a restart without persistence");
    }
    text = fts_test_admin_metrics(port);
    assert_int_equal(fts_test_metrics_sample(text, "ftsync_queue_data_lost_total{what=\"group\"}"),
                     2);
    bson_free(text);
    assert_running(load);

    kill(load, SIGTERM);
    assert_int_equal(fts_test_wait_pid(load, 30000), 0);
    redisFree(client);
    fts_http_capture_destroy(es);
    fts_test_redis_server_destroy(redis);
    fts_test_scratch_dir_destroy(dir);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elasticsearch_permanent_errors_are_reported_until_fixed),
        cmocka_unit_test(test_a_refused_certificate_is_permanent),
        cmocka_unit_test(test_redis_wrong_password_is_reported_until_fixed),
        cmocka_unit_test(test_loader_recreates_a_vanished_group),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
