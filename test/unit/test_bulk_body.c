/*
 * test_bulk_body.c - the NDJSON of _bulk actions, byte for byte (golden strings).
 *
 * A bulk body that is off by one newline shifts every later action onto the wrong source
 * line, and a missing version breaks invariant 3, so every case compares the exact bytes,
 * checks that fts_bulk_action_size predicts them exactly (the batch limit relies on it), and
 * that the action line parses as JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <bson/bson.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"
#include "assertions.h"
#include "buffer.h"
#include "bulk_body.h"

static const fts_bulk_target_t TYPELESS = {"apps", NULL, NULL};
static const fts_bulk_target_t TYPED = {"apps", "doc", NULL};
static const fts_bulk_target_t MARKED = {"apps", NULL, "_ftsync_ns"};

/* An action of op with copies of id (id_len bytes, may hold NUL) and body (may be NULL). */
static void make_action(fts_action_t *action, fts_action_op_t op, const char *id, size_t id_len,
                        const char *body, uint64_t version)
{
    fts_action_init(action);
    action->op = op;
    action->origin = FTS_ACTION_FROM_CHANGE;
    action->version = version;
    action->ns = strdup("shop.apps");
    if (id) {
        action->id = malloc(id_len + 1);
        memcpy(action->id, id, id_len);
        action->id[id_len] = '\0';
        action->id_len = id_len;
    }
    if (body) {
        action->body = strdup(body);
        action->body_len = strlen(body);
    }
}

/* Appends the action after prefix (to show appending never disturbs what is there) and checks
 * the exact bytes, the size prediction and that every line is one JSON object. */
static void check_append(const fts_bulk_target_t *target, const fts_action_t *action,
                         const char *expected)
{
    static const char prefix[] = "{\"delete\":{\"_index\":\"x\"}}\n";
    fts_buffer_t out = {0};
    fts_error_t err = {0};
    fts_buffer_append_str(&out, prefix);
    if (!fts_bulk_append_action(&out, target, action, &err)) {
        fail_msg("append failed: %s", err.message);
    }
    size_t appended = out.len - strlen(prefix);
    assert_memory_equal(out.data, prefix, strlen(prefix));
    const char *got = out.data + strlen(prefix);
    if (appended != strlen(expected) || memcmp(got, expected, appended) != 0) {
        fail_msg("got      %.*s\nexpected %s", (int)appended, got, expected);
    }
    assert_int_equal(fts_bulk_action_size(target, action), appended);

    /* Every line is a JSON object, and the last one ends the body with a newline. */
    assert_int_equal(got[appended - 1], '\n');
    const char *line = got;
    while (line < got + appended) {
        const char *end = memchr(line, '\n', (size_t)(got + appended - line));
        assert_non_null(end);
        bson_t doc;
        bson_error_t error;
        if (!bson_init_from_json(&doc, line, end - line, &error)) {
            fail_msg("line is not JSON: %.*s (%s)", (int)(end - line), line, error.message);
        }
        bson_destroy(&doc);
        line = end + 1;
    }
    fts_buffer_destroy(&out);
}

static void test_index_typeless(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_INDEX, "42", 2, "{\"name\":\"Stardew Valley\"}", 7);
    check_append(&TYPELESS, &action,
                 "{\"index\":{\"_index\":\"apps\",\"_id\":\"42\",\"version\":7,"
                 "\"version_type\":\"external\"}}\n"
                 "{\"name\":\"Stardew Valley\"}\n");
    fts_action_cleanup(&action);
}

static void test_index_typed(void **state)
{
    (void)state;
    fts_action_t action;
    uint64_t version = fts_version_from_timestamp(1795428000u, 3);
    make_action(&action, FTS_ACTION_INDEX, "app-1", 5, "{\"a\":1}", version);
    check_append(&TYPED, &action,
                 "{\"index\":{\"_index\":\"apps\",\"_type\":\"doc\",\"_id\":\"app-1\","
                 "\"version\":934547087897419776,\"version_type\":\"external\"}}\n"
                 "{\"a\":1}\n");
    fts_action_cleanup(&action);
}

static void test_delete_typeless(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_DELETE, "43", 2, NULL, 9);
    check_append(&TYPELESS, &action,
                 "{\"delete\":{\"_index\":\"apps\",\"_id\":\"43\",\"version\":9,"
                 "\"version_type\":\"external\"}}\n");
    fts_action_cleanup(&action);
}

static void test_delete_typed(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_DELETE, "43", 2, NULL, 9223372036854775807u);
    check_append(&TYPED, &action,
                 "{\"delete\":{\"_index\":\"apps\",\"_type\":\"doc\",\"_id\":\"43\","
                 "\"version\":9223372036854775807,\"version_type\":\"external\"}}\n");
    fts_action_cleanup(&action);
}

static void test_id_with_quotes_and_backslash(void **state)
{
    (void)state;
    fts_action_t action;
    const char id[] = "say \"hi\" C:\\dir\\";
    make_action(&action, FTS_ACTION_DELETE, id, sizeof id - 1, NULL, 1);
    check_append(&TYPELESS, &action,
                 "{\"delete\":{\"_index\":\"apps\",\"_id\":\"say \\\"hi\\\" C:\\\\dir\\\\\","
                 "\"version\":1,\"version_type\":\"external\"}}\n");
    fts_action_cleanup(&action);
}

static void test_id_with_control_chars(void **state)
{
    (void)state;
    fts_action_t action;
    /* Tab, LF, CR, 0x01, 0x1f and an embedded NUL: ids are not NUL-safe text. */
    const char id[] = "a\tb\nc\rd\x01"
                      "e\x1f"
                      "f\0g";
    make_action(&action, FTS_ACTION_INDEX, id, sizeof id - 1, "{}", 3);
    check_append(
        &TYPELESS, &action,
        "{\"index\":{\"_index\":\"apps\",\"_id\":\"a\\tb\\nc\\rd\\u0001e\\u001ff\\u0000g\","
        "\"version\":3,\"version_type\":\"external\"}}\n"
        "{}\n");
    fts_action_cleanup(&action);
}

static void test_id_utf8_passes_through(void **state)
{
    (void)state;
    fts_action_t action;
    /* "café €𝄞": two-, three- and four-byte sequences are written as they are. */
    const char id[] = "caf\xc3\xa9 \xe2\x82\xac\xf0\x9d\x84\x9e";
    make_action(&action, FTS_ACTION_INDEX, id, sizeof id - 1, "{\"n\":\"\xc3\xa9\"}", 5);
    check_append(&TYPED, &action,
                 "{\"index\":{\"_index\":\"apps\",\"_type\":\"doc\",\"_id\":\"caf\xc3\xa9 "
                 "\xe2\x82\xac\xf0\x9d\x84\x9e\",\"version\":5,\"version_type\":\"external\"}}\n"
                 "{\"n\":\"\xc3\xa9\"}\n");
    fts_action_cleanup(&action);
}

static void test_body_newlines_become_spaces(void **state)
{
    (void)state;
    fts_action_t action;
    /* Pretty-printed JSON with LF and CRLF between tokens; an escaped \n inside a string
     * (two characters) must stay as it is. */
    make_action(&action, FTS_ACTION_INDEX, "7", 1,
                "{\n  \"name\": \"line\\nbreak\",\r\n  \"n\": 1\r}\n", 11);
    check_append(&TYPELESS, &action,
                 "{\"index\":{\"_index\":\"apps\",\"_id\":\"7\",\"version\":11,"
                 "\"version_type\":\"external\"}}\n"
                 "{   \"name\": \"line\\nbreak\",    \"n\": 1 } \n");
    fts_action_cleanup(&action);
}

static void test_target_names_escaped(void **state)
{
    (void)state;
    fts_action_t action;
    const fts_bulk_target_t odd = {"ap\"ps", "d\\oc", NULL};
    make_action(&action, FTS_ACTION_DELETE, "1", 1, NULL, 2);
    check_append(&odd, &action,
                 "{\"delete\":{\"_index\":\"ap\\\"ps\",\"_type\":\"d\\\\oc\",\"_id\":\"1\","
                 "\"version\":2,\"version_type\":\"external\"}}\n");
    fts_action_cleanup(&action);
}

/* With an ns field, an index action's document gets it first; a delete is unchanged. */
static void test_ns_field_written_into_index_actions(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_INDEX, "42", 2, "{\"name\":\"Stardew\"}", 7);
    check_append(&MARKED, &action,
                 "{\"index\":{\"_index\":\"apps\",\"_id\":\"42\",\"version\":7,"
                 "\"version_type\":\"external\"}}\n"
                 "{\"_ftsync_ns\":\"shop.apps\",\"name\":\"Stardew\"}\n");
    fts_action_cleanup(&action);

    /* an empty document gets no trailing comma; leading blanks are kept */
    make_action(&action, FTS_ACTION_INDEX, "43", 2, " { \n} ", 8);
    check_append(&MARKED, &action,
                 "{\"index\":{\"_index\":\"apps\",\"_id\":\"43\",\"version\":8,"
                 "\"version_type\":\"external\"}}\n"
                 " {\"_ftsync_ns\":\"shop.apps\"  } \n");
    fts_action_cleanup(&action);

    /* an ns that needs escaping stays valid JSON */
    make_action(&action, FTS_ACTION_INDEX, "44", 2, "{\"a\":1}", 9);
    free(action.ns);
    action.ns = strdup("we\"ird.c\\oll");
    check_append(&MARKED, &action,
                 "{\"index\":{\"_index\":\"apps\",\"_id\":\"44\",\"version\":9,"
                 "\"version_type\":\"external\"}}\n"
                 "{\"_ftsync_ns\":\"we\\\"ird.c\\\\oll\",\"a\":1}\n");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DELETE, "45", 2, NULL, 10);
    check_append(&MARKED, &action,
                 "{\"delete\":{\"_index\":\"apps\",\"_id\":\"45\",\"version\":10,"
                 "\"version_type\":\"external\"}}\n");
    fts_action_cleanup(&action);
}

static void test_several_actions_concatenate(void **state)
{
    (void)state;
    fts_action_t first;
    fts_action_t second;
    make_action(&first, FTS_ACTION_INDEX, "1", 1, "{\"a\":1}", 10);
    make_action(&second, FTS_ACTION_DELETE, "2", 1, NULL, 11);
    fts_buffer_t out = {0};
    fts_error_t err = {0};
    assert_true(fts_bulk_append_action(&out, &TYPELESS, &first, &err));
    assert_true(fts_bulk_append_action(&out, &TYPELESS, &second, &err));
    assert_string_equal(out.data, "{\"index\":{\"_index\":\"apps\",\"_id\":\"1\",\"version\":10,"
                                  "\"version_type\":\"external\"}}\n"
                                  "{\"a\":1}\n"
                                  "{\"delete\":{\"_index\":\"apps\",\"_id\":\"2\",\"version\":11,"
                                  "\"version_type\":\"external\"}}\n");
    assert_int_equal(out.len, fts_bulk_action_size(&TYPELESS, &first) +
                                  fts_bulk_action_size(&TYPELESS, &second));
    fts_buffer_destroy(&out);
    fts_action_cleanup(&first);
    fts_action_cleanup(&second);
}

/* Appending a refused action leaves out byte for byte as it was, and names the problem. */
static void check_refused(const fts_action_t *action, const char *needle)
{
    fts_buffer_t out = {0};
    fts_error_t err = {0};
    fts_buffer_append_str(&out, "before\n");
    size_t cap = out.cap;
    assert_false(fts_bulk_append_action(&out, &TYPED, action, &err));
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    assert_contains(err.message, needle);
    assert_int_equal(out.len, strlen("before\n"));
    assert_string_equal(out.data, "before\n");
    assert_int_equal(out.cap, cap);
    assert_int_equal(fts_bulk_action_size(&TYPED, action), 0);
    fts_buffer_destroy(&out);
}

static void test_drop_and_sweep_refused(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_DROP, NULL, 0, NULL, 5);
    check_refused(&action, "drop");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_SWEEP, NULL, 0, NULL, 5);
    check_refused(&action, "sweep");
    fts_action_cleanup(&action);
}

static void test_unframeable_refused(void **state)
{
    (void)state;
    fts_action_t action;
    make_action(&action, FTS_ACTION_INDEX, "1", 1, NULL, 5);
    check_refused(&action, "no body");
    fts_action_cleanup(&action);

    make_action(&action, FTS_ACTION_DELETE, NULL, 0, NULL, 5);
    check_refused(&action, "no id");
    fts_action_cleanup(&action);
}

/* Sizes agree with appends for ids made of every byte value, and for every version length. */
static void test_size_matches_for_every_byte(void **state)
{
    (void)state;
    char id[256];
    for (int i = 0; i < 256; i++) {
        id[i] = (char)i;
    }
    uint64_t versions[] = {1, 9, 10, 99, 100, 4294967296u, 18446744073709551615u};
    for (size_t v = 0; v < sizeof versions / sizeof versions[0]; v++) {
        for (size_t len = 1; len <= sizeof id; len += 15) {
            fts_action_t action;
            make_action(&action, v % 2 ? FTS_ACTION_DELETE : FTS_ACTION_INDEX, id + 256 - len, len,
                        "{\r\n}", versions[v]);
            const fts_bulk_target_t *target = v % 3 == 2 ? &MARKED : v % 3 ? &TYPED : &TYPELESS;
            fts_buffer_t out = {0};
            fts_error_t err = {0};
            assert_true(fts_bulk_append_action(&out, target, &action, &err));
            assert_int_equal(out.len, fts_bulk_action_size(target, &action));
            fts_buffer_destroy(&out);
            fts_action_cleanup(&action);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_typeless),
        cmocka_unit_test(test_index_typed),
        cmocka_unit_test(test_delete_typeless),
        cmocka_unit_test(test_delete_typed),
        cmocka_unit_test(test_id_with_quotes_and_backslash),
        cmocka_unit_test(test_id_with_control_chars),
        cmocka_unit_test(test_id_utf8_passes_through),
        cmocka_unit_test(test_body_newlines_become_spaces),
        cmocka_unit_test(test_target_names_escaped),
        cmocka_unit_test(test_ns_field_written_into_index_actions),
        cmocka_unit_test(test_several_actions_concatenate),
        cmocka_unit_test(test_drop_and_sweep_refused),
        cmocka_unit_test(test_unframeable_refused),
        cmocka_unit_test(test_size_matches_for_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
