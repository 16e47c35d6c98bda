"""LlemDuckDBIOManager: unit-level with build_output_context/build_input_context, and a real dg.materialize."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster_duckdb import DuckDBResource

from llem_pipeline.domain import EnvironmentSnapshot, ExperimentResult, compute_measurement_config_hash
from llem_pipeline.storage import ResultStore, StorageError, journal
from llem_pipeline.storage.io_manager import LlemDuckDBIOManager, split_partition_key, table_for
from llem_pipeline_tests.storage.run_folder_factory import (
    make_config,
    make_environment,
    make_result,
    timeseries_table,
)

DAY = "2026-11-01"
START = datetime(2026, 11, 1, 2, tzinfo=UTC)
RUN_ID = "0b5c7e1e-8f6a-4c39-9d0e-2f1a3b4c5d6e"


def _partitions() -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date="2026-11-01"),
            "config": dg.DynamicPartitionsDefinition(name="experiments"),
        }
    )


@pytest.fixture
def setup(tmp_path: Path):
    config = make_config()
    h = compute_measurement_config_hash(config)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("experiments", [h])
    db = tmp_path / "llem.duckdb"
    io = LlemDuckDBIOManager(duckdb=DuckDBResource(database=str(db)), lock_timeout_s=30)
    key = dg.MultiPartitionKey({"date": DAY, "config": h})
    return config, h, instance, db, io, key


def _out(asset: str, key, instance, **kw):
    return dg.build_output_context(
        asset_key=[asset], partition_key=key, asset_partitions_def=_partitions(), instance=instance, run_id=RUN_ID, **kw
    )


def _in(upstream, key, instance):
    return dg.build_input_context(
        upstream_output=upstream, partition_key=key, asset_partitions_def=_partitions(), instance=instance,
        asset_key=["downstream"],
    )


@pytest.mark.slow
def test_round_trip_of_every_output_type(setup) -> None:
    config, _h, instance, db, io, key = setup
    result, procs = make_result(config, start=START)
    env = make_environment()
    baseline = {
        "devices": [{"uuid": "GPU-fab-0000", "power_w": 51.5}], "total_power_w": 51.5, "duration_s": 1.0,
        "sample_count": 10, "measured_at": "2026-11-01T01:59:00+00:00", "provenance": "fresh",
        "cache_age_s": None, "device_kind": "simulated",
    }
    samples = timeseries_table(40)
    outputs = {
        "experiment_results": result,
        "raw_process_results": procs,
        "environment_snapshot": env,
        "baseline_power": baseline,
        "power_timeseries": samples,
    }
    expected_rows = {"experiment_results": 1, "raw_process_results": 1, "environment_snapshot": 1,
                     "baseline_power": 1, "power_timeseries": 40}
    for asset, obj in outputs.items():
        ctx = _out(asset, key, instance)
        io.handle_output(ctx, obj)
        meta = ctx.get_logged_metadata()
        assert meta["dagster/partition_row_count"].value == expected_rows[asset]
        assert meta["table"].value == table_for(asset)
        loaded = io.load_input(_in(_out(asset, key, instance), key, instance))
        if isinstance(obj, pa.Table):
            assert loaded.equals(obj.cast(loaded.schema)) and loaded.num_rows == 40
        else:
            assert loaded == obj
    counts = ResultStore(db).row_counts()
    assert counts["experiment_results"] == 1 and counts["power_samples"] == 40
    assert ResultStore(db).query("SELECT DISTINCT run_id FROM power_samples").column("run_id").to_pylist() == [RUN_ID]


def test_rematerialising_replaces_the_partition(setup) -> None:
    _config, _h, instance, db, io, key = setup
    for n in (40, 25, 25):
        io.handle_output(_out("power_timeseries", key, instance), timeseries_table(n))
    assert ResultStore(db).row_counts()["power_samples"] == 25


def test_outputs_go_through_the_stores_writer_lock_manifest_and_journal(setup) -> None:
    # The I/O manager writes through ResultStore._write: the writer lock file exists (released), the
    # manifest and the journal hold each materialisation, the audit finds nothing.
    _config, h, instance, db, io, key = setup
    for n in (40, 25):
        io.handle_output(_out("power_timeseries", key, instance), timeseries_table(n))
    store = ResultStore(db)
    assert store.write_lock_path.is_file() and store.write_lock_path.read_text() == ""
    rows = store.query("SELECT table_name, config_hash, run_id, row_count, write_seq FROM partition_manifest").to_pylist()
    assert rows == [{"table_name": "power_samples", "config_hash": h, "run_id": RUN_ID, "row_count": 25, "write_seq": 2}]
    assert [(e["seq"], e["rows"]) for e in journal.read_entries(store.journal_path)] == [(1, 40), (2, 25)]
    assert store.audit() == []


def test_wrong_types_and_unknown_assets_are_refused(setup) -> None:
    _config, _h, instance, _db, io, key = setup
    with pytest.raises(StorageError, match="cannot store a EnvironmentSnapshot in table 'experiment_results'"):
        io.handle_output(_out("experiment_results", key, instance), make_environment())
    with pytest.raises(StorageError, match="has no llem table"):
        io.handle_output(_out("something_else", key, instance), timeseries_table(1))
    with pytest.raises(StorageError, match="not one of the llem tables"):
        io.handle_output(
            _out("x", key, instance, definition_metadata={"llem_table": "requests; DROP TABLE baselines"}),
            timeseries_table(1),
        )
    other = make_config(batch_size=4)
    result, _ = make_result(other)
    with pytest.raises(StorageError, match="differs from the partition"):
        io.handle_output(_out("experiment_results", key, instance), result)


def test_llem_table_metadata_overrides_the_asset_name(setup) -> None:
    _config, _h, instance, db, io, key = setup
    ctx = _out("my_samples", key, instance, definition_metadata={"llem_table": "power_samples"})
    io.handle_output(ctx, timeseries_table(7))
    assert ResultStore(db).row_counts()["power_samples"] == 7


def test_split_partition_key_forms() -> None:
    h = "0123456789abcdef"
    assert split_partition_key(dg.MultiPartitionKey({"date": DAY, "config": h})) == (
        date(2026, 11, 1), h)
    assert split_partition_key(f"{h}|{DAY}")[1] == h
    with pytest.raises(StorageError, match="not a date x config"):
        split_partition_key(h)
    with pytest.raises(StorageError, match="config_hash"):
        split_partition_key(dg.MultiPartitionKey({"date": DAY, "config": "x'; DROP TABLE requests; --"}))


@pytest.mark.slow
def test_materialize_partitioned_assets_on_a_test_instance(tmp_path: Path) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    partitions = _partitions()

    @dg.asset(partitions_def=partitions, io_manager_key="llem_io", metadata={"study": "demo"})
    def experiment_results(context) -> ExperimentResult:
        keys = context.partition_key.keys_by_dimension
        assert keys["config"] == h
        result, _ = make_result(config, start=START)
        return result

    @dg.asset(partitions_def=partitions, io_manager_key="llem_io")
    def environment_snapshot() -> EnvironmentSnapshot:
        return make_environment()

    @dg.asset(partitions_def=partitions, io_manager_key="llem_io")
    def power_timeseries() -> pa.Table:
        return timeseries_table(33)

    @dg.asset(partitions_def=partitions)
    def summary(experiment_results: ExperimentResult, power_timeseries: pa.Table) -> dict:
        return {"tokens": experiment_results.total_tokens, "samples": power_timeseries.num_rows}

    db = tmp_path / "llem.duckdb"
    resources = {"llem_io": LlemDuckDBIOManager(duckdb=DuckDBResource(database=str(db)))}
    key = dg.MultiPartitionKey({"date": DAY, "config": h})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("experiments", [h])
        assets = [experiment_results, environment_snapshot, power_timeseries, summary]
        for _ in range(2):  # twice: re-materialising must not duplicate rows
            res = dg.materialize(assets, partition_key=key, instance=instance, resources=resources)
            assert res.success
        assert res.output_for_node("summary") == {"tokens": 1024, "samples": 33}
        mats = res.asset_materializations_for_node("power_timeseries")
        assert mats[0].metadata["dagster/partition_row_count"].value == 33
    store = ResultStore(db)
    counts = store.row_counts()
    assert counts["experiment_results"] == 1 and counts["power_samples"] == 33 and counts["environment_snapshots"] == 1
    row = store.query("SELECT run_id, study FROM experiment_results").to_pylist()[0]
    assert row["study"] == "demo" and row["run_id"] == res.run_id
