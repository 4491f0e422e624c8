/*
 * test_cli_ops.c - the command lines of the operator's commands (status, dlq, verify,
 * reset-token's moves): every usage mistake exits 2 with a message naming it, before any
 * server is contacted (the settings point at ports nobody listens on, so a command that did
 * try to connect would exit 1 instead), and every --help describes the options.
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

typedef struct {
    int status;
    fts_buffer_t out;
    fts_buffer_t err;
} run_result_t;

static void drain(int fd, fts_buffer_t *into)
{
    char chunk[4096];
    ssize_t got;
    lseek(fd, 0, SEEK_SET);
    while ((got = read(fd, chunk, sizeof chunk)) > 0) {
        fts_buffer_append(into, chunk, (size_t)got);
    }
    fts_buffer_append(into, "", 0);
}

/* Runs ftsync with args (NULL-terminated) and settings that name no live server. */
static void run(run_result_t *result, const char *const *args)
{
    memset(result, 0, sizeof *result);
    char out_path[] = "/tmp/ftsync-cli-ops-out-XXXXXX";
    char err_path[] = "/tmp/ftsync-cli-ops-err-XXXXXX";
    int out_fd = mkstemp(out_path);
    int err_fd = mkstemp(err_path);
    assert_true(out_fd >= 0 && err_fd >= 0);
    const char *argv[16] = {FTSYNC_BINARY};
    size_t argc = 1;
    for (; args[argc - 1]; argc++) {
        argv[argc] = args[argc - 1];
    }
    argv[argc] = NULL;
    const char *const envp[] = {"PATH=/usr/bin:/bin",
                                "FTSYNC_ENV_FILE=/dev/null",
                                "FTSYNC_MONGO_URI=mongodb://127.0.0.1:1/?replicaSet=rs0",
                                "FTSYNC_MONGO_DB=steam",
                                "FTSYNC_MONGO_COLLECTION=apps",
                                "FTSYNC_ES_INDEX=apps",
                                "FTSYNC_ES_URL=http://127.0.0.1:1",
                                "FTSYNC_STATE_REDIS_URL=redis://127.0.0.1:1/0",
                                NULL};
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
    drain(out_fd, &result->out);
    drain(err_fd, &result->err);
    close(out_fd);
    close(err_fd);
    unlink(out_path);
    unlink(err_path);
}

static void expect(int status, const char *text, const char *const *args)
{
    run_result_t r;
    run(&r, args);
    if (r.status != status || !(strstr(r.out.data, text) || strstr(r.err.data, text))) {
        fail_msg("ftsync %s %s: expected %d and \"%s\", got %d\nstdout: %s\nstderr: %s", args[0],
                 args[1] ? args[1] : "", status, text, r.status, r.out.data, r.err.data);
    }
    fts_buffer_destroy(&r.out);
    fts_buffer_destroy(&r.err);
}

#define EXPECT(status, text, ...)                                                                  \
    do {                                                                                           \
        const char *const args_[] = {__VA_ARGS__, NULL};                                           \
        expect(status, text, args_);                                                               \
    } while (0)

static void test_usage_mistakes_exit_2(void **state)
{
    (void)state;
    EXPECT(2, "unknown option --colour", "status", "--colour");
    EXPECT(2, "usage: ftsync dlq", "dlq");
    EXPECT(2, "unknown subcommand \"frob\"", "dlq", "frob");
    EXPECT(2, "--limit must be", "dlq", "list", "--limit", "0");
    EXPECT(2, "--verbose", "dlq", "list", "--verbose");
    EXPECT(2, "which dead letter", "dlq", "show");
    EXPECT(2, "not a dead-letter ID", "dlq", "show", "abc");
    EXPECT(2, "not a dead-letter ID", "dlq", "replay", "--id", "12-x");
    EXPECT(2, "neither an RFC 3339", "dlq", "replay", "--since", "soon");
    EXPECT(2, "do not go together", "dlq", "replay", "--id", "1-1", "--since", "1");
    EXPECT(2, "add --yes", "dlq", "purge");
    EXPECT(2, "add --yes", "dlq", "purge", "--id", "1-1");
    EXPECT(2, "--bogus", "verify", "--bogus");
    EXPECT(2, "--sample", "verify", "--sample", "0");
    EXPECT(2, "--show", "verify", "--show", "many");
    EXPECT(2, "unknown option --bogus", "reset-token", "--bogus");
    EXPECT(2, "add --yes", "reset-token", "--clear");
    EXPECT(2, "add --yes", "reset-token", "--to-time", "1700000000");
    EXPECT(2, "go with --clear", "reset-token", "--yes");
    EXPECT(2, "needs a value", "reset-token", "--to-time");
    EXPECT(2, "neither an RFC 3339", "reset-token", "--to-time", "2026-13-01T00:00:00Z", "--yes");
    EXPECT(2, "neither an RFC 3339", "reset-token", "--to-time", "2026-02-30T00:00:00Z", "--yes");
    EXPECT(2, "in the future", "reset-token", "--to-time", "2999-01-01T00:00:00+02:00", "--yes");
    EXPECT(2, "not a resume token", "reset-token", "--to-token", "{\"_data\":", "--yes");
    EXPECT(2, "_data", "reset-token", "--to-token", "{\"_data\": 5}", "--yes");
}

static void test_unreachable_servers_exit_1(void **state)
{
    (void)state;
    EXPECT(1, "127.0.0.1:1", "status");
    EXPECT(1, "127.0.0.1:1", "dlq", "list");
    EXPECT(1, "127.0.0.1:1", "reset-token", "--show");
}

static void test_help(void **state)
{
    (void)state;
    EXPECT(0, "status", "--help");
    EXPECT(0, "dlq", "--help");
    EXPECT(0, "verify", "--help");
    EXPECT(0, "--json", "status", "--help");
    EXPECT(0, "replay", "dlq", "--help");
    EXPECT(0, "--repair", "verify", "--help");
    EXPECT(0, "--to-time", "reset-token", "--help");
    EXPECT(0, "--to-token", "reset-token", "--help");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_mistakes_exit_2),
        cmocka_unit_test(test_unreachable_servers_exit_1),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
