/*
 * worker_process.h - the transform worker of `ftsync extract` as a process. The parent's side
 * is the worker port (extract_ports.h): a child forked over a socketpair. The child's side
 * wires the Redis queue (queue port) and its end of the socket (channel port) to the core's
 * worker loop (extract_worker.h).
 *
 * Fork hygiene: the child resets its signals and ignores SIGINT and SIGTERM (the parent ends it
 * by closing the socket), keeps only stdin/out/err and its socket (as fd 3), and never calls
 * into libmongoc, so a worker forked again after a crash, from a parent that has a MongoDB
 * client, never uses the copy in its memory. The parent reaps with WNOHANG while it reads, and
 * waits only when it drains.
 */
#ifndef FTS_WORKER_PROCESS_H
#define FTS_WORKER_PROCESS_H

#include "channel.h"
#include "child_process.h"
#include "config.h"
#include "extract_ports.h"

typedef struct {
    const fts_config_t *config;   /* what the child runs with; borrowed */
    fts_child_t child;            /* pid 0: no worker */
    fts_socket_channel_t channel; /* the parent's end; fd -1: none */
} fts_worker_process_t;

/* Sets process up with no worker. */
void fts_worker_process_init(fts_worker_process_t *process, const fts_config_t *config);

/* The worker port over process (borrowed: it must outlive the port). */
fts_worker_port_t fts_worker_process_port(fts_worker_process_t *process);

/* Closes the channel and waits for the worker, if any; frees the channel. */
void fts_worker_process_cleanup(fts_worker_process_t *process);

#endif
