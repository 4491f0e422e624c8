/*
 * child_process.h - the child processes ftsync starts: the transform worker of `ftsync
 * extract` (a forked function) and the extract and load children of `ftsync run` (this binary
 * exec'd afresh). The one place for fork hygiene: a child resets its signal dispositions before
 * it runs anything; the parent reaps with WNOHANG while it works and waits (resuming after
 * EINTR) only when it stops.
 */
#ifndef FTS_CHILD_PROCESS_H
#define FTS_CHILD_PROCESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "error.h"

/* The file descriptor a child keeps its channel to the parent on (fts_child_keep_fd). */
#define FTS_CHILD_FD 3

typedef struct {
    pid_t pid; /* 0: none (never started, reaped, or no longer ours) */
} fts_child_t;

/* Runs in the child; its result is the child's exit status. */
typedef int (*fts_child_main_fn)(void *arg);

/* Forks a child that resets its signals (fts_signals_reset) and exits with run(arg). Stdio
 * buffers are flushed first, so nothing buffered is written twice. false (FTS_ERROR_SYSTEM)
 * when fork fails. */
bool fts_child_spawn(fts_child_t *child, fts_child_main_fn run, void *arg, fts_error_t *err);

/* Spawns this very binary (/proc/self/exe) with argv, so that the child inherits no client or
 * event loop of the parent. The child gets SIGTERM when its parent dies: a supervised process
 * never runs on unsupervised. A failed exec ends the child with exit status 1. */
bool fts_child_spawn_self(fts_child_t *child, const char *const argv[], fts_error_t *err);

/* In a child: makes fd its FTS_CHILD_FD and closes every descriptor above it, keeping only
 * stdin, stdout, stderr and that one (what else the parent had open, e.g. its server
 * connections, must not be shared). false when dup2 fails. */
bool fts_child_keep_fd(int fd);

/* Reaps child once it ended: true with *status (a waitpid status, fts_wait_status_describe)
 * and child->pid 0. Without block false at once while it runs; with block it waits. A child
 * that is no longer ours to wait for (ECHILD) returns false with child->pid 0. */
bool fts_child_reap(fts_child_t *child, bool block, int *status);

/* Sends sig to the child, if one runs (reap it afterwards). */
void fts_child_kill(const fts_child_t *child, int sig);

#endif
