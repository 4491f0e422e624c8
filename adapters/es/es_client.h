/*
 * es_client.h - talking HTTP to Elasticsearch or OpenSearch.
 *
 * One client holds the configured base URLs, credentials and timeouts, and one libcurl handle
 * whose connection cache keeps the connection to the node alive between requests. When a node
 * cannot be reached and nothing of the request was sent, the next configured URL is tried, so a
 * request is never sent twice because of failover; retrying after an error is the caller's
 * choice (with core/backoff.h).
 *
 * The split of outcomes is what the load path relies on to keep invariant 2 (see README.md,
 * Architecture): fts_es_request() fails only when no HTTP answer came; any HTTP status, 4xx and 5xx
 * included, is an answer the caller must judge. Credentials never appear in errors or logs:
 * passwords and API keys are registered with the logger (a password with the base64 of
 * user:password that Basic authentication sends, fts_log_add_basic_credentials()), and URLs are
 * shown without their password. A reply is held whole, so its size is bounded (es_curl.h).
 */
#ifndef FTS_ES_CLIENT_H
#define FTS_ES_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "buffer.h"
#include "error.h"

typedef struct {
    /* Base URLs, http or https, e.g. http://127.0.0.1:9200 or https://es.example:9200/prefix.
     * Several: the next one is tried when a node cannot be reached. Copied by the client. */
    const char *const *urls;
    size_t url_count;
    /* Basic auth. When user is NULL, credentials written in a URL (http://user:pass@host)
     * are used for that URL. */
    const char *user;
    const char *password;
    /* Sent as "Authorization: ApiKey <api_key>"; exclusive with user/password. */
    const char *api_key;
    /* A CA bundle (PEM) to verify the servers' certificates with, instead of the system's. */
    const char *ca_file;
    /* 0 picks the default (FTS_ES_DEFAULT_CONNECT_TIMEOUT_MS, FTS_ES_DEFAULT_REQUEST_TIMEOUT_MS).
     */
    long connect_timeout_ms;
    long request_timeout_ms;
    /* Compress request bodies with gzip (Content-Encoding: gzip); bulk bodies shrink ~10x. */
    bool gzip_requests;
} fts_es_options_t;

/* Defaults for the timeouts left at 0: a node that does not accept a connection within 5 s is
 * treated as down; a bulk request may legitimately take tens of seconds on a busy cluster. */
#define FTS_ES_DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define FTS_ES_DEFAULT_REQUEST_TIMEOUT_MS 60000L

typedef struct fts_es_client fts_es_client_t;

/* Checks one base URL as fts_es_client_new() would (for configuration checks). On success, when
 * masked is not NULL, sets *masked to a copy (bson_free it) with the password replaced by "***",
 * and registers the password with the logger. Error messages never contain the password. */
bool fts_es_url_check(const char *url, char **masked, fts_error_t *err);

/* Validates the options (every URL with libcurl's URL parser: http or https, a host, no query
 * or fragment) and makes a client. The options' strings are copied. NULL and err filled on a
 * bad option, naming it (a URL is named without its password). */
fts_es_client_t *fts_es_client_new(const fts_es_options_t *options, fts_error_t *err);
void fts_es_client_destroy(fts_es_client_t *client);

/* The base URL requests go to first (the last one that answered), without its password. Owned
 * by the client. */
const char *fts_es_client_current_url(const fts_es_client_t *client);

/* One HTTP answer. Zero-initialise it (or call fts_es_response_init) before the first use;
 * fts_es_request() empties it before filling it, so one value can be reused. */
typedef struct {
    long status;       /* HTTP status code */
    fts_buffer_t body; /* the (decompressed) body; body.data may be NULL when it was empty */
} fts_es_response_t;

void fts_es_response_init(fts_es_response_t *response);
void fts_es_response_cleanup(fts_es_response_t *response);

/* Sends method (GET, HEAD, PUT, POST, DELETE...) to path (starting with '/', already escaped,
 * appended to the base URL) with an optional body (body_len bytes; content_type defaults to
 * application/json when there is a body). Returns true when an HTTP answer came, whatever its
 * status; false only when none did (refused, timed out, TLS failure...), with err naming the
 * URL and curl's message (FTS_ERROR_ES with FTS_ERROR_CODE_CONNECT or _TIMEOUT). */
bool fts_es_request(fts_es_client_t *client, const char *method, const char *path,
                    const char *content_type, const char *body, size_t body_len,
                    fts_es_response_t *response, fts_error_t *err);

typedef enum {
    FTS_ES_DISTRIBUTION_ELASTICSEARCH = 0,
    FTS_ES_DISTRIBUTION_OPENSEARCH
} fts_es_distribution_t;

typedef struct {
    char version[32]; /* version.number, e.g. "8.11.1" */
    int major;
    int minor;
    fts_es_distribution_t distribution;
    char cluster_name[128];
} fts_es_server_info_t;

/* GET / : which server this is. An HTTP error or a reply without version.number is an error
 * (FTS_ERROR_ES; _AUTH for 401/403, _SERVER for other statuses, _PROTOCOL for a bad reply). */
bool fts_es_server_info(fts_es_client_t *client, fts_es_server_info_t *out, fts_error_t *err);

typedef enum {
    FTS_ES_HEALTH_GREEN = 0,
    FTS_ES_HEALTH_YELLOW,
    FTS_ES_HEALTH_RED
} fts_es_health_status_t;

typedef struct {
    fts_es_health_status_t status;
    int number_of_nodes;
    int number_of_data_nodes; /* -1 when the reply did not say */
    char cluster_name[128];
} fts_es_health_t;

/* GET /_cluster/health. Errors as for fts_es_server_info. */
bool fts_es_cluster_health(fts_es_client_t *client, fts_es_health_t *out, fts_error_t *err);

const char *fts_es_health_status_name(fts_es_health_status_t status);
const char *fts_es_distribution_name(fts_es_distribution_t distribution);

#endif
