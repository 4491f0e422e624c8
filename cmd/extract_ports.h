/*
 * extract_ports.h - the glue of `ftsync extract`: fills the core's ports (core/ports.h) from
 * the adapters (MongoDB source, Redis queue and lease) and from a forked worker process, and
 * converts between the adapters' structs and the core's.
 *
 * The contexts are borrowed: the adapters and the process struct must outlive the ports.
 */
#ifndef FTS_EXTRACT_PORTS_H
#define FTS_EXTRACT_PORTS_H

#include <sys/types.h>

#include "channel.h"
#include "config.h"
#include "mongo_source.h"
#include "ports.h"
#include "redis_lease.h"
#include "redis_queue.h"

/* The parent's side of its transform worker: a forked child over a socketpair. */
typedef struct {
    const fts_config_t *config;      /* what the child runs with; borrowed */
    pid_t pid;                       /* 0: none */
    fts_socket_channel_t channel;    /* fd -1: none */
    fts_channel_port_t channel_port; /* sends over channel */
} fts_extract_process_t;

void fts_extract_source_port_init(fts_source_port_t *port, fts_mongo_source_t *source);
void fts_extract_queue_port_init(fts_queue_port_t *port, fts_redis_queue_t *queue);
void fts_extract_lease_port_init(fts_lease_port_t *port, fts_redis_lease_t *lease);

/* Sets process up with no worker and fills port to fork one (fts_extract_worker_main in the
 * child, over fd 3). */
void fts_extract_worker_port_init(fts_worker_port_t *port, fts_extract_process_t *process,
                                  const fts_config_t *config);

/* Closes the channel and reaps the worker, if any; frees the channel. */
void fts_extract_process_cleanup(fts_extract_process_t *process);

#endif
