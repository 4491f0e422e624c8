/*
 * test_fd_growth.c - no file descriptor is lost across reconnects (issue 13, item 11).
 *
 * Each client ftsync keeps for its whole life reconnects RECONNECTS times, and the number of
 * open descriptors of this process (/proc/self/fd) must end where it was after the first
 * reconnect (a warm-up that opens what a library opens once, e.g. a resolver's socket), give
 * or take FD_SLACK:
 *   - the blocking Redis connection (adapters/redis/redis_conn.c): its server connection is
 *     killed (CLIENT KILL) and the next command reconnects;
 *   - the loaders' asynchronous consumer group (adapters/redis/redis_group.c, both of its
 *     connections): killed likewise, it reconnects on the event loop;
 *   - the Elasticsearch clients, blocking (adapters/es/es_client.c) and asynchronous
 *     (adapters/es/es_async.c, the loaders'): a stand-in server closes every connection after
 *     one reply, so each request connects again;
 *   - the MongoDB source (adapters/mongo/mongo_source.c): re-opened against the double while
 *     a closeConnection fail point drops the connection its aggregate arrives on.
 * Every test asserts that the reconnects really happened (connection counts), so that a
 * client quietly keeping one connection could not pass.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <mongoc/mongoc.h>

#include "es_async.h"
#include "es_client.h"
#include "log.h"
#include "mongo_double.h"
#include "mongo_source.h"
#include "redis_conn.h"
#include "redis_group.h"
#include "redis_server.h"
#include "test_time.h"

#define RECONNECTS 100
/* Descriptors a library may open lazily and keep (a resolver socket, an epoll set). */
#define FD_SLACK    2
#define DEADLINE_MS 10000

static int open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    assert_non_null(dir);
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] != '.') {
            count++;
        }
    }
    closedir(dir);
    return count - 1; /* the directory's own descriptor */
}

static void assert_no_growth(const char *what, int before, int after)
{
    fprintf(stderr, "%s: %d descriptors after the warm-up, %d after %d reconnects\n", what, before,
            after, RECONNECTS);
    if (after > before + FD_SLACK) {
        fail_msg("%s leaks descriptors: %d before, %d after %d reconnects", what, before, after,
                 RECONNECTS);
    }
}

static fts_test_redis_server_t *start_redis(void)
{
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_redis_server_t *server = fts_test_redis_server_start(NULL, &err);
    if (!server) {
        fail_msg("cannot start redis-server: %s", err.message);
    }
    return server;
}

static fts_redis_t *redis_connect(const char *url)
{
    fts_redis_options_t options;
    fts_redis_options_init(&options);
    options.reconnect_base_ms = 1;
    options.reconnect_cap_ms = 10;
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_t *redis = fts_redis_new(url, &options, &err);
    if (!redis) {
        fail_msg("cannot connect to %s: %s", url, err.message);
    }
    return redis;
}

/* Kills every client of the server but killer's own; returns how many were killed. */
static long long kill_clients(fts_redis_t *killer)
{
    fts_error_t err;
    fts_error_clear(&err);
    redisReply *reply = fts_redis_command(killer, &err, "CLIENT KILL TYPE normal SKIPME yes");
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        fail_msg("CLIENT KILL failed: %s", reply ? "not an integer" : err.message);
    }
    long long killed = reply->integer;
    freeReplyObject(reply);
    return killed;
}

/* ---- the blocking Redis connection ------------------------------------------------------ */

static void redis_conn_cycle(fts_redis_t *redis, fts_redis_t *killer)
{
    assert_int_equal(kill_clients(killer), 1);
    /* The close may or may not have crossed loopback yet: either the connection is repaired
     * before sending, or the command fails once with an I/O error and the next reconnects. */
    uint64_t deadline = fts_test_monotonic_ms() + DEADLINE_MS;
    for (;;) {
        fts_error_t err;
        fts_error_clear(&err);
        redisReply *reply = fts_redis_command(redis, &err, "PING");
        if (reply) {
            freeReplyObject(reply);
            return;
        }
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("no PING succeeded after CLIENT KILL: %s", err.message);
        }
    }
}

static void test_redis_conn_reconnects(void **state)
{
    (void)state;
    fts_test_redis_server_t *server = start_redis();
    const char *url = fts_test_redis_server_url(server);
    fts_redis_t *killer = redis_connect(url);
    fts_redis_t *redis = redis_connect(url);
    fts_error_t err;
    assert_true(fts_redis_ping(redis, &err));

    redis_conn_cycle(redis, killer);
    uint64_t connections = fts_redis_connection_count(redis);
    int before = open_fds();
    for (int i = 0; i < RECONNECTS; i++) {
        redis_conn_cycle(redis, killer);
    }
    int after = open_fds();
    assert_int_equal(fts_redis_connection_count(redis), connections + RECONNECTS);
    assert_no_growth("redis_conn", before, after);

    fts_redis_destroy(redis);
    fts_redis_destroy(killer);
    fts_test_redis_server_destroy(server);
}

/* ---- the asynchronous consumer group ---------------------------------------------------- */

typedef struct {
    bool done;
    bool failed;
    char message[FTS_ERROR_MESSAGE_SIZE];
} group_result_t;

static void on_done(void *arg, const fts_error_t *err)
{
    group_result_t *result = arg;
    result->done = true;
    result->failed = err != NULL;
    if (err) {
        snprintf(result->message, sizeof result->message, "%s", err->message);
    }
}

/* Runs XGROUP CREATE until it succeeds (the group reconnects in between). */
static void group_ensure_ok(struct event_base *base, fts_redis_group_t *group)
{
    uint64_t deadline = fts_test_monotonic_ms() + DEADLINE_MS;
    for (;;) {
        group_result_t result = {0};
        fts_redis_group_ensure(group, on_done, &result);
        while (!result.done) {
            if (fts_test_monotonic_ms() > deadline) {
                fail_msg("the group's command never completed");
            }
            event_base_loop(base, EVLOOP_ONCE);
        }
        if (!result.failed) {
            return;
        }
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("the group never came back after CLIENT KILL: %s", result.message);
        }
        struct timeval pause = {0, 5000};
        event_base_loopexit(base, &pause);
        event_base_dispatch(base);
    }
}

static void group_cycle(struct event_base *base, fts_redis_group_t *group, fts_redis_t *killer)
{
    /* Both of the group's connections (commands and blocking reads) were up. */
    assert_int_equal(kill_clients(killer), 2);
    group_ensure_ok(base, group);
    uint64_t deadline = fts_test_monotonic_ms() + DEADLINE_MS;
    while (!fts_redis_group_connected(group)) {
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("the group did not reconnect");
        }
        event_base_loop(base, EVLOOP_ONCE);
    }
    /* Wait until the server sees both connections again, so the next kill finds them. */
    for (;;) {
        fts_error_t err;
        fts_error_clear(&err);
        redisReply *reply = fts_redis_command(killer, &err, "CLIENT LIST TYPE normal");
        assert_non_null(reply);
        size_t lines = 0;
        for (const char *p = reply->str; p && *p; p++) {
            lines += *p == '\n';
        }
        freeReplyObject(reply);
        if (lines >= 3) { /* the group's two and the killer */
            return;
        }
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("the group's second connection did not come back");
        }
        struct timeval pause = {0, 2000};
        event_base_loopexit(base, &pause);
        event_base_dispatch(base);
    }
}

static void test_redis_group_reconnects(void **state)
{
    (void)state;
    fts_test_redis_server_t *server = start_redis();
    const char *url = fts_test_redis_server_url(server);
    fts_redis_t *killer = redis_connect(url);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    fts_redis_group_options_t options = {
        .stream_key = "ftsync:{fd}:stream",
        .dead_key = "ftsync:{fd}:dead",
        .group = "loaders",
        .consumer = "fd-test",
        .connect_timeout_ms = 1000,
        .command_timeout_ms = 2000,
        .block_ms = 300,
        .claim_min_idle_ms = 100,
    };
    fts_error_t err;
    fts_error_clear(&err);
    fts_redis_group_t *group = fts_redis_group_new(base, url, &options, &err);
    if (!group) {
        fail_msg("cannot create the group: %s", err.message);
    }
    group_ensure_ok(base, group);
    group_cycle(base, group, killer);

    int before = open_fds();
    for (int i = 0; i < RECONNECTS; i++) {
        group_cycle(base, group, killer);
    }
    int after = open_fds();
    assert_no_growth("redis_group", before, after);

    fts_redis_group_destroy(group);
    event_base_free(base);
    fts_redis_destroy(killer);
    fts_test_redis_server_destroy(server);
}

/* ---- the Elasticsearch client ----------------------------------------------------------- */

/* A stand-in Elasticsearch that answers each connection's first request and closes it. */
typedef struct {
    int listener;
    int port;
    pthread_t thread;
    int accepted; /* connections served; read after the thread is joined */
} closing_server_t;

static void *closing_server_main(void *arg)
{
    closing_server_t *server = arg;
    for (;;) {
        int fd = accept(server->listener, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NULL; /* the listener was shut down */
        }
        /* Read up to the end of the headers (the client sends bodiless GETs). */
        char request[4096];
        size_t len = 0;
        while (len < sizeof request - 1) {
            ssize_t got = read(fd, request + len, sizeof request - 1 - len);
            if (got <= 0) {
                break;
            }
            len += (size_t)got;
            request[len] = '\0';
            if (strstr(request, "\r\n\r\n")) {
                break;
            }
        }
        static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                    "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
        ssize_t written = write(fd, reply, sizeof reply - 1);
        (void)written;
        close(fd);
        server->accepted++;
    }
}

static void closing_server_start(closing_server_t *server)
{
    memset(server, 0, sizeof *server);
    server->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(server->listener >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(server->listener, (struct sockaddr *)&address, sizeof address), 0);
    socklen_t address_len = sizeof address;
    assert_int_equal(getsockname(server->listener, (struct sockaddr *)&address, &address_len), 0);
    server->port = ntohs(address.sin_port);
    assert_int_equal(listen(server->listener, 16), 0);
    assert_int_equal(pthread_create(&server->thread, NULL, closing_server_main, server), 0);
}

static void closing_server_stop(closing_server_t *server)
{
    shutdown(server->listener, SHUT_RDWR);
    pthread_join(server->thread, NULL);
    close(server->listener);
}

static void es_request_ok(fts_es_client_t *client)
{
    fts_es_response_t response = {0};
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_es_request(client, "GET", "/", NULL, NULL, 0, &response, &err)) {
        fail_msg("GET / failed: %s", err.message);
    }
    assert_int_equal(response.status, 200);
    fts_es_response_cleanup(&response);
}

static void test_es_client_reconnects(void **state)
{
    (void)state;
    closing_server_t server;
    closing_server_start(&server);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", server.port);
    const char *urls[] = {url};
    fts_es_options_t options = {.urls = urls, .url_count = 1};
    fts_error_t err;
    fts_error_clear(&err);
    fts_es_client_t *client = fts_es_client_new(&options, &err);
    if (!client) {
        fail_msg("cannot make the client: %s", err.message);
    }
    es_request_ok(client);
    es_request_ok(client);

    int before = open_fds();
    for (int i = 0; i < RECONNECTS; i++) {
        es_request_ok(client);
    }
    int after = open_fds();
    fts_es_client_destroy(client);
    closing_server_stop(&server);
    /* One connection per request: the server closed each one. */
    assert_int_equal(server.accepted, RECONNECTS + 2);
    assert_no_growth("es_client", before, after);
}

/* The loaders' asynchronous client (adapters/es/es_async.c, curl's multi interface on the
 * event loop) against the same closing server. */
typedef struct {
    bool done;
    long status;
    char message[FTS_ERROR_MESSAGE_SIZE];
} async_result_t;

static void on_async_done(void *arg, const fts_es_response_t *response, const fts_error_t *err)
{
    async_result_t *result = arg;
    result->done = true;
    result->status = response ? response->status : 0;
    if (err) {
        snprintf(result->message, sizeof result->message, "%s", err->message);
    }
}

static void es_async_request_ok(struct event_base *base, fts_es_async_t *es)
{
    async_result_t result = {0};
    fts_error_t err;
    fts_error_clear(&err);
    if (!fts_es_async_request(es, "GET", "/", NULL, NULL, 0, on_async_done, &result, &err)) {
        fail_msg("GET / could not be sent: %s", err.message);
    }
    uint64_t deadline = fts_test_monotonic_ms() + DEADLINE_MS;
    while (!result.done) {
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("GET / never completed");
        }
        event_base_loop(base, EVLOOP_ONCE);
    }
    if (result.status != 200) {
        fail_msg("GET / answered %ld: %s", result.status, result.message);
    }
}

static void test_es_async_reconnects(void **state)
{
    (void)state;
    closing_server_t server;
    closing_server_start(&server);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", server.port);
    const char *urls[] = {url};
    fts_es_options_t options = {.urls = urls, .url_count = 1};
    struct event_base *base = event_base_new();
    assert_non_null(base);
    fts_error_t err;
    fts_error_clear(&err);
    fts_es_async_t *es = fts_es_async_new(base, &options, &err);
    if (!es) {
        fail_msg("cannot make the async client: %s", err.message);
    }
    es_async_request_ok(base, es);
    es_async_request_ok(base, es);

    int before = open_fds();
    for (int i = 0; i < RECONNECTS; i++) {
        es_async_request_ok(base, es);
    }
    int after = open_fds();
    fts_es_async_destroy(es);
    event_base_free(base);
    closing_server_stop(&server);
    assert_int_equal(server.accepted, RECONNECTS + 2);
    assert_no_growth("es_async", before, after);
}

/* ---- the MongoDB source ----------------------------------------------------------------- */

static void run_admin(mongoc_client_t *client, bson_t *command)
{
    bson_error_t error;
    bson_t reply;
    if (!mongoc_client_command_simple(client, "admin", command, NULL, &reply, &error)) {
        fail_msg("admin command failed: %s", error.message);
    }
    bson_destroy(&reply);
    bson_destroy(command);
}

/* Drops the connection the source's next aggregate (the change stream's open) arrives on,
 * and re-opens until the stream is open again. */
static void mongo_cycle(mongoc_client_t *admin, fts_mongo_source_t *source)
{
    run_admin(admin,
              BCON_NEW("configureFailPoint", "failCommand", "mode", "{", "times", BCON_INT32(1),
                       "}", "data", "{", "failCommands", "[", BCON_UTF8("aggregate"), "]",
                       "closeConnection", BCON_BOOL(true), "appName", BCON_UTF8("ftsync"), "}"));
    uint64_t deadline = fts_test_monotonic_ms() + DEADLINE_MS;
    for (;;) {
        fts_error_t err;
        fts_error_clear(&err);
        /* libmongoc may retry the read on a new connection itself, or report the close. */
        if (fts_mongo_source_open(source, NULL, &err)) {
            break;
        }
        if (fts_test_monotonic_ms() > deadline) {
            fail_msg("the source did not re-open: %s", err.message);
        }
    }
    fts_mongo_source_close(source);
}

/* Connections the double has accepted so far (serverStatus, as mongod reports it). */
static int64_t total_connections(mongoc_client_t *admin)
{
    bson_t *command = BCON_NEW("serverStatus", BCON_INT32(1));
    bson_t reply;
    bson_error_t error;
    int64_t total = -1;
    if (mongoc_client_command_simple(admin, "admin", command, NULL, &reply, &error)) {
        bson_iter_t iter;
        if (bson_iter_init(&iter, &reply) &&
            bson_iter_find_descendant(&iter, "connections.totalCreated", &iter) &&
            BSON_ITER_HOLDS_NUMBER(&iter)) {
            total = bson_iter_as_int64(&iter);
        }
        bson_destroy(&reply);
    }
    bson_destroy(command);
    return total;
}

static void test_mongo_source_reopens(void **state)
{
    (void)state;
    fts_error_t err;
    fts_error_clear(&err);
    fts_test_mongo_double_t *server = fts_test_mongo_double_start(NULL, &err);
    if (!server) {
        fail_msg("cannot start the MongoDB double: %s", err.message);
    }
    const char *uri = fts_test_mongo_double_uri(server);
    mongoc_client_t *admin = mongoc_client_new(uri);
    assert_non_null(admin);
    mongoc_client_set_appname(admin, "ftsync-test-admin");

    fts_mongo_source_options_t options;
    fts_mongo_source_options_init(&options);
    options.max_await_time_ms = 100;
    fts_mongo_source_t *source = fts_mongo_source_new(uri, "fdgrowth", "items", &options, &err);
    if (!source) {
        fail_msg("cannot make the source: %s", err.message);
    }
    mongo_cycle(admin, source);

    int64_t connections = total_connections(admin);
    int before = open_fds();
    for (int i = 0; i < RECONNECTS; i++) {
        mongo_cycle(admin, source);
    }
    int after = open_fds();
    int64_t connections_after = total_connections(admin);
    fprintf(stderr, "mongo_source: the double accepted %lld connections during the re-opens\n",
            (long long)(connections_after - connections));
    if (connections >= 0 && connections_after >= 0) {
        assert_true(connections_after - connections >= RECONNECTS);
    }
    assert_no_growth("mongo_source", before, after);

    run_admin(admin, BCON_NEW("configureFailPoint", "failCommand", "mode", "off"));
    fts_mongo_source_destroy(source);
    mongoc_client_destroy(admin);
    assert_true(fts_test_mongo_double_stop(server, &err));
    fts_test_mongo_double_destroy(server);
}

int main(void)
{
    fts_mongo_init();
    fts_log_set_level(FTS_LOG_WARN); /* a reconnect logs a line; 400 of them say nothing */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_conn_reconnects), cmocka_unit_test(test_redis_group_reconnects),
        cmocka_unit_test(test_es_client_reconnects),  cmocka_unit_test(test_es_async_reconnects),
        cmocka_unit_test(test_mongo_source_reopens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
