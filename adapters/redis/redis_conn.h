/*
 * redis_conn.h - a synchronous (blocking) Redis connection that re-establishes itself.
 *
 * Built on hiredis 0.14. A connection is opened from a redis:// URL (see redis_url.h): connect,
 * AUTH (password alone, or ACL user and password), SELECT the db, PING. When a command finds
 * the connection broken - an earlier I/O error or timeout, or the server having closed it - it
 * first reconnects, retrying with capped full-jitter backoff for up to reconnect_max_wait_ms
 * (cut short by a stop request), and only then sends the command.
 *
 * Invariants:
 *   - a command is sent at most once: one that fails with an I/O error or a timeout after it
 *     may have reached the server is never resent here (XADD and INCR are not idempotent). It
 *     returns the error and the next command reconnects; the caller decides about retrying;
 *   - after a failed or timed-out command the connection is dropped, so a late reply can never
 *     be taken as the answer to a later command;
 *   - the password never appears in an error or a log line (it is registered with
 *     fts_log_add_secret).
 *
 * Pipelines (fts_redis_pipeline) keep the same promises: the commands go out in one write and
 * their replies are read in order; a connection that fails part-way is dropped and nothing is
 * resent, so the caller learns "these may or may not have run" and decides (for XADD: re-send
 * the batch, duplicates being harmless; see redis_queue.h). Error replies of single commands
 * inside a pipeline are not failures of the pipeline: each is handed back for the caller to
 * judge (fts_redis_reply_check).
 *
 * Errors use domain FTS_ERROR_REDIS and the codes: CONNECT (cannot reach host:port, or gave up
 * reconnecting), AUTH (AUTH refused, NOAUTH, NOPERM), TIMEOUT (no answer within
 * command_timeout_ms), IO (connection lost mid-command), SERVER (an error reply, message as the
 * server sent it, e.g. "WRONGTYPE Operation against a key..."), PROTOCOL. Running out of memory
 * aborts (fts_fatal_oom); a command with no arguments is a programming error (asserted).
 * Not thread-safe: one connection belongs to one thread (ftsync runs one loop per process).
 * The process must ignore SIGPIPE (fts_signals_install() does): hiredis 0.14 writes with
 * write(2), and a write to a connection the server just closed would otherwise kill it.
 */
#ifndef FTS_REDIS_CONN_H
#define FTS_REDIS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "error.h"

/* Defaults for the fields of fts_redis_options_t left 0. */
#define FTS_REDIS_DEFAULT_CONNECT_TIMEOUT_MS    5000
#define FTS_REDIS_DEFAULT_COMMAND_TIMEOUT_MS    10000
#define FTS_REDIS_DEFAULT_RECONNECT_BASE_MS     100
#define FTS_REDIS_DEFAULT_RECONNECT_CAP_MS      5000
#define FTS_REDIS_DEFAULT_RECONNECT_MAX_WAIT_MS 30000

typedef struct {
    long connect_timeout_ms;        /* TCP connect; 0 = default */
    long command_timeout_ms;        /* each reply, including AUTH/SELECT/PING; 0 = default.
                                     * Must exceed any BLOCK/timeout a command asks the server
                                     * for (XREADGROUP BLOCK, BLPOP), or it fails as TIMEOUT */
    uint64_t reconnect_base_ms;     /* first backoff ceiling; 0 = default */
    uint64_t reconnect_cap_ms;      /* largest backoff ceiling; 0 = default */
    uint64_t reconnect_max_wait_ms; /* give up reconnecting after this long; 0 = default */
} fts_redis_options_t;

typedef struct fts_redis fts_redis_t;

/* Fills options with the defaults, for callers that change one or two fields. */
void fts_redis_options_init(fts_redis_options_t *options);

/* Connects to url (copied), AUTH, SELECT db, PING: one attempt, no retry, so that a wrong
 * setting at start-up fails at once with a clear error. options NULL = defaults (copied). */
fts_redis_t *fts_redis_new(const char *url, const fts_redis_options_t *options, fts_error_t *err);

/* Sends one command (hiredis format: %s for a C string, %b for pointer + size_t length) and
 * returns its reply, which the caller frees with freeReplyObject(). NULL on failure, with err
 * filled; an error reply at the top level is a failure carrying the server's message. Error
 * replies nested in an array (EXEC, pipelines) are returned as they are, for the caller. */
redisReply *fts_redis_command(fts_redis_t *redis, fts_error_t *err, const char *format, ...);

/* As fts_redis_command, with the arguments as binary-safe strings; argvlen NULL means each
 * argv[i] is NUL-terminated. */
redisReply *fts_redis_command_argv(fts_redis_t *redis, int argc, const char **argv,
                                   const size_t *argvlen, fts_error_t *err);

/* One command of a pipeline: argc binary-safe arguments, borrowed until the pipeline call
 * returns. argvlen NULL means each argv[i] is NUL-terminated. */
typedef struct {
    int argc;
    const char **argv;
    const size_t *argvlen;
} fts_redis_cmd_t;

/* Sends count commands in one go (redisAppendCommandArgv for each, then a single write) and
 * reads count replies into replies[0..count), which the caller frees with
 * fts_redis_replies_free(). Reconnects first if needed, like any command.
 *
 * Returns true when every reply arrived. A reply may be an error reply (REDIS_REPLY_ERROR, e.g.
 * WRONGTYPE for one command, EXECABORT for an EXEC): that is that command's result, not a
 * failure of the pipeline; fts_redis_reply_check() turns one into an error message.
 *
 * Returns false with err filled, and every replies[i] NULL, when the commands could not all be
 * sent and answered: an I/O error, a timeout or a protocol error part-way. Then the connection
 * is dropped (the next command reconnects) and nothing is resent: any prefix of the commands
 * may have run. The message says how many replies had arrived. count 0 returns true at once. */
bool fts_redis_pipeline(fts_redis_t *redis, const fts_redis_cmd_t *commands, size_t count,
                        redisReply **replies, fts_error_t *err);

/* Frees replies[0..count) (NULL entries are skipped) and sets them to NULL. */
void fts_redis_replies_free(redisReply **replies, size_t count);

/* True when reply is not an error reply. Otherwise fills err (code SERVER, or AUTH for
 * NOAUTH/NOPERM...) with "Redis at host:port refused <what>: <server's message>" and returns
 * false. For replies a pipeline or an EXEC returned; what names the command for the message. */
bool fts_redis_reply_check(const fts_redis_t *redis, const redisReply *reply, const char *what,
                           fts_error_t *err);

/* True when an error reply's text is about who we are rather than what we asked: wrong or
 * missing credentials (NOAUTH, WRONGPASS), or an ACL user lacking a permission (NOPERM). */
bool fts_redis_is_auth_error(const char *message);

/* An error reply's text as the server sent it, cut to fit size and scrubbed of secrets
 * (fts_log_redact) in case a server ever echoes one. */
void fts_redis_reply_text(const redisReply *reply, char *out, size_t size);

/* True when a and b talk to the same Redis database: the same host (compared as written,
 * ignoring case; "localhost" and "127.0.0.1" count as different), port, db and ACL user.
 * Commands for both may then share one MULTI/EXEC on either connection. A false "different"
 * is always safe; it only costs the atomicity of one transaction (see redis_queue.h). */
bool fts_redis_same_server(const fts_redis_t *a, const fts_redis_t *b);

/* PING; true when the server answered PONG. Reconnects first if needed, like any command. */
bool fts_redis_ping(fts_redis_t *redis, fts_error_t *err);

/* The URL with the password masked, for log lines; borrowed until fts_redis_destroy(). */
const char *fts_redis_masked_url(const fts_redis_t *redis);

/* How many times the connection was established: 1 after fts_redis_new(), one more per
 * successful reconnect. For /metrics and tests. */
uint64_t fts_redis_connection_count(const fts_redis_t *redis);

void fts_redis_destroy(fts_redis_t *redis);

#endif
