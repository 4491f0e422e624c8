/*
 * test_config.c - the settings table: precedence of sources, every kind of bad value, secrets.
 *
 * The environment is a fake table passed through fts_config_source_t, so these tests neither
 * read nor change the process environment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "es_client.h"
#include "es_index.h"
#include "log.h"
#include "mongo_uri.h"
#include "redis_url.h"

/* Variables of one fake environment. */
#define MAX_FAKE_VARIABLES 32

typedef struct {
    const char *names[MAX_FAKE_VARIABLES];
    const char *values[MAX_FAKE_VARIABLES];
    size_t count;
} fake_env_t;

static const char *fake_getenv(const char *name, void *context)
{
    const fake_env_t *env = context;
    for (size_t i = 0; i < env->count; i++) {
        if (strcmp(env->names[i], name) == 0) {
            return env->values[i];
        }
    }
    return NULL;
}

static void fake_set(fake_env_t *env, const char *name, const char *value)
{
    env->names[env->count] = name;
    env->values[env->count] = value;
    env->count++;
}

static bool check_redis(const char *value, char **masked, fts_error_t *err)
{
    fts_redis_url_t *url = fts_redis_url_parse(value, err);
    if (url && masked) {
        *masked = strdup(url->masked);
    }
    fts_redis_url_destroy(url);
    return url != NULL;
}

static bool check_index_name(const char *value, char **masked, fts_error_t *err)
{
    (void)masked;
    return fts_es_index_name_validate(value, "index or alias", err);
}

static const fts_config_checks_t checks = {.mongo_uri = fts_mongo_uri_check,
                                           .redis_url = check_redis,
                                           .es_url = fts_es_url_check,
                                           .es_index_name = check_index_name};

/* A complete, valid environment; tests add or override variables on top of it. */
static void fake_minimal(fake_env_t *env)
{
    memset(env, 0, sizeof *env);
    /* Point FTSYNC_ENV_FILE at an empty file so a stray ./.env cannot change the results. */
    fake_set(env, "FTSYNC_ENV_FILE", "/dev/null");
    fake_set(env, "FTSYNC_MONGO_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0");
    fake_set(env, "FTSYNC_MONGO_DB", "steam");
    fake_set(env, "FTSYNC_MONGO_COLLECTION", "apps");
    fake_set(env, "FTSYNC_ES_INDEX", "apps");
}

typedef struct {
    fts_config_t config;
    fts_buffer_t problems;
    fts_error_t err;
    bool ok;
} load_result_t;

static void load(load_result_t *result, fake_env_t *env, unsigned roles)
{
    memset(result, 0, sizeof *result);
    fts_config_source_t source = {
        .roles = roles, .getenv_fn = fake_getenv, .getenv_context = env, .checks = &checks};
    result->ok = fts_config_load(&result->config, &source, &result->problems, &result->err);
}

static void unload(load_result_t *result)
{
    fts_config_cleanup(&result->config);
    fts_buffer_destroy(&result->problems);
}

/* Loads env, expects failure, and checks the first problem names the variable and the text. */
static void expect_problem(fake_env_t *env, const char *variable, const char *text)
{
    load_result_t result;
    load(&result, env, FTS_ROLE_ALL);
    if (result.ok) {
        fail_msg("expected a problem with %s, but the configuration loaded", variable);
    }
    assert_int_equal(result.err.domain, FTS_ERROR_CONFIG);
    if (strncmp(result.err.message, variable, strlen(variable)) != 0 ||
        !strstr(result.err.message, text)) {
        fail_msg("message \"%s\" does not name %s with \"%s\"", result.err.message, variable, text);
    }
    assert_non_null(strstr(result.problems.data, variable));
    unload(&result);
}

static void test_defaults_apply(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    assert_string_equal(result.config.state_redis_url, "redis://127.0.0.1:6379/0");
    /* The queue Redis defaults to the state Redis. */
    assert_string_equal(result.config.queue_redis_url, "redis://127.0.0.1:6379/0");
    assert_int_equal(result.config.es_urls.count, 1);
    assert_string_equal(result.config.es_urls.items[0], "http://127.0.0.1:9200");
    assert_int_equal(result.config.bulk_max_bytes, 5 * 1024 * 1024);
    assert_int_equal(result.config.log_level, FTS_LOG_INFO);
    assert_int_equal(result.config.log_format, FTS_LOG_FORMAT_LOGFMT);
    assert_string_equal(result.config.id_field, "_id");
    assert_int_equal(result.config.fields.count, 0);
    assert_string_equal(result.config.pipeline, "default");
    assert_false(result.config.dev_mode);
    /* Extract's settings. */
    assert_int_equal(result.config.mongo_scope, FTS_SCOPE_COLLECTION);
    assert_int_equal(result.config.mongo_full_document, FTS_FULL_DOCUMENT_UPDATE_LOOKUP);
    assert_int_equal(result.config.mongo_pre_images, FTS_PRE_IMAGES_OFF);
    assert_int_equal(result.config.on_drop, FTS_ON_DROP_DELETE);
    assert_int_equal(result.config.on_history_lost, FTS_ON_HISTORY_LOST_RESYNC);
    assert_int_equal(result.config.id_map, FTS_ID_MAP_AUTO);
    assert_null(result.config.transform_plugin);
    assert_int_equal(result.config.backlog_max, 100000);
    assert_int_equal(result.config.trim_interval_ms, 10000);
    assert_int_equal(result.config.lease_ttl_ms, 10000);
    assert_int_equal(result.config.worker_crash_limit, 3);
    unload(&result);
}

static void test_values_parsed(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_QUEUE_REDIS_URL", "redis://queue.example:6380/2");
    fake_set(&env, "FTSYNC_ES_URL", "http://a:9200, https://b:9200");
    fake_set(&env, "FTSYNC_FIELDS", "name,short_description, developers,publishers,updated_at");
    fake_set(&env, "FTSYNC_ID_FIELD", "id");
    fake_set(&env, "FTSYNC_BULK_MAX_BYTES", "64KiB");
    fake_set(&env, "FTSYNC_LOG_LEVEL", "debug");
    fake_set(&env, "FTSYNC_LOG_FORMAT", "json");
    fake_set(&env, "FTSYNC_ES_GZIP", "yes");
    fake_set(&env, "FTSYNC_ADMIN_ADDR", "[::]:9090");
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    assert_string_equal(result.config.queue_redis_url, "redis://queue.example:6380/2");
    assert_int_equal(result.config.es_urls.count, 2);
    assert_string_equal(result.config.es_urls.items[1], "https://b:9200");
    assert_int_equal(result.config.fields.count, 5);
    assert_string_equal(result.config.fields.items[2], "developers");
    assert_string_equal(result.config.id_field, "id");
    assert_int_equal(result.config.bulk_max_bytes, 64 * 1024);
    assert_int_equal(result.config.log_level, FTS_LOG_DEBUG);
    assert_int_equal(result.config.log_format, FTS_LOG_FORMAT_JSON);
    assert_true(result.config.es_gzip);
    assert_string_equal(result.config.admin_addr, "[::]:9090");
    unload(&result);
}

static void test_bad_number(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_BULK_MAX_ACTIONS", "12x");
    expect_problem(&env, "FTSYNC_BULK_MAX_ACTIONS", "not a whole number");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_BULK_MAX_ACTIONS", "0");
    expect_problem(&env, "FTSYNC_BULK_MAX_ACTIONS", "outside 1..100000");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_BULK_MAX_BYTES", "5 parsecs");
    expect_problem(&env, "FTSYNC_BULK_MAX_BYTES", "not a size");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_BATCH_SIZE", "99999999999999999999999");
    expect_problem(&env, "FTSYNC_BATCH_SIZE", "out of range");
}

static void test_bad_urls(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_STATE_REDIS_URL", "redis://:hunter22@localhost:99999/0");
    expect_problem(&env, "FTSYNC_STATE_REDIS_URL", "invalid Redis URL");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_URL", "ftp://example.com");
    expect_problem(&env, "FTSYNC_ES_URL", "ftp");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_URL", "http://a:9200,,http://b:9200");
    expect_problem(&env, "FTSYNC_ES_URL", "empty item");

    fake_minimal(&env);
    env.values[1] = "mongo://nowhere";
    expect_problem(&env, "FTSYNC_MONGO_URI", "invalid MongoDB URI");
}

static void test_bad_password_url_never_shown(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_STATE_REDIS_URL", "redis://:hunter22@localhost:99999/0");
    env.values[1] = "mongodb://user:s3cr3tpw@/nohost";
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_false(result.ok);
    assert_null(strstr(result.problems.data, "hunter22"));
    assert_null(strstr(result.problems.data, "s3cr3tpw"));
    assert_non_null(strstr(result.problems.data, "FTSYNC_MONGO_URI"));
    unload(&result);
}

static void test_bad_enums_and_names(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_LOG_LEVEL", "loud");
    expect_problem(&env, "FTSYNC_LOG_LEVEL", "unknown log level \"loud\"");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_LOG_FORMAT", "xml");
    expect_problem(&env, "FTSYNC_LOG_FORMAT", "unknown log format");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_GZIP", "maybe");
    expect_problem(&env, "FTSYNC_ES_GZIP", "not a boolean");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_PIPELINE", "apps}{x");
    expect_problem(&env, "FTSYNC_PIPELINE", "only letters");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ADMIN_ADDR", "localhost");
    expect_problem(&env, "FTSYNC_ADMIN_ADDR", "host:port");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_FIELDS", "name,name");
    expect_problem(&env, "FTSYNC_FIELDS", "listed twice");

    /* Choices are matched exactly: a prefix or another case is refused, naming them all. */
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ON_HISTORY_LOST", "resyn");
    expect_problem(&env, "FTSYNC_ON_HISTORY_LOST", "\"resyn\" is not one of resync|stop");
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_MONGO_FULL_DOCUMENT", "updatelookup");
    expect_problem(&env, "FTSYNC_MONGO_FULL_DOCUMENT", "updateLookup|whenAvailable|required");
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_MONGO_SCOPE", "cluster");
    expect_problem(&env, "FTSYNC_MONGO_SCOPE", "\"cluster\" is not one of collection|database");
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_MONGO_PRE_IMAGES", "on");
    expect_problem(&env, "FTSYNC_MONGO_PRE_IMAGES",
                   "\"on\" is not one of off|whenAvailable|required");
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ON_DROP", "Delete");
    expect_problem(&env, "FTSYNC_ON_DROP", "\"Delete\" is not one of delete|ignore");
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ID_MAP", "true");
    expect_problem(&env, "FTSYNC_ID_MAP", "\"true\" is not one of auto|on|off");
}

/* Every choice setting parses into its enum, is printed back by its name, and its choices are
 * listed in the help. */
static void test_choices_parse_into_enums(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_MONGO_SCOPE", "database");
    fake_set(&env, "FTSYNC_MONGO_FULL_DOCUMENT", "whenAvailable");
    fake_set(&env, "FTSYNC_MONGO_PRE_IMAGES", "required");
    fake_set(&env, "FTSYNC_ON_DROP", "ignore");
    fake_set(&env, "FTSYNC_ON_HISTORY_LOST", "stop");
    fake_set(&env, "FTSYNC_ID_MAP", "off");
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    assert_int_equal(result.config.mongo_scope, FTS_SCOPE_DATABASE);
    assert_int_equal(result.config.mongo_full_document, FTS_FULL_DOCUMENT_WHEN_AVAILABLE);
    assert_int_equal(result.config.mongo_pre_images, FTS_PRE_IMAGES_REQUIRED);
    assert_int_equal(result.config.on_drop, FTS_ON_DROP_IGNORE);
    assert_int_equal(result.config.on_history_lost, FTS_ON_HISTORY_LOST_STOP);
    assert_int_equal(result.config.id_map, FTS_ID_MAP_OFF);

    fts_buffer_t printed = {0};
    fts_config_print(&result.config, &checks, &printed);
    assert_non_null(strstr(printed.data, "FTSYNC_MONGO_SCOPE=database "));
    assert_non_null(strstr(printed.data, "FTSYNC_MONGO_FULL_DOCUMENT=whenAvailable "));
    assert_non_null(strstr(printed.data, "FTSYNC_MONGO_PRE_IMAGES=required "));
    assert_non_null(strstr(printed.data, "FTSYNC_ON_DROP=ignore "));
    assert_non_null(strstr(printed.data, "FTSYNC_ON_HISTORY_LOST=stop "));
    assert_non_null(strstr(printed.data, "FTSYNC_ID_MAP=off "));
    fts_buffer_destroy(&printed);
    unload(&result);

    /* The other values of each, and the defaults printed by name. */
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_MONGO_FULL_DOCUMENT", "required");
    fake_set(&env, "FTSYNC_MONGO_PRE_IMAGES", "whenAvailable");
    fake_set(&env, "FTSYNC_ID_MAP", "on");
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    assert_int_equal(result.config.id_map, FTS_ID_MAP_ON);
    assert_int_equal(result.config.mongo_full_document, FTS_FULL_DOCUMENT_REQUIRED);
    assert_int_equal(result.config.mongo_pre_images, FTS_PRE_IMAGES_WHEN_AVAILABLE);
    fts_config_print(&result.config, &checks, &printed);
    assert_non_null(strstr(printed.data, "FTSYNC_MONGO_SCOPE=collection "));
    assert_non_null(strstr(printed.data, "FTSYNC_ON_DROP=delete "));
    assert_non_null(strstr(printed.data, "FTSYNC_ON_HISTORY_LOST=resync "));
    fts_buffer_destroy(&printed);
    unload(&result);

    fts_buffer_t help = {0};
    fts_config_print_help(&help);
    assert_non_null(strstr(help.data, "FTSYNC_MONGO_SCOPE (collection|database)"));
    assert_non_null(
        strstr(help.data, "FTSYNC_MONGO_FULL_DOCUMENT (updateLookup|whenAvailable|required)"));
    assert_non_null(strstr(help.data, "FTSYNC_MONGO_PRE_IMAGES (off|whenAvailable|required)"));
    assert_non_null(strstr(help.data, "FTSYNC_ON_DROP (delete|ignore)"));
    assert_non_null(strstr(help.data, "FTSYNC_ON_HISTORY_LOST (resync|stop)"));
    assert_non_null(strstr(help.data, "FTSYNC_ID_MAP (auto|on|off)"));
    fts_buffer_destroy(&help);

    int value = -1;
    assert_true(fts_config_choice_parse(fts_on_history_lost_names, "stop", &value));
    assert_int_equal(value, FTS_ON_HISTORY_LOST_STOP);
    assert_false(fts_config_choice_parse(fts_on_history_lost_names, "sto", &value));
    assert_false(fts_config_choice_parse(fts_on_history_lost_names, "", &value));
    assert_int_equal(value, FTS_ON_HISTORY_LOST_STOP);
}

static void test_missing_required(void **state)
{
    (void)state;
    fake_env_t env;
    memset(&env, 0, sizeof env);
    fake_set(&env, "FTSYNC_ENV_FILE", "/dev/null");
    expect_problem(&env, "FTSYNC_MONGO_URI", "required but not set");

    /* A load-only process does not need the MongoDB settings, only the index. */
    load_result_t result;
    load(&result, &env, FTS_ROLE_LOAD);
    assert_false(result.ok);
    assert_non_null(strstr(result.err.message, "FTSYNC_ES_INDEX: required"));
    assert_null(strstr(result.problems.data, "FTSYNC_MONGO_URI"));
    /* Every problem is listed, and the first error says more follow. */
    unload(&result);

    fake_set(&env, "FTSYNC_ES_INDEX", "apps");
    load(&result, &env, FTS_ROLE_LOAD);
    assert_true(result.ok);
    unload(&result);

    memset(&env, 0, sizeof env);
    fake_set(&env, "FTSYNC_ENV_FILE", "/dev/null");
    load(&result, &env, FTS_ROLE_ALL);
    assert_non_null(strstr(result.problems.data, "FTSYNC_MONGO_DB"));
    assert_non_null(strstr(result.problems.data, "FTSYNC_MONGO_COLLECTION"));
    assert_non_null(strstr(result.problems.data, "FTSYNC_ES_INDEX"));
    assert_non_null(strstr(result.err.message, "more problems"));
    unload(&result);
}

static void test_unreadable_files(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_INDEX_DEFINITION", "/nonexistent/index.json");
    expect_problem(&env, "FTSYNC_ES_INDEX_DEFINITION", "cannot read /nonexistent/index.json");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_PASSWORD_FILE", "/nonexistent/password");
    expect_problem(&env, "FTSYNC_ES_PASSWORD", "FTSYNC_ES_PASSWORD_FILE: cannot read");

    fake_minimal(&env);
    env.values[0] = "/nonexistent/.env";
    expect_problem(&env, "FTSYNC_ENV_FILE", "cannot read /nonexistent/.env");
}

static char *write_temp_file(const char *contents)
{
    char *path = strdup("/tmp/ftsync-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, contents, strlen(contents)), (ssize_t)strlen(contents));
    close(fd);
    return path;
}

static void test_secret_file_and_precedence(void **state)
{
    (void)state;
    char *secret = write_temp_file("pa55-from-file\n");
    char *dotenv = write_temp_file("# comment\n"
                                   "export FTSYNC_LOG_LEVEL=warn\n"
                                   "FTSYNC_PIPELINE=\"from-dotenv\"\n"
                                   "FTSYNC_BATCH_SIZE='42'\n"
                                   "FTSYNC_ES_USER=elastic\n");
    fake_env_t env;
    fake_minimal(&env);
    env.values[0] = dotenv;
    fake_set(&env, "FTSYNC_ES_PASSWORD_FILE", secret);
    fake_set(&env, "FTSYNC_PIPELINE", "from-environment");
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    /* The trailing newline of the secret file is not part of the secret. */
    assert_string_equal(result.config.es_password, "pa55-from-file");
    assert_string_equal(result.config.es_user, "elastic");
    /* The environment beats the .env file. */
    assert_string_equal(result.config.pipeline, "from-environment");
    assert_int_equal(result.config.batch_size, 42);
    assert_int_equal(result.config.log_level, FTS_LOG_WARN);

    fts_buffer_t printed = {0};
    fts_config_print(&result.config, &checks, &printed);
    assert_null(strstr(printed.data, "pa55-from-file"));
    assert_non_null(strstr(printed.data, "FTSYNC_ES_PASSWORD=***"));
    assert_non_null(strstr(printed.data, "file named by _FILE"));
    assert_non_null(strstr(printed.data, ".env file"));
    fts_buffer_destroy(&printed);

    /* The secret is scrubbed from log lines too. */
    char redacted[128];
    fts_log_redact("login with pa55-from-file failed", redacted, sizeof redacted);
    assert_string_equal(redacted, "login with *** failed");
    unload(&result);

    /* Both a variable and its _FILE twin: ambiguous, refused. */
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_PASSWORD", "x");
    fake_set(&env, "FTSYNC_ES_PASSWORD_FILE", secret);
    expect_problem(&env, "FTSYNC_ES_PASSWORD", "not both");

    unlink(secret);
    unlink(dotenv);
    free(secret);
    free(dotenv);
    fts_log_clear_secrets();
}

static void test_malformed_dotenv(void **state)
{
    (void)state;
    char *dotenv = write_temp_file("FTSYNC_LOG_LEVEL=info\nthis line has no equals sign\n");
    fake_env_t env;
    fake_minimal(&env);
    env.values[0] = dotenv;
    expect_problem(&env, "FTSYNC_ENV_FILE", "line 2: expected NAME=value");
    unlink(dotenv);
    free(dotenv);
}

static void test_placeholder_refused_unless_dev_mode(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_USER", "elastic");
    fake_set(&env, "FTSYNC_ES_PASSWORD", "CHANGE-ME");
    expect_problem(&env, "FTSYNC_ES_PASSWORD", "placeholder CHANGE-ME");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_STATE_REDIS_URL", "redis://:CHANGE-ME@localhost:6379/0");
    expect_problem(&env, "FTSYNC_STATE_REDIS_URL", "placeholder");

    fake_set(&env, "FTSYNC_DEV_MODE", "true");
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    assert_true(result.config.dev_mode);
    unload(&result);
    fts_log_clear_secrets();
}

static void test_auth_combinations(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_USER", "elastic");
    expect_problem(&env, "FTSYNC_ES_PASSWORD", "password is needed");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_API_KEY", "a2V5OnNlY3JldA==");
    fake_set(&env, "FTSYNC_ES_USER", "elastic");
    fake_set(&env, "FTSYNC_ES_PASSWORD", "pw-123");
    expect_problem(&env, "FTSYNC_ES_API_KEY", "not both");
    fts_log_clear_secrets();
}

static void test_print_masks_url_passwords(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    env.values[1] = "mongodb://reader:m0ng0pw@db1:27017,db2:27017/?replicaSet=rs0";
    fake_set(&env, "FTSYNC_STATE_REDIS_URL", "redis://:r3disp4ss@redis:6379/1");
    fake_set(&env, "FTSYNC_ES_URL", "https://elastic:3sp4ss@es:9200");
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    fts_buffer_t printed = {0};
    fts_config_print(&result.config, &checks, &printed);
    assert_null(strstr(printed.data, "m0ng0pw"));
    assert_null(strstr(printed.data, "r3disp4ss"));
    assert_null(strstr(printed.data, "3sp4ss"));
    assert_non_null(strstr(printed.data, "FTSYNC_MONGO_URI=mongodb://reader:***@db1:27017"));
    assert_non_null(strstr(printed.data, "FTSYNC_STATE_REDIS_URL=redis://:***@redis:6379/1"));
    /* The default queue URL is the state URL, masked the same way. */
    assert_non_null(strstr(printed.data, "FTSYNC_QUEUE_REDIS_URL=redis://:***@redis:6379/1"));
    fts_buffer_destroy(&printed);
    unload(&result);
    fts_log_clear_secrets();
}

static void test_help_lists_every_setting(void **state)
{
    (void)state;
    fts_buffer_t help = {0};
    fts_config_print_help(&help);
    static const char *const expected[] = {"FTSYNC_MONGO_URI",        "FTSYNC_MONGO_DB",
                                           "FTSYNC_MONGO_COLLECTION", "FTSYNC_STATE_REDIS_URL",
                                           "FTSYNC_QUEUE_REDIS_URL",  "FTSYNC_ES_URL",
                                           "FTSYNC_ES_INDEX",         "FTSYNC_ES_INDEX_DEFINITION",
                                           "FTSYNC_ES_USER",          "FTSYNC_ES_PASSWORD",
                                           "FTSYNC_ES_API_KEY",       "FTSYNC_ES_CA_FILE",
                                           "FTSYNC_ES_DOC_TYPE",      "FTSYNC_PIPELINE",
                                           "FTSYNC_ADMIN_ADDR",       "FTSYNC_LOG_LEVEL",
                                           "FTSYNC_LOG_FORMAT",       "FTSYNC_ID_FIELD",
                                           "FTSYNC_FIELDS",           "FTSYNC_BULK_MAX_ACTIONS",
                                           "FTSYNC_BULK_MAX_BYTES",   "FTSYNC_DEV_MODE"};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        if (!strstr(help.data, expected[i])) {
            fail_msg("%s missing from the help", expected[i]);
        }
    }
    assert_non_null(strstr(help.data, "default: http://127.0.0.1:9200"));
    assert_non_null(strstr(help.data, "default: the value of FTSYNC_STATE_REDIS_URL"));
    assert_non_null(strstr(help.data, "required by: extract"));
    /* What is built is advertised as working, and nothing more: the admin endpoint is. */
    assert_null(strstr(help.data, "the endpoint is not built yet"));
    assert_non_null(strstr(help.data, "GET /healthz, /readyz, /metrics, /status"));
    assert_non_null(strstr(help.data, "FTSYNC_HEALTH_STALL_MS"));
    /* Drops and sweeps are applied by load now (README.md, Load), and the help says so. */
    assert_null(strstr(help.data, "does not apply it yet"));
    assert_non_null(strstr(help.data, "load then removes every document of the collection"));
    assert_non_null(strstr(help.data, "queue a sweep, which load applies"));
    fts_buffer_destroy(&help);
}

/* What a role would refuse when it starts is refused by loading, naming the variable: the
 * field list and id field (the projection's rules), index names (Elasticsearch's rules), file
 * settings naming something that is not a regular file, and the retry bounds. */
static void test_refuses_what_roles_refuse(void **state)
{
    (void)state;
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_FIELDS", "_id,name");
    expect_problem(&env, "FTSYNC_FIELDS", "metadata field");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_FIELDS", "a..b");
    expect_problem(&env, "FTSYNC_FIELDS", "empty name between dots");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ID_FIELD", ".");
    expect_problem(&env, "FTSYNC_ID_FIELD", "empty name between dots");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_INDEX_DEFINITION", "/tmp");
    expect_problem(&env, "FTSYNC_ES_INDEX_DEFINITION", "not a regular file");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_CA_FILE", "/tmp");
    expect_problem(&env, "FTSYNC_ES_CA_FILE", "not a regular file");

    fake_minimal(&env);
    fake_set(&env, "FTSYNC_RETRY_BASE_MS", "5000");
    fake_set(&env, "FTSYNC_RETRY_MAX_MS", "1000");
    expect_problem(&env, "FTSYNC_RETRY_BASE_MS", "above FTSYNC_RETRY_MAX_MS");

    static const char *const bad_indices[] = {"_all", "s4?x=1", "..", "Apps"};
    for (size_t i = 0; i < sizeof bad_indices / sizeof bad_indices[0]; i++) {
        fake_minimal(&env);
        env.values[4] = bad_indices[i]; /* FTSYNC_ES_INDEX */
        expect_problem(&env, "FTSYNC_ES_INDEX", bad_indices[i]);
    }
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_ALIAS", "_all");
    expect_problem(&env, "FTSYNC_ES_ALIAS", "_all");

    /* A _FILE naming a FIFO would block a plain open() until a writer comes: refused at once. */
    char fifo[] = "/tmp/ftsync-test-fifo-XXXXXX";
    int fd = mkstemp(fifo);
    assert_true(fd >= 0);
    close(fd);
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_API_KEY_FILE", fifo);
    expect_problem(&env, "FTSYNC_ES_API_KEY", "not a regular file");
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_TRANSFORM_PLUGIN", fifo);
    expect_problem(&env, "FTSYNC_TRANSFORM_PLUGIN", "not a regular file");
    fake_minimal(&env);
    env.values[0] = fifo; /* FTSYNC_ENV_FILE */
    expect_problem(&env, "FTSYNC_ENV_FILE", "not a regular file");
    unlink(fifo);

    /* Valid neighbours still load. */
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_FIELDS", "name,prices.us.final:price,_id:mongo_id");
    fake_set(&env, "FTSYNC_ID_FIELD", "meta.key");
    fake_set(&env, "FTSYNC_ES_ALIAS", "apps-live");
    fake_set(&env, "FTSYNC_RETRY_BASE_MS", "1000");
    fake_set(&env, "FTSYNC_RETRY_MAX_MS", "1000");
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    if (!result.ok) {
        fail_msg("%s", result.problems.data);
    }
    unload(&result);
}

/* The base64 form of the Basic credentials is registered with the logger along with the
 * password, so an echo of the Authorization header is masked too. */
static void test_basic_credentials_registered(void **state)
{
    (void)state;
    fts_log_reset();
    fake_env_t env;
    fake_minimal(&env);
    fake_set(&env, "FTSYNC_ES_USER", "elastic");
    fake_set(&env, "FTSYNC_ES_PASSWORD", "very-secret-pw");
    load_result_t result;
    load(&result, &env, FTS_ROLE_ALL);
    assert_true(result.ok);
    char out[256];
    fts_log_redact("Authorization: Basic ZWxhc3RpYzp2ZXJ5LXNlY3JldC1wdw==", out, sizeof out);
    assert_string_equal(out, "Authorization: Basic ***");
    unload(&result);
    fts_log_reset();
}

static void test_size_parser(void **state)
{
    (void)state;
    int64_t bytes;
    fts_error_t err;
    assert_true(fts_config_parse_size("512", &bytes, &err));
    assert_int_equal(bytes, 512);
    assert_true(fts_config_parse_size("5m", &bytes, &err));
    assert_int_equal(bytes, 5 * 1024 * 1024);
    assert_true(fts_config_parse_size("1GiB", &bytes, &err));
    assert_int_equal(bytes, 1024 * 1024 * 1024);
    assert_true(fts_config_parse_size("64kb", &bytes, &err));
    assert_int_equal(bytes, 64 * 1024);
    assert_false(fts_config_parse_size("-1", &bytes, &err));
    assert_false(fts_config_parse_size("1t", &bytes, &err));
    assert_false(fts_config_parse_size("1mx", &bytes, &err));
    assert_false(fts_config_parse_size("", &bytes, &err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_apply),
        cmocka_unit_test(test_values_parsed),
        cmocka_unit_test(test_bad_number),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_bad_password_url_never_shown),
        cmocka_unit_test(test_bad_enums_and_names),
        cmocka_unit_test(test_choices_parse_into_enums),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_unreadable_files),
        cmocka_unit_test(test_secret_file_and_precedence),
        cmocka_unit_test(test_malformed_dotenv),
        cmocka_unit_test(test_placeholder_refused_unless_dev_mode),
        cmocka_unit_test(test_auth_combinations),
        cmocka_unit_test(test_print_masks_url_passwords),
        cmocka_unit_test(test_help_lists_every_setting),
        cmocka_unit_test(test_size_parser),
        cmocka_unit_test(test_refuses_what_roles_refuse),
        cmocka_unit_test(test_basic_credentials_registered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
