/*
 * cmd_dlq.c - `ftsync dlq`: the dead-letter stream ftsync:{P}:dead as an operator works with
 * it: list, show one, replay (put the original action back into the action stream), purge.
 *
 * Replay rebuilds the action from what the dead letter kept:
 *   - stage load (fields of the stream entry, then entry_id, deliveries, reason...): the
 *     original entry's fields, decoded and validated as a loader would (core/action.h);
 *   - stage extract with owner_id (an index id another document holds, README.md, Extract:
 *     index ids): never replayed, since that would overwrite or delete the other's index
 *     document; it stays, with the reason printed;
 *   - stage transform (field event): the transform runs again on the saved change event, with
 *     these settings (so a fixed plugin or field list applies); a saved snapshot document
 *     (no operationType) is looked up again in MongoDB by _id, because a snapshot read has no
 *     time of its own: the current document is indexed at the current cluster time, or
 *     deleted at that time when it is gone.
 * Each action is queued and its dead letter removed by one Lua script (redis_admin.h), so a
 * dead letter leaves only once its action is in the stream (invariants 2 and 5), and two
 * replays running at once queue it once. Replaying twice is harmless anyway: actions carry
 * their external versions (invariant 3). A dead letter whose action cannot be rebuilt (the
 * transform still refuses it) stays where it is, and the reason is printed.
 *
 * Exit status: 0 done; 1 a server did not answer, or some dead letters could not be replayed;
 * 2 bad usage, a dead-letter ID that does not exist or is malformed, purge without --yes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "action.h"
#include "clock.h"
#include "mongo_admin.h"
#include "ops.h"
#include "redis_admin.h"
#include "redis_queue.h"

#define PAGE    100
#define MAX_IDS 256

typedef struct {
    fts_config_t config;
    fts_redis_keys_t keys;
    fts_redis_t *redis; /* the queue server */
    fts_transform_t *transform;
    fts_mongo_source_t *source; /* for the cluster time of snapshot-document replays */
    fts_mongo_admin_t *mongo;
    char ns[512];
} dlq_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: ftsync dlq list [--limit N]\n"
                 "       ftsync dlq show ID\n"
                 "       ftsync dlq replay [--id ID]... [--since TIME]\n"
                 "       ftsync dlq purge --yes [--id ID]...\n\n"
                 "  list     the oldest N dead letters (default 20): ID, time, stage, op, document "
                 "id, reason\n"
                 "  show     one dead letter whole: the original event or action, deliveries, "
                 "consumer, reason\n"
                 "  replay   put the original actions back into the stream (all, the given IDs, or "
                 "those\n"
                 "           dead-lettered at or after TIME: RFC 3339 or unix seconds); each "
                 "leaves the\n"
                 "           dead-letter stream once its action is queued. Harmless twice "
                 "(versions)\n"
                 "  purge    delete dead letters (all, or the given IDs); needs --yes\n");
}

/* "<ms>-<seq>" or "<ms>": what XRANGE accepts as an ID. */
static bool valid_stream_id(const char *id)
{
    size_t digits = strspn(id, "0123456789");
    if (digits == 0 || digits > 20) {
        return false;
    }
    if (id[digits] == '\0') {
        return true;
    }
    const char *seq = id + digits + 1;
    size_t seq_digits = strspn(seq, "0123456789");
    return id[digits] == '-' && seq_digits > 0 && seq_digits <= 20 && seq[seq_digits] == '\0';
}

static void format_ms(uint64_t ms, char *out, size_t size)
{
    time_t seconds = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03uZ", date, (unsigned)(ms % 1000));
}

/* What a transform-stage dead letter's event is about: operationType (or "snapshot") and the
 * document key as JSON. */
static void describe_event(const char *json, char *op, size_t op_size, char *id, size_t id_size)
{
    snprintf(op, op_size, "?");
    snprintf(id, id_size, "?");
    bson_error_t error;
    bson_t *event = json ? bson_new_from_json((const uint8_t *)json, -1, &error) : NULL;
    if (!event) {
        return;
    }
    bson_iter_t iter;
    bool change = bson_iter_init_find(&iter, event, "operationType") && BSON_ITER_HOLDS_UTF8(&iter);
    snprintf(op, op_size, "%s", change ? bson_iter_utf8(&iter, NULL) : "snapshot");
    if ((change && bson_iter_init(&iter, event) &&
         bson_iter_find_descendant(&iter, "documentKey._id", &iter)) ||
        (!change && bson_iter_init_find(&iter, event, "_id"))) {
        bson_t wrap = BSON_INITIALIZER;
        bson_append_value(&wrap, "v", 1, bson_iter_value(&iter));
        char *text = bson_as_relaxed_extended_json(&wrap, NULL);
        /* {"v" : X } -> X */
        if (text && strlen(text) > 9) {
            snprintf(id, id_size, "%.*s", (int)(strlen(text) - 9), text + 7);
        }
        bson_free(text);
        bson_destroy(&wrap);
    }
    bson_destroy(event);
}

static int run_list(dlq_t *dlq, size_t limit)
{
    fts_redis_entries_t entries = {0};
    fts_error_t err;
    uint64_t total = 0;
    if (!fts_redis_stream_length(dlq->redis, dlq->keys.dead, &total, &err) ||
        !fts_redis_stream_range(dlq->redis, dlq->keys.dead, "-", "+", limit, false, &entries,
                                &err)) {
        fprintf(stderr, "ftsync dlq: %s\n", err.message);
        return FTS_EXIT_FAILURE;
    }
    printf("%s: %" PRIu64 " dead letter(s)%s\n", dlq->keys.dead, total,
           total > entries.count ? " (oldest shown; --limit shows more)" : "");
    if (entries.count > 0) {
        printf("%-20s  %-24s  %-9s  %-8s  %-24s  %s\n", "ID", "TIME", "STAGE", "OP", "DOCUMENT",
               "REASON");
    }
    for (size_t i = 0; i < entries.count; i++) {
        const fts_redis_entry_t *entry = &entries.items[i];
        const char *failed = fts_redis_entry_field(entry, "failed_at");
        uint64_t ms = failed ? strtoull(failed, NULL, 10) : fts_redis_stream_id_ms(entry->id);
        char when[40];
        format_ms(ms, when, sizeof when);
        const char *stage = fts_redis_entry_field(entry, "stage");
        const char *reason = fts_redis_entry_field(entry, "reason");
        char op[64];
        char id[128];
        if (fts_redis_entry_field(entry, "event")) {
            describe_event(fts_redis_entry_field(entry, "event"), op, sizeof op, id, sizeof id);
        } else {
            const char *o = fts_redis_entry_field(entry, "op");
            const char *d = fts_redis_entry_field(entry, "id");
            snprintf(op, sizeof op, "%s", o ? o : "?");
            snprintf(id, sizeof id, "%s", d ? d : "-");
        }
        printf("%-20s  %-24s  %-9s  %-8s  %-24s  %.160s\n", entry->id, when, stage ? stage : "?",
               op, id, reason ? reason : "");
    }
    fts_redis_entries_cleanup(&entries);
    return FTS_EXIT_OK;
}

/* Reads the dead letter id into entries (exactly one), or says why not. */
static int read_one(dlq_t *dlq, const char *id, fts_redis_entries_t *entries)
{
    fts_error_t err;
    if (!valid_stream_id(id)) {
        fprintf(stderr,
                "ftsync dlq: \"%s\" is not a dead-letter ID (<ms>-<seq>, as `ftsync dlq "
                "list` shows them)\n",
                id);
        return FTS_EXIT_USAGE;
    }
    if (!fts_redis_stream_range(dlq->redis, dlq->keys.dead, id, id, 1, false, entries, &err)) {
        fprintf(stderr, "ftsync dlq: %s\n", err.message);
        return FTS_EXIT_FAILURE;
    }
    if (entries->count == 0) {
        fprintf(stderr, "ftsync dlq: no dead letter %s in %s (nothing was changed)\n", id,
                dlq->keys.dead);
        return FTS_EXIT_USAGE;
    }
    return FTS_EXIT_OK;
}

static int run_show(dlq_t *dlq, const char *id)
{
    fts_redis_entries_t entries = {0};
    int status = read_one(dlq, id, &entries);
    if (status != FTS_EXIT_OK) {
        fts_redis_entries_cleanup(&entries);
        return status;
    }
    const fts_redis_entry_t *entry = &entries.items[0];
    printf("id: %s\n", entry->id);
    const char *failed = fts_redis_entry_field(entry, "failed_at");
    if (failed) {
        char when[40];
        format_ms(strtoull(failed, NULL, 10), when, sizeof when);
        printf("time: %s\n", when);
    }
    bool load = fts_redis_entry_field(entry, "entry_id") != NULL;
    printf("%s\n", load ? "original action (the stream entry's fields):"
                        : "original event (the transform's input):");
    bool after = false;
    for (size_t i = 0; i + 1 < entry->count; i += 2) {
        const char *field = entry->items[i];
        if (load && strcmp(field, "entry_id") == 0) {
            printf("delivery history:\n");
            after = true;
        } else if (!load && !after && strcmp(field, "event") != 0) {
            printf("dead-lettered:\n");
            after = true;
        }
        printf("  %s: %.*s\n", field, (int)entry->lens[i + 1], entry->items[i + 1]);
    }
    fts_redis_entries_cleanup(&entries);
    return FTS_EXIT_OK;
}

/* For a snapshot document: the current document of the same _id, indexed (or deleted) at the
 * cluster time now. */
typedef struct {
    bson_t *doc;
} found_t;

static bool keep_first(const bson_t *doc, void *context)
{
    found_t *found = context;
    found->doc = bson_copy(doc);
    return false;
}

static bool rebuild_snapshot(dlq_t *dlq, const bson_t *saved, fts_action_t *action, bool *produced,
                             fts_error_t *err)
{
    if (!dlq->config.mongo_uri || !dlq->config.mongo_db || !dlq->config.mongo_collection) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                             "replaying a snapshot document needs the MongoDB settings "
                             "(FTSYNC_MONGO_URI, FTSYNC_MONGO_DB, FTSYNC_MONGO_COLLECTION)");
    }
    if (!dlq->source) {
        dlq->source = fts_ops_mongo_source_new(&dlq->config, err);
        if (!dlq->source) {
            return false;
        }
        dlq->mongo = fts_mongo_admin_new(dlq->config.mongo_uri, dlq->config.mongo_db,
                                         dlq->config.mongo_collection, err);
        if (!dlq->mongo) {
            return false;
        }
    }
    fts_timestamp_t now;
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, saved, "_id")) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                             "the saved snapshot document has no _id");
    }
    bson_t values = BSON_INITIALIZER;
    bson_append_value(&values, "0", 1, bson_iter_value(&iter));
    found_t found = {NULL};
    bool ok = fts_mongo_source_cluster_time(dlq->source, &now, err) &&
              fts_mongo_admin_find_in(dlq->mongo, "_id", &values, keep_first, &found, err);
    bson_destroy(&values);
    if (!ok) {
        return false;
    }
    /* The id comes from the saved document either way (the id field may be gone now). */
    ok = fts_transform_snapshot(dlq->transform, found.doc ? found.doc : saved, dlq->ns, now.seconds,
                                now.increment, action, produced, err);
    if (ok && *produced && !found.doc) {
        bson_free(action->body);
        action->body = NULL;
        action->body_len = 0;
        action->op = FTS_ACTION_DELETE;
    }
    if (found.doc) {
        bson_destroy(found.doc);
    }
    return ok;
}

/* Rebuilds the action of one dead letter. *produced false: it makes no action. */
static bool rebuild(dlq_t *dlq, const fts_redis_entry_t *entry, fts_action_t *action,
                    bool *produced, fts_error_t *err)
{
    *produced = false;
    const char *owner = fts_redis_entry_field(entry, "owner_id");
    if (owner) {
        /* Queued again it would overwrite, or delete, the index document of the _id holding
         * its index id: what the owners check refused (README.md, Extract: index ids). */
        const char *source = fts_redis_entry_field(entry, "source_id");
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "its index id is held by _id %.200s, not by its own _id %.200s: "
                             "replaying it would overwrite or delete the other document's index "
                             "document; fix the collision (FTSYNC_ID_FORMAT=typed and a reindex, "
                             "or a unique id field), then purge it",
                             owner, source ? source : "?");
    }
    const char *event_json = fts_redis_entry_field(entry, "event");
    if (event_json) {
        bson_error_t error;
        bson_t *event = bson_new_from_json((const uint8_t *)event_json, -1, &error);
        if (!event) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                                 "its event is not JSON: %s", error.message);
        }
        bson_iter_t iter;
        bool ok;
        if (bson_iter_init_find(&iter, event, "operationType")) {
            ok = fts_transform_event(dlq->transform, event, action, produced, err);
        } else {
            ok = rebuild_snapshot(dlq, event, action, produced, err);
        }
        bson_destroy(event);
        return ok;
    }
    /* Stage load: the fields before entry_id are the original entry. */
    size_t count = 0;
    while (count + 1 < entry->count && strcmp(entry->items[count], "entry_id") != 0) {
        count += 2;
    }
    fts_bytes_t *items = bson_malloc0((count + 1) * sizeof *items);
    for (size_t i = 0; i < count; i++) {
        items[i].data = entry->items[i];
        items[i].len = entry->lens[i];
    }
    bool ok = fts_action_decode(items, count, action, err);
    bson_free(items);
    *produced = ok;
    return ok;
}

typedef struct {
    uint64_t replayed, gone, failed, skipped;
} replay_counts_t;

static bool replay_entry(dlq_t *dlq, const fts_redis_entry_t *entry, replay_counts_t *counts,
                         fts_error_t *err)
{
    fts_action_t action;
    fts_action_init(&action);
    bool produced = false;
    fts_error_t why;
    if (!rebuild(dlq, entry, &action, &produced, &why)) {
        if (why.domain != FTS_ERROR_INPUT) {
            *err = why;
            fts_action_cleanup(&action);
            return false;
        }
        printf("%s: not replayed, left in place: %s\n", entry->id, why.message);
        counts->failed++;
        fts_action_cleanup(&action);
        return true;
    }
    if (!produced) {
        printf("%s: makes no action (nothing to index or delete), left in place\n", entry->id);
        counts->skipped++;
        return true;
    }
    fts_action_argv_t argv;
    fts_redis_requeue_t outcome;
    char new_id[FTS_REDIS_STREAM_ID_SIZE];
    bool ok = fts_action_encode(&action, dlq->keys.stream, &argv, err);
    if (!ok) {
        printf("%s: not replayed, left in place: %s\n", entry->id, err->message);
        counts->failed++;
        fts_action_cleanup(&action);
        return true;
    }
    ok = fts_redis_dead_requeue(dlq->redis, dlq->keys.dead, entry->id, &argv, dlq->keys.stream,
                                &outcome, new_id, err);
    if (ok && outcome == FTS_REDIS_REQUEUED) {
        printf("%s: queued as %s (%s %.*s version %" PRIu64 ")\n", entry->id, new_id,
               fts_action_op_name(action.op), (int)action.id_len, action.id ? action.id : "",
               action.version);
        counts->replayed++;
    } else if (ok) {
        printf("%s: already gone (replayed or purged meanwhile)\n", entry->id);
        counts->gone++;
    }
    fts_action_cleanup(&action);
    return ok;
}

static int run_replay(dlq_t *dlq, const char **ids, size_t id_count, const char *since)
{
    fts_error_t err;
    replay_counts_t counts = {0};
    dlq->transform = fts_ops_transform_new(&dlq->config, &err);
    if (!dlq->transform) {
        fprintf(stderr, "ftsync dlq: %s\n", err.message);
        return FTS_EXIT_USAGE;
    }
    if (id_count > 0) {
        for (size_t i = 0; i < id_count; i++) {
            fts_redis_entries_t entries = {0};
            int status = read_one(dlq, ids[i], &entries);
            if (status != FTS_EXIT_OK) {
                fts_redis_entries_cleanup(&entries);
                return status;
            }
            bool ok = replay_entry(dlq, &entries.items[0], &counts, &err);
            fts_redis_entries_cleanup(&entries);
            if (!ok) {
                fprintf(stderr, "ftsync dlq: %s\n", err.message);
                return FTS_EXIT_FAILURE;
            }
        }
    } else {
        char start[FTS_REDIS_STREAM_ID_SIZE + 1];
        snprintf(start, sizeof start, "%s", since ? since : "-");
        for (;;) {
            fts_redis_entries_t entries = {0};
            if (!fts_redis_stream_range(dlq->redis, dlq->keys.dead, start, "+", PAGE, false,
                                        &entries, &err)) {
                fprintf(stderr, "ftsync dlq: %s\n", err.message);
                return FTS_EXIT_FAILURE;
            }
            size_t n = entries.count;
            for (size_t i = 0; i < n; i++) {
                if (!replay_entry(dlq, &entries.items[i], &counts, &err)) {
                    fprintf(stderr, "ftsync dlq: %s\n", err.message);
                    fts_redis_entries_cleanup(&entries);
                    return FTS_EXIT_FAILURE;
                }
            }
            if (n > 0) {
                snprintf(start, sizeof start, "(%s", entries.items[n - 1].id);
            }
            fts_redis_entries_cleanup(&entries);
            if (n < PAGE) {
                break;
            }
        }
    }
    printf("replayed %" PRIu64 ", already gone %" PRIu64 ", not replayable %" PRIu64
           ", no action %" PRIu64 "\n",
           counts.replayed, counts.gone, counts.failed, counts.skipped);
    return counts.failed > 0 ? FTS_EXIT_FAILURE : FTS_EXIT_OK;
}

static int run_purge(dlq_t *dlq, const char **ids, size_t id_count)
{
    fts_error_t err;
    if (id_count == 0) {
        uint64_t removed = 0;
        if (!fts_redis_stream_drop(dlq->redis, dlq->keys.dead, &removed, &err)) {
            fprintf(stderr, "ftsync dlq: %s\n", err.message);
            return FTS_EXIT_FAILURE;
        }
        printf("purged %" PRIu64 " dead letter(s) (%s deleted)\n", removed, dlq->keys.dead);
        return FTS_EXIT_OK;
    }
    for (size_t i = 0; i < id_count; i++) {
        fts_redis_entries_t entries = {0};
        int status = read_one(dlq, ids[i], &entries);
        fts_redis_entries_cleanup(&entries);
        if (status != FTS_EXIT_OK) {
            return status;
        }
    }
    for (size_t i = 0; i < id_count; i++) {
        bool removed = false;
        if (!fts_redis_stream_delete(dlq->redis, dlq->keys.dead, ids[i], &removed, &err)) {
            fprintf(stderr, "ftsync dlq: %s\n", err.message);
            return FTS_EXIT_FAILURE;
        }
        printf("%s: %s\n", ids[i], removed ? "purged" : "already gone");
    }
    return FTS_EXIT_OK;
}

int fts_cmd_dlq(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? FTS_EXIT_USAGE : FTS_EXIT_OK;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "list") != 0 && strcmp(verb, "show") != 0 && strcmp(verb, "replay") != 0 &&
        strcmp(verb, "purge") != 0) {
        fprintf(stderr, "ftsync dlq: unknown subcommand \"%s\"\n", verb);
        usage(stderr);
        return FTS_EXIT_USAGE;
    }
    size_t limit = 20;
    const char *ids[MAX_IDS];
    size_t id_count = 0;
    const char *show_id = NULL;
    bool yes = false;
    char since[48] = "";
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return FTS_EXIT_OK;
        } else if (strcmp(verb, "list") == 0 && strcmp(arg, "--limit") == 0 && has_value) {
            char *end = NULL;
            long long n = strtoll(argv[++i], &end, 10);
            if (*end || n <= 0 || n > 100000) {
                fprintf(stderr, "ftsync dlq: --limit must be a number from 1 to 100000\n");
                return FTS_EXIT_USAGE;
            }
            limit = (size_t)n;
        } else if ((strcmp(verb, "replay") == 0 || strcmp(verb, "purge") == 0) &&
                   strcmp(arg, "--id") == 0 && has_value) {
            if (id_count == MAX_IDS) {
                fprintf(stderr, "ftsync dlq: at most %d --id at once\n", MAX_IDS);
                return FTS_EXIT_USAGE;
            }
            ids[id_count++] = argv[++i];
        } else if (strcmp(verb, "replay") == 0 && strcmp(arg, "--since") == 0 && has_value) {
            int64_t seconds = 0;
            if (!fts_ops_parse_time(argv[++i], &seconds) || seconds < 0) {
                fprintf(stderr,
                        "ftsync dlq: --since \"%s\" is neither an RFC 3339 time nor "
                        "unix seconds\n",
                        argv[i]);
                return FTS_EXIT_USAGE;
            }
            snprintf(since, sizeof since, "%" PRId64 "-0", seconds * 1000);
        } else if (strcmp(verb, "purge") == 0 && strcmp(arg, "--yes") == 0) {
            yes = true;
        } else if (strcmp(verb, "show") == 0 && arg[0] != '-' && !show_id) {
            show_id = arg;
        } else {
            fprintf(stderr, "ftsync dlq %s: unknown option or argument %s\n", verb, arg);
            usage(stderr);
            return FTS_EXIT_USAGE;
        }
    }
    if (strcmp(verb, "show") == 0 && !show_id) {
        fprintf(stderr, "ftsync dlq show: which dead letter? (an ID from `ftsync dlq list`)\n");
        return FTS_EXIT_USAGE;
    }
    if (strcmp(verb, "purge") == 0 && !yes) {
        fprintf(stderr, "ftsync dlq purge: deletes dead letters for good; add --yes to do it "
                        "(nothing was changed)\n");
        return FTS_EXIT_USAGE;
    }
    if (id_count > 0 && since[0]) {
        fprintf(stderr, "ftsync dlq replay: --id and --since do not go together\n");
        return FTS_EXIT_USAGE;
    }
    if (show_id) {
        ids[id_count++] = show_id; /* checked with the others below, before any connection */
    }
    for (size_t i = 0; i < id_count; i++) {
        if (!valid_stream_id(ids[i])) {
            fprintf(stderr,
                    "ftsync dlq: \"%s\" is not a dead-letter ID (<ms>-<seq>, as `ftsync "
                    "dlq list` shows them; nothing was changed)\n",
                    ids[i]);
            return FTS_EXIT_USAGE;
        }
    }

    dlq_t dlq;
    memset(&dlq, 0, sizeof dlq);
    if (!fts_cmd_load_config(&dlq.config, 0)) {
        fts_config_cleanup(&dlq.config);
        return FTS_EXIT_USAGE;
    }
    int status = FTS_EXIT_FAILURE;
    fts_error_t err;
    fts_ops_namespace(&dlq.config, dlq.ns, sizeof dlq.ns);
    if (!fts_redis_keys_init(&dlq.keys, dlq.config.pipeline, &err)) {
        fprintf(stderr, "ftsync dlq: %s\n", err.message);
        status = FTS_EXIT_USAGE;
        goto cleanup;
    }
    dlq.redis = fts_ops_redis_connect(
        &dlq.config,
        dlq.config.queue_redis_url ? dlq.config.queue_redis_url : dlq.config.state_redis_url, &err);
    if (!dlq.redis) {
        fprintf(stderr, "ftsync dlq: %s\n", err.message);
        goto cleanup;
    }
    if (strcmp(verb, "list") == 0) {
        status = run_list(&dlq, limit);
    } else if (strcmp(verb, "show") == 0) {
        status = run_show(&dlq, show_id);
    } else if (strcmp(verb, "replay") == 0) {
        status = run_replay(&dlq, ids, id_count, since[0] ? since : NULL);
    } else {
        status = run_purge(&dlq, ids, id_count);
    }
cleanup:
    fts_mongo_admin_destroy(dlq.mongo);
    fts_mongo_source_destroy(dlq.source);
    fts_transform_destroy(dlq.transform);
    fts_redis_destroy(dlq.redis);
    fts_config_cleanup(&dlq.config);
    return status;
}
