/*
 * fuzz_resume_token.c - libFuzzer target: reading a saved position back. The resume token
 * saved as extended JSON (fts_mongo_token_from_json, adapters/mongo/mongo_source.c), the
 * checkpoint hashes read from Redis (fts_redis_position_parse and its cluster-time and token
 * kind parsers, adapters/redis/redis_queue.c, core/extract_ports.c), the loaders' backlog reply
 * (fts_redis_backlog_parse), and the strict decimals every saved number goes through
 * (fts_decimal_parse, core/action.c).
 *
 * Byte 0 picks the mode (modulo 4); the rest is the input:
 *   0  a token JSON text: parsed; a token that parses is saved again as canonical extended JSON
 *      (what the source hands the checkpoint) and that text must parse again;
 *   1  "<seconds>.<increment>": a parsed time formats back to text that parses to the same;
 *      also tried as a token kind;
 *   2  RESP: reply 1 is HGETALL token, reply 2 HGETALL snapshot (an empty array when absent);
 *      a position that parses must be one fts_redis_checkpoint_validate accepts, i.e. one the
 *      extractor could have saved; the same replies are tried as XLEN and XINFO GROUPS;
 *   3  a decimal: bound by byte 1, the value never exceeds it.
 */
#include <string.h>

#include <bson/bson.h>
#include <hiredis/hiredis.h>

#include "action.h"
#include "extract_ports.h"
#include "fuzz_common.h"
#include "mongo_source.h"
#include "redis_queue.h"

static void fuzz_token_json(const char *text)
{
    fts_error_t err;
    bson_t *token = fts_mongo_token_from_json(text, &err);
    if (!token) {
        return;
    }
    char *saved = bson_as_canonical_extended_json(token, NULL);
    if (saved) {
        bson_t *again = fts_mongo_token_from_json(saved, &err);
        if (!again) {
            fuzz_fail("a token saved as canonical extended JSON does not parse again");
        }
        bson_destroy(again);
        bson_free(saved);
    }
    bson_destroy(token);
}

static void fuzz_cluster_time(const char *text)
{
    uint32_t seconds = 0;
    uint32_t increment = 0;
    if (fts_redis_cluster_time_parse(text, &seconds, &increment)) {
        char formatted[32];
        fts_redis_cluster_time_format(seconds, increment, formatted, sizeof formatted);
        uint32_t s2 = 0;
        uint32_t i2 = 0;
        if (!fts_redis_cluster_time_parse(formatted, &s2, &i2) || s2 != seconds ||
            i2 != increment) {
            fuzz_fail("a cluster time does not survive format and parse");
        }
    }
    fts_token_kind_t kind;
    if (fts_token_kind_parse(text, &kind) && strcmp(fts_token_kind_name(kind), text) != 0) {
        fuzz_fail("a token kind does not spell itself");
    }
}

static void fuzz_position(const uint8_t *data, size_t size)
{
    void *replies[2] = {NULL, NULL};
    size_t got = fuzz_resp_replies(data, size, replies, 2);
    if (got == 0) {
        return;
    }
    redisReply empty = {.type = REDIS_REPLY_ARRAY, .elements = 0, .element = NULL};
    const redisReply *token_hash = replies[0];
    const redisReply *snapshot_hash = got > 1 ? replies[1] : &empty;

    static fts_redis_keys_t keys;
    fts_error_t err;
    if (!keys.token[0] && !fts_redis_keys_init(&keys, "fuzz", &err)) {
        fuzz_fail("the keys of pipeline fuzz");
    }
    fts_position_t position;
    if (fts_redis_position_parse(&keys, token_hash, snapshot_hash, &position, &err)) {
        if (position.has_token) {
            fts_checkpoint_t checkpoint = {.kind = FTS_CHECKPOINT_TOKEN,
                                           .token = position.token,
                                           .token_kind = position.token_kind,
                                           .cluster_time = position.cluster_time};
            if (!fts_redis_checkpoint_validate(&checkpoint, &err)) {
                fuzz_fail("a token position was read that could not have been saved");
            }
        }
        if (position.has_snapshot) {
            fts_checkpoint_t checkpoint = {.kind = FTS_CHECKPOINT_SNAPSHOT,
                                           .started = position.started,
                                           .last_id = position.last_id,
                                           .queued = position.queued};
            if (!fts_redis_checkpoint_validate(&checkpoint, &err)) {
                fuzz_fail("a snapshot position was read that could not have been saved");
            }
        }
        fts_position_cleanup(&position);
    } else if (position.token || position.last_id) {
        fuzz_fail("a refused position left strings behind");
    }

    fts_backlog_t backlog;
    (void)fts_redis_backlog_parse(token_hash, got > 1 ? replies[1] : NULL, &backlog, &err);

    for (size_t i = 0; i < got; i++) {
        freeReplyObject(replies[i]);
    }
}

static void fuzz_decimal(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return;
    }
    static const uint64_t bounds[] = {0, 1, 9, 10, UINT32_MAX, INT64_MAX, UINT64_MAX};
    uint64_t max = bounds[data[0] % (sizeof bounds / sizeof bounds[0])];
    uint64_t value = 0;
    if (fts_decimal_parse((const char *)data + 1, size - 1, max, &value) && value > max) {
        fuzz_fail("a decimal above its bound was accepted");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet_logs();
    if (size < 1) {
        return 0;
    }
    uint8_t mode = data[0] % 4;
    data++;
    size--;
    if (mode == 2) {
        fuzz_position(data, size);
        return 0;
    }
    if (mode == 3) {
        fuzz_decimal(data, size);
        return 0;
    }
    char *text = fuzz_strndup(data, size);
    if (mode == 0) {
        fuzz_token_json(text);
    } else {
        fuzz_cluster_time(text);
    }
    bson_free(text);
    return 0;
}
