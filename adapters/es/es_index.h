/*
 * es_index.h - making sure the target index exists before anything is loaded into it.
 *
 * ftsync never changes an index that exists: settings and mappings of a live index are the
 * operator's (a reindex is theirs to plan). It only creates a missing one, from the JSON
 * definition file the operator configured (FTSYNC_ES_INDEX_DEFINITION), and adds the configured
 * alias to it. Several replicas may start at once; whichever creates the index first wins and
 * the others see it as existing.
 *
 * The version scheme (core/action.h) is recorded in the index it creates, as mapping metadata
 * `_meta: {"ftsync": {"version_scheme": 2}}` (on every type of a typed Elasticsearch 1.x-6.x
 * mapping), and checked before load writes anything (fts_es_index_check_version_scheme):
 * versions of different schemes do not compare, and writing scheme-2 versions over an index
 * whose documents carry scheme-1 versions would lose every write to a 409 in silence.
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
    const char *doc_type;        /* optional: the mapping type (Elasticsearch before 7), for a
                                  * definition without mappings to put the version mark in */
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

/* Returns the definition with `_meta.ftsync.version_scheme` = scheme set in its mappings
 * (added, or replacing another value; other _meta keys are kept): on the mappings themselves
 * when they are typeless (they have properties, dynamic, _meta, _source...), else on each type;
 * a definition without mappings gets {"mappings": {<doc_type>: {"_meta": ...}}}, or typeless
 * mappings without doc_type. The definition must be a JSON object (fts_es_index_definition_load);
 * false (FTS_ERROR_INPUT) when its mappings are not an object. */
bool fts_es_index_definition_mark(const fts_buffer_t *definition, const char *doc_type, int scheme,
                                  fts_buffer_t *out, fts_error_t *err);

/* Checks that the index (or every index behind the alias) name was written with version scheme
 * `scheme`, from its mappings' _meta:
 *   - marked with scheme: fine;
 *   - marked with another one: fails, FTS_ERROR_CONFIG (exit 2), naming both schemes;
 *   - not marked (made by hand, or by an ftsync before the mark existed): a sample of its
 *     documents' versions decides. Scheme 1 versions (cluster seconds << 32) are all at least
 *     2020-01-01 << 32 for anything written since 2020, far above scheme 2's until 2067: if
 *     any sampled version is that large the index is refused like a marked one; otherwise
 *     (empty, or versions that fit) it is accepted with a warning saying how to mark it.
 * Other failures are FTS_ERROR_ES (retry) or FTS_ERROR_CODE_PROTOCOL. */
bool fts_es_index_check_version_scheme(fts_es_client_t *client, const char *name, int scheme,
                                       fts_error_t *err);

/* Makes sure spec's index exists:
 *   - the alias (when given) exists, or else the index exists: nothing is changed, except that a
 *     missing alias is added to an existing index; *created = false;
 *   - otherwise the index is created with PUT /<index> and the definition file as its body,
 *     marked with the version scheme (fts_es_index_definition_mark), then the alias is added;
 *     *created = true (false if a racing replica created it first).
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
