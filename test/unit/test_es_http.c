/*
 * test_es_http.c - what the Elasticsearch client really puts on the wire, checked against a
 * local capture server (test/support/http_capture.h): authentication headers, gzip request
 * bodies, User-Agent, keep-alive, timeouts, refused connections and failover; plus
 * fts_es_index_ensure() against scripted replies in the 1.x and modern shapes.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "assertions.h"

#include "es_client.h"
#include "es_index.h"
#include "http_capture.h"
#include "log.h"

static int start_capture(void **state)
{
    fts_log_reset();
    fts_error_t err = {0};
    fts_http_capture_t *capture = fts_http_capture_new(&err);
    if (!capture) {
        fprintf(stderr, "capture server: %s\n", err.message);
        return -1;
    }
    *state = capture;
    return 0;
}

static int stop_capture(void **state)
{
    fts_http_capture_destroy(*state);
    fts_log_reset();
    return 0;
}

static fts_es_client_t *client_with(fts_es_options_t options)
{
    fts_error_t err = {0};
    fts_es_client_t *client = fts_es_client_new(&options, &err);
    if (!client) {
        fail_msg("client: %s", err.message);
    }
    return client;
}

/* A loopback port nothing listens on: bound, then released. */
static unsigned short refused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof address), 0);
    socklen_t len = sizeof address;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&address, &len), 0);
    close(fd);
    return ntohs(address.sin_port);
}

static long elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

/* ---- request shape ---------------------------------------------------------------------- */

static void test_request_line_headers_and_status(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});

    fts_http_capture_set_reply(capture, 404, "application/json",
                               "{\"error\":\"IndexMissingException[[x] missing]\",\"status\":404}");
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    const char *body = "{\"settings\":{}}";
    assert_true(fts_es_request(client, "PUT", "/apps", NULL, body, strlen(body), &response, &err));
    assert_int_equal(response.status, 404);
    assert_string_equal(response.body.data,
                        "{\"error\":\"IndexMissingException[[x] missing]\",\"status\":404}");

    fts_http_capture_set_reply(capture, 200, "application/json", "{\"ok\":true}");
    assert_true(fts_es_request(client, "HEAD", "/apps", NULL, NULL, 0, &response, &err));
    assert_int_equal(response.status, 200);
    assert_int_equal(response.body.len, 0);
    const char *ndjson = "{\"index\":{}}\n{\"a\":1}\n";
    assert_true(fts_es_request(client, "POST", "/_bulk", "application/x-ndjson", ndjson,
                               strlen(ndjson), &response, &err));
    assert_string_equal(response.body.data, "{\"ok\":true}");
    assert_true(fts_es_request(client, "DELETE", "/apps", NULL, NULL, 0, &response, &err));
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));

    assert_int_equal(fts_http_capture_count(capture), 5);
    const fts_http_captured_t *put = fts_http_capture_get(capture, 0);
    assert_string_equal(put->method, "PUT");
    assert_string_equal(put->uri, "/apps");
    assert_string_equal(fts_http_captured_header(put, "Content-Type"), "application/json");
    assert_string_equal(put->body, body);
    assert_string_equal(fts_http_captured_header(put, "User-Agent"), "ftsync/" FTSYNC_VERSION);
    assert_string_equal(fts_http_captured_header(put, "Accept-Encoding"), "gzip");
    assert_null(fts_http_captured_header(put, "Content-Encoding"));
    assert_null(fts_http_captured_header(put, "Authorization"));
    assert_null(fts_http_captured_header(put, "Expect"));

    const fts_http_captured_t *head = fts_http_capture_get(capture, 1);
    assert_string_equal(head->method, "HEAD");
    assert_int_equal(head->body_len, 0);
    const fts_http_captured_t *bulk = fts_http_capture_get(capture, 2);
    assert_string_equal(bulk->method, "POST");
    assert_string_equal(bulk->uri, "/_bulk");
    assert_string_equal(fts_http_captured_header(bulk, "Content-Type"), "application/x-ndjson");
    assert_string_equal(bulk->body, ndjson);
    assert_string_equal(fts_http_capture_get(capture, 3)->method, "DELETE");
    const fts_http_captured_t *get = fts_http_capture_get(capture, 4);
    assert_string_equal(get->method, "GET");
    assert_null(fts_http_captured_header(get, "Content-Type"));

    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_base_url_path_prefix(void **state)
{
    fts_http_capture_t *capture = *state;
    char url[128];
    snprintf(url, sizeof url, "%s/search/", fts_http_capture_url(capture));
    const char *urls[] = {url};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    assert_true(fts_es_request(client, "GET", "/_cluster/health", NULL, NULL, 0, &response, &err));
    assert_string_equal(fts_http_capture_get(capture, 0)->uri, "/search/_cluster/health");
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_basic_auth_header(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with((fts_es_options_t){
        .urls = urls, .url_count = 1, .user = "elastic", .password = "changeme-pw"});
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    /* base64("elastic:changeme-pw") */
    assert_string_equal(fts_http_captured_header(fts_http_capture_get(capture, 0), "Authorization"),
                        "Basic ZWxhc3RpYzpjaGFuZ2VtZS1wdw==");
    fts_es_client_destroy(client);

    /* Credentials in the URL work too, and do not end up in the request line. */
    char url[160];
    snprintf(url, sizeof url, "http://alice:wonder-pw@%s", fts_http_capture_url(capture) + 7);
    const char *url_with_credentials[] = {url};
    client = client_with((fts_es_options_t){.urls = url_with_credentials, .url_count = 1});
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    const fts_http_captured_t *request = fts_http_capture_get(capture, 1);
    /* base64("alice:wonder-pw") */
    assert_string_equal(fts_http_captured_header(request, "Authorization"),
                        "Basic YWxpY2U6d29uZGVyLXB3");
    assert_string_equal(request->uri, "/");
    assert_not_contains(fts_es_client_current_url(client), "wonder-pw");

    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_api_key_header(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with((fts_es_options_t){
        .urls = urls, .url_count = 1, .api_key = "VnVhQ2ZHY0JDZGJrUW0tdGU6dWkybHA="});
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    assert_string_equal(fts_http_captured_header(fts_http_capture_get(capture, 0), "Authorization"),
                        "ApiKey VnVhQ2ZHY0JDZGJrUW0tdGU6dWkybHA=");
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

/* ---- gzip ----------------------------------------------------------------------------------- */

static void gunzip(const char *data, size_t len, fts_buffer_t *out)
{
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    assert_int_equal(inflateInit2(&stream, 15 + 16), Z_OK); /* gzip wrapper only */
    stream.next_in = (Bytef *)(uintptr_t)data;
    stream.avail_in = (uInt)len;
    int rc;
    do {
        char chunk[4096];
        stream.next_out = (Bytef *)chunk;
        stream.avail_out = sizeof chunk;
        rc = inflate(&stream, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            fail_msg("inflate: %d (%s)", rc, stream.msg ? stream.msg : "");
        }
        fts_buffer_append(out, chunk, sizeof chunk - stream.avail_out);
    } while (rc != Z_STREAM_END);
    assert_int_equal(stream.avail_in, 0); /* nothing after the gzip member */
    inflateEnd(&stream);
}

static void test_gzip_request_body(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client =
        client_with((fts_es_options_t){.urls = urls, .url_count = 1, .gzip_requests = true});

    fts_buffer_t ndjson = {0};
    for (int i = 0; i < 500; i++) {
        fts_buffer_appendf(&ndjson,
                           "{\"index\":{\"_id\":\"%d\",\"version\":%d,\"version_type\":"
                           "\"external\"}}\n{\"name\":\"app %d\",\"text\":\"caf\xc3\xa9\"}\n",
                           i, 1000 + i, i);
    }
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    assert_true(fts_es_request(client, "POST", "/_bulk", "application/x-ndjson", ndjson.data,
                               ndjson.len, &response, &err));

    const fts_http_captured_t *request = fts_http_capture_get(capture, 0);
    assert_string_equal(fts_http_captured_header(request, "Content-Encoding"), "gzip");
    assert_string_equal(fts_http_captured_header(request, "Content-Type"), "application/x-ndjson");
    assert_true(request->body_len > 18);
    assert_int_equal((unsigned char)request->body[0], 0x1f); /* gzip magic */
    assert_int_equal((unsigned char)request->body[1], 0x8b);
    assert_true(request->body_len < ndjson.len / 4); /* repetitive NDJSON compresses well */
    fts_buffer_t plain = {0};
    gunzip(request->body, request->body_len, &plain);
    assert_int_equal(plain.len, ndjson.len);
    assert_memory_equal(plain.data, ndjson.data, ndjson.len);

    /* Bodiless requests stay bodiless and unmarked. */
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    const fts_http_captured_t *get = fts_http_capture_get(capture, 1);
    assert_null(fts_http_captured_header(get, "Content-Encoding"));
    assert_int_equal(get->body_len, 0);

    fts_buffer_destroy(&plain);
    fts_buffer_destroy(&ndjson);
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

/* ---- connections ------------------------------------------------------------------------ */

static void test_keep_alive_reuses_one_connection(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    const char *body = "{\"a\":1}";
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    assert_true(fts_es_request(client, "PUT", "/x", NULL, body, strlen(body), &response, &err));
    assert_true(fts_es_request(client, "HEAD", "/x", NULL, NULL, 0, &response, &err));
    assert_int_equal(fts_http_capture_count(capture), 3);
    assert_int_equal(fts_http_capture_connection_count(capture), 1);
    assert_int_equal(fts_http_capture_get(capture, 2)->connection, 1);
    fts_es_client_destroy(client);

    /* A second client is a second connection: the counter does tell them apart. */
    client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    assert_int_equal(fts_http_capture_connection_count(capture), 2);
    assert_int_equal(fts_http_capture_get(capture, 3)->connection, 2);
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_timeout_when_server_stalls(void **state)
{
    fts_http_capture_t *capture = *state;
    fts_http_capture_set_stall(capture, true);
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client =
        client_with((fts_es_options_t){.urls = urls, .url_count = 1, .request_timeout_ms = 300});
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    assert_false(fts_es_request(client, "GET", "/_cluster/health", NULL, NULL, 0, &response, &err));
    long took = elapsed_ms(&start);
    assert_true(took >= 250 && took < 5000);
    assert_int_equal(err.domain, FTS_ERROR_ES);
    assert_int_equal(err.code, FTS_ERROR_CODE_TIMEOUT);
    assert_contains(err.message, fts_http_capture_url(capture));
    assert_contains(err.message, "GET /_cluster/health");
    assert_contains(err.message, "imeout"); /* curl: "Timeout was reached" */
    assert_int_equal(fts_http_capture_count(capture), 1);
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_connection_refused_names_url_not_password(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "http://bob:pw-s3cret@127.0.0.1:%u", refused_port());
    const char *urls[] = {url};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});
    fts_log_clear_secrets(); /* the message must be clean by itself, not only when logged */
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    assert_false(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    assert_int_equal(err.domain, FTS_ERROR_ES);
    assert_int_equal(err.code, FTS_ERROR_CODE_CONNECT);
    char expected_url[128];
    snprintf(expected_url, sizeof expected_url, "http://127.0.0.1:%s", strrchr(url, ':') + 1);
    assert_contains(err.message, expected_url);
    assert_contains(err.message, "Couldn't connect to server");
    assert_not_contains(err.message, "pw-s3cret");
    assert_not_contains(err.message, "bob");

    /* The higher-level calls fail the same way. */
    fts_es_server_info_t info;
    assert_false(fts_es_server_info(client, &info, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_CONNECT);
    assert_contains(err.message, expected_url);
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_failover_to_second_url(void **state)
{
    fts_http_capture_t *capture = *state;
    char down[64];
    snprintf(down, sizeof down, "http://127.0.0.1:%u", refused_port());
    const char *urls[] = {down, fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with(
        (fts_es_options_t){.urls = urls, .url_count = 2, .user = "elastic", .password = "fo-pass"});

    char *log_text = NULL;
    size_t log_len = 0;
    FILE *log = open_memstream(&log_text, &log_len);
    fts_log_set_stream(log);

    fts_es_response_t response = {0};
    fts_error_t err = {0};
    if (!fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err)) {
        fail_msg("no failover: %s", err.message);
    }
    assert_int_equal(response.status, 200);
    assert_int_equal(fts_http_capture_count(capture), 1);
    assert_string_equal(fts_es_client_current_url(client), fts_http_capture_url(capture));

    /* The node that answered is tried first from now on. */
    assert_true(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    assert_int_equal(fts_http_capture_count(capture), 2);

    fts_log_set_stream(NULL);
    fclose(log);
    assert_contains(log_text, down);
    assert_contains(log_text, "trying");
    assert_not_contains(log_text, "fo-pass");
    /* One warning: the second request went straight to the node that answered. */
    assert_null(strstr(strstr(log_text, "trying") + 1, "trying"));
    free(log_text);
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_all_urls_down(void **state)
{
    (void)state;
    char first[64];
    char second[64];
    snprintf(first, sizeof first, "http://127.0.0.1:%u", refused_port());
    snprintf(second, sizeof second, "http://127.0.0.1:%u", refused_port());
    const char *urls[] = {first, second};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 2});
    fts_es_response_t response = {0};
    fts_error_t err = {0};
    assert_false(fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_CONNECT);
    assert_contains(err.message, "no Elasticsearch node answered GET / (tried 2)");
    assert_contains(err.message, first);
    assert_contains(err.message, second);
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
}

static void test_no_failover_once_request_was_sent(void **state)
{
    fts_http_capture_t *stalling = *state;
    fts_http_capture_set_stall(stalling, true);
    fts_error_t err = {0};
    fts_http_capture_t *other = fts_http_capture_new(&err);
    assert_non_null(other);
    const char *urls[] = {fts_http_capture_url(stalling), fts_http_capture_url(other)};
    fts_es_client_t *client =
        client_with((fts_es_options_t){.urls = urls, .url_count = 2, .request_timeout_ms = 300});
    fts_es_response_t response = {0};
    const char *body = "{\"index\":{\"_id\":\"1\"}}\n{}\n";
    assert_false(fts_es_request(client, "POST", "/_bulk", "application/x-ndjson", body,
                                strlen(body), &response, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_TIMEOUT);
    /* The first node got the request and may have applied it: it must not go out twice. */
    assert_int_equal(fts_http_capture_count(stalling), 1);
    assert_int_equal(fts_http_capture_count(other), 0);
    fts_es_response_cleanup(&response);
    fts_es_client_destroy(client);
    fts_http_capture_destroy(other);
}

/* ---- server info and health over HTTP ---------------------------------------------------- */

static void test_server_info_and_health_over_http(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});
    fts_http_capture_queue_reply(
        capture, 200, "application/json",
        "{\"name\":\"n\",\"cluster_name\":\"c\",\"version\":{\"number\":\"8.11.1\","
        "\"build_flavor\":\"default\"},\"tagline\":\"You Know, for Search\"}");
    fts_http_capture_queue_reply(capture, 200, "application/json",
                                 "{\"cluster_name\":\"c\",\"status\":\"yellow\","
                                 "\"number_of_nodes\":3,\"number_of_data_nodes\":3}");
    fts_http_capture_queue_reply(
        capture, 401, "application/json",
        "{\"error\":{\"root_cause\":[{\"type\":\"security_exception\",\"reason\":\"missing "
        "authentication credentials for REST request [/]\"}],\"type\":\"security_exception\","
        "\"reason\":\"missing authentication credentials for REST request [/]\"},\"status\":401}");
    fts_http_capture_queue_reply(capture, 200, "text/html", "<html>hello</html>");

    fts_es_server_info_t info;
    fts_es_health_t health;
    fts_error_t err = {0};
    assert_true(fts_es_server_info(client, &info, &err));
    assert_int_equal(info.major, 8);
    assert_string_equal(info.version, "8.11.1");
    assert_true(fts_es_cluster_health(client, &health, &err));
    assert_int_equal(health.status, FTS_ES_HEALTH_YELLOW);
    assert_int_equal(health.number_of_nodes, 3);
    assert_string_equal(fts_http_capture_get(capture, 1)->uri, "/_cluster/health");

    assert_false(fts_es_server_info(client, &info, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    assert_contains(err.message, "HTTP 401: security_exception: missing authentication");
    assert_contains(err.message, fts_http_capture_url(capture));

    assert_false(fts_es_cluster_health(client, &health, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_PROTOCOL);
    assert_contains(err.message, "<html>hello</html>");
    assert_contains(err.message, fts_http_capture_url(capture));
    fts_es_client_destroy(client);
}

/* ---- ensure index against scripted replies ---------------------------------------------- */

static char *write_definition(const char *content)
{
    char *path = strdup("/tmp/ftsync-test-index-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return path;
}

static void test_ensure_index_race_counts_as_exists(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});
    char *definition = write_definition("{\"settings\":{\"number_of_shards\":1}}");
    fts_es_index_spec_t spec = {.index = "apps", .definition_path = definition};
    static const char *const replies[] = {
        "{\"error\":\"IndexAlreadyExistsException[[apps] already exists]\",\"status\":400}",
        "{\"error\":{\"type\":\"index_already_exists_exception\",\"reason\":\"index [apps/x] "
        "already exists\"},\"status\":400}",
        "{\"error\":{\"root_cause\":[],\"type\":\"resource_already_exists_exception\","
        "\"reason\":\"index [apps/x] already exists\"},\"status\":400}",
    };
    for (size_t i = 0; i < sizeof replies / sizeof replies[0]; i++) {
        fts_http_capture_queue_reply(capture, 404, "", "");                         /* HEAD */
        fts_http_capture_queue_reply(capture, 400, "application/json", replies[i]); /* PUT */
        fts_http_capture_queue_reply(capture, 200, "application/json",
                                     "{\"status\":\"green\",\"number_of_nodes\":1}");
        bool created = true;
        fts_error_t err = {0};
        if (!fts_es_index_ensure(client, &spec, &created, &err)) {
            fail_msg("reply %zu: %s", i, err.message);
        }
        assert_false(created);
        assert_int_equal(fts_http_capture_count(capture), 3 * i + 3);
        const fts_http_captured_t *put = fts_http_capture_get(capture, 3 * i + 1);
        assert_string_equal(put->method, "PUT");
        assert_string_equal(put->uri, "/apps");
        /* The definition, marked with the version scheme (es_index.h). */
        assert_string_equal(put->body, "{ \"settings\" : { \"number_of_shards\" : 1 }, "
                                       "\"mappings\" : { \"_meta\" : { \"ftsync\" : { "
                                       "\"version_scheme\" : 2 } } } }");
        /* Whoever created it, the index is waited for before it is used. */
        assert_string_equal(fts_http_capture_get(capture, 3 * i + 2)->uri,
                            "/_cluster/health/apps?wait_for_status=yellow&timeout=30s");
    }

    /* Another 400 is a refusal, quoted. */
    fts_http_capture_queue_reply(capture, 404, "", "");
    fts_http_capture_queue_reply(capture, 400, "application/json",
                                 "{\"error\":\"MapperParsingException[mapping [doc]]; nested: "
                                 "MapperParsingException[No handler for type [text] declared on "
                                 "field [name]]; \",\"status\":400}");
    fts_error_t err = {0};
    bool created = true;
    assert_false(fts_es_index_ensure(client, &spec, &created, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_SERVER);
    assert_contains(err.message, "refused to create index apps");
    assert_contains(err.message, definition);
    assert_contains(err.message, "No handler for type [text]");

    unlink(definition);
    free(definition);
    fts_es_client_destroy(client);
}

static void test_ensure_index_alias_flow(void **state)
{
    fts_http_capture_t *capture = *state;
    const char *urls[] = {fts_http_capture_url(capture)};
    fts_es_client_t *client = client_with((fts_es_options_t){.urls = urls, .url_count = 1});
    fts_es_index_spec_t spec = {.index = "apps-v1", .alias = "apps"};

    /* Alias there: nothing else is asked. */
    fts_http_capture_queue_reply(capture, 200, "", "");
    bool created = true;
    fts_error_t err = {0};
    assert_true(fts_es_index_ensure(client, &spec, &created, &err));
    assert_false(created);
    assert_int_equal(fts_http_capture_count(capture), 1);
    assert_string_equal(fts_http_capture_get(capture, 0)->method, "HEAD");
    assert_string_equal(fts_http_capture_get(capture, 0)->uri, "/_alias/apps");

    /* Alias missing, index there: the alias is added, the index left alone. */
    fts_http_capture_queue_reply(capture, 404, "", "");
    fts_http_capture_queue_reply(capture, 200, "", "");
    fts_http_capture_queue_reply(capture, 200, "application/json", "{\"acknowledged\":true}");
    assert_true(fts_es_index_ensure(client, &spec, &created, &err));
    assert_false(created);
    assert_int_equal(fts_http_capture_count(capture), 4);
    assert_string_equal(fts_http_capture_get(capture, 2)->uri, "/apps-v1");
    const fts_http_captured_t *aliases = fts_http_capture_get(capture, 3);
    assert_string_equal(aliases->method, "POST");
    assert_string_equal(aliases->uri, "/_aliases");
    assert_string_equal(aliases->body,
                        "{\"actions\":[{\"add\":{\"index\":\"apps-v1\",\"alias\":\"apps\"}}]}");

    /* Neither there, no definition: a clear error, and no PUT. */
    fts_http_capture_queue_reply(capture, 404, "", "");
    fts_http_capture_queue_reply(capture, 404, "", "");
    assert_false(fts_es_index_ensure(client, &spec, &created, &err));
    assert_int_equal(err.domain, FTS_ERROR_CONFIG);
    assert_contains(err.message, "index apps-v1 does not exist");
    assert_contains(err.message, "FTSYNC_ES_INDEX_DEFINITION is not set");
    assert_int_equal(fts_http_capture_count(capture), 6);

    /* A HEAD answered with 403 is an error, not "missing". */
    fts_http_capture_queue_reply(capture, 403, "", "");
    assert_false(fts_es_index_ensure(client, &spec, &created, &err));
    assert_int_equal(err.code, FTS_ERROR_CODE_AUTH);
    assert_contains(err.message, "HTTP 403");

    /* Names that need escaping in a path are escaped. */
    fts_es_index_spec_t odd = {.index = "a&b=c%d"};
    fts_http_capture_queue_reply(capture, 200, "", "");
    assert_true(fts_es_index_ensure(client, &odd, &created, &err));
    assert_string_equal(fts_http_capture_get(capture, 7)->uri, "/a%26b%3Dc%25d");

    /* A bad name is refused before anything is sent. */
    fts_es_index_spec_t bad = {.index = "Apps"};
    assert_false(fts_es_index_ensure(client, &bad, &created, &err));
    assert_int_equal(fts_http_capture_count(capture), 8);
    fts_es_client_destroy(client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_line_headers_and_status, start_capture,
                                        stop_capture),
        cmocka_unit_test_setup_teardown(test_base_url_path_prefix, start_capture, stop_capture),
        cmocka_unit_test_setup_teardown(test_basic_auth_header, start_capture, stop_capture),
        cmocka_unit_test_setup_teardown(test_api_key_header, start_capture, stop_capture),
        cmocka_unit_test_setup_teardown(test_gzip_request_body, start_capture, stop_capture),
        cmocka_unit_test_setup_teardown(test_keep_alive_reuses_one_connection, start_capture,
                                        stop_capture),
        cmocka_unit_test_setup_teardown(test_timeout_when_server_stalls, start_capture,
                                        stop_capture),
        cmocka_unit_test_setup_teardown(test_connection_refused_names_url_not_password,
                                        start_capture, stop_capture),
        cmocka_unit_test_setup_teardown(test_failover_to_second_url, start_capture, stop_capture),
        cmocka_unit_test_setup_teardown(test_all_urls_down, start_capture, stop_capture),
        cmocka_unit_test_setup_teardown(test_no_failover_once_request_was_sent, start_capture,
                                        stop_capture),
        cmocka_unit_test_setup_teardown(test_server_info_and_health_over_http, start_capture,
                                        stop_capture),
        cmocka_unit_test_setup_teardown(test_ensure_index_race_counts_as_exists, start_capture,
                                        stop_capture),
        cmocka_unit_test_setup_teardown(test_ensure_index_alias_flow, start_capture, stop_capture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
