/*
 * testbed.c - reading the fixture's testbed.env and the engine choice (see testbed.h).
 *
 * The file is read once, on first use, and kept for the life of the process: the fixtures
 * write it before any test starts and do not change what a running test reads (engine-start
 * only adds lines of another engine).
 */
#include "testbed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

/* testbed.env holds a handful of lines; more are ignored. */
#define MAX_ENTRIES 32

static struct {
    char *keys[MAX_ENTRIES];
    char *values[MAX_ENTRIES];
    size_t count;
    int loaded;
} cache;

const char *fts_testbed_dir(void)
{
    const char *dir = getenv("FTSYNC_TESTBED_DIR");
    return dir && *dir ? dir : "/tmp";
}

static void load_file(void)
{
    cache.loaded = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/testbed.env", fts_testbed_dir());
    FILE *file = fopen(path, "r");
    if (!file) {
        return;
    }
    char line[4096];
    while (cache.count < MAX_ENTRIES && fgets(line, sizeof line, file)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *equals = strchr(line, '=');
        if (!equals || line[0] == '#') {
            continue;
        }
        *equals = '\0';
        cache.keys[cache.count] = bson_strdup(line);
        cache.values[cache.count] = bson_strdup(equals + 1);
        cache.count++;
    }
    fclose(file);
}

const char *fts_testbed_get(const char *key)
{
    const char *from_environment = getenv(key);
    if (from_environment && *from_environment) {
        return from_environment;
    }
    if (!cache.loaded) {
        load_file();
    }
    for (size_t i = 0; i < cache.count; i++) {
        if (strcmp(cache.keys[i], key) == 0) {
            return cache.values[i];
        }
    }
    return NULL;
}

const char *fts_testbed_require(const char *key)
{
    const char *value = fts_testbed_get(key);
    if (!value) {
        fprintf(stderr,
                "testbed: %s is not set and not in %s/testbed.env; did the testbed.start fixture "
                "run? (ctest runs it for tests labelled integration; es1 tests also need "
                "testbed.es1.start)\n",
                key, fts_testbed_dir());
        exit(1);
    }
    return value;
}

fts_test_engine_t fts_testbed_engine(void)
{
    const char *name = getenv("FTSYNC_TEST_ENGINE");
    if (!name || !*name || strcmp(name, "opensearch") == 0) {
        return FTS_TEST_ENGINE_OPENSEARCH;
    }
    if (strcmp(name, "es1") == 0) {
        return FTS_TEST_ENGINE_ES1;
    }
    fprintf(stderr, "testbed: FTSYNC_TEST_ENGINE=%s is neither opensearch nor es1\n", name);
    exit(1);
}

const char *fts_testbed_engine_name(void)
{
    return fts_testbed_engine() == FTS_TEST_ENGINE_ES1 ? "es1" : "opensearch";
}

const char *fts_testbed_es_url(void)
{
    const char *own = getenv("FTSYNC_TEST_ES_URL");
    if (own && *own) {
        return own;
    }
    return fts_testbed_require(fts_testbed_engine() == FTS_TEST_ENGINE_ES1
                                   ? "FTSYNC_TEST_ES1_URL"
                                   : "FTSYNC_TEST_OPENSEARCH_URL");
}

const char *fts_testbed_doc_type(void)
{
    return fts_testbed_engine() == FTS_TEST_ENGINE_ES1 ? "doc" : NULL;
}

const char *fts_testbed_index_definition(void)
{
    return fts_testbed_engine() == FTS_TEST_ENGINE_ES1
               ? FTSYNC_SOURCE_DIR "/test/fixtures/apps-index-es1.json"
               : FTSYNC_SOURCE_DIR "/deploy/index/apps.json";
}
