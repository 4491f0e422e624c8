/*
 * clock.h - the two clocks ftsync reads: a monotonic one for deadlines, timeouts and backoff
 * (never goes back when the wall clock is set), and the wall clock for what is shown to people
 * or stored for them (log timestamps, failed_at, updated_at fields).
 */
#ifndef FTS_CLOCK_H
#define FTS_CLOCK_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC: only differences mean anything. */
uint64_t fts_clock_monotonic_ms(void);

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t fts_clock_wall_ms(void);

#endif
