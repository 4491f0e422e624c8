/*
 * es_server.h - a private search engine node, of the engine the test runs against
 * (fts_testbed_engine(): OpenSearch 2.19 or Elasticsearch 1.5.2), for tests that take it away
 * and bring it back (an outage in the middle of a load), on the same port and with the same
 * data.
 *
 * The node is started and stopped by test/tools/testbed.sh (`es-start DIR PORT ENGINE`,
 * `es-stop DIR`), so there is one launch recipe per engine in the repository. The
 * script's data directory, log and pid file are under a scratch directory of the test bed
 * (fts_testbed_dir()). Invariants:
 *   - "started" means ready: the script waited for the node's cluster health (yellow or green)
 *     and the node's data (indices, versions) is there again after a restart;
 *   - no node outlives the test: destroy stops it, an atexit handler kills any left running,
 *     and the script's watchdog (FTSYNC_TESTBED_ES_OWNER = the test's pid) kills the node once
 *     the test process is gone, even after a SIGKILL from CTest's timeout;
 *   - on any failure the script has printed the tail of the node's log to stderr.
 * Tests only; single-threaded.
 */
#ifndef FTS_TEST_ES_SERVER_H
#define FTS_TEST_ES_SERVER_H

#include <stdbool.h>

#include "error.h"

/* How long start and restart wait for the script (which waits up to 120 s for the node). */
#define FTS_TEST_ES_SERVER_START_TIMEOUT_MS 180000

typedef struct fts_test_es_server fts_test_es_server_t;

/* Starts a node of the test's engine on a free loopback port in a new scratch directory.
 * Never NULL for want of memory (allocation failure aborts). testbed_script: the path
 * of test/tools/testbed.sh (a test has it as FTSYNC_SOURCE_DIR "/test/tools/testbed.sh");
 * copied. */
fts_test_es_server_t *fts_test_es_server_start(const char *testbed_script, fts_error_t *err);

/* Stops the node (the script sends TERM, then KILL after 20 s); its data stays. */
bool fts_test_es_server_stop(fts_test_es_server_t *server, fts_error_t *err);

/* Starts the node again on the same port and data directory (stopping it first if it runs).
 * Fails when the port was taken meanwhile. */
bool fts_test_es_server_restart(fts_test_es_server_t *server, fts_error_t *err);

/* True while the node's process runs. */
bool fts_test_es_server_running(const fts_test_es_server_t *server);

int fts_test_es_server_port(const fts_test_es_server_t *server);

/* "http://127.0.0.1:<port>"; borrowed until destroy. */
const char *fts_test_es_server_url(const fts_test_es_server_t *server);

/* The scratch directory (the node's files are in <dir>/es); borrowed until destroy. */
const char *fts_test_es_server_dir(const fts_test_es_server_t *server);

/* Prints the last `lines` lines of the node's log to stderr. */
void fts_test_es_server_print_log_tail(const fts_test_es_server_t *server, unsigned lines);

/* Stops the node and removes its directory (kept when FTSYNC_TEST_KEEP_LOGS is set). Accepts
 * NULL. */
void fts_test_es_server_destroy(fts_test_es_server_t *server);

#endif
