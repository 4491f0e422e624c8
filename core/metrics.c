/*
 * metrics.c - the metrics block, its updates, its Prometheus rendering and the health checks
 * over its signals (metrics.h).
 *
 * Invariants kept: every cell is a lock-free 64-bit atomic (checked at compile time), so an
 * update never blocks and a process that dies mid-update leaves no lock held in a block it
 * shares; gauges and the histogram's sum hold a double's bits; counters only grow. The layout
 * is fixed by the families table below; its signature is in the block's header, so a block made
 * by another build is refused instead of misread.
 */
#include "metrics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bson/bson.h>

_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "metrics cells must be lock-free: they are shared across processes");

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

typedef struct {
    const char *name;
    const char *help;
    kind_t kind;
    unsigned roles;
    const char *label;               /* NULL: no label */
    const char *const *label_values; /* NULL-terminated */
} family_t;

static const char *const op_values[] = {"index", "delete", "drop", "sweep", NULL};
static const char *const result_values[] = {"indexed", "deleted",       "conflict", "not_found",
                                            "retried", "dead_lettered", NULL};
static const char *const stage_values[] = {"transform", "load", NULL};
static const char *const outcome_values[] = {"answered", "failed", "split", NULL};
static const char *const lost_values[] = {"state", "stream", "group", NULL};
static const char *const server_values[] = {"redis", "elasticsearch", "mongodb", NULL};
/* permanent_errors{server,reason}: one cell per server and reason above NONE, server-major;
 * rendered with two labels (render_family), these names only count the cells. */
static const char *const server_reason_cells[] = {"redis/auth",
                                                  "redis/api_key",
                                                  "redis/not_elasticsearch",
                                                  "redis/tls",
                                                  "redis/wrong_type",
                                                  "redis/not_replica_set",
                                                  "elasticsearch/auth",
                                                  "elasticsearch/api_key",
                                                  "elasticsearch/not_elasticsearch",
                                                  "elasticsearch/tls",
                                                  "elasticsearch/wrong_type",
                                                  "elasticsearch/not_replica_set",
                                                  "mongodb/auth",
                                                  "mongodb/api_key",
                                                  "mongodb/not_elasticsearch",
                                                  "mongodb/tls",
                                                  "mongodb/wrong_type",
                                                  "mongodb/not_replica_set",
                                                  NULL};
static const char *const reason_names[FTS_PERMANENT_COUNT] = {
    "none", "auth", "api_key", "not_elasticsearch", "tls", "wrong_type", "not_replica_set"};
/* The signal of each server (fts_permanent_signal). */
static const fts_signal_t permanent_signals[FTS_SERVER_COUNT] = {
    FTS_SIGNAL_PERMANENT_REDIS, FTS_SIGNAL_PERMANENT_ES, FTS_SIGNAL_PERMANENT_MONGO};
_Static_assert(sizeof server_reason_cells / sizeof server_reason_cells[0] - 1 ==
                   FTS_SERVER_COUNT * (FTS_PERMANENT_COUNT - 1),
               "a permanent_errors cell per server and reason");

/* Upper bounds of the bulk duration buckets, seconds (+Inf is implied). */
static const double bulk_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1,     2.5,  5,     10,   30,  60};
#define BULK_BUCKETS (sizeof bulk_buckets / sizeof bulk_buckets[0])

static const family_t families[FTS_METRIC_COUNT] = {
    [FTS_METRIC_BUILD_INFO] = {"ftsync_build_info", "The ftsync version running (always 1).",
                               KIND_GAUGE, FTS_METRICS_ROLE_ALL, NULL, NULL},
    [FTS_METRIC_EVENTS_READ] = {"ftsync_events_read_total",
                                "Change events read from the MongoDB change stream.", KIND_COUNTER,
                                FTS_METRICS_ROLE_EXTRACT, NULL, NULL},
    [FTS_METRIC_SNAPSHOT_DOCUMENTS] = {"ftsync_snapshot_documents_read_total",
                                       "Documents read from the collection by snapshots.",
                                       KIND_COUNTER, FTS_METRICS_ROLE_EXTRACT, NULL, NULL},
    [FTS_METRIC_ACTIONS_QUEUED] = {"ftsync_actions_queued_total",
                                   "Actions appended to the Redis stream, by operation.",
                                   KIND_COUNTER, FTS_METRICS_ROLE_EXTRACT, "op", op_values},
    [FTS_METRIC_ITEMS] = {"ftsync_items_total",
                          "Bulk items by result: indexed, deleted, conflict (a newer version was "
                          "there), not_found (deleted already), retried, dead_lettered.",
                          KIND_COUNTER, FTS_METRICS_ROLE_LOAD, "result", result_values},
    [FTS_METRIC_DEAD_LETTERS] = {"ftsync_dead_letters_total",
                                 "Entries written to the dead-letter stream, by stage.",
                                 KIND_COUNTER, FTS_METRICS_ROLE_ALL, "stage", stage_values},
    [FTS_METRIC_BULK_REQUESTS] = {"ftsync_bulk_requests_total",
                                  "Bulk requests by outcome: answered (a verdict per item), "
                                  "failed (no usable answer, retried whole), split.",
                                  KIND_COUNTER, FTS_METRICS_ROLE_LOAD, "outcome", outcome_values},
    [FTS_METRIC_BULK_DURATION] = {"ftsync_bulk_duration_seconds",
                                  "Time from sending a bulk request to its answer or failure.",
                                  KIND_HISTOGRAM, FTS_METRICS_ROLE_LOAD, NULL, NULL},
    [FTS_METRIC_REPLICATION_LAG] = {"ftsync_replication_lag_seconds",
                                    "Now minus the cluster time of the last acknowledged "
                                    "action while the loader holds entries; 0 when caught up.",
                                    KIND_GAUGE, FTS_METRICS_ROLE_LOAD, NULL, NULL},
    [FTS_METRIC_BACKLOG] = {"ftsync_backlog_entries",
                            "Stream entries the loaders have not acknowledged yet.", KIND_GAUGE,
                            FTS_METRICS_ROLE_EXTRACT, NULL, NULL},
    [FTS_METRIC_PENDING] = {"ftsync_pending_entries",
                            "Entries this loader holds: read, not yet acknowledged.", KIND_GAUGE,
                            FTS_METRICS_ROLE_LOAD, NULL, NULL},
    [FTS_METRIC_WORKER_RESTARTS] = {"ftsync_worker_restarts_total",
                                    "Restarts of the transform worker after it ended.",
                                    KIND_COUNTER, FTS_METRICS_ROLE_EXTRACT, NULL, NULL},
    [FTS_METRIC_HISTORY_LOST] = {"ftsync_history_lost_total",
                                 "Times the saved position was no longer in the oplog.",
                                 KIND_COUNTER, FTS_METRICS_ROLE_EXTRACT, NULL, NULL},
    [FTS_METRIC_LEASE_HELD] = {"ftsync_lease_held",
                               "1 while this extractor holds the lease (is active), else 0.",
                               KIND_GAUGE, FTS_METRICS_ROLE_EXTRACT, NULL, NULL},
    [FTS_METRIC_DATA_LOST] = {"ftsync_queue_data_lost_total",
                              "Times Redis was found to have lost ftsync's data (FLUSHALL, a "
                              "restart without persistence), by what: state, stream, group. "
                              "Each was repaired by a resync.",
                              KIND_COUNTER, FTS_METRICS_ROLE_ALL, "what", lost_values},
    [FTS_METRIC_PERMANENT_ERRORS] = {"ftsync_permanent_errors_total",
                                     "Failures that need an operator (retried until fixed), by "
                                     "server and reason: auth, api_key, not_elasticsearch, tls, "
                                     "wrong_type, not_replica_set.",
                                     KIND_COUNTER, FTS_METRICS_ROLE_ALL, "server",
                                     server_reason_cells},
    [FTS_METRIC_PERMANENT_ERROR] = {"ftsync_permanent_error",
                                    "1 while the server's last failure needs an operator (until "
                                    "it answers properly), else 0.",
                                    KIND_GAUGE, FTS_METRICS_ROLE_ALL, "server", server_values},
    [FTS_METRIC_DELETES_NOT_INDEXED] = {"ftsync_deletes_not_indexed_total",
                                        "Deletes (FTSYNC_ID_FIELD other than _id) of documents "
                                        "the id map does not know, deleted after a snapshot "
                                        "began and before its scan reached them: never indexed "
                                        "by it, nothing to delete; its sweep removes older "
                                        "copies.",
                                        KIND_COUNTER, FTS_METRICS_ROLE_EXTRACT, NULL, NULL},
};

/* Cells a family takes: one per label value; a histogram's buckets, the one above the last
 * bound, and the sum (its count is the sum of its buckets). */
#define HISTOGRAM_SUM (BULK_BUCKETS + 1)
static size_t family_cells(const family_t *family)
{
    if (family->kind == KIND_HISTOGRAM) {
        return BULK_BUCKETS + 2;
    }
    size_t count = 0;
    if (!family->label_values) {
        return 1;
    }
    while (family->label_values[count]) {
        count++;
    }
    return count;
}

static size_t family_base(fts_metric_t family)
{
    size_t base = 0;
    for (size_t i = 0; i < (size_t)family; i++) {
        base += family_cells(&families[i]);
    }
    return base;
}

#define METRIC_CELLS 96 /* room for the table above (checked in fts_metrics_new) */
#define VERSION_SIZE 64
#define MAGIC        0x6674736d65747231ull /* "ftsmetr1" */

struct fts_metrics {
    /* The shared part: the mapping. */
    struct block {
        uint64_t magic;
        uint64_t signature; /* the layout: cells and signals */
        char version[VERSION_SIZE];
        _Atomic uint64_t cells[METRIC_CELLS];
        _Atomic uint64_t signals[FTS_SIGNAL_COUNT];
    } * block;
    int fd; /* -1: anonymous */
};

static fts_metrics_t *installed;

unsigned fts_permanent_label(fts_server_t server, fts_permanent_reason_t reason)
{
    assert(server < FTS_SERVER_COUNT && reason > FTS_PERMANENT_NONE &&
           reason < FTS_PERMANENT_COUNT);
    return (unsigned)server * (FTS_PERMANENT_COUNT - 1) + (unsigned)reason - 1;
}

const char *fts_permanent_reason_name(fts_permanent_reason_t reason)
{
    assert(reason < FTS_PERMANENT_COUNT);
    return reason_names[reason];
}

const char *fts_server_name(fts_server_t server)
{
    assert(server < FTS_SERVER_COUNT);
    return server_values[server];
}

fts_signal_t fts_permanent_signal(fts_server_t server)
{
    assert(server < FTS_SERVER_COUNT);
    return permanent_signals[server];
}

static uint64_t layout_signature(void)
{
    return ((uint64_t)family_base(FTS_METRIC_COUNT) << 32) | ((uint64_t)FTS_SIGNAL_COUNT << 16) |
           (uint64_t)sizeof(struct block);
}

static fts_metrics_t *wrap(struct block *block, int fd)
{
    fts_metrics_t *metrics = bson_malloc0(sizeof *metrics);
    metrics->block = block;
    metrics->fd = fd;
    return metrics;
}

static void block_init(struct block *block, const char *version)
{
    assert(family_base(FTS_METRIC_COUNT) <= METRIC_CELLS);
    memset(block, 0, sizeof *block);
    block->magic = MAGIC;
    block->signature = layout_signature();
    snprintf(block->version, sizeof block->version, "%s", version ? version : "unknown");
}

fts_metrics_t *fts_metrics_new(const char *version)
{
    void *memory =
        mmap(NULL, sizeof(struct block), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        fts_fatal_oom("the shared metrics block");
    }
    block_init(memory, version);
    return wrap(memory, -1);
}

fts_metrics_t *fts_metrics_new_fd(const char *version, int *fd, fts_error_t *err)
{
    int made = memfd_create("ftsync-metrics", 0); /* no CLOEXEC: children adopt it */
    if (made < 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "memfd_create: %s", strerror(errno));
        return NULL;
    }
    if (ftruncate(made, (off_t)sizeof(struct block)) != 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "ftruncate of the metrics block: %s",
                      strerror(errno));
        close(made);
        return NULL;
    }
    void *memory = mmap(NULL, sizeof(struct block), PROT_READ | PROT_WRITE, MAP_SHARED, made, 0);
    if (memory == MAP_FAILED) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "mmap of the metrics block: %s",
                      strerror(errno));
        close(made);
        return NULL;
    }
    block_init(memory, version);
    *fd = made;
    return wrap(memory, made);
}

fts_metrics_t *fts_metrics_adopt_fd(int fd, fts_error_t *err)
{
    off_t size = lseek(fd, 0, SEEK_END);
    if (size != (off_t)sizeof(struct block)) {
        fts_error_set(err, FTS_ERROR_SYSTEM, EINVAL,
                      "the metrics block given by ftsync run (fd %d) has another size: a "
                      "different build?",
                      fd);
        return NULL;
    }
    void *memory = mmap(NULL, sizeof(struct block), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (memory == MAP_FAILED) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "mmap of the metrics block (fd %d): %s", fd,
                      strerror(errno));
        return NULL;
    }
    struct block *block = memory;
    if (block->magic != MAGIC || block->signature != layout_signature()) {
        munmap(memory, sizeof(struct block));
        fts_error_set(err, FTS_ERROR_SYSTEM, EINVAL,
                      "the metrics block given by ftsync run has another layout: a different "
                      "build?");
        return NULL;
    }
    return wrap(block, fd);
}

void fts_metrics_destroy(fts_metrics_t *metrics)
{
    if (!metrics) {
        return;
    }
    if (installed == metrics) {
        installed = NULL;
    }
    munmap(metrics->block, sizeof(struct block));
    if (metrics->fd >= 0) {
        close(metrics->fd);
    }
    bson_free(metrics);
}

void fts_metrics_install(fts_metrics_t *metrics)
{
    installed = metrics;
}

fts_metrics_t *fts_metrics_installed(void)
{
    return installed;
}

/* ---------------------------------------------------------------------------------------- */
/* Updates                                                                                  */

static _Atomic uint64_t *cell(const fts_metrics_t *metrics, fts_metric_t family, unsigned label)
{
    assert((size_t)family < FTS_METRIC_COUNT);
    assert(label < family_cells(&families[family]));
    return &metrics->block->cells[family_base(family) + label];
}

static uint64_t double_bits(double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static double bits_double(uint64_t bits)
{
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

void fts_metric_add(fts_metric_t family, unsigned label, uint64_t n)
{
    if (installed) {
        assert(families[family].kind == KIND_COUNTER);
        atomic_fetch_add(cell(installed, family, label), n);
    }
}

void fts_metric_set(fts_metric_t family, unsigned label, double value)
{
    if (installed) {
        assert(families[family].kind == KIND_GAUGE);
        atomic_store(cell(installed, family, label), double_bits(value));
    }
}

void fts_metric_observe(fts_metric_t family, double value)
{
    if (!installed) {
        return;
    }
    assert(families[family].kind == KIND_HISTOGRAM);
    size_t bucket = 0;
    while (bucket < BULK_BUCKETS && value > bulk_buckets[bucket]) {
        bucket++;
    }
    /* Buckets are stored per interval (bucket BULK_BUCKETS is above the last bound) and made
     * cumulative when rendered, so one observation is one increment. */
    atomic_fetch_add(cell(installed, family, (unsigned)bucket), 1);
    _Atomic uint64_t *sum = cell(installed, family, HISTOGRAM_SUM);
    uint64_t old = atomic_load(sum);
    while (!atomic_compare_exchange_weak(sum, &old, double_bits(bits_double(old) + value))) {
    }
}

void fts_signal_set(fts_signal_t signal, uint64_t value)
{
    if (installed) {
        fts_metrics_signal_set(installed, signal, value);
    }
}

void fts_signal_raise(fts_signal_t signal, uint64_t value)
{
    if (!installed) {
        return;
    }
    _Atomic uint64_t *target = &installed->block->signals[signal];
    uint64_t old = atomic_load(target);
    while (old < value && !atomic_compare_exchange_weak(target, &old, value)) {
    }
}

void fts_signal_set_if_zero(fts_signal_t signal, uint64_t value)
{
    if (installed) {
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&installed->block->signals[signal], &zero, value);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Reads                                                                                    */

uint64_t fts_metrics_counter(const fts_metrics_t *metrics, fts_metric_t family, unsigned label)
{
    return atomic_load(cell(metrics, family, label));
}

double fts_metrics_gauge(const fts_metrics_t *metrics, fts_metric_t family, unsigned label)
{
    return bits_double(atomic_load(cell(metrics, family, label)));
}

uint64_t fts_metrics_signal(const fts_metrics_t *metrics, fts_signal_t signal)
{
    assert((size_t)signal < FTS_SIGNAL_COUNT);
    return atomic_load(&metrics->block->signals[signal]);
}

void fts_metrics_signal_set(fts_metrics_t *metrics, fts_signal_t signal, uint64_t value)
{
    assert((size_t)signal < FTS_SIGNAL_COUNT);
    atomic_store(&metrics->block->signals[signal], value);
}

/* ---------------------------------------------------------------------------------------- */
/* Rendering                                                                                */

/* A sample value as Prometheus reads it (Go's ParseFloat): NaN, +Inf, -Inf, or a number. */
static void append_double(fts_buffer_t *out, double value)
{
    if (isnan(value)) {
        fts_buffer_append_str(out, "NaN");
    } else if (isinf(value)) {
        fts_buffer_append_str(out, value > 0 ? "+Inf" : "-Inf");
    } else {
        /* The shortest of 15-17 digits that reads back as the same double: 0.005, not
         * 0.0050000000000000001. */
        char text[32];
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(text, sizeof text, "%.*g", digits, value);
            if (strtod(text, NULL) == value) {
                break;
            }
        }
        fts_buffer_append_str(out, text);
    }
}

/* A label value, escaped as the format requires (backslash, quote, newline). */
static void append_label_value(fts_buffer_t *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"') {
            fts_buffer_append_char(out, '\\');
            fts_buffer_append_char(out, *p);
        } else if (*p == '\n') {
            fts_buffer_append_str(out, "\\n");
        } else {
            fts_buffer_append_char(out, *p);
        }
    }
}

static double lag_seconds(const fts_metrics_t *metrics, uint64_t wall_now_ms)
{
    double held = fts_metrics_gauge(metrics, FTS_METRIC_PENDING, 0);
    uint64_t last_ack = fts_metrics_signal(metrics, FTS_SIGNAL_LAST_ACK_TS_WALL_MS);
    if (held <= 0 || last_ack == 0 || last_ack >= wall_now_ms) {
        return 0;
    }
    return (double)(wall_now_ms - last_ack) / 1000.0;
}

static void render_family(const fts_metrics_t *metrics, fts_metric_t id, uint64_t wall_now_ms,
                          fts_buffer_t *out)
{
    const family_t *family = &families[id];
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    fts_buffer_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", family->name, family->help,
                       family->name, type_names[family->kind]);
    if (id == FTS_METRIC_BUILD_INFO) {
        fts_buffer_appendf(out, "%s{version=\"", family->name);
        append_label_value(out, metrics->block->version);
        fts_buffer_append_str(out, "\"} 1\n");
        return;
    }
    if (id == FTS_METRIC_REPLICATION_LAG) {
        fts_buffer_appendf(out, "%s ", family->name);
        append_double(out, lag_seconds(metrics, wall_now_ms));
        fts_buffer_append_char(out, '\n');
        return;
    }
    if (id == FTS_METRIC_PERMANENT_ERRORS) {
        for (unsigned server = 0; server < FTS_SERVER_COUNT; server++) {
            for (unsigned reason = 1; reason < FTS_PERMANENT_COUNT; reason++) {
                unsigned label =
                    fts_permanent_label((fts_server_t)server, (fts_permanent_reason_t)reason);
                fts_buffer_appendf(out, "%s{server=\"%s\",reason=\"%s\"} %llu\n", family->name,
                                   server_values[server], reason_names[reason],
                                   (unsigned long long)fts_metrics_counter(metrics, id, label));
            }
        }
        return;
    }
    if (id == FTS_METRIC_PERMANENT_ERROR) {
        /* From the signals, the one truth /readyz reads too. */
        for (unsigned server = 0; server < FTS_SERVER_COUNT; server++) {
            fts_buffer_appendf(out, "%s{server=\"%s\"} %d\n", family->name, server_values[server],
                               fts_metrics_signal(metrics, permanent_signals[server]) ? 1 : 0);
        }
        return;
    }
    if (family->kind == KIND_HISTOGRAM) {
        uint64_t cumulative = 0;
        for (unsigned i = 0; i <= BULK_BUCKETS; i++) {
            cumulative += fts_metrics_counter(metrics, id, i);
            fts_buffer_appendf(out, "%s_bucket{le=\"", family->name);
            if (i < BULK_BUCKETS) {
                append_double(out, bulk_buckets[i]);
            } else {
                fts_buffer_append_str(out, "+Inf");
            }
            fts_buffer_appendf(out, "\"} %llu\n", (unsigned long long)cumulative);
        }
        /* The count is the +Inf bucket's, so the two always agree. */
        fts_buffer_appendf(out, "%s_sum ", family->name);
        append_double(out, bits_double(atomic_load(cell(metrics, id, HISTOGRAM_SUM))));
        fts_buffer_appendf(out, "\n%s_count %llu\n", family->name, (unsigned long long)cumulative);
        return;
    }
    size_t series = family_cells(family);
    for (unsigned i = 0; i < series; i++) {
        fts_buffer_append_str(out, family->name);
        if (family->label) {
            fts_buffer_appendf(out, "{%s=\"", family->label);
            append_label_value(out, family->label_values[i]);
            fts_buffer_append_str(out, "\"}");
        }
        fts_buffer_append_char(out, ' ');
        if (family->kind == KIND_COUNTER) {
            fts_buffer_appendf(out, "%llu\n",
                               (unsigned long long)fts_metrics_counter(metrics, id, i));
        } else {
            append_double(out, fts_metrics_gauge(metrics, id, i));
            fts_buffer_append_char(out, '\n');
        }
    }
}

void fts_metrics_render(const fts_metrics_t *metrics, unsigned roles, uint64_t wall_now_ms,
                        fts_buffer_t *out)
{
    for (size_t i = 0; i < FTS_METRIC_COUNT; i++) {
        if (families[i].roles & roles) {
            render_family(metrics, (fts_metric_t)i, wall_now_ms, out);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Health                                                                                   */

bool fts_health_check(const fts_metrics_t *metrics, unsigned roles, uint64_t now_ms,
                      uint64_t stall_ms, char *reason, size_t reason_size)
{
    if (roles & FTS_METRICS_ROLE_EXTRACT) {
        uint64_t state = fts_metrics_signal(metrics, FTS_SIGNAL_EXTRACT_STATE);
        uint64_t quick_ends = fts_metrics_signal(metrics, FTS_SIGNAL_WORKER_QUICK_ENDS);
        if (quick_ends >= FTS_WORKER_LOOP_ENDS) {
            snprintf(reason, reason_size,
                     "extract: the transform worker is restarting in a loop (%llu ends in a "
                     "row, each soon after its start)",
                     (unsigned long long)quick_ends);
            return false;
        }
        uint64_t last = fts_metrics_signal(metrics, FTS_SIGNAL_EXTRACT_LAST_READ_MS);
        bool paused = fts_metrics_signal(metrics, FTS_SIGNAL_EXTRACT_PAUSED) != 0;
        if (state == FTS_EXTRACT_STATE_ACTIVE && !paused && now_ms > last &&
            now_ms - last > stall_ms) {
            snprintf(reason, reason_size,
                     "extract: MongoDB returned nothing (no event, no post-batch token) for "
                     "%llu ms (FTSYNC_HEALTH_STALL_MS=%llu)",
                     (unsigned long long)(now_ms - last), (unsigned long long)stall_ms);
            return false;
        }
    }
    if (roles & FTS_METRICS_ROLE_LOAD) {
        uint64_t state = fts_metrics_signal(metrics, FTS_SIGNAL_LOAD_STATE);
        uint64_t last = fts_metrics_signal(metrics, FTS_SIGNAL_LOAD_PROGRESS_MS);
        double held = fts_metrics_gauge(metrics, FTS_METRIC_PENDING, 0);
        if (state == FTS_LOAD_STATE_RUNNING && held > 0 && now_ms > last &&
            now_ms - last > stall_ms) {
            snprintf(reason, reason_size,
                     "load: %.0f entries held and none settled for %llu ms "
                     "(FTSYNC_HEALTH_STALL_MS=%llu)",
                     held, (unsigned long long)(now_ms - last), (unsigned long long)stall_ms);
            return false;
        }
    }
    return true;
}

const char *fts_permanent_advice(fts_server_t server, fts_permanent_reason_t reason)
{
    if (server == FTS_SERVER_REDIS) {
        switch (reason) {
        case FTS_PERMANENT_AUTH:
            return "Redis refused the credentials or the user's permissions (fix the user and "
                   "password in FTSYNC_STATE_REDIS_URL / FTSYNC_QUEUE_REDIS_URL, or the user's "
                   "ACL)";
        case FTS_PERMANENT_TLS:
            return "Redis's TLS certificate is refused (fix the Redis URL or the CA)";
        case FTS_PERMANENT_WRONG_TYPE:
            return "a key ftsync uses holds another type of value in Redis (WRONGTYPE: remove "
                   "the key, or give FTSYNC_PIPELINE a name no one else uses)";
        default:
            return "Redis cannot be used as configured (fix FTSYNC_STATE_REDIS_URL / "
                   "FTSYNC_QUEUE_REDIS_URL)";
        }
    }
    if (server == FTS_SERVER_MONGODB) {
        switch (reason) {
        case FTS_PERMANENT_AUTH:
            return "MongoDB refused the credentials or the user's privileges (fix the user and "
                   "password in FTSYNC_MONGO_URI, or the user's roles: changeStream and find on "
                   "the collection)";
        case FTS_PERMANENT_NOT_REPLICA_SET:
            return "MongoDB refuses change streams: it is not a replica set or sharded cluster "
                   "(fix FTSYNC_MONGO_URI, or make the server a replica set)";
        default:
            return "MongoDB cannot be used as configured (fix FTSYNC_MONGO_URI)";
        }
    }
    switch (reason) {
    case FTS_PERMANENT_AUTH:
        return "Elasticsearch refused the credentials (fix the setting FTSYNC_ES_API_KEY or "
               "FTSYNC_ES_USER / FTSYNC_ES_PASSWORD, or their privileges)";
    case FTS_PERMANENT_API_KEY:
        return "Elasticsearch refused the API key's type (fix the setting FTSYNC_ES_API_KEY: a "
               "REST API key, not a cross-cluster one)";
    case FTS_PERMANENT_NOT_ELASTICSEARCH:
        return "the server does not answer as Elasticsearch or OpenSearch (fix the setting "
               "FTSYNC_ES_URL)";
    case FTS_PERMANENT_TLS:
        return "Elasticsearch's TLS certificate is refused (fix the setting FTSYNC_ES_CA_FILE, "
               "or the host name in FTSYNC_ES_URL)";
    default:
        return "Elasticsearch cannot be used as configured";
    }
}

bool fts_ready_check(const fts_metrics_t *metrics, unsigned roles, char *reason, size_t reason_size)
{
    /* First, what needs an operator: it says more than "starting" or "does not answer". Only
     * processes that reach a server set its signal, so this holds for any roles. */
    for (unsigned server = 0; server < FTS_SERVER_COUNT; server++) {
        uint64_t which = fts_metrics_signal(metrics, permanent_signals[server]);
        if (which > FTS_PERMANENT_NONE && which < FTS_PERMANENT_COUNT) {
            snprintf(reason, reason_size, "%s: permanent (%s): %s",
                     roles == FTS_METRICS_ROLE_EXTRACT ? "extract"
                     : roles == FTS_METRICS_ROLE_LOAD  ? "load"
                                                       : "run",
                     reason_names[which],
                     fts_permanent_advice((fts_server_t)server, (fts_permanent_reason_t)which));
            return false;
        }
    }
    if (roles & FTS_METRICS_ROLE_EXTRACT) {
        uint64_t state = fts_metrics_signal(metrics, FTS_SIGNAL_EXTRACT_STATE);
        if (state == FTS_EXTRACT_STATE_NONE || state == FTS_EXTRACT_STATE_STARTING) {
            snprintf(reason, reason_size, "extract: starting");
            return false;
        }
        if (state == FTS_EXTRACT_STATE_ACTIVE) {
            if (!fts_metrics_signal(metrics, FTS_SIGNAL_EXTRACT_REDIS_OK)) {
                snprintf(reason, reason_size, "extract: Redis does not answer");
                return false;
            }
            if (!fts_metrics_signal(metrics, FTS_SIGNAL_MONGO_OK)) {
                snprintf(reason, reason_size, "extract: MongoDB does not answer");
                return false;
            }
        }
    }
    if (roles & FTS_METRICS_ROLE_LOAD) {
        uint64_t state = fts_metrics_signal(metrics, FTS_SIGNAL_LOAD_STATE);
        if (state != FTS_LOAD_STATE_RUNNING) {
            snprintf(reason, reason_size, "load: starting (waiting for Elasticsearch)");
            return false;
        }
        if (!fts_metrics_signal(metrics, FTS_SIGNAL_LOAD_REDIS_OK)) {
            snprintf(reason, reason_size, "load: Redis does not answer");
            return false;
        }
        if (!fts_metrics_signal(metrics, FTS_SIGNAL_ES_OK)) {
            snprintf(reason, reason_size, "load: Elasticsearch gives no usable answer");
            return false;
        }
    }
    return true;
}
