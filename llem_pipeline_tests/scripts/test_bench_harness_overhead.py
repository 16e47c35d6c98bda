"""bench/harness_overhead.py runs end to end (a few tiny rounds) and ends with its RESULT line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1200)
def test_harness_overhead_bench_measures_every_arm_and_ends_with_result():
    # the limits only end a bench that hangs: three tiny rounds take about a minute, a loaded machine more
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "harness_overhead.py"), "--pairs", "3", "--n", "8",
         "--arms", "process,thread,idle"],
        capture_output=True, text=True, timeout=1100, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT ")
    fields = dict(kv.split("=", 1) for kv in last.split()[1:])
    assert fields["sampler"] == "process" and fields["rounds"] == "3"
    for key in ("cost_pct", "step_cost_pct", "tick_cost_pct", "thread_cost_pct", "thread_tick_cost_pct",
                "idle_cost_pct"):
        float(fields[key])
    assert re.fullmatch(r"-?\d+\.\d+\.\.-?\d+\.\d+", fields["cost_ci95_pct"])
    assert "bare loop after 1.5 s idle" in proc.stdout and "sampler in a thread" in proc.stdout
