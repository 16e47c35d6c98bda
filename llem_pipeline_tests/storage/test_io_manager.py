"""LlemDuckDBIOManager: unit-level with build_output_context/build_input_context, and a real dg.materialize."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from llem_pipeline.domain import ExperimentResult, compute_measurement_config_hash
from llem_pipeline.storage import ResultStore, RunRecord, StorageError, journal
from llem_pipeline.storage.io_manager import LlemDuckDBIOManager, split_partition_key
from llem_pipeline_tests.storage.record_factory import make_config, make_record, timeseries_table

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


def _record(config, run_id: str = RUN_ID, n_samples: int = 40) -> RunRecord:
    return make_record(config, run_date=DAY, run_id=run_id, start=START, n_samples=n_samples)


@pytest.mark.slow
def test_a_run_record_round_trips_through_every_table(setup) -> None:
    config, _h, instance, db, io, key = setup
    record = _record(config)
    ctx = _out("experiment_results", key, instance)
    io.handle_output(ctx, record)
    meta = ctx.get_logged_metadata()
    assert meta["dagster/partition_row_count"].value == 1 and meta["table"].value == "experiment_results"
    assert meta["hardware_id"].value == record.hardware_id
    expected = {"experiment_results": record.result, "raw_process_results": record.processes,
                "environment_snapshot": record.environment, "baseline_power": record.baseline}
    for asset, obj in expected.items():
        assert io.load_input(_in(_out(asset, key, instance), key, instance)) == obj, asset
    samples = io.load_input(_in(_out("power_timeseries", key, instance), key, instance))
    assert samples.num_rows == 40 and samples.equals(record.power_samples.cast(samples.schema))
    counts = ResultStore(db).row_counts()
    assert counts["experiment_results"] == 1 and counts["power_samples"] == 40
    assert ResultStore(db).query("SELECT DISTINCT run_id FROM power_samples").column("run_id").to_pylist() == [RUN_ID]


def test_rematerialising_a_run_replaces_it_and_a_new_run_is_added(setup) -> None:
    config, _h, instance, db, io, key = setup
    for n in (40, 25):
        io.handle_output(_out("power_timeseries", key, instance), _record(config, n_samples=n))
    assert ResultStore(db).row_counts()["power_samples"] == 25
    io.handle_output(_out("power_timeseries", key, instance), _record(config, run_id="another-run", n_samples=10))
    assert ResultStore(db).row_counts()["power_samples"] == 35


def test_outputs_go_through_the_stores_writer_lock_manifest_and_journal(setup) -> None:
    # The I/O manager writes through ResultStore._write: the writer lock file exists (released), the
    # manifest and the journal hold each materialisation, the audit finds nothing.
    config, h, instance, db, io, key = setup
    for n in (40, 25):
        io.handle_output(_out("power_timeseries", key, instance), _record(config, n_samples=n))
    store = ResultStore(db)
    assert store.write_lock_path.is_file() and store.write_lock_path.read_text() == ""
    rows = store.query("SELECT config_hash, run_id, row_count, write_seq FROM partition_manifest "
                       "WHERE table_name = 'power_samples'").to_pylist()
    assert rows == [{"config_hash": h, "run_id": RUN_ID, "row_count": 25, "write_seq": 2}]
    assert [(e["seq"], e["rows"]) for e in journal.read_entries(store.journal_path) if e["table"] == "power_samples"] == [
        (1, 40), (2, 25)]
    assert store.audit() == []


def test_wrong_types_other_partitions_and_unknown_assets_are_refused(setup) -> None:
    config, _h, instance, _db, io, key = setup
    with pytest.raises(StorageError, match=r"cannot store a Table from asset power_timeseries.*return a RunRecord"):
        io.handle_output(_out("power_timeseries", key, instance), timeseries_table(1))
    with pytest.raises(StorageError, match="has no llem table"):
        io.handle_output(_out("something_else", key, instance), _record(config))
    with pytest.raises(StorageError, match="not one of the llem tables"):
        io.handle_output(
            _out("x", key, instance, definition_metadata={"llem_table": "requests; DROP TABLE baselines"}),
            _record(config),
        )
    other = make_record(make_config(batch_size=4), run_date=DAY)
    with pytest.raises(StorageError, match="differs from the partition"):
        io.handle_output(_out("experiment_results", key, instance), other)


def test_llem_table_metadata_overrides_the_asset_name(setup) -> None:
    config, _h, instance, _db, io, key = setup
    ctx = _out("my_samples", key, instance, definition_metadata={"llem_table": "power_samples"})
    io.handle_output(ctx, _record(config, n_samples=7))
    assert ctx.get_logged_metadata()["dagster/partition_row_count"].value == 7


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

    @dg.asset(partitions_def=partitions, io_manager_key="llem_io")
    def experiment_results(context) -> RunRecord:
        keys = context.partition_key.keys_by_dimension
        assert keys["config"] == h
        return make_record(config, run_date=keys["date"], run_id=context.run.run_id, start=START, n_samples=33,
                           study="demo")

    @dg.asset(partitions_def=partitions)
    def summary(experiment_results: ExperimentResult) -> dict:
        return {"tokens": experiment_results.total_tokens}

    db = tmp_path / "llem.duckdb"
    resources = {"llem_io": LlemDuckDBIOManager(duckdb=DuckDBResource(database=str(db)))}
    key = dg.MultiPartitionKey({"date": DAY, "config": h})
    run_ids = []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("experiments", [h])
        for _ in range(2):  # twice: every run is kept
            res = dg.materialize([experiment_results, summary], partition_key=key, instance=instance, resources=resources)
            assert res.success
            run_ids.append(res.run_id)
        assert res.output_for_node("summary") == {"tokens": 1024}
        mats = res.asset_materializations_for_node("experiment_results")
        assert mats[0].metadata["dagster/partition_row_count"].value == 1
    store = ResultStore(db)
    counts = store.row_counts()
    assert counts["experiment_results"] == 2 and counts["power_samples"] == 66 and counts["environment_snapshots"] == 2
    rows = store.query("SELECT run_id, study FROM experiment_results ORDER BY end_time, run_id").to_pylist()
    assert sorted(r["run_id"] for r in rows) == sorted(run_ids) and {r["study"] for r in rows} == {"demo"}
    assert store.query("SELECT n_runs FROM efficiency").column("n_runs").to_pylist() == [2]
