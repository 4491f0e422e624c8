/*
 * action.c - queued actions and their stream entry format (see action.h).
 *
 * Keeps invariants 3 and 6: the version written is the one the loader reads back, bit for bit,
 * and an entry that does not follow the format is refused with the field named, never guessed
 * at, so the loader can dead-letter it with that reason.
 */
#include "action.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "json_convert.h"

/* At most this many bytes of a bad value are quoted in an error message. */
#define QUOTED_VALUE_MAX 40

/* Elasticsearch's largest version: versions are Java longs. */
#define VERSION_MAX ((uint64_t)INT64_MAX)

bool fts_version_compute(uint32_t seconds, uint32_t increment, uint32_t position, uint64_t *version,
                         fts_error_t *err)
{
    if (seconds < FTS_VERSION_EPOCH || seconds > FTS_VERSION_SECONDS_MAX) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "cluster time %" PRIu32 ".%" PRIu32
                             " is outside what version scheme %d can hold (seconds %u to %u, "
                             "2020-01-01 to 2088-01-19)",
                             seconds, increment, FTS_VERSION_SCHEME, FTS_VERSION_EPOCH,
                             FTS_VERSION_SECONDS_MAX);
    }
    if (increment > FTS_VERSION_INCREMENT_MAX) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "cluster time increment %" PRIu32
                             " is above what version scheme %d can hold (%u changes in one "
                             "second)",
                             increment, FTS_VERSION_SCHEME, FTS_VERSION_INCREMENT_MAX);
    }
    if (position > FTS_VERSION_POSITION_MAX) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "position %" PRIu32
                             " inside the transaction is above what version scheme %d can hold "
                             "(%u operations in one transaction)",
                             position, FTS_VERSION_SCHEME, FTS_VERSION_POSITION_MAX);
    }
    uint64_t value = (uint64_t)(seconds - FTS_VERSION_EPOCH) << 32 |
                     (uint64_t)increment << FTS_VERSION_POSITION_BITS | position;
    if (value == 0) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "cluster time %" PRIu32 ".%" PRIu32
                             " is the epoch of version scheme %d itself, version 0, which "
                             "Elasticsearch does not accept as an external version",
                             seconds, increment, FTS_VERSION_SCHEME);
    }
    *version = value;
    return true;
}

uint64_t fts_version_from_timestamp(uint32_t seconds, uint32_t increment)
{
    uint64_t version = 0;
    fts_error_t ignored = {0};
    return fts_version_compute(seconds, increment, 0, &version, &ignored) ? version : 0;
}

/* KeyString (mongod's src/mongo/db/storage/key_string.cpp) type bytes of what a resume token
 * starts with: a Timestamp, then non-negative integers. An integer n > 0 is stored as the
 * type byte 0x2B - 1 + k followed by n << 1 in k big-endian bytes (the low bit would say a
 * fraction follows); 0 is the single byte 0x29. */
#define KS_TIMESTAMP        0x82
#define KS_ZERO             0x29
#define KS_POSITIVE_1_BYTE  0x2B
#define KS_POSITIVE_8_BYTES 0x32

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* The byte at *at of a hex string, advancing *at; false past the end or on a non-hex digit. */
static bool hex_byte(const char *hex, size_t len, size_t *at, uint8_t *byte)
{
    if (*at + 2 > len) {
        return false;
    }
    int high = hex_digit(hex[*at]);
    int low = hex_digit(hex[*at + 1]);
    if (high < 0 || low < 0) {
        return false;
    }
    *byte = (uint8_t)(high << 4 | low);
    *at += 2;
    return true;
}

/* A KeyString non-negative integer at *at. */
static bool keystring_uint(const char *hex, size_t len, size_t *at, uint64_t *value)
{
    uint8_t type;
    if (!hex_byte(hex, len, at, &type)) {
        return false;
    }
    if (type == KS_ZERO) {
        *value = 0;
        return true;
    }
    if (type < KS_POSITIVE_1_BYTE || type > KS_POSITIVE_8_BYTES) {
        return false;
    }
    uint64_t encoded = 0;
    for (int n = 0; n <= type - KS_POSITIVE_1_BYTE; n++) {
        uint8_t byte;
        if (!hex_byte(hex, len, at, &byte)) {
            return false;
        }
        encoded = encoded << 8 | byte;
    }
    if (encoded & 1) {
        return false; /* a fraction: no integer field of a token has one */
    }
    *value = encoded >> 1;
    return true;
}

bool fts_version_txn_position(const bson_t *event, uint32_t *position, fts_error_t *err)
{
    bson_iter_t iter;
    *position = 0;
    if (!bson_iter_init_find(&iter, event, "txnNumber")) {
        return true;
    }
    const char *hex = NULL;
    uint32_t len = 0;
    bson_iter_t data;
    if (bson_iter_init(&iter, event) && bson_iter_find_descendant(&iter, "_id._data", &data) &&
        BSON_ITER_HOLDS_UTF8(&data)) {
        hex = bson_iter_utf8(&data, &len);
    }
    uint32_t event_seconds = 0, event_increment = 0;
    if (bson_iter_init_find(&iter, event, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&iter)) {
        bson_iter_timestamp(&iter, &event_seconds, &event_increment);
    }
    size_t at = 0;
    uint8_t type = 0;
    uint64_t timestamp = 0;
    uint64_t token_version = 0, token_type = 0, op_index = 0;
    bool ok = hex && hex_byte(hex, len, &at, &type) && type == KS_TIMESTAMP;
    for (int n = 0; ok && n < 8; n++) {
        uint8_t byte;
        ok = hex_byte(hex, len, &at, &byte);
        timestamp = timestamp << 8 | byte;
    }
    ok = ok && keystring_uint(hex, len, &at, &token_version);
    /* Version 0 tokens (MongoDB 4.0) have no tokenType. */
    ok = ok && (token_version == 0 || keystring_uint(hex, len, &at, &token_type));
    ok = ok && keystring_uint(hex, len, &at, &op_index);
    if (!ok || token_version > 2) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_UNSUPPORTED,
                             "the event is part of a transaction but its resume token does not "
                             "have the layout ftsync reads its position in the transaction "
                             "(txnOpIndex) from, so the transaction's changes cannot be "
                             "ordered");
    }
    if (timestamp != ((uint64_t)event_seconds << 32 | event_increment)) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_UNSUPPORTED,
                             "the event's resume token names cluster time %" PRIu64 ".%" PRIu64
                             ", not the event's %" PRIu32 ".%" PRIu32
                             "; its position in the transaction cannot be trusted",
                             timestamp >> 32, timestamp & 0xFFFFFFFFu, event_seconds,
                             event_increment);
    }
    if (op_index > UINT32_MAX) {
        op_index = UINT32_MAX; /* fts_version_compute refuses it, naming the limit */
    }
    *position = (uint32_t)op_index;
    return true;
}

void fts_action_init(fts_action_t *action)
{
    memset(action, 0, sizeof *action);
}

void fts_action_cleanup(fts_action_t *action)
{
    if (!action) {
        return;
    }
    bson_free(action->ns);
    bson_free(action->id);
    bson_free(action->body);
    fts_action_init(action);
}

const char *fts_action_op_name(fts_action_op_t op)
{
    switch (op) {
    case FTS_ACTION_INDEX:
        return "index";
    case FTS_ACTION_DELETE:
        return "delete";
    case FTS_ACTION_DROP:
        return "drop";
    case FTS_ACTION_SWEEP:
        return "sweep";
    }
    return "?";
}

const char *fts_action_origin_name(fts_action_origin_t origin)
{
    switch (origin) {
    case FTS_ACTION_FROM_CHANGE:
        return "change";
    case FTS_ACTION_FROM_SNAPSHOT:
        return "snapshot";
    }
    return "?";
}

/* Writes a bad value into out as a short, printable, quoted excerpt for an error message. */
static void quote_value(const char *data, size_t len, char *out, size_t size)
{
    fts_buffer_t text = {0};
    bool cut = len > QUOTED_VALUE_MAX;
    fts_json_append_string(&text, data, cut ? QUOTED_VALUE_MAX : len);
    if (cut) {
        fts_buffer_append_str(&text, "...");
    }
    snprintf(out, size, "%s", text.data);
    fts_buffer_destroy(&text);
}

static bool id_is_valid(const char *id, size_t len)
{
    return len >= 1 && len <= FTS_ACTION_ID_MAX && !memchr(id, '\0', len) &&
           fts_utf8_validate(id, len);
}

static bool ns_is_valid(const char *ns, size_t len)
{
    const char *dot = memchr(ns, '.', len);
    return dot && dot > ns && dot < ns + len - 1 && !memchr(ns, '\0', len) &&
           fts_utf8_validate(ns, len);
}

/* A JSON object as json_convert writes it; the loader sends it as it is, so a cheap look at
 * both ends catches a truncated or mixed-up value without parsing it. */
static bool body_is_object(const char *body, size_t len)
{
    return len >= 2 && body[0] == '{' && body[len - 1] == '}';
}

bool fts_action_validate(const fts_action_t *action, fts_error_t *err)
{
    if (action->op != FTS_ACTION_INDEX && action->op != FTS_ACTION_DELETE &&
        action->op != FTS_ACTION_DROP && action->op != FTS_ACTION_SWEEP) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"op\": unknown operation %d", (int)action->op);
    }
    if (action->origin != FTS_ACTION_FROM_CHANGE && action->origin != FTS_ACTION_FROM_SNAPSHOT) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"origin\": unknown origin %d", (int)action->origin);
    }
    if (action->op == FTS_ACTION_DROP || action->op == FTS_ACTION_SWEEP) {
        if (action->id) {
            return fts_error_set(
                err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                action->op == FTS_ACTION_DROP
                    ? "field \"id\": a drop removes a whole collection and has none"
                    : "field \"id\": a sweep concerns a whole collection and has "
                      "none");
        }
    } else if (!action->id) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                             "field \"id\" is missing; a%s needs one",
                             action->op == FTS_ACTION_INDEX ? "n index" : " delete");
    } else if (!id_is_valid(action->id, action->id_len)) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"id\": %zu bytes; an id is 1 to %d bytes of UTF-8 without "
                             "NUL",
                             action->id_len, FTS_ACTION_ID_MAX);
    }
    if (action->version == 0 || action->version > VERSION_MAX) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"version\": %" PRIu64
                             " is outside 1..2^63-1, the versions Elasticsearch accepts",
                             action->version);
    }
    if (!action->ns || !ns_is_valid(action->ns, strlen(action->ns))) {
        return fts_error_set(err, FTS_ERROR_INPUT,
                             action->ns ? FTS_ERROR_CODE_INVALID : FTS_ERROR_CODE_MISSING,
                             "field \"ns\": %s", action->ns ? "not \"db.collection\"" : "missing");
    }
    if (action->op == FTS_ACTION_INDEX) {
        if (!action->body) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                                 "field \"body\" is missing; an index needs the document");
        }
        if (!body_is_object(action->body, action->body_len)) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                                 "field \"body\": not a JSON object");
        }
    } else if (action->body) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"body\": a %s carries no document",
                             fts_action_op_name(action->op));
    }
    return true;
}

static void push(fts_action_argv_t *argv, const char *text, size_t len)
{
    argv->argv[argv->argc] = text;
    argv->argvlen[argv->argc] = len;
    argv->argc++;
}

static void push_str(fts_action_argv_t *argv, const char *text)
{
    push(argv, text, strlen(text));
}

bool fts_action_encode(const fts_action_t *action, const char *stream_key, fts_action_argv_t *argv,
                       fts_error_t *err)
{
    memset(argv, 0, sizeof *argv);
    if (!fts_action_validate(action, err)) {
        return fts_error_prefix(err, "cannot queue the %s action", fts_action_op_name(action->op));
    }
    snprintf(argv->version_text, sizeof argv->version_text, "%" PRIu64, action->version);
    snprintf(argv->ts_text, sizeof argv->ts_text, "%" PRIu32 ".%" PRIu32, action->ts_seconds,
             action->ts_increment);
    push_str(argv, "XADD");
    push_str(argv, stream_key);
    push_str(argv, "*"); /* the server assigns the entry id; never MAXLEN (invariant 4) */
    push_str(argv, "op");
    push_str(argv, fts_action_op_name(action->op));
    if (action->op != FTS_ACTION_DROP && action->op != FTS_ACTION_SWEEP) {
        push_str(argv, "id");
        push(argv, action->id, action->id_len);
    }
    push_str(argv, "version");
    push_str(argv, argv->version_text);
    push_str(argv, "ns");
    push_str(argv, action->ns);
    push_str(argv, "ts");
    push_str(argv, argv->ts_text);
    push_str(argv, "origin");
    push_str(argv, fts_action_origin_name(action->origin));
    if (action->op == FTS_ACTION_INDEX) {
        push_str(argv, "body");
        push(argv, action->body, action->body_len);
    }
    return true;
}

bool fts_decimal_parse(const char *text, size_t len, uint64_t max, uint64_t *value)
{
    if (len == 0 || len > 20) {
        return false;
    }
    uint64_t result = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return false;
        }
        unsigned digit = (unsigned)(text[i] - '0');
        /* digit > max first: max - digit would wrap round and accept anything. */
        if (digit > max || result > (max - digit) / 10) {
            return false;
        }
        result = result * 10 + digit;
    }
    *value = result;
    return true;
}

/* A NUL-terminated copy; never NULL: allocation failure aborts. */
static char *copy_bytes(const fts_bytes_t *value)
{
    char *copy = bson_malloc(value->len + 1);
    if (value->len) {
        memcpy(copy, value->data, value->len);
    }
    copy[value->len] = '\0';
    return copy;
}

/* The fields decode knows, in entry order. */
enum { F_OP, F_ID, F_VERSION, F_NS, F_TS, F_ORIGIN, F_BODY, F_COUNT };
static const char *const field_names[F_COUNT] = {"op", "id",     "version", "ns",
                                                 "ts", "origin", "body"};

static bool bytes_equal(const fts_bytes_t *bytes, const char *text)
{
    size_t len = strlen(text);
    return bytes->len == len && (len == 0 || memcmp(bytes->data, text, len) == 0);
}

bool fts_action_decode(const fts_bytes_t *items, size_t count, fts_action_t *action,
                       fts_error_t *err)
{
    const fts_bytes_t *values[F_COUNT] = {0};
    char quoted[QUOTED_VALUE_MAX * 6 + 8];
    fts_action_init(action);
    if (count % 2 != 0) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "stream entry has %zu items; fields and values must pair up", count);
    }
    for (size_t i = 0; i < count; i += 2) {
        for (int f = 0; f < F_COUNT; f++) {
            if (!bytes_equal(&items[i], field_names[f])) {
                continue;
            }
            if (values[f]) {
                return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                                     "field \"%s\" appears twice", field_names[f]);
            }
            values[f] = &items[i + 1];
        }
    }
    for (int f = 0; f < F_COUNT; f++) {
        if (f != F_ID && f != F_BODY && !values[f]) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                                 "field \"%s\" is missing", field_names[f]);
        }
    }

    const fts_bytes_t *op = values[F_OP];
    if (bytes_equal(op, "index")) {
        action->op = FTS_ACTION_INDEX;
    } else if (bytes_equal(op, "delete")) {
        action->op = FTS_ACTION_DELETE;
    } else if (bytes_equal(op, "drop")) {
        action->op = FTS_ACTION_DROP;
    } else if (bytes_equal(op, "sweep")) {
        action->op = FTS_ACTION_SWEEP;
    } else {
        quote_value(op->data, op->len, quoted, sizeof quoted);
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"op\": unknown operation %s (index, delete, drop or sweep)",
                             quoted);
    }

    const fts_bytes_t *version = values[F_VERSION];
    if (!fts_decimal_parse(version->data, version->len, VERSION_MAX, &action->version) ||
        action->version == 0) {
        quote_value(version->data, version->len, quoted, sizeof quoted);
        fts_action_cleanup(action);
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"version\": %s is not a decimal number in 1..2^63-1", quoted);
    }

    const fts_bytes_t *ts = values[F_TS];
    const char *dot = memchr(ts->data, '.', ts->len);
    uint64_t seconds = 0;
    uint64_t increment = 0;
    if (!dot || !fts_decimal_parse(ts->data, (size_t)(dot - ts->data), UINT32_MAX, &seconds) ||
        !fts_decimal_parse(dot + 1, ts->len - (size_t)(dot - ts->data) - 1, UINT32_MAX,
                           &increment)) {
        quote_value(ts->data, ts->len, quoted, sizeof quoted);
        fts_action_cleanup(action);
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"ts\": %s is not \"<seconds>.<increment>\"", quoted);
    }
    action->ts_seconds = (uint32_t)seconds;
    action->ts_increment = (uint32_t)increment;

    const fts_bytes_t *origin = values[F_ORIGIN];
    if (bytes_equal(origin, "change")) {
        action->origin = FTS_ACTION_FROM_CHANGE;
    } else if (bytes_equal(origin, "snapshot")) {
        action->origin = FTS_ACTION_FROM_SNAPSHOT;
    } else {
        quote_value(origin->data, origin->len, quoted, sizeof quoted);
        fts_action_cleanup(action);
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"origin\": unknown origin %s (change or snapshot)", quoted);
    }

    const fts_bytes_t *ns = values[F_NS];
    if (!ns_is_valid(ns->data, ns->len)) {
        quote_value(ns->data, ns->len, quoted, sizeof quoted);
        fts_action_cleanup(action);
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "field \"ns\": %s is not \"db.collection\"", quoted);
    }

    action->ns = copy_bytes(ns);
    if (values[F_ID]) {
        action->id = copy_bytes(values[F_ID]);
        action->id_len = values[F_ID]->len;
    }
    if (values[F_BODY]) {
        action->body = copy_bytes(values[F_BODY]);
        action->body_len = values[F_BODY]->len;
    }
    if (!fts_action_validate(action, err)) {
        fts_action_cleanup(action);
        return false;
    }
    return true;
}
