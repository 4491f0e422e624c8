#!/usr/bin/env bash
# end-to-end.sh - ftsync's main job against running servers: starts the MongoDB replica-set
# double (no MongoDB server can be installed here) and fills it with the workload generator,
# then runs `ftsync run` (extract + load) while the workload inserts, updates, replaces and
# deletes; waits until the loaders acknowledged the whole stream, checks that the index holds
# exactly the collection's document count, shows a full-text query, and stops ftsync with
# SIGTERM, expecting exit 0. deploy/local/run.sh calls it after building and starting a local
# Redis and search engine; the integration tests `integration.opensearch.end_to_end` and
# `integration.es1.end_to_end` call it against the test bed.
#
# usage: end-to-end.sh FTSYNC DOUBLE WORKLOAD SCRATCH_DIR TESTBED_ENV
#   TESTBED_ENV is the KEY=VALUE file test/tools/testbed.sh writes (FTSYNC_TEST_REDIS_URL,
#   FTSYNC_TEST_OPENSEARCH_URL, FTSYNC_TEST_ES1_URL). FTSYNC_TEST_ENGINE picks the engine:
#   opensearch (default: typeless, deploy/index/apps.json, whose english analyzer is checked
#   with _analyze) or es1 (Elasticsearch 1.5.2: document type doc, the ES 1.x definition). Any
#   FTSYNC_* setting in the environment overrides the defaults below; FTSYNC_KEEP_RUNNING=1
#   keeps ftsync run going after the check until ^C.
set -Eeuo pipefail

[[ $# -eq 5 ]] || { echo "usage: $0 FTSYNC DOUBLE WORKLOAD SCRATCH_DIR TESTBED_ENV" >&2; exit 2; }
ftsync=$1 double=$2 workload=$3 local_dir=$4 testbed_env=$5
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$local_dir"

trap 'stop_double' EXIT
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
source "$testbed_env"

# OpenSearch 2.19 (the default) is typeless and takes the modern definition
# deploy/index/apps.json; Elasticsearch 1.5 needs a document type and the old-API definition.
engine="${FTSYNC_TEST_ENGINE:-opensearch}"
case "$engine" in
    opensearch)
        engine_url="${FTSYNC_TEST_OPENSEARCH_URL:-}"
        definition="$root/deploy/index/apps.json"
        ;;
    es1)
        engine_url="${FTSYNC_TEST_ES1_URL:-}"
        definition="$root/test/fixtures/apps-index-es1.json"
        export FTSYNC_ES_DOC_TYPE="${FTSYNC_ES_DOC_TYPE:-doc}"
        ;;
    *) echo "FTSYNC_TEST_ENGINE=$engine is neither opensearch nor es1" >&2; exit 2 ;;
esac
if [[ -z "${FTSYNC_ES_URL:-}" && -z "$engine_url" ]]; then
    echo "$testbed_env has no URL for $engine: is that engine running in the test bed?" >&2
    exit 1
fi
echo "search engine: $engine"
export FTSYNC_STATE_REDIS_URL="${FTSYNC_STATE_REDIS_URL:-$FTSYNC_TEST_REDIS_URL}"
export FTSYNC_ES_URL="${FTSYNC_ES_URL:-$engine_url}"
export FTSYNC_ES_INDEX="${FTSYNC_ES_INDEX:-apps}"
export FTSYNC_ES_INDEX_DEFINITION="${FTSYNC_ES_INDEX_DEFINITION:-$definition}"
export FTSYNC_MONGO_URI="${FTSYNC_MONGO_URI:-mongodb://127.0.0.1:$mongo_port/?replicaSet=rs0}"
export FTSYNC_MONGO_DB="${FTSYNC_MONGO_DB:-steam}"
export FTSYNC_MONGO_COLLECTION="${FTSYNC_MONGO_COLLECTION:-apps}"
# The original service's configuration: the index id is the Steam appid in `id`, while `_id` is
# an ObjectId (--object-ids below). Delete events carry only `_id`, so the id map
# (FTSYNC_ID_MAP=auto turns it on) tells extract which index document a delete removes; the
# collection needs no pre-images.
export FTSYNC_ID_FIELD="${FTSYNC_ID_FIELD:-id}"
export FTSYNC_FIELDS="${FTSYNC_FIELDS:-name,short_description,developers,publishers,updated_at}"

echo "== ftsync config"
"$ftsync" config
echo "== ftsync init-index"
"$ftsync" init-index
echo "== ftsync check"
"$ftsync" check
# The index's english_text analyzer really stems and drops stop words: "running games" must
# become the tokens run and game. OpenSearch takes _analyze's arguments as a JSON body; ES 1.x
# as query parameters.
echo "== _analyze: \"running games\" through english_text"
if [[ "$engine" == es1 ]]; then
    analyzed=$(curl -sS "$FTSYNC_ES_URL/$FTSYNC_ES_INDEX/_analyze?analyzer=english_text&text=running+games")
else
    analyzed=$(curl -sS -XPOST "$FTSYNC_ES_URL/$FTSYNC_ES_INDEX/_analyze" -H 'Content-Type: application/json' \
        -d '{"analyzer": "english_text", "text": "running games"}')
fi
tokens=$(grep -o '"token":"[^"]*"' <<<"$analyzed" | cut -d'"' -f4 | tr '\n' ' ')
echo "tokens: $tokens"
if [[ "$tokens" != "run game " ]]; then
    echo "the english_text analyzer of $FTSYNC_ES_INDEX gave \"$tokens\", expected \"run game\": $analyzed" >&2
    exit 1
fi
echo "== ftsync-workload: 2000 Steam-shaped documents into $FTSYNC_MONGO_DB.$FTSYNC_MONGO_COLLECTION"
"$workload" --uri "$FTSYNC_MONGO_URI" --db "$FTSYNC_MONGO_DB" --collection "$FTSYNC_MONGO_COLLECTION" \
    --count 2000 --mix insert=100 --seed 1 --object-ids
stream="ftsync:{${FTSYNC_PIPELINE:-default}}:stream"
redis_port=${FTSYNC_STATE_REDIS_URL##*:}
redis_port=${redis_port%%/*}

echo "== ftsync run (extract + load), while the workload changes the collection"
FTSYNC_ADMIN_ADDR=off "$ftsync" run 2>"$local_dir/ftsync.log" &
run_pid=$!
"$workload" --uri "$FTSYNC_MONGO_URI" --db "$FTSYNC_MONGO_DB" --collection "$FTSYNC_MONGO_COLLECTION" \
    --count 1000 --mix insert=40,update=30,replace=10,delete=20 --seed 2 --id-start 100000 \
    --object-ids

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
if [[ "${E2E_CHECK_BAD_SETTING:-0}" == 1 ]]; then
    # The test also checks that a bad setting stops run before either child starts.
    status=0
    FTSYNC_BULK_MAX_ACTIONS=lots FTSYNC_ADMIN_ADDR=off "$ftsync" run 2>"$local_dir/bad.log" || status=$?
    if [[ $status != 2 ]] || ! grep -q FTSYNC_BULK_MAX_ACTIONS "$local_dir/bad.log"; then
        cat "$local_dir/bad.log" >&2
        echo "ftsync run with a bad setting: exit $status, expected 2 naming the setting" >&2
        exit 1
    fi
    echo "== ftsync run with a bad setting: exit 2, naming FTSYNC_BULK_MAX_ACTIONS"
fi
