/*
 * channel.c - the channel port over a stream socket (channel.h): fts_frame_write to send,
 * fts_frame_reader_read to receive, poll() to wait. Invariant 6: a bad frame is never half-used
 * (the reader stays in error and receive keeps returning it).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>

#include "channel.h"

static bool socket_send(void *context, const bson_t *frame, fts_error_t *err)
{
    fts_socket_channel_t *channel = context;
    if (channel->fd < 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, EBADF, "the channel is closed");
    }
    return fts_frame_write(channel->fd, frame, err);
}

static fts_frame_status_t socket_receive(void *context, bson_t *frame, fts_error_t *err)
{
    fts_socket_channel_t *channel = context;
    return fts_frame_reader_read(&channel->reader, channel->fd, frame, err);
}

static bool socket_wait(void *context)
{
    fts_socket_channel_t *channel = context;
    struct pollfd pfd = {.fd = channel->fd, .events = POLLIN};
    return !(poll(&pfd, 1, -1) < 0 && errno != EINTR);
}

static const fts_channel_ops_t socket_ops = {
    .send = socket_send,
    .receive = socket_receive,
    .wait = socket_wait,
};

void fts_socket_channel_init(fts_socket_channel_t *channel, int fd)
{
    channel->fd = fd;
    fts_frame_reader_init(&channel->reader);
}

fts_channel_port_t fts_socket_channel_port(fts_socket_channel_t *channel)
{
    return (fts_channel_port_t){.ops = &socket_ops, .context = channel};
}

bool fts_socket_channel_set_nonblocking(fts_socket_channel_t *channel, fts_error_t *err)
{
    int flags = fcntl(channel->fd, F_GETFL);
    if (flags < 0 || fcntl(channel->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot make the socket non-blocking");
    }
    return true;
}

void fts_socket_channel_cleanup(fts_socket_channel_t *channel)
{
    fts_frame_reader_cleanup(&channel->reader);
}
