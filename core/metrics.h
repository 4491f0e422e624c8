/*
 * metrics.h - ftsync's Prometheus metrics and the health signals behind /healthz and /readyz:
 * one fixed set of counters, gauges and one histogram, each with a fixed label set, kept in a
 * block of C11 atomics that any thread, and any process sharing the block, may update while
 * another renders it.
 *
 * Where the block lives, and why: it is one anonymous MAP_SHARED mapping (or a memfd mapping
 * that `ftsync run` passes to its children), created before the first fork, so that
 *   - the transform worker (a forked child of extract) counts the actions it queued straight
 *     into its parent's block;
 *   - `ftsync run` reads the whole tree's block and serves one endpoint for it: extract and load
 *     count into the block run gave them (their counters survive a child's restart).
 * A fixed layout (no registration at run time) is what makes the block shareable: every
 * process of one binary agrees on where each cell is; a header carries a layout signature
 * that is checked when a block is adopted.
 *
 * Updates go through the process-wide installed block (fts_metrics_install), like the logger:
 * the core's loops count where things happen without a port, and an update with nothing
 * installed (unit tests, commands without an endpoint) does nothing.
 *
 * Rendering is Prometheus' text exposition format 0.0.4 with a HELP and a TYPE line per
 * family; names follow Prometheus' conventions (base units: seconds; _total on counters).
 * Nothing rendered is a secret: values are numbers, label values are fixed words and the
 * version.
 */
#ifndef FTS_METRICS_H
#define FTS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "error.h"

/* Which process a family belongs to: a process renders the families of its roles. */
#define FTS_METRICS_ROLE_EXTRACT 1u
#define FTS_METRICS_ROLE_LOAD    2u
#define FTS_METRICS_ROLE_ALL     3u

/* The families. */
typedef enum {
    FTS_METRIC_BUILD_INFO = 0,      /* gauge 1, {version} */
    FTS_METRIC_EVENTS_READ,         /* counter: change events read */
    FTS_METRIC_SNAPSHOT_DOCUMENTS,  /* counter: documents read by snapshots */
    FTS_METRIC_ACTIONS_QUEUED,      /* counter {op} */
    FTS_METRIC_ITEMS,               /* counter {result} */
    FTS_METRIC_DEAD_LETTERS,        /* counter {stage} */
    FTS_METRIC_BULK_REQUESTS,       /* counter {outcome} */
    FTS_METRIC_BULK_DURATION,       /* histogram, seconds */
    FTS_METRIC_REPLICATION_LAG,     /* gauge, seconds (computed when rendered) */
    FTS_METRIC_BACKLOG,             /* gauge: entries the loaders have not acknowledged */
    FTS_METRIC_PENDING,             /* gauge: entries this loader holds */
    FTS_METRIC_WORKER_RESTARTS,     /* counter */
    FTS_METRIC_HISTORY_LOST,        /* counter */
    FTS_METRIC_LEASE_HELD,          /* gauge 0/1 */
    FTS_METRIC_DATA_LOST,           /* counter {what} */
    FTS_METRIC_PERMANENT_ERRORS,    /* counter {server,reason}: label fts_permanent_label() */
    FTS_METRIC_PERMANENT_ERROR,     /* gauge {server}, from the signals (computed when rendered) */
    FTS_METRIC_DELETES_NOT_INDEXED, /* counter: deletes of documents a resync never indexed */
    FTS_METRIC_COUNT
} fts_metric_t;

/* Label values, by family. */
/* actions_queued{op}: the order of fts_action_op_t, minus one. */
typedef enum {
    FTS_OP_INDEX = 0,
    FTS_OP_DELETE,
    FTS_OP_DROP,
    FTS_OP_SWEEP,
    FTS_OP_COUNT
} fts_metric_op_t;
/* items{result} */
typedef enum {
    FTS_RESULT_INDEXED = 0,
    FTS_RESULT_DELETED,
    FTS_RESULT_CONFLICT,
    FTS_RESULT_NOT_FOUND,
    FTS_RESULT_RETRIED,
    FTS_RESULT_DEAD_LETTERED,
    FTS_RESULT_COUNT
} fts_metric_result_t;
/* dead_letters{stage} */
typedef enum { FTS_STAGE_TRANSFORM = 0, FTS_STAGE_LOAD, FTS_STAGE_COUNT } fts_metric_stage_t;
/* queue_data_lost{what}: which Redis data was found lost. */
typedef enum {
    FTS_LOST_STATE = 0, /* the state server's (position, lease) */
    FTS_LOST_STREAM,    /* the queue server's (stream, id map; the one server) */
    FTS_LOST_GROUP,     /* the loaders' consumer group */
    FTS_LOST_COUNT
} fts_metric_lost_t;
/* bulk_requests{outcome} */
typedef enum {
    FTS_OUTCOME_ANSWERED = 0, /* an answer with a verdict per item */
    FTS_OUTCOME_FAILED,       /* no usable answer: retried whole */
    FTS_OUTCOME_SPLIT,        /* refused as a whole: sent again in halves */
    FTS_OUTCOME_COUNT
} fts_metric_outcome_t;

/* Failures that need an operator (README.md, Operations): retried like any other, but shown
 * by /readyz, counted by reason and logged as "permanent". The servers, and the reasons (their
 * names are the label values: a fixed vocabulary). */
typedef enum {
    FTS_SERVER_REDIS = 0,
    FTS_SERVER_ELASTICSEARCH,
    FTS_SERVER_MONGODB, /* only extract reaches it */
    FTS_SERVER_COUNT
} fts_server_t;
typedef enum {
    FTS_PERMANENT_NONE = 0,          /* not in a permanent failure */
    FTS_PERMANENT_AUTH,              /* credentials refused (WRONGPASS, NOAUTH, NOPERM; 401, 403;
                                      * MongoDB 18, 13) */
    FTS_PERMANENT_API_KEY,           /* an API key of a type that cannot call the REST API */
    FTS_PERMANENT_NOT_ELASTICSEARCH, /* the URL answers, but not as Elasticsearch/OpenSearch */
    FTS_PERMANENT_TLS,               /* the server's certificate is refused */
    FTS_PERMANENT_WRONG_TYPE,      /* Redis: one of ftsync's keys holds another type (WRONGTYPE) */
    FTS_PERMANENT_NOT_REPLICA_SET, /* MongoDB refuses change streams: not a replica set (40573) */
    FTS_PERMANENT_COUNT
} fts_permanent_reason_t;
/* The label of permanent_errors{server,reason} (reason above NONE). */
unsigned fts_permanent_label(fts_server_t server, fts_permanent_reason_t reason);
/* "auth", "api_key", "not_elasticsearch", "tls", "wrong_type", "not_replica_set" ("none" for
 * NONE). */
const char *fts_permanent_reason_name(fts_permanent_reason_t reason);
/* "redis", "elasticsearch", "mongodb". */
const char *fts_server_name(fts_server_t server);
/* What is wrong and which setting to fix, in words: "Elasticsearch refused the credentials (fix
 * the setting FTSYNC_ES_API_KEY ...)". A static string; no secrets. */
const char *fts_permanent_advice(fts_server_t server, fts_permanent_reason_t reason);

/* The health signals: not rendered as they are, read by fts_health_check/fts_ready_check
 * and, for two of them, the lag gauge. Times are milliseconds of the monotonic clock (one
 * clock for the whole machine, so comparable across processes) unless named _wall. */
typedef enum {
    FTS_SIGNAL_EXTRACT_STATE = 0,    /* fts_extract_state_t */
    FTS_SIGNAL_EXTRACT_LAST_READ_MS, /* the source last answered (an event, an idle reply) */
    FTS_SIGNAL_EXTRACT_PAUSED,       /* 1: backpressure, reading stopped on purpose */
    FTS_SIGNAL_MONGO_OK,             /* 1: the last MongoDB call succeeded */
    FTS_SIGNAL_EXTRACT_REDIS_OK,     /* 1: the last lease renewal / backlog read succeeded */
    FTS_SIGNAL_WORKER_QUICK_ENDS,    /* worker ends in a row, each soon after its start */
    FTS_SIGNAL_LOAD_STATE,           /* fts_load_state_t */
    FTS_SIGNAL_LOAD_PROGRESS_MS,     /* the loader last settled entries, or held none */
    FTS_SIGNAL_LOAD_REDIS_OK,        /* 1: the last consumer-group call succeeded */
    FTS_SIGNAL_ES_OK,                /* 1: the last bulk request got a usable answer */
    FTS_SIGNAL_LAST_ACK_TS_WALL_MS,  /* cluster time (ms) of the newest acknowledged action */
    FTS_SIGNAL_PERMANENT_REDIS,      /* fts_permanent_reason_t of Redis now (NONE: none) */
    FTS_SIGNAL_PERMANENT_ES,         /* fts_permanent_reason_t of Elasticsearch now */
    FTS_SIGNAL_PERMANENT_MONGO,      /* fts_permanent_reason_t of MongoDB now */
    FTS_SIGNAL_COUNT
} fts_signal_t;
/* The health signal that holds server's fts_permanent_reason_t. */
fts_signal_t fts_permanent_signal(fts_server_t server);

typedef enum {
    FTS_EXTRACT_STATE_NONE = 0, /* not running (or not started yet) */
    FTS_EXTRACT_STATE_STARTING, /* connecting, before the lease is asked for */
    FTS_EXTRACT_STATE_STANDBY,  /* waiting for the lease: healthy and ready */
    FTS_EXTRACT_STATE_ACTIVE    /* the lease is ours: reading */
} fts_extract_state_t;

typedef enum {
    FTS_LOAD_STATE_NONE = 0, /* not running */
    FTS_LOAD_STATE_STARTING, /* waiting for Elasticsearch, ensuring the index */
    FTS_LOAD_STATE_RUNNING
} fts_load_state_t;

/* Worker ends in a row, each soon after its start (extract.c: within 10 s), from which
 * /healthz says the worker restarts in a loop. A poison event ends the worker at most
 * FTSYNC_WORKER_CRASH_LIMIT (default 3) times before it is dead-lettered, so the default limit
 * alone does not turn it red. */
#define FTS_WORKER_LOOP_ENDS 5

typedef struct fts_metrics fts_metrics_t;

/* A block of its own (anonymous MAP_SHARED: shared with children forked later), zeroed, with
 * build_info's version set. Never NULL: a failed mmap aborts (fts_fatal_oom). */
fts_metrics_t *fts_metrics_new(const char *version);
/* A block in a new memfd (for `ftsync run`): *fd is left open without close-on-exec, for the
 * children to adopt. NULL (FTS_ERROR_SYSTEM) when the memfd cannot be made or mapped. */
fts_metrics_t *fts_metrics_new_fd(const char *version, int *fd, fts_error_t *err);
/* Maps the block a parent made with fts_metrics_new_fd (fd is closed by destroy). NULL
 * (FTS_ERROR_SYSTEM) when fd cannot be mapped or holds another layout. */
fts_metrics_t *fts_metrics_adopt_fd(int fd, fts_error_t *err);
/* Unmaps the block (closing its fd, if any). Accepts NULL. Uninstalls it if installed. */
void fts_metrics_destroy(fts_metrics_t *metrics);

/* The process-wide block updates go to; NULL: updates do nothing. Install before starting
 * threads that update (the pointer itself is not atomic). */
void fts_metrics_install(fts_metrics_t *metrics);
fts_metrics_t *fts_metrics_installed(void);

/* Updates of the installed block. label is the family's label enum value (0 when it has no
 * label); an out-of-range label is a programming error (assert). */
void fts_metric_add(fts_metric_t family, unsigned label, uint64_t n);
void fts_metric_set(fts_metric_t family, unsigned label, double value);
void fts_metric_observe(fts_metric_t family, double value);
void fts_signal_set(fts_signal_t signal, uint64_t value);
/* Raises the signal to value if it is below (for times that only move forward). */
void fts_signal_raise(fts_signal_t signal, uint64_t value);
/* Sets the signal to value only if it is 0 (a first value). */
void fts_signal_set_if_zero(fts_signal_t signal, uint64_t value);

/* Reads of a given block (any thread, any process sharing it). */
uint64_t fts_metrics_counter(const fts_metrics_t *metrics, fts_metric_t family, unsigned label);
double fts_metrics_gauge(const fts_metrics_t *metrics, fts_metric_t family, unsigned label);
uint64_t fts_metrics_signal(const fts_metrics_t *metrics, fts_signal_t signal);
/* Sets a signal of a given block (run resets a dead child's state). */
void fts_metrics_signal_set(fts_metrics_t *metrics, fts_signal_t signal, uint64_t value);

/* Appends the exposition of the families of roles (FTS_METRICS_ROLE_*) to out. wall_now_ms is
 * the wall clock, for the lag gauge. */
void fts_metrics_render(const fts_metrics_t *metrics, unsigned roles, uint64_t wall_now_ms,
                        fts_buffer_t *out);

/* The content type of the rendering. */
#define FTS_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* /healthz: true when the roles' processes make progress; otherwise false and reason (a short
 * sentence, no secrets) says why. stall_ms is FTSYNC_HEALTH_STALL_MS; now_ms the monotonic
 * clock. */
bool fts_health_check(const fts_metrics_t *metrics, unsigned roles, uint64_t now_ms,
                      uint64_t stall_ms, char *reason, size_t reason_size);
/* /readyz: true when the roles' processes are connected to what they need. */
bool fts_ready_check(const fts_metrics_t *metrics, unsigned roles, char *reason,
                     size_t reason_size);

#endif
