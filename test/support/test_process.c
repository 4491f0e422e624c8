/*
 * test_process.c - the children of a test: started with a clean environment, remembered, and
 * killed at exit (see test_process.h).
 *
 * The child's environment is built before fork, so the child only calls async-signal-safe
 * functions between fork and execve.
 */
#include "test_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bson/bson.h>

static pid_t live_pids[FTS_TEST_PROCESS_LIVE_MAX];
static bool atexit_installed;

static void kill_live(void)
{
    for (size_t i = 0; i < FTS_TEST_PROCESS_LIVE_MAX; i++) {
        if (live_pids[i] > 0) {
            kill(live_pids[i], SIGKILL);
            waitpid(live_pids[i], NULL, 0);
            live_pids[i] = 0;
        }
    }
}

void fts_test_process_remember(pid_t pid)
{
    if (!atexit_installed) {
        atexit(kill_live);
        atexit_installed = true;
    }
    for (size_t i = 0; i < FTS_TEST_PROCESS_LIVE_MAX; i++) {
        if (live_pids[i] == 0) {
            live_pids[i] = pid;
            return;
        }
    }
}

void fts_test_process_forget(pid_t pid)
{
    for (size_t i = 0; i < FTS_TEST_PROCESS_LIVE_MAX; i++) {
        if (live_pids[i] == pid) {
            live_pids[i] = 0;
        }
    }
}

/* True when overrides (NULL-terminated, may be NULL) sets the variable entry names. */
static bool env_overridden(const char *entry, const char *const *overrides)
{
    const char *equals = strchr(entry, '=');
    size_t name_len = equals ? (size_t)(equals - entry) : strlen(entry);
    for (size_t i = 0; overrides && overrides[i]; i++) {
        if (strncmp(overrides[i], entry, name_len) == 0 && overrides[i][name_len] == '=') {
            return true;
        }
    }
    return false;
}

static size_t count_entries(const char *const *list)
{
    size_t n = 0;
    while (list && list[n]) {
        n++;
    }
    return n;
}

/* The child's environment (see test_process.h); the strings are borrowed from environ,
 * defaults and env. Never NULL: allocation failure aborts. The caller bson_frees the array. */
static const char **child_environment(const char *const *defaults, const char *const *env)
{
    size_t inherited = count_entries((const char *const *)environ);
    size_t n_defaults = count_entries(defaults);
    size_t given = count_entries(env);
    const char **envp = bson_malloc0((inherited + n_defaults + given + 1) * sizeof *envp);
    size_t n = 0;
    for (size_t i = 0; i < inherited; i++) {
        bool ours = strncmp(environ[i], "FTSYNC_", 7) == 0 &&
                    strncmp(environ[i], "FTSYNC_TESTBED_DIR=", 19) != 0;
        if (!ours && !env_overridden(environ[i], env)) {
            envp[n++] = environ[i];
        }
    }
    for (size_t i = 0; i < n_defaults; i++) {
        if (!env_overridden(defaults[i], env)) {
            envp[n++] = defaults[i];
        }
    }
    for (size_t i = 0; i < given; i++) {
        envp[n++] = env[i];
    }
    envp[n] = NULL;
    return envp;
}

pid_t fts_test_process_start(const char *binary, const char *subcommand,
                             const char *const *defaults, const char *const *env,
                             const char *log_path, fts_error_t *err)
{
    const char **envp = child_environment(defaults, env);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot open %s: %s", log_path,
                      strerror(errno));
        bson_free(envp);
        return -1;
    }
    pid_t parent = getpid();
    fflush(NULL); /* what the test printed is not printed again by the child's copy */
    pid_t pid = fork();
    if (pid < 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "fork: %s", strerror(errno));
        close(log_fd);
        bson_free(envp);
        return -1;
    }
    if (pid == 0) {
        /* Should the test die (a crash, a CTest timeout's SIGKILL), the child goes with it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null_fd = open("/dev/null", O_RDONLY);
        dup2(null_fd, STDIN_FILENO);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        char *const argv[] = {(char *)binary, (char *)subcommand, NULL};
        execve(binary, argv, (char *const *)envp);
        dprintf(STDERR_FILENO, "cannot run %s: %s\n", binary, strerror(errno));
        _exit(127);
    }
    close(log_fd);
    bson_free(envp);
    fts_test_process_remember(pid);
    return pid;
}
