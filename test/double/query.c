/*
 * query.c - filter matching, projection and sorting (see query.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r */
#endif
#include "query.h"

#include "bsonval.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>

/* ---- path resolution ---- */

typedef struct {
    bson_value_t value;
    bool expanded;
} cand_t;

/* The values a path reaches; small inline storage because most paths reach one value. */
typedef struct {
    cand_t *items;
    size_t count, cap;
    cand_t inline_items[8];
} cands_t;

static void cands_init(cands_t *c)
{
    c->items = c->inline_items;
    c->count = 0;
    c->cap = sizeof c->inline_items / sizeof c->inline_items[0];
}

static void cands_free(cands_t *c)
{
    if (c->items != c->inline_items) {
        bson_free(c->items);
    }
}

static void cands_push(cands_t *c, const bson_value_t *v, bool expanded)
{
    if (c->count == c->cap) {
        size_t cap = c->cap * 2;
        cand_t *items = bson_malloc(cap * sizeof *items);
        memcpy(items, c->items, c->count * sizeof *items);
        if (c->items != c->inline_items) {
            bson_free(c->items);
        }
        c->items = items;
        c->cap = cap;
    }
    c->items[c->count].value = *v;
    c->items[c->count].expanded = expanded;
    c->count++;
}

static void push_leaf(cands_t *out, const bson_value_t *v)
{
    cands_push(out, v, false);
    if (v->value_type == BSON_TYPE_ARRAY) {
        bson_iter_t it;
        if (bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len)) {
            while (bson_iter_next(&it)) {
                cands_push(out, bson_iter_value(&it), true);
            }
        }
    }
}

/* Resolves path inside a document or array value (see query.h for the semantics). */
static void resolve(const bson_value_t *container, const char *path, cands_t *out)
{
    const char *dot = strchr(path, '.');
    size_t clen = dot ? (size_t)(dot - path) : strlen(path);
    const char *rest = dot ? dot + 1 : NULL;
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, container->value.v_doc.data,
                                  container->value.v_doc.data_len)) {
        return;
    }
    if (container->value_type == BSON_TYPE_DOCUMENT) {
        if (!bson_iter_find_w_len(&it, path, (int)clen)) {
            return;
        }
        const bson_value_t *v = bson_iter_value(&it);
        if (!rest) {
            push_leaf(out, v);
        } else if (v->value_type == BSON_TYPE_DOCUMENT || v->value_type == BSON_TYPE_ARRAY) {
            resolve(v, rest, out);
        }
        return;
    }
    /* An array: a numeric component addresses an element; every embedded document is also
     * searched with the whole remaining path (mongod's implicit array traversal). */
    uint32_t index;
    bool numeric = fts_double_parse_index(path, clen, &index);
    uint32_t i = 0;
    while (bson_iter_next(&it)) {
        const bson_value_t *v = bson_iter_value(&it);
        if (numeric && i == index) {
            if (!rest) {
                push_leaf(out, v);
            } else if (v->value_type == BSON_TYPE_DOCUMENT || v->value_type == BSON_TYPE_ARRAY) {
                resolve(v, rest, out);
            }
        }
        if (v->value_type == BSON_TYPE_DOCUMENT) {
            resolve(v, path, out);
        }
        i++;
    }
}

static void resolve_doc(const bson_t *doc, const char *path, cands_t *out)
{
    bson_value_t root;
    root.value_type = BSON_TYPE_DOCUMENT;
    root.value.v_doc.data = (uint8_t *)bson_get_data(doc);
    root.value.v_doc.data_len = doc->len;
    resolve(&root, path, out);
}

void fts_double_path_values(const bson_t *doc, const char *path, fts_double_path_fn fn, void *arg)
{
    cands_t c;
    cands_init(&c);
    resolve_doc(doc, path, &c);
    for (size_t i = 0; i < c.count; i++) {
        fn(&c.items[i].value, c.items[i].expanded, arg);
    }
    cands_free(&c);
}

/* ---- regular expressions ---- */

/* Translates the Perl shorthands tests use into POSIX ERE, which is what libc offers. */
static char *translate_regex(const char *pattern)
{
    size_t len = strlen(pattern);
    char *out = bson_malloc(len * 12 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (pattern[i] == '\\' && i + 1 < len) {
            const char *rep = NULL;
            switch (pattern[i + 1]) {
            case 'd':
                rep = "[0-9]";
                break;
            case 'D':
                rep = "[^0-9]";
                break;
            case 'w':
                rep = "[A-Za-z0-9_]";
                break;
            case 'W':
                rep = "[^A-Za-z0-9_]";
                break;
            case 's':
                rep = "[[:space:]]";
                break;
            case 'S':
                rep = "[^[:space:]]";
                break;
            default:
                break;
            }
            if (rep) {
                size_t rl = strlen(rep);
                memcpy(out + o, rep, rl);
                o += rl;
                i++;
                continue;
            }
            out[o++] = pattern[i++];
        }
        out[o++] = pattern[i];
    }
    out[o] = '\0';
    return out;
}

static bool regex_compile(const char *pattern, const char *options, regex_t *re)
{
    int flags = REG_EXTENDED | REG_NOSUB;
    if (options && strchr(options, 'i')) {
        flags |= REG_ICASE;
    }
    if (options && strchr(options, 'm')) {
        flags |= REG_NEWLINE;
    }
    char *translated = translate_regex(pattern);
    int rc = regcomp(re, translated, flags);
    bson_free(translated);
    return rc == 0;
}

static bool regex_matches_value(const char *pattern, const char *options, const bson_value_t *v)
{
    if (v->value_type == BSON_TYPE_REGEX) {
        /* A stored regex equals a query regex only when identical. */
        return strcmp(v->value.v_regex.regex, pattern) == 0 &&
               strcmp(v->value.v_regex.options, options ? options : "") == 0;
    }
    if (v->value_type != BSON_TYPE_UTF8 && v->value_type != BSON_TYPE_SYMBOL) {
        return false;
    }
    regex_t re;
    if (!regex_compile(pattern, options, &re)) {
        return false;
    }
    const char *s =
        v->value_type == BSON_TYPE_UTF8 ? v->value.v_utf8.str : v->value.v_symbol.symbol;
    bool hit = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return hit;
}

/* ---- operators ---- */

static bool is_nullish(const bson_value_t *v)
{
    return v->value_type == BSON_TYPE_NULL || v->value_type == BSON_TYPE_UNDEFINED;
}

static bool eq_any(const cands_t *c, const bson_value_t *x)
{
    if (x->value_type == BSON_TYPE_REGEX) {
        for (size_t i = 0; i < c->count; i++) {
            if (regex_matches_value(x->value.v_regex.regex, x->value.v_regex.options,
                                    &c->items[i].value)) {
                return true;
            }
        }
        return false;
    }
    if (is_nullish(x)) {
        if (c->count == 0) {
            return true; /* a missing field equals null */
        }
        for (size_t i = 0; i < c->count; i++) {
            if (is_nullish(&c->items[i].value)) {
                return true;
            }
        }
        return false;
    }
    for (size_t i = 0; i < c->count; i++) {
        if (fts_double_value_compare(&c->items[i].value, x) == 0) {
            return true;
        }
    }
    return false;
}

typedef enum { CMP_GT, CMP_GTE, CMP_LT, CMP_LTE } cmp_op_t;

static bool cmp_any(const cands_t *c, const bson_value_t *x, cmp_op_t op)
{
    if (is_nullish(x)) {
        /* Within the null bracket only equality is possible. */
        return (op == CMP_GTE || op == CMP_LTE) && eq_any(c, x);
    }
    int bracket = fts_double_type_bracket(x->value_type);
    for (size_t i = 0; i < c->count; i++) {
        const bson_value_t *v = &c->items[i].value;
        if (fts_double_type_bracket(v->value_type) != bracket) {
            continue;
        }
        int r = fts_double_value_compare(v, x);
        if ((op == CMP_GT && r > 0) || (op == CMP_GTE && r >= 0) || (op == CMP_LT && r < 0) ||
            (op == CMP_LTE && r <= 0)) {
            return true;
        }
    }
    return false;
}

static bool in_any(const cands_t *c, const bson_value_t *array)
{
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, array->value.v_doc.data, array->value.v_doc.data_len)) {
        return false;
    }
    while (bson_iter_next(&it)) {
        if (eq_any(c, bson_iter_value(&it))) {
            return true;
        }
    }
    return false;
}

static bool type_matches(bson_type_t type, const bson_value_t *spec)
{
    if (spec->value_type == BSON_TYPE_UTF8) {
        if (strcmp(spec->value.v_utf8.str, "number") == 0) {
            return type == BSON_TYPE_INT32 || type == BSON_TYPE_INT64 || type == BSON_TYPE_DOUBLE ||
                   type == BSON_TYPE_DECIMAL128;
        }
        return strcmp(spec->value.v_utf8.str, fts_double_type_alias(type)) == 0;
    }
    if (fts_double_value_is_number(spec)) {
        int64_t n = fts_double_value_as_int64(spec);
        return n == (int64_t)type || (n == -1 && type == BSON_TYPE_MINKEY) ||
               (n == 127 && type == BSON_TYPE_MAXKEY);
    }
    return false;
}

static bool type_any(const cands_t *c, const bson_value_t *spec)
{
    if (spec->value_type == BSON_TYPE_ARRAY) {
        bson_iter_t it;
        if (!bson_iter_init_from_data(&it, spec->value.v_doc.data, spec->value.v_doc.data_len)) {
            return false;
        }
        while (bson_iter_next(&it)) {
            if (type_any(c, bson_iter_value(&it))) {
                return true;
            }
        }
        return false;
    }
    for (size_t i = 0; i < c->count; i++) {
        if (type_matches(c->items[i].value.value_type, spec)) {
            return true;
        }
    }
    return false;
}

static bool match_doc(const bson_t *doc, const bson_t *filter);
static bool eval_ops(const cands_t *c, const bson_t *ops);

/* Whether an operator document's first key is an operator ({$gt: 1}) rather than a field name
 * ({a: 1}) or a DBRef ({$ref, $id}). */
static bool is_operator_doc(const bson_value_t *v)
{
    if (v->value_type != BSON_TYPE_DOCUMENT) {
        return false;
    }
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len) ||
        !bson_iter_next(&it)) {
        return false;
    }
    const char *k = bson_iter_key(&it);
    return k[0] == '$' && strcmp(k, "$ref") != 0 && strcmp(k, "$id") != 0 && strcmp(k, "$db") != 0;
}

static bool elem_match_any(const cands_t *c, const bson_value_t *spec)
{
    bson_t spec_doc;
    fts_double_value_as_doc(spec, &spec_doc);
    bool ops = false;
    bson_iter_t first;
    if (bson_iter_init(&first, &spec_doc) && bson_iter_next(&first)) {
        const char *k = bson_iter_key(&first);
        ops = k[0] == '$' && strcmp(k, "$and") != 0 && strcmp(k, "$or") != 0 &&
              strcmp(k, "$nor") != 0;
    }
    for (size_t i = 0; i < c->count; i++) {
        const bson_value_t *arr = &c->items[i].value;
        if (c->items[i].expanded || arr->value_type != BSON_TYPE_ARRAY) {
            continue;
        }
        bson_iter_t it;
        if (!bson_iter_init_from_data(&it, arr->value.v_doc.data, arr->value.v_doc.data_len)) {
            continue;
        }
        while (bson_iter_next(&it)) {
            const bson_value_t *e = bson_iter_value(&it);
            if (ops) {
                cands_t one;
                cands_init(&one);
                cands_push(&one, e, false);
                bool hit = eval_ops(&one, &spec_doc);
                cands_free(&one);
                if (hit) {
                    return true;
                }
            } else if (e->value_type == BSON_TYPE_DOCUMENT) {
                bson_t element;
                fts_double_value_as_doc(e, &element);
                if (match_doc(&element, &spec_doc)) {
                    return true;
                }
            }
        }
    }
    return false;
}

static bool eval_op(const cands_t *c, const char *op, const bson_value_t *arg, const bson_t *ops)
{
    if (strcmp(op, "$eq") == 0) {
        return eq_any(c, arg);
    }
    if (strcmp(op, "$ne") == 0) {
        return !eq_any(c, arg);
    }
    if (strcmp(op, "$gt") == 0) {
        return cmp_any(c, arg, CMP_GT);
    }
    if (strcmp(op, "$gte") == 0) {
        return cmp_any(c, arg, CMP_GTE);
    }
    if (strcmp(op, "$lt") == 0) {
        return cmp_any(c, arg, CMP_LT);
    }
    if (strcmp(op, "$lte") == 0) {
        return cmp_any(c, arg, CMP_LTE);
    }
    if (strcmp(op, "$in") == 0) {
        return in_any(c, arg);
    }
    if (strcmp(op, "$nin") == 0) {
        return !in_any(c, arg);
    }
    if (strcmp(op, "$exists") == 0) {
        bool present = false;
        for (size_t i = 0; i < c->count; i++) {
            present = present || !c->items[i].expanded;
        }
        return present == fts_double_value_truthy(arg);
    }
    if (strcmp(op, "$type") == 0) {
        return type_any(c, arg);
    }
    if (strcmp(op, "$size") == 0) {
        int64_t want = fts_double_value_as_int64(arg);
        for (size_t i = 0; i < c->count; i++) {
            const bson_value_t *v = &c->items[i].value;
            if (!c->items[i].expanded && v->value_type == BSON_TYPE_ARRAY) {
                bson_t arr;
                fts_double_value_as_doc(v, &arr);
                if ((int64_t)bson_count_keys(&arr) == want) {
                    return true;
                }
            }
        }
        return false;
    }
    if (strcmp(op, "$all") == 0) {
        bson_iter_t it;
        bool any = false;
        if (!bson_iter_init_from_data(&it, arg->value.v_doc.data, arg->value.v_doc.data_len)) {
            return false;
        }
        while (bson_iter_next(&it)) {
            any = true;
            if (!eq_any(c, bson_iter_value(&it))) {
                return false;
            }
        }
        return any;
    }
    if (strcmp(op, "$elemMatch") == 0) {
        return elem_match_any(c, arg);
    }
    if (strcmp(op, "$not") == 0) {
        if (arg->value_type == BSON_TYPE_REGEX) {
            return !eq_any(c, arg);
        }
        bson_t inner;
        fts_double_value_as_doc(arg, &inner);
        return !eval_ops(c, &inner);
    }
    if (strcmp(op, "$regex") == 0) {
        const char *pattern, *options = "";
        bson_value_t opt;
        if (arg->value_type == BSON_TYPE_REGEX) {
            pattern = arg->value.v_regex.regex;
            options = arg->value.v_regex.options;
        } else {
            pattern = arg->value.v_utf8.str;
        }
        if (ops && fts_double_doc_get(ops, "$options", &opt) && opt.value_type == BSON_TYPE_UTF8) {
            options = opt.value.v_utf8.str;
        }
        for (size_t i = 0; i < c->count; i++) {
            const bson_value_t *v = &c->items[i].value;
            if (v->value_type != BSON_TYPE_REGEX && regex_matches_value(pattern, options, v)) {
                return true;
            }
        }
        return false;
    }
    if (strcmp(op, "$options") == 0) {
        return true; /* consumed by $regex */
    }
    if (strcmp(op, "$mod") == 0) {
        bson_iter_t it;
        bson_iter_init_from_data(&it, arg->value.v_doc.data, arg->value.v_doc.data_len);
        bson_iter_next(&it);
        int64_t divisor = fts_double_value_as_int64(bson_iter_value(&it));
        bson_iter_next(&it);
        int64_t remainder = fts_double_value_as_int64(bson_iter_value(&it));
        for (size_t i = 0; i < c->count; i++) {
            const bson_value_t *v = &c->items[i].value;
            if (fts_double_value_is_number(v) && divisor != 0 &&
                fts_double_value_as_int64(v) % divisor == remainder) {
                return true;
            }
        }
        return false;
    }
    return false; /* unreachable for validated filters */
}

static bool eval_ops(const cands_t *c, const bson_t *ops)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, ops)) {
        return false;
    }
    while (bson_iter_next(&it)) {
        if (!eval_op(c, bson_iter_key(&it), bson_iter_value(&it), ops)) {
            return false;
        }
    }
    return true;
}

static bool match_path(const bson_t *doc, const char *path, const bson_value_t *cond)
{
    cands_t c;
    cands_init(&c);
    resolve_doc(doc, path, &c);
    bool hit;
    if (is_operator_doc(cond)) {
        bson_t ops;
        fts_double_value_as_doc(cond, &ops);
        hit = eval_ops(&c, &ops);
    } else {
        hit = eq_any(&c, cond);
    }
    cands_free(&c);
    return hit;
}

static bool match_doc(const bson_t *doc, const bson_t *filter)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, filter)) {
        return false;
    }
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        const bson_value_t *v = bson_iter_value(&it);
        if (key[0] == '$') {
            if (strcmp(key, "$comment") == 0) {
                continue;
            }
            bool is_and = strcmp(key, "$and") == 0, is_or = strcmp(key, "$or") == 0;
            bson_iter_t sub;
            bson_iter_init_from_data(&sub, v->value.v_doc.data, v->value.v_doc.data_len);
            bool any = false;
            while (bson_iter_next(&sub)) {
                bson_t clause;
                fts_double_value_as_doc(bson_iter_value(&sub), &clause);
                bool m = match_doc(doc, &clause);
                if (is_and && !m) {
                    return false;
                }
                any = any || m;
            }
            if ((is_or && !any) || (!is_and && !is_or && any)) {
                return false; /* $or with no match, or $nor with one */
            }
            continue;
        }
        if (!match_path(doc, key, v)) {
            return false;
        }
    }
    return true;
}

bool fts_double_match(const bson_t *doc, const bson_t *filter)
{
    return match_doc(doc, filter);
}

bool fts_double_match_value(const bson_value_t *value, const bson_t *ops)
{
    cands_t c;
    cands_init(&c);
    push_leaf(&c, value);
    bool hit = eval_ops(&c, ops);
    cands_free(&c);
    return hit;
}

/* ---- validation ---- */

static bool validate_filter(const bson_t *filter, fts_double_error_t *err);

static bool validate_ops(const bson_t *ops, fts_double_error_t *err)
{
    bson_iter_t it;
    bson_iter_init(&it, ops);
    bool has_regex = false, has_options = false;
    while (bson_iter_next(&it)) {
        const char *op = bson_iter_key(&it);
        const bson_value_t *arg = bson_iter_value(&it);
        if (strcmp(op, "$eq") == 0 || strcmp(op, "$ne") == 0 || strcmp(op, "$gt") == 0 ||
            strcmp(op, "$gte") == 0 || strcmp(op, "$lt") == 0 || strcmp(op, "$lte") == 0 ||
            strcmp(op, "$exists") == 0) {
            continue;
        }
        if (strcmp(op, "$in") == 0 || strcmp(op, "$nin") == 0 || strcmp(op, "$all") == 0) {
            if (arg->value_type != BSON_TYPE_ARRAY) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE, "%s needs an array", op);
            }
            continue;
        }
        if (strcmp(op, "$type") == 0) {
            continue;
        }
        if (strcmp(op, "$size") == 0) {
            if (!fts_double_value_is_number(arg)) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE, "$size needs a number");
            }
            continue;
        }
        if (strcmp(op, "$elemMatch") == 0) {
            if (arg->value_type != BSON_TYPE_DOCUMENT) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                            "$elemMatch needs an Object");
            }
            bson_t inner;
            fts_double_value_as_doc(arg, &inner);
            bson_iter_t first;
            if (bson_iter_init(&first, &inner) && bson_iter_next(&first) &&
                bson_iter_key(&first)[0] == '$' && strcmp(bson_iter_key(&first), "$and") != 0 &&
                strcmp(bson_iter_key(&first), "$or") != 0 &&
                strcmp(bson_iter_key(&first), "$nor") != 0) {
                if (!validate_ops(&inner, err)) {
                    return false;
                }
            } else if (!validate_filter(&inner, err)) {
                return false;
            }
            continue;
        }
        if (strcmp(op, "$not") == 0) {
            if (arg->value_type == BSON_TYPE_REGEX) {
                continue;
            }
            if (!is_operator_doc(arg)) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                            "$not needs a regex or a document of operators");
            }
            bson_t inner;
            fts_double_value_as_doc(arg, &inner);
            if (!validate_ops(&inner, err)) {
                return false;
            }
            continue;
        }
        if (strcmp(op, "$regex") == 0) {
            if (arg->value_type != BSON_TYPE_UTF8 && arg->value_type != BSON_TYPE_REGEX) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                            "$regex has to be a string");
            }
            regex_t re;
            const char *pattern = arg->value_type == BSON_TYPE_UTF8 ? arg->value.v_utf8.str
                                                                    : arg->value.v_regex.regex;
            if (!regex_compile(pattern, "", &re)) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                            "Regular expression is invalid: %s", pattern);
            }
            regfree(&re);
            has_regex = true;
            continue;
        }
        if (strcmp(op, "$options") == 0) {
            has_options = true;
            continue;
        }
        if (strcmp(op, "$mod") == 0) {
            bson_t arr;
            if (!fts_double_value_as_doc(arg, &arr) || arg->value_type != BSON_TYPE_ARRAY ||
                bson_count_keys(&arr) != 2) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                            "malformed mod, needs to be an array of 2 numbers");
            }
            continue;
        }
        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                    "unknown operator: %s (or not supported by "
                                    "ftsync-mongo-double)",
                                    op);
    }
    if (has_options && !has_regex) {
        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE, "$options needs a $regex");
    }
    return true;
}

static bool validate_filter(const bson_t *filter, fts_double_error_t *err)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, filter)) {
        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE, "invalid filter");
    }
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        const bson_value_t *v = bson_iter_value(&it);
        if (key[0] == '$') {
            if (strcmp(key, "$comment") == 0) {
                continue;
            }
            if (strcmp(key, "$and") != 0 && strcmp(key, "$or") != 0 && strcmp(key, "$nor") != 0) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                            "unknown top level operator: %s (or not supported "
                                            "by ftsync-mongo-double)",
                                            key);
            }
            bson_t clauses;
            if (v->value_type != BSON_TYPE_ARRAY || !fts_double_value_as_doc(v, &clauses) ||
                bson_count_keys(&clauses) == 0) {
                return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                            "%s must be a nonempty array", key);
            }
            bson_iter_t sub;
            bson_iter_init(&sub, &clauses);
            while (bson_iter_next(&sub)) {
                bson_t clause;
                if (!BSON_ITER_HOLDS_DOCUMENT(&sub) ||
                    !fts_double_value_as_doc(bson_iter_value(&sub), &clause)) {
                    return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                                "%s argument's entries must be objects", key);
                }
                if (!validate_filter(&clause, err)) {
                    return false;
                }
            }
            continue;
        }
        if (is_operator_doc(v)) {
            bson_t ops;
            fts_double_value_as_doc(v, &ops);
            if (!validate_ops(&ops, err)) {
                return false;
            }
        }
    }
    return true;
}

bool fts_double_match_validate(const bson_t *filter, fts_double_error_t *err)
{
    return validate_filter(filter, err);
}

/* ---- projection ---- */

typedef struct pnode {
    char *name;
    bool leaf;
    struct pnode *children;
    size_t count, cap;
} pnode_t;

struct fts_double_projection {
    pnode_t root;
    bool inclusion;
    bool id_included;
    bool empty;
};

static void pnode_free(pnode_t *n)
{
    for (size_t i = 0; i < n->count; i++) {
        pnode_free(&n->children[i]);
    }
    bson_free(n->children);
    bson_free(n->name);
}

static pnode_t *pnode_child(pnode_t *n, const char *name, size_t len, bool create)
{
    for (size_t i = 0; i < n->count; i++) {
        if (strlen(n->children[i].name) == len && strncmp(n->children[i].name, name, len) == 0) {
            return &n->children[i];
        }
    }
    if (!create) {
        return NULL;
    }
    if (n->count == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 4;
        n->children = bson_realloc(n->children, n->cap * sizeof *n->children);
    }
    pnode_t *c = &n->children[n->count++];
    memset(c, 0, sizeof *c);
    c->name = bson_strndup(name, len);
    return c;
}

static const pnode_t *pnode_find(const pnode_t *n, const char *name)
{
    for (size_t i = 0; i < n->count; i++) {
        if (strcmp(n->children[i].name, name) == 0) {
            return &n->children[i];
        }
    }
    return NULL;
}

fts_double_projection_t *fts_double_projection_new(const bson_t *spec, fts_double_error_t *err)
{
    fts_double_projection_t *p = bson_malloc0(sizeof *p);
    p->id_included = true;
    p->empty = true;
    int mode = -1; /* -1 unknown, 1 inclusion, 0 exclusion */
    bson_iter_t it;
    if (spec && bson_iter_init(&it, spec)) {
        while (bson_iter_next(&it)) {
            const char *key = bson_iter_key(&it);
            const bson_value_t *v = bson_iter_value(&it);
            if (!fts_double_value_is_number(v) && v->value_type != BSON_TYPE_BOOL) {
                fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                     "projection of '%s': only inclusion (1) and exclusion (0) are "
                                     "supported by ftsync-mongo-double",
                                     key);
                goto fail;
            }
            bool include = fts_double_value_truthy(v);
            p->empty = false;
            if (strcmp(key, "_id") == 0) {
                p->id_included = include;
                continue;
            }
            if (mode == -1) {
                mode = include;
            } else if (mode != (int)include) {
                fts_double_error_set(err, include ? 31253 : 31254,
                                     include ? "Cannot do inclusion on field %s in exclusion "
                                               "projection"
                                             : "Cannot do exclusion on field %s in inclusion "
                                               "projection",
                                     key);
                goto fail;
            }
            pnode_t *node = &p->root;
            const char *part = key;
            for (;;) {
                const char *dot = strchr(part, '.');
                size_t len = dot ? (size_t)(dot - part) : strlen(part);
                bool existed = pnode_child(node, part, len, false) != NULL;
                node = pnode_child(node, part, len, true);
                if (node->leaf || (!dot && existed)) {
                    fts_double_error_set(err, 31250, "Path collision at %s", key);
                    goto fail;
                }
                if (!dot) {
                    node->leaf = true;
                    break;
                }
                part = dot + 1;
            }
        }
    }
    /* {_id: 1} alone is an inclusion projection; {_id: 0} alone an exclusion. */
    p->inclusion = mode == 1 || (mode == -1 && !p->empty && p->id_included);
    return p;
fail:
    fts_double_projection_destroy(p);
    return NULL;
}

void fts_double_projection_destroy(fts_double_projection_t *proj)
{
    if (proj) {
        pnode_free(&proj->root);
        bson_free(proj);
    }
}

static void project_fields(bson_iter_t *it, const pnode_t *node, bool inclusion, bson_t *out);

static void project_array(const bson_value_t *v, const pnode_t *node, bool inclusion,
                          const char *key, bson_t *out)
{
    bson_t arr;
    bson_iter_t it;
    bson_append_array_begin(out, key, -1, &arr);
    bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len);
    uint32_t i = 0;
    while (bson_iter_next(&it)) {
        char buf[16];
        const char *k = fts_double_index_key(i, buf);
        const bson_value_t *e = bson_iter_value(&it);
        if (e->value_type == BSON_TYPE_DOCUMENT) {
            bson_t sub;
            bson_iter_t child;
            bson_append_document_begin(&arr, k, -1, &sub);
            bson_iter_recurse(&it, &child);
            project_fields(&child, node, inclusion, &sub);
            bson_append_document_end(&arr, &sub);
            i++;
        } else if (e->value_type == BSON_TYPE_ARRAY) {
            project_array(e, node, inclusion, k, &arr);
            i++;
        } else if (!inclusion) {
            /* Inclusion of a sub-path drops scalars from arrays; exclusion keeps them. */
            bson_append_value(&arr, k, -1, e);
            i++;
        }
    }
    bson_append_array_end(out, &arr);
}

/* Projects the field `it` points at, given the projection node of its parent. */
static void project_field(const bson_iter_t *it, const pnode_t *node, bool inclusion, bson_t *out)
{
    const char *key = bson_iter_key(it);
    const pnode_t *child = pnode_find(node, key);
    const bson_value_t *v = bson_iter_value((bson_iter_t *)it);
    if (!child) {
        if (!inclusion) {
            bson_append_value(out, key, -1, v);
        }
    } else if (child->leaf) {
        if (inclusion) {
            bson_append_value(out, key, -1, v);
        }
    } else if (v->value_type == BSON_TYPE_DOCUMENT) {
        bson_t sub;
        bson_iter_t inner;
        bson_append_document_begin(out, key, -1, &sub);
        bson_iter_recurse(it, &inner);
        project_fields(&inner, child, inclusion, &sub);
        bson_append_document_end(out, &sub);
    } else if (v->value_type == BSON_TYPE_ARRAY) {
        project_array(v, child, inclusion, key, out);
    } else if (!inclusion) {
        bson_append_value(out, key, -1, v);
    }
}

static void project_fields(bson_iter_t *it, const pnode_t *node, bool inclusion, bson_t *out)
{
    while (bson_iter_next(it)) {
        project_field(it, node, inclusion, out);
    }
}

void fts_double_projection_apply(const fts_double_projection_t *proj, const bson_t *doc,
                                 bson_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, doc)) {
        return;
    }
    if (!proj || proj->empty) {
        bson_concat(out, doc);
        return;
    }
    /* _id is handled here rather than in the tree so that its default (kept) and its own flag
     * work in both modes. */
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "_id") == 0) {
            if (proj->id_included) {
                bson_append_value(out, "_id", 3, bson_iter_value(&it));
            }
            continue;
        }
        project_field(&it, &proj->root, proj->inclusion, out);
    }
}

/* ---- sort ---- */

bool fts_double_sort_validate(const bson_t *spec, fts_double_error_t *err)
{
    bson_iter_t it;
    if (!spec) {
        return true;
    }
    bson_iter_init(&it, spec);
    while (bson_iter_next(&it)) {
        const bson_value_t *v = bson_iter_value(&it);
        if (!fts_double_value_is_number(v)) {
            return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                        "sort of '%s': only 1 and -1 are supported by "
                                        "ftsync-mongo-double",
                                        bson_iter_key(&it));
        }
        double d = fts_double_value_as_double(v);
        if (d != 1 && d != -1) {
            return fts_double_error_set(err, 15975,
                                        "$sort key ordering must be 1 (for ascending) or -1 (for "
                                        "descending)");
        }
    }
    return true;
}

typedef struct {
    size_t nfields;
    int *dirs;
    bson_value_t *keys; /* count * nfields */
} sort_ctx_t;

typedef struct {
    size_t index;
    fts_double_doc_t *doc;
} sort_item_t;

static int compare_items(const void *a, const void *b, void *arg)
{
    const sort_ctx_t *ctx = arg;
    const sort_item_t *x = a, *y = b;
    for (size_t f = 0; f < ctx->nfields; f++) {
        int c = fts_double_value_compare(&ctx->keys[x->index * ctx->nfields + f],
                                         &ctx->keys[y->index * ctx->nfields + f]);
        if (c != 0) {
            return c * ctx->dirs[f];
        }
    }
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The key a document sorts by: the value at path, or for an array its smallest element
 * (ascending) or largest (descending); a missing field sorts as null. */
static bson_value_t sort_key(const bson_t *doc, const char *path, int dir)
{
    cands_t c;
    cands_init(&c);
    resolve_doc(doc, path, &c);
    bson_value_t key;
    key.value_type = BSON_TYPE_NULL;
    bool have = false;
    for (size_t i = 0; i < c.count; i++) {
        const bson_value_t *v = &c.items[i].value;
        if (v->value_type == BSON_TYPE_ARRAY && !c.items[i].expanded) {
            continue; /* its elements follow as expanded candidates */
        }
        if (!have || fts_double_value_compare(v, &key) * dir < 0) {
            key = *v;
            have = true;
        }
    }
    cands_free(&c);
    return key;
}

void fts_double_sort(fts_double_doc_t **docs, size_t count, const bson_t *spec)
{
    if (!spec || count < 2) {
        return;
    }
    sort_ctx_t ctx;
    ctx.nfields = bson_count_keys(spec);
    if (ctx.nfields == 0) {
        return;
    }
    ctx.dirs = bson_malloc(ctx.nfields * sizeof *ctx.dirs);
    ctx.keys = bson_malloc(count * ctx.nfields * sizeof *ctx.keys);
    sort_item_t *items = bson_malloc(count * sizeof *items);
    bson_iter_t it;
    size_t f = 0;
    bson_iter_init(&it, spec);
    while (bson_iter_next(&it)) {
        ctx.dirs[f++] = fts_double_value_as_double(bson_iter_value(&it)) < 0 ? -1 : 1;
    }
    for (size_t i = 0; i < count; i++) {
        bson_t view;
        fts_double_doc_view(docs[i], &view);
        items[i].index = i;
        items[i].doc = docs[i];
        f = 0;
        bson_iter_init(&it, spec);
        while (bson_iter_next(&it)) {
            ctx.keys[i * ctx.nfields + f] = sort_key(&view, bson_iter_key(&it), ctx.dirs[f]);
            f++;
        }
    }
    qsort_r(items, count, sizeof *items, compare_items, &ctx);
    for (size_t i = 0; i < count; i++) {
        docs[i] = items[i].doc;
    }
    bson_free(items);
    bson_free(ctx.keys);
    bson_free(ctx.dirs);
}

/* ---- collecting results ---- */

void fts_double_docvec_push(fts_double_docvec_t *vec, fts_double_doc_t *doc)
{
    if (vec->count == vec->cap) {
        vec->cap = vec->cap ? vec->cap * 2 : 16;
        vec->items = bson_realloc(vec->items, vec->cap * sizeof *vec->items);
    }
    vec->items[vec->count++] = doc;
}

void fts_double_docvec_destroy(fts_double_docvec_t *vec)
{
    for (size_t i = 0; i < vec->count; i++) {
        fts_double_doc_unref(vec->items[i]);
    }
    bson_free(vec->items);
    memset(vec, 0, sizeof *vec);
}

typedef struct {
    const bson_t *filter;
    fts_double_docvec_t *out;
    size_t stop_after; /* 0: never */
} collect_ctx_t;

static bool collect_one(fts_double_doc_t *doc, void *arg)
{
    collect_ctx_t *ctx = arg;
    bson_t view;
    fts_double_doc_view(doc, &view);
    if (ctx->filter && !fts_double_match(&view, ctx->filter)) {
        return true;
    }
    fts_double_docvec_push(ctx->out, fts_double_doc_ref(doc));
    return ctx->stop_after == 0 || ctx->out->count < ctx->stop_after;
}

/* The _id value of a plain equality on _id, which a lookup in the tree can answer. */
static bool id_equality(const bson_t *filter, bson_value_t *id)
{
    bson_value_t v;
    if (!filter || !fts_double_doc_get(filter, "_id", &v)) {
        return false;
    }
    if (v.value_type == BSON_TYPE_REGEX || v.value_type == BSON_TYPE_ARRAY ||
        v.value_type == BSON_TYPE_NULL || is_operator_doc(&v)) {
        return false;
    }
    *id = v;
    return true;
}

bool fts_double_query_collect(const fts_double_coll_t *coll, const bson_t *filter,
                              const bson_t *sort, int64_t skip, int64_t limit,
                              fts_double_docvec_t *out, fts_double_error_t *err)
{
    if ((filter && !fts_double_match_validate(filter, err)) ||
        !fts_double_sort_validate(sort, err)) {
        return false;
    }
    if (!coll) {
        return true;
    }
    if (filter && bson_empty(filter)) {
        filter = NULL;
    }
    bool sorted = sort && !bson_empty(sort);
    bool reverse = false;
    if (sorted && bson_count_keys(sort) == 1) {
        /* A sort on _id alone is the tree's own order. */
        bson_value_t dir;
        if (fts_double_doc_get(sort, "_id", &dir)) {
            sorted = false;
            reverse = fts_double_value_as_double(&dir) < 0;
        }
    }
    fts_double_docvec_t all = {0};
    bson_value_t id;
    if (id_equality(filter, &id)) {
        fts_double_doc_t *doc = fts_double_coll_get(coll, &id);
        bson_t view;
        if (doc) {
            fts_double_doc_view(doc, &view);
            if (fts_double_match(&view, filter)) {
                fts_double_docvec_push(&all, fts_double_doc_ref(doc));
            }
        }
    } else {
        collect_ctx_t ctx = {filter, &all, 0};
        if (!sorted && limit > 0) {
            ctx.stop_after = (size_t)(skip + limit); /* in order already: stop early */
        }
        fts_double_coll_walk(coll, reverse, collect_one, &ctx);
    }
    if (sorted) {
        fts_double_sort(all.items, all.count, sort);
    }
    size_t start = skip > 0 ? (size_t)skip : 0;
    for (size_t i = 0; i < all.count; i++) {
        if (i >= start && (limit <= 0 || out->count < (size_t)limit)) {
            fts_double_docvec_push(out, all.items[i]);
        } else {
            fts_double_doc_unref(all.items[i]);
        }
    }
    bson_free(all.items);
    return true;
}
