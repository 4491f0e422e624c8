/*
 * testbed.c - reading the fixture's testbed.env (see testbed.h).
 */
#include "testbed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        cache.keys[cache.count] = strdup(line);
        cache.values[cache.count] = strdup(equals + 1);
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
                "run? (ctest runs it for tests labelled integration)\n",
                key, fts_testbed_dir());
        exit(1);
    }
    return value;
}
