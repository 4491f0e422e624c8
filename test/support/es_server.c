/*
 * es_server.c - a private search engine node (the test's engine, fts_testbed_engine())
 * started, stopped and restarted through test/tools/testbed.sh (see es_server.h).
 *
 * The script is run with fork + exec (never a shell string), its output going to the test's
 * stderr, so that "elasticsearch ready ... after 2.1 s" and any failure's log tail show in the
 * test's output. Every server not yet destroyed is registered with test_cleanup.h so that the
 * atexit handler can kill the nodes a failing test left behind (cmocka leaves a test function at
 * its first failed assertion).
 */
#include "es_server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bson/bson.h>

#include "log_tail.h"
#include "redis_server.h"
#include "test_cleanup.h"
#include "test_time.h"
#include "testbed.h"

/* Ports tried for the first start when another process takes the one picked. */
#define PORT_ATTEMPTS 3
/* Lines of the node's log printed on failure. */
#define LOG_TAIL_LINES 40
/* Environment entries copied to the script, at most. */
#define SCRIPT_ENV_MAX 4096

struct fts_test_es_server {
    int port;
    char script[1024];
    char dir[1024];
    char url[64];
    char log_path[1100];
    char pid_path[1100];
};

/* The node's pid from the script's pid file, or 0. */
static pid_t node_pid(const fts_test_es_server_t *server)
{
    FILE *file = fopen(server->pid_path, "r");
    if (!file) {
        return 0;
    }
    int pid = 0;
    if (fscanf(file, "%d", &pid) != 1) {
        pid = 0;
    }
    fclose(file);
    return (pid_t)pid;
}

/* True if pid is a live (not zombie) node of either engine: its command line names the main
 * class (OpenSearch's launcher, or Elasticsearch 1.5's), so a pid reused by some other process
 * is never signalled. */
static bool is_node(pid_t pid)
{
    if (pid <= 0) {
        return false;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    FILE *file = fopen(path, "r");
    if (!file) {
        return false;
    }
    char buffer[16384];
    size_t got = fread(buffer, 1, sizeof buffer - 1, file);
    fclose(file);
    for (size_t i = 0; i < got; i++) {
        if (buffer[i] == '\0') {
            buffer[i] = ' ';
        }
    }
    buffer[got] = '\0';
    return strstr(buffer, "org.elasticsearch.bootstrap.Elasticsearch") != NULL ||
           strstr(buffer, "OpenSearchLauncher") != NULL;
}

/* The atexit clean-up of a node a failing test left running (test_cleanup.h). */
static void kill_leftover(void *object)
{
    pid_t pid = node_pid(object);
    if (is_node(pid)) {
        kill(pid, SIGKILL);
    }
}

/* Runs `bash <script> <command> <dir> [port engine]` and returns its exit code (-1: could not run
 * it or it did not finish within FTS_TEST_ES_SERVER_START_TIMEOUT_MS, then it is killed). */
static int run_script(const fts_test_es_server_t *server, const char *command, bool with_port)
{
    char port[16];
    snprintf(port, sizeof port, "%d", server->port);
    char owner[64];
    snprintf(owner, sizeof owner, "FTSYNC_TESTBED_ES_OWNER=%d", (int)getpid());
    /* Built before fork: no allocation in the child. */
    size_t count = 0;
    while (environ[count]) {
        count++;
    }
    if (count > SCRIPT_ENV_MAX) {
        count = SCRIPT_ENV_MAX;
    }
    const char **envp = bson_malloc0((count + 2) * sizeof *envp);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (strncmp(environ[i], "FTSYNC_TESTBED_ES_OWNER=", 24) != 0) {
            envp[n++] = environ[i];
        }
    }
    envp[n++] = owner;
    envp[n] = NULL;
    const char *argv[] = {
        "bash",      server->script,          command,
        server->dir, with_port ? port : NULL, with_port ? fts_testbed_engine_name() : NULL,
        NULL};

    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        bson_free(envp);
        return -1;
    }
    if (pid == 0) {
        /* TERM, not KILL: the script's trap then stops a node it was starting. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) {
            _exit(127);
        }
        execve("/bin/bash", (char *const *)argv, (char *const *)envp);
        dprintf(STDERR_FILENO, "es_server: cannot run /bin/bash: %s\n", strerror(errno));
        _exit(127);
    }
    bson_free(envp);
    uint64_t deadline = fts_test_monotonic_ms() + FTS_TEST_ES_SERVER_START_TIMEOUT_MS;
    int status = 0;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        if (done < 0 || fts_test_monotonic_ms() >= deadline) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
            return -1;
        }
        fts_test_sleep_ms(50);
    }
}

static bool start_node(fts_test_es_server_t *server, fts_error_t *err)
{
    int code = run_script(server, "es-start", true);
    if (code == 0) {
        return true;
    }
    return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_CONNECT,
                         "%s on port %d (%s) did not start: %s es-start exited %d; its "
                         "log tail is above",
                         fts_testbed_engine_name(), server->port, server->dir, server->script,
                         code);
}

fts_test_es_server_t *fts_test_es_server_start(const char *testbed_script, fts_error_t *err)
{
    fts_test_es_server_t *server = bson_malloc0(sizeof *server);
    snprintf(server->script, sizeof server->script, "%s", testbed_script);
    snprintf(server->dir, sizeof server->dir, "%s/es-%d-XXXXXX", fts_testbed_dir(), (int)getpid());
    if (!mkdtemp(server->dir)) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create a directory like %s: %s",
                      server->dir, strerror(errno));
        server->dir[0] = '\0';
        goto fail;
    }
    snprintf(server->log_path, sizeof server->log_path, "%s/es/node.log", server->dir);
    snprintf(server->pid_path, sizeof server->pid_path, "%s/es/node.pid", server->dir);
    if (!fts_test_cleanup_at_exit(kill_leftover, server)) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "more than %d test servers at once", FTS_TEST_CLEANUP_MAX);
        goto fail;
    }
    for (int attempt = 1; attempt <= PORT_ATTEMPTS; attempt++) {
        server->port = fts_test_free_port();
        if (server->port < 0) {
            fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot find a free port: %s",
                          strerror(errno));
            goto fail;
        }
        snprintf(server->url, sizeof server->url, "http://127.0.0.1:%d", server->port);
        if (start_node(server, err)) {
            return server;
        }
        fprintf(stderr, "es_server: attempt %d of %d failed: %s\n", attempt, PORT_ATTEMPTS,
                err ? err->message : "");
    }

fail:
    fts_test_es_server_destroy(server);
    return NULL;
}

bool fts_test_es_server_stop(fts_test_es_server_t *server, fts_error_t *err)
{
    int code = run_script(server, "es-stop", false);
    if (code == 0 && !fts_test_es_server_running(server)) {
        return true;
    }
    fts_test_es_server_print_log_tail(server, LOG_TAIL_LINES);
    return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_SERVER,
                         "%s on port %d (%s) did not stop: %s es-stop exited %d",
                         fts_testbed_engine_name(), server->port, server->dir, server->script,
                         code);
}

bool fts_test_es_server_restart(fts_test_es_server_t *server, fts_error_t *err)
{
    if (fts_test_es_server_running(server) && !fts_test_es_server_stop(server, err)) {
        return false;
    }
    return start_node(server, err);
}

bool fts_test_es_server_running(const fts_test_es_server_t *server)
{
    return is_node(node_pid(server));
}

int fts_test_es_server_port(const fts_test_es_server_t *server)
{
    return server->port;
}

const char *fts_test_es_server_url(const fts_test_es_server_t *server)
{
    return server->url;
}

const char *fts_test_es_server_dir(const fts_test_es_server_t *server)
{
    return server->dir;
}

void fts_test_es_server_print_log_tail(const fts_test_es_server_t *server, unsigned lines)
{
    fts_test_print_log_tail(fts_testbed_engine_name(), server->log_path, lines);
}

void fts_test_es_server_destroy(fts_test_es_server_t *server)
{
    if (!server) {
        return;
    }
    if (server->dir[0]) {
        if (fts_test_es_server_running(server)) {
            fts_error_t ignored;
            if (!fts_test_es_server_stop(server, &ignored)) {
                pid_t pid = node_pid(server);
                if (is_node(pid)) {
                    kill(pid, SIGKILL);
                }
            }
        }
        const char *keep = getenv("FTSYNC_TEST_KEEP_LOGS");
        if (!(keep && *keep)) {
            fts_test_remove_tree(server->dir);
        }
    }
    fts_test_cleanup_forget(server);
    bson_free(server);
}
