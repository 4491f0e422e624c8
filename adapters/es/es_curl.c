/*
 * es_curl.c - the request steps both Elasticsearch clients share (see es_curl.h): validating
 * and copying the options, building a request's headers and gzipped body, putting them on a
 * curl easy handle, and describing a transfer that gave no answer.
 *
 * Keeps the promises listed in es_curl.h: secrets are registered with the logger before any
 * error can be produced and wiped before they are freed; node URLs are stored without passwords.
 */
#include "es_curl.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <bson/bson.h>

#include "log.h"
#include "permanent.h"

#ifndef FTSYNC_VERSION
#error "FTSYNC_VERSION must be defined by the build (CMake does it for every target)"
#endif

/* NULL for NULL; otherwise never NULL: allocation failure aborts. */
static char *copy_or_null(const char *text)
{
    return text ? bson_strdup(text) : NULL;
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
        bson_free(secret);
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

void fts_es_node_clear(fts_es_node_t *node)
{
    bson_free(node->base);
    bson_free(node->user);
    free_secret(node->password);
    memset(node, 0, sizeof *node);
}

/* Reads one URL part into a bson_malloc'd string (libcurl's copy is curl_free'd), or NULL if
 * absent. */
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

bool fts_es_node_parse(const char *text, const char *label, fts_es_node_t *node, char **masked,
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
        fts_fatal_oom("parsing an Elasticsearch URL");
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
        fts_log_add_basic_credentials(node->user, node->password);
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
        fts_es_node_clear(node);
        if (masked) {
            bson_free(*masked);
            *masked = NULL;
        }
    }
    bson_free(normalised);
    bson_free(scheme);
    bson_free(host);
    bson_free(query);
    bson_free(fragment);
    curl_url_cleanup(url);
    return ok;
}

bool fts_es_settings_init(fts_es_settings_t *settings, const fts_es_options_t *options,
                          fts_error_t *err)
{
    bool ok = false;
    memset(settings, 0, sizeof *settings);
    if (!options || !options->urls || options->url_count == 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "no Elasticsearch URL given (e.g. http://127.0.0.1:9200)");
        return false;
    }
    if (options->api_key && *options->api_key && options->user && *options->user) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "give either an Elasticsearch API key or a user and password, not both");
        return false;
    }
    if (options->password && *options->password && !(options->user && *options->user)) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "an Elasticsearch password is set but no user");
        return false;
    }
    if (options->connect_timeout_ms < 0 || options->request_timeout_ms < 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "Elasticsearch timeouts must not be negative");
        return false;
    }
    if (options->ca_file && *options->ca_file && access(options->ca_file, R_OK) != 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "Elasticsearch CA file %s cannot be read: %s", options->ca_file,
                      strerror(errno));
        return false;
    }
    /* Registered before anything can fail, so that no later message shows them. */
    fts_log_add_basic_credentials(options->user, options->password);
    fts_log_add_secret(options->api_key);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                      "libcurl could not be initialised");
        goto cleanup;
    }
    settings->curl_initialised = true;

    settings->nodes = bson_malloc0(options->url_count * sizeof *settings->nodes);
    for (size_t i = 0; i < options->url_count; i++) {
        char label[64];
        if (options->url_count == 1) {
            snprintf(label, sizeof label, "Elasticsearch URL");
        } else {
            snprintf(label, sizeof label, "Elasticsearch URL #%zu", i + 1);
        }
        if (!options->urls[i] || !*options->urls[i]) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING, "%s is empty", label);
            goto cleanup;
        }
        if (!fts_es_node_parse(options->urls[i], label, &settings->nodes[i], NULL, err)) {
            goto cleanup;
        }
        settings->node_count++;
        if (settings->nodes[i].user && options->api_key && *options->api_key) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                          "%s has credentials and an API key is set too; give one of them", label);
            goto cleanup;
        }
    }

    settings->user = options->user && *options->user ? copy_or_null(options->user) : NULL;
    settings->password = settings->user ? copy_or_null(options->password) : NULL;
    settings->api_key =
        options->api_key && *options->api_key ? copy_or_null(options->api_key) : NULL;
    settings->ca_file =
        options->ca_file && *options->ca_file ? copy_or_null(options->ca_file) : NULL;
    settings->connect_timeout_ms = options->connect_timeout_ms ? options->connect_timeout_ms
                                                               : FTS_ES_DEFAULT_CONNECT_TIMEOUT_MS;
    settings->request_timeout_ms = options->request_timeout_ms ? options->request_timeout_ms
                                                               : FTS_ES_DEFAULT_REQUEST_TIMEOUT_MS;
    settings->gzip_requests = options->gzip_requests;

    ok = true;

cleanup:
    if (!ok) {
        fts_es_settings_cleanup(settings);
    }
    return ok;
}

void fts_es_settings_cleanup(fts_es_settings_t *settings)
{
    for (size_t i = 0; i < settings->node_count; i++) {
        fts_es_node_clear(&settings->nodes[i]);
    }
    bson_free(settings->nodes);
    bson_free(settings->user);
    free_secret(settings->password);
    free_secret(settings->api_key);
    bson_free(settings->ca_file);
    if (settings->curl_initialised) {
        curl_global_cleanup();
    }
    memset(settings, 0, sizeof *settings);
}

/* gzip (RFC 1952) of body into out, in one deflate call sized by deflateBound(). */
static bool gzip_body(const char *body, size_t len, fts_buffer_t *out, fts_error_t *err)
{
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    /* windowBits 15 + 16: a gzip wrapper rather than zlib's. */
    int started =
        deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    if (started == Z_MEM_ERROR) {
        fts_fatal_oom("compressing a request body");
    }
    if (started != Z_OK) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                             "zlib could not start compressing a request body (error %d)", started);
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

/* libcurl fails to append only when it cannot allocate, which aborts. */
static void append_header(struct curl_slist **headers, const char *header)
{
    struct curl_slist *grown = curl_slist_append(*headers, header);
    if (!grown) {
        fts_fatal_oom("an HTTP header");
    }
    *headers = grown;
}

void fts_es_call_cleanup(fts_es_call_t *call)
{
    curl_slist_free_all(call->headers);
    call->headers = NULL;
    free_secret(call->api_key_header);
    call->api_key_header = NULL;
    fts_buffer_destroy(&call->gzipped);
}

/* Methods whose requests carry no body unless given one; any other gets "Content-Length: 0"
 * when empty, which proxies in front of Elasticsearch expect for PUT and POST. */
static bool method_is_bodiless(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
           strcmp(method, "DELETE") == 0;
}

bool fts_es_call_build(fts_es_call_t *call, const fts_es_settings_t *settings, const char *method,
                       const char *path, const char *content_type, const char *body,
                       size_t body_len, fts_es_response_t *response, fts_error_t *err)
{
    memset(call, 0, sizeof *call);
    call->method = method;
    call->path = path;
    call->response = response;
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

    call->has_body = body != NULL || !method_is_bodiless(method);
    call->send_body = body ? body : "";
    call->send_len = body ? body_len : 0;
    call->reply_limit = fts_es_reply_limit(path, call->send_body, call->send_len);
    if (call->has_body) {
        char header[256];
        snprintf(header, sizeof header, "Content-Type: %s",
                 content_type ? content_type : "application/json");
        append_header(&call->headers, header);
        if (settings->gzip_requests && call->send_len > 0) {
            if (!gzip_body(call->send_body, call->send_len, &call->gzipped, err)) {
                return false;
            }
            call->send_body = call->gzipped.data;
            call->send_len = call->gzipped.len;
            append_header(&call->headers, "Content-Encoding: gzip");
        }
    }
    /* curl would send "Expect: 100-continue" for large bodies and wait for an answer that
     * Elasticsearch does not need to give; the round trip only adds latency. */
    append_header(&call->headers, "Expect:");
    if (settings->api_key) {
        size_t size = strlen("Authorization: ApiKey ") + strlen(settings->api_key) + 1;
        call->api_key_header = bson_malloc(size);
        snprintf(call->api_key_header, size, "Authorization: ApiKey %s", settings->api_key);
        append_header(&call->headers, call->api_key_header);
    }
    return true;
}

/* True for a request to a _bulk endpoint ("/_bulk", "/<index>/_bulk", with or without a query). */
static bool path_is_bulk(const char *path)
{
    size_t len = strcspn(path, "?");
    return len >= 6 && strncmp(path + len - 6, "/_bulk", 6) == 0;
}

size_t fts_es_reply_limit(const char *path, const char *body, size_t body_len)
{
    if (!path_is_bulk(path)) {
        return FTS_ES_REPLY_MAX_BYTES;
    }
    /* Every item of the reply answers one action, and every action starts a line of the body
     * (an index action is two lines, a delete one): the line count bounds the item count. */
    size_t lines = 0;
    for (const char *p = body, *end = body + body_len; p && p < end; lines++) {
        p = memchr(p, '\n', (size_t)(end - p));
        p = p ? p + 1 : NULL;
    }
    return FTS_ES_BULK_REPLY_BASE_BYTES + lines * FTS_ES_BULK_REPLY_ITEM_BYTES;
}

static size_t on_body(char *data, size_t size, size_t count, void *user)
{
    fts_es_call_t *call = user;
    size_t len = size * count;
    if (call->response->body.len == 0 && call->handle) {
        /* A declared length over the limit is refused before any of it is held; one within it
         * sizes the buffer once instead of doubling it up to twice the reply. (With a gzipped
         * reply the length is the compressed one: only a hint, the limit still holds.) */
        curl_off_t declared = -1;
        curl_easy_getinfo(call->handle, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &declared);
        if (declared > 0 && (uint64_t)declared > call->reply_limit) {
            call->response_too_large = true;
            return 0;
        }
        if (declared > 0) {
            fts_buffer_reserve(&call->response->body, (size_t)declared);
        }
    }
    if (call->response->body.len + len > call->reply_limit) {
        call->response_too_large = true;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    fts_buffer_append(&call->response->body, data, len);
    return len;
}

/* Puts everything of call, aimed at node, on a fresh or freshly reset handle. */
bool fts_es_call_apply(const fts_es_settings_t *settings, CURL *handle, fts_es_call_t *call,
                       const fts_es_node_t *node, fts_error_t *err)
{
    fts_buffer_t url = {0};
    fts_buffer_append_str(&url, node->base);
    fts_buffer_append_str(&url, call->path);

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
    SET(CURLOPT_CONNECTTIMEOUT_MS, settings->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, settings->request_timeout_ms);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_ACCEPT_ENCODING, "gzip");
    SET(CURLOPT_USERAGENT, "ftsync/" FTSYNC_VERSION);
    SET(CURLOPT_ERRORBUFFER, call->curl_message);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, call);
    call->handle = handle; /* on_body reads the declared length from it */
    SET(CURLOPT_HTTPHEADER, call->headers);
    if (settings->ca_file) {
        SET(CURLOPT_CAINFO, settings->ca_file);
    }
    const char *user = settings->user ? settings->user : node->user;
    const char *password = settings->user ? settings->password : node->password;
    if (user) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, user);
        SET(CURLOPT_PASSWORD, password ? password : "");
    }
    if (strcmp(call->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (call->has_body) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->send_len);
        SET(CURLOPT_POSTFIELDS, call->send_body);
        if (strcmp(call->method, "POST") != 0) {
            SET(CURLOPT_CUSTOMREQUEST, call->method);
        }
    } else if (strcmp(call->method, "GET") != 0) {
        SET(CURLOPT_CUSTOMREQUEST, call->method);
    }
#undef SET
    fts_buffer_destroy(&url); /* libcurl copies string options */
    if (rc != CURLE_OK) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                             "libcurl refused an option for %s %s: %s", call->method, call->path,
                             curl_easy_strerror(rc));
    }
    return true;
}

/* Writes curl's view of a failed transfer: its detailed message when it gave one. */
void fts_es_call_describe_failure(const fts_es_call_t *call, CURLcode rc, char *out, size_t size)
{
    if (rc == CURLE_WRITE_ERROR && call->response_too_large) {
        snprintf(out, size,
                 "reply larger than %zu bytes, the most a reply to this request can be; "
                 "transfer aborted, the reply is not used",
                 call->reply_limit);
    } else if (call->curl_message[0] && strstr(call->curl_message, curl_easy_strerror(rc))) {
        snprintf(out, size, "%s", call->curl_message);
    } else if (call->curl_message[0]) {
        snprintf(out, size, "%s (%s)", call->curl_message, curl_easy_strerror(rc));
    } else {
        snprintf(out, size, "%s", curl_easy_strerror(rc));
    }
}

void fts_es_call_reset(fts_es_call_t *call)
{
    fts_buffer_clear(&call->response->body);
    call->response->status = 0;
    call->response_too_large = false;
    call->curl_message[0] = '\0';
}

int fts_es_curl_error_code(CURLcode rc)
{
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_CERTPROBLEM) {
        return FTS_ERROR_CODE_TLS; /* needs an operator (permanent.h) */
    }
    return rc == CURLE_OPERATION_TIMEDOUT ? FTS_ERROR_CODE_TIMEOUT
           : rc == CURLE_WRITE_ERROR      ? FTS_ERROR_CODE_PROTOCOL
                                          : FTS_ERROR_CODE_CONNECT;
}

bool fts_es_handle_sent_nothing(CURL *handle)
{
    long sent = 0;
    curl_easy_getinfo(handle, CURLINFO_REQUEST_SIZE, &sent);
    return sent == 0;
}

void fts_es_error_scrub(fts_error_t *err)
{
    if (err) {
        char scrubbed[FTS_ERROR_MESSAGE_SIZE];
        fts_log_redact(err->message, scrubbed, sizeof scrubbed);
        memcpy(err->message, scrubbed, sizeof err->message);
    }
}
