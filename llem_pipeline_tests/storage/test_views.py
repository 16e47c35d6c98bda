"""views.sql: latest_results, efficiency and nightly_trend give the right numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ResultStore
from llem_pipeline.storage.rows import experiment_result_row, rows_to_table
from llem_pipeline_tests.storage.run_folder_factory import make_config, make_result


def _put(store: ResultStore, config, day: str, run_id: str, energy_j: float, tokens: int = 1000,
         window_s: float = 10.0, device_kind: str = "nvml") -> None:
    start = datetime.fromisoformat(day).replace(hour=2, tzinfo=UTC)
    result, _ = make_result(config, start=start, device_kind=device_kind)
    result = result.model_copy(update={
        "total_energy_j": energy_j, "total_tokens": tokens, "total_inference_time_sec": window_s,
        "avg_energy_per_token_j": energy_j / tokens, "avg_tokens_per_second": tokens / window_s,
    })
    row = experiment_result_row(result, day, run_id)
    store.write_tables(day, compute_measurement_config_hash(config), run_id, {"experiment_results": rows_to_table([row])})


def test_nightly_trend_compares_with_the_previous_night_of_the_same_config(store: ResultStore) -> None:
    a, b = make_config(batch_size=1), make_config(batch_size=8)
    _put(store, a, "2026-11-01", "a1", 1000.0)
    _put(store, a, "2026-11-03", "a3", 1100.0, window_s=8.0)   # a gap night: compares with 11-01
    _put(store, a, "2026-11-04", "a4", 990.0)
    _put(store, b, "2026-11-03", "b3", 500.0)
    rows = store.query("SELECT * FROM nightly_trend ORDER BY config_hash = ?, run_date",
                       [compute_measurement_config_hash(b)]).to_pylist()
    a_rows = [r for r in rows if r["run_id"].startswith("a")]
    assert [r["run_date"].isoformat() for r in a_rows] == ["2026-11-01", "2026-11-03", "2026-11-04"]
    assert a_rows[0]["j_per_token_change_pct"] is None and a_rows[0]["prev_run_date"] is None
    assert a_rows[1]["j_per_token_change_pct"] == pytest.approx(10.0)
    assert a_rows[1]["tokens_per_s_change_pct"] == pytest.approx(25.0)
    assert a_rows[2]["j_per_token_change_pct"] == pytest.approx(-10.0)
    assert a_rows[2]["prev_run_date"].isoformat() == "2026-11-03"
    b_row = next(r for r in rows if r["run_id"] == "b3")
    assert b_row["j_per_token_change_pct"] is None  # first night of b; a's nights do not count


def test_latest_results_picks_the_latest_run_per_config(store: ResultStore) -> None:
    a, b = make_config(batch_size=1), make_config(batch_size=8)
    _put(store, a, "2026-11-02", "a2", 1000.0)
    _put(store, a, "2026-11-01", "a1", 1000.0)  # written later, but an earlier night
    _put(store, b, "2026-11-01", "b1", 1000.0)
    got = store.query("SELECT run_id FROM latest_results ORDER BY run_id").column("run_id").to_pylist()
    assert got == ["a2", "b1"]
    assert "result_json" not in store.query("SELECT * FROM latest_results").column_names


def test_efficiency_is_energy_weighted_and_keeps_simulated_apart(store: ResultStore) -> None:
    # Two configs with the same model/backend/precision/setting (they differ in max_output_tokens).
    a = make_config(batch_size=4, max_output_tokens=16)
    b = make_config(batch_size=4, max_output_tokens=32)
    sim = make_config(batch_size=4, max_output_tokens=64)
    _put(store, a, "2026-11-01", "a", 1000.0, tokens=1000)
    _put(store, b, "2026-11-01", "b", 3000.0, tokens=500, window_s=20.0)
    _put(store, sim, "2026-11-01", "s", 50.0, tokens=1000, device_kind="simulated")
    rows = store.query("SELECT * FROM efficiency ORDER BY is_simulated").to_pylist()
    assert [r["is_simulated"] for r in rows] == [False, True]
    real = rows[0]
    assert real["setting"] == "batch_size=4" and real["n_configs"] == 2
    assert real["j_per_token"] == pytest.approx(4000.0 / 1500)  # energy-weighted, not mean(1.0, 6.0) = 3.5
    assert real["tokens_per_s"] == pytest.approx(1500 / 30.0)
    assert real["avg_power_w"] == pytest.approx(4000.0 / 30.0)
    assert rows[1]["j_per_token"] == pytest.approx(0.05)


REFERENCE_TREND = """
SELECT config_hash, run_date,
       100.0 * (avg_energy_per_token_j / nullif(lag(avg_energy_per_token_j) OVER w, 0) - 1.0) AS pct
FROM experiment_results WINDOW w AS (PARTITION BY config_hash ORDER BY run_date)
ORDER BY config_hash, run_date
"""


def test_trend_columns_follow_out_of_order_writes_rewrites_and_removals(store: ResultStore) -> None:
    import random

    import pyarrow as pa

    a, b = make_config(batch_size=1), make_config(batch_size=2)
    nights = [f"2026-11-{d:02d}" for d in range(1, 11)]
    order = [(c, n) for c in (a, b) for n in nights]
    random.Random(3).shuffle(order)
    for i, (config, night) in enumerate(order):
        _put(store, config, night, f"r{i}", 1000.0 + 37 * i)
    _put(store, a, "2026-11-05", "rewrite", 5000.0)  # rewrite a middle night
    # Remove a night: replace its partition with no result row.
    store.write_tables("2026-11-07", compute_measurement_config_hash(a), "gone",
                       {"experiment_results": pa.table({"run_id": pa.array([], pa.string())})})
    got = store.query("SELECT config_hash, run_date, j_per_token_change_pct AS pct FROM nightly_trend "
                      "ORDER BY config_hash, run_date").to_pylist()
    want = store.query(REFERENCE_TREND).to_pylist()
    assert len(got) == 19
    assert [(r["config_hash"], r["run_date"]) for r in got] == [(r["config_hash"], r["run_date"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert (g["pct"] is None and w["pct"] is None) or g["pct"] == pytest.approx(w["pct"])


def test_trend_columns_after_write_batch(store: ResultStore) -> None:
    config = make_config(batch_size=16)

    def row(day: str, energy: float) -> dict:
        result, _ = make_result(config, start=datetime.fromisoformat(day).replace(hour=2, tzinfo=UTC))
        result = result.model_copy(update={"avg_energy_per_token_j": energy})
        return experiment_result_row(result, day, f"run-{day}")

    store.write_batch({"experiment_results": rows_to_table([row("2026-11-01", 1.0), row("2026-11-04", 2.0)])})
    store.write_batch({"experiment_results": rows_to_table([row("2026-11-02", 1.5)])})
    pct = store.query("SELECT j_per_token_change_pct FROM nightly_trend ORDER BY run_date").column(0).to_pylist()
    assert pct[0] is None
    assert pct[1:] == [pytest.approx(50.0), pytest.approx(100.0 / 3)]
