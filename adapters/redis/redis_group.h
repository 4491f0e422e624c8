/*
 * redis_group.h - the loaders' side of the action stream: a Redis Streams consumer group used
 * without blocking, through hiredis's asynchronous API on a libevent loop.
 *
 * Two connections to the queue server: one only for XREADGROUP ... BLOCK (a blocked command
 * holds its connection, and acknowledgements must not wait behind it), one for everything
 * else. Each is opened from a redis:// URL (redis_url.h: AUTH, SELECT) and re-opened with
 * capped jittered backoff after it broke; a command issued while its connection is down fails
 * at once (from the loop) and the caller retries later. hiredis 0.14 has no command timeout
 * for asynchronous contexts, so a watchdog drops a connection whose oldest command waited
 * longer than command_timeout_ms (plus the BLOCK time on the reading connection); its
 * callbacks then fail.
 *
 * Promises (README.md, Architecture: invariants 2 and 5):
 *   - every call completes exactly once, from the loop, never from inside the call; a command
 *     whose reply was lost fails with FTS_ERROR_REDIS, and nothing is resent here;
 *   - settle is one command: a plain XACK, or with dead letters one Lua script that writes
 *     every dead letter and only then XACKs (redis.call stops the script at the first failed
 *     XADD, so an entry is never acknowledged without its dead letter, which MULTI/EXEC could
 *     not promise: Redis runs the rest of a transaction after a failed command). A failure
 *     means "maybe some dead letters, maybe the XACK" - the caller settles again later (XACK
 *     is idempotent; a dead letter may then appear twice, never zero times);
 *   - entries are reported with the delivery count Redis keeps (XPENDING), so the caller can
 *     dead-letter an entry delivered too often.
 * Callbacks may destroy nothing; destroy drops both connections and calls no callback.
 * Arguments the contract below forbids (a NULL, an ID that cannot be a stream ID) are
 * programming errors and are asserted; running out of memory aborts.
 */
#ifndef FTS_REDIS_GROUP_H
#define FTS_REDIS_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "load_ports.h"

/* libevent's loop, forward-declared so that cmd/ need not include libevent. */
struct event_base;

typedef struct fts_redis_group fts_redis_group_t;

typedef struct {
    const char *stream_key; /* ftsync:{pipeline}:stream */
    const char *dead_key;   /* ftsync:{pipeline}:dead */
    const char *group;      /* "loaders" */
    const char *consumer;   /* this process's consumer name */
    long connect_timeout_ms;
    long command_timeout_ms; /* per reply, besides any BLOCK time */
    long block_ms;           /* XREADGROUP BLOCK for ">" reads */
    uint64_t claim_min_idle_ms;
} fts_redis_group_options_t;

/* Entries read or claimed. On error entries is NULL and count 0. next_cursor: for claim, the
 * cursor to continue from ("0-0" when the scan wrapped round); for read, NULL. deleted: claim
 * only, how many pending entries Redis found deleted from the stream and dropped from the
 * pending list (Redis 7), for a warning. */
typedef void (*fts_redis_group_entries_fn)(void *arg, const fts_stream_entry_t *entries,
                                           size_t count, const char *next_cursor, uint64_t deleted,
                                           const fts_error_t *err);
typedef void (*fts_redis_group_done_fn)(void *arg, const fts_error_t *err);

/* Parses url, copies options, and starts connecting (both connections) on base. NULL with err
 * (FTS_ERROR_CONFIG) only for a bad URL or a missing or bad option; an unreachable server is
 * not an error here: commands fail until it answers. base and options must be set. */
fts_redis_group_t *fts_redis_group_new(struct event_base *base, const char *url,
                                       const fts_redis_group_options_t *options, fts_error_t *err);
void fts_redis_group_destroy(fts_redis_group_t *group);

/* XGROUP CREATE <stream> <group> 0 MKSTREAM; BUSYGROUP is success. */
void fts_redis_group_ensure(fts_redis_group_t *group, fts_redis_group_done_fn done, void *arg);

/* XREADGROUP GROUP <group> <consumer> COUNT count [BLOCK block_ms] STREAMS <stream> start_id.
 * start_id ">" blocks and reports deliveries = 1; another ID re-reads our own pending entries
 * after it, with their delivery counts (XPENDING), deleted ones with items NULL. A BLOCK that
 * ends with no entry completes with count 0. start_id is non-empty and shorter than
 * FTS_STREAM_ID_SIZE. */
void fts_redis_group_read(fts_redis_group_t *group, const char *start_id, size_t count,
                          fts_redis_group_entries_fn done, void *arg);

/* XAUTOCLAIM <stream> <group> <consumer> <claim_min_idle_ms> cursor COUNT count, then the
 * claimed entries' delivery counts (XPENDING). cursor as start_id above. */
void fts_redis_group_claim(fts_redis_group_t *group, const char *cursor, size_t count,
                           fts_redis_group_entries_fn done, void *arg);

/* One XCLAIM <stream> <group> <consumer> 0 <id> RETRYCOUNT <n> JUSTID per entry, pipelined:
 * sets each pending entry's delivery count to counts[i] (and resets its idle time). The loader
 * keeps that count as its own "died while sending it" counter (README.md, Load). An ID no
 * longer pending is left alone (no FORCE). */
void fts_redis_group_mark(fts_redis_group_t *group, const char *const *ids, const uint64_t *counts,
                          size_t count, fts_redis_group_done_fn done, void *arg);

/* XCLAIM <stream> <group> <consumer> 0 ids... JUSTID: resets the entries' idle time without
 * counting a delivery. */
void fts_redis_group_touch(fts_redis_group_t *group, const char *const *ids, size_t count,
                           fts_redis_group_done_fn done, void *arg);

/* For each dead letter XADD <dead> * <original fields...> entry_id <id> deliveries <n> reason
 * <reason> stage load consumer <consumer> failed_at <unix ms>, then XACK <stream> <group>
 * <ids...>, as one script (see above); with no dead letter, a plain XACK; with nothing at
 * all, done from the loop. Our fields come after the original ones, so a reader taking the
 * last occurrence of a name reads ours (redis_group_reply.h builds it). */
void fts_redis_group_settle(fts_redis_group_t *group, const fts_settlement_t *settlement,
                            fts_redis_group_done_fn done, void *arg);

/* The barrier of a drop or sweep entry (load_ports.h): XPENDING <stream> <group> - id COUNT 1.
 * clear: no entry before id is pending (id itself may be). */
typedef void (*fts_redis_group_barrier_fn)(void *arg, bool clear, const fts_error_t *err);
void fts_redis_group_barrier(fts_redis_group_t *group, const char *id,
                             fts_redis_group_barrier_fn done, void *arg);

/* Whether both connections are up right now (for readiness). */
bool fts_redis_group_connected(const fts_redis_group_t *group);

#endif
