"""The whole lineage on the real worker (tiny model, simulated GPU) on a test instance with pool gpu = 1.

- every asset of a demo partition materialises in one run (GPU step through Pipes, results, samples,
  requests, the seven checks) and the rows land in DuckDB;
- that partition and a second one launched together (one run each) never overlap on the GPU: the GPU
  leases (held for the whole worker, baseline included) ran one after the other and the stored windows
  are disjoint. The leases are the guarantee: the pool "gpu" schedules the steps, but on a SQLite
  instance two runs claiming the last slot at the same instant can both get it (Dagster's
  SELECT ... FOR UPDATE is a no-op on SQLite); the GPU allocator's per-GPU file lock then makes the
  second step wait;
  re-materialising the first partition left its row counts unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.definitions import defs as lazy_defs
from llem_pipeline.defs.automation.launching import materialize_partitions, register_study
from llem_pipeline.defs.experiments.partitions import measurement_key
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.storage import ResultStore

pytestmark = pytest.mark.slow
TABLES = ("experiment_results", "process_results", "environment_snapshots", "baselines", "power_samples", "requests")
MEASUREMENT_ASSETS = {
    "environment_snapshot", "baseline_power", "raw_process_results",
    "experiment_results", "power_timeseries", "request_latencies",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dg.DagsterInstance, list[str], Path]]:
    """(instance with pool limit 1, demo config hashes, data dir) shared by the tests of this module."""
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    data.mkdir()
    home = root / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLEM_DATA_DIR", str(data))
        mp.setenv("LLEM_DUCKDB", str(data / "llem.duckdb"))
        mp.setenv("LLEM_STUDIES_DIR", str(PROJECT_ROOT / "studies"))
        mp.setenv("LLEM_DEVICES", "simulated")
        with dg.instance_for_test(
            overrides={"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}, temp_dir=str(home)
        ) as instance:
            yield instance, register_study(instance, "demo"), data


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _partition_counts(data: Path, config_hash: str) -> dict[str, int]:
    store = ResultStore(data / "llem.duckdb")
    if not store.path.is_file():
        return dict.fromkeys(TABLES, 0)
    return {t: store.read_partition(t, _today(), config_hash).num_rows for t in TABLES}


def _materialise_in_process(instance: dg.DagsterInstance, config_hash: str) -> dg.ExecuteInProcessResult:
    job = lazy_defs().resolve_job_def("measure_experiments")
    return job.execute_in_process(instance=instance, partition_key=measurement_key(_today(), config_hash))


def test_every_asset_of_a_demo_partition_materialises(demo) -> None:
    instance, hashes, data = demo
    run = _materialise_in_process(instance, hashes[0])
    assert run.success
    events = run.get_asset_materialization_events()
    assert {e.asset_key.to_user_string() for e in events} == MEASUREMENT_ASSETS
    [result_event] = [e for e in events if e.asset_key == dg.AssetKey("experiment_results")]
    meta = result_event.materialization.metadata
    assert meta["matches_worker_result"].value is True  # re-aggregation == the worker's result.json
    assert meta["is_simulated"].value is True and meta["j_per_token"].value > 0
    checks = {e.check_name: e.passed for e in run.get_asset_check_evaluations()}
    assert len(checks) == 7
    assert checks["schema_version"] and checks["energy_sane"] and checks["no_throttling"]
    assert checks["real_device"] is False  # simulated → WARN
    counts = _partition_counts(data, hashes[0])
    assert counts["experiment_results"] == counts["process_results"] == counts["environment_snapshots"] == 1
    assert counts["baselines"] >= 1 and counts["power_samples"] > 0
    assert counts["requests"] == 24  # n of the demo study
    row = ResultStore(data / "llem.duckdb").query(
        "SELECT run_id, study, setting, is_simulated, avg_energy_per_token_j FROM experiment_results"
    ).to_pylist()[0]
    assert row["run_id"] == run.run_id and row["study"] == "demo" and row["is_simulated"] is True
    assert row["setting"] == "batch_size=1" and row["avg_energy_per_token_j"] > 0
    report = lazy_defs().resolve_job_def("refresh_efficiency_report").execute_in_process(instance=instance)
    assert report.success


def test_results_re_stored_alone_come_from_the_partitions_latest_measurement(demo) -> None:
    # the CPU step alone (e.g. after a storage change): its run measured nothing, so it stores the run folder
    # of the partition's latest GPU-step materialisation, under that measurement's run id
    instance, hashes, data = demo
    measured = _materialise_in_process(instance, hashes[0])
    assert measured.success
    store_only = lazy_defs().resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, partition_key=measurement_key(_today(), hashes[0]),
        asset_selection=[dg.AssetKey(k) for k in ("experiment_results", "power_timeseries", "request_latencies")],
    )
    assert store_only.success
    assert {e.asset_key.to_user_string() for e in store_only.get_asset_materialization_events()} == {
        "experiment_results", "power_timeseries", "request_latencies"}
    rows = ResultStore(data / "llem.duckdb").query(
        "SELECT run_id FROM experiment_results WHERE config_hash = ? AND run_date = ?", [hashes[0], _today()]
    ).to_pylist()
    assert rows == [{"run_id": measured.run_id}]


def test_two_partitions_launched_together_never_overlap_and_rematerialising_keeps_counts(demo) -> None:
    instance, hashes, data = demo
    before = _partition_counts(data, hashes[0])
    if before["experiment_results"] == 0:  # run on its own: materialise the first partition once
        assert _materialise_in_process(instance, hashes[0]).success
        before = _partition_counts(data, hashes[0])
    outcomes = materialize_partitions(_today(), hashes[:2], parallel=2)
    assert [o.success for o in outcomes] == [True, True]

    after = _partition_counts(data, hashes[0])
    assert {t: after[t] for t in TABLES if t != "power_samples"} == {t: before[t] for t in TABLES if t != "power_samples"}
    assert after["power_samples"] > 0  # the samples follow the new window's length; only the new run's remain
    assert ResultStore(data / "llem.duckdb").query(
        "SELECT DISTINCT run_id FROM power_samples WHERE config_hash = ?", [hashes[0]]
    ).to_pylist() == [{"run_id": outcomes[0].run_id}]

    # the GPU leases (whole worker, baseline included) were held one after the other ...
    spans = []
    for o in outcomes:
        logs = [e for e in instance.all_logs(o.run_id) if e.step_key == "gpu_measurement" and e.user_message]
        begin = [e.timestamp for e in logs if e.user_message.startswith("GPU lease: ")]
        end = [e.timestamp for e in logs if e.user_message.startswith("GPU lease ends: ")]
        assert len(begin) == len(end) == 1, [e.user_message for e in logs]
        spans.append((begin[0], end[0]))
        # the worker's milestones reach the Dagster log; its per-step lines (some inside the window) do not
        worker = [e.user_message.split()[1] for e in logs if e.user_message.startswith("llem-measure: ")]
        assert {"plan", "process_done", "steps", "result"} <= set(worker), worker
        assert not any('"step": "run"' in e.user_message or "step_end" in e.user_message for e in logs), worker
    spans.sort()
    assert spans[0][1] <= spans[1][0], spans
    # ... so the measurement windows stored in DuckDB are disjoint
    windows = ResultStore(data / "llem.duckdb").query(
        "SELECT run_id, start_time, end_time FROM process_results WHERE run_id IN (?, ?) ORDER BY start_time",
        [outcomes[0].run_id, outcomes[1].run_id],
    ).to_pylist()
    assert len(windows) == 2
    assert windows[0]["end_time"] <= windows[1]["start_time"], windows


def test_a_pipelined_study_starts_each_run_when_the_gpu_slot_frees(demo) -> None:
    # the default launch: the next run starts once the previous run's GPU step has ended (it may overlap that
    # run's CPU step), so it never waits on the pool's re-check interval with the GPU idle
    instance, hashes, _ = demo
    stats: dict[str, float] = {}
    t0 = time.time()
    outcomes = materialize_partitions(_today(), hashes[1:3], poll_s=0.05, stats=stats)
    assert [o.success for o in outcomes] == [True, True]
    # both partition runners were started and warm before the first run was created
    assert stats["runners_ready_s"] > 0
    assert instance.get_run_record_by_id(outcomes[0].run_id).create_timestamp.timestamp() >= t0 + stats["runners_ready_s"]

    def first(run_id: str, step: str | None, event: str) -> float:
        return min(e.timestamp for e in instance.all_logs(run_id) if e.step_key == step
                   and e.dagster_event and e.dagster_event.event_type_value == event)

    gpu_end = first(outcomes[0].run_id, "gpu_measurement", "STEP_SUCCESS")
    assert first(outcomes[1].run_id, None, "PIPELINE_START") >= gpu_end
    assert first(outcomes[1].run_id, "gpu_measurement", "STEP_START") >= gpu_end
    # ... and was created (record, plan, planned events) while the first one measured, not after it. An order of
    # two events, not a duration: creating a run (~0.25 s) starts as the first run starts and competes for the
    # same CPUs as that run's GPU step (model load, warmup, 24 requests: several seconds), so load slows both.
    assert instance.get_run_record_by_id(outcomes[1].run_id).create_timestamp.timestamp() < gpu_end
    assert len({instance.get_run_by_id(o.run_id).tags["llem/launch_id"] for o in outcomes}) == 2
