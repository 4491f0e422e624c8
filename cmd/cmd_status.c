/*
 * cmd_status.c - `ftsync status [--json]`: how far behind the pipeline is and whether its
 * parts answer (status_report.h has what is reported and how it is collected).
 *
 * Exit status: 0 when every configured server answered, 1 when one did not (everything else
 * is still printed, and the failures are listed under "errors"), 2 on bad usage or settings.
 */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "ops.h"
#include "status_report.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: ftsync status [--json]\n\n"
                 "  --json   print the report as one JSON object (what /status serves)\n\n"
                 "Reports the saved position and its age, snapshot progress, the extractor lease, "
                 "the stream's\nlength, each consumer group's consumers, pending entries and "
                 "lag, dead letters, the index's\ndocument count and the servers' versions. Exit "
                 "status 1 when a server did not answer.\n");
}

int fts_cmd_status(int argc, char **argv)
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return FTS_EXIT_OK;
        } else {
            fprintf(stderr, "ftsync status: unknown option %s\n", argv[i]);
            usage(stderr);
            return FTS_EXIT_USAGE;
        }
    }
    fts_config_t config;
    memset(&config, 0, sizeof config);
    if (!fts_cmd_load_config(&config, 0)) {
        fts_config_cleanup(&config);
        return FTS_EXIT_USAGE;
    }
    fts_error_t err;
    bson_t report;
    bool ok = fts_status_report_collect(&config, &report, &err);
    if (json) {
        char *text = bson_as_relaxed_extended_json(&report, NULL);
        printf("%s\n", text);
        bson_free(text);
    } else {
        fts_status_report_print_text(&report, stdout);
    }
    if (!ok) {
        fprintf(stderr, "ftsync status: %s\n", err.message);
    }
    bson_destroy(&report);
    fts_config_cleanup(&config);
    return ok ? FTS_EXIT_OK : FTS_EXIT_FAILURE;
}
