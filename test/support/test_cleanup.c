/*
 * test_cleanup.c - the exit-time registry of servers to end and the removal of scratch
 * directories (see test_cleanup.h).
 */
#include "test_cleanup.h"

#include <ftw.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

typedef struct {
    fts_test_cleanup_fn cleanup;
    void *object; /* NULL: a free slot */
} registered_t;

static registered_t registry[FTS_TEST_CLEANUP_MAX];
static bool atexit_installed;

static void clean_up_registered(void)
{
    for (size_t i = 0; i < FTS_TEST_CLEANUP_MAX; i++) {
        if (registry[i].object) {
            void *object = registry[i].object;
            registry[i].object = NULL;
            registry[i].cleanup(object);
        }
    }
}

bool fts_test_cleanup_at_exit(fts_test_cleanup_fn cleanup, void *object)
{
    if (!atexit_installed) {
        atexit(clean_up_registered);
        atexit_installed = true;
    }
    for (size_t i = 0; i < FTS_TEST_CLEANUP_MAX; i++) {
        if (!registry[i].object) {
            registry[i].cleanup = cleanup;
            registry[i].object = object;
            return true;
        }
    }
    return false;
}

void fts_test_cleanup_forget(const void *object)
{
    for (size_t i = 0; i < FTS_TEST_CLEANUP_MAX; i++) {
        if (registry[i].object == object) {
            registry[i].object = NULL;
        }
    }
}

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *walk)
{
    (void)info;
    (void)flag;
    (void)walk;
    remove(path);
    return 0;
}

void fts_test_remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
