/*
 * redis_server.h - a private redis-server for tests that need one of their own: with a
 * password or an ACL user, or one they can stop and restart.
 *
 * The server runs from Debian's `redis-server` on a free loopback port, in its own scratch
 * directory under fts_testbed_dir(), with AOF on (so a restart keeps the data) and its log in
 * that directory. Invariants:
 *   - no redis-server outlives the test: stop/destroy end it (SIGTERM, then SIGKILL), an
 *     atexit handler kills any left running (and removes their directories), and the child
 *     asks the kernel to kill it should the test process die first (PR_SET_PDEATHSIG);
 *   - "started" means ready: our server logged "Ready to accept connections" (its data is
 *     loaded) and answered a PING on the port;
 *   - on any failure the tail of the server's log is printed to stderr.
 * Tests only; single-threaded.
 */
#ifndef FTS_TEST_REDIS_SERVER_H
#define FTS_TEST_REDIS_SERVER_H

#include <stdbool.h>

#include "error.h"

/* How long start and restart wait for the server to accept connections. */
#define FTS_TEST_REDIS_SERVER_READY_TIMEOUT_MS 10000

typedef struct fts_test_redis_server fts_test_redis_server_t;

/* Starts a server. extra_args (NULL-terminated, may be NULL) are appended to the command line,
 * e.g. {"--requirepass", "secret", NULL} or {"--user", "alice", "on", ">pw", "~*", "+@all",
 * NULL}; they are copied and used again by restart. */
fts_test_redis_server_t *fts_test_redis_server_start(const char *const *extra_args,
                                                     fts_error_t *err);

/* Ends the server (SIGTERM, waiting up to 10 s, then SIGKILL); its data stays on disk. */
bool fts_test_redis_server_stop(fts_test_redis_server_t *server, fts_error_t *err);

/* Stops the server if it runs, then starts it again on the same port and directory. */
bool fts_test_redis_server_restart(fts_test_redis_server_t *server, fts_error_t *err);

int fts_test_redis_server_port(const fts_test_redis_server_t *server);

/* "redis://127.0.0.1:<port>/0"; borrowed until destroy. */
const char *fts_test_redis_server_url(const fts_test_redis_server_t *server);

/* The scratch directory (data and redis.log); borrowed until destroy. */
const char *fts_test_redis_server_dir(const fts_test_redis_server_t *server);

/* Prints the last `lines` lines of the server's log to stderr. */
void fts_test_redis_server_print_log_tail(const fts_test_redis_server_t *server, unsigned lines);

/* Stops the server and removes its directory. Accepts NULL. */
void fts_test_redis_server_destroy(fts_test_redis_server_t *server);

/* A loopback TCP port nobody listens on right now (bound, read, released), or -1. */
int fts_test_free_port(void);

#endif
