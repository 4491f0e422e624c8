/*
 * assertions.h - text assertions the tests share, on top of cmocka's.
 *
 * Include after <cmocka.h>. Error messages are the product here (invariant 6: a clear error
 * naming the problem), so many tests check that a message says something, or never says a
 * secret.
 */
#ifndef FTS_TEST_ASSERTIONS_H
#define FTS_TEST_ASSERTIONS_H

#include <string.h>

static inline void assert_contains(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle)) {
        fail_msg("\"%s\" does not contain \"%s\"", haystack ? haystack : "(null)", needle);
    }
}

static inline void assert_not_contains(const char *haystack, const char *needle)
{
    if (haystack && strstr(haystack, needle)) {
        fail_msg("\"%s\" contains \"%s\"", haystack, needle);
    }
}

#endif
