#!/usr/bin/env bash
# nginx with a slow download in flight when the pod is stopped, under tini
# and under drainit: how many bytes arrived. See README.md.
#
#   examples/nginx/run.sh [DRAINIT]
#
# DRAINIT (or $DRAINIT) defaults to the static release build,
# target/x86_64-unknown-linux-gnu/release/drainit. Needs nginx, tini, curl,
# python3 and unshare (root, for the PID namespaces).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DRAINIT="${1:-${DRAINIT:-$repo/target/x86_64-unknown-linux-gnu/release/drainit}}"
GRACE=8 # the pod's terminationGracePeriodSeconds
SIZE=$((1024 * 1024))

for tool in nginx tini curl python3 unshare; do
    command -v "$tool" >/dev/null || {
        echo "run.sh: $tool is not installed" >&2
        exit 1
    }
done
[ -x "$DRAINIT" ] || {
    echo "run.sh: no drainit at $DRAINIT (build it, or pass its path)" >&2
    exit 1
}

work="$(mktemp -d /tmp/nginx-drain.XXXXXX)"
chmod 755 "$work" # nginx's workers run as nobody
pod=""
stop_pod() {
    if [ -n "$pod" ]; then
        {
            pkill -KILL -P "$pod" || true
            kill -KILL "$pod" || true
            wait || true
        } 2>/dev/null
        pod=""
    fi
}
trap 'stop_pod; rm -rf "$work"' EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_until() {
    local what="$1"
    shift
    for _ in $(seq 1000); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.01
    done
    echo "run.sh: timed out waiting for $what" >&2
    exit 1
}

one_run() {
    local init="$1" dir port check
    dir="$work/$init"
    mkdir -p "$dir/www/slow" "$dir/tmp"
    chmod 755 "$dir" "$dir/www" "$dir/www/slow"
    head -c "$SIZE" /dev/urandom >"$dir/www/slow/big.bin"
    chmod 644 "$dir/www/slow/big.bin"
    port="$(free_port)"
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" "$here/nginx.conf" >"$dir/nginx.conf"
    local nginx=(nginx -g 'daemon off;' -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf")
    if [ "$init" = tini ]; then
        unshare --pid --fork --mount-proc tini -- "${nginx[@]}" >"$dir/pod.log" 2>&1 &
        pod=$!
        wait_until "nginx" curl -s -o /dev/null "http://127.0.0.1:$port/"
    else
        check="$(free_port)"
        sed "s/8080/$port/g" "$here/drainit.toml" >"$dir/drainit.toml"
        unshare --pid --fork --mount-proc "$DRAINIT" -c "$dir/drainit.toml" \
            --listen "127.0.0.1:$check" -- "${nginx[@]}" >"$dir/pod.log" 2>&1 &
        pod=$!
        wait_until "drainit /readyz" curl -sf "http://127.0.0.1:$check/readyz"
    fi

    # The download: about two seconds at nginx's limit_rate of 512 KiB/s.
    local rc=0
    curl -s -o "$dir/got.bin" "http://127.0.0.1:$port/slow/big.bin" &
    local dl=$!
    wait_until "the download to start" test -s "$dir/got.bin"

    # The kubelet: preStop (drainit only), SIGTERM, SIGKILL at the grace
    # period.
    local ns_init t0=$SECONDS
    ns_init="$(pgrep -P "$pod")"
    if [ "$init" = drainit ]; then
        curl -s "http://127.0.0.1:$check/prestop" >/dev/null || true
    fi
    local at_term
    at_term="$(stat -c %s "$dir/got.bin")"
    kill -TERM "$ns_init"
    while [ -e "/proc/$ns_init" ] && ((SECONDS - t0 < GRACE)); do sleep 0.01; done
    kill -KILL "$ns_init" 2>/dev/null || true
    wait "$dl" || rc=$?
    stop_pod

    local got verdict
    got="$(stat -c %s "$dir/got.bin")"
    if cmp -s "$dir/got.bin" "$dir/www/slow/big.bin"; then verdict="complete"; else verdict="CUT"; fi
    printf '%-8s %8s bytes at SIGTERM, %8s of %s in the end: %-8s (curl exit %s; nginx: %s)\n' \
        "$init" "$at_term" "$got" "$SIZE" "$verdict" "$rc" \
        "$(grep -o 'gracefully shutting down\|exiting' "$dir/error.log" | head -1)"
}

one_run tini
one_run drainit
