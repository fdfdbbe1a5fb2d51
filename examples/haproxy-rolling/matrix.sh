#!/usr/bin/env bash
# The drain matrix: every balancer × every drain, one backend stopped the
# kubelet's way under load; failed requests, drain duration and the
# balancer's notice time per cell. See README.md, "The matrix".
#
#   examples/haproxy-rolling/matrix.sh [DRAINIT]
#
# Balancers: haproxy-fast (haproxy.cfg: checks every 100 ms, fall 1,
# server-side close), haproxy-slow (haproxy-slow.cfg: checks every 1 s,
# fall 2, http-reuse always), nginx (nginx.conf: keep-alive upstream, list
# rewritten and reloaded RELOAD_DELAY seconds after the termination starts,
# as ingress-nginx does on an EndpointSlice change).
# Drains: none (tini), sleep SHORT_SLEEP, sleep LONG_SLEEP, wait_connections,
# wait_quiet (QUIET). Tunables: BALANCERS, DRAINS (space-separated subsets),
# CONCURRENCY (32), DURATION (s of load, 20), DELAY_MS (20), RELOAD_DELAY
# (2), SHORT_SLEEP (500ms), LONG_SLEEP (3s), QUIET (1s), KEEP=1 keeps logs.
# Needs haproxy, nginx, wrk, tini, python3, curl, unshare (root).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DRAINIT="${1:-${DRAINIT:-$repo/target/x86_64-unknown-linux-gnu/release/drainit}}"
BALANCERS="${BALANCERS:-haproxy-fast haproxy-slow nginx}"
DRAINS="${DRAINS:-none short-sleep long-sleep wait_connections wait_quiet}"
CONCURRENCY="${CONCURRENCY:-32}"
DURATION="${DURATION:-20}"
DELAY_MS="${DELAY_MS:-20}"
RELOAD_DELAY="${RELOAD_DELAY:-2}"
SHORT_SLEEP="${SHORT_SLEEP:-500ms}"
LONG_SLEEP="${LONG_SLEEP:-3s}"
QUIET="${QUIET:-1s}"
GRACE=15 # the pod's terminationGracePeriodSeconds

SCRIPT=matrix.sh
TOOLS="haproxy nginx wrk tini python3 curl unshare"
WORK_PREFIX=drain-matrix
# shellcheck source=common.sh
. "$here/common.sh"

# The [[drain]] list of each drain.
drain_steps() {
    case "$1" in
    short-sleep) printf '[[drain]]\nsleep = "%s"\n' "$SHORT_SLEEP" ;;
    long-sleep) printf '[[drain]]\nsleep = "%s"\n' "$LONG_SLEEP" ;;
    wait_connections) printf '[[drain]]\nwait_connections = { port = 8080 }\ntimeout = "10s"\n' ;;
    wait_quiet) printf '[[drain]]\nwait_quiet = { port = 8080, quiet = "%s" }\ntimeout = "10s"\n' "$QUIET" ;;
    esac
}

# start_pod DRAIN NAME DIR: sets POD_PID, APP_PORT, CHECK_PORT.
start_pod() {
    local drain="$1" name="$2" dir="$3"
    APP_PORT="$(free_port)"
    local app=(env "REQUEST_LOG=$dir/$name.requests" python3 "$here/app.py" "$APP_PORT" "$name" "$DELAY_MS")
    if [ "$drain" = none ]; then
        unshare --pid --fork --mount-proc tini -- "${app[@]}" >"$dir/$name.log" 2>&1 &
        POD_PID=$!
        CHECK_PORT="$APP_PORT"
        wait_until "app $name" curl -sf "http://127.0.0.1:$APP_PORT/"
    else
        CHECK_PORT="$(free_port)"
        {
            sed -e '/^\[\[drain\]\]/,$d' "$here/drainit.toml" |
                sed -e 's/^grace_period = "6s" /grace_period = "15s"/' -e 's/^stop_timeout = "2s" /stop_timeout = "3s"/'
            drain_steps "$drain"
        } | sed "s/8080/$APP_PORT/g" >"$dir/$name.toml"
        unshare --pid --fork --mount-proc "$DRAINIT" -c "$dir/$name.toml" \
            --listen "127.0.0.1:$CHECK_PORT" -- "${app[@]}" >"$dir/$name.log" 2>&1 &
        POD_PID=$!
        wait_until "drainit $name /readyz" curl -sf "http://127.0.0.1:$CHECK_PORT/readyz"
    fi
    pids+=("$POD_PID")
}

now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }

# kill_pod DRAIN POD_PID CHECK_PORT DIR: the kubelet. Writes the drain's
# seconds (the preStop hook's) to DIR/drain.
kill_pod() {
    local drain="$1" pod="$2" port="$3" dir="$4" ns_init
    ns_init="$(pgrep -P "$pod")"
    local t0=$SECONDS
    if [ "$drain" != none ]; then
        curl -s -o "$dir/prestop.txt" -w '%{time_total}' "http://127.0.0.1:$port/prestop" >"$dir/drain" || true
    else
        echo 0 >"$dir/drain"
    fi
    kill -TERM "$ns_init"
    while [ -e "/proc/$ns_init" ] && ((SECONDS - t0 < GRACE)); do sleep 0.01; done
    kill -KILL "$ns_init" 2>/dev/null || true
}

# The balancer's config for backends a and b (nginx: only those listed).
balancer_config() {
    local balancer="$1" dir="$2" fe="$3"
    shift 3
    case "$balancer" in
    haproxy-fast | haproxy-slow)
        local cfg=haproxy.cfg
        [ "$balancer" = haproxy-slow ] && cfg=haproxy-slow.cfg
        sed -e "s/@FRONTEND_PORT@/$fe/" -e "s/@A_PORT@/$a_port/" -e "s/@A_CHECK_PORT@/$a_check/" \
            -e "s/@B_PORT@/$b_port/" -e "s/@B_CHECK_PORT@/$b_check/" \
            "$here/$cfg" >"$dir/haproxy.cfg"
        ;;
    nginx)
        local servers=""
        # max_fails=0: no passive health check, as ingress-nginx's Lua
        # balancer has none; only the reload takes a out.
        for p in "$@"; do servers+="        server 127.0.0.1:$p max_fails=0;\n"; done
        sed -e "s/@FRONTEND_PORT@/$fe/" -e "s|@DIR@|$dir|g" -e "s|^@SERVERS@|$servers|" \
            "$here/nginx.conf" >"$dir/nginx.conf"
        ;;
    esac
}

# One cell. Sets RESULT to "failed requests req_per_s drain_s notice_s".
one_run() {
    local balancer="$1" drain="$2" dir
    dir="$(mktemp -d "$work/$balancer-$drain.XXXXXX")"
    start_pod "$drain" a "$dir"
    local a_pod=$POD_PID
    a_port=$APP_PORT a_check=$CHECK_PORT
    start_pod "$drain" b "$dir"
    b_port=$APP_PORT b_check=$CHECK_PORT
    local fe lb
    fe="$(free_port)"
    balancer_config "$balancer" "$dir" "$fe" "$a_port" "$b_port"
    if [ "$balancer" = nginx ]; then
        mkdir -p "$dir/nginx"
        nginx -p "$dir/nginx" -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/nginx.log" 2>&1 &
    else
        haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    fi
    lb=$!
    pids+=("$lb")
    wait_until "routing to a" sh -c "for i in 1 2 3 4; do curl -sf http://127.0.0.1:$fe/; done | grep -qx a"
    wait_until "routing to b" sh -c "for i in 1 2 3 4; do curl -sf http://127.0.0.1:$fe/; done | grep -qx b"

    # nginx's reload closes its idle keep-alive client connections, and a
    # request racing that close fails whatever the drain: the clients
    # open a connection per request there (nginx keeps its upstream pool).
    local close=()
    [ "$balancer" = nginx ] && close=(-H "Connection: close")
    wrk -t 2 -c "$CONCURRENCY" -d "${DURATION}s" "${close[@]}" "http://127.0.0.1:$fe/" >"$dir/wrk.txt" 2>&1 &
    local wrk_pid=$!
    sleep "$(python3 -c "print($DURATION / 3)")"
    local t_kill
    t_kill="$(now)"
    if [ "$balancer" = nginx ]; then
        # The endpoint controller: a leaves the upstream list RELOAD_DELAY
        # after its termination started.
        (
            sleep "$RELOAD_DELAY"
            balancer_config nginx "$dir" "$fe" "$b_port"
            kill -HUP "$lb"
        ) &
    fi
    kill_pod "$drain" "$a_pod" "$a_check" "$dir"
    wait "$wrk_pid"
    if [ "$balancer" = nginx ]; then
        # nginx's master takes its workers with it on TERM (a KILL would
        # leave the ones still closing after the reload behind).
        kill -TERM "$lb" 2>/dev/null || true
        wait "$lb" 2>/dev/null || true
    fi
    stop_all

    RESULT="$(python3 - "$dir" "$t_kill" <<'PY'
import re, sys
d, t_kill = sys.argv[1], float(sys.argv[2])
text = open(d + "/wrk.txt").read()
requests = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
failed = int(non2xx.group(1)) if non2xx else 0
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if errors:
    failed += sum(int(n) for n in errors.groups())
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
drain = float(open(d + "/drain").read().strip() or 0)
times = [float(l) for l in open(d + "/a.requests") if l.strip()]
# When backend a got its last request, from the start of its termination.
# Under tini it died at once: what it saw then is not the balancer's notice.
notice = f"{max(times) - t_kill:.2f}" if times and drain > 0 else "-"
print(failed, requests, f"{rate:.0f}", f"{drain:.2f}", notice)
PY
)"
}

printf 'load: wrk -t 2 -c %s -d %ss, app %sms per request; sleeps %s/%s, quiet %s, nginx reload %ss after termination starts\n' \
    "$CONCURRENCY" "$DURATION" "$DELAY_MS" "$SHORT_SLEEP" "$LONG_SLEEP" "$QUIET" "$RELOAD_DELAY"
printf '%-13s %-17s %-16s %6s %8s %9s\n' balancer drain failed/requests req/s drain_s notice_s
for balancer in $BALANCERS; do
    for drain in $DRAINS; do
        one_run "$balancer" "$drain"
        read -r f r rate d n <<<"$RESULT"
        printf '%-13s %-17s %-16s %6s %8s %9s\n' "$balancer" "$drain" "$f/$r" "$rate" "$d" "$n"
    done
done
