/*
 * json_convert.c - BSON to plain JSON (see json_convert.h for the type table).
 *
 * Keeps invariant 6: corrupt input is refused with the field path where it broke and the
 * output buffer is truncated back to where it was, so a caller never sends half a document.
 * The libbson iterator checks each element's bounds as it steps; embedded documents are also
 * checked with bson_init_static before they are entered, because a sub-iterator alone would
 * take a truncated tail for a normal end.
 */
#include "json_convert.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* U+FFFD REPLACEMENT CHARACTER, encoded as UTF-8. */
#define REPLACEMENT_CHARACTER "\xef\xbf\xbd"

/* Integers beyond ±2^53 lose precision in JSON readers that use doubles (JavaScript, and
 * Elasticsearch for a field mapped as double), so int64 values past it are written as strings. */
#define JSON_SAFE_INTEGER 9007199254740992LL

/* Dates are written as ISO 8601 only for years 0000-9999, the range that format can spell
 * with four year digits: 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z. */
#define ISO_DATE_MIN_MS (-62167219200000LL)
#define ISO_DATE_MAX_MS 253402300799999LL

/* A key is shown with at most this many bytes in an error message. */
#define ERROR_KEY_MAX 64

typedef struct {
    fts_buffer_t *out;
    fts_error_t *err;
    /* Keys from the converted value down to the element being converted, borrowed from the
     * document; only read to name the path when something fails. */
    const char *keys[FTS_JSON_MAX_DEPTH + 2];
    size_t depth;
} convert_t;

/* ---------------------------------------------------------------------------------------- */
/* UTF-8                                                                                    */

/* Length of the sequence at text (avail bytes left, at least 1). *valid says whether it is one
 * well-formed character or a maximal ill-formed subpart, which is replaced by one U+FFFD as
 * Unicode (chapter 3, "U+FFFD substitution of maximal subparts") and WHATWG recommend. */
static size_t utf8_sequence(const unsigned char *text, size_t avail, bool *valid)
{
    unsigned char lead = text[0];
    unsigned char low = 0x80;
    unsigned char high = 0xbf;
    size_t continuation;
    *valid = false;
    if (lead < 0x80) {
        *valid = true;
        return 1;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
        continuation = 1;
    } else if (lead == 0xe0) {
        continuation = 2;
        low = 0xa0; /* below is an overlong form */
    } else if (lead == 0xed) {
        continuation = 2;
        high = 0x9f; /* above are the UTF-16 surrogates U+D800..U+DFFF */
    } else if (lead >= 0xe1 && lead <= 0xef) {
        continuation = 2;
    } else if (lead == 0xf0) {
        continuation = 3;
        low = 0x90; /* below is an overlong form */
    } else if (lead >= 0xf1 && lead <= 0xf3) {
        continuation = 3;
    } else if (lead == 0xf4) {
        continuation = 3;
        high = 0x8f; /* above is beyond U+10FFFF */
    } else {
        return 1; /* a stray continuation byte, 0xc0/0xc1 (always overlong) or 0xf5..0xff */
    }
    size_t i;
    for (i = 1; i <= continuation; i++) {
        if (i >= avail || text[i] < low || text[i] > high) {
            return i;
        }
        low = 0x80;
        high = 0xbf;
    }
    *valid = true;
    return i;
}

bool fts_utf8_validate(const char *text, size_t len)
{
    const unsigned char *bytes = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        bool valid;
        i += utf8_sequence(bytes + i, len - i, &valid);
        if (!valid) {
            return false;
        }
    }
    return true;
}

/* Appends the inside of a JSON string: escaped, ill-formed UTF-8 replaced. */
static void append_string_content(fts_buffer_t *out, const char *text, size_t len)
{
    const unsigned char *bytes = (const unsigned char *)text;
    size_t run = 0; /* start of the well-formed bytes not yet appended */
    size_t i = 0;
    while (i < len) {
        bool valid;
        size_t step = utf8_sequence(bytes + i, len - i, &valid);
        if (!valid) {
            fts_buffer_append_json_escaped(out, text + run, i - run);
            fts_buffer_append_str(out, REPLACEMENT_CHARACTER);
            run = i + step;
        }
        i += step;
    }
    fts_buffer_append_json_escaped(out, text + run, len - run);
}

void fts_json_append_string(fts_buffer_t *out, const char *text, size_t len)
{
    fts_buffer_append_char(out, '"');
    append_string_content(out, text, len);
    fts_buffer_append_char(out, '"');
}

/* ---------------------------------------------------------------------------------------- */
/* Scalars                                                                                  */

/* The shortest decimal that reads back as the same double, spelled as JavaScript does
 * (plain notation for 1e-7 <= |v| < 1e21, exponent notation outside), plus ".0" on integral
 * values so that JSON readers keep a floating-point type. The digits come from "%.*e" at the
 * smallest precision that round-trips through strtod, so the result does not depend on the
 * locale's decimal point. */
static void append_double(fts_buffer_t *out, double value)
{
    if (!isfinite(value)) {
        fts_buffer_append_str(out, "null");
        return;
    }
    char text[64];
    for (int precision = 0; precision <= 16; precision++) {
        snprintf(text, sizeof text, "%.*e", precision, value);
        if (strtod(text, NULL) == value) {
            break;
        }
    }
    /* text is "[-]d[<point>ddd]e<sign>dd": collect the digits and the exponent. */
    char digits[24];
    size_t count = 0;
    const char *cursor = text;
    bool negative = *cursor == '-';
    if (negative) {
        cursor++;
    }
    for (; *cursor && *cursor != 'e'; cursor++) {
        if (*cursor >= '0' && *cursor <= '9' && count < sizeof digits - 1) {
            digits[count++] = *cursor;
        }
    }
    digits[count] = '\0';
    long exponent = *cursor == 'e' ? strtol(cursor + 1, NULL, 10) : 0;
    while (count > 1 && digits[count - 1] == '0') {
        digits[--count] = '\0';
    }
    /* point: how many digits stand before the decimal point in plain notation. */
    long point = exponent + 1;
    if (negative) {
        fts_buffer_append_char(out, '-');
    }
    if (point >= (long)count && point <= 21) {
        fts_buffer_append(out, digits, count);
        for (long i = (long)count; i < point; i++) {
            fts_buffer_append_char(out, '0');
        }
        fts_buffer_append_str(out, ".0");
    } else if (point > 0 && point <= 21) {
        fts_buffer_append(out, digits, (size_t)point);
        fts_buffer_append_char(out, '.');
        fts_buffer_append_str(out, digits + point);
    } else if (point > -6 && point <= 0) {
        fts_buffer_append_str(out, "0.");
        for (long i = point; i < 0; i++) {
            fts_buffer_append_char(out, '0');
        }
        fts_buffer_append_str(out, digits);
    } else {
        fts_buffer_append_char(out, digits[0]);
        if (count > 1) {
            fts_buffer_append_char(out, '.');
            fts_buffer_append_str(out, digits + 1);
        }
        fts_buffer_appendf(out, "e%c%ld", exponent < 0 ? '-' : '+', labs(exponent));
    }
}

static void append_date(fts_buffer_t *out, int64_t ms)
{
    if (ms < ISO_DATE_MIN_MS || ms > ISO_DATE_MAX_MS) {
        fts_buffer_appendf(out, "%" PRId64, ms);
        return;
    }
    int64_t seconds = ms / 1000;
    int64_t millis = ms % 1000;
    if (millis < 0) { /* division truncates toward zero; dates before 1970 need the floor */
        millis += 1000;
        seconds -= 1;
    }
    time_t when = (time_t)seconds;
    struct tm tm;
    gmtime_r(&when, &tm);
    fts_buffer_appendf(out, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)millis);
}

static void append_base64(fts_buffer_t *out, const uint8_t *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fts_buffer_reserve(out, (len + 2) / 3 * 4 + 2);
    fts_buffer_append_char(out, '"');
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t bits = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        char quad[4] = {alphabet[bits >> 18], alphabet[(bits >> 12) & 63],
                        alphabet[(bits >> 6) & 63], alphabet[bits & 63]};
        fts_buffer_append(out, quad, 4);
    }
    if (len - i == 1) {
        uint32_t bits = (uint32_t)data[i] << 16;
        char quad[4] = {alphabet[bits >> 18], alphabet[(bits >> 12) & 63], '=', '='};
        fts_buffer_append(out, quad, 4);
    } else if (len - i == 2) {
        uint32_t bits = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        char quad[4] = {alphabet[bits >> 18], alphabet[(bits >> 12) & 63],
                        alphabet[(bits >> 6) & 63], '='};
        fts_buffer_append(out, quad, 4);
    }
    fts_buffer_append_char(out, '"');
}

static void append_oid(fts_buffer_t *out, const bson_oid_t *oid)
{
    char hex[25];
    bson_oid_to_string(oid, hex);
    fts_buffer_append_char(out, '"');
    fts_buffer_append(out, hex, 24);
    fts_buffer_append_char(out, '"');
}

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                   */

/* Appends a key for an error message: at most ERROR_KEY_MAX bytes, repaired and escaped so
 * that the message stays one line of valid UTF-8. */
static void append_error_key(fts_buffer_t *text, const char *key, size_t len)
{
    bool cut = len > ERROR_KEY_MAX;
    append_string_content(text, key, cut ? ERROR_KEY_MAX : len);
    if (cut) {
        fts_buffer_append_str(text, "...");
    }
}

/* Fills the error with "<what> at <path>" where the path joins the keys on the way down and,
 * when known, the key of the element that broke. Returns false. */
static bool convert_fail(convert_t *c, const char *broken_key, size_t broken_key_len,
                         const char *what)
{
    fts_buffer_t path = {0};
    for (size_t i = 0; i < c->depth; i++) {
        if (i > 0) {
            fts_buffer_append_char(&path, '.');
        }
        append_error_key(&path, c->keys[i], strlen(c->keys[i]));
    }
    if (broken_key) {
        if (c->depth > 0) {
            fts_buffer_append_char(&path, '.');
        }
        append_error_key(&path, broken_key, broken_key_len);
    }
    if (path.len == 0) {
        fts_error_set(c->err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID, "%s at the top level", what);
    } else {
        fts_error_set(c->err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID, "%s at field \"%s\"", what,
                      path.data);
    }
    fts_buffer_destroy(&path);
    return false;
}

static bool is_known_type(uint8_t type)
{
    return (type >= BSON_TYPE_DOUBLE && type <= BSON_TYPE_DECIMAL128) || type == BSON_TYPE_MAXKEY ||
           type == BSON_TYPE_MINKEY;
}

/* The iterator stopped on a malformed element that starts at offset in doc: say which key it
 * has (when its key is intact) and what kind of damage it is. */
static bool convert_fail_corrupt(convert_t *c, const bson_t *doc, uint32_t offset)
{
    const uint8_t *data = bson_get_data(doc);
    const char *key = NULL;
    size_t key_len = 0;
    char what[128];
    if (offset + 1 < doc->len) {
        const void *nul = memchr(data + offset + 1, '\0', doc->len - offset - 1);
        /* The document's own final NUL is not the end of a key. */
        if (nul && (const uint8_t *)nul < data + doc->len - 1) {
            key = (const char *)data + offset + 1;
            key_len = (size_t)((const uint8_t *)nul - (data + offset + 1));
        }
    }
    uint8_t type = offset < doc->len ? data[offset] : 0;
    if (type == BSON_TYPE_EOD) {
        snprintf(what, sizeof what, "corrupt BSON: a document ends early (byte %u of %u)", offset,
                 doc->len);
        key = NULL;
    } else if (!is_known_type(type)) {
        snprintf(what, sizeof what, "corrupt BSON: unknown element type 0x%02x (byte %u of %u)",
                 type, offset, doc->len);
    } else {
        snprintf(what, sizeof what,
                 "corrupt BSON: element of type 0x%02x overruns its document (byte %u of %u)", type,
                 offset, doc->len);
    }
    return convert_fail(c, key, key_len, what);
}

/* ---------------------------------------------------------------------------------------- */
/* Documents and values                                                                     */

static bool convert_value(convert_t *c, const bson_iter_t *iter);

static bool convert_document(convert_t *c, const bson_t *doc, bool is_array, const char *skip_key)
{
    bson_iter_t iter;
    if (!bson_iter_init(&iter, doc)) {
        return convert_fail(c, NULL, 0, "corrupt BSON: a document is shorter than 5 bytes");
    }
    fts_buffer_append_char(c->out, is_array ? '[' : '{');
    bool first = true;
    uint32_t element = iter.next_off; /* where the element bson_iter_next reads next starts */
    while (bson_iter_next(&iter)) {
        const char *key = bson_iter_key(&iter);
        if (skip_key && strcmp(key, skip_key) == 0) {
            element = iter.next_off;
            continue;
        }
        if (!first) {
            fts_buffer_append_char(c->out, ',');
        }
        first = false;
        if (!is_array) {
            fts_json_append_string(c->out, key, bson_iter_key_len(&iter));
            fts_buffer_append_char(c->out, ':');
        }
        c->keys[c->depth++] = key;
        bool ok = convert_value(c, &iter);
        c->depth--;
        if (!ok) {
            return false;
        }
        element = iter.next_off;
    }
    if (iter.err_off != 0) {
        return convert_fail_corrupt(c, doc, element);
    }
    fts_buffer_append_char(c->out, is_array ? ']' : '}');
    return true;
}

static bool convert_value(convert_t *c, const bson_iter_t *iter)
{
    fts_buffer_t *out = c->out;
    uint32_t len = 0;
    switch (bson_iter_type(iter)) {
    case BSON_TYPE_DOUBLE:
        append_double(out, bson_iter_double(iter));
        return true;
    case BSON_TYPE_UTF8: {
        const char *text = bson_iter_utf8(iter, &len);
        fts_json_append_string(out, text, len);
        return true;
    }
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
        bool is_array = bson_iter_type(iter) == BSON_TYPE_ARRAY;
        const uint8_t *data = NULL;
        if (is_array) {
            bson_iter_array(iter, &len, &data);
        } else {
            bson_iter_document(iter, &len, &data);
        }
        bson_t child;
        if (!data || !bson_init_static(&child, data, len)) {
            return convert_fail(c, NULL, 0,
                                is_array ? "corrupt BSON: malformed embedded array"
                                         : "corrupt BSON: malformed embedded document");
        }
        /* c->depth keys lead here, so this document is at nesting level depth + 1. */
        if (c->depth >= FTS_JSON_MAX_DEPTH) {
            char what[96];
            snprintf(what, sizeof what, "documents and arrays nested deeper than %d levels",
                     FTS_JSON_MAX_DEPTH);
            return convert_fail(c, NULL, 0, what);
        }
        return convert_document(c, &child, is_array, NULL);
    }
    case BSON_TYPE_BINARY: {
        bson_subtype_t subtype;
        const uint8_t *data = NULL;
        bson_iter_binary(iter, &subtype, &len, &data);
        append_base64(out, data, len);
        return true;
    }
    case BSON_TYPE_UNDEFINED:
    case BSON_TYPE_NULL:
    case BSON_TYPE_MINKEY:
    case BSON_TYPE_MAXKEY:
        fts_buffer_append_str(out, "null");
        return true;
    case BSON_TYPE_OID:
        append_oid(out, bson_iter_oid(iter));
        return true;
    case BSON_TYPE_BOOL:
        fts_buffer_append_str(out, bson_iter_bool(iter) ? "true" : "false");
        return true;
    case BSON_TYPE_DATE_TIME:
        append_date(out, bson_iter_date_time(iter));
        return true;
    case BSON_TYPE_REGEX: {
        const char *options = NULL;
        const char *pattern = bson_iter_regex(iter, &options);
        fts_buffer_append_str(out, "\"/");
        append_string_content(out, pattern, strlen(pattern));
        fts_buffer_append_char(out, '/');
        append_string_content(out, options, strlen(options));
        fts_buffer_append_char(out, '"');
        return true;
    }
    case BSON_TYPE_DBPOINTER: {
        const char *collection = NULL;
        const bson_oid_t *oid = NULL;
        bson_iter_dbpointer(iter, &len, &collection, &oid);
        fts_buffer_append_str(out, "{\"$ref\":");
        fts_json_append_string(out, collection, len);
        fts_buffer_append_str(out, ",\"$id\":");
        append_oid(out, oid);
        fts_buffer_append_char(out, '}');
        return true;
    }
    case BSON_TYPE_CODE: {
        const char *code = bson_iter_code(iter, &len);
        fts_json_append_string(out, code, len);
        return true;
    }
    case BSON_TYPE_SYMBOL: {
        const char *symbol = bson_iter_symbol(iter, &len);
        fts_json_append_string(out, symbol, len);
        return true;
    }
    case BSON_TYPE_CODEWSCOPE: {
        uint32_t scope_len = 0;
        const uint8_t *scope = NULL;
        const char *code = bson_iter_codewscope(iter, &len, &scope_len, &scope);
        fts_json_append_string(out, code, len);
        return true;
    }
    case BSON_TYPE_INT32:
        fts_buffer_appendf(out, "%" PRId32, bson_iter_int32(iter));
        return true;
    case BSON_TYPE_TIMESTAMP: {
        uint32_t seconds = 0;
        uint32_t increment = 0;
        bson_iter_timestamp(iter, &seconds, &increment);
        fts_buffer_appendf(out, "{\"t\":%" PRIu32 ",\"i\":%" PRIu32 "}", seconds, increment);
        return true;
    }
    case BSON_TYPE_INT64: {
        int64_t value = bson_iter_int64(iter);
        if (value >= -JSON_SAFE_INTEGER && value <= JSON_SAFE_INTEGER) {
            fts_buffer_appendf(out, "%" PRId64, value);
        } else {
            fts_buffer_appendf(out, "\"%" PRId64 "\"", value);
        }
        return true;
    }
    case BSON_TYPE_DECIMAL128: {
        bson_decimal128_t decimal;
        char text[BSON_DECIMAL128_STRING];
        bson_iter_decimal128(iter, &decimal);
        bson_decimal128_to_string(&decimal, text);
        fts_json_append_string(out, text, strlen(text));
        return true;
    }
    case BSON_TYPE_EOD:
    default: {
        /* bson_iter_next refuses unknown types, so this is reached only through a caller's
         * iterator that was not checked. */
        char what[64];
        snprintf(what, sizeof what, "unknown BSON element type 0x%02x",
                 (unsigned)bson_iter_type(iter));
        return convert_fail(c, NULL, 0, what);
    }
    }
}

/* Checks what bson_init_static would have checked, in case doc was built by other means. */
static bool document_is_framed(const bson_t *doc)
{
    if (doc->len < 5) {
        return false;
    }
    const uint8_t *data = bson_get_data(doc);
    uint32_t declared;
    memcpy(&declared, data, sizeof declared);
    return BSON_UINT32_FROM_LE(declared) == doc->len && data[doc->len - 1] == '\0';
}

bool fts_json_append_bson_without(fts_buffer_t *out, const bson_t *doc, const char *skip_key,
                                  fts_error_t *err)
{
    size_t start = out->len;
    convert_t c = {.out = out, .err = err, .depth = 0};
    bool ok;
    if (!document_is_framed(doc)) {
        ok = convert_fail(&c, NULL, 0,
                          "corrupt BSON: the document's length prefix or final byte is wrong");
    } else {
        ok = convert_document(&c, doc, false, skip_key);
    }
    if (!ok) {
        out->len = start;
        if (out->data) {
            out->data[start] = '\0';
        }
    }
    return ok;
}

bool fts_json_append_bson(fts_buffer_t *out, const bson_t *doc, fts_error_t *err)
{
    return fts_json_append_bson_without(out, doc, NULL, err);
}

bool fts_json_append_value(fts_buffer_t *out, const bson_iter_t *iter, fts_error_t *err)
{
    size_t start = out->len;
    convert_t c = {.out = out, .err = err, .depth = 0};
    c.keys[c.depth++] = bson_iter_key(iter);
    bool ok = convert_value(&c, iter);
    if (!ok) {
        out->len = start;
        if (out->data) {
            out->data[start] = '\0';
        }
    }
    return ok;
}
