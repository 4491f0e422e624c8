/*
 * log.h - ftsync's leveled logger: one line per event on stderr, as logfmt or JSON.
 *
 * Every line carries a timestamp, a level, a component tag ("es", "redis", "config", ...) and a
 * message. Operators grep these lines, so the rules are strict:
 *   - secrets never appear: every value registered with fts_log_add_secret() is replaced by
 *     "***" in every line, whatever part of the code (or a server's error text) produced it;
 *   - warnings and errors repeated from one call site are rate-limited: the first is printed,
 *     the repeats within the interval are counted and reported with the next one printed;
 *   - long messages (a document, a server reply) are truncated.
 * ftsync runs one event loop per process, so the logger is not thread-safe by design.
 */
#ifndef FTS_LOG_H
#define FTS_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { FTS_LOG_DEBUG = 0, FTS_LOG_INFO, FTS_LOG_WARN, FTS_LOG_ERROR } fts_log_level_t;

typedef enum { FTS_LOG_FORMAT_LOGFMT = 0, FTS_LOG_FORMAT_JSON } fts_log_format_t;

/* Longest message kept; the rest is cut and the line says how many bytes were dropped. */
#define FTS_LOG_MAX_MESSAGE 2048

/* How long repeats of one warning or error are held back, by default. */
#define FTS_LOG_DEFAULT_REPEAT_INTERVAL_MS 1000

void fts_log_set_level(fts_log_level_t level);
void fts_log_set_format(fts_log_format_t format);
/* Where lines go; stderr unless a test captures them. Borrowed until replaced. */
void fts_log_set_stream(FILE *stream);
void fts_log_set_repeat_interval_ms(uint64_t interval_ms);
/* Replaces the clock (milliseconds since the epoch) for tests; NULL restores the real one. */
void fts_log_set_clock(uint64_t (*now_ms)(void));

bool fts_log_level_parse(const char *text, fts_log_level_t *level);
const char *fts_log_level_name(fts_log_level_t level);
bool fts_log_format_parse(const char *text, fts_log_format_t *format);

/* Shortest secret masked; also the shortest start of a secret masked where a text ends. */
#define FTS_LOG_MIN_SECRET 3

/* Registers a value that must never be printed (copied). Values shorter than
 * FTS_LOG_MIN_SECRET bytes are ignored: masking every "a" would make logs unreadable and
 * protect nothing. Where a text ends in the first FTS_LOG_MIN_SECRET or more bytes of a secret
 * (someone cut it there), that end is masked too. */
void fts_log_add_secret(const char *secret);

/* Registers the password and the base64 of "user:password", the form HTTP Basic
 * authentication puts in the Authorization header, which a server may quote back. */
void fts_log_add_basic_credentials(const char *user, const char *password);

/* Where text (len bytes) may be cut at or before `cut` without leaving part of a registered
 * secret before the cut: `cut` moved back to the start of any secret it would split. For code
 * that quotes a part of a longer text (a server's reply) before redacting it. */
size_t fts_log_safe_cut(const char *text, size_t len, size_t cut);
void fts_log_clear_secrets(void);

/* Writes text with every registered secret replaced by "***" into out (size bytes). */
void fts_log_redact(const char *text, char *out, size_t size);

void fts_log(fts_log_level_t level, const char *component, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Prints a summary line for every call site whose repeats are still held back; called on
 * stop so that no count of suppressed messages is lost. */
void fts_log_flush_repeats(void);

/* Resets level, format, stream, clock, secrets and repeat counters (tests). */
void fts_log_reset(void);

#endif
