#!/usr/bin/env bash
# record-bulk-fixtures.sh - records the answers of a real OpenSearch 2.19 node to `_bulk`
# requests, for every case ftsync's bulk response judge handles, into
# test/fixtures/bulk/opensearch2-*.json (test/unit/test_bulk_result.c reads them; the README
# beside them lists what was sent for each).
#
#   bash test/tools/record-bulk-fixtures.sh [OUT_DIR]     (default: test/fixtures/bulk)
#
# It starts its own node with test/tools/testbed.sh es-start (so the same launcher and jars as
# the test bed), with settings that make the rare answers reachable on demand:
#   thread_pool.write.size=1, thread_pool.write.queue_size=1   a flood of concurrent bulk
#                                                              requests gets 429s
#   http.max_content_length=16kb                               a larger body gets 413
#   action.auto_create_index=false                             a missing index stays missing
# The index is created from deploy/index/apps.json; every action carries an external version
# built like ftsync's (seconds << 32 | increment). Each file is the response body exactly as
# the node sent it (compact JSON, no trailing newline); the HTTP status is checked here and
# named in the test. Run it again after an OpenSearch upgrade; `took`, uuids and thread pool
# figures change from run to run, the rest does not.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-$root/test/fixtures/bulk}"
scratch="$(mktemp -d /tmp/ftsync-record-bulk-XXXXXX)"
port=$((20000 + RANDOM % 12000))
url="http://127.0.0.1:$port"

# Versions as in the ES 1.x recordings: cluster time 1795428000 / 1795428001 with increments.
v_low=7711300247355392001  # 1795427999.1
v_mid=7711304542322688003  # 1795428000.3
v_high=7711304546617655297 # 1795428001.1

cleanup() {
    bash "$root/test/tools/testbed.sh" es-stop "$scratch" >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT

say() { printf 'record: %s\n' "$*" >&2; }
die() {
    printf 'record: ERROR: %s\n' "$*" >&2
    exit 1
}

FTSYNC_TESTBED_OPENSEARCH_SETTINGS="thread_pool.write.size=1 thread_pool.write.queue_size=1 http.max_content_length=16kb action.auto_create_index=false" \
    bash "$root/test/tools/testbed.sh" es-start "$scratch" "$port" opensearch

# req METHOD PATH [BODY_FILE] -> body on stdout; fails on a transport error.
req() {
    local method=$1 path=$2 body=${3:-}
    if [[ -n $body ]]; then
        curl -sS -X "$method" "$url$path" -H 'Content-Type: application/x-ndjson' --data-binary "@$body"
    else
        curl -sS -X "$method" "$url$path"
    fi
}

# record NAME WANT_STATUS BODY_FILE: POST /_bulk, check the status, keep the body as NAME.
record() {
    local name=$1 want=$2 body=$3 status
    status=$(curl -sS -o "$scratch/answer" -w '%{http_code}' -X POST "$url/_bulk" \
        -H 'Content-Type: application/x-ndjson' --data-binary "@$body")
    [[ $status == "$want" ]] || die "$name: HTTP $status, expected $want: $(head -c 600 "$scratch/answer")"
    cp "$scratch/answer" "$out/$name"
    say "$name: HTTP $status, $(wc -c <"$out/$name") bytes"
}

# index_line ID VERSION [INDEX]; delete_line ID VERSION [INDEX]
index_line() {
    printf '{"index":{"_index":"%s","_id":"%s","version":%s,"version_type":"external"}}\n' "${3:-apps}" "$1" "$2"
}
delete_line() {
    printf '{"delete":{"_index":"%s","_id":"%s","version":%s,"version_type":"external"}}\n' "${3:-apps}" "$1" "$2"
}
doc() { # NAME (JSON-escaped) [UPDATED_AT]
    printf '{"name":"%s","short_description":"Recorded for ftsync","developers":"Studio","publishers":"Publisher","updated_at":"%s"}\n' \
        "$1" "${2:-2026-11-23T10:00:00.000Z}"
}
refresh() { req POST /apps/_refresh >/dev/null; }

say "creating apps from deploy/index/apps.json"
curl -sS -f -X PUT "$url/apps" -H 'Content-Type: application/json' \
    --data-binary "@$root/deploy/index/apps.json" >/dev/null

# What the later cases need in the index: app-2 (to update), app-3 (to delete), app-5.
{
    index_line app-2 "$v_low"; doc "Second app"
    index_line app-3 "$v_low"; doc "Third app"
    index_line app-5 "$v_low"; doc "Fifth app"
} >"$scratch/setup.ndjson"
req POST /_bulk "$scratch/setup.ndjson" >/dev/null
refresh

# 1. success: created, updated, deleted.
{
    index_line app-1 "$v_mid"; doc 'Über \"quoted\" app'
    index_line app-2 "$v_mid"; doc "Second app, updated"
    delete_line app-3 "$v_high"
} >"$scratch/b"
record opensearch2-all-success.json 200 "$scratch/b"

# 2. version conflicts: index with a lower version, index with the same version, delete with
#    a lower version.
{
    index_line app-1 "$v_low"; doc "Older"
    index_line app-1 "$v_mid"; doc "Same"
    delete_line app-2 "$v_low"
} >"$scratch/b"
record opensearch2-version-conflict.json 200 "$scratch/b"

# 3. delete of an id never indexed (404, not_found), delete of an existing one.
{
    delete_line never-indexed "$v_high"
    delete_line app-5 "$v_high"
} >"$scratch/b"
record opensearch2-delete-not-found.json 200 "$scratch/b"

# 4. mapping error in the middle of a batch: updated_at is a date.
{
    index_line app-6 "$v_mid"; doc "Sixth app"
    index_line app-4 "$v_mid"; doc "Fourth app" "last tuesday"
    index_line app-7 "$v_mid"; doc "Seventh app"
} >"$scratch/b"
record opensearch2-partial-failure.json 200 "$scratch/b"

# 5. index missing (action.auto_create_index=false): an index and a delete.
{
    index_line app-1 "$v_mid" missing-apps; doc "Nowhere"
    delete_line app-2 "$v_mid" missing-apps
} >"$scratch/b"
record opensearch2-index-missing.json 200 "$scratch/b"

# 6. write block (index.blocks.write), then a read-only index (index.blocks.read_only).
for block in write read_only; do
    curl -sS -f -X PUT "$url/apps/_settings" -H 'Content-Type: application/json' \
        -d "{\"index.blocks.$block\": true}" >/dev/null
    {
        index_line app-8 "$v_high"; doc "Eighth app"
        delete_line app-1 "$v_high"
    } >"$scratch/b"
    record "opensearch2-$(tr _ - <<<"$block")-block.json" 200 "$scratch/b"
    curl -sS -f -X PUT "$url/apps/_settings" -H 'Content-Type: application/json' \
        -d "{\"index.blocks.$block\": null}" >/dev/null
done

# 7. request-level 400: the body's last line is not terminated by a newline.
printf '%s\n%s' "$(index_line app-9 "$v_high")" "$(doc "Ninth app")" >"$scratch/b"
record opensearch2-request-400.json 400 "$scratch/b"

# 8. request-level 413: a body over http.max_content_length (16 KB).
: >"$scratch/b"
for i in $(seq 1 120); do
    index_line "big-$i" "$v_high" >>"$scratch/b"
    doc "A document that makes the request too large, number $i" >>"$scratch/b"
done
record opensearch2-request-413.json 413 "$scratch/b"

# 9. 429: many concurrent bulk requests against a write pool of one thread and one queue slot.
#    The first answer with an item refused by the write pool (status 429) is kept; with one
#    shard, the whole shard request of a bulk is refused, so all five items are 429.
: >"$scratch/flood.ndjson"
for i in $(seq 1 5); do
    index_line "flood-$i" "$v_high" >>"$scratch/flood.ndjson"
    doc "Flood $i" >>"$scratch/flood.ndjson"
done
found=""
for round in $(seq 1 20); do
    pids=()
    for n in $(seq 1 24); do
        curl -sS -o "$scratch/flood-$n" -w '%{http_code}' -X POST "$url/_bulk" \
            -H 'Content-Type: application/x-ndjson' --data-binary "@$scratch/flood.ndjson" \
            >"$scratch/flood-$n.status" &
        pids+=($!)
    done
    wait "${pids[@]}"
    for n in $(seq 1 24); do
        if [[ $(cat "$scratch/flood-$n.status") == 200 ]] && grep -q '"status":429' "$scratch/flood-$n"; then
            found="$scratch/flood-$n"
            break
        fi
    done
    [[ -z $found ]] || break
done
[[ -n $found ]] || die "no 429 item after 20 rounds of 24 concurrent bulk requests"
cp "$found" "$out/opensearch2-rejected-execution.json"
say "opensearch2-rejected-execution.json: HTTP 200 with 429 items (round $round)"
say "done: recorded into $out"
