/*
 * ftsync_plugin.h - the C interface of an ftsync transform plugin. A plugin author needs this
 * header and libbson, nothing else from ftsync.
 *
 * A plugin is a shared library named by the configuration. The transform worker loads it with
 * dlopen (RTLD_NOW | RTLD_LOCAL) after it has forked, so a plugin that crashes takes down only
 * the worker: the extract parent restarts it, and a document that crashes it three times in a
 * row is dead-lettered. The library must export:
 *
 *   int ftsync_transform_document(const bson_t *document, bson_t *replacement,
 *                                 char *error, size_t error_size);
 *
 * called once per MongoDB document about to be indexed (change-stream post-images and snapshot
 * documents; deletes carry no document and do not call it), before the configured projection
 * (FTSYNC_FIELDS) is applied. It returns one of:
 *
 *   FTSYNC_PLUGIN_KEEP     index the document unchanged;
 *   FTSYNC_PLUGIN_REPLACE  index *replacement instead. replacement is an empty document that
 *                          ftsync initialised and will destroy; append to it (bson_append_*,
 *                          bson_copy_to_excluding_noinit...), do not re-initialise or free it;
 *   FTSYNC_PLUGIN_DROP     keep the document out of the index. ftsync queues a delete for its
 *                          id, so that a document that becomes filtered out by an update also
 *                          leaves the index (a delete of an absent document is harmless);
 *   FTSYNC_PLUGIN_ERROR    the document cannot be transformed: write a NUL-terminated reason
 *                          into error (error_size bytes, at least 256). The event ends in the
 *                          dead-letter stream with that reason; the pipeline goes on.
 * Any other value is treated as FTSYNC_PLUGIN_ERROR.
 *
 * The index document id is always taken from the original document (FTSYNC_ID_FIELD), never
 * from a replacement, so that deletes, which have no document to transform, find it.
 *
 * Optionally the library exports
 *
 *   const unsigned int ftsync_plugin_abi_version = FTSYNC_PLUGIN_ABI_VERSION;
 *
 * and ftsync refuses to load a plugin built against a different version of this interface.
 *
 * Rules: the function is called from one thread; document is borrowed for the call only; keep
 * no pointer into it. Link libbson dynamically (the worker's copy is the one used), and do not
 * call exit() or change signal handlers: returning FTSYNC_PLUGIN_ERROR is the way to fail.
 *
 * Build: cc -shared -fPIC -o myplugin.so myplugin.c $(pkg-config --cflags --libs libbson-1.0)
 */
#ifndef FTSYNC_PLUGIN_H
#define FTSYNC_PLUGIN_H

#include <stddef.h>

#include <bson/bson.h>

/* Bumped whenever the entry point or the meaning of its results changes. */
#define FTSYNC_PLUGIN_ABI_VERSION 1u

/* The results of ftsync_transform_document. */
#define FTSYNC_PLUGIN_KEEP    0
#define FTSYNC_PLUGIN_REPLACE 1
#define FTSYNC_PLUGIN_DROP    2
#define FTSYNC_PLUGIN_ERROR   (-1)

/* The entry point's name and type, as dlsym looks it up. */
#define FTSYNC_PLUGIN_ENTRY_POINT "ftsync_transform_document"
#define FTSYNC_PLUGIN_ABI_SYMBOL  "ftsync_plugin_abi_version"

typedef int (*ftsync_transform_document_fn)(const bson_t *document, bson_t *replacement,
                                            char *error, size_t error_size);

#ifdef __cplusplus
extern "C" {
#endif

/* Declarations for the plugin's own definitions, so the compiler checks their types. */
int ftsync_transform_document(const bson_t *document, bson_t *replacement, char *error,
                              size_t error_size);
extern const unsigned int ftsync_plugin_abi_version;

#ifdef __cplusplus
}
#endif

#endif
