/*
 * test_es_async.c - the event-loop Elasticsearch client (adapters/es/es_async.h) against the
 * local capture server (test/support/http_capture.h): requests really overlap, statuses and
 * bodies come through, a request fails only when no answer came (refused, timed out), failover
 * moves later requests and never re-sends one, gzip bodies, done is never called from inside
 * fts_es_async_request(), and destroy or a done that starts or destroys are safe (ASan checks
 * that nothing leaks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <zlib.h>

#include "assertions.h"

#include "es_async.h"
#include "es_async_testing.h"
#include "es_curl.h"
#include "http_capture.h"
#include "log.h"
#include "redis_server.h"

typedef struct {
    fts_http_capture_t *capture;
    struct event_base *base;
} fixture_t;

static int setup(void **state)
{
    fts_log_reset();
    fixture_t *fixture = calloc(1, sizeof *fixture);
    fts_error_t err = {0};
    fixture->capture = fts_http_capture_new(&err);
    fixture->base = event_base_new();
    if (!fixture->capture || !fixture->base) {
        fprintf(stderr, "set-up: %s\n", fixture->capture ? "no event base" : err.message);
        return -1;
    }
    *state = fixture;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_destroy(fixture->capture);
    event_base_free(fixture->base);
    free(fixture);
    fts_log_reset();
    return 0;
}

/* What one request's done saw. */
typedef struct {
    int calls;
    long status;
    char body[256];
    bool failed;
    fts_error_t err;
    size_t in_flight_seen; /* fts_es_async_in_flight() from inside done */
    fts_es_async_t *es;    /* set by tests that look at the client from done */
} outcome_t;

static void record(outcome_t *outcome, const fts_es_response_t *response, const fts_error_t *err)
{
    outcome->calls++;
    if (response) {
        outcome->status = response->status;
        snprintf(outcome->body, sizeof outcome->body, "%s",
                 response->body.data ? response->body.data : "");
    } else {
        outcome->failed = true;
        assert_non_null(err);
        outcome->err = *err;
    }
}

static void on_done(void *arg, const fts_es_response_t *response, const fts_error_t *err)
{
    outcome_t *outcome = arg;
    record(outcome, response, err);
    if (outcome->es) {
        outcome->in_flight_seen = fts_es_async_in_flight(outcome->es);
    }
}

/* ---- running the loop until something happened ---------------------------------------------- */

typedef bool (*condition_fn)(void *ctx);

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg; /* only there so that one loop turn never blocks for long */
}

static long now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Runs base until condition holds or timeout_ms passed; returns whether it holds. */
static bool run_until(struct event_base *base, condition_fn condition, void *ctx, long timeout_ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval every = {.tv_sec = 0, .tv_usec = 5000};
    event_add(tick, &every);
    long deadline = now_ms() + timeout_ms;
    while (!condition(ctx) && now_ms() < deadline) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(tick);
    return condition(ctx);
}

typedef struct {
    outcome_t *outcomes;
    size_t count;
} outcomes_t;

static bool all_done(void *ctx)
{
    outcomes_t *all = ctx;
    for (size_t i = 0; i < all->count; i++) {
        if (all->outcomes[i].calls == 0) {
            return false;
        }
    }
    return true;
}

static bool never(void *ctx)
{
    (void)ctx;
    return false;
}

typedef struct {
    fts_http_capture_t *capture;
    size_t count;
} captured_t;

static bool server_received(void *ctx)
{
    captured_t *want = ctx;
    return fts_http_capture_count(want->capture) >= want->count;
}

static fts_es_async_t *client_with(struct event_base *base, fts_es_options_t options)
{
    fts_error_t err = {0};
    fts_es_async_t *es = fts_es_async_new(base, &options, &err);
    if (!es) {
        fail_msg("client: %s", err.message);
    }
    return es;
}

static void start(fts_es_async_t *es, const char *method, const char *path, const char *body,
                  outcome_t *outcome)
{
    fts_error_t err = {0};
    if (!fts_es_async_request(es, method, path, body ? "application/x-ndjson" : NULL, body,
                              body ? strlen(body) : 0, on_done, outcome, &err)) {
        fail_msg("request %s %s not started: %s", method, path, err.message);
    }
}

/* ---- overlap ------------------------------------------------------------------------------- */

/* The server holds every request: if all of them reach it while none is done, they were in
 * flight at the same time, each on a connection of its own. */
static void test_requests_overlap(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_set_stall(fixture->capture, true);
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es = client_with(
        fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1, .request_timeout_ms = 800});

    outcome_t outcomes[4] = {0};
    for (int i = 0; i < 4; i++) {
        start(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", &outcomes[i]);
    }
    assert_int_equal(fts_es_async_in_flight(es), 4);
    captured_t four = {fixture->capture, 4};
    assert_true(run_until(fixture->base, server_received, &four, 5000));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(outcomes[i].calls, 0);
    }
    assert_int_equal(fts_es_async_in_flight(es), 4);
    assert_int_equal(fts_http_capture_connection_count(fixture->capture), 4);

    /* Held answers never come: each request ends on its own timeout, exactly once. */
    outcomes_t all = {outcomes, 4};
    assert_true(run_until(fixture->base, all_done, &all, 5000));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(outcomes[i].calls, 1);
        assert_true(outcomes[i].failed);
        assert_int_equal(outcomes[i].err.code, FTS_ERROR_CODE_TIMEOUT);
    }
    assert_int_equal(fts_es_async_in_flight(es), 0);
    assert_int_equal(fts_http_capture_count(fixture->capture), 4); /* nothing was re-sent */
    fts_es_async_destroy(es);
}

static void test_requests_in_flight_all_complete(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_set_reply(fixture->capture, 200, "application/json", "{\"took\":1}");
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});

    enum { COUNT = 6 };
    outcome_t outcomes[COUNT] = {0};
    char bodies[COUNT][64];
    for (int i = 0; i < COUNT; i++) {
        snprintf(bodies[i], sizeof bodies[i], "{\"index\":{\"_id\":\"%d\"}}\n{}\n", i);
        outcomes[i].es = es;
        start(es, "POST", "/_bulk", bodies[i], &outcomes[i]);
    }
    assert_int_equal(fts_es_async_in_flight(es), COUNT);
    outcomes_t all = {outcomes, COUNT};
    assert_true(run_until(fixture->base, all_done, &all, 5000));

    size_t smallest_in_flight = COUNT;
    for (int i = 0; i < COUNT; i++) {
        assert_int_equal(outcomes[i].calls, 1);
        assert_false(outcomes[i].failed);
        assert_int_equal(outcomes[i].status, 200);
        assert_string_equal(outcomes[i].body, "{\"took\":1}");
        /* in_flight counts this request out before its done runs */
        assert_true(outcomes[i].in_flight_seen < COUNT);
        if (outcomes[i].in_flight_seen < smallest_in_flight) {
            smallest_in_flight = outcomes[i].in_flight_seen;
        }
    }
    assert_int_equal(smallest_in_flight, 0);
    assert_int_equal(fts_es_async_in_flight(es), 0);

    /* Each body arrived once, whatever the order. */
    assert_int_equal(fts_http_capture_count(fixture->capture), COUNT);
    for (int i = 0; i < COUNT; i++) {
        int seen = 0;
        for (int j = 0; j < COUNT; j++) {
            const fts_http_captured_t *request = fts_http_capture_get(fixture->capture, (size_t)j);
            if (strcmp(request->body, bodies[i]) == 0) {
                seen++;
                assert_string_equal(request->uri, "/_bulk");
                assert_string_equal(fts_http_captured_header(request, "Content-Type"),
                                    "application/x-ndjson");
                assert_string_equal(fts_http_captured_header(request, "User-Agent"),
                                    "ftsync/" FTSYNC_VERSION);
                assert_null(fts_http_captured_header(request, "Expect"));
            }
        }
        assert_int_equal(seen, 1);
    }
    fts_es_async_destroy(es);
}

/* ---- answers of every status are answers ---------------------------------------------------- */

static void test_status_and_body_passed_through(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_queue_reply(fixture->capture, 200, "application/json", "{\"status\":200}");
    fts_http_capture_queue_reply(fixture->capture, 413, "application/json", "{\"status\":413}");
    fts_http_capture_queue_reply(fixture->capture, 503, "application/json", "{\"status\":503}");
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});

    outcome_t outcomes[3] = {0};
    start(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", &outcomes[0]);
    start(es, "PUT", "/apps", "{}", &outcomes[1]);
    start(es, "GET", "/_cluster/health", NULL, &outcomes[2]);
    outcomes_t all = {outcomes, 3};
    assert_true(run_until(fixture->base, all_done, &all, 5000));

    /* Which request got which reply depends on arrival order; each got one, whole. */
    bool seen[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        assert_false(outcomes[i].failed);
        char expected[32];
        snprintf(expected, sizeof expected, "{\"status\":%ld}", outcomes[i].status);
        assert_string_equal(outcomes[i].body, expected);
        seen[0] |= outcomes[i].status == 200;
        seen[1] |= outcomes[i].status == 413;
        seen[2] |= outcomes[i].status == 503;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    fts_es_async_destroy(es);
}

static void test_head_and_empty_reply(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_set_reply(fixture->capture, 404, "application/json", "{\"found\":false}");
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});
    outcome_t outcome = {0};
    start(es, "HEAD", "/apps", NULL, &outcome);
    outcomes_t all = {&outcome, 1};
    assert_true(run_until(fixture->base, all_done, &all, 5000));
    assert_false(outcome.failed);
    assert_int_equal(outcome.status, 404);
    assert_string_equal(outcome.body, "");
    assert_string_equal(fts_http_capture_get(fixture->capture, 0)->method, "HEAD");
    fts_es_async_destroy(es);
}

/* ---- no answer ------------------------------------------------------------------------------ */

static void test_refused_connection_names_url_not_password(void **state)
{
    fixture_t *fixture = *state;
    int port = fts_test_free_port();
    assert_true(port > 0);
    char url[128];
    snprintf(url, sizeof url, "http://bob:pw-s3cret@127.0.0.1:%d", port);
    const char *urls[] = {url};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});
    fts_log_clear_secrets(); /* the message must be clean by itself, not only when logged */

    outcome_t outcome = {0};
    start(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", &outcome);
    outcomes_t all = {&outcome, 1};
    assert_true(run_until(fixture->base, all_done, &all, 5000));
    assert_int_equal(outcome.calls, 1);
    assert_true(outcome.failed);
    assert_int_equal(outcome.err.domain, FTS_ERROR_ES);
    assert_int_equal(outcome.err.code, FTS_ERROR_CODE_CONNECT);
    char expected_url[64];
    snprintf(expected_url, sizeof expected_url, "http://127.0.0.1:%d", port);
    assert_contains(outcome.err.message, expected_url);
    assert_contains(outcome.err.message, "POST /_bulk");
    assert_contains(outcome.err.message, "Couldn't connect to server");
    assert_not_contains(outcome.err.message, "pw-s3cret");
    assert_not_contains(outcome.err.message, "bob");
    assert_int_equal(fts_es_async_in_flight(es), 0);
    fts_es_async_destroy(es);
}

static void test_timeout_when_server_stalls(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_set_stall(fixture->capture, true);
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es = client_with(
        fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1, .request_timeout_ms = 300});
    outcome_t outcome = {0};
    long started = now_ms();
    start(es, "GET", "/_cluster/health", NULL, &outcome);
    outcomes_t all = {&outcome, 1};
    assert_true(run_until(fixture->base, all_done, &all, 5000));
    long took = now_ms() - started;
    assert_true(took >= 250 && took < 5000);
    assert_true(outcome.failed);
    assert_int_equal(outcome.err.domain, FTS_ERROR_ES);
    assert_int_equal(outcome.err.code, FTS_ERROR_CODE_TIMEOUT);
    assert_contains(outcome.err.message, fts_http_capture_url(fixture->capture));
    assert_contains(outcome.err.message, "GET /_cluster/health");
    assert_contains(outcome.err.message, "imeout"); /* curl: "Timeout was reached" */
    assert_int_equal(fts_http_capture_count(fixture->capture), 1);
    fts_es_async_destroy(es);
}

/* ---- failover ------------------------------------------------------------------------------- */

static void test_failover_moves_later_requests(void **state)
{
    fixture_t *fixture = *state;
    char down[64];
    snprintf(down, sizeof down, "http://127.0.0.1:%d", fts_test_free_port());
    const char *urls[] = {down, fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 2});
    assert_string_equal(fts_es_async_current_url(es), down);

    char *log_text = NULL;
    size_t log_len = 0;
    FILE *log = open_memstream(&log_text, &log_len);
    fts_log_set_stream(log);

    /* Two requests to the node that is down: both fail (neither is re-sent elsewhere), and the
     * client moves on once, not once per request. */
    outcome_t failed[2] = {0};
    start(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", &failed[0]);
    start(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", &failed[1]);
    outcomes_t both = {failed, 2};
    assert_true(run_until(fixture->base, all_done, &both, 5000));
    for (int i = 0; i < 2; i++) {
        assert_true(failed[i].failed);
        assert_int_equal(failed[i].err.code, FTS_ERROR_CODE_CONNECT);
        assert_contains(failed[i].err.message, down);
    }
    assert_int_equal(fts_http_capture_count(fixture->capture), 0);
    assert_string_equal(fts_es_async_current_url(es), fts_http_capture_url(fixture->capture));

    outcome_t later = {0};
    start(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", &later);
    outcomes_t one = {&later, 1};
    assert_true(run_until(fixture->base, all_done, &one, 5000));
    assert_false(later.failed);
    assert_int_equal(later.status, 200);
    assert_int_equal(fts_http_capture_count(fixture->capture), 1);

    fts_log_set_stream(NULL);
    fclose(log);
    assert_contains(log_text, down);
    assert_contains(log_text, "later requests go to");
    assert_null(strstr(strstr(log_text, "later requests go to") + 1, "later requests go to"));
    free(log_text);
    fts_es_async_destroy(es);
}

static void test_no_failover_once_request_was_sent(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_set_stall(fixture->capture, true);
    fts_error_t err = {0};
    fts_http_capture_t *other = fts_http_capture_new(&err);
    assert_non_null(other);
    const char *urls[] = {fts_http_capture_url(fixture->capture), fts_http_capture_url(other)};
    fts_es_async_t *es = client_with(
        fixture->base, (fts_es_options_t){.urls = urls, .url_count = 2, .request_timeout_ms = 300});
    outcome_t outcome = {0};
    start(es, "POST", "/_bulk", "{\"index\":{\"_id\":\"1\"}}\n{}\n", &outcome);
    outcomes_t all = {&outcome, 1};
    assert_true(run_until(fixture->base, all_done, &all, 5000));
    assert_true(outcome.failed);
    assert_int_equal(outcome.err.code, FTS_ERROR_CODE_TIMEOUT);
    /* The first node got the request and may have applied it: it must not go out twice, and a
     * node that answers slowly is not a node that is down. */
    assert_int_equal(fts_http_capture_count(fixture->capture), 1);
    assert_int_equal(fts_http_capture_count(other), 0);
    assert_string_equal(fts_es_async_current_url(es), fts_http_capture_url(fixture->capture));
    fts_es_async_destroy(es);
    fts_http_capture_destroy(other);
}

/* ---- gzip and copies ------------------------------------------------------------------------ */

static void gunzip(const char *data, size_t len, fts_buffer_t *out)
{
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    assert_int_equal(inflateInit2(&stream, 15 + 16), Z_OK); /* gzip wrapper only */
    stream.next_in = (Bytef *)(uintptr_t)data;
    stream.avail_in = (uInt)len;
    int rc;
    do {
        char chunk[4096];
        stream.next_out = (Bytef *)chunk;
        stream.avail_out = sizeof chunk;
        rc = inflate(&stream, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            fail_msg("inflate: %d (%s)", rc, stream.msg ? stream.msg : "");
        }
        fts_buffer_append(out, chunk, sizeof chunk - stream.avail_out);
    } while (rc != Z_STREAM_END);
    assert_int_equal(stream.avail_in, 0);
    inflateEnd(&stream);
}

static void test_gzip_body_and_caller_buffers_copied(void **state)
{
    fixture_t *fixture = *state;
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es = client_with(
        fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1, .gzip_requests = true});

    fts_buffer_t ndjson = {0};
    for (int i = 0; i < 300; i++) {
        fts_buffer_appendf(&ndjson, "{\"index\":{\"_id\":\"%d\"}}\n{\"name\":\"app %d\"}\n", i, i);
    }
    /* The caller's strings die as soon as the call returns: the client must have copied them. */
    char *body = strdup(ndjson.data);
    char *path = strdup("/_bulk");
    char *method = strdup("POST");
    outcome_t outcome = {0};
    fts_error_t err = {0};
    assert_true(fts_es_async_request(es, method, path, "application/x-ndjson", body, ndjson.len,
                                     on_done, &outcome, &err));
    memset(body, 'x', ndjson.len);
    free(body);
    free(path);
    free(method);

    outcomes_t all = {&outcome, 1};
    assert_true(run_until(fixture->base, all_done, &all, 5000));
    assert_false(outcome.failed);
    assert_int_equal(outcome.status, 200);

    const fts_http_captured_t *request = fts_http_capture_get(fixture->capture, 0);
    assert_string_equal(request->uri, "/_bulk");
    assert_string_equal(fts_http_captured_header(request, "Content-Encoding"), "gzip");
    assert_string_equal(fts_http_captured_header(request, "Content-Type"), "application/x-ndjson");
    assert_int_equal((unsigned char)request->body[0], 0x1f); /* gzip magic */
    assert_int_equal((unsigned char)request->body[1], 0x8b);
    fts_buffer_t plain = {0};
    gunzip(request->body, request->body_len, &plain);
    assert_int_equal(plain.len, ndjson.len);
    assert_memory_equal(plain.data, ndjson.data, ndjson.len);
    fts_buffer_destroy(&plain);
    fts_buffer_destroy(&ndjson);
    fts_es_async_destroy(es);
}

/* ---- when done is called, and when it is not ------------------------------------------------ */

static void test_done_never_synchronous(void **state)
{
    fixture_t *fixture = *state;
    char down[64];
    snprintf(down, sizeof down, "http://127.0.0.1:%d", fts_test_free_port());
    const char *urls[] = {down};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});

    /* A refused connection on loopback fails about at once; done still waits for the loop. */
    outcome_t outcome = {0};
    start(es, "GET", "/", NULL, &outcome);
    assert_int_equal(outcome.calls, 0);
    assert_int_equal(fts_es_async_in_flight(es), 1);

    /* A request that cannot even start returns false and never calls done. */
    outcome_t refused[3] = {0};
    fts_error_t err = {0};
    assert_false(
        fts_es_async_request(es, "post", "/_bulk", NULL, "{}", 2, on_done, &refused[0], &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "post");
    assert_false(
        fts_es_async_request(es, "GET", "no-slash", NULL, NULL, 0, on_done, &refused[1], &err));
    assert_contains(err.message, "no-slash");
    assert_false(fts_es_async_request(es, "HEAD", "/x", NULL, "{}", 2, on_done, &refused[2], &err));
    assert_int_equal(fts_es_async_in_flight(es), 1);

    outcomes_t all = {&outcome, 1};
    assert_true(run_until(fixture->base, all_done, &all, 5000));
    assert_int_equal(outcome.calls, 1);
    assert_true(outcome.failed);
    run_until(fixture->base, never, NULL, 100);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(refused[i].calls, 0);
    }
    assert_int_equal(outcome.calls, 1);
    fts_es_async_destroy(es);
}

static void test_destroy_abandons_requests_in_flight(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_set_stall(fixture->capture, true);
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});
    outcome_t outcomes[3] = {0};
    for (int i = 0; i < 3; i++) {
        start(es, "POST", "/_bulk", "{\"index\":{}}\n{}\n", &outcomes[i]);
    }
    captured_t three = {fixture->capture, 3};
    assert_true(run_until(fixture->base, server_received, &three, 5000));
    /* One more that has not even reached the loop yet. */
    outcome_t unsent = {0};
    start(es, "GET", "/", NULL, &unsent);
    fts_es_async_destroy(es);
    fts_es_async_destroy(NULL);

    /* Nothing of the client is left in the loop to fire. */
    run_until(fixture->base, never, NULL, 200);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(outcomes[i].calls, 0);
    }
    assert_int_equal(unsent.calls, 0);
    assert_int_equal(event_base_get_num_events(fixture->base, EVENT_BASE_COUNT_ADDED), 0);
}

/* A done that starts the next request: a chain of three, each started from the previous done. */
typedef struct {
    fts_es_async_t *es;
    int started;
    int finished;
    long statuses[3];
} chain_t;

static void on_chain_done(void *arg, const fts_es_response_t *response, const fts_error_t *err)
{
    chain_t *chain = arg;
    assert_non_null(response);
    (void)err;
    chain->statuses[chain->finished++] = response->status;
    if (chain->started < 3) {
        fts_error_t start_err = {0};
        int before = chain->finished;
        assert_true(fts_es_async_request(chain->es, "GET", "/", NULL, NULL, 0, on_chain_done, chain,
                                         &start_err));
        chain->started++;
        assert_int_equal(chain->finished, before); /* not called back from inside */
    }
}

static bool chain_over(void *ctx)
{
    return ((chain_t *)ctx)->finished == 3;
}

static void test_done_starts_a_request(void **state)
{
    fixture_t *fixture = *state;
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    chain_t chain = {0};
    chain.es = client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});
    fts_error_t err = {0};
    assert_true(
        fts_es_async_request(chain.es, "GET", "/", NULL, NULL, 0, on_chain_done, &chain, &err));
    chain.started = 1;
    assert_true(run_until(fixture->base, chain_over, &chain, 5000));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(chain.statuses[i], 200);
    }
    assert_int_equal(fts_http_capture_count(fixture->capture), 3);
    /* Sequential requests share one kept-alive connection. */
    assert_int_equal(fts_http_capture_connection_count(fixture->capture), 1);
    assert_int_equal(fts_es_async_in_flight(chain.es), 0);
    fts_es_async_destroy(chain.es);
}

/* A done that destroys the client: no other done is called afterwards, nothing leaks. */
typedef struct {
    fts_es_async_t *es;
    int calls;
} destroyer_t;

static void on_destroying_done(void *arg, const fts_es_response_t *response, const fts_error_t *err)
{
    (void)response;
    (void)err;
    destroyer_t *destroyer = arg;
    destroyer->calls++;
    fts_es_async_destroy(destroyer->es);
}

static bool destroyed(void *ctx)
{
    return ((destroyer_t *)ctx)->calls > 0;
}

static void test_done_destroys_the_client(void **state)
{
    fixture_t *fixture = *state;
    fts_http_capture_set_stall(fixture->capture, true);
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    destroyer_t destroyer = {0};
    destroyer.es = client_with(
        fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1, .request_timeout_ms = 200});
    fts_error_t err = {0};
    for (int i = 0; i < 4; i++) {
        assert_true(fts_es_async_request(destroyer.es, "GET", "/", NULL, NULL, 0,
                                         on_destroying_done, &destroyer, &err));
    }
    captured_t four = {fixture->capture, 4};
    assert_true(run_until(fixture->base, server_received, &four, 5000));
    /* With the loop held past every timeout, the next turn finishes all four at once: the
     * other three are collected and waiting when the first done destroys the client. */
    usleep(400 * 1000);
    assert_true(run_until(fixture->base, destroyed, &destroyer, 5000));
    run_until(fixture->base, never, NULL, 200);
    assert_int_equal(destroyer.calls, 1);
    assert_int_equal(event_base_get_num_events(fixture->base, EVENT_BASE_COUNT_ADDED), 0);
}

/* ---- options -------------------------------------------------------------------------------- */

/* ---- memory bound ---------------------------------------------------------------------------- */

/* The process's peak resident set (VmHWM), in bytes. */
static size_t peak_rss(void)
{
    FILE *status = fopen("/proc/self/status", "r");
    assert_non_null(status);
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, status)) {
        if (sscanf(line, "VmHWM: %zu kB", &kib) == 1) {
            break;
        }
    }
    fclose(status);
    assert_true(kib > 0);
    return kib * 1024;
}

/* Resets VmHWM to the current resident set (Linux 4.0+), so the peak measured next is this
 * test's own. */
static void reset_peak_rss(void)
{
    FILE *clear = fopen("/proc/self/clear_refs", "w");
    assert_non_null(clear);
    assert_true(fputs("5", clear) >= 0);
    fclose(clear);
}

/* A hostile server answers a _bulk of 2 actions with 50 MB: the reply is cut off at what a
 * reply to 2 actions can be, the request fails as "no answer" (nothing in it is used, the
 * caller retries), the process does not grow by the 50 MB, and the retry is answered. */
static void check_bulk_reply_bounded(fixture_t *fixture, bool chunked)
{
    const char *body = "{\"index\":{\"_id\":\"1\"}}\n{\"a\":1}\n{\"delete\":{\"_id\":\"2\"}}\n";
    size_t bound = fts_es_reply_limit("/_bulk", body, strlen(body));
    assert_int_equal(bound, FTS_ES_BULK_REPLY_BASE_BYTES + 3 * FTS_ES_BULK_REPLY_ITEM_BYTES);
    const size_t sent = 50u * 1024u * 1024u;
    fts_http_capture_set_large_reply(fixture->capture, sent, chunked);
    const char *urls[] = {fts_http_capture_url(fixture->capture)};
    fts_es_async_t *es =
        client_with(fixture->base, (fts_es_options_t){.urls = urls, .url_count = 1});

    reset_peak_rss();
    size_t before = peak_rss();
    outcome_t outcome = {0};
    start(es, "POST", "/_bulk", body, &outcome);
    outcomes_t all = {&outcome, 1};
    assert_true(run_until(fixture->base, all_done, &all, 20000));
    size_t grown = peak_rss() - before;

    /* The reply buffer holds at most the bound (twice that while it grows); the slack is for
     * libcurl's connection buffers and the sanitizers' bookkeeping, far below what was sent. */
    if (grown > 2 * bound + 4u * 1024u * 1024u) {
        fail_msg("the process grew by %zu bytes for a reply bounded at %zu", grown, bound);
    }
    assert_true(outcome.failed);
    assert_int_equal(outcome.err.code, FTS_ERROR_CODE_PROTOCOL);
    assert_non_null(strstr(outcome.err.message, "reply larger than"));

    /* The retry (the loader's, after "no answer") gets a real answer. */
    fts_http_capture_set_large_reply(fixture->capture, 0, false);
    fts_http_capture_set_reply(fixture->capture, 200, "application/json",
                               "{\"took\":1,\"errors\":false,\"items\":[]}");
    outcome_t retry = {0};
    start(es, "POST", "/_bulk", body, &retry);
    outcomes_t again = {&retry, 1};
    assert_true(run_until(fixture->base, all_done, &again, 5000));
    assert_false(retry.failed);
    assert_int_equal(retry.status, 200);

    /* Other replies have their own cap; a bulk of more actions a larger one. */
    assert_int_equal(fts_es_reply_limit("/", NULL, 0), FTS_ES_REPLY_MAX_BYTES);
    assert_int_equal(fts_es_reply_limit("/apps/_bulk?refresh=true", body, strlen(body)), bound);
    assert_int_equal(fts_es_reply_limit("/_bulkx", body, strlen(body)), FTS_ES_REPLY_MAX_BYTES);
    fts_es_async_destroy(es);
}

/* Declared with a Content-Length, the reply is refused before any of it is held; sent chunked,
 * it is cut off as it crosses the bound. */
static void test_bulk_reply_bounded_by_its_items(void **state)
{
    check_bulk_reply_bounded(*state, false);
}

static void test_chunked_bulk_reply_bounded_by_its_items(void **state)
{
    check_bulk_reply_bounded(*state, true);
}

static void test_options_validated_like_the_blocking_client(void **state)
{
    fixture_t *fixture = *state;
    fts_error_t err = {0};
    const char *bad[] = {"ftp://127.0.0.1:9200"};
    fts_es_options_t options = {.urls = bad, .url_count = 1};
    assert_null(fts_es_async_new(fixture->base, &options, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_contains(err.message, "must use http or https");

    const char *good[] = {"http://elastic:sekr1t@127.0.0.1:9200/"};
    options = (fts_es_options_t){.urls = good, .url_count = 1};
    fts_es_async_t *es = fts_es_async_new(fixture->base, &options, &err);
    assert_non_null(es);
    assert_string_equal(fts_es_async_current_url(es), "http://127.0.0.1:9200");
    assert_int_equal(fts_es_async_in_flight(es), 0);
    fts_es_async_destroy(es);

    assert_null(fts_es_async_new(NULL, &options, &err));
    assert_int_equal(err.domain, FTS_ERROR_INTERNAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_reply_bounded_by_its_items, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_bulk_reply_bounded_by_its_items, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_requests_in_flight_all_complete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_and_body_passed_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_and_empty_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_connection_names_url_not_password, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeout_when_server_stalls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_moves_later_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_failover_once_request_was_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gzip_body_and_caller_buffers_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_never_synchronous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_abandons_requests_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_starts_a_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_destroys_the_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_options_validated_like_the_blocking_client, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
