"""Energy of a time window: one estimate from all the evidence, with an honest ± (docs/methodology-energy.md).

``EnergyMonitor.begin_window()`` marks the caller's instant and returns at once; the start's dense polls
(counter and instant power every ``poll_interval_s`` until the counter's next update edge; on GPUs without
a counter, instant and 1 s averaged power for a second) run in the sampler's process or a background
thread. ``end_window()`` polls the end the same way and returns a ``WindowEnergy``: ``energy_j``,
``uncertainty_j`` (J, a ± bound), ``method`` and the ``evidence`` (sampler rows, boundary polls, counter
timing, power limits). ``WindowEnergy.over(a, b)`` gives any sub-window (the harness's reported window)
from that evidence through ``estimate_window`` → ``window_energy``: the one computation behind every
stored energy.

The NVML energy counter (mJ) only changes at update edges, about every 100 ms, and between edges holds
the energy up to the last edge. A plain delta of two reads therefore errs by up to one counter step at
each end of the window. The correction (docs/methodology-energy.md):

    E[t0, t1] = C(e1) − C(e0) + ∫_{e1}^{t1} P dt − ∫_{e0}^{t0} P dt

where ``e0``/``e1`` are update edges near the boundaries whose counter values ``C(e)`` are known. The dense
polls after each boundary bracket the next edge to one poll interval and fill the partial step from
densely read instant power. ``window_energy`` bounds the edge behind each counter value near a boundary
from the observations around it (after the last reading of the previous value, at or before the first
reading of this one, and a period before the next value's first reading), narrows that with a learned
update period and phase (``CounterTiming``) when exactly one predicted edge fits, keeps the anchor whose
boundary term is least uncertain, and states the ± from what was not observed (edge brackets × peak power,
power range × the trace's gaps, spans no point covers).

Counter wraps (a known modulus) are unwrapped. A counter that goes backwards without a known modulus
(driver reload, reset) is bridged between the update edges around it with the power trace where the
trace observed the gap (± the trace's interpolation bound), else bounded by the counter after the reset
and the power limit (± half that interval, infinite without a limit); either way ``counter_reset`` is
warned. Without a counter, the energy comes from the 1 s averaged power and the instant polls
(``_averaged_energy``).
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from llem_pipeline.domain.warnings import make_warning
from llem_pipeline.measure.devices.protocol import Device
from llem_pipeline.measure.samples import COLUMNS, Samples

DEFAULT_COUNTER_PERIOD_S = 0.1
DISAGREEMENT_THRESHOLD = 0.05
_QUANTUM_J = 0.001  # the counter's 1 mJ resolution
READ_RETRIES = 3  # a failed boundary read is retried this many times before the error propagates
AVERAGE_WINDOW_S = 1.0  # nvmlDeviceGetPowerUsage averages power over the last second (Ampere and newer)
FOLLOW_S = 0.05  # without a sampler, the start's poller reads every device this often until the window ends
DENSE_GAP_S = 0.002  # power reads at most this far apart resolve the load (no unseen pulse between them)


@dataclass(frozen=True)
class CounterTiming:
    """A counter's update edges: ``phase_s + k × period_s`` (monotonic s).

    ``phase_s`` is a measured edge (± ``edge_err_s``); ``ref_s``, when given, is a second measured edge
    (± ``edge_err_s``) a whole number of periods away from which ``period_s`` was derived, so every edge
    predicted between the two is an interpolation and as good as they are.
    """

    period_s: float
    phase_s: float
    period_err_s: float = 0.0  # ± uncertainty of period_s, s
    ref_s: float | None = None
    edge_err_s: float = 0.002  # ± of the measured edges phase_s and ref_s, s

    def edge_uncertainty_s(self, t: float) -> float:
        """Returns the ± uncertainty of the predicted edge near ``t``, s: ``edge_err_s`` between the
        measured edges, growing by ``period_err_s`` per period beyond them."""
        lo = hi = self.phase_s
        if self.ref_s is not None:
            lo, hi = min(lo, self.ref_s), max(hi, self.ref_s)
        outside = max(lo - t, t - hi, 0.0)
        return self.edge_err_s + outside / self.period_s * self.period_err_s

    def last_edge(self, t: float) -> float:
        """Returns the last update edge at or before ``t``, s (monotonic)."""
        return self.phase_s + math.floor((t - self.phase_s) / self.period_s) * self.period_s


@dataclass(frozen=True)
class WindowStart:
    """State captured by ``EnergyMonitor.begin_window`` (boundary polls per device, monotonic start)."""

    t_mono_s: float
    utc: datetime
    polls: Samples
    pending: Any = None  # the sampler process's polls of this start (``PendingPolls``), when it polls


@dataclass(frozen=True)
class WindowEvidence:
    """Everything observed around a window, from which ``estimate_window`` computes any sub-window.

    ``samples``: the sampler's rows; ``polls``: the dense boundary polls (both ends); ``counter_timing``
    and ``counter_modulus_mj`` per device; ``device_kinds`` ('nvml'/'simulated'/'replay');
    ``power_limit_w`` per device, W (bounds the energy of spans nothing observed, e.g. a counter reset
    between the two boundaries without a sampler); ``start_mono_s``/``start_utc`` map monotonic s to UTC.
    """

    samples: Samples
    polls: Samples | None
    counter_timing: tuple[CounterTiming | None, ...]
    counter_modulus_mj: tuple[float | None, ...]
    device_kinds: tuple[str, ...]
    interval_s: float | None
    sampler_error: str | None
    boundary_correction: bool
    n_devices: int
    power_limit_w: tuple[float | None, ...]
    start_mono_s: float
    start_utc: datetime


@dataclass
class WindowEnergy:
    """Energy of one window. Energies in J, times in s (monotonic) and aware UTC datetimes.

    ``energy_per_device_j``: the chosen estimate per device (counter with boundary correction, or the
    trace integral where the counter is unsupported). ``trace_energy_*``: integral of sampled power
    (None without samples). ``agreement``: |E_counter − E_trace| / E_counter (None when not computable).
    ``uncertainty_j``: remaining ± bound of ``total_energy_j``. ``counter_updates``: approximate number of
    counter steps in the window. ``warnings``: ``"<code>: <detail>"`` strings (domain.warnings).
    """

    start_mono_s: float
    end_mono_s: float
    start_utc: datetime
    end_utc: datetime
    duration_s: float
    energy_per_device_j: list[float]
    total_energy_j: float
    trace_energy_per_device_j: list[float | None]
    trace_energy_j: float | None
    agreement: float | None
    method: str
    uncertainty_j: float
    counter_updates: float
    warnings: list[str] = field(default_factory=list)
    device_uuids: tuple[str, ...] = ()
    uncertainty_per_device_j: list[float] = field(default_factory=list)
    counter_energy_per_device_j: list[float | None] = field(default_factory=list)
    evidence: WindowEvidence | None = field(default=None, repr=False)

    @property
    def energy_j(self) -> float:
        """Returns the window's energy, J (summed over devices): the number that is stored."""
        return self.total_energy_j

    def over(self, t0_s: float, t1_s: float) -> WindowEnergy:
        """Returns the energy of the sub-window [t0_s, t1_s] (monotonic s) from this window's evidence, by the
        same function (``estimate_window``); raises ValueError when the window carries no evidence."""
        if self.evidence is None:
            raise ValueError("WindowEnergy.over: this window carries no evidence; use EnergyMonitor.end_window()")
        return estimate_window(self.evidence, t0_s, t1_s)


# -- small numeric helpers ------------------------------------------------------------------------
class _Trace:
    """Piecewise-linear power P(t) through sorted points (constant beyond the ends) and its integral."""

    def __init__(self, t: np.ndarray, p: np.ndarray) -> None:
        ok = np.isfinite(t) & np.isfinite(p)
        t, p = t[ok], p[ok]
        order = np.argsort(t, kind="stable")
        self.t, self.p = t[order], p[order].astype(np.float64)
        if len(self.t):
            seg = np.diff(self.t) * 0.5 * (self.p[:-1] + self.p[1:])
            self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        else:
            self.cum = np.zeros(0)

    def __len__(self) -> int:
        return len(self.t)

    def power(self, t: float) -> float:
        """Returns interpolated power, W."""
        return float(np.interp(t, self.t, self.p))

    def integral_to(self, t: float) -> float:
        """Returns ∫ P dt from the first point to t (signed, extrapolating flat), J."""
        if len(self.t) == 0:
            return 0.0
        if t <= self.t[0]:
            return (t - self.t[0]) * self.p[0]
        if t >= self.t[-1]:
            return self.cum[-1] + (t - self.t[-1]) * self.p[-1]
        j = int(np.searchsorted(self.t, t, side="right")) - 1
        pt = self.power(t)
        return float(self.cum[j] + (t - self.t[j]) * 0.5 * (self.p[j] + pt))

    def integral(self, a: float, b: float) -> float:
        """Returns the signed ∫_a^b P dt, J."""
        return self.integral_to(b) - self.integral_to(a)

    def span_stats(self, a: float, b: float) -> tuple[float, float, float]:
        """Returns (max power W, power range W, largest gap between points s) over [min(a,b), max(a,b)]."""
        lo, hi = min(a, b), max(a, b)
        if len(self.t) == 0:
            return 0.0, 0.0, hi - lo
        i0 = max(int(np.searchsorted(self.t, lo, side="right")) - 1, 0)
        i1 = max(min(int(np.searchsorted(self.t, hi, side="left")) + 1, len(self.t)), i0 + 1)
        ps = self.p[i0:i1]
        ts = np.clip(self.t[i0:i1], lo, hi)
        gap = float(np.max(np.diff(np.concatenate([[lo], ts, [hi]])))) if hi > lo else 0.0
        return float(ps.max()), float(ps.max() - ps.min()), gap

    def extrapolated_s(self, a: float, b: float) -> float:
        """Returns how much of [min(a,b), max(a,b)] lies before the first or after the last point, s (there
        the trace only repeats its end value, so nothing bounds its error but the power seen elsewhere)."""
        lo, hi = min(a, b), max(a, b)
        if len(self.t) == 0:
            return hi - lo
        return max(min(hi, self.t[0]) - lo, 0.0) + max(hi - max(lo, self.t[-1]), 0.0)

    def max_power(self) -> float:
        """Returns the largest power of any point, W (0 without points)."""
        return float(self.p.max()) if len(self.p) else 0.0

    def power_range(self) -> float:
        """Returns the largest minus the smallest power of all points, W (0 without points)."""
        return float(self.p.max() - self.p.min()) if len(self.p) else 0.0


def _merge(a: Samples, b: Samples | None) -> Samples:
    if b is None or len(b) == 0:
        return a
    cols = {k: np.concatenate([a.columns[k], b.columns[k]]) for k in COLUMNS}
    order = np.argsort(cols["t_mono_s"], kind="stable")
    return Samples({k: v[order] for k, v in cols.items()}, a.device_uuids or b.device_uuids)


@dataclass
class _Anchor:
    t_obs: float        # time of the counter observation carrying C(e), s
    value: float        # C(e), mJ
    edge_s: float       # the edge time e, s
    half_width_s: float  # ± uncertainty of e, s
    how: str            # 'bracket', 'timing', 'assumed', 'plain'


def _timing_band(lo: float, hi: float, timing: CounterTiming) -> tuple[float, float, float] | None:
    """Returns (lo', hi', predicted edge), s: [lo, hi] narrowed to the one predicted edge band (``timing``:
    edge ± its uncertainty) that meets it; None when no band or more than one band meets it (the timing
    cannot tell which edge)."""
    p = timing.period_s
    reach = max(timing.edge_uncertainty_s(lo), timing.edge_uncertainty_s(hi)) + timing.period_err_s
    if reach >= 2 * p:
        return None
    k_first = math.floor((lo - reach - timing.phase_s) / p)
    k_last = math.ceil((hi + reach - timing.phase_s) / p)
    hits = []
    for k in range(k_first, k_last + 1):
        e = timing.phase_s + k * p
        hw = timing.edge_uncertainty_s(e)
        a, b = max(lo, e - hw), min(hi, e + hw)
        if a <= b:
            hits.append((a, b, e))
    return hits[0] if len(hits) == 1 else None


def _update_step(before, after, modulus: float | None):
    """Returns whether a counter change from ``before`` to ``after`` (mJ; numbers or arrays, elementwise) is an
    update edge: a step up, or a step down across a known wrap ``modulus``. A step down without a modulus is a
    reset, which is no edge on the counter's grid; equal values are no change."""
    return (after > before) | ((after < before) & bool(modulus))


def _edge_of(ct: np.ndarray, cv: np.ndarray, b: int, period_lo: float, period_hi: float,
             timing: CounterTiming | None, modulus: float | None = None) -> _Anchor:
    """Returns the anchor for observation ``b``: where the update edge that produced its value lies.

    The observations showing that value form a run (first ``f``, last ``l``). Its edge is at or before
    ``ct[f]`` and after the latest observation before the run (another value); the next edge comes after
    ``ct[l]``, so the edge is no earlier than ``ct[l] − period_hi``; and (``period_lo`` > 0, the next value
    higher, or lower with a known wrap ``modulus``) the next edge is at or before the first observation after
    the run, so the edge is no later than that minus ``period_lo``. ``timing`` narrows this interval further
    when exactly one predicted edge band meets it. The anchor's edge is the middle of the interval (the predicted edge with timing) and its half width
    the ± (s).
    """
    t_b, v = float(ct[b]), cv[b]
    w0 = int(np.searchsorted(ct, t_b - 2 * period_hi, side="left"))
    w1 = int(np.searchsorted(ct, t_b + 2 * period_hi, side="right"))
    other = cv[w0:w1] != v
    before = np.nonzero(other[:b - w0])[0]
    after = np.nonzero(other[b - w0 + 1:])[0]
    first = w0 + int(before[-1]) + 1 if len(before) else w0  # (a run reaching past the scan only loosens)
    last = b + int(after[0]) if len(after) else w1 - 1
    lo, hi = float(ct[last]) - period_hi, float(ct[first])
    if len(before) and v == 0 and cv[first - 1] > 0:
        # a counter that restarted at 0: the change is the reset itself, no update edge on the counter's grid,
        # so neither the period nor the timing says where it is; only the readings around it do
        lo = float(ct[first - 1])
        return _Anchor(t_b, float(v), 0.5 * (lo + hi), 0.5 * (hi - lo), "bracket")
    how = "assumed"
    if len(before) and ct[first - 1] > lo:
        lo, how = float(ct[first - 1]), "bracket"
    # The next value bounds this edge from above only when it came from the next update edge: a counter that
    # went down without a known modulus (a reset) may have changed at any time, no period after it.
    if period_lo > 0 and len(after) and _update_step(v, cv[last + 1], modulus) and ct[last + 1] - period_lo < hi:
        hi, how = float(ct[last + 1]) - period_lo, "bracket"
    if hi < lo:  # timestamps jitter beyond the period bounds: fall back to the one-period interval
        lo, hi, how = t_b - period_hi, t_b, "assumed"
    edge, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    if timing is not None and (band := _timing_band(lo, hi, timing)) is not None:
        # the predicted edge (clipped to what the observations allow), not the middle of the clipped band:
        # an observation cutting one side of the band would otherwise shift the estimate off the
        # prediction, always the same way when the sampler runs in step with the counter
        b_lo, b_hi, predicted = band
        point = min(max(predicted, b_lo), b_hi)
        reach = max(point - b_lo, b_hi - point)
        if reach < half:
            edge, half, how = point, reach, "timing"
    return _Anchor(t_b, float(v), edge, half, how)


def _find_anchor(ct: np.ndarray, cv: np.ndarray, t: float, period: float, timing: CounterTiming | None,
                 correct: bool, trace: _Trace | None = None, pt: np.ndarray | None = None,
                 pv: np.ndarray | None = None, modulus: float | None = None) -> _Anchor | None:
    """Picks the counter observation and update edge used at boundary ``t``.

    ``ct``/``cv``: every counter observation (dense boundary polls and sampler rows), sorted by time.
    Candidates are the observation nearest ``t`` and every observation that shows a new value within 3
    periods of ``t``; each gets the interval its edge must lie in (``_edge_of``), and the one whose
    boundary term is the least uncertain (edge ± times peak power, plus the power-trace interpolation
    between edge and ``t`` with the trace's whole power range in its largest gap, plus 1 % of the power
    over that span) wins. ``pt``/``pv`` (the polls alone) serve the uncorrected, plain delta.
    """
    if len(ct) == 0:
        return None
    if not correct:
        polls = pt is not None and len(pt) > 0
        src_t, src_v = (pt, pv) if polls else (ct, cv)
        i = int(np.argmin(np.abs(src_t - t)))
        return _Anchor(float(src_t[i]), float(src_v[i]), t, 0.0, "plain")
    if timing is not None:
        period_lo = max(timing.period_s - timing.period_err_s, 0.0)
        period_hi = timing.period_s + timing.period_err_s
    else:
        period_lo, period_hi = 0.0, period
    reach = 3.0 * period_hi
    j0 = int(np.searchsorted(ct, t - reach, side="left"))
    j1 = int(np.searchsorted(ct, t + reach, side="right"))
    near = int(np.argmin(np.abs(ct - t)))
    cands = {near}
    if j1 - j0 >= 2:
        changed = np.nonzero(cv[j0 + 1:j1] != cv[j0:j1 - 1])[0] + j0 + 1
        cands.update(int(b) for b in changed)
    best: _Anchor | None = None
    best_score = math.inf
    for b in sorted(cands):
        a = _edge_of(ct, cv, b, period_lo, period_hi, timing, modulus)
        if trace is not None:
            pmax, prange, gap = trace.span_stats(a.edge_s, t)
            # The interpolation term assumes the load's whole swing (not just the swing of the points
            # around the span) could hide in its largest gap: a burst between two sparse samples is
            # invisible to them, so a span the dense boundary polls cover beats one across sampler gaps.
            # Plus 1 % of the power over the span: the instant power need not match the counter's
            # exactly, so of two equally sharp edges the nearer one wins.
            score = (pmax * (a.half_width_s + 0.01 * abs(a.edge_s - t))
                     + 0.5 * max(prange, trace.power_range()) * gap)
        else:
            score = a.half_width_s + 0.01 * abs(a.edge_s - t)
        if score < best_score:
            best, best_score = a, score
    return best


def _interpolation_bound(trace: _Trace, a: float, b: float) -> float:
    """Returns the most the trace's integral over [a, b] can be off, J. Per gap h between its points: in a
    gap no longer than ``DENSE_GAP_S`` power is taken to move once, monotonically (a pulse shorter than that
    is below what the sensor resolves), so the trapezoid errs at most h·|Δp|/2; a longer gap may hide
    anything within the power range the trace saw, so at most h × the larger distance from the gap's
    interpolated mean to that range's ends."""
    if len(trace) == 0 or b <= a:
        return 0.0
    lo_w, hi_w = float(trace.p.min()), float(trace.p.max())
    inside = trace.t[(trace.t > a) & (trace.t < b)]
    knots = np.concatenate([[a], inside, [b]])
    vals = np.interp(knots, trace.t, trace.p)
    h = np.diff(knots)
    mean = 0.5 * (vals[:-1] + vals[1:])
    wide = h * np.maximum(hi_w - mean, mean - lo_w)
    dense = h * 0.5 * np.abs(np.diff(vals))
    return float(np.sum(np.where(h <= DENSE_GAP_S, dense, wide)))


def _chain_mj(ct: np.ndarray, cv: np.ndarray, a0: _Anchor, a1: _Anchor, modulus: float | None,
              trace: _Trace, period: float, power_limit_w: float | None = None,
              max_gap_s: float = math.inf,
              edge_of: Callable[[int], _Anchor] | None = None) -> tuple[float, float, int, float]:
    """Sums counter increments from anchor a0 to a1 through every observation between them; returns
    (energy J, bridged J, resets, extra uncertainty J).

    Backward steps are unwrapped with ``modulus`` when given; otherwise (a reset) the energy between the
    update edges behind the two observations (``edge_of``: index in ``ct`` → its edge and ±) is unknown to
    the counter. When the power trace observed that gap (points no further apart than ``max_gap_s``) it
    bridges it, ± the peak power × the edges' ± plus the most the trace's interpolation can be off
    there (``_interpolation_bound``). When nothing observed the gap, the counter after the reset still gives a lower bound (the energy
    since the reset, ``value``), and ``power_limit_w`` × (gap + one period) the most that can have
    been lost before it: the estimate is the middle of that interval, ± half of it (infinite without a
    power limit).
    """
    sign = 1.0
    if a1.t_obs < a0.t_obs:
        a0, a1, sign = a1, a0, -1.0
    inside = (ct > a0.t_obs) & (ct < a1.t_obs)
    ts = np.concatenate([[a0.t_obs], ct[inside], [a1.t_obs]])
    vs = np.concatenate([[a0.value], cv[inside], [a1.value]])
    total_mj = bridged = extra = 0.0
    resets = 0
    k, last = 0, len(vs) - 1
    while k < last:
        step = float(vs[k + 1] - vs[k])
        if step >= 0 or modulus:
            total_mj += step if step >= 0 else step + float(modulus)
            k += 1
            continue
        resets += 1
        # The counter restarted between k and k + 1. Readings of 0 after it hold no update edge (the reset is
        # no edge on the counter's grid): bridge to the first reading that counted something since.
        m = k + 1
        while m < last and vs[m] <= 0:
            m += 1
        a, b = float(ts[k]), float(ts[m])
        _, _, widest = trace.span_stats(a, b)
        if len(trace) >= 2 and widest <= max_gap_s:
            if edge_of is not None:
                ea = a0 if k == 0 else edge_of(int(np.searchsorted(ct, a)))
                eb = a1 if m == last else edge_of(int(np.searchsorted(ct, b)))
                bridged += trace.integral(ea.edge_s, eb.edge_s)
                extra += (trace.max_power() * (ea.half_width_s + eb.half_width_s)
                          + _interpolation_bound(trace, ea.edge_s, eb.edge_s))
            else:
                bridged += trace.integral(a, b)
                extra += trace.max_power() * period + _interpolation_bound(trace, a, b)
        else:
            low = float(vs[m]) / 1000.0
            if power_limit_w is None or not math.isfinite(power_limit_w):
                bridged += low
                extra = math.inf
            else:
                span = 0.5 * power_limit_w * (b - a + period)
                bridged += low + span
                extra += span
        k = m
    return sign * (total_mj / 1000.0 + bridged), bridged, resets, extra


def _averaged_energy(m: Samples, t0: float, t1: float, trace: _Trace) -> tuple[float, float] | None:
    """Returns (energy J, ± J) of [t0, t1] from the sensor's 1 s averaged power P̄ and the instant power
    ``trace``, or None without averaged reads. ``m``: the device's rows (sampler rows and boundary polls).

    With T = ``AVERAGE_WINDOW_S`` and P̄(τ) = (1/T)∫_{τ−T}^{τ} P, the integral of P̄ over [t0 + T, t1 + T]
    weighs P(s) by w(s) = |[s, s + T] ∩ [t0 + T, t1 + T]| / T, which is 1 inside the window except within T
    after each end. So

        E[t0, t1] = ∫_{t0+T}^{t1+T} P̄ dτ + ∫ P(s) (1_[t0,t1](s) − w(s)) ds,

    and the second term lives only on [t0, t0 + T] and [t1, t1 + T], which the boundary polls cover with
    instant power every poll interval. P̄ varies slowly (|dP̄/dt| ≤ range / T), so the trapezoid over its
    reads errs at most range/T × h²/4 per gap h; the correction term at most the trace's
    ``_interpolation_bound`` over the two spans (docs/methodology-energy.md).
    """
    ok = np.isfinite(m["power_avg_w"])
    if not ok.any() or len(trace) < 2:
        return None
    span = AVERAGE_WINDOW_S
    avg = _Trace(m["t_mono_s"][ok], m["power_avg_w"][ok].astype(np.float64))
    u, v = t0 + span, t1 + span
    main = avg.integral(u, v)
    slope = trace.power_range() / span  # bound of |dP̄/dt|, W/s
    knots = np.concatenate([[u], avg.t[(avg.t > u) & (avg.t < v)], [v]])
    unc = float(slope * np.sum(np.diff(knots) ** 2) / 4.0)
    unc += slope * avg.extrapolated_s(u, v) ** 2  # beyond the reads the flat extension drifts by ≤ slope × distance
    # the correction term, on a grid fine against the polls (0.1 ms), over where it is not zero
    pieces = [(t0, u), (t1, v)] if t1 - t0 >= span else [(t0, v)]
    correction = 0.0
    for lo, hi in pieces:
        s_grid = np.linspace(lo, hi, max(math.ceil((hi - lo) / 1e-4), 2) + 1)
        inside = ((s_grid >= t0) & (s_grid <= t1)).astype(np.float64)
        overlap = np.clip(np.minimum(s_grid + span, v) - np.maximum(s_grid, u), 0.0, None) / span
        f = (inside - overlap) * np.interp(s_grid, trace.t, trace.p)
        correction += float(np.sum(np.diff(s_grid) * 0.5 * (f[:-1] + f[1:])))
        unc += _interpolation_bound(trace, lo, hi)
    unc += trace.max_power() * (trace.extrapolated_s(t0, u) + trace.extrapolated_s(t1, v))
    return main + correction, unc


def _utc_offset_s(samples: Samples) -> float:
    """Returns the median of (UTC − monotonic) over the samples, s (the current offset if none)."""
    if len(samples):
        return float(np.median(samples["utc_ns"] / 1e9 - samples["t_mono_s"]))
    return time.time() - time.perf_counter()


def window_energy(
    samples: Samples,
    t0_s: float,
    t1_s: float,
    *,
    polls: Samples | None = None,
    counter_timing: CounterTiming | Sequence[CounterTiming | None] | None = None,
    counter_period_s: float | None = None,
    counter_modulus_mj: float | Sequence[float | None] | None = None,
    device_kinds: Sequence[str] | None = None,
    interval_s: float | None = None,
    sampler_error: str | None = None,
    boundary_correction: bool = True,
    n_devices: int | None = None,
    start_utc: datetime | None = None,
    end_utc: datetime | None = None,
    power_limit_w: Sequence[float | None] | None = None,
) -> WindowEnergy:
    """Returns the energy of the window [t0_s, t1_s] (monotonic s) from recorded samples.

    ``samples``: the sampler's rows (power trace and counter readings). ``polls``: extra dense counter and
    power reads near the boundaries (from ``EnergyMonitor``); they sharpen the boundary correction but do
    not count as trace samples. ``counter_timing``: learned update edges per device (or one for all).
    ``counter_modulus_mj``: counter wrap modulus, mJ. ``device_kinds``: 'nvml'/'simulated'/'replay' per
    device, for ``method``. ``interval_s``: the sampling interval, for the too-few-samples check.
    ``sampler_error``: the sampler's error message, if it stopped early. ``boundary_correction=False``
    gives the plain counter delta between the readings nearest the boundaries (what Zeus/CodeCarbon do).
    ``power_limit_w``: per device, W; bounds a counter reset that nothing observed. Without a counter
    the energy is the chain of 1 s averaged power reads plus the instant trace over the remainder
    (``_averaged_energy``), else the instant trace's integral. See docs/methodology-energy.md.
    """
    if t1_s < t0_s:
        raise ValueError(f"window_energy: t1_s={t1_s} is before t0_s={t0_s}; give t0_s <= t1_s (monotonic s)")
    uuids = samples.device_uuids or (polls.device_uuids if polls is not None else ())
    n = n_devices if n_devices is not None else max(len(uuids), 1)
    period = counter_period_s or DEFAULT_COUNTER_PERIOD_S
    timings: list[CounterTiming | None]
    if counter_timing is None or isinstance(counter_timing, CounterTiming):
        timings = [counter_timing] * n
    else:
        timings = list(counter_timing) + [None] * (n - len(counter_timing))
    if counter_modulus_mj is None or isinstance(counter_modulus_mj, int | float):
        moduli = [counter_modulus_mj] * n
    else:
        moduli = list(counter_modulus_mj) + [None] * (n - len(counter_modulus_mj))
    merged = _merge(samples, polls)
    duration = t1_s - t0_s
    warnings: list[str] = []
    per_dev: list[float] = []
    counter_per_dev: list[float | None] = []
    trace_per_dev: list[float | None] = []
    unc_per_dev: list[float] = []
    no_counter: list[int] = []
    resets_total = 0
    for i in range(n):
        s_i = samples.for_device(i)
        m_i = merged.for_device(i)
        trace_all = _Trace(m_i["t_mono_s"], m_i["power_w"].astype(np.float64))
        in_win = s_i.between(t0_s, t1_s)
        n_trace_pts = int(np.isfinite(in_win["power_w"]).sum())
        trace_j: float | None = None
        if n_trace_pts >= 2:
            trace_j = _Trace(s_i["t_mono_s"], s_i["power_w"].astype(np.float64)).integral(t0_s, t1_s)
        trace_per_dev.append(trace_j)
        if interval_s and duration > 0 and n_trace_pts < 0.5 * duration / interval_s:
            warnings.append(make_warning(
                "too_few_samples",
                f"device {i}: {n_trace_pts} power samples in {duration:.3f} s, expected about {duration / interval_s:.0f}"))
        ok = np.isfinite(m_i["energy_mj"])
        order = np.argsort(m_i["t_mono_s"][ok], kind="stable")
        ct, cv = m_i["t_mono_s"][ok][order], m_i["energy_mj"][ok][order]
        pt = pv = None
        if polls is not None and len(polls):
            p_i = polls.for_device(i)
            okp = np.isfinite(p_i["energy_mj"])
            order = np.argsort(p_i["t_mono_s"][okp], kind="stable")
            pt, pv = p_i["t_mono_s"][okp][order], p_i["energy_mj"][okp][order]
        timing = timings[i] if i < len(timings) else None
        p = timing.period_s if timing is not None else period
        a0 = _find_anchor(ct, cv, t0_s, p, timing, boundary_correction, trace_all, pt, pv, moduli[i])
        a1 = _find_anchor(ct, cv, t1_s, p, timing, boundary_correction, trace_all, pt, pv, moduli[i])
        if a0 is None or a1 is None:
            no_counter.append(i)
            counter_per_dev.append(None)
            averaged = _averaged_energy(m_i, t0_s, t1_s, trace_all) if boundary_correction else None
            if averaged is not None:
                per_dev.append(averaged[0])
                unc_per_dev.append(averaged[1])
                continue
            e = trace_j if trace_j is not None else 0.0
            per_dev.append(e)
            if trace_j is not None:
                pmax, prange, gap = trace_all.span_stats(t0_s, t1_s)
                unc_per_dev.append(0.5 * prange * gap + 0.01 * abs(e))
            else:
                unc_per_dev.append(math.inf if duration > 0 else 0.0)
            continue
        limit = power_limit_w[i] if power_limit_w is not None and i < len(power_limit_w) else None
        if timing is not None:
            p_lo, p_hi = max(timing.period_s - timing.period_err_s, 0.0), timing.period_s + timing.period_err_s
        else:
            p_lo, p_hi = 0.0, p

        def edge_of(idx: int, ct=ct, cv=cv, p_lo=p_lo, p_hi=p_hi, timing=timing, modulus=moduli[i]) -> _Anchor:
            return _edge_of(ct, cv, idx, p_lo, p_hi, timing, modulus)

        chain_j, _bridged, resets, extra_unc = _chain_mj(ct, cv, a0, a1, moduli[i], trace_all, p, limit,
                                                         max_gap_s=3.0 * (interval_s or p), edge_of=edge_of)
        if resets:
            resets_total += resets
            warnings.append(make_warning(
                "counter_reset",
                f"device {i}: energy counter went backwards {resets} time(s); the power trace bridges the gap"
                + ("" if math.isfinite(extra_unc) else " where it observed it; nothing observed the rest and no "
                   "power limit bounds it: the energy of this window is unknown (± inf)")))
        e_counter = chain_j
        unc = extra_unc + 2 * _QUANTUM_J
        for a, t in ((a0, t0_s), (a1, t1_s)):
            pmax, prange, gap = trace_all.span_stats(a.edge_s, t)
            if a.how == "plain":
                unc += pmax * p
                continue
            unc += pmax * a.half_width_s + 0.5 * prange * gap
            unc += trace_all.max_power() * trace_all.extrapolated_s(a.edge_s, t)
        if boundary_correction:
            e_counter += trace_all.integral(a1.edge_s, t1_s) - trace_all.integral(a0.edge_s, t0_s)
        if duration > 2 * p and e_counter <= 0 < (trace_j or 0.0):
            warnings.append(make_warning(
                "counter_reset", f"device {i}: energy counter did not advance over {duration:.2f} s; using the power trace"))
            e_counter = trace_j
            unc += 0.01 * abs(trace_j)
        counter_per_dev.append(e_counter)
        per_dev.append(e_counter)
        unc_per_dev.append(unc)
    total = float(sum(per_dev))
    trace_total = None if any(t is None for t in trace_per_dev) else float(sum(trace_per_dev))
    counter_total = None if no_counter else float(sum(v for v in counter_per_dev if v is not None))
    agreement = None
    if counter_total is not None and trace_total is not None and counter_total > 0:
        agreement = abs(counter_total - trace_total) / counter_total
        if agreement > DISAGREEMENT_THRESHOLD:
            warnings.append(make_warning(
                "counter_trace_disagreement",
                f"counter {counter_total:.3f} J vs trace {trace_total:.3f} J ({agreement * 100:.1f} %)"))
    if no_counter:
        warnings.append(make_warning(
            "energy_counter_unsupported",
            f"device(s) {no_counter}: energy from the 1 s averaged power (whole seconds) and the instant power "
            "(the remainder), or the integral of sampled power where no averaged power was read"))
    kinds = set(device_kinds or ())
    if kinds and kinds <= {"simulated"}:
        method = "simulated"
        warnings.append(make_warning("simulated_device", "all energy comes from simulated devices"))
    elif no_counter:
        method = "trace_integral"
    else:
        method = "nvml_counter"
    if "replay" in kinds:
        warnings.append(make_warning("replay_device", "energy comes from a replayed power trace"))
    if sampler_error:
        warnings.append(make_warning("sampler_error", sampler_error))
    offset = _utc_offset_s(samples if len(samples) else merged)
    t_p = timings[0].period_s if timings and timings[0] is not None else period
    return WindowEnergy(
        start_mono_s=t0_s,
        end_mono_s=t1_s,
        start_utc=start_utc or datetime.fromtimestamp(t0_s + offset, tz=UTC),
        end_utc=end_utc or datetime.fromtimestamp(t1_s + offset, tz=UTC),
        duration_s=duration,
        energy_per_device_j=per_dev,
        total_energy_j=total,
        trace_energy_per_device_j=trace_per_dev,
        trace_energy_j=trace_total,
        agreement=agreement,
        method=method,
        uncertainty_j=float(sum(unc_per_dev)),
        counter_updates=duration / t_p,
        warnings=list(dict.fromkeys(warnings)),
        device_uuids=tuple(uuids),
        uncertainty_per_device_j=unc_per_dev,
        counter_energy_per_device_j=counter_per_dev,
    )


def estimate_window(evidence: WindowEvidence, t0_s: float, t1_s: float) -> WindowEnergy:
    """Returns the energy of [t0_s, t1_s] (monotonic s) from ``evidence`` (``window_energy`` on all of it:
    sampler rows, dense boundary polls, counter timing); the result carries the evidence. This is the one
    computation behind every stored window energy (docs/methodology-energy.md)."""
    ev = evidence
    result = window_energy(
        ev.samples, t0_s, t1_s, polls=ev.polls, counter_timing=list(ev.counter_timing),
        counter_modulus_mj=list(ev.counter_modulus_mj), device_kinds=list(ev.device_kinds),
        interval_s=ev.interval_s, sampler_error=ev.sampler_error, boundary_correction=ev.boundary_correction,
        n_devices=ev.n_devices, power_limit_w=list(ev.power_limit_w),
        start_utc=ev.start_utc + timedelta(seconds=t0_s - ev.start_mono_s),
        end_utc=ev.start_utc + timedelta(seconds=t1_s - ev.start_mono_s),
    )
    result.evidence = ev
    return result


class _ThreadPolls:
    """A window start's dense polls, run by the monitor's background poller thread; ``result()`` waits for
    them and returns ``poll_edges``'s (boundary time s, reads per device), or raises what the polls raised.

    ``follow_s``: after the dense polls, every device is read every ``follow_s`` s (counter, instant power;
    averaged power where there is no counter) until ``stop()``: without a sampler these reads are all the
    window sees between its two ends (they bridge a counter reset and carry the averaged power)."""

    def __init__(self, kwargs: dict[str, Any], follow_s: float | None = None) -> None:
        self.kwargs = kwargs
        self.follow_s = follow_s
        self._stop = threading.Event()
        self._done = threading.Event()
        self._out: tuple[float, dict[int, list[tuple[float, ...]]]] | None = None
        self._err: BaseException | None = None

    def run(self, monitor: EnergyMonitor) -> None:
        """Runs the polls (in the poller thread) and wakes ``result()``."""
        try:
            self._out = monitor.poll_edges(**self.kwargs)
            rows = self._out[1]
            if self.follow_s:
                while not self._stop.wait(self.follow_s):
                    for i in sorted(rows):
                        rows[i].append(monitor._read(i))
        except BaseException as exc:  # handed to result()
            self._err = exc
        finally:
            self._done.set()

    def stop(self) -> None:
        """Ends the follow-up reads (``result()`` then returns once the current read is done)."""
        self._stop.set()

    def done(self) -> bool:
        """Returns True once the polls finished."""
        return self._done.is_set()

    def result(self) -> tuple[float, dict[int, list[tuple[float, ...]]]]:
        """Waits for the polls; returns (boundary time s, reads per device)."""
        self._done.wait()
        if self._err is not None:
            raise self._err
        assert self._out is not None
        return self._out


def _poller_main(jobs: queue.SimpleQueue, monitor_ref: weakref.ref) -> None:
    """The background poller: runs each queued ``_ThreadPolls`` until it receives None or the monitor is gone."""
    while (job := jobs.get()) is not None:
        monitor = monitor_ref()
        if monitor is None:
            return
        job.run(monitor)
        del monitor


# -- live windows -----------------------------------------------------------------------------------
class EnergyMonitor:
    """Zeus-like begin/end windows over devices, with the boundary correction done live.

    ``begin_window()`` returns at once (the start's polls run in the sampler's process or a background
    poller thread, see ``begin_window``); ``end_window(start)`` polls each counter until it steps (at most
    ``edge_timeout_s``; GPUs without a counter: instant and averaged power for a second) and returns the
    window's ``WindowEnergy``. With a running ``sampler`` its rows join the evidence and give the
    cross-check (``agreement``). Each completed window refines ``counter_timing`` (update period and phase
    per device); ``calibrate=True`` learns it from the first window's start polls when ``calibrate()``
    was not called before. ``close()`` stops the background poller.
    """

    def __init__(
        self,
        devices: Sequence[Device],
        sampler=None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval_s: float = 0.0005,
        edge_timeout_s: float = 0.35,
        boundary_correction: bool = True,
        counter_modulus_mj: Sequence[float | None] | None = None,
        start_polls: str = "auto",
        calibrate: bool = True,
    ) -> None:
        if start_polls not in ("auto", "background", "inline"):
            raise ValueError(f"EnergyMonitor: start_polls={start_polls!r} must be 'auto', 'background' or 'inline'")
        self.devices = list(devices)
        self.sampler = sampler
        self.clock = clock
        self.sleep = sleep
        self.poll_interval_s = float(poll_interval_s)
        self.edge_timeout_s = float(edge_timeout_s)
        self.boundary_correction = boundary_correction
        self.counter_modulus_mj = list(counter_modulus_mj) if counter_modulus_mj else [
            getattr(d, "counter_modulus_mj", None) for d in self.devices]
        self.counter_timing: list[CounterTiming | None] = [None] * len(self.devices)
        self._period_rel_err: list[float] = [0.05] * len(self.devices)
        self._calibrate = calibrate
        self._jobs: queue.SimpleQueue | None = None
        # 'auto': background on the real clock; inline with an injected clock (time passes only when polled)
        self.start_polls = start_polls if start_polls != "auto" else (
            "background" if clock is time.perf_counter else "inline")
        self.uuids = tuple(d.uuid for d in self.devices)
        self.poll_count = 0
        self.read_errors = 0  # boundary reads that failed and were retried
        self.last_polls: Samples | None = None  # the boundary polls of the last completed window (both ends)
        if (self.start_polls == "background" and self.boundary_correction
                and not hasattr(sampler, "poll_edges_async")):
            self._poller_jobs()  # started now, so that begin_window only hands it a job

    # -- polling --------------------------------------------------------------------------------
    def _read(self, i: int) -> tuple[float, float, float, float, float]:
        """Returns (t_energy s, energy mJ, t_power s, power W, averaged power W); each time is the midpoint of
        its own read. The 1 s averaged power is read (right after the instant power, at about the same
        time) only on devices without an energy counter; NaN otherwise.

        A failed read (a transient NVMLError) is retried after ``poll_interval_s``, at most
        ``READ_RETRIES`` times (counted in ``read_errors``); an error that persists (a lost GPU) propagates.
        """
        d = self.devices[i]
        for attempt in range(READ_RETRIES + 1):
            try:
                ta = self.clock()
                e = d.energy_mj()
                tm = self.clock()
                p = d.power_w()
                tb = self.clock()
                avg = d.average_power_w() if e is None and hasattr(d, "average_power_w") else None
                break
            except Exception:
                if attempt == READ_RETRIES:
                    raise
                self.read_errors += 1
                self.sleep(self.poll_interval_s)
        self.poll_count += 1
        return (0.5 * (ta + tm), math.nan if e is None else float(e),
                0.5 * (tm + tb), math.nan if p is None else float(p), math.nan if avg is None else float(avg))

    def poll_edges(self, until_edges: int, timeout_s: float, min_s: float = 0.0,
                   power_span_s: float = 0.0) -> tuple[float, dict[int, list[tuple[float, ...]]]]:
        """Reads all devices now, then polls each until its counter changed ``until_edges`` times and at
        least ``min_s`` s passed (at most ``timeout_s`` s); devices without a counter are polled (instant
        and averaged power) for ``power_span_s`` s. Returns (boundary time s, reads per device, see
        ``_read``)."""
        t_boundary = self.clock()
        rows: dict[int, list[tuple[float, ...]]] = {i: [self._read(i)] for i in range(len(self.devices))}
        changes = {i: 0 for i in rows}
        counting = {i for i in rows if math.isfinite(rows[i][0][1])}
        power_only = set(rows) - counting
        pending = set(counting)
        if not self.boundary_correction:
            return t_boundary, rows
        while ((elapsed := self.clock() - t_boundary) < max(timeout_s, power_span_s)
               and ((elapsed < timeout_s and (pending or (counting and elapsed < min_s)))
                    or (power_only and elapsed < power_span_s))):
            self.sleep(self.poll_interval_s)
            now = self.clock() - t_boundary
            due = set(counting if now < min_s else pending) if now < timeout_s else set()
            if now < power_span_s:
                due |= power_only
            for i in sorted(due):
                r = self._read(i)
                if r[1] != rows[i][-1][1]:
                    changes[i] += 1
                    if changes[i] >= until_edges:
                        pending.discard(i)
                rows[i].append(r)
        return t_boundary, rows

    @staticmethod
    def _rows_to_samples(rows: dict[int, list[tuple[float, ...]]], uuids: tuple[str, ...]) -> Samples:
        """Returns the polls as Samples: one energy-only and one power-only row (instant and, where read,
        averaged power) per poll."""
        n = 2 * sum(len(v) for v in rows.values())
        cols = {k: np.full(n, np.nan if dt.kind == "f" else -1, dtype=dt) for k, dt in COLUMNS.items()}
        j = 0
        now_ns = time.time_ns()
        now_mono = time.perf_counter()
        for i, lst in rows.items():
            for row in lst:
                te, e, tp, p = row[:4]
                for t, col, v in ((te, "energy_mj", e), (tp, "power_w", p)):
                    cols["device_index"][j] = i
                    cols["t_mono_s"][j] = t
                    cols["utc_ns"][j] = now_ns + int((t - now_mono) * 1e9)
                    cols[col][j] = v
                    j += 1
                if len(row) > 4:
                    cols["power_avg_w"][j - 1] = row[4]
        order = np.argsort(cols["t_mono_s"], kind="stable")
        return Samples({k: v[order] for k, v in cols.items()}, uuids)

    def calibrate(self, edges: int = 6, max_s: float = 1.2, min_s: float = 0.5) -> list[CounterTiming | None]:
        """Learns each counter's update period and phase by tight polling (like Zeus's period inference).

        Polls until ``edges`` counter steps were seen and ``min_s`` s passed (at most ``max_s`` s); the
        period is the span between the first and last bracketed step divided by the steps between them
        (each gap between bracketed steps counted against the median gap). Its ± is the two edges'
        bracket widths over that span, so polling at least ``min_s`` keeps it small for fast counters too
        (6 steps of a 20 ms counter span only 0.1 s: ± 2 %, too coarse to count the steps across a 1 s
        window). Returns the timings per device (None where no steps were seen).
        """
        _, rows = self.poll_edges(until_edges=edges, timeout_s=max_s, min_s=min_s)
        return self._timing_from_polls(rows)

    def _timing_from_polls(self, rows: dict[int, list[tuple[float, ...]]]) -> list[CounterTiming | None]:
        """Learns each counter's period and phase from dense polls (see ``calibrate``); returns the timings."""
        for i, lst in rows.items():
            found: list[tuple[float, float]] = []  # (edge mid, half width)
            for ra, rb in itertools.pairwise(lst):
                (ta, ea), (tb, eb) = ra[:2], rb[:2]
                if math.isfinite(ea) and _update_step(ea, eb, self.counter_modulus_mj[i]):
                    found.append((0.5 * (ta + tb), 0.5 * (tb - ta)))
            if len(found) >= 2:
                mids = np.array([f[0] for f in found])
                gaps = np.diff(mids)
                step = float(np.median(gaps))
                # count the steps gap by gap: bracket jitter against the poll grid skews the median gap
                # (e.g. 10.7 ms for a 10 ms counter polled every 2 ms), so span / median miscounts long spans
                k = int(np.maximum(np.rint(gaps / step), 1).sum())
                period = float((mids[-1] - mids[0]) / k)
                hw = max(found[0][1], found[-1][1])
                self._period_rel_err[i] = 2 * hw / (k * period)
                self.counter_timing[i] = CounterTiming(period, float(mids[-1]), self._period_rel_err[i] * period,
                                                       ref_s=float(mids[0]), edge_err_s=max(hw, 0.002))
        return list(self.counter_timing)

    # -- windows --------------------------------------------------------------------------------
    def begin_window(self) -> WindowStart:
        """Starts a window now (the caller's instant is its start) and returns at once; keep the result for
        ``end_window``.

        The start's dense polls (counter and instant power until the counter's next update edge; instant
        and averaged power for ``AVERAGE_WINDOW_S`` on devices without a counter) run elsewhere while the
        caller goes on: in the sampler's process when it polls there (``poll_edges_async``), else in a
        background thread (``start_polls='background'``). ``start_polls='inline'`` polls here before
        returning (for an injected clock that only advances when someone sleeps). Without boundary
        correction the start is one read, here.
        """
        utc = datetime.now(UTC)
        t0 = self.clock()
        kw: dict[str, Any] = {"until_edges": 1, "timeout_s": self.edge_timeout_s,
                              "power_span_s": 1.05 * AVERAGE_WINDOW_S}
        if self._calibrate and all(t is None for t in self.counter_timing):
            # not calibrated yet: the start's polls run long enough to learn the counter's timing too
            kw.update(until_edges=6, timeout_s=max(1.2, self.edge_timeout_s), min_s=0.5)
        if not self.boundary_correction:
            _, rows = self.poll_edges(until_edges=1, timeout_s=0.0)
            return WindowStart(t0, utc, self._rows_to_samples(rows, self.uuids))
        poll_async = getattr(self.sampler, "poll_edges_async", None)
        if poll_async is not None:
            return WindowStart(t0, utc, Samples.empty(self.uuids), pending=poll_async(**kw))
        if self.start_polls == "background":
            job = _ThreadPolls(kw, follow_s=FOLLOW_S if self.sampler is None else None)
            self._poller_jobs().put(job)  # a queue put: the caller goes on while the poller thread polls
            return WindowStart(t0, utc, Samples.empty(self.uuids), pending=job)
        _, rows = self.poll_edges(**kw)
        return WindowStart(t0, utc, self._rows_to_samples(rows, self.uuids))

    def _poller_jobs(self) -> queue.SimpleQueue:
        """Returns the background poller's job queue, starting the (daemon) poller thread on first use."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=_poller_main, args=(self._jobs, weakref.ref(self)), name="llem-start-polls",
                             daemon=True).start()
            weakref.finalize(self, self._jobs.put, None)  # a monitor that is collected stops its poller
        return self._jobs

    def close(self) -> None:
        """Stops the background poller thread (if one runs)."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    def _start_polls(self, start: WindowStart) -> Samples:
        """Returns the start's boundary polls: taken at begin, or collected from where they ran (none when
        that failed: the sampler's ``error`` then says why, and the window relies on its rows)."""
        if start.pending is None:
            polls = start.polls
            rows = None
        else:
            stop = getattr(start.pending, "stop", None)
            if stop is not None:
                stop()
            try:
                _, rows = start.pending.result()
            except Exception:
                return start.polls
            polls = self._rows_to_samples(rows, self.uuids)
        if self._calibrate and all(t is None for t in self.counter_timing):
            self._timing_from_polls(rows if rows is not None else self._samples_to_rows(polls))
        return polls

    @staticmethod
    def _samples_to_rows(polls: Samples) -> dict[int, list[tuple[float, ...]]]:
        """Returns the energy reads of ``polls`` as ``poll_edges`` rows (t, mJ, t, W) per device."""
        out: dict[int, list[tuple[float, ...]]] = {}
        ok = np.isfinite(polls["energy_mj"])
        for i, t, e in zip(polls["device_index"][ok], polls["t_mono_s"][ok], polls["energy_mj"][ok], strict=True):
            out.setdefault(int(i), []).append((float(t), float(e), float(t), math.nan))
        return out

    def end_window(self, start: WindowStart) -> WindowEnergy:
        """Ends the window started by ``start`` now; returns its energy (``WindowEnergy``: ``energy_j``,
        ``uncertainty_j``, ``method`` and the ``evidence`` it came from; ``over(a, b)`` gives any
        sub-window from the same evidence). Polls until each counter's next update edge (at most
        ``edge_timeout_s``) before computing."""
        t1, rows = self.poll_edges(until_edges=1, timeout_s=self.edge_timeout_s,
                                   power_span_s=1.05 * AVERAGE_WINDOW_S)
        polls = _merge(self._start_polls(start), self._rows_to_samples(rows, self.uuids))
        self.last_polls = polls
        if self.sampler is not None:
            samples = self.sampler.snapshot()
            interval = self.sampler.interval_s
            error = getattr(self.sampler, "error_message", None)
        else:
            samples = Samples.empty(self.uuids)
            interval = None
            error = None
        self._learn_timing(polls, start.t_mono_s, t1)
        evidence = WindowEvidence(
            samples=samples, polls=polls, counter_timing=tuple(self.counter_timing),
            counter_modulus_mj=tuple(self.counter_modulus_mj), device_kinds=tuple(d.kind for d in self.devices),
            interval_s=interval, sampler_error=error, boundary_correction=self.boundary_correction,
            n_devices=len(self.devices), power_limit_w=tuple(self._power_limits()),
            start_mono_s=start.t_mono_s, start_utc=start.utc)
        return estimate_window(evidence, start.t_mono_s, t1)

    def _power_limits(self) -> list[float | None]:
        """Returns each device's enforced power limit, W (None where it cannot be read)."""
        out: list[float | None] = []
        for d in self.devices:
            try:
                v = d.power_limit_w()
            except Exception:
                v = None
            out.append(None if v is None else float(v))
        return out

    def _learn_timing(self, polls: Samples, t0: float, t1: float) -> None:
        for i in range(len(self.devices)):
            p = polls.for_device(i)
            t, e = p["t_mono_s"], p["energy_mj"]
            ok = np.isfinite(e)
            t, e = t[ok], e[ok]
            if len(t) < 2:
                continue
            prior_timing = self.counter_timing[i]
            prior = prior_timing.period_s if prior_timing else DEFAULT_COUNTER_PERIOD_S
            ch = np.nonzero(_update_step(e[:-1], e[1:], self.counter_modulus_mj[i]))[0] + 1
            ch = ch[t[ch] - t[ch - 1] <= min(0.25 * prior, 0.02)]  # tight brackets only (not the gap between ends)
            edges = 0.5 * (t[ch] + t[ch - 1])
            half = 0.5 * (t[ch] - t[ch - 1])
            first = np.nonzero(edges >= t0)[0]
            last = np.nonzero(edges >= t1)[0]
            if len(first) == 0 or len(last) == 0:
                continue
            j0, j1 = int(first[0]), int(last[0])
            e0, e1 = float(edges[j0]), float(edges[j1])
            hw = max(float(half[j0]), float(half[j1]))
            k = round((e1 - e0) / prior)
            # refine the period only when the number of steps between the two edges is unambiguous and the
            # two edges pin it better than what is known
            ambiguity = k * self._period_rel_err[i] + 2 * hw / prior  # ± of (e1 − e0) / prior, in steps
            if k >= 1 and ambiguity < 0.4 and 2 * hw / (e1 - e0) < self._period_rel_err[i]:
                period = (e1 - e0) / k
                self._period_rel_err[i] = 2 * hw / (k * period)
                self.counter_timing[i] = CounterTiming(period, e1, self._period_rel_err[i] * period, ref_s=e0,
                                                       edge_err_s=max(hw, 0.002))
            else:
                self.counter_timing[i] = CounterTiming(prior, e1, self._period_rel_err[i] * prior,
                                                       edge_err_s=max(float(half[j1]), 0.002))
