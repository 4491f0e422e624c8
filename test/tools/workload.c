/*
 * workload.c - ftsync-workload: writes a repeatable stream of changes to a MongoDB collection
 * and reports what the collection must contain afterwards.
 *
 * Tests and benchmarks of ftsync need realistic change streams: inserts, updates that set,
 * unset, increment and change arrays, replacements and deletes, in a chosen mix, at a chosen
 * rate or as fast as the server takes them. The documents look like the original service's
 * Steam applications (integer `id`, `name`, `short_description`, `developers`, `publishers`,
 * `updated_at`, `type`, `is_free`, a `prices` map by country code, `recommendations`), with
 * accented, Cyrillic, Greek, CJK, Hangul and emoji text, because text is what ftsync indexes.
 *
 * Repeatability: everything (which operation, which document, every value, even `updated_at`)
 * comes from one seeded generator, never from the clock, so the same --seed and options write
 * the same changes and produce the same report byte for byte. `_id` is the integer `id` (the
 * Steam appid): an ObjectId would differ between runs, and the appid is the natural key that
 * ftsync's documentKey and Elasticsearch ids follow. With --object-ids, `_id` is instead an
 * ObjectId made from the id (24 hex digits: "f75c" and the id in 20 hex digits, so the same
 * on every run and in the same order as the ids), as a collection written by a driver has,
 * for ftsync's FTSYNC_ID_FIELD=id (the id map: deletes carry only the `_id`).
 *
 * The report (--report FILE) is the expected final state of the collection: one document per
 * line, canonical extended JSON, keys sorted at every level, lines in ascending _id. The program
 * keeps its own model of every document and applies each change to it exactly as MongoDB's
 * update operators do, so a test compares the report with a `find` of the collection. It
 * assumes it is the only writer of the collection (use --drop for a clean start).
 *
 * Output: one summary line on stdout (counts per operation, elapsed seconds, operations per
 * second). Exit status: 0 done, 1 a write or the report failed (the message names it), 2 bad
 * usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mongoc/mongoc.h>

/* Countries a price may exist for; kept in this (sorted) order in every document. */
#define MAX_PRICES 7
/* Developers or publishers of one application. */
#define MAX_COMPANIES 4
/* updated_at of the first operation (2021-01-01T00:00:00Z); each operation moves it on. */
#define BASE_TIME_MS INT64_C(1609459200000)

typedef enum { OP_INSERT, OP_UPDATE, OP_REPLACE, OP_DELETE, OP_COUNT } op_t;

static const char *const op_names[OP_COUNT] = {"insert", "update", "replace", "delete"};

typedef struct {
    bool present;
    int32_t initial; /* in the currency's smallest unit, as Steam reports it */
    int32_t final;
} price_t;

static const struct {
    const char *code;
    const char *currency;
    int32_t factor; /* price of one US cent in this currency's unit, times 100 */
} countries[MAX_PRICES] = {
    {"br", "BRL", 500}, {"de", "EUR", 92},   {"fr", "EUR", 92},  {"gb", "GBP", 79},
    {"jp", "JPY", 150}, {"kr", "KRW", 1300}, {"us", "USD", 100},
};

/* One application as the collection holds it. Strings are owned. */
typedef struct {
    bool live;
    int32_t id;
    char *name;
    char *short_description; /* NULL: the field is absent ($unset) */
    char *developers[MAX_COMPANIES];
    int developer_count;
    char *publishers[MAX_COMPANIES];
    int publisher_count;
    int64_t updated_at_ms;
    const char *type;
    bool is_free;
    price_t prices[MAX_PRICES]; /* by countries[] index */
    bool has_recommendations;
    int32_t recommendations;
} app_t;

/* ---- the seeded generator: splitmix64, the same sequence on every platform ------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* 0 <= result < n (n > 0); the modulo bias is irrelevant here, only repeatability matters. */
static uint32_t rng_below(uint32_t n)
{
    return (uint32_t)(rng_next() % n);
}

#define PICK(array) (array)[rng_below((uint32_t)(sizeof(array) / sizeof *(array)))]

/* ---- text: Latin with accents, Cyrillic, Greek, Japanese, Chinese, Korean, emoji ------------ */

static const char *const name_first[] = {
    "Dark",   "Café",  "Süper",  "Ōkami",  "Crimson",  "Ñandú",  "Πολύ",    "Тёмный",
    "東方",   "星の",  "로스트", "Épique", "Zoë's",    "Hollow", "Stardew", "Grand",
    "Mégane", "Ärger", "Forza",  "Ультра", "夜明けの", "Neon 🌃", "Pixel",   "Frozen ❄️",
};
static const char *const name_second[] = {
    "Souls",  "Odyssey", "Racer",      "Frontier",  "Quest",    "プロジェクト", "伝説",
    "아크",   "Мир",     "Ξ Protocol", "Rocket 🚀",  "Dragon 🐉", "Garçon",       "Fjörd",
    "Valley", "Tactics", "Chronicles", "Simulator", "Odyssée",  "Kingdom",      "Knight",
};
static const char *const name_suffix[] = {
    "", "", "", " II", " III", ": Remastered", " – Deluxe Edition", " 2077", " (Beta)", " 🎮",
};
static const char *const description_adjective[] = {
    "sprawling",        "cozy",     "brutal",   "hand-drawn", "procedurally generated",
    "narrative-driven", "fiendish", "relaxing", "open-world", "co-op",
};
static const char *const description_genre[] = {
    "adventure", "roguelike",   "farming sim",  "racing game",  "strategy game",
    "RPG",       "puzzle game", "visual novel", "metroidvania", "city builder",
};
static const char *const description_place[] = {
    "São Paulo", "Zürich",       "東京",
    "서울",      "Москва",       "Αθήνα",
    "Reykjavík", "the galaxy 🌌", "a haunted château",
    "北京",      "Kraków",       "the Côte d'Azur",
};
static const char *const companies[] = {
    "Valve",
    "CD PROJEKT RED",
    "Studio Ghibli ジブリ",
    "Nintendo 任天堂",
    "Ubisoft Montréal",
    "Paradox Interactive",
    "Remedy Entertainment",
    "Pearl Abyss 펄어비스",
    "Éditions Ludiques",
    "Indie Fox 🦊",
    "Ninja Theory",
    "Łódź Games",
    "Coffee Stain",
    "Playdead",
    "FromSoftware フロム",
    "Nexon 넥슨",
};
static const char *const types[] = {"game", "game", "game", "game", "game", "game",
                                    "game", "dlc",  "dlc",  "demo", "music"};

static char *make_name(void)
{
    return bson_strdup_printf("%s %s%s", PICK(name_first), PICK(name_second), PICK(name_suffix));
}

static char *make_description(void)
{
    return bson_strdup_printf("A %s %s set in %s.", PICK(description_adjective),
                              PICK(description_genre), PICK(description_place));
}

/* ---- the model ---------------------------------------------------------------------------- */

static void app_clear(app_t *app)
{
    bson_free(app->name);
    bson_free(app->short_description);
    for (int i = 0; i < app->developer_count; i++) {
        bson_free(app->developers[i]);
    }
    for (int i = 0; i < app->publisher_count; i++) {
        bson_free(app->publishers[i]);
    }
    memset(app, 0, sizeof *app);
}

static price_t make_price(int country)
{
    static const int32_t base_cents[] = {499, 999, 1499, 1999, 2999, 5999};
    static const int32_t discounts[] = {0, 0, 0, 10, 25, 50, 75};
    price_t price = {.present = true};
    price.initial = PICK(base_cents) * countries[country].factor / 100;
    price.final = price.initial * (100 - PICK(discounts)) / 100;
    return price;
}

/* A fresh application with the given id; step counts operations, for updated_at. */
static void app_generate(app_t *app, int32_t id, uint64_t step)
{
    app_clear(app);
    app->live = true;
    app->id = id;
    app->name = make_name();
    app->short_description = rng_below(8) ? make_description() : NULL;
    app->developer_count = 1 + (int)rng_below(2);
    for (int i = 0; i < app->developer_count; i++) {
        app->developers[i] = bson_strdup(PICK(companies));
    }
    app->publisher_count = 1 + (int)rng_below(2);
    for (int i = 0; i < app->publisher_count; i++) {
        app->publishers[i] = bson_strdup(PICK(companies));
    }
    app->updated_at_ms = BASE_TIME_MS + (int64_t)step * 1000 + rng_below(1000);
    app->type = PICK(types);
    app->is_free = rng_below(5) == 0;
    if (!app->is_free) {
        app->prices[6] = make_price(6); /* always a US price, like the Steam store */
        for (int c = 0; c < MAX_PRICES - 1; c++) {
            if (rng_below(2)) {
                app->prices[c] = make_price(c);
            }
        }
    }
    app->has_recommendations = rng_below(4) != 0;
    app->recommendations = app->has_recommendations ? (int32_t)rng_below(100000) : 0;
}

static void append_strings(bson_t *doc, const char *key, char *const *values, int count)
{
    bson_t array;
    bson_append_array_begin(doc, key, -1, &array);
    for (int i = 0; i < count; i++) {
        char index[16];
        const char *index_key;
        bson_uint32_to_string((uint32_t)i, &index_key, index, sizeof index);
        bson_append_utf8(&array, index_key, -1, values[i], -1);
    }
    bson_append_array_end(doc, &array);
}

static void append_price(bson_t *doc, const char *key, int country, const price_t *price)
{
    bson_t child;
    bson_append_document_begin(doc, key, -1, &child);
    BSON_APPEND_UTF8(&child, "currency", countries[country].currency);
    BSON_APPEND_INT32(&child, "final", price->final);
    BSON_APPEND_INT32(&child, "initial", price->initial);
    bson_append_document_end(doc, &child);
}

/* --object-ids: `_id` is an ObjectId made from the id instead of the id itself. */
static bool object_ids;

/* Appends the _id of the application with this id under key. */
static void append_source_id(bson_t *doc, const char *key, int32_t id)
{
    if (!object_ids) {
        BSON_APPEND_INT32(doc, key, id);
        return;
    }
    char hex[25];
    bson_oid_t oid;
    snprintf(hex, sizeof hex, "f75c%020" PRIx32, (uint32_t)id);
    bson_oid_init_from_string(&oid, hex);
    BSON_APPEND_OID(doc, key, &oid);
}

/* The document, keys in sorted order at every level (so the report is canonical as written).
 * with_id: false for a replacement body, which must not change _id anyway. */
static void app_to_bson(const app_t *app, bson_t *doc, bool with_id)
{
    if (with_id) {
        append_source_id(doc, "_id", app->id);
    }
    append_strings(doc, "developers", app->developers, app->developer_count);
    BSON_APPEND_INT32(doc, "id", app->id);
    BSON_APPEND_BOOL(doc, "is_free", app->is_free);
    BSON_APPEND_UTF8(doc, "name", app->name);
    bson_t prices;
    bson_append_document_begin(doc, "prices", -1, &prices);
    for (int c = 0; c < MAX_PRICES; c++) {
        if (app->prices[c].present) {
            append_price(&prices, countries[c].code, c, &app->prices[c]);
        }
    }
    bson_append_document_end(doc, &prices);
    append_strings(doc, "publishers", app->publishers, app->publisher_count);
    if (app->has_recommendations) {
        bson_t recommendations;
        bson_append_document_begin(doc, "recommendations", -1, &recommendations);
        BSON_APPEND_INT32(&recommendations, "total", app->recommendations);
        bson_append_document_end(doc, &recommendations);
    }
    if (app->short_description) {
        BSON_APPEND_UTF8(doc, "short_description", app->short_description);
    }
    BSON_APPEND_UTF8(doc, "type", app->type);
    BSON_APPEND_DATE_TIME(doc, "updated_at", app->updated_at_ms);
}

/* ---- updates: build the operator document and apply the same change to the model ---------- */

/* One update touches each field at most once (MongoDB refuses conflicting paths), so it picks
 * a few of these kinds without repetition. */
typedef enum {
    CHANGE_NAME,
    CHANGE_DESCRIPTION, /* set, or unset when present and the coin says so */
    CHANGE_PRICE,       /* one country: new final price, new country, or country removed */
    CHANGE_RECOMMENDATIONS,
    CHANGE_DEVELOPERS, /* array: one appended, or the last removed */
    CHANGE_PUBLISHERS,
    CHANGE_IS_FREE,
    CHANGE_KINDS
} change_t;

static void build_update(app_t *app, uint64_t step, bson_t *update)
{
    bson_t set, unset, inc;
    bool used[CHANGE_KINDS] = {false};
    int wanted = 1 + (int)rng_below(3);
    bson_init(&set);
    bson_init(&unset);
    bson_init(&inc);

    for (int n = 0; n < wanted; n++) {
        change_t kind = (change_t)rng_below(CHANGE_KINDS);
        if (used[kind]) {
            continue; /* fewer changes this time; still deterministic */
        }
        used[kind] = true;
        switch (kind) {
        case CHANGE_NAME:
            bson_free(app->name);
            app->name = make_name();
            BSON_APPEND_UTF8(&set, "name", app->name);
            break;
        case CHANGE_DESCRIPTION:
            if (app->short_description && rng_below(3) == 0) {
                bson_free(app->short_description);
                app->short_description = NULL;
                BSON_APPEND_UTF8(&unset, "short_description", "");
            } else {
                bson_free(app->short_description);
                app->short_description = make_description();
                BSON_APPEND_UTF8(&set, "short_description", app->short_description);
            }
            break;
        case CHANGE_PRICE: {
            int c = (int)rng_below(MAX_PRICES);
            char path[64];
            if (!app->prices[c].present) {
                app->prices[c] = make_price(c);
                snprintf(path, sizeof path, "prices.%s", countries[c].code);
                append_price(&set, path, c, &app->prices[c]);
            } else if (rng_below(4) == 0) {
                app->prices[c].present = false;
                snprintf(path, sizeof path, "prices.%s", countries[c].code);
                BSON_APPEND_UTF8(&unset, path, "");
            } else {
                static const int32_t discounts[] = {0, 10, 20, 33, 50, 66, 80, 90};
                app->prices[c].final = app->prices[c].initial * (100 - PICK(discounts)) / 100;
                snprintf(path, sizeof path, "prices.%s.final", countries[c].code);
                bson_append_int32(&set, path, -1, app->prices[c].final);
            }
            break;
        }
        case CHANGE_RECOMMENDATIONS: {
            int32_t more = 1 + (int32_t)rng_below(500);
            /* $inc of a missing field creates it with the increment. */
            app->recommendations = (app->has_recommendations ? app->recommendations : 0) + more;
            app->has_recommendations = true;
            BSON_APPEND_INT32(&inc, "recommendations.total", more);
            break;
        }
        case CHANGE_DEVELOPERS:
        case CHANGE_PUBLISHERS: {
            char **list = kind == CHANGE_DEVELOPERS ? app->developers : app->publishers;
            int *count = kind == CHANGE_DEVELOPERS ? &app->developer_count : &app->publisher_count;
            if (*count < MAX_COMPANIES && (*count <= 1 || rng_below(2))) {
                list[(*count)++] = bson_strdup(PICK(companies));
            } else {
                bson_free(list[--(*count)]);
            }
            append_strings(&set, kind == CHANGE_DEVELOPERS ? "developers" : "publishers", list,
                           *count);
            break;
        }
        case CHANGE_IS_FREE:
            app->is_free = !app->is_free;
            BSON_APPEND_BOOL(&set, "is_free", app->is_free);
            break;
        case CHANGE_KINDS:
            break;
        }
    }
    /* Every change moves updated_at, as the original service's writers did. */
    app->updated_at_ms = BASE_TIME_MS + (int64_t)step * 1000 + rng_below(1000);
    BSON_APPEND_DATE_TIME(&set, "updated_at", app->updated_at_ms);

    BSON_APPEND_DOCUMENT(update, "$set", &set);
    if (!bson_empty(&unset)) {
        BSON_APPEND_DOCUMENT(update, "$unset", &unset);
    }
    if (!bson_empty(&inc)) {
        BSON_APPEND_DOCUMENT(update, "$inc", &inc);
    }
    bson_destroy(&set);
    bson_destroy(&unset);
    bson_destroy(&inc);
}

/* ---- options ------------------------------------------------------------------------------ */

typedef struct {
    const char *uri;
    const char *db;
    const char *collection;
    const char *report;
    uint64_t count;
    double rate; /* operations per second; 0: as fast as possible */
    uint64_t seed;
    unsigned mix[OP_COUNT];
    int32_t id_start;
    bool drop;
} options_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ftsync-workload [options]\n"
            "  --uri URI          MongoDB connection string "
            "(default mongodb://127.0.0.1:27017/?replicaSet=rs0)\n"
            "  --db NAME          database (default ftsync)\n"
            "  --collection NAME  collection (default apps)\n"
            "  --count N          operations to run (default 1000)\n"
            "  --rate R           operations per second; 0 = as fast as possible (default 0)\n"
            "  --seed S           seed of every choice and value (default 1)\n"
            "  --mix SPEC         weights, e.g. insert=50,update=30,replace=10,delete=10 "
            "(the default); missing kinds weigh 0\n"
            "  --id-start N       id (and _id) of the first inserted application (default 10; "
            "ids step by 10 like Steam appids)\n"
            "  --object-ids       _id is an ObjectId made from the id (f75c + the id in 20 hex "
            "digits) instead of the id itself\n"
            "  --drop             drop the collection first\n"
            "  --report FILE      write the expected final state: one canonical extended JSON "
            "document per line, keys sorted, ascending _id\n"
            "  --help\n"
            "Updates, replacements and deletes pick among the documents this run inserted; with "
            "none yet, the operation is an insert.\n");
}

static bool parse_u64(const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || !end || *end || !*text || *text == '-') {
        return false;
    }
    *out = value;
    return true;
}

static bool parse_mix(const char *text, unsigned mix[OP_COUNT])
{
    memset(mix, 0, OP_COUNT * sizeof *mix);
    char *copy = bson_strdup(text);
    bool ok = true;
    unsigned total = 0;
    char *save = NULL;
    for (char *part = strtok_r(copy, ",", &save); part && ok; part = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(part, '=');
        uint64_t weight = 0;
        ok = false;
        if (!equals || !parse_u64(equals + 1, &weight) || weight > 1000000) {
            fprintf(stderr, "ftsync-workload: --mix: \"%s\" is not kind=weight\n", part);
            break;
        }
        *equals = '\0';
        for (int op = 0; op < OP_COUNT; op++) {
            if (strcmp(part, op_names[op]) == 0) {
                mix[op] = (unsigned)weight;
                total += (unsigned)weight;
                ok = true;
            }
        }
        if (!ok) {
            fprintf(stderr,
                    "ftsync-workload: --mix: unknown kind \"%s\" (insert, update, replace, "
                    "delete)\n",
                    part);
        }
    }
    if (ok && total == 0) {
        fprintf(stderr, "ftsync-workload: --mix: the weights add up to 0\n");
        ok = false;
    }
    bson_free(copy);
    return ok;
}

static int parse_options(int argc, char **argv, options_t *opts)
{
    static const struct option long_options[] = {
        {"uri", required_argument, NULL, 'u'},
        {"db", required_argument, NULL, 'd'},
        {"collection", required_argument, NULL, 'c'},
        {"count", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},
        {"seed", required_argument, NULL, 's'},
        {"mix", required_argument, NULL, 'm'},
        {"report", required_argument, NULL, 'o'},
        {"id-start", required_argument, NULL, 'i'},
        {"drop", no_argument, NULL, 'D'},
        {"object-ids", no_argument, NULL, 'O'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *opts = (options_t){.uri = "mongodb://127.0.0.1:27017/?replicaSet=rs0",
                        .db = "ftsync",
                        .collection = "apps",
                        .count = 1000,
                        .seed = 1,
                        .mix = {50, 30, 10, 10},
                        .id_start = 10};
    int option;
    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        uint64_t value = 0;
        char *end = NULL;
        switch (option) {
        case 'u':
            opts->uri = optarg;
            break;
        case 'd':
            opts->db = optarg;
            break;
        case 'c':
            opts->collection = optarg;
            break;
        case 'o':
            opts->report = optarg;
            break;
        case 'n':
            if (!parse_u64(optarg, &opts->count)) {
                fprintf(stderr, "ftsync-workload: --count: \"%s\" is not a count\n", optarg);
                return 2;
            }
            break;
        case 's':
            if (!parse_u64(optarg, &opts->seed)) {
                fprintf(stderr, "ftsync-workload: --seed: \"%s\" is not a number\n", optarg);
                return 2;
            }
            break;
        case 'i':
            if (!parse_u64(optarg, &value) || value > INT32_MAX / 2) {
                fprintf(stderr, "ftsync-workload: --id-start: \"%s\" is not an id\n", optarg);
                return 2;
            }
            opts->id_start = (int32_t)value;
            break;
        case 'r':
            errno = 0;
            opts->rate = strtod(optarg, &end);
            if (errno || !end || *end || opts->rate < 0) {
                fprintf(stderr, "ftsync-workload: --rate: \"%s\" is not a rate\n", optarg);
                return 2;
            }
            break;
        case 'm':
            if (!parse_mix(optarg, opts->mix)) {
                return 2;
            }
            break;
        case 'D':
            opts->drop = true;
            break;
        case 'O':
            object_ids = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ftsync-workload: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if ((uint64_t)opts->id_start + opts->count * 10 > INT32_MAX) {
        fprintf(stderr, "ftsync-workload: --id-start plus 10 x --count exceeds a 32-bit id\n");
        return 2;
    }
    return -1; /* go on */
}

/* ---- running -------------------------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void sleep_until(double when)
{
    double wait = when - now_seconds();
    if (wait <= 0) {
        return;
    }
    struct timespec pause = {.tv_sec = (time_t)wait,
                             .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

static op_t pick_op(const unsigned mix[OP_COUNT])
{
    unsigned total = 0;
    for (int op = 0; op < OP_COUNT; op++) {
        total += mix[op];
    }
    uint32_t roll = rng_below(total);
    for (int op = 0; op < OP_COUNT; op++) {
        if (roll < mix[op]) {
            return (op_t)op;
        }
        roll -= mix[op];
    }
    return OP_INSERT;
}

typedef struct {
    app_t *apps; /* by insertion order; index = (id - id_start) / 10 */
    size_t app_count;
    size_t *live; /* indexes of live apps, any order */
    size_t live_count;
} model_t;

static int compare_ids(const void *a, const void *b)
{
    const app_t *x = *(app_t *const *)a;
    const app_t *y = *(app_t *const *)b;
    return (x->id > y->id) - (x->id < y->id);
}

static bool write_report(const char *path, const model_t *model)
{
    FILE *file = fopen(path, "w");
    if (!file) {
        fprintf(stderr, "ftsync-workload: cannot write the report %s: %s\n", path, strerror(errno));
        return false;
    }
    const app_t **sorted = bson_malloc0((model->live_count + 1) * sizeof *sorted);
    for (size_t i = 0; i < model->live_count; i++) {
        sorted[i] = &model->apps[model->live[i]];
    }
    qsort(sorted, model->live_count, sizeof *sorted, compare_ids);
    for (size_t i = 0; i < model->live_count; i++) {
        bson_t doc = BSON_INITIALIZER;
        app_to_bson(sorted[i], &doc, true);
        char *json = bson_as_canonical_extended_json(&doc, NULL);
        fprintf(file, "%s\n", json);
        bson_free(json);
        bson_destroy(&doc);
    }
    bson_free(sorted);
    bool ok = !ferror(file);
    if (fclose(file) != 0) {
        ok = false;
    }
    if (!ok) {
        fprintf(stderr, "ftsync-workload: writing the report %s failed: %s\n", path,
                strerror(errno));
    }
    return ok;
}

static bool fail_write(const char *what, uint64_t step, int32_t id, const bson_error_t *error)
{
    fprintf(stderr,
            "ftsync-workload: operation %" PRIu64 " (%s of _id %" PRId32 ") failed: %s "
            "(domain %u, code %u)\n",
            step, what, id, error->message, error->domain, error->code);
    return false;
}

/* Runs one operation against the server and the model. */
static bool run_one(mongoc_collection_t *coll, model_t *model, const options_t *opts, uint64_t step,
                    uint64_t counts[OP_COUNT])
{
    op_t op = pick_op(opts->mix);
    if (op != OP_INSERT && model->live_count == 0) {
        op = OP_INSERT;
    }
    bson_error_t error;
    bool ok = true;
    if (op == OP_INSERT) {
        app_t *app = &model->apps[model->app_count];
        app_generate(app, opts->id_start + (int32_t)model->app_count * 10, step);
        bson_t doc = BSON_INITIALIZER;
        app_to_bson(app, &doc, true);
        ok = mongoc_collection_insert_one(coll, &doc, NULL, NULL, &error);
        bson_destroy(&doc);
        model->live[model->live_count++] = model->app_count++;
        if (!ok) {
            return fail_write("insert", step, app->id, &error);
        }
    } else {
        size_t slot = rng_below((uint32_t)model->live_count);
        app_t *app = &model->apps[model->live[slot]];
        int32_t target = app->id;
        bson_t filter = BSON_INITIALIZER;
        append_source_id(&filter, "_id", target);
        bson_t body = BSON_INITIALIZER;
        bson_t reply;
        const char *count_field = "matchedCount";
        if (op == OP_UPDATE) {
            build_update(app, step, &body);
            ok = mongoc_collection_update_one(coll, &filter, &body, NULL, &reply, &error);
        } else if (op == OP_REPLACE) {
            app_generate(app, target, step);
            app_to_bson(app, &body, false);
            ok = mongoc_collection_replace_one(coll, &filter, &body, NULL, &reply, &error);
        } else {
            app_clear(app);
            model->live[slot] = model->live[--model->live_count];
            count_field = "deletedCount";
            ok = mongoc_collection_delete_one(coll, &filter, NULL, &reply, &error);
        }
        bson_iter_t iter;
        int64_t changed = -1;
        if (ok && bson_iter_init_find(&iter, &reply, count_field)) {
            changed = bson_iter_as_int64(&iter);
        }
        bson_destroy(&reply);
        bson_destroy(&body);
        bson_destroy(&filter);
        if (!ok) {
            return fail_write(op_names[op], step, target, &error);
        }
        /* Anything but exactly one document means another writer or a lost write: the report
         * would be wrong, so stop here. */
        if (changed != 1) {
            fprintf(stderr,
                    "ftsync-workload: operation %" PRIu64 " (%s of _id %" PRId32 ") reported %s "
                    "%" PRId64 ", expected 1; is something else writing to the collection?\n",
                    step, op_names[op], target, count_field, changed);
            return false;
        }
    }
    counts[op]++;
    return true;
}

int main(int argc, char **argv)
{
    options_t opts;
    int status = parse_options(argc, argv, &opts);
    if (status >= 0) {
        return status;
    }
    rng_state = opts.seed;
    status = 1;

    mongoc_init();
    mongoc_client_t *client = NULL;
    mongoc_collection_t *coll = NULL;
    model_t model = {0};
    uint64_t counts[OP_COUNT] = {0};
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(opts.uri, &error);
    if (!uri) {
        fprintf(stderr, "ftsync-workload: --uri: %s\n", error.message);
        status = 2;
        goto cleanup;
    }
    client = mongoc_client_new_from_uri(uri);
    mongoc_uri_destroy(uri);
    if (!client) {
        fprintf(stderr, "ftsync-workload: cannot create a client for %s\n", opts.uri);
        goto cleanup;
    }
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_set_appname(client, "ftsync-workload");
    coll = mongoc_client_get_collection(client, opts.db, opts.collection);
    if (opts.drop && !mongoc_collection_drop(coll, &error) &&
        !(error.domain == MONGOC_ERROR_SERVER && error.code == 26)) { /* NamespaceNotFound */
        fprintf(stderr, "ftsync-workload: dropping %s.%s failed: %s\n", opts.db, opts.collection,
                error.message);
        goto cleanup;
    }

    /* Each operation inserts at most one application: count bounds the model. */
    model.apps = bson_malloc0((size_t)(opts.count + 1) * sizeof *model.apps);
    model.live = bson_malloc0((size_t)(opts.count + 1) * sizeof *model.live);
    double start = now_seconds();
    for (uint64_t step = 0; step < opts.count; step++) {
        if (opts.rate > 0) {
            sleep_until(start + (double)step / opts.rate);
        }
        if (!run_one(coll, &model, &opts, step, counts)) {
            goto cleanup;
        }
    }
    double elapsed = now_seconds() - start;
    if (opts.report && !write_report(opts.report, &model)) {
        goto cleanup;
    }
    printf("ftsync-workload: inserts=%" PRIu64 " updates=%" PRIu64 " replaces=%" PRIu64
           " deletes=%" PRIu64 " total=%" PRIu64 " documents=%zu elapsed_s=%.3f ops_per_s=%.0f "
           "seed=%" PRIu64 "\n",
           counts[OP_INSERT], counts[OP_UPDATE], counts[OP_REPLACE], counts[OP_DELETE], opts.count,
           model.live_count, elapsed, elapsed > 0 ? (double)opts.count / elapsed : 0.0, opts.seed);
    status = 0;

cleanup:
    for (size_t i = 0; i < model.app_count; i++) {
        app_clear(&model.apps[i]);
    }
    bson_free(model.apps);
    bson_free(model.live);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    mongoc_cleanup();
    return status;
}
