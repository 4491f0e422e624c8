/*
 * transform.h - one change event (or one snapshot document) in, zero or one action out.
 *
 * The transform worker calls this for every event the extract parent frames to it; the
 * actions it returns are queued in the Redis stream (action.h). The event is the document
 * libmongoc's change stream returns ({_id, operationType, clusterTime, ns, documentKey,
 * fullDocument, fullDocumentBeforeChange, ...}).
 *
 *   operationType            action
 *   insert, replace          index the projected fullDocument (missing fullDocument: error)
 *   update + fullDocument    index the projected fullDocument
 *   update, fullDocument     delete: with updateLookup a null post-image means the document
 *     null or absent         was deleted after the update (its own delete event follows)
 *   delete                   delete
 *   drop                     on_drop delete: a drop action for the namespace; ignore: none
 *   invalidate               none (the caller reopens the stream with startAfter)
 *   rename, dropDatabase,    error FTS_TRANSFORM_UNSUPPORTED_EVENT naming the event: the
 *     anything else          caller enters a clear error state instead of guessing
 * A snapshot document becomes an index action with origin "snapshot" and the snapshot's time.
 *
 * Versions (invariant 3) come from the event's clusterTime and its position inside its
 * transaction (fts_version_compute, fts_version_txn_position); the namespace from its ns. The id of
 * a delete must be computed exactly like the id of an index (projection.h), or the delete would
 * miss the document:
 *   - the id field is looked up in documentKey first: it always has _id, and on a sharded
 *     collection also the shard key;
 *   - otherwise in fullDocumentBeforeChange, the pre-image;
 *   - otherwise, with the id map on (options.id_map, FTSYNC_ID_MAP), from the id map: the
 *     transform cannot read it (it knows no server), so it says so in the event's
 *     fts_id_map_need_t (FTS_ID_MAP_LOOKUP) and the worker fills the id from the map, or
 *     dead-letters the event when the map does not know the document;
 *   - otherwise (map off) the event fails with FTS_TRANSFORM_NEEDS_PRE_IMAGE. So with an id
 *     field other than _id (and not in the shard key) and the map off, deletes need
 *     pre-images: enable changeStreamPreAndPostImages on the collection and open the stream
 *     with fullDocumentBeforeChange. A lookup in MongoDB at delete time could not work: the
 *     document is gone.
 * With the map on, every action also says what it means for the map (fts_id_map_need_t): an
 * index sets the document's entry, a delete removes it, and an update or replace may have
 * changed the id field's value, so the worker deletes the index id the document had before
 * (the pre-image's, else the map's) when it differs from the new one, before indexing the new.
 *
 * A transform plugin (ftsync_plugin.h), when configured, sees every document about to be
 * indexed, before the projection; the id always comes from the original document. A plugin's
 * DROP becomes a delete of that id; its errors fail the event with FTS_PLUGIN_FAILED.
 *
 * Errors are FTS_ERROR_INPUT and start with the event's type, namespace and cluster time.
 * Their codes tell the worker what to do: FTS_TRANSFORM_UNSUPPORTED_EVENT and
 * FTS_TRANSFORM_NEEDS_PRE_IMAGE are states only an operator can resolve (stop with a clear
 * error); any other code concerns this one event (dead-letter it with the message and go on).
 */
#ifndef FTS_TRANSFORM_H
#define FTS_TRANSFORM_H

#include <stdbool.h>
#include <stdint.h>

#include <bson/bson.h>

#include "action.h"
#include "config.h"
#include "error.h"
#include "plugin.h"

/* An event ftsync cannot follow (rename, dropDatabase, an unknown operationType). */
#define FTS_TRANSFORM_UNSUPPORTED_EVENT 1201
/* A delete whose id cannot be computed without the pre-image, and the event has none. */
#define FTS_TRANSFORM_NEEDS_PRE_IMAGE 1202

typedef struct {
    bool id_map;                     /* keep the id map (README.md, Extract: the id map) */
    const char *id_field;            /* NULL: "_id" */
    bool id_typed;                   /* FTSYNC_ID_FORMAT=typed (projection.h) */
    const fts_string_list_t *fields; /* NULL or empty: the whole document */
    fts_on_drop_t on_drop;           /* config.h */
    const char *plugin_path;         /* NULL or "": no plugin */
} fts_transform_options_t;

typedef struct fts_transform fts_transform_t;

/* What an action means for the id map (options.id_map on; FTS_ID_MAP_NONE when off). */
typedef enum {
    FTS_ID_MAP_NONE = 0,   /* nothing: a drop, or the map is off */
    FTS_ID_MAP_SET,        /* the document (source_id) is indexed under the action's id: set it */
    FTS_ID_MAP_CHANGE,     /* as SET, but the id field may have changed (update, replace): the
                            * id it had before (prior_id, else the map's) is deleted first when
                            * it differs from the action's */
    FTS_ID_MAP_REMOVE,     /* a delete whose id the event gave: remove the entry */
    FTS_ID_MAP_LOOKUP,     /* a delete only the map can name: the action has no id yet (and was
                            * not validated); the caller takes the id from the map and removes
                            * the entry, or dead-letters the event when the map does not know
                            * source_id */
    FTS_ID_MAP_LOOKUP_KEEP /* as LOOKUP for an update whose post-image is gone (deleted since):
                            * the entry stays for the delete event that follows, and when the
                            * map does not know the document the action is dropped (that
                            * delete event is then dead-lettered on its own) */
} fts_id_map_use_t;

typedef struct {
    fts_id_map_use_t use;
    char *source_id; /* owned; canonical extended JSON of the _id; NULL with NONE */
    char *prior_id;  /* owned; CHANGE: the index id of the pre-image, NULL without one */
    size_t prior_id_len;
} fts_id_map_need_t;

/* Frees what need owns and empties it; accepts an empty one. */
void fts_id_map_need_cleanup(fts_id_map_need_t *need);

/* Canonical extended JSON of a value (the form of the map's keys and of the snapshot's
 * last_id), e.g. { "$oid" : "..." } or { "$numberInt" : "7" }. Never NULL: allocation failure
 * aborts; bson_free it. */
char *fts_transform_value_json(const bson_value_t *value);

/* Whether the transform was built with the id map on. */
bool fts_transform_id_map(const fts_transform_t *transform);

/* Whether two documents can map to one index id with these options, so the queue must keep
 * the owners of the index ids (README.md, Extract: index ids): a plain id format (an int32
 * 424242 and a string "424242", an ObjectId and its hex string), or an id field other than
 * _id (two documents with one value). Only _id with the typed format cannot collide. */
bool fts_transform_owners(const fts_transform_t *transform);

/* The _id of the document a change event (event) or snapshot document (document, with event
 * NULL) is about, as canonical extended JSON (fts_transform_value_json; bson_free it):
 * documentKey._id, else the document's own _id. NULL when there is none (a drop). */
char *fts_transform_source_id(const bson_t *event, const bson_t *document);

/* "delete" / "ignore". */
bool fts_on_drop_parse(const char *text, fts_on_drop_t *on_drop);
const char *fts_on_drop_name(fts_on_drop_t on_drop);

/* Builds the projection and loads the plugin. Options are copied. Fails (FTS_ERROR_CONFIG)
 * on a bad field list or a plugin that cannot be loaded. */
fts_transform_t *fts_transform_new(const fts_transform_options_t *options, fts_error_t *err);
void fts_transform_destroy(fts_transform_t *transform);

/* Turns a change event into an action. On success *produced says whether action was filled
 * (the caller cleans it up); on failure action is left empty. action must have been
 * initialised (fts_action_init); whatever it held is released first. Without a need to fill,
 * the id map is not used (a delete that needs it fails with FTS_TRANSFORM_NEEDS_PRE_IMAGE). */
bool fts_transform_event(fts_transform_t *transform, const bson_t *event, fts_action_t *action,
                         bool *produced, fts_error_t *err);

/* As fts_transform_event, and fills need (emptied first; cleaned up by the caller) with what
 * the action means for the id map when the map is on. */
bool fts_transform_event_mapped(fts_transform_t *transform, const bson_t *event,
                                fts_action_t *action, bool *produced, fts_id_map_need_t *need,
                                fts_error_t *err);

/* Turns a document read by the snapshot of ns ("db.collection"), started at cluster time
 * (seconds, increment), into an index action (or, when the plugin drops it, a delete). */
bool fts_transform_snapshot(fts_transform_t *transform, const bson_t *document, const char *ns,
                            uint32_t seconds, uint32_t increment, fts_action_t *action,
                            bool *produced, fts_error_t *err);

/* As fts_transform_snapshot, and fills need (FTS_ID_MAP_SET when the map is on). */
bool fts_transform_snapshot_mapped(fts_transform_t *transform, const bson_t *document,
                                   const char *ns, uint32_t seconds, uint32_t increment,
                                   fts_action_t *action, bool *produced, fts_id_map_need_t *need,
                                   fts_error_t *err);

#endif
