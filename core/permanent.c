/*
 * permanent.c - classifying failures that need an operator, and keeping their state in the
 * metrics block and the log (permanent.h).
 *
 * Invariants kept: the signal of a server is non-zero exactly from a permanent failure until
 * the next proper answer of that server (a transient failure in between changes nothing); the
 * counter grows by one per permanent failure; a change of state is always logged, repeats at
 * most once per FTS_PERMANENT_LOG_EVERY_MS.
 */
#include "permanent.h"

#include <assert.h>
#include <string.h>

#include "clock.h"
#include "log.h"

/* The state this process reported last, and when it last logged it. */
static fts_permanent_reason_t reported[FTS_SERVER_COUNT];
static uint64_t logged_at[FTS_SERVER_COUNT];

/* Whether text[0..len) contains needle (the body need not end with a NUL). */
static bool contains(const char *text, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; text && n <= len && i <= len - n; i++) {
        if (memcmp(text + i, needle, n) == 0) {
            return true;
        }
    }
    return false;
}

/* Elasticsearch 8 refuses a cross-cluster key on the REST API with "authentication expected
 * API key type of [rest], but API key [...] has type [cross_cluster]". */
static bool says_api_key_type(const char *text, size_t len)
{
    return contains(text, len, "API key type") || contains(text, len, "has type [");
}

fts_permanent_reason_t fts_permanent_classify(const fts_error_t *err)
{
    if (!err || err->domain == FTS_ERROR_NONE) {
        return FTS_PERMANENT_NONE;
    }
    if (err->domain != FTS_ERROR_REDIS && err->domain != FTS_ERROR_ES &&
        err->domain != FTS_ERROR_MONGO) {
        return FTS_PERMANENT_NONE;
    }
    /* Redis answers "WRONGTYPE Operation against a key holding the wrong kind of value" to a
     * command on a key of another type (someone else's key under ftsync's names): no retry
     * changes that. The adapters quote the server's answer in the message. */
    if (err->domain == FTS_ERROR_REDIS && strstr(err->message, "WRONGTYPE")) {
        return FTS_PERMANENT_WRONG_TYPE;
    }
    switch (err->code) {
    case FTS_ERROR_CODE_AUTH:
        return err->domain == FTS_ERROR_ES && says_api_key_type(err->message, strlen(err->message))
                   ? FTS_PERMANENT_API_KEY
                   : FTS_PERMANENT_AUTH;
    case FTS_ERROR_CODE_NOT_ELASTICSEARCH:
        return err->domain == FTS_ERROR_ES ? FTS_PERMANENT_NOT_ELASTICSEARCH : FTS_PERMANENT_NONE;
    case FTS_ERROR_CODE_TLS:
        return err->domain == FTS_ERROR_MONGO ? FTS_PERMANENT_NONE : FTS_PERMANENT_TLS;
    case FTS_ERROR_CODE_NOT_REPLICA_SET:
        return err->domain == FTS_ERROR_MONGO ? FTS_PERMANENT_NOT_REPLICA_SET : FTS_PERMANENT_NONE;
    default:
        return FTS_PERMANENT_NONE;
    }
}

fts_permanent_reason_t fts_permanent_classify_http(long status, const char *body, size_t len)
{
    if (status == 401 || status == 403) {
        return says_api_key_type(body, len) ? FTS_PERMANENT_API_KEY : FTS_PERMANENT_AUTH;
    }
    if (status >= 200 && status < 300) {
        /* Elasticsearch answers JSON objects; an HTML page or plain text means a web server,
         * a proxy's login page... in front of nothing ftsync can use. */
        size_t i = 0;
        while (body && i < len && strchr(" \t\r\n", body[i])) {
            i++;
        }
        if (!body || i == len || body[i] != '{') {
            return FTS_PERMANENT_NOT_ELASTICSEARCH;
        }
    }
    return FTS_PERMANENT_NONE;
}

/* A change of state, always printed: the logger holds back repeats of one call site (format)
 * within its interval, so each reason has a call site of its own; the once-a-minute repeat has
 * another. */
static void log_change(fts_server_t server, fts_permanent_reason_t reason, const char *detail)
{
    const char *advice = fts_permanent_advice(server, reason);
    switch (reason) {
    case FTS_PERMANENT_AUTH:
        fts_log(FTS_LOG_ERROR, "permanent", "permanent (auth): %s; retrying until fixed: %s",
                advice, detail);
        break;
    case FTS_PERMANENT_API_KEY:
        fts_log(FTS_LOG_ERROR, "permanent", "permanent (api_key): %s; retrying until fixed: %s",
                advice, detail);
        break;
    case FTS_PERMANENT_NOT_ELASTICSEARCH:
        fts_log(FTS_LOG_ERROR, "permanent",
                "permanent (not_elasticsearch): %s; retrying until fixed: %s", advice, detail);
        break;
    case FTS_PERMANENT_TLS:
        fts_log(FTS_LOG_ERROR, "permanent", "permanent (tls): %s; retrying until fixed: %s", advice,
                detail);
        break;
    case FTS_PERMANENT_WRONG_TYPE:
        fts_log(FTS_LOG_ERROR, "permanent", "permanent (wrong_type): %s; retrying until fixed: %s",
                advice, detail);
        break;
    case FTS_PERMANENT_NOT_REPLICA_SET:
        fts_log(FTS_LOG_ERROR, "permanent",
                "permanent (not_replica_set): %s; retrying until fixed: %s", advice, detail);
        break;
    default:
        assert(false && "a permanent reason");
    }
}

void fts_permanent_report(fts_server_t server, fts_permanent_reason_t reason, const char *detail)
{
    assert(server < FTS_SERVER_COUNT && reason < FTS_PERMANENT_COUNT);
    fts_permanent_reason_t before = reported[server];
    reported[server] = reason;
    fts_signal_set(fts_permanent_signal(server), (uint64_t)reason);
    if (reason == FTS_PERMANENT_NONE) {
        if (before != FTS_PERMANENT_NONE) {
            fts_log(FTS_LOG_INFO, "permanent",
                    "%s answers properly again: the permanent failure "
                    "(%s) is over",
                    fts_server_name(server), fts_permanent_reason_name(before));
        }
        return;
    }
    fts_metric_add(FTS_METRIC_PERMANENT_ERRORS, fts_permanent_label(server, reason), 1);
    uint64_t now = fts_clock_monotonic_ms();
    if (reason != before) {
        logged_at[server] = now;
        log_change(server, reason, detail ? detail : "");
    } else if (now - logged_at[server] >= FTS_PERMANENT_LOG_EVERY_MS) {
        logged_at[server] = now;
        fts_log(FTS_LOG_ERROR, "permanent", "permanent (%s), still: %s: %s",
                fts_permanent_reason_name(reason), fts_permanent_advice(server, reason),
                detail ? detail : "");
    }
}

void fts_permanent_report_error(fts_server_t server, const fts_error_t *err)
{
    fts_permanent_reason_t reason = fts_permanent_classify(err);
    if (reason != FTS_PERMANENT_NONE) {
        fts_permanent_report(server, reason, err->message);
    }
}
