/*
 * fuzz_stream_entry.c - libFuzzer target: the stream entry decoder (core/action.c) and the
 * loaders' reading of Redis replies into entries (adapters/redis/redis_group_reply.c).
 *
 * Byte 0 picks the mode:
 *   even  the rest is one entry's field/value items separated by NUL bytes, decoded with
 *         fts_action_decode as a loader does (an odd count leaves the last item out);
 *   odd   the rest is RESP, read with hiredis's reader: reply 1 is taken as an XREADGROUP reply
 *         (history read when bit 1 of byte 0 is set) or, when bit 2 is set, as an XAUTOCLAIM
 *         reply; reply 2, if any, as the XPENDING reply matched against its entries. Every
 *         entry with items is then decoded.
 * Properties beyond "no crash, no leak, no undefined behaviour": a decoded action passes
 * fts_action_validate (what decode accepts, the extractor could have written), encodes again,
 * and decodes from its own encoding to the same action; a refused decode leaves it empty.
 */
#include <string.h>

#include <bson/bson.h>
#include <hiredis/hiredis.h>

#include "action.h"
#include "fuzz_common.h"
#include "redis_group_reply.h"

#define MAX_ITEMS 64

static bool same_bytes(const char *a, size_t a_len, const char *b, size_t b_len)
{
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

static void check_decode(const fts_bytes_t *items, size_t count)
{
    fts_action_t action;
    fts_action_init(&action);
    fts_error_t err;
    if (!fts_action_decode(items, count, &action, &err)) {
        if (action.ns || action.id || action.body) {
            fuzz_fail("a refused entry left an action behind");
        }
        return;
    }
    if (!fts_action_validate(&action, &err)) {
        fuzz_fail("decode accepted an action that validate refuses");
    }
    fts_action_argv_t argv;
    if (!fts_action_encode(&action, "s", &argv, &err)) {
        fuzz_fail("a decoded action does not encode");
    }
    /* XADD key * field value...: decode the field/value part again. */
    fts_bytes_t again[FTS_ACTION_ARGV_MAX];
    size_t again_count = 0;
    for (int i = 3; i < argv.argc; i++) {
        again[again_count].data = argv.argv[i];
        again[again_count].len = argv.argvlen[i];
        again_count++;
    }
    fts_action_t copy;
    fts_action_init(&copy);
    if (!fts_action_decode(again, again_count, &copy, &err)) {
        fuzz_fail("an action's own encoding does not decode");
    }
    if (copy.op != action.op || copy.origin != action.origin || copy.version != action.version ||
        copy.ts_seconds != action.ts_seconds || copy.ts_increment != action.ts_increment ||
        strcmp(copy.ns, action.ns) != 0 || (copy.id == NULL) != (action.id == NULL) ||
        (copy.id && !same_bytes(copy.id, copy.id_len, action.id, action.id_len)) ||
        (copy.body == NULL) != (action.body == NULL) ||
        (copy.body && !same_bytes(copy.body, copy.body_len, action.body, action.body_len))) {
        fuzz_fail("decode(encode(decode(entry))) differs");
    }
    fts_action_cleanup(&copy);
    fts_action_cleanup(&action);
}

static void decode_items(const uint8_t *data, size_t size)
{
    fts_bytes_t items[MAX_ITEMS];
    size_t count = 0;
    size_t start = 0;
    for (size_t i = 0; i <= size && count < MAX_ITEMS; i++) {
        if (i == size || data[i] == '\0') {
            items[count].data = (const char *)data + start;
            items[count].len = i - start;
            count++;
            start = i + 1;
        }
    }
    check_decode(items, count - count % 2);
}

static void decode_replies(uint8_t mode, const uint8_t *data, size_t size)
{
    void *replies[2] = {NULL, NULL};
    size_t got = fuzz_resp_replies(data, size, replies, 2);
    if (got == 0) {
        return;
    }
    fts_redis_group_entries_t entries;
    memset(&entries, 0, sizeof entries);
    fts_error_t err;
    bool ok = (mode & 4) ? fts_redis_group_parse_claim(replies[0], &entries, &err)
                         : fts_redis_group_parse_read(replies[0], (mode & 2) != 0, &entries, &err);
    if (!ok && (entries.count != 0 || entries.entries != NULL)) {
        fuzz_fail("a malformed reply left entries behind");
    }
    if (ok && got == 2) {
        (void)fts_redis_group_parse_pending(replies[1], entries.entries, entries.count, &err);
    }
    for (size_t i = 0; ok && i < entries.count; i++) {
        const fts_stream_entry_t *entry = &entries.entries[i];
        if (!memchr(entry->id, '\0', sizeof entry->id)) {
            fuzz_fail("an entry id is not NUL-terminated");
        }
        if (entry->items) {
            check_decode(entry->items, entry->count);
        }
    }
    fts_redis_group_entries_cleanup(&entries);
    for (size_t i = 0; i < got; i++) {
        freeReplyObject(replies[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet_logs();
    if (size < 1) {
        return 0;
    }
    if (data[0] & 1) {
        decode_replies(data[0], data + 1, size - 1);
    } else {
        decode_items(data + 1, size - 1);
    }
    return 0;
}
