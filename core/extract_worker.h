/*
 * extract_worker.h - the transform worker's loop of `ftsync extract`: frames in (from the
 * parent, over a channel port), actions out to the queue port, then the checkpoint of the last
 * frame queued.
 *
 * Frames (one BSON document each) go one way, parent -> worker. Field "t" says what a frame is:
 *   "event"  ev: the change event (document); tok: the resume token after it (canonical
 *            extended JSON); kind: "resume" | "start_after"; careful: bool
 *   "snap"   doc: a snapshot document; ns: "db.collection"; started: the snapshot's cluster
 *            time (BSON timestamp); last_id: canonical extended JSON of doc's _id; queued:
 *            documents of this snapshot queued once this one is (int64); careful: bool
 *   "token"  tok, kind as above; ct: the cluster time of the last change covered (timestamp):
 *            the stream moved without an event (post-batch token while idle)
 *   "sweep"  ns; started: remove every document of ns older than this snapshot (history lost)
 * Every frame but "sweep" carries the position *after* it, so the worker checkpoints exactly
 * what it queued (invariant 1): the checkpoint written with a batch is the position of its last
 * frame. "careful" asks the worker to append and checkpoint that frame on its own, so that after
 * a crash the parent learns precisely which event the worker dies on (poison documents).
 *
 * The worker never answers; the parent learns what happened from the saved position and from
 * the worker's exit status.
 */
#ifndef FTS_EXTRACT_WORKER_H
#define FTS_EXTRACT_WORKER_H

#include <stddef.h>

#include "config.h"
#include "extract_ports.h"
#include "transform.h"

/* The worker's exit statuses. */
#define FTS_WORKER_EXIT_OK     0 /* the parent closed the channel; everything is queued */
#define FTS_WORKER_EXIT_RETRY  1 /* the queue failed or a frame was bad: restart from checkpoint */
#define FTS_WORKER_EXIT_CONFIG 2 /* the transform (projection, plugin) cannot be set up */
#define FTS_WORKER_EXIT_UNSUPPORTED                                                                \
    3 /* an event only an operator can resolve (rename,                                            \
       * dropDatabase, a delete needing a pre-image) */

/* The transform the configuration describes (projection, on_drop, plugin), or NULL with err
 * (the worker then ends with FTS_WORKER_EXIT_CONFIG). */
fts_transform_t *fts_extract_worker_transform_new(const fts_config_t *config, fts_error_t *err);

/* Runs the worker loop: receives frames from channel, transforms them with transform
 * (borrowed), appends them to queue in batches of up to batch_size actions with the position of
 * the last frame, until the parent closes the channel. Returns an FTS_WORKER_EXIT_* status. */
int fts_extract_worker_loop(fts_transform_t *transform, size_t batch_size,
                            const fts_queue_port_t *queue, const fts_channel_port_t *channel);

#endif
