/*
 * worker_message.c - encode and decode of the parent -> worker messages (worker_message.h).
 *
 * The one place that knows the field names: the parent (extract.c) only encodes, the worker
 * (extract_worker.c) only decodes. Keeps invariant 6 (README.md, Architecture) on the
 * worker's input: a message is handed on only when every field its kind needs is there with
 * its type; otherwise the error names the kind and the field.
 */
#include "worker_message.h"

#include <assert.h>
#include <string.h>

static const char *const kind_names[] = {
    [FTS_WORKER_MESSAGE_EVENT] = "event",
    [FTS_WORKER_MESSAGE_SNAPSHOT] = "snap",
    [FTS_WORKER_MESSAGE_TOKEN] = "token",
    [FTS_WORKER_MESSAGE_SWEEP] = "sweep",
};

const char *fts_worker_message_kind_name(fts_worker_message_kind_t kind)
{
    assert(kind >= FTS_WORKER_MESSAGE_EVENT && kind <= FTS_WORKER_MESSAGE_SWEEP);
    return kind_names[kind];
}

/* ---------------------------------------------------------------------------------------- */
/* Encode                                                                                   */

static void append_timestamp(bson_t *frame, const char *key, fts_timestamp_t time)
{
    BSON_APPEND_TIMESTAMP(frame, key, time.seconds, time.increment);
}

static void append_token(bson_t *frame, const fts_worker_message_t *message)
{
    assert(message->token && *message->token);
    BSON_APPEND_UTF8(frame, "tok", message->token);
    BSON_APPEND_UTF8(frame, "kind", fts_token_kind_name(message->token_kind));
}

void fts_worker_message_encode(const fts_worker_message_t *message, bson_t *frame)
{
    /* bson_append_* fail only past 2 GiB; a frame is refused long before, at
     * FTS_FRAME_MAX_SIZE, by the writer (frame.h). */
    BSON_APPEND_UTF8(frame, "t", fts_worker_message_kind_name(message->kind));
    switch (message->kind) {
    case FTS_WORKER_MESSAGE_EVENT:
        assert(message->payload);
        BSON_APPEND_DOCUMENT(frame, "ev", message->payload);
        append_token(frame, message);
        BSON_APPEND_BOOL(frame, "careful", message->careful);
        break;
    case FTS_WORKER_MESSAGE_SNAPSHOT:
        assert(message->payload && message->ns && message->last_id);
        BSON_APPEND_DOCUMENT(frame, "doc", message->payload);
        BSON_APPEND_UTF8(frame, "ns", message->ns);
        append_timestamp(frame, "started", message->started);
        BSON_APPEND_UTF8(frame, "last_id", message->last_id);
        BSON_APPEND_INT64(frame, "queued", (int64_t)message->queued);
        BSON_APPEND_BOOL(frame, "careful", message->careful);
        break;
    case FTS_WORKER_MESSAGE_TOKEN:
        append_token(frame, message);
        append_timestamp(frame, "ct", message->cluster_time);
        break;
    case FTS_WORKER_MESSAGE_SWEEP:
        assert(message->ns);
        BSON_APPEND_UTF8(frame, "ns", message->ns);
        append_timestamp(frame, "started", message->started);
        break;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Decode                                                                                   */

/* Finds key in frame holding type; else an error naming the message kind and the field. */
static bool find_field(const bson_t *frame, const char *kind, const char *key, bson_type_t type,
                       bson_iter_t *iter, fts_error_t *err)
{
    if (!bson_iter_init_find(iter, frame, key)) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                             "a \"%s\" message from the extract parent has no field \"%s\"", kind,
                             key);
    }
    if (bson_iter_type(iter) != type) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                             "a \"%s\" message from the extract parent has a field \"%s\" of "
                             "the wrong type (0x%02x, expected 0x%02x)",
                             kind, key, (unsigned)bson_iter_type(iter), (unsigned)type);
    }
    return true;
}

static bool read_string(const bson_t *frame, const char *kind, const char *key, const char **value,
                        fts_error_t *err)
{
    bson_iter_t iter;
    if (!find_field(frame, kind, key, BSON_TYPE_UTF8, &iter, err)) {
        return false;
    }
    *value = bson_iter_utf8(&iter, NULL);
    return true;
}

static bool read_timestamp(const bson_t *frame, const char *kind, const char *key,
                           fts_timestamp_t *value, fts_error_t *err)
{
    bson_iter_t iter;
    if (!find_field(frame, kind, key, BSON_TYPE_TIMESTAMP, &iter, err)) {
        return false;
    }
    bson_iter_timestamp(&iter, &value->seconds, &value->increment);
    return true;
}

/* The payload document, as a read-only view into frame stored in out->payload_view. */
static bool read_payload(const bson_t *frame, const char *kind, const char *key,
                         fts_worker_message_t *out, fts_error_t *err)
{
    bson_iter_t iter;
    if (!find_field(frame, kind, key, BSON_TYPE_DOCUMENT, &iter, err)) {
        return false;
    }
    uint32_t len = 0;
    const uint8_t *data = NULL;
    bson_iter_document(&iter, &len, &data);
    if (!bson_init_static(&out->payload_view, data, len)) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                             "a \"%s\" message from the extract parent has a malformed \"%s\"",
                             kind, key);
    }
    out->payload = &out->payload_view;
    return true;
}

static bool read_token(const bson_t *frame, const char *kind, fts_worker_message_t *out,
                       fts_error_t *err)
{
    const char *token_kind = NULL;
    if (!read_string(frame, kind, "tok", &out->token, err) ||
        !read_string(frame, kind, "kind", &token_kind, err)) {
        return false;
    }
    if (!*out->token) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                             "a \"%s\" message from the extract parent has an empty \"tok\"", kind);
    }
    if (!fts_token_kind_parse(token_kind, &out->token_kind)) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                             "a \"%s\" message from the extract parent has an unknown token "
                             "kind \"%s\"",
                             kind, token_kind);
    }
    return true;
}

/* "careful" is optional: absent means false. */
static bool read_careful(const bson_t *frame, const char *kind, fts_worker_message_t *out,
                         fts_error_t *err)
{
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, frame, "careful")) {
        return true;
    }
    if (!find_field(frame, kind, "careful", BSON_TYPE_BOOL, &iter, err)) {
        return false;
    }
    out->careful = bson_iter_bool(&iter);
    return true;
}

static bool read_kind(const bson_t *frame, fts_worker_message_kind_t *kind, fts_error_t *err)
{
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, frame, "t") || !BSON_ITER_HOLDS_UTF8(&iter)) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                             "a message from the extract parent has no type (string field "
                             "\"t\")");
    }
    const char *name = bson_iter_utf8(&iter, NULL);
    for (int k = FTS_WORKER_MESSAGE_EVENT; k <= FTS_WORKER_MESSAGE_SWEEP; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            *kind = (fts_worker_message_kind_t)k;
            return true;
        }
    }
    return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                         "a message from the extract parent of unknown type \"%s\"", name);
}

bool fts_worker_message_decode(const bson_t *frame, fts_worker_message_t *out, fts_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (!read_kind(frame, &out->kind, err)) {
        return false;
    }
    const char *kind = kind_names[out->kind];
    int64_t queued = 0;
    bool ok = false;
    switch (out->kind) {
    case FTS_WORKER_MESSAGE_EVENT:
        ok = read_payload(frame, kind, "ev", out, err) && read_token(frame, kind, out, err) &&
             read_careful(frame, kind, out, err);
        break;
    case FTS_WORKER_MESSAGE_SNAPSHOT: {
        bson_iter_t iter;
        ok = read_payload(frame, kind, "doc", out, err) &&
             read_string(frame, kind, "ns", &out->ns, err) &&
             read_timestamp(frame, kind, "started", &out->started, err) &&
             read_string(frame, kind, "last_id", &out->last_id, err) &&
             find_field(frame, kind, "queued", BSON_TYPE_INT64, &iter, err) &&
             read_careful(frame, kind, out, err);
        if (ok) {
            queued = bson_iter_int64(&iter);
        }
        break;
    }
    case FTS_WORKER_MESSAGE_TOKEN:
        ok = read_token(frame, kind, out, err) &&
             read_timestamp(frame, kind, "ct", &out->cluster_time, err);
        break;
    case FTS_WORKER_MESSAGE_SWEEP:
        ok = read_string(frame, kind, "ns", &out->ns, err) &&
             read_timestamp(frame, kind, "started", &out->started, err);
        break;
    }
    if (ok && queued < 0) {
        ok = fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_PROTOCOL,
                           "a \"snap\" message from the extract parent has a negative "
                           "\"queued\" (%lld)",
                           (long long)queued);
    }
    out->queued = (uint64_t)queued;
    if (!ok) {
        memset(out, 0, sizeof *out);
    }
    return ok;
}
