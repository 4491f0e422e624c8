/*
 * test_ops_commands.c - the operator's commands as an operator runs them: `ftsync status`,
 * `ftsync dlq`, `ftsync verify` and `ftsync reset-token`'s moves, the real binary as a child
 * process, against the MongoDB replica-set double, a redis-server of its own and the test
 * bed's search engine (FTSYNC_TEST_ES_URL: Elasticsearch 1.5 or a typeless 7+/OpenSearch; the
 * test reads GET / and uses a document type only before 7.0).
 *
 * What it checks (issue 12):
 *   - bad input of every command: unknown options, malformed token JSON, a time in the
 *     future or before the change-stream history, a dead-letter ID that does not exist,
 *     destructive forms without --yes, an unreachable Redis or Elasticsearch: a clear
 *     message, the documented exit status (2 usage, 1 a server), and nothing changed;
 *   - status reports the position, lease, stream, group and index, as text and JSON;
 *   - verify on a pipeline that ran: 0; then a document deleted directly from the index, one
 *     changed there and one added there are reported (exit 4) by id, --repair queues the
 *     fixes, the loaders apply them, and verify exits 0 again; with FTSYNC_ID_FIELD=_id and
 *     with another id field;
 *   - verify exits 0 while the workload keeps writing, once the pipeline has drained;
 *   - a load-stage dead letter (a strict mapping refused a field) and a transform-stage one (a
 *     plugin crashed) are listed and shown, and once their causes are fixed (the field added
 *     to the mapping, the plugin removed), replay puts them back and they reach the index;
 *     replaying again does nothing;
 *   - reset-token --to-time starts extract's change stream at that time.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "assertions.h"

#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>

#include "buffer.h"
#include "extract_harness.h"
#include "load_harness.h"
#include "mongo_double.h"
#include "redis_server.h"
#include "test_time.h"
#include "testbed.h"

#define WAIT_MS 60000
#define MAX_ENV 48

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
    const char *es_url;
    bool typed; /* Elasticsearch before 7.0: a document type */
    mongoc_client_t *client;
    redisContext *rc;
} group_t;

static group_t group;

/* The pipeline process of the running test, killed by the teardown if an assertion failed. */
static pid_t run_pid;

/* ---- environment and processes ----------------------------------------------------------- */

typedef struct {
    char *items[MAX_ENV];
    size_t count;
} env_t;

static void env_set(env_t *env, const char *name, const char *value)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < env->count; i++) {
        if (strncmp(env->items[i], name, len) == 0 && env->items[i][len] == '=') {
            free(env->items[i]);
            env->items[i] = NULL;
            if (value) {
                assert_true(asprintf(&env->items[i], "%s=%s", name, value) > 0);
            } else {
                env->items[i] = env->items[--env->count];
            }
            return;
        }
    }
    if (value) {
        assert_true(env->count < MAX_ENV - 1);
        assert_true(asprintf(&env->items[env->count++], "%s=%s", name, value) > 0);
    }
}

static void env_cleanup(env_t *env)
{
    for (size_t i = 0; i < env->count; i++) {
        free(env->items[i]);
    }
    env->count = 0;
}

/* The settings of one scenario: db, collection "items", pipeline and index named after name. */
static void es(const char *method, const char *path, const char *body, long want);

static void env_init(env_t *env, const char *name, const char *id_field)
{
    memset(env, 0, sizeof *env);
    char path[512];
    env_set(env, "PATH", "/usr/bin:/bin");
    env_set(env, "FTSYNC_ENV_FILE", "/dev/null");
    env_set(env, "FTSYNC_ADMIN_ADDR", "off");
    env_set(env, "FTSYNC_MONGO_URI", fts_test_mongo_double_uri(group.mongo));
    env_set(env, "FTSYNC_MONGO_DB", name);
    env_set(env, "FTSYNC_MONGO_COLLECTION", "items");
    env_set(env, "FTSYNC_STATE_REDIS_URL", fts_test_redis_server_url(group.redis));
    env_set(env, "FTSYNC_ES_URL", group.es_url);
    env_set(env, "FTSYNC_ES_INDEX", name);
    env_set(env, "FTSYNC_PIPELINE", name);
    env_set(env, "FTSYNC_ID_FIELD", id_field);
    env_set(env, "FTSYNC_MONGO_MAX_AWAIT_MS", "100");
    env_set(env, "FTSYNC_LEASE_TTL_MS", "1500");
    env_set(env, "FTSYNC_BULK_MAX_WAIT_MS", "20");
    env_set(env, "FTSYNC_READ_BLOCK_MS", "200");
    env_set(env, "FTSYNC_TRIM_INTERVAL_MS", "600000");
    if (group.typed) {
        env_set(env, "FTSYNC_ES_DOC_TYPE", "doc");
        snprintf(path, sizeof path, "%s/test/fixtures/apps-index-es1.json", FTSYNC_SOURCE_DIR);
    } else {
        snprintf(path, sizeof path, "%s/deploy/index/apps.json", FTSYNC_SOURCE_DIR);
    }
    env_set(env, "FTSYNC_ES_INDEX_DEFINITION", path);
}

/* A scenario's settings, and no index of that name left from an earlier run. */
static void scenario_init(env_t *env, const char *name, const char *id_field)
{
    env_init(env, name, id_field);
    char path[256];
    snprintf(path, sizeof path, "/%s", name);
    es("DELETE", path, NULL, 0);
}

typedef struct {
    int status;
    fts_buffer_t out;
    fts_buffer_t err;
} result_t;

static void slurp(int fd, fts_buffer_t *into)
{
    char chunk[4096];
    ssize_t got;
    lseek(fd, 0, SEEK_SET);
    while ((got = read(fd, chunk, sizeof chunk)) > 0) {
        fts_buffer_append(into, chunk, (size_t)got);
    }
    fts_buffer_append(into, "", 0);
}

static pid_t spawn(const env_t *env, const char *const *args, int out_fd, int err_fd)
{
    const char *argv[24] = {FTSYNC_BINARY};
    size_t argc = 1;
    for (size_t i = 0; args[i]; i++) {
        assert_true(argc < 23);
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    char *envp[MAX_ENV + 1];
    memcpy(envp, env->items, env->count * sizeof *envp);
    envp[env->count] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Nothing outlives the test, even when it dies on a failed assertion. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        execve(FTSYNC_BINARY, (char *const *)argv, envp);
        _exit(127);
    }
    return pid;
}

/* Runs `ftsync <args...>` (NULL-terminated) to completion. */
static void run(result_t *result, const env_t *env, ...)
{
    const char *args[24];
    size_t n = 0;
    va_list ap;
    va_start(ap, env);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        assert_true(n < 23);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    memset(result, 0, sizeof *result);
    char out_path[] = "/tmp/ftsync-ops-out-XXXXXX";
    char err_path[] = "/tmp/ftsync-ops-err-XXXXXX";
    int out_fd = mkstemp(out_path);
    int err_fd = mkstemp(err_path);
    assert_true(out_fd >= 0 && err_fd >= 0);
    pid_t pid = spawn(env, args, out_fd, err_fd);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    result->status = WEXITSTATUS(status);
    slurp(out_fd, &result->out);
    slurp(err_fd, &result->err);
    close(out_fd);
    close(err_fd);
    unlink(out_path);
    unlink(err_path);
}

static void result_cleanup(result_t *result)
{
    fts_buffer_destroy(&result->out);
    fts_buffer_destroy(&result->err);
}

/* Runs the command and expects its exit status and a text in stdout or stderr. */
static void expect(const env_t *env, int status, const char *text, const char *const *args)
{
    result_t r;
    const char *a[12] = {0};
    for (size_t i = 0; args[i] && i < 11; i++) {
        a[i] = args[i];
    }
    run(&r, env, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], NULL);
    if (r.status != status || (text && !strstr(r.out.data, text) && !strstr(r.err.data, text))) {
        fail_msg("ftsync %s %s %s: expected exit %d and \"%s\"; got %d\nstdout:\n%s\nstderr:\n%s",
                 a[0], a[1] ? a[1] : "", a[2] ? a[2] : "", status, text ? text : "", r.status,
                 r.out.data, r.err.data);
    }
    result_cleanup(&r);
}

#define EXPECT(env, status, text, ...)                                                             \
    do {                                                                                           \
        const char *const expect_args_[] = {__VA_ARGS__, NULL};                                    \
        expect(env, status, text, expect_args_);                                                   \
    } while (0)

/* Starts `ftsync run` with its output in a log file. */
static void stop_pipeline(void);

static pid_t start_pipeline(const env_t *env, const char *name)
{
    stop_pipeline(); /* one left by a test that failed before it stopped its own */
    char path[512];
    snprintf(path, sizeof path, "%s/ops-%s-run.log", fts_testbed_dir(), name);
    FILE *log = fopen(path, "w");
    assert_non_null(log);
    const char *const args[] = {"run", NULL};
    run_pid = spawn(env, args, fileno(log), fileno(log));
    fclose(log);
    return run_pid;
}

static void stop_pipeline(void)
{
    if (run_pid > 0) {
        kill(run_pid, SIGTERM);
        int status;
        waitpid(run_pid, &status, 0);
        run_pid = 0;
    }
}

/* ---- servers ------------------------------------------------------------------------------ */

static void es(const char *method, const char *path, const char *body, long want)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", group.es_url, path);
    long status = 0;
    fts_buffer_t out = {0};
    fts_error_t err;
    assert_true(fts_test_http(method, url, body, body ? strlen(body) : 0, &status, &out, &err));
    if (want && status != want) {
        fail_msg("%s %s: HTTP %ld, wanted %ld: %s", method, path, status, want,
                 out.data ? out.data : "");
    }
    fts_buffer_destroy(&out);
}

/* A document's path: /<index>/doc/<id> or /<index>/_doc/<id>. */
static void doc_path(char *out, size_t size, const char *index, const char *id)
{
    snprintf(out, size, "/%s/%s/%s", index, group.typed ? "doc" : "_doc", id);
}

static long long index_count(const char *index)
{
    char path[256];
    snprintf(path, sizeof path, "/%s/_refresh", index);
    es("POST", path, NULL, 0);
    char url[1024];
    snprintf(url, sizeof url, "%s/%s/_count", group.es_url, index);
    long status = 0;
    fts_buffer_t out = {0};
    fts_error_t err;
    assert_true(fts_test_http("GET", url, NULL, 0, &status, &out, &err));
    long long count = -1;
    const char *at = out.data ? strstr(out.data, "\"count\":") : NULL;
    if (status == 200 && at) {
        count = strtoll(at + 8, NULL, 10);
    }
    fts_buffer_destroy(&out);
    return count;
}

static bool doc_found(const char *index, const char *id, const char *needle)
{
    char url[1024];
    char path[256];
    doc_path(path, sizeof path, index, id);
    snprintf(url, sizeof url, "%s%s", group.es_url, path);
    long status = 0;
    fts_buffer_t out = {0};
    fts_error_t err;
    assert_true(fts_test_http("GET", url, NULL, 0, &status, &out, &err));
    bool found = status == 200 && out.data && strstr(out.data, "\"found\":true") &&
                 (!needle || strstr(out.data, needle));
    fts_buffer_destroy(&out);
    return found;
}

/* Waits until the loaders read and acknowledged the whole stream, and the token is saved. */
static void wait_drained(const char *pipeline)
{
    char stream[256];
    fts_test_key(pipeline, "stream", stream, sizeof stream);
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    unsigned quiet = 0;
    while (fts_test_monotonic_ms() < deadline) {
        redisReply *groups = redisCommand(group.rc, "XINFO GROUPS %s", stream);
        bool drained = false;
        if (groups && groups->type == REDIS_REPLY_ARRAY && groups->elements == 1) {
            const redisReply *g = groups->element[0];
            long long pending = -1, lag = -1;
            for (size_t i = 0; i + 1 < g->elements; i += 2) {
                if (strcmp(g->element[i]->str, "pending") == 0) {
                    pending = g->element[i + 1]->integer;
                } else if (strcmp(g->element[i]->str, "lag") == 0 &&
                           g->element[i + 1]->type == REDIS_REPLY_INTEGER) {
                    lag = g->element[i + 1]->integer;
                }
            }
            drained = pending == 0 && lag == 0;
        }
        if (groups) {
            freeReplyObject(groups);
        }
        /* Drained three polls in a row: extract has nothing more to queue either. */
        quiet = drained ? quiet + 1 : 0;
        if (quiet >= 3) {
            return;
        }
        fts_test_sleep_ms(300);
    }
    fail_msg("the loaders did not drain %s in time", stream);
}

static mongoc_collection_t *collection(const char *db)
{
    return mongoc_client_get_collection(group.client, db, "items");
}

static void insert_json(mongoc_collection_t *coll, const char *json)
{
    bson_error_t error;
    bson_t *doc = bson_new_from_json((const uint8_t *)json, -1, &error);
    assert_non_null(doc);
    if (!mongoc_collection_insert_one(coll, doc, NULL, NULL, &error)) {
        fail_msg("insert %s: %s", json, error.message);
    }
    bson_destroy(doc);
}

/* Fills db.items with count documents: _id i (idfield "_id") or an ObjectId _id and
 * sku "sku-<i>" (idfield "sku"). */
static void fill(const char *db, const char *id_field, int count)
{
    mongoc_collection_t *coll = collection(db);
    for (int i = 1; i <= count; i++) {
        char json[256];
        if (strcmp(id_field, "_id") == 0) {
            snprintf(json, sizeof json, "{\"_id\": %d, \"name\": \"app %d\", \"n\": %d}", i, i, i);
        } else {
            snprintf(json, sizeof json, "{\"sku\": \"sku-%d\", \"name\": \"app %d\", \"n\": %d}", i,
                     i, i);
        }
        insert_json(coll, json);
    }
    mongoc_collection_destroy(coll);
}

/* ---- fixture ------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    group.es_url = fts_testbed_es_url();
    group.mongo = fts_test_mongo_double_start(NULL, &err);
    if (!group.mongo) {
        fprintf(stderr, "cannot start the MongoDB double: %s\n", err.message);
        return -1;
    }
    group.redis = fts_test_redis_server_start(NULL, &err);
    if (!group.redis) {
        fprintf(stderr, "cannot start redis-server: %s\n", err.message);
        return -1;
    }
    group.rc = fts_test_redis_connect(fts_test_redis_server_url(group.redis), &err);
    group.client = mongoc_client_new(fts_test_mongo_double_uri(group.mongo));
    char url[512];
    snprintf(url, sizeof url, "%s/", group.es_url);
    long status = 0;
    fts_buffer_t out = {0};
    if (!group.rc || !group.client || !fts_test_http("GET", url, NULL, 0, &status, &out, &err) ||
        status != 200) {
        fprintf(stderr, "cannot reach the servers: %s\n", err.message);
        return -1;
    }
    const char *number = strstr(out.data, "\"number\"");
    const char *digit = number ? strpbrk(number + 8, "0123456789") : NULL;
    group.typed = !strstr(out.data, "opensearch") && digit && atoi(digit) < 7;
    fts_buffer_destroy(&out);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stop_pipeline();
    if (group.rc) {
        redisFree(group.rc);
    }
    mongoc_client_destroy(group.client);
    fts_test_redis_server_destroy(group.redis);
    fts_error_t err;
    fts_error_clear(&err);
    bool stopped = fts_test_mongo_double_stop(group.mongo, &err);
    fts_test_mongo_double_destroy(group.mongo);
    return stopped ? 0 : -1;
}

static char *redis_dump(const char *key)
{
    redisReply *reply = redisCommand(group.rc, "DUMP %s", key);
    assert_non_null(reply);
    char *copy = reply->type == REDIS_REPLY_STRING ? bson_strndup(reply->str, reply->len)
                                                   : bson_strdup("(none)");
    freeReplyObject(reply);
    return copy;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_bad_input_changes_nothing(void **state)
{
    (void)state;
    const char *name = "opsbad";
    env_t env;
    scenario_init(&env, name, "_id");
    char token_key[128], dead_key[128];
    fts_test_key(name, "token", token_key, sizeof token_key);
    fts_test_key(name, "dead", dead_key, sizeof dead_key);
    fill(name, "_id", 3);
    freeReplyObject(redisCommand(group.rc,
                                 "HSET %s token {\"_data\":\"00\"} kind resume "
                                 "cluster_time 1.1 updated_at 1",
                                 token_key));
    freeReplyObject(redisCommand(group.rc,
                                 "XADD %s * event {} reason r stage transform "
                                 "failed_at 1",
                                 dead_key));
    char *token_before = redis_dump(token_key);
    char *dead_before = redis_dump(dead_key);

    /* Unknown options and subcommands: 2. */
    EXPECT(&env, 2, "unknown option", "status", "--colour");
    EXPECT(&env, 2, "unknown subcommand", "dlq", "frobnicate");
    EXPECT(&env, 2, "--bogus", "dlq", "list", "--bogus");
    EXPECT(&env, 2, "unknown option", "verify", "--bogus");
    EXPECT(&env, 2, "unknown option", "reset-token", "--bogus");
    EXPECT(&env, 2, "usage: ftsync dlq", "dlq");

    /* reset-token: malformed token, bad and future times, no --yes, before the history. */
    EXPECT(&env, 2, "not a resume token", "reset-token", "--to-token", "{\"_data\": 12", "--yes");
    EXPECT(&env, 2, "not a resume token", "reset-token", "--to-token", "{\"x\": 1}", "--yes");
    EXPECT(&env, 2, "neither an RFC 3339", "reset-token", "--to-time", "yesterday", "--yes");
    EXPECT(&env, 2, "in the future", "reset-token", "--to-time", "2099-01-01T00:00:00Z", "--yes");
    EXPECT(&env, 2, "add --yes", "reset-token", "--clear");
    EXPECT(&env, 2, "add --yes", "reset-token", "--to-time", "1");
    char old[32];
    snprintf(old, sizeof old, "%lld", (long long)time(NULL) - 7200);
    EXPECT(&env, 2, "no longer in the change-stream history", "reset-token", "--to-time", old,
           "--yes");

    /* dlq: IDs that do not exist or are no IDs, purge without --yes. */
    EXPECT(&env, 2, "no dead letter 1-1", "dlq", "show", "1-1");
    EXPECT(&env, 2, "not a dead-letter ID", "dlq", "show", "abc");
    EXPECT(&env, 2, "no dead letter 1-1", "dlq", "replay", "--id", "1-1");
    EXPECT(&env, 2, "no dead letter 1-1", "dlq", "purge", "--id", "1-1", "--yes");
    EXPECT(&env, 2, "add --yes", "dlq", "purge");

    char *token_after = redis_dump(token_key);
    char *dead_after = redis_dump(dead_key);
    assert_string_equal(token_before, token_after);
    assert_string_equal(dead_before, dead_after);
    bson_free(token_after);
    bson_free(dead_after);

    /* An unreachable Redis: 1, naming it; status still prints what it could read. */
    env_t down;
    env_init(&down, name, "_id");
    char url[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", fts_test_free_port());
    env_set(&down, "FTSYNC_STATE_REDIS_URL", url);
    EXPECT(&down, 1, "redis", "status");
    EXPECT(&down, 1, "elasticsearch", "status", "--json"); /* the ES version is still there */
    EXPECT(&down, 1, "127.0.0.1", "dlq", "list");
    EXPECT(&down, 1, "127.0.0.1", "reset-token", "--show");
    EXPECT(&down, 1, "127.0.0.1", "reset-token", "--clear", "--yes");
    env_cleanup(&down);

    /* An unreachable Elasticsearch: 1; status still shows the stream and the position. */
    env_init(&down, name, "_id");
    snprintf(url, sizeof url, "http://127.0.0.1:%d", fts_test_free_port());
    env_set(&down, "FTSYNC_ES_URL", url);
    env_set(&down, "FTSYNC_ES_CONNECT_TIMEOUT_MS", "1000");
    EXPECT(&down, 1, "kind: resume", "status");
    EXPECT(&down, 1, "elasticsearch", "status");
    EXPECT(&down, 1, "127.0.0.1", "verify");
    env_cleanup(&down);

    token_after = redis_dump(token_key);
    dead_after = redis_dump(dead_key);
    assert_string_equal(token_before, token_after);
    assert_string_equal(dead_before, dead_after);
    bson_free(token_after);
    bson_free(dead_after);
    bson_free(token_before);
    bson_free(dead_before);
    env_cleanup(&env);
}

/* Runs the pipeline over count documents, then checks verify, tampering and --repair. */
static void verify_and_repair(const char *name, const char *id_field)
{
    env_t env;
    scenario_init(&env, name, id_field);
    fill(name, id_field, 300);
    start_pipeline(&env, name);
    wait_drained(name);
    assert_int_equal(index_count(name), 300);

    EXPECT(&env, 0, "the index matches the collection", "verify", "--settle-ms", "300");
    EXPECT(&env, 0, "pending: 0", "status");
    EXPECT(&env, 0, "\"documents\" : 300", "status", "--json");

    /* Tamper with the index directly: one deleted, one changed, one added. */
    char deleted[32], changed[32], path[256];
    bool plain = strcmp(id_field, "_id") == 0;
    snprintf(deleted, sizeof deleted, plain ? "%d" : "sku-%d", 7);
    snprintf(changed, sizeof changed, plain ? "%d" : "sku-%d", 8);
    doc_path(path, sizeof path, name, deleted);
    es("DELETE", path, NULL, 200);
    doc_path(path, sizeof path, name, changed);
    es("PUT", path, "{\"name\":\"tampered\"}", 0);
    doc_path(path, sizeof path, name, "ghost-1");
    es("PUT", path, "{\"name\":\"ghost\"}", 0);

    result_t r;
    run(&r, &env, "verify", "--settle-ms", "300", NULL);
    if (r.status != 4 || !strstr(r.out.data, "missing: 1") || !strstr(r.out.data, "stale: 1") ||
        !strstr(r.out.data, "extra: 1") || !strstr(r.out.data, deleted) ||
        !strstr(r.out.data, changed) || !strstr(r.out.data, "ghost-1")) {
        fail_msg("verify: %d\n%s\n%s", r.status, r.out.data, r.err.data);
    }
    result_cleanup(&r);

    /* --repair reports the same and queues three fixes; the loaders apply them. */
    run(&r, &env, "verify", "--settle-ms", "300", "--repair", NULL);
    if (r.status != 4 || !strstr(r.out.data, "queued 3 fixes")) {
        fail_msg("verify --repair: %d\n%s\n%s", r.status, r.out.data, r.err.data);
    }
    result_cleanup(&r);
    wait_drained(name);
    EXPECT(&env, 0, "the index matches the collection", "verify", "--settle-ms", "300");
    assert_true(doc_found(name, deleted, NULL));
    assert_true(doc_found(name, changed, "app 8"));
    assert_false(doc_found(name, "ghost-1", NULL));

    /* --sample checks a part, and finds nothing either. */
    EXPECT(&env, 0, "a random sample", "verify", "--sample", "50", "--settle-ms", "300");
    stop_pipeline();
    env_cleanup(&env);
}

static void test_verify_repair_id(void **state)
{
    (void)state;
    verify_and_repair("opsverify", "_id");
}

static void test_verify_repair_other_id_field(void **state)
{
    (void)state;
    verify_and_repair("opsverifysku", "sku");
}

static void test_verify_under_steady_writes(void **state)
{
    (void)state;
    const char *name = "opssteady";
    env_t env;
    scenario_init(&env, name, "_id");
    start_pipeline(&env, name);
    /* The workload writes for the whole test, at a steady rate. */
    char uri[256];
    snprintf(uri, sizeof uri, "%s", fts_test_mongo_double_uri(group.mongo));
    pid_t workload = fork();
    assert_true(workload >= 0);
    if (workload == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execl(FTSYNC_WORKLOAD, FTSYNC_WORKLOAD, "--uri", uri, "--db", name, "--collection", "items",
              "--count", "3000", "--rate", "150", "--mix",
              "insert=50,update=30,replace=10,delete=10", "--seed", "5", (char *)NULL);
        _exit(127);
    }
    fts_test_sleep_ms(3000);
    /* Verify while writes go on: what changes meanwhile is not a difference. */
    EXPECT(&env, 0, "the index matches the collection", "verify", "--settle-ms", "2000");
    int status = 0;
    waitpid(workload, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    wait_drained(name);
    EXPECT(&env, 0, "the index matches the collection", "verify", "--settle-ms", "500");
    stop_pipeline();
    env_cleanup(&env);
}

/* The ID of the first dead letter of stage whose fields contain needle (NULL: any), or NULL. */
static char *dead_id(const char *pipeline, const char *stage, const char *needle)
{
    char dead[128];
    fts_test_key(pipeline, "dead", dead, sizeof dead);
    redisReply *range = redisCommand(group.rc, "XRANGE %s - +", dead);
    assert_non_null(range);
    char *id = NULL;
    for (size_t i = 0; i < range->elements && !id; i++) {
        const redisReply *fields = range->element[i]->element[1];
        bool stage_ok = false;
        bool needle_ok = needle == NULL;
        for (size_t j = 0; j + 1 < fields->elements; j += 2) {
            stage_ok |= strcmp(fields->element[j]->str, "stage") == 0 &&
                        strcmp(fields->element[j + 1]->str, stage) == 0;
            needle_ok |= needle && strstr(fields->element[j + 1]->str, needle) != NULL;
        }
        if (stage_ok && needle_ok) {
            id = bson_strdup(range->element[i]->element[0]->str);
        }
    }
    freeReplyObject(range);
    return id;
}

/* Waits until a dead letter of stage containing needle exists; returns its ID. */
static char *wait_dead_letter(const char *pipeline, const char *stage, const char *needle)
{
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    char *id = NULL;
    while (!id && fts_test_monotonic_ms() < deadline) {
        id = dead_id(pipeline, stage, needle);
        if (!id) {
            fts_test_sleep_ms(200);
        }
    }
    if (!id) {
        fail_msg("no %s dead letter with \"%s\" in %s", stage, needle ? needle : "", pipeline);
    }
    return id;
}

static void test_dlq_replay_after_fix(void **state)
{
    (void)state;
    const char *name = "opsdlq";
    env_t env;
    scenario_init(&env, name, "_id");
    /* A strict mapping: a document with a field it does not know is refused (400). It declares
     * the loaders' collection mark (FTSYNC_NS_FIELD), as README.md says a strict mapping must. */
    char definition[512];
    snprintf(definition, sizeof definition, "%s/ops-strict.json", fts_testbed_dir());
    FILE *f = fopen(definition, "w");
    assert_non_null(f);
    fputs(group.typed ? "{\"mappings\":{\"doc\":{\"dynamic\":\"strict\",\"properties\":{\"name\":"
                        "{\"type\":\"string\"},\"poison\":{\"type\":\"boolean\"},\"_ftsync_ns\":"
                        "{\"type\":\"string\",\"index\":\"not_analyzed\"}}}}}"
                      : "{\"mappings\":{\"dynamic\":\"strict\",\"properties\":{\"name\":{\"type\":"
                        "\"text\"},\"poison\":{\"type\":\"boolean\"},\"_ftsync_ns\":{\"type\":"
                        "\"keyword\"}}}}",
          f);
    fclose(f);
    env_set(&env, "FTSYNC_ES_INDEX_DEFINITION", definition);
    /* A plugin that crashes the worker on poison: true (its dead letters: stage transform). */
    env_set(&env, "FTSYNC_TRANSFORM_PLUGIN", FTSYNC_TEST_PLUGIN_POISON);
    env_set(&env, "FTSYNC_WORKER_CRASH_LIMIT", "2");
    mongoc_collection_t *coll = collection(name);
    insert_json(coll, "{\"_id\": 1, \"name\": \"fine\"}");
    /* Read by the snapshot: its dead letter keeps the document, not a change event. */
    insert_json(coll, "{\"_id\": 5, \"name\": \"snapshot poisoned\", \"poison\": true}");
    start_pipeline(&env, name);
    char *snapshot_id = wait_dead_letter(name, "transform", "snapshot poisoned");
    char token_key[128];
    fts_test_key(name, "token", token_key, sizeof token_key);
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    char *kind = NULL;
    while (!(kind = fts_test_redis_hget(group.rc, token_key, "kind")) &&
           fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(200); /* until the snapshot is over and the stream followed */
    }
    assert_non_null(kind);
    free(kind);
    insert_json(coll, "{\"_id\": 2, \"name\": \"coloured\", \"color\": \"red\"}");
    insert_json(coll, "{\"_id\": 3, \"name\": \"poisoned\", \"poison\": true}");
    insert_json(coll, "{\"_id\": 4, \"name\": \"after\"}");
    char *load_id = wait_dead_letter(name, "load", "color");
    char *transform_id = wait_dead_letter(name, "transform", "\"poisoned\"");
    wait_drained(name);
    assert_false(doc_found(name, "2", NULL));
    assert_false(doc_found(name, "3", NULL));
    assert_false(doc_found(name, "5", NULL));

    EXPECT(&env, 0, "dead letter(s)", "dlq", "list");
    /* Both engines say it so (ES 1.5: StrictDynamicMappingException[...]; OpenSearch:
     * strict_dynamic_mapping_exception: ...). */
    EXPECT(&env, 0, "dynamic introduction of [color]", "dlq", "list", "--limit", "20");
    EXPECT(&env, 0, "snapshot", "dlq", "list", "--limit", "20");
    EXPECT(&env, 0, "delivery history:", "dlq", "show", load_id);
    EXPECT(&env, 0, "original event", "dlq", "show", transform_id);
    EXPECT(&env, 0, "operationType", "dlq", "show", transform_id);
    EXPECT(&env, 0, "snapshot poisoned", "dlq", "show", snapshot_id);

    /* Fix the causes: the mapping learns the field; the plugin is removed. */
    char path[256];
    if (group.typed) {
        snprintf(path, sizeof path, "/%s/_mapping/doc", name);
        es("PUT", path, "{\"doc\":{\"properties\":{\"color\":{\"type\":\"string\"}}}}", 200);
    } else {
        snprintf(path, sizeof path, "/%s/_mapping", name);
        es("PUT", path, "{\"properties\":{\"color\":{\"type\":\"text\"}}}", 200);
    }
    env_t fixed;
    env_init(&fixed, name, "_id");
    EXPECT(&fixed, 0, "replayed 1,", "dlq", "replay", "--id", load_id);
    EXPECT(&fixed, 0, "replayed 0, already gone 0, not replayable 0", "dlq", "replay", "--since",
           "2099-01-01T00:00:00Z");
    /* The rest: the transform-stage ones (and any the worker's crash handling took along). */
    EXPECT(&fixed, 0, "not replayable 0, no action 0", "dlq", "replay");
    EXPECT(&fixed, 0, "replayed 0,", "dlq", "replay");
    EXPECT(&fixed, 0, "0 dead letter(s)", "dlq", "list");
    wait_drained(name);
    assert_true(doc_found(name, "1", "fine"));
    assert_true(doc_found(name, "2", "red"));
    assert_true(doc_found(name, "3", "poisoned"));
    assert_true(doc_found(name, "4", "after"));
    /* The snapshot document was read again from MongoDB and indexed. */
    assert_true(doc_found(name, "5", "snapshot poisoned"));
    /* Replaying again is harmless: the dead letter is gone, nothing is queued twice. */
    EXPECT(&fixed, 2, "no dead letter", "dlq", "replay", "--id", load_id);

    /* purge: by id and all. */
    char dead[128];
    fts_test_key(name, "dead", dead, sizeof dead);
    redisReply *added = redisCommand(group.rc, "XADD %s * op index reason r stage load", dead);
    char *purge_id = bson_strdup(added->str);
    freeReplyObject(added);
    EXPECT(&fixed, 0, "purged", "dlq", "purge", "--id", purge_id, "--yes");
    assert_int_equal(fts_test_redis_xlen(group.rc, dead), 0);
    freeReplyObject(redisCommand(group.rc, "XADD %s * op index reason r stage load", dead));
    EXPECT(&fixed, 0, "purged 1 dead letter(s)", "dlq", "purge", "--yes");
    assert_int_equal(fts_test_redis_xlen(group.rc, dead), 0);

    stop_pipeline();
    bson_free(purge_id);
    bson_free(load_id);
    bson_free(transform_id);
    bson_free(snapshot_id);
    mongoc_collection_destroy(coll);
    env_cleanup(&fixed);
    env_cleanup(&env);
}

static void test_reset_token_to_time(void **state)
{
    (void)state;
    const char *name = "opsreset";
    env_t env;
    scenario_init(&env, name, "_id");
    mongoc_collection_t *coll = collection(name);
    insert_json(coll, "{\"_id\": 1, \"name\": \"before\"}");
    fts_test_sleep_ms(1100);
    char at[32];
    snprintf(at, sizeof at, "%lld", (long long)time(NULL));
    fts_test_sleep_ms(1100);
    insert_json(coll, "{\"_id\": 2, \"name\": \"after\"}");

    /* Held lease: refused unless --force. */
    char lease[128], stream[128];
    fts_test_key(name, "lease", lease, sizeof lease);
    fts_test_key(name, "stream", stream, sizeof stream);
    freeReplyObject(redisCommand(group.rc, "SET %s someone:1:abc PX 60000", lease));
    EXPECT(&env, 1, "extractor is active", "reset-token", "--to-time", at, "--yes");
    EXPECT(&env, 0, "kind: start_at", "reset-token", "--to-time", at, "--yes", "--force");
    freeReplyObject(redisCommand(group.rc, "DEL %s", lease));
    EXPECT(&env, 0, "--- before", "reset-token", "--to-time", at, "--yes");
    EXPECT(&env, 0, "kind: start_at", "reset-token", "--show");

    /* Extract starts at that time: the later insert is queued, the earlier one is not. */
    start_pipeline(&env, name);
    wait_drained(name);
    assert_true(doc_found(name, "2", NULL));
    assert_false(doc_found(name, "1", NULL));
    EXPECT(&env, 0, "kind: resume", "reset-token", "--show");
    stop_pipeline();

    /* --to-token with the token extract saved: accepted (it is in the history). */
    char token_key[128];
    fts_test_key(name, "token", token_key, sizeof token_key);
    char *token = fts_test_redis_hget(group.rc, token_key, "token");
    assert_non_null(token);
    EXPECT(&env, 0, "--- after", "reset-token", "--to-token", token, "--yes");
    char *again = fts_test_redis_hget(group.rc, token_key, "token");
    assert_non_null(again);
    assert_string_equal(again, token);
    free(token);
    free(again);
    EXPECT(&env, 0, "cleared", "reset-token", "--clear", "--yes");
    EXPECT(&env, 0, "position: none", "reset-token", "--show");
    mongoc_collection_destroy(coll);
    env_cleanup(&env);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input_changes_nothing),
        cmocka_unit_test(test_verify_repair_id),
        cmocka_unit_test(test_verify_repair_other_id_field),
        cmocka_unit_test(test_dlq_replay_after_fix),
        cmocka_unit_test(test_reset_token_to_time),
        cmocka_unit_test(test_verify_under_steady_writes),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    mongoc_cleanup();
    return failed;
}
