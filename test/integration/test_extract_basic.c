/*
 * test_extract_basic.c - a smoke test of `ftsync extract` and `ftsync reset-token` as an
 * operator runs them: the binary as a child process, against the MongoDB replica-set double
 * and a redis-server of its own.
 *
 * It checks the happy path end to end: a snapshot of what is there, then the change stream's
 * inserts, updates and deletes, in order, with increasing versions (invariant 3), the token
 * saved after them (invariant 1), a clean exit 0 on SIGTERM with the lease released; then
 * reset-token --show, and --clear refused while the lease is held, forced, and done.
 * The chaos, kill -9 and fail-point tests live in the other test_extract_*.c files.
 */
#include <setjmp.h>
#include <signal.h>
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

#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>

#include "mongo_double.h"
#include "redis_server.h"
#include "test_time.h"

/* How long the test waits for the stream to hold what it expects. */
#define WAIT_MS 20000

typedef struct {
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
} group_t;

static group_t group;

/* The extract under test, killed by the teardown if a failed assertion left it running. */
static pid_t extract_pid;

static int group_setup(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
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
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (extract_pid > 0) {
        kill(extract_pid, SIGKILL);
        waitpid(extract_pid, NULL, 0);
    }
    fts_test_redis_server_destroy(group.redis);
    fts_error_t err;
    fts_error_clear(&err);
    bool stopped = fts_test_mongo_double_stop(group.mongo, &err);
    fts_test_mongo_double_destroy(group.mongo);
    return stopped ? 0 : -1;
}

/* Starts `ftsync <args>` with the settings of db/pipeline added to the environment; its
 * stdout goes to out_path when given. */
static pid_t start_ftsync(const char *db, const char *pipeline, const char *const *args,
                          const char *out_path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("FTSYNC_ENV_FILE", "/dev/null", 1);
        setenv("FTSYNC_MONGO_URI", fts_test_mongo_double_uri(group.mongo), 1);
        setenv("FTSYNC_MONGO_DB", db, 1);
        setenv("FTSYNC_MONGO_COLLECTION", "items", 1);
        setenv("FTSYNC_STATE_REDIS_URL", fts_test_redis_server_url(group.redis), 1);
        setenv("FTSYNC_PIPELINE", pipeline, 1);
        setenv("FTSYNC_MONGO_MAX_AWAIT_MS", "100", 1);
        setenv("FTSYNC_LEASE_TTL_MS", "1500", 1);
        if (out_path) {
            FILE *out = freopen(out_path, "w", stdout);
            (void)out;
        }
        const char *argv[8] = {FTSYNC_BINARY};
        for (size_t i = 0; args[i] && i < 6; i++) {
            argv[i + 1] = args[i];
        }
        execv(FTSYNC_BINARY, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status = 0;
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) {
            break;
        }
        if (fts_test_monotonic_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("ftsync did not exit in time");
        }
        fts_test_sleep_ms(20);
    }
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Runs ftsync to the end, returning its exit status and stdout (caller frees). */
static int run_ftsync(const char *db, const char *pipeline, const char *const *args, char **out)
{
    char path[] = "/tmp/ftsync-extract-basic-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    int status = wait_exit(start_ftsync(db, pipeline, args, path));
    FILE *file = fopen(path, "r");
    assert_non_null(file);
    char *text = calloc(1, 65536);
    size_t len = fread(text, 1, 65535, file);
    text[len] = '\0';
    fclose(file);
    unlink(path);
    *out = text;
    return status;
}

static redisContext *redis_connect(void)
{
    redisContext *c = redisConnect("127.0.0.1", fts_test_redis_server_port(group.redis));
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

static long long xlen(redisContext *c, const char *key)
{
    redisReply *reply = redisCommand(c, "XLEN %s", key);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
    long long n = reply->integer;
    freeReplyObject(reply);
    return n;
}

static void wait_xlen(redisContext *c, const char *key, long long want)
{
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    long long got = 0;
    while ((got = xlen(c, key)) < want && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(50);
    }
    if (got < want) {
        fail_msg("%s holds %lld entries, expected at least %lld", key, got, want);
    }
}

/* Waits until the stream's last entry is a delete (the workload's last change). */
static void wait_last_delete(redisContext *c, const char *key)
{
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    for (;;) {
        redisReply *last = redisCommand(c, "XREVRANGE %s + - COUNT 1", key);
        bool done = last->elements == 1 &&
                    strcmp(last->element[0]->element[1]->element[1]->str, "delete") == 0;
        freeReplyObject(last);
        if (done) {
            return;
        }
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("the delete never reached %s", key);
        }
        fts_test_sleep_ms(50);
    }
}

/* The value of field in an entry's field/value array, or NULL. */
static const char *entry_field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        if (strcmp(fields->element[i]->str, name) == 0) {
            return fields->element[i + 1]->str;
        }
    }
    return NULL;
}

static void insert(mongoc_collection_t *coll, int id, const char *name)
{
    bson_error_t error;
    bson_t *doc = BCON_NEW("_id", BCON_INT32(id), "name", BCON_UTF8(name));
    assert_true(mongoc_collection_insert_one(coll, doc, NULL, NULL, &error));
    bson_destroy(doc);
}

static void test_snapshot_changes_stop_and_reset(void **state)
{
    (void)state;
    char db[96];
    char pipeline[96];
    fts_test_mongo_unique_name("extract", db, sizeof db);
    fts_test_mongo_unique_name("p", pipeline, sizeof pipeline);
    char stream[160], token[160], snapshot[160], lease[160];
    snprintf(stream, sizeof stream, "ftsync:{%s}:stream", pipeline);
    snprintf(token, sizeof token, "ftsync:{%s}:token", pipeline);
    snprintf(snapshot, sizeof snapshot, "ftsync:{%s}:snapshot", pipeline);
    snprintf(lease, sizeof lease, "ftsync:{%s}:lease", pipeline);

    mongoc_client_t *client = mongoc_client_new(fts_test_mongo_double_uri(group.mongo));
    assert_non_null(client);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, "items");
    insert(coll, 1, "one");
    insert(coll, 2, "two");
    insert(coll, 3, "three");
    redisContext *c = redis_connect();

    const char *const extract_args[] = {"extract", NULL};
    pid_t pid = start_ftsync(db, pipeline, extract_args, NULL);
    extract_pid = pid;
    /* The snapshot; the stream that follows starts at the snapshot's time, so the write at
     * exactly that time (insert 3) may come once more as a change, with the same version. */
    wait_xlen(c, stream, 3);

    insert(coll, 4, "four");
    bson_error_t error;
    bson_t *filter = BCON_NEW("_id", BCON_INT32(1));
    bson_t *update = BCON_NEW("$set", "{", "name", BCON_UTF8("uno"), "}");
    assert_true(mongoc_collection_update_one(coll, filter, update, NULL, NULL, &error));
    bson_destroy(update);
    bson_destroy(filter);
    filter = BCON_NEW("_id", BCON_INT32(2));
    assert_true(mongoc_collection_delete_one(coll, filter, NULL, NULL, &error));
    bson_destroy(filter);
    wait_last_delete(c, stream);

    /* The token follows the last queued change; wait for its checkpoint (same MULTI). */
    uint64_t deadline = fts_test_monotonic_ms() + WAIT_MS;
    for (;;) {
        redisReply *exists = redisCommand(c, "EXISTS %s", token);
        long long n = exists->integer;
        freeReplyObject(exists);
        if (n == 1 || fts_test_monotonic_ms() > deadline) {
            assert_int_equal(n, 1);
            break;
        }
        fts_test_sleep_ms(50);
    }

    kill(pid, SIGTERM);
    assert_int_equal(wait_exit(pid), 0);
    extract_pid = 0;

    /* The entries: the snapshot and its closing sweep (same version; every first snapshot
     * ends with one), then the changes in order, versions rising. */
    static const struct {
        const char *op, *id, *origin;
    } expected[] = {
        {"index", "1", "snapshot"},  {"index", "2", "snapshot"}, {"index", "3", "snapshot"},
        {"sweep", NULL, "snapshot"}, {"index", "4", "change"},   {"index", "1", "change"},
        {"delete", "2", "change"},
    };
    redisReply *range = redisCommand(c, "XRANGE %s - +", stream);
    assert_non_null(range);
    size_t matched = 0;
    unsigned long long previous = 0;
    unsigned long long snapshot_version = 0;
    const char *updated_body = NULL;
    for (size_t i = 0; i < range->elements; i++) {
        const redisReply *fields = range->element[i]->element[1];
        unsigned long long version = strtoull(entry_field(fields, "version"), NULL, 10);
        if (matched == 4 && version <= snapshot_version) {
            /* The replay of the write at the snapshot's time: same version, harmless. */
            assert_string_equal(entry_field(fields, "origin"), "change");
            continue;
        }
        assert_true(matched < 7);
        assert_string_equal(entry_field(fields, "op"), expected[matched].op);
        if (expected[matched].id) {
            assert_string_equal(entry_field(fields, "id"), expected[matched].id);
        }
        assert_string_equal(entry_field(fields, "origin"), expected[matched].origin);
        if (matched == 0) {
            snapshot_version = version;
        } else if (matched < 4) {
            assert_true(version == snapshot_version);
        } else {
            assert_true(version > previous);
        }
        if (matched == 5) {
            updated_body = entry_field(fields, "body");
        }
        previous = version;
        matched++;
    }
    assert_int_equal(matched, 7);
    assert_non_null(updated_body);
    assert_non_null(strstr(updated_body, "uno"));
    freeReplyObject(range);

    redisReply *kind = redisCommand(c, "HGET %s kind", token);
    assert_string_equal(kind->str, "resume");
    freeReplyObject(kind);
    redisReply *gone = redisCommand(c, "EXISTS %s %s", snapshot, lease);
    assert_int_equal(gone->integer, 0); /* snapshot done; lease released on the clean stop */
    freeReplyObject(gone);

    /* reset-token */
    char *out = NULL;
    const char *const show_args[] = {"reset-token", "--show", NULL};
    assert_int_equal(run_ftsync(db, pipeline, show_args, &out), 0);
    assert_non_null(strstr(out, "position: token"));
    assert_non_null(strstr(out, "kind: resume"));
    free(out);

    redisReply *held = redisCommand(c, "SET %s someone:1:abc PX 60000", lease);
    freeReplyObject(held);
    const char *const clear_args[] = {"reset-token", "--clear", "--yes", NULL};
    assert_int_equal(run_ftsync(db, pipeline, clear_args, &out), 1);
    free(out);
    const char *const force_args[] = {"reset-token", "--clear", "--yes", "--force", NULL};
    assert_int_equal(run_ftsync(db, pipeline, force_args, &out), 0);
    free(out);
    assert_int_equal(run_ftsync(db, pipeline, show_args, &out), 0);
    assert_non_null(strstr(out, "position: none"));
    free(out);

    redisFree(c);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_changes_stop_and_reset),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    mongoc_cleanup();
    return failed;
}
