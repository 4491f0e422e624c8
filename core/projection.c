/*
 * projection.c - the index id and body of a MongoDB document (see projection.h).
 *
 * Keeps invariant 6: every problem with the configuration is found once, in
 * fts_projection_new, and every problem with a document is an error naming the field, with the
 * caller's buffers left as they were.
 */
#include "projection.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"
#include "json_convert.h"

typedef struct {
    char *source; /* dotted path in the MongoDB document */
    char *target; /* plain field name in the body */
} projected_field_t;

struct fts_projection {
    char *id_field;
    bool id_typed;             /* FTSYNC_ID_FORMAT=typed: tag ids with their type */
    projected_field_t *fields; /* NULL when the whole document is copied */
    size_t count;
};

/* Fields Elasticsearch keeps for itself: a body containing one is refused (7+), so none may be
 * a target. _type is refused by 6.x and kept here for the old clusters ftsync supports. */
static const char *const metadata_fields[] = {"_id",
                                              "_index",
                                              "_type",
                                              "_source",
                                              "_routing",
                                              "_field_names",
                                              "_ignored",
                                              "_seq_no",
                                              "_primary_term",
                                              "_version",
                                              "_doc_count",
                                              "_tier",
                                              "_data_stream_timestamp"};

static bool is_metadata_field(const char *name)
{
    for (size_t i = 0; i < sizeof metadata_fields / sizeof metadata_fields[0]; i++) {
        if (strcmp(name, metadata_fields[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* A path is one or more non-empty names joined by dots. */
static bool path_is_valid(const char *path)
{
    if (*path == '\0' || *path == '.') {
        return false;
    }
    size_t len = strlen(path);
    return path[len - 1] != '.' && strstr(path, "..") == NULL;
}

/* Copies text[0..len) without surrounding blanks, so "name : title" means "name:title". */
static char *dup_trimmed(const char *text, size_t len)
{
    while (len > 0 && (*text == ' ' || *text == '\t')) {
        text++;
        len--;
    }
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t')) {
        len--;
    }
    return bson_strndup(text, len);
}

static bool parse_field(const char *item, projected_field_t *field, fts_error_t *err)
{
    const char *colon = strchr(item, ':');
    if (colon && strchr(colon + 1, ':')) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "field \"%s\": use \"source\" or \"source:target\", with one colon",
                             item);
    }
    field->source =
        colon ? dup_trimmed(item, (size_t)(colon - item)) : dup_trimmed(item, strlen(item));
    field->target = colon ? dup_trimmed(colon + 1, strlen(colon + 1)) : bson_strdup(field->source);
    if (field->source[0] == '\0') {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "field \"%s\": the source name is empty", item);
    }
    if (!path_is_valid(field->source)) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "field \"%s\": \"%s\" has an empty name between dots", item,
                             field->source);
    }
    if (field->target[0] == '\0') {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "field \"%s\": the target name after ':' is empty", item);
    }
    if (strchr(field->target, '.')) {
        if (!colon) {
            const char *last = strrchr(field->source, '.') + 1;
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "field \"%s\": a dotted path needs a plain target name, "
                                 "e.g. \"%s:%s\"",
                                 item, field->source, last);
        }
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "field \"%s\": the target \"%s\" contains '.'; targets are plain "
                             "names",
                             item, field->target);
    }
    if (is_metadata_field(field->target)) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "field \"%s\": \"%s\" is an Elasticsearch metadata field and cannot "
                             "be in the document body; rename it, e.g. \"%s:mongo%s\"",
                             item, field->target, field->source, field->target);
    }
    return true;
}

fts_projection_t *fts_projection_new(const char *id_field, const fts_string_list_t *fields,
                                     fts_error_t *err)
{
    fts_projection_t *projection = bson_malloc0(sizeof *projection);
    if (!id_field) {
        id_field = "_id";
    }
    if (!path_is_valid(id_field)) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "id field \"%s\" is empty or has an empty name between dots", id_field);
        goto fail;
    }
    projection->id_field = bson_strdup(id_field);
    if (!fields || fields->count == 0) {
        return projection;
    }
    projection->fields = bson_malloc0(fields->count * sizeof *projection->fields);
    for (size_t i = 0; i < fields->count; i++) {
        projected_field_t *field = &projection->fields[i];
        projection->count++; /* counted first so that destroy frees a half-parsed field */
        if (!parse_field(fields->items[i], field, err)) {
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(projection->fields[j].target, field->target) == 0) {
                fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                              "fields \"%s\" and \"%s\" both write the target \"%s\"",
                              fields->items[j], fields->items[i], field->target);
                goto fail;
            }
        }
    }
    return projection;
fail:
    fts_projection_destroy(projection);
    return NULL;
}

void fts_projection_destroy(fts_projection_t *projection)
{
    if (!projection) {
        return;
    }
    for (size_t i = 0; i < projection->count; i++) {
        bson_free(projection->fields[i].source);
        bson_free(projection->fields[i].target);
    }
    bson_free(projection->fields);
    bson_free(projection->id_field);
    bson_free(projection);
}

void fts_projection_set_id_typed(fts_projection_t *projection, bool typed)
{
    projection->id_typed = typed;
}

const char *fts_projection_id_field(const fts_projection_t *projection)
{
    return projection->id_field;
}

typedef enum { PATH_FOUND, PATH_ABSENT, PATH_CORRUPT } path_result_t;

/* Walks a dotted path through embedded documents and arrays. Unlike
 * bson_iter_find_descendant it tells a missing field from a document too damaged to search,
 * so corrupt input is reported instead of looking like an absent field. */
static path_result_t find_path(const bson_t *doc, const char *path, bson_iter_t *found)
{
    bson_t current;
    if (!bson_init_static(&current, bson_get_data(doc), doc->len)) {
        return PATH_CORRUPT;
    }
    for (;;) {
        const char *dot = strchr(path, '.');
        size_t name_len = dot ? (size_t)(dot - path) : strlen(path);
        bson_iter_t iter;
        bool matched = false;
        if (!bson_iter_init(&iter, &current)) {
            return PATH_CORRUPT;
        }
        while (bson_iter_next(&iter)) {
            if (bson_iter_key_len(&iter) == name_len &&
                memcmp(bson_iter_key(&iter), path, name_len) == 0) {
                matched = true;
                break;
            }
        }
        if (!matched) {
            return iter.err_off != 0 ? PATH_CORRUPT : PATH_ABSENT;
        }
        if (!dot) {
            *found = iter;
            return PATH_FOUND;
        }
        uint32_t len = 0;
        const uint8_t *data = NULL;
        if (BSON_ITER_HOLDS_DOCUMENT(&iter)) {
            bson_iter_document(&iter, &len, &data);
        } else if (BSON_ITER_HOLDS_ARRAY(&iter)) {
            bson_iter_array(&iter, &len, &data);
        } else {
            return PATH_ABSENT; /* "a.b" where a is a scalar: there is no a.b */
        }
        if (!data || !bson_init_static(&current, data, len)) {
            return PATH_CORRUPT;
        }
        path = dot + 1;
    }
}

/* The human name of a BSON type, for messages about ids. */
static const char *type_name(bson_type_t type)
{
    switch (type) {
    case BSON_TYPE_DOUBLE:
        return "a double";
    case BSON_TYPE_UTF8:
        return "a string";
    case BSON_TYPE_DOCUMENT:
        return "a document";
    case BSON_TYPE_ARRAY:
        return "an array";
    case BSON_TYPE_BINARY:
        return "binary data";
    case BSON_TYPE_NULL:
        return "null";
    case BSON_TYPE_BOOL:
        return "a boolean";
    case BSON_TYPE_DATE_TIME:
        return "a date";
    case BSON_TYPE_DECIMAL128:
        return "a decimal128";
    default:
        return "of a type that cannot be an id";
    }
}

bool fts_projection_document_id(const fts_projection_t *projection, const bson_t *doc,
                                fts_buffer_t *id, fts_error_t *err)
{
    const char *field = projection->id_field;
    bson_iter_t iter;
    switch (find_path(doc, field, &iter)) {
    case PATH_FOUND:
        break;
    case PATH_ABSENT:
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                             "the document has no id field \"%s\"", field);
    case PATH_CORRUPT:
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "corrupt BSON on the way to id field \"%s\"", field);
    }
    /* The tag (typed ids) goes first: the cases below only append. */
    const char *tag = "";
    if (projection->id_typed) {
        switch (bson_iter_type(&iter)) {
        case BSON_TYPE_OID:
            tag = "o:";
            break;
        case BSON_TYPE_UTF8:
            tag = "s:";
            break;
        default:
            tag = "i:"; /* numbers; any other type is refused below, and id left as it was */
            break;
        }
    }
    size_t tag_len = strlen(tag);
    switch (bson_iter_type(&iter)) {
    case BSON_TYPE_OID: {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(&iter), hex);
        fts_buffer_append(id, tag, tag_len);
        fts_buffer_append(id, hex, 24);
        return true;
    }
    case BSON_TYPE_UTF8: {
        uint32_t len = 0;
        const char *text = bson_iter_utf8(&iter, &len);
        if (len == 0 || len + tag_len > FTS_ACTION_ID_MAX) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                                 "id field \"%s\" is a string of %" PRIu32
                                 " bytes; an index id has 1 to %zu%s",
                                 field, len, (size_t)FTS_ACTION_ID_MAX - tag_len,
                                 tag_len ? " (typed: 2 of the 512 are the tag)" : "");
        }
        if (memchr(text, '\0', len) || !fts_utf8_validate(text, len)) {
            /* Repairing it would let two different ids collide, so refuse instead. */
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                                 "id field \"%s\" is a string with a NUL byte or invalid UTF-8",
                                 field);
        }
        fts_buffer_append(id, tag, tag_len);
        fts_buffer_append(id, text, len);
        return true;
    }
    case BSON_TYPE_INT32:
        fts_buffer_appendf(id, "%s%" PRId32, tag, bson_iter_int32(&iter));
        return true;
    case BSON_TYPE_INT64:
        fts_buffer_appendf(id, "%s%" PRId64, tag, bson_iter_int64(&iter));
        return true;
    case BSON_TYPE_DOUBLE: {
        double value = bson_iter_double(&iter);
        /* -2^63 and 2^63 are exact doubles; the half-open range is what int64 can hold, and
         * inside it the cast is defined, so casting back tells whole numbers apart. The
         * comparisons are false for NaN, which is refused with the rest. */
        if (!(value >= -9223372036854775808.0 && value < 9223372036854775808.0) ||
            (double)(int64_t)value != value) {
            return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                                 "id field \"%s\" is the double %.17g, which is not a whole "
                                 "number in the 64-bit range",
                                 field, value);
        }
        fts_buffer_appendf(id, "%s%" PRId64, tag, (int64_t)value);
        return true;
    }
    default:
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "id field \"%s\" is %s; an id must be an ObjectId, a string, an "
                             "integer or a whole double",
                             field, type_name(bson_iter_type(&iter)));
    }
}

bool fts_projection_body(const fts_projection_t *projection, const bson_t *doc, fts_buffer_t *body,
                         fts_error_t *err)
{
    if (!projection->fields) {
        return fts_json_append_bson_without(body, doc, "_id", err);
    }
    size_t start = body->len;
    bool first = true;
    fts_buffer_append_char(body, '{');
    for (size_t i = 0; i < projection->count; i++) {
        const projected_field_t *field = &projection->fields[i];
        bson_iter_t iter;
        path_result_t where = find_path(doc, field->source, &iter);
        if (where == PATH_ABSENT) {
            continue;
        }
        if (where == PATH_CORRUPT) {
            fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                          "corrupt BSON on the way to field \"%s\"", field->source);
            body->len = start;
            body->data[start] = '\0';
            return false;
        }
        if (!first) {
            fts_buffer_append_char(body, ',');
        }
        first = false;
        fts_json_append_string(body, field->target, strlen(field->target));
        fts_buffer_append_char(body, ':');
        if (!fts_json_append_value(body, &iter, err)) {
            fts_error_prefix(err, "field \"%s\"", field->source);
            body->len = start;
            body->data[start] = '\0';
            return false;
        }
    }
    fts_buffer_append_char(body, '}');
    return true;
}
