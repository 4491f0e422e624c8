/*
 * store.h - the double's data: immutable reference-counted documents, collections ordered by
 * _id, and the catalog of namespaces.
 *
 * Documents are never changed in place. An update builds a new document and swaps it into the
 * collection; the old one lives on for as long as a change event (a pre-image, a delete's
 * documentKey) or an open cursor still holds a reference. That makes an insert event, a find
 * cursor and the collection share one copy of the bytes, and makes snapshots free.
 *
 * A collection is an AVL tree keyed by _id in mongod's BSON order, so an insert, a lookup by _id
 * and a delete cost O(log n) and a scan returns documents in _id order, as an _id index would.
 *
 * Namespace names are interned: a change event keeps a pointer to its namespace for as long as
 * the event log keeps the event, even after the collection was dropped or renamed.
 */
#ifndef FTS_DOUBLE_STORE_H
#define FTS_DOUBLE_STORE_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A document: the BSON bytes and a reference count. Never modified once created. */
typedef struct {
    uint32_t refs;
    uint32_t len;
    uint8_t data[];
} fts_double_doc_t;

/* Copies the bytes into a new document with one reference. */
fts_double_doc_t *fts_double_doc_new(const uint8_t *data, uint32_t len);
fts_double_doc_t *fts_double_doc_from_bson(const bson_t *bson);
fts_double_doc_t *fts_double_doc_ref(fts_double_doc_t *doc);
/* Drops one reference (NULL accepted); frees on the last. */
void fts_double_doc_unref(fts_double_doc_t *doc);
/* A read-only bson_t over the document, valid while a reference is held. */
void fts_double_doc_view(const fts_double_doc_t *doc, bson_t *out);
/* The _id (borrowing the document's bytes); false if the document has none. */
bool fts_double_doc_id(const fts_double_doc_t *doc, bson_value_t *id);

/* An interned namespace; lives until the store is destroyed. */
typedef struct {
    char *full; /* "db.coll" ("db" alone for a database-level name) */
    char *db;
    char *coll; /* "" for a database-level name */
} fts_double_ns_t;

typedef struct fts_double_node fts_double_node_t;

typedef struct fts_double_coll {
    const fts_double_ns_t *ns;
    uint8_t uuid[16];
    bool images; /* changeStreamPreAndPostImages.enabled */
    fts_double_node_t *root;
    size_t count;
    size_t bytes;
    bson_t *indexes;      /* secondary index specs created by createIndexes, as an array */
    uint32_t index_count; /* entries in indexes */
} fts_double_coll_t;

typedef struct fts_double_store fts_double_store_t;

fts_double_store_t *fts_double_store_new(void);
void fts_double_store_destroy(fts_double_store_t *store);

/* Interns "db.coll" (or db alone when coll is NULL or ""). */
const fts_double_ns_t *fts_double_store_intern(fts_double_store_t *store, const char *db,
                                               const char *coll);

fts_double_coll_t *fts_double_store_find(fts_double_store_t *store, const char *db,
                                         const char *coll);
/* Creates an empty collection; the caller checked that it does not exist. */
fts_double_coll_t *fts_double_store_create(fts_double_store_t *store, const char *db,
                                           const char *coll);
/* Removes the collection and frees it (its documents lose the collection's references). */
void fts_double_store_drop(fts_double_store_t *store, fts_double_coll_t *coll);
/* Moves a collection to a new name, keeping its documents and UUID; the target must be free. */
void fts_double_store_rename(fts_double_store_t *store, fts_double_coll_t *coll, const char *db,
                             const char *name);
/* Every collection of db (or of all databases when db is NULL), sorted by namespace. Caller
 * frees the array with bson_free. */
fts_double_coll_t **fts_double_store_list(fts_double_store_t *store, const char *db, size_t *count);

/* The document with this _id, borrowed (NULL if none). */
fts_double_doc_t *fts_double_coll_get(const fts_double_coll_t *coll, const bson_value_t *id);
/* Inserts, taking over the caller's reference; false (and nothing taken) on a duplicate _id. */
bool fts_double_coll_insert(fts_double_coll_t *coll, fts_double_doc_t *doc);
/* Replaces the document with the same _id, taking over the caller's reference to doc and
 * returning the old document's reference to the caller. */
fts_double_doc_t *fts_double_coll_replace(fts_double_coll_t *coll, fts_double_doc_t *doc);
/* Removes by _id and returns the collection's reference to the caller (NULL if absent). */
fts_double_doc_t *fts_double_coll_remove(fts_double_coll_t *coll, const bson_value_t *id);

/* Calls fn for each document in _id order (reverse: descending) until it returns false. The
 * collection must not be changed during the walk. */
typedef bool (*fts_double_walk_fn)(fts_double_doc_t *doc, void *arg);
void fts_double_coll_walk(const fts_double_coll_t *coll, bool reverse, fts_double_walk_fn fn,
                          void *arg);

#endif
