"""LlemPaths and LlemStore: where the code location keeps its files, as Dagster resources.

Configured in defs/resources.py from environment variables (``dg.EnvVar``); an empty value means the
default of llem_pipeline.paths (``<checkout>/data`` from a source checkout, ``studies/`` beside it).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from llem_pipeline import paths
from llem_pipeline.measure.run_folder import run_folder_path
from llem_pipeline.storage import ResultStore


class LlemPaths(dg.ConfigurableResource):
    """The data dir (run folders, registered configs, GPU locks, charts) and the studies folder."""

    data_dir: str = Field(default="", description="Data dir; '' = <checkout>/data (LLEM_DATA_DIR)")
    studies_dir: str = Field(default="", description="Folder of studies/*.yaml; '' = <checkout>/studies (LLEM_STUDIES_DIR)")
    runs_dir: str = Field(
        default="", description="Root of the run folders; '' = <data>/runs (LLEM_RUNS_DIR: in a fleet, the location "
        "shared by the GPU hosts and the storage host)",
    )
    run_store: str = Field(
        default="", description="pyarrow.fs URL the GPU hosts publish run folders to and the storage host fetches "
        "them from (LLEM_RUN_STORE, e.g. s3://bucket/llem/runs); '' = the run folders' location is a shared path",
    )
    locks_dir: str = Field(
        default="", description="Folder of the per-GPU lock files; '' = <data>/locks (LLEM_LOCKS_DIR: host-local)",
    )

    def data(self) -> Path:
        """Return the data dir (created if missing)."""
        return paths.data_dir(self.data_dir or None)

    def studies(self) -> Path:
        """Return the studies folder."""
        return paths.studies_dir(self.studies_dir or None)

    def runs(self) -> Path:
        """Return the root of the run folders: ``runs_dir`` when set, else ``<data>/runs``."""
        return Path(self.runs_dir) if self.runs_dir else self.data() / "runs"

    def run_folder(self, run_date: str, config_hash: str, run_id: str) -> Path:
        """Return the local path of a run folder, fetched (verified) from the run store when one is configured
        and the folder is not here yet. Raises RunFolderError when the store does not have it complete."""
        if self.run_store:
            from llem_pipeline.measure.run_store import fetch_run_folder

            return fetch_run_folder(self.run_store, self.runs(), run_date, config_hash, run_id)
        return run_folder_path(self.runs(), run_date, config_hash, run_id)

    def locks(self) -> Path:
        """Return the folder of the per-GPU lock files: ``locks_dir`` when set, else ``<data>/locks`` (created if
        missing)."""
        folder = Path(self.locks_dir) if self.locks_dir else self.data() / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def scratch(self) -> Path:
        """Return the folder for a step's temporary files, ``<data>/tmp`` (created if missing)."""
        folder = self.data() / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def charts(self) -> Path:
        """Return the folder of the PNG charts, ``<data>/charts``."""
        return self.data() / "charts"

    def baseline_cache(self) -> Path:
        """Return the idle-power cache shared by the measurements, ``<data>/baseline_cache.json``."""
        return self.data() / "baseline_cache.json"


class LlemStore(dg.ConfigurableResource):
    """The DuckDB result store for what is not an asset output (study registration); same file as the I/O manager."""

    duckdb: DuckDBResource = Field(description="dagster-duckdb resource naming the DuckDB file")
    lock_timeout_s: int = Field(default=120, ge=0, description="Longest wait for the file's writer lock, s")

    def store(self) -> ResultStore:
        """Return a ResultStore on the configured file."""
        return ResultStore(self.duckdb.database or None, lock_timeout_s=self.lock_timeout_s,
                           connection_config=self.duckdb.connection_config)
