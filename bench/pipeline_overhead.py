"""Orchestration overhead: one tiny-model measurement as the worker command vs as a Dagster materialisation.

Everything lives in a temp folder: data dir, DuckDB file, studies folder (one study ``bench`` with one
config), and a PERSISTENT Dagster instance (DAGSTER_HOME with a copy of the project's
``.dagster_home/dagster.yaml``: SQLite storage, pool "gpu", run monitoring) — how ``make demo`` runs.
LLEM_DEVICES=simulated. Pairs run back to back in alternating order (direct, dagster, dagster, direct, …):

- direct:  ``python -m llem_pipeline.measure --config CFG --devices simulated --out DIR`` with the same
  --timeout and --baseline-cache the GPU step passes (a subprocess, wall time);
- dagster: one ``measure_experiments`` run for one (date × config) partition through
  ``launching._run_one`` in a long-lived spawned process — what ``python -m llem_pipeline.defs.launch``
  (``materialize_partitions``) does per partition in its process pool: ``dg.execute_job`` of the
  measurement job (its steps in the run process, the pool "gpu" claimed); GPU step through Pipes and the
  guard, then the CPU step (store_results) into DuckDB.
  Wall time. Each pair uses a fresh date, like the partitions of a study.

Study arm (after the pairs): --study-runs configs (the same workload under different seeds) measured
back to back as worker commands vs through ``materialize_partitions``' pipelined launch (what ``make demo``
runs: a run starts when the GPU slot frees, its GPU step overlapping the previous run's CPU step), rounds
in alternating order; its per-experiment added time gives the study share. Per pair: added_s = dagster − direct. The per-study fixed cost (launcher start-up: interpreter + Dagster +
code location import; study registration; the launcher's partition runners starting and warming up before
its first run, as the launcher reports it; the efficiency-report run) is timed once (in the pairs, the start
of their partition-runner process is inside the warm-up, not counted). A 50-experiment study
of 30 s measurements: overhead share = (50 · study-arm added_s + fixed_s) / (50 · 30 s) (also printed
from the pairs' one-run-at-a-time added_s).

    .venv/bin/python bench/pipeline_overhead.py [--pairs 5] [--n 8] [--keep] [--profile]

The profile: each Dagster run's event log split into phases (run start, step bodies, gaps, executor exit),
medians printed next to the direct command, with the number of events a run stores times the measured cost
of one event-log write on the instance's disk (SQLite commits); ``--profile`` then records one more run with py-spy
over the whole process tree and prints CPU seconds per process role and how much of it is imports.
Dagster's console log goes to <temp>/dagster.log.
Ends with ``RESULT added_s_per_experiment=… overhead_pct_30s_study=… pairs=…`` (targets: ≤ 1.5 s, ≤ 3 %).
Exits 1 when it could not measure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY_EXPERIMENTS = 50
STUDY_MEASUREMENT_S = 30.0
TARGET_ADDED_S = 1.5
TARGET_PCT = 3.0

BENCH_STUDY = """\
name: bench
description: bench/pipeline_overhead.py — one tiny-model config.
base:
  model: "llem:tiny"
  backend: pytorch
  n: {n}
  dataset: builtin
  max_input_tokens: 32
  max_output_tokens: 16
  fixed_output_length: true
  precision: fp32
  random_seed: 42
  warmup: {{mode: fixed, n_warmup: 1, thermal_floor_seconds: 0}}
  baseline: {{duration_seconds: 1, cache_ttl_seconds: 3600}}
  energy: {{sample_interval_ms: 50, methodology: total}}
  pytorch: {{batch_size: 4}}
"""


def _setup_env(tmp: Path, n: int, study_runs: int) -> None:
    """Point every llem/Dagster path at ``tmp`` (process env, inherited by all subprocesses)."""
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    studies = tmp / "studies"
    studies.mkdir()
    (studies / "bench.yaml").write_text(BENCH_STUDY.format(n=n), encoding="utf-8")
    # the study arm: the same workload under STUDY_RUNS seeds (distinct configs, same work)
    sweep = f"sweep:\n  random_seed: [{', '.join(str(42 + i) for i in range(study_runs))}]\n"
    (studies / "benchstudy.yaml").write_text(
        BENCH_STUDY.format(n=n).replace("name: bench\n", "name: benchstudy\n") + sweep, encoding="utf-8")
    os.environ.update({
        "DAGSTER_HOME": str(home),
        "LLEM_DATA_DIR": str(tmp / "data"),
        "LLEM_DUCKDB": str(tmp / "data" / "llem.duckdb"),
        "LLEM_STUDIES_DIR": str(studies),
        "LLEM_DEVICES": "simulated",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    os.environ.pop("DAGSTER_PIPES_CONTEXT", None)


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    """Return (q1, median, q3) of ``xs`` (inclusive method), same unit as xs."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def main() -> int:
    """Run the interleaved pairs; print the table and the RESULT line; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--n", type=int, default=8, help="prompts of the measured config")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    ap.add_argument("--study-runs", type=int, default=6, help="experiments of the study arm (pipelined launch)")
    ap.add_argument("--study-rounds", type=int, default=2, help="rounds of the study arm (order alternating)")
    ap.add_argument("--profile", action="store_true",
                    help="then record one more Dagster run with py-spy (.[bench] extra) over its whole process tree")
    args = ap.parse_args()
    if args.pairs < 1 or args.study_runs < 1 or args.study_rounds < 1:
        print("pipeline_overhead: --pairs, --study-runs and --study-rounds must be ≥ 1", file=sys.stderr)
        return 1

    tmp = Path(tempfile.mkdtemp(prefix="llem-pipeline-overhead-"))
    _setup_env(tmp, args.n, args.study_runs)
    t_start = time.perf_counter()
    try:
        return _run(tmp, args)
    finally:
        print(f"(bench wall time {time.perf_counter() - t_start:.0f} s; temp folder {tmp}"
              f"{' kept' if args.keep else ' removed'})")
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, args: argparse.Namespace) -> int:
    # Fixed per-study cost 1: a fresh interpreter importing what the launcher imports and loading the code location.
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dagster; from llem_pipeline.definitions import defs; defs()"],
                   check=True, cwd=ROOT)
    startup_s = time.perf_counter() - t0

    import dagster as dg

    from llem_pipeline.defs.automation import launching
    from llem_pipeline.defs.automation.launching import refresh_report, register_study
    from llem_pipeline.defs.experiments.registry import resolve_config
    from llem_pipeline.defs.measurements.worker import MeasurementWorker
    from llem_pipeline.engines.tiny_model import ensure_tiny_model
    from llem_pipeline.measure.worker import resolve_model_ref

    instance = dg.DagsterInstance.get()
    if instance.is_ephemeral:
        print("pipeline_overhead: the Dagster instance is ephemeral; DAGSTER_HOME was not honoured", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    hashes = register_study(instance, "bench")
    register_s = time.perf_counter() - t0
    if len(hashes) != 1:
        print(f"pipeline_overhead: expected one config in the bench study, got {hashes}", file=sys.stderr)
        return 1
    config_hash = hashes[0]
    config = resolve_config(config_hash)
    study_hashes = register_study(instance, "benchstudy")
    study_cfgs = []
    for h in study_hashes:
        path = tmp / f"config-{h}.json"
        path.write_text(json.dumps(resolve_config(h).model_dump(mode="json")), encoding="utf-8")
        study_cfgs.append(path)
    ensure_tiny_model()
    resolve_model_ref(config.model)  # build the model once, outside any timing
    cfg_path = tmp / "config.json"
    cfg_path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    worker = MeasurementWorker()
    cache = worker.baseline_cache()

    def direct(tag: str, config_file: Path = cfg_path) -> float:
        """Run the worker command once; return its wall time, s."""
        out = tmp / "direct" / tag
        cmd = [sys.executable, "-m", "llem_pipeline.measure", "--config", str(config_file), "--devices", "simulated",
               "--out", str(out), "--timeout", f"{worker.timeout_s:g}", "--run-id", tag, "--quiet"]
        if cache is not None:
            cmd += ["--baseline-cache", str(cache)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - t
        if proc.returncode != 0 or not (out / "result.json").is_file():
            raise RuntimeError(f"direct worker run {tag} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
        return elapsed

    first_date = date.fromisoformat("2026-11-01")

    phases: list[dict[str, float]] = []

    def via_dagster(i: int) -> float:
        """Materialise partition (first_date + i days, config); return the wall time, s (phases appended)."""
        run_date = (first_date + timedelta(days=i)).isoformat()
        wall0 = time.time()
        t = time.perf_counter()
        outcome = pool.submit(launching._run_one, run_date, config_hash, {"llem/study": "bench"}).result()
        elapsed = time.perf_counter() - t
        if not outcome.success:
            raise RuntimeError(f"Dagster run {outcome.run_id} for {run_date} (log: {log_path}) failed")
        phases.append(_phases(instance, outcome.run_id, wall0, wall0 + elapsed))
        return elapsed

    # The launcher's partition runner: a long-lived spawned process executing one run per partition
    # (materialize_partitions keeps min(parallel, configs) of them for the whole study).
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    # Dagster's DEBUG console log (parent and step processes) goes to a file, not the table.
    log_path = tmp / "dagster.log"
    saved_stderr = os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_fd, 2)
    try:
        # Warm-up (not counted): fills the baseline cache, the OS page cache, DuckDB's schema.
        warm_direct = direct("warmup")
        warm_dagster = via_dagster(0)
        print(f"warm-up: direct {warm_direct:.2f} s, dagster {warm_dagster:.2f} s (not counted)", flush=True)
        rows: list[tuple[int, float, float]] = []
        for i in range(1, args.pairs + 1):
            if i % 2:
                d = direct(f"pair{i}")
                g = via_dagster(i)
            else:
                g = via_dagster(i)
                d = direct(f"pair{i}")
            rows.append((i, d, g))
            print(f"  pair {i}: direct {d:6.2f} s  dagster {g:6.2f} s  added {g - d:+6.2f} s", flush=True)
        study_rows: list[tuple[float, float]] = []
        runners_s: list[float] = []  # the launcher's partition runners starting and warming up: once per study
        for r in range(args.study_rounds):
            run_date = (first_date + timedelta(days=100 + r)).isoformat()

            def study_direct(r: int = r) -> float:
                return sum(direct(f"study{r}-{k}", c) for k, c in enumerate(study_cfgs))

            def study_dagster(run_date: str = run_date) -> float:
                t = time.perf_counter()
                stats: dict[str, float] = {}
                outcomes = launching.materialize_partitions(run_date, study_hashes, tags={"llem/study": "benchstudy"},
                                                            stats=stats)
                if not all(o.success for o in outcomes):
                    raise RuntimeError(f"a run of the study arm failed (log: {log_path})")
                runners_s.append(stats["runners_ready_s"])
                return time.perf_counter() - t - stats["runners_ready_s"]

            if r % 2 == 0:
                d, g = study_direct(), study_dagster()
            else:
                g, d = study_dagster(), study_direct()
            study_rows.append((d, g))
            print(f"  study round {r + 1}: {len(study_hashes)} experiments direct {d:6.2f} s  pipelined launch "
                  f"{g:6.2f} s  added {(g - d) / len(study_hashes):+5.2f} s per experiment", flush=True)
        t0 = time.perf_counter()
        report_ok = refresh_report(instance)
        report_s = time.perf_counter() - t0
        event_ms = _event_write_ms(instance)
        if not report_ok:
            raise RuntimeError("the efficiency_report run failed")
        if args.profile:
            os.dup2(saved_stderr, 2)
            _profile_one_run(tmp, config_hash, (first_date + timedelta(days=args.pairs + 1)).isoformat())
            os.dup2(log_fd, 2)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        os.dup2(saved_stderr, 2)
        print(f"pipeline_overhead: could not measure: {err}", file=sys.stderr)
        return 1
    finally:
        pool.shutdown()
        os.dup2(saved_stderr, 2)
        os.close(log_fd)

    added = [g - d for _, d, g in rows]
    q1, med, q3 = _quartiles(added)
    dq1, dmed, dq3 = _quartiles([d for _, d, _ in rows])
    gq1, gmed, gq3 = _quartiles([g for _, _, g in rows])
    runners_ready_s = statistics.median(runners_s) if runners_s else 0.0
    fixed_s = startup_s + register_s + runners_ready_s + report_s
    serial_pct = 100.0 * (STUDY_EXPERIMENTS * med + fixed_s) / (STUDY_EXPERIMENTS * STUDY_MEASUREMENT_S)
    # The study arm: per-experiment added time of a pipelined launch; the launcher starts and warms its
    # partition runners before the first run (it reports how long that took): a per-study cost, in fixed_s.
    study_added = statistics.median([(g - d) / len(study_hashes) for d, g in study_rows])
    study_overhead_s = STUDY_EXPERIMENTS * study_added + fixed_s
    pct = 100.0 * study_overhead_s / (STUDY_EXPERIMENTS * STUDY_MEASUREMENT_S)

    print()
    load = os.getloadavg()
    print(f"Tiny model, n={args.n}, batch 4, simulated device; {len(rows)} interleaved pairs; {os.cpu_count()} CPU cores; "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the end")
    print(f"{'':34s} {'median':>8s} {'q1':>8s} {'q3':>8s} {'IQR':>8s}")
    print(f"{'direct worker command, s':34s} {dmed:8.2f} {dq1:8.2f} {dq3:8.2f} {dq3 - dq1:8.2f}")
    print(f"{'Dagster materialisation, s':34s} {gmed:8.2f} {gq1:8.2f} {gq3:8.2f} {gq3 - gq1:8.2f}")
    print(f"{'added per experiment, s':34s} {med:8.2f} {q1:8.2f} {q3:8.2f} {q3 - q1:8.2f}")
    print()
    print("Where the Dagster run's time goes (median over the measured runs, s; from the run's event log):")
    counted = phases[1:len(rows) + 1]
    for name in PHASES:
        vals = [ph[name] for ph in counted if name in ph]
        if vals:
            print(f"  {name:62s} {statistics.median(vals):6.2f}")
    events = statistics.median([ph["events"] for ph in counted])
    print(f"  {'(Dagster event-log writes in those phases: events x ms)':62s} {events * event_ms / 1000:6.2f}"
          f"   {events:.0f} events x {event_ms:.1f} ms")
    print(f"  {'(direct worker command, for comparison)':62s} {dmed:6.2f}")
    print()
    print(f"fixed per study: launcher start-up {startup_s:.2f} s + registration {register_s:.2f} s "
          f"+ partition runners warm {runners_ready_s:.2f} s + efficiency_report run {report_s:.2f} s = {fixed_s:.2f} s")
    print(f"study arm: {len(study_hashes)} experiments x {len(study_rows)} rounds through the pipelined launch "
          f"(materialize_partitions, what `make demo` runs): {study_added:+.2f} s per experiment (median of rounds)")
    print(f"{STUDY_EXPERIMENTS}-experiment study of {STUDY_MEASUREMENT_S:.0f} s measurements: overhead "
          f"{study_overhead_s:.0f} s of {STUDY_EXPERIMENTS * STUDY_MEASUREMENT_S:.0f} s = {pct:.1f} % "
          f"(pipelined study arm; one run at a time, from the pairs: {serial_pct:.1f} %)")
    print(f"targets: added ≤ {TARGET_ADDED_S} s: {'holds' if med <= TARGET_ADDED_S else 'MISSED'}; "
          f"share ≤ {TARGET_PCT:.0f} %: {'holds' if pct <= TARGET_PCT else 'MISSED'}")
    print(f"RESULT added_s_per_experiment={med:.2f} added_iqr_s={q3 - q1:.2f} fixed_s_per_study={fixed_s:.2f} "
          f"overhead_pct_30s_study={pct:.2f} study_added_s_per_experiment={study_added:.2f} "
          f"overhead_pct_30s_serial={serial_pct:.2f} pairs={len(rows)} study_runs={len(study_hashes)}x{len(study_rows)}")
    return 0


PHASES = (
    "execute_job call -> RUN_START (run record, plan, planned events)",
    "RUN_START -> GPU step starts (executor; step process if any)",
    "GPU step: body (allocator, Pipes, guard + worker, outputs)",
    "GPU step end -> CPU step starts",
    "CPU step: body (one DuckDB transaction, 7 checks, chart)",
    "CPU step end -> execute_job returns (executor exit)",
)
GPU_STEP, CPU_STEP = "gpu_measurement", "store_results"


def _phases(instance, run_id: str, wall0: float, wall1: float) -> dict[str, float]:
    """Return {phase name: seconds} of one measure_experiments run from its event log (see PHASES), plus
    "events": the number of events the run stored."""
    first: dict[tuple[str | None, str], float] = {}
    last: dict[tuple[str | None, str], float] = {}
    logs = instance.all_logs(run_id)
    for e in logs:
        if e.dagster_event is None:
            continue
        k = (e.step_key, e.dagster_event.event_type_value)
        first.setdefault(k, e.timestamp)
        last[k] = e.timestamp
    marks = [
        wall0,
        first.get((None, "PIPELINE_START")),
        first.get((GPU_STEP, "STEP_START")),
        last.get((GPU_STEP, "STEP_SUCCESS")),
        first.get((CPU_STEP, "STEP_START")),
        last.get((CPU_STEP, "STEP_SUCCESS")),
        wall1,
    ]
    out: dict[str, float] = {"events": float(len(logs))}
    for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True):
        if a is not None and b is not None:
            out[name] = b - a
    return out


def _event_write_ms(instance, n: int = 30) -> float:
    """Return the mean wall time, ms, of storing one event in this instance's event log (``n`` engine
    events on a scratch run; SQLite commits on the DAGSTER_HOME disk)."""
    import dagster as dg

    @dg.op
    def _noop() -> None:
        return None

    @dg.job
    def _event_probe() -> None:
        _noop()

    run = instance.create_run_for_job(_event_probe)
    for i in range(3):  # the run's first event creates its SQLite shard: not part of the per-event cost
        instance.report_engine_event(f"event-write probe warm-up {i}", run)
    t = time.perf_counter()
    for i in range(n):
        instance.report_engine_event(f"event-write probe {i}", run)
    ms = (time.perf_counter() - t) / n * 1000.0
    instance.delete_run(run.run_id)
    return ms


STEP_ASSETS = (GPU_STEP, CPU_STEP)


def _role(cmd: str, tags: set[str]) -> str:
    """Return the role of one sampled process from its command line and the functions seen in its stacks."""
    if "guard" in cmd:
        return "guard (python -m ...guard)"
    if "llem_pipeline.measure" in cmd:
        return "worker command (python -m llem_pipeline.measure)"
    steps = sorted(tags & set(STEP_ASSETS))
    if steps:
        return "Dagster step process: " + ",".join(steps)
    if "engine" in tags:
        return "engine process (spawned by the worker)"
    return "run launcher (execute_job, executor)"


def _profile_one_run(tmp: Path, config_hash: str, run_date: str) -> None:
    """Record one measure_experiments run with ``py-spy record --subprocesses``; print CPU-s per process role."""
    import re
    from collections import Counter, defaultdict

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("(--profile: py-spy is not installed: .venv/bin/pip install -e '.[bench]')")
        return
    raw, rate = tmp / "profile.txt", 50
    code = ("import sys; from llem_pipeline.defs.automation import launching; "
            f"sys.exit(0 if launching._run_one({run_date!r}, {config_hash!r}, {{}}).success else 1)")
    proc = subprocess.run([pyspy, "record", "--subprocesses", "--rate", str(rate), "--format", "raw", "-o", str(raw),
                           "--", sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not raw.is_file():
        print(f"(--profile: py-spy failed: {proc.stderr.strip()[-300:]})")
        return
    per_pid: dict[str, dict] = defaultdict(lambda: {"n": 0, "imports": 0, "defs": 0, "cmd": "", "tags": set(),
                                                   "modules": Counter()})
    for line in raw.read_text().splitlines():
        stack, _, n_str = line.rpartition(" ")
        if not stack:
            continue
        n = int(n_str)
        frames = stack.split(";")
        last = max(i for i, f in enumerate(frames) if f.startswith("process "))
        m = re.match(r'process (\d+):"?(.*)', frames[last])
        pid, cmd = (m.group(1), m.group(2)) if m else ("?", frames[last])
        own = ";".join(frames[last + 1:])
        d = per_pid[pid]
        d["n"] += n
        d["cmd"] = cmd
        d["tags"].update(a for a in STEP_ASSETS if f"{a} (" in own)
        if "_process_main" in own:
            d["tags"].add("engine")
        if "_find_and_load" in own:
            d["imports"] += n
            mods = [m for m in re.findall(r"<module> \(([^/:]+)", own) if not m.startswith("<")]
            d["modules"][mods[0] if mods else "?"] += n
        elif "load_from_defs_folder" in own or "resolve_job_def" in own:
            d["defs"] += n
    roles: dict[str, list] = defaultdict(lambda: [0, 0, 0, 0, Counter()])
    for d in per_pid.values():
        r = roles[_role(d["cmd"], d["tags"])]
        r[0] += 1
        r[1] += d["n"]
        r[2] += d["imports"]
        r[3] += d["defs"]
        r[4].update(d["modules"])
    total = sum(r[1] for r in roles.values())
    print()
    print(f"py-spy profile of one Dagster run ({rate} Hz, CPU samples of every process; sampling slows the "
          f"processes, so read shares): {total / rate:.1f} CPU-s")
    print(f"  {'process role':62s} {'procs':>5s} {'CPU-s':>6s} {'imports':>8s} {'build defs':>10s}  top imports")
    for name, (procs, n, imp, dfs, mods) in sorted(roles.items(), key=lambda kv: -kv[1][1]):
        top = ", ".join(f"{k} {v / rate:.1f}" for k, v in mods.most_common(3))
        print(f"  {name:62s} {procs:5d} {n / rate:6.1f} {imp / rate:8.1f} {dfs / rate:10.1f}  {top}")


if __name__ == "__main__":
    sys.exit(main())
