/*
 * buffer.c - growable byte buffer (see buffer.h).
 */
#include "buffer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

void fts_buffer_init(fts_buffer_t *buf)
{
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}

void fts_buffer_destroy(fts_buffer_t *buf)
{
    if (!buf) {
        return;
    }
    bson_free(buf->data);
    fts_buffer_init(buf);
}

void fts_buffer_reserve(fts_buffer_t *buf, size_t extra)
{
    size_t needed = buf->len + extra + 1;
    if (needed <= buf->cap) {
        return;
    }
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < needed) {
        cap *= 2;
    }
    buf->data = bson_realloc(buf->data, cap); /* aborts when memory runs out */
    buf->cap = cap;
}

void fts_buffer_append(fts_buffer_t *buf, const void *bytes, size_t len)
{
    fts_buffer_reserve(buf, len);
    if (len) {
        memcpy(buf->data + buf->len, bytes, len);
    }
    buf->len += len;
    buf->data[buf->len] = '\0';
}

void fts_buffer_append_str(fts_buffer_t *buf, const char *text)
{
    fts_buffer_append(buf, text, strlen(text));
}

void fts_buffer_append_char(fts_buffer_t *buf, char c)
{
    fts_buffer_append(buf, &c, 1);
}

void fts_buffer_vappendf(fts_buffer_t *buf, const char *format, va_list args)
{
    va_list measure;
    va_copy(measure, args);
    int needed = vsnprintf(NULL, 0, format, measure);
    va_end(measure);
    if (needed < 0) {
        return;
    }
    fts_buffer_reserve(buf, (size_t)needed);
    vsnprintf(buf->data + buf->len, (size_t)needed + 1, format, args);
    buf->len += (size_t)needed;
}

void fts_buffer_appendf(fts_buffer_t *buf, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fts_buffer_vappendf(buf, format, args);
    va_end(args);
}

void fts_buffer_append_json_escaped(fts_buffer_t *buf, const char *text, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    fts_buffer_reserve(buf, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        switch (c) {
        case '"':
            fts_buffer_append(buf, "\\\"", 2);
            break;
        case '\\':
            fts_buffer_append(buf, "\\\\", 2);
            break;
        case '\n':
            fts_buffer_append(buf, "\\n", 2);
            break;
        case '\r':
            fts_buffer_append(buf, "\\r", 2);
            break;
        case '\t':
            fts_buffer_append(buf, "\\t", 2);
            break;
        default:
            if (c < 0x20) {
                char escaped[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                fts_buffer_append(buf, escaped, sizeof escaped);
            } else {
                fts_buffer_append_char(buf, (char)c);
            }
        }
    }
}

bool fts_buffer_read_file(fts_buffer_t *buf, const char *path, size_t max_bytes, fts_error_t *err)
{
    bool ok = false;
    fts_buffer_clear(buf);
    FILE *file = fopen(path, "rb");
    if (!file) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_IO, "cannot read %s: %s", path,
                             strerror(errno));
    }
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, file)) > 0) {
        if (buf->len + got > max_bytes) {
            fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                          "%s is larger than %zu bytes", path, max_bytes);
            goto cleanup;
        }
        fts_buffer_append(buf, chunk, got);
    }
    if (ferror(file)) {
        fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_IO, "cannot read %s: %s", path,
                      strerror(errno));
        goto cleanup;
    }
    fts_buffer_append(buf, "", 0); /* an empty file still reads as "" */
    ok = true;
cleanup:
    fclose(file);
    return ok;
}

void fts_buffer_clear(fts_buffer_t *buf)
{
    buf->len = 0;
    if (buf->data) {
        buf->data[0] = '\0';
    }
}

char *fts_buffer_steal(fts_buffer_t *buf)
{
    if (!buf->data) {
        fts_buffer_reserve(buf, 0);
        buf->data[0] = '\0';
    }
    char *bytes = buf->data;
    fts_buffer_init(buf);
    return bytes;
}
