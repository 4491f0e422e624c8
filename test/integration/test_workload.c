/*
 * test_workload.c - the workload generator (test/tools/workload.c) is repeatable and its report
 * tells the truth.
 *
 * Other tests compare what ftsync indexed with the generator's report, so two promises matter:
 * the same seed and options write the same changes (the same report, byte for byte), and the
 * report is exactly what the collection holds afterwards (compared with a `find`, field order
 * aside). Runs against the MongoDB double, or the deployment FTSYNC_TEST_MONGO_URI names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "mongo_double.h"
#include "sorted_bson.h"
#include "testbed.h"

#ifndef FTSYNC_WORKLOAD
#define FTSYNC_WORKLOAD "ftsync-workload"
#endif

/* Operations per run: enough for every kind of change to happen many times. */
#define RUN_COUNT "800"

typedef struct {
    fts_test_mongo_double_t *server;
    mongoc_client_t *client;
    char dir[1024]; /* scratch: reports and stdout of the runs */
    char dbs[8][96];
    size_t db_count;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    fts_error_t err;
    fts_error_clear(&err);
    f->server = fts_test_mongo_double_start(NULL, &err);
    if (!f->server) {
        fprintf(stderr, "cannot start the MongoDB double: %s\n", err.message);
        free(f);
        return -1;
    }
    f->client = mongoc_client_new(fts_test_mongo_double_uri(f->server));
    mongoc_client_set_error_api(f->client, MONGOC_ERROR_API_VERSION_2);
    snprintf(f->dir, sizeof f->dir, "%s/workload-%d-XXXXXX", fts_testbed_dir(), (int)getpid());
    if (!mkdtemp(f->dir)) {
        fprintf(stderr, "cannot create %s: %s\n", f->dir, strerror(errno));
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    int result = 0;
    if (fts_test_mongo_double_is_external(f->server)) {
        for (size_t i = 0; i < f->db_count; i++) {
            mongoc_database_t *db = mongoc_client_get_database(f->client, f->dbs[i]);
            mongoc_database_drop(db, NULL);
            mongoc_database_destroy(db);
        }
    }
    mongoc_client_destroy(f->client);
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_mongo_double_stop(f->server, &err)) {
        fprintf(stderr, "the MongoDB double did not stop cleanly: %s\n", err.message);
        result = -1;
    }
    fts_test_mongo_double_destroy(f->server);
    char command[1200];
    snprintf(command, sizeof command, "rm -rf '%s'", f->dir);
    if (system(command) != 0) {
        fprintf(stderr, "could not remove %s\n", f->dir);
    }
    free(f);
    return result;
}

static const char *new_db(fixture_t *f)
{
    assert_true(f->db_count < 8);
    return fts_test_mongo_unique_name("workload", f->dbs[f->db_count++], sizeof f->dbs[0]);
}

/* Runs ftsync-workload with args (NULL-terminated, after --uri) and its stdout in out_path;
 * returns its exit status, or -1 if it died of a signal. */
static int run_workload(fixture_t *f, const char *out_path, const char *const *args)
{
    const char *argv[32];
    size_t argc = 0;
    argv[argc++] = FTSYNC_WORKLOAD;
    argv[argc++] = "--uri";
    argv[argc++] = fts_test_mongo_double_uri(f->server);
    for (size_t i = 0; args[i] && argc < 31; i++) {
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0) {
            _exit(126);
        }
        execv(argv[0], (char *const *)argv);
        dprintf(STDERR_FILENO, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The whole file (bson_free it), failing the test if it cannot be read. */
static char *read_file(const char *path)
{
    FILE *file = fopen(path, "r");
    if (!file) {
        fail_msg("cannot read %s: %s", path, strerror(errno));
    }
    bson_string_t *text = bson_string_new("");
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk - 1, file)) > 0) {
        chunk[got] = '\0';
        bson_string_append(text, chunk);
    }
    fclose(file);
    return bson_string_free(text, false);
}

/* What the collection holds, in the report's form: canonical extended JSON lines, keys sorted,
 * ascending _id. bson_free it. */
static char *collection_as_report(fixture_t *f, const char *db, const char *collection)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(f->client, db, collection);
    bson_t filter = BSON_INITIALIZER;
    bson_t opts = BSON_INITIALIZER;
    bson_t sort;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bson_append_document_end(&opts, &sort);
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
    bson_string_t *text = bson_string_new("");
    const bson_t *doc;
    while (mongoc_cursor_next(cursor, &doc)) {
        char *json = fts_test_bson_sorted_json(doc);
        bson_string_append_printf(text, "%s\n", json);
        bson_free(json);
    }
    bson_error_t error;
    if (mongoc_cursor_error(cursor, &error)) {
        fail_msg("find in %s.%s failed: %s", db, collection, error.message);
    }
    mongoc_cursor_destroy(cursor);
    bson_destroy(&opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    return bson_string_free(text, false);
}

/* The value of key=... in the summary line, as text (bson_free it). */
static char *summary_field(const char *summary, const char *key)
{
    char needle[64];
    snprintf(needle, sizeof needle, " %s=", key);
    const char *start = strstr(summary, needle);
    if (!start) {
        fail_msg("no %s= in the summary \"%s\"", key, summary);
    }
    start += strlen(needle);
    size_t length = strcspn(start, " \n");
    return bson_strndup(start, length);
}

/* The summary without its timing fields, which differ between runs. */
static char *summary_counts(const char *summary)
{
    bson_string_t *out = bson_string_new("");
    static const char *const keys[] = {"inserts", "updates",   "replaces", "deletes",
                                       "total",   "documents", "seed"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        char *value = summary_field(summary, keys[i]);
        bson_string_append_printf(out, "%s=%s ", keys[i], value);
        bson_free(value);
    }
    return bson_string_free(out, false);
}

static void assert_lines_equal(const char *what, const char *actual, const char *expected)
{
    if (strcmp(actual, expected) == 0) {
        return;
    }
    /* Show the first differing line, not two walls of JSON. */
    size_t line = 1;
    const char *a = actual, *e = expected;
    while (*a && *a == *e) {
        if (*a == '\n') {
            line++;
        }
        a++;
        e++;
    }
    while (a > actual && a[-1] != '\n') {
        a--;
        e--;
    }
    fail_msg("%s: first difference on line %zu\n  actual:   %.400s\n  expected: %.400s", what, line,
             a, e);
}

/* Same seed, same options: the same report, byte for byte, in two databases; and each report
 * is what find returns there. */
static void test_same_seed_same_writes_and_report_is_truth(void **state)
{
    fixture_t *f = *state;
    char report[2][1200], out[2][1200];
    const char *dbs[2];
    for (int run = 0; run < 2; run++) {
        dbs[run] = new_db(f);
        snprintf(report[run], sizeof report[run], "%s/report-%d.jsonl", f->dir, run);
        snprintf(out[run], sizeof out[run], "%s/out-%d.txt", f->dir, run);
        const char *args[] = {"--db",   dbs[run], "--collection", "apps",      "--count", RUN_COUNT,
                              "--seed", "42",     "--report",     report[run], "--drop",  NULL};
        assert_int_equal(run_workload(f, out[run], args), 0);
    }
    char *first = read_file(report[0]);
    char *second = read_file(report[1]);
    assert_true(strlen(first) > 0);
    assert_lines_equal("the second run's report", second, first);

    char *summary[2] = {read_file(out[0]), read_file(out[1])};
    assert_non_null(strstr(summary[0], "ftsync-workload: inserts="));
    char *counts[2] = {summary_counts(summary[0]), summary_counts(summary[1])};
    assert_string_equal(counts[0], counts[1]);
    /* The default mix gives every kind of operation. */
    for (int i = 0; i < 4; i++) {
        static const char *const kinds[] = {"inserts", "updates", "replaces", "deletes"};
        char *value = summary_field(summary[0], kinds[i]);
        if (atoi(value) <= 0) {
            fail_msg("no %s in \"%s\"", kinds[i], summary[0]);
        }
        bson_free(value);
    }

    for (int run = 0; run < 2; run++) {
        char *found = collection_as_report(f, dbs[run], "apps");
        assert_lines_equal("find compared with the report", found, first);
        bson_free(found);
    }
    /* documents= counts the report's lines. */
    size_t lines = 0;
    for (const char *p = first; *p; p++) {
        lines += *p == '\n';
    }
    char *documents = summary_field(summary[0], "documents");
    assert_int_equal((size_t)atoi(documents), lines);
    bson_free(documents);

    /* The text is not plain ASCII: accents, CJK, emoji. */
    assert_non_null(strpbrk(first, "\xc3\xe3\xe4\xea\xf0"));
    /* Each document has the Steam application's shape. */
    const char *line = first;
    while (*line) {
        const char *end = strchr(line, '\n');
        bson_error_t error;
        bson_t *doc = bson_new_from_json((const uint8_t *)line, end - line, &error);
        if (!doc) {
            fail_msg("a report line is not JSON: %s", error.message);
        }
        bson_iter_t id, app_id;
        assert_true(bson_iter_init_find(&id, doc, "_id") && BSON_ITER_HOLDS_INT32(&id));
        assert_true(bson_iter_init_find(&app_id, doc, "id") && BSON_ITER_HOLDS_INT32(&app_id));
        assert_int_equal(bson_iter_int32(&id), bson_iter_int32(&app_id));
        static const char *const required[] = {"name", "developers", "publishers", "updated_at",
                                               "type", "is_free",    "prices"};
        for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
            bson_iter_t field;
            if (!bson_iter_init_find(&field, doc, required[i])) {
                fail_msg("a report line has no %s: %.*s", required[i], (int)(end - line), line);
            }
        }
        bson_destroy(doc);
        line = end + 1;
    }
    for (int run = 0; run < 2; run++) {
        bson_free(summary[run]);
        bson_free(counts[run]);
    }
    bson_free(first);
    bson_free(second);
}

/* Another seed writes something else (the seed is really used). */
static void test_other_seed_other_writes(void **state)
{
    fixture_t *f = *state;
    char report[2][1200], out[1200];
    const char *seeds[2] = {"1", "2"};
    snprintf(out, sizeof out, "%s/out.txt", f->dir);
    for (int run = 0; run < 2; run++) {
        snprintf(report[run], sizeof report[run], "%s/seed-%d.jsonl", f->dir, run);
        const char *args[] = {"--db",     new_db(f),  "--count",   "100", "--seed",
                              seeds[run], "--report", report[run], NULL};
        assert_int_equal(run_workload(f, out, args), 0);
    }
    char *a = read_file(report[0]);
    char *b = read_file(report[1]);
    assert_string_not_equal(a, b);
    bson_free(a);
    bson_free(b);
}

/* --mix weights: inserts only leave every document; --rate paces the run. */
static void test_mix_and_rate(void **state)
{
    fixture_t *f = *state;
    char out[1200], report[1200];
    snprintf(out, sizeof out, "%s/mix.txt", f->dir);
    snprintf(report, sizeof report, "%s/mix.jsonl", f->dir);
    const char *db = new_db(f);
    const char *args[] = {"--db",   db,    "--count",  "50",   "--mix", "insert=1",
                          "--rate", "200", "--report", report, NULL};
    assert_int_equal(run_workload(f, out, args), 0);
    char *summary = read_file(out);
    char *value = summary_field(summary, "inserts");
    assert_string_equal(value, "50");
    bson_free(value);
    value = summary_field(summary, "documents");
    assert_string_equal(value, "50");
    bson_free(value);
    /* 50 operations at 200/s: the last one is due 245 ms after the first. */
    value = summary_field(summary, "elapsed_s");
    if (atof(value) < 0.24) {
        fail_msg("50 operations at --rate 200 took only %s s", value);
    }
    bson_free(value);
    bson_free(summary);
    char *expected = read_file(report);
    char *found = collection_as_report(f, db, "apps");
    assert_lines_equal("find compared with the report", found, expected);
    bson_free(expected);
    bson_free(found);

    /* Bad usage is refused with status 2. */
    const char *bad_mix[] = {"--mix", "insert=1,upsert=2", NULL};
    assert_int_equal(run_workload(f, out, bad_mix), 2);
    const char *zero_mix[] = {"--mix", "delete=0", NULL};
    assert_int_equal(run_workload(f, out, zero_mix), 2);
    const char *bad_count[] = {"--count", "many", NULL};
    assert_int_equal(run_workload(f, out, bad_count), 2);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_seed_same_writes_and_report_is_truth, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_other_seed_other_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mix_and_rate, setup, teardown),
    };
    int failed = cmocka_run_group_tests_name("workload", tests, NULL, NULL);
    mongoc_cleanup();
    return failed;
}
