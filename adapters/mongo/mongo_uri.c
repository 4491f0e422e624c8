/*
 * mongo_uri.c - MongoDB connection strings checked by libmongoc (see mongo_uri.h).
 *
 * The connection-string spec requires ':', '/', '?', '#', '[', ']' and '@' to be
 * percent-encoded inside the user name and password, so once libmongoc has accepted a URI its
 * password is exactly the text between the first ':' after "://" and the last '@' before the
 * host list; that is what gets masked.
 */
#include "mongo_uri.h"

#include <mongoc/mongoc.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "log.h"

/* Finds the raw (still percent-encoded) password inside uri; false when there is none. */
static bool find_password(const char *uri, size_t *start, size_t *len)
{
    const char *scheme_end = strstr(uri, "://");
    if (!scheme_end) {
        return false;
    }
    const char *authority = scheme_end + 3;
    size_t authority_len = strcspn(authority, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < authority_len; i++) {
        if (authority[i] == '@') {
            at = authority + i;
        }
    }
    if (!at) {
        return false;
    }
    const char *colon = memchr(authority, ':', (size_t)(at - authority));
    if (!colon) {
        return false;
    }
    *start = (size_t)(colon + 1 - uri);
    *len = (size_t)(at - colon - 1);
    return true;
}

static char *mask_password(const char *uri)
{
    size_t start, len;
    fts_buffer_t masked = {0};
    if (find_password(uri, &start, &len)) {
        fts_buffer_append(&masked, uri, start);
        fts_buffer_append_str(&masked, "***");
        fts_buffer_append_str(&masked, uri + start + len);
    } else {
        fts_buffer_append_str(&masked, uri);
    }
    return fts_buffer_steal(&masked);
}

bool fts_mongo_uri_check(const char *uri, char **masked, fts_error_t *err)
{
    bson_error_t parse_error;
    mongoc_uri_t *parsed = mongoc_uri_new_with_error(uri, &parse_error);
    char *shown = mask_password(uri);
    if (!parsed) {
        /* libmongoc may quote parts of the URI; never let the password through. */
        size_t start, len;
        char message[sizeof parse_error.message];
        snprintf(message, sizeof message, "%s", parse_error.message);
        if (find_password(uri, &start, &len) && len >= 3) {
            char *password = strndup(uri + start, len);
            char *found = password ? strstr(message, password) : NULL;
            if (found) {
                snprintf(found, sizeof message - (size_t)(found - message), "***");
            }
            free(password);
        }
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "invalid MongoDB URI \"%s\": %s", shown, message);
        free(shown);
        return false;
    }
    const char *password = mongoc_uri_get_password(parsed);
    if (password) {
        fts_log_add_secret(password);
    }
    size_t start, len;
    if (find_password(uri, &start, &len) && len >= 3) {
        char *raw = strndup(uri + start, len);
        fts_log_add_secret(raw);
        free(raw);
    }
    mongoc_uri_destroy(parsed);
    if (masked) {
        *masked = shown;
    } else {
        free(shown);
    }
    return true;
}
