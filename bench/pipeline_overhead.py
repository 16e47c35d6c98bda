"""Orchestration overhead per experiment: the worker command alone vs `llem run` without and with a daemon.

Everything lives in a temp folder: data dir, DuckDB file, a studies folder with one study ``bench`` (N
configs of one tiny-model workload under different prompt seeds) and a persistent Dagster instance
(DAGSTER_HOME with a copy of the project's ``.dagster_home/dagster.yaml``: SQLite, pool "gpu" limit 1, the run
queue checking every second). LLEM_DEVICES=simulated. Each round runs three arms, in rotating order:

- direct: the N configs as worker commands, one after another (``python -m llem_pipeline.measure --config …
  --devices simulated --out …``, with the baseline cache the GPU step passes): the work without orchestration;
- in-process: ``llem run bench --in-process`` — what ``make demo`` does: ``dg.execute_job`` per run in one
  process (GPU step through Pipes and the guard, then the store step into DuckDB);
- queue: ``llem run bench --queue`` with ``dagster-daemon run`` running — the study_launches sensor hands the
  runs to the run queue, which launches each (a run worker process per run) as pool "gpu" frees its slot.

Per experiment, the pipeline's steady cost is measured between runs, so a study's one-off start (imports,
registration, the report) does not hide in it: added_s = (end of the last run − end of the first) / (N − 1)
− the direct arm's median per experiment. The one-off cost per study is printed beside it (fixed_s: the
arm's wall time − N × its steady per-experiment time).

    .venv/bin/python bench/pipeline_overhead.py [--configs 4] [--rounds 2] [--n 8] [--keep]

Ends with ``RESULT added_s_per_experiment=… queue_added_s_per_experiment=… …`` (targets: ≤ 1.5 s without a
daemon, ≤ 3 s through the queue). Exits 1 when it could not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_ADDED_S = 1.5
TARGET_QUEUE_ADDED_S = 3.0
STUDY = """\
name: bench
description: bench/pipeline_overhead.py — one tiny-model workload under {configs} prompt seeds.
base:
  model: "llem:tiny"
  backend: pytorch
  n: {n}
  dataset: builtin
  max_input_tokens: 32
  max_output_tokens: 16
  fixed_output_length: true
  precision: fp32
  warmup: {{mode: fixed, n_warmup: 1, thermal_floor_seconds: 0}}
  baseline: {{duration_seconds: 1, cache_ttl_seconds: 3600}}
  energy: {{sample_interval_ms: 50, methodology: total}}
  pytorch: {{batch_size: 4}}
sweep:
  random_seed: [{seeds}]
"""


def _env(tmp: Path) -> dict[str, str]:
    """Return the environment of every arm: all llem and Dagster paths under ``tmp``."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(tmp / "dagster_home"),
        "LLEM_DATA_DIR": str(tmp / "data"),
        "LLEM_DUCKDB": str(tmp / "data" / "llem.duckdb"),
        "LLEM_STUDIES_DIR": str(tmp / "studies"),
        "LLEM_DEVICES": "simulated",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def _setup(tmp: Path, configs: int, n: int) -> None:
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    (tmp / "studies").mkdir()
    seeds = ", ".join(str(100 + i) for i in range(configs))
    (tmp / "studies" / "bench.yaml").write_text(STUDY.format(configs=configs, n=n, seeds=seeds), encoding="utf-8")


def direct_arm(tmp: Path, env: dict[str, str], round_no: int) -> list[float]:
    """Run every config of the study as the worker command, one after another; return each wall time, s."""
    sys.path.insert(0, str(ROOT))
    from llem_pipeline.defs.experiments.registry import scan_studies

    plan = scan_studies(tmp / "studies").plans["bench"]
    times = []
    for i, config in enumerate(plan.experiments):
        cfg = tmp / f"direct-{round_no}-{i}.json"
        cfg.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
        out = tmp / "direct" / f"r{round_no}" / f"c{i}"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "llem_pipeline.measure", "--config", str(cfg), "--devices", "simulated",
             "--out", str(out), "--timeout", "600", "--quiet",
             "--baseline-cache", str(tmp / "data" / "baseline_cache.json")],
            env=env, capture_output=True, text=True, cwd=ROOT,
        )
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed: {proc.stderr[-400:]}")
    return times


def _run_ends(env: dict[str, str], launch_prefix: str) -> list[float]:
    """Return the end times (epoch s) of the finished runs of the launches starting with ``launch_prefix``."""
    code = (
        "import dagster as dg, json, sys\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    recs = i.get_run_records(filters=dg.RunsFilter(job_name='measure_experiments'))\n"
        f"    ends = [r.end_time for r in recs if r.dagster_run.tags.get('llem/launch', '').startswith({launch_prefix!r})"
        " and r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]\n"
        "    print(json.dumps(sorted(e for e in ends if e)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def llem_run_arm(env: dict[str, str], run_date: str, mode: str) -> tuple[float, list[float], str]:
    """Run ``llem run bench --<mode> --date run_date``; return (wall s, run end times, launch id)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llem_pipeline.cli", "run", "bench", f"--{mode}", "--date", run_date],
                          env=env, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"llem run --{mode} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    launch = next(w for w in proc.stdout.split() if w.startswith("bench-"))
    return wall, _run_ends(env, launch), launch


class Daemon:
    """``dagster-daemon run`` for the bench's instance, started and stopped by PID (its process group)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.proc = env, log, None

    def __enter__(self) -> Daemon:
        daemon = Path(sys.executable).with_name("dagster-daemon")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(daemon), "run", "-w", "workspace.yaml"], cwd=ROOT, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        code = ("import dagster as dg, time\nfrom llem_pipeline.defs.automation.launching import daemon_running\n"
                "with dg.DagsterInstance.get() as i:\n    print(daemon_running(i))\n")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, cwd=ROOT)
            if out.stdout.strip().endswith("True"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited: {self.log.read_text()[-1500:]}")
            time.sleep(2)
        raise RuntimeError(f"dagster-daemon sent no heartbeat within 240 s: {self.log.read_text()[-1500:]}")

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=20)
                return
            except subprocess.TimeoutExpired:
                continue


def steady_per_experiment(ends: list[float]) -> float:
    """Return the time between consecutive run ends, s per experiment: (last − first) / (runs − 1)."""
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def main() -> int:
    """Run the arms; print the table and the RESULT line; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=4, help="experiments per study (≥ 2)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the three arms")
    ap.add_argument("--n", type=int, default=8, help="prompts of each config")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    if args.configs < 2 or args.rounds < 1:
        print("pipeline_overhead: --configs must be ≥ 2 and --rounds ≥ 1", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="llem-pipeline-overhead-"))
    _setup(tmp, args.configs, args.n)
    env = _env(tmp)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    direct: list[float] = []
    inproc: list[tuple[float, float]] = []  # (steady s per experiment, fixed s per study)
    queued: list[tuple[float, float]] = []
    day = date(2026, 11, 2)  # measurement partitions start on 2026-11-01
    try:
        # one untimed warm-up: builds the tiny model, fills the baseline cache, creates the DuckDB file
        llem_run_arm(env, day.isoformat(), "in-process")
        with Daemon(env, tmp / "daemon.log"):
            for r in range(args.rounds):
                arms = ["direct", "in-process", "queue"]
                arms = arms[r % 3:] + arms[:r % 3]
                for arm in arms:
                    day += timedelta(days=1)
                    if arm == "direct":
                        direct += direct_arm(tmp, env, r)
                        continue
                    wall, ends, _ = llem_run_arm(env, day.isoformat(), arm)
                    if len(ends) != args.configs:
                        raise RuntimeError(f"{arm}: {len(ends)} of {args.configs} runs succeeded")
                    steady = steady_per_experiment(ends)
                    (inproc if arm == "in-process" else queued).append((steady, wall - args.configs * steady))
                    print(f"round {r + 1}: {arm}: {wall:.1f} s for {args.configs} runs, {steady:.2f} s per experiment "
                          f"between runs", flush=True)
    except (RuntimeError, subprocess.SubprocessError, StopIteration) as err:
        print(f"pipeline_overhead: could not measure: {err}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    direct_s = statistics.median(direct)
    added = statistics.median(s for s, _ in inproc) - direct_s
    queue_added = statistics.median(s for s, _ in queued) - direct_s
    fixed = statistics.median(f for _, f in inproc)
    queue_fixed = statistics.median(f for _, f in queued)
    print(f"\nTiny model, {args.configs} configs × {args.rounds} rounds, n={args.n}, simulated GPU, pool gpu = 1")
    print("| arm | per experiment, s (median) | added vs direct, s | one-off per study, s | target |")
    print("|---|---|---|---|---|")
    print(f"| worker command | {direct_s:.2f} | | | |")
    print(f"| llem run, no daemon (dg.execute_job) | {direct_s + added:.2f} | {added:+.2f} | {fixed:.1f} "
          f"| ≤ {TARGET_ADDED_S} |")
    print(f"| llem run --queue (daemon, run queue) | {direct_s + queue_added:.2f} | {queue_added:+.2f} | "
          f"{queue_fixed:.1f} | ≤ {TARGET_QUEUE_ADDED_S} |")
    load_after = os.getloadavg()[0]
    print(f"load average (1 min) {load_before:.2f} → {load_after:.2f}; bench wall {time.perf_counter() - started:.0f} s")
    print(f"RESULT added_s_per_experiment={added:.2f} queue_added_s_per_experiment={queue_added:.2f} "
          f"fixed_s_per_study={fixed:.1f} queue_fixed_s_per_study={queue_fixed:.1f} direct_s={direct_s:.2f} "
          f"configs={args.configs} rounds={args.rounds} load1={load_before:.2f}..{load_after:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
