"""efficiency_report: the efficiency view loaded through the DuckDB I/O manager, as a table and a chart."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from llem_pipeline.defs.reports.assets import efficiency_report
from llem_pipeline.defs.reports.efficiency import chart_rows, efficiency_table
from llem_pipeline.defs.reports.energy import pareto_front, pareto_series
from llem_pipeline.defs.settings import LlemPaths, LlemStore
from llem_pipeline.storage import ResultStore
from llem_pipeline.storage.io_manager import LlemDuckDBIOManager
from llem_pipeline_tests.storage.record_factory import make_config, make_record
from llem_pipeline_tests.storage.served_runs import served_record


def _view(db: Path):
    """Load the efficiency view the way efficiency_report's input is loaded (the I/O manager, public contexts)."""
    manager = LlemDuckDBIOManager(duckdb=DuckDBResource(database=str(db)))
    context = dg.build_input_context(definition_metadata={"view": "efficiency"},
                                     upstream_output=dg.build_output_context(asset_key=dg.AssetKey("experiment_results")))
    return manager.load_input(context)


def _store(db: Path) -> LlemStore:
    return LlemStore(duckdb=DuckDBResource(database=str(db)))


def test_report_on_an_empty_store_has_no_rows_and_no_chart(tmp_path: Path) -> None:
    out = efficiency_report(context=dg.build_asset_context(), efficiency=_view(tmp_path / "none.duckdb"),
                            llem_paths=LlemPaths(data_dir=str(tmp_path)), llem_store=_store(tmp_path / "none.duckdb"))
    assert out.metadata["dagster/row_count"] == 0
    assert "j_per_token_chart" not in out.metadata


def test_report_is_a_table_with_a_schema_and_a_chart_per_setting(tmp_path: Path) -> None:
    db = tmp_path / "llem.duckdb"
    store = ResultStore(db)
    for bs in (1, 4, 8):
        store.write_run(make_record(make_config(batch_size=bs), run_id=f"run-{bs}"))
    out = efficiency_report(context=dg.build_asset_context(), efficiency=_view(db),
                            llem_paths=LlemPaths(data_dir=str(tmp_path)), llem_store=_store(db))
    table = out.metadata["efficiency"]
    assert isinstance(table, dg.TableMetadataValue)
    columns = [c.name for c in table.schema.columns]
    assert {"model", "setting", "hardware", "device", "workload", "n_runs", "j_per_token", "ci_low",
            "ci_high"} <= set(columns)
    rows = [r.data for r in table.records]
    assert sorted(r["setting"] for r in rows) == ["batch_size=1", "batch_size=4", "batch_size=8"]
    assert {r["device"] for r in rows} == {"SIMULATED"} and out.metadata["simulated_rows"] == 3
    assert out.metadata["dagster/row_count"] == 3
    assert Path(out.metadata["j_per_token_png"].value).read_bytes()[:4] == b"\x89PNG"


def test_table_cells_and_chart_points_from_view_rows() -> None:
    rows = [
        {"model": "m", "backend": "pytorch", "setting": "batch_size=1", "hardware_id": "nvml:H100:x1",
         "is_simulated": False, "j_per_token": 0.5, "tokens_per_s": float("nan")},
        {"model": "m", "backend": "pytorch", "setting": "batch_size=8", "hardware_id": "nvml:H100:x1",
         "is_simulated": False, "j_per_token": None},
    ]
    assert chart_rows(rows) == [("m · pytorch · nvml:H100:x1", "batch_size=1", 0.5)]
    records = [r.data for r in efficiency_table(rows).records]
    assert records[0]["device"] == "real GPU" and records[0]["tokens_per_s"] is None and records[1]["j_per_token"] is None


def test_report_shows_the_per_phase_split_the_latency_targets_and_the_pareto_chart(tmp_path: Path) -> None:
    db = tmp_path / "llem.duckdb"
    store = ResultStore(db)
    records = [served_record(make_config(model="m", backend="vllm", batch_size=s), s, run_id=f"served-{s}")
               for s in (4, 16, 64)]
    store.write_runs(records)
    out = efficiency_report(context=dg.build_asset_context(), efficiency=_view(db),
                            llem_paths=LlemPaths(data_dir=str(tmp_path)), llem_store=_store(db))
    phases = [r.data for r in out.metadata["energy_per_request_and_phase"].records]
    assert sorted(r["setting"] for r in phases) == ["max_num_seqs=16,tp=1", "max_num_seqs=4,tp=1",
                                                    "max_num_seqs=64,tp=1"]
    for r in phases:  # the split of the attributed energy, and every request counted
        assert r["prefill_share"] + r["decode_share"] == pytest.approx(1.0, abs=1e-3) and r["requests"] == 80
        assert 0 < r["prefill_share"] < 1 and r["device"] == "SIMULATED"
    targets = {r.data["target"]: r.data for r in out.metadata["energy_at_latency_target"].records}
    assert set(targets) == {"interactive", "batch"}
    assert targets["batch"]["j_per_token"] == pytest.approx(min(r.result.avg_energy_per_token_j for r in records),
                                                            rel=1e-4)
    assert Path(out.metadata["pareto_png"].value).read_bytes()[:4] == b"\x89PNG"
    assert out.metadata["pareto_chart"].value.startswith("![Pareto front")


def test_pareto_front_keeps_the_points_no_other_beats_on_both_axes() -> None:
    points = [(100.0, 1.0), (50.0, 2.0), (200.0, 0.5), (150.0, 1.5), (50.0, 3.0)]
    assert pareto_front(points) == [1, 0, 2]  # (150, 1.5) and (50, 3.0) are beaten
    rows = [{"model": "m", "backend": "vllm", "hardware_id": "simulated:x:x1", "is_simulated": True,
             "setting": f"s{i}", "ttft_p99_ms": x, "j_per_token": y} for i, (x, y) in enumerate(points)]
    rows.append({**rows[0], "hardware_id": "nvml:H100:x1", "is_simulated": False})  # another group: never pooled
    series = pareto_series(rows, "ttft_p99_ms")
    assert len(series) == 2 and all("[SIMULATED]" in k or "nvml" in k for k in series)
