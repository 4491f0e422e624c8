/*
 * seed.h - loading initial data from an extended-JSON-lines file (--seed FILE).
 *
 * Each non-blank line is one document {"ns": "db.coll", "doc": {...}} in MongoDB extended JSON
 * (canonical or relaxed: {"$oid": ...}, {"$date": ...}, {"$numberLong": ...}). Seeded documents
 * are the state the deployment starts in: they are inserted without change events, and the
 * event history (what startAtOperationTime can reach) begins after them.
 */
#ifndef FTS_DOUBLE_SEED_H
#define FTS_DOUBLE_SEED_H

#include "server.h"

#include <stdbool.h>
#include <stddef.h>

/* Loads path into the store; on failure writes "FILE:LINE: reason" into message. */
bool fts_double_seed_load(fts_double_server_t *srv, const char *path, char *message, size_t size);

#endif
