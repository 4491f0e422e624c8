/*
 * bulk_body.h - the NDJSON body of an Elasticsearch _bulk request, built from queued actions.
 *
 * Pure and unit-tested (golden NDJSON). Every action carries the external version of its
 * change (invariant 3), so that a replayed or late action never overwrites a newer one:
 *
 *   {"index":{"_index":"apps","_id":"42","version":7,"version_type":"external"}}
 *   {"name":"..."}
 *   {"delete":{"_index":"apps","_id":"43","version":9,"version_type":"external"}}
 *
 * With a document type configured (clusters before 7.x), "_type":"<type>" follows "_index".
 * With an ns field configured (FTSYNC_NS_FIELD, default _ftsync_ns), an index action's
 * document gets that field first, holding the entry's ns ("db.collection"):
 *
 *   {"_ftsync_ns":"steam.apps","name":"..."}
 *
 * so that a drop or sweep can tell, in an index or alias shared by several collections, which
 * documents came from its ns (load_sweep.h). The field is added as text in front of the
 * document's own fields; a document that has a field of that name itself would hold it twice
 * (Elasticsearch 6+ refuses that, and the action is dead-lettered with its reason).
 * The body line is the entry's JSON with any raw CR or LF replaced by a space: in valid JSON
 * they can only be whitespace between tokens, and one would otherwise split the line and
 * break the framing of every action after it.
 */
#ifndef FTS_BULK_BODY_H
#define FTS_BULK_BODY_H

#include <stdbool.h>
#include <stddef.h>

#include "action.h"
#include "buffer.h"
#include "error.h"

typedef struct {
    const char *index;    /* the _index of every action (an alias works too) */
    const char *doc_type; /* NULL: typeless (Elasticsearch 7+, OpenSearch); else the _type */
    const char *ns_field; /* NULL: documents are written as they are; else the field that gets
                           * the action's ns */
} fts_bulk_target_t;

/* Appends the lines of one index or delete action to out. Any other op (drop, sweep) is not
 * a bulk action: FTS_ERROR_INPUT naming it, and out is left unchanged. So is an action that
 * cannot be framed: no id, or an index without a body (fts_action_validate refuses those
 * before they are queued; this guards against a caller that skipped it). */
bool fts_bulk_append_action(fts_buffer_t *out, const fts_bulk_target_t *target,
                            const fts_action_t *action, fts_error_t *err);

/* The bytes fts_bulk_append_action would append (exactly), for the batch size limit: 0 for
 * an action it refuses. */
size_t fts_bulk_action_size(const fts_bulk_target_t *target, const fts_action_t *action);

#endif
