/*
 * extract_proto.h - what the `ftsync extract` parent and its forked transform worker say to
 * each other over their socketpair, and how the worker tells the parent why it ended.
 *
 * Frames (core/frame.h: one BSON document each) go one way, parent -> worker. Field "t" says
 * what a frame is:
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
 * The worker never answers; the parent learns what happened from the saved position in Redis
 * and from the worker's exit status.
 */
#ifndef FTS_EXTRACT_PROTO_H
#define FTS_EXTRACT_PROTO_H

#include "config.h"

/* The worker's exit statuses. */
#define FTS_WORKER_EXIT_OK     0 /* the parent closed the socket; everything is queued */
#define FTS_WORKER_EXIT_RETRY  1 /* Redis failed or a frame was bad: restart from checkpoint */
#define FTS_WORKER_EXIT_CONFIG 2 /* the transform (projection, plugin) cannot be set up */
#define FTS_WORKER_EXIT_UNSUPPORTED                                                                \
    3 /* an event only an operator can resolve (rename,                                            \
       * dropDatabase, a delete needing a pre-image) */

/* Runs the worker in the forked child over fd until the parent closes it, and returns its exit
 * status. The child must have reset its signals and closed what it does not use; it never
 * touches a MongoDB client or event base of the parent (there may be one in its memory when the
 * worker is restarted: it is only never used). */
int fts_extract_worker_run(const fts_config_t *config, int fd);

#endif
