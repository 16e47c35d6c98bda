"""``llem run STUDY [--date YYYY-MM-DD] [--queue | --in-process]``: measure a study through Dagster.

Registers the studies, plans the study's runs for the date (every config × cycle, in the study's order,
with its gap) on this host's hardware target, and runs them through the Dagster instance of DAGSTER_HOME
(default ``<checkout>/.dagster_home``): handed to the run queue when a daemon is running (``make ui``),
else executed in this process one after another (``make demo``). Prints one line per run as it ends (config
k of N, cycle, status, J/token, named warnings and failed checks, ETA), on a terminal with a live line naming
the active run's step; refreshes the efficiency report, and exits 0 when every run succeeded. LLEM_DEVICES must be set ('simulated' on a machine without GPUs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from llem_pipeline.paths import PROJECT_ROOT


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llem run", description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="study name (the `name:` of a studies/*.yaml file), e.g. demo")
    p.add_argument("--date", default=None, help="partition date, YYYY-MM-DD (default: today, UTC)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--queue", action="store_true", help="hand the runs to the daemon's run queue (fails without one)")
    mode.add_argument("--in-process", action="store_true", help="execute here even when a daemon is running")
    p.add_argument("--plain", action="store_true",
                   help="plain progress lines even on a terminal (a pipe or a file always gets plain lines)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="Dagster console log level of in-process runs (default WARNING: milestones only)")
    return p


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to this process's stdout and stderr (file descriptors 1 and 2: Dagster's console
    log, the worker's detail the step's captured logs mirror) to ``log_path`` while the block runs; yield a
    text stream on the terminal's original stdout for the progress lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    with open(log_path, "ab") as log:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            terminal.close()


@contextlib.contextmanager
def live_display(instance: object, launch: str, total: int, out: TextIO, plain: bool) -> Iterator[object | None]:
    """Yield a LiveDisplay (a live line naming the active run's step, rich) when ``out`` is a terminal and
    ``plain`` is off, else None (plain lines)."""
    if plain or not out.isatty():
        yield None
        return
    from rich.console import Console

    from llem_pipeline.commands.live_step import LiveDisplay, LiveStep

    with LiveDisplay(Console(file=out), LiveStep(instance, launch, total)) as display:  # type: ignore[arg-type]
        yield display


def _fail(message: str) -> int:
    print(f"llem run: error: {message}", file=sys.stderr)
    return 2


def main_run(argv: list[str] | None = None) -> int:
    """Run ``llem run``; return the exit code (0 every run succeeded, 1 a run failed, 2 bad input)."""
    args = _parser().parse_args(argv)
    today = datetime.now(UTC).date()
    run_date = args.date or today.isoformat()
    try:
        day = datetime.strptime(run_date, "%Y-%m-%d").date()
    except ValueError:
        return _fail(f"--date={run_date!r} is not a date: use YYYY-MM-DD")
    from llem_pipeline.defs.experiments.partitions import FIRST_RUN_DATE

    if not (run_date >= FIRST_RUN_DATE and (day - today).days <= 1):
        return _fail(f"--date={run_date!r} has no partition: measurement dates run from {FIRST_RUN_DATE} to tomorrow "
                     f"({today.isoformat()} is today, UTC)")
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    devices = os.environ.get("LLEM_DEVICES", "").strip()
    if not devices:
        return _fail("LLEM_DEVICES is not set: use 'simulated' without GPUs, 'auto' or '0,1' with GPUs")

    import dagster as dg

    from llem_pipeline import paths
    from llem_pipeline.commands.progress import RunPrinter
    from llem_pipeline.defs.automation import launching as L
    from llem_pipeline.defs.automation.study_runs import planned_runs
    from llem_pipeline.defs.experiments.registry import scan_report_lines, scan_studies
    from llem_pipeline.defs.measurements.devices import target_name
    from llem_pipeline.storage import ResultStore

    scan = scan_studies(paths.studies_dir())
    for line in scan_report_lines(scan, study=args.study):  # skipped sweep points, then every bad file
        print(f"llem run: warning: {line}", file=sys.stderr)
    plan = scan.plans.get(args.study)
    if plan is None:
        return _fail(f"study {args.study!r} is not a valid study under {paths.studies_dir()} "
                     f"(valid: {', '.join(sorted(scan.plans)) or 'none'})")
    target = target_name(devices)
    runs = planned_runs(plan, run_date, target)
    store = ResultStore(paths.duckdb_path())
    with dg.DagsterInstance.get() as instance:
        L.register_scan(instance, scan, target)
        queued = args.queue or (not args.in_process and L.daemon_running(instance))
        if args.queue and not L.daemon_running(instance):
            return _fail("--queue needs a running Dagster daemon (`make ui` or `dagster-daemon run`) on "
                         f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}; drop --queue to run here")
        launch = L.new_launch_id(plan.name)
        cycles = max((r.cycle for r in runs), default=0) + 1
        where = "the daemon's run queue" if queued else "this process (no daemon running)"
        print(f"{plan.name}: {len(plan.config_hashes)} config(s) × {cycles} cycle(s) = {len(runs)} run(s) for "
              f"{run_date} on target {target!r}{' (SIMULATED GPU)' if target == 'sim' else ''}, through {where}; "
              f"launch {launch}", flush=True)
        if queued:
            with live_display(instance, launch, len(runs), sys.stdout, args.plain) as display:
                printer = RunPrinter(total=len(runs), cycles=cycles, store=store, instance=instance, display=display)
                L.submit_to_queue(paths.data_dir(), runs, launch)
                outcomes = L.follow_queue(instance, runs, launch, on_change=printer.on_change)
            L.launch_file(paths.data_dir(), launch).unlink(missing_ok=True)
            report_ok = True  # with a daemon, refresh_after_measurement redraws the report after each run
        else:
            log_path = paths.data_dir() / "logs" / f"{launch}.log"
            print(f"Dagster's log and the worker's detail: {log_path}", flush=True)
            with output_to(log_path) as terminal:
                with live_display(instance, launch, len(runs), terminal, args.plain) as display:
                    printer = RunPrinter(total=len(runs), cycles=cycles, store=store, instance=instance,
                                         out=terminal, display=display)
                    outcomes = []
                    for outcome in L.execute_in_process(instance, runs, launch, log_level=args.log_level,
                                                        on_start=printer.on_start):
                        printer.on_done(outcome.run, outcome.run_id, outcome.status)
                        outcomes.append(outcome)
                t0 = time.monotonic()
                report_ok = L.refresh_report(instance, args.log_level)
                print(f"efficiency_report: {'SUCCESS' if report_ok else 'FAILURE'} ({time.monotonic() - t0:.1f} s)",
                      file=terminal)
                printer.summary(outcomes)
    return 0 if report_ok and all(o.success for o in outcomes) else 1
