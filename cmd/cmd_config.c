/*
 * cmd_config.c - `ftsync config`: prints the effective configuration, secrets masked, or with
 * --help the whole settings table. Exits 2 when the configuration is not valid.
 */
#include <getopt.h>
#include <stdio.h>

#include "cmd.h"

static void print_help(FILE *out)
{
    fts_buffer_t help = {0};
    fprintf(out, "usage: ftsync config [--role extract|load|all]\n\n"
                 "Prints every setting as NAME=value with where the value came from; secrets\n"
                 "and URL passwords are shown as ***. --role checks only the settings that role\n"
                 "requires (default: all).\n\n");
    fts_config_print_help(&help);
    fwrite(help.data, 1, help.len, out);
    fts_buffer_destroy(&help);
}

int fts_cmd_config(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'}, {"role", required_argument, NULL, 'r'}, {0}};
    unsigned roles = FTS_ROLE_ALL;
    int option;
    optind = 1;
    while ((option = getopt_long(argc, argv, "hr:", options, NULL)) != -1) {
        switch (option) {
        case 'h':
            print_help(stdout);
            return FTS_EXIT_OK;
        case 'r':
            if (!fts_cmd_parse_role(optarg, &roles)) {
                fprintf(stderr, "ftsync config: unknown role \"%s\" (extract, load, all)\n",
                        optarg);
                return FTS_EXIT_USAGE;
            }
            break;
        default:
            fprintf(stderr, "usage: ftsync config [--role extract|load|all] [--help]\n");
            return FTS_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ftsync config: unexpected argument \"%s\"\n", argv[optind]);
        return FTS_EXIT_USAGE;
    }

    fts_config_t config;
    if (!fts_cmd_load_config(&config, roles)) {
        fts_config_cleanup(&config);
        return FTS_EXIT_USAGE;
    }
    fts_buffer_t out = {0};
    fts_config_print(&config, &fts_cmd_config_checks, &out);
    fwrite(out.data, 1, out.len, stdout);
    fts_buffer_destroy(&out);
    fts_config_cleanup(&config);
    return FTS_EXIT_OK;
}
