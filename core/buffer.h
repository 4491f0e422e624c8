/*
 * buffer.h - a growable byte buffer, always NUL-terminated so that text can be read in place.
 *
 * Used for HTTP bodies, NDJSON bulk requests and log lines. Memory comes from bson_realloc, so
 * growth failures abort the process (README.md, Architecture: failure policy): ftsync cannot keep
 * any promise once allocation fails, and a half-built body must never be sent.
 */
#ifndef FTS_BUFFER_H
#define FTS_BUFFER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct {
    char *data; /* owned; NUL-terminated at data[len] once anything was written */
    size_t len;
    size_t cap;
} fts_buffer_t;

/* A buffer needs no set-up beyond zeroing: `fts_buffer_t buf = {0};` is an empty buffer. */
void fts_buffer_init(fts_buffer_t *buf);
void fts_buffer_destroy(fts_buffer_t *buf);

/* Makes room for at least `extra` more bytes (plus the terminating NUL). */
void fts_buffer_reserve(fts_buffer_t *buf, size_t extra);

void fts_buffer_append(fts_buffer_t *buf, const void *bytes, size_t len);
void fts_buffer_append_str(fts_buffer_t *buf, const char *text);
void fts_buffer_append_char(fts_buffer_t *buf, char c);
void fts_buffer_appendf(fts_buffer_t *buf, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
void fts_buffer_vappendf(fts_buffer_t *buf, const char *format, va_list args);

/* Appends text as the inside of a JSON string (quotes not included), escaping as RFC 8259 asks. */
void fts_buffer_append_json_escaped(fts_buffer_t *buf, const char *text, size_t len);

/* Replaces the buffer's contents with the file at path. Refuses (FTS_ERROR_INPUT) a file that
 * cannot be read or is larger than max_bytes, with a message naming the path. */
bool fts_buffer_read_file(fts_buffer_t *buf, const char *path, size_t max_bytes, fts_error_t *err);

/* Empties the buffer and keeps its memory for reuse. */
void fts_buffer_clear(fts_buffer_t *buf);

/* Hands the bytes to the caller (bson_free() them) and leaves the buffer empty. Never NULL. */
char *fts_buffer_steal(fts_buffer_t *buf);

#endif
