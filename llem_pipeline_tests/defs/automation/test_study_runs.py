"""A study's runs: every cycle its own run, in the study's order, with the gap and the tags the steps read."""

from __future__ import annotations

import textwrap

from llem_pipeline.defs.automation.study_runs import planned_runs
from llem_pipeline.domain.study import parse_study_yaml

STUDY = textwrap.dedent("""
    name: rep
    base: {model: "llem:tiny", n: 4, max_output_tokens: 4, precision: fp32}
    sweep: {pytorch.batch_size: [1, 2]}
    cycles: 3
    order: interleaved
    gap_seconds: 1.5
""")


def test_interleaved_cycles_become_runs_in_order_with_gap_and_priority() -> None:
    plan = parse_study_yaml(STUDY, "rep.yaml").expand()
    runs = planned_runs(plan, "2026-12-06", "sim")
    assert len(runs) == 6
    assert [(r.cycle, r.measurement.swept) for r in runs] == [
        (0, "batch_size=1"), (0, "batch_size=2"), (1, "batch_size=1"),
        (1, "batch_size=2"), (2, "batch_size=1"), (2, "batch_size=2"),
    ]
    assert [r.gap_s for r in runs] == [0.0] + [1.5] * 5
    tags = runs[3].tags("rep-launch")
    assert tags["llem/study"] == "rep" and tags["llem/cycle"] == "1" and tags["llem/position"] == "3"
    assert tags["llem/gap_s"] == "1.5" and tags["llem/label"] == "rep · batch_size=2 · sim"
    assert tags["llem/simulated"] == "true" and tags["llem/launch"] == "rep-launch"
    # a run queue starts earlier positions first
    assert [int(r.tags("x")["dagster/priority"]) for r in runs] == sorted(
        (int(r.tags("x")["dagster/priority"]) for r in runs), reverse=True)
    request = runs[0].run_request("rep-launch")
    assert request.run_key == "rep-launch|0"
    assert str(request.partition_key) == f"2026-12-06|{runs[0].measurement.key}"


def test_sequential_order_repeats_each_config_before_the_next() -> None:
    plan = parse_study_yaml(STUDY.replace("interleaved", "sequential"), "rep.yaml").expand()
    assert [(r.cycle, r.measurement.swept) for r in planned_runs(plan, "2026-12-06", "gpu")][:3] == [
        (0, "batch_size=1"), (1, "batch_size=1"), (2, "batch_size=1")]
