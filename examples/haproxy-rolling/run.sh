#!/usr/bin/env bash
# A rolling termination behind HAProxy, under tini and under drainit: how
# many requests failed each time. See README.md.
#
#   examples/haproxy-rolling/run.sh [RUNS] [DRAINIT]
#
# RUNS defaults to 5; DRAINIT (or $DRAINIT) to the static release build,
# target/x86_64-unknown-linux-gnu/release/drainit. Needs haproxy, wrk, tini,
# python3, curl and unshare (root, for the PID namespaces). Tunables:
# CONCURRENCY (wrk connections, default 8), DURATION (seconds of load per
# run, default 4), DELAY_MS (the app's time per request, default 20),
# KEEP=1 to keep the logs (HAProxy's request log, drainit's, wrk's).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RUNS="${1:-5}"
DRAINIT="${2:-${DRAINIT:-$repo/target/x86_64-unknown-linux-gnu/release/drainit}}"
CONCURRENCY="${CONCURRENCY:-8}"
DURATION="${DURATION:-4}"
DELAY_MS="${DELAY_MS:-20}"
GRACE=6 # the pod's terminationGracePeriodSeconds

SCRIPT=run.sh
TOOLS="haproxy wrk tini python3 curl unshare"
WORK_PREFIX=haproxy-rolling
# shellcheck source=common.sh
. "$here/common.sh"

# start_pod INIT NAME DIR: starts the app under INIT (tini|drainit) as PID 1
# of a new PID namespace; sets POD_PID (unshare), APP_PORT, CHECK_PORT.
start_pod() {
    local init="$1" name="$2" dir="$3"
    APP_PORT="$(free_port)"
    local app=(python3 "$here/app.py" "$APP_PORT" "$name" "$DELAY_MS")
    if [ "$init" = tini ]; then
        unshare --pid --fork --mount-proc tini -- "${app[@]}" >"$dir/$name.log" 2>&1 &
        POD_PID=$!
        CHECK_PORT="$APP_PORT"
        wait_until "app $name" curl -sf "http://127.0.0.1:$APP_PORT/"
    else
        CHECK_PORT="$(free_port)"
        sed "s/8080/$APP_PORT/g" "$here/drainit.toml" >"$dir/$name.toml"
        unshare --pid --fork --mount-proc "$DRAINIT" -c "$dir/$name.toml" \
            --listen "127.0.0.1:$CHECK_PORT" -- "${app[@]}" >"$dir/$name.log" 2>&1 &
        POD_PID=$!
        wait_until "drainit $name /readyz" curl -sf "http://127.0.0.1:$CHECK_PORT/readyz"
    fi
    pids+=("$POD_PID")
}

# kill_pod INIT POD_PID CHECK_PORT: what the kubelet does. Under drainit the
# preStop hook (GET /prestop, which returns when the drain is done); then
# SIGTERM; SIGKILL when the grace period is up.
kill_pod() {
    local init="$1" pod="$2" port="$3" ns_init
    ns_init="$(pgrep -P "$pod")"
    local t0=$SECONDS
    if [ "$init" = drainit ]; then
        curl -s "http://127.0.0.1:$port/prestop" >"$work/prestop.txt" || true
    fi
    kill -TERM "$ns_init"
    while [ -e "/proc/$ns_init" ] && ((SECONDS - t0 < GRACE)); do sleep 0.01; done
    kill -KILL "$ns_init" 2>/dev/null || true
}

# One run: two backends behind HAProxy, wrk through it, backend a stopped
# a third of the way in. Sets RESULT to "failed requests req_per_s".
one_run() {
    local init="$1" dir
    dir="$(mktemp -d "$work/$init.XXXXXX")"
    start_pod "$init" a "$dir"
    local a_pod=$POD_PID a_port=$APP_PORT a_check=$CHECK_PORT
    start_pod "$init" b "$dir"
    local b_port=$APP_PORT b_check=$CHECK_PORT
    local fe
    fe="$(free_port)"
    sed -e "s/@FRONTEND_PORT@/$fe/" -e "s/@A_PORT@/$a_port/" -e "s/@A_CHECK_PORT@/$a_check/" \
        -e "s/@B_PORT@/$b_port/" -e "s/@B_CHECK_PORT@/$b_check/" \
        "$here/haproxy.cfg" >"$dir/haproxy.cfg"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    local hap=$!
    pids+=("$hap")
    # Both backends up and routed to before the load starts.
    wait_until "HAProxy routing to a" sh -c "curl -sf http://127.0.0.1:$fe/ | grep -qx a"
    wait_until "HAProxy routing to b" sh -c "curl -sf http://127.0.0.1:$fe/ | grep -qx b"

    wrk -t 2 -c "$CONCURRENCY" -d "${DURATION}s" "http://127.0.0.1:$fe/" >"$dir/wrk.txt" 2>&1 &
    local wrk_pid=$!
    sleep "$(python3 -c "print($DURATION / 3)")"
    kill_pod "$init" "$a_pod" "$a_check"
    wait "$wrk_pid"
    stop_all

    RESULT="$(python3 - "$dir/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
requests = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
failed = int(non2xx.group(1)) if non2xx else 0
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if errors:
    failed += sum(int(n) for n in errors.groups())
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
print(failed, requests, f"{rate:.0f}")
PY
)"
}

printf 'load: wrk -t 2 -c %s -d %ss through HAProxy (retries 0), app %sms per request, grace %ss\n' \
    "$CONCURRENCY" "$DURATION" "$DELAY_MS" "$GRACE"
printf '%-4s  %-28s  %-28s\n' run "tini: failed/requests req/s" "drainit: failed/requests req/s"
for run in $(seq "$RUNS"); do
    one_run tini
    read -r tf tr trate <<<"$RESULT"
    one_run drainit
    read -r df dr drate <<<"$RESULT"
    printf '%-4s  %-28s  %-28s\n' "$run" "$tf/$tr $trate" "$df/$dr $drate"
done
