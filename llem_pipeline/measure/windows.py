"""Measurement windows (docs/methodology.md §3.6): steady-state detection, explicit windows, tokens inside a window.

All times here are seconds from inference start (``t_rel``), the frame of ``steady_state_window``;
``relative_requests()`` and ``power_per_tick()`` convert monotonic times into it.

Steady state = the span where the engine is saturated AND power is stable:

1. Saturation, from the request timeline. With N requests and saturation level B (the concurrent
   slots: HF batch size, vLLM max_num_seqs; capped at N):
   - it starts when B requests have their first token (the B-th smallest first-token time; for batched
     HF runs that is the first token of the first batch): ramp-up excluded;
   - it ends where the drain starts: the first moment fewer than B requests remain unfinished, i.e. the
     (N − B + 1)-th completion. ``end_margin_requests`` ends that many completions earlier
     (ML.ENERGY ends at the (N − B − 1)-th completion: ``end_margin_requests=2``).
2. Stability, from the power trace (one value per sampler tick, summed over devices): inside the
   saturated span, every run of ``min_samples`` consecutive samples whose CV (population std / mean)
   is ≤ ``cv_threshold`` is stable; the longest chain of overlapping stable runs is kept (earliest on
   ties). Its edges are then trimmed while the edge sample lies outside median ± cv_threshold·median of
   the span, so a ramp that the CV tolerates (one low sample diluted in a window) is still cut at the
   first in-band sample. The result must still hold ≥ ``min_samples`` samples.

The reported window runs from the first to the last kept sample. Anything else is ``found=False`` with
a ``reason``; the harness then reports the whole window and the warning ``steady_state_not_found``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from llem_pipeline.domain.config import EnergyConfig
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.measure.samples import Samples


@dataclass(frozen=True)
class SteadyState:
    """A reported measurement window, s from inference start.

    ``found``: False when no window could be determined (``reason`` says why; start/end then span the
    whole input). ``excluded_samples``: power samples (sampler ticks) given that lie outside
    [start_s, end_s]. ``saturated_span``: the saturation span from the request timeline, s (None when
    not derived from requests). ``power_cv``: CV of the power inside the window (unitless, None if unknown).
    """

    start_s: float
    end_s: float
    found: bool
    reason: str
    excluded_samples: int
    saturated_span: tuple[float, float] | None = None
    power_cv: float | None = None

    @property
    def duration_s(self) -> float:
        """Window length, s."""
        return self.end_s - self.start_s


def relative_requests(records: Sequence[RequestRecord], t0_mono_s: float) -> list[RequestRecord]:
    """Return copies of ``records`` with every time shifted to s from inference start (``t − t0_mono_s``)."""
    out = []
    for r in records:
        out.append(r.model_copy(update={
            "submit_time_s": r.submit_time_s - t0_mono_s,
            "first_token_time_s": None if r.first_token_time_s is None else r.first_token_time_s - t0_mono_s,
            "token_times_s": [t - t0_mono_s for t in r.token_times_s],
            "done_time_s": r.done_time_s - t0_mono_s,
        }))
    return out


def power_per_tick(samples: Samples, t0_mono_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (t_s, power_w): one value per sampler tick, power summed over devices, t in s from ``t0_mono_s``.

    Ticks are the read times of the first device present; other devices' power is linearly
    interpolated onto them. Rows with NaN power are dropped first. Empty arrays for no samples.
    """
    if len(samples) == 0:
        return np.empty(0), np.empty(0)
    dev = samples["device_index"]
    p_all = samples["power_w"].astype(np.float64)
    t_all = samples["t_mono_s"]
    ok = np.isfinite(p_all)
    devices = sorted({int(d) for d in dev[ok]})
    if not devices:
        return np.empty(0), np.empty(0)
    first = (dev == devices[0]) & ok
    t = t_all[first]
    order = np.argsort(t, kind="stable")
    t = t[order]
    total = p_all[first][order].copy()
    for d in devices[1:]:
        m = (dev == d) & ok
        td, pd = t_all[m], p_all[m]
        o = np.argsort(td, kind="stable")
        total += np.interp(t, td[o], pd[o])
    return t - t0_mono_s, total


def saturation_level(requests_rel: Sequence[RequestRecord]) -> int:
    """Return the peak number of requests generating at once (first token ≤ t < done); 0 without tokens."""
    events: list[tuple[float, int]] = []
    for r in requests_rel:
        if r.first_token_time_s is not None:
            events.append((r.first_token_time_s, 1))
            events.append((r.done_time_s, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # completions before starts at the same instant
    peak = cur = 0
    for _, step in events:
        cur += step
        peak = max(peak, cur)
    return peak


def saturated_span(
    requests_rel: Sequence[RequestRecord], concurrency: int, end_margin_requests: int = 0
) -> tuple[float, float] | str:
    """Return (start_s, end_s) of the saturation span (see the module docstring), or a reason string.

    ``concurrency`` is the saturation level B (capped at the number of requests).
    """
    if concurrency < 1:
        return f"concurrency={concurrency} must be >= 1 (the engine's concurrent slots: batch size or max_num_seqs)"
    if end_margin_requests < 0:
        return f"end_margin_requests={end_margin_requests} must be >= 0"
    n = len(requests_rel)
    firsts = sorted(r.first_token_time_s for r in requests_rel if r.first_token_time_s is not None)
    if n == 0 or not firsts:
        return "no request produced a first token, so saturation cannot be located"
    b = min(concurrency, n)
    if len(firsts) < b:
        return f"only {len(firsts)} of {n} requests produced a first token; saturation needs {b}"
    start = firsts[b - 1]
    dones = sorted(r.done_time_s for r in requests_rel)
    k = n - b + 1 - end_margin_requests  # 1-based completion that starts the drain
    if k < 1:
        return (f"with N={n} requests, saturation level {b} and end margin {end_margin_requests} "
                "the drain starts before any request completes")
    end = dones[k - 1]
    if end <= start:
        return (f"the drain starts at {end:.3f} s, before saturation is reached at {start:.3f} s "
                f"(N={n}, saturation level {b}): use more requests than concurrent slots")
    return (start, end)


def _count_outside(t_s: np.ndarray, start: float, end: float) -> int:
    return int(np.count_nonzero((t_s < start) | (t_s > end)))


def detect_steady_state(
    t_s: Sequence[float] | np.ndarray,
    power_w: Sequence[float] | np.ndarray,
    requests_rel: Sequence[RequestRecord],
    concurrency: int | None,
    cv_threshold: float,
    min_samples: int,
    *,
    end_margin_requests: int = 0,
) -> SteadyState:
    """Detect the steady-state window from the power trace and the request timeline (module docstring).

    ``t_s``: sample times, s from inference start (the inference window's samples, one per tick);
    ``power_w``: power per tick, W (summed over devices); ``requests_rel``: measured requests with times
    in s from inference start; ``concurrency``: saturation level B (None: the observed peak of
    requests generating at once, ``saturation_level()``, e.g. for vLLM where the KV cache may cap
    concurrency below max_num_seqs); ``cv_threshold``: unitless;
    ``min_samples``: samples in the rolling CV window. Returns a SteadyState with start/end in s.
    """
    t = np.asarray(t_s, dtype=np.float64)
    p = np.asarray(power_w, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"t_s has {t.size} values but power_w has {p.size}; pass one power value per sample time")
    if min_samples < 2:
        raise ValueError(f"min_samples={min_samples} must be >= 2 (energy.steady_state_min_samples)")
    whole = (float(t.min()) if t.size else 0.0, float(t.max()) if t.size else 0.0)

    def not_found(reason: str, span: tuple[float, float] | None = None) -> SteadyState:
        return SteadyState(whole[0], whole[1], False, reason, 0, span)

    if concurrency is None:
        concurrency = max(1, saturation_level(requests_rel))
    span = saturated_span(requests_rel, concurrency, end_margin_requests)
    if isinstance(span, str):
        return not_found(span)
    s0, s1 = span
    idx = np.flatnonzero((t >= s0) & (t <= s1) & np.isfinite(p))
    if idx.size < min_samples:
        return not_found(
            f"the saturated span {s0:.3f}–{s1:.3f} s holds {idx.size} power samples; need >= {min_samples} "
            "(energy.steady_state_min_samples): run more or longer requests, or sample faster", span)
    ps = p[idx]
    win = sliding_window_view(ps, min_samples)
    means = win.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cvs = np.where(means > 0, win.std(axis=1) / np.abs(means), np.inf)
    stable = cvs <= cv_threshold
    if not stable.any():
        return not_found(
            f"no {min_samples} consecutive samples inside the saturated span {s0:.3f}–{s1:.3f} s have power CV "
            f"<= {cv_threshold:g} (lowest {float(np.min(cvs)):.3f}): power never settled", span)
    # longest run of consecutive stable window starts (earliest on ties)
    best_i, best_len, i = 0, 0, 0
    while i < stable.size:
        if stable[i]:
            j = i
            while j + 1 < stable.size and stable[j + 1]:
                j += 1
            if j - i + 1 > best_len:
                best_i, best_len = i, j - i + 1
            i = j + 1
        else:
            i += 1
    a, b = best_i, best_i + best_len - 1 + min_samples - 1
    med = float(np.median(ps[a : b + 1]))
    band = cv_threshold * abs(med)
    while a < b and abs(ps[a] - med) > band:
        a += 1
    while b > a and abs(ps[b] - med) > band:
        b -= 1
    if b - a + 1 < min_samples:
        return not_found(
            f"the stable span inside {s0:.3f}–{s1:.3f} s shrinks to {b - a + 1} samples once edge samples outside "
            f"±{cv_threshold:g} of the median power are removed; need >= {min_samples}", span)
    start, end = float(t[idx[a]]), float(t[idx[b]])
    kept = ps[a : b + 1]
    cv = float(kept.std() / abs(kept.mean())) if kept.mean() else None
    return SteadyState(start, end, True,
                       f"saturated {s0:.3f}–{s1:.3f} s; power CV {cv:.4f} <= {cv_threshold:g} over {b - a + 1} samples",
                       _count_outside(t, start, end), span, cv)


def explicit_window(
    window: tuple[float, float], inference_duration_s: float, t_s: Sequence[float] | np.ndarray | None = None
) -> SteadyState:
    """Validate an explicit 'windowed' window against the inference window; return it as a SteadyState.

    ``window``: (start, end), s from inference start (``energy.window``); ``inference_duration_s``: length
    of the inference window, s; ``t_s``: sample times (s from inference start) to count excluded samples.
    Raises ValueError naming the field, the value, the inference window and the fix.
    """
    start, end = float(window[0]), float(window[1])
    if not (0.0 <= start < end):
        raise ValueError(f"energy.window={[start, end]} must satisfy 0 <= start < end (s from inference start)")
    if end > inference_duration_s:
        raise ValueError(
            f"energy.window={[start, end]} ends after the inference window (0–{inference_duration_s:.3f} s): "
            f"set energy.window end <= {inference_duration_s:.3f} s, or use more requests so inference lasts longer")
    t = np.asarray(t_s if t_s is not None else [], dtype=np.float64)
    return SteadyState(start, end, True, "explicit window from energy.window", _count_outside(t, start, end))


def total_window(inference_duration_s: float, t_s: Sequence[float] | np.ndarray | None = None) -> SteadyState:
    """Return the whole inference window (0, duration s) as a SteadyState ('total' methodology)."""
    t = np.asarray(t_s if t_s is not None else [], dtype=np.float64)
    return SteadyState(0.0, float(inference_duration_s), True, "whole inference window",
                       _count_outside(t, 0.0, float(inference_duration_s)))


def resolve_window(
    energy: EnergyConfig,
    samples: Samples,
    t0_mono_s: float,
    t1_mono_s: float,
    records: Sequence[RequestRecord],
    concurrency: int | None = None,
    *,
    end_margin_requests: int = 0,
) -> SteadyState:
    """Return the reported window for ``energy.methodology``, s from inference start.

    ``samples``: the sampler's rows; ``t0_mono_s``/``t1_mono_s``: inference window on the monotonic
    clock, s; ``records``: measured requests with monotonic times; ``concurrency``: saturation level
    (None = observed peak). 'total' → (0, t1 − t0); 'windowed' → ``energy.window`` validated (ValueError
    when it does not fit); 'steady_state' → ``detect_steady_state`` on per-tick power inside the
    inference window; when nothing is found the result has ``found=False``, its ``reason``, and the
    whole inference window as (start_s, end_s) with 0 excluded samples, ready to use as a fallback.
    """
    duration = t1_mono_s - t0_mono_s
    t_s, p_w = power_per_tick(samples.between(t0_mono_s, t1_mono_s), t0_mono_s)
    if energy.methodology == "total":
        return total_window(duration, t_s)
    if energy.methodology == "windowed":
        assert energy.window is not None  # guaranteed by EnergyConfig validation
        return explicit_window(energy.window, duration, t_s)
    ss = detect_steady_state(t_s, p_w, relative_requests(records, t0_mono_s), concurrency,
                             energy.steady_state_cv, energy.steady_state_min_samples,
                             end_margin_requests=end_margin_requests)
    if ss.found:
        return ss
    return SteadyState(0.0, duration, False, ss.reason, 0, ss.saturated_span)


def token_times(record: RequestRecord) -> np.ndarray:
    """Return the time of each output token of ``record``, s (same frame as the record).

    Uses ``token_times_s`` when it holds one entry per output token. Otherwise (an engine without
    per-token timestamps) tokens are spread evenly from the first token (or done, when unknown) to
    done: an approximation.
    """
    n = record.output_tokens
    if n == 0:
        return np.empty(0)
    if len(record.token_times_s) == n:
        return np.asarray(record.token_times_s, dtype=np.float64)
    first = record.first_token_time_s if record.first_token_time_s is not None else record.done_time_s
    return np.linspace(first, record.done_time_s, n) if n > 1 else np.asarray([first])


def tokens_in_window(requests: Sequence[RequestRecord], t0: float, t1: float) -> tuple[int, int]:
    """Return (output_tokens, input_tokens) of ``requests`` inside the closed window [t0, t1], in tokens.

    Output tokens are counted by their own timestamps (``token_times()``). Input tokens are attributed
    whole to the moment their prefill finished: a request's prompt counts when its first-token time (its
    done time when it produced no token) lies inside the window. ``t0``/``t1`` must be in the records'
    frame (both s from inference start, or both monotonic).
    """
    out = inp = 0
    for r in requests:
        tt = token_times(r)
        out += int(np.count_nonzero((tt >= t0) & (tt <= t1)))
        prefill_done = r.first_token_time_s if r.first_token_time_s is not None else r.done_time_s
        if t0 <= prefill_done <= t1:
            inp += r.input_tokens
    return out, inp
