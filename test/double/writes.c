/*
 * writes.c - data changes and their change events (see writes.h).
 */
#include "writes.h"

#include "changestream.h"
#include "eventlog.h"
#include "txn.h"

#include <string.h>

static void log_event(fts_double_server_t *srv, fts_double_event_t *ev, const uint8_t *uuid)
{
    if (strcmp(ev->ns->db, "local") == 0) {
        fts_double_doc_unref(ev->pre);
        fts_double_doc_unref(ev->post);
        if (ev->update_desc) {
            bson_destroy(ev->update_desc);
        }
        return;
    }
    if (uuid) {
        memcpy(ev->uuid, uuid, 16);
    }
    if (srv->txn) {
        /* Inside a transaction nothing is logged before the commit (txn.h). */
        fts_double_txn_buffer_event(srv->txn, ev);
        return;
    }
    fts_double_eventlog_append(&srv->log, ev);
    fts_double_stream_notify(srv);
}

fts_double_coll_t *fts_double_write_create(fts_double_server_t *srv, const char *db,
                                           const char *name, bool images)
{
    fts_double_coll_t *coll = fts_double_store_create(srv->store, db, name);
    coll->images = images;
    fts_double_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.op = FTS_DOUBLE_OP_CREATE;
    ev.ns = coll->ns;
    log_event(srv, &ev, coll->uuid);
    return coll;
}

fts_double_coll_t *fts_double_write_collection(fts_double_server_t *srv, const char *db,
                                               const char *name)
{
    fts_double_coll_t *coll = fts_double_store_find(srv->store, db, name);
    return coll ? coll : fts_double_write_create(srv, db, name, false);
}

bool fts_double_write_insert(fts_double_server_t *srv, fts_double_coll_t *coll,
                             fts_double_doc_t *doc)
{
    /* One extra reference for the event, taken before the store may reject the document. */
    fts_double_doc_ref(doc);
    if (!fts_double_coll_insert(coll, doc)) {
        fts_double_doc_unref(doc);
        return false;
    }
    fts_double_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.op = FTS_DOUBLE_OP_INSERT;
    ev.ns = coll->ns;
    ev.images = coll->images;
    ev.post = doc;
    log_event(srv, &ev, coll->uuid);
    return true;
}

void fts_double_write_update(fts_double_server_t *srv, fts_double_coll_t *coll,
                             fts_double_doc_t *doc, bson_t *desc)
{
    fts_double_doc_t *old = fts_double_coll_replace(coll, fts_double_doc_ref(doc));
    fts_double_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.op = desc ? FTS_DOUBLE_OP_UPDATE : FTS_DOUBLE_OP_REPLACE;
    ev.ns = coll->ns;
    ev.images = coll->images;
    ev.pre = old; /* the store's reference moves to the event */
    ev.post = doc;
    ev.update_desc = desc;
    log_event(srv, &ev, coll->uuid);
}

void fts_double_write_delete(fts_double_server_t *srv, fts_double_coll_t *coll,
                             const bson_value_t *id)
{
    fts_double_doc_t *old = fts_double_coll_remove(coll, id);
    if (!old) {
        return;
    }
    fts_double_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.op = FTS_DOUBLE_OP_DELETE;
    ev.ns = coll->ns;
    ev.images = coll->images;
    ev.pre = old;
    log_event(srv, &ev, coll->uuid);
}

void fts_double_write_drop(fts_double_server_t *srv, fts_double_coll_t *coll)
{
    fts_double_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.op = FTS_DOUBLE_OP_DROP;
    ev.ns = coll->ns;
    uint8_t uuid[16];
    memcpy(uuid, coll->uuid, 16);
    fts_double_store_drop(srv->store, coll);
    log_event(srv, &ev, uuid);
}

void fts_double_write_drop_database(fts_double_server_t *srv, const char *db)
{
    size_t count;
    fts_double_coll_t **colls = fts_double_store_list(srv->store, db, &count);
    for (size_t i = 0; i < count; i++) {
        fts_double_write_drop(srv, colls[i]);
    }
    bson_free(colls);
    if (count == 0) {
        return; /* dropping a database that does not exist changes nothing, logs nothing */
    }
    fts_double_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.op = FTS_DOUBLE_OP_DROP_DATABASE;
    ev.ns = fts_double_store_intern(srv->store, db, NULL);
    log_event(srv, &ev, NULL);
}

void fts_double_write_rename(fts_double_server_t *srv, fts_double_coll_t *coll, const char *db,
                             const char *name)
{
    fts_double_event_t ev;
    memset(&ev, 0, sizeof ev);
    fts_double_coll_t *target = fts_double_store_find(srv->store, db, name);
    if (target) {
        /* The rename event names the dropped target's UUID (operationDescription.dropTarget
         * with showExpandedEvents), as mongod's rename oplog entry does. */
        ev.has_drop_target = true;
        memcpy(ev.drop_target, target->uuid, 16);
        fts_double_write_drop(srv, target);
    }
    ev.op = FTS_DOUBLE_OP_RENAME;
    ev.ns = coll->ns;
    ev.to = fts_double_store_intern(srv->store, db, name);
    fts_double_store_rename(srv->store, coll, db, name);
    log_event(srv, &ev, coll->uuid);
}
