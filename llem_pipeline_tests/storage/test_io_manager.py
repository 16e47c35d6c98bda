"""LlemDuckDBIOManager: unit-level with build_output_context/build_input_context, and a real dg.materialize."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster_duckdb import DuckDBResource

from llem_pipeline.domain import ExperimentResult, compute_measurement_config_hash
from llem_pipeline.storage import ResultStore, RunRecord, StorageError, journal
from llem_pipeline.storage.io_manager import LlemDuckDBIOManager
from llem_pipeline_tests.storage.record_factory import make_config, make_record

DAY = "2026-11-01"
START = datetime(2026, 11, 1, 2, tzinfo=UTC)
RUN_ID = "0b5c7e1e-8f6a-4c39-9d0e-2f1a3b4c5d6e"
MEASUREMENT = "demo~batch_size=1~sim~"


def _partitions() -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {"date": dg.DailyPartitionsDefinition(start_date="2026-11-01"),
         "measurement": dg.DynamicPartitionsDefinition(name="measurements")}
    )


@pytest.fixture
def setup(tmp_path: Path):
    config = make_config()
    h = compute_measurement_config_hash(config)
    db = tmp_path / "llem.duckdb"
    io = LlemDuckDBIOManager(duckdb=DuckDBResource(database=str(db)), lock_timeout_s=30)
    key = dg.MultiPartitionKey({"date": DAY, "measurement": MEASUREMENT + h})
    _INSTANCE.add_dynamic_partitions("measurements", [MEASUREMENT + h])
    return config, h, db, io, key


_INSTANCE = dg.DagsterInstance.ephemeral()


def _out(asset: str, key, run_id: str = RUN_ID, **kw):
    return dg.build_output_context(asset_key=[asset], partition_key=key, asset_partitions_def=_partitions(),
                                   run_id=run_id, instance=_INSTANCE, **kw)


def _record(config, key, run_id: str = RUN_ID, n_samples: int = 40, start: datetime = START) -> RunRecord:
    return make_record(config, run_date=DAY, run_id=run_id, start=start, n_samples=n_samples,
                       measurement_key=key.keys_by_dimension["measurement"])


def test_a_run_record_commits_every_table_at_once_and_side_outputs_confirm_it(setup) -> None:
    config, _h, db, io, key = setup
    record = _record(config, key)
    ctx = _out("experiment_results", key)
    io.handle_output(ctx, record)
    meta = ctx.get_logged_metadata()
    assert meta["dagster/partition_row_count"].value == 1
    assert meta["rows_written"].value == {"experiment_results": 1, "process_results": 1, "environment_snapshots": 1,
                                          "baselines": 1, "power_samples": 40, "requests": record.requests.num_rows}
    for asset, table in (("power_timeseries", record.power_samples), ("request_latencies", record.requests)):
        side = _out(asset, key)
        io.handle_output(side, table)
        assert side.get_logged_metadata()["dagster/partition_row_count"].value == table.num_rows
    store = ResultStore(db)
    assert store.row_counts()["power_samples"] == 40 and store.audit() == []
    assert {e["seq"] for e in journal.read_entries(store.journal_path)} == {1}  # one write: one transaction


def test_a_side_output_that_did_not_commit_with_its_record_fails(setup) -> None:
    config, _h, _db, io, key = setup
    io.handle_output(_out("experiment_results", key), _record(config, key))
    with pytest.raises(StorageError, match="must come from one RunRecord"):
        io.handle_output(_out("power_timeseries", key), pa.table({"t_rel_s": [0.0, 1.0]}))
    with pytest.raises(StorageError, match="must come from one RunRecord"):
        io.handle_output(_out("power_timeseries", key, run_id="never-stored"), pa.table({"t_rel_s": [0.0]}))


def test_results_stored_again_name_their_measuring_run(setup) -> None:
    config, _h, db, io, key = setup
    record = _record(config, key)
    io.handle_output(_out("experiment_results", key, run_id="the-store-only-run"), record)
    LlemDuckDBIOManager._committed.clear()  # a fresh step process: the rows are counted in DuckDB
    # store_results attaches measurement_run_id to the side outputs of a record it stores again
    io.handle_output(_out("power_timeseries", key, run_id="the-store-only-run",
                          output_metadata={"measurement_run_id": RUN_ID}), record.power_samples)
    assert ResultStore(db).query("SELECT DISTINCT run_id FROM power_samples").column("run_id").to_pylist() == [RUN_ID]


def test_wrong_values_and_unknown_assets_are_refused(setup) -> None:
    config, _h, _db, io, key = setup
    with pytest.raises(StorageError, match="must be a RunRecord"):
        io.handle_output(_out("experiment_results", key), _record(config, key).result)
    with pytest.raises(StorageError, match="is not stored by LlemDuckDBIOManager"):
        io.handle_output(_out("something_else", key), pa.table({}))
    with pytest.raises(StorageError, match=r"must be a pyarrow\.Table"):
        io.handle_output(_out("request_latencies", key), [1, 2])


def test_loads_the_partitions_latest_run_or_a_view(setup) -> None:
    config, _h, _db, io, key = setup
    io.handle_output(_out("experiment_results", key, run_id="run-early"), _record(config, key, run_id="run-early"))
    late = _record(config, key, run_id="run-late", start=START + timedelta(minutes=10))
    io.handle_output(_out("experiment_results", key, run_id="run-late"), late)
    upstream = _out("experiment_results", key)
    loaded = io.load_input(dg.build_input_context(upstream_output=upstream, partition_key=key, instance=_INSTANCE,
                                                  asset_partitions_def=_partitions(), asset_key=["downstream"]))
    assert isinstance(loaded, ExperimentResult) and loaded == late.result
    view = io.load_input(dg.build_input_context(upstream_output=upstream, definition_metadata={"view": "efficiency"}))
    assert view.num_rows == 1 and view.column("n_runs").to_pylist() == [2]
    with pytest.raises(StorageError, match="is not one of the llem views"):
        io.load_input(dg.build_input_context(upstream_output=upstream, definition_metadata={"view": "x; DROP"}))


@pytest.mark.slow
def test_materialize_partitioned_assets_on_a_test_instance(tmp_path: Path) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    partitions = _partitions()

    @dg.asset(partitions_def=partitions, io_manager_key="llem_io")
    def experiment_results(context) -> RunRecord:
        keys = context.partition_key.keys_by_dimension
        return make_record(config, run_date=keys["date"], run_id=context.run.run_id, start=START, n_samples=33,
                           study="demo", measurement_key=keys["measurement"])

    @dg.asset(partitions_def=partitions, ins={"experiment_results": dg.AssetIn(input_manager_key="llem_io")})
    def summary(experiment_results: ExperimentResult) -> dict:
        return {"tokens": experiment_results.total_tokens}

    db = tmp_path / "llem.duckdb"
    resources = {"llem_io": LlemDuckDBIOManager(duckdb=DuckDBResource(database=str(db)))}
    key = dg.MultiPartitionKey({"date": DAY, "measurement": MEASUREMENT + h})
    run_ids = []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("measurements", [MEASUREMENT + h])
        for _ in range(2):  # twice: every run is kept
            res = dg.materialize([experiment_results, summary], partition_key=key, instance=instance, resources=resources)
            assert res.success
            run_ids.append(res.run_id)
        assert res.output_for_node("summary") == {"tokens": 1024}
    store = ResultStore(db)
    counts = store.row_counts()
    assert counts["experiment_results"] == 2 and counts["power_samples"] == 66 and counts["environment_snapshots"] == 2
    rows = store.query("SELECT run_id, study FROM experiment_results ORDER BY end_time, run_id").to_pylist()
    assert sorted(r["run_id"] for r in rows) == sorted(run_ids) and {r["study"] for r in rows} == {"demo"}
    assert store.query("SELECT n_runs FROM efficiency").column("n_runs").to_pylist() == [2]
