"""`llem run --queue` against a running daemon: the study_launches sensor hands the runs to the run queue,
which starts them in the study's order under pool gpu; `llem run` follows them to the end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.e2e.dagster_server import DagsterDevServer

pytestmark = [pytest.mark.slow]


def test_llem_run_hands_a_study_to_the_daemons_queue(dagster_server: DagsterDevServer) -> None:
    env = {**dagster_server.env(), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "llem_pipeline.cli", "run", "nightly", "--queue"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{dagster_server.log_tail()}"
    assert "through the daemon's run queue" in proc.stdout
    assert proc.stdout.count(": SUCCESS") == 2, proc.stdout
    rows = ResultStore(dagster_server.data_dir / "llem.duckdb").query(
        "SELECT study, label FROM experiment_results WHERE study = 'nightly' ORDER BY start_time").to_pylist()
    assert [r["label"] for r in rows][-2:] == ["nightly · batch_size=1 · sim", "nightly · batch_size=8 · sim"]
    assert not list((dagster_server.data_dir / "launches").glob("*.json"))  # the launch file is cleaned up
    assert os.environ.get("DAGSTER_HOME") != str(dagster_server.home)  # the test's own env is untouched
