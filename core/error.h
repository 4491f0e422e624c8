/*
 * error.h - the error value every fallible ftsync function fills.
 *
 * Following mongo-c-driver: a function returns bool (or a pointer, NULL on failure) and fills a
 * caller-owned fts_error_t given as its last argument. The error names a domain (which part of
 * ftsync or which server said no), a code within it, and a human-readable message that must say
 * what was wrong and, where there is one, which setting or server was involved.
 */
#ifndef FTS_ERROR_H
#define FTS_ERROR_H

#include <stdbool.h>
#include <stdint.h>

/* Large enough for a server's message plus our context; longer messages are truncated. */
#define FTS_ERROR_MESSAGE_SIZE 512

typedef enum {
    FTS_ERROR_NONE = 0,
    FTS_ERROR_CONFIG,  /* a setting is missing or has a bad value */
    FTS_ERROR_SYSTEM,  /* an operating-system call failed; code is errno */
    FTS_ERROR_INPUT,   /* a document, file or argument could not be parsed */
    FTS_ERROR_REDIS,   /* Redis refused or could not be reached */
    FTS_ERROR_ES,      /* Elasticsearch refused or could not be reached */
    FTS_ERROR_MONGO,   /* MongoDB refused or could not be reached */
    FTS_ERROR_INTERNAL /* a broken promise inside ftsync */
} fts_error_domain_t;

/* Codes shared by the adapters; a domain may add its own above 1000 (or use the server's). */
typedef enum {
    FTS_ERROR_CODE_NONE = 0,
    FTS_ERROR_CODE_INVALID = 1,     /* the value given is malformed */
    FTS_ERROR_CODE_MISSING = 2,     /* something required is absent */
    FTS_ERROR_CODE_IO = 3,          /* reading or writing failed */
    FTS_ERROR_CODE_CONNECT = 4,     /* the server could not be reached */
    FTS_ERROR_CODE_TIMEOUT = 5,     /* the server did not answer in time */
    FTS_ERROR_CODE_AUTH = 6,        /* the server refused our credentials */
    FTS_ERROR_CODE_SERVER = 7,      /* the server answered with an error */
    FTS_ERROR_CODE_PROTOCOL = 8,    /* the server's answer made no sense */
    FTS_ERROR_CODE_NO_MEMORY = 9,   /* allocation failed (only ever logged: fts_fatal_oom) */
    FTS_ERROR_CODE_UNSUPPORTED = 10 /* asked for something this build or server cannot do */
} fts_error_code_t;

typedef struct {
    fts_error_domain_t domain;
    int code;
    char message[FTS_ERROR_MESSAGE_SIZE];
} fts_error_t;

/* Fills err (which may be NULL) with a printf-style message. Always returns false, so that a
 * failure path can read `return fts_error_set(err, ...);`. */
bool fts_error_set(fts_error_t *err, fts_error_domain_t domain, int code, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* Puts "context: " in front of err's message, keeping domain and code. Returns false. */
bool fts_error_prefix(fts_error_t *err, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

void fts_error_clear(fts_error_t *err);

/* The domain's name as it appears in logs: "config", "redis", "es"... */
const char *fts_error_domain_name(fts_error_domain_t domain);

/* Out of memory is fatal (README, Failure policy): logs what could not be allocated and
 * aborts; the supervisor restarts the process, and nothing unconfirmed was acknowledged. */
_Noreturn void fts_fatal_oom(const char *what);

#endif
