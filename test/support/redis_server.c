/*
 * redis_server.c - spawning, watching and ending private redis-servers (see redis_server.h).
 *
 * fork + exec, never a shell, so arguments (passwords with spaces, ">pw") arrive as given.
 * Every server not yet destroyed is registered with test_cleanup.h so that the atexit handler
 * can end the processes and remove the directories a failing test left behind (cmocka leaves a test
 * function at its first failed assertion, before any clean-up at its end).
 */
#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "log_tail.h"
#include "test_cleanup.h"
#include "test_time.h"
#include "testbed.h"

/* Extra command-line arguments kept for restarts. */
#define MAX_EXTRA_ARGS 32
/* Ports tried when another process takes the one picked between picking and binding. */
#define PORT_ATTEMPTS 5
/* Lines of the log printed on failure. */
#define LOG_TAIL_LINES 30

struct fts_test_redis_server {
    pid_t pid; /* 0 when not running */
    int port;
    char dir[1024];
    char log_path[1100];
    char url[64];
    char *extra[MAX_EXTRA_ARGS + 1]; /* owned copies, NULL-terminated */
};

/* The atexit clean-up of a server a failing test left running (test_cleanup.h). */
static void kill_leftover(void *object)
{
    fts_test_redis_server_t *server = object;
    if (server->pid > 0) {
        kill(server->pid, SIGKILL);
        waitpid(server->pid, NULL, 0);
        server->pid = 0;
    }
    if (server->dir[0]) {
        fts_test_remove_tree(server->dir);
        server->dir[0] = '\0';
    }
}

int fts_test_free_port(void)
{
    int port = -1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t length = sizeof address;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        goto cleanup;
    }
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 ||
        getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
        goto cleanup;
    }
    port = ntohs(address.sin_port);

cleanup:
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static long log_size(const fts_test_redis_server_t *server)
{
    struct stat info;
    return stat(server->log_path, &info) == 0 ? (long)info.st_size : 0;
}

/* True when the log, from byte `from` on (this run's part), contains needle. */
static bool log_contains(const fts_test_redis_server_t *server, long from, const char *needle)
{
    fts_buffer_t text = {0};
    fts_error_t ignored;
    bool found = fts_buffer_read_file(&text, server->log_path, 64u * 1024u * 1024u, &ignored) &&
                 (size_t)from <= text.len && strstr(text.data + from, needle) != NULL;
    fts_buffer_destroy(&text);
    return found;
}

void fts_test_redis_server_print_log_tail(const fts_test_redis_server_t *server, unsigned lines)
{
    fts_test_print_log_tail("redis_server", server->log_path, lines);
}

static bool fail_with_log(const fts_test_redis_server_t *server, fts_error_t *err,
                          const char *problem)
{
    fts_test_redis_server_print_log_tail(server, LOG_TAIL_LINES);
    return fts_error_set(err, FTS_ERROR_SYSTEM, FTS_ERROR_CODE_CONNECT,
                         "redis-server on port %d (%s): %s; its log tail is above", server->port,
                         server->dir, problem);
}

/* A plain socket PING: any answer but LOADING means the server serves (NOAUTH included,
 * since the password is the test's business). */
static bool answers_ping(int port)
{
    bool answered = false;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval limit = {.tv_sec = 1, .tv_usec = 0};
    char reply[64] = {0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        goto cleanup;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        goto cleanup;
    }
    if (write(fd, "PING\r\n", 6) != 6) {
        goto cleanup;
    }
    ssize_t got = read(fd, reply, sizeof reply - 1);
    answered =
        got > 0 && (reply[0] == '+' || reply[0] == '-') && strncmp(reply, "-LOADING", 8) != 0;

cleanup:
    if (fd >= 0) {
        close(fd);
    }
    return answered;
}

/* Runs in the forked child: never returns. */
__attribute__((noreturn)) static void exec_server(const fts_test_redis_server_t *server,
                                                  pid_t parent)
{
    /* Should the test die (a crash, a CTest timeout's SIGKILL), the server goes with it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(1);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);

    int log_fd = open(server->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null_fd = open("/dev/null", O_RDONLY);
    if (log_fd < 0 || null_fd < 0) {
        _exit(126);
    }
    dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);

    char port[16];
    snprintf(port, sizeof port, "%d", server->port);
    const char *argv[16 + MAX_EXTRA_ARGS + 1];
    size_t argc = 0;
    argv[argc++] = "redis-server";
    argv[argc++] = "--port";
    argv[argc++] = port;
    argv[argc++] = "--bind";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "--dir";
    argv[argc++] = server->dir;
    argv[argc++] = "--appendonly";
    argv[argc++] = "yes";
    argv[argc++] = "--save";
    argv[argc++] = "";
    argv[argc++] = "--logfile";
    argv[argc++] = ""; /* stdout, which is the log file */
    argv[argc++] = "--daemonize";
    argv[argc++] = "no";
    for (size_t i = 0; server->extra[i]; i++) {
        argv[argc++] = server->extra[i];
    }
    argv[argc] = NULL;
    execvp("redis-server", (char *const *)argv);
    dprintf(STDERR_FILENO, "redis_server: cannot run redis-server: %s\n", strerror(errno));
    _exit(127);
}

/* Starts the process and waits until it is ready; *port_taken tells the caller to try another
 * port. */
static bool spawn_and_wait(fts_test_redis_server_t *server, bool *port_taken, fts_error_t *err)
{
    *port_taken = false;
    long log_start = log_size(server);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot fork for redis-server: %s",
                             strerror(errno));
    }
    if (pid == 0) {
        exec_server(server, parent);
    }
    server->pid = pid;

    uint64_t deadline = fts_test_monotonic_ms() + FTS_TEST_REDIS_SERVER_READY_TIMEOUT_MS;
    while (fts_test_monotonic_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            server->pid = 0;
            *port_taken = log_contains(server, log_start, "Address already in use");
            char problem[128];
            snprintf(problem, sizeof problem, "exited (%s %d) before accepting connections",
                     WIFEXITED(status) ? "status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            return fail_with_log(server, err, problem);
        }
        /* The log line proves it is our server (not another process on a reused port) and
         * that its AOF is loaded; the PING that it serves. */
        if (log_contains(server, log_start, "Ready to accept connections") &&
            answers_ping(server->port)) {
            return true;
        }
        fts_test_sleep_ms(20);
    }
    fts_test_redis_server_stop(server, NULL);
    return fail_with_log(server, err, "not ready within 10 s");
}

fts_test_redis_server_t *fts_test_redis_server_start(const char *const *extra_args,
                                                     fts_error_t *err)
{
    fts_test_redis_server_t *server = calloc(1, sizeof *server);
    if (!server) {
        fts_error_set(err, FTS_ERROR_SYSTEM, ENOMEM, "out of memory");
        goto cleanup;
    }
    size_t count = 0;
    for (; extra_args && extra_args[count]; count++) {
        if (count == MAX_EXTRA_ARGS) {
            fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                          "more than %d extra redis-server arguments", MAX_EXTRA_ARGS);
            goto cleanup;
        }
        server->extra[count] = strdup(extra_args[count]);
        if (!server->extra[count]) {
            fts_error_set(err, FTS_ERROR_SYSTEM, ENOMEM, "out of memory");
            goto cleanup;
        }
    }
    snprintf(server->dir, sizeof server->dir, "%s/redis-%d-XXXXXX", fts_testbed_dir(),
             (int)getpid());
    if (!mkdtemp(server->dir)) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create a directory like %s: %s",
                      server->dir, strerror(errno));
        server->dir[0] = '\0';
        goto cleanup;
    }
    if (!fts_test_cleanup_at_exit(kill_leftover, server)) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "more than %d test servers at once", FTS_TEST_CLEANUP_MAX);
        goto cleanup;
    }
    snprintf(server->log_path, sizeof server->log_path, "%s/redis.log", server->dir);

    for (int attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
        server->port = fts_test_free_port();
        if (server->port < 0) {
            fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot find a free port: %s",
                          strerror(errno));
            goto cleanup;
        }
        snprintf(server->url, sizeof server->url, "redis://127.0.0.1:%d/0", server->port);
        bool port_taken;
        if (spawn_and_wait(server, &port_taken, err)) {
            return server;
        }
        if (!port_taken) {
            goto cleanup;
        }
    }

cleanup:
    fts_test_redis_server_destroy(server);
    return NULL;
}

bool fts_test_redis_server_stop(fts_test_redis_server_t *server, fts_error_t *err)
{
    if (server->pid <= 0) {
        return true;
    }
    pid_t pid = server->pid;
    kill(pid, SIGTERM);
    uint64_t deadline = fts_test_monotonic_ms() + 10000;
    int status = 0;
    pid_t ended = 0;
    while ((ended = waitpid(pid, &status, WNOHANG)) == 0 && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(10);
    }
    server->pid = 0;
    if (ended == pid) {
        return true;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return fail_with_log(server, err, "did not stop within 10 s of SIGTERM; killed");
}

bool fts_test_redis_server_restart(fts_test_redis_server_t *server, fts_error_t *err)
{
    if (!fts_test_redis_server_stop(server, err)) {
        return false;
    }
    bool port_taken;
    return spawn_and_wait(server, &port_taken, err);
}

int fts_test_redis_server_port(const fts_test_redis_server_t *server)
{
    return server->port;
}

const char *fts_test_redis_server_url(const fts_test_redis_server_t *server)
{
    return server->url;
}

const char *fts_test_redis_server_dir(const fts_test_redis_server_t *server)
{
    return server->dir;
}

void fts_test_redis_server_destroy(fts_test_redis_server_t *server)
{
    if (!server) {
        return;
    }
    fts_test_redis_server_stop(server, NULL);
    fts_test_cleanup_forget(server);
    if (server->dir[0]) {
        fts_test_remove_tree(server->dir);
    }
    for (size_t i = 0; server->extra[i]; i++) {
        free(server->extra[i]);
    }
    free(server);
}
