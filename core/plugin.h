/*
 * plugin.h - loading a user transform plugin and calling it (the interface plugins implement
 * is ftsync_plugin.h).
 *
 * Runs inside the forked transform worker only: a plugin is foreign code, and a crash in it
 * must cost a worker restart, never the extract parent (invariant 5). Every way a plugin can
 * refuse or fail becomes an error naming the plugin and its reason.
 */
#ifndef FTS_PLUGIN_H
#define FTS_PLUGIN_H

#include <stdbool.h>

#include <bson/bson.h>

#include "error.h"
#include "ftsync_plugin.h"

/* Returned when a plugin failed or refused a document; the caller dead-letters the event. */
#define FTS_PLUGIN_FAILED 1301

typedef struct fts_plugin fts_plugin_t;

typedef enum {
    FTS_PLUGIN_KEEP = FTSYNC_PLUGIN_KEEP,
    FTS_PLUGIN_REPLACE = FTSYNC_PLUGIN_REPLACE,
    FTS_PLUGIN_DROP = FTSYNC_PLUGIN_DROP
} fts_plugin_verdict_t;

/* Loads the shared library at path and checks its entry point and, when it declares one, its
 * ABI version. Refuses (FTS_ERROR_CONFIG) a library that cannot be loaded, lacks
 * ftsync_transform_document or was built for another ABI version, with the path and reason. */
fts_plugin_t *fts_plugin_open(const char *path, fts_error_t *err);
/* Unloads the plugin. Accepts NULL. */
void fts_plugin_close(fts_plugin_t *plugin);

/* The path the plugin was loaded from. Borrowed until the plugin is closed. */
const char *fts_plugin_path(const fts_plugin_t *plugin);

/* Runs the plugin on document. On success *verdict says what to do; with FTS_PLUGIN_REPLACE,
 * replacement (which the caller has bson_init'ed and destroys) holds a document that passed
 * bson_validate. On FTSYNC_PLUGIN_ERROR, an unknown result or an invalid replacement, fails
 * with FTS_ERROR_INPUT / FTS_PLUGIN_FAILED and the plugin's reason. */
bool fts_plugin_transform(fts_plugin_t *plugin, const bson_t *document, bson_t *replacement,
                          fts_plugin_verdict_t *verdict, fts_error_t *err);

#endif
