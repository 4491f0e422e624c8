/*
 * errors.h - the MongoDB server errors the double can answer with, and the rules that decide
 * which error labels go with them.
 *
 * Every failing command answers like mongod 6.0: {ok: 0, errmsg, code, codeName, errorLabels?}.
 * The labels are not decoration: libmongoc and pymongo decide from them whether to retry a write
 * (RetryableWriteError) or to resume a change stream (ResumableChangeStreamError), so they follow
 * mongod's own rules (src/mongo/db/error_labels.cpp) as documented, not a guess per call site.
 */
#ifndef FTS_DOUBLE_ERRORS_H
#define FTS_DOUBLE_ERRORS_H

#include <bson/bson.h>
#include <stdbool.h>

/* The codes the double raises itself; any other code (from a fail point) is passed through. */
enum {
    FTS_DOUBLE_E_INTERNAL = 1,
    FTS_DOUBLE_E_BAD_VALUE = 2,
    FTS_DOUBLE_E_HOST_UNREACHABLE = 6,
    FTS_DOUBLE_E_HOST_NOT_FOUND = 7,
    FTS_DOUBLE_E_FAILED_TO_PARSE = 9,
    FTS_DOUBLE_E_UNAUTHORIZED = 13,
    FTS_DOUBLE_E_TYPE_MISMATCH = 14,
    FTS_DOUBLE_E_ILLEGAL_OPERATION = 20,
    FTS_DOUBLE_E_NAMESPACE_NOT_FOUND = 26,
    FTS_DOUBLE_E_INDEX_NOT_FOUND = 27,
    FTS_DOUBLE_E_PATH_NOT_VIABLE = 28,
    FTS_DOUBLE_E_CONFLICTING_UPDATE_OPERATORS = 40,
    FTS_DOUBLE_E_CURSOR_NOT_FOUND = 43,
    FTS_DOUBLE_E_NO_MATCHING_DOCUMENT = 47,
    FTS_DOUBLE_E_NAMESPACE_EXISTS = 48,
    FTS_DOUBLE_E_DOLLAR_PREFIXED_FIELD_NAME = 52,
    FTS_DOUBLE_E_INVALID_ID_FIELD = 53,
    FTS_DOUBLE_E_COMMAND_NOT_FOUND = 59,
    FTS_DOUBLE_E_IMMUTABLE_FIELD = 66,
    FTS_DOUBLE_E_CANNOT_CREATE_INDEX = 67,
    FTS_DOUBLE_E_INVALID_OPTIONS = 72,
    FTS_DOUBLE_E_INVALID_NAMESPACE = 73,
    FTS_DOUBLE_E_NETWORK_TIMEOUT = 89,
    FTS_DOUBLE_E_SHUTDOWN_IN_PROGRESS = 91,
    FTS_DOUBLE_E_OPERATION_FAILED = 96,
    FTS_DOUBLE_E_CURSOR_IN_USE = 143,
    FTS_DOUBLE_E_PRIMARY_STEPPED_DOWN = 189,
    FTS_DOUBLE_E_CURSOR_KILLED = 237,
    FTS_DOUBLE_E_WRITE_CONFLICT = 112,
    FTS_DOUBLE_E_TRANSACTION_TOO_OLD = 225,
    FTS_DOUBLE_E_NO_SUCH_TRANSACTION = 251,
    FTS_DOUBLE_E_TRANSACTION_COMMITTED = 256,
    FTS_DOUBLE_E_INVALID_RESUME_TOKEN = 260,
    FTS_DOUBLE_E_EXCEEDED_TIME_LIMIT = 262,
    FTS_DOUBLE_E_OPERATION_NOT_SUPPORTED_IN_TXN = 263,
    FTS_DOUBLE_E_CHANGE_STREAM_FATAL = 280,
    FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST = 286,
    FTS_DOUBLE_E_UNSUPPORTED_OP_QUERY = 352,
    FTS_DOUBLE_E_SOCKET_EXCEPTION = 9001,
    FTS_DOUBLE_E_NOT_WRITABLE_PRIMARY = 10107,
    FTS_DOUBLE_E_DUPLICATE_KEY = 11000,
    FTS_DOUBLE_E_INTERRUPTED_AT_SHUTDOWN = 11600,
    FTS_DOUBLE_E_INTERRUPTED_REPL_STATE_CHANGE = 11602,
    FTS_DOUBLE_E_NOT_PRIMARY_NO_SECONDARY_OK = 13435,
    FTS_DOUBLE_E_NOT_PRIMARY_OR_SECONDARY = 13436,
    FTS_DOUBLE_E_UNKNOWN_FIELD = 40415,
    FTS_DOUBLE_E_UNRECOGNIZED_STAGE = 40324,
    FTS_DOUBLE_E_CHANGE_STREAM_NOT_FIRST = 40602,
    FTS_DOUBLE_E_MULTIPLE_RESUME_OPTIONS = 40674,
    FTS_DOUBLE_E_MISSING_DB = 40571
};

/* Longest errmsg kept; mongod's own messages are far shorter. */
#define FTS_DOUBLE_ERRMSG_SIZE 512

/* A command failure as mongod reports it. A zero code means "no error". */
typedef struct {
    int code;
    char msg[FTS_DOUBLE_ERRMSG_SIZE];
} fts_double_error_t;

/* Fills err (may be NULL) and returns false, so that `return fts_double_error_set(...)` reads
 * as a failure return. */
bool fts_double_error_set(fts_double_error_t *err, int code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* mongod's codeName for a code: "DuplicateKey", ...; "Location<code>" for codes without a name,
 * as mongod prints them. Returns buf or a static string. */
const char *fts_double_error_code_name(int code, char *buf, size_t size);

/* The facts the label rules look at. */
typedef struct {
    const char *command;    /* command name */
    bool has_txn_number;    /* the command is a retryable write (txnNumber, no autocommit) */
    bool in_transaction;    /* the command is part of a transaction (txnNumber and autocommit) */
    bool is_change_stream;  /* an aggregate with $changeStream or a getMore on its cursor */
    int write_concern_code; /* a writeConcernError's code, 0 if none */
} fts_double_label_facts_t;

/* Appends "errorLabels" to reply if mongod would attach any for `code` given facts. */
void fts_double_error_append_labels(bson_t *reply, int code, const fts_double_label_facts_t *facts);

/* mongod's RetriableError category (codes a driver may retry after). */
bool fts_double_error_is_retriable(int code);

#endif
