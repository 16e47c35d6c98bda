"""views.sql and config_day_stats: latest_results, config_stats, efficiency and nightly_trend give the right
numbers, never pool unlike runs, and the bootstrap interval is deterministic."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llem_pipeline.storage import ResultStore, RunRecord
from llem_pipeline.storage.stats import bootstrap_mean_ci
from llem_pipeline_tests.storage.record_factory import make_config, make_record, with_result

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"


def _run(config, day: str, run_id: str, j_per_token: float, tokens_per_s: float = 100.0, *, device_kind: str = "nvml",
         gpu: str = H100, hour: int = 2, study: str | None = None) -> RunRecord:
    """A run whose J/token and tok/s are exactly the given values (J per output token, tokens/s)."""
    start = datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)
    record = make_record(config, run_date=day, run_id=run_id, device_kind=device_kind, gpu_name=gpu, start=start,
                         n_samples=5, n_requests=2, study=study)
    return with_result(record, avg_energy_per_token_j=j_per_token, avg_tokens_per_second=tokens_per_s)


def test_latest_results_picks_the_latest_run_per_config_and_hardware(store: ResultStore) -> None:
    a, b = make_config(batch_size=1), make_config(batch_size=8)
    store.write_run(_run(a, "2026-11-02", "a2", 1.0))
    store.write_run(_run(a, "2026-11-01", "a1", 1.0))  # written later, but an earlier night
    store.write_run(_run(a, "2026-11-02", "a2-late", 1.0, hour=5))  # a second run of that night, later
    store.write_run(_run(a, "2026-11-03", "a3-sim", 1.0, device_kind="simulated", gpu="Simulated GPU"))
    store.write_run(_run(b, "2026-11-01", "b1", 1.0))
    got = store.query("SELECT run_id, hardware_id FROM latest_results ORDER BY run_id").to_pylist()
    assert got == [{"run_id": "a2-late", "hardware_id": "nvml:H100-80GB-HBM3:x1"},
                   {"run_id": "a3-sim", "hardware_id": "simulated:Simulated-GPU:x1"},
                   {"run_id": "b1", "hardware_id": "nvml:H100-80GB-HBM3:x1"}]
    assert "result_json" not in store.query("SELECT * FROM latest_results").column_names


def test_nightly_trend_compares_a_night_with_the_previous_night_on_the_same_hardware(store: ResultStore) -> None:
    a, b = make_config(batch_size=1), make_config(batch_size=8)
    store.write_runs([
        _run(a, "2026-11-01", "a1", 1.0, 100.0),
        _run(a, "2026-11-02", "a2-sim", 0.2, 500.0, device_kind="simulated", gpu="Simulated GPU"),  # never compared
        _run(a, "2026-11-02", "a2-a100", 3.0, 50.0, gpu=A100),  # another GPU model: its own line
        _run(a, "2026-11-03", "a3", 1.1, 80.0),  # a gap night: compares with 11-01 on the H100
        _run(a, "2026-11-03", "a3-again", 1.3, 80.0, hour=4),  # a second run that night: the night's mean
        _run(a, "2026-11-04", "a4", 1.08, 100.0),
        _run(b, "2026-11-03", "b3", 0.5),
    ])
    rows = store.query("SELECT * FROM nightly_trend WHERE config_hash = ? AND hardware_id = 'nvml:H100-80GB-HBM3:x1' "
                       "ORDER BY run_date", [store.read_result("a1").measurement_config_hash]).to_pylist()
    assert [r["run_date"].isoformat() for r in rows] == ["2026-11-01", "2026-11-03", "2026-11-04"]
    assert rows[0]["j_per_token_change_pct"] is None and rows[0]["prev_run_date"] is None
    assert rows[1]["n_runs"] == 2 and rows[1]["j_per_token"] == pytest.approx(1.2)
    assert rows[1]["j_per_token_change_pct"] == pytest.approx(20.0)
    assert rows[1]["tokens_per_s_change_pct"] == pytest.approx(-20.0)
    assert rows[2]["j_per_token_change_pct"] == pytest.approx(-10.0)
    assert rows[2]["prev_run_date"].isoformat() == "2026-11-03"
    others = store.query("SELECT hardware_id, j_per_token_change_pct AS pct FROM nightly_trend "
                         "WHERE hardware_id <> 'nvml:H100-80GB-HBM3:x1' ORDER BY hardware_id").to_pylist()
    assert others == [{"hardware_id": "nvml:A100-SXM4-80GB:x1", "pct": None},
                      {"hardware_id": "simulated:Simulated-GPU:x1", "pct": None}]
    b_row = store.query("SELECT j_per_token_change_pct AS pct FROM nightly_trend WHERE run_ids = ['b3']").to_pylist()
    assert b_row == [{"pct": None}]  # first night of b; a's nights do not count


def test_efficiency_has_one_row_per_config_and_hardware_over_its_latest_day(store: ResultStore) -> None:
    a = make_config(batch_size=4, max_output_tokens=16)
    b = make_config(batch_size=4, max_output_tokens=32)  # same setting, another workload
    store.write_runs([
        _run(a, "2026-10-31", "a-old", 9.0),  # an earlier day: not in efficiency
        _run(a, "2026-11-01", "a1", 1.0, 100.0, study="demo"),
        _run(a, "2026-11-01", "a2", 1.2, 90.0, hour=3, study="nightly"),
        _run(b, "2026-11-01", "b1", 3.0, 50.0, study="demo"),
        _run(a, "2026-11-01", "a-sim", 0.05, 900.0, device_kind="simulated", gpu="Simulated GPU", study="demo"),
    ])
    rows = store.query("SELECT * FROM efficiency ORDER BY j_per_token").to_pylist()
    assert len(rows) == 3
    sim, real_a, real_b = rows
    assert real_a["j_per_token"] == pytest.approx(1.1) and real_a["n_runs"] == 2 and real_a["studies"] == "demo, nightly" and real_a["run_date"].isoformat() == "2026-11-01"
    assert real_a["tokens_per_s"] == pytest.approx(95.0)
    assert real_a["j_per_token_ci_low"] == pytest.approx(1.0) and real_a["j_per_token_ci_high"] == pytest.approx(1.2)
    assert real_a["hardware_id"] == "nvml:H100-80GB-HBM3:x1" and real_a["setting"] == "batch_size=4"
    assert real_b["j_per_token"] == pytest.approx(3.0) and real_b["n_runs"] == 1 and real_b["j_per_token_ci_low"] is None and real_b["workload_hash"] != real_a["workload_hash"]
    assert sim["j_per_token"] == pytest.approx(0.05) and sim["is_simulated"] is True and sim["hardware_id"] == "simulated:Simulated-GPU:x1"
    assert [r for r in rows if not r["is_simulated"] and r["workload_hash"] == real_a["workload_hash"]] == [real_a]


def test_bootstrap_interval_is_deterministic_and_brackets_the_mean() -> None:
    values = [1.0, 1.1, 0.9, 1.05, 0.97]
    low, high = bootstrap_mean_ci(values)
    assert (low, high) == bootstrap_mean_ci(list(reversed(values)))  # the same values in any order
    assert min(values) <= low < sum(values) / 5 < high <= max(values)
    assert bootstrap_mean_ci([1.0]) == (None, None)
    assert bootstrap_mean_ci([]) == (None, None)
    assert bootstrap_mean_ci([2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_mean_ci([1.0, None, float("nan"), 3.0]) == bootstrap_mean_ci([1.0, 3.0])


def test_config_stats_are_the_same_whatever_order_or_batching_wrote_the_runs(tmp_path: Path) -> None:
    config = make_config(batch_size=2)
    runs = [_run(config, "2026-11-01", f"c{i}", 1.0 + 0.01 * ((i * 7) % 5), 100.0 + i, hour=2 + i) for i in range(6)]
    one_batch = ResultStore(tmp_path / "one.duckdb")
    one_batch.write_runs(runs)
    shuffled = list(runs)
    random.Random(4).shuffle(shuffled)
    one_by_one = ResultStore(tmp_path / "many.duckdb")
    for r in shuffled:
        one_by_one.write_run(r)
    one_by_one.write_run(shuffled[0])  # a retry changes nothing
    sql = "SELECT * EXCLUDE (run_ids) FROM config_stats"
    assert one_batch.query(sql).to_pylist() == one_by_one.query(sql).to_pylist()
    row = one_batch.query(sql).to_pylist()[0]
    assert row["n_runs"] == 6 and row["j_per_token_ci_low"] < row["j_per_token_mean"] < row["j_per_token_ci_high"]


REFERENCE_TREND = """
WITH nights AS (
    SELECT config_hash, hardware_id, run_date, avg(j_per_token) AS j FROM experiment_results GROUP BY ALL)
SELECT config_hash, hardware_id, run_date,
       100.0 * (j / nullif(lag(j) OVER w, 0) - 1.0) AS pct
FROM nights WINDOW w AS (PARTITION BY config_hash, hardware_id ORDER BY run_date)
ORDER BY config_hash, hardware_id, run_date
"""


def test_day_statistics_follow_out_of_order_writes_retries_and_moved_runs(store: ResultStore) -> None:
    a, b = make_config(batch_size=1), make_config(batch_size=2)
    nights = [f"2026-11-{d:02d}" for d in range(1, 11)]
    order = [(c, n, gpu) for c in (a, b) for n in nights for gpu in (H100, A100)]
    random.Random(3).shuffle(order)
    for i, (config, night, gpu) in enumerate(order):
        store.write_run(_run(config, night, f"r{i}", 1.0 + 0.037 * i, gpu=gpu))
    first = order[0]
    store.write_run(_run(first[0], first[1], "r0", 5.0, gpu=first[2]))  # a retry with other numbers
    moved = order[1]
    store.write_run(_run(moved[0], "2026-11-20", "r1", 2.0, gpu=moved[2]))  # a retry on another day
    got = store.query("SELECT config_hash, hardware_id, run_date, j_per_token_change_pct AS pct FROM nightly_trend "
                      "ORDER BY config_hash, hardware_id, run_date").to_pylist()
    want = store.query(REFERENCE_TREND).to_pylist()
    assert len(got) == 40 and len(want) == 40
    assert [(r["config_hash"], r["hardware_id"], r["run_date"]) for r in got] == [
        (r["config_hash"], r["hardware_id"], r["run_date"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert (g["pct"] is None and w["pct"] is None) or g["pct"] == pytest.approx(w["pct"])
    # efficiency covers the latest day of each config x hardware
    latest = store.query("SELECT config_hash, hardware_id, max(run_date) AS d FROM experiment_results GROUP BY ALL "
                         "ORDER BY ALL").to_pylist()
    eff = store.query("SELECT config_hash, hardware_id, run_date AS d FROM efficiency ORDER BY ALL").to_pylist()
    assert eff == latest
