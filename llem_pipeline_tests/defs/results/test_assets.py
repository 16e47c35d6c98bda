"""CPU steps on a fabricated run folder: rows land in DuckDB in one transaction per asset, idempotently,
with numeric metadata, a markdown summary and the SPEC §3.11 check results.

The run folder comes from the storage tests' factory (fabricated, internally consistent numbers);
the real worker is exercised end to end in test_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.defs.experiments.partitions import measurement_key
from llem_pipeline.defs.measurements.run_folder import RunFolder
from llem_pipeline.defs.results.assets import experiment_results, power_timeseries, request_latencies
from llem_pipeline.defs.store_resource import LlemStore
from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.run_folder_factory import make_config, write_run_folder

DAY = "2026-11-20"


@pytest.fixture
def folder(llem_env: Path) -> RunFolder:
    config = make_config(batch_size=4)
    write_run_folder(llem_env, run_date=DAY, config=config, run_id="run-a")
    return RunFolder(DAY, compute_measurement_config_hash(config), "run-a")


def _ctx(folder: RunFolder) -> dg.AssetExecutionContext:
    return dg.build_asset_context(partition_key=measurement_key(DAY, folder.config_hash))


def _results(folder: RunFolder) -> dg.MaterializeResult:
    return experiment_results(
        context=_ctx(folder), llem_store=LlemStore(), raw_process_results=folder,
        environment_snapshot=folder.environment(), baseline_power=folder.baseline(),
    )


def test_experiment_results_writes_result_processes_environment_baseline(folder: RunFolder, llem_env: Path) -> None:
    out = _results(folder)
    counts = ResultStore(llem_env / "llem.duckdb").row_counts()
    assert counts["experiment_results"] == 1
    assert counts["process_results"] == 1
    assert counts["environment_snapshots"] == 1
    assert counts["baselines"] == 1
    meta = out.metadata
    for key in ("j_per_token", "tokens_per_s", "avg_power_w", "ttft_p50_ms", "ttft_p99_ms"):
        assert isinstance(meta[key], float) and meta[key] > 0, key
    assert meta["device_kind"].value == "simulated"
    assert meta["is_simulated"].value is True
    summary = meta["summary"].value
    assert "**SIMULATED**" in summary and "data:image/png;base64," in summary
    stored = ResultStore(llem_env / "llem.duckdb").read_result(folder.config_hash)
    assert stored.avg_energy_per_token_j == pytest.approx(meta["j_per_token"])


def test_checks_report_simulated_short_window_and_no_regression_on_first_run(folder: RunFolder) -> None:
    checks = {c.check_name: c for c in _results(folder).check_results}
    assert checks["schema_version"].passed
    assert checks["energy_sane"].passed
    assert not checks["real_device"].passed
    assert checks["real_device"].severity == dg.AssetCheckSeverity.WARN
    assert checks["no_regression"].passed
    assert len(checks) == 7


def test_rematerialising_keeps_row_counts(folder: RunFolder, llem_env: Path) -> None:
    for _ in range(2):
        _results(folder)
        power_timeseries(context=_ctx(folder), llem_store=LlemStore(), raw_process_results=folder)
        request_latencies(context=_ctx(folder), llem_store=LlemStore(), raw_process_results=folder)
        counts = ResultStore(llem_env / "llem.duckdb").row_counts()
        assert (counts["experiment_results"], counts["power_samples"], counts["requests"]) == (1, 100, 8)


def test_power_and_latency_metadata(folder: RunFolder) -> None:
    power = power_timeseries(context=_ctx(folder), llem_store=LlemStore(), raw_process_results=folder).metadata
    assert power["dagster/row_count"] == 100
    assert power["window_mean_power_w"] > 0
    assert "data:image/png;base64," in power["power_trace"].value
    assert Path(power["power_trace_png"].value).read_bytes()[:4] == b"\x89PNG"
    latency = request_latencies(context=_ctx(folder), llem_store=LlemStore(), raw_process_results=folder).metadata
    assert latency["requests"] == 8
    assert 0 < latency["ttft_p50_ms"] <= latency["ttft_p99_ms"]


def test_regression_check_warns_when_j_per_token_rises(llem_env: Path) -> None:
    config = make_config(batch_size=2)
    h = compute_measurement_config_hash(config)
    write_run_folder(llem_env, run_date="2026-11-19", config=config, run_id="run-old", power_w=100.0)
    write_run_folder(llem_env, run_date=DAY, config=config, run_id="run-new", power_w=200.0)
    for day, run_id in (("2026-11-19", "run-old"), (DAY, "run-new")):
        f = RunFolder(day, h, run_id)
        out = experiment_results(
            context=dg.build_asset_context(partition_key=measurement_key(day, h)), llem_store=LlemStore(),
            raw_process_results=f, environment_snapshot=f.environment(), baseline_power=f.baseline(),
        )
    check = {c.check_name: c for c in out.check_results}["no_regression"]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["change_pct"].value > 10
