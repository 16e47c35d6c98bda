#!/usr/bin/env bash
# GPU validation on one NVIDIA GPU machine without internet (made for a single H200), ≤ 8 minutes:
#   1. probe NVML (energy counter update period by tight polling, instant/average power fields,
#      clock-event reasons, power limit, persistence mode)           -> scripts/gpu_probe.py
#   2. plan the workload from the time budget (printed)               -> scripts/gpu_check_plan.py plan
#   3. build random-weight Llama-shaped models on the GPU (presets 1b, 8b; bf16, weights initialised on
#      the device), then run the worker (`python -m llem_pipeline.measure --devices auto`, real NVML) on
#      each model at batch sizes 1, 8, 32, 128 (pytorch backend, bf16, fixed output length)
#   4. summarise: J/token, tok/s, avg W, counter/trace agreement, uncertainty, warnings
#                                                                     -> scripts/gpu_check_plan.py summary
# Needs torch (CUDA), transformers, nvidia-ml-py, pydantic, pyarrow, numpy on the machine; llem_pipeline
# need not be installed (PYTHONPATH=<repo>). Writes to $OUT (default ./gpu_check_out), flat:
#   gpu_check.log  probe.json  budget.md  summary.md  summary.csv  runs.tar.gz (run folders + configs)
#
#   bash scripts/gpu_check.sh            # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run  # CPU: simulated device (fake pynvml for the probe), tiny model, < 2 min
#
# Environment: OUT (output folder), PYTHON (interpreter; default <repo>/.venv/bin/python if present, else
# python3), GPU_CHECK_BUDGET_S (default 480; dry run 110), GPU_CHECK_WORK (models and run folders;
# default ${TMPDIR:-/tmp}/llem_gpu_check[_dry]). Exit 0 when every run produced a result whose
# counter/trace agreement is within 5 %; 1 otherwise; 2 when the machine lacks something (message says what).
set -uo pipefail

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_check: error: unknown argument '$arg' (use --dry-run or nothing)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
if (( DRY )); then
  BUDGET_S="${GPU_CHECK_BUDGET_S:-110}"; WORK="${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/llem_gpu_check_dry}"
  DEVICES=simulated; PRESETS=(tiny); MODE="DRY RUN (CPU, simulated device, tiny model)"
else
  BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"; WORK="${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/llem_gpu_check}"
  DEVICES=auto; PRESETS=(1b 8b); MODE="GPU (NVML)"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export LLEM_DATA_DIR="$WORK/data" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
unset DAGSTER_PIPES_CONTEXT
rm -rf "$WORK/runs" "$WORK/configs" "$WORK/plan.tsv"   # models under $WORK/data/models are kept and reused
mkdir -p "$WORK/runs" "$LLEM_DATA_DIR"
rm -f "$OUT"/gpu_check.log "$OUT"/probe.json "$OUT"/budget.md "$OUT"/summary.md "$OUT"/summary.csv "$OUT"/runs.tar.gz
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

START=$SECONDS
elapsed() { echo $(( SECONDS - START )); }
step() { printf '\n== [%4ss] %s\n' "$(elapsed)" "$*"; }

step "gpu_check $MODE; budget ${BUDGET_S} s; repo $REPO; python $PYTHON; out $OUT; work $WORK"
"$PYTHON" - <<'EOF' || { echo "gpu_check: error: missing Python modules (see above): install them for $PYTHON or set PYTHON" >&2; exit 2; }
import importlib.util, sys
need = ["numpy", "pydantic", "pyarrow", "torch", "transformers", "tokenizers", "safetensors", "pynvml", "llem_pipeline"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
print(f"python {sys.version.split()[0]}; modules: " + ", ".join(f"{m}{' MISSING' if m in missing else ''}" for m in need))
sys.exit(1 if missing else 0)
EOF
"$PYTHON" -c "import torch; print(f'torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}' + (f', {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ''))"
if (( ! DRY )); then
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: error: torch sees no CUDA device; use --dry-run on a CPU machine" >&2; exit 2; }
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,persistence_mode --format=csv
fi

# 1. Probe NVML -----------------------------------------------------------------------------------
step "1/4 probe NVML"
PROBE_ARGS=(--json "$OUT/probe.json")
(( DRY )) && PROBE_ARGS+=(--fake --poll-s 1)
"$PYTHON" "$REPO/scripts/gpu_probe.py" "${PROBE_ARGS[@]}" || { echo "gpu_check: error: the NVML probe failed" >&2; exit 2; }

# 2. Plan -----------------------------------------------------------------------------------------
step "2/4 plan the workload within the budget"
PLAN_ARGS=(plan --work "$WORK" --out "$OUT" --budget-s "$BUDGET_S" --probe "$OUT/probe.json")
(( DRY )) && PLAN_ARGS+=(--dry-run)
"$PYTHON" "$REPO/scripts/gpu_check_plan.py" "${PLAN_ARGS[@]}" || { echo "gpu_check: error: planning failed" >&2; exit 2; }

# 3. Build the models, then measure -----------------------------------------------------------------
BUILD_FAILED=" "
for preset in "${PRESETS[@]}"; do
  limit=$(( BUDGET_S - $(elapsed) - 60 ))
  step "3/4 build model preset $preset (random weights; 1b/8b: bf16, initialised on the GPU; limit ${limit} s)"
  BUILD_ARGS=("$LLEM_DATA_DIR/models/$preset-seed0" --size "$preset")
  (( DRY )) || BUILD_ARGS+=(--device cuda)
  if (( limit < 10 )) || ! timeout "$limit" "$PYTHON" -m llem_pipeline.cli make-model "${BUILD_ARGS[@]}" < /dev/null; then
    echo "gpu_check: building preset $preset failed or ran out of budget: its runs are skipped"
    BUILD_FAILED+="$preset "
  fi
done

while IFS=$'\t' read -r name preset batch cfg est; do
  if [[ "$BUILD_FAILED" == *" $preset "* ]]; then
    echo "skipped: model build failed" > "$WORK/runs/$name.status"
    continue
  fi
  remaining=$(( BUDGET_S - $(elapsed) - 25 ))   # keep time for the summary and the tarball
  if (( remaining < est )); then
    step "skip $name: needs about ${est} s, ${remaining} s left in the budget"
    echo "skipped: budget (needed ~${est} s, ${remaining} s left)" > "$WORK/runs/$name.status"
    continue
  fi
  step "3/4 measure $name (model llem:$preset, batch $batch, --devices $DEVICES, --timeout $remaining)"
  t0=$SECONDS
  "$PYTHON" -m llem_pipeline.measure --config "$cfg" --devices "$DEVICES" --out "$WORK/runs/$name" \
    --timeout "$remaining" --run-id "gpu_check-$name" --experiment-id "gpu_check-$name" \
    --baseline-cache "$WORK/baseline_cache.json" --quiet < /dev/null
  rc=$?
  if (( rc == 0 )); then
    echo "ok ($(( SECONDS - t0 )) s)" | tee "$WORK/runs/$name.status"
  else
    echo "failed: worker exit $rc after $(( SECONDS - t0 )) s (see gpu_check.log)" | tee "$WORK/runs/$name.status"
  fi
done < "$WORK/plan.tsv"

# 4. Summary ----------------------------------------------------------------------------------------
step "4/4 summary"
"$PYTHON" "$REPO/scripts/gpu_check_plan.py" summary --work "$WORK" --out "$OUT"
rc=$?
tar -czf "$OUT/runs.tar.gz" -C "$WORK" runs configs plan.tsv
step "done in $(elapsed) s (budget ${BUDGET_S} s); results in $OUT: $(cd "$OUT" && echo *)"
exit $rc
