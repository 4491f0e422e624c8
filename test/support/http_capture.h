/*
 * http_capture.h - a tiny HTTP server for tests that records every request it gets.
 *
 * It runs libevent's evhttp in its own thread on a free loopback port, answers every request
 * with one configurable reply (or, when told to stall, never answers), and keeps each request's
 * method, URI, headers, raw body (as received: a gzipped body stays gzipped) and the connection
 * it came on, so a test can assert what a client really sent. The recorded requests stay valid
 * until the server is destroyed.
 */
#ifndef FTS_TEST_HTTP_CAPTURE_H
#define FTS_TEST_HTTP_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct fts_http_capture fts_http_capture_t;

typedef struct {
    char *name;
    char *value;
} fts_http_header_t;

typedef struct {
    char method[16];
    char *uri;
    fts_http_header_t *headers;
    size_t header_count;
    char *body; /* NUL-terminated for convenience; body_len bytes were received */
    size_t body_len;
    unsigned connection; /* 1 for the first TCP connection accepted, 2 for the next... */
} fts_http_captured_t;

/* Starts the server on 127.0.0.1 and a free port. It answers 200 with "{}" until told
 * otherwise. */
fts_http_capture_t *fts_http_capture_new(fts_error_t *err);

/* Stops the thread and frees everything, recorded requests included. NULL is fine. */
void fts_http_capture_destroy(fts_http_capture_t *capture);

/* "http://127.0.0.1:PORT", owned by the server. */
const char *fts_http_capture_url(const fts_http_capture_t *capture);

/* The reply to every following request (the strings are copied; content_type may be NULL). */
void fts_http_capture_set_reply(fts_http_capture_t *capture, int status, const char *content_type,
                                const char *body);

/* Queues a reply for one request: queued replies are used first, in order, then the one set by
 * fts_http_capture_set_reply(). For scripting a conversation (HEAD 404, then PUT 400...). */
void fts_http_capture_queue_reply(fts_http_capture_t *capture, int status, const char *content_type,
                                  const char *body);

/* When echo is on, every reply body (status and content type as set) is `padding` bytes of
 * 'x' followed by the request's headers, Authorization first, as "Name: value; ": a hostile
 * server that quotes credentials back, with the padding placing them where a cut falls. */
void fts_http_capture_set_echo(fts_http_capture_t *capture, bool echo, size_t padding);

/* When bytes is not 0, every reply body is a valid JSON object of that many bytes ("{", blanks,
 * "}"), sent without the server holding a copy of it: for a client's memory bound. Chunked: with
 * chunked transfer encoding, so the client learns the size only by reading. */
void fts_http_capture_set_large_reply(fts_http_capture_t *capture, size_t bytes, bool chunked);

/* The same, for requests whose URI contains uri_part only (e.g. "_bulk"; NULL: every request);
 * the others get the replies set as usual. */
void fts_http_capture_set_large_reply_for(fts_http_capture_t *capture, size_t bytes, bool chunked,
                                          const char *uri_part);

/* When stalling, requests are recorded but never answered (until the server is destroyed):
 * for client timeouts. */
void fts_http_capture_set_stall(fts_http_capture_t *capture, bool stall);

/* Number of requests recorded so far. */
size_t fts_http_capture_count(fts_http_capture_t *capture);

/* The index-th recorded request, or NULL. Valid until the server is destroyed. */
const fts_http_captured_t *fts_http_capture_get(fts_http_capture_t *capture, size_t index);

/* Number of TCP connections the server saw requests on so far. */
unsigned fts_http_capture_connection_count(fts_http_capture_t *capture);

/* Waits up to timeout_ms for at least count requests to be recorded; true if they were. */
bool fts_http_capture_wait(fts_http_capture_t *capture, size_t count, long timeout_ms);

/* The value of a header (name compared case-insensitively), or NULL. */
const char *fts_http_captured_header(const fts_http_captured_t *request, const char *name);

#endif
