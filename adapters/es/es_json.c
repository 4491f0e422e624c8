/*
 * es_json.c - reading Elasticsearch's JSON replies with libbson (see es_json.h).
 */
#include "es_json.h"

#include <bson/bson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Copies at most size-1 bytes of text and always terminates; error and reply fields are
 * fixed-size, and a long server string must be cut rather than overflow. */
static void copy_text(char *out, size_t size, const char *text, size_t len)
{
    if (size == 0) {
        return;
    }
    if (len >= size) {
        len = size - 1;
        /* Do not leave half a UTF-8 character at the end. */
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80) {
            len--;
        }
    }
    memcpy(out, text, len);
    out[len] = '\0';
}

void fts_es_body_quote(const char *body, size_t len, char *out, size_t size)
{
    if (size == 0) {
        return;
    }
    if (!body || len == 0) {
        copy_text(out, size, "(empty body)", strlen("(empty body)"));
        return;
    }
    size_t keep = len;
    if (keep > FTS_ES_QUOTE_MAX) {
        /* A reply may quote our credentials back (a proxy echoing headers): the cut must not
         * leave the start of one behind, or redacting the quote could not find it. */
        keep = fts_log_safe_cut(body, len, FTS_ES_QUOTE_MAX);
        while (keep > 0 && ((unsigned char)body[keep] & 0xC0) == 0x80) {
            keep--;
        }
    }
    /* Room for the marker, so it survives even when out is small. */
    char marker[48] = "";
    if (keep < len) {
        snprintf(marker, sizeof marker, "...(%zu bytes)", len);
    }
    size_t marker_len = strlen(marker);
    size_t room = size - 1 > marker_len ? size - 1 - marker_len : 0;
    if (keep > room) {
        keep = fts_log_safe_cut(body, len, room);
        while (keep > 0 && ((unsigned char)body[keep] & 0xC0) == 0x80) {
            keep--;
        }
    }
    size_t written = 0;
    for (size_t i = 0; i < keep; i++) {
        unsigned char c = (unsigned char)body[i];
        /* One log line per event: newlines and other control bytes must not break it. */
        out[written++] = (c < 0x20 || c == 0x7F) ? ' ' : (char)c;
    }
    out[written] = '\0';
    if (marker_len && written + marker_len < size) {
        memcpy(out + written, marker, marker_len + 1);
    }
}

/* Parses body as one JSON object into doc. On failure doc is left uninitialised and
 * parse_message (if given) holds libbson's reason. */
static bool parse_json(const char *body, size_t len, bson_t *doc, char *parse_message, size_t size)
{
    if (!body || len == 0) {
        if (parse_message) {
            copy_text(parse_message, size, "empty body", strlen("empty body"));
        }
        return false;
    }
    bson_error_t error;
    if (!bson_init_from_json(doc, body, (ssize_t)len, &error)) {
        if (parse_message) {
            copy_text(parse_message, size, error.message, strlen(error.message));
        }
        return false;
    }
    return true;
}

/* "type: reason" of an error object (modern shape). */
static void describe_error_object(const bson_t *object, char *type, size_t type_size, char *reason,
                                  size_t reason_size)
{
    bson_iter_t iter;
    if (type && bson_iter_init_find(&iter, object, "type") && BSON_ITER_HOLDS_UTF8(&iter)) {
        uint32_t len;
        const char *text = bson_iter_utf8(&iter, &len);
        copy_text(type, type_size, text, len);
    }
    if (reason && bson_iter_init_find(&iter, object, "reason") && BSON_ITER_HOLDS_UTF8(&iter)) {
        uint32_t len;
        const char *text = bson_iter_utf8(&iter, &len);
        copy_text(reason, reason_size, text, len);
    }
}

bool fts_es_error_reply_parse(const char *body, size_t len, fts_es_error_reply_t *out)
{
    memset(out, 0, sizeof *out);
    bson_t doc;
    if (!parse_json(body, len, &doc, NULL, 0)) {
        return false;
    }
    bool found = false;
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, &doc, "error")) {
        goto cleanup;
    }
    if (BSON_ITER_HOLDS_UTF8(&iter)) {
        /* ES 1.x: "ExceptionName[details]; nested: OtherException[...]". */
        uint32_t text_len;
        const char *text = bson_iter_utf8(&iter, &text_len);
        size_t name_len = strcspn(text, "[ ;");
        if (name_len > 0 && text[name_len] == '[') {
            copy_text(out->type, sizeof out->type, text, name_len);
        }
        copy_text(out->reason, sizeof out->reason, text, text_len);
        found = true;
    } else if (BSON_ITER_HOLDS_DOCUMENT(&iter)) {
        uint32_t object_len;
        const uint8_t *object_data;
        bson_iter_document(&iter, &object_len, &object_data);
        bson_t object;
        if (!bson_init_static(&object, object_data, object_len)) {
            goto cleanup;
        }
        describe_error_object(&object, out->type, sizeof out->type, out->reason,
                              sizeof out->reason);
        bson_iter_t cause;
        if (bson_iter_init_find(&cause, &object, "caused_by") && BSON_ITER_HOLDS_DOCUMENT(&cause)) {
            uint32_t cause_len;
            const uint8_t *cause_data;
            bson_iter_document(&cause, &cause_len, &cause_data);
            bson_t cause_object;
            if (bson_init_static(&cause_object, cause_data, cause_len)) {
                char cause_type[128] = "";
                char cause_reason[256] = "";
                describe_error_object(&cause_object, cause_type, sizeof cause_type, cause_reason,
                                      sizeof cause_reason);
                snprintf(out->caused_by, sizeof out->caused_by, "%.120s: %.120s", cause_type,
                         cause_reason);
            }
        }
        found = out->type[0] != '\0' || out->reason[0] != '\0';
    }

cleanup:
    bson_destroy(&doc);
    if (!found) {
        memset(out, 0, sizeof *out);
    }
    return found;
}

/* Server reasons may hold newlines (ES 1.x parse errors do); an error is one line. */
static void flatten(char *text)
{
    for (; *text; text++) {
        if ((unsigned char)*text < 0x20 || *text == 0x7F) {
            *text = ' ';
        }
    }
}

void fts_es_reply_describe(long status, const char *body, size_t len, char *out, size_t size)
{
    if (size == 0) {
        return;
    }
    fts_es_error_reply_t reply;
    if (fts_es_error_reply_parse(body, len, &reply)) {
        if (reply.type[0] && strstr(reply.reason, reply.type) != reply.reason) {
            snprintf(out, size, "HTTP %ld: %s: %s", status, reply.type, reply.reason);
        } else {
            /* ES 1.x reasons start with the exception name already. */
            snprintf(out, size, "HTTP %ld: %s", status, reply.reason);
        }
        if (reply.caused_by[0]) {
            size_t used = strlen(out);
            snprintf(out + used, size - used, " (caused by %s)", reply.caused_by);
        }
        flatten(out);
        return;
    }
    char quote[FTS_ES_QUOTE_MAX + 64];
    fts_es_body_quote(body, len, quote, sizeof quote);
    snprintf(out, size, "HTTP %ld: %s", status, quote);
}

bool fts_es_reply_fail(fts_error_t *err, const char *what, long status, const char *body,
                       size_t len)
{
    char description[FTS_ERROR_MESSAGE_SIZE];
    fts_es_reply_describe(status, body, len, description, sizeof description);
    int code = (status == 401 || status == 403) ? FTS_ERROR_CODE_AUTH : FTS_ERROR_CODE_SERVER;
    return fts_error_set(err, FTS_ERROR_ES, code, "%s: %s", what, description);
}

/* A reply that parsed as something other than what `what` promises. */
static bool protocol_error(fts_error_t *err, const char *what, const char *problem,
                           const char *body, size_t len)
{
    char quote[FTS_ES_QUOTE_MAX + 64];
    fts_es_body_quote(body, len, quote, sizeof quote);
    return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL,
                         "unexpected reply to %s: %s; reply was: %s", what, problem, quote);
}

/* Reads a string at a dotted path; NULL when absent or not a string. */
static const char *find_string(const bson_t *doc, const char *path, uint32_t *len)
{
    bson_iter_t iter;
    bson_iter_t found;
    if (!bson_iter_init(&iter, doc) || !bson_iter_find_descendant(&iter, path, &found) ||
        !BSON_ITER_HOLDS_UTF8(&found)) {
        return NULL;
    }
    return bson_iter_utf8(&found, len);
}

/* Reads a whole number at a dotted path, whichever numeric type libbson chose for it. */
static bool find_int(const bson_t *doc, const char *path, int *out)
{
    bson_iter_t iter;
    bson_iter_t found;
    if (!bson_iter_init(&iter, doc) || !bson_iter_find_descendant(&iter, path, &found)) {
        return false;
    }
    int64_t value;
    if (BSON_ITER_HOLDS_INT32(&found)) {
        value = bson_iter_int32(&found);
    } else if (BSON_ITER_HOLDS_INT64(&found)) {
        value = bson_iter_int64(&found);
    } else if (BSON_ITER_HOLDS_DOUBLE(&found)) {
        double number = bson_iter_double(&found);
        if (number != (double)(int64_t)number) {
            return false;
        }
        value = (int64_t)number;
    } else {
        return false;
    }
    if (value < 0 || value > 1000000000) {
        return false;
    }
    *out = (int)value;
    return true;
}

bool fts_es_server_info_parse(const char *body, size_t len, fts_es_server_info_t *out,
                              fts_error_t *err)
{
    static const char *const what = "GET /";
    memset(out, 0, sizeof *out);
    char parse_message[256];
    bson_t doc;
    if (!parse_json(body, len, &doc, parse_message, sizeof parse_message)) {
        return protocol_error(err, what, parse_message, body, len);
    }
    bool ok = false;

    uint32_t number_len;
    const char *number = find_string(&doc, "version.number", &number_len);
    if (!number || number_len == 0) {
        protocol_error(err, what, "no version.number string", body, len);
        goto cleanup;
    }
    if (number_len >= sizeof out->version) {
        protocol_error(err, what, "version.number is too long", body, len);
        goto cleanup;
    }
    copy_text(out->version, sizeof out->version, number, number_len);

    char *end;
    long major = strtol(out->version, &end, 10);
    if (end == out->version || *end != '.' || major < 0 || major > 1000) {
        protocol_error(err, what, "version.number is not a MAJOR.MINOR version", body, len);
        goto cleanup;
    }
    const char *minor_text = end + 1;
    long minor = strtol(minor_text, &end, 10);
    if (end == minor_text || minor < 0 || minor > 1000) {
        protocol_error(err, what, "version.number is not a MAJOR.MINOR version", body, len);
        goto cleanup;
    }
    out->major = (int)major;
    out->minor = (int)minor;

    uint32_t distribution_len;
    const char *distribution = find_string(&doc, "version.distribution", &distribution_len);
    if (!distribution || strcmp(distribution, "elasticsearch") == 0) {
        /* Elasticsearch never sends the field; OpenSearch always does. */
        out->distribution = FTS_ES_DISTRIBUTION_ELASTICSEARCH;
    } else if (strcmp(distribution, "opensearch") == 0) {
        out->distribution = FTS_ES_DISTRIBUTION_OPENSEARCH;
    } else {
        protocol_error(err, what, "version.distribution is neither elasticsearch nor opensearch",
                       body, len);
        goto cleanup;
    }

    uint32_t name_len;
    const char *name = find_string(&doc, "cluster_name", &name_len);
    if (name) {
        copy_text(out->cluster_name, sizeof out->cluster_name, name, name_len);
    }
    ok = true;

cleanup:
    bson_destroy(&doc);
    return ok;
}

bool fts_es_health_parse(const char *body, size_t len, fts_es_health_t *out, fts_error_t *err)
{
    static const char *const what = "GET /_cluster/health";
    memset(out, 0, sizeof *out);
    char parse_message[256];
    bson_t doc;
    if (!parse_json(body, len, &doc, parse_message, sizeof parse_message)) {
        return protocol_error(err, what, parse_message, body, len);
    }
    bool ok = false;

    uint32_t status_len;
    const char *status = find_string(&doc, "status", &status_len);
    if (!status) {
        protocol_error(err, what, "no status string", body, len);
        goto cleanup;
    }
    if (strcmp(status, "green") == 0) {
        out->status = FTS_ES_HEALTH_GREEN;
    } else if (strcmp(status, "yellow") == 0) {
        out->status = FTS_ES_HEALTH_YELLOW;
    } else if (strcmp(status, "red") == 0) {
        out->status = FTS_ES_HEALTH_RED;
    } else {
        protocol_error(err, what, "status is not green, yellow or red", body, len);
        goto cleanup;
    }
    if (!find_int(&doc, "number_of_nodes", &out->number_of_nodes)) {
        protocol_error(err, what, "no number_of_nodes count", body, len);
        goto cleanup;
    }
    /* Optional: older proxies and some managed services leave it out. */
    if (!find_int(&doc, "number_of_data_nodes", &out->number_of_data_nodes)) {
        out->number_of_data_nodes = -1;
    }
    uint32_t name_len;
    const char *name = find_string(&doc, "cluster_name", &name_len);
    if (name) {
        copy_text(out->cluster_name, sizeof out->cluster_name, name, name_len);
    }
    ok = true;

cleanup:
    bson_destroy(&doc);
    return ok;
}
