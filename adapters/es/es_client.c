/*
 * es_client.c - HTTP to Elasticsearch on libcurl (see es_client.h).
 *
 * A request goes through three steps kept apart on purpose: request_build() makes what does not
 * depend on the node (headers, the gzipped body), handle_apply() puts it and one node's URL on a
 * curl easy handle, and request_outcome() judges what the transfer gave. Today one easy handle
 * runs them with curl_easy_perform(); driving the same steps from curl's multi interface on the
 * event loop only replaces the middle.
 *
 * Keep-alive: the client's single easy handle is reset (not recreated) between requests, and
 * curl_easy_reset() keeps the handle's connection cache, so consecutive requests to one node
 * share a TCP (and TLS) connection.
 */
#include "es_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "es_json.h"
#include "log.h"

#ifndef FTSYNC_VERSION
#error "FTSYNC_VERSION must be defined by the build (CMake does it for every target)"
#endif

/* A reply larger than this is refused instead of growing a buffer until malloc fails: the
 * largest legitimate ones (bulk results of big batches) stay far below. */
#define MAX_RESPONSE_BYTES (256u * 1024u * 1024u)

typedef struct {
    char *base;     /* normalised, without credentials or trailing '/'; safe to print */
    char *user;     /* from the URL, or NULL */
    char *password; /* from the URL, or NULL */
} es_node_t;

struct fts_es_client {
    CURL *handle;
    es_node_t *nodes;
    size_t node_count;
    size_t current; /* the node tried first: the last one that answered */
    char *user;
    char *password;
    char *api_key;
    char *ca_file;
    long connect_timeout_ms;
    long request_timeout_ms;
    bool gzip_requests;
    bool curl_initialised;
};

/* What one request needs whichever node it goes to. Owned by fts_es_request()'s frame. */
typedef struct {
    const char *method;
    const char *path;
    struct curl_slist *headers;
    fts_buffer_t gzipped;  /* the compressed body, when gzip_requests */
    const char *send_body; /* the bytes to send (body or gzipped.data), or NULL */
    size_t send_len;
    bool has_body;
    char *api_key_header; /* "Authorization: ApiKey ...", kept to be wiped */
    fts_es_response_t *response;
    bool response_too_large;
    char curl_message[CURL_ERROR_SIZE];
} es_request_t;

static char *copy_or_null(const char *text)
{
    if (!text) {
        return NULL;
    }
    char *copy = strdup(text);
    if (!copy) {
        fprintf(stderr, "ftsync: out of memory copying a string\n");
        abort();
    }
    return copy;
}

/* Frees a string that held a secret, overwriting it first so it does not linger in freed
 * memory that a core dump could show. */
static void free_secret(char *secret)
{
    if (secret) {
        volatile char *p = secret;
        while (*p) {
            *p++ = '\0';
        }
        free(secret);
    }
}

/* A URL as it may be shown when libcurl could not parse it, so nothing tells us where its
 * password is: everything between the scheme and the last '@' is masked. */
static void mask_unparsed_url(const char *url, char *out, size_t size)
{
    const char *authority = strstr(url, "://");
    authority = authority ? authority + 3 : url;
    const char *at = strrchr(authority, '@');
    if (!at) {
        snprintf(out, size, "%s", url);
        return;
    }
    snprintf(out, size, "%.*s***%s", (int)(authority - url), url, at);
}

static void node_clear(es_node_t *node)
{
    free(node->base);
    free(node->user);
    free_secret(node->password);
    memset(node, 0, sizeof *node);
}

/* Reads one URL part into a malloc'd string (curl_free'd copy), or NULL if absent. */
static char *url_part(CURLU *url, CURLUPart part, unsigned flags)
{
    char *value = NULL;
    if (curl_url_get(url, part, &value, flags) != CURLUE_OK || !value) {
        return NULL;
    }
    char *copy = copy_or_null(value);
    curl_free(value);
    return copy;
}

/* Validates text with libcurl's URL parser and fills node. `label` names the setting. When
 * masked is not NULL, it receives the URL with its password (if any) replaced by "***". */
static bool node_parse(const char *text, const char *label, es_node_t *node, char **masked,
                       fts_error_t *err)
{
    bool ok = false;
    char shown[512];
    char *scheme = NULL;
    char *host = NULL;
    char *query = NULL;
    char *fragment = NULL;
    char *normalised = NULL;
    CURLU *url = curl_url();
    if (!url) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_NO_MEMORY,
                             "out of memory parsing %s", label);
    }

    CURLUcode rc = curl_url_set(url, CURLUPART_URL, text, 0);
    if (rc != CURLUE_OK) {
        mask_unparsed_url(text, shown, sizeof shown);
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "%s \"%s\" is not a valid URL: %s (expected e.g. http://127.0.0.1:9200)",
                      label, shown, curl_url_strerror(rc));
        goto cleanup;
    }
    /* From here on the URL is parsed: it can be shown without its password. */
    node->user = url_part(url, CURLUPART_USER, CURLU_URLDECODE);
    node->password = url_part(url, CURLUPART_PASSWORD, CURLU_URLDECODE);
    if (node->password) {
        fts_log_add_secret(node->password);
        if (masked) {
            curl_url_set(url, CURLUPART_PASSWORD, "***", 0);
            *masked = url_part(url, CURLUPART_URL, 0);
        }
    } else if (masked) {
        *masked = url_part(url, CURLUPART_URL, 0);
    }
    curl_url_set(url, CURLUPART_USER, NULL, 0);
    curl_url_set(url, CURLUPART_PASSWORD, NULL, 0);
    curl_url_set(url, CURLUPART_OPTIONS, NULL, 0);
    normalised = url_part(url, CURLUPART_URL, 0);
    if (!normalised) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "%s could not be turned back into a URL by libcurl", label);
        goto cleanup;
    }

    scheme = url_part(url, CURLUPART_SCHEME, 0);
    if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "%s \"%s\" must use http or https, not %s", label, normalised,
                      scheme ? scheme : "(none)");
        goto cleanup;
    }
    host = url_part(url, CURLUPART_HOST, 0);
    if (!host || !*host) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID, "%s \"%s\" has no host", label,
                      normalised);
        goto cleanup;
    }
    query = url_part(url, CURLUPART_QUERY, 0);
    fragment = url_part(url, CURLUPART_FRAGMENT, 0);
    if (query || fragment) {
        /* Request paths are appended to the base URL; a query would end up in the middle. */
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "%s \"%s\" must not have a query (?...) or fragment (#...)", label,
                      normalised);
        goto cleanup;
    }

    size_t len = strlen(normalised);
    while (len > 0 && normalised[len - 1] == '/') {
        normalised[--len] = '\0';
    }
    node->base = normalised;
    normalised = NULL;
    ok = true;

cleanup:
    if (!ok) {
        node_clear(node);
        if (masked) {
            free(*masked);
            *masked = NULL;
        }
    }
    free(normalised);
    free(scheme);
    free(host);
    free(query);
    free(fragment);
    curl_url_cleanup(url);
    return ok;
}

bool fts_es_url_check(const char *url, char **masked, fts_error_t *err)
{
    if (masked) {
        *masked = NULL;
    }
    if (!url || !*url) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                             "Elasticsearch URL is empty");
    }
    es_node_t node = {0};
    bool ok = node_parse(url, "Elasticsearch URL", &node, masked, err);
    node_clear(&node);
    return ok;
}

fts_es_client_t *fts_es_client_new(const fts_es_options_t *options, fts_error_t *err)
{
    if (!options || !options->urls || options->url_count == 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "no Elasticsearch URL given (e.g. http://127.0.0.1:9200)");
        return NULL;
    }
    if (options->api_key && *options->api_key && options->user && *options->user) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "give either an Elasticsearch API key or a user and password, not both");
        return NULL;
    }
    if (options->password && *options->password && !(options->user && *options->user)) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "an Elasticsearch password is set but no user");
        return NULL;
    }
    if (options->connect_timeout_ms < 0 || options->request_timeout_ms < 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "Elasticsearch timeouts must not be negative");
        return NULL;
    }
    if (options->ca_file && *options->ca_file && access(options->ca_file, R_OK) != 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "Elasticsearch CA file %s cannot be read: %s", options->ca_file,
                      strerror(errno));
        return NULL;
    }
    /* Registered before anything can fail, so that no later message shows them. */
    fts_log_add_secret(options->password);
    fts_log_add_secret(options->api_key);

    fts_es_client_t *client = calloc(1, sizeof *client);
    if (!client) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory making the Elasticsearch client");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                      "libcurl could not be initialised");
        goto fail;
    }
    client->curl_initialised = true;

    client->nodes = calloc(options->url_count, sizeof *client->nodes);
    if (!client->nodes) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory making the Elasticsearch client");
        goto fail;
    }
    for (size_t i = 0; i < options->url_count; i++) {
        char label[64];
        if (options->url_count == 1) {
            snprintf(label, sizeof label, "Elasticsearch URL");
        } else {
            snprintf(label, sizeof label, "Elasticsearch URL #%zu", i + 1);
        }
        if (!options->urls[i] || !*options->urls[i]) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING, "%s is empty", label);
            goto fail;
        }
        if (!node_parse(options->urls[i], label, &client->nodes[i], NULL, err)) {
            goto fail;
        }
        client->node_count++;
        if (client->nodes[i].user && options->api_key && *options->api_key) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                          "%s has credentials and an API key is set too; give one of them", label);
            goto fail;
        }
    }

    client->user = options->user && *options->user ? copy_or_null(options->user) : NULL;
    client->password = client->user ? copy_or_null(options->password) : NULL;
    client->api_key = options->api_key && *options->api_key ? copy_or_null(options->api_key) : NULL;
    client->ca_file = options->ca_file && *options->ca_file ? copy_or_null(options->ca_file) : NULL;
    client->connect_timeout_ms = options->connect_timeout_ms ? options->connect_timeout_ms
                                                             : FTS_ES_DEFAULT_CONNECT_TIMEOUT_MS;
    client->request_timeout_ms = options->request_timeout_ms ? options->request_timeout_ms
                                                             : FTS_ES_DEFAULT_REQUEST_TIMEOUT_MS;
    client->gzip_requests = options->gzip_requests;

    client->handle = curl_easy_init();
    if (!client->handle) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_NO_MEMORY,
                      "libcurl could not make a handle");
        goto fail;
    }
    return client;

fail:
    fts_es_client_destroy(client);
    return NULL;
}

void fts_es_client_destroy(fts_es_client_t *client)
{
    if (!client) {
        return;
    }
    if (client->handle) {
        curl_easy_cleanup(client->handle);
    }
    for (size_t i = 0; i < client->node_count; i++) {
        node_clear(&client->nodes[i]);
    }
    free(client->nodes);
    free(client->user);
    free_secret(client->password);
    free_secret(client->api_key);
    free(client->ca_file);
    if (client->curl_initialised) {
        curl_global_cleanup();
    }
    free(client);
}

const char *fts_es_client_current_url(const fts_es_client_t *client)
{
    return client->nodes[client->current].base;
}

void fts_es_response_init(fts_es_response_t *response)
{
    response->status = 0;
    fts_buffer_init(&response->body);
}

void fts_es_response_cleanup(fts_es_response_t *response)
{
    if (!response) {
        return;
    }
    fts_buffer_destroy(&response->body);
    response->status = 0;
}

/* gzip (RFC 1952) of body into out, in one deflate call sized by deflateBound(). */
static bool gzip_body(const char *body, size_t len, fts_buffer_t *out, fts_error_t *err)
{
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    /* windowBits 15 + 16: a gzip wrapper rather than zlib's. */
    if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_NO_MEMORY,
                             "zlib could not start compressing a request body");
    }
    bool ok = false;
    if (len > UINT32_MAX) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "request body of %zu bytes is too large to compress", len);
        goto cleanup;
    }
    size_t bound = deflateBound(&stream, (uLong)len);
    fts_buffer_clear(out);
    fts_buffer_reserve(out, bound);
    stream.next_in = (Bytef *)(uintptr_t)body;
    stream.avail_in = (uInt)len;
    stream.next_out = (Bytef *)out->data;
    stream.avail_out = (uInt)bound;
    if (deflate(&stream, Z_FINISH) != Z_STREAM_END) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_IO,
                      "zlib could not compress a request body of %zu bytes", len);
        goto cleanup;
    }
    out->len = stream.total_out;
    out->data[out->len] = '\0';
    ok = true;

cleanup:
    deflateEnd(&stream);
    return ok;
}

static bool append_header(struct curl_slist **headers, const char *header, fts_error_t *err)
{
    struct curl_slist *grown = curl_slist_append(*headers, header);
    if (!grown) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_NO_MEMORY,
                             "out of memory building request headers");
    }
    *headers = grown;
    return true;
}

static void request_cleanup(es_request_t *request)
{
    curl_slist_free_all(request->headers);
    request->headers = NULL;
    free_secret(request->api_key_header);
    request->api_key_header = NULL;
    fts_buffer_destroy(&request->gzipped);
}

/* Methods whose requests carry no body unless given one; any other gets "Content-Length: 0"
 * when empty, which proxies in front of Elasticsearch expect for PUT and POST. */
static bool method_is_bodiless(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
           strcmp(method, "DELETE") == 0;
}

static bool request_build(fts_es_client_t *client, es_request_t *request, const char *method,
                          const char *path, const char *content_type, const char *body,
                          size_t body_len, fts_es_response_t *response, fts_error_t *err)
{
    memset(request, 0, sizeof *request);
    request->method = method;
    request->path = path;
    request->response = response;
    if (!method || !*method || strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method)) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "HTTP method \"%s\" is not an upper-case token",
                             method ? method : "(null)");
    }
    if (!path || path[0] != '/') {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "request path \"%s\" does not start with '/'", path ? path : "(null)");
    }
    if (strcmp(method, "HEAD") == 0 && body) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "a HEAD request cannot carry a body");
    }

    request->has_body = body != NULL || !method_is_bodiless(method);
    request->send_body = body ? body : "";
    request->send_len = body ? body_len : 0;
    if (request->has_body) {
        char header[256];
        snprintf(header, sizeof header, "Content-Type: %s",
                 content_type ? content_type : "application/json");
        if (!append_header(&request->headers, header, err)) {
            return false;
        }
        if (client->gzip_requests && request->send_len > 0) {
            if (!gzip_body(request->send_body, request->send_len, &request->gzipped, err)) {
                return false;
            }
            request->send_body = request->gzipped.data;
            request->send_len = request->gzipped.len;
            if (!append_header(&request->headers, "Content-Encoding: gzip", err)) {
                return false;
            }
        }
    }
    /* curl would send "Expect: 100-continue" for large bodies and wait for an answer that
     * Elasticsearch does not need to give; the round trip only adds latency. */
    if (!append_header(&request->headers, "Expect:", err)) {
        return false;
    }
    if (client->api_key) {
        size_t size = strlen("Authorization: ApiKey ") + strlen(client->api_key) + 1;
        request->api_key_header = malloc(size);
        if (!request->api_key_header) {
            return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_NO_MEMORY,
                                 "out of memory building request headers");
        }
        snprintf(request->api_key_header, size, "Authorization: ApiKey %s", client->api_key);
        if (!append_header(&request->headers, request->api_key_header, err)) {
            return false;
        }
    }
    return true;
}

static size_t on_body(char *data, size_t size, size_t count, void *user)
{
    es_request_t *request = user;
    size_t len = size * count;
    if (request->response->body.len + len > MAX_RESPONSE_BYTES) {
        request->response_too_large = true;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    fts_buffer_append(&request->response->body, data, len);
    return len;
}

/* Puts everything of request, aimed at node, on a freshly reset handle. */
static bool handle_apply(fts_es_client_t *client, CURL *handle, es_request_t *request,
                         const es_node_t *node, fts_error_t *err)
{
    fts_buffer_t url = {0};
    fts_buffer_append_str(&url, node->base);
    fts_buffer_append_str(&url, request->path);

    CURLcode rc = CURLE_OK;
#define SET(option, value)                                                                         \
    do {                                                                                           \
        if (rc == CURLE_OK) {                                                                      \
            rc = curl_easy_setopt(handle, option, value);                                          \
        }                                                                                          \
    } while (0)
    SET(CURLOPT_URL, url.data);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_NOSIGNAL, 1L); /* timeouts must not use SIGALRM in a multi-threaded process */
    SET(CURLOPT_CONNECTTIMEOUT_MS, client->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, client->request_timeout_ms);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ACCEPT_ENCODING, "gzip");
    SET(CURLOPT_USERAGENT, "ftsync/" FTSYNC_VERSION);
    SET(CURLOPT_ERRORBUFFER, request->curl_message);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, request);
    SET(CURLOPT_HTTPHEADER, request->headers);
    if (client->ca_file) {
        SET(CURLOPT_CAINFO, client->ca_file);
    }
    const char *user = client->user ? client->user : node->user;
    const char *password = client->user ? client->password : node->password;
    if (user) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, user);
        SET(CURLOPT_PASSWORD, password ? password : "");
    }
    if (strcmp(request->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (request->has_body) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)request->send_len);
        SET(CURLOPT_POSTFIELDS, request->send_body);
        if (strcmp(request->method, "POST") != 0) {
            SET(CURLOPT_CUSTOMREQUEST, request->method);
        }
    } else if (strcmp(request->method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, request->method);
    }
#undef SET
    fts_buffer_destroy(&url); /* libcurl copies string options */
    if (rc != CURLE_OK) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                             "libcurl refused an option for %s %s: %s", request->method,
                             request->path, curl_easy_strerror(rc));
    }
    return true;
}

/* Writes curl's view of a failed transfer: its detailed message when it gave one. */
static void describe_failure(const es_request_t *request, CURLcode rc, char *out, size_t size)
{
    if (rc == CURLE_WRITE_ERROR && request->response_too_large) {
        snprintf(out, size, "reply larger than %u bytes", MAX_RESPONSE_BYTES);
    } else if (request->curl_message[0] && strstr(request->curl_message, curl_easy_strerror(rc))) {
        snprintf(out, size, "%s", request->curl_message);
    } else if (request->curl_message[0]) {
        snprintf(out, size, "%s (%s)", request->curl_message, curl_easy_strerror(rc));
    } else {
        snprintf(out, size, "%s", curl_easy_strerror(rc));
    }
}

bool fts_es_request(fts_es_client_t *client, const char *method, const char *path,
                    const char *content_type, const char *body, size_t body_len,
                    fts_es_response_t *response, fts_error_t *err)
{
    es_request_t request;
    bool ok = false;
    fts_buffer_t failures = {0};
    CURLcode last_rc = CURLE_OK;

    if (!request_build(client, &request, method, path, content_type, body, body_len, response,
                       err)) {
        goto cleanup;
    }

    size_t start = client->current;
    size_t tried = 0;
    for (; tried < client->node_count; tried++) {
        size_t index = (start + tried) % client->node_count;
        const es_node_t *node = &client->nodes[index];
        fts_buffer_clear(&response->body);
        response->status = 0;
        request.response_too_large = false;
        request.curl_message[0] = '\0';

        /* Reset drops the previous request's options but keeps the connection cache. */
        curl_easy_reset(client->handle);
        if (!handle_apply(client, client->handle, &request, node, err)) {
            goto cleanup;
        }
        last_rc = curl_easy_perform(client->handle);
        if (last_rc == CURLE_OK) {
            curl_easy_getinfo(client->handle, CURLINFO_RESPONSE_CODE, &response->status);
            client->current = index;
            ok = true;
            goto cleanup;
        }

        char reason[CURL_ERROR_SIZE + 128];
        describe_failure(&request, last_rc, reason, sizeof reason);
        fts_buffer_appendf(&failures, "%s%s: %s", failures.len ? "; " : "", node->base, reason);

        /* Failing over is safe only while nothing of the request went out: a request that
         * reached a node may have been applied, and sending it twice is the caller's call. */
        long sent = 0;
        curl_easy_getinfo(client->handle, CURLINFO_REQUEST_SIZE, &sent);
        if (sent > 0 || tried + 1 == client->node_count) {
            tried++;
            break;
        }
        fts_log(FTS_LOG_WARN, "es", "Elasticsearch at %s did not answer (%s); trying %s",
                node->base, reason, client->nodes[(index + 1) % client->node_count].base);
    }

    int code = last_rc == CURLE_OPERATION_TIMEDOUT ? FTS_ERROR_CODE_TIMEOUT
               : last_rc == CURLE_WRITE_ERROR      ? FTS_ERROR_CODE_PROTOCOL
                                                   : FTS_ERROR_CODE_CONNECT;
    if (tried == 1) {
        fts_error_set(err, FTS_ERROR_ES, code, "Elasticsearch did not answer %s %s at %s", method,
                      path, failures.data);
    } else {
        fts_error_set(err, FTS_ERROR_ES, code,
                      "no Elasticsearch node answered %s %s (tried %zu): %s", method, path, tried,
                      failures.data);
    }
    if (err) {
        /* curl's messages never see a password (it is not in the URLs we give it), but a
         * message must not be the one place where a secret leaks, so scrub it anyway. */
        char scrubbed[FTS_ERROR_MESSAGE_SIZE];
        fts_log_redact(err->message, scrubbed, sizeof scrubbed);
        memcpy(err->message, scrubbed, sizeof err->message);
    }

cleanup:
    /* The handle still points at this frame's headers, body and buffers: drop them now, not at
     * the next request (its connections stay cached). */
    curl_easy_reset(client->handle);
    request_cleanup(&request);
    fts_buffer_destroy(&failures);
    return ok;
}

/* GET path, requiring 200, with the reply left in response. */
static bool get_ok(fts_es_client_t *client, const char *path, fts_es_response_t *response,
                   fts_error_t *err)
{
    if (!fts_es_request(client, "GET", path, NULL, NULL, 0, response, err)) {
        return false;
    }
    if (response->status != 200) {
        char what[384];
        snprintf(what, sizeof what, "Elasticsearch at %s: GET %s",
                 fts_es_client_current_url(client), path);
        return fts_es_reply_fail(err, what, response->status, response->body.data,
                                 response->body.len);
    }
    return true;
}

bool fts_es_server_info(fts_es_client_t *client, fts_es_server_info_t *out, fts_error_t *err)
{
    fts_es_response_t response = {0};
    bool ok = get_ok(client, "/", &response, err);
    if (ok && !fts_es_server_info_parse(response.body.data, response.body.len, out, err)) {
        fts_error_prefix(err, "Elasticsearch at %s", fts_es_client_current_url(client));
        ok = false;
    }
    fts_es_response_cleanup(&response);
    return ok;
}

bool fts_es_cluster_health(fts_es_client_t *client, fts_es_health_t *out, fts_error_t *err)
{
    fts_es_response_t response = {0};
    bool ok = get_ok(client, "/_cluster/health", &response, err);
    if (ok && !fts_es_health_parse(response.body.data, response.body.len, out, err)) {
        fts_error_prefix(err, "Elasticsearch at %s", fts_es_client_current_url(client));
        ok = false;
    }
    fts_es_response_cleanup(&response);
    return ok;
}

const char *fts_es_health_status_name(fts_es_health_status_t status)
{
    switch (status) {
    case FTS_ES_HEALTH_GREEN:
        return "green";
    case FTS_ES_HEALTH_YELLOW:
        return "yellow";
    case FTS_ES_HEALTH_RED:
        return "red";
    }
    return "unknown";
}

const char *fts_es_distribution_name(fts_es_distribution_t distribution)
{
    switch (distribution) {
    case FTS_ES_DISTRIBUTION_ELASTICSEARCH:
        return "elasticsearch";
    case FTS_ES_DISTRIBUTION_OPENSEARCH:
        return "opensearch";
    }
    return "unknown";
}
