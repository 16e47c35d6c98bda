"""The guard around the worker: exit code passthrough, stderr copy, hard timeout killing the process group."""

from __future__ import annotations

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


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (no such process, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int) -> bool:
    """Return True once ``pid`` is gone. SIGKILL takes effect within milliseconds; the 120 s bound only turns a
    survivor into a failure instead of a hang, so it never decides a correct run, however busy the machine."""
    deadline = time.monotonic() + 120
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The child and its grandchild sleep "forever": only the guard's timeout can end them, so returning at all
    # proves the kill. The timeout must outlast the child's start (two Python start-ups, which a loaded machine
    # slows): it starts at 1 s and doubles until the grandchild existed before the timeout struck.
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100000)']);"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(100000)"
    )
    timeout = 1.0
    while True:
        rc = run_guarded([sys.executable, "-c", code], timeout, 1.0, tmp_path / "stderr.log")
        assert rc == TIMEOUT_EXIT
        if pidfile.is_file() and pidfile.read_text():
            break
        assert timeout < 64, "the child never started its grandchild"
        timeout *= 2
    grandchild = int(pidfile.read_text())
    assert _wait_gone(grandchild), f"grandchild {grandchild} survived the timeout"
    assert "ran longer than" in (worker_error(tmp_path / "stderr.log") or "")


def test_guard_cli_forwards_sigint(tmp_path: Path) -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(42)); print('ready', flush=True); time.sleep(100000)"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", GUARD_SCRIPT, "--timeout", "100000",
         "--stderr-log", str(tmp_path / "e.log"), "--", sys.executable, "-c", code],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(2)
    # the child exits 42 only on the forwarded SIGINT (it sleeps otherwise); 120 s bounds a failure, not a pass
    assert proc.wait(timeout=120) == 42


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    # The worker must have set SIG_IGN before the timeout strikes (else SIGTERM alone would end it): when it was
    # not yet 'ready' at the timeout (a slow start on a loaded machine), the try is repeated with twice the time.
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(100000)")
    timeout = 0.5
    while True:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", GUARD_SCRIPT, "--timeout", str(timeout), "--grace", "0.5",
             "--stderr-log", str(tmp_path / "e.log"), "--", sys.executable, "-c", code],
            stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline().strip() == "ready"
        # only SIGKILL can end the worker after SIG_IGN; the guard then exits 124 (120 s bounds a failure)
        assert proc.wait(timeout=120) == TIMEOUT_EXIT
        if ready:
            break
        assert timeout < 32, "the worker never got to ignore SIGTERM before the timeout"
        timeout *= 2
    assert f"ran longer than {timeout:g} s" in (tmp_path / "e.log").read_text()
