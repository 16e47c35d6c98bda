"""Per-request and per-phase energy: our attribution against the proportional method, on known answers.

A scripted continuous-batching workload (llem_pipeline/measure/devices/serving_sim.py) runs on the
simulated device's phase model (a prefill draws a different power than a decode), so every request's
true energy and the run's true prefill energy are known exactly. The device is sampled like the
sampler does (power read at ticks ``interval`` apart with ±10 % jitter, on a fake clock); the window
energy handed to the attribution is the device's exact energy over the span (what the energy counter
measures; its own accuracy is bench/energy_accuracy.py's subject). Then:

- ours: llem_pipeline.measure.attribution.attribute (interval split, weights fitted per run);
- proportional: window J / output tokens × the request's output tokens (a steady J/token × length).

The last scenario makes a decode step of n requests cost n^0.7 tokens' worth (a token decoded in a larger
batch costs less), which the attribution's linear model does not share: it shows how far a misfit model
carries.

Per-request error = |estimate − truth| / truth. The RESULT line reports, for the main scenario (mixed
prompt lengths 16-4096 tokens, outputs 16-512, max_num_seqs 16, 10 Hz sampling), the 95th percentile
over requests of each method's error, and the relative error of the run's prefill energy. Exits 1 when
nothing could be measured.

    .venv/bin/python bench/attribution_accuracy.py
"""

from __future__ import annotations

import sys

import numpy as np

from llem_pipeline.measure.attribution import DeviceTrace, RequestTimes, attribute, proportional
from llem_pipeline.measure.devices.serving_sim import ServedWorkload, mixed_workload, serve
from llem_pipeline.measure.devices.simulated import FakeClock, SimulatedDevice

SCENARIOS = (  # (name, requests, prompt range, output range, max_num_seqs, sample interval s, seed, decode exponent)
    ("mixed prompts, 10 Hz (main)", 300, (16, 4096), (16, 512), 16, 0.1, 1, 1.0),
    ("mixed prompts, 20 Hz", 300, (16, 4096), (16, 512), 16, 0.05, 2, 1.0),
    ("mixed prompts, batch 64, 10 Hz", 400, (16, 4096), (16, 512), 64, 0.1, 3, 1.0),
    ("uniform prompts (512), 10 Hz", 300, (512, 512), (16, 512), 16, 0.1, 4, 1.0),
    ("mixed, non-linear decode (n^0.7)", 300, (16, 4096), (16, 512), 16, 0.1, 5, 0.7),
)


def sample(work: ServedWorkload, interval_s: float, seed: int) -> DeviceTrace:
    """Return the device's power read at jittered ticks over the workload's span (s, W), as the sampler takes it."""
    clock = FakeClock(0.0)
    device = SimulatedDevice(work.model, clock=clock, start_s=0.0, idle_w=work.model.idle_w)
    rng = np.random.default_rng(seed)
    a, b = work.span_s
    t = a - interval_s
    ts, ps = [], []
    while t < b + interval_s:
        clock.set(t)
        ts.append(t)
        ps.append(device.read().power_w)
        t += interval_s * (1.0 + rng.uniform(-0.1, 0.1))
    return DeviceTrace(0, 0, np.array(ts), np.array(ps), baseline_w=work.model.idle_w)


def run(name: str, n: int, prompts: tuple[int, int], outputs: tuple[int, int], seqs: int, interval_s: float,
        seed: int, exponent: float) -> dict[str, float]:
    """Return the scenario's figures (errors in %, energies J)."""
    work = serve(mixed_workload(n, seed=seed, prompt_range=prompts, output_range=outputs), max_num_seqs=seqs,
                 decode_exponent=exponent)
    trace = sample(work, interval_s, seed)
    reqs = [RequestTimes(0, r.index, r.input_tokens, r.output_tokens, r.submit_s, r.first_token_s, r.token_times_s)
            for r in work.requests]
    a, b = work.span_s
    window_j = work.model.cumulative_j(b) - work.model.cumulative_j(a)
    got = attribute(reqs, [trace], window_energy_j={0: window_j}, spans={0: (a, b)})
    truth = np.array([r.energy_j for r in work.requests])
    ours = np.array([r.energy_j for r in got.requests])
    prop = proportional(reqs, window_j)
    err_ours = np.abs(ours - truth) / truth * 100
    err_prop = np.abs(prop - truth) / truth * 100
    true_prefill = sum(r.prefill_j for r in work.requests)
    return {
        "name": name, "requests": n, "interval_ms": interval_s * 1000, "ratio": got.weights.ratio,
        "true_ratio": work.model.prefill_j_per_token / work.model.decode_j_per_token, "method": got.weights.method,
        "ours_mean": float(err_ours.mean()), "ours_p95": float(np.percentile(err_ours, 95)), "ours_max": float(err_ours.max()),
        "prop_mean": float(err_prop.mean()), "prop_p95": float(np.percentile(err_prop, 95)), "prop_max": float(err_prop.max()),
        "phase_err": abs(got.prefill_energy_j - true_prefill) / true_prefill * 100,
        "true_prefill_share": true_prefill / float(truth.sum()), "prefill_share": got.prefill_share or 0.0,
        "window_j": window_j, "idle_j": got.idle_energy_j,
    }


def phases_apart(n: int = 64, seed: int = 6) -> dict[str, float]:
    """Return the direct prefill measurement of an engine that runs the phases apart: all ``n`` requests arrive at
    once and fit the batch, so one prefill step runs, then decode steps (J, %)."""
    work = serve(mixed_workload(n, seed=seed, rate_per_s=1e6, prompt_range=(16, 4096), output_range=(16, 512)),
                 max_num_seqs=n)
    trace = sample(work, 0.1, seed)
    reqs = [RequestTimes(0, r.index, r.input_tokens, r.output_tokens, r.submit_s, r.first_token_s, r.token_times_s)
            for r in work.requests]
    a, b = work.span_s
    window_j = work.model.cumulative_j(b) - work.model.cumulative_j(a)
    got = attribute(reqs, [trace], window_energy_j={0: window_j}, spans={0: (a, b)})
    true_prefill = sum(r.prefill_j for r in work.requests)
    return {"direct_j": got.prefill_direct_energy_j, "coverage": got.prefill_direct_coverage or 0.0,
            "split_j": got.prefill_energy_j, "true_j": true_prefill,
            "direct_err": abs(got.prefill_direct_energy_j - true_prefill) / true_prefill * 100,
            "split_err": abs(got.prefill_energy_j - true_prefill) / true_prefill * 100}


def main() -> int:
    rows = [run(*s) for s in SCENARIOS]
    apart = phases_apart()
    head = (f"{'scenario':34} {'ratio fit/true':>15} {'ours mean/p95/max %':>22} {'proportional mean/p95/max %':>30} "
            f"{'prefill share fit/true':>23} {'phase err %':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:34} {r['ratio']:7.4f}/{r['true_ratio']:<7.4f} "
              f"{r['ours_mean']:6.2f}/{r['ours_p95']:6.2f}/{r['ours_max']:6.2f}    "
              f"{r['prop_mean']:8.1f}/{r['prop_p95']:7.1f}/{r['prop_max']:7.1f}      "
              f"{r['prefill_share']:9.3f}/{r['true_prefill_share']:<9.3f}   {r['phase_err']:8.2f}")
    print(f"phases apart (64 requests in one batch: one prefill step, then decode; 10 Hz): direct prefill "
          f"{apart['direct_j']:.1f} J over {apart['coverage'] * 100:.1f} % of prompt tokens, split {apart['split_j']:.1f} J, "
          f"true {apart['true_j']:.1f} J: direct err {apart['direct_err']:.2f} %, split err {apart['split_err']:.2f} %")
    main_row = rows[0]
    figures = [main_row["ours_p95"], main_row["prop_p95"], main_row["phase_err"], apart["direct_err"]]
    if not all(np.isfinite(figures)):
        print("could not measure: a figure is not finite", file=sys.stderr)
        return 1
    print(f"per-request error = |estimate - truth| / truth over {main_row['requests']} requests; RESULT gives the "
          "95th percentile of the main scenario; phase = the run's prefill energy")
    print(f"RESULT attribution_err_pct={main_row['ours_p95']:.2f} proportional_err_pct={main_row['prop_p95']:.1f} "
          f"phase_err_pct={main_row['phase_err']:.2f} phase_direct_err_pct={apart['direct_err']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
