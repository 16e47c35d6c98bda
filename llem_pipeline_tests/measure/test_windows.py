"""Steady-state detection on scripted traces with injected ramp/drain boundaries; explicit windows; tokens."""

from __future__ import annotations

import numpy as np
import pytest

from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.measure.samples import COLUMNS, Samples
from llem_pipeline.measure.windows import (
    detect_steady_state,
    explicit_window,
    power_per_tick,
    relative_requests,
    resolve_window,
    saturated_span,
    saturation_level,
    token_times,
    tokens_in_window,
    total_window,
)

DT = 0.1  # sampler period, s


def continuous_batching(slots: int = 4, per_slot: int = 5, stagger: float = 0.5, decode_s: float = 4.0):
    """Slot j admits its first request with first token at stagger*(j+1); each request decodes decode_s."""
    recs = []
    k = 0
    for j in range(slots):
        for m in range(per_slot):
            first = stagger * (j + 1) + decode_s * m
            n_out = 40
            times = list(np.linspace(first, first + decode_s, n_out))
            recs.append(RequestRecord(request_index=k, input_tokens=10 + k, output_tokens=n_out,
                                      submit_time_s=0.0, first_token_time_s=first, token_times_s=times,
                                      done_time_s=first + decode_s))
            k += 1
    return recs


def trace(t_end: float, fn, noise: float = 0.005, seed: int = 1):
    t = np.round(np.arange(0.0, t_end + DT / 2, DT), 10)
    rng = np.random.default_rng(seed)
    p = np.array([fn(x) for x in t]) * (1 + noise * rng.standard_normal(t.size))
    return t, p


def test_saturated_span_continuous_batching():
    recs = continuous_batching()
    # 4th first token at 2.0 s; 17th (= N-B+1) completion is slot 0's last request at 20.5 s
    assert saturated_span(recs, 4) == (2.0, 20.5)
    # ML.ENERGY: ends at the (N-B-1)-th = 15th completion
    assert saturated_span(recs, 4, end_margin_requests=2) == (2.0, 17.5)
    assert saturation_level(recs) == 4


def test_saturated_span_static_batches():
    # HF batches of 2: submitted together, first tokens together, done together, one batch after another
    recs = []
    for k in range(6):
        b = k // 2
        recs.append(RequestRecord(request_index=k, input_tokens=5, output_tokens=3, submit_time_s=3.0 * b,
                                  first_token_time_s=3.0 * b + 0.5, done_time_s=3.0 * b + 3.0))
    assert saturated_span(recs, 2) == (0.5, 9.0)
    assert saturation_level(recs) == 2


def test_detects_injected_ramp_up_and_drain_within_one_sample():
    recs = continuous_batching()

    def power(x):
        if x < 2.0:
            return 80 + 320 * x / 2.0           # ramp-up (admission / prefill)
        if x <= 20.5:
            return 400.0                        # saturated
        return 400 - 250 * (x - 20.5) / 1.5     # drain

    t, p = trace(22.0, power)
    ss = detect_steady_state(t, p, recs, concurrency=4, cv_threshold=0.05, min_samples=10)
    assert ss.found, ss.reason
    assert abs(ss.start_s - 2.0) <= DT + 1e-9
    assert abs(ss.end_s - 20.5) <= DT + 1e-9
    assert ss.saturated_span == (2.0, 20.5)
    inside = np.count_nonzero((t >= ss.start_s) & (t <= ss.end_s))
    assert ss.excluded_samples == t.size - inside
    assert ss.power_cv is not None and ss.power_cv < 0.02


def test_power_boundaries_inside_the_saturated_span_are_found_within_one_sample():
    # requests saturate at 2.0 s, but clocks only settle at 3.0 s (power 370 W, within the CV a window
    # tolerates), and power falls to 250 W at 18.0 s before the request drain at 20.5 s
    recs = continuous_batching()

    def power(x):
        if x < 2.0:
            return 100.0
        if x < 3.0:
            return 370.0
        if x < 18.0:
            return 400.0
        return 250.0

    t, p = trace(22.0, power, noise=0.003)
    ss = detect_steady_state(t, p, recs, concurrency=4, cv_threshold=0.05, min_samples=10)
    assert ss.found, ss.reason
    assert abs(ss.start_s - 3.0) <= DT + 1e-9
    assert abs(ss.end_s - 18.0) <= DT + 1e-9


def test_no_steady_state_when_power_never_settles():
    recs = continuous_batching()
    t = np.round(np.arange(0.0, 22.0, DT), 10)
    p = np.where(np.arange(t.size) % 2 == 0, 200.0, 400.0)
    ss = detect_steady_state(t, p, recs, concurrency=4, cv_threshold=0.05, min_samples=10)
    assert not ss.found
    assert "never settled" in ss.reason and "0.333" in ss.reason
    assert (ss.start_s, ss.end_s) == (0.0, float(t.max()))


def test_no_steady_state_when_too_few_samples():
    recs = continuous_batching()
    t, p = trace(22.0, lambda x: 400.0)
    ss = detect_steady_state(t, p, recs, concurrency=4, cv_threshold=0.05, min_samples=500)
    assert not ss.found and "need >= 500" in ss.reason


def test_no_steady_state_reasons_from_the_request_timeline():
    t, p = trace(5.0, lambda x: 400.0)
    no_tokens = [RequestRecord(request_index=0, input_tokens=3, output_tokens=0, submit_time_s=0, done_time_s=1)]
    ss = detect_steady_state(t, p, no_tokens, 1, 0.05, 10)
    assert not ss.found and "first token" in ss.reason
    # short requests: the drain begins (first completion at 1.0 s) before the 4th first token (2.0 s)
    short = [RequestRecord(request_index=k, input_tokens=3, output_tokens=2, submit_time_s=0,
                           first_token_time_s=0.5 * (k + 1), done_time_s=0.5 * (k + 1) + 0.5) for k in range(4)]
    ss = detect_steady_state(t, p, short, 4, 0.05, 10)
    assert not ss.found and "before saturation" in ss.reason
    assert "must be >= 1" in detect_steady_state(t, p, short, 0, 0.05, 10).reason
    with pytest.raises(ValueError, match="one power value per sample"):
        detect_steady_state(t, p[:-1], short, 4, 0.05, 10)


def test_edge_trim_can_leave_too_few_samples():
    recs = continuous_batching()
    t = np.round(np.arange(0.0, 22.0, DT), 10)
    # power steps 300 -> 400 W at 11.0 s; 11.0-20.5 s holds 96 samples
    p = np.where(t < 11.0, 300.0, 400.0)
    ss = detect_steady_state(t, p, recs, 4, 0.05, 50)
    assert ss.found and abs(ss.start_s - 11.0) <= DT + 1e-9 and abs(ss.end_s - 20.5) <= DT + 1e-9
    # 100-sample CV windows tolerate a few 300 W samples, but trimming them leaves 96 < 100
    ss = detect_steady_state(t, p, recs, 4, 0.05, 100)
    assert not ss.found and "shrinks to 96 samples" in ss.reason


def test_relative_requests_and_power_per_tick():
    rec = RequestRecord(request_index=0, input_tokens=3, output_tokens=2, submit_time_s=100.0,
                        first_token_time_s=100.5, token_times_s=[100.5, 100.7], done_time_s=100.7)
    (r,) = relative_requests([rec], 100.0)
    assert r.submit_time_s == 0.0 and r.first_token_time_s == pytest.approx(0.5)
    assert r.token_times_s == pytest.approx([0.5, 0.7]) and r.done_time_s == pytest.approx(0.7)
    assert rec.submit_time_s == 100.0  # original untouched

    # two devices, device 1 read 10 ms after device 0 each tick; one NaN read on device 0
    n = 5
    t0 = 50.0 + np.arange(n) * DT
    cols = {k: np.zeros(2 * n, dtype=dt) for k, dt in COLUMNS.items()}
    cols["device_index"][:] = np.repeat([[0, 1]], n, axis=0).ravel()
    cols["t_mono_s"][:] = np.column_stack([t0, t0 + 0.01]).ravel()
    cols["power_w"][:] = np.column_stack([np.full(n, 100.0), 200.0 + 10 * np.arange(n)]).ravel()
    cols["power_w"][4] = np.nan  # device 0, tick 2
    t, p = power_per_tick(Samples(cols, ("a", "b")), 50.0)
    assert t == pytest.approx([0.0, 0.1, 0.3, 0.4])
    # device 1 interpolated onto device-0 ticks: at 0.0 -> 200 (clamped), 0.1 -> 209, 0.3 -> 229, 0.4 -> 239
    assert p == pytest.approx([300.0, 309.0, 329.0, 339.0], abs=1e-3)
    assert power_per_tick(Samples.empty(("a",)), 0.0)[0].size == 0


def test_explicit_and_total_windows():
    t = np.round(np.arange(0.0, 10.0 + DT / 2, DT), 10)
    w = explicit_window((2.0, 6.0), 10.0, t)
    assert w.found and (w.start_s, w.end_s) == (2.0, 6.0)
    assert w.excluded_samples == t.size - 41  # 2.0..6.0 inclusive
    assert w.duration_s == 4.0
    with pytest.raises(ValueError, match=r"energy.window=\[2.0, 12.0\] ends after the inference window \(0–10.000 s\)"):
        explicit_window((2.0, 12.0), 10.0)
    with pytest.raises(ValueError, match="0 <= start < end"):
        explicit_window((5.0, 5.0), 10.0)
    tw = total_window(10.0, t)
    assert (tw.start_s, tw.end_s, tw.excluded_samples) == (0.0, 10.0, 0)


def test_tokens_in_window_counts_token_timestamps_and_attributes_prompts_by_first_token():
    a = RequestRecord(request_index=0, input_tokens=100, output_tokens=4, submit_time_s=0.0,
                      first_token_time_s=1.0, token_times_s=[1.0, 2.0, 3.0, 4.0], done_time_s=4.0)
    b = RequestRecord(request_index=1, input_tokens=50, output_tokens=3, submit_time_s=0.0,
                      first_token_time_s=3.5, token_times_s=[3.5, 4.5, 5.5], done_time_s=5.5)
    assert tokens_in_window([a, b], 2.0, 4.0) == (4, 50)   # a: 2,3,4; b: 3.5; b's prompt (first token 3.5)
    assert tokens_in_window([a, b], 0.0, 10.0) == (7, 150)
    assert tokens_in_window([a, b], 4.6, 5.0) == (0, 0)
    # closed interval at both ends
    assert tokens_in_window([a], 1.0, 1.0) == (1, 100)


def test_token_times_fallback_spreads_tokens_evenly():
    r = RequestRecord(request_index=0, input_tokens=1, output_tokens=5, submit_time_s=0.0,
                      first_token_time_s=1.0, done_time_s=3.0)
    assert token_times(r) == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    one = RequestRecord(request_index=0, input_tokens=1, output_tokens=1, submit_time_s=0.0, done_time_s=2.0)
    assert token_times(one) == pytest.approx([2.0])
    none = RequestRecord(request_index=0, input_tokens=1, output_tokens=0, submit_time_s=0.0, done_time_s=2.0)
    assert token_times(none).size == 0
    assert tokens_in_window([none], 0, 5) == (0, 1)  # no token: the prompt counts at done


def samples_from_trace(t_rel: np.ndarray, p: np.ndarray, t0_mono: float) -> Samples:
    n = t_rel.size
    cols = {k: np.zeros(n, dtype=dt) for k, dt in COLUMNS.items()}
    cols["t_mono_s"][:] = t0_mono + t_rel
    cols["power_w"][:] = p
    return Samples(cols, ("GPU-0",))


@pytest.mark.parametrize("seed", range(12))
def test_randomised_step_boundaries_found_within_one_sample(seed):
    """Power settles at a random tick after saturation and drops at a random tick before the drain.

    The settled span is kept the longest stable span (the lower shoulders are flat too, and the
    longest stable run is what is reported).
    """
    rng = np.random.default_rng(seed)
    recs = continuous_batching()                         # saturated 2.0-20.5 s
    k_on = int(rng.integers(25, 60))                     # settle tick (2.5-6.0 s)
    k_off = int(rng.integers(160, 200))                  # drop tick (16.0-20.0 s)
    level = rng.uniform(150, 700)
    low_on = level * rng.uniform(0.5, 0.9)               # >= 10 % below: outside the 5 % band
    low_off = level * rng.uniform(0.3, 0.9)
    t = np.round(np.arange(0.0, 22.0 + DT / 2, DT), 10)
    k = np.arange(t.size)
    p = np.where(k < k_on, low_on, np.where(k < k_off, level, low_off))
    p = p * (1 + 0.004 * rng.standard_normal(t.size))
    ss = detect_steady_state(t, p, recs, 4, 0.05, 10)
    assert ss.found, ss.reason
    assert abs(ss.start_s - t[k_on]) <= DT + 1e-9, (ss.start_s, t[k_on])
    assert abs(ss.end_s - t[k_off - 1]) <= DT + 1e-9, (ss.end_s, t[k_off - 1])


def test_concurrency_none_uses_the_observed_peak():
    recs = continuous_batching()
    t, p = trace(22.0, lambda x: 400.0)
    a = detect_steady_state(t, p, recs, None, 0.05, 10)
    b = detect_steady_state(t, p, recs, 4, 0.05, 10)
    assert a == b and a.found


def test_resolve_window_for_each_methodology():
    from llem_pipeline.domain.config import EnergyConfig

    t0 = 5000.0
    recs = continuous_batching()
    mono = [r.model_copy(update={"submit_time_s": r.submit_time_s + t0, "first_token_time_s": r.first_token_time_s + t0,
                                 "token_times_s": [x + t0 for x in r.token_times_s],
                                 "done_time_s": r.done_time_s + t0}) for r in recs]
    t, p = trace(22.0, lambda x: 80 + 320 * x / 2.0 if x < 2.0 else (400.0 if x <= 20.5 else 150.0))
    s = samples_from_trace(t, p, t0)
    # samples outside the inference window are ignored
    extra = samples_from_trace(np.array([-1.0, 30.0]), np.array([50.0, 50.0]), t0)
    s = Samples({k: np.concatenate([extra[k][:1], s[k], extra[k][1:]]) for k in COLUMNS}, s.device_uuids)
    t1 = t0 + 22.0

    tot = resolve_window(EnergyConfig(), s, t0, t1, mono)
    assert (tot.start_s, tot.end_s, tot.found, tot.excluded_samples) == (0.0, 22.0, True, 0)
    win = resolve_window(EnergyConfig(methodology="windowed", window=(1.0, 3.0)), s, t0, t1, mono)
    assert (win.start_s, win.end_s) == (1.0, 3.0) and win.excluded_samples == t.size - 21
    with pytest.raises(ValueError, match="ends after the inference window"):
        resolve_window(EnergyConfig(methodology="windowed", window=(1.0, 30.0)), s, t0, t1, mono)
    ss = resolve_window(EnergyConfig(methodology="steady_state"), s, t0, t1, mono, concurrency=4)
    assert ss.found and abs(ss.start_s - 2.0) <= DT + 1e-9 and abs(ss.end_s - 20.5) <= DT + 1e-9
    # not found: falls back to the whole inference window
    bad = resolve_window(EnergyConfig(methodology="steady_state", steady_state_min_samples=1000), s, t0, t1, mono)
    assert not bad.found and (bad.start_s, bad.end_s, bad.excluded_samples) == (0.0, 22.0, 0)
    assert "need >= 1000" in bad.reason
