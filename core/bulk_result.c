/*
 * bulk_result.c - judging Elasticsearch's answer to a _bulk request (see bulk_result.h).
 *
 * Keeps invariant 2: an item is ACK only when its own answer says the action was applied, a
 * newer version is already there (409) or a delete found nothing (404). Whatever cannot be
 * read with certainty - a body that is not JSON, is cut short, has one item too few or too
 * many, answers another op than the one sent, or lacks a numeric status - makes the whole
 * request RETRY: items are matched to actions by position only, so one doubt about the
 * shape means no item can be trusted.
 *
 * Keeps invariants 5 and 6: every RETRY, SPLIT and REJECT comes with a reason saying what the
 * server said, as one printable line (control characters become spaces, invalid UTF-8 is not
 * passed on), short enough for a dead-letter entry and a log line.
 *
 * The body is read with libbson's JSON reader; items are read in two passes, the first only
 * checking the shape, so that items[] is written only when the answer is ITEMS.
 */
#include "bulk_result.h"

#include <bson/bson.h>
#include <stdio.h>
#include <string.h>

#include "buffer.h"
#include "json_convert.h"

/* At most this many bytes of a body that is not a JSON error are quoted in a reason. */
#define BODY_EXCERPT_MAX 200

/* How many caused_by levels of a modern error object are followed: the first ones name the
 * cause, deeper ones rarely add anything a reason of FTS_BULK_REASON_SIZE has room for. */
#define CAUSED_BY_DEPTH_MAX 4

/* HTTP statuses an item may carry; anything else is not a status. */
#define STATUS_MIN 100
#define STATUS_MAX 599

const char *fts_bulk_kind_name(fts_bulk_kind_t kind)
{
    switch (kind) {
    case FTS_BULK_KIND_OK:
        return "ok";
    case FTS_BULK_KIND_CONFLICT:
        return "version_conflict";
    case FTS_BULK_KIND_NOT_FOUND:
        return "not_found";
    case FTS_BULK_KIND_THROTTLED:
        return "throttled";
    case FTS_BULK_KIND_SERVER_ERROR:
        return "server_error";
    case FTS_BULK_KIND_BLOCKED:
        return "blocked";
    case FTS_BULK_KIND_REJECTED:
        return "rejected";
    case FTS_BULK_KIND_COUNT:
        break;
    }
    return "?";
}

/* ---------------------------------------------------------------------------------------- */
/* Reasons                                                                                  */

/* Appends text as one printable line: a server's message may hold newlines (ES 1.x nests
 * Java exception messages) and must not split a log line or a stream field. */
static void append_line_text(fts_buffer_t *out, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        fts_buffer_append_char(out, (c < 0x20 || c == 0x7f) ? ' ' : (char)c);
    }
}

/* Copies text into out (size bytes), cut with "..." when it does not fit. The cut never
 * splits a UTF-8 sequence; text that is not valid UTF-8 has its non-ASCII bytes shown as '?',
 * since it ends up in JSON logs and dead-letter entries that must stay valid text. */
static void copy_reason(char *out, size_t size, fts_buffer_t *text)
{
    if (!out || size == 0) {
        return;
    }
    const char *data = text->data ? text->data : "";
    size_t len = text->len;
    if (!fts_utf8_validate(data, len)) {
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)text->data[i] >= 0x80) {
                text->data[i] = '?';
            }
        }
    }
    if (len < size) {
        memcpy(out, data, len);
        out[len] = '\0';
        return;
    }
    static const char ellipsis[] = "...";
    size_t keep = size > sizeof ellipsis ? size - sizeof ellipsis : 0;
    /* Back up over continuation bytes so that the first byte dropped starts a character. */
    while (keep > 0 && ((unsigned char)data[keep] & 0xc0) == 0x80) {
        keep--;
    }
    memcpy(out, data, keep);
    snprintf(out + keep, size - keep, "%s", ellipsis);
}

/* The string value of key in the document iter is in, or NULL. */
static const char *child_utf8(const bson_iter_t *doc, const char *key, uint32_t *len)
{
    bson_iter_t child;
    if (bson_iter_recurse(doc, &child) && bson_iter_find(&child, key) &&
        BSON_ITER_HOLDS_UTF8(&child)) {
        return bson_iter_utf8(&child, len);
    }
    return NULL;
}

/* Appends "<type>: <reason>" of a modern error object, or what of it there is. */
static void append_error_object(fts_buffer_t *out, const bson_iter_t *error)
{
    uint32_t type_len = 0;
    uint32_t reason_len = 0;
    const char *type = child_utf8(error, "type", &type_len);
    const char *reason = child_utf8(error, "reason", &reason_len);
    if (type) {
        append_line_text(out, type, type_len);
    }
    if (type && reason) {
        fts_buffer_append_str(out, ": ");
    }
    if (reason) {
        append_line_text(out, reason, reason_len);
    }
    if (!type && !reason) {
        fts_buffer_append_str(out, "error without type or reason");
    }
}

/* Appends a description of the "error" value iter points at: the string of Elasticsearch 1.x,
 * or the object of later versions with its chain of causes. */
static void append_error(fts_buffer_t *out, const bson_iter_t *error)
{
    if (BSON_ITER_HOLDS_UTF8(error)) {
        uint32_t len = 0;
        const char *text = bson_iter_utf8(error, &len);
        append_line_text(out, text, len);
        return;
    }
    if (!BSON_ITER_HOLDS_DOCUMENT(error)) {
        fts_buffer_append_str(out, "error that is neither a string nor an object");
        return;
    }
    append_error_object(out, error);
    bson_iter_t level = *error;
    for (int depth = 0; depth < CAUSED_BY_DEPTH_MAX; depth++) {
        bson_iter_t cause;
        if (!bson_iter_recurse(&level, &cause) || !bson_iter_find(&cause, "caused_by") ||
            !BSON_ITER_HOLDS_DOCUMENT(&cause)) {
            break;
        }
        fts_buffer_append_str(out, "; caused by ");
        append_error_object(out, &cause);
        level = cause;
    }
}

/* "HTTP <status>" and what the body says: its "error" if it is JSON with one, else a short
 * excerpt of it (a proxy's HTML page, a plain-text message). */
static void append_http_reason(fts_buffer_t *out, long status, const bson_t *doc, bool parsed,
                               const char *body, size_t body_len)
{
    fts_buffer_appendf(out, "HTTP %ld", status);
    bson_iter_t iter;
    if (parsed && bson_iter_init_find(&iter, doc, "error")) {
        fts_buffer_append_str(out, ": ");
        append_error(out, &iter);
        return;
    }
    if (body_len == 0) {
        fts_buffer_append_str(out, " with an empty body");
        return;
    }
    fts_buffer_append_str(out, ": ");
    bool cut = body_len > BODY_EXCERPT_MAX;
    append_line_text(out, body, cut ? BODY_EXCERPT_MAX : body_len);
    if (cut) {
        fts_buffer_append_str(out, "...");
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Items                                                                                    */

/* Whether an item answered under key is the answer to an action of op: an index action may
 * be answered as "create" (it is one when the document did not exist); "update" never
 * answers anything ftsync sends. */
static bool key_matches_op(const char *key, fts_action_op_t op)
{
    switch (op) {
    case FTS_ACTION_INDEX:
        return strcmp(key, "index") == 0 || strcmp(key, "create") == 0;
    case FTS_ACTION_DELETE:
        return strcmp(key, "delete") == 0;
    case FTS_ACTION_DROP:
    case FTS_ACTION_SWEEP:
        break;
    }
    return false;
}

/* libbson reads a JSON number as int32, int64 or double depending on its size and form. */
static bool read_status(const bson_iter_t *iter, int *status)
{
    int64_t value;
    if (BSON_ITER_HOLDS_INT32(iter) || BSON_ITER_HOLDS_INT64(iter)) {
        value = bson_iter_as_int64(iter);
    } else if (BSON_ITER_HOLDS_DOUBLE(iter)) {
        double number = bson_iter_double(iter);
        /* The range check comes first so that the conversion below is defined (NaN fails
         * it too); then the value must be whole. */
        if (!(number >= STATUS_MIN && number <= STATUS_MAX) || number != (double)(int)number) {
            return false;
        }
        value = (int64_t)number;
    } else {
        return false;
    }
    if (value < STATUS_MIN || value > STATUS_MAX) {
        return false;
    }
    *status = (int)value;
    return true;
}

/* Reads item index of the items array (element points at it) for an action of op: checks it
 * is {"<op>": {..., "status": <number>, ...}} and gives the status and the inner object.
 * On failure why (a fts_buffer_t) says what was wrong. */
static bool read_item(const bson_iter_t *element, size_t index, fts_action_op_t op, int *status,
                      bson_iter_t *inner, fts_buffer_t *why)
{
    bson_iter_t item;
    if (!BSON_ITER_HOLDS_DOCUMENT(element) || !bson_iter_recurse(element, &item)) {
        fts_buffer_appendf(why, "item %zu is not an object", index);
        return false;
    }
    if (!bson_iter_next(&item)) {
        fts_buffer_appendf(why, "item %zu is empty", index);
        return false;
    }
    const char *key = bson_iter_key(&item);
    if (strcmp(key, "index") != 0 && strcmp(key, "create") != 0 && strcmp(key, "delete") != 0 &&
        strcmp(key, "update") != 0) {
        fts_buffer_appendf(why, "item %zu has no index, create, delete or update answer", index);
        return false;
    }
    if (!key_matches_op(key, op)) {
        fts_buffer_appendf(why, "item %zu answers %.16s, but %s was sent", index, key,
                           fts_action_op_name(op));
        return false;
    }
    *inner = item;
    if (bson_iter_next(&item)) {
        /* Two answers for one action: which one counts cannot be known. */
        fts_buffer_appendf(why, "item %zu has more than one answer", index);
        return false;
    }
    bson_iter_t field;
    if (!BSON_ITER_HOLDS_DOCUMENT(inner) || !bson_iter_recurse(inner, &field)) {
        fts_buffer_appendf(why, "item %zu's %s answer is not an object", index, key);
        return false;
    }
    if (!bson_iter_find(&field, "status")) {
        fts_buffer_appendf(why, "item %zu has no status", index);
        return false;
    }
    if (!read_status(&field, status)) {
        fts_buffer_appendf(why, "item %zu has a status that is not an HTTP status", index);
        return false;
    }
    return true;
}

/* The verdict of one well-formed item: the table of bulk_result.h. */
static void judge_item(int status, fts_action_op_t op, const bson_iter_t *inner,
                       fts_bulk_item_result_t *result)
{
    result->status = status;
    result->reason[0] = '\0';
    if (status >= 200 && status <= 299) {
        result->verdict = FTS_BULK_ITEM_ACK;
        result->kind = FTS_BULK_KIND_OK;
        return;
    }
    if (status == 409) {
        /* Under version_type=external a conflict means the index holds this version or a
         * newer one already: the action's effect is there or superseded. */
        result->verdict = FTS_BULK_ITEM_ACK;
        result->kind = FTS_BULK_KIND_CONFLICT;
        return;
    }
    bson_iter_t probe;
    bool has_error = bson_iter_recurse(inner, &probe) && bson_iter_find(&probe, "error");
    if (status == 404 && op == FTS_ACTION_DELETE && !has_error) {
        /* A plain "not_found" delete. A 404 that carries an error (index_not_found_exception,
         * 1.x IndexMissingException) says the index is missing, not the document: acknowledging
         * that would let a misconfigured index swallow every delete. It waits below. */
        result->verdict = FTS_BULK_ITEM_ACK;
        result->kind = FTS_BULK_KIND_NOT_FOUND;
        return;
    }
    if (status == 400 || status == 413 || status == 422) {
        /* The document itself is refused: sending it again cannot help. */
        result->verdict = FTS_BULK_ITEM_REJECT;
        result->kind = FTS_BULK_KIND_REJECTED;
    } else if (status == 429) {
        result->verdict = FTS_BULK_ITEM_RETRY;
        result->kind = FTS_BULK_KIND_THROTTLED;
    } else if (status >= 500) {
        result->verdict = FTS_BULK_ITEM_RETRY;
        result->kind = FTS_BULK_KIND_SERVER_ERROR;
    } else {
        /* 401, 403 (a read-only block lifts once disk is freed), 408, 404 on an index action
         * (the index is missing until someone creates it), and whatever else: an operator
         * can fix these, so the action waits rather than being thrown away. */
        result->verdict = FTS_BULK_ITEM_RETRY;
        result->kind = FTS_BULK_KIND_BLOCKED;
    }

    fts_buffer_t text = {0};
    bson_iter_t field;
    if (bson_iter_recurse(inner, &field) && bson_iter_find(&field, "error")) {
        append_error(&text, &field);
    } else {
        fts_buffer_appendf(&text, "status %d without an error", status);
    }
    copy_reason(result->reason, sizeof result->reason, &text);
    fts_buffer_destroy(&text);
}

/* ---------------------------------------------------------------------------------------- */
/* The whole answer                                                                         */

/* Parses body as exactly one JSON value into doc (which is initialised either way, and left
 * empty on failure). bson_init_from_json would stop after the first value and ignore what
 * follows it; a body that goes on after its answer is not a shape this code knows. */
static bool parse_body(const char *body, size_t len, bson_t *doc, fts_buffer_t *error_text)
{
    bool ok = false;
    bson_error_t error;
    bson_t extra = BSON_INITIALIZER;
    bson_json_reader_t *reader = bson_json_data_reader_new(false, 0);
    bson_init(doc);
    bson_json_data_reader_ingest(reader, (const uint8_t *)body, len);
    int read = bson_json_reader_read(reader, doc, &error);
    if (read != 1) {
        fts_buffer_append_str(error_text, read == 0 ? "no JSON value" : error.message);
        goto cleanup;
    }
    read = bson_json_reader_read(reader, &extra, &error);
    if (read != 0) {
        fts_buffer_append_str(error_text, "more than one JSON value");
        goto cleanup;
    }
    ok = true;
cleanup:
    if (!ok) {
        bson_reinit(doc);
    }
    bson_destroy(&extra);
    bson_json_reader_destroy(reader);
    return ok;
}

fts_bulk_response_verdict_t fts_bulk_response_judge(long status, const char *body, size_t body_len,
                                                    const fts_action_op_t *ops, size_t count,
                                                    fts_bulk_item_result_t *items, char *reason,
                                                    size_t reason_size)
{
    fts_bulk_response_verdict_t verdict = FTS_BULK_RESPONSE_RETRY;
    fts_buffer_t why = {0};
    bson_t doc = BSON_INITIALIZER;
    fts_buffer_t parse_error = {0};
    bool parsed = false;
    bson_iter_t array;

    if (reason && reason_size) {
        reason[0] = '\0';
    }
    if (!body) {
        body_len = 0;
    }
    if (body_len > 0) {
        parsed = parse_body(body, body_len, &doc, &parse_error);
    }

    bool has_items = parsed && bson_iter_init_find(&array, &doc, "items");
    if (status == 413 || (status == 400 && !has_items)) {
        /* The request as a whole was too large or refused (a line Elasticsearch could not
         * frame): halves isolate the action at fault, and a single one is rejected. */
        append_http_reason(&why, status, &doc, parsed, body, body_len);
        verdict = FTS_BULK_RESPONSE_SPLIT;
        goto cleanup;
    }
    if (status < 200 || status > 299) {
        append_http_reason(&why, status, &doc, parsed, body, body_len);
        goto cleanup;
    }

    fts_buffer_append_str(&why, "malformed bulk response: ");
    if (body_len == 0) {
        fts_buffer_append_str(&why, "empty body");
        goto cleanup;
    }
    if (!parsed) {
        /* A body cut by a dropped connection or a proxy lands here too. */
        /* libbson's message quotes the offending byte as it is: keep the line printable. */
        fts_buffer_append_str(&why, "not JSON (");
        append_line_text(&why, parse_error.data, parse_error.len);
        fts_buffer_append_char(&why, ')');
        goto cleanup;
    }
    if (!has_items || !BSON_ITER_HOLDS_ARRAY(&array)) {
        bson_iter_t top;
        if (bson_iter_init_find(&top, &doc, "error")) {
            fts_buffer_append_str(&why, "no items array but an error: ");
            append_error(&why, &top);
        } else {
            fts_buffer_append_str(&why, "no items array");
        }
        goto cleanup;
    }

    /* Pass 1: the shape of every item, and their number, before anything is written. */
    bson_iter_t element;
    size_t seen = 0;
    if (!bson_iter_recurse(&array, &element)) {
        fts_buffer_append_str(&why, "unreadable items array");
        goto cleanup;
    }
    while (bson_iter_next(&element)) {
        if (seen < count) {
            int item_status;
            bson_iter_t inner;
            if (!read_item(&element, seen, ops[seen], &item_status, &inner, &why)) {
                goto cleanup;
            }
        }
        seen++;
    }
    if (seen != count) {
        fts_buffer_appendf(&why, "%zu items for %zu actions", seen, count);
        goto cleanup;
    }

    /* Pass 2: every item is well-formed; judge each on its own. */
    bson_iter_recurse(&array, &element);
    for (size_t i = 0; i < count && bson_iter_next(&element); i++) {
        int item_status = 0;
        bson_iter_t inner;
        read_item(&element, i, ops[i], &item_status, &inner, &why);
        judge_item(item_status, ops[i], &inner, &items[i]);
    }
    fts_buffer_clear(&why);
    verdict = FTS_BULK_RESPONSE_ITEMS;

cleanup:
    if (verdict != FTS_BULK_RESPONSE_ITEMS) {
        copy_reason(reason, reason_size, &why);
    }
    bson_destroy(&doc);
    fts_buffer_destroy(&parse_error);
    fts_buffer_destroy(&why);
    return verdict;
}
