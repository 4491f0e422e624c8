/*
 * eventlog.c - cluster clock, bounded event ring buffer and resume tokens (see eventlog.h).
 */
#include "eventlog.h"

#include "bsonval.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

const char *fts_double_op_name(fts_double_op_t op)
{
    switch (op) {
    case FTS_DOUBLE_OP_INSERT:
        return "insert";
    case FTS_DOUBLE_OP_UPDATE:
        return "update";
    case FTS_DOUBLE_OP_REPLACE:
        return "replace";
    case FTS_DOUBLE_OP_DELETE:
        return "delete";
    case FTS_DOUBLE_OP_DROP:
        return "drop";
    case FTS_DOUBLE_OP_RENAME:
        return "rename";
    case FTS_DOUBLE_OP_DROP_DATABASE:
        return "dropDatabase";
    case FTS_DOUBLE_OP_CREATE:
        return "create";
    }
    return "unknown";
}

static int64_t wall_now_ms(const fts_double_eventlog_t *log)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return ((int64_t)tv.tv_sec + log->clock_offset) * 1000 + tv.tv_usec / 1000;
}

uint32_t fts_double_eventlog_seconds(const fts_double_eventlog_t *log)
{
    return (uint32_t)((int64_t)time(NULL) + log->clock_offset);
}

bool fts_double_eventlog_set_clock(fts_double_eventlog_t *log, int64_t seconds)
{
    if (seconds <= 0 || seconds > (int64_t)UINT32_MAX) {
        return false;
    }
    log->clock_offset = seconds - (int64_t)time(NULL);
    log->last.t = (uint32_t)seconds;
    log->last.i = 0;
    log->floor = log->last;
    return true;
}

void fts_double_eventlog_init(fts_double_eventlog_t *log, size_t max_events, size_t max_bytes)
{
    memset(log, 0, sizeof *log);
    log->max_events = max_events;
    log->max_bytes = max_bytes;
    log->cap = max_events && max_events < 1024 ? max_events : 1024;
    log->ring = bson_malloc0(log->cap * sizeof *log->ring);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    log->run = (uint32_t)((uint32_t)tv.tv_sec * 2654435761u) ^ (uint32_t)tv.tv_usec ^
               ((uint32_t)getpid() << 16);
    log->last.t = (uint32_t)tv.tv_sec;
    log->last.i = 0;
    log->floor = log->last;
}

static void event_release(fts_double_event_t *ev)
{
    fts_double_doc_unref(ev->pre);
    fts_double_doc_unref(ev->post);
    if (ev->update_desc) {
        bson_destroy(ev->update_desc);
    }
    memset(ev, 0, sizeof *ev);
}

void fts_double_eventlog_destroy(fts_double_eventlog_t *log)
{
    for (size_t n = 0; n < log->count; n++) {
        event_release(&log->ring[(log->head + n) % log->cap]);
    }
    bson_free(log->ring);
    memset(log, 0, sizeof *log);
}

fts_double_ts_t fts_double_eventlog_now(fts_double_eventlog_t *log)
{
    /* Between writes the clock follows the wall clock with increment 0, which no event ever
     * has, so a high-water mark at "now" sorts before every later event. */
    uint32_t now = fts_double_eventlog_seconds(log);
    if (now > log->last.t) {
        fts_double_ts_t ts = {now, 0};
        return ts;
    }
    return log->last;
}

void fts_double_eventlog_mark_start(fts_double_eventlog_t *log)
{
    log->floor = fts_double_eventlog_now(log);
}

fts_double_ts_t fts_double_eventlog_tick(fts_double_eventlog_t *log)
{
    uint32_t now = fts_double_eventlog_seconds(log);
    if (now > log->last.t) {
        log->last.t = now;
        log->last.i = 1;
    } else {
        log->last.i++;
    }
    return log->last;
}

static void evict_oldest(fts_double_eventlog_t *log)
{
    fts_double_event_t *ev = &log->ring[log->head];
    log->bytes -= ev->bytes;
    /* Everything from the next cluster time on is still here. */
    log->floor = ev->ts;
    log->floor.i++;
    event_release(ev);
    log->head = (log->head + 1) % log->cap;
    log->count--;
    log->first_seq++;
    log->evicted++;
}

static void grow(fts_double_eventlog_t *log)
{
    size_t cap = log->cap * 2;
    if (log->max_events && cap > log->max_events) {
        cap = log->max_events;
    }
    fts_double_event_t *ring = bson_malloc0(cap * sizeof *ring);
    for (size_t n = 0; n < log->count; n++) {
        ring[n] = log->ring[(log->head + n) % log->cap];
    }
    bson_free(log->ring);
    log->ring = ring;
    log->cap = cap;
    log->head = 0;
}

static size_t event_size(const fts_double_event_t *ev)
{
    /* Roughly what the oplog entry would weigh: the new document for inserts and replacements,
     * the delta for updates, the key for deletes; recorded images on top. */
    size_t bytes = 96 + strlen(ev->ns->full);
    switch (ev->op) {
    case FTS_DOUBLE_OP_INSERT:
    case FTS_DOUBLE_OP_REPLACE:
        bytes += ev->post ? ev->post->len : 0;
        break;
    case FTS_DOUBLE_OP_UPDATE:
        bytes += ev->update_desc ? ev->update_desc->len : 0;
        break;
    default:
        break;
    }
    if (ev->images) {
        bytes += (ev->pre ? ev->pre->len : 0) +
                 (ev->op == FTS_DOUBLE_OP_UPDATE && ev->post ? ev->post->len : 0);
    }
    return bytes;
}

const fts_double_event_t *fts_double_eventlog_append(fts_double_eventlog_t *log,
                                                     fts_double_event_t *event)
{
    if (!event->in_txn) {
        event->ts = fts_double_eventlog_tick(log);
    }
    event->wall_ms = wall_now_ms(log);
    event->seq = log->next_seq++;
    event->bytes = event_size(event);
    while (log->count > 0 && ((log->max_events && log->count >= log->max_events) ||
                              (log->max_bytes && log->bytes + event->bytes > log->max_bytes))) {
        evict_oldest(log);
    }
    if (log->count == log->cap) {
        grow(log);
    }
    if (log->count == 0) {
        log->head = 0;
        log->first_seq = event->seq;
    }
    fts_double_event_t *slot = &log->ring[(log->head + log->count) % log->cap];
    *slot = *event;
    memset(event, 0, sizeof *event);
    log->count++;
    log->bytes += slot->bytes;
    return slot;
}

const fts_double_event_t *fts_double_eventlog_get(const fts_double_eventlog_t *log, uint64_t seq)
{
    if (log->count == 0 || seq < log->first_seq || seq >= log->first_seq + log->count) {
        return NULL;
    }
    return &log->ring[(log->head + (seq - log->first_seq)) % log->cap];
}

uint64_t fts_double_eventlog_seek(const fts_double_eventlog_t *log, fts_double_ts_t ts)
{
    size_t lo = 0, hi = log->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (fts_double_ts_compare(log->ring[(log->head + mid) % log->cap].ts, ts) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return (log->count ? log->first_seq : log->next_seq) + lo;
}

void fts_double_token_for_event(const fts_double_eventlog_t *log, const fts_double_event_t *ev,
                                fts_double_token_kind_t kind, fts_double_token_t *out)
{
    out->ts = ev->ts;
    out->kind = kind;
    out->seq = ev->seq;
    out->run = log->run;
    out->txn_op_index = ev->in_txn ? ev->txn_op_index : 0;
}

void fts_double_token_hwm(fts_double_eventlog_t *log, fts_double_token_t *out)
{
    out->ts = fts_double_eventlog_now(log);
    out->kind = FTS_DOUBLE_TOKEN_HWM;
    out->seq = log->next_seq;
    out->run = log->run;
    /* The largest index: a high-water mark at a transaction's commit time then sorts after
     * every event of that transaction, as "everything up to this time was seen" must. */
    out->txn_op_index = UINT32_MAX;
}

/* The KeyString prefix every token shares after its timestamp: version 1, tokenType 128. */
#define TOKEN_VERSION_AND_TYPE "2B022C0100"

void fts_double_token_append(bson_t *dst, const char *key, const fts_double_token_t *token)
{
    char index[24];
    if (token->txn_op_index == 0) {
        snprintf(index, sizeof index, "29");
    } else {
        /* KeyString: type 0x2A + n, then index << 1 in the n bytes it needs. */
        uint64_t encoded = (uint64_t)token->txn_op_index << 1;
        int bytes = 1;
        while (bytes < 8 && (encoded >> (8 * bytes)) != 0) {
            bytes++;
        }
        snprintf(index, sizeof index, "%02X%0*llX", 0x2A + bytes, bytes * 2,
                 (unsigned long long)encoded);
    }
    char hex[FTS_DOUBLE_TOKEN_HEX_MAX + 1];
    int len = snprintf(hex, sizeof hex, "82%08X%08X" TOKEN_VERSION_AND_TYPE "%s%02X%016llX%08X",
                       token->ts.t, token->ts.i, index, (unsigned)token->kind,
                       (unsigned long long)token->seq, token->run);
    bson_t doc;
    bson_append_document_begin(dst, key, -1, &doc);
    bson_append_utf8(&doc, "_data", 5, hex, len);
    bson_append_document_end(dst, &doc);
}

static bool hex_field(const char *s, size_t width, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else {
            return false;
        }
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return true;
}

size_t fts_double_token_hex_len(const char *s, size_t len)
{
    const size_t prefix = 18 + strlen(TOKEN_VERSION_AND_TYPE);
    uint64_t index_type = 0;
    if (len < prefix + 2 || !hex_field(s + prefix, 2, &index_type)) {
        return 0;
    }
    size_t bytes = 0;
    if (index_type >= 0x2B && index_type <= 0x32) {
        bytes = (size_t)(index_type - 0x2A);
    } else if (index_type != 0x29) {
        return 0;
    }
    size_t whole = prefix + 2 + 2 * bytes + 26;
    return whole <= len ? whole : 0;
}

bool fts_double_token_parse(const bson_value_t *value, fts_double_token_t *out,
                            fts_double_error_t *err)
{
    bson_t doc;
    bson_iter_t it;
    bson_init_static(&doc, value->value.v_doc.data, value->value.v_doc.data_len);
    if (!bson_iter_init_find(&it, &doc, "_data") || !BSON_ITER_HOLDS_UTF8(&it)) {
        return fts_double_error_set(err, 40647,
                                    "Bad resume token: _data of missing or of wrong type. Expected "
                                    "string or BinData, got %s",
                                    bson_iter_init_find(&it, &doc, "_data")
                                        ? fts_double_type_alias(bson_iter_type(&it))
                                        : "missing");
    }
    uint32_t len;
    const char *s = bson_iter_utf8(&it, &len);
    if (len == 0) {
        return fts_double_error_set(err, 40649, "invalid empty resume token");
    }
    uint64_t ignored;
    for (uint32_t c = 0; c < len; c++) {
        if (!hex_field(s + c, 1, &ignored)) {
            len = 1; /* fall into the odd-length test below */
            break;
        }
    }
    if (len % 2 != 0) {
        return fts_double_error_set(err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                    "resume token string was not a valid hex string");
    }
    uint64_t t, i, kind, seq, run, index = 0, index_type = 0;
    const size_t prefix = 18 + strlen(TOKEN_VERSION_AND_TYPE);
    size_t tail = prefix; /* where kind starts, after the txnOpIndex */
    bool ok = len > prefix + 2 && s[0] == '8' && s[1] == '2' && hex_field(s + 2, 8, &t) &&
              hex_field(s + 10, 8, &i) &&
              strncmp(s + 18, TOKEN_VERSION_AND_TYPE, strlen(TOKEN_VERSION_AND_TYPE)) == 0 &&
              hex_field(s + prefix, 2, &index_type);
    if (ok && index_type == 0x29) {
        tail = prefix + 2;
    } else if (ok && index_type >= 0x2B && index_type <= 0x32) {
        size_t bytes = (size_t)(index_type - 0x2A);
        ok = len > prefix + 2 + 2 * bytes && hex_field(s + prefix + 2, 2 * bytes, &index);
        tail = prefix + 2 + 2 * bytes;
    } else {
        ok = false;
    }
    if (!ok || len != tail + 26 || !hex_field(s + tail, 2, &kind) ||
        !hex_field(s + tail + 2, 16, &seq) || !hex_field(s + tail + 18, 8, &run) || kind < 1 ||
        kind > 3 || (index & 1) || (index >> 1) > UINT32_MAX) {
        return fts_double_error_set(err, 50811,
                                    "KeyString format error: not a resume token issued by "
                                    "ftsync-mongo-double");
    }
    out->txn_op_index = (uint32_t)(index >> 1);
    out->ts.t = (uint32_t)t;
    out->ts.i = (uint32_t)i;
    out->kind = (fts_double_token_kind_t)kind;
    out->seq = seq;
    out->run = (uint32_t)run;
    return true;
}
