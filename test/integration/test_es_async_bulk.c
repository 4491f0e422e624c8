/*
 * test_es_async_bulk.c - the event-loop Elasticsearch client against the test bed's real
 * search engine (FTSYNC_TEST_ENGINE: OpenSearch 2.19 or Elasticsearch 1.5.2; CTest runs it on
 * both): four _bulk requests in flight at once (plain and gzipped) are each answered 200 with
 * their items, and the documents are all there afterwards.
 *
 * The index name is unique to the run (pid and time) and deleted at the end, so runs can share
 * one server. ES 1.x needs a document type in bulk actions ("_type":"doc"); OpenSearch 2.x has
 * none and refuses one. Both read "version" and "version_type" (ES 1.x also took the
 * underscored names, which OpenSearch refuses).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "assertions.h"

#include "buffer.h"
#include "clock.h"
#include "es_async.h"
#include "log.h"
#include "testbed.h"

enum { CONCURRENT = 4, DOCS_PER_BULK = 5 };

static struct event_base *base;
static fts_es_async_t *es;
static fts_es_async_t *gzip_es;
static char index_name[96];

typedef struct {
    int calls;
    long status;
    fts_buffer_t body;
    bool failed;
    fts_error_t err;
} outcome_t;

static void on_done(void *arg, const fts_es_response_t *response, const fts_error_t *err)
{
    outcome_t *outcome = arg;
    outcome->calls++;
    if (response) {
        outcome->status = response->status;
        fts_buffer_clear(&outcome->body);
        if (response->body.data) {
            fts_buffer_append(&outcome->body, response->body.data, response->body.len);
        }
    } else {
        outcome->failed = true;
        outcome->err = *err;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg; /* keeps each loop turn short so that the deadline is checked */
}

/* Runs the loop until every outcome has its done call, or 30 s passed. */
static bool run_until_done(outcome_t *outcomes, size_t count)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval every = {.tv_sec = 0, .tv_usec = 10000};
    event_add(tick, &every);
    uint64_t deadline = fts_clock_monotonic_ms() + 30000;
    bool all = false;
    while (!all && fts_clock_monotonic_ms() < deadline) {
        event_base_loop(base, EVLOOP_ONCE);
        all = true;
        for (size_t i = 0; i < count; i++) {
            all = all && outcomes[i].calls > 0;
        }
    }
    event_free(tick);
    return all;
}

/* One request, waited for. */
static void request_and_wait(fts_es_async_t *client, const char *method, const char *path,
                             outcome_t *outcome)
{
    fts_error_t err = {0};
    if (!fts_es_async_request(client, method, path, NULL, NULL, 0, on_done, outcome, &err)) {
        fail_msg("%s %s not started: %s", method, path, err.message);
    }
    assert_true(run_until_done(outcome, 1));
    if (outcome->failed) {
        fail_msg("%s %s: %s", method, path, outcome->err.message);
    }
}

static int setup(void **state)
{
    (void)state;
    const char *url = fts_testbed_es_url();
    snprintf(index_name, sizeof index_name, "ftsync-test-async-%ld-%ld", (long)getpid(),
             (long)time(NULL));
    base = event_base_new();
    const char *urls[] = {url};
    fts_error_t err = {0};
    es = fts_es_async_new(
        base, &(fts_es_options_t){.urls = urls, .url_count = 1, .request_timeout_ms = 30000}, &err);
    gzip_es = fts_es_async_new(
        base,
        &(fts_es_options_t){
            .urls = urls, .url_count = 1, .request_timeout_ms = 30000, .gzip_requests = true},
        &err);
    if (!base || !es || !gzip_es) {
        fprintf(stderr, "cannot make a client for %s: %s\n", url, err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "/%s", index_name);
    outcome_t outcome = {0};
    fts_error_t err = {0};
    if (!fts_es_async_request(es, "DELETE", path, NULL, NULL, 0, on_done, &outcome, &err) ||
        !run_until_done(&outcome, 1) || outcome.failed) {
        fprintf(stderr, "cleanup of %s failed: %s\n", path,
                outcome.failed ? outcome.err.message : err.message);
    } else if (outcome.status != 200 && outcome.status != 404) {
        fprintf(stderr, "cleanup of %s: HTTP %ld %s\n", path, outcome.status,
                outcome.body.data ? outcome.body.data : "");
    }
    fts_buffer_destroy(&outcome.body);
    fts_es_async_destroy(es);
    fts_es_async_destroy(gzip_es);
    event_base_free(base);
    fts_log_reset();
    return 0;
}

/* CONCURRENT bulk requests of DOCS_PER_BULK documents each, ids prefixed by `tag`, all started
 * before the loop runs; each must come back 200 with one item per document and no error. */
static void bulk_concurrently(fts_es_async_t *client, const char *tag)
{
    outcome_t outcomes[CONCURRENT] = {{0}};
    fts_buffer_t bodies[CONCURRENT] = {{0}};
    const char *type = fts_testbed_engine() == FTS_TEST_ENGINE_ES1 ? "\"_type\":\"doc\"," : "";
    for (int i = 0; i < CONCURRENT; i++) {
        for (int d = 0; d < DOCS_PER_BULK; d++) {
            fts_buffer_appendf(&bodies[i],
                               "{\"index\":{\"_index\":\"%s\",%s\"_id\":\"%s-%d-%d\","
                               "\"version\":%d,\"version_type\":\"external\"}}\n"
                               "{\"name\":\"app %d-%d\",\"text\":\"concurrent bulk\"}\n",
                               index_name, type, tag, i, d, 1000 + d, i, d);
        }
        fts_error_t err = {0};
        if (!fts_es_async_request(client, "POST", "/_bulk", "application/x-ndjson", bodies[i].data,
                                  bodies[i].len, on_done, &outcomes[i], &err)) {
            fail_msg("bulk %d not started: %s", i, err.message);
        }
    }
    assert_int_equal(fts_es_async_in_flight(client), CONCURRENT);
    assert_true(run_until_done(outcomes, CONCURRENT));
    assert_int_equal(fts_es_async_in_flight(client), 0);

    for (int i = 0; i < CONCURRENT; i++) {
        if (outcomes[i].failed) {
            fail_msg("bulk %d: %s", i, outcomes[i].err.message);
        }
        if (outcomes[i].status != 200) {
            fail_msg("bulk %d: HTTP %ld %s", i, outcomes[i].status,
                     outcomes[i].body.data ? outcomes[i].body.data : "");
        }
        assert_contains(outcomes[i].body.data, "\"items\":[");
        assert_contains(outcomes[i].body.data, "\"errors\":false");
        char id[64];
        snprintf(id, sizeof id, "\"_id\":\"%s-%d-%d\"", tag, i, DOCS_PER_BULK - 1);
        assert_contains(outcomes[i].body.data, id); /* its own answer, not another's */
        fts_buffer_destroy(&outcomes[i].body);
        fts_buffer_destroy(&bodies[i]);
    }
}

static long count_documents(void)
{
    char path[160];
    outcome_t outcome = {0};
    snprintf(path, sizeof path, "/%s/_refresh", index_name);
    request_and_wait(es, "POST", path, &outcome);
    assert_int_equal(outcome.status, 200);

    outcome = (outcome_t){.body = outcome.body};
    snprintf(path, sizeof path, "/%s/_count", index_name);
    request_and_wait(es, "GET", path, &outcome);
    assert_int_equal(outcome.status, 200);
    const char *count = strstr(outcome.body.data, "\"count\":");
    assert_non_null(count);
    long value = strtol(count + strlen("\"count\":"), NULL, 10);
    fts_buffer_destroy(&outcome.body);
    return value;
}

static void test_concurrent_bulk_requests(void **state)
{
    (void)state;
    bulk_concurrently(es, "plain");
    assert_int_equal(count_documents(), CONCURRENT * DOCS_PER_BULK);
}

static void test_concurrent_gzipped_bulk_requests(void **state)
{
    (void)state;
    bulk_concurrently(gzip_es, "gzip");
    assert_int_equal(count_documents(), 2 * CONCURRENT * DOCS_PER_BULK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_bulk_requests),
        cmocka_unit_test(test_concurrent_gzipped_bulk_requests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
