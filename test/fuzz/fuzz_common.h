/*
 * fuzz_common.h - what every libFuzzer target of test/fuzz/ shares.
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput over one parser of untrusted bytes. The
 * same source is linked twice: with libFuzzer (-DFTSYNC_FUZZ=ON, clang, test/fuzz/run-fuzzers.sh)
 * to search for crashes, and with replay_main.c into a plain unit test that runs the target
 * over every file of its checked-in corpus (test/fuzz/corpus/<name>/), so the corpora and
 * every crash kept there as a regression input run in `ctest -L unit` under the normal
 * sanitizer build. A target must therefore be deterministic, keep no state between inputs
 * beyond set-up done once, and free everything it allocates (LeakSanitizer runs in both).
 * A broken property is reported with fuzz_fail(), which aborts, so both drivers see a crash.
 */
#ifndef FTS_FUZZ_COMMON_H
#define FTS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* The libFuzzer entry point every target defines (declared here for -Wmissing-prototypes). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Sends the logger's lines to /dev/null once per process: targets reach code that logs, and
 * the formatting and redaction should run without flooding the fuzzer's output. */
void fuzz_quiet_logs(void);

/* A NUL-terminated copy of data (bson_free it); embedded NULs are kept, so C-string parsers
 * see the text up to the first one. Never NULL. */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* Reads up to max RESP replies from data with hiredis's own reader (as the adapters get them
 * from a server) into replies[]; returns how many. Stops at the first protocol error or at
 * the end of complete replies. Free each with freeReplyObject. */
size_t fuzz_resp_replies(const uint8_t *data, size_t size, void **replies, size_t max);

/* Prints what property broke and aborts. */
void fuzz_fail(const char *what) __attribute__((noreturn));

#endif
