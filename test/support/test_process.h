/*
 * test_process.h - starting `ftsync <subcommand>` (or any program) as a child of a test, and
 * making sure no child outlives the test; shared by extract_harness.c and load_harness.c.
 *
 * Invariants:
 *   - no child outlives the test: every child started here is remembered until the test reaps
 *     it (fts_test_process_forget), an atexit handler kills (SIGKILL) and reaps those still
 *     remembered, and each child asks the kernel to kill it should the test die first
 *     (PR_SET_PDEATHSIG);
 *   - a started ftsync sees only the settings the test gives it: the test's environment minus
 *     every FTSYNC_* variable (FTSYNC_TESTBED_DIR excepted: it says where the test bed is),
 *     then the defaults the caller does not set, then the caller's settings;
 *   - a child's stdout and stderr are appended to a log file, its stdin is /dev/null, and it
 *     starts with no signal blocked.
 * Tests only; single-threaded.
 */
#ifndef FTS_TEST_PROCESS_H
#define FTS_TEST_PROCESS_H

#include <sys/types.h>

#include "error.h"

/* Children remembered at once, at most (more are started but not killed at exit). */
#define FTS_TEST_PROCESS_LIVE_MAX 192

/* Runs `<binary> <subcommand>` with the environment described above: defaults and env are
 * NULL-terminated "NAME=value" lists (either may be NULL); an entry of env replaces an
 * inherited or default one of the same name. Output is appended to log_path. Returns the
 * child's pid, remembered; -1 with err set when the log cannot be opened or fork fails. */
pid_t fts_test_process_start(const char *binary, const char *subcommand,
                             const char *const *defaults, const char *const *env,
                             const char *log_path, fts_error_t *err);

/* Remembers pid so that the atexit handler kills it should the test end first. */
void fts_test_process_remember(pid_t pid);

/* Forgets pid once it was reaped (its number may be reused). */
void fts_test_process_forget(pid_t pid);

#endif
