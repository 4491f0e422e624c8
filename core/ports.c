/*
 * ports.c - the small helpers that go with the port types of ports.h: freeing a saved position
 * read back through the queue port, and the names of token kinds as they travel in frames.
 */
#include <stdlib.h>
#include <string.h>

#include "ports.h"

void fts_position_cleanup(fts_position_t *position)
{
    if (!position) {
        return;
    }
    free(position->token);
    free(position->last_id);
    memset(position, 0, sizeof *position);
}

const char *fts_token_kind_name(fts_token_kind_t kind)
{
    return kind == FTS_TOKEN_START_AFTER ? "start_after" : "resume";
}

bool fts_token_kind_parse(const char *text, fts_token_kind_t *kind)
{
    if (strcmp(text, "resume") == 0) {
        *kind = FTS_TOKEN_RESUME;
        return true;
    }
    if (strcmp(text, "start_after") == 0) {
        *kind = FTS_TOKEN_START_AFTER;
        return true;
    }
    return false;
}
