/*
 * redis_queue.h - the Redis side of `ftsync extract`: the action stream, the dead-letter
 * stream, the saved position (resume token or snapshot progress), the loaders' backlog and
 * trimming.
 *
 * Keys of pipeline P (one hash tag, so one Redis Cluster slot, so one script or MULTI can span
 * them):
 *   ftsync:{P}:stream    stream of actions (fields: see core/action.h); consumer group
 *                        FTS_LOAD_GROUP reads it
 *   ftsync:{P}:dead      stream of dead letters: the original fields, then reason, stage,
 *                        failed_at (ms since the epoch)
 *   ftsync:{P}:token     hash: token (resume token, canonical extended JSON), kind (resume |
 *                        start_after), cluster_time ("<seconds>.<increment>"), updated_at (ms)
 *   ftsync:{P}:snapshot  hash, only while an initial snapshot runs: started_at
 *                        ("<seconds>.<increment>", noted before the scan), last_id (canonical
 *                        extended JSON of the last _id queued; absent before the first batch),
 *                        queued (documents queued so far), updated_at (ms)
 *   ftsync:{P}:lease     the extractor lease (redis_lease.h)
 *   ftsync:{P}:ids       hash, the id map (FTSYNC_ID_MAP): field = canonical extended JSON of
 *                        a source document's _id, value = its index id; written only by the
 *                        append script, with the entries it belongs to
 *   ftsync:{P}:owners    hash, the owners of the index ids (when the batch gives them: a plain
 *                        id format or an id field other than _id): field = index id, value =
 *                        canonical extended JSON of the _id of the document that holds it;
 *                        written only by the append script, which dead-letters an action
 *                        whose index id another document holds (README.md, Extract: index ids)
 * The streams, the id map and the owners live on the queue server, the position hashes and the
 * lease on the state server; they may be one server (the default).
 *
 * The saved position is exactly one of: nothing (start with a snapshot), a snapshot in
 * progress, or a token. Every checkpoint writes one of the two hashes and deletes the other in
 * the same step (the append script, on the state server with no entries when it is another
 * server), so the position moves from "snapshot at T after _id X" to "resume after token" in
 * one step: the first change-stream checkpoint is also the end of the snapshot. Deleting the
 * snapshot hash as a step of its own would leave, before the token exists, a moment with no
 * position (a crash then re-snapshots: safe, but the whole collection again), or, after it, a
 * moment with two.
 *
 * Invariants kept here:
 *   1. a checkpoint is written only after every stream entry given with it is in the stream:
 *      by the same Lua script, after its last XADD, when stream and state share a server
 *      (redis.call stops the script at the first failing command, so a failed XADD leaves the
 *      checkpoint untouched), otherwise only after the script on the queue server returned. A
 *      failed append leaves the checkpoint as it was, except when the connection broke after
 *      the server had run the checkpoint (the script or the second step), whose reply was
 *      lost: then it may have advanced to this batch, which is then queued too. Either way the
 *      caller re-sends from its last checkpoint. The id map changes of a batch are written by
 *      the same script, after its XADDs and before the checkpoint, so on one server the map,
 *      the stream and the position never disagree;
 *   3. duplicates are what a re-sent batch produces, and they are harmless (external
 *      versions), so nothing here ever tries to "undo" a partly written batch;
 *   4. no MAXLEN/MINID on XADD, ever (every XADD is built here or checked to be "XADD <stream>
 *      * field value..."); trimming removes only entries every consumer group acknowledged;
 *   5. every failure comes back as an error naming the server and the command; nothing is
 *      dropped silently;
 *   6. a saved position that does not parse is an error naming the key and the field, never
 *      a guess (and never a silent fresh start).
 *
 * Durability note for separate servers: the token is only as durable as the entries it
 * follows. With `appendfsync everysec` a crash of the queue *machine* can lose the last second
 * of entries while the state server kept a token past them; run the queue server with
 * `appendfsync always` when it is a separate server (on one server, stream and token share one
 * AOF, in order, so they are lost or kept together).
 *
 * Not thread-safe; the queue borrows its connections.
 */
#ifndef FTS_REDIS_QUEUE_H
#define FTS_REDIS_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "action.h"
#include "error.h"
#include "extract_ports.h"
#include "redis_conn.h"

/* The consumer group of `ftsync load`. Created (from the stream's first entry) by whoever
 * comes first, extract or load, so that entries are kept for the loaders from the first one. */
#define FTS_LOAD_GROUP "loaders"

/* The longest pipeline name accepted; its characters are those of core/config.c's names. */
#define FTS_REDIS_PIPELINE_NAME_MAX 100

/* Room for "ftsync:{<name>}:snapshot" and a NUL. */
#define FTS_REDIS_KEY_SIZE (FTS_REDIS_PIPELINE_NAME_MAX + 24)

/* Room for a stream entry ID, "<ms>-<seq>" (two 20-digit numbers, a dash, a NUL). */
#define FTS_REDIS_STREAM_ID_SIZE 48

/* The keys of one pipeline. */
typedef struct {
    char stream[FTS_REDIS_KEY_SIZE];
    char dead[FTS_REDIS_KEY_SIZE];
    char token[FTS_REDIS_KEY_SIZE];
    char snapshot[FTS_REDIS_KEY_SIZE];
    char lease[FTS_REDIS_KEY_SIZE];
    char ids[FTS_REDIS_KEY_SIZE];
    char epoch[FTS_REDIS_KEY_SIZE]; /* on the state server and on the queue server */
    char owners[FTS_REDIS_KEY_SIZE];
} fts_redis_keys_t;

/* Room for an epoch marker's value: 24 hex digits of an ObjectId and a NUL. */
#define FTS_REDIS_EPOCH_SIZE 25

typedef struct fts_redis_queue fts_redis_queue_t;

/* Creates the queue of pipeline over the state and queue connections (borrowed; they must
 * outlive it; queue NULL or equal to state: one connection for both). Whether both reach the
 * same database is decided once, by fts_redis_same_server(). No command is sent. */
fts_redis_queue_t *fts_redis_queue_new(fts_redis_t *state, fts_redis_t *queue, const char *pipeline,
                                       fts_error_t *err);

void fts_redis_queue_destroy(fts_redis_queue_t *queue);

/* The queue port over queue (borrowed: it must outlive the port). Its operations are the
 * functions below; the stream key is fts_redis_queue_keys()->stream. */
fts_queue_port_t fts_redis_queue_port(fts_redis_queue_t *queue);

/* Borrowed until destroy. The stream key is what fts_action_encode() must be given. */
const fts_redis_keys_t *fts_redis_queue_keys(const fts_redis_queue_t *queue);

/* True when one script covers entries and checkpoint (one server). */
bool fts_redis_queue_is_atomic(const fts_redis_queue_t *queue);

/* XGROUP CREATE <stream> loaders 0 MKSTREAM; an existing group (BUSYGROUP) is fine. Call before
 * the first append, so that every entry is kept for the loaders. Fails (WRONGTYPE) when the
 * stream key holds something else. */
bool fts_redis_queue_ensure_group(fts_redis_queue_t *queue, fts_error_t *err);

/* The data-loss check of the extract (README.md, Reliability). The epoch marker
 * ftsync:{P}:epoch holds a random id, the same on the state and the queue server; every write
 * that saves a checkpoint first checks, in the same script, that the marker still holds the id
 * this process knows (learnt from the queue server at its first such write; a marker already
 * gone then is a loss too) and refuses with err->code FTS_QUEUE_DATA_LOST otherwise. So after
 * FLUSHALL, or a restart without persistence, no remembered position is written back.
 *
 * This reads the marker on both servers and compares it with the one this queue knows:
 * *lost gets FTS_DATA_LOST_STATE / _STREAM for each server whose marker is gone or changed
 * (one server: _STREAM); with none known yet, a marker on one server only is a loss of the
 * other. Unless both hold the known (or, none known, the same) id, a new id is written to both
 * and remembered: writers that knew the old one are refused from then on. Called by the
 * extract parent before it reads the position (port read_position). */
bool fts_redis_queue_check_epoch(fts_redis_queue_t *queue, unsigned *lost, fts_error_t *err);

/* Appends a batch: its actions (each "XADD <stream> * field value...", as fts_action_encode
 * builds them with fts_redis_queue_keys()->stream; with batch->owners, each checked against
 * and then claiming or releasing ftsync:{P}:owners, or dead-lettered with stage extract when
 * another document holds its index id: see fts_queue_batch_t), then its dead letters (as
 * fts_redis_queue_dead_letter writes them), then its id map changes (HSET/HDEL of
 * ftsync:{P}:ids), and then, if checkpoint is not NULL, saves it:
 *   - one server: one EVAL of a Lua script doing all of it in that order (see APPEND_SCRIPT in
 *     redis_queue.c: a failing XADD ends it before the map and the checkpoint);
 *   - two servers: the script without the checkpoint on the queue server; only when it
 *     returned, the script with the checkpoint alone on the state server.
 * A checkpoint is refused (FTS_QUEUE_DATA_LOST, nothing written) when the epoch marker is not
 * the one this queue knows (fts_redis_queue_check_epoch).
 * On failure returns false and the checkpoint is left as it was (see invariant 1 above); the
 * caller re-sends the batch from its last checkpoint. Actions, dead letters and map changes are
 * checked before anything is sent (key, "*", an even number of field/value items; non-empty
 * ids): a malformed one fails the whole call with nothing sent. An empty batch with a
 * checkpoint is fts_redis_queue_checkpoint(). */
bool fts_redis_queue_append_batch(fts_redis_queue_t *queue, const fts_queue_batch_t *batch,
                                  const fts_checkpoint_t *checkpoint, fts_error_t *err);

/* fts_redis_queue_append_batch of count actions alone. */
bool fts_redis_queue_append(fts_redis_queue_t *queue, const fts_action_argv_t *actions,
                            size_t count, const fts_checkpoint_t *checkpoint, fts_error_t *err);

/* HMGET of the id map: index_ids[i] (bson_free it) is the index id saved for source_ids[i],
 * NULL when the map has no entry for it, "" when the entry holds a NUL byte (no index id does;
 * the caller refuses it). On failure every index_ids[i] is NULL. */
bool fts_redis_queue_id_map_get(fts_redis_queue_t *queue, const char *const *source_ids,
                                size_t count, char **index_ids, fts_error_t *err);

/* Saves a position with no entries: a post-batch resume token that advanced while no event
 * arrived, the start of a snapshot. The append script with no entries on the state server
 * (it checks the epoch marker). The caller guarantees invariant 1 by ordering: it calls this only
 * once every action before the position is queued (an append returned true for it), which in a
 * single-threaded extract is every append made so far. */
bool fts_redis_queue_checkpoint(fts_redis_queue_t *queue, const fts_checkpoint_t *checkpoint,
                                fts_error_t *err);

/* XADD to the dead-letter stream (the original fields, then reason, stage, failed_at) and
 * then, if checkpoint is not NULL, the checkpoint past it, in one script as in append. The same
 * ordering promise as fts_redis_queue_checkpoint: every action before the dead event is
 * already queued. The extra fields come last, so a reader that takes the last occurrence of a
 * field name reads ours even when the original entry had a field of the same name. */
bool fts_redis_queue_dead_letter(fts_redis_queue_t *queue, const fts_dead_letter_t *dead,
                                 const fts_checkpoint_t *checkpoint, fts_error_t *err);

/* Reads the token and snapshot hashes in one MULTI. Neither: has_token and has_snapshot false.
 * A hash that is there but malformed (a missing or unparsable field, an unknown kind) is an
 * error naming key and field, with position left empty. Fields this version does not know are
 * ignored. Both hashes can only exist together if someone wrote them by hand; the caller then
 * gets both. */
bool fts_redis_queue_read_position(fts_redis_queue_t *queue, fts_position_t *position,
                                   fts_error_t *err);

/* Deletes token and snapshot hashes in one command (`reset-token --clear`): the next start
 * snapshots the collection again. The owners of the index ids go too (in the same command on
 * one server, just before on two): the snapshot claims them again. */
bool fts_redis_queue_clear_position(fts_redis_queue_t *queue, fts_error_t *err);

/* Deletes token and snapshot hashes and writes the snapshot hash's field sweep=1, in one
 * MULTI (the extract's resync): the next snapshot, even one started by a new process after a
 * crash, ends with a sweep (fts_position_t.sweep). The owners of the index ids are deleted as
 * in fts_redis_queue_clear_position. */
bool fts_redis_queue_clear_for_resync(fts_redis_queue_t *queue, fts_error_t *err);

/* The loaders' backlog, from one MULTI of XLEN and XINFO GROUPS. No stream: all zero. With
 * the group: pending + lag (Redis 7 reports lag); when Redis cannot tell the lag (nil after
 * an XDEL past the group's last-delivered entry, or a server before 7.0) entries is XLEN, a
 * safe upper bound because trimming keeps every unacknowledged entry in the stream. */
bool fts_redis_queue_backlog(fts_redis_queue_t *queue, fts_backlog_t *backlog, fts_error_t *err);

/* Removes the entries every consumer group acknowledged: XTRIM MINID <threshold>, threshold =
 * the smallest, over all groups, of (the group's smallest pending ID if it has pending
 * entries, else its last-delivered ID + 1). No group: nothing is removed. Runs as one Lua
 * script, so no other command interleaves (see redis_queue.c). result may be NULL. */
bool fts_redis_queue_trim(fts_redis_queue_t *queue, fts_trim_result_t *result, fts_error_t *err);

/* ---- Pure parts, exposed for unit tests and for the other Redis code. ---- */

/* Fills keys for pipeline, which must be 1..FTS_REDIS_PIPELINE_NAME_MAX characters of
 * [A-Za-z0-9_.-] (no braces: it is the hash tag). FTS_ERROR_CONFIG otherwise. */
bool fts_redis_keys_init(fts_redis_keys_t *keys, const char *pipeline, fts_error_t *err);

/* Checks a checkpoint before anything is sent: known kinds, a non-empty token, a snapshot
 * start time with seconds > 0, no empty last_id. FTS_ERROR_INTERNAL naming the field. */
bool fts_redis_checkpoint_validate(const fts_checkpoint_t *checkpoint, fts_error_t *err);

/* "<seconds>.<increment>" into text (at least 24 bytes). */
void fts_redis_cluster_time_format(uint32_t seconds, uint32_t increment, char *text, size_t size);

/* Parses "<seconds>.<increment>" (two decimal uint32 without sign or spaces). */
bool fts_redis_cluster_time_parse(const char *text, uint32_t *seconds, uint32_t *increment);

/* Reads the replies of HGETALL token and HGETALL snapshot (either may be an empty array) into
 * position, as fts_redis_queue_read_position does. keys names the hashes in messages. */
bool fts_redis_position_parse(const fts_redis_keys_t *keys, const redisReply *token_hash,
                              const redisReply *snapshot_hash, fts_position_t *position,
                              fts_error_t *err);

/* Reads the replies of XLEN and XINFO GROUPS (an array of per-group field/value arrays; nil
 * lag as a nil reply) into backlog, as fts_redis_queue_backlog does. */
bool fts_redis_backlog_parse(const redisReply *xlen, const redisReply *groups,
                             fts_backlog_t *backlog, fts_error_t *err);

/* Checks that an action's argv is "XADD <stream_key> * field value [field value...]". */
bool fts_redis_action_argv_check(const fts_action_argv_t *action, const char *stream_key,
                                 fts_error_t *err);

#endif
