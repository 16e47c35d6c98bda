"""scripts/test_under_load.sh (`make test-under-load`): two busy processes run beside the command and are
stopped by PID when it passes, fails, is interrupted, or when the script itself is killed outright."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test_under_load.sh"


def _gone(pid: int) -> bool:
    """True when ``pid`` is not running (no such process, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _busy_pids(text: str) -> list[int]:
    m = re.search(r"busy processes (\d+) (\d+) started", text)
    assert m, text
    return [int(m.group(1)), int(m.group(2))]


def _wait_gone(pids: list[int]) -> list[int]:
    """Return the pids still running once all are gone; the 120 s bound only decides one that never stops."""
    deadline = time.monotonic() + 120
    while any(not _gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *command], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PY": sys.executable})


@pytest.mark.parametrize(("code", "status"), [("pass", 0), ("raise SystemExit(3)", 3)])
def test_the_busy_processes_run_beside_the_command_and_stop_with_it(code: str, status: int) -> None:
    # the command sees both busy processes alive and running, then exits with its own status
    probe = ("import os\n"
             "pids = os.environ['LLEM_BUSY_PIDS'].split()\n"
             "states = [open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] for p in pids]\n"
             "print('states', len(pids), all(s in 'RS' for s in states), flush=True)\n" + code)
    proc = _run(sys.executable, "-c", probe)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "states 2 True" in proc.stdout
    pids = _busy_pids(proc.stdout)
    assert _wait_gone(pids) == []
    assert f"suite exit status {status}" in proc.stdout


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_stops_the_busy_processes(sig: int, status: int) -> None:
    proc = subprocess.Popen(["bash", str(SCRIPT), "sleep", "600"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PY": sys.executable})
    assert proc.stdout is not None
    pids = _busy_pids(proc.stdout.readline())
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == status
    assert _wait_gone(pids) == []


def _children(pid: int) -> list[int]:
    """Return the pids of ``pid``'s child processes (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_busy_processes_end_themselves_when_the_script_is_killed_outright() -> None:
    proc = subprocess.Popen(["bash", str(SCRIPT), "sleep", "600"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PY": sys.executable})
    assert proc.stdout is not None
    pids = _busy_pids(proc.stdout.readline())
    others = [c for c in _children(proc.pid) if c not in pids]  # the command (sleep 600)
    proc.kill()  # SIGKILL: no trap runs
    proc.wait(timeout=120)
    try:
        assert _wait_gone(pids) == []  # each noticed its parent was gone
    finally:
        for pid in [*pids, *others]:  # never leave a process of this test behind, even when the check fails
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_make_target_runs_the_same_command_as_make_test() -> None:
    text = (ROOT / "Makefile").read_text()
    test_recipe = re.search(r"^test: .*\n\t(.+)$", text, re.M)
    load_recipe = re.search(r"^test-under-load: .*\n\t(.+)$", text, re.M)
    assert test_recipe and load_recipe
    assert test_recipe.group(1) == "$(SUITE)" and load_recipe.group(1).endswith("scripts/test_under_load.sh $(SUITE)")
