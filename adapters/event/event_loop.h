/*
 * event_loop.h - the one event loop of a process (libevent), as thin glue: cmd/ wires the
 * loader's timer, the stop signal and deferred calls through it without including libevent,
 * which README.md, Architecture, keeps inside adapters/. The asynchronous adapters (es_async.h,
 * redis_group.h) attach to the same loop through fts_event_loop_base().
 */
#ifndef FTS_EVENT_LOOP_H
#define FTS_EVENT_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;

typedef struct fts_event_loop fts_event_loop_t;
typedef struct fts_event_timer fts_event_timer_t;
typedef struct fts_event_watch fts_event_watch_t;

typedef void (*fts_event_fn)(void *arg);

/* NULL when libevent cannot set up a backend (out of file descriptors, say). */
fts_event_loop_t *fts_event_loop_new(void);
/* Frees the loop; timers and watches must be freed first. Accepts NULL. */
void fts_event_loop_destroy(fts_event_loop_t *loop);

/* The libevent base, for adapters that attach to it. Borrowed until destroy. */
struct event_base *fts_event_loop_base(fts_event_loop_t *loop);

/* Runs until fts_event_loop_break or nothing is left to wait for. False if the loop failed. */
bool fts_event_loop_run(fts_event_loop_t *loop);
/* Makes fts_event_loop_run return after the current callback. */
void fts_event_loop_break(fts_event_loop_t *loop);

/* Calls fn(arg) from the loop as soon as possible, once; never from inside this call. */
void fts_event_loop_defer(fts_event_loop_t *loop, fts_event_fn fn, void *arg);

/* A one-shot timer: arm replaces any earlier arming. Never NULL: allocation failure aborts. */
fts_event_timer_t *fts_event_timer_new(fts_event_loop_t *loop, fts_event_fn fn, void *arg);
void fts_event_timer_arm(fts_event_timer_t *timer, uint64_t delay_ms);
void fts_event_timer_destroy(fts_event_timer_t *timer);

/* Calls fn(arg) each time fd is readable, until destroyed or stopped. NULL when the loop
 * cannot watch fd (the backend refused it). */
fts_event_watch_t *fts_event_watch_new(fts_event_loop_t *loop, int fd, fts_event_fn fn, void *arg);
void fts_event_watch_stop(fts_event_watch_t *watch);
void fts_event_watch_destroy(fts_event_watch_t *watch);

#endif
