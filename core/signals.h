/*
 * signals.h - turning SIGTERM and SIGINT into a clean stop.
 *
 * The handler only sets a flag and writes one byte to a self-pipe, so a blocking loop can poll
 * fts_signals_stop_requested() and an event loop can watch fts_signals_fd(). SIGPIPE is ignored:
 * a peer closing a socket is an error to handle where it happens, never a reason to die.
 */
#ifndef FTS_SIGNALS_H
#define FTS_SIGNALS_H

#include <stdbool.h>

#include "error.h"

bool fts_signals_install(fts_error_t *err);

/* True once SIGTERM or SIGINT arrived (or fts_signals_request_stop() was called). */
bool fts_signals_stop_requested(void);

/* The signal that asked for the stop, 0 if none. */
int fts_signals_stop_signal(void);

/* Readable once a stop was requested; -1 before fts_signals_install(). */
int fts_signals_fd(void);

/* Asks for a stop from inside the program, as a signal would. */
void fts_signals_request_stop(void);

/* Restores default dispositions and closes the pipe: a forked child calls this first. */
void fts_signals_reset(void);

/* Sleeps up to ms milliseconds, returning early (false) when a stop is requested. */
bool fts_signals_sleep_ms(unsigned long ms);

#endif
