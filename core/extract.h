/*
 * extract.h - the parent process of `ftsync extract`, as core logic over ports
 * (extract_ports.h): it holds the lease, reads the saved position, snapshots the collection
 * when there is none, then follows the change stream, and frames every event to the transform
 * worker, which queues the actions and checkpoints the position (extract_worker.h).
 *
 * Invariants kept (see extract.c for how):
 *   1. the parent never writes a position itself while the worker may still queue what comes
 *      before it: positions travel in the frames and the worker saves them with the actions;
 *   4. backpressure: above backlog_max unacknowledged entries reading stops; nothing dropped;
 *   5. every failure is retried, dead-lettered, or ends the run with FTS_EXTRACT_EXIT_STOPPED
 *      and an error line naming the problem;
 *   one active extractor: reading happens only while the lease is ours.
 */
#ifndef FTS_EXTRACT_H
#define FTS_EXTRACT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "extract_ports.h"
#include "transform.h"

/* What fts_extract_run returns: the exit statuses of cmd.h (FTS_EXIT_*), same values. */
#define FTS_EXTRACT_EXIT_OK      0 /* stopped by a stop request */
#define FTS_EXTRACT_EXIT_FAILURE 1 /* a worker could not be started, or ended badly at stop */
#define FTS_EXTRACT_EXIT_USAGE   2 /* the transform cannot be set up */
#define FTS_EXTRACT_EXIT_STOPPED 3 /* a clear error state that needs an operator */

/* What the extract loops need, filled from the configuration by cmd/ (cmd_extract.c).
 * Strings and the field list are borrowed: they must outlive fts_extract_run and the worker. */
typedef struct {
    /* The parent (fts_extract_run) */
    const char *db;                        /* FTSYNC_MONGO_DB */
    const char *collection;                /* FTSYNC_MONGO_COLLECTION */
    fts_scope_t scope;                     /* database: the scan names the collection */
    uint64_t backlog_max;                  /* unacknowledged entries above which reading pauses */
    uint64_t trim_interval_ms;             /* how often acknowledged entries are trimmed */
    uint64_t lease_ttl_ms;                 /* renewed every third of it */
    fts_on_history_lost_t on_history_lost; /* resync, or stop in an error state */
    unsigned worker_crash_limit;           /* crashes on one event before it is dead-lettered */
    bool sweep_first_snapshot; /* a snapshot with nothing saved before it ends with a sweep too
                                * (off when FTSYNC_NS_FIELD=off: load could not apply it) */
    /* The worker (extract_worker.h) */
    size_t batch_size;                 /* most actions per queue append */
    fts_transform_options_t transform; /* id field, fields, on_drop, plugin path */
} fts_extract_options_t;

/* The ports the parent runs over; all borrowed for the duration of fts_extract_run. */
typedef struct {
    const fts_source_port_t *source;
    const fts_queue_port_t *queue;
    const fts_lease_port_t *lease;
    const fts_worker_port_t *worker;
} fts_extract_ports_t;

/* Runs the parent until a stop is requested (fts_signals) or a fatal error, and returns an
 * FTS_EXTRACT_EXIT_* status. The worker may have been spawned already (it must be, before any
 * MongoDB client exists); one is spawned when none runs. On return the worker may still run
 * (a fatal stop): the caller closes and reaps it. */
int fts_extract_run(const fts_extract_options_t *options, const fts_extract_ports_t *ports);

#endif
