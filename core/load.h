/*
 * load.h - the loader: reads the action stream as one consumer of the group `loaders`,
 * bulk-indexes into Elasticsearch, and acknowledges each entry only when its own action was
 * accepted or it was dead-lettered with a reason.
 *
 * A state machine with no event loop of its own: it starts operations through its ports
 * (load_ports.h) and the driver feeds their outcomes back through the fts_loader_*_done
 * functions and fts_loader_wake. What it guarantees (README.md, Architecture):
 *   2. an entry is settled (XACK) only after its item came back 2xx, 409 or 404-on-delete
 *      (bulk_result.h), or by the same settle command that first wrote it to the dead-letter
 *      stream (a script that stops before its XACK if a dead letter fails: load_ports.h);
 *      a request or settle whose outcome is unknown is retried, never assumed;
 *   3. every action goes out with its external version, so retries, redeliveries and two
 *      loaders sending the same entry are harmless;
 *   5. every entry ends acknowledged, dead-lettered with its reason, or still pending in
 *      Redis (retried in memory, or claimed again after this process dies). Entries it cannot
 *      trust - undecodable, sent max_deliveries times by loaders that died while sending it
 *      (the delivery count the loader keeps in Redis, load.c), a drop or sweep when no ns
 *      field is configured - are dead-lettered, never skipped;
 *   6. a malformed entry or server reply is an error for that entry or that request only;
 *   7. a drop or sweep entry is applied (load_sweep.h): once the barrier says every entry
 *      before it is acknowledged (load_ports.h), it scrolls through the index and deletes,
 *      with a versioned delete at the entry's version, every document of the entry's ns
 *      (the ns field) below that version; a document written again meanwhile has a higher
 *      version and wins with a 409. The entry stays pending (touched like any other) until
 *      the whole scroll is done, and is then acknowledged, or dead-lettered with the count
 *      of documents it could not delete or could not attribute to an ns. A loader that dies
 *      mid-sweep leaves it pending: the next one to hold it sweeps again, which is harmless.
 *      One drop or sweep runs at a time per loader, beside the loading of other entries.
 * Reading: on start it re-reads its own pending entries (history, from "0"), then new ones
 * (">"); after any read error it starts again from its history, because a lost reply may have
 * delivered entries to it. Entries already in memory are recognised by ID and not taken twice.
 * Memory is bounded: it reads only while it holds fewer than max_actions * (in_flight + 2)
 * entries.
 */
#ifndef FTS_LOAD_H
#define FTS_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bulk_body.h"
#include "error.h"
#include "load_ports.h"
#include "load_sweep.h"

typedef struct {
    fts_bulk_target_t target; /* borrowed for the loader's life */
    size_t bulk_max_actions;
    size_t bulk_max_bytes;
    uint64_t bulk_max_wait_ms;
    size_t bulk_max_in_flight;
    uint64_t claim_interval_ms; /* also how often own entries are touched */
    uint64_t max_deliveries;
    uint64_t retry_base_ms;
    uint64_t retry_max_ms;
    uint64_t stop_timeout_ms;
    uint64_t progress_interval_ms;     /* an info line with the counters; 0: never */
    size_t sweep_page_size;            /* documents per scroll page of a drop or sweep (0: 1000) */
    fts_sweep_dialect_t sweep_dialect; /* how the server takes a scroll id (0: JSON) */
} fts_load_options_t;

/* Counters since start. */
typedef struct {
    uint64_t read;            /* entries taken from the stream (read or claimed) */
    uint64_t claimed;         /* of which claimed from other consumers */
    uint64_t duplicates;      /* delivered again while still in memory: ignored */
    uint64_t indexed;         /* index actions accepted */
    uint64_t deleted;         /* delete actions accepted (or already gone) */
    uint64_t conflicts;       /* 409: a newer version was there */
    uint64_t item_retries;    /* items sent again after a 429/5xx/blocked answer */
    uint64_t request_retries; /* requests sent again after no or an unusable answer */
    uint64_t splits;          /* requests split after 413/400 */
    uint64_t dead;            /* entries dead-lettered */
    uint64_t acked;           /* entries acknowledged (dead-lettered ones included) */
    uint64_t vanished;        /* pending entries deleted from the stream: acknowledged */
    uint64_t redis_errors;
    uint64_t es_errors;
    uint64_t swept;          /* drop and sweep entries carried out to the end */
    uint64_t sweep_deleted;  /* documents they deleted */
    uint64_t sweep_restarts; /* scrolls started again (lost or failed page) */
} fts_load_stats_t;

typedef struct fts_loader fts_loader_t;

/* options and ports are copied (what they point to is borrowed). Never NULL: allocation failure
 * aborts. */
fts_loader_t *fts_loader_new(const fts_load_options_t *options, const fts_load_ports_t *ports);
void fts_loader_destroy(fts_loader_t *loader);

/* Ensures the group, then reads and loads until stopped. */
void fts_loader_start(fts_loader_t *loader);

/* Clean stop: no more reads, claims or new requests; in-flight requests and settles may finish
 * within stop_timeout_ms; then ports.ops->finished. Entries not settled stay pending in Redis and
 * are delivered again later (to this consumer's history on restart, or claimed by others). */
void fts_loader_stop(fts_loader_t *loader);

/* Outcomes of the port operations (see load_ports.h). err NULL or empty: success. */
void fts_loader_group_done(fts_loader_t *loader, const fts_error_t *err);
void fts_loader_read_done(fts_loader_t *loader, const fts_stream_entry_t *entries, size_t count,
                          const fts_error_t *err);
void fts_loader_claim_done(fts_loader_t *loader, const fts_stream_entry_t *entries, size_t count,
                           const char *next_cursor, uint64_t deleted, const fts_error_t *err);
void fts_loader_touch_done(fts_loader_t *loader, const fts_error_t *err);
void fts_loader_mark_done(fts_loader_t *loader, const fts_error_t *err);
void fts_loader_settle_done(fts_loader_t *loader, void *token, const fts_error_t *err);
/* An HTTP answer (status, body) or, with err set, none. */
void fts_loader_bulk_done(fts_loader_t *loader, void *token, long status, const char *body,
                          size_t body_len, const fts_error_t *err);
/* The barrier query of ports.ops->barrier: clear when no entry before the asked one is pending. */
void fts_loader_barrier_done(fts_loader_t *loader, bool clear, const fts_error_t *err);
/* An HTTP answer to ports.request (status, body) or, with err set, none. */
void fts_loader_request_done(fts_loader_t *loader, void *token, long status, const char *body,
                             size_t body_len, const fts_error_t *err);
/* The timer armed with ports.wake_after fired. */
void fts_loader_wake(fts_loader_t *loader);

const fts_load_stats_t *fts_loader_stats(const fts_loader_t *loader);
/* Entries held in memory (read, not yet settled). */
size_t fts_loader_held(const fts_loader_t *loader);

#endif
