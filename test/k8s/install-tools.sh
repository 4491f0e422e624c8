#!/usr/bin/env bash
# install-tools.sh - what the container and Kubernetes tests (test/k8s/) need beyond the build:
#
#   1. Debian packages: python3-yaml (the pod simulator parses manifests with PyYAML),
#      prometheus (its promtool runs `promtool test rules` on deploy/prometheus/), and
#      redis-tools (redis-cli, which the simulator reads Redis with).
#   2. The npm packages pinned by test/k8s/package.json + package-lock.json (the Dockerfile
#      parser and linter, the Kubernetes OpenAPI schema validators), installed with `npm ci`
#      into $FTSYNC_DEPS_DIR/k8s-tools (default /opt/ftsync-deps/k8s-tools), never into the
#      source tree. The node scripts of test/k8s load them from there (FTSYNC_K8S_TOOLS).
#
# kubectl (with its built-in kustomize) is not installed here: no registry this project uses
# carries it; the machine image provides it and test/k8s/simulate_pods.py fails with a clear
# message when it is missing.
#
# deploy/local/install-deps.sh calls this script as one step. Idempotent: a second run checks
# and changes nothing (npm ci runs again only when the lock file changed).
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deps_dir="${FTSYNC_DEPS_DIR:-/opt/ftsync-deps}"
tools_dir="$deps_dir/k8s-tools"
apt_packages=(python3-yaml prometheus redis-tools)

say() { printf 'install-tools (k8s): %s\n' "$*"; }
die() {
    printf 'install-tools (k8s): ERROR: %s\n' "$*" >&2
    exit 1
}

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }

missing=()
for package in "${apt_packages[@]}"; do
    installed "$package" || missing+=("$package")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    runner=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install ${missing[*]}"
        runner=(sudo)
    fi
    say "apt-get install ${missing[*]}"
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || die "apt-get update failed"
    # --no-install-recommends: promtool is all we want from prometheus, not its exporters.
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null || die "apt-get install failed for: ${missing[*]}"
    # Debian's package starts a Prometheus server where systemd runs; the tests need only
    # promtool, and a server on :9090 would be in every later test's way.
    if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
        "${runner[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
else
    say "Debian packages already installed: ${apt_packages[*]}"
fi
command -v promtool >/dev/null 2>&1 || die "promtool is missing after installing prometheus"

command -v npm >/dev/null 2>&1 || die "npm is missing (deploy/local/install-deps.sh installs it first)"
lock_sum="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -r $tools_dir/lock.sha256 && "$(cat "$tools_dir/lock.sha256")" == "$lock_sum" \
    && -d $tools_dir/node_modules/dockerfile-ast ]]; then
    say "npm tools already installed in $tools_dir"
    exit 0
fi
mkdir -p "$tools_dir" || die "cannot create $tools_dir (set FTSYNC_DEPS_DIR to a writable place?)"
rm -f "$tools_dir/lock.sha256"
cp "$here/package.json" "$here/package-lock.json" "$tools_dir/"
say "npm ci in $tools_dir"
# --ignore-scripts: none of these packages needs an install script; this keeps it so.
(cd "$tools_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) 2>&1 \
    | sed '/^[[:space:]]*$/d; s/^/install-tools (k8s):   npm: /' \
    || die "npm ci failed (is the npm registry reachable?)"
[[ -d $tools_dir/node_modules/kubernetes-models ]] || die "npm ci did not install kubernetes-models"
echo "$lock_sum" >"$tools_dir/lock.sha256"
say "npm tools installed in $tools_dir"
