/*
 * log.c - leveled, rate-limited, secret-scrubbing logger (see log.h).
 *
 * Keeps the secret rule of log.h even at a cut: a message is masked whole before it is
 * truncated, text that someone else cut short is masked where it ends in the start of a
 * secret, and fts_log_safe_cut() tells other code where it may cut without splitting one.
 */
#include "log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bson/bson.h>

#include "buffer.h"
#include "clock.h"

/* Number of call sites whose repeats are tracked at once; a hash slot is reused on collision. */
#define REPEAT_SLOTS 64
/* Secrets registered at once: the configuration holds only a handful. */
#define MAX_SECRETS 32

typedef struct {
    const char *format; /* the call site's format string identifies it */
    const char *component;
    fts_log_level_t level;
    uint64_t window_start_ms;
    uint64_t suppressed;
    /* The latest repeat held back, redacted, for the summary line: whole, as a line would
     * have printed it (a message and its "...(truncated N bytes)" note). */
    char last_message[FTS_LOG_MAX_MESSAGE + 64];
} repeat_slot_t;

static struct {
    fts_log_level_t level;
    fts_log_format_t format;
    FILE *stream;
    uint64_t repeat_interval_ms;
    uint64_t (*now_ms)(void);
    char *secrets[MAX_SECRETS];
    size_t secret_count;
    repeat_slot_t repeats[REPEAT_SLOTS];
} logger = {
    FTS_LOG_INFO, FTS_LOG_FORMAT_LOGFMT, NULL, FTS_LOG_DEFAULT_REPEAT_INTERVAL_MS, NULL, {0}, 0,
    {{0}}};

/* The wall clock: timestamps are for people. Tests put their own in (fts_log_set_clock). */
static uint64_t now_ms(void)
{
    return logger.now_ms ? logger.now_ms() : fts_clock_wall_ms();
}

static FILE *output(void)
{
    return logger.stream ? logger.stream : stderr;
}

void fts_log_set_level(fts_log_level_t level)
{
    logger.level = level;
}

void fts_log_set_format(fts_log_format_t format)
{
    logger.format = format;
}

void fts_log_set_stream(FILE *stream)
{
    logger.stream = stream;
}

void fts_log_set_repeat_interval_ms(uint64_t interval_ms)
{
    logger.repeat_interval_ms = interval_ms;
}

void fts_log_set_clock(uint64_t (*clock_ms)(void))
{
    logger.now_ms = clock_ms;
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

bool fts_log_level_parse(const char *text, fts_log_level_t *level)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *level = (fts_log_level_t)i;
            return true;
        }
    }
    if (strcmp(text, "warning") == 0) {
        *level = FTS_LOG_WARN;
        return true;
    }
    return false;
}

const char *fts_log_level_name(fts_log_level_t level)
{
    return level <= FTS_LOG_ERROR ? level_names[level] : "unknown";
}

bool fts_log_format_parse(const char *text, fts_log_format_t *format)
{
    if (strcmp(text, "logfmt") == 0) {
        *format = FTS_LOG_FORMAT_LOGFMT;
        return true;
    }
    if (strcmp(text, "json") == 0) {
        *format = FTS_LOG_FORMAT_JSON;
        return true;
    }
    return false;
}

void fts_log_add_secret(const char *secret)
{
    if (!secret || strlen(secret) < FTS_LOG_MIN_SECRET || logger.secret_count == MAX_SECRETS) {
        return;
    }
    for (size_t i = 0; i < logger.secret_count; i++) {
        if (strcmp(logger.secrets[i], secret) == 0) {
            return;
        }
    }
    logger.secrets[logger.secret_count++] = bson_strdup(secret);
}

void fts_log_clear_secrets(void)
{
    for (size_t i = 0; i < logger.secret_count; i++) {
        bson_free(logger.secrets[i]);
        logger.secrets[i] = NULL;
    }
    logger.secret_count = 0;
}

/* Base64 (RFC 4648, padded) of text, as HTTP Basic authentication sends it. Never NULL:
 * allocation failure aborts. */
static char *base64_encode(const char *text, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = bson_malloc((len + 2) / 3 * 4 + 1);
    size_t written = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t group = (uint32_t)(unsigned char)text[i] << 16;
        if (i + 1 < len) {
            group |= (uint32_t)(unsigned char)text[i + 1] << 8;
        }
        if (i + 2 < len) {
            group |= (uint32_t)(unsigned char)text[i + 2];
        }
        out[written++] = alphabet[(group >> 18) & 63];
        out[written++] = alphabet[(group >> 12) & 63];
        out[written++] = i + 1 < len ? alphabet[(group >> 6) & 63] : '=';
        out[written++] = i + 2 < len ? alphabet[group & 63] : '=';
    }
    out[written] = '\0';
    return out;
}

void fts_log_add_basic_credentials(const char *user, const char *password)
{
    if (!password || !*password) {
        return;
    }
    fts_log_add_secret(password);
    char *pair = bson_strdup_printf("%s:%s", user ? user : "", password);
    char *encoded = base64_encode(pair, strlen(pair));
    fts_log_add_secret(encoded);
    /* The pair itself is as secret as the password; wipe it before it is freed. */
    volatile char *p = pair;
    while (*p) {
        *p++ = '\0';
    }
    bson_free(pair);
    bson_free(encoded);
}

/* How many bytes of the secret at text match, counting a text that ends inside the secret
 * (at least FTS_LOG_MIN_SECRET bytes of it) as a match: someone cut it there. 0: none. */
static size_t secret_match(const char *text)
{
    for (size_t i = 0; i < logger.secret_count; i++) {
        const char *secret = logger.secrets[i];
        size_t n = 0;
        while (secret[n] && text[n] == secret[n]) {
            n++;
        }
        if (secret[n] == '\0' || (text[n] == '\0' && n >= FTS_LOG_MIN_SECRET)) {
            return n;
        }
    }
    return 0;
}

void fts_log_redact(const char *text, char *out, size_t size)
{
    if (size == 0) {
        return;
    }
    size_t written = 0;
    while (*text && written + 1 < size) {
        size_t matched = secret_match(text);
        if (matched) {
            for (const char *mask = "***"; *mask && written + 1 < size; mask++) {
                out[written++] = *mask;
            }
            text += matched;
        } else {
            out[written++] = *text++;
        }
    }
    out[written] = '\0';
}

size_t fts_log_safe_cut(const char *text, size_t len, size_t cut)
{
    if (cut >= len) {
        return len;
    }
    bool moved = true;
    while (moved && cut > 0) {
        moved = false;
        for (size_t i = 0; i < logger.secret_count && !moved; i++) {
            const char *secret = logger.secrets[i];
            size_t secret_len = strlen(secret);
            /* Every start that would put the cut strictly inside this secret. */
            size_t first = cut >= secret_len ? cut - secret_len + 1 : 0;
            for (size_t start = first; start < cut; start++) {
                size_t n = 0;
                while (n < secret_len && start + n < len && text[start + n] == secret[n]) {
                    n++;
                }
                if (n == secret_len || start + n == len) {
                    cut = start;
                    moved = true;
                    break;
                }
            }
        }
    }
    return cut;
}

static void format_timestamp(uint64_t ms, char *out, size_t size)
{
    time_t seconds = (time_t)(ms / 1000u);
    struct tm utc;
    gmtime_r(&seconds, &utc);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &utc);
    snprintf(out, size, "%s.%03uZ", date, (unsigned)(ms % 1000u));
}

/* logfmt values are quoted when they hold anything but plain word characters. */
static void append_logfmt_value(fts_buffer_t *line, const char *value)
{
    bool plain = *value != '\0';
    for (const char *p = value; *p; p++) {
        if (*p == ' ' || *p == '=' || *p == '"' || *p == '\\' || (unsigned char)*p < 0x20) {
            plain = false;
            break;
        }
    }
    if (plain) {
        fts_buffer_append_str(line, value);
        return;
    }
    fts_buffer_append_char(line, '"');
    fts_buffer_append_json_escaped(line, value, strlen(value));
    fts_buffer_append_char(line, '"');
}

static void emit(fts_log_level_t level, const char *component, const char *message,
                 uint64_t suppressed)
{
    char timestamp[40];
    format_timestamp(now_ms(), timestamp, sizeof timestamp);

    fts_buffer_t line = {0};
    if (logger.format == FTS_LOG_FORMAT_JSON) {
        fts_buffer_appendf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"", timestamp,
                           fts_log_level_name(level));
        fts_buffer_append_json_escaped(&line, component, strlen(component));
        fts_buffer_append_str(&line, "\",\"msg\":\"");
        fts_buffer_append_json_escaped(&line, message, strlen(message));
        fts_buffer_append_char(&line, '"');
        if (suppressed) {
            fts_buffer_appendf(&line, ",\"suppressed\":%llu", (unsigned long long)suppressed);
        }
        fts_buffer_append_char(&line, '}');
    } else {
        fts_buffer_appendf(&line, "ts=%s level=%s component=", timestamp,
                           fts_log_level_name(level));
        append_logfmt_value(&line, component);
        fts_buffer_append_str(&line, " msg=");
        append_logfmt_value(&line, message);
        if (suppressed) {
            fts_buffer_appendf(&line, " suppressed=%llu", (unsigned long long)suppressed);
        }
    }
    fts_buffer_append_char(&line, '\n');
    fwrite(line.data, 1, line.len, output());
    fflush(output());
    fts_buffer_destroy(&line);
}

/* Decides whether this warning or error is a repeat to hold back. Returns true to print, and
 * sets *suppressed to the number of repeats held back since the last printed one. */
static bool admit_repeat(fts_log_level_t level, const char *component, const char *format,
                         const char *message, uint64_t *suppressed)
{
    *suppressed = 0;
    if (level < FTS_LOG_WARN || logger.repeat_interval_ms == 0) {
        return true;
    }
    uintptr_t key = (uintptr_t)format ^ ((uintptr_t)component >> 3);
    repeat_slot_t *slot = &logger.repeats[(key >> 4) % REPEAT_SLOTS];
    uint64_t now = now_ms();
    if (slot->format == format && slot->component == component) {
        if (now - slot->window_start_ms < logger.repeat_interval_ms) {
            slot->suppressed++;
            size_t keep = strnlen(message, sizeof slot->last_message - 1);
            memcpy(slot->last_message, message, keep);
            slot->last_message[keep] = '\0';
            return false;
        }
        *suppressed = slot->suppressed;
    } else if (slot->format && slot->suppressed) {
        /* A different call site takes the slot: report what the old one held back. */
        emit(slot->level, slot->component, slot->last_message, slot->suppressed);
    }
    slot->format = format;
    slot->component = component;
    slot->level = level;
    slot->window_start_ms = now;
    slot->suppressed = 0;
    return true;
}

void fts_log(fts_log_level_t level, const char *component, const char *format, ...)
{
    if (level < logger.level) {
        return;
    }
    /* Masked whole before it is cut, so a secret at the cut cannot leave a part behind. */
    char small[FTS_LOG_MAX_MESSAGE + 64];
    va_list args;
    va_start(args, format);
    int full_len = vsnprintf(small, sizeof small, format, args);
    va_end(args);
    if (full_len < 0) {
        return;
    }
    char *raw = small;
    if ((size_t)full_len >= sizeof small) {
        raw = bson_malloc((size_t)full_len + 1);
        va_start(args, format);
        vsnprintf(raw, (size_t)full_len + 1, format, args);
        va_end(args);
    }
    /* A mask is never longer than what it hides (secrets are at least as long as "***"). */
    char *redacted = bson_malloc((size_t)full_len + 64);
    fts_log_redact(raw, redacted, (size_t)full_len + 1);
    size_t redacted_len = strlen(redacted);
    if (redacted_len > FTS_LOG_MAX_MESSAGE) {
        snprintf(redacted + FTS_LOG_MAX_MESSAGE, 64, "...(truncated %zu bytes)",
                 redacted_len - FTS_LOG_MAX_MESSAGE);
    }
    uint64_t suppressed;
    if (admit_repeat(level, component, format, redacted, &suppressed)) {
        emit(level, component, redacted, suppressed);
    }
    if (raw != small) {
        bson_free(raw);
    }
    bson_free(redacted);
}

void fts_log_flush_repeats(void)
{
    for (size_t i = 0; i < REPEAT_SLOTS; i++) {
        repeat_slot_t *slot = &logger.repeats[i];
        if (slot->format && slot->suppressed) {
            emit(slot->level, slot->component, slot->last_message, slot->suppressed);
            slot->suppressed = 0;
        }
    }
}

void fts_log_reset(void)
{
    fts_log_clear_secrets();
    logger.level = FTS_LOG_INFO;
    logger.format = FTS_LOG_FORMAT_LOGFMT;
    logger.stream = NULL;
    logger.repeat_interval_ms = FTS_LOG_DEFAULT_REPEAT_INTERVAL_MS;
    logger.now_ms = NULL;
    memset(logger.repeats, 0, sizeof logger.repeats);
}
