/*
 * txn.c - sessions and multi-document transactions (see txn.h).
 */
#include "txn.h"

#include "bsonval.h"
#include "changestream.h"
#include "eventlog.h"
#include "pipeline.h"
#include "writes.h"

#include <inttypes.h>
#include <string.h>

typedef enum { TXN_NONE, TXN_ACTIVE, TXN_COMMITTED, TXN_ABORTED } txn_state_t;

/* One session: its newest txnNumber and that transaction's state. Sessions are keyed by the
 * lsid's id (a UUID); the double keeps them in a list, tests use few. */
struct fts_double_txn {
    uint8_t lsid[16];
    int64_t txn_number; /* the newest seen; -1 before any */
    txn_state_t state;
    fts_double_store_t *store;  /* private copies while ACTIVE */
    fts_double_event_t *events; /* the writes, in order, while ACTIVE */
    size_t count, cap;
    struct fts_double_txn *next;
};

/* SHA-256 of the empty string: the uid mongod puts in an lsid for an unauthenticated user. */
static const uint8_t EMPTY_USER_UID[32] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};

void fts_double_txn_append_lsid(bson_t *dst, const uint8_t lsid[16])
{
    bson_t doc;
    bson_append_document_begin(dst, "lsid", 4, &doc);
    bson_append_binary(&doc, "id", 2, BSON_SUBTYPE_UUID, lsid, 16);
    bson_append_binary(&doc, "uid", 3, BSON_SUBTYPE_BINARY, EMPTY_USER_UID, 32);
    bson_append_document_end(dst, &doc);
}

static void release_events(fts_double_txn_t *txn)
{
    for (size_t i = 0; i < txn->count; i++) {
        fts_double_event_t *ev = &txn->events[i];
        fts_double_doc_unref(ev->pre);
        fts_double_doc_unref(ev->post);
        if (ev->update_desc) {
            bson_destroy(ev->update_desc);
        }
    }
    bson_free(txn->events);
    txn->events = NULL;
    txn->count = txn->cap = 0;
}

/* Ends the active transaction without applying anything. */
static void discard(fts_double_txn_t *txn)
{
    release_events(txn);
    fts_double_store_destroy(txn->store);
    txn->store = NULL;
}

void fts_double_txn_buffer_event(fts_double_txn_t *txn, fts_double_event_t *event)
{
    if (event->op == FTS_DOUBLE_OP_CREATE) {
        return; /* an implicit creation happens again, for real, at commit */
    }
    if (txn->count == txn->cap) {
        txn->cap = txn->cap ? txn->cap * 2 : 8;
        txn->events = bson_realloc(txn->events, txn->cap * sizeof *txn->events);
    }
    txn->events[txn->count++] = *event;
    memset(event, 0, sizeof *event);
}

static fts_double_txn_t *session_find(fts_double_server_t *srv, const uint8_t lsid[16], bool create)
{
    for (fts_double_txn_t *s = srv->sessions; s; s = s->next) {
        if (memcmp(s->lsid, lsid, 16) == 0) {
            return s;
        }
    }
    if (!create) {
        return NULL;
    }
    fts_double_txn_t *s = bson_malloc0(sizeof *s);
    memcpy(s->lsid, lsid, 16);
    s->txn_number = -1;
    s->next = srv->sessions;
    srv->sessions = s;
    return s;
}

/* The lsid's id: a 16-byte binary. */
static bool lsid_of(const bson_t *body, uint8_t lsid[16])
{
    bson_value_t v, id;
    bson_t doc;
    if (!fts_double_doc_get(body, "lsid", &v) || !fts_double_value_as_doc(&v, &doc) ||
        !fts_double_doc_get(&doc, "id", &id) || id.value_type != BSON_TYPE_BINARY ||
        id.value.v_binary.data_len != 16) {
        return false;
    }
    memcpy(lsid, id.value.v_binary.data, 16);
    return true;
}

/* Commands mongod runs inside a transaction (the rest fail with 263). */
static bool allowed_in_transaction(const char *name)
{
    static const char *const allowed[] = {"insert",
                                          "update",
                                          "delete",
                                          "findAndModify",
                                          "findandmodify",
                                          "find",
                                          "getMore",
                                          "killCursors",
                                          "aggregate",
                                          "distinct",
                                          "commitTransaction",
                                          "abortTransaction"};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        if (strcmp(allowed[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static bool copy_doc(fts_double_doc_t *doc, void *arg)
{
    fts_double_coll_insert(arg, fts_double_doc_ref(doc));
    return true;
}

/* A private copy of db.name (if it exists) in the transaction's store, taken once. */
static void copy_collection(fts_double_server_t *srv, fts_double_txn_t *txn, const char *db,
                            const char *name)
{
    if (fts_double_store_find(txn->store, db, name)) {
        return;
    }
    fts_double_coll_t *real = fts_double_store_find(srv->store, db, name);
    if (!real) {
        return;
    }
    fts_double_coll_t *copy = fts_double_store_create(txn->store, db, name);
    memcpy(copy->uuid, real->uuid, 16);
    copy->images = real->images;
    fts_double_coll_walk(real, false, copy_doc, copy);
}

/* Applies the transaction's writes to the real store and logs their events with one cluster
 * time. */
static void commit(fts_double_server_t *srv, fts_double_txn_t *txn)
{
    if (txn->count == 0) {
        discard(txn);
        return;
    }
    /* Collections the transaction created implicitly are created first, with their own create
     * events, so that the log stays in cluster-time order. */
    for (size_t i = 0; i < txn->count; i++) {
        const fts_double_ns_t *ns = txn->events[i].ns;
        fts_double_write_collection(srv, ns->db, ns->coll);
    }
    fts_double_ts_t at = fts_double_eventlog_tick(&srv->log);
    for (size_t i = 0; i < txn->count; i++) {
        fts_double_event_t *buffered = &txn->events[i];
        fts_double_coll_t *coll =
            fts_double_store_find(srv->store, buffered->ns->db, buffered->ns->coll);
        fts_double_event_t ev;
        memset(&ev, 0, sizeof ev);
        ev.op = buffered->op;
        ev.ns = coll->ns;
        ev.images = coll->images;
        memcpy(ev.uuid, coll->uuid, 16);
        bson_value_t id;
        const fts_double_doc_t *keyed = buffered->post ? buffered->post : buffered->pre;
        fts_double_doc_id(keyed, &id);
        /* The document as the real collection has it now: the pre-image on the real side. */
        fts_double_doc_t *old = fts_double_coll_remove(coll, &id);
        if (buffered->post) {
            fts_double_coll_insert(coll, fts_double_doc_ref(buffered->post));
            ev.post = buffered->post;
            buffered->post = NULL;
        }
        ev.pre = old;
        if (ev.op == FTS_DOUBLE_OP_INSERT) {
            fts_double_doc_unref(ev.pre);
            ev.pre = NULL;
        }
        ev.update_desc = buffered->update_desc;
        buffered->update_desc = NULL;
        ev.ts = at;
        ev.in_txn = true;
        memcpy(ev.lsid, txn->lsid, 16);
        ev.txn_number = txn->txn_number;
        ev.txn_op_index = (uint32_t)i;
        fts_double_eventlog_append(&srv->log, &ev);
    }
    discard(txn);
    fts_double_stream_notify(srv);
}

static bool is_change_stream_aggregate(const fts_double_cmd_t *cmd)
{
    bson_value_t v;
    bson_t pipeline;
    return strcmp(cmd->name, "aggregate") == 0 && fts_double_doc_get(cmd->body, "pipeline", &v) &&
           v.value_type == BSON_TYPE_ARRAY && fts_double_value_as_doc(&v, &pipeline) &&
           fts_double_pipeline_is_change_stream(&pipeline);
}

/* The collection a CRUD or read command names, if any. */
static const char *named_collection(const bson_t *body)
{
    bson_iter_t it;
    if (bson_iter_init(&it, body) && bson_iter_next(&it) && BSON_ITER_HOLDS_UTF8(&it)) {
        return bson_iter_utf8(&it, NULL);
    }
    return NULL;
}

static const char *state_name(txn_state_t state)
{
    switch (state) {
    case TXN_ACTIVE:
        return "TxnState::InProgress";
    case TXN_COMMITTED:
        return "TxnState::Committed";
    case TXN_ABORTED:
        return "TxnState::AbortedWithoutPrepare";
    case TXN_NONE:
        break;
    }
    return "TxnState::None";
}

bool fts_double_txn_enter(fts_double_cmd_t *cmd, fts_double_txn_scope_t *scope, bool *handled)
{
    fts_double_server_t *srv = cmd->srv;
    bson_value_t v;
    memset(scope, 0, sizeof *scope);
    *handled = false;
    bool is_commit = strcmp(cmd->name, "commitTransaction") == 0;
    bool is_abort = strcmp(cmd->name, "abortTransaction") == 0;
    bool has_autocommit = fts_double_doc_get(cmd->body, "autocommit", &v);
    if (has_autocommit && fts_double_value_truthy(&v)) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_OPTIONS,
                                    "Specifying autocommit=true is not allowed.");
    }
    bool start =
        fts_double_doc_get(cmd->body, "startTransaction", &v) && fts_double_value_truthy(&v);
    if (!has_autocommit) {
        if (start) {
            return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_OPTIONS,
                                        "txnNumber may only be provided for multi-document "
                                        "transactions and retryable write commands. "
                                        "autocommit:false was not provided.");
        }
        if (is_commit || is_abort) {
            return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_OPTIONS,
                                        "%s must be run within a transaction", cmd->name);
        }
        return true; /* not part of a transaction (maybe a retryable write) */
    }
    uint8_t lsid[16];
    int64_t number;
    if (!lsid_of(cmd->body, lsid)) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_OPTIONS,
                                    "Transaction number requires a session ID to also be "
                                    "specified");
    }
    if (!fts_double_doc_get(cmd->body, "txnNumber", &v) || !fts_double_value_is_number(&v)) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_INVALID_OPTIONS,
                                    "'autocommit' field requires a transaction number to also be "
                                    "specified");
    }
    number = fts_double_value_as_int64(&v);
    if (!allowed_in_transaction(cmd->name) || is_change_stream_aggregate(cmd)) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_OPERATION_NOT_SUPPORTED_IN_TXN,
                                    "Cannot run '%s' in a multi-document transaction.", cmd->name);
    }

    fts_double_txn_t *txn = session_find(srv, lsid, true);
    if (number < txn->txn_number) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_TRANSACTION_TOO_OLD,
                                    "Cannot start transaction with { txnNumber: %" PRId64
                                    " } on session because a newer transaction with "
                                    "txnNumberAndRetryCounter { txnNumber: %" PRId64
                                    " } has already started on this session.",
                                    number, txn->txn_number);
    }
    if (start) {
        if (number == txn->txn_number && txn->state != TXN_ABORTED) {
            return fts_double_error_set(&cmd->err, 50911,
                                        "Cannot start a transaction with session id and "
                                        "transaction number { txnNumber: %" PRId64
                                        " } because a transaction with the same transaction "
                                        "number is in state %s",
                                        number, state_name(txn->state));
        }
        if (txn->state == TXN_ACTIVE) {
            discard(txn); /* a newer transaction on the session aborts the active one */
        }
        txn->txn_number = number;
        txn->state = TXN_ACTIVE;
        txn->store = fts_double_store_new();
    } else if (number != txn->txn_number || txn->state == TXN_NONE) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_NO_SUCH_TRANSACTION,
                                    "Given transaction number %" PRId64
                                    " does not match any in-progress transactions. The active "
                                    "transaction number is %" PRId64,
                                    number, txn->txn_number);
    } else if (txn->state == TXN_ABORTED) {
        return fts_double_error_set(&cmd->err, FTS_DOUBLE_E_NO_SUCH_TRANSACTION,
                                    "Transaction with { txnNumber: %" PRId64 " } has been aborted.",
                                    number);
    } else if (txn->state == TXN_COMMITTED) {
        if (is_commit) {
            *handled = true; /* a retried commit of a committed transaction succeeds */
            return true;
        }
        return fts_double_error_set(
            &cmd->err, FTS_DOUBLE_E_TRANSACTION_COMMITTED,
            "Transaction with { txnNumber: %" PRId64 " } has been committed.", number);
    }

    if (is_commit || is_abort) {
        *handled = true;
        if (is_commit) {
            commit(srv, txn);
            txn->state = TXN_COMMITTED;
        } else {
            discard(txn);
            txn->state = TXN_ABORTED;
        }
        return true;
    }
    const char *name = named_collection(cmd->body);
    if (name) {
        copy_collection(srv, txn, cmd->db, name);
    }
    scope->txn = txn;
    scope->saved_store = srv->store;
    srv->store = txn->store;
    srv->txn = txn;
    return true;
}

void fts_double_txn_leave(fts_double_server_t *srv, fts_double_txn_scope_t *scope)
{
    if (!scope->txn) {
        return;
    }
    srv->store = scope->saved_store;
    srv->txn = NULL;
    scope->txn = NULL;
}

void fts_double_txn_end_sessions(fts_double_server_t *srv, const bson_t *body)
{
    bson_iter_t it, sessions;
    if (!bson_iter_init(&it, body) || !bson_iter_next(&it) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &sessions)) {
        return;
    }
    while (bson_iter_next(&sessions)) {
        bson_t doc;
        bson_value_t id;
        const bson_value_t *value = bson_iter_value(&sessions);
        if (!fts_double_value_as_doc(value, &doc) || !fts_double_doc_get(&doc, "id", &id) ||
            id.value_type != BSON_TYPE_BINARY || id.value.v_binary.data_len != 16) {
            continue;
        }
        fts_double_txn_t *txn = session_find(srv, id.value.v_binary.data, false);
        if (txn && txn->state == TXN_ACTIVE) {
            discard(txn);
            txn->state = TXN_ABORTED;
        }
    }
}

void fts_double_txn_destroy_all(fts_double_server_t *srv)
{
    fts_double_txn_t *s = srv->sessions;
    while (s) {
        fts_double_txn_t *next = s->next;
        discard(s);
        bson_free(s);
        s = next;
    }
    srv->sessions = NULL;
}
