/*
 * cmd_load.c - `ftsync load`: one consumer of the group `loaders`, bulk-indexing the action
 * stream into Elasticsearch (the logic is core/load.c; this file wires it to libevent, the
 * asynchronous Redis consumer group and the asynchronous Elasticsearch client).
 *
 * Start-up, in order: the configuration (exit 2 on any problem); Elasticsearch answers and its
 * version agrees with FTSYNC_ES_DOC_TYPE (a typed action sent to a typeless cluster, or the
 * reverse, would be refused item by item and dead-letter everything: exit 2 instead); the index
 * exists (created from its definition when missing) and was not written with another version
 * scheme (exit 2, core/action.h); a warning when index.gc_deletes is shorter
 * than a replay can be late (invariant 3). A server that does not answer yet is waited for with
 * backoff, so that a loader started before Elasticsearch simply waits; so is one that refuses
 * the credentials or is not Elasticsearch, shown by /readyz as permanent (core/permanent.h)
 * until the operator fixes it. Then one event loop runs
 * until SIGTERM or SIGINT, after which in-flight requests get FTSYNC_STOP_TIMEOUT_MS to finish
 * and the process exits 0; whatever was not acknowledged stays pending in the group.
 * Drops and sweeps (core/load.c) use the same loop: their barrier is a query on the group's
 * connection, their scroll pages and deletes go through the same asynchronous client as the
 * bulks, and the server's version picks how a scroll id is sent (bare before 2.0).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bson/bson.h>

#include "action.h"
#include "backoff.h"
#include "clock.h"
#include "admin.h"
#include "cmd.h"
#include "es_async.h"
#include "es_index.h"
#include "event_loop.h"
#include "load.h"
#include "log.h"
#include "permanent.h"
#include "redis_group.h"
#include "redis_queue.h"
#include "signals.h"

#define LOG_COMPONENT "load"

/* How often the loader logs its counters while it has work. */
#define PROGRESS_INTERVAL_MS 30000

/* Room for a consumer name: a host name (at most 255 bytes) and a pid. */
#define CONSUMER_NAME_SIZE 300

typedef struct {
    fts_event_loop_t *loop;
    fts_event_timer_t *timer;
    fts_event_watch_t *stop_watch;
    fts_loader_t *loader;
    fts_redis_group_t *group;
    fts_es_async_t *es;
    void *settle_token; /* the loader has one settle outstanding at most */
} driver_t;

/* One bulk request (or, with sweep set, a drop's or sweep's request) in flight: its driver
 * and the loader's token. */
typedef struct {
    driver_t *driver;
    void *token;
    bool sweep;      /* completes with fts_loader_request_done, not fts_loader_bulk_done */
    fts_error_t err; /* for a request that could not even start */
} bulk_call_t;

/* Exit status for a start-up failure: only a bad setting is "bad configuration". */
static int exit_status_for(const fts_error_t *err)
{
    return err->domain == FTS_ERROR_CONFIG ? FTS_EXIT_USAGE : FTS_EXIT_FAILURE;
}

/* ---- adapter outcomes into the loader ---- */

static void on_group(void *arg, const fts_error_t *err)
{
    driver_t *driver = arg;
    fts_loader_group_done(driver->loader, err);
}

static void on_read(void *arg, const fts_stream_entry_t *entries, size_t count,
                    const char *next_cursor, uint64_t deleted, const fts_error_t *err)
{
    (void)next_cursor;
    (void)deleted;
    driver_t *driver = arg;
    fts_loader_read_done(driver->loader, entries, count, err);
}

static void on_claim(void *arg, const fts_stream_entry_t *entries, size_t count,
                     const char *next_cursor, uint64_t deleted, const fts_error_t *err)
{
    driver_t *driver = arg;
    fts_loader_claim_done(driver->loader, entries, count, next_cursor, deleted, err);
}

static void on_touch(void *arg, const fts_error_t *err)
{
    driver_t *driver = arg;
    fts_loader_touch_done(driver->loader, err);
}

static void on_mark(void *arg, const fts_error_t *err)
{
    driver_t *driver = arg;
    fts_loader_mark_done(driver->loader, err);
}

static void on_settle(void *arg, const fts_error_t *err)
{
    driver_t *driver = arg;
    fts_loader_settle_done(driver->loader, driver->settle_token, err);
}

static void on_bulk(void *arg, const fts_es_response_t *response, const fts_error_t *err)
{
    bulk_call_t *call = arg;
    driver_t *driver = call->driver;
    void *token = call->token;
    bool sweep = call->sweep;
    bson_free(call);
    long status = response ? response->status : 0;
    const char *body = response ? response->body.data : NULL;
    size_t len = response ? response->body.len : 0;
    if (sweep) {
        fts_loader_request_done(driver->loader, token, status, body, len, response ? NULL : err);
    } else {
        fts_loader_bulk_done(driver->loader, token, status, body, len, response ? NULL : err);
    }
}

/* A request that could not start still completes from the loop, as the port promises. */
static void on_bulk_not_started(void *arg)
{
    bulk_call_t *call = arg;
    driver_t *driver = call->driver;
    void *token = call->token;
    bool sweep = call->sweep;
    fts_error_t err = call->err;
    bson_free(call);
    if (sweep) {
        fts_loader_request_done(driver->loader, token, 0, NULL, 0, &err);
    } else {
        fts_loader_bulk_done(driver->loader, token, 0, NULL, 0, &err);
    }
}

static void on_barrier(void *arg, bool clear, const fts_error_t *err)
{
    driver_t *driver = arg;
    fts_loader_barrier_done(driver->loader, clear, err);
}

static void on_timer(void *arg)
{
    driver_t *driver = arg;
    fts_loader_wake(driver->loader);
}

static void on_stop_signal(void *arg)
{
    driver_t *driver = arg;
    fts_log(FTS_LOG_INFO, LOG_COMPONENT, "signal %d: stopping", fts_signals_stop_signal());
    /* The stop pipe stays readable: listen once. */
    fts_event_watch_stop(driver->stop_watch);
    fts_loader_stop(driver->loader);
}

/* ---- ports ---- */

static void port_ensure_group(void *context)
{
    driver_t *driver = context;
    fts_redis_group_ensure(driver->group, on_group, driver);
}

static void port_read(void *context, const char *start_id, size_t count)
{
    driver_t *driver = context;
    fts_redis_group_read(driver->group, start_id, count, on_read, driver);
}

static void port_claim(void *context, const char *cursor, size_t count)
{
    driver_t *driver = context;
    fts_redis_group_claim(driver->group, cursor, count, on_claim, driver);
}

static void port_touch(void *context, const char *const *ids, size_t count)
{
    driver_t *driver = context;
    fts_redis_group_touch(driver->group, ids, count, on_touch, driver);
}

static void port_mark(void *context, const char *const *ids, const uint64_t *counts, size_t count)
{
    driver_t *driver = context;
    fts_redis_group_mark(driver->group, ids, counts, count, on_mark, driver);
}

static void port_settle(void *context, const fts_settlement_t *settlement, void *token)
{
    driver_t *driver = context;
    driver->settle_token = token;
    fts_redis_group_settle(driver->group, settlement, on_settle, driver);
}

static void port_bulk(void *context, const char *body, size_t len, void *token)
{
    driver_t *driver = context;
    bulk_call_t *call = bson_malloc0(sizeof *call);
    call->driver = driver;
    call->token = token;
    if (!fts_es_async_request(driver->es, "POST", "/_bulk", "application/x-ndjson", body, len,
                              on_bulk, call, &call->err)) {
        fts_event_loop_defer(driver->loop, on_bulk_not_started, call);
    }
}

static void port_barrier(void *context, const char *id)
{
    driver_t *driver = context;
    fts_redis_group_barrier(driver->group, id, on_barrier, driver);
}

/* A drop's or sweep's request, on the same asynchronous client and loop as the bulks. */
static void port_request(void *context, const char *method, const char *path,
                         const char *content_type, const char *body, size_t len, void *token)
{
    driver_t *driver = context;
    bulk_call_t *call = bson_malloc0(sizeof *call);
    call->driver = driver;
    call->token = token;
    call->sweep = true;
    if (!fts_es_async_request(driver->es, method, path, content_type, len ? body : NULL, len,
                              on_bulk, call, &call->err)) {
        fts_event_loop_defer(driver->loop, on_bulk_not_started, call);
    }
}

static void port_wake_after(void *context, uint64_t delay_ms)
{
    driver_t *driver = context;
    fts_event_timer_arm(driver->timer, delay_ms);
}

static uint64_t port_now_ms(void *context)
{
    (void)context;
    return fts_clock_monotonic_ms();
}

static void port_finished(void *context)
{
    driver_t *driver = context;
    fts_event_loop_break(driver->loop);
}

/* The loader's port, driven by this file's event loop. */
static const fts_load_ops_t driver_ops = {
    .ensure_group = port_ensure_group,
    .read = port_read,
    .claim = port_claim,
    .touch = port_touch,
    .mark = port_mark,
    .settle = port_settle,
    .bulk = port_bulk,
    .barrier = port_barrier,
    .request = port_request,
    .wake_after = port_wake_after,
    .now_ms = port_now_ms,
    .finished = port_finished,
};

/* ---- start-up ---- */

void fts_cmd_consumer_name(const fts_config_t *config, char *name, size_t size)
{
    if (config->consumer_name) {
        snprintf(name, size, "%s", config->consumer_name);
        return;
    }
    /* Inside Kubernetes the host name is the pod name: stable across container restarts, so a
     * restarted loader re-reads its own pending entries instead of waiting for a claim. */
    const char *pod = getenv("KUBERNETES_SERVICE_HOST") ? getenv("HOSTNAME") : NULL;
    if (pod && *pod) {
        snprintf(name, size, "%s", pod);
        return;
    }
    char host[256] = "host";
    if (gethostname(host, sizeof host) != 0) {
        snprintf(host, sizeof host, "host");
    }
    host[sizeof host - 1] = '\0';
    snprintf(name, size, "%s-%ld", host, (long)getpid());
}

/* Waits (with backoff, until a stop) for Elasticsearch to answer GET /. */
static bool wait_for_server(fts_es_client_t *client, const fts_config_t *config,
                            fts_es_server_info_t *info, fts_error_t *err)
{
    fts_backoff_t backoff;
    fts_backoff_init(&backoff, (uint64_t)config->retry_base_ms, (uint64_t)config->retry_max_ms, 0);
    while (!fts_es_server_info(client, info, err)) {
        /* A failure that needs an operator is retried too (they may fix it while we wait),
         * but shown by /readyz and logged as permanent (permanent.h), not as "not yet". */
        uint64_t delay = fts_backoff_next_ms(&backoff);
        if (fts_permanent_classify(err) != FTS_PERMANENT_NONE) {
            fts_permanent_report_error(FTS_SERVER_ELASTICSEARCH, err);
        } else {
            fts_log(FTS_LOG_WARN, "es",
                    "Elasticsearch does not answer yet, retrying in %" PRIu64 " ms: %s", delay,
                    err->message);
        }
        if (!fts_signals_sleep_ms((unsigned long)delay)) {
            return false;
        }
    }
    fts_permanent_report(FTS_SERVER_ELASTICSEARCH, FTS_PERMANENT_NONE, NULL);
    return true;
}

/* The document type setting must fit the cluster, or every action would be refused. */
static bool check_doc_type(const fts_config_t *config, const fts_es_server_info_t *info,
                           fts_error_t *err)
{
    bool typeless = info->distribution == FTS_ES_DISTRIBUTION_OPENSEARCH || info->major >= 7;
    /* OpenSearch 1.x kept Elasticsearch 7.10's deprecated types; OpenSearch 2.0 removed them. */
    bool types_gone =
        info->distribution == FTS_ES_DISTRIBUTION_OPENSEARCH ? info->major >= 2 : info->major >= 8;
    const char *who = fts_es_distribution_name(info->distribution);
    if (!typeless && !config->es_doc_type) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                             "FTSYNC_ES_DOC_TYPE is not set, but %s %s needs a document type "
                             "in every action (set it to the type of the index's mapping, "
                             "e.g. doc)",
                             who, info->version);
    }
    if (types_gone && config->es_doc_type) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "FTSYNC_ES_DOC_TYPE is set to \"%s\", but %s %s has no document "
                             "types: unset it",
                             config->es_doc_type, who, info->version);
    }
    return true;
}

/* Ensures the index, retrying while Elasticsearch fails (not while the set-up is wrong). */
static bool ensure_index(fts_es_client_t *client, const fts_config_t *config, fts_error_t *err)
{
    fts_es_index_spec_t spec = {.index = config->es_index,
                                .alias = config->es_alias,
                                .definition_path = config->es_index_definition,
                                .doc_type = config->es_doc_type};
    fts_backoff_t backoff;
    fts_backoff_init(&backoff, (uint64_t)config->retry_base_ms, (uint64_t)config->retry_max_ms, 0);
    while (!fts_es_index_ensure(client, &spec, NULL, err)) {
        if (err->domain != FTS_ERROR_ES || err->code == FTS_ERROR_CODE_AUTH ||
            err->code == FTS_ERROR_CODE_MISSING) {
            return false;
        }
        uint64_t delay = fts_backoff_next_ms(&backoff);
        fts_log(FTS_LOG_WARN, "es", "cannot ensure index %s yet, retrying in %" PRIu64 " ms: %s",
                config->es_index, delay, err->message);
        if (!fts_signals_sleep_ms((unsigned long)delay)) {
            return false;
        }
    }
    return true;
}

static void warn_about_gc_deletes(fts_es_client_t *client, const fts_config_t *config)
{
    const char *name = config->es_alias ? config->es_alias : config->es_index;
    uint64_t gc_deletes_ms = 0;
    fts_error_t err;
    if (!fts_es_index_gc_deletes_ms(client, name, &gc_deletes_ms, &err)) {
        fts_log(FTS_LOG_WARN, "es", "cannot read index.gc_deletes of %s: %s", name, err.message);
        return;
    }
    uint64_t late = (uint64_t)config->claim_idle_ms + (uint64_t)config->retry_max_ms;
    if (gc_deletes_ms < late) {
        fts_log(FTS_LOG_WARN, "es",
                "index.gc_deletes of %s is %" PRIu64 " ms, shorter than FTSYNC_CLAIM_IDLE_MS + "
                "FTSYNC_RETRY_MAX_MS = %" PRIu64 " ms: an action replayed that late can bring "
                "back a deleted document; raise index.gc_deletes (e.g. 1h)",
                name, gc_deletes_ms, late);
    }
}

static const char load_help[] =
    "usage: ftsync load\n\n"
    "Reads the action stream ftsync:{<FTSYNC_PIPELINE>}:stream as one consumer of the\n"
    "group \"loaders\" and bulk-indexes it into FTSYNC_ES_INDEX with external versions.\n"
    "An entry is acknowledged only once Elasticsearch accepted it, or after it was\n"
    "written to ftsync:{<pipeline>}:dead with its reason. drop and sweep entries are\n"
    "applied: the documents of their ns below their version are deleted (see\n"
    "FTSYNC_NS_FIELD). Run as many as you like.\n"
    "Stops cleanly on SIGTERM or SIGINT (exit 0). Admin endpoint on FTSYNC_ADMIN_ADDR:\n"
    "/healthz, /readyz, /metrics. Settings: ftsync config --help.\n";

int fts_cmd_load(int argc, char **argv)
{
    int usage_status = FTS_EXIT_OK;
    if (!fts_cmd_no_arguments(argc, argv, "load", load_help, &usage_status)) {
        return usage_status;
    }

    int status = FTS_EXIT_FAILURE;
    fts_error_t err = {0};
    fts_config_t config;
    fts_es_client_t *client = NULL;
    driver_t driver = {0};
    fts_redis_keys_t keys;
    char consumer[CONSUMER_NAME_SIZE];
    fts_cmd_admin_t admin = {0};
    if (!fts_cmd_load_config(&config, FTS_ROLE_LOAD)) {
        status = FTS_EXIT_USAGE;
        goto cleanup;
    }
    if (!fts_signals_install(&err)) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "%s", err.message);
        goto cleanup;
    }
    /* The endpoint answers from the start: alive, not ready while Elasticsearch is awaited. */
    if (!fts_cmd_admin_metrics(&admin)) {
        goto cleanup;
    }
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_STARTING);
    if (!fts_cmd_admin_serve(&admin, &config, FTS_METRICS_ROLE_LOAD, NULL, NULL)) {
        goto cleanup;
    }
    if (!fts_redis_keys_init(&keys, config.pipeline, &err)) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "%s", err.message);
        status = exit_status_for(&err);
        goto cleanup;
    }
    fts_cmd_consumer_name(&config, consumer, sizeof consumer);

    client = fts_cmd_es_client_new(&config, &err);
    if (!client) {
        fts_log(FTS_LOG_ERROR, "es", "%s", err.message);
        status = exit_status_for(&err);
        goto cleanup;
    }
    fts_es_server_info_t info;
    if (!wait_for_server(client, &config, &info, &err)) {
        if (fts_signals_stop_requested()) {
            status = FTS_EXIT_OK;
        } else {
            fts_log(FTS_LOG_ERROR, "es", "%s", err.message);
        }
        goto cleanup;
    }
    if (!check_doc_type(&config, &info, &err)) {
        fts_log(FTS_LOG_ERROR, "config", "%s", err.message);
        status = exit_status_for(&err);
        goto cleanup;
    }
    if (!ensure_index(client, &config, &err)) {
        if (fts_signals_stop_requested()) {
            status = FTS_EXIT_OK;
            goto cleanup;
        }
        fts_log(FTS_LOG_ERROR, "es", "cannot ensure index %s: %s", config.es_index, err.message);
        /* The only unreadable input here is the file FTSYNC_ES_INDEX_DEFINITION names: a bad
         * setting, which will not fix itself. */
        if (err.domain == FTS_ERROR_INPUT) {
            err.domain = FTS_ERROR_CONFIG;
        }
        status = exit_status_for(&err);
        goto cleanup;
    }
    /* An index written with another version scheme would turn every write into a 409 that
     * load acknowledges as "newer": refuse it (exit 2) before anything is written. */
    const char *target = config.es_alias ? config.es_alias : config.es_index;
    if (!fts_es_index_check_version_scheme(client, target, FTS_VERSION_SCHEME, &err)) {
        fts_log(FTS_LOG_ERROR, "es", "cannot load into %s: %s", target, err.message);
        status = exit_status_for(&err);
        goto cleanup;
    }
    warn_about_gc_deletes(client, &config);

    driver.loop = fts_event_loop_new();
    if (!driver.loop) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "cannot create the event loop");
        goto cleanup;
    }
    fts_es_options_t es_options;
    fts_cmd_es_options(&config, &es_options);
    driver.es = fts_es_async_new(fts_event_loop_base(driver.loop), &es_options, &err);
    if (!driver.es) {
        fts_log(FTS_LOG_ERROR, "es", "%s", err.message);
        status = exit_status_for(&err);
        goto cleanup;
    }
    fts_redis_group_options_t group_options = {
        .stream_key = keys.stream,
        .dead_key = keys.dead,
        .group = FTS_LOAD_GROUP,
        .consumer = consumer,
        .connect_timeout_ms = (long)config.redis_connect_timeout_ms,
        .command_timeout_ms = (long)config.redis_command_timeout_ms,
        .block_ms = (long)config.read_block_ms,
        .claim_min_idle_ms = (uint64_t)config.claim_idle_ms,
    };
    driver.group = fts_redis_group_new(fts_event_loop_base(driver.loop), config.queue_redis_url,
                                       &group_options, &err);
    if (!driver.group) {
        fts_log(FTS_LOG_ERROR, "redis", "%s", err.message);
        status = exit_status_for(&err);
        goto cleanup;
    }
    fts_load_options_t load_options = {
        .target = {.index = config.es_alias ? config.es_alias : config.es_index,
                   .doc_type = config.es_doc_type},
        .bulk_max_actions = (size_t)config.bulk_max_actions,
        .bulk_max_bytes = (size_t)config.bulk_max_bytes,
        .bulk_max_wait_ms = (uint64_t)config.bulk_max_wait_ms,
        .bulk_max_in_flight = (size_t)config.bulk_max_in_flight,
        .claim_interval_ms = (uint64_t)config.claim_interval_ms,
        .max_deliveries = (uint64_t)config.max_deliveries,
        .retry_base_ms = (uint64_t)config.retry_base_ms,
        .retry_max_ms = (uint64_t)config.retry_max_ms,
        .stop_timeout_ms = (uint64_t)config.stop_timeout_ms,
        .progress_interval_ms = PROGRESS_INTERVAL_MS,
        .sweep_page_size = (size_t)config.sweep_page_size,
        /* Elasticsearch before 2.0 takes a scroll id only as the bare body. */
        .sweep_dialect = info.distribution != FTS_ES_DISTRIBUTION_OPENSEARCH && info.major < 2
                             ? FTS_SWEEP_SCROLL_ID_TEXT
                             : FTS_SWEEP_SCROLL_ID_JSON,
    };
    if (config.ns_field && strcmp(config.ns_field, "off") != 0) {
        load_options.target.ns_field = config.ns_field;
    }
    fts_load_ports_t ports = {.ops = &driver_ops, .context = &driver};
    driver.loader = fts_loader_new(&load_options, &ports);
    driver.timer = fts_event_timer_new(driver.loop, on_timer, &driver);
    driver.stop_watch = fts_event_watch_new(driver.loop, fts_signals_fd(), on_stop_signal, &driver);
    if (!driver.stop_watch) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "the event loop cannot watch the stop signal");
        goto cleanup;
    }
    fts_log(FTS_LOG_INFO, LOG_COMPONENT,
            "loading %s into %s (%s %s) as consumer %s of group %s; dead letters go to %s",
            keys.stream, load_options.target.index, fts_es_distribution_name(info.distribution),
            info.version, consumer, FTS_LOAD_GROUP, keys.dead);
    /* Elasticsearch answered and the index exists; Redis is judged by the first read. */
    fts_signal_set(FTS_SIGNAL_ES_OK, 1);
    fts_signal_set(FTS_SIGNAL_LOAD_PROGRESS_MS, fts_clock_monotonic_ms());
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_RUNNING);
    fts_loader_start(driver.loader);
    if (fts_signals_stop_requested()) {
        fts_loader_stop(driver.loader);
    }
    if (!fts_event_loop_run(driver.loop)) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "the event loop failed");
        goto cleanup;
    }
    status = FTS_EXIT_OK;
cleanup:
    fts_log_flush_repeats();
    /* Adapters first: they call no callback once destroyed, so the loader is never reached
     * after it is gone. */
    fts_redis_group_destroy(driver.group);
    fts_es_async_destroy(driver.es);
    fts_event_timer_destroy(driver.timer);
    fts_event_watch_destroy(driver.stop_watch);
    fts_loader_destroy(driver.loader);
    fts_event_loop_destroy(driver.loop);
    fts_es_client_destroy(client);
    fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_NONE);
    fts_cmd_admin_cleanup(&admin);
    fts_config_cleanup(&config);
    return status;
}
