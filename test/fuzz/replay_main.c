/*
 * replay_main.c - runs one fuzz target over every file of its corpus, without libFuzzer.
 *
 * Linked with a fuzz_<name>.c into the unit test unit.fuzz_corpus.<name> (test/fuzz/
 * CMakeLists.txt), under the project's normal compiler and sanitizer build: every seed and every
 * crash input kept in test/fuzz/corpus/<name>/ is replayed by plain `ctest -L unit`. Arguments
 * are corpus directories or single files. Fails when a directory holds no file (a corpus that
 * vanished would otherwise pass silently) or a file cannot be read; a crash of the target
 * aborts the test with the sanitizer's report, after the file's name was printed.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <bson/bson.h>

#include "fuzz_common.h"

static int replay_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 4096;
    size_t len = 0;
    uint8_t *data = bson_malloc(cap);
    size_t got;
    while ((got = fread(data + len, 1, cap - len, file)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            data = bson_realloc(data, cap);
        }
    }
    int failed = ferror(file);
    fclose(file);
    if (failed) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        bson_free(data);
        return -1;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    /* An exact-size copy, so that ASan sees a read past the input's end. */
    uint8_t *input = bson_malloc(len > 0 ? len : 1);
    memcpy(input, data, len);
    bson_free(data);
    LLVMFuzzerTestOneInput(input, len);
    bson_free(input);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every regular file of dir in name order; returns how many, or -1. */
static long replay_dir(const char *dir)
{
    DIR *handle = opendir(dir);
    if (!handle) {
        fprintf(stderr, "replay: cannot open directory %s\n", dir);
        return -1;
    }
    char **names = NULL;
    size_t count = 0;
    struct dirent *entry;
    while ((entry = readdir(handle)) != NULL) {
        if (entry->d_name[0] == '.') {
            continue;
        }
        names = bson_realloc(names, (count + 1) * sizeof *names);
        names[count++] = bson_strdup_printf("%s/%s", dir, entry->d_name);
    }
    closedir(handle);
    qsort(names, count, sizeof *names, compare_names);
    long replayed = 0;
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            if (replay_file(names[i]) != 0) {
                replayed = -1;
                break;
            }
            replayed++;
        }
    }
    for (size_t i = 0; i < count; i++) {
        bson_free(names[i]);
    }
    bson_free(names);
    return replayed;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    long total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s does not exist\n", argv[i]);
            return 1;
        }
        long replayed = S_ISDIR(st.st_mode) ? replay_dir(argv[i]) : replay_file(argv[i]) == 0;
        if (replayed <= 0) {
            fprintf(stderr, "replay: nothing replayed from %s\n", argv[i]);
            return 1;
        }
        total += replayed;
    }
    fprintf(stderr, "replay: %ld inputs, no crash\n", total);
    return 0;
}
