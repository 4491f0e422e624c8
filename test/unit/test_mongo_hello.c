/*
 * test_mongo_hello.c - what `ftsync check` makes of a hello answer (fts_mongo_hello_topology):
 * a replica set by its setName, a mongos by msg "isdbgrid", anything else a standalone. The
 * MongoDB double is always a replica set, so the other answers are tested here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <bson/bson.h>

#include "mongo_source.h"

/* The topology of the hello answer json; *set_name (may be NULL) a copy of the set name,
 * "(none)" when the function gave none. */
static fts_mongo_topology_t topology_of(const char *json, char **set_name)
{
    bson_error_t error;
    bson_t *hello = bson_new_from_json((const uint8_t *)json, -1, &error);
    assert_non_null(hello);
    const char *name = "left over";
    fts_mongo_topology_t topology = fts_mongo_hello_topology(hello, &name);
    if (set_name) {
        *set_name = bson_strdup(name ? name : "(none)");
    }
    assert_int_equal(fts_mongo_hello_topology(hello, NULL), topology);
    bson_destroy(hello);
    return topology;
}

static void test_a_replica_set_member_names_its_set(void **state)
{
    (void)state;
    char *name = NULL;
    assert_int_equal(
        topology_of("{\"isWritablePrimary\": true, \"setName\": \"rs0\", \"ok\": 1}", &name),
        FTS_MONGO_REPLICA_SET);
    assert_string_equal(name, "rs0");
    bson_free(name);
    /* A secondary too: the stream may be read from any member. */
    assert_int_equal(topology_of("{\"secondary\": true, \"setName\": \"prod\", \"ok\": 1}", &name),
                     FTS_MONGO_REPLICA_SET);
    assert_string_equal(name, "prod");
    bson_free(name);
    assert_int_equal(topology_of("{\"setName\": \"x\"}", NULL), FTS_MONGO_REPLICA_SET);
}

static void test_a_mongos_is_a_sharded_cluster(void **state)
{
    (void)state;
    char *name = NULL;
    assert_int_equal(
        topology_of("{\"isWritablePrimary\": true, \"msg\": \"isdbgrid\", \"ok\": 1}", &name),
        FTS_MONGO_SHARDED);
    assert_string_equal(name, "(none)");
    bson_free(name);
}

static void test_anything_else_is_a_standalone(void **state)
{
    (void)state;
    char *name = NULL;
    assert_int_equal(topology_of("{\"isWritablePrimary\": true, \"ok\": 1}", &name),
                     FTS_MONGO_STANDALONE);
    assert_string_equal(name, "(none)");
    bson_free(name);
    assert_int_equal(topology_of("{\"msg\": \"something else\", \"ok\": 1}", NULL),
                     FTS_MONGO_STANDALONE);
    /* A setName that is not a string is no set name. */
    assert_int_equal(topology_of("{\"setName\": 1, \"ok\": 1}", &name), FTS_MONGO_STANDALONE);
    assert_string_equal(name, "(none)");
    bson_free(name);
    assert_int_equal(topology_of("{}", NULL), FTS_MONGO_STANDALONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_replica_set_member_names_its_set),
        cmocka_unit_test(test_a_mongos_is_a_sharded_cluster),
        cmocka_unit_test(test_anything_else_is_a_standalone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
