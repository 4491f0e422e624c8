/*
 * testbed.h - how an integration test finds the servers the `testbed` CTest fixtures started,
 * and which search engine it runs against.
 *
 * test/tools/testbed.sh writes KEY=VALUE lines to $FTSYNC_TESTBED_DIR/testbed.env, e.g.
 *   FTSYNC_TEST_REDIS_URL=redis://127.0.0.1:40123/0
 *   FTSYNC_TEST_OPENSEARCH_URL=http://127.0.0.1:40124   (fixture `testbed`)
 *   FTSYNC_TEST_ES1_URL=http://127.0.0.1:40125          (fixture `testbed_es1`)
 * A variable of the same name in the environment wins, so a developer can point the tests at
 * servers of their own. A missing value fails the test with a message: tests never skip.
 *
 * The engine: FTSYNC_TEST_ENGINE=opensearch (the default: OpenSearch 2.19, typeless, the index
 * definition deploy/index/apps.json) or es1 (Elasticsearch 1.5.2: document type "doc", the
 * definition test/fixtures/apps-index-es1.json). CTest registers every engine-facing test once
 * per engine with this variable set. FTSYNC_TEST_ES_URL in the environment overrides the
 * engine's URL (a server of one's own, of the kind FTSYNC_TEST_ENGINE names).
 */
#ifndef FTS_TEST_TESTBED_H
#define FTS_TEST_TESTBED_H

/* The value of key, or NULL. The string is owned by the testbed module (lives until exit). */
const char *fts_testbed_get(const char *key);

/* Like fts_testbed_get, but prints what is missing (and where it looked) and exits 1. */
const char *fts_testbed_require(const char *key);

/* The scratch directory of this run ($FTSYNC_TESTBED_DIR), or "/tmp" outside CTest. */
const char *fts_testbed_dir(void);

typedef enum { FTS_TEST_ENGINE_OPENSEARCH = 0, FTS_TEST_ENGINE_ES1 } fts_test_engine_t;

/* The engine of this test run, from FTSYNC_TEST_ENGINE; an unknown value prints what is
 * accepted and exits 1. */
fts_test_engine_t fts_testbed_engine(void);

/* "opensearch" or "es1" (what FTSYNC_TEST_ENGINE and testbed.sh call it). */
const char *fts_testbed_engine_name(void);

/* The engine's base URL (see the top of this file); exits 1 when it is not known. */
const char *fts_testbed_es_url(void);

/* The document type bulk actions and FTSYNC_ES_DOC_TYPE need: "doc" on es1, NULL (typeless)
 * on OpenSearch. */
const char *fts_testbed_doc_type(void);

/* Absolute path of the engine's index definition of the apps index (analyzer english_text,
 * fields name, short_description, developers, publishers, updated_at). */
const char *fts_testbed_index_definition(void);

#endif
