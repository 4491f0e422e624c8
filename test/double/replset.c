/*
 * replset.c - hello, awaitable hello, replSetStepDown/StepUp and replSetGetStatus (see
 * replset.h).
 */
#include "replset.h"

#include "bsonval.h"
#include "commands.h"
#include "conn.h"
#include "wire.h"

#include <string.h>
#include <unistd.h>

static void on_step_up(evutil_socket_t fd, short what, void *arg);

void fts_double_replset_init(fts_double_server_t *srv)
{
    srv->rs.primary = true;
    srv->rs.term = 1;
    srv->rs.counter = 0;
    bson_oid_init(&srv->rs.process_id, NULL);
    srv->rs.stepup_timer = evtimer_new(srv->base, on_step_up, srv);
}

void fts_double_replset_destroy(fts_double_server_t *srv)
{
    if (srv->rs.stepup_timer) {
        event_free(srv->rs.stepup_timer);
        srv->rs.stepup_timer = NULL;
    }
}

static void build_hello(fts_double_server_t *srv, const fts_double_request_t *req, bson_t *out)
{
    fts_double_replset_t *rs = &srv->rs;
    bool legacy = strcmp(req->name, "hello") != 0;
    bson_value_t v;
    bson_t tv, hosts, last_write, optime;
    if (fts_double_doc_get(&req->body, "helloOk", &v) && fts_double_value_truthy(&v)) {
        bson_append_bool(out, "helloOk", 7, true);
    }
    bson_append_document_begin(out, "topologyVersion", 15, &tv);
    bson_append_oid(&tv, "processId", 9, &rs->process_id);
    bson_append_int64(&tv, "counter", 7, rs->counter);
    bson_append_document_end(out, &tv);
    bson_append_array_begin(out, "hosts", 5, &hosts);
    bson_append_utf8(&hosts, "0", 1, srv->host, -1);
    bson_append_array_end(out, &hosts);
    bson_append_utf8(out, "setName", 7, FTS_DOUBLE_SET_NAME, -1);
    bson_append_int32(out, "setVersion", 10, 1);
    bson_append_bool(out, legacy ? "ismaster" : "isWritablePrimary", -1, rs->primary);
    bson_append_bool(out, "secondary", 9, !rs->primary);
    if (rs->primary) {
        bson_append_utf8(out, "primary", 7, srv->host, -1);
    }
    bson_append_utf8(out, "me", 2, srv->host, -1);
    if (rs->primary) {
        /* mongod's electionId: 0x7fffffff followed by the term, big-endian. */
        uint8_t bytes[12] = {0x7f, 0xff, 0xff, 0xff};
        for (int i = 0; i < 8; i++) {
            bytes[4 + i] = (uint8_t)((uint64_t)rs->term >> (56 - 8 * i));
        }
        bson_oid_t election;
        bson_oid_init_from_data(&election, bytes);
        bson_append_oid(out, "electionId", 10, &election);
    }
    fts_double_ts_t last = srv->log.last;
    int64_t now = fts_double_now_ms();
    bson_append_document_begin(out, "lastWrite", 9, &last_write);
    bson_append_document_begin(&last_write, "opTime", 6, &optime);
    bson_append_timestamp(&optime, "ts", 2, last.t, last.i);
    bson_append_int64(&optime, "t", 1, rs->term);
    bson_append_document_end(&last_write, &optime);
    bson_append_date_time(&last_write, "lastWriteDate", 13, (int64_t)last.t * 1000);
    bson_append_document_begin(&last_write, "majorityOpTime", 14, &optime);
    bson_append_timestamp(&optime, "ts", 2, last.t, last.i);
    bson_append_int64(&optime, "t", 1, rs->term);
    bson_append_document_end(&last_write, &optime);
    bson_append_date_time(&last_write, "majorityWriteDate", 17, (int64_t)last.t * 1000);
    bson_append_document_end(out, &last_write);
    bson_append_int32(out, "maxBsonObjectSize", 17, FTS_DOUBLE_MAX_BSON_SIZE);
    bson_append_int32(out, "maxMessageSizeBytes", 19, FTS_DOUBLE_MAX_MESSAGE_SIZE);
    bson_append_int32(out, "maxWriteBatchSize", 17, FTS_DOUBLE_MAX_WRITE_BATCH);
    bson_append_date_time(out, "localTime", 9, now);
    bson_append_int32(out, "logicalSessionTimeoutMinutes", 28, 30);
    bson_append_int64(out, "connectionId", 12, (int64_t)req->conn->id);
    bson_append_int32(out, "minWireVersion", 14, 0);
    bson_append_int32(out, "maxWireVersion", 14, FTS_DOUBLE_MAX_WIRE_VERSION);
    bson_append_bool(out, "readOnly", 8, false);
}

static void answer_hello(fts_double_request_t *req)
{
    fts_double_server_t *srv = req->conn->srv;
    bson_t fields = BSON_INITIALIZER;
    build_hello(srv, req, &fields);
    fts_double_reply_ok(srv, req, &fields);
    bson_destroy(&fields);
}

/* The topology changed: every parked awaitable hello learns it now. */
static void topology_changed(fts_double_server_t *srv)
{
    srv->rs.counter++;
    while (srv->rs.hello_waiters.head) {
        answer_hello(srv->rs.hello_waiters.head); /* unlinks it */
    }
}

fts_double_cmd_status_t fts_double_cmd_hello(fts_double_cmd_t *cmd)
{
    fts_double_server_t *srv = cmd->srv;
    fts_double_conn_t *conn = cmd->req->conn;
    bson_value_t v, tv, max_await;
    if (!conn->app_name && fts_double_doc_get(cmd->body, "client", &v) &&
        v.value_type == BSON_TYPE_DOCUMENT) {
        bson_t client;
        bson_value_t name;
        fts_double_value_as_doc(&v, &client);
        if (fts_double_doc_get_path(&client, "application.name", &name) &&
            name.value_type == BSON_TYPE_UTF8) {
            conn->app_name = bson_strdup(name.value.v_utf8.str);
        }
    }
    if (fts_double_doc_get(cmd->body, "topologyVersion", &tv) &&
        tv.value_type == BSON_TYPE_DOCUMENT &&
        fts_double_doc_get(cmd->body, "maxAwaitTimeMS", &max_await)) {
        bson_t client_tv;
        bson_value_t pid, counter;
        fts_double_value_as_doc(&tv, &client_tv);
        bool same = fts_double_doc_get(&client_tv, "processId", &pid) &&
                    pid.value_type == BSON_TYPE_OID &&
                    bson_oid_equal(&pid.value.v_oid, &srv->rs.process_id) &&
                    fts_double_doc_get(&client_tv, "counter", &counter) &&
                    fts_double_value_as_int64(&counter) == srv->rs.counter;
        if (same) {
            int64_t wait = fts_double_value_as_int64(&max_await);
            fts_double_request_park(cmd->req, &srv->rs.hello_waiters, wait < 0 ? 0 : wait,
                                    answer_hello, NULL);
            return FTS_DOUBLE_CMD_PARKED;
        }
    }
    build_hello(srv, cmd->req, &cmd->reply);
    return FTS_DOUBLE_CMD_OK;
}

static void on_step_up(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_double_server_t *srv = arg;
    if (srv->rs.primary) {
        return;
    }
    srv->rs.primary = true;
    srv->rs.term++;
    fts_double_log(srv, "stepped up: primary again (term %lld)", (long long)srv->rs.term);
    topology_changed(srv);
}

fts_double_cmd_status_t fts_double_cmd_repl_set_step_down(fts_double_cmd_t *cmd)
{
    fts_double_server_t *srv = cmd->srv;
    if (!srv->rs.primary) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_NOT_WRITABLE_PRIMARY,
                                   "not primary so can't step down");
    }
    bson_value_t v;
    int64_t secs = 60; /* mongod's default for a non-numeric value */
    if (fts_double_doc_get(cmd->body, "replSetStepDown", &v) && fts_double_value_is_number(&v)) {
        secs = fts_double_value_as_int64(&v);
    }
    if (secs <= 0) {
        return fts_double_cmd_fail(cmd, FTS_DOUBLE_E_BAD_VALUE,
                                   "replSetStepDown period must be a positive number of seconds");
    }
    srv->rs.primary = false;
    struct timeval tv = {(time_t)secs, 0};
    evtimer_add(srv->rs.stepup_timer, &tv);
    fts_double_log(srv, "stepped down for %lld s", (long long)secs);
    topology_changed(srv);
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_repl_set_step_up(fts_double_cmd_t *cmd)
{
    fts_double_server_t *srv = cmd->srv;
    if (!srv->rs.primary) {
        evtimer_del(srv->rs.stepup_timer);
        on_step_up(-1, 0, srv);
    }
    return FTS_DOUBLE_CMD_OK;
}

fts_double_cmd_status_t fts_double_cmd_repl_set_get_status(fts_double_cmd_t *cmd)
{
    fts_double_server_t *srv = cmd->srv;
    fts_double_ts_t last = srv->log.last;
    int state = srv->rs.primary ? 1 : 2;
    const char *state_str = srv->rs.primary ? "PRIMARY" : "SECONDARY";
    bson_t members, member, optime;
    bson_append_utf8(&cmd->reply, "set", 3, FTS_DOUBLE_SET_NAME, -1);
    bson_append_date_time(&cmd->reply, "date", 4, fts_double_now_ms());
    bson_append_int32(&cmd->reply, "myState", 7, state);
    bson_append_int64(&cmd->reply, "term", 4, srv->rs.term);
    bson_append_int32(&cmd->reply, "heartbeatIntervalMillis", 23, 2000);
    bson_append_array_begin(&cmd->reply, "members", 7, &members);
    bson_append_document_begin(&members, "0", 1, &member);
    bson_append_int32(&member, "_id", 3, 0);
    bson_append_utf8(&member, "name", 4, srv->host, -1);
    bson_append_double(&member, "health", 6, 1.0);
    bson_append_int32(&member, "state", 5, state);
    bson_append_utf8(&member, "stateStr", 8, state_str, -1);
    bson_append_int64(&member, "uptime", 6, (fts_double_now_ms() - srv->start_ms) / 1000);
    bson_append_document_begin(&member, "optime", 6, &optime);
    bson_append_timestamp(&optime, "ts", 2, last.t, last.i);
    bson_append_int64(&optime, "t", 1, srv->rs.term);
    bson_append_document_end(&member, &optime);
    bson_append_date_time(&member, "optimeDate", 10, (int64_t)last.t * 1000);
    bson_append_bool(&member, "self", 4, true);
    bson_append_document_end(&members, &member);
    bson_append_array_end(&cmd->reply, &members);
    return FTS_DOUBLE_CMD_OK;
}
