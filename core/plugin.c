/*
 * plugin.c - dlopen'ed transform plugins (see plugin.h and ftsync_plugin.h).
 *
 * Keeps invariant 5 and 6 at the edge of foreign code: a plugin's result is checked before it
 * is trusted (an unknown verdict or a malformed replacement is an error, not a guess), and its
 * error text is bounded and made printable before it reaches a log line or a dead letter.
 */
#include "plugin.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* Room given to a plugin for its reason; the ABI promises at least 256 bytes. */
#define PLUGIN_ERROR_SIZE 512

struct fts_plugin {
    void *handle;
    ftsync_transform_document_fn transform;
    char *path;
};

fts_plugin_t *fts_plugin_open(const char *path, fts_error_t *err)
{
    fts_plugin_t *plugin = bson_malloc0(sizeof *plugin);
    plugin->path = bson_strdup(path);
    /* RTLD_NOW: a missing symbol fails here, at start-up, not on the first document.
     * RTLD_LOCAL: the plugin's symbols cannot shadow ftsync's or another library's. */
    plugin->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!plugin->handle) {
        const char *reason = dlerror();
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "cannot load transform plugin %s: %s", path, reason ? reason : "unknown");
        goto fail;
    }
    dlerror();
    const unsigned int *abi = dlsym(plugin->handle, FTSYNC_PLUGIN_ABI_SYMBOL);
    if (abi && *abi != FTSYNC_PLUGIN_ABI_VERSION) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_UNSUPPORTED,
                      "transform plugin %s was built for plugin ABI version %u; this ftsync "
                      "speaks version %u",
                      path, *abi, FTSYNC_PLUGIN_ABI_VERSION);
        goto fail;
    }
    /* POSIX lets a function pointer travel through void *; memcpy keeps -Wpedantic quiet. */
    void *entry = dlsym(plugin->handle, FTSYNC_PLUGIN_ENTRY_POINT);
    if (!entry) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "transform plugin %s does not export %s()", path, FTSYNC_PLUGIN_ENTRY_POINT);
        goto fail;
    }
    memcpy(&plugin->transform, &entry, sizeof plugin->transform);
    return plugin;
fail:
    fts_plugin_close(plugin);
    return NULL;
}

void fts_plugin_close(fts_plugin_t *plugin)
{
    if (!plugin) {
        return;
    }
    if (plugin->handle) {
        dlclose(plugin->handle);
    }
    bson_free(plugin->path);
    bson_free(plugin);
}

const char *fts_plugin_path(const fts_plugin_t *plugin)
{
    return plugin->path;
}

/* Makes a plugin's reason safe to print: NUL-terminated, one line, ASCII controls blanked. */
static void tidy_reason(char *reason, size_t size)
{
    reason[size - 1] = '\0';
    for (char *c = reason; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            *c = ' ';
        }
    }
    if (reason[0] == '\0') {
        strcpy(reason, "(the plugin gave no reason)");
    }
}

bool fts_plugin_transform(fts_plugin_t *plugin, const bson_t *document, bson_t *replacement,
                          fts_plugin_verdict_t *verdict, fts_error_t *err)
{
    char reason[PLUGIN_ERROR_SIZE] = {0};
    int result = plugin->transform(document, replacement, reason, sizeof reason);
    switch (result) {
    case FTSYNC_PLUGIN_KEEP:
        *verdict = FTS_PLUGIN_KEEP;
        return true;
    case FTSYNC_PLUGIN_DROP:
        *verdict = FTS_PLUGIN_DROP;
        return true;
    case FTSYNC_PLUGIN_REPLACE: {
        size_t offset = 0;
        if (!bson_validate(replacement, BSON_VALIDATE_NONE, &offset)) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_PLUGIN_FAILED,
                                 "transform plugin %s returned a replacement that is not valid "
                                 "BSON (near byte %zu)",
                                 plugin->path, offset);
        }
        *verdict = FTS_PLUGIN_REPLACE;
        return true;
    }
    case FTSYNC_PLUGIN_ERROR:
        tidy_reason(reason, sizeof reason);
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_PLUGIN_FAILED,
                             "transform plugin %s refused the document: %s", plugin->path, reason);
    default:
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_PLUGIN_FAILED,
                             "transform plugin %s returned %d, which is not a result of "
                             "ftsync_plugin.h",
                             plugin->path, result);
    }
}
