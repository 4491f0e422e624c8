/*
 * load_harness.c - running `ftsync load` in tests, feeding its stream, and checking the index
 * it builds against a model (see load_harness.h).
 *
 * The model is the point of the file: what Elasticsearch with external versions must hold
 * after every written entry was loaded in any order, any number of times (invariant 3), so
 * "the index equals the model" after a drain is invariant 2 seen from the outside: nothing
 * acknowledged was lost.
 */
#include "load_harness.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bson/bson.h>
#include <curl/curl.h>

#include "action.h"
#include "log_tail.h"
#include "sorted_bson.h"
#include "test_cleanup.h"
#include "test_process.h"
#include "testbed.h"

/* Logs and responses are read whole; they stay far below this. */
#define READ_MAX_BYTES (256u * 1024u * 1024u)
/* The namespace written into every entry (ns) unless the test names another; loaders write it
 * into each document's ns field. */
#define ENTRY_NS FTS_TEST_LOAD_NS
/* How often wait_drained asks Redis, and prints progress. */
#define DRAIN_POLL_MS     200
#define DRAIN_PROGRESS_MS 10000

/* ---- HTTP --------------------------------------------------------------------------------- */

/* One handle for the whole run: its connection cache keeps the connection to the node. */
static CURL *http_handle;

static size_t http_collect(char *data, size_t size, size_t count, void *arg)
{
    fts_buffer_append(arg, data, size * count);
    return size * count;
}

bool fts_test_http(const char *method, const char *url, const char *body, size_t body_len,
                   long *status, fts_buffer_t *out, fts_error_t *err)
{
    if (!http_handle) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        http_handle = curl_easy_init();
        if (!http_handle) {
            return fts_error_set(err, FTS_ERROR_SYSTEM, ENOMEM, "curl_easy_init failed");
        }
    }
    fts_buffer_t ignored = {0};
    fts_buffer_t *sink = out ? out : &ignored;
    fts_buffer_clear(sink);
    CURL *curl = http_handle;
    curl_easy_reset(curl);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L); /* no body follows: do not wait for one */
    } else {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode code = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    fts_buffer_append(sink, "", 0);
    if (code != CURLE_OK) {
        fts_buffer_destroy(&ignored);
        return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_CONNECT, "%s %s: %s", method, url,
                             curl_easy_strerror(code));
    }
    long answered = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answered);
    *status = answered;
    fts_buffer_destroy(&ignored);
    return true;
}

/* ---- processes ---------------------------------------------------------------------------- */

struct fts_test_loader {
    pid_t pid;       /* 0 once reaped */
    int wait_status; /* valid once reaped */
    char *log_path;
    char consumer[128];
};

fts_test_loader_t *fts_test_loader_start(const char *binary, const char *const *env,
                                         const char *log_path, fts_error_t *err)
{
    pid_t pid = fts_test_process_start(binary, "load", NULL, env, log_path, err);
    if (pid < 0) {
        return NULL;
    }
    fts_test_loader_t *loader = calloc(1, sizeof *loader);
    loader->pid = pid;
    loader->log_path = strdup(log_path);
    return loader;
}

pid_t fts_test_loader_pid(const fts_test_loader_t *loader)
{
    return loader->pid;
}

const char *fts_test_loader_consumer(const fts_test_loader_t *loader)
{
    return loader->consumer;
}

const char *fts_test_loader_log_path(const fts_test_loader_t *loader)
{
    return loader->log_path;
}

/* Reaps the process if it ended (blocking when block); true when it has been reaped. */
static bool reap(fts_test_loader_t *loader, bool block)
{
    if (loader->pid <= 0) {
        return true;
    }
    int status = 0;
    pid_t done;
    do {
        done = waitpid(loader->pid, &status, block ? 0 : WNOHANG);
    } while (done < 0 && errno == EINTR);
    if (done == 0) {
        return false;
    }
    fts_test_process_forget(loader->pid);
    loader->pid = 0;
    loader->wait_status = done > 0 ? status : 0; /* ECHILD: reaped elsewhere, status unknown */
    return true;
}

bool fts_test_loader_running(fts_test_loader_t *loader)
{
    return !reap(loader, false);
}

bool fts_test_loader_signal(fts_test_loader_t *loader, int sig)
{
    if (!fts_test_loader_running(loader)) {
        return false;
    }
    return kill(loader->pid, sig) == 0;
}

bool fts_test_loader_kill9(fts_test_loader_t *loader)
{
    if (!fts_test_loader_signal(loader, SIGKILL)) {
        return false;
    }
    reap(loader, true);
    return true;
}

static int exit_code(int status)
{
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int fts_test_loader_wait(fts_test_loader_t *loader, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    for (;;) {
        if (reap(loader, false)) {
            return exit_code(loader->wait_status);
        }
        if (fts_test_monotonic_ms() >= deadline) {
            return -1;
        }
        fts_test_sleep_ms(10);
    }
}

char *fts_test_loader_log(const fts_test_loader_t *loader)
{
    fts_buffer_t buf = {0};
    fts_error_t ignored;
    fts_buffer_read_file(&buf, loader->log_path, READ_MAX_BYTES, &ignored);
    fts_buffer_append(&buf, "", 0);
    return fts_buffer_steal(&buf);
}

long fts_test_loader_log_size(const fts_test_loader_t *loader)
{
    struct stat info;
    return stat(loader->log_path, &info) == 0 ? (long)info.st_size : 0;
}

void fts_test_loader_print_log_tail(const fts_test_loader_t *loader, unsigned lines)
{
    char who[192];
    snprintf(who, sizeof who, "ftsync load %s", loader->consumer);
    fts_test_print_log_tail(who, loader->log_path, lines);
}

/* How long a loader still running at the end of a test gets to stop on SIGTERM before it is
 * killed: enough for a clean stop, short for one stuck in a request to a dead server. */
#define LEAK_CHECK_GRACE_MS 3000

/* Ends a loader the test left running with SIGTERM rather than SIGKILL, so that in a sanitizer
 * build LeakSanitizer checks it on its way out (a SIGKILLed process is never checked); a
 * loader that does not stop within LEAK_CHECK_GRACE_MS is killed. A leak report in the
 * loader's log, whoever stopped it, fails the test here: nothing else reads that log when the
 * test passed. */
void fts_test_loader_destroy(fts_test_loader_t *loader)
{
    if (!loader) {
        return;
    }
    if (fts_test_loader_signal(loader, SIGTERM) &&
        fts_test_loader_wait(loader, LEAK_CHECK_GRACE_MS) < 0) {
        fts_test_loader_kill9(loader);
    }
    char *log = fts_test_loader_log(loader);
    bool leaked = strstr(log, "ERROR: LeakSanitizer") != NULL;
    bson_free(log);
    if (leaked) {
        fts_test_loader_print_log_tail(loader, 80);
        fprintf(stderr, "ftsync load %s leaked memory: LeakSanitizer's report is in %s\n",
                loader->consumer, loader->log_path);
        abort();
    }
    free(loader->log_path);
    free(loader);
}

size_t fts_test_count_lines(const char *text, size_t from, size_t to, const char *needle,
                            size_t *matching)
{
    size_t lines = 0;
    size_t found = 0;
    size_t length = strlen(text);
    if (to > length) {
        to = length;
    }
    size_t start = from;
    while (start < to) {
        const char *newline = memchr(text + start, '\n', to - start);
        size_t end = newline ? (size_t)(newline - text) : to;
        lines++;
        if (needle) {
            size_t needle_len = strlen(needle);
            for (size_t i = start; i + needle_len <= end; i++) {
                if (memcmp(text + i, needle, needle_len) == 0) {
                    found++;
                    break;
                }
            }
        }
        start = end + 1;
    }
    if (matching) {
        *matching = found;
    }
    return lines;
}

/* ---- the model ---------------------------------------------------------------------------- */

typedef struct {
    char *id; /* NULL: empty slot */
    uint64_t version;
    bool present;
    char *body; /* present documents only */
    char *ns;   /* present documents only: the ns of the action that wrote it */
} model_doc_t;

struct fts_test_load_model {
    model_doc_t *slots;
    size_t cap; /* a power of two */
    size_t used;
};

static uint64_t hash_text(const char *text)
{
    uint64_t hash = UINT64_C(1469598103934665603);
    for (; *text; text++) {
        hash = (hash ^ (unsigned char)*text) * UINT64_C(1099511628211);
    }
    return hash;
}

static fts_test_load_model_t *model_new(void)
{
    fts_test_load_model_t *model = calloc(1, sizeof *model);
    model->cap = 1024;
    model->slots = calloc(model->cap, sizeof *model->slots);
    return model;
}

static void model_destroy(fts_test_load_model_t *model)
{
    if (!model) {
        return;
    }
    for (size_t i = 0; i < model->cap; i++) {
        free(model->slots[i].id);
        free(model->slots[i].body);
        free(model->slots[i].ns);
    }
    free(model->slots);
    free(model);
}

static model_doc_t *model_find(const fts_test_load_model_t *model, const char *id)
{
    size_t mask = model->cap - 1;
    for (size_t i = hash_text(id) & mask;; i = (i + 1) & mask) {
        model_doc_t *slot = &model->slots[i];
        if (!slot->id || strcmp(slot->id, id) == 0) {
            return slot;
        }
    }
}

static model_doc_t *model_get(fts_test_load_model_t *model, const char *id)
{
    if ((model->used + 1) * 2 > model->cap) {
        model_doc_t *old = model->slots;
        size_t old_cap = model->cap;
        model->cap *= 2;
        model->slots = calloc(model->cap, sizeof *model->slots);
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i].id) {
                *model_find(model, old[i].id) = old[i];
            }
        }
        free(old);
    }
    model_doc_t *slot = model_find(model, id);
    if (!slot->id) {
        slot->id = strdup(id);
        model->used++;
    }
    return slot;
}

/* ---- written entries ---------------------------------------------------------------------- */

typedef struct {
    char *id; /* NULL on drop and sweep */
    char *ns;
    char *body; /* index only; freed once sent */
    uint64_t version;
    fts_action_op_t op;
    bool rejected;
    char stream_id[48];
} written_entry_t;

struct fts_test_load_written {
    written_entry_t *items;
    size_t count;
    size_t cap;
};

static size_t queue_entry(fts_test_load_t *t, fts_action_op_t op, const char *ns, const char *id,
                          uint64_t version, const char *body, bool rejected)
{
    fts_test_load_written_t *w = t->written;
    if (w->count == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 4096;
        w->items = realloc(w->items, w->cap * sizeof *w->items);
    }
    written_entry_t *entry = &w->items[w->count];
    memset(entry, 0, sizeof *entry);
    entry->id = id ? strdup(id) : NULL;
    entry->ns = strdup(ns);
    entry->body = body ? strdup(body) : NULL;
    entry->version = version;
    entry->op = op;
    entry->rejected = rejected;
    t->queued++;
    return w->count++;
}

size_t fts_test_load_index(fts_test_load_t *t, const char *id, uint64_t version, const char *body)
{
    return queue_entry(t, FTS_ACTION_INDEX, ENTRY_NS, id, version, body, false);
}

size_t fts_test_load_index_ns(fts_test_load_t *t, const char *ns, const char *id, uint64_t version,
                              const char *body)
{
    return queue_entry(t, FTS_ACTION_INDEX, ns, id, version, body, false);
}

size_t fts_test_load_delete(fts_test_load_t *t, const char *id, uint64_t version)
{
    return queue_entry(t, FTS_ACTION_DELETE, ENTRY_NS, id, version, NULL, false);
}

size_t fts_test_load_index_rejected(fts_test_load_t *t, const char *id, uint64_t version,
                                    const char *body)
{
    return queue_entry(t, FTS_ACTION_INDEX, ENTRY_NS, id, version, body, true);
}

size_t fts_test_load_drop(fts_test_load_t *t, const char *ns, uint64_t version)
{
    return queue_entry(t, FTS_ACTION_DROP, ns, NULL, version, NULL, false);
}

size_t fts_test_load_sweep(fts_test_load_t *t, const char *ns, uint64_t version)
{
    return queue_entry(t, FTS_ACTION_SWEEP, ns, NULL, version, NULL, false);
}

/* A drop or sweep: every present document of ns below version is deleted at that version
 * (what the loader's versioned deletes leave: a tombstone at the entry's version). Entries
 * after it in the stream are applied after it here; in Elasticsearch they may land before
 * its deletes, which then lose with a 409 against their higher versions: the same end. */
static void model_sweep(fts_test_load_model_t *model, const written_entry_t *entry)
{
    for (size_t i = 0; i < model->cap; i++) {
        model_doc_t *doc = &model->slots[i];
        if (doc->id && doc->present && doc->version < entry->version && doc->ns &&
            strcmp(doc->ns, entry->ns) == 0) {
            doc->present = false;
            doc->version = entry->version;
            free(doc->body);
            doc->body = NULL;
            free(doc->ns);
            doc->ns = NULL;
        }
    }
}

static void model_apply(fts_test_load_model_t *model, written_entry_t *entry)
{
    if (entry->op == FTS_ACTION_DROP || entry->op == FTS_ACTION_SWEEP) {
        model_sweep(model, entry);
        return;
    }
    model_doc_t *doc = model_get(model, entry->id);
    if (entry->rejected || entry->version <= doc->version) {
        return; /* refused by the mapping; or external versioning: older or equal is a no-op */
    }
    doc->version = entry->version;
    free(doc->body);
    doc->body = NULL;
    free(doc->ns);
    doc->ns = NULL;
    doc->present = entry->op == FTS_ACTION_INDEX;
    if (doc->present) {
        doc->body = entry->body;
        entry->body = NULL;
        doc->ns = strdup(entry->ns);
    }
}

bool fts_test_load_flush(fts_test_load_t *t, fts_error_t *err)
{
    fts_test_load_written_t *w = t->written;
    while (t->queued > 0) {
        size_t first = w->count - t->queued;
        size_t batch = t->queued < FTS_TEST_LOAD_PIPELINE ? t->queued : FTS_TEST_LOAD_PIPELINE;
        for (size_t i = first; i < first + batch; i++) {
            written_entry_t *entry = &w->items[i];
            fts_action_t action;
            fts_action_init(&action);
            action.op = entry->op;
            action.origin = FTS_ACTION_FROM_CHANGE;
            action.version = entry->version;
            action.ts_seconds = (uint32_t)(entry->version >> 32);
            action.ts_increment = (uint32_t)(entry->version & UINT32_MAX);
            /* Borrowed, never freed through the action (no fts_action_cleanup). */
            action.ns = entry->ns;
            action.id = entry->id;
            action.id_len = entry->id ? strlen(entry->id) : 0;
            action.body = entry->body;
            action.body_len = entry->body ? strlen(entry->body) : 0;
            fts_action_argv_t argv;
            if (!fts_action_encode(&action, t->stream_key, &argv, err)) {
                return fts_error_prefix(err, "entry %zu (id %s)", i,
                                        entry->id ? entry->id : "none");
            }
            if (redisAppendCommandArgv(t->redis, argv.argc, argv.argv, argv.argvlen) != REDIS_OK) {
                return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "XADD: %s",
                                     t->redis->errstr);
            }
        }
        for (size_t i = first; i < first + batch; i++) {
            redisReply *reply = NULL;
            if (redisGetReply(t->redis, (void **)&reply) != REDIS_OK || !reply) {
                return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO,
                                     "XADD %s: no reply: %s", t->stream_key, t->redis->errstr);
            }
            if (reply->type != REDIS_REPLY_STRING) {
                fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_SERVER, "XADD %s: %s",
                              t->stream_key,
                              reply->type == REDIS_REPLY_ERROR ? reply->str : "not an id");
                freeReplyObject(reply);
                return false;
            }
            written_entry_t *entry = &w->items[i];
            snprintf(entry->stream_id, sizeof entry->stream_id, "%s", reply->str);
            freeReplyObject(reply);
            model_apply(t->model, entry);
            free(entry->body);
            entry->body = NULL;
            t->queued--;
        }
    }
    return true;
}

const char *fts_test_load_stream_id(const fts_test_load_t *t, size_t seq)
{
    return seq < t->written->count ? t->written->items[seq].stream_id : "";
}

size_t fts_test_load_written_count(const fts_test_load_t *t)
{
    return t->written->count - t->queued;
}

size_t fts_test_load_model_ids(const fts_test_load_t *t)
{
    return t->model->used;
}

size_t fts_test_load_model_present(const fts_test_load_t *t)
{
    size_t present = 0;
    for (size_t i = 0; i < t->model->cap; i++) {
        present += t->model->slots[i].id && t->model->slots[i].present;
    }
    return present;
}

/* ---- the bed ------------------------------------------------------------------------------ */

static redisContext *redis_connect(const char *url, fts_error_t *err)
{
    char host[256] = "";
    int port = 0;
    int db = 0;
    if (sscanf(url, "redis://%255[^:/]:%d/%d", host, &port, &db) < 2) {
        fts_error_set(err, FTS_ERROR_CONFIG, FTS_ERROR_CODE_INVALID, "cannot parse %s", url);
        return NULL;
    }
    struct timeval timeout = {.tv_sec = 10, .tv_usec = 0};
    redisContext *redis = redisConnectWithTimeout(host, port, timeout);
    if (!redis) {
        fts_fatal_oom("a connection to Redis"); /* hiredis returns NULL only then */
    }
    if (redis->err) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT, "cannot connect to %s: %s", url,
                      redis->errstr);
        redisFree(redis);
        return NULL;
    }
    redisSetTimeout(redis, timeout);
    if (db != 0) {
        redisReply *reply = redisCommand(redis, "SELECT %d", db);
        bool selected = reply && reply->type == REDIS_REPLY_STATUS;
        freeReplyObject(reply);
        if (!selected) {
            redisFree(redis);
            fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_SERVER, "SELECT %d on %s failed", db,
                          url);
            return NULL;
        }
    }
    return redis;
}

void fts_test_load_set(fts_test_load_t *t, const char *setting, const char *value)
{
    size_t name_len = strlen(setting);
    size_t slot = t->env_count;
    for (size_t i = 0; i < t->env_count; i++) {
        if (strncmp(t->env[i], setting, name_len) == 0 && t->env[i][name_len] == '=') {
            slot = i;
            break;
        }
    }
    if (slot == FTS_TEST_LOAD_ENV_MAX) {
        fprintf(stderr, "load_harness: more than %d settings; %s dropped\n", FTS_TEST_LOAD_ENV_MAX,
                setting);
        return;
    }
    snprintf(t->env[slot], sizeof t->env[slot], "%s=%s", setting, value);
    if (slot == t->env_count) {
        t->env_count++;
    }
}

bool fts_test_load_init(fts_test_load_t *t, const char *binary, const char *definition_path,
                        const char *redis_url, const char *es_url, const char *name,
                        fts_error_t *err)
{
    memset(t, 0, sizeof *t);
    t->binary = binary;
    t->doc_type = fts_testbed_doc_type(); /* "doc" on Elasticsearch 1.5, NULL on OpenSearch */
    snprintf(t->ns_field, sizeof t->ns_field, "%s", FTS_TEST_LOAD_NS_FIELD);
    snprintf(t->redis_url, sizeof t->redis_url, "%s", redis_url);
    snprintf(t->es_url, sizeof t->es_url, "%s", es_url);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->pipeline, sizeof t->pipeline, "test-%s-%d", name, (int)getpid());
    /* Index names are lower case. */
    snprintf(t->index, sizeof t->index, "ftsync-test-%s-%d", name, (int)getpid());
    for (char *c = t->index; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c = (char)(*c - 'A' + 'a');
        }
    }
    snprintf(t->stream_key, sizeof t->stream_key, "ftsync:{%s}:stream", t->pipeline);
    snprintf(t->dead_key, sizeof t->dead_key, "ftsync:{%s}:dead", t->pipeline);
    snprintf(t->dir, sizeof t->dir, "%s/load-%s-%d-XXXXXX", fts_testbed_dir(), name, (int)getpid());
    if (!mkdtemp(t->dir)) {
        fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create a directory like %s: %s", t->dir,
                      strerror(errno));
        t->dir[0] = '\0';
        return false;
    }
    t->model = model_new();
    t->written = calloc(1, sizeof *t->written);
    t->redis = redis_connect(redis_url, err);
    if (!t->redis) {
        return false;
    }
    /* Settings are checked against the configuration table by the loader itself, so a typo
     * here would show as a warning in its log. */
    fts_test_load_set(t, "FTSYNC_ENV_FILE", "/dev/null");
    fts_test_load_set(t, "FTSYNC_QUEUE_REDIS_URL", redis_url);
    fts_test_load_set(t, "FTSYNC_STATE_REDIS_URL", redis_url);
    fts_test_load_set(t, "FTSYNC_ES_URL", es_url);
    fts_test_load_set(t, "FTSYNC_ES_INDEX", t->index);
    if (t->doc_type) {
        fts_test_load_set(t, "FTSYNC_ES_DOC_TYPE", t->doc_type);
    }
    fts_test_load_set(t, "FTSYNC_ES_INDEX_DEFINITION", definition_path);
    fts_test_load_set(t, "FTSYNC_PIPELINE", t->pipeline);
    fts_test_load_set(t, "FTSYNC_READ_BLOCK_MS", "500");
    fts_test_load_set(t, "FTSYNC_CLAIM_IDLE_MS", "5000");
    fts_test_load_set(t, "FTSYNC_CLAIM_INTERVAL_MS", "1000");
    fts_test_load_set(t, "FTSYNC_MAX_DELIVERIES", "10");
    fts_test_load_set(t, "FTSYNC_RETRY_BASE_MS", "100");
    fts_test_load_set(t, "FTSYNC_RETRY_MAX_MS", "2000");
    fts_test_load_set(t, "FTSYNC_STOP_TIMEOUT_MS", "5000");
    fts_test_load_set(t, "FTSYNC_BULK_MAX_ACTIONS", "500");
    fts_test_load_set(t, "FTSYNC_BULK_MAX_BYTES", "5m");
    fts_test_load_set(t, "FTSYNC_BULK_MAX_WAIT_MS", "50");
    fts_test_load_set(t, "FTSYNC_BULK_MAX_IN_FLIGHT", "2");
    fts_test_load_set(t, "FTSYNC_LOG_LEVEL", "info");
    fts_test_load_set(t, "FTSYNC_LOG_FORMAT", "logfmt");
    fts_test_load_set(t, "FTSYNC_ADMIN_ADDR", "off");
    return true;
}

fts_test_loader_t *fts_test_load_start_loader(fts_test_load_t *t, const char *consumer,
                                              fts_error_t *err)
{
    if (t->loader_count == FTS_TEST_LOAD_LOADERS_MAX) {
        fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_INVALID,
                      "more than %d loaders in one test", FTS_TEST_LOAD_LOADERS_MAX);
        return NULL;
    }
    size_t n = t->loader_count + 1;
    char name[128];
    if (consumer) {
        snprintf(name, sizeof name, "%s", consumer);
    } else {
        snprintf(name, sizeof name, "%s-c%zu", t->name, n);
    }
    char consumer_setting[200];
    snprintf(consumer_setting, sizeof consumer_setting, "FTSYNC_CONSUMER_NAME=%s", name);
    const char *envp[FTS_TEST_LOAD_ENV_MAX + 2];
    size_t count = 0;
    for (size_t i = 0; i < t->env_count; i++) {
        if (strncmp(t->env[i], "FTSYNC_CONSUMER_NAME=", 21) != 0) {
            envp[count++] = t->env[i];
        }
    }
    envp[count++] = consumer_setting;
    envp[count] = NULL;
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/loader-%zu.log", t->dir, n);
    fts_test_loader_t *loader = fts_test_loader_start(t->binary, envp, log_path, err);
    if (!loader) {
        return NULL;
    }
    snprintf(loader->consumer, sizeof loader->consumer, "%s", name);
    t->loaders[t->loader_count] = loader;
    t->expected_end[t->loader_count] = false;
    t->loader_count++;
    return loader;
}

static size_t loader_slot(const fts_test_load_t *t, const fts_test_loader_t *loader)
{
    for (size_t i = 0; i < t->loader_count; i++) {
        if (t->loaders[i] == loader) {
            return i;
        }
    }
    return (size_t)-1;
}

size_t fts_test_load_running(fts_test_load_t *t)
{
    size_t running = 0;
    for (size_t i = 0; i < t->loader_count; i++) {
        running += fts_test_loader_running(t->loaders[i]);
    }
    return running;
}

bool fts_test_load_kill9(fts_test_load_t *t, fts_test_loader_t *loader)
{
    size_t slot = loader_slot(t, loader);
    if (slot != (size_t)-1) {
        t->expected_end[slot] = true;
    }
    return fts_test_loader_kill9(loader);
}

int fts_test_load_stop(fts_test_load_t *t, fts_test_loader_t *loader, unsigned timeout_ms,
                       uint64_t *elapsed_ms)
{
    size_t slot = loader_slot(t, loader);
    if (slot != (size_t)-1) {
        t->expected_end[slot] = true;
    }
    uint64_t started = fts_test_monotonic_ms();
    if (!fts_test_loader_signal(loader, SIGTERM)) {
        *elapsed_ms = 0;
        return exit_code(loader->wait_status);
    }
    int code = fts_test_loader_wait(loader, timeout_ms);
    *elapsed_ms = fts_test_monotonic_ms() - started;
    if (code < 0) {
        fts_test_loader_kill9(loader);
    }
    return code;
}

bool fts_test_load_check_loaders(fts_test_load_t *t, fts_error_t *err)
{
    for (size_t i = 0; i < t->loader_count; i++) {
        fts_test_loader_t *loader = t->loaders[i];
        if (t->expected_end[i] || fts_test_loader_running(loader)) {
            continue;
        }
        fts_test_loader_print_log_tail(loader, 40);
        t->expected_end[i] = true; /* reported once */
        return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_SERVER,
                             "loader %s ended on its own with status %d (log tail above, %s)",
                             loader->consumer, exit_code(loader->wait_status), loader->log_path);
    }
    return true;
}

bool fts_test_load_reconnect(fts_test_load_t *t, fts_error_t *err)
{
    redisFree(t->redis);
    t->redis = redis_connect(t->redis_url, err);
    return t->redis != NULL;
}

/* ---- the group ---------------------------------------------------------------------------- */

/* The value of field in a flat [field, value, ...] reply, or NULL. */
static const redisReply *flat_field(const redisReply *list, const char *field)
{
    if (!list || list->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }
    for (size_t i = 0; i + 1 < list->elements; i += 2) {
        const redisReply *key = list->element[i];
        if ((key->type == REDIS_REPLY_STRING || key->type == REDIS_REPLY_STATUS) &&
            strcmp(key->str, field) == 0) {
            return list->element[i + 1];
        }
    }
    return NULL;
}

static long long flat_integer(const redisReply *list, const char *field, long long absent)
{
    const redisReply *value = flat_field(list, field);
    return value && value->type == REDIS_REPLY_INTEGER ? value->integer : absent;
}

static void flat_string(const redisReply *list, const char *field, char *out, size_t size)
{
    const redisReply *value = flat_field(list, field);
    snprintf(out, size, "%s",
             value && (value->type == REDIS_REPLY_STRING || value->type == REDIS_REPLY_STATUS)
                 ? value->str
                 : "");
}

bool fts_test_load_group_state(fts_test_load_t *t, fts_test_group_state_t *state, fts_error_t *err)
{
    memset(state, 0, sizeof *state);
    state->lag = -1;
    redisReply *stream = redisCommand(t->redis, "XINFO STREAM %s", t->stream_key);
    if (!stream) {
        return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_IO, "XINFO STREAM %s: %s",
                             t->stream_key, t->redis->errstr);
    }
    if (stream->type == REDIS_REPLY_ERROR) {
        /* No stream yet: nothing written, no group. */
        freeReplyObject(stream);
        return true;
    }
    state->length = flat_integer(stream, "length", 0);
    flat_string(stream, "last-generated-id", state->last_generated, sizeof state->last_generated);
    freeReplyObject(stream);

    redisReply *groups = redisCommand(t->redis, "XINFO GROUPS %s", t->stream_key);
    if (!groups || groups->type != REDIS_REPLY_ARRAY) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_SERVER, "XINFO GROUPS %s: %s",
                      t->stream_key,
                      groups && groups->type == REDIS_REPLY_ERROR ? groups->str : t->redis->errstr);
        freeReplyObject(groups);
        return false;
    }
    for (size_t i = 0; i < groups->elements; i++) {
        const redisReply *group = groups->element[i];
        const redisReply *name = flat_field(group, "name");
        if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, FTS_TEST_LOAD_GROUP)) {
            continue;
        }
        state->exists = true;
        state->consumers = flat_integer(group, "consumers", 0);
        state->pending = flat_integer(group, "pending", 0);
        state->lag = flat_integer(group, "lag", -1);
        flat_string(group, "last-delivered-id", state->last_delivered,
                    sizeof state->last_delivered);
    }
    freeReplyObject(groups);
    return true;
}

long long fts_test_load_consumer_pending(fts_test_load_t *t, const char *consumer)
{
    redisReply *reply =
        redisCommand(t->redis, "XINFO CONSUMERS %s %s", t->stream_key, FTS_TEST_LOAD_GROUP);
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(reply);
        return -1;
    }
    long long pending = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *name = flat_field(reply->element[i], "name");
        if (name && name->type == REDIS_REPLY_STRING && strcmp(name->str, consumer) == 0) {
            pending = flat_integer(reply->element[i], "pending", 0);
        }
    }
    freeReplyObject(reply);
    return pending;
}

static bool drained(const fts_test_group_state_t *state)
{
    return state->exists && state->pending == 0 &&
           (state->lag == 0 || strcmp(state->last_delivered, state->last_generated) == 0);
}

bool fts_test_load_wait_drained(fts_test_load_t *t, unsigned timeout_ms, fts_error_t *err)
{
    uint64_t started = fts_test_monotonic_ms();
    uint64_t deadline = started + timeout_ms;
    uint64_t next_progress = started + DRAIN_PROGRESS_MS;
    fts_test_group_state_t state;
    for (;;) {
        if (!fts_test_load_group_state(t, &state, err)) {
            return false;
        }
        if (drained(&state)) {
            fprintf(stderr, "[%s] drained in %.1f s: %lld entries, group last-delivered-id %s\n",
                    t->name, (double)(fts_test_monotonic_ms() - started) / 1000.0, state.length,
                    state.last_delivered);
            return true;
        }
        if (!fts_test_load_check_loaders(t, err)) {
            return false;
        }
        uint64_t now = fts_test_monotonic_ms();
        if (now >= deadline) {
            return fts_error_set(err, FTS_ERROR_INTERNAL, FTS_ERROR_CODE_TIMEOUT,
                                 "not drained after %u ms: group %s, pending %lld, lag %lld, "
                                 "last-delivered-id %s, stream last id %s, %zu loaders running",
                                 timeout_ms, state.exists ? "exists" : "missing", state.pending,
                                 state.lag, state.last_delivered, state.last_generated,
                                 fts_test_load_running(t));
        }
        if (now >= next_progress) {
            fprintf(stderr,
                    "[%s] draining: pending %lld, lag %lld, last-delivered-id %s of %s (%zu "
                    "loaders running)\n",
                    t->name, state.pending, state.lag, state.last_delivered, state.last_generated,
                    fts_test_load_running(t));
            next_progress = now + DRAIN_PROGRESS_MS;
        }
        fts_test_sleep_ms(DRAIN_POLL_MS);
    }
}

long long fts_test_load_dead_count(fts_test_load_t *t)
{
    redisReply *reply = redisCommand(t->redis, "XLEN %s", t->dead_key);
    long long len = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    freeReplyObject(reply);
    return len;
}

/* ---- the index against the model ---------------------------------------------------------- */

typedef struct {
    const char *label;
    size_t differences;
} compare_t;

static void difference(compare_t *c, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void difference(compare_t *c, const char *format, ...)
{
    if (c->differences++ < FTS_TEST_LOAD_PRINT_MAX) {
        va_list args;
        va_start(args, format);
        fprintf(stderr, "[%s] ", c->label);
        vfprintf(stderr, format, args);
        fputc('\n', stderr);
        va_end(args);
    }
}

/* An int32 or int64 number, or -1. */
static int64_t iter_integer(const bson_iter_t *iter)
{
    if (BSON_ITER_HOLDS_INT32(iter)) {
        return bson_iter_int32(iter);
    }
    if (BSON_ITER_HOLDS_INT64(iter)) {
        return bson_iter_int64(iter);
    }
    return -1;
}

static bool parse_json(const fts_buffer_t *body, bson_t *out, fts_error_t *err)
{
    bson_error_t error;
    if (!body->data || !bson_init_from_json(out, body->data, (ssize_t)body->len, &error)) {
        return fts_error_set(err, FTS_ERROR_ES, FTS_ERROR_CODE_PROTOCOL, "not JSON (%s): %.300s",
                             body->data ? error.message : "empty", body->data ? body->data : "");
    }
    return true;
}

/* Checks one element of an _mget reply's docs against the model. */
static void compare_doc(const fts_test_load_t *t, const bson_t *got, compare_t *c)
{
    bson_iter_t iter;
    const char *id = NULL;
    bool found = false;
    int64_t version = -1;
    const uint8_t *source_data = NULL;
    uint32_t source_len = 0;
    const char *error = NULL;
    if (bson_iter_init(&iter, got)) {
        while (bson_iter_next(&iter)) {
            const char *key = bson_iter_key(&iter);
            if (strcmp(key, "_id") == 0 && BSON_ITER_HOLDS_UTF8(&iter)) {
                id = bson_iter_utf8(&iter, NULL);
            } else if (strcmp(key, "found") == 0 && BSON_ITER_HOLDS_BOOL(&iter)) {
                found = bson_iter_bool(&iter);
            } else if (strcmp(key, "_version") == 0) {
                version = iter_integer(&iter);
            } else if (strcmp(key, "_source") == 0 && BSON_ITER_HOLDS_DOCUMENT(&iter)) {
                bson_iter_document(&iter, &source_len, &source_data);
            } else if (strcmp(key, "error") == 0 && BSON_ITER_HOLDS_UTF8(&iter)) {
                error = bson_iter_utf8(&iter, NULL);
            }
        }
    }
    if (!id) {
        difference(c, "an _mget item without _id");
        return;
    }
    const model_doc_t *want = model_find(t->model, id);
    if (!want->id) {
        difference(c, "id %s: returned by _mget but never written", id);
        return;
    }
    if (error) {
        difference(c, "id %s: _mget error %s", id, error);
        return;
    }
    if (!want->present) {
        if (found) {
            difference(
                c, "id %s: present (version %" PRId64 ") but expected absent (%s %" PRIu64 ")", id,
                version, want->version ? "deleted at version" : "rejected, version", want->version);
        }
        return;
    }
    if (!found) {
        difference(c, "id %s: absent but expected present at version %" PRIu64 " with %s", id,
                   want->version, want->body);
        return;
    }
    if (version != (int64_t)want->version) {
        difference(c, "id %s: _version %" PRId64 ", expected %" PRIu64, id, version, want->version);
    }
    bson_t expected;
    bson_error_t parse_error;
    if (!bson_init_from_json(&expected, want->body, -1, &parse_error)) {
        difference(c, "id %s: the model's body is not JSON: %s", id, parse_error.message);
        return;
    }
    if (t->ns_field[0]) {
        /* the loader writes the ns of the action into every document */
        BSON_APPEND_UTF8(&expected, t->ns_field, want->ns ? want->ns : "");
    }
    bson_t actual;
    char *actual_json = NULL;
    if (source_data && bson_init_static(&actual, source_data, source_len)) {
        actual_json = fts_test_bson_sorted_json(&actual);
    }
    char *expected_json = fts_test_bson_sorted_json(&expected);
    if (!actual_json || strcmp(actual_json, expected_json) != 0) {
        difference(c, "id %s: _source %s, expected %s", id, actual_json ? actual_json : "(none)",
                   expected_json);
    }
    bson_free(actual_json);
    bson_free(expected_json);
    bson_destroy(&expected);
}

/* One _mget of the ids in body ({"ids":[...]}), every returned doc compared. */
static bool mget_compare(const fts_test_load_t *t, const fts_buffer_t *request, size_t asked,
                         compare_t *c)
{
    char url[768];
    snprintf(url, sizeof url, "%s/%s/%s%s_mget", t->es_url, t->index,
             t->doc_type ? t->doc_type : "", t->doc_type ? "/" : "");
    fts_buffer_t response = {0};
    long status = 0;
    fts_error_t err;
    bool ok = false;
    bson_t reply;
    bool parsed = false;
    if (!fts_test_http("POST", url, request->data, request->len, &status, &response, &err)) {
        fprintf(stderr, "[%s] %s\n", c->label, err.message);
        goto cleanup;
    }
    if (status != 200) {
        fprintf(stderr, "[%s] POST %s: HTTP %ld %.500s\n", c->label, url, status, response.data);
        goto cleanup;
    }
    if (!parse_json(&response, &reply, &err)) {
        fprintf(stderr, "[%s] POST %s: %s\n", c->label, url, err.message);
        goto cleanup;
    }
    parsed = true;
    bson_iter_t iter;
    bson_iter_t docs;
    if (!bson_iter_init_find(&iter, &reply, "docs") || !BSON_ITER_HOLDS_ARRAY(&iter) ||
        !bson_iter_recurse(&iter, &docs)) {
        fprintf(stderr, "[%s] POST %s: no docs array in %.300s\n", c->label, url, response.data);
        goto cleanup;
    }
    size_t returned = 0;
    while (bson_iter_next(&docs)) {
        const uint8_t *data;
        uint32_t len;
        bson_t doc;
        if (!BSON_ITER_HOLDS_DOCUMENT(&docs)) {
            continue;
        }
        bson_iter_document(&docs, &len, &data);
        if (bson_init_static(&doc, data, len)) {
            compare_doc(t, &doc, c);
            returned++;
        }
    }
    if (returned != asked) {
        difference(c, "_mget of %zu ids returned %zu docs", asked, returned);
    }
    ok = true;

cleanup:
    if (parsed) {
        bson_destroy(&reply);
    }
    fts_buffer_destroy(&response);
    return ok;
}

size_t fts_test_load_check_index(fts_test_load_t *t, const char *label)
{
    compare_t c = {.label = label, .differences = 0};
    fts_buffer_t response = {0};
    fts_buffer_t request = {0};
    fts_error_t err;
    long status = 0;
    size_t result = (size_t)-1;
    char url[768];

    snprintf(url, sizeof url, "%s/%s/_refresh", t->es_url, t->index);
    if (!fts_test_http("POST", url, "", 0, &status, &response, &err) || status != 200) {
        fprintf(stderr, "[%s] refresh: %s HTTP %ld %.300s\n", label, status ? "" : err.message,
                status, response.data ? response.data : "");
        goto cleanup;
    }

    size_t asked = 0;
    size_t checked = 0;
    for (size_t i = 0; i <= t->model->cap; i++) {
        const model_doc_t *doc = i < t->model->cap ? &t->model->slots[i] : NULL;
        if (doc && doc->id) {
            fts_buffer_append_str(&request, asked ? ",\"" : "{\"ids\":[\"");
            fts_buffer_append_json_escaped(&request, doc->id, strlen(doc->id));
            fts_buffer_append_char(&request, '"');
            asked++;
        }
        if (asked == FTS_TEST_LOAD_MGET_CHUNK || (!doc && asked > 0)) {
            fts_buffer_append_str(&request, "]}");
            if (!mget_compare(t, &request, asked, &c)) {
                goto cleanup;
            }
            checked += asked;
            asked = 0;
            fts_buffer_clear(&request);
        }
    }

    snprintf(url, sizeof url, "%s/%s/_count", t->es_url, t->index);
    bson_t count_reply;
    if (!fts_test_http("GET", url, NULL, 0, &status, &response, &err) || status != 200 ||
        !parse_json(&response, &count_reply, &err)) {
        fprintf(stderr, "[%s] GET %s: HTTP %ld %.300s\n", label, url, status,
                response.data ? response.data : "");
        goto cleanup;
    }
    bson_iter_t iter;
    int64_t count = bson_iter_init_find(&iter, &count_reply, "count") ? iter_integer(&iter) : -1;
    bson_destroy(&count_reply);
    size_t present = fts_test_load_model_present(t);
    if (count != (int64_t)present) {
        difference(&c, "_count is %" PRId64 ", the model has %zu present documents", count,
                   present);
    }
    fprintf(stderr, "[%s] index %s: %zu ids checked, %zu present, %zu differences\n", label,
            t->index, checked, present, c.differences);
    result = c.differences;

cleanup:
    fts_buffer_destroy(&response);
    fts_buffer_destroy(&request);
    return result;
}

/* ---- clean-up ----------------------------------------------------------------------------- */

void fts_test_load_print_logs(fts_test_load_t *t, unsigned lines)
{
    for (size_t i = 0; i < t->loader_count; i++) {
        fts_test_loader_print_log_tail(t->loaders[i], lines);
    }
}

void fts_test_load_cleanup(fts_test_load_t *t)
{
    for (size_t i = 0; i < t->loader_count; i++) {
        fts_test_loader_destroy(t->loaders[i]);
        t->loaders[i] = NULL;
    }
    t->loader_count = 0;
    if (t->index[0]) {
        char url[768];
        snprintf(url, sizeof url, "%s/%s", t->es_url, t->index);
        long status = 0;
        fts_error_t ignored;
        fts_test_http("DELETE", url, NULL, 0, &status, NULL, &ignored);
    }
    if (t->redis) {
        redisReply *reply = redisCommand(t->redis, "DEL %s %s", t->stream_key, t->dead_key);
        freeReplyObject(reply);
        redisFree(t->redis);
        t->redis = NULL;
    }
    if (t->written) {
        for (size_t i = 0; i < t->written->count; i++) {
            free(t->written->items[i].id);
            free(t->written->items[i].ns);
            free(t->written->items[i].body);
        }
        free(t->written->items);
        free(t->written);
        t->written = NULL;
    }
    model_destroy(t->model);
    t->model = NULL;
    const char *keep = getenv("FTSYNC_TEST_KEEP_LOGS");
    if (t->dir[0] && !(keep && *keep)) {
        fts_test_remove_tree(t->dir);
    } else if (t->dir[0]) {
        fprintf(stderr, "[%s] logs kept in %s\n", t->name, t->dir);
    }
    t->dir[0] = '\0';
}
