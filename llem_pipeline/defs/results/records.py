"""The RunRecord of a run folder: what store_results hands the DuckDB I/O manager (one transaction)."""

from __future__ import annotations

from datetime import date

from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.identity import compute_workload_hash, hardware_id
from llem_pipeline.measure.run_folder import RunFolder
from llem_pipeline.storage.records import RunRecord


def run_record(folder: RunFolder, *, environment: EnvironmentSnapshot | None = None, baseline: dict | None = None,
               study: str | None = None, cycle: int | None = None, measurement_key: str | None = None,
               label: str | None = None) -> RunRecord:
    """Return the RunRecord of a validated run folder: its result, processes, environment (``environment`` or
    environment.json), baseline (``baseline`` or baseline.json), samples, requests and energy attribution, keyed by (config hash,
    hardware id of the measured devices, the folder's run id) with the workload hash of its config."""
    env = environment if environment is not None else folder.environment
    return RunRecord(
        run_date=date.fromisoformat(folder.run_date), config_hash=folder.config_hash, run_id=folder.run_id,
        hardware_id=hardware_id(env.device_kind, env.gpu_names), workload_hash=compute_workload_hash(folder.config),
        study=study, cycle=cycle, measurement_key=measurement_key, label=label, result=folder.result,
        processes=folder.processes, environment=env, baseline=baseline if baseline is not None else folder.baseline,
        power_samples=folder.power_samples, requests=folder.requests, attribution=folder.attribution,
    )
