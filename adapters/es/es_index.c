/*
 * es_index.c - creating the target index when it is missing (see es_index.h).
 *
 * Keeps invariant 6 (README.md, Architecture): a bad index name or a bad definition file is refused
 * before anything is sent, so a typo never leaves a half-configured index behind.
 */
#include "es_index.h"

#include <bson/bson.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"
#include "es_json.h"
#include "log.h"

/* Index definitions are settings and mappings: kilobytes. A file larger than this is not one. */
#define MAX_DEFINITION_BYTES (16u * 1024u * 1024u)

bool fts_es_index_name_validate(const char *name, const char *what, fts_error_t *err)
{
    if (!name || !*name) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                             "Elasticsearch %s name is empty", what);
    }
    size_t len = strlen(name);
    if (len > FTS_ES_INDEX_NAME_MAX) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "Elasticsearch %s name \"%.40s...\" is %zu bytes long; at most %d "
                             "are allowed",
                             what, name, len, FTS_ES_INDEX_NAME_MAX);
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "Elasticsearch %s name \"%s\" is not allowed", what, name);
    }
    if (name[0] == '-' || name[0] == '_' || name[0] == '+') {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "Elasticsearch %s name \"%s\" must not start with '%c'", what, name,
                             name[0]);
    }
    for (const char *p = name; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "Elasticsearch %s name \"%s\" must be lower-case", what, name);
        }
        /* ':' is allowed by 6.x and older, but 7.x reserves it for cross-cluster names. */
        if (strchr("\\/*?\"<>|, #:", *p) || (unsigned char)*p < 0x20) {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "Elasticsearch %s name \"%s\" must not contain '%c' (none of "
                                 "\\ / * ? \" < > | , # : space)",
                                 what, name, *p);
        }
    }
    return true;
}

bool fts_es_index_definition_load(const char *path, fts_buffer_t *out, fts_error_t *err)
{
    bool ok = false;
    fts_buffer_t wrapped = {0};
    bson_t doc;
    bson_error_t error;

    if (!fts_buffer_read_file(out, path, MAX_DEFINITION_BYTES, err)) {
        fts_error_prefix(err, "index definition");
        goto cleanup;
    }
    if (out->len == 0) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                      "index definition %s is empty; it must be a JSON object with the index's "
                      "settings and mappings",
                      path);
        goto cleanup;
    }
    if (!bson_init_from_json(&doc, out->data, (ssize_t)out->len, &error)) {
        /* libbson rejects top-level scalars with a confusing message ("Incomplete JSON");
         * parsed as a member of an object they are fine, which tells the two cases apart. */
        fts_buffer_append_str(&wrapped, "{\"definition\":");
        fts_buffer_append(&wrapped, out->data, out->len);
        fts_buffer_append_str(&wrapped, "\n}");
        bson_t probe;
        bson_error_t probe_error;
        if (bson_init_from_json(&probe, wrapped.data, (ssize_t)wrapped.len, &probe_error)) {
            bson_destroy(&probe);
            fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                          "index definition %s is not a JSON object (it holds a single value)",
                          path);
        } else {
            fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                          "index definition %s is not valid JSON: %s", path, error.message);
        }
        goto cleanup;
    }
    bson_destroy(&doc);

    /* libbson accepts a top-level array as a document, and stops after the first value
     * without complaint; parsing the file as a member of an object catches both. */
    fts_buffer_append_str(&wrapped, "{\"definition\":");
    fts_buffer_append(&wrapped, out->data, out->len);
    fts_buffer_append_str(&wrapped, "\n}");
    if (!bson_init_from_json(&doc, wrapped.data, (ssize_t)wrapped.len, &error)) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                      "index definition %s is not valid JSON: there is more after its first "
                      "value",
                      path);
        goto cleanup;
    }
    bson_iter_t iter;
    bool is_object =
        bson_iter_init_find(&iter, &doc, "definition") && BSON_ITER_HOLDS_DOCUMENT(&iter);
    bson_destroy(&doc);
    if (!is_object) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                      "index definition %s is not a JSON object (it is an array)", path);
        goto cleanup;
    }
    ok = true;

cleanup:
    fts_buffer_destroy(&wrapped);
    if (!ok) {
        fts_buffer_clear(out);
    }
    return ok;
}

/* Appends name, percent-encoded for a URL path segment (the rules above still let through
 * characters such as % & + = ; that mean something in a URL). libcurl fails to escape only
 * when it cannot allocate, which aborts. */
static void append_escaped(fts_buffer_t *path, const char *name)
{
    char *escaped = curl_easy_escape(NULL, name, 0);
    if (!escaped) {
        fts_fatal_oom("an escaped index name");
    }
    fts_buffer_append_str(path, escaped);
    curl_free(escaped);
}

/* HEAD path: *exists is true for 200, false for 404; anything else is an error. */
static bool head_exists(fts_es_client_t *client, const char *path, const char *what, bool *exists,
                        fts_error_t *err)
{
    fts_es_response_t response = {0};
    bool ok = false;
    if (!fts_es_request(client, "HEAD", path, NULL, NULL, 0, &response, err)) {
        goto cleanup;
    }
    if (response.status == 200) {
        *exists = true;
    } else if (response.status == 404) {
        *exists = false;
    } else {
        /* A HEAD reply has no body to quote; the status says enough (401, 403, 503...). */
        char context[384];
        snprintf(context, sizeof context, "checking whether %s exists (HEAD %s)", what, path);
        fts_es_reply_fail(err, context, response.status, NULL, 0);
        goto cleanup;
    }
    ok = true;

cleanup:
    fts_es_response_cleanup(&response);
    return ok;
}

static bool is_already_exists(long status, const fts_es_response_t *response)
{
    fts_es_error_reply_t reply;
    if (status != 400 ||
        !fts_es_error_reply_parse(response->body.data, response->body.len, &reply)) {
        return false;
    }
    /* 1.x: IndexAlreadyExistsException; 5.x: index_already_exists_exception; 6.x and later,
     * OpenSearch: resource_already_exists_exception. */
    return strcmp(reply.type, "IndexAlreadyExistsException") == 0 ||
           strcmp(reply.type, "index_already_exists_exception") == 0 ||
           strcmp(reply.type, "resource_already_exists_exception") == 0;
}

/* Seconds to wait for a new index's primary shards. ES 1.x acknowledges a creation before they
 * are started, and requests in the meantime fail with NoShardAvailableActionException; 5.x and
 * later wait by themselves (wait_for_active_shards), and then this returns at once. */
#define WAIT_FOR_SHARDS_SECONDS 30

/* Waits until index is at least yellow. Never fails the caller: the index exists either way,
 * and a cluster that stays red is reported by health checks; here it is only logged. */
static void wait_for_primaries(fts_es_client_t *client, const char *index, const char *index_path)
{
    char path[FTS_ES_INDEX_NAME_MAX * 3 + 128];
    snprintf(path, sizeof path, "/_cluster/health%s?wait_for_status=yellow&timeout=%ds", index_path,
             WAIT_FOR_SHARDS_SECONDS);
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    fts_es_health_t health;
    if (!fts_es_request(client, "GET", path, NULL, NULL, 0, &response, &err)) {
        fts_log(FTS_LOG_WARN, "es", "cannot tell whether index %s is ready: %s", index,
                err.message);
    } else if (response.status != 200 && !(response.status == 408 && response.body.len > 0)) {
        fts_es_reply_fail(&err, path, response.status, response.body.data, response.body.len);
        fts_log(FTS_LOG_WARN, "es", "cannot tell whether index %s is ready: %s", index,
                err.message);
    } else if (!fts_es_health_parse(response.body.data, response.body.len, &health, &err)) {
        fts_log(FTS_LOG_WARN, "es", "cannot tell whether index %s is ready: %s", index,
                err.message);
    } else if (health.status == FTS_ES_HEALTH_RED) {
        fts_log(FTS_LOG_WARN, "es",
                "index %s exists but its primary shards did not start within %d s", index,
                WAIT_FOR_SHARDS_SECONDS);
    }
    fts_es_response_cleanup(&response);
}

static bool create_index(fts_es_client_t *client, const fts_es_index_spec_t *spec,
                         const char *index_path, bool *created, fts_error_t *err)
{
    bool ok = false;
    fts_buffer_t definition = {0};
    fts_buffer_t marked = {0};
    fts_es_response_t response = {0};

    if (!spec->definition_path || !*spec->definition_path) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "Elasticsearch index %s does not exist and FTSYNC_ES_INDEX_DEFINITION is "
                      "not set, so ftsync cannot create it: create the index, or set "
                      "FTSYNC_ES_INDEX_DEFINITION to a JSON file with its settings and mappings",
                      spec->index);
        goto cleanup;
    }
    if (!fts_es_index_definition_load(spec->definition_path, &definition, err)) {
        goto cleanup;
    }
    if (!fts_es_index_definition_mark(&definition, spec->doc_type, FTS_VERSION_SCHEME, &marked,
                                      err)) {
        fts_error_prefix(err, "index definition %s", spec->definition_path);
        goto cleanup;
    }
    if (!fts_es_request(client, "PUT", index_path, "application/json", marked.data, marked.len,
                        &response, err)) {
        fts_error_prefix(err, "creating index %s", spec->index);
        goto cleanup;
    }
    if (response.status == 200 || response.status == 201) {
        *created = true;
        fts_log(FTS_LOG_INFO, "es", "created index %s from %s", spec->index, spec->definition_path);
    } else if (is_already_exists(response.status, &response)) {
        *created = false;
        fts_log(FTS_LOG_INFO, "es", "index %s was created by another process meanwhile",
                spec->index);
    } else {
        char context[512];
        snprintf(context, sizeof context, "Elasticsearch refused to create index %s from %s",
                 spec->index, spec->definition_path);
        fts_es_reply_fail(err, context, response.status, response.body.data, response.body.len);
        goto cleanup;
    }
    wait_for_primaries(client, spec->index, index_path);
    ok = true;

cleanup:
    fts_buffer_destroy(&definition);
    fts_buffer_destroy(&marked);
    fts_es_response_cleanup(&response);
    return ok;
}

static bool add_alias(fts_es_client_t *client, const char *index, const char *alias,
                      fts_error_t *err)
{
    bool ok = false;
    fts_buffer_t body = {0};
    fts_es_response_t response = {0};

    fts_buffer_append_str(&body, "{\"actions\":[{\"add\":{\"index\":\"");
    fts_buffer_append_json_escaped(&body, index, strlen(index));
    fts_buffer_append_str(&body, "\",\"alias\":\"");
    fts_buffer_append_json_escaped(&body, alias, strlen(alias));
    fts_buffer_append_str(&body, "\"}}]}");
    if (!fts_es_request(client, "POST", "/_aliases", "application/json", body.data, body.len,
                        &response, err)) {
        fts_error_prefix(err, "adding alias %s to index %s", alias, index);
        goto cleanup;
    }
    if (response.status != 200) {
        char context[600];
        snprintf(context, sizeof context, "Elasticsearch refused to add alias %s to index %s",
                 alias, index);
        fts_es_reply_fail(err, context, response.status, response.body.data, response.body.len);
        goto cleanup;
    }
    fts_log(FTS_LOG_INFO, "es", "added alias %s to index %s", alias, index);
    ok = true;

cleanup:
    fts_buffer_destroy(&body);
    fts_es_response_cleanup(&response);
    return ok;
}

/* Keys that only typeless mappings have at their top level; mappings without any of them are
 * {type: mapping, ...} (Elasticsearch before 7). */
static bool is_typeless_mapping(const bson_t *mappings)
{
    static const char *const keys[] = {"properties",     "dynamic",           "_meta",
                                       "_source",        "_routing",          "dynamic_templates",
                                       "date_detection", "numeric_detection", "_all",
                                       "enabled",        "_field_names",      "runtime"};
    if (bson_empty(mappings)) {
        return true;
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (bson_has_field(mappings, keys[i])) {
            return true;
        }
    }
    return false;
}

/* Appends under key a copy of mapping with _meta.ftsync.version_scheme = scheme. */
static void append_marked_mapping(bson_t *dst, const char *key, const bson_t *mapping, int scheme)
{
    bson_t out, meta, ftsync;
    bson_iter_t iter;
    bson_append_document_begin(dst, key, -1, &out);
    bson_append_document_begin(&out, "_meta", 5, &meta);
    if (bson_iter_init_find(&iter, mapping, "_meta") && BSON_ITER_HOLDS_DOCUMENT(&iter)) {
        bson_t old_meta;
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&iter, &len, &data);
        if (bson_init_static(&old_meta, data, len)) {
            bson_copy_to_excluding_noinit(&old_meta, &meta, "ftsync", NULL);
        }
    }
    bson_append_document_begin(&meta, "ftsync", 6, &ftsync);
    bson_append_int32(&ftsync, "version_scheme", 14, scheme);
    bson_append_document_end(&meta, &ftsync);
    bson_append_document_end(&out, &meta);
    bson_copy_to_excluding_noinit(mapping, &out, "_meta", NULL);
    bson_append_document_end(dst, &out);
}

bool fts_es_index_definition_mark(const fts_buffer_t *definition, const char *doc_type, int scheme,
                                  fts_buffer_t *out, fts_error_t *err)
{
    bool ok = false;
    bson_t doc, marked = BSON_INITIALIZER;
    bson_error_t error;
    bool have_doc = false;
    if (!bson_init_from_json(&doc, definition->data, (ssize_t)definition->len, &error)) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                      "the index definition is not valid JSON: %s", error.message);
        goto cleanup;
    }
    have_doc = true;
    bson_iter_t iter;
    bool have_mappings = bson_iter_init_find(&iter, &doc, "mappings");
    if (have_mappings && !BSON_ITER_HOLDS_DOCUMENT(&iter)) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                      "the index definition's \"mappings\" is not a JSON object");
        goto cleanup;
    }
    bson_copy_to_excluding_noinit(&doc, &marked, "mappings", NULL);
    if (!have_mappings) {
        bson_t empty = BSON_INITIALIZER;
        if (doc_type && *doc_type) {
            bson_t mappings;
            bson_append_document_begin(&marked, "mappings", 8, &mappings);
            append_marked_mapping(&mappings, doc_type, &empty, scheme);
            bson_append_document_end(&marked, &mappings);
        } else {
            append_marked_mapping(&marked, "mappings", &empty, scheme);
        }
        bson_destroy(&empty);
    } else {
        bson_t mappings;
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&iter, &len, &data);
        bson_init_static(&mappings, data, len);
        if (is_typeless_mapping(&mappings)) {
            append_marked_mapping(&marked, "mappings", &mappings, scheme);
        } else {
            bson_t types;
            bson_iter_t type;
            bson_append_document_begin(&marked, "mappings", 8, &types);
            bson_iter_init(&type, &mappings);
            while (bson_iter_next(&type)) {
                if (!BSON_ITER_HOLDS_DOCUMENT(&type)) {
                    bson_append_value(&types, bson_iter_key(&type), -1, bson_iter_value(&type));
                    continue;
                }
                bson_t mapping;
                bson_iter_document(&type, &len, &data);
                bson_init_static(&mapping, data, len);
                append_marked_mapping(&types, bson_iter_key(&type), &mapping, scheme);
            }
            bson_append_document_end(&marked, &types);
        }
    }
    size_t json_len = 0;
    char *json = bson_as_relaxed_extended_json(&marked, &json_len);
    fts_buffer_clear(out);
    fts_buffer_append(out, json, json_len);
    bson_free(json);
    ok = true;

cleanup:
    if (have_doc) {
        bson_destroy(&doc);
    }
    bson_destroy(&marked);
    return ok;
}

/* Reads _meta.ftsync.version_scheme of one mapping: *found tells whether it has one. */
static void mapping_scheme(bson_iter_t *mapping, bool *found, int64_t *scheme)
{
    bson_iter_t child;
    if (bson_iter_recurse(mapping, &child) &&
        bson_iter_find_descendant(&child, "_meta.ftsync.version_scheme", &child) &&
        (BSON_ITER_HOLDS_INT32(&child) || BSON_ITER_HOLDS_INT64(&child) ||
         BSON_ITER_HOLDS_DOUBLE(&child))) {
        *found = true;
        *scheme = bson_iter_as_int64(&child);
    }
}

/* GET path and parse the JSON answer into reply (which the caller destroys on true). */
static bool get_json(fts_es_client_t *client, const char *method, const char *path,
                     const char *body, const char *what, bson_t *reply, fts_error_t *err)
{
    fts_es_response_t response = {0};
    bool ok = false;
    if (!fts_es_request(client, method, path, body ? "application/json" : NULL, body,
                        body ? strlen(body) : 0, &response, err)) {
        fts_error_prefix(err, "%s", what);
        goto cleanup;
    }
    if (response.status != 200) {
        fts_es_reply_fail(err, what, response.status, response.body.data, response.body.len);
        goto cleanup;
    }
    bson_error_t parse_error;
    if (!response.body.data ||
        !bson_init_from_json(reply, response.body.data, (ssize_t)response.body.len, &parse_error)) {
        fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL, "%s: the answer is not JSON",
                      what);
        goto cleanup;
    }
    ok = true;
cleanup:
    fts_es_response_cleanup(&response);
    return ok;
}

/* The smallest scheme-1 version of anything written since 2020: 2020-01-01 << 32. */
#define SCHEME_1_FLOOR ((int64_t)FTS_VERSION_EPOCH << 32)
/* Documents whose versions are looked at when an index has no mark. */
#define SAMPLE_SIZE 20

bool fts_es_index_check_version_scheme(fts_es_client_t *client, const char *name, int scheme,
                                       fts_error_t *err)
{
    bool ok = false;
    bson_t reply;
    bool have_reply = false;
    fts_buffer_t path = {0};
    char what[400];

    fts_buffer_append_char(&path, '/');
    append_escaped(&path, name);
    fts_buffer_append_str(&path, "/_mapping");
    snprintf(what, sizeof what, "reading the mapping of %s", name);
    if (!get_json(client, "GET", path.data, NULL, what, &reply, err)) {
        goto cleanup;
    }
    have_reply = true;
    /* {"<index>": {"mappings": {_meta...}}} (typeless), or {"<index>": {"mappings": {"<type>":
     * {_meta...}}}} (typed). Every index behind an alias, and every type, must agree. */
    bool unmarked = false;
    bson_iter_t index_iter;
    bson_iter_init(&index_iter, &reply);
    while (bson_iter_next(&index_iter)) {
        bson_iter_t mappings;
        if (!BSON_ITER_HOLDS_DOCUMENT(&index_iter) || !bson_iter_recurse(&index_iter, &mappings) ||
            !bson_iter_find(&mappings, "mappings") || !BSON_ITER_HOLDS_DOCUMENT(&mappings)) {
            unmarked = true;
            continue;
        }
        /* The marks of this index: its typeless mapping's, or each type's. */
        int64_t schemes[64];
        size_t count = 0;
        bool found = false;
        int64_t value = 0;
        mapping_scheme(&mappings, &found, &value);
        if (found) {
            schemes[count++] = value;
        } else {
            bson_iter_t type;
            bson_iter_recurse(&mappings, &type);
            while (bson_iter_next(&type)) {
                const char *key = bson_iter_key(&type);
                if (!BSON_ITER_HOLDS_DOCUMENT(&type) || key[0] == '_' ||
                    strcmp(key, "properties") == 0 || strcmp(key, "dynamic_templates") == 0) {
                    continue; /* parts of a typeless mapping, not types */
                }
                bool type_found = false;
                mapping_scheme(&type, &type_found, &value);
                if (!type_found) {
                    unmarked = true;
                } else if (count < sizeof schemes / sizeof schemes[0]) {
                    schemes[count++] = value;
                }
            }
            if (count == 0) {
                unmarked = true;
            }
        }
        for (size_t i = 0; i < count; i++) {
            if (schemes[i] != scheme) {
                fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                              "index %s was written with version scheme %" PRId64
                              " (its mapping's _meta.ftsync.version_scheme), but this ftsync "
                              "writes version scheme %d; versions of the two do not compare, so "
                              "writes would be refused or win wrongly: load into a new index "
                              "(reindex from a fresh snapshot) instead",
                              bson_iter_key(&index_iter), schemes[i], scheme);
                goto cleanup;
            }
        }
    }
    if (!unmarked) {
        ok = true;
        goto cleanup;
    }

    /* No mark: what do the documents' versions look like? */
    bson_destroy(&reply);
    have_reply = false;
    fts_buffer_clear(&path);
    fts_buffer_append_char(&path, '/');
    append_escaped(&path, name);
    fts_buffer_append_str(&path, "/_search");
    char body[160];
    snprintf(body, sizeof body,
             "{\"size\":%d,\"version\":true,\"_source\":false,\"query\":{\"match_all\":{}}}",
             SAMPLE_SIZE);
    snprintf(what, sizeof what, "sampling the document versions of %s", name);
    if (!get_json(client, "POST", path.data, body, what, &reply, err)) {
        goto cleanup;
    }
    have_reply = true;
    bson_iter_t hits, hit;
    int64_t largest = 0;
    size_t sampled = 0;
    if (bson_iter_init(&hits, &reply) && bson_iter_find_descendant(&hits, "hits.hits", &hits) &&
        BSON_ITER_HOLDS_ARRAY(&hits) && bson_iter_recurse(&hits, &hit)) {
        while (bson_iter_next(&hit)) {
            bson_iter_t version;
            if (BSON_ITER_HOLDS_DOCUMENT(&hit) && bson_iter_recurse(&hit, &version) &&
                bson_iter_find(&version, "_version")) {
                int64_t v = bson_iter_as_int64(&version);
                largest = v > largest ? v : largest;
                sampled++;
            }
        }
    }
    if (largest >= SCHEME_1_FLOOR) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "index %s has no version-scheme mark and holds documents with versions "
                      "like %" PRId64 ", written with version scheme 1 (cluster seconds << 32) "
                      "by an older ftsync; this ftsync writes version scheme %d, whose versions "
                      "are smaller, so every write would be refused as a conflict: load into a "
                      "new index (reindex from a fresh snapshot) instead",
                      name, largest, scheme);
        goto cleanup;
    }
    fts_log(FTS_LOG_WARN, "es",
            "index %s has no version-scheme mark (_meta.ftsync.version_scheme in its mapping); "
            "%s, so it is used with version scheme %d. Add the mark to its mapping, or let "
            "ftsync create the index, to have this checked",
            name, sampled == 0 ? "it is empty" : "the versions of its documents fit this scheme",
            scheme);
    ok = true;

cleanup:
    if (have_reply) {
        bson_destroy(&reply);
    }
    fts_buffer_destroy(&path);
    return ok;
}

bool fts_es_index_ensure(fts_es_client_t *client, const fts_es_index_spec_t *spec, bool *created,
                         fts_error_t *err)
{
    bool ok = false;
    bool made = false;
    bool has_alias = spec->alias && *spec->alias;
    fts_buffer_t index_path = {0};
    fts_buffer_t alias_path = {0};
    char what[300];

    if (!fts_es_index_name_validate(spec->index, "index", err)) {
        goto cleanup;
    }
    if (has_alias && !fts_es_index_name_validate(spec->alias, "alias", err)) {
        goto cleanup;
    }
    fts_buffer_append_char(&index_path, '/');
    append_escaped(&index_path, spec->index);

    if (has_alias) {
        fts_buffer_append_str(&alias_path, "/_alias/");
        append_escaped(&alias_path, spec->alias);
        bool alias_exists = false;
        snprintf(what, sizeof what, "alias %s", spec->alias);
        if (!head_exists(client, alias_path.data, what, &alias_exists, err)) {
            goto cleanup;
        }
        if (alias_exists) {
            fts_log(FTS_LOG_DEBUG, "es", "alias %s exists; leaving its index alone", spec->alias);
            ok = true;
            goto cleanup;
        }
    }

    bool index_exists = false;
    snprintf(what, sizeof what, "index %s", spec->index);
    if (!head_exists(client, index_path.data, what, &index_exists, err)) {
        goto cleanup;
    }
    if (!index_exists && !create_index(client, spec, index_path.data, &made, err)) {
        goto cleanup;
    }
    if (has_alias && !add_alias(client, spec->index, spec->alias, err)) {
        goto cleanup;
    }
    ok = true;

cleanup:
    if (ok && created) {
        *created = made;
    }
    fts_buffer_destroy(&index_path);
    fts_buffer_destroy(&alias_path);
    return ok;
}

/* Parses an Elasticsearch time value ("500ms", "60s", "1m", "1h", "1d", or bare milliseconds)
 * into milliseconds. */
static bool time_value_parse(const char *text, uint64_t *ms)
{
    static const struct {
        const char *suffix;
        uint64_t factor;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    if (!text || !*text) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (end == text || errno != 0 || text[0] == '-' || text[0] == '+') {
        return false;
    }
    if (*end == '\0') {
        *ms = value; /* a bare number is milliseconds */
        return true;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (value > UINT64_MAX / units[i].factor) {
                return false;
            }
            *ms = value * units[i].factor;
            return true;
        }
    }
    return false;
}

bool fts_es_index_gc_deletes_ms(fts_es_client_t *client, const char *name, uint64_t *ms,
                                fts_error_t *err)
{
    bool ok = false;
    bson_t reply;
    bool have_reply = false;
    fts_buffer_t path;
    fts_buffer_init(&path);
    fts_es_response_t response;
    fts_es_response_init(&response);
    fts_buffer_append_char(&path, '/');
    append_escaped(&path, name);
    fts_buffer_append_str(&path, "/_settings?flat_settings=true");
    if (!fts_es_request(client, "GET", path.data, NULL, NULL, 0, &response, err)) {
        goto cleanup;
    }
    if (response.status != 200) {
        fts_es_reply_fail(err, "reading the index settings", response.status, response.body.data,
                          response.body.len);
        goto cleanup;
    }
    bson_error_t parse_error;
    if (!response.body.data || !bson_init_from_json(&reply, response.body.data,
                                                    (ssize_t)response.body.len, &parse_error)) {
        fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                      "the index settings of %s are not JSON", name);
        goto cleanup;
    }
    have_reply = true;
    /* {"<index>":{"settings":{"index.gc_deletes":"1h",...}}}; behind an alias there may be
     * several indices: the shortest setting is the one that matters. */
    uint64_t shortest = UINT64_MAX;
    bson_iter_t index_iter;
    bson_iter_init(&index_iter, &reply);
    while (bson_iter_next(&index_iter)) {
        uint64_t value = FTS_ES_DEFAULT_GC_DELETES_MS;
        bson_iter_t index_doc;
        bson_iter_t settings;
        if (BSON_ITER_HOLDS_DOCUMENT(&index_iter) && bson_iter_recurse(&index_iter, &index_doc) &&
            bson_iter_find(&index_doc, "settings") && BSON_ITER_HOLDS_DOCUMENT(&index_doc) &&
            bson_iter_recurse(&index_doc, &settings) &&
            bson_iter_find(&settings, "index.gc_deletes")) {
            const char *text =
                BSON_ITER_HOLDS_UTF8(&settings) ? bson_iter_utf8(&settings, NULL) : NULL;
            if (!time_value_parse(text, &value)) {
                fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                              "index.gc_deletes of %s is not a time value: \"%s\"",
                              bson_iter_key(&index_iter), text ? text : "(not a string)");
                goto cleanup;
            }
        }
        if (value < shortest) {
            shortest = value;
        }
    }
    *ms = shortest == UINT64_MAX ? FTS_ES_DEFAULT_GC_DELETES_MS : shortest;
    ok = true;
cleanup:
    if (have_reply) {
        bson_destroy(&reply);
    }
    fts_es_response_cleanup(&response);
    fts_buffer_destroy(&path);
    return ok;
}
