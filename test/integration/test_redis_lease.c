/*
 * test_redis_lease.c - the one-active-extractor lease against a real redis-server
 * (adapters/redis/redis_lease.c): acquire, contend (who holds it and for how long), renew,
 * expiry and takeover, release, and what the old holder learns after a takeover (it must
 * neither prolong nor delete its successor's lease). One private server; each test a pipeline
 * name of its own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "assertions.h"

#include "redis_conn.h"
#include "redis_lease.h"
#include "redis_server.h"
#include "test_time.h"

static fts_test_redis_server_t *server;

static fts_redis_t *connect_ok(void)
{
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.connect_timeout_ms = 1000;
    options.command_timeout_ms = 2000;
    options.reconnect_base_ms = 10;
    options.reconnect_cap_ms = 100;
    options.reconnect_max_wait_ms = 500;
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_t *redis = fts_redis_new(fts_test_redis_server_url(server), &options, &err);
    if (!redis) {
        fail_msg("cannot connect: %s", err.message);
    }
    return redis;
}

static void unique_pipeline(char *name, size_t size, const char *label)
{
    static int counter;
    snprintf(name, size, "t%d-%s-%d", (int)getpid(), label, ++counter);
}

static fts_redis_lease_t *lease_ok(fts_redis_t *redis, const char *pipeline, uint64_t ttl_ms,
                                   const char *owner)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_lease_t *lease = fts_redis_lease_new(redis, pipeline, ttl_ms, owner, &err);
    if (!lease) {
        fail_msg("cannot create the lease: %s", err.message);
    }
    return lease;
}

static fts_lease_status_t acquire(fts_redis_lease_t *lease)
{
    fts_lease_status_t status;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_lease_acquire(lease, &status, &err)) {
        fail_msg("acquire failed: %s", err.message);
    }
    return status;
}

static fts_lease_status_t renew(fts_redis_lease_t *lease)
{
    fts_lease_status_t status;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_lease_renew(lease, &status, &err)) {
        fail_msg("renew failed: %s", err.message);
    }
    return status;
}

static fts_lease_status_t release(fts_redis_lease_t *lease)
{
    fts_lease_status_t status;
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_redis_lease_release(lease, &status, &err)) {
        fail_msg("release failed: %s", err.message);
    }
    return status;
}

/* The key's value (NULL when absent; free it) and its PTTL. */
static char *lease_value(fts_redis_t *redis, const char *key, long long *pttl)
{
    const char *get[] = {"GET", key};
    const char *ttl[] = {"PTTL", key};
    fts_error_t err;
    fts_error_clear(&err);
    redisReply *reply = fts_redis_command_argv(redis, 2, get, NULL, &err);
    assert_non_null(reply);
    char *value = reply->type == REDIS_REPLY_STRING ? strdup(reply->str) : NULL;
    freeReplyObject(reply);
    reply = fts_redis_command_argv(redis, 2, ttl, NULL, &err);
    assert_non_null(reply);
    *pttl = reply->integer;
    freeReplyObject(reply);
    return value;
}

static void test_acquire_contend_renew_release(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "lease");
    fts_redis_t *redis_a = connect_ok();
    fts_redis_t *redis_b = connect_ok();
    fts_redis_lease_t *a = lease_ok(redis_a, pipeline, 5000, NULL);
    fts_redis_lease_t *b = lease_ok(redis_b, pipeline, 5000, NULL);
    const char *key = fts_redis_lease_key(a);
    char expected_key[128];
    snprintf(expected_key, sizeof expected_key, "ftsync:{%s}:lease", pipeline);
    assert_string_equal(key, expected_key);
    assert_string_not_equal(fts_redis_lease_owner(a), fts_redis_lease_owner(b));
    assert_int_equal(fts_redis_lease_remaining_ms(a), 0);

    /* A takes it. */
    fts_lease_status_t status = acquire(a);
    assert_int_equal(status.state, FTS_LEASE_ACQUIRED);
    uint64_t remaining = fts_redis_lease_remaining_ms(a);
    assert_true(remaining > 4000 && remaining <= 5000);
    long long pttl;
    char *value = lease_value(redis_a, key, &pttl);
    assert_string_equal(value, fts_redis_lease_owner(a));
    assert_true(pttl > 4000 && pttl <= 5000);
    free(value);

    /* B is told who holds it and for how long. */
    status = acquire(b);
    assert_int_equal(status.state, FTS_LEASE_HELD);
    assert_string_equal(status.holder, fts_redis_lease_owner(a));
    assert_true(status.holder_ttl_ms > 4000 && status.holder_ttl_ms <= 5000);
    assert_int_equal(fts_redis_lease_remaining_ms(b), 0);

    /* B cannot renew or release what is A's, and A keeps it. */
    status = renew(b);
    assert_int_equal(status.state, FTS_LEASE_LOST);
    assert_string_equal(status.holder, fts_redis_lease_owner(a));
    status = release(b);
    assert_int_equal(status.state, FTS_LEASE_LOST);
    value = lease_value(redis_a, key, &pttl);
    assert_string_equal(value, fts_redis_lease_owner(a));
    free(value);

    /* A renews: the server's TTL starts again; acquiring again renews too. */
    fts_test_sleep_ms(300);
    value = lease_value(redis_a, key, &pttl);
    assert_true(pttl < 4800);
    free(value);
    status = renew(a);
    assert_int_equal(status.state, FTS_LEASE_ACQUIRED);
    value = lease_value(redis_a, key, &pttl);
    assert_true(pttl > 4800);
    free(value);
    assert_true(fts_redis_lease_remaining_ms(a) > 4800);
    status = acquire(a);
    assert_int_equal(status.state, FTS_LEASE_ACQUIRED);

    /* A stops cleanly: released, and B takes over at once. */
    status = release(a);
    assert_int_equal(status.state, FTS_LEASE_RELEASED);
    assert_int_equal(fts_redis_lease_remaining_ms(a), 0);
    value = lease_value(redis_a, key, &pttl);
    assert_null(value);
    status = acquire(b);
    assert_int_equal(status.state, FTS_LEASE_ACQUIRED);
    release(b);

    fts_redis_lease_destroy(b);
    fts_redis_lease_destroy(a);
    fts_redis_destroy(redis_b);
    fts_redis_destroy(redis_a);
}

static void test_expire_and_takeover(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "takeover");
    fts_redis_t *redis = connect_ok();
    fts_redis_lease_t *a = lease_ok(redis, pipeline, 300, "extractor-a");
    fts_redis_lease_t *b = lease_ok(redis, pipeline, 300, "extractor-b");
    assert_int_equal(acquire(a).state, FTS_LEASE_ACQUIRED);
    assert_int_equal(acquire(b).state, FTS_LEASE_HELD);

    /* A stops renewing (hung, partitioned): its own deadline runs out no later than the key. */
    fts_test_sleep_ms(350);
    assert_int_equal(fts_redis_lease_remaining_ms(a), 0);
    fts_lease_status_t status = acquire(b);
    assert_int_equal(status.state, FTS_LEASE_ACQUIRED);
    assert_true(fts_redis_lease_remaining_ms(b) > 0);

    /* A comes back: its renewal says it lost the lease and to whom, and does not extend it;
     * its release does not delete B's. */
    status = renew(a);
    assert_int_equal(status.state, FTS_LEASE_LOST);
    assert_string_equal(status.holder, "extractor-b");
    assert_true(status.holder_ttl_ms > 0 && status.holder_ttl_ms <= 300);
    assert_int_equal(fts_redis_lease_remaining_ms(a), 0);
    status = release(a);
    assert_int_equal(status.state, FTS_LEASE_LOST);
    long long pttl;
    char *value = lease_value(redis, fts_redis_lease_key(b), &pttl);
    assert_string_equal(value, "extractor-b");
    free(value);
    status = acquire(a);
    assert_int_equal(status.state, FTS_LEASE_HELD);
    assert_string_equal(status.holder, "extractor-b");

    /* Nobody renews: the lease is gone, and a renewal says it expired (no holder). */
    fts_test_sleep_ms(350);
    status = renew(b);
    assert_int_equal(status.state, FTS_LEASE_LOST);
    assert_string_equal(status.holder, "");
    assert_int_equal(status.holder_ttl_ms, -2);

    fts_redis_lease_destroy(b);
    fts_redis_lease_destroy(a);
    fts_redis_destroy(redis);
}

static void test_redis_down_lets_the_lease_run_out(void **state)
{
    (void)state;
    char pipeline[64];
    unique_pipeline(pipeline, sizeof pipeline, "down");
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_redis_server_t *own = fts_test_redis_server_start(NULL, &err);
    if (!own) {
        fail_msg("cannot start redis-server: %s", err.message);
    }
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.reconnect_max_wait_ms = 200;
    fts_redis_t *redis = fts_redis_new(fts_test_redis_server_url(own), &options, &err);
    assert_non_null(redis);
    fts_redis_lease_t *lease = lease_ok(redis, pipeline, 1000, NULL);
    assert_int_equal(acquire(lease).state, FTS_LEASE_ACQUIRED);
    uint64_t before = fts_redis_lease_remaining_ms(lease);

    /* Redis gone: renew fails and does not extend the local deadline, which runs out. */
    assert_true(fts_test_redis_server_stop(own, &err));
    fts_lease_status_t status;
    fts_error_clear(&err);
    assert_false(fts_redis_lease_renew(lease, &status, &err));
    assert_contains(err.message, "cannot renew the lease");
    assert_true(fts_redis_lease_remaining_ms(lease) <= before);
    fts_test_sleep_ms(1100);
    assert_int_equal(fts_redis_lease_remaining_ms(lease), 0);
    assert_false(fts_redis_lease_acquire(lease, &status, &err));
    assert_contains(err.message, "cannot acquire the lease");

    fts_redis_lease_destroy(lease);
    fts_redis_destroy(redis);
    fts_test_redis_server_destroy(own);
}

static int start_server(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    fts_error_t err;
    fts_error_clear(&err);
    server = fts_test_redis_server_start(NULL, &err);
    if (!server) {
        fprintf(stderr, "cannot start redis-server: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int stop_server(void **state)
{
    (void)state;
    fts_test_redis_server_destroy(server);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquire_contend_renew_release),
        cmocka_unit_test(test_expire_and_takeover),
        cmocka_unit_test(test_redis_down_lets_the_lease_run_out),
    };
    return cmocka_run_group_tests(tests, start_server, stop_server);
}
