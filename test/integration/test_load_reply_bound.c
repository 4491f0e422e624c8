/*
 * test_load_reply_bound.c - a loader's memory stays bounded by what it asked for, even when a
 * hostile server answers its _bulk with far more than a reply to it can hold.
 *
 * A real `ftsync load` (the binary, against the test bed's Redis) talks to a stand-in HTTP
 * server (test/support/http_capture.h) that answers like a cluster at start and sends 50 MB to
 * every _bulk. The loader must cut each reply off at the bound of a 2-action request
 * (adapters/es/es_curl.h), keep its peak resident set (VmHWM, read from /proc) far below what was
 * sent, acknowledge nothing and retry. No engine is involved: it runs once.
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

#include <bson/bson.h>

#include "action.h"
#include "es_curl.h"
#include "http_capture.h"
#include "load_harness.h"
#include "testbed.h"

/* Sent to every _bulk: far beyond any bound a 2-action request has. */
#define HOSTILE_REPLY_BYTES (50u * 1024u * 1024u)
/* _bulk requests seen before the test judges: the first and two retries. */
#define BULKS_WANTED 3
#define WAIT_MS      60000

/* Peak resident set of pid (VmHWM), in bytes; 0 when it cannot be read. */
static size_t peak_rss_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *status = fopen(path, "r");
    if (!status) {
        return 0;
    }
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, status)) {
        if (sscanf(line, "VmHWM: %zu kB", &kib) == 1) {
            break;
        }
    }
    fclose(status);
    return kib * 1024;
}

static size_t bulks_seen(fts_http_capture_t *server)
{
    size_t bulks = 0;
    for (size_t i = 0; i < fts_http_capture_count(server); i++) {
        const fts_http_captured_t *request = fts_http_capture_get(server, i);
        bulks += request && strstr(request->uri, "_bulk") != NULL;
    }
    return bulks;
}

static void sleep_ms(long ms)
{
    struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

static void test_hostile_bulk_reply_bounded_and_retried(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    fts_http_capture_t *server = fts_http_capture_new(&err);
    assert_non_null(server);
    /* Every request but _bulk gets what a cluster would say to GET /; HEAD /<index> says 200. */
    fts_http_capture_set_reply(server, 200, "application/json",
                               "{\"cluster_name\":\"hostile\",\"version\":{\"number\":\"2.19.0\","
                               "\"distribution\":\"opensearch\"}}");
    fts_http_capture_set_large_reply_for(server, HOSTILE_REPLY_BYTES, false, "_bulk");

    fts_test_load_t *t = calloc(1, sizeof *t);
    assert_non_null(t);
    if (!fts_test_load_init(t, FTSYNC_BINARY, fts_testbed_index_definition(),
                            fts_testbed_require("FTSYNC_TEST_REDIS_URL"),
                            fts_http_capture_url(server), "replybound", &err)) {
        fail_msg("cannot set up the test bed: %s", err.message);
    }
    fts_test_loader_t *loader = fts_test_load_start_loader(t, NULL, &err);
    if (!loader) {
        fail_msg("cannot start ftsync load: %s", err.message);
    }

    /* Start-up done (the requests of the wait for the cluster and the index check answered,
     * then a quiet moment): what the loader holds from here on is the baseline. */
    long waited = 0;
    while (fts_http_capture_count(server) < 2 && waited < WAIT_MS) {
        sleep_ms(50);
        waited += 50;
    }
    sleep_ms(1500);
    assert_true(fts_test_loader_running(loader));
    size_t baseline = peak_rss_of(fts_test_loader_pid(loader));
    assert_true(baseline > 0);

    uint64_t version = fts_version_from_timestamp(1795428000u, 1);
    fts_test_load_index(t, "1", version, "{\"name\":\"one\"}");
    fts_test_load_delete(t, "2", version);
    if (!fts_test_load_flush(t, &err)) {
        fail_msg("cannot write the entries: %s", err.message);
    }

    waited = 0;
    while (bulks_seen(server) < BULKS_WANTED && waited < WAIT_MS) {
        sleep_ms(50);
        waited += 50;
    }
    size_t bulks = bulks_seen(server);
    size_t peak = peak_rss_of(fts_test_loader_pid(loader));
    if (bulks < BULKS_WANTED) {
        fts_test_loader_print_log_tail(loader, 30);
        fail_msg("the loader sent %zu _bulk requests, expected the first and its retries", bulks);
    }
    assert_true(fts_test_loader_running(loader));

    /* The bound of this request: 2 actions, 3 lines. The reply buffer holds at most that (twice
     * while it grows); the slack covers libcurl's and the sanitizers' own buffers. Each reply
     * was 50 MB: holding even one would be far over. */
    size_t bound = FTS_ES_BULK_REPLY_BASE_BYTES + 3 * FTS_ES_BULK_REPLY_ITEM_BYTES;
    size_t grown = peak > baseline ? peak - baseline : 0;
    if (grown > 2 * bound + 16u * 1024u * 1024u) {
        fts_test_loader_print_log_tail(loader, 30);
        fail_msg("the loader grew by %zu bytes over %zu _bulk replies of %u bytes; bound %zu",
                 grown, bulks, HOSTILE_REPLY_BYTES, bound);
    }

    /* No usable answer: nothing acknowledged, nothing dead-lettered, and it says why. */
    fts_test_group_state_t group;
    if (!fts_test_load_group_state(t, &group, &err)) {
        fail_msg("cannot read the group: %s", err.message);
    }
    assert_int_equal(group.pending, 2);
    char *log = fts_test_loader_log(loader);
    assert_non_null(strstr(log, "reply larger than"));
    bson_free(log);

    fts_test_load_cleanup(t);
    free(t);
    fts_http_capture_destroy(server);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_bulk_reply_bounded_and_retried),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
