/*
 * redis_admin.c - the operator's reads of the stream and the lease, and the dead-letter moves
 * of redis_admin.h. Replies are walked defensively: a reply of an unexpected shape is an
 * FTS_ERROR_REDIS/PROTOCOL error naming the command, never a crash (invariant 6).
 */
#include "redis_admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Queues the action only while the dead letter is still there, then removes the dead letter:
 * KEYS[1] dead stream, KEYS[2] action stream; ARGV[1] dead letter ID, ARGV[2..] field/value
 * pairs. Returns the new entry's ID, or false (nil) when the dead letter was gone. */
static const char requeue_script[] =
    "if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end\n"
    "local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return id\n";

static bool protocol_error(fts_error_t *err, const char *what)
{
    return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                         "Redis answered %s with a reply of an unexpected shape", what);
}

/* The value after field name in a flat field/value array reply, or NULL. */
static const redisReply *field_of(const redisReply *array, const char *name)
{
    if (!array || array->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }
    for (size_t i = 0; i + 1 < array->elements; i += 2) {
        const redisReply *key = array->element[i];
        if ((key->type == REDIS_REPLY_STRING || key->type == REDIS_REPLY_STATUS) &&
            strcmp(key->str, name) == 0) {
            return array->element[i + 1];
        }
    }
    return NULL;
}

static void copy_text(const redisReply *reply, char *out, size_t size)
{
    out[0] = '\0';
    if (reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)) {
        snprintf(out, size, "%.*s", (int)reply->len, reply->str);
    }
}

static bool integer_of(const redisReply *reply, long long *value)
{
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        *value = reply->integer;
        return true;
    }
    return false;
}

uint64_t fts_redis_stream_id_ms(const char *id)
{
    const char *dash = id ? strchr(id, '-') : NULL;
    uint64_t ms = 0;
    if (!dash || !fts_decimal_parse(id, (size_t)(dash - id), UINT64_MAX, &ms)) {
        return 0;
    }
    return ms;
}

static void group_cleanup(fts_redis_group_info_t *group)
{
    for (size_t i = 0; i < group->consumer_count; i++) {
        bson_free(group->consumers[i].name);
    }
    bson_free(group->consumers);
    bson_free(group->name);
}

void fts_redis_stream_info_cleanup(fts_redis_stream_info_t *info)
{
    if (!info) {
        return;
    }
    for (size_t i = 0; i < info->group_count; i++) {
        group_cleanup(&info->groups[i]);
    }
    bson_free(info->groups);
    memset(info, 0, sizeof *info);
}

static bool read_group(fts_redis_t *redis, const char *stream_key, const redisReply *row,
                       fts_redis_group_info_t *group, fts_error_t *err)
{
    const redisReply *name = field_of(row, "name");
    long long pending = 0;
    if (!name || name->type != REDIS_REPLY_STRING ||
        !integer_of(field_of(row, "pending"), &pending)) {
        return protocol_error(err, "XINFO GROUPS");
    }
    group->name = bson_strndup(name->str, name->len);
    group->pending = (uint64_t)pending;
    copy_text(field_of(row, "last-delivered-id"), group->last_delivered_id,
              sizeof group->last_delivered_id);
    long long lag = 0;
    group->lag_known = integer_of(field_of(row, "lag"), &lag);
    group->lag = group->lag_known ? (uint64_t)lag : 0;

    redisReply *summary = fts_redis_command(redis, err, "XPENDING %s %s", stream_key, group->name);
    if (!summary) {
        return false;
    }
    if (summary->type != REDIS_REPLY_ARRAY || summary->elements < 2) {
        freeReplyObject(summary);
        return protocol_error(err, "XPENDING");
    }
    copy_text(summary->element[1], group->oldest_pending_id, sizeof group->oldest_pending_id);
    freeReplyObject(summary);

    redisReply *consumers =
        fts_redis_command(redis, err, "XINFO CONSUMERS %s %s", stream_key, group->name);
    if (!consumers) {
        return false;
    }
    bool ok = consumers->type == REDIS_REPLY_ARRAY;
    if (ok && consumers->elements > 0) {
        group->consumers = bson_malloc0(consumers->elements * sizeof *group->consumers);
    }
    for (size_t i = 0; ok && i < consumers->elements; i++) {
        const redisReply *c = consumers->element[i];
        const redisReply *cname = field_of(c, "name");
        long long cpending = 0;
        long long idle = 0;
        if (!cname || cname->type != REDIS_REPLY_STRING ||
            !integer_of(field_of(c, "pending"), &cpending) ||
            !integer_of(field_of(c, "idle"), &idle)) {
            ok = false;
            break;
        }
        fts_redis_consumer_info_t *out = &group->consumers[group->consumer_count++];
        out->name = bson_strndup(cname->str, cname->len);
        out->pending = (uint64_t)cpending;
        out->idle_ms = idle;
    }
    freeReplyObject(consumers);
    return ok ? true : protocol_error(err, "XINFO CONSUMERS");
}

bool fts_redis_stream_info_read(fts_redis_t *redis, const char *stream_key,
                                fts_redis_stream_info_t *info, fts_error_t *err)
{
    memset(info, 0, sizeof *info);
    redisReply *type = fts_redis_command(redis, err, "TYPE %s", stream_key);
    if (!type) {
        return false;
    }
    bool exists = type->type == REDIS_REPLY_STATUS && strcmp(type->str, "none") != 0;
    bool is_stream = type->type == REDIS_REPLY_STATUS && strcmp(type->str, "stream") == 0;
    freeReplyObject(type);
    if (!exists) {
        return true;
    }
    if (!is_stream) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_SERVER,
                             "%s holds something other than a stream", stream_key);
    }
    info->exists = true;
    redisReply *stream = fts_redis_command(redis, err, "XINFO STREAM %s", stream_key);
    if (!stream) {
        return false;
    }
    long long length = 0;
    if (!integer_of(field_of(stream, "length"), &length)) {
        freeReplyObject(stream);
        return protocol_error(err, "XINFO STREAM");
    }
    info->length = (uint64_t)length;
    copy_text(field_of(stream, "last-generated-id"), info->last_id, sizeof info->last_id);
    const redisReply *first = field_of(stream, "first-entry");
    if (first && first->type == REDIS_REPLY_ARRAY && first->elements >= 1) {
        copy_text(first->element[0], info->first_id, sizeof info->first_id);
    }
    freeReplyObject(stream);

    redisReply *groups = fts_redis_command(redis, err, "XINFO GROUPS %s", stream_key);
    if (!groups) {
        return false;
    }
    bool ok = groups->type == REDIS_REPLY_ARRAY;
    if (!ok) {
        protocol_error(err, "XINFO GROUPS");
    }
    if (ok && groups->elements > 0) {
        info->groups = bson_malloc0(groups->elements * sizeof *info->groups);
    }
    for (size_t i = 0; ok && i < groups->elements; i++) {
        ok = read_group(redis, stream_key, groups->element[i], &info->groups[i], err);
        info->group_count = i + 1;
    }
    freeReplyObject(groups);
    if (!ok) {
        fts_redis_stream_info_cleanup(info);
    }
    return ok;
}

bool fts_redis_lease_read(fts_redis_t *redis, const char *lease_key, char **holder, int64_t *ttl_ms,
                          fts_error_t *err)
{
    *holder = NULL;
    *ttl_ms = -2;
    redisReply *get = fts_redis_command(redis, err, "GET %s", lease_key);
    if (!get) {
        return false;
    }
    if (get->type == REDIS_REPLY_STRING) {
        *holder = bson_strndup(get->str, get->len);
    }
    freeReplyObject(get);
    redisReply *pttl = fts_redis_command(redis, err, "PTTL %s", lease_key);
    if (!pttl) {
        bson_free(*holder);
        *holder = NULL;
        return false;
    }
    long long ttl = -2;
    integer_of(pttl, &ttl);
    *ttl_ms = ttl;
    freeReplyObject(pttl);
    return true;
}

bool fts_redis_server_version(fts_redis_t *redis, char *out, size_t size, fts_error_t *err)
{
    out[0] = '\0';
    redisReply *info = fts_redis_command(redis, err, "INFO server");
    if (!info) {
        return false;
    }
    bool ok = false;
    if (info->type == REDIS_REPLY_STRING) {
        const char *at = strstr(info->str, "redis_version:");
        if (at) {
            at += strlen("redis_version:");
            size_t len = strcspn(at, "\r\n");
            snprintf(out, size, "%.*s", (int)len, at);
            ok = true;
        }
    }
    freeReplyObject(info);
    return ok ? true : protocol_error(err, "INFO server");
}

bool fts_redis_stream_length(fts_redis_t *redis, const char *key, uint64_t *length,
                             fts_error_t *err)
{
    redisReply *reply = fts_redis_command(redis, err, "XLEN %s", key);
    if (!reply) {
        return false;
    }
    long long value = 0;
    bool ok = integer_of(reply, &value);
    freeReplyObject(reply);
    *length = (uint64_t)value;
    return ok ? true : protocol_error(err, "XLEN");
}

void fts_redis_entries_cleanup(fts_redis_entries_t *entries)
{
    if (!entries) {
        return;
    }
    for (size_t i = 0; i < entries->count; i++) {
        for (size_t j = 0; j < entries->items[i].count; j++) {
            bson_free(entries->items[i].items[j]);
        }
        bson_free(entries->items[i].items);
        bson_free(entries->items[i].lens);
    }
    bson_free(entries->items);
    memset(entries, 0, sizeof *entries);
}

bool fts_redis_stream_range(fts_redis_t *redis, const char *key, const char *start, const char *end,
                            size_t count, bool reverse, fts_redis_entries_t *entries,
                            fts_error_t *err)
{
    char count_text[24];
    snprintf(count_text, sizeof count_text, "%zu", count);
    const char *argv[] = {reverse ? "XREVRANGE" : "XRANGE",
                          key,
                          reverse ? end : start,
                          reverse ? start : end,
                          "COUNT",
                          count_text};
    redisReply *reply = fts_redis_command_argv(redis, 6, argv, NULL, err);
    if (!reply) {
        return false;
    }
    bool ok = reply->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; ok && i < reply->elements; i++) {
        const redisReply *row = reply->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements != 2 ||
            row->element[0]->type != REDIS_REPLY_STRING ||
            row->element[1]->type != REDIS_REPLY_ARRAY) {
            ok = false;
            break;
        }
        entries->items =
            bson_realloc(entries->items, (entries->count + 1) * sizeof *entries->items);
        fts_redis_entry_t *entry = &entries->items[entries->count++];
        memset(entry, 0, sizeof *entry);
        copy_text(row->element[0], entry->id, sizeof entry->id);
        const redisReply *fields = row->element[1];
        entry->items = bson_malloc0((fields->elements + 1) * sizeof *entry->items);
        entry->lens = bson_malloc0((fields->elements + 1) * sizeof *entry->lens);
        for (size_t j = 0; j < fields->elements; j++) {
            const redisReply *item = fields->element[j];
            if (item->type != REDIS_REPLY_STRING) {
                ok = false;
                break;
            }
            entry->items[j] = bson_strndup(item->str, item->len);
            entry->lens[j] = item->len;
            entry->count = j + 1;
        }
    }
    freeReplyObject(reply);
    return ok ? true : protocol_error(err, reverse ? "XREVRANGE" : "XRANGE");
}

const char *fts_redis_entry_field(const fts_redis_entry_t *entry, const char *field)
{
    for (size_t i = 0; i + 1 < entry->count; i += 2) {
        if (strcmp(entry->items[i], field) == 0) {
            return entry->items[i + 1];
        }
    }
    return NULL;
}

bool fts_redis_dead_requeue(fts_redis_t *redis, const char *dead_key, const char *dead_id,
                            const fts_action_argv_t *action, const char *stream_key,
                            fts_redis_requeue_t *outcome, char *new_id, fts_error_t *err)
{
    if (!fts_redis_action_argv_check(action, stream_key, err)) {
        return false;
    }
    /* EVAL script 2 dead stream id field value... : the action's items after "XADD key *". */
    int argc = 6 + action->argc - 3;
    const char **argv = bson_malloc0((size_t)argc * sizeof *argv);
    size_t *lens = bson_malloc0((size_t)argc * sizeof *lens);
    argv[0] = "EVAL";
    argv[1] = requeue_script;
    argv[2] = "2";
    argv[3] = dead_key;
    argv[4] = stream_key;
    argv[5] = dead_id;
    for (int i = 0; i < 6; i++) {
        lens[i] = strlen(argv[i]);
    }
    for (int i = 3; i < action->argc; i++) {
        argv[6 + i - 3] = action->argv[i];
        lens[6 + i - 3] = action->argvlen[i];
    }
    redisReply *reply = fts_redis_command_argv(redis, argc, argv, lens, err);
    bson_free(argv);
    bson_free(lens);
    if (!reply) {
        return false;
    }
    bool ok = true;
    if (reply->type == REDIS_REPLY_NIL) {
        *outcome = FTS_REDIS_REQUEUE_GONE;
    } else if (reply->type == REDIS_REPLY_STRING) {
        *outcome = FTS_REDIS_REQUEUED;
        if (new_id) {
            copy_text(reply, new_id, FTS_REDIS_STREAM_ID_SIZE);
        }
    } else {
        ok = protocol_error(err, "the dead-letter replay script");
    }
    freeReplyObject(reply);
    return ok;
}

bool fts_redis_stream_delete(fts_redis_t *redis, const char *key, const char *id, bool *removed,
                             fts_error_t *err)
{
    redisReply *reply = fts_redis_command(redis, err, "XDEL %s %s", key, id);
    if (!reply) {
        return false;
    }
    long long n = 0;
    bool ok = integer_of(reply, &n);
    freeReplyObject(reply);
    *removed = n > 0;
    return ok ? true : protocol_error(err, "XDEL");
}

bool fts_redis_stream_drop(fts_redis_t *redis, const char *key, uint64_t *removed, fts_error_t *err)
{
    if (!fts_redis_stream_length(redis, key, removed, err)) {
        return false;
    }
    redisReply *reply = fts_redis_command(redis, err, "DEL %s", key);
    if (!reply) {
        return false;
    }
    freeReplyObject(reply);
    return true;
}
