/*
 * frame.c - BSON frames over a stream socket (see frame.h).
 *
 * Keeps invariant 6 on the worker's input: a document is handed out only once all of it has
 * arrived and bson_validate accepted it, and after the first bad frame the reader refuses
 * everything, because the bytes that follow cannot be trusted to start a frame.
 */
#include "frame.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes asked of read() at a time; a large frame's remainder is asked for in one go, up to
 * READ_CHUNK_MAX, so that a 16 MiB event does not take hundreds of calls. */
#define READ_CHUNK     65536
#define READ_CHUNK_MAX (4 * 1024 * 1024)

/* An empty buffer larger than this is given back, so that one huge event does not pin its
 * memory for the life of the worker. */
#define IDLE_BUFFER_MAX (4 * 1024 * 1024)

bool fts_frame_write(int fd, const bson_t *doc, fts_error_t *err)
{
    if (doc->len < FTS_FRAME_MIN_SIZE || doc->len > FTS_FRAME_MAX_SIZE) {
        return fts_error_set(err, FTS_ERROR_INPUT, FTS_ERROR_CODE_INVALID,
                             "cannot send a document of %" PRIu32
                             " bytes: frames are %d to %d bytes",
                             doc->len, FTS_FRAME_MIN_SIZE, FTS_FRAME_MAX_SIZE);
    }
    const uint8_t *next = bson_get_data(doc);
    size_t left = doc->len;
    bool is_socket = true;
    while (left > 0) {
        ssize_t written;
        if (is_socket) {
            /* MSG_NOSIGNAL: a worker that died is an EPIPE to report, not a SIGPIPE to die of. */
            written = send(fd, next, left, MSG_NOSIGNAL);
            if (written < 0 && errno == ENOTSOCK) {
                is_socket = false;
                continue;
            }
        } else {
            written = write(fd, next, left);
        }
        if (written > 0) {
            next += written;
            left -= (size_t)written;
            continue;
        }
        if (written < 0 && errno == EINTR) {
            continue; /* a signal must not leave half a frame behind */
        }
        if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd wait = {.fd = fd, .events = POLLOUT};
            if (poll(&wait, 1, -1) < 0 && errno != EINTR) {
                break;
            }
            continue;
        }
        if (written == 0) {
            errno = EIO;
        }
        break;
    }
    if (left > 0) {
        int code = errno;
        return fts_error_set(err, FTS_ERROR_SYSTEM, code,
                             "cannot write a frame (%zu of %" PRIu32 " bytes written): %s",
                             (size_t)doc->len - left, doc->len, strerror(code));
    }
    return true;
}

void fts_frame_reader_init(fts_frame_reader_t *reader)
{
    memset(reader, 0, sizeof *reader);
    fts_buffer_init(&reader->buffer);
}

void fts_frame_reader_cleanup(fts_frame_reader_t *reader)
{
    if (!reader) {
        return;
    }
    fts_buffer_destroy(&reader->buffer);
    fts_frame_reader_init(reader);
}

/* Moves the unread bytes to the front, which invalidates views handed out before. */
static void compact(fts_frame_reader_t *reader)
{
    fts_buffer_t *buffer = &reader->buffer;
    size_t pending = buffer->len - reader->start;
    if (pending == 0 && buffer->cap > IDLE_BUFFER_MAX) {
        fts_buffer_destroy(buffer);
    } else if (reader->start > 0) {
        memmove(buffer->data, buffer->data + reader->start, pending);
        buffer->len = pending;
        buffer->data[pending] = '\0';
    }
    reader->start = 0;
}

void fts_frame_reader_feed(fts_frame_reader_t *reader, const void *bytes, size_t len)
{
    if (reader->broken || reader->eof) {
        return; /* nothing after a bad frame or after EOF can be used */
    }
    compact(reader);
    fts_buffer_append(&reader->buffer, bytes, len);
}

void fts_frame_reader_feed_eof(fts_frame_reader_t *reader)
{
    reader->eof = true;
}

/* The declared length of the frame at the front, or 0 when its four bytes are not all in. */
static uint32_t front_length(const fts_frame_reader_t *reader)
{
    if (reader->buffer.len - reader->start < 4) {
        return 0;
    }
    uint32_t declared;
    memcpy(&declared, reader->buffer.data + reader->start, sizeof declared);
    return BSON_UINT32_FROM_LE(declared);
}

bool fts_frame_reader_fill(fts_frame_reader_t *reader, int fd, fts_error_t *err)
{
    if (reader->broken || reader->eof) {
        return true;
    }
    compact(reader);
    size_t want = READ_CHUNK;
    uint32_t declared = front_length(reader);
    if (declared > reader->buffer.len && declared <= FTS_FRAME_MAX_SIZE) {
        size_t missing = declared - reader->buffer.len;
        if (missing > want) {
            want = missing < READ_CHUNK_MAX ? missing : READ_CHUNK_MAX;
        }
    }
    fts_buffer_reserve(&reader->buffer, want);
    ssize_t got;
    do {
        got = read(fd, reader->buffer.data + reader->buffer.len, want);
    } while (got < 0 && errno == EINTR);
    if (got > 0) {
        reader->buffer.len += (size_t)got;
        reader->buffer.data[reader->buffer.len] = '\0';
    } else if (got == 0) {
        reader->eof = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        /* Bytes may be lost: the connection is as broken as after a bad frame. */
        int code = errno;
        fts_error_set(&reader->error, FTS_ERROR_SYSTEM, code, "cannot read frames: %s",
                      strerror(code));
        reader->broken = true;
        if (err) {
            *err = reader->error;
        }
        return false;
    }
    return true;
}

/* Marks the reader broken with a message; every later call returns it. */
static fts_frame_status_t reader_break(fts_frame_reader_t *reader, fts_error_t *err, int code,
                                       const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static fts_frame_status_t reader_break(fts_frame_reader_t *reader, fts_error_t *err, int code,
                                       const char *format, ...)
{
    char message[FTS_ERROR_MESSAGE_SIZE];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    fts_error_set(&reader->error, FTS_ERROR_INPUT, code, "frame %" PRIu64 ": %s",
                  reader->frames + 1, message);
    reader->broken = true;
    if (err) {
        *err = reader->error;
    }
    return FTS_FRAME_ERROR;
}

fts_frame_status_t fts_frame_reader_next(fts_frame_reader_t *reader, bson_t *doc, fts_error_t *err)
{
    if (reader->broken) {
        if (err) {
            *err = reader->error;
        }
        return FTS_FRAME_ERROR;
    }
    size_t pending = reader->buffer.len - reader->start;
    if (pending >= 4) {
        uint32_t declared = front_length(reader);
        if (declared < FTS_FRAME_MIN_SIZE || declared > FTS_FRAME_MAX_SIZE) {
            return reader_break(reader, err, FTS_ERROR_CODE_INVALID,
                                "length prefix %" PRId32 " is outside %d..%d; the stream is "
                                "out of step and cannot be read further",
                                (int32_t)declared, FTS_FRAME_MIN_SIZE, FTS_FRAME_MAX_SIZE);
        }
        if (pending >= declared) {
            const uint8_t *bytes = (const uint8_t *)reader->buffer.data + reader->start;
            size_t offset = 0;
            if (!bson_init_static(doc, bytes, declared)) {
                return reader_break(reader, err, FTS_ERROR_CODE_INVALID,
                                    "the %" PRIu32 "-byte document does not end with a NUL "
                                    "byte",
                                    declared);
            }
            if (!bson_validate(doc, BSON_VALIDATE_NONE, &offset)) {
                return reader_break(reader, err, FTS_ERROR_CODE_INVALID,
                                    "the %" PRIu32 "-byte document is not valid BSON (near "
                                    "byte %zu)",
                                    declared, offset);
            }
            reader->start += declared;
            reader->frames++;
            return FTS_FRAME_READY;
        }
    }
    if (!reader->eof) {
        return FTS_FRAME_AGAIN;
    }
    if (pending == 0) {
        return FTS_FRAME_END;
    }
    if (pending < 4) {
        return reader_break(reader, err, FTS_ERROR_CODE_IO,
                            "the peer closed the connection mid-frame, after %zu of the "
                            "4 length bytes",
                            pending);
    }
    return reader_break(reader, err, FTS_ERROR_CODE_IO,
                        "the peer closed the connection mid-frame, after %zu of %" PRIu32 " bytes",
                        pending, front_length(reader));
}

fts_frame_status_t fts_frame_reader_read(fts_frame_reader_t *reader, int fd, bson_t *doc,
                                         fts_error_t *err)
{
    fts_frame_status_t status = fts_frame_reader_next(reader, doc, err);
    if (status != FTS_FRAME_AGAIN) {
        return status;
    }
    if (!fts_frame_reader_fill(reader, fd, err)) {
        return FTS_FRAME_ERROR;
    }
    return fts_frame_reader_next(reader, doc, err);
}
