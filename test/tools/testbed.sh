#!/usr/bin/env bash
# testbed.sh - starts and stops the servers the integration tests run against: one
# redis-server and the search engines (see "Building and testing" in README.md), each on a free
# loopback port, with all their data, logs and pid files in a scratch directory. Two engines:
#   opensearch  OpenSearch 2.19.6 (the default: typeless, the modern API), from the Maven
#               Central jars install-deps.sh copied, started by test/tools/opensearch/
#               OpenSearchLauncher.java with a 512 MB heap
#   es1         Elasticsearch 1.5.2 (the legacy engine: typed API), patched for Java 17, 1 GB heap
#
#   testbed.sh start DIR [ENGINE]
#                          start redis-server and ENGINE (default opensearch), wait until they
#                          answer, write DIR/testbed.env
#   testbed.sh engine-start DIR ENGINE
#                          add ENGINE to the test bed started in DIR (its lines join
#                          testbed.env); the CTest fixture `testbed_es1` does this for es1
#   testbed.sh engine-stop DIR ENGINE
#                          stop that engine again and drop its lines from testbed.env
#   testbed.sh stop DIR    stop everything started from DIR (TERM, then KILL after 20 s); fine
#                          if already stopped
#   testbed.sh es-start DIR PORT [ENGINE]
#                          start only one node of ENGINE (default: $FTSYNC_TEST_ENGINE, else
#                          opensearch), HTTP on 127.0.0.1:PORT, data in DIR/es, and wait until
#                          it answers. A node started before from DIR (and stopped) comes back
#                          with its data: the engine and the cluster name (which names ES 1.x's
#                          data directory) are kept in DIR/es, and the log is appended to. For
#                          tests that take the engine away and bring it back
#                          (test/support/es_server.c), and for record-bulk-fixtures.sh
#   testbed.sh es-stop DIR stop that node (TERM, then KILL after 20 s); its data stays
#
# CTest runs these as the `testbed` and `testbed_es1` fixtures (test/CMakeLists.txt);
# test/support/testbed.c reads DIR/testbed.env, whose lines are:
#   FTSYNC_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#   FTSYNC_TEST_OPENSEARCH_URL=http://127.0.0.1:PORT     (when OpenSearch runs)
#   FTSYNC_TEST_ES1_URL=http://127.0.0.1:PORT            (when Elasticsearch 1.5 runs)
#   FTSYNC_TESTBED_REDIS_PID_FILE=DIR/redis/redis.pid   (and _REDIS_LOG, _OPENSEARCH_PID_FILE,
#                                                        _OPENSEARCH_LOG, _ES1_PID_FILE, _ES1_LOG)
# A test picks its engine with FTSYNC_TEST_ENGINE=opensearch|es1.
#
# A server that dies or is not ready in time fails `start` with the last lines of its log on
# stderr, and whatever was started is stopped again. Both engines come from
# deploy/local/install-deps.sh; keep the paths below in step with it.
#
# Environment:
#   FTSYNC_DEPS_DIR               where install-deps.sh put the engines (/opt/ftsync-deps)
#   FTSYNC_TESTBED_JAVA           java binary to use (default: OpenJDK 17 from Debian)
#   FTSYNC_TESTBED_ES_JAVA_OPTS   extra JVM options for either engine (debugging)
#   FTSYNC_TESTBED_OPENSEARCH_SETTINGS
#                                 extra OpenSearch node settings, "key=value key=value"
#                                 (record-bulk-fixtures.sh: a tiny write queue, a small
#                                 http.max_content_length)
#   FTSYNC_TESTBED_TIMEOUT        seconds to wait for the servers to be ready (120)
#   FTSYNC_TESTBED_ES_OWNER       es-start only: a pid; a watchdog kills the node once that
#                                 process is gone (a test killed by CTest's timeout leaves no
#                                 node behind)
set -euo pipefail

readonly DEPS_DIR="${FTSYNC_DEPS_DIR:-/opt/ftsync-deps}"
readonly ES_HOME="$DEPS_DIR/elasticsearch/home"
readonly ES_JAR="$ES_HOME/lib/elasticsearch-1.5.2.jar"
readonly ES_PATCH_DIR="$DEPS_DIR/elasticsearch/java17-patch"
readonly ES_PATCH_CLASS="$ES_PATCH_DIR/org/elasticsearch/monitor/jvm/JvmInfo.class"
readonly ES_MAIN_CLASS="org.elasticsearch.bootstrap.Elasticsearch"
readonly OS_LIB="$DEPS_DIR/opensearch/lib"
readonly OS_JAR="$OS_LIB/opensearch-2.19.6.jar"
readonly OS_LAUNCHER_DIR="$DEPS_DIR/opensearch/launcher"
readonly OS_MAIN_CLASS="OpenSearchLauncher"
readonly ENGINES=(opensearch es1)
readonly READY_TIMEOUT="${FTSYNC_TESTBED_TIMEOUT:-120}"
readonly STOP_TIMEOUT=20
readonly LOG_TAIL_LINES=40
# Ports are drawn from below Linux's ephemeral range (32768-60999), so they do not collide
# with the source ports of outgoing connections.
readonly PORT_MIN=20000
readonly PORT_SPAN=12000
# How often a start is retried with new ports when another process took the port first.
readonly START_ATTEMPTS=3

# Set by the start functions, read by the others.
TESTBED_DIR=""
REDIS_PORT=""
ES_HTTP_PORT=""
ES_TRANSPORT_PORT=""
ES_CLUSTER_NAME=""
START_COMPLETE=0
# es-start: keep the cluster name and the log of an earlier node started from the same DIR.
ES_KEEP_STATE=0
# The engine the node functions below act on (select_engine): its name, what its process's
# command line contains, the words for messages, and the subdirectory of DIR it lives in.
ENGINE=""
ES_MARKER=""
ES_LABEL=""
ES_SUBDIR=""

say() { printf 'testbed: %s\n' "$*" >&2; }

die() {
    printf 'testbed: ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    printf 'usage: %s start DIR [ENGINE] | stop DIR | engine-start|engine-stop DIR ENGINE\n' "${0##*/}" >&2
    printf '       %s es-start DIR PORT [ENGINE] | es-stop DIR\n' "${0##*/}" >&2
    printf '       ENGINE: opensearch (default) or es1\n' >&2
    exit 2
}

# select_engine NAME [SUBDIR]: the engine the node functions act on; its files live in
# DIR/SUBDIR (default: DIR/NAME).
select_engine() {
    case "$1" in
        opensearch)
            ES_MARKER="$OS_MAIN_CLASS"
            ES_LABEL="opensearch"
            ;;
        es1)
            ES_MARKER="$ES_MAIN_CLASS"
            ES_LABEL="elasticsearch 1.5"
            ;;
        *) die "unknown engine '$1' (opensearch or es1)" ;;
    esac
    ENGINE=$1
    ES_SUBDIR="${2:-$1}"
}

# The prefix of an engine's lines in testbed.env: OPENSEARCH or ES1.
engine_key() { tr '[:lower:]' '[:upper:]' <<<"$ENGINE"; }

redis_dir() { echo "$TESTBED_DIR/redis"; }
redis_pid_file() { echo "$TESTBED_DIR/redis/redis.pid"; }
redis_log() { echo "$TESTBED_DIR/redis/redis.log"; }
es_dir() { echo "$TESTBED_DIR/$ES_SUBDIR"; }
es_pid_file() { echo "$TESTBED_DIR/$ES_SUBDIR/node.pid"; }
es_log() { echo "$TESTBED_DIR/$ES_SUBDIR/node.log"; }
es_cluster_name_file() { echo "$TESTBED_DIR/$ES_SUBDIR/cluster.name"; }
es_engine_file() { echo "$TESTBED_DIR/$ES_SUBDIR/engine"; }
env_file() { echo "$TESTBED_DIR/testbed.env"; }

# The Java 17 that both engines run on: Debian's OpenJDK 17 if present, else `java`.
find_java() {
    if [[ -n "${FTSYNC_TESTBED_JAVA:-}" ]]; then
        echo "$FTSYNC_TESTBED_JAVA"
        return 0
    fi
    local arch candidate
    arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
    candidate="/usr/lib/jvm/java-17-openjdk-$arch/bin/java"
    if [[ -x $candidate ]]; then
        echo "$candidate"
    else
        command -v java || true
    fi
}

require_dependencies() {
    local missing=() tool item
    for tool in redis-server redis-cli curl setsid timeout awk; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [[ -n "$(find_java)" ]] || missing+=("java (OpenJDK 17)")
    if [[ $ENGINE == es1 ]]; then
        [[ -f $ES_JAR ]] || missing+=("Elasticsearch 1.5.2 ($ES_JAR)")
        [[ -f $ES_PATCH_CLASS ]] || missing+=("the Java 17 patch for Elasticsearch ($ES_PATCH_CLASS)")
    elif [[ $ENGINE == opensearch ]]; then
        [[ -f $OS_JAR ]] || missing+=("OpenSearch 2.19.6 ($OS_JAR)")
        [[ -f $OS_LAUNCHER_DIR/$OS_MAIN_CLASS.class ]] \
            || missing+=("the OpenSearch launcher ($OS_LAUNCHER_DIR/$OS_MAIN_CLASS.class)")
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        for item in "${missing[@]}"; do
            say "missing: $item"
        done
        die "the test bed's dependencies are not installed; run (as root): bash deploy/local/install-deps.sh"
    fi
}

# True if something listens on TCP port $1 (IPv4 or IPv6). Reads /proc/net/tcp{,6} directly:
# no dependency on ss/netstat, and the same view any bind in this network namespace has.
is_port_listening() {
    local hex_port table
    hex_port="$(printf '%04X' "$1")"
    for table in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $table ]] || continue
        # Fields: sl local_address(ip:port) rem_address st ...; st 0A is LISTEN.
        if awk -v port="$hex_port" 'NR > 1 { split($2, local_address, ":");
                if (local_address[2] == port && $4 == "0A") { found = 1; exit } }
                END { exit !found }' "$table"; then
            return 0
        fi
    done
    return 1
}

# Prints a port that nothing listens on and that is not among the arguments.
pick_free_port() {
    local port taken attempt
    for ((attempt = 0; attempt < 200; attempt++)); do
        port=$((PORT_MIN + (RANDOM * 32768 + RANDOM) % PORT_SPAN))
        for taken in "$@"; do
            [[ $port == "$taken" ]] && continue 2
        done
        is_port_listening "$port" || {
            echo "$port"
            return 0
        }
    done
    die "no free port found in $PORT_MIN-$((PORT_MIN + PORT_SPAN - 1))"
}

# True if pid $1 is a live process (not a zombie).
is_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ $state != Z && $state != X ]]
}

# True if pid $1 is a live process whose command line contains $2. The command-line check
# keeps us from signalling an unrelated process that reused the pid of a server of ours.
is_our_process() {
    local pid=$1 marker=$2
    is_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# Seconds elapsed since $1 (an $EPOCHREALTIME value), with one decimal.
seconds_since() {
    awk -v start="$1" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.1f", now - start }'
}

print_log_tail() {
    local name=$1 log=$2
    {
        printf 'testbed: ---- last %d lines of %s (%s) ----\n' "$LOG_TAIL_LINES" "$name" "$log"
        if [[ -s $log ]]; then
            tail -n "$LOG_TAIL_LINES" "$log"
        else
            echo "(log is empty or missing)"
        fi
        printf 'testbed: ---- end of %s log ----\n' "$name"
    } >&2
}

# Starts redis-server in the background: AOF on, no RDB snapshots, loopback only.
launch_redis() {
    local dir log
    dir="$(redis_dir)"
    log="$(redis_log)"
    mkdir -p "$dir"
    : >"$log"
    # setsid: the server outlives this script (CTest runs start and stop as separate tests)
    # and is not hit by signals sent to the caller's process group. All three standard
    # streams are redirected so CTest does not wait on a pipe the server holds open; with no
    # --logfile redis-server logs to stdout, so start-up errors land in the same log.
    setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" \
        --appendonly yes --appendfsync everysec --save '' --daemonize no \
        --protected-mode yes \
        </dev/null >>"$log" 2>&1 &
    echo "$!" >"$(redis_pid_file)"
}

# Launches the selected engine's node in the background (pid in its pid file); does not wait.
launch_elasticsearch() {
    local dir log
    dir="$(es_dir)"
    log="$(es_log)"
    if [[ $ES_KEEP_STATE -eq 0 || -z $ES_CLUSTER_NAME ]]; then
        ES_CLUSTER_NAME="ftsync-testbed-$(hostname -s 2>/dev/null || echo host)-$$-$RANDOM"
    fi
    mkdir -p "$dir/data" "$dir/logs" "$dir/work" "$dir/tmp"
    if [[ $ES_KEEP_STATE -eq 0 ]]; then
        : >"$log"
    fi
    echo "$ENGINE" >"$(es_engine_file)"
    if [[ $ENGINE == opensearch ]]; then
        launch_opensearch_node "$dir" "$log"
    else
        launch_es1_node "$dir" "$log"
    fi
}

# OpenSearch 2.19 through OpenSearchLauncher: node settings as key=value arguments, no
# opensearch.yml, the node's own log lines on stdout (into the log file).
launch_opensearch_node() {
    local dir=$1 log=$2 java
    java="$(find_java)"
    local java_options=(
        # Small: the machine has 2 cores and runs a second engine and the tests beside it.
        -Xms512m -Xmx512m
        # A node out of memory dies (and the test fails with its log) instead of limping on.
        -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true -Dfile.encoding=UTF-8
        -Djava.io.tmpdir="$dir/tmp"
        # What the distribution's jvm.options sets: date formats as the server expects them,
        # log4j left to the launcher's shutdown hook (its own hook would stop logging before
        # the node is closed), Netty without Unsafe tricks.
        -Djava.locale.providers=SPI,COMPAT
        -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true
        -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true
        -Dio.netty.recycler.maxCapacityPerThread=0
    )
    local node_settings=(
        cluster.name="$ES_CLUSTER_NAME"
        node.name=ftsync-testbed
        path.home="$dir"
        path.data="$dir/data"
        path.logs="$dir/logs"
        network.host=127.0.0.1
        http.port="$ES_HTTP_PORT"
        transport.port="$ES_TRANSPORT_PORT"
        discovery.type=single-node
        # A full disk elsewhere on the machine must not turn the test bed's indices read-only.
        cluster.routing.allocation.disk.threshold_enabled=false
    )
    local extra_options=() extra_settings=()
    if [[ -n "${FTSYNC_TESTBED_ES_JAVA_OPTS:-}" ]]; then
        read -r -a extra_options <<<"$FTSYNC_TESTBED_ES_JAVA_OPTS"
    fi
    if [[ -n "${FTSYNC_TESTBED_OPENSEARCH_SETTINGS:-}" ]]; then
        read -r -a extra_settings <<<"$FTSYNC_TESTBED_OPENSEARCH_SETTINGS"
    fi
    (
        cd "$dir"
        exec setsid "$java" "${java_options[@]}" "${extra_options[@]}" \
            -cp "$OS_LAUNCHER_DIR:$OS_LIB/*" "$OS_MAIN_CLASS" \
            "${node_settings[@]}" "${extra_settings[@]}" </dev/null >>"$log" 2>&1
    ) &
    echo "$!" >"$(es_pid_file)"
}

# Elasticsearch 1.5.2: its main class straight (not bin/elasticsearch, whose GC flags Java 17
# refuses), with the Java 17 patch first on the class path.
launch_es1_node() {
    local dir=$1 log=$2 java
    java="$(find_java)"

    local java_options=(
        -Xms1g -Xmx1g
        -Djava.awt.headless=true -Dfile.encoding=UTF-8
        # JNA unpacks its native library here rather than into the shared /tmp.
        -Djava.io.tmpdir="$dir/tmp"
        # Elasticsearch 1.5.2 predates the module system and reaches into JDK internals by
        # reflection. Java 17 refuses that unless the package is opened: java.lang, java.io,
        # java.nio (direct buffer cleaner, used by its Netty), sun.nio.ch, jdk.internal.ref
        # (the cleaner's class), and com.sun.management.internal (open file descriptor counts
        # in node stats). Without them it still runs, with those features quietly off.
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.nio=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    )
    local es_settings=(
        -Des.foreground=yes
        -Des.path.home="$ES_HOME"
        -Des.path.data="$dir/data"
        -Des.path.logs="$dir/logs"
        -Des.path.work="$dir/work"
        -Des.network.host=127.0.0.1
        -Des.http.port="$ES_HTTP_PORT"
        -Des.transport.tcp.port="$ES_TRANSPORT_PORT"
        -Des.node.local=true
        -Des.discovery.zen.ping.multicast.enabled=false
        -Des.cluster.name="$ES_CLUSTER_NAME"
        -Des.node.name=ftsync-testbed
        # ES 1.x reads gzip request bodies (FTSYNC_ES_GZIP) only with HTTP compression on;
        # modern clusters always do.
        -Des.http.compression=true
    )
    local extra_options=()
    if [[ -n "${FTSYNC_TESTBED_ES_JAVA_OPTS:-}" ]]; then
        read -r -a extra_options <<<"$FTSYNC_TESTBED_ES_JAVA_OPTS"
    fi
    # The patch directory comes first so its JvmInfo.class wins over the one in the jar.
    local class_path="$ES_PATCH_DIR:$ES_HOME/lib/*:$ES_HOME/lib/sigar/*"

    # In a subshell so the working directory (where a crashing JVM writes hs_err files)
    # is the scratch directory without changing ours.
    (
        cd "$dir"
        exec setsid "$java" "${java_options[@]}" "${extra_options[@]}" "${es_settings[@]}" \
            -cp "$class_path" "$ES_MAIN_CLASS" </dev/null >>"$log" 2>&1
    ) &
    echo "$!" >"$(es_pid_file)"
}

# True if our redis-server (pid $1) answers PING. Asking for its process_id makes sure the
# answer is not from some other server that holds the port (our start then failed to bind).
# `timeout`: redis-cli itself would wait forever on a listener that never replies.
redis_answers() {
    local pid=$1
    [[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] \
        && timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server 2>/dev/null \
        | tr -d '\r' | grep -qx "process_id:$pid"
}

# True if our node answers the cluster health request with yellow or green; the
# cluster name, unique to this run, tells our node from anything else on the port.
es_answers() {
    local body
    body="$(curl -sS --max-time 10 \
        "http://127.0.0.1:$ES_HTTP_PORT/_cluster/health?wait_for_status=yellow&timeout=2s" \
        2>/dev/null)" || return 1
    [[ $body == *"\"cluster_name\":\"$ES_CLUSTER_NAME\""* && $body == *'"timed_out":false'* ]]
}

# Waits until the server answers. Returns 0 when ready, 1 if the process died, 2 on timeout.
wait_until_ready() {
    local pid_file=$1 probe=$2 deadline pid
    deadline=$((SECONDS + READY_TIMEOUT))
    pid="$(cat "$pid_file")"
    while ((SECONDS < deadline)); do
        # Only alive, not "ours": the pid is our own unreaped child, so it cannot have been
        # reused, and right after the launch its command line may still be this script's (the
        # forked shell has not exec'd setsid and the server yet), which once failed a start
        # on a busy machine.
        is_alive "$pid" || return 1
        if "$probe" "$pid"; then
            return 0
        fi
        sleep 0.2
    done
    return 2
}

# Handles a server that did not come up. Returns 0 if the start should be retried with new
# ports (the port was taken in the meantime), otherwise reports and returns 1.
handle_start_failure() {
    local name=$1 log=$2 status=$3
    if [[ $status -eq 1 ]] && grep -qiE 'address already in use|BindException' "$log"; then
        say "$name: port taken by another process, retrying on other ports"
        return 0
    fi
    if [[ $status -eq 1 ]]; then
        say "$name exited during start-up"
    else
        say "$name did not answer within ${READY_TIMEOUT}s"
    fi
    print_log_tail "$name" "$log"
    return 1
}

# testbed.env, written whole to a temporary file and renamed, so a reader never sees half of
# it: the Redis lines, then the lines of every engine whose node runs (its port is read back
# from the engine's own file, so engine-start and engine-stop can rewrite it later).
write_env_file() {
    local target temporary engine key selected=$ENGINE selected_subdir=$ES_SUBDIR
    target="$(env_file)"
    temporary="$target.tmp"
    {
        echo "# Written by test/tools/testbed.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); removed by stop."
        echo "FTSYNC_TEST_REDIS_URL=redis://127.0.0.1:$(cat "$(redis_dir)/port")/0"
        echo "FTSYNC_TESTBED_REDIS_PID_FILE=$(redis_pid_file)"
        echo "FTSYNC_TESTBED_REDIS_LOG=$(redis_log)"
        for engine in "${ENGINES[@]}"; do
            select_engine "$engine"
            [[ -s $(es_dir)/port && -f $(es_pid_file) ]] || continue
            key="$(engine_key)"
            echo "FTSYNC_TEST_${key}_URL=http://127.0.0.1:$(cat "$(es_dir)/port")"
            echo "FTSYNC_TESTBED_${key}_PID_FILE=$(es_pid_file)"
            echo "FTSYNC_TESTBED_${key}_LOG=$(es_log)"
        done
    } >"$temporary"
    mv -f "$temporary" "$target"
    [[ -z $selected ]] || select_engine "$selected" "$selected_subdir"
}

# Stops what a failed or interrupted start left running.
on_start_exit() {
    if [[ $START_COMPLETE -eq 0 && -n $TESTBED_DIR ]]; then
        say "start failed: stopping what was started"
        stop_all >/dev/null 2>&1 || say "could not stop everything; see the pid files in $TESTBED_DIR"
    fi
}

# engine-start: stops the node again when the start failed or was interrupted.
on_engine_start_exit() {
    if [[ $START_COMPLETE -eq 0 && -n $TESTBED_DIR ]]; then
        say "start of $ES_LABEL failed: stopping it"
        stop_node >/dev/null 2>&1 || true
        rm -f "$(es_dir)/port"
    fi
}

choose_es_ports() {
    local redis_port=""
    [[ -s $(redis_dir)/port ]] && redis_port="$(cat "$(redis_dir)/port")"
    ES_HTTP_PORT="$(pick_free_port ${redis_port:+"$redis_port"})"
    ES_TRANSPORT_PORT="$(pick_free_port "$ES_HTTP_PORT" ${redis_port:+"$redis_port"})"
}

# Starts redis-server and waits for its PONG; retries on other ports if the one picked was
# taken in the meantime.
start_redis() {
    local attempt status
    for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
        REDIS_PORT="$(pick_free_port "$ES_HTTP_PORT" "$ES_TRANSPORT_PORT")"
        launch_redis
        status=0
        wait_until_ready "$(redis_pid_file)" redis_answers || status=$?
        if [[ $status -eq 0 ]]; then
            say "redis-server ready on 127.0.0.1:$REDIS_PORT (pid $(cat "$(redis_pid_file)"))"
            return 0
        fi
        stop_service redis-server "$(redis_pid_file)" redis-server >/dev/null 2>&1 || true
        handle_start_failure redis-server "$(redis_log)" "$status" || exit 1
    done
    print_log_tail redis-server "$(redis_log)"
    die "redis-server: no free port after $START_ATTEMPTS attempts"
}

# Waits for the node launched by start_all or engine-start; relaunches it on other ports if
# the ones picked were taken in the meantime. Records its HTTP port in its directory.
await_elasticsearch() {
    local started=$1 attempt status
    for ((attempt = 1; ; attempt++)); do
        status=0
        wait_until_ready "$(es_pid_file)" es_answers || status=$?
        if [[ $status -eq 0 ]]; then
            echo "$ES_HTTP_PORT" >"$(es_dir)/port"
            say "$ES_LABEL ready on 127.0.0.1:$ES_HTTP_PORT after $(seconds_since "$started") s (pid $(cat "$(es_pid_file)"))"
            return 0
        fi
        stop_node >/dev/null 2>&1 || true
        handle_start_failure "$ES_LABEL" "$(es_log)" "$status" || exit 1
        if ((attempt >= START_ATTEMPTS)); then
            print_log_tail "$ES_LABEL" "$(es_log)"
            die "$ES_LABEL: no free port after $START_ATTEMPTS attempts"
        fi
        choose_es_ports
        started=$EPOCHREALTIME
        launch_elasticsearch
    done
}

# start DIR ENGINE: redis-server and one engine, from empty.
start_all() {
    require_dependencies
    mkdir -p "$TESTBED_DIR"
    # Leftovers of an earlier run (crashed, interrupted) are stopped, then their data wiped:
    # every run starts from empty servers. Only our own subdirectories are removed.
    if any_pid_file; then
        say "stopping what an earlier run left in $TESTBED_DIR"
        stop_all || die "servers of an earlier run in $TESTBED_DIR cannot be stopped"
    fi
    rm -rf "$(redis_dir)" "$TESTBED_DIR/es" "$TESTBED_DIR/opensearch" "$TESTBED_DIR/es1"

    trap on_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # The engine takes longest, so it boots while redis-server starts.
    local es_started=$EPOCHREALTIME
    choose_es_ports
    launch_elasticsearch
    start_redis
    echo "$REDIS_PORT" >"$(redis_dir)/port"
    await_elasticsearch "$es_started"
    write_env_file
    START_COMPLETE=1
    say "ready; settings in $(env_file)"
}

# True if any server of ours may still run from DIR (a pid file is left).
any_pid_file() {
    local engine
    [[ -f $(redis_pid_file) || -f $TESTBED_DIR/es/es.pid ]] && return 0
    for engine in "${ENGINES[@]}"; do
        [[ -f $TESTBED_DIR/$engine/node.pid ]] && return 0
    done
    return 1
}

# engine-start DIR ENGINE: one more engine beside the running redis-server, from empty.
engine_start() {
    [[ -f $(env_file) ]] || die "no test bed runs in $TESTBED_DIR (no testbed.env): run start first"
    require_dependencies
    if [[ -f $(es_pid_file) ]]; then
        stop_node || die "the $ES_LABEL of an earlier run in $(es_dir) cannot be stopped"
    fi
    rm -rf "$(es_dir)"
    trap on_engine_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local started=$EPOCHREALTIME
    choose_es_ports
    launch_elasticsearch
    await_elasticsearch "$started"
    write_env_file
    START_COMPLETE=1
    say "$ES_LABEL added; settings in $(env_file)"
}

# Sends TERM to the process in pid file $2 (if it is ours), waits up to STOP_TIMEOUT
# seconds, then KILLs it. Returns 1 if it is still alive afterwards.
stop_service() {
    local name=$1 pid_file=$2 marker=$3 pid deadline
    [[ -f $pid_file ]] || return 0
    pid="$(cat "$pid_file" 2>/dev/null || true)"
    if ! is_our_process "$pid" "$marker"; then
        rm -f "$pid_file"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while is_our_process "$pid" "$marker" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if is_our_process "$pid" "$marker"; then
        say "$name (pid $pid) still running after ${STOP_TIMEOUT}s: sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 5))
        while is_our_process "$pid" "$marker" && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
    if is_our_process "$pid" "$marker"; then
        say "ERROR: $name (pid $pid) is still running"
        return 1
    fi
    rm -f "$pid_file"
    return 0
}

# Stops the selected engine's node.
stop_node() {
    stop_service "$ES_LABEL" "$(es_pid_file)" "$ES_MARKER"
}

stop_all() {
    local failed=0 engine selected=$ENGINE selected_subdir=$ES_SUBDIR
    rm -f "$(env_file)"
    for engine in "${ENGINES[@]}"; do
        select_engine "$engine"
        stop_node || failed=1
        rm -f "$(es_dir)/port"
    done
    [[ -z $selected ]] || select_engine "$selected" "$selected_subdir"
    # The one Elasticsearch of this script's versions before OpenSearch joined the test bed.
    stop_service elasticsearch "$TESTBED_DIR/es/es.pid" "$ES_MAIN_CLASS" || failed=1
    stop_service redis-server "$(redis_pid_file)" redis-server || failed=1
    rm -f "$(redis_dir)/port"
    return "$failed"
}

# es-start: stops the node again when the start failed or was interrupted.
on_es_start_exit() {
    if [[ $START_COMPLETE -eq 0 && -n $TESTBED_DIR ]]; then
        stop_node >/dev/null 2>&1 || true
    fi
}

# Kills the node (pid $2) once the process $1 is gone; ends by itself when the node does.
# setsid: it outlives this script and is not hit by signals sent to the caller's group.
start_es_watchdog() {
    local owner=$1 node=$2
    [[ $owner =~ ^[0-9]+$ ]] || die "FTSYNC_TESTBED_ES_OWNER is not a pid: $owner"
    setsid bash -c '
        owner=$1 node=$2 marker=$3
        alive() { [[ -r /proc/$1/cmdline ]] && tr "\0" " " <"/proc/$1/cmdline" | grep -qF -- "$2"; }
        while kill -0 "$owner" 2>/dev/null && alive "$node" "$marker"; do sleep 1; done
        alive "$node" "$marker" && kill -KILL "$node" 2>/dev/null
        exit 0' es-watchdog "$owner" "$node" "$ES_MARKER" </dev/null >/dev/null 2>&1 &
}

# es-start DIR PORT: one node on a given port, its data kept across stops. A node started
# from DIR before keeps its engine, whatever is asked now.
es_start_only() {
    local port=$1 pid status started
    [[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "es-start: bad port '$port'"
    require_dependencies
    mkdir -p "$(es_dir)"
    if [[ -f $(es_pid_file) ]]; then
        pid="$(cat "$(es_pid_file)" 2>/dev/null || true)"
        if is_our_process "$pid" "$ES_MARKER"; then
            die "an $ES_LABEL node (pid $pid) already runs from $(es_dir)"
        fi
        rm -f "$(es_pid_file)"
    fi
    if is_port_listening "$port"; then
        die "es-start: something already listens on port $port"
    fi
    ES_KEEP_STATE=1
    if [[ -s $(es_cluster_name_file) ]]; then
        ES_CLUSTER_NAME="$(cat "$(es_cluster_name_file)")"
    fi
    ES_HTTP_PORT=$port
    ES_TRANSPORT_PORT="$(pick_free_port "$port")"

    trap on_es_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    started=$EPOCHREALTIME
    launch_elasticsearch
    echo "$ES_CLUSTER_NAME" >"$(es_cluster_name_file)"
    status=0
    wait_until_ready "$(es_pid_file)" es_answers || status=$?
    if [[ $status -ne 0 ]]; then
        stop_node >/dev/null 2>&1 || true
        if handle_start_failure "$ES_LABEL" "$(es_log)" "$status"; then
            print_log_tail "$ES_LABEL" "$(es_log)"
            die "$ES_LABEL: port $port (or transport port $ES_TRANSPORT_PORT) was taken"
        fi
        exit 1
    fi
    if [[ -n "${FTSYNC_TESTBED_ES_OWNER:-}" ]]; then
        start_es_watchdog "$FTSYNC_TESTBED_ES_OWNER" "$(cat "$(es_pid_file)")"
    fi
    START_COMPLETE=1
    say "$ES_LABEL ready on 127.0.0.1:$ES_HTTP_PORT after $(seconds_since "$started") s (pid $(cat "$(es_pid_file)"), data in $(es_dir))"
}

# es-start and es-stop: the engine of the node in DIR/es: the one recorded there by an earlier
# start, else $1, else FTSYNC_TEST_ENGINE, else opensearch.
select_private_engine() {
    local recorded="" engine_file="$TESTBED_DIR/es/engine"
    [[ -s $engine_file ]] && recorded="$(cat "$engine_file")"
    if [[ -n $recorded && -n ${1:-} && $recorded != "$1" ]]; then
        die "$TESTBED_DIR/es holds a $recorded node; it cannot be started as $1"
    fi
    select_engine "${recorded:-${1:-${FTSYNC_TEST_ENGINE:-opensearch}}}" es
}

main() {
    [[ $# -ge 2 ]] || usage
    local command=$1
    [[ -n $2 ]] || usage
    case "$command" in
        es-start)
            [[ $# -eq 3 || $# -eq 4 ]] || usage
            mkdir -p "$2" || die "cannot create directory $2"
            TESTBED_DIR="$(cd "$2" && pwd)"
            select_private_engine "${4:-}"
            es_start_only "$3"
            ;;
        es-stop)
            [[ $# -eq 2 ]] || usage
            if [[ ! -d $2 ]]; then
                say "$2 does not exist: nothing to stop"
                return 0
            fi
            TESTBED_DIR="$(cd "$2" && pwd)"
            select_private_engine ""
            stop_node || die "$ES_LABEL in $TESTBED_DIR could not be stopped"
            ;;
        start)
            [[ $# -eq 2 || $# -eq 3 ]] || usage
            select_engine "${3:-opensearch}"
            mkdir -p "$2" || die "cannot create directory $2"
            TESTBED_DIR="$(cd "$2" && pwd)"
            start_all
            ;;
        engine-start | engine-stop)
            [[ $# -eq 3 ]] || usage
            select_engine "$3"
            if [[ ! -d $2 ]]; then
                [[ $command == engine-stop ]] || die "$2 does not exist: run start first"
                say "$2 does not exist: nothing to stop"
                return 0
            fi
            TESTBED_DIR="$(cd "$2" && pwd)"
            if [[ $command == engine-start ]]; then
                engine_start
            else
                stop_node || die "$ES_LABEL in $TESTBED_DIR could not be stopped"
                rm -f "$(es_dir)/port"
                if [[ -f $(env_file) ]]; then
                    write_env_file
                fi
            fi
            ;;
        stop)
            [[ $# -eq 2 ]] || usage
            if [[ ! -d $2 ]]; then
                say "$2 does not exist: nothing to stop"
                return 0
            fi
            TESTBED_DIR="$(cd "$2" && pwd)"
            if stop_all; then
                say "stopped (no server of ours is running from $TESTBED_DIR)"
            else
                die "some servers could not be stopped; see above"
            fi
            ;;
        *) usage ;;
    esac
}

main "$@"
