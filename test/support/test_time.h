/*
 * test_time.h - the clock and the pause that tests and test servers share when they wait for
 * something to happen (a server to start, an event to arrive, a lease to expire).
 */
#ifndef FTS_TEST_TIME_H
#define FTS_TEST_TIME_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds on the monotonic clock: for deadlines, immune to wall-clock jumps. */
static inline uint64_t fts_test_monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* Sleeps the whole time even when a signal (a child's SIGCHLD) interrupts. */
static inline void fts_test_sleep_ms(long ms)
{
    struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

#endif
