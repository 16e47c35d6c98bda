"""Which run folder a partition's results come from.

The GPU step's three assets are the files the worker wrote atomically into its run folder
``<data_dir>/runs/<run_date>/<config_hash>/<run_id>/``: ``environment_snapshot`` = environment.json,
``baseline_power`` = baseline.json, ``raw_process_results`` = process_<k>.json with the Parquet sidecars.
The GPU step records them as materialisations (no I/O manager: nothing is stored twice, and no
load/handle events per run); the CPU step finds the folder itself: the one its own run measured, else
the partition's latest materialisation (results re-stored from an earlier measurement).
"""

from __future__ import annotations

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


def run_folder_for(instance: dg.DagsterInstance, partition_key: str, run_id: str) -> RunFolder:
    """Return the run folder whose results the CPU step of run ``run_id`` stores for ``partition_key``: the
    folder this run's GPU step wrote (named by the run id, so never another run's), else the one of the
    partition's latest ``raw_process_results`` materialisation. Raises RunFolderError when there is none."""
    run_date, config_hash = split_measurement_key(partition_key)
    here = RunFolder(run_date=run_date, config_hash=config_hash, run_id=run_id)
    if here.exists():
        return here
    return latest_run_folder(instance, dg.AssetKey(RAW), partition_key)
