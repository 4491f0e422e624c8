/*
 * common.c - what the subcommands share: loading the configuration with the adapters' URL
 * checkers, and building clients from it.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "es_client.h"
#include "es_index.h"
#include "log.h"
#include "mongo_uri.h"
#include "redis_conn.h"
#include "redis_url.h"

static bool check_redis_url(const char *value, char **masked, fts_error_t *err)
{
    fts_redis_url_t *url = fts_redis_url_parse(value, err);
    if (!url) {
        return false;
    }
    if (url->password) {
        fts_log_add_secret(url->password);
    }
    if (masked) {
        *masked = bson_strdup(url->masked);
    }
    fts_redis_url_destroy(url);
    return true;
}

static bool check_index_name(const char *value, char **masked, fts_error_t *err)
{
    (void)masked; /* a name hides nothing */
    return fts_es_index_name_validate(value, "index or alias", err);
}

const fts_config_checks_t fts_cmd_config_checks = {
    .mongo_uri = fts_mongo_uri_check,
    .redis_url = check_redis_url,
    .es_url = fts_es_url_check,
    .es_index_name = check_index_name,
};

bool fts_cmd_parse_role(const char *text, unsigned *roles)
{
    if (strcmp(text, "extract") == 0) {
        *roles = FTS_ROLE_EXTRACT;
    } else if (strcmp(text, "load") == 0) {
        *roles = FTS_ROLE_LOAD;
    } else if (strcmp(text, "all") == 0 || strcmp(text, "run") == 0) {
        *roles = FTS_ROLE_ALL;
    } else {
        return false;
    }
    return true;
}

bool fts_cmd_load_config(fts_config_t *config, unsigned roles)
{
    fts_buffer_t problems = {0};
    fts_error_t err;
    fts_config_source_t source = {.roles = roles, .checks = &fts_cmd_config_checks};
    bool ok = fts_config_load(config, &source, &problems, &err);
    if (ok) {
        fts_log_set_level(config->log_level);
        fts_log_set_format(config->log_format);
    } else {
        /* Problems go out as plain lines: this is a person reading a terminal or a pod log. */
        char line[FTS_LOG_MAX_MESSAGE];
        fprintf(stderr, "ftsync: configuration is not valid:\n");
        for (char *cursor = problems.data; cursor && *cursor;) {
            char *end = strchr(cursor, '\n');
            size_t len = end ? (size_t)(end - cursor) : strlen(cursor);
            snprintf(line, sizeof line, "%.*s", (int)len, cursor);
            char redacted[FTS_LOG_MAX_MESSAGE];
            fts_log_redact(line, redacted, sizeof redacted);
            fprintf(stderr, "  %s\n", redacted);
            cursor = end ? end + 1 : NULL;
        }
        fprintf(stderr, "(ftsync config --help lists every setting)\n");
    }
    fts_buffer_destroy(&problems);
    return ok;
}

/* The enums of the settings are the source's own. */
void fts_cmd_mongo_source_options(const fts_config_t *config, fts_mongo_source_options_t *options,
                                  const char **collections)
{
    fts_mongo_source_options_init(options);
    options->scope = config->mongo_scope;
    if (config->mongo_scope == FTS_SCOPE_DATABASE) {
        options->collections = collections;
    }
    options->full_document = config->mongo_full_document;
    options->full_document_before_change = config->mongo_pre_images;
    options->batch_size = (int32_t)config->batch_size;
    options->max_await_time_ms = config->mongo_max_await_ms;
    options->scan_batch_size = (int32_t)config->batch_size;
    /* A call must fail before the lease (renewed every TTL / 3) expires: half the TTL. */
    options->call_timeout_ms = (int32_t)(config->lease_ttl_ms / 2);
}

void fts_cmd_es_options(const fts_config_t *config, fts_es_options_t *options)
{
    *options = (fts_es_options_t){
        .urls = (const char *const *)config->es_urls.items,
        .url_count = config->es_urls.count,
        .user = config->es_user,
        .password = config->es_password,
        .api_key = config->es_api_key,
        .ca_file = config->es_ca_file,
        .connect_timeout_ms = (long)config->es_connect_timeout_ms,
        .request_timeout_ms = (long)config->es_request_timeout_ms,
        .gzip_requests = config->es_gzip,
    };
}

fts_es_client_t *fts_cmd_es_client_new(const fts_config_t *config, fts_error_t *err)
{
    fts_es_options_t options;
    fts_cmd_es_options(config, &options);
    return fts_es_client_new(&options, err);
}

fts_redis_t *fts_cmd_redis_connect(const fts_config_t *config, const char *url, fts_error_t *err)
{
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.connect_timeout_ms = (long)config->redis_connect_timeout_ms;
    options.command_timeout_ms = (long)config->redis_command_timeout_ms;
    return fts_redis_new(url, &options, err);
}

bool fts_cmd_no_arguments(int argc, char **argv, const char *name, const char *help, int *status)
{
    static const struct option options[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    optind = 1;
    opterr = 0; /* the message below names the command */
    int option;
    while ((option = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (option == 'h') {
            fputs(help, stdout);
            *status = FTS_EXIT_OK;
            return false;
        }
        fprintf(stderr, "ftsync %s: unknown option %s\nusage: ftsync %s [--help]\n", name,
                argv[optind - 1], name);
        *status = FTS_EXIT_USAGE;
        return false;
    }
    if (optind < argc) {
        fprintf(stderr, "ftsync %s: unexpected argument \"%s\"\nusage: ftsync %s [--help]\n", name,
                argv[optind], name);
        *status = FTS_EXIT_USAGE;
        return false;
    }
    return true;
}
