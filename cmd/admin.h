/*
 * admin.h - what extract, load and run share to serve their admin endpoint: the metrics block
 * (their own, or the one `ftsync run` hands its children) and the server on FTSYNC_ADMIN_ADDR.
 */
#ifndef FTS_CMD_ADMIN_H
#define FTS_CMD_ADMIN_H

#include <stdbool.h>

#include "admin_http.h"
#include "config.h"
#include "metrics.h"

/* The variable `ftsync run` sets for its children: the fd of its metrics block (a memfd). */
#define FTS_RUN_METRICS_FD_VARIABLE "FTSYNC_RUN_METRICS_FD"

typedef struct {
    fts_metrics_t *metrics;     /* installed process-wide while set */
    fts_admin_server_t *server; /* NULL: FTSYNC_ADMIN_ADDR=off (or not started yet) */
} fts_cmd_admin_t;

/* Makes (or, under `ftsync run`, adopts) the metrics block and installs it. Call before the
 * first fork, so that forked children count into it. false (logged) when the block run gave
 * cannot be adopted. */
bool fts_cmd_admin_metrics(fts_cmd_admin_t *admin);

/* Starts the endpoint on config->admin_addr unless it is off. roles: FTS_METRICS_ROLE_*.
 * false (logged) when the address cannot be bound. */
bool fts_cmd_admin_serve(fts_cmd_admin_t *admin, const fts_config_t *config, unsigned roles,
                         fts_admin_check_fn check, void *check_context);

/* Stops the server, uninstalls and frees the block. */
void fts_cmd_admin_cleanup(fts_cmd_admin_t *admin);

#endif
