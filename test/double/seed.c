/*
 * seed.c - the --seed file loader (see seed.h).
 */
#include "seed.h"

#include "bsonval.h"
#include "update.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool fts_double_seed_load(fts_double_server_t *srv, const char *path, char *message, size_t size)
{
    FILE *file = fopen(path, "r");
    if (!file) {
        snprintf(message, size, "%s: %s", path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned long number = 0;
    bool ok = true;
    while (ok && (len = getline(&line, &cap, file)) >= 0) {
        number++;
        size_t start = 0;
        while (start < (size_t)len && (line[start] == ' ' || line[start] == '\t' ||
                                       line[start] == '\r' || line[start] == '\n')) {
            start++;
        }
        if (start == (size_t)len) {
            continue;
        }
        bson_t entry;
        bson_error_t error;
        if (!bson_init_from_json(&entry, line + start, len - (ssize_t)start, &error)) {
            snprintf(message, size, "%s:%lu: not extended JSON: %s", path, number, error.message);
            ok = false;
            break;
        }
        bson_value_t ns, doc;
        bson_t doc_view;
        const char *dot = NULL;
        if (fts_double_doc_get(&entry, "ns", &ns) && ns.value_type == BSON_TYPE_UTF8) {
            dot = strchr(ns.value.v_utf8.str, '.');
        }
        if (!dot || dot == ns.value.v_utf8.str || !dot[1] ||
            !fts_double_doc_get(&entry, "doc", &doc) || doc.value_type != BSON_TYPE_DOCUMENT) {
            snprintf(message, size, "%s:%lu: expected {\"ns\": \"db.coll\", \"doc\": {...}}", path,
                     number);
            bson_destroy(&entry);
            ok = false;
            break;
        }
        char db[256];
        size_t db_len = (size_t)(dot - ns.value.v_utf8.str);
        if (db_len >= sizeof db) {
            snprintf(message, size, "%s:%lu: database name too long", path, number);
            bson_destroy(&entry);
            ok = false;
            break;
        }
        memcpy(db, ns.value.v_utf8.str, db_len);
        db[db_len] = '\0';
        fts_double_coll_t *coll = fts_double_store_find(srv->store, db, dot + 1);
        if (!coll) {
            coll = fts_double_store_create(srv->store, db, dot + 1);
        }
        fts_double_value_as_doc(&doc, &doc_view);
        bson_t stored = BSON_INITIALIZER;
        fts_double_update_ensure_id(&doc_view, &stored);
        fts_double_doc_t *d = fts_double_doc_from_bson(&stored);
        bson_destroy(&stored);
        if (!fts_double_coll_insert(coll, d)) {
            snprintf(message, size, "%s:%lu: duplicate _id in %s", path, number,
                     ns.value.v_utf8.str);
            fts_double_doc_unref(d);
            ok = false;
        }
        bson_destroy(&entry);
    }
    free(line);
    fclose(file);
    return ok;
}
