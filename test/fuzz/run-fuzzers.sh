#!/usr/bin/env bash
# run-fuzzers.sh - builds the libFuzzer targets of test/fuzz/ with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (-DFTSYNC_FUZZ=ON) and runs each for a bounded time, starting
# from its checked-in seed corpus (test/fuzz/corpus/<target>/). Fails on the first target
# that crashes, leaks, trips a sanitizer or breaks a property (fuzz_fail), printing the
# reproducer and how to keep it as a regression input. test/run-all.sh runs it after the
# CTest tests.
#
# The checked-in corpora are never written: each run grows a scratch copy in the build
# directory. A crash input, once fixed, is kept as test/fuzz/corpus/<target>/regress-<what>,
# and the unit test unit.fuzz_corpus.<target> replays it on every `ctest -L unit`.
#
# Environment:
#   FTSYNC_FUZZ_BUILD_DIR   build directory (default: .build/fuzz in the repository)
#   FTSYNC_FUZZ_SECONDS     seconds per target (default 20; 6 targets: about 2 minutes)
#   FTSYNC_FUZZ_TARGETS     space-separated subset of the targets (default: all)
#   FTSYNC_FUZZ_JOBS        parallel build jobs (default: nproc)
set -Eeuo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${FTSYNC_FUZZ_BUILD_DIR:-$root/.build/fuzz}"
seconds="${FTSYNC_FUZZ_SECONDS:-20}"
all_targets=(bson_transform bulk_result stream_entry settings frame resume_token)
read -r -a targets <<<"${FTSYNC_FUZZ_TARGETS:-${all_targets[*]}}"

command -v clang >/dev/null 2>&1 \
    || { echo "run-fuzzers: clang is missing (deploy/local/install-deps.sh installs it)" >&2; exit 1; }

echo "== fuzz targets: clang + libFuzzer + ASan/UBSan in $build"
# Debug keeps assert() on (internal preconditions are asserted); -O1 makes fuzzing fast enough.
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS=-O1 -DFTSYNC_FUZZ=ON -DFTSYNC_SANITIZE=ON -DFTSYNC_WERROR=ON >/dev/null
cmake --build "$build" -j "${FTSYNC_FUZZ_JOBS:-$(nproc)}" \
    --target "${targets[@]/#/fuzz_}"

# libFuzzer writes the crash input itself, so ASan must return to it rather than abort, and
# leaks are checked after every input. UBSan is fatal at build time (-fno-sanitize-recover).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

status=0
for target in "${targets[@]}"; do
    seeds="$root/test/fuzz/corpus/$target"
    work="$build/fuzz-corpus/$target"
    artifacts="$build/fuzz-artifacts/$target"
    log="$build/fuzz-logs/$target.log"
    rm -rf "$work" "$artifacts"
    mkdir -p "$work" "$artifacts" "$(dirname "$log")"
    [[ -d $seeds ]] || { echo "run-fuzzers: no seed corpus $seeds" >&2; exit 1; }
    echo "== fuzz $target for ${seconds}s (seeds: $(find "$seeds" -type f | wc -l))"
    if "$build/test/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$work" "$seeds" >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" \
            | sed "s/^/   $target: /" || true
        continue
    fi
    status=1
    echo "run-fuzzers: $target FAILED; the end of its log ($log):" >&2
    tail -n 60 "$log" >&2
    for reproducer in "$artifacts"/*; do
        [[ -f $reproducer ]] || continue
        echo "run-fuzzers: reproducer $reproducer ($(stat -c %s "$reproducer") bytes), base64:" >&2
        base64 -w 76 "$reproducer" >&2
        echo "run-fuzzers: replay it: $build/test/fuzz/fuzz_$target $reproducer" >&2
        echo "run-fuzzers: once fixed, keep it: cp $reproducer" \
            "$root/test/fuzz/corpus/$target/regress-<what-it-broke>" >&2
    done
    break
done
exit "$status"
