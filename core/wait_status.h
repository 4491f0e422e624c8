/*
 * wait_status.h - a waitpid() status as text, for the log lines of whoever reaps a child: the
 * extract parent its transform worker (through the worker port), `ftsync run` its children.
 */
#ifndef FTS_WAIT_STATUS_H
#define FTS_WAIT_STATUS_H

#include <stddef.h>

/* "exit status N", "signal N (its name)", or "status N" for anything else, into text (cut to size).
 */
void fts_wait_status_describe(int status, char *text, size_t size);

#endif
