/*
 * replset.h - the double's replica-set persona: a single member of replica set "rs0" that is
 * primary, or secondary for a while after replSetStepDown.
 *
 * hello / isMaster answer as mongod 6.0 (maxWireVersion 17) does, with topologyVersion, so that
 * drivers use the streaming monitoring protocol: a hello carrying the client's topologyVersion
 * and maxAwaitTimeMS is parked until the topology changes (a stepdown or step-up) or the time
 * is up, then answered (never with moreToCome: exhaust is allowed, not required, and the driver
 * simply asks again). While stepped down the member reports isWritablePrimary false, secondary
 * true and no primary; after the given number of seconds it steps up again with a new term
 * (electionId), as a lone electable member would.
 */
#ifndef FTS_DOUBLE_REPLSET_H
#define FTS_DOUBLE_REPLSET_H

#include "server.h"

#define FTS_DOUBLE_SET_NAME         "rs0"
#define FTS_DOUBLE_MAX_WIRE_VERSION 17 /* MongoDB 6.0 */

void fts_double_replset_init(fts_double_server_t *srv);
/* Answers parked hellos (shutdown) and frees the timer. */
void fts_double_replset_destroy(fts_double_server_t *srv);

#endif
