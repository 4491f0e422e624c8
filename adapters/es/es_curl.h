/*
 * es_curl.h - what the blocking client (es_client.c) and the event-loop client (es_async.c)
 * share, so that both put the same request on the wire and judge its outcome the same way.
 * Private to adapters/es: nothing outside this directory includes it.
 *
 * A request goes through three steps kept apart on purpose: fts_es_call_build() makes what does
 * not depend on the node (headers, the gzipped body), fts_es_call_apply() puts it and one node's
 * URL on a curl easy handle, and the caller judges what the transfer gave with
 * fts_es_call_describe_failure(), fts_es_curl_error_code() and fts_es_handle_sent_nothing().
 * Only running the transfer differs: curl_easy_perform() in one client, the multi interface on
 * a libevent loop in the other.
 *
 * Invariants kept here for both clients: secrets (passwords with their Basic base64 form, API
 * keys) are registered with the logger before anything can fail and are wiped before their memory
 * is freed; node URLs are kept without their password, so that they can be shown in errors and
 * logs; a failed transfer that sent nothing is the only kind a client may fail over on (nothing
 * reached a node, so nothing can have been applied twice); no reply is held beyond its bound
 * (fts_es_reply_limit()).
 */
#ifndef FTS_ES_CURL_H
#define FTS_ES_CURL_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

#include "buffer.h"
#include "error.h"
#include "es_client.h"

/* One configured base URL. */
typedef struct {
    char *base;     /* normalised, without credentials or trailing '/'; safe to print */
    char *user;     /* from the URL, or NULL */
    char *password; /* from the URL, or NULL */
} fts_es_node_t;

/* Validates text with libcurl's URL parser and fills node. `label` names the setting in errors.
 * When masked is not NULL, it receives a copy (bson_free it) of the URL with its password (if any)
 * replaced by "***". On failure node is left cleared. */
bool fts_es_node_parse(const char *text, const char *label, fts_es_node_t *node, char **masked,
                       fts_error_t *err);
void fts_es_node_clear(fts_es_node_t *node);

/* The options of fts_es_options_t, validated and copied, with the defaults applied. */
typedef struct {
    fts_es_node_t *nodes;
    size_t node_count;
    char *user;
    char *password;
    char *api_key;
    char *ca_file;
    long connect_timeout_ms;
    long request_timeout_ms;
    bool gzip_requests;
    bool curl_initialised; /* curl_global_init() was called and must be balanced */
} fts_es_settings_t;

/* Validates options (naming a bad one in err) and copies them into settings, which it zeroes
 * first. Calls curl_global_init(). On failure settings is left cleaned up. */
bool fts_es_settings_init(fts_es_settings_t *settings, const fts_es_options_t *options,
                          fts_error_t *err);
/* Frees and wipes what settings holds. Accepts a zeroed (or already cleaned) value. */
void fts_es_settings_cleanup(fts_es_settings_t *settings);

/* What one request needs whichever node it goes to. method, path and the body given to
 * fts_es_call_build() are borrowed until fts_es_call_cleanup(); so is response. */
typedef struct {
    const char *method;
    const char *path;
    struct curl_slist *headers;
    fts_buffer_t gzipped;  /* the compressed body, when gzip_requests */
    const char *send_body; /* the bytes to send (body or gzipped.data), or NULL */
    size_t send_len;
    bool has_body;
    char *api_key_header; /* "Authorization: ApiKey ...", kept to be wiped */
    fts_es_response_t *response;
    size_t reply_limit; /* fts_es_reply_limit() of this request: a longer reply is cut off */
    CURL *handle;       /* the handle last applied (fts_es_call_apply), borrowed */
    bool response_too_large;
    char curl_message[CURL_ERROR_SIZE];
} fts_es_call_t;

/* The most a reply may hold before its transfer is aborted (the write callback returns 0,
 * the request fails as "no answer": nothing in it is used, so nothing is acknowledged, and the
 * caller retries). A reply is held whole in memory, so these bound a process's memory: see
 * README, Load, for the worst case per process.
 *
 * A _bulk reply has one item per action, so it is bounded by what it can be:
 * FTS_ES_BULK_REPLY_BASE_BYTES (the envelope, or an error replying to the whole request) plus
 * FTS_ES_BULK_REPLY_ITEM_BYTES per line of the request body (a line count bounds the action
 * count). An item holds an index name (at most 255 bytes), an id (at most 512), a status,
 * version and shard counts, and for a failed action an error whose type, reason and caused_by
 * chain Elasticsearch keeps short (values quoted in reasons are cut); 16 KiB is many times the
 * largest seen. Any other reply (server info, health, settings, a HEAD) is bounded by
 * FTS_ES_REPLY_MAX_BYTES. */
#define FTS_ES_BULK_REPLY_BASE_BYTES ((size_t)64 * 1024)
#define FTS_ES_BULK_REPLY_ITEM_BYTES ((size_t)16 * 1024)
#define FTS_ES_REPLY_MAX_BYTES       ((size_t)64 * 1024 * 1024)

/* The reply limit of a request to path with body (body_len bytes; may be NULL when 0). */
size_t fts_es_reply_limit(const char *path, const char *body, size_t body_len);

/* Checks method and path and builds the headers and the (possibly gzipped) body. On failure
 * call may hold allocations: fts_es_call_cleanup() it in every case. */
bool fts_es_call_build(fts_es_call_t *call, const fts_es_settings_t *settings, const char *method,
                       const char *path, const char *content_type, const char *body,
                       size_t body_len, fts_es_response_t *response, fts_error_t *err);
void fts_es_call_cleanup(fts_es_call_t *call);

/* Empties the response and curl's message before a transfer. */
void fts_es_call_reset(fts_es_call_t *call);

/* Puts everything of call, aimed at node, on a fresh or freshly reset handle. The handle then
 * points into call (headers, body, buffers) until it is reset or cleaned up. */
bool fts_es_call_apply(const fts_es_settings_t *settings, CURL *handle, fts_es_call_t *call,
                       const fts_es_node_t *node, fts_error_t *err);

/* Writes curl's view of a failed transfer: its detailed message when it gave one. */
void fts_es_call_describe_failure(const fts_es_call_t *call, CURLcode rc, char *out, size_t size);

/* The FTS_ERROR_CODE_* of a transfer that gave no answer: _TIMEOUT, _PROTOCOL (reply too large)
 * or _CONNECT. */
int fts_es_curl_error_code(CURLcode rc);

/* True when a finished transfer on handle sent no byte of its request, so failing over to
 * another node cannot make the request be applied twice. */
bool fts_es_handle_sent_nothing(CURL *handle);

/* Runs err's message through the logger's secret filter. curl's messages never see a password
 * (it is not in the URLs we give it), but an error must not be the one place a secret leaks. */
void fts_es_error_scrub(fts_error_t *err);

#endif
