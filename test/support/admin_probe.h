/*
 * admin_probe.h - what an integration test uses to watch an `ftsync` process it started from
 * the outside: starting it and learning the port of its admin endpoint from its log, that
 * endpoint (HTTP status and body, Prometheus samples, polling a path until it answers as
 * expected), its log (read whole, waited on, its tail printed) and the scratch directory the
 * test keeps the log in.
 *
 * Invariants:
 *   - every body and log handed out is NUL-terminated and never NULL (an unreadable log or an
 *     unanswered request gives ""): the caller frees it with bson_free;
 *   - a poll ends at its deadline: it never sleeps past it by more than one pause (100 ms for
 *     a log, 200 ms for HTTP) plus one request;
 *   - fts_test_admin_start, fts_test_admin_expect, fts_test_admin_metrics and
 *     fts_test_scratch_dir_new fail the current cmocka test themselves (with the log's tail
 *     where there is a log), so a test reads as the things that must happen.
 * Tests only; single-threaded.
 */
#ifndef FTS_TEST_ADMIN_PROBE_H
#define FTS_TEST_ADMIN_PROBE_H

#include <stdbool.h>
#include <sys/types.h>

/* Lines of a process's log a failing expectation prints. */
#define FTS_TEST_ADMIN_LOG_LINES 40

/* ---- HTTP --------------------------------------------------------------------------------- */

/* method url (method NULL: GET), no request body, through fts_test_http (load_harness.h: one
 * reused connection, 30 s timeout). Returns the HTTP status, 0 when no answer came; *body (if
 * body is not NULL) is the answer's body. */
long fts_test_http_status(const char *method, const char *url, char **body);

/* GETs url until it answers want and the body contains each of needles (NULL-terminated; NULL:
 * any body), or timeout_ms passed. True when it did. The last answer's status goes to
 * *last_status and its body to *last_body (each if not NULL). */
bool fts_test_http_poll(const char *url, long want, const char *const *needles, unsigned timeout_ms,
                        long *last_status, char **last_body);

/* fts_test_http_poll with one needle (NULL: any body). */
bool fts_test_http_wait_for(const char *url, long want, const char *needle, unsigned timeout_ms,
                            char **last_body);

/* ---- Prometheus text ---------------------------------------------------------------------- */

/* The value of the sample line of text that starts with series (name and labels, exactly as
 * served) followed by a space; -1 if there is none. */
double fts_test_metrics_sample(const char *text, const char *series);

/* ---- a process's admin endpoint ----------------------------------------------------------- */

/* How long a started process may take to announce its admin endpoint in its log. */
#define FTS_TEST_ADMIN_PORT_MS 20000

/* Starts `binary subcommand` (fts_test_spawn: output appended to log_path) and waits for the
 * port of its admin endpoint, which goes to *port; fails the test (with the log's tail) when
 * it cannot start or announces no port within FTS_TEST_ADMIN_PORT_MS. Returns its pid. */
pid_t fts_test_admin_start(const char *binary, const char *subcommand, const char *log_path,
                           int *port);

/* Polls http://127.0.0.1:port<path> as fts_test_http_poll does; fails the test with the last
 * status and body and the tail of log_path when timeout_ms pass first. */
void fts_test_admin_expect(int port, const char *path, long want, const char *const *needles,
                           unsigned timeout_ms, const char *log_path);

/* GETs http://127.0.0.1:port/metrics, asserting it answers 200: the scrape (bson_free). */
char *fts_test_admin_metrics(int port);

/* ---- logs --------------------------------------------------------------------------------- */

/* The whole of the file at log_path ("" when it cannot be read; bson_free). */
char *fts_test_log_read(const char *log_path);

/* Reads log_path until it contains needle (at least once, however small timeout_ms is); true
 * when it did before timeout_ms passed. */
bool fts_test_log_wait_for(const char *log_path, const char *needle, unsigned timeout_ms);

/* Prints the last FTS_TEST_ADMIN_LOG_LINES lines of log_path to stderr. */
void fts_test_log_print_tail(const char *log_path);

/* ---- scratch directories ------------------------------------------------------------------ */

/* Creates <test bed directory>/<prefix>-XXXXXX (mkdtemp), failing the test if it cannot; the
 * path is the caller's to give to fts_test_scratch_dir_destroy. */
char *fts_test_scratch_dir_new(const char *prefix);

/* Removes dir and what is in it, unless FTSYNC_TEST_KEEP_LOGS is set, and frees the path.
 * Accepts NULL. */
void fts_test_scratch_dir_destroy(char *dir);

#endif
