#!/usr/bin/env bash
# Start / stop the Dagster UI (`dagster dev`: webserver + daemon) bound to 127.0.0.1, tracked by PID.
#
#   scripts/dagster_ui.sh start     # background; prints the URL once /server_info answers
#   scripts/dagster_ui.sh stop      # SIGTERM to its process group, SIGKILL after LLEM_UI_STOP_TIMEOUT_S (20 s)
#   scripts/dagster_ui.sh status
#
# Environment: DAGSTER_HOME (default <checkout>/.dagster_home), LLEM_UI_PORT (3000), LLEM_DEVICES (required
# by the GPU step: 'simulated' without GPUs, 'auto' or '0,1' with them). `dagster dev` ignores SIGTERM,
# hence the SIGKILL fallback; only the process group this script started is signalled.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.dagster_home}"
PORT="${LLEM_UI_PORT:-3000}"
PIDFILE="$DAGSTER_HOME/dagster-dev.pid"
LOG="$DAGSTER_HOME/dagster-dev.log"
DAGSTER="${DAGSTER_BIN:-$ROOT/.venv/bin/dagster}"
STOP_TIMEOUT="${LLEM_UI_STOP_TIMEOUT_S:-20}"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running; then echo "already running: pid $(cat "$PIDFILE"), http://127.0.0.1:$PORT"; exit 0; fi
    : "${LLEM_DEVICES:?set LLEM_DEVICES (simulated | auto | 0,1)}"
    mkdir -p "$DAGSTER_HOME"
    cd "$ROOT"
    setsid "$DAGSTER" dev -w workspace.yaml -h 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 240); do
      if curl -fsS "http://127.0.0.1:$PORT/server_info" >/dev/null 2>&1; then
        echo "Dagster UI: http://127.0.0.1:$PORT  (pid $(cat "$PIDFILE"), log $LOG)"; exit 0
      fi
      running || { echo "dagster dev exited; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
      sleep 0.5
    done
    echo "dagster dev did not answer on port $PORT within 120 s; see $LOG" >&2; exit 1 ;;
  stop)
    if ! running; then echo "not running"; rm -f "$PIDFILE"; exit 0; fi
    PID="$(cat "$PIDFILE")"
    kill -TERM -- "-$PID" 2>/dev/null || true
    for _ in $(seq 1 $((STOP_TIMEOUT * 2))); do
      kill -0 -- "-$PID" 2>/dev/null || { rm -f "$PIDFILE"; echo "stopped"; exit 0; }
      sleep 0.5
    done
    kill -KILL -- "-$PID" 2>/dev/null || true
    rm -f "$PIDFILE"; echo "killed (did not stop on SIGTERM within ${STOP_TIMEOUT} s)" ;;
  status)
    if running; then echo "running: pid $(cat "$PIDFILE"), http://127.0.0.1:$PORT"; else echo "not running"; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
