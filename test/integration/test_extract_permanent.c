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
#include <unistd.h>

#include <bson/bson.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>

#include "admin_probe.h"
#include "extract_harness.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "testbed.h"

/* ---- small helpers ------------------------------------------------------------------------ */

/* How long /readyz may take to tell a permanent failure, or its end. */
#define EXPECT_MS 30000

/* One case: a private Redis and MongoDB double, `ftsync extract` started against them, and the
 * scratch directory holding its log. */
typedef struct {
    fts_test_redis_server_t *redis;
    fts_test_mongo_double_t *mongo;
    char *dir;
    char name[64]; /* the pipeline, unique to the case and this run */
    char log_path[1200];
    pid_t extract;
    int port; /* of extract's admin endpoint */
} extract_case_t;

/* Asserts the counter of server/reason is at least 1 and the gauge of server is want_gauge. */
static void expect_metrics(int port, const char *server, const char *reason, int want_gauge)
{
    char series[160];
    char *text = fts_test_admin_metrics(port);
    snprintf(series, sizeof series, "ftsync_permanent_errors_total{server=\"%s\",reason=\"%s\"}",
             server, reason);
    if (fts_test_metrics_sample(text, series) < 1) {
        fail_msg("%s is not counted: %s", series, text);
    }
    snprintf(series, sizeof series, "ftsync_permanent_error{server=\"%s\"}", server);
    assert_int_equal(fts_test_metrics_sample(text, series), want_gauge);
    bson_free(text);
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

static void assert_running(pid_t pid)
{
    assert_int_equal(kill(pid, 0), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
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

/* Starts the case's servers (redis_args: redis-server's extra arguments, NULL for none) and
 * names its pipeline and directory after label. */
static void case_start(extract_case_t *c, const char *const *redis_args, const char *label)
{
    fts_error_t err;
    memset(c, 0, sizeof *c);
    c->redis = fts_test_redis_server_start(redis_args, &err);
    assert_non_null(c->redis);
    c->mongo = fts_test_mongo_double_start(NULL, &err);
    assert_non_null(c->mongo);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "extract-permanent-%s", label);
    c->dir = fts_test_scratch_dir_new(prefix);
    size_t used = (size_t)snprintf(c->name, sizeof c->name, "xperm");
    for (const char *p = label; *p && used + 1 < sizeof c->name; p++) {
        if (*p != '-') { /* the pipeline name: letters and digits */
            c->name[used++] = *p;
        }
    }
    snprintf(c->name + used, sizeof c->name - used, "%ld", (long)getpid());
    snprintf(c->log_path, sizeof c->log_path, "%s/extract.log", c->dir);
}

/* Starts `ftsync extract` for the case against mongo_uri and redis_url and waits for the port
 * of its admin endpoint. */
static void case_extract_start(extract_case_t *c, const char *mongo_uri, const char *redis_url)
{
    extract_env(c->name, mongo_uri, redis_url);
    c->extract = fts_test_admin_start(FTSYNC_BINARY, "extract", c->log_path, &c->port);
}

/* /readyz answers 503 with needles, /metrics counts server/reason and shows the gauge at 1,
 * and extract keeps running. */
static void expect_permanent(const extract_case_t *c, const char *const *needles,
                             const char *server, const char *reason)
{
    fts_test_admin_expect(c->port, "/readyz", 503, needles, EXPECT_MS, c->log_path);
    expect_metrics(c->port, server, reason, 1);
    assert_running(c->extract);
}

/* The log names the failure with line and never shows secret. */
static void expect_logged_without(const extract_case_t *c, const char *line, const char *secret)
{
    char *log = fts_test_log_read(c->log_path);
    assert_non_null(strstr(log, line));
    assert_null(strstr(log, secret));
    bson_free(log);
}

/* Once fixed: /readyz is 200 and the gauge of server is back to 0, the counter kept. */
static void expect_recovered(const extract_case_t *c, const char *server, const char *reason)
{
    const char *const ready[] = {"\"ready\"", NULL};
    fts_test_admin_expect(c->port, "/readyz", 200, ready, EXPECT_MS, c->log_path);
    expect_metrics(c->port, server, reason, 0);
}

/* Stops extract (it must exit 0 on SIGTERM), the servers, and removes the directory. */
static void case_finish(extract_case_t *c)
{
    kill(c->extract, SIGTERM);
    int status = fts_test_wait_pid(c->extract, 30000);
    if (status != 0) {
        fts_test_log_print_tail(c->log_path);
        fail_msg("ftsync extract stopped with status %d", status);
    }
    fts_test_mongo_double_destroy(c->mongo);
    fts_test_redis_server_destroy(c->redis);
    fts_test_scratch_dir_destroy(c->dir);
}

/* ---- Redis --------------------------------------------------------------------------------- */

static void test_redis_wrong_password_is_reported_until_fixed(void **state)
{
    (void)state;
    extract_case_t c;
    const char *const args[] = {"--requirepass", "right-password", NULL};
    case_start(&c, args, "redis");
    char url[160];
    snprintf(url, sizeof url, "redis://:wrong-password@127.0.0.1:%d/0",
             fts_test_redis_server_port(c.redis));
    case_extract_start(&c, fts_test_mongo_double_uri(c.mongo), url);

    const char *const redis_auth[] = {"extract: permanent (auth)", "FTSYNC_STATE_REDIS_URL", NULL};
    expect_permanent(&c, redis_auth, "redis", "auth");
    expect_logged_without(&c, "permanent (auth): ", "wrong-password");

    /* Fixed: the server now wants the password ftsync has. */
    redis_admin(fts_test_redis_server_port(c.redis), "right-password",
                "CONFIG SET requirepass wrong-password");
    expect_recovered(&c, "redis", "auth");
    case_finish(&c);
}

static void test_redis_wrong_type_is_reported_until_fixed(void **state)
{
    (void)state;
    extract_case_t c;
    case_start(&c, NULL, "wrongtype");
    /* Someone else's list where ftsync keeps its saved token (a hash). */
    char key[160];
    fts_test_key(c.name, "token", key, sizeof key);
    char command[256];
    snprintf(command, sizeof command, "RPUSH %s not-a-hash", key);
    redis_admin(fts_test_redis_server_port(c.redis), NULL, command);
    case_extract_start(&c, fts_test_mongo_double_uri(c.mongo), fts_test_redis_server_url(c.redis));

    const char *const wrong_type[] = {"extract: permanent (wrong_type)", "FTSYNC_PIPELINE", NULL};
    expect_permanent(&c, wrong_type, "redis", "wrong_type");

    snprintf(command, sizeof command, "DEL %s", key);
    redis_admin(fts_test_redis_server_port(c.redis), NULL, command);
    expect_recovered(&c, "redis", "wrong_type");
    case_finish(&c);
}

/* ---- MongoDB ------------------------------------------------------------------------------- */

static void test_mongo_refused_credentials_are_reported(void **state)
{
    (void)state;
    extract_case_t c;
    case_start(&c, NULL, "mongo-auth");
    /* A user the server does not have (the double has none; a real one has no such user). */
    const char *uri = fts_test_mongo_double_uri(c.mongo);
    assert_int_equal(strncmp(uri, "mongodb://", 10), 0);
    char *with_user = bson_strdup_printf("mongodb://ftsync-nobody:wrong-secret@%s", uri + 10);
    case_extract_start(&c, with_user, fts_test_redis_server_url(c.redis));

    const char *const mongo_auth[] = {"extract: permanent (auth)", "FTSYNC_MONGO_URI", NULL};
    expect_permanent(&c, mongo_auth, "mongodb", "auth");
    expect_logged_without(&c, "permanent (auth): MongoDB refused the credentials", "wrong-secret");

    case_finish(&c);
    bson_free(with_user);
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
    extract_case_t c;
    case_start(&c, NULL, "mongo-rs");
    const char *uri = fts_test_mongo_double_uri(c.mongo);
    /* What a standalone mongod answers a $changeStream (40573); on the double and on a real
     * replica set alike, through the failCommand fail point. */
    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "alwaysOn", "data", "{",
                             "failCommands", "[", BCON_UTF8("aggregate"), "]", "errorCode",
                             BCON_INT32(40573), "}"));
    case_extract_start(&c, uri, fts_test_redis_server_url(c.redis));

    const char *const not_rs[] = {"extract: permanent (not_replica_set)", "FTSYNC_MONGO_URI", NULL};
    expect_permanent(&c, not_rs, "mongodb", "not_replica_set");

    fail_point(uri, BCON_NEW("configureFailPoint", "failCommand", "mode", "off"));
    expect_recovered(&c, "mongodb", "not_replica_set");
    case_finish(&c);
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
