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
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buffer.h"
#include "http_capture.h"

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

/* Seconds after which a run is killed by SIGALRM (its status is then 128 + SIGALRM). */
static unsigned run_alarm_seconds = 60;

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
        /* A run that hangs (a FIFO opened for reading blocks) is killed instead of hanging the
         * test: the alarm survives execve. */
        alarm(run_alarm_seconds);
        execve(FTSYNC_BINARY, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) || WIFSIGNALED(status));
    result->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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

/* Everything a role would refuse at start is refused by `ftsync config` (and by `check`, which
 * loads the same table) with exit 2 and the variable named. */
static void test_config_refuses_what_roles_refuse(void **state)
{
    (void)state;
    const char *const fields_id[] = {VALID_ENV, "FTSYNC_FIELDS=_id,name", NULL};
    expect_config_refused(fields_id, "FTSYNC_FIELDS", "metadata field");
    const char *const fields_dots[] = {VALID_ENV, "FTSYNC_FIELDS=a..b", NULL};
    expect_config_refused(fields_dots, "FTSYNC_FIELDS", "empty name between dots");
    const char *const id_dot[] = {VALID_ENV, "FTSYNC_ID_FIELD=.", NULL};
    expect_config_refused(id_dot, "FTSYNC_ID_FIELD", "empty name between dots");
    const char *const definition_dir[] = {VALID_ENV, "FTSYNC_ES_INDEX_DEFINITION=/tmp", NULL};
    expect_config_refused(definition_dir, "FTSYNC_ES_INDEX_DEFINITION", "not a regular file");
    const char *const ca_dir[] = {VALID_ENV, "FTSYNC_ES_CA_FILE=/tmp", NULL};
    expect_config_refused(ca_dir, "FTSYNC_ES_CA_FILE", "not a regular file");
    const char *const retry[] = {VALID_ENV, "FTSYNC_RETRY_BASE_MS=5000", "FTSYNC_RETRY_MAX_MS=1000",
                                 NULL};
    expect_config_refused(retry, "FTSYNC_RETRY_BASE_MS", "above FTSYNC_RETRY_MAX_MS");

    static const char *const bad_indices[] = {"FTSYNC_ES_INDEX=_all", "FTSYNC_ES_INDEX=s4?x=1",
                                              "FTSYNC_ES_INDEX=.."};
    for (size_t i = 0; i < sizeof bad_indices / sizeof bad_indices[0]; i++) {
        const char *const env[] = {"FTSYNC_MONGO_URI=mongodb://127.0.0.1:27017/?replicaSet=rs0",
                                   "FTSYNC_MONGO_DB=steam", "FTSYNC_MONGO_COLLECTION=apps",
                                   bad_indices[i], NULL};
        expect_config_refused(env, "FTSYNC_ES_INDEX", bad_indices[i] + strlen("FTSYNC_ES_INDEX="));
        /* check loads the same table: refused before any server is asked. */
        run_result_t result;
        const char *const args[] = {"check", NULL};
        run(&result, args, env);
        if (result.status != 2 || !strstr(result.err.data, "FTSYNC_ES_INDEX")) {
            fail_msg("check with %s: exit %d, stdout:\n%s\nstderr:\n%s", bad_indices[i],
                     result.status, result.out.data, result.err.data);
        }
        cleanup(&result);
    }

    char fifo[] = "/tmp/ftsync-cli-fifo-XXXXXX";
    int fd = mkstemp(fifo);
    assert_true(fd >= 0);
    close(fd);
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char variable[128];
    snprintf(variable, sizeof variable, "FTSYNC_ES_PASSWORD_FILE=%s", fifo);
    const char *const fifo_env[] = {VALID_ENV, "FTSYNC_ES_USER=elastic", variable, NULL};
    expect_config_refused(fifo_env, "FTSYNC_ES_PASSWORD", "not a regular file");
    unlink(fifo);
}

/* Fails the test when text holds needle, saying which output and which form leaked. */
static void expect_absent(const char *text, const char *needle, const char *what)
{
    if (strstr(text, needle)) {
        fail_msg("%s leaks \"%s\":\n%s", what, needle, text);
    }
}

/* Runs `ftsync check` and `ftsync config` against a server that echoes the request headers
 * (padding placed so that the reply quote is cut inside the credentials), and greps stdout and
 * stderr for each planted secret in full and cut short. */
static void expect_no_leak(const char *const *env, const char *const *secrets, size_t padding)
{
    fts_error_t err;
    fts_http_capture_t *server = fts_http_capture_new(&err);
    assert_non_null(server);
    fts_http_capture_set_reply(server, 401, "text/plain", "");
    fts_http_capture_set_echo(server, true, padding);
    char url[128];
    snprintf(url, sizeof url, "FTSYNC_ES_URL=%s", fts_http_capture_url(server));
    const char *full_env[MAX_VARIABLES];
    size_t count = 0;
    for (; env[count]; count++) {
        full_env[count] = env[count];
    }
    full_env[count++] = url;
    /* Nothing listens there: Redis fails at once and the Elasticsearch checks still run. */
    full_env[count++] = "FTSYNC_STATE_REDIS_URL=redis://127.0.0.1:1/0";
    full_env[count++] = "FTSYNC_ES_REQUEST_TIMEOUT_MS=5000";
    full_env[count] = NULL;

    static const char *const commands[] = {"check", "config", "load"};
    for (size_t c = 0; c < 3; c++) {
        run_result_t result;
        const char *const args[] = {commands[c], NULL};
        size_t requests_before = fts_http_capture_count(server);
        /* load waits for Elasticsearch, logging each refusal: it is stopped after a while. */
        run_alarm_seconds = c == 2 ? 3 : 60;
        run(&result, args, full_env);
        run_alarm_seconds = 60;
        if (c == 1) {
            assert_int_equal(result.status, 0);
        } else {
            /* The hostile server did answer, so the echo was there to leak. */
            assert_true(fts_http_capture_count(server) > requests_before);
            /* check fails; load gives up on a server that refuses it, or is stopped. */
            assert_true(result.status == 1 || (c == 2 && result.status == 128 + SIGALRM));
            assert_non_null(strstr(c == 0 ? result.out.data : result.err.data, "401"));
            /* ... and quoted the echo: what is masked was there to be seen. */
            assert_non_null(strstr(c == 0 ? result.out.data : result.err.data, "Authorization: "));
        }
        for (size_t i = 0; secrets[i]; i++) {
            char cut[16];
            snprintf(cut, sizeof cut, "%.6s", secrets[i]);
            expect_absent(result.out.data, secrets[i], "stdout");
            expect_absent(result.err.data, secrets[i], "stderr");
            expect_absent(result.out.data, cut, "stdout (cut)");
            expect_absent(result.err.data, cut, "stderr (cut)");
        }
        cleanup(&result);
    }
    fts_http_capture_destroy(server);
}

static void test_secrets_never_leak_through_hostile_server(void **state)
{
    (void)state;
    /* The quote of a reply keeps 200 bytes: each padding puts the cut inside the secret. */
    const char *const api_key_env[] = {VALID_ENV,
                                       "FTSYNC_ES_API_KEY=QmFkS2V5SWQ6c2VjcmV0a2V5OTk=", NULL};
    const char *const api_key[] = {"QmFkS2V5SWQ6c2VjcmV0a2V5OTk=", NULL};
    expect_no_leak(api_key_env, api_key, 200 - strlen("Authorization: ApiKey ") - 8);
    expect_no_leak(api_key_env, api_key, 0);

    /* Basic: base64("elastic:very-secret-pw") is what goes on the wire. */
    const char *const basic_env[] = {VALID_ENV, "FTSYNC_ES_USER=elastic",
                                     "FTSYNC_ES_PASSWORD=very-secret-pw", NULL};
    const char *const basic[] = {"very-secret-pw", "ZWxhc3RpYzp2ZXJ5LXNlY3JldC1wdw==", NULL};
    expect_no_leak(basic_env, basic, 200 - strlen("Authorization: Basic ") - 8);
    expect_no_leak(basic_env, basic, 0);
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
        cmocka_unit_test(test_config_refuses_what_roles_refuse),
        cmocka_unit_test(test_secrets_never_leak_through_hostile_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
