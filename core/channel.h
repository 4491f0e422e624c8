/*
 * channel.h - the channel port (extract_ports.h) over a stream socket: frames (core/frame.h)
 * from the extract parent to its forked transform worker, the in-memory queue between Extract
 * and Transform.
 *
 * The parent's end sends whole frames, blocking until each is out; the worker's end is made
 * non-blocking, so that receive finds "nothing more now" (AGAIN) and the worker flushes its
 * batch instead of waiting for frames that may not come for a while. A broken stream stays
 * broken (frame.h): the worker ends and is restarted from the saved position.
 */
#ifndef FTS_CHANNEL_H
#define FTS_CHANNEL_H

#include <stdbool.h>

#include "error.h"
#include "frame.h"
#include "extract_ports.h"

typedef struct {
    int fd; /* borrowed: the caller closes it; -1: closed (send fails) */
    fts_frame_reader_t reader;
} fts_socket_channel_t;

/* Sets channel up over fd. */
void fts_socket_channel_init(fts_socket_channel_t *channel, int fd);

/* The channel port over channel (borrowed: it must outlive the port). */
fts_channel_port_t fts_socket_channel_port(fts_socket_channel_t *channel);

/* The worker's end: makes fd non-blocking. false with err when it cannot. */
bool fts_socket_channel_set_nonblocking(fts_socket_channel_t *channel, fts_error_t *err);

/* Frees the reader; does not close fd. */
void fts_socket_channel_cleanup(fts_socket_channel_t *channel);

#endif
