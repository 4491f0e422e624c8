/*
 * sorted_bson.c - documents with their keys sorted, for order-blind comparison (see
 * sorted_bson.h).
 */
#include "sorted_bson.h"

#include <stdlib.h>
#include <string.h>

static int compare_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void append_sorted(bson_t *out, const bson_t *in, bool is_array)
{
    size_t count = bson_count_keys(in);
    const char **keys = bson_malloc0((count + 1) * sizeof *keys);
    bson_iter_t iter;
    size_t n = 0;
    if (bson_iter_init(&iter, in)) {
        while (bson_iter_next(&iter) && n < count) {
            keys[n++] = bson_iter_key(&iter);
        }
    }
    if (!is_array) {
        qsort(keys, n, sizeof *keys, compare_keys);
    }
    for (size_t i = 0; i < n; i++) {
        bson_iter_t field;
        if (!bson_iter_init_find(&field, in, keys[i])) {
            continue;
        }
        bool array = BSON_ITER_HOLDS_ARRAY(&field);
        if (!array && !BSON_ITER_HOLDS_DOCUMENT(&field)) {
            bson_append_iter(out, keys[i], -1, &field);
            continue;
        }
        uint32_t length;
        const uint8_t *data;
        bson_t child_in, child_out;
        if (array) {
            bson_iter_array(&field, &length, &data);
            bson_init_static(&child_in, data, length);
            bson_append_array_begin(out, keys[i], -1, &child_out);
            append_sorted(&child_out, &child_in, true);
            bson_append_array_end(out, &child_out);
        } else {
            bson_iter_document(&field, &length, &data);
            bson_init_static(&child_in, data, length);
            bson_append_document_begin(out, keys[i], -1, &child_out);
            append_sorted(&child_out, &child_in, false);
            bson_append_document_end(out, &child_out);
        }
    }
    bson_free(keys);
}

void fts_test_bson_append_sorted(bson_t *out, const bson_t *in)
{
    append_sorted(out, in, false);
}

char *fts_test_bson_sorted_json(const bson_t *doc)
{
    bson_t sorted = BSON_INITIALIZER;
    append_sorted(&sorted, doc, false);
    char *text = bson_as_canonical_extended_json(&sorted, NULL);
    bson_destroy(&sorted);
    return text;
}
