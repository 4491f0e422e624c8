/*
 * action.h - one queued action (index, delete, drop) and its Redis stream entry format.
 *
 * The extract worker appends one stream entry per action; the loaders read them back. Entries
 * are flat field/value pairs, all text except the body, so that `redis-cli XRANGE` shows an
 * operator what is queued:
 *
 *   1) "op"       "index" | "delete" | "drop" | "sweep"
 *   2) "id"       the Elasticsearch document id (index, delete; absent on drop and sweep)
 *   3) "version"  decimal, 1 .. 2^63-1 (the external version, see fts_version_from_timestamp)
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

/* The external version of a change at cluster time (seconds, increment): seconds << 32 |
 * increment, so versions grow with the oplog order. Elasticsearch versions are signed 64-bit,
 * so this is valid until seconds reach 2^31, in January 2038; fts_action_validate refuses
 * versions past that instead of letting them wrap negative. */
/* Strict unsigned decimal of len bytes: digits only, no sign, blanks or base prefix, at most
 * max. How every number in a stream entry or checkpoint hash is read back. */
bool fts_decimal_parse(const char *text, size_t len, uint64_t max, uint64_t *value);

uint64_t fts_version_from_timestamp(uint32_t seconds, uint32_t increment);

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
