/*
 * errors.c - mongod's error names and error-label rules (see errors.h).
 */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool fts_double_error_set(fts_double_error_t *err, int code, const char *format, ...)
{
    if (!err) {
        return false;
    }
    err->code = code;
    va_list args;
    va_start(args, format);
    vsnprintf(err->msg, sizeof err->msg, format, args);
    va_end(args);
    return false;
}

typedef struct {
    int code;
    const char *name;
} code_name_t;

/* The names of mongod 6.0 (src/mongo/base/error_codes.yml) for every code the double raises and
 * the ones tests commonly inject with failCommand. Sorted by code. */
static const code_name_t code_names[] = {
    {1, "InternalError"},
    {2, "BadValue"},
    {4, "NoSuchKey"},
    {6, "HostUnreachable"},
    {7, "HostNotFound"},
    {8, "UnknownError"},
    {9, "FailedToParse"},
    {11, "UserNotFound"},
    {13, "Unauthorized"},
    {14, "TypeMismatch"},
    {15, "Overflow"},
    {16, "InvalidLength"},
    {17, "ProtocolError"},
    {18, "AuthenticationFailed"},
    {20, "IllegalOperation"},
    {22, "InvalidBSON"},
    {24, "LockTimeout"},
    {26, "NamespaceNotFound"},
    {27, "IndexNotFound"},
    {28, "PathNotViable"},
    {29, "NonExistentPath"},
    {30, "InvalidPath"},
    {40, "ConflictingUpdateOperators"},
    {43, "CursorNotFound"},
    {46, "LockBusy"},
    {47, "NoMatchingDocument"},
    {48, "NamespaceExists"},
    {50, "MaxTimeMSExpired"},
    {52, "DollarPrefixedFieldName"},
    {53, "InvalidIdField"},
    {54, "NotSingleValueField"},
    {56, "EmptyFieldName"},
    {57, "DottedFieldName"},
    {59, "CommandNotFound"},
    {63, "StaleShardVersion"},
    {64, "WriteConcernFailed"},
    {66, "ImmutableField"},
    {67, "CannotCreateIndex"},
    {68, "IndexAlreadyExists"},
    {72, "InvalidOptions"},
    {73, "InvalidNamespace"},
    {79, "UnknownReplWriteConcern"},
    {85, "IndexOptionsConflict"},
    {86, "IndexKeySpecsConflict"},
    {89, "NetworkTimeout"},
    {90, "CallbackCanceled"},
    {91, "ShutdownInProgress"},
    {96, "OperationFailed"},
    {100, "UnsatisfiableWriteConcern"},
    {112, "WriteConflict"},
    {115, "CommandNotSupported"},
    {117, "ConflictingOperationInProgress"},
    {121, "DocumentValidationFailure"},
    {123, "NotAReplicaSet"},
    {125, "CommandFailed"},
    {133, "FailedToSatisfyReadPreference"},
    {134, "ReadConcernMajorityNotAvailableYet"},
    {136, "CappedPositionLost"},
    {143, "CursorInUse"},
    {150, "StaleEpoch"},
    {175, "QueryPlanKilled"},
    {189, "PrimarySteppedDown"},
    {202, "NetworkInterfaceExceededTimeLimit"},
    {211, "KeyNotFound"},
    {222, "CloseChangeStream"},
    {234, "RetryChangeStream"},
    {237, "CursorKilled"},
    {238, "NotImplemented"},
    {239, "SnapshotTooOld"},
    {244, "TransactionAborted"},
    {246, "SnapshotUnavailable"},
    {251, "NoSuchTransaction"},
    {256, "TransactionCommitted"},
    {257, "TransactionTooLarge"},
    {260, "InvalidResumeToken"},
    {262, "ExceededTimeLimit"},
    {263, "OperationNotSupportedInTransaction"},
    {279, "ClientDisconnect"},
    {280, "ChangeStreamFatalError"},
    {286, "ChangeStreamHistoryLost"},
    {292, "QueryExceededMemoryLimitNoDiskUseAllowed"},
    {317, "ConnectionPoolExpired"},
    {346, "ChangeStreamInvalidated"},
    {352, "UnsupportedOpQueryCommand"},
    {9001, "SocketException"},
    {10058, "LegacyNotPrimary"},
    {10107, "NotWritablePrimary"},
    {10334, "BSONObjectTooLarge"},
    {11000, "DuplicateKey"},
    {11600, "InterruptedAtShutdown"},
    {11601, "Interrupted"},
    {11602, "InterruptedDueToReplStateChange"},
    {13388, "StaleConfig"},
    {13435, "NotPrimaryNoSecondaryOk"},
    {13436, "NotPrimaryOrSecondary"},
    {40413, "IDLDuplicateField"},
    {40414, "IDLFailedToParse"},
    {40415, "IDLUnknownField"},
    {50768, "NotARetryableWriteCommand"},
};

const char *fts_double_error_code_name(int code, char *buf, size_t size)
{
    size_t lo = 0, hi = sizeof code_names / sizeof code_names[0];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (code_names[mid].code == code) {
            return code_names[mid].name;
        }
        if (code_names[mid].code < code) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    snprintf(buf, size, "Location%d", code);
    return buf;
}

bool fts_double_error_is_retriable(int code)
{
    switch (code) {
    case 6:     /* HostUnreachable */
    case 7:     /* HostNotFound */
    case 89:    /* NetworkTimeout */
    case 91:    /* ShutdownInProgress */
    case 134:   /* ReadConcernMajorityNotAvailableYet */
    case 189:   /* PrimarySteppedDown */
    case 262:   /* ExceededTimeLimit */
    case 317:   /* ConnectionPoolExpired */
    case 9001:  /* SocketException */
    case 10107: /* NotWritablePrimary */
    case 11600: /* InterruptedAtShutdown */
    case 11602: /* InterruptedDueToReplStateChange */
    case 13435: /* NotPrimaryNoSecondaryOk */
    case 13436: /* NotPrimaryOrSecondary */
        return true;
    default:
        return false;
    }
}

/* mongod's NeedRetargettingError category plus the two codes its change-stream rule names. */
static bool is_change_stream_resumable(int code)
{
    return fts_double_error_is_retriable(code) || code == 63 || code == 150 || code == 13388 ||
           code == 234 /* RetryChangeStream */ || code == 133 /* FailedToSatisfyReadPreference */;
}

void fts_double_error_append_labels(bson_t *reply, int code, const fts_double_label_facts_t *facts)
{
    const char *labels[3];
    int count = 0;
    bool retryable_write = false;

    /* RetryableWriteError: a retryable write (txnNumber outside a transaction) whose command or
     * write-concern error is in the RetriableError category. */
    if (facts->has_txn_number &&
        ((code && fts_double_error_is_retriable(code)) ||
         (facts->write_concern_code && fts_double_error_is_retriable(facts->write_concern_code)))) {
        labels[count++] = "RetryableWriteError";
        retryable_write = true;
    }
    /* ResumableChangeStreamError on aggregate/getMore of a change stream; NonResumable for the
     * codes in that category (280, 286), whatever the command. */
    if (!retryable_write && code && facts->is_change_stream && !facts->write_concern_code &&
        (strcmp(facts->command, "aggregate") == 0 || strcmp(facts->command, "getMore") == 0) &&
        is_change_stream_resumable(code)) {
        labels[count++] = "ResumableChangeStreamError";
    } else if (code == FTS_DOUBLE_E_CHANGE_STREAM_FATAL ||
               code == FTS_DOUBLE_E_CHANGE_STREAM_HISTORY_LOST) {
        labels[count++] = "NonResumableChangeStreamError";
    }
    /* TransientTransactionError: in a transaction (txnNumber and autocommit), an error after
     * which the whole transaction may be retried: NoSuchTransaction (on commit or abort only
     * without a write-concern error, whose data could still roll back) and WriteConflict
     * (mongod's error_labels.cpp, isTransientTransactionError). */
    bool commit_or_abort = strcmp(facts->command, "commitTransaction") == 0 ||
                           strcmp(facts->command, "abortTransaction") == 0;
    if (facts->in_transaction && ((code == FTS_DOUBLE_E_NO_SUCH_TRANSACTION &&
                                   !(commit_or_abort && facts->write_concern_code)) ||
                                  code == FTS_DOUBLE_E_WRITE_CONFLICT)) {
        labels[count++] = "TransientTransactionError";
    }
    if (count == 0) {
        return;
    }
    bson_t array;
    bson_append_array_begin(reply, "errorLabels", -1, &array);
    for (int i = 0; i < count; i++) {
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
        bson_append_utf8(&array, k, -1, labels[i], -1);
    }
    bson_append_array_end(reply, &array);
}
