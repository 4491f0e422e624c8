#!/usr/bin/env bash
# run.sh - ftsync's main job on one machine, from a fresh clone: installs the dependencies,
# builds ftsync, starts a local redis-server and OpenSearch 2.19 (the same test bed the tests
# use, kept under $FTSYNC_LOCAL_DIR) and the MongoDB replica-set double (no MongoDB server can
# be installed here), fills the collection with the workload generator, and runs `ftsync run`
# (extract and load together): the collection is snapshotted, its changes followed, and
# everything bulk-indexed into the index made from deploy/index/apps.json (its english
# analyzer checked with _analyze). It waits until the loaders acknowledged every queued entry,
# checks that the index holds exactly as many documents as the collection, shows a full-text
# query, and stops ftsync with SIGTERM.
#
# Environment:
#   FTSYNC_LOCAL_ENGINE  opensearch (default) or es1: Elasticsearch 1.5.2, the legacy engine
#                      (document type doc, test/fixtures/apps-index-es1.json)
#   FTSYNC_LOCAL_DIR   where the local servers keep data and logs (default /tmp/ftsync-local)
#   FTSYNC_KEEP_RUNNING=1  after the check, keep ftsync run (and the servers) going until ^C
#   FTSYNC_KEEP_SERVERS=1  leave the servers running afterwards (stop them with
#                      bash test/tools/testbed.sh stop "$FTSYNC_LOCAL_DIR")
#   any FTSYNC_* setting (see `ftsync config --help`) overrides the local defaults below.
set -Eeuo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
local_dir="${FTSYNC_LOCAL_DIR:-/tmp/ftsync-local}"
engine="${FTSYNC_LOCAL_ENGINE:-opensearch}"
case "$engine" in
    opensearch | es1) ;;
    *) echo "FTSYNC_LOCAL_ENGINE=$engine is neither opensearch nor es1" >&2; exit 2 ;;
esac
build="$root/.build/run"

bash "$root/deploy/local/install-deps.sh"

echo "== build ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target ftsync ftsync-mongo-double ftsync-workload
ftsync="$build/cmd/ftsync"
double="$build/test/double/ftsync-mongo-double"
workload="$build/test/tools/ftsync-workload"

echo "== local servers: redis-server and $engine ($local_dir)"
bash "$root/test/tools/testbed.sh" stop "$local_dir" >/dev/null 2>&1 || true
bash "$root/test/tools/testbed.sh" start "$local_dir" "$engine"
if [[ "${FTSYNC_KEEP_SERVERS:-0}" != 1 ]]; then
    trap 'bash "$root/test/tools/testbed.sh" stop "$local_dir" >/dev/null' EXIT
fi
FTSYNC_TEST_ENGINE="$engine" bash "$root/deploy/local/end-to-end.sh" "$ftsync" "$double" "$workload" "$local_dir" \
    "$local_dir/testbed.env"
