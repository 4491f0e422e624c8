/*
 * bulk_result.h - judging Elasticsearch's answer to a _bulk request, item by item.
 *
 * Pure and unit-tested with recorded answers of Elasticsearch 1.x, 7.x, 8.x and OpenSearch
 * 2.x. Each item is judged on its own (never the whole answer by its "errors" flag), because
 * acknowledging a stream entry is only allowed once its own action was accepted (invariant 2):
 *
 *   2xx                               -> ACK
 *   409 (version conflict: under external versions a newer version is already there) -> ACK
 *   404 on a delete (already gone; without an error, which would say the index is missing)
 *                                     -> ACK
 *   429, 5xx, 408, 401/403 (including a read-only index block), 404 on an index action
 *   (index missing), any status not listed -> RETRY that item later
 *   400, 413, 422 (mapping or parse errors, a document too large) -> REJECT: dead-letter it
 *
 * The whole answer:
 *   HTTP 2xx with an items array of one item per action sent, each with the op that was sent
 *   and a numeric status -> ITEMS, each item judged as above;
 *   HTTP 413, or HTTP 400 without items (the request as a whole was refused) -> SPLIT: send
 *   the batch again in halves; a single action is rejected (its reason says why);
 *   anything else (429, 5xx, other statuses, malformed or truncated JSON, wrong item count or
 *   op, no status) -> RETRY the whole request: nothing is known, so nothing is acknowledged.
 * The reason of a rejected or retried item is "<type>: <reason>" from a modern error object
 * (then "; caused by <type>: <reason>" for each level of its caused_by), or the error string
 * of Elasticsearch 1.x, as one printable line, truncated to fit. A body that holds more than
 * one JSON value is malformed too (libbson alone would read the first and ignore the rest).
 */
#ifndef FTS_BULK_RESULT_H
#define FTS_BULK_RESULT_H

#include <stdbool.h>
#include <stddef.h>

#include "action.h"

/* Room for a reason, truncated with "..." beyond. */
#define FTS_BULK_REASON_SIZE 512

typedef enum {
    FTS_BULK_ITEM_ACK = 1, /* accepted, a newer version is there, or already deleted */
    FTS_BULK_ITEM_RETRY,   /* transient: send this action again after a backoff */
    FTS_BULK_ITEM_REJECT   /* refused for good: dead-letter it with reason */
} fts_bulk_item_verdict_t;

/* Short labels for counters and rate-limited log lines. */
typedef enum {
    FTS_BULK_KIND_OK = 0,       /* 2xx */
    FTS_BULK_KIND_CONFLICT,     /* 409 */
    FTS_BULK_KIND_NOT_FOUND,    /* 404 on delete */
    FTS_BULK_KIND_THROTTLED,    /* 429 */
    FTS_BULK_KIND_SERVER_ERROR, /* 5xx */
    FTS_BULK_KIND_BLOCKED,      /* 401, 403, 408, 404 on index, other retried statuses */
    FTS_BULK_KIND_REJECTED,     /* 400, 413, 422 */
    FTS_BULK_KIND_COUNT
} fts_bulk_kind_t;

typedef struct {
    fts_bulk_item_verdict_t verdict;
    fts_bulk_kind_t kind;
    int status;
    char reason[FTS_BULK_REASON_SIZE]; /* "" when accepted */
} fts_bulk_item_result_t;

typedef enum {
    FTS_BULK_RESPONSE_ITEMS = 1, /* items[] filled, one per action */
    FTS_BULK_RESPONSE_RETRY,     /* nothing known: retry the whole request after a backoff */
    FTS_BULK_RESPONSE_SPLIT      /* too large or refused as a whole: send it in halves */
} fts_bulk_response_verdict_t;

/* Judges an HTTP answer (status, body of body_len bytes, not necessarily NUL-terminated) to a
 * bulk request of count actions whose ops (FTS_ACTION_INDEX or FTS_ACTION_DELETE) were
 * ops[0..count). items must have room for count results; they are filled only for ITEMS.
 * reason (reason_size bytes) receives why for RETRY and SPLIT, e.g. "HTTP 503: ..." or
 * "malformed bulk response: 3 items for 4 actions". */
fts_bulk_response_verdict_t fts_bulk_response_judge(long status, const char *body, size_t body_len,
                                                    const fts_action_op_t *ops, size_t count,
                                                    fts_bulk_item_result_t *items, char *reason,
                                                    size_t reason_size);

/* "ok", "version_conflict", "not_found", "throttled", "server_error", "blocked", "rejected". */
const char *fts_bulk_kind_name(fts_bulk_kind_t kind);

#endif
