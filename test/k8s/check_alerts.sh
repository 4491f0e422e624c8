#!/usr/bin/env bash
# check_alerts.sh - the alerting rules' test: `promtool check rules` and `promtool test rules`
# on deploy/prometheus/ (promtool from Debian's prometheus package, test/k8s/install-tools.sh),
# then what promtool cannot see: every alert has a unit test, every runbook_url names a heading
# of README.md, and every ftsync_* series the rules read is one the admin endpoint exports
# (issue 12's list) and is documented in README.md.
#
# usage: check_alerts.sh SOURCE_DIR
set -Eeuo pipefail
source_dir=$(cd "${1:?usage: check_alerts.sh SOURCE_DIR}" && pwd)
rules="$source_dir/deploy/prometheus/alerts.yml"
tests="$source_dir/deploy/prometheus/alerts_test.yml"
readme="$source_dir/README.md"
failed=0
fail() {
    echo "FAIL  $*"
    failed=1
}

command -v promtool >/dev/null || { echo "promtool is missing: run test/k8s/install-tools.sh (Debian package prometheus)" >&2; exit 1; }
promtool check rules "$rules" || fail "promtool check rules"
(cd "$(dirname "$tests")" && promtool test rules "$(basename "$tests")") || fail "promtool test rules"

# The exported metric names (issue 12's list, also what README documents).
known="ftsync_events_read_total ftsync_actions_queued_total ftsync_items_total
ftsync_dead_letters_total ftsync_bulk_requests_total ftsync_bulk_duration_seconds
ftsync_replication_lag_seconds ftsync_backlog_entries ftsync_pending_entries
ftsync_worker_restarts_total ftsync_history_lost_total ftsync_lease_held ftsync_build_info"

# GitHub's heading anchors: lower case, spaces to '-', punctuation other than '-' and '_' dropped.
anchors=$(sed -n 's/^#\{1,6\} \(.*\)$/\1/p' "$readme" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9 _-]//g; s/ /-/g')

alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$rules")
[[ -n $alerts ]] || fail "no alert found in $rules"
for alert in $alerts; do
    grep -q "alertname: $alert\$" "$tests" || fail "$alert has no unit test in alerts_test.yml"
done
while read -r anchor; do
    grep -qx "${anchor#README.md#}" <<<"$anchors" || fail "runbook_url $anchor names no README.md heading"
done < <(sed -n 's/^ *runbook_url: *//p' "$rules")
[[ $(grep -c 'runbook_url:' "$rules") == $(wc -w <<<"$alerts") ]] || fail "an alert has no runbook_url"
for metric in $(grep -o 'ftsync_[a-z_]*' "$rules" | sort -u); do
    grep -qw "$metric" <<<"$known" || fail "$metric is no metric ftsync exports"
    grep -q "$metric" "$readme" || fail "$metric (read by an alert) is not documented in README.md"
done
if [[ $failed != 0 ]]; then
    echo "check_alerts: FAILED"
    exit 1
fi
echo "check_alerts: $(wc -w <<<"$alerts") alerts, each unit-tested, with a runbook in README.md"
