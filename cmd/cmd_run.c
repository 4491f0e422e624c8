/*
 * cmd_run.c - `ftsync run`: extract and load together on one machine, as one process tree.
 *
 * The supervisor starts `ftsync extract` and `ftsync load` as child processes (this same
 * binary, exec'd afresh, so that neither inherits a client or an event loop across fork) and
 * watches them:
 *   - a child that fails in a way worth retrying (exit 1, or killed by a signal) is started
 *     again after a capped jittered backoff, reset once it has run for a minute;
 *   - a child that exits 2 (bad configuration) or 3 (stopped, needs an operator) stops the
 *     other and `run` exits with that status: restarting would only repeat it;
 *   - on SIGTERM or SIGINT both get SIGTERM and up to FTSYNC_STOP_TIMEOUT_MS plus a grace
 *     period to stop (then SIGKILL); `run` exits 0.
 * Nothing here touches the data: every invariant is kept by the two children, which are the
 * same programs Kubernetes runs on their own.
 *
 * One admin endpoint for the tree: run makes the metrics block in a memfd and hands it to both
 * children (FTSYNC_RUN_METRICS_FD), which count into it and keep their own endpoints off
 * (FTSYNC_ADMIN_ADDR=off in their environment); run serves FTSYNC_ADMIN_ADDR itself, rendering
 * the block with the families of both roles, and its /healthz and /readyz are both children's
 * checks plus "the child is running". Counters survive a child's restart; a child's gauges and
 * state are reset by run when it ends.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "admin.h"
#include "backoff.h"
#include "child_process.h"
#include "clock.h"
#include "cmd.h"
#include "log.h"
#include "signals.h"
#include "wait_status.h"

#define LOG_COMPONENT "run"

/* A child that ran this long is healthy again: its next failure backs off from the start. */
#define HEALTHY_AFTER_MS 60000
/* Beyond the stop timeout, what a child gets to exit before SIGKILL. */
#define STOP_GRACE_MS 5000
/* How often the supervisor looks at its children. */
#define POLL_MS 100

typedef struct {
    const char *command; /* "extract" or "load" */
    fts_child_t process; /* pid 0: not running */
    uint64_t started_at;
    uint64_t restart_at; /* 0: not waiting to restart */
    fts_backoff_t backoff;
    /* Read by the admin endpoint's thread: since when (monotonic ms) the child is not
     * running; 0 while it runs. */
    _Atomic uint64_t down_since;
} child_t;

/* What the admin endpoint's thread sees of the children. */
typedef struct {
    child_t *children;
    size_t count;
    uint64_t stall_ms;
} tree_t;

/* The endpoint's extra check: every child runs; one that has been down (failing and backing
 * off) longer than FTSYNC_HEALTH_STALL_MS makes the tree unhealthy, one down at all unready. */
static bool tree_check(void *context, bool ready, char *reason, size_t reason_size)
{
    const tree_t *tree = context;
    uint64_t now = fts_clock_monotonic_ms();
    for (size_t i = 0; i < tree->count; i++) {
        uint64_t down = atomic_load(&tree->children[i].down_since);
        if (down && (ready || now - down > tree->stall_ms)) {
            snprintf(reason, reason_size,
                     "run: %s is not running (restarting after a failure, down for %" PRIu64
                     " ms; its log says why)",
                     tree->children[i].command, now - down);
            return false;
        }
    }
    return true;
}

/* A child ended: what it showed in the block is no longer true. */
static void child_state_reset(const child_t *child)
{
    if (strcmp(child->command, "extract") == 0) {
        fts_signal_set(FTS_SIGNAL_EXTRACT_STATE, FTS_EXTRACT_STATE_NONE);
        fts_signal_set(FTS_SIGNAL_WORKER_QUICK_ENDS, 0);
        fts_metric_set(FTS_METRIC_LEASE_HELD, 0, 0);
    } else {
        fts_signal_set(FTS_SIGNAL_LOAD_STATE, FTS_LOAD_STATE_NONE);
        fts_metric_set(FTS_METRIC_PENDING, 0, 0);
    }
}

static bool child_start(child_t *child)
{
    const char *const args[] = {"ftsync", child->command, NULL};
    fts_error_t err;
    if (!fts_child_spawn_self(&child->process, args, &err)) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "cannot start %s: %s", child->command, err.message);
        return false;
    }
    child->started_at = fts_clock_monotonic_ms();
    child->restart_at = 0;
    atomic_store(&child->down_since, 0);
    fts_log(FTS_LOG_INFO, LOG_COMPONENT, "started %s (pid %ld)", child->command,
            (long)child->process.pid);
    return true;
}

static void stop_children(child_t *children, size_t count, uint64_t timeout_ms)
{
    for (size_t i = 0; i < count; i++) {
        fts_child_kill(&children[i].process, SIGTERM);
    }
    uint64_t deadline = fts_clock_monotonic_ms() + timeout_ms;
    for (;;) {
        bool running = false;
        for (size_t i = 0; i < count; i++) {
            if (children[i].process.pid > 0) {
                int status = 0;
                bool reaped = fts_child_reap(&children[i].process, false, &status);
                if (reaped || children[i].process.pid == 0) {
                    char text[64];
                    fts_wait_status_describe(status, text, sizeof text);
                    fts_log(FTS_LOG_INFO, LOG_COMPONENT, "%s stopped (%s)", children[i].command,
                            reaped ? text : "gone");
                } else {
                    running = true;
                }
            }
        }
        if (!running) {
            return;
        }
        if (fts_clock_monotonic_ms() >= deadline) {
            break;
        }
        struct timespec pause = {0, POLL_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
    for (size_t i = 0; i < count; i++) {
        if (children[i].process.pid > 0) {
            fts_log(FTS_LOG_WARN, LOG_COMPONENT, "%s did not stop in time: killing it",
                    children[i].command);
            fts_child_kill(&children[i].process, SIGKILL);
            int status;
            fts_child_reap(&children[i].process, true, &status);
        }
    }
}

static const char run_help[] =
    "usage: ftsync run\n\n"
    "Runs `ftsync extract` and `ftsync load` as supervised child processes: a child\n"
    "that fails is restarted with backoff; exit 2 or 3 of a child (bad settings,\n"
    "or a state only an operator can clear) stops both and is run's exit status.\n"
    "SIGTERM or SIGINT stops both cleanly (exit 0). One admin endpoint for both on\n"
    "FTSYNC_ADMIN_ADDR: /healthz, /readyz, /metrics. Settings: ftsync config --help.\n";

int fts_cmd_run(int argc, char **argv)
{
    int usage_status = FTS_EXIT_OK;
    if (!fts_cmd_no_arguments(argc, argv, "run", run_help, &usage_status)) {
        return usage_status;
    }
    fts_config_t config;
    /* Every problem of both roles at once, before anything starts. */
    if (!fts_cmd_load_config(&config, FTS_ROLE_ALL)) {
        fts_config_cleanup(&config);
        return FTS_EXIT_USAGE;
    }
    uint64_t stop_timeout_ms = (uint64_t)config.stop_timeout_ms + STOP_GRACE_MS;
    uint64_t retry_base_ms = (uint64_t)config.retry_base_ms;
    uint64_t retry_max_ms = (uint64_t)config.retry_max_ms;

    fts_error_t err;
    if (!fts_signals_install(&err)) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "%s", err.message);
        fts_config_cleanup(&config);
        return FTS_EXIT_FAILURE;
    }
    child_t children[2] = {{.command = "extract"}, {.command = "load"}};
    const size_t count = sizeof children / sizeof children[0];
    int result = FTS_EXIT_OK;
    tree_t tree = {
        .children = children, .count = count, .stall_ms = fts_config_health_stall_ms(&config)};
    fts_cmd_admin_t admin = {0};
    int metrics_fd = -1;
    admin.metrics = fts_metrics_new_fd(FTSYNC_VERSION, &metrics_fd, &err);
    if (!admin.metrics) {
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "%s", err.message);
        fts_config_cleanup(&config);
        return FTS_EXIT_FAILURE;
    }
    fts_metrics_install(admin.metrics);
    char fd_text[16];
    snprintf(fd_text, sizeof fd_text, "%d", metrics_fd);
    /* The children count into run's block and serve nothing themselves. */
    if (setenv(FTS_RUN_METRICS_FD_VARIABLE, fd_text, 1) != 0 ||
        setenv("FTSYNC_ADMIN_ADDR", "off", 1) != 0) {
        fts_fatal_oom("setenv");
    }
    /* Both NAME and NAME_FILE set is a configuration error: the children get NAME only. */
    unsetenv("FTSYNC_ADMIN_ADDR_FILE");
    /* config stays alive while the endpoint serves: a /status callback reads it. */
    if (!fts_cmd_admin_serve(&admin, &config, FTS_METRICS_ROLE_ALL, tree_check, &tree)) {
        fts_cmd_admin_cleanup(&admin);
        fts_config_cleanup(&config);
        return FTS_EXIT_FAILURE;
    }
    for (size_t i = 0; i < count; i++) {
        /* Restarts back off from at least a second: a child failing at once must not spin. */
        fts_backoff_init(&children[i].backoff, retry_base_ms < 1000 ? 1000 : retry_base_ms,
                         retry_max_ms < 1000 ? 1000 : retry_max_ms, 0);
        if (!child_start(&children[i])) {
            atomic_store(&children[i].down_since, fts_clock_monotonic_ms());
            children[i].restart_at =
                fts_clock_monotonic_ms() + fts_backoff_next_ms(&children[i].backoff);
        }
    }
    while (!fts_signals_stop_requested()) {
        uint64_t now = fts_clock_monotonic_ms();
        bool reaped = false;
        for (size_t i = 0; i < count; i++) {
            child_t *child = &children[i];
            int status = 0;
            if (fts_child_reap(&child->process, false, &status)) {
                reaped = true;
                atomic_store(&child->down_since, now ? now : 1);
                child_state_reset(child);
                char text[64];
                fts_wait_status_describe(status, text, sizeof text);
                int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                if (code == FTS_EXIT_USAGE || code == FTS_EXIT_STOPPED || code == FTS_EXIT_OK) {
                    fts_log(code == FTS_EXIT_OK ? FTS_LOG_WARN : FTS_LOG_ERROR, LOG_COMPONENT,
                            "%s ended (%s); stopping everything: its log says why", child->command,
                            text);
                    result = code == FTS_EXIT_OK ? FTS_EXIT_FAILURE : code;
                    goto stop;
                }
                if (now - child->started_at >= HEALTHY_AFTER_MS) {
                    fts_backoff_reset(&child->backoff);
                }
                uint64_t delay = fts_backoff_next_ms(&child->backoff);
                child->restart_at = now + delay;
                fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                        "%s failed (%s); restarting it in %" PRIu64 " ms", child->command, text,
                        delay);
            }
        }
        if (reaped) {
            continue; /* look again at once: another child may have ended too */
        }
        for (size_t i = 0; i < count; i++) {
            child_t *child = &children[i];
            if (child->process.pid == 0 && child->restart_at && now >= child->restart_at) {
                if (!child_start(child)) {
                    child->restart_at = now + fts_backoff_next_ms(&child->backoff);
                }
            }
        }
        fts_signals_sleep_ms(POLL_MS);
    }
    fts_log(FTS_LOG_INFO, LOG_COMPONENT, "signal %d: stopping extract and load",
            fts_signals_stop_signal());
stop:
    stop_children(children, count, stop_timeout_ms);
    fts_cmd_admin_cleanup(&admin);
    fts_config_cleanup(&config);
    return result;
}
