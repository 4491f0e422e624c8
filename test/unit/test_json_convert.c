/*
 * test_json_convert.c - every BSON type to plain JSON, table-driven, and corrupt BSON refused.
 *
 * Each case converts a one-field document {"v": <value>} and compares the exact bytes; every
 * output is also checked to be valid UTF-8 and to parse back with libbson's JSON reader, so
 * Elasticsearch can never be sent something that is not JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "assertions.h"
#include "buffer.h"
#include "json_convert.h"

/* Converts doc, checks the result against expected and that it is valid UTF-8 and JSON. */
static void check_json(const bson_t *doc, const char *expected)
{
    fts_buffer_t out = {0};
    fts_error_t err = {0};
    if (!fts_json_append_bson(&out, doc, &err)) {
        fail_msg("conversion failed: %s (expected %s)", err.message, expected);
    }
    assert_string_equal(out.data, expected);
    assert_int_equal(out.len, strlen(expected));
    assert_true(fts_utf8_validate(out.data, out.len));
    bson_t parsed;
    bson_error_t error;
    if (!bson_init_from_json(&parsed, out.data, (ssize_t)out.len, &error)) {
        fail_msg("libbson cannot parse %s back: %s", out.data, error.message);
    }
    bson_destroy(&parsed);
    fts_buffer_destroy(&out);
}

/* ---------------------------------------------------------------------------------------- */
/* One case per BSON type                                                                   */

typedef struct {
    const char *name;
    void (*build)(bson_t *doc);
    const char *expected;
} type_case_t;

static const char *const OID_HEX = "5f1d7c3a9b1e8a0012345678";

static void build_double(bson_t *doc)
{
    BSON_APPEND_DOUBLE(doc, "v", 1.5);
}
static void build_utf8(bson_t *doc)
{
    BSON_APPEND_UTF8(doc, "v", "h\xc3\xa9llo \xe2\x82\xac");
}
static void build_document(bson_t *doc)
{
    bson_t child;
    bson_t grandchild;
    BSON_APPEND_DOCUMENT_BEGIN(doc, "v", &child);
    BSON_APPEND_INT32(&child, "a", 1);
    BSON_APPEND_DOCUMENT_BEGIN(&child, "b", &grandchild);
    BSON_APPEND_UTF8(&grandchild, "c", "d");
    bson_append_document_end(&child, &grandchild);
    bson_append_document_end(doc, &child);
}
static void build_array(bson_t *doc)
{
    bson_t child;
    BSON_APPEND_ARRAY_BEGIN(doc, "v", &child);
    BSON_APPEND_INT32(&child, "0", 1);
    BSON_APPEND_UTF8(&child, "1", "two");
    BSON_APPEND_NULL(&child, "2");
    bson_append_array_end(doc, &child);
}
static void build_binary(bson_t *doc)
{
    BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY, (const uint8_t *)"hello", 5);
}
static void build_binary_deprecated(bson_t *doc)
{
    /* Subtype 2 carries an inner length; only the payload is encoded. */
    BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY_DEPRECATED, (const uint8_t *)"hello", 5);
}
static void build_binary_uuid(bson_t *doc)
{
    uint8_t uuid[16];
    for (int i = 0; i < 16; i++) {
        uuid[i] = (uint8_t)i;
    }
    BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_UUID, uuid, sizeof uuid);
}
static void build_binary_empty(bson_t *doc)
{
    BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY, (const uint8_t *)"", 0);
}
static void build_binary_one(bson_t *doc)
{
    BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY, (const uint8_t *)"a", 1);
}
static void build_binary_two(bson_t *doc)
{
    BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY, (const uint8_t *)"ab", 2);
}
static void build_binary_three(bson_t *doc)
{
    BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY, (const uint8_t *)"\xff\xfe\xfd", 3);
}
static void build_undefined(bson_t *doc)
{
    BSON_APPEND_UNDEFINED(doc, "v");
}
static void build_oid(bson_t *doc)
{
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, OID_HEX);
    BSON_APPEND_OID(doc, "v", &oid);
}
static void build_oid_upper(bson_t *doc)
{
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "ABCDEF0123456789ABCDEF01");
    BSON_APPEND_OID(doc, "v", &oid);
}
static void build_true(bson_t *doc)
{
    BSON_APPEND_BOOL(doc, "v", true);
}
static void build_false(bson_t *doc)
{
    BSON_APPEND_BOOL(doc, "v", false);
}
static void build_date(bson_t *doc)
{
    BSON_APPEND_DATE_TIME(doc, "v", 1795428000000LL);
}
static void build_null(bson_t *doc)
{
    BSON_APPEND_NULL(doc, "v");
}
static void build_regex(bson_t *doc)
{
    BSON_APPEND_REGEX(doc, "v", "^a\\d+\"b$", "im");
}
static void build_regex_no_options(bson_t *doc)
{
    BSON_APPEND_REGEX(doc, "v", "x/y", "");
}
static void build_dbpointer(bson_t *doc)
{
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, OID_HEX);
    bson_append_dbpointer(doc, "v", -1, "shop.apps", &oid);
}
static void build_code(bson_t *doc)
{
    BSON_APPEND_CODE(doc, "v", "function () { return \"x\"; }");
}
static void build_symbol(bson_t *doc)
{
    BSON_APPEND_SYMBOL(doc, "v", "sym");
}
static void build_code_with_scope(bson_t *doc)
{
    bson_t scope = BSON_INITIALIZER;
    BSON_APPEND_INT32(&scope, "x", 1);
    BSON_APPEND_CODE_WITH_SCOPE(doc, "v", "x + 1", &scope);
    bson_destroy(&scope);
}
static void build_int32(bson_t *doc)
{
    BSON_APPEND_INT32(doc, "v", 42);
}
static void build_int32_min(bson_t *doc)
{
    BSON_APPEND_INT32(doc, "v", INT32_MIN);
}
static void build_int32_max(bson_t *doc)
{
    BSON_APPEND_INT32(doc, "v", INT32_MAX);
}
static void build_timestamp(bson_t *doc)
{
    BSON_APPEND_TIMESTAMP(doc, "v", 1700000000u, 7u);
}
static void build_timestamp_max(bson_t *doc)
{
    BSON_APPEND_TIMESTAMP(doc, "v", UINT32_MAX, UINT32_MAX);
}
static void build_int64(bson_t *doc)
{
    BSON_APPEND_INT64(doc, "v", -7);
}
static void build_decimal128(bson_t *doc)
{
    bson_decimal128_t value;
    bson_decimal128_from_string("1.10", &value);
    BSON_APPEND_DECIMAL128(doc, "v", &value);
}
static void build_decimal128_nan(bson_t *doc)
{
    bson_decimal128_t value;
    bson_decimal128_from_string("NaN", &value);
    BSON_APPEND_DECIMAL128(doc, "v", &value);
}
static void build_decimal128_negative_infinity(bson_t *doc)
{
    bson_decimal128_t value;
    bson_decimal128_from_string("-Infinity", &value);
    BSON_APPEND_DECIMAL128(doc, "v", &value);
}
static void build_decimal128_exponent(bson_t *doc)
{
    bson_decimal128_t value;
    bson_decimal128_from_string("1.23E+40", &value);
    BSON_APPEND_DECIMAL128(doc, "v", &value);
}
static void build_minkey(bson_t *doc)
{
    BSON_APPEND_MINKEY(doc, "v");
}
static void build_maxkey(bson_t *doc)
{
    BSON_APPEND_MAXKEY(doc, "v");
}

static const type_case_t type_cases[] = {
    {"double", build_double, "{\"v\":1.5}"},
    {"utf8", build_utf8, "{\"v\":\"h\xc3\xa9llo \xe2\x82\xac\"}"},
    {"document", build_document, "{\"v\":{\"a\":1,\"b\":{\"c\":\"d\"}}}"},
    {"array", build_array, "{\"v\":[1,\"two\",null]}"},
    {"binary", build_binary, "{\"v\":\"aGVsbG8=\"}"},
    {"binary subtype 2", build_binary_deprecated, "{\"v\":\"aGVsbG8=\"}"},
    {"binary uuid", build_binary_uuid, "{\"v\":\"AAECAwQFBgcICQoLDA0ODw==\"}"},
    {"binary empty", build_binary_empty, "{\"v\":\"\"}"},
    {"binary 1 byte", build_binary_one, "{\"v\":\"YQ==\"}"},
    {"binary 2 bytes", build_binary_two, "{\"v\":\"YWI=\"}"},
    {"binary 3 bytes", build_binary_three, "{\"v\":\"//79\"}"},
    {"undefined", build_undefined, "{\"v\":null}"},
    {"oid", build_oid, "{\"v\":\"5f1d7c3a9b1e8a0012345678\"}"},
    {"oid lowercase", build_oid_upper, "{\"v\":\"abcdef0123456789abcdef01\"}"},
    {"true", build_true, "{\"v\":true}"},
    {"false", build_false, "{\"v\":false}"},
    {"date", build_date, "{\"v\":\"2026-11-23T10:00:00.000Z\"}"},
    {"null", build_null, "{\"v\":null}"},
    {"regex", build_regex, "{\"v\":\"/^a\\\\d+\\\"b$/im\"}"},
    {"regex no options", build_regex_no_options, "{\"v\":\"/x/y/\"}"},
    {"dbpointer", build_dbpointer,
     "{\"v\":{\"$ref\":\"shop.apps\",\"$id\":\"5f1d7c3a9b1e8a0012345678\"}}"},
    {"code", build_code, "{\"v\":\"function () { return \\\"x\\\"; }\"}"},
    {"symbol", build_symbol, "{\"v\":\"sym\"}"},
    {"code with scope", build_code_with_scope, "{\"v\":\"x + 1\"}"},
    {"int32", build_int32, "{\"v\":42}"},
    {"int32 min", build_int32_min, "{\"v\":-2147483648}"},
    {"int32 max", build_int32_max, "{\"v\":2147483647}"},
    {"timestamp", build_timestamp, "{\"v\":{\"t\":1700000000,\"i\":7}}"},
    {"timestamp max", build_timestamp_max, "{\"v\":{\"t\":4294967295,\"i\":4294967295}}"},
    {"int64", build_int64, "{\"v\":-7}"},
    {"decimal128", build_decimal128, "{\"v\":\"1.10\"}"},
    {"decimal128 NaN", build_decimal128_nan, "{\"v\":\"NaN\"}"},
    {"decimal128 -Infinity", build_decimal128_negative_infinity, "{\"v\":\"-Infinity\"}"},
    {"decimal128 exponent", build_decimal128_exponent, "{\"v\":\"1.23E+40\"}"},
    {"minkey", build_minkey, "{\"v\":null}"},
    {"maxkey", build_maxkey, "{\"v\":null}"},
};

static void test_every_type(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof type_cases / sizeof type_cases[0]; i++) {
        bson_t doc = BSON_INITIALIZER;
        type_cases[i].build(&doc);
        print_message("case %s\n", type_cases[i].name);
        check_json(&doc, type_cases[i].expected);
        bson_destroy(&doc);
    }
}

/* All types in one document: order kept, separators right. */
static void test_all_types_in_one_document(void **state)
{
    (void)state;
    bson_t doc = BSON_INITIALIZER;
    fts_buffer_t expected = {0};
    fts_buffer_append_char(&expected, '{');
    for (size_t i = 0; i < sizeof type_cases / sizeof type_cases[0]; i++) {
        bson_t one = BSON_INITIALIZER;
        type_cases[i].build(&one);
        bson_iter_t iter;
        assert_true(bson_iter_init_find(&iter, &one, "v"));
        char key[16];
        snprintf(key, sizeof key, "k%02zu", i);
        bson_append_iter(&doc, key, -1, &iter);
        bson_destroy(&one);
        /* The case's expected text is {"v":X}: take X. */
        const char *value = type_cases[i].expected + strlen("{\"v\":");
        fts_buffer_appendf(&expected, "%s\"%s\":%.*s", i ? "," : "", key, (int)(strlen(value) - 1),
                           value);
    }
    fts_buffer_append_char(&expected, '}');
    check_json(&doc, expected.data);
    bson_destroy(&doc);
    fts_buffer_destroy(&expected);
}

/* ---------------------------------------------------------------------------------------- */
/* Numbers                                                                                  */

typedef struct {
    double value;
    const char *expected;
} double_case_t;

static void test_doubles(void **state)
{
    (void)state;
    const double_case_t cases[] = {
        {0.0, "0.0"},
        {-0.0, "-0.0"},
        {1.0, "1.0"},
        {-1.0, "-1.0"},
        {100.0, "100.0"},
        {1.5, "1.5"},
        {0.1, "0.1"},
        {-2.5e-3, "-0.0025"},
        {1.0 / 3.0, "0.3333333333333333"},
        {2.0 / 3.0, "0.6666666666666666"},
        {123456.789, "123456.789"},
        {1e-6, "0.000001"},
        {1e-7, "1e-7"},
        {-1.25e-10, "-1.25e-10"},
        {1e20, "100000000000000000000.0"},
        {1e21, "1e+21"},
        {1.5e21, "1.5e+21"},
        {1e300, "1e+300"},
        {-1e300, "-1e+300"},
        {9007199254740992.0, "9007199254740992.0"},
        {9007199254740994.0, "9007199254740994.0"},
        {DBL_MAX, "1.7976931348623157e+308"},
        {DBL_MIN, "2.2250738585072014e-308"},
        {5e-324, "5e-324"},
        {(double)NAN, "null"},
        {(double)INFINITY, "null"},
        {-(double)INFINITY, "null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_DOUBLE(&doc, "v", cases[i].value);
        char expected[96];
        snprintf(expected, sizeof expected, "{\"v\":%s}", cases[i].expected);
        print_message("double %.17g\n", cases[i].value);
        check_json(&doc, expected);
        bson_destroy(&doc);
    }
}

/* Doubles from random bit patterns read back exactly with strtod and stay doubles for
 * libbson's JSON reader. */
static void test_doubles_round_trip(void **state)
{
    (void)state;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 20000; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        double value;
        memcpy(&value, &seed, sizeof value);
        if (!isfinite(value)) {
            continue;
        }
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_DOUBLE(&doc, "v", value);
        fts_buffer_t out = {0};
        assert_true(fts_json_append_bson(&out, &doc, NULL));
        /* out is {"v":<number>} */
        char *end = NULL;
        double back = strtod(out.data + 5, &end);
        if (memcmp(&back, &value, sizeof value) != 0 || strcmp(end, "}") != 0) {
            fail_msg("%.17g became %s", value, out.data);
        }
        bson_t parsed;
        bson_error_t error;
        bson_iter_t iter;
        assert_true(bson_init_from_json(&parsed, out.data, (ssize_t)out.len, &error));
        assert_true(bson_iter_init_find(&iter, &parsed, "v"));
        assert_true(BSON_ITER_HOLDS_DOUBLE(&iter));
        assert_true(bson_iter_double(&iter) == value);
        bson_destroy(&parsed);
        fts_buffer_destroy(&out);
        bson_destroy(&doc);
    }
}

typedef struct {
    int64_t value;
    const char *expected;
} int64_case_t;

static void test_int64_boundaries(void **state)
{
    (void)state;
    const int64_case_t cases[] = {
        {0, "0"},
        {9007199254740991LL, "9007199254740991"},
        {9007199254740992LL, "9007199254740992"},
        {9007199254740993LL, "\"9007199254740993\""},
        {-9007199254740992LL, "-9007199254740992"},
        {-9007199254740993LL, "\"-9007199254740993\""},
        {INT64_MAX, "\"9223372036854775807\""},
        {INT64_MIN, "\"-9223372036854775808\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_INT64(&doc, "v", cases[i].value);
        char expected[64];
        snprintf(expected, sizeof expected, "{\"v\":%s}", cases[i].expected);
        check_json(&doc, expected);
        bson_destroy(&doc);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Dates                                                                                    */

static void test_dates(void **state)
{
    (void)state;
    const int64_case_t cases[] = {
        {0, "\"1970-01-01T00:00:00.000Z\""},
        {1, "\"1970-01-01T00:00:00.001Z\""},
        {-1, "\"1969-12-31T23:59:59.999Z\""},
        {-999, "\"1969-12-31T23:59:59.001Z\""},
        {-1000, "\"1969-12-31T23:59:59.000Z\""},
        {-1001, "\"1969-12-31T23:59:58.999Z\""},
        {951782400000LL, "\"2000-02-29T00:00:00.000Z\""},
        {-2208988800000LL, "\"1900-01-01T00:00:00.000Z\""},
        {-62135596800000LL, "\"0001-01-01T00:00:00.000Z\""},
        {-62167219200000LL, "\"0000-01-01T00:00:00.000Z\""},
        {-62167219200001LL, "-62167219200001"},
        {253402300799999LL, "\"9999-12-31T23:59:59.999Z\""},
        {253402300800000LL, "253402300800000"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_DATE_TIME(&doc, "v", cases[i].value);
        char expected[64];
        snprintf(expected, sizeof expected, "{\"v\":%s}", cases[i].expected);
        print_message("date %lld\n", (long long)cases[i].value);
        check_json(&doc, expected);
        bson_destroy(&doc);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Strings: escaping and UTF-8 repair                                                       */

typedef struct {
    const char *name;
    const char *bytes;
    size_t len;
    const char *expected; /* the JSON string's content, without quotes */
} string_case_t;

#define BYTES(literal) literal, sizeof literal - 1
#define FFFD           "\xef\xbf\xbd"

static const string_case_t string_cases[] = {
    {"ascii", BYTES("plain text"), "plain text"},
    {"empty", BYTES(""), ""},
    {"two-byte", BYTES("\xc3\xa9"), "\xc3\xa9"},
    {"three-byte", BYTES("\xe2\x82\xac"), "\xe2\x82\xac"},
    {"four-byte", BYTES("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80"},
    {"largest code point", BYTES("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf"},
    {"U+FFFD itself", BYTES(FFFD), FFFD},
    {"quote backslash", BYTES("a\"b\\c"), "a\\\"b\\\\c"},
    {"newline tab cr", BYTES("a\nb\tc\rd"), "a\\nb\\tc\\rd"},
    {"controls", BYTES("\x01\x1f\x08\x0c"), "\\u0001\\u001f\\u0008\\u000c"},
    {"delete passes", BYTES("\x7f"), "\x7f"},
    {"embedded NUL", BYTES("a\0b"), "a\\u0000b"},
    {"only NUL", BYTES("\0"), "\\u0000"},
    {"lone continuation", BYTES("a\x80z"), "a" FFFD "z"},
    {"two continuations", BYTES("\x80\xbf"), FFFD FFFD},
    {"overlong 2-byte slash", BYTES("\xc0\xaf"), FFFD FFFD},
    {"overlong 2-byte NUL", BYTES("\xc0\x80"), FFFD FFFD},
    {"overlong 3-byte", BYTES("\xe0\x80\xaf"), FFFD FFFD FFFD},
    {"overlong 4-byte", BYTES("\xf0\x80\x80\xaf"), FFFD FFFD FFFD FFFD},
    {"high surrogate", BYTES("\xed\xa0\x80"), FFFD FFFD FFFD},
    {"low surrogate", BYTES("\xed\xbf\xbf"), FFFD FFFD FFFD},
    {"surrogate pair (CESU-8)", BYTES("\xed\xa0\xbd\xed\xb8\x80"), FFFD FFFD FFFD FFFD FFFD FFFD},
    {"beyond U+10FFFF", BYTES("\xf4\x90\x80\x80"), FFFD FFFD FFFD FFFD},
    {"lead F5", BYTES("\xf5\x80\x80\x80"), FFFD FFFD FFFD FFFD},
    {"FE FF", BYTES("\xfe\xff"), FFFD FFFD},
    {"truncated 3-byte at end", BYTES("ab\xe2\x82"), "ab" FFFD},
    {"truncated 4-byte before ASCII",
     BYTES("\xf0\x9f\x98"
           "A"),
     FFFD "A"},
    {"truncated 2-byte before 2-byte", BYTES("\xc3\xc3\xa9"), FFFD "\xc3\xa9"},
    {"lead then quote", BYTES("\xe2\""), FFFD "\\\""},
    {"lead then NUL", BYTES("\xc3\0"), FFFD "\\u0000"},
    {"Latin-1 text", BYTES("caf\xe9 na\xefve"), "caf" FFFD " na" FFFD "ve"},
};

static void test_strings(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof string_cases / sizeof string_cases[0]; i++) {
        const string_case_t *c = &string_cases[i];
        bson_t doc = BSON_INITIALIZER;
        assert_true(bson_append_utf8(&doc, "v", 1, c->bytes, (int)c->len));
        fts_buffer_t expected = {0};
        fts_buffer_appendf(&expected, "{\"v\":\"%s\"}", c->expected);
        print_message("string %s\n", c->name);
        check_json(&doc, expected.data);
        /* The same bytes as a key, as a symbol and as code get the same treatment. */
        bson_t as_key = BSON_INITIALIZER;
        if (!memchr(c->bytes, '\0', c->len)) {
            assert_true(bson_append_int32(&as_key, c->bytes, (int)c->len, 1));
            fts_buffer_clear(&expected);
            fts_buffer_appendf(&expected, "{\"%s\":1}", c->expected);
            check_json(&as_key, expected.data);
        }
        bson_t as_symbol = BSON_INITIALIZER;
        assert_true(bson_append_symbol(&as_symbol, "v", 1, c->bytes, (int)c->len));
        fts_buffer_clear(&expected);
        fts_buffer_appendf(&expected, "{\"v\":\"%s\"}", c->expected);
        check_json(&as_symbol, expected.data);
        bson_destroy(&doc);
        bson_destroy(&as_key);
        bson_destroy(&as_symbol);
        fts_buffer_destroy(&expected);
    }
}

static void test_utf8_validate(void **state)
{
    (void)state;
    assert_true(fts_utf8_validate("", 0));
    assert_true(fts_utf8_validate("a\0b", 3));
    assert_true(fts_utf8_validate("\xf0\x9f\x98\x80", 4));
    assert_false(fts_utf8_validate("\xc0\xaf", 2));
    assert_false(fts_utf8_validate("\xed\xa0\x80", 3));
    assert_false(fts_utf8_validate("\xe2\x82", 2));
    assert_false(fts_utf8_validate("\xf4\x90\x80\x80", 4));
    /* Every string case: valid exactly when nothing was replaced. */
    for (size_t i = 0; i < sizeof string_cases / sizeof string_cases[0]; i++) {
        const string_case_t *c = &string_cases[i];
        bool replaced = strstr(c->expected, FFFD) && !strstr(c->bytes, FFFD);
        assert_int_equal(fts_utf8_validate(c->bytes, c->len), !replaced);
    }
}

/* Random bytes never produce invalid UTF-8 or invalid JSON. */
static void test_random_strings_stay_valid(void **state)
{
    (void)state;
    uint32_t seed = 12345;
    for (int round = 0; round < 2000; round++) {
        char bytes[32];
        size_t len = (size_t)(round % 32);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* Mostly high bytes, where UTF-8 goes wrong. */
            bytes[i] = (char)((seed >> 16) & 1 ? 0x80 | (seed >> 8) : (seed >> 8) & 0x7f);
        }
        bson_t doc = BSON_INITIALIZER;
        assert_true(bson_append_utf8(&doc, "v", 1, bytes, (int)len));
        fts_buffer_t out = {0};
        assert_true(fts_json_append_bson(&out, &doc, NULL));
        assert_true(fts_utf8_validate(out.data, out.len));
        bson_t parsed;
        bson_error_t error;
        if (!bson_init_from_json(&parsed, out.data, (ssize_t)out.len, &error)) {
            fail_msg("libbson cannot parse %s: %s", out.data, error.message);
        }
        bson_destroy(&parsed);
        fts_buffer_destroy(&out);
        bson_destroy(&doc);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Structure                                                                                */

static void test_keys_needing_escaping(void **state)
{
    (void)state;
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_INT32(&doc, "quote\"d", 1);
    BSON_APPEND_INT32(&doc, "back\\slash", 2);
    BSON_APPEND_INT32(&doc, "new\nline", 3);
    BSON_APPEND_INT32(&doc, "\x01", 4);
    BSON_APPEND_INT32(&doc, "", 5);
    BSON_APPEND_INT32(&doc, "dotted.key", 6);
    BSON_APPEND_INT32(&doc, "$dollar", 7);
    BSON_APPEND_INT32(&doc, "\xe6\x97\xa5\xe6\x9c\xac", 8);
    check_json(&doc, "{\"quote\\\"d\":1,\"back\\\\slash\":2,\"new\\nline\":3,\"\\u0001\":4,"
                     "\"\":5,\"dotted.key\":6,\"$dollar\":7,\"\xe6\x97\xa5\xe6\x9c\xac\":8}");
    bson_destroy(&doc);
}

static void test_nested_arrays_of_documents(void **state)
{
    (void)state;
    bson_t *doc = BCON_NEW("items", "[", "{", "a", BCON_INT32(1), "}", "{", "b", "[", "{", "c",
                           BCON_NULL, "}", "[", BCON_INT32(2), "[", "]", "]", "]", "}", "]",
                           "empty_array", "[", "]", "empty_doc", "{", "}");
    check_json(doc, "{\"items\":[{\"a\":1},{\"b\":[{\"c\":null},[2,[]]]}],\"empty_array\":[],"
                    "\"empty_doc\":{}}");
    bson_destroy(doc);
}

static void test_field_order_and_duplicates_kept(void **state)
{
    (void)state;
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_INT32(&doc, "z", 1);
    BSON_APPEND_INT32(&doc, "a", 2);
    BSON_APPEND_INT32(&doc, "m", 3);
    BSON_APPEND_INT32(&doc, "a", 4);
    fts_buffer_t out = {0};
    assert_true(fts_json_append_bson(&out, &doc, NULL));
    assert_string_equal(out.data, "{\"z\":1,\"a\":2,\"m\":3,\"a\":4}");
    /* Deterministic: the same document gives the same bytes again. */
    fts_buffer_t again = {0};
    assert_true(fts_json_append_bson(&again, &doc, NULL));
    assert_string_equal(out.data, again.data);
    fts_buffer_destroy(&out);
    fts_buffer_destroy(&again);
    bson_destroy(&doc);
}

static void test_empty_document_and_appending(void **state)
{
    (void)state;
    bson_t doc = BSON_INITIALIZER;
    fts_buffer_t out = {0};
    fts_buffer_append_str(&out, "prefix ");
    assert_true(fts_json_append_bson(&out, &doc, NULL));
    assert_string_equal(out.data, "prefix {}");
    fts_buffer_destroy(&out);
    bson_destroy(&doc);
}

static void test_without_skips_top_level_key_only(void **state)
{
    (void)state;
    bson_t *doc = BCON_NEW("_id", BCON_INT32(1), "a", "{", "_id", BCON_INT32(2), "}", "_id",
                           BCON_INT32(3), "b", BCON_BOOL(true));
    fts_buffer_t out = {0};
    assert_true(fts_json_append_bson_without(&out, doc, "_id", NULL));
    assert_string_equal(out.data, "{\"a\":{\"_id\":2},\"b\":true}");
    fts_buffer_clear(&out);
    bson_t *only_id = BCON_NEW("_id", BCON_INT32(1));
    assert_true(fts_json_append_bson_without(&out, only_id, "_id", NULL));
    assert_string_equal(out.data, "{}");
    fts_buffer_destroy(&out);
    bson_destroy(doc);
    bson_destroy(only_id);
}

static void test_append_value(void **state)
{
    (void)state;
    bson_t *doc = BCON_NEW("a", "{", "b", "[", BCON_UTF8("x"), BCON_DOUBLE(2.0), "]", "}");
    bson_iter_t iter;
    bson_iter_t found;
    assert_true(bson_iter_init(&iter, doc));
    assert_true(bson_iter_find_descendant(&iter, "a.b", &found));
    fts_buffer_t out = {0};
    assert_true(fts_json_append_value(&out, &found, NULL));
    assert_string_equal(out.data, "[\"x\",2.0]");
    assert_true(bson_iter_init(&iter, doc));
    assert_true(bson_iter_find_descendant(&iter, "a.b.0", &found));
    fts_buffer_clear(&out);
    assert_true(fts_json_append_value(&out, &found, NULL));
    assert_string_equal(out.data, "\"x\"");
    fts_buffer_clear(&out);
    fts_json_append_string(&out, "k\xff", 2);
    assert_string_equal(out.data, "\"k" FFFD "\"");
    fts_buffer_destroy(&out);
    bson_destroy(doc);
}

/* A document nested `levels` deep in total (the top level counts as one). */
static bson_t *nested(int levels)
{
    bson_t *inner = bson_new();
    BSON_APPEND_INT32(inner, "leaf", 1);
    for (int i = 1; i < levels; i++) {
        bson_t *outer = bson_new();
        BSON_APPEND_DOCUMENT(outer, "n", inner);
        bson_destroy(inner);
        inner = outer;
    }
    return inner;
}

static void test_depth_limit(void **state)
{
    (void)state;
    fts_buffer_t out = {0};
    fts_error_t err = {0};
    bson_t *deepest_allowed = nested(FTS_JSON_MAX_DEPTH);
    assert_true(fts_json_append_bson(&out, deepest_allowed, &err));
    assert_non_null(strstr(out.data, "{\"leaf\":1}"));
    bson_t *too_deep = nested(FTS_JSON_MAX_DEPTH + 1);
    fts_buffer_clear(&out);
    fts_buffer_append_str(&out, "keep");
    assert_false(fts_json_append_bson(&out, too_deep, &err));
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    assert_contains(err.message, "nested deeper than 200 levels");
    assert_contains(err.message, "n.n.n.n");
    assert_string_equal(out.data, "keep");
    assert_int_equal(out.len, 4);
    bson_destroy(deepest_allowed);
    bson_destroy(too_deep);
    fts_buffer_destroy(&out);
}

/* ---------------------------------------------------------------------------------------- */
/* Corrupt BSON                                                                             */

/* Finds the offset of needle (a byte string) in doc's bytes. */
static size_t offset_of(const uint8_t *bytes, size_t len, const char *needle, size_t needle_len)
{
    for (size_t i = 0; i + needle_len <= len; i++) {
        if (memcmp(bytes + i, needle, needle_len) == 0) {
            return i;
        }
    }
    fail_msg("marker not found");
    return 0;
}

typedef struct {
    const char *name;
    void (*corrupt)(uint8_t *bytes, size_t len);
    const char *message; /* what the error says */
    const char *path;    /* the field it names */
} corrupt_case_t;

/* The document every corruption starts from. */
static bson_t *corruptible(void)
{
    return BCON_NEW("a", BCON_INT32(1), "outer", "{", "inner", "{", "s", BCON_UTF8("xyz"), "t",
                    BCON_BOOL(true), "}", "}", "arr", "[", BCON_INT32(0), "{", "k", BCON_UTF8("v"),
                    "}", "]", "tail", BCON_UTF8("end"));
}

static void put_le32(uint8_t *at, uint32_t value)
{
    at[0] = (uint8_t)value;
    at[1] = (uint8_t)(value >> 8);
    at[2] = (uint8_t)(value >> 16);
    at[3] = (uint8_t)(value >> 24);
}

static void corrupt_string_length(uint8_t *bytes, size_t len)
{
    size_t at = offset_of(bytes, len, "\x02s\0", 3);
    put_le32(bytes + at + 3, 1000);
}
static void corrupt_string_terminator(uint8_t *bytes, size_t len)
{
    size_t at = offset_of(bytes, len, "xyz\0", 4);
    bytes[at + 3] = 'w';
}
static void corrupt_unknown_type(uint8_t *bytes, size_t len)
{
    size_t at = offset_of(bytes, len, "\x02tail\0", 6);
    bytes[at] = 0x42;
}
static void corrupt_bool(uint8_t *bytes, size_t len)
{
    size_t at = offset_of(bytes, len, "\x08t\0", 3);
    bytes[at + 3] = 2;
}
static void corrupt_embedded_length(uint8_t *bytes, size_t len)
{
    size_t at = offset_of(bytes, len, "\x03outer\0", 7);
    put_le32(bytes + at + 7, (uint32_t)len);
}
static void corrupt_embedded_terminator(uint8_t *bytes, size_t len)
{
    /* The inner document's last byte: the NUL right before outer's own final NUL. */
    size_t at = offset_of(bytes, len, "\x08t\0\x01", 4);
    bytes[at + 4] = 0x0a;
}
static void corrupt_array_element(uint8_t *bytes, size_t len)
{
    size_t at = offset_of(bytes, len, "\x02k\0", 3);
    put_le32(bytes + at + 3, 0);
}
static void corrupt_early_end(uint8_t *bytes, size_t len)
{
    size_t at = offset_of(bytes, len, "\x03outer\0", 7);
    bytes[at] = 0x00;
}

static const corrupt_case_t corrupt_cases[] = {
    {"string length", corrupt_string_length, "overruns its document", "outer.inner.s"},
    {"string terminator", corrupt_string_terminator, "corrupt BSON", "outer.inner.s"},
    {"unknown type", corrupt_unknown_type, "unknown element type 0x42", "tail"},
    {"bool value", corrupt_bool, "corrupt BSON", "outer.inner.t"},
    {"embedded length", corrupt_embedded_length, "corrupt BSON", "outer"},
    {"embedded terminator", corrupt_embedded_terminator, "malformed embedded document",
     "outer.inner"},
    {"array element", corrupt_array_element, "corrupt BSON", "arr.1.k"},
    {"early end", corrupt_early_end, "a document ends early", "top level"},
};

static void test_corrupt_bson_names_the_field(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof corrupt_cases / sizeof corrupt_cases[0]; i++) {
        const corrupt_case_t *c = &corrupt_cases[i];
        bson_t *good = corruptible();
        uint8_t *bytes = bson_malloc(good->len);
        memcpy(bytes, bson_get_data(good), good->len);
        c->corrupt(bytes, good->len);
        bson_t bad;
        assert_true(bson_init_static(&bad, bytes, good->len));
        fts_buffer_t out = {0};
        fts_buffer_append_str(&out, "[earlier]");
        fts_error_t err = {0};
        print_message("corruption %s\n", c->name);
        assert_false(fts_json_append_bson(&out, &bad, &err));
        assert_int_equal(err.domain, FTS_ERROR_INPUT);
        assert_contains(err.message, c->message);
        assert_contains(err.message, c->path);
        /* Nothing partial is left behind. */
        assert_string_equal(out.data, "[earlier]");
        assert_int_equal(out.len, strlen("[earlier]"));
        fts_buffer_destroy(&out);
        bson_free(bytes);
        bson_destroy(good);
    }
}

static void test_corrupt_top_level_frame(void **state)
{
    (void)state;
    bson_t *good = BCON_NEW("a", BCON_INT32(1));
    uint8_t bytes[64];
    memcpy(bytes, bson_get_data(good), good->len);
    /* A bson_t whose length field disagrees with its prefix: only reachable by hand. */
    bson_t bad;
    assert_true(bson_init_static(&bad, bytes, good->len));
    bytes[0] = (uint8_t)(bytes[0] + 1);
    fts_buffer_t out = {0};
    fts_error_t err = {0};
    assert_false(fts_json_append_bson(&out, &bad, &err));
    assert_contains(err.message, "length prefix");
    assert_true(out.len == 0);
    fts_buffer_destroy(&out);
    bson_destroy(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_all_types_in_one_document),
        cmocka_unit_test(test_doubles),
        cmocka_unit_test(test_doubles_round_trip),
        cmocka_unit_test(test_int64_boundaries),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_utf8_validate),
        cmocka_unit_test(test_random_strings_stay_valid),
        cmocka_unit_test(test_keys_needing_escaping),
        cmocka_unit_test(test_nested_arrays_of_documents),
        cmocka_unit_test(test_field_order_and_duplicates_kept),
        cmocka_unit_test(test_empty_document_and_appending),
        cmocka_unit_test(test_without_skips_top_level_key_only),
        cmocka_unit_test(test_append_value),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_corrupt_bson_names_the_field),
        cmocka_unit_test(test_corrupt_top_level_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
