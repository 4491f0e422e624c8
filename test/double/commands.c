/*
 * commands.c - the command table, the dispatcher and reply assembly (see commands.h).
 */
#include "commands.h"

#include "bsonval.h"
#include "changestream.h"
#include "conn.h"
#include "cursor.h"
#include "txn.h"
#include "wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
    NEEDS_PRIMARY = 1, /* writes */
    READ = 2,          /* reads: primary, or secondary with a secondary read preference */
    ADMIN_ONLY = 4     /* must run on the admin database */
};

typedef struct {
    const char *name;
    fts_double_cmd_fn fn;
    int flags;
} command_t;

static const command_t commands[] = {
    {"hello", fts_double_cmd_hello, 0},
    {"isMaster", fts_double_cmd_hello, 0},
    {"ismaster", fts_double_cmd_hello, 0},
    {"ping", fts_double_cmd_ping, 0},
    {"saslStart", fts_double_cmd_authenticate, 0},
    {"saslContinue", fts_double_cmd_authenticate, 0},
    {"authenticate", fts_double_cmd_authenticate, 0},
    {"buildInfo", fts_double_cmd_build_info, 0},
    {"buildinfo", fts_double_cmd_build_info, 0},
    {"endSessions", fts_double_cmd_sessions, 0},
    {"killSessions", fts_double_cmd_sessions, 0},
    {"refreshSessions", fts_double_cmd_sessions, 0},
    {"killAllSessions", fts_double_cmd_sessions, 0},
    {"startSession", fts_double_cmd_start_session, 0},
    {"commitTransaction", fts_double_cmd_transaction, ADMIN_ONLY},
    {"abortTransaction", fts_double_cmd_transaction, ADMIN_ONLY},
    {"listDatabases", fts_double_cmd_list_databases, READ | ADMIN_ONLY},
    {"serverStatus", fts_double_cmd_server_status, 0},
    {"getParameter", fts_double_cmd_get_parameter, ADMIN_ONLY},
    {"whatsmyuri", fts_double_cmd_whatsmyuri, 0},
    {"connectionStatus", fts_double_cmd_connection_status, 0},
    {"dbStats", fts_double_cmd_db_stats, READ},
    {"configureFailPoint", fts_double_cmd_configure_fail_point, ADMIN_ONLY},
    {"replSetGetStatus", fts_double_cmd_repl_set_get_status, ADMIN_ONLY},
    {"replSetStepDown", fts_double_cmd_repl_set_step_down, ADMIN_ONLY},
    {"replSetStepUp", fts_double_cmd_repl_set_step_up, ADMIN_ONLY},
    {"insert", fts_double_cmd_insert, NEEDS_PRIMARY},
    {"update", fts_double_cmd_update, NEEDS_PRIMARY},
    {"delete", fts_double_cmd_delete, NEEDS_PRIMARY},
    {"findAndModify", fts_double_cmd_find_and_modify, NEEDS_PRIMARY},
    {"findandmodify", fts_double_cmd_find_and_modify, NEEDS_PRIMARY},
    {"find", fts_double_cmd_find, READ},
    {"getMore", fts_double_cmd_get_more, 0},
    {"killCursors", fts_double_cmd_kill_cursors, 0},
    {"count", fts_double_cmd_count, READ},
    {"distinct", fts_double_cmd_distinct, READ},
    {"aggregate", fts_double_cmd_aggregate, READ},
    {"create", fts_double_cmd_create, NEEDS_PRIMARY},
    {"drop", fts_double_cmd_drop, NEEDS_PRIMARY},
    {"dropDatabase", fts_double_cmd_drop_database, NEEDS_PRIMARY},
    {"renameCollection", fts_double_cmd_rename_collection, NEEDS_PRIMARY | ADMIN_ONLY},
    {"collMod", fts_double_cmd_coll_mod, NEEDS_PRIMARY},
    {"listCollections", fts_double_cmd_list_collections, READ},
    {"listIndexes", fts_double_cmd_list_indexes, READ},
    {"createIndexes", fts_double_cmd_create_indexes, NEEDS_PRIMARY},
    {"dropIndexes", fts_double_cmd_drop_indexes, NEEDS_PRIMARY},
    {"deleteIndexes", fts_double_cmd_drop_indexes, NEEDS_PRIMARY},
};

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

void fts_double_append_cluster_time(fts_double_server_t *srv, bson_t *reply)
{
    fts_double_ts_t now = fts_double_eventlog_now(&srv->log);
    bson_t cluster_time, signature;
    static const uint8_t zero_hash[20] = {0};
    bson_append_document_begin(reply, "$clusterTime", 12, &cluster_time);
    bson_append_timestamp(&cluster_time, "clusterTime", 11, now.t, now.i);
    bson_append_document_begin(&cluster_time, "signature", 9, &signature);
    bson_append_binary(&signature, "hash", 4, BSON_SUBTYPE_BINARY, zero_hash, 20);
    bson_append_int64(&signature, "keyId", 5, 0);
    bson_append_document_end(&cluster_time, &signature);
    bson_append_document_end(reply, &cluster_time);
    bson_append_timestamp(reply, "operationTime", 13, now.t, now.i);
}

static void label_facts(const fts_double_request_t *req, bool is_change_stream, int wce_code,
                        fts_double_label_facts_t *facts)
{
    bson_value_t v;
    facts->command = req->name ? req->name : "";
    bool txn_number = fts_double_doc_get(&req->body, "txnNumber", &v);
    bool autocommit = fts_double_doc_get(&req->body, "autocommit", &v);
    facts->has_txn_number = txn_number && !autocommit;
    facts->in_transaction = txn_number && autocommit;
    facts->is_change_stream = is_change_stream;
    facts->write_concern_code = wce_code;
}

void fts_double_reply_ok(fts_double_server_t *srv, fts_double_request_t *req, const bson_t *fields)
{
    bson_t reply = BSON_INITIALIZER;
    bson_concat(&reply, fields);
    int wce_code = 0;
    if (req->fail.wce) {
        bson_value_t code;
        bson_append_document(&reply, "writeConcernError", 17, req->fail.wce);
        if (fts_double_doc_get(req->fail.wce, "code", &code)) {
            wce_code = (int)fts_double_value_as_int64(&code);
        }
    }
    bson_append_double(&reply, "ok", 2, 1.0);
    if (req->fail.wce) {
        if (req->fail.has_labels) {
            if (!bson_empty(req->fail.labels)) {
                bson_append_array(&reply, "errorLabels", 11, req->fail.labels);
            }
        } else {
            fts_double_label_facts_t facts;
            label_facts(req, false, wce_code, &facts);
            fts_double_error_append_labels(&reply, 0, &facts);
        }
    }
    fts_double_append_cluster_time(srv, &reply);
    fts_double_request_finish(req, &reply);
    bson_destroy(&reply);
}

/* mongod's NotPrimaryError category. */
static bool is_not_primary_error(int code)
{
    return code == FTS_DOUBLE_E_PRIMARY_STEPPED_DOWN || code == FTS_DOUBLE_E_NOT_WRITABLE_PRIMARY ||
           code == FTS_DOUBLE_E_INTERRUPTED_REPL_STATE_CHANGE ||
           code == FTS_DOUBLE_E_NOT_PRIMARY_NO_SECONDARY_OK ||
           code == FTS_DOUBLE_E_NOT_PRIMARY_OR_SECONDARY || code == 10058;
}

void fts_double_reply_error(fts_double_server_t *srv, fts_double_request_t *req,
                            const fts_double_error_t *err, bool is_change_stream)
{
    char buf[32];
    bson_t reply = BSON_INITIALIZER;
    bson_append_double(&reply, "ok", 2, 0.0);
    bson_append_utf8(&reply, "errmsg", 6, err->msg, -1);
    bson_append_int32(&reply, "code", 4, err->code);
    bson_append_utf8(&reply, "codeName", 8, fts_double_error_code_name(err->code, buf, sizeof buf),
                     -1);
    if (req->fail.triggered && req->fail.has_error && req->fail.has_labels) {
        /* failCommand's errorLabels replace whatever mongod would have said. */
        if (!bson_empty(req->fail.labels)) {
            bson_append_array(&reply, "errorLabels", 11, req->fail.labels);
        }
    } else {
        fts_double_label_facts_t facts;
        label_facts(req, is_change_stream, 0, &facts);
        fts_double_error_append_labels(&reply, err->code, &facts);
    }
    if (is_not_primary_error(err->code)) {
        /* mongod 4.4+: lets a driver tell news (a newer topologyVersion than its last hello
         * showed: mark the member Unknown) from an error it already knows about. */
        bson_t tv;
        bson_append_document_begin(&reply, "topologyVersion", 15, &tv);
        bson_append_oid(&tv, "processId", 9, &srv->rs.process_id);
        bson_append_int64(&tv, "counter", 7, srv->rs.counter);
        bson_append_document_end(&reply, &tv);
    }
    fts_double_append_cluster_time(srv, &reply);
    fts_double_log(srv, "conn=%llu %s failed: code=%d %s", (unsigned long long)req->conn->id,
                   req->name ? req->name : "?", err->code, err->msg);
    fts_double_request_finish(req, &reply);
    bson_destroy(&reply);
}

fts_double_cmd_status_t fts_double_cmd_fail(fts_double_cmd_t *cmd, int code, const char *format,
                                            ...)
{
    va_list args;
    va_start(args, format);
    cmd->err.code = code;
    vsnprintf(cmd->err.msg, sizeof cmd->err.msg, format, args);
    va_end(args);
    return FTS_DOUBLE_CMD_ERROR;
}

bool fts_double_cmd_collection(fts_double_cmd_t *cmd, const char **name)
{
    bson_iter_t it;
    bson_iter_init(&it, cmd->body);
    bson_iter_next(&it);
    uint32_t len = 0;
    const char *s = BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, &len) : NULL;
    if (!s || len == 0 || strlen(s) != len || strchr(s, '$')) {
        fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_NAMESPACE,
                             "Invalid namespace specified '%s.%s'", cmd->db, s ? s : "");
        return false;
    }
    *name = s;
    return true;
}

bool fts_double_cmd_get_doc(fts_double_cmd_t *cmd, const char *field, bson_t *out, bool *present)
{
    bson_value_t v;
    *present = fts_double_doc_get(cmd->body, field, &v) && v.value_type != BSON_TYPE_NULL;
    if (!*present) {
        return true;
    }
    if (v.value_type != BSON_TYPE_DOCUMENT) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                    "BSON field '%s.%s' is the wrong type '%s', expected type "
                                    "'object'",
                                    cmd->name, field, fts_double_type_alias(v.value_type));
    }
    return fts_double_value_as_doc(&v, out);
}

bool fts_double_cmd_get_int64(fts_double_cmd_t *cmd, const char *field, int64_t *out, bool *present)
{
    bson_value_t v;
    *present = fts_double_doc_get(cmd->body, field, &v);
    if (!*present) {
        return true;
    }
    if (!fts_double_value_is_number(&v)) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                    "BSON field '%s.%s' is the wrong type '%s', expected types "
                                    "'[long, int, decimal, double']",
                                    cmd->name, field, fts_double_type_alias(v.value_type));
    }
    *out = fts_double_value_as_int64(&v);
    return true;
}

bool fts_double_cmd_get_bool(fts_double_cmd_t *cmd, const char *field, bool dflt, bool *out)
{
    bson_value_t v;
    *out = fts_double_doc_get(cmd->body, field, &v) ? fts_double_value_truthy(&v) : dflt;
    return true;
}

/* Whether the request is an aggregate opening a change stream or a getMore on one. */
static bool request_is_change_stream(fts_double_server_t *srv, const fts_double_request_t *req)
{
    bson_value_t v;
    if (strcmp(req->name, "aggregate") == 0) {
        bson_t pipeline;
        return fts_double_doc_get(&req->body, "pipeline", &v) && v.value_type == BSON_TYPE_ARRAY &&
               fts_double_value_as_doc(&v, &pipeline) &&
               fts_double_pipeline_is_change_stream(&pipeline);
    }
    if (strcmp(req->name, "getMore") == 0 && fts_double_doc_get(&req->body, "getMore", &v)) {
        fts_double_cursor_t *c = fts_double_cursor_find(srv, fts_double_value_as_int64(&v));
        return c && c->stream;
    }
    return false;
}

static void log_command(fts_double_server_t *srv, const fts_double_request_t *req)
{
    if (!srv->verbose) {
        return;
    }
    if (req->body.len > 64 * 1024) {
        /* Converting a 16 MiB insert to JSON to print 600 bytes of it is not worth it. */
        fts_double_log(srv, "conn=%llu db=%s cmd=%s (%u bytes, %d document sequence(s))",
                       (unsigned long long)req->conn->id, req->db, req->name, req->body.len,
                       req->nseqs);
        return;
    }
    size_t len;
    char *json = bson_as_relaxed_extended_json(&req->body, &len);
    const size_t max = 600;
    fts_double_log(srv, "conn=%llu db=%s cmd=%s %.*s%s", (unsigned long long)req->conn->id, req->db,
                   req->name, (int)(len > max ? max : len), json ? json : "",
                   len > max ? "..." : "");
    bson_free(json);
}

static void run_command(fts_double_server_t *srv, fts_double_request_t *req);

static void on_block_done(fts_double_request_t *req)
{
    run_command(req->conn->srv, req);
}

static void run_command(fts_double_server_t *srv, fts_double_request_t *req)
{
    const command_t *command = find_command(req->name);
    fts_double_cmd_t cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.srv = srv;
    cmd.req = req;
    cmd.body = &req->body;
    cmd.db = req->db;
    cmd.name = req->name;

    if (req->fail.triggered) {
        if (req->fail.close) {
            fts_double_request_close_connection(req);
            return;
        }
        if (req->fail.has_error) {
            /* A getMore failed here has not checked its cursor out: like mongod, which only
             * learns from the cursor that the getMore belongs to a change stream, this adds no
             * ResumableChangeStreamError label (failpoint.h). */
            bool change_stream =
                strcmp(req->name, "getMore") != 0 && request_is_change_stream(srv, req);
            fts_double_error_set(&cmd.err, req->fail.error_code,
                                 "Failing command via 'failCommand' failpoint");
            fts_double_reply_error(srv, req, &cmd.err, change_stream);
            return;
        }
    }
    if ((command->flags & ADMIN_ONLY) && strcmp(req->db, "admin") != 0) {
        fts_double_error_set(&cmd.err, FTS_DOUBLE_E_UNAUTHORIZED,
                             "%s may only be run against the admin database.", req->name);
        fts_double_reply_error(srv, req, &cmd.err, false);
        return;
    }
    if (!srv->rs.primary) {
        if (command->flags & NEEDS_PRIMARY) {
            fts_double_error_set(&cmd.err, FTS_DOUBLE_E_NOT_WRITABLE_PRIMARY, "not primary");
            fts_double_reply_error(srv, req, &cmd.err, false);
            return;
        }
        if ((command->flags & READ) && !req->secondary_ok) {
            fts_double_error_set(&cmd.err, FTS_DOUBLE_E_NOT_PRIMARY_NO_SECONDARY_OK,
                                 "not primary and secondaryOk=false");
            fts_double_reply_error(srv, req, &cmd.err, request_is_change_stream(srv, req));
            return;
        }
    }

    bson_init(&cmd.reply);
    /* Transactions (txn.h): commit and abort are answered there; other commands of a
     * transaction run against its private store. */
    fts_double_txn_scope_t scope;
    bool handled = false;
    fts_double_cmd_status_t status;
    if (!fts_double_txn_enter(&cmd, &scope, &handled)) {
        status = FTS_DOUBLE_CMD_ERROR;
    } else if (handled) {
        status = FTS_DOUBLE_CMD_OK;
    } else {
        status = command->fn(&cmd);
        fts_double_txn_leave(srv, &scope);
    }
    switch (status) {
    case FTS_DOUBLE_CMD_OK:
        fts_double_reply_ok(srv, req, &cmd.reply);
        break;
    case FTS_DOUBLE_CMD_ERROR:
        fts_double_reply_error(srv, req, &cmd.err, cmd.is_change_stream);
        break;
    case FTS_DOUBLE_CMD_PARKED:
        break;
    }
    bson_destroy(&cmd.reply);
}

void fts_double_dispatch(fts_double_server_t *srv, fts_double_request_t *req)
{
    fts_double_error_t err;
    if (!fts_double_wire_parse(req, &err)) {
        if (err.code == 0) {
            fts_double_log(srv, "conn=%llu sent an unparsable message (opcode %d): closing",
                           (unsigned long long)req->conn->id, req->opcode);
            req->conn->closing = true;
            return;
        }
        fts_double_reply_error(srv, req, &err, false);
        return;
    }
    log_command(srv, req);
    if (!find_command(req->name)) {
        fts_double_error_set(&err, FTS_DOUBLE_E_COMMAND_NOT_FOUND, "no such command: '%s'",
                             req->name);
        fts_double_reply_error(srv, req, &err, false);
        return;
    }
    if (!req->fail_checked) {
        req->fail_checked = true;
        if (fts_double_failpoint_check(&srv->failpoint, req->name, req->conn->app_name,
                                       &req->fail) &&
            req->fail.block) {
            /* Hold this one request back; the loop serves everybody else meanwhile. */
            fts_double_request_park(req, NULL, req->fail.block_ms, on_block_done, NULL);
            return;
        }
    }
    run_command(srv, req);
}
