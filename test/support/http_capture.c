/*
 * http_capture.c - a recording HTTP server on evhttp, in its own thread (see http_capture.h).
 *
 * Threading: the event base belongs to the server thread alone (libevent is used without its
 * locking layer). The test thread talks to it only through the mutex-protected fields below and
 * a pipe whose readability makes the loop stop, so no libevent call ever crosses threads while
 * the loop runs; evhttp and the base are freed after the thread was joined.
 */
#include "http_capture.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Connections the server can tell apart at once; tests open a handful. */
#define MAX_OPEN_CONNECTIONS 64
/* Scripted replies waiting at once; a test scripts a short conversation. */
#define MAX_QUEUED_REPLIES 128

typedef struct {
    int status;
    char *content_type;
    char *body;
} reply_t;

typedef struct {
    struct evhttp_connection *connection;
    unsigned short peer_port; /* with the pointer, tells a new connection at a reused address */
    unsigned id;
} open_connection_t;

struct fts_http_capture {
    struct event_base *base;
    struct evhttp *http;
    struct event *wake;
    int wake_pipe[2];
    pthread_t thread;
    bool thread_started;
    char url[64];

    pthread_mutex_t lock; /* guards everything below */
    reply_t reply;        /* the default */
    reply_t queued[MAX_QUEUED_REPLIES];
    size_t queued_next;
    size_t queued_count;
    bool stall;
    bool echo;           /* reply bodies echo the request's headers (fts_http_capture_set_echo) */
    size_t echo_padding; /* 'x' bytes before the echoed headers */
    size_t large_reply;  /* when not 0, every reply is a JSON body of this many bytes */
    bool large_chunked;  /* ...sent chunked, without a Content-Length */
    char *large_only;    /* ...only to requests whose URI contains this (NULL: every one) */
    fts_http_captured_t **requests;
    size_t request_count;
    size_t request_cap;
    open_connection_t open[MAX_OPEN_CONNECTIONS];
    size_t open_count;
    unsigned connections_seen;
};

static char *copy_text(const char *text)
{
    char *copy = strdup(text ? text : "");
    if (!copy) {
        abort(); /* a test helper has no better answer to malloc failing */
    }
    return copy;
}

static void captured_free(fts_http_captured_t *request)
{
    if (!request) {
        return;
    }
    for (size_t i = 0; i < request->header_count; i++) {
        free(request->headers[i].name);
        free(request->headers[i].value);
    }
    free(request->headers);
    free(request->uri);
    free(request->body);
    free(request);
}

static void on_connection_close(struct evhttp_connection *connection, void *arg)
{
    fts_http_capture_t *capture = arg;
    pthread_mutex_lock(&capture->lock);
    for (size_t i = 0; i < capture->open_count; i++) {
        if (capture->open[i].connection == connection) {
            capture->open[i] = capture->open[--capture->open_count];
            break;
        }
    }
    pthread_mutex_unlock(&capture->lock);
}

/* The id of the connection req came on, counting it when it is new. Called with the lock. */
static unsigned connection_id(fts_http_capture_t *capture, struct evhttp_request *req)
{
    struct evhttp_connection *connection = evhttp_request_get_connection(req);
    char *address = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(connection, &address, &port);
    for (size_t i = 0; i < capture->open_count; i++) {
        if (capture->open[i].connection == connection && capture->open[i].peer_port == port) {
            return capture->open[i].id;
        }
    }
    unsigned id = ++capture->connections_seen;
    if (capture->open_count < MAX_OPEN_CONNECTIONS) {
        capture->open[capture->open_count++] =
            (open_connection_t){.connection = connection, .peer_port = port, .id = id};
        evhttp_connection_set_closecb(connection, on_connection_close, capture);
    }
    return id;
}

static const char *method_name(enum evhttp_cmd_type type)
{
    switch (type) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "?";
}

static fts_http_captured_t *record(struct evhttp_request *req)
{
    fts_http_captured_t *request = calloc(1, sizeof *request);
    if (!request) {
        abort();
    }
    snprintf(request->method, sizeof request->method, "%s",
             method_name(evhttp_request_get_command(req)));
    request->uri = copy_text(evhttp_request_get_uri(req));

    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    struct evkeyval *header;
    size_t count = 0;
    /* Walked by hand: keyvalq_struct.h declares the list but not TAILQ_FOREACH. */
    for (header = headers->tqh_first; header; header = header->next.tqe_next) {
        count++;
    }
    request->headers = calloc(count ? count : 1, sizeof *request->headers);
    if (!request->headers) {
        abort();
    }
    for (header = headers->tqh_first; header; header = header->next.tqe_next) {
        request->headers[request->header_count].name = copy_text(header->key);
        request->headers[request->header_count].value = copy_text(header->value);
        request->header_count++;
    }

    struct evbuffer *input = evhttp_request_get_input_buffer(req);
    request->body_len = evbuffer_get_length(input);
    request->body = malloc(request->body_len + 1);
    if (!request->body) {
        abort();
    }
    evbuffer_copyout(input, request->body, request->body_len);
    request->body[request->body_len] = '\0';
    return request;
}

/* What a hostile server sends back: padding, then every header of the request, the
 * Authorization header first, as "Name: value" separated by "; ". */
static char *echo_body(const fts_http_captured_t *request, size_t padding)
{
    size_t size = padding + 1;
    for (size_t i = 0; i < request->header_count; i++) {
        size += strlen(request->headers[i].name) + strlen(request->headers[i].value) + 4;
    }
    char *body = malloc(size);
    if (!body) {
        abort();
    }
    memset(body, 'x', padding);
    size_t len = padding;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < request->header_count; i++) {
            const fts_http_header_t *header = &request->headers[i];
            bool authorization = strcasecmp(header->name, "Authorization") == 0;
            if (authorization != (pass == 0)) {
                continue;
            }
            len +=
                (size_t)snprintf(body + len, size - len, "%s: %s; ", header->name, header->value);
        }
    }
    body[len] = '\0';
    return body;
}

/* A valid JSON object of exactly size bytes (at least 4), made of references to one static
 * chunk of blanks: the server itself does not grow by what it sends, so a test can measure the
 * memory of the client in the same process. */
static void add_large_body(struct evbuffer *reply, size_t size)
{
    static char blanks[64 * 1024];
    if (blanks[0] != ' ') {
        memset(blanks, ' ', sizeof blanks); /* only ever set to the same bytes: no race */
    }
    evbuffer_add(reply, "{", 1);
    size_t left = size - 2;
    while (left > 0) {
        size_t chunk = left < sizeof blanks ? left : sizeof blanks;
        evbuffer_add_reference(reply, blanks, chunk, NULL, NULL);
        left -= chunk;
    }
    evbuffer_add(reply, "}", 1);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    fts_http_capture_t *capture = arg;
    fts_http_captured_t *request = record(req);

    pthread_mutex_lock(&capture->lock);
    request->connection = connection_id(capture, req);
    if (capture->request_count == capture->request_cap) {
        size_t cap = capture->request_cap ? capture->request_cap * 2 : 16;
        fts_http_captured_t **grown = realloc(capture->requests, cap * sizeof *grown);
        if (!grown) {
            abort();
        }
        capture->requests = grown;
        capture->request_cap = cap;
    }
    capture->requests[capture->request_count++] = request;
    bool stall = capture->stall;
    reply_t *chosen = &capture->reply;
    if (!stall && capture->queued_next < capture->queued_count) {
        chosen = &capture->queued[capture->queued_next++];
    }
    int status = chosen->status;
    char *content_type = copy_text(chosen->content_type);
    char *body = copy_text(chosen->body);
    bool echo = capture->echo;
    size_t echo_padding = capture->echo_padding;
    size_t large_reply = capture->large_reply;
    if (large_reply && capture->large_only && !strstr(request->uri, capture->large_only)) {
        large_reply = 0;
    }
    bool large_chunked = capture->large_chunked;
    pthread_mutex_unlock(&capture->lock);
    if (echo) {
        free(body);
        body = echo_body(request, echo_padding);
    }

    if (!stall) {
        /* evhttp would not send Content-Type on its own; an empty one means none. */
        if (*content_type) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
        }
        struct evbuffer *reply = evbuffer_new();
        if (!reply) {
            abort();
        }
        if (large_reply) {
            add_large_body(reply, large_reply);
        } else {
            evbuffer_add(reply, body, strlen(body));
        }
        if (large_reply && large_chunked) {
            evhttp_send_reply_start(req, status, status < 400 ? "OK" : "Error");
            evhttp_send_reply_chunk(req, reply);
            evhttp_send_reply_end(req);
        } else {
            evhttp_send_reply(req, status, status < 400 ? "OK" : "Error", reply);
        }
        evbuffer_free(reply);
    }
    free(content_type);
    free(body);
}

static void on_wake(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    event_base_loopbreak(arg);
}

static void *serve(void *arg)
{
    fts_http_capture_t *capture = arg;
    event_base_dispatch(capture->base);
    return NULL;
}

fts_http_capture_t *fts_http_capture_new(fts_error_t *err)
{
    fts_http_capture_t *capture = calloc(1, sizeof *capture);
    if (!capture) {
        fts_error_set(err, FTS_ERROR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    capture->wake_pipe[0] = capture->wake_pipe[1] = -1;
    pthread_mutex_init(&capture->lock, NULL);
    capture->reply.status = 200;
    capture->reply.content_type = copy_text("application/json");
    capture->reply.body = copy_text("{}");

    capture->base = event_base_new();
    capture->http = capture->base ? evhttp_new(capture->base) : NULL;
    if (!capture->http) {
        fts_error_set(err, FTS_ERROR_SYSTEM, 0, "libevent could not make an HTTP server");
        goto fail;
    }
    struct evhttp_bound_socket *bound =
        evhttp_bind_socket_with_handle(capture->http, "127.0.0.1", 0);
    if (!bound) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot listen on 127.0.0.1: %s",
                      strerror(errno));
        goto fail;
    }
    struct sockaddr_in address;
    socklen_t address_len = sizeof address;
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&address, &address_len) !=
        0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "getsockname: %s", strerror(errno));
        goto fail;
    }
    snprintf(capture->url, sizeof capture->url, "http://127.0.0.1:%u",
             (unsigned)ntohs(address.sin_port));
    evhttp_set_gencb(capture->http, on_request, capture);
    evhttp_set_allowed_methods(capture->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                  EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                  EVHTTP_REQ_PATCH);

    if (pipe(capture->wake_pipe) != 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "pipe: %s", strerror(errno));
        goto fail;
    }
    capture->wake =
        event_new(capture->base, capture->wake_pipe[0], EV_READ, on_wake, capture->base);
    if (!capture->wake || event_add(capture->wake, NULL) != 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, 0, "libevent could not watch the wake pipe");
        goto fail;
    }
    int rc = pthread_create(&capture->thread, NULL, serve, capture);
    if (rc != 0) {
        fts_error_set(err, FTS_ERROR_SYSTEM, rc, "pthread_create: %s", strerror(rc));
        goto fail;
    }
    capture->thread_started = true;
    return capture;

fail:
    fts_http_capture_destroy(capture);
    return NULL;
}

void fts_http_capture_destroy(fts_http_capture_t *capture)
{
    if (!capture) {
        return;
    }
    if (capture->thread_started) {
        ssize_t written;
        do {
            written = write(capture->wake_pipe[1], "x", 1);
        } while (written < 0 && errno == EINTR);
        pthread_join(capture->thread, NULL);
    }
    /* The loop is over: freeing evhttp now closes the connections (and their stalled
     * requests) on this thread without racing the server thread. */
    if (capture->http) {
        evhttp_free(capture->http);
    }
    if (capture->wake) {
        event_free(capture->wake);
    }
    if (capture->base) {
        event_base_free(capture->base);
    }
    for (int i = 0; i < 2; i++) {
        if (capture->wake_pipe[i] >= 0) {
            close(capture->wake_pipe[i]);
        }
    }
    for (size_t i = 0; i < capture->request_count; i++) {
        captured_free(capture->requests[i]);
    }
    free(capture->requests);
    free(capture->reply.content_type);
    free(capture->reply.body);
    free(capture->large_only);
    for (size_t i = 0; i < capture->queued_count; i++) {
        free(capture->queued[i].content_type);
        free(capture->queued[i].body);
    }
    pthread_mutex_destroy(&capture->lock);
    free(capture);
}

const char *fts_http_capture_url(const fts_http_capture_t *capture)
{
    return capture->url;
}

void fts_http_capture_set_reply(fts_http_capture_t *capture, int status, const char *content_type,
                                const char *body)
{
    char *new_content_type = copy_text(content_type);
    char *new_body = copy_text(body);
    pthread_mutex_lock(&capture->lock);
    free(capture->reply.content_type);
    free(capture->reply.body);
    capture->reply =
        (reply_t){.status = status, .content_type = new_content_type, .body = new_body};
    pthread_mutex_unlock(&capture->lock);
}

void fts_http_capture_queue_reply(fts_http_capture_t *capture, int status, const char *content_type,
                                  const char *body)
{
    pthread_mutex_lock(&capture->lock);
    if (capture->queued_count == MAX_QUEUED_REPLIES) {
        fprintf(stderr, "http_capture: more than %d queued replies\n", MAX_QUEUED_REPLIES);
        abort();
    }
    capture->queued[capture->queued_count++] = (reply_t){
        .status = status, .content_type = copy_text(content_type), .body = copy_text(body)};
    pthread_mutex_unlock(&capture->lock);
}

void fts_http_capture_set_echo(fts_http_capture_t *capture, bool echo, size_t padding)
{
    pthread_mutex_lock(&capture->lock);
    capture->echo = echo;
    capture->echo_padding = padding;
    pthread_mutex_unlock(&capture->lock);
}

void fts_http_capture_set_large_reply(fts_http_capture_t *capture, size_t bytes, bool chunked)
{
    fts_http_capture_set_large_reply_for(capture, bytes, chunked, NULL);
}

void fts_http_capture_set_large_reply_for(fts_http_capture_t *capture, size_t bytes, bool chunked,
                                          const char *uri_part)
{
    assert(bytes == 0 || bytes >= 4);
    pthread_mutex_lock(&capture->lock);
    free(capture->large_only);
    capture->large_only = uri_part ? copy_text(uri_part) : NULL;
    capture->large_reply = bytes;
    capture->large_chunked = chunked;
    pthread_mutex_unlock(&capture->lock);
}

void fts_http_capture_set_stall(fts_http_capture_t *capture, bool stall)
{
    pthread_mutex_lock(&capture->lock);
    capture->stall = stall;
    pthread_mutex_unlock(&capture->lock);
}

size_t fts_http_capture_count(fts_http_capture_t *capture)
{
    pthread_mutex_lock(&capture->lock);
    size_t count = capture->request_count;
    pthread_mutex_unlock(&capture->lock);
    return count;
}

const fts_http_captured_t *fts_http_capture_get(fts_http_capture_t *capture, size_t index)
{
    pthread_mutex_lock(&capture->lock);
    const fts_http_captured_t *request =
        index < capture->request_count ? capture->requests[index] : NULL;
    pthread_mutex_unlock(&capture->lock);
    return request;
}

unsigned fts_http_capture_connection_count(fts_http_capture_t *capture)
{
    pthread_mutex_lock(&capture->lock);
    unsigned count = capture->connections_seen;
    pthread_mutex_unlock(&capture->lock);
    return count;
}

bool fts_http_capture_wait(fts_http_capture_t *capture, size_t count, long timeout_ms)
{
    const struct timespec pause = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
    for (long waited = 0;; waited += 5) {
        if (fts_http_capture_count(capture) >= count) {
            return true;
        }
        if (waited >= timeout_ms) {
            return false;
        }
        nanosleep(&pause, NULL);
    }
}

const char *fts_http_captured_header(const fts_http_captured_t *request, const char *name)
{
    for (size_t i = 0; i < request->header_count; i++) {
        if (strcasecmp(request->headers[i].name, name) == 0) {
            return request->headers[i].value;
        }
    }
    return NULL;
}
