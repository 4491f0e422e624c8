/*
 * load.c - the loader's state machine (see load.h for what it promises).
 *
 * Every entry taken from the stream is held in memory, found by its stream ID, from the moment
 * it is read until Redis confirmed its settlement. While held it is in exactly one place:
 *   ready list   waiting to be sent (a retried item waits there until its not_before);
 *   a batch      in a bulk request in flight;
 *   settle list  judged (acknowledge, or dead-letter with its reason), waiting for a settle;
 *   the settle   in the one settle in flight (one XACK, or one script that writes the dead
 *                letters and then acknowledges: load_ports.h).
 *   sweeps       a drop or sweep entry waiting for its turn (one runs at a time, the lowest
 *                stream ID first: maybe_sweep);
 *   the sweep    the drop or sweep being carried out: barrier, refresh, scroll pages and
 *                versioned deletes (see "drop and sweep" below), then judged like any other.
 * Only a confirmed settle frees an entry, which is how invariant 2 is kept: an entry leaves
 * memory acknowledged, or it stays pending in Redis (after a crash, a stop, or a lost reply)
 * and is delivered again. Nothing here blocks; every step is started from run(), which the
 * driver reaches through the fts_loader_*_done functions and the one timer.
 */
#include "load.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

#include "backoff.h"
#include "bulk_result.h"
#include "load_sweep.h"
#include "log.h"
#include "metrics.h"
#include "permanent.h"

#define LOG_COMPONENT "load"

/* Most entries in one settle (one command): bounds the command's size. */
#define SETTLE_MAX_ENTRIES 4096

/* The history cursor that means "from the first pending entry". */
#define HISTORY_START "0"

/* How often a drop or sweep asks its barrier again while entries before it are pending. */
#define BARRIER_POLL_MS 500
/* How often a running drop or sweep logs its progress. */
#define SWEEP_PROGRESS_MS 10000
/* Documents per scroll page when the options say 0. */
#define SWEEP_PAGE_DEFAULT 1000

typedef enum {
    ENTRY_READY = 1, /* in the ready list */
    ENTRY_SENT,      /* in a batch in flight */
    ENTRY_JUDGED,    /* in the settle list */
    ENTRY_SETTLING,  /* in the settle in flight */
    ENTRY_WAITING,   /* a drop or sweep in the sweeps list */
    ENTRY_SWEEPING   /* the drop or sweep being carried out */
} entry_state_t;

typedef struct entry {
    char id[FTS_STREAM_ID_SIZE];
    uint64_t hash;
    struct entry *hash_next;
    struct entry *next; /* ready list or settle list */
    entry_state_t state;
    fts_action_t action; /* decoded; empty when the entry could not be */
    fts_bytes_t *items;  /* a copy of the entry's fields, for its dead letter; NULL when the
                          * entry was deleted from the stream */
    size_t count;
    uint64_t deliveries;
    uint64_t deaths;      /* loaders that died while sending it: Redis's count - 1 (marks) */
    unsigned attempts;    /* item retries so far */
    uint64_t not_before;  /* a retried item waits until then */
    uint64_t ready_since; /* when it (first) became ready: the batch wait runs from here */
    size_t bulk_size;     /* its bytes in a bulk body */
    char *dead_reason;    /* judged: NULL acknowledges, else dead-letters with this reason */
} entry_t;

typedef struct {
    entry_t *head;
    entry_t *tail;
} entry_list_t;

typedef struct {
    bool in_use;
    entry_t **entries;
    fts_action_op_t *ops;
    fts_bulk_item_result_t *results;
    size_t count;
    fts_buffer_t body;
    uint64_t sent_at; /* for ftsync_bulk_duration_seconds */
} batch_t;

typedef struct {
    entry_t **entries;
    size_t count;
    const char **ids;
    fts_stream_entry_t *views;
    fts_load_dead_t *dead;
} settle_t;

typedef enum {
    SWEEP_NONE = 0, /* no drop or sweep running */
    SWEEP_BARRIER,  /* asking whether every entry before it is acknowledged */
    SWEEP_REFRESH,  /* refreshing the index: the scroll then sees everything acknowledged */
    SWEEP_SEARCH,   /* the first page */
    SWEEP_SCROLL,   /* a next page */
    SWEEP_DELETE    /* deleting the stale documents of a page */
} sweep_phase_t;

/* The drop or sweep being carried out. Counters describe the current pass over the index
 * (a restarted scroll starts them again), except deleted and conflicts, which add up. */
typedef struct {
    entry_t *entry; /* ENTRY_SWEEPING; NULL when none runs */
    sweep_phase_t phase;
    bool outstanding; /* the phase's barrier query or request is in flight */
    /* The entry the last barrier query asked about: a sweep put back (maybe_sweep) may leave
     * its query out, and its answer says nothing about the entry running when it comes. */
    char barrier_id[FTS_STREAM_ID_SIZE];
    uint64_t next_at; /* when the phase's query or request goes (again) */
    fts_backoff_t backoff;
    fts_sweep_request_t request; /* the phase's request, sent again on a retry */
    fts_sweep_page_t page;
    char *scroll_id;
    size_t *targets; /* indexes into page.hits of the documents to delete */
    size_t target_count;
    fts_action_op_t *ops;
    fts_bulk_item_result_t *results;
    uint64_t scanned;
    uint64_t newer;     /* at or above the entry's version: kept */
    uint64_t other_ns;  /* another collection's documents: kept */
    uint64_t unmarked;  /* below the version but without the ns field: kept, reported */
    uint64_t deleted;   /* deleted (200) */
    uint64_t gone;      /* already gone (404) */
    uint64_t conflicts; /* written again meanwhile (409): kept */
    uint64_t failed;    /* Elasticsearch refused to delete them */
    char *first_failure;
    unsigned restarts;
    uint64_t started_at;
    uint64_t next_progress_at;
} sweep_t;

struct fts_loader {
    fts_load_options_t options;
    fts_load_ports_t ports;
    fts_load_stats_t stats;

    /* held entries by stream ID */
    entry_t **buckets;
    size_t bucket_mask;
    size_t held;
    size_t max_held;

    entry_list_t ready;
    entry_list_t judged;

    batch_t *batches;
    size_t in_flight;
    size_t batch_cap; /* actions per request now: halved by SPLIT, regrown by successes */

    settle_t settle;
    bool settle_outstanding;
    uint64_t settle_retry_at;
    fts_backoff_t settle_backoff;

    bool group_ready;
    bool group_outstanding;
    uint64_t group_retry_at;
    fts_backoff_t group_backoff;

    bool read_outstanding;
    bool reading_history;
    char history_cursor[FTS_STREAM_ID_SIZE];
    uint64_t read_retry_at;
    fts_backoff_t read_backoff;

    bool claim_outstanding;
    bool touch_outstanding;
    /* Delivery counts to write (port mark), gathered during one turn of run(): */
    char (*mark_ids)[FTS_STREAM_ID_SIZE];
    uint64_t *mark_counts;
    size_t mark_count;
    size_t mark_room;
    unsigned marks_outstanding;
    char claim_cursor[FTS_STREAM_ID_SIZE];
    uint64_t next_claim_at;

    uint64_t es_retry_at;
    fts_backoff_t es_backoff;
    uint64_t rng;

    uint64_t next_progress_at;
    uint64_t progress_acked;

    entry_list_t sweeps; /* drop and sweep entries waiting for their turn */
    sweep_t sweep;
    char clear_token; /* its address tells a scroll clearing's completion apart */

    bool started;
    bool stopping;
    bool finished;
    uint64_t stop_deadline;
};

static void run(fts_loader_t *loader);

/* The next backoff delay, at least 1 ms: a retry then always goes through the timer, never
 * from inside the completion that failed (full jitter can draw 0). */
static uint64_t retry_delay_ms(fts_backoff_t *backoff)
{
    uint64_t delay = fts_backoff_next_ms(backoff);
    return delay ? delay : 1;
}

static uint64_t now_ms(fts_loader_t *loader)
{
    return loader->ports.ops->now_ms(loader->ports.context);
}

static uint64_t id_hash(const char *id)
{
    /* FNV-1a: stream IDs are short and spread well enough for a chained table. */
    uint64_t hash = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        hash = (hash ^ *p) * 1099511628211ULL;
    }
    return hash;
}

static entry_t *held_find(fts_loader_t *loader, const char *id, uint64_t hash)
{
    for (entry_t *e = loader->buckets[hash & loader->bucket_mask]; e; e = e->hash_next) {
        if (e->hash == hash && strcmp(e->id, id) == 0) {
            return e;
        }
    }
    return NULL;
}

static void held_insert(fts_loader_t *loader, entry_t *entry)
{
    entry_t **bucket = &loader->buckets[entry->hash & loader->bucket_mask];
    entry->hash_next = *bucket;
    *bucket = entry;
    loader->held++;
}

static void held_remove(fts_loader_t *loader, entry_t *entry)
{
    for (entry_t **p = &loader->buckets[entry->hash & loader->bucket_mask]; *p;
         p = &(*p)->hash_next) {
        if (*p == entry) {
            *p = entry->hash_next;
            loader->held--;
            return;
        }
    }
}

static void entry_free(entry_t *entry)
{
    if (entry) {
        fts_action_cleanup(&entry->action);
        bson_free(entry->items);
        bson_free(entry->dead_reason);
        bson_free(entry);
    }
}

static void list_push_back(entry_list_t *list, entry_t *entry)
{
    entry->next = NULL;
    if (list->tail) {
        list->tail->next = entry;
    } else {
        list->head = entry;
    }
    list->tail = entry;
}

static void list_push_front(entry_list_t *list, entry_t *entry)
{
    entry->next = list->head;
    list->head = entry;
    if (!list->tail) {
        list->tail = entry;
    }
}

static entry_t *list_pop_front(entry_list_t *list)
{
    entry_t *entry = list->head;
    if (entry) {
        list->head = entry->next;
        if (!list->head) {
            list->tail = NULL;
        }
        entry->next = NULL;
    }
    return entry;
}

/* Copies an entry's fields into one allocation: the array of (pointer, length) pairs, then
 * the bytes, each NUL-terminated for logging. Never NULL: allocation failure aborts. */
static fts_bytes_t *copy_items(const fts_bytes_t *items, size_t count)
{
    size_t total = count * sizeof(fts_bytes_t);
    for (size_t i = 0; i < count; i++) {
        total += items[i].len + 1;
    }
    fts_bytes_t *copy = bson_malloc(total ? total : 1);
    char *bytes = (char *)(copy + count);
    for (size_t i = 0; i < count; i++) {
        if (items[i].len) {
            memcpy(bytes, items[i].data, items[i].len);
        }
        bytes[items[i].len] = '\0';
        copy[i].data = bytes;
        copy[i].len = items[i].len;
        bytes += items[i].len + 1;
    }
    return copy;
}

static char *format_reason(const char *format, ...) __attribute__((format(printf, 1, 2)));
static char *format_reason(const char *format, ...)
{
    fts_buffer_t text;
    fts_buffer_init(&text);
    va_list args;
    va_start(args, format);
    fts_buffer_vappendf(&text, format, args);
    va_end(args);
    return fts_buffer_steal(&text);
}

/* Judged: to be acknowledged (reason NULL) or dead-lettered with reason (taken). */
static void judge(fts_loader_t *loader, entry_t *entry, char *reason)
{
    bson_free(entry->dead_reason);
    entry->dead_reason = reason;
    entry->state = ENTRY_JUDGED;
    list_push_back(&loader->judged, entry);
}

static void make_ready(fts_loader_t *loader, entry_t *entry, bool front)
{
    /* Until an action is acknowledged, the lag counts from the first one taken. */
    fts_signal_set_if_zero(FTS_SIGNAL_LAST_ACK_TS_WALL_MS, entry->action.ts_seconds * 1000ull);
    entry->state = ENTRY_READY;
    if (front) {
        list_push_front(&loader->ready, entry);
    } else {
        list_push_back(&loader->ready, entry);
    }
}

/* ---- delivery counts (README.md, Load: "Deliveries") ----
 * Redis counts every delivery, restarts included, so its count alone would make an
 * Elasticsearch outage with restarts look like a poison entry. The loader rewrites the count of
 * every entry it holds so that it means "loaders that died while sending this entry, plus the
 * current delivery": right after taking it, deaths (the count Redis reported - 1); just before
 * sending it in a bulk request, deaths + 1 ("armed"); once that request ended, whatever its
 * outcome, deaths again. A loader that dies while the entry is armed leaves the extra 1, which
 * the next holder then counts; one that dies while it is not leaves nothing. */

static void mark_queue(fts_loader_t *loader, const char *id, uint64_t count)
{
    if (loader->mark_count == loader->mark_room) {
        loader->mark_room = loader->mark_room ? loader->mark_room * 2 : 64;
        loader->mark_ids =
            bson_realloc(loader->mark_ids, loader->mark_room * sizeof *loader->mark_ids);
        loader->mark_counts =
            bson_realloc(loader->mark_counts, loader->mark_room * sizeof *loader->mark_counts);
    }
    snprintf(loader->mark_ids[loader->mark_count], FTS_STREAM_ID_SIZE, "%s", id);
    loader->mark_counts[loader->mark_count] = count;
    loader->mark_count++;
}

/* Sends the queued marks, in the order queued, as one port call. */
static void mark_flush(fts_loader_t *loader)
{
    if (loader->mark_count == 0 || loader->finished) {
        loader->mark_count = 0;
        return;
    }
    const char **ids = bson_malloc(loader->mark_count * sizeof *ids);
    for (size_t i = 0; i < loader->mark_count; i++) {
        ids[i] = loader->mark_ids[i];
    }
    loader->marks_outstanding++;
    loader->ports.ops->mark(loader->ports.context, ids, loader->mark_counts, loader->mark_count);
    loader->mark_count = 0;
    bson_free(ids);
}

/* Takes one entry as read or claimed: held from now on, unless it is held already. */
static void take_entry(fts_loader_t *loader, const fts_stream_entry_t *source, bool claimed,
                       uint64_t now)
{
    uint64_t hash = id_hash(source->id);
    if (held_find(loader, source->id, hash)) {
        loader->stats.duplicates++;
        return;
    }
    entry_t *entry = bson_malloc0(sizeof *entry);
    snprintf(entry->id, sizeof entry->id, "%s", source->id);
    entry->hash = hash;
    entry->deliveries = source->deliveries;
    entry->deaths = source->deliveries ? source->deliveries - 1 : 0;
    entry->ready_since = now;
    fts_action_init(&entry->action);
    held_insert(loader, entry);
    loader->stats.read++;
    if (claimed) {
        loader->stats.claimed++;
    }

    if (!source->items) {
        /* Deleted from the stream while pending (an operator's XDEL): there is nothing left
         * to load, and keeping it pending would block nothing but clutter XPENDING. */
        loader->stats.vanished++;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "pending entry %s was deleted from the stream before it was loaded; "
                "acknowledging it (vanished=%" PRIu64 ")",
                entry->id, loader->stats.vanished);
        judge(loader, entry, NULL);
        return;
    }
    entry->items = copy_items(source->items, source->count);
    entry->count = source->count;

    if (loader->options.max_deliveries && entry->deaths >= loader->options.max_deliveries) {
        judge(loader, entry,
              format_reason("delivered %" PRIu64 " times, more than FTSYNC_MAX_DELIVERIES=%" PRIu64
                            ": loaders sending it died or stalled %" PRIu64 " times",
                            source->deliveries, loader->options.max_deliveries, entry->deaths));
        return;
    }
    if (source->deliveries > 1) {
        /* This delivery is not a death (yet): take it back out of Redis's count. */
        mark_queue(loader, entry->id, entry->deaths);
    }
    fts_error_t err = {0};
    if (!fts_action_decode(entry->items, entry->count, &entry->action, &err)) {
        judge(loader, entry, format_reason("cannot decode the entry: %s", err.message));
        return;
    }
    if (entry->action.op == FTS_ACTION_DROP || entry->action.op == FTS_ACTION_SWEEP) {
        if (!loader->options.target.ns_field) {
            judge(loader, entry,
                  format_reason("op %s (ns %s, version %" PRIu64
                                ") not applied: FTSYNC_NS_FIELD is off, so the index cannot "
                                "tell which documents came from that ns; remove its documents "
                                "below that version from the index by hand",
                                fts_action_op_name(entry->action.op), entry->action.ns,
                                entry->action.version));
            return;
        }
        /* Carried out in its turn (maybe_sweep), beside the loading of everything else. */
        entry->state = ENTRY_WAITING;
        list_push_back(&loader->sweeps, entry);
        return;
    }
    if (entry->action.op != FTS_ACTION_INDEX && entry->action.op != FTS_ACTION_DELETE) {
        judge(loader, entry,
              format_reason("op %s (ns %s, version %" PRIu64 ") is not known to ftsync load",
                            fts_action_op_name(entry->action.op), entry->action.ns,
                            entry->action.version));
        return;
    }
    entry->bulk_size = fts_bulk_action_size(&loader->options.target, &entry->action);
    make_ready(loader, entry, false);
}

/* ---- reading, claiming, touching ---- */

/* At most one read is outstanding, and it needs no deadline here: the port completes every
 * read (load_ports.h), a lost or late reply included (the adapter's command timeout). */
static void maybe_read(fts_loader_t *loader, uint64_t now)
{
    if (loader->read_outstanding || now < loader->read_retry_at ||
        loader->held >= loader->max_held) {
        return;
    }
    size_t room = loader->max_held - loader->held;
    size_t count =
        room < loader->options.bulk_max_actions ? room : loader->options.bulk_max_actions;
    loader->read_outstanding = true;
    loader->ports.ops->read(loader->ports.context,
                            loader->reading_history ? loader->history_cursor : ">", count);
}

static void maybe_claim(fts_loader_t *loader, uint64_t now)
{
    if (now < loader->next_claim_at) {
        return;
    }
    loader->next_claim_at = now + loader->options.claim_interval_ms;
    if (!loader->touch_outstanding && loader->held > 0) {
        /* Refresh the idle time of everything held, so that other loaders do not claim live
         * work (and so that a long Elasticsearch outage does not count deliveries). */
        const char **ids = bson_malloc(loader->held * sizeof *ids);
        size_t n = 0;
        for (size_t b = 0; b <= loader->bucket_mask; b++) {
            for (entry_t *e = loader->buckets[b]; e; e = e->hash_next) {
                ids[n++] = e->id;
            }
        }
        loader->touch_outstanding = true;
        loader->ports.ops->touch(loader->ports.context, ids, n);
        bson_free(ids);
    }
    if (!loader->claim_outstanding && loader->held < loader->max_held) {
        size_t room = loader->max_held - loader->held;
        size_t count =
            room < loader->options.bulk_max_actions ? room : loader->options.bulk_max_actions;
        loader->claim_outstanding = true;
        loader->ports.ops->claim(loader->ports.context, loader->claim_cursor, count);
    }
}

/* ---- batching ---- */

static void batch_reset(batch_t *batch)
{
    batch->in_use = false;
    batch->count = 0;
    fts_buffer_clear(&batch->body);
}

static batch_t *free_batch(fts_loader_t *loader)
{
    for (size_t i = 0; i < loader->options.bulk_max_in_flight; i++) {
        if (!loader->batches[i].in_use) {
            return &loader->batches[i];
        }
    }
    return NULL;
}

/* Sends batches while there is room in flight and a full batch, or one that waited long
 * enough. Returns the time the oldest partial batch will be due (0: none waiting). */
static uint64_t pump_batches(fts_loader_t *loader, uint64_t now)
{
    while (loader->in_flight < loader->options.bulk_max_in_flight && now >= loader->es_retry_at) {
        size_t eligible = 0;
        size_t bytes = 0;
        uint64_t oldest = UINT64_MAX;
        for (entry_t *e = loader->ready.head; e; e = e->next) {
            if (e->not_before <= now) {
                eligible++;
                bytes += e->bulk_size;
                if (e->ready_since < oldest) {
                    oldest = e->ready_since;
                }
            }
        }
        if (eligible == 0) {
            return 0;
        }
        bool full = eligible >= loader->batch_cap || bytes >= loader->options.bulk_max_bytes;
        uint64_t due = oldest + loader->options.bulk_max_wait_ms;
        if (!full && now < due) {
            return due;
        }
        /* in_flight < bulk_max_in_flight, and every batch in flight is in use. */
        batch_t *batch = free_batch(loader);
        assert(batch);
        size_t batch_bytes = 0;
        entry_t *prev = NULL;
        entry_t *e = loader->ready.head;
        while (e && batch->count < loader->batch_cap) {
            entry_t *next = e->next;
            if (e->not_before > now) {
                prev = e;
                e = next;
                continue;
            }
            if (batch->count > 0 && batch_bytes + e->bulk_size > loader->options.bulk_max_bytes) {
                break;
            }
            {
                if (prev) {
                    prev->next = next;
                } else {
                    loader->ready.head = next;
                }
                if (loader->ready.tail == e) {
                    loader->ready.tail = prev;
                }
                e->next = NULL;
                e->state = ENTRY_SENT;
                fts_error_t err = {0};
                if (!fts_bulk_append_action(&batch->body, &loader->options.target, &e->action,
                                            &err)) {
                    /* take_entry only makes index and delete actions ready. */
                    judge(loader, e,
                          format_reason("cannot build the bulk action: %s", err.message));
                } else {
                    batch->entries[batch->count] = e;
                    batch->ops[batch->count] = e->action.op;
                    batch->count++;
                    batch_bytes += e->bulk_size;
                }
            }
            e = next;
        }
        if (batch->count == 0) {
            continue;
        }
        batch->in_use = true;
        batch->sent_at = now;
        loader->in_flight++;
        /* Armed before the request goes out: the mark is queued on the Redis connection
         * first, so it is on its way before Elasticsearch can answer. */
        for (size_t i = 0; i < batch->count; i++) {
            mark_queue(loader, batch->entries[i]->id, batch->entries[i]->deaths + 1);
        }
        mark_flush(loader);
        loader->ports.ops->bulk(loader->ports.context, batch->body.data, batch->body.len, batch);
    }
    return 0;
}

static uint64_t item_retry_delay(fts_loader_t *loader, unsigned attempts)
{
    uint64_t ceiling = loader->options.retry_base_ms;
    for (unsigned i = 1; i < attempts && ceiling < loader->options.retry_max_ms; i++) {
        ceiling *= 2;
    }
    if (ceiling > loader->options.retry_max_ms) {
        ceiling = loader->options.retry_max_ms;
    }
    /* xorshift64: full jitter, so that items throttled together do not return together. */
    loader->rng ^= loader->rng << 13;
    loader->rng ^= loader->rng >> 7;
    loader->rng ^= loader->rng << 17;
    return ceiling ? loader->rng % (ceiling + 1) : 0;
}

/* Puts every entry of a batch back at the front of the ready list, in its order. */
static void requeue_batch(fts_loader_t *loader, batch_t *batch)
{
    for (size_t i = batch->count; i-- > 0;) {
        make_ready(loader, batch->entries[i], true);
    }
}

/* ---- settling ---- */

static void maybe_settle(fts_loader_t *loader, uint64_t now)
{
    if (loader->settle_outstanding || !loader->judged.head || now < loader->settle_retry_at) {
        return;
    }
    settle_t *settle = &loader->settle;
    settle->count = 0;
    size_t dead = 0;
    while (settle->count < SETTLE_MAX_ENTRIES && loader->judged.head) {
        entry_t *e = list_pop_front(&loader->judged);
        e->state = ENTRY_SETTLING;
        settle->entries[settle->count] = e;
        settle->ids[settle->count] = e->id;
        if (e->dead_reason) {
            fts_stream_entry_t *view = &settle->views[dead];
            memcpy(view->id, e->id, sizeof view->id);
            view->items = e->items;
            view->count = e->count;
            view->deliveries = e->deliveries;
            settle->dead[dead].entry = view;
            settle->dead[dead].reason = e->dead_reason;
            settle->dead[dead].deliveries = e->deliveries;
            dead++;
        }
        settle->count++;
    }
    fts_settlement_t settlement = {
        .ack_ids = settle->ids,
        .ack_count = settle->count,
        .dead = settle->dead,
        .dead_count = dead,
    };
    loader->settle_outstanding = true;
    loader->ports.ops->settle(loader->ports.context, &settlement, settle);
}

/* ---- drop and sweep ----
 *
 * A drop (the collection was dropped: remove every document of its ns) and a sweep (after a
 * resync snapshot at version V: remove every document of its ns below V) are the same work:
 * delete every document of the entry's ns whose version is below the entry's version. Steps:
 *   barrier  until every entry before it in the stream is acknowledged (load_ports.h), so no
 *            action queued before it - a snapshot's index action above all - is still on its
 *            way to lose against the sweep's delete;
 *   refresh  so that the scroll sees every acknowledged write;
 *   pages    a scroll with versions and the ns field; each document of the ns below the
 *            version is deleted with version_type=external at the entry's version, so one
 *            written again meanwhile (a higher version) answers 409 and stays;
 *   judged   acknowledged at the end of the scroll; dead-lettered with counts when some
 *            documents could not be deleted, or carry no ns field and may be stale.
 * A lost or failed page starts the scroll again (a scroll cannot be re-read, and repeating
 * deletes is harmless). Other entries keep flowing meanwhile: what comes after a drop or
 * sweep in the stream has higher versions, which its deletes cannot beat. */

static void sweep_clear_page(sweep_t *sweep)
{
    fts_sweep_page_cleanup(&sweep->page);
    sweep->target_count = 0;
}

/* Starts (or starts again) the scroll: a refresh first, then the first page. */
static void sweep_begin_pass(fts_loader_t *loader, sweep_t *sweep)
{
    sweep_clear_page(sweep);
    bson_free(sweep->scroll_id);
    sweep->scroll_id = NULL;
    sweep->scanned = sweep->newer = sweep->other_ns = sweep->unmarked = sweep->failed = 0;
    bson_free(sweep->first_failure);
    sweep->first_failure = NULL;
    sweep->phase = SWEEP_REFRESH;
    fts_sweep_refresh_request(&sweep->request, loader->options.target.index);
}

static void sweep_retry(fts_loader_t *loader, sweep_t *sweep, const char *what, const char *why)
{
    uint64_t delay = retry_delay_ms(&sweep->backoff);
    sweep->next_at = now_ms(loader) + delay;
    loader->stats.es_errors++;
    fts_log(FTS_LOG_WARN, LOG_COMPONENT,
            "%s of entry %s: %s failed, retrying in %" PRIu64 " ms: %s",
            fts_action_op_name(sweep->entry->action.op), sweep->entry->id, what, delay, why);
}

static void sweep_restart(fts_loader_t *loader, sweep_t *sweep, const char *why)
{
    sweep->restarts++;
    loader->stats.sweep_restarts++;
    sweep_begin_pass(loader, sweep);
    sweep_retry(loader, sweep, "a scroll page (the scroll starts again)", why);
}

static void sweep_log_progress(fts_loader_t *loader, const sweep_t *sweep, const char *what)
{
    const fts_action_t *action = &sweep->entry->action;
    fts_log(FTS_LOG_INFO, LOG_COMPONENT,
            "%s %s entry=%s ns=%s below_version=%" PRIu64 " scanned=%" PRIu64 " deleted=%" PRIu64
            " already_gone=%" PRIu64 " conflicts=%" PRIu64 " newer=%" PRIu64 " other_ns=%" PRIu64
            " unmarked=%" PRIu64 " failed=%" PRIu64 " restarts=%u elapsed_ms=%" PRIu64,
            fts_action_op_name(action->op), what, sweep->entry->id, action->ns, action->version,
            sweep->scanned, sweep->deleted, sweep->gone, sweep->conflicts, sweep->newer,
            sweep->other_ns, sweep->unmarked, sweep->failed, sweep->restarts,
            now_ms(loader) - sweep->started_at);
}

/* The end of the scroll: the entry is judged, the scroll freed, the next sweep may go. */
static void sweep_finish(fts_loader_t *loader, sweep_t *sweep)
{
    const fts_action_t *action = &sweep->entry->action;
    if (sweep->scroll_id) {
        /* Frees the server's scroll now rather than at its keep-alive; its outcome changes
         * nothing, and the port completes it with clear_token. */
        fts_sweep_request_t clear;
        fts_sweep_request_init(&clear);
        fts_sweep_clear_request(&clear, loader->options.sweep_dialect, sweep->scroll_id);
        loader->ports.ops->request(loader->ports.context, clear.method, clear.path.data,
                                   clear.content_type, clear.body.data, clear.body.len,
                                   &loader->clear_token);
        fts_sweep_request_destroy(&clear);
    }
    char *reason = NULL;
    if (sweep->failed) {
        reason = format_reason("%s of ns %s below version %" PRIu64 " done, but Elasticsearch "
                               "refused to delete %" PRIu64 " documents (deleted %" PRIu64
                               "); first: %s; remove them by hand",
                               fts_action_op_name(action->op), action->ns, action->version,
                               sweep->failed, sweep->deleted,
                               sweep->first_failure ? sweep->first_failure : "?");
    } else if (sweep->unmarked) {
        reason = format_reason(
            "%s of ns %s below version %" PRIu64 " done (deleted %" PRIu64 "), but %" PRIu64
            " documents below that version have no %s field (indexed before ftsync wrote it, "
            "or by something else), so they may still belong to ns %s: check them and remove "
            "them by hand",
            fts_action_op_name(action->op), action->ns, action->version, sweep->deleted,
            sweep->unmarked, loader->options.target.ns_field, action->ns);
    }
    loader->stats.swept++;
    sweep_log_progress(loader, sweep, reason ? "finished with documents left" : "finished");
    judge(loader, sweep->entry, reason);
    sweep_clear_page(sweep);
    bson_free(sweep->scroll_id);
    sweep->scroll_id = NULL;
    bson_free(sweep->first_failure);
    sweep->first_failure = NULL;
    sweep->entry = NULL;
    sweep->phase = SWEEP_NONE;
}

/* Builds the bulk delete of the page's remaining targets into sweep->request. */
static void sweep_build_deletes(fts_loader_t *loader, sweep_t *sweep)
{
    fts_sweep_request_t *request = &sweep->request;
    request->method = "POST";
    request->content_type = "application/x-ndjson";
    fts_buffer_clear(&request->path);
    fts_buffer_clear(&request->body);
    fts_buffer_append_str(&request->path, "/_bulk");
    for (size_t i = 0; i < sweep->target_count; i++) {
        const fts_sweep_hit_t *hit = &sweep->page.hits[sweep->targets[i]];
        /* The hit's own index: an alias may point at several. */
        fts_bulk_target_t target = {
            .index = hit->index, .doc_type = loader->options.target.doc_type, .ns_field = NULL};
        fts_action_t action;
        fts_action_init(&action);
        action.op = FTS_ACTION_DELETE;
        action.id = hit->id; /* borrowed: the action is not cleaned up */
        action.id_len = hit->id_len;
        action.version = sweep->entry->action.version;
        fts_error_t err = {0};
        bool appended = fts_bulk_append_action(&request->body, &target, &action, &err);
        assert(appended); /* a delete with an id always frames */
        (void)appended;
        sweep->ops[i] = FTS_ACTION_DELETE;
    }
    sweep->phase = SWEEP_DELETE;
}

static void sweep_next_page(fts_loader_t *loader, sweep_t *sweep)
{
    sweep->phase = SWEEP_SCROLL;
    fts_sweep_scroll_request(&sweep->request, loader->options.sweep_dialect, sweep->scroll_id);
}

/* A page arrived: picks the documents to delete, or goes on, or ends. */
static void sweep_take_page(fts_loader_t *loader, sweep_t *sweep)
{
    if (sweep->page.scroll_id) {
        bson_free(sweep->scroll_id);
        sweep->scroll_id = sweep->page.scroll_id;
        sweep->page.scroll_id = NULL;
    }
    if (sweep->page.count == 0) {
        sweep_finish(loader, sweep);
        return;
    }
    const fts_action_t *action = &sweep->entry->action;
    sweep->targets = bson_realloc(sweep->targets, sweep->page.count * sizeof *sweep->targets);
    sweep->ops = bson_realloc(sweep->ops, sweep->page.count * sizeof *sweep->ops);
    sweep->results = bson_realloc(sweep->results, sweep->page.count * sizeof *sweep->results);
    sweep->target_count = 0;
    for (size_t i = 0; i < sweep->page.count; i++) {
        const fts_sweep_hit_t *hit = &sweep->page.hits[i];
        sweep->scanned++;
        if (hit->version >= action->version) {
            sweep->newer++;
        } else if (!hit->ns) {
            sweep->unmarked++;
        } else if (strcmp(hit->ns, action->ns) != 0) {
            sweep->other_ns++;
        } else {
            sweep->targets[sweep->target_count++] = i;
        }
    }
    if (sweep->target_count) {
        sweep_build_deletes(loader, sweep);
    } else {
        sweep_next_page(loader, sweep);
    }
}

/* The answer to a page's deletes: judged item by item like any bulk answer. */
static void sweep_take_deletes(fts_loader_t *loader, sweep_t *sweep, long status, const char *body,
                               size_t len)
{
    char reason[FTS_BULK_REASON_SIZE];
    fts_bulk_response_verdict_t verdict = fts_bulk_response_judge(
        status, body, len, sweep->ops, sweep->target_count, sweep->results, reason, sizeof reason);
    if (verdict == FTS_BULK_RESPONSE_RETRY) {
        sweep_retry(loader, sweep, "a bulk delete", reason);
        return;
    }
    if (verdict == FTS_BULK_RESPONSE_SPLIT) {
        /* Deletes of one page are small; a request refused as a whole will not do better in
         * halves here. Counted as refused, and the entry will say so. */
        sweep->failed += sweep->target_count;
        if (!sweep->first_failure) {
            sweep->first_failure = bson_strdup(reason);
        }
        sweep->target_count = 0;
        sweep_next_page(loader, sweep);
        return;
    }
    size_t kept = 0;
    char retry_reason[FTS_BULK_REASON_SIZE + 32] = "";
    uint64_t deleted_before = sweep->deleted;
    for (size_t i = 0; i < sweep->target_count; i++) {
        const fts_bulk_item_result_t *result = &sweep->results[i];
        switch (result->verdict) {
        case FTS_BULK_ITEM_ACK:
            if (result->kind == FTS_BULK_KIND_CONFLICT) {
                sweep->conflicts++;
            } else if (result->kind == FTS_BULK_KIND_NOT_FOUND) {
                sweep->gone++;
            } else {
                sweep->deleted++;
            }
            break;
        case FTS_BULK_ITEM_RETRY:
            if (!retry_reason[0]) {
                snprintf(retry_reason, sizeof retry_reason, "HTTP %d: %s", result->status,
                         result->reason);
            }
            sweep->targets[kept++] = sweep->targets[i];
            break;
        case FTS_BULK_ITEM_REJECT:
        default:
            sweep->failed++;
            if (!sweep->first_failure) {
                sweep->first_failure = format_reason("HTTP %d: %s", result->status, result->reason);
            }
            break;
        }
    }
    loader->stats.sweep_deleted += sweep->deleted - deleted_before;
    if (kept) {
        /* Only the throttled or failed items go again, after a backoff. */
        sweep->target_count = kept;
        sweep_build_deletes(loader, sweep);
        sweep_retry(loader, sweep, "deleting some documents", retry_reason);
        return;
    }
    fts_backoff_reset(&sweep->backoff);
    sweep->target_count = 0;
    sweep_next_page(loader, sweep);
}

/* The lowest stream ID of the waiting drops and sweeps goes first: its barrier is the first
 * that can clear. */
static bool stream_id_less(const char *a, const char *b)
{
    unsigned long long a_ms = 0;
    unsigned long long a_seq = 0;
    unsigned long long b_ms = 0;
    unsigned long long b_seq = 0;
    sscanf(a, "%llu-%llu", &a_ms, &a_seq);
    sscanf(b, "%llu-%llu", &b_ms, &b_seq);
    return a_ms < b_ms || (a_ms == b_ms && a_seq < b_seq);
}

static entry_t *take_lowest_sweep(fts_loader_t *loader)
{
    entry_t *lowest = NULL;
    entry_t *lowest_prev = NULL;
    entry_t *prev = NULL;
    for (entry_t *e = loader->sweeps.head; e; prev = e, e = e->next) {
        if (!lowest || stream_id_less(e->id, lowest->id)) {
            lowest = e;
            lowest_prev = prev;
        }
    }
    if (!lowest) {
        return NULL;
    }
    if (lowest_prev) {
        lowest_prev->next = lowest->next;
    } else {
        loader->sweeps.head = lowest->next;
    }
    if (loader->sweeps.tail == lowest) {
        loader->sweeps.tail = lowest_prev;
    }
    lowest->next = NULL;
    return lowest;
}

/* Whether a waiting drop or sweep comes before the entry id in the stream. */
static bool sweep_waiting_before(const fts_loader_t *loader, const char *id)
{
    for (const entry_t *e = loader->sweeps.head; e; e = e->next) {
        if (stream_id_less(e->id, id)) {
            return true;
        }
    }
    return false;
}

static void maybe_sweep(fts_loader_t *loader, uint64_t now)
{
    sweep_t *sweep = &loader->sweep;
    /* A sweep at its barrier waits for every entry before it, an earlier drop or sweep this
     * loader holds (claimed from a dead loader, say) included: running one at a time, it must
     * put the later one back and take the earlier, or both wait forever. It deleted nothing
     * yet, so it starts again from its barrier later. A sweep past its barrier needs no such
     * switch: every entry before it was acknowledged then, so none can come to this loader. */
    if (sweep->entry && sweep->phase == SWEEP_BARRIER &&
        sweep_waiting_before(loader, sweep->entry->id)) {
        entry_t *later = sweep->entry;
        fts_log(FTS_LOG_INFO, LOG_COMPONENT,
                "%s entry=%s: put back behind an earlier drop or sweep this loader holds",
                fts_action_op_name(later->action.op), later->id);
        later->state = ENTRY_WAITING;
        list_push_back(&loader->sweeps, later);
        sweep->entry = NULL;
        sweep->phase = SWEEP_NONE;
    }
    if (!sweep->entry) {
        entry_t *entry = take_lowest_sweep(loader);
        if (!entry) {
            return;
        }
        entry->state = ENTRY_SWEEPING;
        sweep->entry = entry;
        sweep->phase = SWEEP_BARRIER;
        sweep->next_at = now;
        sweep->deleted = sweep->gone = sweep->conflicts = 0;
        sweep->restarts = 0;
        sweep->started_at = now;
        sweep->next_progress_at = now + SWEEP_PROGRESS_MS;
        fts_backoff_reset(&sweep->backoff);
        fts_log(FTS_LOG_INFO, LOG_COMPONENT,
                "%s entry=%s ns=%s below_version=%" PRIu64
                ": waiting until every entry before it is acknowledged",
                fts_action_op_name(entry->action.op), entry->id, entry->action.ns,
                entry->action.version);
    }
    if (sweep->phase != SWEEP_BARRIER && now >= sweep->next_progress_at) {
        sweep->next_progress_at = now + SWEEP_PROGRESS_MS;
        sweep_log_progress(loader, sweep, "progress");
    }
    if (sweep->outstanding || now < sweep->next_at) {
        return;
    }
    sweep->outstanding = true;
    if (sweep->phase == SWEEP_BARRIER) {
        memcpy(sweep->barrier_id, sweep->entry->id, sizeof sweep->barrier_id);
        loader->ports.ops->barrier(loader->ports.context, sweep->entry->id);
        return;
    }
    const fts_sweep_request_t *request = &sweep->request;
    loader->ports.ops->request(loader->ports.context, request->method, request->path.data,
                               request->content_type, request->body.data, request->body.len, sweep);
}

/* ---- the driver of it all ---- */

static void finish(fts_loader_t *loader)
{
    size_t abandoned = loader->held;
    loader->finished = true;
    fts_log(FTS_LOG_INFO, LOG_COMPONENT,
            "stopped: acked=%" PRIu64 " dead=%" PRIu64 " abandoned=%zu (left pending in the "
            "group, delivered again later)",
            loader->stats.acked, loader->stats.dead, abandoned);
    loader->ports.ops->finished(loader->ports.context);
}

static void log_progress(fts_loader_t *loader, uint64_t now)
{
    if (!loader->options.progress_interval_ms || now < loader->next_progress_at) {
        return;
    }
    loader->next_progress_at = now + loader->options.progress_interval_ms;
    if (loader->stats.acked == loader->progress_acked && loader->held == 0) {
        return;
    }
    loader->progress_acked = loader->stats.acked;
    const fts_load_stats_t *s = &loader->stats;
    fts_log(FTS_LOG_INFO, LOG_COMPONENT,
            "progress read=%" PRIu64 " indexed=%" PRIu64 " deleted=%" PRIu64 " conflicts=%" PRIu64
            " dead=%" PRIu64 " acked=%" PRIu64 " claimed=%" PRIu64 " held=%zu in_flight=%zu",
            s->read, s->indexed, s->deleted, s->conflicts, s->dead, s->acked, s->claimed,
            loader->held, loader->in_flight);
}

static void arm_timer(fts_loader_t *loader, uint64_t now, uint64_t batch_due)
{
    uint64_t next = UINT64_MAX;
#define CONSIDER(t)                                                                                \
    do {                                                                                           \
        if ((t) < next) {                                                                          \
            next = (t);                                                                            \
        }                                                                                          \
    } while (0)
    if (loader->stopping) {
        CONSIDER(loader->stop_deadline);
    } else {
        if (batch_due) {
            CONSIDER(batch_due);
        }
        if (loader->ready.head) {
            if (loader->es_retry_at > now) {
                CONSIDER(loader->es_retry_at);
            }
            for (entry_t *e = loader->ready.head; e; e = e->next) {
                if (e->not_before > now) {
                    CONSIDER(e->not_before);
                }
            }
        }
        if (!loader->group_ready) {
            if (!loader->group_outstanding) {
                CONSIDER(loader->group_retry_at);
            }
        } else {
            CONSIDER(loader->next_claim_at);
            if (!loader->read_outstanding && loader->read_retry_at > now) {
                CONSIDER(loader->read_retry_at);
            }
            if (loader->sweep.entry) {
                if (!loader->sweep.outstanding) {
                    CONSIDER(loader->sweep.next_at);
                }
                if (loader->sweep.phase != SWEEP_BARRIER) {
                    CONSIDER(loader->sweep.next_progress_at);
                }
            }
        }
        if (loader->options.progress_interval_ms) {
            CONSIDER(loader->next_progress_at);
        }
    }
    if (loader->judged.head && !loader->settle_outstanding) {
        CONSIDER(loader->settle_retry_at);
    }
#undef CONSIDER
    if (next != UINT64_MAX) {
        loader->ports.ops->wake_after(loader->ports.context, next > now ? next - now : 0);
    }
}

static void run(fts_loader_t *loader)
{
    if (loader->finished || !loader->started) {
        return;
    }
    uint64_t now = now_ms(loader);
    uint64_t batch_due = 0;
    if (loader->stopping) {
        maybe_settle(loader, now);
        mark_flush(loader);
        /* Marks too: a disarm left unwritten would count this stop as a death. */
        bool idle = loader->in_flight == 0 && !loader->settle_outstanding && !loader->judged.head &&
                    loader->marks_outstanding == 0;
        if (idle || now >= loader->stop_deadline) {
            finish(loader);
            return;
        }
    } else {
        if (!loader->group_ready) {
            if (!loader->group_outstanding && now >= loader->group_retry_at) {
                loader->group_outstanding = true;
                loader->ports.ops->ensure_group(loader->ports.context);
            }
        } else {
            maybe_read(loader, now);
            maybe_claim(loader, now);
            maybe_sweep(loader, now);
        }
        batch_due = pump_batches(loader, now);
        maybe_settle(loader, now);
        mark_flush(loader);
        log_progress(loader, now);
    }
    fts_metric_set(FTS_METRIC_PENDING, 0, (double)loader->held);
    if (loader->held == 0) {
        fts_signal_set(FTS_SIGNAL_LOAD_PROGRESS_MS, now); /* nothing waits: no stall */
    }
    arm_timer(loader, now, batch_due);
}

/* ---- public ---- */

fts_loader_t *fts_loader_new(const fts_load_options_t *options, const fts_load_ports_t *ports)
{
    assert(options && ports && ports->ops && ports->ops->now_ms);
    fts_loader_t *loader = bson_malloc0(sizeof *loader);
    loader->options = *options;
    loader->ports = *ports;
    if (loader->options.bulk_max_actions == 0) {
        loader->options.bulk_max_actions = 1;
    }
    if (loader->options.bulk_max_in_flight == 0) {
        loader->options.bulk_max_in_flight = 1;
    }
    loader->batch_cap = loader->options.bulk_max_actions;
    loader->max_held = loader->options.bulk_max_actions * (loader->options.bulk_max_in_flight + 2);
    size_t buckets = 64;
    while (buckets < loader->max_held * 2) {
        buckets *= 2;
    }
    loader->buckets = bson_malloc0(buckets * sizeof *loader->buckets);
    loader->bucket_mask = buckets - 1;
    loader->batches = bson_malloc0(loader->options.bulk_max_in_flight * sizeof *loader->batches);
    loader->settle.entries = bson_malloc0(SETTLE_MAX_ENTRIES * sizeof *loader->settle.entries);
    loader->settle.ids = bson_malloc0(SETTLE_MAX_ENTRIES * sizeof *loader->settle.ids);
    loader->settle.views = bson_malloc0(SETTLE_MAX_ENTRIES * sizeof *loader->settle.views);
    loader->settle.dead = bson_malloc0(SETTLE_MAX_ENTRIES * sizeof *loader->settle.dead);
    size_t actions = loader->options.bulk_max_actions;
    for (size_t i = 0; i < loader->options.bulk_max_in_flight; i++) {
        batch_t *batch = &loader->batches[i];
        batch->entries = bson_malloc0(actions * sizeof *batch->entries);
        batch->ops = bson_malloc0(actions * sizeof *batch->ops);
        batch->results = bson_malloc0(actions * sizeof *batch->results);
        fts_buffer_init(&batch->body);
    }
    uint64_t base = loader->options.retry_base_ms;
    uint64_t cap = loader->options.retry_max_ms;
    fts_backoff_init(&loader->settle_backoff, base, cap, 0);
    fts_backoff_init(&loader->group_backoff, base, cap, 0);
    fts_backoff_init(&loader->read_backoff, base, cap, 0);
    fts_backoff_init(&loader->es_backoff, base, cap, 0);
    fts_backoff_init(&loader->sweep.backoff, base, cap, 0);
    if (loader->ports.ops->random) {
        fts_backoff_t *backoffs[] = {&loader->settle_backoff, &loader->group_backoff,
                                     &loader->read_backoff, &loader->es_backoff,
                                     &loader->sweep.backoff};
        for (size_t i = 0; i < sizeof backoffs / sizeof backoffs[0]; i++) {
            fts_backoff_set_random(backoffs[i], loader->ports.ops->random, loader->ports.context);
        }
    }
    fts_sweep_request_init(&loader->sweep.request);
    fts_sweep_page_init(&loader->sweep.page);
    if (loader->options.sweep_dialect == 0) {
        loader->options.sweep_dialect = FTS_SWEEP_SCROLL_ID_JSON;
    }
    loader->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)loader;
    loader->reading_history = true;
    snprintf(loader->history_cursor, sizeof loader->history_cursor, "%s", HISTORY_START);
    snprintf(loader->claim_cursor, sizeof loader->claim_cursor, "0-0");
    return loader;
}

void fts_loader_destroy(fts_loader_t *loader)
{
    if (!loader) {
        return;
    }
    for (size_t b = 0; b <= loader->bucket_mask; b++) {
        entry_t *e = loader->buckets[b];
        while (e) {
            entry_t *next = e->hash_next;
            entry_free(e);
            e = next;
        }
    }
    bson_free(loader->buckets);
    bson_free(loader->mark_ids);
    bson_free(loader->mark_counts);
    for (size_t i = 0; i < loader->options.bulk_max_in_flight; i++) {
        bson_free(loader->batches[i].entries);
        bson_free(loader->batches[i].ops);
        bson_free(loader->batches[i].results);
        fts_buffer_destroy(&loader->batches[i].body);
    }
    bson_free(loader->batches);
    bson_free(loader->settle.entries);
    bson_free(loader->settle.ids);
    bson_free(loader->settle.views);
    bson_free(loader->settle.dead);
    fts_sweep_request_destroy(&loader->sweep.request);
    fts_sweep_page_cleanup(&loader->sweep.page);
    bson_free(loader->sweep.scroll_id);
    bson_free(loader->sweep.targets);
    bson_free(loader->sweep.ops);
    bson_free(loader->sweep.results);
    bson_free(loader->sweep.first_failure);
    bson_free(loader);
}

void fts_loader_start(fts_loader_t *loader)
{
    if (loader->started) {
        return;
    }
    loader->started = true;
    uint64_t now = now_ms(loader);
    loader->next_claim_at = now + loader->options.claim_interval_ms;
    loader->next_progress_at = now + loader->options.progress_interval_ms;
    run(loader);
}

void fts_loader_stop(fts_loader_t *loader)
{
    if (loader->stopping || loader->finished) {
        return;
    }
    loader->stopping = true;
    loader->stop_deadline = now_ms(loader) + loader->options.stop_timeout_ms;
    if (loader->sweep.entry) {
        /* Abandoned, not waited for: a scroll can take long, and the entry stays pending, so
         * whoever holds it next sweeps again (harmless). */
        sweep_log_progress(loader, &loader->sweep, "abandoned (stopping; left pending)");
    }
    fts_log(FTS_LOG_INFO, LOG_COMPONENT,
            "stopping: %zu bulk requests in flight, %zu entries held; waiting up to %" PRIu64 " ms",
            loader->in_flight, loader->held, loader->options.stop_timeout_ms);
    if (!loader->started) {
        loader->started = true;
    }
    run(loader);
}

/* A read or claim found no group (NOGROUP): Redis lost it, with the stream (FLUSHALL, a
 * restart without persistence). Recreate it from 0 (ensure_group), so that the loader reads
 * what is queued from now on instead of nothing; entries still in the stream are delivered
 * again, harmless (versions, invariant 3). True when err says so. */
static bool group_vanished(fts_loader_t *loader, const fts_error_t *err)
{
    if (!err || err->domain != FTS_ERROR_REDIS || err->code != FTS_ERROR_CODE_NO_GROUP) {
        return false;
    }
    if (loader->group_ready) { /* once per loss, though a read and a claim may both see it */
        loader->group_ready = false;
        loader->group_retry_at = 0;
        fts_metric_add(FTS_METRIC_DATA_LOST, FTS_LOST_GROUP, 1);
        fts_log(FTS_LOG_ERROR, LOG_COMPONENT,
                "the queue Redis lost the consumer group: recreated; entries queued before the "
                "loss may be gone — run ftsync verify (%s)",
                err->message);
    }
    return true;
}

/* Redis's state for /readyz (permanent.h): err NULL or empty when Redis just answered. */
static void note_redis(const fts_error_t *err)
{
    if (err && err->domain != FTS_ERROR_NONE) {
        fts_permanent_report_error(FTS_SERVER_REDIS, err);
    } else {
        fts_permanent_report(FTS_SERVER_REDIS, FTS_PERMANENT_NONE, NULL);
    }
}

void fts_loader_group_done(fts_loader_t *loader, const fts_error_t *err)
{
    loader->group_outstanding = false;
    note_redis(err);
    if (err && err->domain != FTS_ERROR_NONE) {
        loader->stats.redis_errors++;
        uint64_t delay = retry_delay_ms(&loader->group_backoff);
        loader->group_retry_at = now_ms(loader) + delay;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "cannot create the consumer group, retrying in %" PRIu64 " ms: %s", delay,
                err->message);
    } else {
        loader->group_ready = true;
        fts_backoff_reset(&loader->group_backoff);
    }
    run(loader);
}

void fts_loader_read_done(fts_loader_t *loader, const fts_stream_entry_t *entries, size_t count,
                          const fts_error_t *err)
{
    loader->read_outstanding = false;
    if (loader->stopping || loader->finished) {
        /* Delivered to us but not taken: they stay pending and come back later. */
        run(loader);
        return;
    }
    uint64_t now = now_ms(loader);
    fts_signal_set(FTS_SIGNAL_LOAD_REDIS_OK, !(err && err->domain != FTS_ERROR_NONE));
    note_redis(err);
    if (err && err->domain != FTS_ERROR_NONE) {
        group_vanished(loader, err);
        loader->stats.redis_errors++;
        uint64_t delay = retry_delay_ms(&loader->read_backoff);
        loader->read_retry_at = now + delay;
        /* The reply may have been lost after Redis delivered entries to us: read our own
         * history again before anything new. */
        loader->reading_history = true;
        snprintf(loader->history_cursor, sizeof loader->history_cursor, "%s", HISTORY_START);
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "reading the stream failed (redis_errors=%" PRIu64 "), retrying in %" PRIu64
                " ms: %s",
                loader->stats.redis_errors, delay, err->message);
        run(loader);
        return;
    }
    fts_backoff_reset(&loader->read_backoff);
    if (loader->reading_history) {
        if (count == 0) {
            loader->reading_history = false;
        } else {
            snprintf(loader->history_cursor, sizeof loader->history_cursor, "%s",
                     entries[count - 1].id);
        }
    }
    for (size_t i = 0; i < count; i++) {
        take_entry(loader, &entries[i], false, now);
    }
    run(loader);
}

void fts_loader_claim_done(fts_loader_t *loader, const fts_stream_entry_t *entries, size_t count,
                           const char *next_cursor, uint64_t deleted, const fts_error_t *err)
{
    loader->claim_outstanding = false;
    if (loader->stopping || loader->finished) {
        run(loader);
        return;
    }
    if (err && err->domain != FTS_ERROR_NONE) {
        group_vanished(loader, err);
        loader->stats.redis_errors++;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "claiming idle entries failed (redis_errors=%" PRIu64 "): %s",
                loader->stats.redis_errors, err->message);
        run(loader);
        return;
    }
    uint64_t now = now_ms(loader);
    uint64_t claimed_before = loader->stats.claimed;
    for (size_t i = 0; i < count; i++) {
        take_entry(loader, &entries[i], true, now);
    }
    if (next_cursor && strlen(next_cursor) < sizeof loader->claim_cursor) {
        snprintf(loader->claim_cursor, sizeof loader->claim_cursor, "%s", next_cursor);
    }
    if (loader->stats.claimed > claimed_before) {
        fts_log(FTS_LOG_INFO, LOG_COMPONENT,
                "claimed %" PRIu64 " entries idle in other consumers (a loader died or stalled)",
                loader->stats.claimed - claimed_before);
    }
    if (deleted) {
        loader->stats.vanished += deleted;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "%" PRIu64 " pending entries were deleted from the stream before they were "
                "loaded; Redis dropped them from the pending list",
                deleted);
    }
    run(loader);
}

void fts_loader_mark_done(fts_loader_t *loader, const fts_error_t *err)
{
    assert(loader->marks_outstanding > 0);
    loader->marks_outstanding--;
    if (err && err->domain != FTS_ERROR_NONE && !loader->finished) {
        loader->stats.redis_errors++;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "writing delivery counts failed (an entry may count a loader death it did not "
                "cause, or miss one): %s",
                err->message);
    }
    run(loader);
}

void fts_loader_touch_done(fts_loader_t *loader, const fts_error_t *err)
{
    loader->touch_outstanding = false;
    if (err && err->domain != FTS_ERROR_NONE && !loader->finished) {
        loader->stats.redis_errors++;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "refreshing the idle time of held entries failed (others may claim them; "
                "harmless, versions keep replays safe): %s",
                err->message);
    }
    run(loader);
}

void fts_loader_settle_done(fts_loader_t *loader, void *token, const fts_error_t *err)
{
    settle_t *settle = token;
    loader->settle_outstanding = false;
    if (loader->finished) {
        return;
    }
    if (err && err->domain != FTS_ERROR_NONE) {
        /* Maybe done, maybe not: settle the same entries again (XACK is idempotent; a dead
         * letter may be written twice, never lost). */
        loader->stats.redis_errors++;
        fts_signal_set(FTS_SIGNAL_LOAD_REDIS_OK, 0);
        uint64_t delay = retry_delay_ms(&loader->settle_backoff);
        loader->settle_retry_at = now_ms(loader) + delay;
        for (size_t i = settle->count; i-- > 0;) {
            entry_t *e = settle->entries[i];
            e->state = ENTRY_JUDGED;
            list_push_front(&loader->judged, e);
        }
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "acknowledging %zu entries failed (redis_errors=%" PRIu64 "), retrying in %" PRIu64
                " ms: %s",
                settle->count, loader->stats.redis_errors, delay, err->message);
        settle->count = 0;
        run(loader);
        return;
    }
    fts_backoff_reset(&loader->settle_backoff);
    size_t dead = 0;
    const entry_t *first_dead = NULL;
    for (size_t i = 0; i < settle->count; i++) {
        entry_t *e = settle->entries[i];
        if (e->dead_reason) {
            dead++;
            if (!first_dead) {
                first_dead = e;
            }
        }
    }
    if (dead) {
        loader->stats.dead += dead;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "dead-lettered %zu entries (dead=%" PRIu64 "); first: entry=%s reason=\"%s\"", dead,
                loader->stats.dead, first_dead->id, first_dead->dead_reason);
    }
    uint64_t newest_ts = 0;
    for (size_t i = 0; i < settle->count; i++) {
        entry_t *e = settle->entries[i];
        if (e->action.ts_seconds > newest_ts) {
            newest_ts = e->action.ts_seconds;
        }
        held_remove(loader, e);
        entry_free(e);
    }
    fts_metric_add(FTS_METRIC_DEAD_LETTERS, FTS_STAGE_LOAD, dead);
    fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_DEAD_LETTERED, dead);
    fts_signal_raise(FTS_SIGNAL_LAST_ACK_TS_WALL_MS, newest_ts * 1000);
    fts_signal_set(FTS_SIGNAL_LOAD_PROGRESS_MS, now_ms(loader));
    fts_signal_set(FTS_SIGNAL_LOAD_REDIS_OK, 1);
    loader->stats.acked += settle->count;
    settle->count = 0;
    run(loader);
}

void fts_loader_bulk_done(fts_loader_t *loader, void *token, long status, const char *body,
                          size_t body_len, const fts_error_t *err)
{
    batch_t *batch = token;
    loader->in_flight--;
    if (loader->finished) {
        batch_reset(batch);
        return;
    }
    uint64_t now = now_ms(loader);
    /* The request ended with this loader alive: disarm (entries acknowledged meanwhile are no
     * longer pending, and XCLAIM leaves them alone). */
    for (size_t i = 0; i < batch->count; i++) {
        mark_queue(loader, batch->entries[i]->id, batch->entries[i]->deaths);
    }
    char reason[FTS_BULK_REASON_SIZE];
    fts_bulk_response_verdict_t verdict;
    if (err && err->domain != FTS_ERROR_NONE) {
        verdict = FTS_BULK_RESPONSE_RETRY;
        snprintf(reason, sizeof reason, "%s", err->message);
    } else {
        verdict = fts_bulk_response_judge(status, body, body_len, batch->ops, batch->count,
                                          batch->results, reason, sizeof reason);
    }
    fts_metric_observe(FTS_METRIC_BULK_DURATION, (double)(now - batch->sent_at) / 1000.0);
    fts_metric_add(FTS_METRIC_BULK_REQUESTS,
                   verdict == FTS_BULK_RESPONSE_RETRY   ? FTS_OUTCOME_FAILED
                   : verdict == FTS_BULK_RESPONSE_SPLIT ? FTS_OUTCOME_SPLIT
                                                        : FTS_OUTCOME_ANSWERED,
                   1);
    fts_signal_set(FTS_SIGNAL_ES_OK, verdict != FTS_BULK_RESPONSE_RETRY);
    fts_permanent_reason_t permanent = err && err->domain != FTS_ERROR_NONE
                                           ? fts_permanent_classify(err)
                                           : fts_permanent_classify_http(status, body, body_len);
    if (permanent != FTS_PERMANENT_NONE || verdict != FTS_BULK_RESPONSE_RETRY) {
        fts_permanent_report(FTS_SERVER_ELASTICSEARCH, permanent, reason);
    }

    if (verdict == FTS_BULK_RESPONSE_RETRY) {
        loader->stats.es_errors++;
        loader->stats.request_retries++;
        uint64_t delay = retry_delay_ms(&loader->es_backoff);
        loader->es_retry_at = now + delay;
        requeue_batch(loader, batch);
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "bulk request of %zu actions failed, nothing acknowledged; retrying in %" PRIu64
                " ms (es_errors=%" PRIu64 "): %s",
                batch->count, delay, loader->stats.es_errors, reason);
    } else if (verdict == FTS_BULK_RESPONSE_SPLIT) {
        loader->stats.splits++;
        if (batch->count > 1) {
            loader->batch_cap = batch->count / 2;
            requeue_batch(loader, batch);
            fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                    "bulk request of %zu actions refused as a whole, sending it in halves: %s",
                    batch->count, reason);
        } else {
            judge(loader, batch->entries[0],
                  format_reason("Elasticsearch refused a bulk request of this action alone: %s",
                                reason));
        }
    } else {
        fts_backoff_reset(&loader->es_backoff);
        loader->es_retry_at = 0;
        if (loader->batch_cap < loader->options.bulk_max_actions) {
            loader->batch_cap *= 2;
            if (loader->batch_cap > loader->options.bulk_max_actions) {
                loader->batch_cap = loader->options.bulk_max_actions;
            }
        }
        size_t kinds[FTS_BULK_KIND_COUNT] = {0};
        const char *first_reason[FTS_BULK_KIND_COUNT] = {0};
        for (size_t i = 0; i < batch->count; i++) {
            entry_t *e = batch->entries[i];
            const fts_bulk_item_result_t *result = &batch->results[i];
            kinds[result->kind]++;
            if (!first_reason[result->kind]) {
                first_reason[result->kind] = result->reason;
            }
            switch (result->verdict) {
            case FTS_BULK_ITEM_ACK:
                if (result->kind == FTS_BULK_KIND_CONFLICT) {
                    loader->stats.conflicts++;
                    fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_CONFLICT, 1);
                } else if (e->action.op == FTS_ACTION_DELETE) {
                    loader->stats.deleted++;
                    fts_metric_add(FTS_METRIC_ITEMS,
                                   result->kind == FTS_BULK_KIND_NOT_FOUND ? FTS_RESULT_NOT_FOUND
                                                                           : FTS_RESULT_DELETED,
                                   1);
                } else {
                    loader->stats.indexed++;
                    fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_INDEXED, 1);
                }
                judge(loader, e, NULL);
                break;
            case FTS_BULK_ITEM_RETRY:
                loader->stats.item_retries++;
                fts_metric_add(FTS_METRIC_ITEMS, FTS_RESULT_RETRIED, 1);
                e->attempts++;
                e->not_before = now + item_retry_delay(loader, e->attempts);
                make_ready(loader, e, false);
                break;
            case FTS_BULK_ITEM_REJECT:
            default:
                judge(loader, e,
                      format_reason("Elasticsearch rejected the action (HTTP %d): %s",
                                    result->status, result->reason));
                break;
            }
        }
        /* One line per kind of failure per answer; the logger holds back repeats from each
         * call site for a second and reports how many it held. */
        if (kinds[FTS_BULK_KIND_THROTTLED]) {
            fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                    "%zu items throttled (429), retrying them with backoff: %s",
                    kinds[FTS_BULK_KIND_THROTTLED], first_reason[FTS_BULK_KIND_THROTTLED]);
        }
        if (kinds[FTS_BULK_KIND_SERVER_ERROR]) {
            fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                    "%zu items failed on the server (5xx), retrying them with backoff: %s",
                    kinds[FTS_BULK_KIND_SERVER_ERROR], first_reason[FTS_BULK_KIND_SERVER_ERROR]);
        }
        if (kinds[FTS_BULK_KIND_BLOCKED]) {
            fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                    "%zu items refused for now (index missing, blocked or unauthorised), "
                    "retrying them with backoff: %s",
                    kinds[FTS_BULK_KIND_BLOCKED], first_reason[FTS_BULK_KIND_BLOCKED]);
        }
        if (kinds[FTS_BULK_KIND_REJECTED]) {
            fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                    "%zu items rejected by Elasticsearch, dead-lettering them: %s",
                    kinds[FTS_BULK_KIND_REJECTED], first_reason[FTS_BULK_KIND_REJECTED]);
        }
    }
    batch_reset(batch);
    run(loader);
}

void fts_loader_barrier_done(fts_loader_t *loader, bool clear, const fts_error_t *err)
{
    sweep_t *sweep = &loader->sweep;
    sweep->outstanding = false;
    if (loader->finished) {
        return;
    }
    if (loader->stopping || !sweep->entry || sweep->phase != SWEEP_BARRIER ||
        strcmp(sweep->barrier_id, sweep->entry->id) != 0) {
        /* In the last case the answer is about a sweep put back: the running one is asked
         * about now (its next_at has come). */
        run(loader);
        return;
    }
    uint64_t now = now_ms(loader);
    if (err && err->domain != FTS_ERROR_NONE) {
        loader->stats.redis_errors++;
        uint64_t delay = retry_delay_ms(&sweep->backoff);
        sweep->next_at = now + delay;
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "asking whether the entries before %s %s are acknowledged failed, retrying in "
                "%" PRIu64 " ms: %s",
                fts_action_op_name(sweep->entry->action.op), sweep->entry->id, delay, err->message);
    } else if (!clear) {
        sweep->next_at = now + BARRIER_POLL_MS;
    } else {
        fts_backoff_reset(&sweep->backoff);
        sweep->started_at = now;
        sweep->next_progress_at = now + SWEEP_PROGRESS_MS;
        sweep->next_at = now;
        sweep_begin_pass(loader, sweep);
        sweep_log_progress(loader, sweep, "started: every entry before it is acknowledged");
    }
    run(loader);
}

void fts_loader_request_done(fts_loader_t *loader, void *token, long status, const char *body,
                             size_t body_len, const fts_error_t *err)
{
    if (token == &loader->clear_token) {
        return; /* a scroll freed, or not: its keep-alive frees it anyway */
    }
    sweep_t *sweep = token;
    assert(sweep == &loader->sweep);
    sweep->outstanding = false;
    if (loader->finished) {
        return;
    }
    if (loader->stopping || !sweep->entry) {
        run(loader); /* abandoned: the entry stays pending and is swept again later */
        return;
    }
    bool answered = !(err && err->domain != FTS_ERROR_NONE);
    switch (sweep->phase) {
    case SWEEP_REFRESH:
        if (answered && status >= 200 && status <= 299) {
            fts_backoff_reset(&sweep->backoff);
            sweep->phase = SWEEP_SEARCH;
            size_t page_size = loader->options.sweep_page_size ? loader->options.sweep_page_size
                                                               : SWEEP_PAGE_DEFAULT;
            fts_sweep_search_request(&sweep->request, loader->options.target.index, page_size,
                                     loader->options.target.ns_field);
        } else {
            char why[FTS_BULK_REASON_SIZE];
            snprintf(why, sizeof why, "HTTP %ld: %.300s", status,
                     answered && body ? body : (err ? err->message : ""));
            sweep_retry(loader, sweep, "refreshing the index", why);
        }
        break;
    case SWEEP_SEARCH:
    case SWEEP_SCROLL: {
        fts_error_t page_err = {0};
        if (!answered) {
            page_err = *err;
        } else if (fts_sweep_page_parse(status, body, body_len, loader->options.target.ns_field,
                                        &sweep->page, &page_err)) {
            fts_backoff_reset(&sweep->backoff);
            sweep_take_page(loader, sweep);
            break;
        }
        /* A lost or unusable page: the scroll may have moved past it, so only a new scroll
         * is sure to see every document. */
        sweep_restart(loader, sweep, page_err.message);
        break;
    }
    case SWEEP_DELETE:
        if (!answered) {
            sweep_retry(loader, sweep, "a bulk delete", err->message);
        } else {
            sweep_take_deletes(loader, sweep, status, body, body_len);
        }
        break;
    case SWEEP_NONE:
    case SWEEP_BARRIER:
    default:
        assert(false && "a request completed in a phase that sends none");
        break;
    }
    run(loader);
}

void fts_loader_wake(fts_loader_t *loader)
{
    run(loader);
}

const fts_load_stats_t *fts_loader_stats(const fts_loader_t *loader)
{
    return &loader->stats;
}

size_t fts_loader_held(const fts_loader_t *loader)
{
    return loader->held;
}
