/*
 * load_ports.h - what the core's loader (load.h) needs from the outside world: the consumer
 * group in Redis (and its barrier query), Elasticsearch (the bulk endpoint, and any request
 * for a drop's or sweep's scroll), and a clock with one timer.
 *
 * The loader is a state machine driven by an event loop it never sees. It starts an operation
 * by calling a port function, and the adapter reports the outcome later by calling the matching
 * fts_loader_*_done() function (load.h). Promises every port implementation keeps:
 *   - a port function never calls back into the loader before it returns: completions come
 *     from the event loop, even immediate failures (a Redis that is down);
 *   - every started operation completes exactly once, with an error when its outcome is not
 *     known (a connection lost mid-command). The loader then assumes nothing happened that it
 *     has not seen confirmed (invariant 2: nothing is acknowledged on a guess);
 *   - what is passed in is borrowed for the duration of the call only; the adapter copies what
 *     it keeps.
 */
#ifndef FTS_LOAD_PORTS_H
#define FTS_LOAD_PORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "action.h"
#include "error.h"

/* The error code (of the Redis domain) of a read, claim or touch whose group or stream is gone
 * (Redis answered NOGROUP): the loader recreates the group (ensure_group). */
#define FTS_ERROR_CODE_NO_GROUP 1003

/* Room for a stream entry ID: two 20-digit decimals, a dash and the NUL. */
#define FTS_STREAM_ID_SIZE 48

/* One entry as XREADGROUP or XAUTOCLAIM returned it. Borrowed for the callback's duration. */
typedef struct {
    char id[FTS_STREAM_ID_SIZE];
    const fts_bytes_t *items; /* field, value, field, value...; NULL when the entry was deleted
                               * from the stream while pending (Redis returns it with no fields) */
    size_t count;             /* number of items (even) */
    uint64_t deliveries;      /* times delivered to a consumer, this delivery included; 0 when
                               * the adapter could not tell */
} fts_stream_entry_t;

/* An entry to write to the dead-letter stream. */
typedef struct {
    const fts_stream_entry_t *entry; /* its fields are copied into the dead letter */
    const char *reason;              /* why, e.g. Elasticsearch's error type and reason */
    uint64_t deliveries;             /* how often it was delivered before giving up */
} fts_load_dead_t;

/* What one settle does, as one command: XADD every dead letter to the dead-letter stream, then
 * XACK every ID in ack_ids (which includes the dead-lettered entries' IDs). With dead letters
 * the command is a Lua script, which stops at the first XADD that fails, so nothing is
 * acknowledged unless every dead letter was written; it does not roll back, so a failed or
 * unanswered settle may have written some dead letters, and settling again may write them
 * twice (never zero times). Without dead letters it is a plain XACK. */
typedef struct {
    const char *const *ack_ids;
    size_t ack_count;
    const fts_load_dead_t *dead;
    size_t dead_count;
} fts_settlement_t;

/* The loader's port, in the one shape of every port (README.md, Architecture): a table of
 * functions, `static const` in whoever drives the loader, each called with the port's context. */
typedef struct {
    /* Creates the consumer group from the start of the stream (MKSTREAM) unless it exists.
     * Completes with fts_loader_group_done. */
    void (*ensure_group)(void *context);
    /* XREADGROUP COUNT count: start_id ">" reads new entries (blocking a while when there are
     * none); any other ID re-reads this consumer's own pending entries after it. Completes
     * with fts_loader_read_done. At most one read is outstanding. */
    void (*read)(void *context, const char *start_id, size_t count);
    /* XAUTOCLAIM entries idle longer than the configured time, from cursor ("0-0" to start).
     * Completes with fts_loader_claim_done. */
    void (*claim)(void *context, const char *cursor, size_t count);
    /* Resets the idle time of these pending entries of ours (XCLAIM ... JUSTID, which does not
     * count a delivery), so that live work is not claimed by others. Completes with
     * fts_loader_touch_done. */
    void (*touch)(void *context, const char *const *ids, size_t count);
    /* Sets these pending entries' delivery counts to counts[i] (XCLAIM ... RETRYCOUNT, which
     * also resets their idle time): the loader keeps in that count how often a loader died
     * while sending the entry (README.md, Load), not how often Redis delivered it. Completes
     * with fts_loader_mark_done; several may be outstanding. */
    void (*mark)(void *context, const char *const *ids, const uint64_t *counts, size_t count);
    /* Dead-letters and acknowledges, see fts_settlement_t. Completes with
     * fts_loader_settle_done(token). */
    void (*settle)(void *context, const fts_settlement_t *settlement, void *token);
    /* POSTs an NDJSON bulk body. Completes with fts_loader_bulk_done(token). */
    void (*bulk)(void *context, const char *body, size_t len, void *token);
    /* The barrier of a drop or sweep entry id (README.md, Load): is every entry of the stream
     * before id acknowledged by the group? Asked as "the smallest pending ID up to id"
     * (XPENDING <stream> <group> - id COUNT 1): clear when there is none or it is id itself.
     * That is enough because id was delivered (the loader holds it), and the group delivers
     * new entries in ID order, so every entry before id was delivered too and is either
     * pending or acknowledged (entries the group skipped with XGROUP SETID are never
     * delivered, and count as done). Completes with fts_loader_barrier_done. */
    void (*barrier)(void *context, const char *id);
    /* Sends one HTTP request to Elasticsearch (a drop's or sweep's refresh, scroll pages,
     * versioned deletes, scroll clearing): method, path (from '/'), content type, body (may be
     * empty). Completes with fts_loader_request_done(token). */
    void (*request)(void *context, const char *method, const char *path, const char *content_type,
                    const char *body, size_t len, void *token);
    /* Arms the loader's one timer to call fts_loader_wake after delay_ms, replacing any
     * earlier arming. */
    void (*wake_after)(void *context, uint64_t delay_ms);
    /* A monotonic clock in milliseconds. */
    uint64_t (*now_ms)(void *context);
    /* Optional (NULL: each backoff's own generator, seeded from the clock and the pid): the
     * random numbers the retry backoffs draw their jitter from, so that a test can force a
     * delay (0 jitter: the retry still waits the 1 ms floor, through wake_after). */
    uint64_t (*random)(void *context);
    /* The loader has stopped (after fts_loader_stop): nothing of it is in flight any more, or
     * the stop timeout passed. The driver ends its loop. */
    void (*finished)(void *context);
} fts_load_ops_t;

typedef struct {
    const fts_load_ops_t *ops;
    void *context;
} fts_load_ports_t;

#endif
