/*
 * test_cli.c - the ftsync binary as an operator meets it: --version, config, config --help,
 * and the exit status 2 with a message naming the variable for every kind of bad value.
 *
 * Each case runs the real binary with an environment built here (nothing inherited), so no
 * server is needed: these are unit tests of the command line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buffer.h"

/* Variables in one run's environment. */
#define MAX_VARIABLES 24

typedef struct {
    int status;
    fts_buffer_t out;
    fts_buffer_t err;
} run_result_t;

static void drain(int fd, fts_buffer_t *into)
{
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0) {
        fts_buffer_append(into, chunk, (size_t)got);
    }
    if (!into->data) {
        fts_buffer_append(into, "", 0);
    }
}

/* Runs ftsync with args (NULL-terminated) and env ("NAME=value" strings, NULL-terminated).
 * The environment always points FTSYNC_ENV_FILE at /dev/null unless env sets it. */
static void run(run_result_t *result, const char *const *args, const char *const *env)
{
    memset(result, 0, sizeof *result);
    char out_path[] = "/tmp/ftsync-cli-out-XXXXXX";
    char err_path[] = "/tmp/ftsync-cli-err-XXXXXX";
    int out_fd = mkstemp(out_path);
    int err_fd = mkstemp(err_path);
    assert_true(out_fd >= 0 && err_fd >= 0);

    const char *argv[16] = {FTSYNC_BINARY};
    size_t argc = 1;
    for (; args && args[argc - 1]; argc++) {
        argv[argc] = args[argc - 1];
    }
    argv[argc] = NULL;
    const char *envp[MAX_VARIABLES + 3] = {"PATH=/usr/bin:/bin"};
    size_t envc = 1;
    bool env_file_given = false;
    for (size_t i = 0; env && env[i]; i++) {
        envp[envc++] = env[i];
        env_file_given |= strncmp(env[i], "FTSYNC_ENV_FILE=", 16) == 0;
    }
    if (!env_file_given) {
        envp[envc++] = "FTSYNC_ENV_FILE=/dev/null";
    }
    envp[envc] = NULL;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        execve(FTSYNC_BINARY, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    result->status = WEXITSTATUS(status);
    lseek(out_fd, 0, SEEK_SET);
    lseek(err_fd, 0, SEEK_SET);
    drain(out_fd, &result->out);
    drain(err_fd, &result->err);
    close(out_fd);
    close(err_fd);
    unlink(out_path);
    unlink(err_path);
}

static void cleanup(run_result_t *result)
{
    fts_buffer_destroy(&result->out);
    fts_buffer_destroy(&result->err);
}

#define VALID_ENV                                                                                  \
    "FTSYNC_MONGO_URI=mongodb://127.0.0.1:27017/?replicaSet=rs0", "FTSYNC_MONGO_DB=steam",         \
        "FTSYNC_MONGO_COLLECTION=apps", "FTSYNC_ES_INDEX=apps"

/* Expects `ftsync config` with env to exit 2 and name variable and text on stderr. */
static void expect_config_refused(const char *const *env, const char *variable, const char *text)
{
    run_result_t result;
    const char *const args[] = {"config", NULL};
    run(&result, args, env);
    if (result.status != 2 || !strstr(result.err.data, variable) ||
        !strstr(result.err.data, text)) {
        fail_msg("expected exit 2 naming %s with \"%s\"; got %d and stderr:\n%s", variable, text,
                 result.status, result.err.data);
    }
    assert_string_equal(result.out.data, ""); /* nothing half-printed on stdout */
    cleanup(&result);
}

static void test_version(void **state)
{
    (void)state;
    run_result_t result;
    const char *const args[] = {"--version", NULL};
    run(&result, args, NULL);
    assert_int_equal(result.status, 0);
    assert_true(strncmp(result.out.data, "ftsync " FTSYNC_VERSION "\n", 8) == 0);
    assert_string_equal(result.out.data, "ftsync " FTSYNC_VERSION "\n");
    cleanup(&result);
}

static void test_config_help(void **state)
{
    (void)state;
    run_result_t result;
    const char *const args[] = {"config", "--help", NULL};
    run(&result, args, NULL);
    assert_int_equal(result.status, 0);
    assert_non_null(strstr(result.out.data, "FTSYNC_ES_INDEX_DEFINITION"));
    assert_non_null(strstr(result.out.data, "default: logfmt"));
    assert_non_null(strstr(result.out.data, "_FILE"));
    cleanup(&result);
}

static void test_config_prints_masked(void **state)
{
    (void)state;
    const char *const env[] = {
        VALID_ENV, "FTSYNC_ES_USER=elastic", "FTSYNC_ES_PASSWORD=very-secret-pw",
        "FTSYNC_STATE_REDIS_URL=redis://:redis-secret@127.0.0.1:6379/0", NULL};
    run_result_t result;
    const char *const args[] = {"config", NULL};
    run(&result, args, env);
    assert_int_equal(result.status, 0);
    assert_non_null(strstr(result.out.data, "FTSYNC_ES_USER=elastic"));
    assert_non_null(strstr(result.out.data, "FTSYNC_ES_PASSWORD=***"));
    assert_non_null(strstr(result.out.data, "redis://:***@127.0.0.1:6379/0"));
    assert_null(strstr(result.out.data, "very-secret-pw"));
    assert_null(strstr(result.out.data, "redis-secret"));
    assert_null(strstr(result.err.data, "very-secret-pw"));
    cleanup(&result);
}

static void test_config_bad_values_exit_2(void **state)
{
    (void)state;
    const char *const bad_number[] = {VALID_ENV, "FTSYNC_BULK_MAX_ACTIONS=lots", NULL};
    expect_config_refused(bad_number, "FTSYNC_BULK_MAX_ACTIONS", "not a whole number");

    const char *const bad_url[] = {VALID_ENV, "FTSYNC_ES_URL=http://", NULL};
    expect_config_refused(bad_url, "FTSYNC_ES_URL", "http://");

    const char *const bad_redis[] = {VALID_ENV, "FTSYNC_QUEUE_REDIS_URL=redis://host:port", NULL};
    expect_config_refused(bad_redis, "FTSYNC_QUEUE_REDIS_URL", "invalid Redis URL");

    const char *const bad_level[] = {VALID_ENV, "FTSYNC_LOG_LEVEL=chatty", NULL};
    expect_config_refused(bad_level, "FTSYNC_LOG_LEVEL", "unknown log level");

    const char *const missing[] = {"FTSYNC_MONGO_DB=steam", "FTSYNC_MONGO_COLLECTION=apps",
                                   "FTSYNC_ES_INDEX=apps", NULL};
    expect_config_refused(missing, "FTSYNC_MONGO_URI", "required but not set");

    const char *const unreadable[] = {VALID_ENV,
                                      "FTSYNC_ES_INDEX_DEFINITION=/nonexistent/apps.json", NULL};
    expect_config_refused(unreadable, "FTSYNC_ES_INDEX_DEFINITION", "cannot read");

    const char *const unreadable_secret[] = {VALID_ENV, "FTSYNC_ES_API_KEY_FILE=/nonexistent/key",
                                             NULL};
    expect_config_refused(unreadable_secret, "FTSYNC_ES_API_KEY", "cannot read");

    const char *const placeholder[] = {VALID_ENV, "FTSYNC_ES_API_KEY=CHANGE-ME", NULL};
    expect_config_refused(placeholder, "FTSYNC_ES_API_KEY", "placeholder");

    const char *const env_file[] = {VALID_ENV, "FTSYNC_ENV_FILE=/nonexistent/.env", NULL};
    expect_config_refused(env_file, "FTSYNC_ENV_FILE", "cannot read");
}

static void test_config_role_limits_required(void **state)
{
    (void)state;
    const char *const env[] = {"FTSYNC_ES_INDEX=apps", NULL};
    run_result_t result;
    const char *const args[] = {"config", "--role", "load", NULL};
    run(&result, args, env);
    assert_int_equal(result.status, 0);
    cleanup(&result);

    const char *const bad_role[] = {"config", "--role", "both", NULL};
    run(&result, bad_role, env);
    assert_int_equal(result.status, 2);
    assert_non_null(strstr(result.err.data, "unknown role \"both\""));
    cleanup(&result);
}

static void test_bad_arguments_exit_2(void **state)
{
    (void)state;
    run_result_t result;
    const char *const unknown_command[] = {"frobnicate", NULL};
    run(&result, unknown_command, NULL);
    assert_int_equal(result.status, 2);
    assert_non_null(strstr(result.err.data, "unknown command \"frobnicate\""));
    cleanup(&result);

    const char *const unknown_option[] = {"config", "--colour", NULL};
    run(&result, unknown_option, NULL);
    assert_int_equal(result.status, 2);
    assert_non_null(strstr(result.err.data, "colour"));
    cleanup(&result);

    const char *const extra_argument[] = {"init-index", "apps", NULL};
    run(&result, extra_argument, NULL);
    assert_int_equal(result.status, 2);
    assert_non_null(strstr(result.err.data, "unexpected argument \"apps\""));
    cleanup(&result);

    run(&result, NULL, NULL);
    assert_int_equal(result.status, 2);
    assert_non_null(strstr(result.err.data, "usage: ftsync"));
    cleanup(&result);
}

static void test_unknown_variable_warned(void **state)
{
    (void)state;
    const char *const env[] = {VALID_ENV, "FTSYNC_ES_UR=http://typo:9200",
                               "FTSYNC_SERVICE_HOST=10.0.0.1", "FTSYNC_ES_PASSWORD_FILE=/dev/null",
                               NULL};
    run_result_t result;
    const char *const args[] = {"config", NULL};
    run(&result, args, env);
    assert_int_equal(result.status, 0);
    assert_non_null(strstr(result.err.data, "FTSYNC_ES_UR is not a setting"));
    /* Kubernetes' own service variables are not typos. */
    assert_null(strstr(result.err.data, "FTSYNC_SERVICE_HOST"));
    /* Nor are FTSYNC_ENV_FILE (set by run()) and a setting's _FILE twin. */
    assert_null(strstr(result.err.data, "FTSYNC_ENV_FILE"));
    assert_null(strstr(result.err.data, "FTSYNC_ES_PASSWORD_FILE"));
    cleanup(&result);
}

static void test_readme_documents_every_setting(void **state)
{
    (void)state;
    run_result_t result;
    const char *const args[] = {"config", "--help", NULL};
    run(&result, args, NULL);
    assert_int_equal(result.status, 0);

    FILE *readme = fopen(FTSYNC_SOURCE_DIR "/README.md", "r");
    assert_non_null(readme);
    fts_buffer_t text = {0};
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, readme)) > 0) {
        fts_buffer_append(&text, chunk, got);
    }
    fclose(readme);

    size_t settings_seen = 0;
    for (char *line = result.out.data; line && *line;) {
        char *end = strchr(line, '\n');
        if (strncmp(line, "FTSYNC_", 7) == 0) {
            char quoted[128];
            snprintf(quoted, sizeof quoted, "`%.*s`", (int)strcspn(line, " "), line);
            if (!strstr(text.data, quoted)) {
                fail_msg("README.md does not document %s", quoted);
            }
            settings_seen++;
        }
        line = end ? end + 1 : NULL;
    }
    assert_true(settings_seen >= 25);
    fts_buffer_destroy(&text);
    cleanup(&result);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_config_help),
        cmocka_unit_test(test_config_prints_masked),
        cmocka_unit_test(test_config_bad_values_exit_2),
        cmocka_unit_test(test_config_role_limits_required),
        cmocka_unit_test(test_bad_arguments_exit_2),
        cmocka_unit_test(test_unknown_variable_warned),
        cmocka_unit_test(test_readme_documents_every_setting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
