/*
 * es_scroll.h - blocking reads of a whole index for `ftsync verify`: the document count, a
 * scroll over every document id in pages, and _mget of a page of ids with their sources.
 *
 * Memory stays bounded by one page: a scroll hands out one page of ids at a time and the
 * caller asks for the next. The requests are the ones Elasticsearch 1.x and 7/8 and OpenSearch
 * 1/2 all accept: POST /<index>/_search?scroll=<keep> with a match_all query, size and
 * "_source": false; GET /_search/scroll?scroll=<keep>&scroll_id=<id> (the id in the query
 * string, which every generation reads); DELETE /_search/scroll/<id> at the end (best effort:
 * an abandoned scroll expires after its keep-alive). _mget goes to /<index>/_mget, or
 * /<index>/<type>/_mget when a document type is configured (clusters before 7.0).
 *
 * Errors: no HTTP answer as fts_es_request reports it (CONNECT/TIMEOUT); an HTTP error status
 * via fts_es_reply_fail; a reply without the expected fields FTS_ERROR_ES/PROTOCOL quoting it.
 */
#ifndef FTS_ES_SCROLL_H
#define FTS_ES_SCROLL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "error.h"
#include "es_client.h"

/* GET /<index>/_count: how many documents the index (or alias) holds. */
bool fts_es_index_count(fts_es_client_t *client, const char *index, uint64_t *count,
                        fts_error_t *err);

/* POST /<index>/_refresh, so that a search sees every write acknowledged so far. */
bool fts_es_index_refresh(fts_es_client_t *client, const char *index, fts_error_t *err);

typedef struct fts_es_scroll fts_es_scroll_t;

/* A scroll over every id of index, page_size ids per page (index copied; client borrowed
 * until destroy). Nothing is sent before the first next. Never NULL. */
fts_es_scroll_t *fts_es_scroll_new(fts_es_client_t *client, const char *index, size_t page_size);

/* Passes over the documents whose _source field `field` names another ns than ns (the loader's
 * mark of the collection a document came from, FTSYNC_NS_FIELD), so that an index or alias
 * shared with other collections is read as this collection's part; unmarked documents are kept.
 * Call before the first next. */
void fts_es_scroll_only_ns(fts_es_scroll_t *scroll, const char *field, const char *ns);

/* Documents the ns filter passed over so far (marked with another collection). */
uint64_t fts_es_scroll_skipped(const fts_es_scroll_t *scroll);

/* The next page: *ids (an array of *count NUL-terminated ids) owned by the scroll until the
 * next call. *count 0: the end. */
bool fts_es_scroll_next(fts_es_scroll_t *scroll, char ***ids, size_t *count, fts_error_t *err);

/* Clears the scroll on the server (errors ignored) and frees it. Accepts NULL. */
void fts_es_scroll_destroy(fts_es_scroll_t *scroll);

/* One document as _mget found it. */
typedef struct {
    bool found;
    bson_t *source;   /* found: the _source as BSON (parsed from its JSON), owned */
    uint64_t version; /* found: _version */
} fts_es_doc_t;

/* _mget of count ids (id_lens NULL: NUL-terminated) into docs[0..count) in the same order
 * (cleaned up first by the caller with fts_es_docs_cleanup). doc_type NULL: typeless. */
bool fts_es_mget(fts_es_client_t *client, const char *index, const char *doc_type,
                 const char *const *ids, const size_t *id_lens, size_t count, fts_es_doc_t *docs,
                 fts_error_t *err);
void fts_es_docs_cleanup(fts_es_doc_t *docs, size_t count);

/* Percent-encodes text for a URL path segment or query value into buf (appended). */
void fts_es_url_escape(fts_buffer_t *buf, const char *text);

#endif
