/*
 * test_es_client.c - the Elasticsearch client without a server: URL and option validation
 * (passwords never in errors), quoting of error replies in the modern and the 1.x shape, and
 * parsing of GET / and GET /_cluster/health replies recorded from ES 1.5, 7.x, 8.x and
 * OpenSearch 2.x, plus malformed ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <bson/bson.h>

#include "assertions.h"

#include "es_client.h"
#include "es_index.h"
#include "es_json.h"
#include "log.h"

/* ---- recorded replies ------------------------------------------------------------------ */

/* Elasticsearch 1.5.2 (the test bed's), GET / */
static const char ES1_ROOT[] =
    "{\n"
    "  \"status\" : 200,\n"
    "  \"name\" : \"Vakume\",\n"
    "  \"cluster_name\" : \"ftsync-dev\",\n"
    "  \"version\" : {\n"
    "    \"number\" : \"1.5.2\",\n"
    "    \"build_hash\" : \"62ff9868b4c8a0c45860bebb259e21980778ab1c\",\n"
    "    \"build_timestamp\" : \"2015-04-27T09:21:06Z\",\n"
    "    \"build_snapshot\" : false,\n"
    "    \"lucene_version\" : \"4.10.4\"\n"
    "  },\n"
    "  \"tagline\" : \"You Know, for Search\"\n"
    "}\n";

/* Elasticsearch 7.17, GET / */
static const char ES7_ROOT[] =
    "{\"name\":\"es01\",\"cluster_name\":\"docker-cluster\",\"cluster_uuid\":"
    "\"Zx3dXb0mQ0W7bSh6Q8m2dw\",\"version\":{\"number\":\"7.17.15\",\"build_flavor\":\"default\","
    "\"build_type\":\"docker\",\"build_hash\":\"0b8ecfb4378335f4689c4223d1f1115f16bef3ba\","
    "\"build_date\":\"2023-11-10T22:03:46.987399016Z\",\"build_snapshot\":false,"
    "\"lucene_version\":\"8.11.1\",\"minimum_wire_compatibility_version\":\"6.8.0\","
    "\"minimum_index_compatibility_version\":\"6.0.0-beta1\"},\"tagline\":\"You Know, for "
    "Search\"}";

/* Elasticsearch 8.11, GET / */
static const char ES8_ROOT[] =
    "{\n  \"name\" : \"es01\",\n  \"cluster_name\" : \"prod-search\",\n  \"cluster_uuid\" : "
    "\"q1nEwOMrSAKx2Mbl1X2xnA\",\n  \"version\" : {\n    \"number\" : \"8.11.1\",\n    "
    "\"build_flavor\" : \"default\",\n    \"build_type\" : \"docker\",\n    \"build_hash\" : "
    "\"6f9ff581fbcde658e6f69d6ce03050f060d1fd0c\",\n    \"build_date\" : "
    "\"2023-11-11T10:05:59.421038163Z\",\n    \"build_snapshot\" : false,\n    "
    "\"lucene_version\" : \"9.8.0\",\n    \"minimum_wire_compatibility_version\" : \"7.17.0\",\n "
    "   \"minimum_index_compatibility_version\" : \"7.0.0\"\n  },\n  \"tagline\" : \"You Know, "
    "for Search\"\n}\n";

/* OpenSearch 2.11, GET / */
static const char OS2_ROOT[] =
    "{\"name\":\"opensearch-node1\",\"cluster_name\":\"opensearch-cluster\",\"cluster_uuid\":"
    "\"lGf6Kq3YTm2oGm6pYj3b2A\",\"version\":{\"distribution\":\"opensearch\",\"number\":"
    "\"2.11.0\",\"build_type\":\"tar\",\"build_hash\":\"4dcad6dd1fd45b6bd91f041a041829c8687278fa"
    "\",\"build_date\":\"2023-10-13T02:55:55.511945994Z\",\"build_snapshot\":false,"
    "\"lucene_version\":\"9.7.0\",\"minimum_wire_compatibility_version\":\"7.10.0\","
    "\"minimum_index_compatibility_version\":\"7.0.0\"},\"tagline\":\"The OpenSearch Project: "
    "https://opensearch.org/\"}";

static const char ES1_HEALTH[] =
    "{\"cluster_name\":\"ftsync-dev\",\"status\":\"green\",\"timed_out\":false,"
    "\"number_of_nodes\":1,\"number_of_data_nodes\":1,\"active_primary_shards\":0,"
    "\"active_shards\":0,\"relocating_shards\":0,\"initializing_shards\":0,"
    "\"unassigned_shards\":0,\"number_of_pending_tasks\":0}";

static const char ES7_HEALTH[] =
    "{\"cluster_name\":\"docker-cluster\",\"status\":\"yellow\",\"timed_out\":false,"
    "\"number_of_nodes\":3,\"number_of_data_nodes\":2,\"active_primary_shards\":12,"
    "\"active_shards\":12,\"relocating_shards\":0,\"initializing_shards\":0,"
    "\"unassigned_shards\":12,\"delayed_unassigned_shards\":0,\"number_of_pending_tasks\":0,"
    "\"number_of_in_flight_fetch\":0,\"task_max_waiting_in_queue_millis\":0,"
    "\"active_shards_percent_as_number\":50.0}";

static const char ES8_HEALTH[] =
    "{\n  \"cluster_name\" : \"prod-search\",\n  \"status\" : \"red\",\n  \"timed_out\" : "
    "false,\n  \"number_of_nodes\" : 5,\n  \"number_of_data_nodes\" : 4,\n  "
    "\"active_primary_shards\" : 30,\n  \"active_shards\" : 59,\n  \"relocating_shards\" : 0,\n "
    " \"initializing_shards\" : 0,\n  \"unassigned_shards\" : 1,\n  "
    "\"unassigned_primary_shards\" : 1,\n  \"delayed_unassigned_shards\" : 0,\n  "
    "\"number_of_pending_tasks\" : 0,\n  \"number_of_in_flight_fetch\" : 0,\n  "
    "\"task_max_waiting_in_queue_millis\" : 0,\n  \"active_shards_percent_as_number\" : "
    "98.33333333333333\n}\n";

static const char OS2_HEALTH[] =
    "{\"cluster_name\":\"opensearch-cluster\",\"status\":\"green\",\"timed_out\":false,"
    "\"number_of_nodes\":2,\"number_of_data_nodes\":2,\"discovered_master\":true,"
    "\"discovered_cluster_manager\":true,\"active_primary_shards\":9,\"active_shards\":18,"
    "\"relocating_shards\":0,\"initializing_shards\":0,\"unassigned_shards\":0,"
    "\"delayed_unassigned_shards\":0,\"number_of_pending_tasks\":0,"
    "\"number_of_in_flight_fetch\":0,\"task_max_waiting_in_queue_millis\":0,"
    "\"active_shards_percent_as_number\":100.0}";

/* Error replies: 8.x (with root_cause and caused_by), 7.x already-exists, and 1.x strings. */
static const char ES8_MAPPER_ERROR[] =
    "{\"error\":{\"root_cause\":[{\"type\":\"mapper_parsing_exception\",\"reason\":\"Root "
    "mapping definition has unsupported parameters:  [doc : {properties={name={type=string}}}]"
    "\"}],\"type\":\"mapper_parsing_exception\",\"reason\":\"Failed to parse mapping: Root "
    "mapping definition has unsupported parameters:  [doc : {properties={name={type=string}}}]"
    "\",\"caused_by\":{\"type\":\"mapper_parsing_exception\",\"reason\":\"Root mapping "
    "definition has unsupported parameters:  [doc : {properties={name={type=string}}}]\"}},"
    "\"status\":400}";

static const char ES7_EXISTS_ERROR[] =
    "{\"error\":{\"root_cause\":[{\"type\":\"resource_already_exists_exception\",\"reason\":"
    "\"index [apps/9rWJv4dXQbGf0hQx8mB1Zg] already exists\",\"index_uuid\":"
    "\"9rWJv4dXQbGf0hQx8mB1Zg\",\"index\":\"apps\"}],\"type\":"
    "\"resource_already_exists_exception\",\"reason\":\"index [apps/9rWJv4dXQbGf0hQx8mB1Zg] "
    "already exists\",\"index_uuid\":\"9rWJv4dXQbGf0hQx8mB1Zg\",\"index\":\"apps\"},"
    "\"status\":400}";

static const char ES1_EXISTS_ERROR[] =
    "{\"error\":\"IndexAlreadyExistsException[[probe1] already exists]\",\"status\":400}";

static const char ES1_PARSE_ERROR[] =
    "{\"error\":\"ElasticsearchParseException[failed to parse source for create index]; nested: "
    "JsonParseException[Unexpected end-of-input in field name\\n at [Source: [B@3a23635b; line: "
    "1, column: 9]]; \",\"status\":400}";

static const char ES1_ALIAS_MISSING[] = "{\"error\":\"alias [nothere] missing\",\"status\":404}";

/* ---- helpers ------------------------------------------------------------------------------ */

static int reset_logger(void **state)
{
    (void)state;
    fts_log_reset();
    return 0;
}

static fts_es_client_t *client_for(const char *url, fts_error_t *err)
{
    const char *urls[] = {url};
    fts_es_options_t options = {.urls = urls, .url_count = 1};
    return fts_es_client_new(&options, err);
}

/* ---- URLs and options ----------------------------------------------------------------------- */

static void test_good_urls_are_normalised(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *base;
    } cases[] = {
        {"http://127.0.0.1:9200", "http://127.0.0.1:9200"},
        {"http://127.0.0.1:9200/", "http://127.0.0.1:9200"},
        {"https://es.example.com", "https://es.example.com"},
        {"HTTPS://ES.example.com:9243", "https://ES.example.com:9243"},
        {"http://[::1]:9200/", "http://[::1]:9200"},
        {"https://proxy.example:8443/elastic/", "https://proxy.example:8443/elastic"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_error_t err = {0};
        fts_es_client_t *client = client_for(cases[i].url, &err);
        if (!client) {
            fail_msg("%s refused: %s", cases[i].url, err.message);
        }
        assert_string_equal(fts_es_client_current_url(client), cases[i].base);
        fts_es_client_destroy(client);
        assert_true(fts_es_url_check(cases[i].url, NULL, &err));
    }
}

static void test_bad_urls_are_refused_by_name(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *expect; /* part of the message */
    } cases[] = {
        {"ftp://127.0.0.1:9200", "must use http or https"},
        {"127.0.0.1:9200", "127.0.0.1:9200"},
        {"http://", "http://"},
        {"http://:9200/", "http://:9200/"},
        {"http://127.0.0.1:9200/?pretty", "must not have a query"},
        {"http://127.0.0.1:9200/#top", "must not have a query"},
        {"http://es host:9200", "es host"},
        {"http://127.0.0.1:99999", "99999"},
        {"elasticsearch", "elasticsearch"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_error_t err = {0};
        fts_es_client_t *client = client_for(cases[i].url, &err);
        if (client) {
            fts_es_client_destroy(client);
            fail_msg("%s was accepted", cases[i].url);
        }
        assert_int_equal(err.domain, FTS_ERROR_CONFIG);
        assert_int_equal(err.code, FTS_ERROR_CODE_INVALID);
        assert_contains(err.message, "Elasticsearch URL");
        assert_contains(err.message, cases[i].expect);

        fts_error_t check_err = {0};
        char *masked = (char *)"untouched";
        assert_false(fts_es_url_check(cases[i].url, &masked, &check_err));
        assert_null(masked);
        assert_int_equal(check_err.code, FTS_ERROR_CODE_INVALID);
    }
}

static void test_url_credentials_never_in_errors(void **state)
{
    (void)state;
    /* Accepted: the password is kept out of the printable base URL. */
    fts_error_t err = {0};
    fts_es_client_t *client = client_for("http://elastic:Sup3rSecret@127.0.0.1:9200", &err);
    assert_non_null(client);
    assert_string_equal(fts_es_client_current_url(client), "http://127.0.0.1:9200");
    fts_es_client_destroy(client);

    char *masked = NULL;
    assert_true(fts_es_url_check("https://elastic:Sup3rSecret@es.example:9243", &masked, &err));
    assert_non_null(masked);
    assert_not_contains(masked, "Sup3rSecret");
    assert_contains(masked, "elastic:***@es.example:9243");
    bson_free(masked);

    /* Refused after parsing (bad scheme, query) and refused by the parser itself. */
    static const char *const bad[] = {
        "ftp://elastic:Sup3rSecret@127.0.0.1:9200",
        "http://elastic:Sup3rSecret@127.0.0.1:9200/?x=1",
        "http://elastic:Sup3rSecret@[::1:9200",
        "http://elastic:Sup3rSecret@es host:9200",
        "elastic:Sup3rSecret@127.0.0.1:9200",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fts_log_reset(); /* the check must not rely on the logger's masking */
        fts_error_t bad_err = {0};
        client = client_for(bad[i], &bad_err);
        if (client) {
            fts_es_client_destroy(client);
            fail_msg("%s was accepted", bad[i]);
        }
        assert_not_contains(bad_err.message, "Sup3rSecret");
        assert_contains(bad_err.message, "Elasticsearch URL");
    }
}

static void test_options_are_checked(void **state)
{
    (void)state;
    const char *urls[] = {"http://127.0.0.1:9200"};
    fts_error_t err = {0};

    fts_es_options_t none = {.urls = urls, .url_count = 0};
    assert_null(fts_es_client_new(&none, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_MISSING);

    fts_es_options_t both = {
        .urls = urls, .url_count = 1, .user = "elastic", .password = "pw-123", .api_key = "k-123"};
    assert_null(fts_es_client_new(&both, &err));
    assert_contains(err.message, "not both");
    assert_not_contains(err.message, "pw-123");
    assert_not_contains(err.message, "k-123");

    fts_es_options_t lonely = {.urls = urls, .url_count = 1, .password = "pw-123"};
    assert_null(fts_es_client_new(&lonely, &err));
    assert_contains(err.message, "no user");

    fts_es_options_t ca = {.urls = urls, .url_count = 1, .ca_file = "/nonexistent/ca.pem"};
    assert_null(fts_es_client_new(&ca, &err));
    assert_contains(err.message, "/nonexistent/ca.pem");

    const char *two[] = {"http://127.0.0.1:9200", "gopher://b:9200"};
    fts_es_options_t second_bad = {.urls = two, .url_count = 2};
    assert_null(fts_es_client_new(&second_bad, &err));
    assert_contains(err.message, "URL #2");
    assert_contains(err.message, "gopher");

    fts_es_options_t negative = {.urls = urls, .url_count = 1, .request_timeout_ms = -1};
    assert_null(fts_es_client_new(&negative, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
}

static void test_credentials_are_registered_as_secrets(void **state)
{
    (void)state;
    const char *urls[] = {"http://127.0.0.1:9200", "http://bob:url-pass-77@127.0.0.2:9200"};
    fts_es_options_t options = {
        .urls = urls, .url_count = 1, .user = "elastic", .password = "opt-pass-42"};
    fts_error_t err = {0};
    fts_es_client_t *client = fts_es_client_new(&options, &err);
    assert_non_null(client);
    fts_es_client_destroy(client);

    fts_es_options_t keyed = {.urls = urls, .url_count = 1, .api_key = "VnVhQ2ZHY0JDZGJrUW0="};
    client = fts_es_client_new(&keyed, &err);
    assert_non_null(client);
    fts_es_client_destroy(client);

    const char *url_only[] = {urls[1]};
    fts_es_options_t from_url = {.urls = url_only, .url_count = 1};
    client = fts_es_client_new(&from_url, &err);
    assert_non_null(client);
    fts_es_client_destroy(client);

    char out[256];
    fts_log_redact("a=opt-pass-42 b=VnVhQ2ZHY0JDZGJrUW0= c=url-pass-77", out, sizeof out);
    assert_string_equal(out, "a=*** b=*** c=***");
}

/* ---- error replies ---------------------------------------------------------------------- */

static void test_error_reply_modern_shape(void **state)
{
    (void)state;
    fts_es_error_reply_t reply;
    assert_true(fts_es_error_reply_parse(ES7_EXISTS_ERROR, strlen(ES7_EXISTS_ERROR), &reply));
    assert_string_equal(reply.type, "resource_already_exists_exception");
    assert_string_equal(reply.reason, "index [apps/9rWJv4dXQbGf0hQx8mB1Zg] already exists");
    assert_string_equal(reply.caused_by, "");

    char text[FTS_ERROR_MESSAGE_SIZE];
    fts_es_reply_describe(400, ES7_EXISTS_ERROR, strlen(ES7_EXISTS_ERROR), text, sizeof text);
    assert_string_equal(text, "HTTP 400: resource_already_exists_exception: index "
                              "[apps/9rWJv4dXQbGf0hQx8mB1Zg] already exists");

    assert_true(fts_es_error_reply_parse(ES8_MAPPER_ERROR, strlen(ES8_MAPPER_ERROR), &reply));
    assert_string_equal(reply.type, "mapper_parsing_exception");
    assert_contains(reply.caused_by, "mapper_parsing_exception: Root mapping definition");
    fts_es_reply_describe(400, ES8_MAPPER_ERROR, strlen(ES8_MAPPER_ERROR), text, sizeof text);
    assert_contains(text, "HTTP 400: mapper_parsing_exception: Failed to parse mapping");
    assert_contains(text, "(caused by mapper_parsing_exception: Root mapping");
}

static void test_error_reply_1x_shape(void **state)
{
    (void)state;
    fts_es_error_reply_t reply;
    assert_true(fts_es_error_reply_parse(ES1_EXISTS_ERROR, strlen(ES1_EXISTS_ERROR), &reply));
    assert_string_equal(reply.type, "IndexAlreadyExistsException");
    assert_string_equal(reply.reason, "IndexAlreadyExistsException[[probe1] already exists]");

    char text[FTS_ERROR_MESSAGE_SIZE];
    fts_es_reply_describe(400, ES1_EXISTS_ERROR, strlen(ES1_EXISTS_ERROR), text, sizeof text);
    assert_string_equal(text, "HTTP 400: IndexAlreadyExistsException[[probe1] already exists]");

    /* A reason with a newline stays one line. */
    assert_true(fts_es_error_reply_parse(ES1_PARSE_ERROR, strlen(ES1_PARSE_ERROR), &reply));
    assert_string_equal(reply.type, "ElasticsearchParseException");
    fts_es_reply_describe(400, ES1_PARSE_ERROR, strlen(ES1_PARSE_ERROR), text, sizeof text);
    assert_contains(text, "HTTP 400: ElasticsearchParseException[failed to parse source");
    assert_null(strchr(text, '\n'));

    /* Not every 1.x error names an exception. */
    assert_true(fts_es_error_reply_parse(ES1_ALIAS_MISSING, strlen(ES1_ALIAS_MISSING), &reply));
    assert_string_equal(reply.type, "");
    assert_string_equal(reply.reason, "alias [nothere] missing");
}

static void test_non_es_error_bodies_are_quoted(void **state)
{
    (void)state;
    fts_es_error_reply_t reply;
    const char *html = "<html>\r\n<body>502 Bad Gateway</body>\r\n</html>";
    assert_false(fts_es_error_reply_parse(html, strlen(html), &reply));
    char text[FTS_ERROR_MESSAGE_SIZE];
    fts_es_reply_describe(502, html, strlen(html), text, sizeof text);
    assert_string_equal(text, "HTTP 502: <html>  <body>502 Bad Gateway</body>  </html>");

    fts_es_reply_describe(503, NULL, 0, text, sizeof text);
    assert_string_equal(text, "HTTP 503: (empty body)");

    /* JSON, but not an error reply. */
    const char *other = "{\"acknowledged\":false}";
    assert_false(fts_es_error_reply_parse(other, strlen(other), &reply));
    const char *number_error = "{\"error\":42}";
    assert_false(fts_es_error_reply_parse(number_error, strlen(number_error), &reply));

    fts_error_t err = {0};
    assert_false(fts_es_reply_fail(&err, "GET /", 401, html, strlen(html)));
    assert_int_equal(err.domain, FTS_ERROR_ES);
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    assert_false(fts_es_reply_fail(&err, "GET /", 500, html, strlen(html)));
    assert_int_equal(err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(err.message, "GET /: HTTP 500: <html>");
}

static void test_quote_truncates_long_bodies(void **state)
{
    (void)state;
    char body[1000];
    memset(body, 'x', sizeof body);
    /* A two-byte character straddles the cut at 200 bytes. */
    body[199] = (char)0xC3;
    body[200] = (char)0xA9;
    char quote[FTS_ES_QUOTE_MAX + 64];
    fts_es_body_quote(body, sizeof body, quote, sizeof quote);
    assert_contains(quote, "...(1000 bytes)");
    assert_int_equal(strlen(quote), 199 + strlen("...(1000 bytes)"));
    assert_int_equal((unsigned char)quote[198], 'x');

    /* Even into a small buffer, the marker survives. */
    char small[40];
    fts_es_body_quote(body, sizeof body, small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_contains(small, "...(1000 bytes)");

    /* A body exactly at the limit is not marked. */
    fts_es_body_quote(body, FTS_ES_QUOTE_MAX - 10, quote, sizeof quote);
    assert_int_equal(strlen(quote), FTS_ES_QUOTE_MAX - 10);
}

/* ---- GET / --------------------------------------------------------------------------------- */

static void test_server_info_of_each_generation(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *version;
        int major;
        int minor;
        fts_es_distribution_t distribution;
        const char *cluster;
    } cases[] = {
        {ES1_ROOT, "1.5.2", 1, 5, FTS_ES_DISTRIBUTION_ELASTICSEARCH, "ftsync-dev"},
        {ES7_ROOT, "7.17.15", 7, 17, FTS_ES_DISTRIBUTION_ELASTICSEARCH, "docker-cluster"},
        {ES8_ROOT, "8.11.1", 8, 11, FTS_ES_DISTRIBUTION_ELASTICSEARCH, "prod-search"},
        {OS2_ROOT, "2.11.0", 2, 11, FTS_ES_DISTRIBUTION_OPENSEARCH, "opensearch-cluster"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_es_server_info_t info;
        fts_error_t err = {0};
        if (!fts_es_server_info_parse(cases[i].body, strlen(cases[i].body), &info, &err)) {
            fail_msg("case %zu: %s", i, err.message);
        }
        assert_string_equal(info.version, cases[i].version);
        assert_int_equal(info.major, cases[i].major);
        assert_int_equal(info.minor, cases[i].minor);
        assert_int_equal(info.distribution, cases[i].distribution);
        assert_string_equal(info.cluster_name, cases[i].cluster);
    }
    assert_string_equal(fts_es_distribution_name(FTS_ES_DISTRIBUTION_OPENSEARCH), "opensearch");
}

static void test_server_info_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *expect;
    } cases[] = {
        /* truncated mid-reply */
        {"{\"name\":\"es01\",\"version\":{\"number\":\"8.1", "{\"name\":\"es01\",\"version\""},
        {"", "(empty body)"},
        {"<html><body>Welcome to nginx!</body></html>", "<html><body>Welcome to nginx!"},
        {"{\"name\":\"es01\",\"tagline\":\"You Know, for Search\"}", "no version.number"},
        {"{\"version\":{\"number\":8}}", "no version.number"},
        {"{\"version\":\"8.11.1\"}", "no version.number"},
        {"{\"version\":{\"number\":\"latest\"}}", "not a MAJOR.MINOR version"},
        {"{\"version\":{\"number\":\"8\"}}", "not a MAJOR.MINOR version"},
        {"{\"version\":{\"number\":\"2.11.0\",\"distribution\":\"foosearch\"}}",
         "neither elasticsearch nor opensearch"},
        {"[1,2,3]", "no version.number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_es_server_info_t info;
        fts_error_t err = {0};
        if (fts_es_server_info_parse(cases[i].body, strlen(cases[i].body), &info, &err)) {
            fail_msg("case %zu (%s) was accepted", i, cases[i].body);
        }
        assert_int_equal(err.domain, FTS_ERROR_ES);
        assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
        assert_contains(err.message, "unexpected reply to GET /");
        assert_contains(err.message, cases[i].expect);
    }

    /* A huge malformed reply is quoted in part, not whole. */
    char big[4096];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 1] = '\0';
    fts_es_server_info_t info;
    fts_error_t err = {0};
    assert_false(fts_es_server_info_parse(big, strlen(big), &info, &err));
    assert_contains(err.message, "...(4095 bytes)");
}

/* ---- GET /_cluster/health --------------------------------------------------------------- */

static void test_health_of_each_generation(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        fts_es_health_status_t status;
        int nodes;
        int data_nodes;
    } cases[] = {
        {ES1_HEALTH, FTS_ES_HEALTH_GREEN, 1, 1},
        {ES7_HEALTH, FTS_ES_HEALTH_YELLOW, 3, 2},
        {ES8_HEALTH, FTS_ES_HEALTH_RED, 5, 4},
        {OS2_HEALTH, FTS_ES_HEALTH_GREEN, 2, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_es_health_t health;
        fts_error_t err = {0};
        if (!fts_es_health_parse(cases[i].body, strlen(cases[i].body), &health, &err)) {
            fail_msg("case %zu: %s", i, err.message);
        }
        assert_int_equal(health.status, cases[i].status);
        assert_int_equal(health.number_of_nodes, cases[i].nodes);
        assert_int_equal(health.number_of_data_nodes, cases[i].data_nodes);
    }
    assert_string_equal(fts_es_health_status_name(FTS_ES_HEALTH_YELLOW), "yellow");
}

static void test_health_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *expect;
    } cases[] = {
        {"{\"cluster_name\":\"x\",\"status\":\"gre", "{\"cluster_name\":\"x\",\"status\":\"gre"},
        {"{\"status\":\"purple\",\"number_of_nodes\":1}", "not green, yellow or red"},
        {"{\"status\":\"green\"}", "no number_of_nodes"},
        {"{\"status\":\"green\",\"number_of_nodes\":\"1\"}", "no number_of_nodes"},
        {"{\"status\":\"green\",\"number_of_nodes\":-3}", "no number_of_nodes"},
        {"{\"number_of_nodes\":1}", "no status"},
        {"{\"status\":\"green\",\"number_of_nodes\":1} trailing", "parse error"},
        {"null", "(4 bytes)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_es_health_t health;
        fts_error_t err = {0};
        if (fts_es_health_parse(cases[i].body, strlen(cases[i].body), &health, &err)) {
            fail_msg("case %zu (%s) was accepted", i, cases[i].body);
        }
        assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
        assert_contains(err.message, "unexpected reply to GET /_cluster/health");
        if (strcmp(cases[i].expect, "(4 bytes)") != 0) {
            assert_contains(err.message, cases[i].expect);
        } else {
            assert_contains(err.message, "reply was: null");
        }
    }

    /* number_of_data_nodes is optional. */
    const char *minimal = "{\"status\":\"yellow\",\"number_of_nodes\":1}";
    fts_es_health_t health;
    fts_error_t err = {0};
    assert_true(fts_es_health_parse(minimal, strlen(minimal), &health, &err));
    assert_int_equal(health.number_of_data_nodes, -1);
}

/* ---- index names ----------------------------------------------------------------------- */

static void test_index_names(void **state)
{
    (void)state;
    static const char *const good[] = {"apps",        "apps-v2", "apps_2024.01", "a",
                                       ".kibana-ish", "x+y",     "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        fts_error_t err = {0};
        if (!fts_es_index_name_validate(good[i], "index", &err)) {
            fail_msg("%s refused: %s", good[i], err.message);
        }
    }
    static const struct {
        const char *name;
        const char *expect;
    } bad[] = {
        {"", "empty"},
        {"Apps", "lower-case"},
        {"apps/v2", "'/'"},
        {"apps\\v2", "'\\'"},
        {"apps*", "'*'"},
        {"apps?", "'?'"},
        {"ap\"ps", "'\"'"},
        {"a<b", "'<'"},
        {"a>b", "'>'"},
        {"a|b", "'|'"},
        {"a b", "' '"},
        {"a,b", "','"},
        {"a#b", "'#'"},
        {"remote:apps", "':'"},
        {"-apps", "must not start with '-'"},
        {"_apps", "must not start with '_'"},
        {"+apps", "must not start with '+'"},
        {".", "not allowed"},
        {"..", "not allowed"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fts_error_t err = {0};
        if (fts_es_index_name_validate(bad[i].name, "index", &err)) {
            fail_msg("\"%s\" accepted", bad[i].name);
        }
        assert_int_equal(err.domain, FTS_ERROR_CONFIG);
        assert_contains(err.message, "Elasticsearch index name");
        assert_contains(err.message, bad[i].expect);
    }
    char long_name[300];
    memset(long_name, 'a', sizeof long_name);
    long_name[255] = '\0';
    fts_error_t err = {0};
    assert_true(fts_es_index_name_validate(long_name, "index", &err));
    long_name[255] = 'a';
    long_name[256] = '\0';
    assert_false(fts_es_index_name_validate(long_name, "alias", &err));
    assert_contains(err.message, "256 bytes");
    assert_contains(err.message, "alias");
}

/* ---- definition files ------------------------------------------------------------------ */

static char *write_temp(const char *content)
{
    char *path = strdup("/tmp/ftsync-test-definition-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *file = fdopen(fd, "w");
    fputs(content, file);
    fclose(file);
    return path;
}

static void test_definition_files(void **state)
{
    (void)state;
    static const struct {
        const char *content;
        const char *expect; /* NULL: accepted */
    } cases[] = {
        {"{\"settings\":{\"number_of_shards\":1},\"mappings\":{}}\n", NULL},
        {"  {}  ", NULL},
        {"{\"settings\": {", "is not valid JSON"},
        {"{\"settings\": nope}", "is not valid JSON"},
        {"[{\"settings\":{}}]", "is not a JSON object (it is an array)"},
        {"42", "is not a JSON object"},
        {"\"settings\"", "is not a JSON object"},
        {"{\"a\":1}{\"b\":2}", "more after its first value"},
        {"", "is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_temp(cases[i].content);
        fts_buffer_t out = {0};
        fts_error_t err = {0};
        bool ok = fts_es_index_definition_load(path, &out, &err);
        if (cases[i].expect == NULL) {
            if (!ok) {
                fail_msg("case %zu refused: %s", i, err.message);
            }
            assert_int_equal(out.len, strlen(cases[i].content));
            assert_memory_equal(out.data, cases[i].content, out.len);
        } else {
            if (ok) {
                fail_msg("case %zu (%s) accepted", i, cases[i].content);
            }
            assert_int_equal(err.domain, FTS_ERROR_INPUT);
            assert_contains(err.message, path);
            assert_contains(err.message, cases[i].expect);
            assert_int_equal(out.len, 0);
        }
        fts_buffer_destroy(&out);
        unlink(path);
        free(path);
    }

    /* libbson's own message is passed on. */
    char *path = write_temp("{\"settings\": {\"x\": tru}}");
    fts_buffer_t out = {0};
    fts_error_t err = {0};
    assert_false(fts_es_index_definition_load(path, &out, &err));
    assert_contains(err.message, "parse error");
    unlink(path);
    free(path);

    assert_false(fts_es_index_definition_load("/nonexistent/apps.json", &out, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_IO);
    assert_contains(err.message, "/nonexistent/apps.json");
    assert_contains(err.message, "No such file");
    fts_buffer_destroy(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_good_urls_are_normalised, reset_logger),
        cmocka_unit_test_setup(test_bad_urls_are_refused_by_name, reset_logger),
        cmocka_unit_test_setup(test_url_credentials_never_in_errors, reset_logger),
        cmocka_unit_test_setup(test_options_are_checked, reset_logger),
        cmocka_unit_test_setup(test_credentials_are_registered_as_secrets, reset_logger),
        cmocka_unit_test(test_error_reply_modern_shape),
        cmocka_unit_test(test_error_reply_1x_shape),
        cmocka_unit_test(test_non_es_error_bodies_are_quoted),
        cmocka_unit_test(test_quote_truncates_long_bodies),
        cmocka_unit_test(test_server_info_of_each_generation),
        cmocka_unit_test(test_server_info_malformed),
        cmocka_unit_test(test_health_of_each_generation),
        cmocka_unit_test(test_health_malformed),
        cmocka_unit_test(test_index_names),
        cmocka_unit_test(test_definition_files),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    fts_log_reset();
    return failed;
}
