/*
 * log_tail.c - the last lines of a test server's log (see log_tail.h).
 */
#include "log_tail.h"

#include <stdio.h>

#include "buffer.h"

/* Test servers' logs stay small; a bigger one is reported rather than read. */
#define MAX_LOG_BYTES (64u * 1024u * 1024u)

void fts_test_print_log_tail(const char *who, const char *path, unsigned lines)
{
    fts_buffer_t text = {0};
    fts_error_t err;
    if (!fts_buffer_read_file(&text, path, MAX_LOG_BYTES, &err)) {
        fprintf(stderr, "%s: no log to show: %s\n", who, err.message);
        fts_buffer_destroy(&text);
        return;
    }
    const char *start = text.data + text.len;
    if (start > text.data && start[-1] == '\n') {
        start--; /* the last line's own newline does not start another line */
    }
    unsigned seen = 0;
    while (start > text.data && !(start[-1] == '\n' && ++seen == lines)) {
        start--;
    }
    fprintf(stderr, "---- last lines of %s ----\n%s%s---- end of log ----\n", path, start,
            (text.len > 0 && text.data[text.len - 1] != '\n') ? "\n" : "");
    fts_buffer_destroy(&text);
}
