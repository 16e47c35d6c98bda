"""Resources and I/O managers of the code location, configured from environment variables.

This is the one place the code location reads its configuration: each setting is a ``dg.EnvVar`` when the
variable is set (the UI then shows the variable, not its value), else the documented default. The README's
"Configuration" table lists them all.

| variable | resource field | default |
|---|---|---|
| LLEM_DEVICES | gpu_allocator.devices | required: 'simulated', 'auto' or '0,1' |
| LLEM_DATA_DIR | llem_paths.data_dir | <checkout>/data |
| LLEM_STUDIES_DIR | llem_paths.studies_dir | <checkout>/studies |
| LLEM_DUCKDB | duckdb.database (I/O manager and store) | <data dir>/llem.duckdb |
| LLEM_DUCKDB_LOCK_TIMEOUT_S | duckdb_io_manager.lock_timeout_s, llem_store.lock_timeout_s | 120 |
| LLEM_WORKER_PYTHON | measurement_worker.python | the interpreter running Dagster |
| LLEM_WORKER_TIMEOUT_S | measurement_worker.timeout_s | 3600 |
| LLEM_SAMPLER | measurement_worker.sampler | auto |
| LLEM_TARGET | gpu_allocator.target | '' ('sim' or 'gpu' from LLEM_DEVICES) |
| LLEM_SIM_GPU_MODEL | measurement_worker.simulated_model | '' (sim-gpu) |
| LLEM_RUNS_DIR | llem_paths.runs_dir | <data dir>/runs |
| LLEM_LOCKS_DIR | llem_paths.locks_dir | <data dir>/locks |
| LLEM_RUN_STORE | llem_paths.run_store | '' (run folders on a shared path) |
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from llem_pipeline import paths
from llem_pipeline.defs.constants import DUCKDB_IO_MANAGER, RUN_FOLDER_IO_MANAGER
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
from llem_pipeline.defs.measurements.io_manager import RunFolderIOManager
from llem_pipeline.defs.measurements.worker import MeasurementWorker
from llem_pipeline.defs.settings import LlemPaths, LlemStore
from llem_pipeline.storage.io_manager import LlemDuckDBIOManager

SETTINGS: dict[str, str] = {
    "LLEM_DEVICES": "which GPUs the GPU step may use: 'simulated', 'auto' or a comma list of indices/UUIDs",
    "LLEM_DATA_DIR": "run folders, registered configs, GPU locks, charts (default <checkout>/data)",
    "LLEM_STUDIES_DIR": "the folder of studies/*.yaml (default <checkout>/studies)",
    "LLEM_DUCKDB": "the DuckDB result file (default <data dir>/llem.duckdb)",
    "LLEM_DUCKDB_LOCK_TIMEOUT_S": "longest wait for the DuckDB writer lock, s (default 120)",
    "LLEM_WORKER_PYTHON": "interpreter of the measurement worker, e.g. a GPU venv with vLLM (default: Dagster's)",
    "LLEM_WORKER_TIMEOUT_S": "the worker's hard timeout, s (default 3600)",
    "LLEM_SAMPLER": "where the power sampler runs: auto | process | thread (default auto)",
    "LLEM_TARGET": "the hardware target this host serves in a fleet, e.g. h100 (default: sim or gpu from LLEM_DEVICES)",
    "LLEM_SIM_GPU_MODEL": "product name of the simulated GPU, e.g. H100-SXM5-80GB (default sim-gpu)",
    "LLEM_RUNS_DIR": "root of the run folders, shared by GPU hosts and the storage host (default <data dir>/runs)",
    "LLEM_LOCKS_DIR": "folder of this host's per-GPU lock files (default <data dir>/locks)",
    "LLEM_RUN_STORE": "pyarrow.fs URL run folders are published to and fetched from, e.g. s3://bucket/runs",
}


def _env(name: str, default: Any, as_int: bool = False) -> Any:
    """Return ``dg.EnvVar(name)`` (``dg.EnvVar.int`` with ``as_int``) when the variable is set, else ``default``."""
    if not os.environ.get(name):
        return default
    return dg.EnvVar.int(name) if as_int else dg.EnvVar(name)


def duckdb_resource() -> DuckDBResource:
    """Return the DuckDBResource of the result file (LLEM_DUCKDB, else the default under the data dir)."""
    return DuckDBResource(database=_env("LLEM_DUCKDB", str(paths.duckdb_path())))


@dg.definitions
def resources() -> dg.Definitions:
    """Return the Definitions holding every resource and I/O manager the assets, checks, sensors and schedules use."""
    llem_paths = LlemPaths(data_dir=_env("LLEM_DATA_DIR", ""), studies_dir=_env("LLEM_STUDIES_DIR", ""),
                           runs_dir=_env("LLEM_RUNS_DIR", ""), locks_dir=_env("LLEM_LOCKS_DIR", ""),
                           run_store=_env("LLEM_RUN_STORE", ""))
    duckdb = duckdb_resource()
    lock_timeout = _env("LLEM_DUCKDB_LOCK_TIMEOUT_S", 120, as_int=True)
    return dg.Definitions(
        resources={
            "llem_paths": llem_paths,
            "gpu_allocator": GpuAllocator(devices=dg.EnvVar("LLEM_DEVICES"), target=_env("LLEM_TARGET", "")),
            "measurement_worker": MeasurementWorker(
                python=_env("LLEM_WORKER_PYTHON", ""),
                timeout_s=_env("LLEM_WORKER_TIMEOUT_S", 3600, as_int=True),
                sampler=_env("LLEM_SAMPLER", "auto"),
                simulated_model=_env("LLEM_SIM_GPU_MODEL", ""),
            ),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            "llem_store": LlemStore(duckdb=duckdb, lock_timeout_s=lock_timeout),
            RUN_FOLDER_IO_MANAGER: RunFolderIOManager(paths=llem_paths),
            DUCKDB_IO_MANAGER: LlemDuckDBIOManager(duckdb=duckdb, lock_timeout_s=lock_timeout),
        }
    )
