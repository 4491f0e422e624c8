/*
 * cmd_reset_token.c - `ftsync reset-token`: shows the saved change-stream position, clears it
 * (the next `ftsync extract` snapshots the collection again), or moves it to a cluster time
 * (--to-time) or a resume token (--to-token).
 *
 * Moving or clearing while an extractor is active would race with its next checkpoint (which
 * would write a position right back), so those refuse while the extractor lease is held,
 * naming the holder, unless --force. They change what the pipeline will read, so they need
 * --yes (this runs as a Kubernetes Job: it never asks). A new position is checked before
 * anything is written: the time must not be in the future, the token must parse, and a change
 * stream opened there must return its first batch (so a position no longer in the oplog, or a
 * token the server refuses, is refused here and not found later by extract). Nothing is
 * written unless every check passed; the write replaces token and snapshot hashes in one
 * MULTI/EXEC, so the position is always exactly one of them (redis_queue.h).
 * Invariant 6: a saved position that does not parse is shown as an error naming the key and
 * field; --clear still removes it (that is how an operator gets out).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "cmd.h"
#include "mongo_source.h"
#include "ops.h"
#include "redis_admin.h"
#include "redis_conn.h"
#include "redis_queue.h"

typedef enum { SHOW = 0, CLEAR, TO_TIME, TO_TOKEN } action_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ftsync reset-token [--show]\n"
            "       ftsync reset-token --clear --yes [--force]\n"
            "       ftsync reset-token --to-time <RFC 3339 | unix seconds> --yes [--force]\n"
            "       ftsync reset-token --to-token <resume token, extended JSON> --yes [--force]\n\n"
            "  --show      print the saved position (default): token, kind, cluster time, "
            "snapshot progress\n"
            "  --clear     delete the token and snapshot state: the next `ftsync extract` "
            "snapshots the\n"
            "              collection again\n"
            "  --to-time   the next extract follows the change stream from this cluster time "
            "(no snapshot);\n"
            "              refused if in the future or no longer in the change-stream history\n"
            "  --to-token  the next extract resumes after this token (as `redis-cli HGET "
            "... token` shows\n"
            "              one); refused if MongoDB cannot resume from it\n"
            "  --yes       required by --clear, --to-time and --to-token (they change where "
            "extract reads)\n"
            "  --force     go ahead even while an extractor holds the lease\n");
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

static bool show_position(fts_redis_queue_t *queue, const char *label, fts_error_t *err)
{
    fts_position_t position;
    memset(&position, 0, sizeof position);
    if (!fts_redis_queue_read_position(queue, &position, err)) {
        return false;
    }
    if (label) {
        printf("--- %s\n", label);
    }
    show(fts_redis_queue_keys(queue), &position);
    fts_position_cleanup(&position);
    return true;
}

/* Opens a change stream at position and reads its first batch: the server's verdict on
 * whether extract could start there. */
static bool check_position(const fts_config_t *config, const fts_source_position_t *position,
                           bool check_future, int *status, fts_error_t *err)
{
    *status = FTS_EXIT_FAILURE;
    bool ok = false;
    fts_mongo_source_t *source = fts_ops_mongo_source_new(config, err);
    if (!source) {
        *status = FTS_EXIT_USAGE;
        return false;
    }
    if (check_future) {
        fts_timestamp_t now;
        if (!fts_mongo_source_cluster_time(source, &now, err)) {
            goto cleanup;
        }
        if (position->time.seconds > now.seconds ||
            (position->time.seconds == now.seconds && position->time.increment > now.increment)) {
            fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                          "%" PRIu32 " is in the future: MongoDB's cluster time is %" PRIu32
                          ".%" PRIu32,
                          position->time.seconds, now.seconds, now.increment);
            *status = FTS_EXIT_USAGE;
            goto cleanup;
        }
    }
    fts_source_next_t what;
    const bson_t *event = NULL;
    if (!fts_mongo_source_open(source, position, err) ||
        !fts_mongo_source_next(source, &what, &event, err)) {
        if (err->code == FTS_SOURCE_HISTORY_LOST) {
            fts_error_prefix(err, "MongoDB cannot start a change stream there (it is no longer "
                                  "in the change-stream history, or the token is not one of "
                                  "this collection's)");
            *status = FTS_EXIT_USAGE;
        } else if (fts_mongo_source_server_code(source) != 0) {
            fts_error_prefix(err, "MongoDB refused a change stream at that position");
            *status = FTS_EXIT_USAGE;
        }
        goto cleanup;
    }
    ok = true;
cleanup:
    fts_mongo_source_destroy(source);
    return ok;
}

/* Replaces the saved position with a token hash (no snapshot hash), in one MULTI/EXEC. */
static bool write_token(fts_redis_t *state, const fts_redis_keys_t *keys, const char *token,
                        fts_token_kind_t kind, const fts_timestamp_t *time, fts_error_t *err)
{
    char updated[24];
    snprintf(updated, sizeof updated, "%" PRIu64, fts_clock_wall_ms());
    char cluster_time[48];
    const char *hset[12] = {"HSET",       keys->token, "token",
                            token,        "kind",      fts_token_kind_name(kind),
                            "updated_at", updated};
    int hset_argc = 8;
    if (time) {
        fts_redis_cluster_time_format(time->seconds, time->increment, cluster_time,
                                      sizeof cluster_time);
        hset[hset_argc++] = "cluster_time";
        hset[hset_argc++] = cluster_time;
    }
    const char *multi[] = {"MULTI"};
    const char *del[] = {"DEL", keys->token, keys->snapshot};
    const char *exec[] = {"EXEC"};
    fts_redis_cmd_t commands[] = {
        {1, multi, NULL}, {3, del, NULL}, {hset_argc, hset, NULL}, {1, exec, NULL}};
    redisReply *replies[4] = {0};
    if (!fts_redis_pipeline(state, commands, 4, replies, err)) {
        return false;
    }
    bool ok = fts_redis_reply_check(state, replies[3], "EXEC", err);
    if (ok && replies[3]->type != REDIS_REPLY_ARRAY) {
        ok = fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                           "saving the position: EXEC did not run");
    }
    for (size_t i = 0; ok && i < replies[3]->elements; i++) {
        ok = fts_redis_reply_check(state, replies[3]->element[i], "saving the position", err);
    }
    fts_redis_replies_free(replies, 4);
    return ok;
}

int fts_cmd_reset_token(int argc, char **argv)
{
    action_t action = SHOW;
    bool force = false;
    bool yes = false;
    const char *value = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--show") == 0) {
            action = SHOW;
        } else if (strcmp(argv[i], "--clear") == 0) {
            action = CLEAR;
        } else if (strcmp(argv[i], "--to-time") == 0 || strcmp(argv[i], "--to-token") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ftsync reset-token: %s needs a value\n", argv[i]);
                return FTS_EXIT_USAGE;
            }
            action = strcmp(argv[i], "--to-time") == 0 ? TO_TIME : TO_TOKEN;
            value = argv[++i];
        } else if (strcmp(argv[i], "--force") == 0) {
            force = true;
        } else if (strcmp(argv[i], "--yes") == 0) {
            yes = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return FTS_EXIT_OK;
        } else {
            fprintf(stderr, "ftsync reset-token: unknown option %s\n", argv[i]);
            usage(stderr);
            return FTS_EXIT_USAGE;
        }
    }
    if ((force || yes) && action == SHOW) {
        fprintf(stderr, "ftsync reset-token: --force and --yes go with --clear, --to-time or "
                        "--to-token\n");
        return FTS_EXIT_USAGE;
    }
    if (action != SHOW && !yes) {
        fprintf(stderr,
                "ftsync reset-token: %s changes where extract reads; add --yes to do it "
                "(nothing was changed)\n",
                action == CLEAR     ? "--clear"
                : action == TO_TIME ? "--to-time"
                                    : "--to-token");
        return FTS_EXIT_USAGE;
    }
    /* Check the argument before any connection: a typo fails at once, changing nothing. */
    fts_timestamp_t to_time = {0, 0};
    char *token_json = NULL;
    fts_error_t err;
    if (action == TO_TIME) {
        int64_t seconds = 0;
        if (!fts_ops_parse_time(value, &seconds) || seconds <= 0) {
            fprintf(stderr,
                    "ftsync reset-token: --to-time \"%s\" is neither an RFC 3339 time "
                    "(2026-12-03T10:00:00Z) nor unix seconds after 1970 (nothing was changed)\n",
                    value);
            return FTS_EXIT_USAGE;
        }
        /* A second of slack for this clock against MongoDB's; the server's own cluster time
         * is compared again before anything is written. */
        if (seconds > UINT32_MAX || seconds * 1000 > (int64_t)fts_clock_wall_ms() + 1000) {
            fprintf(stderr,
                    "ftsync reset-token: --to-time %s is in the future (nothing was "
                    "changed)\n",
                    value);
            return FTS_EXIT_USAGE;
        }
        to_time.seconds = (uint32_t)seconds;
        to_time.increment = 0;
    } else if (action == TO_TOKEN) {
        bson_t *token = fts_mongo_token_from_json(value, &err);
        bson_iter_t iter;
        if (token && !(bson_iter_init_find(&iter, token, "_data") && BSON_ITER_HOLDS_UTF8(&iter))) {
            fts_error_set(&err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                          "a resume token is an object with a string field _data");
            bson_destroy(token);
            token = NULL;
        }
        if (!token) {
            fprintf(stderr,
                    "ftsync reset-token: --to-token is not a resume token: %s (nothing was "
                    "changed)\n",
                    err.message);
            return FTS_EXIT_USAGE;
        }
        token_json = bson_as_canonical_extended_json(token, NULL);
        bson_destroy(token);
    }

    fts_config_t config;
    memset(&config, 0, sizeof config);
    /* Showing and clearing use only the Redis settings; a move needs MongoDB's. */
    if (!fts_cmd_load_config(&config,
                             action == TO_TIME || action == TO_TOKEN ? FTS_ROLE_EXTRACT : 0)) {
        fts_config_cleanup(&config);
        bson_free(token_json);
        return FTS_EXIT_USAGE;
    }
    int status = FTS_EXIT_FAILURE;
    fts_redis_queue_t *queue = NULL;
    fts_redis_t *state = fts_ops_redis_connect(&config, config.state_redis_url, &err);
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
    printf("pipeline: %s\n", config.pipeline);
    if (action == SHOW) {
        if (!show_position(queue, NULL, &err)) {
            fprintf(stderr, "ftsync reset-token: %s\n", err.message);
            goto cleanup;
        }
        status = FTS_EXIT_OK;
        goto cleanup;
    }
    if (!show_position(queue, "before", &err)) {
        /* A position that does not parse can still be replaced: say so and go on. */
        printf("(the saved position cannot be read: %s)\n", err.message);
    }
    if (!force) {
        char *holder = NULL;
        int64_t ttl = 0;
        if (!fts_redis_lease_read(state, keys->lease, &holder, &ttl, &err)) {
            fprintf(stderr, "ftsync reset-token: %s\n", err.message);
            goto cleanup;
        }
        if (holder) {
            fprintf(stderr,
                    "ftsync reset-token: refusing to change the position: an extractor is "
                    "active (lease %s held by \"%s\"); stop it first, or use --force (nothing "
                    "was changed)\n",
                    keys->lease, holder);
            bson_free(holder);
            status = FTS_EXIT_FAILURE;
            goto cleanup;
        }
    }
    bool done = false;
    if (action == CLEAR) {
        done = fts_redis_queue_clear_position(queue, &err);
    } else {
        fts_source_position_t position = {0};
        if (action == TO_TIME) {
            position.from = FTS_SOURCE_START_AT_TIME;
            position.time = to_time;
        } else {
            position.from = FTS_SOURCE_RESUME_AFTER;
            position.token = token_json;
        }
        if (!check_position(&config, &position, action == TO_TIME, &status, &err)) {
            fprintf(stderr, "ftsync reset-token: refusing: %s (nothing was changed)\n",
                    err.message);
            goto cleanup;
        }
        if (action == TO_TIME) {
            char shown[96];
            snprintf(shown, sizeof shown, "{\"$timestamp\":{\"t\":%" PRIu32 ",\"i\":%" PRIu32 "}}",
                     to_time.seconds, to_time.increment);
            done = write_token(state, keys, shown, FTS_TOKEN_START_AT, &to_time, &err);
        } else {
            done = write_token(state, keys, token_json, FTS_TOKEN_RESUME, NULL, &err);
        }
    }
    if (!done) {
        fprintf(stderr, "ftsync reset-token: %s\n", err.message);
        status = FTS_EXIT_FAILURE;
        goto cleanup;
    }
    if (action == CLEAR) {
        printf("cleared %s and %s: the next extract snapshots the collection again\n", keys->token,
               keys->snapshot);
    }
    if (!show_position(queue, "after", &err)) {
        fprintf(stderr, "ftsync reset-token: %s\n", err.message);
        goto cleanup;
    }
    status = FTS_EXIT_OK;

cleanup:
    fts_redis_queue_destroy(queue);
    fts_redis_destroy(state);
    fts_config_cleanup(&config);
    bson_free(token_json);
    return status;
}
