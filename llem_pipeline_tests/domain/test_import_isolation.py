"""domain/ (and the package's public API) import with nothing but pydantic: heavy packages are blocked."""

import subprocess
import sys

BLOCKER = """
import sys
BLOCKED = {"torch", "transformers", "tokenizers", "vllm", "dagster", "dagster_duckdb", "duckdb", "pyarrow",
           "numpy", "yaml", "pynvml", "psutil", "matplotlib", "rich", "pandas"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
        return None
sys.meta_path.insert(0, Block())
import llem_pipeline.domain
import llem_pipeline
from llem_pipeline import ExperimentResult, ExperimentConfig, compute_measurement_config_hash
print(compute_measurement_config_hash(ExperimentConfig(model="m")))
print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_domain_imports_with_only_pydantic():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines[0]) == 16
    assert lines[1] == "[]"
