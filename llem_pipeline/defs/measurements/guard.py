"""A hard wall-clock limit around the measurement worker, run as a stdlib-only script.

    python -I -S .../llem_pipeline/defs/measurements/guard.py --timeout S --grace S --stderr-log FILE -- CMD ARGS...

(``-m llem_pipeline.defs.measurements.guard`` works too, but imports the package first: ~0.2 s more per
measurement, which the GPU step pays with the GPU held.)

Runs CMD in its own process group, copies its stderr to our stderr and to FILE (so the caller can
quote the worker's one-line error), forwards SIGINT/SIGTERM to the whole group, and when CMD outlives
``--timeout`` seconds sends SIGTERM to the group, then SIGKILL after ``--grace`` seconds, and exits 124.
When CMD dies of a signal the guard did not send, it writes one line saying so (KILLED_PREFIX) and exits
128 + the signal number. Otherwise exits with CMD's exit code. Imports nothing from Dagster (it runs as a plain subprocess).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

TIMEOUT_EXIT = 124
# The line the guard writes when the worker died of a signal it did not send; the GPU step retries those.
KILLED_PREFIX = "llem-guard: the worker was killed by signal"


def _copy_stderr(stream, log_path: Path) -> None:
    """Copy the child's stderr line by line to our stderr and to ``log_path`` until EOF."""
    with open(log_path, "ab") as log:
        for line in iter(stream.readline, b""):
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()
            log.write(line)
            log.flush()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the child's process group (ignored when it is gone)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_guarded(command: list[str], timeout_s: float, grace_s: float, stderr_log: Path) -> int:
    """Run ``command`` under the limit; returns its exit code, or 124 when it was stopped for running too long."""
    # The forwarding handlers are in place before the child exists: a SIGINT/SIGTERM that arrives while the
    # guard starts (the child may already be running its own code) is held and sent to the child's group the
    # moment it has one, never lost to the guard's default handler.
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum, _frame):
        if started:
            _signal_group(started[0], signum)
        else:
            pending.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
    started.append(proc)
    for signum in pending:
        _signal_group(proc, signum)
    copier = threading.Thread(target=_copy_stderr, args=(proc.stderr, stderr_log), daemon=True)
    copier.start()
    exited = threading.Event()
    timed_out = threading.Event()

    def expire() -> None:
        # the deadline passed with the worker still running: SIGTERM the group, SIGKILL it after the grace
        timed_out.set()
        message = f"llem-guard: the worker ran longer than {timeout_s:g} s; stopped it (SIGTERM, then SIGKILL)\n"
        sys.stderr.write(message)
        with open(stderr_log, "a", encoding="utf-8") as log:
            log.write(message)
        _signal_group(proc, signal.SIGTERM)
        if not exited.wait(grace_s):
            _signal_group(proc, signal.SIGKILL)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    proc.wait()  # returns the moment the worker exits (no polling interval added to every measurement)
    exited.set()
    timer.cancel()
    copier.join(timeout=5)
    if timed_out.is_set():
        return TIMEOUT_EXIT
    if proc.returncode < 0:  # killed by a signal nobody here sent (OOM killer, an operator, a host going down)
        name = signal.Signals(-proc.returncode).name
        message = (f"{KILLED_PREFIX} {name} mid-measurement; its results were not published (no run folder), "
                   "the measurement can be repeated\n")
        sys.stderr.write(message)
        with open(stderr_log, "a", encoding="utf-8") as log:
            log.write(message)
        return 128 - proc.returncode
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the guarded command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="llem-guard", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, required=True, help="Wall-clock limit, s")
    parser.add_argument("--grace", type=float, default=30.0, help="SIGTERM → SIGKILL grace, s")
    parser.add_argument("--stderr-log", type=Path, required=True, help="File receiving a copy of stderr")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    return run_guarded(command, args.timeout, args.grace, args.stderr_log)


if __name__ == "__main__":
    sys.exit(main())
