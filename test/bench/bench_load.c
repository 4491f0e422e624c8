/*
 * bench_load.c - how fast `ftsync load` drains the action stream into Elasticsearch.
 *
 * Starts its own test bed (redis-server and Elasticsearch 1.5.2, test/tools/testbed.sh) in a
 * scratch directory, writes the same entries (index actions of Steam-shaped documents, a fifth
 * of them updates of earlier ids) to one stream per run, and times one loader from start until
 * its group has read and acknowledged everything. Runs are compared in one process, on one
 * machine, as ratios: one request in flight against several, one loader against two. It prints
 * figures and fails only when it cannot run or the index does not match the entries (a fast
 * loader that loses data is no result); speed is never asserted (README.md, Benchmarks).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "load_harness.h"
#include "test_time.h"

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

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int testbed(const char *verb, const char *dir)
{
    char command[2048];
    snprintf(command, sizeof command, "bash %s/test/tools/testbed.sh %s %s >&2", FTSYNC_SOURCE_DIR,
             verb, dir);
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

static bool bench_run(const run_t *run, const char *redis_url, const char *es_url, int number,
                      double *rate)
{
    fts_test_load_t t;
    fts_error_t err = {0};
    char name[64];
    snprintf(name, sizeof name, "bench%d", number);
    if (!fts_test_load_init(&t, FTSYNC_BINARY,
                            FTSYNC_SOURCE_DIR "/test/fixtures/apps-index-es1.json", redis_url,
                            es_url, name, &err)) {
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
    uint64_t started = now_ms();
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
    uint64_t elapsed = now_ms() - started;
    /* Counted only if it is right: every document as the entries left it. */
    if (fts_test_load_check_index(&t, run->label) != 0) {
        fprintf(stderr, "bench-load: the index does not match the entries (%s)\n", run->label);
        goto cleanup;
    }
    *rate = elapsed ? ENTRIES * 1000.0 / (double)elapsed : 0;
    printf("bench-load: %-34s entries=%d elapsed_ms=%" PRIu64 " entries_per_s=%.0f\n", run->label,
           ENTRIES, elapsed, *rate);
    ok = true;
cleanup:
    fts_test_load_cleanup(&t);
    return ok;
}

int main(void)
{
    char dir[] = "/tmp/ftsync-bench-load-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench-load: mkdtemp");
        return 1;
    }
    if (testbed("start", dir) != 0) {
        fprintf(stderr, "bench-load: the test bed did not start (logs under %s)\n", dir);
        return 1;
    }
    int status = 1;
    char redis_url[256];
    char es_url[256];
    if (!read_env(dir, "FTSYNC_TEST_REDIS_URL", redis_url, sizeof redis_url) ||
        !read_env(dir, "FTSYNC_TEST_ES_URL", es_url, sizeof es_url)) {
        fprintf(stderr, "bench-load: no testbed.env in %s\n", dir);
        goto cleanup;
    }
    static const run_t runs[] = {
        {"1 loader, 1 request in flight", "1", "1000", 1},
        {"1 loader, 4 requests in flight", "4", "1000", 1},
        {"1 loader, 4 in flight, 250 actions", "4", "250", 1},
        {"2 loaders, 2 in flight each", "2", "1000", 2},
    };
    double rates[sizeof runs / sizeof runs[0]];
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        if (!bench_run(&runs[i], redis_url, es_url, (int)i, &rates[i])) {
            goto cleanup;
        }
    }
    printf("bench-load: ratio 4 in flight / 1 in flight = %.2f\n",
           rates[0] > 0 ? rates[1] / rates[0] : 0);
    printf("bench-load: ratio 2 loaders / 1 loader (4 in flight) = %.2f\n",
           rates[1] > 0 ? rates[3] / rates[1] : 0);
    printf("bench-load: (the test bed is one Elasticsearch 1.5.2 node with a 1 GB heap on this "
           "machine; these figures compare settings, they are no production estimate)\n");
    status = 0;
cleanup:
    testbed("stop", dir);
    return status;
}
