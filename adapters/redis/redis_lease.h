/*
 * redis_lease.h - the lease that makes one `ftsync extract` per pipeline the active one.
 *
 * The lease is the key ftsync:{P}:lease on the state server, holding the owner id of the
 * active extractor ("hostname:pid:random") and expiring after ttl_ms unless renewed:
 *   acquire  MULTI; SET key owner NX PX ttl; GET key; PTTL key; EXEC - ours if the SET took,
 *            otherwise the GET and PTTL say who holds it and for how long (atomically);
 *   renew    a Lua script: PEXPIRE only if the value is still ours;
 *   release  a Lua script: DEL only if the value is still ours (a clean stop), so that a
 *            standby takes over at once instead of after the TTL.
 * A standby calls acquire every second or so and takes over within ttl_ms (plus that
 * interval) of the active one dying.
 *
 * Invariant (one active extractor): the holder must stop reading the change stream as soon as
 * it may no longer hold the lease. fts_redis_lease_remaining_ms() is a local, conservative
 * deadline: the monotonic time at which the successful acquire or renew was *sent*, plus
 * ttl_ms. The server started its TTL when the command arrived, later, so the local deadline
 * passes first (clock rates differing by more than the slack a TTL of seconds leaves are out
 * of scope). A renew that fails (Redis unreachable) does not extend it: the caller keeps
 * renewing and stops reading when it reaches 0. A renew that finds the lease gone or someone
 * else's returns LOST, and the deadline drops to 0 at once.
 *
 * Not thread-safe; the lease borrows its connection.
 */
#ifndef FTS_REDIS_LEASE_H
#define FTS_REDIS_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "extract_ports.h"
#include "redis_conn.h"

/* Room for an owner id: what the lease port's status holds. */
#define FTS_REDIS_LEASE_OWNER_SIZE FTS_LEASE_HOLDER_SIZE

/* The shortest and longest time to live accepted. */
#define FTS_REDIS_LEASE_TTL_MIN_MS 100
#define FTS_REDIS_LEASE_TTL_MAX_MS (24u * 3600u * 1000u)

typedef struct fts_redis_lease fts_redis_lease_t;

/* A lease on ftsync:{pipeline}:lease through redis (borrowed; must outlive the lease). owner
 * NULL generates "hostname:pid:random" (fts_redis_lease_owner_id). No command is sent. */
fts_redis_lease_t *fts_redis_lease_new(fts_redis_t *redis, const char *pipeline, uint64_t ttl_ms,
                                       const char *owner, fts_error_t *err);

/* Does not release it (call fts_redis_lease_release first on a clean stop). Accepts NULL. */
void fts_redis_lease_destroy(fts_redis_lease_t *lease);

/* The lease port over lease (borrowed: it must outlive the port); its operations are the
 * functions below. */
fts_lease_port_t fts_redis_lease_port(fts_redis_lease_t *lease);

/* Tries to take the lease: ACQUIRED or HELD (status says by whom, for how long). Acquiring a
 * lease already ours renews it. false only when Redis failed (err). */
bool fts_redis_lease_acquire(fts_redis_lease_t *lease, fts_lease_status_t *status,
                             fts_error_t *err);

/* Extends the lease if it is still ours: ACQUIRED, or LOST (status says who holds it now).
 * false when Redis failed; the local deadline is then left to run out. */
bool fts_redis_lease_renew(fts_redis_lease_t *lease, fts_lease_status_t *status, fts_error_t *err);

/* Deletes the lease if it is still ours: RELEASED, or LOST (it was not ours any more).
 * The local deadline drops to 0 either way, even when Redis failed. */
bool fts_redis_lease_release(fts_redis_lease_t *lease, fts_lease_status_t *status,
                             fts_error_t *err);

/* How much longer the lease is surely ours (see above); 0 when not held. */
uint64_t fts_redis_lease_remaining_ms(const fts_redis_lease_t *lease);

/* The owner id written into the key; borrowed until destroy. */
const char *fts_redis_lease_owner(const fts_redis_lease_t *lease);

/* The key, ftsync:{pipeline}:lease; borrowed until destroy. */
const char *fts_redis_lease_key(const fts_redis_lease_t *lease);

/* "hostname:pid:random" (16 hex digits from getrandom) into out. The host name is cut to fit. */
bool fts_redis_lease_owner_id(char *out, size_t size, fts_error_t *err);

#endif
