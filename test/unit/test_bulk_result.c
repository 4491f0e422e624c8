/*
 * test_bulk_result.c - judging answers to _bulk requests, item by item (invariant 2).
 *
 * Most cases read an answer from test/fixtures/bulk/ (see its README: the Elasticsearch 1.5 and
 * OpenSearch 2.19 files are real recordings from the test bed's engines, the Elasticsearch
 * 7.x and 8.x ones and two OpenSearch shapes no single node can be made to send follow the
 * documented shapes) and check every item's verdict, kind, status and reason. The rest are
 * short inline bodies for the shapes no server sends on purpose: statuses as int64 or double,
 * wrong ops, extra or missing items, bodies that are not JSON. Whenever the answer is not
 * ITEMS, the items array must be left untouched: nothing may be acknowledged by accident.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"
#include "assertions.h"
#include "buffer.h"
#include "bulk_result.h"
#include "json_convert.h"

#define I FTS_ACTION_INDEX
#define D FTS_ACTION_DELETE

/* The most actions any case sends. */
#define MAX_ACTIONS 16

/* What items[] holds before judging, to see that a non-ITEMS answer never writes it. */
#define POISON 0xa5

typedef struct {
    fts_bulk_item_verdict_t verdict;
    fts_bulk_kind_t kind;
    int status;
    const char *reason_part; /* NULL: the reason must be empty */
} expect_t;

#define ACK_OK(status)                                                                             \
    {                                                                                              \
        FTS_BULK_ITEM_ACK, FTS_BULK_KIND_OK, status, NULL                                          \
    }
#define ACK_CONFLICT                                                                               \
    {                                                                                              \
        FTS_BULK_ITEM_ACK, FTS_BULK_KIND_CONFLICT, 409, NULL                                       \
    }
#define ACK_NOT_FOUND                                                                              \
    {                                                                                              \
        FTS_BULK_ITEM_ACK, FTS_BULK_KIND_NOT_FOUND, 404, NULL                                      \
    }
#define RETRY(kind, status, part)                                                                  \
    {                                                                                              \
        FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_##kind, status, part                                    \
    }
#define REJECT(status, part)                                                                       \
    {                                                                                              \
        FTS_BULK_ITEM_REJECT, FTS_BULK_KIND_REJECTED, status, part                                 \
    }

typedef struct {
    fts_bulk_response_verdict_t verdict;
    fts_bulk_item_result_t items[MAX_ACTIONS];
    char reason[FTS_BULK_REASON_SIZE];
} outcome_t;

/* A reason is one line of printable UTF-8: it goes into logs and dead-letter entries. */
static void assert_printable_line(const char *text)
{
    for (const char *p = text; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            fail_msg("reason has control character 0x%02x: %s", (unsigned char)*p, text);
        }
    }
    assert_true(fts_utf8_validate(text, strlen(text)));
}

static void judge(long status, const char *body, size_t body_len, const fts_action_op_t *ops,
                  size_t count, outcome_t *out)
{
    assert_true(count <= MAX_ACTIONS);
    memset(out->items, POISON, sizeof out->items);
    memset(out->reason, 'x', sizeof out->reason);
    out->verdict = fts_bulk_response_judge(status, body, body_len, ops, count, out->items,
                                           out->reason, sizeof out->reason);
    assert_true(memchr(out->reason, '\0', sizeof out->reason) != NULL);
    assert_printable_line(out->reason);
    if (out->verdict != FTS_BULK_RESPONSE_ITEMS) {
        unsigned char untouched[sizeof out->items];
        memset(untouched, POISON, sizeof untouched);
        assert_memory_equal(out->items, untouched, sizeof untouched);
        assert_true(out->reason[0] != '\0');
    } else {
        assert_string_equal(out->reason, "");
    }
}

static void judge_text(long status, const char *body, const fts_action_op_t *ops, size_t count,
                       outcome_t *out)
{
    judge(status, body, strlen(body), ops, count, out);
}

static void judge_fixture(long status, const char *name, const fts_action_op_t *ops, size_t count,
                          outcome_t *out)
{
    char path[512];
    snprintf(path, sizeof path, "%s/test/fixtures/bulk/%s", FTSYNC_SOURCE_DIR, name);
    fts_buffer_t body = {0};
    fts_error_t err = {0};
    if (!fts_buffer_read_file(&body, path, 1 << 20, &err)) {
        fail_msg("%s", err.message);
    }
    /* Hand over exactly the bytes, in a copy without a terminating NUL, as an HTTP client
     * would: the judge must not read past body_len. */
    char *exact = malloc(body.len ? body.len : 1);
    memcpy(exact, body.data, body.len);
    judge(status, exact, body.len, ops, count, out);
    free(exact);
    fts_buffer_destroy(&body);
}

static void check_items(const outcome_t *out, const expect_t *expected, size_t count)
{
    assert_int_equal(out->verdict, FTS_BULK_RESPONSE_ITEMS);
    for (size_t i = 0; i < count; i++) {
        const fts_bulk_item_result_t *item = &out->items[i];
        if (item->verdict != expected[i].verdict || item->kind != expected[i].kind ||
            item->status != expected[i].status) {
            fail_msg("item %zu: verdict %d kind %s status %d, expected verdict %d kind %s "
                     "status %d (reason: %s)",
                     i, item->verdict, fts_bulk_kind_name(item->kind), item->status,
                     expected[i].verdict, fts_bulk_kind_name(expected[i].kind), expected[i].status,
                     item->reason);
        }
        assert_printable_line(item->reason);
        if (expected[i].reason_part) {
            assert_contains(item->reason, expected[i].reason_part);
        } else {
            assert_string_equal(item->reason, "");
        }
    }
}

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* ---------------------------------------------------------------------------------------- */
/* Elasticsearch 1.5.2, recorded                                                            */

static void test_es1_all_success(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, I, D};
    const expect_t expected[] = {ACK_OK(201), ACK_OK(201), ACK_OK(201), ACK_OK(200)};
    outcome_t out;
    judge_fixture(200, "es1-all-success.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es1_partial_failure(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, I};
    const expect_t expected[] = {
        ACK_OK(201),
        REJECT(400, "MapperParsingException[failed to parse [updated_at]]; nested: "
                    "MapperParsingException[failed to parse date field [last tuesday]"),
        ACK_OK(201)};
    outcome_t out;
    judge_fixture(200, "es1-partial-failure.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es1_version_conflict(void **state)
{
    (void)state;
    /* Lower and equal external versions, on index and on delete: all already superseded. */
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {ACK_CONFLICT, ACK_CONFLICT, ACK_CONFLICT};
    outcome_t out;
    judge_fixture(200, "es1-version-conflict.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es1_delete_not_found(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {D, D};
    const expect_t expected[] = {ACK_NOT_FOUND, ACK_OK(200)};
    outcome_t out;
    judge_fixture(200, "es1-delete-not-found.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es1_mixed(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D, I, D};
    const expect_t expected[] = {
        ACK_OK(201), ACK_CONFLICT, ACK_NOT_FOUND,
        REJECT(400, "MapperParsingException[failed to parse [updated_at]]; nested: "
                    "ElasticsearchIllegalArgumentException[unknown property [year]]"),
        ACK_CONFLICT};
    outcome_t out;
    judge_fixture(200, "es1-mixed.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es1_reason_newline_flattened(void **state)
{
    (void)state;
    /* The recorded reason holds an escaped newline; the verdict's reason is one line. */
    const fts_action_op_t ops[] = {I};
    const expect_t expected[] = {
        REJECT(400, "JsonParseException[Unexpected end-of-input in VALUE_STRING  at [Source:")};
    outcome_t out;
    judge_fixture(200, "es1-parse-error.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es1_read_only_retried(void **state)
{
    (void)state;
    /* A read-only index refuses deletes too; both wait until the block is lifted. */
    const fts_action_op_t ops[] = {I, D};
    const expect_t expected[] = {
        RETRY(BLOCKED, 403, "ClusterBlockException[blocked by: [FORBIDDEN/5/index read-only"),
        RETRY(BLOCKED, 403, "ClusterBlockException")};
    outcome_t out;
    judge_fixture(200, "es1-read-only.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es1_request_400_split(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I};
    outcome_t out;
    judge_fixture(400, "es1-request-400.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_SPLIT);
    assert_string_equal(out.reason, "HTTP 400: ActionRequestValidationException[Validation "
                                    "Failed: 1: no requests added;]");
}

static void test_es1_truncated_retried(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D, I, D};
    outcome_t out;
    judge_fixture(200, "es1-truncated.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_contains(out.reason, "malformed bulk response: not JSON");
}

/* ---------------------------------------------------------------------------------------- */
/* Elasticsearch 7.x and 8.x, from the documented shapes                                   */

static void test_es7_all_success(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {ACK_OK(201), ACK_OK(200), ACK_OK(200)};
    outcome_t out;
    judge_fixture(200, "es7-all-success.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es7_partial_failure_reason(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, I};
    const expect_t expected[] = {ACK_OK(201), REJECT(400, "mapper_parsing_exception"), ACK_OK(201)};
    outcome_t out;
    judge_fixture(200, "es7-partial-failure.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
    /* "<type>: <reason>", then the chain of causes. */
    assert_string_equal(out.items[1].reason,
                        "mapper_parsing_exception: failed to parse field [updated_at] of type "
                        "[date] in document with id 'app-4'. Preview of field's value: 'last "
                        "tuesday'; caused by illegal_argument_exception: failed to parse date "
                        "field [last tuesday] with format [strict_date_optional_time||epoch_"
                        "millis]; caused by date_time_parse_exception: Failed to parse with all "
                        "enclosed parsers");
}

static void test_es7_version_conflict(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {ACK_CONFLICT, ACK_CONFLICT, ACK_CONFLICT};
    outcome_t out;
    judge_fixture(200, "es7-version-conflict.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es7_delete_not_found(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {D, D};
    const expect_t expected[] = {ACK_NOT_FOUND, ACK_OK(200)};
    outcome_t out;
    judge_fixture(200, "es7-delete-not-found.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es7_read_only_retried(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, D};
    const expect_t expected[] = {
        RETRY(BLOCKED, 403,
              "cluster_block_exception: index [apps] blocked by: [FORBIDDEN/12/index read-only "
              "/ allow delete (api)];"),
        RETRY(BLOCKED, 403, "cluster_block_exception")};
    outcome_t out;
    judge_fixture(200, "es7-read-only.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es7_index_missing(void **state)
{
    (void)state;
    /* 404 with index_not_found_exception: the index is missing, not the document. Both the
     * index and the delete wait for it; acknowledging the delete would lose it. */
    const fts_action_op_t ops[] = {I, D};
    const expect_t expected[] = {RETRY(BLOCKED, 404, "index_not_found_exception: no such index"),
                                 RETRY(BLOCKED, 404, "index_not_found_exception")};
    outcome_t out;
    judge_fixture(200, "es7-index-missing.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es7_request_400_split(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, D};
    outcome_t out;
    judge_fixture(400, "es7-request-400.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_SPLIT);
    assert_string_equal(out.reason, "HTTP 400: illegal_argument_exception: The bulk request "
                                    "must be terminated by a newline [ ]");
}

static void test_es8_all_success(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {ACK_OK(201), ACK_OK(201), ACK_OK(200)};
    outcome_t out;
    judge_fixture(200, "es8-all-success.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es8_partial_failure(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {
        ACK_OK(201),
        REJECT(400, "document_parsing_exception: [1:43] failed to parse field [updated_at]"),
        ACK_CONFLICT};
    outcome_t out;
    judge_fixture(200, "es8-partial-failure.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es8_item_429_and_5xx_retried(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {
        ACK_OK(201),
        RETRY(THROTTLED, 429, "es_rejected_execution_exception: rejected execution of "),
        RETRY(SERVER_ERROR, 503, "unavailable_shards_exception: [apps][0] primary shard")};
    outcome_t out;
    judge_fixture(200, "es8-rejected-execution.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
    /* The whole write-queue message fits: the pool figures an operator needs are kept. */
    const char *reason = out.items[1].reason;
    const char *tail = "queued tasks = 10000, completed tasks = 48213377]]";
    assert_string_equal(reason + strlen(reason) - strlen(tail), tail);
}

static void test_es8_write_blocks_retried(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I};
    const expect_t expected[] = {RETRY(BLOCKED, 403, "FORBIDDEN/8/index write (api)"),
                                 RETRY(THROTTLED, 429, "flood-stage watermark")};
    outcome_t out;
    judge_fixture(200, "es8-write-block.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_es8_request_429_retried(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D};
    outcome_t out;
    judge_fixture(429, "es8-request-429.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_contains(out.reason, "HTTP 429: es_rejected_execution_exception: rejected execution "
                                "of coordinating operation");
}

static void test_es8_request_503_retried(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I};
    outcome_t out;
    judge_fixture(503, "es8-request-503.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_string_equal(out.reason, "HTTP 503: cluster_block_exception: blocked by: "
                                    "[SERVICE_UNAVAILABLE/2/no master];");
}

static void test_es8_truncated_retried(void **state)
{
    (void)state;
    /* Cut after the first item, inside the second's reason: the complete first item must not
     * be acknowledged either. */
    const fts_action_op_t ops[] = {I, I, D};
    outcome_t out;
    judge_fixture(200, "es8-truncated.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_contains(out.reason, "malformed bulk response: not JSON");
}

/* ---------------------------------------------------------------------------------------- */
/* OpenSearch 2.19.6, recorded from a real node (test/tools/record-bulk-fixtures.sh)        */

static void test_opensearch2_all_success(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {ACK_OK(201), ACK_OK(200), ACK_OK(200)};
    outcome_t out;
    judge_fixture(200, "opensearch2-all-success.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_opensearch2_partial_failure(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, I};
    const expect_t expected[] = {
        ACK_OK(201), REJECT(400, "mapper_parsing_exception: failed to parse field [updated_at]"),
        ACK_OK(201)};
    outcome_t out;
    judge_fixture(200, "opensearch2-partial-failure.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
    /* "<type>: <reason>", then the chain of causes, as the node wrote them. */
    assert_string_equal(out.items[1].reason,
                        "mapper_parsing_exception: failed to parse field [updated_at] of type "
                        "[date] in document with id 'app-4'. Preview of field's value: 'last "
                        "tuesday'; caused by illegal_argument_exception: failed to parse date "
                        "field [last tuesday] with format [strict_date_optional_time||epoch_"
                        "millis]; caused by date_time_parse_exception: Failed to parse with all "
                        "enclosed parsers");
}

static void test_opensearch2_version_conflict(void **state)
{
    (void)state;
    /* Lower and equal external versions, on index and on delete: all already superseded. */
    const fts_action_op_t ops[] = {I, I, D};
    const expect_t expected[] = {ACK_CONFLICT, ACK_CONFLICT, ACK_CONFLICT};
    outcome_t out;
    judge_fixture(200, "opensearch2-version-conflict.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_opensearch2_delete_not_found(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {D, D};
    const expect_t expected[] = {ACK_NOT_FOUND, ACK_OK(200)};
    outcome_t out;
    judge_fixture(200, "opensearch2-delete-not-found.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_opensearch2_index_missing(void **state)
{
    (void)state;
    /* 404 with index_not_found_exception (the node refuses to create indices on the fly):
     * the index is missing, not the document; both wait for it. */
    const fts_action_op_t ops[] = {I, D};
    const expect_t expected[] = {
        RETRY(BLOCKED, 404, "index_not_found_exception: no such index [missing-apps]"),
        RETRY(BLOCKED, 404, "index_not_found_exception")};
    outcome_t out;
    judge_fixture(200, "opensearch2-index-missing.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_opensearch2_write_block_retried(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, D};
    const expect_t expected[] = {
        RETRY(BLOCKED, 403,
              "cluster_block_exception: index [apps] blocked by: [FORBIDDEN/8/index write "
              "(api)];"),
        RETRY(BLOCKED, 403, "FORBIDDEN/8/index write (api)")};
    outcome_t out;
    judge_fixture(200, "opensearch2-write-block.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_opensearch2_read_only_retried(void **state)
{
    (void)state;
    /* A read-only index refuses deletes too; both wait until the block is lifted. */
    const fts_action_op_t ops[] = {I, D};
    const expect_t expected[] = {
        RETRY(BLOCKED, 403,
              "cluster_block_exception: index [apps] blocked by: [FORBIDDEN/5/index read-only "
              "(api)];"),
        RETRY(BLOCKED, 403, "cluster_block_exception")};
    outcome_t out;
    judge_fixture(200, "opensearch2-read-only-block.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_opensearch2_item_429_retried(void **state)
{
    (void)state;
    /* The write pool (1 thread, 1 queue slot) refused the shard request: every item 429. */
    const fts_action_op_t ops[] = {I, I, I, I, I};
    const expect_t expected[] = {
        RETRY(THROTTLED, 429, "rejected_execution_exception: rejected execution of "),
        RETRY(THROTTLED, 429, "rejected_execution_exception"),
        RETRY(THROTTLED, 429, "rejected_execution_exception"),
        RETRY(THROTTLED, 429, "rejected_execution_exception"),
        RETRY(THROTTLED, 429, "rejected_execution_exception")};
    outcome_t out;
    judge_fixture(200, "opensearch2-rejected-execution.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
    /* The pool figures an operator needs are kept. */
    assert_contains(out.items[0].reason, "queue capacity = 1");
}

static void test_opensearch2_request_400_split(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I};
    outcome_t out;
    judge_fixture(400, "opensearch2-request-400.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_SPLIT);
    /* OpenSearch writes the newline it wants as the two characters \n, JSON-escaped. */
    assert_string_equal(out.reason, "HTTP 400: illegal_argument_exception: The bulk request "
                                    "must be terminated by a newline [\\n]");
}

static void test_opensearch2_request_413_split(void **state)
{
    (void)state;
    /* The node's HTTP layer refuses a body over http.max_content_length with an empty 413. */
    const fts_action_op_t ops[] = {I, I};
    outcome_t out;
    judge_fixture(413, "opensearch2-request-413.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_SPLIT);
    assert_contains(out.reason, "HTTP 413");
}

/* ---------------------------------------------------------------------------------------- */
/* OpenSearch shapes no single test node sends, from the documented shapes                  */

static void test_opensearch2_pressure_and_500(void **state)
{
    (void)state;
    /* Shard indexing pressure's 429 and a 500 item, beside the common cases. */
    const fts_action_op_t ops[] = {I, I, I, I, D, D};
    const expect_t expected[] = {
        ACK_OK(201),
        REJECT(400, "mapper_parsing_exception: failed to parse field [updated_at]"),
        ACK_CONFLICT,
        RETRY(THROTTLED, 429, "rejected_execution_exception: rejected execution of primary"),
        ACK_NOT_FOUND,
        RETRY(SERVER_ERROR, 500, "illegal_state_exception: failed to obtain in-memory shard")};
    outcome_t out;
    judge_fixture(200, "opensearch2-written-pressure-and-500.json", ops, COUNT(ops), &out);
    check_items(&out, expected, COUNT(ops));
}

static void test_aws_opensearch_request_413_split(void **state)
{
    (void)state;
    /* Amazon OpenSearch Service's front end, not OpenSearch itself, answers with a body. */
    const fts_action_op_t ops[] = {I, I};
    outcome_t out;
    judge_fixture(413, "aws-opensearch-request-413.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_SPLIT);
    assert_string_equal(out.reason,
                        "HTTP 413: {\"Message\":\"Request size exceeded 10485760 bytes\"}");
}

/* ---------------------------------------------------------------------------------------- */
/* Shapes of the whole answer                                                               */

static void test_item_count_mismatch_retried(void **state)
{
    (void)state;
    const fts_action_op_t four[] = {I, I, D, D};
    outcome_t out;
    judge_fixture(200, "es7-all-success.json", four, COUNT(four), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_string_equal(out.reason, "malformed bulk response: 3 items for 4 actions");

    const fts_action_op_t two[] = {I, I};
    judge_fixture(200, "es7-all-success.json", two, COUNT(two), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_string_equal(out.reason, "malformed bulk response: 3 items for 2 actions");
}

static void test_wrong_op_retried(void **state)
{
    (void)state;
    /* The third item answers a delete where an index was sent: the order is off, so no item
     * can be matched to its action. */
    const fts_action_op_t ops[] = {I, I, I};
    outcome_t out;
    judge_fixture(200, "es7-all-success.json", ops, COUNT(ops), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_string_equal(out.reason,
                        "malformed bulk response: item 2 answers delete, but index was sent");

    const fts_action_op_t deletes[] = {I, D};
    judge_fixture(200, "es1-delete-not-found.json", deletes, COUNT(deletes), &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_contains(out.reason, "item 0 answers delete, but index was sent");
}

static void test_create_answers_index_update_answers_nothing(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I};
    outcome_t out;
    judge_text(200, "{\"items\":[{\"create\":{\"_id\":\"1\",\"status\":201}}]}", ops, 1, &out);
    const expect_t created[] = {ACK_OK(201)};
    check_items(&out, created, 1);

    judge_text(200, "{\"items\":[{\"update\":{\"_id\":\"1\",\"status\":200}}]}", ops, 1, &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_contains(out.reason, "item 0 answers update, but index was sent");

    const fts_action_op_t del[] = {D};
    judge_text(200, "{\"items\":[{\"create\":{\"_id\":\"1\",\"status\":201}}]}", del, 1, &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);

    judge_text(200, "{\"items\":[{\"frobnicate\":{\"_id\":\"1\",\"status\":201}}]}", ops, 1, &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_contains(out.reason, "item 0 has no index, create, delete or update answer");
}

static void test_trailing_whitespace_accepted(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {D};
    outcome_t out;
    judge_text(200, "\n{\"items\":[{\"delete\":{\"status\":200}}]}\r\n", ops, 1, &out);
    const expect_t expected[] = {ACK_OK(200)};
    check_items(&out, expected, 1);
}

static void test_status_number_types(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, I};
    outcome_t out;
    /* int32, int64 (extended JSON, as libbson reads it) and an integral double. */
    judge_text(200,
               "{\"items\":[{\"index\":{\"status\":201}},"
               "{\"index\":{\"status\":{\"$numberLong\":\"200\"}}},"
               "{\"index\":{\"status\":409.0}}]}",
               ops, 3, &out);
    const expect_t expected[] = {ACK_OK(201), ACK_OK(200), ACK_CONFLICT};
    check_items(&out, expected, 3);
}

static void test_bad_status_retried(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"items\":[{\"index\":{\"_id\":\"1\"}}]}",
        "{\"items\":[{\"index\":{\"status\":\"201\"}}]}",
        "{\"items\":[{\"index\":{\"status\":201.5}}]}",
        "{\"items\":[{\"index\":{\"status\":0}}]}",
        "{\"items\":[{\"index\":{\"status\":-201}}]}",
        "{\"items\":[{\"index\":{\"status\":1e300}}]}",
        "{\"items\":[{\"index\":{\"status\":{\"$numberLong\":\"4294967497\"}}}]}",
        "{\"items\":[{\"index\":{\"status\":true}}]}",
        "{\"items\":[{\"index\":{\"status\":null}}]}",
    };
    const fts_action_op_t ops[] = {I};
    for (size_t i = 0; i < COUNT(bodies); i++) {
        outcome_t out;
        judge_text(200, bodies[i], ops, 1, &out);
        if (out.verdict != FTS_BULK_RESPONSE_RETRY) {
            fail_msg("%s judged %d, expected RETRY", bodies[i], out.verdict);
        }
        assert_contains(out.reason, "malformed bulk response: item 0 has ");
    }
}

static void test_malformed_bodies_retried(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *reason_part;
    } cases[] = {
        {"", "malformed bulk response: empty body"},
        {"<html><body>502 Bad Gateway</body></html>", "malformed bulk response: not JSON"},
        {"{\"took\":1,\"errors\":false,\"items\":[{\"index\":{\"status\":201}}", "not JSON"},
        {"  \r\n", "malformed bulk response: not JSON (Incomplete JSON)"},
        {"{\"items\":[{\"index\":{\"status\":201}}]}{\"items\":[]}",
         "malformed bulk response: not JSON (more than one JSON value)"},
        {"{\"items\":[{\"index\":{\"status\":201}}]} trailing", "not JSON"},
        {"[{\"index\":{\"status\":201}}]", "no items array"},
        {"{\"took\":1,\"errors\":false}", "malformed bulk response: no items array"},
        {"{\"items\":{\"index\":{\"status\":201}}}", "no items array"},
        {"{\"error\":{\"type\":\"x_exception\",\"reason\":\"odd\"},\"status\":200}",
         "no items array but an error: x_exception: odd"},
        {"{\"items\":[42]}", "item 0 is not an object"},
        {"{\"items\":[{}]}", "item 0 is empty"},
        {"{\"items\":[{\"index\":7}]}", "item 0's index answer is not an object"},
        {"{\"items\":[{\"index\":{\"status\":201},\"delete\":{\"status\":200}}]}",
         "item 0 has more than one answer"},
    };
    const fts_action_op_t ops[] = {I};
    for (size_t i = 0; i < COUNT(cases); i++) {
        outcome_t out;
        judge_text(200, cases[i].body, ops, 1, &out);
        if (out.verdict != FTS_BULK_RESPONSE_RETRY) {
            fail_msg("%s judged %d, expected RETRY", cases[i].body, out.verdict);
        }
        assert_contains(out.reason, cases[i].reason_part);
    }
}

static void test_whole_request_statuses(void **state)
{
    (void)state;
    static const struct {
        long status;
        const char *body;
        fts_bulk_response_verdict_t verdict;
        const char *reason;
    } cases[] = {
        {413, "", FTS_BULK_RESPONSE_SPLIT, "HTTP 413 with an empty body"},
        {413, "{\"items\":[]}", FTS_BULK_RESPONSE_SPLIT, "HTTP 413: {\"items\":[]}"},
        {400, "not json at all", FTS_BULK_RESPONSE_SPLIT, "HTTP 400: not json at all"},
        /* 400 with items is not "refused as a whole": nothing is known, retry. */
        {400, "{\"items\":[{\"index\":{\"status\":400}}]}", FTS_BULK_RESPONSE_RETRY,
         "HTTP 400: {\"items\":[{\"index\":{\"status\":400}}]}"},
        {429, "", FTS_BULK_RESPONSE_RETRY, "HTTP 429 with an empty body"},
        {503,
         "{\"error\":\"ClusterBlockException[blocked by: [SERVICE_UNAVAILABLE/1/state not "
         "recovered / initialized];]\",\"status\":503}",
         FTS_BULK_RESPONSE_RETRY,
         "HTTP 503: ClusterBlockException[blocked by: [SERVICE_UNAVAILABLE/1/state not "
         "recovered / initialized];]"},
        {502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n</html>",
         FTS_BULK_RESPONSE_RETRY,
         "HTTP 502: <html>  <head><title>502 Bad Gateway</title></head>  </html>"},
        {401,
         "{\"error\":{\"type\":\"security_exception\",\"reason\":\"missing authentication "
         "credentials\"},\"status\":401}",
         FTS_BULK_RESPONSE_RETRY,
         "HTTP 401: security_exception: missing authentication credentials"},
        {301, "", FTS_BULK_RESPONSE_RETRY, "HTTP 301 with an empty body"},
        {0, "", FTS_BULK_RESPONSE_RETRY, "HTTP 0 with an empty body"},
    };
    const fts_action_op_t ops[] = {I};
    for (size_t i = 0; i < COUNT(cases); i++) {
        outcome_t out;
        judge_text(cases[i].status, cases[i].body, ops, 1, &out);
        if (out.verdict != cases[i].verdict) {
            fail_msg("HTTP %ld %s judged %d, expected %d", cases[i].status, cases[i].body,
                     out.verdict, cases[i].verdict);
        }
        assert_string_equal(out.reason, cases[i].reason);
    }
}

static void test_long_html_body_excerpt(void **state)
{
    (void)state;
    fts_buffer_t body = {0};
    fts_buffer_append_str(&body, "<html>");
    for (int i = 0; i < 400; i++) {
        fts_buffer_append_str(&body, "gateway timeout ");
    }
    const fts_action_op_t ops[] = {I};
    outcome_t out;
    judge(504, body.data, body.len, ops, 1, &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_RETRY);
    assert_true(strncmp(out.reason, "HTTP 504: <html>gateway timeout", 31) == 0);
    assert_true(strlen(out.reason) < 300);
    assert_string_equal(out.reason + strlen(out.reason) - 3, "...");
    fts_buffer_destroy(&body);
}

/* Every item status of the table in bulk_result.h, for both ops. */
static void test_item_status_table(void **state)
{
    (void)state;
    static const struct {
        int status;
        fts_action_op_t op;
        fts_bulk_item_verdict_t verdict;
        fts_bulk_kind_t kind;
    } table[] = {
        {200, I, FTS_BULK_ITEM_ACK, FTS_BULK_KIND_OK},
        {201, I, FTS_BULK_ITEM_ACK, FTS_BULK_KIND_OK},
        {202, D, FTS_BULK_ITEM_ACK, FTS_BULK_KIND_OK},
        {409, I, FTS_BULK_ITEM_ACK, FTS_BULK_KIND_CONFLICT},
        {409, D, FTS_BULK_ITEM_ACK, FTS_BULK_KIND_CONFLICT},
        {404, D, FTS_BULK_ITEM_ACK, FTS_BULK_KIND_NOT_FOUND},
        {404, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_BLOCKED},
        {429, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_THROTTLED},
        {500, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_SERVER_ERROR},
        {503, D, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_SERVER_ERROR},
        {599, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_SERVER_ERROR},
        {408, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_BLOCKED},
        {401, D, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_BLOCKED},
        {403, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_BLOCKED},
        {418, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_BLOCKED},
        {302, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_BLOCKED},
        {100, I, FTS_BULK_ITEM_RETRY, FTS_BULK_KIND_BLOCKED},
        {400, I, FTS_BULK_ITEM_REJECT, FTS_BULK_KIND_REJECTED},
        {400, D, FTS_BULK_ITEM_REJECT, FTS_BULK_KIND_REJECTED},
        {413, I, FTS_BULK_ITEM_REJECT, FTS_BULK_KIND_REJECTED},
        {422, I, FTS_BULK_ITEM_REJECT, FTS_BULK_KIND_REJECTED},
    };
    fts_buffer_t body = {0};
    fts_action_op_t ops[COUNT(table)];
    fts_buffer_append_str(&body, "{\"took\":1,\"errors\":true,\"items\":[");
    for (size_t i = 0; i < COUNT(table); i++) {
        ops[i] = table[i].op;
        fts_buffer_appendf(&body, "%s{\"%s\":{\"_id\":\"%zu\",\"status\":%d}}", i ? "," : "",
                           table[i].op == I ? "index" : "delete", i, table[i].status);
    }
    fts_buffer_append_str(&body, "]}");

    fts_bulk_item_result_t items[COUNT(table)];
    char reason[64];
    assert_int_equal(fts_bulk_response_judge(200, body.data, body.len, ops, COUNT(table), items,
                                             reason, sizeof reason),
                     FTS_BULK_RESPONSE_ITEMS);
    for (size_t i = 0; i < COUNT(table); i++) {
        if (items[i].verdict != table[i].verdict || items[i].kind != table[i].kind ||
            items[i].status != table[i].status) {
            fail_msg("status %d on %s: verdict %d kind %s, expected verdict %d kind %s",
                     table[i].status, fts_action_op_name(table[i].op), items[i].verdict,
                     fts_bulk_kind_name(items[i].kind), table[i].verdict,
                     fts_bulk_kind_name(table[i].kind));
        }
        if (items[i].verdict == FTS_BULK_ITEM_ACK) {
            assert_string_equal(items[i].reason, "");
        } else {
            /* No error object: the reason still says what happened. */
            char expected[64];
            snprintf(expected, sizeof expected, "status %d without an error", table[i].status);
            assert_string_equal(items[i].reason, expected);
        }
    }
    fts_buffer_destroy(&body);
}

static void test_reason_cut_on_character_boundary(void **state)
{
    (void)state;
    /* A reason of 3-byte characters longer than FTS_BULK_REASON_SIZE: the cut must not leave
     * half a character before the "...". */
    fts_buffer_t body = {0};
    fts_buffer_append_str(&body, "{\"items\":[{\"index\":{\"status\":400,\"error\":{\"type\":"
                                 "\"mapper_parsing_exception\",\"reason\":\"");
    for (int i = 0; i < 400; i++) {
        fts_buffer_append_str(&body, "\xe2\x82\xac"); /* U+20AC */
    }
    fts_buffer_append_str(&body, "\"}}}]}");
    const fts_action_op_t ops[] = {I};
    outcome_t out;
    judge(200, body.data, body.len, ops, 1, &out);
    assert_int_equal(out.verdict, FTS_BULK_RESPONSE_ITEMS);
    const char *reason = out.items[0].reason;
    size_t len = strlen(reason);
    assert_true(len < FTS_BULK_REASON_SIZE);
    assert_true(len > FTS_BULK_REASON_SIZE - 8);
    assert_string_equal(reason + len - 3, "...");
    assert_true(strncmp(reason, "mapper_parsing_exception: \xe2\x82\xac", 29) == 0);
    assert_true(fts_utf8_validate(reason, len)); /* checked again by judge() too */
    fts_buffer_destroy(&body);
}

static void test_error_shapes(void **state)
{
    (void)state;
    const fts_action_op_t ops[] = {I, I, I, I};
    outcome_t out;
    judge_text(200,
               "{\"items\":["
               "{\"index\":{\"status\":400,\"error\":{\"reason\":\"only a reason\"}}},"
               "{\"index\":{\"status\":400,\"error\":{\"type\":\"only_a_type\"}}},"
               "{\"index\":{\"status\":400,\"error\":{}}},"
               "{\"index\":{\"status\":400,\"error\":12}}]}",
               ops, 4, &out);
    const expect_t expected[] = {REJECT(400, "only a reason"), REJECT(400, "only_a_type"),
                                 REJECT(400, "error without type or reason"),
                                 REJECT(400, "error that is neither a string nor an object")};
    check_items(&out, expected, 4);
    assert_string_equal(out.items[0].reason, "only a reason");
    assert_string_equal(out.items[1].reason, "only_a_type");
}

static void test_no_actions_and_no_reason_buffer(void **state)
{
    (void)state;
    const char body[] = "{\"took\":0,\"errors\":false,\"items\":[]}";
    assert_int_equal(fts_bulk_response_judge(200, body, sizeof body - 1, NULL, 0, NULL, NULL, 0),
                     FTS_BULK_RESPONSE_ITEMS);
    /* A caller that does not want the reason may pass none. */
    const fts_action_op_t ops[] = {I};
    fts_bulk_item_result_t items[1];
    assert_int_equal(fts_bulk_response_judge(503, "", 0, ops, 1, items, NULL, 0),
                     FTS_BULK_RESPONSE_RETRY);
    assert_int_equal(fts_bulk_response_judge(200, NULL, 0, ops, 1, items, NULL, 0),
                     FTS_BULK_RESPONSE_RETRY);
    char tiny[4];
    assert_int_equal(fts_bulk_response_judge(413, "", 0, ops, 1, items, tiny, sizeof tiny),
                     FTS_BULK_RESPONSE_SPLIT);
    assert_string_equal(tiny, "...");
}

static void test_kind_names(void **state)
{
    (void)state;
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_OK), "ok");
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_CONFLICT), "version_conflict");
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_NOT_FOUND), "not_found");
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_THROTTLED), "throttled");
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_SERVER_ERROR), "server_error");
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_BLOCKED), "blocked");
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_REJECTED), "rejected");
    assert_string_equal(fts_bulk_kind_name(FTS_BULK_KIND_COUNT), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_es1_all_success),
        cmocka_unit_test(test_es1_partial_failure),
        cmocka_unit_test(test_es1_version_conflict),
        cmocka_unit_test(test_es1_delete_not_found),
        cmocka_unit_test(test_es1_mixed),
        cmocka_unit_test(test_es1_reason_newline_flattened),
        cmocka_unit_test(test_es1_read_only_retried),
        cmocka_unit_test(test_es1_request_400_split),
        cmocka_unit_test(test_es1_truncated_retried),
        cmocka_unit_test(test_es7_all_success),
        cmocka_unit_test(test_es7_partial_failure_reason),
        cmocka_unit_test(test_es7_version_conflict),
        cmocka_unit_test(test_es7_delete_not_found),
        cmocka_unit_test(test_es7_read_only_retried),
        cmocka_unit_test(test_es7_index_missing),
        cmocka_unit_test(test_es7_request_400_split),
        cmocka_unit_test(test_es8_all_success),
        cmocka_unit_test(test_es8_partial_failure),
        cmocka_unit_test(test_es8_item_429_and_5xx_retried),
        cmocka_unit_test(test_es8_write_blocks_retried),
        cmocka_unit_test(test_es8_request_429_retried),
        cmocka_unit_test(test_es8_request_503_retried),
        cmocka_unit_test(test_es8_truncated_retried),
        cmocka_unit_test(test_opensearch2_all_success),
        cmocka_unit_test(test_opensearch2_partial_failure),
        cmocka_unit_test(test_opensearch2_version_conflict),
        cmocka_unit_test(test_opensearch2_delete_not_found),
        cmocka_unit_test(test_opensearch2_index_missing),
        cmocka_unit_test(test_opensearch2_write_block_retried),
        cmocka_unit_test(test_opensearch2_read_only_retried),
        cmocka_unit_test(test_opensearch2_item_429_retried),
        cmocka_unit_test(test_opensearch2_request_400_split),
        cmocka_unit_test(test_opensearch2_request_413_split),
        cmocka_unit_test(test_opensearch2_pressure_and_500),
        cmocka_unit_test(test_aws_opensearch_request_413_split),
        cmocka_unit_test(test_item_count_mismatch_retried),
        cmocka_unit_test(test_wrong_op_retried),
        cmocka_unit_test(test_create_answers_index_update_answers_nothing),
        cmocka_unit_test(test_trailing_whitespace_accepted),
        cmocka_unit_test(test_status_number_types),
        cmocka_unit_test(test_bad_status_retried),
        cmocka_unit_test(test_malformed_bodies_retried),
        cmocka_unit_test(test_whole_request_statuses),
        cmocka_unit_test(test_long_html_body_excerpt),
        cmocka_unit_test(test_item_status_table),
        cmocka_unit_test(test_reason_cut_on_character_boundary),
        cmocka_unit_test(test_error_shapes),
        cmocka_unit_test(test_no_actions_and_no_reason_buffer),
        cmocka_unit_test(test_kind_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
