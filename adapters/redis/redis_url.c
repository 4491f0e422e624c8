/*
 * redis_url.c - redis:// URLs through libcurl's URL API (see redis_url.h).
 *
 * libcurl does the parsing; this file only judges the parts it hands back. The one piece of
 * hand-made text processing is mask_as_written(): a URL that libcurl refuses yields no parts,
 * yet the error must still show the URL without its password, so that function masks
 * generously (everything that could be a password, even if that hides a little more).
 */
#include "redis_url.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "buffer.h"

/* Shown with every "this is not a Redis URL" error so the operator sees what is expected. */
#define EXPECTED_FORM "redis://[[user]:password@]host[:port][/db]"

/* A scheme is letters, digits, '+', '-', '.'; used only to find where the authority starts
 * when masking a URL libcurl refused. */
static bool is_scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
}

/* Follows a query through text: outside it, in a name, or in a value (to be hidden). */
typedef struct {
    bool in_query;
    bool in_value;
} query_state_t;

/* Moves the query state over one character; returns true when the character is shown. */
static bool query_step(query_state_t *state, char c)
{
    if (c == '#') {
        state->in_query = state->in_value = false;
    } else if (c == '?' && !state->in_query) {
        state->in_query = true;
    } else if (state->in_query && c == '&') {
        state->in_value = false;
    } else if (state->in_query && c == '=' && !state->in_value) {
        state->in_value = true;
        return true; /* the '=' itself is shown, the value after it is not */
    }
    return !state->in_value;
}

/* Masks text as written: the user-info part (up to the last '@', since an unencoded '@' or '/'
 * in a password makes the first one meaningless) keeps only the user, and query values are
 * hidden, since some clients accept "?password=". Never NULL (the buffer aborts on no memory). */
static char *mask_as_written(const char *text)
{
    fts_buffer_t out = {0};
    query_state_t query = {false, false};
    const char *start = text;
    const char *colon = strchr(text, ':');
    if (colon && colon > text) {
        const char *p = text;
        while (p < colon && is_scheme_char(*p)) {
            p++;
        }
        if (p == colon) {
            start = colon + 1;
            while (*start == '/') {
                start++;
            }
        }
    }
    fts_buffer_append(&out, text, (size_t)(start - text));

    const char *rest = start;
    const char *at = strrchr(start, '@');
    if (at) {
        /* The user ends at the first ':'; a '/', '?' or '#' before it means that '@' belongs
         * to a path or query (possibly "?password=a:b@c"), and then nothing before it is kept.
         * No ':' means no visible password, but "redis://secret@host" is a common slip for
         * ":secret@": hidden too. */
        size_t user_len = strcspn(start, ":/?#");
        if (start + user_len < at && start[user_len] == ':') {
            fts_buffer_append(&out, start, user_len);
            fts_buffer_append_str(&out, ":***@");
        } else {
            fts_buffer_append_str(&out, "***@");
        }
        /* If that '@' stood in a query value, what follows it is still that value. */
        for (const char *p = start; p < at; p++) {
            query_step(&query, *p);
        }
        if (query.in_value) {
            fts_buffer_append_str(&out, "***");
        }
        rest = at + 1;
    }

    for (const char *p = rest; *p; p++) {
        bool was_in_value = query.in_value;
        if (query_step(&query, *p)) {
            fts_buffer_append_char(&out, *p);
            if (!was_in_value && query.in_value) {
                fts_buffer_append_str(&out, "***");
            }
        }
    }
    return fts_buffer_steal(&out);
}

/* Fills err with `invalid Redis URL "<masked>": <problem>`. The problem text must not repeat
 * any part of the URL that could hold a password: the masked URL already shows the rest. */
static bool fail(fts_error_t *err, int code, const char *text, const char *problem, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(fts_error_t *err, int code, const char *text, const char *problem, ...)
{
    char described[FTS_ERROR_MESSAGE_SIZE];
    va_list args;
    va_start(args, problem);
    vsnprintf(described, sizeof described, problem, args);
    va_end(args);

    char *masked = mask_as_written(text);
    fts_error_set(err, FTS_ERROR_CONFIG, code, "invalid Redis URL \"%s\": %s", masked, described);
    bson_free(masked);
    return false;
}

/* Our wording for libcurl's refusals, pointing at the usual cause where there is one. */
static bool fail_curl(fts_error_t *err, const char *text, CURLUcode rc)
{
    /* An unencoded '@' in the password is the classic way to break a Redis URL. */
    const char *first_at = strchr(text, '@');
    bool several_ats = first_at && strchr(first_at + 1, '@');
    const char *hint = several_ats ? " (percent-encode '@', ':' and '/' in a password: %40, %3A, "
                                     "%2F)"
                                   : "";
    switch (rc) {
    case CURLUE_OUT_OF_MEMORY:
        fts_fatal_oom("parsing a Redis URL");
    case CURLUE_BAD_PORT_NUMBER:
        return fail(err, FTS_ERROR_CODE_INVALID, text, "port is not a number between 1 and 65535%s",
                    hint);
    case CURLUE_NO_HOST:
        return fail(err, FTS_ERROR_CODE_INVALID, text, "the host is missing (expected %s)",
                    EXPECTED_FORM);
    case CURLUE_BAD_SCHEME:
    case CURLUE_BAD_SLASHES:
    case CURLUE_MALFORMED_INPUT:
        return fail(err, FTS_ERROR_CODE_INVALID, text, "not a URL of the form %s", EXPECTED_FORM);
    case CURLUE_BAD_HOSTNAME:
    case CURLUE_BAD_IPV6:
        return fail(err, FTS_ERROR_CODE_INVALID, text, "the host is not a valid name or address%s",
                    hint);
    case CURLUE_BAD_LOGIN:
    case CURLUE_BAD_USER:
    case CURLUE_BAD_PASSWORD:
        return fail(err, FTS_ERROR_CODE_INVALID, text, "malformed user or password%s", hint);
    case CURLUE_URLDECODE:
        return fail(err, FTS_ERROR_CODE_INVALID, text,
                    "the user or password holds a control character (such as %%00) once decoded");
    default:
        return fail(err, FTS_ERROR_CODE_INVALID, text, "%s%s", curl_url_strerror(rc), hint);
    }
}

/* Reads an optional part: true with *value NULL when the URL has no such part. */
static bool get_part(CURLU *handle, CURLUPart part, unsigned flags, char **value, CURLUcode *rc)
{
    *value = NULL;
    *rc = curl_url_get(handle, part, value, flags);
    switch (*rc) {
    case CURLUE_OK:
        return true;
    case CURLUE_NO_USER:
    case CURLUE_NO_PASSWORD:
    case CURLUE_NO_PORT:
    case CURLUE_NO_QUERY:
    case CURLUE_NO_FRAGMENT:
    case CURLUE_NO_ZONEID:
        *value = NULL;
        return true;
    default:
        *value = NULL;
        return false;
    }
}

/* "0.0.0.0" is what libcurl makes of "redis:///0" (it reads "0" as the host), and no address
 * of 0.0.0.0/8 or "::" can be connected to, so these mean the host was left out. */
static bool is_unspecified_address(const char *host)
{
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, host, &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24) == 0;
    }
    return inet_pton(AF_INET6, host, &v6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&v6);
}

/* The path is "", "/" or "/<digits>"; a decoded path is not accepted ("/%33" is not 3). */
static bool parse_db(const char *path, int *db)
{
    if (!path || path[0] == '\0' || strcmp(path, "/") == 0) {
        *db = 0;
        return true;
    }
    if (path[0] != '/' || path[1] < '0' || path[1] > '9') {
        return false;
    }
    for (const char *p = path + 1; *p; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
    }
    errno = 0;
    long value = strtol(path + 1, NULL, 10);
    if (errno != 0 || value > INT_MAX) {
        return false;
    }
    *db = (int)value;
    return true;
}

/* Builds the full form with the password masked, through libcurl so that the user and host
 * are encoded as a URL needs them. Never NULL: libcurl refuses to copy, change or print a URL
 * it parsed itself, with parts checked here, only when it runs out of memory, which aborts. */
static char *build_masked(CURLU *parsed, const fts_redis_url_t *url)
{
    char *curl_text = NULL;
    char port[32];
    char path[32];
    snprintf(port, sizeof port, "%d", url->port);
    snprintf(path, sizeof path, "/%d", url->db);
    CURLU *copy = curl_url_dup(parsed);
    /* An empty user or password was judged to be none: it goes, as does a real password. */
    if (!copy || curl_url_set(copy, CURLUPART_USER, url->user, CURLU_URLENCODE) != CURLUE_OK ||
        curl_url_set(copy, CURLUPART_PASSWORD, url->password ? "***" : NULL, 0) != CURLUE_OK ||
        curl_url_set(copy, CURLUPART_PORT, port, 0) != CURLUE_OK ||
        curl_url_set(copy, CURLUPART_PATH, path, 0) != CURLUE_OK ||
        curl_url_get(copy, CURLUPART_URL, &curl_text, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        fts_fatal_oom("the masked form of a Redis URL");
    }
    char *result = bson_strdup(curl_text);
    curl_free(curl_text);
    curl_url_cleanup(copy);
    return result;
}

fts_redis_url_t *fts_redis_url_parse(const char *text, fts_error_t *err)
{
    fts_redis_url_t *url = NULL;
    CURLU *handle = NULL;
    char *scheme = NULL, *user = NULL, *password = NULL, *host = NULL, *zone = NULL;
    char *port = NULL, *path = NULL, *query = NULL, *fragment = NULL;
    CURLUcode rc;
    bool ok = false;

    if (!text || !*text) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "the Redis URL is empty (expected %s)", EXPECTED_FORM);
        goto cleanup;
    }
    handle = curl_url();
    if (!handle) {
        fts_fatal_oom("parsing a Redis URL");
    }
    url = bson_malloc0(sizeof *url);
    /* libcurl knows no redis:// of its own; NON_SUPPORT_SCHEME makes it parse it generically. */
    rc = curl_url_set(handle, CURLUPART_URL, text, CURLU_NON_SUPPORT_SCHEME);
    if (rc != CURLUE_OK) {
        fail_curl(err, text, rc);
        goto cleanup;
    }
    if (!get_part(handle, CURLUPART_SCHEME, 0, &scheme, &rc) ||
        !get_part(handle, CURLUPART_USER, CURLU_URLDECODE, &user, &rc) ||
        !get_part(handle, CURLUPART_PASSWORD, CURLU_URLDECODE, &password, &rc) ||
        !get_part(handle, CURLUPART_HOST, 0, &host, &rc) ||
        !get_part(handle, CURLUPART_ZONEID, 0, &zone, &rc) ||
        !get_part(handle, CURLUPART_PORT, 0, &port, &rc) ||
        !get_part(handle, CURLUPART_PATH, 0, &path, &rc) ||
        !get_part(handle, CURLUPART_QUERY, 0, &query, &rc) ||
        !get_part(handle, CURLUPART_FRAGMENT, 0, &fragment, &rc)) {
        fail_curl(err, text, rc);
        goto cleanup;
    }

    if (scheme && strcmp(scheme, "rediss") == 0) {
        fail(err, FTS_ERROR_CODE_UNSUPPORTED, text,
             "TLS (rediss://) is not supported by this build of ftsync: its hiredis has no TLS "
             "support; use redis:// (through a TLS tunnel if the network needs one)");
        goto cleanup;
    }
    if (!scheme || strcmp(scheme, "redis") != 0) {
        fail(err, FTS_ERROR_CODE_UNSUPPORTED, text, "unsupported scheme \"%s\" (expected %s)",
             scheme ? scheme : "", EXPECTED_FORM);
        goto cleanup;
    }

    /* libcurl keeps IPv6 brackets in the host; the resolver wants the bare address. */
    size_t host_len = host ? strlen(host) : 0;
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        fts_buffer_t bare = {0};
        fts_buffer_append(&bare, host + 1, host_len - 2);
        if (zone) {
            fts_buffer_appendf(&bare, "%%%s", zone);
        }
        url->host = fts_buffer_steal(&bare);
    } else {
        url->host = bson_strdup(host ? host : "");
    }
    if (url->host[0] == '\0' || is_unspecified_address(url->host)) {
        fail(err, FTS_ERROR_CODE_INVALID, text, "the host is missing (expected %s)", EXPECTED_FORM);
        goto cleanup;
    }

    url->port = FTS_REDIS_URL_DEFAULT_PORT;
    if (port) {
        /* libcurl has checked it is a decimal number up to 65535. */
        long value = strtol(port, NULL, 10);
        if (value < 1 || value > 65535) {
            fail(err, FTS_ERROR_CODE_INVALID, text, "port is not a number between 1 and 65535");
            goto cleanup;
        }
        url->port = (int)value;
    }

    if (!parse_db(path, &url->db)) {
        fail(err, FTS_ERROR_CODE_INVALID, text,
             "the database (the path) must be a non-negative integer, as in redis://host:6379/3");
        goto cleanup;
    }
    if (query) {
        fail(err, FTS_ERROR_CODE_INVALID, text,
             "query parameters are not supported (the database goes in the path: "
             "redis://host:6379/3)");
        goto cleanup;
    }
    if (fragment) {
        fail(err, FTS_ERROR_CODE_INVALID, text, "a fragment (#...) is not supported");
        goto cleanup;
    }

    /* "redis://:pw@host" gives an empty user: that is the default user. An empty password is
     * no password: Redis accepts none for AUTH. */
    if (user && *user) {
        url->user = bson_strdup(user);
    }
    if (password && *password) {
        url->password = bson_strdup(password);
    }
    if (url->user && !url->password) {
        fail(err, FTS_ERROR_CODE_INVALID, text,
             "a user needs a password (redis://user:password@host); for a password alone "
             "write redis://:password@host");
        goto cleanup;
    }

    url->masked = build_masked(handle, url);
    ok = true;

cleanup:
    curl_free(scheme);
    curl_free(user);
    if (password) {
        /* The decoded password leaves libcurl's copy here; do not leave it in freed memory. */
        memset(password, 0, strlen(password));
    }
    curl_free(password);
    curl_free(host);
    curl_free(zone);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(fragment);
    curl_url_cleanup(handle);
    if (!ok) {
        fts_redis_url_destroy(url);
        url = NULL;
    }
    return url;
}

void fts_redis_url_destroy(fts_redis_url_t *url)
{
    if (!url) {
        return;
    }
    if (url->password) {
        memset(url->password, 0, strlen(url->password));
    }
    bson_free(url->host);
    bson_free(url->user);
    bson_free(url->password);
    bson_free(url->masked);
    bson_free(url);
}

char *fts_redis_url_mask(const char *text)
{
    if (!text) {
        return bson_strdup("");
    }
    fts_redis_url_t *url = fts_redis_url_parse(text, NULL);
    if (!url) {
        return mask_as_written(text);
    }
    char *masked = bson_strdup(url->masked);
    fts_redis_url_destroy(url);
    return masked;
}
