/*
 * fuzz_bulk_result.c - libFuzzer target: the judge of Elasticsearch's _bulk answers
 * (core/bulk_result.c) over arbitrary reply bodies.
 *
 * Input layout (test/fuzz/make-seeds.py writes the seeds this way from the recorded answers
 * of test/fixtures/bulk/):
 *   byte 0          HTTP status, as an index into statuses[] below (modulo its size)
 *   byte 1          number of actions in the batch, modulo 65
 *   next N bytes    the op of each action: odd -> index ('i'), even -> delete ('d')
 *   the rest        the reply body, not NUL-terminated (as libcurl hands it over)
 * Properties checked beyond "no crash, no leak, no undefined behaviour": the verdict is one
 * of the three; on ITEMS every item has a known verdict and kind and a NUL-terminated reason
 * on one printable line; on RETRY and SPLIT the reason is NUL-terminated within its buffer;
 * ITEMS only for a 2xx status (invariant 2: nothing acknowledged from a failed request).
 */
#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

#include "bulk_result.h"
#include "fuzz_common.h"

static const long statuses[] = {200, 201, 400, 404, 408, 409, 413, 429,
                                500, 503, 0,   302, 599, 100, -1,  999};

#define MAX_ACTIONS 64
#define REASON_SIZE 160

static void check_line(const char *reason, size_t size)
{
    const void *nul = memchr(reason, '\0', size);
    if (!nul) {
        fuzz_fail("a reason is not NUL-terminated within its buffer");
    }
    for (const unsigned char *p = (const unsigned char *)reason; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            fprintf(stderr, "reason: ");
            for (const unsigned char *q = (const unsigned char *)reason; *q; q++) {
                fprintf(stderr, *q < 0x20 || *q >= 0x7f ? "\\x%02x" : "%c", *q);
            }
            fprintf(stderr, "\n");
            fuzz_fail("a reason holds a control character");
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet_logs();
    if (size < 2) {
        return 0;
    }
    long status = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
    size_t count = data[1] % (MAX_ACTIONS + 1);
    if (size < 2 + count) {
        return 0;
    }
    fts_action_op_t ops[MAX_ACTIONS];
    for (size_t i = 0; i < count; i++) {
        ops[i] = (data[2 + i] & 1) ? FTS_ACTION_INDEX : FTS_ACTION_DELETE;
    }
    /* Exactly the body's bytes on the heap, so that a read past its end is caught. */
    size_t body_len = size - 2 - count;
    char *body = bson_malloc(body_len > 0 ? body_len : 1);
    memcpy(body, data + 2 + count, body_len);

    fts_bulk_item_result_t *items = bson_malloc0((count > 0 ? count : 1) * sizeof *items);
    char reason[REASON_SIZE];
    memset(reason, 'x', sizeof reason);
    fts_bulk_response_verdict_t verdict =
        fts_bulk_response_judge(status, body, body_len, ops, count, items, reason, sizeof reason);
    switch (verdict) {
    case FTS_BULK_RESPONSE_ITEMS:
        if (status < 200 || status > 299) {
            fuzz_fail("items judged from an answer that is not 2xx");
        }
        for (size_t i = 0; i < count; i++) {
            if (items[i].verdict != FTS_BULK_ITEM_ACK && items[i].verdict != FTS_BULK_ITEM_RETRY &&
                items[i].verdict != FTS_BULK_ITEM_REJECT) {
                fuzz_fail("an item has no verdict");
            }
            if ((unsigned)items[i].kind >= FTS_BULK_KIND_COUNT) {
                fuzz_fail("an item has no kind");
            }
            check_line(items[i].reason, sizeof items[i].reason);
            if (strcmp(fts_bulk_kind_name(items[i].kind), "?") == 0) {
                fuzz_fail("an item's kind has no name");
            }
        }
        break;
    case FTS_BULK_RESPONSE_RETRY:
    case FTS_BULK_RESPONSE_SPLIT:
        check_line(reason, sizeof reason);
        break;
    default:
        fuzz_fail("unknown response verdict");
    }
    bson_free(items);
    bson_free(body);
    return 0;
}
