# Shared by run.sh and matrix.sh (sourced, not run): the tool check, the
# work directory, killing what the script started, free ports and polling.
# The sourcing script sets SCRIPT (its name, for messages), TOOLS, DRAINIT
# and WORK_PREFIX first.

for tool in $TOOLS; do
    command -v "$tool" >/dev/null || {
        echo "$SCRIPT: $tool is not installed" >&2
        exit 1
    }
done
[ -x "$DRAINIT" ] || {
    echo "$SCRIPT: no drainit at $DRAINIT (build it, or pass its path)" >&2
    exit 1
}

work="$(mktemp -d "/tmp/$WORK_PREFIX.XXXXXX")"
pids=()
# Kills what the script started: a namespace's PID 1 first (that ends
# everything in it), then unshare or the balancer itself.
stop_all() {
    {
        for p in "${pids[@]}"; do
            pkill -KILL -P "$p" || true
            kill -KILL "$p" || true
        done
        # In braces, so that bash's "Killed" job reports go too.
        wait || true
    } 2>/dev/null
    pids=()
}
if [ "${KEEP:-0}" = 1 ]; then
    trap 'stop_all; echo "logs: $work"' EXIT
else
    trap 'stop_all; rm -rf "$work"' EXIT
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls until a command succeeds (10s at most).
wait_until() {
    local what="$1"
    shift
    for _ in $(seq 1000); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.01
    done
    echo "$SCRIPT: timed out waiting for $what" >&2
    exit 1
}
