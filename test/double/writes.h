/*
 * writes.h - every change to the data, made together with its change event.
 *
 * Commands never touch the store directly when they change something: they call these, so the
 * store and the event log cannot disagree (an insert without its event, a drop whose event
 * names the wrong collection). Each write gets its own cluster time, also within one
 * multi-document command, as mongod logs one oplog entry per document outside transactions.
 * Writes to the "local" database are not logged (mongod does not replicate it); writes to
 * "admin" and "config" are logged but no change stream shows them.
 */
#ifndef FTS_DOUBLE_WRITES_H
#define FTS_DOUBLE_WRITES_H

#include "server.h"

#include <bson/bson.h>
#include <stdbool.h>

/* The collection, created (with a create event) if it does not exist. */
fts_double_coll_t *fts_double_write_collection(fts_double_server_t *srv, const char *db,
                                               const char *name);

/* Creates a collection explicitly; images: changeStreamPreAndPostImages.enabled. */
fts_double_coll_t *fts_double_write_create(fts_double_server_t *srv, const char *db,
                                           const char *name, bool images);

/* Inserts doc (which must have _id first), taking over the caller's reference; false on a
 * duplicate _id, the reference then stays with the caller. */
bool fts_double_write_insert(fts_double_server_t *srv, fts_double_coll_t *coll,
                             fts_double_doc_t *doc);

/* Swaps in a new version of a document (same _id), taking over the reference to doc and to
 * desc (an update description, NULL for a replacement). */
void fts_double_write_update(fts_double_server_t *srv, fts_double_coll_t *coll,
                             fts_double_doc_t *doc, bson_t *desc);

/* Deletes the document with this _id (it must exist). */
void fts_double_write_delete(fts_double_server_t *srv, fts_double_coll_t *coll,
                             const bson_value_t *id);

void fts_double_write_drop(fts_double_server_t *srv, fts_double_coll_t *coll);
/* Drops every collection of db (drop events), then logs dropDatabase (nothing at all if the
 * database has no collection). */
void fts_double_write_drop_database(fts_double_server_t *srv, const char *db);
/* Renames coll to db.name; an existing target is dropped first (the caller checked dropTarget). */
void fts_double_write_rename(fts_double_server_t *srv, fts_double_coll_t *coll, const char *db,
                             const char *name);

#endif
