/*
 * test_es_index.c - index bootstrap, cluster health and server info against the test bed's real
 * search engine (FTSYNC_TEST_ENGINE; CTest runs it on both): OpenSearch 2.19 with
 * deploy/index/apps.json, or Elasticsearch 1.5.2 with the ES 1.x definition. The index is
 * created from the engine's definition (and its analyzer really works), a second run changes
 * nothing, aliases are added, and bad or missing definition files are refused without creating
 * anything.
 *
 * Where the engines differ the test says so: server info (distribution and major version),
 * _analyze (ES 1.x takes the analyzer and text as query parameters; OpenSearch takes a JSON
 * body on GET or POST and no longer reads them from the query string), where the mapping sits
 * (under the type "doc" on ES 1.x, directly under mappings on OpenSearch), and the shape of a
 * refused mapping (an unknown field type: "no_such_type" is quoted by both).
 *
 * Every run uses index names unique to it (pid and time) and deletes them at the end, so runs
 * can share one server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>
#include <cmocka.h>

#include "assertions.h"

#include "es_client.h"
#include "es_index.h"
#include "log.h"
#include "testbed.h"

/* The engine's definition of the apps index (deploy/index/apps.json, or the ES 1.x one). */
#define DEFINITION_PATH fts_testbed_index_definition()

static fts_es_client_t *client;
static char prefix[64]; /* ftsync-test-<pid>-<time>, shared by this run's indices */

static void name_for(const char *what, char *out, size_t size)
{
    snprintf(out, size, "%s-%s", prefix, what);
}

static int setup_client(void **state)
{
    (void)state;
    const char *url = fts_testbed_es_url();
    snprintf(prefix, sizeof prefix, "ftsync-test-%ld-%ld", (long)getpid(), (long)time(NULL));
    const char *urls[] = {url};
    fts_es_options_t options = {.urls = urls, .url_count = 1, .request_timeout_ms = 30000};
    fts_error_t err = {0};
    client = fts_es_client_new(&options, &err);
    if (!client) {
        fprintf(stderr, "cannot make a client for %s: %s\n", url, err.message);
        return -1;
    }
    return 0;
}

static int teardown_client(void **state)
{
    (void)state;
    /* Deleting by this run's prefix removes whatever a failed test left behind. */
    char path[128];
    snprintf(path, sizeof path, "/%s-*", prefix);
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    if (!fts_es_request(client, "DELETE", path, NULL, NULL, 0, &response, &err)) {
        fprintf(stderr, "cleanup of %s failed: %s\n", path, err.message);
    } else if (response.status != 200 && response.status != 404) {
        fprintf(stderr, "cleanup of %s: HTTP %ld %s\n", path, response.status,
                response.body.data ? response.body.data : "");
    }
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
    client = NULL;
    fts_log_reset();
    return 0;
}

/* GET path, requiring 200, parsed into doc. */
static void get_json(const char *path, bson_t *doc)
{
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    if (!fts_es_request(client, "GET", path, NULL, NULL, 0, &response, &err)) {
        fail_msg("GET %s: %s", path, err.message);
    }
    if (response.status != 200) {
        fail_msg("GET %s: HTTP %ld %s", path, response.status, response.body.data);
    }
    bson_error_t error;
    if (!bson_init_from_json(doc, response.body.data, (ssize_t)response.body.len, &error)) {
        fail_msg("GET %s: %s in %s", path, error.message, response.body.data);
    }
    fts_es_response_cleanup(&response);
}

/* POST path with a JSON body, requiring 200, parsed into doc. */
static void post_json(const char *path, const char *body, bson_t *doc)
{
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    if (!fts_es_request(client, "POST", path, "application/json", body, strlen(body), &response,
                        &err)) {
        fail_msg("POST %s: %s", path, err.message);
    }
    if (response.status != 200) {
        fail_msg("POST %s: HTTP %ld %s", path, response.status, response.body.data);
    }
    bson_error_t error;
    if (!bson_init_from_json(doc, response.body.data, (ssize_t)response.body.len, &error)) {
        fail_msg("POST %s: %s in %s", path, error.message, response.body.data);
    }
    fts_es_response_cleanup(&response);
}

/* The tokens of text through index's english_text analyzer, in the engine's own dialect of
 * _analyze (see the top of this file). */
static void analyze(fts_es_client_t *through, const char *index, const char *text, bson_t *tokens)
{
    char path[256];
    if (fts_testbed_engine() == FTS_TEST_ENGINE_ES1) {
        snprintf(path, sizeof path, "/%s/_analyze?analyzer=english_text&text=%s", index, text);
        (void)through;
        get_json(path, tokens);
        return;
    }
    snprintf(path, sizeof path, "/%s/_analyze", index);
    char body[256];
    snprintf(body, sizeof body, "{\"analyzer\":\"english_text\",\"text\":\"%s\"}", text);
    fts_es_client_t *saved = client;
    client = through;
    post_json(path, body, tokens);
    client = saved;
}

static long head_status(const char *path)
{
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    if (!fts_es_request(client, "HEAD", path, NULL, NULL, 0, &response, &err)) {
        fail_msg("HEAD %s: %s", path, err.message);
    }
    long status = response.status;
    fts_es_response_cleanup(&response);
    return status;
}

/* The string at a dotted path of doc, copied into out. */
static void string_at(const bson_t *doc, const char *dotted, char *out, size_t size)
{
    bson_iter_t iter;
    bson_iter_t found;
    if (!bson_iter_init(&iter, doc) || !bson_iter_find_descendant(&iter, dotted, &found) ||
        !BSON_ITER_HOLDS_UTF8(&found)) {
        char *json = bson_as_relaxed_extended_json(doc, NULL);
        fail_msg("no string at %s in %s", dotted, json);
    }
    snprintf(out, size, "%s", bson_iter_utf8(&found, NULL));
}

static char *write_file(const char *content)
{
    char *path = strdup("/tmp/ftsync-test-es-index-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return path;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_server_info_is_the_engine(void **state)
{
    (void)state;
    fts_es_server_info_t info;
    fts_error_t err = {0};
    if (!fts_es_server_info(client, &info, &err)) {
        fail_msg("%s", err.message);
    }
    if (fts_testbed_engine() == FTS_TEST_ENGINE_ES1) {
        assert_int_equal(info.major, 1);
        assert_int_equal(info.distribution, FTS_ES_DISTRIBUTION_ELASTICSEARCH);
        assert_true(strncmp(info.version, "1.", 2) == 0);
    } else {
        /* OpenSearch says version.distribution "opensearch"; its numbers restart at 1. */
        assert_int_equal(info.major, 2);
        assert_int_equal(info.minor, 19);
        assert_int_equal(info.distribution, FTS_ES_DISTRIBUTION_OPENSEARCH);
        assert_true(strncmp(info.version, "2.19.", 5) == 0);
    }
}

static void test_cluster_health(void **state)
{
    (void)state;
    fts_es_health_t health;
    fts_error_t err = {0};
    if (!fts_es_cluster_health(client, &health, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(health.status == FTS_ES_HEALTH_GREEN || health.status == FTS_ES_HEALTH_YELLOW);
    assert_true(health.number_of_nodes >= 1);
}

static void test_creates_index_with_its_analyzer(void **state)
{
    (void)state;
    char index[128];
    name_for("apps", index, sizeof index);
    char path[192];
    snprintf(path, sizeof path, "/%s", index);
    assert_int_equal(head_status(path), 404);

    fts_es_index_spec_t spec = {.index = index, .definition_path = DEFINITION_PATH};
    bool created = false;
    fts_error_t err = {0};
    if (!fts_es_index_ensure(client, &spec, &created, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(created);
    assert_int_equal(head_status(path), 200);

    /* The definition's analyzer is in place: english_text stems "running" to "run". */
    bson_t tokens;
    analyze(client, index, "running", &tokens);
    char token[64];
    string_at(&tokens, "tokens.0.token", token, sizeof token);
    assert_string_equal(token, "run");
    bson_destroy(&tokens);

    /* The mapping came from the file too: under the type doc on ES 1.x, typeless on OpenSearch. */
    char mapping_path[192];
    snprintf(mapping_path, sizeof mapping_path, "/%s/_mapping", index);
    bson_t mapping;
    get_json(mapping_path, &mapping);
    char dotted[256];
    char analyzer[64];
    snprintf(dotted, sizeof dotted, "%s.mappings.%sproperties.name.analyzer", index,
             fts_testbed_engine() == FTS_TEST_ENGINE_ES1 ? "doc." : "");
    string_at(&mapping, dotted, analyzer, sizeof analyzer);
    assert_string_equal(analyzer, "english_text");
    bson_destroy(&mapping);
}

static void test_second_ensure_changes_nothing(void **state)
{
    (void)state;
    char index[128];
    name_for("again", index, sizeof index);
    fts_es_index_spec_t spec = {.index = index, .definition_path = DEFINITION_PATH};
    bool created = false;
    fts_error_t err = {0};
    if (!fts_es_index_ensure(client, &spec, &created, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(created);

    char settings_path[192];
    snprintf(settings_path, sizeof settings_path, "/%s/_settings", index);
    char dotted[256];
    snprintf(dotted, sizeof dotted, "%s.settings.index.uuid", index);
    bson_t before;
    get_json(settings_path, &before);
    char uuid_before[64];
    string_at(&before, dotted, uuid_before, sizeof uuid_before);
    bson_destroy(&before);

    /* Even a different (and invalid) definition is not looked at: the index exists. */
    char *other = write_file("{\"settings\":{\"number_of_shards\":3}}");
    spec.definition_path = other;
    created = true;
    if (!fts_es_index_ensure(client, &spec, &created, &err)) {
        fail_msg("%s", err.message);
    }
    assert_false(created);

    bson_t after;
    get_json(settings_path, &after);
    char uuid_after[64];
    string_at(&after, dotted, uuid_after, sizeof uuid_after);
    char shards[16];
    snprintf(dotted, sizeof dotted, "%s.settings.index.number_of_shards", index);
    string_at(&after, dotted, shards, sizeof shards);
    bson_destroy(&after);
    assert_string_equal(uuid_after, uuid_before); /* same index, not recreated */
    assert_string_equal(shards, "1");             /* the fixture's, not the other file's */
    unlink(other);
    free(other);
}

static void test_alias_is_added(void **state)
{
    (void)state;
    char index[128];
    char alias[128];
    name_for("aliased-v1", index, sizeof index);
    name_for("aliased", alias, sizeof alias);
    fts_es_index_spec_t spec = {.index = index, .alias = alias, .definition_path = DEFINITION_PATH};
    bool created = false;
    fts_error_t err = {0};
    if (!fts_es_index_ensure(client, &spec, &created, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(created);

    char alias_path[192];
    snprintf(alias_path, sizeof alias_path, "/_alias/%s", alias);
    bson_t aliases;
    get_json(alias_path, &aliases);
    bson_iter_t iter;
    char dotted[300];
    snprintf(dotted, sizeof dotted, "%s.aliases", index);
    bson_iter_t found;
    assert_true(bson_iter_init(&iter, &aliases));
    assert_true(bson_iter_find_descendant(&iter, dotted, &found)); /* alias -> index */
    assert_int_equal(bson_count_keys(&aliases), 1);
    bson_destroy(&aliases);

    /* With the alias in place, a second run leaves everything alone. */
    if (!fts_es_index_ensure(client, &spec, &created, &err)) {
        fail_msg("%s", err.message);
    }
    assert_false(created);

    /* An existing index without its alias gets the alias, and is not recreated. */
    char bare[128];
    char bare_alias[128];
    name_for("bare", bare, sizeof bare);
    name_for("bare-alias", bare_alias, sizeof bare_alias);
    fts_es_index_spec_t plain = {.index = bare, .definition_path = DEFINITION_PATH};
    assert_true(fts_es_index_ensure(client, &plain, &created, &err));
    assert_true(created);
    fts_es_index_spec_t with_alias = {.index = bare, .alias = bare_alias};
    if (!fts_es_index_ensure(client, &with_alias, &created, &err)) {
        fail_msg("%s", err.message);
    }
    assert_false(created);
    snprintf(alias_path, sizeof alias_path, "/_alias/%s", bare_alias);
    assert_int_equal(head_status(alias_path), 200);
}

static void test_invalid_definition_creates_nothing(void **state)
{
    (void)state;
    char index[128];
    name_for("invalid", index, sizeof index);
    char path[192];
    snprintf(path, sizeof path, "/%s", index);

    static const char *const contents[] = {
        "{\"settings\": {\"number_of_shards\": 1,}",
        "[{\"settings\":{}}]",
    };
    for (size_t i = 0; i < sizeof contents / sizeof contents[0]; i++) {
        char *file = write_file(contents[i]);
        fts_es_index_spec_t spec = {.index = index, .definition_path = file};
        bool created = true;
        fts_error_t err = {0};
        assert_false(fts_es_index_ensure(client, &spec, &created, &err));
        assert_int_equal(err.domain, FTS_ERROR_INPUT);
        assert_contains(err.message, file);
        assert_contains(err.message, i == 0 ? "is not valid JSON" : "not a JSON object");
        assert_int_equal(head_status(path), 404);
        unlink(file);
        free(file);
    }
}

static void test_missing_definition_file(void **state)
{
    (void)state;
    char index[128];
    name_for("nofile", index, sizeof index);
    char path[192];
    snprintf(path, sizeof path, "/%s", index);

    fts_es_index_spec_t spec = {.index = index, .definition_path = "/nonexistent/ftsync/apps.json"};
    bool created = true;
    fts_error_t err = {0};
    assert_false(fts_es_index_ensure(client, &spec, &created, &err));
    assert_contains(err.message, "/nonexistent/ftsync/apps.json");
    assert_contains(err.message, "No such file or directory");
    assert_int_equal(head_status(path), 404);

    fts_es_index_spec_t unset = {.index = index};
    assert_false(fts_es_index_ensure(client, &unset, &created, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_contains(err.message, "does not exist");
    assert_contains(err.message, "FTSYNC_ES_INDEX_DEFINITION is not set");
    assert_int_equal(head_status(path), 404);
}

static void test_refusal_by_es_is_quoted(void **state)
{
    (void)state;
    char index[128];
    name_for("refused", index, sizeof index);
    /* Valid JSON, but a field type neither engine knows (in each engine's mapping shape). */
    char *file = write_file(
        fts_testbed_engine() == FTS_TEST_ENGINE_ES1
            ? "{\"mappings\":{\"doc\":{\"properties\":{\"name\":{\"type\":\"no_such_type\"}}}}}"
            : "{\"mappings\":{\"properties\":{\"name\":{\"type\":\"no_such_type\"}}}}");
    fts_es_index_spec_t spec = {.index = index, .definition_path = file};
    bool created = true;
    fts_error_t err = {0};
    assert_false(fts_es_index_ensure(client, &spec, &created, &err));
    assert_int_equal(err.domain, FTS_ERROR_ES);
    assert_contains(err.message, "refused to create index");
    assert_contains(err.message, "HTTP 400");
    assert_contains(err.message, "no_such_type");
    unlink(file);
    free(file);
}

static void test_gzip_bodies_accepted(void **state)
{
    (void)state;
    /* A second client that gzips its request bodies creates an index the same way. */
    const char *urls[] = {fts_testbed_es_url()};
    fts_es_options_t options = {.urls = urls, .url_count = 1, .gzip_requests = true};
    fts_error_t err = {0};
    fts_es_client_t *gzip_client = fts_es_client_new(&options, &err);
    assert_non_null(gzip_client);
    char index[128];
    name_for("gzip", index, sizeof index);
    fts_es_index_spec_t spec = {.index = index, .definition_path = DEFINITION_PATH};
    bool created = false;
    if (!fts_es_index_ensure(gzip_client, &spec, &created, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(created);
    bson_t tokens;
    analyze(gzip_client, index, "developers", &tokens);
    char token[64];
    string_at(&tokens, "tokens.0.token", token, sizeof token);
    assert_string_equal(token, "develop");
    bson_destroy(&tokens);
    fts_es_client_destroy(gzip_client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_info_is_the_engine),
        cmocka_unit_test(test_cluster_health),
        cmocka_unit_test(test_creates_index_with_its_analyzer),
        cmocka_unit_test(test_second_ensure_changes_nothing),
        cmocka_unit_test(test_alias_is_added),
        cmocka_unit_test(test_invalid_definition_creates_nothing),
        cmocka_unit_test(test_missing_definition_file),
        cmocka_unit_test(test_refusal_by_es_is_quoted),
        cmocka_unit_test(test_gzip_bodies_accepted),
    };
    return cmocka_run_group_tests(tests, setup_client, teardown_client);
}
