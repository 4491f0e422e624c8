/*
 * test_redis_group_reply.c - the consumer group's pure parts (redis_group_reply.h), no server:
 * replies are written as RESP text and turned into redisReply trees by hiredis's own reader,
 * so the parsers see exactly what hiredis hands redis_group.c. XREADGROUP (new, history,
 * deleted-while-pending, BLOCK ran out), XAUTOCLAIM (Redis 7 and 6.2 forms), XPENDING
 * (matching by ID in any order), malformed replies (invariant 6: an error naming what is
 * wrong, no entries), and the settlement command (invariant 2: the script form whenever there
 * is a dead letter; our fields after the entry's own, counted right).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assertions.h"

#include "redis_group_reply.h"

/* One reply parsed from len bytes of RESP by hiredis's reader; freed with freeReplyObject. */
static redisReply *parse_resp_len(const char *resp, size_t len)
{
    redisReader *reader = redisReaderCreate();
    assert_non_null(reader);
    assert_int_equal(redisReaderFeed(reader, resp, len), REDIS_OK);
    void *reply = NULL;
    assert_int_equal(redisReaderGetReply(reader, &reply), REDIS_OK);
    assert_non_null(reply);
    /* The text holds exactly one reply. */
    void *extra = NULL;
    assert_int_equal(redisReaderGetReply(reader, &extra), REDIS_OK);
    assert_null(extra);
    redisReaderFree(reader);
    return reply;
}

static redisReply *parse_resp(const char *resp)
{
    return parse_resp_len(resp, strlen(resp));
}

static void assert_item(const fts_stream_entry_t *entry, size_t i, const char *text)
{
    assert_true(i < entry->count);
    assert_int_equal(entry->items[i].len, strlen(text));
    assert_memory_equal(entry->items[i].data, text, strlen(text));
}

/* Two entries of stream s, the second with a binary value (a NUL inside). */
#define READ_TWO                                                                                   \
    "*1\r\n*2\r\n$1\r\ns\r\n*2\r\n"                                                                \
    "*2\r\n$3\r\n1-0\r\n*4\r\n$2\r\nop\r\n$5\r\nindex\r\n$2\r\nns\r\n$4\r\nd.c1\r\n"               \
    "*2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nv\r\n$3\r\na\0b\r\n"

static void test_read_new_entries_are_delivered_once(void **state)
{
    (void)state;
    redisReply *reply = parse_resp_len(READ_TWO, sizeof READ_TWO - 1);
    fts_redis_group_entries_t out;
    fts_error_t err;
    fts_error_clear(&err);
    assert_true(fts_redis_group_parse_read(reply, false, &out, &err));
    freeReplyObject(reply); /* the entries are copies */
    assert_int_equal(out.count, 2);
    assert_string_equal(out.entries[0].id, "1-0");
    assert_int_equal(out.entries[0].count, 4);
    assert_item(&out.entries[0], 0, "op");
    assert_item(&out.entries[0], 1, "index");
    assert_item(&out.entries[0], 3, "d.c1");
    assert_int_equal(out.entries[0].deliveries, 1);
    assert_string_equal(out.entries[1].id, "2-0");
    assert_int_equal(out.entries[1].items[1].len, 3);
    assert_memory_equal(out.entries[1].items[1].data, "a\0b", 3);
    assert_int_equal(out.entries[1].deliveries, 1);
    assert_int_equal(out.deleted, 0);
    assert_string_equal(out.next_cursor, "");
    fts_redis_group_entries_cleanup(&out);
    assert_null(out.entries);
    assert_int_equal(out.count, 0);
}

static void test_read_history_leaves_deliveries_and_keeps_deleted_entries(void **state)
{
    (void)state;
    /* Our own pending entries: 1-0 still in the stream, 2-0 deleted from it meanwhile. */
    redisReply *reply = parse_resp("*1\r\n*2\r\n$1\r\ns\r\n*2\r\n"
                                   "*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
                                   "*2\r\n$3\r\n2-0\r\n*-1\r\n");
    fts_redis_group_entries_t out;
    fts_error_t err;
    assert_true(fts_redis_group_parse_read(reply, true, &out, &err));
    freeReplyObject(reply);
    assert_int_equal(out.count, 2);
    assert_int_equal(out.entries[0].deliveries, 0);
    assert_non_null(out.entries[0].items);
    assert_string_equal(out.entries[1].id, "2-0");
    assert_null(out.entries[1].items);
    assert_int_equal(out.entries[1].count, 0);
    fts_redis_group_entries_cleanup(&out);
}

static void test_read_block_ran_out_is_no_entries(void **state)
{
    (void)state;
    redisReply *reply = parse_resp("*-1\r\n");
    fts_redis_group_entries_t out;
    fts_error_t err;
    assert_true(fts_redis_group_parse_read(reply, false, &out, &err));
    freeReplyObject(reply);
    assert_int_equal(out.count, 0);
    assert_null(out.entries);

    /* An empty history is an empty entry list. */
    reply = parse_resp("*1\r\n*2\r\n$1\r\ns\r\n*0\r\n");
    assert_true(fts_redis_group_parse_read(reply, true, &out, &err));
    freeReplyObject(reply);
    assert_int_equal(out.count, 0);
    fts_redis_group_entries_cleanup(&out);
}

static void assert_read_malformed(const char *resp, const char *what)
{
    redisReply *reply = parse_resp(resp);
    fts_redis_group_entries_t out;
    fts_error_t err;
    fts_error_clear(&err);
    assert_false(fts_redis_group_parse_read(reply, false, &out, &err));
    freeReplyObject(reply);
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
    assert_contains(err.message, what);
    assert_null(out.entries);
    assert_int_equal(out.count, 0);
}

static void test_read_malformed_replies_are_errors(void **state)
{
    (void)state;
    assert_read_malformed(":1\r\n", "not [[stream, entries]]");
    assert_read_malformed("*2\r\n*0\r\n*0\r\n", "not [[stream, entries]]");
    assert_read_malformed("*1\r\n*2\r\n$1\r\ns\r\n$1\r\nx\r\n", "the entries are not an array");
    assert_read_malformed("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*1\r\n$3\r\n1-0\r\n",
                          "an entry is not [id, fields]");
    assert_read_malformed("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$0\r\n\r\n*0\r\n",
                          "an entry ID is empty or too long");
    assert_read_malformed("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n"
                          "*2\r\n$48\r\n123456789012345678901234-12345678901234567890123\r\n*0\r\n",
                          "an entry ID is empty or too long");
    assert_read_malformed("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*1\r\n$1\r\nf\r\n",
                          "not field/value pairs");
    assert_read_malformed("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n:1\r\n",
                          "not a string");
    /* A good entry before a bad one: nothing is kept of either. */
    assert_read_malformed("*1\r\n*2\r\n$1\r\ns\r\n*2\r\n"
                          "*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
                          "*2\r\n$3\r\n2-0\r\n*1\r\n$1\r\nf\r\n",
                          "not field/value pairs");
}

static void test_claim_redis7_reports_cursor_and_deleted(void **state)
{
    (void)state;
    redisReply *reply = parse_resp("*3\r\n$5\r\n7-0-1\r\n"
                                   "*1\r\n*2\r\n$3\r\n5-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
                                   "*2\r\n$3\r\n3-0\r\n$3\r\n4-0\r\n");
    fts_redis_group_entries_t out;
    fts_error_t err;
    assert_true(fts_redis_group_parse_claim(reply, &out, &err));
    freeReplyObject(reply);
    assert_string_equal(out.next_cursor, "7-0-1");
    assert_int_equal(out.count, 1);
    assert_string_equal(out.entries[0].id, "5-0");
    assert_int_equal(out.entries[0].deliveries, 0);
    assert_int_equal(out.deleted, 2);
    fts_redis_group_entries_cleanup(&out);
}

static void test_claim_redis62_counts_nil_entries_as_deleted(void **state)
{
    (void)state;
    redisReply *reply = parse_resp("*2\r\n$3\r\n0-0\r\n"
                                   "*3\r\n*2\r\n$3\r\n5-0\r\n*0\r\n$-1\r\n*-1\r\n");
    fts_redis_group_entries_t out;
    fts_error_t err;
    assert_true(fts_redis_group_parse_claim(reply, &out, &err));
    freeReplyObject(reply);
    assert_string_equal(out.next_cursor, "0-0");
    assert_int_equal(out.count, 1);
    assert_non_null(out.entries[0].items); /* present, with no fields */
    assert_int_equal(out.entries[0].count, 0);
    assert_int_equal(out.deleted, 2);
    fts_redis_group_entries_cleanup(&out);
}

static void assert_claim_malformed(const char *resp, const char *what)
{
    redisReply *reply = parse_resp(resp);
    fts_redis_group_entries_t out;
    fts_error_t err;
    fts_error_clear(&err);
    assert_false(fts_redis_group_parse_claim(reply, &out, &err));
    freeReplyObject(reply);
    assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
    assert_contains(err.message, what);
    assert_null(out.entries);
    assert_int_equal(out.count, 0);
}

static void test_claim_malformed_replies_are_errors(void **state)
{
    (void)state;
    assert_claim_malformed("*1\r\n$3\r\n0-0\r\n", "not [cursor, entries, deleted]");
    assert_claim_malformed("*4\r\n$3\r\n0-0\r\n*0\r\n*0\r\n*0\r\n",
                           "not [cursor, entries, deleted]");
    assert_claim_malformed("*2\r\n:0\r\n*0\r\n", "not [cursor, entries, deleted]");
    assert_claim_malformed("*3\r\n$3\r\n0-0\r\n"
                           "*1\r\n*2\r\n$3\r\n5-0\r\n*0\r\n"
                           ":3\r\n",
                           "the deleted IDs are not an array");
}

static void test_pending_sets_deliveries_by_id(void **state)
{
    (void)state;
    fts_stream_entry_t entries[3];
    memset(entries, 0, sizeof entries);
    snprintf(entries[0].id, sizeof entries[0].id, "1-0");
    snprintf(entries[1].id, sizeof entries[1].id, "2-0");
    snprintf(entries[2].id, sizeof entries[2].id, "3-0");
    entries[1].deliveries = 7; /* not listed: claimed by another consumer meanwhile */
    /* Out of order, and one ID we do not hold (ignored). */
    redisReply *reply = parse_resp("*3\r\n"
                                   "*4\r\n$3\r\n3-0\r\n$1\r\nc\r\n:10\r\n:4\r\n"
                                   "*4\r\n$3\r\n9-0\r\n$1\r\nc\r\n:10\r\n:9\r\n"
                                   "*4\r\n$3\r\n1-0\r\n$1\r\nc\r\n:10\r\n:2\r\n");
    fts_error_t err;
    assert_true(fts_redis_group_parse_pending(reply, entries, 3, &err));
    freeReplyObject(reply);
    assert_int_equal(entries[0].deliveries, 2);
    assert_int_equal(entries[1].deliveries, 7);
    assert_int_equal(entries[2].deliveries, 4);

    /* A prefix of an ID is not the ID. */
    reply = parse_resp("*1\r\n*4\r\n$2\r\n1-\r\n$1\r\nc\r\n:10\r\n:5\r\n");
    assert_true(fts_redis_group_parse_pending(reply, entries, 3, &err));
    freeReplyObject(reply);
    assert_int_equal(entries[0].deliveries, 2);
}

static void test_pending_malformed_replies_are_errors(void **state)
{
    (void)state;
    fts_stream_entry_t entry;
    memset(&entry, 0, sizeof entry);
    snprintf(entry.id, sizeof entry.id, "1-0");
    const char *bad[] = {
        ":1\r\n",
        "*1\r\n*3\r\n$3\r\n1-0\r\n$1\r\nc\r\n:10\r\n",
        "*1\r\n*4\r\n$3\r\n1-0\r\n$1\r\nc\r\n:10\r\n$1\r\n2\r\n",
        "*1\r\n*4\r\n$3\r\n1-0\r\n$1\r\nc\r\n:10\r\n:-1\r\n",
        "*1\r\n*4\r\n:1\r\n$1\r\nc\r\n:10\r\n:1\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redisReply *reply = parse_resp(bad[i]);
        fts_error_t err;
        fts_error_clear(&err);
        assert_false(fts_redis_group_parse_pending(reply, &entry, 1, &err));
        freeReplyObject(reply);
        assert_int_equal(err.domain, FTS_ERROR_REDIS);
        assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
        assert_contains(err.message, i == 0 ? "not an array" : "a row is not");
        assert_int_equal(entry.deliveries, 0);
    }
}

/* The barrier of a drop or sweep: clear only when nothing before the entry is pending. */
static void test_barrier_clears_only_when_nothing_before_is_pending(void **state)
{
    (void)state;
    fts_error_t err;
    bool clear = true;
    /* an entry before 5-3 is pending */
    redisReply *reply = parse_resp("*1\r\n*4\r\n$3\r\n5-2\r\n$1\r\nc\r\n:10\r\n:1\r\n");
    assert_true(fts_redis_group_parse_barrier(reply, "5-3", &clear, &err));
    freeReplyObject(reply);
    assert_false(clear);
    /* a prefix of the ID is another ID */
    reply = parse_resp("*1\r\n*4\r\n$2\r\n5-\r\n$1\r\nc\r\n:10\r\n:1\r\n");
    assert_true(fts_redis_group_parse_barrier(reply, "5-3", &clear, &err));
    freeReplyObject(reply);
    assert_false(clear);
    /* the smallest pending one is the entry itself */
    reply = parse_resp("*1\r\n*4\r\n$3\r\n5-3\r\n$1\r\nc\r\n:10\r\n:1\r\n");
    assert_true(fts_redis_group_parse_barrier(reply, "5-3", &clear, &err));
    freeReplyObject(reply);
    assert_true(clear);
    /* nothing pending up to it (it was acknowledged by someone else meanwhile) */
    clear = false;
    reply = parse_resp("*0\r\n");
    assert_true(fts_redis_group_parse_barrier(reply, "5-3", &clear, &err));
    freeReplyObject(reply);
    assert_true(clear);
    /* malformed */
    reply = parse_resp(":1\r\n");
    fts_error_clear(&err);
    assert_false(fts_redis_group_parse_barrier(reply, "5-3", &clear, &err));
    freeReplyObject(reply);
    assert_false(clear);
    assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
    reply = parse_resp("*1\r\n*3\r\n$3\r\n5-3\r\n$1\r\nc\r\n:10\r\n");
    assert_false(fts_redis_group_parse_barrier(reply, "5-3", &clear, &err));
    freeReplyObject(reply);
    assert_false(clear);
}

static const fts_redis_group_names_t names = {
    .stream_key = "ftsync:{p}:stream",
    .dead_key = "ftsync:{p}:dead",
    .group = "loaders",
    .consumer = "host-1",
};

static void assert_arg(const fts_redis_argv_t *command, int i, const char *text)
{
    assert_true(i < command->argc);
    assert_int_equal(command->argvlen[i], strlen(text));
    assert_memory_equal(command->argv[i], text, strlen(text));
}

static void test_settle_without_dead_letters_is_a_plain_xack(void **state)
{
    (void)state;
    const char *ids[] = {"1-0", "2-0"};
    fts_settlement_t settlement = {.ack_ids = ids, .ack_count = 2};
    fts_redis_argv_t command;
    memset(&command, 0, sizeof command);
    assert_false(fts_redis_group_build_settle(&command, &names, &settlement, 1234));
    assert_int_equal(command.argc, 5);
    assert_arg(&command, 0, "XACK");
    assert_arg(&command, 1, "ftsync:{p}:stream");
    assert_arg(&command, 2, "loaders");
    assert_arg(&command, 3, "1-0");
    assert_arg(&command, 4, "2-0");
    fts_redis_argv_cleanup(&command);
    assert_int_equal(command.argc, 0);
    assert_null(command.argv);
}

/* Finds the value of the last occurrence of field among a dead letter's items. */
static const char *last_value(const fts_redis_argv_t *command, int first, int count,
                              const char *field)
{
    const char *value = NULL;
    for (int i = first; i + 1 < first + count; i += 2) {
        if (strcmp(command->argv[i], field) == 0) {
            value = command->argv[i + 1];
        }
    }
    return value;
}

static void test_settle_with_dead_letters_is_the_script(void **state)
{
    (void)state;
    /* The entry carries a field named like one of ours: ours must come last. */
    fts_bytes_t items[] = {{"op", 2}, {"index", 5}, {"reason", 6}, {"x\0y", 3}};
    fts_stream_entry_t entry = {.id = "5-0", .items = items, .count = 4, .deliveries = 3};
    fts_stream_entry_t deleted = {.id = "6-0", .items = NULL, .count = 0};
    fts_load_dead_t dead[] = {
        {.entry = &entry, .reason = "mapper_parsing_exception: bad", .deliveries = 3},
        {.entry = &deleted, .reason = NULL, .deliveries = 1},
    };
    const char *ids[] = {"4-0", "5-0", "6-0"};
    fts_settlement_t settlement = {.ack_ids = ids, .ack_count = 3, .dead = dead, .dead_count = 2};
    fts_redis_argv_t command;
    memset(&command, 0, sizeof command);
    assert_true(fts_redis_group_build_settle(&command, &names, &settlement, 1700000000123u));

    assert_arg(&command, 0, "EVAL");
    assert_contains(command.argv[1], "redis.call('XADD'");
    assert_contains(command.argv[1], "redis.call('XACK'");
    assert_arg(&command, 2, "2");
    assert_arg(&command, 3, "ftsync:{p}:dead");
    assert_arg(&command, 4, "ftsync:{p}:stream");
    assert_arg(&command, 5, "loaders");
    assert_arg(&command, 6, "2");

    /* First dead letter: its 4 items, then our 6 fields as 12 items. */
    assert_arg(&command, 7, "16");
    int first = 8;
    assert_arg(&command, first, "op");
    assert_int_equal(command.argvlen[first + 3], 3); /* binary-safe */
    assert_memory_equal(command.argv[first + 3], "x\0y", 3);
    assert_string_equal(last_value(&command, first, 16, "entry_id"), "5-0");
    assert_string_equal(last_value(&command, first, 16, "deliveries"), "3");
    assert_string_equal(last_value(&command, first, 16, "reason"), "mapper_parsing_exception: bad");
    assert_string_equal(last_value(&command, first, 16, "stage"), "load");
    assert_string_equal(last_value(&command, first, 16, "consumer"), "host-1");
    assert_string_equal(last_value(&command, first, 16, "failed_at"), "1700000000123");

    /* Second: deleted from the stream, so only ours; a missing reason says so. */
    int second = first + 16;
    assert_arg(&command, second, "12");
    assert_string_equal(last_value(&command, second + 1, 12, "entry_id"), "6-0");
    assert_string_equal(last_value(&command, second + 1, 12, "reason"), "unknown");
    assert_string_equal(last_value(&command, second + 1, 12, "deliveries"), "1");

    /* Then the IDs to acknowledge, and nothing else. */
    int acks = second + 1 + 12;
    assert_int_equal(command.argc, acks + 3);
    assert_arg(&command, acks, "4-0");
    assert_arg(&command, acks + 1, "5-0");
    assert_arg(&command, acks + 2, "6-0");
    fts_redis_argv_cleanup(&command);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_new_entries_are_delivered_once),
        cmocka_unit_test(test_read_history_leaves_deliveries_and_keeps_deleted_entries),
        cmocka_unit_test(test_read_block_ran_out_is_no_entries),
        cmocka_unit_test(test_read_malformed_replies_are_errors),
        cmocka_unit_test(test_claim_redis7_reports_cursor_and_deleted),
        cmocka_unit_test(test_claim_redis62_counts_nil_entries_as_deleted),
        cmocka_unit_test(test_claim_malformed_replies_are_errors),
        cmocka_unit_test(test_pending_sets_deliveries_by_id),
        cmocka_unit_test(test_pending_malformed_replies_are_errors),
        cmocka_unit_test(test_barrier_clears_only_when_nothing_before_is_pending),
        cmocka_unit_test(test_settle_without_dead_letters_is_a_plain_xack),
        cmocka_unit_test(test_settle_with_dead_letters_is_the_script),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
