/*
 * bsonval.c - mongod's order and equality over BSON values (see bsonval.h).
 */
#include "bsonval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int fts_double_type_bracket(bson_type_t type)
{
    /* The numbers of mongod's canonicalizeBSONType, so that gaps keep their meaning. */
    switch (type) {
    case BSON_TYPE_MINKEY:
        return -1;
    case BSON_TYPE_EOD:
    case BSON_TYPE_UNDEFINED:
        return 0;
    case BSON_TYPE_NULL:
        return 5;
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DECIMAL128:
        return 10;
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL:
        return 15;
    case BSON_TYPE_DOCUMENT:
        return 20;
    case BSON_TYPE_ARRAY:
        return 25;
    case BSON_TYPE_BINARY:
        return 30;
    case BSON_TYPE_OID:
        return 35;
    case BSON_TYPE_BOOL:
        return 40;
    case BSON_TYPE_DATE_TIME:
        return 45;
    case BSON_TYPE_TIMESTAMP:
        return 47;
    case BSON_TYPE_REGEX:
        return 50;
    case BSON_TYPE_DBPOINTER:
        return 55;
    case BSON_TYPE_CODE:
        return 60;
    case BSON_TYPE_CODEWSCOPE:
        return 65;
    case BSON_TYPE_MAXKEY:
        return 127;
    default:
        return 126;
    }
}

bool fts_double_value_is_number(const bson_value_t *v)
{
    return v->value_type == BSON_TYPE_INT32 || v->value_type == BSON_TYPE_INT64 ||
           v->value_type == BSON_TYPE_DOUBLE || v->value_type == BSON_TYPE_DECIMAL128;
}

static double decimal_to_double(const bson_decimal128_t *d)
{
    char text[BSON_DECIMAL128_STRING];
    bson_decimal128_to_string(d, text);
    if (strcmp(text, "NaN") == 0) {
        return (double)NAN;
    }
    if (strcmp(text, "Infinity") == 0) {
        return (double)INFINITY;
    }
    if (strcmp(text, "-Infinity") == 0) {
        return -(double)INFINITY;
    }
    return strtod(text, NULL);
}

double fts_double_value_as_double(const bson_value_t *v)
{
    switch (v->value_type) {
    case BSON_TYPE_INT32:
        return v->value.v_int32;
    case BSON_TYPE_INT64:
        return (double)v->value.v_int64;
    case BSON_TYPE_DOUBLE:
        return v->value.v_double;
    case BSON_TYPE_DECIMAL128:
        return decimal_to_double(&v->value.v_decimal128);
    default:
        return 0;
    }
}

int64_t fts_double_value_as_int64(const bson_value_t *v)
{
    switch (v->value_type) {
    case BSON_TYPE_INT32:
        return v->value.v_int32;
    case BSON_TYPE_INT64:
        return v->value.v_int64;
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_DECIMAL128: {
        double d = fts_double_value_as_double(v);
        if (isnan(d)) {
            return 0;
        }
        if (d >= 9.2e18) {
            return INT64_MAX;
        }
        if (d <= -9.2e18) {
            return INT64_MIN;
        }
        return (int64_t)d;
    }
    default:
        return 0;
    }
}

static int compare_numbers(const bson_value_t *a, const bson_value_t *b)
{
    bool a_int = a->value_type == BSON_TYPE_INT32 || a->value_type == BSON_TYPE_INT64;
    bool b_int = b->value_type == BSON_TYPE_INT32 || b->value_type == BSON_TYPE_INT64;
    if (a_int && b_int) {
        int64_t x = fts_double_value_as_int64(a), y = fts_double_value_as_int64(b);
        return x < y ? -1 : x > y;
    }
    /* long double holds every int64 exactly on x86-64, so mixed comparisons are exact. NaN sorts
     * below every number and equals itself, as in mongod. */
    long double x = a_int ? (long double)fts_double_value_as_int64(a)
                          : (long double)fts_double_value_as_double(a);
    long double y = b_int ? (long double)fts_double_value_as_int64(b)
                          : (long double)fts_double_value_as_double(b);
    bool x_nan = isnan(x), y_nan = isnan(y);
    if (x_nan || y_nan) {
        return x_nan && y_nan ? 0 : (x_nan ? -1 : 1);
    }
    return x < y ? -1 : x > y;
}

static int compare_bytes(const void *a, size_t a_len, const void *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c < 0 ? -1 : 1;
    }
    return a_len < b_len ? -1 : a_len > b_len;
}

int fts_double_doc_compare(const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len)
{
    bson_iter_t ia, ib;
    if (!bson_iter_init_from_data(&ia, a, a_len) || !bson_iter_init_from_data(&ib, b, b_len)) {
        return compare_bytes(a, a_len, b, b_len);
    }
    for (;;) {
        bool more_a = bson_iter_next(&ia);
        bool more_b = bson_iter_next(&ib);
        if (!more_a || !more_b) {
            return more_a ? 1 : (more_b ? -1 : 0);
        }
        /* mongod compares element by element: type bracket, then field name, then value. */
        int ta = fts_double_type_bracket(bson_iter_type(&ia));
        int tb = fts_double_type_bracket(bson_iter_type(&ib));
        if (ta != tb) {
            return ta < tb ? -1 : 1;
        }
        int c = strcmp(bson_iter_key(&ia), bson_iter_key(&ib));
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        c = fts_double_value_compare(bson_iter_value(&ia), bson_iter_value(&ib));
        if (c != 0) {
            return c;
        }
    }
}

int fts_double_value_compare(const bson_value_t *a, const bson_value_t *b)
{
    int ta = fts_double_type_bracket(a->value_type);
    int tb = fts_double_type_bracket(b->value_type);
    if (ta != tb) {
        return ta < tb ? -1 : 1;
    }
    switch (a->value_type) {
    case BSON_TYPE_MINKEY:
    case BSON_TYPE_MAXKEY:
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
    case BSON_TYPE_EOD:
        return 0;
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DECIMAL128:
        return compare_numbers(a, b);
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL: {
        const char *sa =
            a->value_type == BSON_TYPE_UTF8 ? a->value.v_utf8.str : a->value.v_symbol.symbol;
        size_t la = a->value_type == BSON_TYPE_UTF8 ? a->value.v_utf8.len : a->value.v_symbol.len;
        const char *sb =
            b->value_type == BSON_TYPE_UTF8 ? b->value.v_utf8.str : b->value.v_symbol.symbol;
        size_t lb = b->value_type == BSON_TYPE_UTF8 ? b->value.v_utf8.len : b->value.v_symbol.len;
        return compare_bytes(sa, la, sb, lb);
    }
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY:
        return fts_double_doc_compare(a->value.v_doc.data, a->value.v_doc.data_len,
                                      b->value.v_doc.data, b->value.v_doc.data_len);
    case BSON_TYPE_BINARY:
        /* Length first, then subtype, then bytes: mongod's BinData order. */
        if (a->value.v_binary.data_len != b->value.v_binary.data_len) {
            return a->value.v_binary.data_len < b->value.v_binary.data_len ? -1 : 1;
        }
        if (a->value.v_binary.subtype != b->value.v_binary.subtype) {
            return a->value.v_binary.subtype < b->value.v_binary.subtype ? -1 : 1;
        }
        return compare_bytes(a->value.v_binary.data, a->value.v_binary.data_len,
                             b->value.v_binary.data, b->value.v_binary.data_len);
    case BSON_TYPE_OID:
        return compare_bytes(a->value.v_oid.bytes, 12, b->value.v_oid.bytes, 12);
    case BSON_TYPE_BOOL:
        return (int)a->value.v_bool - (int)b->value.v_bool;
    case BSON_TYPE_DATE_TIME:
        return a->value.v_datetime < b->value.v_datetime
                   ? -1
                   : a->value.v_datetime > b->value.v_datetime;
    case BSON_TYPE_TIMESTAMP: {
        uint64_t x =
            ((uint64_t)a->value.v_timestamp.timestamp << 32) | a->value.v_timestamp.increment;
        uint64_t y =
            ((uint64_t)b->value.v_timestamp.timestamp << 32) | b->value.v_timestamp.increment;
        return x < y ? -1 : x > y;
    }
    case BSON_TYPE_REGEX: {
        int c = strcmp(a->value.v_regex.regex, b->value.v_regex.regex);
        if (c != 0) {
            return c < 0 ? -1 : 1;
        }
        c = strcmp(a->value.v_regex.options, b->value.v_regex.options);
        return c < 0 ? -1 : c > 0;
    }
    case BSON_TYPE_CODE:
        return compare_bytes(a->value.v_code.code, a->value.v_code.code_len, b->value.v_code.code,
                             b->value.v_code.code_len);
    default:
        /* DBPointer and code-with-scope: rare enough that an arbitrary but stable order will do. */
        return 0;
    }
}

bool fts_double_value_identical(const bson_value_t *a, const bson_value_t *b)
{
    if (a->value_type != b->value_type) {
        return false;
    }
    switch (a->value_type) {
    case BSON_TYPE_DOUBLE:
        return memcmp(&a->value.v_double, &b->value.v_double, sizeof(double)) == 0;
    case BSON_TYPE_DECIMAL128:
        return memcmp(&a->value.v_decimal128, &b->value.v_decimal128, sizeof(bson_decimal128_t)) ==
               0;
    case BSON_TYPE_UTF8:
        return a->value.v_utf8.len == b->value.v_utf8.len &&
               memcmp(a->value.v_utf8.str, b->value.v_utf8.str, a->value.v_utf8.len) == 0;
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY:
        return a->value.v_doc.data_len == b->value.v_doc.data_len &&
               memcmp(a->value.v_doc.data, b->value.v_doc.data, a->value.v_doc.data_len) == 0;
    case BSON_TYPE_BINARY:
        return a->value.v_binary.subtype == b->value.v_binary.subtype &&
               a->value.v_binary.data_len == b->value.v_binary.data_len &&
               memcmp(a->value.v_binary.data, b->value.v_binary.data, a->value.v_binary.data_len) ==
                   0;
    default:
        return fts_double_value_compare(a, b) == 0;
    }
}

const char *fts_double_type_alias(bson_type_t type)
{
    switch (type) {
    case BSON_TYPE_DOUBLE:
        return "double";
    case BSON_TYPE_UTF8:
        return "string";
    case BSON_TYPE_DOCUMENT:
        return "object";
    case BSON_TYPE_ARRAY:
        return "array";
    case BSON_TYPE_BINARY:
        return "binData";
    case BSON_TYPE_UNDEFINED:
        return "undefined";
    case BSON_TYPE_OID:
        return "objectId";
    case BSON_TYPE_BOOL:
        return "bool";
    case BSON_TYPE_DATE_TIME:
        return "date";
    case BSON_TYPE_NULL:
        return "null";
    case BSON_TYPE_REGEX:
        return "regex";
    case BSON_TYPE_DBPOINTER:
        return "dbPointer";
    case BSON_TYPE_CODE:
        return "javascript";
    case BSON_TYPE_SYMBOL:
        return "symbol";
    case BSON_TYPE_CODEWSCOPE:
        return "javascriptWithScope";
    case BSON_TYPE_INT32:
        return "int";
    case BSON_TYPE_TIMESTAMP:
        return "timestamp";
    case BSON_TYPE_INT64:
        return "long";
    case BSON_TYPE_DECIMAL128:
        return "decimal";
    case BSON_TYPE_MINKEY:
        return "minKey";
    case BSON_TYPE_MAXKEY:
        return "maxKey";
    default:
        return "missing";
    }
}

char *fts_double_value_to_json(const bson_value_t *v)
{
    bson_t wrapper = BSON_INITIALIZER;
    bson_append_value(&wrapper, "v", 1, v);
    char *json = bson_as_relaxed_extended_json(&wrapper, NULL);
    bson_destroy(&wrapper);
    if (!json) {
        return bson_strdup("?");
    }
    /* Strip the wrapper: `{ "v" : X }` -> `X`. */
    const char *start = strstr(json, ": ");
    char *out = bson_strdup(start ? start + 2 : json);
    size_t len = strlen(out);
    if (len >= 2 && out[len - 1] == '}' && out[len - 2] == ' ') {
        out[len - 2] = '\0';
    }
    bson_free(json);
    return out;
}

const char *fts_double_index_key(uint32_t i, char buf[16])
{
    const char *key;
    bson_uint32_to_string(i, &key, buf, 16);
    return key;
}

bool fts_double_parse_index(const char *text, size_t len, uint32_t *out)
{
    if (len == 0 || len > 9 || (len > 1 && text[0] == '0')) {
        return false;
    }
    uint32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return false;
        }
        n = n * 10 + (uint32_t)(text[i] - '0');
    }
    *out = n;
    return true;
}

bool fts_double_doc_get(const bson_t *doc, const char *key, bson_value_t *value)
{
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, doc, key)) {
        return false;
    }
    *value = *bson_iter_value(&iter);
    return true;
}

bool fts_double_doc_get_path(const bson_t *doc, const char *path, bson_value_t *value)
{
    bson_iter_t iter, child;
    if (!strchr(path, '.')) {
        return fts_double_doc_get(doc, path, value);
    }
    if (!bson_iter_init(&iter, doc) || !bson_iter_find_descendant(&iter, path, &child)) {
        return false;
    }
    *value = *bson_iter_value(&child);
    return true;
}

bool fts_double_value_as_doc(const bson_value_t *v, bson_t *out)
{
    if (v->value_type != BSON_TYPE_DOCUMENT && v->value_type != BSON_TYPE_ARRAY) {
        return false;
    }
    return bson_init_static(out, v->value.v_doc.data, v->value.v_doc.data_len);
}

bool fts_double_value_truthy(const bson_value_t *v)
{
    switch (v->value_type) {
    case BSON_TYPE_BOOL:
        return v->value.v_bool;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_DECIMAL128:
        return fts_double_value_as_double(v) != 0;
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
    case BSON_TYPE_EOD:
        return false;
    default:
        return true;
    }
}
