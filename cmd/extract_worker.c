/*
 * extract_worker.c - the forked transform worker of `ftsync extract`, wired: it sets up the
 * transform, connects to Redis, and runs the core's worker loop (core/extract_worker.c) with
 * the Redis queue as its queue port and the socket from the parent as its channel port.
 *
 * Invariants are the loop's (1, 3, 5: see core/extract_worker.h); this keeps the order of
 * set-up, so that a transform that cannot be set up ends with FTS_WORKER_EXIT_CONFIG before
 * any server is contacted.
 */
#include <string.h>

#include "channel.h"
#include "extract_ports.h"
#include "cmd.h"
#include "extract_proto.h"
#include "log.h"
#include "redis_conn.h"
#include "redis_queue.h"

#define COMPONENT "worker"

int fts_extract_worker_main(const fts_config_t *config, int fd)
{
    int status = FTS_WORKER_EXIT_RETRY;
    fts_error_t err;
    fts_redis_t *state = NULL;
    fts_redis_t *queue_conn = NULL;
    fts_redis_queue_t *queue = NULL;
    fts_socket_channel_t channel;
    fts_channel_port_t channel_port;
    fts_socket_channel_init(&channel, fd, &channel_port);

    fts_extract_options_t options;
    fts_cmd_extract_options(config, &options);
    fts_transform_t *transform = fts_transform_new(&options.transform, &err);
    if (!transform) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot set up the transform: %s", err.message);
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
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot connect to Redis: %s", err.message);
        goto cleanup;
    }
    queue = fts_redis_queue_new(state, queue_conn, config->pipeline, &err);
    if (!queue) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "%s", err.message);
        goto cleanup;
    }
    /* Non-blocking, so that a read finds "nothing more now" (AGAIN) and the batch is flushed
     * instead of waiting for frames that may not come for a while. */
    if (!fts_socket_channel_set_nonblocking(&channel, &err)) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "cannot make the socket non-blocking");
        goto cleanup;
    }
    fts_queue_port_t queue_port;
    fts_extract_queue_port_init(&queue_port, queue);
    status = fts_extract_worker_loop(transform, options.batch_size, &queue_port, &channel_port);

cleanup:
    fts_socket_channel_cleanup(&channel);
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(queue_conn);
    fts_redis_destroy(state);
    fts_transform_destroy(transform);
    return status;
}
