/*
 * test_load_restarts.c - restarts of a loader during an Elasticsearch outage dead-letter
 * nothing (issue 13, item 3).
 *
 * Each restart re-reads the loader's pending entries, which Redis counts as a delivery. Only a
 * loader dying while it sends an entry may count toward FTSYNC_MAX_DELIVERIES (README.md, Load).
 * The test: 20 valid entries; an Elasticsearch stand-in (http_capture.h) that passes the
 * start-up checks (GET / as a 7.10 cluster, HEAD of the index) and then answers 500 to
 * everything, _bulk included; 12 restarts of one consumer (kill -9 and SIGTERM alternately),
 * each after the loader sent a bulk and got its 500, with FTSYNC_MAX_DELIVERIES=5 (which Redis's
 * own count passes after 6 restarts); then the loader runs against the test bed's engine:
 * nothing in the dead-letter stream, the group drained, the index equal to the model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <bson/bson.h>
#include <inttypes.h>
#include <signal.h>
#include <unistd.h>

#include "action.h"
#include "http_capture.h"
#include "load_harness.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif

/* GET <index>/_mapping of an index ftsync made: marked with the version scheme it writes. */
#define MARKED_MAPPING                                                                             \
    "{\"stand-in\":{\"mappings\":{\"_meta\":{\"ftsync\":{\"version_scheme\":2}}}}}"

#define ENTRIES          20
#define RESTARTS         12
#define REACH_TIMEOUT_MS 30000
/* After the stand-in took a bulk: long enough for its 500 to be handled. */
#define SETTLE_MS        300
#define DRAIN_TIMEOUT_MS 120000
#define LOG_LINES        40
/* FTSYNC_MAX_DELIVERIES of the poison test: the deaths that dead-letter its entry. */
#define POISON_MAX "3"

/* Index of the first request at or after from whose URI contains needle, waiting up to
 * timeout_ms; -1 when none came. */
static long wait_request(fts_http_capture_t *es, size_t from, const char *needle,
                         unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    do {
        size_t count = fts_http_capture_count(es);
        for (size_t i = from; i < count; i++) {
            const fts_http_captured_t *request = fts_http_capture_get(es, i);
            if (request->uri && strstr(request->uri, needle)) {
                return (long)i;
            }
        }
        fts_test_sleep_ms(20);
    } while (fts_test_monotonic_ms() < deadline);
    return -1;
}

static void test_restarts_during_outage_dead_letter_nothing(void **state)
{
    fts_test_load_t *t = calloc(1, sizeof *t);
    *state = t;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_init(t, FTSYNC_BINARY, fts_testbed_index_definition(),
                            fts_testbed_require("FTSYNC_TEST_REDIS_URL"), fts_testbed_es_url(),
                            "restarts", &err)) {
        fail_msg("cannot set up the test bed: %s", err.message);
    }
    fts_test_load_set(t, "FTSYNC_MAX_DELIVERIES", "5");
    /* Few retries: the kills are meant to land between requests, not during one. */
    fts_test_load_set(t, "FTSYNC_RETRY_BASE_MS", "1000");
    fts_test_load_set(t, "FTSYNC_RETRY_MAX_MS", "4000");

    uint64_t version = fts_version_from_timestamp(1795428000u, 0);
    for (int i = 0; i < ENTRIES; i++) {
        char id[16];
        char body[64];
        snprintf(id, sizeof id, "r%d", i);
        snprintf(body, sizeof body, "{\"name\":\"restart %d\"}", i);
        fts_test_load_index(t, id, version + (uint64_t)i, body);
    }
    if (!fts_test_load_flush(t, &err)) {
        fail_msg("%s", err.message);
    }

    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    fts_http_capture_set_reply(es, 500, "application/json",
                               "{\"error\":\"outage\",\"status\":500}");
    fts_test_load_set(t, "FTSYNC_ES_URL", fts_http_capture_url(es));
    char consumer[96];
    snprintf(consumer, sizeof consumer, "restarts-%ld", (long)getpid());

    for (int r = 0; r < RESTARTS; r++) {
        size_t from = fts_http_capture_count(es);
        fts_http_capture_queue_reply(es, 200, "application/json",
                                     "{\"name\":\"stand-in\",\"cluster_name\":\"test\",\"version\":"
                                     "{\"number\":\"7.10.2\"},\"tagline\":\"You Know, for "
                                     "Search\"}");
        fts_http_capture_queue_reply(es, 200, "application/json", "");
        /* The index's mapping carries this version scheme (README.md, Load). */
        fts_http_capture_queue_reply(es, 200, "application/json", MARKED_MAPPING);
        fts_test_loader_t *loader = fts_test_load_start_loader(t, consumer, &err);
        if (!loader) {
            fail_msg("cannot start ftsync load: %s", err.message);
        }
        if (wait_request(es, from, "_bulk", REACH_TIMEOUT_MS) < 0) {
            fts_test_load_print_logs(t, LOG_LINES);
            fail_msg("restart %d: no bulk request reached the stand-in", r);
        }
        fts_test_sleep_ms(SETTLE_MS);
        if (r % 2 == 0) {
            assert_true(fts_test_load_kill9(t, loader));
        } else {
            uint64_t elapsed = 0;
            assert_int_equal(fts_test_load_stop(t, loader, 15000, &elapsed), 0);
        }
    }
    long long dead = fts_test_load_dead_count(t);
    fprintf(stderr, "(%d restarts during the outage: %lld dead letters)\n", RESTARTS, dead);
    if (dead != 0) {
        fts_test_load_print_logs(t, LOG_LINES);
    }
    assert_int_equal(dead, 0);

    /* The engine is back. */
    fts_test_load_set(t, "FTSYNC_ES_URL", fts_testbed_es_url());
    if (!fts_test_load_start_loader(t, consumer, &err)) {
        fail_msg("cannot start ftsync load: %s", err.message);
    }
    if (!fts_test_load_wait_drained(t, DRAIN_TIMEOUT_MS, &err)) {
        fts_test_load_print_logs(t, LOG_LINES);
        fail_msg("not drained: %s", err.message);
    }
    assert_int_equal(fts_test_load_dead_count(t), 0);
    assert_int_equal(fts_test_load_check_index(t, "restarts"), 0);
    fts_http_capture_destroy(es);
}

/* The other side: an entry that "kills" every loader sending it (here: the loader is killed
 * while its bulk request is out, to a stand-in that never answers) is dead-lettered once that
 * happened FTSYNC_MAX_DELIVERIES times, and not before. */
static void test_deaths_while_sending_dead_letter_the_entry(void **state)
{
    fts_test_load_t *t = calloc(1, sizeof *t);
    *state = t;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_load_init(t, FTSYNC_BINARY, fts_testbed_index_definition(),
                            fts_testbed_require("FTSYNC_TEST_REDIS_URL"), fts_testbed_es_url(),
                            "poison", &err)) {
        fail_msg("cannot set up the test bed: %s", err.message);
    }
    fts_test_load_set(t, "FTSYNC_MAX_DELIVERIES", POISON_MAX);
    uint64_t version = fts_version_from_timestamp(1795428000u, 0);
    fts_test_load_index(t, "p1", version, "{\"name\":\"poison\"}");
    if (!fts_test_load_flush(t, &err)) {
        fail_msg("%s", err.message);
    }
    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    fts_test_load_set(t, "FTSYNC_ES_URL", fts_http_capture_url(es));
    char consumer[96];
    snprintf(consumer, sizeof consumer, "poison-%ld", (long)getpid());
    int max = atoi(POISON_MAX);
    for (int r = 0; r <= max; r++) {
        size_t from = fts_http_capture_count(es);
        fts_http_capture_set_stall(es, false);
        fts_http_capture_queue_reply(es, 200, "application/json",
                                     "{\"name\":\"stand-in\",\"cluster_name\":\"test\",\"version\":"
                                     "{\"number\":\"7.10.2\"},\"tagline\":\"You Know, for "
                                     "Search\"}");
        fts_http_capture_queue_reply(es, 200, "application/json", "");
        /* The index's mapping carries this version scheme (README.md, Load). */
        fts_http_capture_queue_reply(es, 200, "application/json", MARKED_MAPPING);
        fts_http_capture_set_reply(es, 500, "application/json", "{}");
        fts_test_loader_t *loader = fts_test_load_start_loader(t, consumer, &err);
        if (!loader) {
            fail_msg("cannot start ftsync load: %s", err.message);
        }
        if (r == max) {
            break; /* this one must dead-letter it without sending it */
        }
        /* Start-up answered, then the bulk hangs: kill -9 while it is out. */
        assert_true(wait_request(es, from, "_settings", REACH_TIMEOUT_MS) >= 0 ||
                    wait_request(es, from, "_bulk", 1) >= 0);
        fts_http_capture_set_stall(es, true);
        if (wait_request(es, from, "_bulk", REACH_TIMEOUT_MS) < 0) {
            fts_test_load_print_logs(t, LOG_LINES);
            fail_msg("death %d: no bulk request reached the stand-in", r);
        }
        fts_test_sleep_ms(SETTLE_MS);
        assert_int_equal(fts_test_load_dead_count(t), 0);
        assert_true(fts_test_load_kill9(t, loader));
    }
    uint64_t deadline = fts_test_monotonic_ms() + REACH_TIMEOUT_MS;
    while (fts_test_load_dead_count(t) < 1 && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(50);
    }
    if (fts_test_load_dead_count(t) != 1) {
        fts_test_load_print_logs(t, LOG_LINES);
    }
    assert_int_equal(fts_test_load_dead_count(t), 1);
    fts_test_load_cleanup(t);
    free(t);
    *state = NULL;
    fts_http_capture_destroy(es);
}

static int teardown(void **state)
{
    fts_test_load_t *t = *state;
    if (t) {
        fts_test_load_cleanup(t);
        free(t);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_restarts_during_outage_dead_letter_nothing, teardown),
        cmocka_unit_test_teardown(test_deaths_while_sending_dead_letter_the_entry, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
