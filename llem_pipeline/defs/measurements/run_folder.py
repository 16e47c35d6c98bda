"""Reading a worker's run folder (RUN_FOLDER contract): the files the GPU step produced.

A folder that exists is complete (the worker renames it into place on success only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.experiment import ExperimentResult, RawProcessResult
from llem_pipeline.paths import run_dir


class RunFolderError(RuntimeError):
    """A run folder is missing or lacks a file the contract requires; the message names the path."""


@dataclass(frozen=True)
class RunFolder:
    """One measurement's folder ``<data_dir>/runs/<run_date>/<config_hash>/<run_id>/``."""

    run_date: str
    config_hash: str
    run_id: str

    @property
    def path(self) -> Path:
        """Return the folder path (validated against the data dir layout)."""
        return run_dir(self.run_date, self.config_hash, self.run_id)

    def file(self, name: str) -> Path:
        """Return the path of ``name`` inside the folder; raises RunFolderError when it is absent."""
        path = self.path / name
        if not path.is_file():
            raise RunFolderError(f"{path} is missing: the worker's run folder is incomplete or was removed")
        return path

    def exists(self) -> bool:
        """Return True when the (complete) folder exists."""
        return self.path.is_dir()

    def config(self) -> ExperimentConfig:
        """Return config.json as an ExperimentConfig."""
        return ExperimentConfig.model_validate_json(self.file("config.json").read_text(encoding="utf-8"))

    def environment(self) -> EnvironmentSnapshot:
        """Return environment.json as an EnvironmentSnapshot."""
        return EnvironmentSnapshot.model_validate_json(self.file("environment.json").read_text(encoding="utf-8"))

    def baseline(self) -> dict[str, Any] | None:
        """Return baseline.json (power in W, durations in s), or None when the baseline was disabled."""
        path = self.path / "baseline.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def process_results(self) -> list[RawProcessResult]:
        """Return every process_<k>.json in process order; raises RunFolderError when there is none."""
        files = sorted(self.path.glob("process_*.json"), key=lambda p: int(p.stem.split("_", 1)[1]))
        if not files:
            raise RunFolderError(f"{self.path} has no process_<k>.json: the worker wrote no process result")
        return [RawProcessResult.model_validate_json(p.read_text(encoding="utf-8")) for p in files]

    def result(self) -> ExperimentResult:
        """Return result.json (the worker's aggregated ExperimentResult v2.0)."""
        return ExperimentResult.model_validate_json(self.file("result.json").read_text(encoding="utf-8"))

    @property
    def timeseries_path(self) -> Path:
        """Return the path of timeseries.parquet (power samples)."""
        return self.file("timeseries.parquet")

    @property
    def requests_path(self) -> Path:
        """Return the path of requests.parquet (per-request timings)."""
        return self.file("requests.parquet")
