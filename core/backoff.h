/*
 * backoff.h - capped exponential backoff with full jitter, for every retry in ftsync.
 *
 * The n-th delay is drawn uniformly from [0, min(cap, base * 2^n)] ("full jitter"), so that many
 * loaders retrying against one recovering server do not arrive in lockstep. The draws come from
 * a xorshift generator of its own, or from a source the owner sets (fts_backoff_set_random: a
 * test that needs a given delay, 0 included).
 */
#ifndef FTS_BACKOFF_H
#define FTS_BACKOFF_H

#include <stdint.h>

typedef struct {
    uint64_t base_ms;
    uint64_t cap_ms;
    unsigned attempt;                  /* retries since the last success */
    uint64_t rng;                      /* xorshift state; never 0 */
    uint64_t (*random)(void *context); /* NULL: the xorshift state above */
    void *random_context;
} fts_backoff_t;

/* seed 0 picks one from the clock and pid; tests pass a fixed seed for repeatable delays. */
void fts_backoff_init(fts_backoff_t *backoff, uint64_t base_ms, uint64_t cap_ms, uint64_t seed);

/* Draws from random(context) instead of the backoff's own generator (random NULL: its own
 * again). The delay is then random() % (ceiling + 1): a source returning 0 gives delay 0. */
void fts_backoff_set_random(fts_backoff_t *backoff, uint64_t (*random)(void *context),
                            void *context);

/* The delay to wait before the next attempt; counts the attempt. */
uint64_t fts_backoff_next_ms(fts_backoff_t *backoff);

/* The ceiling the next delay is drawn under, without drawing it. */
uint64_t fts_backoff_ceiling_ms(const fts_backoff_t *backoff);

/* Call after a success: the next failure starts from the base again. */
void fts_backoff_reset(fts_backoff_t *backoff);

#endif
