/*
 * mongo_admin.c - the operator's reads of mongo_admin.h over one libmongoc client.
 */
#include "mongo_admin.h"

#include <stdio.h>
#include <string.h>

#include <mongoc/mongoc.h>

#include "mongo_source.h"

struct fts_mongo_admin {
    mongoc_client_t *client;
    mongoc_collection_t *collection;
    char *database;
};

static bool mongo_fail(fts_error_t *err, const char *what, const bson_error_t *error)
{
    bool no_server =
        error->domain == MONGOC_ERROR_SERVER_SELECTION || error->domain == MONGOC_ERROR_STREAM;
    return fts_error_set(err, FTS_ERROR_MONGO,
                         no_server ? FTS_ERROR_CODE_CONNECT : FTS_ERROR_CODE_SERVER,
                         "MongoDB %s failed: %s", what, error->message);
}

fts_mongo_admin_t *fts_mongo_admin_new(const char *uri, const char *database,
                                       const char *collection, fts_error_t *err)
{
    fts_mongo_init();
    bson_error_t error;
    mongoc_uri_t *parsed = mongoc_uri_new_with_error(uri, &error);
    if (!parsed) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID, "FTSYNC_MONGO_URI: %s",
                      error.message);
        return NULL;
    }
    if (!mongoc_uri_get_appname(parsed)) {
        mongoc_uri_set_appname(parsed, "ftsync-admin");
    }
    /* An operator's command should say "not reachable" within seconds, not after libmongoc's
     * 30 s default; a timeout written in the URI wins. */
    if (!mongoc_uri_has_option(parsed, MONGOC_URI_SERVERSELECTIONTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
    }
    mongoc_client_t *client = mongoc_client_new_from_uri_with_error(parsed, &error);
    mongoc_uri_destroy(parsed);
    if (!client) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID, "FTSYNC_MONGO_URI: %s",
                      error.message);
        return NULL;
    }
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    fts_mongo_admin_t *admin = bson_malloc0(sizeof *admin);
    admin->client = client;
    admin->database = bson_strdup(database);
    admin->collection = mongoc_client_get_collection(client, database, collection);
    return admin;
}

void fts_mongo_admin_destroy(fts_mongo_admin_t *admin)
{
    if (!admin) {
        return;
    }
    mongoc_collection_destroy(admin->collection);
    mongoc_client_destroy(admin->client);
    bson_free(admin->database);
    bson_free(admin);
}

bool fts_mongo_admin_server_version(fts_mongo_admin_t *admin, char *out, size_t size,
                                    fts_error_t *err)
{
    bson_t command = BSON_INITIALIZER;
    bson_t reply;
    bson_error_t error;
    BSON_APPEND_INT32(&command, "buildInfo", 1);
    bool ok = mongoc_client_command_simple(admin->client, "admin", &command, NULL, &reply, &error);
    bson_iter_t iter;
    if (!ok) {
        mongo_fail(err, "buildInfo", &error);
    } else if (bson_iter_init_find(&iter, &reply, "version") && BSON_ITER_HOLDS_UTF8(&iter)) {
        snprintf(out, size, "%s", bson_iter_utf8(&iter, NULL));
    } else {
        ok = fts_error_set(err, FTS_ERROR_MONGO, FTS_ERROR_CODE_PROTOCOL,
                           "MongoDB buildInfo: the reply has no version");
    }
    bson_destroy(&reply);
    bson_destroy(&command);
    return ok;
}

bool fts_mongo_admin_count(fts_mongo_admin_t *admin, uint64_t *count, fts_error_t *err)
{
    bson_error_t error;
    int64_t n =
        mongoc_collection_estimated_document_count(admin->collection, NULL, NULL, NULL, &error);
    if (n < 0) {
        return mongo_fail(err, "count", &error);
    }
    *count = (uint64_t)n;
    return true;
}

bool fts_mongo_admin_find_in(fts_mongo_admin_t *admin, const char *field, const bson_t *values,
                             fts_mongo_admin_doc_fn fn, void *context, fts_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    bson_t condition;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, field, &condition);
    BSON_APPEND_ARRAY(&condition, "$in", values);
    bson_append_document_end(&filter, &condition);
    mongoc_cursor_t *cursor =
        mongoc_collection_find_with_opts(admin->collection, &filter, NULL, NULL);
    const bson_t *doc;
    bool ok = true;
    while (mongoc_cursor_next(cursor, &doc)) {
        if (!fn(doc, context)) {
            break;
        }
    }
    bson_error_t error;
    if (mongoc_cursor_error(cursor, &error)) {
        ok = mongo_fail(err, "find", &error);
    }
    mongoc_cursor_destroy(cursor);
    bson_destroy(&filter);
    return ok;
}
