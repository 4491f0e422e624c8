/*
 * redis_conn.c - the synchronous Redis connection (see redis_conn.h).
 *
 * A connection is either open (context != NULL and usable) or broken (context == NULL). Every
 * failure of a command that may have reached the server - I/O error, timeout, protocol error -
 * frees the hiredis context at once: hiredis refuses any further use of a context with an
 * error, and a late reply must never be read as the answer to the next command. The next
 * command then reconnects before it is sent; nothing is ever resent here.
 *
 * Before sending on an open connection, a zero-timeout poll checks whether the server closed
 * it while idle (a restart, a `timeout` setting): then reconnecting first is safe, because
 * nothing has been sent, and it spares the caller an avoidable error.
 *
 * A pipeline appends every command to hiredis's output buffer first and only then lets the
 * first wait for a reply write them all, so a pipeline never leaves half its commands behind
 * for the next one. Every wait for a reply is cut into slices that look at the stop flag, so
 * SIGTERM ends it within about 100 ms instead of at the command timeout, and a command sent
 * during the stop (releasing the lease) waits 1 s at most (wait_reply). Appending
 * fails only when hiredis cannot allocate, which aborts (fts_fatal_oom), as does any allocation
 * failure hiredis reports (REDIS_ERR_OOM).
 */
#include "redis_conn.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <bson/bson.h>

#include "backoff.h"
#include "clock.h"
#include "log.h"
#include "redis_url.h"
#include "signals.h"

/* The component tag of every log line from this file. */
#define LOG_COMPONENT "redis"

/* Failure kinds for "log once per kind": bit `code` for the error codes (all below 15), bit 15
 * for "the server is loading its data set", and the same again 16 bits up for failed
 * reconnect attempts, so that a command's timeout and the timeouts of the reconnects after it
 * are each logged once. */
#define KIND_LOADING         15
#define KIND_RECONNECT_SHIFT 16

struct fts_redis {
    fts_redis_url_t *url; /* owned */
    fts_redis_options_t options;
    redisContext *context; /* owned; NULL while broken: the next command reconnects */
    fts_backoff_t backoff;
    char address[300];     /* "host:port" or "[v6]:port", for messages */
    uint64_t connections;  /* successful connects, see fts_redis_connection_count */
    unsigned logged_kinds; /* failure kinds already logged since the last success */
};

void fts_redis_options_init(fts_redis_options_t *options)
{
    options->connect_timeout_ms = FTS_REDIS_DEFAULT_CONNECT_TIMEOUT_MS;
    options->command_timeout_ms = FTS_REDIS_DEFAULT_COMMAND_TIMEOUT_MS;
    options->reconnect_base_ms = FTS_REDIS_DEFAULT_RECONNECT_BASE_MS;
    options->reconnect_cap_ms = FTS_REDIS_DEFAULT_RECONNECT_CAP_MS;
    options->reconnect_max_wait_ms = FTS_REDIS_DEFAULT_RECONNECT_MAX_WAIT_MS;
}

static struct timeval to_timeval(long ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static unsigned failure_kind(const fts_error_t *error, bool reconnecting);

/* Logs a warning the first time a kind of failure shows up in an outage; later ones of the
 * same kind would only repeat it. Two call sites, because the logger rate-limits per call
 * site and a dropped connection must not hide the first failed reconnect. */
static void log_failure_once(fts_redis_t *redis, const fts_error_t *error, bool reconnecting)
{
    unsigned kind = failure_kind(error, reconnecting);
    if (redis->logged_kinds & kind) {
        return;
    }
    redis->logged_kinds |= kind;
    if (reconnecting) {
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "cannot reconnect to %s (retrying for up to %llu ms): %s", redis->url->masked,
                (unsigned long long)redis->options.reconnect_max_wait_ms, error->message);
    } else {
        fts_log(FTS_LOG_WARN, LOG_COMPONENT, "dropping the connection to %s: %s",
                redis->url->masked, error->message);
    }
}

static unsigned failure_kind(const fts_error_t *error, bool reconnecting)
{
    unsigned bit = (unsigned)error->code < KIND_LOADING ? (unsigned)error->code : 0;
    if (error->code == FTS_ERROR_CODE_SERVER && strstr(error->message, "LOADING")) {
        bit = KIND_LOADING;
    }
    return 1u << (bit + (reconnecting ? KIND_RECONNECT_SHIFT : 0));
}

static void drop_connection(fts_redis_t *redis)
{
    if (redis->context) {
        redisFree(redis->context);
        redis->context = NULL;
    }
}

bool fts_redis_is_auth_error(const char *message)
{
    return strncmp(message, "NOAUTH", 6) == 0 || strncmp(message, "WRONGPASS", 9) == 0 ||
           strncmp(message, "NOPERM", 6) == 0;
}

void fts_redis_reply_text(const redisReply *reply, char *out, size_t size)
{
    char text[FTS_ERROR_MESSAGE_SIZE];
    size_t len = reply->str ? reply->len : 0;
    snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text ? len : sizeof text - 1),
             reply->str ? reply->str : "");
    fts_log_redact(text, out, size);
}

/* Turns an error reply into err, with the server's text (fts_redis_reply_text). code is the
 * code unless the text says it is about credentials. */
static bool set_reply_error(const fts_redis_t *redis, const redisReply *reply, const char *command,
                            int code, fts_error_t *err)
{
    char scrubbed[FTS_ERROR_MESSAGE_SIZE];
    fts_redis_reply_text(reply, scrubbed, sizeof scrubbed);
    if (fts_redis_is_auth_error(scrubbed)) {
        code = FTS_ERROR_CODE_AUTH;
    }
    return fts_error_set(err, FTS_ERROR_REDIS, code, "Redis at %s refused %s: %s", redis->address,
                         command, scrubbed);
}

/* Turns a failed hiredis call (context->err set) into err. saved_errno is errno right after
 * the call: hiredis reports a socket timeout as an I/O error with EAGAIN. A caller's command
 * gets a warning that it may have taken effect (plural: the commands of a pipeline); our own
 * set-up commands need none. hiredis running out of memory aborts. */
static bool set_context_error_n(fts_redis_t *redis, redisContext *context, int saved_errno,
                                const char *command, bool callers, bool plural, fts_error_t *err)
{
    if (context->err == REDIS_ERR_OOM) {
        fts_fatal_oom("a command or reply of Redis");
    }
    const char *reason = context->errstr[0] ? context->errstr : "unknown error";
    bool timed_out =
        context->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
                                         strcmp(reason, strerror(EAGAIN)) == 0);
    if (timed_out) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_TIMEOUT,
                             "Redis at %s did not answer %s within %ld ms%s", redis->address,
                             command, redis->options.command_timeout_ms,
                             !callers ? ""
                             : plural ? "; the commands are not resent (they may still take effect)"
                                      : "; the command is not resent (it may still take effect)");
    }
    int code = FTS_ERROR_CODE_IO;
    if (context->err == REDIS_ERR_PROTOCOL) {
        code = FTS_ERROR_CODE_PROTOCOL;
    }
    const char *consequence = "";
    if (callers) {
        consequence = plural ? "; the commands are not resent (they may have taken effect)"
                             : "; the command is not resent (it may have taken effect)";
    } else if (code == FTS_ERROR_CODE_PROTOCOL) {
        /* Nonsense on a fresh connection usually means another service owns the port. */
        consequence = " (is a Redis server listening there?)";
    }
    return fts_error_set(err, FTS_ERROR_REDIS, code,
                         "connection to Redis at %s failed during %s: %s%s", redis->address,
                         command, reason, consequence);
}

static bool set_context_error(fts_redis_t *redis, redisContext *context, int saved_errno,
                              const char *command, bool callers, fts_error_t *err)
{
    return set_context_error_n(redis, context, saved_errno, command, callers, false, err);
}

/* How long one wait for a reply lasts before the stop flag is looked at again. */
#define STOP_CHECK_SLICE_MS 100
/* How long a command sent during a stop may wait for its answer. */
#define STOP_GRACE_MS 1000

/* redisGetReply() for a blocking context, except that the wait for the reply is cut into
 * slices and ends when a stop is requested (SIGTERM) meanwhile: hiredis retries a read interrupted
 * by a signal, so on its own it would wait out the whole command timeout (issue 13, item 4). The
 * command timeout still applies, as a whole. On failure the context is left with err set (an
 * I/O error: "interrupted by a stop", or EAGAIN's message for a timeout, with errno to match)
 * and must be dropped, like any failed blocking context. */
static int wait_reply(fts_redis_t *redis, redisContext *context, void **reply)
{
    *reply = NULL;
    if (redisGetReplyFromReader(context, reply) != REDIS_OK) {
        return REDIS_ERR;
    }
    if (*reply) {
        return REDIS_OK;
    }
    int done = 0;
    do {
        if (redisBufferWrite(context, &done) != REDIS_OK) {
            return REDIS_ERR;
        }
    } while (!done);
    /* A command sent once the stop is under way (the lease's release, a last checkpoint) is
     * part of the stop: it gets its answer, but within STOP_GRACE_MS at most. One under way
     * when the stop comes is given up at once. */
    bool stopping_already = fts_signals_stop_requested();
    uint64_t timeout = (uint64_t)redis->options.command_timeout_ms;
    if (stopping_already && timeout > STOP_GRACE_MS) {
        timeout = STOP_GRACE_MS;
    }
    uint64_t deadline = fts_clock_monotonic_ms() + timeout;
    while (!*reply) {
        if (!stopping_already && fts_signals_stop_requested()) {
            context->err = REDIS_ERR_IO;
            snprintf(context->errstr, sizeof context->errstr, "interrupted by a stop request");
            errno = EINTR;
            return REDIS_ERR;
        }
        uint64_t now = fts_clock_monotonic_ms();
        if (now >= deadline) {
            context->err = REDIS_ERR_IO;
            snprintf(context->errstr, sizeof context->errstr, "%s", strerror(EAGAIN));
            errno = EAGAIN;
            return REDIS_ERR;
        }
        uint64_t slice =
            deadline - now < STOP_CHECK_SLICE_MS ? deadline - now : STOP_CHECK_SLICE_MS;
        struct pollfd pfd = {.fd = context->fd, .events = POLLIN};
        int ready = poll(&pfd, 1, (int)slice);
        if (ready < 0 && errno != EINTR) {
            context->err = REDIS_ERR_IO;
            snprintf(context->errstr, sizeof context->errstr, "%s", strerror(errno));
            return REDIS_ERR;
        }
        if (ready <= 0) {
            continue;
        }
        /* Readable: the read returns at once (data, or the peer's close). */
        if (redisBufferRead(context) != REDIS_OK) {
            return REDIS_ERR;
        }
        if (redisGetReplyFromReader(context, reply) != REDIS_OK) {
            return REDIS_ERR;
        }
    }
    return REDIS_OK;
}

/* redisCommandArgv() with wait_reply()'s wait. NULL on failure (context->err set). */
static redisReply *command_argv(fts_redis_t *redis, redisContext *context, int argc,
                                const char **argv, const size_t *argvlen)
{
    if (redisAppendCommandArgv(context, argc, argv, argvlen) != REDIS_OK) {
        if (context->err == REDIS_ERR_OOM) {
            fts_fatal_oom("a command for Redis");
        }
        return NULL;
    }
    void *reply = NULL;
    return wait_reply(redis, context, &reply) == REDIS_OK ? reply : NULL;
}

/* Sends one command on a fresh context during connection set-up. *retryable tells whether
 * trying again later may help (a timeout, a server still loading) or not (wrong password). */
static bool setup_command(fts_redis_t *redis, redisContext *context, int argc, const char **argv,
                          const char *shown, const char *expect_status, bool *retryable,
                          fts_error_t *err)
{
    bool ok = false;
    errno = 0;
    redisReply *reply = command_argv(redis, context, argc, argv, NULL);
    if (!reply) {
        set_context_error(redis, context, errno, shown, false, err);
        *retryable = true;
        goto cleanup;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        bool is_auth = strcmp(argv[0], "AUTH") == 0;
        set_reply_error(redis, reply, shown, is_auth ? FTS_ERROR_CODE_AUTH : FTS_ERROR_CODE_SERVER,
                        err);
        /* LOADING: restarted and reading its AOF; BUSY: a script runs; MASTERDOWN: a replica
         * lost its master. All pass; a wrong password or db index does not. */
        *retryable = reply->str && (strncmp(reply->str, "LOADING", 7) == 0 ||
                                    strncmp(reply->str, "BUSY", 4) == 0 ||
                                    strncmp(reply->str, "MASTERDOWN", 10) == 0);
        goto cleanup;
    }
    if (expect_status &&
        (reply->type != REDIS_REPLY_STATUS || !reply->str || strcmp(reply->str, expect_status))) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                      "Redis at %s answered %s with something other than %s", redis->address, shown,
                      expect_status);
        *retryable = true;
        goto cleanup;
    }
    ok = true;

cleanup:
    if (reply) {
        freeReplyObject(reply);
    }
    return ok;
}

/* One attempt: connect, AUTH, SELECT, PING. On success the context is installed. */
static bool open_connection(fts_redis_t *redis, bool *retryable, fts_error_t *err)
{
    bool ok = false;
    char db[16];
    *retryable = true;
    redisContext *context = redisConnectWithTimeout(redis->url->host, redis->url->port,
                                                    to_timeval(redis->options.connect_timeout_ms));
    if (!context || context->err == REDIS_ERR_OOM) {
        fts_fatal_oom("a connection to Redis"); /* hiredis returns NULL only then */
    }
    if (context->err) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT,
                      "cannot connect to Redis at %s: %s", redis->address, context->errstr);
        goto cleanup;
    }
    if (redisSetTimeout(context, to_timeval(redis->options.command_timeout_ms)) != REDIS_OK) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT,
                      "cannot set the command timeout on the connection to Redis at %s: %s",
                      redis->address, context->errstr);
        goto cleanup;
    }
    if (redis->url->password) {
        /* Redis 6+ takes "AUTH user password" for ACL users; "AUTH password" is the default
         * user and is what older servers understand. */
        const char *with_user[] = {"AUTH", redis->url->user, redis->url->password};
        const char *alone[] = {"AUTH", redis->url->password};
        bool authed =
            redis->url->user
                ? setup_command(redis, context, 3, with_user, "AUTH", NULL, retryable, err)
                : setup_command(redis, context, 2, alone, "AUTH", NULL, retryable, err);
        if (!authed) {
            goto cleanup;
        }
    }
    if (redis->url->db != 0) {
        snprintf(db, sizeof db, "%d", redis->url->db);
        const char *select[] = {"SELECT", db};
        if (!setup_command(redis, context, 2, select, "SELECT", "OK", retryable, err)) {
            goto cleanup;
        }
    }
    const char *ping[] = {"PING"};
    if (!setup_command(redis, context, 1, ping, "PING", "PONG", retryable, err)) {
        goto cleanup;
    }
    drop_connection(redis);
    redis->context = context;
    context = NULL;
    redis->connections++;
    ok = true;

cleanup:
    if (context) {
        redisFree(context);
    }
    return ok;
}

/* True when the server closed the idle connection, or sent something nobody asked for (which
 * would be read as the reply to the next command). */
static bool closed_while_idle(redisContext *context)
{
    struct pollfd idle = {.fd = context->fd, .events = POLLIN | POLLRDHUP};
    int ready = poll(&idle, 1, 0);
    if (ready <= 0) {
        return false;
    }
    if (idle.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) {
        return true;
    }
    char byte;
    ssize_t peeked = recv(context->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return peeked >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Reconnects with backoff until it works, a failure that waiting cannot cure, the stop
 * request, or reconnect_max_wait_ms. */
static bool reconnect(fts_redis_t *redis, fts_error_t *err)
{
    uint64_t started = fts_clock_monotonic_ms();
    uint64_t max_wait = redis->options.reconnect_max_wait_ms;
    unsigned attempts = 0;
    fts_error_t attempt_err;
    fts_error_clear(&attempt_err);

    for (;;) {
        if (fts_signals_stop_requested()) {
            return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT,
                                 "reconnecting to Redis at %s abandoned: stop requested%s%s",
                                 redis->address, attempts ? "; last error: " : "",
                                 attempts ? attempt_err.message : "");
        }
        attempts++;
        bool retryable;
        if (open_connection(redis, &retryable, &attempt_err)) {
            fts_backoff_reset(&redis->backoff);
            fts_log(FTS_LOG_INFO, LOG_COMPONENT, "reconnected to %s after %u attempt%s in %llu ms",
                    redis->url->masked, attempts, attempts == 1 ? "" : "s",
                    (unsigned long long)(fts_clock_monotonic_ms() - started));
            redis->logged_kinds = 0;
            return true;
        }
        log_failure_once(redis, &attempt_err, true);
        uint64_t elapsed = fts_clock_monotonic_ms() - started;
        if (!retryable || elapsed >= max_wait) {
            if (err) {
                *err = attempt_err;
            }
            if (retryable) {
                fts_error_prefix(err, "gave up reconnecting after %llu ms and %u attempts",
                                 (unsigned long long)elapsed, attempts);
            }
            return false;
        }
        uint64_t delay = fts_backoff_next_ms(&redis->backoff);
        if (delay > max_wait - elapsed) {
            delay = max_wait - elapsed;
        }
        fts_signals_sleep_ms((unsigned long)delay);
    }
}

/* Makes sure an open connection is there before a command is sent. */
static bool ensure_connected(fts_redis_t *redis, fts_error_t *err)
{
    if (redis->context && !closed_while_idle(redis->context)) {
        return true;
    }
    if (redis->context) {
        fts_log(FTS_LOG_INFO, LOG_COMPONENT, "%s closed the idle connection; reconnecting",
                redis->url->masked);
        drop_connection(redis);
    }
    return reconnect(redis, err);
}

/* Judges what a hiredis call returned: a reply to hand over, or an error, after which a
 * failed connection is dropped. */
static redisReply *finish_command(fts_redis_t *redis, redisReply *reply, int saved_errno,
                                  const char *command, fts_error_t *err)
{
    if (!reply) {
        fts_error_t failure;
        set_context_error(redis, redis->context, saved_errno, command, true, &failure);
        drop_connection(redis);
        log_failure_once(redis, &failure, false);
        if (err) {
            *err = failure;
        }
        return NULL;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        set_reply_error(redis, reply, command, FTS_ERROR_CODE_SERVER, err);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

/* The command's name for messages: the format's first word, unless that is a placeholder. */
static void name_from_format(const char *format, char *name, size_t size)
{
    size_t len = strcspn(format, " ");
    if (len == 0 || memchr(format, '%', len) || len >= size) {
        snprintf(name, size, "a command");
        return;
    }
    memcpy(name, format, len);
    name[len] = '\0';
}

static void name_from_argv(int argc, const char **argv, const size_t *argvlen, char *name,
                           size_t size)
{
    if (argc < 1 || !argv[0]) {
        snprintf(name, size, "a command");
        return;
    }
    size_t len = argvlen ? argvlen[0] : strlen(argv[0]);
    /* Only the printable start: argv[0] is binary-safe and could be anything. */
    size_t shown = 0;
    while (shown < len && shown + 1 < size && argv[0][shown] > ' ' && argv[0][shown] < 127) {
        shown++;
    }
    if (shown == 0) {
        snprintf(name, size, "a command");
        return;
    }
    memcpy(name, argv[0], shown);
    name[shown] = '\0';
}

fts_redis_t *fts_redis_new(const char *url, const fts_redis_options_t *options, fts_error_t *err)
{
    fts_redis_t *redis = bson_malloc0(sizeof *redis);
    redis->url = fts_redis_url_parse(url, err);
    if (!redis->url) {
        goto cleanup;
    }
    /* Registered before anything can fail with the server in the loop. */
    fts_log_add_secret(redis->url->password);

    fts_redis_options_init(&redis->options);
    if (options) {
        if (options->connect_timeout_ms > 0) {
            redis->options.connect_timeout_ms = options->connect_timeout_ms;
        }
        if (options->command_timeout_ms > 0) {
            redis->options.command_timeout_ms = options->command_timeout_ms;
        }
        if (options->reconnect_base_ms > 0) {
            redis->options.reconnect_base_ms = options->reconnect_base_ms;
        }
        if (options->reconnect_cap_ms > 0) {
            redis->options.reconnect_cap_ms = options->reconnect_cap_ms;
        }
        if (options->reconnect_max_wait_ms > 0) {
            redis->options.reconnect_max_wait_ms = options->reconnect_max_wait_ms;
        }
    }
    fts_backoff_init(&redis->backoff, redis->options.reconnect_base_ms,
                     redis->options.reconnect_cap_ms, 0);
    snprintf(redis->address, sizeof redis->address,
             strchr(redis->url->host, ':') ? "[%s]:%d" : "%s:%d", redis->url->host,
             redis->url->port);

    bool retryable;
    if (!open_connection(redis, &retryable, err)) {
        goto cleanup;
    }
    fts_log(FTS_LOG_DEBUG, LOG_COMPONENT, "connected to %s", redis->url->masked);
    return redis;

cleanup:
    fts_redis_destroy(redis);
    return NULL;
}

redisReply *fts_redis_command(fts_redis_t *redis, fts_error_t *err, const char *format, ...)
{
    char name[32];
    name_from_format(format, name, sizeof name);
    if (!ensure_connected(redis, err)) {
        return NULL;
    }
    va_list args;
    va_start(args, format);
    errno = 0;
    redisReply *reply = NULL;
    void *raw = NULL;
    if (redisvAppendCommand(redis->context, format, args) != REDIS_OK) {
        if (redis->context->err == REDIS_ERR_OOM) {
            fts_fatal_oom("a command for Redis");
        }
    } else if (wait_reply(redis, redis->context, &raw) == REDIS_OK) {
        reply = raw;
    }
    int saved_errno = errno;
    va_end(args);
    return finish_command(redis, reply, saved_errno, name, err);
}

redisReply *fts_redis_command_argv(fts_redis_t *redis, int argc, const char **argv,
                                   const size_t *argvlen, fts_error_t *err)
{
    assert(argc >= 1 && argv);
    char name[32];
    name_from_argv(argc, argv, argvlen, name, sizeof name);
    if (!ensure_connected(redis, err)) {
        return NULL;
    }
    errno = 0;
    redisReply *reply = command_argv(redis, redis->context, argc, argv, argvlen);
    int saved_errno = errno;
    return finish_command(redis, reply, saved_errno, name, err);
}

bool fts_redis_pipeline(fts_redis_t *redis, const fts_redis_cmd_t *commands, size_t count,
                        redisReply **replies, fts_error_t *err)
{
    char name[32];
    char what[96];
    size_t received = 0;
    for (size_t i = 0; i < count; i++) {
        replies[i] = NULL;
    }
    if (count == 0) {
        return true;
    }
    for (size_t i = 0; i < count; i++) {
        assert(commands[i].argc >= 1 && commands[i].argv);
    }
    name_from_argv(commands[0].argc, commands[0].argv, commands[0].argvlen, name, sizeof name);
    snprintf(what, sizeof what, "a pipeline of %zu commands starting with %s", count, name);
    if (!ensure_connected(redis, err)) {
        return false;
    }
    for (size_t i = 0; i < count; i++) {
        if (redisAppendCommandArgv(redis->context, commands[i].argc, commands[i].argv,
                                   commands[i].argvlen) != REDIS_OK) {
            fts_fatal_oom("a pipeline for Redis"); /* appending only buffers */
        }
    }
    for (; received < count; received++) {
        void *reply = NULL;
        errno = 0;
        if (wait_reply(redis, redis->context, &reply) != REDIS_OK || !reply) {
            int saved_errno = errno;
            fts_error_t failure;
            set_context_error_n(redis, redis->context, saved_errno, what, true, true, &failure);
            fts_error_prefix(&failure, "after %zu of %zu replies", received, count);
            drop_connection(redis);
            log_failure_once(redis, &failure, false);
            fts_redis_replies_free(replies, received);
            if (err) {
                *err = failure;
            }
            return false;
        }
        replies[received] = reply;
    }
    return true;
}

void fts_redis_replies_free(redisReply **replies, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (replies[i]) {
            freeReplyObject(replies[i]);
            replies[i] = NULL;
        }
    }
}

bool fts_redis_reply_check(const fts_redis_t *redis, const redisReply *reply, const char *what,
                           fts_error_t *err)
{
    if (!reply) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                             "Redis at %s sent no reply to %s", redis->address, what);
    }
    if (reply->type != REDIS_REPLY_ERROR) {
        return true;
    }
    return set_reply_error(redis, reply, what, FTS_ERROR_CODE_SERVER, err);
}

bool fts_redis_same_server(const fts_redis_t *a, const fts_redis_t *b)
{
    if (a == b) {
        return true;
    }
    const fts_redis_url_t *x = a->url;
    const fts_redis_url_t *y = b->url;
    bool same_user = (!x->user && !y->user) || (x->user && y->user && !strcmp(x->user, y->user));
    return strcasecmp(x->host, y->host) == 0 && x->port == y->port && x->db == y->db && same_user;
}

bool fts_redis_ping(fts_redis_t *redis, fts_error_t *err)
{
    redisReply *reply = fts_redis_command(redis, err, "PING");
    if (!reply) {
        return false;
    }
    bool pong = reply->type == REDIS_REPLY_STATUS && reply->str && strcmp(reply->str, "PONG") == 0;
    freeReplyObject(reply);
    if (!pong) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                             "Redis at %s answered PING with something other than PONG",
                             redis->address);
    }
    return true;
}

const char *fts_redis_masked_url(const fts_redis_t *redis)
{
    return redis->url->masked;
}

uint64_t fts_redis_connection_count(const fts_redis_t *redis)
{
    return redis->connections;
}

void fts_redis_destroy(fts_redis_t *redis)
{
    if (!redis) {
        return;
    }
    drop_connection(redis);
    fts_redis_url_destroy(redis->url);
    bson_free(redis);
}
