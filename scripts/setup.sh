#!/usr/bin/env bash
# Build .venv for llem_pipeline (what `make setup` runs): says what it installs and how long each step takes,
# and prints a line at least every 10 s while pip works, so no step is silent. torch==2.13.0 goes in first:
# on a CPU machine it is the local CPU wheel, and with it in place the project's torch range is satisfied,
# so pip never pulls a CUDA build. vLLM is never installed here (an optional extra for GPU hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
started=$(date +%s)

say() { echo "[setup +$(( $(date +%s) - started )) s] $*"; }

# Run "$@" (quietly) and print "… <what>: N s" every 10 s until it ends; fail with its output's tail.
with_ticker() {
  local what=$1; shift
  local log; log=$(mktemp)
  "$@" >"$log" 2>&1 &
  local pid=$! t=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1; t=$((t + 1))
    if (( t % 10 == 0 )); then echo "    … $what: ${t} s"; fi
  done
  if ! wait "$pid"; then
    echo "setup: $what failed; the last lines of its output:" >&2
    tail -20 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

if [ ! -x "$PY" ]; then
  say "creating the virtual environment .venv (about 5 s)"
  python3 -m venv .venv
fi
say "upgrading pip (about 10 s)"
with_ticker "pip upgrade" "$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
  say "installing torch 2.13.0 (the CPU wheel on a machine without CUDA; about 1 min)"
  with_ticker "torch" "$PY" -m pip install -q 'torch==2.13.0'
fi
say "installing llem_pipeline and its dependencies: Dagster, DuckDB, pyarrow, transformers, test tools (1-2 min)"
with_ticker "llem_pipeline" "$PY" -m pip install -q -e '.[dev]'
say "done: .venv is ready ($("$PY" -c 'import torch, dagster; print(f"torch {torch.__version__}, dagster {dagster.__version__}")'))"
