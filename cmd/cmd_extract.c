/*
 * cmd_extract.c - `ftsync extract`: parses the options, loads the configuration, and wires
 * the adapters (MongoDB source, Redis queue and lease, a forked transform worker) to the
 * core's extract loop (core/extract.c) through the ports of core/extract_ports.h.
 *
 * Fork hygiene: the first worker is forked before this process creates its MongoDB client or
 * any Redis connection (a child must not use a parent's client).
 * Workers forked again later keep only stdin/out/err and their socket (worker_process.c). The
 * invariants (1, 4, 5, one active extractor) are kept by the core loop; this file only builds
 * and frees, and connects to Redis: a connection refused for a reason that needs an operator
 * (a wrong password) is retried until fixed and shown by /readyz meanwhile (permanent.h); any
 * other failure to connect at start ends the command with status 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

#include "admin.h"
#include "backoff.h"
#include "cmd.h"
#include "extract.h"
#include "log.h"
#include "mongo_source.h"
#include "permanent.h"
#include "redis_conn.h"
#include "redis_lease.h"
#include "redis_queue.h"
#include "signals.h"
#include "worker_process.h"

#define COMPONENT "extract"

_Static_assert(FTS_EXTRACT_EXIT_OK == FTS_EXIT_OK && FTS_EXTRACT_EXIT_FAILURE == FTS_EXIT_FAILURE &&
                   FTS_EXTRACT_EXIT_USAGE == FTS_EXIT_USAGE &&
                   FTS_EXTRACT_EXIT_STOPPED == FTS_EXIT_STOPPED,
               "the core's exit statuses are the command's");

void fts_cmd_extract_options(const fts_config_t *config, fts_extract_options_t *options)
{
    *options = (fts_extract_options_t){
        .db = config->mongo_db,
        .collection = config->mongo_collection,
        .scope = config->mongo_scope,
        .backlog_max = (uint64_t)config->backlog_max,
        .trim_interval_ms = (uint64_t)config->trim_interval_ms,
        .lease_ttl_ms = (uint64_t)config->lease_ttl_ms,
        .on_history_lost = config->on_history_lost,
        .worker_crash_limit = (unsigned)config->worker_crash_limit,
        .sweep_first_snapshot = config->ns_field && strcmp(config->ns_field, "off") != 0,
        .batch_size = (size_t)config->batch_size,
        .transform =
            {
                /* auto: on exactly when a delete event cannot name the index id itself. */
                .id_map = config->id_map == FTS_ID_MAP_ON ||
                          (config->id_map == FTS_ID_MAP_AUTO && config->id_field &&
                           strcmp(config->id_field, "_id") != 0),
                .id_field = config->id_field,
                .id_typed = config->id_format == FTS_ID_FORMAT_TYPED,
                .fields = &config->fields,
                .on_drop = config->on_drop,
                .plugin_path = config->transform_plugin,
            },
    };
}

/* Connects to the Redis at url (a URL of config). A failure that needs an operator is
 * retried with backoff until fixed, reported as permanent meanwhile; NULL when another failure
 * came (err says which) or a stop was requested while waiting. */
static fts_redis_t *connect_redis(const fts_config_t *config, const char *url, fts_error_t *err)
{
    fts_backoff_t backoff;
    fts_backoff_init(&backoff, (uint64_t)config->retry_base_ms, (uint64_t)config->retry_max_ms, 0);
    for (;;) {
        fts_redis_t *redis = fts_cmd_redis_connect(config, url, err);
        if (redis) {
            fts_permanent_report(FTS_SERVER_REDIS, FTS_PERMANENT_NONE, NULL);
            return redis;
        }
        if (fts_permanent_classify(err) == FTS_PERMANENT_NONE) {
            return NULL;
        }
        fts_permanent_report_error(FTS_SERVER_REDIS, err);
        uint64_t delay = fts_backoff_next_ms(&backoff);
        fts_log(FTS_LOG_DEBUG, COMPONENT, "connecting to Redis again in %" PRIu64 " ms", delay);
        if (!fts_signals_sleep_ms((unsigned long)delay)) {
            return NULL;
        }
    }
}

int fts_cmd_extract(int argc, char **argv)
{
    /* The one argument accepted is --help (or -h); anything else is refused. */
    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            printf("usage: ftsync extract\n\nFollows the MongoDB collection (a snapshot first "
                   "when no position is saved) and queues\nits changes in the Redis stream. One "
                   "instance per pipeline is active; others wait as standby.\nExit status: 0 "
                   "stopped by SIGTERM/SIGINT, 1 a server failed at start, 2 bad configuration, "
                   "3 stopped\nin an error state (an event it cannot follow, history lost with "
                   "FTSYNC_ON_HISTORY_LOST=stop).\nAdmin endpoint on FTSYNC_ADMIN_ADDR: /healthz, "
                   "/readyz, /metrics.\n");
            return FTS_EXIT_OK;
        }
        fprintf(stderr, "ftsync extract: unknown option %s\n", argv[1]);
        return FTS_EXIT_USAGE;
    }
    fts_config_t config;
    memset(&config, 0, sizeof config);
    if (!fts_cmd_load_config(&config, FTS_ROLE_EXTRACT)) {
        fts_config_cleanup(&config);
        return FTS_EXIT_USAGE;
    }
    fts_redis_t *state = NULL;
    fts_redis_t *queue_conn = NULL; /* NULL: the queue is on the state server */
    fts_redis_queue_t *queue = NULL;
    fts_redis_lease_t *lease = NULL;
    fts_mongo_source_t *source = NULL;
    fts_worker_process_t process;
    fts_worker_process_init(&process, &config);
    fts_worker_port_t worker_port = fts_worker_process_port(&process);
    fts_error_t err;
    int status = FTS_EXIT_FAILURE;
    fts_cmd_admin_t admin = {0};

    if (!fts_signals_install(&err)) {
        fprintf(stderr, "ftsync extract: %s\n", err.message);
        fts_config_cleanup(&config);
        return FTS_EXIT_FAILURE;
    }
    /* The metrics block before the first fork: the worker counts into it. */
    if (!fts_cmd_admin_metrics(&admin)) {
        goto cleanup;
    }
    fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_STARTING);
    /* The worker first: no MongoDB client, no Redis connection exists yet. */
    if (!worker_port.ops->spawn(worker_port.context, &err)) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot start the worker: %s", err.message);
        goto cleanup;
    }
    /* The endpoint's thread after that first fork (later restarts fork with it running: the
     * worker closes the listening socket with every other descriptor, fts_child_keep_fd). */
    if (!fts_cmd_admin_serve(&admin, &config, FTS_METRICS_ROLE_EXTRACT, NULL, NULL)) {
        goto cleanup;
    }
    state = connect_redis(&config, config.state_redis_url, &err);
    if (state && strcmp(config.queue_redis_url, config.state_redis_url) != 0) {
        queue_conn = connect_redis(&config, config.queue_redis_url, &err);
    }
    if (!state || (strcmp(config.queue_redis_url, config.state_redis_url) != 0 && !queue_conn)) {
        if (fts_signals_stop_requested()) {
            status = FTS_EXIT_OK; /* stopped while waiting for Redis: a clean stop */
            goto cleanup;
        }
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot connect to Redis: %s", err.message);
        goto cleanup;
    }
    queue = fts_redis_queue_new(state, queue_conn, config.pipeline, &err);
    lease = queue ? fts_redis_lease_new(state, config.pipeline, (uint64_t)config.lease_ttl_ms, NULL,
                                        &err)
                  : NULL;
    if (!lease) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "%s", err.message);
        status = FTS_EXIT_USAGE;
        goto cleanup;
    }
    fts_mongo_init();
    fts_mongo_source_options_t options;
    const char *collections[] = {config.mongo_collection, NULL};
    fts_cmd_mongo_source_options(&config, &options, collections);
    source = fts_mongo_source_new(
        config.mongo_uri, config.mongo_db,
        config.mongo_scope == FTS_SCOPE_DATABASE ? NULL : config.mongo_collection, &options, &err);
    if (!source) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "%s", err.message);
        status = FTS_EXIT_USAGE;
        goto cleanup;
    }

    fts_source_port_t source_port = fts_mongo_source_port(source);
    fts_queue_port_t queue_port = fts_redis_queue_port(queue);
    fts_lease_port_t lease_port = fts_redis_lease_port(lease);
    fts_extract_ports_t ports = {
        .source = &source_port,
        .queue = &queue_port,
        .lease = &lease_port,
        .worker = &worker_port,
    };
    fts_extract_options_t extract_options;
    fts_cmd_extract_options(&config, &extract_options);
    status = fts_extract_run(&extract_options, &ports);

cleanup:
    fts_worker_process_cleanup(&process);
    fts_cmd_admin_cleanup(&admin);
    fts_mongo_source_destroy(source);
    fts_redis_lease_destroy(lease);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(queue_conn);
    fts_redis_destroy(state);
    fts_log_flush_repeats();
    fts_config_cleanup(&config);
    return status;
}
