"""Cost of the measurement harness: throughput of ``measure_process`` vs the bare engine loop, same workload.

One process, one loaded tiny-model engine, the same token-id prompts. Pairs run back to back in
alternating order (bare, harness, harness, bare, …):
- bare:    ``engine.run(prompts)``;
- harness: ``measure_process(...)`` with the sampler on (its default 100 ms, all device columns read
  every tick), the energy window's boundary polls, the analysis — everything but model load, warmup
  and baseline, which happen outside the window in both cases.
Throughput on both sides is output tokens / (last token − first submission), i.e. the harness's own
definition of the window. The headline is the median of per-pair ratios harness/bare; cost = 1 − ratio.
The device is a constant-power simulated GPU read through the fake pynvml by ``NvmlDevice`` — the same
NVML code path as on a GPU host.

    .venv/bin/python bench/harness_overhead.py [--pairs 15] [--n 32] [--batch-size 8] [--max-output-tokens 48]

Ends with ``RESULT harness_vs_bare_throughput_ratio=… cost_pct=…`` (target: cost ≤ 1 %). Exits 1 when it
could not measure.
"""

from __future__ import annotations

import argparse
import gc
import os
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
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-output-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--interval-ms", type=float, default=100.0, help="sampler period of the harness side, ms")
    args = ap.parse_args()

    import torch

    from llem_pipeline.domain.config import ExperimentConfig
    from llem_pipeline.engines.model_files import load_tokenizer
    from llem_pipeline.engines.prompts import build_prompt_set
    from llem_pipeline.engines.registry import load_engine
    from llem_pipeline.engines.tiny_model import make_model
    from llem_pipeline.measure.devices.fake_pynvml import install_fake_pynvml
    from llem_pipeline.measure.devices.nvml import close_devices, open_nvml_devices
    from llem_pipeline.measure.devices.simulated import Constant, SimulatedDevice
    from llem_pipeline.measure.harness import measure_process

    torch.set_num_threads(args.threads)
    model_dir = make_model(os.path.join(tempfile.mkdtemp(), "tiny"), "tiny", 0)
    config = ExperimentConfig.model_validate({
        "model": str(model_dir), "n": args.n, "max_input_tokens": 64, "max_output_tokens": args.max_output_tokens,
        "precision": "fp32", "warmup": {"enabled": False}, "baseline": {"enabled": False},
        "pytorch": {"batch_size": args.batch_size}, "energy": {"sample_interval_ms": args.interval_ms},
    })
    tokenizer = load_tokenizer(str(model_dir))
    prompts = build_prompt_set(config, tokenizer)
    engine = load_engine(config, [])

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

    bare_tps: list[float] = []
    harness_tps: list[float] = []
    ratios: list[float] = []
    try:
        with install_fake_pynvml([SimulatedDevice(Constant(250.0), index=0)]):
            devices = open_nvml_devices("0")
            try:
                engine.run(prompts.token_ids)  # one untimed pass: caches, allocator
                for i in range(args.pairs):
                    order = ("bare", "harness") if i % 2 == 0 else ("harness", "bare")
                    got: dict[str, float] = {}
                    for side in order:
                        gc.collect()  # same heap state on both sides: the harness's garbage is not billed to a later run
                        if side == "bare":
                            got[side] = tput(engine.run(prompts.token_ids))
                        else:
                            out = measure_process(
                                config, devices, engine_loader=lambda c, idx: Kept(),
                                tokenizer_loader=lambda c: tokenizer, prompt_builder=lambda c, t: prompts,
                                device_indices=[], experiment_id="bench")
                            got[side] = out.raw.output_tokens / out.raw.inference_time_sec
                    bare_tps.append(got["bare"])
                    harness_tps.append(got["harness"])
                    ratios.append(got["harness"] / got["bare"])
                    print(f"pair {i:2d} ({order[0]:>7} first): bare {got['bare']:8.1f} tok/s   "
                          f"harness {got['harness']:8.1f} tok/s   ratio {ratios[-1]:.4f}", flush=True)
            finally:
                close_devices(devices)
    except Exception as err:  # could not measure
        print(f"bench failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        engine.cleanup()
    if len(ratios) < 3:
        print("too few pairs to measure", file=sys.stderr)
        return 1
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4)
    print()
    print("| side | median tok/s |")
    print("|---|---|")
    print(f"| bare engine loop | {statistics.median(bare_tps):.1f} |")
    print(f"| harness (sampler {args.interval_ms:g} ms + window) | {statistics.median(harness_tps):.1f} |")
    print(f"pair ratio harness/bare: median {ratio:.4f} (IQR {q[0]:.4f}–{q[2]:.4f}, {len(ratios)} pairs); "
          f"cost {100 * (1 - ratio):.2f} % (target ≤ 1 %)")
    print(f"RESULT harness_vs_bare_throughput_ratio={ratio:.4f} cost_pct={100 * (1 - ratio):.2f} pairs={len(ratios)} "
          f"interval_ms={args.interval_ms:g} "
          f"at={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
