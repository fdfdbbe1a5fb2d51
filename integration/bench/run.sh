#!/usr/bin/env bash
# drainit benchmark: drainit against tini-static, tini, dumb-init and
# catatonit (Debian packages), side by side. Prints a markdown table on
# stdout; progress and details go to stderr. Not part of the test suite:
# it prints figures and asserts nothing about them.
#
#   integration/bench/run.sh            # builds drainit (static release) first
#   DRAINIT=/path/to/drainit integration/bench/run.sh
#
# Knobs (environment): ROUNDS (4), SIGNALS (2000 per init, split over the
# rounds), STARTS (400 per init, split over the rounds), HF_RUNS (300),
# IDLE_SECS (5), PAUSE_US (200, pause between two signals). Runs in about a
# minute on 2 cores. Needs root (PID namespaces), gcc, hyperfine, strace,
# python3, and the Debian packages tini, dumb-init, catatonit.
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
TARGET=x86_64-unknown-linux-gnu

log() { printf '[bench] %s\n' "$*" >&2; }
fail() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (PID namespaces)"
for tool in gcc hyperfine strace python3 unshare /usr/bin/tini-static /usr/bin/tini \
    /usr/bin/dumb-init /usr/bin/catatonit; do
    command -v "$tool" >/dev/null || fail "missing $tool (apt-get install tini dumb-init catatonit hyperfine strace gcc)"
done

if [ -z "${DRAINIT:-}" ]; then
    log "building drainit (static release)"
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --quiet --release --target "$TARGET" >&2)
    DRAINIT=$ROOT/target/$TARGET/release/drainit
fi
[ -x "$DRAINIT" ] || fail "no drainit binary at $DRAINIT"

WORK=$(mktemp -d /dev/shm/drainit-bench.XXXXXX)
IDLE_OUTER=()
cleanup() {
    for pid in "${IDLE_OUTER[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

log "compiling the probe"
gcc -O2 -static -Wall -Wextra -o "$WORK/probe" "$HERE/probe.c"
PROBE=$WORK/probe

NAMES=(none drainit tini-static tini dumb-init catatonit)

# Sets INIT to the argv prefix of init $1 run as PID 1.
set_init() {
    case $1 in
    none) INIT=() ;;
    drainit) INIT=("$DRAINIT" --listen off --) ;;
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
    -n drainit "$DRAINIT --listen off -- /bin/true" \
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
IDLE_NAMES=(drainit tini-static tini dumb-init catatonit)
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
python3 - "$WORK" "$SIGNALS" "$STARTS" "$HF_RUNS" "$IDLE_SECS" "$PAUSE_US" <<'EOF'
import json, statistics, sys
from pathlib import Path

work = Path(sys.argv[1])
signals, starts, hf_runs, idle_secs, pause_us = sys.argv[2:7]
names = ["none", "drainit", "tini-static", "tini", "dumb-init", "catatonit"]
ctx = dict(l.split("=", 1) for l in (work / "context").read_text().splitlines())

def pct(sorted_v, p):
    i = max(0, min(len(sorted_v) - 1, -(-len(sorted_v) * p // 100) - 1))
    return sorted_v[int(i)]

def msd(v):
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

def siglat(path):
    """Latencies, and the init's mean CPU time per signal over the runs."""
    lat, cpu = [], []
    for line in path.read_text().splitlines():
        if line.startswith("# cpu "):
            cpu.append(float(line.split()[2]))
        elif line.strip():
            lat.append(float(line))
    lat.sort()
    return (pct(lat, 50), pct(lat, 90), pct(lat, 99), len(lat)), statistics.mean(cpu)

sig, sigpin, sigcpu, start, total = {}, {}, {}, {}, {}
for n in names:
    sig[n], _ = siglat(work / f"siglat.{n}")
    sigpin[n], sigcpu[n] = siglat(work / f"siglat_pin.{n}")
    rows = [l.split() for l in (work / f"startup.{n}").read_text().splitlines()]
    e2e = [float(r[0]) for r in rows]
    tot = [float(r[1]) for r in rows]
    start[n] = (*msd(e2e), statistics.median(e2e), len(e2e))
    total[n] = (*msd(tot), statistics.median(tot))
hf = {r["command"]: r for r in json.loads((work / "hyperfine.json").read_text())["results"]}

idle, size = {}, {}
for n in names[1:]:
    idle[n] = dict(l.split("=", 1) for l in (work / f"idle.{n}").read_text().splitlines())
    b, link = (work / f"size.{n}").read_text().split()
    size[n] = (int(b), link)

print(f"## drainit benchmark (commit {ctx['commit']})\n")
print(f"Machine: {ctx['nproc']} CPUs ({ctx['cpu']}), kernel {ctx['kernel']}; "
      f"load average before {ctx['load_before']}, after {ctx['load_after']}.\n")
print("| init | size KiB (linkage) | signal fwd µs p50 / p90 / p99 | "
      "signal fwd, 1 CPU, µs p50 / p90 / p99 | init CPU µs per signal | "
      "start-up exec→app µs mean ± sd (p50) | start→exit µs mean ± sd (p50) | "
      "hyperfine `-- /bin/true` µs mean ± sd | idle RSS / PSS KiB | threads | "
      f"idle ctx switches / {idle_secs}s | idle syscalls / {idle_secs}s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in names:
    s = sig[n]
    st, tt = start[n], total[n]
    h = hf[n]
    hcol = f"{h['mean'] * 1e6:.0f} ± {h['stddev'] * 1e6:.0f}"
    if n == "none":
        label = "none (baseline: app alone)"
        cols = ["–"]
        tail = ["–", "–", "–", "–"]
    else:
        label = n
        cols = [f"{size[n][0] / 1024:.0f} ({size[n][1]})"]
        i = idle[n]
        ctxt = int(i["ctxt_after"]) - int(i["ctxt_before"])
        tail = [f"{i['rss_kb']} / {i['pss_kb']}", i["threads"], str(ctxt), i["syscalls"]]
    p = sigpin[n]
    cols += [f"{s[0]:.1f} / {s[1]:.1f} / {s[2]:.1f}",
             f"{p[0]:.1f} / {p[1]:.1f} / {p[2]:.1f}",
             f"{sigcpu[n]:.1f}" if n != "none" else "(app) " + f"{sigcpu[n]:.1f}",
             f"{st[0]:.0f} ± {st[1]:.0f} ({st[2]:.0f})",
             f"{tt[0]:.0f} ± {tt[1]:.0f} ({tt[2]:.0f})", hcol] + tail
    print(f"| {label} | " + " | ".join(cols) + " |")

d, t = "drainit", "tini-static"
print(f"\ndrainit / tini-static: signal p50 ×{sig[d][0] / sig[t][0]:.2f}, "
      f"p99 ×{sig[d][2] / sig[t][2]:.2f}; on 1 CPU p50 ×{sigpin[d][0] / sigpin[t][0]:.2f}, "
      f"p99 ×{sigpin[d][2] / sigpin[t][2]:.2f}; start-up exec→app (p50) ×{start[d][2] / start[t][2]:.2f}; "
      f"hyperfine ×{hf[d]['mean'] / hf[t]['mean']:.2f}.\n")
details = "; ".join(f"{n}: {idle[n]['strace_detail'] or 'none'}" for n in names[1:])
print(f"Idle syscalls by name: {details}.\n")
print(f"Samples: {sig['drainit'][3]} signals per init (pause {pause_us} µs after each "
      f"acknowledgement), {start['drainit'][3]} starts per init in a fresh PID namespace, "
      f"{hf_runs} hyperfine runs (not PID 1). Forwarding targets are each init's default: "
      "drainit and dumb-init signal the app's process group, tini and catatonit the app alone.")
EOF
