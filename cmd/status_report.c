/*
 * status_report.c - collects the status report of status_report.h from Redis, Elasticsearch
 * and MongoDB, and renders it as JSON or as text.
 *
 * Ages are computed here against the wall clock (core/clock.h), so that a reader does not
 * have to subtract: a position's cluster time "age" is how far behind MongoDB's present the
 * saved position is, i.e. the replication lag as extract sees it.
 */
#include "status_report.h"

#include <inttypes.h>
#include <string.h>

#include "clock.h"
#include "cmd.h"
#include "es_client.h"
#include "es_scroll.h"
#include "mongo_admin.h"
#include "redis_admin.h"
#include "redis_conn.h"
#include "redis_queue.h"

typedef struct {
    bson_t errors; /* array being built */
    unsigned error_count;
    bool failed;
    fts_error_t first;
} collect_t;

static void note_error(collect_t *c, const char *who, const fts_error_t *err)
{
    char key[16];
    const char *key_text;
    bson_uint32_to_string(c->error_count++, &key_text, key, sizeof key);
    char *line = bson_strdup_printf("%s: %s", who, err->message);
    bson_append_utf8(&c->errors, key_text, -1, line, -1);
    bson_free(line);
    if (!c->failed) {
        c->first = *err;
        c->failed = true;
    }
}

static void append_time(bson_t *doc, const char *key, fts_timestamp_t time)
{
    char text[48];
    fts_redis_cluster_time_format(time.seconds, time.increment, text, sizeof text);
    BSON_APPEND_UTF8(doc, key, text);
}

/* Age in seconds of a wall-clock time in ms (0 when unknown is written as null). */
static void append_age_ms(bson_t *doc, const char *key, uint64_t at_ms)
{
    uint64_t now = fts_clock_wall_ms();
    if (at_ms == 0) {
        BSON_APPEND_NULL(doc, key);
    } else {
        BSON_APPEND_INT64(doc, key, at_ms > now ? 0 : (int64_t)(now - at_ms));
    }
}

static fts_redis_t *redis_connect(const fts_config_t *config, const char *url, fts_error_t *err)
{
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.connect_timeout_ms = (long)config->redis_connect_timeout_ms;
    options.command_timeout_ms = (long)config->redis_command_timeout_ms;
    /* One report, one attempt: a server that went away is reported, not waited for. */
    options.reconnect_max_wait_ms = 1;
    return fts_redis_new(url, &options, err);
}

static void collect_position(collect_t *c, fts_redis_queue_t *queue, bson_t *report)
{
    fts_position_t position;
    memset(&position, 0, sizeof position);
    fts_error_t err;
    if (!fts_redis_queue_read_position(queue, &position, &err)) {
        note_error(c, "saved position", &err);
        BSON_APPEND_NULL(report, "position");
        BSON_APPEND_NULL(report, "snapshot");
        return;
    }
    bson_t doc;
    BSON_APPEND_DOCUMENT_BEGIN(report, "position", &doc);
    if (position.has_token) {
        BSON_APPEND_UTF8(&doc, "state", "token");
        BSON_APPEND_UTF8(&doc, "kind", fts_token_kind_name(position.token_kind));
        BSON_APPEND_UTF8(&doc, "token", position.token);
        append_time(&doc, "cluster_time", position.cluster_time);
        append_age_ms(&doc, "cluster_time_age_ms",
                      position.cluster_time.seconds ? position.cluster_time.seconds * 1000ULL : 0);
        BSON_APPEND_INT64(&doc, "updated_at_ms", (int64_t)position.token_updated_at_ms);
        append_age_ms(&doc, "updated_age_ms", position.token_updated_at_ms);
    } else {
        BSON_APPEND_UTF8(&doc, "state", position.has_snapshot ? "snapshot" : "none");
    }
    bson_append_document_end(report, &doc);
    if (position.has_snapshot) {
        BSON_APPEND_DOCUMENT_BEGIN(report, "snapshot", &doc);
        append_time(&doc, "started_at", position.started);
        if (position.last_id) {
            BSON_APPEND_UTF8(&doc, "last_id", position.last_id);
        } else {
            BSON_APPEND_NULL(&doc, "last_id");
        }
        BSON_APPEND_INT64(&doc, "queued", (int64_t)position.queued);
        BSON_APPEND_INT64(&doc, "updated_at_ms", (int64_t)position.snapshot_updated_at_ms);
        append_age_ms(&doc, "updated_age_ms", position.snapshot_updated_at_ms);
        bson_append_document_end(report, &doc);
    } else {
        BSON_APPEND_NULL(report, "snapshot");
    }
    fts_position_cleanup(&position);
}

static void collect_lease(collect_t *c, fts_redis_t *state, const char *key, bson_t *report)
{
    char *holder = NULL;
    int64_t ttl = -2;
    fts_error_t err;
    if (!fts_redis_lease_read(state, key, &holder, &ttl, &err)) {
        note_error(c, "lease", &err);
        BSON_APPEND_NULL(report, "lease");
        return;
    }
    bson_t doc;
    BSON_APPEND_DOCUMENT_BEGIN(report, "lease", &doc);
    if (holder) {
        BSON_APPEND_UTF8(&doc, "holder", holder);
    } else {
        BSON_APPEND_NULL(&doc, "holder");
    }
    BSON_APPEND_INT64(&doc, "ttl_ms", ttl);
    bson_append_document_end(report, &doc);
    bson_free(holder);
}

static void collect_stream(collect_t *c, fts_redis_t *queue, const fts_redis_keys_t *keys,
                           bson_t *report)
{
    fts_redis_stream_info_t info;
    fts_error_t err;
    if (!fts_redis_stream_info_read(queue, keys->stream, &info, &err)) {
        note_error(c, "stream", &err);
        BSON_APPEND_NULL(report, "stream");
    } else {
        bson_t doc, groups, group, consumers, consumer;
        BSON_APPEND_DOCUMENT_BEGIN(report, "stream", &doc);
        BSON_APPEND_UTF8(&doc, "key", keys->stream);
        BSON_APPEND_BOOL(&doc, "exists", info.exists);
        BSON_APPEND_INT64(&doc, "length", (int64_t)info.length);
        BSON_APPEND_UTF8(&doc, "first_id", info.first_id);
        BSON_APPEND_UTF8(&doc, "last_id", info.last_id);
        BSON_APPEND_ARRAY_BEGIN(&doc, "groups", &groups);
        for (size_t i = 0; i < info.group_count; i++) {
            const fts_redis_group_info_t *g = &info.groups[i];
            char key[16];
            const char *key_text;
            bson_uint32_to_string((uint32_t)i, &key_text, key, sizeof key);
            BSON_APPEND_DOCUMENT_BEGIN(&groups, key_text, &group);
            BSON_APPEND_UTF8(&group, "name", g->name);
            BSON_APPEND_INT64(&group, "pending", (int64_t)g->pending);
            if (g->lag_known) {
                BSON_APPEND_INT64(&group, "lag", (int64_t)g->lag);
            } else {
                BSON_APPEND_NULL(&group, "lag");
            }
            BSON_APPEND_UTF8(&group, "last_delivered_id", g->last_delivered_id);
            if (g->oldest_pending_id[0]) {
                BSON_APPEND_UTF8(&group, "oldest_pending_id", g->oldest_pending_id);
                append_age_ms(&group, "oldest_pending_age_ms",
                              fts_redis_stream_id_ms(g->oldest_pending_id));
            } else {
                BSON_APPEND_NULL(&group, "oldest_pending_id");
                BSON_APPEND_NULL(&group, "oldest_pending_age_ms");
            }
            BSON_APPEND_ARRAY_BEGIN(&group, "consumers", &consumers);
            for (size_t j = 0; j < g->consumer_count; j++) {
                bson_uint32_to_string((uint32_t)j, &key_text, key, sizeof key);
                BSON_APPEND_DOCUMENT_BEGIN(&consumers, key_text, &consumer);
                BSON_APPEND_UTF8(&consumer, "name", g->consumers[j].name);
                BSON_APPEND_INT64(&consumer, "pending", (int64_t)g->consumers[j].pending);
                BSON_APPEND_INT64(&consumer, "idle_ms", g->consumers[j].idle_ms);
                bson_append_document_end(&consumers, &consumer);
            }
            bson_append_array_end(&group, &consumers);
            bson_append_document_end(&groups, &group);
        }
        bson_append_array_end(&doc, &groups);
        bson_append_document_end(report, &doc);
        fts_redis_stream_info_cleanup(&info);
    }
    uint64_t dead = 0;
    if (!fts_redis_stream_length(queue, keys->dead, &dead, &err)) {
        note_error(c, "dead letters", &err);
        BSON_APPEND_NULL(report, "dead_letters");
    } else {
        bson_t doc;
        BSON_APPEND_DOCUMENT_BEGIN(report, "dead_letters", &doc);
        BSON_APPEND_UTF8(&doc, "key", keys->dead);
        BSON_APPEND_INT64(&doc, "count", (int64_t)dead);
        bson_append_document_end(report, &doc);
    }
}

bool fts_status_report_collect(const fts_config_t *config, bson_t *report, fts_error_t *err)
{
    collect_t c;
    memset(&c, 0, sizeof c);
    bson_init(&c.errors);
    bson_init(report);
    bson_t versions = BSON_INITIALIZER;
    fts_error_t e;
    fts_redis_t *state = NULL;
    fts_redis_t *queue_conn = NULL;
    fts_redis_queue_t *queue = NULL;
    fts_es_client_t *es = NULL;
    fts_mongo_admin_t *mongo = NULL;

    BSON_APPEND_UTF8(report, "pipeline", config->pipeline);
    BSON_APPEND_INT64(report, "now_ms", (int64_t)fts_clock_wall_ms());
    fts_redis_keys_t keys;
    if (!fts_redis_keys_init(&keys, config->pipeline, &e)) {
        note_error(&c, "pipeline", &e);
        goto servers;
    }
    state = redis_connect(config, config->state_redis_url, &e);
    if (!state) {
        note_error(&c, "redis (state)", &e);
        BSON_APPEND_NULL(report, "position");
        BSON_APPEND_NULL(report, "snapshot");
        BSON_APPEND_NULL(report, "lease");
    } else {
        queue = fts_redis_queue_new(state, NULL, config->pipeline, &e);
        if (queue) {
            collect_position(&c, queue, report);
        } else {
            note_error(&c, "saved position", &e);
        }
        collect_lease(&c, state, keys.lease, report);
        char version[64];
        if (fts_redis_server_version(state, version, sizeof version, &e)) {
            BSON_APPEND_UTF8(&versions, "redis", version);
        } else {
            note_error(&c, "redis version", &e);
        }
    }
    const char *queue_url =
        config->queue_redis_url ? config->queue_redis_url : config->state_redis_url;
    if (state && strcmp(queue_url, config->state_redis_url) == 0) {
        collect_stream(&c, state, &keys, report);
    } else if (state || strcmp(queue_url, config->state_redis_url) != 0) {
        queue_conn = redis_connect(config, queue_url, &e);
        if (queue_conn) {
            collect_stream(&c, queue_conn, &keys, report);
        } else {
            note_error(&c, "redis (queue)", &e);
            BSON_APPEND_NULL(report, "stream");
            BSON_APPEND_NULL(report, "dead_letters");
        }
    } else {
        BSON_APPEND_NULL(report, "stream");
        BSON_APPEND_NULL(report, "dead_letters");
    }

servers:
    if (config->es_urls.count > 0) {
        es = fts_cmd_es_client_new(config, &e);
        fts_es_server_info_t info;
        if (!es) {
            note_error(&c, "elasticsearch", &e);
        } else if (fts_es_server_info(es, &info, &e)) {
            BSON_APPEND_UTF8(&versions, "elasticsearch", info.version);
            BSON_APPEND_UTF8(&versions, "search_engine",
                             fts_es_distribution_name(info.distribution));
        } else {
            note_error(&c, "elasticsearch", &e);
            fts_es_client_destroy(es);
            es = NULL;
        }
    }
    if (config->es_index) {
        bson_t doc;
        BSON_APPEND_DOCUMENT_BEGIN(report, "index", &doc);
        BSON_APPEND_UTF8(&doc, "name", config->es_index);
        uint64_t count = 0;
        if (es && fts_es_index_count(es, config->es_index, &count, &e)) {
            BSON_APPEND_INT64(&doc, "documents", (int64_t)count);
        } else {
            if (es) {
                note_error(&c, "index", &e);
            }
            BSON_APPEND_NULL(&doc, "documents");
        }
        bson_append_document_end(report, &doc);
    }
    if (config->mongo_uri) {
        mongo = fts_mongo_admin_new(config->mongo_uri, config->mongo_db ? config->mongo_db : "test",
                                    config->mongo_collection ? config->mongo_collection : "x", &e);
        char version[64];
        if (!mongo || !fts_mongo_admin_server_version(mongo, version, sizeof version, &e)) {
            note_error(&c, "mongodb", &e);
        } else {
            BSON_APPEND_UTF8(&versions, "mongodb", version);
        }
    }
    BSON_APPEND_DOCUMENT(report, "versions", &versions);
    BSON_APPEND_BOOL(report, "complete", !c.failed);
    BSON_APPEND_ARRAY(report, "errors", &c.errors);

    fts_mongo_admin_destroy(mongo);
    fts_es_client_destroy(es);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(queue_conn);
    fts_redis_destroy(state);
    bson_destroy(&versions);
    bson_destroy(&c.errors);
    if (c.failed) {
        *err = c.first;
    }
    return !c.failed;
}

bool fts_status_report_json(const fts_config_t *config, char **json, fts_error_t *err)
{
    bson_t report;
    bool ok = fts_status_report_collect(config, &report, err);
    *json = bson_as_relaxed_extended_json(&report, NULL);
    bson_destroy(&report);
    return ok;
}

static void print_value(const bson_iter_t *iter, FILE *out, int indent);

static void print_document(const bson_iter_t *parent, FILE *out, int indent, bool array)
{
    bson_iter_t child;
    bson_iter_recurse(parent, &child);
    while (bson_iter_next(&child)) {
        if (array) {
            fprintf(out, "%*s-", indent, "");
            if (BSON_ITER_HOLDS_DOCUMENT(&child)) {
                fprintf(out, "\n");
                print_document(&child, out, indent + 2, false);
            } else {
                print_value(&child, out, indent + 2);
            }
            continue;
        }
        fprintf(out, "%*s%s:", indent, "", bson_iter_key(&child));
        print_value(&child, out, indent + 2);
    }
}

static void print_value(const bson_iter_t *iter, FILE *out, int indent)
{
    switch (bson_iter_type(iter)) {
    case BSON_TYPE_UTF8:
        fprintf(out, " %s\n", bson_iter_utf8(iter, NULL));
        break;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        fprintf(out, " %" PRId64 "\n", bson_iter_as_int64(iter));
        break;
    case BSON_TYPE_BOOL:
        fprintf(out, " %s\n", bson_iter_bool(iter) ? "yes" : "no");
        break;
    case BSON_TYPE_NULL:
        fprintf(out, " -\n");
        break;
    case BSON_TYPE_DOCUMENT:
        fprintf(out, "\n");
        print_document(iter, out, indent, false);
        break;
    case BSON_TYPE_ARRAY: {
        bson_iter_t probe;
        bson_iter_recurse(iter, &probe);
        if (!bson_iter_next(&probe)) {
            fprintf(out, " (none)\n");
        } else {
            fprintf(out, "\n");
            print_document(iter, out, indent, true);
        }
        break;
    }
    default:
        fprintf(out, " ?\n");
        break;
    }
}

void fts_status_report_print_text(const bson_t *report, FILE *out)
{
    bson_iter_t iter;
    if (!bson_iter_init(&iter, report)) {
        return;
    }
    while (bson_iter_next(&iter)) {
        fprintf(out, "%s:", bson_iter_key(&iter));
        print_value(&iter, out, 2);
    }
}
