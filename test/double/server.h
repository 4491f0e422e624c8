/*
 * server.h - the double's process-wide state and the objects every part shares: connections,
 * requests (one wire message being answered) and wait lists of parked requests.
 *
 * The double runs one libevent loop in one thread. A request that cannot be answered at once
 * (a change-stream getMore waiting for events, an awaitable hello waiting for a topology
 * change, a command held back by a blockConnection fail point) is parked: the connection stops
 * reading further messages, as mongod runs one operation at a time per connection, while every
 * other connection goes on being served. A parked request ends by being answered, by its timer,
 * or by its connection closing; each of those paths unlinks it from its wait list first, so a
 * request is never answered twice nor touched after it was freed.
 */
#ifndef FTS_DOUBLE_SERVER_H
#define FTS_DOUBLE_SERVER_H

#include "errors.h"
#include "eventlog.h"
#include "failpoint.h"
#include "store.h"

#include <bson/bson.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct fts_double_server fts_double_server_t;
typedef struct fts_double_conn fts_double_conn_t;
typedef struct fts_double_request fts_double_request_t;
typedef struct fts_double_cursor fts_double_cursor_t;
typedef struct fts_double_txn fts_double_txn_t; /* a session and its transaction (txn.h) */

/* An OP_MSG document sequence (payload type 1): `count` documents starting at `data`. */
typedef struct {
    const char *name;
    const uint8_t *data;
    uint32_t len;
} fts_double_docseq_t;

#define FTS_DOUBLE_MAX_DOCSEQS 4

/* A list of parked requests (intrusive, doubly linked). */
typedef struct {
    fts_double_request_t *head;
} fts_double_waitlist_t;

typedef void (*fts_double_request_fn)(fts_double_request_t *req);

struct fts_double_request {
    fts_double_conn_t *conn;
    int32_t request_id;
    int32_t opcode; /* OP_MSG or OP_QUERY: the reply uses the same framing */
    uint32_t flags; /* OP_MSG flag bits */
    uint8_t *msg;   /* owned copy of the whole message */
    uint32_t msg_len;
    bson_t body; /* the command document, a view into msg */
    fts_double_docseq_t seqs[FTS_DOUBLE_MAX_DOCSEQS];
    int nseqs;
    char *db;           /* owned */
    const char *name;   /* command name, points into body */
    bool legacy;        /* arrived as OP_QUERY */
    bool secondary_ok;  /* read preference allows a secondary */
    bool no_reply;      /* OP_MSG moreToCome: the client expects no answer */
    int64_t started_us; /* for the verbose log */

    /* Parking. */
    struct event *timer;
    fts_double_request_fn on_timeout; /* must answer or re-arm */
    fts_double_request_fn on_cancel;  /* the connection is going away */
    fts_double_waitlist_t *waitlist;
    fts_double_request_t *wait_prev, *wait_next;
    fts_double_cursor_t *cursor; /* the change-stream cursor a getMore waits on */
    int32_t batch_size;          /* that getMore's batchSize (0: none) */

    /* failCommand: checked once; what it asked for, carried across a blockConnection delay. */
    bool fail_checked;
    fts_double_fail_action_t fail;
};

struct fts_double_conn {
    fts_double_server_t *srv;
    uint64_t id;
    evutil_socket_t fd;
    struct event *read_ev;  /* persistent */
    struct event *write_ev; /* added only while replies wait for socket space */
    struct evbuffer *input;
    struct evbuffer *output;
    struct event *resume_ev;    /* re-runs the read loop after a parked request ends */
    fts_double_request_t *busy; /* the parked request, if any */
    char peer[64];
    char *app_name; /* client.application.name from the handshake */
    bool in_pump;   /* inside the read loop: defer frees */
    bool closing;
    fts_double_conn_t *prev, *next;
};

typedef struct {
    fts_double_cursor_t *head;
    size_t count;
    int64_t next_id;
} fts_double_cursors_t;

typedef struct {
    bool primary;
    int64_t term;          /* electionId and lastWrite.opTime.t */
    bson_oid_t process_id; /* topologyVersion.processId */
    int64_t counter;       /* topologyVersion.counter */
    struct event *stepup_timer;
    fts_double_waitlist_t hello_waiters;
} fts_double_replset_t;

struct fts_double_server {
    struct event_base *base;
    struct evconnlistener *listener;
    char host[300]; /* "127.0.0.1:<port>" as hello reports it */
    int port;
    bool verbose;
    bool no_split_stage; /* --no-split-stage: $changeStreamSplitLargeEvent unknown (40324) */
    int64_t start_ms;

    fts_double_store_t *store;
    fts_double_eventlog_t log;
    fts_double_cursors_t cursors;
    fts_double_failpoint_t failpoint;     /* failCommand */
    fts_double_failpoint_t fail_get_more; /* failGetMoreAfterCursorCheckout */
    fts_double_replset_t rs;
    fts_double_txn_t *sessions; /* every session that ran a transaction */
    fts_double_txn_t *txn;      /* the transaction of the command running now, else NULL */

    fts_double_conn_t *conns;
    size_t conn_count;
    uint64_t conns_created;

    fts_double_waitlist_t stream_waiters; /* change-stream getMores waiting for events */
    struct event *wake_ev;                /* answers them after new events, once per loop turn */

    int64_t spin_until_us; /* poll without sleeping until then (see main.c) */
};

/* After serving a request the loop polls without sleeping for this long: a client in a tight
 * request loop then finds the double awake instead of paying a cross-CPU wake-up per round
 * trip, which on a two-core VM halves the single-client request rate. An idle double sleeps. */
#define FTS_DOUBLE_SPIN_US 250

/* Logs one line to stderr when --verbose is on (always for level "error"). */
void fts_double_log(fts_double_server_t *srv, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

int64_t fts_double_now_ms(void);
/* A monotonic clock in microseconds. */
int64_t fts_double_mono_us(void);

/* ---- requests (conn.c) ---- */

/* Parks req: its connection reads nothing more until it is answered. A timeout_ms < 0 means no
 * timer. list may be NULL. */
void fts_double_request_park(fts_double_request_t *req, fts_double_waitlist_t *list,
                             int64_t timeout_ms, fts_double_request_fn on_timeout,
                             fts_double_request_fn on_cancel);
/* Sends reply (framed like the request) unless the client asked for none, then ends the
 * request: unparks it, frees it, and lets its connection read on. */
void fts_double_request_finish(fts_double_request_t *req, const bson_t *reply);
/* Ends the request without a reply and closes its connection (failCommand closeConnection). */
void fts_double_request_close_connection(fts_double_request_t *req);

#endif
