"""Fleet dispatch: GPU idle time between measurements and added time per experiment, 1 vs 2 vs 4 GPU hosts.

    python bench/fleet_dispatch.py [--experiments 4]

Side by side in one run, the same short measurement (one config of the tiny model, E cycles):
- single-host path: ``llem run STUDY --in-process`` on a SQLite instance (the `make demo` path);
- a local fleet (llem_pipeline.fleet.local: Redis, Postgres, daemon, storage worker) with 1, 2 and 4
  simulated GPU hosts on one hardware target, ``llem run STUDY --queue``.

Figures:
- GPU-idle gap (s): on one host, from the end of one measurement's GPU lease to the start of the next one's
  (the "GPU lease" / "GPU lease ends" lines of the GPU step), while runs were waiting; median over hosts.
- added time per experiment (s): (fleet with 1 host − single-host path) wall time of `llem run` / E.
- throughput scaling: experiments per second over the span of the runs (first start → last end) with N
  hosts ÷ with 1 host.
Targets: idle gap ≤ 2 s, ≥ 1.8× from 1 to 2 hosts. On a 2-core machine every simulated host and every
run worker share the same two cores, so scaling here says more about the machine than about the fleet.
Ends with ``RESULT gpu_idle_gap_s=… added_s_per_experiment=… hosts=… scaling_2x=… scaling_4x=…``; exits 1
when a run failed (nothing measured).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg

from llem_pipeline.fleet.local import GpuHost, LocalFleet
from llem_pipeline.paths import PROJECT_ROOT

TARGET = "bench"
MODEL = "BENCH-SIM-GPU"
STUDY = """
name: {name}
hardware: [{target}]
base:
  model: "llem:tiny"
  backend: pytorch
  n: 4
  dataset: builtin
  max_input_tokens: 16
  max_output_tokens: 4
  fixed_output_length: true
  precision: fp32
  random_seed: 7
  warmup: {{mode: fixed, n_warmup: 1, thermal_floor_seconds: 0}}
  baseline: {{enabled: false}}
  energy: {{sample_interval_ms: 50, methodology: total}}
cycles: {cycles}
order: sequential
"""
LEASE_START, LEASE_END = "GPU lease: ", "GPU lease ends: "


def _llem(env: dict[str, str], *args: str, timeout_s: float = 1800.0) -> float:
    """Run ``llem ARGS`` with ``env``; return its wall time, s. Raises RuntimeError when it fails."""
    t0 = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).with_name("llem")), *args], env=env, capture_output=True,
                         text=True, timeout=timeout_s)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"llem {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return wall


def single_host(studies: Path, name: str, root: Path) -> float:
    """Return the wall time, s, of the study through the single-host path (in-process, SQLite instance)."""
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLEM_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "LLEM_DEVICES": "simulated", "LLEM_TARGET": TARGET,
                "LLEM_SIM_GPU_MODEL": MODEL, "LLEM_DATA_DIR": str(root / "data"),
                "LLEM_DUCKDB": str(root / "data" / "llem.duckdb"), "LLEM_STUDIES_DIR": str(studies),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return _llem(env, "run", name, "--in-process")


def _lease_intervals(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> dict[str, list[tuple[float, float]]]:
    """Return {celery host: [(lease start, lease end) in time order]} of the GPU steps of ``runs`` (epoch s)."""
    by_host: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        host, start, end = None, None, None
        for e in instance.all_logs(run.run_id):
            if e.step_key != "gpu_measurement":
                continue
            if e.dagster_event is not None and e.dagster_event.event_specific_data is not None:
                metadata = getattr(e.dagster_event.event_specific_data, "metadata", None) or {}
                if "Celery worker" in metadata:
                    host = str(metadata["Celery worker"].value)
            message = e.user_message or ""
            if message.startswith(LEASE_START):
                start = e.timestamp
            elif message.startswith(LEASE_END):
                end = e.timestamp
        if host and start and end:
            by_host.setdefault(host, []).append((start, end))
    return {h: sorted(v) for h, v in by_host.items()}


def fleet_phase(fleet: LocalFleet, instance: dg.DagsterInstance, hosts: int, name: str, experiments: int) -> dict:
    """Run study ``name`` on ``hosts`` fresh GPU hosts of the fleet; return its figures (wall s, span s, gaps s)."""
    started = [fleet.start_gpu_host(GpuHost(f"{TARGET}{hosts}-{i}", TARGET, MODEL)) for i in range(hosts)]
    try:
        wall = _llem(fleet.env(), "run", name, "--queue")
    finally:
        for proc in started:
            fleet.stop_proc(proc.name)
    runs = list(instance.get_runs(filters=dg.RunsFilter(tags={"llem/study": name})))
    if len(runs) != experiments or any(r.status != dg.DagsterRunStatus.SUCCESS for r in runs):
        raise RuntimeError(f"{name}: {len(runs)} runs, statuses {[r.status.value for r in runs]}")
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=[r.run_id for r in runs]))
    span = max(r.end_time for r in records) - min(r.start_time for r in records)
    leases = _lease_intervals(instance, runs)
    gaps = [b[0] - a[1] for v in leases.values() for a, b in itertools.pairwise(v)]
    return {"hosts": hosts, "wall_s": wall, "span_s": span, "gaps": gaps, "used_hosts": len(leases),
            "per_host": {h: len(v) for h, v in leases.items()}}


def main() -> int:
    """Run the bench; returns 0 when every figure was measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4, help="runs per phase (cycles of one config)")
    parser.add_argument("--hosts", default="1,2,4", help="comma list of host counts")
    args = parser.parse_args()
    counts = [int(x) for x in args.hosts.split(",")]
    root = Path(tempfile.mkdtemp(prefix="llem-bench-fleet-"))
    studies = root / "studies"
    studies.mkdir()
    names = {n: f"bench_h{n}" for n in [0, *counts]}
    for name in names.values():
        (studies / f"{name}.yaml").write_text(STUDY.format(name=name, target=TARGET, cycles=args.experiments))
    fleet = LocalFleet(hosts=(), studies_dir=studies)
    try:
        print(f"single-host path (in-process, SQLite): {args.experiments} experiments …", flush=True)
        base_wall = single_host(studies, names[0], root / "single")
        print(f"  wall {base_wall:.1f} s ({base_wall / args.experiments:.1f} s per experiment)", flush=True)
        fleet.start()
        os.environ["LLEM_PG_URL"] = fleet.env()["LLEM_PG_URL"]
        results = {}
        with dg.DagsterInstance.from_config(str(fleet.root / "dagster_home")) as instance:
            for n in counts:
                print(f"fleet, {n} GPU host(s): {args.experiments} experiments …", flush=True)
                r = fleet_phase(fleet, instance, n, names[n], args.experiments)
                results[n] = r
                gap = f"{statistics.median(r['gaps']):.2f} s (max {max(r['gaps']):.2f})" if r["gaps"] else "n/a"
                print(f"  wall {r['wall_s']:.1f} s, runs' span {r['span_s']:.1f} s, "
                      f"{args.experiments / r['span_s']:.3f} exp/s, hosts used {r['used_hosts']} {r['per_host']}, "
                      f"GPU-idle gap median {gap}", flush=True)
    except Exception as err:  # a failed run or a fleet that did not start: nothing to report
        print(f"fleet_dispatch: could not measure: {err}", file=sys.stderr)
        return 1
    finally:
        fleet.stop()
        fleet.remove()
        shutil.rmtree(root, ignore_errors=True)
    thr = {n: args.experiments / r["span_s"] for n, r in results.items()}
    gap_hosts = 2 if 2 in results and results[2]["gaps"] else counts[0]
    gaps = results[gap_hosts]["gaps"]
    if not gaps or 1 not in results:
        print("fleet_dispatch: no consecutive measurements on one host (raise --experiments)", file=sys.stderr)
        return 1
    added = (results[1]["wall_s"] - base_wall) / args.experiments
    print("\nhosts  span_s  exp/s   scaling")
    for n in counts:
        print(f"{n:>5}  {results[n]['span_s']:6.1f}  {thr[n]:.3f}  {thr[n] / thr[1]:.2f}x")
    print(f"single-host path {base_wall:.1f} s vs fleet with 1 host {results[1]['wall_s']:.1f} s for "
          f"{args.experiments} experiments: {added:+.2f} s per experiment")
    print(f"GPU-idle gap between consecutive measurements on one host ({gap_hosts} hosts): median "
          f"{statistics.median(gaps):.2f} s over {len(gaps)} gaps (target ≤ 2 s)")
    scaling = {n: thr[n] / thr[1] for n in counts}
    print(f"RESULT gpu_idle_gap_s={statistics.median(gaps):.2f} added_s_per_experiment={added:.2f} "
          f"hosts={','.join(map(str, counts))} scaling_2x={scaling.get(2, float('nan')):.2f} "
          f"scaling_4x={scaling.get(4, float('nan')):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
