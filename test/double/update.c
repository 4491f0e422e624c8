/*
 * update.c - update operators, replacements and upsert seeds (see update.h).
 *
 * An operator update is applied by rebuilding the document once, level by level: at each level
 * the modifications whose path passes through a field are applied to that field (or recursed
 * into it), and the ones whose field does not exist yet create it afterwards, in mongod's
 * lexicographic order. Paths are checked for conflicts first ("a" and "a.b" in one update is
 * error 40), so at most one modification ends at any field.
 */
#include "update.h"

#include "bsonval.h"
#include "query.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

typedef enum {
    M_SET,
    M_UNSET,
    M_INC,
    M_MUL,
    M_MIN,
    M_MAX,
    M_CURRENT_DATE,
    M_PUSH,
    M_ADD_TO_SET,
    M_POP,
    M_PULL,
    M_PULL_ALL,
    M_RENAME_FROM,
    M_RENAME_TO,
    M_SET_ON_INSERT
} mod_kind_t;

typedef struct {
    const char *name;
    mod_kind_t kind;
} op_name_t;

static const op_name_t op_names[] = {
    {"$set", M_SET},
    {"$unset", M_UNSET},
    {"$inc", M_INC},
    {"$mul", M_MUL},
    {"$min", M_MIN},
    {"$max", M_MAX},
    {"$currentDate", M_CURRENT_DATE},
    {"$push", M_PUSH},
    {"$addToSet", M_ADD_TO_SET},
    {"$pop", M_POP},
    {"$pull", M_PULL},
    {"$pullAll", M_PULL_ALL},
    {"$rename", M_RENAME_FROM},
    {"$setOnInsert", M_SET_ON_INSERT},
};

typedef struct {
    mod_kind_t kind;
    const char *op; /* operator name, for messages */
    char *path;     /* owned */
    char **parts;   /* owned, nparts entries */
    size_t nparts;
    bson_value_t arg; /* borrowed from the update (or the old document for $rename) */
} mod_t;

typedef struct {
    mod_t *mods;
    size_t count, cap;
} mods_t;

static void mods_free(mods_t *m)
{
    for (size_t i = 0; i < m->count; i++) {
        for (size_t p = 0; p < m->mods[i].nparts; p++) {
            bson_free(m->mods[i].parts[p]);
        }
        bson_free(m->mods[i].parts);
        bson_free(m->mods[i].path);
    }
    bson_free(m->mods);
}

static bool mods_add(mods_t *m, mod_kind_t kind, const char *op, const char *path,
                     const bson_value_t *arg, fts_double_error_t *err)
{
    if (!*path) {
        return fts_double_error_set(err, 56, "An empty update path is not valid.");
    }
    if (m->count == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->mods = bson_realloc(m->mods, m->cap * sizeof *m->mods);
    }
    mod_t *mod = &m->mods[m->count++];
    memset(mod, 0, sizeof *mod);
    mod->kind = kind;
    mod->op = op;
    mod->path = bson_strdup(path);
    mod->arg = *arg;
    size_t n = 1;
    for (const char *c = path; *c; c++) {
        n += *c == '.';
    }
    mod->parts = bson_malloc0(n * sizeof *mod->parts);
    const char *start = path;
    for (;;) {
        const char *dot = strchr(start, '.');
        size_t len = dot ? (size_t)(dot - start) : strlen(start);
        if (len == 0) {
            return fts_double_error_set(err, 56,
                                        "The update path '%s' contains an empty field name, which "
                                        "is not allowed.",
                                        path);
        }
        if (start[0] == '$') {
            return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                        "The update path '%s' uses a positional operator, which "
                                        "ftsync-mongo-double does not support",
                                        path);
        }
        mod->parts[mod->nparts++] = bson_strndup(start, len);
        if (!dot) {
            break;
        }
        start = dot + 1;
    }
    return true;
}

static bool is_prefix(const mod_t *a, const mod_t *b)
{
    if (a->nparts > b->nparts) {
        return false;
    }
    for (size_t i = 0; i < a->nparts; i++) {
        if (strcmp(a->parts[i], b->parts[i]) != 0) {
            return false;
        }
    }
    return true;
}

/* Parses an operator update into modifications. old_doc supplies $rename's values. */
static bool parse_mods(const bson_t *update, const bson_t *old_doc, bool inserting, mods_t *mods,
                       fts_double_error_t *err)
{
    bson_iter_t it;
    bson_iter_init(&it, update);
    while (bson_iter_next(&it)) {
        const char *op = bson_iter_key(&it);
        const op_name_t *known = NULL;
        for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++) {
            if (strcmp(op_names[i].name, op) == 0) {
                known = &op_names[i];
            }
        }
        if (!known) {
            return fts_double_error_set(err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                        "Unknown modifier: %s. Expected a valid update modifier "
                                        "or pipeline-style update specified as an array",
                                        op);
        }
        if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
            return fts_double_error_set(err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                        "Modifiers operate on fields but we found type %s "
                                        "instead. For example: {$mod: {<field>: ...}} not "
                                        "{%s: %s}",
                                        fts_double_type_alias(bson_iter_type(&it)), op, "...");
        }
        bson_iter_t field;
        bson_iter_recurse(&it, &field);
        while (bson_iter_next(&field)) {
            const char *path = bson_iter_key(&field);
            const bson_value_t *arg = bson_iter_value(&field);
            switch (known->kind) {
            case M_INC:
            case M_MUL:
                if (!fts_double_value_is_number(arg)) {
                    return fts_double_error_set(err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                                "Cannot %s with non-numeric argument: {%s: ...}",
                                                known->kind == M_INC ? "increment" : "multiply",
                                                path);
                }
                break;
            case M_POP:
                if (!fts_double_value_is_number(arg)) {
                    return fts_double_error_set(err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                                "Expected a number in: %s: ...", path);
                }
                break;
            case M_PULL_ALL:
                if (arg->value_type != BSON_TYPE_ARRAY) {
                    return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                                "$pullAll requires an array argument");
                }
                break;
            case M_PULL:
                if (arg->value_type == BSON_TYPE_DOCUMENT) {
                    bson_t wrapper = BSON_INITIALIZER;
                    bson_append_value(&wrapper, "x", 1, arg);
                    bool ok = fts_double_match_validate(&wrapper, err);
                    bson_destroy(&wrapper);
                    if (!ok) {
                        return false;
                    }
                }
                break;
            case M_PUSH:
            case M_ADD_TO_SET:
                if (arg->value_type == BSON_TYPE_DOCUMENT) {
                    bson_t spec;
                    bson_iter_t mod_it;
                    fts_double_value_as_doc(arg, &spec);
                    bson_iter_init(&mod_it, &spec);
                    bool has_each = bson_iter_init_find(&mod_it, &spec, "$each");
                    if (has_each && !BSON_ITER_HOLDS_ARRAY(&mod_it)) {
                        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                                    "The argument to $each in %s must be an "
                                                    "array but it was of type: %s",
                                                    known->name,
                                                    fts_double_type_alias(bson_iter_type(&mod_it)));
                    }
                    bson_iter_init(&mod_it, &spec);
                    while (has_each && bson_iter_next(&mod_it)) {
                        const char *k = bson_iter_key(&mod_it);
                        bool allowed = strcmp(k, "$each") == 0 ||
                                       (known->kind == M_PUSH &&
                                        (strcmp(k, "$slice") == 0 || strcmp(k, "$position") == 0));
                        if (!allowed) {
                            return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                                        "%s modifier %s is not supported by "
                                                        "ftsync-mongo-double",
                                                        known->name, k);
                        }
                    }
                }
                break;
            case M_RENAME_FROM: {
                if (arg->value_type != BSON_TYPE_UTF8) {
                    return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                                "The 'to' field for $rename must be a string: "
                                                "%s: ...",
                                                path);
                }
                bson_value_t current;
                bool present = old_doc && fts_double_doc_get_path(old_doc, path, &current);
                if (!mods_add(mods, M_RENAME_FROM, "$rename", path, arg, err)) {
                    return false;
                }
                if (!mods_add(mods, M_RENAME_TO, "$rename", arg->value.v_utf8.str,
                              present ? &current : arg, err)) {
                    return false;
                }
                if (!present) {
                    mods->mods[mods->count - 1].kind = M_RENAME_FROM; /* nothing to move */
                }
                continue;
            }
            default:
                break;
            }
            mod_kind_t kind = known->kind;
            if (kind == M_SET_ON_INSERT) {
                kind = inserting ? M_SET : M_SET_ON_INSERT;
            }
            if (!mods_add(mods, kind, known->name, path, arg, err)) {
                return false;
            }
        }
    }
    for (size_t i = 0; i < mods->count; i++) {
        for (size_t j = 0; j < mods->count; j++) {
            if (i != j && is_prefix(&mods->mods[i], &mods->mods[j]) &&
                (i < j || mods->mods[i].nparts != mods->mods[j].nparts)) {
                return fts_double_error_set(err, FTS_DOUBLE_E_CONFLICTING_UPDATE_OPERATORS,
                                            "Updating the path '%s' would create a conflict at "
                                            "'%s'",
                                            mods->mods[j].path, mods->mods[i].path);
            }
        }
    }
    return true;
}

bool fts_double_update_check(const bson_value_t *u, bool *is_replacement, fts_double_error_t *err)
{
    if (u->value_type == BSON_TYPE_ARRAY) {
        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                    "pipeline-style updates are not supported by "
                                    "ftsync-mongo-double");
    }
    if (u->value_type != BSON_TYPE_DOCUMENT) {
        return fts_double_error_set(err, FTS_DOUBLE_E_FAILED_TO_PARSE,
                                    "Update argument must be either an object or an array");
    }
    bson_t doc;
    bson_iter_t it;
    fts_double_value_as_doc(u, &doc);
    *is_replacement = true;
    if (bson_iter_init(&it, &doc) && bson_iter_next(&it) && bson_iter_key(&it)[0] == '$') {
        *is_replacement = false;
        mods_t mods = {0};
        bool ok = parse_mods(&doc, NULL, false, &mods, err);
        mods_free(&mods);
        return ok;
    }
    bson_iter_init(&it, &doc);
    while (bson_iter_next(&it)) {
        if (bson_iter_key(&it)[0] == '$') {
            return fts_double_error_set(err, FTS_DOUBLE_E_DOLLAR_PREFIXED_FIELD_NAME,
                                        "The dollar ($) prefixed field '%s' in '%s' is not allowed "
                                        "in the context of an update's replacement document.",
                                        bson_iter_key(&it), bson_iter_key(&it));
        }
    }
    return true;
}

/* ---- applying ---- */

typedef struct {
    bool inserting;
    bson_t updated; /* updatedFields */
    bson_t removed; /* removedFields (array) */
    uint32_t nremoved;
    const bson_t *old_doc;
    fts_double_error_t *err;
} apply_ctx_t;

static void record_updated(apply_ctx_t *ctx, const char *path, const bson_value_t *v)
{
    bson_append_value(&ctx->updated, path, -1, v);
}

static void record_removed(apply_ctx_t *ctx, const char *path)
{
    char buf[16];
    bson_append_utf8(&ctx->removed, fts_double_index_key(ctx->nremoved++, buf), -1, path, -1);
}

static char *join_path(const char *prefix, const char *name)
{
    return *prefix ? bson_strdup_printf("%s.%s", prefix, name) : bson_strdup(name);
}

static char *id_json(const apply_ctx_t *ctx)
{
    bson_value_t id;
    if (ctx->old_doc && fts_double_doc_get(ctx->old_doc, "_id", &id)) {
        return fts_double_value_to_json(&id);
    }
    return bson_strdup("?");
}

static bool creates(mod_kind_t kind)
{
    return kind != M_UNSET && kind != M_POP && kind != M_PULL && kind != M_PULL_ALL &&
           kind != M_RENAME_FROM && kind != M_SET_ON_INSERT;
}

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void current_date_value(const bson_value_t *arg, bson_value_t *out)
{
    bson_value_t type;
    bson_t spec;
    if (fts_double_value_as_doc(arg, &spec) && fts_double_doc_get(&spec, "$type", &type) &&
        type.value_type == BSON_TYPE_UTF8 && strcmp(type.value.v_utf8.str, "timestamp") == 0) {
        out->value_type = BSON_TYPE_TIMESTAMP;
        out->value.v_timestamp.timestamp = (uint32_t)(now_ms() / 1000);
        out->value.v_timestamp.increment = 1;
        return;
    }
    out->value_type = BSON_TYPE_DATE_TIME;
    out->value.v_datetime = now_ms();
}

/* The arithmetic of $inc and $mul: int32 stays int32 unless it overflows, int64 wins over int32,
 * double over both (decimal is computed as double). */
static void arith(const bson_value_t *a, const bson_value_t *b, bool multiply, bson_value_t *out)
{
    if (a->value_type == BSON_TYPE_DOUBLE || b->value_type == BSON_TYPE_DOUBLE ||
        a->value_type == BSON_TYPE_DECIMAL128 || b->value_type == BSON_TYPE_DECIMAL128) {
        double x = fts_double_value_as_double(a), y = fts_double_value_as_double(b);
        out->value_type = BSON_TYPE_DOUBLE;
        out->value.v_double = multiply ? x * y : x + y;
        return;
    }
    int64_t x = fts_double_value_as_int64(a), y = fts_double_value_as_int64(b), r;
    bool overflow = multiply ? __builtin_mul_overflow(x, y, &r) : __builtin_add_overflow(x, y, &r);
    if (overflow) {
        out->value_type = BSON_TYPE_DOUBLE;
        out->value.v_double = multiply ? (double)x * (double)y : (double)x + (double)y;
    } else if (a->value_type == BSON_TYPE_INT32 && b->value_type == BSON_TYPE_INT32 &&
               r >= INT32_MIN && r <= INT32_MAX) {
        out->value_type = BSON_TYPE_INT32;
        out->value.v_int32 = (int32_t)r;
    } else {
        out->value_type = BSON_TYPE_INT64;
        out->value.v_int64 = r;
    }
}

/* The values $push/$addToSet add, and $push's $slice/$position. */
typedef struct {
    bson_iter_t each; /* iterates the values when has_each */
    bool has_each;
    bool has_slice;
    int64_t slice;
    bool has_position;
    int64_t position;
} push_spec_t;

static void push_spec(const bson_value_t *arg, push_spec_t *spec)
{
    memset(spec, 0, sizeof *spec);
    bson_t doc;
    bson_value_t v;
    if (!fts_double_value_as_doc(arg, &doc) || arg->value_type != BSON_TYPE_DOCUMENT ||
        !fts_double_doc_get(&doc, "$each", &v)) {
        return;
    }
    spec->has_each = true;
    bson_iter_init_from_data(&spec->each, v.value.v_doc.data, v.value.v_doc.data_len);
    if (fts_double_doc_get(&doc, "$slice", &v)) {
        spec->has_slice = true;
        spec->slice = fts_double_value_as_int64(&v);
    }
    if (fts_double_doc_get(&doc, "$position", &v)) {
        spec->has_position = true;
        spec->position = fts_double_value_as_int64(&v);
    }
}

typedef struct {
    bson_value_t *items;
    size_t count, cap;
} values_t;

static void values_push(values_t *v, const bson_value_t *x)
{
    if (v->count == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->items = bson_realloc(v->items, v->cap * sizeof *v->items);
    }
    v->items[v->count++] = *x;
}

static void values_from_array(values_t *v, const bson_value_t *array)
{
    bson_iter_t it;
    if (array && array->value_type == BSON_TYPE_ARRAY &&
        bson_iter_init_from_data(&it, array->value.v_doc.data, array->value.v_doc.data_len)) {
        while (bson_iter_next(&it)) {
            values_push(v, bson_iter_value(&it));
        }
    }
}

static bool values_contains(const values_t *v, const bson_value_t *x)
{
    for (size_t i = 0; i < v->count; i++) {
        if (fts_double_value_compare(&v->items[i], x) == 0) {
            return true;
        }
    }
    return false;
}

static void append_values_array(bson_t *dst, const char *key, const values_t *v, size_t from,
                                size_t to)
{
    bson_t arr;
    bson_append_array_begin(dst, key, -1, &arr);
    for (size_t i = from; i < to; i++) {
        char buf[16];
        bson_append_value(&arr, fts_double_index_key((uint32_t)(i - from), buf), -1, &v->items[i]);
    }
    bson_append_array_end(dst, &arr);
}

/* Whether $pull removes element e. */
static bool pull_matches(const bson_value_t *cond, const bson_value_t *e)
{
    if (cond->value_type == BSON_TYPE_DOCUMENT) {
        bson_t spec;
        bson_iter_t first;
        fts_double_value_as_doc(cond, &spec);
        if (bson_iter_init(&first, &spec) && bson_iter_next(&first) &&
            bson_iter_key(&first)[0] == '$') {
            return fts_double_match_value(e, &spec);
        }
        bson_t element;
        return e->value_type == BSON_TYPE_DOCUMENT && fts_double_value_as_doc(e, &element) &&
               fts_double_match(&element, &spec);
    }
    if (cond->value_type == BSON_TYPE_REGEX) {
        bson_t ops = BSON_INITIALIZER;
        bson_append_value(&ops, "$regex", -1, cond);
        bool hit = fts_double_match_value(e, &ops);
        bson_destroy(&ops);
        return hit;
    }
    return fts_double_value_compare(cond, e) == 0;
}

/* The array operators on an existing array (or a missing one: existing NULL). Appends the new
 * array to dst under key and records the change. */
static bool apply_array_op(apply_ctx_t *ctx, const mod_t *mod, const bson_value_t *existing,
                           const char *key, const char *path, bson_t *dst, bool record)
{
    values_t old = {0}, out = {0};
    values_from_array(&old, existing);
    size_t appended_from = SIZE_MAX; /* index from which elements were only appended */
    switch (mod->kind) {
    case M_PUSH: {
        push_spec_t spec;
        push_spec(&mod->arg, &spec);
        values_t add = {0};
        if (spec.has_each) {
            while (bson_iter_next(&spec.each)) {
                values_push(&add, bson_iter_value(&spec.each));
            }
        } else {
            values_push(&add, &mod->arg);
        }
        size_t pos = old.count;
        if (spec.has_position) {
            int64_t p = spec.position < 0 ? (int64_t)old.count + spec.position : spec.position;
            pos = p < 0 ? 0 : (p > (int64_t)old.count ? old.count : (size_t)p);
        }
        for (size_t i = 0; i < pos; i++) {
            values_push(&out, &old.items[i]);
        }
        for (size_t i = 0; i < add.count; i++) {
            values_push(&out, &add.items[i]);
        }
        for (size_t i = pos; i < old.count; i++) {
            values_push(&out, &old.items[i]);
        }
        bson_free(add.items);
        size_t from = 0, to = out.count;
        if (spec.has_slice) {
            if (spec.slice >= 0) {
                to = (size_t)spec.slice < out.count ? (size_t)spec.slice : out.count;
            } else {
                size_t keep = (size_t)(-spec.slice);
                from = keep < out.count ? out.count - keep : 0;
            }
        }
        if (from == 0 && to == out.count && pos == old.count) {
            appended_from = old.count;
        }
        if (from != 0 || to != out.count) {
            values_t sliced = {0};
            for (size_t i = from; i < to; i++) {
                values_push(&sliced, &out.items[i]);
            }
            bson_free(out.items);
            out = sliced;
        }
        break;
    }
    case M_ADD_TO_SET: {
        push_spec_t spec;
        push_spec(&mod->arg, &spec);
        for (size_t i = 0; i < old.count; i++) {
            values_push(&out, &old.items[i]);
        }
        appended_from = old.count;
        if (spec.has_each) {
            while (bson_iter_next(&spec.each)) {
                if (!values_contains(&out, bson_iter_value(&spec.each))) {
                    values_push(&out, bson_iter_value(&spec.each));
                }
            }
        } else if (!values_contains(&out, &mod->arg)) {
            values_push(&out, &mod->arg);
        }
        break;
    }
    case M_POP: {
        bool first = fts_double_value_as_double(&mod->arg) < 0;
        for (size_t i = 0; i < old.count; i++) {
            if (old.count && ((first && i == 0) || (!first && i == old.count - 1))) {
                continue;
            }
            values_push(&out, &old.items[i]);
        }
        break;
    }
    case M_PULL:
    case M_PULL_ALL:
        for (size_t i = 0; i < old.count; i++) {
            bool drop = false;
            if (mod->kind == M_PULL) {
                drop = pull_matches(&mod->arg, &old.items[i]);
            } else {
                bson_iter_t it;
                bson_iter_init_from_data(&it, mod->arg.value.v_doc.data,
                                         mod->arg.value.v_doc.data_len);
                while (!drop && bson_iter_next(&it)) {
                    drop = fts_double_value_compare(bson_iter_value(&it), &old.items[i]) == 0;
                }
            }
            if (!drop) {
                values_push(&out, &old.items[i]);
            }
        }
        break;
    default:
        break;
    }
    append_values_array(dst, key, &out, 0, out.count);
    if (record) {
        bool same = existing && out.count == old.count;
        for (size_t i = 0; same && i < out.count; i++) {
            same = fts_double_value_identical(&out.items[i], &old.items[i]);
        }
        if (!existing) {
            bson_t tmp = BSON_INITIALIZER;
            append_values_array(&tmp, path, &out, 0, out.count);
            bson_concat(&ctx->updated, &tmp);
            bson_destroy(&tmp);
        } else if (!same && appended_from != SIZE_MAX && appended_from <= out.count) {
            for (size_t i = appended_from; i < out.count; i++) {
                char *p = bson_strdup_printf("%s.%zu", path, i);
                record_updated(ctx, p, &out.items[i]);
                bson_free(p);
            }
        } else if (!same) {
            bson_t tmp = BSON_INITIALIZER;
            append_values_array(&tmp, path, &out, 0, out.count);
            bson_concat(&ctx->updated, &tmp);
            bson_destroy(&tmp);
        }
    }
    bson_free(old.items);
    bson_free(out.items);
    return true;
}

/* Applies a modification that ends at an existing field (existing non-NULL) or creates it
 * (existing NULL). in_array: the field is an array element (unset writes null). */
static bool apply_terminal(apply_ctx_t *ctx, const mod_t *mod, const bson_value_t *existing,
                           const char *key, const char *path, bool in_array, bool record,
                           bson_t *dst)
{
    bson_value_t result;
    switch (mod->kind) {
    case M_SET:
    case M_RENAME_TO:
        result = mod->arg;
        break;
    case M_SET_ON_INSERT:
        if (existing) {
            bson_append_value(dst, key, -1, existing);
        }
        return true;
    case M_UNSET:
    case M_RENAME_FROM:
        if (!existing) {
            return true;
        }
        if (in_array) {
            result.value_type = BSON_TYPE_NULL;
            bson_append_null(dst, key, -1);
            if (record) {
                record_updated(ctx, path, &result);
            }
        } else if (record) {
            record_removed(ctx, path);
        }
        return true;
    case M_INC:
    case M_MUL:
        if (existing && !fts_double_value_is_number(existing)) {
            char *id = id_json(ctx);
            fts_double_error_set(ctx->err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                 "Cannot apply %s to a value of non-numeric type. {_id: %s} has "
                                 "the field '%s' of non-numeric type %s",
                                 mod->op, id, key, fts_double_type_alias(existing->value_type));
            bson_free(id);
            return false;
        }
        if (existing) {
            arith(existing, &mod->arg, mod->kind == M_MUL, &result);
        } else if (mod->kind == M_INC) {
            result = mod->arg;
        } else {
            bson_value_t zero = mod->arg;
            zero.value.v_int64 = 0;
            if (zero.value_type == BSON_TYPE_INT32) {
                zero.value.v_int32 = 0;
            } else if (zero.value_type != BSON_TYPE_INT64) {
                zero.value_type = BSON_TYPE_DOUBLE;
                zero.value.v_double = 0;
            }
            result = zero;
        }
        break;
    case M_MIN:
    case M_MAX: {
        int c = existing ? fts_double_value_compare(&mod->arg, existing) : 0;
        bool take = !existing || (mod->kind == M_MIN ? c < 0 : c > 0);
        result = take ? mod->arg : *existing;
        break;
    }
    case M_CURRENT_DATE:
        current_date_value(&mod->arg, &result);
        break;
    case M_PUSH:
    case M_ADD_TO_SET:
    case M_POP:
    case M_PULL:
    case M_PULL_ALL:
        if (existing && existing->value_type != BSON_TYPE_ARRAY) {
            char *id = id_json(ctx);
            fts_double_error_set(ctx->err, FTS_DOUBLE_E_BAD_VALUE,
                                 "The field '%s' must be an array but is of type %s in document "
                                 "{_id: %s}",
                                 key, fts_double_type_alias(existing->value_type), id);
            bson_free(id);
            return false;
        }
        if (!existing && !creates(mod->kind)) {
            return true;
        }
        return apply_array_op(ctx, mod, existing, key, path, dst, record);
    }
    bson_append_value(dst, key, -1, &result);
    if (record && (!existing || !fts_double_value_identical(existing, &result))) {
        record_updated(ctx, path, &result);
    }
    return true;
}

static bool rebuild(apply_ctx_t *ctx, const bson_value_t *src, bool is_array, mod_t **mods,
                    size_t n, size_t depth, const char *prefix, bool record, bson_t *dst);

/* Recurses into an existing field with the modifications that go deeper than it. */
static bool descend(apply_ctx_t *ctx, const bson_value_t *v, const char *key, mod_t **group,
                    size_t n, size_t depth, const char *path, bool record, bson_t *dst)
{
    if (v->value_type == BSON_TYPE_DOCUMENT || v->value_type == BSON_TYPE_ARRAY) {
        bson_t sub;
        bool is_array = v->value_type == BSON_TYPE_ARRAY;
        if (is_array) {
            bson_append_array_begin(dst, key, -1, &sub);
        } else {
            bson_append_document_begin(dst, key, -1, &sub);
        }
        bool ok = rebuild(ctx, v, is_array, group, n, depth + 1, path, record, &sub);
        if (is_array) {
            bson_append_array_end(dst, &sub);
        } else {
            bson_append_document_end(dst, &sub);
        }
        return ok;
    }
    for (size_t i = 0; i < n; i++) {
        if (creates(group[i]->kind)) {
            char *json = fts_double_value_to_json(v);
            fts_double_error_set(ctx->err, FTS_DOUBLE_E_PATH_NOT_VIABLE,
                                 "Cannot create field '%s' in element {%s: %s}",
                                 group[i]->parts[depth + 1], key, json);
            bson_free(json);
            return false;
        }
    }
    bson_append_value(dst, key, -1, v); /* $unset of a path below a scalar: nothing to do */
    return true;
}

/* Creates a missing field for a group of modifications that share it. */
static bool create_field(apply_ctx_t *ctx, const char *key, mod_t **group, size_t n, size_t depth,
                         const char *path, bool record, bool in_array, bson_t *dst)
{
    if (n == 1 && group[0]->nparts == depth + 1) {
        return apply_terminal(ctx, group[0], NULL, key, path, in_array, record, dst);
    }
    bool any_creates = false;
    for (size_t i = 0; i < n; i++) {
        any_creates = any_creates || creates(group[i]->kind);
    }
    if (!any_creates) {
        return true;
    }
    /* A new embedded document: recorded whole, at this level, as mongod's log does. */
    bson_t sub = BSON_INITIALIZER;
    if (!rebuild(ctx, NULL, false, group, n, depth + 1, path, false, &sub)) {
        bson_destroy(&sub);
        return false;
    }
    bson_append_document(dst, key, -1, &sub);
    if (record) {
        bson_append_document(&ctx->updated, path, -1, &sub);
    }
    bson_destroy(&sub);
    return true;
}

static int compare_field_names(const char *a, const char *b)
{
    uint32_t x, y;
    bool na = fts_double_parse_index(a, strlen(a), &x),
         nb = fts_double_parse_index(b, strlen(b), &y);
    if (na && nb) {
        return x < y ? -1 : x > y;
    }
    return strcmp(a, b);
}

static size_t sort_depth; /* the level compare_mods looks at; qsort has no context argument */

static int compare_mods(const void *a, const void *b)
{
    const mod_t *x = *(mod_t *const *)a, *y = *(mod_t *const *)b;
    return compare_field_names(x->parts[sort_depth], y->parts[sort_depth]);
}

static bool rebuild(apply_ctx_t *ctx, const bson_value_t *src, bool is_array, mod_t **mods,
                    size_t n, size_t depth, const char *prefix, bool record, bson_t *dst)
{
    mod_t **group = bson_malloc((n + 1) * sizeof *group);
    bool *handled = bson_malloc0(n + 1);
    bool ok = true;
    uint32_t length = 0;
    if (src) {
        bson_iter_t it;
        bson_iter_init_from_data(&it, src->value.v_doc.data, src->value.v_doc.data_len);
        while (ok && bson_iter_next(&it)) {
            const char *key = bson_iter_key(&it);
            size_t g = 0;
            for (size_t i = 0; i < n; i++) {
                if (strcmp(mods[i]->parts[depth], key) == 0) {
                    group[g++] = mods[i];
                    handled[i] = true;
                }
            }
            length++;
            const bson_value_t *v = bson_iter_value(&it);
            if (g == 0) {
                bson_append_value(dst, key, -1, v);
                continue;
            }
            char *path = join_path(prefix, key);
            if (g == 1 && group[0]->nparts == depth + 1) {
                ok = apply_terminal(ctx, group[0], v, key, path, is_array, record, dst);
            } else {
                ok = descend(ctx, v, key, group, g, depth, path, record, dst);
            }
            bson_free(path);
        }
    }
    /* Fields that do not exist yet, in lexicographic (array: numeric) order. */
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        if (!handled[i]) {
            group[pending++] = mods[i];
        }
    }
    sort_depth = depth;
    qsort(group, pending, sizeof *group, compare_mods);
    for (size_t i = 0; ok && i < pending;) {
        size_t j = i + 1;
        while (j < pending && strcmp(group[j]->parts[depth], group[i]->parts[depth]) == 0) {
            j++;
        }
        const char *key = group[i]->parts[depth];
        char *path = join_path(prefix, key);
        if (is_array) {
            uint32_t index;
            if (!fts_double_parse_index(key, strlen(key), &index)) {
                bool any_creates = false;
                for (size_t k = i; k < j; k++) {
                    any_creates = any_creates || creates(group[k]->kind);
                }
                if (any_creates) {
                    ok = fts_double_error_set(ctx->err, FTS_DOUBLE_E_PATH_NOT_VIABLE,
                                              "Cannot create field '%s' in element {%s: [...]}",
                                              key, prefix);
                }
            } else {
                /* Setting past the end pads with nulls, as mongod does. */
                for (; length < index; length++) {
                    char buf[16];
                    bson_append_null(dst, fts_double_index_key(length, buf), -1);
                }
                char buf[16];
                ok = create_field(ctx, fts_double_index_key(index, buf), &group[i], j - i, depth,
                                  path, record, true, dst);
                length = index + 1;
            }
        } else {
            ok = create_field(ctx, key, &group[i], j - i, depth, path, record, false, dst);
        }
        bson_free(path);
        i = j;
    }
    bson_free(handled);
    bson_free(group);
    return ok;
}

bool fts_double_update_apply(const bson_t *old_doc, const bson_t *update, bool inserting,
                             bson_t *new_doc, bson_t *desc, fts_double_error_t *err)
{
    mods_t mods = {0};
    apply_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.inserting = inserting;
    ctx.old_doc = old_doc;
    ctx.err = err;
    bson_init(&ctx.updated);
    bson_init(&ctx.removed);
    bool ok = parse_mods(update, old_doc, inserting, &mods, err);
    if (ok) {
        mod_t **all = bson_malloc((mods.count + 1) * sizeof *all);
        for (size_t i = 0; i < mods.count; i++) {
            all[i] = &mods.mods[i];
        }
        bson_value_t root;
        root.value_type = BSON_TYPE_DOCUMENT;
        root.value.v_doc.data = (uint8_t *)bson_get_data(old_doc);
        root.value.v_doc.data_len = old_doc->len;
        ok = rebuild(&ctx, &root, false, all, mods.count, 0, "", desc != NULL, new_doc);
        bson_free(all);
    }
    if (ok) {
        /* _id is immutable: whatever the operators did, it must come out identical. */
        bson_value_t before, after;
        bool had = fts_double_doc_get(old_doc, "_id", &before);
        bool has = fts_double_doc_get(new_doc, "_id", &after);
        if (had && (!has || !fts_double_value_identical(&before, &after))) {
            ok = fts_double_error_set(err, FTS_DOUBLE_E_IMMUTABLE_FIELD,
                                      "Performing an update on the path '_id' would modify the "
                                      "immutable field '_id'");
        }
    }
    if (ok && desc) {
        bson_append_document(desc, "updatedFields", -1, &ctx.updated);
        bson_append_array(desc, "removedFields", -1, &ctx.removed);
        bson_t empty = BSON_INITIALIZER;
        bson_append_array(desc, "truncatedArrays", -1, &empty);
        bson_destroy(&empty);
    }
    bson_destroy(&ctx.updated);
    bson_destroy(&ctx.removed);
    mods_free(&mods);
    return ok;
}

bool fts_double_update_replace(const bson_value_t *id, const bson_t *repl, bson_t *new_doc,
                               fts_double_error_t *err)
{
    bson_value_t repl_id;
    bool has_id = fts_double_doc_get(repl, "_id", &repl_id);
    if (id && has_id && !fts_double_value_identical(id, &repl_id)) {
        char *json = fts_double_value_to_json(&repl_id);
        fts_double_error_set(err, FTS_DOUBLE_E_IMMUTABLE_FIELD,
                             "After applying the update, the (immutable) field '_id' was found to "
                             "have been altered to _id: %s",
                             json);
        bson_free(json);
        return false;
    }
    if (id) {
        bson_append_value(new_doc, "_id", 3, id);
    } else if (has_id) {
        bson_append_value(new_doc, "_id", 3, &repl_id);
    }
    bson_iter_t it;
    bson_iter_init(&it, repl);
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "_id") != 0) {
            bson_append_value(new_doc, bson_iter_key(&it), -1, bson_iter_value(&it));
        }
    }
    return true;
}

/* Collects the equality conditions of a query as $set entries. */
static void seed_equalities(const bson_t *query, bson_t *set)
{
    bson_iter_t it;
    bson_iter_init(&it, query);
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        const bson_value_t *v = bson_iter_value(&it);
        if (strcmp(key, "$and") == 0 && v->value_type == BSON_TYPE_ARRAY) {
            bson_iter_t clause;
            bson_iter_recurse(&it, &clause);
            while (bson_iter_next(&clause)) {
                bson_t sub;
                if (fts_double_value_as_doc(bson_iter_value(&clause), &sub)) {
                    seed_equalities(&sub, set);
                }
            }
            continue;
        }
        if (key[0] == '$' || v->value_type == BSON_TYPE_REGEX) {
            continue;
        }
        bson_t ops;
        bson_iter_t first;
        if (v->value_type == BSON_TYPE_DOCUMENT && fts_double_value_as_doc(v, &ops) &&
            bson_iter_init(&first, &ops) && bson_iter_next(&first) &&
            bson_iter_key(&first)[0] == '$') {
            bson_value_t eq;
            if (fts_double_doc_get(&ops, "$eq", &eq)) {
                bson_append_value(set, key, -1, &eq);
            }
            continue;
        }
        bson_append_value(set, key, -1, v);
    }
}

bool fts_double_update_upsert_seed(const bson_t *query, bson_t *seed, fts_double_error_t *err)
{
    bson_t update = BSON_INITIALIZER, set, empty = BSON_INITIALIZER;
    bson_append_document_begin(&update, "$set", 4, &set);
    seed_equalities(query, &set);
    bson_append_document_end(&update, &set);
    bool ok = fts_double_update_apply(&empty, &update, true, seed, NULL, err);
    bson_destroy(&update);
    bson_destroy(&empty);
    return ok;
}

void fts_double_update_ensure_id(const bson_t *doc, bson_t *out)
{
    bson_iter_t it;
    bson_value_t id;
    bool has_id = fts_double_doc_get(doc, "_id", &id);
    if (has_id && bson_iter_init(&it, doc) && bson_iter_next(&it) &&
        strcmp(bson_iter_key(&it), "_id") == 0) {
        bson_concat(out, doc);
        return;
    }
    if (has_id) {
        bson_append_value(out, "_id", 3, &id);
    } else {
        bson_oid_t oid;
        bson_oid_init(&oid, NULL);
        bson_append_oid(out, "_id", 3, &oid);
    }
    bson_iter_init(&it, doc);
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "_id") != 0) {
            bson_append_value(out, bson_iter_key(&it), -1, bson_iter_value(&it));
        }
    }
}
