/*
 * test_core_utils.c - the small core pieces: error values, growable buffer, backoff, signals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <bson/bson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buffer.h"
#include "error.h"
#include "signals.h"

static void test_error_set_and_prefix(void **state)
{
    (void)state;
    fts_error_t err;
    assert_false(fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_AUTH, "WRONGPASS %d", 1));
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    fts_error_prefix(&err, "state redis %s", "127.0.0.1:6379");
    assert_string_equal(err.message, "state redis 127.0.0.1:6379: WRONGPASS 1");
    assert_int_equal(err.domain, FTS_ERROR_REDIS);
    assert_string_equal(fts_error_domain_name(err.domain), "redis");
    /* A NULL error is allowed and ignored. */
    assert_false(fts_error_set(NULL, FTS_ERROR_ES, 1, "ignored"));
    fts_error_clear(&err);
    assert_int_equal(err.domain, FTS_ERROR_NONE);
}

static void test_buffer_grows_and_steals(void **state)
{
    (void)state;
    fts_buffer_t buf = {0};
    for (int i = 0; i < 1000; i++) {
        fts_buffer_appendf(&buf, "%d,", i);
    }
    assert_int_equal(buf.len, strlen(buf.data));
    assert_true(strncmp(buf.data, "0,1,2,", 6) == 0);
    assert_non_null(strstr(buf.data, "998,999,"));
    fts_buffer_clear(&buf);
    assert_int_equal(buf.len, 0);
    assert_string_equal(buf.data, "");
    fts_buffer_append(&buf, "a\0b", 3);
    assert_int_equal(buf.len, 3);
    char *stolen = fts_buffer_steal(&buf);
    assert_memory_equal(stolen, "a\0b", 4);
    assert_null(buf.data);
    bson_free(stolen);
    stolen = fts_buffer_steal(&buf);
    assert_string_equal(stolen, "");
    bson_free(stolen);
    fts_buffer_destroy(&buf);
    fts_buffer_destroy(NULL);
}

static void test_buffer_json_escape(void **state)
{
    (void)state;
    fts_buffer_t buf = {0};
    const char raw[] = "q\"b\\n\n\x01\xc3\xa9";
    fts_buffer_append_json_escaped(&buf, raw, sizeof raw - 1);
    assert_string_equal(buf.data, "q\\\"b\\\\n\\n\\u0001\xc3\xa9");
    fts_buffer_destroy(&buf);
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    fts_backoff_t backoff;
    fts_backoff_init(&backoff, 100, 5000, 42);
    uint64_t expected_ceiling[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    for (size_t i = 0; i < sizeof expected_ceiling / sizeof expected_ceiling[0]; i++) {
        assert_int_equal(fts_backoff_ceiling_ms(&backoff), expected_ceiling[i]);
        uint64_t delay = fts_backoff_next_ms(&backoff);
        assert_true(delay <= expected_ceiling[i]);
    }
    /* Far past the cap the shift must not overflow. */
    for (int i = 0; i < 200; i++) {
        assert_true(fts_backoff_next_ms(&backoff) <= 5000);
    }
    fts_backoff_reset(&backoff);
    assert_int_equal(fts_backoff_ceiling_ms(&backoff), 100);
}

static void test_backoff_jitter_spreads(void **state)
{
    (void)state;
    /* Full jitter: draws at the cap cover the whole range, not one value. */
    fts_backoff_t backoff;
    fts_backoff_init(&backoff, 1000, 1000, 7);
    uint64_t low = UINT64_MAX, high = 0, sum = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t delay = fts_backoff_next_ms(&backoff);
        low = delay < low ? delay : low;
        high = delay > high ? delay : high;
        sum += delay;
    }
    assert_true(low < 100);
    assert_true(high > 900);
    assert_true(sum / 1000 > 350 && sum / 1000 < 650);

    /* The same seed gives the same delays. */
    fts_backoff_t a, b;
    fts_backoff_init(&a, 10, 10000, 99);
    fts_backoff_init(&b, 10, 10000, 99);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(fts_backoff_next_ms(&a), fts_backoff_next_ms(&b));
    }
}

static void test_signals_request_stop(void **state)
{
    (void)state;
    fts_error_t err;
    assert_true(fts_signals_install(&err));
    assert_false(fts_signals_stop_requested());
    assert_true(fts_signals_sleep_ms(10)); /* a full sleep when nothing asked to stop */
    raise(SIGTERM);
    assert_true(fts_signals_stop_requested());
    assert_int_equal(fts_signals_stop_signal(), SIGTERM);
    assert_false(fts_signals_sleep_ms(10000)); /* returns at once once a stop is requested */
    fts_signals_reset();
    assert_false(fts_signals_stop_requested());
    assert_int_equal(fts_signals_fd(), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_set_and_prefix),
        cmocka_unit_test(test_buffer_grows_and_steals),
        cmocka_unit_test(test_buffer_json_escape),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_jitter_spreads),
        cmocka_unit_test(test_signals_request_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
