/*
 * extract_worker.h - the transform worker's loop of `ftsync extract`: frames in (from the
 * parent, over a channel port), actions out to the queue port, then the checkpoint of the last
 * frame queued.
 *
 * The frames are worker messages (worker_message.h: what each kind carries and what
 * "careful" asks). Every message but "sweep" carries the position after it, and the checkpoint
 * written with a batch is the position of its last message (invariant 1).
 *
 * The worker never answers; the parent learns what happened from the saved position and from
 * the worker's exit status.
 */
#ifndef FTS_EXTRACT_WORKER_H
#define FTS_EXTRACT_WORKER_H

#include <stddef.h>

#include "extract_ports.h"
#include "transform.h"

/* The worker's exit statuses. */
#define FTS_WORKER_EXIT_OK     0 /* the parent closed the channel; everything is queued */
#define FTS_WORKER_EXIT_RETRY  1 /* the queue failed or a frame was bad: restart from checkpoint */
#define FTS_WORKER_EXIT_CONFIG 2 /* the transform (projection, plugin) cannot be set up */
#define FTS_WORKER_EXIT_UNSUPPORTED                                                                \
    3 /* an event only an operator can resolve (rename,                                            \
       * dropDatabase, a delete needing a pre-image) */

/* Runs the worker loop: receives frames from channel, transforms them with transform
 * (borrowed; built by fts_transform_new from fts_extract_options_t's transform, which ends the
 * worker with FTS_WORKER_EXIT_CONFIG when it fails), appends them to queue in batches of up to
 * batch_size (> 0) actions with the position of the last frame, until the parent closes the
 * channel. Returns an FTS_WORKER_EXIT_* status. */
int fts_extract_worker_loop(fts_transform_t *transform, size_t batch_size,
                            const fts_queue_port_t *queue, const fts_channel_port_t *channel);

#endif
