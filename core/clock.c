/*
 * clock.c - monotonic and wall-clock milliseconds (see clock.h).
 */
#include "clock.h"

#include <time.h>

static uint64_t read_ms(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

uint64_t fts_clock_monotonic_ms(void)
{
    return read_ms(CLOCK_MONOTONIC);
}

uint64_t fts_clock_wall_ms(void)
{
    return read_ms(CLOCK_REALTIME);
}
