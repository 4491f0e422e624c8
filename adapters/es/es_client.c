/*
 * es_client.c - HTTP to Elasticsearch on libcurl, blocking (see es_client.h).
 *
 * The steps of a request (validated settings, building it, putting it on an easy handle, judging
 * a failed transfer) live in es_curl.c, shared with the event-loop client es_async.c; this file
 * runs them with curl_easy_perform() and fails over within one call while nothing was sent.
 *
 * Keep-alive: the client's single easy handle is reset (not recreated) between requests, and
 * curl_easy_reset() keeps the handle's connection cache, so consecutive requests to one node
 * share a TCP (and TLS) connection.
 */
#include "es_client.h"

#include <bson/bson.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es_curl.h"
#include "signals.h"
#include "es_json.h"
#include "log.h"
#include "permanent.h"

struct fts_es_client {
    CURL *handle;
    fts_es_settings_t settings;
    size_t current; /* the node tried first: the last one that answered */
};

bool fts_es_url_check(const char *url, char **masked, fts_error_t *err)
{
    if (masked) {
        *masked = NULL;
    }
    if (!url || !*url) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                             "Elasticsearch URL is empty");
    }
    fts_es_node_t node = {0};
    bool ok = fts_es_node_parse(url, "Elasticsearch URL", &node, masked, err);
    fts_es_node_clear(&node);
    return ok;
}

fts_es_client_t *fts_es_client_new(const fts_es_options_t *options, fts_error_t *err)
{
    fts_es_client_t *client = bson_malloc0(sizeof *client);
    if (!fts_es_settings_init(&client->settings, options, err)) {
        goto fail;
    }
    client->handle = curl_easy_init();
    if (!client->handle) {
        fts_fatal_oom("a libcurl handle"); /* libcurl returns NULL only then */
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
    /* Last: it balances curl_global_init(), after which no curl call may be made. */
    fts_es_settings_cleanup(&client->settings);
    bson_free(client);
}

const char *fts_es_client_current_url(const fts_es_client_t *client)
{
    return client->settings.nodes[client->current].base;
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

/* libcurl calls this at least about once a second, even while a server says nothing: a stop
 * (SIGTERM) aborts the transfer then, instead of at the request timeout (issue 13, item 4). A
 * blocking request is only ever made outside the loader's event loop (start-up, check,
 * init-index), where abandoning it on a stop loses nothing. */
static int abort_on_stop(void *data, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                         curl_off_t ulnow)
{
    (void)data;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return fts_signals_stop_requested() ? 1 : 0;
}

bool fts_es_request(fts_es_client_t *client, const char *method, const char *path,
                    const char *content_type, const char *body, size_t body_len,
                    fts_es_response_t *response, fts_error_t *err)
{
    const fts_es_settings_t *settings = &client->settings;
    fts_es_call_t call;
    bool ok = false;
    fts_buffer_t failures = {0};
    CURLcode last_rc = CURLE_OK;

    if (!fts_es_call_build(&call, settings, method, path, content_type, body, body_len, response,
                           err)) {
        goto cleanup;
    }

    size_t start = client->current;
    size_t tried = 0;
    for (; tried < settings->node_count; tried++) {
        size_t index = (start + tried) % settings->node_count;
        const fts_es_node_t *node = &settings->nodes[index];
        fts_es_call_reset(&call);

        /* Reset drops the previous request's options but keeps the connection cache. */
        curl_easy_reset(client->handle);
        if (!fts_es_call_apply(settings, client->handle, &call, node, err)) {
            goto cleanup;
        }
        curl_easy_setopt(client->handle, CURLOPT_XFERINFOFUNCTION, abort_on_stop);
        curl_easy_setopt(client->handle, CURLOPT_NOPROGRESS, 0L);
        last_rc = curl_easy_perform(client->handle);
        if (last_rc == CURLE_OK) {
            curl_easy_getinfo(client->handle, CURLINFO_RESPONSE_CODE, &response->status);
            client->current = index;
            ok = true;
            goto cleanup;
        }

        char reason[CURL_ERROR_SIZE + 128];
        fts_es_call_describe_failure(&call, last_rc, reason, sizeof reason);
        fts_buffer_appendf(&failures, "%s%s: %s", failures.len ? "; " : "", node->base, reason);

        /* Failing over is safe only while nothing of the request went out: a request that
         * reached a node may have been applied, and sending it twice is the caller's call. */
        if (!fts_es_handle_sent_nothing(client->handle) || tried + 1 == settings->node_count ||
            last_rc == CURLE_ABORTED_BY_CALLBACK) {
            tried++;
            break;
        }
        fts_log(FTS_LOG_WARN, "es", "Elasticsearch at %s did not answer (%s); trying %s",
                node->base, reason, settings->nodes[(index + 1) % settings->node_count].base);
    }

    int code = fts_es_curl_error_code(last_rc);
    if (tried == 1) {
        fts_error_set(err, FTS_ERROR_ES, code, "Elasticsearch did not answer %s %s at %s", method,
                      path, failures.data);
    } else {
        fts_error_set(err, FTS_ERROR_ES, code,
                      "no Elasticsearch node answered %s %s (tried %zu): %s", method, path, tried,
                      failures.data);
    }
    fts_es_error_scrub(err);

cleanup:
    /* The handle still points at this frame's headers, body and buffers: drop them now, not at
     * the next request (its connections stay cached). */
    curl_easy_reset(client->handle);
    fts_es_call_cleanup(&call);
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
        /* A 2xx answer to GET / without Elasticsearch's version: another server is at the URL
         * (permanent.h), not one that is starting. */
        err->code = FTS_ERROR_CODE_NOT_ELASTICSEARCH;
        fts_error_prefix(err, "the server at %s is not Elasticsearch or OpenSearch",
                         fts_es_client_current_url(client));
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
