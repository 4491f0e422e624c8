/*
 * apps_collection.h - a collection shaped like the original service's, written to with seeded
 * changes while extract runs, and the index a loader builds from it checked against it
 * (the id-map tests: FTSYNC_ID_FIELD=id, FTSYNC_FIELDS=FTS_TEST_APPS_FIELDS).
 *
 *   - Documents: `_id` an ObjectId made from a counter (65a0 and the counter in hex), an
 *     integer `id` (the index id), the indexed fields, and `recommendations`, which the index
 *     does not get. Their content follows the step counter, so a seed gives the same writes.
 *   - Changes: insert, update of a field, update of the id, replace (keeping or changing the
 *     id), delete; ids are never reused, as a unique index on id would ensure. The live
 *     documents are tracked so that every change names one that exists.
 *   - Index: a loader reading the pipeline's stream, then the index compared document by
 *     document (ids, and each _source as JSON whatever the key order, after checking the
 *     loader's _ftsync_ns mark) with the collection projected as the original service did.
 * Every function fails the running cmocka test when a write or a wait fails: include after
 * <cmocka.h>, call inside a test. Tests only; single-threaded.
 */
#ifndef FTS_TEST_APPS_COLLECTION_H
#define FTS_TEST_APPS_COLLECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mongoc/mongoc.h>

#include "extract_harness.h"
#include "load_harness.h"
#include "test_rng.h"

/* The fields the original service indexed (its FTSYNC_FIELDS). */
#define FTS_TEST_APPS_FIELDS "name,short_description,developers,publishers,updated_at"
/* At most this many live documents (one _search page holds them all). */
#define FTS_TEST_APPS_MAX 4000
/* How long a test waits for an entry it expects, and for the loader to drain the stream. */
#define FTS_TEST_APPS_ENTRY_WAIT_MS 90000
#define FTS_TEST_APPS_DRAIN_WAIT_MS 120000

/* The kinds of change, indexes of fts_test_apps_t.counts. */
typedef enum {
    FTS_TEST_APPS_INSERT,
    FTS_TEST_APPS_UPDATE,
    FTS_TEST_APPS_ID_CHANGE,
    FTS_TEST_APPS_REPLACE,
    FTS_TEST_APPS_DELETE,
    FTS_TEST_APPS_CHANGE_KINDS
} fts_test_apps_change_t;

/* One live document: the counter its ObjectId is made from, and its current id. */
typedef struct {
    uint32_t oid;
    int32_t id;
} fts_test_app_t;

/* The collection as the test wrote it. */
typedef struct {
    fts_test_pipeline_t *p; /* borrowed: its collection is written, its stream followed */
    fts_test_app_t live[FTS_TEST_APPS_MAX];
    size_t live_count;
    uint32_t next_oid;
    int32_t next_id;                             /* the next new id */
    uint64_t step;                               /* one per write: the documents' content */
    unsigned counts[FTS_TEST_APPS_CHANGE_KINDS]; /* random changes made, by kind */
} fts_test_apps_t;

/* Starts an empty collection on p (borrowed for apps' life); new ids count from first_id. */
void fts_test_apps_init(fts_test_apps_t *apps, fts_test_pipeline_t *p, int32_t first_id);

/* The ObjectId hex of counter n ("65a0" and n on 20 hex digits); out holds 25 bytes. */
void fts_test_apps_oid_hex(uint32_t n, char out[25]);

/* One step: inserts a document with id. */
void fts_test_apps_insert(fts_test_apps_t *apps, int32_t id);

/* One step: one seeded change (30% insert, 25% update, 15% id change, 12% replace, 18%
 * delete; always an insert while fewer than 20 documents live), counted in apps->counts. */
void fts_test_apps_random_change(fts_test_apps_t *apps, fts_test_rng_t *rng);

/* Deletes live document which (not a step) and forgets it (the last one takes its place). */
void fts_test_apps_delete_at(fts_test_apps_t *apps, size_t which);

/* Waits for an entry of id with op (0 = any) in the stream; returns its index in the entries
 * read. On timeout prints extract's log tail (NULL: none) and fails. */
size_t fts_test_apps_wait_entry(fts_test_apps_t *apps, const fts_test_extract_t *extract,
                                int32_t id, int op);

/* Inserts a marker document with id marker and waits until extract queued it: everything
 * written before it is in the stream. */
void fts_test_apps_wait_caught_up(fts_test_apps_t *apps, const fts_test_extract_t *extract,
                                  int32_t marker);

/* Sets load up (name: its index and logs) to read apps' pipeline on redis_url and write the
 * test bed's search engine, and starts one loader of binary. *load_ready becomes true as soon
 * as load is set up (before the loader starts): from then on the caller owns load and cleans
 * it up (fts_test_load_cleanup), even when this fails the test. */
void fts_test_apps_start_loading(const fts_test_apps_t *apps, fts_test_load_t *load,
                                 bool *load_ready, const char *binary, const char *redis_url,
                                 const char *name);

/* Waits for load to drain the stream, then fails unless the index equals the collection
 * (label prefixes the differences printed, up to 10; the loaders' logs are printed too). */
void fts_test_apps_assert_index_equals_collection(const fts_test_apps_t *apps,
                                                  fts_test_load_t *load, const char *label);

#endif
