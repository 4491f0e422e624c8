/*
 * admin_probe.c - watching a started `ftsync` process from the outside: its admin endpoint,
 * its log, its scratch directory (see admin_probe.h). HTTP goes through fts_test_http
 * (load_harness.h), printing a log's tail through fts_test_print_log_tail (log_tail.h) and
 * removing a directory through fts_test_remove_tree (test_cleanup.h): one copy of each.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "admin_probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "buffer.h"
#include "extract_harness.h"
#include "load_harness.h"
#include "log_tail.h"
#include "test_cleanup.h"
#include "test_time.h"
#include "testbed.h"

/* Logs of the processes a test starts stay well below this; a bigger one reads as "". */
#define MAX_LOG_BYTES (16u * 1024u * 1024u)
/* Pauses between two polls: short next to every deadline the tests give. */
#define LOG_POLL_MS  100
#define HTTP_POLL_MS 200

/* ---- HTTP --------------------------------------------------------------------------------- */

long fts_test_http_status(const char *method, const char *url, char **body)
{
    fts_buffer_t answer = {0};
    fts_error_t err;
    long status = 0;
    if (!fts_test_http(method ? method : "GET", url, NULL, 0, &status, &answer, &err)) {
        status = 0; /* no answer: the caller polls again or reports it */
    }
    if (body) {
        *body = fts_buffer_steal(&answer); /* "" when nothing came */
    } else {
        fts_buffer_destroy(&answer);
    }
    return status;
}

static bool contains_all(const char *body, const char *const *needles)
{
    for (size_t i = 0; needles && needles[i]; i++) {
        if (!strstr(body, needles[i])) {
            return false;
        }
    }
    return true;
}

bool fts_test_http_poll(const char *url, long want, const char *const *needles, unsigned timeout_ms,
                        long *last_status, char **last_body)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    for (;;) {
        char *body = NULL;
        long status = fts_test_http_status(NULL, url, &body);
        bool ok = status == want && contains_all(body, needles);
        if (ok || fts_test_monotonic_ms() >= deadline) {
            if (last_status) {
                *last_status = status;
            }
            if (last_body) {
                *last_body = body;
            } else {
                bson_free(body);
            }
            return ok;
        }
        bson_free(body);
        fts_test_sleep_ms(HTTP_POLL_MS);
    }
}

bool fts_test_http_wait_for(const char *url, long want, const char *needle, unsigned timeout_ms,
                            char **last_body)
{
    const char *const needles[] = {needle, NULL};
    return fts_test_http_poll(url, want, needles, timeout_ms, NULL, last_body);
}

/* ---- Prometheus text ---------------------------------------------------------------------- */

double fts_test_metrics_sample(const char *text, const char *series)
{
    size_t len = strlen(series);
    for (const char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, series, len) == 0 && line[len] == ' ') {
            return strtod(line + len + 1, NULL);
        }
    }
    return -1;
}

/* ---- a process's admin endpoint ----------------------------------------------------------- */

/* Waits for the "admin endpoint listening on ... port=N" line in log_path; returns N, or -1
 * when no such line with a port above 0 came within timeout_ms. */
static int admin_port_from_log(const char *log_path, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    while (fts_test_monotonic_ms() < deadline) {
        char *log = fts_test_log_read(log_path);
        const char *found = strstr(log, "admin endpoint listening on");
        const char *port = found ? strstr(found, "port=") : NULL;
        int value = port ? atoi(port + 5) : -1;
        bson_free(log);
        if (value > 0) {
            return value;
        }
        fts_test_sleep_ms(LOG_POLL_MS);
    }
    return -1;
}

pid_t fts_test_admin_start(const char *binary, const char *subcommand, const char *log_path,
                           int *port)
{
    const char *const args[] = {subcommand, NULL};
    pid_t pid = fts_test_spawn(binary, args, log_path);
    assert_true(pid > 0);
    *port = admin_port_from_log(log_path, FTS_TEST_ADMIN_PORT_MS);
    if (*port <= 0) {
        fts_test_log_print_tail(log_path);
        fail_msg("ftsync %s did not say where its admin endpoint listens", subcommand);
    }
    return pid;
}

void fts_test_admin_expect(int port, const char *path, long want, const char *const *needles,
                           unsigned timeout_ms, const char *log_path)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    long status = 0;
    char *body = NULL;
    if (!fts_test_http_poll(url, want, needles, timeout_ms, &status, &body)) {
        fts_test_log_print_tail(log_path);
        fail_msg("%s answered %ld, not %ld with what was expected: %s", path, status, want, body);
    }
    bson_free(body);
}

char *fts_test_admin_metrics(int port)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    char *body = NULL;
    assert_int_equal(fts_test_http_status(NULL, url, &body), 200);
    return body;
}

/* ---- logs --------------------------------------------------------------------------------- */

char *fts_test_log_read(const char *log_path)
{
    fts_buffer_t log = {0};
    fts_error_t err;
    if (!fts_buffer_read_file(&log, log_path, MAX_LOG_BYTES, &err)) {
        fts_buffer_clear(&log); /* not there yet, or too big: read as nothing */
    }
    return fts_buffer_steal(&log); /* "" when empty or unread */
}

bool fts_test_log_wait_for(const char *log_path, const char *needle, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    do {
        char *log = fts_test_log_read(log_path);
        bool found = strstr(log, needle) != NULL;
        bson_free(log);
        if (found) {
            return true;
        }
        fts_test_sleep_ms(LOG_POLL_MS);
    } while (fts_test_monotonic_ms() < deadline);
    return false;
}

void fts_test_log_print_tail(const char *log_path)
{
    fts_test_print_log_tail("log", log_path, FTS_TEST_ADMIN_LOG_LINES);
}

/* ---- scratch directories ------------------------------------------------------------------ */

char *fts_test_scratch_dir_new(const char *prefix)
{
    char *dir = bson_strdup_printf("%s/%s-XXXXXX", fts_testbed_dir(), prefix);
    assert_non_null(mkdtemp(dir));
    return dir;
}

void fts_test_scratch_dir_destroy(char *dir)
{
    if (dir && !getenv("FTSYNC_TEST_KEEP_LOGS")) {
        fts_test_remove_tree(dir);
    }
    bson_free(dir);
}
