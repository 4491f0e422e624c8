/*
 * es_async.c - HTTP to Elasticsearch without blocking (see es_async.h): libcurl's multi
 * interface driven by a libevent loop, so that several requests are in flight in one thread.
 *
 * How it runs: curl tells us which sockets to watch (socket_cb: one persistent libevent event per
 * socket) and when to wake it (timer_cb: one timer event); when either fires we hand it to
 * curl_multi_socket_action(), then collect the transfers that finished and only after that call
 * their done functions. A request's headers, body and options come from es_curl.c, exactly as
 * for the blocking client; each request has its own easy handle, and the multi handle's
 * connection cache keeps connections alive between them.
 *
 * Invariants:
 * - A request fails (done gets NULL and err) only when no HTTP answer came (invariant 2 relies
 *   on this split). A failed transfer that sent nothing moves later requests to the next URL;
 *   no request is ever sent twice here.
 * - done is called once per request, always from a loop callback: never from inside
 *   fts_es_async_request() (curl_multi_add_handle() only arms the timer) and never from inside
 *   a curl callback. Finished transfers are collected first, then delivered, so a done that
 *   starts a new request (curl_multi_add_handle) never re-enters curl, and a done that destroys
 *   the client stops delivery: what was not delivered yet is abandoned silently.
 */
#include "es_async.h"

#include <assert.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

#include "es_async_testing.h"
#include "es_curl.h"
#include "log.h"

typedef struct es_async_request es_async_request_t;

/* One request, from fts_es_async_request() until its done returned (or the client went). */
struct es_async_request {
    es_async_request_t *prev;
    es_async_request_t *next;
    CURL *handle; /* NULL once the transfer finished and the handle was freed */
    fts_es_call_t call;
    fts_es_response_t response;
    char *method; /* copies: the caller's strings are only borrowed for the call */
    char *path;
    char *body;  /* NULL for a bodiless request */
    size_t node; /* index of the node it was sent to */
    fts_es_async_done_fn done;
    void *arg;
    bool answered; /* once finished: an HTTP answer came (response is valid), else error is */
    fts_error_t error;
};

typedef struct {
    es_async_request_t *head;
    es_async_request_t *tail;
} request_list_t;

typedef struct es_socket_watch es_socket_watch_t;

/* The libevent event watching one socket for curl; curl_multi_assign() ties it to the socket. */
struct es_socket_watch {
    es_socket_watch_t *prev;
    es_socket_watch_t *next;
    curl_socket_t fd;
    struct event *event;
};

struct fts_es_async {
    struct event_base *base; /* borrowed */
    fts_es_settings_t settings;
    CURLM *multi;
    struct event *timer;
    es_socket_watch_t *watches; /* every socket curl asked us to watch and has not removed */
    request_list_t running;     /* transfers in curl's hands */
    request_list_t finished;    /* transfers over, done not called yet */
    size_t in_flight;           /* running + finished */
    size_t current;             /* the node new requests go to */
    bool delivering;            /* done functions are being called: destroy must wait */
    bool destroyed;             /* destroy was called from a done function */
};

static void list_push(request_list_t *list, es_async_request_t *request)
{
    request->prev = list->tail;
    request->next = NULL;
    if (list->tail) {
        list->tail->next = request;
    } else {
        list->head = request;
    }
    list->tail = request;
}

static void list_unlink(request_list_t *list, es_async_request_t *request)
{
    if (request->prev) {
        request->prev->next = request->next;
    } else {
        list->head = request->next;
    }
    if (request->next) {
        request->next->prev = request->prev;
    } else {
        list->tail = request->prev;
    }
    request->prev = NULL;
    request->next = NULL;
}

/* Frees a request that is in no list and no longer attached to the multi handle. */
static void request_free(es_async_request_t *request)
{
    if (!request) {
        return;
    }
    if (request->handle) {
        curl_easy_cleanup(request->handle);
    }
    fts_es_call_cleanup(&request->call);
    fts_es_response_cleanup(&request->response);
    bson_free(request->method);
    bson_free(request->path);
    bson_free(request->body);
    bson_free(request);
}

/* ---- curl asks us to watch sockets and set a timer --------------------------------------- */

static void on_socket_event(evutil_socket_t fd, short what, void *arg);

static void watch_free(fts_es_async_t *es, es_socket_watch_t *watch)
{
    if (watch->prev) {
        watch->prev->next = watch->next;
    } else {
        es->watches = watch->next;
    }
    if (watch->next) {
        watch->next->prev = watch->prev;
    }
    if (watch->event) {
        event_free(watch->event);
    }
    bson_free(watch);
}

/* CURLMOPT_SOCKETFUNCTION. Runs inside curl: it only touches libevent, never the multi handle
 * beyond curl_multi_assign(), which curl allows here. */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *user, void *socket_data)
{
    (void)easy;
    fts_es_async_t *es = user;
    es_socket_watch_t *watch = socket_data;

    if (what == CURL_POLL_REMOVE) {
        if (watch) {
            watch_free(es, watch);
        }
        return 0;
    }
    if (!watch) {
        watch = bson_malloc0(sizeof *watch);
        watch->fd = fd;
        watch->next = es->watches;
        if (es->watches) {
            es->watches->prev = watch;
        }
        es->watches = watch;
        curl_multi_assign(es->multi, fd, watch);
    }
    short events = EV_PERSIST;
    if (what & CURL_POLL_IN) {
        events |= EV_READ;
    }
    if (what & CURL_POLL_OUT) {
        events |= EV_WRITE;
    }
    if (watch->event) {
        event_free(watch->event);
    }
    watch->event = event_new(es->base, fd, events, on_socket_event, es);
    if (!watch->event) {
        fts_fatal_oom("an event for an Elasticsearch socket");
    }
    if (event_add(watch->event, NULL) != 0) {
        return -1; /* curl gives up on its transfers; act() fails them, nothing hangs */
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT) after
 * timeout_ms (-1: never). Even 0 goes through the loop: calling curl from here is forbidden, and
 * it is what keeps done out of fts_es_async_request(). */
static int timer_cb(CURLM *multi, long timeout_ms, void *user)
{
    (void)multi;
    fts_es_async_t *es = user;
    if (timeout_ms < 0) {
        evtimer_del(es->timer);
        return 0;
    }
    struct timeval delay = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    return evtimer_add(es->timer, &delay) == 0 ? 0 : -1;
}

/* ---- finished transfers -------------------------------------------------------------------- */

/* Judges a finished transfer and frees its handle. Runs outside curl callbacks, before any done
 * is called, so that a failover is in place for the requests those done functions start. */
static void request_settle(fts_es_async_t *es, es_async_request_t *request, CURLcode rc)
{
    const fts_es_node_t *node = &es->settings.nodes[request->node];
    if (rc == CURLE_OK) {
        curl_easy_getinfo(request->handle, CURLINFO_RESPONSE_CODE, &request->response.status);
        request->answered = true;
        goto cleanup;
    }

    char reason[CURL_ERROR_SIZE + 128];
    fts_es_call_describe_failure(&request->call, rc, reason, sizeof reason);
    fts_error_set(&request->error, FTS_ERROR_ES, fts_es_curl_error_code(rc),
                  "Elasticsearch did not answer %s %s at %s: %s", request->method, request->path,
                  node->base, reason);
    fts_es_error_scrub(&request->error);

    /* Only a node that got nothing of the request is left for the next one: a request that
     * reached it may have been applied. Requests in flight to the same node fail together;
     * only the first of them moves on, or they would skip a node each. */
    if (fts_es_handle_sent_nothing(request->handle) && es->settings.node_count > 1 &&
        request->node == es->current) {
        es->current = (es->current + 1) % es->settings.node_count;
        fts_log(FTS_LOG_WARN, "es",
                "Elasticsearch at %s did not answer (%s); later requests go to %s", node->base,
                reason, es->settings.nodes[es->current].base);
    }

cleanup:
    curl_easy_cleanup(request->handle);
    request->handle = NULL;
}

/* Moves every transfer curl reports finished from running to finished. Only reads and
 * removes: no done is called here. */
static void collect_finished(fts_es_async_t *es)
{
    CURLMsg *message;
    int left = 0;
    while ((message = curl_multi_info_read(es->multi, &left)) != NULL) {
        if (message->msg != CURLMSG_DONE) {
            continue;
        }
        CURL *handle = message->easy_handle;
        CURLcode rc = message->data.result; /* message is gone after remove_handle */
        char *private = NULL;
        curl_easy_getinfo(handle, CURLINFO_PRIVATE, &private);
        /* curl hands back as char * the pointer CURLOPT_PRIVATE was given: a request. */
        es_async_request_t *request = (es_async_request_t *)(void *)private;
        curl_multi_remove_handle(es->multi, handle);
        if (!request) {
            continue; /* not ours: every handle we add carries its request */
        }
        list_unlink(&es->running, request);
        request_settle(es, request, rc);
        list_push(&es->finished, request);
    }
}

/* When our socket or timer callback could not arm an event (libevent refused it), curl gives up
 * on its transfers without reporting them finished. Each is failed here rather than left waiting
 * forever (invariant 5: no silent stall). Whether a request reached its node is unknown, so no
 * failover. */
static void abandon_running(fts_es_async_t *es, CURLMcode rc)
{
    es_async_request_t *request;
    while ((request = es->running.head) != NULL) {
        list_unlink(&es->running, request);
        curl_multi_remove_handle(es->multi, request->handle);
        curl_easy_cleanup(request->handle);
        request->handle = NULL;
        fts_error_set(&request->error, FTS_ERROR_ES, FTS_ERROR_CODE_IO,
                      "Elasticsearch request %s %s at %s abandoned: %s", request->method,
                      request->path, es->settings.nodes[request->node].base,
                      curl_multi_strerror(rc));
        list_push(&es->finished, request);
    }
}

static void async_free(fts_es_async_t *es);

/* Calls done for every finished request, oldest first. A done may start requests (they join
 * running, not finished, so this ends) or destroy the client (then the rest is abandoned). */
static void deliver_finished(fts_es_async_t *es)
{
    es->delivering = true;
    while (es->finished.head && !es->destroyed) {
        es_async_request_t *request = es->finished.head;
        list_unlink(&es->finished, request);
        es->in_flight--; /* done may look at fts_es_async_in_flight() to stop its loop */
        if (request->answered) {
            request->done(request->arg, &request->response, NULL);
        } else {
            request->done(request->arg, NULL, &request->error);
        }
        request_free(request);
    }
    es->delivering = false;
    if (es->destroyed) {
        async_free(es);
    }
}

/* Lets curl work on what an event said (fd ready, or the timer), then collects finished
 * transfers and delivers them. es may be freed on return. */
static void act(fts_es_async_t *es, curl_socket_t fd, int mask)
{
    int running = 0;
    CURLMcode rc = curl_multi_socket_action(es->multi, fd, mask, &running);
    if (rc != CURLM_OK) {
        fts_log(FTS_LOG_ERROR, "es", "libcurl could not drive Elasticsearch requests: %s",
                curl_multi_strerror(rc));
    }
    collect_finished(es);
    if (rc == CURLM_ABORTED_BY_CALLBACK) {
        abandon_running(es, rc);
    }
    deliver_finished(es);
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    fts_es_async_t *es = arg;
    int mask = 0;
    if (what & EV_READ) {
        mask |= CURL_CSELECT_IN;
    }
    if (what & EV_WRITE) {
        mask |= CURL_CSELECT_OUT;
    }
    /* May free this socket's watch (CURL_POLL_REMOVE): nothing of it is used afterwards. */
    act(es, fd, mask);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    act(arg, CURL_SOCKET_TIMEOUT, 0);
}

/* ---- the client ---------------------------------------------------------------------------- */

fts_es_async_t *fts_es_async_new(struct event_base *base, const fts_es_options_t *options,
                                 fts_error_t *err)
{
    if (!base) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "no event loop given for the Elasticsearch client");
        return NULL;
    }
    fts_es_async_t *es = bson_malloc0(sizeof *es);
    es->base = base;
    if (!fts_es_settings_init(&es->settings, options, err)) {
        goto fail;
    }
    es->timer = evtimer_new(base, on_timer, es);
    es->multi = curl_multi_init();
    if (!es->timer || !es->multi) {
        fts_fatal_oom("the Elasticsearch client"); /* their only failure */
    }
    CURLMcode rc = curl_multi_setopt(es->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    if (rc == CURLM_OK) {
        rc = curl_multi_setopt(es->multi, CURLMOPT_SOCKETDATA, es);
    }
    if (rc == CURLM_OK) {
        rc = curl_multi_setopt(es->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    }
    if (rc == CURLM_OK) {
        rc = curl_multi_setopt(es->multi, CURLMOPT_TIMERDATA, es);
    }
    if (rc != CURLM_OK) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                      "libcurl refused a multi option: %s", curl_multi_strerror(rc));
        goto fail;
    }
    return es;

fail:
    async_free(es);
    return NULL;
}

/* Frees everything; the client must not be delivering. */
static void async_free(fts_es_async_t *es)
{
    es_async_request_t *request;
    while ((request = es->running.head) != NULL) {
        list_unlink(&es->running, request);
        curl_multi_remove_handle(es->multi, request->handle);
        request_free(request);
    }
    while ((request = es->finished.head) != NULL) {
        list_unlink(&es->finished, request);
        request_free(request);
    }
    if (es->multi) {
        /* May still call socket_cb to drop cached connections' sockets: es is whole until
         * it returns. */
        curl_multi_cleanup(es->multi);
    }
    while (es->watches) {
        watch_free(es, es->watches);
    }
    if (es->timer) {
        event_free(es->timer);
    }
    /* Last: it balances curl_global_init(), after which no curl call may be made. */
    fts_es_settings_cleanup(&es->settings);
    bson_free(es);
}

void fts_es_async_destroy(fts_es_async_t *es)
{
    if (!es) {
        return;
    }
    if (es->delivering) {
        /* Called from a done function: deliver_finished() frees the client when that done
         * returns, and calls no other. */
        es->destroyed = true;
        return;
    }
    async_free(es);
}

/* Never NULL: allocation failure aborts. */
static char *copy_bytes(const char *bytes, size_t len)
{
    char *copy = bson_malloc(len + 1);
    memcpy(copy, bytes, len);
    copy[len] = '\0';
    return copy;
}

bool fts_es_async_request(fts_es_async_t *es, const char *method, const char *path,
                          const char *content_type, const char *body, size_t body_len,
                          fts_es_async_done_fn done, void *arg, fts_error_t *err)
{
    bool ok = false;
    es_async_request_t *request = NULL;
    assert(done);
    if (es->destroyed) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "the Elasticsearch client is being destroyed");
        goto cleanup;
    }
    request = bson_malloc0(sizeof *request);
    request->done = done;
    request->arg = arg;
    request->node = es->current;
    /* NULL method or path stay NULL and are refused by fts_es_call_build() with a message. */
    request->method = method ? bson_strdup(method) : NULL;
    request->path = path ? bson_strdup(path) : NULL;
    request->body = body ? copy_bytes(body, body_len) : NULL;
    if (!fts_es_call_build(&request->call, &es->settings, request->method, request->path,
                           content_type, request->body, body_len, &request->response, err)) {
        goto cleanup;
    }
    request->handle = curl_easy_init();
    if (!request->handle) {
        fts_fatal_oom("a libcurl handle"); /* libcurl returns NULL only then */
    }
    if (!fts_es_call_apply(&es->settings, request->handle, &request->call,
                           &es->settings.nodes[request->node], err)) {
        goto cleanup;
    }
    if (curl_easy_setopt(request->handle, CURLOPT_PRIVATE, (char *)request) != CURLE_OK) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                      "libcurl refused CURLOPT_PRIVATE");
        goto cleanup;
    }
    /* Starts nothing yet: curl only arms the timer (timer_cb), whose event runs the transfer
     * from the loop. That is why done can never be called from here. */
    CURLMcode rc = curl_multi_add_handle(es->multi, request->handle);
    if (rc != CURLM_OK) {
        /* A failing timer_cb makes add_handle fail after adding: take it back out before the
         * handle is freed (a no-op when it was never added). */
        curl_multi_remove_handle(es->multi, request->handle);
        if (rc == CURLM_OUT_OF_MEMORY) {
            fts_fatal_oom("an Elasticsearch request");
        }
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_IO,
                      "libcurl could not start %s %s: %s", request->method, request->path,
                      curl_multi_strerror(rc));
        goto cleanup;
    }
    list_push(&es->running, request);
    es->in_flight++;
    request = NULL;
    ok = true;

cleanup:
    request_free(request);
    return ok;
}

size_t fts_es_async_in_flight(const fts_es_async_t *es)
{
    return es->in_flight;
}

const char *fts_es_async_current_url(const fts_es_async_t *es)
{
    return es->settings.nodes[es->current].base;
}
