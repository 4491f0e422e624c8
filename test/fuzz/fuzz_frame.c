/*
 * fuzz_frame.c - libFuzzer target: the transform worker's frame reader (core/frame.c) and the
 * decoding of the messages it hands out (core/worker_message.c), over arbitrary bytes.
 *
 * Byte 0: bits 0-5 give the chunk size the bytes arrive in (0: all at once, else 1-63 bytes
 * per feed, so frames split at every place); bit 6 set sends them through a non-blocking
 * socketpair read with fts_frame_reader_read, as the worker reads them, instead of
 * fts_frame_reader_feed. The rest is the byte stream, then end of file.
 * Properties beyond "no crash, no leak, no undefined behaviour": a frame handed out is a
 * document bson_validate accepts; after ERROR or END every call repeats it; a decoded message
 * encodes again (encode asserts what each kind needs) and decodes to the same kind.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bson/bson.h>

#include "frame.h"
#include "fuzz_common.h"
#include "worker_message.h"

static void check_message(const bson_t *frame)
{
    fts_worker_message_t message;
    fts_error_t err;
    if (!fts_worker_message_decode(frame, &message, &err)) {
        return;
    }
    bson_t again = BSON_INITIALIZER;
    fts_worker_message_encode(&message, &again);
    fts_worker_message_t copy;
    if (!fts_worker_message_decode(&again, &copy, &err) || copy.kind != message.kind) {
        fuzz_fail("a decoded message does not decode again after encoding");
    }
    bson_destroy(&again);
}

/* Takes every frame the reader has now; returns the last status. */
static fts_frame_status_t drain(fts_frame_reader_t *reader, int fd)
{
    fts_frame_status_t status;
    for (;;) {
        bson_t doc;
        fts_error_t err;
        status = fd >= 0 ? fts_frame_reader_read(reader, fd, &doc, &err)
                         : fts_frame_reader_next(reader, &doc, &err);
        if (status != FTS_FRAME_READY) {
            break;
        }
        size_t offset = 0;
        if (!bson_validate(&doc, BSON_VALIDATE_NONE, &offset)) {
            fuzz_fail("the reader handed out an invalid document");
        }
        check_message(&doc);
    }
    if (status == FTS_FRAME_ERROR || status == FTS_FRAME_END) {
        bson_t doc;
        fts_error_t err;
        if (fts_frame_reader_next(reader, &doc, &err) != status) {
            fuzz_fail("the reader left its final state");
        }
    }
    return status;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet_logs();
    if (size < 1) {
        return 0;
    }
    size_t chunk = data[0] & 63;
    bool through_socket = (data[0] & 64) != 0;
    data++;
    size--;
    if (chunk == 0) {
        chunk = size > 0 ? size : 1;
    }
    int fds[2] = {-1, -1};
    if (through_socket) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
            fuzz_fail("socketpair");
        }
    }
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    fts_frame_status_t status = FTS_FRAME_AGAIN;
    for (size_t at = 0; at < size && status == FTS_FRAME_AGAIN; at += chunk) {
        size_t len = size - at < chunk ? size - at : chunk;
        if (through_socket) {
            if (write(fds[1], data + at, len) != (ssize_t)len) {
                fuzz_fail("a socketpair write was short");
            }
        } else {
            fts_frame_reader_feed(&reader, data + at, len);
        }
        status = drain(&reader, fds[0]);
    }
    if (status == FTS_FRAME_AGAIN) {
        if (through_socket) {
            close(fds[1]);
            fds[1] = -1;
        } else {
            fts_frame_reader_feed_eof(&reader);
        }
        status = drain(&reader, fds[0]);
        if (status == FTS_FRAME_AGAIN) {
            fuzz_fail("the reader still waits after end of file");
        }
    }
    fts_frame_reader_cleanup(&reader);
    if (fds[0] >= 0) {
        close(fds[0]);
    }
    if (fds[1] >= 0) {
        close(fds[1]);
    }
    return 0;
}
