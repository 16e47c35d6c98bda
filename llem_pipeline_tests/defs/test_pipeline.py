"""The whole lineage on the real worker (tiny model, simulated GPU) on a test instance with pool gpu = 1.

- every asset of a demo partition materialises (GPU step through Pipes, results, samples, requests,
  checks) and the rows land in DuckDB; re-materialising the partition leaves the row counts unchanged;
- two partitions launched together with the multiprocess executor never overlap in time on the GPU
  (their stored measurement windows are disjoint).
"""

from __future__ import annotations

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


def _counts(data: Path) -> dict[str, int]:
    counts = ResultStore(data / "llem.duckdb").row_counts()
    return {t: counts[t] for t in TABLES}


def test_every_asset_materialises_and_rematerialising_keeps_row_counts(demo) -> None:
    instance, hashes, data = demo
    day = datetime.now(UTC).date().isoformat()
    job = lazy_defs().resolve_job_def("measure_experiments")
    first = job.execute_in_process(instance=instance, partition_key=measurement_key(day, hashes[0]))
    assert first.success
    materialized = {e.asset_key.to_user_string() for e in first.get_asset_materialization_events()}
    assert materialized == {
        "environment_snapshot", "baseline_power", "raw_process_results",
        "experiment_results", "power_timeseries", "request_latencies",
    }
    [result_event] = [e for e in first.get_asset_materialization_events()
                      if e.asset_key == dg.AssetKey("experiment_results")]
    meta = result_event.materialization.metadata
    assert meta["matches_worker_result"].value is True  # re-aggregation == the worker's result.json
    assert meta["is_simulated"].value is True and meta["j_per_token"].value > 0
    by_name = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert len(by_name) == 7
    assert by_name["schema_version"] and by_name["energy_sane"]
    assert by_name["real_device"] is False  # simulated → WARN
    counts = _counts(data)
    assert counts["experiment_results"] == 1 and counts["process_results"] == 1
    assert counts["environment_snapshots"] == 1 and counts["baselines"] >= 1
    assert counts["power_samples"] > 0
    assert counts["requests"] == 24  # n of the demo study
    row = ResultStore(data / "llem.duckdb").query(
        "SELECT run_id, study, setting, is_simulated, avg_energy_per_token_j FROM experiment_results"
    ).to_pylist()[0]
    assert row["run_id"] == first.run_id and row["study"] == "demo" and row["is_simulated"] is True
    assert row["setting"] == "batch_size=1" and row["avg_energy_per_token_j"] > 0

    second = job.execute_in_process(instance=instance, partition_key=measurement_key(day, hashes[0]))
    assert second.success
    again = _counts(data)
    assert {t: again[t] for t in TABLES if t != "power_samples"} == {t: counts[t] for t in TABLES if t != "power_samples"}
    # the new run replaced the old one's samples (their number follows the new window's length)
    assert ResultStore(data / "llem.duckdb").query("SELECT DISTINCT run_id FROM power_samples").to_pylist() == [
        {"run_id": second.run_id}
    ]

    report = lazy_defs().resolve_job_def("refresh_efficiency_report").execute_in_process(instance=instance)
    assert report.success


def test_pool_limit_one_serialises_two_partitions_launched_together(demo) -> None:
    instance, hashes, data = demo
    day = datetime.now(UTC).date().isoformat()
    outcomes = materialize_partitions(day, hashes[1:3], parallel=2)
    assert [o.success for o in outcomes] == [True, True]
    # the GPU steps (whole worker, baseline included) ran one after the other ...
    spans = []
    for o in outcomes:
        events = instance.all_logs(o.run_id)
        step = [e.timestamp for e in events if e.step_key == "gpu_measurement"
                and e.dagster_event and e.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS")]
        spans.append((min(step), max(step)))
    spans.sort()
    assert spans[0][1] <= spans[1][0], spans
    # ... so the measurement windows stored in DuckDB are disjoint
    windows = ResultStore(data / "llem.duckdb").query(
        "SELECT run_id, start_time, end_time FROM process_results WHERE run_id IN (?, ?) ORDER BY start_time",
        [outcomes[0].run_id, outcomes[1].run_id],
    ).to_pylist()
    assert len(windows) == 2
    assert windows[0]["end_time"] <= windows[1]["start_time"], windows
