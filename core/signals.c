/*
 * signals.c - SIGTERM/SIGINT to a flag and a self-pipe (see signals.h).
 */
#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal = 0;
static volatile sig_atomic_t stop_requested = 0;
static int pipe_fds[2] = {-1, -1};

static void on_stop_signal(int signo)
{
    int saved_errno = errno;
    stop_signal = signo;
    stop_requested = 1;
    if (pipe_fds[1] >= 0) {
        /* A full pipe already says "stop"; the lost byte does not matter. */
        ssize_t ignored = write(pipe_fds[1], "x", 1);
        (void)ignored;
    }
    errno = saved_errno;
}

bool fts_signals_install(fts_error_t *err)
{
    if (pipe_fds[0] < 0) {
        if (pipe(pipe_fds) != 0) {
            return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create signal pipe: %s",
                                 strerror(errno));
        }
        for (int i = 0; i < 2; i++) {
            fcntl(pipe_fds[i], F_SETFL, fcntl(pipe_fds[i], F_GETFL) | O_NONBLOCK);
            fcntl(pipe_fds[i], F_SETFD, FD_CLOEXEC);
        }
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGTERM, &action, NULL) != 0 || sigaction(SIGINT, &action, NULL) != 0) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot install signal handlers: %s",
                             strerror(errno));
    }
    signal(SIGPIPE, SIG_IGN);
    return true;
}

bool fts_signals_stop_requested(void)
{
    return stop_requested != 0;
}

int fts_signals_stop_signal(void)
{
    return stop_signal;
}

int fts_signals_fd(void)
{
    return pipe_fds[0];
}

void fts_signals_request_stop(void)
{
    on_stop_signal(0);
}

void fts_signals_reset(void)
{
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    for (int i = 0; i < 2; i++) {
        if (pipe_fds[i] >= 0) {
            close(pipe_fds[i]);
            pipe_fds[i] = -1;
        }
    }
    stop_requested = 0;
    stop_signal = 0;
}

bool fts_signals_sleep_ms(unsigned long ms)
{
    struct pollfd wait_for = {.fd = pipe_fds[0], .events = POLLIN};
    while (!stop_requested) {
        int ready = poll(&wait_for, pipe_fds[0] >= 0 ? 1 : 0, (int)ms);
        if (ready == 0) {
            return true;
        }
        if (ready < 0 && errno != EINTR) {
            return true;
        }
        if (ready < 0) {
            continue; /* interrupted by another signal: wait on (coarsely) */
        }
        break;
    }
    return false;
}
