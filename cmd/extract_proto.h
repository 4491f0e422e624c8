/*
 * extract_proto.h - how the `ftsync extract` parent starts its forked transform worker. The
 * frames they exchange and the worker's exit statuses are the core's (core/extract_worker.h);
 * this is the child's entry point, which wires the Redis queue and the socket to that loop.
 */
#ifndef FTS_EXTRACT_PROTO_H
#define FTS_EXTRACT_PROTO_H

#include "config.h"
#include "extract_worker.h"

/* Runs the worker in the forked child over fd until the parent closes it, and returns its exit
 * status (FTS_WORKER_EXIT_*). The child must have reset its signals and closed what it does not
 * use; it never touches a MongoDB client or event base of the parent (there may be one in its
 * memory when the worker is restarted: it is only never used). */
int fts_extract_worker_main(const fts_config_t *config, int fd);

#endif
