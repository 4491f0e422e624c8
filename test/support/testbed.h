/*
 * testbed.h - how an integration test finds the servers the `testbed` CTest fixture started.
 *
 * test/tools/testbed.sh writes KEY=VALUE lines to $FTSYNC_TESTBED_DIR/testbed.env, e.g.
 *   FTSYNC_TEST_REDIS_URL=redis://127.0.0.1:40123/0
 *   FTSYNC_TEST_ES_URL=http://127.0.0.1:40124
 * A variable of the same name in the environment wins, so a developer can point the tests at
 * servers of their own. A missing value fails the test with a message: tests never skip.
 */
#ifndef FTS_TEST_TESTBED_H
#define FTS_TEST_TESTBED_H

/* The value of key, or NULL. The string is owned by the testbed module (lives until exit). */
const char *fts_testbed_get(const char *key);

/* Like fts_testbed_get, but prints what is missing (and where it looked) and exits 1. */
const char *fts_testbed_require(const char *key);

/* The scratch directory of this run ($FTSYNC_TESTBED_DIR), or "/tmp" outside CTest. */
const char *fts_testbed_dir(void);

#endif
