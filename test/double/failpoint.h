/*
 * failpoint.h - the failCommand fail point, as mongod offers it with enableTestCommands.
 *
 * configureFailPoint {configureFailPoint: "failCommand", mode: "alwaysOn" | "off" |
 * {times: n} | {skip: n}, data: {failCommands: [...], errorCode, errorLabels, closeConnection,
 * blockConnection, blockTimeMS, writeConcernError, appName}} arms it. Each command whose name is
 * listed (and, with appName, whose connection's handshake named that application) then: waits
 * blockTimeMS if blockConnection (without holding up other clients), closes the connection if
 * closeConnection, fails with errorCode (labels: errorLabels if given, else mongod's usual
 * ones) if given, or runs normally, with writeConcernError appended to its reply if given.
 * configureFailPoint itself is never failed, so a test can always switch the fail point off.
 */
#ifndef FTS_DOUBLE_FAILPOINT_H
#define FTS_DOUBLE_FAILPOINT_H

#include "errors.h"

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

/* What a triggered fail point asks of one command. */
typedef struct {
    bool triggered;
    bool block;
    int64_t block_ms;
    bool close;
    bool has_error;
    int error_code;
    bool has_labels;
    bson_t *labels; /* array; owned */
    bson_t *wce;    /* writeConcernError document; owned, NULL if none */
} fts_double_fail_action_t;

void fts_double_fail_action_clear(fts_double_fail_action_t *action);

typedef enum {
    FTS_DOUBLE_FP_OFF,
    FTS_DOUBLE_FP_ALWAYS,
    FTS_DOUBLE_FP_TIMES,
    FTS_DOUBLE_FP_SKIP
} fts_double_fp_mode_t;

typedef struct {
    fts_double_fp_mode_t mode;
    int64_t times_left;
    int64_t skip_left;
    uint64_t entered; /* how often it has fired, as configureFailPoint's reply "count" */
    bson_t *data;     /* owned copy of data */
} fts_double_failpoint_t;

void fts_double_failpoint_init(fts_double_failpoint_t *fp);
void fts_double_failpoint_destroy(fts_double_failpoint_t *fp);

/* Handles the configureFailPoint command body; fills reply with {count}. */
bool fts_double_failpoint_configure(fts_double_failpoint_t *fp, const bson_t *cmd, bson_t *reply,
                                    fts_double_error_t *err);

/* Decides whether the fail point fires for this command; fills action (cleared first). */
bool fts_double_failpoint_check(fts_double_failpoint_t *fp, const char *command,
                                const char *app_name, fts_double_fail_action_t *action);

#endif
