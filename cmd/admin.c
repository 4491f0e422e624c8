/*
 * admin.c - the admin endpoint's set-up shared by extract, load and run (admin.h).
 *
 * /status serves what `ftsync status --json` prints (cmd/status_report.c), read on the
 * endpoint's thread with the config given to fts_cmd_admin_serve (extract, load and run keep it
 * alive until fts_cmd_admin_cleanup). That read blocks the thread, probes included, so its
 * server timeouts are capped (STATUS_TIMEOUT_MS) below a probe's usual period.
 */
#include "admin.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "status_report.h"

/* Longest a server may take to answer a /status read (Redis and Elasticsearch; MongoDB's server
 * selection is capped at 5 s by its admin client). */
#define STATUS_TIMEOUT_MS 2000

static int64_t capped(int64_t value)
{
    return value > STATUS_TIMEOUT_MS ? STATUS_TIMEOUT_MS : value;
}

static bool serve_status_json(void *context, char **json, fts_error_t *err)
{
    /* A shallow copy, read only and never cleaned up: only the timeouts differ. */
    fts_config_t quick = *(const fts_config_t *)context;
    quick.redis_connect_timeout_ms = capped(quick.redis_connect_timeout_ms);
    quick.redis_command_timeout_ms = capped(quick.redis_command_timeout_ms);
    quick.es_connect_timeout_ms = capped(quick.es_connect_timeout_ms);
    quick.es_request_timeout_ms = capped(quick.es_request_timeout_ms);
    return fts_status_report_json(&quick, json, err);
}

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
        .status = serve_status_json,
        .status_context = (void *)config,
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
