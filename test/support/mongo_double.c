/*
 * mongo_double.c - spawning, watching and ending private ftsync-mongo-double processes (see
 * mongo_double.h).
 *
 * fork + exec, never a shell. The child's stdout is a pipe we read the ready line from; after
 * that line the pipe stays open (the double may print nothing more, but a closed pipe would turn
 * a stray write into SIGPIPE) and is drained and closed at stop. Its stderr goes to a file, so a
 * chatty --verbose double can never block on a full pipe and its log survives for the tail we
 * print on failure. Every running double is registered with test_cleanup.h so the atexit handler
 * can end those a failing test (cmocka aborts the test function at the first failed assertion) left
 * behind.
 */
#include "mongo_double.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log_tail.h"
#include "test_cleanup.h"
#include "test_time.h"
#include "testbed.h"

#ifndef FTSYNC_MONGO_DOUBLE
/* The build passes the double's path; this default only keeps other builds compiling. */
#define FTSYNC_MONGO_DOUBLE "ftsync-mongo-double"
#endif

/* Extra command-line arguments a test may pass. */
#define MAX_EXTRA_ARGS 32
/* Lines of the log printed on failure. */
#define LOG_TAIL_LINES 40
/* The ready line is short; anything longer than this before a newline is not it. */
#define READY_LINE_MAX 256
/* What the double prints, followed by the port and a newline. */
#define READY_PREFIX "ftsync-mongo-double ready port="

struct fts_test_mongo_double {
    pid_t pid;     /* 0 when not running */
    int stdout_fd; /* read end of the child's stdout, -1 when closed */
    int port;      /* 0 for an external deployment */
    bool external;
    char dir[1024];
    char log_path[1100];
    char uri[1024];
};

/* The atexit clean-up of a double a failing test left running (test_cleanup.h). */
static void kill_leftover(void *object)
{
    fts_test_mongo_double_t *server = object;
    if (server->pid > 0) {
        kill(server->pid, SIGKILL);
        waitpid(server->pid, NULL, 0);
        server->pid = 0;
    }
}

char *fts_test_mongo_unique_name(const char *prefix, char *out, size_t size)
{
    static unsigned counter = 0;
    /* The pid keeps concurrent test programs apart, the seconds keep this run apart from an
     * earlier one with the same pid that left its database behind. */
    snprintf(out, size, "%s_%d_%lx_%u", prefix, (int)getpid(),
             (unsigned long)(time(NULL) & 0xffffff), counter++);
    return out;
}

void fts_test_mongo_double_print_log_tail(const fts_test_mongo_double_t *server, unsigned lines)
{
    if (!server || server->external) {
        return;
    }
    fts_test_print_log_tail("mongo_double", server->log_path, lines);
}

static bool fail_with_log(const fts_test_mongo_double_t *server, fts_error_t *err,
                          const char *problem)
{
    fts_test_mongo_double_print_log_tail(server, LOG_TAIL_LINES);
    return fts_error_set(err, FTS_ERROR_SYSTEM, FTS_ERROR_CODE_CONNECT,
                         "ftsync-mongo-double (%s): %s; its stderr tail is above", server->log_path,
                         problem);
}

static const char *double_path(void)
{
    const char *from_environment = getenv("FTSYNC_MONGO_DOUBLE");
    return from_environment && *from_environment ? from_environment : FTSYNC_MONGO_DOUBLE;
}

/* In the child: stdout to the pipe, stderr to the log, then exec. Never returns. */
__attribute__((noreturn)) static void exec_double(const fts_test_mongo_double_t *server,
                                                  int stdout_write, const char *const *extra_args,
                                                  pid_t parent)
{
    /* Die with the test: a crashed test must not leave a server holding a port. The parent
     * may already be gone between fork and prctl, hence the check. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(1);
    }
    int log_fd = open(server->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd < 0 || null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 ||
        dup2(stdout_write, STDOUT_FILENO) < 0 || dup2(log_fd, STDERR_FILENO) < 0) {
        dprintf(STDERR_FILENO, "mongo_double: cannot set up the child's files: %s\n",
                strerror(errno));
        _exit(127);
    }
    /* The test may have ignored or blocked signals; the double must see SIGTERM. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    const char *argv[MAX_EXTRA_ARGS + 4];
    size_t argc = 0;
    argv[argc++] = double_path();
    argv[argc++] = "--port";
    argv[argc++] = "0";
    for (size_t i = 0; extra_args && extra_args[i]; i++) {
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;
    execv(argv[0], (char *const *)argv);
    dprintf(STDERR_FILENO, "mongo_double: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Reads the child's stdout until the ready line, the deadline, or its end. Returns the port,
 * or 0 with *problem set. */
static int wait_for_ready_line(fts_test_mongo_double_t *server, char *problem, size_t size)
{
    char line[READY_LINE_MAX + 1];
    size_t length = 0;
    uint64_t deadline = fts_test_monotonic_ms() + FTS_TEST_MONGO_DOUBLE_READY_TIMEOUT_MS;
    for (;;) {
        uint64_t now = fts_test_monotonic_ms();
        if (now >= deadline) {
            snprintf(problem, size, "no ready line within %d ms",
                     FTS_TEST_MONGO_DOUBLE_READY_TIMEOUT_MS);
            return 0;
        }
        struct pollfd watch = {.fd = server->stdout_fd, .events = POLLIN};
        int ready = poll(&watch, 1, (int)(deadline - now));
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready <= 0) {
            continue; /* the deadline check above ends this */
        }
        /* One byte at a time: the line is short and nothing after it may be consumed. */
        char byte;
        ssize_t got = read(server->stdout_fd, &byte, 1);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            snprintf(problem, size, "closed its stdout (exited?) before printing the ready line");
            return 0;
        }
        if (byte != '\n') {
            if (length == READY_LINE_MAX) {
                snprintf(problem, size, "printed a line longer than %d bytes on stdout",
                         READY_LINE_MAX);
                return 0;
            }
            line[length++] = byte;
            continue;
        }
        line[length] = '\0';
        char *end = NULL;
        long port = 0;
        if (strncmp(line, READY_PREFIX, strlen(READY_PREFIX)) == 0) {
            errno = 0;
            port = strtol(line + strlen(READY_PREFIX), &end, 10);
        }
        if (!end || *end != '\0' || errno != 0 || port <= 0 || port > 65535) {
            snprintf(problem, size, "printed \"%.80s\" instead of \"" READY_PREFIX "<port>\"",
                     line);
            return 0;
        }
        return (int)port;
    }
}

static bool spawn_and_wait(fts_test_mongo_double_t *server, const char *const *extra_args,
                           fts_error_t *err)
{
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create a pipe: %s",
                             strerror(errno));
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        return fts_error_set(err, FTS_ERROR_SYSTEM, saved, "cannot fork for the double: %s",
                             strerror(saved));
    }
    if (pid == 0) {
        exec_double(server, pipe_fds[1], extra_args, parent);
    }
    close(pipe_fds[1]);
    server->stdout_fd = pipe_fds[0];
    server->pid = pid;
    fts_test_cleanup_at_exit(kill_leftover, server);

    char problem[256];
    server->port = wait_for_ready_line(server, problem, sizeof problem);
    if (server->port == 0) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            server->pid = 0;
            fts_test_cleanup_forget(server);
            size_t used = strlen(problem);
            snprintf(problem + used, sizeof problem - used, "; it exited (%s %d)",
                     WIFEXITED(status) ? "status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        }
        fts_test_mongo_double_stop(server, NULL);
        return fail_with_log(server, err, problem);
    }
    snprintf(server->uri, sizeof server->uri, "mongodb://127.0.0.1:%d/?replicaSet=rs0",
             server->port);
    return true;
}

fts_test_mongo_double_t *fts_test_mongo_double_start(const char *const *extra_args,
                                                     fts_error_t *err)
{
    fts_test_mongo_double_t *server = calloc(1, sizeof *server);
    if (!server) {
        fts_error_set(err, FTS_ERROR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    server->stdout_fd = -1;

    const char *external = getenv("FTSYNC_TEST_MONGO_URI");
    if (external && *external) {
        if (strlen(external) >= sizeof server->uri) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                          "FTSYNC_TEST_MONGO_URI is longer than %zu bytes", sizeof server->uri - 1);
            goto cleanup;
        }
        server->external = true;
        snprintf(server->uri, sizeof server->uri, "%s", external);
        return server;
    }

    size_t count = 0;
    while (extra_args && extra_args[count]) {
        count++;
    }
    if (count > MAX_EXTRA_ARGS) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "more than %d extra ftsync-mongo-double arguments", MAX_EXTRA_ARGS);
        goto cleanup;
    }
    if (access(double_path(), X_OK) != 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "the double %s cannot be run (%s); build it with `cmake --build <dir> "
                      "--target ftsync-mongo-double`",
                      double_path(), strerror(errno));
        goto cleanup;
    }
    /* The scratch directory exists once the testbed fixture ran; a test run on its own (the
     * benchmark, a developer's single test) may be first. */
    if (mkdir(fts_testbed_dir(), 0755) != 0 && errno != EEXIST) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create %s: %s", fts_testbed_dir(),
                      strerror(errno));
        goto cleanup;
    }
    snprintf(server->dir, sizeof server->dir, "%s/mongo-double-%d-XXXXXX", fts_testbed_dir(),
             (int)getpid());
    if (!mkdtemp(server->dir)) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create a directory like %s: %s",
                      server->dir, strerror(errno));
        server->dir[0] = '\0';
        goto cleanup;
    }
    snprintf(server->log_path, sizeof server->log_path, "%s/stderr.log", server->dir);
    if (spawn_and_wait(server, extra_args, err)) {
        return server;
    }

cleanup:
    fts_test_mongo_double_destroy(server);
    return NULL;
}

const char *fts_test_mongo_double_uri(const fts_test_mongo_double_t *server)
{
    return server->uri;
}

int fts_test_mongo_double_port(const fts_test_mongo_double_t *server)
{
    return server->port;
}

bool fts_test_mongo_double_is_external(const fts_test_mongo_double_t *server)
{
    return server->external;
}

static void close_stdout(fts_test_mongo_double_t *server)
{
    if (server->stdout_fd >= 0) {
        close(server->stdout_fd);
        server->stdout_fd = -1;
    }
}

bool fts_test_mongo_double_stop(fts_test_mongo_double_t *server, fts_error_t *err)
{
    if (server->pid <= 0) {
        close_stdout(server);
        return true;
    }
    pid_t pid = server->pid;
    int status = 0;
    /* Died on its own before we asked: that is a failure of the double worth showing. */
    if (waitpid(pid, &status, WNOHANG) == pid) {
        server->pid = 0;
        fts_test_cleanup_forget(server);
        close_stdout(server);
        char problem[128];
        snprintf(problem, sizeof problem, "had exited (%s %d) before it was stopped",
                 WIFEXITED(status) ? "status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return fail_with_log(server, err, problem);
    }
    kill(pid, SIGTERM);
    uint64_t deadline = fts_test_monotonic_ms() + FTS_TEST_MONGO_DOUBLE_STOP_TIMEOUT_MS;
    pid_t ended = 0;
    while ((ended = waitpid(pid, &status, WNOHANG)) == 0 && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(5);
    }
    server->pid = 0;
    fts_test_cleanup_forget(server);
    close_stdout(server);
    if (ended == pid) {
        if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM) {
            char problem[96];
            snprintf(problem, sizeof problem, "died of signal %d while stopping", WTERMSIG(status));
            return fail_with_log(server, err, problem);
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
            char problem[96];
            snprintf(problem, sizeof problem, "exited with status %d on SIGTERM",
                     WEXITSTATUS(status));
            return fail_with_log(server, err, problem);
        }
        return true;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return fail_with_log(server, err, "did not stop within 10 s of SIGTERM; killed");
}

void fts_test_mongo_double_destroy(fts_test_mongo_double_t *server)
{
    if (!server) {
        return;
    }
    fts_test_mongo_double_stop(server, NULL);
    fts_test_cleanup_forget(server);
    if (server->dir[0]) {
        fts_test_remove_tree(server->dir);
    }
    free(server);
}
