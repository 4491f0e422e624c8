/*
 * worker_message.h - the messages the extract parent sends its transform worker, and their
 * one encoding: each message is one BSON document, sent as one frame (frame.h).
 *
 * Messages go one way, parent -> worker; the worker never answers (the parent learns what
 * happened from the saved position and the worker's exit status). Field "t" names the kind:
 *   "event"  ev: the change event (document); tok: the resume token after it (canonical
 *            extended JSON, not empty); kind: "resume" | "start_after"; careful: bool
 *   "snap"   doc: a snapshot document; ns: "db.collection"; started: the snapshot's cluster
 *            time (BSON timestamp); last_id: canonical extended JSON of doc's _id; queued:
 *            documents of this snapshot queued once this one is (int64); careful: bool
 *   "token"  tok, kind as above; ct: the cluster time of the last change covered (timestamp):
 *            the stream moved without an event (post-batch token while idle)
 *   "sweep"  ns; started: remove every document of ns older than this snapshot (history lost)
 * Every message but "sweep" carries the position *after* it, so the worker checkpoints exactly
 * what it queued (invariant 1, README.md, Architecture). "careful" (absent: false) asks the
 * worker to append and checkpoint that message on its own, so that after a crash the parent
 * learns precisely which event the worker dies on (poison documents).
 *
 * Both sides are the same program, so a message that does not decode is a broken promise
 * (FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL) naming the kind and the field: the worker ends
 * and is restarted from the saved position, never guessing at what was meant (invariant 6).
 */
#ifndef FTS_WORKER_MESSAGE_H
#define FTS_WORKER_MESSAGE_H

#include <stdbool.h>
#include <stdint.h>

#include <bson/bson.h>

#include "error.h"
#include "extract_ports.h"

typedef enum {
    FTS_WORKER_MESSAGE_EVENT = 1, /* "event" */
    FTS_WORKER_MESSAGE_SNAPSHOT,  /* "snap" */
    FTS_WORKER_MESSAGE_TOKEN,     /* "token" */
    FTS_WORKER_MESSAGE_SWEEP      /* "sweep" */
} fts_worker_message_kind_t;

/* One message. Which fields mean something depends on kind (the others are ignored by encode
 * and zero after decode). Everything is borrowed: from the caller for encode, from the frame
 * for decode (valid while the frame is). A decoded message is not to be copied: its payload
 * points into the struct itself. */
typedef struct {
    fts_worker_message_kind_t kind;
    const bson_t *payload;        /* EVENT: the change event; SNAPSHOT: the document */
    const char *token;            /* EVENT, TOKEN: the resume token after it */
    fts_token_kind_t token_kind;  /* EVENT, TOKEN */
    fts_timestamp_t cluster_time; /* TOKEN: of the last change covered */
    const char *ns;               /* SNAPSHOT, SWEEP: "db.collection" */
    fts_timestamp_t started;      /* SNAPSHOT, SWEEP: the snapshot's cluster time */
    const char *last_id;          /* SNAPSHOT: canonical extended JSON of the document's _id */
    uint64_t queued;              /* SNAPSHOT: documents queued once this one is */
    bool careful;                 /* EVENT, SNAPSHOT */
    bson_t payload_view;          /* decode's storage behind payload; not for callers */
} fts_worker_message_t;

/* The kind's name on the wire ("event", "snap", "token", "sweep"). */
const char *fts_worker_message_kind_name(fts_worker_message_kind_t kind);

/* Appends message's fields to frame (initialised and empty, e.g. BSON_INITIALIZER; the caller
 * destroys it). The fields the kind needs must be set: payload for EVENT and SNAPSHOT, a
 * non-empty token for EVENT and TOKEN, ns for SNAPSHOT and SWEEP, last_id for SNAPSHOT
 * (asserted). */
void fts_worker_message_encode(const fts_worker_message_t *message, bson_t *frame);

/* Reads frame into *out, checking every field the kind needs. False with err (naming the kind
 * and the missing or mistyped field) when frame is not a message. */
bool fts_worker_message_decode(const bson_t *frame, fts_worker_message_t *out, fts_error_t *err);

#endif
