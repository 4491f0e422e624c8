/*
 * load_fixture.h - the set-up the integration tests of `ftsync load` repeat, and the steps of
 * theirs that fail the running cmocka test when the harness (load_harness.h) reports a failure.
 *
 *   - Bed: one fts_test_load_t per test, allocated here, kept in cmocka's state and cleaned up
 *     by fts_test_load_fixture_teardown (the test's teardown), on the index definition of the
 *     test bed's engine (fts_testbed_index_definition()).
 *   - Steps: start a loader, flush written entries, wait for the drain, compare the index with
 *     the model, count the dead letters, stop a loader cleanly. Each either succeeds or fails
 *     the test after printing the loaders' log tails (FTS_TEST_LOAD_FIXTURE_LOG_LINES lines
 *     each), which is where a loader says why.
 * Include after <cmocka.h>: the steps call fail_msg, so they may only run inside a test.
 * Tests only; single-threaded.
 */
#ifndef FTS_TEST_LOAD_FIXTURE_H
#define FTS_TEST_LOAD_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "load_harness.h"

/* Lines of each loader's log printed when a step fails. */
#define FTS_TEST_LOAD_FIXTURE_LOG_LINES 40

/* Sets t up (fts_test_load_init) for binary on redis_url and es_url, named after name; fails
 * the test when it cannot. The caller cleans t up (fts_test_load_cleanup) in any case. */
void fts_test_load_init_or_fail(fts_test_load_t *t, const char *binary, const char *redis_url,
                                const char *es_url, const char *name);

/* Allocates a load bed, stores it in *state first (so that fts_test_load_fixture_teardown
 * frees it whatever happens next), then sets it up as fts_test_load_init_or_fail. Never NULL:
 * allocation failure aborts. */
fts_test_load_t *fts_test_load_fixture_new(void **state, const char *binary, const char *redis_url,
                                           const char *es_url, const char *name);

/* cmocka teardown of fts_test_load_fixture_new: cleans the bed in *state up and frees it
 * (nothing when the test never made one). */
int fts_test_load_fixture_teardown(void **state);

/* Prints every loader's log tail, then fails the test with "<what>: <err's message>" (err
 * may be NULL). */
void fts_test_load_fail_with_logs(fts_test_load_t *t, const char *what, const fts_error_t *err);

/* Starts a loader with consumer name consumer (NULL: a new one). Never NULL: fails the test
 * when it cannot. */
fts_test_loader_t *fts_test_load_start_loader_or_fail(fts_test_load_t *t, const char *consumer);

/* Writes the queued entries to the stream (fts_test_load_flush). */
void fts_test_load_flush_or_fail(fts_test_load_t *t);

/* Waits up to timeout_ms for the loaders to drain the stream (fts_test_load_wait_drained). */
void fts_test_load_wait_drained_or_fail(fts_test_load_t *t, unsigned timeout_ms);

/* Fails unless the index equals the model (label names the check in what is printed). */
void fts_test_load_expect_index_equals_model(fts_test_load_t *t, const char *label);

/* Fails unless the dead-letter stream holds exactly expected entries. */
void fts_test_load_expect_dead_count(fts_test_load_t *t, long long expected);

/* SIGTERMs loader and fails (its log tail printed) unless it exits 0 within timeout_ms. */
void fts_test_load_expect_clean_stop(fts_test_load_t *t, fts_test_loader_t *loader,
                                     unsigned timeout_ms);

#endif
