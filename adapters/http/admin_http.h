/*
 * admin_http.h - the admin HTTP endpoint of every long-running process (extract, load, run):
 * libevent's evhttp on FTSYNC_ADMIN_ADDR, served from a thread of its own with its own
 * event_base, so that extract's synchronous loops and load's event loop never wait for it and
 * it never waits for them.
 *
 *   GET /healthz  200 {"status":"ok"} while the process makes progress; 503
 *                 {"status":"unhealthy","reason":"..."} otherwise (fts_health_check)
 *   GET /readyz   200 {"status":"ready"} when connected to what it needs; 503
 *                 {"status":"not ready","reason":"..."} (fts_ready_check)
 *   GET /metrics  Prometheus text exposition 0.0.4 (fts_metrics_render)
 *   GET /status   the JSON of `ftsync status --json`, through the status callback; 501
 *                 {"status":"unavailable","reason":"not built in this branch"} without one
 *   anything else 404; methods other than GET and HEAD 405 (with Allow: GET, HEAD)
 *
 * Read-only: no request changes anything. No secret ever appears: what is served is numbers,
 * fixed words and reasons built from them (never a URL, password or server message).
 */
#ifndef FTS_ADMIN_HTTP_H
#define FTS_ADMIN_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "metrics.h"

/* Extra checks of /healthz (ready false) and /readyz (ready true), run on the server thread
 * after the block's own: `ftsync run` adds "the child is running". true: fine; false with
 * reason. */
typedef bool (*fts_admin_check_fn)(void *context, bool ready, char *reason, size_t reason_size);

/* The JSON of `ftsync status --json` (blocking; runs on the server thread). true with *json
 * (bson_malloc'd, freed by the server) when everything was read; false with *json possibly
 * set (what could be read, served with 503) or NULL and err. */
typedef bool (*fts_admin_status_fn)(void *context, char **json, fts_error_t *err);

typedef struct {
    const char *address;      /* host:port ([v6]:port); port 0 picks a free one */
    fts_metrics_t *metrics;   /* borrowed; must outlive the server */
    unsigned roles;           /* FTS_METRICS_ROLE_*: which families and checks */
    uint64_t stall_ms;        /* FTSYNC_HEALTH_STALL_MS */
    fts_admin_check_fn check; /* NULL: none */
    void *check_context;
    fts_admin_status_fn status; /* NULL: /status answers 501 */
    void *status_context;
} fts_admin_options_t;

typedef struct fts_admin_server fts_admin_server_t;

/* Binds options->address and starts serving on a new thread (signals blocked in it). NULL
 * with err (FTS_ERROR_SYSTEM) when the address cannot be bound: nothing else is started. The
 * strings in options are copied. */
fts_admin_server_t *fts_admin_server_start(const fts_admin_options_t *options, fts_error_t *err);

/* The port bound (the one picked when the address said 0). */
int fts_admin_server_port(const fts_admin_server_t *server);

/* Stops serving, joins the thread, frees. Accepts NULL. */
void fts_admin_server_stop(fts_admin_server_t *server);

#endif
