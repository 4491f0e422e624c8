/*
 * extract_fixture.h - the set-up the integration tests of `ftsync extract` repeat, and the
 * steps of theirs that fail the running cmocka test when the harness (extract_harness.h)
 * reports a failure.
 *
 *   - Bed: the servers a test group shares, a private redis-server and the MongoDB double
 *     (mongo_double.h), started in the group set-up and stopped in its teardown, with the
 *     seed of the group's random choices (FTSYNC_TEST_SEED, else the group's default).
 *   - Steps: set a pipeline up on the bed, start extract, stop it cleanly, wait for an entry,
 *     insert a marker or a test document, check the replay against the collection and the dead
 * letters. Each either succeeds or fails the test with a message naming what did not happen (and
 * prints the extract log's tail where that log explains it). Include after <cmocka.h>: the steps
 * call fail_msg, so they may only run inside a test. Tests only; single-threaded.
 */
#ifndef FTS_TEST_EXTRACT_FIXTURE_H
#define FTS_TEST_EXTRACT_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "extract_harness.h"
#include "mongo_double.h"
#include "redis_server.h"

/* The servers and settings a group of extract tests shares. */
typedef struct {
    const char *binary;   /* FTSYNC_BINARY (borrowed: the caller's string outlives the bed) */
    const char *workload; /* FTSYNC_WORKLOAD (borrowed likewise) */
    fts_test_mongo_double_t *mongo;
    fts_test_redis_server_t *redis;
    uint64_t seed; /* FTSYNC_TEST_SEED when set and not empty, else the default given */
} fts_test_extract_bed_t;

/* Initialises the MongoDB driver, reads the seed, starts a redis-server with redis_args
 * (NULL-terminated extra arguments, NULL: none) and the MongoDB double. On failure prints what
 * failed to stderr and returns false (the group set-up then returns -1); whatever started is
 * stopped by fts_test_extract_bed_stop, which the group teardown calls in any case. */
bool fts_test_extract_bed_start(fts_test_extract_bed_t *bed, const char *binary,
                                const char *workload, const char *const *redis_args,
                                uint64_t default_seed);

/* Stops the double and the redis-server (either may be missing) and cleans the driver up. */
void fts_test_extract_bed_stop(fts_test_extract_bed_t *bed);

/* Sets p up (fts_test_pipeline_init) for a fresh pipeline named after prefix on the bed's
 * Redis and on mongo_uri (NULL: the bed's double); fails the test when it cannot. */
void fts_test_extract_bed_pipeline(const fts_test_extract_bed_t *bed, fts_test_pipeline_t *p,
                                   const char *mongo_uri, const char *prefix);

/* Starts an extract with p's environment; fails the test when it cannot. Never NULL. */
fts_test_extract_t *fts_test_pipeline_start_or_fail(fts_test_pipeline_t *p);

/* SIGTERMs *extract and fails the test (log tail printed) unless it exits 0 within
 * timeout_ms; then destroys it and sets *extract to NULL. */
void fts_test_extract_stop_clean(fts_test_extract_t **extract, unsigned timeout_ms);

/* Follows p's stream until an entry of id (op, origin: 0 = any) is read; returns its index in
 * p->entries. Fails the test after timeout_ms, printing the log tail of extract (NULL: none). */
size_t fts_test_pipeline_wait_entry(fts_test_pipeline_t *p, const fts_test_extract_t *extract,
                                    const char *id, int op, int origin, unsigned timeout_ms);

/* fts_test_pipeline_wait_entry for the id written as a decimal number. */
size_t fts_test_pipeline_wait_entry_number(fts_test_pipeline_t *p,
                                           const fts_test_extract_t *extract, int32_t id, int op,
                                           int origin, unsigned timeout_ms);

/* Inserts the marker document {_id: id, name: "marker"} (retrying for 30 s while the server
 * refuses writes); fails the test when it cannot. */
void fts_test_pipeline_insert_marker(fts_test_pipeline_t *p, int32_t id);

/* Inserts {_id: id, name: "doc", poison: poison} (the poison test plugin aborts the worker
 * on poison: true); fails the test when the insert fails. */
void fts_test_pipeline_insert_doc(fts_test_pipeline_t *p, int32_t id, bool poison);

/* Fails the test unless replaying p's whole stream gives the collection (label names the run
 * in what is printed); before failing prints the log tail of extract (NULL: none). */
void fts_test_pipeline_assert_replay_equals_collection(fts_test_pipeline_t *p,
                                                       const fts_test_extract_t *extract,
                                                       const char *label);

/* Fails the test unless p's dead-letter stream is empty. */
void fts_test_pipeline_assert_no_dead_letters(fts_test_pipeline_t *p);

#endif
