"""``python -m llem_pipeline.defs.launch STUDY [--date YYYY-MM-DD] [--parallel N]`` (what ``make demo`` runs).

Registers the studies, materialises every config of STUDY for the date (default: today, UTC) through
Dagster on the persistent instance (DAGSTER_HOME, default <checkout>/.dagster_home), one run per
partition with the multiprocess executor and the GPU pool, then refreshes the efficiency report.
Exit status 0 when every run succeeded. LLEM_DEVICES must be set ('simulated' on a machine without GPUs).
"""

import argparse
import os
import sys
from datetime import UTC, datetime

from llem_pipeline.paths import PROJECT_ROOT


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, launch the runs and print one line per run; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m llem_pipeline.defs.launch", description=__doc__.splitlines()[0])
    parser.add_argument("study", help="Study name (studies/<name>.yaml), e.g. demo")
    parser.add_argument("--date", default=datetime.now(UTC).date().isoformat(), help="Partition date (UTC day)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="Runs started at once, each waiting on the GPU pool (default: pipelined — a run starts "
                             "when a slot of pool 'gpu' is free, while the previous one stores its results)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="Dagster console log level of the runs")
    args = parser.parse_args(argv)
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    if not os.environ.get("LLEM_DEVICES"):
        print("llem launch: error: LLEM_DEVICES is not set: use 'simulated' without GPUs, 'auto' or '0,1' with GPUs",
              file=sys.stderr)
        return 2

    import dagster as dg

    from llem_pipeline.defs.automation.launching import (
        gpu_pool_limit,
        materialize_partitions,
        refresh_report,
        register_study,
    )
    from llem_pipeline.defs.experiments.registry import scan_report_lines, scan_studies
    from llem_pipeline.domain.errors import ConfigError

    with dg.DagsterInstance.get() as instance:
        try:
            hashes = register_study(instance, args.study)
        except ConfigError as err:
            print(f"llem launch: error: {err}", file=sys.stderr)
            return 2
        # skipped sweep points of this study and every invalid study file, with the reason (one line each)
        for line in scan_report_lines(scan_studies(), study=args.study):
            print(f"llem launch: warning: {line}", file=sys.stderr, flush=True)
        mode = f"{args.parallel} run(s) at once" if args.parallel else f"pipelined over {gpu_pool_limit(instance)} GPU slot(s)"
        print(f"{args.study}: {len(hashes)} config(s) for {args.date} on {os.environ['DAGSTER_HOME']}, {mode}", flush=True)
        outcomes = materialize_partitions(args.date, hashes, parallel=args.parallel,
                                          tags={"llem/study": args.study}, log_level=args.log_level)
        for o in outcomes:
            print(f"  {o.config_hash} {o.run_date} run {o.run_id}: {'SUCCESS' if o.success else 'FAILURE'}", flush=True)
        report_ok = refresh_report(instance, args.log_level)
        print(f"efficiency_report: {'SUCCESS' if report_ok else 'FAILURE'}", flush=True)
    return 0 if report_ok and all(o.success for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
