/*
 * mongo_double.h - a MongoDB replica set for a C test: either a private ftsync-mongo-double
 * (test/double/, a single-node replica set "rs0" in memory) or, when FTSYNC_TEST_MONGO_URI is
 * set, the real deployment that variable names.
 *
 * The double is the binary the build names in the compile definition FTSYNC_MONGO_DOUBLE (the
 * environment variable of the same name, when set, wins: it lets a developer try another build).
 * It is started as `ftsync-mongo-double --port 0 <extra args>` and is ready when it printed its
 * one line `ftsync-mongo-double ready port=<N>` on stdout. Invariants:
 *   - no double outlives the test: stop/destroy end it (SIGTERM, then SIGKILL), an atexit
 *     handler kills any left running, and the child asks the kernel to kill it should the test
 *     process die first (PR_SET_PDEATHSIG);
 *   - its stderr goes to a file in a scratch directory under fts_testbed_dir(); on any failure
 *     (not ready in time, exited early, did not stop) the tail of that file is printed to stderr;
 *   - with FTSYNC_TEST_MONGO_URI set nothing is started and the extra arguments are ignored
 *     (a real server has no such switches): the test must then not rely on them, and must use
 *     names from fts_test_mongo_unique_name() so that it cannot collide with anything else on
 *     that server.
 * Tests only; single-threaded (call start/stop from one thread).
 */
#ifndef FTS_TEST_MONGO_DOUBLE_H
#define FTS_TEST_MONGO_DOUBLE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* How long start waits for the ready line. */
#define FTS_TEST_MONGO_DOUBLE_READY_TIMEOUT_MS 10000
/* How long stop waits after SIGTERM before it sends SIGKILL. */
#define FTS_TEST_MONGO_DOUBLE_STOP_TIMEOUT_MS 10000

typedef struct fts_test_mongo_double fts_test_mongo_double_t;

/* Starts a double (or, with FTSYNC_TEST_MONGO_URI set, hands back that deployment). extra_args
 * (NULL-terminated, may be NULL) are appended to the command line, e.g.
 * {"--history-events", "16", NULL}. */
fts_test_mongo_double_t *fts_test_mongo_double_start(const char *const *extra_args,
                                                     fts_error_t *err);

/* "mongodb://127.0.0.1:<port>/?replicaSet=rs0", or FTSYNC_TEST_MONGO_URI; borrowed until
 * destroy. */
const char *fts_test_mongo_double_uri(const fts_test_mongo_double_t *server);

/* The double's port; 0 for an external deployment. */
int fts_test_mongo_double_port(const fts_test_mongo_double_t *server);

/* True when FTSYNC_TEST_MONGO_URI named a real deployment and nothing was started. */
bool fts_test_mongo_double_is_external(const fts_test_mongo_double_t *server);

/* Prints the last `lines` lines of the double's stderr to stderr (nothing for an external
 * deployment). */
void fts_test_mongo_double_print_log_tail(const fts_test_mongo_double_t *server, unsigned lines);

/* Ends the double (SIGTERM, waiting up to 10 s, then SIGKILL). Fails, printing the log tail,
 * when it had to be killed or had already died. Nothing to do for an external deployment. */
bool fts_test_mongo_double_stop(fts_test_mongo_double_t *server, fts_error_t *err);

/* Stops the double if it runs and removes its scratch directory. Accepts NULL. */
void fts_test_mongo_double_destroy(fts_test_mongo_double_t *server);

/* Writes "<prefix>_<pid>_<n>" to out (n counts calls in this process): a database or
 * collection name nobody else uses, even on a shared real server. Returns out. */
char *fts_test_mongo_unique_name(const char *prefix, char *out, size_t size);

#endif
