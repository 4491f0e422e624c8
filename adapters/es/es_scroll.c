/*
 * es_scroll.c - the blocking whole-index reads of es_scroll.h. Replies are parsed with libbson's
 * JSON reader; one page is held at a time (the scroll's ids, or one _mget's documents).
 */
#include "es_scroll.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "buffer.h"
#include "es_json.h"

/* How long the server keeps a scroll between two pages. */
#define SCROLL_KEEP "5m"

struct fts_es_scroll {
    fts_es_client_t *client; /* borrowed */
    char *index;
    size_t page_size;
    char *scroll_id; /* NULL before the first page */
    bool done;
    char **ids;
    size_t id_count;
    char *ns_field; /* NULL: every document; else only those whose _source field is ns */
    char *ns;
    uint64_t skipped; /* documents of another ns, or without the field */
};

void fts_es_url_escape(fts_buffer_t *buf, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            fts_buffer_append_char(buf, (char)*p);
        } else {
            char encoded[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            fts_buffer_append(buf, encoded, 3);
        }
    }
}

static bool protocol_error(fts_error_t *err, const char *what, const fts_es_response_t *response)
{
    char quoted[FTS_ES_QUOTE_MAX + 64];
    fts_es_body_quote(response->body.data, response->body.len, quoted, sizeof quoted);
    return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL, "%s: unexpected reply: %s",
                         what, quoted);
}

/* Sends the request and parses a 2xx JSON reply into *reply (bson_destroy it). */
static bool request_json(fts_es_client_t *client, const char *method, const char *path,
                         const char *body, const char *what, bson_t **reply, fts_error_t *err)
{
    fts_es_response_t response;
    fts_es_response_init(&response);
    bool ok = false;
    *reply = NULL;
    if (!fts_es_request(client, method, path, NULL, body, body ? strlen(body) : 0, &response,
                        err)) {
        goto cleanup;
    }
    if (response.status < 200 || response.status > 299) {
        fts_es_reply_fail(err, what, response.status, response.body.data, response.body.len);
        goto cleanup;
    }
    bson_error_t error;
    *reply = response.body.data ? bson_new_from_json((const uint8_t *)response.body.data,
                                                     (ssize_t)response.body.len, &error)
                                : NULL;
    if (!*reply) {
        protocol_error(err, what, &response);
        goto cleanup;
    }
    ok = true;
cleanup:
    fts_es_response_cleanup(&response);
    return ok;
}

static void index_path(fts_buffer_t *path, const char *index, const char *suffix)
{
    fts_buffer_append_char(path, '/');
    fts_es_url_escape(path, index);
    fts_buffer_append_str(path, suffix);
}

bool fts_es_index_count(fts_es_client_t *client, const char *index, uint64_t *count,
                        fts_error_t *err)
{
    fts_buffer_t path = {0};
    index_path(&path, index, "/_count");
    bson_t *reply = NULL;
    bool ok =
        request_json(client, "GET", path.data, NULL, "counting the index's documents", &reply, err);
    bson_iter_t iter;
    if (ok && bson_iter_init_find(&iter, reply, "count") && BSON_ITER_HOLDS_NUMBER(&iter)) {
        *count = (uint64_t)bson_iter_as_int64(&iter);
    } else if (ok) {
        ok = fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                           "counting the index's documents: the reply has no count");
    }
    bson_destroy(reply);
    fts_buffer_destroy(&path);
    return ok;
}

bool fts_es_index_refresh(fts_es_client_t *client, const char *index, fts_error_t *err)
{
    fts_buffer_t path = {0};
    index_path(&path, index, "/_refresh");
    bson_t *reply = NULL;
    bool ok = request_json(client, "POST", path.data, NULL, "refreshing the index", &reply, err);
    bson_destroy(reply);
    fts_buffer_destroy(&path);
    return ok;
}

fts_es_scroll_t *fts_es_scroll_new(fts_es_client_t *client, const char *index, size_t page_size)
{
    fts_es_scroll_t *scroll = bson_malloc0(sizeof *scroll);
    scroll->client = client;
    scroll->index = bson_strdup(index);
    scroll->page_size = page_size ? page_size : 1000;
    return scroll;
}

void fts_es_scroll_only_ns(fts_es_scroll_t *scroll, const char *field, const char *ns)
{
    bson_free(scroll->ns_field);
    bson_free(scroll->ns);
    scroll->ns_field = bson_strdup(field);
    scroll->ns = bson_strdup(ns);
}

uint64_t fts_es_scroll_skipped(const fts_es_scroll_t *scroll)
{
    return scroll->skipped;
}

/* Whether a hit belongs to the scroll's ns (always, without a filter): its _source field is the
 * ns, or it has none (a document nobody marked, such as one written by hand, is this
 * collection's to judge). The field is read from _source, as the loader's sweeps do, so it needs
 * no mapping. */
static bool hit_is_ours(const fts_es_scroll_t *scroll, bson_iter_t *hit)
{
    if (!scroll->ns_field) {
        return true;
    }
    bson_iter_t field;
    char path[300];
    snprintf(path, sizeof path, "_source.%s", scroll->ns_field);
    if (!bson_iter_recurse(hit, &field) || !bson_iter_find_descendant(&field, path, &field)) {
        return true;
    }
    return BSON_ITER_HOLDS_UTF8(&field) && strcmp(bson_iter_utf8(&field, NULL), scroll->ns) == 0;
}

static void free_ids(fts_es_scroll_t *scroll)
{
    for (size_t i = 0; i < scroll->id_count; i++) {
        bson_free(scroll->ids[i]);
    }
    bson_free(scroll->ids);
    scroll->ids = NULL;
    scroll->id_count = 0;
}

bool fts_es_scroll_next(fts_es_scroll_t *scroll, char ***ids, size_t *count, fts_error_t *err)
{
    free_ids(scroll);
    *ids = NULL;
    *count = 0;
    if (scroll->done) {
        return true;
    }
    fts_buffer_t path = {0};
    char *body = NULL;
    bson_t *reply = NULL;
    bool ok = false;
    if (!scroll->scroll_id) {
        index_path(&path, scroll->index, "/_search?scroll=" SCROLL_KEEP);
        if (scroll->ns_field) { /* only the ns field of each _source comes back */
            fts_buffer_t source = {0};
            fts_buffer_append_json_escaped(&source, scroll->ns_field, strlen(scroll->ns_field));
            body = bson_strdup_printf(
                "{\"size\":%zu,\"_source\":[\"%s\"],\"query\":{\"match_all\":{}}}",
                scroll->page_size, source.data);
            fts_buffer_destroy(&source);
        } else {
            body = bson_strdup_printf(
                "{\"size\":%zu,\"_source\":false,\"query\":{\"match_all\":{}}}", scroll->page_size);
        }
        ok = request_json(scroll->client, "POST", path.data, body, "scrolling the index", &reply,
                          err);
    } else {
        fts_buffer_append_str(&path, "/_search/scroll?scroll=" SCROLL_KEEP "&scroll_id=");
        fts_es_url_escape(&path, scroll->scroll_id);
        ok = request_json(scroll->client, "GET", path.data, NULL, "scrolling the index", &reply,
                          err);
    }
    if (!ok) {
        goto cleanup;
    }
    bson_iter_t iter;
    if (bson_iter_init_find(&iter, reply, "_scroll_id") && BSON_ITER_HOLDS_UTF8(&iter)) {
        bson_free(scroll->scroll_id);
        scroll->scroll_id = bson_strdup(bson_iter_utf8(&iter, NULL));
    }
    bson_iter_t hits;
    if (!bson_iter_init(&iter, reply) || !bson_iter_find_descendant(&iter, "hits.hits", &hits) ||
        !BSON_ITER_HOLDS_ARRAY(&hits) || !scroll->scroll_id) {
        ok = fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                           "scrolling the index: the reply has no hits.hits or _scroll_id");
        goto cleanup;
    }
    bson_iter_t hit;
    bson_iter_recurse(&hits, &hit);
    size_t raw = 0;
    while (bson_iter_next(&hit)) {
        raw++;
        if (BSON_ITER_HOLDS_DOCUMENT(&hit) && !hit_is_ours(scroll, &hit)) {
            scroll->skipped++;
            continue;
        }
        bson_iter_t id;
        if (!BSON_ITER_HOLDS_DOCUMENT(&hit) || !bson_iter_recurse(&hit, &id) ||
            !bson_iter_find(&id, "_id") || !BSON_ITER_HOLDS_UTF8(&id)) {
            ok = fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                               "scrolling the index: a hit without an _id");
            goto cleanup;
        }
        scroll->ids = bson_realloc(scroll->ids, (scroll->id_count + 1) * sizeof *scroll->ids);
        scroll->ids[scroll->id_count++] = bson_strdup(bson_iter_utf8(&id, NULL));
    }
    scroll->done = raw == 0;
    if (!scroll->done && scroll->id_count == 0) {
        /* A page of other collections' documents only: read on, an empty page ends. */
        bson_destroy(reply);
        bson_free(body);
        fts_buffer_destroy(&path);
        return fts_es_scroll_next(scroll, ids, count, err);
    }
    *ids = scroll->ids;
    *count = scroll->id_count;
cleanup:
    bson_destroy(reply);
    bson_free(body);
    fts_buffer_destroy(&path);
    return ok;
}

void fts_es_scroll_destroy(fts_es_scroll_t *scroll)
{
    if (!scroll) {
        return;
    }
    if (scroll->scroll_id) {
        fts_buffer_t path = {0};
        fts_buffer_append_str(&path, "/_search/scroll/");
        fts_es_url_escape(&path, scroll->scroll_id);
        fts_es_response_t response;
        fts_es_response_init(&response);
        fts_error_t ignored;
        (void)fts_es_request(scroll->client, "DELETE", path.data, NULL, NULL, 0, &response,
                             &ignored);
        fts_es_response_cleanup(&response);
        fts_buffer_destroy(&path);
    }
    free_ids(scroll);
    bson_free(scroll->scroll_id);
    bson_free(scroll->index);
    bson_free(scroll->ns_field);
    bson_free(scroll->ns);
    bson_free(scroll);
}

void fts_es_docs_cleanup(fts_es_doc_t *docs, size_t count)
{
    for (size_t i = 0; docs && i < count; i++) {
        if (docs[i].source) {
            bson_destroy(docs[i].source);
        }
        memset(&docs[i], 0, sizeof docs[i]);
    }
}

bool fts_es_mget(fts_es_client_t *client, const char *index, const char *doc_type,
                 const char *const *ids, const size_t *id_lens, size_t count, fts_es_doc_t *docs,
                 fts_error_t *err)
{
    memset(docs, 0, count * sizeof *docs);
    if (count == 0) {
        return true;
    }
    fts_buffer_t path = {0};
    fts_buffer_t body = {0};
    fts_buffer_append_char(&path, '/');
    fts_es_url_escape(&path, index);
    if (doc_type && *doc_type) {
        fts_buffer_append_char(&path, '/');
        fts_es_url_escape(&path, doc_type);
    }
    fts_buffer_append_str(&path, "/_mget");
    fts_buffer_append_str(&body, "{\"ids\":[");
    for (size_t i = 0; i < count; i++) {
        fts_buffer_append_str(&body, i ? ",\"" : "\"");
        fts_buffer_append_json_escaped(&body, ids[i], id_lens ? id_lens[i] : strlen(ids[i]));
        fts_buffer_append_char(&body, '"');
    }
    fts_buffer_append_str(&body, "]}");
    bson_t *reply = NULL;
    bool ok = request_json(client, "POST", path.data, body.data, "reading documents (_mget)",
                           &reply, err);
    if (!ok) {
        goto cleanup;
    }
    bson_iter_t iter;
    bson_iter_t doc;
    if (!bson_iter_init_find(&iter, reply, "docs") || !BSON_ITER_HOLDS_ARRAY(&iter) ||
        !bson_iter_recurse(&iter, &doc)) {
        ok = fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                           "reading documents (_mget): the reply has no docs");
        goto cleanup;
    }
    size_t i = 0;
    while (bson_iter_next(&doc) && i < count) {
        bson_iter_t field;
        if (!BSON_ITER_HOLDS_DOCUMENT(&doc)) {
            break;
        }
        bson_iter_recurse(&doc, &field);
        fts_es_doc_t *out = &docs[i++];
        bool has_found = false;
        while (bson_iter_next(&field)) {
            const char *key = bson_iter_key(&field);
            if (strcmp(key, "found") == 0 && BSON_ITER_HOLDS_BOOL(&field)) {
                out->found = bson_iter_bool(&field);
                has_found = true;
            } else if (strcmp(key, "_version") == 0 && BSON_ITER_HOLDS_NUMBER(&field)) {
                out->version = (uint64_t)bson_iter_as_int64(&field);
            } else if (strcmp(key, "_source") == 0 && BSON_ITER_HOLDS_DOCUMENT(&field)) {
                const uint8_t *data;
                uint32_t len;
                bson_iter_document(&field, &len, &data);
                out->source = bson_new_from_data(data, len);
            } else if (strcmp(key, "error") == 0) {
                char *text = bson_as_relaxed_extended_json(reply, NULL);
                ok = fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_SERVER,
                                   "reading documents (_mget): %.200s", text ? text : "error");
                bson_free(text);
                goto cleanup;
            }
        }
        if (!has_found || (out->found && !out->source)) {
            ok = fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                               "reading documents (_mget): a doc without found or _source");
            goto cleanup;
        }
    }
    if (i != count) {
        ok = fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                           "reading documents (_mget): %zu docs for %zu ids", i, count);
    }
cleanup:
    if (!ok) {
        fts_es_docs_cleanup(docs, count);
    }
    bson_destroy(reply);
    fts_buffer_destroy(&body);
    fts_buffer_destroy(&path);
    return ok;
}
