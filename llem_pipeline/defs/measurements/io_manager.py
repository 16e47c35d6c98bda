"""RunFolderIOManager: the GPU step's outputs live in the worker's run folder, not in DuckDB.

The GPU step never opens DuckDB. Its three assets are the files the worker wrote atomically:
``environment_snapshot`` = environment.json, ``baseline_power`` = baseline.json, ``raw_process_results``
= the run folder with its process_<k>.json and Parquet sidecars. Downstream CPU steps load them from
the folder of the partition's latest materialisation and write DuckDB.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from llem_pipeline.defs.experiments.partitions import split_measurement_key
from llem_pipeline.defs.measurements.run_folder import RunFolder, RunFolderError

ENVIRONMENT = "environment_snapshot"
BASELINE = "baseline_power"
RAW = "raw_process_results"


def latest_run_folder(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_key: str) -> RunFolder:
    """Return the RunFolder of the latest materialisation of ``asset_key`` for ``partition_key``.

    Raises RunFolderError when the partition was never materialised or its folder is gone.
    """
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition_key]), limit=1
    ).records
    if not records:
        raise RunFolderError(
            f"{asset_key.to_user_string()} has no materialisation for partition {partition_key}: "
            "materialise the GPU step (measurement group) for this partition first"
        )
    run_date, config_hash = split_measurement_key(partition_key)
    folder = RunFolder(run_date=run_date, config_hash=config_hash, run_id=records[0].run_id)
    if not folder.exists():
        raise RunFolderError(f"{folder.path} (run of {partition_key}) is missing: re-materialise the GPU step")
    return folder


class RunFolderIOManager(dg.ConfigurableIOManager):
    """Stores nothing itself (the worker already wrote the files); loads from the run folder."""

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Check that the output's run folder exists; returns None."""
        folder = obj if isinstance(obj, RunFolder) else None
        if folder is not None and not folder.exists():
            raise RunFolderError(f"{folder.path} does not exist after the measurement")

    def load_input(self, context: dg.InputContext) -> Any:
        """Return the upstream value read from the run folder (EnvironmentSnapshot, baseline dict or RunFolder)."""
        key = context.asset_key
        folder = latest_run_folder(context.instance, key, context.asset_partition_key)
        name = key.path[-1]
        if name == ENVIRONMENT:
            return folder.environment()
        if name == BASELINE:
            return folder.baseline()
        if name == RAW:
            return folder
        raise RunFolderError(f"RunFolderIOManager cannot load asset {key.to_user_string()}: not a GPU-step output")
