"""RunFolderIOManager: the GPU step's outputs are the files of the worker's run folder.

``environment_snapshot`` is environment.json, ``baseline_power`` baseline.json and ``raw_process_results``
the process results with the Parquet sidecars (docs/run-folder.md). The worker wrote them atomically, so
storing an output records where it is and stores nothing twice; loading one reads the folder back through
the one validating reader (``RunFolder.open``). The folder is that of the run that materialised the
upstream asset: this run's when it measured, else the partition's latest materialisation (e.g. results
stored again after a storage change, without measuring).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from llem_pipeline.defs.experiments.partitions import split_partition_key
from llem_pipeline.defs.settings import LlemPaths
from llem_pipeline.measure.run_folder import RunFolder, RunFolderError, run_folder_path

ENVIRONMENT, BASELINE, RAW = "environment_snapshot", "baseline_power", "raw_process_results"


class RunFolderIOManager(dg.ConfigurableIOManager):
    """Locates and validates run folders under ``<data dir>/runs``; never copies them."""

    paths: LlemPaths = Field(description="Where the run folders are (LlemPaths.runs())")

    def _folder(self, partition_key: Any, run_id: str) -> RunFolder:
        run_date, measurement = split_partition_key(partition_key)
        self.paths.run_folder(run_date, measurement.config_hash, run_id)  # fetched from the run store if configured
        return RunFolder.open(self.paths.runs(), run_date, measurement.config_hash, run_id)

    def _materialising_run(self, context: dg.InputContext, upstream: dg.OutputContext) -> str:
        """Return the id of the run whose output is loaded: the upstream step's run when it measured in this run
        (its folder exists), else the run of the partition's latest materialisation. Raises RunFolderError
        when there is none."""
        run_date, measurement = split_partition_key(context.asset_partition_key)
        try:
            run_id = upstream.run_id
        except dg.DagsterInvariantViolationError:
            run_id = None
        if run_id and self._present(run_date, measurement.config_hash, run_id):
            return run_id
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=upstream.asset_key, asset_partitions=[str(context.asset_partition_key)]),
            limit=1,
        ).records
        if not records:
            raise RunFolderError(
                f"{upstream.asset_key.to_user_string()} has no materialisation for partition "
                f"{context.asset_partition_key}: run the GPU step (gpu_measurement) for this partition first"
            )
        return records[0].run_id

    def _present(self, run_date: str, config_hash: str, run_id: str) -> bool:
        """Return True when the run folder is here, or was fetched complete from the configured run store."""
        try:
            return self.paths.run_folder(run_date, config_hash, run_id).is_dir()
        except RunFolderError:
            return False

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Check that this run's folder holds the output (the worker wrote it); record its path as metadata."""
        run_date, measurement = split_partition_key(context.asset_partition_key)
        path = run_folder_path(self.paths.runs(), run_date, measurement.config_hash, context.run_id)
        if not path.is_dir():
            raise RunFolderError(f"{context.asset_key.to_user_string()}: the run folder {path} does not exist")
        context.add_output_metadata({"run_dir": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        """Return the upstream output read from its run folder: EnvironmentSnapshot, baseline dict (or None),
        or the RunFolder itself for raw_process_results."""
        upstream = context.upstream_output
        if upstream is None or not context.has_asset_partitions:
            raise RunFolderError("RunFolderIOManager loads the GPU step's outputs of one measurement partition")
        name = upstream.asset_key.path[-1]
        folder = self._folder(context.asset_partition_key, self._materialising_run(context, upstream))
        if name == ENVIRONMENT:
            return folder.environment
        if name == BASELINE:
            return folder.baseline
        if name == RAW:
            return folder
        raise RunFolderError(f"asset {name!r} does not live in a run folder")
