/*
 * error.c - filling and decorating fts_error_t values (see error.h).
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool fts_error_set(fts_error_t *err, fts_error_domain_t domain, int code, const char *format, ...)
{
    if (!err) {
        return false;
    }
    err->domain = domain;
    err->code = code;
    va_list args;
    va_start(args, format);
    vsnprintf(err->message, sizeof err->message, format, args);
    va_end(args);
    return false;
}

bool fts_error_prefix(fts_error_t *err, const char *format, ...)
{
    if (!err) {
        return false;
    }
    char prefix[FTS_ERROR_MESSAGE_SIZE];
    va_list args;
    va_start(args, format);
    vsnprintf(prefix, sizeof prefix, format, args);
    va_end(args);

    /* Room for both parts, so the compiler can see nothing is cut until the final copy. */
    char combined[2 * FTS_ERROR_MESSAGE_SIZE + 2];
    snprintf(combined, sizeof combined, "%s: %s", prefix, err->message);
    memcpy(err->message, combined, sizeof err->message - 1);
    err->message[sizeof err->message - 1] = '\0';
    return false;
}

void fts_error_clear(fts_error_t *err)
{
    if (err) {
        memset(err, 0, sizeof *err);
    }
}

const char *fts_error_domain_name(fts_error_domain_t domain)
{
    switch (domain) {
    case FTS_ERROR_NONE:
        return "none";
    case FTS_ERROR_CONFIG:
        return "config";
    case FTS_ERROR_SYSTEM:
        return "system";
    case FTS_ERROR_INPUT:
        return "input";
    case FTS_ERROR_REDIS:
        return "redis";
    case FTS_ERROR_ES:
        return "es";
    case FTS_ERROR_MONGO:
        return "mongo";
    case FTS_ERROR_INTERNAL:
        return "internal";
    }
    return "unknown";
}

_Noreturn void fts_fatal_oom(const char *what)
{
    fprintf(stderr, "ftsync: out of memory (%s)\n", what);
    abort();
}
