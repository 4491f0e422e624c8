/*
 * cmd_admin.c - the administrative commands drivers and tests send: ping, buildInfo, sessions,
 * listDatabases, serverStatus, getParameter, configureFailPoint and a few identity commands.
 * hello and the replSet* commands live in replset.c.
 */
#include "bsonval.h"
#include "commands.h"
#include "txn.h"
#include "cursor.h"
#include "replset.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

fts_double_cmd_status_t fts_double_cmd_ping(fts_double_cmd_t *cmd)
{
    (void)cmd;
    return FTS_DOUBLE_CMD_OK;
}

/* saslStart, saslContinue, authenticate: the double has no users, so every authentication
 * fails as it does on mongod for a user that does not exist or a wrong password: 18
 * AuthenticationFailed, "Authentication failed." (mongod tells neither case apart, so as not to
 * reveal which users exist; MongoDB manual, "Authentication on Self-Managed Deployments" and
 * "SCRAM"; src/mongo/db/auth/sasl_commands.cpp). A client only authenticates when its URI has
 * credentials, so this changes nothing for URIs without them. */
fts_double_cmd_status_t fts_double_cmd_authenticate(fts_double_cmd_t *cmd)
{
    return fts_double_cmd_fail(cmd, 18, "Authentication failed.");
}

fts_double_cmd_status_t fts_double_cmd_build_info(fts_double_cmd_t *cmd)
{
    bson_t array;
    bson_append_utf8(&cmd->reply, "version", 7, "6.0.0", -1);
    bson_append_utf8(&cmd->reply, "gitVersion", 10, "ftsync-mongo-double", -1);
    bson_append_array_begin(&cmd->reply, "modules", 7, &array);
    bson_append_array_end(&cmd->reply, &array);
    bson_append_utf8(&cmd->reply, "allocator", 9, "system", -1);
    bson_append_utf8(&cmd->reply, "javascriptEngine", 16, "none", -1);
    bson_append_utf8(&cmd->reply, "sysInfo", 7, "deprecated", -1);
    bson_append_array_begin(&cmd->reply, "versionArray", 12, &array);
    bson_append_int32(&array, "0", 1, 6);
    bson_append_int32(&array, "1", 1, 0);
    bson_append_int32(&array, "2", 1, 0);
    bson_append_int32(&array, "3", 1, 0);
    bson_append_array_end(&cmd->reply, &array);
    bson_append_int32(&cmd->reply, "bits", 4, 64);
    bson_append_bool(&cmd->reply, "debug", 5, false);
    bson_append_int32(&cmd->reply, "maxBsonObjectSize", 17, 16777216);
    bson_append_array_begin(&cmd->reply, "storageEngines", 14, &array);
    bson_append_utf8(&array, "0", 1, "inMemory", -1);
    bson_append_array_end(&cmd->reply, &array);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_sessions(fts_double_cmd_t *cmd)
{
    /* Sessions carry no state in the double beyond their transactions (txn.h). */
    if (strcmp(cmd->name, "endSessions") == 0 || strcmp(cmd->name, "killSessions") == 0) {
        fts_double_txn_end_sessions(cmd->srv, cmd->body);
    }
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_start_session(fts_double_cmd_t *cmd)
{
    uint8_t uuid[16];
    for (int i = 0; i < 16; i++) {
        uuid[i] = (uint8_t)(rand() & 0xff);
    }
    uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
    uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
    bson_t id;
    bson_append_document_begin(&cmd->reply, "id", 2, &id);
    bson_append_binary(&id, "id", 2, BSON_SUBTYPE_UUID, uuid, 16);
    bson_append_document_end(&cmd->reply, &id);
    bson_append_int32(&cmd->reply, "timeoutMinutes", 14, 30);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_transaction(fts_double_cmd_t *cmd)
{
    /* Reached only when fts_double_txn_enter let a commit or abort through, which it never
     * does: it answers both itself. */
    return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_INTERNAL, "%s was not handled", cmd->name);
}

fts_double_cmd_status_t fts_double_cmd_list_databases(fts_double_cmd_t *cmd)
{
    bool name_only;
    bson_t filter;
    bool has_filter;
    fts_double_cmd_get_bool(cmd, "nameOnly", false, &name_only);
    if (!fts_double_cmd_get_doc(cmd, "filter", &filter, &has_filter) ||
        (has_filter && !fts_double_match_validate(&filter, &cmd->err))) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    size_t count;
    fts_double_coll_t **colls = fts_double_store_list(cmd->srv->store, NULL, &count);
    bson_t dbs;
    int64_t total = 0;
    uint32_t n = 0;
    bson_append_array_begin(&cmd->reply, "databases", 9, &dbs);
    for (size_t i = 0; i < count;) {
        const char *db = colls[i]->ns->db;
        int64_t size = 0;
        bool empty = true;
        size_t j = i;
        for (; j < count && strcmp(colls[j]->ns->db, db) == 0; j++) {
            size += (int64_t)colls[j]->bytes;
            empty = empty && colls[j]->count == 0;
        }
        i = j;
        bson_t entry = BSON_INITIALIZER;
        bson_append_utf8(&entry, "name", 4, db, -1);
        if (!name_only) {
            bson_append_int64(&entry, "sizeOnDisk", 10, size);
            bson_append_bool(&entry, "empty", 5, empty);
        }
        if (!has_filter || fts_double_match(&entry, &filter)) {
            char buf[16];
            bson_append_document(&dbs, fts_double_index_key(n++, buf), -1, &entry);
            total += size;
        }
        bson_destroy(&entry);
    }
    bson_append_array_end(&cmd->reply, &dbs);
    bson_free(colls);
    if (!name_only) {
        bson_append_int64(&cmd->reply, "totalSize", 9, total);
        bson_append_int64(&cmd->reply, "totalSizeMb", 11, total / (1024 * 1024));
    }
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_server_status(fts_double_cmd_t *cmd)
{
    fts_double_server_t *srv = cmd->srv;
    int64_t now = fts_double_now_ms();
    bson_t doc;
    bson_append_utf8(&cmd->reply, "host", 4, srv->host, -1);
    bson_append_utf8(&cmd->reply, "version", 7, "6.0.0", -1);
    bson_append_utf8(&cmd->reply, "process", 7, "mongod", -1);
    bson_append_int64(&cmd->reply, "pid", 3, (int64_t)getpid());
    bson_append_int64(&cmd->reply, "uptime", 6, (now - srv->start_ms) / 1000);
    bson_append_int64(&cmd->reply, "uptimeMillis", 12, now - srv->start_ms);
    bson_append_date_time(&cmd->reply, "localTime", 9, now);
    bson_append_document_begin(&cmd->reply, "connections", 11, &doc);
    bson_append_int32(&doc, "current", 7, (int32_t)srv->conn_count);
    bson_append_int32(&doc, "available", 9, 1000000);
    bson_append_int64(&doc, "totalCreated", 12, (int64_t)srv->conns_created);
    bson_append_document_end(&cmd->reply, &doc);
    bson_append_document_begin(&cmd->reply, "repl", 4, &doc);
    bson_append_utf8(&doc, "setName", 7, FTS_DOUBLE_SET_NAME, -1);
    bson_append_bool(&doc, "isWritablePrimary", 17, srv->rs.primary);
    bson_append_bool(&doc, "secondary", 9, !srv->rs.primary);
    bson_append_utf8(&doc, "me", 2, srv->host, -1);
    bson_append_document_end(&cmd->reply, &doc);
    /* Not mongod's, but what a test of the double wants to see. */
    bson_append_document_begin(&cmd->reply, "ftsyncDouble", 12, &doc);
    bson_append_int64(&doc, "events", 6, (int64_t)srv->log.next_seq);
    bson_append_int64(&doc, "eventsRetained", 14, (int64_t)srv->log.count);
    bson_append_int64(&doc, "eventsEvicted", 13, (int64_t)srv->log.evicted);
    bson_append_int64(&doc, "eventBytes", 10, (int64_t)srv->log.bytes);
    bson_append_int64(&doc, "cursors", 7, (int64_t)srv->cursors.count);
    bson_append_document_end(&cmd->reply, &doc);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_get_parameter(fts_double_cmd_t *cmd)
{
    bson_value_t v;
    if (fts_double_doc_get(cmd->body, "featureCompatibilityVersion", &v)) {
        bson_t fcv;
        bson_append_document_begin(&cmd->reply, "featureCompatibilityVersion", -1, &fcv);
        bson_append_utf8(&fcv, "version", 7, "6.0", -1);
        bson_append_document_end(&cmd->reply, &fcv);
    }
    if (fts_double_doc_get(cmd->body, "enableTestCommands", &v)) {
        bson_append_bool(&cmd->reply, "enableTestCommands", -1, true);
    }
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_whatsmyuri(fts_double_cmd_t *cmd)
{
    bson_append_utf8(&cmd->reply, "you", 3, cmd->req->conn->peer, -1);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_connection_status(fts_double_cmd_t *cmd)
{
    bson_t info, array;
    bson_append_document_begin(&cmd->reply, "authInfo", 8, &info);
    bson_append_array_begin(&info, "authenticatedUsers", -1, &array);
    bson_append_array_end(&info, &array);
    bson_append_array_begin(&info, "authenticatedUserRoles", -1, &array);
    bson_append_array_end(&info, &array);
    bson_append_document_end(&cmd->reply, &info);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_configure_fail_point(fts_double_cmd_t *cmd)
{
    fts_double_failpoint_t *const fps[] = {&cmd->srv->failpoint, &cmd->srv->fail_get_more};
    if (!fts_double_failpoint_configure(fps, 2, cmd->body, &cmd->reply, &cmd->err)) {
        return FTS_DOUBLE_CMD_ERROR;
    }
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_db_stats(fts_double_cmd_t *cmd)
{
    size_t count;
    fts_double_coll_t **colls = fts_double_store_list(cmd->srv->store, cmd->db, &count);
    int64_t objects = 0, bytes = 0;
    for (size_t i = 0; i < count; i++) {
        objects += (int64_t)colls[i]->count;
        bytes += (int64_t)colls[i]->bytes;
    }
    bson_free(colls);
    bson_append_utf8(&cmd->reply, "db", 2, cmd->db, -1);
    bson_append_int64(&cmd->reply, "collections", 11, (int64_t)count);
    bson_append_int64(&cmd->reply, "objects", 7, objects);
    bson_append_double(&cmd->reply, "avgObjSize", 10,
                       objects ? (double)bytes / (double)objects : 0);
    bson_append_int64(&cmd->reply, "dataSize", 8, bytes);
    bson_append_int64(&cmd->reply, "storageSize", 11, bytes);
    bson_append_int64(&cmd->reply, "indexes", 7, (int64_t)count);
    return FTS_DOUBLE_CMD_OK;
}
