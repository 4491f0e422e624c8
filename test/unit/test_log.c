/*
 * test_log.c - the logger: formats, levels, rate limiting of repeats, secrets, truncation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static uint64_t fake_now;

static uint64_t fake_clock(void)
{
    return fake_now;
}

typedef struct {
    FILE *stream;
    char *data;
    size_t size;
} capture_t;

static int setup(void **state)
{
    capture_t *capture = calloc(1, sizeof *capture);
    capture->stream = open_memstream(&capture->data, &capture->size);
    fts_log_reset();
    fts_log_set_stream(capture->stream);
    fake_now = 1795392000000u; /* 2026-11-23T00:00:00Z */
    fts_log_set_clock(fake_clock);
    *state = capture;
    return 0;
}

static int teardown(void **state)
{
    capture_t *capture = *state;
    fclose(capture->stream);
    free(capture->data);
    free(capture);
    fts_log_reset();
    return 0;
}

static size_t count_lines(const char *text)
{
    size_t lines = 0;
    for (; text && *text; text++) {
        lines += *text == '\n';
    }
    return lines;
}

static void test_logfmt_line(void **state)
{
    capture_t *capture = *state;
    fts_log(FTS_LOG_INFO, "es", "created index %s", "apps");
    fflush(capture->stream);
    assert_string_equal(capture->data, "ts=2026-11-23T00:00:00.000Z level=info component=es "
                                       "msg=\"created index apps\"\n");
}

static void test_json_line_escapes(void **state)
{
    capture_t *capture = *state;
    fts_log_set_format(FTS_LOG_FORMAT_JSON);
    fts_log(FTS_LOG_ERROR, "redis", "said \"%s\"\n", "no\tway");
    fflush(capture->stream);
    assert_string_equal(capture->data,
                        "{\"ts\":\"2026-11-23T00:00:00.000Z\",\"level\":\"error\","
                        "\"component\":\"redis\",\"msg\":\"said \\\"no\\tway\\\"\\n\"}\n");
}

static void test_level_filter(void **state)
{
    capture_t *capture = *state;
    fts_log_set_level(FTS_LOG_WARN);
    fts_log(FTS_LOG_DEBUG, "x", "hidden debug");
    fts_log(FTS_LOG_INFO, "x", "hidden info");
    fts_log(FTS_LOG_WARN, "x", "shown warning");
    fflush(capture->stream);
    assert_int_equal(count_lines(capture->data), 1);
    assert_non_null(strstr(capture->data, "shown warning"));
}

static void test_repeats_rate_limited(void **state)
{
    capture_t *capture = *state;
    for (int i = 0; i < 100; i++) {
        fts_log(FTS_LOG_WARN, "es", "bulk request failed: %d", i);
        fake_now += 5; /* 100 repeats within half a second */
    }
    fflush(capture->stream);
    assert_int_equal(count_lines(capture->data), 1);

    fake_now += 1000;
    fts_log(FTS_LOG_WARN, "es", "bulk request failed: %d", 100);
    fflush(capture->stream);
    assert_int_equal(count_lines(capture->data), 2);
    /* The line after the window says how many were held back. */
    assert_non_null(strstr(capture->data, "msg=\"bulk request failed: 100\" suppressed=99"));

    /* Held-back repeats are reported on flush, not lost. */
    fts_log(FTS_LOG_WARN, "es", "bulk request failed: %d", 101);
    fts_log_flush_repeats();
    fflush(capture->stream);
    assert_int_equal(count_lines(capture->data), 3);
    assert_non_null(strstr(capture->data, "bulk request failed: 101\" suppressed=1"));

    /* Info lines are never held back. */
    for (int i = 0; i < 5; i++) {
        fts_log(FTS_LOG_INFO, "es", "progress %d", i);
    }
    fflush(capture->stream);
    assert_int_equal(count_lines(capture->data), 8);
}

/* A held-back repeat is reported whole on flush, however long (a summary once cut it at 255
 * bytes, losing the end of a message such as "... re-read by _id (found)"). */
static void test_held_back_repeat_reported_whole(void **state)
{
    capture_t *capture = *state;
    char tail[600];
    memset(tail, 'x', sizeof tail - 1);
    tail[sizeof tail - 1] = '\0';
    fts_log(FTS_LOG_WARN, "mongo", "large event %d: %s (found)", 1, tail);
    fake_now += 10;
    fts_log(FTS_LOG_WARN, "mongo", "large event %d: %s (found)", 2, tail);
    fts_log_flush_repeats();
    fflush(capture->stream);
    assert_int_equal(count_lines(capture->data), 2);
    const char *second = strstr(capture->data, "large event 2: ");
    assert_non_null(second);
    assert_non_null(strstr(second, "xxx (found)\" suppressed=1"));
}

static void test_secrets_scrubbed(void **state)
{
    capture_t *capture = *state;
    fts_log_add_secret("hunter22");
    fts_log_add_secret("x"); /* too short to mask */
    fts_log(FTS_LOG_ERROR, "redis", "AUTH hunter22 refused; retry with hunter22? x");
    fflush(capture->stream);
    assert_null(strstr(capture->data, "hunter22"));
    assert_non_null(strstr(capture->data, "AUTH *** refused; retry with ***? x"));
}

static void test_long_message_truncated(void **state)
{
    capture_t *capture = *state;
    char *payload = malloc(10000);
    memset(payload, 'a', 9999);
    payload[9999] = '\0';
    fts_log(FTS_LOG_INFO, "transform", "document: %s", payload);
    fflush(capture->stream);
    assert_true(strlen(capture->data) < FTS_LOG_MAX_MESSAGE + 200);
    assert_non_null(strstr(capture->data, "truncated"));
    free(payload);
}

/* A secret cut by the length limit must not leak in part: masking comes before the cut. */
static void test_secret_at_cut_masked(void **state)
{
    capture_t *capture = *state;
    const char *secret = "Sup3rSecretApiKey";
    fts_log_add_secret(secret);
    char *payload = malloc(FTS_LOG_MAX_MESSAGE + 64);
    size_t filler = FTS_LOG_MAX_MESSAGE - 6; /* the cut falls 6 bytes into the secret */
    memset(payload, 'a', filler);
    snprintf(payload + filler, 64, "%s tail", secret);
    fts_log(FTS_LOG_ERROR, "es", "%s", payload);
    fflush(capture->stream);
    assert_null(strstr(capture->data, "Sup3rS"));
    assert_non_null(strstr(capture->data, "truncated"));
    free(payload);
}

/* Text cut by someone else (a fixed-size error message) may end in the start of a secret. */
static void test_secret_prefix_at_end_masked(void **state)
{
    (void)state;
    fts_log_add_secret("Sup3rSecretApiKey");
    char out[128];
    fts_log_redact("reply echoed: Authorization: ApiKey Sup3rSec", out, sizeof out);
    assert_null(strstr(out, "Sup3r"));
    assert_non_null(strstr(out, "reply echoed: Authorization: ApiKey ***"));
    /* Short tails are not taken for secrets: "Su" alone says nothing. */
    fts_log_redact("Su", out, sizeof out);
    assert_string_equal(out, "Su");
}

/* Basic authentication sends base64(user:password): that form is a secret too. */
static void test_basic_credentials_masked(void **state)
{
    capture_t *capture = *state;
    fts_log_add_basic_credentials("elastic", "pa55word-xyz");
    fts_log(FTS_LOG_WARN, "es",
            "echo: Authorization: Basic ZWxhc3RpYzpwYTU1d29yZC14eXo= and "
            "pa55word-xyz");
    fflush(capture->stream);
    assert_null(strstr(capture->data, "ZWxhc3RpYzpwYTU1d29yZC14eXo"));
    assert_null(strstr(capture->data, "pa55word-xyz"));
    assert_non_null(strstr(capture->data, "Authorization: Basic ***"));
}

static void test_level_names(void **state)
{
    (void)state;
    fts_log_level_t level;
    assert_true(fts_log_level_parse("warning", &level));
    assert_int_equal(level, FTS_LOG_WARN);
    assert_false(fts_log_level_parse("verbose", &level));
    fts_log_format_t format;
    assert_true(fts_log_format_parse("json", &format));
    assert_false(fts_log_format_parse("text", &format));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_logfmt_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_line_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repeats_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_back_repeat_reported_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_scrubbed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_message_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_at_cut_masked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_prefix_at_end_masked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_basic_credentials_masked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
