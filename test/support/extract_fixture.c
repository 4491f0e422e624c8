/*
 * extract_fixture.c - the shared set-up and the failing steps of the extract integration tests
 * (see extract_fixture.h). Each step turns a harness failure into a cmocka failure with the
 * harness's message, so a test reads as the sequence of things that must happen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "extract_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <mongoc/mongoc.h>

bool fts_test_extract_bed_start(fts_test_extract_bed_t *bed, const char *binary,
                                const char *workload, const char *const *redis_args,
                                uint64_t default_seed)
{
    fts_error_t err;
    fts_error_clear(&err);
    mongoc_init();
    bed->binary = binary;
    bed->workload = workload;
    const char *seed = getenv("FTSYNC_TEST_SEED");
    bed->seed = seed && *seed ? strtoull(seed, NULL, 10) : default_seed;
    bed->redis = fts_test_redis_server_start(redis_args, &err);
    if (!bed->redis) {
        fprintf(stderr, "cannot start redis-server: %s\n", err.message);
        return false;
    }
    bed->mongo = fts_test_mongo_double_start(NULL, &err);
    if (!bed->mongo) {
        fprintf(stderr, "cannot start the MongoDB double: %s\n", err.message);
        return false;
    }
    return true;
}

void fts_test_extract_bed_stop(fts_test_extract_bed_t *bed)
{
    fts_test_mongo_double_destroy(bed->mongo);
    bed->mongo = NULL;
    fts_test_redis_server_destroy(bed->redis);
    bed->redis = NULL;
    mongoc_cleanup();
}

void fts_test_extract_bed_pipeline(const fts_test_extract_bed_t *bed, fts_test_pipeline_t *p,
                                   const char *mongo_uri, const char *prefix)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_pipeline_init(p, bed->binary, bed->workload,
                                mongo_uri ? mongo_uri : fts_test_mongo_double_uri(bed->mongo),
                                fts_test_redis_server_url(bed->redis), prefix, &err)) {
        fail_msg("cannot set the pipeline up: %s", err.message);
    }
}

fts_test_extract_t *fts_test_pipeline_start_or_fail(fts_test_pipeline_t *p)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_extract_t *extract = fts_test_pipeline_start(p, &err);
    if (!extract) {
        fail_msg("cannot start ftsync extract: %s", err.message);
    }
    return extract;
}

void fts_test_extract_stop_clean(fts_test_extract_t **extract, unsigned timeout_ms)
{
    int status = 0;
    bool exited = fts_test_extract_stop(*extract, timeout_ms, &status);
    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fts_test_extract_print_log_tail(*extract, 40);
        fail_msg("ftsync extract did not exit 0 on SIGTERM (exited %d, status 0x%x)", exited,
                 status);
    }
    fts_test_extract_destroy(*extract);
    *extract = NULL;
}

size_t fts_test_pipeline_wait_entry(fts_test_pipeline_t *p, const fts_test_extract_t *extract,
                                    const char *id, int op, int origin, unsigned timeout_ms)
{
    long found =
        fts_test_stream_wait_for(p->redis, p->stream_key, &p->entries, id, op, origin, timeout_ms);
    if (found < 0) {
        if (extract) {
            fts_test_extract_print_log_tail(extract, 40);
        }
        fail_msg("no %s entry for id %s (origin %d) in %s within %u ms (%zu entries read)",
                 op ? fts_action_op_name((fts_action_op_t)op) : "any", id, origin, p->stream_key,
                 timeout_ms, p->entries.count);
    }
    return (size_t)found;
}

size_t fts_test_pipeline_wait_entry_number(fts_test_pipeline_t *p,
                                           const fts_test_extract_t *extract, int32_t id, int op,
                                           int origin, unsigned timeout_ms)
{
    char id_text[32];
    snprintf(id_text, sizeof id_text, "%d", (int)id);
    return fts_test_pipeline_wait_entry(p, extract, id_text, op, origin, timeout_ms);
}

void fts_test_pipeline_insert_marker(fts_test_pipeline_t *p, int32_t id)
{
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_test_pipeline_insert(p, id, "marker", 30000, &err)) {
        fail_msg("%s", err.message);
    }
}

void fts_test_pipeline_insert_doc(fts_test_pipeline_t *p, int32_t id, bool poison)
{
    bson_t *doc =
        BCON_NEW("_id", BCON_INT32(id), "name", BCON_UTF8("doc"), "poison", BCON_BOOL(poison));
    bson_error_t error;
    bool ok = mongoc_collection_insert_one(p->coll, doc, NULL, NULL, &error);
    bson_destroy(doc);
    if (!ok) {
        fail_msg("insert of _id %d: %s", (int)id, error.message);
    }
}

void fts_test_pipeline_assert_replay_equals_collection(fts_test_pipeline_t *p,
                                                       const fts_test_extract_t *extract,
                                                       const char *label)
{
    size_t differ = fts_test_pipeline_check_final(p, label);
    if (differ != 0) {
        if (extract) {
            fts_test_extract_print_log_tail(extract, 40);
        }
        fail_msg("%s: replaying the stream does not give the collection (%zd documents differ)",
                 label, (ssize_t)differ);
    }
}

void fts_test_pipeline_assert_no_dead_letters(fts_test_pipeline_t *p)
{
    long long dead = fts_test_redis_xlen(p->redis, p->dead_key);
    if (dead != 0) {
        fail_msg("%lld entries in the dead-letter stream %s, expected none", dead, p->dead_key);
    }
}
