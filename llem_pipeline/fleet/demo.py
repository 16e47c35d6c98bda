"""`make fleet-demo`: a local fleet measures a study on two hardware targets; prints the efficiency per hardware.

    python -m llem_pipeline.fleet.demo [--study fleet_demo] [--timeout 1200]

Starts Redis, Postgres, two GPU hosts (Celery workers on gpu-h100 and gpu-a100, each its own simulated GPU
model), the storage worker and the daemon (llem_pipeline.fleet.local); runs ``llem run STUDY --queue``
against them; prints the efficiency view grouped by hardware_id; stops every process it started, also on
failure, Ctrl-C or SIGTERM. Exits 0 when every run succeeded.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from llem_pipeline.fleet.local import FleetError, LocalFleet

EFFICIENCY_SQL = (
    "SELECT hardware_id, model, setting, n_runs, round(j_per_token, 5) AS j_per_token, "
    "round(tokens_per_s, 1) AS tokens_per_s, round(avg_power_w, 1) AS avg_power_w "
    "FROM efficiency ORDER BY hardware_id, setting"
)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_study(fleet: LocalFleet, study: str, timeout_s: float) -> int:
    """Run ``llem run STUDY --queue`` on the fleet (its output to this terminal); return its exit code."""
    llem = str(Path(sys.executable).with_name("llem"))
    proc = subprocess.Popen([llem, "run", study, "--queue"], env=fleet.env(), start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"fleet-demo: the study did not finish in {timeout_s:g} s", file=sys.stderr)
        return 124
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (0 when every run succeeded and the efficiency view was printed)."""
    parser = argparse.ArgumentParser(prog="fleet-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="fleet_demo")
    parser.add_argument("--timeout", type=float, default=1200.0, help="longest the study may take, s")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    fleet = LocalFleet()
    t0 = time.monotonic()
    code = 1
    try:
        print(f"fleet-demo: starting Redis, Postgres, {len(fleet.hosts)} GPU hosts "
              f"({', '.join(f'{h.name}={h.model}' for h in fleet.hosts)}), the storage worker and the daemon "
              f"in {fleet.root}", flush=True)
        fleet.start()
        print(f"fleet-demo: fleet up in {time.monotonic() - t0:.0f} s (redis 127.0.0.1:{fleet.redis_port}, "
              f"postgres 127.0.0.1:{fleet.pg_port})", flush=True)
        code = run_study(fleet, args.study, args.timeout)
        print("fleet-demo: efficiency per hardware", flush=True)
        llem = str(Path(sys.executable).with_name("llem"))
        shown = subprocess.call([llem, "sql", EFFICIENCY_SQL], env=fleet.env())
        code = code or shown
    except FleetError as err:
        print(f"fleet-demo: {err}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("fleet-demo: interrupted", file=sys.stderr)
        code = 130
    finally:
        fleet.stop()
        left = fleet.leftovers()
        print(f"fleet-demo: stopped every process it started{'; still listening: ' + ', '.join(left) if left else ''}"
              f" ({time.monotonic() - t0:.0f} s in all)", flush=True)
        if left:
            code = code or 1
        else:
            fleet.remove()
    return code


if __name__ == "__main__":
    sys.exit(main())
