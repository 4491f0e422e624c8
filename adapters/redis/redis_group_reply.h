/*
 * redis_group_reply.h - the pure parts of the loaders' consumer group (redis_group.h): reading
 * the replies of XREADGROUP, XAUTOCLAIM and extended XPENDING into stream entries, and building
 * the one command of a settlement (a plain XACK, or the script that writes the dead letters and
 * only then acknowledges). No I/O and no connection state: redis_group.c feeds these the
 * replies hiredis hands it, and test/unit/test_redis_group_reply.c feeds them RESP text through
 * hiredis's own reader.
 *
 * Invariants (README.md, Architecture):
 *   2. the settlement script reaches its XACK only after every dead letter of the settlement
 *      was written: redis.call stops the script at the first failed XADD;
 *   6. a malformed reply is an error (FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL) whose message
 *      says what was wrong with it, and yields no entries; it never crashes the caller.
 * Allocation failure aborts (bson_malloc), so building never fails.
 */
#ifndef FTS_REDIS_GROUP_REPLY_H
#define FTS_REDIS_GROUP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "error.h"
#include "load_ports.h"

/* One command with owned copies of its arguments, as redisAsyncCommandArgv takes them. Start
 * from a zeroed value; fts_redis_argv_cleanup frees and zeroes it again. */
typedef struct {
    int argc;
    int cap;
    char **argv; /* each NUL-terminated (binary-safe: argvlen counts the bytes) */
    size_t *argvlen;
} fts_redis_argv_t;

void fts_redis_argv_push(fts_redis_argv_t *command, const char *data, size_t len);
void fts_redis_argv_push_str(fts_redis_argv_t *command, const char *text);
void fts_redis_argv_push_u64(fts_redis_argv_t *command, uint64_t value);
/* Pushes a NULL-terminated list of C strings. */
void fts_redis_argv_push_all(fts_redis_argv_t *command, const char *const *words);
void fts_redis_argv_cleanup(fts_redis_argv_t *command);

/* Entries read from a reply, owned: each entry's items and their bytes are one block. */
typedef struct {
    fts_stream_entry_t *entries; /* NULL when count is 0 */
    size_t count;
    uint64_t deleted; /* pending entries Redis reported deleted from the stream (claim; a
                       * Redis 6.2 nil in place of an entry counts too) */
    char next_cursor[FTS_STREAM_ID_SIZE]; /* claim: where the next claim starts; read: "" */
} fts_redis_group_entries_t;

/* Frees what entries owns and zeroes it; entries NULL is allowed. */
void fts_redis_group_entries_cleanup(fts_redis_group_entries_t *entries);

/* An XREADGROUP reply (RESP2): nil when BLOCK ran out with nothing, else [[stream, entries]],
 * each entry [id, [field, value, ...]] or [id, nil] when it was deleted while pending (then
 * items is NULL). history: the read was of our own pending entries (start ID other than ">"):
 * deliveries are left 0 for an XPENDING lookup to fill; a ">" read delivered each entry once.
 * out is filled from zero; on error it is left empty and err says what was malformed. */
bool fts_redis_group_parse_read(const redisReply *reply, bool history,
                                fts_redis_group_entries_t *out, fts_error_t *err);

/* An XAUTOCLAIM reply: [next cursor, entries, deleted IDs] (Redis 7) or [next cursor, entries]
 * (6.2). Deliveries are left 0. As fts_redis_group_parse_read for out and err. */
bool fts_redis_group_parse_claim(const redisReply *reply, fts_redis_group_entries_t *out,
                                 fts_error_t *err);

/* An extended XPENDING reply, [[id, consumer, idle ms, deliveries], ...]: sets the deliveries
 * of the entries (of entries[0..count)) it lists, matched by ID; an entry it does not list (one
 * another consumer claimed meanwhile) keeps its deliveries. On error err says what was
 * malformed, and rows before the malformed one may have been applied. */
bool fts_redis_group_parse_pending(const redisReply *reply, fts_stream_entry_t *entries,
                                   size_t count, fts_error_t *err);

/* The reply to the barrier query XPENDING <stream> <group> - id COUNT 1 (load_ports.h): *clear
 * is true when no entry up to id is pending, or the smallest pending one is id itself; false
 * when an entry before id is still pending. On error err says what was malformed. */
bool fts_redis_group_parse_barrier(const redisReply *reply, const char *id, bool *clear,
                                   fts_error_t *err);

/* The keys and names a consumer group works with (redis_group.h's options), borrowed. */
typedef struct {
    const char *stream_key;
    const char *dead_key;
    const char *group;
    const char *consumer;
} fts_redis_group_names_t;

/* Builds the one command of a non-empty settlement into command (zeroed on entry): with no
 * dead letter, XACK <stream> <group> <ids...>; otherwise the settlement script, EVAL <script> 2
 * <dead> <stream> <group> <dead count>, then per dead letter its item count and items (the
 * entry's own fields, then ours: entry_id, deliveries, reason, stage "load", consumer and
 * failed_at, which is failed_at_ms), then the IDs to acknowledge.
 * Returns whether it built the scripted form. Every dead letter must have its entry and every
 * ack ID must be set (asserted). */
bool fts_redis_group_build_settle(fts_redis_argv_t *command, const fts_redis_group_names_t *names,
                                  const fts_settlement_t *settlement, uint64_t failed_at_ms);

#endif
