/*
 * frame.h - BSON documents over a stream socket: the in-memory queue between the extract
 * parent and its forked transform worker.
 *
 * A BSON document starts with its own int32 little-endian length, so a frame is exactly one
 * document and needs no header of its own. The writer blocks until a frame is out whole; the
 * reader is fed from a non-blocking descriptor and hands out complete documents. A frame that
 * is not a valid document (length outside FTS_FRAME_MIN_SIZE..FTS_FRAME_MAX_SIZE, bytes that
 * bson_validate refuses) is an error naming what was wrong. The stream cannot be resynchronised
 * after one, nor after the peer vanished mid-frame: the reader stays in error and the caller
 * must treat the connection as broken (drop it, restart the worker). Invariant 6: a bad frame
 * is never half-used.
 */
#ifndef FTS_FRAME_H
#define FTS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#include "buffer.h"
#include "error.h"

/* The smallest BSON document: length and final NUL. */
#define FTS_FRAME_MIN_SIZE 5
/* A change event reassembled from $changeStreamSplitLargeEvent fragments (README.md, Extract)
 * is not bound by MongoDB's 16 MiB: its three large parts (fullDocument,
 * fullDocumentBeforeChange, updateDescription) can each be close to 16 MiB, about 50.4 MB
 * together with the rest, more than MongoDB's 48 MB message. 64 MiB holds that and the
 * message's envelope. */
#define FTS_FRAME_MAX_SIZE (64 * 1024 * 1024)

typedef enum {
    FTS_FRAME_ERROR = -1, /* err says why; the connection is broken for good */
    FTS_FRAME_AGAIN = 0,  /* no complete frame yet: wait until the descriptor is readable */
    FTS_FRAME_READY = 1,  /* a document was handed out */
    FTS_FRAME_END = 2     /* the peer closed the connection cleanly, between frames */
} fts_frame_status_t;

typedef struct {
    fts_buffer_t buffer; /* bytes [start, buffer.len) are received and not yet handed out */
    size_t start;
    bool eof;          /* the peer closed its end */
    bool broken;       /* a bad frame was seen; every later call repeats error */
    fts_error_t error; /* what broke it */
    uint64_t frames;   /* frames handed out so far, to place an error in the stream */
} fts_frame_reader_t;

/* Writes doc as one frame, blocking until all of it is written: retries partial writes and
 * EINTR, waits with poll() if fd is non-blocking. Never raises SIGPIPE on a socket. Refuses a
 * document outside the frame size limits before writing anything. On a write error
 * (FTS_ERROR_SYSTEM, code errno) part of the frame may be out: the connection is broken. */
bool fts_frame_write(int fd, const bson_t *doc, fts_error_t *err);

void fts_frame_reader_init(fts_frame_reader_t *reader);
void fts_frame_reader_cleanup(fts_frame_reader_t *reader);

/* Adds received bytes (tests, or a caller doing its own reads). */
void fts_frame_reader_feed(fts_frame_reader_t *reader, const void *bytes, size_t len);
/* Records that the peer closed its end. */
void fts_frame_reader_feed_eof(fts_frame_reader_t *reader);

/* Reads once from fd (any blocking mode; EINTR retried) what it has now. EAGAIN is not an
 * error; end of file is recorded for fts_frame_reader_next. False on a read error
 * (FTS_ERROR_SYSTEM, code errno). */
bool fts_frame_reader_fill(fts_frame_reader_t *reader, int fd, fts_error_t *err);

/* Hands out the next complete frame as a read-only view in *doc: borrowed until the next call
 * of any fts_frame_reader_* function on this reader (bson_copy it to keep it). Checks a
 * frame's length as soon as its first four bytes are in, and the whole document once it is.
 * After END or ERROR every later call returns the same. */
fts_frame_status_t fts_frame_reader_next(fts_frame_reader_t *reader, bson_t *doc, fts_error_t *err);

/* fts_frame_reader_next, and when that needs more bytes one fts_frame_reader_fill from fd and
 * another try: the call an event loop makes when fd is readable (repeat until AGAIN). */
fts_frame_status_t fts_frame_reader_read(fts_frame_reader_t *reader, int fd, bson_t *doc,
                                         fts_error_t *err);

#endif
