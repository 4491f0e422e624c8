/*
 * failpoint.c - the failCommand and failGetMoreAfterCursorCheckout fail points (see
 * failpoint.h).
 */
#include "failpoint.h"

#include "bsonval.h"

#include <string.h>

void fts_double_fail_action_clear(fts_double_fail_action_t *action)
{
    if (action->labels) {
        bson_destroy(action->labels);
    }
    if (action->wce) {
        bson_destroy(action->wce);
    }
    memset(action, 0, sizeof *action);
}

void fts_double_failpoint_init(fts_double_failpoint_t *fp, const char *name,
                               const char *fixed_command)
{
    memset(fp, 0, sizeof *fp);
    fp->name = name;
    fp->fixed_command = fixed_command;
}

void fts_double_failpoint_destroy(fts_double_failpoint_t *fp)
{
    if (fp->data) {
        bson_destroy(fp->data);
    }
    memset(fp, 0, sizeof *fp);
}

bool fts_double_failpoint_configure(fts_double_failpoint_t *const *fps, size_t count,
                                    const bson_t *cmd, bson_t *reply, fts_double_error_t *err)
{
    bson_value_t name, mode, data;
    if (!fts_double_doc_get(cmd, "configureFailPoint", &name) ||
        name.value_type != BSON_TYPE_UTF8) {
        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                    "configureFailPoint needs the fail point's name");
    }
    fts_double_failpoint_t *fp = NULL;
    for (size_t i = 0; i < count && !fp; i++) {
        if (strcmp(name.value.v_utf8.str, fps[i]->name) == 0) {
            fp = fps[i];
        }
    }
    if (!fp) {
        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                    "Cannot find failPoint named %s (ftsync-mongo-double only has "
                                    "failCommand and failGetMoreAfterCursorCheckout)",
                                    name.value.v_utf8.str);
    }
    if (!fts_double_doc_get(cmd, "mode", &mode)) {
        return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE, "Missing mode");
    }
    fts_double_fp_mode_t new_mode;
    int64_t n = 0;
    if (mode.value_type == BSON_TYPE_UTF8 && strcmp(mode.value.v_utf8.str, "alwaysOn") == 0) {
        new_mode = FTS_DOUBLE_FP_ALWAYS;
    } else if (mode.value_type == BSON_TYPE_UTF8 && strcmp(mode.value.v_utf8.str, "off") == 0) {
        new_mode = FTS_DOUBLE_FP_OFF;
    } else if (mode.value_type == BSON_TYPE_DOCUMENT) {
        bson_t m;
        bson_value_t v;
        fts_double_value_as_doc(&mode, &m);
        if (fts_double_doc_get(&m, "times", &v) && fts_double_value_is_number(&v)) {
            new_mode = FTS_DOUBLE_FP_TIMES;
            n = fts_double_value_as_int64(&v);
        } else if (fts_double_doc_get(&m, "skip", &v) && fts_double_value_is_number(&v)) {
            new_mode = FTS_DOUBLE_FP_SKIP;
            n = fts_double_value_as_int64(&v);
        } else {
            return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                        "mode must be 'alwaysOn', 'off', {times: n} or {skip: n} "
                                        "(activationProbability is not supported)");
        }
        if (n < 0) {
            return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                        "mode's count must be non-negative");
        }
    } else {
        return fts_double_error_set(err, FTS_DOUBLE_E_TYPE_MISMATCH,
                                    "'mode' must be a string or JSON object");
    }
    bool has_data = fts_double_doc_get(cmd, "data", &data);
    if (has_data && data.value_type != BSON_TYPE_DOCUMENT) {
        return fts_double_error_set(err, FTS_DOUBLE_E_TYPE_MISMATCH, "'data' must be an object");
    }
    if (new_mode != FTS_DOUBLE_FP_OFF && !fp->fixed_command) {
        bson_t d;
        bson_value_t list;
        if (!has_data || !fts_double_value_as_doc(&data, &d) ||
            !fts_double_doc_get(&d, "failCommands", &list) || list.value_type != BSON_TYPE_ARRAY) {
            return fts_double_error_set(err, FTS_DOUBLE_E_BAD_VALUE,
                                        "failCommand requires data.failCommands, an array of "
                                        "command names");
        }
    }
    /* mongod reports how often the fail point fired before this change. */
    bson_append_int64(reply, "count", 5, (int64_t)fp->entered);
    if (fp->data) {
        bson_destroy(fp->data);
        fp->data = NULL;
    }
    fp->mode = new_mode;
    fp->times_left = new_mode == FTS_DOUBLE_FP_TIMES ? n : 0;
    fp->skip_left = new_mode == FTS_DOUBLE_FP_SKIP ? n : 0;
    fp->entered = 0;
    if (new_mode == FTS_DOUBLE_FP_TIMES && n == 0) {
        fp->mode = FTS_DOUBLE_FP_OFF;
    }
    if (has_data) {
        bson_t d;
        fts_double_value_as_doc(&data, &d);
        fp->data = bson_copy(&d);
    }
    return true;
}

bool fts_double_failpoint_check(fts_double_failpoint_t *fp, const char *command,
                                const char *app_name, fts_double_fail_action_t *action)
{
    fts_double_fail_action_clear(action);
    if (fp->mode == FTS_DOUBLE_FP_OFF || strcmp(command, "configureFailPoint") == 0 ||
        (!fp->data && !fp->fixed_command)) {
        return false;
    }
    bson_iter_t it, list;
    bool listed = fp->fixed_command && strcmp(command, fp->fixed_command) == 0;
    if (!fp->fixed_command && bson_iter_init_find(&it, fp->data, "failCommands") &&
        BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &list)) {
        while (!listed && bson_iter_next(&list)) {
            listed =
                BSON_ITER_HOLDS_UTF8(&list) && strcmp(bson_iter_utf8(&list, NULL), command) == 0;
        }
    }
    if (!listed) {
        return false;
    }
    bson_value_t v;
    if (fp->data && fts_double_doc_get(fp->data, "appName", &v) && v.value_type == BSON_TYPE_UTF8 &&
        (!app_name || strcmp(app_name, v.value.v_utf8.str) != 0)) {
        return false;
    }
    if (fp->mode == FTS_DOUBLE_FP_SKIP && fp->skip_left > 0) {
        fp->skip_left--;
        return false;
    }
    if (fp->mode == FTS_DOUBLE_FP_TIMES && --fp->times_left <= 0) {
        fp->mode = FTS_DOUBLE_FP_OFF;
    }
    fp->entered++;

    action->triggered = true;
    if (fp->fixed_command) {
        /* failGetMoreAfterCursorCheckout: an error, InternalError unless data names one; its
         * labels are the usual ones (errorLabels is failCommand's alone). */
        action->has_error = true;
        action->error_code = FTS_DOUBLE_E_INTERNAL;
        if (fp->data && fts_double_doc_get(fp->data, "errorCode", &v) &&
            fts_double_value_is_number(&v)) {
            action->error_code = (int)fts_double_value_as_int64(&v);
        }
        return true;
    }
    if (fts_double_doc_get(fp->data, "blockConnection", &v) && fts_double_value_truthy(&v)) {
        action->block = true;
        if (fts_double_doc_get(fp->data, "blockTimeMS", &v)) {
            action->block_ms = fts_double_value_as_int64(&v);
        }
    }
    action->close =
        fts_double_doc_get(fp->data, "closeConnection", &v) && fts_double_value_truthy(&v);
    if (fts_double_doc_get(fp->data, "errorCode", &v) && fts_double_value_is_number(&v)) {
        action->has_error = true;
        action->error_code = (int)fts_double_value_as_int64(&v);
    }
    if (fts_double_doc_get(fp->data, "errorLabels", &v) && v.value_type == BSON_TYPE_ARRAY) {
        bson_t labels;
        fts_double_value_as_doc(&v, &labels);
        action->has_labels = true;
        action->labels = bson_copy(&labels);
    }
    if (fts_double_doc_get(fp->data, "writeConcernError", &v) &&
        v.value_type == BSON_TYPE_DOCUMENT) {
        bson_t wce;
        fts_double_value_as_doc(&v, &wce);
        action->wce = bson_copy(&wce);
    }
    return true;
}
