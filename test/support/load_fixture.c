/*
 * load_fixture.c - the shared set-up and the failing steps of the load integration tests (see
 * load_fixture.h). Each step turns a harness failure into a cmocka failure that shows the
 * loaders' logs first, so a test reads as the sequence of things that must happen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "load_fixture.h"

#include <inttypes.h>

#include <bson/bson.h>

#include "testbed.h"

void fts_test_load_init_or_fail(fts_test_load_t *t, const char *binary, const char *redis_url,
                                const char *es_url, const char *name)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_init(t, binary, fts_testbed_index_definition(), redis_url, es_url, name,
                            &err)) {
        fail_msg("cannot set up the test bed: %s", err.message);
    }
}

fts_test_load_t *fts_test_load_fixture_new(void **state, const char *binary, const char *redis_url,
                                           const char *es_url, const char *name)
{
    fts_test_load_t *t = bson_malloc0(sizeof *t);
    *state = t;
    fts_test_load_init_or_fail(t, binary, redis_url, es_url, name);
    return t;
}

int fts_test_load_fixture_teardown(void **state)
{
    fts_test_load_t *t = *state;
    if (t) {
        fts_test_load_cleanup(t);
        bson_free(t);
    }
    return 0;
}

void fts_test_load_fail_with_logs(fts_test_load_t *t, const char *what, const fts_error_t *err)
{
    fts_test_load_print_logs(t, FTS_TEST_LOAD_FIXTURE_LOG_LINES);
    fail_msg("%s: %s", what, err ? err->message : "");
}

fts_test_loader_t *fts_test_load_start_loader_or_fail(fts_test_load_t *t, const char *consumer)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_loader_t *loader = fts_test_load_start_loader(t, consumer, &err);
    if (!loader) {
        fts_test_load_fail_with_logs(t, "cannot start ftsync load", &err);
    }
    return loader;
}

void fts_test_load_flush_or_fail(fts_test_load_t *t)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_flush(t, &err)) {
        fts_test_load_fail_with_logs(t, "writing entries", &err);
    }
}

void fts_test_load_wait_drained_or_fail(fts_test_load_t *t, unsigned timeout_ms)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_wait_drained(t, timeout_ms, &err)) {
        fts_test_load_fail_with_logs(t, "waiting for the loaders to drain the stream", &err);
    }
}

void fts_test_load_expect_index_equals_model(fts_test_load_t *t, const char *label)
{
    size_t differences = fts_test_load_check_index(t, label);
    if (differences != 0) {
        fts_test_load_print_logs(t, FTS_TEST_LOAD_FIXTURE_LOG_LINES);
        if (differences == (size_t)-1) {
            fail_msg("%s: Elasticsearch could not be read (see above)", label);
        }
        fail_msg("%s: the index differs from the model in %zu places (first ones above)", label,
                 differences);
    }
}

void fts_test_load_expect_dead_count(fts_test_load_t *t, long long expected)
{
    long long dead = fts_test_load_dead_count(t);
    if (dead != expected) {
        fts_test_load_print_logs(t, FTS_TEST_LOAD_FIXTURE_LOG_LINES);
        fail_msg("dead-letter stream %s holds %lld entries, expected %lld", t->dead_key, dead,
                 expected);
    }
}

void fts_test_load_expect_clean_stop(fts_test_load_t *t, fts_test_loader_t *loader,
                                     unsigned timeout_ms)
{
    uint64_t elapsed = 0;
    int code = fts_test_load_stop(t, loader, timeout_ms, &elapsed);
    if (code != 0) {
        fts_test_loader_print_log_tail(loader, FTS_TEST_LOAD_FIXTURE_LOG_LINES);
        fail_msg("loader %s: SIGTERM gave exit status %d after %" PRIu64 " ms (want 0)",
                 fts_test_loader_consumer(loader), code, elapsed);
    }
}
