/*
 * extract_ports.h - the ports of `ftsync extract`: what the core's extract loops (extract.h,
 * extract_worker.h) need from the outside world. Each port is a const table of operations
 * (fts_*_ops_t, every operation taking the adapter's context first) and the context it is
 * called with; an adapter (MongoDB, Redis, the forked worker process, a socket, or a fake in
 * unit tests) defines one static const table and hands out ports that point to it. cmd/ only
 * picks which adapter goes into which port.
 *
 * Everything that crosses a port is a core type (bson_t, fts_action_argv_t, fts_error_t and the
 * types below), so core/ never sees libmongoc or hiredis, and an adapter takes these types
 * directly: there is nothing to convert. The promises each port makes are the ones the loops
 * rely on for the invariants of README.md, Architecture:
 *   1. fts_queue_ops_t.append saves a checkpoint only once every action given with it is in
 *      the queue (and the id map changes with them are written); dead_letter likewise for
 *      its entry;
 *   4. backlog reports what the loaders have not acknowledged; trim removes only what every
 *      consumer acknowledged;
 *   7. append, given the owners of its actions, never lets two documents share an index id in
 *      silence: the colliding action is dead-lettered instead of queued (fts_queue_batch_t);
 *   one active extractor: fts_lease_ops_t.remaining_ms is a conservative local deadline.
 * Ports are borrowed by the loops for as long as they run, and used from one thread.
 */
#ifndef FTS_EXTRACT_PORTS_H
#define FTS_EXTRACT_PORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "action.h"
#include "error.h"
#include "frame.h"

/* A cluster time: a BSON timestamp. */
typedef struct {
    uint32_t seconds;
    uint32_t increment;
} fts_timestamp_t;

/* ---- Source port: the change stream and the snapshot scan ---- */

/* err->code of a source error saying the position is gone from the server's history and only
 * a resync can follow (any domain). Every other source error is retried after a backoff. */
#define FTS_SOURCE_HISTORY_LOST 1101

/* Where a change stream starts. */
typedef enum {
    FTS_SOURCE_RESUME_AFTER = 1, /* after token, a saved resume token */
    FTS_SOURCE_START_AFTER,      /* after token, which may belong to an invalidate */
    FTS_SOURCE_START_AT_TIME     /* changes at or after time */
} fts_source_from_t;

typedef struct {
    fts_source_from_t from;
    const char *token;    /* RESUME_AFTER, START_AFTER: canonical extended JSON; borrowed */
    fts_timestamp_t time; /* START_AT_TIME */
} fts_source_position_t;

/* What next found. */
typedef enum {
    FTS_SOURCE_NEXT_EVENT = 0,  /* an event */
    FTS_SOURCE_NEXT_IDLE,       /* no event for a while; the token may have moved */
    FTS_SOURCE_NEXT_INVALIDATED /* the stream ended after an invalidate: reopen with
                                 * START_AFTER the current token */
} fts_source_next_t;

typedef struct {
    /* Opens the change stream at position, closing any open one. A token that is no resume
     * token, or a position gone from the history, fails with FTS_SOURCE_HISTORY_LOST. */
    bool (*open)(void *context, const fts_source_position_t *position, fts_error_t *err);
    /* Closes the change stream (and nothing else); the source can be opened again. */
    void (*close)(void *context);
    /* The next event: *event borrowed until the next call of next, open or close. */
    bool (*next)(void *context, fts_source_next_t *what, const bson_t **event, fts_error_t *err);
    /* The current resume token as canonical extended JSON (bson_free it), NULL if none yet. */
    char *(*resume_token_json)(void *context);
    /* Whether the current token must be resumed from with START_AFTER. */
    bool (*token_needs_start_after)(void *context);
    /* The deployment's majority-committed cluster time now. */
    bool (*cluster_time)(void *context, fts_timestamp_t *now, fts_error_t *err);
    /* A snapshot scan of collection (NULL = the source's own) in _id order after after_id
     * (NULL = from the start). Returns a scan handle for scan_next/scan_destroy, NULL on
     * error. */
    void *(*scan_new)(void *context, const char *collection, const bson_value_t *after_id,
                      fts_error_t *err);
    /* The next document (borrowed until the next call), *doc NULL at the end. */
    bool (*scan_next)(void *context, void *scan, const bson_t **doc, fts_error_t *err);
    /* Ends a scan; accepts NULL. */
    void (*scan_destroy)(void *context, void *scan);
} fts_source_ops_t;

typedef struct {
    const fts_source_ops_t *ops;
    void *context;
} fts_source_port_t;

/* ---- Queue port: the action stream, the dead letters, the saved position ---- */

typedef enum {
    FTS_TOKEN_RESUME = 1,  /* reopen with resumeAfter */
    FTS_TOKEN_START_AFTER, /* the token is an invalidate's: reopen with startAfter */
    FTS_TOKEN_START_AT     /* no token yet: open with startAtOperationTime = cluster_time
                            * (written by `ftsync reset-token --to-time`; the token field holds
                            * that time as extended JSON, for people) */
} fts_token_kind_t;

typedef enum {
    FTS_CHECKPOINT_TOKEN = 1, /* a change-stream resume token */
    FTS_CHECKPOINT_SNAPSHOT   /* snapshot progress */
} fts_checkpoint_kind_t;

/* A position to save. Everything is borrowed for the duration of the call. */
typedef struct {
    fts_checkpoint_kind_t kind;
    /* FTS_CHECKPOINT_TOKEN */
    const char *token; /* canonical extended JSON, not empty */
    fts_token_kind_t token_kind;
    fts_timestamp_t cluster_time; /* of the last change covered; 0.0 if unknown */
    /* FTS_CHECKPOINT_SNAPSHOT */
    fts_timestamp_t started; /* noted before the scan; seconds > 0 */
    const char *last_id;     /* canonical extended JSON of the last _id queued; NULL before
                              * the first document */
    uint64_t queued;         /* documents queued so far */
} fts_checkpoint_t;

/* The saved position as read back: nothing, a snapshot in progress, or a token (both only when
 * someone wrote them by hand). Strings owned (fts_position_cleanup). */
typedef struct {
    bool has_token;
    char *token;
    fts_token_kind_t token_kind;
    fts_timestamp_t cluster_time;
    uint64_t token_updated_at_ms; /* wall clock of the save, ms since the epoch; 0: unknown */
    bool has_snapshot;
    fts_timestamp_t started;
    char *last_id; /* NULL: no document queued yet */
    uint64_t queued;
    uint64_t snapshot_updated_at_ms; /* as token_updated_at_ms */
    /* The snapshot (in progress, or still to start when has_snapshot is false) is a resync's:
     * its end queues a sweep. Written by clear_position(resync) in the same step as the
     * clearing, kept by the snapshot's checkpoints, gone with the first token checkpoint. */
    bool sweep;
    /* FTS_DATA_LOST_* bits (read_position of the extract's queue port only): a server lost
     * what ftsync wrote since this process last looked (README.md, Reliability). The
     * position read is then not to be trusted: the extract resyncs. */
    unsigned data_lost;
} fts_position_t;

/* Bits of fts_position_t.data_lost. */
#define FTS_DATA_LOST_STATE  1u /* the state server (two-server mode): position, lease */
#define FTS_DATA_LOST_STREAM 2u /* the queue server (or the one server): stream, group, map */

/* err->code of a queue error saying a write was refused because the server lost its data
 * since the writer last saw it (the epoch marker is gone or changed): nothing was saved,
 * and only a resync (the extract parent's) can follow. */
#define FTS_QUEUE_DATA_LOST 1102

/* An entry to dead-letter. Borrowed for the duration of the call. */
typedef struct {
    const char **items; /* field, value, field, value... */
    const size_t *lens; /* NULL: each item is NUL-terminated */
    size_t count;       /* even */
    const char *reason;
    const char *stage; /* "transform", "extract", "load" */
} fts_dead_letter_t;

/* One change of the id map (README.md, Extract: the id map), kept in the queue beside the
 * stream: which index id a source document (_id) was indexed under. Borrowed for the call. */
typedef struct {
    const char *source_id; /* canonical extended JSON of the document's _id */
    const char *index_id;  /* NULL: remove the entry (the document was deleted) */
    size_t index_id_len;
} fts_id_map_change_t;

/* What one append writes, in this order and in one step: the actions, the dead letters found
 * while building them (an event refused inside the batch), the id map changes they imply.
 *
 * owners (README.md, Extract: index ids): NULL, or one entry per action, the canonical extended
 * JSON of the _id of the document the action is about (NULL for a drop or a sweep). Given, the
 * queue keeps the owners of the index ids beside the stream, in the same step as the actions
 * and in their order: an index action whose index id another document holds, and a delete of
 * such an index id, are not queued but dead-lettered (stage "extract") with a reason naming
 * both _ids; an index action otherwise claims its index id, a delete releases it, a drop
 * releases every one. collided (not NULL; count of them) says which actions were dead-lettered
 * so (all false when the append fails).
 * Borrowed for the duration of the call. */
typedef struct {
    const fts_action_argv_t *actions;
    size_t count;
    const fts_dead_letter_t *dead;
    size_t dead_count;
    const fts_id_map_change_t *map;
    size_t map_count;
    const char *const *owners;
    bool *collided; /* out; may be NULL */
} fts_queue_batch_t;

/* How far the loaders are behind. The loop compares only entries with its maximum; the rest
 * is detail for logs and tests. */
typedef struct {
    uint64_t entries;  /* not yet acknowledged by the loaders, or an upper bound (exact false) */
    bool exact;        /* false: entries is the stream's length (the group's lag is unknown) */
    bool group_exists; /* false: no loader group yet; entries is the length (nothing acked) */
    uint64_t length;   /* entries in the stream */
    uint64_t pending;  /* delivered to a loader, not acknowledged */
    uint64_t lag;      /* not yet delivered; valid when lag_known */
    bool lag_known;
} fts_backlog_t;

/* What a trim did. */
typedef struct {
    bool trimmed;       /* false: no stream, or no consumer group (nothing is known acked) */
    uint64_t removed;   /* entries removed */
    char threshold[48]; /* entries below this ID were removed (a stream ID fits in 48 bytes) */
} fts_trim_result_t;

typedef struct {
    /* The key fts_action_encode() must be given; borrowed for the port's life. */
    const char *(*stream_key)(void *context);
    /* Creates the loaders' group if missing. */
    bool (*ensure_group)(void *context, fts_error_t *err);
    /* Appends batch (actions, dead letters, id map changes, owners), then (checkpoint not NULL)
     * saves the checkpoint, never before every action and dead letter is in and the map changed
     * (invariant 1); an action dead-lettered for an index id collision counts as in. On failure the
     * checkpoint and the map stay where they were (entries of the batch may be in: a re-sent batch
     * duplicates them, harmless). */
    bool (*append)(void *context, const fts_queue_batch_t *batch,
                   const fts_checkpoint_t *checkpoint, fts_error_t *err);
    /* Reads the id map: index_ids[i] (bson_free it) is the index id saved for source_ids[i],
     * NULL when the map has no entry. The map reflects every append that returned true. A
     * value may still be no valid index id (a hand-edited map): the caller validates it. */
    bool (*id_map_get)(void *context, const char *const *source_ids, size_t count, char **index_ids,
                       fts_error_t *err);
    /* Saves a position with no entries; the caller has queued everything before it. */
    bool (*checkpoint)(void *context, const fts_checkpoint_t *checkpoint, fts_error_t *err);
    /* Writes a dead letter and then (not NULL) the checkpoint past it. */
    bool (*dead_letter)(void *context, const fts_dead_letter_t *dead,
                        const fts_checkpoint_t *checkpoint, fts_error_t *err);
    /* Reads the saved position (owned strings: fts_position_cleanup). The extract parent's
     * read also checks that the queue did not lose its data since the last read
     * (fts_position_t.data_lost; the Redis adapter: its epoch marker). */
    bool (*read_position)(void *context, fts_position_t *position, fts_error_t *err);
    /* Forgets the saved position: the next start snapshots again. resync: in the same step,
     * notes that this snapshot must end with a sweep (fts_position_t.sweep), so that a crash
     * before its end does not lose the sweep. */
    bool (*clear_position)(void *context, bool resync, fts_error_t *err);
    bool (*backlog)(void *context, fts_backlog_t *backlog, fts_error_t *err);
    /* Removes what every consumer group acknowledged. */
    bool (*trim)(void *context, fts_trim_result_t *result, fts_error_t *err);
} fts_queue_ops_t;

typedef struct {
    const fts_queue_ops_t *ops;
    void *context;
} fts_queue_port_t;

/* Frees what position owns and empties it. */
void fts_position_cleanup(fts_position_t *position);

/* "resume" / "start_after" / "start_at" ("?" for no kind); parse returns false for anything else,
 * NULL included. */
const char *fts_token_kind_name(fts_token_kind_t kind);
bool fts_token_kind_parse(const char *text, fts_token_kind_t *kind);

/* ---- Lease port: one active extractor ---- */

typedef enum {
    FTS_LEASE_ACQUIRED = 1, /* ours (acquire, renew) */
    FTS_LEASE_HELD,         /* someone else's (acquire) */
    FTS_LEASE_LOST,         /* no longer ours (renew, release): expired or taken over */
    FTS_LEASE_RELEASED      /* was ours and is deleted (release) */
} fts_lease_state_t;

/* Room for an owner id: a host name (at most 255 bytes), ':', a pid, ':', 16 hex digits. */
#define FTS_LEASE_HOLDER_SIZE 300

typedef struct {
    fts_lease_state_t state;
    char holder[FTS_LEASE_HOLDER_SIZE]; /* HELD, LOST: the current holder, "" if none */
    int64_t holder_ttl_ms; /* HELD, LOST: its remaining time to live as the server has it; -1
                            * when it has no expiry (set by hand), -2 when nobody holds it */
} fts_lease_status_t;

/* "acquired", "held", "lost", "released". */
const char *fts_lease_state_name(fts_lease_state_t state);

typedef struct {
    bool (*acquire)(void *context, fts_lease_status_t *status, fts_error_t *err);
    bool (*renew)(void *context, fts_lease_status_t *status, fts_error_t *err);
    bool (*release)(void *context, fts_lease_status_t *status, fts_error_t *err);
    /* How much longer the lease is surely ours; 0 when not held. */
    uint64_t (*remaining_ms)(void *context);
    /* Our owner id; borrowed for the port's life. */
    const char *(*owner)(void *context);
} fts_lease_ops_t;

typedef struct {
    const fts_lease_ops_t *ops;
    void *context;
} fts_lease_port_t;

/* ---- Channel port: frames from the extract parent to its transform worker ---- */

typedef struct {
    /* Parent side: sends one frame whole; false: the worker is gone (or going). */
    bool (*send)(void *context, const bson_t *frame, fts_error_t *err);
    /* Worker side: the next frame (READY, *frame borrowed until the next call), AGAIN when
     * none is complete yet, END when the parent closed the channel, ERROR when it broke. */
    fts_frame_status_t (*receive)(void *context, bson_t *frame, fts_error_t *err);
    /* Worker side: blocks until receive may have more (or EINTR). false on an error. */
    bool (*wait)(void *context);
} fts_channel_ops_t;

typedef struct {
    const fts_channel_ops_t *ops;
    void *context;
} fts_channel_port_t;

/* ---- Worker port: the parent's side of its transform worker process ---- */

typedef struct {
    /* Starts a worker (e.g. a forked child running fts_extract_worker_loop over a channel). */
    bool (*spawn)(void *context, fts_error_t *err);
    /* Whether a worker was spawned and not yet reaped. */
    bool (*running)(void *context);
    /* Sends a frame to the running worker; false: no worker, or it is gone. */
    bool (*send)(void *context, const bson_t *frame, fts_error_t *err);
    /* Checks whether the worker ended: without blocking (block false) or waiting for it. true
     * with *status (a waitpid status, fts_wait_status_describe) once it is reaped; the channel
     * is closed then. */
    bool (*reap)(void *context, bool block, int *status);
    /* Closes the channel (the worker queues what it has and exits), without waiting. */
    void (*close)(void *context);
    /* Sends SIGKILL to the worker, if any (reap it afterwards). */
    void (*kill)(void *context);
} fts_worker_ops_t;

typedef struct {
    const fts_worker_ops_t *ops;
    void *context;
} fts_worker_port_t;

#endif
