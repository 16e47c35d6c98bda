"""The Dagster code location: everything under ``llem_pipeline/defs/`` plus the executor.

The multiprocess executor runs each step in its own process; the ``llem/resource=gpu`` op tag limits
GPU steps inside one run (LLEM_GPU_STEPS_PER_RUN, default 1). Across runs the instance's pool "gpu"
does it: ``dagster instance concurrency set gpu N`` for N GPUs (default limit 1 in .dagster_home/dagster.yaml).

Step processes are forked from a forkserver that imported Dagster and the whole code location once
(``preload_modules``), so a step starts in a fraction of a second instead of re-importing everything
(spawn). The forkserver holds no threads, GPU context or open DuckDB file when it forks; the GPU work
itself runs in the worker command, a fresh interpreter launched through Pipes.
"""

from __future__ import annotations

import multiprocessing
import os
import pkgutil
from pathlib import Path

import dagster as dg

DEFS_DIR = Path(__file__).parent / "defs"


def preload_modules() -> list[str]:
    """Return the modules the forkserver imports once: dagster, this module and every module under defs/."""
    found = [m.name for m in pkgutil.walk_packages([str(DEFS_DIR)], prefix="llem_pipeline.defs.")]
    return ["dagster", "dagster_duckdb", "pyarrow.parquet", "matplotlib.figure", "matplotlib.backends.backend_agg",
            __name__, *sorted(found)]


def executor_config() -> dict:
    """Return the multiprocess executor's config: at most LLEM_GPU_STEPS_PER_RUN (default 1) GPU steps at once,
    steps forked from a preloaded forkserver where the platform has one (spawn elsewhere)."""
    gpu_steps = int(os.environ.get("LLEM_GPU_STEPS_PER_RUN", "1"))
    config: dict = {
        "max_concurrent": max(2, gpu_steps + 2),
        "tag_concurrency_limits": [{"key": "llem/resource", "value": "gpu", "limit": gpu_steps}],
    }
    if "forkserver" in multiprocessing.get_all_start_methods():
        config["start_method"] = {"forkserver": {"preload_modules": preload_modules()}}
    return config


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
