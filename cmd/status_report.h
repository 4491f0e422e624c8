/*
 * status_report.h - what `ftsync status` reports (and the admin endpoint's /status serves):
 * the saved position and its age, snapshot progress, the extractor lease's holder, the action
 * stream with its consumer groups, consumers, pending entries and lag, the dead-letter count,
 * the index's document count, and the versions of Redis, Elasticsearch and MongoDB.
 *
 * The report is read fresh on every call, over connections of its own (blocking, with short
 * timeouts), and is read-only. A server that does not answer does not stop the report: its
 * part is left out (or null) and the failure is listed under "errors", so an operator sees
 * whatever could be read (invariant 5: the error state is visible, never a silent blank).
 * Secrets never appear: no password or API key is part of the report; error messages name a
 * server by host and port or by its URL with the password masked, as the adapters write them.
 */
#ifndef FTS_STATUS_REPORT_H
#define FTS_STATUS_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include <bson/bson.h>

#include "config.h"
#include "error.h"

/* Collects the report into report (initialised here; bson_destroy it). Returns true when every
 * configured server answered; false with err naming the first that did not (the report still
 * holds everything else, and its "errors" array every failure). Servers not configured (no
 * FTSYNC_MONGO_URI, no FTSYNC_ES_INDEX) are skipped, not failures. */
bool fts_status_report_collect(const fts_config_t *config, bson_t *report, fts_error_t *err);

/* The report as JSON (relaxed extended JSON of the document above: numbers plain, no
 * $numberLong), into *json (bson_free it; always set, even on false). Returns as collect. */
bool fts_status_report_json(const fts_config_t *config, char **json, fts_error_t *err);

/* Writes the report for people: one "name: value" line per field, nested parts indented. */
void fts_status_report_print_text(const bson_t *report, FILE *out);

#endif
