/*
 * redis_url.h - reading a redis:// URL into the parts a connection needs, and showing it safely.
 *
 * Accepted form: redis://[[user]:password@]host[:port][/db], host a name, an IPv4 address or a
 * bracketed IPv6 address ("[::1]"), port 6379 and db 0 when left out. User and password are
 * percent-decoded ("p%40ss" is "p@ss"). Parsing is done by libcurl's URL API, so that ftsync
 * reads a URL exactly as the rest of the world does.
 *
 * Invariants:
 *   - no error message and no masked form ever contains the password: wherever a URL is shown
 *     its password is replaced by "***", even for a URL too malformed to parse;
 *   - a parsed URL is complete: host, port (1-65535) and db (>= 0) are always set.
 * rediss:// (TLS) is refused with a clear error: the hiredis this build uses has no TLS.
 */
#ifndef FTS_REDIS_URL_H
#define FTS_REDIS_URL_H

#include "error.h"

/* The port Redis listens on unless told otherwise. */
#define FTS_REDIS_URL_DEFAULT_PORT 6379

typedef struct {
    char *host;     /* without IPv6 brackets, with "%zone" for a scoped IPv6 address */
    int port;       /* 1-65535 */
    int db;         /* the database SELECTed after connecting; >= 0 */
    char *user;     /* decoded ACL user, NULL for the default user */
    char *password; /* decoded, NULL when none; never print it */
    char *masked;   /* the URL in full form with the password as "***", for logs */
} fts_redis_url_t;

/* Parses text. On failure returns NULL and fills err (domain CONFIG, code MISSING, INVALID or
 * UNSUPPORTED) with a message such as
 *   invalid Redis URL "redis://:***@host:99999/0": port is not a number between 1 and 65535
 * The caller puts the setting's name in front (fts_error_prefix). */
fts_redis_url_t *fts_redis_url_parse(const char *text, fts_error_t *err);

void fts_redis_url_destroy(fts_redis_url_t *url);

/* Returns text with its password replaced by "***" (bson_free() it), for logs and `ftsync
 * config`. A URL that parses comes back in full form ("redis://user:***@host:6379/0"); one that
 * does not comes back as written but with everything that could be a password masked. Never
 * NULL: allocation failure aborts. */
char *fts_redis_url_mask(const char *text);

#endif
