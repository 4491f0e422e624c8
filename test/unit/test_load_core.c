/*
 * test_load_core.c - the loader's state machine (core/load.c) driven through fake ports in
 * memory, no services, with a clock the test moves: what it reads, what bulk bodies it sends,
 * and above all what it acknowledges (invariant 2) - only accepted, conflicting or
 * already-deleted items, and dead letters in the same settle; nothing after a failed request
 * or settle until it was retried; nothing taken twice; nothing lost on a clean stop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assertions.h"
#include "load.h"
#include "log.h"

/* ---------------------------------------------------------------------------------------- */
/* Fake ports: they record every call and let the test complete them.                      */

#define MAX_CALLS 64
#define MAX_IDS   64

typedef struct {
    char ids[MAX_IDS][FTS_STREAM_ID_SIZE];
    size_t count;
    char dead_ids[MAX_IDS][FTS_STREAM_ID_SIZE];
    char dead_reasons[MAX_IDS][512];
    size_t dead_count;
    void *token;
} settle_call_t;

typedef struct {
    char *body;
    void *token;
} bulk_call_t;

typedef struct {
    uint64_t now;
    uint64_t wake_delay;
    bool wake_armed;
    unsigned ensure_calls;
    unsigned read_calls;
    char read_start[FTS_STREAM_ID_SIZE];
    size_t read_count;
    unsigned claim_calls;
    unsigned touch_calls;
    size_t touched;
    bulk_call_t bulks[MAX_CALLS];
    size_t bulk_count;
    settle_call_t settles[MAX_CALLS];
    size_t settle_count;
    bool finished;
} fake_t;

static void fake_ensure(void *context)
{
    ((fake_t *)context)->ensure_calls++;
}

static void fake_read(void *context, const char *start_id, size_t count)
{
    fake_t *fake = context;
    fake->read_calls++;
    snprintf(fake->read_start, sizeof fake->read_start, "%s", start_id);
    fake->read_count = count;
}

static void fake_claim(void *context, const char *cursor, size_t count)
{
    (void)cursor;
    (void)count;
    ((fake_t *)context)->claim_calls++;
}

static void fake_touch(void *context, const char *const *ids, size_t count)
{
    (void)ids;
    fake_t *fake = context;
    fake->touch_calls++;
    fake->touched = count;
}

static void fake_settle(void *context, const fts_settlement_t *settlement, void *token)
{
    fake_t *fake = context;
    assert_true(fake->settle_count < MAX_CALLS);
    settle_call_t *call = &fake->settles[fake->settle_count++];
    memset(call, 0, sizeof *call);
    call->token = token;
    for (size_t i = 0; i < settlement->ack_count && i < MAX_IDS; i++) {
        snprintf(call->ids[i], sizeof call->ids[i], "%s", settlement->ack_ids[i]);
    }
    call->count = settlement->ack_count;
    for (size_t i = 0; i < settlement->dead_count && i < MAX_IDS; i++) {
        snprintf(call->dead_ids[i], sizeof call->dead_ids[i], "%s", settlement->dead[i].entry->id);
        snprintf(call->dead_reasons[i], sizeof call->dead_reasons[i], "%s",
                 settlement->dead[i].reason);
        /* the dead letter carries the original fields */
        assert_non_null(settlement->dead[i].entry->items);
        assert_true(settlement->dead[i].entry->count >= 2);
    }
    call->dead_count = settlement->dead_count;
}

static void fake_bulk(void *context, const char *body, size_t len, void *token)
{
    fake_t *fake = context;
    assert_true(fake->bulk_count < MAX_CALLS);
    bulk_call_t *call = &fake->bulks[fake->bulk_count++];
    call->body = malloc(len + 1);
    memcpy(call->body, body, len);
    call->body[len] = '\0';
    call->token = token;
}

static void fake_wake_after(void *context, uint64_t delay_ms)
{
    fake_t *fake = context;
    fake->wake_armed = true;
    fake->wake_delay = delay_ms;
}

static uint64_t fake_now(void *context)
{
    return ((fake_t *)context)->now;
}

static void fake_finished(void *context)
{
    ((fake_t *)context)->finished = true;
}

typedef struct {
    fake_t fake;
    fts_loader_t *loader;
} fixture_t;

static fts_load_options_t default_options(void)
{
    static const fts_bulk_target_t target = {.index = "apps", .doc_type = NULL};
    fts_load_options_t options = {
        .target = target,
        .bulk_max_actions = 3,
        .bulk_max_bytes = 1 << 20,
        .bulk_max_wait_ms = 100,
        .bulk_max_in_flight = 2,
        .claim_interval_ms = 5000,
        .max_deliveries = 5,
        .retry_base_ms = 100,
        .retry_max_ms = 1000,
        .stop_timeout_ms = 2000,
        .progress_interval_ms = 0,
    };
    return options;
}

static fixture_t *fixture_new(const fts_load_options_t *options)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->fake.now = 1000000;
    fts_load_ports_t ports = {
        .context = &f->fake,
        .ensure_group = fake_ensure,
        .read = fake_read,
        .claim = fake_claim,
        .touch = fake_touch,
        .settle = fake_settle,
        .bulk = fake_bulk,
        .wake_after = fake_wake_after,
        .now_ms = fake_now,
        .finished = fake_finished,
    };
    f->loader = fts_loader_new(options, &ports);
    assert_non_null(f->loader);
    return f;
}

static void fixture_destroy(fixture_t *f)
{
    fts_loader_destroy(f->loader);
    for (size_t i = 0; i < f->fake.bulk_count; i++) {
        free(f->fake.bulks[i].body);
    }
    free(f);
}

/* Moves the clock to the armed wake-up and fires it. */
static void fire_timer(fixture_t *f)
{
    assert_true(f->fake.wake_armed);
    f->fake.wake_armed = false;
    f->fake.now += f->fake.wake_delay;
    fts_loader_wake(f->loader);
}

/* ---------------------------------------------------------------------------------------- */
/* Entries                                                                                  */

typedef struct {
    char id[FTS_STREAM_ID_SIZE];
    const char *text[14];
    fts_bytes_t items[14];
    size_t count;
    uint64_t deliveries;
} test_entry_t;

static void entry_make(test_entry_t *e, const char *stream_id, const char *op, const char *doc_id,
                       const char *version, const char *body)
{
    memset(e, 0, sizeof *e);
    snprintf(e->id, sizeof e->id, "%s", stream_id);
    size_t n = 0;
    e->text[n++] = "op";
    e->text[n++] = op;
    if (doc_id) {
        e->text[n++] = "id";
        e->text[n++] = doc_id;
    }
    e->text[n++] = "version";
    e->text[n++] = version;
    e->text[n++] = "ns";
    e->text[n++] = "steam.apps";
    e->text[n++] = "ts";
    e->text[n++] = "1700000000.1";
    e->text[n++] = "origin";
    e->text[n++] = "change";
    if (body) {
        e->text[n++] = "body";
        e->text[n++] = body;
    }
    for (size_t i = 0; i < n; i++) {
        e->items[i].data = e->text[i];
        e->items[i].len = strlen(e->text[i]);
    }
    e->count = n;
    e->deliveries = 1;
}

static void deliver(fixture_t *f, test_entry_t *entries, size_t count)
{
    fts_stream_entry_t views[16];
    assert_true(count <= 16);
    for (size_t i = 0; i < count; i++) {
        memset(&views[i], 0, sizeof views[i]);
        memcpy(views[i].id, entries[i].id, sizeof views[i].id);
        views[i].items = entries[i].items;
        views[i].count = entries[i].count;
        views[i].deliveries = entries[i].deliveries;
    }
    fts_loader_read_done(f->loader, views, count, NULL);
}

/* Starts the loader past group creation and its (empty) history, to reading new entries. */
static void start_reading_new(fixture_t *f)
{
    fts_loader_start(f->loader);
    assert_int_equal(f->fake.ensure_calls, 1);
    assert_int_equal(f->fake.read_calls, 0);
    fts_loader_group_done(f->loader, NULL);
    assert_int_equal(f->fake.read_calls, 1);
    assert_string_equal(f->fake.read_start, "0"); /* own pending entries first */
    fts_loader_read_done(f->loader, NULL, 0, NULL);
    assert_int_equal(f->fake.read_calls, 2);
    assert_string_equal(f->fake.read_start, ">");
}

static void three_entries(test_entry_t e[3])
{
    entry_make(&e[0], "1-0", "index", "a", "10", "{\"name\":\"A\"}");
    entry_make(&e[1], "1-1", "delete", "b", "11", NULL);
    entry_make(&e[2], "1-2", "index", "c", "12", "{\"name\":\"C\"}");
}

static const char *bulk_ok_3 =
    "{\"took\":3,\"errors\":false,\"items\":["
    "{\"index\":{\"_index\":\"apps\",\"_id\":\"a\",\"_version\":10,\"status\":201}},"
    "{\"delete\":{\"_index\":\"apps\",\"_id\":\"b\",\"_version\":11,\"status\":404}},"
    "{\"index\":{\"_index\":\"apps\",\"_id\":\"c\",\"_version\":12,\"status\":201}}]}";

/* ---------------------------------------------------------------------------------------- */
/* Tests                                                                                    */

static void test_full_batch_is_sent_and_acknowledged_after_success(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    /* three actions fill a batch: sent at once, with external versions */
    assert_int_equal(f->fake.bulk_count, 1);
    assert_contains(f->fake.bulks[0].body, "\"_id\":\"a\"");
    assert_contains(f->fake.bulks[0].body, "\"version_type\":\"external\"");
    assert_contains(f->fake.bulks[0].body, "{\"delete\":");
    assert_int_equal(f->fake.settle_count, 0);
    assert_int_equal(fts_loader_held(f->loader), 3);

    const char *body = bulk_ok_3;
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 200, body, strlen(body), NULL);
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].count, 3);
    assert_int_equal(f->fake.settles[0].dead_count, 0);
    assert_string_equal(f->fake.settles[0].ids[0], "1-0");
    /* still held until Redis confirmed */
    assert_int_equal(fts_loader_held(f->loader), 3);
    fts_loader_settle_done(f->loader, f->fake.settles[0].token, NULL);
    assert_int_equal(fts_loader_held(f->loader), 0);
    assert_int_equal(fts_loader_stats(f->loader)->acked, 3);
    assert_int_equal(fts_loader_stats(f->loader)->indexed, 2);
    assert_int_equal(fts_loader_stats(f->loader)->deleted, 1);
    fixture_destroy(f);
}

static void test_partial_batch_waits_then_goes(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[1];
    entry_make(&e[0], "2-0", "index", "x", "5", "{\"n\":1}");
    deliver(f, e, 1);
    assert_int_equal(f->fake.bulk_count, 0);
    assert_true(f->fake.wake_armed);
    assert_true(f->fake.wake_delay <= options.bulk_max_wait_ms);
    fire_timer(f);
    assert_int_equal(f->fake.bulk_count, 1);
    fixture_destroy(f);
}

static void test_rejected_item_is_dead_lettered_with_reason_and_the_rest_acked(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    const char *body =
        "{\"took\":3,\"errors\":true,\"items\":["
        "{\"index\":{\"_index\":\"apps\",\"_id\":\"a\",\"status\":400,\"error\":{\"type\":"
        "\"mapper_parsing_exception\",\"reason\":\"failed to parse field [year]\"}}},"
        "{\"delete\":{\"_index\":\"apps\",\"_id\":\"b\",\"_version\":11,\"status\":200}},"
        "{\"index\":{\"_index\":\"apps\",\"_id\":\"c\",\"status\":409,\"error\":{\"type\":"
        "\"version_conflict_engine_exception\",\"reason\":\"version conflict\"}}}]}";
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 200, body, strlen(body), NULL);
    assert_int_equal(f->fake.settle_count, 1);
    settle_call_t *settle = &f->fake.settles[0];
    assert_int_equal(settle->count, 3); /* the dead one is acknowledged in the same settle */
    assert_int_equal(settle->dead_count, 1);
    assert_string_equal(settle->dead_ids[0], "1-0");
    assert_contains(settle->dead_reasons[0], "mapper_parsing_exception");
    assert_contains(settle->dead_reasons[0], "400");
    fts_loader_settle_done(f->loader, settle->token, NULL);
    assert_int_equal(fts_loader_stats(f->loader)->dead, 1);
    assert_int_equal(fts_loader_stats(f->loader)->conflicts, 1);
    assert_int_equal(fts_loader_held(f->loader), 0);
    fixture_destroy(f);
}

static void test_failed_request_acknowledges_nothing_and_is_retried(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    fts_error_t err = {0};
    fts_error_set(&err, FTS_ERROR_ES, FTS_ERROR_CODE_CONNECT, "connection refused");
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 0, NULL, 0, &err);
    assert_int_equal(f->fake.settle_count, 0);
    assert_int_equal(f->fake.bulk_count, 1); /* not at once: after a backoff */
    /* a 503 answer and a malformed one are no better */
    fire_timer(f);
    assert_int_equal(f->fake.bulk_count, 2);
    fts_loader_bulk_done(f->loader, f->fake.bulks[1].token, 503, "{}", 2, NULL);
    assert_int_equal(f->fake.settle_count, 0);
    fire_timer(f);
    assert_int_equal(f->fake.bulk_count, 3);
    const char *truncated = "{\"took\":3,\"errors\":false,\"items\":[{\"index\":{\"_id\":\"a\",";
    fts_loader_bulk_done(f->loader, f->fake.bulks[2].token, 200, truncated, strlen(truncated),
                         NULL);
    assert_int_equal(f->fake.settle_count, 0);
    fire_timer(f);
    assert_int_equal(f->fake.bulk_count, 4);
    assert_string_equal(f->fake.bulks[3].body, f->fake.bulks[0].body); /* the same actions */
    fts_loader_bulk_done(f->loader, f->fake.bulks[3].token, 200, bulk_ok_3, strlen(bulk_ok_3),
                         NULL);
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].count, 3);
    assert_int_equal(fts_loader_stats(f->loader)->request_retries, 3);
    fixture_destroy(f);
}

static void test_throttled_item_alone_is_retried(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    const char *body =
        "{\"took\":3,\"errors\":true,\"items\":["
        "{\"index\":{\"_index\":\"apps\",\"_id\":\"a\",\"status\":201}},"
        "{\"delete\":{\"_index\":\"apps\",\"_id\":\"b\",\"status\":429,\"error\":{\"type\":"
        "\"es_rejected_execution_exception\",\"reason\":\"queue full\"}}},"
        "{\"index\":{\"_index\":\"apps\",\"_id\":\"c\",\"status\":201}}]}";
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 200, body, strlen(body), NULL);
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].count, 2);
    assert_string_equal(f->fake.settles[0].ids[0], "1-0");
    assert_string_equal(f->fake.settles[0].ids[1], "1-2");
    fts_loader_settle_done(f->loader, f->fake.settles[0].token, NULL);
    /* b waits for its backoff, then goes out alone once its batch wait passed */
    for (int i = 0; i < 10 && f->fake.bulk_count < 2; i++) {
        fire_timer(f);
    }
    assert_int_equal(f->fake.bulk_count, 2);
    assert_contains(f->fake.bulks[1].body, "\"_id\":\"b\"");
    assert_not_contains(f->fake.bulks[1].body, "\"_id\":\"a\"");
    fixture_destroy(f);
}

static void test_too_large_request_is_split(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    options.bulk_max_in_flight = 1;
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 413, "", 0, NULL);
    assert_int_equal(f->fake.settle_count, 0);
    /* halves: at most 1 action now (3 / 2) */
    for (int i = 0; i < 5 && f->fake.bulk_count < 2; i++) {
        fire_timer(f);
    }
    assert_int_equal(f->fake.bulk_count, 2);
    assert_contains(f->fake.bulks[1].body, "\"_id\":\"a\"");
    assert_not_contains(f->fake.bulks[1].body, "\"_id\":\"b\"");
    /* a single action refused as a whole is dead-lettered */
    fts_loader_bulk_done(f->loader, f->fake.bulks[1].token, 413, "too large", 9, NULL);
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].dead_count, 1);
    assert_string_equal(f->fake.settles[0].dead_ids[0], "1-0");
    fixture_destroy(f);
}

static void test_failed_settle_is_retried_with_the_same_entries(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 200, bulk_ok_3, strlen(bulk_ok_3),
                         NULL);
    fts_error_t err = {0};
    fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "connection lost");
    fts_loader_settle_done(f->loader, f->fake.settles[0].token, &err);
    assert_int_equal(fts_loader_held(f->loader), 3);
    assert_int_equal(f->fake.settle_count, 1);
    fire_timer(f);
    assert_int_equal(f->fake.settle_count, 2);
    assert_int_equal(f->fake.settles[1].count, 3);
    assert_string_equal(f->fake.settles[1].ids[0], "1-0");
    assert_string_equal(f->fake.settles[1].ids[2], "1-2");
    fts_loader_settle_done(f->loader, f->fake.settles[1].token, NULL);
    assert_int_equal(fts_loader_held(f->loader), 0);
    assert_int_equal(f->fake.bulk_count, 1); /* never re-sent to Elasticsearch */
    fixture_destroy(f);
}

static void test_read_error_rereads_history_and_skips_what_is_held(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    options.bulk_max_actions = 10;
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 2);
    fts_error_t err = {0};
    fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "connection lost");
    fts_loader_read_done(f->loader, NULL, 0, &err);
    unsigned reads = f->fake.read_calls;
    while (f->fake.read_calls == reads) {
        fire_timer(f);
    }
    assert_string_equal(f->fake.read_start, "0");
    /* the history holds the two held entries and one whose reply was lost */
    e[0].deliveries = e[1].deliveries = e[2].deliveries = 2;
    deliver(f, e, 3);
    assert_int_equal(fts_loader_held(f->loader), 3);
    assert_int_equal(fts_loader_stats(f->loader)->duplicates, 2);
    assert_string_equal(f->fake.read_start, "1-2"); /* history continues after the last */
    fts_loader_read_done(f->loader, NULL, 0, NULL);
    assert_string_equal(f->fake.read_start, ">");
    fixture_destroy(f);
}

static void test_untrusted_entries_are_dead_lettered_not_sent(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[4];
    entry_make(&e[0], "3-0", "index", "p", "5", "{\"n\":1}");
    e[0].deliveries = 6; /* more than max_deliveries 5 */
    entry_make(&e[1], "3-1", "explode", "q", "5", NULL);
    entry_make(&e[2], "3-2", "drop", NULL, "7", NULL);
    entry_make(&e[3], "3-3", "index", "r", "5", "{\"n\":1}");
    deliver(f, e, 4);
    assert_int_equal(f->fake.settle_count, 1);
    settle_call_t *settle = &f->fake.settles[0];
    assert_int_equal(settle->dead_count, 3);
    assert_contains(settle->dead_reasons[0], "delivered 6 times");
    assert_contains(settle->dead_reasons[1], "op");
    assert_contains(settle->dead_reasons[2], "drop");
    fts_loader_settle_done(f->loader, settle->token, NULL);
    assert_int_equal(fts_loader_held(f->loader), 1);
    fire_timer(f);
    assert_int_equal(f->fake.bulk_count, 1);
    assert_contains(f->fake.bulks[0].body, "\"_id\":\"r\"");
    assert_not_contains(f->fake.bulks[0].body, "\"_id\":\"p\"");
    fixture_destroy(f);
}

static void test_entry_deleted_from_stream_is_acknowledged(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    fts_loader_start(f->loader);
    fts_loader_group_done(f->loader, NULL);
    fts_stream_entry_t gone = {.id = "4-0", .items = NULL, .count = 0, .deliveries = 2};
    fts_loader_read_done(f->loader, &gone, 1, NULL);
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].count, 1);
    assert_int_equal(f->fake.settles[0].dead_count, 0);
    assert_int_equal(fts_loader_stats(f->loader)->vanished, 1);
    fixture_destroy(f);
}

static void test_reading_is_bounded_by_what_is_held(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    options.bulk_max_actions = 2;
    options.bulk_max_in_flight = 1;
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    assert_int_equal(f->fake.read_count, 2);
    /* max held = 2 * (1 + 2) = 6; fill it */
    test_entry_t e[6];
    char ids[6][16];
    char doc[6][8];
    for (int i = 0; i < 6; i++) {
        snprintf(ids[i], sizeof ids[i], "5-%d", i);
        snprintf(doc[i], sizeof doc[i], "d%d", i);
        entry_make(&e[i], ids[i], "index", doc[i], "9", "{}");
    }
    deliver(f, e, 2);
    deliver(f, e + 2, 2);
    deliver(f, e + 4, 2);
    unsigned reads = f->fake.read_calls;
    assert_int_equal(fts_loader_held(f->loader), 6);
    fire_timer(f);
    assert_int_equal(f->fake.read_calls, reads); /* full: no read */
    fixture_destroy(f);
}

static void test_claims_and_touches_on_interval(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    options.bulk_max_actions = 10;
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[2];
    entry_make(&e[0], "6-0", "index", "a", "5", "{}");
    entry_make(&e[1], "6-1", "index", "b", "5", "{}");
    deliver(f, e, 2);
    while (f->fake.claim_calls == 0) {
        fire_timer(f);
    }
    assert_int_equal(f->fake.touch_calls, 1);
    assert_int_equal(f->fake.touched, 2);
    /* a claimed entry of a dead consumer is loaded like any other */
    test_entry_t c;
    entry_make(&c, "0-9", "index", "z", "3", "{}");
    fts_stream_entry_t view = {.items = c.items, .count = c.count, .deliveries = 2};
    snprintf(view.id, sizeof view.id, "%s", c.id);
    fts_loader_claim_done(f->loader, &view, 1, "0-0", 0, NULL);
    assert_int_equal(fts_loader_stats(f->loader)->claimed, 1);
    assert_int_equal(fts_loader_held(f->loader), 3);
    fixture_destroy(f);
}

static void test_stop_finishes_in_flight_then_reports_finished(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    unsigned reads = f->fake.read_calls;
    fts_loader_stop(f->loader);
    assert_false(f->fake.finished);
    /* the outstanding read completes: its entries are not taken (they stay pending) */
    test_entry_t late[1];
    entry_make(&late[0], "9-0", "index", "late", "5", "{}");
    deliver(f, late, 1);
    assert_int_equal(f->fake.read_calls, reads);
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 200, bulk_ok_3, strlen(bulk_ok_3),
                         NULL);
    assert_false(f->fake.finished);
    assert_int_equal(f->fake.settle_count, 1);
    fts_loader_settle_done(f->loader, f->fake.settles[0].token, NULL);
    assert_true(f->fake.finished);
    assert_int_equal(fts_loader_stats(f->loader)->acked, 3);
    assert_int_equal(f->fake.bulk_count, 1);
    fixture_destroy(f);
}

static void test_stop_abandons_after_timeout_without_acknowledging(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    fts_loader_stop(f->loader);
    fire_timer(f); /* the stop deadline */
    assert_true(f->fake.finished);
    assert_int_equal(f->fake.settle_count, 0);
    /* a late answer after the end changes nothing */
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 200, bulk_ok_3, strlen(bulk_ok_3),
                         NULL);
    assert_int_equal(f->fake.settle_count, 0);
    fixture_destroy(f);
}

int main(void)
{
    fts_log_set_level(FTS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_batch_is_sent_and_acknowledged_after_success),
        cmocka_unit_test(test_partial_batch_waits_then_goes),
        cmocka_unit_test(test_rejected_item_is_dead_lettered_with_reason_and_the_rest_acked),
        cmocka_unit_test(test_failed_request_acknowledges_nothing_and_is_retried),
        cmocka_unit_test(test_throttled_item_alone_is_retried),
        cmocka_unit_test(test_too_large_request_is_split),
        cmocka_unit_test(test_failed_settle_is_retried_with_the_same_entries),
        cmocka_unit_test(test_read_error_rereads_history_and_skips_what_is_held),
        cmocka_unit_test(test_untrusted_entries_are_dead_lettered_not_sent),
        cmocka_unit_test(test_entry_deleted_from_stream_is_acknowledged),
        cmocka_unit_test(test_reading_is_bounded_by_what_is_held),
        cmocka_unit_test(test_claims_and_touches_on_interval),
        cmocka_unit_test(test_stop_finishes_in_flight_then_reports_finished),
        cmocka_unit_test(test_stop_abandons_after_timeout_without_acknowledging),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
