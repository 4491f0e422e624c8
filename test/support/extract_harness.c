/*
 * extract_harness.c - running `ftsync extract` in tests, reading its stream, replaying it and
 * comparing the result with the collection (see extract_harness.h).
 *
 * The replay model is the point of the file: it is what Elasticsearch with external versions
 * would end up holding after loading the stream in order, so "replay equals the collection"
 * is invariant 3 seen from the outside.
 */
#include "extract_harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buffer.h"
#include "config.h"
#include "log_tail.h"
#include "mongo_double.h"
#include "projection.h"
#include "test_cleanup.h"
#include "test_process.h"
#include "testbed.h"

struct fts_test_extract {
    pid_t pid;
    pid_t last_worker; /* the worker seen last, killed with the parent if still there */
    char *log_path;
};

/* ---- processes ---------------------------------------------------------------------------- */

fts_test_extract_t *fts_test_extract_start(const char *binary, const char *const *env,
                                           const char *log_path, fts_error_t *err)
{
    static const char *const defaults[] = {"FTSYNC_ADMIN_ADDR=off", "FTSYNC_ENV_FILE=/dev/null",
                                           "FTSYNC_LOG_LEVEL=info", NULL};
    pid_t pid = fts_test_process_start(binary, "extract", defaults, env, log_path, err);
    if (pid < 0) {
        return NULL;
    }
    fts_test_extract_t *extract = calloc(1, sizeof *extract);
    extract->pid = pid;
    extract->log_path = strdup(log_path);
    return extract;
}

pid_t fts_test_extract_pid(const fts_test_extract_t *extract)
{
    return extract->pid;
}

/* The first pid listed in /proc/<pid>/task/ * /children, or 0. */
static pid_t first_child(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (!dir) {
        return 0;
    }
    pid_t child = 0;
    struct dirent *task;
    while (!child && (task = readdir(dir)) != NULL) {
        if (task->d_name[0] == '.') {
            continue;
        }
        char children[512];
        snprintf(children, sizeof children, "/proc/%d/task/%s/children", (int)pid, task->d_name);
        FILE *file = fopen(children, "r");
        if (!file) {
            continue;
        }
        int value = 0;
        if (fscanf(file, "%d", &value) == 1 && value > 0) {
            child = (pid_t)value;
        }
        fclose(file);
    }
    closedir(dir);
    return child;
}

pid_t fts_test_extract_worker_pid(const fts_test_extract_t *extract, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    do {
        if (extract->pid > 0) {
            pid_t child = first_child(extract->pid);
            if (child > 0) {
                ((fts_test_extract_t *)extract)->last_worker = child;
                return child;
            }
        }
        fts_test_sleep_ms(20);
    } while (fts_test_monotonic_ms() < deadline);
    return 0;
}

static bool pid_alive(pid_t pid)
{
    if (kill(pid, 0) != 0) {
        return false;
    }
    /* A zombie (not reaped by its parent yet) counts as gone. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *file = fopen(path, "r");
    if (!file) {
        return false;
    }
    char line[512] = "";
    bool alive = true;
    if (fgets(line, sizeof line, file)) {
        const char *close_paren = strrchr(line, ')');
        if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z') {
            alive = false;
        }
    }
    fclose(file);
    return alive;
}

bool fts_test_kill_pid(pid_t pid, int sig)
{
    if (pid <= 0 || kill(pid, sig) != 0) {
        return false;
    }
    uint64_t deadline = fts_test_monotonic_ms() + 5000;
    while (pid_alive(pid) && fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(10);
    }
    return !pid_alive(pid);
}

bool fts_test_extract_running(fts_test_extract_t *extract)
{
    if (extract->pid <= 0) {
        return false;
    }
    int status = 0;
    pid_t done = waitpid(extract->pid, &status, WNOHANG);
    if (done == extract->pid) {
        fts_test_process_forget(extract->pid);
        extract->pid = 0;
        return false;
    }
    return true;
}

bool fts_test_extract_kill(fts_test_extract_t *extract, int sig)
{
    if (!fts_test_extract_running(extract)) {
        return false;
    }
    pid_t worker = first_child(extract->pid);
    if (worker <= 0) {
        worker = extract->last_worker;
    }
    if (kill(extract->pid, sig) != 0) {
        return false;
    }
    if (sig == SIGKILL) {
        waitpid(extract->pid, NULL, 0);
        fts_test_process_forget(extract->pid);
        extract->pid = 0;
        /* The orphaned worker should notice its parent is gone; if it has not within 5 s it
         * is killed so that it cannot write behind the next extractor's back forever. */
        if (worker > 0) {
            uint64_t deadline = fts_test_monotonic_ms() + 5000;
            while (pid_alive(worker) && fts_test_monotonic_ms() < deadline) {
                fts_test_sleep_ms(20);
            }
            if (pid_alive(worker)) {
                fprintf(stderr, "(the worker %d outlived its killed parent by 5 s; killing it)\n",
                        (int)worker);
                fts_test_kill_pid(worker, SIGKILL);
            }
        }
    }
    return true;
}

bool fts_test_extract_stop(fts_test_extract_t *extract, unsigned timeout_ms, int *status)
{
    if (extract->pid <= 0) {
        return false;
    }
    kill(extract->pid, SIGTERM);
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    do {
        pid_t done = waitpid(extract->pid, status, WNOHANG);
        if (done == extract->pid) {
            fts_test_process_forget(extract->pid);
            extract->pid = 0;
            return true;
        }
        fts_test_sleep_ms(20);
    } while (fts_test_monotonic_ms() < deadline);
    fts_test_extract_kill(extract, SIGKILL);
    return false;
}

char *fts_test_extract_log(const fts_test_extract_t *extract)
{
    fts_buffer_t buf = {0};
    fts_error_t err;
    fts_buffer_read_file(&buf, extract->log_path, 64u << 20, &err);
    fts_buffer_append(&buf, "", 0);
    if (!buf.data) {
        return strdup("");
    }
    return fts_buffer_steal(&buf);
}

void fts_test_extract_print_log_tail(const fts_test_extract_t *extract, unsigned lines)
{
    fts_test_print_log_tail("ftsync extract", extract->log_path, lines);
}

/* As for loaders (load_harness.c): a process the test left running gets SIGTERM and this long
 * to stop before SIGKILL, so that LeakSanitizer checks it and its forked transform worker. */
#define LEAK_CHECK_GRACE_MS 3000

/* Stops an extractor still running with SIGTERM (SIGKILL after LEAK_CHECK_GRACE_MS), then fails
 * the test when its log holds a leak report, from it or from its worker: nothing else reads
 * that log when the test passed. */
void fts_test_extract_destroy(fts_test_extract_t *extract)
{
    if (!extract) {
        return;
    }
    if (extract->pid > 0) {
        int status;
        fts_test_extract_stop(extract, LEAK_CHECK_GRACE_MS, &status);
    }
    char *log = fts_test_extract_log(extract);
    bool leaked = log && strstr(log, "ERROR: LeakSanitizer") != NULL;
    free(log);
    if (leaked) {
        fprintf(stderr, "ftsync extract leaked memory: LeakSanitizer's report is in %s\n",
                extract->log_path);
        abort();
    }
    free(extract->log_path);
    free(extract);
}

pid_t fts_test_spawn(const char *program, const char *const *argv, const char *log_path)
{
    size_t argc = 0;
    while (argv && argv[argc]) {
        argc++;
    }
    const char **full = calloc(argc + 2, sizeof *full);
    full[0] = program;
    for (size_t i = 0; i < argc; i++) {
        full[i + 1] = argv[i];
    }
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        if (log_fd >= 0) {
            dup2(log_fd, 1);
            dup2(log_fd, 2);
        }
        execv(program, (char *const *)full);
        _exit(127);
    }
    if (log_fd >= 0) {
        close(log_fd);
    }
    free(full);
    if (pid > 0) {
        fts_test_process_remember(pid);
    }
    return pid;
}

int fts_test_wait_pid(pid_t pid, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            fts_test_process_forget(pid);
            if (WIFEXITED(status)) {
                return WEXITSTATUS(status);
            }
            return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
        if (done < 0 || fts_test_monotonic_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fts_test_process_forget(pid);
            return -1;
        }
        fts_test_sleep_ms(20);
    }
}

/* ---- Redis -------------------------------------------------------------------------------- */

redisContext *fts_test_redis_connect(const char *url, fts_error_t *err)
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
    if (!redis || redis->err) {
        fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_CONNECT, "cannot connect to %s: %s", url,
                      redis ? redis->errstr : "out of memory");
        redisFree(redis);
        return NULL;
    }
    redisSetTimeout(redis, timeout);
    if (db != 0) {
        redisReply *reply = redisCommand(redis, "SELECT %d", db);
        freeReplyObject(reply);
    }
    return redis;
}

char *fts_test_key(const char *pipeline, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "ftsync:{%s}:%s", pipeline, suffix);
    return out;
}

long long fts_test_redis_xlen(redisContext *redis, const char *key)
{
    redisReply *reply = redisCommand(redis, "XLEN %s", key);
    long long len = reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
    freeReplyObject(reply);
    return len;
}

static char *reply_string(redisReply *reply)
{
    char *value = NULL;
    if (reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS)) {
        value = malloc(reply->len + 1);
        memcpy(value, reply->str, reply->len);
        value[reply->len] = '\0';
    }
    freeReplyObject(reply);
    return value;
}

char *fts_test_redis_hget(redisContext *redis, const char *key, const char *field)
{
    return reply_string(redisCommand(redis, "HGET %s %s", key, field));
}

char *fts_test_redis_get(redisContext *redis, const char *key)
{
    return reply_string(redisCommand(redis, "GET %s", key));
}

/* ---- stream entries ----------------------------------------------------------------------- */

static void entries_push(fts_test_entries_t *entries, const fts_test_entry_t *entry)
{
    if (entries->count == entries->cap) {
        entries->cap = entries->cap ? entries->cap * 2 : 1024;
        entries->items = realloc(entries->items, entries->cap * sizeof *entries->items);
    }
    entries->items[entries->count++] = *entry;
}

/* Calls visit for every entry after `after`, in pages. */
typedef bool (*visit_fn)(const char *stream_id, const redisReply *fields, void *ctx,
                         fts_error_t *err);

static bool stream_walk(redisContext *redis, const char *key, const char *after, visit_fn visit,
                        void *ctx, fts_error_t *err)
{
    char start[64];
    if (after) {
        snprintf(start, sizeof start, "(%s", after);
    } else {
        snprintf(start, sizeof start, "-");
    }
    for (;;) {
        redisReply *reply =
            redisCommand(redis, "XRANGE %s %s + COUNT %d", key, start, FTS_TEST_STREAM_PAGE);
        if (!reply || reply->type != REDIS_REPLY_ARRAY) {
            fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_SERVER, "XRANGE %s failed: %s", key,
                          reply && reply->type == REDIS_REPLY_ERROR ? reply->str : redis->errstr);
            freeReplyObject(reply);
            return false;
        }
        size_t page = reply->elements;
        for (size_t i = 0; i < page; i++) {
            const redisReply *entry = reply->element[i];
            if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) {
                freeReplyObject(reply);
                return fts_error_set(err, FTS_ERROR_REDIS, FTS_ERROR_CODE_PROTOCOL,
                                     "XRANGE %s: an entry is not [id, fields]", key);
            }
            const char *stream_id = entry->element[0]->str;
            if (!visit(stream_id, entry->element[1], ctx, err)) {
                freeReplyObject(reply);
                return false;
            }
            snprintf(start, sizeof start, "(%s", stream_id);
        }
        freeReplyObject(reply);
        if (page < FTS_TEST_STREAM_PAGE) {
            return true;
        }
    }
}

static bool visit_decode(const char *stream_id, const redisReply *fields, void *ctx,
                         fts_error_t *err)
{
    fts_test_entries_t *out = ctx;
    size_t count = fields->elements;
    fts_bytes_t *items = calloc(count ? count : 1, sizeof *items);
    for (size_t i = 0; i < count; i++) {
        items[i].data = fields->element[i]->str;
        items[i].len = fields->element[i]->len;
    }
    fts_test_entry_t entry;
    memset(&entry, 0, sizeof entry);
    fts_action_init(&entry.action);
    snprintf(entry.stream_id, sizeof entry.stream_id, "%s", stream_id);
    bool ok = fts_action_decode(items, count, &entry.action, err);
    if (!ok) {
        fts_error_prefix(err, "stream entry %s", stream_id);
    }
    entry.sweep = ok && entry.action.op == FTS_ACTION_SWEEP;
    free(items);
    if (!ok) {
        fts_action_cleanup(&entry.action);
        return false;
    }
    entries_push(out, &entry);
    return true;
}

bool fts_test_stream_read(redisContext *redis, const char *key, const char *after,
                          fts_test_entries_t *out, fts_error_t *err)
{
    return stream_walk(redis, key, after, visit_decode, out, err);
}

void fts_test_entries_cleanup(fts_test_entries_t *entries)
{
    for (size_t i = 0; i < entries->count; i++) {
        fts_action_cleanup(&entries->items[i].action);
    }
    free(entries->items);
    memset(entries, 0, sizeof *entries);
}

static bool visit_raw(const char *stream_id, const redisReply *fields, void *ctx, fts_error_t *err)
{
    (void)err;
    fts_test_raw_entries_t *out = ctx;
    out->fields = realloc(out->fields, (out->count + 1) * sizeof *out->fields);
    out->ids = realloc(out->ids, (out->count + 1) * sizeof *out->ids);
    char **list = calloc(fields->elements + 1, sizeof *list);
    for (size_t i = 0; i < fields->elements; i++) {
        list[i] = strndup(fields->element[i]->str, fields->element[i]->len);
    }
    out->fields[out->count] = list;
    out->ids[out->count] = strdup(stream_id);
    out->count++;
    return true;
}

bool fts_test_stream_read_raw(redisContext *redis, const char *key, fts_test_raw_entries_t *out,
                              fts_error_t *err)
{
    return stream_walk(redis, key, NULL, visit_raw, out, err);
}

const char *fts_test_raw_field(const fts_test_raw_entries_t *entries, size_t i, const char *field)
{
    char **list = entries->fields[i];
    for (size_t j = 0; list[j] && list[j + 1]; j += 2) {
        if (strcmp(list[j], field) == 0) {
            return list[j + 1];
        }
    }
    return NULL;
}

void fts_test_raw_entries_cleanup(fts_test_raw_entries_t *entries)
{
    for (size_t i = 0; i < entries->count; i++) {
        for (size_t j = 0; entries->fields[i][j]; j++) {
            free(entries->fields[i][j]);
        }
        free(entries->fields[i]);
        free(entries->ids[i]);
    }
    free(entries->fields);
    free(entries->ids);
    memset(entries, 0, sizeof *entries);
}

const char *fts_test_entry_id(const fts_test_entry_t *entry)
{
    return entry->action.id ? entry->action.id : "";
}

/* ---- replay model ------------------------------------------------------------------------- */

typedef struct {
    char *id; /* NULL: empty slot */
    char *ns;
    uint64_t version;
    bool deleted;
    char *body;
} doc_t;

struct fts_test_docs {
    doc_t *slots;
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

fts_test_docs_t *fts_test_docs_new(void)
{
    fts_test_docs_t *docs = calloc(1, sizeof *docs);
    docs->cap = 1024;
    docs->slots = calloc(docs->cap, sizeof *docs->slots);
    return docs;
}

void fts_test_docs_destroy(fts_test_docs_t *docs)
{
    if (!docs) {
        return;
    }
    for (size_t i = 0; i < docs->cap; i++) {
        free(docs->slots[i].id);
        free(docs->slots[i].ns);
        free(docs->slots[i].body);
    }
    free(docs->slots);
    free(docs);
}

static doc_t *docs_find(const fts_test_docs_t *docs, const char *id)
{
    size_t mask = docs->cap - 1;
    for (size_t i = hash_text(id) & mask;; i = (i + 1) & mask) {
        doc_t *slot = &docs->slots[i];
        if (!slot->id || strcmp(slot->id, id) == 0) {
            return slot;
        }
    }
}

static doc_t *docs_get(fts_test_docs_t *docs, const char *id)
{
    if ((docs->used + 1) * 2 > docs->cap) {
        doc_t *old = docs->slots;
        size_t old_cap = docs->cap;
        docs->cap *= 2;
        docs->slots = calloc(docs->cap, sizeof *docs->slots);
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i].id) {
                *docs_find(docs, old[i].id) = old[i];
            }
        }
        free(old);
    }
    doc_t *slot = docs_find(docs, id);
    if (!slot->id) {
        slot->id = strdup(id);
        slot->deleted = true;
        docs->used++;
    }
    return slot;
}

void fts_test_replay_apply(fts_test_docs_t *docs, const fts_test_entry_t *entry)
{
    const fts_action_t *action = &entry->action;
    if (entry->sweep || action->op == FTS_ACTION_DROP) {
        for (size_t i = 0; i < docs->cap; i++) {
            doc_t *doc = &docs->slots[i];
            if (!doc->id || doc->deleted || !doc->ns || strcmp(doc->ns, action->ns) != 0) {
                continue;
            }
            if (action->op == FTS_ACTION_DROP || doc->version < action->version) {
                doc->deleted = true;
                free(doc->body);
                doc->body = NULL;
            }
        }
        return;
    }
    doc_t *doc = docs_get(docs, fts_test_entry_id(entry));
    if (action->version <= doc->version) {
        return; /* external versioning: an older or equal version changes nothing */
    }
    doc->version = action->version;
    free(doc->ns);
    doc->ns = strdup(action->ns);
    free(doc->body);
    doc->body = NULL;
    if (action->op == FTS_ACTION_INDEX) {
        doc->deleted = false;
        doc->body = strndup(action->body, action->body_len);
    } else {
        doc->deleted = true;
    }
}

void fts_test_replay_all(fts_test_docs_t *docs, const fts_test_entries_t *entries)
{
    for (size_t i = 0; i < entries->count; i++) {
        fts_test_replay_apply(docs, &entries->items[i]);
    }
}

size_t fts_test_docs_live_count(const fts_test_docs_t *docs)
{
    size_t live = 0;
    for (size_t i = 0; i < docs->cap; i++) {
        if (docs->slots[i].id && !docs->slots[i].deleted) {
            live++;
        }
    }
    return live;
}

const char *fts_test_docs_body(const fts_test_docs_t *docs, const char *id)
{
    const doc_t *doc = docs_find(docs, id);
    return doc->id && !doc->deleted ? doc->body : NULL;
}

uint64_t fts_test_docs_version(const fts_test_docs_t *docs, const char *id)
{
    const doc_t *doc = docs_find(docs, id);
    return doc->id ? doc->version : 0;
}

bool fts_test_collection_state(mongoc_client_t *client, const char *db, const char *collection,
                               const char *id_field, const char *fields, fts_test_docs_t *docs,
                               fts_error_t *err)
{
    fts_string_list_t list = {0};
    if (fields && *fields && !fts_string_list_parse(fields, &list, err)) {
        return false;
    }
    fts_projection_t *projection = fts_projection_new(id_field, &list, err);
    fts_string_list_cleanup(&list);
    if (!projection) {
        return false;
    }
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, collection);
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    bool ok = true;
    char ns[512];
    snprintf(ns, sizeof ns, "%s.%s", db, collection);
    while (ok && mongoc_cursor_next(cursor, &doc)) {
        fts_buffer_t id = {0};
        fts_buffer_t body = {0};
        ok = fts_projection_document_id(projection, doc, &id, err) &&
             fts_projection_body(projection, doc, &body, err);
        if (ok) {
            fts_buffer_append(&id, "", 0);
            fts_buffer_append(&body, "", 0);
            doc_t *slot = docs_get(docs, id.data);
            slot->deleted = false;
            slot->version = 1;
            free(slot->ns);
            slot->ns = strdup(ns);
            free(slot->body);
            slot->body = fts_buffer_steal(&body);
        }
        fts_buffer_destroy(&id);
        fts_buffer_destroy(&body);
    }
    bson_error_t error;
    if (ok && mongoc_cursor_error(cursor, &error)) {
        ok = fts_error_set(err, FTS_ERROR_MONGO, (int)error.code, "reading %s: %s", ns,
                           error.message);
    }
    mongoc_cursor_destroy(cursor);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    fts_projection_destroy(projection);
    return ok;
}

static size_t compare_one_way(const fts_test_docs_t *have, const fts_test_docs_t *want,
                              const char *label, const char *have_name, const char *want_name,
                              bool bodies, size_t *printed)
{
    size_t differ = 0;
    for (size_t i = 0; i < want->cap; i++) {
        const doc_t *doc = &want->slots[i];
        if (!doc->id || doc->deleted) {
            continue;
        }
        const char *other = fts_test_docs_body(have, doc->id);
        if (!other) {
            differ++;
            if ((*printed)++ < FTS_TEST_COMPARE_PRINT_MAX) {
                fprintf(stderr, "%s: id %s is in the %s but not in the %s\n", label, doc->id,
                        want_name, have_name);
            }
        } else if (bodies && strcmp(other, doc->body) != 0) {
            differ++;
            if ((*printed)++ < FTS_TEST_COMPARE_PRINT_MAX) {
                fprintf(stderr, "%s: id %s differs\n  %s: %.400s\n  %s: %.400s\n", label, doc->id,
                        want_name, doc->body, have_name, other);
            }
        }
    }
    return differ;
}

size_t fts_test_replay_compare(const fts_test_docs_t *replay, const fts_test_docs_t *expected,
                               const char *label)
{
    size_t printed = 0;
    size_t differ =
        compare_one_way(replay, expected, label, "replayed stream", "collection", true, &printed);
    differ +=
        compare_one_way(expected, replay, label, "collection", "replayed stream", false, &printed);
    if (differ) {
        fprintf(stderr, "%s: %zu documents differ (collection %zu live, replay %zu live)\n", label,
                differ, fts_test_docs_live_count(expected), fts_test_docs_live_count(replay));
    }
    return differ;
}

/* ---- following the stream and checking changes -------------------------------------------- */

bool fts_test_stream_follow(redisContext *redis, const char *key, fts_test_entries_t *entries,
                            fts_error_t *err)
{
    const char *after = entries->count ? entries->items[entries->count - 1].stream_id : NULL;
    char copy[48] = "";
    if (after) {
        snprintf(copy, sizeof copy, "%s", after);
    }
    return fts_test_stream_read(redis, key, after ? copy : NULL, entries, err);
}

static long find_entry(const fts_test_entries_t *entries, size_t from, const char *id, int op,
                       int origin)
{
    for (size_t i = from; i < entries->count; i++) {
        const fts_test_entry_t *entry = &entries->items[i];
        if (entry->sweep || !entry->action.id || strcmp(entry->action.id, id) != 0) {
            continue;
        }
        if ((op == 0 || (int)entry->action.op == op) &&
            (origin == 0 || (int)entry->action.origin == origin)) {
            return (long)i;
        }
    }
    return -1;
}

long fts_test_stream_wait_for(redisContext *redis, const char *key, fts_test_entries_t *entries,
                              const char *id, int op, int origin, unsigned timeout_ms)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    size_t from = 0;
    for (;;) {
        long found = find_entry(entries, from, id, op, origin);
        if (found >= 0) {
            return found;
        }
        from = entries->count;
        if (fts_test_monotonic_ms() >= deadline) {
            return -1;
        }
        fts_test_sleep_ms(50);
        fts_error_t err;
        if (!fts_test_stream_follow(redis, key, entries, &err)) {
            fprintf(stderr, "reading the stream: %s\n", err.message);
            return -1;
        }
    }
}

bool fts_test_collect_changes(mongoc_client_t *client, const char *db, const char *collection,
                              uint32_t seconds, uint32_t increment, int32_t end_id,
                              unsigned timeout_ms, fts_test_changes_t *out, fts_error_t *err)
{
    fts_projection_t *projection = fts_projection_new(NULL, NULL, err);
    if (!projection) {
        return false;
    }
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, collection);
    bson_t pipeline = BSON_INITIALIZER;
    bson_t *opts =
        BCON_NEW("startAtOperationTime", BCON_TIMESTAMP((int32_t)seconds, (int32_t)increment),
                 "maxAwaitTimeMS", BCON_INT64(200), "batchSize", BCON_INT32(1000));
    mongoc_change_stream_t *stream = mongoc_collection_watch(coll, &pipeline, opts);
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    size_t cap = 0;
    bool done = false;
    bool ok = true;
    while (ok && !done) {
        const bson_t *event;
        if (mongoc_change_stream_next(stream, &event)) {
            bson_iter_t iter;
            bson_iter_t key;
            const char *op = "";
            uint32_t t = 0;
            uint32_t i = 0;
            if (bson_iter_init_find(&iter, event, "operationType")) {
                op = bson_iter_utf8(&iter, NULL);
            }
            if (bson_iter_init_find(&iter, event, "clusterTime")) {
                bson_iter_timestamp(&iter, &t, &i);
            }
            bson_t document_key;
            fts_buffer_t id = {0};
            if (bson_iter_init_find(&key, event, "documentKey") && BSON_ITER_HOLDS_DOCUMENT(&key)) {
                uint32_t len;
                const uint8_t *data;
                bson_iter_document(&key, &len, &data);
                bson_init_static(&document_key, data, len);
                bson_iter_t id_iter;
                if (bson_iter_init_find(&id_iter, &document_key, "_id") &&
                    BSON_ITER_HOLDS_INT32(&id_iter) && bson_iter_int32(&id_iter) == end_id &&
                    strcmp(op, "insert") == 0) {
                    done = true;
                }
                fts_error_t ignored;
                fts_projection_document_id(projection, &document_key, &id, &ignored);
            }
            fts_buffer_append(&id, "", 0);
            fts_buffer_t body = {0};
            bool with_body = false;
            if ((strcmp(op, "insert") == 0 || strcmp(op, "replace") == 0) &&
                bson_iter_init_find(&key, event, "fullDocument") &&
                BSON_ITER_HOLDS_DOCUMENT(&key)) {
                uint32_t len;
                const uint8_t *data;
                bson_iter_document(&key, &len, &data);
                bson_t full;
                bson_init_static(&full, data, len);
                fts_error_t ignored;
                with_body = fts_projection_body(projection, &full, &body, &ignored);
                fts_buffer_append(&body, "", 0);
            }
            if (out->count == cap) {
                cap = cap ? cap * 2 : 1024;
                out->items = realloc(out->items, cap * sizeof *out->items);
            }
            fts_test_change_t *change = &out->items[out->count++];
            change->id = fts_buffer_steal(&id);
            snprintf(change->op, sizeof change->op, "%s", op);
            change->version = fts_version_from_timestamp(t, i);
            change->body = with_body ? fts_buffer_steal(&body) : NULL;
            fts_buffer_destroy(&body);
            continue;
        }
        bson_error_t error;
        const bson_t *reply;
        if (mongoc_change_stream_error_document(stream, &error, &reply)) {
            ok = fts_error_set(err, FTS_ERROR_MONGO, (int)error.code, "change stream: %s",
                               error.message);
        } else if (fts_test_monotonic_ms() > deadline) {
            ok = fts_error_set(err, FTS_ERROR_MONGO, FTS_ERROR_CODE_TIMEOUT,
                               "the insert of _id %d did not come within %u ms (%zu events)",
                               (int)end_id, timeout_ms, out->count);
        }
    }
    mongoc_change_stream_destroy(stream);
    bson_destroy(opts);
    bson_destroy(&pipeline);
    mongoc_collection_destroy(coll);
    fts_projection_destroy(projection);
    return ok;
}

void fts_test_changes_cleanup(fts_test_changes_t *changes)
{
    for (size_t i = 0; i < changes->count; i++) {
        free(changes->items[i].id);
        free(changes->items[i].body);
    }
    free(changes->items);
    memset(changes, 0, sizeof *changes);
}

size_t fts_test_changes_missing(const fts_test_changes_t *changes,
                                const fts_test_entries_t *entries, const char *label)
{
    /* (id, version) -> the ops queued for it, through a replay-model table keyed by
     * "id@version". */
    fts_test_docs_t *queued = fts_test_docs_new();
    char key[FTS_ACTION_ID_MAX + 32];
    for (size_t i = 0; i < entries->count; i++) {
        const fts_test_entry_t *entry = &entries->items[i];
        if (entry->sweep || entry->action.origin != FTS_ACTION_FROM_CHANGE || !entry->action.id) {
            continue;
        }
        snprintf(key, sizeof key, "%s@%" PRIu64, entry->action.id, entry->action.version);
        doc_t *slot = docs_get(queued, key);
        slot->version |= entry->action.op == FTS_ACTION_INDEX ? 1u : 2u;
    }
    size_t missing = 0;
    for (size_t i = 0; i < changes->count; i++) {
        const fts_test_change_t *change = &changes->items[i];
        snprintf(key, sizeof key, "%s@%" PRIu64, change->id, change->version);
        uint64_t kinds = fts_test_docs_version(queued, key);
        bool ok;
        if (strcmp(change->op, "delete") == 0) {
            ok = kinds & 2u;
        } else if (strcmp(change->op, "update") == 0) {
            ok = kinds != 0;
        } else {
            ok = kinds & 1u;
        }
        if (!ok) {
            if (missing < FTS_TEST_COMPARE_PRINT_MAX) {
                fprintf(stderr,
                        "%s: change %zu (%s of id %s, version %" PRIu64 ") is not in the stream\n",
                        label, i, change->op, change->id, change->version);
            }
            missing++;
        }
    }
    if (missing) {
        fprintf(stderr, "%s: %zu of %zu changes are not in the stream\n", label, missing,
                changes->count);
    }
    fts_test_docs_destroy(queued);
    return missing;
}

/* ---- one pipeline under test -------------------------------------------------------------- */

bool fts_test_pipeline_init(fts_test_pipeline_t *p, const char *binary, const char *workload,
                            const char *mongo_uri, const char *redis_url, const char *prefix,
                            fts_error_t *err)
{
    memset(p, 0, sizeof *p);
    p->binary = binary;
    p->workload = workload;
    p->mongo_uri = mongo_uri;
    p->redis_url = redis_url;
    fts_test_mongo_unique_name(prefix, p->db, sizeof p->db);
    snprintf(p->collection, sizeof p->collection, "apps");
    snprintf(p->pipeline, sizeof p->pipeline, "%s", p->db);
    fts_test_key(p->pipeline, "stream", p->stream_key, sizeof p->stream_key);
    fts_test_key(p->pipeline, "token", p->token_key, sizeof p->token_key);
    fts_test_key(p->pipeline, "snapshot", p->snapshot_key, sizeof p->snapshot_key);
    fts_test_key(p->pipeline, "dead", p->dead_key, sizeof p->dead_key);
    fts_test_key(p->pipeline, "lease", p->lease_key, sizeof p->lease_key);
    snprintf(p->dir, sizeof p->dir, "%s/extract-%s-XXXXXX", fts_testbed_dir(), p->db);
    mkdir(fts_testbed_dir(), 0755);
    if (!mkdtemp(p->dir)) {
        return fts_error_set(err, FTS_ERROR_SYSTEM, errno, "cannot create %s: %s", p->dir,
                             strerror(errno));
    }
    p->redis = fts_test_redis_connect(redis_url, err);
    if (!p->redis) {
        return false;
    }
    p->client = mongoc_client_new(mongo_uri);
    if (!p->client) {
        return fts_error_set(err, FTS_ERROR_MONGO, FTS_ERROR_CODE_INVALID, "bad URI %s", mongo_uri);
    }
    mongoc_client_set_error_api(p->client, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_set_appname(p->client, "ftsync-test");
    p->coll = mongoc_client_get_collection(p->client, p->db, p->collection);
    fts_test_pipeline_set(p, "FTSYNC_MONGO_URI", mongo_uri);
    fts_test_pipeline_set(p, "FTSYNC_MONGO_DB", p->db);
    fts_test_pipeline_set(p, "FTSYNC_MONGO_COLLECTION", p->collection);
    fts_test_pipeline_set(p, "FTSYNC_STATE_REDIS_URL", redis_url);
    fts_test_pipeline_set(p, "FTSYNC_QUEUE_REDIS_URL", redis_url);
    fts_test_pipeline_set(p, "FTSYNC_PIPELINE", p->pipeline);
    fts_test_pipeline_set(p, "FTSYNC_BATCH_SIZE", "200");
    return true;
}

void fts_test_pipeline_set(fts_test_pipeline_t *p, const char *name, const char *value)
{
    size_t name_len = strlen(name);
    size_t slot = p->env_count;
    for (size_t i = 0; i < p->env_count; i++) {
        if (strncmp(p->env[i], name, name_len) == 0 && p->env[i][name_len] == '=') {
            slot = i;
        }
    }
    if (slot == FTS_TEST_PIPELINE_ENV_MAX) {
        fprintf(stderr, "fts_test_pipeline_set: too many settings (%s)\n", name);
        abort();
    }
    snprintf(p->env[slot], sizeof p->env[slot], "%s=%s", name, value);
    if (slot == p->env_count) {
        p->env_count++;
    }
    for (size_t i = 0; i < p->env_count; i++) {
        p->envp[i] = p->env[i];
    }
    p->envp[p->env_count] = NULL;
}

static const char *pipeline_setting(const fts_test_pipeline_t *p, const char *name)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < p->env_count; i++) {
        if (strncmp(p->env[i], name, name_len) == 0 && p->env[i][name_len] == '=') {
            return p->env[i] + name_len + 1;
        }
    }
    return NULL;
}

fts_test_extract_t *fts_test_pipeline_start(fts_test_pipeline_t *p, fts_error_t *err)
{
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/extract-%u.log", p->dir, ++p->starts);
    return fts_test_extract_start(p->binary, p->envp, log_path, err);
}

bool fts_test_pipeline_insert(fts_test_pipeline_t *p, int32_t id, const char *name,
                              unsigned timeout_ms, fts_error_t *err)
{
    uint64_t deadline = fts_test_monotonic_ms() + timeout_ms;
    bson_t *doc = BCON_NEW("_id", BCON_INT32(id), "name", BCON_UTF8(name));
    bson_error_t error;
    bool ok;
    while (!(ok = mongoc_collection_insert_one(p->coll, doc, NULL, NULL, &error)) &&
           fts_test_monotonic_ms() < deadline) {
        fts_test_sleep_ms(100);
    }
    bson_destroy(doc);
    if (!ok) {
        return fts_error_set(err, FTS_ERROR_MONGO, (int)error.code, "insert of _id %d: %s", (int)id,
                             error.message);
    }
    return true;
}

static const char **workload_argv(fts_test_pipeline_t *p, const char *const *args)
{
    size_t count = 0;
    while (args && args[count]) {
        count++;
    }
    const char **argv = calloc(count + 8, sizeof *argv);
    size_t n = 0;
    argv[n++] = "--uri";
    argv[n++] = p->mongo_uri;
    argv[n++] = "--db";
    argv[n++] = p->db;
    argv[n++] = "--collection";
    argv[n++] = p->collection;
    for (size_t i = 0; i < count; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return argv;
}

pid_t fts_test_pipeline_workload_spawn(fts_test_pipeline_t *p, const char *const *args)
{
    const char **argv = workload_argv(p, args);
    char log_path[1200];
    snprintf(log_path, sizeof log_path, "%s/workload.log", p->dir);
    pid_t pid = fts_test_spawn(p->workload, argv, log_path);
    free(argv);
    return pid;
}

int fts_test_pipeline_workload_run(fts_test_pipeline_t *p, const char *const *args,
                                   unsigned timeout_ms)
{
    pid_t pid = fts_test_pipeline_workload_spawn(p, args);
    int status = pid > 0 ? fts_test_wait_pid(pid, timeout_ms) : -1;
    if (status != 0) {
        char log_path[1200];
        snprintf(log_path, sizeof log_path, "%s/workload.log", p->dir);
        fts_test_print_log_tail("ftsync-workload", log_path, 20);
    }
    return status;
}

size_t fts_test_pipeline_check_final(fts_test_pipeline_t *p, const char *label)
{
    fts_test_entries_t entries = {0};
    fts_error_t err;
    size_t differ = (size_t)-1;
    fts_test_docs_t *replay = fts_test_docs_new();
    fts_test_docs_t *expected = fts_test_docs_new();
    if (!fts_test_stream_read(p->redis, p->stream_key, NULL, &entries, &err)) {
        fprintf(stderr, "%s: reading the stream: %s\n", label, err.message);
        goto cleanup;
    }
    fts_test_replay_all(replay, &entries);
    if (!fts_test_collection_state(p->client, p->db, p->collection,
                                   pipeline_setting(p, "FTSYNC_ID_FIELD"),
                                   pipeline_setting(p, "FTSYNC_FIELDS"), expected, &err)) {
        fprintf(stderr, "%s: reading the collection: %s\n", label, err.message);
        goto cleanup;
    }
    differ = fts_test_replay_compare(replay, expected, label);
    fprintf(stderr, "(%s: %zu stream entries, %zu documents in the collection, %zu differ)\n",
            label, entries.count, fts_test_docs_live_count(expected), differ);
cleanup:
    fts_test_docs_destroy(replay);
    fts_test_docs_destroy(expected);
    fts_test_entries_cleanup(&entries);
    return differ;
}

void fts_test_pipeline_cleanup(fts_test_pipeline_t *p)
{
    if (p->dir[0] && !getenv("FTSYNC_TEST_KEEP_LOGS")) {
        fts_test_remove_tree(p->dir);
    }
    fts_test_entries_cleanup(&p->entries);
    mongoc_collection_destroy(p->coll);
    mongoc_client_destroy(p->client);
    if (p->redis) {
        redisFree(p->redis);
    }
    p->coll = NULL;
    p->client = NULL;
    p->redis = NULL;
}
