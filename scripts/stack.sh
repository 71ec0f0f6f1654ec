#!/usr/bin/env bash
# Local infrastructure without Docker: Kafka (KRaft, one node, or a cluster of three), Redis, an S3 server
# (versitygw), a CDN edge (Varnish) in front of it, and the vision-model simulator.
#
#   scripts/stack.sh install   fetch/build what is missing, cache it in $STACK_DIR (default <repo>/.stack)
#   scripts/stack.sh up        start every service on 127.0.0.1 (idempotent), create the bucket
#   scripts/stack.sh down      stop every service by its own PID
#   scripts/stack.sh app-down  stop only the worker and the API `make demo` started (the services keep running)
#   scripts/stack.sh status    one line per service
#   scripts/stack.sh kafka-up / kafka-down   only Kafka (its nodes, ACLs and topics) / stop only Kafka
#   scripts/stack.sh reset     down, then wipe Kafka and S3 data (downloads are kept)
#   STACK_RESET=1 scripts/stack.sh up   same as reset, then up
#
# Ports (env): KAFKA_PORT=9092 KAFKA_CONTROLLER_PORT=9093 REDIS_PORT=6379 S3_PORT=7070 CDN_PORT=6081 EDGE_EXPORTER_PORT=9131
#              SIMULATOR_PORT=8090 STORAGE_EVENTS_PORT=7071 (the storage-event relay; STACK_STORAGE_EVENTS=0: none)
# S3 (env):    S3_ACCESS_KEY=test S3_SECRET_KEY=testsecret S3_BUCKET_NAME=waste-images
# Other:       PYTHON=.venv/bin/python  STACK_SIMULATOR=0 (don't start the simulator)
#              STACK_REDIS_CLUSTER=1: `up` also starts a Redis Cluster (3 masters + 3 replicas on
#              REDIS_CLUSTER_PORT=7000..7005); `scripts/stack.sh redis-cluster-up` starts only that
#              STACK_TIMEOUT=90 (seconds each readiness check may take)
#              STACK_KAFKA_BROKERS=3: a three-node KRaft cluster (each node broker + controller, a static quorum of
#              the three) instead of one node: client ports KAFKA_PORTS=9092,9094,9096 and controller ports
#              KAFKA_CONTROLLER_PORTS=9093,9095,9097 (defaults: KAFKA_PORT and KAFKA_CONTROLLER_PORT, +2, +4), data
#              in $STACK_DIR/kafka/node-N. Replication follows the node count: topics get replication factor 3 and
#              min.insync.replicas=2 (one node: 1 and 1). Clients then need every node and the factor:
#              KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096 TOPIC_REPLICATION_FACTOR=3
#              (`up` prints both). One node stays the default (the demo, the fast tests).
# Docker users: docker-compose.kafka.yml runs the same services from images with the same versions.
set -euo pipefail

# ---- pinned versions (docker-compose.kafka.yml and tests/integration read these lines) ----------
# Newest Kafka that resolved from Maven on 2026-11-27 (4.4.0; 4.3.1 and 4.2.1 resolve too).
# 4.x works with faust-streaming 0.15.3 + aiokafka 0.14.0 (tests/integration/test_stack.py checks it),
# so the 3.9.x fallback (reload4j logging, ZooKeeper jars) is not needed.
KAFKA_VERSION=4.4.0
VERSITYGW_VERSION=v1.7.0
# versitygw $VERSITYGW_VERSION's go.mod says "go 1.25.0". A distribution Go older than that (Debian 12: 1.19,
# Ubuntu 24.04: 1.22, Debian 13: 1.24) builds it with this toolchain, which the go command fetches itself
# through the Go module proxy (GOTOOLCHAIN; the toolchain module for Go < 1.21): no download site needed.
GO_MIN_VERSION=1.25.0
GO_TOOLCHAIN=go1.25.5
# Maven plugin used to copy the broker's runtime jars; pinned so a run never resolves "latest".
MVN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"   # relative paths below (PYTHON, STACK_DIR) are relative to the repo

STACK_DIR=${STACK_DIR:-$REPO_DIR/.stack}
case $STACK_DIR in /*) ;; *) STACK_DIR=$REPO_DIR/$STACK_DIR ;; esac
RUN_DIR=$STACK_DIR/run
LOG_DIR=$STACK_DIR/logs
KAFKA_HOME=$STACK_DIR/kafka
KAFKA_DATA=$KAFKA_HOME/data
S3_DATA=$STACK_DIR/s3-data
S3_SIDECAR=$STACK_DIR/s3-meta
VERSITYGW_BIN=$STACK_DIR/bin/versitygw

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_CLUSTER_PORT=${REDIS_CLUSTER_PORT:-7000}   # first of six: three masters, one replica each
STACK_REDIS_CLUSTER=${STACK_REDIS_CLUSTER:-0}
STACK_KAFKA_BROKERS=${STACK_KAFKA_BROKERS:-1}   # 1, or 3 for a cluster (kafka_nodes below)
S3_PORT=${S3_PORT:-7070}
CDN_PORT=${CDN_PORT:-6081}
SIMULATOR_PORT=${SIMULATOR_PORT:-8090}
EDGE_EXPORTER_PORT=${EDGE_EXPORTER_PORT:-9131}   # the edge's Prometheus metrics (tools/edge_exporter.py)
# The storage-event relay (tools/storage_event_relay.py): versitygw posts its bucket notifications there, it writes
# them to Kafka (waste.storage.events). STACK_STORAGE_EVENTS=0 starts the S3 server without notifications.
STORAGE_EVENTS_PORT=${STORAGE_EVENTS_PORT:-7071}
STACK_STORAGE_EVENTS=${STACK_STORAGE_EVENTS:-1}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-test}
S3_SECRET_KEY=${S3_SECRET_KEY:-testsecret}
S3_BUCKET_NAME=${S3_BUCKET_NAME:-waste-images}
PYTHON=${PYTHON:-.venv/bin/python}
# Varnish drops privileges (its VCL compiler and cache process run as its own users), so what it reads, the
# rendered VCL and its -n working directory, lives outside the clone, which may be private (a mode-700 home).
# One folder per user and port; it must be ours and a real folder (checked in edge_dir).
EDGE_DIR=${EDGE_DIR:-${TMPDIR:-/tmp}/waste-edge-$(id -u)-$CDN_PORT}
VARNISH_DIR=$EDGE_DIR/varnish
STACK_TIMEOUT=${STACK_TIMEOUT:-90}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:-}   # per node; default -Xms256m -Xmx512m, three nodes -Xms128m -Xmx384m each

# ---- output helpers ------------------------------------------------------------------------------
say()  { printf '[stack] %s\n' "$*"; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die()  { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
now()  { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- prerequisites -------------------------------------------------------------------------------
# Each check says what to install instead of failing later with a stack trace.
need_cmd() {  # need_cmd COMMAND "what to install"
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found. Install $2, then run: scripts/stack.sh install"
}

java_major() {  # the major version of `java` on PATH, 0 when there is none
    command -v java >/dev/null 2>&1 || { echo 0; return; }
    java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]) + 0; exit }'
}

need_java17() {
    need_cmd java "a Java 17+ runtime (Debian/Ubuntu: apt-get install default-jdk-headless), or run scripts/stack.sh install as root"
    local major; major=$(java_major)
    [[ ${major:-0} -ge 17 ]] || die "Java 17+ is needed for Kafka 4.x (found: ${major:-unknown}). Install openjdk-17-jdk-headless (or newer) and select it: update-alternatives --config java"
}

# ---- process helpers -----------------------------------------------------------------------------
pid_file() { echo "$RUN_DIR/$1.pid"; }

read_pid() {  # read_pid NAME -> pid or empty
    local f; f=$(pid_file "$1")
    if [[ -s $f ]]; then cat "$f"; fi
}

# A PID is ours only if the process is alive AND its command line names the expected program:
# after a reboot the number may belong to something else, which must never be killed.
pid_is() {  # pid_is PID PATTERN
    [[ -n $1 && -r /proc/$1/cmdline ]] && tr '\0' ' ' </proc/"$1"/cmdline | grep -q -- "$2"
}

port_open() {  # port_open PORT: something accepts TCP connections on 127.0.0.1:PORT
    timeout 1 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_until SECONDS NAME PID CHECK...: poll CHECK until it succeeds; fail early if PID dies.
wait_until() {
    local limit=$1 name=$2 pid=$3; shift 3
    local deadline=$(( $(date +%s) + limit ))
    until "$@"; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            warn "$name exited during start-up; last lines of $LOG_DIR/$name.log:"
            tail -n 20 "$LOG_DIR/$name.log" >&2 || true
            return 1
        fi
        if (( $(date +%s) >= deadline )); then
            warn "$name not ready after ${limit}s; last lines of $LOG_DIR/$name.log:"
            tail -n 20 "$LOG_DIR/$name.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# launch NAME CMD...: start CMD detached (own session, so a Ctrl-C or a test runner's process-group
# kill does not take it down), stdout/stderr to its log, PID to its pid file.
launch() {
    local name=$1; shift
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    # setsid execs in place (a background job of a non-interactive shell is not a group leader),
    # so $! is the service's own PID.
    setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$(pid_file "$name")"
}

# already_up NAME PATTERN PORT: 0 if our process runs and answers; dies if the port is someone else's.
already_up() {
    local name=$1 pattern=$2 port=$3 pid
    pid=$(read_pid "$name")
    if pid_is "$pid" "$pattern"; then
        if port_open "$port"; then
            say "$name: already running (pid $pid, port $port)"
            return 0
        fi
        # Alive but not answering yet: another `up` may be starting it. Wait instead of starting a twin.
        say "$name: pid $pid alive, waiting for port $port"
        wait_until "$STACK_TIMEOUT" "$name" "$pid" port_open "$port" || die "$name (pid $pid) does not answer on port $port"
        return 0
    fi
    rm -f "$(pid_file "$name")"
    if port_open "$port"; then
        die "$name: port $port is already used by another process (set a different port in the env, or stop it; e.g. a system redis/varnish service)"
    fi
    return 1
}

# stop NAME PATTERN [SECONDS]: TERM, wait with a deadline, KILL after it.
stop() {
    local name=$1 pattern=$2 limit=${3:-20} pid
    pid=$(read_pid "$name")
    if ! pid_is "$pid" "$pattern"; then
        rm -f "$(pid_file "$name")"
        say "$name: not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(( $(date +%s) + limit ))
    while kill -0 "$pid" 2>/dev/null; do
        if (( $(date +%s) >= deadline )); then
            warn "$name (pid $pid) still alive after ${limit}s: sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    # A KILLed process can take a moment to be reaped.
    local _
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$(pid_file "$name")"
    say "$name: stopped (pid $pid)"
}

# ---- install -------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {  # apt_install PACKAGE...: install from the distribution's packages, or say exactly how
    need_cmd apt-get "Debian/Ubuntu (apt-get), or install the packages $* by hand"
    [[ $(id -u) -eq 0 ]] || die "installing $* needs root: run  sudo apt-get install -y --no-install-recommends $*  then again: scripts/stack.sh install"
    say "apt: installing $*"
    # Package lists are refreshed once per run, only because something is missing.
    if (( APT_UPDATED == 0 )); then
        apt-get update -qq || die "apt-get update failed (see above): check /etc/apt/sources.list* and the network"
        APT_UPDATED=1
    fi
    # The packages ship init scripts; where services auto-start on install (systemd hosts),
    # the system redis on 6379 would clash with ours: `up` then says the port is taken.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed (see above)"
}

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_apt_packages() {
    # What a fresh Debian 12/13 or Ubuntu 24.04 lacks: the services, the tools this script calls, a JDK.
    local missing=() p
    for p in redis-server varnish curl ca-certificates; do
        deb_installed "$p" || missing+=("$p")
    done
    command -v java >/dev/null 2>&1 && (( $(java_major) >= 17 )) || missing+=(default-jdk-headless)
    if (( ${#missing[@]} == 0 )); then
        say "apt: redis-server, varnish, curl and a JDK 17+ already installed"
    else
        apt_install "${missing[@]}"
        # On a systemd host the packages start their system services, on our default ports (redis 6379,
        # varnish 6081): the stack runs its own, so the services this install brought are stopped and disabled.
        local svc
        for svc in redis-server varnish; do
            [[ " ${missing[*]} " == *" $svc "* && -d /run/systemd/system ]] || continue
            if systemctl is-enabled --quiet "$svc" 2>/dev/null || systemctl is-active --quiet "$svc" 2>/dev/null; then
                say "apt: stopping and disabling the system $svc service the package started (the stack runs its own)"
                systemctl disable --now "$svc" >/dev/null 2>&1 || warn "could not stop the system $svc service: systemctl disable --now $svc"
            fi
        done
    fi
    if (( $(java_major) < 17 )); then  # a distribution whose default JDK is older: ask for 17 by name
        apt_install openjdk-17-jdk-headless
        local jdk17; jdk17=$(ls -d /usr/lib/jvm/java-17-openjdk-*/bin/java 2>/dev/null | head -n 1)
        [[ -n $jdk17 ]] && update-alternatives --set java "$jdk17" >/dev/null
    fi
    need_java17
}

kafka_stamp() {  # what the cached lib/ was built from: version + pom content
    echo "kafka=$KAFKA_VERSION pom=$(sha256sum stack/kafka/pom.xml | cut -c1-16)"
}

install_kafka() {
    local lib=$KAFKA_HOME/lib stamp
    stamp=$(kafka_stamp)
    if [[ -f $lib/.stamp && $(cat "$lib/.stamp") == "$stamp" ]]; then
        say "kafka: $KAFKA_VERSION jars cached in $lib"
        return
    fi
    need_java17
    command -v mvn >/dev/null 2>&1 || apt_install maven
    need_cmd mvn "Apache Maven 3.8+ (Debian/Ubuntu: apt-get install maven)"
    say "kafka: resolving $KAFKA_VERSION jars with Maven (repository cache: $STACK_DIR/m2)"
    rm -rf "$lib.tmp"
    # Own local repository under $STACK_DIR: self-contained, and a re-copy after `rm -rf lib` is offline.
    mvn -B -q -Dstyle.color=never -f stack/kafka/pom.xml -Dmaven.repo.local="$STACK_DIR/m2" -Dkafka.version="$KAFKA_VERSION" \
        "$MVN_DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$lib.tmp" \
        || die "Maven could not resolve Kafka $KAFKA_VERSION (see output above)"
    # Kafka 4.x logs through SLF4J 1.7 -> Log4j2; two slf4j-api versions on the classpath would
    # make SLF4J pick one at random and possibly ignore the binding.
    local slf4j=("$lib.tmp"/slf4j-api-*.jar) binding=("$lib.tmp"/log4j-slf4j-impl-*.jar)
    [[ ${#slf4j[@]} -eq 1 && -f ${slf4j[0]} ]] \
        || die "expected exactly one slf4j-api jar in Kafka's classpath, found: ${slf4j[*]##*/}"
    [[ -f ${binding[0]} ]] || die "log4j-slf4j-impl missing from Kafka's classpath"
    echo "$stamp" >"$lib.tmp/.stamp"
    rm -rf "$lib" && mv "$lib.tmp" "$lib"
    local jars=("$lib"/*.jar)
    say "kafka: ${#jars[@]} jars in $lib (${slf4j[0]##*/})"
}

install_versitygw() {
    local stamp=$STACK_DIR/bin/.versitygw-version
    if [[ -x $VERSITYGW_BIN && -f $stamp && $(cat "$stamp") == "$VERSITYGW_VERSION" ]]; then
        say "versitygw: $VERSITYGW_VERSION cached in $VERSITYGW_BIN"
        return
    fi
    command -v go >/dev/null 2>&1 || apt_install golang-go
    need_cmd go "Go (Debian/Ubuntu: apt-get install golang-go; any version, a $GO_TOOLCHAIN toolchain is fetched by go itself)"
    mkdir -p "$STACK_DIR/bin"
    # Module and build caches live under $STACK_DIR/go only for this build and are deleted after
    # (~700 MB); -modcacherw keeps them deletable. CGO off: the binary is pure Go, like upstream's image.
    export GOBIN="$STACK_DIR/bin" GOMODCACHE="$STACK_DIR/go/mod" GOCACHE="$STACK_DIR/go/cache" \
        GOPATH="$STACK_DIR/go/path" GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0
    go_for_versitygw   # sets GO_BIN (and GOTOOLCHAIN/GOROOT as needed)
    say "versitygw: building $VERSITYGW_VERSION with go install ($("$GO_BIN" version | cut -d' ' -f3); takes ~1.5 min on 2 cores)"
    "$GO_BIN" install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
        || die "go install of versitygw $VERSITYGW_VERSION failed (see output above)"
    echo "$VERSITYGW_VERSION" >"$stamp"
    rm -rf "$STACK_DIR/go"
}

# ---- offline checkers of infra/ and monitoring/ (tests/infra): OpenTofu, promtool, checkov ------------------
# tofu and promtool are built from source with the Go module proxy like versitygw; checkov is a Python tool with
# its own pinned venv (infra/checkov-requirements.txt). Each is cached under $STACK_DIR with a version stamp.
TOFU_VERSION=v1.12.6          # go.mod: go 1.26.6 (older Go fetches that toolchain through GOTOOLCHAIN)
TOFU_GO_MIN=1.26.6
PROMTOOL_VERSION=v0.316.0     # the Go module version of Prometheus 3.16.0
PROMTOOL_GO_MIN=1.25.0

# go_build_tool NAME VERSION GO_MIN CMD...: run CMD with a Go >= GO_MIN (go_for_versitygw's logic) and the
# build caches under $STACK_DIR/go (deleted after); records VERSION in $STACK_DIR/bin/.NAME-version.
go_build_tool() {
    local name=$1 version=$2 go_min=$3; shift 3
    local stamp=$STACK_DIR/bin/.$name-version
    if [[ -x $STACK_DIR/bin/$name && -f $stamp && $(cat "$stamp") == "$version" ]]; then
        say "$name: $version cached in $STACK_DIR/bin/$name"
        return
    fi
    command -v go >/dev/null 2>&1 || apt_install golang-go
    mkdir -p "$STACK_DIR/bin"
    local t0; t0=$(now)
    (
        export GOBIN="$STACK_DIR/bin" GOMODCACHE="$STACK_DIR/go/mod" GOCACHE="$STACK_DIR/go/cache" \
            GOPATH="$STACK_DIR/go/path" GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0
        GO_MIN_VERSION=$go_min GO_TOOLCHAIN=go$go_min
        go_for_versitygw
        say "$name: building $version ($("$GO_BIN" version | cut -d' ' -f3))"
        "$@"
    ) || die "building $name $version failed (see output above)"
    echo "$version" >"$stamp"
    rm -rf "$STACK_DIR/go"
    say "$name: built in $(since "$t0")s"
}

build_tofu() {
    # OpenTofu's go.mod has replace directives, which `go install pkg@version` refuses: fetch the module (checked
    # against the checksum database like any module) and build it as the main module.
    "$GO_BIN" mod download "github.com/opentofu/opentofu@$TOFU_VERSION"
    (cd "$GOMODCACHE/github.com/opentofu/opentofu@$TOFU_VERSION" \
        && "$GO_BIN" build -trimpath -ldflags "-s -w" -o "$GOBIN/tofu" ./cmd/tofu)
}

build_promtool() {
    "$GO_BIN" install -trimpath -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
}

install_checkov() {
    local venv=$STACK_DIR/checkov stamp
    stamp=$(sha256sum infra/checkov-requirements.txt | cut -c1-16)
    if [[ -x $venv/bin/checkov && -f $venv/.stamp && $(cat "$venv/.stamp") == "$stamp" ]]; then
        say "checkov: cached in $venv"
        return
    fi
    local t0; t0=$(now)
    rm -rf "$venv"
    python3 -m venv "$venv" || die "checkov: python3 -m venv failed (install python3-venv)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r infra/checkov-requirements.txt || die "checkov: pip install failed"
    echo "$stamp" >"$venv/.stamp"
    say "checkov: installed in $(since "$t0")s"
}

install_infra_tools() {
    go_build_tool tofu "$TOFU_VERSION" "$TOFU_GO_MIN" build_tofu
    go_build_tool promtool "$PROMTOOL_VERSION" "$PROMTOOL_GO_MIN" build_promtool
    install_checkov
}

go_version_of() {  # go_version_of GO -> "1.22.2" ("go1.22.2", "go1.25rc1" and "devel" forms tolerated)
    "$1" version 2>/dev/null | awk '{ v = $3; sub(/^go/, "", v); sub(/[^0-9.].*$/, "", v); print v; exit }'
}

version_ge() {  # version_ge A B: A >= B, dotted numbers
    [[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1) == "$2" ]]
}

# go_for_versitygw: sets GO_BIN, the go command that builds versitygw (its go.mod needs Go >= $GO_MIN_VERSION).
# The distribution's Go when recent enough; else, from Go 1.21 on, the go command's own toolchain switch
# (GOTOOLCHAIN=$GO_TOOLCHAIN); before 1.21 (Debian 12's 1.19), the same toolchain module fetched with
# `go mod download` (checked against the checksum database like any module) and run from the module cache,
# which is what the switch does.
go_for_versitygw() {
    local have; have=$(go_version_of go)
    # Every path leaves the switch on (auto): a module whose go.mod asks for a newer Go than GO_MIN_VERSION
    # (a pin that fell behind) gets that toolchain the same way instead of failing the build.
    if version_ge "${have:-0}" "$GO_MIN_VERSION"; then
        export GOTOOLCHAIN=auto
        GO_BIN=$(command -v go); return
    fi
    local fix="Or install Go >= $GO_MIN_VERSION yourself and put it first in PATH, or copy a versitygw $VERSITYGW_VERSION binary to $VERSITYGW_BIN and write $VERSITYGW_VERSION into $STACK_DIR/bin/.versitygw-version."
    if version_ge "${have:-0}" 1.21; then
        say "versitygw: Go $have is older than $GO_MIN_VERSION: using the go command's toolchain switch (GOTOOLCHAIN=$GO_TOOLCHAIN, through GOPROXY=$(go env GOPROXY))"
        export GOTOOLCHAIN=$GO_TOOLCHAIN+auto
        go version \
            || die "Go $have could not fetch the $GO_TOOLCHAIN toolchain through the Go module proxy (GOPROXY=$(go env GOPROXY)). Set GOPROXY to a proxy this machine reaches. $fix"
        GO_BIN=$(command -v go); return
    fi
    local arch; arch=$(go env GOARCH)
    local module="golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch"
    say "versitygw: Go $have predates the toolchain switch (1.21): fetching $module through GOPROXY=$(go env GOPROXY)"
    go mod download "$module" \
        || die "Go $have could not fetch $module through the Go module proxy (GOPROXY=$(go env GOPROXY)). Set GOPROXY to a proxy this machine reaches. $fix"
    local root="$GOMODCACHE/$module"
    # Module zips carry no execute bits; the toolchain switch sets them the same way on first use.
    find "$root/pkg/tool" "$root/bin" -type f -exec chmod a+x {} +
    export GOROOT=$root GOTOOLCHAIN=auto
    GO_BIN=$root/bin/go
}

cmd_install() {
    local t0; t0=$(now)
    mkdir -p "$STACK_DIR"
    install_apt_packages
    command -v setsid >/dev/null && command -v timeout >/dev/null && command -v awk >/dev/null \
        || die "setsid, timeout and awk are needed (Debian/Ubuntu: apt-get install util-linux coreutils mawk)"
    install_kafka
    install_versitygw
    # The infra checkers (tests/infra) only for the tests: scripts/test.sh sets STACK_INFRA_TOOLS=1; `make demo`
    # and `make stack-up` do not need them.
    [[ ${STACK_INFRA_TOOLS:-0} == 1 ]] && install_infra_tools
    say "install done in $(since "$t0")s"
}

check_installed() {  # up needs what install provides
    if ! command -v redis-server >/dev/null || ! command -v varnishd >/dev/null \
        || [[ ! -f $KAFKA_HOME/lib/.stamp || $(cat "$KAFKA_HOME/lib/.stamp") != "$(kafka_stamp)" ]] \
        || [[ ! -x $VERSITYGW_BIN ]]; then
        die "stack not installed (or versions changed): run scripts/stack.sh install"
    fi
    need_java17
}

check_kafka_installed() {  # kafka-up needs only Kafka's jars and Java
    [[ -f $KAFKA_HOME/lib/.stamp && $(cat "$KAFKA_HOME/lib/.stamp") == "$(kafka_stamp)" ]] \
        || die "Kafka $KAFKA_VERSION not installed in $KAFKA_HOME/lib: run scripts/stack.sh install"
    need_java17
}

# ---- kafka ---------------------------------------------------------------------------------------
# kafka_cmd HEAP ARGS...: sets KAFKA_CMD, the JVM command line shared by StorageTool and the broker.
# An array, not a string: the classpath wildcard 'lib/*' must reach java unexpanded.
kafka_cmd() {
    local heap=$1; shift
    local -a heap_opts
    read -r -a heap_opts <<<"$heap"
    KAFKA_CMD=(java "${heap_opts[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$REPO_DIR/stack/kafka/log4j2.properties"
        "-Dkafka.logs.dir=$LOG_DIR" -cp "$KAFKA_HOME/lib/*" "$@")
}

# ---- kafka credentials (README "Security") -------------------------------------------------------
# One SCRAM-SHA-512 principal per service: admin (the broker itself and the stack's tools; the only super user),
# api and worker (their ACLs: tools/kafka_acls.py). Passwords are generated once per stack (or taken from
# KAFKA_ADMIN_PASSWORD, KAFKA_API_PASSWORD, KAFKA_WORKER_PASSWORD) into $KAFKA_CREDENTIALS, mode 600; they are
# never printed and never on a command line (ps shows every argv). Clients in development mode (make, the tests,
# the demo) read that file (streams/kafka_security.py); production sets KAFKA_SASL_USERNAME/PASSWORD.
KAFKA_CREDENTIALS=$KAFKA_HOME/credentials.env
KAFKA_PRINCIPALS=(admin api worker)
# The worker principal's consumer groups and internal topics (changelogs, repartitions): every app id the stack
# runs (waste-analysis, and the tests', benchmarks' and demo's waste-test-*, waste-bench-*, waste-demo-*, ...).
KAFKA_WORKER_PREFIX=${KAFKA_WORKER_PREFIX:-waste-}

kafka_password() {  # kafka_password NAME -> that principal's password (from the credentials file)
    awk -F= -v k="KAFKA_$(tr '[:lower:]' '[:upper:]' <<<"$1")_PASSWORD" \
        '$1 == k { print substr($0, length(k) + 2); found = 1; exit } END { exit !found }' "$KAFKA_CREDENTIALS"
}

kafka_credentials() {
    [[ -s $KAFKA_CREDENTIALS ]] && return 0
    mkdir -p "$KAFKA_HOME"
    local name var pw
    rm -f "$KAFKA_CREDENTIALS.tmp"
    (
        umask 077
        {
            echo "# Kafka credentials of this stack (scripts/stack.sh; mode 600). Not to be printed or committed."
            echo "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"
            echo "KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
            for name in "${KAFKA_PRINCIPALS[@]}"; do
                var=KAFKA_$(tr '[:lower:]' '[:upper:]' <<<"$name")_PASSWORD
                pw=${!var:-$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-32)}
                [[ $pw =~ ^[A-Za-z0-9._~-]{16,}$ ]] \
                    || { echo "[stack] ERROR: $var must be 16 or more of A-Z a-z 0-9 . _ ~ -" >&2; exit 1; }
                echo "$var=$pw"
            done
        } >"$KAFKA_CREDENTIALS.tmp"
    ) || die "kafka: could not write $KAFKA_CREDENTIALS"
    mv -f "$KAFKA_CREDENTIALS.tmp" "$KAFKA_CREDENTIALS"
    say "kafka: SCRAM credentials for ${KAFKA_PRINCIPALS[*]} written to $KAFKA_CREDENTIALS (mode 600)"
}

kafka_credentials_digest() { sha256sum "$KAFKA_CREDENTIALS" | cut -d' ' -f1; }

# ---- kafka nodes ----------------------------------------------------------------------------------
# kafka_nodes: the node list, from STACK_KAFKA_BROKERS.
# One node (the default): name "kafka" (pid file, log kafka.log), client port $KAFKA_PORT, controller port
#   $KAFKA_CONTROLLER_PORT, data $KAFKA_HOME/data, config $KAFKA_HOME/server.properties.
# Three nodes: names kafka-1..kafka-3 (logs kafka-N.log), ports from KAFKA_PORTS / KAFKA_CONTROLLER_PORTS, data
#   $KAFKA_HOME/node-N, configs server-N.properties: other files than the single node's, so switching between the
#   two on one STACK_DIR never formats the other's storage.
# Replication: factor min(nodes, 3); min.insync.replicas 2 from three replicas on (a majority), else 1.
kafka_nodes() {
    local n=$STACK_KAFKA_BROKERS i
    [[ $n == 1 || $n == 3 ]] || die "STACK_KAFKA_BROKERS must be 1 or 3 (got '$n')"
    KAFKA_NAMES=() KAFKA_CLIENT_PORTS=() KAFKA_CTRL_PORTS=() KAFKA_DIRS=() KAFKA_CONFIGS=()
    if (( n == 1 )); then
        KAFKA_NAMES=(kafka) KAFKA_CLIENT_PORTS=("$KAFKA_PORT") KAFKA_CTRL_PORTS=("$KAFKA_CONTROLLER_PORT")
        KAFKA_DIRS=("$KAFKA_DATA") KAFKA_CONFIGS=("$KAFKA_HOME/server.properties")
        : "${KAFKA_HEAP_OPTS:=-Xms256m -Xmx512m}"
    else
        local -a ports ctrl
        IFS=, read -r -a ports <<<"${KAFKA_PORTS:-$KAFKA_PORT,$((KAFKA_PORT + 2)),$((KAFKA_PORT + 4))}"
        IFS=, read -r -a ctrl <<<"${KAFKA_CONTROLLER_PORTS:-$KAFKA_CONTROLLER_PORT,$((KAFKA_CONTROLLER_PORT + 2)),$((KAFKA_CONTROLLER_PORT + 4))}"
        (( ${#ports[@]} == n && ${#ctrl[@]} == n )) || die "KAFKA_PORTS and KAFKA_CONTROLLER_PORTS need $n ports each"
        for (( i = 1; i <= n; i++ )); do
            KAFKA_NAMES+=("kafka-$i") KAFKA_CLIENT_PORTS+=("${ports[i-1]}") KAFKA_CTRL_PORTS+=("${ctrl[i-1]}")
            KAFKA_DIRS+=("$KAFKA_HOME/node-$i") KAFKA_CONFIGS+=("$KAFKA_HOME/server-$i.properties")
        done
        : "${KAFKA_HEAP_OPTS:=-Xms128m -Xmx384m}"
    fi
    KAFKA_RF=$(( n < 3 ? n : 3 ))
    KAFKA_MIN_ISR=$(( KAFKA_RF >= 3 ? KAFKA_RF / 2 + 1 : 1 ))
    KAFKA_VOTERS="" KAFKA_BOOTSTRAP=""
    for i in "${!KAFKA_NAMES[@]}"; do
        KAFKA_VOTERS+="${KAFKA_VOTERS:+,}$((i + 1))@127.0.0.1:${KAFKA_CTRL_PORTS[i]}"
        KAFKA_BOOTSTRAP+="${KAFKA_BOOTSTRAP:+,}127.0.0.1:${KAFKA_CLIENT_PORTS[i]}"
    done
}

# What the stack's own clients (ACLs, topics, the relay) get: every node, and the replication of the node count.
kafka_client_env() {
    echo "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP" "TOPIC_REPLICATION_FACTOR=$KAFKA_RF" \
        "TOPIC_MIN_INSYNC_REPLICAS=$KAFKA_MIN_ISR"
}

kafka_render_config() {  # kafka_render_config INDEX
    local i=$1 text admin_pw config=${KAFKA_CONFIGS[$1]}
    kafka_credentials
    admin_pw=$(kafka_password admin) || die "kafka: no admin password in $KAFKA_CREDENTIALS"
    text=$(sed -e "s#@KAFKA_PORT@#${KAFKA_CLIENT_PORTS[i]}#g" \
        -e "s#@KAFKA_CONTROLLER_PORT@#${KAFKA_CTRL_PORTS[i]}#g" \
        -e "s#@KAFKA_NODE_ID@#$((i + 1))#g" \
        -e "s#@KAFKA_QUORUM_VOTERS@#$KAFKA_VOTERS#g" \
        -e "s#@KAFKA_REPLICATION_FACTOR@#$KAFKA_RF#g" \
        -e "s#@KAFKA_MIN_INSYNC_REPLICAS@#$KAFKA_MIN_ISR#g" \
        -e "s#@KAFKA_DATA_DIR@#${KAFKA_DIRS[i]}#g" \
        stack/kafka/server.properties.in)
    # The password is substituted by the shell (no sed argv) into a file only we can read.
    rm -f "$config"
    (umask 077; printf '%s\n' "${text//@KAFKA_ADMIN_PASSWORD@/$admin_pw}" >"$config")
}

# Cluster ids are 16 random bytes, base64url without padding (22 chars). Kafka never starts one
# with '-' (the CLI would read it as an option); neither do we.
kafka_cluster_id() {
    local id
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
    [[ $id == -* ]] && id="A${id:1}"
    echo "$id"
}

# kafka_formatted INDEX: that node's storage is formatted for these credentials (and, in a cluster, this quorum).
kafka_formatted() {
    local dir=${KAFKA_DIRS[$1]}
    [[ -f $dir/meta.properties && -f $dir/.scram-credentials \
        && $(cat "$dir/.scram-credentials") == "$(kafka_credentials_digest)" ]] || return 1
    (( ${#KAFKA_NAMES[@]} == 1 )) || [[ $(cat "$dir/.quorum" 2>/dev/null) == "$KAFKA_VOTERS" ]]
}

kafka_format_once() {
    # SCRAM users live in the metadata log: they are added when the storage is formatted (the broker cannot
    # authenticate anyone, itself included, before). A storage formatted before SASL, or for other passwords
    # (or, for a cluster, another quorum), is formatted again: a dev stack's topics are recreated by `up`, its data
    # is disposable. A cluster's nodes share one cluster id, so they are formatted together, none of them running.
    local i all=1 name
    for i in "${!KAFKA_NAMES[@]}"; do kafka_formatted "$i" || all=0; done
    (( all )) && return 0
    for name in "${KAFKA_NAMES[@]}"; do
        pid_is "$(read_pid "$name")" kafka.Kafka \
            && die "kafka: $name runs on storage that must be formatted again (new credentials or quorum): scripts/stack.sh kafka-down first"
    done
    local cluster_id pid failed=0; cluster_id=$(kafka_cluster_id)
    local -a pids=()
    for i in "${!KAFKA_NAMES[@]}"; do   # in parallel: each format is a JVM start of its own
        kafka_format_node "$i" "$cluster_id" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    (( failed == 0 )) || die "kafka storage format failed (see above)"
}

kafka_format_node() {  # kafka_format_node INDEX CLUSTER_ID
    local i=$1 dir=${KAFKA_DIRS[$1]} name=${KAFKA_NAMES[$1]}
    [[ -f $dir/meta.properties ]] \
        && say "$name: the storage in $dir has no SCRAM users for $KAFKA_CREDENTIALS (or another quorum): formatting it again (its topics and offsets are dropped)"
    rm -rf "$dir"
    mkdir -p "$dir"
    say "$name: formatting storage in $dir with SCRAM users ${KAFKA_PRINCIPALS[*]}"
    # The command line goes through a mode-600 argument file (java @file), so no password is ever in argv.
    local args=$KAFKA_HOME/format-$name.args pw arg rc=0 principal
    local -a scram=()
    for principal in "${KAFKA_PRINCIPALS[@]}"; do
        pw=$(kafka_password "$principal") || die "kafka: no password for $principal in $KAFKA_CREDENTIALS"
        scram+=(--add-scram "SCRAM-SHA-512=[name=$principal,password=$pw]")
    done
    # Every node of a cluster gets the same cluster id and the same SCRAM users (the static quorum of
    # controller.quorum.voters needs neither --standalone nor --initial-controllers).
    kafka_cmd -Xmx256m kafka.tools.StorageTool format -t "$2" -c "${KAFKA_CONFIGS[i]}" "${scram[@]}"
    rm -f "$args"
    (
        umask 077
        for arg in "${KAFKA_CMD[@]:1}"; do   # every argument but `java`, quoted for the argument file
            arg=${arg//\\/\\\\}
            printf '"%s"\n' "${arg//\"/\\\"}"
        done >"$args"
    )
    java "@$args" >>"$LOG_DIR/$name.log" 2>&1 || rc=$?
    rm -f "$args"
    (( rc == 0 )) || { tail -n 20 "$LOG_DIR/$name.log" >&2; die "kafka storage format failed ($name)"; }
    kafka_credentials_digest >"$dir/.scram-credentials"
    (( ${#KAFKA_NAMES[@]} == 1 )) || echo "$KAFKA_VOTERS" >"$dir/.quorum"
}

kafka_started() {  # kafka_started INDEX: the node logs this line once it serves clients
    port_open "${KAFKA_CLIENT_PORTS[$1]}" && grep -q 'Kafka Server started' "$LOG_DIR/${KAFKA_NAMES[$1]}.log"
}

# Launch without waiting: the JVMs take longest, so the other services start meanwhile. Nodes already running
# are left alone (`up` after a node died starts that node only).
kafka_launch() {
    KAFKA_PENDING=()
    local i name pid
    local -a missing=()
    for i in "${!KAFKA_NAMES[@]}"; do
        already_up "${KAFKA_NAMES[i]}" kafka.Kafka "${KAFKA_CLIENT_PORTS[i]}" && continue
        port_open "${KAFKA_CTRL_PORTS[i]}" && die "${KAFKA_NAMES[i]}: controller port ${KAFKA_CTRL_PORTS[i]} is already in use"
        missing+=("$i")
    done
    (( ${#missing[@]} )) || return 0
    mkdir -p "$KAFKA_HOME" "$LOG_DIR"
    for i in "${missing[@]}"; do
        kafka_render_config "$i"
        # A fresh log per start, so the readiness grep only sees this run's lines.
        name=${KAFKA_NAMES[i]}
        [[ -f $LOG_DIR/$name.log ]] && mv -f "$LOG_DIR/$name.log" "$LOG_DIR/$name.log.1"
    done
    kafka_format_once
    for i in "${missing[@]}"; do
        name=${KAFKA_NAMES[i]}
        kafka_cmd "$KAFKA_HEAP_OPTS" kafka.Kafka "${KAFKA_CONFIGS[i]}"
        launch "$name" "${KAFKA_CMD[@]}"
        pid=$(read_pid "$name")
        KAFKA_PENDING+=("$i")
        say "$name: starting $KAFKA_VERSION (pid $pid, port ${KAFKA_CLIENT_PORTS[i]}, controller ${KAFKA_CTRL_PORTS[i]})"
    done
}

kafka_wait() {
    local i
    for i in "${KAFKA_PENDING[@]}"; do
        wait_until "$STACK_TIMEOUT" "${KAFKA_NAMES[i]}" "$(read_pid "${KAFKA_NAMES[i]}")" kafka_started "$i" \
            || die "${KAFKA_NAMES[i]} failed to start"
        say "${KAFKA_NAMES[i]}: ready"
    done
    KAFKA_PENDING=()
}

kafka_down() {
    # Every node this STACK_DIR has a pid file for, whatever STACK_KAFKA_BROKERS says now. A cluster's nodes are
    # stopped together (TERM to all, then each waited for): one by one, the last ones would wait for a quorum
    # that is gone.
    local f name
    local -a names=()
    for f in "$RUN_DIR"/kafka.pid "$RUN_DIR"/kafka-[0-9]*.pid; do
        [[ -e $f ]] && { name=${f##*/}; names+=("${name%.pid}"); }
    done
    if (( ${#names[@]} == 0 )); then stop kafka kafka.Kafka 45; return 0; fi
    for name in "${names[@]}"; do
        pid_is "$(read_pid "$name")" kafka.Kafka && kill -TERM "$(read_pid "$name")" 2>/dev/null || true
    done
    for name in "${names[@]}"; do
        stop "$name" kafka.Kafka 45   # controlled shutdown takes a few seconds
    done
}

kafka_summary() {
    (( ${#KAFKA_NAMES[@]} > 1 )) || return 0
    say "kafka: ${#KAFKA_NAMES[@]} brokers, topics with replication factor $KAFKA_RF and min.insync.replicas $KAFKA_MIN_ISR; clients need: $(kafka_client_env | cut -d' ' -f1-2)"
}

# ---- redis ---------------------------------------------------------------------------------------
redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_up() {
    already_up redis redis-server "$REDIS_PORT" && return 0
    mkdir -p "$STACK_DIR/redis"
    # A cache only: no RDB snapshots, no AOF. --dir keeps any stray file inside .stack.
    # Persistence as production runs it: an append-only file fsynced every second (a crash loses at most the
    # last second of writes), no RDB snapshots. A restart then keeps the 7-day cache and the near-duplicate index.
    launch redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no \
        --save '' --appendonly yes --appendfsync everysec --dir "$STACK_DIR/redis"
    wait_until "$STACK_TIMEOUT" redis "$(read_pid redis)" redis_ping || die "redis failed to start"
    say "redis: ready (pid $(read_pid redis), port $REDIS_PORT)"
}

# ---- redis cluster (STACK_REDIS_CLUSTER=1, or `scripts/stack.sh redis-cluster-up`) ----------------------------
REDIS_CLUSTER_NODES=6
redis_cluster_ports() { seq "$REDIS_CLUSTER_PORT" $(( REDIS_CLUSTER_PORT + REDIS_CLUSTER_NODES - 1 )); }
redis_cluster_ok() {
    redis-cli -h 127.0.0.1 -p "$REDIS_CLUSTER_PORT" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

redis_cluster_up() {
    local port dir nodes=()
    for port in $(redis_cluster_ports); do
        nodes+=("127.0.0.1:$port")
        already_up "redis-$port" redis-server "$port" && continue
        dir=$STACK_DIR/redis-cluster/$port
        mkdir -p "$dir"
        launch "redis-$port" redis-server --port "$port" --bind 127.0.0.1 --daemonize no \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 3000 \
            --save '' --appendonly yes --appendfsync everysec --dir "$dir"
    done
    for port in $(redis_cluster_ports); do
        wait_until "$STACK_TIMEOUT" "redis-$port" "$(read_pid "redis-$port")" \
            eval "[[ \$(redis-cli -h 127.0.0.1 -p $port ping 2>/dev/null) == PONG ]]" || die "redis $port failed to start"
    done
    # First start: no slots assigned yet (nodes.conf keeps the cluster across restarts).
    if redis-cli -h 127.0.0.1 -p "$REDIS_CLUSTER_PORT" cluster info | grep -q '^cluster_slots_assigned:0'; then
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >>"$LOG_DIR/redis-cluster.log" 2>&1 \
            || die "redis-cli --cluster create failed (see $LOG_DIR/redis-cluster.log)"
    fi
    wait_until "$STACK_TIMEOUT" redis-cluster "" redis_cluster_ok || die "redis cluster not ok"
    say "redis-cluster: ready (ports ${nodes[0]##*:}-${nodes[-1]##*:}, REDIS_URL=redis+cluster://127.0.0.1:$REDIS_CLUSTER_PORT/0)"
}

redis_cluster_down() {
    local port
    for port in $(redis_cluster_ports); do
        [[ -n $(read_pid "redis-$port") ]] && stop "redis-$port" redis-server 10
    done
    return 0
}

# ---- S3 (versitygw) ------------------------------------------------------------------------------
s3_healthy() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/_health") == 200 ]]; }

# The posix backend keeps object metadata in user xattrs; on a filesystem without them
# (e.g. some tmpfs/overlay setups) versitygw refuses to start, so a sidecar dir is used instead.
s3_supports_xattr() {
    local probe=$S3_DATA/.xattr-probe rc=0
    : >"$probe"
    if command -v setfattr >/dev/null; then
        setfattr -n user.stack.probe -v 1 "$probe" 2>/dev/null || rc=1
    else
        "$PYTHON" -c 'import os,sys; os.setxattr(sys.argv[1], "user.stack.probe", b"1")' "$probe" 2>/dev/null || rc=1
    fi
    rm -f "$probe"
    return $rc
}

# What the running S3 server was started with must match STACK_STORAGE_EVENTS: one started before the storage
# events (or with them, when they are now off) is restarted, which takes a second.
s3_events_match() {
    local pid; pid=$(read_pid s3)
    pid_is "$pid" versitygw || return 0
    local has=0
    pid_is "$pid" "--event-webhook-url" && has=1
    [[ $has == "$STACK_STORAGE_EVENTS" ]]
}

s3_up() {
    if ! s3_events_match; then
        say "s3: restarting to switch bucket notifications $([[ $STACK_STORAGE_EVENTS == 1 ]] && echo on || echo off)"
        stop s3 versitygw 10
    fi
    already_up s3 versitygw "$S3_PORT" && return 0
    mkdir -p "$S3_DATA"
    local backend=(posix)
    if ! s3_supports_xattr; then
        mkdir -p "$S3_SIDECAR"
        backend+=(--sidecar "$S3_SIDECAR")
        say "s3: no user xattrs on $S3_DATA, using sidecar metadata in $S3_SIDECAR"
    fi
    # Bucket notifications (docs/STORAGE_EVENTS.md): ObjectCreated only (stack/s3-event-filter.json), posted to the
    # relay. versitygw sends a test event at start-up and refuses to start when the relay does not answer.
    local events=()
    if [[ $STACK_STORAGE_EVENTS == 1 ]]; then
        events=(--event-webhook-url "http://127.0.0.1:$STORAGE_EVENTS_PORT/events"
                --event-filter "$REPO_DIR/stack/s3-event-filter.json")
    fi
    # Credentials through the environment, not argv (argv is visible to every user in ps).
    ROOT_ACCESS_KEY=$S3_ACCESS_KEY ROOT_SECRET_KEY=$S3_SECRET_KEY \
        launch s3 "$VERSITYGW_BIN" --port "127.0.0.1:$S3_PORT" --region us-east-1 \
        --health /_health --keep-alive --quiet --cors-allow-origin '*' "${events[@]}" \
        "${backend[@]}" "$S3_DATA"
    wait_until "$STACK_TIMEOUT" s3 "$(read_pid s3)" s3_healthy || die "S3 server failed to start"
    say "s3: ready (versitygw $VERSITYGW_VERSION, pid $(read_pid s3), port $S3_PORT)"
}

# ---- storage-event relay (versitygw webhook -> Kafka) ---------------------------------------------
relay_ready() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$STORAGE_EVENTS_PORT/healthz") == 200 ]]
}

relay_up() {  # needs Kafka and its topics; the S3 server needs it
    [[ $STACK_STORAGE_EVENTS == 1 ]] || { say "relay: skipped (STACK_STORAGE_EVENTS=0)"; return 0; }
    already_up relay tools.storage_event_relay "$STORAGE_EVENTS_PORT" && return 0
    APP_ENV=development STACK_DIR=$STACK_DIR KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP \
        TOPIC_REPLICATION_FACTOR=$KAFKA_RF TOPIC_MIN_INSYNC_REPLICAS=$KAFKA_MIN_ISR \
        launch relay "$PYTHON" -m tools.storage_event_relay --host 127.0.0.1 --port "$STORAGE_EVENTS_PORT"
    wait_until "$STACK_TIMEOUT" relay "$(read_pid relay)" relay_ready || die "storage-event relay failed to start"
    say "relay: ready (pid $(read_pid relay), port $STORAGE_EVENTS_PORT -> topic waste.storage.events)"
}

kafka_acls() {
    # What each principal may do (tools/kafka_acls.py); idempotent. The admin principal applies them.
    if [[ ! -s $KAFKA_CREDENTIALS ]]; then
        warn "kafka: this broker was started before SASL/ACLs were configured and accepts anonymous clients; restart the stack (scripts/stack.sh down; scripts/stack.sh up) to close it"
        return 0
    fi
    APP_ENV=development STACK_DIR=$STACK_DIR KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP \
        TOPIC_REPLICATION_FACTOR=$KAFKA_RF TOPIC_MIN_INSYNC_REPLICAS=$KAFKA_MIN_ISR \
        "$PYTHON" -m tools.kafka_acls apply --worker-prefix "$KAFKA_WORKER_PREFIX" \
        | sed 's/^/[stack] acls: /' || die "setting the Kafka ACLs failed"
}

kafka_topics() {
    # The pipeline's topics with their partition counts, before any client can auto-create one with a single
    # partition (tools/kafka_admin.py), replicated as the node count says. Existing topics are left as they are.
    # As the admin principal: development mode reads the stack's credentials file (streams/kafka_security.py).
    APP_ENV=development STACK_DIR=$STACK_DIR KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP \
        TOPIC_REPLICATION_FACTOR=$KAFKA_RF TOPIC_MIN_INSYNC_REPLICAS=$KAFKA_MIN_ISR "$PYTHON" -m tools.kafka_admin create-topics \
        | sed 's/^/[stack] topics: /' || die "creating the Kafka topics failed"
}

s3_bootstrap() {
    [[ -x $PYTHON ]] || die "$PYTHON not found: create the venv (python3.11 -m venv .venv && .venv/bin/pip install -c constraints.txt .) or set PYTHON"
    local endpoint="http://127.0.0.1:$S3_PORT"
    S3_ENDPOINT_URL=$endpoint S3_ACCESS_KEY=$S3_ACCESS_KEY S3_SECRET_KEY=$S3_SECRET_KEY \
        S3_BUCKET_NAME=$S3_BUCKET_NAME "$PYTHON" scripts/s3_bootstrap.py | sed 's/^/[stack] /' \
        || die "bucket bootstrap failed"
}

# ---- CDN edge (Varnish) --------------------------------------------------------------------------
# edge_dir: make $EDGE_DIR (mode 755, so Varnish's users can read it) and refuse one we do not own: in a shared
# /tmp another user could have made it first, or left a symlink, to feed Varnish their VCL.
edge_dir() {
    [[ -L $EDGE_DIR ]] && die "edge: $EDGE_DIR is a symlink; remove it or set EDGE_DIR to a folder of your own"
    if [[ -e $EDGE_DIR ]]; then
        [[ -d $EDGE_DIR && -O $EDGE_DIR ]] || die "edge: $EDGE_DIR is not a folder owned by $(id -un); remove it or set EDGE_DIR"
    else
        mkdir -m 755 "$EDGE_DIR" || die "edge: cannot create $EDGE_DIR; set EDGE_DIR to a folder Varnish's users can read"
    fi
    chmod 755 "$EDGE_DIR"
    mkdir -p "$VARNISH_DIR"
    # Every folder above it must be traversable by Varnish's users (a private TMPDIR would not be).
    local d=$EDGE_DIR
    while [[ $d != / ]]; do
        d=$(dirname "$d")
        [[ $(stat -c %a "$d") =~ [1357]$ ]] \
            || die "edge: Varnish's users cannot reach $EDGE_DIR ($d is not world-traversable); set EDGE_DIR to a folder under one that is, e.g. EDGE_DIR=/tmp/waste-edge-$(id -u)-$CDN_PORT"
    done
}

edge_answers() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CDN_PORT/") != 000 ]]; }

edge_up() {
    already_up edge varnishd "$CDN_PORT" && return 0
    edge_dir
    # TTLs and response headers come from infra/cdn-policy.json, the file CloudFront's Terraform reads too.
    "$PYTHON" -m tools.edge_vcl --origin-host 127.0.0.1 --origin-port "$S3_PORT" --out "$EDGE_DIR/edge.vcl.tmp" \
        || die "edge: rendering stack/edge.vcl from infra/cdn-policy.json failed"
    chmod 644 "$EDGE_DIR/edge.vcl.tmp" && mv -f "$EDGE_DIR/edge.vcl.tmp" "$EDGE_DIR/edge.vcl"
    # Foreground (-F) so the PID we record is varnishd's manager; TERM on it stops the cache child too.
    # -T on an ephemeral localhost port keeps varnishadm (ban/purge by hand) usable with -n.
    launch edge varnishd -F -a "127.0.0.1:$CDN_PORT" -T 127.0.0.1:0 -n "$VARNISH_DIR" \
        -f "$EDGE_DIR/edge.vcl" -s malloc,256m -p default_grace=0
    wait_until "$STACK_TIMEOUT" edge "$(read_pid edge)" edge_answers || die "varnish failed to start"
    say "edge: ready (varnish, pid $(read_pid edge), port $CDN_PORT -> origin 127.0.0.1:$S3_PORT)"
}

# The edge's counters (varnishstat -j, read at each scrape) as Prometheus metrics: requests, bytes, hit rate.
edge_exporter_ready() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EDGE_EXPORTER_PORT/metrics") == 200 ]]
}

edge_exporter_up() {
    already_up edge-exporter tools.edge_exporter "$EDGE_EXPORTER_PORT" && return 0
    launch edge-exporter "$PYTHON" -m tools.edge_exporter --host 127.0.0.1 --port "$EDGE_EXPORTER_PORT" \
        --varnish-dir "$VARNISH_DIR"
    wait_until "$STACK_TIMEOUT" edge-exporter "$(read_pid edge-exporter)" edge_exporter_ready \
        || die "edge exporter failed to start"
    say "edge-exporter: ready (pid $(read_pid edge-exporter), http://127.0.0.1:$EDGE_EXPORTER_PORT/metrics)"
}

# ---- vision-model simulator ----------------------------------------------------------------------
simulator_ready() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SIMULATOR_PORT/_sim/stats") == 200 ]]
}

# Returns non-zero (without exiting) on failure: the infrastructure above stays usable.
simulator_up() {
    if [[ ${STACK_SIMULATOR:-1} == 0 ]]; then say "simulator: skipped (STACK_SIMULATOR=0)"; return 0; fi
    if [[ ! -x $PYTHON ]]; then say "simulator: skipped ($PYTHON not found)"; return 0; fi
    if [[ ! -f simulator/__main__.py ]]; then say "simulator: skipped (simulator/__main__.py not there yet)"; return 0; fi
    if already_up simulator "simulator" "$SIMULATOR_PORT"; then return 0; fi
    launch simulator "$PYTHON" -m simulator --host 127.0.0.1 --port "$SIMULATOR_PORT"
    if ! wait_until "$STACK_TIMEOUT" simulator "$(read_pid simulator)" simulator_ready; then
        stop simulator "simulator" 5 >/dev/null
        return 1
    fi
    say "simulator: ready (pid $(read_pid simulator), port $SIMULATOR_PORT)"
}

# ---- commands ------------------------------------------------------------------------------------
cmd_up() {
    local t0; t0=$(now)
    [[ ${STACK_RESET:-0} == 1 ]] && cmd_reset
    check_installed
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    kafka_launch
    redis_up
    [[ $STACK_REDIS_CLUSTER == 1 ]] && redis_cluster_up
    edge_up   # answers (503) until the S3 server behind it is up
    edge_exporter_up
    local sim_ok=0
    simulator_up || sim_ok=1
    kafka_wait
    kafka_acls
    kafka_topics
    # The S3 server after Kafka: its bucket notifications go through the relay, which must reach the topic.
    relay_up
    s3_up
    s3_bootstrap
    kafka_summary
    if (( sim_ok != 0 )); then
        die "simulator failed to start (see $LOG_DIR/simulator.log); the other services are up ($(since "$t0")s)"
    fi
    say "up: all services ready in $(since "$t0")s"
}

cmd_app_down() {
    stop api "-m api" 15
    stop worker "streams.app" 45
    stop worker-2 "streams.app" 45  # make demo runs two workers in one group (tools/demo.py)
}

cmd_down() {
    # Reverse order of dependence: clients of the broker/S3 first. The API and the worker are started
    # by `make demo` (tools/demo.py) with pid files here; when nothing started them this is a no-op.
    stop api "-m api" 15
    stop worker "streams.app" 45
    stop worker-2 "streams.app" 45
    stop simulator "simulator" 10
    stop edge-exporter tools.edge_exporter 10
    stop edge varnishd 10
    stop s3 versitygw 10
    stop relay tools.storage_event_relay 10
    kafka_down
    stop redis redis-server 10
    redis_cluster_down
}

# name pattern port
SERVICES=(
    "kafka kafka.Kafka KAFKA_PORT"
    "redis redis-server REDIS_PORT"
    "s3 versitygw S3_PORT"
    "relay tools.storage_event_relay STORAGE_EVENTS_PORT"
    "edge varnishd CDN_PORT"
    "edge-exporter tools.edge_exporter EDGE_EXPORTER_PORT"
    "simulator simulator SIMULATOR_PORT"
)

cmd_status() {
    local line name pattern portvar pid state i
    for line in "${SERVICES[@]}"; do
        read -r name pattern portvar <<<"$line"
        if [[ $name == kafka ]] && (( ${#KAFKA_NAMES[@]} > 1 )); then   # a cluster: one line per node
            for i in "${!KAFKA_NAMES[@]}"; do
                pid=$(read_pid "${KAFKA_NAMES[i]}")
                if pid_is "$pid" kafka.Kafka; then
                    port_open "${KAFKA_CLIENT_PORTS[i]}" && state=running || state=starting
                else
                    state=stopped; pid=-
                fi
                printf '%-10s %-8s pid=%-8s port=%s\n' "${KAFKA_NAMES[i]}" "$state" "$pid" "${KAFKA_CLIENT_PORTS[i]}"
            done
            continue
        fi
        pid=$(read_pid "$name")
        if pid_is "$pid" "$pattern"; then
            port_open "${!portvar}" && state=running || state=starting
        else
            state=stopped; pid=-
        fi
        printf '%-10s %-8s pid=%-8s port=%s\n' "$name" "$state" "$pid" "${!portvar}"
    done
}

cmd_reset() {
    cmd_down
    say "reset: wiping Kafka data and S3 data (downloads kept)"
    rm -rf "$KAFKA_DATA" "$KAFKA_HOME/server.properties" "$KAFKA_HOME"/node-[0-9]* "$KAFKA_HOME"/server-[0-9]*.properties "$S3_DATA" "$S3_SIDECAR" "$STACK_DIR/redis" "$EDGE_DIR" \
        "$STACK_DIR/redis-cluster"
}

main() {
    kafka_nodes
    case ${1:-} in
        install) cmd_install ;;
        up) cmd_up ;;
        down) cmd_down ;;
        app-down) cmd_app_down ;;
        redis-cluster-up) mkdir -p "$RUN_DIR" "$LOG_DIR"; redis_cluster_up ;;
        redis-cluster-down) redis_cluster_down ;;
        kafka-up) check_kafka_installed; mkdir -p "$RUN_DIR" "$LOG_DIR"; kafka_launch; kafka_wait; kafka_acls; kafka_topics; kafka_summary ;;
        kafka-down) kafka_down ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        *) echo "usage: $0 {install|up|down|app-down|status|reset|redis-cluster-up|redis-cluster-down|kafka-up|kafka-down}" >&2; exit 2 ;;
    esac
}

main "$@"
