"""Resources of the code location: GPU allocator, measurement worker, Pipes client, DuckDB store.

Environment: LLEM_DEVICES ('auto' | 'simulated' | '0,1'; required, no silent fallback),
LLEM_DUCKDB / LLEM_DATA_DIR (paths, see llem_pipeline.paths), LLEM_WORKER_PYTHON (another interpreter
for the worker, e.g. a GPU venv), LLEM_WORKER_TIMEOUT_S (worker --timeout, s).
"""

from __future__ import annotations

import os

import dagster as dg

from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
from llem_pipeline.defs.measurements.worker import MeasurementWorker
from llem_pipeline.defs.store_resource import LlemStore


def _worker() -> MeasurementWorker:
    timeout = os.environ.get("LLEM_WORKER_TIMEOUT_S")
    return MeasurementWorker(
        python=os.environ.get("LLEM_WORKER_PYTHON", ""),
        **({"timeout_s": float(timeout)} if timeout else {}),
    )


@dg.definitions
def resources() -> dg.Definitions:
    """Return the Definitions holding every resource the assets, checks and sensors require."""
    return dg.Definitions(
        resources={
            "gpu_allocator": GpuAllocator(devices=dg.EnvVar("LLEM_DEVICES")),
            "measurement_worker": _worker(),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            "llem_store": LlemStore(),
        }
    )
