/*
 * test_load_sweep.c - the requests of a drop or sweep and the reading of its scroll pages
 * (core/load_sweep.c): a page is usable only when complete, so that a sweep cannot mistake
 * a lost scroll for its end, nor skip a document it could not judge.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "assertions.h"
#include "load_sweep.h"

static bool parse(long status, const char *body, fts_sweep_page_t *page, fts_error_t *err)
{
    fts_error_clear(err);
    return fts_sweep_page_parse(status, body, strlen(body), "_ftsync_ns", page, err);
}

static void test_requests_for_both_dialects(void **state)
{
    (void)state;
    fts_sweep_request_t request;
    fts_sweep_request_init(&request);
    fts_sweep_refresh_request(&request, "apps");
    assert_string_equal(request.method, "POST");
    assert_string_equal(request.path.data, "/apps/_refresh");
    fts_sweep_search_request(&request, "apps", 500, "_ftsync_ns");
    assert_string_equal(request.path.data, "/apps/_search?scroll=5m");
    assert_string_equal(request.body.data,
                        "{\"size\":500,\"version\":true,\"sort\":[\"_doc\"],\"_source\":"
                        "[\"_ftsync_ns\"],\"query\":{\"match_all\":{}}}");
    fts_sweep_scroll_request(&request, FTS_SWEEP_SCROLL_ID_TEXT, "c2Nhbj=");
    assert_string_equal(request.path.data, "/_search/scroll?scroll=5m");
    assert_string_equal(request.body.data, "c2Nhbj=");
    fts_sweep_scroll_request(&request, FTS_SWEEP_SCROLL_ID_JSON, "FGluY2x1ZGV");
    assert_string_equal(request.path.data, "/_search/scroll");
    assert_string_equal(request.body.data, "{\"scroll\":\"5m\",\"scroll_id\":\"FGluY2x1ZGV\"}");
    fts_sweep_clear_request(&request, FTS_SWEEP_SCROLL_ID_TEXT, "abc");
    assert_string_equal(request.method, "DELETE");
    assert_string_equal(request.body.data, "abc");
    fts_sweep_clear_request(&request, FTS_SWEEP_SCROLL_ID_JSON, "abc");
    assert_string_equal(request.body.data, "{\"scroll_id\":[\"abc\"]}");
    fts_sweep_request_destroy(&request);
}

static void test_page_of_hits(void **state)
{
    (void)state;
    fts_sweep_page_t page;
    fts_sweep_page_init(&page);
    fts_error_t err;
    /* recorded from Elasticsearch 1.5 (a hit without the field has an empty _source) */
    const char *body =
        "{\"_scroll_id\":\"cXVlcnk=\",\"took\":1,\"timed_out\":false,\"_shards\":{\"total\":1,"
        "\"successful\":1,\"failed\":0},\"hits\":{\"total\":6,\"max_score\":null,\"hits\":["
        "{\"_index\":\"t1\",\"_type\":\"doc\",\"_id\":\"5\",\"_version\":50,\"_score\":null,"
        "\"_source\":{\"_ftsync_ns\":\"a.b\"},\"sort\":[0]},"
        "{\"_index\":\"t1\",\"_type\":\"doc\",\"_id\":\"6\",\"_version\":7711304542322688003,"
        "\"_score\":null,\"_source\":{},\"sort\":[1]}]}}";
    assert_true(parse(200, body, &page, &err));
    assert_string_equal(page.scroll_id, "cXVlcnk=");
    assert_int_equal(page.count, 2);
    assert_string_equal(page.hits[0].index, "t1");
    assert_string_equal(page.hits[0].id, "5");
    assert_int_equal(page.hits[0].version, 50);
    assert_string_equal(page.hits[0].ns, "a.b");
    assert_int_equal(page.hits[1].version, 7711304542322688003ULL);
    assert_null(page.hits[1].ns);
    /* the end */
    assert_true(parse(200,
                      "{\"_scroll_id\":\"x\",\"_shards\":{\"total\":1,\"successful\":1,"
                      "\"failed\":0},\"hits\":{\"hits\":[]}}",
                      &page, &err));
    assert_int_equal(page.count, 0);
    fts_sweep_page_cleanup(&page);
}

static void test_incomplete_pages_are_errors(void **state)
{
    (void)state;
    fts_sweep_page_t page;
    fts_sweep_page_init(&page);
    fts_error_t err;
    /* Elasticsearch 1.5, scroll expired: HTTP 200, no hits, one failed shard */
    assert_false(parse(200,
                       "{\"_scroll_id\":\"c2Nh\",\"took\":3,\"timed_out\":false,\"_shards\":{"
                       "\"total\":1,\"successful\":0,\"failed\":1,\"failures\":[{\"status\":404,"
                       "\"reason\":\"SearchContextMissingException[No search context found for "
                       "id [1]]\"}]},\"hits\":{\"total\":6,\"max_score\":0.0,\"hits\":[]}}",
                       &page, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_MISSING);
    assert_contains(err.message, "1 of 1 shards");
    assert_int_equal(page.count, 0);
    /* a modern shard failure object */
    assert_false(parse(200,
                       "{\"_scroll_id\":\"x\",\"_shards\":{\"total\":2,\"successful\":1,"
                       "\"failed\":1,\"failures\":[{\"reason\":{\"type\":\"es_rejected_"
                       "execution_exception\",\"reason\":\"full\"}}]},\"hits\":{\"hits\":[]}}",
                       &page, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(err.message, "es_rejected_execution_exception: full");
    /* the scroll is gone */
    assert_false(parse(404, "{\"error\":\"search_context_missing_exception\"}", &page, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_MISSING);
    assert_false(parse(503, "{}", &page, &err));
    assert_false(parse(200, "{\"_scroll_id\":", &page, &err));
    assert_false(parse(200, "{\"_shards\":{\"total\":1,\"successful\":1},\"hits\":{\"hits\":[]}}",
                       &page, &err));
    assert_contains(err.message, "_scroll_id");
    /* a hit without a version cannot be judged: the page is refused, not shortened */
    assert_false(parse(200,
                       "{\"_scroll_id\":\"x\",\"_shards\":{\"total\":1,\"successful\":1},\"hits\":"
                       "{\"hits\":[{\"_index\":\"a\",\"_id\":\"1\",\"_version\":3},"
                       "{\"_index\":\"a\",\"_id\":\"2\"}]}}",
                       &page, &err));
    assert_contains(err.message, "_version");
    assert_int_equal(page.count, 0);
    assert_null(page.hits);
    fts_sweep_page_cleanup(&page);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_for_both_dialects),
        cmocka_unit_test(test_page_of_hits),
        cmocka_unit_test(test_incomplete_pages_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
