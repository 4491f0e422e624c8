/*
 * test_worker_message.c - the parent -> worker messages: every kind survives encode and decode
 * field for field (through the frame reader too, as they travel), the wire keys are the ones
 * worker_message.h documents, and a frame that is not a message is refused with an error naming
 * the kind and the missing or mistyped field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "frame.h"
#include "worker_message.h"

static bson_t *sample_document(void)
{
    bson_t *doc = bson_new();
    BSON_APPEND_INT32(doc, "_id", 7);
    BSON_APPEND_UTF8(doc, "name", "app");
    return doc;
}

/* Encodes message, passes the frame through the frame reader as bytes, decodes it into *out.
 * The reader stays alive (out borrows from it) until the caller cleans it up. */
static void round_trip(const fts_worker_message_t *message, fts_frame_reader_t *reader,
                       fts_worker_message_t *out)
{
    bson_t frame = BSON_INITIALIZER;
    fts_worker_message_encode(message, &frame);
    fts_frame_reader_init(reader);
    fts_frame_reader_feed(reader, bson_get_data(&frame), frame.len);
    bson_destroy(&frame);
    bson_t received;
    fts_error_t err;
    assert_int_equal(fts_frame_reader_next(reader, &received, &err), FTS_FRAME_READY);
    if (!fts_worker_message_decode(&received, out, &err)) {
        fail_msg("decode failed: %s", err.message);
    }
}

static void assert_same_document(const bson_t *a, const bson_t *b)
{
    assert_non_null(a);
    assert_non_null(b);
    assert_true(bson_equal(a, b));
}

static void test_event_round_trip(void **state)
{
    (void)state;
    bson_t *event = sample_document();
    for (int careful = 0; careful <= 1; careful++) {
        fts_worker_message_t message = {
            .kind = FTS_WORKER_MESSAGE_EVENT,
            .payload = event,
            .token = "{\"_data\":\"8263\"}",
            .token_kind = careful ? FTS_TOKEN_START_AFTER : FTS_TOKEN_RESUME,
            .careful = careful,
        };
        fts_frame_reader_t reader;
        fts_worker_message_t out;
        round_trip(&message, &reader, &out);
        assert_int_equal(out.kind, FTS_WORKER_MESSAGE_EVENT);
        assert_same_document(out.payload, event);
        assert_string_equal(out.token, "{\"_data\":\"8263\"}");
        assert_int_equal(out.token_kind, message.token_kind);
        assert_int_equal(out.careful, careful);
        assert_null(out.ns);
        fts_frame_reader_cleanup(&reader);
    }
    bson_destroy(event);
}

static void test_snapshot_round_trip(void **state)
{
    (void)state;
    bson_t *doc = sample_document();
    fts_worker_message_t message = {
        .kind = FTS_WORKER_MESSAGE_SNAPSHOT,
        .payload = doc,
        .ns = "steam.apps",
        .started = {1700000000u, 4},
        .last_id = "{\"$numberInt\":\"7\"}",
        .queued = 5000000000ull,
        .careful = true,
    };
    fts_frame_reader_t reader;
    fts_worker_message_t out;
    round_trip(&message, &reader, &out);
    assert_int_equal(out.kind, FTS_WORKER_MESSAGE_SNAPSHOT);
    assert_same_document(out.payload, doc);
    assert_string_equal(out.ns, "steam.apps");
    assert_int_equal(out.started.seconds, 1700000000u);
    assert_int_equal(out.started.increment, 4);
    assert_string_equal(out.last_id, "{\"$numberInt\":\"7\"}");
    assert_int_equal(out.queued, 5000000000ull);
    assert_true(out.careful);
    assert_null(out.token);
    fts_frame_reader_cleanup(&reader);
    bson_destroy(doc);
}

static void test_token_round_trip(void **state)
{
    (void)state;
    fts_worker_message_t message = {
        .kind = FTS_WORKER_MESSAGE_TOKEN,
        .token = "{\"_data\":\"82AA\"}",
        .token_kind = FTS_TOKEN_START_AFTER,
        .cluster_time = {1700000100u, 9},
    };
    fts_frame_reader_t reader;
    fts_worker_message_t out;
    round_trip(&message, &reader, &out);
    assert_int_equal(out.kind, FTS_WORKER_MESSAGE_TOKEN);
    assert_string_equal(out.token, "{\"_data\":\"82AA\"}");
    assert_int_equal(out.token_kind, FTS_TOKEN_START_AFTER);
    assert_int_equal(out.cluster_time.seconds, 1700000100u);
    assert_int_equal(out.cluster_time.increment, 9);
    assert_null(out.payload);
    assert_false(out.careful);
    fts_frame_reader_cleanup(&reader);
}

static void test_sweep_round_trip(void **state)
{
    (void)state;
    fts_worker_message_t message = {
        .kind = FTS_WORKER_MESSAGE_SWEEP,
        .ns = "steam.apps",
        .started = {1700000200u, 1},
    };
    fts_frame_reader_t reader;
    fts_worker_message_t out;
    round_trip(&message, &reader, &out);
    assert_int_equal(out.kind, FTS_WORKER_MESSAGE_SWEEP);
    assert_string_equal(out.ns, "steam.apps");
    assert_int_equal(out.started.seconds, 1700000200u);
    assert_int_equal(out.started.increment, 1);
    assert_null(out.payload);
    assert_null(out.token);
    fts_frame_reader_cleanup(&reader);
}

/* The keys on the wire are the documented ones (the worker of an older build reads them). */
static void test_wire_keys(void **state)
{
    (void)state;
    bson_t *doc = sample_document();
    fts_worker_message_t snap = {.kind = FTS_WORKER_MESSAGE_SNAPSHOT,
                                 .payload = doc,
                                 .ns = "d.c",
                                 .started = {1, 2},
                                 .last_id = "7",
                                 .queued = 3};
    bson_t frame = BSON_INITIALIZER;
    fts_worker_message_encode(&snap, &frame);
    bson_iter_t iter;
    assert_true(bson_iter_init_find(&iter, &frame, "t"));
    assert_string_equal(bson_iter_utf8(&iter, NULL), "snap");
    static const char *const snap_keys[] = {"doc", "ns", "started", "last_id", "queued", "careful"};
    for (size_t i = 0; i < sizeof snap_keys / sizeof snap_keys[0]; i++) {
        if (!bson_iter_init_find(&iter, &frame, snap_keys[i])) {
            fail_msg("snap has no %s", snap_keys[i]);
        }
    }
    assert_int_equal(bson_count_keys(&frame), 7);
    bson_destroy(&frame);

    fts_worker_message_t event = {.kind = FTS_WORKER_MESSAGE_EVENT,
                                  .payload = doc,
                                  .token = "{}",
                                  .token_kind = FTS_TOKEN_RESUME};
    bson_init(&frame);
    fts_worker_message_encode(&event, &frame);
    assert_true(bson_iter_init_find(&iter, &frame, "t"));
    assert_string_equal(bson_iter_utf8(&iter, NULL), "event");
    assert_true(bson_iter_init_find(&iter, &frame, "kind"));
    assert_string_equal(bson_iter_utf8(&iter, NULL), "resume");
    assert_true(bson_iter_init_find(&iter, &frame, "ev"));
    assert_true(bson_iter_init_find(&iter, &frame, "tok"));
    assert_int_equal(bson_count_keys(&frame), 5);
    bson_destroy(&frame);
    bson_destroy(doc);

    assert_string_equal(fts_worker_message_kind_name(FTS_WORKER_MESSAGE_TOKEN), "token");
    assert_string_equal(fts_worker_message_kind_name(FTS_WORKER_MESSAGE_SWEEP), "sweep");
}

/* Decodes the frame given as relaxed extended JSON; expects failure naming every text. */
static void expect_refused(const char *json, const char *text1, const char *text2)
{
    bson_error_t error;
    bson_t *frame = bson_new_from_json((const uint8_t *)json, -1, &error);
    if (!frame) {
        fail_msg("bad test JSON %s: %s", json, error.message);
    }
    fts_worker_message_t out;
    fts_error_t err;
    memset(&err, 0, sizeof err);
    if (fts_worker_message_decode(frame, &out, &err)) {
        fail_msg("%s decoded, but should have been refused", json);
    }
    assert_int_equal(err.domain, FTS_ERROR_INTERNAL);
    assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
    if (!strstr(err.message, text1) || (text2 && !strstr(err.message, text2))) {
        fail_msg("error \"%s\" for %s does not say \"%s\" and \"%s\"", err.message, json, text1,
                 text2 ? text2 : "");
    }
    /* Nothing half-decoded is left behind. */
    assert_null(out.payload);
    assert_null(out.token);
    assert_null(out.ns);
    bson_destroy(frame);
}

#define TS     "{\"$timestamp\": {\"t\": 1700000000, \"i\": 1}}"
#define I64(n) "{\"$numberLong\": \"" #n "\"}"

static void test_decode_errors(void **state)
{
    (void)state;
    /* No kind, a kind of the wrong type, an unknown kind. */
    expect_refused("{}", "no type", "\"t\"");
    expect_refused("{\"t\": 1}", "no type", NULL);
    expect_refused("{\"t\": \"events\"}", "unknown type \"events\"", NULL);

    /* event: each field missing, then mistyped. */
    expect_refused("{\"t\": \"event\", \"tok\": \"x\", \"kind\": \"resume\"}", "\"event\"",
                   "no field \"ev\"");
    expect_refused("{\"t\": \"event\", \"ev\": {}, \"kind\": \"resume\"}", "\"event\"",
                   "no field \"tok\"");
    expect_refused("{\"t\": \"event\", \"ev\": {}, \"tok\": \"x\"}", "\"event\"",
                   "no field \"kind\"");
    expect_refused("{\"t\": \"event\", \"ev\": \"{}\", \"tok\": \"x\", \"kind\": \"resume\"}",
                   "\"event\"", "field \"ev\" of the wrong type");
    expect_refused("{\"t\": \"event\", \"ev\": {}, \"tok\": 5, \"kind\": \"resume\"}", "\"event\"",
                   "field \"tok\" of the wrong type");
    expect_refused("{\"t\": \"event\", \"ev\": {}, \"tok\": \"\", \"kind\": \"resume\"}",
                   "\"event\"", "empty \"tok\"");
    expect_refused("{\"t\": \"event\", \"ev\": {}, \"tok\": \"x\", \"kind\": \"resumeAfter\"}",
                   "\"event\"", "unknown token kind \"resumeAfter\"");
    expect_refused("{\"t\": \"event\", \"ev\": {}, \"tok\": \"x\", \"kind\": \"resume\", "
                   "\"careful\": 1}",
                   "\"event\"", "field \"careful\" of the wrong type");

    /* snap */
    expect_refused("{\"t\": \"snap\", \"ns\": \"d.c\", \"started\": " TS ", \"last_id\": \"7\", "
                   "\"queued\": " I64(1) "}",
                   "\"snap\"", "no field \"doc\"");
    expect_refused("{\"t\": \"snap\", \"doc\": {}, \"started\": " TS ", \"last_id\": \"7\", "
                   "\"queued\": " I64(1) "}",
                   "\"snap\"", "no field \"ns\"");
    expect_refused("{\"t\": \"snap\", \"doc\": {}, \"ns\": \"d.c\", \"last_id\": \"7\", "
                   "\"queued\": " I64(1) "}",
                   "\"snap\"", "no field \"started\"");
    expect_refused("{\"t\": \"snap\", \"doc\": {}, \"ns\": \"d.c\", \"started\": 5, "
                   "\"last_id\": \"7\", \"queued\": " I64(1) "}",
                   "\"snap\"", "field \"started\" of the wrong type");
    expect_refused("{\"t\": \"snap\", \"doc\": {}, \"ns\": \"d.c\", \"started\": " TS ", "
                   "\"queued\": " I64(1) "}",
                   "\"snap\"", "no field \"last_id\"");
    expect_refused("{\"t\": \"snap\", \"doc\": {}, \"ns\": \"d.c\", \"started\": " TS ", "
                   "\"last_id\": \"7\"}",
                   "\"snap\"", "no field \"queued\"");
    expect_refused("{\"t\": \"snap\", \"doc\": {}, \"ns\": \"d.c\", \"started\": " TS ", "
                   "\"last_id\": \"7\", \"queued\": 1}",
                   "\"snap\"", "field \"queued\" of the wrong type");
    expect_refused("{\"t\": \"snap\", \"doc\": {}, \"ns\": \"d.c\", \"started\": " TS ", "
                   "\"last_id\": \"7\", \"queued\": " I64(-1) "}",
                   "\"snap\"", "negative \"queued\"");

    /* token */
    expect_refused("{\"t\": \"token\", \"tok\": \"x\", \"kind\": \"resume\"}", "\"token\"",
                   "no field \"ct\"");
    expect_refused("{\"t\": \"token\", \"kind\": \"resume\", \"ct\": " TS "}", "\"token\"",
                   "no field \"tok\"");

    /* sweep */
    expect_refused("{\"t\": \"sweep\", \"started\": " TS "}", "\"sweep\"", "no field \"ns\"");
    expect_refused("{\"t\": \"sweep\", \"ns\": \"d.c\"}", "\"sweep\"", "no field \"started\"");
    expect_refused("{\"t\": \"sweep\", \"ns\": \"d.c\", \"started\": \"then\"}", "\"sweep\"",
                   "field \"started\" of the wrong type");
}

/* "careful" may be left out (false), as older parents did for token frames. */
static void test_careful_optional(void **state)
{
    (void)state;
    bson_error_t error;
    bson_t *frame = bson_new_from_json(
        (const uint8_t *)"{\"t\": \"event\", \"ev\": {\"a\": 1}, \"tok\": \"x\", \"kind\": "
                         "\"start_after\"}",
        -1, &error);
    assert_non_null(frame);
    fts_worker_message_t out;
    fts_error_t err;
    assert_true(fts_worker_message_decode(frame, &out, &err));
    assert_false(out.careful);
    assert_int_equal(out.token_kind, FTS_TOKEN_START_AFTER);
    assert_int_equal(bson_count_keys(out.payload), 1);
    bson_destroy(frame);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_round_trip), cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_token_round_trip), cmocka_unit_test(test_sweep_round_trip),
        cmocka_unit_test(test_wire_keys),        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_careful_optional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
