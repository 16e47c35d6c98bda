"""scripts/gpu_check_plan.py: workload sizing against the budget, and the summary of run folders."""

from __future__ import annotations

import csv
import json

import pytest


def _probe(path, period_ms: float) -> None:
    path.write_text(json.dumps({"devices": [{"energy_counter": {"period_ms": period_ms}}]}))


@pytest.mark.parametrize("period_ms", [20.0, 100.0])
def test_gpu_plan_fits_the_8_minute_budget(gpu_check_plan, tmp_path, period_ms: float) -> None:
    _probe(tmp_path / "probe.json", period_ms)
    assert gpu_check_plan.plan(tmp_path / "w", tmp_path, 480.0, False, tmp_path / "probe.json") == 0
    rows = [ln.split("\t") for ln in (tmp_path / "w" / "plan.tsv").read_text().splitlines()]
    assert [(r[1], int(r[2])) for r in rows] == [(m, b) for m in ("1b", "8b") for b in (1, 8, 32, 128)]
    fixed = gpu_check_plan.PROBE_S + gpu_check_plan.BASELINE_S["gpu"] + sum(
        w.build_s for w in gpu_check_plan.GPU_WORKLOADS)
    # estimates are rounded to whole seconds in plan.tsv
    assert fixed + sum(float(r[4]) for r in rows) <= 480.0 - gpu_check_plan.MARGIN_S["gpu"] + len(rows) * 0.5
    cfg = json.loads((tmp_path / "w" / "configs" / "8b-b128.json").read_text())
    assert cfg["precision"] == "bf16" and cfg["fixed_output_length"] is True and cfg["model"] == "llem:8b"
    assert cfg["pytorch"]["batch_size"] == 128 and cfg["n"] % 128 == 0 and cfg["n"] >= 256
    assert "window target per config" in (tmp_path / "budget.md").read_text()


def test_short_counter_period_shortens_the_window(gpu_check_plan) -> None:
    w = gpu_check_plan.GPU_WORKLOADS[0]
    assert gpu_check_plan.rounds_for(w, 1, 2.0) < gpu_check_plan.rounds_for(w, 1, 10.0)
    assert gpu_check_plan.rounds_for(w, 128, 0.01) == 2


def test_summary_rows_from_results_and_statuses(gpu_check_plan, tmp_path) -> None:
    work = tmp_path / "w"
    (work / "runs" / "tiny-b1").mkdir(parents=True)
    (work / "plan.tsv").write_text("tiny-b1\ttiny\t1\tx.json\t10\ntiny-b8\ttiny\t8\ty.json\t10\n")
    result = {
        "effective_config": {"model": "llem:tiny", "pytorch": {"batch_size": 1}}, "device_kind": "simulated",
        "total_tokens": 100, "total_inference_time_sec": 2.0, "avg_energy_per_token_j": 1.5,
        "avg_tokens_per_second": 50.0, "total_energy_j": 150.0, "energy_trace_agreement": 0.01,
        "energy_breakdown": {"trace_energy_j": 151.5, "uncertainty_j": 2.0}, "baseline_power_w": 60.0,
        "extended_metrics": {"avg_power_w": 75.0}, "measurement_warnings": ["short_window: window 2 s ..."],
    }
    (work / "runs" / "tiny-b1" / "result.json").write_text(json.dumps(result))
    (work / "runs" / "tiny-b8.status").write_text("skipped: budget\n")
    assert gpu_check_plan.summary(work, tmp_path) == 1  # one run missing
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert rows[0]["j_per_token"] == "1.5" and rows[0]["agreement_ok"] == "True" and rows[0]["warnings"] == "short_window"
    assert rows[1]["status"] == "skipped: budget" and rows[1]["agreement_ok"] == "False"
    assert "| llem:tiny | 1 | simulated | 2.0 | 1.5 | 50.0 | 75.0 | 1.00% ok | 2 | short_window | ok |" in (
        tmp_path / "summary.md").read_text()
