/*
 * txn.h - sessions and multi-document transactions, the way drivers use them.
 *
 * A driver runs a transaction as commands carrying the session's lsid, a txnNumber and
 * autocommit: false, the first one also startTransaction: true, and ends it with the admin
 * commands commitTransaction or abortTransaction carrying the same three fields (MongoDB
 * manual, "Transactions", https://www.mongodb.com/docs/v6.0/core/transactions/; the driver
 * Transactions specification, https://github.com/mongodb/specifications/blob/master/source/
 * transactions/transactions.md). Here:
 *
 *   - Isolation: a transaction works on private copies of the collections it touches, taken
 *     when it first touches each (a snapshot). Its writes are invisible to every other reader
 *     until commit; its own reads see them. While one of its commands runs, the server's store
 *     is the transaction's (srv->store is swapped), so every command handler works unchanged.
 *   - Events: its writes log nothing until commit. commitTransaction applies them, in order, to
 *     the real collections and logs one event each, all with the commit's one cluster time, the
 *     session's lsid, the txnNumber and txnOpIndex 0, 1, 2... (in their resume tokens), as mongod
 *     reports a transaction's changes (https://www.mongodb.com/docs/v6.0/reference/
 *     change-events/: "lsid", "txnNumber"; all events of a transaction share its clusterTime).
 *     An aborted transaction leaves no event and no change.
 *   - Errors, as mongod's transaction_participant.cpp raises them: a txnNumber below the
 *     session's newest 225 TransactionTooOld; continuing, committing or aborting a txnNumber
 *     that is not the session's active one 251 NoSuchTransaction ("Given transaction number N
 *     does not match any in-progress transactions. The active transaction number is M"); using
 *     an aborted transaction 251 ("has been aborted"); a command other than commitTransaction
 *     in a committed one 256 TransactionCommitted (commitTransaction is answered ok again, as a
 *     retried commit); startTransaction with the number of a transaction that is not aborted
 *     50911; autocommit: true 72 InvalidOptions; a command that may not run in a transaction
 *     (count, create, drop, a $changeStream aggregate, ...) 263
 *     OperationNotSupportedInTransaction. errors.c adds TransientTransactionError to 251 and
 *     112 in a transaction, as mongod's error_labels.cpp does.
 *   - Starting a newer txnNumber on a session aborts its active transaction, as on mongod.
 *
 * Known differences: no write conflicts (112) are detected, the commit applies the
 * transaction's writes over whatever changed meanwhile (last writer wins); no
 * transactionLifetimeLimitSeconds (a transaction stays open until committed, aborted or
 * replaced); no prepared transactions; the events' lsid is {id, uid} with uid the SHA-256 of
 * the empty user name, as for an unauthenticated client; sessions live until the double stops
 * (endSessions aborts their active transactions, no more).
 */
#ifndef FTS_DOUBLE_TXN_H
#define FTS_DOUBLE_TXN_H

#include "commands.h"
#include "server.h"

#include <bson/bson.h>
#include <stdbool.h>

/* What run_command needs to remember between fts_double_txn_enter and fts_double_txn_leave. */
typedef struct {
    fts_double_txn_t *txn;           /* NULL: the command is not part of a transaction */
    fts_double_store_t *saved_store; /* the real store, put back by leave */
} fts_double_txn_scope_t;

/* Looks at a command's lsid/txnNumber/autocommit/startTransaction before it runs. If it belongs
 * to a transaction, checks the transaction's state, starts one on startTransaction, takes
 * private copies of the collection the command names and makes the transaction current
 * (srv->txn, srv->store). commitTransaction and abortTransaction are answered here: *handled is
 * set and cmd->reply (or cmd->err, on false) holds the answer. False with cmd->err set when the
 * command must fail. */
bool fts_double_txn_enter(fts_double_cmd_t *cmd, fts_double_txn_scope_t *scope, bool *handled);
/* Puts the real store back after the command ran. */
void fts_double_txn_leave(fts_double_server_t *srv, fts_double_txn_scope_t *scope);

/* Takes a write's event while a transaction is current (writes.c): it is kept for the commit.
 * Takes over the event's references. */
void fts_double_txn_buffer_event(fts_double_txn_t *txn, fts_double_event_t *event);

/* Appends lsid: {id: <the session's UUID>, uid: <SHA-256 of "">} as mongod shows it in events. */
void fts_double_txn_append_lsid(bson_t *dst, const uint8_t lsid[16]);

/* endSessions: aborts the active transactions of the sessions listed in cmd's first field. */
void fts_double_txn_end_sessions(fts_double_server_t *srv, const bson_t *body);

/* Frees every session (server shutdown). */
void fts_double_txn_destroy_all(fts_double_server_t *srv);

#endif
