#!/bin/sh
# A stand-in for a real application, to watch drainit work:
#
#   cargo run --release -- --config examples/drainit.toml
#
# It prints a tick every two seconds, leaves an orphaned process behind for
# drainit to reap, and shuts down gracefully on SIGTERM or Ctrl-C (SIGINT):
# drainit's log (stderr) shows the signal arrive, the shutdown start, the
# stop signal forwarded, and the exit code passed through.

graceful() {
    echo "demo: got SIG$1: finishing in-flight work"
    sleep 1
    echo "demo: done, exiting 0"
    exit 0
}
trap 'graceful TERM' TERM
trap 'graceful INT' INT
trap 'echo "demo: got SIGHUP: reloading (nothing to reload)"' HUP

echo "demo: started as pid $$ under drainit (pid $PPID)"
echo "demo: stop it with Ctrl-C, or from another shell: kill -TERM $PPID"

# A child that outlives its parent is reparented to drainit (PID 1 in a
# container, a subreaper here), which reaps it when it exits.
sh -c 'sleep 1 &'

i=0
while :; do
    i=$((i + 1))
    echo "demo: tick $i"
    # In the background, so that the trap runs as soon as a signal arrives.
    sleep 2 &
    wait $!
done
