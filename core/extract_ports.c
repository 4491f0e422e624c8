/*
 * extract_ports.c - the small helpers that go with the port types of extract_ports.h: freeing
 * a saved position read back through the queue port, and the names of token kinds (as they
 * travel in frames and are saved in Redis) and of lease states.
 */
#include <string.h>

#include "extract_ports.h"

void fts_position_cleanup(fts_position_t *position)
{
    if (!position) {
        return;
    }
    bson_free(position->token);
    bson_free(position->last_id);
    memset(position, 0, sizeof *position);
}

const char *fts_token_kind_name(fts_token_kind_t kind)
{
    switch (kind) {
    case FTS_TOKEN_RESUME:
        return "resume";
    case FTS_TOKEN_START_AFTER:
        return "start_after";
    case FTS_TOKEN_START_AT:
        return "start_at";
    }
    return "?";
}

bool fts_token_kind_parse(const char *text, fts_token_kind_t *kind)
{
    if (text && strcmp(text, "resume") == 0) {
        *kind = FTS_TOKEN_RESUME;
        return true;
    }
    if (text && strcmp(text, "start_after") == 0) {
        *kind = FTS_TOKEN_START_AFTER;
        return true;
    }
    if (text && strcmp(text, "start_at") == 0) {
        *kind = FTS_TOKEN_START_AT;
        return true;
    }
    return false;
}

const char *fts_lease_state_name(fts_lease_state_t state)
{
    switch (state) {
    case FTS_LEASE_ACQUIRED:
        return "acquired";
    case FTS_LEASE_HELD:
        return "held";
    case FTS_LEASE_LOST:
        return "lost";
    case FTS_LEASE_RELEASED:
        return "released";
    }
    return "?";
}
