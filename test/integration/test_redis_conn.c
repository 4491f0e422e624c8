/*
 * test_redis_conn.c - the synchronous Redis connection against real redis-servers.
 *
 * Most tests run their own server (test/support/redis_server.h) because they need a password,
 * an ACL user, a restart or DEBUG; one talks to the shared testbed server. Besides the happy
 * paths they pin the failure contract: which error code, whose message, no password anywhere,
 * no command resent, and a connection that comes back on the next command.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "assertions.h"

#include "log.h"
#include "redis_conn.h"
#include "redis_server.h"
#include "signals.h"
#include "testbed.h"

/* Options that keep failing tests short: a dead server is given up on within a second. */
static fts_redis_options_t quick_options(void)
{
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.connect_timeout_ms = 1000;
    options.command_timeout_ms = 2000;
    options.reconnect_base_ms = 10;
    options.reconnect_cap_ms = 100;
    options.reconnect_max_wait_ms = 1000;
    return options;
}

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static fts_test_redis_server_t *start_server(const char *const *extra_args)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_redis_server_t *server = fts_test_redis_server_start(extra_args, &err);
    if (!server) {
        fail_msg("cannot start redis-server: %s", err.message);
    }
    return server;
}

static fts_redis_t *connect_ok(const char *url, const fts_redis_options_t *options)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_t *redis = fts_redis_new(url, options, &err);
    if (!redis) {
        fail_msg("cannot connect to %s: %s", url, err.message);
    }
    return redis;
}

/* A string reply's text, failing the test on anything else; the reply is freed. */
static void assert_reply_text(redisReply *reply, const char *expected)
{
    assert_non_null(reply);
    if (expected) {
        assert_true(reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS);
        assert_string_equal(reply->str, expected);
    } else {
        assert_int_equal(reply->type, REDIS_REPLY_NIL);
    }
    freeReplyObject(reply);
}

/* Sends a command written out in full (hiredis splits it at spaces); NULL on failure. */
static redisReply *run(fts_redis_t *redis, fts_error_t *err, const char *command)
{
    fts_error_clear(err);
    return fts_redis_command(redis, err, command);
}

static redisReply *run_ok(fts_redis_t *redis, const char *const *argv, int argc)
{
    fts_error_t err;
    fts_error_clear(&err);
    redisReply *reply = fts_redis_command_argv(redis, argc, (const char **)argv, NULL, &err);
    if (!reply) {
        fail_msg("%s failed: %s", argv[0], err.message);
    }
    return reply;
}

/* Captures log lines in memory for tests that check what was (not) logged. */
static char *log_text;
static size_t log_size;
static FILE *log_stream;

static void capture_log(void)
{
    fts_log_reset();
    log_stream = open_memstream(&log_text, &log_size);
    assert_non_null(log_stream);
    fts_log_set_stream(log_stream);
    fts_log_set_level(FTS_LOG_DEBUG);
    /* No rate limit: the test counts what this code logs, not what the logger holds back. */
    fts_log_set_repeat_interval_ms(0);
}

static const char *captured_log(void)
{
    fflush(log_stream);
    return log_text ? log_text : "";
}

static void release_log(void)
{
    fts_log_reset();
    if (log_stream) {
        fclose(log_stream);
        log_stream = NULL;
    }
    free(log_text);
    log_text = NULL;
}

static unsigned count_occurrences(const char *text, const char *needle)
{
    unsigned count = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle)) {
        count++;
    }
    return count;
}

static void test_shared_testbed_server(void **state)
{
    (void)state;
    const char *url = fts_testbed_require("FTSYNC_TEST_REDIS_URL");
    fts_redis_t *redis = connect_ok(url, NULL);
    fts_error_t err;
    assert_true(fts_redis_ping(redis, &err));
    char key[64];
    snprintf(key, sizeof key, "ftsync:test:conn:%d", (int)getpid());
    const char *set[] = {"SET", key, "hello", "EX", "60"};
    assert_reply_text(run_ok(redis, set, 5), "OK");
    const char *get[] = {"GET", key};
    assert_reply_text(run_ok(redis, get, 2), "hello");
    assert_int_equal(fts_redis_connection_count(redis), 1);
    fts_redis_destroy(redis);
}

static void test_commands_and_binary_arguments(void **state)
{
    fts_test_redis_server_t *server = *state;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server), NULL);
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_ping(redis, &err));

    /* %b and argvlen carry bytes a C string cannot: a NUL in the middle survives. */
    const char value[] = {'a', '\0', 'b'};
    redisReply *reply = fts_redis_command(redis, &err, "SET %s %b", "bin", value, sizeof value);
    assert_reply_text(reply, "OK");
    const char *get[] = {"GET", "bin"};
    const size_t get_len[] = {3, 3};
    reply = fts_redis_command_argv(redis, 2, get, get_len, &err);
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_int_equal(reply->len, 3);
    assert_memory_equal(reply->str, value, 3);
    freeReplyObject(reply);

    assert_string_equal(fts_redis_masked_url(redis), fts_test_redis_server_url(server));
    fts_redis_destroy(redis);
}

static void test_select_db(void **state)
{
    fts_test_redis_server_t *server = *state;
    char url3[128];
    snprintf(url3, sizeof url3, "redis://127.0.0.1:%d/3", fts_test_redis_server_port(server));
    fts_redis_t *db3 = connect_ok(url3, NULL);
    fts_redis_t *db0 = connect_ok(fts_test_redis_server_url(server), NULL);

    const char *set[] = {"SET", "only-in-3", "yes"};
    assert_reply_text(run_ok(db3, set, 3), "OK");
    const char *get[] = {"GET", "only-in-3"};
    assert_reply_text(run_ok(db3, get, 2), "yes");
    assert_reply_text(run_ok(db0, get, 2), NULL);

    /* The server agrees on which db each connection uses. */
    const char *info[] = {"CLIENT", "INFO"};
    redisReply *reply = run_ok(db3, info, 2);
    assert_contains(reply->str, " db=3 ");
    freeReplyObject(reply);
    reply = run_ok(db0, info, 2);
    assert_contains(reply->str, " db=0 ");
    freeReplyObject(reply);

    fts_redis_destroy(db3);
    fts_redis_destroy(db0);
}

static void test_requirepass(void **state)
{
    (void)state;
    /* A password needing percent-encoding: '@', ' ', ':' and '/'. */
    const char *args[] = {"--requirepass", "p@ss w0rd:x/y", NULL};
    fts_test_redis_server_t *server = start_server(args);
    int port = fts_test_redis_server_port(server);
    char url[256];
    fts_error_t err;
    capture_log();

    snprintf(url, sizeof url, "redis://:p%%40ss%%20w0rd%%3Ax%%2Fy@127.0.0.1:%d/0", port);
    fts_redis_t *redis = connect_ok(url, NULL);
    assert_true(fts_redis_ping(redis, &err));
    char masked[128];
    snprintf(masked, sizeof masked, "redis://:***@127.0.0.1:%d/0", port);
    assert_string_equal(fts_redis_masked_url(redis), masked);
    fts_redis_destroy(redis);

    /* Wrong password: AUTH, with the server's own words, and not our password. */
    snprintf(url, sizeof url, "redis://:WrongPassw0rd@127.0.0.1:%d/0", port);
    fts_error_clear(&err);
    assert_null(fts_redis_new(url, NULL, &err));
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    assert_contains(err.message, "WRONGPASS invalid username-password pair");
    assert_not_contains(err.message, "WrongPassw0rd");

    /* No password at all: the server's NOAUTH is an AUTH error too. */
    fts_error_clear(&err);
    assert_null(fts_redis_new(fts_test_redis_server_url(server), NULL, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    assert_contains(err.message, "NOAUTH");

    assert_not_contains(captured_log(), "WrongPassw0rd");
    assert_not_contains(captured_log(), "w0rd:x");
    release_log();
    fts_test_redis_server_destroy(server);
}

static void test_acl_users(void **state)
{
    (void)state;
    const char *args[] = {"--user", "alice", "on",      ">alice-pw", "~*",    "+@all", "--user",
                          "bob",    "on",    ">bob-pw", "~*",        "+ping", "+get",  NULL};
    fts_test_redis_server_t *server = start_server(args);
    int port = fts_test_redis_server_port(server);
    char url[256];
    fts_error_t err;

    snprintf(url, sizeof url, "redis://alice:alice-pw@127.0.0.1:%d/2", port);
    fts_redis_t *alice = connect_ok(url, NULL);
    const char *whoami[] = {"ACL", "WHOAMI"};
    assert_reply_text(run_ok(alice, whoami, 2), "alice");
    fts_redis_destroy(alice);

    snprintf(url, sizeof url, "redis://alice:bob-pw@127.0.0.1:%d/0", port);
    fts_error_clear(&err);
    assert_null(fts_redis_new(url, NULL, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    assert_contains(err.message, "WRONGPASS");
    assert_not_contains(err.message, "bob-pw");

    /* A permission the user lacks is about credentials too; the connection stays usable. */
    snprintf(url, sizeof url, "redis://bob:bob-pw@127.0.0.1:%d/0", port);
    fts_redis_t *bob = connect_ok(url, NULL);
    fts_error_clear(&err);
    assert_null(fts_redis_command(bob, &err, "SET %s %s", "k", "v"));
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    assert_contains(err.message, "NOPERM");
    assert_true(fts_redis_ping(bob, &err));
    assert_int_equal(fts_redis_connection_count(bob), 1);
    fts_redis_destroy(bob);

    fts_test_redis_server_destroy(server);
}

static void test_reconnects_after_restart(void **state)
{
    (void)state;
    const char *args[] = {"--requirepass", "restart-pw", NULL};
    fts_test_redis_server_t *server = start_server(args);
    char url[256];
    snprintf(url, sizeof url, "redis://:restart-pw@127.0.0.1:%d/4",
             fts_test_redis_server_port(server));
    fts_redis_options_t options = quick_options();
    options.reconnect_max_wait_ms = 10000;
    fts_redis_t *redis = connect_ok(url, &options);
    fts_error_t err;

    const char *set[] = {"SET", "kept", "across-restart"};
    assert_reply_text(run_ok(redis, set, 3), "OK");
    assert_int_equal(fts_redis_connection_count(redis), 1);

    fts_error_clear(&err);
    if (!fts_test_redis_server_restart(server, &err)) {
        fail_msg("restart failed: %s", err.message);
    }

    /* The contract allows the first command after a restart to fail (it may have been sent
     * on the dead connection); the one after must succeed. */
    redisReply *reply = NULL;
    for (int attempt = 0; attempt < 2 && !reply; attempt++) {
        reply = run(redis, &err, "GET kept");
        if (!reply) {
            assert_true(err.code == FTS_ERROR_CODE_IO || err.code == FTS_ERROR_CODE_CONNECT);
        }
    }
    if (!reply) {
        fail_msg("no command succeeded after the restart: %s", err.message);
    }
    /* Same db (4) and the AOF kept the data: re-AUTH and re-SELECT happened. */
    assert_reply_text(reply, "across-restart");
    assert_int_equal(fts_redis_connection_count(redis), 2);

    fts_redis_destroy(redis);
    fts_test_redis_server_destroy(server);
}

static void test_idle_close_is_repaired_before_sending(void **state)
{
    fts_test_redis_server_t *server = *state;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server), NULL);
    fts_redis_t *killer = connect_ok(fts_test_redis_server_url(server), NULL);
    fts_error_t err;

    redisReply *reply = run(redis, &err, "CLIENT ID");
    assert_non_null(reply);
    long long id = reply->integer;
    freeReplyObject(reply);
    reply = fts_redis_command(killer, &err, "CLIENT KILL ID %lld", id);
    assert_non_null(reply);
    assert_int_equal(reply->integer, 1);
    freeReplyObject(reply);
    usleep(100 * 1000); /* the FIN crosses loopback */

    /* Nothing was sent on the closed connection, so this command need not fail. */
    reply = run(redis, &err, "CLIENT ID");
    if (!reply) {
        fail_msg("command after an idle close failed: %s", err.message);
    }
    assert_true(reply->integer != id);
    freeReplyObject(reply);
    assert_int_equal(fts_redis_connection_count(redis), 2);

    fts_redis_destroy(killer);
    fts_redis_destroy(redis);
}

static void test_unreachable_port(void **state)
{
    (void)state;
    int port = fts_test_free_port();
    assert_true(port > 0);
    char url[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    fts_redis_options_t options = quick_options();
    fts_error_t err;
    fts_error_clear(&err);
    uint64_t started = now_ms();
    assert_null(fts_redis_new(url, &options, &err));
    /* fts_redis_new makes one attempt: a bad setting fails at once. */
    assert_true(now_ms() - started < 1000);
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_int_equal(err.code, FTS_ERROR_CODE_CONNECT);
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    assert_contains(err.message, address);
    assert_contains(err.message, "Connection refused");
}

static void test_bad_url_is_a_config_error(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    assert_null(fts_redis_new("redis://:NotShown1@127.0.0.1:99999/0", NULL, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_contains(err.message, "port");
    assert_not_contains(err.message, "NotShown1");
}

static void test_server_error_reply(void **state)
{
    fts_test_redis_server_t *server = *state;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server), NULL);
    fts_error_t err;
    assert_reply_text(run(redis, &err, "SET text hello"), "OK");

    fts_error_clear(&err);
    assert_null(run(redis, &err, "INCR text"));
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_int_equal(err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(err.message, "INCR");
    assert_contains(err.message, "ERR value is not an integer");

    fts_error_clear(&err);
    assert_null(run(redis, &err, "LPUSH text x"));
    assert_int_equal(err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(err.message, "WRONGTYPE Operation against a key holding the wrong kind");

    /* An error reply is an answer, not a broken connection. */
    assert_true(fts_redis_ping(redis, &err));
    assert_int_equal(fts_redis_connection_count(redis), 1);

    /* Nested error replies are the caller's to read. */
    assert_reply_text(run(redis, &err, "MULTI"), "OK");
    redisReply *queued = run(redis, &err, "INCR text");
    assert_reply_text(queued, "QUEUED");
    redisReply *exec = run(redis, &err, "EXEC");
    assert_non_null(exec);
    assert_int_equal(exec->type, REDIS_REPLY_ARRAY);
    assert_int_equal(exec->element[0]->type, REDIS_REPLY_ERROR);
    freeReplyObject(exec);
    fts_redis_destroy(redis);
}

static void test_command_timeout_then_reconnect(void **state)
{
    fts_test_redis_server_t *server = *state;
    fts_redis_options_t options = quick_options();
    options.command_timeout_ms = 300;
    options.reconnect_max_wait_ms = 10000;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server), &options);
    fts_error_t err;

    fts_error_clear(&err);
    uint64_t started = now_ms();
    assert_null(run(redis, &err, "DEBUG SLEEP 2"));
    uint64_t waited = now_ms() - started;
    assert_true(waited >= 250 && waited < 1500);
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_int_equal(err.code, FTS_ERROR_CODE_TIMEOUT);
    assert_contains(err.message, "300 ms");

    /* The server sleeps on: reconnecting waits (with backoff) until it answers again. */
    fts_error_clear(&err);
    if (!fts_redis_ping(redis, &err)) {
        fail_msg("no reconnect after the timeout: %s", err.message);
    }
    assert_int_equal(fts_redis_connection_count(redis), 2);

    /* A blocking command asking for longer than the command timeout times out the same way. */
    fts_error_clear(&err);
    assert_null(run(redis, &err, "BLPOP nothing-here 2"));
    assert_int_equal(err.code, FTS_ERROR_CODE_TIMEOUT);
    assert_true(fts_redis_ping(redis, &err));
    assert_int_equal(fts_redis_connection_count(redis), 3);
    fts_redis_destroy(redis);
}

/* A script that increments a counter and then keeps the server busy for about a second. */
#define INCR_THEN_SPIN                                                                             \
    "redis.call('INCR', KEYS[1]) "                                                                 \
    "local s = redis.call('TIME') "                                                                \
    "repeat local n = redis.call('TIME') "                                                         \
    "until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 1000000 "                                     \
    "return 1"

static void test_timed_out_command_is_not_resent(void **state)
{
    fts_test_redis_server_t *server = *state;
    fts_redis_options_t options = quick_options();
    options.command_timeout_ms = 300;
    options.reconnect_max_wait_ms = 10000;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server), &options);
    fts_error_t err;
    assert_reply_text(run(redis, &err, "SET once 0"), "OK");

    /* The command reaches the server and takes effect, but its answer comes too late. */
    fts_error_clear(&err);
    assert_null(fts_redis_command(redis, &err, "EVAL %s 1 %s", INCR_THEN_SPIN, "once"));
    assert_int_equal(err.code, FTS_ERROR_CODE_TIMEOUT);
    assert_contains(err.message, "not resent");

    /* Once the server is free again: it ran exactly once, neither lost nor repeated. */
    redisReply *reply = NULL;
    uint64_t deadline = now_ms() + 10000;
    while (!reply && now_ms() < deadline) {
        reply = run(redis, &err, "GET once");
    }
    if (!reply) {
        fail_msg("no answer after the script: %s", err.message);
    }
    assert_reply_text(reply, "1");
    fts_redis_destroy(redis);
}

static void test_gives_up_and_logs_once(void **state)
{
    (void)state;
    fts_test_redis_server_t *server = start_server(NULL);
    fts_redis_options_t options = quick_options();
    options.reconnect_max_wait_ms = 600;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server), &options);
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_test_redis_server_stop(server, &err));
    capture_log();

    uint64_t started = now_ms();
    fts_error_clear(&err);
    assert_false(fts_redis_ping(redis, &err));
    uint64_t waited = now_ms() - started;
    assert_true(waited >= 550 && waited < 3000);
    assert_int_equal(err.code, FTS_ERROR_CODE_CONNECT);
    assert_contains(err.message, "gave up reconnecting");
    assert_contains(err.message, "Connection refused");

    /* Many attempts (10-100 ms apart over 600 ms), one line per kind of failure. */
    assert_int_equal(count_occurrences(captured_log(), "cannot reconnect to"), 1);

    /* A stop request cuts a long wait short. */
    fts_redis_destroy(redis);
    options.reconnect_max_wait_ms = 30000;
    assert_true(fts_test_redis_server_restart(server, &err));
    redis = connect_ok(fts_test_redis_server_url(server), &options);
    assert_true(fts_test_redis_server_stop(server, &err));
    fts_signals_request_stop();
    started = now_ms();
    fts_error_clear(&err);
    assert_false(fts_redis_ping(redis, &err));
    assert_true(now_ms() - started < 1000);
    assert_contains(err.message, "stop requested");
    fts_signals_reset();

    /* The server is back: the next command reconnects on its own. */
    assert_true(fts_test_redis_server_restart(server, &err));
    if (!fts_redis_ping(redis, &err)) {
        fail_msg("no reconnect once the server was back: %s", err.message);
    }
    assert_int_equal(fts_redis_connection_count(redis), 2);
    assert_contains(captured_log(), "reconnected to");

    release_log();
    fts_redis_destroy(redis);
    fts_test_redis_server_destroy(server);
}

static void test_waits_for_the_server_to_come_back(void **state)
{
    (void)state;
    fts_test_redis_server_t *server = start_server(NULL);
    fts_redis_options_t options = quick_options();
    options.reconnect_max_wait_ms = 15000;
    fts_redis_t *redis = connect_ok(fts_test_redis_server_url(server), &options);
    const char *set[] = {"SET", "survivor", "1"};
    assert_reply_text(run_ok(redis, set, 3), "OK");
    fts_error_t err;
    assert_true(fts_test_redis_server_stop(server, &err));

    /* The client waits in a child process while this one brings the server back. */
    fflush(NULL);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        fts_error_t child_err;
        fts_error_clear(&child_err);
        redisReply *reply = fts_redis_command(redis, &child_err, "GET survivor");
        bool ok = reply && reply->type == REDIS_REPLY_STRING && strcmp(reply->str, "1") == 0 &&
                  fts_redis_connection_count(redis) == 2;
        if (!ok) {
            fprintf(stderr, "child: %s\n", reply ? "wrong reply" : child_err.message);
        }
        /* _exit: the parent's atexit handlers (which kill servers) are not the child's. */
        _exit(ok ? 0 : 1);
    }
    usleep(700 * 1000);
    bool restarted = fts_test_redis_server_restart(server, &err);
    int status = 0;
    waitpid(child, &status, 0);
    if (!restarted) {
        fail_msg("restart failed: %s", err.message);
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    fts_redis_destroy(redis);
    fts_test_redis_server_destroy(server);
}

static void test_destroy_accepts_null(void **state)
{
    (void)state;
    fts_redis_destroy(NULL);
    fts_test_redis_server_destroy(NULL);
}

static int start_shared_server(void **state)
{
    /* As in ftsync, where fts_signals_install() does it (see redis_conn.h). */
    signal(SIGPIPE, SIG_IGN);
    /* DEBUG SLEEP needs the debug command; "local" allows it from loopback only. */
    const char *args[] = {"--enable-debug-command", "local", NULL};
    fts_error_t err;
    fts_error_clear(&err);
    *state = fts_test_redis_server_start(args, &err);
    if (!*state) {
        fprintf(stderr, "cannot start redis-server: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int stop_shared_server(void **state)
{
    fts_test_redis_server_destroy(*state);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_testbed_server),
        cmocka_unit_test(test_commands_and_binary_arguments),
        cmocka_unit_test(test_select_db),
        cmocka_unit_test(test_requirepass),
        cmocka_unit_test(test_acl_users),
        cmocka_unit_test(test_reconnects_after_restart),
        cmocka_unit_test(test_idle_close_is_repaired_before_sending),
        cmocka_unit_test(test_unreachable_port),
        cmocka_unit_test(test_bad_url_is_a_config_error),
        cmocka_unit_test(test_server_error_reply),
        cmocka_unit_test(test_command_timeout_then_reconnect),
        cmocka_unit_test(test_timed_out_command_is_not_resent),
        cmocka_unit_test(test_gives_up_and_logs_once),
        cmocka_unit_test(test_waits_for_the_server_to_come_back),
        cmocka_unit_test(test_destroy_accepts_null),
    };
    return cmocka_run_group_tests(tests, start_shared_server, stop_shared_server);
}
