"""The worker command line follows the WORKER contract and runs under the guard."""

from __future__ import annotations

import sys
from pathlib import Path

from llem_pipeline.defs.measurements.worker import GUARD_SCRIPT, MeasurementWorker


def test_command_is_guarded_worker_invocation(tmp_path: Path) -> None:
    worker = MeasurementWorker(timeout_s=600, hard_timeout_margin_s=60, kill_grace_s=5)
    cmd = worker.command(
        config_path=tmp_path / "c.json", devices="simulated", out_dir=tmp_path / "out",
        run_id="r1", experiment_id="e1", stderr_log=tmp_path / "err", baseline_cache=tmp_path / "cache.json",
    )
    guard, worker_cmd = cmd[: cmd.index("--")], cmd[cmd.index("--") + 1 :]
    # the guard runs by path, isolated and without site-packages (stdlib only: no package import per run)
    assert guard[:4] == [sys.executable, "-I", "-S", GUARD_SCRIPT] and Path(GUARD_SCRIPT).is_file()
    assert guard[guard.index("--timeout") + 1] == "660"
    assert worker_cmd[:3] == [sys.executable, "-m", "llem_pipeline.measure"]
    pairs = dict(zip(worker_cmd[3::2], worker_cmd[4::2], strict=True))
    assert pairs["--devices"] == "simulated"
    assert pairs["--timeout"] == "600"
    assert pairs["--run-id"] == "r1"
    assert pairs["--baseline-cache"] == str(tmp_path / "cache.json")
    assert "--sampler" not in pairs  # auto: the worker decides (process sampler on NVML GPUs)


def test_other_interpreter_for_the_worker(tmp_path: Path) -> None:
    cmd = MeasurementWorker(python="/opt/gpu-venv/bin/python", use_baseline_cache=False, sampler="thread").command(
        config_path=tmp_path / "c.json", devices="0", out_dir=tmp_path, run_id="r", experiment_id="e",
        stderr_log=tmp_path / "e", baseline_cache=tmp_path / "cache.json",
    )
    assert cmd[0] == "/opt/gpu-venv/bin/python"
    assert cmd[cmd.index("--") + 1] == "/opt/gpu-venv/bin/python"
    assert "--baseline-cache" not in cmd
    assert cmd[cmd.index("--sampler") + 1] == "thread"
