/*
 * redis_group_reply.c - the consumer group's reply parsers and settlement builder (see
 * redis_group_reply.h). Pure: no I/O, no clock (the caller gives failed_at).
 *
 * Entries are copied out of the reply, because hiredis frees a reply when its callback
 * returns and the caller's callback runs later: each entry's items and their bytes are one
 * allocation, so an entry is freed with one bson_free.
 */
#include "redis_group_reply.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

/* ---- commands ---- */

void fts_redis_argv_push(fts_redis_argv_t *command, const char *data, size_t len)
{
    if (command->argc == command->cap) {
        command->cap = command->cap ? command->cap * 2 : 16;
        command->argv = bson_realloc(command->argv, (size_t)command->cap * sizeof *command->argv);
        command->argvlen =
            bson_realloc(command->argvlen, (size_t)command->cap * sizeof *command->argvlen);
    }
    char *copy = bson_malloc(len + 1);
    if (len) {
        memcpy(copy, data, len);
    }
    copy[len] = '\0';
    command->argv[command->argc] = copy;
    command->argvlen[command->argc] = len;
    command->argc++;
}

void fts_redis_argv_push_str(fts_redis_argv_t *command, const char *text)
{
    fts_redis_argv_push(command, text, strlen(text));
}

void fts_redis_argv_push_u64(fts_redis_argv_t *command, uint64_t value)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, value);
    fts_redis_argv_push_str(command, text);
}

void fts_redis_argv_push_all(fts_redis_argv_t *command, const char *const *words)
{
    for (; *words; words++) {
        fts_redis_argv_push_str(command, *words);
    }
}

void fts_redis_argv_cleanup(fts_redis_argv_t *command)
{
    for (int i = 0; i < command->argc; i++) {
        bson_free(command->argv[i]);
    }
    bson_free(command->argv);
    bson_free(command->argvlen);
    memset(command, 0, sizeof *command);
}

/* ---- entries ---- */

void fts_redis_group_entries_cleanup(fts_redis_group_entries_t *entries)
{
    if (!entries) {
        return;
    }
    for (size_t i = 0; i < entries->count; i++) {
        bson_free((void *)entries->entries[i].items);
    }
    bson_free(entries->entries);
    memset(entries, 0, sizeof *entries);
}

static bool malformed(fts_error_t *err, const char *what)
{
    return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL, "%s", what);
}

/* Copies one [id, [field, value, ...]] (or [id, nil]) into out, which has room for it. */
static bool parse_entry(const redisReply *entry, uint64_t deliveries,
                        fts_redis_group_entries_t *out, fts_error_t *err)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING) {
        return malformed(err, "an entry is not [id, fields]");
    }
    const redisReply *id = entry->element[0];
    const redisReply *fields = entry->element[1];
    if (id->len == 0 || id->len >= FTS_STREAM_ID_SIZE) {
        return malformed(err, "an entry ID is empty or too long");
    }
    if (fields->type != REDIS_REPLY_NIL &&
        (fields->type != REDIS_REPLY_ARRAY || fields->elements % 2 != 0)) {
        return malformed(err, "an entry's fields are not field/value pairs");
    }
    fts_stream_entry_t *copy = &out->entries[out->count];
    memset(copy, 0, sizeof *copy);
    memcpy(copy->id, id->str, id->len);
    copy->id[id->len] = '\0';
    copy->deliveries = deliveries;
    if (fields->type == REDIS_REPLY_NIL) {
        out->count++; /* deleted from the stream while pending: items NULL */
        return true;
    }
    /* One block: the item array, then every item's bytes, each NUL-terminated for safety. */
    size_t bytes = fields->elements * sizeof(fts_bytes_t) + 1;
    for (size_t i = 0; i < fields->elements; i++) {
        const redisReply *item = fields->element[i];
        if (item->type != REDIS_REPLY_STRING) {
            return malformed(err, "an entry's field or value is not a string");
        }
        bytes += item->len + 1;
    }
    char *block = bson_malloc(bytes);
    fts_bytes_t *items = (fts_bytes_t *)(void *)block;
    char *data = block + fields->elements * sizeof(fts_bytes_t);
    for (size_t i = 0; i < fields->elements; i++) {
        const redisReply *item = fields->element[i];
        memcpy(data, item->str, item->len);
        data[item->len] = '\0';
        items[i].data = data;
        items[i].len = item->len;
        data += item->len + 1;
    }
    copy->items = items;
    copy->count = fields->elements;
    out->count++;
    return true;
}

static bool parse_entries(const redisReply *list, uint64_t deliveries,
                          fts_redis_group_entries_t *out, fts_error_t *err)
{
    if (list->type != REDIS_REPLY_ARRAY) {
        return malformed(err, "the entries are not an array");
    }
    if (list->elements == 0) {
        return true;
    }
    out->entries = bson_malloc0(list->elements * sizeof *out->entries);
    for (size_t i = 0; i < list->elements; i++) {
        /* Redis 6.2's XAUTOCLAIM put a nil where an entry had been deleted; 7 lists those
         * separately. Count them either way. */
        if (list->element[i]->type == REDIS_REPLY_NIL) {
            out->deleted++;
            continue;
        }
        if (!parse_entry(list->element[i], deliveries, out, err)) {
            return false;
        }
    }
    return true;
}

bool fts_redis_group_parse_read(const redisReply *reply, bool history,
                                fts_redis_group_entries_t *out, fts_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (reply->type == REDIS_REPLY_NIL) {
        return true;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1 ||
        reply->element[0]->type != REDIS_REPLY_ARRAY || reply->element[0]->elements != 2) {
        return malformed(err, "not [[stream, entries]]");
    }
    if (!parse_entries(reply->element[0]->element[1], history ? 0 : 1, out, err)) {
        fts_redis_group_entries_cleanup(out);
        return false;
    }
    return true;
}

bool fts_redis_group_parse_claim(const redisReply *reply, fts_redis_group_entries_t *out,
                                 fts_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 2 && reply->elements != 3) ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[0]->len >= FTS_STREAM_ID_SIZE) {
        return malformed(err, "not [cursor, entries, deleted]");
    }
    memcpy(out->next_cursor, reply->element[0]->str, reply->element[0]->len);
    out->next_cursor[reply->element[0]->len] = '\0';
    if (!parse_entries(reply->element[1], 0, out, err)) {
        fts_redis_group_entries_cleanup(out);
        return false;
    }
    if (reply->elements == 3) {
        if (reply->element[2]->type != REDIS_REPLY_ARRAY) {
            fts_redis_group_entries_cleanup(out);
            return malformed(err, "the deleted IDs are not an array");
        }
        out->deleted += reply->element[2]->elements;
    }
    return true;
}

bool fts_redis_group_parse_pending(const redisReply *reply, fts_stream_entry_t *entries,
                                   size_t count, fts_error_t *err)
{
    if (reply->type != REDIS_REPLY_ARRAY) {
        return malformed(err, "not an array of [id, consumer, idle, deliveries]");
    }
    /* Rows come in ID order, as the entries usually do: start each search after the last
     * match, so that the usual case is linear. */
    size_t hint = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *row = reply->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements != 4 ||
            row->element[0]->type != REDIS_REPLY_STRING ||
            row->element[3]->type != REDIS_REPLY_INTEGER || row->element[3]->integer < 0) {
            return malformed(err, "a row is not [id, consumer, idle, deliveries]");
        }
        const redisReply *id = row->element[0];
        for (size_t n = 0; n < count; n++) {
            fts_stream_entry_t *entry = &entries[(hint + n) % count];
            if (strlen(entry->id) == id->len && memcmp(entry->id, id->str, id->len) == 0) {
                entry->deliveries = (uint64_t)row->element[3]->integer;
                hint = (hint + n + 1) % count;
                break;
            }
        }
    }
    return true;
}

bool fts_redis_group_parse_barrier(const redisReply *reply, const char *id, bool *clear,
                                   fts_error_t *err)
{
    *clear = false;
    if (reply->type != REDIS_REPLY_ARRAY) {
        return malformed(err, "not an array of [id, consumer, idle, deliveries]");
    }
    if (reply->elements == 0) {
        *clear = true; /* nothing up to id is pending: not even id (someone acknowledged it) */
        return true;
    }
    const redisReply *row = reply->element[0];
    if (row->type != REDIS_REPLY_ARRAY || row->elements != 4 ||
        row->element[0]->type != REDIS_REPLY_STRING) {
        return malformed(err, "a row is not [id, consumer, idle, deliveries]");
    }
    /* The range ends at id, so the smallest pending ID is id itself or one before it. */
    const redisReply *first = row->element[0];
    *clear = strlen(id) == first->len && memcmp(id, first->str, first->len) == 0;
    return true;
}

/* ---- settlement ---- */

/* Writes the dead letters, then acknowledges, in one script: redis.call raises on the first
 * failure (a dead-letter key of the wrong type), so the XACK is only reached once every dead
 * letter is in. A MULTI/EXEC would not do: Redis runs the rest of a transaction after a command
 * in it failed, and would acknowledge entries whose dead letters were never written.
 * ARGV: group, number of dead letters, then per dead letter its item count and items, then the
 * IDs to acknowledge. */
static const char settle_script[] =
    "local i = 3\n"
    "for d = 1, tonumber(ARGV[2]) do\n"
    "  local n = tonumber(ARGV[i])\n"
    "  redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + n))\n"
    "  i = i + n + 1\n"
    "end\n"
    "if i <= #ARGV then\n"
    "  return redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, i, #ARGV))\n"
    "end\n"
    "return 0\n";

/* The fields ftsync adds after an entry's own in its dead letter, in this order. They come
 * last, so that a reader taking the last occurrence of a name reads ours. */
static const char *const dead_letter_fields[] = {"entry_id", "deliveries", "reason",
                                                 "stage",    "consumer",   "failed_at"};
#define DEAD_LETTER_FIELD_COUNT (sizeof dead_letter_fields / sizeof dead_letter_fields[0])

/* Pushes one dead letter: its item count, the entry's own items, then ours. */
static void push_dead_letter(fts_redis_argv_t *command, const char *consumer,
                             const fts_load_dead_t *dead, uint64_t failed_at_ms)
{
    const fts_stream_entry_t *entry = dead->entry;
    assert(entry);
    char deliveries[24];
    char failed_at[24];
    snprintf(deliveries, sizeof deliveries, "%" PRIu64, dead->deliveries);
    snprintf(failed_at, sizeof failed_at, "%" PRIu64, failed_at_ms);
    const char *values[] = {entry->id, deliveries, dead->reason ? dead->reason : "unknown",
                            "load",    consumer,   failed_at};
    _Static_assert(sizeof values / sizeof values[0] == DEAD_LETTER_FIELD_COUNT,
                   "one value per dead-letter field");

    size_t original = entry->items ? entry->count : 0;
    fts_redis_argv_push_u64(command, (uint64_t)(original + 2 * DEAD_LETTER_FIELD_COUNT));
    for (size_t i = 0; i < original; i++) {
        fts_redis_argv_push(command, entry->items[i].data, entry->items[i].len);
    }
    for (size_t i = 0; i < DEAD_LETTER_FIELD_COUNT; i++) {
        fts_redis_argv_push_str(command, dead_letter_fields[i]);
        fts_redis_argv_push_str(command, values[i]);
    }
}

bool fts_redis_group_build_settle(fts_redis_argv_t *command, const fts_redis_group_names_t *names,
                                  const fts_settlement_t *settlement, uint64_t failed_at_ms)
{
    assert(settlement->dead_count > 0 || settlement->ack_count > 0);
    bool scripted = settlement->dead_count > 0;
    if (!scripted) {
        const char *head[] = {"XACK", names->stream_key, names->group, NULL};
        fts_redis_argv_push_all(command, head);
    } else {
        const char *head[] = {"EVAL",       settle_script, "2", names->dead_key, names->stream_key,
                              names->group, NULL};
        fts_redis_argv_push_all(command, head);
        fts_redis_argv_push_u64(command, (uint64_t)settlement->dead_count);
        for (size_t i = 0; i < settlement->dead_count; i++) {
            push_dead_letter(command, names->consumer, &settlement->dead[i], failed_at_ms);
        }
    }
    for (size_t i = 0; i < settlement->ack_count; i++) {
        assert(settlement->ack_ids[i]);
        fts_redis_argv_push_str(command, settlement->ack_ids[i]);
    }
    return scripted;
}
