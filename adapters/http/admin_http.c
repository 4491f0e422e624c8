/*
 * admin_http.c - the admin endpoint (admin_http.h) on libevent's evhttp, on its own thread.
 *
 * The thread owns its event_base and everything on it; the only things it shares with the
 * process are the metrics block (atomics) and the callbacks' contexts (the callers keep those
 * thread-safe). It is stopped through a pipe it watches, not by touching its base from another
 * thread (libevent's locking is not enabled in ftsync). Every signal is blocked in it, so
 * SIGTERM/SIGINT reach the process's own handling, and a client that hangs up gives EPIPE, not
 * SIGPIPE.
 */
#include "admin_http.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bson/bson.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "buffer.h"
#include "clock.h"
#include "log.h"

#define COMPONENT "admin"

struct fts_admin_server {
    fts_admin_options_t options;
    char *address;
    struct event_base *base;
    struct evhttp *http;
    struct event *stop_event;
    int stop_pipe[2];
    int port;
    pthread_t thread;
    bool thread_started;
};

/* ---------------------------------------------------------------------------------------- */
/* Answers                                                                                  */

static void reply(struct evhttp_request *request, int code, const char *reason_phrase,
                  const char *content_type, const char *body, size_t len)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(request);
    evhttp_add_header(headers, "Content-Type", content_type);
    evhttp_add_header(headers, "Cache-Control", "no-store");
    struct evbuffer *out = evbuffer_new();
    if (!out) {
        fts_fatal_oom("evbuffer_new");
    }
    if (evbuffer_add(out, body, len) != 0) {
        fts_fatal_oom("evbuffer_add");
    }
    /* For HEAD evhttp sends the headers (Content-Length included) and no body. */
    evhttp_send_reply(request, code, reason_phrase, out);
    evbuffer_free(out);
}

/* {"status": status} or {"status": status, "reason": reason}. */
static void reply_json(struct evhttp_request *request, int code, const char *reason_phrase,
                       const char *status, const char *reason)
{
    fts_buffer_t body = {0};
    fts_buffer_append_str(&body, "{\"status\":\"");
    fts_buffer_append_json_escaped(&body, status, strlen(status));
    fts_buffer_append_char(&body, '"');
    if (reason) {
        fts_buffer_append_str(&body, ",\"reason\":\"");
        fts_buffer_append_json_escaped(&body, reason, strlen(reason));
        fts_buffer_append_char(&body, '"');
    }
    fts_buffer_append_str(&body, "}\n");
    reply(request, code, reason_phrase, "application/json", body.data, body.len);
    fts_buffer_destroy(&body);
}

static void serve_health(fts_admin_server_t *server, struct evhttp_request *request, bool ready)
{
    const fts_admin_options_t *o = &server->options;
    char reason[512] = "";
    bool ok = ready ? fts_ready_check(o->metrics, o->roles, reason, sizeof reason)
                    : fts_health_check(o->metrics, o->roles, fts_clock_monotonic_ms(), o->stall_ms,
                                       reason, sizeof reason);
    if (ok && o->check) {
        ok = o->check(o->check_context, ready, reason, sizeof reason);
    }
    if (ok) {
        reply_json(request, HTTP_OK, "OK", ready ? "ready" : "ok", NULL);
    } else {
        reply_json(request, HTTP_SERVUNAVAIL, "Service Unavailable",
                   ready ? "not ready" : "unhealthy", reason);
    }
}

static void serve_metrics(fts_admin_server_t *server, struct evhttp_request *request)
{
    fts_buffer_t body = {0};
    fts_metrics_render(server->options.metrics, server->options.roles, fts_clock_wall_ms(), &body);
    reply(request, HTTP_OK, "OK", FTS_METRICS_CONTENT_TYPE, body.data ? body.data : "", body.len);
    fts_buffer_destroy(&body);
}

static void serve_status(fts_admin_server_t *server, struct evhttp_request *request)
{
    const fts_admin_options_t *o = &server->options;
    if (!o->status) {
        reply_json(request, HTTP_NOTIMPLEMENTED, "Not Implemented", "unavailable",
                   "not built in this branch");
        return;
    }
    char *json = NULL;
    fts_error_t err = {0};
    bool ok = o->status(o->status_context, &json, &err);
    if (json) {
        reply(request, ok ? HTTP_OK : HTTP_SERVUNAVAIL, ok ? "OK" : "Service Unavailable",
              "application/json", json, strlen(json));
    } else {
        reply_json(request, HTTP_SERVUNAVAIL, "Service Unavailable", "unavailable",
                   err.message[0] ? err.message : "the status could not be read");
    }
    bson_free(json);
}

static void on_request(struct evhttp_request *request, void *arg)
{
    fts_admin_server_t *server = arg;
    enum evhttp_cmd_type method = evhttp_request_get_command(request);
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", "GET, HEAD");
        reply_json(request, HTTP_BADMETHOD, "Method Not Allowed", "error",
                   "only GET and HEAD are served: the admin endpoint is read-only");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(request);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path) {
        path = "/";
    }
    if (strcmp(path, "/healthz") == 0) {
        serve_health(server, request, false);
    } else if (strcmp(path, "/readyz") == 0) {
        serve_health(server, request, true);
    } else if (strcmp(path, "/metrics") == 0) {
        serve_metrics(server, request);
    } else if (strcmp(path, "/status") == 0) {
        serve_status(server, request);
    } else {
        reply_json(request, HTTP_NOTFOUND, "Not Found", "error",
                   "no such path: /healthz, /readyz, /metrics and /status are served");
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The thread                                                                               */

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_admin_server_t *server = arg;
    event_base_loopbreak(server->base);
}

static void *serve(void *arg)
{
    fts_admin_server_t *server = arg;
    if (event_base_dispatch(server->base) < 0) {
        fts_log(FTS_LOG_ERROR, COMPONENT, "the admin endpoint's event loop failed");
    }
    return NULL;
}

/* Splits "host:port" / "[v6]:port" into host (brackets removed) and port. */
static bool split_address(const char *address, char *host, size_t host_size, int *port)
{
    const char *colon = strrchr(address, ':');
    if (!colon) {
        return false;
    }
    const char *start = address;
    size_t len = (size_t)(colon - address);
    if (len >= 2 && address[0] == '[' && colon[-1] == ']') {
        start++;
        len -= 2;
    }
    if (len == 0 || len >= host_size) {
        return false;
    }
    memcpy(host, start, len);
    host[len] = '\0';
    char *end = NULL;
    long value = strtol(colon + 1, &end, 10);
    if (!end || *end || value < 0 || value > 65535) {
        return false;
    }
    *port = (int)value;
    return true;
}

static int bound_port(struct evhttp_bound_socket *handle)
{
    struct sockaddr_storage address;
    socklen_t len = sizeof address;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(handle);
    if (getsockname(fd, (struct sockaddr *)&address, &len) != 0) {
        return -1;
    }
    if (address.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&address)->sin_port);
}

fts_admin_server_t *fts_admin_server_start(const fts_admin_options_t *options, fts_error_t *err)
{
    fts_admin_server_t *server = bson_malloc0(sizeof *server);
    server->options = *options;
    server->address = bson_strdup(options->address);
    server->options.address = server->address;
    server->stop_pipe[0] = server->stop_pipe[1] = -1;
    char host[256];
    int port = 0;
    if (!split_address(options->address, host, sizeof host, &port)) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "FTSYNC_ADMIN_ADDR: \"%s\" is not host:port", options->address);
        goto fail;
    }
    if (pipe2(server->stop_pipe, O_CLOEXEC) != 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "pipe: %s", strerror(errno));
        goto fail;
    }
    server->base = event_base_new();
    server->http = server->base ? evhttp_new(server->base) : NULL;
    server->stop_event =
        server->base ? event_new(server->base, server->stop_pipe[0], EV_READ, on_stop, server)
                     : NULL;
    if (!server->base || !server->http || !server->stop_event) {
        fts_fatal_oom("the admin endpoint's event loop");
    }
    event_add(server->stop_event, NULL);
    /* Every method reaches on_request, which answers 405 itself (evhttp would say 501). */
    evhttp_set_allowed_methods(server->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
                                                 EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
    evhttp_set_gencb(server->http, on_request, server);
    /* A scrape or a probe is small: refuse big requests and slow clients early. */
    evhttp_set_max_headers_size(server->http, 16384);
    evhttp_set_max_body_size(server->http, 4096);
    evhttp_set_timeout(server->http, 10);
    struct evhttp_bound_socket *handle =
        evhttp_bind_socket_with_handle(server->http, host, (ev_uint16_t)port);
    if (!handle) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno,
                      "cannot listen on FTSYNC_ADMIN_ADDR %s: %s (another process on that port? "
                      "set another address, or off)",
                      options->address, errno ? strerror(errno) : "bind failed");
        goto fail;
    }
    server->port = bound_port(handle);

    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int rc = pthread_create(&server->thread, NULL, serve, server);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (rc != 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, rc, "cannot start the admin endpoint's thread: %s",
                      strerror(rc));
        goto fail;
    }
    server->thread_started = true;
    fts_log(FTS_LOG_INFO, COMPONENT,
            "admin endpoint listening on %s port=%d (/healthz /readyz /metrics /status)",
            options->address, server->port);
    return server;
fail:
    fts_admin_server_stop(server);
    return NULL;
}

int fts_admin_server_port(const fts_admin_server_t *server)
{
    return server->port;
}

void fts_admin_server_stop(fts_admin_server_t *server)
{
    if (!server) {
        return;
    }
    if (server->thread_started) {
        ssize_t written;
        do {
            written = write(server->stop_pipe[1], "x", 1);
        } while (written < 0 && errno == EINTR);
        pthread_join(server->thread, NULL);
    }
    if (server->http) {
        evhttp_free(server->http);
    }
    if (server->stop_event) {
        event_free(server->stop_event);
    }
    if (server->base) {
        event_base_free(server->base);
    }
    for (int i = 0; i < 2; i++) {
        if (server->stop_pipe[i] >= 0) {
            close(server->stop_pipe[i]);
        }
    }
    bson_free(server->address);
    bson_free(server);
}
