/*
 * load_sweep.h - the Elasticsearch requests of a `drop` or `sweep` entry and the reading of
 * their answers: pure, unit-tested, no I/O (the loader, load.c, sends them through its ports).
 *
 * A drop or sweep pages through the whole index with a scroll (the only paging that both
 * Elasticsearch 1.x and OpenSearch 2.x offer), asking for each document's `_version` and, from
 * its `_source`, only the ns field that the loader writes into every document (bulk_body.h).
 * The loader then deletes, with a versioned delete, each document of the entry's ns whose
 * version is below the entry's (README.md, Load).
 *
 * What keeps it safe (README.md, Architecture, invariants 2, 3 and 7):
 *   - a page is usable only when every shard answered: Elasticsearch 1.x answers an expired
 *     scroll with HTTP 200, no hits and a failed shard, which read naively is "the end";
 *     such a page is an error here, and the loader starts the whole sweep again;
 *   - every hit must carry `_index`, `_id` and a positive `_version`, or the page is an error
 *     (a document the sweep cannot judge is never skipped in silence);
 *   - a hit's `_index` is the concrete index it lives in, so that deletes through an alias
 *     pointing at several indices reach the right one.
 */
#ifndef FTS_LOAD_SWEEP_H
#define FTS_LOAD_SWEEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "error.h"

/* How long Elasticsearch keeps a scroll between two pages. */
#define FTS_SWEEP_KEEP_ALIVE "5m"

/* How the scroll id travels in the requests after the first. */
typedef enum {
    FTS_SWEEP_SCROLL_ID_TEXT = 1, /* Elasticsearch before 2.0: the id alone, as the body */
    FTS_SWEEP_SCROLL_ID_JSON      /* later Elasticsearch, OpenSearch: {"scroll_id": ...} */
} fts_sweep_dialect_t;

/* One document of a page. Strings owned by the page. */
typedef struct {
    char *index; /* the concrete index */
    char *id;
    size_t id_len;
    uint64_t version;
    char *ns; /* the ns field's value; NULL when the document has no such (string) field */
} fts_sweep_hit_t;

typedef struct {
    char *scroll_id; /* the id to continue with (it may change from page to page) */
    fts_sweep_hit_t *hits;
    size_t count; /* 0: the scroll is done */
} fts_sweep_page_t;

/* A request: method, path and body (a path and body the caller owns and destroys). */
typedef struct {
    const char *method;
    const char *content_type;
    fts_buffer_t path;
    fts_buffer_t body;
} fts_sweep_request_t;

void fts_sweep_request_init(fts_sweep_request_t *request);
void fts_sweep_request_destroy(fts_sweep_request_t *request);

/* POST /<index>/_refresh: what was acknowledged before the sweep becomes visible to its
 * scroll. index is an index or alias name as configured (no escaping is done). */
void fts_sweep_refresh_request(fts_sweep_request_t *request, const char *index);

/* The first page: POST /<index>/_search?scroll=... with size page_size, version: true, the
 * ns field alone from _source, sorted by _doc (index order, the cheap order of a scroll). */
void fts_sweep_search_request(fts_sweep_request_t *request, const char *index, size_t page_size,
                              const char *ns_field);

/* The next page after scroll_id. */
void fts_sweep_scroll_request(fts_sweep_request_t *request, fts_sweep_dialect_t dialect,
                              const char *scroll_id);

/* Frees the scroll on the server (DELETE /_search/scroll). */
void fts_sweep_clear_request(fts_sweep_request_t *request, fts_sweep_dialect_t dialect,
                             const char *scroll_id);

/* Reads a search or scroll answer (HTTP status, body of len bytes, not necessarily
 * NUL-terminated) into page, which the caller cleans up either way. False with err
 * (FTS_ERROR_ES) when the answer is not a complete page: a status other than 2xx, not JSON,
 * no _scroll_id, a failed or missing shard, a hit without _index, _id or positive _version.
 * err's code is FTS_ERROR_CODE_MISSING when the scroll is gone (404, or a shard failure such
 * as SearchContextMissingException): the sweep must start again from the beginning. */
bool fts_sweep_page_parse(long status, const char *body, size_t len, const char *ns_field,
                          fts_sweep_page_t *page, fts_error_t *err);

void fts_sweep_page_init(fts_sweep_page_t *page);
void fts_sweep_page_cleanup(fts_sweep_page_t *page);

#endif
