/*
 * cmd_init_index.c - `ftsync init-index`: creates the index (and its alias) from the index
 * definition file when absent, and leaves an existing one alone. `ftsync load` does the same
 * at start; this command lets an operator do it ahead of time, e.g. from a Kubernetes Job.
 */
#include <stdio.h>

#include "cmd.h"
#include "es_index.h"
#include "log.h"

static const char init_index_help[] =
    "usage: ftsync init-index\n\n"
    "Creates FTSYNC_ES_INDEX from FTSYNC_ES_INDEX_DEFINITION (and the alias\n"
    "FTSYNC_ES_ALIAS, if set) unless it exists. Exit status: 0 done, 1 the\n"
    "cluster refused or could not be reached, 2 bad configuration.\n";

int fts_cmd_init_index(int argc, char **argv)
{
    int usage_status = FTS_EXIT_OK;
    if (!fts_cmd_no_arguments(argc, argv, "init-index", init_index_help, &usage_status)) {
        return usage_status;
    }

    int status = FTS_EXIT_FAILURE;
    fts_es_client_t *client = NULL;
    fts_error_t err;
    fts_config_t config;
    if (!fts_cmd_load_config(&config, FTS_ROLE_LOAD)) {
        status = FTS_EXIT_USAGE;
        goto cleanup;
    }
    client = fts_cmd_es_client_new(&config, &err);
    if (!client) {
        fts_log(FTS_LOG_ERROR, "es", "%s", err.message);
        status = err.domain == FTS_ERROR_CONFIG ? FTS_EXIT_USAGE : FTS_EXIT_FAILURE;
        goto cleanup;
    }
    fts_es_index_spec_t spec = {.index = config.es_index,
                                .alias = config.es_alias,
                                .definition_path = config.es_index_definition,
                                .doc_type = config.es_doc_type};
    bool created = false;
    if (!fts_es_index_ensure(client, &spec, &created, &err)) {
        fts_log(FTS_LOG_ERROR, "es", "cannot ensure index %s: %s", config.es_index, err.message);
        /* An invalid index name, or a definition file (FTSYNC_ES_INDEX_DEFINITION) that cannot
         * be read or is not a JSON object, is a bad setting: it will not fix itself. */
        if (err.domain == FTS_ERROR_INPUT) {
            err.domain = FTS_ERROR_CONFIG;
        }
        status = err.domain == FTS_ERROR_CONFIG ? FTS_EXIT_USAGE : FTS_EXIT_FAILURE;
        goto cleanup;
    }
    if (!created) {
        /* The adapter logs a creation itself; say so when nothing was done, too. */
        fts_log(FTS_LOG_INFO, "es", "index %s already exists; left as it is",
                config.es_alias ? config.es_alias : config.es_index);
    }
    status = FTS_EXIT_OK;
cleanup:
    fts_es_client_destroy(client);
    fts_config_cleanup(&config);
    return status;
}
