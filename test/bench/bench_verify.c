/*
 * bench_verify.c - how much memory `ftsync verify` needs as the collection grows: it must
 * stream both sides in pages (cmd/cmd_verify.c), so its peak RSS should stay flat from 100,000
 * to 1,000,000 documents.
 *
 * For each size (FTSYNC_BENCH_VERIFY_SIZES, default "100000 1000000") it fills a collection
 * of the MongoDB double and an index of the test bed's search engine with the same documents
 * (bulk writes, the bodies the transform makes), runs `ftsync verify` as a child, and prints
 * its elapsed time and peak RSS (the child's ru_maxrss from wait4):
 *
 *   bench-verify: documents=1000000 elapsed_ms=... peak_rss_kb=... exit=0
 *
 * With FTSYNC_BENCH_VERIFY_FULL=1 verify runs with --full: every id of the index is also
 * looked up in MongoDB. The double has no indexes, so those lookups scan its collection
 * (quadratic in the size); on MongoDB they use the _id index.
 *
 * It fails only when it cannot run or verify does not exit 0 (the index does match); the
 * figures are printed, never asserted. With FTSYNC_TEST_ES_URL set it uses that search engine
 * instead of starting a test bed. Run it from a release build: under the sanitizers RSS
 * includes their shadow memory.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "buffer.h"
#include "load_harness.h"
#include "mongo_double.h"
#include "test_time.h"

#define MONGO_BATCH 1000
#define ES_BATCH    5000

static int testbed(const char *verb, const char *dir)
{
    char command[2048];
    snprintf(command, sizeof command, "bash %s/test/tools/testbed.sh %s %s >&2", FTSYNC_SOURCE_DIR,
             verb, dir);
    return system(command);
}

static bool read_env(const char *dir, const char *key, char *value, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testbed.env", dir);
    FILE *file = fopen(path, "r");
    if (!file) {
        return false;
    }
    char line[1024];
    size_t key_len = strlen(key);
    bool found = false;
    while (fgets(line, sizeof line, file)) {
        if (strncmp(line, key, key_len) == 0 && line[key_len] == '=') {
            snprintf(value, size, "%s", line + key_len + 1);
            value[strcspn(value, "\n")] = '\0';
            found = true;
        }
    }
    fclose(file);
    return found;
}

static bool http(const char *method, const char *url, const char *body, size_t len, long want)
{
    long status = 0;
    fts_buffer_t out = {0};
    fts_error_t err;
    bool ok =
        fts_test_http(method, url, body, len, &status, &out, &err) && (want == 0 || status == want);
    if (!ok) {
        fprintf(stderr, "bench-verify: %s %s: HTTP %ld %.300s\n", method, url, status,
                out.data ? out.data : err.message);
    }
    fts_buffer_destroy(&out);
    return ok;
}

/* Fills db.items and the index with n documents {_id: i, name, short_description, n}. */
static bool fill(mongoc_client_t *client, const char *es_url, const char *db, const char *index,
                 bool typed, long n)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, "items");
    fts_buffer_t bulk = {0};
    char url[1400];
    snprintf(url, sizeof url, "%s/%s/_bulk", es_url, index);
    bson_t **docs = calloc(MONGO_BATCH, sizeof *docs);
    bool ok = true;
    long pending = 0;
    for (long i = 1; ok && i <= n; i++) {
        char name[64];
        char description[200];
        snprintf(name, sizeof name, "app %ld", i);
        snprintf(description, sizeof description,
                 "An application with the number %ld, described at some length so that a "
                 "document weighs what a real one does.",
                 i);
        bson_t *doc = bson_new();
        BSON_APPEND_INT64(doc, "_id", i);
        BSON_APPEND_UTF8(doc, "name", name);
        BSON_APPEND_UTF8(doc, "short_description", description);
        BSON_APPEND_INT64(doc, "n", i);
        docs[pending++] = doc;
        fts_buffer_appendf(
            &bulk,
            "{\"index\":{\"_id\":\"%ld\"%s}}\n{\"name\":\"%s\",\"short_description\":"
            "\"%s\",\"n\":%ld}\n",
            i, typed ? ",\"_type\":\"doc\"" : "", name, description, i);
        if (pending == MONGO_BATCH || i == n) {
            bson_error_t error;
            if (!mongoc_collection_insert_many(coll, (const bson_t **)docs, (size_t)pending, NULL,
                                               NULL, &error)) {
                fprintf(stderr, "bench-verify: insert: %s\n", error.message);
                ok = false;
            }
            for (long j = 0; j < pending; j++) {
                bson_destroy(docs[j]);
            }
            pending = 0;
        }
        if (ok && (i % ES_BATCH == 0 || i == n)) {
            ok = http("POST", url, bulk.data, bulk.len, 200);
            fts_buffer_clear(&bulk);
        }
    }
    snprintf(url, sizeof url, "%s/%s/_refresh", es_url, index);
    ok = ok && http("POST", url, NULL, 0, 200);
    free(docs);
    fts_buffer_destroy(&bulk);
    mongoc_collection_destroy(coll);
    return ok;
}

static bool bench(mongoc_client_t *client, const char *mongo_uri, const char *es_url, bool typed,
                  long n)
{
    char db[64];
    char index[64];
    snprintf(db, sizeof db, "bench%ld", n);
    snprintf(index, sizeof index, "bench-verify-%ld", n);
    char url[1400];
    snprintf(url, sizeof url, "%s/%s", es_url, index);
    http("DELETE", url, NULL, 0, 0);
    const char *settings = "{\"settings\":{\"number_of_shards\":1,\"number_of_replicas\":0,"
                           "\"refresh_interval\":\"-1\"}}";
    uint64_t started = fts_test_monotonic_ms();
    if (!http("PUT", url, settings, strlen(settings), 200) ||
        !fill(client, es_url, db, index, typed, n)) {
        return false;
    }
    fprintf(stderr, "bench-verify: filled %ld documents in %" PRIu64 " ms\n", n,
            fts_test_monotonic_ms() - started);

    char env_uri[512], env_db[128], env_es[1200], env_index[128];
    snprintf(env_uri, sizeof env_uri, "FTSYNC_MONGO_URI=%s", mongo_uri);
    snprintf(env_db, sizeof env_db, "FTSYNC_MONGO_DB=%s", db);
    snprintf(env_es, sizeof env_es, "FTSYNC_ES_URL=%s", es_url);
    snprintf(env_index, sizeof env_index, "FTSYNC_ES_INDEX=%s", index);
    const char *envp[] = {
        "PATH=/usr/bin:/bin", "FTSYNC_ENV_FILE=/dev/null", env_uri, env_db,
        "FTSYNC_MONGO_COLLECTION=items", env_es, env_index, "FTSYNC_ADMIN_ADDR=off",
        /* The bench writes the index itself, without the loaders' mark. */
        "FTSYNC_NS_FIELD=off", typed ? "FTSYNC_ES_DOC_TYPE=doc" : "FTSYNC_ID_FIELD=_id", NULL};
    const char *full = getenv("FTSYNC_BENCH_VERIFY_FULL");
    bool both_ways = full && strcmp(full, "1") == 0;
    const char *argv[] = {
        FTSYNC_BINARY, "verify", "--settle-ms", "0", "--show", "3", both_ways ? "--full" : NULL,
        NULL};
    started = fts_test_monotonic_ms();
    pid_t pid = fork();
    if (pid < 0) {
        return false;
    }
    if (pid == 0) {
        execve(FTSYNC_BINARY, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    int status = 0;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) != pid) {
        return false;
    }
    uint64_t elapsed = fts_test_monotonic_ms() - started;
    int exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("bench-verify: documents=%ld%s elapsed_ms=%" PRIu64 " peak_rss_kb=%ld exit=%d\n", n,
           both_ways ? " --full" : "", elapsed, usage.ru_maxrss, exit_status);
    fflush(stdout);
    /* Free the double's and the engine's memory for the next size. */
    mongoc_database_t *database = mongoc_client_get_database(client, db);
    mongoc_database_drop(database, NULL);
    mongoc_database_destroy(database);
    http("DELETE", url, NULL, 0, 0);
    return exit_status == 0;
}

int main(void)
{
    char dir[] = "/tmp/ftsync-bench-verify-XXXXXX";
    char es_url[1100] = "";
    bool own_testbed = false;
    const char *given = getenv("FTSYNC_TEST_ES_URL");
    if (given && *given) {
        snprintf(es_url, sizeof es_url, "%s", given);
    } else {
        if (!mkdtemp(dir) || testbed("start", dir) != 0 ||
            !read_env(dir, "FTSYNC_TEST_OPENSEARCH_URL", es_url, sizeof es_url)) {
            fprintf(stderr, "bench-verify: the test bed did not start (logs under %s)\n", dir);
            testbed("stop", dir); /* whatever did start */
            return 1;
        }
        own_testbed = true;
        setenv("FTSYNC_TESTBED_DIR", dir, 1);
    }
    int result = 1;
    mongoc_init();
    fts_error_t err;
    fts_test_mongo_double_t *mongo = fts_test_mongo_double_start(NULL, &err);
    mongoc_client_t *client = mongo ? mongoc_client_new(fts_test_mongo_double_uri(mongo)) : NULL;
    char url[1400];
    snprintf(url, sizeof url, "%s/", es_url);
    long status = 0;
    fts_buffer_t out = {0};
    if (!client || !fts_test_http("GET", url, NULL, 0, &status, &out, &err) || status != 200) {
        fprintf(stderr, "bench-verify: cannot reach the double or the search engine\n");
        goto cleanup;
    }
    const char *number = strstr(out.data, "\"number\"");
    const char *digit = number ? strpbrk(number + 8, "0123456789") : NULL;
    bool typed = !strstr(out.data, "opensearch") && digit && atoi(digit) < 7;
    const char *sizes = getenv("FTSYNC_BENCH_VERIFY_SIZES");
    char *list = strdup(sizes && *sizes ? sizes : "100000 1000000");
    result = 0;
    for (char *save = NULL, *word = strtok_r(list, " ,", &save); word && result == 0;
         word = strtok_r(NULL, " ,", &save)) {
        if (!bench(client, fts_test_mongo_double_uri(mongo), es_url, typed, atol(word))) {
            result = 1;
        }
    }
    free(list);
cleanup:
    fts_buffer_destroy(&out);
    mongoc_client_destroy(client);
    fts_test_mongo_double_destroy(mongo);
    mongoc_cleanup();
    if (own_testbed) {
        testbed("stop", dir);
    }
    return result;
}
