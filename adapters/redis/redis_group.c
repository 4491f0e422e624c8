/*
 * redis_group.c - the loaders' consumer group over hiredis's asynchronous API on libevent (see
 * redis_group.h for the promises).
 *
 * Two connections (conn_t), each in one of three states:
 *   - down: no context; a retry timer (capped full-jitter backoff) will open a new one. An
 *     operation submitted now fails from the loop with the reason the connection went down;
 *   - connecting: a context exists, AUTH / SELECT / PING are queued on it. Operations submitted
 *     now wait in our own list, not in hiredis's buffer: were they pipelined behind a SELECT
 *     that fails, they would run in the wrong database;
 *   - up: operations are sent at once.
 *
 * An operation (op_t) is one call of the public API. It owns copies of everything it sends, is
 * on exactly one list at a time (waiting, in flight, or due: completing from the loop), and is
 * completed exactly once: when hiredis has returned a reply - or a NULL reply when the context
 * goes away - for every command it sent. hiredis guarantees every registered callback runs once,
 * so counting outstanding replies is what makes "exactly once" hold even when a connection
 * breaks in the middle of a pipeline.
 *
 * Freeing contexts: hiredis runs the pending callbacks of a context it frees, and must not be
 * asked to free a context from inside one of its callbacks. So a connection we drop while inside
 * a callback (callback_depth > 0) is detached at once - no new command goes to it - and freed
 * from a zero-delay event (reap). The watchdog and destroy run from libevent, outside hiredis,
 * and free directly.
 *
 * Completions that do not come from a reply (a connection that is down, an empty settlement
 * or touch) go through the "due" list and one event of ours rather than event_base_once,
 * because a pending event_base_once cannot be cancelled and destroy must call no callback.
 *
 * This file is the state machine only: what a reply means, and how a settlement is spelled,
 * is redis_group_reply.c (pure, unit-tested). Allocation failure aborts (bson_malloc,
 * fts_fatal_oom), so every operation, once created, completes.
 */
#include "redis_group.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <bson/bson.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "clock.h"
#include "log.h"
#include "redis_conn.h"
#include "redis_group_reply.h"
#include "redis_url.h"

/* The component tag of every log line from this file. */
#define LOG_COMPONENT "redis"

/* How often the watchdog looks at the oldest command, at most and at least. */
#define WATCHDOG_MAX_TICK_MS 200
#define WATCHDOG_MIN_TICK_MS 10

/* Contexts dropped from inside a hiredis callback and waiting for the reap event. More than
 * one happens only when a reconnect fails within the loop iteration of a drop; beyond this
 * many, redisAsyncDisconnect is the fallback. */
#define MAX_DOOMED 4

typedef struct op op_t;

typedef struct {
    op_t *head;
    op_t *tail;
} op_list_t;

typedef enum { CONN_DOWN = 0, CONN_CONNECTING, CONN_UP } conn_state_t;

typedef struct {
    fts_redis_group_t *group;
    const char *role; /* "reading" or "command", for messages */
    long extra_ms;    /* time a command may take on top of command_timeout_ms (BLOCK) */
    conn_state_t state;
    redisAsyncContext *ac;      /* owned; NULL while down */
    bool connected;             /* TCP connect done on ac (onConnect said OK) */
    uint64_t phase_ms;          /* when connecting started, then when set-up commands went out */
    const char *setup_steps[3]; /* names of the set-up commands queued on ac, in order */
    unsigned setup_count;
    unsigned setup_done;
    redisAsyncContext *doomed[MAX_DOOMED]; /* detached inside a callback; freed by reap */
    fts_backoff_t backoff;
    struct event *retry_timer;
    struct event *watchdog;
    struct event *reap;
    op_list_t waiting;  /* submitted while connecting */
    op_list_t inflight; /* sent, in the order sent */
    bool have_error;
    fts_error_t last_error; /* why the connection is (or last went) down */
} conn_t;

struct fts_redis_group {
    struct event_base *base;
    fts_redis_url_t *url; /* owned */
    char *stream_key;     /* owned copies of the options' strings */
    char *dead_key;
    char *group_name;
    char *consumer;
    long connect_timeout_ms;
    long command_timeout_ms;
    long block_ms;
    uint64_t claim_min_idle_ms;
    char address[300];       /* "host:port" or "[v6]:port", for messages */
    conn_t read_conn;        /* XREADGROUP only: a blocked read holds its connection */
    conn_t command_conn;     /* everything else */
    op_list_t due;           /* completions to run from the loop */
    struct event *due_event; /* runs them */
    unsigned callback_depth; /* > 0 while inside a hiredis callback of ours */
    bool destroying;         /* no user callback may run any more */
};

typedef enum { OP_ENSURE, OP_READ, OP_CLAIM, OP_TOUCH, OP_SETTLE, OP_BARRIER } op_kind_t;

struct op {
    op_t *prev;
    op_t *next;
    op_list_t *list; /* the list the op is on, NULL while on none */
    fts_redis_group_t *group;
    conn_t *conn;
    redisAsyncContext *ac; /* the context its commands went to */
    op_kind_t kind;
    const char *name; /* the command, for messages */
    const char *key;  /* the key it is about, for messages */
    fts_redis_group_entries_fn entries_done;
    fts_redis_group_done_fn done;
    fts_redis_group_barrier_fn barrier_done;
    void *arg;
    fts_redis_argv_t *commands; /* the batch still to send */
    size_t command_count;
    unsigned awaiting; /* callbacks hiredis still owes us */
    uint64_t sent_ms;
    bool history;     /* read: start_id other than ">" */
    bool scripted;    /* settle: the script form (dead letters, then XACK), not a plain XACK */
    bool lookup_sent; /* the XPENDING batch went out */
    bool failed;
    fts_error_t err;
    fts_redis_group_entries_t result;    /* read and claim: the entries, owned */
    char barrier_id[FTS_STREAM_ID_SIZE]; /* barrier: the entry asked about */
    bool barrier_clear;                  /* barrier: the answer */
};

static struct timeval to_timeval(uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* ---- lists ---- */

static void list_push(op_list_t *list, op_t *op)
{
    op->list = list;
    op->next = NULL;
    op->prev = list->tail;
    if (list->tail) {
        list->tail->next = op;
    } else {
        list->head = op;
    }
    list->tail = op;
}

static void list_remove(op_t *op)
{
    op_list_t *list = op->list;
    if (!list) {
        return;
    }
    if (op->prev) {
        op->prev->next = op->next;
    } else {
        list->head = op->next;
    }
    if (op->next) {
        op->next->prev = op->prev;
    } else {
        list->tail = op->prev;
    }
    op->prev = op->next = NULL;
    op->list = NULL;
}

/* ---- commands ---- */

/* Appends an empty command to op's batch. */
static fts_redis_argv_t *op_add_command(op_t *op)
{
    op->commands = bson_realloc(op->commands, (op->command_count + 1) * sizeof *op->commands);
    fts_redis_argv_t *command = &op->commands[op->command_count++];
    memset(command, 0, sizeof *command);
    return command;
}

static void op_clear_commands(op_t *op)
{
    for (size_t i = 0; i < op->command_count; i++) {
        fts_redis_argv_cleanup(&op->commands[i]);
    }
    bson_free(op->commands);
    op->commands = NULL;
    op->command_count = 0;
}

/* ---- operations ---- */

/* Never NULL: allocation failure aborts. */
static op_t *op_new(fts_redis_group_t *group, conn_t *conn, op_kind_t kind, const char *name,
                    const char *key)
{
    op_t *op = bson_malloc0(sizeof *op);
    op->group = group;
    op->conn = conn;
    op->kind = kind;
    op->name = name;
    op->key = key;
    return op;
}

static void op_free(op_t *op)
{
    if (!op) {
        return;
    }
    op_clear_commands(op);
    fts_redis_group_entries_cleanup(&op->result);
    bson_free(op);
}

/* Records the first failure of op; later ones would only describe its consequences. */
static void op_set_error(op_t *op, const fts_error_t *err)
{
    if (!op->failed) {
        op->failed = true;
        op->err = *err;
    }
}

static void op_fail(op_t *op, int code, const char *format, const char *detail)
{
    fts_error_t err;
    fts_error_set(&err, FTS_ERROR_REDIS, code, format, op->name, op->group->address, detail);
    op_set_error(op, &err);
}

/* Calls the user's callback. op must be on no list. */
static void op_complete(op_t *op)
{
    assert(!op->list);
    const fts_error_t *err = op->failed ? &op->err : NULL;
    if (op->kind == OP_READ || op->kind == OP_CLAIM) {
        if (err) {
            op->entries_done(op->arg, NULL, 0, NULL, 0, err);
        } else {
            op->entries_done(op->arg, op->result.entries, op->result.count,
                             op->kind == OP_CLAIM ? op->result.next_cursor : NULL,
                             op->result.deleted, NULL);
        }
    } else if (op->kind == OP_BARRIER) {
        op->barrier_done(op->arg, err ? false : op->barrier_clear, err);
    } else {
        op->done(op->arg, err);
    }
}

static void due_run(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fts_redis_group_t *group = arg;
    /* Only what is due now: callbacks may submit more, which wait for the next run. */
    op_list_t batch = group->due;
    group->due.head = group->due.tail = NULL;
    for (op_t *op = batch.head; op; op = op->next) {
        op->list = &batch;
    }
    while (batch.head) {
        op_t *op = batch.head;
        list_remove(op);
        op_complete(op);
        op_free(op);
    }
}

/* Completes op from the loop, soon, with its result as it stands. */
static void op_complete_later(op_t *op)
{
    list_remove(op);
    list_push(&op->group->due, op);
    event_active(op->group->due_event, EV_TIMEOUT, 0);
}

/* ---- errors ---- */

/* An error reply to one of op's commands: SERVER (AUTH for credentials) with the server's
 * message and the key it was about. */
static void op_server_error_on(op_t *op, const redisReply *reply, const char *command,
                               const char *key)
{
    char text[FTS_ERROR_MESSAGE_SIZE];
    fts_redis_reply_text(reply, text, sizeof text);
    /* NOGROUP: the group or its stream vanished (FLUSHALL, a restart without persistence); the
     * loader recreates it (load_ports.h). */
    int code = fts_redis_is_auth_error(text)      ? FTS_ERROR_CODE_AUTH
               : strncmp(text, "NOGROUP", 7) == 0 ? FTS_ERROR_CODE_NO_GROUP
                                                  : FTS_ERROR_CODE_SERVER;
    fts_error_t err;
    fts_error_set(&err, FTS_ERROR_REDIS, code, "Redis at %s refused %s on \"%s\": %s",
                  op->group->address, command, key, text);
    op_set_error(op, &err);
}

static void op_server_error(op_t *op, const redisReply *reply, const char *command)
{
    op_server_error_on(op, reply, command, op->key);
}

/* A malformed reply to command: err (from redis_group_reply.h) says what was wrong with it. */
static void op_protocol_error(op_t *op, const char *command, fts_error_t *err)
{
    fts_error_prefix(err, "Redis at %s answered %s on \"%s\" with a malformed reply",
                     op->group->address, command, op->key);
    op_set_error(op, err);
}

/* ---- connections ---- */

static void conn_connect(conn_t *conn);
static void op_send(op_t *op);

static void conn_log_down(conn_t *conn)
{
    fts_log(FTS_LOG_WARN, LOG_COMPONENT, "%s connection to %s is down: %s", conn->role,
            conn->group->url->masked, conn->last_error.message);
}

static void conn_schedule_reconnect(conn_t *conn)
{
    uint64_t delay = fts_backoff_next_ms(&conn->backoff);
    struct timeval tv = to_timeval(delay);
    evtimer_add(conn->retry_timer, &tv);
}

/* The error an operation gets when submitted while its connection is down. */
static void conn_down_error(const conn_t *conn, fts_error_t *err)
{
    int code = conn->have_error ? conn->last_error.code : FTS_ERROR_CODE_CONNECT;
    if (code != FTS_ERROR_CODE_AUTH) {
        code = FTS_ERROR_CODE_CONNECT;
    }
    fts_error_set(err, FTS_ERROR_REDIS, code,
                  "the %s connection to Redis at %s is down (reconnecting in the background)%s%s",
                  conn->role, conn->group->address, conn->have_error ? ": " : "",
                  conn->have_error ? conn->last_error.message : "");
}

/* Fails everything that waited for the connection to come up. */
static void conn_fail_waiting(conn_t *conn)
{
    while (conn->waiting.head) {
        op_t *op = conn->waiting.head;
        fts_error_t err;
        conn_down_error(conn, &err);
        op_set_error(op, &err);
        op_complete_later(op);
    }
}

/* Marks conn down because its context ac is gone or going: hiredis frees it (a broken
 * connection, a failed connect), or we do. Ops sent on ac that have no error yet get one naming
 * the reason; their callbacks then arrive with NULL replies. */
static void conn_mark_down(conn_t *conn, redisAsyncContext *ac, const fts_error_t *reason)
{
    conn->ac = NULL;
    conn->state = CONN_DOWN;
    conn->connected = false;
    conn->last_error = *reason;
    conn->have_error = true;
    for (op_t *op = conn->inflight.head; op; op = op->next) {
        if (op->ac == ac && !op->failed) {
            fts_error_t err;
            fts_error_set(&err, FTS_ERROR_REDIS, reason->code,
                          "%s on Redis at %s failed: %s; it is not resent (it may have taken "
                          "effect)",
                          op->name, conn->group->address, reason->message);
            op_set_error(op, &err);
        }
    }
    conn_fail_waiting(conn);
    conn_log_down(conn);
    conn_schedule_reconnect(conn);
}

/* Drops conn's context by our own decision (the watchdog, a refused set-up command). */
static void conn_drop(conn_t *conn, const fts_error_t *reason)
{
    redisAsyncContext *ac = conn->ac;
    if (!ac) {
        return;
    }
    conn_mark_down(conn, ac, reason);
    if (conn->group->callback_depth == 0) {
        redisAsyncFree(ac);
        return;
    }
    for (size_t i = 0; i < MAX_DOOMED; i++) {
        if (!conn->doomed[i]) {
            conn->doomed[i] = ac;
            event_active(conn->reap, EV_TIMEOUT, 0);
            return;
        }
    }
    /* Callback-safe: hiredis closes once the replies still owed have come. */
    redisAsyncDisconnect(ac);
}

/* hiredis is freeing ac on its own: forget it if it was waiting to be reaped. */
static void conn_forget_doomed(conn_t *conn, const redisAsyncContext *ac)
{
    for (size_t i = 0; i < MAX_DOOMED; i++) {
        if (conn->doomed[i] == ac) {
            conn->doomed[i] = NULL;
        }
    }
}

static void conn_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_t *conn = arg;
    for (size_t i = 0; i < MAX_DOOMED; i++) {
        redisAsyncContext *ac = conn->doomed[i];
        conn->doomed[i] = NULL;
        if (ac) {
            redisAsyncFree(ac);
        }
    }
}

/* hiredis reports ac lost (errstr says why): mark the connection down unless we already let go
 * of that context. */
static void conn_lost(conn_t *conn, const redisAsyncContext *ac)
{
    conn_forget_doomed(conn, ac);
    if (conn->ac != ac) {
        return;
    }
    fts_error_t reason;
    fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "connection to Redis at %s lost: %s",
                  conn->group->address,
                  ac->errstr && ac->errstr[0] ? ac->errstr : "closed by the server");
    conn_mark_down(conn, conn->ac, &reason);
}

static void conn_up(conn_t *conn)
{
    conn->state = CONN_UP;
    fts_backoff_reset(&conn->backoff);
    if (conn->have_error) {
        fts_log(FTS_LOG_INFO, LOG_COMPONENT, "%s connection to %s is back", conn->role,
                conn->group->url->masked);
    }
    conn->have_error = false;
    while (conn->waiting.head) {
        op_t *op = conn->waiting.head;
        list_remove(op);
        op_send(op);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn_t *conn = ac->data;
    if (!conn || conn->group->destroying || conn->ac != ac) {
        return;
    }
    if (status == REDIS_OK) {
        conn->connected = true;
        conn->phase_ms = fts_clock_monotonic_ms();
        return;
    }
    /* hiredis frees ac when we return; its queued set-up commands get NULL replies. */
    fts_error_t reason;
    fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT,
                  "cannot connect to Redis at %s: %s", conn->group->address,
                  ac->errstr && ac->errstr[0] ? ac->errstr : "connection failed");
    conn->group->callback_depth++;
    conn_mark_down(conn, conn->ac, &reason);
    conn->group->callback_depth--;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    conn_t *conn = ac->data;
    if (!conn || conn->group->destroying) {
        return;
    }
    conn->group->callback_depth++;
    conn_lost(conn, ac);
    conn->group->callback_depth--;
}

/* The replies to AUTH, SELECT and PING, in that order; the last one opens the connection for
 * operations. Any error is the connection's failure. */
static void on_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    conn_t *conn = privdata;
    redisReply *reply = r;
    if (conn->group->destroying) {
        return;
    }
    if (!reply) {
        conn->group->callback_depth++;
        conn_lost(conn, ac);
        conn->group->callback_depth--;
        return;
    }
    if (conn->ac != ac || conn->setup_done >= conn->setup_count) {
        return;
    }
    const char *step = conn->setup_steps[conn->setup_done++];
    conn->group->callback_depth++;
    if (reply->type == REDIS_REPLY_ERROR) {
        char text[FTS_ERROR_MESSAGE_SIZE];
        fts_redis_reply_text(reply, text, sizeof text);
        bool auth = strcmp(step, "AUTH") == 0 || fts_redis_is_auth_error(text);
        fts_error_t reason;
        if (strcmp(step, "AUTH") == 0 && conn->group->url->user) {
            fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_AUTH,
                          "Redis at %s refused AUTH as user \"%s\": %s", conn->group->address,
                          conn->group->url->user, text);
        } else {
            fts_error_set(&reason, FTS_ERROR_REDIS,
                          auth ? FTS_ERROR_CODE_AUTH : FTS_ERROR_CODE_SERVER,
                          "Redis at %s refused %s: %s", conn->group->address, step, text);
        }
        conn_drop(conn, &reason);
    } else if (conn->setup_done == conn->setup_count) {
        conn_up(conn);
    }
    conn->group->callback_depth--;
}

/* Queues the set-up commands on a fresh context; hiredis sends them once connected. A fresh
 * context refuses a command only when hiredis cannot allocate it. */
static void conn_queue_setup(conn_t *conn)
{
    const fts_redis_url_t *url = conn->group->url;
    char db[16];
    snprintf(db, sizeof db, "%d", url->db);
    conn->setup_count = conn->setup_done = 0;
    if (url->password) {
        /* "AUTH user password" for an ACL user (Redis 6+); "AUTH password" for the default
         * user, which older servers also understand. */
        const char *with_user[] = {"AUTH", url->user ? url->user : "", url->password};
        const char *alone[] = {"AUTH", url->password};
        int status = url->user
                         ? redisAsyncCommandArgv(conn->ac, on_setup_reply, conn, 3, with_user, NULL)
                         : redisAsyncCommandArgv(conn->ac, on_setup_reply, conn, 2, alone, NULL);
        if (status != REDIS_OK) {
            fts_fatal_oom("the AUTH command for Redis");
        }
        conn->setup_steps[conn->setup_count++] = "AUTH";
    }
    if (url->db != 0) {
        const char *select[] = {"SELECT", db};
        if (redisAsyncCommandArgv(conn->ac, on_setup_reply, conn, 2, select, NULL) != REDIS_OK) {
            fts_fatal_oom("the SELECT command for Redis");
        }
        conn->setup_steps[conn->setup_count++] = "SELECT";
    }
    /* PING last: its answer proves the server speaks Redis and took the commands before. */
    const char *ping[] = {"PING"};
    if (redisAsyncCommandArgv(conn->ac, on_setup_reply, conn, 1, ping, NULL) != REDIS_OK) {
        fts_fatal_oom("the PING command for Redis");
    }
    conn->setup_steps[conn->setup_count++] = "PING";
}

/* One connection attempt. A failure now (an address that does not resolve, a socket refused)
 * counts like any other: the connection stays down and the retry timer tries again. */
static void conn_connect(conn_t *conn)
{
    fts_redis_group_t *group = conn->group;
    fts_error_t reason;
    redisAsyncContext *ac = redisAsyncConnect(group->url->host, group->url->port);
    if (!ac) {
        fts_fatal_oom("a connection to Redis"); /* hiredis returns NULL only then */
    }
    if (ac->err) {
        fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT,
                      "cannot connect to Redis at %s: %s", group->address, ac->errstr);
        redisAsyncFree(ac); /* never attached, no callbacks: safe here */
        goto failed;
    }
    ac->data = conn;
    if (redisLibeventAttach(ac, group->base) != REDIS_OK) {
        fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT,
                      "cannot attach the connection to Redis at %s to the event loop",
                      group->address);
        redisAsyncFree(ac);
        goto failed;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    conn->ac = ac;
    conn->state = CONN_CONNECTING;
    conn->connected = false;
    conn->phase_ms = fts_clock_monotonic_ms();
    conn_queue_setup(conn);
    return;

failed:
    conn->state = CONN_DOWN;
    conn->last_error = reason;
    conn->have_error = true;
    conn_fail_waiting(conn);
    conn_log_down(conn);
    conn_schedule_reconnect(conn);
}

static void conn_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_connect(arg);
}

/* Drops a connection whose oldest command (or whose connect) takes too long: hiredis 0.14 has
 * no timeout of its own for asynchronous contexts. */
static void conn_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_t *conn = arg;
    fts_redis_group_t *group = conn->group;
    uint64_t now = fts_clock_monotonic_ms();
    fts_error_t reason;
    if (conn->state == CONN_CONNECTING) {
        long limit = conn->connected ? group->command_timeout_ms : group->connect_timeout_ms;
        if (now - conn->phase_ms > (uint64_t)limit) {
            fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_TIMEOUT,
                          conn->connected
                              ? "Redis at %s did not answer the connection set-up within %ld ms"
                              : "Redis at %s did not accept a connection within %ld ms",
                          group->address, limit);
            conn_drop(conn, &reason);
        }
        return;
    }
    if (conn->state != CONN_UP) {
        return;
    }
    for (op_t *op = conn->inflight.head; op; op = op->next) {
        if (op->ac != conn->ac) {
            continue;
        }
        uint64_t limit = (uint64_t)group->command_timeout_ms + (uint64_t)conn->extra_ms;
        if (now - op->sent_ms > limit) {
            fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_TIMEOUT,
                          "Redis at %s did not answer %s within %" PRIu64 " ms", group->address,
                          op->name, limit);
            conn_drop(conn, &reason);
        }
        return; /* the oldest is the first on this context */
    }
}

/* Allocation failure aborts: libevent fails to create or add a timer only for want of memory. */
static void conn_init(fts_redis_group_t *group, conn_t *conn, const char *role, long extra_ms)
{
    conn->group = group;
    conn->role = role;
    conn->extra_ms = extra_ms;
    fts_backoff_init(&conn->backoff, FTS_REDIS_DEFAULT_RECONNECT_BASE_MS,
                     FTS_REDIS_DEFAULT_RECONNECT_CAP_MS, 0);
    conn->retry_timer = evtimer_new(group->base, conn_retry, conn);
    conn->watchdog = event_new(group->base, -1, EV_PERSIST, conn_watchdog, conn);
    conn->reap = event_new(group->base, -1, 0, conn_reap, conn);
    if (!conn->retry_timer || !conn->watchdog || !conn->reap) {
        fts_fatal_oom("the timers of a Redis connection");
    }
    long tick = group->command_timeout_ms / 10;
    if (tick > WATCHDOG_MAX_TICK_MS) {
        tick = WATCHDOG_MAX_TICK_MS;
    }
    if (tick < WATCHDOG_MIN_TICK_MS) {
        tick = WATCHDOG_MIN_TICK_MS;
    }
    struct timeval tv = to_timeval((uint64_t)tick);
    if (event_add(conn->watchdog, &tv) != 0) {
        fts_fatal_oom("the watchdog of a Redis connection");
    }
}

/* Frees the connection's contexts and ops without calling anybody (destroy). */
static void conn_release(conn_t *conn)
{
    redisAsyncContext *ac = conn->ac;
    conn->ac = NULL;
    if (ac) {
        redisAsyncFree(ac); /* its callbacks see destroying and only free their ops */
    }
    for (size_t i = 0; i < MAX_DOOMED; i++) {
        ac = conn->doomed[i];
        conn->doomed[i] = NULL;
        if (ac) {
            redisAsyncFree(ac);
        }
    }
    op_list_t *lists[] = {&conn->waiting, &conn->inflight};
    for (size_t i = 0; i < 2; i++) {
        while (lists[i]->head) {
            op_t *op = lists[i]->head;
            list_remove(op);
            op_free(op);
        }
    }
    if (conn->retry_timer) {
        event_free(conn->retry_timer);
    }
    if (conn->watchdog) {
        event_free(conn->watchdog);
    }
    if (conn->reap) {
        event_free(conn->reap);
    }
}

/* ---- replies ---- */

/* The entries of a read or claim, parsed into op->result (redis_group_reply.h). */
static void take_entries_reply(op_t *op, const redisReply *reply)
{
    fts_error_t err;
    bool ok = op->kind == OP_READ
                  ? fts_redis_group_parse_read(reply, op->history, &op->result, &err)
                  : fts_redis_group_parse_claim(reply, &op->result, &err);
    if (!ok) {
        op_protocol_error(op, op->name, &err);
    }
}

/* The delivery counts of the entries in op->result. */
static void take_pending_reply(op_t *op, const redisReply *reply)
{
    fts_error_t err;
    if (!fts_redis_group_parse_pending(reply, op->result.entries, op->result.count, &err)) {
        op_protocol_error(op, "XPENDING", &err);
    }
}

/* One reply: XACK's count, or the script's. An error means the script stopped at a failed
 * XADD before its XACK (or the XACK failed): nothing of this settlement is acknowledged. */
static void take_settle_reply(op_t *op, const redisReply *reply)
{
    if (reply->type == REDIS_REPLY_ERROR) {
        op_server_error_on(op, reply,
                           op->scripted ? "the settlement script (XADD dead letters, then XACK)"
                                        : "XACK",
                           op->scripted ? op->group->dead_key : op->group->stream_key);
        return;
    }
    if (reply->type != REDIS_REPLY_INTEGER) {
        fts_error_t err;
        fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL, "not an integer");
        op_protocol_error(op, op->scripted ? "the settlement script" : "XACK", &err);
    }
}

/* Checks (ensure, touch) or takes in (read, claim, settle) one reply that is not NULL. */
static void op_take_reply(op_t *op, const redisReply *reply)
{
    if (op->lookup_sent) {
        if (reply->type == REDIS_REPLY_ERROR) {
            op_server_error(op, reply, "XPENDING");
        } else {
            take_pending_reply(op, reply);
        }
        return;
    }
    if (op->kind == OP_SETTLE) {
        take_settle_reply(op, reply);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        /* The group exists already: what ensure wanted. */
        if (op->kind == OP_ENSURE && reply->str && strncmp(reply->str, "BUSYGROUP", 9) == 0) {
            return;
        }
        op_server_error(op, reply, op->name);
        return;
    }
    fts_error_t err;
    switch (op->kind) {
    case OP_READ:
    case OP_CLAIM:
        take_entries_reply(op, reply);
        break;
    case OP_ENSURE:
        if (reply->type != REDIS_REPLY_STATUS) {
            fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL, "not a status");
            op_protocol_error(op, op->name, &err);
        }
        break;
    case OP_TOUCH:
        if (reply->type != REDIS_REPLY_ARRAY) {
            fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL, "not an array of IDs");
            op_protocol_error(op, op->name, &err);
        }
        break;
    case OP_BARRIER:
        if (!fts_redis_group_parse_barrier(reply, op->barrier_id, &op->barrier_clear, &err)) {
            op_protocol_error(op, op->name, &err);
        }
        break;
    case OP_SETTLE:
        break;
    }
}

/* Builds the XPENDING batch that fetches the delivery counts of the entries just read or
 * claimed. A history read returns a run of our own pending entries in ID order, so one range
 * covers them exactly; claimed entries may have our other pending entries between them, so
 * each is asked for by its ID. */
static void op_build_lookup(op_t *op)
{
    fts_redis_group_t *group = op->group;
    const fts_stream_entry_t *entries = op->result.entries;
    size_t queries = op->kind == OP_READ ? 1 : op->result.count;
    for (size_t q = 0; q < queries; q++) {
        const char *first = op->kind == OP_READ ? entries[0].id : entries[q].id;
        const char *last = op->kind == OP_READ ? entries[op->result.count - 1].id : first;
        uint64_t count = op->kind == OP_READ ? op->result.count : 1;
        fts_redis_argv_t *command = op_add_command(op);
        const char *words[] = {"XPENDING", group->stream_key, group->group_name, first, last, NULL};
        fts_redis_argv_push_all(command, words);
        fts_redis_argv_push_u64(command, count);
        fts_redis_argv_push_str(command, group->consumer);
    }
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* All replies of op's last batch are in: send the delivery-count lookup, or complete. Runs
 * inside a hiredis callback. */
static void op_batch_done(op_t *op)
{
    bool lookup = (op->kind == OP_CLAIM || (op->kind == OP_READ && op->history)) &&
                  !op->lookup_sent && !op->failed && op->result.count > 0;
    if (lookup) {
        op->lookup_sent = true;
        list_remove(op);
        op_build_lookup(op);
        op_send(op);
        return;
    }
    list_remove(op);
    op_complete(op);
    op_free(op);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    op_t *op = privdata;
    fts_redis_group_t *group = op->group;
    redisReply *reply = r;
    op->awaiting--;
    if (group->destroying) {
        if (op->awaiting == 0) {
            list_remove(op);
            op_free(op);
        }
        return;
    }
    group->callback_depth++;
    if (!reply) {
        /* hiredis is freeing ac; if that is news to us, the connection broke. */
        conn_lost(op->conn, ac);
        if (!op->failed) {
            op_fail(op, FTS_ERROR_CODE_IO,
                    "%s on Redis at %s failed: %s; it is not resent (it may have taken effect)",
                    "the connection was closed");
        }
    } else if (!op->failed) {
        op_take_reply(op, reply);
    }
    if (op->awaiting == 0) {
        op_batch_done(op);
    }
    group->callback_depth--;
}

/* Sends op's batch on its connection, or parks or fails it according to the connection's
 * state. Never completes op synchronously. */
static void op_send(op_t *op)
{
    conn_t *conn = op->conn;
    assert(op->command_count > 0);
    if (conn->state == CONN_CONNECTING) {
        list_push(&conn->waiting, op);
        return;
    }
    if (conn->state != CONN_UP || !conn->ac) {
        fts_error_t err;
        conn_down_error(conn, &err);
        op_set_error(op, &err);
        op_clear_commands(op);
        op_complete_later(op);
        return;
    }
    op->ac = conn->ac;
    op->sent_ms = fts_clock_monotonic_ms();
    list_push(&conn->inflight, op);
    /* conn->ac is never a context hiredis is disconnecting or freeing: conn_mark_down lets go
     * of it before any callback of ours can send. So hiredis refuses a command only when it
     * cannot allocate it. */
    assert(!(conn->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)));
    for (size_t i = 0; i < op->command_count; i++) {
        fts_redis_argv_t *command = &op->commands[i];
        if (redisAsyncCommandArgv(conn->ac, on_reply, op, command->argc,
                                  (const char **)command->argv, command->argvlen) != REDIS_OK) {
            fts_fatal_oom("a command for Redis");
        }
        op->awaiting++;
    }
    op_clear_commands(op);
}

/* ---- public API ---- */

/* Never NULL when value is set: allocation failure aborts. */
static char *copy_option(const char *value, const char *name, fts_error_t *err)
{
    if (!value || !value[0]) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "Redis consumer group: %s is missing", name);
        return NULL;
    }
    return bson_strdup(value);
}

fts_redis_group_t *fts_redis_group_new(struct event_base *base, const char *url,
                                       const fts_redis_group_options_t *options, fts_error_t *err)
{
    assert(base && options);
    fts_redis_group_t *group = NULL;
    if (options->block_ms < 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "Redis consumer group: the BLOCK time %ld ms is negative", options->block_ms);
        goto cleanup;
    }
    group = bson_malloc0(sizeof *group);
    group->base = base;
    group->url = fts_redis_url_parse(url, err);
    if (!group->url) {
        goto cleanup;
    }
    /* Before anything can log a server's words. */
    fts_log_add_secret(group->url->password);
    snprintf(group->address, sizeof group->address,
             strchr(group->url->host, ':') ? "[%s]:%d" : "%s:%d", group->url->host,
             group->url->port);
    if (!(group->stream_key = copy_option(options->stream_key, "stream key", err)) ||
        !(group->dead_key = copy_option(options->dead_key, "dead-letter key", err)) ||
        !(group->group_name = copy_option(options->group, "group name", err)) ||
        !(group->consumer = copy_option(options->consumer, "consumer name", err))) {
        goto cleanup;
    }
    group->connect_timeout_ms = options->connect_timeout_ms > 0
                                    ? options->connect_timeout_ms
                                    : FTS_REDIS_DEFAULT_CONNECT_TIMEOUT_MS;
    group->command_timeout_ms = options->command_timeout_ms > 0
                                    ? options->command_timeout_ms
                                    : FTS_REDIS_DEFAULT_COMMAND_TIMEOUT_MS;
    group->block_ms = options->block_ms;
    group->claim_min_idle_ms = options->claim_min_idle_ms;
    group->due_event = event_new(base, -1, 0, due_run, group);
    if (!group->due_event) {
        fts_fatal_oom("an event of the Redis consumer group");
    }
    conn_init(group, &group->read_conn, "reading", group->block_ms);
    conn_init(group, &group->command_conn, "command", 0);
    conn_connect(&group->read_conn);
    conn_connect(&group->command_conn);
    return group;

cleanup:
    fts_redis_group_destroy(group);
    return NULL;
}

void fts_redis_group_destroy(fts_redis_group_t *group)
{
    if (!group) {
        return;
    }
    group->destroying = true;
    if (group->read_conn.group) {
        conn_release(&group->read_conn);
    }
    if (group->command_conn.group) {
        conn_release(&group->command_conn);
    }
    while (group->due.head) {
        op_t *op = group->due.head;
        list_remove(op);
        op_free(op);
    }
    if (group->due_event) {
        event_free(group->due_event);
    }
    fts_redis_url_destroy(group->url);
    bson_free(group->stream_key);
    bson_free(group->dead_key);
    bson_free(group->group_name);
    bson_free(group->consumer);
    bson_free(group);
}

void fts_redis_group_ensure(fts_redis_group_t *group, fts_redis_group_done_fn done, void *arg)
{
    op_t *op = op_new(group, &group->command_conn, OP_ENSURE, "XGROUP CREATE", group->stream_key);
    op->done = done;
    op->arg = arg;
    const char *words[] = {"XGROUP",   "CREATE", group->stream_key, group->group_name, "0",
                           "MKSTREAM", NULL};
    fts_redis_argv_push_all(op_add_command(op), words);
    op_send(op);
}

void fts_redis_group_read(fts_redis_group_t *group, const char *start_id, size_t count,
                          fts_redis_group_entries_fn done, void *arg)
{
    assert(start_id && start_id[0] && strlen(start_id) < FTS_STREAM_ID_SIZE);
    op_t *op = op_new(group, &group->read_conn, OP_READ, "XREADGROUP", group->stream_key);
    op->entries_done = done;
    op->arg = arg;
    op->history = strcmp(start_id, ">") != 0;
    fts_redis_argv_t *command = op_add_command(op);
    const char *head[] = {"XREADGROUP", "GROUP", group->group_name, group->consumer, "COUNT", NULL};
    fts_redis_argv_push_all(command, head);
    fts_redis_argv_push_u64(command, count > 0 ? count : 1);
    /* Only new entries are waited for; a history read answers at once anyway. */
    if (!op->history && group->block_ms > 0) {
        fts_redis_argv_push_str(command, "BLOCK");
        fts_redis_argv_push_u64(command, (uint64_t)group->block_ms);
    }
    const char *tail[] = {"STREAMS", group->stream_key, start_id, NULL};
    fts_redis_argv_push_all(command, tail);
    op_send(op);
}

void fts_redis_group_claim(fts_redis_group_t *group, const char *cursor, size_t count,
                           fts_redis_group_entries_fn done, void *arg)
{
    assert(cursor && cursor[0] && strlen(cursor) < FTS_STREAM_ID_SIZE);
    op_t *op = op_new(group, &group->command_conn, OP_CLAIM, "XAUTOCLAIM", group->stream_key);
    op->entries_done = done;
    op->arg = arg;
    fts_redis_argv_t *command = op_add_command(op);
    const char *head[] = {"XAUTOCLAIM", group->stream_key, group->group_name, group->consumer,
                          NULL};
    const char *tail[] = {cursor, "COUNT", NULL};
    fts_redis_argv_push_all(command, head);
    fts_redis_argv_push_u64(command, group->claim_min_idle_ms);
    fts_redis_argv_push_all(command, tail);
    fts_redis_argv_push_u64(command, count > 0 ? count : 1);
    op_send(op);
}

void fts_redis_group_touch(fts_redis_group_t *group, const char *const *ids, size_t count,
                           fts_redis_group_done_fn done, void *arg)
{
    op_t *op = op_new(group, &group->command_conn, OP_TOUCH, "XCLAIM", group->stream_key);
    op->done = done;
    op->arg = arg;
    if (count == 0) {
        op_complete_later(op); /* nothing to touch: done */
        return;
    }
    fts_redis_argv_t *command = op_add_command(op);
    const char *head[] = {"XCLAIM", group->stream_key, group->group_name, group->consumer, "0",
                          NULL};
    fts_redis_argv_push_all(command, head);
    for (size_t i = 0; i < count; i++) {
        assert(ids[i]);
        fts_redis_argv_push_str(command, ids[i]);
    }
    fts_redis_argv_push_str(command, "JUSTID");
    op_send(op);
}

void fts_redis_group_mark(fts_redis_group_t *group, const char *const *ids, const uint64_t *counts,
                          size_t count, fts_redis_group_done_fn done, void *arg)
{
    op_t *op =
        op_new(group, &group->command_conn, OP_TOUCH, "XCLAIM RETRYCOUNT", group->stream_key);
    op->done = done;
    op->arg = arg;
    if (count == 0) {
        op_complete_later(op);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        assert(ids[i]);
        fts_redis_argv_t *command = op_add_command(op);
        const char *head[] = {"XCLAIM", group->stream_key, group->group_name, group->consumer, "0",
                              NULL};
        fts_redis_argv_push_all(command, head);
        fts_redis_argv_push_str(command, ids[i]);
        fts_redis_argv_push_str(command, "RETRYCOUNT");
        char number[24];
        snprintf(number, sizeof number, "%" PRIu64, counts[i]);
        fts_redis_argv_push_str(command, number);
        fts_redis_argv_push_str(command, "JUSTID");
    }
    op_send(op);
}

void fts_redis_group_settle(fts_redis_group_t *group, const fts_settlement_t *settlement,
                            fts_redis_group_done_fn done, void *arg)
{
    assert(settlement);
    op_t *op = op_new(group, &group->command_conn, OP_SETTLE, "the settlement", group->stream_key);
    op->done = done;
    op->arg = arg;
    if (settlement->dead_count == 0 && settlement->ack_count == 0) {
        op_complete_later(op); /* nothing to write: settled */
        return;
    }
    fts_redis_group_names_t names = {
        .stream_key = group->stream_key,
        .dead_key = group->dead_key,
        .group = group->group_name,
        .consumer = group->consumer,
    };
    op->scripted =
        fts_redis_group_build_settle(op_add_command(op), &names, settlement, fts_clock_wall_ms());
    op_send(op);
}

void fts_redis_group_barrier(fts_redis_group_t *group, const char *id,
                             fts_redis_group_barrier_fn done, void *arg)
{
    assert(id && id[0] && strlen(id) < FTS_STREAM_ID_SIZE && done);
    op_t *op = op_new(group, &group->command_conn, OP_BARRIER, "XPENDING", group->stream_key);
    op->barrier_done = done;
    op->arg = arg;
    snprintf(op->barrier_id, sizeof op->barrier_id, "%s", id);
    const char *words[] = {"XPENDING", group->stream_key, group->group_name, "-", id, "1", NULL};
    fts_redis_argv_push_all(op_add_command(op), words);
    op_send(op);
}

bool fts_redis_group_connected(const fts_redis_group_t *group)
{
    return group && group->read_conn.state == CONN_UP && group->command_conn.state == CONN_UP;
}
