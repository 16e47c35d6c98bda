"""``llem status [--limit N]``: recent runs of the instance and their state, the queue, the daemon.

Reads the Dagster instance of DAGSTER_HOME (default ``<checkout>/.dagster_home``): whether a daemon is
running (and so whether `llem run` hands runs to the queue), how many runs are queued or in progress, and
the latest runs newest first with their study label (``llem/label`` tag), status, duration and run id.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from llem_pipeline.paths import PROJECT_ROOT


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llem status", description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=15, help="how many recent runs to list (15)")
    return p


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "—"


def main_status(argv: list[str] | None = None) -> int:
    """Print the instance's state; return 0."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))

    import dagster as dg

    from llem_pipeline.defs.automation.launching import daemon_running
    from llem_pipeline.defs.constants import LABEL_TAG

    with dg.DagsterInstance.get() as instance:
        daemon = daemon_running(instance)
        queued = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
        active = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING,
                                                                 dg.DagsterRunStatus.STARTED]))
        print(f"instance: {os.environ['DAGSTER_HOME']}")
        print(f"daemon: {'running' if daemon else 'not running'} "
              f"({'`llem run` hands runs to the queue' if daemon else '`llem run` executes runs itself'})")
        print(f"runs: {queued} queued, {active} in progress")
        records = instance.get_run_records(limit=args.limit)
        if not records:
            print("no runs yet: `llem run demo` measures the demo study")
            return 0
        print(f"\nlatest {len(records)} run(s), newest first:")
        for r in records:
            run = r.dagster_run
            took = f"{r.end_time - r.start_time:.1f} s" if r.start_time and r.end_time else "—"
            label = run.tags.get(LABEL_TAG) or run.tags.get("dagster/partition") or "—"
            print(f"  {_when(r.start_time or r.create_timestamp.timestamp())}  {run.status.value:<9} {took:>8}  "
                  f"{run.job_name:<26} {label}  ({run.run_id[:8]})", file=sys.stdout)
    return 0
