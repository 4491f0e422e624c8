/*
 * config.c - the settings table and the code that reads, validates and prints it (config.h).
 *
 * Keeps invariant 6: a bad value is refused with a message naming the variable and the problem,
 * before any server is contacted, and secrets never reach the output.
 */
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <bson/bson.h>

#include "projection.h"

typedef enum {
    TYPE_STRING,      /* any non-empty text */
    TYPE_NAME,        /* [A-Za-z0-9_.-]+, safe inside Redis key names and logs */
    TYPE_CHOICE,      /* one of the row's choices, exactly as written; stored as its index */
    TYPE_INT,         /* decimal integer within [min, max] */
    TYPE_SIZE,        /* bytes, with an optional k/m/g suffix */
    TYPE_BOOL,        /* true/false, yes/no, on/off, 1/0 */
    TYPE_LOG_LEVEL,   /* debug, info, warn, error */
    TYPE_LOG_FORMAT,  /* logfmt, json */
    TYPE_FILE,        /* path of a regular file that must be readable */
    TYPE_LIST,        /* comma-separated names */
    TYPE_FIELD_PATH,  /* a dotted document path, as the projection takes it (projection.h) */
    TYPE_FIELD_LIST,  /* FTSYNC_FIELDS: a list the projection accepts (projection.h) */
    TYPE_INDEX_NAME,  /* an index or alias name, checked by checks->es_index_name */
    TYPE_ADDRESS,     /* host:port to listen on */
    TYPE_MONGO_URI,   /* checked by checks->mongo_uri */
    TYPE_REDIS_URL,   /* checked by checks->redis_url */
    TYPE_ES_URL_LIST, /* comma-separated, each checked by checks->es_url */
} setting_type_t;

/* Flags of a row. */
#define SETTING_SECRET 1u /* printed as *** and registered with the logger */

typedef struct {
    const char *name;
    setting_type_t type;
    const char *default_value; /* NULL: no default */
    const char *default_from;  /* no default of its own: copies this other setting */
    size_t offset;
    unsigned flags;
    unsigned required_by; /* fts_role_t bits; 0 = optional */
    int64_t min, max;     /* TYPE_INT and TYPE_SIZE */
    const char *description;
    const char *const *choices; /* TYPE_CHOICE: the names, NULL-terminated; the field is the
                                 * enum whose values index them (stored as an int) */
} setting_t;

#define FIELD(member) offsetof(fts_config_t, member)

const char *const fts_scope_names[] = {"collection", "database", NULL};
const char *const fts_full_document_names[] = {"updateLookup", "whenAvailable", "required", NULL};
const char *const fts_pre_images_names[] = {"off", "whenAvailable", "required", NULL};
const char *const fts_on_drop_names[] = {"delete", "ignore", NULL};
const char *const fts_on_history_lost_names[] = {"resync", "stop", NULL};
const char *const fts_id_map_names[] = {"auto", "on", "off", NULL};
const char *const fts_id_format_names[] = {"plain", "typed", NULL};

/* A TYPE_CHOICE field is written and read as an int: each of its enums must be one. */
_Static_assert(sizeof(fts_scope_t) == sizeof(int) && sizeof(fts_full_document_t) == sizeof(int) &&
                   sizeof(fts_pre_images_t) == sizeof(int) &&
                   sizeof(fts_on_drop_t) == sizeof(int) &&
                   sizeof(fts_on_history_lost_t) == sizeof(int) &&
                   sizeof(fts_id_map_mode_t) == sizeof(int),
               "choice enums are stored as int");

static const setting_t settings[] = {
    {"FTSYNC_MONGO_URI", TYPE_MONGO_URI, NULL, NULL, FIELD(mongo_uri), 0, FTS_ROLE_EXTRACT, 0, 0,
     "MongoDB connection string of the replica set to follow", NULL},
    {"FTSYNC_MONGO_DB", TYPE_STRING, NULL, NULL, FIELD(mongo_db), 0, FTS_ROLE_EXTRACT, 0, 0,
     "database holding the collection", NULL},
    {"FTSYNC_MONGO_COLLECTION", TYPE_STRING, NULL, NULL, FIELD(mongo_collection), 0,
     FTS_ROLE_EXTRACT, 0, 0, "collection whose documents are indexed", NULL},
    {"FTSYNC_BATCH_SIZE", TYPE_INT, "500", NULL, FIELD(batch_size), 0, 0, 1, 100000,
     "change events or snapshot documents read and queued per batch", NULL},
    {"FTSYNC_MONGO_SCOPE", TYPE_CHOICE, "collection", NULL, FIELD(mongo_scope), 0, 0, 0, 0,
     "what the change stream watches: collection, or database (a database-wide stream "
     "filtered to FTSYNC_MONGO_COLLECTION)",
     fts_scope_names},
    {"FTSYNC_MONGO_FULL_DOCUMENT", TYPE_CHOICE, "updateLookup", NULL, FIELD(mongo_full_document), 0,
     0, 0, 0,
     "post-image of updates: updateLookup, whenAvailable or required (the last two need "
     "changeStreamPreAndPostImages)",
     fts_full_document_names},
    {"FTSYNC_MONGO_PRE_IMAGES", TYPE_CHOICE, "off", NULL, FIELD(mongo_pre_images), 0, 0, 0, 0,
     "pre-images of changes (fullDocumentBeforeChange): off, whenAvailable or required; needed "
     "for deletes when FTSYNC_ID_FIELD is not _id and FTSYNC_ID_MAP is off (the collection "
     "needs changeStreamPreAndPostImages)",
     fts_pre_images_names},
    {"FTSYNC_MONGO_MAX_AWAIT_MS", TYPE_INT, "1000", NULL, FIELD(mongo_max_await_ms), 0, 0, 10,
     60000, "how long one change-stream read waits for an event (maxAwaitTimeMS)", NULL},
    {"FTSYNC_ON_DROP", TYPE_CHOICE, "delete", NULL, FIELD(on_drop), 0, 0, 0, 0,
     "when the collection is dropped: delete (queue a drop action; load then removes every "
     "document of the collection from the index, see FTSYNC_NS_FIELD) or ignore",
     fts_on_drop_names},
    {"FTSYNC_TRANSFORM_PLUGIN", TYPE_FILE, NULL, NULL, FIELD(transform_plugin), 0, 0, 0, 0,
     "shared library with a transform plugin (ftsync_plugin.h), run in the transform worker", NULL},
    {"FTSYNC_BACKLOG_MAX", TYPE_INT, "100000", NULL, FIELD(backlog_max), 0, 0, 1, 1000000000,
     "stream entries not yet acknowledged by the loaders above which extract pauses", NULL},
    {"FTSYNC_TRIM_INTERVAL_MS", TYPE_INT, "10000", NULL, FIELD(trim_interval_ms), 0, 0, 100,
     3600000, "how often extract trims the entries every consumer group acknowledged", NULL},
    {"FTSYNC_LEASE_TTL_MS", TYPE_INT, "10000", NULL, FIELD(lease_ttl_ms), 0, 0, 300, 600000,
     "time to live of the extractor lease; renewed every third of it, a standby takes over "
     "within about this long",
     NULL},
    {"FTSYNC_ON_HISTORY_LOST", TYPE_CHOICE, "resync", NULL, FIELD(on_history_lost), 0, 0, 0, 0,
     "when the saved position is gone from the oplog: resync (snapshot again, then queue a "
     "sweep, which load applies: it removes the documents deleted meanwhile) or stop",
     fts_on_history_lost_names},
    {"FTSYNC_WORKER_CRASH_LIMIT", TYPE_INT, "3", NULL, FIELD(worker_crash_limit), 0, 0, 1, 100,
     "crashes of the transform worker on one event before that event is dead-lettered", NULL},

    {"FTSYNC_STATE_REDIS_URL", TYPE_REDIS_URL, "redis://127.0.0.1:6379/0", NULL,
     FIELD(state_redis_url), 0, 0, 0, 0,
     "Redis holding the resume token and the extractor lease "
     "(redis://[user:password@]host:port/db)",
     NULL},
    {"FTSYNC_QUEUE_REDIS_URL", TYPE_REDIS_URL, NULL, "FTSYNC_STATE_REDIS_URL",
     FIELD(queue_redis_url), 0, 0, 0, 0, "Redis holding the action stream and dead-letter stream",
     NULL},
    {"FTSYNC_REDIS_CONNECT_TIMEOUT_MS", TYPE_INT, "2000", NULL, FIELD(redis_connect_timeout_ms), 0,
     0, 10, 600000, "how long to wait for a Redis connection", NULL},
    {"FTSYNC_REDIS_COMMAND_TIMEOUT_MS", TYPE_INT, "5000", NULL, FIELD(redis_command_timeout_ms), 0,
     0, 10, 600000, "how long to wait for a Redis reply", NULL},

    {"FTSYNC_ES_URL", TYPE_ES_URL_LIST, "http://127.0.0.1:9200", NULL, FIELD(es_urls), 0, 0, 0, 0,
     "Elasticsearch or OpenSearch base URL(s), comma-separated; the next is tried when one is "
     "unreachable",
     NULL},
    {"FTSYNC_ES_INDEX", TYPE_INDEX_NAME, NULL, NULL, FIELD(es_index), 0, FTS_ROLE_LOAD, 0, 0,
     "index written to; created from the index definition when absent", NULL},
    {"FTSYNC_ES_ALIAS", TYPE_INDEX_NAME, NULL, NULL, FIELD(es_alias), 0, 0, 0, 0,
     "optional alias pointing at FTSYNC_ES_INDEX, created with it; searches can use the alias",
     NULL},
    {"FTSYNC_ES_INDEX_DEFINITION", TYPE_FILE, NULL, NULL, FIELD(es_index_definition), 0, 0, 0, 0,
     "JSON file with the index settings and mappings used to create the index", NULL},
    {"FTSYNC_ES_USER", TYPE_STRING, NULL, NULL, FIELD(es_user), 0, 0, 0, 0,
     "user for HTTP basic authentication", NULL},
    {"FTSYNC_ES_PASSWORD", TYPE_STRING, NULL, NULL, FIELD(es_password), SETTING_SECRET, 0, 0, 0,
     "password for HTTP basic authentication", NULL},
    {"FTSYNC_ES_API_KEY", TYPE_STRING, NULL, NULL, FIELD(es_api_key), SETTING_SECRET, 0, 0, 0,
     "API key (the base64 id:key form), instead of user and password", NULL},
    {"FTSYNC_ES_CA_FILE", TYPE_FILE, NULL, NULL, FIELD(es_ca_file), 0, 0, 0, 0,
     "PEM file of the certificate authority that signed the cluster's certificate", NULL},
    {"FTSYNC_ES_DOC_TYPE", TYPE_NAME, NULL, NULL, FIELD(es_doc_type), 0, 0, 0, 0,
     "document type for clusters older than 7.0 (e.g. doc); unset for typeless clusters", NULL},
    {"FTSYNC_ES_GZIP", TYPE_BOOL, "false", NULL, FIELD(es_gzip), 0, 0, 0, 0, "gzip request bodies",
     NULL},
    {"FTSYNC_ES_CONNECT_TIMEOUT_MS", TYPE_INT, "5000", NULL, FIELD(es_connect_timeout_ms), 0, 0, 10,
     600000, "how long to wait for an Elasticsearch connection", NULL},
    {"FTSYNC_ES_REQUEST_TIMEOUT_MS", TYPE_INT, "60000", NULL, FIELD(es_request_timeout_ms), 0, 0,
     10, 3600000, "how long to wait for an Elasticsearch reply", NULL},
    {"FTSYNC_BULK_MAX_ACTIONS", TYPE_INT, "1000", NULL, FIELD(bulk_max_actions), 0, 0, 1, 100000,
     "most actions in one bulk request", NULL},
    {"FTSYNC_BULK_MAX_BYTES", TYPE_SIZE, "5m", NULL, FIELD(bulk_max_bytes), 0, 0, 1024,
     1024 * 1024 * 1024, "largest bulk request body (k, m, g suffixes are binary units)", NULL},
    {"FTSYNC_BULK_MAX_WAIT_MS", TYPE_INT, "200", NULL, FIELD(bulk_max_wait_ms), 0, 0, 0, 60000,
     "longest time a partial bulk request waits for more actions", NULL},
    {"FTSYNC_BULK_MAX_IN_FLIGHT", TYPE_INT, "2", NULL, FIELD(bulk_max_in_flight), 0, 0, 1, 64,
     "bulk requests in flight at once per loader", NULL},
    {"FTSYNC_NS_FIELD", TYPE_NAME, "_ftsync_ns", NULL, FIELD(ns_field), 0, 0, 0, 0,
     "field load writes into every indexed document with its source ns (db.collection), so "
     "that drops and sweeps remove only that collection's documents from a shared index or "
     "alias; off: not written, drop and sweep entries are dead-lettered instead, and extract "
     "queues no sweep after a first snapshot",
     NULL},
    {"FTSYNC_SWEEP_PAGE_SIZE", TYPE_INT, "1000", NULL, FIELD(sweep_page_size), 0, 0, 1, 10000,
     "documents per scroll page while load applies a drop or sweep", NULL},

    {"FTSYNC_CONSUMER_NAME", TYPE_NAME, NULL, NULL, FIELD(consumer_name), 0, 0, 0, 0,
     "this loader's consumer name in the group; unset: the pod name in Kubernetes, else "
     "<host>-<pid>",
     NULL},
    {"FTSYNC_READ_BLOCK_MS", TYPE_INT, "2000", NULL, FIELD(read_block_ms), 0, 0, 10, 60000,
     "how long one XREADGROUP waits for new entries", NULL},
    {"FTSYNC_CLAIM_IDLE_MS", TYPE_INT, "60000", NULL, FIELD(claim_idle_ms), 0, 0, 1000, 86400000,
     "entries pending this long (their loader died) are claimed by another loader", NULL},
    {"FTSYNC_CLAIM_INTERVAL_MS", TYPE_INT, "5000", NULL, FIELD(claim_interval_ms), 0, 0, 100,
     3600000, "how often a loader looks for entries to claim and refreshes its own", NULL},
    {"FTSYNC_MAX_DELIVERIES", TYPE_INT, "10", NULL, FIELD(max_deliveries), 0, 0, 1, 1000000,
     "an entry whose loaders died this often while sending it goes to the dead-letter stream",
     NULL},
    {"FTSYNC_RETRY_BASE_MS", TYPE_INT, "100", NULL, FIELD(retry_base_ms), 0, 0, 1, 60000,
     "first backoff ceiling when Elasticsearch or Redis fails", NULL},
    {"FTSYNC_RETRY_MAX_MS", TYPE_INT, "30000", NULL, FIELD(retry_max_ms), 0, 0, 10, 3600000,
     "largest backoff ceiling between retries", NULL},
    {"FTSYNC_STOP_TIMEOUT_MS", TYPE_INT, "10000", NULL, FIELD(stop_timeout_ms), 0, 0, 0, 600000,
     "on SIGTERM, how long in-flight requests may finish before they are abandoned", NULL},

    {"FTSYNC_ID_FIELD", TYPE_FIELD_PATH, "_id", NULL, FIELD(id_field), 0, 0, 0, 0,
     "document field whose value becomes the index _id", NULL},
    {"FTSYNC_ID_MAP", TYPE_CHOICE, "auto", NULL, FIELD(id_map), 0, 0, 0, 0,
     "keep the id map (source _id -> index id, the Redis hash ftsync:{<pipeline>}:ids) so that "
     "deletes find their index id without pre-images and id changes remove the old document: "
     "auto (on when FTSYNC_ID_FIELD is not _id), on or off (then deletes need pre-images when "
     "FTSYNC_ID_FIELD is not _id)",
     fts_id_map_names},
    {"FTSYNC_ID_FORMAT", TYPE_CHOICE, "plain", NULL, FIELD(id_format), 0, 0, 0, 0,
     "how the id value becomes the index id: plain (ObjectId as hex, numbers in decimal, strings "
     "as they are: 424242 and \"424242\" are one index id, the second to claim it is "
     "dead-lettered) or typed (tagged with the value's "
     "type: o:<hex>, i:<decimal>, s:<string>, never shared by different types); changing it "
     "needs a reindex",
     fts_id_format_names},
    {"FTSYNC_FIELDS", TYPE_FIELD_LIST, NULL, NULL, FIELD(fields), 0, 0, 0, 0,
     "comma-separated fields copied into the index; unset copies the whole document", NULL},

    {"FTSYNC_PIPELINE", TYPE_NAME, "default", NULL, FIELD(pipeline), 0, 0, 0, 0,
     "name of this pipeline; its Redis keys are ftsync:{<pipeline>}:*", NULL},
    {"FTSYNC_ADMIN_ADDR", TYPE_ADDRESS, "0.0.0.0:8080", NULL, FIELD(admin_addr), 0, 0, 0, 0,
     "host:port of the admin HTTP endpoint of extract, load and run (GET /healthz, /readyz, "
     "/metrics, /status), or off; port 0 picks a free one",
     NULL},
    {"FTSYNC_HEALTH_STALL_MS", TYPE_INT, "0", NULL, FIELD(health_stall_ms), 0, 0, 0, 86400000,
     "/healthz turns 503 when the change stream returned nothing, or the loader held entries and "
     "settled none, for longer than this; 0: 3 x FTSYNC_MONGO_MAX_AWAIT_MS + 10000",
     NULL},
    {"FTSYNC_LOG_LEVEL", TYPE_LOG_LEVEL, "info", NULL, FIELD(log_level), 0, 0, 0, 0,
     "least severe level logged: debug, info, warn or error", NULL},
    {"FTSYNC_LOG_FORMAT", TYPE_LOG_FORMAT, "logfmt", NULL, FIELD(log_format), 0, 0, 0, 0,
     "log line format: logfmt or json", NULL},
    {"FTSYNC_DEV_MODE", TYPE_BOOL, "false", NULL, FIELD(dev_mode), 0, 0, 0, 0,
     "development mode: accepts the CHANGE-ME placeholder secrets of the examples", NULL},
};

#define SETTING_COUNT (sizeof settings / sizeof settings[0])
_Static_assert(sizeof settings / sizeof settings[0] <= FTS_CONFIG_MAX_SETTINGS,
               "raise FTS_CONFIG_MAX_SETTINGS");

/* Variables with the FTSYNC_ prefix that are not settings but are expected. */
static const char *const known_non_settings[] = {
    "FTSYNC_ENV_FILE", "FTSYNC_DEPS_DIR", "FTSYNC_LOCAL_DIR", "FTSYNC_KEEP_RUNNING",
    "FTSYNC_KEEP_SERVERS", "FTSYNC_BUILD_DIR", "FTSYNC_TESTBED_DIR",
    /* set by `ftsync run` for its children: the metrics block they count into */
    "FTSYNC_RUN_METRICS_FD"};

/* Secret files and .env files are small; anything bigger is a mistake worth naming. */
#define MAX_VALUE_FILE_BYTES (64 * 1024)

/* ---------------------------------------------------------------------------------------- */
/* The .env file                                                                            */

typedef struct {
    char **names;
    char **values;
    size_t count;
} dotenv_t;

static void dotenv_cleanup(dotenv_t *dotenv)
{
    for (size_t i = 0; i < dotenv->count; i++) {
        bson_free(dotenv->names[i]);
        bson_free(dotenv->values[i]);
    }
    bson_free(dotenv->names);
    bson_free(dotenv->values);
    memset(dotenv, 0, sizeof *dotenv);
}

static const char *dotenv_get(const dotenv_t *dotenv, const char *name)
{
    /* The last assignment wins, as in a shell. */
    for (size_t i = dotenv->count; i > 0; i--) {
        if (strcmp(dotenv->names[i - 1], name) == 0) {
            return dotenv->values[i - 1];
        }
    }
    return NULL;
}

static char *trim(char *text)
{
    while (isspace((unsigned char)*text)) {
        text++;
    }
    size_t len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1])) {
        text[--len] = '\0';
    }
    return text;
}

/* What kind of file st is, for a message saying why it is refused. */
static const char *file_kind(const struct stat *st)
{
    return S_ISDIR(st->st_mode)    ? "a directory"
           : S_ISFIFO(st->st_mode) ? "a FIFO"
           : S_ISSOCK(st->st_mode) ? "a socket"
           : S_ISBLK(st->st_mode)  ? "a block device"
           : S_ISCHR(st->st_mode)  ? "a character device"
                                   : "not a plain file";
}

/* Opens path for reading without ever blocking (a FIFO with no writer would block a plain
 * open until one comes: `ftsync config` hung) and checks what it is: a regular file, or with
 * allow_devices a character device too (/dev/null stands for "empty"). Returns the descriptor,
 * or -1 with err set. */
static int open_checked(const char *path, bool allow_devices, fts_error_t *err)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_IO, "cannot read %s: %s", path,
                      strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_IO, "cannot read %s: %s", path,
                      strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) && !(allow_devices && S_ISCHR(st.st_mode))) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "%s is not a regular file (it is %s)", path, file_kind(&st));
        close(fd);
        return -1;
    }
    return fd;
}

static bool read_small_file(const char *path, char **contents, fts_error_t *err)
{
    int fd = open_checked(path, true, err);
    if (fd < 0) {
        return false;
    }
    bool ok = false;
    fts_buffer_t data = {0};
    char chunk[8192];
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_IO, "cannot read %s: %s", path,
                          strerror(errno));
            goto cleanup;
        }
        if (got == 0) {
            break;
        }
        if (data.len + (size_t)got > MAX_VALUE_FILE_BYTES) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                          "%s is larger than %d bytes", path, MAX_VALUE_FILE_BYTES);
            goto cleanup;
        }
        fts_buffer_append(&data, chunk, (size_t)got);
    }
    fts_buffer_append(&data, "", 0); /* an empty file still reads as "" */
    *contents = fts_buffer_steal(&data);
    ok = true;
cleanup:
    fts_buffer_destroy(&data);
    close(fd);
    return ok;
}

/* Parses KEY=VALUE lines: blank lines and # comments skipped, an optional "export " prefix,
 * values optionally in single or double quotes. */
static bool dotenv_parse(const char *path, const char *text, dotenv_t *dotenv, fts_error_t *err)
{
    bool ok = false;
    char *copy = bson_strdup(text);
    int line_number = 0;
    char *next_line = copy;
    while (next_line) {
        char *line = next_line;
        char *newline = strchr(line, '\n');
        next_line = newline ? newline + 1 : NULL;
        if (newline) {
            *newline = '\0';
        }
        line_number++;
        line = trim(line);
        if (*line == '\0' || *line == '#') {
            continue;
        }
        if (strncmp(line, "export ", 7) == 0) {
            line = trim(line + 7);
        }
        char *equals = strchr(line, '=');
        if (!equals || equals == line) {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                          "%s line %d: expected NAME=value", path, line_number);
            goto cleanup;
        }
        *equals = '\0';
        char *name = trim(line);
        char *value = trim(equals + 1);
        size_t value_len = strlen(value);
        if (value_len >= 2 && (value[0] == '"' || value[0] == '\'') &&
            value[value_len - 1] == value[0]) {
            value[value_len - 1] = '\0';
            value++;
        }
        dotenv->names = bson_realloc(dotenv->names, (dotenv->count + 1) * sizeof *dotenv->names);
        dotenv->values = bson_realloc(dotenv->values, (dotenv->count + 1) * sizeof *dotenv->values);
        dotenv->names[dotenv->count] = bson_strdup(name);
        dotenv->values[dotenv->count] = bson_strdup(value);
        dotenv->count++;
    }
    ok = true;
cleanup:
    bson_free(copy);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* Parsing of single values                                                                 */

bool fts_string_list_parse(const char *text, fts_string_list_t *list, fts_error_t *err)
{
    bool ok = false;
    char *copy = bson_strdup(text);
    fts_string_list_t parsed = {0};
    char *cursor = copy;
    for (;;) {
        char *comma = strchr(cursor, ',');
        if (comma) {
            *comma = '\0';
        }
        char *item = trim(cursor);
        if (*item == '\0') {
            fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                          "empty item in comma-separated list");
            goto cleanup;
        }
        for (size_t i = 0; i < parsed.count; i++) {
            if (strcmp(parsed.items[i], item) == 0) {
                fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                              "\"%s\" is listed twice", item);
                goto cleanup;
            }
        }
        parsed.items = bson_realloc(parsed.items, (parsed.count + 1) * sizeof *parsed.items);
        parsed.items[parsed.count++] = bson_strdup(item);
        if (!comma) {
            break;
        }
        cursor = comma + 1;
    }
    *list = parsed;
    memset(&parsed, 0, sizeof parsed);
    ok = true;
cleanup:
    fts_string_list_cleanup(&parsed);
    bson_free(copy);
    return ok;
}

void fts_string_list_cleanup(fts_string_list_t *list)
{
    if (!list) {
        return;
    }
    for (size_t i = 0; i < list->count; i++) {
        bson_free(list->items[i]);
    }
    bson_free(list->items);
    list->items = NULL;
    list->count = 0;
}

static bool parse_int(const char *text, int64_t *value, fts_error_t *err)
{
    errno = 0;
    char *end = NULL;
    long long parsed = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || isspace((unsigned char)*text)) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\" is not a whole number", text);
    }
    if (errno == ERANGE) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\" is out of range", text);
    }
    *value = parsed;
    return true;
}

bool fts_config_parse_size(const char *text, int64_t *bytes, fts_error_t *err)
{
    errno = 0;
    char *end = NULL;
    long long number = strtoll(text, &end, 10);
    if (end == text || number < 0 || isspace((unsigned char)*text) || *text == '-') {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\" is not a size (e.g. 512, 64k, 5m, 1g)", text);
    }
    int shift = 0;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        shift = 10;
        break;
    case 'm':
        shift = 20;
        break;
    case 'g':
        shift = 30;
        break;
    default:
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\" is not a size (e.g. 512, 64k, 5m, 1g)", text);
    }
    if (shift) {
        const char *unit = end + 1;
        /* Accept k, kb, kib (any case): all binary units, said once in the help. */
        if (*unit != '\0' && strcasecmp(unit, "b") != 0 && strcasecmp(unit, "ib") != 0) {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "\"%s\" is not a size (e.g. 512, 64k, 5m, 1g)", text);
        }
    }
    if (errno == ERANGE || number > (INT64_MAX >> shift)) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\" is out of range", text);
    }
    *bytes = (int64_t)number << shift;
    return true;
}

static bool parse_bool(const char *text, bool *value, fts_error_t *err)
{
    static const char *const truthy[] = {"true", "yes", "on", "1"};
    static const char *const falsy[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, truthy[i]) == 0) {
            *value = true;
            return true;
        }
        if (strcasecmp(text, falsy[i]) == 0) {
            *value = false;
            return true;
        }
    }
    return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                         "\"%s\" is not a boolean (true/false, yes/no, on/off, 1/0)", text);
}

static bool check_name(const char *text, fts_error_t *err)
{
    for (const char *p = text; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "\"%s\" may hold only letters, digits, '_', '-' and '.'", text);
        }
    }
    return true;
}

static bool check_address(const char *text, fts_error_t *err)
{
    if (strcmp(text, "off") == 0) {
        return true;
    }
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\" is not host:port (e.g. 0.0.0.0:8080, [::]:8080) or off", text);
    }
    int64_t port;
    fts_error_t port_err;
    if (!parse_int(colon + 1, &port, &port_err) || port < 0 || port > 65535) {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\" has no valid port (0-65535) after the last ':'", text);
    }
    if (text[0] == '[' && colon[-1] != ']') {
        return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                             "\"%s\": an IPv6 host must be written [addr]:port", text);
    }
    return true;
}

/* The files these settings name (an index definition, a CA, a plugin) are read whole by a role
 * later: a directory or a FIFO would fail (or block) only then. */
static bool check_file(const char *path, fts_error_t *err)
{
    int fd = open_checked(path, false, err);
    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

/* The projection's own rules (projection.h), so that what extract would refuse at start is
 * refused here. */
static bool check_field_path(const char *text, fts_error_t *err)
{
    fts_projection_t *projection = fts_projection_new(text, NULL, err);
    bool ok = projection != NULL;
    fts_projection_destroy(projection);
    return ok;
}

static bool check_field_list(const fts_string_list_t *fields, fts_error_t *err)
{
    fts_projection_t *projection = fts_projection_new(NULL, fields, err);
    bool ok = projection != NULL;
    fts_projection_destroy(projection);
    return ok;
}

static bool run_check(fts_config_check_fn check, const char *kind, const char *value,
                      fts_error_t *err)
{
    if (!check) {
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_UNSUPPORTED,
                             "no %s checker was given to the configuration", kind);
    }
    char *masked = NULL;
    bool ok = check(value, &masked, err);
    bson_free(masked);
    return ok;
}

bool fts_config_choice_parse(const char *const *names, const char *text, int *value)
{
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], text) == 0) {
            *value = i;
            return true;
        }
    }
    return false;
}

/* "a|b|c": how a choice row's names are shown in help and in errors. */
static void join_choices(const char *const *names, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; names[i] && len < size; i++) {
        int wrote = snprintf(out + len, size - len, "%s%s", i ? "|" : "", names[i]);
        len += wrote > 0 ? (size_t)wrote : 0;
    }
}

/* Parses text into the row's field of config. */
static bool store_value(fts_config_t *config, const setting_t *row, const char *text,
                        const fts_config_checks_t *checks, fts_error_t *err)
{
    void *field = (char *)config + row->offset;
    switch (row->type) {
    case TYPE_INT:
    case TYPE_SIZE: {
        int64_t number;
        bool parsed = row->type == TYPE_INT ? parse_int(text, &number, err)
                                            : fts_config_parse_size(text, &number, err);
        if (!parsed) {
            return false;
        }
        if (number < row->min || number > row->max) {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "%s is outside %" PRId64 "..%" PRId64, text, row->min, row->max);
        }
        *(int64_t *)field = number;
        return true;
    }
    case TYPE_BOOL:
        return parse_bool(text, (bool *)field, err);
    case TYPE_LOG_LEVEL:
        if (!fts_log_level_parse(text, (fts_log_level_t *)field)) {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "unknown log level \"%s\" (debug, info, warn, error)", text);
        }
        return true;
    case TYPE_LOG_FORMAT:
        if (!fts_log_format_parse(text, (fts_log_format_t *)field)) {
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "unknown log format \"%s\" (logfmt, json)", text);
        }
        return true;
    case TYPE_LIST:
        return fts_string_list_parse(text, (fts_string_list_t *)field, err);
    case TYPE_FIELD_LIST: {
        fts_string_list_t fields = {0};
        if (!fts_string_list_parse(text, &fields, err) || !check_field_list(&fields, err)) {
            fts_string_list_cleanup(&fields);
            return false;
        }
        *(fts_string_list_t *)field = fields;
        return true;
    }
    case TYPE_FIELD_PATH:
        if (!check_field_path(text, err)) {
            return false;
        }
        break;
    case TYPE_INDEX_NAME:
        if (!run_check(checks ? checks->es_index_name : NULL, "index name", text, err)) {
            return false;
        }
        break;
    case TYPE_ES_URL_LIST: {
        fts_string_list_t urls = {0};
        if (!fts_string_list_parse(text, &urls, err)) {
            return false;
        }
        for (size_t i = 0; i < urls.count; i++) {
            if (!run_check(checks ? checks->es_url : NULL, "URL", urls.items[i], err)) {
                fts_string_list_cleanup(&urls);
                return false;
            }
        }
        *(fts_string_list_t *)field = urls;
        return true;
    }
    case TYPE_NAME:
        if (!check_name(text, err)) {
            return false;
        }
        break;
    case TYPE_CHOICE:
        if (!fts_config_choice_parse(row->choices, text, (int *)field)) {
            char choices[256];
            join_choices(row->choices, choices, sizeof choices);
            return fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                                 "\"%s\" is not one of %s", text, choices);
        }
        return true;
    case TYPE_ADDRESS:
        if (!check_address(text, err)) {
            return false;
        }
        break;
    case TYPE_FILE:
        if (!check_file(text, err)) {
            return false;
        }
        break;
    case TYPE_MONGO_URI:
        if (!run_check(checks ? checks->mongo_uri : NULL, "MongoDB URI", text, err)) {
            return false;
        }
        break;
    case TYPE_REDIS_URL:
        if (!run_check(checks ? checks->redis_url : NULL, "Redis URL", text, err)) {
            return false;
        }
        break;
    case TYPE_STRING:
        break;
    }
    *(char **)field = bson_strdup(text);
    return true;
}

static bool row_has_value(const fts_config_t *config, size_t row)
{
    return config->origins[row] != FTS_ORIGIN_UNSET;
}

static const setting_t *find_setting(const char *name, size_t *row)
{
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (strcmp(settings[i].name, name) == 0) {
            if (row) {
                *row = i;
            }
            return &settings[i];
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Loading                                                                                  */

typedef struct {
    const fts_config_source_t *source;
    const dotenv_t *dotenv;
    fts_buffer_t *problems;
    fts_error_t *first;
    size_t problem_count;
} loader_t;

static const char *lookup_env(const loader_t *loader, const char *name)
{
    const fts_config_source_t *source = loader->source;
    const char *value =
        source->getenv_fn ? source->getenv_fn(name, source->getenv_context) : getenv(name);
    return value;
}

static void add_problem(loader_t *loader, const char *name, const fts_error_t *problem)
{
    if (loader->problem_count == 0) {
        fts_error_set(loader->first, FTS_ERROR_CONFIG, problem->code, "%s: %s", name,
                      problem->message);
    }
    loader->problem_count++;
    if (loader->problems) {
        fts_buffer_appendf(loader->problems, "%s: %s\n", name, problem->message);
    }
}

/* Finds the raw text for one setting, following the precedence in config.h. Returns false on
 * a problem (already recorded); *text is NULL when nothing set it. *owned is a copy to free. */
static bool find_raw_value(loader_t *loader, const setting_t *row, const char **text, char **owned,
                           fts_origin_t *origin)
{
    char file_name[128];
    snprintf(file_name, sizeof file_name, "%s_FILE", row->name);
    *text = NULL;
    *owned = NULL;
    *origin = FTS_ORIGIN_UNSET;

    const char *direct = lookup_env(loader, row->name);
    const char *via_file = lookup_env(loader, file_name);
    fts_origin_t direct_origin = FTS_ORIGIN_ENVIRONMENT;
    fts_origin_t file_origin = FTS_ORIGIN_ENVIRONMENT_FILE;
    if (!direct && !via_file && loader->dotenv) {
        direct = dotenv_get(loader->dotenv, row->name);
        via_file = dotenv_get(loader->dotenv, file_name);
        direct_origin = FTS_ORIGIN_DOTENV;
        file_origin = FTS_ORIGIN_DOTENV_FILE;
    }
    fts_error_t problem;
    if (direct && via_file) {
        fts_error_set(&problem, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "set either %s or %s, not both", row->name, file_name);
        add_problem(loader, row->name, &problem);
        return false;
    }
    if (via_file) {
        if (!read_small_file(via_file, owned, &problem)) {
            fts_error_prefix(&problem, "%s", file_name);
            add_problem(loader, row->name, &problem);
            return false;
        }
        /* Files written by editors and `echo` end in a newline that is not part of a secret. */
        size_t len = strlen(*owned);
        while (len > 0 && ((*owned)[len - 1] == '\n' || (*owned)[len - 1] == '\r')) {
            (*owned)[--len] = '\0';
        }
        *text = *owned;
        *origin = file_origin;
        return true;
    }
    if (direct) {
        *text = direct;
        *origin = direct_origin;
    }
    return true;
}

static void load_row(loader_t *loader, fts_config_t *config, size_t index)
{
    const setting_t *row = &settings[index];
    const char *text;
    char *owned;
    fts_origin_t origin;
    if (!find_raw_value(loader, row, &text, &owned, &origin)) {
        return;
    }
    fts_error_t problem;
    if (text && *text == '\0') {
        /* An empty variable reads as unset: that is what `FOO=` in a .env file means. */
        text = NULL;
    }
    if (text && strstr(text, FTS_CONFIG_PLACEHOLDER) && !config->dev_mode) {
        fts_error_set(&problem, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "still holds the placeholder %s; set a real value (or FTSYNC_DEV_MODE=true "
                      "for local experiments)",
                      FTS_CONFIG_PLACEHOLDER);
        add_problem(loader, row->name, &problem);
        goto cleanup;
    }
    if (!text && row->default_value) {
        text = row->default_value;
        origin = FTS_ORIGIN_DEFAULT;
    }
    if (!text && row->default_from) {
        size_t from;
        if (find_setting(row->default_from, &from) && row_has_value(config, from)) {
            const setting_t *source_row = &settings[from];
            const void *field = (const char *)config + source_row->offset;
            text = *(char *const *)field;
            origin = FTS_ORIGIN_DEFAULT;
        }
    }
    if (!text) {
        if (row->required_by & loader->source->roles) {
            fts_error_set(&problem, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                          "required but not set (%s)", row->description);
            add_problem(loader, row->name, &problem);
        }
        goto cleanup;
    }
    if (!store_value(config, row, text, loader->source->checks, &problem)) {
        add_problem(loader, row->name, &problem);
        goto cleanup;
    }
    config->origins[index] = origin;
    if ((row->flags & SETTING_SECRET) && origin != FTS_ORIGIN_DEFAULT) {
        fts_log_add_secret(text);
    }
cleanup:
    bson_free(owned);
}

static bool is_kubernetes_service_variable(const char *name)
{
    /* A Service named "ftsync" makes Kubernetes inject FTSYNC_PORT, FTSYNC_SERVICE_HOST... */
    return strcmp(name, "FTSYNC_PORT") == 0 || strncmp(name, "FTSYNC_PORT_", 12) == 0 ||
           strncmp(name, "FTSYNC_SERVICE_", 15) == 0;
}

static bool is_known_variable(const char *name)
{
    for (size_t i = 0; i < sizeof known_non_settings / sizeof known_non_settings[0]; i++) {
        if (strcmp(name, known_non_settings[i]) == 0) {
            return true;
        }
    }
    if (find_setting(name, NULL) || is_kubernetes_service_variable(name) ||
        strncmp(name, "FTSYNC_TEST_", 12) == 0) {
        return true;
    }
    size_t name_len = strlen(name);
    if (name_len > 5 && strcmp(name + name_len - 5, "_FILE") == 0) {
        char base[128];
        if (name_len - 5 >= sizeof base) {
            return false;
        }
        memcpy(base, name, name_len - 5);
        base[name_len - 5] = '\0';
        return find_setting(base, NULL) != NULL;
    }
    return false;
}

static void warn_about_unknown_variables(const loader_t *loader)
{
    /* Only the real environment can be listed; a test's lookup function cannot. */
    if (!loader->source->getenv_fn) {
        for (char **entry = environ; entry && *entry; entry++) {
            if (strncmp(*entry, "FTSYNC_", 7) != 0) {
                continue;
            }
            char name[128];
            size_t len = strcspn(*entry, "=");
            if (len >= sizeof name) {
                len = sizeof name - 1;
            }
            memcpy(name, *entry, len);
            name[len] = '\0';
            if (!is_known_variable(name)) {
                fts_log(FTS_LOG_WARN, "config",
                        "%s is not a setting ftsync knows and is ignored (a typo?)", name);
            }
        }
    }
    if (loader->dotenv) {
        for (size_t i = 0; i < loader->dotenv->count; i++) {
            const char *name = loader->dotenv->names[i];
            if (!is_known_variable(name)) {
                fts_log(FTS_LOG_WARN, "config",
                        "%s in the .env file is not a setting ftsync knows and is ignored", name);
            }
        }
    }
}

static bool load_dotenv(loader_t *loader, fts_config_t *config, dotenv_t *dotenv)
{
    const char *named = lookup_env(loader, "FTSYNC_ENV_FILE");
    const char *path = named && *named ? named : ".env";
    char *text = NULL;
    fts_error_t problem;
    if ((!named || !*named) && access(path, F_OK) != 0) {
        /* No .env file in the working directory: nothing to read. (Not probed by opening it:
         * a FIFO there would block; read_small_file refuses one at once.) */
        return true;
    }
    if (!read_small_file(path, &text, &problem) || !dotenv_parse(path, text, dotenv, &problem)) {
        add_problem(loader, "FTSYNC_ENV_FILE", &problem);
        bson_free(text);
        return false;
    }
    bson_free(text);
    config->dotenv_path = bson_strdup(path);
    return true;
}

bool fts_config_load(fts_config_t *config, const fts_config_source_t *source,
                     fts_buffer_t *problems, fts_error_t *err)
{
    memset(config, 0, sizeof *config);
    dotenv_t dotenv = {0};
    loader_t loader = {source, NULL, problems, err, 0};
    if (load_dotenv(&loader, config, &dotenv) && dotenv.count) {
        loader.dotenv = &dotenv;
    }

    /* Development mode decides whether placeholders pass, so it is read before the rest. */
    size_t dev_row = 0; /* found below; the table always has FTSYNC_DEV_MODE */
    find_setting("FTSYNC_DEV_MODE", &dev_row);
    load_row(&loader, config, dev_row);
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (i != dev_row) {
            load_row(&loader, config, i);
        }
    }

    /* Checks that involve two rows; each message names the row to change. */
    if (config->retry_base_ms > config->retry_max_ms) {
        fts_error_t problem;
        fts_error_set(&problem, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "%" PRId64 " is above FTSYNC_RETRY_MAX_MS (%" PRId64
                      "); the first backoff cannot exceed the largest",
                      config->retry_base_ms, config->retry_max_ms);
        add_problem(&loader, "FTSYNC_RETRY_BASE_MS", &problem);
    }
    if (config->es_user && !config->es_password) {
        fts_error_t problem;
        fts_error_set(&problem, FTS_ERROR_CONFIG, FTS_ERROR_CODE_MISSING,
                      "FTSYNC_ES_USER is set, so a password is needed too");
        add_problem(&loader, "FTSYNC_ES_PASSWORD", &problem);
    }
    /* What Basic authentication puts on the wire is as secret as the password. */
    fts_log_add_basic_credentials(config->es_user, config->es_password);
    if (config->es_api_key && (config->es_user || config->es_password)) {
        fts_error_t problem;
        fts_error_set(&problem, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID,
                      "set either an API key or a user and password, not both");
        add_problem(&loader, "FTSYNC_ES_API_KEY", &problem);
    }

    warn_about_unknown_variables(&loader);
    dotenv_cleanup(&dotenv);
    if (loader.problem_count > 1) {
        char more[64];
        snprintf(more, sizeof more, " (and %zu more problems)", loader.problem_count - 1);
        size_t len = strlen(err->message);
        snprintf(err->message + len, sizeof err->message - len, "%s", more);
    }
    return loader.problem_count == 0;
}

void fts_config_cleanup(fts_config_t *config)
{
    if (!config) {
        return;
    }
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        void *field = (char *)config + settings[i].offset;
        switch (settings[i].type) {
        case TYPE_LIST:
        case TYPE_FIELD_LIST:
        case TYPE_ES_URL_LIST:
            fts_string_list_cleanup((fts_string_list_t *)field);
            break;
        case TYPE_INT:
        case TYPE_SIZE:
        case TYPE_BOOL:
        case TYPE_LOG_LEVEL:
        case TYPE_LOG_FORMAT:
        case TYPE_CHOICE:
            break;
        default:
            bson_free(*(char **)field);
            *(char **)field = NULL;
        }
    }
    bson_free(config->dotenv_path);
    config->dotenv_path = NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Printing                                                                                 */

static const char *origin_name(fts_origin_t origin)
{
    switch (origin) {
    case FTS_ORIGIN_UNSET:
        return "unset";
    case FTS_ORIGIN_DEFAULT:
        return "default";
    case FTS_ORIGIN_ENVIRONMENT:
        return "environment";
    case FTS_ORIGIN_ENVIRONMENT_FILE:
        return "file named by _FILE";
    case FTS_ORIGIN_DOTENV:
        return ".env file";
    case FTS_ORIGIN_DOTENV_FILE:
        return "file named by _FILE in the .env file";
    }
    return "unknown";
}

static void append_masked_url(fts_buffer_t *out, fts_config_check_fn check, const char *url)
{
    char *masked = NULL;
    fts_error_t ignored;
    if (check && check(url, &masked, &ignored) && masked) {
        fts_buffer_append_str(out, masked);
    } else if (check) {
        fts_buffer_append_str(out, url);
    } else {
        fts_buffer_append_str(out, "(hidden: no URL checker)");
    }
    bson_free(masked);
}

static void append_value(fts_buffer_t *out, const fts_config_t *config, const setting_t *row,
                         const fts_config_checks_t *checks)
{
    const void *field = (const char *)config + row->offset;
    if (row->flags & SETTING_SECRET) {
        fts_buffer_append_str(out, "***");
        return;
    }
    switch (row->type) {
    case TYPE_INT:
    case TYPE_SIZE:
        fts_buffer_appendf(out, "%" PRId64, *(const int64_t *)field);
        break;
    case TYPE_BOOL:
        fts_buffer_append_str(out, *(const bool *)field ? "true" : "false");
        break;
    case TYPE_LOG_LEVEL:
        fts_buffer_append_str(out, fts_log_level_name(*(const fts_log_level_t *)field));
        break;
    case TYPE_LOG_FORMAT:
        fts_buffer_append_str(
            out, *(const fts_log_format_t *)field == FTS_LOG_FORMAT_JSON ? "json" : "logfmt");
        break;
    case TYPE_CHOICE:
        fts_buffer_append_str(out, row->choices[*(const int *)field]);
        break;
    case TYPE_LIST:
    case TYPE_FIELD_LIST:
    case TYPE_ES_URL_LIST: {
        const fts_string_list_t *list = field;
        for (size_t i = 0; i < list->count; i++) {
            if (i) {
                fts_buffer_append_char(out, ',');
            }
            if (row->type == TYPE_ES_URL_LIST) {
                append_masked_url(out, checks ? checks->es_url : NULL, list->items[i]);
            } else {
                fts_buffer_append_str(out, list->items[i]);
            }
        }
        break;
    }
    case TYPE_MONGO_URI:
        append_masked_url(out, checks ? checks->mongo_uri : NULL, *(char *const *)field);
        break;
    case TYPE_REDIS_URL:
        append_masked_url(out, checks ? checks->redis_url : NULL, *(char *const *)field);
        break;
    default:
        fts_buffer_append_str(out, *(char *const *)field);
    }
}

void fts_config_print(const fts_config_t *config, const fts_config_checks_t *checks,
                      fts_buffer_t *out)
{
    if (config->dotenv_path) {
        fts_buffer_appendf(out, "# .env file read: %s\n", config->dotenv_path);
    }
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const setting_t *row = &settings[i];
        size_t line_start = out->len;
        fts_buffer_appendf(out, "%s=", row->name);
        if (row_has_value(config, i)) {
            append_value(out, config, row, checks);
        }
        /* Line the comments up so the column of origins can be scanned by eye. */
        size_t width = out->len - line_start;
        fts_buffer_appendf(out, "%*s # %s\n", width < 56 ? (int)(56 - width) : 0, "",
                           origin_name(config->origins[i]));
    }
}

/* The type as help shows it; a choice row's names are joined into the caller's scratch. */
static const char *type_name(const setting_t *row, char *scratch, size_t size)
{
    switch (row->type) {
    case TYPE_STRING:
        return "text";
    case TYPE_NAME:
        return "name";
    case TYPE_CHOICE:
        join_choices(row->choices, scratch, size);
        return scratch;
    case TYPE_INT:
        return "integer";
    case TYPE_SIZE:
        return "size";
    case TYPE_BOOL:
        return "boolean";
    case TYPE_LOG_LEVEL:
        return "debug|info|warn|error";
    case TYPE_LOG_FORMAT:
        return "logfmt|json";
    case TYPE_FILE:
        return "file path";
    case TYPE_LIST:
        return "list";
    case TYPE_FIELD_PATH:
        return "field path";
    case TYPE_FIELD_LIST:
        return "field list";
    case TYPE_INDEX_NAME:
        return "index name";
    case TYPE_ADDRESS:
        return "host:port|off";
    case TYPE_MONGO_URI:
        return "mongodb URI";
    case TYPE_REDIS_URL:
        return "redis URL";
    case TYPE_ES_URL_LIST:
        return "URL list";
    }
    return "value";
}

void fts_config_print_help(fts_buffer_t *out)
{
    fts_buffer_append_str(
        out, "Settings are read from environment variables, from <NAME>_FILE (a file holding the\n"
             "value, e.g. a mounted Kubernetes secret), and from a .env file (FTSYNC_ENV_FILE, or\n"
             "./.env when present), in that order of precedence.\n\n");
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const setting_t *row = &settings[i];
        char choices[256];
        fts_buffer_appendf(out, "%s (%s", row->name, type_name(row, choices, sizeof choices));
        if (row->type == TYPE_INT || row->type == TYPE_SIZE) {
            fts_buffer_appendf(out, ", %" PRId64 "..%" PRId64, row->min, row->max);
        }
        if (row->flags & SETTING_SECRET) {
            fts_buffer_append_str(out, ", secret");
        }
        fts_buffer_append_str(out, ")\n    ");
        fts_buffer_append_str(out, row->description);
        fts_buffer_append_str(out, "\n    ");
        if (row->default_value) {
            fts_buffer_appendf(out, "default: %s", row->default_value);
        } else if (row->default_from) {
            fts_buffer_appendf(out, "default: the value of %s", row->default_from);
        } else if (row->required_by) {
            fts_buffer_appendf(out, "required by: %s%s%s",
                               (row->required_by & FTS_ROLE_EXTRACT) ? "extract" : "",
                               row->required_by == FTS_ROLE_ALL ? ", " : "",
                               (row->required_by & FTS_ROLE_LOAD) ? "load" : "");
        } else {
            fts_buffer_append_str(out, "default: unset");
        }
        fts_buffer_append_str(out, "\n");
    }
}

uint64_t fts_config_health_stall_ms(const fts_config_t *config)
{
    if (config->health_stall_ms > 0) {
        return (uint64_t)config->health_stall_ms;
    }
    /* A healthy idle stream answers every max-await with a post-batch token: three missed
     * answers plus room for a slow server are a stall. */
    return 3 * (uint64_t)config->mongo_max_await_ms + 10000;
}
