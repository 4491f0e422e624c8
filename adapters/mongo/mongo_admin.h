/*
 * mongo_admin.h - what the operator's commands (`ftsync status`, `verify`, `dlq replay`) read
 * from MongoDB besides the change stream: the server's version, the collection's document
 * count, and documents looked up by the value of a field ($in), one page at a time.
 *
 * Reads only; every read is one command, never a resident copy of the collection. The client
 * is the process's own (fork hygiene as in mongo_source.h). Errors: FTS_ERROR_CONFIG for a URI
 * libmongoc refuses, FTS_ERROR_MONGO (code CONNECT when no server could be selected, SERVER
 * otherwise) naming the command and the server's message.
 */
#ifndef FTS_MONGO_ADMIN_H
#define FTS_MONGO_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "error.h"

typedef struct fts_mongo_admin fts_mongo_admin_t;

/* A client for database.collection at uri (copied). Nothing is sent yet. */
fts_mongo_admin_t *fts_mongo_admin_new(const char *uri, const char *database,
                                       const char *collection, fts_error_t *err);
void fts_mongo_admin_destroy(fts_mongo_admin_t *admin);

/* buildInfo's version, e.g. "6.0.0". */
bool fts_mongo_admin_server_version(fts_mongo_admin_t *admin, char *out, size_t size,
                                    fts_error_t *err);

/* The collection's document count (the count command: exact on a clean shutdown). */
bool fts_mongo_admin_count(fts_mongo_admin_t *admin, uint64_t *count, fts_error_t *err);

/* Called for each document found; doc borrowed for the call. false stops the read. */
typedef bool (*fts_mongo_admin_doc_fn)(const bson_t *doc, void *context);

/* find {field: {$in: values}} (values: a BSON array document), calling fn for each document. */
bool fts_mongo_admin_find_in(fts_mongo_admin_t *admin, const char *field, const bson_t *values,
                             fts_mongo_admin_doc_fn fn, void *context, fts_error_t *err);

#endif
