"""Fleet dispatch: GPU idle time between measurements and added time per experiment, 1 vs 2 vs 4 GPU hosts.

    python bench/fleet_dispatch.py [--experiments 4] [--hosts 1,2,4]

Side by side in one run, the same short measurement (one config of the tiny model, E cycles):
- single-host path: ``llem run STUDY --in-process`` on a SQLite instance (the `make demo` path);
- a local fleet (llem_pipeline.fleet.local: Redis, Postgres, daemon, storage worker) with 1, 2 and 4
  simulated GPU hosts on one hardware target, ``llem run STUDY --queue``.

What is pinned, and why: a simulated GPU computes on the CPU, so unpinned simulated hosts would all run the
model on the same CPUs and the bench would measure CPU contention, not dispatch. A real GPU host has its own
GPU; here each simulated host gets its own CPU instead: host i's Celery worker is pinned to CPU i mod C (C =
the CPUs this process may use; the 1-host arm to the first of them), and the Celery pool process, the step
and the measurement subprocesses it starts inherit that affinity. Under a 1-CPU affinity torch uses 1 thread
(checked at start by a probe under the same affinity; the bench refuses to measure otherwise), so the 1-host
and 2-host arms compute alike. Not pinned: Redis, Postgres, the daemon, the run workers it launches and the
storage worker (the orchestration, which a real fleet runs on other CPUs; here it shares the C CPUs with
the hosts). The single-host path is not pinned either (orchestration and measurement are one process tree);
it runs with OMP_NUM_THREADS=1 so its model also computes on one thread. With more hosts than CPUs several
hosts share a CPU, and scaling is then bounded by C (said in the output).

Figures:
- GPU-idle gap (s): on one host, from the end of one measurement's GPU lease to the start of the next one's
  (the "GPU lease" / "GPU lease ends" lines of the GPU step), while runs were waiting; median over hosts.
- added time per experiment (s): (fleet with 1 host − single-host path) wall time of `llem run` / E.
- throughput scaling: experiments per second over the span of the runs (first start → last end) with N
  hosts ÷ with 1 host.
- where the time goes, per arm: median GPU lease (the measurement itself), median run start → lease start
  (launch, queue, dispatch) and lease end → run end (storage step), s; the load average of the machine; and
  the CPU time, s, spent during `llem run` by the pinned hosts, by the unpinned orchestration (Redis,
  Postgres, daemon with its run workers, storage worker), by the `llem run` client and by every other
  process on the machine (from /proc/stat), against the CPU time available (CPUs × wall).
Targets: idle gap ≤ 2 s, ≥ 1.8× from 1 to 2 hosts.
Ends with ``RESULT gpu_idle_gap_s=… added_s_per_experiment=… hosts=… scaling_2x=… scaling_4x=… cpus=…``;
exits 1 when a run failed or the pinning could not be applied (nothing measured).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg
import psutil

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
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1"})
    return _llem(env, "run", name, "--in-process")


def torch_threads_on(cpu: int, env: dict[str, str]) -> int:
    """Return torch.get_num_threads() in a Python started with ``env`` and pinned to CPU ``cpu`` (a count)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    if out.returncode != 0:
        raise RuntimeError(f"the torch thread probe failed: {out.stderr[-2000:]}")
    return int(out.stdout.strip())


def _affinity(pid: int) -> dict[int, list[int]]:
    """Return {pid: its CPUs} of process ``pid`` and every process below it."""
    top = psutil.Process(pid)
    return {p.pid: sorted(p.cpu_affinity()) for p in [top, *top.children(recursive=True)]}


def _cpu_s(pids: list[int]) -> float:
    """Return the CPU time, s (user + system, with that of the reaped children), of processes ``pids`` and every
    process below them now."""
    total = 0.0
    for pid in pids:
        try:
            top = psutil.Process(pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def _busy_s() -> float:
    """Return the CPU time, s, all CPUs of the machine have spent busy since boot (anyone's processes)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _lease_intervals(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> dict[str, list[tuple[float, float]]]:
    """Return {celery host: [(lease start, lease end) in time order]} of the GPU steps of ``runs`` (epoch s)."""
    by_host: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        host, start, end = _lease(instance, run)
        if host and start and end:
            by_host.setdefault(host, []).append((start, end))
    return {h: sorted(v) for h, v in by_host.items()}


def _lease(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str | None, float | None, float | None]:
    """Return (celery host, lease start, lease end) of the GPU step of ``run`` (epoch s; None when absent)."""
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
    return host, start, end


def fleet_phase(fleet: LocalFleet, instance: dg.DagsterInstance, hosts: int, name: str, experiments: int,
                cpus: list[int]) -> dict:
    """Run study ``name`` on ``hosts`` fresh GPU hosts of the fleet, host i pinned to CPU cpus[i mod len(cpus)];
    return its figures (wall s, span s, gaps s, leases s, launch and storage s, pinning, load average)."""
    pinned = {f"{TARGET}{hosts}-{i}": cpus[i % len(cpus)] for i in range(hosts)}
    started = [fleet.start_gpu_host(GpuHost(h, TARGET, MODEL, cpus=(cpu,))) for h, cpu in pinned.items()]
    try:
        for proc, cpu in zip(started, pinned.values(), strict=True):
            seen = _affinity(proc.popen.pid)
            if any(v != [cpu] for v in seen.values()):
                raise RuntimeError(f"{proc.name} is not pinned to CPU {cpu}: {seen}")
        host_pids = [p.popen.pid for p in started]
        orch_pids = [p.popen.pid for n, p in fleet.procs.items() if p not in started]
        load0, busy0, hosts0, orch0 = os.getloadavg()[0], _busy_s(), _cpu_s(host_pids), _cpu_s(orch_pids)
        client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = _llem(fleet.env(), "run", name, "--queue")
        client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {"hosts": _cpu_s(host_pids) - hosts0, "orchestration": _cpu_s(orch_pids) - orch0,
               "client": client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime}
        cpu["others"] = _busy_s() - busy0 - sum(cpu.values())
        load1 = os.getloadavg()[0]
    finally:
        for proc in started:
            fleet.stop_proc(proc.name)
    runs = list(instance.get_runs(filters=dg.RunsFilter(tags={"llem/study": name})))
    if len(runs) != experiments or any(r.status != dg.DagsterRunStatus.SUCCESS for r in runs):
        raise RuntimeError(f"{name}: {len(runs)} runs, statuses {[r.status.value for r in runs]}")
    records = {r.dagster_run.run_id: r for r in
               instance.get_run_records(filters=dg.RunsFilter(run_ids=[r.run_id for r in runs]))}
    span = max(r.end_time for r in records.values()) - min(r.start_time for r in records.values())
    leases = _lease_intervals(instance, runs)
    gaps = [b[0] - a[1] for v in leases.values() for a, b in itertools.pairwise(v)]
    launch, store = [], []
    for run in runs:
        _, start, end = _lease(instance, run)
        if start and end:
            launch.append(start - records[run.run_id].start_time)
            store.append(records[run.run_id].end_time - end)
    return {"hosts": hosts, "wall_s": wall, "span_s": span, "gaps": gaps, "used_hosts": len(leases),
            "per_host": {h.split("@")[0]: len(v) for h, v in leases.items()},
            "lease_s": statistics.median(b - a for v in leases.values() for a, b in v),
            "launch_s": statistics.median(launch), "store_s": statistics.median(store),
            "pinned": pinned, "load": (load0, load1), "cpu": cpu}


def main() -> int:
    """Run the bench; returns 0 when every figure was measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4, help="runs per phase (cycles of one config)")
    parser.add_argument("--hosts", default="1,2,4", help="comma list of host counts")
    args = parser.parse_args()
    counts = [int(x) for x in args.hosts.split(",")]
    cpus = sorted(os.sched_getaffinity(0))
    root = Path(tempfile.mkdtemp(prefix="llem-bench-fleet-"))
    studies = root / "studies"
    studies.mkdir()
    names = {n: f"bench_h{n}" for n in [0, *counts]}
    for name in names.values():
        (studies / f"{name}.yaml").write_text(STUDY.format(name=name, target=TARGET, cycles=args.experiments))
    fleet = LocalFleet(hosts=(), studies_dir=studies)
    print(f"{len(cpus)} CPUs {cpus}. Pinned: GPU host i's Celery worker (and the pool, step and measurement "
          f"processes below it) to CPU i mod {len(cpus)}, the 1-host arm to CPU {cpus[0]}: a simulated GPU computes "
          "on the CPU, so each simulated host gets its own CPU as a real host has its own GPU. Not pinned: Redis, "
          "Postgres, the daemon, run workers, the storage worker, the single-host path (OMP_NUM_THREADS=1).",
          flush=True)
    for n in counts:
        if n > len(cpus):
            print(f"  note: {n} hosts share {len(cpus)} CPUs ({-(-n // len(cpus))} hosts per CPU): scaling with {n} "
                  f"hosts is bounded by {len(cpus)}", flush=True)
    try:
        threads = torch_threads_on(cpus[0], fleet.env())
        print(f"torch.get_num_threads() under a 1-CPU affinity: {threads}", flush=True)
        if threads != 1:
            raise RuntimeError(f"torch uses {threads} threads on one pinned CPU; the arms would not compute alike")
        print(f"single-host path (in-process, SQLite): {args.experiments} experiments …", flush=True)
        base_wall = single_host(studies, names[0], root / "single")
        print(f"  wall {base_wall:.1f} s ({base_wall / args.experiments:.1f} s per experiment)", flush=True)
        fleet.start()
        os.environ["LLEM_PG_URL"] = fleet.env()["LLEM_PG_URL"]
        results = {}
        with dg.DagsterInstance.from_config(str(fleet.root / "dagster_home")) as instance:
            for n in counts:
                print(f"fleet, {n} GPU host(s): {args.experiments} experiments …", flush=True)
                r = fleet_phase(fleet, instance, n, names[n], args.experiments, cpus)
                results[n] = r
                gap = f"{statistics.median(r['gaps']):.2f} s (max {max(r['gaps']):.2f})" if r["gaps"] else "n/a"
                print(f"  pinned {r['pinned']}; wall {r['wall_s']:.1f} s, runs' span {r['span_s']:.1f} s, "
                      f"{args.experiments / r['span_s']:.3f} exp/s, hosts used {r['used_hosts']} {r['per_host']}, "
                      f"GPU-idle gap median {gap}", flush=True)
    except Exception as err:  # a failed run, a fleet that did not start or a pinning not applied: nothing to report
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
    print("\nhosts  cpus  span_s  exp/s  scaling  lease_s  launch_s  store_s  gap_s  load(start,end)")
    for n in counts:
        r = results[n]
        gap = f"{statistics.median(r['gaps']):5.2f}" if r["gaps"] else "  n/a"
        used = len(set(r["pinned"].values()))
        print(f"{n:>5}  {used:>4}  {r['span_s']:6.1f}  {thr[n]:.3f}  {thr[n] / thr[1]:6.2f}x  {r['lease_s']:7.2f}  "
              f"{r['launch_s']:8.2f}  {r['store_s']:7.2f}  {gap}  {r['load'][0]:.1f},{r['load'][1]:.1f}")
    print("(lease_s: median GPU lease, the measurement itself; launch_s: median run start → lease start; "
          "store_s: median lease end → run end; medians over the arm's runs)")
    print(f"\nCPU time during `llem run`, s (the machine has {len(cpus)} CPUs × wall s to give):")
    print("hosts   wall_s  available  hosts(pinned)  orchestration  llem-client  others(not this bench)")
    for n in counts:
        r, c = results[n], results[n]["cpu"]
        print(f"{n:>5}  {r['wall_s']:7.1f}  {len(cpus) * r['wall_s']:9.1f}  {c['hosts']:13.1f}  "
              f"{c['orchestration']:13.1f}  {c['client']:11.1f}  {c['others']:21.1f}")
    print("(orchestration: Redis, Postgres, the daemon with its code server and run workers, the storage worker; "
          "others: every other process on the machine in that time)")
    for n in counts:
        if n > len(cpus):
            print(f"{n} hosts share {len(cpus)} CPUs: scaling_{n}x is bounded by {len(cpus)}")
    print(f"single-host path {base_wall:.1f} s vs fleet with 1 host {results[1]['wall_s']:.1f} s for "
          f"{args.experiments} experiments: {added:+.2f} s per experiment")
    print(f"GPU-idle gap between consecutive measurements on one host ({gap_hosts} hosts): median "
          f"{statistics.median(gaps):.2f} s over {len(gaps)} gaps (target ≤ 2 s)")
    scaling = {n: thr[n] / thr[1] for n in counts}
    print(f"RESULT gpu_idle_gap_s={statistics.median(gaps):.2f} added_s_per_experiment={added:.2f} "
          f"hosts={','.join(map(str, counts))} scaling_2x={scaling.get(2, float('nan')):.2f} "
          f"scaling_4x={scaling.get(4, float('nan')):.2f} cpus={len(cpus)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
