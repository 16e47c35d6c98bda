"""efficiency_report on DuckDB: views refreshed, table and J/token chart across the swept batch sizes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from llem_pipeline.defs.store_resource import LlemStore

from llem_pipeline.defs.reports.assets import efficiency_report
from llem_pipeline.defs.reports.efficiency import chart_rows, efficiency_markdown
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.record_factory import make_config, make_record


def test_report_on_empty_store_says_what_to_do(llem_env: Path) -> None:
    out = efficiency_report(context=dg.build_asset_context(), llem_store=LlemStore())
    assert "No results" in out.metadata["efficiency"].value
    assert "j_per_token_chart" not in out.metadata


def test_report_shows_each_batch_size(llem_env: Path) -> None:
    store = ResultStore(llem_env / "llem.duckdb")
    for bs in (1, 4, 8):
        store.write_run(make_record(make_config(batch_size=bs), run_id=f"run-{bs}"))
    out = efficiency_report(context=dg.build_asset_context(), llem_store=LlemStore())
    table = out.metadata["efficiency"].value
    assert "**SIMULATED**" in table
    for bs in (1, 4, 8):
        assert f"batch_size={bs}" in table
    assert out.metadata["dagster/row_count"] == 3
    assert Path(out.metadata["j_per_token_png"].value).read_bytes()[:4] == b"\x89PNG"
    assert set(out.metadata["view_rows"].value) == {"latest_results", "config_stats", "efficiency", "nightly_trend"}


def test_markdown_and_chart_rows_from_view_rows() -> None:
    rows = [
        {"model": "m", "backend": "pytorch", "precision": "fp32", "setting": "batch_size=1", "is_simulated": False,
         "j_per_token": 0.5, "tokens_per_s": 10.0},
        {"model": "m", "backend": "pytorch", "precision": "fp32", "setting": "batch_size=8", "is_simulated": False,
         "j_per_token": None},
    ]
    assert chart_rows(rows) == [("m · pytorch · fp32", "batch_size=1", 0.5)]
    text = efficiency_markdown(rows)
    assert "SIMULATED" not in text and "real GPU" in text and "n/a" in text
