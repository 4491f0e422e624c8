/*
 * eventlog.h - the double's oplog: the cluster clock, a bounded ring buffer of change events,
 * and the resume tokens that point into it.
 *
 * Every write gets a cluster time (a BSON Timestamp) that is strictly greater than the previous
 * one: seconds are the wall clock's, the increment counts writes within that second. The log
 * keeps the most recent events up to a maximum count and/or byte size; what falls off is gone,
 * exactly like oplog truncation, and a change stream that needs it fails with
 * ChangeStreamHistoryLost (286).
 *
 * The clock can start elsewhere than now (--clock-start, fts_double_eventlog_set_clock): it
 * then runs at the wall clock's pace from that second, so tests can see cluster times past
 * January 2038 (BSON timestamps' seconds are unsigned 32-bit: up to 2106).
 *
 * The events of one committed transaction (txn.h) share the commit's cluster time, as on mongod
 * ("all events of a transaction have the same clusterTime"), and carry the session's lsid, the
 * txnNumber and their index in the transaction (txnOpIndex), which orders their tokens.
 *
 * Resume tokens are {_data: "<hex>"}. They start like mongod's, whose _data is the KeyString
 * encoding of {clusterTime, version, tokenType, txnOpIndex, fromInvalidate, uuid, ...}
 * (src/mongo/db/pipeline/resume_token.cpp), so that what ftsync reads from a token (the
 * txnOpIndex of a transaction's event) is where a real server puts it; the double's own fields
 * follow:
 *
 *     "82" | seconds (8) | increment (8)      KeyString Timestamp
 *     "2B02"                                  version 1
 *     "2C0100"                                tokenType 128 (an event), on every token here
 *     txnOpIndex                              KeyString integer: "29" for 0, else 2B..32 and
 *                                             the index << 1 in 1..8 bytes
 *     kind (2) | sequence (16) | run (8)      the double's own
 *
 * Comparing two tokens as strings compares their positions in the log (KeyString sorts like
 * the values it encodes). kind 01 is an event, 02 the invalidate that follows the event with
 * that sequence, 03 a high-water mark ("everything up to this cluster time was seen"; its
 * sequence is the next event's, its txnOpIndex 2^32 - 1 so that it sorts after every event of
 * a transaction committed at that time). At one cluster time, event < invalidate < high-water
 * mark.
 * "run" identifies this process: a token from an earlier run of the double points into a
 * history this run never had, so it is reported as lost (286).
 */
#ifndef FTS_DOUBLE_EVENTLOG_H
#define FTS_DOUBLE_EVENTLOG_H

#include "errors.h"
#include "store.h"

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t t; /* seconds */
    uint32_t i; /* increment */
} fts_double_ts_t;

static inline int fts_double_ts_compare(fts_double_ts_t a, fts_double_ts_t b)
{
    if (a.t != b.t) {
        return a.t < b.t ? -1 : 1;
    }
    return a.i < b.i ? -1 : a.i > b.i;
}

typedef enum {
    FTS_DOUBLE_OP_INSERT,
    FTS_DOUBLE_OP_UPDATE,
    FTS_DOUBLE_OP_REPLACE,
    FTS_DOUBLE_OP_DELETE,
    FTS_DOUBLE_OP_DROP,
    FTS_DOUBLE_OP_RENAME,
    FTS_DOUBLE_OP_DROP_DATABASE,
    FTS_DOUBLE_OP_CREATE
} fts_double_op_t;

const char *fts_double_op_name(fts_double_op_t op);

/* One logged change. Owns its references and its update description. */
typedef struct {
    uint64_t seq;
    fts_double_ts_t ts;
    int64_t wall_ms;
    fts_double_op_t op;
    bool images;               /* the collection recorded pre- and post-images */
    const fts_double_ns_t *ns; /* collection (or database for dropDatabase) */
    const fts_double_ns_t *to; /* rename target */
    fts_double_doc_t *pre;     /* document before: update, replace, delete */
    fts_double_doc_t *post;    /* document after: insert, update, replace */
    bson_t *update_desc;       /* update only: {updatedFields, removedFields, ...} */
    uint8_t uuid[16];          /* collection UUID */
    bool has_drop_target;      /* rename only: an existing target was dropped (dropTarget) */
    uint8_t drop_target[16];   /* ... and this was its UUID */
    size_t bytes;              /* what the event counts against --history-bytes */
    bool in_txn;               /* part of a committed multi-document transaction: */
    uint8_t lsid[16];          /*   its session's id (a UUID) */
    int64_t txn_number;        /*   its txnNumber */
    uint32_t txn_op_index;     /*   its place in the transaction, from 0 */
} fts_double_event_t;

typedef struct {
    fts_double_event_t *ring;
    size_t cap;  /* allocated slots (grows up to max_events) */
    size_t head; /* slot of the oldest event */
    size_t count;
    uint64_t first_seq; /* sequence of the oldest retained event (== next_seq when empty) */
    uint64_t next_seq;
    size_t max_events; /* 0: unlimited */
    size_t max_bytes;  /* 0: unlimited */
    size_t bytes;
    uint64_t evicted;      /* events that fell off */
    fts_double_ts_t last;  /* the latest cluster time handed out */
    fts_double_ts_t floor; /* the earliest cluster time whose events are all retained */
    uint32_t run;
    int64_t clock_offset; /* seconds added to the wall clock (--clock-start) */
} fts_double_eventlog_t;

void fts_double_eventlog_init(fts_double_eventlog_t *log, size_t max_events, size_t max_bytes);
void fts_double_eventlog_destroy(fts_double_eventlog_t *log);

/* Makes the cluster clock read `seconds` now and run on from there (call before any write).
 * False if seconds is 0 or does not fit 32 bits. */
bool fts_double_eventlog_set_clock(fts_double_eventlog_t *log, int64_t seconds);
/* The clock's seconds now (wall clock plus the offset). */
uint32_t fts_double_eventlog_seconds(const fts_double_eventlog_t *log);
/* Takes the next cluster time for a write, as every logged event does; a transaction's commit
 * takes one and gives it to all its events (fts_double_eventlog_append with in_txn). */
fts_double_ts_t fts_double_eventlog_tick(fts_double_eventlog_t *log);

/* The cluster time now (what replies carry as operationTime and $clusterTime). */
fts_double_ts_t fts_double_eventlog_now(fts_double_eventlog_t *log);
/* Marks "history starts here" (after seeding): nothing earlier can be resumed from. */
void fts_double_eventlog_mark_start(fts_double_eventlog_t *log);

/* Appends an event, taking over its references; fills seq, ts (an in_txn event keeps the ts
 * its commit gave it, which must be the latest tick) and wall time, evicts what the bounds push
 * out. Returns the stored event. */
const fts_double_event_t *fts_double_eventlog_append(fts_double_eventlog_t *log,
                                                     fts_double_event_t *event);

/* The event with this sequence if retained, else NULL. */
const fts_double_event_t *fts_double_eventlog_get(const fts_double_eventlog_t *log, uint64_t seq);
/* The sequence of the first retained event with cluster time >= ts (next_seq if none). */
uint64_t fts_double_eventlog_seek(const fts_double_eventlog_t *log, fts_double_ts_t ts);

typedef enum {
    FTS_DOUBLE_TOKEN_EVENT = 1,
    FTS_DOUBLE_TOKEN_INVALIDATE = 2,
    FTS_DOUBLE_TOKEN_HWM = 3
} fts_double_token_kind_t;

typedef struct {
    fts_double_ts_t ts;
    fts_double_token_kind_t kind;
    uint64_t seq;
    uint32_t run;
    uint32_t txn_op_index;
} fts_double_token_t;

/* The longest token: 56 characters with a one-byte txnOpIndex, up to 72 with eight bytes. */
#define FTS_DOUBLE_TOKEN_HEX_MAX 80

void fts_double_token_for_event(const fts_double_eventlog_t *log, const fts_double_event_t *ev,
                                fts_double_token_kind_t kind, fts_double_token_t *out);
/* A high-water-mark token for the cluster time now. */
void fts_double_token_hwm(fts_double_eventlog_t *log, fts_double_token_t *out);
/* Appends {_data: "<hex>"} under key. */
void fts_double_token_append(bson_t *dst, const char *key, const fts_double_token_t *token);
/* The length of the token at the start of the hex string s (len characters) as its own layout
 * says (the txnOpIndex field's width varies), or 0 when s does not start like one: what follows
 * it (a fragment's digits, changestream.c) is not part of it. */
size_t fts_double_token_hex_len(const char *s, size_t len);
/* Parses a resume token document ({_data: "<hex>"}). Fails as mongod would: _data missing or
 * not a string 40647, empty 40649, not hex 9 (FailedToParse), hex that does not decode to a
 * token 50811 (here: hex that is not a token of the double's layout). out->txn_op_index is
 * informative: the sequence alone says where the token points. */
bool fts_double_token_parse(const bson_value_t *value, fts_double_token_t *out,
                            fts_double_error_t *err);

#endif
