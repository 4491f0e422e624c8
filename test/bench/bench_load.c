/*
 * bench_load.c - how fast `ftsync load` drains the action stream into the search engine, on
 * both engines of the test bed: OpenSearch 2.19 (typeless, deploy/index/apps.json), then
 * Elasticsearch 1.5.2 (type doc, the ES 1.x definition).
 *
 * Starts its own test bed (redis-server and OpenSearch, test/tools/testbed.sh) in a scratch
 * directory; after OpenSearch's runs it stops OpenSearch and adds Elasticsearch 1.5 in its
 * place, so only one engine runs at a time on the 2 cores. It writes the same entries (index
 * actions of Steam-shaped documents, a fifth of them updates of earlier ids) to one stream per
 * run, and times one loader from start until its group has read and acknowledged everything.
 * Runs are compared in one process, on one machine, as ratios: one request in flight against
 * several, one loader against two. It prints
 * figures and fails only when it cannot run or the index does not match the entries (a fast
 * loader that loses data is no result); speed is never asserted (README.md, Benchmarks).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "load_harness.h"
#include "test_time.h"
#include "testbed.h"

#ifndef FTSYNC_BINARY
#error "FTSYNC_BINARY must name the ftsync binary"
#endif
#ifndef FTSYNC_SOURCE_DIR
#error "FTSYNC_SOURCE_DIR must name the source tree"
#endif

#define ENTRIES     40000
#define DRAIN_LIMIT 300000

typedef struct {
    const char *label;
    const char *in_flight;
    const char *max_actions;
    int loaders;
} run_t;

/* One engine of the bench: what FTSYNC_TEST_ENGINE and testbed.sh call it, the key of its
 * URL in testbed.env, and how the figures name it. */
typedef struct {
    const char *name;
    const char *url_key;
    const char *label;
} engine_t;

static const engine_t engines[] = {
    {"opensearch", "FTSYNC_TEST_OPENSEARCH_URL", "OpenSearch 2.19.6, 512 MB heap"},
    {"es1", "FTSYNC_TEST_ES1_URL", "Elasticsearch 1.5.2, 1 GB heap"},
};

/* testbed.sh verb dir [engine] */
static int testbed(const char *verb, const char *dir, const char *engine)
{
    char command[2048];
    snprintf(command, sizeof command, "bash %s/test/tools/testbed.sh %s %s %s >&2",
             FTSYNC_SOURCE_DIR, verb, dir, engine ? engine : "");
    return system(command);
}

static bool read_env(const char *dir, const char *key, char *value, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testbed.env", dir);
    FILE *file = fopen(path, "r");
    if (!file) {
        return false;
    }
    char line[1024];
    size_t key_len = strlen(key);
    bool found = false;
    while (fgets(line, sizeof line, file)) {
        if (strncmp(line, key, key_len) == 0 && line[key_len] == '=') {
            snprintf(value, size, "%s", line + key_len + 1);
            value[strcspn(value, "\n")] = '\0';
            found = true;
        }
    }
    fclose(file);
    return found;
}

/* Writes the entries of one run; the same for every run (same ids, versions, bodies). */
static void write_entries(fts_test_load_t *t)
{
    char id[32];
    char body[512];
    for (unsigned i = 0; i < ENTRIES; i++) {
        unsigned app = i % 5 == 4 ? i / 2 : i; /* a fifth are updates of earlier ids */
        snprintf(id, sizeof id, "%u", app);
        snprintf(body, sizeof body,
                 "{\"name\":\"Game %u of the benchmark\",\"short_description\":\"A short "
                 "description of game %u, long enough to look like the real thing in a search "
                 "index\",\"developers\":\"Studio %u\",\"publishers\":\"Publisher %u\","
                 "\"updated_at\":\"2026-11-24T10:00:00.000Z\"}",
                 app, app, app % 97, app % 13);
        fts_test_load_index(t, id, 1000u + i, body);
    }
}

/* One run on the engine FTSYNC_TEST_ENGINE names (the harness takes the document type from
 * it). */
static bool bench_run(const run_t *run, const char *redis_url, const char *es_url, int number,
                      double *rate)
{
    fts_test_load_t t;
    fts_error_t err = {0};
    char name[64];
    snprintf(name, sizeof name, "bench%d-%s", number, fts_testbed_engine_name());
    if (!fts_test_load_init(&t, FTSYNC_BINARY, fts_testbed_index_definition(), redis_url, es_url,
                            name, &err)) {
        fprintf(stderr, "bench-load: %s\n", err.message);
        return false;
    }
    bool ok = false;
    fts_test_load_set(&t, "FTSYNC_BULK_MAX_IN_FLIGHT", run->in_flight);
    fts_test_load_set(&t, "FTSYNC_BULK_MAX_ACTIONS", run->max_actions);
    fts_test_load_set(&t, "FTSYNC_LOG_LEVEL", "warn");
    write_entries(&t);
    if (!fts_test_load_flush(&t, &err)) {
        fprintf(stderr, "bench-load: writing entries: %s\n", err.message);
        goto cleanup;
    }
    uint64_t started = fts_clock_monotonic_ms();
    for (int i = 0; i < run->loaders; i++) {
        char consumer[96];
        snprintf(consumer, sizeof consumer, "%s-%d", name, i);
        if (!fts_test_load_start_loader(&t, consumer, &err)) {
            fprintf(stderr, "bench-load: %s\n", err.message);
            goto cleanup;
        }
    }
    if (!fts_test_load_wait_drained(&t, DRAIN_LIMIT, &err)) {
        fprintf(stderr, "bench-load: %s\n", err.message);
        fts_test_load_print_logs(&t, 20);
        goto cleanup;
    }
    uint64_t elapsed = fts_clock_monotonic_ms() - started;
    /* Counted only if it is right: every document as the entries left it. */
    if (fts_test_load_check_index(&t, run->label) != 0) {
        fprintf(stderr, "bench-load: the index does not match the entries (%s)\n", run->label);
        goto cleanup;
    }
    *rate = elapsed ? ENTRIES * 1000.0 / (double)elapsed : 0;
    printf("bench-load: %-10s %-34s entries=%d elapsed_ms=%" PRIu64 " entries_per_s=%.0f\n",
           fts_testbed_engine_name(), run->label, ENTRIES, elapsed, *rate);
    ok = true;
cleanup:
    fts_test_load_cleanup(&t);
    return ok;
}

static const run_t runs[] = {
    {"1 loader, 1 request in flight", "1", "1000", 1},
    {"1 loader, 4 requests in flight", "4", "1000", 1},
    {"1 loader, 4 in flight, 250 actions", "4", "250", 1},
    {"2 loaders, 2 in flight each", "2", "1000", 2},
};
#define RUN_COUNT (sizeof runs / sizeof runs[0])

/* Every run on one engine, then its ratios. False when a run failed (printed). */
static bool bench_engine(const engine_t *engine, const char *dir, const char *redis_url)
{
    char es_url[256];
    if (!read_env(dir, engine->url_key, es_url, sizeof es_url)) {
        fprintf(stderr, "bench-load: no %s in %s/testbed.env\n", engine->url_key, dir);
        return false;
    }
    setenv("FTSYNC_TEST_ENGINE", engine->name, 1);
    double rates[RUN_COUNT];
    for (size_t i = 0; i < RUN_COUNT; i++) {
        if (!bench_run(&runs[i], redis_url, es_url, (int)i, &rates[i])) {
            return false;
        }
    }
    printf("bench-load: %-10s ratio 4 in flight / 1 in flight = %.2f\n", engine->name,
           rates[0] > 0 ? rates[1] / rates[0] : 0);
    printf("bench-load: %-10s ratio 2 loaders / 1 loader (4 in flight) = %.2f\n", engine->name,
           rates[1] > 0 ? rates[3] / rates[1] : 0);
    printf("bench-load: %-10s (one %s node on this machine; these figures compare settings, "
           "they are no production estimate)\n",
           engine->name, engine->label);
    return true;
}

int main(void)
{
    char dir[] = "/tmp/ftsync-bench-load-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench-load: mkdtemp");
        return 1;
    }
    if (testbed("start", dir, engines[0].name) != 0) {
        fprintf(stderr, "bench-load: the test bed did not start (logs under %s)\n", dir);
        return 1;
    }
    int status = 1;
    char redis_url[256];
    if (!read_env(dir, "FTSYNC_TEST_REDIS_URL", redis_url, sizeof redis_url)) {
        fprintf(stderr, "bench-load: no testbed.env in %s\n", dir);
        goto cleanup;
    }
    for (size_t e = 0; e < sizeof engines / sizeof engines[0]; e++) {
        if (e > 0) {
            /* One engine at a time: the previous one leaves the cores to the next. */
            if (testbed("engine-stop", dir, engines[e - 1].name) != 0 ||
                testbed("engine-start", dir, engines[e].name) != 0) {
                fprintf(stderr, "bench-load: %s did not start (logs under %s)\n", engines[e].name,
                        dir);
                goto cleanup;
            }
        }
        if (!bench_engine(&engines[e], dir, redis_url)) {
            goto cleanup;
        }
    }
    status = 0;
cleanup:
    testbed("stop", dir, NULL);
    return status;
}
