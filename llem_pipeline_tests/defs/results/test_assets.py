"""The CPU step (store_results) on a fabricated run folder: every table of the partition lands in DuckDB in
one transaction, idempotently, with numeric metadata, a markdown summary and the SPEC §3.11 check results.

The run folder comes from the storage tests' factory (fabricated, internally consistent numbers);
the real worker is exercised end to end in test_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from llem_pipeline.defs.measurements.run_folder import RunFolder
from llem_pipeline.defs.store_resource import LlemStore

from llem_pipeline.defs.experiments.partitions import measurement_key
from llem_pipeline.defs.results.assets import store_partition
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
    return dg.build_asset_context(partition_key=measurement_key(folder.run_date, folder.config_hash))


def _store(folder: RunFolder) -> dict[str, Any]:
    """Run the CPU step on ``folder``; return its MaterializeResults by asset name ("checks": the check results)."""
    out = list(store_partition(_ctx(folder), LlemStore(), folder))
    results = {r.asset_key.to_user_string(): r for r in out if isinstance(r, dg.MaterializeResult)}
    return {**results, "checks": [r for r in out if isinstance(r, dg.AssetCheckResult)]}


def test_store_results_writes_every_table_and_reports_headline_metadata(folder: RunFolder, llem_env: Path) -> None:
    out = _store(folder)
    assert set(out) == {"experiment_results", "power_timeseries", "request_latencies", "checks"}
    counts = ResultStore(llem_env / "llem.duckdb").row_counts()
    assert counts["experiment_results"] == 1
    assert counts["process_results"] == 1
    assert counts["environment_snapshots"] == 1
    assert counts["baselines"] == 1
    assert (counts["power_samples"], counts["requests"]) == (100, 8)
    meta = out["experiment_results"].metadata
    for key in ("j_per_token", "tokens_per_s", "avg_power_w", "ttft_p50_ms", "ttft_p99_ms"):
        assert isinstance(meta[key], float) and meta[key] > 0, key
    assert meta["device_kind"].value == "simulated"
    assert meta["is_simulated"].value is True
    assert meta["rows_written"].value == {"experiment_results": 1, "process_results": 1, "environment_snapshots": 1,
                                          "baselines": 1, "power_samples": 100, "requests": 8}
    summary = meta["summary"].value
    assert "**SIMULATED**" in summary and "data:image/png;base64," in summary
    stored = ResultStore(llem_env / "llem.duckdb").read_result(folder.run_id)
    assert stored.avg_energy_per_token_j == pytest.approx(meta["j_per_token"])


def test_checks_report_simulated_short_window_and_no_regression_on_first_run(folder: RunFolder) -> None:
    checks = {c.check_name: c for c in _store(folder)["checks"]}
    assert all(c.asset_key == dg.AssetKey("experiment_results") for c in checks.values())
    assert checks["schema_version"].passed
    assert checks["energy_sane"].passed
    assert not checks["real_device"].passed
    assert checks["real_device"].severity == dg.AssetCheckSeverity.WARN
    assert checks["no_regression"].passed
    assert len(checks) == 7


def test_rematerialising_keeps_row_counts(folder: RunFolder, llem_env: Path) -> None:
    for _ in range(2):
        _store(folder)
        counts = ResultStore(llem_env / "llem.duckdb").row_counts()
        assert (counts["experiment_results"], counts["power_samples"], counts["requests"]) == (1, 100, 8)


def test_a_bad_power_table_writes_nothing_of_the_partition(folder: RunFolder, llem_env: Path) -> None:
    # one transaction for the whole partition: a sidecar DuckDB rejects leaves no result row either
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(folder.timeseries_path)
    pq.write_table(table.append_column("not_a_column", pa.array([1] * table.num_rows)), folder.timeseries_path)
    with pytest.raises(Exception, match="not_a_column"):
        _store(folder)
    counts = ResultStore(llem_env / "llem.duckdb").row_counts()
    assert counts["experiment_results"] == counts["power_samples"] == counts["requests"] == 0


def test_power_and_latency_metadata(folder: RunFolder) -> None:
    out = _store(folder)
    power = out["power_timeseries"].metadata
    assert power["dagster/row_count"] == 100
    assert power["window_mean_power_w"] > 0
    assert "data:image/png;base64," in power["power_trace"].value
    assert Path(power["power_trace_png"].value).read_bytes()[:4] == b"\x89PNG"
    latency = out["request_latencies"].metadata
    assert latency["requests"] == 8
    assert 0 < latency["ttft_p50_ms"] <= latency["ttft_p99_ms"]


def test_regression_check_warns_when_j_per_token_rises(llem_env: Path) -> None:
    config = make_config(batch_size=2)
    h = compute_measurement_config_hash(config)
    write_run_folder(llem_env, run_date="2026-11-19", config=config, run_id="run-old", power_w=100.0)
    write_run_folder(llem_env, run_date=DAY, config=config, run_id="run-new", power_w=200.0)
    for day, run_id in (("2026-11-19", "run-old"), (DAY, "run-new")):
        checks = _store(RunFolder(day, h, run_id))["checks"]
    check = {c.check_name: c for c in checks}["no_regression"]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["change_pct"].value > 10
