/*
 * test_extract_permanent.c - `ftsync extract` tells failures that need an operator apart from
 * passing ones (issue 13, item 8), as load and check do (test_permanent_errors.c): it keeps
 * retrying, /readyz answers 503 naming the permanent reason and the setting to fix,
 * /metrics counts it (ftsync_permanent_errors_total{server,reason}) and shows
 * ftsync_permanent_error{server} 1, and once the server answers properly /readyz is 200 again:
 *   - a private redis-server that requires another password than the one given (WRONGPASS at
 *     the connection's AUTH), until the server's password is changed to ftsync's;
 *   - a key ftsync reads (the saved token's hash) holding a list (WRONGTYPE), until deleted;
 *   - a MongoDB URI with credentials the server refuses (the double has no users: 18
 *     AuthenticationFailed, as mongod for a wrong password);
 *   - a MongoDB that refuses change streams as a standalone does (40573, injected with the
 *     failCommand fail point on aggregate), until the fail point is turned off.
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
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>

#include "buffer.h"
#include "extract_harness.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "testbed.h"

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static size_t on_body(char *data, size_t size, size_t count, void *arg)
{
    fts_buffer_append(arg, data, size * count);
    return size * count;
}

/* GET url: the HTTP status (0: no answer) and *body (bson_free). */
static long http_get(const char *url, char **body)
{
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    fts_buffer_t buffer = {0};
    fts_buffer_append_str(&buffer, "");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buffer);
    long status = 0;
    if (curl_easy_perform(curl) == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_easy_cleanup(curl);
    *body = fts_buffer_steal(&buffer);
    return status;
}

/* The value of the sample line that starts with series followed by a space; -1 if none. */
static double sample(const char *text, const char *series)
{
    size_t len = strlen(series);
    for (const char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, series, len) == 0 && line[len] == ' ') {
            return strtod(line + len + 1, NULL);
        }
    }
    return -1;
}

static char *read_log(const char *log_path)
{
    fts_buffer_t log = {0};
    fts_error_t err;
    fts_buffer_append_str(&log, "");
    (void)fts_buffer_read_file(&log, log_path, 16 * 1024 * 1024, &err);
    return fts_buffer_steal(&log);
}

static void print_log_tail(const char *log_path)
{
    char command[1200];
    snprintf(command, sizeof command, "tail -n 40 '%s' >&2", log_path);
    if (system(command) != 0) {
        fprintf(stderr, "(cannot print %s)\n", log_path);
    }
}

static int admin_port_from_log(const char *log_path, unsigned timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        char *log = read_log(log_path);
        const char *found = strstr(log, "admin endpoint listening on");
        const char *port = found ? strstr(found, "port=") : NULL;
        int value = port ? atoi(port + 5) : -1;
        bson_free(log);
        if (value > 0) {
            return value;
        }
        sleep_ms(100);
    }
    return -1;
}

/* Polls http://127.0.0.1:port/path until it answers want and each needle (NULL-ended) is in the
 * body; fails the test with the last body and the log's tail otherwise. */
static void expect(int port, const char *path, long want, const char *const *needles,
                   const char *log_path)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    uint64_t deadline = now_ms() + 30000;
    for (;;) {
        char *body = NULL;
        long status = http_get(url, &body);
        bool ok = status == want;
        for (size_t i = 0; ok && needles && needles[i]; i++) {
            ok = strstr(body, needles[i]) != NULL;
        }
        if (ok) {
            bson_free(body);
            return;
        }
        if (now_ms() >= deadline) {
            print_log_tail(log_path);
            fail_msg("%s answered %ld, not %ld with what was expected: %s", path, status, want,
                     body);
        }
        bson_free(body);
        sleep_ms(200);
    }
}

static char *metrics(int port)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    char *body = NULL;
    assert_int_equal(http_get(url, &body), 200);
    return body;
}

/* Asserts the counter of server/reason is at least 1 and the gauge of server is want_gauge. */
static void expect_metrics(int port, const char *server, const char *reason, int want_gauge)
{
    char series[160];
    char *text = metrics(port);
    snprintf(series, sizeof series, "ftsync_permanent_errors_total{server=\"%s\",reason=\"%s\"}",
             server, reason);
    if (sample(text, series) < 1) {
        fail_msg("%s is not counted: %s", series, text);
    }
    snprintf(series, sizeof series, "ftsync_permanent_error{server=\"%s\"}", server);
    assert_int_equal(sample(text, series), want_gauge);
    bson_free(text);
}

static char *make_dir(const char *prefix)
{
    char *dir = bson_strdup_printf("%s/%s-XXXXXX", fts_testbed_dir(), prefix);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void remove_dir(char *dir)
{
    if (!getenv("FTSYNC_TEST_KEEP_LOGS")) {
        char *command = bson_strdup_printf("rm -rf '%s'", dir);
        if (system(command) != 0) {
            fprintf(stderr, "cannot remove %s\n", dir);
        }
        bson_free(command);
    }
    bson_free(dir);
}

static void extract_env(const char *pipeline, const char *mongo_uri, const char *redis_url)
{
    setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
    setenv("FTSYNC_MONGO_URI", mongo_uri, 1);
    setenv("FTSYNC_MONGO_DB", pipeline, 1);
    setenv("FTSYNC_MONGO_COLLECTION", "items", 1);
    setenv("FTSYNC_STATE_REDIS_URL", redis_url, 1);
    unsetenv("FTSYNC_QUEUE_REDIS_URL");
    setenv("FTSYNC_PIPELINE", pipeline, 1);
    setenv("FTSYNC_MONGO_MAX_AWAIT_MS", "100", 1);
    setenv("FTSYNC_LEASE_TTL_MS", "3000", 1);
    setenv("FTSYNC_ADMIN_ADDR", "127.0.0.1:0", 1);
    setenv("FTSYNC_RETRY_BASE_MS", "100", 1);
    setenv("FTSYNC_RETRY_MAX_MS", "300", 1);
}

static pid_t start_extract(const char *log_path, int *port)
{
    const char *const args[] = {"extract", NULL};
    pid_t extract = fts_test_spawn(FTSYNC_BINARY, args, log_path);
    assert_true(extract > 0);
    *port = admin_port_from_log(log_path, 20000);
    if (*port <= 0) {
        print_log_tail(log_path);
        fail_msg("ftsync extract did not say where its admin endpoint listens");
    }
    return extract;
}

static void assert_running(pid_t pid)
{
    assert_int_equal(kill(pid, 0), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
}

static void stop_extract(pid_t extract, const char *log_path)
{
    kill(extract, SIGTERM);
    int status = fts_test_wait_pid(extract, 30000);
    if (status != 0) {
        print_log_tail(log_path);
        fail_msg("ftsync extract stopped with status %d", status);
    }
}

static void redis_admin(int port, const char *password, const char *command)
{
    redisContext *admin = redisConnect("127.0.0.1", port);
    assert_true(admin && !admin->err);
    if (password) {
        redisReply *auth = redisCommand(admin, "AUTH %s", password);
        assert_non_null(auth);
        assert_int_equal(auth->type, REDIS_REPLY_STATUS);
        freeReplyObject(auth);
    }
    redisReply *reply = redisCommand(admin, command);
    assert_non_null(reply);
    assert_int_not_equal(reply->type, REDIS_REPLY_ERROR);
    freeReplyObject(reply);
    redisFree(admin);
}

/* ---- Redis --------------------------------------------------------------------------------- */

static void test_redis_wrong_password_is_reported_until_fixed(void **state)
{
    (void)state;
    fts_error_t err;
    const char *const args[] = {"--requirepass", "right-password", NULL};
    fts_test_redis_server_t *redis = fts_test_redis_server_start(args, &err);
    assert_non_null(redis);
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(NULL, &err);
    assert_non_null(mongo);

    char *dir = make_dir("extract-permanent-redis");
    char name[64];
    snprintf(name, sizeof name, "xpermredis%ld", (long)getpid());
    char url[160];
    snprintf(url, sizeof url, "redis://:wrong-password@127.0.0.1:%d/0",
             fts_test_redis_server_port(redis));
    extract_env(name, fts_test_mongo_double_uri(mongo), url);
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/extract.log", dir);
    int port;
    pid_t extract = start_extract(log_path, &port);

    const char *const redis_auth[] = {"extract: permanent (auth)", "FTSYNC_STATE_REDIS_URL", NULL};
    expect(port, "/readyz", 503, redis_auth, log_path);
    expect_metrics(port, "redis", "auth", 1);
    assert_running(extract);
    char *log = read_log(log_path);
    assert_non_null(strstr(log, "permanent (auth): "));
    assert_null(strstr(log, "wrong-password"));
    bson_free(log);

    /* Fixed: the server now wants the password ftsync has. */
    redis_admin(fts_test_redis_server_port(redis), "right-password",
                "CONFIG SET requirepass wrong-password");
    const char *const ready[] = {"\"ready\"", NULL};
    expect(port, "/readyz", 200, ready, log_path);
    expect_metrics(port, "redis", "auth", 0);

    stop_extract(extract, log_path);
    fts_test_mongo_double_destroy(mongo);
    fts_test_redis_server_destroy(redis);
    remove_dir(dir);
}

static void test_redis_wrong_type_is_reported_until_fixed(void **state)
{
    (void)state;
    fts_error_t err;
    fts_test_redis_server_t *redis = fts_test_redis_server_start(NULL, &err);
    assert_non_null(redis);
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(NULL, &err);
    assert_non_null(mongo);

    char *dir = make_dir("extract-permanent-wrongtype");
    char name[64];
    snprintf(name, sizeof name, "xpermtype%ld", (long)getpid());
    /* Someone else's list where ftsync keeps its saved token (a hash). */
    char key[160];
    fts_test_key(name, "token", key, sizeof key);
    char command[256];
    snprintf(command, sizeof command, "RPUSH %s not-a-hash", key);
    redis_admin(fts_test_redis_server_port(redis), NULL, command);

    extract_env(name, fts_test_mongo_double_uri(mongo), fts_test_redis_server_url(redis));
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/extract.log", dir);
    int port;
    pid_t extract = start_extract(log_path, &port);

    const char *const wrong_type[] = {"extract: permanent (wrong_type)", "FTSYNC_PIPELINE", NULL};
    expect(port, "/readyz", 503, wrong_type, log_path);
    expect_metrics(port, "redis", "wrong_type", 1);
    assert_running(extract);

    snprintf(command, sizeof command, "DEL %s", key);
    redis_admin(fts_test_redis_server_port(redis), NULL, command);
    const char *const ready[] = {"\"ready\"", NULL};
    expect(port, "/readyz", 200, ready, log_path);
    expect_metrics(port, "redis", "wrong_type", 0);

    stop_extract(extract, log_path);
    fts_test_mongo_double_destroy(mongo);
    fts_test_redis_server_destroy(redis);
    remove_dir(dir);
}

/* ---- MongoDB ------------------------------------------------------------------------------- */

static void test_mongo_refused_credentials_are_reported(void **state)
{
    (void)state;
    fts_error_t err;
    fts_test_redis_server_t *redis = fts_test_redis_server_start(NULL, &err);
    assert_non_null(redis);
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(NULL, &err);
    assert_non_null(mongo);

    char *dir = make_dir("extract-permanent-mongo-auth");
    char name[64];
    snprintf(name, sizeof name, "xpermmongoauth%ld", (long)getpid());
    /* A user the server does not have (the double has none; a real one has no such user). */
    const char *uri = fts_test_mongo_double_uri(mongo);
    assert_int_equal(strncmp(uri, "mongodb://", 10), 0);
    char *with_user = bson_strdup_printf("mongodb://ftsync-nobody:wrong-secret@%s", uri + 10);
    extract_env(name, with_user, fts_test_redis_server_url(redis));
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/extract.log", dir);
    int port;
    pid_t extract = start_extract(log_path, &port);

    const char *const mongo_auth[] = {"extract: permanent (auth)", "FTSYNC_MONGO_URI", NULL};
    expect(port, "/readyz", 503, mongo_auth, log_path);
    expect_metrics(port, "mongodb", "auth", 1);
    assert_running(extract);
    char *log = read_log(log_path);
    assert_non_null(strstr(log, "permanent (auth): MongoDB refused the credentials"));
    assert_null(strstr(log, "wrong-secret"));
    bson_free(log);

    stop_extract(extract, log_path);
    bson_free(with_user);
    fts_test_mongo_double_destroy(mongo);
    fts_test_redis_server_destroy(redis);
    remove_dir(dir);
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

static void test_mongo_not_replica_set_is_reported_until_fixed(void **state)
{
    (void)state;
    fts_error_t err;
    fts_test_redis_server_t *redis = fts_test_redis_server_start(NULL, &err);
    assert_non_null(redis);
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(NULL, &err);
    assert_non_null(mongo);
    const char *uri = fts_test_mongo_double_uri(mongo);
    /* What a standalone mongod answers a $changeStream (40573); on the double and on a real
     * replica set alike, through the failCommand fail point. */
    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "alwaysOn", "data", "{",
                             "failCommands", "[", BCON_UTF8("aggregate"), "]", "errorCode",
                             BCON_INT32(40573), "}"));

    char *dir = make_dir("extract-permanent-mongo-rs");
    char name[64];
    snprintf(name, sizeof name, "xpermmongors%ld", (long)getpid());
    extract_env(name, uri, fts_test_redis_server_url(redis));
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/extract.log", dir);
    int port;
    pid_t extract = start_extract(log_path, &port);

    const char *const not_rs[] = {"extract: permanent (not_replica_set)", "FTSYNC_MONGO_URI", NULL};
    expect(port, "/readyz", 503, not_rs, log_path);
    expect_metrics(port, "mongodb", "not_replica_set", 1);
    assert_running(extract);

    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "off"));
    const char *const ready[] = {"\"ready\"", NULL};
    expect(port, "/readyz", 200, ready, log_path);
    expect_metrics(port, "mongodb", "not_replica_set", 0);

    stop_extract(extract, log_path);
    fts_test_mongo_double_destroy(mongo);
    fts_test_redis_server_destroy(redis);
    remove_dir(dir);
}

int main(void)
{
    mongoc_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_wrong_password_is_reported_until_fixed),
        cmocka_unit_test(test_redis_wrong_type_is_reported_until_fixed),
        cmocka_unit_test(test_mongo_refused_credentials_are_reported),
        cmocka_unit_test(test_mongo_not_replica_set_is_reported_until_fixed),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    mongoc_cleanup();
    return failed;
}
