/*
 * cmd_reset_token.c - `ftsync reset-token`: shows the saved change-stream position, or clears
 * it so that the next `ftsync extract` snapshots the collection again.
 *
 * Clearing while an extractor is active would race with its next checkpoint (which would
 * write a position right back), so --clear refuses while the extractor lease is held, naming
 * the holder, unless --force. Invariant 6: a saved position that does not parse is shown as an
 * error naming the key and field; --clear still removes it (that is how an operator gets out).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "redis_conn.h"
#include "redis_queue.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: ftsync reset-token [--show | --clear [--force]]\n\n"
                 "  --show   print the saved position (default): token, kind, cluster time, "
                 "snapshot progress\n"
                 "  --clear  delete the token and snapshot state: the next `ftsync extract` "
                 "snapshots the\n"
                 "           collection again. Refused while an extractor holds the lease\n"
                 "  --force  clear even while the lease is held\n");
}

static void show(const fts_redis_keys_t *keys, const fts_position_t *position)
{
    if (!position->has_token && !position->has_snapshot) {
        printf("position: none (the next extract starts with a snapshot)\n");
        return;
    }
    if (position->has_token) {
        printf("position: token (%s)\n", keys->token);
        printf("token: %s\n", position->token);
        printf("kind: %s\n", fts_token_kind_name(position->token_kind));
        printf("cluster_time: %" PRIu32 ".%" PRIu32 "\n", position->cluster_time.seconds,
               position->cluster_time.increment);
        printf("updated_at_ms: %" PRIu64 "\n", position->token_updated_at_ms);
    }
    if (position->has_snapshot) {
        printf("position: snapshot in progress (%s)\n", keys->snapshot);
        printf("started_at: %" PRIu32 ".%" PRIu32 "\n", position->started.seconds,
               position->started.increment);
        printf("last_id: %s\n", position->last_id ? position->last_id : "(none yet)");
        printf("queued: %" PRIu64 "\n", position->queued);
        printf("updated_at_ms: %" PRIu64 "\n", position->snapshot_updated_at_ms);
    }
}

int fts_cmd_reset_token(int argc, char **argv)
{
    bool clear = false;
    bool force = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--show") == 0) {
            clear = false;
        } else if (strcmp(argv[i], "--clear") == 0) {
            clear = true;
        } else if (strcmp(argv[i], "--force") == 0) {
            force = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return FTS_EXIT_OK;
        } else {
            fprintf(stderr, "ftsync reset-token: unknown option %s\n", argv[i]);
            usage(stderr);
            return FTS_EXIT_USAGE;
        }
    }
    if (force && !clear) {
        fprintf(stderr, "ftsync reset-token: --force only goes with --clear\n");
        return FTS_EXIT_USAGE;
    }
    fts_config_t config;
    memset(&config, 0, sizeof config);
    /* Only the Redis settings are used; no role's required settings are demanded. */
    if (!fts_cmd_load_config(&config, 0)) {
        fts_config_cleanup(&config);
        return FTS_EXIT_USAGE;
    }
    int status = FTS_EXIT_FAILURE;
    fts_error_t err;
    fts_redis_queue_t *queue = NULL;
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.connect_timeout_ms = (long)config.redis_connect_timeout_ms;
    options.command_timeout_ms = (long)config.redis_command_timeout_ms;
    fts_redis_t *state = fts_redis_new(config.state_redis_url, &options, &err);
    if (!state) {
        fprintf(stderr, "ftsync reset-token: %s\n", err.message);
        goto cleanup;
    }
    queue = fts_redis_queue_new(state, NULL, config.pipeline, &err);
    if (!queue) {
        fprintf(stderr, "ftsync reset-token: %s\n", err.message);
        status = FTS_EXIT_USAGE;
        goto cleanup;
    }
    const fts_redis_keys_t *keys = fts_redis_queue_keys(queue);
    if (!clear) {
        fts_position_t position;
        memset(&position, 0, sizeof position);
        if (!fts_redis_queue_read_position(queue, &position, &err)) {
            fprintf(stderr, "ftsync reset-token: %s\n", err.message);
            goto cleanup;
        }
        printf("pipeline: %s\n", config.pipeline);
        show(keys, &position);
        fts_position_cleanup(&position);
        status = FTS_EXIT_OK;
        goto cleanup;
    }
    if (!force) {
        /* Who holds the lease: GET and PTTL, without taking it. */
        redisReply *holder = fts_redis_command(state, &err, "GET %s", keys->lease);
        if (!holder) {
            fprintf(stderr, "ftsync reset-token: %s\n", err.message);
            goto cleanup;
        }
        if (holder->type == REDIS_REPLY_STRING) {
            fprintf(stderr,
                    "ftsync reset-token: refusing to clear: an extractor is active (lease %s "
                    "held by \"%s\"); stop it first, or use --force\n",
                    keys->lease, holder->str);
            freeReplyObject(holder);
            status = FTS_EXIT_FAILURE;
            goto cleanup;
        }
        freeReplyObject(holder);
    }
    if (!fts_redis_queue_clear_position(queue, &err)) {
        fprintf(stderr, "ftsync reset-token: %s\n", err.message);
        goto cleanup;
    }
    printf("pipeline: %s\ncleared %s and %s: the next extract snapshots the collection again\n",
           config.pipeline, keys->token, keys->snapshot);
    status = FTS_EXIT_OK;

cleanup:
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(state);
    fts_config_cleanup(&config);
    return status;
}
