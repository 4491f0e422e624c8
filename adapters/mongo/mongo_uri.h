/*
 * mongo_uri.h - checking and masking MongoDB connection strings with libmongoc's own parser.
 */
#ifndef FTS_MONGO_URI_H
#define FTS_MONGO_URI_H

#include <stdbool.h>

#include "error.h"

/* Checks uri as libmongoc would parse it. On success, when masked is not NULL, sets *masked to
 * a malloc'd copy with the password replaced by "***" (a copy of uri if it has none) and
 * registers the password with the logger. Error messages never contain the password. */
bool fts_mongo_uri_check(const char *uri, char **masked, fts_error_t *err);

#endif
