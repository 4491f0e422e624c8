/*
 * es_json.h - reading Elasticsearch's JSON replies, without any I/O.
 *
 * Kept apart from the HTTP client so that unit tests can feed recorded replies of every server
 * generation (ES 1.x, 7.x, 8.x, OpenSearch) to the same code the client runs. JSON is parsed
 * with libbson only. A reply that is not what was expected becomes an error that quotes a
 * truncated, single-line part of it, so an operator can see what the server really said.
 */
#ifndef FTS_ES_JSON_H
#define FTS_ES_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "es_client.h"

/* How much of a reply an error message quotes: enough to recognise it, short enough to leave
 * room for the context in FTS_ERROR_MESSAGE_SIZE. */
#define FTS_ES_QUOTE_MAX 200

/* An error reply, in either shape:
 *   ES 2.x and later, OpenSearch: {"error":{"type":"...","reason":"...","caused_by":{...}},...}
 *   ES 1.x:                       {"error":"IndexAlreadyExistsException[[x] already exists]",...}
 * For the 1.x shape, type is the exception name in front of the first '[' (may be empty) and
 * reason the whole string. */
typedef struct {
    char type[128];
    char reason[256];
    char caused_by[256]; /* "type: reason" of error.caused_by, or empty */
} fts_es_error_reply_t;

/* Fills out when body is an Elasticsearch error reply; false (out emptied) when it is not. */
bool fts_es_error_reply_parse(const char *body, size_t len, fts_es_error_reply_t *out);

/* Writes a single-line quotation of body into out: control characters become spaces, and a
 * body longer than FTS_ES_QUOTE_MAX bytes is cut (on a UTF-8 character boundary) and marked
 * "...(N bytes)". An empty body is written as "(empty body)". */
void fts_es_body_quote(const char *body, size_t len, char *out, size_t size);

/* Describes a reply for an error message: "HTTP 400: type: reason (caused by ...)" for an
 * Elasticsearch error reply, "HTTP 502: <quoted body>" for anything else. */
void fts_es_reply_describe(long status, const char *body, size_t len, char *out, size_t size);

/* Fills err for a reply that the caller cannot accept: FTS_ERROR_ES, code _AUTH for 401 and
 * 403, _SERVER otherwise; the message is "<what>: <description>". Always returns false. */
bool fts_es_reply_fail(fts_error_t *err, const char *what, long status, const char *body,
                       size_t len);

/* Parses the reply of GET / . version.number is required; version.distribution
 * ("opensearch") tells OpenSearch from Elasticsearch, which has no such field. */
bool fts_es_server_info_parse(const char *body, size_t len, fts_es_server_info_t *out,
                              fts_error_t *err);

/* Parses the reply of GET /_cluster/health: status and number_of_nodes are required. */
bool fts_es_health_parse(const char *body, size_t len, fts_es_health_t *out, fts_error_t *err);

#endif
