#!/usr/bin/env bash
# testbed.sh - starts and stops the servers the integration tests run against: one
# redis-server and one Elasticsearch 1.5.2 (see "The test bed" in /work/shared/DESIGN.md),
# each on a free loopback port, with all their data, logs and pid files in a scratch directory.
#
#   testbed.sh start DIR   start both, wait until they answer, write DIR/testbed.env
#   testbed.sh stop DIR    stop both (TERM, then KILL after 20 s); fine if already stopped
#   testbed.sh es-start DIR PORT
#                          start only an Elasticsearch, HTTP on 127.0.0.1:PORT, data in DIR/es,
#                          and wait until it answers. A node started before from DIR (and
#                          stopped) comes back with its data: the cluster name, which names the
#                          data directory, is kept in DIR/es/cluster.name, and the log is appended
#                          to. For tests that take Elasticsearch away and bring it back
#                          (test/support/es_server.c)
#   testbed.sh es-stop DIR stop that Elasticsearch (TERM, then KILL after 20 s); its data stays
#
# CTest runs these as the `testbed` fixture (test/CMakeLists.txt); test/support/testbed.c
# reads DIR/testbed.env, whose lines are:
#   FTSYNC_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#   FTSYNC_TEST_ES_URL=http://127.0.0.1:PORT
#   FTSYNC_TESTBED_REDIS_PID_FILE=DIR/redis/redis.pid   (and _ES_PID_FILE, _REDIS_LOG, _ES_LOG)
#
# A server that dies or is not ready in time fails `start` with the last lines of its log on
# stderr, and whatever was started is stopped again. Elasticsearch and its Java 17 patch come
# from deploy/local/install-deps.sh; keep the paths below in step with it.
#
# Environment:
#   FTSYNC_DEPS_DIR               where install-deps.sh put Elasticsearch (/opt/ftsync-deps)
#   FTSYNC_TESTBED_JAVA           java binary to use (default: OpenJDK 17 from Debian)
#   FTSYNC_TESTBED_ES_JAVA_OPTS   extra JVM options for Elasticsearch (debugging)
#   FTSYNC_TESTBED_TIMEOUT        seconds to wait for the servers to be ready (120)
#   FTSYNC_TESTBED_ES_OWNER       es-start only: a pid; a watchdog kills the Elasticsearch once
#                                 that process is gone (a test killed by CTest's timeout leaves
#                                 no node behind)
set -euo pipefail

readonly DEPS_DIR="${FTSYNC_DEPS_DIR:-/opt/ftsync-deps}"
readonly ES_HOME="$DEPS_DIR/elasticsearch/home"
readonly ES_JAR="$ES_HOME/lib/elasticsearch-1.5.2.jar"
readonly ES_PATCH_DIR="$DEPS_DIR/elasticsearch/java17-patch"
readonly ES_PATCH_CLASS="$ES_PATCH_DIR/org/elasticsearch/monitor/jvm/JvmInfo.class"
readonly ES_MAIN_CLASS="org.elasticsearch.bootstrap.Elasticsearch"
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

say() { printf 'testbed: %s\n' "$*" >&2; }

die() {
    printf 'testbed: ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    printf 'usage: %s start|stop DIR | es-start DIR PORT | es-stop DIR\n' "${0##*/}" >&2
    exit 2
}

redis_dir() { echo "$TESTBED_DIR/redis"; }
redis_pid_file() { echo "$TESTBED_DIR/redis/redis.pid"; }
redis_log() { echo "$TESTBED_DIR/redis/redis.log"; }
es_dir() { echo "$TESTBED_DIR/es"; }
es_pid_file() { echo "$TESTBED_DIR/es/es.pid"; }
es_log() { echo "$TESTBED_DIR/es/es.log"; }
es_cluster_name_file() { echo "$TESTBED_DIR/es/cluster.name"; }
env_file() { echo "$TESTBED_DIR/testbed.env"; }

# The Java 17 that Elasticsearch runs on: Debian's OpenJDK 17 if present, else `java`.
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
    [[ -f $ES_JAR ]] || missing+=("Elasticsearch 1.5.2 ($ES_JAR)")
    [[ -f $ES_PATCH_CLASS ]] || missing+=("the Java 17 patch for Elasticsearch ($ES_PATCH_CLASS)")
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

# True if pid $1 is a live process (not a zombie) whose command line contains $2. The
# command-line check keeps us from signalling an unrelated process that reused the pid.
is_our_process() {
    local pid=$1 marker=$2 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ $state != Z && $state != X ]] || return 1
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

launch_elasticsearch() {
    local dir log java
    dir="$(es_dir)"
    log="$(es_log)"
    java="$(find_java)"
    if [[ $ES_KEEP_STATE -eq 0 || -z $ES_CLUSTER_NAME ]]; then
        ES_CLUSTER_NAME="ftsync-testbed-$(hostname -s 2>/dev/null || echo host)-$$-$RANDOM"
    fi
    mkdir -p "$dir/data" "$dir/logs" "$dir/work" "$dir/tmp"
    if [[ $ES_KEEP_STATE -eq 0 ]]; then
        : >"$log"
    fi

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

# True if our Elasticsearch answers the cluster health request with yellow or green; the
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
    local pid_file=$1 marker=$2 probe=$3 deadline pid
    deadline=$((SECONDS + READY_TIMEOUT))
    pid="$(cat "$pid_file")"
    while ((SECONDS < deadline)); do
        is_our_process "$pid" "$marker" || return 1
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

write_env_file() {
    local target temporary
    target="$(env_file)"
    temporary="$target.tmp"
    {
        echo "# Written by test/tools/testbed.sh start on $(date -u +%Y-%m-%dT%H:%M:%SZ); removed by stop."
        echo "FTSYNC_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
        echo "FTSYNC_TEST_ES_URL=http://127.0.0.1:$ES_HTTP_PORT"
        echo "FTSYNC_TESTBED_REDIS_PID_FILE=$(redis_pid_file)"
        echo "FTSYNC_TESTBED_ES_PID_FILE=$(es_pid_file)"
        echo "FTSYNC_TESTBED_REDIS_LOG=$(redis_log)"
        echo "FTSYNC_TESTBED_ES_LOG=$(es_log)"
    } >"$temporary"
    mv -f "$temporary" "$target"
}

# Stops what a failed or interrupted start left running.
on_start_exit() {
    if [[ $START_COMPLETE -eq 0 && -n $TESTBED_DIR ]]; then
        say "start failed: stopping what was started"
        stop_all >/dev/null 2>&1 || say "could not stop everything; see the pid files in $TESTBED_DIR"
    fi
}

choose_es_ports() {
    ES_HTTP_PORT="$(pick_free_port ${REDIS_PORT:+"$REDIS_PORT"})"
    ES_TRANSPORT_PORT="$(pick_free_port "$ES_HTTP_PORT" ${REDIS_PORT:+"$REDIS_PORT"})"
}

# Starts redis-server and waits for its PONG; retries on other ports if the one picked was
# taken in the meantime.
start_redis() {
    local attempt status
    for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
        REDIS_PORT="$(pick_free_port "$ES_HTTP_PORT" "$ES_TRANSPORT_PORT")"
        launch_redis
        status=0
        wait_until_ready "$(redis_pid_file)" redis-server redis_answers || status=$?
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

# Waits for the Elasticsearch launched by start_all; relaunches it on other ports if the
# ones picked were taken in the meantime.
await_elasticsearch() {
    local started=$1 attempt status
    for ((attempt = 1; ; attempt++)); do
        status=0
        wait_until_ready "$(es_pid_file)" "$ES_MAIN_CLASS" es_answers || status=$?
        if [[ $status -eq 0 ]]; then
            say "elasticsearch ready on 127.0.0.1:$ES_HTTP_PORT after $(seconds_since "$started") s (pid $(cat "$(es_pid_file)"))"
            return 0
        fi
        stop_service elasticsearch "$(es_pid_file)" "$ES_MAIN_CLASS" >/dev/null 2>&1 || true
        handle_start_failure elasticsearch "$(es_log)" "$status" || exit 1
        if ((attempt >= START_ATTEMPTS)); then
            print_log_tail elasticsearch "$(es_log)"
            die "elasticsearch: no free port after $START_ATTEMPTS attempts"
        fi
        choose_es_ports
        started=$EPOCHREALTIME
        launch_elasticsearch
    done
}

start_all() {
    require_dependencies
    mkdir -p "$TESTBED_DIR"
    # Leftovers of an earlier run (crashed, interrupted) are stopped, then their data wiped:
    # every run starts from empty servers. Only our own subdirectories are removed.
    if [[ -f $(redis_pid_file) || -f $(es_pid_file) ]]; then
        say "stopping what an earlier run left in $TESTBED_DIR"
        stop_all || die "servers of an earlier run in $TESTBED_DIR cannot be stopped"
    fi
    rm -rf "$(redis_dir)" "$(es_dir)"

    trap on_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # Elasticsearch takes longest, so it boots while redis-server starts.
    local es_started=$EPOCHREALTIME
    choose_es_ports
    launch_elasticsearch
    start_redis
    await_elasticsearch "$es_started"
    write_env_file
    START_COMPLETE=1
    say "ready; settings in $(env_file)"
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

stop_all() {
    local failed=0
    rm -f "$(env_file)"
    stop_service elasticsearch "$(es_pid_file)" "$ES_MAIN_CLASS" || failed=1
    stop_service redis-server "$(redis_pid_file)" redis-server || failed=1
    return "$failed"
}

# es-start: stops the node again when the start failed or was interrupted.
on_es_start_exit() {
    if [[ $START_COMPLETE -eq 0 && -n $TESTBED_DIR ]]; then
        stop_service elasticsearch "$(es_pid_file)" "$ES_MAIN_CLASS" >/dev/null 2>&1 || true
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
        exit 0' es-watchdog "$owner" "$node" "$ES_MAIN_CLASS" </dev/null >/dev/null 2>&1 &
}

# es-start DIR PORT: one Elasticsearch on a given port, its data kept across stops.
es_start_only() {
    local port=$1 pid status started
    [[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "es-start: bad port '$port'"
    require_dependencies
    mkdir -p "$(es_dir)"
    if [[ -f $(es_pid_file) ]]; then
        pid="$(cat "$(es_pid_file)" 2>/dev/null || true)"
        if is_our_process "$pid" "$ES_MAIN_CLASS"; then
            die "an Elasticsearch (pid $pid) already runs from $(es_dir)"
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
    wait_until_ready "$(es_pid_file)" "$ES_MAIN_CLASS" es_answers || status=$?
    if [[ $status -ne 0 ]]; then
        stop_service elasticsearch "$(es_pid_file)" "$ES_MAIN_CLASS" >/dev/null 2>&1 || true
        if handle_start_failure elasticsearch "$(es_log)" "$status"; then
            print_log_tail elasticsearch "$(es_log)"
            die "elasticsearch: port $port (or transport port $ES_TRANSPORT_PORT) was taken"
        fi
        exit 1
    fi
    if [[ -n "${FTSYNC_TESTBED_ES_OWNER:-}" ]]; then
        start_es_watchdog "$FTSYNC_TESTBED_ES_OWNER" "$(cat "$(es_pid_file)")"
    fi
    START_COMPLETE=1
    say "elasticsearch ready on 127.0.0.1:$ES_HTTP_PORT after $(seconds_since "$started") s (pid $(cat "$(es_pid_file)"), data in $(es_dir))"
}

main() {
    [[ $# -ge 2 ]] || usage
    local command=$1
    [[ -n $2 ]] || usage
    case "$command" in
        es-start)
            [[ $# -eq 3 ]] || usage
            mkdir -p "$2" || die "cannot create directory $2"
            TESTBED_DIR="$(cd "$2" && pwd)"
            es_start_only "$3"
            return 0
            ;;
        es-stop)
            [[ $# -eq 2 ]] || usage
            if [[ ! -d $2 ]]; then
                say "$2 does not exist: nothing to stop"
                return 0
            fi
            TESTBED_DIR="$(cd "$2" && pwd)"
            stop_service elasticsearch "$(es_pid_file)" "$ES_MAIN_CLASS" \
                || die "elasticsearch in $TESTBED_DIR could not be stopped"
            return 0
            ;;
        start | stop) [[ $# -eq 2 ]] || usage ;;
        *) usage ;;
    esac

    case "$command" in
        start)
            mkdir -p "$2" || die "cannot create directory $2"
            TESTBED_DIR="$(cd "$2" && pwd)"
            start_all
            ;;
        stop)
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
