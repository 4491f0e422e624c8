/*
 * backoff.c - capped full-jitter backoff (see backoff.h).
 */
#include "backoff.h"

#include <sys/time.h>
#include <unistd.h>

void fts_backoff_init(fts_backoff_t *backoff, uint64_t base_ms, uint64_t cap_ms, uint64_t seed)
{
    if (seed == 0) {
        struct timeval now;
        gettimeofday(&now, NULL);
        seed =
            ((uint64_t)now.tv_sec * 1000003u) ^ (uint64_t)now.tv_usec ^ ((uint64_t)getpid() << 32);
    }
    backoff->base_ms = base_ms ? base_ms : 1;
    backoff->cap_ms = cap_ms < backoff->base_ms ? backoff->base_ms : cap_ms;
    backoff->attempt = 0;
    backoff->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
    backoff->random = NULL;
    backoff->random_context = NULL;
}

void fts_backoff_set_random(fts_backoff_t *backoff, uint64_t (*random)(void *context),
                            void *context)
{
    backoff->random = random;
    backoff->random_context = context;
}

uint64_t fts_backoff_ceiling_ms(const fts_backoff_t *backoff)
{
    /* Past 2^40 times the base the cap has long been reached; stop shifting before overflow. */
    unsigned shift = backoff->attempt > 40 ? 40 : backoff->attempt;
    uint64_t ceiling = backoff->base_ms << shift;
    if (ceiling > backoff->cap_ms || (ceiling >> shift) != backoff->base_ms) {
        ceiling = backoff->cap_ms;
    }
    return ceiling;
}

static uint64_t next_random(fts_backoff_t *backoff)
{
    if (backoff->random) {
        return backoff->random(backoff->random_context);
    }
    uint64_t x = backoff->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    backoff->rng = x;
    return x;
}

uint64_t fts_backoff_next_ms(fts_backoff_t *backoff)
{
    uint64_t ceiling = fts_backoff_ceiling_ms(backoff);
    if (backoff->attempt < 64) {
        backoff->attempt++;
    }
    return next_random(backoff) % (ceiling + 1);
}

void fts_backoff_reset(fts_backoff_t *backoff)
{
    backoff->attempt = 0;
}
