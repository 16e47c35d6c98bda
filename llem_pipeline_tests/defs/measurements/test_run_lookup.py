"""Which run folder the CPU step stores: its own run's, else the partition's latest measurement."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.defs.experiments.partitions import measurement_key
from llem_pipeline.defs.measurements.run_folder import RunFolderError
from llem_pipeline.defs.measurements.run_lookup import run_folder_for
from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline_tests.storage.run_folder_factory import make_config, write_run_folder

DAY = "2026-11-20"


def test_the_run_that_measured_stores_its_own_folder(llem_env: Path) -> None:
    config = make_config(batch_size=4)
    write_run_folder(llem_env, run_date=DAY, config=config, run_id="run-here")
    write_run_folder(llem_env, run_date=DAY, config=config, run_id="run-other")
    key = measurement_key(DAY, compute_measurement_config_hash(config))
    with dg.instance_for_test() as instance:
        # no materialisation is recorded at all: the folder named by the run id is this run's own measurement
        assert run_folder_for(instance, key, "run-here").run_id == "run-here"


def test_a_store_only_run_without_any_measurement_names_the_missing_step(llem_env: Path) -> None:
    config = make_config(batch_size=4)
    key = measurement_key(DAY, compute_measurement_config_hash(config))
    with dg.instance_for_test() as instance, pytest.raises(RunFolderError, match="materialise the GPU step"):
        run_folder_for(instance, key, "run-without-folder")
