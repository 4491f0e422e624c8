/*
 * action.h - one queued action (index, delete, drop) and its Redis stream entry format.
 *
 * The extract worker appends one stream entry per action; the loaders read them back. Entries
 * are flat field/value pairs, all text except the body, so that `redis-cli XRANGE` shows an
 * operator what is queued:
 *
 *   1) "op"       "index" | "delete" | "drop" | "sweep"
 *   2) "id"       the Elasticsearch document id (index, delete; absent on drop and sweep)
 *   3) "version"  decimal, 1 .. 2^63-1 (the external version, scheme 2: see fts_version_compute)
 *   4) "ns"       "db.collection" the change came from
 *   5) "ts"       "<seconds>.<increment>", the source cluster time
 *   6) "origin"   "change" (from the change stream) | "snapshot" (from the initial scan)
 *   7) "body"     the JSON document (index only; always last, it is the long one)
 *
 * Decoding is strict, because the loader dead-letters what it cannot trust instead of guessing
 * (invariants 5 and 6): an unknown op, a missing or repeated field, a version that is not a
 * positive decimal, a body on a delete or drop, no body on an index -> an error naming the
 * field. Fields this version does not know are ignored, so that a newer extractor can add one
 * without making older loaders dead-letter everything.
 */
#ifndef FTS_ACTION_H
#define FTS_ACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "error.h"

/* Elasticsearch refuses ids longer than 512 bytes. */
#define FTS_ACTION_ID_MAX 512

/* XADD, key, "*" and up to seven field/value pairs. */
#define FTS_ACTION_ARGV_MAX 17

typedef enum {
    FTS_ACTION_INDEX = 1, /* create or replace the document with body */
    FTS_ACTION_DELETE,    /* remove the document with id */
    FTS_ACTION_DROP,      /* remove every document that came from ns */
    FTS_ACTION_SWEEP      /* remove every document of ns whose version is below version: queued
                           * after a resync snapshot (history lost) taken at that version, it
                           * removes what was deleted while the history was lost, since every
                           * document still there was re-indexed at >= version */
} fts_action_op_t;

typedef enum {
    FTS_ACTION_FROM_CHANGE = 1, /* an event of the change stream */
    FTS_ACTION_FROM_SNAPSHOT    /* a document read by the initial snapshot */
} fts_action_origin_t;

typedef struct {
    fts_action_op_t op;
    fts_action_origin_t origin;
    uint64_t version;
    uint32_t ts_seconds; /* source cluster time */
    uint32_t ts_increment;
    char *ns; /* owned; "db.collection" */
    char *id; /* owned; NULL on drop. Not NUL-safe text: use id_len */
    size_t id_len;
    char *body; /* owned; NULL unless op is index */
    size_t body_len;
} fts_action_t;

/* The (pointer, length) pairs of an XRANGE/XREADGROUP entry's field/value list, so that the
 * core need not know hiredis. Borrowed. */
typedef struct {
    const char *data;
    size_t len;
} fts_bytes_t;

/* An XADD command ready for redisAppendCommandArgv. argv points into the action (id, ns,
 * body) and into this struct (version, ts): valid while both are alive and unchanged, and the
 * struct must not be copied. */
typedef struct {
    int argc;
    const char *argv[FTS_ACTION_ARGV_MAX];
    size_t argvlen[FTS_ACTION_ARGV_MAX];
    char version_text[24];
    char ts_text[24];
} fts_action_argv_t;

/* Strict unsigned decimal of len bytes: digits only, no sign, blanks or base prefix, at most
 * max. How every number in a stream entry or checkpoint hash is read back. */
bool fts_decimal_parse(const char *text, size_t len, uint64_t max, uint64_t *value);

/*
 * VERSION SCHEME 2 (invariant 3): the external version of an action is
 *
 *     (seconds - FTS_VERSION_EPOCH) << 32  |  increment << 13  |  position
 *      31 bits                              19 bits               13 bits
 *
 * where (seconds, increment) is the change's cluster time (a snapshot's: its start time) and
 * position is the change's place inside its multi-document transaction (0 outside one, and
 * for snapshot documents). All events of one transaction share one cluster time, so without
 * the position an insert and a delete of one document in one transaction had equal versions
 * and Elasticsearch refused the second with a 409. Versions so made grow with (cluster time,
 * position), the order in which MongoDB applied the changes, and a replay of the same event
 * gives the same version, because every input comes from the event itself.
 *
 * Limits (an action outside them is refused with a message naming the limit, so its event is
 * dead-lettered, never written with a version that could be wrong):
 *   - cluster seconds from 2020-01-01T00:00:00Z to 2088-01-19T03:14:07Z (2^31 - 1 seconds
 *     after the epoch): the largest version is 2^63 - 1, Elasticsearch's (and OpenSearch's)
 *     largest, a Java long;
 *   - increments up to 2^19 - 1 = 524,287 oplog entries in one second;
 *   - positions up to 2^13 - 1 = 8,191 operations in one transaction (MongoDB's own advice
 *     is to modify at most 1,000 documents per transaction: the "Performance Best Practices:
 *     Transactions and Read / Write Concerns" article on mongodb.com).
 * Scheme 1 (before) was seconds << 32 | increment, which overflowed in January 2038 and gave
 * every change of a transaction one version. The scheme is recorded in the index mapping's
 * _meta (es_index.h), and load refuses an index written with another one: scheme 2 versions
 * are far smaller than scheme 1's, so every write would be refused as a conflict.
 */
#define FTS_VERSION_SCHEME         2
#define FTS_VERSION_EPOCH          1577836800u /* 2020-01-01T00:00:00Z */
#define FTS_VERSION_INCREMENT_BITS 19
#define FTS_VERSION_POSITION_BITS  13
#define FTS_VERSION_SECONDS_MAX    (FTS_VERSION_EPOCH + 0x7FFFFFFFu) /* 2088-01-19T03:14:07Z */
#define FTS_VERSION_INCREMENT_MAX  ((1u << FTS_VERSION_INCREMENT_BITS) - 1)
#define FTS_VERSION_POSITION_MAX   ((1u << FTS_VERSION_POSITION_BITS) - 1)

/* The version of an action at cluster time (seconds, increment) and transaction position.
 * Fails (FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID) outside the limits above, or when the
 * result would be 0 (the epoch's first instant), which is no valid version. */
bool fts_version_compute(uint32_t seconds, uint32_t increment, uint32_t position, uint64_t *version,
                         fts_error_t *err);

/* fts_version_compute with position 0 (snapshot documents, sweeps); 0 when outside the
 * limits, which fts_action_validate refuses. */
uint64_t fts_version_from_timestamp(uint32_t seconds, uint32_t increment);

/* The position of a change event inside its transaction. An event without txnNumber is not
 * in a transaction: 0. An event with one takes the txnOpIndex of its resume token (_id._data):
 * MongoDB's tokens are KeyString-encoded {clusterTime, version, tokenType, txnOpIndex, ...}
 * (src/mongo/db/pipeline/resume_token.cpp), and ftsync-mongo-double's tokens start with the
 * same fields. The position comes from the event itself, not from counting the events seen,
 * because a worker resumed in the middle of a transaction must give the rest of it the same
 * positions as before (invariant 3). Fails with FTS_ERROR_CODE_UNSUPPORTED when the token
 * does not have that layout or its clusterTime differs from the event's: ftsync cannot then
 * order the transaction's changes, which only an operator can resolve. */
bool fts_version_txn_position(const bson_t *event, uint32_t *position, fts_error_t *err);

void fts_action_init(fts_action_t *action);
/* Frees what the action owns and leaves it as after fts_action_init. Accepts NULL. */
void fts_action_cleanup(fts_action_t *action);

/* "index", "delete", "drop" / "change", "snapshot"; "?" for anything else. */
const char *fts_action_op_name(fts_action_op_t op);
const char *fts_action_origin_name(fts_action_origin_t origin);

/* Checks the rules decoding enforces, so that nothing is queued that a loader would refuse:
 * known op and origin; id of 1..FTS_ACTION_ID_MAX bytes on index and delete, none on drop;
 * version 1..2^63-1; ns "db.collection"; a JSON object body on index and none otherwise.
 * Errors are FTS_ERROR_INPUT naming the field. */
bool fts_action_validate(const fts_action_t *action, fts_error_t *err);

/* Fills argv with XADD <stream_key> * op ... body (validating first). */
bool fts_action_encode(const fts_action_t *action, const char *stream_key, fts_action_argv_t *argv,
                       fts_error_t *err);

/* Parses an entry's field/value list (count items: field, value, field, value...) into a
 * fresh action, which the caller cleans up. On failure the action is left empty and err
 * (FTS_ERROR_INPUT) names the field that was wrong. */
bool fts_action_decode(const fts_bytes_t *items, size_t count, fts_action_t *action,
                       fts_error_t *err);

#endif
