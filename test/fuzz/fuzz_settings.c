/*
 * fuzz_settings.c - libFuzzer target: settings and URL parsing. The settings table
 * (core/config.c) over a synthetic environment, with the adapters' own URL checks as `ftsync`
 * wires them (cmd/common.c); and each URL parser on its own: redis:// URLs
 * (adapters/redis/redis_url.c), MongoDB URIs (adapters/mongo/mongo_uri.c), Elasticsearch URLs
 * (adapters/es/es_client.c).
 *
 * Byte 0 picks the mode (modulo 4); the rest is the text:
 *   0  lines NAME=VALUE form the environment, on top of a minimal valid one (so mutations get
 *      past "required setting missing"); bits 2-3 of byte 0 pick the roles. Values that would
 *      make the loader open a path are not passed: <NAME>_FILE variables, the .env file
 *      (always /dev/null) and the file-valued settings. What a file holds reaches the same
 *      value parsers as a variable does, so nothing is lost, and the fuzzer never touches a
 *      path its input names (a FIFO, /dev/zero).
 *   1  a redis:// URL: parse, mask; a parsed URL is complete (host, port 1-65535, db >= 0).
 *   2  a MongoDB URI: check and mask.
 *   3  an Elasticsearch URL: check and mask.
 * After each input the logger's registered secrets are cleared (they would pile up).
 */
#include <string.h>

#include <bson/bson.h>

#include "config.h"
#include "es_client.h"
#include "fuzz_common.h"
#include "log.h"
#include "mongo_uri.h"
#include "redis_url.h"

#define MAX_VARIABLES 48

typedef struct {
    const char *names[MAX_VARIABLES];
    const char *values[MAX_VARIABLES];
    size_t count;
} fake_env_t;

static const char *const base_env[][2] = {
    {"FTSYNC_MONGO_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0"},
    {"FTSYNC_MONGO_DB", "steam"},
    {"FTSYNC_MONGO_COLLECTION", "apps"},
    {"FTSYNC_ES_INDEX", "apps"},
};

static bool names_a_path(const char *name)
{
    size_t len = strlen(name);
    return (len >= 5 && strcmp(name + len - 5, "_FILE") == 0) ||
           strcmp(name, "FTSYNC_TRANSFORM_PLUGIN") == 0 ||
           strcmp(name, "FTSYNC_ES_INDEX_DEFINITION") == 0;
}

static const char *fake_getenv(const char *name, void *context)
{
    const fake_env_t *env = context;
    if (strcmp(name, "FTSYNC_ENV_FILE") == 0) {
        return "/dev/null";
    }
    if (names_a_path(name)) {
        return NULL;
    }
    /* The last definition wins, as in a shell. */
    for (size_t i = env->count; i-- > 0;) {
        if (strcmp(env->names[i], name) == 0) {
            return env->values[i];
        }
    }
    return NULL;
}

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

static const fts_config_checks_t checks = {
    .mongo_uri = fts_mongo_uri_check,
    .redis_url = check_redis_url,
    .es_url = fts_es_url_check,
};

static void fuzz_config(uint8_t flags, char *text)
{
    fake_env_t env;
    memset(&env, 0, sizeof env);
    for (size_t i = 0; i < sizeof base_env / sizeof base_env[0]; i++) {
        env.names[env.count] = base_env[i][0];
        env.values[env.count] = base_env[i][1];
        env.count++;
    }
    /* Split text in place into NAME=VALUE lines. */
    char *line = text;
    while (line && *line && env.count < MAX_VARIABLES) {
        char *next = strchr(line, '\n');
        if (next) {
            *next++ = '\0';
        }
        char *equals = strchr(line, '=');
        if (equals) {
            *equals = '\0';
            env.names[env.count] = line;
            env.values[env.count] = equals + 1;
            env.count++;
        }
        line = next;
    }
    static const unsigned roles[] = {FTS_ROLE_ALL, FTS_ROLE_EXTRACT, FTS_ROLE_LOAD, 0};
    fts_config_source_t source = {.roles = roles[(flags >> 2) & 3],
                                  .getenv_fn = fake_getenv,
                                  .getenv_context = &env,
                                  .checks = &checks};
    fts_config_t config;
    fts_buffer_t problems = {0};
    fts_error_t err;
    if (fts_config_load(&config, &source, &problems, &err)) {
        fts_buffer_t printed = {0};
        fts_config_print(&config, &checks, &printed);
        fts_buffer_destroy(&printed);
    } else if (problems.len == 0) {
        fuzz_fail("a refused configuration lists no problem");
    }
    fts_config_cleanup(&config);
    fts_buffer_destroy(&problems);
}

static void fuzz_redis_url(const char *text)
{
    fts_error_t err;
    fts_redis_url_t *url = fts_redis_url_parse(text, &err);
    if (url) {
        if (!url->host || url->port < 1 || url->port > 65535 || url->db < 0 || !url->masked) {
            fuzz_fail("a parsed Redis URL is incomplete");
        }
    }
    fts_redis_url_destroy(url);
    bson_free(fts_redis_url_mask(text));
}

static void fuzz_checker(fts_config_check_fn check, const char *text)
{
    fts_error_t err;
    char *masked = NULL;
    if (!check(text, &masked, &err) && masked) {
        fuzz_fail("a refused URL came back masked");
    }
    bson_free(masked);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet_logs();
    if (size < 1) {
        return 0;
    }
    char *text = fuzz_strndup(data + 1, size - 1);
    switch (data[0] % 4) {
    case 0:
        fuzz_config(data[0], text);
        break;
    case 1:
        fuzz_redis_url(text);
        break;
    case 2:
        fuzz_checker(fts_mongo_uri_check, text);
        break;
    default:
        fuzz_checker(fts_es_url_check, text);
        break;
    }
    bson_free(text);
    fts_log_clear_secrets();
    return 0;
}
