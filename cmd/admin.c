/*
 * admin.c - the admin endpoint's set-up shared by extract, load and run (admin.h).
 *
 * /status is routed to a callback (fts_admin_options_t.status); `ftsync status --json` is not
 * part of this build, so none is given and /status answers 501. To connect it: a callback
 * calling fts_status_report_json(config, json, err) with .status_context = the config given to
 * fts_cmd_admin_serve (extract, load and run keep it alive until fts_cmd_admin_cleanup). It
 * blocks the endpoint's thread while it runs, probes included.
 */
#include "admin.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

bool fts_cmd_admin_metrics(fts_cmd_admin_t *admin)
{
    memset(admin, 0, sizeof *admin);
    const char *fd_text = getenv(FTS_RUN_METRICS_FD_VARIABLE);
    if (fd_text && *fd_text) {
        char *end = NULL;
        long fd = strtol(fd_text, &end, 10);
        if (!end || *end || fd < 0 || fd > 65535) {
            fts_log(FTS_LOG_ERROR, "admin", "%s=%s is not a file descriptor",
                    FTS_RUN_METRICS_FD_VARIABLE, fd_text);
            return false;
        }
        fts_error_t err;
        admin->metrics = fts_metrics_adopt_fd((int)fd, &err);
        if (!admin->metrics) {
            fts_log(FTS_LOG_ERROR, "admin", "%s", err.message);
            return false;
        }
    } else {
        admin->metrics = fts_metrics_new(FTSYNC_VERSION);
    }
    fts_metrics_install(admin->metrics);
    return true;
}

bool fts_cmd_admin_serve(fts_cmd_admin_t *admin, const fts_config_t *config, unsigned roles,
                         fts_admin_check_fn check, void *check_context)
{
    if (!config->admin_addr || strcmp(config->admin_addr, "off") == 0) {
        return true;
    }
    fts_admin_options_t options = {
        .address = config->admin_addr,
        .metrics = admin->metrics,
        .roles = roles,
        .stall_ms = fts_config_health_stall_ms(config),
        .check = check,
        .check_context = check_context,
        .status = NULL, /* `ftsync status --json` is not in this build: 501 */
    };
    fts_error_t err;
    admin->server = fts_admin_server_start(&options, &err);
    if (!admin->server) {
        fts_log(FTS_LOG_ERROR, "admin", "%s", err.message);
        return false;
    }
    return true;
}

void fts_cmd_admin_cleanup(fts_cmd_admin_t *admin)
{
    fts_admin_server_stop(admin->server);
    admin->server = NULL;
    fts_metrics_destroy(admin->metrics); /* uninstalls it */
    admin->metrics = NULL;
}
