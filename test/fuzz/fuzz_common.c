/*
 * fuzz_common.c - helpers shared by the fuzz targets (fuzz_common.h).
 */
#include "fuzz_common.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>
#include <hiredis/hiredis.h>

#include "log.h"

void fuzz_quiet_logs(void)
{
    static FILE *sink;
    if (!sink) {
        /* Kept open for the life of the process: the logger borrows the stream. */
        sink = fopen("/dev/null", "w");
        if (!sink) {
            fuzz_fail("cannot open /dev/null");
        }
        fts_log_set_stream(sink);
        fts_log_set_level(FTS_LOG_DEBUG);
    }
}

char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *text = bson_malloc(size + 1);
    if (size > 0) {
        memcpy(text, data, size);
    }
    text[size] = '\0';
    return text;
}

/* Debian 12's hiredis (0.14) allocates an array of whatever size a "*<n>" header names before
 * any element arrives (hiredis 1.x caps it with maxelements). The Redis server is trusted not
 * to do that, and the parsers under test only ever see arrays that arrived whole, so inputs
 * with a larger header are skipped instead of exhausting the fuzzer's memory. */
#define RESP_ARRAY_MAX 4096

static bool resp_headers_fit(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (data[i] != '*' || (i > 0 && data[i - 1] != '\n')) {
            continue;
        }
        uint64_t n = 0;
        for (size_t j = i + 1; j < size && data[j] >= '0' && data[j] <= '9'; j++) {
            n = n * 10 + (uint64_t)(data[j] - '0');
            if (n > RESP_ARRAY_MAX) {
                return false;
            }
        }
    }
    return true;
}

size_t fuzz_resp_replies(const uint8_t *data, size_t size, void **replies, size_t max)
{
    if (!resp_headers_fit(data, size)) {
        return 0;
    }
    redisReader *reader = redisReaderCreate();
    if (!reader) {
        fuzz_fail("redisReaderCreate");
    }
    size_t count = 0;
    if (redisReaderFeed(reader, (const char *)data, size) == REDIS_OK) {
        while (count < max) {
            void *reply = NULL;
            if (redisReaderGetReply(reader, &reply) != REDIS_OK || !reply) {
                break;
            }
            replies[count++] = reply;
        }
    }
    redisReaderFree(reader);
    return count;
}

void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz property broken: %s\n", what);
    abort();
}
