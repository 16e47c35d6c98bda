"""Cost of the measurement harness: throughput of ``measure_process`` vs the bare engine loop, same workload.

One process, one loaded tiny-model engine, the same token-id prompts. Each round runs every arm once, in
an order that rotates through all permutations (no arm is always first or last):
- bare:    one warmup batch, then ``engine.run(prompts)``;
- harness arms (``--arms``, default ``process,thread``): ``measure_process(...)`` with the sampler on
  (its default 100 ms, all device columns read every tick) in a process of its own (what NVML GPUs get:
  the headline) or in a thread of the engine process (the design before), the counter calibration, the
  same one-batch warmup, the window's boundary polls, the analysis — everything but model load and
  baseline. Every arm starts its run from a just-warmed engine (``--warmup-batches``, default 1);
- control ``idle`` (add it to ``--arms``): the bare loop after ``--idle-s`` of idling, about what a
  harness arm spends before its warmup. It runs no harness code at all, so its "cost" is the bench's
  own noise floor (the host drifts by about ± 1 % between runs of a few minutes on this machine);
- diagnostic ``nobc``: the process-sampler harness without counter calibration and edge polls
  (``boundary_correction: false``): what the energy boundary work costs around the window.
Throughput on every arm is output tokens / (last token − first submission), i.e. the harness's own
definition of the window. The headline is the median over rounds of the ratio harness/bare of the same
round; cost = 1 − ratio, with a bootstrap 95 % interval of that median: on a shared 2-core machine one
round's ratio scatters by several % (the host), so a few dozen rounds cannot resolve 1 % on their own.
The device is a constant-power simulated GPU read through the fake pynvml by ``NvmlDevice`` — the same
NVML code path as on a GPU host.

Profile of the window. With the sampler in its own process no harness code runs in the engine process
between first submission and last token; the window start's edge polls run in that process too, while
the engine starts. With the sampler in a thread each tick that lands inside a decoding step stretches
that step (the tick takes the GIL; the engine thread blocks and is woken again) and the start's edge
polls hold the engine idle up to one counter period before the run. The excess of a tick's step over
the median of its neighbouring steps, summed per run / run span, is the cost attributed to ticks
(``tick_cost``); the per-step medians (first ``--start-steps`` steps vs the rest) show what a cold start
costs. Their sum (``step_cost``: harness − bare of the summed per-step-index medians over runs) is a
second estimate of the cost, robust to the host's bursts that scatter whole-run ratios.

    .venv/bin/python bench/harness_overhead.py [--pairs 30] [--n 32] [--batch-size 8] [--max-output-tokens 48]
                                               [--arms process,thread[,idle][,nobc]] [--warmup-batches 1]

Ends with ``RESULT harness_vs_bare_throughput_ratio=… cost_pct=… cost_ci95_pct=lo..hi step_cost_pct=…
tick_cost_pct=… sampler=process thread_cost_pct=… …`` (target: cost ≤ 1 %). Exits 1 when it could not
measure.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import random
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    """Run the interleaved pairs; print the table and the RESULT line; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=30, help="rounds: every arm once per round")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-output-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--start-steps", type=int, default=11, help="steps counted as the run's start in the breakdown")
    ap.add_argument("--interval-ms", type=float, default=100.0, help="sampler period of the harness side, ms")
    ap.add_argument("--arms", default="process,thread",
                    help="harness arms, each a sampler mode (process: what NVML GPUs get; thread; auto); the first "
                         "is the headline")
    ap.add_argument("--idle-s", type=float, default=1.5,
                    help="control arm 'idle' (add it to --arms): the bare loop after this long idle, s (about what "
                         "a harness arm spends before its warmup: spawning the sampler, calibrating the counter)")
    ap.add_argument("--warmup-batches", type=int, default=1, help="warmup batches right before every arm's run")
    ap.add_argument("--no-boundary-correction", action="store_true",
                    help="diagnostic: no counter calibration and no edge polls at the window's ends")
    args = ap.parse_args()

    import torch

    from llem_pipeline.domain.config import ExperimentConfig
    from llem_pipeline.engines.model_files import load_tokenizer
    from llem_pipeline.engines.prompts import build_prompt_set, warmup_prompts
    from llem_pipeline.engines.registry import load_engine
    from llem_pipeline.engines.tiny_model import make_model
    from llem_pipeline.measure.devices.fake_pynvml import install_fake_pynvml
    from llem_pipeline.measure.devices.nvml import close_devices, open_nvml_devices
    from llem_pipeline.measure.devices.simulated import Constant, SimulatedDevice
    from llem_pipeline.measure.harness import measure_process
    from llem_pipeline.measure.warmup import run_warmup

    torch.set_num_threads(args.threads)
    model_dir = make_model(os.path.join(tempfile.mkdtemp(), "tiny"), "tiny", 0)
    config = ExperimentConfig.model_validate({
        "model": str(model_dir), "n": args.n, "max_input_tokens": 64, "max_output_tokens": args.max_output_tokens,
        "precision": "fp32", "baseline": {"enabled": False},
        # warmup as in production, right before the window (one batch: the bench stays short); the bare side runs
        # the same warmup before its run, so both runs start from a just-warmed engine
        "warmup": {"enabled": True, "mode": "fixed", "n_warmup": args.batch_size * args.warmup_batches,
                   "thermal_floor_seconds": 0},
        "pytorch": {"batch_size": args.batch_size},
        "energy": {"sample_interval_ms": args.interval_ms, "boundary_correction": not args.no_boundary_correction},
    })
    no_bc = config.model_copy(update={"energy": config.energy.model_copy(update={"boundary_correction": False})})
    tokenizer = load_tokenizer(str(model_dir))
    prompts = build_prompt_set(config, tokenizer)
    engine = load_engine(config, [])
    warm = warmup_prompts(prompts, config.warmup.n_warmup)

    class Kept:  # the harness cleans its engine up; keep ours loaded across pairs
        info = engine.info

        def warmup(self, p):
            return engine.warmup(p)

        def run(self, p):
            return engine.run(p)

        def peak_memory_mb(self):
            return engine.peak_memory_mb()

        def cleanup(self):
            return None

    def tput(records) -> float:
        span = max(r.done_time_s for r in records) - min(r.submit_time_s for r in records)
        return sum(r.output_tokens for r in records) / span

    arms = ["bare", *args.arms.split(",")]
    orders = list(itertools.permutations(arms))  # every order once per len(orders) rounds: no arm always first
    tps: dict[str, list[float]] = {a: [] for a in arms}
    ratios: dict[str, list[float]] = {a: [] for a in arms[1:]}  # harness arm / bare, same round
    step_times: dict[str, list[list[float]]] = {a: [] for a in arms}  # per run: every step's duration, s
    tick_excess: dict[str, list[float]] = {a: [] for a in arms[1:]}  # s a tick adds to its decoding step
    ticks_in_window: dict[str, list[int]] = {a: [] for a in arms[1:]}
    span: dict[str, list[float]] = {a: [] for a in arms[1:]}
    modes: dict[str, str] = {}
    load_before = os.getloadavg()
    try:
        with install_fake_pynvml([SimulatedDevice(Constant(250.0), index=0)]):
            devices = open_nvml_devices("0")
            try:
                engine.run(prompts.token_ids)  # one untimed pass: caches, allocator
                for i in range(args.pairs):
                    order = orders[i % len(orders)]
                    got: dict[str, float] = {}
                    for arm in order:
                        gc.collect()  # same heap state on every arm: a harness's garbage is not billed to a later run
                        if arm in ("bare", "idle"):
                            if arm == "idle":  # control: idle as long as a harness arm before its warmup
                                time.sleep(args.idle_s)
                            run_warmup(engine, warm, config.warmup, batch_size=args.batch_size)
                            records = engine.run(prompts.token_ids)
                            got[arm] = tput(records)
                            step_times[arm].append(step_durations(records))
                            if arm == "idle":  # no sampler: no ticks
                                modes[arm] = "control"
                                ticks_in_window[arm].append(0)
                                span[arm].append(sum(r.output_tokens for r in records) / got[arm])
                            continue
                        arm_config, mode = config, arm
                        if arm == "nobc":  # diagnostic: process sampler, no calibration and no edge polls
                            arm_config, mode = no_bc, "process"
                        out = measure_process(
                            arm_config, devices, engine_loader=lambda c, idx: Kept(),
                            tokenizer_loader=lambda c: tokenizer, prompt_builder=lambda c, t: prompts,
                            device_indices=[], experiment_id="bench", sampler_mode=mode)
                        modes[arm] = out.sampler_mode
                        got[arm] = out.raw.output_tokens / out.raw.inference_time_sec
                        excess, n_ticks = tick_excess_s(out.requests, out.samples["t_mono_s"])
                        tick_excess[arm].extend(excess)
                        step_times[arm].append(step_durations(out.requests))
                        ticks_in_window[arm].append(n_ticks)
                        span[arm].append(out.raw.inference_time_sec)
                    for arm in arms:
                        tps[arm].append(got[arm])
                    for arm in arms[1:]:
                        ratios[arm].append(got[arm] / got["bare"])
                    print(f"round {i:3d} ({' > '.join(order)}): " + "   ".join(
                        f"{a} {got[a]:7.1f} tok/s" + (f" ({got[a] / got['bare']:.4f})" if a != "bare" else "")
                        for a in arms), flush=True)
            finally:
                close_devices(devices)
    except Exception as err:  # could not measure
        print(f"bench failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        engine.cleanup()
    if args.pairs < 3:
        print("too few rounds to measure", file=sys.stderr)
        return 1
    load_after = os.getloadavg()
    print()
    print(f"Tiny model, n={args.n}, batch {args.batch_size}, {args.max_output_tokens} output tokens; NVML path on a "
          f"simulated GPU (fake pynvml); sampler every {args.interval_ms:g} ms; {args.pairs} rounds, arms in rotating order")
    print("| arm | median tok/s | ratio to bare: median (IQR) | bootstrap 95 % CI | cost | step cost | tick cost |")
    print("|---|---|---|---|---|---|---|")
    print(f"| bare engine loop | {statistics.median(tps['bare']):.1f} | | | | | |")
    figures: dict[str, dict[str, float]] = {}
    for arm in arms[1:]:
        r = ratios[arm]
        q = statistics.quantiles(r, n=4)
        lo, hi = bootstrap_median_ci(r)
        per_tick = statistics.fmean(tick_excess[arm]) if tick_excess[arm] else 0.0
        tick_cost = per_tick * statistics.fmean(ticks_in_window[arm]) / statistics.fmean(span[arm])
        start_pct, rest_pct = start_vs_rest_pct(step_times["bare"], step_times[arm], args.start_steps)
        figures[arm] = {"ratio": statistics.median(r), "lo": lo, "hi": hi, "tick": 100 * tick_cost,
                        "per_tick_ms": 1e3 * per_tick, "ticks": statistics.fmean(ticks_in_window[arm]),
                        "start": start_pct, "rest": rest_pct}
        f = figures[arm]
        label = {"idle": f"bare loop after {args.idle_s:g} s idle",
                 "nobc": "harness, process sampler, no counter calibration or edge polls"}.get(
            arm, f"harness, sampler in a {modes[arm]}")
        print(f"| {label} | {statistics.median(tps[arm]):.1f} | {f['ratio']:.4f} "
              f"({q[0]:.4f}–{q[2]:.4f}) | {lo:.4f}–{hi:.4f} | {100 * (1 - f['ratio']):.2f} % "
              f"| {start_pct + rest_pct:+.3f} % | {f['tick']:.3f} % |")
    print("cost = 1 − median ratio (target ≤ 1 %). step cost = harness − bare of the summed per-step-index medians "
          f"over runs, % of bare (first {args.start_steps} steps + the rest). tick cost = what sampler ticks inside "
          "the window add to their decoding steps, % of the window.")
    for arm in arms[1:]:
        f = figures[arm]
        print(f"  {arm}: {f['ticks']:.2f} ticks in the window, each adding {f['per_tick_ms']:.3f} ms to its step; "
              f"steps: first {args.start_steps} {f['start']:+.3f} %, rest {f['rest']:+.3f} %")
    print(f"load average (1/5/15 min) before {fmt_load(load_before)}, after {fmt_load(load_after)}")
    head = figures[arms[1]]
    extra = "".join(
        f" {arm}_cost_pct={100 * (1 - figures[arm]['ratio']):.2f} {arm}_step_cost_pct={figures[arm]['start'] + figures[arm]['rest']:.3f}"
        f" {arm}_tick_cost_pct={figures[arm]['tick']:.3f}" for arm in arms[2:])
    print(f"RESULT harness_vs_bare_throughput_ratio={head['ratio']:.4f} cost_pct={100 * (1 - head['ratio']):.2f} "
          f"cost_ci95_pct={100 * (1 - head['hi']):.2f}..{100 * (1 - head['lo']):.2f} "
          f"step_cost_pct={head['start'] + head['rest']:.3f} tick_cost_pct={head['tick']:.3f} sampler={modes[arms[1]]}"
          f"{extra} rounds={args.pairs} n={args.n} interval_ms={args.interval_ms:g} "
          f"load1={load_before[0]:.2f}..{load_after[0]:.2f} at={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


def fmt_load(load: tuple[float, float, float]) -> str:
    """Return the load averages as '1m/5m/15m'."""
    return "/".join(f"{x:.2f}" for x in load)


def bootstrap_median_ci(values: list[float], n_boot: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Return the (2.5 %, 97.5 %) percentile bootstrap interval of the median of ``values`` (same unit)."""
    rng = random.Random(seed)
    k = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=k)) for _ in range(n_boot))
    return meds[int(0.025 * n_boot)], meds[int(0.975 * n_boot) - 1]


def step_durations(records) -> list[float]:
    """Return every step's duration of one run, s, in order: per batch (by submission) its prefill
    (submission → first token) and then each decoding step (token k−1 → token k)."""
    batches: dict[float, object] = {}
    for r in records:
        batches.setdefault(r.submit_time_s, r)
    out: list[float] = []
    for submit in sorted(batches):
        t = [submit, *batches[submit].token_times_s]
        out.extend(b - a for a, b in itertools.pairwise(t))
    return out


def start_vs_rest_pct(bare: list[list[float]], harness: list[list[float]], k: int) -> tuple[float, float]:
    """Return (first k steps, the other steps): harness − bare of the summed per-step-index medians over
    runs, % of the bare run's summed medians. Runs whose step count differs from the first are left out."""
    import numpy as np

    n = len(bare[0])
    b = np.median(np.array([r for r in bare if len(r) == n]), axis=0)
    h = np.median(np.array([r for r in harness if len(r) == n]), axis=0)
    total = float(b.sum())
    return 100 * float(h[:k].sum() - b[:k].sum()) / total, 100 * float(h[k:].sum() - b[k:].sum()) / total


def tick_excess_s(records, tick_times_s, neighbours: int = 6) -> tuple[list[float], int]:
    """Return (excess s per tick inside a decoding step, ticks inside the window) for one harness run.

    Steps are the intervals between consecutive token timestamps of each batch (HF engine: one
    timestamp per decoding step, shared by the batch). A decoding step that contains a tick exceeds the
    median of up to ``neighbours`` steps on each side by the excess, s (negative excesses, i.e. noise,
    are kept). The count is of every tick inside the window (first submission → last token), prefill
    steps and gaps between batches included.
    """
    import numpy as np

    ticks = np.asarray(tick_times_s, dtype=np.float64)
    t_sub = min(r.submit_time_s for r in records)
    t_done = max(r.done_time_s for r in records)
    in_window = int(np.count_nonzero((ticks >= t_sub) & (ticks <= t_done)))
    batches: dict[float, object] = {}
    for r in records:
        batches.setdefault(r.submit_time_s, r)
    excess: list[float] = []
    for r in batches.values():
        t = np.asarray(r.token_times_s, dtype=np.float64)
        if len(t) < 3:
            continue
        d = np.diff(t)
        for k in range(len(d)):
            if np.any((ticks > t[k]) & (ticks <= t[k + 1])):
                near = np.r_[d[max(0, k - neighbours):k], d[k + 1:k + 1 + neighbours]]
                excess.append(float(d[k] - np.median(near)))
    return excess, in_window


if __name__ == "__main__":
    sys.exit(main())
