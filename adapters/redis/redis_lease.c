/*
 * redis_lease.c - the one-active-extractor lease (see redis_lease.h).
 *
 * Keeps the "one active extractor" rule: the key is only ever set with NX (never
 * overwritten), and extended or deleted only by a script that first checks the value is ours,
 * so an extractor that lost its lease can neither prolong nor remove its successor's. The
 * local deadline only ever comes from a reply that proved the lease ours.
 *
 * The lease is the extract's lease port (extract_ports.h): its functions take the port's types
 * and the port's table (fts_redis_lease_port) only adapts the context pointer.
 */
#include "redis_lease.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "redis_queue.h"

/* The component tag of every log line from this file. */
#define LOG_COMPONENT "lease"

/* KEYS[1] lease, ARGV[1] owner, ARGV[2] ttl in ms. {1} when extended; otherwise {0, holder or
 * "", PTTL} for the status. */
#define RENEW_SCRIPT                                                                               \
    "local holder = redis.call('GET', KEYS[1])\n"                                                  \
    "if holder == ARGV[1] then\n"                                                                  \
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"                                                  \
    "  return {1, holder, tonumber(ARGV[2])}\n"                                                    \
    "end\n"                                                                                        \
    "return {0, holder or '', redis.call('PTTL', KEYS[1])}\n"

/* KEYS[1] lease, ARGV[1] owner. {1} when deleted; otherwise {0, holder or "", PTTL}. */
#define RELEASE_SCRIPT                                                                             \
    "local holder = redis.call('GET', KEYS[1])\n"                                                  \
    "if holder == ARGV[1] then\n"                                                                  \
    "  redis.call('DEL', KEYS[1])\n"                                                               \
    "  return {1, '', -2}\n"                                                                       \
    "end\n"                                                                                        \
    "return {0, holder or '', redis.call('PTTL', KEYS[1])}\n"

struct fts_redis_lease {
    fts_redis_t *redis; /* borrowed */
    char key[FTS_REDIS_KEY_SIZE];
    char owner[FTS_REDIS_LEASE_OWNER_SIZE];
    uint64_t ttl_ms;
    char ttl_text[24];
    uint64_t valid_until_ms; /* monotonic; 0 when not held */
};

bool fts_redis_lease_owner_id(char *out, size_t size, fts_error_t *err)
{
    char host[256];
    uint64_t random = 0;
    if (gethostname(host, sizeof host) != 0) {
        snprintf(host, sizeof host, "unknown-host");
    }
    host[sizeof host - 1] = '\0';
    if (getrandom(&random, sizeof random, 0) != (ssize_t)sizeof random) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno,
                             "cannot draw a random lease owner id: %s", strerror(errno));
    }
    char tail[64];
    int tail_len = snprintf(tail, sizeof tail, ":%ld:%016" PRIx64, (long)getpid(), random);
    if (size <= (size_t)tail_len + 1) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                             "no room for a lease owner id");
    }
    int host_room = (int)(size - (size_t)tail_len - 1);
    snprintf(out, size, "%.*s%s", host_room, host, tail);
    return true;
}

fts_redis_lease_t *fts_redis_lease_new(fts_redis_t *redis, const char *pipeline, uint64_t ttl_ms,
                                       const char *owner, fts_error_t *err)
{
    fts_redis_keys_t keys;
    fts_redis_lease_t *lease = NULL;
    if (!fts_redis_keys_init(&keys, pipeline, err)) {
        return NULL;
    }
    if (ttl_ms < FTS_REDIS_LEASE_TTL_MIN_MS || ttl_ms > FTS_REDIS_LEASE_TTL_MAX_MS) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "lease time to live %" PRIu64 " ms is not between %u and %u ms", ttl_ms,
                      (unsigned)FTS_REDIS_LEASE_TTL_MIN_MS, (unsigned)FTS_REDIS_LEASE_TTL_MAX_MS);
        return NULL;
    }
    if (owner && (!owner[0] || strlen(owner) >= FTS_REDIS_LEASE_OWNER_SIZE)) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "lease owner id must be 1 to %d bytes long", FTS_REDIS_LEASE_OWNER_SIZE - 1);
        return NULL;
    }
    lease = bson_malloc0(sizeof *lease);
    lease->redis = redis;
    lease->ttl_ms = ttl_ms;
    snprintf(lease->ttl_text, sizeof lease->ttl_text, "%" PRIu64, ttl_ms);
    snprintf(lease->key, sizeof lease->key, "%s", keys.lease);
    if (owner) {
        snprintf(lease->owner, sizeof lease->owner, "%s", owner);
    } else if (!fts_redis_lease_owner_id(lease->owner, sizeof lease->owner, err)) {
        bson_free(lease);
        return NULL;
    }
    return lease;
}

void fts_redis_lease_destroy(fts_redis_lease_t *lease)
{
    bson_free(lease);
}

/* Fills status->holder from a reply's text. */
static void set_holder(fts_lease_status_t *status, const redisReply *holder)
{
    status->holder[0] = '\0';
    if (holder && (holder->type == REDIS_REPLY_STRING || holder->type == REDIS_REPLY_STATUS) &&
        holder->str) {
        size_t len = holder->len < sizeof status->holder ? holder->len : sizeof status->holder - 1;
        memcpy(status->holder, holder->str, len);
        status->holder[len] = '\0';
    }
}

/* Runs a lease script (argv: EVAL, script, 1, key, owner...) and reads its {ours, holder,
 * pttl} reply into status; ours tells whether the script found the lease ours. what names the
 * operation in messages. */
static bool run_script(fts_redis_lease_t *lease, const char **argv, int argc, const char *what,
                       bool *ours, fts_lease_status_t *status, fts_error_t *err)
{
    bool ok = false;
    memset(status, 0, sizeof *status);
    redisReply *reply = fts_redis_command_argv(lease->redis, argc, argv, NULL, err);
    if (!reply) {
        goto cleanup;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[2]->type != REDIS_REPLY_INTEGER) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                      "the lease %s script on %s returned something unexpected", what, lease->key);
        goto cleanup;
    }
    *ours = reply->element[0]->integer == 1;
    set_holder(status, reply->element[1]);
    status->holder_ttl_ms = reply->element[2]->integer;
    ok = true;

cleanup:
    if (reply) {
        freeReplyObject(reply);
    }
    if (!ok) {
        fts_error_prefix(err, "cannot %s the lease %s", what, lease->key);
    }
    return ok;
}

static void log_lost(const fts_redis_lease_t *lease, const fts_lease_status_t *status)
{
    if (status->holder[0]) {
        fts_log(FTS_LOG_WARN, LOG_COMPONENT,
                "lost the lease %s: %s holds it now (for %" PRId64 " ms more)", lease->key,
                status->holder, status->holder_ttl_ms);
    } else {
        fts_log(FTS_LOG_WARN, LOG_COMPONENT, "lost the lease %s: it expired", lease->key);
    }
}

bool fts_redis_lease_renew(fts_redis_lease_t *lease, fts_lease_status_t *status, fts_error_t *err)
{
    bool ours = false;
    const char *argv[] = {"EVAL", RENEW_SCRIPT, "1", lease->key, lease->owner, lease->ttl_text};
    uint64_t sent = fts_clock_monotonic_ms();
    if (!run_script(lease, argv, 6, "renew", &ours, status, err)) {
        return false;
    }
    if (ours) {
        status->state = FTS_LEASE_ACQUIRED;
        lease->valid_until_ms = sent + lease->ttl_ms;
    } else {
        status->state = FTS_LEASE_LOST;
        lease->valid_until_ms = 0;
        log_lost(lease, status);
    }
    return true;
}

bool fts_redis_lease_acquire(fts_redis_lease_t *lease, fts_lease_status_t *status, fts_error_t *err)
{
    bool ok = false;
    const char *multi[] = {"MULTI"};
    const char *set[] = {"SET", lease->key, lease->owner, "NX", "PX", lease->ttl_text};
    const char *get[] = {"GET", lease->key};
    const char *pttl[] = {"PTTL", lease->key};
    const char *exec[] = {"EXEC"};
    fts_redis_cmd_t cmds[] = {
        {1, multi, NULL}, {6, set, NULL}, {2, get, NULL}, {2, pttl, NULL}, {1, exec, NULL},
    };
    redisReply *replies[5] = {NULL};
    memset(status, 0, sizeof *status);

    uint64_t sent = fts_clock_monotonic_ms();
    if (!fts_redis_pipeline(lease->redis, cmds, 5, replies, err)) {
        goto cleanup;
    }
    for (size_t i = 0; i < 5; i++) {
        if (!fts_redis_reply_check(lease->redis, replies[i], "the lease transaction", err)) {
            goto cleanup;
        }
    }
    const redisReply *results = replies[4];
    if (results->type != REDIS_REPLY_ARRAY || results->elements != 3 ||
        results->element[2]->type != REDIS_REPLY_INTEGER) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                      "EXEC of the lease acquisition returned something unexpected");
        goto cleanup;
    }
    for (size_t i = 0; i < 3; i++) {
        if (!fts_redis_reply_check(lease->redis, results->element[i], "SET/GET/PTTL", err)) {
            goto cleanup;
        }
    }
    const redisReply *took = results->element[0];
    if (took->type == REDIS_REPLY_STATUS && took->str && strcmp(took->str, "OK") == 0) {
        status->state = FTS_LEASE_ACQUIRED;
        lease->valid_until_ms = sent + lease->ttl_ms;
        fts_log(FTS_LOG_INFO, LOG_COMPONENT, "acquired the lease %s as %s for %" PRIu64 " ms",
                lease->key, lease->owner, lease->ttl_ms);
        ok = true;
        goto cleanup;
    }
    set_holder(status, results->element[1]);
    status->holder_ttl_ms = results->element[2]->integer;
    if (strcmp(status->holder, lease->owner) == 0) {
        /* Already ours (a second acquire): extend it like a renewal would. */
        fts_redis_replies_free(replies, 5);
        ok = fts_redis_lease_renew(lease, status, err);
        if (ok && status->state == FTS_LEASE_LOST) {
            status->state = FTS_LEASE_HELD; /* expired in between and taken */
        }
        goto cleanup;
    }
    status->state = FTS_LEASE_HELD;
    ok = true;

cleanup:
    fts_redis_replies_free(replies, 5);
    if (!ok) {
        fts_error_prefix(err, "cannot acquire the lease %s", lease->key);
    }
    return ok;
}

bool fts_redis_lease_release(fts_redis_lease_t *lease, fts_lease_status_t *status, fts_error_t *err)
{
    bool ours = false;
    const char *argv[] = {"EVAL", RELEASE_SCRIPT, "1", lease->key, lease->owner};
    /* Whatever the answer, reading must stop now. */
    lease->valid_until_ms = 0;
    if (!run_script(lease, argv, 5, "release", &ours, status, err)) {
        return false;
    }
    if (ours) {
        status->state = FTS_LEASE_RELEASED;
        fts_log(FTS_LOG_INFO, LOG_COMPONENT, "released the lease %s", lease->key);
    } else {
        status->state = FTS_LEASE_LOST;
        log_lost(lease, status);
    }
    return true;
}

uint64_t fts_redis_lease_remaining_ms(const fts_redis_lease_t *lease)
{
    uint64_t now = fts_clock_monotonic_ms();
    return lease->valid_until_ms > now ? lease->valid_until_ms - now : 0;
}

const char *fts_redis_lease_owner(const fts_redis_lease_t *lease)
{
    return lease->owner;
}

const char *fts_redis_lease_key(const fts_redis_lease_t *lease)
{
    return lease->key;
}

/* ---- The lease port ---- */

static bool port_acquire(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    return fts_redis_lease_acquire(context, status, err);
}

static bool port_renew(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    return fts_redis_lease_renew(context, status, err);
}

static bool port_release(void *context, fts_lease_status_t *status, fts_error_t *err)
{
    return fts_redis_lease_release(context, status, err);
}

static uint64_t port_remaining_ms(void *context)
{
    return fts_redis_lease_remaining_ms(context);
}

static const char *port_owner(void *context)
{
    return fts_redis_lease_owner(context);
}

static const fts_lease_ops_t lease_ops = {
    .acquire = port_acquire,
    .renew = port_renew,
    .release = port_release,
    .remaining_ms = port_remaining_ms,
    .owner = port_owner,
};

fts_lease_port_t fts_redis_lease_port(fts_redis_lease_t *lease)
{
    return (fts_lease_port_t){.ops = &lease_ops, .context = lease};
}
