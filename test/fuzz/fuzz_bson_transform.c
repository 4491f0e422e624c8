/*
 * fuzz_bson_transform.c - libFuzzer target: the BSON -> JSON conversion (core/json_convert.c)
 * and the transform of a change event or snapshot document (core/transform.c) over arbitrary
 * BSON.
 *
 * The input is taken as one BSON document (bson_init_static; inputs whose length header does
 * not match are skipped). json_convert promises to refuse corrupt BSON itself, so it gets the
 * document unvalidated; the transform only ever sees documents bson_validate accepted (the
 * frame reader checks them first, frame.h), so it gets only those. Properties checked beyond
 * "no crash, no leak, no undefined behaviour":
 *   - a refused conversion leaves the output as it was (invariant 6: no partial write);
 *   - an accepted one is well-formed UTF-8 and the same bytes on a second run (determinism);
 *   - a produced index action passes fts_action_validate, so the loader would accept it.
 */
#include <stdio.h>
#include <string.h>

#include <bson/bson.h>

#include "action.h"
#include "config.h"
#include "fuzz_common.h"
#include "json_convert.h"
#include "transform.h"

/* Two transforms, made once: the defaults (_id, whole document, drop -> delete) and a
 * projection with a nested id field, so both paths of projection.c run. */
static fts_transform_t *transforms[2];
static fts_string_list_t projected_fields;

static void make_transforms(void)
{
    if (transforms[0]) {
        return;
    }
    fts_error_t err;
    fts_transform_options_t whole = {
        .id_field = NULL, .fields = NULL, .on_drop = FTS_ON_DROP_DELETE};
    transforms[0] = fts_transform_new(&whole, &err);
    if (!fts_string_list_parse("name,a.b:b,tags", &projected_fields, &err)) {
        fuzz_fail("the projected field list does not parse");
    }
    fts_transform_options_t projected = {
        .id_field = "a.id", .fields = &projected_fields, .on_drop = FTS_ON_DROP_IGNORE};
    transforms[1] = fts_transform_new(&projected, &err);
    if (!transforms[0] || !transforms[1]) {
        fprintf(stderr, "%s\n", err.message);
        fuzz_fail("a transform cannot be made");
    }
}

static void check_conversion(const bson_t *doc)
{
    fts_buffer_t first = {0};
    fts_buffer_t second = {0};
    fts_error_t err;
    fts_buffer_append_str(&first, "prefix");
    bool ok = fts_json_append_bson(&first, doc, &err);
    if (!ok) {
        if (first.len != strlen("prefix") || memcmp(first.data, "prefix", first.len) != 0) {
            fuzz_fail("a refused conversion left bytes behind");
        }
    } else {
        if (!fts_utf8_validate(first.data, first.len)) {
            fuzz_fail("the JSON is not valid UTF-8");
        }
        fts_buffer_append_str(&second, "prefix");
        if (!fts_json_append_bson(&second, doc, &err) || second.len != first.len ||
            memcmp(first.data, second.data, first.len) != 0) {
            fuzz_fail("converting the same document twice gave different JSON");
        }
    }
    fts_buffer_clear(&second);
    bool without = fts_json_append_bson_without(&second, doc, "_id", &err);
    /* Leaving out _id may skip the only corrupt bytes (a skipped value is not read), never
     * the other way round. */
    if (ok && !without) {
        fuzz_fail("a document converts whole but not without its _id");
    }
    fts_buffer_destroy(&first);
    fts_buffer_destroy(&second);
}

static void check_action(const fts_action_t *action, bool produced)
{
    fts_error_t err;
    if (produced && !fts_action_validate(action, &err)) {
        fuzz_fail("the transform produced an action the loader would refuse");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet_logs();
    make_transforms();
    bson_t doc;
    if (!bson_init_static(&doc, data, size)) {
        return 0;
    }
    check_conversion(&doc);

    size_t offset = 0;
    if (!bson_validate(&doc, BSON_VALIDATE_NONE, &offset)) {
        return 0;
    }
    for (size_t i = 0; i < 2; i++) {
        fts_action_t action;
        fts_action_init(&action);
        bool produced = false;
        fts_error_t err;
        if (fts_transform_event(transforms[i], &doc, &action, &produced, &err)) {
            check_action(&action, produced);
        }
        fts_action_cleanup(&action);
        fts_action_init(&action);
        produced = false;
        if (fts_transform_snapshot(transforms[i], &doc, "db.coll", 1700000000u, 7u, &action,
                                   &produced, &err)) {
            check_action(&action, produced);
        }
        fts_action_cleanup(&action);
    }
    return 0;
}
