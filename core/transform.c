/*
 * transform.c - change events and snapshot documents to actions (see transform.h).
 *
 * Keeps invariant 3 (every action carries the version of the change it comes from, and a
 * delete names the same id the index used) and invariants 5 and 6 (an event that cannot be
 * turned into an action fails with a message naming the event and the reason; it is never
 * skipped silently, and nothing half-built is returned). The one deliberate exception is a
 * delete only the id map can name (FTS_ID_MAP_LOOKUP): its action is returned without an id,
 * unvalidated, and says so in its fts_id_map_need_t; the worker completes and validates it.
 */
#include "transform.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"
#include "json_convert.h"
#include "projection.h"

/* At most this much of a documentKey is quoted in an error message. */
#define QUOTED_KEY_MAX 120

struct fts_transform {
    fts_projection_t *projection;
    fts_plugin_t *plugin; /* NULL without a plugin */
    fts_on_drop_t on_drop;
    bool id_map;
    bool owners; /* fts_transform_owners */
};

/* Where an action comes from, gathered before it is built. */
typedef struct {
    fts_action_origin_t origin;
    const char *ns;
    uint32_t seconds;
    uint32_t increment;
    uint32_t position; /* inside its transaction (fts_version_txn_position); 0 outside one */
} source_t;

bool fts_on_drop_parse(const char *text, fts_on_drop_t *on_drop)
{
    int value;
    if (!fts_config_choice_parse(fts_on_drop_names, text, &value)) {
        return false;
    }
    *on_drop = (fts_on_drop_t)value;
    return true;
}

const char *fts_on_drop_name(fts_on_drop_t on_drop)
{
    assert(on_drop == FTS_ON_DROP_DELETE || on_drop == FTS_ON_DROP_IGNORE);
    return fts_on_drop_names[on_drop];
}

fts_transform_t *fts_transform_new(const fts_transform_options_t *options, fts_error_t *err)
{
    fts_transform_t *transform = bson_malloc0(sizeof *transform);
    transform->on_drop = options->on_drop;
    transform->id_map = options->id_map;
    transform->owners =
        !options->id_typed || (options->id_field && strcmp(options->id_field, "_id") != 0);
    transform->projection = fts_projection_new(options->id_field, options->fields, err);
    if (!transform->projection) {
        goto fail;
    }
    fts_projection_set_id_typed(transform->projection, options->id_typed);
    if (options->plugin_path && options->plugin_path[0]) {
        transform->plugin = fts_plugin_open(options->plugin_path, err);
        if (!transform->plugin) {
            goto fail;
        }
    }
    return transform;
fail:
    fts_transform_destroy(transform);
    return NULL;
}

void fts_transform_destroy(fts_transform_t *transform)
{
    if (!transform) {
        return;
    }
    fts_projection_destroy(transform->projection);
    fts_plugin_close(transform->plugin);
    bson_free(transform);
}

void fts_id_map_need_cleanup(fts_id_map_need_t *need)
{
    bson_free(need->source_id);
    bson_free(need->prior_id);
    memset(need, 0, sizeof *need);
}

char *fts_transform_value_json(const bson_value_t *value)
{
    bson_t doc = BSON_INITIALIZER;
    bson_append_value(&doc, "v", 1, value);
    size_t len = 0;
    char *json = bson_as_canonical_extended_json(&doc, &len);
    bson_destroy(&doc);
    /* "{ "v" : <value> }" -> "<value>"; libbson writes exactly that shape. */
    const char *start = json ? strchr(json, ':') : NULL;
    char *end = json ? strrchr(json, '}') : NULL;
    assert(start && end && end > start);
    start++;
    while (*start == ' ') {
        start++;
    }
    while (end > start && end[-1] == ' ') {
        end--;
    }
    char *out = bson_strndup(start, (size_t)(end - start));
    bson_free(json);
    return out;
}

bool fts_transform_id_map(const fts_transform_t *transform)
{
    return transform->id_map;
}

bool fts_transform_owners(const fts_transform_t *transform)
{
    return transform->owners;
}

/* The _id of the document an event is about, as map key: documentKey._id, else the
 * document's own _id. NULL when neither has one. */
static char *source_id_json(const bson_t *event, const bson_t *document)
{
    bson_iter_t iter;
    bson_iter_t found;
    if (event && bson_iter_init(&iter, event) &&
        bson_iter_find_descendant(&iter, "documentKey._id", &found)) {
        return fts_transform_value_json(bson_iter_value(&found));
    }
    if (document && bson_iter_init_find(&iter, document, "_id")) {
        return fts_transform_value_json(bson_iter_value(&iter));
    }
    return NULL;
}

typedef enum { FIELD_ABSENT, FIELD_DOCUMENT, FIELD_MALFORMED } field_state_t;
static field_state_t event_document(const bson_t *event, const char *field, bson_t *out);

/* Fills the parts every action has; takes the id and body out of their buffers. */
static bool build_action(fts_action_t *action, fts_action_op_t op, const source_t *source,
                         fts_buffer_t *id, fts_buffer_t *body, fts_error_t *err)
{
    action->op = op;
    action->origin = source->origin;
    action->ts_seconds = source->seconds;
    action->ts_increment = source->increment;
    action->ns = bson_strdup(source->ns);
    if (id) {
        action->id_len = id->len;
        action->id = fts_buffer_steal(id);
    }
    if (body) {
        action->body_len = body->len;
        action->body = fts_buffer_steal(body);
    }
    /* Refuse here what a loader would refuse (a cluster time outside the version scheme, a
     * malformed ns...), so the event is dead-lettered with its reason instead of queued as a
     * poisoned entry. */
    if (!fts_version_compute(source->seconds, source->increment, source->position, &action->version,
                             err) ||
        !fts_action_validate(action, err)) {
        fts_action_cleanup(action);
        return false;
    }
    return true;
}

/* The index path shared by change events and snapshot documents: id from the original
 * document, then the plugin, then the projection of whatever the plugin left. */
static bool index_document(fts_transform_t *transform, const bson_t *document,
                           const source_t *source, fts_action_t *action, fts_error_t *err);

/* index_document, then what it means for the map: use (SET or CHANGE) for the document's
 * source id; for CHANGE the pre-image's index id, when the event has one. */
static bool index_mapped(fts_transform_t *transform, const bson_t *event, const bson_t *document,
                         const source_t *source, fts_action_t *action, fts_id_map_use_t use,
                         fts_id_map_need_t *need, fts_error_t *err)
{
    if (!index_document(transform, document, source, action, err)) {
        return false;
    }
    if (!need || !transform->id_map) {
        return true;
    }
    need->source_id = source_id_json(event, document);
    if (!need->source_id) {
        return true; /* no _id: nothing to remember (a stored document always has one) */
    }
    need->use = use;
    bson_t pre_image;
    if (use == FTS_ID_MAP_CHANGE && event &&
        event_document(event, "fullDocumentBeforeChange", &pre_image) == FIELD_DOCUMENT) {
        fts_buffer_t prior = {0};
        fts_error_t ignored;
        /* A pre-image without the id field says nothing: the map decides then. */
        if (fts_projection_document_id(transform->projection, &pre_image, &prior, &ignored)) {
            need->prior_id_len = prior.len;
            need->prior_id = fts_buffer_steal(&prior);
        }
        fts_buffer_destroy(&prior);
    }
    return true;
}

static bool index_document(fts_transform_t *transform, const bson_t *document,
                           const source_t *source, fts_action_t *action, fts_error_t *err)
{
    bool ok = false;
    fts_buffer_t id = {0};
    fts_buffer_t body = {0};
    bson_t replacement = BSON_INITIALIZER;
    const bson_t *indexed = document;
    if (!fts_projection_document_id(transform->projection, document, &id, err)) {
        goto cleanup;
    }
    if (transform->plugin) {
        fts_plugin_verdict_t verdict;
        if (!fts_plugin_transform(transform->plugin, document, &replacement, &verdict, err)) {
            goto cleanup;
        }
        if (verdict == FTS_PLUGIN_DROP) {
            ok = build_action(action, FTS_ACTION_DELETE, source, &id, NULL, err);
            goto cleanup;
        }
        if (verdict == FTS_PLUGIN_REPLACE) {
            indexed = &replacement;
        }
    }
    if (!fts_projection_body(transform->projection, indexed, &body, err)) {
        goto cleanup;
    }
    ok = build_action(action, FTS_ACTION_INDEX, source, &id, &body, err);
cleanup:
    bson_destroy(&replacement);
    fts_buffer_destroy(&id);
    fts_buffer_destroy(&body);
    return ok;
}

/* A sub-document of the event. Absent and null both mean "no document" (updateLookup found
 * none, or pre-images are off); anything else that is not a well-formed document is malformed,
 * never taken for absent, or a damaged post-image would turn an update into a delete. */
static field_state_t event_document(const bson_t *event, const char *field, bson_t *out)
{
    bson_iter_t iter;
    if (!bson_iter_init_find(&iter, event, field) || BSON_ITER_HOLDS_NULL(&iter)) {
        return FIELD_ABSENT;
    }
    if (!BSON_ITER_HOLDS_DOCUMENT(&iter)) {
        return FIELD_MALFORMED;
    }
    uint32_t len = 0;
    const uint8_t *data = NULL;
    bson_iter_document(&iter, &len, &data);
    return data && bson_init_static(out, data, len) ? FIELD_DOCUMENT : FIELD_MALFORMED;
}

/* Fills err about a malformed field. Returns false. */
static bool malformed(fts_error_t *err, const char *field)
{
    return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                         "the event's %s is neither a document nor null", field);
}

static const char *event_string(const bson_t *event, const char *path)
{
    bson_iter_t iter;
    bson_iter_t found;
    if (!bson_iter_init(&iter, event) || !bson_iter_find_descendant(&iter, path, &found) ||
        !BSON_ITER_HOLDS_UTF8(&found)) {
        return NULL;
    }
    return bson_iter_utf8(&found, NULL);
}

/* The id of the document a delete (or an update without post-image) removes, computed like
 * the index id: from documentKey, else from the pre-image, else not at all (see transform.h). */
static bool delete_id(fts_transform_t *transform, const bson_t *event, fts_buffer_t *id,
                      fts_error_t *err)
{
    const char *id_field = fts_projection_id_field(transform->projection);
    bson_t key;
    bson_t pre_image;
    field_state_t key_state = event_document(event, "documentKey", &key);
    field_state_t pre_image_state = event_document(event, "fullDocumentBeforeChange", &pre_image);
    if (key_state == FIELD_MALFORMED) {
        return malformed(err, "documentKey");
    }
    if (key_state == FIELD_DOCUMENT) {
        /* A local error: whether the field is missing decides the next step, whatever the
         * caller passed as err. */
        fts_error_t key_err = {0};
        if (fts_projection_document_id(transform->projection, &key, id, &key_err)) {
            return true;
        }
        if (key_err.code != FTS_ERROR_CODE_MISSING) {
            if (err) {
                *err = key_err;
            }
            return fts_error_prefix(err, "documentKey");
        }
    }
    if (pre_image_state == FIELD_MALFORMED) {
        return malformed(err, "fullDocumentBeforeChange");
    }
    if (pre_image_state == FIELD_DOCUMENT) {
        if (!fts_projection_document_id(transform->projection, &pre_image, id, err)) {
            return fts_error_prefix(err, "fullDocumentBeforeChange");
        }
        return true;
    }
    if (key_state == FIELD_ABSENT) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                             "the event has no documentKey");
    }
    fts_buffer_t quoted = {0};
    if (!fts_json_append_bson(&quoted, &key, NULL)) {
        fts_buffer_append_str(&quoted, "(corrupt)");
    }
    if (quoted.len > QUOTED_KEY_MAX) {
        quoted.len = QUOTED_KEY_MAX;
        quoted.data[quoted.len] = '\0';
        fts_buffer_append_str(&quoted, "...");
    }
    fts_error_set(err, FTS_ERROR_INPUT, FTS_TRANSFORM_NEEDS_PRE_IMAGE,
                  "documentKey %s has no id field \"%s\" and the event has no "
                  "fullDocumentBeforeChange: with an id field other than _id, deletes need "
                  "pre-images (enable changeStreamPreAndPostImages on the collection and "
                  "watch with fullDocumentBeforeChange)",
                  quoted.data, id_field);
    fts_buffer_destroy(&quoted);
    return false;
}

/* A delete (keep false) or an update whose post-image is gone (keep true). With the map on
 * (need given) a delete the event cannot name becomes FTS_ID_MAP_LOOKUP(_KEEP): an action
 * without id, for the caller to complete from the map. */
static bool delete_document(fts_transform_t *transform, const bson_t *event, const source_t *source,
                            fts_action_t *action, fts_id_map_need_t *need, bool keep,
                            fts_error_t *err)
{
    fts_buffer_t id = {0};
    bool mapped = need && transform->id_map;
    fts_error_t id_err = {0};
    bool ok = false;
    if (delete_id(transform, event, &id, &id_err)) {
        ok = build_action(action, FTS_ACTION_DELETE, source, &id, NULL, err);
        if (ok && mapped && !keep) {
            need->source_id = source_id_json(event, NULL);
            need->use = need->source_id ? FTS_ID_MAP_REMOVE : FTS_ID_MAP_NONE;
        }
    } else if (mapped && id_err.code == FTS_TRANSFORM_NEEDS_PRE_IMAGE) {
        need->source_id = source_id_json(event, NULL);
        if (!need->source_id) {
            fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                          "the event's documentKey has no _id");
            goto cleanup;
        }
        need->use = keep ? FTS_ID_MAP_LOOKUP_KEEP : FTS_ID_MAP_LOOKUP;
        /* Everything but the id, which only the map knows; validated once it is filled in. */
        action->op = FTS_ACTION_DELETE;
        action->origin = source->origin;
        action->ts_seconds = source->seconds;
        action->ts_increment = source->increment;
        action->version = fts_version_from_timestamp(source->seconds, source->increment);
        action->ns = bson_strdup(source->ns);
        ok = true;
    } else if (err) {
        *err = id_err;
    }
cleanup:
    fts_buffer_destroy(&id);
    return ok;
}

/* What an event's operationType asks for. */
typedef enum {
    EVENT_INSERT,
    EVENT_UPDATE,
    EVENT_REPLACE,
    EVENT_DELETE,
    EVENT_DROP,
    EVENT_INVALIDATE,
    EVENT_UNSUPPORTED
} event_kind_t;

static event_kind_t event_kind(const char *type)
{
    static const struct {
        const char *name;
        event_kind_t kind;
    } kinds[] = {{"insert", EVENT_INSERT},   {"update", EVENT_UPDATE},
                 {"replace", EVENT_REPLACE}, {"delete", EVENT_DELETE},
                 {"drop", EVENT_DROP},       {"invalidate", EVENT_INVALIDATE}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(type, kinds[i].name) == 0) {
            return kinds[i].kind;
        }
    }
    return EVENT_UNSUPPORTED;
}

static bool transform_event(fts_transform_t *transform, const bson_t *event, fts_action_t *action,
                            bool *produced, fts_id_map_need_t *need, fts_error_t *err);

bool fts_transform_event(fts_transform_t *transform, const bson_t *event, fts_action_t *action,
                         bool *produced, fts_error_t *err)
{
    return transform_event(transform, event, action, produced, NULL, err);
}

bool fts_transform_event_mapped(fts_transform_t *transform, const bson_t *event,
                                fts_action_t *action, bool *produced, fts_id_map_need_t *need,
                                fts_error_t *err)
{
    fts_id_map_need_cleanup(need);
    bool ok = transform_event(transform, event, action, produced, need, err);
    if (!ok || !*produced) {
        fts_id_map_need_cleanup(need);
    }
    return ok;
}

static bool transform_event(fts_transform_t *transform, const bson_t *event, fts_action_t *action,
                            bool *produced, fts_id_map_need_t *need, fts_error_t *err)
{
    bool ok = false;
    char ns[512] = "";
    char time_text[32] = "?";
    fts_action_cleanup(action);
    *produced = false;

    const char *type = event_string(event, "operationType");
    if (!type) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                             "change event without an operationType string");
    }
    event_kind_t kind = event_kind(type);
    if (kind == EVENT_INVALIDATE) {
        return true; /* nothing changed in the collection; the stream itself ended */
    }

    /* Gather what names the event in messages before anything can fail. */
    source_t source = {.origin = FTS_ACTION_FROM_CHANGE, .ns = ns};
    const char *db = event_string(event, "ns.db");
    const char *coll = event_string(event, "ns.coll");
    if (db && coll) {
        snprintf(ns, sizeof ns, "%s.%s", db, coll);
    } else if (db) {
        snprintf(ns, sizeof ns, "%s", db);
    }
    bson_iter_t iter;
    bool have_time =
        bson_iter_init_find(&iter, event, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&iter);
    if (have_time) {
        bson_iter_timestamp(&iter, &source.seconds, &source.increment);
        snprintf(time_text, sizeof time_text, "%u.%u", source.seconds, source.increment);
    }

    if (kind == EVENT_UNSUPPORTED) {
        const char *why = strcmp(type, "rename") == 0 || strcmp(type, "dropDatabase") == 0
                              ? "ftsync cannot follow a collection that was renamed or whose "
                                "database was dropped; re-point the configuration and reset "
                                "the token"
                              : "ftsync does not know this kind of change event";
        fts_error_set(err, FTS_ERROR_INPUT, FTS_TRANSFORM_UNSUPPORTED_EVENT, "%s", why);
        goto cleanup;
    }
    if (!have_time) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                      "the event has no clusterTime timestamp, so it has no version");
        goto cleanup;
    }
    if (!db || !coll) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                      "the event has no ns.db and ns.coll strings");
        goto cleanup;
    }
    if (!fts_version_txn_position(event, &source.position, err)) {
        /* Without its place in the transaction the change would get a version equal to its
         * neighbours' and could lose to an earlier one: only an operator can resolve that. */
        err->code = FTS_TRANSFORM_UNSUPPORTED_EVENT;
        goto cleanup;
    }

    bson_t document;
    field_state_t document_state = event_document(event, "fullDocument", &document);
    bool have_document = document_state == FIELD_DOCUMENT;
    if (document_state == FIELD_MALFORMED) {
        malformed(err, "fullDocument");
        goto cleanup;
    }
    switch (kind) {
    case EVENT_INSERT:
    case EVENT_REPLACE:
        if (!have_document) {
            fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_MISSING,
                          "the event has no fullDocument");
            goto cleanup;
        }
        /* An insert creates the _id (no earlier index id to remove); a replace may change
         * the id field. */
        ok = index_mapped(transform, event, &document, &source, action,
                          kind == EVENT_INSERT ? FTS_ID_MAP_SET : FTS_ID_MAP_CHANGE, need, err);
        break;
    case EVENT_UPDATE:
        ok = have_document ? index_mapped(transform, event, &document, &source, action,
                                          FTS_ID_MAP_CHANGE, need, err)
                           : delete_document(transform, event, &source, action, need, true, err);
        break;
    case EVENT_DELETE:
        ok = delete_document(transform, event, &source, action, need, false, err);
        break;
    case EVENT_DROP:
        if (transform->on_drop == FTS_ON_DROP_IGNORE) {
            return true;
        }
        ok = build_action(action, FTS_ACTION_DROP, &source, NULL, NULL, err);
        break;
    case EVENT_INVALIDATE:
    case EVENT_UNSUPPORTED:
        break; /* handled above */
    }
    *produced = ok;
cleanup:
    if (!ok) {
        fts_error_prefix(err, "%s event on %s at %s", type, ns[0] ? ns : "?", time_text);
    }
    return ok;
}

bool fts_transform_snapshot(fts_transform_t *transform, const bson_t *document, const char *ns,
                            uint32_t seconds, uint32_t increment, fts_action_t *action,
                            bool *produced, fts_error_t *err)
{
    fts_id_map_need_t need = {0};
    bool ok = fts_transform_snapshot_mapped(transform, document, ns, seconds, increment, action,
                                            produced, &need, err);
    fts_id_map_need_cleanup(&need);
    return ok;
}

bool fts_transform_snapshot_mapped(fts_transform_t *transform, const bson_t *document,
                                   const char *ns, uint32_t seconds, uint32_t increment,
                                   fts_action_t *action, bool *produced, fts_id_map_need_t *need,
                                   fts_error_t *err)
{
    fts_action_cleanup(action);
    fts_id_map_need_cleanup(need);
    *produced = false;
    source_t source = {
        .origin = FTS_ACTION_FROM_SNAPSHOT, .ns = ns, .seconds = seconds, .increment = increment};
    /* A snapshot only sets entries: what the map said before is not read, so a re-snapshot
     * overwrites the entry of every document it reads (README.md, Extract: the id map). */
    if (!index_mapped(transform, NULL, document, &source, action, FTS_ID_MAP_SET, need, err)) {
        fts_id_map_need_cleanup(need);
        return fts_error_prefix(err, "snapshot document of %s", ns);
    }
    *produced = true;
    return true;
}

char *fts_transform_source_id(const bson_t *event, const bson_t *document)
{
    return source_id_json(event, document);
}
