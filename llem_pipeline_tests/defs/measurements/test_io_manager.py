"""RunFolderIOManager: the GPU step's outputs stay in the worker's run folder and are read back validated."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.defs.experiments.partitions import MeasurementKey, partition_key
from llem_pipeline.defs.measurements.io_manager import RunFolderIOManager
from llem_pipeline.defs.results.records import run_record
from llem_pipeline.defs.settings import LlemPaths
from llem_pipeline.domain import EnvironmentSnapshot
from llem_pipeline.measure.run_folder import RunFolder, RunFolderError, run_folder_path
from llem_pipeline_tests.conftest import MEASURED_DATE, MEASURED_RUN_ID


@pytest.fixture
def setup(measured_run_folder: Path, tmp_path: Path):
    h = measured_run_folder.parent.name
    data = tmp_path / "data"
    shutil.copytree(measured_run_folder, run_folder_path(data / "runs", MEASURED_DATE, h, MEASURED_RUN_ID))
    key = partition_key(MEASURED_DATE, MeasurementKey(study="t", swept="", target="sim", config_hash=h))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("llem_measurements", [key.keys_by_dimension["measurement"]])
    return RunFolderIOManager(paths=LlemPaths(data_dir=str(data))), key, instance


def _input(asset: str, key, instance, run_id: str = MEASURED_RUN_ID):
    from llem_pipeline.defs.experiments.partitions import measurement_partitions

    upstream = dg.build_output_context(asset_key=[asset], run_id=run_id, partition_key=key,
                                       asset_partitions_def=measurement_partitions, instance=instance)
    return dg.build_input_context(upstream_output=upstream, partition_key=key, instance=instance,
                                  asset_partitions_def=measurement_partitions, asset_key=["store"])


def test_the_measuring_runs_folder_is_read_back(setup) -> None:
    manager, key, instance = setup
    assert isinstance(manager.load_input(_input("environment_snapshot", key, instance)), EnvironmentSnapshot)
    assert manager.load_input(_input("baseline_power", key, instance))["devices"]
    folder = manager.load_input(_input("raw_process_results", key, instance))
    assert isinstance(folder, RunFolder) and folder.run_id == MEASURED_RUN_ID
    record = run_record(folder, study="t", measurement_key=key.keys_by_dimension["measurement"])
    assert record.hardware_id == "simulated:sim-gpu:x1" and record.requests.num_rows == 8


def test_a_partition_never_measured_names_the_step_to_run(setup) -> None:
    manager, key, instance = setup
    with pytest.raises(RunFolderError, match="run the GPU step"):
        manager.load_input(_input("raw_process_results", key, instance, run_id="not-this-one"))


def test_storing_an_output_checks_the_folder_exists(setup) -> None:
    manager, key, instance = setup
    from llem_pipeline.defs.experiments.partitions import measurement_partitions

    ok = dg.build_output_context(asset_key=["raw_process_results"], run_id=MEASURED_RUN_ID, partition_key=key,
                                 asset_partitions_def=measurement_partitions, instance=instance)
    manager.handle_output(ok, None)
    assert ok.get_logged_metadata()["run_dir"].value.endswith(MEASURED_RUN_ID)
    missing = dg.build_output_context(asset_key=["raw_process_results"], run_id="other", partition_key=key,
                                      asset_partitions_def=measurement_partitions, instance=instance)
    with pytest.raises(RunFolderError, match="does not exist"):
        manager.handle_output(missing, None)


def test_the_storage_host_fetches_the_folder_from_the_run_store_verified(measured_run_folder: Path, tmp_path: Path):
    """GPU host and storage host have their own runs roots; the folder travels through a pyarrow.fs URL."""
    from llem_pipeline.measure.run_store import upload_run_folder

    h = measured_run_folder.parent.name
    store = (tmp_path / "store").as_uri()
    upload_run_folder(measured_run_folder, store, MEASURED_DATE, h, MEASURED_RUN_ID)
    key = partition_key(MEASURED_DATE, MeasurementKey(study="t", swept="", target="sim", config_hash=h))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("llem_measurements", [key.keys_by_dimension["measurement"]])
    storage_runs = tmp_path / "storage-host" / "runs"
    manager = RunFolderIOManager(paths=LlemPaths(data_dir=str(tmp_path / "data"), runs_dir=str(storage_runs),
                                                 run_store=store))
    folder = manager.load_input(_input("raw_process_results", key, instance))
    assert folder.path == run_folder_path(storage_runs, MEASURED_DATE, h, MEASURED_RUN_ID)
    assert folder.run_id == MEASURED_RUN_ID and folder.request_records
