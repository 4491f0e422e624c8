/*
 * redis_admin.h - what the operator's commands (`ftsync status`, `ftsync dlq`) read from and do
 * to Redis, outside the pipeline's hot paths: the stream's consumer groups and their
 * consumers, the oldest pending entry, the extractor lease's holder, the server's version, the
 * entries of a stream (the dead letters) and moving a dead letter back into the action stream.
 *
 * Invariants kept here:
 *   2/5. a dead letter leaves the dead-letter stream only in the same Lua script that queued
 *        its action (XADD, then XDEL): it is never lost between the two, and a script that
 *        finds the dead letter already gone (replayed by someone else) queues nothing;
 *   4.   no MAXLEN on any XADD (the action is checked with fts_redis_action_argv_check).
 * Reads never change anything. Errors are FTS_ERROR_REDIS as redis_conn.h describes them.
 * Not thread-safe; the connections are borrowed.
 */
#ifndef FTS_REDIS_ADMIN_H
#define FTS_REDIS_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "action.h"
#include "error.h"
#include "redis_conn.h"
#include "redis_queue.h"

/* One consumer of a group (XINFO CONSUMERS). */
typedef struct {
    char *name;
    uint64_t pending;
    int64_t idle_ms;
} fts_redis_consumer_info_t;

/* One consumer group of the stream (XINFO GROUPS, XPENDING, XINFO CONSUMERS). */
typedef struct {
    char *name;
    uint64_t pending;
    char last_delivered_id[FTS_REDIS_STREAM_ID_SIZE];
    bool lag_known; /* Redis 7+: XINFO GROUPS gives lag; nil when it cannot tell */
    uint64_t lag;   /* entries not yet delivered to the group */
    char oldest_pending_id[FTS_REDIS_STREAM_ID_SIZE]; /* "" when nothing is pending */
    fts_redis_consumer_info_t *consumers;             /* owned */
    size_t consumer_count;
} fts_redis_group_info_t;

typedef struct {
    bool exists; /* false: no stream key (nothing queued yet) */
    uint64_t length;
    char first_id[FTS_REDIS_STREAM_ID_SIZE]; /* "" when empty */
    char last_id[FTS_REDIS_STREAM_ID_SIZE];  /* the last ID ever added ("" when unknown) */
    fts_redis_group_info_t *groups;          /* owned */
    size_t group_count;
} fts_redis_stream_info_t;

/* Reads the stream's length, groups, their consumers and the oldest pending entry of each.
 * On failure info is left empty. */
bool fts_redis_stream_info_read(fts_redis_t *redis, const char *stream_key,
                                fts_redis_stream_info_t *info, fts_error_t *err);
void fts_redis_stream_info_cleanup(fts_redis_stream_info_t *info);

/* The milliseconds part of a stream ID ("<ms>-<seq>"): when it was added; 0 if malformed. */
uint64_t fts_redis_stream_id_ms(const char *id);

/* The lease key's holder (*holder bson_strdup'ed, NULL when nobody holds it) and its remaining
 * time to live (PTTL: -1 no expiry, -2 no key). */
bool fts_redis_lease_read(fts_redis_t *redis, const char *lease_key, char **holder, int64_t *ttl_ms,
                          fts_error_t *err);

/* INFO server's redis_version into out. */
bool fts_redis_server_version(fts_redis_t *redis, char *out, size_t size, fts_error_t *err);

/* XLEN key (0 when the key does not exist). */
bool fts_redis_stream_length(fts_redis_t *redis, const char *key, uint64_t *length,
                             fts_error_t *err);

/* One stream entry: its ID and field/value items (owned, binary-safe with lens). */
typedef struct {
    char id[FTS_REDIS_STREAM_ID_SIZE];
    char **items;
    size_t *lens;
    size_t count; /* items: field, value, field, value... */
} fts_redis_entry_t;

typedef struct {
    fts_redis_entry_t *items;
    size_t count;
} fts_redis_entries_t;

/* XRANGE key start end COUNT count (reverse: XREVRANGE key end start): appends to entries. */
bool fts_redis_stream_range(fts_redis_t *redis, const char *key, const char *start, const char *end,
                            size_t count, bool reverse, fts_redis_entries_t *entries,
                            fts_error_t *err);
void fts_redis_entries_cleanup(fts_redis_entries_t *entries);

/* The value of field in entry (NUL-terminated; binary values are cut at a NUL), NULL if
 * absent. Borrowed from entry. */
const char *fts_redis_entry_field(const fts_redis_entry_t *entry, const char *field);

/* The outcome of moving one dead letter back into the stream. */
typedef enum {
    FTS_REDIS_REQUEUED = 1, /* the action was added and the dead letter removed */
    FTS_REDIS_REQUEUE_GONE  /* the dead letter was no longer there: nothing was added */
} fts_redis_requeue_t;

/* One Lua script on the queue server: if dead_key still holds dead_id, XADD the action (an
 * "XADD <stream_key> * field value..." argv, as fts_action_encode builds it) and then XDEL
 * dead_id from dead_key. *new_id (FTS_REDIS_STREAM_ID_SIZE bytes, may be NULL) gets the new
 * entry's ID. */
bool fts_redis_dead_requeue(fts_redis_t *redis, const char *dead_key, const char *dead_id,
                            const fts_action_argv_t *action, const char *stream_key,
                            fts_redis_requeue_t *outcome, char *new_id, fts_error_t *err);

/* XDEL key id; *removed says whether it was there. */
bool fts_redis_stream_delete(fts_redis_t *redis, const char *key, const char *id, bool *removed,
                             fts_error_t *err);

/* DEL key; *removed the number of entries the stream had. */
bool fts_redis_stream_drop(fts_redis_t *redis, const char *key, uint64_t *removed,
                           fts_error_t *err);

#endif
