/*
 * load_sweep.c - the scroll requests of a drop or sweep and the reading of their pages (see
 * load_sweep.h for what a usable page is and why).
 *
 * Keeps invariant 7 (README.md, Architecture): a page that is not complete - a shard missing,
 * a hit the loader could not judge - is an error, never a shorter page, so a sweep can only
 * end by reaching the true end of the scroll.
 */
#include "load_sweep.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

/* Room for a shard failure's reason in an error message. */
#define SHARD_REASON_MAX 300

void fts_sweep_request_init(fts_sweep_request_t *request)
{
    request->method = NULL;
    request->content_type = NULL;
    fts_buffer_init(&request->path);
    fts_buffer_init(&request->body);
}

void fts_sweep_request_destroy(fts_sweep_request_t *request)
{
    if (!request) {
        return;
    }
    fts_buffer_destroy(&request->path);
    fts_buffer_destroy(&request->body);
}

static void request_reset(fts_sweep_request_t *request, const char *method,
                          const char *content_type)
{
    request->method = method;
    request->content_type = content_type;
    fts_buffer_clear(&request->path);
    fts_buffer_clear(&request->body);
}

void fts_sweep_refresh_request(fts_sweep_request_t *request, const char *index)
{
    request_reset(request, "POST", "application/json");
    fts_buffer_appendf(&request->path, "/%s/_refresh", index);
}

void fts_sweep_search_request(fts_sweep_request_t *request, const char *index, size_t page_size,
                              const char *ns_field)
{
    request_reset(request, "POST", "application/json");
    fts_buffer_appendf(&request->path, "/%s/_search?scroll=%s", index, FTS_SWEEP_KEEP_ALIVE);
    /* _doc order is index order: no scoring and no sorting work for the server; Elasticsearch
     * 1.5 accepts it as well (checked against the test bed). */
    fts_buffer_appendf(&request->body,
                       "{\"size\":%zu,\"version\":true,\"sort\":[\"_doc\"],\"_source\":[\"",
                       page_size);
    fts_buffer_append_json_escaped(&request->body, ns_field, strlen(ns_field));
    fts_buffer_append_str(&request->body, "\"],\"query\":{\"match_all\":{}}}");
}

void fts_sweep_scroll_request(fts_sweep_request_t *request, fts_sweep_dialect_t dialect,
                              const char *scroll_id)
{
    if (dialect == FTS_SWEEP_SCROLL_ID_TEXT) {
        /* Elasticsearch 1.x refuses a JSON body here ("Failed to decode scrollId"). */
        request_reset(request, "POST", "text/plain");
        fts_buffer_appendf(&request->path, "/_search/scroll?scroll=%s", FTS_SWEEP_KEEP_ALIVE);
        fts_buffer_append_str(&request->body, scroll_id);
        return;
    }
    request_reset(request, "POST", "application/json");
    fts_buffer_append_str(&request->path, "/_search/scroll");
    fts_buffer_appendf(&request->body, "{\"scroll\":\"%s\",\"scroll_id\":\"", FTS_SWEEP_KEEP_ALIVE);
    fts_buffer_append_json_escaped(&request->body, scroll_id, strlen(scroll_id));
    fts_buffer_append_str(&request->body, "\"}");
}

void fts_sweep_clear_request(fts_sweep_request_t *request, fts_sweep_dialect_t dialect,
                             const char *scroll_id)
{
    if (dialect == FTS_SWEEP_SCROLL_ID_TEXT) {
        request_reset(request, "DELETE", "text/plain");
        fts_buffer_append_str(&request->path, "/_search/scroll");
        fts_buffer_append_str(&request->body, scroll_id);
        return;
    }
    request_reset(request, "DELETE", "application/json");
    fts_buffer_append_str(&request->path, "/_search/scroll");
    fts_buffer_append_str(&request->body, "{\"scroll_id\":[\"");
    fts_buffer_append_json_escaped(&request->body, scroll_id, strlen(scroll_id));
    fts_buffer_append_str(&request->body, "\"]}");
}

void fts_sweep_page_init(fts_sweep_page_t *page)
{
    memset(page, 0, sizeof *page);
}

void fts_sweep_page_cleanup(fts_sweep_page_t *page)
{
    if (!page) {
        return;
    }
    for (size_t i = 0; i < page->count; i++) {
        bson_free(page->hits[i].index);
        bson_free(page->hits[i].id);
        bson_free(page->hits[i].ns);
    }
    bson_free(page->hits);
    bson_free(page->scroll_id);
    fts_sweep_page_init(page);
}

static int64_t iter_number(const bson_iter_t *iter)
{
    if (BSON_ITER_HOLDS_INT32(iter)) {
        return bson_iter_int32(iter);
    }
    if (BSON_ITER_HOLDS_INT64(iter)) {
        return bson_iter_int64(iter);
    }
    return -1;
}

/* The text of a shard failure's reason (a string on 1.x, an object with reason later). */
static void shard_failure_reason(const bson_t *reply, char *out, size_t size)
{
    bson_iter_t iter;
    bson_iter_t failures;
    bson_iter_t failure;
    snprintf(out, size, "no reason given");
    if (!bson_iter_init_find(&iter, reply, "_shards") || !BSON_ITER_HOLDS_DOCUMENT(&iter) ||
        !bson_iter_recurse(&iter, &failures) || !bson_iter_find(&failures, "failures") ||
        !BSON_ITER_HOLDS_ARRAY(&failures) || !bson_iter_recurse(&failures, &failure) ||
        !bson_iter_next(&failure) || !BSON_ITER_HOLDS_DOCUMENT(&failure)) {
        return;
    }
    bson_iter_t field;
    if (!bson_iter_recurse(&failure, &field) || !bson_iter_find(&field, "reason")) {
        return;
    }
    if (BSON_ITER_HOLDS_UTF8(&field)) {
        snprintf(out, size, "%s", bson_iter_utf8(&field, NULL));
    } else if (BSON_ITER_HOLDS_DOCUMENT(&field)) {
        bson_iter_t inner;
        const char *type = "";
        const char *reason = "";
        if (bson_iter_recurse(&field, &inner)) {
            while (bson_iter_next(&inner)) {
                if (strcmp(bson_iter_key(&inner), "type") == 0 && BSON_ITER_HOLDS_UTF8(&inner)) {
                    type = bson_iter_utf8(&inner, NULL);
                } else if (strcmp(bson_iter_key(&inner), "reason") == 0 &&
                           BSON_ITER_HOLDS_UTF8(&inner)) {
                    reason = bson_iter_utf8(&inner, NULL);
                }
            }
        }
        snprintf(out, size, "%s: %s", type, reason);
    }
}

/* True when every shard answered; else err says how many did not and why. */
static bool shards_complete(const bson_t *reply, fts_error_t *err)
{
    bson_iter_t iter;
    bson_iter_t shards;
    int64_t total = -1;
    int64_t successful = -1;
    int64_t failed = 0;
    if (!bson_iter_init_find(&iter, reply, "_shards") || !BSON_ITER_HOLDS_DOCUMENT(&iter) ||
        !bson_iter_recurse(&iter, &shards)) {
        return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                             "a scroll page without _shards");
    }
    while (bson_iter_next(&shards)) {
        const char *key = bson_iter_key(&shards);
        if (strcmp(key, "total") == 0) {
            total = iter_number(&shards);
        } else if (strcmp(key, "successful") == 0) {
            successful = iter_number(&shards);
        } else if (strcmp(key, "failed") == 0) {
            failed = iter_number(&shards);
        }
    }
    if (total < 0 || successful < 0) {
        return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                             "a scroll page whose _shards has no total or successful count");
    }
    if (failed == 0 && successful >= total) {
        return true;
    }
    char reason[SHARD_REASON_MAX];
    shard_failure_reason(reply, reason, sizeof reason);
    /* An expired or lost scroll context is the usual cause: the scroll cannot go on. */
    bool gone = strstr(reason, "SearchContextMissing") != NULL ||
                strstr(reason, "search_context_missing") != NULL;
    return fts_error_set(err, FTS_ERROR_ES, gone ? FTS_ERROR_CODE_MISSING : FTS_ERROR_CODE_SERVER,
                         "%" PRId64 " of %" PRId64 " shards did not answer the scroll: %s",
                         total - successful, total, reason);
}

static bool read_hit(const bson_iter_t *element, const char *ns_field, fts_sweep_hit_t *hit,
                     size_t position, fts_error_t *err)
{
    bson_iter_t field;
    const char *index = NULL;
    const char *id = NULL;
    uint32_t id_len = 0;
    int64_t version = -1;
    if (!BSON_ITER_HOLDS_DOCUMENT(element) || !bson_iter_recurse(element, &field)) {
        return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                             "scroll hit %zu is not an object", position);
    }
    while (bson_iter_next(&field)) {
        const char *key = bson_iter_key(&field);
        if (strcmp(key, "_index") == 0 && BSON_ITER_HOLDS_UTF8(&field)) {
            index = bson_iter_utf8(&field, NULL);
        } else if (strcmp(key, "_id") == 0 && BSON_ITER_HOLDS_UTF8(&field)) {
            id = bson_iter_utf8(&field, &id_len);
        } else if (strcmp(key, "_version") == 0) {
            version = iter_number(&field);
        } else if (strcmp(key, "_source") == 0 && BSON_ITER_HOLDS_DOCUMENT(&field)) {
            bson_iter_t source;
            if (bson_iter_recurse(&field, &source) && bson_iter_find(&source, ns_field) &&
                BSON_ITER_HOLDS_UTF8(&source)) {
                hit->ns = bson_strdup(bson_iter_utf8(&source, NULL));
            }
        }
    }
    if (!index || !id || id_len == 0 || version <= 0) {
        return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                             "scroll hit %zu lacks %s (was the search asked with version: true?)",
                             position,
                             !index           ? "_index"
                             : !id || !id_len ? "_id"
                                              : "a positive _version");
    }
    hit->index = bson_strdup(index);
    hit->id = bson_strndup(id, id_len);
    hit->id_len = id_len;
    hit->version = (uint64_t)version;
    return true;
}

bool fts_sweep_page_parse(long status, const char *body, size_t len, const char *ns_field,
                          fts_sweep_page_t *page, fts_error_t *err)
{
    bool ok = false;
    bson_t *reply = NULL;
    bson_error_t error;
    bson_iter_t iter;
    bson_iter_t hits;
    fts_sweep_page_cleanup(page);

    if (status == 404) {
        fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_MISSING,
                      "HTTP 404: the scroll (or the index) is gone: %.200s", body ? body : "");
        goto cleanup;
    }
    if (status < 200 || status > 299) {
        fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_SERVER, "HTTP %ld: %.300s", status,
                      body && len ? body : "");
        goto cleanup;
    }
    reply = body && len ? bson_new_from_json((const uint8_t *)body, (ssize_t)len, &error) : NULL;
    if (!reply) {
        fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL, "a scroll page is not JSON: %s",
                      body && len ? error.message : "empty body");
        goto cleanup;
    }
    if (!shards_complete(reply, err)) {
        goto cleanup;
    }
    if (!bson_iter_init_find(&iter, reply, "_scroll_id") || !BSON_ITER_HOLDS_UTF8(&iter)) {
        fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                      "a scroll page without _scroll_id");
        goto cleanup;
    }
    page->scroll_id = bson_strdup(bson_iter_utf8(&iter, NULL));
    if (!bson_iter_init_find(&iter, reply, "hits") || !BSON_ITER_HOLDS_DOCUMENT(&iter) ||
        !bson_iter_recurse(&iter, &hits) || !bson_iter_find(&hits, "hits") ||
        !BSON_ITER_HOLDS_ARRAY(&hits)) {
        fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                      "a scroll page without hits.hits");
        goto cleanup;
    }
    bson_iter_t element;
    size_t count = 0;
    if (bson_iter_recurse(&hits, &element)) {
        while (bson_iter_next(&element)) {
            count++;
        }
    }
    page->hits = bson_malloc0((count ? count : 1) * sizeof *page->hits);
    if (bson_iter_recurse(&hits, &element)) {
        while (bson_iter_next(&element)) {
            fts_sweep_hit_t *hit = &page->hits[page->count];
            page->count++; /* counted first: cleanup frees what a failed hit holds */
            if (!read_hit(&element, ns_field, hit, page->count - 1, err)) {
                goto cleanup;
            }
        }
    }
    ok = true;
cleanup:
    if (!ok) {
        fts_sweep_page_cleanup(page);
    }
    if (reply) {
        bson_destroy(reply);
    }
    return ok;
}
