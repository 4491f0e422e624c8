/*
 * permanent.h - failures that need an operator told apart from passing ones (README.md,
 * Operations): a wrong password, an API key of the wrong type, a URL that is not Elasticsearch,
 * a refused certificate. They are retried like any other failure (the operator may fix the
 * setting, or the server), but while one lasts /readyz answers 503 naming it, the metrics count
 * it (ftsync_permanent_errors_total{server,reason}, ftsync_permanent_error{server}) and the log
 * says "permanent (<reason>): ... (fix the setting X)" once per change of state, then once
 * a minute.
 *
 * The adapters mark these failures with the error codes below (or FTS_ERROR_CODE_AUTH); the
 * classification reads only domain, code and, for the API key's type and Redis's WRONGTYPE,
 * the server's message. Servers: Redis and Elasticsearch (load, extract's Redis calls), MongoDB
 * (extract).
 */
#ifndef FTS_PERMANENT_H
#define FTS_PERMANENT_H

#include <stddef.h>

#include "error.h"
#include "metrics.h"

/* Codes of the ES and Redis domains for permanent failures that have no shared code (domains
 * add theirs above 1000, error.h). */
#define FTS_ERROR_CODE_NOT_ELASTICSEARCH 1001 /* answered, but not as Elasticsearch/OpenSearch */
#define FTS_ERROR_CODE_TLS               1002 /* the server's certificate was refused */
/* A code of the MongoDB domain: the server refuses change streams (a standalone, 40573). */
#define FTS_ERROR_CODE_NOT_REPLICA_SET 1003

/* How often a permanent failure that has not changed is logged again. */
#define FTS_PERMANENT_LOG_EVERY_MS 60000

/* The reason an error needs an operator, or FTS_PERMANENT_NONE when it may pass by itself
 * (refused connections, timeouts, 5xx, 429...). err may be NULL (NONE). */
fts_permanent_reason_t fts_permanent_classify(const fts_error_t *err);

/* The same for an HTTP answer of Elasticsearch: 401 and 403 (auth, or api_key when the server
 * says the API key's type is wrong), a 2xx whose body is not JSON (not_elasticsearch). */
fts_permanent_reason_t fts_permanent_classify_http(long status, const char *body, size_t len);

/* Records the state of server in the installed metrics block and logs its changes: reason
 * NONE when the server just answered properly (ends a permanent state), another reason when a
 * call failed that way (counted each time). detail (may be NULL) is the failure as the adapter
 * described it, secrets masked. Process-wide state: call from one thread. */
void fts_permanent_report(fts_server_t server, fts_permanent_reason_t reason, const char *detail);

/* Reports err's state for server: a permanent reason, or nothing when err is transient (a
 * transient failure neither starts nor ends a permanent state). */
void fts_permanent_report_error(fts_server_t server, const fts_error_t *err);

#endif
