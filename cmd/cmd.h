/*
 * cmd.h - the subcommands of the ftsync binary and what they share.
 *
 * Exit statuses, the same for every subcommand so that scripts and Kubernetes can tell a
 * mistake in the set-up from a server that is down:
 *   0  done
 *   1  a server could not be reached or refused (worth retrying later)
 *   2  bad usage or bad configuration (retrying will not help until it is fixed)
 *   3  stopped in a clear error state that needs an operator (extract: an event it cannot
 *      follow, or history lost with FTSYNC_ON_HISTORY_LOST=stop); the log says what to do
 */
#ifndef FTS_CMD_H
#define FTS_CMD_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "es_client.h"
#include "extract.h"
#include "mongo_source.h"
#include "redis_conn.h"

#define FTS_EXIT_OK      0
#define FTS_EXIT_FAILURE 1
#define FTS_EXIT_USAGE   2
#define FTS_EXIT_STOPPED 3

int fts_cmd_config(int argc, char **argv);
int fts_cmd_init_index(int argc, char **argv);
int fts_cmd_check(int argc, char **argv);
int fts_cmd_extract(int argc, char **argv);
int fts_cmd_reset_token(int argc, char **argv);
int fts_cmd_load(int argc, char **argv);
int fts_cmd_run(int argc, char **argv);

/* The adapters' URL checkers, for fts_config_load and fts_config_print. */
extern const fts_config_checks_t fts_cmd_config_checks;

/* Loads the configuration for the given roles, applies its log settings, and on failure
 * prints every problem to stderr. Returns false when the command must exit with status 2. */
bool fts_cmd_load_config(fts_config_t *config, unsigned roles);

/* Parses a --role value (extract, load, all) into fts_role_t bits; false if unknown. */
bool fts_cmd_parse_role(const char *text, unsigned *roles);

/* The arguments of a command that takes none but --help (-h): true when the command should run;
 * false with *status FTS_EXIT_OK after printing help on stdout, or FTS_EXIT_USAGE after naming
 * the unknown option or unexpected argument, and the usage line, on stderr. */
bool fts_cmd_no_arguments(int argc, char **argv, const char *name, const char *help, int *status);

/* Connects to the Redis at url with the configuration's timeouts (adapters/redis defaults for
 * reconnecting). */
fts_redis_t *fts_cmd_redis_connect(const fts_config_t *config, const char *url, fts_error_t *err);

/* The Elasticsearch client options the configuration describes (strings borrowed from it). */
void fts_cmd_es_options(const fts_config_t *config, fts_es_options_t *options);

/* What the extract loops need from the configuration (strings borrowed from it). */
void fts_cmd_extract_options(const fts_config_t *config, fts_extract_options_t *options);

/* The MongoDB source's options, from the settings, as extract uses them (`ftsync check` then
 * shortens call_timeout_ms). collections is {FTSYNC_MONGO_COLLECTION, NULL}, borrowed for the
 * database scope's filter. */
void fts_cmd_mongo_source_options(const fts_config_t *config, fts_mongo_source_options_t *options,
                                  const char **collections);

/* This loader's consumer name: FTSYNC_CONSUMER_NAME, else the pod name inside Kubernetes
 * ($HOSTNAME), else <host>-<pid>. */
void fts_cmd_consumer_name(const fts_config_t *config, char *name, size_t size);

/* Builds the Elasticsearch client the configuration describes. */
fts_es_client_t *fts_cmd_es_client_new(const fts_config_t *config, fts_error_t *err);

#endif
