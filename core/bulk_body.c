/*
 * bulk_body.c - the NDJSON lines of one _bulk action (see bulk_body.h).
 *
 * Keeps invariant 3: every action line carries the change's external version, so that a
 * replayed or late action can never overwrite a newer document. Keeps the framing of the
 * whole request: every line ends with exactly one LF and contains no other, because one
 * stray newline would shift every action after it onto the wrong source line.
 *
 * The ns field (bulk_body.h) is what lets a drop or sweep touch only its own collection's
 * documents in a shared index; it is written into every index action when configured.
 *
 * fts_bulk_action_size mirrors fts_bulk_append_action byte for byte (same escaping rules as
 * fts_buffer_append_json_escaped, same digits); the unit tests check the two against each
 * other for every case, so a change to one without the other fails there.
 */
#include "bulk_body.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Room for the decimal digits of any uint64_t and a NUL. */
#define VERSION_TEXT_SIZE 24

/* The bytes fts_buffer_append_json_escaped writes for text: it must stay in step with it. */
static size_t json_escaped_size(const char *text, size_t len)
{
    size_t size = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') {
            size += 2;
        } else if (c < 0x20) {
            size += 6; /* \u00XX */
        } else {
            size += 1;
        }
    }
    return size;
}

/* Only index and delete become bulk actions; drop and sweep are carried out another way
 * (a scroll, then versioned deletes of what it found: load_sweep.h), and an index without a body or
 * any action without an id cannot be framed. Returns NULL when the action is fine, else what is
 * wrong with it. */
static const char *unframeable_reason(const fts_action_t *action)
{
    if (action->op != FTS_ACTION_INDEX && action->op != FTS_ACTION_DELETE) {
        return "is not a bulk action";
    }
    if (!action->id || action->id_len == 0) {
        return "has no id";
    }
    if (action->op == FTS_ACTION_INDEX && !action->body) {
        return "has no body";
    }
    return NULL;
}

/* Where the ns field goes into an index action's body: after the opening brace (leading
 * whitespace allowed), followed by a comma unless the object is empty. Returns the offset
 * just after the brace, or (size_t)-1 when the body does not start as an object (then the
 * body is written unchanged; fts_action_validate makes every queued body an object). */
static size_t ns_insert_at(const fts_action_t *action, bool *needs_comma)
{
    size_t i = 0;
    while (i < action->body_len && (action->body[i] == ' ' || action->body[i] == '\t' ||
                                    action->body[i] == '\n' || action->body[i] == '\r')) {
        i++;
    }
    if (i == action->body_len || action->body[i] != '{') {
        return (size_t)-1;
    }
    size_t after = i + 1;
    size_t j = after;
    while (j < action->body_len && (action->body[j] == ' ' || action->body[j] == '\t' ||
                                    action->body[j] == '\n' || action->body[j] == '\r')) {
        j++;
    }
    *needs_comma = j < action->body_len && action->body[j] != '}';
    return after;
}

/* The bytes the ns field adds to an index action's body line: "<field>":"<ns>" and a comma. */
static size_t ns_field_size(const fts_bulk_target_t *target, const fts_action_t *action)
{
    bool comma = false;
    if (!target->ns_field || action->op != FTS_ACTION_INDEX ||
        ns_insert_at(action, &comma) == (size_t)-1) {
        return 0;
    }
    const char *ns = action->ns ? action->ns : "";
    return strlen("\"") + json_escaped_size(target->ns_field, strlen(target->ns_field)) +
           strlen("\":\"") + json_escaped_size(ns, strlen(ns)) + strlen("\"") + (comma ? 1 : 0);
}

static const char *op_key(fts_action_op_t op)
{
    return op == FTS_ACTION_INDEX ? "index" : "delete";
}

size_t fts_bulk_action_size(const fts_bulk_target_t *target, const fts_action_t *action)
{
    if (unframeable_reason(action)) {
        return 0; /* fts_bulk_append_action appends nothing for it */
    }
    char version[VERSION_TEXT_SIZE];
    int version_len = snprintf(version, sizeof version, "%" PRIu64, action->version);

    /* {"<op>":{"_index":"<index>"  */
    size_t size = strlen("{\"") + strlen(op_key(action->op)) + strlen("\":{\"_index\":\"") +
                  json_escaped_size(target->index, strlen(target->index)) + strlen("\"");
    if (target->doc_type) {
        /* ,"_type":"<type>" */
        size += strlen(",\"_type\":\"") +
                json_escaped_size(target->doc_type, strlen(target->doc_type)) + strlen("\"");
    }
    /* ,"_id":"<id>","version":<v>,"version_type":"external"}}\n */
    size += strlen(",\"_id\":\"") + json_escaped_size(action->id, action->id_len) +
            strlen("\",\"version\":") + (size_t)version_len +
            strlen(",\"version_type\":\"external\"}}\n");
    if (action->op == FTS_ACTION_INDEX) {
        size += action->body_len + 1; /* CR/LF become spaces: same length; then LF */
        size += ns_field_size(target, action);
    }
    return size;
}

bool fts_bulk_append_action(fts_buffer_t *out, const fts_bulk_target_t *target,
                            const fts_action_t *action, fts_error_t *err)
{
    bool ok = false;
    const char *unframeable = unframeable_reason(action);
    if (unframeable) {
        /* Checked before anything is appended, so out is untouched on failure. */
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID, "%s action %s",
                      fts_action_op_name(action->op), unframeable);
        goto cleanup;
    }

    /* One reservation for the whole action: appending then never reallocates twice. */
    fts_buffer_reserve(out, fts_bulk_action_size(target, action));

    fts_buffer_append_str(out, "{\"");
    fts_buffer_append_str(out, op_key(action->op));
    fts_buffer_append_str(out, "\":{\"_index\":\"");
    /* The index and type come from the configuration; escaping them anyway keeps the line
     * valid JSON whatever was configured. */
    fts_buffer_append_json_escaped(out, target->index, strlen(target->index));
    fts_buffer_append_char(out, '"');
    if (target->doc_type) {
        fts_buffer_append_str(out, ",\"_type\":\"");
        fts_buffer_append_json_escaped(out, target->doc_type, strlen(target->doc_type));
        fts_buffer_append_char(out, '"');
    }
    fts_buffer_append_str(out, ",\"_id\":\"");
    fts_buffer_append_json_escaped(out, action->id, action->id_len);
    fts_buffer_appendf(out, "\",\"version\":%" PRIu64 ",\"version_type\":\"external\"}}\n",
                       action->version);

    if (action->op == FTS_ACTION_INDEX) {
        size_t start = out->len;
        bool comma = false;
        size_t at = target->ns_field ? ns_insert_at(action, &comma) : (size_t)-1;
        if (at == (size_t)-1) {
            fts_buffer_append(out, action->body, action->body_len);
        } else {
            const char *ns = action->ns ? action->ns : "";
            fts_buffer_append(out, action->body, at);
            fts_buffer_append_char(out, '"');
            fts_buffer_append_json_escaped(out, target->ns_field, strlen(target->ns_field));
            fts_buffer_append_str(out, "\":\"");
            fts_buffer_append_json_escaped(out, ns, strlen(ns));
            fts_buffer_append_char(out, '"');
            if (comma) {
                fts_buffer_append_char(out, ',');
            }
            fts_buffer_append(out, action->body + at, action->body_len - at);
        }
        /* Inside a JSON string a raw CR or LF is invalid (they arrive escaped), so any raw
         * one is whitespace between tokens, and a space means the same there. */
        for (size_t i = start; i < out->len; i++) {
            if (out->data[i] == '\n' || out->data[i] == '\r') {
                out->data[i] = ' ';
            }
        }
        fts_buffer_append_char(out, '\n');
    }
    ok = true;
cleanup:
    return ok;
}
