"""Cost of per-token timing in the transformers engine: timed engine path vs plain ``model.generate``.

Both sides run the same model object on the same token-id prompts (built-in set, left-padded batches,
greedy, fixed output length), interleaved plain/timed/plain/timed… batch by batch (order alternating), so drift and
noise from other load hit both alike. The plain side is a bare loop: pad, ``generate()``, ``tolist()``.
The timed side is the engine's per-batch path (``TransformersEngine._run_batch``: per-step clock hook +
a RequestRecord per request). A round is one pass over all prompts on each side; its throughput is
output tokens / summed batch wall s. The headline ratio is the median over all back-to-back batch pairs
of plain time / timed time (same tokens, so = throughput ratio timed/plain); cost = 1 − ratio. A direct
estimate follows: the hook's and RequestRecord's own time per step, over the plain step time.

    .venv/bin/python bench/engine_timing.py [--size tiny|small] [--rounds 15] [--threads 1]

Ends with ``RESULT timed_vs_plain_throughput_ratio=… cost_pct=… direct_cost_pct=…`` (target: cost ≤ 2 %). Exits 1 when it
could not measure (an error, or token counts differing between the two sides).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    """Run the interleaved comparison; print the table and the RESULT line; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--n", type=int, default=32, help="prompts per pass")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-output-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps a shared box steadier)")
    args = ap.parse_args()

    import torch

    from llem_pipeline.domain.config import ExperimentConfig
    from llem_pipeline.engines.model_files import load_tokenizer
    from llem_pipeline.engines.prompts import build_prompt_set
    from llem_pipeline.engines.tiny_model import default_tiny_model_dir, make_model
    from llem_pipeline.engines.transformers_engine import load_transformers_engine

    torch.set_num_threads(args.threads)
    model_dir = make_model(default_tiny_model_dir().parent / f"{args.size}-llama", args.size, 0)
    cfg = ExperimentConfig(
        model=str(model_dir), n=args.n, max_input_tokens=128, max_output_tokens=args.max_output_tokens,
        precision="fp32", pytorch={"batch_size": args.batch_size},
    )
    prompts = build_prompt_set(cfg, load_tokenizer(str(model_dir))).token_ids
    engine = load_transformers_engine(cfg, [])
    model, kwargs, pad = engine.model, engine.generate_kwargs, engine.pad_id

    batches = [(s, prompts[s : s + args.batch_size]) for s in range(0, len(prompts), args.batch_size)]

    def plain(first: int, batch: list[list[int]]) -> int:
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, p in enumerate(batch):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        return sum(len(r) for r in out[:, width:].tolist())

    def timed(first: int, batch: list[list[int]]) -> int:
        records, _ = engine._run_batch(batch, first)  # the engine's per-batch path: clock hook + RequestRecords
        return sum(r.output_tokens for r in records)

    for fn in (plain, timed):  # warm both paths
        fn(*batches[0])
    print(f"engine timing cost: preset={args.size} n={args.n} batch={args.batch_size} "
          f"out={args.max_output_tokens} threads={args.threads} rounds={args.rounds} (interleaved per batch)")
    print(f"{'round':>5} {'plain tok/s':>12} {'timed tok/s':>12} {'timed/plain':>12}")
    ratios, plain_tps, timed_tps, pair_ratios = [], [], [], []
    for i in range(args.rounds):
        spent = {"plain": 0.0, "timed": 0.0}
        tokens = {"plain": 0, "timed": 0}
        for j, (first, batch) in enumerate(batches):
            order = (plain, timed) if (i + j) % 2 == 0 else (timed, plain)
            pair = {}
            for fn in order:
                t0 = time.perf_counter()
                n_tokens = fn(first, batch)
                pair[fn.__name__] = time.perf_counter() - t0
                spent[fn.__name__] += pair[fn.__name__]
                if n_tokens != len(batch) * args.max_output_tokens:
                    print(f"{fn.__name__} produced {n_tokens} tokens for a batch of {len(batch)}: cannot compare", file=sys.stderr)
                    return 1
                tokens[fn.__name__] += n_tokens
            pair_ratios.append(pair["plain"] / pair["timed"])  # same tokens: time ratio = throughput ratio
        tps = {k: tokens[k] / spent[k] for k in spent}
        plain_tps.append(tps["plain"])
        timed_tps.append(tps["timed"])
        ratios.append(tps["timed"] / tps["plain"])
        print(f"{i:>5} {tps['plain']:>12.1f} {tps['timed']:>12.1f} {ratios[-1]:>12.4f}")
    # Direct cost of what the timed path adds: one hook call per step, one RequestRecord per request.
    from llem_pipeline.domain.requests import RequestRecord
    from llem_pipeline.engines.transformers_engine import _step_clock_class

    clock = _step_clock_class()(None)
    ids4 = torch.zeros((args.batch_size, 8), dtype=torch.long)
    reps = 20000
    t0 = time.perf_counter()
    for _ in range(reps):
        clock(ids4, None)
    hook_s = (time.perf_counter() - t0) / reps
    times = [float(k) for k in range(args.max_output_tokens)]
    t0 = time.perf_counter()
    for k in range(2000):
        RequestRecord(request_index=k, input_tokens=100, output_tokens=len(times), submit_time_s=0.0,
                      first_token_time_s=times[0], token_times_s=times, done_time_s=times[-1], finish_reason="length")
    record_s = (time.perf_counter() - t0) / 2000
    engine.cleanup()
    plain_step_s = 1.0 / statistics.median(plain_tps) * args.batch_size  # wall s per decoding step of a batch
    direct_pct = (hook_s + record_s * args.batch_size / args.max_output_tokens) / plain_step_s * 100
    ratio = statistics.median(pair_ratios)
    round_ratio = statistics.median(ratios)
    q = statistics.quantiles(pair_ratios, n=4)
    print(f"median plain {statistics.median(plain_tps):.1f} tok/s, timed {statistics.median(timed_tps):.1f} tok/s; "
          f"round ratio median {round_ratio:.4f}; per-batch pair ratio median {ratio:.4f} "
          f"(IQR {q[0]:.4f}-{q[2]:.4f}, {len(pair_ratios)} pairs)")
    print(f"direct: hook {hook_s * 1e6:.2f} us/step, RequestRecord {record_s * 1e6:.1f} us/request, "
          f"plain step {plain_step_s * 1e3:.2f} ms -> estimated cost {direct_pct:.3f} %")
    cost = (1 - ratio) * 100
    print(f"target cost <= 2 %: {'met' if cost <= 2 else 'NOT met'}")
    print(f"RESULT timed_vs_plain_throughput_ratio={ratio:.4f} cost_pct={cost:.2f} "
          f"direct_cost_pct={direct_pct:.3f} preset={args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
