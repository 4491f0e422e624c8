/*
 * config.h - ftsync's settings: one declarative table, read from the environment.
 *
 * Every setting is a row of the table in config.c (name, type, default, bounds, description),
 * and that one table drives reading, validation, `ftsync config` and `ftsync config --help`.
 * Values come from, in order of precedence:
 *   1. the environment variable itself (FTSYNC_ES_PASSWORD=...),
 *   2. a file named by <NAME>_FILE in the environment (how Kubernetes mounts secrets),
 *   3. the .env file (FTSYNC_ENV_FILE, or ./.env when present), which may hold NAME or NAME_FILE,
 *   4. the table's default.
 * A bad value never starts the service: loading collects every problem, each naming the
 * variable and what is wrong, and the commands exit with status 2 (invariant 6).
 *
 * Core depends on libbson only, so URL syntax and index names are checked by functions the
 * adapters supply (fts_config_checks_t): libmongoc for MongoDB URIs, libcurl's URL API for the
 * others, Elasticsearch's naming rules for FTSYNC_ES_INDEX and FTSYNC_ES_ALIAS. The field list
 * and id field are checked by the projection's own rules (projection.h), and the checks that
 * involve two settings run after every row is read: whatever a role would refuse at start is
 * refused by loading (invariant 6).
 */
#ifndef FTS_CONFIG_H
#define FTS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "error.h"
#include "log.h"

/* Upper bound on rows in the settings table; config.c asserts it at compile time. */
#define FTS_CONFIG_MAX_SETTINGS 64

/* The value every shipped example uses for a secret; refused outside development mode. */
#define FTS_CONFIG_PLACEHOLDER "CHANGE-ME"

typedef struct {
    char **items;
    size_t count;
} fts_string_list_t;

/* Which part of ftsync needs a setting; a required setting is only required of its roles. */
typedef enum {
    FTS_ROLE_EXTRACT = 1u << 0,
    FTS_ROLE_LOAD = 1u << 1,
    FTS_ROLE_ALL = FTS_ROLE_EXTRACT | FTS_ROLE_LOAD
} fts_role_t;

typedef enum {
    FTS_ORIGIN_UNSET = 0,
    FTS_ORIGIN_DEFAULT,
    FTS_ORIGIN_ENVIRONMENT,
    FTS_ORIGIN_ENVIRONMENT_FILE, /* <NAME>_FILE named in the environment */
    FTS_ORIGIN_DOTENV,
    FTS_ORIGIN_DOTENV_FILE /* <NAME>_FILE named in the .env file */
} fts_origin_t;

/* The choice settings (TYPE_CHOICE rows of the table), parsed once into these enums. Each
 * enum's values index its fts_*_names array: the names accepted, printed and listed in help. */

/* FTSYNC_MONGO_SCOPE: what the change stream watches. */
typedef enum {
    FTS_SCOPE_COLLECTION = 0, /* the collection itself */
    FTS_SCOPE_DATABASE        /* its database, filtered to the collection */
} fts_scope_t;

/* FTSYNC_MONGO_FULL_DOCUMENT: the post-image of update events. */
typedef enum {
    FTS_FULL_DOCUMENT_UPDATE_LOOKUP = 0,
    FTS_FULL_DOCUMENT_WHEN_AVAILABLE,
    FTS_FULL_DOCUMENT_REQUIRED
} fts_full_document_t;

/* FTSYNC_MONGO_PRE_IMAGES: the pre-images of changes (fullDocumentBeforeChange). */
typedef enum {
    FTS_PRE_IMAGES_OFF = 0,
    FTS_PRE_IMAGES_WHEN_AVAILABLE,
    FTS_PRE_IMAGES_REQUIRED
} fts_pre_images_t;

/* FTSYNC_ON_DROP: what the transform makes of a drop of the collection. */
typedef enum {
    FTS_ON_DROP_DELETE = 0, /* a drop action (load removes the collection's documents) */
    FTS_ON_DROP_IGNORE      /* no action: the index stays as it is */
} fts_on_drop_t;

/* FTSYNC_ON_HISTORY_LOST: what extract does when the saved position left the oplog. */
typedef enum {
    FTS_ON_HISTORY_LOST_RESYNC = 0, /* snapshot again, then sweep what was deleted meanwhile */
    FTS_ON_HISTORY_LOST_STOP        /* stop in an error state for an operator */
} fts_on_history_lost_t;

/* FTSYNC_ID_MAP: whether extract keeps the id map (source _id -> index id) in the queue Redis. */
typedef enum {
    FTS_ID_MAP_AUTO = 0, /* on when FTSYNC_ID_FIELD is not _id */
    FTS_ID_MAP_ON,
    FTS_ID_MAP_OFF
} fts_id_map_mode_t;

/* FTSYNC_ID_FORMAT: how an id value becomes the index id (README.md, Extract: index ids). */
typedef enum {
    FTS_ID_FORMAT_PLAIN = 0, /* ObjectId as hex, numbers in decimal, strings as they are */
    FTS_ID_FORMAT_TYPED      /* the same, tagged with the value's type: o:, i:, s: */
} fts_id_format_t;

/* NULL-terminated, indexed by the enums above. */
extern const char *const fts_scope_names[];
extern const char *const fts_full_document_names[];
extern const char *const fts_pre_images_names[];
extern const char *const fts_on_drop_names[];
extern const char *const fts_on_history_lost_names[];
extern const char *const fts_id_map_names[];
extern const char *const fts_id_format_names[];

typedef struct {
    /* MongoDB source */
    char *mongo_uri;
    char *mongo_db;
    char *mongo_collection;
    int64_t batch_size;
    fts_scope_t mongo_scope;
    fts_full_document_t mongo_full_document;
    fts_pre_images_t mongo_pre_images;
    int64_t mongo_max_await_ms;

    /* Extract */
    fts_on_drop_t on_drop;
    char *transform_plugin; /* shared library path, NULL: none */
    int64_t backlog_max;
    int64_t trim_interval_ms;
    int64_t lease_ttl_ms;
    fts_on_history_lost_t on_history_lost;
    int64_t worker_crash_limit;

    /* Redis: state store (token, lease) and queue (streams) */
    char *state_redis_url;
    char *queue_redis_url;
    int64_t redis_connect_timeout_ms;
    int64_t redis_command_timeout_ms;

    /* Elasticsearch sink */
    fts_string_list_t es_urls;
    char *es_index;
    char *es_alias;
    char *es_index_definition;
    char *es_user;
    char *es_password;
    char *es_api_key;
    char *es_ca_file;
    char *es_doc_type;
    bool es_gzip;
    int64_t es_connect_timeout_ms;
    int64_t es_request_timeout_ms;
    int64_t bulk_max_actions;
    int64_t bulk_max_bytes;
    int64_t bulk_max_wait_ms;
    int64_t bulk_max_in_flight;
    char *ns_field; /* "off": none (cmd_load.c) */
    int64_t sweep_page_size;

    /* Load: the consumer group */
    char *consumer_name; /* NULL: derived (fts_cmd_consumer_name in cmd/cmd_load.c) */
    int64_t read_block_ms;
    int64_t claim_idle_ms;
    int64_t claim_interval_ms;
    int64_t max_deliveries;
    int64_t retry_base_ms;
    int64_t retry_max_ms;
    int64_t stop_timeout_ms;

    /* Projection of documents */
    char *id_field;
    fts_id_map_mode_t id_map;
    fts_id_format_t id_format;
    fts_string_list_t fields;

    /* Operation */
    char *pipeline;
    char *admin_addr;
    int64_t health_stall_ms; /* 0: derived, see fts_config_health_stall_ms */
    fts_log_level_t log_level;
    fts_log_format_t log_format;
    bool dev_mode;

    /* Where each row of the table got its value (index = row). */
    fts_origin_t origins[FTS_CONFIG_MAX_SETTINGS];
    /* The .env file that was read, if any. */
    char *dotenv_path;
} fts_config_t;

/* Validates a URL-like value; on success may set *masked to an allocated copy (freed with
 * bson_free) with any password replaced by "***" (for printing), or leave it NULL when there is
 * nothing to hide. */
typedef bool (*fts_config_check_fn)(const char *value, char **masked, fts_error_t *err);

typedef struct {
    fts_config_check_fn mongo_uri;
    fts_config_check_fn redis_url;
    fts_config_check_fn es_url;
    fts_config_check_fn es_index_name; /* an index or alias name (masked is left NULL) */
} fts_config_checks_t;

typedef struct {
    /* Which roles' required settings must be present. */
    unsigned roles;
    /* Looks up environment variables; NULL means getenv. Tests pass their own. */
    const char *(*getenv_fn)(const char *name, void *context);
    void *getenv_context;
    const fts_config_checks_t *checks;
} fts_config_source_t;

/* Reads and validates every setting. On failure returns false, fills err with the first
 * problem, and (when problems is not NULL) appends every problem, one per line. config is
 * always left safe to pass to fts_config_cleanup. Unknown FTSYNC_* variables are logged as
 * warnings, not refused: Kubernetes itself injects some (FTSYNC_SERVICE_HOST...). */
bool fts_config_load(fts_config_t *config, const fts_config_source_t *source,
                     fts_buffer_t *problems, fts_error_t *err);

void fts_config_cleanup(fts_config_t *config);

/* Writes the effective configuration as NAME=value lines, secrets and URL passwords masked,
 * each with a comment saying where the value came from. */
void fts_config_print(const fts_config_t *config, const fts_config_checks_t *checks,
                      fts_buffer_t *out);

/* Writes the table: every setting with its type, default, roles and description. */
void fts_config_print_help(fts_buffer_t *out);

/* Splits "a, b,c" into trimmed items; refuses empty items and duplicates. */
bool fts_string_list_parse(const char *text, fts_string_list_t *list, fts_error_t *err);
void fts_string_list_cleanup(fts_string_list_t *list);

/* Parses "512", "64k", "5MiB", "1g" into bytes (binary units). */
bool fts_config_parse_size(const char *text, int64_t *bytes, fts_error_t *err);

/* Finds text (matched exactly, case included) in names (NULL-terminated, e.g. fts_scope_names)
 * and sets *value to its index. False when it is not one of them. */
bool fts_config_choice_parse(const char *const *names, const char *text, int *value);

/* FTSYNC_HEALTH_STALL_MS, or its default derived from FTSYNC_MONGO_MAX_AWAIT_MS when 0. */
uint64_t fts_config_health_stall_ms(const fts_config_t *config);

#endif
