#!/usr/bin/env bash
# run.sh - ftsync on one machine, from a fresh clone: installs the dependencies, builds ftsync,
# starts a local redis-server and Elasticsearch (the same test bed the tests use, kept under
# $FTSYNC_LOCAL_DIR), and runs ftsync against them.
#
# What ftsync can do today (README.md says the same): print its effective configuration,
# create the index from its definition, and check that Redis and Elasticsearch answer. The
# pipeline itself (extract, load, run) is not built yet; this script grows with it.
#
# Environment:
#   FTSYNC_LOCAL_DIR   where the local servers keep data and logs (default /tmp/ftsync-local)
#   FTSYNC_KEEP_SERVERS=1  leave the servers running afterwards (stop them with
#                      bash test/tools/testbed.sh stop "$FTSYNC_LOCAL_DIR")
#   any FTSYNC_* setting (see `ftsync config --help`) overrides the local defaults below.
set -Eeuo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
local_dir="${FTSYNC_LOCAL_DIR:-/tmp/ftsync-local}"
build="$root/build"

bash "$root/deploy/local/install-deps.sh"

echo "== build ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFTSYNC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)"
ftsync="$build/cmd/ftsync"

echo "== local servers ($local_dir)"
bash "$root/test/tools/testbed.sh" stop "$local_dir" >/dev/null 2>&1 || true
bash "$root/test/tools/testbed.sh" start "$local_dir"
if [[ "${FTSYNC_KEEP_SERVERS:-0}" != 1 ]]; then
    trap 'bash "$root/test/tools/testbed.sh" stop "$local_dir" >/dev/null' EXIT
fi
# shellcheck disable=SC1091 # written by testbed.sh at run time
source "$local_dir/testbed.env"

# The local test bed runs Elasticsearch 1.5, which needs a document type and the old-API
# index definition; a modern cluster takes deploy/index/apps.json and no type.
export FTSYNC_STATE_REDIS_URL="${FTSYNC_STATE_REDIS_URL:-$FTSYNC_TEST_REDIS_URL}"
export FTSYNC_ES_URL="${FTSYNC_ES_URL:-$FTSYNC_TEST_ES_URL}"
export FTSYNC_ES_INDEX="${FTSYNC_ES_INDEX:-apps}"
export FTSYNC_ES_DOC_TYPE="${FTSYNC_ES_DOC_TYPE:-doc}"
export FTSYNC_ES_INDEX_DEFINITION="${FTSYNC_ES_INDEX_DEFINITION:-$root/test/fixtures/apps-index-es1.json}"
export FTSYNC_MONGO_URI="${FTSYNC_MONGO_URI:-mongodb://127.0.0.1:27017/?replicaSet=rs0}"
export FTSYNC_MONGO_DB="${FTSYNC_MONGO_DB:-steam}"
export FTSYNC_MONGO_COLLECTION="${FTSYNC_MONGO_COLLECTION:-apps}"
export FTSYNC_ID_FIELD="${FTSYNC_ID_FIELD:-id}"
export FTSYNC_FIELDS="${FTSYNC_FIELDS:-name,short_description,developers,publishers,updated_at}"

echo "== ftsync config"
"$ftsync" config
echo "== ftsync init-index"
"$ftsync" init-index
echo "== ftsync check"
"$ftsync" check
echo "== done: configuration valid, index ready, servers answer (the pipeline is not built yet)"
