#!/usr/bin/env bash
# `make test-under-load`: run the test suite (the command given as arguments: `make test`'s own) while two
# busy processes keep two CPUs fully loaded, the way a shared CI machine or a developer's busy laptop would.
# The suite must not depend on how fast the machine is: it passes here or it is broken.
#
# The busy processes are started here and stopped by their PIDs when the suite ends, fails or is
# interrupted (INT, TERM, HUP). Should this script itself be killed outright, each busy process notices
# that its parent changed and exits on its own. Exit status: the suite's (130/143/129 when interrupted).
set -u
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]   (the test command to run under load)" >&2
    exit 2
fi
PY=${PY:-.venv/bin/python}
busy_pids=()

stop_busy() {
    local pid
    for pid in "${busy_pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${busy_pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
    busy_pids=()
}
cmd_pid=""
# The command runs in the background and the script waits for it: bash runs a trap only once its foreground
# child has ended, so a signal that arrives while the command runs would otherwise wait for the whole suite.
stop_all() {
    [ -n "$cmd_pid" ] && kill "-$1" "$cmd_pid" 2>/dev/null
    stop_busy
}
trap stop_busy EXIT
trap 'stop_all INT; exit 130' INT
trap 'stop_all TERM; exit 143' TERM
trap 'stop_all HUP; exit 129' HUP

for _ in 1 2; do
    # spins at 100 % of one CPU until killed, or until its parent (this script, pid $$) is gone; the pid is
    # passed in, so a script killed before the busy process even started is noticed too
    "$PY" -c 'import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    pass' "$$" &
    busy_pids+=("$!")
done
export LLEM_BUSY_PIDS="${busy_pids[*]}"  # for the command to see (the script's own test reads it)
echo "test-under-load: busy processes ${busy_pids[*]} started; running:$(printf ' %q' "$@")"
start=$(date +%s)
"$@" &
cmd_pid=$!
wait "$cmd_pid"
status=$?
cmd_pid=""
stop_busy
echo "test-under-load: busy processes stopped; suite exit status $status after $(( $(date +%s) - start )) s"
exit "$status"
