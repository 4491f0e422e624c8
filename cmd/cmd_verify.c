/*
 * cmd_verify.c - `ftsync verify [--sample N] [--show N] [--repair]`: compares the index with
 * the collection, and with --repair queues what would make them equal.
 *
 * Both sides are streamed, one page at a time, and never held whole (memory stays flat
 * however large the collection; test/bench/bench_verify.c measures it):
 *   1. counts: the collection's (count command) and the index's (_count, after a _refresh);
 *   2. collection -> index: the collection in _id order (the snapshot scan extract uses); each
 *      page's documents go through the pipeline's own transform (core/transform.h, the same
 *      settings: id field, fields, plugin) and their ids are read with one _mget. Not found:
 *      missing. Found with a different _source: stale. Found while the transform drops it
 *      (plugin DROP): extra;
 *   3. index -> collection: every id of the index by scroll; each page is looked up in
 *      MongoDB with $in on the id field (each id under every BSON type it can come from:
 *      string, ObjectId, a number). An id no document maps to: extra. Skipped when the
 *      index's count, before and after pass 2, equals the documents pass 2 found there (then
 *      every indexed document is one of the collection's), unless --full or --sample.
 * A difference is only a candidate until it is checked again, after --settle-ms, so that the
 * pipeline's normal lag is not reported: the documents are read again on both sides, and the
 * difference is reported only when it is still there and MongoDB's side did not change in
 * between (a document written while verify runs is the pipeline's business, not a
 * difference). Candidates wait in a bounded list (at most MAX_CANDIDATES).
 *
 * --repair queues, through the normal action stream, an index action for each missing or
 * stale document and a delete for each extra id, with the external version of MongoDB's
 * cluster time read before the documents were read again: every later write carries a higher
 * version and wins over the fix (invariant 3), and the loaders apply the fixes with their usual
 * guarantees (invariant 2). Verify itself writes nothing else.
 *
 * Exit status: 0 the index matches; 4 it differs (with --repair: the fixes are queued, run
 * verify again once the loaders caught up); 1 a server did not answer; 2 bad usage/settings.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "action.h"
#include "clock.h"
#include "es_client.h"
#include "es_scroll.h"
#include "mongo_admin.h"
#include "ops.h"
#include "projection.h"
#include "redis_queue.h"

#define MAX_CANDIDATES 2000

typedef enum { MISSING = 0, STALE, EXTRA, KINDS } kind_t;

static const char *const kind_names[KINDS] = {"missing", "stale", "extra"};

typedef struct {
    kind_t kind;
    char *id; /* index id */
    size_t id_len;
    bool has_source_id; /* MISSING, STALE, EXTRA of a dropped document: the _id in MongoDB */
    bson_value_t source_id;
    char *expected;         /* the body the transform made (MISSING, STALE); NULL: none */
    uint64_t index_version; /* STALE, EXTRA: the indexed version seen */
    uint64_t found_ms;
} candidate_t;

typedef struct {
    fts_config_t config;
    char ns[512];
    size_t page;
    uint64_t sample;
    size_t show;
    bool repair;
    uint64_t settle_ms;

    fts_es_client_t *es;
    fts_mongo_source_t *source;
    fts_mongo_admin_t *mongo;
    fts_transform_t *transform;
    fts_projection_t *projection;
    fts_redis_t *state;
    fts_redis_t *queue_conn;
    fts_redis_queue_t *queue;

    candidate_t candidates[MAX_CANDIDATES];
    size_t candidate_count;

    bool full;              /* --full: check the index side id by id even when counts agree */
    uint64_t checked[2];    /* documents checked from each side */
    uint64_t indexed_found; /* documents of the collection found in the index (pass 2) */
    uint64_t found[KINDS];
    char **shown[KINDS];
    size_t shown_count[KINDS];
    uint64_t unindexable; /* documents the transform refuses (the pipeline dead-letters them) */
    uint64_t queued_fixes;
    uint64_t changed_meanwhile;
} verify_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: ftsync verify [--sample N] [--show N] [--repair] [--full] [--page-size N] "
                 "[--settle-ms MS]\n\n"
                 "Compares the index with the collection: counts, then every document (or about N "
                 "chosen at\nrandom with --sample), both ways: missing from the index, stale (the "
                 "indexed body differs\nfrom what the transform makes of the current document), "
                 "extra (in the index only).\nEach difference is checked again after --settle-ms "
                 "(default 2000) before it is reported.\n\n"
                 "  --show N       list up to N ids of each kind (default 10)\n"
                 "  --repair       queue the fixes through the action stream (index actions for "
                 "missing and\n"
                 "                 stale, deletes for extra, versioned by the cluster time now)\n"
                 "  --full         look every id of the index up in MongoDB, even when the counts "
                 "show that\n"
                 "                 each indexed document is one of the collection's\n"
                 "  --page-size N  documents per page on either side (default 500)\n\n"
                 "Exit status: 0 they match, 4 they differ, 1 a server did not answer, 2 bad "
                 "usage.\n");
}

/* ---- candidates ---------------------------------------------------------------------- */

static void candidate_cleanup(candidate_t *c)
{
    bson_free(c->id);
    bson_free(c->expected);
    if (c->has_source_id) {
        bson_value_destroy(&c->source_id);
    }
    memset(c, 0, sizeof *c);
}

static void add_candidate(verify_t *v, kind_t kind, const char *id, size_t id_len,
                          const bson_value_t *source_id, const char *expected,
                          uint64_t index_version)
{
    assert(v->candidate_count < MAX_CANDIDATES);
    candidate_t *c = &v->candidates[v->candidate_count++];
    c->kind = kind;
    c->id = bson_strndup(id, id_len);
    c->id_len = id_len;
    if (source_id) {
        bson_value_copy(source_id, &c->source_id);
        c->has_source_id = true;
    }
    c->expected = expected ? bson_strdup(expected) : NULL;
    c->index_version = index_version;
    c->found_ms = fts_clock_monotonic_ms();
}

static void report(verify_t *v, kind_t kind, const char *id)
{
    v->found[kind]++;
    if (v->shown_count[kind] < v->show) {
        v->shown[kind] =
            bson_realloc(v->shown[kind], (v->shown_count[kind] + 1) * sizeof *v->shown[kind]);
        v->shown[kind][v->shown_count[kind]++] = bson_strdup(id);
    }
}

/* The loader's mark of the collection a document came from (FTSYNC_NS_FIELD), NULL when the
 * loaders write none. */
static const char *ns_field(const verify_t *v)
{
    const char *field = v->config.ns_field;
    return field && strcmp(field, "off") != 0 ? field : NULL;
}

/* Whether the indexed _source is the document the transform makes (key order included: the
 * index keeps the _source exactly as it was sent, and the transform is deterministic), once the
 * loader's ns mark is checked and set aside: a document of another collection under this id is
 * not ours, so it is stale. */
static bool same_json(const verify_t *v, const char *a, size_t a_len, const bson_t *indexed)
{
    bson_error_t error;
    bson_t *parsed = bson_new_from_json((const uint8_t *)a, (ssize_t)a_len, &error);
    if (!parsed) {
        return false;
    }
    const char *field = ns_field(v);
    bson_t unmarked = BSON_INITIALIZER;
    const bson_t *b = indexed;
    bool same = true;
    if (field) {
        char ns[512];
        snprintf(ns, sizeof ns, "%s.%s", v->config.mongo_db, v->config.mongo_collection);
        bson_iter_t iter;
        same = bson_iter_init_find(&iter, indexed, field) && BSON_ITER_HOLDS_UTF8(&iter) &&
               strcmp(bson_iter_utf8(&iter, NULL), ns) == 0; /* unmarked: not as loaded */
        bson_copy_to_excluding_noinit(indexed, &unmarked, field, NULL);
        b = &unmarked;
    }
    same = same && parsed->len == b->len &&
           memcmp(bson_get_data(parsed), bson_get_data(b), parsed->len) == 0;
    bson_destroy(&unmarked);
    bson_destroy(parsed);
    return same;
}

/* ---- MongoDB lookups ------------------------------------------------------------------ */

/* Appends to values every BSON value an index id can have come from (projection.h: ObjectId
 * as hex, numbers in decimal, strings as they are). */
static void append_id_values(bson_t *values, uint32_t *n, const char *id, size_t len)
{
    char key[16];
    const char *key_text;
#define NEXT_KEY() (bson_uint32_to_string((*n)++, &key_text, key, sizeof key), key_text)
    bson_append_utf8(values, NEXT_KEY(), -1, id, (int)len);
    if (len == 24 && strspn(id, "0123456789abcdef") == 24) {
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, id);
        bson_append_oid(values, NEXT_KEY(), -1, &oid);
    }
    char text[32];
    if (len > 0 && len < sizeof text) {
        memcpy(text, id, len);
        text[len] = '\0';
        char *end = NULL;
        long long number = strtoll(text, &end, 10);
        if (*end == '\0' && end != text && (text[0] != '0' || len == 1) &&
            (text[0] != '-' || (len > 2 && text[1] != '0'))) {
            /* MongoDB compares numbers by value across types: one int64 also finds an int32
             * or a double of that value. */
            bson_append_int64(values, NEXT_KEY(), -1, number);
        }
    }
#undef NEXT_KEY
}

typedef struct {
    verify_t *v;
    const char *want; /* one id: keep the document that maps to it */
    size_t want_len;
    bson_t *doc;
    char **ids; /* a page: mark which ids a document maps to */
    size_t id_count;
    bool *present;
} lookup_t;

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool on_doc(const bson_t *doc, void *context)
{
    lookup_t *lookup = context;
    fts_buffer_t id = {0};
    fts_error_t err;
    if (fts_projection_document_id(lookup->v->projection, doc, &id, &err) && id.data) {
        if (lookup->want && id.len == lookup->want_len &&
            memcmp(id.data, lookup->want, id.len) == 0 && !lookup->doc) {
            lookup->doc = bson_copy(doc);
        }
        if (lookup->ids) {
            const char *key = id.data;
            char **hit =
                bsearch(&key, lookup->ids, lookup->id_count, sizeof *lookup->ids, compare_strings);
            if (hit) {
                lookup->present[hit - lookup->ids] = true;
            }
        }
    }
    fts_buffer_destroy(&id);
    return true;
}

/* The current document whose index id is id, or NULL (*doc; bson_destroy it). */
static bool find_by_index_id(verify_t *v, const candidate_t *c, bson_t **doc, fts_error_t *err)
{
    bson_t values = BSON_INITIALIZER;
    uint32_t n = 0;
    lookup_t lookup = {.v = v, .want = c->id, .want_len = c->id_len};
    const char *field = v->config.id_field ? v->config.id_field : "_id";
    bool ok;
    if (c->has_source_id) {
        bson_append_value(&values, "0", 1, &c->source_id);
        ok = fts_mongo_admin_find_in(v->mongo, "_id", &values, on_doc, &lookup, err);
        /* The document may map to another id now (its id field changed): look by id too. */
        if (ok && !lookup.doc && strcmp(field, "_id") != 0) {
            bson_reinit(&values);
            append_id_values(&values, &n, c->id, c->id_len);
            ok = fts_mongo_admin_find_in(v->mongo, field, &values, on_doc, &lookup, err);
        }
    } else {
        append_id_values(&values, &n, c->id, c->id_len);
        ok = fts_mongo_admin_find_in(v->mongo, field, &values, on_doc, &lookup, err);
    }
    bson_destroy(&values);
    *doc = lookup.doc;
    return ok;
}

/* ---- repair --------------------------------------------------------------------------- */

static bool queue_fix(verify_t *v, fts_action_t *action, fts_error_t *err)
{
    fts_action_argv_t argv;
    if (!fts_action_encode(action, fts_redis_queue_keys(v->queue)->stream, &argv, err) ||
        !fts_redis_queue_append(v->queue, &argv, 1, NULL, err)) {
        return false;
    }
    v->queued_fixes++;
    return true;
}

/* ---- re-check ------------------------------------------------------------------------- */

/* What the transform makes of doc: *expected the body (NULL when it makes a delete or
 * nothing), with action filled for a repair. */
static bool expect(verify_t *v, const bson_t *doc, fts_timestamp_t time, fts_action_t *action,
                   bool *index, fts_error_t *err)
{
    bool produced = false;
    *index = false;
    if (!fts_transform_snapshot(v->transform, doc, v->ns, time.seconds, time.increment, action,
                                &produced, err)) {
        return false;
    }
    *index = produced && action->op == FTS_ACTION_INDEX;
    return true;
}

static bool recheck_all(verify_t *v, fts_error_t *err)
{
    if (v->candidate_count == 0) {
        return true;
    }
    uint64_t wait_until = v->candidates[v->candidate_count - 1].found_ms + v->settle_ms;
    uint64_t now = fts_clock_monotonic_ms();
    if (wait_until > now) {
        usleep((useconds_t)((wait_until - now) * 1000));
    }
    /* The version of every fix: read before the documents, so that any write the documents do
     * not show yet carries a higher version and wins. */
    fts_timestamp_t time;
    if (!fts_mongo_source_cluster_time(v->source, &time, err)) {
        return false;
    }
    if (!fts_es_index_refresh(v->es, v->config.es_index, err)) {
        return false;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < v->candidate_count; i++) {
        candidate_t *c = &v->candidates[i];
        bson_t *doc = NULL;
        fts_es_doc_t indexed;
        const char *ids[] = {c->id};
        const size_t lens[] = {c->id_len};
        ok = find_by_index_id(v, c, &doc, err) &&
             fts_es_mget(v->es, v->config.es_index, v->config.es_doc_type, ids, lens, 1, &indexed,
                         err);
        if (!ok) {
            if (doc) {
                bson_destroy(doc);
            }
            break;
        }
        fts_action_t action;
        fts_action_init(&action);
        bool index = false;
        fts_error_t why;
        bool transformed = doc && expect(v, doc, time, &action, &index, &why);
        /* Still different, and MongoDB's side as it was when the difference was seen? */
        bool still = false;
        bool changed = false;
        if (c->kind == EXTRA) {
            changed = index || (indexed.found && indexed.version != c->index_version);
            still = !index && indexed.found && !changed;
        } else {
            changed = !transformed || !index || !c->expected ||
                      strcmp(action.body ? action.body : "", c->expected) != 0;
            still = !changed &&
                    (!indexed.found || !same_json(v, action.body, action.body_len, indexed.source));
            if (still && c->kind == STALE && !indexed.found) {
                c->kind = MISSING;
            }
        }
        if (still) {
            report(v, c->kind, c->id);
            if (v->repair) {
                if (c->kind == EXTRA) {
                    fts_action_cleanup(&action);
                    action.op = FTS_ACTION_DELETE;
                    action.origin = FTS_ACTION_FROM_SNAPSHOT;
                    action.version = fts_version_from_timestamp(time.seconds, time.increment);
                    action.ts_seconds = time.seconds;
                    action.ts_increment = time.increment;
                    action.ns = bson_strdup(v->ns);
                    action.id = bson_strndup(c->id, c->id_len);
                    action.id_len = c->id_len;
                }
                ok = queue_fix(v, &action, err);
            }
        } else if (changed) {
            v->changed_meanwhile++;
        }
        fts_action_cleanup(&action);
        fts_es_docs_cleanup(&indexed, 1);
        if (doc) {
            bson_destroy(doc);
        }
    }
    for (size_t i = 0; i < v->candidate_count; i++) {
        candidate_cleanup(&v->candidates[i]);
    }
    v->candidate_count = 0;
    return ok;
}

/* Room for a page of candidates, re-checking what waits when the list is full. */
static bool make_room(verify_t *v, size_t needed, fts_error_t *err)
{
    return v->candidate_count + needed <= MAX_CANDIDATES ? true : recheck_all(v, err);
}

/* ---- the two passes ------------------------------------------------------------------- */

static bool sampled(const verify_t *v, uint64_t total, uint64_t checked)
{
    if (v->sample == 0) {
        return true;
    }
    if (checked >= v->sample) {
        return false;
    }
    return total == 0 || (double)random() / (double)RAND_MAX < (double)v->sample / (double)total;
}

static bool check_page(verify_t *v, bson_t **docs, size_t count, fts_error_t *err)
{
    fts_action_t *actions = bson_malloc0(count * sizeof *actions);
    bool *index = bson_malloc0(count * sizeof *index);
    bool *usable = bson_malloc0(count * sizeof *usable);
    const char **ids = bson_malloc0(count * sizeof *ids);
    size_t *lens = bson_malloc0(count * sizeof *lens);
    size_t *which = bson_malloc0(count * sizeof *which);
    fts_es_doc_t *indexed = bson_malloc0(count * sizeof *indexed);
    size_t n = 0;
    bool ok = true;
    for (size_t i = 0; i < count; i++) {
        fts_action_init(&actions[i]);
        fts_error_t why;
        /* Any time the version scheme can express (its epoch itself would be version 0): the
         * version plays no part here. */
        fts_timestamp_t any = {FTS_VERSION_EPOCH, 1};
        if (!expect(v, docs[i], any, &actions[i], &index[i], &why) || !actions[i].id) {
            v->unindexable++; /* the pipeline cannot index it either (it dead-letters it) */
            continue;
        }
        usable[i] = true;
        ids[n] = actions[i].id;
        lens[n] = actions[i].id_len;
        which[n++] = i;
    }
    ok =
        fts_es_mget(v->es, v->config.es_index, v->config.es_doc_type, ids, lens, n, indexed, err) &&
        make_room(v, n, err);
    for (size_t j = 0; ok && j < n; j++) {
        size_t i = which[j];
        bson_iter_t iter;
        const bson_value_t *source_id =
            bson_iter_init_find(&iter, docs[i], "_id") ? bson_iter_value(&iter) : NULL;
        if (!index[i]) {
            if (indexed[j].found) {
                add_candidate(v, EXTRA, ids[j], lens[j], source_id, NULL, indexed[j].version);
            }
        } else if (!indexed[j].found) {
            add_candidate(v, MISSING, ids[j], lens[j], source_id, actions[i].body, 0);
        } else if (!same_json(v, actions[i].body, actions[i].body_len, indexed[j].source)) {
            add_candidate(v, STALE, ids[j], lens[j], source_id, actions[i].body,
                          indexed[j].version);
        }
    }
    v->checked[0] += n;
    for (size_t j = 0; j < n; j++) {
        v->indexed_found += indexed[j].found ? 1 : 0;
    }
    fts_es_docs_cleanup(indexed, n);
    for (size_t i = 0; i < count; i++) {
        fts_action_cleanup(&actions[i]);
    }
    bson_free(indexed);
    bson_free(which);
    bson_free(lens);
    bson_free(ids);
    bson_free(usable);
    bson_free(index);
    bson_free(actions);
    return ok;
}

static bool collection_to_index(verify_t *v, uint64_t total, fts_error_t *err)
{
    const char *collection =
        v->config.mongo_scope == FTS_SCOPE_DATABASE ? v->config.mongo_collection : NULL;
    fts_mongo_scan_t *scan = fts_mongo_scan_new(v->source, collection, NULL, err);
    if (!scan) {
        return false;
    }
    bson_t **docs = bson_malloc0(v->page * sizeof *docs);
    size_t count = 0;
    uint64_t picked = 0;
    bool ok = true;
    for (;;) {
        const bson_t *doc = NULL;
        if (!fts_mongo_scan_next(scan, &doc, err)) {
            ok = false;
            break;
        }
        if (doc && sampled(v, total, picked)) {
            docs[count++] = bson_copy(doc);
            picked++;
        }
        if ((count == v->page || !doc || (v->sample && picked >= v->sample)) && count > 0) {
            ok = check_page(v, docs, count, err);
            for (size_t i = 0; i < count; i++) {
                bson_destroy(docs[i]);
            }
            count = 0;
            if (!ok) {
                break;
            }
        }
        if (!doc || (v->sample && picked >= v->sample)) {
            break;
        }
    }
    for (size_t i = 0; i < count; i++) {
        bson_destroy(docs[i]);
    }
    bson_free(docs);
    fts_mongo_scan_destroy(scan);
    return ok;
}

static bool index_to_collection(verify_t *v, uint64_t total, fts_error_t *err)
{
    fts_es_scroll_t *scroll = fts_es_scroll_new(v->es, v->config.es_index, v->page);
    char ns[512];
    snprintf(ns, sizeof ns, "%s.%s", v->config.mongo_db, v->config.mongo_collection);
    if (ns_field(v)) { /* an index or alias shared with other collections: only ours */
        fts_es_scroll_only_ns(scroll, ns_field(v), ns);
    }
    bool ok = true;
    uint64_t picked = 0;
    const char *field = v->config.id_field ? v->config.id_field : "_id";
    while (ok && !(v->sample && picked >= v->sample)) {
        char **page = NULL;
        size_t count = 0;
        if (!fts_es_scroll_next(scroll, &page, &count, err)) {
            ok = false;
            break;
        }
        if (count == 0) {
            break;
        }
        char **ids = bson_malloc0(count * sizeof *ids);
        size_t n = 0;
        for (size_t i = 0; i < count; i++) {
            if (sampled(v, total, picked)) {
                ids[n++] = page[i];
                picked++;
            }
        }
        qsort(ids, n, sizeof *ids, compare_strings);
        bool *present = bson_malloc0((n + 1) * sizeof *present);
        bson_t values = BSON_INITIALIZER;
        uint32_t k = 0;
        for (size_t i = 0; i < n; i++) {
            append_id_values(&values, &k, ids[i], strlen(ids[i]));
        }
        lookup_t lookup = {.v = v, .ids = ids, .id_count = n, .present = present};
        ok = n == 0 || (fts_mongo_admin_find_in(v->mongo, field, &values, on_doc, &lookup, err) &&
                        make_room(v, n, err));
        for (size_t i = 0; ok && i < n; i++) {
            if (!present[i]) {
                fts_es_doc_t indexed;
                const char *one[] = {ids[i]};
                ok = fts_es_mget(v->es, v->config.es_index, v->config.es_doc_type, one, NULL, 1,
                                 &indexed, err);
                if (ok && indexed.found) {
                    add_candidate(v, EXTRA, ids[i], strlen(ids[i]), NULL, NULL, indexed.version);
                }
                fts_es_docs_cleanup(&indexed, 1);
            }
        }
        v->checked[1] += n;
        bson_destroy(&values);
        bson_free(present);
        bson_free(ids);
    }
    if (ok && fts_es_scroll_skipped(scroll)) {
        printf("not compared: %" PRIu64 " documents of the index belong to another collection "
               "than %s (their %s says so)\n",
               fts_es_scroll_skipped(scroll), ns, ns_field(v));
    }
    fts_es_scroll_destroy(scroll);
    return ok;
}

/* ---- the command ---------------------------------------------------------------------- */

static bool parse_number(const char *text, uint64_t min, uint64_t max, uint64_t *value)
{
    return fts_decimal_parse(text, strlen(text), max, value) && *value >= min;
}

static int run(verify_t *v)
{
    fts_error_t err;
    int status = FTS_EXIT_FAILURE;
    fts_ops_namespace(&v->config, v->ns, sizeof v->ns);
    v->es = fts_cmd_es_client_new(&v->config, &err);
    v->transform = v->es ? fts_ops_transform_new(&v->config, &err) : NULL;
    v->projection =
        v->transform ? fts_projection_new(v->config.id_field, &v->config.fields, &err) : NULL;
    if (v->projection) {
        fts_projection_set_id_typed(v->projection, v->config.id_format == FTS_ID_FORMAT_TYPED);
    }
    v->source = v->projection ? fts_ops_mongo_source_new(&v->config, &err) : NULL;
    v->mongo = v->source ? fts_mongo_admin_new(v->config.mongo_uri, v->config.mongo_db,
                                               v->config.mongo_collection, &err)
                         : NULL;
    if (!v->mongo) {
        fprintf(stderr, "ftsync verify: %s\n", err.message);
        return FTS_EXIT_USAGE;
    }
    if (v->repair) {
        v->state = fts_ops_redis_connect(&v->config, v->config.state_redis_url, &err);
        if (v->state && v->config.queue_redis_url &&
            strcmp(v->config.queue_redis_url, v->config.state_redis_url) != 0) {
            v->queue_conn = fts_ops_redis_connect(&v->config, v->config.queue_redis_url, &err);
        }
        if (v->state && (!v->config.queue_redis_url || v->queue_conn ||
                         strcmp(v->config.queue_redis_url, v->config.state_redis_url) == 0)) {
            v->queue = fts_redis_queue_new(v->state, v->queue_conn, v->config.pipeline, &err);
        }
        if (!v->queue) {
            fprintf(stderr, "ftsync verify: %s\n", err.message);
            return fts_ops_exit_status(&err);
        }
    }
    uint64_t mongo_count = 0;
    uint64_t index_count = 0;
    if (!fts_mongo_admin_count(v->mongo, &mongo_count, &err) ||
        !fts_es_index_refresh(v->es, v->config.es_index, &err) ||
        !fts_es_index_count(v->es, v->config.es_index, &index_count, &err)) {
        fprintf(stderr, "ftsync verify: %s\n", err.message);
        return status;
    }
    printf("collection %s: %" PRIu64 " documents\nindex %s: %" PRIu64 " documents\n", v->ns,
           mongo_count, v->config.es_index, index_count);
    fflush(stdout);
    srandom((unsigned)fts_clock_wall_ms());
    if (!collection_to_index(v, mongo_count, &err) || !recheck_all(v, &err)) {
        fprintf(stderr, "ftsync verify: %s\n", err.message);
        return status;
    }
    /* Every id in the index that a document of the collection maps to was found in pass 2.
     * When the index held exactly that many documents before and after it, nothing else is
     * there: no id can be extra, and pass 3 (a lookup in MongoDB per page of ids, which needs
     * an index on the id field to be fast) is not needed. Any write to the index meanwhile
     * changes a count and pass 3 runs. */
    uint64_t index_count_after = 0;
    if (!fts_es_index_refresh(v->es, v->config.es_index, &err) ||
        !fts_es_index_count(v->es, v->config.es_index, &index_count_after, &err)) {
        fprintf(stderr, "ftsync verify: %s\n", err.message);
        return status;
    }
    bool accounted = !v->full && v->sample == 0 && index_count == index_count_after &&
                     index_count == v->indexed_found;
    if (!accounted && (!index_to_collection(v, index_count, &err) || !recheck_all(v, &err))) {
        fprintf(stderr, "ftsync verify: %s\n", err.message);
        return status;
    }
    if (accounted) {
        printf("checked %" PRIu64 " documents of the collection; each of the index's %" PRIu64
               " documents is one of them\n",
               v->checked[0], index_count);
    } else {
        printf("checked %" PRIu64 " documents of the collection and %" PRIu64
               " ids of the index%s\n",
               v->checked[0], v->checked[1], v->sample ? " (a random sample)" : "");
    }
    uint64_t differences = 0;
    for (int k = 0; k < KINDS; k++) {
        printf("%s: %" PRIu64 "\n", kind_names[k], v->found[k]);
        for (size_t i = 0; i < v->shown_count[k]; i++) {
            printf("  %s\n", v->shown[k][i]);
        }
        differences += v->found[k];
    }
    if (v->unindexable) {
        printf("not indexable (the transform refuses them; see ftsync dlq list): %" PRIu64 "\n",
               v->unindexable);
    }
    if (v->changed_meanwhile) {
        printf("changed while verifying (not counted): %" PRIu64 "\n", v->changed_meanwhile);
    }
    if (v->repair) {
        printf("repair: queued %" PRIu64 " fixes in %s\n", v->queued_fixes,
               fts_redis_queue_keys(v->queue)->stream);
    }
    printf("%s\n", differences == 0 ? "the index matches the collection"
                                    : "the index differs from the collection");
    return differences == 0 ? FTS_EXIT_OK : FTS_EXIT_DIFFERENT;
}

int fts_cmd_verify(int argc, char **argv)
{
    verify_t *v = bson_malloc0(sizeof *v);
    v->page = 500;
    v->show = 10;
    v->settle_ms = 2000;
    int status = FTS_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        bool has_value = i + 1 < argc;
        uint64_t n = 0;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            bson_free(v);
            return FTS_EXIT_OK;
        } else if (strcmp(arg, "--repair") == 0) {
            v->repair = true;
        } else if (strcmp(arg, "--full") == 0) {
            v->full = true;
        } else if (strcmp(arg, "--sample") == 0 && has_value &&
                   parse_number(argv[i + 1], 1, UINT32_MAX, &n)) {
            v->sample = n;
            i++;
        } else if (strcmp(arg, "--show") == 0 && has_value &&
                   parse_number(argv[i + 1], 0, 100000, &n)) {
            v->show = (size_t)n;
            i++;
        } else if (strcmp(arg, "--page-size") == 0 && has_value &&
                   parse_number(argv[i + 1], 1, 10000, &n)) {
            v->page = (size_t)n;
            i++;
        } else if (strcmp(arg, "--settle-ms") == 0 && has_value &&
                   parse_number(argv[i + 1], 0, 600000, &n)) {
            v->settle_ms = n;
            i++;
        } else {
            fprintf(stderr, "ftsync verify: unknown option, or a bad or missing value: %s\n", arg);
            usage(stderr);
            bson_free(v);
            return FTS_EXIT_USAGE;
        }
    }
    if (!fts_cmd_load_config(&v->config, FTS_ROLE_EXTRACT | FTS_ROLE_LOAD)) {
        goto cleanup;
    }
    status = run(v);
cleanup:
    for (size_t i = 0; i < v->candidate_count; i++) {
        candidate_cleanup(&v->candidates[i]);
    }
    for (int k = 0; k < KINDS; k++) {
        for (size_t i = 0; i < v->shown_count[k]; i++) {
            bson_free(v->shown[k][i]);
        }
        bson_free(v->shown[k]);
    }
    fts_redis_queue_destroy(v->queue);
    fts_redis_destroy(v->queue_conn);
    fts_redis_destroy(v->state);
    fts_mongo_admin_destroy(v->mongo);
    fts_mongo_source_destroy(v->source);
    fts_projection_destroy(v->projection);
    fts_transform_destroy(v->transform);
    fts_es_client_destroy(v->es);
    fts_config_cleanup(&v->config);
    bson_free(v);
    return status;
}
