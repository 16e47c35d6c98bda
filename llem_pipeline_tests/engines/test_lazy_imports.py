"""engines/ imports without torch, transformers, vllm or Dagster: they are imported inside functions only."""

import subprocess
import sys

BLOCKER = """
import sys
BLOCKED = {"torch", "transformers", "tokenizers", "vllm", "dagster", "duckdb", "safetensors"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
        return None
sys.meta_path.insert(0, Block())
import llem_pipeline.cli
from llem_pipeline.engines import model_files, prompts, protocol, registry, tiny_model, transformers_engine, vllm_engine
from llem_pipeline.domain.config import ExperimentConfig
try:
    registry.load_engine(ExperimentConfig(model="m", backend="vllm"), [])
except model_files.EngineLoadError as e:
    print("vllm:", "llem-pipeline[vllm]" in str(e))
print(len(prompts.builtin_prompts()))
print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_engines_import_without_heavy_packages():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["vllm: True", "600", "[]"]
