/*
 * log_tail.h - printing the end of a test server's log, which is what a failing test shows so
 * that a server that could not start or misbehaved explains itself (tests never skip).
 */
#ifndef FTS_TEST_LOG_TAIL_H
#define FTS_TEST_LOG_TAIL_H

/* Prints the last `lines` lines of the file at path to stderr, framed and labelled with who. */
void fts_test_print_log_tail(const char *who, const char *path, unsigned lines);

#endif
