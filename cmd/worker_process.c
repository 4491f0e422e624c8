/*
 * worker_process.c - the forked transform worker of `ftsync extract` (worker_process.h): the
 * worker port of the parent, and the child's set-up around the core's worker loop
 * (core/extract_worker.c).
 *
 * Invariants are the loop's (1, 3, 5: see core/extract_worker.h); the child keeps the order of
 * set-up, so that a transform that cannot be set up ends with FTS_WORKER_EXIT_CONFIG before any
 * server is contacted.
 */
#include "worker_process.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cmd.h"
#include "extract_worker.h"
#include "log.h"
#include "redis_conn.h"
#include "redis_queue.h"

/* What the child is started with; a copy of the parent's stack, as fork makes it. */
typedef struct {
    const fts_config_t *config;
    int fd; /* the child's end of the socketpair */
} worker_start_t;

/* ---------------------------------------------------------------------------------------- */
/* The child                                                                                */

/* Runs the worker loop over fd until the parent closes it; returns an FTS_WORKER_EXIT_*. */
static int worker_run(const fts_config_t *config, int fd)
{
    int status = FTS_WORKER_EXIT_RETRY;
    fts_error_t err;
    fts_redis_t *state = NULL;
    fts_redis_t *queue_conn = NULL;
    fts_redis_queue_t *queue = NULL;
    fts_socket_channel_t channel;
    fts_socket_channel_init(&channel, fd);

    fts_extract_options_t options;
    fts_cmd_extract_options(config, &options);
    fts_transform_t *transform = fts_transform_new(&options.transform, &err);
    if (!transform) {
        fts_log(FTS_LOG_ERROR, "worker", "cannot set up the transform: %s", err.message);
        status = FTS_WORKER_EXIT_CONFIG;
        goto cleanup;
    }
    state = fts_cmd_redis_connect(config, config->state_redis_url, &err);
    if (state && strcmp(config->queue_redis_url, config->state_redis_url) != 0) {
        queue_conn = fts_cmd_redis_connect(config, config->queue_redis_url, &err);
        if (!queue_conn) {
            fts_redis_destroy(state);
            state = NULL;
        }
    }
    if (!state) {
        fts_log(FTS_LOG_ERROR, "worker", "cannot connect to Redis: %s", err.message);
        goto cleanup;
    }
    queue = fts_redis_queue_new(state, queue_conn, config->pipeline, &err);
    if (!queue) {
        fts_log(FTS_LOG_ERROR, "worker", "%s", err.message);
        goto cleanup;
    }
    /* Non-blocking, so that a read finds "nothing more now" (AGAIN) and the batch is flushed
     * instead of waiting for frames that may not come for a while. */
    if (!fts_socket_channel_set_nonblocking(&channel, &err)) {
        fts_log(FTS_LOG_ERROR, "worker", "cannot make the socket non-blocking");
        goto cleanup;
    }
    if (options.transform.id_map) {
        fts_log(FTS_LOG_INFO, "worker",
                "id map on: deletes without the id field \"%s\" take their index id from %s",
                config->id_field, fts_redis_queue_keys(queue)->ids);
    }
    fts_queue_port_t queue_port = fts_redis_queue_port(queue);
    fts_channel_port_t channel_port = fts_socket_channel_port(&channel);
    status = fts_extract_worker_loop(transform, options.batch_size, &queue_port, &channel_port);

cleanup:
    fts_socket_channel_cleanup(&channel);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(queue_conn);
    fts_redis_destroy(state);
    fts_transform_destroy(transform);
    return status;
}

static int worker_child_main(void *arg)
{
    const worker_start_t *start = arg;
    /* The parent decides when the worker stops (it closes the socket), so the SIGINT of a
     * terminal (sent to the whole group) and a SIGTERM sent to the group are ignored. A Redis
     * peer hanging up must be an error, not a SIGPIPE. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* Close everything else the parent had: its Redis connections and, after a restart, its
     * MongoDB sockets. */
    if (!fts_child_keep_fd(start->fd)) {
        return FTS_WORKER_EXIT_RETRY;
    }
    return worker_run(start->config, FTS_CHILD_FD);
}

/* ---------------------------------------------------------------------------------------- */
/* The parent: the worker port                                                              */

static bool worker_spawn(void *context, fts_error_t *err)
{
    fts_worker_process_t *process = context;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "socketpair: %s", strerror(errno));
    }
    worker_start_t start = {.config = process->config, .fd = sv[1]};
    bool ok = fts_child_spawn(&process->child, worker_child_main, &start, err);
    close(sv[1]);
    if (!ok) {
        close(sv[0]);
        return false;
    }
    process->channel.fd = sv[0];
    fts_log(FTS_LOG_INFO, "extract", "transform worker started pid=%d", (int)process->child.pid);
    return true;
}

static bool worker_running(void *context)
{
    fts_worker_process_t *process = context;
    return process->child.pid > 0;
}

static void worker_close(void *context)
{
    fts_worker_process_t *process = context;
    if (process->channel.fd >= 0) {
        close(process->channel.fd);
        process->channel.fd = -1;
    }
}

static bool worker_send(void *context, const bson_t *frame, fts_error_t *err)
{
    fts_worker_process_t *process = context;
    fts_channel_port_t channel = fts_socket_channel_port(&process->channel);
    return channel.ops->send(channel.context, frame, err);
}

static bool worker_reap(void *context, bool block, int *status)
{
    fts_worker_process_t *process = context;
    if (block) {
        worker_close(process); /* the worker waits for the end of its frames */
    }
    bool reaped = fts_child_reap(&process->child, block, status);
    if (reaped) {
        worker_close(process);
    }
    return reaped;
}

static void worker_kill(void *context)
{
    fts_worker_process_t *process = context;
    fts_child_kill(&process->child, SIGKILL);
}

static const fts_worker_ops_t worker_ops = {
    .spawn = worker_spawn,
    .running = worker_running,
    .send = worker_send,
    .reap = worker_reap,
    .close = worker_close,
    .kill = worker_kill,
};

void fts_worker_process_init(fts_worker_process_t *process, const fts_config_t *config)
{
    memset(process, 0, sizeof *process);
    process->config = config;
    fts_socket_channel_init(&process->channel, -1);
}

fts_worker_port_t fts_worker_process_port(fts_worker_process_t *process)
{
    return (fts_worker_port_t){.ops = &worker_ops, .context = process};
}

void fts_worker_process_cleanup(fts_worker_process_t *process)
{
    int status = 0;
    /* Bounded like the core's drain (half the lease TTL): a worker stuck on a Redis that never
     * answers ignores SIGTERM, and must not hold up the end of a stop (issue 13, item 4). */
    worker_close(process);
    uint64_t deadline = fts_clock_monotonic_ms() + (uint64_t)process->config->lease_ttl_ms / 2;
    while (process->child.pid > 0 && !worker_reap(process, false, &status)) {
        if (fts_clock_monotonic_ms() >= deadline) {
            fts_log(FTS_LOG_WARN, "extract",
                    "the transform worker did not end within half the lease TTL; killing it");
            worker_kill(process);
            worker_reap(process, true, &status);
            break;
        }
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    fts_socket_channel_cleanup(&process->channel);
}
