"""Energy per request and per phase (measure/attribution.py) on scripted workloads with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from llem_pipeline.measure.attribution import (
    DEFAULT_RATIO,
    DeviceTrace,
    RequestTimes,
    attribute,
    fit_weights,
    proportional,
    work_segments,
)
from llem_pipeline.measure.devices.serving_sim import ScriptedRequest, mixed_workload, serve
from llem_pipeline.measure.devices.simulated import FakeClock, PhaseModel, SimulatedDevice


def _trace(work, interval_s: float, baseline_w: float | None = None) -> DeviceTrace:
    clock = FakeClock(0.0)
    device = SimulatedDevice(work.model, clock=clock, start_s=0.0)
    a, b = work.span_s
    ts = np.arange(a - interval_s, b + interval_s, interval_s)
    ps = []
    for t in ts:
        clock.set(float(t))
        ps.append(device.read().power_w)
    return DeviceTrace(0, 0, ts, np.array(ps), baseline_w=baseline_w)


def _times(work) -> list[RequestTimes]:
    return [RequestTimes(0, r.index, r.input_tokens, r.output_tokens, r.submit_s, r.first_token_s, r.token_times_s)
            for r in work.requests]


def test_phase_model_draws_more_power_while_prefilling_and_its_energy_is_exact() -> None:
    model = PhaseModel([(1.0, 1.1, 1000, 0), (1.1, 1.12, 0, 4)], idle_w=50, static_w=80,
                       prefill_j_per_token=0.01, decode_j_per_token=0.5)
    assert model.power_w(1.05) == pytest.approx(80 + 10 / 0.1)
    assert model.power_w(1.11) == pytest.approx(80 + 2 / 0.02)
    assert model.power_w(0.5) == model.power_w(2.0) == 50
    assert model.cumulative_j(2.0) - model.cumulative_j(0.0) == pytest.approx(50 * 1.88 + 80 * 0.12 + 10 + 2)
    with pytest.raises(ValueError, match="overlaps"):
        PhaseModel([(1.0, 2.0, 1, 0), (1.5, 2.5, 0, 1)])


def test_serve_keeps_every_joule_and_tokens_in_order() -> None:
    work = serve(mixed_workload(40, seed=3), max_num_seqs=4)
    a, b = work.span_s
    total = work.model.cumulative_j(b) - work.model.cumulative_j(a)
    idle_inside = total - sum(r.energy_j for r in work.requests)
    assert idle_inside >= -1e-6  # the requests' energies and the idle gaps make up the span's energy
    assert sum(r.energy_j for r in work.requests) + work.idle_j == pytest.approx(work.model.cumulative_j(b), rel=1e-9)
    for r in work.requests:
        assert len(r.token_times_s) == r.output_tokens and r.token_times_s == sorted(r.token_times_s)
        assert r.first_token_s > r.submit_s


def test_attribution_recovers_known_energies_where_proportional_does_not() -> None:
    work = serve(mixed_workload(120, seed=5), max_num_seqs=8)
    trace = _trace(work, 0.01)  # 100 Hz: the intervals are nearly exact, so the method itself is tested
    a, b = work.span_s
    window = work.model.cumulative_j(b) - work.model.cumulative_j(a)
    got = attribute(_times(work), [trace], window_energy_j={0: window}, spans={0: (a, b)}, min_interval_s=0)
    truth = np.array([r.energy_j for r in work.requests])
    ours = np.array([r.energy_j for r in got.requests])
    prop = proportional(_times(work), window)
    assert got.weights.method == "regression"
    assert got.weights.ratio == pytest.approx(0.02 / 0.3, rel=0.05)
    assert got.total_energy_j == pytest.approx(window, rel=1e-9)  # every joule is attributed or idle
    assert np.median(np.abs(ours - truth) / truth) < 0.02
    assert np.median(np.abs(prop - truth) / truth) > 0.1
    true_prefill = sum(r.prefill_j for r in work.requests)
    assert got.prefill_energy_j == pytest.approx(true_prefill, rel=0.05)
    for r in got.requests:
        assert r.energy_j == pytest.approx(r.prefill_energy_j + r.decode_energy_j)
        assert r.uncertainty_j >= 0


def test_baseline_share_and_idle_are_stated_apart() -> None:
    # two requests far apart: the gap between them is idle; each request's baseline share is 60 W x its span
    work = serve([ScriptedRequest(1.0, 100, 10), ScriptedRequest(5.0, 100, 10)], max_num_seqs=4,
                 idle_w=60, static_w=60)
    trace = _trace(work, 0.005, baseline_w=60.0)
    got = attribute(_times(work), [trace], min_interval_s=0)
    assert got.weights.method == "default"  # too few intervals for a regression: the default ratio, said so
    assert got.weights.ratio == DEFAULT_RATIO and any("attribution_default_ratio" in w for w in got.warnings)
    assert got.idle_energy_j == pytest.approx(60 * (5.0 - work.requests[0].token_times_s[-1]), rel=0.05)
    for req, served in zip(got.requests, work.requests, strict=True):
        busy = served.token_times_s[-1] - served.submit_s
        assert req.baseline_energy_j == pytest.approx(60 * busy, rel=0.05)
        assert req.energy_j == pytest.approx(served.energy_j, rel=0.05)


def test_prefill_starts_at_the_last_engine_event_before_the_first_token() -> None:
    reqs = [RequestTimes(0, 0, 10, 3, 0.0, 0.1, [0.1, 0.2, 0.3]),
            RequestTimes(0, 1, 50, 2, 0.05, 0.25, [0.25, 0.35])]  # queued: its prefill ran after token 0.2
    pos, start, end, pre, dec = work_segments(reqs)
    prefill = [(int(p), s, e, n) for p, s, e, n in zip(pos, start, end, pre, strict=True) if n > 0]
    assert prefill == [(0, 0.0, 0.1, 10.0), (1, 0.2, 0.25, 50.0)]
    assert dec.sum() == 3  # 2 + 1 decoded tokens after the first ones


def test_fit_weights_falls_back_on_collinear_work() -> None:
    n = 40
    pre = np.full(n, 100.0)
    dec = np.full(n, 10.0)  # every interval has the same mix: alpha and beta cannot be told apart
    w = fit_weights(60 * 0.1 + 0.02 * pre + 0.3 * dec, np.full(n, 0.1), pre, dec)
    assert w.method == "default" and w.reason


def test_phases_run_apart_give_a_direct_prefill_measurement() -> None:
    # every request arrives at once and fits the batch: one prefill step, then only decode steps
    work = serve(mixed_workload(32, seed=7, rate_per_s=1e6), max_num_seqs=32)
    trace = _trace(work, 0.02)
    a, b = work.span_s
    got = attribute(_times(work), [trace], window_energy_j={0: work.model.cumulative_j(b) - work.model.cumulative_j(a)},
                    spans={0: (a, b)})
    true_prefill = sum(r.prefill_j for r in work.requests)
    assert got.prefill_direct_coverage > 0.98
    assert got.prefill_direct_energy_j == pytest.approx(true_prefill, rel=0.03)
    # continuous batching with arrivals spread out: prefills interleave with decode, little is pure
    mixed = serve(mixed_workload(60, seed=8, rate_per_s=20), max_num_seqs=8)
    spread = attribute(_times(mixed), [_trace(mixed, 0.1)])
    assert spread.prefill_direct_coverage < got.prefill_direct_coverage
