/*
 * test_stop_waits.c - SIGTERM is honoured while a process waits on a server that accepts
 * connections and never answers (issue 13, item 4).
 *
 * Each case points one setting at a stand-in that takes the connection and then says nothing
 * (http_capture.h stalling), waits until the process is seen waiting on it, sends SIGTERM and
 * asserts the process ends by itself, with exit status 0, within STOP_BOUND_MS. The bound is
 * far above the one second the code aims at: it asserts liveness (the wait does end on SIGTERM,
 * not at a 60 s request timeout), not speed, so that a loaded machine does not fail it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <inttypes.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "extract_harness.h"
#include "http_capture.h"
#include "load_harness.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#define FTSYNC_BINARY "ftsync"
#endif

/* Liveness bound for the exit after SIGTERM (see the file comment). */
#define STOP_BOUND_MS 5000
/* How long the process may take to reach the stand-in. */
#define REACH_TIMEOUT_MS 30000
/* How long the wait lasts before SIGTERM: past any short first timeout. */
#define STALL_MS 1500
/* How long a process is given to start and reach a Redis that never answers. */
#define REDIS_SETTLE_MS 3000

static void test_load_start_es_never_answers(void **state)
{
    (void)state;
    fts_error_t err = {0};
    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    fts_http_capture_set_stall(es, true);

    char es_url[256];
    snprintf(es_url, sizeof es_url, "FTSYNC_ES_URL=%s", fts_http_capture_url(es));
    char redis[320];
    snprintf(redis, sizeof redis, "FTSYNC_QUEUE_REDIS_URL=%s",
             fts_testbed_require("FTSYNC_TEST_REDIS_URL"));
    char log_path[512];
    snprintf(log_path, sizeof log_path, "%s/stop-waits-load-es.log", fts_testbed_dir());
    const char *env[] = {es_url,
                         redis,
                         "FTSYNC_PIPELINE=stop-waits-es",
                         "FTSYNC_ES_INDEX=stop-waits-es",
                         "FTSYNC_ES_REQUEST_TIMEOUT_MS=60000",
                         "FTSYNC_ADMIN_ADDR=127.0.0.1:0",
                         NULL};
    fts_test_loader_t *loader = fts_test_loader_start(FTSYNC_BINARY, env, log_path, &err);
    assert_non_null(loader);

    /* The loader is in its start-up probe once the stand-in holds its request. */
    assert_true(fts_http_capture_wait(es, 1, REACH_TIMEOUT_MS));
    fts_test_sleep_ms(STALL_MS);
    assert_true(fts_test_loader_running(loader));

    uint64_t start = fts_test_monotonic_ms();
    assert_true(fts_test_loader_signal(loader, SIGTERM));
    int status = fts_test_loader_wait(loader, STOP_BOUND_MS);
    uint64_t took = fts_test_monotonic_ms() - start;
    fprintf(stderr, "load (Elasticsearch never answers): exit %d %" PRIu64 " ms after SIGTERM\n",
            status, took);
    if (status != 0) {
        fts_test_loader_print_log_tail(loader, 20);
    }
    assert_int_equal(status, 0);
    assert_true(took < STOP_BOUND_MS);

    fts_test_loader_destroy(loader);
    fts_http_capture_destroy(es);
}

/* extract with a MongoDB that accepts and never answers (not even the handshake): libmongoc's
 * defaults would block a call for 10 s (connect) to 30 s (server selection); the calls are
 * bounded below the lease TTL, so the SIGTERM is seen once the call fails. With
 * FTSYNC_LEASE_TTL_MS=4500 the bound is 2.25 s (max(TTL / 2, max await + 1 s)), so a call that
 * starts right before a renewal is due (every TTL / 3) still ends before the lease expires. */
static void test_extract_mongo_never_answers(void **state)
{
    (void)state;
    fts_error_t err = {0};
    fts_http_capture_t *mongo = fts_http_capture_new(&err);
    assert_non_null(mongo);
    fts_http_capture_set_stall(mongo, true);
    const char *port = strrchr(fts_http_capture_url(mongo), ':');
    assert_non_null(port);

    char uri[256];
    snprintf(uri, sizeof uri, "FTSYNC_MONGO_URI=mongodb://127.0.0.1%s/?directConnection=true",
             port);
    char redis[320];
    snprintf(redis, sizeof redis, "FTSYNC_STATE_REDIS_URL=%s",
             fts_testbed_require("FTSYNC_TEST_REDIS_URL"));
    char log_path[512];
    snprintf(log_path, sizeof log_path, "%s/stop-waits-extract-mongo.log", fts_testbed_dir());
    const char *env[] = {uri,
                         redis,
                         "FTSYNC_PIPELINE=stop-waits-mongo",
                         "FTSYNC_MONGO_DB=stopwaits",
                         "FTSYNC_MONGO_COLLECTION=apps",
                         "FTSYNC_LEASE_TTL_MS=4500",
                         "FTSYNC_ADMIN_ADDR=127.0.0.1:0",
                         NULL};
    unlink(log_path); /* this run's log only */
    fts_test_extract_t *extract = fts_test_extract_start(FTSYNC_BINARY, env, log_path, &err);
    assert_non_null(extract);

    /* The source is opened (and blocks on the stand-in) once the worker is started. */
    uint64_t deadline = fts_test_monotonic_ms() + REACH_TIMEOUT_MS;
    bool reached = false;
    while (!reached && fts_test_monotonic_ms() < deadline) {
        char *log = fts_test_extract_log(extract);
        reached = log && strstr(log, "transform worker started");
        free(log);
        fts_test_sleep_ms(20);
    }
    assert_true(reached);
    fts_test_sleep_ms(STALL_MS);
    assert_true(fts_test_extract_running(extract));

    uint64_t start = fts_test_monotonic_ms();
    int status = 0;
    bool exited = fts_test_extract_stop(extract, STOP_BOUND_MS, &status);
    uint64_t took = fts_test_monotonic_ms() - start;
    fprintf(stderr,
            "extract (MongoDB never answers): exited %d status 0x%x %" PRIu64 " ms after SIGTERM\n",
            exited, status, took);
    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fts_test_extract_print_log_tail(extract, 20);
    }
    assert_true(exited);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(took < STOP_BOUND_MS);
    /* The calls failed before the lease expired: it was renewed, never lost. */
    char *log = fts_test_extract_log(extract);
    assert_non_null(log);
    assert_null(strstr(log, "lease lost"));
    assert_null(strstr(log, "lost the lease"));
    /* Redis answers: the stop's own commands are not cut short by the stop. */
    assert_null(strstr(log, "cannot release the lease"));
    assert_non_null(strstr(log, "released the lease"));
    free(log);

    fts_test_extract_destroy(extract);
    fts_http_capture_destroy(mongo);
}

/* A TCP listener on 127.0.0.1 that nobody accepts on or reads from: connections complete (the
 * kernel's backlog), what is sent is never answered. Returns the socket; *port its port. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof address), 0);
    assert_int_equal(listen(fd, 16), 0);
    socklen_t length = sizeof address;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&address, &length), 0);
    *port = ntohs(address.sin_port);
    return fd;
}

/* Runs `ftsync <role>` with env, waits until the stand-in redis holds a connection of it and a
 * while more, sends SIGTERM and asserts a clean exit within the bound. */
static void stop_while_redis_stalls(const char *role, const char *const *env)
{
    fts_error_t err = {0};
    char log_path[512];
    snprintf(log_path, sizeof log_path, "%s/stop-waits-%s-redis.log", fts_testbed_dir(), role);
    unlink(log_path);
    pid_t pid = 0;
    fts_test_loader_t *loader = NULL;
    fts_test_extract_t *extract = NULL;
    if (strcmp(role, "load") == 0) {
        loader = fts_test_loader_start(FTSYNC_BINARY, env, log_path, &err);
        assert_non_null(loader);
    } else {
        extract = fts_test_extract_start(FTSYNC_BINARY, env, log_path, &err);
        assert_non_null(extract);
        pid = fts_test_extract_pid(extract);
    }
    /* Started, connected to the silent listener (nothing to see there), and waiting. */
    fts_test_sleep_ms(REDIS_SETTLE_MS);
    fts_test_sleep_ms(STALL_MS);
    uint64_t start = fts_test_monotonic_ms();
    int status = -1;
    if (loader) {
        assert_true(fts_test_loader_running(loader));
        assert_true(fts_test_loader_signal(loader, SIGTERM));
        status = fts_test_loader_wait(loader, STOP_BOUND_MS);
    } else {
        assert_true(fts_test_extract_running(extract));
        int wait_status = 0;
        if (fts_test_extract_stop(extract, STOP_BOUND_MS, &wait_status)) {
            status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128;
        }
    }
    uint64_t took = fts_test_monotonic_ms() - start;
    fprintf(stderr, "%s (Redis never answers): exit %d %" PRIu64 " ms after SIGTERM\n", role,
            status, took);
    if (status != 0) {
        if (loader) {
            fts_test_loader_print_log_tail(loader, 20);
        } else {
            fts_test_extract_print_log_tail(extract, 20);
        }
    }
    (void)pid;
    assert_int_equal(status, 0);
    assert_true(took < STOP_BOUND_MS);
    fts_test_loader_destroy(loader);
    fts_test_extract_destroy(extract);
}

static void test_extract_redis_never_answers(void **state)
{
    (void)state;
    int port = 0;
    int listener = silent_listener(&port);
    char url[256];
    snprintf(url, sizeof url, "FTSYNC_STATE_REDIS_URL=redis://127.0.0.1:%d/0", port);
    const char *env[] = {url,
                         "FTSYNC_MONGO_URI=mongodb://127.0.0.1:1/?directConnection=true",
                         "FTSYNC_PIPELINE=stop-waits-redis",
                         "FTSYNC_MONGO_DB=stopwaits",
                         "FTSYNC_MONGO_COLLECTION=apps",
                         "FTSYNC_REDIS_COMMAND_TIMEOUT_MS=60000",
                         "FTSYNC_LEASE_TTL_MS=2000",
                         "FTSYNC_ADMIN_ADDR=127.0.0.1:0",
                         NULL};
    stop_while_redis_stalls("extract", env);
    close(listener);
}

static void test_load_redis_never_answers(void **state)
{
    (void)state;
    fts_error_t err = {0};
    int port = 0;
    int listener = silent_listener(&port);
    fts_http_capture_t *es = fts_http_capture_new(&err);
    assert_non_null(es);
    fts_http_capture_queue_reply(es, 200, "application/json",
                                 "{\"name\":\"stand-in\",\"cluster_name\":\"test\",\"version\":"
                                 "{\"number\":\"7.10.2\"},\"tagline\":\"You Know, for Search\"}");
    fts_http_capture_queue_reply(es, 200, "application/json", "");
    /* The index's mapping carries this version scheme (README.md, Load). */
    fts_http_capture_queue_reply(
        es, 200, "application/json",
        "{\"stand-in\":{\"mappings\":{\"_meta\":{\"ftsync\":{\"version_scheme\":2}}}}}");
    fts_http_capture_set_reply(es, 500, "application/json", "{}");
    char url[256];
    snprintf(url, sizeof url, "FTSYNC_QUEUE_REDIS_URL=redis://127.0.0.1:%d/0", port);
    char es_url[256];
    snprintf(es_url, sizeof es_url, "FTSYNC_ES_URL=%s", fts_http_capture_url(es));
    const char *env[] = {url,
                         es_url,
                         "FTSYNC_PIPELINE=stop-waits-redis-load",
                         "FTSYNC_ES_INDEX=stop-waits-redis-load",
                         "FTSYNC_REDIS_COMMAND_TIMEOUT_MS=60000",
                         "FTSYNC_ADMIN_ADDR=127.0.0.1:0",
                         NULL};
    stop_while_redis_stalls("load", env);
    fts_http_capture_destroy(es);
    close(listener);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_start_es_never_answers),
        cmocka_unit_test(test_extract_mongo_never_answers),
        cmocka_unit_test(test_extract_redis_never_answers),
        cmocka_unit_test(test_load_redis_never_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
