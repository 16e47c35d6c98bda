"""The code location loads and is wired as designed: assets, pools, tags, checks, jobs, schedule, sensors."""

from __future__ import annotations

import dagster as dg
import pytest

from llem_pipeline.definitions import defs as lazy_defs
from llem_pipeline.defs.measurements.io_manager import RunFolderIOManager
from llem_pipeline.storage.io_manager import LlemDuckDBIOManager


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    # Loading resolves Dagster's current defs-state storage, which belongs to an instance: give it a live
    # one (an earlier test's closed instance may still be registered as current).
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("defs_home"))):
        loaded = lazy_defs()
        loaded.get_repository_def()  # built (and cached) while that instance is live
        return loaded


def test_definitions_are_loadable(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)


def test_asset_keys_groups_and_lineage(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "environment_snapshot", "baseline_power", "raw_process_results",
        "experiment_results", "power_timeseries", "request_latencies", "efficiency_report",
    }
    # one group: the UI opens the lineage with every asset shown
    assert {graph.get(k).group_name for k in graph.get_all_asset_keys()} == {"llem"}
    parents = {p.to_user_string() for p in graph.get(dg.AssetKey("experiment_results")).parent_keys}
    assert parents == {"environment_snapshot", "baseline_power", "raw_process_results"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.owners == ["team:llem"]
        assert node.code_version
        assert node.kinds


def test_gpu_step_is_one_op_in_pool_gpu_with_gpu_tag(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("measure_experiments")
    gpu_nodes = [n for n in job.graph.node_defs if n.pool == "gpu"]
    assert [n.name for n in gpu_nodes] == ["gpu_measurement"]
    assert gpu_nodes[0].tags.get("llem/resource") == "gpu"
    assert set(gpu_nodes[0].output_dict) == {"environment_snapshot", "baseline_power", "raw_process_results"}
    assert all(n.pool is None for n in job.graph.node_defs if n.name != "gpu_measurement")


def test_every_job_runs_its_steps_in_the_run_process(defs: dg.Definitions) -> None:
    # the GPU work is its own Pipes process; the pool "gpu" is claimed by the in-process executor too
    for name in ("measure_experiments", "nightly_benchmark_job", "refresh_efficiency_report"):
        assert defs.resolve_job_def(name).executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_results_resolve_to_the_duckdb_io_manager_and_gpu_outputs_to_the_run_folder(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    resources = defs.resources
    for name in ("experiment_results", "power_timeseries", "request_latencies"):
        key = graph.get(dg.AssetKey(name)).io_manager_key
        assert isinstance(resources[key], LlemDuckDBIOManager), name
    for name in ("environment_snapshot", "baseline_power", "raw_process_results"):
        key = graph.get(dg.AssetKey(name)).io_manager_key
        assert isinstance(resources[key], RunFolderIOManager), name
    # DuckDB comes from dagster-duckdb's resource
    manager = resources[graph.get(dg.AssetKey("experiment_results")).io_manager_key]
    assert type(manager.duckdb).__module__.startswith("dagster_duckdb")


def test_no_private_dagster_api_anywhere_in_the_package() -> None:
    import re
    from pathlib import Path

    import llem_pipeline

    root = Path(llem_pipeline.__file__).parent
    private = re.compile(r"dagster\._")
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if private.search(line)]
    assert offenders == []


def test_store_results_is_one_cpu_step_for_the_three_result_assets(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("measure_experiments")
    assert sorted(n.name for n in job.graph.node_defs) == ["gpu_measurement", "store_results"]
    graph = defs.resolve_asset_graph()
    parents = {k: {p.to_user_string() for p in graph.get(dg.AssetKey(k)).parent_keys}
               for k in ("power_timeseries", "request_latencies")}
    assert parents == {"power_timeseries": {"raw_process_results"}, "request_latencies": {"raw_process_results"}}


def test_asset_checks_cover_the_methodology_warnings(defs: dg.Definitions) -> None:
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "schema_version", "energy_sane", "counter_trace_agreement", "energy_certain", "window_long_enough",
        "no_throttling", "real_device", "no_regression", "repeatable",
    } <= checks


def test_jobs_schedule_and_sensors_run_by_default(defs: dg.Definitions) -> None:
    for name in ("measure_experiments", "nightly_benchmark_job", "refresh_efficiency_report"):
        assert defs.resolve_job_def(name) is not None
    schedule = defs.resolve_schedule_def("nightly_benchmark")
    assert schedule.cron_schedule == "0 1 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    for name in ("study_registry", "study_launches", "refresh_after_measurement"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


@pytest.mark.slow
def test_dg_check_defs_passes(tmp_path) -> None:
    """`dg check defs` (the dg CLI's own validation of the project's definitions) passes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from llem_pipeline.paths import PROJECT_ROOT

    venv = Path(sys.executable).parent.parent
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "LLEM_DEVICES": "simulated", "VIRTUAL_ENV": str(venv),
           "LLEM_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([str(venv / "bin" / "dg"), "check", "defs"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully." in done.stdout + done.stderr
