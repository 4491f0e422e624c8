/*
 * failpoint.h - the test fail points the double offers, as mongod offers them with
 * enableTestCommands: failCommand and failGetMoreAfterCursorCheckout.
 *
 * configureFailPoint {configureFailPoint: "failCommand", mode: "alwaysOn" | "off" |
 * {times: n} | {skip: n}, data: {failCommands: [...], errorCode, errorLabels, closeConnection,
 * blockConnection, blockTimeMS, writeConcernError, appName}} arms failCommand. Each command whose
 * name is listed (and, with appName, whose connection's handshake named that application) then:
 * waits blockTimeMS if blockConnection (without holding up other clients), closes the connection
 * if closeConnection, fails with errorCode if given, or runs normally, with writeConcernError
 * appended to its reply if given. It acts before the command runs, so, as on mongod, a getMore
 * has not checked its cursor out yet and an injected error gets only labels that do not depend
 * on the cursor: errorLabels if given, else none of ResumableChangeStreamError
 * (https://github.com/mongodb/mongo/wiki/The-%22failCommand%22-fail-point).
 *
 * {configureFailPoint: "failGetMoreAfterCursorCheckout", mode, data: {errorCode, appName}} fails
 * getMores after they checked their cursor out, with errorCode (InternalError, 1, if none); the
 * failed getMore deletes its cursor, and the error gets mongod's usual labels, so a resumable
 * code on a change stream's getMore carries ResumableChangeStreamError
 * (src/mongo/db/commands/getmore_cmd.cpp; the Change Streams spec tests use it, SERVER-46091).
 *
 * configureFailPoint itself is never failed, so a test can always switch a fail point off.
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
    const char *name;          /* as configureFailPoint names it; static */
    const char *fixed_command; /* NULL: data.failCommands lists the commands (failCommand);
                                * else the one command it acts in ("getMore") */
    fts_double_fp_mode_t mode;
    int64_t times_left;
    int64_t skip_left;
    uint64_t entered; /* how often it has fired, as configureFailPoint's reply "count" */
    bson_t *data;     /* owned copy of data */
} fts_double_failpoint_t;

/* name and fixed_command are static strings (see the struct). */
void fts_double_failpoint_init(fts_double_failpoint_t *fp, const char *name,
                               const char *fixed_command);
void fts_double_failpoint_destroy(fts_double_failpoint_t *fp);

/* Handles the configureFailPoint command body for whichever of the count fail points fps it
 * names (BadValue for a name none of them has); fills reply with {count}. */
bool fts_double_failpoint_configure(fts_double_failpoint_t *const *fps, size_t count,
                                    const bson_t *cmd, bson_t *reply, fts_double_error_t *err);

/* Decides whether the fail point fires for this command; fills action (cleared first). For a
 * fail point with a fixed command only has_error/error_code are filled. */
bool fts_double_failpoint_check(fts_double_failpoint_t *fp, const char *command,
                                const char *app_name, fts_double_fail_action_t *action);

#endif
