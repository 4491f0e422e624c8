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
 * Completions that do not come from a reply (a connection that is down, an empty settlement,
 * an argument we refuse) go through the "due" list and one event of ours rather than
 * event_base_once, because a pending event_base_once cannot be cancelled and destroy must call
 * no callback.
 */
#include "redis_group.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "log.h"
#include "redis_conn.h"
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
    char address[300]; /* "host:port" or "[v6]:port", for messages */
    conn_t reader;
    conn_t commands;
    op_list_t due;           /* completions to run from the loop */
    struct event *due_event; /* runs them */
    unsigned callback_depth; /* > 0 while inside a hiredis callback of ours */
    bool destroying;         /* no user callback may run any more */
};

typedef enum { OP_ENSURE, OP_READ, OP_CLAIM, OP_TOUCH, OP_SETTLE } op_kind_t;

/* One command with owned copies of its arguments. */
typedef struct {
    int argc;
    int cap;
    char **argv;
    size_t *argvlen;
} command_t;

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
    void *arg;
    command_t *commands; /* the batch still to send */
    size_t command_count;
    size_t batch_size; /* commands in the batch sent last */
    size_t replies;    /* replies received for that batch */
    unsigned awaiting; /* callbacks hiredis still owes us */
    uint64_t sent_ms;
    bool history;     /* read: start_id other than ">" */
    bool acks;        /* settle: the scripted form (dead letters, then XACK) */
    bool lookup_sent; /* the XPENDING batch went out */
    bool failed;
    fts_error_t err;
    fts_stream_entry_t *entries; /* owned, items included (one block per entry) */
    size_t entry_count;
    char next_cursor[FTS_STREAM_ID_SIZE];
    bool has_cursor;
    uint64_t deleted;
};

static uint64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static uint64_t unix_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

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

static void command_clear(command_t *command)
{
    for (int i = 0; i < command->argc; i++) {
        free(command->argv[i]);
    }
    free(command->argv);
    free(command->argvlen);
    memset(command, 0, sizeof *command);
}

static bool command_push(command_t *command, const char *data, size_t len)
{
    if (command->argc == command->cap) {
        int cap = command->cap ? command->cap * 2 : 16;
        char **argv = realloc(command->argv, (size_t)cap * sizeof *argv);
        if (!argv) {
            return false;
        }
        command->argv = argv;
        size_t *argvlen = realloc(command->argvlen, (size_t)cap * sizeof *argvlen);
        if (!argvlen) {
            return false;
        }
        command->argvlen = argvlen;
        command->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        return false;
    }
    if (len) {
        memcpy(copy, data, len);
    }
    copy[len] = '\0';
    command->argv[command->argc] = copy;
    command->argvlen[command->argc] = len;
    command->argc++;
    return true;
}

static bool command_push_str(command_t *command, const char *text)
{
    return command_push(command, text, strlen(text));
}

static bool command_push_u64(command_t *command, uint64_t value)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRIu64, value);
    return command_push_str(command, text);
}

/* Pushes a NULL-terminated list of C strings. */
static bool command_push_all(command_t *command, const char *const *words)
{
    for (; *words; words++) {
        if (!command_push_str(command, *words)) {
            return false;
        }
    }
    return true;
}

/* Appends an empty command to op's batch; NULL when out of memory. */
static command_t *op_add_command(op_t *op)
{
    command_t *commands = realloc(op->commands, (op->command_count + 1) * sizeof *commands);
    if (!commands) {
        return NULL;
    }
    op->commands = commands;
    command_t *command = &commands[op->command_count++];
    memset(command, 0, sizeof *command);
    return command;
}

static void op_clear_commands(op_t *op)
{
    for (size_t i = 0; i < op->command_count; i++) {
        command_clear(&op->commands[i]);
    }
    free(op->commands);
    op->commands = NULL;
    op->command_count = 0;
}

/* ---- operations ---- */

static op_t *op_new(fts_redis_group_t *group, conn_t *conn, op_kind_t kind, const char *name,
                    const char *key)
{
    op_t *op = calloc(1, sizeof *op);
    if (op) {
        op->group = group;
        op->conn = conn;
        op->kind = kind;
        op->name = name;
        op->key = key;
    }
    return op;
}

static void op_free(op_t *op)
{
    if (!op) {
        return;
    }
    op_clear_commands(op);
    for (size_t i = 0; i < op->entry_count; i++) {
        free((void *)op->entries[i].items);
    }
    free(op->entries);
    free(op);
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
    const fts_error_t *err = op->failed ? &op->err : NULL;
    if (op->kind == OP_READ || op->kind == OP_CLAIM) {
        if (err) {
            op->entries_done(op->arg, NULL, 0, NULL, 0, err);
        } else {
            op->entries_done(op->arg, op->entries, op->entry_count,
                             op->has_cursor ? op->next_cursor : NULL, op->deleted, NULL);
        }
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

/* Error replies that are about who we are rather than what we asked. */
static bool is_auth_error(const char *message)
{
    return strncmp(message, "NOAUTH", 6) == 0 || strncmp(message, "WRONGPASS", 9) == 0 ||
           strncmp(message, "NOPERM", 6) == 0;
}

/* The server's error text, cut to fit and scrubbed of secrets in case it echoes one. */
static void reply_text(const redisReply *reply, char *out, size_t size)
{
    char text[FTS_ERROR_MESSAGE_SIZE];
    size_t len = reply->str ? reply->len : 0;
    snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text ? len : sizeof text - 1),
             reply->str ? reply->str : "");
    fts_log_redact(text, out, size);
}

/* An error reply to one of op's commands: SERVER (AUTH for credentials) with the server's
 * message and the key it was about. */
static void op_server_error_on(op_t *op, const redisReply *reply, const char *command,
                               const char *key)
{
    char text[FTS_ERROR_MESSAGE_SIZE];
    reply_text(reply, text, sizeof text);
    fts_error_t err;
    fts_error_set(&err, FTS_ERROR_REDIS,
                  is_auth_error(text) ? FTS_ERROR_CODE_AUTH : FTS_ERROR_CODE_SERVER,
                  "Redis at %s refused %s on \"%s\": %s", op->group->address, command, key, text);
    op_set_error(op, &err);
}

static void op_server_error(op_t *op, const redisReply *reply, const char *command)
{
    op_server_error_on(op, reply, command, op->key);
}

static void op_protocol_error(op_t *op, const char *command, const char *what)
{
    fts_error_t err;
    fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                  "Redis at %s answered %s on \"%s\" with a malformed reply: %s",
                  op->group->address, command, op->key, what);
    op_set_error(op, &err);
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

/* Drops conn's context by our own decision (watchdog, failed set-up, a half-sent
 * transaction). */
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
        conn->phase_ms = monotonic_ms();
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
        reply_text(reply, text, sizeof text);
        bool auth = strcmp(step, "AUTH") == 0 || is_auth_error(text);
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

/* Queues the set-up commands on a fresh context; hiredis sends them once connected. */
static bool conn_queue_setup(conn_t *conn)
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
            return false;
        }
        conn->setup_steps[conn->setup_count++] = "AUTH";
    }
    if (url->db != 0) {
        const char *select[] = {"SELECT", db};
        if (redisAsyncCommandArgv(conn->ac, on_setup_reply, conn, 2, select, NULL) != REDIS_OK) {
            return false;
        }
        conn->setup_steps[conn->setup_count++] = "SELECT";
    }
    /* PING last: its answer proves the server speaks Redis and took the commands before. */
    const char *ping[] = {"PING"};
    if (redisAsyncCommandArgv(conn->ac, on_setup_reply, conn, 1, ping, NULL) != REDIS_OK) {
        return false;
    }
    conn->setup_steps[conn->setup_count++] = "PING";
    return true;
}

/* One connection attempt. A failure now (no memory, an address that does not resolve) counts
 * like any other: the connection stays down and the retry timer tries again. */
static void conn_connect(conn_t *conn)
{
    fts_redis_group_t *group = conn->group;
    fts_error_t reason;
    redisAsyncContext *ac = redisAsyncConnect(group->url->host, group->url->port);
    if (!ac) {
        fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory connecting to Redis at %s", group->address);
        goto failed;
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
    conn->phase_ms = monotonic_ms();
    if (!conn_queue_setup(conn)) {
        fts_error_set(&reason, FTS_ERROR_REDIS, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory preparing the set-up commands for Redis at %s",
                      group->address);
        conn_drop(conn, &reason);
    }
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
    uint64_t now = monotonic_ms();
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

static bool conn_init(fts_redis_group_t *group, conn_t *conn, const char *role, long extra_ms)
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
        return false;
    }
    long tick = group->command_timeout_ms / 10;
    if (tick > WATCHDOG_MAX_TICK_MS) {
        tick = WATCHDOG_MAX_TICK_MS;
    }
    if (tick < WATCHDOG_MIN_TICK_MS) {
        tick = WATCHDOG_MIN_TICK_MS;
    }
    struct timeval tv = to_timeval((uint64_t)tick);
    return event_add(conn->watchdog, &tv) == 0;
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

/* Copies one [id, [field, value, ...]] (or [id, nil]) into op->entries. */
static bool parse_entry(op_t *op, const redisReply *entry, size_t capacity)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING) {
        op_protocol_error(op, op->name, "an entry is not [id, fields]");
        return false;
    }
    const redisReply *id = entry->element[0];
    const redisReply *fields = entry->element[1];
    if (id->len == 0 || id->len >= FTS_STREAM_ID_SIZE) {
        op_protocol_error(op, op->name, "an entry ID is empty or too long");
        return false;
    }
    if (fields->type != REDIS_REPLY_NIL &&
        (fields->type != REDIS_REPLY_ARRAY || fields->elements % 2 != 0)) {
        op_protocol_error(op, op->name, "an entry's fields are not field/value pairs");
        return false;
    }
    if (op->entry_count >= capacity) {
        op_protocol_error(op, op->name, "more entries than counted");
        return false;
    }
    fts_stream_entry_t *out = &op->entries[op->entry_count];
    memset(out, 0, sizeof *out);
    memcpy(out->id, id->str, id->len);
    out->id[id->len] = '\0';
    out->deliveries = op->kind == OP_READ && !op->history ? 1 : 0;
    if (fields->type == REDIS_REPLY_NIL) {
        op->entry_count++; /* deleted from the stream while pending: items NULL */
        return true;
    }
    /* One block: the item array, then every item's bytes, each NUL-terminated for safety. */
    size_t bytes = fields->elements * sizeof(fts_bytes_t) + 1;
    for (size_t i = 0; i < fields->elements; i++) {
        const redisReply *item = fields->element[i];
        if (item->type != REDIS_REPLY_STRING) {
            op_protocol_error(op, op->name, "an entry's field or value is not a string");
            return false;
        }
        bytes += item->len + 1;
    }
    char *block = malloc(bytes);
    if (!block) {
        fts_error_t err;
        fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory copying the reply to %s from Redis at %s", op->name,
                      op->group->address);
        op_set_error(op, &err);
        return false;
    }
    fts_bytes_t *items = (fts_bytes_t *)(void *)block;
    char *data = block + fields->elements * sizeof(fts_bytes_t);
    for (size_t i = 0; i < fields->elements; i++) {
        const redisReply *item = fields->element[i];
        memcpy(data, item->str, item->len);
        data[item->len] = '\0';
        items[i].data = data;
        items[i].len = item->len;
        data += item->len + 1;
    }
    out->items = items;
    out->count = fields->elements;
    op->entry_count++;
    return true;
}

static bool parse_entries(op_t *op, const redisReply *list)
{
    if (list->type != REDIS_REPLY_ARRAY) {
        op_protocol_error(op, op->name, "the entries are not an array");
        return false;
    }
    if (list->elements == 0) {
        return true;
    }
    op->entries = calloc(list->elements, sizeof *op->entries);
    if (!op->entries) {
        fts_error_t err;
        fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory copying the reply to %s from Redis at %s", op->name,
                      op->group->address);
        op_set_error(op, &err);
        return false;
    }
    for (size_t i = 0; i < list->elements; i++) {
        /* Redis 6.2's XAUTOCLAIM put a nil where an entry had been deleted; 7 lists those
         * separately. Count them either way. */
        if (list->element[i]->type == REDIS_REPLY_NIL) {
            op->deleted++;
            continue;
        }
        if (!parse_entry(op, list->element[i], list->elements)) {
            return false;
        }
    }
    return true;
}

/* RESP2 XREADGROUP: nil when BLOCK ran out, else [[stream, entries]]. */
static void take_read_reply(op_t *op, const redisReply *reply)
{
    if (reply->type == REDIS_REPLY_NIL) {
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1 ||
        reply->element[0]->type != REDIS_REPLY_ARRAY || reply->element[0]->elements != 2) {
        op_protocol_error(op, op->name, "not [[stream, entries]]");
        return;
    }
    parse_entries(op, reply->element[0]->element[1]);
}

/* XAUTOCLAIM (Redis 7): [next cursor, entries, deleted IDs]; 6.2 sends no third element. */
static void take_claim_reply(op_t *op, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 2 && reply->elements != 3) ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[0]->len >= FTS_STREAM_ID_SIZE) {
        op_protocol_error(op, op->name, "not [cursor, entries, deleted]");
        return;
    }
    memcpy(op->next_cursor, reply->element[0]->str, reply->element[0]->len);
    op->next_cursor[reply->element[0]->len] = '\0';
    op->has_cursor = true;
    if (!parse_entries(op, reply->element[1])) {
        return;
    }
    if (reply->elements == 3) {
        if (reply->element[2]->type != REDIS_REPLY_ARRAY) {
            op_protocol_error(op, op->name, "the deleted IDs are not an array");
            return;
        }
        op->deleted += reply->element[2]->elements;
    }
}

/* Extended XPENDING: [[id, consumer, idle ms, deliveries], ...]. Rows are matched by ID: an
 * entry another consumer took meanwhile is simply not listed and keeps deliveries 0. */
static void take_pending_reply(op_t *op, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY) {
        op_protocol_error(op, "XPENDING", "not an array of [id, consumer, idle, deliveries]");
        return;
    }
    size_t hint = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *row = reply->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements != 4 ||
            row->element[0]->type != REDIS_REPLY_STRING ||
            row->element[3]->type != REDIS_REPLY_INTEGER || row->element[3]->integer < 0) {
            op_protocol_error(op, "XPENDING", "a row is not [id, consumer, idle, deliveries]");
            return;
        }
        const redisReply *id = row->element[0];
        for (size_t n = 0; n < op->entry_count; n++) {
            fts_stream_entry_t *entry = &op->entries[(hint + n) % op->entry_count];
            if (strlen(entry->id) == id->len && memcmp(entry->id, id->str, id->len) == 0) {
                entry->deliveries = (uint64_t)row->element[3]->integer;
                hint = (hint + n + 1) % op->entry_count;
                break;
            }
        }
    }
}

/* One reply: XACK's count, or the script's. An error means the script stopped at a failed
 * XADD before its XACK (or the XACK failed): nothing of this settlement is acknowledged. */
static void take_settle_reply(op_t *op, const redisReply *reply, size_t index)
{
    (void)index;
    if (reply->type == REDIS_REPLY_ERROR) {
        op_server_error_on(
            op, reply, op->acks ? "the settlement script (XADD dead letters, then XACK)" : "XACK",
            op->acks ? op->group->dead_key : op->group->stream_key);
        return;
    }
    if (reply->type != REDIS_REPLY_INTEGER) {
        op_protocol_error(op, op->acks ? "the settlement script" : "XACK", "not an integer");
    }
}

static void op_take_reply(op_t *op, const redisReply *reply, size_t index)
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
        take_settle_reply(op, reply, index);
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
    switch (op->kind) {
    case OP_READ:
        take_read_reply(op, reply);
        break;
    case OP_CLAIM:
        take_claim_reply(op, reply);
        break;
    case OP_ENSURE:
        if (reply->type != REDIS_REPLY_STATUS) {
            op_protocol_error(op, op->name, "not a status");
        }
        break;
    case OP_TOUCH:
        if (reply->type != REDIS_REPLY_ARRAY) {
            op_protocol_error(op, op->name, "not an array of IDs");
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
static bool op_build_lookup(op_t *op)
{
    fts_redis_group_t *group = op->group;
    size_t queries = op->kind == OP_READ ? 1 : op->entry_count;
    for (size_t q = 0; q < queries; q++) {
        const char *first = op->kind == OP_READ ? op->entries[0].id : op->entries[q].id;
        const char *last = op->kind == OP_READ ? op->entries[op->entry_count - 1].id : first;
        uint64_t count = op->kind == OP_READ ? op->entry_count : 1;
        command_t *command = op_add_command(op);
        if (!command) {
            return false;
        }
        const char *words[] = {"XPENDING", group->stream_key, group->group_name, first, last, NULL};
        if (!command_push_all(command, words) || !command_push_u64(command, count) ||
            !command_push_str(command, group->consumer)) {
            return false;
        }
    }
    return true;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* All replies of op's last batch are in: send the delivery-count lookup, or complete. Runs
 * inside a hiredis callback. */
static void op_batch_done(op_t *op)
{
    bool lookup = (op->kind == OP_CLAIM || (op->kind == OP_READ && op->history)) &&
                  !op->lookup_sent && !op->failed && op->entry_count > 0;
    if (lookup) {
        op->lookup_sent = true;
        list_remove(op);
        if (!op_build_lookup(op)) {
            fts_error_t err;
            fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_NO_MEMORY,
                          "out of memory preparing XPENDING for Redis at %s", op->group->address);
            op_set_error(op, &err);
            op_clear_commands(op);
        } else {
            op_send(op);
            return;
        }
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
    size_t index = op->replies++;
    if (!reply) {
        /* hiredis is freeing ac; if that is news to us, the connection broke. */
        conn_lost(op->conn, ac);
        if (!op->failed) {
            op_fail(op, FTS_ERROR_CODE_IO,
                    "%s on Redis at %s failed: %s; it is not resent (it may have taken effect)",
                    "the connection was closed");
        }
    } else if (!op->failed) {
        op_take_reply(op, reply, index);
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
    op->sent_ms = monotonic_ms();
    op->replies = 0;
    op->batch_size = 0;
    list_push(&conn->inflight, op);
    for (size_t i = 0; i < op->command_count; i++) {
        command_t *command = &op->commands[i];
        if (redisAsyncCommandArgv(conn->ac, on_reply, op, command->argc,
                                  (const char **)command->argv, command->argvlen) != REDIS_OK) {
            fts_error_t err;
            fts_error_set(&err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO,
                          "cannot send %s to Redis at %s: %s", op->name, op->group->address,
                          conn->ac->errstr && conn->ac->errstr[0] ? conn->ac->errstr
                                                                  : "the connection is closing");
            op_set_error(op, &err);
            if (i > 0) {
                /* Half a pipeline went out (maybe an open MULTI): the connection must not
                 * carry anything else. Its callbacks complete op - from the loop: counted as
                 * inside a callback, the drop is deferred, since op_send may run inside the
                 * caller's call. */
                op->group->callback_depth++;
                conn_drop(conn, &err);
                op->group->callback_depth--;
            }
            break;
        }
        op->awaiting++;
        op->batch_size++;
    }
    op_clear_commands(op);
    if (op->awaiting == 0) {
        op_complete_later(op);
    }
}

/* ---- public API ---- */

static char *copy_option(const char *value, const char *name, fts_error_t *err)
{
    if (!value || !value[0]) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "Redis consumer group: %s is missing", name);
        return NULL;
    }
    char *copy = strdup(value);
    if (!copy) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory copying the Redis consumer group's %s", name);
    }
    return copy;
}

fts_redis_group_t *fts_redis_group_new(struct event_base *base, const char *url,
                                       const fts_redis_group_options_t *options, fts_error_t *err)
{
    fts_redis_group_t *group = NULL;
    if (!base || !options) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "Redis consumer group: no event loop or no options");
        goto cleanup;
    }
    if (options->block_ms < 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "Redis consumer group: the BLOCK time %ld ms is negative", options->block_ms);
        goto cleanup;
    }
    group = calloc(1, sizeof *group);
    if (!group) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_NO_MEMORY,
                      "out of memory creating the Redis consumer group");
        goto cleanup;
    }
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
    if (!group->due_event || !conn_init(group, &group->reader, "reading", group->block_ms) ||
        !conn_init(group, &group->commands, "command", 0)) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_NO_MEMORY,
                      "cannot create the events of the Redis consumer group");
        goto cleanup;
    }
    conn_connect(&group->reader);
    conn_connect(&group->commands);
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
    if (group->reader.group) {
        conn_release(&group->reader);
    }
    if (group->commands.group) {
        conn_release(&group->commands);
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
    free(group->stream_key);
    free(group->dead_key);
    free(group->group_name);
    free(group->consumer);
    free(group);
}

/* An op that could not even be prepared: it still completes from the loop. */
static void op_refuse(op_t *op, int code, const char *message)
{
    fts_error_t err;
    fts_error_set(&err, code == FTS_ERROR_CODE_NO_MEMORY ? FTS_ERROR_REDIS : FTS_ERROR_INTERNAL,
                  code, "%s on Redis at %s: %s", op->name, op->group->address, message);
    op_set_error(op, &err);
    op_clear_commands(op);
    op_complete_later(op);
}

/* Out of memory before an op exists: nothing can be reported from the loop, so it is said
 * loudly; the caller's operation then never completes, which its own timeouts cover. */
static void log_no_op(const char *name)
{
    fts_log(FTS_LOG_ERROR, LOG_COMPONENT, "out of memory starting %s; it will not complete", name);
}

void fts_redis_group_ensure(fts_redis_group_t *group, fts_redis_group_done_fn done, void *arg)
{
    op_t *op = op_new(group, &group->commands, OP_ENSURE, "XGROUP CREATE", group->stream_key);
    if (!op) {
        log_no_op("XGROUP CREATE");
        return;
    }
    op->done = done;
    op->arg = arg;
    command_t *command = op_add_command(op);
    const char *words[] = {"XGROUP",   "CREATE", group->stream_key, group->group_name, "0",
                           "MKSTREAM", NULL};
    if (!command || !command_push_all(command, words)) {
        op_refuse(op, FTS_ERROR_CODE_NO_MEMORY, "out of memory");
        return;
    }
    op_send(op);
}

void fts_redis_group_read(fts_redis_group_t *group, const char *start_id, size_t count,
                          fts_redis_group_entries_fn done, void *arg)
{
    op_t *op = op_new(group, &group->reader, OP_READ, "XREADGROUP", group->stream_key);
    if (!op) {
        log_no_op("XREADGROUP");
        return;
    }
    op->entries_done = done;
    op->arg = arg;
    if (!start_id || !start_id[0] || strlen(start_id) >= FTS_STREAM_ID_SIZE) {
        op_refuse(op, FTS_ERROR_CODE_INVALID, "the start ID is missing or too long");
        return;
    }
    op->history = strcmp(start_id, ">") != 0;
    command_t *command = op_add_command(op);
    const char *head[] = {"XREADGROUP", "GROUP", group->group_name, group->consumer, "COUNT", NULL};
    bool ok = command && command_push_all(command, head) &&
              command_push_u64(command, count > 0 ? count : 1);
    /* Only new entries are waited for; a history read answers at once anyway. */
    if (ok && !op->history && group->block_ms > 0) {
        ok = command_push_str(command, "BLOCK") &&
             command_push_u64(command, (uint64_t)group->block_ms);
    }
    const char *tail[] = {"STREAMS", group->stream_key, start_id, NULL};
    if (!ok || !command_push_all(command, tail)) {
        op_refuse(op, FTS_ERROR_CODE_NO_MEMORY, "out of memory");
        return;
    }
    op_send(op);
}

void fts_redis_group_claim(fts_redis_group_t *group, const char *cursor, size_t count,
                           fts_redis_group_entries_fn done, void *arg)
{
    op_t *op = op_new(group, &group->commands, OP_CLAIM, "XAUTOCLAIM", group->stream_key);
    if (!op) {
        log_no_op("XAUTOCLAIM");
        return;
    }
    op->entries_done = done;
    op->arg = arg;
    if (!cursor || !cursor[0] || strlen(cursor) >= FTS_STREAM_ID_SIZE) {
        op_refuse(op, FTS_ERROR_CODE_INVALID, "the cursor is missing or too long");
        return;
    }
    command_t *command = op_add_command(op);
    const char *head[] = {"XAUTOCLAIM", group->stream_key, group->group_name, group->consumer,
                          NULL};
    const char *tail[] = {cursor, "COUNT", NULL};
    if (!command || !command_push_all(command, head) ||
        !command_push_u64(command, group->claim_min_idle_ms) || !command_push_all(command, tail) ||
        !command_push_u64(command, count > 0 ? count : 1)) {
        op_refuse(op, FTS_ERROR_CODE_NO_MEMORY, "out of memory");
        return;
    }
    op_send(op);
}

void fts_redis_group_touch(fts_redis_group_t *group, const char *const *ids, size_t count,
                           fts_redis_group_done_fn done, void *arg)
{
    op_t *op = op_new(group, &group->commands, OP_TOUCH, "XCLAIM", group->stream_key);
    if (!op) {
        log_no_op("XCLAIM");
        return;
    }
    op->done = done;
    op->arg = arg;
    if (count == 0) {
        op_complete_later(op); /* nothing to touch: done */
        return;
    }
    command_t *command = op_add_command(op);
    const char *head[] = {"XCLAIM", group->stream_key, group->group_name, group->consumer, "0",
                          NULL};
    bool ok = command && command_push_all(command, head);
    for (size_t i = 0; ok && i < count; i++) {
        ok = ids[i] && command_push_str(command, ids[i]);
    }
    if (!ok || !command_push_str(command, "JUSTID")) {
        op_refuse(op, FTS_ERROR_CODE_NO_MEMORY, "out of memory or an ID is missing");
        return;
    }
    op_send(op);
}

/* Writes the dead letters, then acknowledges, in one script: redis.call raises on the first
 * failure (a dead-letter key of the wrong type), so the XACK is only reached once every dead
 * letter is in. A MULTI/EXEC would not do: Redis runs the rest of a transaction after a command
 * in it failed, and would acknowledge entries whose dead letters were never written.
 * ARGV: group, number of dead letters, then per dead letter its field count and fields, then
 * the IDs to acknowledge. */
static const char settle_script[] =
    "local i = 3\n"
    "for d = 1, tonumber(ARGV[2]) do\n"
    "  local n = tonumber(ARGV[i])\n"
    "  redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + n))\n"
    "  i = i + n + 1\n"
    "end\n"
    "if i <= #ARGV then\n"
    "  return redis.call('XACK', KEYS[2], ARGV[1], unpack(ARGV, i, #ARGV))\n"
    "end\n"
    "return 0\n";

/* Pushes one dead letter's fields, counted: <original fields...> entry_id .. deliveries ..
 * reason .. stage load consumer .. failed_at .. */
static bool push_dead_letter(command_t *command, const fts_redis_group_t *group,
                             const fts_load_dead_t *dead, uint64_t failed_at)
{
    const fts_stream_entry_t *entry = dead->entry;
    if (!entry) {
        return false;
    }
    size_t original = entry->items ? entry->count : 0;
    if (!command_push_u64(command, (uint64_t)(original + 12))) {
        return false;
    }
    for (size_t i = 0; i < original; i++) {
        if (!command_push(command, entry->items[i].data, entry->items[i].len)) {
            return false;
        }
    }
    const char *ours[] = {"entry_id", entry->id, "deliveries", NULL};
    const char *more[] = {"reason",    dead->reason ? dead->reason : "unknown",
                          "stage",     "load",
                          "consumer",  group->consumer,
                          "failed_at", NULL};
    return command_push_all(command, ours) && command_push_u64(command, dead->deliveries) &&
           command_push_all(command, more) && command_push_u64(command, failed_at);
}

void fts_redis_group_settle(fts_redis_group_t *group, const fts_settlement_t *settlement,
                            fts_redis_group_done_fn done, void *arg)
{
    op_t *op = op_new(group, &group->commands, OP_SETTLE, "the settlement", group->stream_key);
    if (!op) {
        log_no_op("a settlement");
        return;
    }
    op->done = done;
    op->arg = arg;
    if (!settlement || (settlement->dead_count == 0 && settlement->ack_count == 0)) {
        op_complete_later(op); /* nothing to write: settled */
        return;
    }
    command_t *command = op_add_command(op);
    bool ok = command != NULL;
    if (ok && settlement->dead_count == 0) {
        /* Nothing to dead-letter: a plain XACK. */
        const char *head[] = {"XACK", group->stream_key, group->group_name, NULL};
        ok = command_push_all(command, head);
    } else if (ok) {
        op->acks = true; /* marks the scripted form */
        const char *head[] = {
            "EVAL", settle_script, "2", group->dead_key, group->stream_key, group->group_name,
            NULL};
        ok = command_push_all(command, head) &&
             command_push_u64(command, (uint64_t)settlement->dead_count);
        uint64_t failed_at = unix_ms();
        for (size_t i = 0; ok && i < settlement->dead_count; i++) {
            ok = push_dead_letter(command, group, &settlement->dead[i], failed_at);
        }
    }
    for (size_t i = 0; ok && i < settlement->ack_count; i++) {
        ok = settlement->ack_ids[i] && command_push_str(command, settlement->ack_ids[i]);
    }
    if (!ok) {
        op_refuse(op, FTS_ERROR_CODE_NO_MEMORY, "out of memory or an entry or ID is missing");
        return;
    }
    op_send(op);
}

bool fts_redis_group_connected(const fts_redis_group_t *group)
{
    return group && group->reader.state == CONN_UP && group->commands.state == CONN_UP;
}
