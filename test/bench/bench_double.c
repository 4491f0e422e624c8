/*
 * bench_double.c - bench-double: how fast is the MongoDB replica-set double (test/double/)?
 *
 * The double must never be what a benchmark of ftsync measures, so issue 3 sets two floors on
 * this 2-core machine: 50,000 change events per second delivered to one change stream, and
 * 20,000 single-document inserts per second from one client. This program measures both
 * through the real libmongoc and prints them next to their targets:
 *
 *   double change events/s: 123456 (target 50000)
 *   double single inserts/s: 34567 (target 20000)
 *
 * Events: one watcher thread (its own client) opens a change stream on an empty collection,
 * then one writer inserts --events documents in insert_many batches of --batch; the rate is
 * counted from the first event the watcher receives to the last, so it is the delivery rate,
 * not the time to set things up. Inserts: one client, --inserts mongoc_collection_insert_one
 * calls of a small document, timed end to end.
 *
 * The figures are measured, never asserted (these machines are noisy): the exit status is 0
 * whenever the benchmark ran, 1 when it could not (the double did not start, a write failed,
 * events went missing or stopped coming for 30 s), 2 on bad usage. With FTSYNC_TEST_MONGO_URI
 * set it measures that deployment instead and says so.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mongoc/mongoc.h>

#include "mongo_double.h"

/* Targets from issue 3, printed beside the figures. */
#define TARGET_EVENTS_PER_S  50000
#define TARGET_INSERTS_PER_S 20000
/* The watcher gives up when no event arrived for this long. */
#define STALL_TIMEOUT_S 30.0

typedef struct {
    long events;
    long batch;
    long inserts;
    long batch_size; /* change stream batchSize; 0: the server's default */
} options_t;

typedef struct {
    const char *uri;
    const char *db;
    long expected;
    long batch_size;
    /* Set by the watcher. */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool ready;  /* the stream is open: the writer may start */
    bool failed; /* message says why */
    char message[1024];
    long received;
    double first_event_s;
    double last_event_s;
} watch_job_t;

static double now_s(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void watcher_signal(watch_job_t *job, bool failed, const char *message)
{
    pthread_mutex_lock(&job->lock);
    job->ready = true;
    if (failed) {
        job->failed = true;
        snprintf(job->message, sizeof job->message, "%s", message);
    }
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
}

static void *watch_events(void *arg)
{
    watch_job_t *job = arg;
    char message[1024];
    mongoc_client_t *client = mongoc_client_new(job->uri);
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, job->db, "events");
    bson_t pipeline = BSON_INITIALIZER;
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_INT32(&opts, "maxAwaitTimeMS", 1000);
    if (job->batch_size > 0) {
        BSON_APPEND_INT32(&opts, "batchSize", (int32_t)job->batch_size);
    }
    mongoc_change_stream_t *stream = mongoc_collection_watch(coll, &pipeline, &opts);
    bson_error_t error;
    const bson_t *reply;
    if (mongoc_change_stream_error_document(stream, &error, &reply)) {
        snprintf(message, sizeof message, "opening the change stream failed: %s", error.message);
        watcher_signal(job, true, message);
        goto cleanup;
    }
    watcher_signal(job, false, NULL);

    double last_progress = now_s();
    long received = 0;
    while (received < job->expected) {
        const bson_t *event;
        if (mongoc_change_stream_next(stream, &event)) {
            double now = now_s();
            if (received == 0) {
                job->first_event_s = now;
            }
            received++;
            job->last_event_s = now;
            last_progress = now;
            continue;
        }
        if (mongoc_change_stream_error_document(stream, &error, &reply)) {
            snprintf(message, sizeof message, "the change stream failed after %ld events: %s",
                     received, error.message);
            watcher_signal(job, true, message);
            break;
        }
        if (now_s() - last_progress > STALL_TIMEOUT_S) {
            snprintf(message, sizeof message, "no change event for %.0f s after %ld of %ld events",
                     STALL_TIMEOUT_S, received, job->expected);
            watcher_signal(job, true, message);
            break;
        }
    }
    job->received = received;

cleanup:
    mongoc_change_stream_destroy(stream);
    bson_destroy(&pipeline);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    return NULL;
}

/* Inserts `count` documents in batches; false with a message on failure. */
static bool write_events(const char *uri, const char *db, long count, long batch, double *took_s)
{
    bool ok = false;
    mongoc_client_t *client = mongoc_client_new(uri);
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, "events");
    bson_t *docs = bson_malloc0((size_t)batch * sizeof *docs);
    const bson_t **pointers = bson_malloc0((size_t)batch * sizeof *pointers);
    double start = now_s();
    for (long written = 0; written < count;) {
        long n = count - written < batch ? count - written : batch;
        for (long i = 0; i < n; i++) {
            bson_init(&docs[i]);
            BSON_APPEND_INT64(&docs[i], "_id", written + i);
            BSON_APPEND_UTF8(&docs[i], "name", "Bench Application Ünïcødé 東方");
            BSON_APPEND_INT32(&docs[i], "price", (int32_t)((written + i) % 5000));
            pointers[i] = &docs[i];
        }
        bson_error_t error;
        bool inserted =
            mongoc_collection_insert_many(coll, pointers, (size_t)n, NULL, NULL, &error);
        for (long i = 0; i < n; i++) {
            bson_destroy(&docs[i]);
        }
        if (!inserted) {
            fprintf(stderr, "bench-double: insert_many after %ld documents failed: %s\n", written,
                    error.message);
            goto cleanup;
        }
        written += n;
    }
    *took_s = now_s() - start;
    ok = true;

cleanup:
    bson_free(docs);
    bson_free(pointers);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    return ok;
}

static bool measure_events(const char *uri, const char *db, const options_t *opts)
{
    watch_job_t job = {
        .uri = uri, .db = db, .expected = opts->events, .batch_size = opts->batch_size};
    pthread_mutex_init(&job.lock, NULL);
    pthread_cond_init(&job.changed, NULL);
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch_events, &job) != 0) {
        fprintf(stderr, "bench-double: cannot start the watcher thread\n");
        return false;
    }
    pthread_mutex_lock(&job.lock);
    while (!job.ready) {
        pthread_cond_wait(&job.changed, &job.lock);
    }
    bool failed = job.failed;
    pthread_mutex_unlock(&job.lock);
    double write_s = 0;
    bool written = !failed && write_events(uri, db, opts->events, opts->batch, &write_s);
    pthread_join(watcher, NULL);
    pthread_mutex_destroy(&job.lock);
    pthread_cond_destroy(&job.changed);
    if (job.failed) {
        fprintf(stderr, "bench-double: %s\n", job.message);
        return false;
    }
    if (!written) {
        return false;
    }
    if (job.received != opts->events) {
        fprintf(stderr, "bench-double: %ld of %ld change events arrived\n", job.received,
                opts->events);
        return false;
    }
    double span = job.last_event_s - job.first_event_s;
    double rate = span > 0 ? (double)(job.received - 1) / span : 0;
    printf("double change events/s: %.0f (target %d)\n", rate, TARGET_EVENTS_PER_S);
    printf("  (%ld events in %.3f s from first to last; the writer's insert_many batches of %ld "
           "took %.3f s)\n",
           job.received, span, opts->batch, write_s);
    return true;
}

static bool measure_single_inserts(const char *uri, const char *db, const options_t *opts)
{
    bool ok = false;
    mongoc_client_t *client = mongoc_client_new(uri);
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, "single");
    bson_error_t error;
    /* Connect and discover the primary before the clock starts. */
    bson_t ping = BSON_INITIALIZER;
    BSON_APPEND_INT32(&ping, "ping", 1);
    bool connected = mongoc_client_command_simple(client, "admin", &ping, NULL, NULL, &error);
    bson_destroy(&ping);
    if (!connected) {
        fprintf(stderr, "bench-double: ping failed: %s\n", error.message);
        goto cleanup;
    }
    double start = now_s();
    for (long i = 0; i < opts->inserts; i++) {
        bson_t doc = BSON_INITIALIZER;
        BSON_APPEND_INT64(&doc, "_id", i);
        BSON_APPEND_UTF8(&doc, "name", "Single Insert Ünïcødé");
        BSON_APPEND_INT32(&doc, "n", (int32_t)i);
        bool inserted = mongoc_collection_insert_one(coll, &doc, NULL, NULL, &error);
        bson_destroy(&doc);
        if (!inserted) {
            fprintf(stderr, "bench-double: insert_one %ld failed: %s\n", i, error.message);
            goto cleanup;
        }
    }
    double took = now_s() - start;
    printf("double single inserts/s: %.0f (target %d)\n",
           took > 0 ? (double)opts->inserts / took : 0, TARGET_INSERTS_PER_S);
    printf("  (%ld insert_one calls in %.3f s)\n", opts->inserts, took);
    ok = true;

cleanup:
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    return ok;
}

static bool parse_positive(const char *text, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || !end || *end || value <= 0) {
        return false;
    }
    *out = value;
    return true;
}

static int parse_options(int argc, char **argv, options_t *opts)
{
    static const struct option long_options[] = {
        {"events", required_argument, NULL, 'e'},  {"batch", required_argument, NULL, 'b'},
        {"inserts", required_argument, NULL, 'i'}, {"batch-size", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    *opts = (options_t){.events = 200000, .batch = 1000, .inserts = 50000, .batch_size = 0};
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        long *target = option == 'e'   ? &opts->events
                       : option == 'b' ? &opts->batch
                       : option == 'i' ? &opts->inserts
                       : option == 's' ? &opts->batch_size
                                       : NULL;
        if (target) {
            if (!parse_positive(optarg, target)) {
                fprintf(stderr, "bench-double: \"%s\" is not a positive number\n", optarg);
                return 2;
            }
            continue;
        }
        FILE *out = option == 'h' ? stdout : stderr;
        fprintf(out, "usage: bench-double [--events N (200000)] [--batch N (1000)] "
                     "[--inserts N (50000)] [--batch-size N (server default)]\n");
        return option == 'h' ? 0 : 2;
    }
    if (optind < argc) {
        fprintf(stderr, "bench-double: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    options_t opts;
    int status = parse_options(argc, argv, &opts);
    if (status >= 0) {
        return status;
    }
    status = 1;
    mongoc_init();
    /* A history large enough that a watcher a little behind the writer never loses its place:
     * the benchmark measures speed, not the bounded history. */
    char history_events[32];
    snprintf(history_events, sizeof history_events, "%ld", opts.events * 2 + 1000);
    const char *const args[] = {"--history-events", history_events, "--history-bytes", "1073741824",
                                NULL};
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_mongo_double_t *server = fts_test_mongo_double_start(args, &err);
    if (!server) {
        fprintf(stderr, "bench-double: cannot start the MongoDB double: %s\n", err.message);
        goto cleanup;
    }
    if (fts_test_mongo_double_is_external(server)) {
        printf("note: FTSYNC_TEST_MONGO_URI is set: measuring that deployment, not the double\n");
    }
    char db[96];
    fts_test_mongo_unique_name("bench", db, sizeof db);
    const char *uri = fts_test_mongo_double_uri(server);
    if (!measure_events(uri, db, &opts) || !measure_single_inserts(uri, db, &opts)) {
        fts_test_mongo_double_print_log_tail(server, 30);
        goto cleanup;
    }
    if (fts_test_mongo_double_is_external(server)) {
        mongoc_client_t *client = mongoc_client_new(uri);
        mongoc_database_t *database = mongoc_client_get_database(client, db);
        mongoc_database_drop(database, NULL);
        mongoc_database_destroy(database);
        mongoc_client_destroy(client);
    }
    if (!fts_test_mongo_double_stop(server, &err)) {
        fprintf(stderr, "bench-double: the double did not stop cleanly: %s\n", err.message);
        goto cleanup;
    }
    status = 0;

cleanup:
    fts_test_mongo_double_destroy(server);
    mongoc_cleanup();
    return status;
}
