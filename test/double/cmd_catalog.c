/*
 * cmd_catalog.c - collections and databases: create, drop, dropDatabase, renameCollection,
 * collMod, listCollections, and the index commands.
 *
 * Indexes: only the _id index exists and is enforced. createIndexes records non-unique index
 * specifications so that listIndexes shows them (they change nothing else); a unique
 * secondary index is refused rather than silently not enforced.
 */
#include "bsonval.h"
#include "commands.h"
#include "cursor.h"
#include "writes.h"

#include <stdio.h>
#include <string.h>

static void append_id_index(bson_t *dst, const char *key)
{
    bson_t index, spec;
    bson_append_document_begin(dst, key, -1, &index);
    bson_append_int32(&index, "v", 1, 2);
    bson_append_document_begin(&index, "key", 3, &spec);
    bson_append_int32(&spec, "_id", 3, 1);
    bson_append_document_end(&index, &spec);
    bson_append_utf8(&index, "name", 4, "_id_", 4);
    bson_append_document_end(dst, &index);
}

/* changeStreamPreAndPostImages: {enabled: <bool>} from a create/collMod command. */
static bool images_option(fts_double_cmd_t *cmd, bool *present, bool *enabled)
{
    bson_t opt;
    if (!fts_double_cmd_get_doc(cmd, "changeStreamPreAndPostImages", &opt, present)) {
        return false;
    }
    bson_value_t v;
    *enabled = *present && fts_double_doc_get(&opt, "enabled", &v) && fts_double_value_truthy(&v);
    return true;
}

fts_double_cmd_status_t fts_double_cmd_create(fts_double_cmd_t *cmd)
{
    const char *name;
    bool present, enabled;
    bson_value_t v;
    if (!fts_double_cmd_collection(cmd, &name) || !images_option(cmd, &present, &enabled)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (fts_double_doc_get(cmd->body, "viewOn", &v) ||
        fts_double_doc_get(cmd->body, "timeseries", &v)) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_BAD_VALUE,
                                   "views and time-series collections are not supported by "
                                   "ftsync-mongo-double");
    }
    if (fts_double_store_find(cmd->srv->store, cmd->db, name)) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NAMESPACE_EXISTS,
                                   "Collection %s.%s already exists.", cmd->db, name);
    }
    fts_double_write_create(cmd->srv, cmd->db, name, enabled);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_coll_mod(fts_double_cmd_t *cmd)
{
    const char *name;
    bool present, enabled;
    if (!fts_double_cmd_collection(cmd, &name) || !images_option(cmd, &present, &enabled)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    if (!coll) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NAMESPACE_NOT_FOUND, "ns does not exist");
    }
    if (present) {
        coll->images = enabled;
    }
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_drop(fts_double_cmd_t *cmd)
{
    const char *name;
    if (!fts_double_cmd_collection(cmd, &name)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    if (!coll) {
        /* mongod 6.0; 7.0 made dropping a missing collection succeed. */
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NAMESPACE_NOT_FOUND, "ns not found");
    }
    int32_t indexes = (int32_t)coll->index_count + 1;
    char ns[512];
    snprintf(ns, sizeof ns, "%s", coll->ns->full);
    fts_double_write_drop(cmd->srv, coll);
    bson_append_int32(&cmd->reply, "nIndexesWas", 11, indexes);
    bson_append_utf8(&cmd->reply, "ns", 2, ns, -1);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_drop_database(fts_double_cmd_t *cmd)
{
    fts_double_write_drop_database(cmd->srv, cmd->db);
    bson_append_utf8(&cmd->reply, "dropped", 7, cmd->db, -1);
    return FTS_DOUBLE_CMD_OK;
}

/* Splits "db.coll" at the first dot. */
static bool split_ns(fts_double_cmd_t *cmd, const bson_value_t *v, const char *field, char *db,
                     size_t db_size, const char **coll)
{
    const char *dot = v->value_type == BSON_TYPE_UTF8 ? strchr(v->value.v_utf8.str, '.') : NULL;
    if (!dot || dot == v->value.v_utf8.str || !dot[1] ||
        (size_t)(dot - v->value.v_utf8.str) >= db_size) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_NAMESPACE,
                                    "Invalid %s namespace: %s", field,
                                    v->value_type == BSON_TYPE_UTF8 ? v->value.v_utf8.str : "?");
    }
    memcpy(db, v->value.v_utf8.str, (size_t)(dot - v->value.v_utf8.str));
    db[dot - v->value.v_utf8.str] = '\0';
    *coll = dot + 1;
    return true;
}

fts_double_cmd_status_t fts_double_cmd_rename_collection(fts_double_cmd_t *cmd)
{
    bson_value_t from_v, to_v;
    char from_db[256], to_db[256];
    const char *from = NULL, *to = NULL;
    bool drop_target;
    if (!fts_double_doc_get(cmd->body, "renameCollection", &from_v) ||
        !fts_double_doc_get(cmd->body, "to", &to_v) ||
        !split_ns(cmd, &from_v, "source", from_db, sizeof from_db, &from) ||
        !split_ns(cmd, &to_v, "target", to_db, sizeof to_db, &to)) {
        if (!cmd->err.code) {
            fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_NAMESPACE,
                                 "renameCollection needs 'db.coll' strings for both names");
        }
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_cmd_get_bool(cmd, "dropTarget", false, &drop_target);
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, from_db, from);
    if (!coll) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NAMESPACE_NOT_FOUND,
                                   "Source collection %s.%s does not exist", from_db, from);
    }
    if (strcmp(from_db, to_db) == 0 && strcmp(from, to) == 0) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_ILLEGAL_OPERATION,
                                   "Can't rename a collection to itself");
    }
    if (fts_double_store_find(cmd->srv->store, to_db, to) && !drop_target) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NAMESPACE_EXISTS, "target namespace exists");
    }
    fts_double_write_rename(cmd->srv, coll, to_db, to);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_list_collections(fts_double_cmd_t *cmd)
{
    bson_t filter;
    bool has_filter, name_only;
    if (!fts_double_cmd_get_doc(cmd, "filter", &filter, &has_filter) ||
        (has_filter && !fts_double_match_validate(&filter, &cmd->err))) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_cmd_get_bool(cmd, "nameOnly", false, &name_only);
    int64_t batch = FTS_DOUBLE_DEFAULT_FIRST_BATCH;
    bson_value_t v;
    if (fts_double_doc_get_path(cmd->body, "cursor.batchSize", &v) &&
        fts_double_value_is_number(&v)) {
        batch = fts_double_value_as_int64(&v);
    }
    size_t count;
    fts_double_coll_t **colls = fts_double_store_list(cmd->srv->store, cmd->db, &count);
    fts_double_docvec_t docs = {0};
    for (size_t i = 0; i < count; i++) {
        bson_t entry = BSON_INITIALIZER, sub;
        bson_append_utf8(&entry, "name", 4, colls[i]->ns->coll, -1);
        bson_append_utf8(&entry, "type", 4, "collection", -1);
        if (!name_only) {
            bson_append_document_begin(&entry, "options", 7, &sub);
            if (colls[i]->images) {
                bson_t images;
                bson_append_document_begin(&sub, "changeStreamPreAndPostImages", -1, &images);
                bson_append_bool(&images, "enabled", 7, true);
                bson_append_document_end(&sub, &images);
            }
            bson_append_document_end(&entry, &sub);
            bson_append_document_begin(&entry, "info", 4, &sub);
            bson_append_bool(&sub, "readOnly", 8, false);
            bson_append_binary(&sub, "uuid", 4, BSON_SUBTYPE_UUID, colls[i]->uuid, 16);
            bson_append_document_end(&entry, &sub);
            append_id_index(&entry, "idIndex");
        }
        if (!has_filter || fts_double_match(&entry, &filter)) {
            fts_double_docvec_push(&docs, fts_double_doc_from_bson(&entry));
        }
        bson_destroy(&entry);
    }
    bson_free(colls);
    char ns[300];
    snprintf(ns, sizeof ns, "%s.$cmd.listCollections", cmd->db);
    fts_double_cursor_reply_docs(cmd->srv, &cmd->reply, cmd->db, "$cmd.listCollections", ns, &docs,
                                 NULL, batch, false);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_list_indexes(fts_double_cmd_t *cmd)
{
    const char *name;
    if (!fts_double_cmd_collection(cmd, &name)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    if (!coll) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NAMESPACE_NOT_FOUND,
                                   "ns does not exist: %s.%s", cmd->db, name);
    }
    fts_double_docvec_t docs = {0};
    bson_t id_index = BSON_INITIALIZER, wrapper = BSON_INITIALIZER;
    append_id_index(&wrapper, "0");
    bson_value_t first;
    fts_double_doc_get(&wrapper, "0", &first);
    fts_double_value_as_doc(&first, &id_index);
    fts_double_docvec_push(&docs, fts_double_doc_from_bson(&id_index));
    bson_destroy(&wrapper);
    bson_iter_t it;
    bson_iter_init(&it, coll->indexes);
    while (bson_iter_next(&it)) {
        bson_t spec;
        fts_double_value_as_doc(bson_iter_value(&it), &spec);
        fts_double_docvec_push(&docs, fts_double_doc_from_bson(&spec));
    }
    char ns[600];
    snprintf(ns, sizeof ns, "%s.$cmd.listIndexes.%s", cmd->db, name);
    char coll_name[300];
    snprintf(coll_name, sizeof coll_name, "$cmd.listIndexes.%s", name);
    fts_double_cursor_reply_docs(cmd->srv, &cmd->reply, cmd->db, coll_name, ns, &docs, NULL,
                                 FTS_DOUBLE_DEFAULT_FIRST_BATCH, false);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_create_indexes(fts_double_cmd_t *cmd)
{
    const char *name;
    bson_value_t indexes;
    if (!fts_double_cmd_collection(cmd, &name)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    if (!fts_double_doc_get(cmd->body, "indexes", &indexes) ||
        indexes.value_type != BSON_TYPE_ARRAY) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_TYPE_MISMATCH,
                                   "'indexes' must be an array of index specifications");
    }
    bson_t list;
    bson_iter_t it;
    fts_double_value_as_doc(&indexes, &list);
    bson_iter_init(&it, &list);
    while (bson_iter_next(&it)) {
        bson_t spec;
        bson_value_t v;
        if (!BSON_ITER_HOLDS_DOCUMENT(&it) ||
            !fts_double_value_as_doc(bson_iter_value(&it), &spec) ||
            !fts_double_doc_get(&spec, "key", &v) || v.value_type != BSON_TYPE_DOCUMENT ||
            !fts_double_doc_get(&spec, "name", &v) || v.value_type != BSON_TYPE_UTF8) {
            return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                       "an index specification needs 'key' (an object) and "
                                       "'name' (a string)");
        }
        if (fts_double_doc_get(&spec, "unique", &v) && fts_double_value_truthy(&v)) {
            return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_CANNOT_CREATE_INDEX,
                                       "unique secondary indexes are not supported by "
                                       "ftsync-mongo-double");
        }
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    bool created = coll == NULL;
    coll = fts_double_write_collection(cmd->srv, cmd->db, name);
    int32_t before = (int32_t)coll->index_count + 1;
    bson_iter_init(&it, &list);
    while (bson_iter_next(&it)) {
        bson_t spec;
        bson_value_t index_name;
        fts_double_value_as_doc(bson_iter_value(&it), &spec);
        fts_double_doc_get(&spec, "name", &index_name);
        bool exists = strcmp(index_name.value.v_utf8.str, "_id_") == 0;
        bson_iter_t existing;
        bson_iter_init(&existing, coll->indexes);
        while (!exists && bson_iter_next(&existing)) {
            bson_t e;
            bson_value_t n;
            fts_double_value_as_doc(bson_iter_value(&existing), &e);
            exists = fts_double_doc_get(&e, "name", &n) &&
                     strcmp(n.value.v_utf8.str, index_name.value.v_utf8.str) == 0;
        }
        if (!exists) {
            char buf[16];
            bson_t stored = BSON_INITIALIZER;
            bson_append_int32(&stored, "v", 1, 2);
            bson_concat(&stored, &spec);
            bson_append_document(coll->indexes, fts_double_index_key(coll->index_count++, buf), -1,
                                 &stored);
            bson_destroy(&stored);
        }
    }
    bson_append_int32(&cmd->reply, "numIndexesBefore", 16, before);
    bson_append_int32(&cmd->reply, "numIndexesAfter", 15, (int32_t)coll->index_count + 1);
    bson_append_bool(&cmd->reply, "createdCollectionAutomatically", 30, created);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_drop_indexes(fts_double_cmd_t *cmd)
{
    const char *name;
    if (!fts_double_cmd_collection(cmd, &name)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    if (!coll) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NAMESPACE_NOT_FOUND, "ns not found %s.%s",
                                   cmd->db, name);
    }
    bson_value_t which;
    fts_double_doc_get(cmd->body, "index", &which);
    bson_append_int32(&cmd->reply, "nIndexesWas", 11, (int32_t)coll->index_count + 1);
    bool all = which.value_type == BSON_TYPE_UTF8 && strcmp(which.value.v_utf8.str, "*") == 0;
    bson_t kept = BSON_INITIALIZER;
    uint32_t n = 0;
    bool found = all;
    bson_iter_t it;
    bson_iter_init(&it, coll->indexes);
    while (bson_iter_next(&it)) {
        bson_t spec;
        bson_value_t index_name, key;
        fts_double_value_as_doc(bson_iter_value(&it), &spec);
        fts_double_doc_get(&spec, "name", &index_name);
        fts_double_doc_get(&spec, "key", &key);
        bool drop =
            all ||
            (which.value_type == BSON_TYPE_UTF8 &&
             strcmp(index_name.value.v_utf8.str, which.value.v_utf8.str) == 0) ||
            (which.value_type == BSON_TYPE_DOCUMENT && fts_double_value_compare(&key, &which) == 0);
        if (drop) {
            found = true;
            continue;
        }
        char buf[16];
        bson_append_document(&kept, fts_double_index_key(n++, buf), -1, &spec);
    }
    if (!found) {
        bson_destroy(&kept);
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_INDEX_NOT_FOUND, "index not found");
    }
    /* bson_t values must not be copied by assignment (libbson keeps a pointer to itself). */
    bson_reinit(coll->indexes);
    bson_concat(coll->indexes, &kept);
    bson_destroy(&kept);
    coll->index_count = n;
    return FTS_DOUBLE_CMD_OK;
}
