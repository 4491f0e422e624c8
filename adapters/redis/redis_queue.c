/*
 * redis_queue.c - the action stream, dead letters, saved position, backlog and trimming of one
 * pipeline (see redis_queue.h for the keys and the promises).
 *
 * Appends (entries checked against the owners of their index ids, dead letters, id map changes,
 * checkpoint) go out as one EVAL of
 * APPEND_SCRIPT on the queue server. When stream and state share a server the checkpoint is
 * written by the same script after the last XADD, so the entries, the map and the checkpoint
 * reach the AOF together, and a failing XADD (the stream's ID space exhausted, out of memory)
 * stops the script before the checkpoint. An earlier version used MULTI/EXEC, which runs every
 * queued command even when one fails, so a failed XADD could still write the token. When they
 * are two servers, the checkpoint goes to the state server by the same script with no entries,
 * sent only after the script on the queue server returned (invariant 1). A checkpoint alone is
 * that script too. Every script that saves a checkpoint first checks the epoch marker on its
 * server (fts_redis_queue_check_epoch; README.md, Reliability).
 *
 * The queue is the extract's queue port (extract_ports.h): its functions take the port's types
 * and the port's table (fts_redis_queue_port) only adapts the context pointer.
 */
#include "redis_queue.h"

#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "log.h"

/* The component tag of every log line from this file. */
#define LOG_COMPONENT "queue"

/* Commands a checkpoint needs at most: DEL <self> (a snapshot started afresh), HSET <self>,
 * DEL <other>. */
#define CHECKPOINT_COMMANDS_MAX 3

/* Arguments of a checkpoint's HSET: HSET key and four field/value pairs. */
#define CHECKPOINT_HSET_ARGS_MAX 10

/* Arguments a dead letter adds to the original fields: XADD key * and three pairs. */
#define DEAD_LETTER_EXTRA_ARGS 9

/* Appends a batch in one atomic step; KEYS: 1 the stream, 2 the dead-letter stream, 3 the id
 * map, 4 the position hash the checkpoint writes, 5 the other one (deleted with it), 6 the
 * epoch marker, 7 the owners of the index ids. ARGV:
 *   E: the epoch marker's expected value, or "" not to check it (no checkpoint)
 *   T: the time of a dead letter written here (ms since the epoch)
 *   N, then N entries: <1 stream | 2 dead | 3 stream, owner checked>, [3: the source _id, or ""
 *      for a drop or sweep], <item count>, field, value, ...
 *   S, then S pairs: source id, index id          (HSET of the id map)
 *   D, then D source ids                          (HDEL of the id map)
 *   <0: no checkpoint | 1>, then <1: DEL 4 first | 0>, P, then P field/value pairs (HSET 4)
 * and returns {N, then for each entry dead-lettered for a collision: its number (1..N), its
 * reason}.
 *
 * Why the checkpoint can never pass an entry that is not in (invariant 1): the script runs
 * alone (no other client's command interleaves), it first checks that no key it writes holds
 * the wrong type, and redis.call raises at the first command that fails, ending the script
 * there: the map changes and the checkpoint come after every XADD, so they are written only
 * when every XADD succeeded. A script is not rolled back: the entries before a failing one stay
 * (a re-sent batch duplicates them, which is harmless, invariant 3). Unlike MULTI/EXEC, which
 * runs the commands after a failed one, including the checkpoint.
 *
 * Why two documents never silently share an index id (invariant 7; README.md, Extract: index
 * ids): an entry of kind 3 is an action whose op and id are its items 2 and 4 (the order of
 * core/action.h). The owners hash maps each index id to the _id (canonical extended JSON) of
 * the document holding it. An index or delete whose index id another _id holds is not added to
 * the stream: its items go to the dead-letter stream with source_id, owner_id and a reason
 * naming both _ids (stage extract), and the batch goes on, the position with it (the dead
 * letter is the record). Otherwise an index claims the id and a delete releases it, each after
 * its XADD, so a failing XADD leaves the owner as it was, or claimed by the document whose
 * re-sent action claims it again. A drop releases every id (the collection is gone). Checked
 * in the order of the batch, so two colliding documents in one batch are caught too.
 *
 * Why a position is never written back over lost data (README.md, Reliability): a marker that
 * is not the expected one stops the script before anything is written, with an error starting
 * with DATA_LOST_TAG. */
#define DATA_LOST_TAG "FTSYNC_DATA_LOST"
#define APPEND_SCRIPT                                                                              \
    "local i = 1\n"                                                                                \
    "local function take() local v = ARGV[i]; i = i + 1; return v end\n"                           \
    "local epoch = take()\n"                                                                       \
    "if epoch ~= '' then\n"                                                                        \
    "  local have = redis.call('GET', KEYS[6])\n"                                                  \
    "  if have ~= epoch then\n"                                                                    \
    "    return redis.error_reply('" DATA_LOST_TAG " the epoch marker ' .. KEYS[6] ..\n"           \
    "      (have and (' holds ' .. have .. ', not ' .. epoch) or (' (' .. epoch .. ') is "         \
    "gone'))\n"                                                                                    \
    "      .. ': Redis lost its data; nothing was written')\n"                                     \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local now = take()\n"                                                                         \
    "local kinds = {'stream', 'stream', 'hash', 'hash', 'hash', 'string', 'hash'}\n"               \
    "for k = 1, 7 do\n"                                                                            \
    "  local t = redis.call('TYPE', KEYS[k])['ok']\n"                                              \
    "  if k ~= 6 and t ~= 'none' and t ~= kinds[k] then\n"                                         \
    "    return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds a ' .. t .. ', not a ' ..\n"  \
    "      kinds[k] .. '; nothing was written')\n"                                                 \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local result = {0}\n"                                                                         \
    "local n = tonumber(take())\n"                                                                 \
    "for e = 1, n do\n"                                                                            \
    "  local kind = tonumber(take())\n"                                                            \
    "  local source = nil\n"                                                                       \
    "  if kind == 3 then source = take() end\n"                                                    \
    "  local count = tonumber(take())\n"                                                           \
    "  local items = {}\n"                                                                         \
    "  for j = 1, count do items[j] = take() end\n"                                                \
    "  local op, id = items[2], items[4]\n"                                                        \
    "  local owner = nil\n"                                                                        \
    "  if source and source ~= '' and (op == 'index' or op == 'delete') then\n"                    \
    "    owner = redis.call('HGET', KEYS[7], id)\n"                                                \
    "  end\n"                                                                                      \
    "  if owner and owner ~= source then\n"                                                        \
    "    local reason\n"                                                                           \
    "    if op == 'index' then\n"                                                                  \
    "      reason = 'index id ' .. id .. ' is held by _id ' .. owner .. '; this document\\'s "     \
    "_id ' ..\n"                                                                                   \
    "        source .. ' maps to the same index id, so it is not indexed (the other keeps the "    \
    "index document): ' ..\n"                                                                      \
    "        'use FTSYNC_ID_FORMAT=typed (_ids of different types) or make the id field "          \
    "unique, then re-snapshot'\n"                                                                  \
    "    else\n"                                                                                   \
    "      reason = 'delete of _id ' .. source .. ' not queued: its index id ' .. id .. ' is "     \
    "held by _id ' ..\n"                                                                           \
    "        owner .. ', whose index document it would remove (the two map to the same index "     \
    "id; ' ..\n"                                                                                   \
    "        'use FTSYNC_ID_FORMAT=typed or make the id field unique)'\n"                          \
    "    end\n"                                                                                    \
    "    for _, v in ipairs({'source_id', source, 'owner_id', owner, 'reason', reason,\n"          \
    "        'stage', 'extract', 'failed_at', now}) do items[#items + 1] = v end\n"                \
    "    redis.call('XADD', KEYS[2], '*', unpack(items))\n"                                        \
    "    result[#result + 1] = e\n"                                                                \
    "    result[#result + 1] = reason\n"                                                           \
    "  else\n"                                                                                     \
    "    redis.call('XADD', KEYS[kind == 2 and 2 or 1], '*', unpack(items))\n"                     \
    "    if kind == 3 and op == 'drop' then\n"                                                     \
    "      redis.call('DEL', KEYS[7])\n"                                                           \
    "    elseif source and source ~= '' and op == 'index' and owner ~= source then\n"              \
    "      redis.call('HSET', KEYS[7], id, source)\n"                                              \
    "    elseif source and source ~= '' and op == 'delete' and owner then\n"                       \
    "      redis.call('HDEL', KEYS[7], id)\n"                                                      \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "result[1] = n\n"                                                                              \
    "for e = 1, tonumber(take()) do\n"                                                             \
    "  local source = take()\n"                                                                    \
    "  local index = take()\n"                                                                     \
    "  redis.call('HSET', KEYS[3], source, index)\n"                                               \
    "end\n"                                                                                        \
    "for e = 1, tonumber(take()) do redis.call('HDEL', KEYS[3], take()) end\n"                     \
    "if take() == '1' then\n"                                                                      \
    "  if take() == '1' then redis.call('DEL', KEYS[4]) end\n"                                     \
    "  local pairs = tonumber(take())\n"                                                           \
    "  local fields = {}\n"                                                                        \
    "  for j = 1, 2 * pairs do fields[j] = take() end\n"                                           \
    "  redis.call('HSET', KEYS[4], unpack(fields))\n"                                              \
    "  redis.call('DEL', KEYS[5])\n"                                                               \
    "end\n"                                                                                        \
    "return result\n"

/* Trims the stream down to what every consumer group acknowledged; KEYS[1] is the stream.
 * Returns {removed, threshold}, or {-1, ""} when there is no stream or no group.
 *
 * For each group the first entry it may still need is its smallest pending ID (delivered, not
 * acknowledged) or, with nothing pending, the entry after its last-delivered ID; the threshold
 * is the smallest of these over all groups, and XTRIM MINID removes the entries below it: each
 * of them was delivered to every group (it is not above any last-delivered ID) and is pending
 * in none (it is below every smallest pending ID), so every group acknowledged it.
 *
 * Why nothing running concurrently can make this remove an unacknowledged entry:
 *   - the script is atomic: no XREADGROUP, XACK, XCLAIM/XAUTOCLAIM, XGROUP CREATE or SETID of
 *     another client runs between reading the groups and trimming, so the threshold is
 *     computed from the state the trim applies to (a version in C that read first and trimmed
 *     later would miss a group created in between from ID 0, and trim what it never read);
 *   - after the trim, a reader can only need entries at or above the threshold: XREADGROUP >
 *     delivers only IDs above the group's last-delivered ID (>= threshold - 1), re-reading a
 *     consumer's history (XREADGROUP 0) and XCLAIM/XAUTOCLAIM only return entries of the
 *     pending list (each >= threshold), and XACK only shrinks the pending list, which can only
 *     raise the next threshold;
 *   - only deliberate operator actions reach below it: XGROUP SETID to an older ID, or
 *     XCLAIM ... FORCE of an ID that was acknowledged.
 * IDs are compared as (milliseconds, sequence) decimal strings by length, then text, so that
 * 64-bit parts never pass through Lua's doubles; "last-delivered + 1" adds 1 to sequences of
 * at most 15 digits (exact in a double) and otherwise keeps the last-delivered ID itself, which
 * only keeps one acknowledged entry more. */
#define TRIM_SCRIPT                                                                                \
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end\n"                             \
    "local groups = redis.call('XINFO', 'GROUPS', KEYS[1])\n"                                      \
    "if #groups == 0 then return {-1, ''} end\n"                                                   \
    "local function split(id)\n"                                                                   \
    "  local ms, seq = string.match(id, '^(%d+)-(%d+)$')\n"                                        \
    "  if not ms then error('unexpected stream ID ' .. tostring(id)) end\n"                        \
    "  return {ms, seq}\n"                                                                         \
    "end\n"                                                                                        \
    "local function less(a, b)\n"                                                                  \
    "  if #a[1] ~= #b[1] then return #a[1] < #b[1] end\n"                                          \
    "  if a[1] ~= b[1] then return a[1] < b[1] end\n"                                              \
    "  if #a[2] ~= #b[2] then return #a[2] < #b[2] end\n"                                          \
    "  return a[2] < b[2]\n"                                                                       \
    "end\n"                                                                                        \
    "local function after(id)\n"                                                                   \
    "  if #id[2] <= 15 then return {id[1], string.format('%.0f', tonumber(id[2]) + 1)} end\n"      \
    "  return id\n"                                                                                \
    "end\n"                                                                                        \
    "local threshold = nil\n"                                                                      \
    "for _, g in ipairs(groups) do\n"                                                              \
    "  local f = {}\n"                                                                             \
    "  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end\n"                                               \
    "  local candidate = after(split(f['last-delivered-id']))\n"                                   \
    "  if f['pending'] > 0 then\n"                                                                 \
    "    local summary = redis.call('XPENDING', KEYS[1], f['name'])\n"                             \
    "    local smallest = split(summary[2])\n"                                                     \
    "    if less(smallest, candidate) then candidate = smallest end\n"                             \
    "  end\n"                                                                                      \
    "  if not threshold or less(candidate, threshold) then threshold = candidate end\n"            \
    "end\n"                                                                                        \
    "local id = threshold[1] .. '-' .. threshold[2]\n"                                             \
    "return {redis.call('XTRIM', KEYS[1], 'MINID', id), id}\n"

struct fts_redis_queue {
    fts_redis_t *state; /* borrowed: token and snapshot hashes */
    fts_redis_t *queue; /* borrowed: the streams; == state when there is one connection */
    bool atomic;        /* one server: entries and checkpoint share one script */
    fts_redis_keys_t keys;
    /* The epoch marker's value this process knows ("" before the first checkpoint or check):
     * every checkpoint write expects it (fts_redis_queue_check_epoch). */
    char epoch[FTS_REDIS_EPOCH_SIZE];
    unsigned lost_pending; /* FTS_DATA_LOST_* found by a check, not yet reported */
};

/* The commands of one checkpoint, with the text they point to. Must not be copied once built. */
typedef struct {
    fts_redis_cmd_t cmds[CHECKPOINT_COMMANDS_MAX];
    size_t count;
    const char *del_self[2];
    const char *hset[CHECKPOINT_HSET_ARGS_MAX];
    const char *del_other[2];
    char time_text[24];
    char queued_text[24];
    char updated_text[24];
} checkpoint_cmds_t;

/* ---- Pure parts ---- */

bool fts_redis_keys_init(fts_redis_keys_t *keys, const char *pipeline, fts_error_t *err)
{
    memset(keys, 0, sizeof *keys);
    size_t len = pipeline ? strlen(pipeline) : 0;
    if (len == 0 || len > FTS_REDIS_PIPELINE_NAME_MAX) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "pipeline name must be 1 to %d characters long, not %zu",
                             FTS_REDIS_PIPELINE_NAME_MAX, len);
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)pipeline[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.') {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "pipeline name \"%s\" may hold only letters, digits, '_', '-' "
                                 "and '.' (it is the hash tag of its Redis keys)",
                                 pipeline);
        }
    }
    snprintf(keys->stream, sizeof keys->stream, "ftsync:{%s}:stream", pipeline);
    snprintf(keys->dead, sizeof keys->dead, "ftsync:{%s}:dead", pipeline);
    snprintf(keys->token, sizeof keys->token, "ftsync:{%s}:token", pipeline);
    snprintf(keys->snapshot, sizeof keys->snapshot, "ftsync:{%s}:snapshot", pipeline);
    snprintf(keys->lease, sizeof keys->lease, "ftsync:{%s}:lease", pipeline);
    snprintf(keys->ids, sizeof keys->ids, "ftsync:{%s}:ids", pipeline);
    snprintf(keys->epoch, sizeof keys->epoch, "ftsync:{%s}:epoch", pipeline);
    snprintf(keys->owners, sizeof keys->owners, "ftsync:{%s}:owners", pipeline);
    return true;
}

void fts_redis_cluster_time_format(uint32_t seconds, uint32_t increment, char *text, size_t size)
{
    snprintf(text, size, "%" PRIu32 ".%" PRIu32, seconds, increment);
}

bool fts_redis_cluster_time_parse(const char *text, uint32_t *seconds, uint32_t *increment)
{
    const char *dot = text ? strchr(text, '.') : NULL;
    uint64_t s;
    uint64_t i;
    if (!dot || !fts_decimal_parse(text, (size_t)(dot - text), UINT32_MAX, &s) ||
        !fts_decimal_parse(dot + 1, strlen(dot + 1), UINT32_MAX, &i)) {
        return false;
    }
    *seconds = (uint32_t)s;
    *increment = (uint32_t)i;
    return true;
}

bool fts_redis_checkpoint_validate(const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    switch (checkpoint->kind) {
    case FTS_CHECKPOINT_TOKEN:
        if (!checkpoint->token || !checkpoint->token[0]) {
            return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                                 "checkpoint: the resume token is empty");
        }
        if (checkpoint->token_kind != FTS_TOKEN_RESUME &&
            checkpoint->token_kind != FTS_TOKEN_START_AFTER) {
            return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                                 "checkpoint: unknown token kind %d", (int)checkpoint->token_kind);
        }
        return true;
    case FTS_CHECKPOINT_SNAPSHOT:
        if (checkpoint->started.seconds == 0) {
            return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                                 "checkpoint: the snapshot's start time (started_at) is not set");
        }
        if (checkpoint->last_id && !checkpoint->last_id[0]) {
            return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                                 "checkpoint: the snapshot's last_id is empty (NULL means none)");
        }
        return true;
    }
    return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                         "checkpoint: unknown kind %d", (int)checkpoint->kind);
}

/* Builds the commands that save checkpoint: HSET of its hash, DEL of the other (and first a
 * DEL of its own hash when a snapshot starts afresh, so no last_id of an earlier run stays).
 * A snapshot checkpoint with a last_id (the only kind extract writes) keeps the hash's other
 * fields, the resync's sweep flag among them (fts_redis_queue_clear_for_resync); a token
 * checkpoint deletes the flag with the hash. */
static void checkpoint_build(const fts_redis_keys_t *keys, const fts_checkpoint_t *checkpoint,
                             uint64_t now_ms, checkpoint_cmds_t *out)
{
    int argc = 0;
    const char *self;
    const char *other;
    snprintf(out->updated_text, sizeof out->updated_text, "%" PRIu64, now_ms);
    out->count = 0;
    if (checkpoint->kind == FTS_CHECKPOINT_TOKEN) {
        self = keys->token;
        other = keys->snapshot;
        fts_redis_cluster_time_format(checkpoint->cluster_time.seconds,
                                      checkpoint->cluster_time.increment, out->time_text,
                                      sizeof out->time_text);
        out->hset[argc++] = "HSET";
        out->hset[argc++] = self;
        out->hset[argc++] = "token";
        out->hset[argc++] = checkpoint->token;
        out->hset[argc++] = "kind";
        out->hset[argc++] = fts_token_kind_name(checkpoint->token_kind);
        out->hset[argc++] = "cluster_time";
        out->hset[argc++] = out->time_text;
    } else {
        self = keys->snapshot;
        other = keys->token;
        fts_redis_cluster_time_format(checkpoint->started.seconds, checkpoint->started.increment,
                                      out->time_text, sizeof out->time_text);
        snprintf(out->queued_text, sizeof out->queued_text, "%" PRIu64, checkpoint->queued);
        if (!checkpoint->last_id) {
            out->del_self[0] = "DEL";
            out->del_self[1] = self;
            out->cmds[out->count++] = (fts_redis_cmd_t){2, out->del_self, NULL};
        }
        out->hset[argc++] = "HSET";
        out->hset[argc++] = self;
        out->hset[argc++] = "started_at";
        out->hset[argc++] = out->time_text;
        if (checkpoint->last_id) {
            out->hset[argc++] = "last_id";
            out->hset[argc++] = checkpoint->last_id;
        }
        out->hset[argc++] = "queued";
        out->hset[argc++] = out->queued_text;
    }
    out->hset[argc++] = "updated_at";
    out->hset[argc++] = out->updated_text;
    out->cmds[out->count++] = (fts_redis_cmd_t){argc, out->hset, NULL};
    out->del_other[0] = "DEL";
    out->del_other[1] = other;
    out->cmds[out->count++] = (fts_redis_cmd_t){2, out->del_other, NULL};
}

bool fts_redis_action_argv_check(const fts_action_argv_t *action, const char *stream_key,
                                 fts_error_t *err)
{
    int argc = action->argc;
    if (argc < 5 || argc > FTS_ACTION_ARGV_MAX || (argc - 3) % 2 != 0) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "an action has %d XADD arguments; expected XADD, key, \"*\" and "
                             "field/value pairs",
                             argc);
    }
    for (int i = 0; i < argc; i++) {
        if (!action->argv[i]) {
            return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                                 "argument %d of an action's XADD is missing", i);
        }
    }
    size_t key_len = strlen(stream_key);
    if (action->argvlen[0] != 4 || strncasecmp(action->argv[0], "XADD", 4) != 0) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "an action is not an XADD command");
    }
    if (action->argvlen[1] != key_len || memcmp(action->argv[1], stream_key, key_len) != 0) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "an action is addressed to \"%.*s\", not to this pipeline's %s",
                             (int)(action->argvlen[1] < 200 ? action->argvlen[1] : 200),
                             action->argv[1], stream_key);
    }
    /* "*" right after the key: no MAXLEN/MINID/NOMKSTREAM option can come before the fields
     * (invariant 4), and Redis picks the ID. */
    if (action->argvlen[2] != 1 || action->argv[2][0] != '*') {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "an action's XADD must have \"*\" right after the key (no MAXLEN, "
                             "no explicit ID)");
    }
    return true;
}

/* The text of a string reply, for messages and comparisons. */
static bool reply_is_text(const redisReply *reply)
{
    return reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) &&
           reply->str;
}

/* Finds field in a flat field/value array reply; NULL when absent. */
static const redisReply *hash_field(const redisReply *hash, const char *field)
{
    size_t len = strlen(field);
    for (size_t i = 0; i + 1 < hash->elements; i += 2) {
        const redisReply *name = hash->element[i];
        if (reply_is_text(name) && name->len == len && memcmp(name->str, field, len) == 0) {
            return hash->element[i + 1];
        }
    }
    return NULL;
}

/* A text field of a hash: *text points into the reply (not NUL-terminated, *len bytes), NULL
 * when absent and not required. Empty values and values holding a NUL byte are refused. */
static bool hash_text(const char *key, const redisReply *hash, const char *field, bool required,
                      const char **text, size_t *len, fts_error_t *err)
{
    const redisReply *value = hash_field(hash, field);
    *text = NULL;
    *len = 0;
    if (!value) {
        if (required) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                                 "saved position %s has no field \"%s\"", key, field);
        }
        return true;
    }
    if (!reply_is_text(value) || value->len == 0 || memchr(value->str, '\0', value->len)) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "saved position %s: field \"%s\" is empty or not text", key, field);
    }
    *text = value->str;
    *len = value->len;
    return true;
}

static bool hash_number(const char *key, const redisReply *hash, const char *field, bool required,
                        uint64_t *number, fts_error_t *err)
{
    const char *text;
    size_t len;
    *number = 0;
    if (!hash_text(key, hash, field, required, &text, &len, err)) {
        return false;
    }
    if (text && !fts_decimal_parse(text, len, UINT64_MAX, number)) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "saved position %s: field \"%s\" is \"%.*s\", not a whole number", key,
                             field, (int)(len < 64 ? len : 64), text);
    }
    return true;
}

static bool hash_time(const char *key, const redisReply *hash, const char *field, bool required,
                      fts_timestamp_t *time, fts_error_t *err)
{
    const char *text;
    size_t len;
    char copy[48];
    time->seconds = 0;
    time->increment = 0;
    if (!hash_text(key, hash, field, required, &text, &len, err)) {
        return false;
    }
    if (!text) {
        return true;
    }
    snprintf(copy, sizeof copy, "%.*s", (int)(len < sizeof copy ? len : sizeof copy - 1), text);
    if (len >= sizeof copy ||
        !fts_redis_cluster_time_parse(copy, &time->seconds, &time->increment)) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "saved position %s: field \"%s\" is \"%s\", not "
                             "<seconds>.<increment>",
                             key, field, copy);
    }
    return true;
}

static bool parse_token_hash(const char *key, const redisReply *hash, fts_position_t *position,
                             fts_error_t *err)
{
    const char *text;
    size_t len;
    if (!hash_text(key, hash, "kind", true, &text, &len, err)) {
        return false;
    }
    char kind[16];
    snprintf(kind, sizeof kind, "%.*s", (int)(len < sizeof kind ? len : sizeof kind - 1), text);
    if (len >= sizeof kind || !fts_token_kind_parse(kind, &position->token_kind)) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "saved position %s: field \"kind\" is \"%.*s\", not resume or "
                             "start_after",
                             key, (int)(len < 64 ? len : 64), text);
    }
    if (!hash_time(key, hash, "cluster_time", false, &position->cluster_time, err) ||
        !hash_number(key, hash, "updated_at", false, &position->token_updated_at_ms, err) ||
        !hash_text(key, hash, "token", true, &text, &len, err)) {
        return false;
    }
    position->token = bson_strndup(text, len);
    position->has_token = true;
    return true;
}

static bool parse_snapshot_hash(const char *key, const redisReply *hash, fts_position_t *position,
                                fts_error_t *err)
{
    const char *text;
    size_t len;
    uint64_t sweep = 0;
    if (!hash_number(key, hash, "sweep", false, &sweep, err) ||
        !hash_text(key, hash, "started_at", false, &text, &len, err)) {
        return false;
    }
    position->sweep = sweep != 0;
    if (!text && position->sweep) {
        /* Only the flag of a resync whose snapshot has not saved progress yet. */
        return true;
    }
    if (!hash_time(key, hash, "started_at", true, &position->started, err) ||
        !hash_number(key, hash, "queued", true, &position->queued, err) ||
        !hash_number(key, hash, "updated_at", false, &position->snapshot_updated_at_ms, err) ||
        !hash_text(key, hash, "last_id", false, &text, &len, err)) {
        return false;
    }
    if (position->started.seconds == 0) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "saved position %s: field \"started_at\" is 0.x, not a cluster time",
                             key);
    }
    if (text) {
        position->last_id = bson_strndup(text, len);
    }
    position->has_snapshot = true;
    return true;
}

bool fts_redis_position_parse(const fts_redis_keys_t *keys, const redisReply *token_hash,
                              const redisReply *snapshot_hash, fts_position_t *position,
                              fts_error_t *err)
{
    memset(position, 0, sizeof *position);
    const redisReply *hashes[2] = {token_hash, snapshot_hash};
    const char *names[2] = {keys->token, keys->snapshot};
    for (int i = 0; i < 2; i++) {
        const redisReply *hash = hashes[i];
        if (!hash || hash->type != REDIS_REPLY_ARRAY || hash->elements % 2 != 0) {
            return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                                 "HGETALL %s did not return field/value pairs%s", names[i],
                                 hash && hash->type == REDIS_REPLY_ERROR ? " (an error)" : "");
        }
    }
    bool ok =
        (token_hash->elements == 0 || parse_token_hash(keys->token, token_hash, position, err)) &&
        (snapshot_hash->elements == 0 ||
         parse_snapshot_hash(keys->snapshot, snapshot_hash, position, err));
    if (!ok) {
        fts_position_cleanup(position);
    }
    return ok;
}

bool fts_redis_backlog_parse(const redisReply *xlen, const redisReply *groups,
                             fts_backlog_t *backlog, fts_error_t *err)
{
    memset(backlog, 0, sizeof *backlog);
    backlog->exact = true;
    if (!xlen || xlen->type != REDIS_REPLY_INTEGER || xlen->integer < 0) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                             "XLEN did not return a length");
    }
    backlog->length = (uint64_t)xlen->integer;
    backlog->entries = backlog->length;
    if (groups && groups->type == REDIS_REPLY_ERROR && groups->str &&
        strstr(groups->str, "no such key")) {
        return true; /* no stream yet: nothing queued */
    }
    if (!groups || groups->type != REDIS_REPLY_ARRAY) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                             "XINFO GROUPS did not return a list of groups");
    }
    for (size_t i = 0; i < groups->elements; i++) {
        const redisReply *group = groups->element[i];
        if (!group || group->type != REDIS_REPLY_ARRAY || group->elements % 2 != 0) {
            return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                                 "XINFO GROUPS returned a group that is not field/value pairs");
        }
        const redisReply *name = hash_field(group, "name");
        if (!reply_is_text(name) || strcmp(name->str, FTS_LOAD_GROUP) != 0) {
            continue;
        }
        const redisReply *pending = hash_field(group, "pending");
        const redisReply *lag = hash_field(group, "lag");
        if (!pending || pending->type != REDIS_REPLY_INTEGER || pending->integer < 0) {
            return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                                 "XINFO GROUPS gave group %s no pending count", FTS_LOAD_GROUP);
        }
        backlog->group_exists = true;
        backlog->pending = (uint64_t)pending->integer;
        if (lag && lag->type == REDIS_REPLY_INTEGER && lag->integer >= 0) {
            backlog->lag_known = true;
            backlog->lag = (uint64_t)lag->integer;
            backlog->entries = backlog->pending + backlog->lag;
            if (backlog->entries > backlog->length) {
                /* A lag Redis got wrong (7.0 can keep a stale entries-read after an AOF
                 * restart): every unacknowledged entry is still in the stream, so the length
                 * is the better bound. Overstated, reading could pause for good. */
                backlog->exact = false;
                backlog->entries = backlog->length;
            }
        } else {
            /* Unknown lag: every unacknowledged entry is still in the stream (trimming keeps
             * them), so the stream's length bounds them from above. */
            backlog->exact = false;
            backlog->entries = backlog->length;
        }
        return true;
    }
    return true; /* no loader group yet: nothing is acknowledged, all of XLEN is backlog */
}

/* ---- The queue ---- */

fts_redis_queue_t *fts_redis_queue_new(fts_redis_t *state, fts_redis_t *queue, const char *pipeline,
                                       fts_error_t *err)
{
    assert(state);
    fts_redis_queue_t *result = bson_malloc0(sizeof *result);
    if (!fts_redis_keys_init(&result->keys, pipeline, err)) {
        bson_free(result);
        return NULL;
    }
    result->state = state;
    result->queue = queue ? queue : state;
    result->atomic = fts_redis_same_server(result->state, result->queue);
    fts_log(FTS_LOG_DEBUG, LOG_COMPONENT, "pipeline %s: stream on %s, state on %s (%s)", pipeline,
            fts_redis_masked_url(result->queue), fts_redis_masked_url(result->state),
            result->atomic ? "one server: entries and checkpoints in one transaction"
                           : "two servers: checkpoint after the entries");
    return result;
}

void fts_redis_queue_destroy(fts_redis_queue_t *queue)
{
    bson_free(queue);
}

const fts_redis_keys_t *fts_redis_queue_keys(const fts_redis_queue_t *queue)
{
    return &queue->keys;
}

bool fts_redis_queue_is_atomic(const fts_redis_queue_t *queue)
{
    return queue->atomic;
}

bool fts_redis_queue_ensure_group(fts_redis_queue_t *queue, fts_error_t *err)
{
    const char *argv[] = {"XGROUP", "CREATE", queue->keys.stream, FTS_LOAD_GROUP, "0", "MKSTREAM"};
    fts_redis_cmd_t command = {6, argv, NULL};
    redisReply *reply = NULL;
    if (!fts_redis_pipeline(queue->queue, &command, 1, &reply, err)) {
        return fts_error_prefix(err, "cannot create consumer group %s on %s", FTS_LOAD_GROUP,
                                queue->keys.stream);
    }
    bool ok = true;
    if (reply->type == REDIS_REPLY_ERROR &&
        !(reply->str && strncmp(reply->str, "BUSYGROUP", 9) == 0)) {
        fts_redis_reply_check(queue->queue, reply, "XGROUP CREATE", err);
        fts_error_prefix(err, "cannot create consumer group %s on %s", FTS_LOAD_GROUP,
                         queue->keys.stream);
        ok = false;
    }
    freeReplyObject(reply);
    return ok;
}

/* Checks the replies of a MULTI ... EXEC pipeline of count commands (MULTI and EXEC
 * included): every command queued, and EXEC answered with one result per queued command.
 * Returns EXEC's result array (owned by replies) or NULL with err filled. */
static const redisReply *exec_results(fts_redis_t *redis, redisReply **replies, size_t count,
                                      fts_error_t *err)
{
    if (!fts_redis_reply_check(redis, replies[0], "MULTI", err)) {
        return NULL;
    }
    /* A command refused while queueing (its error is the useful one) makes EXEC abort. */
    for (size_t i = 1; i + 1 < count; i++) {
        if (!fts_redis_reply_check(redis, replies[i], "a command of the transaction", err)) {
            fts_error_prefix(err, "the transaction was aborted, nothing was written");
            return NULL;
        }
    }
    const redisReply *exec = replies[count - 1];
    if (!fts_redis_reply_check(redis, exec, "EXEC", err)) {
        return NULL;
    }
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != count - 2) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                      "EXEC did not return %zu results (the transaction did not run)", count - 2);
        return NULL;
    }
    return exec;
}

/* Checks the results of a checkpoint's commands inside EXEC or as plain replies. */
static bool checkpoint_results(fts_redis_t *redis, redisReply *const *results, size_t count,
                               fts_error_t *err)
{
    for (size_t i = 0; i < count; i++) {
        if (!fts_redis_reply_check(redis, results[i], "the checkpoint", err)) {
            return false;
        }
    }
    return true;
}

/* The XADD of one dead letter, with the storage its arguments point to. */
typedef struct {
    fts_redis_cmd_t xadd;
    const char **argv;
    size_t *argvlen;
    char failed_at[24];
} dead_letter_cmd_t;

/* Builds "XADD <dead> * <fields...> reason R stage S failed_at T" (the extra fields last, so a
 * reader that takes the last occurrence of a name reads ours). Fails on a malformed letter. */
static bool dead_letter_cmd_build(const fts_redis_queue_t *queue, const fts_dead_letter_t *dead,
                                  dead_letter_cmd_t *out, fts_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (dead->count % 2 != 0 || (dead->count && !dead->items) || !dead->reason ||
        !dead->reason[0] || !dead->stage || !dead->stage[0]) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "a dead letter needs field/value pairs, a reason and a stage");
    }
    size_t argc = dead->count + DEAD_LETTER_EXTRA_ARGS;
    out->argv = bson_malloc0(argc * sizeof *out->argv);
    out->argvlen = bson_malloc0(argc * sizeof *out->argvlen);
    snprintf(out->failed_at, sizeof out->failed_at, "%" PRIu64, fts_clock_wall_ms());
    size_t n = 0;
    out->argv[n++] = "XADD";
    out->argv[n++] = queue->keys.dead;
    out->argv[n++] = "*";
    for (size_t i = 0; i < dead->count; i++) {
        out->argv[n] = dead->items[i];
        out->argvlen[n] = dead->lens ? dead->lens[i] : strlen(dead->items[i]);
        n++;
    }
    out->argv[n++] = "reason";
    out->argv[n++] = dead->reason;
    out->argv[n++] = "stage";
    out->argv[n++] = dead->stage;
    out->argv[n++] = "failed_at";
    out->argv[n++] = out->failed_at;
    for (size_t i = 0; i < n; i++) {
        if (i < 3 || i >= 3 + dead->count) {
            out->argvlen[i] = strlen(out->argv[i]);
        }
    }
    out->xadd = (fts_redis_cmd_t){(int)n, out->argv, out->argvlen};
    return true;
}

static void dead_letter_cmd_cleanup(dead_letter_cmd_t *cmd)
{
    bson_free(cmd->argv);
    bson_free(cmd->argvlen);
    memset(cmd, 0, sizeof *cmd);
}

/* The arguments of one EVAL of APPEND_SCRIPT, pointing into the caller's data; the numbers
 * the layout needs live in numbers (allocated once, never moved, so the pointers stay good). */
typedef struct {
    const char **argv;
    size_t *argvlen;
    size_t argc;
    size_t cap;
    char (*numbers)[24];
    size_t nnumbers;
    size_t numbers_cap;
} script_args_t;

static void script_args_push(script_args_t *args, const char *data, size_t len)
{
    if (args->argc == args->cap) {
        args->cap = args->cap ? args->cap * 2 : 64;
        args->argv = bson_realloc(args->argv, args->cap * sizeof *args->argv);
        args->argvlen = bson_realloc(args->argvlen, args->cap * sizeof *args->argvlen);
    }
    args->argv[args->argc] = data;
    args->argvlen[args->argc] = len;
    args->argc++;
}

static void script_args_push_str(script_args_t *args, const char *text)
{
    script_args_push(args, text, strlen(text));
}

static void script_args_push_number(script_args_t *args, uint64_t number)
{
    assert(args->nnumbers < args->numbers_cap);
    char *text = args->numbers[args->nnumbers++];
    snprintf(text, sizeof args->numbers[0], "%" PRIu64, number);
    script_args_push_str(args, text);
}

static void script_args_cleanup(script_args_t *args)
{
    bson_free(args->argv);
    bson_free(args->argvlen);
    bson_free(args->numbers);
    memset(args, 0, sizeof *args);
}

/* The length of argument i of a command (argvlen NULL: NUL-terminated). */
static size_t cmd_arg_len(const fts_redis_cmd_t *cmd, int i)
{
    return cmd->argvlen ? cmd->argvlen[i] : strlen(cmd->argv[i]);
}

/* The owners of what one script writes: owners[i] is the source _id of xadds[i] for i below
 * count (NULL: a drop or sweep), the rest are dead letters; collided[i] (count of them, false
 * before the script) is set for each action the script dead-lettered instead. */
typedef struct {
    const char *const *owners;
    size_t count;
    bool *collided;
} owned_t;

/* Builds EVAL APPEND_SCRIPT 7 <stream> <dead> <ids> <self> <other> <epoch> <owners> <ARGV...>
 * (layout: see APPEND_SCRIPT) for the XADDs xadds[0..count) (each addressed to the stream or
 * the dead-letter stream; the first owned->count with their owners, owned may be NULL), the id
 * map changes and the checkpoint commands saved (NULL: none), the marker expected to hold epoch
 * ("": not checked). */
static void append_script_build(const fts_redis_queue_t *queue, const fts_redis_cmd_t *xadds,
                                size_t count, const owned_t *owned, const fts_id_map_change_t *map,
                                size_t map_count, const fts_checkpoint_t *checkpoint,
                                const checkpoint_cmds_t *saved, const char *epoch,
                                script_args_t *args)
{
    memset(args, 0, sizeof *args);
    args->numbers_cap = 2 * count + 9;
    args->numbers = bson_malloc0(args->numbers_cap * sizeof *args->numbers);
    bool token = !checkpoint || checkpoint->kind == FTS_CHECKPOINT_TOKEN;
    script_args_push_str(args, "EVAL");
    script_args_push_str(args, APPEND_SCRIPT);
    script_args_push_str(args, "7");
    script_args_push_str(args, queue->keys.stream);
    script_args_push_str(args, queue->keys.dead);
    script_args_push_str(args, queue->keys.ids);
    script_args_push_str(args, token ? queue->keys.token : queue->keys.snapshot);
    script_args_push_str(args, token ? queue->keys.snapshot : queue->keys.token);
    script_args_push_str(args, queue->keys.epoch);
    script_args_push_str(args, queue->keys.owners);
    script_args_push_str(args, epoch);
    script_args_push_number(args, fts_clock_wall_ms());

    script_args_push_number(args, count);
    for (size_t i = 0; i < count; i++) {
        const fts_redis_cmd_t *xadd = &xadds[i];
        bool dead = strcmp(xadd->argv[1], queue->keys.dead) == 0;
        if (owned && i < owned->count) {
            assert(!dead);
            script_args_push_number(args, 3);
            script_args_push_str(args, owned->owners[i] ? owned->owners[i] : "");
        } else {
            script_args_push_number(args, dead ? 2 : 1);
        }
        script_args_push_number(args, (uint64_t)(xadd->argc - 3));
        for (int j = 3; j < xadd->argc; j++) {
            script_args_push(args, xadd->argv[j], cmd_arg_len(xadd, j));
        }
    }
    size_t sets = 0;
    for (size_t i = 0; i < map_count; i++) {
        sets += map[i].index_id != NULL;
    }
    script_args_push_number(args, sets);
    for (size_t i = 0; i < map_count; i++) {
        if (map[i].index_id) {
            script_args_push_str(args, map[i].source_id);
            script_args_push(args, map[i].index_id, map[i].index_id_len);
        }
    }
    script_args_push_number(args, map_count - sets);
    for (size_t i = 0; i < map_count; i++) {
        if (!map[i].index_id) {
            script_args_push_str(args, map[i].source_id);
        }
    }
    if (!saved) {
        script_args_push_str(args, "0");
        return;
    }
    /* saved: [DEL self,] HSET self pairs..., DEL other (checkpoint_build). */
    script_args_push_str(args, "1");
    script_args_push_str(args, saved->count == 3 ? "1" : "0");
    const fts_redis_cmd_t *hset = &saved->cmds[saved->count - 2];
    script_args_push_number(args, (uint64_t)(hset->argc - 2) / 2);
    for (int j = 2; j < hset->argc; j++) {
        script_args_push(args, hset->argv[j], cmd_arg_len(hset, j));
    }
}

/* Runs APPEND_SCRIPT on server (the queue server; the state server for a checkpoint alone);
 * see write_entries. A refusal for a lost epoch marker comes back as FTS_QUEUE_DATA_LOST. */
static bool append_script_run(fts_redis_queue_t *queue, fts_redis_t *server,
                              const fts_redis_cmd_t *xadds, size_t count, owned_t *owned,
                              const fts_id_map_change_t *map, size_t map_count,
                              const fts_checkpoint_t *checkpoint, const checkpoint_cmds_t *saved,
                              const char *epoch, fts_error_t *err)
{
    script_args_t args;
    append_script_build(queue, xadds, count, owned, map, map_count, checkpoint, saved, epoch,
                        &args);
    redisReply *reply =
        fts_redis_command_argv(server, (int)args.argc, args.argv, args.argvlen, err);
    script_args_cleanup(&args);
    if (!reply) {
        if (err && strstr(err->message, DATA_LOST_TAG)) {
            err->code = FTS_QUEUE_DATA_LOST;
            fts_log(FTS_LOG_ERROR, LOG_COMPONENT,
                    "Redis lost its data (the epoch marker %s is gone or changed): the "
                    "position is not saved; the extract resyncs",
                    queue->keys.epoch);
            return false;
        }
        /* An error reply: the script stopped at its first failure, before the checkpoint. */
        return fts_error_prefix(err, "%s; the checkpoint was not saved",
                                saved ? "the append script stopped" : "the entries script stopped");
    }
    bool ok = reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
              reply->element[0]->type == REDIS_REPLY_INTEGER &&
              reply->element[0]->integer == (long long)count;
    for (size_t i = 1; ok && i < reply->elements; i += 2) {
        /* An action dead-lettered for an index id collision: written, so logged. */
        const redisReply *number = reply->element[i];
        ok = owned && i + 1 < reply->elements && number->type == REDIS_REPLY_INTEGER &&
             number->integer >= 1 && (unsigned long long)number->integer <= owned->count &&
             reply_is_text(reply->element[i + 1]);
        if (ok) {
            owned->collided[number->integer - 1] = true;
            fts_log(FTS_LOG_WARN, LOG_COMPONENT, "dead-lettered an entry to %s (stage extract): %s",
                    queue->keys.dead, reply->element[i + 1]->str);
        }
    }
    freeReplyObject(reply);
    if (!ok) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                             "the append script did not return its entry count %zu", count);
    }
    return true;
}

/* The epoch marker value a checkpoint write expects: the one this process knows, else (the
 * first checkpoint of a worker) the queue server's, remembered from then on. A marker already
 * gone is a loss (the extract parent writes it before the first frame of a session). */
static bool epoch_for_write(fts_redis_queue_t *queue, fts_error_t *err)
{
    if (queue->epoch[0]) {
        return true;
    }
    const char *argv[] = {"GET", queue->keys.epoch};
    redisReply *reply = fts_redis_command_argv(queue->queue, 2, argv, NULL, err);
    if (!reply) {
        return fts_error_prefix(err, "cannot read the epoch marker %s", queue->keys.epoch);
    }
    bool ok =
        reply->type == REDIS_REPLY_STRING && reply->len > 0 && reply->len < sizeof queue->epoch;
    if (ok) {
        memcpy(queue->epoch, reply->str, reply->len);
        queue->epoch[reply->len] = '\0';
    } else {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT,
                "Redis lost its data (the epoch marker %s is gone): the position is not saved; "
                "the extract resyncs",
                queue->keys.epoch);
        fts_error_set(err, FTS_ERROR_REDIS, FTS_QUEUE_DATA_LOST,
                      "%s the epoch marker %s is gone: Redis lost its data; nothing was written",
                      DATA_LOST_TAG, queue->keys.epoch);
    }
    freeReplyObject(reply);
    return ok;
}

/* Writes the XADD commands xadds[0..count) (to the stream or the dead-letter stream), the id
 * map changes map[0..map_count) and then the checkpoint (may be NULL), following invariant 1
 * (see the top of this file). A write with a checkpoint checks the epoch marker on each server
 * it writes to, in the script that writes (fts_redis_queue_check_epoch). what names the
 * operation for messages. */
static bool write_entries(fts_redis_queue_t *queue, const fts_redis_cmd_t *xadds, size_t count,
                          owned_t *owned, const fts_id_map_change_t *map, size_t map_count,
                          const fts_checkpoint_t *checkpoint, const char *what, fts_error_t *err)
{
    bool ok = false;
    checkpoint_cmds_t saved;
    saved.count = 0;

    if (checkpoint) {
        if (!fts_redis_checkpoint_validate(checkpoint, err)) {
            goto cleanup;
        }
        checkpoint_build(&queue->keys, checkpoint, fts_clock_wall_ms(), &saved);
        if (!epoch_for_write(queue, err)) {
            goto cleanup;
        }
    }
    if (count == 0 && map_count == 0 && saved.count == 0) {
        ok = true;
        goto cleanup;
    }
    const char *epoch = saved.count > 0 ? queue->epoch : "";
    if (count > 0 || map_count > 0) {
        /* One script on the queue server: entries, map and (one server) the checkpoint. */
        bool with_checkpoint = queue->atomic && saved.count > 0;
        if (!append_script_run(queue, queue->queue, xadds, count, owned, map, map_count, checkpoint,
                               with_checkpoint ? &saved : NULL, epoch, err)) {
            goto cleanup;
        }
        if (with_checkpoint || saved.count == 0) {
            ok = true;
            goto cleanup;
        }
    }

    /* The checkpoint alone on the state server (two servers: only now that the script said
     * every entry is in), by the same script with no entries, so that it checks the marker
     * there too. */
    if (!append_script_run(queue, queue->state, NULL, 0, NULL, NULL, 0, checkpoint, &saved, epoch,
                           err)) {
        fts_error_prefix(err, count ? "the entries are queued, the checkpoint was not saved"
                                    : "the checkpoint was not saved");
        goto cleanup;
    }
    ok = true;

cleanup:
    if (!ok) {
        fts_error_prefix(err, "%s", what);
    }
    return ok;
}

bool fts_redis_queue_append_batch(fts_redis_queue_t *queue, const fts_queue_batch_t *batch,
                                  const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    char what[FTS_REDIS_KEY_SIZE + 64];
    snprintf(what, sizeof what, "cannot append %zu action%s to %s", batch->count,
             batch->count == 1 ? "" : "s", queue->keys.stream);
    size_t total = batch->count + batch->dead_count;
    fts_redis_cmd_t *xadds = total ? bson_malloc0(total * sizeof *xadds) : NULL;
    dead_letter_cmd_t *dead =
        batch->dead_count ? bson_malloc0(batch->dead_count * sizeof *dead) : NULL;
    bool ok = false;
    for (size_t i = 0; i < batch->count; i++) {
        const fts_action_argv_t *action = &batch->actions[i];
        if (!fts_redis_action_argv_check(action, queue->keys.stream, err)) {
            fts_error_prefix(err, "%s (action %zu; nothing was sent)", what, i + 1);
            goto cleanup;
        }
        xadds[i] = (fts_redis_cmd_t){action->argc, (const char **)action->argv, action->argvlen};
    }
    for (size_t i = 0; i < batch->map_count; i++) {
        const fts_id_map_change_t *change = &batch->map[i];
        if (!change->source_id || !change->source_id[0] ||
            (change->index_id && change->index_id_len == 0)) {
            fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                          "%s: id map change %zu has an empty id (nothing was sent)", what, i + 1);
            goto cleanup;
        }
    }
    for (size_t i = 0; i < batch->dead_count; i++) {
        if (!dead_letter_cmd_build(queue, &batch->dead[i], &dead[i], err)) {
            fts_error_prefix(err, "%s (dead letter %zu; nothing was sent)", what, i + 1);
            goto cleanup;
        }
        xadds[batch->count + i] = dead[i].xadd;
    }
    owned_t owned = {.owners = batch->owners,
                     .count = batch->count,
                     .collided = batch->count ? bson_malloc0(batch->count * sizeof(bool)) : NULL};
    ok = write_entries(queue, xadds, total, batch->owners ? &owned : NULL, batch->map,
                       batch->map_count, checkpoint, what, err);
    for (size_t i = 0; batch->collided && i < batch->count; i++) {
        batch->collided[i] = ok && owned.collided[i];
    }
    bson_free(owned.collided);
    if (ok) {
        for (size_t i = 0; i < batch->dead_count; i++) {
            fts_log(FTS_LOG_WARN, LOG_COMPONENT, "dead-lettered an entry to %s (stage %s): %s",
                    queue->keys.dead, batch->dead[i].stage, batch->dead[i].reason);
        }
    }

cleanup:
    for (size_t i = 0; i < batch->dead_count; i++) {
        dead_letter_cmd_cleanup(&dead[i]);
    }
    bson_free(dead);
    bson_free(xadds);
    return ok;
}

bool fts_redis_queue_append(fts_redis_queue_t *queue, const fts_action_argv_t *actions,
                            size_t count, const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    fts_queue_batch_t batch = {.actions = actions, .count = count};
    return fts_redis_queue_append_batch(queue, &batch, checkpoint, err);
}

bool fts_redis_queue_checkpoint(fts_redis_queue_t *queue, const fts_checkpoint_t *checkpoint,
                                fts_error_t *err)
{
    char what[FTS_REDIS_KEY_SIZE + 64];
    if (!checkpoint) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "a checkpoint call without a checkpoint");
    }
    snprintf(what, sizeof what, "cannot save the position in %s",
             checkpoint->kind == FTS_CHECKPOINT_SNAPSHOT ? queue->keys.snapshot
                                                         : queue->keys.token);
    return write_entries(queue, NULL, 0, NULL, NULL, 0, checkpoint, what, err);
}

bool fts_redis_queue_dead_letter(fts_redis_queue_t *queue, const fts_dead_letter_t *dead,
                                 const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    char what[FTS_REDIS_KEY_SIZE + 64];
    snprintf(what, sizeof what, "cannot dead-letter an entry to %s", queue->keys.dead);
    dead_letter_cmd_t cmd;
    if (!dead_letter_cmd_build(queue, dead, &cmd, err)) {
        return fts_error_prefix(err, "%s", what);
    }
    bool ok = write_entries(queue, &cmd.xadd, 1, NULL, NULL, 0, checkpoint, what, err);
    if (ok) {
        fts_log(FTS_LOG_WARN, LOG_COMPONENT, "dead-lettered an entry to %s (stage %s): %s",
                queue->keys.dead, dead->stage, dead->reason);
    }
    dead_letter_cmd_cleanup(&cmd);
    return ok;
}

/* GET of the epoch marker on server into value ("" when absent). */
static bool epoch_read(fts_redis_queue_t *queue, fts_redis_t *server, char *value, size_t size,
                       fts_error_t *err)
{
    const char *argv[] = {"GET", queue->keys.epoch};
    redisReply *reply = fts_redis_command_argv(server, 2, argv, NULL, err);
    if (!reply) {
        return fts_error_prefix(err, "cannot read the epoch marker %s on %s", queue->keys.epoch,
                                fts_redis_masked_url(server));
    }
    value[0] = '\0';
    if (reply->type == REDIS_REPLY_STRING && reply->len < size) {
        memcpy(value, reply->str, reply->len);
        value[reply->len] = '\0';
    }
    freeReplyObject(reply);
    return true;
}

bool fts_redis_queue_check_epoch(fts_redis_queue_t *queue, unsigned *lost, fts_error_t *err)
{
    char on_state[FTS_REDIS_EPOCH_SIZE];
    char on_queue[FTS_REDIS_EPOCH_SIZE];
    *lost = 0;
    if (!epoch_read(queue, queue->queue, on_queue, sizeof on_queue, err)) {
        return false;
    }
    if (queue->atomic) {
        memcpy(on_state, on_queue, sizeof on_state);
    } else if (!epoch_read(queue, queue->state, on_state, sizeof on_state, err)) {
        return false;
    }
    if (queue->epoch[0]) {
        if (strcmp(on_queue, queue->epoch) != 0) {
            *lost |= FTS_DATA_LOST_STREAM;
        }
        if (!queue->atomic && strcmp(on_state, queue->epoch) != 0) {
            *lost |= FTS_DATA_LOST_STATE;
        }
    } else if (!queue->atomic && strcmp(on_state, on_queue) != 0) {
        /* None known yet (a new process): a marker on one server only (or two different ones)
         * means the other lost its data while no extract ran. Both absent: a new pipeline,
         * or one written before markers existed (see README.md, Reliability). */
        if (!on_queue[0]) {
            *lost = FTS_DATA_LOST_STREAM;
        } else if (!on_state[0]) {
            *lost = FTS_DATA_LOST_STATE;
        } else {
            *lost = FTS_DATA_LOST_STATE | FTS_DATA_LOST_STREAM;
        }
    }
    if (*lost == 0 && on_queue[0] && strcmp(on_queue, on_state) == 0) {
        snprintf(queue->epoch, sizeof queue->epoch, "%s", on_queue);
        return true;
    }
    /* A new marker on both servers (state first: a writer checks the queue server's first):
     * from now on a writer that knew the old one is refused. */
    bson_oid_t oid;
    char fresh[FTS_REDIS_EPOCH_SIZE];
    bson_oid_init(&oid, NULL);
    bson_oid_to_string(&oid, fresh);
    fts_redis_t *servers[2] = {queue->state, queue->queue};
    for (size_t i = 0; i < (queue->atomic ? 1u : 2u); i++) {
        const char *argv[] = {"SET", queue->keys.epoch, fresh};
        redisReply *reply = fts_redis_command_argv(servers[i], 3, argv, NULL, err);
        if (!reply) {
            queue->epoch[0] = '\0';
            return fts_error_prefix(err, "cannot write the epoch marker %s", queue->keys.epoch);
        }
        freeReplyObject(reply);
    }
    snprintf(queue->epoch, sizeof queue->epoch, "%s", fresh);
    fts_log(FTS_LOG_INFO, LOG_COMPONENT, "epoch marker %s set to %s%s", queue->keys.epoch, fresh,
            *lost ? " after a data loss" : "");
    return true;
}

bool fts_redis_queue_read_position(fts_redis_queue_t *queue, fts_position_t *position,
                                   fts_error_t *err)
{
    const char *multi[] = {"MULTI"};
    const char *token[] = {"HGETALL", queue->keys.token};
    const char *snapshot[] = {"HGETALL", queue->keys.snapshot};
    const char *exec[] = {"EXEC"};
    fts_redis_cmd_t cmds[] = {
        {1, multi, NULL}, {2, token, NULL}, {2, snapshot, NULL}, {1, exec, NULL}};
    redisReply *replies[4] = {NULL};
    bool ok = false;
    memset(position, 0, sizeof *position);
    if (!fts_redis_pipeline(queue->state, cmds, 4, replies, err)) {
        goto cleanup;
    }
    const redisReply *results = exec_results(queue->state, replies, 4, err);
    if (!results || !checkpoint_results(queue->state, results->element, 2, err)) {
        goto cleanup;
    }
    ok = fts_redis_position_parse(&queue->keys, results->element[0], results->element[1], position,
                                  err);

cleanup:
    fts_redis_replies_free(replies, 4);
    if (!ok) {
        fts_error_prefix(err, "cannot read the saved position of %s", queue->keys.stream);
    }
    return ok;
}

/* Two servers: deletes the owners of the index ids on the queue server, before the position
 * is cleared on the state server (one server: the caller deletes them with the position). The
 * snapshot that follows a cleared position claims every live document's index id again, so
 * owners of documents deleted while nobody watched (a lost history) do not outlive it and
 * refuse a new document its index id. Cleared first: a crash between the two steps leaves the
 * old position with no owners, which the resync (or clear) run again rebuilds. */
static bool owners_clear_apart(fts_redis_queue_t *queue, fts_error_t *err)
{
    if (queue->atomic) {
        return true;
    }
    const char *argv[] = {"DEL", queue->keys.owners};
    redisReply *reply = fts_redis_command_argv(queue->queue, 2, argv, NULL, err);
    if (!reply) {
        return fts_error_prefix(err, "cannot delete the owners of the index ids %s",
                                queue->keys.owners);
    }
    freeReplyObject(reply);
    return true;
}

bool fts_redis_queue_clear_for_resync(fts_redis_queue_t *queue, fts_error_t *err)
{
    /* One MULTI: a crash leaves either the old position or the cleared one with the flag,
     * never a cleared position without it (the sweep would be lost). The snapshot's
     * checkpoints only HSET their fields into this hash, so the flag stays until the first
     * token checkpoint deletes the hash. One server: the owners go in the same DEL. */
    if (!owners_clear_apart(queue, err)) {
        return fts_error_prefix(err, "cannot clear for a resync");
    }
    const char *multi[] = {"MULTI"};
    const char *del[] = {"DEL", queue->keys.token, queue->keys.snapshot, queue->keys.owners};
    const char *hset[] = {"HSET", queue->keys.snapshot, "sweep", "1"};
    const char *exec[] = {"EXEC"};
    fts_redis_cmd_t cmds[] = {
        {1, multi, NULL}, {queue->atomic ? 4 : 3, del, NULL}, {4, hset, NULL}, {1, exec, NULL}};
    redisReply *replies[4] = {NULL};
    const redisReply *results = NULL;
    bool ok = fts_redis_pipeline(queue->state, cmds, 4, replies, err) &&
              (results = exec_results(queue->state, replies, 4, err)) != NULL &&
              checkpoint_results(queue->state, results->element, 2, err);
    fts_redis_replies_free(replies, 4);
    if (!ok) {
        return fts_error_prefix(err, "cannot clear the saved position (%s, %s) for a resync",
                                queue->keys.token, queue->keys.snapshot);
    }
    fts_log(FTS_LOG_INFO, LOG_COMPONENT,
            "cleared the saved position (%s, %s) and %s for a resync: its snapshot ends with a "
            "sweep (%s field sweep=1)",
            queue->keys.token, queue->keys.snapshot, queue->keys.owners, queue->keys.snapshot);
    return true;
}

bool fts_redis_queue_clear_position(fts_redis_queue_t *queue, fts_error_t *err)
{
    if (!owners_clear_apart(queue, err)) {
        return fts_error_prefix(err, "cannot clear the saved position");
    }
    const char *argv[] = {"DEL", queue->keys.token, queue->keys.snapshot, queue->keys.owners};
    redisReply *reply =
        fts_redis_command_argv(queue->state, queue->atomic ? 4 : 3, argv, NULL, err);
    if (!reply) {
        return fts_error_prefix(err, "cannot clear the saved position (%s, %s)", queue->keys.token,
                                queue->keys.snapshot);
    }
    fts_log(FTS_LOG_INFO, LOG_COMPONENT, "cleared the saved position (%s, %s) and %s",
            queue->keys.token, queue->keys.snapshot, queue->keys.owners);
    freeReplyObject(reply);
    return true;
}

bool fts_redis_queue_backlog(fts_redis_queue_t *queue, fts_backlog_t *backlog, fts_error_t *err)
{
    const char *multi[] = {"MULTI"};
    const char *xlen[] = {"XLEN", queue->keys.stream};
    const char *groups[] = {"XINFO", "GROUPS", queue->keys.stream};
    const char *exec[] = {"EXEC"};
    fts_redis_cmd_t cmds[] = {
        {1, multi, NULL}, {2, xlen, NULL}, {3, groups, NULL}, {1, exec, NULL}};
    redisReply *replies[4] = {NULL};
    bool ok = false;
    memset(backlog, 0, sizeof *backlog);
    if (!fts_redis_pipeline(queue->queue, cmds, 4, replies, err)) {
        goto cleanup;
    }
    const redisReply *results = exec_results(queue->queue, replies, 4, err);
    if (!results || !fts_redis_reply_check(queue->queue, results->element[0], "XLEN", err)) {
        goto cleanup;
    }
    ok = fts_redis_backlog_parse(results->element[0], results->element[1], backlog, err);

cleanup:
    fts_redis_replies_free(replies, 4);
    if (!ok) {
        fts_error_prefix(err, "cannot measure the backlog of %s", queue->keys.stream);
    }
    return ok;
}

bool fts_redis_queue_trim(fts_redis_queue_t *queue, fts_trim_result_t *result, fts_error_t *err)
{
    fts_trim_result_t ignored;
    const char *argv[] = {"EVAL", TRIM_SCRIPT, "1", queue->keys.stream};
    bool ok = false;
    if (!result) {
        result = &ignored;
    }
    memset(result, 0, sizeof *result);
    redisReply *reply = fts_redis_command_argv(queue->queue, 4, argv, NULL, err);
    if (!reply) {
        goto cleanup;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER || !reply_is_text(reply->element[1]) ||
        reply->element[1]->len >= sizeof result->threshold) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                      "the trim script returned something other than {removed, threshold}");
        goto cleanup;
    }
    if (reply->element[0]->integer >= 0) {
        result->trimmed = true;
        result->removed = (uint64_t)reply->element[0]->integer;
        memcpy(result->threshold, reply->element[1]->str, reply->element[1]->len);
        result->threshold[reply->element[1]->len] = '\0';
        if (result->removed) {
            fts_log(FTS_LOG_DEBUG, LOG_COMPONENT,
                    "trimmed %" PRIu64 " acknowledged entries below %s from %s", result->removed,
                    result->threshold, queue->keys.stream);
        }
    }
    ok = true;

cleanup:
    if (reply) {
        freeReplyObject(reply);
    }
    if (!ok) {
        fts_error_prefix(err, "cannot trim %s", queue->keys.stream);
    }
    return ok;
}

bool fts_redis_queue_id_map_get(fts_redis_queue_t *queue, const char *const *source_ids,
                                size_t count, char **index_ids, fts_error_t *err)
{
    bool ok = false;
    for (size_t i = 0; i < count; i++) {
        index_ids[i] = NULL;
    }
    if (count == 0) {
        return true;
    }
    const char **argv = bson_malloc0((count + 2) * sizeof *argv);
    argv[0] = "HMGET";
    argv[1] = queue->keys.ids;
    for (size_t i = 0; i < count; i++) {
        argv[i + 2] = source_ids[i];
    }
    redisReply *reply = fts_redis_command_argv(queue->queue, (int)(count + 2), argv, NULL, err);
    bson_free(argv);
    if (!reply) {
        goto cleanup;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != count) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                      "HMGET did not return %zu values", count);
        goto cleanup;
    }
    for (size_t i = 0; i < count; i++) {
        const redisReply *value = reply->element[i];
        if (value->type == REDIS_REPLY_NIL) {
            continue;
        }
        if (value->type != REDIS_REPLY_STRING) {
            fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                          "HMGET returned something other than a string or nil");
            goto cleanup;
        }
        /* A value holding a NUL byte (a hand-edited map) comes back empty, which no index id
         * is: the caller refuses it instead of using a truncated id. */
        index_ids[i] = memchr(value->str, '\0', value->len) ? bson_strdup("")
                                                            : bson_strndup(value->str, value->len);
    }
    ok = true;

cleanup:
    if (reply) {
        freeReplyObject(reply);
    }
    if (!ok) {
        for (size_t i = 0; i < count; i++) {
            bson_free(index_ids[i]);
            index_ids[i] = NULL;
        }
        fts_error_prefix(err, "cannot read the id map %s", queue->keys.ids);
    }
    return ok;
}

/* ---- The queue port ---- */

static const char *port_stream_key(void *context)
{
    return fts_redis_queue_keys(context)->stream;
}

static bool port_ensure_group(void *context, fts_error_t *err)
{
    return fts_redis_queue_ensure_group(context, err);
}

static bool port_append(void *context, const fts_queue_batch_t *batch,
                        const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    return fts_redis_queue_append_batch(context, batch, checkpoint, err);
}

static bool port_id_map_get(void *context, const char *const *source_ids, size_t count,
                            char **index_ids, fts_error_t *err)
{
    return fts_redis_queue_id_map_get(context, source_ids, count, index_ids, err);
}

static bool port_checkpoint(void *context, const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    return fts_redis_queue_checkpoint(context, checkpoint, err);
}

static bool port_dead_letter(void *context, const fts_dead_letter_t *dead,
                             const fts_checkpoint_t *checkpoint, fts_error_t *err)
{
    return fts_redis_queue_dead_letter(context, dead, checkpoint, err);
}

/* The extract parent's read: the data-loss check first, then the position (README.md,
 * Reliability). */
static bool port_read_position(void *context, fts_position_t *position, fts_error_t *err)
{
    fts_redis_queue_t *queue = context;
    unsigned lost = 0;
    if (!fts_redis_queue_check_epoch(queue, &lost, err)) {
        return false;
    }
    /* The marker is new already: a loss is reported by the next read that succeeds. */
    queue->lost_pending |= lost;
    if (!fts_redis_queue_read_position(queue, position, err)) {
        return false;
    }
    position->data_lost = queue->lost_pending;
    queue->lost_pending = 0;
    return true;
}

static bool port_clear_position(void *context, bool resync, fts_error_t *err)
{
    return resync ? fts_redis_queue_clear_for_resync(context, err)
                  : fts_redis_queue_clear_position(context, err);
}

static bool port_backlog(void *context, fts_backlog_t *backlog, fts_error_t *err)
{
    return fts_redis_queue_backlog(context, backlog, err);
}

static bool port_trim(void *context, fts_trim_result_t *result, fts_error_t *err)
{
    return fts_redis_queue_trim(context, result, err);
}

static const fts_queue_ops_t queue_ops = {
    .stream_key = port_stream_key,
    .ensure_group = port_ensure_group,
    .append = port_append,
    .id_map_get = port_id_map_get,
    .checkpoint = port_checkpoint,
    .dead_letter = port_dead_letter,
    .read_position = port_read_position,
    .clear_position = port_clear_position,
    .backlog = port_backlog,
    .trim = port_trim,
};

fts_queue_port_t fts_redis_queue_port(fts_redis_queue_t *queue)
{
    return (fts_queue_port_t){.ops = &queue_ops, .context = queue};
}
