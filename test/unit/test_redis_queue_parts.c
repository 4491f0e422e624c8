/*
 * test_redis_queue_parts.c - the pure parts of the Redis queue and lease (no server): key
 * names and pipeline-name checks, cluster-time text, checkpoint checks, the XADD shape every
 * action must have (invariant 4: no MAXLEN), reading a saved position (invariant 6: a
 * malformed one is an error naming key and field) and the backlog from XINFO GROUPS replies
 * built by hand, with and without a lag.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assertions.h"

#include "action.h"
#include "redis_lease.h"
#include "redis_queue.h"

/* ---- Replies built by hand (freed with freeReplyObject, which uses free()) ---- */

static redisReply *new_reply(int type)
{
    redisReply *reply = calloc(1, sizeof *reply);
    assert_non_null(reply);
    reply->type = type;
    return reply;
}

static redisReply *text_reply(int type, const char *text)
{
    redisReply *reply = new_reply(type);
    reply->str = strdup(text);
    reply->len = strlen(text);
    return reply;
}

static redisReply *str(const char *text)
{
    return text_reply(REDIS_REPLY_STRING, text);
}

static redisReply *integer(long long value)
{
    redisReply *reply = new_reply(REDIS_REPLY_INTEGER);
    reply->integer = value;
    return reply;
}

static redisReply *nil(void)
{
    return new_reply(REDIS_REPLY_NIL);
}

/* An array of count replies given as arguments (taken over). */
static redisReply *array(size_t count, ...)
{
    redisReply *reply = new_reply(REDIS_REPLY_ARRAY);
    reply->elements = count;
    reply->element = count ? calloc(count, sizeof *reply->element) : NULL;
    va_list args;
    va_start(args, count);
    for (size_t i = 0; i < count; i++) {
        reply->element[i] = va_arg(args, redisReply *);
    }
    va_end(args);
    return reply;
}

/* ---- Keys ---- */

static void test_keys(void **state)
{
    (void)state;
    fts_redis_keys_t keys;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_keys_init(&keys, "apps", &err));
    assert_string_equal(keys.stream, "ftsync:{apps}:stream");
    assert_string_equal(keys.dead, "ftsync:{apps}:dead");
    assert_string_equal(keys.token, "ftsync:{apps}:token");
    assert_string_equal(keys.snapshot, "ftsync:{apps}:snapshot");
    assert_string_equal(keys.lease, "ftsync:{apps}:lease");

    char longest[FTS_REDIS_PIPELINE_NAME_MAX + 2];
    memset(longest, 'a', FTS_REDIS_PIPELINE_NAME_MAX);
    longest[FTS_REDIS_PIPELINE_NAME_MAX] = '\0';
    assert_true(fts_redis_keys_init(&keys, longest, &err));
    assert_true(fts_redis_keys_init(&keys, "A-b_c.9", &err));

    /* Braces would move the hash tag; spaces and the rest make keys unreadable. */
    const char *bad[] = {"", "a{b", "a}b", "a b", "a:b", "é", "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fts_error_clear(&err);
        assert_false(fts_redis_keys_init(&keys, bad[i], &err));
        assert_int_equal(err.domain, FTS_ERROR_CONFIG);
        assert_contains(err.message, "pipeline name");
    }
    longest[FTS_REDIS_PIPELINE_NAME_MAX] = 'a';
    longest[FTS_REDIS_PIPELINE_NAME_MAX + 1] = '\0';
    assert_false(fts_redis_keys_init(&keys, longest, &err));
    assert_false(fts_redis_keys_init(&keys, NULL, &err));
}

/* ---- Cluster time and token kind ---- */

static void test_cluster_time(void **state)
{
    (void)state;
    char text[24];
    uint32_t seconds = 0;
    uint32_t increment = 0;
    fts_redis_cluster_time_format(1795428000u, 7, text, sizeof text);
    assert_string_equal(text, "1795428000.7");
    assert_true(fts_redis_cluster_time_parse(text, &seconds, &increment));
    assert_int_equal(seconds, 1795428000u);
    assert_int_equal(increment, 7);
    assert_true(fts_redis_cluster_time_parse("4294967295.4294967295", &seconds, &increment));
    assert_int_equal(seconds, UINT32_MAX);
    assert_int_equal(increment, UINT32_MAX);
    assert_true(fts_redis_cluster_time_parse("0.0", &seconds, &increment));

    const char *bad[] = {"",     "1",    "1.",  ".1",  "1.2.3",        "-1.2",  "+1.2",
                         " 1.2", "1.2 ", "a.b", "1,2", "4294967296.0", "0x1.2", "1.99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (fts_redis_cluster_time_parse(bad[i], &seconds, &increment)) {
            fail_msg("\"%s\" parsed as a cluster time", bad[i]);
        }
    }
    assert_false(fts_redis_cluster_time_parse(NULL, &seconds, &increment));
}

static void test_token_kind(void **state)
{
    (void)state;
    fts_token_kind_t kind;
    assert_string_equal(fts_token_kind_name(FTS_TOKEN_RESUME), "resume");
    assert_string_equal(fts_token_kind_name(FTS_TOKEN_START_AFTER), "start_after");
    assert_true(fts_token_kind_parse("resume", &kind));
    assert_int_equal(kind, FTS_TOKEN_RESUME);
    assert_true(fts_token_kind_parse("start_after", &kind));
    assert_int_equal(kind, FTS_TOKEN_START_AFTER);
    assert_string_equal(fts_token_kind_name(FTS_TOKEN_START_AT), "start_at");
    assert_true(fts_token_kind_parse("start_at", &kind));
    assert_int_equal(kind, FTS_TOKEN_START_AT);
    assert_false(fts_token_kind_parse("Resume", &kind));
    assert_false(fts_token_kind_parse("", &kind));
    assert_false(fts_token_kind_parse(NULL, &kind));
}

/* ---- Checkpoints ---- */

static void test_checkpoint_validate(void **state)
{
    (void)state;
    fts_error_t err;
    fts_checkpoint_t token = {.kind = FTS_CHECKPOINT_TOKEN,
                              .token = "{\"_data\":\"8263\"}",
                              .token_kind = FTS_TOKEN_RESUME};
    fts_checkpoint_t snapshot = {.kind = FTS_CHECKPOINT_SNAPSHOT, .started.seconds = 1795428000u};
    fts_error_clear(&err);
    assert_true(fts_redis_checkpoint_validate(&token, &err));
    assert_true(fts_redis_checkpoint_validate(&snapshot, &err));

    fts_checkpoint_t bad = token;
    bad.token = "";
    assert_false(fts_redis_checkpoint_validate(&bad, &err));
    assert_contains(err.message, "token is empty");
    bad.token = NULL;
    assert_false(fts_redis_checkpoint_validate(&bad, &err));
    bad = token;
    bad.token_kind = 0;
    assert_false(fts_redis_checkpoint_validate(&bad, &err));
    assert_contains(err.message, "token kind");
    bad = snapshot;
    bad.started.seconds = 0;
    assert_false(fts_redis_checkpoint_validate(&bad, &err));
    assert_contains(err.message, "started_at");
    bad = snapshot;
    bad.last_id = "";
    assert_false(fts_redis_checkpoint_validate(&bad, &err));
    assert_contains(err.message, "last_id");
    bad.kind = 0;
    assert_false(fts_redis_checkpoint_validate(&bad, &err));
    assert_contains(err.message, "unknown kind");
}

/* ---- The XADD shape of actions ---- */

static void encode_action(fts_action_t *action, fts_action_argv_t *argv, const char *key)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_action_init(action);
    action->op = FTS_ACTION_INDEX;
    action->origin = FTS_ACTION_FROM_CHANGE;
    action->ts_seconds = 1795428000u;
    action->ts_increment = 1;
    action->version = fts_version_from_timestamp(1795428000u, 1);
    action->ns = strdup("shop.apps");
    action->id = strdup("42");
    action->id_len = 2;
    action->body = strdup("{\"name\":\"x\"}");
    action->body_len = strlen(action->body);
    if (!fts_action_encode(action, key, argv, &err)) {
        fail_msg("encode: %s", err.message);
    }
}

static void test_action_argv_check(void **state)
{
    (void)state;
    fts_error_t err;
    fts_action_t action;
    fts_action_argv_t argv;
    encode_action(&action, &argv, "ftsync:{apps}:stream");
    fts_error_clear(&err);
    assert_true(fts_redis_action_argv_check(&argv, "ftsync:{apps}:stream", &err));

    /* Another pipeline's stream. */
    assert_false(fts_redis_action_argv_check(&argv, "ftsync:{other}:stream", &err));
    assert_contains(err.message, "ftsync:{apps}:stream");
    assert_contains(err.message, "ftsync:{other}:stream");

    /* MAXLEN (or an explicit ID) where "*" belongs. */
    fts_action_argv_t changed = argv;
    changed.argv[2] = "MAXLEN";
    changed.argvlen[2] = 6;
    assert_false(fts_redis_action_argv_check(&changed, "ftsync:{apps}:stream", &err));
    assert_contains(err.message, "no MAXLEN");

    /* Not XADD. */
    changed = argv;
    changed.argv[0] = "HSET";
    assert_false(fts_redis_action_argv_check(&changed, "ftsync:{apps}:stream", &err));
    assert_contains(err.message, "not an XADD");

    /* A field without a value would make Redis refuse the XADD while EXEC runs. */
    changed = argv;
    changed.argc--;
    assert_false(fts_redis_action_argv_check(&changed, "ftsync:{apps}:stream", &err));
    assert_contains(err.message, "field/value pairs");
    changed.argc = 3;
    assert_false(fts_redis_action_argv_check(&changed, "ftsync:{apps}:stream", &err));
    changed = argv;
    changed.argv[4] = NULL;
    assert_false(fts_redis_action_argv_check(&changed, "ftsync:{apps}:stream", &err));
    fts_action_cleanup(&action);
}

/* ---- Saved position ---- */

static fts_redis_keys_t apps_keys(void)
{
    fts_redis_keys_t keys;
    fts_error_t err;
    assert_true(fts_redis_keys_init(&keys, "apps", &err));
    return keys;
}

static void test_position_parse(void **state)
{
    (void)state;
    fts_redis_keys_t keys = apps_keys();
    fts_position_t position;
    fts_error_t err;
    fts_error_clear(&err);

    /* Nothing saved. */
    redisReply *empty1 = array(0);
    redisReply *empty2 = array(0);
    assert_true(fts_redis_position_parse(&keys, empty1, empty2, &position, &err));
    assert_false(position.has_token);
    assert_false(position.has_snapshot);
    fts_position_cleanup(&position);

    /* A token, with a field of a later version that is ignored. */
    redisReply *token = array(10, str("token"), str("{\"_data\":\"82A1\"}"), str("kind"),
                              str("start_after"), str("cluster_time"), str("1795428000.9"),
                              str("updated_at"), str("1795428001234"), str("future"), str("x"));
    assert_true(fts_redis_position_parse(&keys, token, empty2, &position, &err));
    assert_true(position.has_token);
    assert_string_equal(position.token, "{\"_data\":\"82A1\"}");
    assert_int_equal(position.token_kind, FTS_TOKEN_START_AFTER);
    assert_int_equal(position.cluster_time.seconds, 1795428000u);
    assert_int_equal(position.cluster_time.increment, 9);
    assert_int_equal(position.token_updated_at_ms, 1795428001234ull);
    fts_position_cleanup(&position);
    freeReplyObject(token);

    /* A snapshot in progress, before and after its first document. */
    redisReply *started = array(4, str("started_at"), str("1795428000.1"), str("queued"), str("0"));
    assert_true(fts_redis_position_parse(&keys, empty1, started, &position, &err));
    assert_true(position.has_snapshot);
    assert_null(position.last_id);
    assert_int_equal(position.started.seconds, 1795428000u);
    assert_int_equal(position.started.increment, 1);
    fts_position_cleanup(&position);
    freeReplyObject(started);
    redisReply *progress = array(6, str("started_at"), str("1795428000.1"), str("last_id"),
                                 str("{\"$oid\":\"65a\"}"), str("queued"), str("5000"));
    assert_true(fts_redis_position_parse(&keys, empty1, progress, &position, &err));
    assert_string_equal(position.last_id, "{\"$oid\":\"65a\"}");
    assert_int_equal(position.queued, 5000);
    fts_position_cleanup(&position);
    freeReplyObject(progress);
    freeReplyObject(empty1);
    freeReplyObject(empty2);
}

/* Parses a malformed hash (as token hash when is_token, else as snapshot hash) and checks the
 * message names the key and the words given. The hash is freed. */
static void assert_position_refused(redisReply *hash, bool is_token, const char *words)
{
    fts_redis_keys_t keys = apps_keys();
    fts_position_t position;
    fts_error_t err;
    fts_error_clear(&err);
    redisReply *empty = array(0);
    bool ok = is_token ? fts_redis_position_parse(&keys, hash, empty, &position, &err)
                       : fts_redis_position_parse(&keys, empty, hash, &position, &err);
    if (ok) {
        fail_msg("a malformed position was accepted (expected: %s)", words);
    }
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    assert_contains(err.message, is_token ? keys.token : keys.snapshot);
    assert_contains(err.message, words);
    assert_false(position.has_token);
    assert_null(position.token);
    assert_null(position.last_id);
    freeReplyObject(hash);
    freeReplyObject(empty);
}

static void test_position_malformed(void **state)
{
    (void)state;
    assert_position_refused(array(2, str("kind"), str("resume")), true, "no field \"token\"");
    assert_position_refused(array(2, str("token"), str("{}")), true, "no field \"kind\"");
    assert_position_refused(array(4, str("token"), str("{}"), str("kind"), str("resumeAfter")),
                            true, "not resume or start_after");
    assert_position_refused(array(4, str("token"), str(""), str("kind"), str("resume")), true,
                            "\"token\" is empty");
    assert_position_refused(array(6, str("token"), str("{}"), str("kind"), str("resume"),
                                  str("cluster_time"), str("yesterday")),
                            true, "\"cluster_time\" is \"yesterday\"");
    assert_position_refused(
        array(6, str("token"), str("{}"), str("kind"), str("resume"), str("updated_at"), str("-5")),
        true, "\"updated_at\" is \"-5\"");
    assert_position_refused(array(2, str("queued"), str("3")), false, "no field \"started_at\"");
    assert_position_refused(array(2, str("started_at"), str("1795428000.1")), false,
                            "no field \"queued\"");
    assert_position_refused(array(4, str("started_at"), str("0.0"), str("queued"), str("1")), false,
                            "not a cluster time");
    assert_position_refused(
        array(4, str("started_at"), str("1795428000.1"), str("queued"), str("many")), false,
        "not a whole number");

    /* Not a hash at all. */
    fts_redis_keys_t keys = apps_keys();
    fts_position_t position;
    fts_error_t err;
    redisReply *odd = array(1, str("token"));
    redisReply *empty = array(0);
    assert_false(fts_redis_position_parse(&keys, odd, empty, &position, &err));
    assert_contains(err.message, "field/value pairs");
    freeReplyObject(odd);
    freeReplyObject(empty);
}

/* ---- Backlog ---- */

/* One group's XINFO GROUPS entry; lag NULL leaves the field out (servers before 7.0). */
static redisReply *group(const char *name, long long pending, redisReply *lag)
{
    if (!lag) {
        return array(8, str("name"), str(name), str("consumers"), integer(1), str("pending"),
                     integer(pending), str("last-delivered-id"), str("1795428000000-0"));
    }
    return array(12, str("name"), str(name), str("consumers"), integer(1), str("pending"),
                 integer(pending), str("last-delivered-id"), str("1795428000000-0"),
                 str("entries-read"), integer(3), str("lag"), lag);
}

static void test_backlog_parse(void **state)
{
    (void)state;
    fts_backlog_t backlog;
    fts_error_t err;
    fts_error_clear(&err);

    /* Pending + lag when Redis knows the lag; other groups do not count. */
    redisReply *xlen = integer(100);
    redisReply *groups = array(2, group("audit", 50, integer(40)), group("loaders", 4, integer(6)));
    assert_true(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_true(backlog.group_exists);
    assert_true(backlog.exact);
    assert_true(backlog.lag_known);
    assert_int_equal(backlog.entries, 10);
    assert_int_equal(backlog.pending, 4);
    assert_int_equal(backlog.lag, 6);
    assert_int_equal(backlog.length, 100);
    freeReplyObject(groups);

    /* A lag Redis got wrong: 7.0 can keep a stale entries-read after an AOF restart, so a
     * drained group (pending 0, an empty stream) showed lag 30589 in the chaos suite's long
     * form. Unacknowledged entries are all in the stream (trimming keeps them), so XLEN bounds
     * the backlog, flagged as an upper bound. */
    redisReply *empty = integer(0);
    groups = array(1, group("loaders", 0, integer(30589)));
    assert_true(fts_redis_backlog_parse(empty, groups, &backlog, &err));
    assert_true(backlog.group_exists);
    assert_false(backlog.exact);
    assert_int_equal(backlog.entries, 0);
    freeReplyObject(groups);
    freeReplyObject(empty);

    /* Lag nil (an XDEL after the last delivered entry): XLEN, flagged as an upper bound. */
    groups = array(1, group("loaders", 4, nil()));
    assert_true(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_true(backlog.group_exists);
    assert_false(backlog.exact);
    assert_false(backlog.lag_known);
    assert_int_equal(backlog.entries, 100);
    freeReplyObject(groups);

    /* A server without the lag field behaves the same. */
    groups = array(1, group("loaders", 4, NULL));
    assert_true(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_false(backlog.exact);
    assert_int_equal(backlog.entries, 100);
    freeReplyObject(groups);

    /* No loader group yet: every entry is unacknowledged. */
    groups = array(1, group("audit", 1, integer(2)));
    assert_true(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_false(backlog.group_exists);
    assert_true(backlog.exact);
    assert_int_equal(backlog.entries, 100);
    freeReplyObject(groups);
    freeReplyObject(xlen);

    /* No stream: XINFO GROUPS answers "no such key". */
    xlen = integer(0);
    groups = text_reply(REDIS_REPLY_ERROR, "ERR no such key");
    assert_true(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_int_equal(backlog.entries, 0);
    assert_false(backlog.group_exists);
    freeReplyObject(groups);

    /* Nonsense is an error, not a zero backlog (that would lift backpressure). */
    groups = str("OK");
    assert_false(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_contains(err.message, "XINFO GROUPS");
    freeReplyObject(groups);
    groups = array(1, array(3, str("name"), str("loaders"), str("pending")));
    assert_false(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    freeReplyObject(groups);
    groups = array(1, array(2, str("name"), str("loaders")));
    assert_false(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_contains(err.message, "pending");
    freeReplyObject(groups);
    freeReplyObject(xlen);
    xlen = str("3");
    groups = array(0);
    assert_false(fts_redis_backlog_parse(xlen, groups, &backlog, &err));
    assert_contains(err.message, "XLEN");
    freeReplyObject(groups);
    freeReplyObject(xlen);
}

/* ---- Lease owner ids ---- */

static void test_lease_owner_id(void **state)
{
    (void)state;
    char first[FTS_REDIS_LEASE_OWNER_SIZE];
    char second[FTS_REDIS_LEASE_OWNER_SIZE];
    char host[256] = {0};
    char expected_start[300];
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_lease_owner_id(first, sizeof first, &err));
    assert_true(fts_redis_lease_owner_id(second, sizeof second, &err));
    assert_string_not_equal(first, second);
    gethostname(host, sizeof host - 1);
    snprintf(expected_start, sizeof expected_start, "%s:%ld:", host, (long)getpid());
    assert_int_equal(strncmp(first, expected_start, strlen(expected_start)), 0);
    const char *random = first + strlen(expected_start);
    assert_int_equal(strlen(random), 16);
    assert_int_equal(strspn(random, "0123456789abcdef"), 16);

    /* A small buffer cuts the host name, never the pid or the random part. */
    size_t tail_len = strlen(first) - strlen(host);
    char small[FTS_REDIS_LEASE_OWNER_SIZE];
    assert_true(fts_redis_lease_owner_id(small, tail_len + 2, &err));
    assert_int_equal(strlen(small), tail_len + 1);
    assert_int_equal(small[0], host[0]);
    assert_int_equal(strspn(strrchr(small, ':') + 1, "0123456789abcdef"), 16);
    char tiny[8];
    assert_false(fts_redis_lease_owner_id(tiny, sizeof tiny, &err));

    assert_string_equal(fts_lease_state_name(FTS_LEASE_HELD), "held");
    assert_string_equal(fts_lease_state_name(FTS_LEASE_LOST), "lost");
}

static void test_lease_settings(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    /* Refused before any command (the connection is never used). */
    assert_null(fts_redis_lease_new(NULL, "a{b}", 5000, NULL, &err));
    assert_contains(err.message, "pipeline name");
    assert_null(fts_redis_lease_new(NULL, "apps", 10, NULL, &err));
    assert_contains(err.message, "time to live");
    assert_null(fts_redis_lease_new(NULL, "apps", 5000, "", &err));
    assert_contains(err.message, "owner id");
    fts_redis_lease_t *lease = fts_redis_lease_new(NULL, "apps", 5000, "me", &err);
    assert_non_null(lease);
    assert_string_equal(fts_redis_lease_key(lease), "ftsync:{apps}:lease");
    assert_string_equal(fts_redis_lease_owner(lease), "me");
    assert_int_equal(fts_redis_lease_remaining_ms(lease), 0);
    fts_redis_lease_destroy(lease);
    fts_redis_lease_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_cluster_time),
        cmocka_unit_test(test_token_kind),
        cmocka_unit_test(test_checkpoint_validate),
        cmocka_unit_test(test_action_argv_check),
        cmocka_unit_test(test_position_parse),
        cmocka_unit_test(test_position_malformed),
        cmocka_unit_test(test_backlog_parse),
        cmocka_unit_test(test_lease_owner_id),
        cmocka_unit_test(test_lease_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
