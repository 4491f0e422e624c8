/*
 * es_index.h - making sure the target index exists before anything is loaded into it.
 *
 * ftsync never changes an index that exists: settings and mappings of a live index are the
 * operator's (a reindex is theirs to plan). It only creates a missing one, from the JSON
 * definition file the operator configured (FTSYNC_ES_INDEX_DEFINITION), and adds the configured
 * alias to it. Several replicas may start at once; whichever creates the index first wins and
 * the others see it as existing.
 */
#ifndef FTS_ES_INDEX_H
#define FTS_ES_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "buffer.h"
#include "error.h"
#include "es_client.h"

typedef struct {
    const char *index;           /* the concrete index to create when missing */
    const char *alias;           /* optional: an alias pointing at it; when it exists, the
                                  * index behind it is taken as ready */
    const char *definition_path; /* optional: JSON file with the index's settings and mappings */
} fts_es_index_spec_t;

/* Elasticsearch's longest index name, in bytes. */
#define FTS_ES_INDEX_NAME_MAX 255

/* Checks name against Elasticsearch's rules for index (and alias) names: not empty, at most
 * 255 bytes, no upper-case letters, none of \ / * ? " < > | , # : or space, not starting with
 * - _ or +, not "." or "..". `what` names the setting in the error ("index", "alias"). */
bool fts_es_index_name_validate(const char *name, const char *what, fts_error_t *err);

/* Reads the definition file into out (replacing its content) and checks that it holds exactly
 * one JSON object. The error names the file and, for bad JSON, libbson's parse message. */
bool fts_es_index_definition_load(const char *path, fts_buffer_t *out, fts_error_t *err);

/* Makes sure spec's index exists:
 *   - the alias (when given) exists, or else the index exists: nothing is changed, except that a
 *     missing alias is added to an existing index; *created = false;
 *   - otherwise the index is created with PUT /<index> and the definition file as its body,
 *     then the alias is added; *created = true (false if a racing replica created it first).
 * A missing index without a definition file configured is an error, as is any refusal by
 * Elasticsearch (quoted). `created` may be NULL. */
bool fts_es_index_ensure(fts_es_client_t *client, const fts_es_index_spec_t *spec, bool *created,
                         fts_error_t *err);

/* Elasticsearch's default index.gc_deletes: how long a delete's version is remembered. */
#define FTS_ES_DEFAULT_GC_DELETES_MS 60000

/* The shortest index.gc_deletes of the index (or of the indices behind an alias), the default
 * when unset. Invariant 3 needs it longer than any replay window: a stale index action arriving
 * after the tombstone of a newer delete was forgotten would bring the document back. */
bool fts_es_index_gc_deletes_ms(fts_es_client_t *client, const char *name, uint64_t *ms,
                                fts_error_t *err);

#endif
