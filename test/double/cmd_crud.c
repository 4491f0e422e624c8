/*
 * cmd_crud.c - insert, update, delete and findAndModify.
 *
 * Batched writes answer as mongod: {n, nModified, upserted, writeErrors} with ok: 1 even when
 * some statements failed; a duplicate _id is a write error with code 11000, keyPattern and
 * keyValue. ordered (the default) stops at the first failing statement, unordered goes on.
 */
#include "bsonval.h"
#include "commands.h"
#include "query.h"
#include "update.h"
#include "wire.h"
#include "writes.h"

#include <string.h>

/* Accumulates writeErrors. */
typedef struct {
    bson_t array;
    uint32_t count;
} write_errors_t;

static void write_error_add(write_errors_t *we, uint32_t index, const fts_double_error_t *err,
                            const bson_value_t *dup_id)
{
    char buf[16];
    bson_t entry;
    bson_append_document_begin(&we->array, fts_double_index_key(we->count++, buf), -1, &entry);
    bson_append_int32(&entry, "index", 5, (int32_t)index);
    bson_append_int32(&entry, "code", 4, err->code);
    if (dup_id) {
        bson_t doc;
        bson_append_document_begin(&entry, "keyPattern", 10, &doc);
        bson_append_int32(&doc, "_id", 3, 1);
        bson_append_document_end(&entry, &doc);
        bson_append_document_begin(&entry, "keyValue", 8, &doc);
        bson_append_value(&doc, "_id", 3, dup_id);
        bson_append_document_end(&entry, &doc);
    }
    bson_append_utf8(&entry, "errmsg", 6, err->msg, -1);
    bson_append_document_end(&we->array, &entry);
}

static void duplicate_key_error(const fts_double_coll_t *coll, const bson_value_t *id,
                                fts_double_error_t *err)
{
    char *json = fts_double_value_to_json(id);
    fts_double_error_set(err, FTS_DOUBLE_E_DUPLICATE_KEY,
                         "E11000 duplicate key error collection: %s index: _id_ dup key: { _id: "
                         "%s }",
                         coll->ns->full, json);
    bson_free(json);
}

/* Checks an _id mongod would refuse to store. */
static bool valid_id(const bson_t *doc, fts_double_error_t *err)
{
    bson_value_t id;
    if (!fts_double_doc_get(doc, "_id", &id)) {
        return true;
    }
    switch (id.value_type) {
    case BSON_TYPE_ARRAY:
        return fts_double_error_set(err, FTS_DOUBLE_E_INVALID_ID_FIELD,
                                    "The '_id' value cannot be of type array");
    case BSON_TYPE_REGEX:
        return fts_double_error_set(err, FTS_DOUBLE_E_INVALID_ID_FIELD,
                                    "can't use a regex for _id");
    case BSON_TYPE_UNDEFINED:
        return fts_double_error_set(err, FTS_DOUBLE_E_INVALID_ID_FIELD,
                                    "can't use a undefined for _id");
    default:
        return true;
    }
}

static void finish_batch(fts_double_cmd_t *cmd, write_errors_t *we)
{
    if (we->count) {
        bson_append_array(&cmd->reply, "writeErrors", 11, &we->array);
    }
    bson_destroy(&we->array);
}

static bool batch_start(fts_double_cmd_t *cmd, const char *field, fts_double_docs_t *docs,
                        const char **coll_name, bool *ordered)
{
    if (!fts_double_cmd_collection(cmd, coll_name)) {
        return false;
    }
    fts_double_cmd_get_bool(cmd, "ordered", true, ordered);
    if (!fts_double_docs_init(docs, cmd->req, field) || !docs->present) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                    "BSON field '%s.%s' is missing or is not an array", cmd->name,
                                    field);
    }
    return true;
}

fts_double_cmd_status_t fts_double_cmd_insert(fts_double_cmd_t *cmd)
{
    const char *name;
    bool ordered, bad;
    fts_double_docs_t docs;
    if (!batch_start(cmd, "documents", &docs, &name, &ordered)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = NULL;
    write_errors_t we = {BSON_INITIALIZER, 0};
    int32_t n = 0;
    uint32_t index = 0;
    bson_t doc;
    for (; fts_double_docs_next(&docs, &doc, &bad); index++) {
        fts_double_error_t err;
        if (!valid_id(&doc, &err)) {
            write_error_add(&we, index, &err, NULL);
            if (ordered) {
                break;
            }
            continue;
        }
        if (!coll) {
            coll = fts_double_write_collection(cmd->srv, cmd->db, name);
        }
        bson_t stored = BSON_INITIALIZER;
        fts_double_update_ensure_id(&doc, &stored);
        fts_double_doc_t *d = fts_double_doc_from_bson(&stored);
        bson_destroy(&stored);
        if (!fts_double_write_insert(cmd->srv, coll, d)) {
            bson_value_t id;
            fts_double_doc_id(d, &id);
            duplicate_key_error(coll, &id, &err);
            write_error_add(&we, index, &err, &id);
            fts_double_doc_unref(d);
            if (ordered) {
                break;
            }
            continue;
        }
        n++;
    }
    if (bad) {
        bson_destroy(&we.array);
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_TYPE_MISMATCH,
                                   "BSON field 'insert.documents.%u' is the wrong type, expected "
                                   "type 'object'",
                                   index);
    }
    if (index == 0 && we.count == 0) {
        bson_destroy(&we.array);
        return fts_double_cmd_fail(cmd, 16,
                                   "Write batch sizes must be between 1 and 100000. Got "
                                   "0 operations.");
    }
    bson_append_int32(&cmd->reply, "n", 1, n);
    finish_batch(cmd, &we);
    return FTS_DOUBLE_CMD_OK;
}

/* The new version of old under update u; *out NULL when the update changes nothing. */
static bool compute_update(const fts_double_doc_t *old, const bson_value_t *u, bool replacement,
                           fts_double_doc_t **out, bson_t **desc, fts_double_error_t *err)
{
    bson_t old_view, new_doc = BSON_INITIALIZER;
    fts_double_doc_view(old, &old_view);
    *out = NULL;
    *desc = NULL;
    bson_t update;
    fts_double_value_as_doc(u, &update);
    bool ok;
    if (replacement) {
        bson_value_t id;
        fts_double_doc_id(old, &id);
        ok = fts_double_update_replace(&id, &update, &new_doc, err);
    } else {
        *desc = bson_new();
        ok = fts_double_update_apply(&old_view, &update, false, &new_doc, *desc, err);
    }
    if (ok &&
        (new_doc.len != old->len || memcmp(bson_get_data(&new_doc), old->data, old->len) != 0)) {
        *out = fts_double_doc_from_bson(&new_doc);
    }
    if (!ok || !*out) {
        if (*desc) {
            bson_destroy(*desc);
            *desc = NULL;
        }
    }
    bson_destroy(&new_doc);
    return ok;
}

/* The document an upsert inserts when nothing matched. */
static fts_double_doc_t *compute_upsert(const bson_t *query, const bson_value_t *u,
                                        bool replacement, fts_double_error_t *err)
{
    bson_t update, doc = BSON_INITIALIZER, stored = BSON_INITIALIZER;
    fts_double_value_as_doc(u, &update);
    bool ok;
    if (replacement) {
        bson_value_t id, eq;
        bool has_id = fts_double_doc_get(query, "_id", &id);
        if (has_id && id.value_type == BSON_TYPE_DOCUMENT) {
            bson_t ops;
            fts_double_value_as_doc(&id, &ops);
            has_id = fts_double_doc_get(&ops, "$eq", &eq);
            id = eq;
        }
        bson_value_t repl_id;
        ok = fts_double_update_replace(
            has_id && !fts_double_doc_get(&update, "_id", &repl_id) ? &id : NULL, &update, &doc,
            err);
    } else {
        bson_t seed = BSON_INITIALIZER;
        ok = fts_double_update_upsert_seed(query, &seed, err) &&
             fts_double_update_apply(&seed, &update, true, &doc, NULL, err);
        bson_destroy(&seed);
    }
    fts_double_doc_t *out = NULL;
    if (ok && valid_id(&doc, err)) {
        fts_double_update_ensure_id(&doc, &stored);
        out = fts_double_doc_from_bson(&stored);
    }
    bson_destroy(&doc);
    bson_destroy(&stored);
    return out;
}

/* Runs one update statement. Returns false with err on a statement error. */
static bool update_one_statement(fts_double_cmd_t *cmd, const char *name, const bson_t *q,
                                 const bson_value_t *u, bool upsert, bool multi, int32_t *n,
                                 int32_t *modified, bson_value_t *upserted_id,
                                 fts_double_doc_t **upserted, fts_double_error_t *err)
{
    bool replacement;
    if (!fts_double_update_check(u, &replacement, err)) {
        return false;
    }
    if (multi && replacement) {
        return fts_double_error_set(err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                    "multi update is not supported for replacement-style update");
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    fts_double_docvec_t matched = {0};
    if (!fts_double_query_collect(coll, q, NULL, 0, multi ? 0 : 1, &matched, err)) {
        return false;
    }
    bool ok = true;
    if (matched.count == 0 && upsert) {
        fts_double_doc_t *doc = compute_upsert(q, u, replacement, err);
        if (!doc) {
            ok = false;
        } else {
            coll = fts_double_write_collection(cmd->srv, cmd->db, name);
            if (!fts_double_write_insert(cmd->srv, coll, doc)) {
                bson_value_t id;
                fts_double_doc_id(doc, &id);
                duplicate_key_error(coll, &id, err);
                fts_double_doc_unref(doc);
                ok = false;
            } else {
                fts_double_doc_id(doc, upserted_id);
                *upserted = fts_double_doc_ref(doc); /* keeps upserted_id's bytes alive */
                (*n)++;
            }
        }
    }
    for (size_t i = 0; ok && i < matched.count; i++) {
        fts_double_doc_t *new_doc;
        bson_t *desc;
        (*n)++;
        ok = compute_update(matched.items[i], u, replacement, &new_doc, &desc, err);
        if (ok && new_doc) {
            fts_double_write_update(cmd->srv, coll, new_doc, desc);
            (*modified)++;
        }
    }
    fts_double_docvec_destroy(&matched);
    return ok;
}

fts_double_cmd_status_t fts_double_cmd_update(fts_double_cmd_t *cmd)
{
    const char *name;
    bool ordered, bad;
    fts_double_docs_t docs;
    if (!batch_start(cmd, "updates", &docs, &name, &ordered)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    write_errors_t we = {BSON_INITIALIZER, 0};
    bson_t upserted = BSON_INITIALIZER;
    uint32_t nupserted = 0, index = 0;
    int32_t n = 0, modified = 0;
    bson_t spec;
    for (; fts_double_docs_next(&docs, &spec, &bad); index++) {
        fts_double_error_t err = {0};
        bson_value_t q, u, v;
        bool upsert = fts_double_doc_get(&spec, "upsert", &v) && fts_double_value_truthy(&v);
        bool multi = fts_double_doc_get(&spec, "multi", &v) && fts_double_value_truthy(&v);
        bson_t query;
        if (!fts_double_doc_get(&spec, "q", &q) || q.value_type != BSON_TYPE_DOCUMENT ||
            !fts_double_doc_get(&spec, "u", &u)) {
            fts_double_error_set(&err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                 "an update statement needs q (an object) and u");
        } else if (fts_double_doc_get(&spec, "arrayFilters", &v)) {
            fts_double_error_set(&err, FTS_DOUBLE_E_BAD_VALUE,
                                 "arrayFilters are not supported by ftsync-mongo-double");
        } else {
            fts_double_value_as_doc(&q, &query);
            bson_value_t id;
            fts_double_doc_t *upserted_doc = NULL;
            if (update_one_statement(cmd, name, &query, &u, upsert, multi, &n, &modified, &id,
                                     &upserted_doc, &err) &&
                upserted_doc) {
                char buf[16];
                bson_t entry;
                bson_append_document_begin(&upserted, fts_double_index_key(nupserted++, buf), -1,
                                           &entry);
                bson_append_int32(&entry, "index", 5, (int32_t)index);
                bson_append_value(&entry, "_id", 3, &id);
                bson_append_document_end(&upserted, &entry);
            }
            fts_double_doc_unref(upserted_doc);
        }
        if (err.code) {
            write_error_add(&we, index, &err, NULL);
            if (ordered) {
                break;
            }
        }
    }
    if (bad) {
        bson_destroy(&we.array);
        bson_destroy(&upserted);
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_TYPE_MISMATCH,
                                   "BSON field 'update.updates.%u' is the wrong type, expected "
                                   "type 'object'",
                                   index);
    }
    bson_append_int32(&cmd->reply, "n", 1, n);
    bson_append_int32(&cmd->reply, "nModified", 9, modified);
    if (nupserted) {
        bson_append_array(&cmd->reply, "upserted", 8, &upserted);
    }
    bson_destroy(&upserted);
    finish_batch(cmd, &we);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_delete(fts_double_cmd_t *cmd)
{
    const char *name;
    bool ordered, bad;
    fts_double_docs_t docs;
    if (!batch_start(cmd, "deletes", &docs, &name, &ordered)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    write_errors_t we = {BSON_INITIALIZER, 0};
    int32_t n = 0;
    uint32_t index = 0;
    bson_t spec;
    for (; fts_double_docs_next(&docs, &spec, &bad); index++) {
        fts_double_error_t err = {0};
        bson_value_t q, limit;
        bson_t query;
        if (!fts_double_doc_get(&spec, "q", &q) || q.value_type != BSON_TYPE_DOCUMENT ||
            !fts_double_doc_get(&spec, "limit", &limit) || !fts_double_value_is_number(&limit)) {
            fts_double_error_set(&err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                 "a delete statement needs q (an object) and limit (0 or 1)");
        } else if (fts_double_value_as_int64(&limit) != 0 &&
                   fts_double_value_as_int64(&limit) != 1) {
            fts_double_error_set(&err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                 "The limit field in delete objects must be 0 or 1. Got %lld",
                                 (long long)fts_double_value_as_int64(&limit));
        } else {
            fts_double_value_as_doc(&q, &query);
            fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
            fts_double_docvec_t matched = {0};
            if (fts_double_query_collect(coll, &query, NULL, 0, fts_double_value_as_int64(&limit),
                                         &matched, &err)) {
                for (size_t i = 0; i < matched.count; i++) {
                    bson_value_t id;
                    fts_double_doc_id(matched.items[i], &id);
                    fts_double_write_delete(cmd->srv, coll, &id);
                    n++;
                }
            }
            fts_double_docvec_destroy(&matched);
        }
        if (err.code) {
            write_error_add(&we, index, &err, NULL);
            if (ordered) {
                break;
            }
        }
    }
    if (bad) {
        bson_destroy(&we.array);
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_TYPE_MISMATCH,
                                   "BSON field 'delete.deletes.%u' is the wrong type, expected "
                                   "type 'object'",
                                   index);
    }
    bson_append_int32(&cmd->reply, "n", 1, n);
    finish_batch(cmd, &we);
    return FTS_DOUBLE_CMD_OK;
}

static void append_projected(bson_t *dst, const char *key, const fts_double_doc_t *doc,
                             const fts_double_projection_t *projection)
{
    if (!doc) {
        bson_append_null(dst, key, -1);
        return;
    }
    bson_t view, projected;
    fts_double_doc_view(doc, &view);
    bson_append_document_begin(dst, key, -1, &projected);
    fts_double_projection_apply(projection, &view, &projected);
    bson_append_document_end(dst, &projected);
}

fts_double_cmd_status_t fts_double_cmd_find_and_modify(fts_double_cmd_t *cmd)
{
    const char *name;
    if (!fts_double_cmd_collection(cmd, &name)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    bson_t empty = BSON_INITIALIZER, sort, fields, q;
    bool has_query, has_sort, has_fields, remove, want_new, upsert;
    bson_value_t u;
    bool has_update = fts_double_doc_get(cmd->body, "update", &u);
    if (!fts_double_cmd_get_doc(cmd, "query", &q, &has_query) ||
        !fts_double_cmd_get_doc(cmd, "sort", &sort, &has_sort) ||
        !fts_double_cmd_get_doc(cmd, "fields", &fields, &has_fields)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    const bson_t *query = has_query ? &q : &empty;
    fts_double_cmd_get_bool(cmd, "remove", false, &remove);
    fts_double_cmd_get_bool(cmd, "new", false, &want_new);
    fts_double_cmd_get_bool(cmd, "upsert", false, &upsert);
    if (remove && has_update) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                   "Cannot specify both an update and remove=true");
    }
    if (!remove && !has_update) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                   "Either an update or remove=true must be specified");
    }
    if (remove && (upsert || want_new)) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                   "Cannot specify both %s=true and remove=true",
                                   upsert ? "upsert" : "new");
    }
    fts_double_projection_t *projection =
        fts_double_projection_new(has_fields ? &fields : NULL, &cmd->err);
    if (!projection) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    bool replacement = false;
    if (has_update && !fts_double_update_check(&u, &replacement, &cmd->err)) {
        fts_double_projection_destroy(projection);
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_coll_t *coll = fts_double_store_find(cmd->srv->store, cmd->db, name);
    fts_double_docvec_t matched = {0};
    if (!fts_double_query_collect(coll, query, has_sort ? &sort : NULL, 0, 1, &matched,
                                  &cmd->err)) {
        fts_double_projection_destroy(projection);
        return FTS_DOUBLE_CMD_ERROR;
    }
    fts_double_cmd_status_t status = FTS_DOUBLE_CMD_OK;
    bson_t last_error;
    fts_double_doc_t *found = matched.count ? matched.items[0] : NULL;
    fts_double_doc_t *value = NULL;  /* borrowed */
    fts_double_doc_t *result = NULL; /* owned */
    bson_append_document_begin(&cmd->reply, "lastErrorObject", 15, &last_error);
    if (remove) {
        bson_append_int32(&last_error, "n", 1, found ? 1 : 0);
        if (found) {
            bson_value_t id;
            fts_double_doc_id(found, &id);
            fts_double_write_delete(cmd->srv, coll, &id);
            value = found;
        }
    } else if (found) {
        bson_t *desc;
        if (!compute_update(found, &u, replacement, &result, &desc, &cmd->err)) {
            status = FTS_DOUBLE_CMD_ERROR;
        } else {
            if (result) {
                fts_double_write_update(cmd->srv, coll, fts_double_doc_ref(result), desc);
            }
            bson_append_int32(&last_error, "n", 1, 1);
            bson_append_bool(&last_error, "updatedExisting", 15, true);
            value = want_new ? (result ? result : found) : found;
        }
    } else if (upsert) {
        result = compute_upsert(query, &u, replacement, &cmd->err);
        if (!result) {
            status = FTS_DOUBLE_CMD_ERROR;
        } else {
            coll = fts_double_write_collection(cmd->srv, cmd->db, name);
            bson_value_t id;
            fts_double_doc_id(result, &id);
            if (!fts_double_write_insert(cmd->srv, coll, fts_double_doc_ref(result))) {
                fts_double_doc_unref(result);
                duplicate_key_error(coll, &id, &cmd->err);
                status = FTS_DOUBLE_CMD_ERROR;
            } else {
                bson_append_int32(&last_error, "n", 1, 1);
                bson_append_bool(&last_error, "updatedExisting", 15, false);
                bson_append_value(&last_error, "upserted", 8, &id);
                value = want_new ? result : NULL;
            }
        }
    } else {
        bson_append_int32(&last_error, "n", 1, 0);
        bson_append_bool(&last_error, "updatedExisting", 15, false);
    }
    bson_append_document_end(&cmd->reply, &last_error);
    if (status == FTS_DOUBLE_CMD_OK) {
        append_projected(&cmd->reply, "value", value, projection);
    }
    fts_double_doc_unref(result);
    fts_double_docvec_destroy(&matched);
    fts_double_projection_destroy(projection);
    return status;
}
