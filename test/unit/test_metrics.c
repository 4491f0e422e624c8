/*
 * test_metrics.c - the metrics block (core/metrics.c): updates, sharing with a forked child
 * and through a memfd, the Prometheus rendering (checked by promtool, from Debian's prometheus
 * package that deploy/local/install-deps.sh installs), and the health and readiness checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bson/bson.h>

#include "buffer.h"
#include "metrics.h"

static char *render(const fts_metrics_t *metrics, unsigned roles, uint64_t wall_now_ms)
{
    fts_buffer_t out = {0};
    fts_metrics_render(metrics, roles, wall_now_ms, &out);
    return fts_buffer_steal(&out);
}

static void assert_contains(const char *text, const char *needle)
{
    if (!strstr(text, needle)) {
        fail_msg("expected to find\n%s\nin\n%s", needle, text);
    }
}

static void test_updates_do_nothing_when_nothing_is_installed(void **state)
{
    (void)state;
    fts_metrics_install(NULL);
    fts_metric_add(FTS_METRIC_EVENTS_READ, 0, 5);
    fts_metric_set(FTS_METRIC_LEASE_HELD, 0, 1);
    fts_metric_observe(FTS_METRIC_BULK_DURATION, 0.1);
    fts_signal_set(FTS_SIGNAL_MONGO_OK, 1);
    assert_null(fts_metrics_installed());
}

static void test_counters_gauges_and_histogram_render(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("1.2.3");
    fts_metrics_install(metrics);
    fts_metric_add(FTS_METRIC_EVENTS_READ, 0, 3);
    fts_metric_add(FTS_METRIC_EVENTS_READ, 0, 4);
    fts_metric_add(FTS_METRIC_ACTIONS_QUEUED, FTS_OP_DELETE, 2);
    fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_NOT_FOUND, 1);
    fts_metric_add(FTS_METRIC_DEAD_LETTERS, FTS_STAGE_LOAD, 9);
    fts_metric_set(FTS_METRIC_LEASE_HELD, 0, 1);
    fts_metric_set(FTS_METRIC_BACKLOG, 0, 12345);
    fts_metric_observe(FTS_METRIC_BULK_DURATION, 0.003);
    fts_metric_observe(FTS_METRIC_BULK_DURATION, 0.2);
    fts_metric_observe(FTS_METRIC_BULK_DURATION, 100);
    assert_int_equal(fts_metrics_counter(metrics, FTS_METRIC_EVENTS_READ, 0), 7);

    char *text = render(metrics, FTS_METRICS_ROLE_ALL, 1000000);
    assert_contains(text, "# HELP ftsync_events_read_total ");
    assert_contains(text, "# TYPE ftsync_events_read_total counter\nftsync_events_read_total 7\n");
    assert_contains(text, "ftsync_actions_queued_total{op=\"index\"} 0\n"
                          "ftsync_actions_queued_total{op=\"delete\"} 2\n");
    assert_contains(text, "ftsync_items_total{result=\"not_found\"} 1\n");
    assert_contains(text, "ftsync_dead_letters_total{stage=\"load\"} 9\n");
    assert_contains(text, "# TYPE ftsync_lease_held gauge\nftsync_lease_held 1\n");
    assert_contains(text, "ftsync_backlog_entries 12345\n");
    assert_contains(text, "ftsync_build_info{version=\"1.2.3\"} 1\n");
    /* Cumulative buckets; count equals the +Inf bucket. */
    assert_contains(text, "ftsync_bulk_duration_seconds_bucket{le=\"0.005\"} 1\n");
    assert_contains(text, "ftsync_bulk_duration_seconds_bucket{le=\"0.25\"} 2\n");
    assert_contains(text, "ftsync_bulk_duration_seconds_bucket{le=\"60\"} 2\n");
    assert_contains(text, "ftsync_bulk_duration_seconds_bucket{le=\"+Inf\"} 3\n");
    assert_contains(text, "ftsync_bulk_duration_seconds_count 3\n");
    assert_contains(text, "ftsync_bulk_duration_seconds_sum 100.20");
    bson_free(text);

    /* A process renders its own roles' families only; build_info always. */
    text = render(metrics, FTS_METRICS_ROLE_LOAD, 1000000);
    assert_null(strstr(text, "ftsync_events_read_total"));
    assert_null(strstr(text, "ftsync_lease_held"));
    assert_contains(text, "ftsync_items_total");
    assert_contains(text, "ftsync_build_info");
    bson_free(text);
    fts_metrics_destroy(metrics);
    assert_null(fts_metrics_installed());
}

static void test_lag_is_now_minus_last_ack_while_entries_are_held(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("x");
    fts_metrics_install(metrics);
    fts_signal_set_if_zero(FTS_SIGNAL_LAST_ACK_TS_WALL_MS, 10000);
    fts_signal_set_if_zero(FTS_SIGNAL_LAST_ACK_TS_WALL_MS, 5000); /* not zero any more */
    fts_signal_raise(FTS_SIGNAL_LAST_ACK_TS_WALL_MS, 8000);       /* never goes back */
    assert_int_equal(fts_metrics_signal(metrics, FTS_SIGNAL_LAST_ACK_TS_WALL_MS), 10000);
    fts_signal_raise(FTS_SIGNAL_LAST_ACK_TS_WALL_MS, 20000);
    /* Nothing held: caught up, lag 0 however old the last action is. */
    char *text = render(metrics, FTS_METRICS_ROLE_LOAD, 62500);
    assert_contains(text, "ftsync_replication_lag_seconds 0\n");
    bson_free(text);
    fts_metric_set(FTS_METRIC_PENDING, 0, 4);
    text = render(metrics, FTS_METRICS_ROLE_LOAD, 62500);
    assert_contains(text, "ftsync_replication_lag_seconds 42.5\n");
    assert_contains(text, "ftsync_pending_entries 4\n");
    bson_free(text);
    fts_metrics_destroy(metrics);
}

static void test_a_forked_child_counts_into_the_parents_block(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("x");
    fts_metrics_install(metrics);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fts_metric_add(FTS_METRIC_ACTIONS_QUEUED, FTS_OP_INDEX, 41);
        fts_metric_add(FTS_METRIC_DEAD_LETTERS, FTS_STAGE_TRANSFORM, 1);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    fts_metric_add(FTS_METRIC_ACTIONS_QUEUED, FTS_OP_INDEX, 1);
    assert_int_equal(fts_metrics_counter(metrics, FTS_METRIC_ACTIONS_QUEUED, FTS_OP_INDEX), 42);
    assert_int_equal(fts_metrics_counter(metrics, FTS_METRIC_DEAD_LETTERS, FTS_STAGE_TRANSFORM), 1);
    fts_metrics_destroy(metrics);
}

static void test_a_memfd_block_is_adopted_and_a_bad_one_refused(void **state)
{
    (void)state;
    fts_error_t err;
    int fd = -1;
    fts_metrics_t *parent = fts_metrics_new_fd("9.9", &fd, &err);
    assert_non_null(parent);
    fts_metrics_t *child = fts_metrics_adopt_fd(dup(fd), &err);
    assert_non_null(child);
    fts_metrics_install(child);
    fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_INDEXED, 5);
    fts_signal_set(FTS_SIGNAL_ES_OK, 1);
    assert_int_equal(fts_metrics_counter(parent, FTS_METRIC_ITEMS, FTS_RESULT_INDEXED), 5);
    assert_int_equal(fts_metrics_signal(parent, FTS_SIGNAL_ES_OK), 1);
    char *text = render(parent, FTS_METRICS_ROLE_LOAD, 1);
    assert_contains(text, "ftsync_build_info{version=\"9.9\"} 1\n");
    bson_free(text);
    fts_metrics_destroy(child);
    fts_metrics_destroy(parent);

    /* A file of another size is no block of ours. */
    FILE *other = tmpfile();
    assert_non_null(other);
    fputs("not a metrics block", other);
    fflush(other);
    assert_null(fts_metrics_adopt_fd(dup(fileno(other)), &err));
    assert_int_equal(err.domain, FTS_ERROR_SYSTEM);
    assert_non_null(strstr(err.message, "different build"));
    fclose(other);
}

static void test_health_and_readiness(void **state)
{
    (void)state;
    fts_metrics_t *metrics = fts_metrics_new("x");
    fts_metrics_install(metrics);
    char reason[256];
    const unsigned all = FTS_METRICS_ROLE_ALL;
    /* Starting: alive, not ready. */
    fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_STARTING);
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_STARTING);
    assert_true(fts_health_check(metrics, all, 100000, 5000, reason, sizeof reason));
    assert_false(fts_ready_check(metrics, all, reason, sizeof reason));
    assert_string_equal(reason, "extract: starting");

    /* A standby extractor is healthy and ready, however long ago it read. */
    fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_STANDBY);
    assert_true(
        fts_health_check(metrics, FTS_METRICS_ROLE_EXTRACT, 100000, 5000, reason, sizeof reason));
    assert_true(fts_ready_check(metrics, FTS_METRICS_ROLE_EXTRACT, reason, sizeof reason));

    /* Active: ready once both servers answered; red when the source is silent too long. */
    fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_ACTIVE);
    fts_signal_set(FTS_SIGNAL_EXTRACT_LAST_READ_MS, 96000);
    assert_false(fts_ready_check(metrics, FTS_METRICS_ROLE_EXTRACT, reason, sizeof reason));
    assert_string_equal(reason, "extract: Redis does not answer");
    fts_signal_set(FTS_SIGNAL_EXTRACT_REDIS_OK, 1);
    fts_signal_set(FTS_SIGNAL_MONGO_OK, 1);
    assert_true(fts_ready_check(metrics, FTS_METRICS_ROLE_EXTRACT, reason, sizeof reason));
    assert_true(
        fts_health_check(metrics, FTS_METRICS_ROLE_EXTRACT, 100000, 5000, reason, sizeof reason));
    assert_false(
        fts_health_check(metrics, FTS_METRICS_ROLE_EXTRACT, 101001, 5000, reason, sizeof reason));
    assert_non_null(strstr(reason, "MongoDB returned nothing"));
    assert_non_null(strstr(reason, "5001 ms"));
    /* Paused by backpressure on purpose: not a stall. */
    fts_signal_set(FTS_SIGNAL_EXTRACT_PAUSED, 1);
    assert_true(
        fts_health_check(metrics, FTS_METRICS_ROLE_EXTRACT, 101001, 5000, reason, sizeof reason));
    fts_signal_set(FTS_SIGNAL_EXTRACT_PAUSED, 0);
    fts_signal_set(FTS_SIGNAL_EXTRACT_LAST_READ_MS, 101000);
    /* The worker restarting in a loop. */
    fts_signal_set(FTS_SIGNAL_WORKER_QUICK_ENDS, FTS_WORKER_LOOP_ENDS - 1);
    assert_true(
        fts_health_check(metrics, FTS_METRICS_ROLE_EXTRACT, 101001, 5000, reason, sizeof reason));
    fts_signal_set(FTS_SIGNAL_WORKER_QUICK_ENDS, FTS_WORKER_LOOP_ENDS);
    assert_false(
        fts_health_check(metrics, FTS_METRICS_ROLE_EXTRACT, 101001, 5000, reason, sizeof reason));
    assert_non_null(strstr(reason, "restarting in a loop"));
    fts_signal_set(FTS_SIGNAL_WORKER_QUICK_ENDS, 0);

    /* The loader: red only when it holds entries and settled none for too long. */
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_RUNNING);
    fts_signal_set(FTS_SIGNAL_LOAD_PROGRESS_MS, 90000);
    assert_true(
        fts_health_check(metrics, FTS_METRICS_ROLE_LOAD, 101001, 5000, reason, sizeof reason));
    fts_metric_set(FTS_METRIC_PENDING, 0, 7);
    assert_false(fts_health_check(metrics, all, 101001, 5000, reason, sizeof reason));
    assert_non_null(strstr(reason, "load: 7 entries held and none settled for 11001 ms"));
    fts_signal_set(FTS_SIGNAL_LOAD_PROGRESS_MS, 100000);
    assert_true(fts_health_check(metrics, all, 101001, 5000, reason, sizeof reason));
    assert_false(fts_ready_check(metrics, FTS_METRICS_ROLE_LOAD, reason, sizeof reason));
    fts_signal_set(FTS_SIGNAL_LOAD_REDIS_OK, 1);
    assert_false(fts_ready_check(metrics, FTS_METRICS_ROLE_LOAD, reason, sizeof reason));
    assert_string_equal(reason, "load: Elasticsearch gives no usable answer");
    fts_signal_set(FTS_SIGNAL_ES_OK, 1);
    assert_true(fts_ready_check(metrics, all, reason, sizeof reason));
    fts_metrics_destroy(metrics);
}

/* promtool (Debian's prometheus package) accepts the whole rendering, with every family and
 * values in every shape (0, integers, fractions). */
static void test_promtool_accepts_the_rendering(void **state)
{
    (void)state;
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        fail_msg("promtool is not installed: run deploy/local/install-deps.sh (Debian package "
                 "prometheus)");
    }
    fts_metrics_t *metrics = fts_metrics_new("0.1.0");
    fts_metrics_install(metrics);
    fts_metric_add(FTS_METRIC_EVENTS_READ, 0, 12);
    fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_RETRIED, 3);
    fts_metric_observe(FTS_METRIC_BULK_DURATION, 0.0421);
    fts_metric_set(FTS_METRIC_PENDING, 0, 2);
    fts_signal_set(FTS_SIGNAL_LAST_ACK_TS_WALL_MS, 1000);
    char *text = render(metrics, FTS_METRICS_ROLE_ALL, 3500);
    char path[] = "/tmp/ftsync-test-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char command[256];
    /* promtool reads the exposition on stdin; any lint problem makes it exit non-zero. */
    snprintf(command, sizeof command, "promtool check metrics < %s", path);
    int status = system(command);
    unlink(path);
    if (status != 0) {
        fail_msg("promtool check metrics refused:\n%s", text);
    }
    bson_free(text);
    fts_metrics_destroy(metrics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_updates_do_nothing_when_nothing_is_installed),
        cmocka_unit_test(test_counters_gauges_and_histogram_render),
        cmocka_unit_test(test_lag_is_now_minus_last_ack_while_entries_are_held),
        cmocka_unit_test(test_a_forked_child_counts_into_the_parents_block),
        cmocka_unit_test(test_a_memfd_block_is_adopted_and_a_bad_one_refused),
        cmocka_unit_test(test_health_and_readiness),
        cmocka_unit_test(test_promtool_accepts_the_rendering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
