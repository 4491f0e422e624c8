/*
 * es_async_testing.h - what tests look at inside the asynchronous Elasticsearch client, and
 * ftsync itself does not: not part of the client's API (es_async.h), so that nothing in
 * cmd/, core/ or adapters/ comes to depend on it.
 */
#ifndef FTS_ES_ASYNC_TESTING_H
#define FTS_ES_ASYNC_TESTING_H

#include "es_async.h"

/* The base URL new requests go to (after any failover), without its password. Owned by the
 * client. */
const char *fts_es_async_current_url(const fts_es_async_t *es);

#endif
