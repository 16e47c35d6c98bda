"""The Dagster code location: everything under ``llem_pipeline/defs/`` plus the executor.

The multiprocess executor runs each step in its own process; the ``llem/resource=gpu`` op tag limits
GPU steps inside one run (LLEM_GPU_STEPS_PER_RUN, default 1). Across runs the instance's pool "gpu"
does it: ``dagster instance concurrency set gpu N`` for N GPUs (default limit 1 in .dagster_home/dagster.yaml).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg


def executor_config() -> dict:
    """Return the multiprocess executor's config: at most LLEM_GPU_STEPS_PER_RUN (default 1) GPU steps at once."""
    gpu_steps = int(os.environ.get("LLEM_GPU_STEPS_PER_RUN", "1"))
    return {
        "max_concurrent": max(2, gpu_steps + 2),
        "tag_concurrency_limits": [{"key": "llem/resource", "value": "gpu", "limit": gpu_steps}],
    }


def executor() -> dg.ExecutorDefinition:
    """Return the multiprocess executor configured with executor_config()."""
    return dg.multiprocess_executor.configured(executor_config(), name="llem_multiprocess")


@dg.definitions
def defs() -> dg.Definitions:
    """Return the Definitions of llem_pipeline: the defs/ folder merged with the executor."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=executor()),
    )
