"""Which worker progress events become Dagster events under Pipes (milestones) and which stay on stderr."""

from __future__ import annotations

from llem_pipeline.measure.__main__ import to_dagster_log


def test_milestones_go_to_the_dagster_log():
    for event in ("plan", "baseline", "process_done", "steps", "result", "error"):
        assert to_dagster_log(event, {})
    assert to_dagster_log("step_start", {"step": "model_load"})
    assert to_dagster_log("warmup", {"done": 5, "total": 5})


def test_per_step_and_in_window_progress_stays_on_stderr():
    assert not to_dagster_log("step_start", {"step": "run"})
    assert not to_dagster_log("step_start", {"step": "window_begin"})
    assert not to_dagster_log("step_end", {"step": "model_load", "seconds": 1.0})
    assert not to_dagster_log("warmup", {"done": 2, "total": 5})
