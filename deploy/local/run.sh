#!/usr/bin/env bash
# run.sh - ftsync's main job on one machine, from a fresh clone: installs the dependencies,
# builds ftsync, starts a local redis-server and Elasticsearch (the same test bed the tests use,
# kept under $FTSYNC_LOCAL_DIR) and the MongoDB replica-set double (no MongoDB server can be
# installed here), fills the collection with the workload generator, and runs `ftsync run`
# (extract and load together): the collection is snapshotted, its changes followed, and
# everything bulk-indexed into Elasticsearch. It waits until the loaders acknowledged every
# queued entry, checks that the index holds exactly as many documents as the collection, shows
# a full-text query, and stops ftsync with SIGTERM.
#
# Environment:
#   FTSYNC_LOCAL_DIR   where the local servers keep data and logs (default /tmp/ftsync-local)
#   FTSYNC_KEEP_RUNNING=1  after the check, keep ftsync run (and the servers) going until ^C
#   FTSYNC_KEEP_SERVERS=1  leave the servers running afterwards (stop them with
#                      bash test/tools/testbed.sh stop "$FTSYNC_LOCAL_DIR")
#   any FTSYNC_* setting (see `ftsync config --help`) overrides the local defaults below.
set -Eeuo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
local_dir="${FTSYNC_LOCAL_DIR:-/tmp/ftsync-local}"
build="$root/build"

bash "$root/deploy/local/install-deps.sh"

echo "== build ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target ftsync ftsync-mongo-double ftsync-workload
ftsync="$build/cmd/ftsync"
double="$build/test/double/ftsync-mongo-double"
workload="$build/test/tools/ftsync-workload"

echo "== local servers ($local_dir)"
bash "$root/test/tools/testbed.sh" stop "$local_dir" >/dev/null 2>&1 || true
bash "$root/test/tools/testbed.sh" start "$local_dir"
if [[ "${FTSYNC_KEEP_SERVERS:-0}" != 1 ]]; then
    trap 'bash "$root/test/tools/testbed.sh" stop "$local_dir" >/dev/null; stop_double' EXIT
else
    trap 'stop_double' EXIT
fi
double_pid=""
run_pid=""
stop_double() {
    [[ -z "$run_pid" ]] || kill "$run_pid" 2>/dev/null || true
    [[ -z "$double_pid" ]] || kill "$double_pid" 2>/dev/null || true
}

# The MongoDB replica-set double, on a free port it reports in its one ready line.
"$double" --port 0 >"$local_dir/double.out" 2>"$local_dir/double.log" &
double_pid=$!
for _ in $(seq 100); do
    grep -q 'ready port=' "$local_dir/double.out" 2>/dev/null && break
    sleep 0.1
done
mongo_port=$(sed -n 's/.*ready port=\([0-9]*\).*/\1/p' "$local_dir/double.out")
[[ -n "$mongo_port" ]] || { tail -20 "$local_dir/double.log"; echo "the MongoDB double did not start" >&2; exit 1; }
echo "MongoDB double (test infrastructure) on 127.0.0.1:$mongo_port"
# shellcheck disable=SC1091 # written by testbed.sh at run time
source "$local_dir/testbed.env"

# The local test bed runs Elasticsearch 1.5, which needs a document type and the old-API
# index definition; a modern cluster takes deploy/index/apps.json and no type.
export FTSYNC_STATE_REDIS_URL="${FTSYNC_STATE_REDIS_URL:-$FTSYNC_TEST_REDIS_URL}"
export FTSYNC_ES_URL="${FTSYNC_ES_URL:-$FTSYNC_TEST_ES_URL}"
export FTSYNC_ES_INDEX="${FTSYNC_ES_INDEX:-apps}"
export FTSYNC_ES_DOC_TYPE="${FTSYNC_ES_DOC_TYPE:-doc}"
export FTSYNC_ES_INDEX_DEFINITION="${FTSYNC_ES_INDEX_DEFINITION:-$root/test/fixtures/apps-index-es1.json}"
export FTSYNC_MONGO_URI="${FTSYNC_MONGO_URI:-mongodb://127.0.0.1:$mongo_port/?replicaSet=rs0}"
export FTSYNC_MONGO_DB="${FTSYNC_MONGO_DB:-steam}"
export FTSYNC_MONGO_COLLECTION="${FTSYNC_MONGO_COLLECTION:-apps}"
# The workload's documents carry the Steam appid both as `id` and as `_id`, so the index ids are
# the original service's; `_id` (unlike `id`) is in every delete event, pre-images or not.
export FTSYNC_ID_FIELD="${FTSYNC_ID_FIELD:-_id}"
export FTSYNC_FIELDS="${FTSYNC_FIELDS:-name,short_description,developers,publishers,updated_at}"

echo "== ftsync config"
"$ftsync" config
echo "== ftsync init-index"
"$ftsync" init-index
echo "== ftsync check"
"$ftsync" check
echo "== ftsync-workload: 2000 Steam-shaped documents into $FTSYNC_MONGO_DB.$FTSYNC_MONGO_COLLECTION"
"$workload" --uri "$FTSYNC_MONGO_URI" --db "$FTSYNC_MONGO_DB" --collection "$FTSYNC_MONGO_COLLECTION" \
    --count 2000 --mix insert=100 --seed 1
stream="ftsync:{${FTSYNC_PIPELINE:-default}}:stream"
redis_port=${FTSYNC_STATE_REDIS_URL##*:}
redis_port=${redis_port%%/*}

echo "== ftsync run (extract + load), while the workload changes the collection"
FTSYNC_ADMIN_ADDR=off "$ftsync" run 2>"$local_dir/ftsync.log" &
run_pid=$!
"$workload" --uri "$FTSYNC_MONGO_URI" --db "$FTSYNC_MONGO_DB" --collection "$FTSYNC_MONGO_COLLECTION" \
    --count 1000 --mix insert=40,update=30,replace=10,delete=20 --seed 2 --id-start 100000

# Done when the collection's last change is queued and the loaders acknowledged everything:
# the group has read the whole stream (lag 0) and holds nothing pending.
group_field() { # field name -> value from XINFO GROUPS (the loaders group)
    redis-cli -p "$redis_port" XINFO GROUPS "$stream" 2>/dev/null |
        awk -v f="$1" 'prev == f { print; exit } { prev = $0 }'
}
collection_count() {
    /usr/bin/python3 -c 'import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)
print(c[sys.argv[2]][sys.argv[3]].count_documents({}))' \
        "$FTSYNC_MONGO_URI" "$FTSYNC_MONGO_DB" "$FTSYNC_MONGO_COLLECTION"
}
index_count() {
    curl -s -XPOST "$FTSYNC_ES_URL/$FTSYNC_ES_INDEX/_refresh" >/dev/null
    curl -s "$FTSYNC_ES_URL/$FTSYNC_ES_INDEX/_count" | sed -n 's/.*"count":\([0-9]*\).*/\1/p'
}
expected=$(collection_count)
echo "waiting for the index to hold the collection's $expected documents"
indexed=""
for _ in $(seq 240); do
    if ! kill -0 "$run_pid" 2>/dev/null; then
        tail -30 "$local_dir/ftsync.log" >&2
        echo "ftsync run ended early" >&2
        exit 1
    fi
    if [[ "$(group_field pending)" == 0 && "$(group_field lag)" == 0 ]]; then
        indexed=$(index_count)
        [[ "$indexed" == "$expected" ]] && break
    fi
    sleep 0.5
done
echo "stream $stream: $(redis-cli -p "$redis_port" XLEN "$stream") entries, pending $(group_field pending), lag $(group_field lag)"
echo "collection: $expected documents; index $FTSYNC_ES_INDEX: ${indexed:-?} documents"
if [[ "$indexed" != "$expected" ]]; then
    tail -30 "$local_dir/ftsync.log" >&2
    echo "the index does not match the collection" >&2
    exit 1
fi
echo "== a full-text query: name:dark"
curl -s "$FTSYNC_ES_URL/$FTSYNC_ES_INDEX/_search?q=name:dark&size=3&_source=name" |
    grep -o '"name":"[^"]*"' | head -3 || true
"$ftsync" reset-token --show
if [[ "${FTSYNC_KEEP_RUNNING:-0}" == 1 ]]; then
    echo "== ftsync run keeps going (log: $local_dir/ftsync.log); ^C stops it"
    wait "$run_pid"
    run_pid=""
    exit 0
fi
kill -TERM "$run_pid"
wait "$run_pid"
run_pid=""
echo "== done: the index is in step with the collection; ftsync stopped cleanly (log: $local_dir/ftsync.log)"
