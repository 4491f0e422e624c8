/*
 * test_frame.c - BSON frames over a socketpair: frames split at every byte boundary, many
 * frames in one read, large frames against a non-blocking writer, and every way a stream goes
 * bad (oversize, bad length, invalid document, EOF mid-frame, peer gone) ending in an error
 * that names the problem and sticks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "assertions.h"
#include "frame.h"

static void make_pair(int fds[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    /* The reader side is non-blocking, as in the worker's event loop. */
    assert_int_equal(fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK), 0);
}

/* Document number i: {"i": i, "s": "xxx..." (i bytes)}. */
static bson_t *numbered(int i)
{
    bson_t *doc = bson_new();
    BSON_APPEND_INT32(doc, "i", i);
    char *text = malloc((size_t)i + 1);
    memset(text, 'x', (size_t)i);
    text[i] = '\0';
    BSON_APPEND_UTF8(doc, "s", text);
    free(text);
    return doc;
}

static int number_of(const bson_t *doc)
{
    bson_iter_t iter;
    assert_true(bson_iter_init_find(&iter, doc, "i"));
    return bson_iter_int32(&iter);
}

static void write_all(int fd, const void *bytes, size_t len)
{
    const char *next = bytes;
    while (len > 0) {
        ssize_t written = write(fd, next, len);
        assert_true(written > 0);
        next += written;
        len -= (size_t)written;
    }
}

static void test_one_frame(void **state)
{
    (void)state;
    int fds[2];
    make_pair(fds);
    bson_t *doc = numbered(3);
    fts_error_t err = {0};
    assert_true(fts_frame_write(fds[0], doc, &err));

    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    bson_t view;
    assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_READY);
    assert_true(bson_equal(&view, doc));
    assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_AGAIN);
    close(fds[0]);
    assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_END);
    /* END sticks. */
    assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_END);
    fts_frame_reader_cleanup(&reader);
    fts_frame_reader_cleanup(NULL);
    bson_destroy(doc);
    close(fds[1]);
}

/* Three frames, the stream cut in two at every byte boundary. */
static void test_split_at_every_boundary(void **state)
{
    (void)state;
    fts_buffer_t stream = {0};
    for (int i = 0; i < 3; i++) {
        bson_t *doc = numbered(i * 7);
        fts_buffer_append(&stream, bson_get_data(doc), doc->len);
        bson_destroy(doc);
    }
    for (size_t cut = 0; cut <= stream.len; cut++) {
        fts_frame_reader_t reader;
        fts_frame_reader_init(&reader);
        bson_t view;
        fts_error_t err = {0};
        int seen = 0;
        fts_frame_reader_feed(&reader, stream.data, cut);
        fts_frame_status_t status;
        while ((status = fts_frame_reader_next(&reader, &view, &err)) == FTS_FRAME_READY) {
            assert_int_equal(number_of(&view), seen * 7);
            seen++;
        }
        assert_int_equal(status, FTS_FRAME_AGAIN);
        fts_frame_reader_feed(&reader, stream.data + cut, stream.len - cut);
        while ((status = fts_frame_reader_next(&reader, &view, &err)) == FTS_FRAME_READY) {
            assert_int_equal(number_of(&view), seen * 7);
            seen++;
        }
        assert_int_equal(status, FTS_FRAME_AGAIN);
        assert_int_equal(seen, 3);
        fts_frame_reader_feed_eof(&reader);
        assert_int_equal(fts_frame_reader_next(&reader, &view, &err), FTS_FRAME_END);
        fts_frame_reader_cleanup(&reader);
    }
    fts_buffer_destroy(&stream);
}

/* The same through the socket, one byte at a time, reading after every byte. */
static void test_byte_by_byte_through_socket(void **state)
{
    (void)state;
    int fds[2];
    make_pair(fds);
    fts_buffer_t stream = {0};
    for (int i = 0; i < 4; i++) {
        bson_t *doc = numbered(i);
        fts_buffer_append(&stream, bson_get_data(doc), doc->len);
        bson_destroy(doc);
    }
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    fts_error_t err = {0};
    bson_t view;
    int seen = 0;
    for (size_t i = 0; i < stream.len; i++) {
        write_all(fds[0], stream.data + i, 1);
        fts_frame_status_t status;
        while ((status = fts_frame_reader_read(&reader, fds[1], &view, &err)) == FTS_FRAME_READY) {
            assert_int_equal(number_of(&view), seen);
            seen++;
        }
        assert_int_equal(status, FTS_FRAME_AGAIN);
    }
    assert_int_equal(seen, 4);
    fts_frame_reader_cleanup(&reader);
    fts_buffer_destroy(&stream);
    close(fds[0]);
    close(fds[1]);
}

static void test_many_frames_in_one_read(void **state)
{
    (void)state;
    int fds[2];
    make_pair(fds);
    fts_error_t err = {0};
    /* 100 small writes stay under the socket's buffer (each write costs a buffer's overhead),
     * so the writer never blocks with nobody reading. */
    for (int i = 0; i < 100; i++) {
        bson_t *doc = numbered(i % 50);
        assert_true(fts_frame_write(fds[0], doc, &err));
        bson_destroy(doc);
    }
    close(fds[0]);
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    assert_true(fts_frame_reader_fill(&reader, fds[1], &err));
    bson_t view;
    int seen = 0;
    fts_frame_status_t status;
    while ((status = fts_frame_reader_read(&reader, fds[1], &view, &err)) == FTS_FRAME_READY) {
        assert_int_equal(number_of(&view), seen % 50);
        seen++;
    }
    assert_int_equal(status, FTS_FRAME_END);
    assert_int_equal(seen, 100);
    assert_true(reader.frames == 100);
    fts_frame_reader_cleanup(&reader);
    close(fds[1]);
}

/* A 6 MiB frame from a child writing to a non-blocking socket (partial writes, EAGAIN) while
 * the parent reads. */
static void test_large_frame_nonblocking_writer(void **state)
{
    (void)state;
    int fds[2];
    make_pair(fds);
    assert_int_equal(fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK), 0);
    size_t size = 6 * 1024 * 1024;
    uint8_t *payload = malloc(size);
    for (size_t i = 0; i < size; i++) {
        payload[i] = (uint8_t)(i * 31);
    }
    bson_t *big = bson_new();
    BSON_APPEND_INT32(big, "i", 1);
    BSON_APPEND_BINARY(big, "payload", BSON_SUBTYPE_BINARY, payload, (uint32_t)size);
    bson_t *small = numbered(2);

    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(fds[1]);
        fts_error_t err = {0};
        bool ok = fts_frame_write(fds[0], big, &err) && fts_frame_write(fds[0], small, &err);
        _exit(ok ? 0 : 1);
    }
    close(fds[0]);
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    fts_error_t err = {0};
    bson_t view;
    int seen = 0;
    for (;;) {
        fts_frame_status_t status = fts_frame_reader_read(&reader, fds[1], &view, &err);
        if (status == FTS_FRAME_READY) {
            assert_true(bson_equal(&view, seen == 0 ? big : small));
            seen++;
        } else if (status == FTS_FRAME_AGAIN) {
            struct pollfd wait = {.fd = fds[1], .events = POLLIN};
            assert_true(poll(&wait, 1, 10000) == 1);
        } else {
            assert_int_equal(status, FTS_FRAME_END);
            break;
        }
    }
    assert_int_equal(seen, 2);
    int child_status = 0;
    assert_int_equal(waitpid(child, &child_status, 0), child);
    assert_true(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0);
    fts_frame_reader_cleanup(&reader);
    bson_destroy(big);
    bson_destroy(small);
    free(payload);
    close(fds[1]);
}

/* ---------------------------------------------------------------------------------------- */
/* Bad streams                                                                              */

static void feed_le32(fts_frame_reader_t *reader, uint32_t value)
{
    uint8_t bytes[4] = {(uint8_t)value, (uint8_t)(value >> 8), (uint8_t)(value >> 16),
                        (uint8_t)(value >> 24)};
    fts_frame_reader_feed(reader, bytes, 4);
}

/* The status after feeding bytes, with the error it gave; checks the error sticks. */
static fts_error_t expect_broken(fts_frame_reader_t *reader)
{
    bson_t view;
    fts_error_t err = {0};
    assert_int_equal(fts_frame_reader_next(reader, &view, &err), FTS_FRAME_ERROR);
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    fts_error_t again = {0};
    /* More bytes, even a valid frame, change nothing: the stream is out of step for good. */
    bson_t *doc = numbered(1);
    fts_frame_reader_feed(reader, bson_get_data(doc), doc->len);
    bson_destroy(doc);
    assert_int_equal(fts_frame_reader_next(reader, &view, &again), FTS_FRAME_ERROR);
    assert_string_equal(err.message, again.message);
    return err;
}

static void test_bad_lengths(void **state)
{
    (void)state;
    const struct {
        uint32_t length;
        const char *says;
    } cases[] = {
        {0, "length prefix 0 is outside 5..67108864"},
        {4, "length prefix 4 is outside"},
        {0xffffffffu, "length prefix -1 is outside"},
        {0x80000000u, "length prefix -2147483648 is outside"},
        {FTS_FRAME_MAX_SIZE + 1, "length prefix 67108865 is outside"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fts_frame_reader_t reader;
        fts_frame_reader_init(&reader);
        /* One good frame first: the error names the second frame. */
        bson_t *doc = numbered(0);
        fts_frame_reader_feed(&reader, bson_get_data(doc), doc->len);
        bson_destroy(doc);
        bson_t view;
        assert_int_equal(fts_frame_reader_next(&reader, &view, NULL), FTS_FRAME_READY);
        /* Refused as soon as the four length bytes are in, before any body arrives. */
        feed_le32(&reader, cases[i].length);
        fts_error_t err = expect_broken(&reader);
        assert_contains(err.message, "frame 2: ");
        assert_contains(err.message, cases[i].says);
        assert_contains(err.message, "out of step");
        fts_frame_reader_cleanup(&reader);
    }
}

static void test_oversize_refused_early_and_by_writer(void **state)
{
    (void)state;
    int fds[2];
    make_pair(fds);
    /* The reader refuses the header without buffering 64 MiB first. */
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    uint8_t header[4] = {0x01, 0x00, 0x00, 0x04}; /* 64 MiB + 1 */
    write_all(fds[0], header, 4);
    bson_t view;
    fts_error_t err = {0};
    assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_ERROR);
    assert_contains(err.message, "length prefix 67108865 is outside");
    assert_true(reader.buffer.cap < 1024 * 1024);
    fts_frame_reader_cleanup(&reader);

    /* The writer refuses a document the reader would refuse, and writes nothing. */
    size_t size = FTS_FRAME_MAX_SIZE;
    uint8_t *payload = calloc(1, size);
    bson_t *huge = bson_new();
    BSON_APPEND_BINARY(huge, "b", BSON_SUBTYPE_BINARY, payload, (uint32_t)size);
    assert_false(fts_frame_write(fds[0], huge, &err));
    assert_int_equal(err.domain, FTS_ERROR_INPUT);
    assert_contains(err.message, "cannot send a document of 67108877 bytes");
    bson_destroy(huge);
    free(payload);
    close(fds[0]);
    fts_frame_reader_init(&reader);
    assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_END);
    fts_frame_reader_cleanup(&reader);
    close(fds[1]);
}

static void test_invalid_documents(void **state)
{
    (void)state;
    bson_t *doc = BCON_NEW("a", BCON_INT32(1), "n", "{", "s", BCON_UTF8("xyz"), "}");
    const uint8_t *good = bson_get_data(doc);
    uint8_t bytes[64];
    assert_true(doc->len < sizeof bytes);

    /* The last byte of the frame is not NUL. */
    memcpy(bytes, good, doc->len);
    bytes[doc->len - 1] = 1;
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    fts_frame_reader_feed(&reader, bytes, doc->len);
    fts_error_t err = expect_broken(&reader);
    assert_contains(err.message, "frame 1: ");
    assert_contains(err.message, "does not end with a NUL byte");
    fts_frame_reader_cleanup(&reader);

    /* A string length inside the embedded document runs past its end. */
    memcpy(bytes, good, doc->len);
    for (uint32_t i = 0; i + 3 <= doc->len; i++) {
        if (memcmp(bytes + i, "\x02s\0", 3) == 0) {
            bytes[i + 3] = 0x40;
        }
    }
    fts_frame_reader_init(&reader);
    fts_frame_reader_feed(&reader, bytes, doc->len);
    err = expect_broken(&reader);
    assert_contains(err.message, "is not valid BSON");
    fts_frame_reader_cleanup(&reader);

    /* An unknown element type. */
    memcpy(bytes, good, doc->len);
    bytes[4] = 0x42;
    fts_frame_reader_init(&reader);
    fts_frame_reader_feed(&reader, bytes, doc->len);
    err = expect_broken(&reader);
    assert_contains(err.message, "is not valid BSON");
    fts_frame_reader_cleanup(&reader);

    /* Invalid UTF-8 is not the frame layer's business: json_convert repairs it. */
    bson_t odd = BSON_INITIALIZER;
    bson_append_utf8(&odd, "s", 1, "\xff\xfe", 2);
    fts_frame_reader_init(&reader);
    fts_frame_reader_feed(&reader, bson_get_data(&odd), odd.len);
    bson_t view;
    assert_int_equal(fts_frame_reader_next(&reader, &view, &err), FTS_FRAME_READY);
    fts_frame_reader_cleanup(&reader);
    bson_destroy(&odd);
    bson_destroy(doc);
}

static void test_eof_mid_frame(void **state)
{
    (void)state;
    bson_t *first = numbered(5);
    bson_t *second = numbered(9);
    /* Cut inside the length prefix, and inside the body. */
    size_t cuts[] = {1, 3, 4, 10, second->len - 1};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        int fds[2];
        make_pair(fds);
        write_all(fds[0], bson_get_data(first), first->len);
        write_all(fds[0], bson_get_data(second), cuts[c]);
        close(fds[0]);
        fts_frame_reader_t reader;
        fts_frame_reader_init(&reader);
        bson_t view;
        fts_error_t err = {0};
        /* The whole frame before the cut is still handed out. */
        assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_READY);
        assert_int_equal(number_of(&view), 5);
        fts_frame_status_t status;
        do {
            status = fts_frame_reader_read(&reader, fds[1], &view, &err);
        } while (status == FTS_FRAME_AGAIN);
        assert_int_equal(status, FTS_FRAME_ERROR);
        assert_int_equal(err.code, FTS_ERROR_CODE_IO);
        assert_contains(err.message, "frame 2: the peer closed the connection mid-frame");
        char expected[96];
        if (cuts[c] < 4) {
            snprintf(expected, sizeof expected, "after %zu of the 4 length bytes", cuts[c]);
        } else {
            snprintf(expected, sizeof expected, "after %zu of %u bytes", cuts[c], second->len);
        }
        assert_contains(err.message, expected);
        assert_int_equal(fts_frame_reader_read(&reader, fds[1], &view, &err), FTS_FRAME_ERROR);
        fts_frame_reader_cleanup(&reader);
        close(fds[1]);
    }
    bson_destroy(first);
    bson_destroy(second);
}

static void test_write_to_closed_peer(void **state)
{
    (void)state;
    int fds[2];
    make_pair(fds);
    close(fds[1]);
    /* No SIGPIPE: the test would die here if the writer raised one. */
    bson_t *doc = numbered(4);
    fts_error_t err = {0};
    assert_false(fts_frame_write(fds[0], doc, &err));
    assert_int_equal(err.domain, FTS_ERROR_SYSTEM);
    assert_int_equal(err.code, EPIPE);
    assert_contains(err.message, "cannot write a frame (0 of");
    bson_destroy(doc);
    close(fds[0]);

    /* On a pipe (not a socket) the writer falls back to write(); SIGPIPE ignored here as
     * ftsync's signals.c does. */
    int pipe_fds[2];
    assert_int_equal(pipe(pipe_fds), 0);
    doc = numbered(2);
    assert_true(fts_frame_write(pipe_fds[1], doc, &err));
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    bson_t view;
    assert_int_equal(fts_frame_reader_read(&reader, pipe_fds[0], &view, &err), FTS_FRAME_READY);
    assert_true(bson_equal(&view, doc));
    fts_frame_reader_cleanup(&reader);
    close(pipe_fds[0]);
    void (*previous)(int) = signal(SIGPIPE, SIG_IGN);
    assert_false(fts_frame_write(pipe_fds[1], doc, &err));
    assert_int_equal(err.code, EPIPE);
    signal(SIGPIPE, previous);
    close(pipe_fds[1]);
    bson_destroy(doc);
}

static void test_read_error_breaks_reader(void **state)
{
    (void)state;
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    fts_error_t err = {0};
    assert_false(fts_frame_reader_fill(&reader, -1, &err));
    assert_int_equal(err.domain, FTS_ERROR_SYSTEM);
    assert_int_equal(err.code, EBADF);
    assert_contains(err.message, "cannot read frames");
    bson_t view;
    fts_error_t again = {0};
    assert_int_equal(fts_frame_reader_next(&reader, &view, &again), FTS_FRAME_ERROR);
    assert_string_equal(again.message, err.message);
    fts_frame_reader_cleanup(&reader);
}

/* After a large frame the reader gives its memory back once it is idle. */
static void test_memory_given_back(void **state)
{
    (void)state;
    size_t size = 8 * 1024 * 1024;
    uint8_t *payload = calloc(1, size);
    bson_t *big = bson_new();
    BSON_APPEND_BINARY(big, "b", BSON_SUBTYPE_BINARY, payload, (uint32_t)size);
    fts_frame_reader_t reader;
    fts_frame_reader_init(&reader);
    fts_frame_reader_feed(&reader, bson_get_data(big), big->len);
    bson_t view;
    assert_int_equal(fts_frame_reader_next(&reader, &view, NULL), FTS_FRAME_READY);
    assert_true(reader.buffer.cap > size);
    bson_t *small = numbered(1);
    fts_frame_reader_feed(&reader, bson_get_data(small), small->len);
    assert_true(reader.buffer.cap < size);
    assert_int_equal(fts_frame_reader_next(&reader, &view, NULL), FTS_FRAME_READY);
    assert_true(bson_equal(&view, small));
    fts_frame_reader_cleanup(&reader);
    bson_destroy(big);
    bson_destroy(small);
    free(payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_frame),
        cmocka_unit_test(test_split_at_every_boundary),
        cmocka_unit_test(test_byte_by_byte_through_socket),
        cmocka_unit_test(test_many_frames_in_one_read),
        cmocka_unit_test(test_large_frame_nonblocking_writer),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_oversize_refused_early_and_by_writer),
        cmocka_unit_test(test_invalid_documents),
        cmocka_unit_test(test_eof_mid_frame),
        cmocka_unit_test(test_write_to_closed_peer),
        cmocka_unit_test(test_read_error_breaks_reader),
        cmocka_unit_test(test_memory_given_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
