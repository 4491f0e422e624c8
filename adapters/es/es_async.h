/*
 * es_async.h - HTTP requests to Elasticsearch without blocking: libcurl's multi interface
 * driven by a libevent loop (socket and timer callbacks), so that several bulk requests are
 * in flight at once in one thread.
 *
 * Options, credentials, TLS, gzip and timeouts mean what they mean for the blocking client
 * (es_client.h). The same split of outcomes holds, which the loader relies on for invariant 2:
 * a request fails (err set, response NULL) only when no HTTP answer came; any HTTP status is
 * an answer for the caller to judge. When a node cannot be reached (connect refused or timed
 * out, nothing sent), that request fails and later requests go to the next configured URL;
 * a request is never re-sent here.
 */
#ifndef FTS_ES_ASYNC_H
#define FTS_ES_ASYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "es_client.h"

/* libevent's loop, forward-declared so that cmd/ need not include libevent. */
struct event_base;

typedef struct fts_es_async fts_es_async_t;

/* Called once per request, from the event loop (never from inside fts_es_async_request).
 * response is NULL when no answer came (err says why), else borrowed for the call. */
typedef void (*fts_es_async_done_fn)(void *arg, const fts_es_response_t *response,
                                     const fts_error_t *err);

/* A client on base (borrowed; it must outlive the client). Options as fts_es_client_new,
 * validated the same way; copied. */
fts_es_async_t *fts_es_async_new(struct event_base *base, const fts_es_options_t *options,
                                 fts_error_t *err);

/* Abandons every request in flight without calling their done functions, and frees the
 * client. Accepts NULL. */
void fts_es_async_destroy(fts_es_async_t *es);

/* Starts method path (as fts_es_request) with body (copied; may be NULL). done is called
 * exactly once, later, from the loop. Returns false only when the request could not even be
 * started (a bad method or path, libcurl refusing an option or the event loop refusing its
 * timer, a client being destroyed), with err set and done never called. done must be set
 * (asserted). Allocation failure aborts. */
bool fts_es_async_request(fts_es_async_t *es, const char *method, const char *path,
                          const char *content_type, const char *body, size_t body_len,
                          fts_es_async_done_fn done, void *arg, fts_error_t *err);

/* Requests started and not yet done. */
size_t fts_es_async_in_flight(const fts_es_async_t *es);

#endif
