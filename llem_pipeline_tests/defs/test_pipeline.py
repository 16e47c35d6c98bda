"""The whole lineage through the instance on the real worker (tiny model, simulated GPU), pool gpu = 1.

- a study with cycles 3, order interleaved and a 1 s gap runs 3 × 2 runs through ``llem run``'s in-process
  path (``dg.execute_job`` per run): every asset of each partition materialises, every run is kept in DuckDB,
  the runs come in interleaved order, consecutive GPU leases are at least the gap apart, config_stats has
  n_runs 3 and a CI, and the repeatability check ran;
- a failing worker (a prompts file without prompts) fails the GPU step with the worker's own reason;
- a run launched without a partition fails at once with the key format and how to pick one;
- the CPU step alone (results stored again) stores the partition's latest measurement, under its run id.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from llem_pipeline.defs.automation import launching as L
from llem_pipeline.defs.automation.study_runs import PlannedRun, planned_runs
from llem_pipeline.defs.experiments.partitions import KEY_FORMAT
from llem_pipeline.defs.experiments.registry import scan_studies
from llem_pipeline.defs.settings import LlemPaths, LlemStore
from llem_pipeline.storage import ResultStore

pytestmark = pytest.mark.slow
DAY = "2026-12-01"
MEASUREMENT_ASSETS = {
    "environment_snapshot", "baseline_power", "raw_process_results",
    "experiment_results", "power_timeseries", "request_latencies",
}
BASE = """\
base:
  model: "llem:tiny"
  n: 4
  max_input_tokens: 32
  max_output_tokens: 6
  precision: fp32
  warmup: {n_warmup: 1, thermal_floor_seconds: 0}
  baseline: {duration_seconds: 0.3}
  energy: {sample_interval_ms: 50}
"""
STUDIES = {
    "rep.yaml": "name: rep\n" + BASE + textwrap.dedent("""\
        sweep: {pytorch.batch_size: [1, 4]}
        cycles: 3
        order: interleaved
        gap_seconds: 1
    """),
    "noprompts.yaml": "name: noprompts\n" + BASE.replace("n: 4", "n: 4\n  dataset: {PROMPTS}"),
}


@dataclass
class Env:
    instance: dg.DagsterInstance
    data: Path
    studies: Path

    @property
    def store(self) -> ResultStore:
        return ResultStore(self.data / "llem.duckdb")

    def runs(self, study: str) -> list[PlannedRun]:
        scan = scan_studies(self.studies)
        L.register_scan(self.instance, scan, "sim", LlemPaths(data_dir=str(self.data), studies_dir=str(self.studies)),
                        LlemStore(duckdb=DuckDBResource(database=str(self.data / "llem.duckdb"))))
        return planned_runs(scan.plans[study], DAY, "sim")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("pipeline")
    data, studies, home = root / "data", root / "studies", root / "dagster_home"
    for folder in (data, studies, home):
        folder.mkdir()
    empty = root / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    for name, text in STUDIES.items():
        (studies / name).write_text(text.replace("{PROMPTS}", str(empty)), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLEM_DATA_DIR", str(data))
        mp.setenv("LLEM_DUCKDB", str(data / "llem.duckdb"))
        mp.setenv("LLEM_STUDIES_DIR", str(studies))
        mp.setenv("LLEM_DEVICES", "simulated")
        with dg.instance_for_test(
            overrides={"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}, temp_dir=str(home)
        ) as instance:
            yield Env(instance, data, studies)


def _lease_times(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    logs = [e for e in instance.all_logs(run_id) if e.step_key == "gpu_measurement" and e.user_message]
    begin = [e.timestamp for e in logs if e.user_message.startswith("GPU lease: ")]
    end = [e.timestamp for e in logs if e.user_message.startswith("GPU lease ends: ")]
    assert len(begin) == len(end) == 1, [e.user_message for e in logs]
    return begin[0], end[0]


def test_a_study_runs_every_cycle_in_order_with_its_gap_and_keeps_every_run(env: Env) -> None:
    runs = env.runs("rep")
    outcomes = list(L.execute_in_process(env.instance, runs, "rep-test"))
    assert [o.status for o in outcomes] == ["SUCCESS"] * 6
    first = outcomes[0].run_id
    assert {e.dagster_event.asset_key.to_user_string() for e in env.instance.all_logs(
        first, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)} == MEASUREMENT_ASSETS
    # interleaved: batch 1, batch 4, batch 1, ... and each lease starts ≥ the 1 s gap after the previous one ended
    assert [o.run.measurement.swept for o in outcomes] == ["batch_size=1", "batch_size=4"] * 3
    leases = [_lease_times(env.instance, o.run_id) for o in outcomes]
    for (_, ended), (began, _) in itertools.pairwise(leases):
        assert began - ended >= 0.95, leases  # 1 s gap; 0.05 s for the log timestamps' rounding
    stored = env.store.query(
        "SELECT run_id, cycle, label, start_time FROM experiment_results ORDER BY start_time").to_pylist()
    assert [r["run_id"] for r in stored] == [o.run_id for o in outcomes]  # every run kept, in launch order
    assert [r["cycle"] for r in stored] == [0, 0, 1, 1, 2, 2]
    assert stored[0]["label"] == "rep · batch_size=1 · sim"
    for key in {o.run.measurement for o in outcomes}:
        stats = env.store.config_stats(key.config_hash, "simulated:sim-gpu:x1", DAY)
        assert stats is not None and stats["n_runs"] == 3
        assert stats["j_per_token_ci_low"] <= stats["j_per_token_median"] <= stats["j_per_token_ci_high"]
    checks = {e.dagster_event.event_specific_data.check_name for e in env.instance.all_logs(
        outcomes[-1].run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}
    assert "repeatable" in checks and "no_regression" in checks
    assert L.refresh_report(env.instance)


def test_the_live_line_follows_a_runs_steps_from_its_events(env: Env) -> None:
    from llem_pipeline.commands.live_step import LiveStep

    [run] = env.runs("rep")[:1]
    [outcome] = L.execute_in_process(env.instance, [run], "live-test")
    watcher = LiveStep(env.instance, "live-test", total=1)
    watcher.follow(env.instance.get_run_by_id(outcome.run_id))
    seen = watcher.steps_seen
    # the worker's milestones and the store step, in the order the run went through them
    expected = ["GPU acquired", "starting the worker", "loading the model", "warming up", "measuring",
                "process done", "writing the run folder", "GPU released", "storing the result in DuckDB"]
    assert [s for s in seen if s in expected] == [s for s in expected if s in seen]
    assert {"GPU acquired", "warming up", "measuring", "storing the result in DuckDB"} <= set(seen), seen
    assert watcher.text().startswith("[1/1] rep · batch_size=1 · sim · ")


def test_a_failing_worker_fails_the_step_with_the_workers_reason(env: Env) -> None:
    [run] = env.runs("noprompts")
    [outcome] = L.execute_in_process(env.instance, [run], "noprompts-test")
    assert outcome.status == "FAILURE"
    failures = env.instance.all_logs(outcome.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    [failure] = failures
    message = failure.dagster_event.event_specific_data.error.message
    assert failure.step_key == "gpu_measurement"
    assert "the measurement worker failed" in message and "no prompts (the file is empty)" in message


def test_a_run_without_a_partition_fails_at_once_naming_the_format(env: Env) -> None:
    result = dg.execute_job(dg.reconstructable(L.measure_job), instance=env.instance)
    assert not result.success
    [failure] = env.instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    assert KEY_FORMAT in failure.dagster_event.event_specific_data.error.message
    assert "llem run" in failure.dagster_event.event_specific_data.error.message


def test_results_stored_again_come_from_the_partitions_latest_measurement(env: Env) -> None:
    run = env.runs("rep")[0]
    [measured] = L.execute_in_process(env.instance, [run], "rep-again")
    assert measured.success
    rows_before = env.store.query("SELECT count(*) AS n FROM experiment_results").to_pylist()[0]["n"]
    store_only = dg.execute_job(
        dg.reconstructable(L.measure_job), instance=env.instance, tags=L.run_tags(run, "store-only"),
        asset_selection=[dg.AssetKey(k) for k in ("experiment_results", "power_timeseries", "request_latencies")],
    )
    assert store_only.success
    rows = env.store.query("SELECT run_id FROM experiment_results WHERE run_id IN (?, ?)",
                           [measured.run_id, store_only.run_id]).to_pylist()
    assert rows == [{"run_id": measured.run_id}]  # stored again under the measuring run: no duplicate
    assert env.store.query("SELECT count(*) AS n FROM experiment_results").to_pylist()[0]["n"] == rows_before
