/*
 * test_cleanup.h - removing what tests leave behind: the scratch directories of servers and
 * harnesses, and the servers a failing test never stopped.
 *
 * cmocka leaves a test function at its first failed assertion, before the clean-up at its end,
 * so every server module (redis_server.c, es_server.c, mongo_double.c) registers each server it
 * starts here with a function that ends it; whatever is still registered when the test program
 * exits is ended by one atexit handler, in registration order. A server is removed from the
 * registry when it is destroyed normally.
 * Tests only; single-threaded.
 */
#ifndef FTS_TEST_CLEANUP_H
#define FTS_TEST_CLEANUP_H

#include <stdbool.h>

/* Objects registered at once, at most (servers alive at once in one test program). */
#define FTS_TEST_CLEANUP_MAX 36

/* Ends what object (borrowed) holds: kills its processes, removes its files. Runs at exit. */
typedef void (*fts_test_cleanup_fn)(void *object);

/* Registers object to be cleaned up with cleanup at exit (the atexit handler is installed on
 * the first call). False when FTS_TEST_CLEANUP_MAX objects are registered already. */
bool fts_test_cleanup_at_exit(fts_test_cleanup_fn cleanup, void *object);

/* Unregisters object (nothing when it is not registered). */
void fts_test_cleanup_forget(const void *object);

/* Removes dir and everything below it, depth first, never following a symbolic link; what
 * cannot be removed is left (a best effort: a scratch directory). */
void fts_test_remove_tree(const char *dir);

#endif
