/*
 * store.c - documents, AVL-ordered collections and the namespace catalog (see store.h).
 */
#include "store.h"

#include "bsonval.h"

#include <stdlib.h>
#include <string.h>

fts_double_doc_t *fts_double_doc_new(const uint8_t *data, uint32_t len)
{
    fts_double_doc_t *doc = bson_malloc(sizeof *doc + len);
    doc->refs = 1;
    doc->len = len;
    memcpy(doc->data, data, len);
    return doc;
}

fts_double_doc_t *fts_double_doc_from_bson(const bson_t *bson)
{
    return fts_double_doc_new(bson_get_data(bson), bson->len);
}

fts_double_doc_t *fts_double_doc_ref(fts_double_doc_t *doc)
{
    if (doc) {
        doc->refs++;
    }
    return doc;
}

void fts_double_doc_unref(fts_double_doc_t *doc)
{
    if (doc && --doc->refs == 0) {
        bson_free(doc);
    }
}

void fts_double_doc_view(const fts_double_doc_t *doc, bson_t *out)
{
    bson_init_static(out, doc->data, doc->len);
}

bool fts_double_doc_id(const fts_double_doc_t *doc, bson_value_t *id)
{
    bson_iter_t iter;
    if (!bson_iter_init_from_data(&iter, doc->data, doc->len)) {
        return false;
    }
    /* _id is normally the first field; the loop is the fallback. */
    while (bson_iter_next(&iter)) {
        if (strcmp(bson_iter_key(&iter), "_id") == 0) {
            *id = *bson_iter_value(&iter);
            return true;
        }
    }
    return false;
}

/* ---- AVL tree keyed by _id ---- */

struct fts_double_node {
    fts_double_doc_t *doc;
    bson_value_t id; /* borrows doc's bytes */
    fts_double_node_t *left, *right;
    int height;
};

static int height(const fts_double_node_t *n)
{
    return n ? n->height : 0;
}

static void fix_height(fts_double_node_t *n)
{
    int l = height(n->left), r = height(n->right);
    n->height = (l > r ? l : r) + 1;
}

static fts_double_node_t *rotate_right(fts_double_node_t *n)
{
    fts_double_node_t *l = n->left;
    BSON_ASSERT(l); /* a right rotation is only made of a node with a left child */
    n->left = l->right;
    l->right = n;
    fix_height(n);
    fix_height(l);
    return l;
}

static fts_double_node_t *rotate_left(fts_double_node_t *n)
{
    fts_double_node_t *r = n->right;
    BSON_ASSERT(r); /* a left rotation is only made of a node with a right child */
    n->right = r->left;
    r->left = n;
    fix_height(n);
    fix_height(r);
    return r;
}

static fts_double_node_t *balance(fts_double_node_t *n)
{
    fix_height(n);
    int diff = height(n->left) - height(n->right);
    if (diff > 1) {
        if (height(n->left->left) < height(n->left->right)) {
            n->left = rotate_left(n->left);
        }
        return rotate_right(n);
    }
    if (diff < -1) {
        if (height(n->right->right) < height(n->right->left)) {
            n->right = rotate_right(n->right);
        }
        return rotate_left(n);
    }
    return n;
}

/* Inserts node under root; *dup set when an equal _id exists (node not linked then). */
static fts_double_node_t *avl_insert(fts_double_node_t *root, fts_double_node_t *node, bool *dup)
{
    if (!root) {
        return node;
    }
    int c = fts_double_value_compare(&node->id, &root->id);
    if (c == 0) {
        *dup = true;
        return root;
    }
    if (c < 0) {
        root->left = avl_insert(root->left, node, dup);
    } else {
        root->right = avl_insert(root->right, node, dup);
    }
    return *dup ? root : balance(root);
}

static fts_double_node_t *avl_find(fts_double_node_t *root, const bson_value_t *id)
{
    while (root) {
        int c = fts_double_value_compare(id, &root->id);
        if (c == 0) {
            return root;
        }
        root = c < 0 ? root->left : root->right;
    }
    return NULL;
}

static fts_double_node_t *avl_remove_min(fts_double_node_t *root, fts_double_node_t **min)
{
    if (!root->left) {
        *min = root;
        return root->right;
    }
    root->left = avl_remove_min(root->left, min);
    return balance(root);
}

/* Unlinks the node with this _id into *removed (NULL if absent). */
static fts_double_node_t *avl_remove(fts_double_node_t *root, const bson_value_t *id,
                                     fts_double_node_t **removed)
{
    if (!root) {
        return NULL;
    }
    int c = fts_double_value_compare(id, &root->id);
    if (c < 0) {
        root->left = avl_remove(root->left, id, removed);
    } else if (c > 0) {
        root->right = avl_remove(root->right, id, removed);
    } else {
        *removed = root;
        if (!root->right) {
            return root->left;
        }
        fts_double_node_t *min = NULL;
        fts_double_node_t *right = avl_remove_min(root->right, &min);
        min->right = right;
        min->left = root->left;
        return balance(min);
    }
    return balance(root);
}

static void avl_free(fts_double_node_t *n)
{
    /* Iterative on the right spine, recursive on the left: depth stays O(log n). */
    while (n) {
        avl_free(n->left);
        fts_double_node_t *right = n->right;
        fts_double_doc_unref(n->doc);
        bson_free(n);
        n = right;
    }
}

static bool avl_walk(const fts_double_node_t *n, bool reverse, fts_double_walk_fn fn, void *arg)
{
    while (n) {
        if (!avl_walk(reverse ? n->right : n->left, reverse, fn, arg)) {
            return false;
        }
        if (!fn(n->doc, arg)) {
            return false;
        }
        n = reverse ? n->left : n->right;
    }
    return true;
}

fts_double_doc_t *fts_double_coll_get(const fts_double_coll_t *coll, const bson_value_t *id)
{
    fts_double_node_t *node = avl_find(coll->root, id);
    return node ? node->doc : NULL;
}

bool fts_double_coll_insert(fts_double_coll_t *coll, fts_double_doc_t *doc)
{
    fts_double_node_t *node = bson_malloc0(sizeof *node);
    node->doc = doc;
    node->height = 1;
    if (!fts_double_doc_id(doc, &node->id)) {
        bson_free(node);
        return false;
    }
    bool dup = false;
    coll->root = avl_insert(coll->root, node, &dup);
    if (dup) {
        bson_free(node);
        return false;
    }
    coll->count++;
    coll->bytes += doc->len;
    return true;
}

fts_double_doc_t *fts_double_coll_replace(fts_double_coll_t *coll, fts_double_doc_t *doc)
{
    bson_value_t id;
    if (!fts_double_doc_id(doc, &id)) {
        return NULL;
    }
    fts_double_node_t *node = avl_find(coll->root, &id);
    if (!node) {
        return NULL;
    }
    fts_double_doc_t *old = node->doc;
    node->doc = doc;
    fts_double_doc_id(doc, &node->id); /* same value, now borrowing the new bytes */
    coll->bytes = coll->bytes - old->len + doc->len;
    return old;
}

fts_double_doc_t *fts_double_coll_remove(fts_double_coll_t *coll, const bson_value_t *id)
{
    fts_double_node_t *removed = NULL;
    coll->root = avl_remove(coll->root, id, &removed);
    if (!removed) {
        return NULL;
    }
    fts_double_doc_t *doc = removed->doc;
    bson_free(removed);
    coll->count--;
    coll->bytes -= doc->len;
    return doc;
}

void fts_double_coll_walk(const fts_double_coll_t *coll, bool reverse, fts_double_walk_fn fn,
                          void *arg)
{
    avl_walk(coll->root, reverse, fn, arg);
}

/* ---- string-keyed hash map (chained), used for the catalog and the interned names ---- */

typedef struct map_entry {
    char *key;
    void *value;
    struct map_entry *next;
} map_entry_t;

typedef struct {
    map_entry_t **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
} map_t;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ULL;
    }
    return h;
}

static void map_init(map_t *m)
{
    m->nbuckets = 64;
    m->buckets = bson_malloc0(m->nbuckets * sizeof *m->buckets);
    m->count = 0;
}

static void *map_get(const map_t *m, const char *key)
{
    for (map_entry_t *e = m->buckets[hash_str(key) & (m->nbuckets - 1)]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            return e->value;
        }
    }
    return NULL;
}

static void map_grow(map_t *m)
{
    size_t n = m->nbuckets * 2;
    map_entry_t **buckets = bson_malloc0(n * sizeof *buckets);
    for (size_t i = 0; i < m->nbuckets; i++) {
        map_entry_t *e = m->buckets[i];
        while (e) {
            map_entry_t *next = e->next;
            size_t b = hash_str(e->key) & (n - 1);
            e->next = buckets[b];
            buckets[b] = e;
            e = next;
        }
    }
    bson_free(m->buckets);
    m->buckets = buckets;
    m->nbuckets = n;
}

/* Adds key (copied); the key must not be present. */
static void map_put(map_t *m, const char *key, void *value)
{
    if (m->count >= m->nbuckets) {
        map_grow(m);
    }
    map_entry_t *e = bson_malloc(sizeof *e);
    e->key = bson_strdup(key);
    e->value = value;
    size_t b = hash_str(key) & (m->nbuckets - 1);
    e->next = m->buckets[b];
    m->buckets[b] = e;
    m->count++;
}

static void map_del(map_t *m, const char *key)
{
    map_entry_t **link = &m->buckets[hash_str(key) & (m->nbuckets - 1)];
    for (; *link; link = &(*link)->next) {
        if (strcmp((*link)->key, key) == 0) {
            map_entry_t *e = *link;
            *link = e->next;
            bson_free(e->key);
            bson_free(e);
            m->count--;
            return;
        }
    }
}

static void map_destroy(map_t *m, void (*free_value)(void *))
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        map_entry_t *e = m->buckets[i];
        while (e) {
            map_entry_t *next = e->next;
            if (free_value) {
                free_value(e->value);
            }
            bson_free(e->key);
            bson_free(e);
            e = next;
        }
    }
    bson_free(m->buckets);
}

/* ---- catalog ---- */

struct fts_double_store {
    map_t colls;   /* "db.coll" -> fts_double_coll_t* */
    map_t interns; /* "db.coll" -> fts_double_ns_t* */
};

static void free_ns(void *value)
{
    fts_double_ns_t *ns = value;
    bson_free(ns->full);
    bson_free(ns->db);
    bson_free(ns->coll);
    bson_free(ns);
}

static void free_coll(void *value)
{
    fts_double_coll_t *coll = value;
    avl_free(coll->root);
    bson_destroy(coll->indexes);
    bson_free(coll);
}

fts_double_store_t *fts_double_store_new(void)
{
    fts_double_store_t *store = bson_malloc0(sizeof *store);
    map_init(&store->colls);
    map_init(&store->interns);
    return store;
}

void fts_double_store_destroy(fts_double_store_t *store)
{
    if (!store) {
        return;
    }
    map_destroy(&store->colls, free_coll);
    map_destroy(&store->interns, free_ns);
    bson_free(store);
}

const fts_double_ns_t *fts_double_store_intern(fts_double_store_t *store, const char *db,
                                               const char *coll)
{
    bool db_only = !coll || !*coll;
    char *full = db_only ? bson_strdup(db) : bson_strdup_printf("%s.%s", db, coll);
    fts_double_ns_t *ns = map_get(&store->interns, full);
    if (!ns) {
        ns = bson_malloc0(sizeof *ns);
        ns->full = bson_strdup(full);
        ns->db = bson_strdup(db);
        ns->coll = bson_strdup(db_only ? "" : coll);
        map_put(&store->interns, full, ns);
    }
    bson_free(full);
    return ns;
}

fts_double_coll_t *fts_double_store_find(fts_double_store_t *store, const char *db,
                                         const char *coll)
{
    char stack[256];
    char *full = stack;
    size_t need = strlen(db) + strlen(coll) + 2;
    if (need > sizeof stack) {
        full = bson_malloc(need);
    }
    bson_snprintf(full, need, "%s.%s", db, coll);
    fts_double_coll_t *found = map_get(&store->colls, full);
    if (full != stack) {
        bson_free(full);
    }
    return found;
}

fts_double_coll_t *fts_double_store_create(fts_double_store_t *store, const char *db,
                                           const char *coll)
{
    fts_double_coll_t *c = bson_malloc0(sizeof *c);
    c->ns = fts_double_store_intern(store, db, coll);
    /* A random (version 4) UUID, as mongod gives every collection. */
    for (int i = 0; i < 16; i++) {
        c->uuid[i] = (uint8_t)(rand() & 0xff);
    }
    c->uuid[6] = (uint8_t)((c->uuid[6] & 0x0f) | 0x40);
    c->uuid[8] = (uint8_t)((c->uuid[8] & 0x3f) | 0x80);
    c->indexes = bson_new();
    map_put(&store->colls, c->ns->full, c);
    return c;
}

void fts_double_store_drop(fts_double_store_t *store, fts_double_coll_t *coll)
{
    map_del(&store->colls, coll->ns->full);
    free_coll(coll);
}

void fts_double_store_rename(fts_double_store_t *store, fts_double_coll_t *coll, const char *db,
                             const char *name)
{
    map_del(&store->colls, coll->ns->full);
    coll->ns = fts_double_store_intern(store, db, name);
    map_put(&store->colls, coll->ns->full, coll);
}

static int compare_coll_ns(const void *a, const void *b)
{
    const fts_double_coll_t *x = *(fts_double_coll_t *const *)a;
    const fts_double_coll_t *y = *(fts_double_coll_t *const *)b;
    return strcmp(x->ns->full, y->ns->full);
}

fts_double_coll_t **fts_double_store_list(fts_double_store_t *store, const char *db, size_t *count)
{
    fts_double_coll_t **out = bson_malloc((store->colls.count + 1) * sizeof *out);
    size_t n = 0;
    for (size_t i = 0; i < store->colls.nbuckets; i++) {
        for (map_entry_t *e = store->colls.buckets[i]; e; e = e->next) {
            fts_double_coll_t *c = e->value;
            if (!db || strcmp(c->ns->db, db) == 0) {
                out[n++] = c;
            }
        }
    }
    qsort(out, n, sizeof *out, compare_coll_ns);
    *count = n;
    return out;
}
