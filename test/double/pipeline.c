/*
 * pipeline.c - aggregation stages over a collection (see pipeline.h).
 *
 * Documents flow between stages as a list of document references; stages that reshape
 * documents ($project, $group, $count) create new ones. Inputs are small in tests, so every
 * stage simply materialises its output.
 */
#include "pipeline.h"

#include "bsonval.h"

#include <string.h>

static void vec_replace(fts_double_docvec_t *vec, fts_double_docvec_t *with)
{
    fts_double_docvec_destroy(vec);
    *vec = *with;
    memset(with, 0, sizeof *with);
}

static bool stage_match(const bson_value_t *arg, fts_double_docvec_t *docs, fts_double_error_t *err)
{
    bson_t filter;
    if (arg->value_type != BSON_TYPE_DOCUMENT || !fts_double_value_as_doc(arg, &filter)) {
        return fts_double_error_set(err, 15959,
                                    "the match filter must be an expression in an "
                                    "object");
    }
    if (!fts_double_match_validate(&filter, err)) {
        return false;
    }
    fts_double_docvec_t kept = {0};
    for (size_t i = 0; i < docs->count; i++) {
        bson_t view;
        fts_double_doc_view(docs->items[i], &view);
        if (fts_double_match(&view, &filter)) {
            fts_double_docvec_push(&kept, fts_double_doc_ref(docs->items[i]));
        }
    }
    vec_replace(docs, &kept);
    return true;
}

static bool stage_project(const bson_t *spec, fts_double_docvec_t *docs, fts_double_error_t *err)
{
    fts_double_projection_t *projection = fts_double_projection_new(spec, err);
    if (!projection) {
        return false;
    }
    fts_double_docvec_t out = {0};
    for (size_t i = 0; i < docs->count; i++) {
        bson_t view, projected = BSON_INITIALIZER;
        fts_double_doc_view(docs->items[i], &view);
        fts_double_projection_apply(projection, &view, &projected);
        fts_double_docvec_push(&out, fts_double_doc_from_bson(&projected));
        bson_destroy(&projected);
    }
    fts_double_projection_destroy(projection);
    vec_replace(docs, &out);
    return true;
}

/* ---- $group ---- */

typedef enum {
    ACC_SUM,
    ACC_AVG,
    ACC_MIN,
    ACC_MAX,
    ACC_FIRST,
    ACC_LAST,
    ACC_PUSH,
    ACC_ADD_TO_SET,
    ACC_COUNT
} acc_kind_t;

typedef struct {
    const char *field;
    acc_kind_t kind;
    bson_value_t expr;
} acc_spec_t;

typedef struct {
    int64_t isum;
    double dsum;
    bool any_double, any_long, overflow;
    int64_t n;
    bool has;
    bson_value_t value; /* borrowed from an input document */
    bson_value_t *list;
    size_t list_count, list_cap;
} acc_state_t;

typedef struct {
    bson_value_t key;
    acc_state_t *accs;
} group_t;

static bool valid_expr(const bson_value_t *expr, fts_double_error_t *err)
{
    if (expr->value_type == BSON_TYPE_DOCUMENT) {
        bson_t doc;
        bson_iter_t it;
        fts_double_value_as_doc(expr, &doc);
        if (bson_iter_init(&it, &doc) && bson_iter_next(&it) && bson_iter_key(&it)[0] == '$') {
            return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                        "expression %s is not supported by ftsync-mongo-double "
                                        "(only constants and \"$field\" paths)",
                                        bson_iter_key(&it));
        }
    }
    return true;
}

/* Evaluates a constant or "$path" against doc; false when the path is missing. */
static bool eval_expr(const bson_value_t *expr, const bson_t *doc, bson_value_t *out)
{
    if (expr->value_type == BSON_TYPE_UTF8 && expr->value.v_utf8.str[0] == '$' &&
        expr->value.v_utf8.str[1] != '$') {
        return fts_double_doc_get_path(doc, expr->value.v_utf8.str + 1, out);
    }
    *out = *expr;
    return true;
}

static void acc_add(acc_state_t *st, acc_kind_t kind, const bson_value_t *v, bool present)
{
    switch (kind) {
    case ACC_COUNT:
        st->isum++;
        break;
    case ACC_SUM:
    case ACC_AVG:
        if (present && fts_double_value_is_number(v)) {
            st->n++;
            if (v->value_type == BSON_TYPE_DOUBLE || v->value_type == BSON_TYPE_DECIMAL128) {
                st->any_double = true;
            } else if (v->value_type == BSON_TYPE_INT64) {
                st->any_long = true;
            }
            st->dsum += fts_double_value_as_double(v);
            if (!st->any_double &&
                __builtin_add_overflow(st->isum, fts_double_value_as_int64(v), &st->isum)) {
                st->overflow = true;
            }
        }
        break;
    case ACC_MIN:
    case ACC_MAX:
        if (present && v->value_type != BSON_TYPE_NULL && v->value_type != BSON_TYPE_UNDEFINED) {
            int c = st->has ? fts_double_value_compare(v, &st->value) : 0;
            if (!st->has || (kind == ACC_MIN ? c < 0 : c > 0)) {
                st->value = *v;
                st->has = true;
            }
        }
        break;
    case ACC_FIRST:
        if (!st->has) {
            st->has = true;
            st->value = present ? *v : (bson_value_t){.value_type = BSON_TYPE_NULL};
        }
        break;
    case ACC_LAST:
        st->has = true;
        st->value = present ? *v : (bson_value_t){.value_type = BSON_TYPE_NULL};
        break;
    case ACC_PUSH:
    case ACC_ADD_TO_SET:
        if (!present) {
            break;
        }
        if (kind == ACC_ADD_TO_SET) {
            for (size_t i = 0; i < st->list_count; i++) {
                if (fts_double_value_compare(&st->list[i], v) == 0) {
                    return;
                }
            }
        }
        if (st->list_count == st->list_cap) {
            st->list_cap = st->list_cap ? st->list_cap * 2 : 8;
            st->list = bson_realloc(st->list, st->list_cap * sizeof *st->list);
        }
        st->list[st->list_count++] = *v;
        break;
    }
}

static void acc_append(bson_t *out, const acc_spec_t *spec, const acc_state_t *st)
{
    switch (spec->kind) {
    case ACC_COUNT:
        bson_append_int32(out, spec->field, -1, (int32_t)st->isum);
        break;
    case ACC_SUM:
        if (st->any_double || st->overflow) {
            bson_append_double(out, spec->field, -1, st->dsum);
        } else if (st->any_long || st->isum > INT32_MAX || st->isum < INT32_MIN) {
            bson_append_int64(out, spec->field, -1, st->isum);
        } else {
            bson_append_int32(out, spec->field, -1, (int32_t)st->isum);
        }
        break;
    case ACC_AVG:
        if (st->n) {
            bson_append_double(out, spec->field, -1, st->dsum / (double)st->n);
        } else {
            bson_append_null(out, spec->field, -1);
        }
        break;
    case ACC_MIN:
    case ACC_MAX:
    case ACC_FIRST:
    case ACC_LAST:
        if (st->has) {
            bson_append_value(out, spec->field, -1, &st->value);
        } else {
            bson_append_null(out, spec->field, -1);
        }
        break;
    case ACC_PUSH:
    case ACC_ADD_TO_SET: {
        bson_t arr;
        bson_append_array_begin(out, spec->field, -1, &arr);
        for (size_t i = 0; i < st->list_count; i++) {
            char buf[16];
            bson_append_value(&arr, fts_double_index_key((uint32_t)i, buf), -1, &st->list[i]);
        }
        bson_append_array_end(out, &arr);
        break;
    }
    }
}

static bool stage_group(const bson_t *spec, fts_double_docvec_t *docs, fts_double_error_t *err)
{
    static const struct {
        const char *name;
        acc_kind_t kind;
    } names[] = {{"$sum", ACC_SUM},     {"$avg", ACC_AVG},
                 {"$min", ACC_MIN},     {"$max", ACC_MAX},
                 {"$first", ACC_FIRST}, {"$last", ACC_LAST},
                 {"$push", ACC_PUSH},   {"$addToSet", ACC_ADD_TO_SET},
                 {"$count", ACC_COUNT}};
    bson_value_t id_expr;
    if (!fts_double_doc_get(spec, "_id", &id_expr)) {
        return fts_double_error_set(err, 15955, "a group specification must include an _id");
    }
    if (!valid_expr(&id_expr, err)) {
        return false;
    }
    size_t naccs = 0;
    acc_spec_t *accs = bson_malloc0((bson_count_keys(spec) + 1) * sizeof *accs);
    bson_iter_t it;
    bson_iter_init(&it, spec);
    bool ok = true;
    while (ok && bson_iter_next(&it)) {
        const char *field = bson_iter_key(&it);
        if (strcmp(field, "_id") == 0) {
            continue;
        }
        bson_iter_t op;
        if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &op) ||
            !bson_iter_next(&op)) {
            ok = fts_double_error_set(err, 40234, "The field '%s' must be an accumulator object",
                                      field);
            break;
        }
        bool known = false;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            if (strcmp(bson_iter_key(&op), names[i].name) == 0) {
                accs[naccs].kind = names[i].kind;
                known = true;
            }
        }
        if (!known) {
            ok =
                fts_double_error_set(err, 15952, "unknown group operator '%s'", bson_iter_key(&op));
            break;
        }
        accs[naccs].field = field;
        accs[naccs].expr = *bson_iter_value(&op);
        ok = accs[naccs].kind == ACC_COUNT || valid_expr(&accs[naccs].expr, err);
        naccs++;
    }
    if (!ok) {
        bson_free(accs);
        return false;
    }
    group_t *groups = NULL;
    size_t ngroups = 0, cap = 0;
    for (size_t d = 0; d < docs->count; d++) {
        bson_t view;
        fts_double_doc_view(docs->items[d], &view);
        bson_value_t key;
        if (!eval_expr(&id_expr, &view, &key)) {
            key.value_type = BSON_TYPE_NULL;
        }
        group_t *g = NULL;
        for (size_t i = 0; i < ngroups && !g; i++) {
            if (fts_double_value_compare(&groups[i].key, &key) == 0) {
                g = &groups[i];
            }
        }
        if (!g) {
            if (ngroups == cap) {
                cap = cap ? cap * 2 : 8;
                groups = bson_realloc(groups, cap * sizeof *groups);
            }
            g = &groups[ngroups++];
            g->key = key;
            g->accs = bson_malloc0((naccs + 1) * sizeof *g->accs);
        }
        for (size_t a = 0; a < naccs; a++) {
            bson_value_t v;
            bool present = eval_expr(&accs[a].expr, &view, &v);
            acc_add(&g->accs[a], accs[a].kind, &v, present);
        }
    }
    fts_double_docvec_t out = {0};
    for (size_t i = 0; i < ngroups; i++) {
        bson_t doc = BSON_INITIALIZER;
        bson_append_value(&doc, "_id", 3, &groups[i].key);
        for (size_t a = 0; a < naccs; a++) {
            acc_append(&doc, &accs[a], &groups[i].accs[a]);
            bson_free(groups[i].accs[a].list);
        }
        fts_double_docvec_push(&out, fts_double_doc_from_bson(&doc));
        bson_destroy(&doc);
        bson_free(groups[i].accs);
    }
    bson_free(groups);
    bson_free(accs);
    vec_replace(docs, &out);
    return true;
}

/* ---- the pipeline ---- */

static bool collect_all(fts_double_doc_t *doc, void *arg)
{
    fts_double_docvec_push(arg, fts_double_doc_ref(doc));
    return true;
}

bool fts_double_pipeline_run(fts_double_server_t *srv, const fts_double_coll_t *coll,
                             const bson_t *pipeline, fts_double_docvec_t *out,
                             fts_double_error_t *err)
{
    bson_iter_t it;
    bool first = true, ok = true;
    bson_iter_init(&it, pipeline);
    while (ok && bson_iter_next(&it)) {
        bson_iter_t stage;
        if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &stage) ||
            !bson_iter_next(&stage)) {
            ok = fts_double_error_set(err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                      "Each element of the 'pipeline' array must be an object");
            break;
        }
        const char *name = bson_iter_key(&stage);
        const bson_value_t *arg = bson_iter_value(&stage);
        bson_t spec;
        bool is_doc = fts_double_value_as_doc(arg, &spec) && arg->value_type == BSON_TYPE_DOCUMENT;
        if (first) {
            first = false;
            if (strcmp(name, "$collStats") == 0) {
                bson_t doc = BSON_INITIALIZER;
                bson_value_t count_opt;
                bson_append_utf8(&doc, "ns", 2, coll ? coll->ns->full : "", -1);
                bson_append_utf8(&doc, "host", 4, srv->host, -1);
                bson_append_date_time(&doc, "localTime", 9, fts_double_now_ms());
                if (is_doc && fts_double_doc_get(&spec, "count", &count_opt)) {
                    bson_append_int64(&doc, "count", 5, coll ? (int64_t)coll->count : 0);
                }
                fts_double_docvec_push(out, fts_double_doc_from_bson(&doc));
                bson_destroy(&doc);
                continue;
            }
            if (strcmp(name, "$match") == 0 && is_doc) {
                /* Let the query engine use the _id tree for a leading $match. */
                ok = fts_double_query_collect(coll, &spec, NULL, 0, 0, out, err);
                continue;
            }
            if (coll) {
                fts_double_coll_walk(coll, false, collect_all, out);
            }
        }
        if (strcmp(name, "$match") == 0) {
            ok = stage_match(arg, out, err);
        } else if (strcmp(name, "$sort") == 0) {
            ok = is_doc ? fts_double_sort_validate(&spec, err)
                        : fts_double_error_set(err, 15973,
                                               "the $sort key specification must be an object");
            if (ok) {
                fts_double_sort(out->items, out->count, &spec);
            }
        } else if (strcmp(name, "$skip") == 0 || strcmp(name, "$limit") == 0) {
            int64_t n = fts_double_value_as_int64(arg);
            if (!fts_double_value_is_number(arg) || n < 0) {
                ok = fts_double_error_set(err, 15956, "%s needs a non-negative number", name);
                break;
            }
            fts_double_docvec_t kept = {0};
            for (size_t i = 0; i < out->count; i++) {
                bool keep = name[1] == 's' ? (int64_t)i >= n : (int64_t)i < n;
                if (keep) {
                    fts_double_docvec_push(&kept, fts_double_doc_ref(out->items[i]));
                }
            }
            vec_replace(out, &kept);
        } else if (strcmp(name, "$project") == 0) {
            ok = is_doc
                     ? stage_project(&spec, out, err)
                     : fts_double_error_set(err, 15969, "$project specification must be an object");
        } else if (strcmp(name, "$unset") == 0) {
            bson_t exclude = BSON_INITIALIZER;
            if (arg->value_type == BSON_TYPE_UTF8) {
                bson_append_int32(&exclude, arg->value.v_utf8.str, -1, 0);
            } else if (arg->value_type == BSON_TYPE_ARRAY) {
                bson_iter_t f;
                bson_iter_init(&f, &spec);
                while (bson_iter_next(&f)) {
                    if (BSON_ITER_HOLDS_UTF8(&f)) {
                        bson_append_int32(&exclude, bson_iter_utf8(&f, NULL), -1, 0);
                    }
                }
            }
            ok = stage_project(&exclude, out, err);
            bson_destroy(&exclude);
        } else if (strcmp(name, "$count") == 0) {
            if (arg->value_type != BSON_TYPE_UTF8 || arg->value.v_utf8.len == 0 ||
                arg->value.v_utf8.str[0] == '$' || strchr(arg->value.v_utf8.str, '.')) {
                ok = fts_double_error_set(err, 40156,
                                          "the count field must be a non-empty string, not "
                                          "starting with '$' nor containing '.'");
                break;
            }
            size_t n = out->count;
            fts_double_docvec_destroy(out);
            if (n > 0) {
                /* Like mongod, $count over nothing produces no document at all. */
                bson_t doc = BSON_INITIALIZER;
                bson_append_int32(&doc, arg->value.v_utf8.str, -1, (int32_t)n);
                fts_double_docvec_push(out, fts_double_doc_from_bson(&doc));
                bson_destroy(&doc);
            }
        } else if (strcmp(name, "$group") == 0) {
            ok = is_doc ? stage_group(&spec, out, err)
                        : fts_double_error_set(err, 15947,
                                               "a group's fields must be specified "
                                               "in an object");
        } else if (strcmp(name, "$changeStream") == 0) {
            ok = fts_double_error_set(err, FTS_DOUBLE_E_CHANGE_STREAM_NOT_FIRST,
                                      "$changeStream is only valid as the first stage in a "
                                      "pipeline");
        } else if (strcmp(name, "$out") == 0 || strcmp(name, "$merge") == 0 ||
                   strcmp(name, "$lookup") == 0 || strcmp(name, "$unwind") == 0 ||
                   strcmp(name, "$addFields") == 0 || strcmp(name, "$set") == 0 ||
                   strcmp(name, "$replaceRoot") == 0 || strcmp(name, "$facet") == 0 ||
                   strcmp(name, "$collStats") == 0) {
            ok = fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                      "%s is not supported by ftsync-mongo-double", name);
        } else {
            ok = fts_double_error_set(err, FTS_DOUBLE_E_UNRECOGNIZED_STAGE,
                                      "Unrecognized pipeline stage name: '%s'", name);
        }
    }
    if (ok && first && coll) {
        fts_double_coll_walk(coll, false, collect_all, out); /* an empty pipeline */
    }
    if (!ok) {
        fts_double_docvec_destroy(out);
    }
    return ok;
}
