#!/usr/bin/env bash
# drainit benchmark: drainit against tini-static, tini, dumb-init and
# catatonit (Debian packages), side by side, in one run. Prints markdown
# tables on stdout (a summary with ratios against tini-static, drainit's
# HTTP figures, then details); progress goes to stderr. Not part of the
# test suite: it prints figures and asserts nothing about them.
#
#   integration/bench/run.sh            # builds drainit as the image does
#   QUICK=1 integration/bench/run.sh    # smoke run, about a minute
#   DRAINIT=/path/to/drainit integration/bench/run.sh
#   EXTRA=old=/path/to/drainit,lean=/path/to/other integration/bench/run.sh
#       # more drainit builds, one row each (named drainit:old, ...)
#
# drainit runs with its HTTP server on (LISTEN, default 127.0.0.1:0: a
# port of the kernel's choosing, so back-to-back starts never collide), as
# in a pod; the row "drainit:off" is the same binary with --listen off.
#
# Knobs (environment): ROUNDS (4), SIGNALS (2000 per init, split over the
# rounds), STARTS (400 per init, split over the rounds), HF_RUNS (300),
# IDLE_SECS (5), PAUSE_US (200, pause between two signals), SIGTERMS (100
# per init), ORPHANS (5000 per run), ORPHAN_RUNS (3 per init), WRK_SECS (5),
# PRESTOPS (10). QUICK=1 divides the samples; the full run measures for
# about 1-2 minutes on 2 cores (plus the build). Needs root (PID
# namespaces), gcc, hyperfine, strace, wrk, python3, and the Debian
# packages tini, dumb-init, catatonit.
#
# What is measured (every init is PID 1 of a fresh PID namespace unless said):
#  - signal forwarding latency: the sender (outside the namespace) reads
#    CLOCK_MONOTONIC right before kill(init's host pid, SIGUSR1); the app's
#    handler reads it first thing and sends it back over a FIFO; the next
#    signal goes only after that acknowledgement (plus PAUSE_US).
#    "none" = the sender signals the app directly (the floor). Measured
#    twice: free to use every CPU, and with everything pinned to CPU 0;
#    in the pinned runs, the init's CPU time per signal from
#    /proc/PID/schedstat (for "none", the app's).
#  - start-up: CLOCK_MONOTONIC right before execve(init) in a child cloned
#    with CLONE_NEWPID, to the first instruction of the app's main (a static
#    C probe); "total" runs to the init's exit being reaped. "none" = the
#    probe exec'd directly. Plus hyperfine -N of `INIT -- /bin/true` run
#    outside any namespace (not PID 1; tini gets -s as it asks to).
#  - idle: `INIT -- sleep 30`; after 1s, VmRSS and Pss (smaps_rollup) of
#    the init; then context switches (all threads, /proc/PID/task/*/status)
#    and, in a second window, syscalls (strace -f -c -p) over IDLE_SECS.
#  - SIGTERM to exit: the init is cloned into a fresh PID namespace, its
#    app (the probe) signals ready over a FIFO; then CLOCK_MONOTONIC right
#    before kill(init, SIGTERM) to the parent's waitpid returning. Once at
#    once (the init may still be starting: drainit's lifecycle thread
#    is), once 20 ms later (SETTLE_MS: it has finished, as in a pod). The app
#    dies of the SIGTERM it is forwarded (drainit: an empty drain, then the
#    stop signal).
#  - orphans: the app makes ORPHANS grandchildren that PID 1 adopts, then
#    releases them all at once; the time until PID 1 has reaped every one
#    (its children list holds only the app again), and the zombies left in
#    the namespace 100 ms later.
#  - drainit only, server on (127.0.0.1, a free port): wrk -t2 -c64 against
#    /healthz (requests/s, p99); peak VmRSS during wrk -t2 -c1000 (1000
#    concurrent connections; http.max_connections = 2048); the time from
#    sending GET /prestop (the drain then sleeps) until /readyz answers 503,
#    polled on a keep-alive connection, PRESTOPS times with a fresh drainit.
#  - nginx (one worker, `return 200`), when installed: the same wrk -t2 -c64
#    run, as a row of the HTTP table, so the server has a peer to compare.
#  - binary size on disk.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-4}
SIGNALS=${SIGNALS:-2000}
STARTS=${STARTS:-400}
HF_RUNS=${HF_RUNS:-300}
IDLE_SECS=${IDLE_SECS:-5}
PAUSE_US=${PAUSE_US:-200}
SIGTERMS=${SIGTERMS:-100}
ORPHANS=${ORPHANS:-5000}
ORPHAN_RUNS=${ORPHAN_RUNS:-3}
WRK_SECS=${WRK_SECS:-5}
PRESTOPS=${PRESTOPS:-10}
LISTEN=${LISTEN:-127.0.0.1:0}
if [ -n "${QUICK:-}" ]; then
    ROUNDS=2 SIGNALS=400 STARTS=100 HF_RUNS=50 IDLE_SECS=2 SIGTERMS=20
    ORPHAN_RUNS=1 WRK_SECS=2 PRESTOPS=3
fi
TARGET=x86_64-unknown-linux-gnu

log() { printf '[bench] %s\n' "$*" >&2; }
fail() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (PID namespaces)"
for tool in gcc hyperfine strace wrk python3 unshare /usr/bin/tini-static /usr/bin/tini \
    /usr/bin/dumb-init /usr/bin/catatonit; do
    command -v "$tool" >/dev/null || fail "missing $tool (apt-get install tini dumb-init catatonit hyperfine strace gcc)"
done

if [ -z "${DRAINIT:-}" ]; then
    # The same flags as the Dockerfile, so the figures are the image's; a
    # target dir of its own, so the tests' build (static-pie) stays cached.
    # Cargo does not track the symbol order file or the layout script: a
    # newer one forces the link.
    log "building drainit (static release, as the Dockerfile does)"
    DRAINIT=$ROOT/target/bench/$TARGET/release/drainit
    if [ -e "$DRAINIT" ] && { [ "$HERE/symbol-order.txt" -nt "$DRAINIT" ] ||
        [ "$HERE/text-layout.ld" -nt "$DRAINIT" ]; }; then
        touch "$ROOT/src/main.rs"
    fi
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static \
-C link-arg=-Wl,--symbol-ordering-file=$HERE/symbol-order.txt -C link-arg=-Wl,--no-warn-symbol-ordering \
-C link-arg=-Wl,-T,$HERE/text-layout.ld" \
        CARGO_TARGET_DIR="$ROOT/target/bench" \
        cargo build --quiet --release --locked --target "$TARGET" >&2)
fi
[ -x "$DRAINIT" ] || fail "no drainit binary at $DRAINIT"

WORK=$(mktemp -d /dev/shm/drainit-bench.XXXXXX)
IDLE_OUTER=()
SERVER_PID=
cleanup() {
    # `if`, not `&&`: under `set -e` a failed kill (the server is gone
    # already) would end the trap here, leave $WORK behind and exit 1.
    if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
    for pid in "${IDLE_OUTER[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

log "compiling the probe"
gcc -O2 -static -Wall -Wextra -o "$WORK/probe" "$HERE/probe.c"
PROBE=$WORK/probe

NAMES=(none drainit tini-static tini dumb-init catatonit)
INITS=(drainit tini-static tini dumb-init catatonit)
declare -A EXTRA_PATH
if [ -n "${EXTRA:-}" ]; then
    IFS=, read -ra extras <<<"$EXTRA"
    for spec in "${extras[@]}"; do
        name=${spec%%=*} path=${spec#*=}
        [[ "$spec" == *=* && "$name" =~ ^[A-Za-z0-9_-]+$ ]] || fail "EXTRA: expected name=path, got $spec"
        [ -x "$path" ] || fail "EXTRA: no binary at $path"
        EXTRA_PATH["drainit:$name"]=$path
        NAMES+=("drainit:$name")
        INITS+=("drainit:$name")
    done
fi
# The same drainit with its server off, in the same run: the figures the
# earlier runs (all with --listen off) reported.
EXTRA_PATH["drainit:off"]=$DRAINIT
NAMES+=("drainit:off")
INITS+=("drainit:off")

# Sets INIT to the argv prefix of init $1 run as PID 1.
set_init() {
    case $1 in
    none) INIT=() ;;
    drainit) INIT=("$DRAINIT" --listen "$LISTEN" --) ;;
    drainit:off) INIT=("$DRAINIT" --listen off --) ;;
    drainit:*) INIT=("${EXTRA_PATH[$1]}" --listen "$LISTEN" --) ;;
    tini-static) INIT=(/usr/bin/tini-static --) ;;
    tini) INIT=(/usr/bin/tini --) ;;
    dumb-init) INIT=(/usr/bin/dumb-init --) ;;
    catatonit) INIT=(/usr/bin/catatonit --) ;;
    *) fail "unknown init $1" ;;
    esac
}

# The NAMES rotated by $1 places, so no init always runs first or last.
rotated() {
    local n=${#NAMES[@]} i
    for ((i = 0; i < n; i++)); do echo "${NAMES[(i + $1) % n]}"; done
}

{
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kernel=$(uname -r)"
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "extras=${INITS[*]:5}"
    for name in "${INITS[@]:5}"; do echo "path.$name=${EXTRA_PATH[$name]}"; done
} >"$WORK/context"

# ---------------------------------------------------------------- warm-up --
log "warm-up"
for name in "${NAMES[@]}"; do
    set_init "$name"
    "$PROBE" siglat 100 "$PAUSE_US" "$WORK/fifo" -- \
        unshare --pid --fork --mount-proc "${INIT[@]}" "$PROBE" app "$WORK/fifo" \
        >/dev/null 2>>"$WORK/err.$name" || fail "siglat warm-up of $name failed: $(cat "$WORK/err.$name")"
    "$PROBE" startup 20 "$WORK/stamp" -- "${INIT[@]}" "$PROBE" stamp "$WORK/stamp" \
        >/dev/null 2>>"$WORK/err.$name" || fail "start-up warm-up of $name failed: $(cat "$WORK/err.$name")"
done

# ------------------------------------------------------ signal forwarding --
log "signal forwarding latency: $SIGNALS signals per init in $ROUNDS rounds"
for ((r = 0; r < ROUNDS; r++)); do
    for name in $(rotated "$r"); do
        set_init "$name"
        "$PROBE" siglat $((SIGNALS / ROUNDS)) "$PAUSE_US" "$WORK/fifo" -- \
            unshare --pid --fork --mount-proc "${INIT[@]}" "$PROBE" app "$WORK/fifo" \
            >>"$WORK/siglat.$name" 2>>"$WORK/err.$name" ||
            fail "siglat of $name failed: $(cat "$WORK/err.$name")"
        # Same, with sender, init and app all on CPU 0: no cross-CPU wake-up
        # (an IPI to a halted vCPU is costly and bimodal in a VM), so this
        # is closer to the init's own path length.
        taskset -c 0 "$PROBE" siglat $((SIGNALS / ROUNDS)) "$PAUSE_US" "$WORK/fifo" -- \
            unshare --pid --fork --mount-proc "${INIT[@]}" "$PROBE" app "$WORK/fifo" \
            >>"$WORK/siglat_pin.$name" 2>>"$WORK/err.$name" ||
            fail "pinned siglat of $name failed: $(cat "$WORK/err.$name")"
    done
done

# ---------------------------------------------------------------- start-up --
log "start-up: $STARTS starts per init in $ROUNDS rounds"
for ((r = 0; r < ROUNDS; r++)); do
    for name in $(rotated "$r"); do
        set_init "$name"
        "$PROBE" startup $((STARTS / ROUNDS)) "$WORK/stamp" -- \
            "${INIT[@]}" "$PROBE" stamp "$WORK/stamp" \
            >>"$WORK/startup.$name" 2>>"$WORK/err.$name" ||
            fail "start-up of $name failed: $(cat "$WORK/err.$name")"
    done
done

log "hyperfine: INIT -- /bin/true, $HF_RUNS runs each"
hyperfine -N --style none --warmup 20 --runs "$HF_RUNS" --export-json "$WORK/hyperfine.json" \
    -n none "/bin/true" \
    -n drainit "$DRAINIT --listen $LISTEN -- /bin/true" \
    -n tini-static "/usr/bin/tini-static -s -- /bin/true" \
    -n tini "/usr/bin/tini -s -- /bin/true" \
    -n dumb-init "/usr/bin/dumb-init -- /bin/true" \
    -n catatonit "/usr/bin/catatonit -- /bin/true" \
    >/dev/null 2>"$WORK/hyperfine.err" || fail "hyperfine failed: $(cat "$WORK/hyperfine.err")"

# -------------------------------------------------------------------- idle --
# The init's host pid: the child of unshare, once it has a child (the app).
init_pid_of() {
    local outer=$1 pid="" i
    for ((i = 0; i < 500; i++)); do
        pid=$(cut -d' ' -f1 "/proc/$outer/task/$outer/children" 2>/dev/null || true)
        if [ -n "$pid" ] && [ -n "$(cat "/proc/$pid/task/$pid/children" 2>/dev/null)" ]; then
            echo "$pid"
            return 0
        fi
        sleep 0.01
    done
    return 1
}

ctxt_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

log "idle: RSS, then ${IDLE_SECS}s of context switches, then ${IDLE_SECS}s under strace"
IDLE_NAMES=("${INITS[@]}")
declare -A IDLE_PID
for name in "${IDLE_NAMES[@]}"; do
    set_init "$name"
    unshare --pid --fork --mount-proc "${INIT[@]}" sleep 30 >/dev/null 2>>"$WORK/err.$name" &
    IDLE_OUTER+=("$!")
    IDLE_PID[$name]=$(init_pid_of "$!") || fail "$name did not start its app"
done
sleep 1
for name in "${IDLE_NAMES[@]}"; do
    pid=${IDLE_PID[$name]}
    {
        echo "rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
        echo "pss_kb=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")"
        echo "threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")"
        echo "ctxt_before=$(ctxt_switches "$pid")"
    } >"$WORK/idle.$name"
done
sleep "$IDLE_SECS"
for name in "${IDLE_NAMES[@]}"; do
    echo "ctxt_after=$(ctxt_switches "${IDLE_PID[$name]}")" >>"$WORK/idle.$name"
done
strace_pids=()
for name in "${IDLE_NAMES[@]}"; do
    timeout -s INT "$IDLE_SECS" strace -f -c -o "$WORK/strace.$name" -p "${IDLE_PID[$name]}" \
        2>/dev/null &
    strace_pids+=("$!")
done
for pid in "${strace_pids[@]}"; do wait "$pid" || true; done
for name in "${IDLE_NAMES[@]}"; do
    calls=$(awk '$NF == "total" { print $4 }' "$WORK/strace.$name" 2>/dev/null)
    echo "syscalls=${calls:-0}" >>"$WORK/idle.$name"
    echo "strace_detail=$(awk 'NR > 2 && $NF != "total" && $1 !~ /^-/ { printf "%s%s:%s", sep, $NF, $4; sep = "," }' \
        "$WORK/strace.$name" 2>/dev/null)" >>"$WORK/idle.$name"
    kill -TERM "${IDLE_PID[$name]}" 2>/dev/null || true
done
for pid in "${IDLE_OUTER[@]}"; do
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.01; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
IDLE_OUTER=()

# ---------------------------------------------------------- SIGTERM to exit --
log "SIGTERM to exit: $SIGTERMS per init in $ROUNDS rounds"
for ((r = 0; r < ROUNDS; r++)); do
    for name in $(rotated "$r"); do
        [ "$name" = none ] && continue
        set_init "$name"
        "$PROBE" sigterm $((SIGTERMS / ROUNDS)) "$WORK/fifo" -- \
            "${INIT[@]}" "$PROBE" app "$WORK/fifo" \
            >>"$WORK/sigterm.$name" 2>>"$WORK/err.$name" ||
            fail "SIGTERM run of $name failed: $(cat "$WORK/err.$name")"
        # The same, 20 ms after the app is ready: the init has finished
        # starting (drainit's lifecycle thread is idle), as in a pod.
        SETTLE_MS=20 "$PROBE" sigterm $((SIGTERMS / ROUNDS / 2)) "$WORK/fifo" -- \
            "${INIT[@]}" "$PROBE" app "$WORK/fifo" \
            >>"$WORK/sigterm-settled.$name" 2>>"$WORK/err.$name" ||
            fail "settled SIGTERM run of $name failed: $(cat "$WORK/err.$name")"
    done
done

# ----------------------------------------------------------------- orphans --
log "orphans: $ORPHANS at once, $ORPHAN_RUNS runs per init"
for ((r = 0; r < ORPHAN_RUNS; r++)); do
    for name in $(rotated "$r"); do
        [ "$name" = none ] && continue
        set_init "$name"
        unshare --pid --fork --mount-proc "${INIT[@]}" "$PROBE" orphans "$ORPHANS" \
            >>"$WORK/orphans.$name" 2>>"$WORK/err.$name" ||
            fail "orphans run of $name failed: $(cat "$WORK/err.$name")"
    done
done

# ------------------------------------------------------- drainit's server --
log "drainit's HTTP server: wrk ${WRK_SECS}s at 64 and 1000 connections, $PRESTOPS /prestop runs"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/http.toml" <<TOML
[http]
listen = "127.0.0.1:$PORT"
max_connections = 2048

[[drain]]
name = "hold the drain"
sleep = "20s"
TOML
ulimit -n 65536 2>/dev/null || true

# Starts drainit with the server (app: sleep) and waits for /healthz.
start_server() {
    unshare --pid --fork --mount-proc "$DRAINIT" -c "$WORK/http.toml" --log-level warn -- sleep 600 \
        >/dev/null 2>>"$WORK/err.http" &
    IDLE_OUTER+=("$!")
    SERVER_OUTER=$!
    SERVER_PID=$(init_pid_of "$SERVER_OUTER") ||
        fail "drainit (server) did not start its app: $(cat "$WORK/err.http")"
    python3 - "$PORT" <<'PY' || fail "drainit's /healthz never answered"
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        if s.recv(64).startswith(b"HTTP/1.1 200"):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
sys.exit(1)
PY
}

# SIGKILL to PID 1 of the namespace ends everything in it. (SIGTERM would
# run the configured drain, a 20 s sleep.)
stop_server() {
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_OUTER" 2>/dev/null || true
    IDLE_OUTER=()
}

start_server
echo "idle_rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")" >"$WORK/http"
wrk -t2 -c64 -d"${WRK_SECS}s" --latency "http://127.0.0.1:$PORT/healthz" >"$WORK/wrk64" 2>&1 ||
    fail "wrk failed: $(cat "$WORK/wrk64")"
echo "after64_rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")" >>"$WORK/http"
peak=0
wrk -t2 -c1000 -d"${WRK_SECS}s" --latency "http://127.0.0.1:$PORT/healthz" >"$WORK/wrk1000" 2>&1 &
wrk_pid=$!
while kill -0 "$wrk_pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 0.05
done
wait "$wrk_pid" || fail "wrk -c1000 failed: $(cat "$WORK/wrk1000")"
echo "peak1000_rss_kb=$peak" >>"$WORK/http"
echo "after1000_rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")" >>"$WORK/http"
stop_server

# The same load on a peer: nginx with one worker answering `return 200`
# (no file, no log), so drainit's server is compared with a real one in the
# same run on the same machine. Skipped (no row) when nginx is missing.
if command -v nginx >/dev/null; then
    log "nginx (one worker, return 200): wrk ${WRK_SECS}s at 64 connections"
    NGINX_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200; }
    }
}
NGINX
    nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>>"$WORK/err.http" &
    NGINX_PID=$!
    for _ in $(seq 1 500); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $NGINX_PORT), timeout=1)" 2>/dev/null && break
        sleep 0.01
    done
    wrk -t2 -c64 -d"${WRK_SECS}s" --latency "http://127.0.0.1:$NGINX_PORT/healthz" >"$WORK/wrk64.nginx" 2>&1 ||
        log "wrk against nginx failed: $(cat "$WORK/wrk64.nginx")"
    # TERM: nginx's fast shutdown takes its worker with it.
    kill -TERM "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
fi

for ((r = 0; r < PRESTOPS; r++)); do
    start_server
    python3 - "$PORT" >>"$WORK/prestop" <<'PY' || fail "/prestop run failed"
import socket, sys, time
port = int(sys.argv[1])
probe = socket.create_connection(("127.0.0.1", port))
probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def readyz():
    probe.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += probe.recv(4096)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += probe.recv(4096)
    return int(head.split(b" ")[1])
assert readyz() == 200
hook = socket.create_connection(("127.0.0.1", port))
hook.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t0 = time.monotonic_ns()
hook.sendall(b"GET /prestop HTTP/1.1\r\nhost: x\r\n\r\n")
while readyz() != 503:
    pass
print(f"{(time.monotonic_ns() - t0) / 1000:.1f}")
PY
    stop_server
done

# ------------------------------------------------------------------- sizes --
for name in "${IDLE_NAMES[@]}"; do
    set_init "$name"
    bin=${INIT[0]}
    linkage=static
    # ldd lists "name => path" lines only for dynamically linked binaries
    # (it says "statically linked" for static-pie and fails for static).
    if ldd "$bin" 2>&1 | grep -q '=>'; then linkage=dynamic; fi
    echo "$(stat -c %s "$bin") $linkage" >"$WORK/size.$name"
done
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/context"

# ------------------------------------------------------------------ report --
python3 "$HERE/report.py" "$WORK" "$SIGNALS" "$STARTS" "$HF_RUNS" "$IDLE_SECS" "$PAUSE_US" \
    "$ORPHANS" "$WRK_SECS"
