/*
 * cmd_check.c - `ftsync check`: a preflight an operator (or a readiness script) runs to learn
 * whether every server ftsync needs answers: the state and queue Redis, the Elasticsearch
 * cluster and its health, and the index; and, when FTSYNC_MONGO_URI is set (the setting that
 * says extract runs with this configuration), extract's MongoDB: a replica set or sharded
 * cluster that accepts the credentials, lets the collection be read and opens a change stream
 * on it. One line per check; exit 1 if any failed. A failure that needs an operator
 * (permanent.h: credentials refused, not Elasticsearch, a refused certificate, not a replica
 * set) says so: "permanent (<reason>): <what to fix>: <the server's answer>". Every line goes
 * through the logger's secret filter, which knows the URLs' passwords.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "cmd.h"
#include "log.h"
#include "mongo_source.h"
#include "mongo_uri.h"
#include "permanent.h"
#include "redis_conn.h"
#include "redis_url.h"

/* detail may quote a server's reply, and a hostile server quotes our request headers: it goes
 * through the logger's secret filter like every log line. */
static void report(bool ok, const char *what, const char *detail)
{
    char redacted[FTS_ERROR_MESSAGE_SIZE + 128];
    fts_log_redact(detail, redacted, sizeof redacted);
    printf("%-5s %-18s %s\n", ok ? "ok" : "FAIL", what, redacted);
}

/* A failed check's line, naming the permanent reason when there is one. */
static void report_failure(const char *what, fts_server_t server, const fts_error_t *err)
{
    fts_permanent_reason_t reason = fts_permanent_classify(err);
    if (reason == FTS_PERMANENT_NONE) {
        report(false, what, err->message);
        return;
    }
    char detail[FTS_ERROR_MESSAGE_SIZE + 512];
    snprintf(detail, sizeof detail, "permanent (%s): %s: %s", fts_permanent_reason_name(reason),
             fts_permanent_advice(server, reason), err->message);
    report(false, what, detail);
}

static bool check_redis(const char *what, const char *url, const fts_config_t *config)
{
    fts_error_t err;
    char *masked = fts_redis_url_mask(url);
    fts_redis_t *redis = fts_cmd_redis_connect(config, url, &err);
    bool ok = redis && fts_redis_ping(redis, &err);
    if (ok) {
        report(true, what, masked);
    } else {
        report_failure(what, FTS_SERVER_REDIS, &err);
    }
    fts_redis_destroy(redis);
    bson_free(masked);
    return ok;
}

static bool check_elasticsearch(const fts_config_t *config)
{
    fts_error_t err;
    fts_es_client_t *client = fts_cmd_es_client_new(config, &err);
    if (!client) {
        report(false, "elasticsearch", err.message);
        return false;
    }
    bool ok = false;
    char detail[FTS_ERROR_MESSAGE_SIZE + 128];
    fts_es_server_info_t info;
    fts_es_health_t health;
    fts_es_response_t response;
    fts_es_response_init(&response);
    if (!fts_es_server_info(client, &info, &err)) {
        report_failure("elasticsearch", FTS_SERVER_ELASTICSEARCH, &err);
        goto cleanup;
    }
    snprintf(detail, sizeof detail, "%s %s at %s", fts_es_distribution_name(info.distribution),
             info.version, fts_es_client_current_url(client));
    report(true, "elasticsearch", detail);

    if (!fts_es_cluster_health(client, &health, &err)) {
        report_failure("cluster health", FTS_SERVER_ELASTICSEARCH, &err);
        goto cleanup;
    }
    snprintf(detail, sizeof detail, "%s, %d node(s)", fts_es_health_status_name(health.status),
             health.number_of_nodes);
    report(health.status != FTS_ES_HEALTH_RED, "cluster health", detail);
    if (health.status == FTS_ES_HEALTH_RED) {
        goto cleanup;
    }

    char path[512];
    snprintf(path, sizeof path, "/%s", config->es_alias ? config->es_alias : config->es_index);
    if (!fts_es_request(client, "HEAD", path, NULL, NULL, 0, &response, &err)) {
        report_failure("index", FTS_SERVER_ELASTICSEARCH, &err);
        goto cleanup;
    }
    if (response.status == 200) {
        report(true, "index", path + 1);
        ok = true;
    } else if (response.status == 404) {
        snprintf(detail, sizeof detail, "%s does not exist (ftsync init-index creates it)",
                 path + 1);
        report(false, "index", detail);
    } else if (response.status == 401 || response.status == 403) {
        /* HEAD has no body: the status alone says the credentials lack the privilege. */
        snprintf(detail, sizeof detail, "permanent (auth): %s: %s: HTTP %ld",
                 fts_permanent_advice(FTS_SERVER_ELASTICSEARCH, FTS_PERMANENT_AUTH), path + 1,
                 response.status);
        report(false, "index", detail);
    } else {
        snprintf(detail, sizeof detail, "%s: unexpected HTTP status %ld", path + 1,
                 response.status);
        report(false, "index", detail);
    }
cleanup:
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
    return ok;
}

/* How long check waits for MongoDB to answer a call: server selection, connecting and each
 * reply (timeouts written in the URI win). A preflight must say "unreachable" within seconds. */
#define CHECK_MONGO_TIMEOUT_MS 5000

/* Extract's MongoDB, as extract would use it (its source, with a shorter timeout): hello says
 * a replica set or a mongos, which also connects and authenticates; a one-document majority
 * read of the collection (the read behind a snapshot's start time, which also needs an
 * operationTime in the answer); a change stream opened from now and closed. Stops at the first
 * failure: the later ones would only repeat it. */
static bool check_mongo(const fts_config_t *config)
{
    fts_error_t err;
    bool ok = false;
    char detail[FTS_ERROR_MESSAGE_SIZE + 128];
    char *masked = NULL;
    fts_mongo_source_t *source = NULL;

    fts_mongo_init();
    /* Registers the URI's password with the logger's secret filter (report() applies it). */
    if (!fts_mongo_uri_check(config->mongo_uri, &masked, &err)) {
        report(false, "mongodb", err.message);
        goto cleanup;
    }
    fts_mongo_source_options_t options;
    const char *collections[] = {config->mongo_collection, NULL};
    fts_cmd_mongo_source_options(config, &options, collections);
    options.call_timeout_ms = CHECK_MONGO_TIMEOUT_MS;
    /* The source raises the call timeout to the await time + 1 s so that an idle getMore is not
     * cut off; check sends no getMore, and its bound must stay 5 s. */
    options.max_await_time_ms = 1000;
    source = fts_mongo_source_new(
        config->mongo_uri, config->mongo_db,
        config->mongo_scope == FTS_SCOPE_DATABASE ? NULL : config->mongo_collection, &options,
        &err);
    if (!source) {
        report(false, "mongodb", err.message);
        goto cleanup;
    }

    char topology[128];
    if (!fts_mongo_source_topology(source, topology, sizeof topology, &err)) {
        report_failure("mongodb", FTS_SERVER_MONGODB, &err);
        goto cleanup;
    }
    snprintf(detail, sizeof detail, "%s at %s", topology, masked);
    report(true, "mongodb", detail);

    fts_timestamp_t now;
    if (!fts_mongo_source_cluster_time(source, &now, &err)) {
        report_failure("collection", FTS_SERVER_MONGODB, &err);
        goto cleanup;
    }
    snprintf(detail, sizeof detail, "%s.%s readable (majority read at %u:%u)", config->mongo_db,
             config->mongo_collection, now.seconds, now.increment);
    report(true, "collection", detail);

    if (!fts_mongo_source_open(source, NULL, &err)) {
        report_failure("change stream", FTS_SERVER_MONGODB, &err);
        goto cleanup;
    }
    fts_mongo_source_close(source);
    snprintf(detail, sizeof detail, "opened and closed on %s.%s%s", config->mongo_db,
             config->mongo_collection,
             config->mongo_scope == FTS_SCOPE_DATABASE ? " (database scope)" : "");
    report(true, "change stream", detail);
    ok = true;

cleanup:
    fts_mongo_source_destroy(source);
    bson_free(masked);
    return ok;
}

static const char check_help[] =
    "usage: ftsync check\n\n"
    "Checks that the state and queue Redis answer PING, that Elasticsearch\n"
    "answers with a cluster that is not red, and that the index (or alias)\n"
    "exists. When FTSYNC_MONGO_URI is set (extract runs with this\n"
    "configuration; FTSYNC_MONGO_DB and FTSYNC_MONGO_COLLECTION are then\n"
    "required), also that MongoDB answers within 5 s, accepts the credentials,\n"
    "is a replica set or sharded cluster, lets the collection be read (a\n"
    "majority read) and opens a change stream on it. A failure that needs an\n"
    "operator (credentials refused, a server that is not Elasticsearch, a\n"
    "refused certificate, a MongoDB that is not a replica set) is marked\n"
    "\"permanent (<reason>)\" with the setting to fix.\n"
    "Exit status: 0 all good, 1 a check failed, 2 bad configuration.\n";

int fts_cmd_check(int argc, char **argv)
{
    int usage_status = FTS_EXIT_OK;
    if (!fts_cmd_no_arguments(argc, argv, "check", check_help, &usage_status)) {
        return usage_status;
    }
    fts_config_t config;
    if (!fts_cmd_load_config(&config, FTS_ROLE_LOAD)) {
        fts_config_cleanup(&config);
        return FTS_EXIT_USAGE;
    }
    /* FTSYNC_MONGO_URI says extract runs with this configuration: then the other settings
     * extract requires are required too (invariant 6). Checked here rather than by loading
     * again for both roles, which would log every warning of loading twice. */
    if (config.mongo_uri && (!config.mongo_db || !config.mongo_collection)) {
        fprintf(stderr, "ftsync: configuration is not valid:\n");
        if (!config.mongo_db) {
            fprintf(stderr, "  FTSYNC_MONGO_DB: required when FTSYNC_MONGO_URI is set\n");
        }
        if (!config.mongo_collection) {
            fprintf(stderr, "  FTSYNC_MONGO_COLLECTION: required when FTSYNC_MONGO_URI is set\n");
        }
        fprintf(stderr, "(ftsync config --help lists every setting)\n");
        fts_config_cleanup(&config);
        return FTS_EXIT_USAGE;
    }
    bool ok = check_redis("state redis", config.state_redis_url, &config);
    if (strcmp(config.queue_redis_url, config.state_redis_url) != 0) {
        ok = check_redis("queue redis", config.queue_redis_url, &config) && ok;
    }
    ok = check_elasticsearch(&config) && ok;
    if (config.mongo_uri) {
        ok = check_mongo(&config) && ok;
    }
    fts_config_cleanup(&config);
    return ok ? FTS_EXIT_OK : FTS_EXIT_FAILURE;
}
