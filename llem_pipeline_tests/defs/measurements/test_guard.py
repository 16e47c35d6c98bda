"""The guard around the worker: exit code passthrough, stderr copy, hard timeout killing the process group."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from llem_pipeline.defs.measurements.guard import TIMEOUT_EXIT, run_guarded
from llem_pipeline.defs.measurements.worker import GUARD_SCRIPT, worker_error


def test_exit_code_and_stderr_pass_through(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    code = "import sys; print('llem-measure: error: model not found', file=sys.stderr); sys.exit(3)"
    assert run_guarded([sys.executable, "-c", code], 30, 1, log) == 3
    assert worker_error(log) == "llem-measure: error: model not found"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    start = time.monotonic()
    rc = run_guarded([sys.executable, "-c", code], 1.0, 1.0, tmp_path / "stderr.log")
    assert rc == TIMEOUT_EXIT
    assert time.monotonic() - start < 15
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"grandchild {grandchild} survived the timeout")
    assert "ran longer than" in (worker_error(tmp_path / "stderr.log") or "")


def test_guard_cli_forwards_sigint(tmp_path: Path) -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(42)); print('ready', flush=True); time.sleep(30)"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", GUARD_SCRIPT, "--timeout", "60",
         "--stderr-log", str(tmp_path / "e.log"), "--", sys.executable, "-c", code],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(2)
    assert proc.wait(timeout=10) == 42


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", GUARD_SCRIPT, "--timeout", "0.5", "--grace", "0.5",
         "--stderr-log", str(tmp_path / "e.log"), "--", sys.executable, "-c", code],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    assert proc.wait(timeout=30) == TIMEOUT_EXIT
    assert "ran longer than 0.5 s" in (tmp_path / "e.log").read_text()
