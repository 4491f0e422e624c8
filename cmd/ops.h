/*
 * ops.h - the operator's commands (`status`, `dlq`, `verify`, and reset-token's moves) and
 * what they share: connections with short waits (an operator wants "not reachable" within
 * seconds), the MongoDB source and transform built from the pipeline's own settings (so a
 * command sees the collection exactly as extract does), and parsing times.
 */
#ifndef FTS_CMD_OPS_H
#define FTS_CMD_OPS_H

#include <stdbool.h>

#include "cmd.h"
#include "config.h"
#include "error.h"
#include "extract_ports.h"
#include "mongo_source.h"
#include "redis_conn.h"
#include "transform.h"

/* verify: the index and the collection differ. */
#define FTS_EXIT_DIFFERENT 4

int fts_cmd_status(int argc, char **argv);
int fts_cmd_dlq(int argc, char **argv);
int fts_cmd_verify(int argc, char **argv);

/* The exit status an error calls for: 2 for FTS_ERROR_CONFIG (and bad input the operator
 * gave, FTS_ERROR_INPUT), 1 otherwise. */
int fts_ops_exit_status(const fts_error_t *err);

/* A Redis connection that tries once to reconnect rather than for 30 s. */
fts_redis_t *fts_ops_redis_connect(const fts_config_t *config, const char *url, fts_error_t *err);

/* The change-stream source extract would make from these settings. */
fts_mongo_source_t *fts_ops_mongo_source_new(const fts_config_t *config, fts_error_t *err);

/* The transform extract's worker would make from these settings (id field, fields, plugin). */
fts_transform_t *fts_ops_transform_new(const fts_config_t *config, fts_error_t *err);

/* "db.collection" of the settings into out. */
void fts_ops_namespace(const fts_config_t *config, char *out, size_t size);

/* Parses an RFC 3339 time ("2026-12-03T10:00:00Z", "...+01:00", fractions ignored) or unix
 * seconds ("1796292000") into seconds since the epoch. */
bool fts_ops_parse_time(const char *text, int64_t *seconds);

#endif
