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
    char method[16];
    char path[256];
    char *body;
    void *token;
} request_call_t;

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
    unsigned marks_pending; /* mark calls not completed yet */
    size_t mark_count;      /* the last mark call's entries, and the first of them: */
    char mark_first_id[FTS_STREAM_ID_SIZE];
    uint64_t mark_first_count;
    bulk_call_t bulks[MAX_CALLS];
    size_t bulk_count;
    settle_call_t settles[MAX_CALLS];
    size_t settle_count;
    unsigned barrier_calls;
    char barrier_id[FTS_STREAM_ID_SIZE];
    request_call_t requests[MAX_CALLS];
    size_t request_count;
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

static void fake_mark(void *context, const char *const *ids, const uint64_t *counts, size_t count)
{
    fake_t *fake = context;
    fake->marks_pending++;
    fake->mark_count = count;
    if (count > 0) {
        snprintf(fake->mark_first_id, sizeof fake->mark_first_id, "%s", ids[0]);
        fake->mark_first_count = counts[0];
    }
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

static void fake_barrier(void *context, const char *id)
{
    fake_t *fake = context;
    fake->barrier_calls++;
    snprintf(fake->barrier_id, sizeof fake->barrier_id, "%s", id);
}

static void fake_request(void *context, const char *method, const char *path,
                         const char *content_type, const char *body, size_t len, void *token)
{
    (void)content_type;
    fake_t *fake = context;
    assert_true(fake->request_count < MAX_CALLS);
    request_call_t *call = &fake->requests[fake->request_count++];
    snprintf(call->method, sizeof call->method, "%s", method);
    snprintf(call->path, sizeof call->path, "%s", path);
    call->body = malloc(len + 1);
    if (len) {
        memcpy(call->body, body, len);
    }
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

static const fts_load_ops_t fake_ops = {
    .ensure_group = fake_ensure,
    .read = fake_read,
    .claim = fake_claim,
    .touch = fake_touch,
    .mark = fake_mark,
    .settle = fake_settle,
    .bulk = fake_bulk,
    .barrier = fake_barrier,
    .request = fake_request,
    .wake_after = fake_wake_after,
    .now_ms = fake_now,
    .finished = fake_finished,
};

/* The backoffs' random source of fake_ops_no_jitter: every draw 0, so every retry delay is
 * drawn as 0 (full jitter's lowest value). */
static uint64_t fake_random_zero(void *context)
{
    (void)context;
    return 0;
}

static const fts_load_ops_t fake_ops_no_jitter = {
    .ensure_group = fake_ensure,
    .read = fake_read,
    .claim = fake_claim,
    .touch = fake_touch,
    .mark = fake_mark,
    .settle = fake_settle,
    .bulk = fake_bulk,
    .barrier = fake_barrier,
    .request = fake_request,
    .wake_after = fake_wake_after,
    .now_ms = fake_now,
    .random = fake_random_zero,
    .finished = fake_finished,
};

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

static fixture_t *fixture_new_with(const fts_load_options_t *options, const fts_load_ops_t *ops)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->fake.now = 1000000;
    fts_load_ports_t ports = {.ops = ops, .context = &f->fake};
    f->loader = fts_loader_new(options, &ports);
    assert_non_null(f->loader);
    return f;
}

static fixture_t *fixture_new(const fts_load_options_t *options)
{
    return fixture_new_with(options, &fake_ops);
}

static void fixture_destroy(fixture_t *f)
{
    fts_loader_destroy(f->loader);
    for (size_t i = 0; i < f->fake.bulk_count; i++) {
        free(f->fake.bulks[i].body);
    }
    for (size_t i = 0; i < f->fake.request_count; i++) {
        free(f->fake.requests[i].body);
    }
    free(f);
}

/* Moves the clock to the armed wake-up and fires it. */
/* Completes every outstanding mark call, as Redis would. */
static void complete_marks(fixture_t *f)
{
    while (f->fake.marks_pending > 0) {
        f->fake.marks_pending--;
        fts_loader_mark_done(f->loader, NULL);
    }
}

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

/* The 1 ms floor of the retry delay (core/load.c, retry_delay_ms): with the jitter forced to 0,
 * a failed read, bulk request or settle is not retried from inside the completion that
 * reported the failure (a re-entrant call the driver's callbacks do not expect), but through
 * the timer, armed 1 ms ahead. Without the floor the retry came at once, re-entrantly. */
static void test_zero_jitter_retries_wait_for_the_timer(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new_with(&options, &fake_ops_no_jitter);
    start_reading_new(f);
    fts_error_t err = {0};

    /* A failed read. */
    unsigned reads = f->fake.read_calls;
    f->fake.wake_armed = false;
    fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "connection lost");
    fts_loader_read_done(f->loader, NULL, 0, &err);
    assert_int_equal(f->fake.read_calls, reads); /* not from inside read_done */
    assert_true(f->fake.wake_armed);
    assert_int_equal(f->fake.wake_delay, 1);
    fire_timer(f);
    assert_int_equal(f->fake.read_calls, reads + 1);
    assert_string_equal(f->fake.read_start, "0"); /* the history again */
    fts_loader_read_done(f->loader, NULL, 0, NULL);
    assert_string_equal(f->fake.read_start, ">");

    /* A failed bulk request. */
    test_entry_t e[3];
    three_entries(e);
    deliver(f, e, 3);
    assert_int_equal(f->fake.bulk_count, 1);
    f->fake.wake_armed = false;
    fts_error_set(&err, FTS_ERROR_ES, FTS_ERROR_CODE_CONNECT, "connection refused");
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 0, NULL, 0, &err);
    assert_int_equal(f->fake.bulk_count, 1); /* not from inside bulk_done */
    assert_true(f->fake.wake_armed);
    assert_int_equal(f->fake.wake_delay, 1);
    fire_timer(f);
    assert_int_equal(f->fake.bulk_count, 2);

    /* A failed settle. */
    fts_loader_bulk_done(f->loader, f->fake.bulks[1].token, 200, bulk_ok_3, strlen(bulk_ok_3),
                         NULL);
    assert_int_equal(f->fake.settle_count, 1);
    f->fake.wake_armed = false;
    fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "connection lost");
    fts_loader_settle_done(f->loader, f->fake.settles[0].token, &err);
    assert_int_equal(f->fake.settle_count, 1); /* not from inside settle_done */
    assert_true(f->fake.wake_armed);
    assert_int_equal(f->fake.wake_delay, 1);
    fire_timer(f);
    assert_int_equal(f->fake.settle_count, 2);
    assert_int_equal(f->fake.settles[1].count, 3);
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
    assert_contains(settle->dead_reasons[2], "FTSYNC_NS_FIELD is off"); /* no ns field here */
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

/* Redis's delivery count is rewritten to mean "loaders that died while sending it, plus
 * this delivery": restarts that never sent the entry do not count (issue 13, item 3). */
static void test_delivery_counts_count_only_deaths_while_sending(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[3];
    three_entries(e);
    e[0].deliveries = e[1].deliveries = e[2].deliveries = 4; /* 3 earlier deliveries */
    deliver(f, e, 3);
    assert_int_equal(f->fake.bulk_count, 1);
    /* taken: back to 3 (this delivery not counted); then armed (4) for the request */
    assert_int_equal(f->fake.mark_count, 6);
    assert_string_equal(f->fake.mark_first_id, "1-0");
    assert_int_equal(f->fake.mark_first_count, 3);
    /* the request ends, Elasticsearch down: disarmed, back to 3 */
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 500, "{}", 2, NULL);
    assert_int_equal(f->fake.mark_count, 3);
    assert_int_equal(f->fake.mark_first_count, 3);
    complete_marks(f);
    /* a fifth delivery after a loader died while sending (count 4 left + 1): still loaded;
     * max_deliveries 5 is reached only by the fifth death */
    assert_int_equal(fts_loader_stats(f->loader)->dead, 0);
    fixture_destroy(f);
}

/* An entry whose senders died max_deliveries times is dead-lettered, not sent. */
static void test_entry_killing_its_senders_is_dead_lettered(void **state)
{
    (void)state;
    fts_load_options_t options = default_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[1];
    entry_make(&e[0], "1-0", "index", "a", "10", "{\"name\":\"A\"}");
    e[0].deliveries = 6; /* 5 deaths while armed + this delivery */
    deliver(f, e, 1);
    fire_timer(f);
    assert_int_equal(f->fake.bulk_count, 0);
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].dead_count, 1);
    assert_contains(f->fake.settles[0].dead_reasons[0], "died or stalled 5 times");
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
    /* and the delivery counts written around the request are confirmed */
    assert_false(f->fake.finished);
    complete_marks(f);
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

/* ---------------------------------------------------------------------------------------- */
/* Drop and sweep entries                                                                   */

static fts_load_options_t sweep_options(void)
{
    fts_load_options_t options = default_options();
    options.target.ns_field = "_ftsync_ns";
    options.sweep_page_size = 3;
    return options;
}

static request_call_t *last_request(fixture_t *f)
{
    assert_true(f->fake.request_count > 0);
    return &f->fake.requests[f->fake.request_count - 1];
}

static void answer_request(fixture_t *f, long status, const char *body)
{
    fts_loader_request_done(f->loader, last_request(f)->token, status, body, strlen(body), NULL);
}

/* Lets the barrier of the running sweep clear, then answers the refresh: the first page is
 * asked for next. */
static void pass_barrier_and_refresh(fixture_t *f, const char *entry_id)
{
    assert_true(f->fake.barrier_calls > 0);
    assert_string_equal(f->fake.barrier_id, entry_id);
    size_t before = f->fake.request_count;
    fts_loader_barrier_done(f->loader, true, NULL);
    assert_int_equal(f->fake.request_count, before + 1);
    assert_string_equal(last_request(f)->method, "POST");
    assert_string_equal(last_request(f)->path, "/apps/_refresh");
    answer_request(f, 200, "{\"_shards\":{\"total\":1,\"successful\":1,\"failed\":0}}");
    assert_int_equal(f->fake.request_count, before + 2);
    assert_contains(last_request(f)->path, "/apps/_search?scroll=");
    assert_contains(last_request(f)->body, "\"version\":true");
    assert_contains(last_request(f)->body, "\"_ftsync_ns\"");
}

/* Sends a fresh sweep entry to a started loader that reads new entries. */
static void deliver_sweep(fixture_t *f, const char *stream_id, const char *op, const char *version)
{
    test_entry_t e[1];
    entry_make(&e[0], stream_id, op, NULL, version, NULL);
    deliver(f, e, 1);
}

static const char *page_empty(const char *scroll_id, char *buffer, size_t size)
{
    snprintf(buffer, size,
             "{\"_scroll_id\":\"%s\",\"took\":1,\"_shards\":{\"total\":1,\"successful\":1,"
             "\"failed\":0},\"hits\":{\"total\":4,\"hits\":[]}}",
             scroll_id);
    return buffer;
}

/* A hit of the page: index, id, version, ns (NULL: the document has no ns field). */
#define HIT(index, id, version, ns)                                                                \
    "{\"_index\":\"" index "\",\"_type\":\"doc\",\"_id\":\"" id "\",\"_version\":" version         \
    ",\"_score\":null,\"_source\":{" ns "}}"
#define NS(value) "\"_ftsync_ns\":\"" value "\""

static void test_sweep_waits_for_its_barrier_without_holding_up_later_entries(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[4];
    entry_make(&e[0], "7-0", "index", "a", "5", "{}");
    entry_make(&e[1], "7-1", "sweep", NULL, "100", NULL);
    entry_make(&e[2], "7-2", "index", "b", "200", "{}");
    entry_make(&e[3], "7-3", "index", "c", "201", "{}");
    deliver(f, e, 4);
    /* the barrier is asked about the sweep itself; nothing goes to Elasticsearch for it yet */
    assert_int_equal(f->fake.barrier_calls, 1);
    assert_string_equal(f->fake.barrier_id, "7-1");
    assert_int_equal(f->fake.request_count, 0);
    /* the entries around it are loaded meanwhile, those behind it included */
    assert_int_equal(f->fake.bulk_count, 1);
    assert_contains(f->fake.bulks[0].body, "\"_id\":\"a\"");
    assert_contains(f->fake.bulks[0].body, "\"_id\":\"c\"");
    /* an entry before it is still pending: ask again later, still no request */
    fts_loader_barrier_done(f->loader, false, NULL);
    assert_int_equal(f->fake.request_count, 0);
    while (f->fake.barrier_calls < 2) {
        fire_timer(f);
    }
    assert_int_equal(f->fake.request_count, 0);
    /* a barrier query that failed is no clearance either */
    fts_error_t err = {0};
    fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "connection lost");
    fts_loader_barrier_done(f->loader, false, &err);
    assert_int_equal(f->fake.request_count, 0);
    while (f->fake.barrier_calls < 3) {
        fire_timer(f);
    }
    const char *ok = "{\"took\":3,\"errors\":false,\"items\":["
                     "{\"index\":{\"_index\":\"apps\",\"_id\":\"a\",\"status\":201}},"
                     "{\"index\":{\"_index\":\"apps\",\"_id\":\"b\",\"status\":201}},"
                     "{\"index\":{\"_index\":\"apps\",\"_id\":\"c\",\"status\":201}}]}";
    fts_loader_bulk_done(f->loader, f->fake.bulks[0].token, 200, ok, strlen(ok), NULL);
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].count, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_not_equal(f->fake.settles[0].ids[i], "7-1");
    }
    fts_loader_settle_done(f->loader, f->fake.settles[0].token, NULL);
    assert_int_equal(fts_loader_held(f->loader), 1); /* the sweep, still pending */
    pass_barrier_and_refresh(f, "7-1");
    fixture_destroy(f);
}

static void test_sweep_deletes_only_stale_documents_of_its_ns_then_acknowledges(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    deliver_sweep(f, "8-0", "sweep", "100");
    pass_barrier_and_refresh(f, "8-0");

    /* x and q are stale documents of the ns (q in another index behind the alias); y is at
     * the sweep's version; z belongs to another collection */
    const char *page1 =
        "{\"_scroll_id\":\"s1\",\"took\":1,\"_shards\":{\"total\":2,"
        "\"successful\":2,\"failed\":0},\"hits\":{\"total\":5,\"hits\":[" HIT(
            "apps", "x", "50",
            NS("steam.apps")) "," HIT("apps", "y", "100",
                                      NS("steam.apps")) "," HIT("apps", "z", "10",
                                                                NS("other.coll")) "," HIT("apps-2",
                                                                                          "q", "99",
                                                                                          NS("steam"
                                                                                             ".app"
                                                                                             "s")) "]}}";
    answer_request(f, 200, page1);
    request_call_t *deletes = last_request(f);
    assert_string_equal(deletes->method, "POST");
    assert_string_equal(deletes->path, "/_bulk");
    assert_string_equal(deletes->body,
                        "{\"delete\":{\"_index\":\"apps\",\"_id\":\"x\",\"version\":100,"
                        "\"version_type\":\"external\"}}\n"
                        "{\"delete\":{\"_index\":\"apps-2\",\"_id\":\"q\",\"version\":100,"
                        "\"version_type\":\"external\"}}\n");
    assert_int_equal(f->fake.settle_count, 0);
    /* x deleted; q written again meanwhile: 409, it stays */
    answer_request(f, 200,
                   "{\"took\":1,\"errors\":true,\"items\":["
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"x\",\"status\":200}},"
                   "{\"delete\":{\"_index\":\"apps-2\",\"_id\":\"q\",\"status\":409,\"error\":"
                   "{\"type\":\"version_conflict_engine_exception\",\"reason\":\"v\"}}}]}");
    assert_string_equal(last_request(f)->path, "/_search/scroll");
    assert_contains(last_request(f)->body, "\"scroll_id\":\"s1\"");
    assert_int_equal(f->fake.settle_count, 0);

    answer_request(f, 200,
                   "{\"_scroll_id\":\"s2\",\"_shards\":{\"total\":2,\"successful\":2,\"failed\":"
                   "0},\"hits\":{\"hits\":[" HIT("apps", "r", "1", NS("steam.apps")) "]}}");
    assert_contains(last_request(f)->body, "\"_id\":\"r\"");
    answer_request(f, 200,
                   "{\"took\":1,\"errors\":false,\"items\":["
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"r\",\"status\":404}}]}");
    assert_contains(last_request(f)->body, "\"scroll_id\":\"s2\"");
    assert_int_equal(f->fake.settle_count, 0);

    char empty[256];
    answer_request(f, 200, page_empty("s3", empty, sizeof empty));
    /* the scroll is freed, and only now is the entry acknowledged */
    assert_string_equal(last_request(f)->method, "DELETE");
    assert_contains(last_request(f)->body, "s3");
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].count, 1);
    assert_string_equal(f->fake.settles[0].ids[0], "8-0");
    assert_int_equal(f->fake.settles[0].dead_count, 0);
    fts_loader_settle_done(f->loader, f->fake.settles[0].token, NULL);
    /* the clearing's answer changes nothing */
    answer_request(f, 200, "{\"succeeded\":true}");
    assert_int_equal(fts_loader_held(f->loader), 0);
    assert_int_equal(fts_loader_stats(f->loader)->swept, 1);
    assert_int_equal(fts_loader_stats(f->loader)->sweep_deleted, 1);
    fixture_destroy(f);
}

static void test_drop_with_unmarked_documents_is_dead_lettered_with_counts(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    deliver_sweep(f, "10-0", "drop", "70");
    pass_barrier_and_refresh(f, "10-0");
    /* w is below the version but carries no ns field: it is not deleted, and not forgotten */
    answer_request(f, 200,
                   "{\"_scroll_id\":\"s1\",\"_shards\":{\"total\":1,\"successful\":1,\"failed\":"
                   "0},\"hits\":{\"hits\":[" HIT("apps", "w", "3", "") "," HIT(
                       "apps", "v", "4", NS("steam.apps")) "]}}");
    assert_string_equal(last_request(f)->body,
                        "{\"delete\":{\"_index\":\"apps\",\"_id\":\"v\",\"version\":70,"
                        "\"version_type\":\"external\"}}\n");
    answer_request(f, 200,
                   "{\"took\":1,\"errors\":false,\"items\":["
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"v\",\"status\":200}}]}");
    char empty[256];
    answer_request(f, 200, page_empty("s2", empty, sizeof empty));
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].dead_count, 1);
    assert_string_equal(f->fake.settles[0].dead_ids[0], "10-0");
    assert_contains(f->fake.settles[0].dead_reasons[0], "1 documents below that version");
    assert_contains(f->fake.settles[0].dead_reasons[0], "_ftsync_ns");
    assert_contains(f->fake.settles[0].dead_reasons[0], "deleted 1");
    fixture_destroy(f);
}

static void test_lost_or_expired_scroll_starts_the_sweep_again(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    options.target.doc_type = "doc";
    options.sweep_dialect = FTS_SWEEP_SCROLL_ID_TEXT;
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    deliver_sweep(f, "11-0", "sweep", "100");
    pass_barrier_and_refresh(f, "11-0");
    answer_request(f, 200,
                   "{\"_scroll_id\":\"s1\",\"_shards\":{\"total\":1,\"successful\":1,\"failed\":"
                   "0},\"hits\":{\"hits\":[" HIT("apps", "k", "100", NS("steam.apps")) "]}}");
    /* Elasticsearch 1.x: the scroll id alone is the body */
    assert_string_equal(last_request(f)->path, "/_search/scroll?scroll=5m");
    assert_string_equal(last_request(f)->body, "s1");
    /* Elasticsearch 1.x answers an expired scroll with 200, no hits and a failed shard: that
     * is not the end */
    answer_request(f, 200,
                   "{\"_scroll_id\":\"s2\",\"_shards\":{\"total\":1,\"successful\":0,\"failed\":1,"
                   "\"failures\":[{\"status\":404,\"reason\":\"SearchContextMissingException[No "
                   "search context found for id [1]]\"}]},\"hits\":{\"total\":6,\"hits\":[]}}");
    assert_int_equal(f->fake.settle_count, 0);
    size_t before = f->fake.request_count;
    while (f->fake.request_count == before) {
        fire_timer(f);
    }
    assert_string_equal(last_request(f)->path, "/apps/_refresh"); /* from the start */
    answer_request(f, 200, "{}");
    assert_contains(last_request(f)->path, "/apps/_search?scroll=");
    answer_request(f, 200,
                   "{\"_scroll_id\":\"t1\",\"_shards\":{\"total\":1,\"successful\":1,\"failed\":"
                   "0},\"hits\":{\"hits\":[" HIT("apps", "k", "100", NS("steam.apps")) "]}}");
    /* a page whose answer was lost: the scroll may have moved on, so again from the start */
    fts_error_t err = {0};
    fts_error_set(&err, FTS_ERROR_ES, FTS_ERROR_CODE_TIMEOUT, "timed out");
    fts_loader_request_done(f->loader, last_request(f)->token, 0, NULL, 0, &err);
    before = f->fake.request_count;
    while (f->fake.request_count == before) {
        fire_timer(f);
    }
    assert_string_equal(last_request(f)->path, "/apps/_refresh");
    answer_request(f, 200, "{}");
    char empty[256];
    answer_request(f, 200, page_empty("u1", empty, sizeof empty));
    assert_int_equal(f->fake.settle_count, 1);
    assert_string_equal(f->fake.settles[0].ids[0], "11-0");
    assert_int_equal(f->fake.settles[0].dead_count, 0);
    assert_int_equal(fts_loader_stats(f->loader)->sweep_restarts, 2);
    fixture_destroy(f);
}

static void test_throttled_deletes_are_retried_alone_and_refusals_reported(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    deliver_sweep(f, "15-0", "sweep", "100");
    pass_barrier_and_refresh(f, "15-0");
    answer_request(
        f, 200,
        "{\"_scroll_id\":\"s1\",\"_shards\":{\"total\":1,\"successful\":1,\"failed\":"
        "0},\"hits\":{\"hits\":[" HIT("apps", "x", "5", NS("steam.apps")) "," HIT(
            "apps", "y", "6", NS("steam.apps")) "," HIT("apps", "z", "7", NS("steam.apps")) "]}}");
    answer_request(f, 200,
                   "{\"took\":1,\"errors\":true,\"items\":["
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"x\",\"status\":200}},"
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"y\",\"status\":429,\"error\":"
                   "{\"type\":\"es_rejected_execution_exception\",\"reason\":\"full\"}}},"
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"z\",\"status\":400,\"error\":"
                   "{\"type\":\"illegal_argument_exception\",\"reason\":\"no\"}}}]}");
    size_t before = f->fake.request_count;
    while (f->fake.request_count == before) {
        fire_timer(f);
    }
    /* y alone goes again, after a backoff */
    assert_string_equal(last_request(f)->body,
                        "{\"delete\":{\"_index\":\"apps\",\"_id\":\"y\",\"version\":100,"
                        "\"version_type\":\"external\"}}\n");
    answer_request(f, 200,
                   "{\"took\":1,\"errors\":false,\"items\":["
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"y\",\"status\":200}}]}");
    char empty[256];
    answer_request(f, 200, page_empty("s2", empty, sizeof empty));
    /* z could not be deleted: the entry is dead-lettered saying so, not acknowledged as done */
    assert_int_equal(f->fake.settle_count, 1);
    assert_int_equal(f->fake.settles[0].dead_count, 1);
    assert_contains(f->fake.settles[0].dead_reasons[0], "refused to delete 1 documents");
    assert_contains(f->fake.settles[0].dead_reasons[0], "illegal_argument_exception");
    assert_int_equal(fts_loader_stats(f->loader)->sweep_deleted, 2);
    fixture_destroy(f);
}

static void test_loader_dying_mid_sweep_leaves_it_to_the_next(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *first = fixture_new(&options);
    start_reading_new(first);
    deliver_sweep(first, "12-0", "sweep", "100");
    pass_barrier_and_refresh(first, "12-0");
    answer_request(first, 200,
                   "{\"_scroll_id\":\"s1\",\"_shards\":{\"total\":1,\"successful\":1,\"failed\":"
                   "0},\"hits\":{\"hits\":[" HIT("apps", "x", "50", NS("steam.apps")) "]}}");
    assert_contains(last_request(first)->body, "\"_id\":\"x\"");
    /* killed with its delete in flight: nothing was acknowledged */
    assert_int_equal(first->fake.settle_count, 0);
    fixture_destroy(first);

    /* the next loader finds it pending (its own history after a restart, or claimed) */
    fixture_t *next = fixture_new(&options);
    fts_loader_start(next->loader);
    fts_loader_group_done(next->loader, NULL);
    assert_string_equal(next->fake.read_start, "0");
    test_entry_t e[1];
    entry_make(&e[0], "12-0", "sweep", NULL, "100", NULL);
    e[0].deliveries = 2;
    deliver(next, e, 1);
    /* it sweeps from the start: barrier, refresh, the first page */
    pass_barrier_and_refresh(next, "12-0");
    answer_request(next, 200,
                   "{\"_scroll_id\":\"n1\",\"_shards\":{\"total\":1,\"successful\":1,\"failed\":"
                   "0},\"hits\":{\"hits\":[" HIT("apps", "x", "50", NS("steam.apps")) "]}}");
    assert_contains(last_request(next)->body, "\"_id\":\"x\"");
    answer_request(next, 200,
                   "{\"took\":1,\"errors\":false,\"items\":["
                   "{\"delete\":{\"_index\":\"apps\",\"_id\":\"x\",\"status\":200}}]}");
    char empty[256];
    answer_request(next, 200, page_empty("n2", empty, sizeof empty));
    assert_int_equal(next->fake.settle_count, 1);
    assert_string_equal(next->fake.settles[0].ids[0], "12-0");
    assert_int_equal(next->fake.settles[0].dead_count, 0);
    fixture_destroy(next);
}

static void test_stop_abandons_a_running_sweep_and_leaves_it_pending(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    deliver_sweep(f, "13-0", "sweep", "100");
    pass_barrier_and_refresh(f, "13-0");
    fts_loader_stop(f->loader);
    assert_true(f->fake.finished); /* nothing else in flight: the sweep is not waited for */
    char empty[256];
    answer_request(f, 200, page_empty("s1", empty, sizeof empty));
    assert_int_equal(f->fake.settle_count, 0);
    fixture_destroy(f);
}

static void test_the_lowest_waiting_sweep_goes_first(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    test_entry_t e[2];
    /* claimed out of order: 14-5 first, then 14-2 */
    entry_make(&e[0], "14-5", "sweep", NULL, "300", NULL);
    entry_make(&e[1], "14-2", "drop", NULL, "200", NULL);
    fts_stream_entry_t views[2];
    for (size_t i = 0; i < 2; i++) {
        memset(&views[i], 0, sizeof views[i]);
        memcpy(views[i].id, e[i].id, sizeof views[i].id);
        views[i].items = e[i].items;
        views[i].count = e[i].count;
        views[i].deliveries = 2;
    }
    fts_loader_claim_done(f->loader, views, 2, "0-0", 0, NULL);
    assert_string_equal(f->fake.barrier_id, "14-2");
    fixture_destroy(f);
}

/* Delivers entries as a claim does: taken over from a loader that died holding them. */
static void claim_entries(fixture_t *f, test_entry_t *entries, size_t count)
{
    fts_stream_entry_t views[4];
    assert_true(count <= 4);
    for (size_t i = 0; i < count; i++) {
        memset(&views[i], 0, sizeof views[i]);
        memcpy(views[i].id, entries[i].id, sizeof views[i].id);
        views[i].items = entries[i].items;
        views[i].count = entries[i].count;
        views[i].deliveries = 2;
    }
    fts_loader_claim_done(f->loader, views, count, "0-0", 0, NULL);
}

/* Runs the running sweep's empty scroll to its end and checks it is acknowledged alone. */
static void finish_empty_sweep(fixture_t *f, const char *entry_id, const char *scroll_id)
{
    char empty[256];
    size_t settles = f->fake.settle_count;
    answer_request(f, 200, page_empty(scroll_id, empty, sizeof empty));
    assert_int_equal(f->fake.settle_count, settles + 1);
    assert_int_equal(f->fake.settles[settles].count, 1);
    assert_string_equal(f->fake.settles[settles].ids[0], entry_id);
    assert_int_equal(f->fake.settles[settles].dead_count, 0);
    fts_loader_settle_done(f->loader, f->fake.settles[settles].token, NULL);
}

/* The chaos suite's deadlock: a later sweep waited at its barrier for an earlier one that the
 * same loader then claimed, and the earlier one waited for its turn behind it. */
static void test_an_earlier_sweep_claimed_goes_before_one_waiting_at_its_barrier(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    deliver_sweep(f, "20-5", "sweep", "300");
    assert_int_equal(f->fake.barrier_calls, 1);
    assert_string_equal(f->fake.barrier_id, "20-5");
    fts_loader_barrier_done(f->loader, false, NULL); /* 20-2 is pending in a dead loader */

    test_entry_t e[1];
    entry_make(&e[0], "20-2", "drop", NULL, "200", NULL);
    claim_entries(f, e, 1);
    complete_marks(f);
    /* the earlier one is asked about at once; the later one waits, still held */
    assert_int_equal(f->fake.barrier_calls, 2);
    assert_string_equal(f->fake.barrier_id, "20-2");
    assert_int_equal(fts_loader_held(f->loader), 2);
    pass_barrier_and_refresh(f, "20-2");
    finish_empty_sweep(f, "20-2", "a1");

    /* 20-2 acknowledged: the later one's barrier is asked again, clears, and it runs */
    while (strcmp(f->fake.barrier_id, "20-5") != 0) {
        fire_timer(f);
    }
    pass_barrier_and_refresh(f, "20-5");
    finish_empty_sweep(f, "20-5", "b1");
    assert_int_equal(fts_loader_held(f->loader), 0);
    assert_int_equal(fts_loader_stats(f->loader)->swept, 2);
    fixture_destroy(f);
}

/* The same with the later one's barrier query still out when the earlier one comes: its
 * answer is about the later entry, so it clears nothing; the earlier one is asked about then. */
static void test_a_barrier_answer_for_a_put_back_sweep_clears_nothing(void **state)
{
    (void)state;
    fts_load_options_t options = sweep_options();
    fixture_t *f = fixture_new(&options);
    start_reading_new(f);
    deliver_sweep(f, "21-5", "sweep", "300");
    assert_int_equal(f->fake.barrier_calls, 1);
    test_entry_t e[1];
    entry_make(&e[0], "21-2", "sweep", NULL, "200", NULL);
    claim_entries(f, e, 1);
    complete_marks(f);
    assert_int_equal(f->fake.barrier_calls, 1); /* one query at a time */
    size_t requests = f->fake.request_count;
    fts_loader_barrier_done(f->loader, true, NULL); /* the answer about 21-5 */
    assert_int_equal(f->fake.request_count, requests);
    assert_int_equal(f->fake.barrier_calls, 2);
    assert_string_equal(f->fake.barrier_id, "21-2");
    pass_barrier_and_refresh(f, "21-2");
    finish_empty_sweep(f, "21-2", "a1");
    while (strcmp(f->fake.barrier_id, "21-5") != 0) {
        fire_timer(f);
    }
    pass_barrier_and_refresh(f, "21-5");
    finish_empty_sweep(f, "21-5", "b1");
    assert_int_equal(fts_loader_held(f->loader), 0);
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
        cmocka_unit_test(test_zero_jitter_retries_wait_for_the_timer),
        cmocka_unit_test(test_untrusted_entries_are_dead_lettered_not_sent),
        cmocka_unit_test(test_entry_deleted_from_stream_is_acknowledged),
        cmocka_unit_test(test_reading_is_bounded_by_what_is_held),
        cmocka_unit_test(test_claims_and_touches_on_interval),
        cmocka_unit_test(test_delivery_counts_count_only_deaths_while_sending),
        cmocka_unit_test(test_entry_killing_its_senders_is_dead_lettered),
        cmocka_unit_test(test_stop_finishes_in_flight_then_reports_finished),
        cmocka_unit_test(test_stop_abandons_after_timeout_without_acknowledging),
        cmocka_unit_test(test_sweep_waits_for_its_barrier_without_holding_up_later_entries),
        cmocka_unit_test(test_sweep_deletes_only_stale_documents_of_its_ns_then_acknowledges),
        cmocka_unit_test(test_drop_with_unmarked_documents_is_dead_lettered_with_counts),
        cmocka_unit_test(test_lost_or_expired_scroll_starts_the_sweep_again),
        cmocka_unit_test(test_throttled_deletes_are_retried_alone_and_refusals_reported),
        cmocka_unit_test(test_loader_dying_mid_sweep_leaves_it_to_the_next),
        cmocka_unit_test(test_stop_abandons_a_running_sweep_and_leaves_it_pending),
        cmocka_unit_test(test_the_lowest_waiting_sweep_goes_first),
        cmocka_unit_test(test_an_earlier_sweep_claimed_goes_before_one_waiting_at_its_barrier),
        cmocka_unit_test(test_a_barrier_answer_for_a_put_back_sweep_clears_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
