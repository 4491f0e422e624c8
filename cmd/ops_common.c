/*
 * ops_common.c - what the operator's commands share (ops.h).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"

int fts_ops_exit_status(const fts_error_t *err)
{
    return err->domain == FTS_ERROR_CONFIG || err->domain == FTS_ERROR_INPUT ? FTS_EXIT_USAGE
                                                                             : FTS_EXIT_FAILURE;
}

fts_redis_t *fts_ops_redis_connect(const fts_config_t *config, const char *url, fts_error_t *err)
{
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.connect_timeout_ms = (long)config->redis_connect_timeout_ms;
    options.command_timeout_ms = (long)config->redis_command_timeout_ms;
    options.reconnect_max_wait_ms = 1000;
    return fts_redis_new(url, &options, err);
}

fts_mongo_source_t *fts_ops_mongo_source_new(const fts_config_t *config, fts_error_t *err)
{
    fts_mongo_source_options_t options;
    fts_mongo_source_options_init(&options);
    const char *collections[] = {config->mongo_collection, NULL};
    options.scope = config->mongo_scope;
    if (config->mongo_scope == FTS_SCOPE_DATABASE) {
        options.collections = collections;
    }
    options.full_document = config->mongo_full_document;
    options.full_document_before_change = config->mongo_pre_images;
    options.batch_size = (int32_t)config->batch_size;
    options.max_await_time_ms = config->mongo_max_await_ms;
    options.scan_batch_size = (int32_t)config->batch_size;
    return fts_mongo_source_new(
        config->mongo_uri, config->mongo_db,
        config->mongo_scope == FTS_SCOPE_DATABASE ? NULL : config->mongo_collection, &options, err);
}

fts_transform_t *fts_ops_transform_new(const fts_config_t *config, fts_error_t *err)
{
    fts_transform_options_t options = {
        .id_field = config->id_field,
        .id_typed = config->id_format == FTS_ID_FORMAT_TYPED,
        .fields = &config->fields,
        .on_drop = config->on_drop,
        .plugin_path = config->transform_plugin,
    };
    return fts_transform_new(&options, err);
}

void fts_ops_namespace(const fts_config_t *config, char *out, size_t size)
{
    snprintf(out, size, "%s.%s", config->mongo_db ? config->mongo_db : "",
             config->mongo_collection ? config->mongo_collection : "");
}

static bool digits(const char *text, size_t n, int *value)
{
    *value = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)text[i])) {
            return false;
        }
        *value = *value * 10 + (text[i] - '0');
    }
    return true;
}

bool fts_ops_parse_time(const char *text, int64_t *seconds)
{
    size_t len = strlen(text);
    if (len > 0 && len <= 12 && strspn(text, "0123456789") == len) {
        *seconds = strtoll(text, NULL, 10);
        return true;
    }
    /* YYYY-MM-DDTHH:MM:SS[.fff...](Z|+HH:MM|-HH:MM) */
    int year, month, day, hour, minute, second;
    if (len < 20 || !digits(text, 4, &year) || text[4] != '-' || !digits(text + 5, 2, &month) ||
        text[7] != '-' || !digits(text + 8, 2, &day) || (text[10] != 'T' && text[10] != 't') ||
        !digits(text + 11, 2, &hour) || text[13] != ':' || !digits(text + 14, 2, &minute) ||
        text[16] != ':' || !digits(text + 17, 2, &second)) {
        return false;
    }
    const char *rest = text + 19;
    if (*rest == '.') {
        rest++;
        if (!isdigit((unsigned char)*rest)) {
            return false;
        }
        while (isdigit((unsigned char)*rest)) {
            rest++;
        }
    }
    int offset = 0;
    if ((*rest == 'Z' || *rest == 'z') && rest[1] == '\0') {
        offset = 0;
    } else if ((*rest == '+' || *rest == '-') && strlen(rest) == 6 && rest[3] == ':') {
        int oh, om;
        if (!digits(rest + 1, 2, &oh) || !digits(rest + 4, 2, &om) || oh > 23 || om > 59) {
            return false;
        }
        offset = (oh * 60 + om) * 60 * (*rest == '-' ? -1 : 1);
    } else {
        return false;
    }
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
        return false;
    }
    struct tm tm = {.tm_year = year - 1900,
                    .tm_mon = month - 1,
                    .tm_mday = day,
                    .tm_hour = hour,
                    .tm_min = minute,
                    .tm_sec = second};
    time_t t = timegm(&tm);
    if (tm.tm_mday != day) { /* 31 February and the like: timegm normalised it */
        return false;
    }
    *seconds = (int64_t)t - offset;
    return true;
}
