/*
 * test_redis_url.c - redis:// URL parsing and masking (adapters/redis/redis_url.c).
 *
 * No services: libcurl's URL API works offline. Besides the parts of good URLs, these tests
 * hold the promise that no error message and no masked form ever shows a password, however
 * the URL is broken.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <bson/bson.h>

#include "assertions.h"

#include "redis_url.h"

/* Parses text, failing the test with the error message if it does not parse. */
static fts_redis_url_t *parse_ok(const char *text)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_url_t *url = fts_redis_url_parse(text, &err);
    if (!url) {
        fail_msg("%s did not parse: %s", text, err.message);
    }
    return url;
}

/* Parses text expecting a failure with code; returns the error for further checks. */
static fts_error_t parse_fails(const char *text, int code)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_url_t *url = fts_redis_url_parse(text, &err);
    if (url) {
        fts_redis_url_destroy(url);
        fail_msg("%s parsed but should not have", text);
    }
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_int_equal(err.code, code);
    return err;
}

static void test_host_port_db(void **state)
{
    (void)state;
    fts_redis_url_t *url = parse_ok("redis://cache.internal:6380/3");
    assert_string_equal(url->host, "cache.internal");
    assert_int_equal(url->port, 6380);
    assert_int_equal(url->db, 3);
    assert_null(url->user);
    assert_null(url->password);
    assert_string_equal(url->masked, "redis://cache.internal:6380/3");
    fts_redis_url_destroy(url);
}

static void test_defaults(void **state)
{
    (void)state;
    const char *texts[] = {"redis://example.com", "redis://example.com/", "redis://example.com:/",
                           "REDIS://example.com"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        fts_redis_url_t *url = parse_ok(texts[i]);
        assert_string_equal(url->host, "example.com");
        assert_int_equal(url->port, FTS_REDIS_URL_DEFAULT_PORT);
        assert_int_equal(url->db, 0);
        assert_string_equal(url->masked, "redis://example.com:6379/0");
        fts_redis_url_destroy(url);
    }
}

static void test_large_db_is_allowed(void **state)
{
    (void)state;
    /* Redis allows more than 16 databases with `databases N`; the server judges. */
    fts_redis_url_t *url = parse_ok("redis://h/1000");
    assert_int_equal(url->db, 1000);
    fts_redis_url_destroy(url);
    url = parse_ok("redis://h/0");
    assert_int_equal(url->db, 0);
    fts_redis_url_destroy(url);
}

static void test_password_only(void **state)
{
    (void)state;
    fts_redis_url_t *url = parse_ok("redis://:s3cretpw@10.0.0.5");
    assert_null(url->user);
    assert_string_equal(url->password, "s3cretpw");
    assert_string_equal(url->host, "10.0.0.5");
    assert_string_equal(url->masked, "redis://:***@10.0.0.5:6379/0");
    fts_redis_url_destroy(url);
}

static void test_acl_user_and_percent_encoding(void **state)
{
    (void)state;
    fts_redis_url_t *url = parse_ok("redis://al%20ice:p%40ss%3Aw%2Frd%25@host:7000/2");
    assert_string_equal(url->user, "al ice");
    assert_string_equal(url->password, "p@ss:w/rd%");
    assert_string_equal(url->host, "host");
    assert_int_equal(url->port, 7000);
    assert_int_equal(url->db, 2);
    /* The user stays encoded, as a URL needs it; the password is gone. */
    assert_string_equal(url->masked, "redis://al%20ice:***@host:7000/2");
    fts_redis_url_destroy(url);

    url = parse_ok("redis://a%3Ab%40c%2Fd:pw@host");
    assert_string_equal(url->user, "a:b@c/d");
    assert_string_equal(url->masked, "redis://a%3ab%40c%2fd:***@host:6379/0");
    fts_redis_url_destroy(url);
}

static void test_empty_user_and_password_mean_none(void **state)
{
    (void)state;
    fts_redis_url_t *url = parse_ok("redis://:@host/1");
    assert_null(url->user);
    assert_null(url->password);
    assert_string_equal(url->masked, "redis://host:6379/1");
    fts_redis_url_destroy(url);
}

static void test_ipv6(void **state)
{
    (void)state;
    fts_redis_url_t *url = parse_ok("redis://[::1]:6390/1");
    assert_string_equal(url->host, "::1");
    assert_int_equal(url->port, 6390);
    assert_int_equal(url->db, 1);
    assert_string_equal(url->masked, "redis://[::1]:6390/1");
    fts_redis_url_destroy(url);

    url = parse_ok("redis://u:pw@[2001:db8::7]");
    assert_string_equal(url->host, "2001:db8::7");
    assert_int_equal(url->port, 6379);
    assert_string_equal(url->masked, "redis://u:***@[2001:db8::7]:6379/0");
    fts_redis_url_destroy(url);

    url = parse_ok("redis://[fe80::1%25eth0]:7000");
    assert_string_equal(url->host, "fe80::1%eth0");
    fts_redis_url_destroy(url);
}

static void test_tls_is_refused(void **state)
{
    (void)state;
    fts_error_t err = parse_fails("rediss://:topsecret@host:6380/0", FTS_ERROR_CODE_UNSUPPORTED);
    assert_contains(err.message, "TLS");
    assert_contains(err.message, "rediss://:***@host:6380/0");
    assert_not_contains(err.message, "topsecret");
}

static void test_port_out_of_range(void **state)
{
    (void)state;
    fts_error_t err = parse_fails("redis://:hunter22@host:99999/0", FTS_ERROR_CODE_INVALID);
    assert_string_equal(err.message, "invalid Redis URL \"redis://:***@host:99999/0\": port is "
                                     "not a number between 1 and 65535");
    err = parse_fails("redis://host:0/0", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "port");
    err = parse_fails("redis://host:abc/0", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "port");
    assert_contains(err.message, "host:abc");
}

static void test_bad_db(void **state)
{
    (void)state;
    const char *texts[] = {"redis://host/abc", "redis://host/-1",  "redis://host/3/4",
                           "redis://host/1x",  "redis://host/%33", "redis://host/99999999999"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        fts_error_t err = parse_fails(texts[i], FTS_ERROR_CODE_INVALID);
        assert_contains(err.message, "non-negative integer");
        assert_contains(err.message, texts[i]);
    }
}

static void test_unknown_scheme(void **state)
{
    (void)state;
    fts_error_t err = parse_fails("http://host:6379/0", FTS_ERROR_CODE_UNSUPPORTED);
    assert_contains(err.message, "unsupported scheme \"http\"");
    err = parse_fails("unix:///run/redis.sock", FTS_ERROR_CODE_UNSUPPORTED);
    assert_contains(err.message, "unsupported scheme \"unix\"");
}

static void test_not_a_url(void **state)
{
    (void)state;
    fts_error_t err = parse_fails("localhost:6379", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "not a URL of the form redis://");
    err = parse_fails("", FTS_ERROR_CODE_MISSING);
    assert_contains(err.message, "empty");
    err = parse_fails(NULL, FTS_ERROR_CODE_MISSING);
    assert_contains(err.message, "empty");
}

static void test_missing_host(void **state)
{
    (void)state;
    const char *texts[] = {"redis://", "redis:///0", "redis:///", "redis://:pw1234@:6379/0"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        fts_error_t err = parse_fails(texts[i], FTS_ERROR_CODE_INVALID);
        assert_contains(err.message, "host is missing");
        assert_not_contains(err.message, "pw1234");
    }
}

static void test_query_and_fragment_are_refused(void **state)
{
    (void)state;
    fts_error_t err = parse_fails("redis://host/0?password=hunter22&db=3", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "query parameters are not supported");
    assert_contains(err.message, "?password=***&db=***");
    assert_not_contains(err.message, "hunter22");
    err = parse_fails("redis://host/0#x", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "fragment");
}

static void test_user_without_password(void **state)
{
    (void)state;
    /* Often meant as ":password@": not shown. */
    fts_error_t err = parse_fails("redis://probablyapassword@host/0", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "a user needs a password");
    assert_contains(err.message, "redis://***@host/0");
    assert_not_contains(err.message, "probablyapassword");
}

static void test_unencoded_at_sign(void **state)
{
    (void)state;
    fts_error_t err = parse_fails("redis://u:p@ssw0rd@host/0", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "redis://u:***@host/0");
    assert_contains(err.message, "%40");
    assert_not_contains(err.message, "ssw0rd");
}

static void test_control_character_in_password(void **state)
{
    (void)state;
    fts_error_t err = parse_fails("redis://u:abc%00def@host/0", FTS_ERROR_CODE_INVALID);
    assert_contains(err.message, "control character");
    assert_not_contains(err.message, "abc");
    assert_not_contains(err.message, "def");
}

/* Every broken URL carrying a password: neither the error nor the mask may show any of it. */
static void test_no_error_ever_shows_the_password(void **state)
{
    (void)state;
    const char *texts[] = {
        "redis://u:Zq9xPassWord@host:99999/0",
        "redis://:Zq9xPassWord@host/abc",
        "rediss://u:Zq9xPassWord@host",
        "http://u:Zq9xPassWord@host",
        "redis://u:Zq9xPassWord@/0",
        "redis://u:Zq9xPassWord@host/0?a=b",
        "redis://u:Zq9xPass/Word@host:1/0",
        "redis://u:Zq9xPass#Word@host/0",
        "redis://u:Zq9xPass@Word@host/0",
        "redis://u:Zq9xPass?Word@host/0",
        "redis://u:Zq9xPassWord@ho st/0",
        "redis://u:Zq9xPassWord@[::1/0",
        "redis://u:Zq9xPassWord@host:-1/0",
        "redis://:Zq9xPassWord@0.0.0.0/0",
        "redis:/u:Zq9xPassWord@host/x",
        "redis://host/0?password=Zq9xPassWord",
        "redis://Zq9xPassWord@host",
        "redis://u:Zq9xPassWord@host/0#frag",
        "redis://u:Zq9xPassWord@host/0/1",
        "redis://u:Zq9x%00PassWord@host/0",
        "redis://host/0?password=Zq9x:Word@z",
        "redis://host/0?password=Zq9x@Word",
        "u:Zq9xWord@host:6379",
        "redis://u:Zq9x:Pass:Word@host:x",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        fts_error_t err;
        fts_error_clear(&err);
        fts_redis_url_t *url = fts_redis_url_parse(texts[i], &err);
        if (url) {
            fts_redis_url_destroy(url);
            fail_msg("%s parsed but should not have", texts[i]);
        }
        assert_true(err.message[0] != '\0');
        assert_contains(err.message, "invalid Redis URL");
        assert_not_contains(err.message, "Zq9x");
        assert_not_contains(err.message, "Word");

        char *masked = fts_redis_url_mask(texts[i]);
        assert_non_null(masked);
        assert_not_contains(masked, "Zq9x");
        assert_not_contains(masked, "Word");
        bson_free(masked);
    }
}

static void test_mask(void **state)
{
    (void)state;
    struct {
        const char *text;
        const char *masked;
    } cases[] = {
        {"redis://user:pw123@host", "redis://user:***@host:6379/0"},
        {"redis://:pw123@host:7000/5", "redis://:***@host:7000/5"},
        {"redis://host", "redis://host:6379/0"},
        {"redis://[::1]", "redis://[::1]:6379/0"},
        /* Not parseable: masked as written. */
        {"redis://user:pw123@host:99999/0", "redis://user:***@host:99999/0"},
        {"redis://user:pw/123@host:1/x", "redis://user:***@host:1/x"},
        {"rediss://:pw123@host", "rediss://:***@host"},
        {"host:6379", "host:6379"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *masked = fts_redis_url_mask(cases[i].text);
        assert_non_null(masked);
        assert_string_equal(masked, cases[i].masked);
        bson_free(masked);
    }
    char *masked = fts_redis_url_mask(NULL);
    assert_string_equal(masked, "");
    bson_free(masked);
}

static void test_error_can_be_null(void **state)
{
    (void)state;
    assert_null(fts_redis_url_parse("redis://host:99999", NULL));
    fts_redis_url_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_port_db),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_large_db_is_allowed),
        cmocka_unit_test(test_password_only),
        cmocka_unit_test(test_acl_user_and_percent_encoding),
        cmocka_unit_test(test_empty_user_and_password_mean_none),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_tls_is_refused),
        cmocka_unit_test(test_port_out_of_range),
        cmocka_unit_test(test_bad_db),
        cmocka_unit_test(test_unknown_scheme),
        cmocka_unit_test(test_not_a_url),
        cmocka_unit_test(test_missing_host),
        cmocka_unit_test(test_query_and_fragment_are_refused),
        cmocka_unit_test(test_user_without_password),
        cmocka_unit_test(test_unencoded_at_sign),
        cmocka_unit_test(test_control_character_in_password),
        cmocka_unit_test(test_no_error_ever_shows_the_password),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_error_can_be_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
