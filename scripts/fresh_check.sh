#!/usr/bin/env bash
# Prove the README's two commands on a fresh system: a minimal Debian root (debootstrap) with only make,
# python3 and root, a clean clone of this repository in a private (mode 700) folder inside it, and nothing
# beside the clone; then `make demo` and `make test` there under chroot. Prints how long each step took and
# what the two commands installed. Not part of `make test` (it takes 20-40 minutes).
#
#   sudo scripts/fresh_check.sh              # the host's Debian release (else bookworm), HEAD of this clone
#   FRESH_SUITE=trixie FRESH_REF=main FRESH_KEEP=1 sudo scripts/fresh_check.sh
#   FRESH_ENV="STACK_INFRA_TOOLS=0" sudo scripts/fresh_check.sh     # extra settings for make demo / make test
#   FRESH_DIR=/var/tmp/waste-fresh-123 FRESH_REUSE=1 FRESH_STEPS=test sudo scripts/fresh_check.sh   # a kept root again
#
# FRESH_DIR (default /var/tmp/waste-fresh-<pid>) holds the root; it is deleted at the end unless the check
# failed or FRESH_KEEP=1. The package mirror is the one the host's apt uses (read from /etc/apt/sources.list*);
# the root gets the host's CA certificate store (package clients reach registries only through it where a
# proxy re-signs TLS) and the host's apt, pip, Maven and Go proxy settings. The chroot shares the host's
# network: every port whose default is taken on the host (another stack) is moved to a free one.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FRESH_REF=${FRESH_REF:-HEAD}
FRESH_KEEP=${FRESH_KEEP:-0}
FRESH_DIR=${FRESH_DIR:-/var/tmp/waste-fresh-$$}
ROOT=$FRESH_DIR/root
CLONE_IN_ROOT=/srv/private/waste-analysis   # /srv/private is mode 700, like a home folder

say() { printf '[fresh %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[fresh] ERROR: %s\n' "$*" >&2; exit 1; }
TIMES=()
step() {  # step NAME COMMAND...: run, time, remember
    local name=$1 t0 rc=0; shift
    say "== $name"
    t0=$(date +%s)
    "$@" || rc=$?
    local took=$(( $(date +%s) - t0 ))
    TIMES+=("$(printf '%-34s %4dm%02ds  %s' "$name" $((took / 60)) $((took % 60)) "$([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc)")")")
    say "== $name: $((took / 60))m$((took % 60))s, exit $rc"
    return $rc
}
summary() {
    echo
    echo "fresh check summary (root $ROOT, suite $SUITE, clone of $FRESH_REF = ${COMMIT:-?}):"
    local line; for line in "${TIMES[@]}"; do echo "  $line"; done
}

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, mount and chroot need it)"

# Mounts live in a mount namespace of their own: nothing can leak onto the host's mounts, and they vanish
# with the namespace even if this script is killed. They are also unmounted explicitly on exit.
if [[ -z ${FRESH_IN_NAMESPACE:-} ]]; then
    command -v unshare >/dev/null || die "unshare (util-linux) is needed"
    exec env FRESH_IN_NAMESPACE=1 FRESH_DIR="$FRESH_DIR" unshare --mount --propagation private -- "$0" "$@"
fi

# ---- the suite and the mirror the host's apt uses ----------------------------------------------------------
. /etc/os-release
if [[ -z ${FRESH_SUITE:-} ]]; then
    [[ ${ID:-} == debian && -n ${VERSION_CODENAME:-} ]] && FRESH_SUITE=$VERSION_CODENAME || FRESH_SUITE=bookworm
fi
SUITE=$FRESH_SUITE

mirror_for() {  # mirror_for SUITE: the first URI the host's apt sources give for that suite (deb lines only)
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk -v s="$1" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                     if ($(i + 1) == s) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v s="$1" 'BEGIN { RS = ""; FS = "\n" }
            { uris = ""; suites = ""; types = ""; enabled = 1
              for (i = 1; i <= NF; i++) {
                  if ($i ~ /^URIs:/) { v = $i; sub(/^URIs:[ \t]*/, "", v); uris = v }
                  if ($i ~ /^Suites:/) { v = $i; sub(/^Suites:[ \t]*/, "", v); suites = " " v " " }
                  if ($i ~ /^Types:/) types = " " $i " "
                  if ($i ~ /^Enabled:[ \t]*no/) enabled = 0 }
              if (enabled && types ~ / deb / && index(suites, " " s " ")) { split(uris, u, " "); print u[1]; exit } }' "$f"
    done
}
MIRROR=$(mirror_for "$SUITE" | head -n 1)
[[ -n $MIRROR ]] || MIRROR=$(mirror_for "${VERSION_CODENAME:-}" | head -n 1)
[[ -n $MIRROR ]] || die "no Debian mirror found in /etc/apt/sources.list* (for $SUITE); add one there"

# ---- free ports: the chroot shares the host's network --------------------------------------------------------
port_busy() { timeout 1 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# The app's own ports, plus every NAME_PORT=${NAME_PORT:-N} the clone's scripts/stack.sh declares (pick_ports).
declare -A PORTS=([API_PORT]=8080 [WORKER_WEB_PORT]=6066)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
free_port_run() {  # the first of six free ports in a row whose cluster-bus ports (+10000) are free too
    local base i ok
    for (( base = 21000; base < 29000; base += 10 )); do
        ok=1
        for (( i = 0; i < 6; i++ )); do
            if port_busy $((base + i)) || port_busy $((base + i + 10000)); then ok=0; break; fi
        done
        (( ok )) && { echo "$base"; return 0; }
    done
    return 1
}
pick_ports() {  # just before the commands run (the host's processes come and go): the env for the ports
    local var new moved=() other_stack=0 line
    while IFS= read -r line; do
        PORTS[${line%%=*}]=${line##*:-}
    done < <(grep -oE '^[A-Z0-9_]+_PORT=\$\{[A-Z0-9_]+_PORT:-[0-9]+' "$ROOT$CLONE_IN_ROOT/scripts/stack.sh")
    for var in KAFKA_PORT REDIS_PORT S3_PORT CDN_PORT SIMULATOR_PORT; do
        port_busy "${PORTS[$var]}" && other_stack=1
    done
    for var in "${!PORTS[@]}"; do
        # With another stack on the host, its services come and go (a test starts the Redis Cluster, a worker,
        # an API): every port moves, not only the ones busy right now.
        if port_busy "${PORTS[$var]}" || (( other_stack )); then
            if [[ $var == REDIS_CLUSTER_PORT ]]; then new=$(free_port_run); else new=$(free_port); fi
            moved+=("$var ${PORTS[$var]} -> $new")
            PORTS[$var]=$new
        fi
    done
    (( ${#moved[@]} == 0 )) || say "ports taken on the host, moved: ${moved[*]}"
    for var in "${!PORTS[@]}"; do ENV_PASS+=("$var=${PORTS[$var]}"); done
    # The app's settings follow the stack's ports.
    ENV_PASS+=("KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:${PORTS[KAFKA_PORT]}"
               "REDIS_URL=redis://127.0.0.1:${PORTS[REDIS_PORT]}/0"
               "S3_ENDPOINT_URL=http://127.0.0.1:${PORTS[S3_PORT]}"
               "CDN_BASE_URL=http://127.0.0.1:${PORTS[CDN_PORT]}/waste-images"
               "OPENAI_BASE_URL=http://127.0.0.1:${PORTS[SIMULATOR_PORT]}/v1")
}

# ---- cleanup --------------------------------------------------------------------------------------------------
MOUNTED=()
ENV_PASS=()
COMMIT=""
cleanup() {
    local rc=$?
    set +e
    if [[ -d $ROOT$CLONE_IN_ROOT ]] && (( ${#MOUNTED[@]} > 0 )); then
        say "stopping whatever the stack left running in the root"
        in_root "cd $CLONE_IN_ROOT && bash scripts/stack.sh down" >/dev/null 2>&1
    fi
    local i
    for (( i = ${#MOUNTED[@]} - 1; i >= 0; i-- )); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}"
    done
    summary
    if [[ $rc -eq 0 && $FRESH_KEEP != 1 ]]; then
        say "deleting $FRESH_DIR"
        rm -rf --one-file-system "$FRESH_DIR"
    else
        say "kept $FRESH_DIR (chroot $ROOT /bin/bash to look around)"
    fi
    say "exit $rc"
}
trap cleanup EXIT

# ---- steps ----------------------------------------------------------------------------------------------------
install_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
}

make_root() {
    [[ ! -e $ROOT ]] || die "$ROOT exists; remove it or set FRESH_DIR"
    mkdir -p "$FRESH_DIR"
    say "debootstrap --variant=minbase --include=make,python3 $SUITE from the host's mirror"
    debootstrap --variant=minbase --include=make,python3 "$SUITE" "$ROOT" "$MIRROR" >"$FRESH_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$FRESH_DIR/debootstrap.log" >&2; return 1; }
}

copy_host_config() {
    # CA certificates: the bundle, the hashed links and the certificates they point to, plus local CAs, so that
    # a later `update-ca-certificates` (the ca-certificates package) rebuilds the same store.
    mkdir -p "$ROOT/etc/ssl" "$ROOT/usr/share" "$ROOT/usr/local/share"
    cp -a /etc/ssl/certs "$ROOT/etc/ssl/" || return 1
    [[ -d /usr/share/ca-certificates ]] && cp -a /usr/share/ca-certificates "$ROOT/usr/share/"
    [[ -d /usr/local/share/ca-certificates ]] && cp -a /usr/local/share/ca-certificates "$ROOT/usr/local/share/"
    [[ -f /etc/ca-certificates.conf ]] && cp -a /etc/ca-certificates.conf "$ROOT/etc/"
    # apt: the host's sources when it runs the same release (updates, security), and its Acquire settings.
    if [[ ${VERSION_CODENAME:-} == "$SUITE" ]]; then
        cp -a /etc/apt/sources.list.d/. "$ROOT/etc/apt/sources.list.d/"
        if [[ -f /etc/apt/sources.list ]]; then cp -a /etc/apt/sources.list "$ROOT/etc/apt/"; else : >"$ROOT/etc/apt/sources.list"; fi
    fi
    local f
    for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
        [[ -f $f ]] && grep -qE '^[[:space:]]*Acquire' "$f" && cp -a "$f" "$ROOT$f"
    done
    # pip and Maven settings (index mirrors, certificates, proxies), where the host has them.
    for f in /etc/pip.conf /etc/xdg/pip/pip.conf /root/.config/pip/pip.conf /root/.pip/pip.conf /root/.m2/settings.xml; do
        [[ -f $f ]] && mkdir -p "$(dirname "$ROOT$f")" && cp -a "$f" "$ROOT$f"
    done
    # Name resolution; and no service may start inside the root (no init system; the network is the host's).
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    [[ -f /etc/hosts ]] && cp -a /etc/hosts "$ROOT/etc/hosts"
    printf '#!/bin/sh\n# fresh_check: no services start in this chroot\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    # The environment the commands run with: proxies and the Go proxy settings of the host, nothing else.
    ENV_PASS=()
    local v
    for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY ALL_PROXY all_proxy \
             SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE PIP_CERT PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST \
             PIP_DEFAULT_TIMEOUT PIP_DISABLE_PIP_VERSION_CHECK; do
        [[ -n ${!v:-} ]] && ENV_PASS+=("$v=${!v}")
    done
    # FRESH_ENV="NAME=value ...": extra settings for the commands (e.g. FRESH_ENV=STACK_INFRA_TOOLS=0).
    for v in ${FRESH_ENV:-}; do ENV_PASS+=("$v"); done
    if command -v go >/dev/null; then
        for v in GOPROXY GOSUMDB GONOSUMDB GOPRIVATE GONOPROXY GOINSECURE; do
            local val; val=$(go env "$v" 2>/dev/null || true)
            [[ -n $val ]] && ENV_PASS+=("$v=$val")
        done
    fi
    return 0
}

copy_clone() {
    local tmp=$FRESH_DIR/clone
    git clone -q --no-hardlinks "$REPO_DIR" "$tmp" || return 1
    git -C "$tmp" checkout -q --detach "$FRESH_REF" || return 1
    COMMIT=$(git -C "$tmp" rev-parse --short HEAD)
    mkdir -p "$ROOT$(dirname "$CLONE_IN_ROOT")" || return 1
    chmod 700 "$ROOT$(dirname "$CLONE_IN_ROOT")" || return 1
    cp -a "$tmp" "$ROOT$CLONE_IN_ROOT" || return 1
    rm -rf "$tmp"
    say "clone of $FRESH_REF ($COMMIT) in $CLONE_IN_ROOT (parent mode $(stat -c %a "$ROOT$(dirname "$CLONE_IN_ROOT")")); nothing beside it"
}

mount_all() {
    mount -t proc proc "$ROOT/proc" && MOUNTED+=("$ROOT/proc") || return 1
    mount -t sysfs sysfs "$ROOT/sys" && MOUNTED+=("$ROOT/sys") || return 1
    mount --bind /dev "$ROOT/dev" && MOUNTED+=("$ROOT/dev") || return 1
    mount --bind /dev/pts "$ROOT/dev/pts" && MOUNTED+=("$ROOT/dev/pts") || return 1
    mount -t tmpfs -o size=1g,mode=1777 shm "$ROOT/dev/shm" && MOUNTED+=("$ROOT/dev/shm") || return 1  # Chromium needs it
}

in_root() {  # in_root 'SHELL COMMANDS': run in the chroot with a clean environment
    chroot "$ROOT" /usr/bin/env -i HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${ENV_PASS[@]}" /bin/bash -c "$1"
}

packages() { chroot "$ROOT" dpkg-query -W -f '${binary:Package}\n' | sort; }
manual() { chroot "$ROOT" apt-mark showmanual | sort; }

# ---- run ------------------------------------------------------------------------------------------------------
say "suite $SUITE, mirror from the host's apt sources, root $ROOT, ref $FRESH_REF"
if [[ ${FRESH_REUSE:-0} == 1 && -d $ROOT$CLONE_IN_ROOT ]]; then
    # A root kept by an earlier check (FRESH_DIR=... FRESH_REUSE=1): run the commands again in it, with what they
    # installed there the first time (e.g. after a failure that was not the fresh system's).
    copy_host_config
    COMMIT=$(chroot "$ROOT" git -C "$CLONE_IN_ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
    FRESH_REF="the kept clone"
    step "mount proc sys dev dev/pts" mount_all
else
    step "install debootstrap (host)" install_debootstrap
    step "debootstrap minimal root" make_root
    step "copy CA store + proxy config" copy_host_config
    step "clean clone, private folder" copy_clone
    step "mount proc sys dev dev/pts" mount_all
fi
say "the root has: $(in_root 'python3 --version; make --version | head -n 1' | tr '\n' ' ')"
if [[ ${FRESH_REUSE:-0} != 1 ]]; then
    for c in java mvn go redis-server varnishd chromium curl; do
        in_root "command -v $c" >/dev/null 2>&1 && die "the root already has $c: not a fresh system"
    done
fi
packages >"$FRESH_DIR/packages.before"
manual >"$FRESH_DIR/manual.before"
du_stack() { in_root "du -sh $CLONE_IN_ROOT/.stack $CLONE_IN_ROOT/.venv /root/.cache 2>/dev/null | tr '\n' ' ' | tr '\t' ' '"; }
installed() {  # installed BEFORE AFTER: packages asked for by name (and how many came with them)
    echo "$(comm -13 "$FRESH_DIR/manual.$1" "$FRESH_DIR/manual.$2" | tr '\n' ' ')" \
         "($(comm -13 "$FRESH_DIR/packages.$1" "$FRESH_DIR/packages.$2" | wc -l) packages with dependencies)"
}

pick_ports
FRESH_STEPS=${FRESH_STEPS:-demo test}
DEMO_RC=0
[[ " $FRESH_STEPS " != *" demo "* ]] || step "make demo" in_root "cd $CLONE_IN_ROOT && make demo" || DEMO_RC=$?
packages >"$FRESH_DIR/packages.after-demo"; manual >"$FRESH_DIR/manual.after-demo"
say "make demo installed: $(installed before after-demo); downloads and builds: $(du_stack)"

TEST_RC=0
[[ " $FRESH_STEPS " != *" test "* ]] || step "make test" in_root "cd $CLONE_IN_ROOT && make test" || TEST_RC=$?
packages >"$FRESH_DIR/packages.after-test"; manual >"$FRESH_DIR/manual.after-test"
say "make test installed beyond make demo: $(installed after-demo after-test)"
say "package lists: $FRESH_DIR/packages.* and manual.*"
(( DEMO_RC == 0 && TEST_RC == 0 ))
