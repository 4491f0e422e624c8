/*
 * conn.h - accepting client connections and running each one's read loop.
 *
 * A connection reads whole wire messages and hands each to the command dispatcher, one at a
 * time: while a request is parked (see server.h) the following messages wait in the input
 * buffer, as they would on mongod, where a connection runs one operation at a time.
 */
#ifndef FTS_DOUBLE_CONN_H
#define FTS_DOUBLE_CONN_H

#include "server.h"

#include <stdbool.h>

/* Binds and listens on bind_addr:port (port 0: any free one); fills srv->port and srv->host. */
bool fts_double_listen(fts_double_server_t *srv, const char *bind_addr, int port);

/* Closes every connection (ending parked requests without replies) and the listener. */
void fts_double_conns_shutdown(fts_double_server_t *srv);

/* Wait lists. */
void fts_double_waitlist_add(fts_double_waitlist_t *list, fts_double_request_t *req);
void fts_double_waitlist_remove(fts_double_request_t *req);

#endif
