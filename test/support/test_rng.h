/*
 * test_rng.h - the seeded generator tests draw random moments and choices from (splitmix64).
 *
 * The same seed gives the same sequence on every platform, so a run that failed with a printed
 * seed (FTSYNC_TEST_SEED) can be repeated exactly. Each test owns its state: nothing is shared
 * between tests or threads.
 */
#ifndef FTS_TEST_RNG_H
#define FTS_TEST_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state; /* the seed, then advanced by every draw */
} fts_test_rng_t;

static inline uint64_t fts_test_rng_next(fts_test_rng_t *rng)
{
    uint64_t z = (rng->state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

#endif
