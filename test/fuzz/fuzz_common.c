/*
 * fuzz_common.c - helpers shared by the fuzz targets (fuzz_common.h).
 */
#include "fuzz_common.h"

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

size_t fuzz_resp_replies(const uint8_t *data, size_t size, void **replies, size_t max)
{
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
