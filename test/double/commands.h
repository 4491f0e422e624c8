/*
 * commands.h - dispatching commands and assembling mongod-shaped replies.
 *
 * Every reply ends with ok (1.0 or 0.0), $clusterTime {clusterTime, signature {hash: 20 zero
 * bytes, keyId: 0}} and operationTime, as a replica-set member's do. A failure carries errmsg,
 * code, codeName and the error labels mongod would attach (errors.h). The command table says
 * which commands need a writable primary (else NotWritablePrimary 10107), which are reads that
 * a secondary only serves with a secondary read preference (else NotPrimaryNoSecondaryOk
 * 13435), and which must run on the admin database (else Unauthorized 13). Unknown commands
 * get CommandNotFound (59). Unknown fields in a known command are ignored (mongod would often
 * refuse them with 40415): $readPreference, readConcern, writeConcern, $clusterTime,
 * apiVersion, comment and the like are accepted and have no effect; lsid and txnNumber have
 * none either, except with autocommit, which makes the command part of a transaction (txn.h).
 */
#ifndef FTS_DOUBLE_COMMANDS_H
#define FTS_DOUBLE_COMMANDS_H

#include "errors.h"
#include "server.h"

#include <bson/bson.h>

typedef enum {
    FTS_DOUBLE_CMD_OK,    /* reply with cmd->reply + ok: 1 */
    FTS_DOUBLE_CMD_ERROR, /* reply with cmd->err */
    FTS_DOUBLE_CMD_PARKED /* the handler parked the request and will answer it later */
} fts_double_cmd_status_t;

/* One command being run. */
typedef struct {
    fts_double_server_t *srv;
    fts_double_request_t *req;
    const bson_t *body;
    const char *db;
    const char *name;
    bson_t reply; /* the result's fields on success */
    fts_double_error_t err;
    bool is_change_stream; /* for the error-label rules */
} fts_double_cmd_t;

typedef fts_double_cmd_status_t (*fts_double_cmd_fn)(fts_double_cmd_t *cmd);

/* Entry point from the connection read loop: parses, logs, applies the fail point, runs. */
void fts_double_dispatch(fts_double_server_t *srv, fts_double_request_t *req);

/* Answers req with fields + ok: 1 (+ cluster time), or with an error, and ends it. */
void fts_double_reply_ok(fts_double_server_t *srv, fts_double_request_t *req, const bson_t *fields);
void fts_double_reply_error(fts_double_server_t *srv, fts_double_request_t *req,
                            const fts_double_error_t *err, bool is_change_stream);

/* Sets cmd->err and returns FTS_DOUBLE_CMD_ERROR. */
fts_double_cmd_status_t fts_double_cmd_fail(fts_double_cmd_t *cmd, int code, const char *format,
                                            ...) __attribute__((format(printf, 3, 4)));

/* Appends $clusterTime and operationTime. */
void fts_double_append_cluster_time(fts_double_server_t *srv, bson_t *reply);

/* The collection a command names in its first field (a non-empty string without '$' or NUL);
 * fails with InvalidNamespace (73) otherwise. */
bool fts_double_cmd_collection(fts_double_cmd_t *cmd, const char **name);

/* Optional typed fields: false with cmd->err set when present with the wrong type. */
bool fts_double_cmd_get_doc(fts_double_cmd_t *cmd, const char *field, bson_t *out, bool *present);
bool fts_double_cmd_get_int64(fts_double_cmd_t *cmd, const char *field, int64_t *out,
                              bool *present);
bool fts_double_cmd_get_bool(fts_double_cmd_t *cmd, const char *field, bool dflt, bool *out);

/* cmd_admin.c */
fts_double_cmd_status_t fts_double_cmd_hello(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_ping(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_authenticate(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_build_info(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_sessions(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_start_session(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_transaction(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_list_databases(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_server_status(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_get_parameter(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_whatsmyuri(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_connection_status(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_configure_fail_point(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_repl_set_get_status(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_repl_set_step_down(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_repl_set_step_up(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_db_stats(fts_double_cmd_t *cmd);

/* cmd_crud.c */
fts_double_cmd_status_t fts_double_cmd_insert(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_update(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_delete(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_find_and_modify(fts_double_cmd_t *cmd);

/* cmd_read.c */
fts_double_cmd_status_t fts_double_cmd_find(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_get_more(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_kill_cursors(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_count(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_distinct(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_aggregate(fts_double_cmd_t *cmd);

/* cmd_catalog.c */
fts_double_cmd_status_t fts_double_cmd_create(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_drop(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_drop_database(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_rename_collection(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_coll_mod(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_list_collections(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_list_indexes(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_create_indexes(fts_double_cmd_t *cmd);
fts_double_cmd_status_t fts_double_cmd_drop_indexes(fts_double_cmd_t *cmd);

#endif
