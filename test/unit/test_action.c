/*
 * test_action.c - the stream entry format: exact XADD arguments, round trips through the
 * decoder, and every malformed entry refused with the field named (the loader dead-letters
 * those; it must never crash on them or guess).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "action.h"
#include "assertions.h"

/* An action with copies of the given strings (id, body may be NULL). */
static void make_action(fts_action_t *action, fts_action_op_t op, const char *id, const char *body)
{
    fts_action_init(action);
    action->op = op;
    action->origin = FTS_ACTION_FROM_CHANGE;
    action->ts_seconds = 1795428000u;
    action->ts_increment = 3;
    action->version = fts_version_from_timestamp(1795428000u, 3);
    action->ns = strdup("shop.apps");
    if (id) {
        action->id = strdup(id);
        action->id_len = strlen(id);
    }
    if (body) {
        action->body = strdup(body);
        action->body_len = strlen(body);
    }
}

/* The field/value items of an encoded XADD (everything after "XADD key *"). */
static size_t entry_items(const fts_action_argv_t *argv, fts_bytes_t *items)
{
    size_t count = 0;
    for (int i = 3; i < argv->argc; i++) {
        items[count].data = argv->argv[i];
        items[count].len = argv->argvlen[i];
        count++;
    }
    return count;
}

static void assert_arg(const fts_action_argv_t *argv, int i, const char *expected)
{
    assert_true(i < argv->argc);
    if (argv->argvlen[i] != strlen(expected) ||
        memcmp(argv->argv[i], expected, argv->argvlen[i]) != 0) {
        fail_msg("argument %d is \"%.*s\", expected \"%s\"", i, (int)argv->argvlen[i],
                 argv->argv[i], expected);
    }
}

static uint64_t version_of(uint32_t seconds, uint32_t increment, uint32_t position)
{
    uint64_t version = 0;
    fts_error_t err = {0};
    if (!fts_version_compute(seconds, increment, position, &version, &err)) {
        fail_msg("version of %u.%u #%u: %s", seconds, increment, position, err.message);
    }
    return version;
}

static void test_version_from_timestamp(void **state)
{
    (void)state;
    /* Scheme 2: (seconds - 2020-01-01) << 32 | increment << 13 | position. */
    assert_true(fts_version_from_timestamp(FTS_VERSION_EPOCH, 1) == 8192);
    assert_true(fts_version_from_timestamp(FTS_VERSION_EPOCH + 1, 0) == 4294967296ULL);
    assert_true(fts_version_from_timestamp(1795428000u, 3) ==
                ((uint64_t)(1795428000u - 1577836800u) << 32 | 3u << 13));
    /* Later cluster times give larger versions, increments order within a second. */
    assert_true(version_of(1795428000u, FTS_VERSION_INCREMENT_MAX, FTS_VERSION_POSITION_MAX) <
                version_of(1795428001u, 0, 0));
    assert_true(fts_version_from_timestamp(1795428000u, 1) <
                fts_version_from_timestamp(1795428000u, 2));
    /* Outside the scheme: 0, which validation refuses. */
    assert_true(fts_version_from_timestamp(FTS_VERSION_EPOCH - 1, 5) == 0);
    assert_true(fts_version_from_timestamp(FTS_VERSION_EPOCH, 0) == 0);
}

/* Changes inside one transaction share a cluster time: their positions order them, and the
 * next change after the transaction is above all of them. */
static void test_version_orders_transaction(void **state)
{
    (void)state;
    uint32_t t = 1795428000u;
    assert_true(version_of(t, 7, 0) < version_of(t, 7, 1));
    assert_true(version_of(t, 7, 1) < version_of(t, 7, 2));
    assert_true(version_of(t, 7, FTS_VERSION_POSITION_MAX) < version_of(t, 8, 0));
    /* Across transactions: the earlier commit's last change below the next commit's first. */
    assert_true(version_of(t, 7, 5) < version_of(t, 9, 0));
    assert_true(version_of(t, FTS_VERSION_INCREMENT_MAX, FTS_VERSION_POSITION_MAX) <
                version_of(t + 1, 1, 0));
    /* A snapshot at T (position 0) is below every change of a transaction committed at T. */
    assert_true(fts_version_from_timestamp(t, 7) <= version_of(t, 7, 0));
}

static void test_version_past_2038(void **state)
{
    (void)state;
    /* 2038-01-19T03:14:08Z, where scheme 1 went negative, and later ones still order. */
    uint64_t at_2038 = version_of(0x80000000u, 1, 0);
    assert_true(at_2038 > version_of(0x7FFFFFFFu, FTS_VERSION_INCREMENT_MAX, 3));
    assert_true(at_2038 <= (uint64_t)INT64_MAX);
    assert_true(version_of(3155760000u /* 2070-01-01 */, 1, 0) > at_2038);
    /* The last representable instant is exactly Elasticsearch's largest version: no bit of
     * the signed 64-bit long is ever set. */
    assert_true(version_of(FTS_VERSION_SECONDS_MAX, FTS_VERSION_INCREMENT_MAX,
                           FTS_VERSION_POSITION_MAX) == (uint64_t)INT64_MAX);
    uint64_t version = 42;
    fts_error_t err = {0};
    assert_false(fts_version_compute(FTS_VERSION_SECONDS_MAX + 1u, 0, 0, &version, &err));
    assert_contains(err.message, "version scheme 2");
    assert_contains(err.message, "2088-01-19");
    assert_true(version == 42);
    assert_false(fts_version_compute(UINT32_MAX, UINT32_MAX, UINT32_MAX, &version, &err));
    assert_false(
        fts_version_compute(1795428000u, FTS_VERSION_INCREMENT_MAX + 1u, 0, &version, &err));
    assert_contains(err.message, "524287 changes in one second");
    assert_false(
        fts_version_compute(1795428000u, 1, FTS_VERSION_POSITION_MAX + 1u, &version, &err));
    assert_contains(err.message, "8191 operations in one transaction");
    assert_false(fts_version_compute(1500000000u, 1, 0, &version, &err));
    assert_contains(err.message, "2020-01-01");
}

/* A change event with the given token and fields. */
static void make_event(bson_t *event, const char *token, uint32_t seconds, uint32_t increment,
                       bool in_transaction)
{
    bson_init(event);
    bson_t id;
    BSON_APPEND_DOCUMENT_BEGIN(event, "_id", &id);
    BSON_APPEND_UTF8(&id, "_data", token);
    bson_append_document_end(event, &id);
    BSON_APPEND_UTF8(event, "operationType", "insert");
    BSON_APPEND_TIMESTAMP(event, "clusterTime", seconds, increment);
    if (in_transaction) {
        bson_t lsid;
        BSON_APPEND_DOCUMENT_BEGIN(event, "lsid", &lsid);
        BSON_APPEND_INT32(&lsid, "id", 1);
        bson_append_document_end(event, &lsid);
        BSON_APPEND_INT64(event, "txnNumber", 3);
    }
}

static void test_txn_position_from_token(void **state)
{
    (void)state;
    bson_t event;
    uint32_t position = 99;
    fts_error_t err = {0};
    /* A mongod 6.0 event token (clusterTime 0x6B0D1AA0.2, version 1, tokenType 128,
     * txnOpIndex 0, fromInvalidate false, the collection UUID, ...). */
    make_event(&event,
               "826B0D1AA0000000022B022C0100296E5A1004AABBCCDDEEFF00112233445566778899"
               "46645F69640064000004",
               0x6B0D1AA0u, 2, true);
    assert_true(fts_version_txn_position(&event, &position, &err));
    assert_int_equal(position, 0);
    bson_destroy(&event);
    /* txnOpIndex 5 (one byte: 5 << 1) and 300 (two bytes: 600). */
    make_event(&event, "826B0D1AA0000000022B022C01002B0A6E5A1004AABB", 0x6B0D1AA0u, 2, true);
    assert_true(fts_version_txn_position(&event, &position, &err));
    assert_int_equal(position, 5);
    bson_destroy(&event);
    make_event(&event, "826B0D1AA0000000022B042C01002C02586E", 0x6B0D1AA0u, 2, true);
    assert_true(fts_version_txn_position(&event, &position, &err));
    assert_int_equal(position, 300);
    bson_destroy(&event);
    /* Outside a transaction the token is not even looked at. */
    make_event(&event, "not hex at all", 0x6B0D1AA0u, 2, false);
    assert_true(fts_version_txn_position(&event, &position, &err));
    assert_int_equal(position, 0);
    bson_destroy(&event);
    /* In a transaction, a token without that layout, or naming another time, is refused. */
    make_event(&event, "not hex at all", 0x6B0D1AA0u, 2, true);
    assert_false(fts_version_txn_position(&event, &position, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_UNSUPPORTED);
    assert_contains(err.message, "txnOpIndex");
    bson_destroy(&event);
    make_event(&event, "826B0D1AA0000000022B022C01002B0A6E", 0x6B0D1AA0u, 3, true);
    assert_false(fts_version_txn_position(&event, &position, &err));
    assert_contains(err.message, "not the event's");
    bson_destroy(&event);
}

static void test_encode_index(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_INDEX, "1091500", "{\"name\":\"Chess\"}");
    fts_action_argv_t argv;
    fts_error_t err = {0};
    assert_true(fts_action_encode(&action, "ftsync:{apps}:stream", &argv, &err));
    assert_int_equal(argv.argc, 17);
    const char *expected[] = {"XADD",
                              "ftsync:{apps}:stream",
                              "*",
                              "op",
                              "index",
                              "id",
                              "1091500",
                              "version",
                              "934547087897419776",
                              "ns",
                              "shop.apps",
                              "ts",
                              "1795428000.3",
                              "origin",
                              "change",
                              "body",
                              "{\"name\":\"Chess\"}"};
    for (int i = 0; i < 17; i++) {
        assert_arg(&argv, i, expected[i]);
    }
    fts_action_cleanup(&action);
}

static void test_encode_delete_and_drop(void **state)
{
    (void)state;
    fts_action_t action;
    fts_action_argv_t argv;
    make_action(&action, FTS_ACTION_DELETE, "5f1d7c3a9b1e8a0012345678", NULL);
    action.origin = FTS_ACTION_FROM_SNAPSHOT;
    assert_true(fts_action_encode(&action, "s", &argv, NULL));
    assert_int_equal(argv.argc, 15);
    assert_arg(&argv, 4, "delete");
    assert_arg(&argv, 6, "5f1d7c3a9b1e8a0012345678");
    assert_arg(&argv, 14, "snapshot");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DROP, NULL, NULL);
    assert_true(fts_action_encode(&action, "s", &argv, NULL));
    assert_int_equal(argv.argc, 13);
    const char *expected[] = {
        "XADD", "s",         "*",  "op",           "drop",   "version", "934547087897419776",
        "ns",   "shop.apps", "ts", "1795428000.3", "origin", "change"};
    for (int i = 0; i < 13; i++) {
        assert_arg(&argv, i, expected[i]);
    }
    fts_action_cleanup(&action);
}

static void test_encode_refuses_what_decode_would(void **state)
{
    (void)state;
    fts_action_t action;
    fts_action_argv_t argv;
    fts_error_t err = {0};

    make_action(&action, FTS_ACTION_INDEX, "1", NULL);
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "cannot queue the index action: field \"body\" is missing");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DELETE, "1", "{}");
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"body\": a delete carries no document");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DROP, "1", NULL);
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"id\"");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DELETE, NULL, NULL);
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"id\" is missing; a delete needs one");
    fts_action_cleanup(&action);

    /* A version that would not fit Elasticsearch's signed 64 bits. */
    make_action(&action, FTS_ACTION_DELETE, "1", NULL);
    action.version = (uint64_t)INT64_MAX + 1u;
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"version\"");
    assert_contains(err.message, "1..2^63-1");
    action.version = 0;
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"version\"");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_INDEX, "1", "[1]");
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"body\": not a JSON object");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DELETE, "1", NULL);
    free(action.ns);
    action.ns = strdup("nodot");
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"ns\"");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DELETE, "1", NULL);
    action.origin = 0;
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"origin\"");
    action.origin = FTS_ACTION_FROM_CHANGE;
    action.op = 9;
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"op\"");
    fts_action_cleanup(&action);

    char long_id[FTS_ACTION_ID_MAX + 2];
    memset(long_id, '7', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    make_action(&action, FTS_ACTION_DELETE, long_id, NULL);
    assert_false(fts_action_encode(&action, "s", &argv, &err));
    assert_contains(err.message, "field \"id\": 513 bytes");
    fts_action_cleanup(&action);
}

/* Encode, hand the pairs to decode as a reply would, compare. */
static void round_trip(const fts_action_t *action)
{
    fts_action_argv_t argv;
    fts_error_t err = {0};
    assert_true(fts_action_encode(action, "ftsync:{apps}:stream", &argv, &err));
    fts_bytes_t items[FTS_ACTION_ARGV_MAX];
    size_t count = entry_items(&argv, items);
    fts_action_t decoded;
    if (!fts_action_decode(items, count, &decoded, &err)) {
        fail_msg("decode failed: %s", err.message);
    }
    assert_int_equal(decoded.op, action->op);
    assert_int_equal(decoded.origin, action->origin);
    assert_true(decoded.version == action->version);
    assert_int_equal(decoded.ts_seconds, action->ts_seconds);
    assert_int_equal(decoded.ts_increment, action->ts_increment);
    assert_string_equal(decoded.ns, action->ns);
    assert_int_equal(decoded.id_len, action->id_len);
    if (action->id) {
        assert_memory_equal(decoded.id, action->id, action->id_len);
    } else {
        assert_null(decoded.id);
    }
    assert_int_equal(decoded.body_len, action->body_len);
    if (action->body) {
        assert_memory_equal(decoded.body, action->body, action->body_len);
    } else {
        assert_null(decoded.body);
    }
    fts_action_cleanup(&decoded);
    fts_action_cleanup(&decoded); /* twice is harmless */
}

static void test_round_trips(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_INDEX, "a b/c?\xe6\x97\xa5",
                "{\"text\":\"line\\nbreak \\u0000 \xe2\x82\xac\",\"n\":[1,2.5,null]}");
    round_trip(&action);
    action.origin = FTS_ACTION_FROM_SNAPSHOT;
    action.version = 1;
    action.ts_seconds = 0;
    action.ts_increment = 1;
    round_trip(&action);
    action.version = (uint64_t)INT64_MAX;
    action.ts_seconds = UINT32_MAX;
    action.ts_increment = UINT32_MAX;
    round_trip(&action);
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DELETE, "5f1d7c3a9b1e8a0012345678", NULL);
    round_trip(&action);
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DROP, NULL, NULL);
    round_trip(&action);
    fts_action_cleanup(&action);

    /* A sweep, like a drop, names a collection and carries the version below which to remove. */
    make_action(&action, FTS_ACTION_SWEEP, NULL, NULL);
    round_trip(&action);
    fts_action_cleanup(&action);
    make_action(&action, FTS_ACTION_SWEEP, "1", NULL);
    assert_false(fts_action_validate(&action, NULL));
    fts_action_cleanup(&action);

    char longest[FTS_ACTION_ID_MAX + 1];
    memset(longest, 'x', FTS_ACTION_ID_MAX);
    longest[FTS_ACTION_ID_MAX] = '\0';
    make_action(&action, FTS_ACTION_DELETE, longest, NULL);
    round_trip(&action);
    fts_action_cleanup(&action);

    /* A large body is carried byte for byte. */
    size_t size = 1 << 20;
    char *big = malloc(size + 1);
    memset(big, 'x', size);
    memcpy(big, "{\"k\":\"", 6);
    memcpy(big + size - 2, "\"}", 2);
    big[size] = '\0';
    make_action(&action, FTS_ACTION_INDEX, "big", big);
    round_trip(&action);
    fts_action_cleanup(&action);
    free(big);
}

/* ---------------------------------------------------------------------------------------- */
/* Malformed entries                                                                        */

#define MAX_ITEMS 20

/* An entry written as "field", "value", ..., NULL. */
typedef struct {
    const char *name;
    const char *items[MAX_ITEMS];
    const char *says;
    int code;
} bad_entry_t;

static const bad_entry_t bad_entries[] = {
    {"no fields", {NULL}, "field \"op\" is missing", FTS_ERROR_CODE_MISSING},
    {"odd count",
     {"op", "delete", "id", NULL},
     "3 items; fields and values must pair up",
     FTS_ERROR_CODE_INVALID},
    {"unknown op",
     {"op", "upsert", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change",
      NULL},
     "field \"op\": unknown operation \"upsert\"",
     FTS_ERROR_CODE_INVALID},
    {"op case matters",
     {"op", "INDEX", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change",
      "body", "{}", NULL},
     "unknown operation \"INDEX\"",
     FTS_ERROR_CODE_INVALID},
    {"missing version",
     {"op", "delete", "id", "1", "ns", "a.b", "ts", "1.1", "origin", "change", NULL},
     "field \"version\" is missing",
     FTS_ERROR_CODE_MISSING},
    {"missing ns",
     {"op", "delete", "id", "1", "version", "5", "ts", "1.1", "origin", "change", NULL},
     "field \"ns\" is missing",
     FTS_ERROR_CODE_MISSING},
    {"missing ts",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "origin", "change", NULL},
     "field \"ts\" is missing",
     FTS_ERROR_CODE_MISSING},
    {"missing origin",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", NULL},
     "field \"origin\" is missing",
     FTS_ERROR_CODE_MISSING},
    {"missing id on delete",
     {"op", "delete", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change", NULL},
     "field \"id\" is missing; a delete needs one",
     FTS_ERROR_CODE_MISSING},
    {"missing id on index",
     {"op", "index", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change", "body", "{}",
      NULL},
     "field \"id\" is missing; an index needs one",
     FTS_ERROR_CODE_MISSING},
    {"missing body on index",
     {"op", "index", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change", NULL},
     "field \"body\" is missing",
     FTS_ERROR_CODE_MISSING},
    {"body on delete",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change",
      "body", "{}", NULL},
     "field \"body\": a delete carries no document",
     FTS_ERROR_CODE_INVALID},
    {"body on drop",
     {"op", "drop", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change", "body", "{}",
      NULL},
     "field \"body\": a drop carries no document",
     FTS_ERROR_CODE_INVALID},
    {"id on drop",
     {"op", "drop", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change", NULL},
     "field \"id\": a drop removes a whole collection",
     FTS_ERROR_CODE_INVALID},
    {"empty body",
     {"op", "index", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change",
      "body", "", NULL},
     "field \"body\": not a JSON object",
     FTS_ERROR_CODE_INVALID},
    {"truncated body",
     {"op", "index", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change",
      "body", "{\"a\":", NULL},
     "field \"body\": not a JSON object",
     FTS_ERROR_CODE_INVALID},
    {"zero version",
     {"op", "delete", "id", "1", "version", "0", "ns", "a.b", "ts", "1.1", "origin", "change",
      NULL},
     "field \"version\": \"0\" is not a decimal number in 1..2^63-1",
     FTS_ERROR_CODE_INVALID},
    {"negative version",
     {"op", "delete", "id", "1", "version", "-5", "ns", "a.b", "ts", "1.1", "origin", "change",
      NULL},
     "field \"version\": \"-5\"",
     FTS_ERROR_CODE_INVALID},
    {"signed version",
     {"op", "delete", "id", "1", "version", "+5", "ns", "a.b", "ts", "1.1", "origin", "change",
      NULL},
     "field \"version\": \"+5\"",
     FTS_ERROR_CODE_INVALID},
    {"blank in version",
     {"op", "delete", "id", "1", "version", " 5", "ns", "a.b", "ts", "1.1", "origin", "change",
      NULL},
     "field \"version\"",
     FTS_ERROR_CODE_INVALID},
    {"non-numeric version",
     {"op", "delete", "id", "1", "version", "12abc", "ns", "a.b", "ts", "1.1", "origin", "change",
      NULL},
     "field \"version\": \"12abc\"",
     FTS_ERROR_CODE_INVALID},
    {"empty version",
     {"op", "delete", "id", "1", "version", "", "ns", "a.b", "ts", "1.1", "origin", "change", NULL},
     "field \"version\": \"\"",
     FTS_ERROR_CODE_INVALID},
    {"version past 2^63-1",
     {"op", "delete", "id", "1", "version", "9223372036854775808", "ns", "a.b", "ts", "1.1",
      "origin", "change", NULL},
     "field \"version\"",
     FTS_ERROR_CODE_INVALID},
    {"version past 2^64",
     {"op", "delete", "id", "1", "version", "18446744073709551616", "ns", "a.b", "ts", "1.1",
      "origin", "change", NULL},
     "field \"version\"",
     FTS_ERROR_CODE_INVALID},
    {"version too long",
     {"op", "delete", "id", "1", "version", "000000000000000000001", "ns", "a.b", "ts", "1.1",
      "origin", "change", NULL},
     "field \"version\"",
     FTS_ERROR_CODE_INVALID},
    {"ts without dot",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "ts", "17", "origin", "change", NULL},
     "field \"ts\": \"17\" is not \"<seconds>.<increment>\"",
     FTS_ERROR_CODE_INVALID},
    {"ts increment too large",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "ts", "1.4294967296", "origin",
      "change", NULL},
     "field \"ts\"",
     FTS_ERROR_CODE_INVALID},
    {"ts empty part",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "ts", "1.", "origin", "change", NULL},
     "field \"ts\"",
     FTS_ERROR_CODE_INVALID},
    {"ts two dots",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "ts", "1.2.3", "origin", "change",
      NULL},
     "field \"ts\"",
     FTS_ERROR_CODE_INVALID},
    {"unknown origin",
     {"op", "delete", "id", "1", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "oplog", NULL},
     "field \"origin\": unknown origin \"oplog\"",
     FTS_ERROR_CODE_INVALID},
    {"ns without collection",
     {"op", "delete", "id", "1", "version", "5", "ns", "shop.", "ts", "1.1", "origin", "change",
      NULL},
     "field \"ns\": \"shop.\" is not \"db.collection\"",
     FTS_ERROR_CODE_INVALID},
    {"ns without dot",
     {"op", "delete", "id", "1", "version", "5", "ns", "shop", "ts", "1.1", "origin", "change",
      NULL},
     "field \"ns\"",
     FTS_ERROR_CODE_INVALID},
    {"empty id",
     {"op", "delete", "id", "", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change", NULL},
     "field \"id\": 0 bytes",
     FTS_ERROR_CODE_INVALID},
    {"invalid UTF-8 id",
     {"op", "delete", "id", "caf\xe9", "version", "5", "ns", "a.b", "ts", "1.1", "origin", "change",
      NULL},
     "field \"id\"",
     FTS_ERROR_CODE_INVALID},
    {"field twice",
     {"op", "delete", "id", "1", "id", "2", "version", "5", "ns", "a.b", "ts", "1.1", "origin",
      "change", NULL},
     "field \"id\" appears twice",
     FTS_ERROR_CODE_INVALID},
    {"quoted value is bounded and escaped",
     {"op", "\"\n\x01 0123456789012345678901234567890123456789 tail", "version", "5", "ns", "a.b",
      "ts", "1.1", "origin", "change", NULL},
     "unknown operation \"\\\"\\n\\u0001 012345678901234567890123456789012345\"...",
     FTS_ERROR_CODE_INVALID},
};

static void test_malformed_entries(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_entries / sizeof bad_entries[0]; i++) {
        const bad_entry_t *bad = &bad_entries[i];
        fts_bytes_t items[MAX_ITEMS];
        size_t count = 0;
        while (bad->items[count]) {
            items[count].data = bad->items[count];
            items[count].len = strlen(bad->items[count]);
            count++;
        }
        fts_action_t action;
        fts_error_t err = {0};
        print_message("entry %s\n", bad->name);
        assert_false(fts_action_decode(items, count, &action, &err));
        assert_int_equal(err.domain, FTS_ERROR_INPUT);
        assert_int_equal(err.code, bad->code);
        assert_contains(err.message, bad->says);
        /* Left empty: cleaning it up is safe and frees nothing. */
        assert_null(action.ns);
        assert_null(action.id);
        assert_null(action.body);
        fts_action_cleanup(&action);
    }
}

static void test_binary_values_and_unknown_fields(void **state)
{
    (void)state;
    /* A NUL inside a value is not the end of it; unknown fields are ignored. */
    fts_bytes_t items[] = {
        {"op", 2},      {"delete", 6}, {"future_field", 12},
        {"x\0y", 3},    {"id", 2},     {"a\0b", 3},
        {"version", 7}, {"5", 1},      {"ns", 2},
        {"a.b", 3},     {"ts", 2},     {"1.1", 3},
        {"origin", 6},  {"change", 6},
    };
    fts_action_t action;
    fts_error_t err = {0};
    assert_false(fts_action_decode(items, 14, &action, &err));
    assert_contains(err.message, "field \"id\"");

    items[5].data = "ab";
    items[5].len = 2;
    assert_true(fts_action_decode(items, 14, &action, &err));
    assert_int_equal(action.op, FTS_ACTION_DELETE);
    assert_int_equal(action.id_len, 2);
    assert_true(action.version == 5);
    fts_action_cleanup(&action);

    /* "op\0" is not "op". */
    items[0].len = 3;
    assert_false(fts_action_decode(items, 14, &action, &err));
    assert_contains(err.message, "field \"op\" is missing");

    /* A body with a NUL byte inside is carried whole. */
    fts_bytes_t with_body[] = {
        {"op", 2},     {"index", 5},    {"id", 2},   {"1", 1},           {"version", 7},
        {"5", 1},      {"ns", 2},       {"a.b", 3},  {"ts", 2},          {"1.1", 3},
        {"origin", 6}, {"snapshot", 8}, {"body", 4}, {"{\"a\0\":1}", 8},
    };
    assert_true(fts_action_decode(with_body, 14, &action, &err));
    assert_int_equal(action.body_len, 8);
    assert_memory_equal(action.body, "{\"a\0\":1}", 8);
    assert_int_equal(action.origin, FTS_ACTION_FROM_SNAPSHOT);
    fts_action_cleanup(&action);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(fts_action_op_name(FTS_ACTION_INDEX), "index");
    assert_string_equal(fts_action_op_name(FTS_ACTION_DELETE), "delete");
    assert_string_equal(fts_action_op_name(FTS_ACTION_DROP), "drop");
    assert_string_equal(fts_action_op_name(FTS_ACTION_SWEEP), "sweep");
    assert_string_equal(fts_action_op_name(0), "?");
    assert_string_equal(fts_action_origin_name(FTS_ACTION_FROM_CHANGE), "change");
    assert_string_equal(fts_action_origin_name(FTS_ACTION_FROM_SNAPSHOT), "snapshot");
    assert_string_equal(fts_action_origin_name(0), "?");
    fts_action_cleanup(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_from_timestamp),
        cmocka_unit_test(test_version_orders_transaction),
        cmocka_unit_test(test_version_past_2038),
        cmocka_unit_test(test_txn_position_from_token),
        cmocka_unit_test(test_encode_index),
        cmocka_unit_test(test_encode_delete_and_drop),
        cmocka_unit_test(test_encode_refuses_what_decode_would),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_malformed_entries),
        cmocka_unit_test(test_binary_values_and_unknown_fields),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
