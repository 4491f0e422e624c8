/*
 * main.c - the ftsync binary: dispatches to one subcommand.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "ops.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command_t;

static const command_t commands[] = {
    {"config", fts_cmd_config, "print the effective configuration (--help lists every setting)"},
    {"init-index", fts_cmd_init_index,
     "create the index (and alias) from its definition if absent"},
    {"check", fts_cmd_check, "check that Redis and Elasticsearch answer and the index exists"},
    {"extract", fts_cmd_extract,
     "follow the MongoDB collection and queue its changes in the Redis stream"},
    {"load", fts_cmd_load,
     "bulk-index the queued actions into Elasticsearch (one consumer of the group)"},
    {"run", fts_cmd_run, "extract and load together, supervised, on one machine"},
    {"reset-token", fts_cmd_reset_token,
     "show, clear, or move (--to-time, --to-token) the saved change-stream position"},
    {"status", fts_cmd_status,
     "saved position, lease, stream, consumer groups, lag, dead letters, versions"},
    {"dlq", fts_cmd_dlq, "list, show, replay or purge dead letters"},
    {"verify", fts_cmd_verify, "compare the index with the collection (--repair queues the fixes)"},
};

static void print_usage(FILE *out)
{
    fprintf(out, "usage: ftsync <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "\nftsync <command> --help describes a command; ftsync --version prints the "
                 "version.\nSettings come from FTSYNC_* environment variables: see ftsync "
                 "config --help.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return FTS_EXIT_USAGE;
    }
    /* hiredis and libcurl write to sockets with plain write(): a peer that hung up must be an
     * error to handle, never a SIGPIPE that kills the process. */
    signal(SIGPIPE, SIG_IGN);
    const char *name = argv[1];
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("ftsync %s\n", FTSYNC_VERSION);
        return FTS_EXIT_OK;
    }
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        print_usage(stdout);
        return FTS_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "ftsync: unknown command \"%s\"\n\n", name);
    print_usage(stderr);
    return FTS_EXIT_USAGE;
}
