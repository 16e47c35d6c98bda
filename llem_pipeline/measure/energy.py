"""Energy of a time window: NVML counter deltas with boundary correction, cross-checked by the power trace.

The NVML energy counter (mJ) only changes at update edges, about every 100 ms, and between edges holds
the energy up to the last edge. A plain delta of two reads therefore errs by up to one counter step at
each end of the window. The correction used here (SPEC §3.2):

    E[t0, t1] = C(e1) − C(e0) + ∫_{e1}^{t1} P dt − ∫_{e0}^{t0} P dt

where ``e0``/``e1`` are update edges near the boundaries whose counter values ``C(e)`` are known. At a
live boundary ``EnergyMonitor`` polls the counter (and instant power) every ``poll_interval_s`` right
after the boundary until it steps, which brackets the edge to one poll interval and fills the partial
step from densely polled power. For any sub-window of recorded samples, ``window_energy`` finds edges
from bracketed counter changes in the samples, from a learned update period and phase
(``CounterTiming``), or assumes the edge half a period before the reading, and says how uncertain that
is in ``uncertainty_j`` (J, a ± bound).

Counter wraps (a known modulus) are unwrapped; a counter that goes backwards without a known modulus
(driver reload, reset) is bridged with the power trace over the gap and reported as ``counter_reset``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from llem_pipeline.domain.warnings import make_warning
from llem_pipeline.measure.devices.protocol import Device
from llem_pipeline.measure.samples import COLUMNS, Samples

DEFAULT_COUNTER_PERIOD_S = 0.1
DISAGREEMENT_THRESHOLD = 0.05
_QUANTUM_J = 0.001  # the counter's 1 mJ resolution
READ_RETRIES = 3  # a failed boundary read is retried this many times before the error propagates


@dataclass(frozen=True)
class CounterTiming:
    """A counter's update edges: ``phase_s + k × period_s`` (monotonic s)."""

    period_s: float
    phase_s: float
    period_err_s: float = 0.0  # ± uncertainty of period_s, s

    def edge_uncertainty_s(self, t: float) -> float:
        """Returns the ± uncertainty of the predicted edge near ``t``, s (grows with distance from phase_s)."""
        return 0.002 + abs(t - self.phase_s) / self.period_s * self.period_err_s

    def last_edge(self, t: float) -> float:
        """Returns the last update edge at or before ``t``, s (monotonic)."""
        return self.phase_s + math.floor((t - self.phase_s) / self.period_s) * self.period_s


@dataclass(frozen=True)
class WindowStart:
    """State captured by ``EnergyMonitor.begin_window`` (boundary polls per device, monotonic start)."""

    t_mono_s: float
    utc: datetime
    polls: Samples
    sampler_rows: int = 0


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


def _bracket(ct: np.ndarray, cv: np.ndarray, t: float, period: float) -> _Anchor | None:
    """Returns the counter step nearest ``t`` seen between two close observations (None if none)."""
    if len(ct) < 2:
        return None
    max_bracket = min(0.25 * period, 0.02)
    changed = np.nonzero((cv[1:] != cv[:-1]) & ((ct[1:] - ct[:-1]) <= max_bracket))[0] + 1
    if not len(changed):
        return None
    mids = 0.5 * (ct[changed] + ct[changed - 1])
    near = np.abs(mids - t) <= 1.5 * period
    if not np.any(near):
        return None
    cand, m = changed[near], mids[near]
    k = int(np.argmin(np.abs(m - t)))
    b = int(cand[k])
    return _Anchor(float(ct[b]), float(cv[b]), float(m[k]), 0.5 * float(ct[b] - ct[b - 1]), "bracket")


def _find_anchor(ct: np.ndarray, cv: np.ndarray, t: float, period: float, timing: CounterTiming | None,
                 correct: bool, pt: np.ndarray | None = None, pv: np.ndarray | None = None) -> _Anchor | None:
    """Picks the counter observation and update edge used at boundary ``t``.

    ``pt``/``pv``: the dense boundary polls (preferred: their timestamps are tight); ``ct``/``cv``: every
    counter observation (polls and sampler rows).
    """
    if len(ct) == 0:
        return None
    polls = pt is not None and len(pt) > 0
    if not correct:
        src_t, src_v = (pt, pv) if polls else (ct, cv)
        i = int(np.argmin(np.abs(src_t - t)))
        return _Anchor(float(src_t[i]), float(src_v[i]), t, 0.0, "plain")
    found = _bracket(pt, pv, t, period) if polls else None
    if found is None:
        found = _bracket(ct, cv, t, period)
    if found is not None:
        return found
    i = int(np.argmin(np.abs(ct - t)))
    if timing is not None:
        hw = timing.edge_uncertainty_s(float(ct[i]))
        if hw < 0.5 * period:
            return _Anchor(float(ct[i]), float(cv[i]), timing.last_edge(float(ct[i])), hw, "timing")
    return _Anchor(float(ct[i]), float(cv[i]), float(ct[i]) - 0.5 * period, 0.5 * period, "assumed")


def _chain_mj(ct: np.ndarray, cv: np.ndarray, a0: _Anchor, a1: _Anchor, modulus: float | None,
              trace: _Trace, period: float) -> tuple[float, float, int, float]:
    """Sums counter increments from anchor a0 to a1 through every observation between them; returns
    (energy J, bridged J, resets, extra uncertainty J).

    Backward steps are unwrapped with ``modulus`` when given; otherwise (a reset) the gap between the two
    observations is bridged with the trace integral.
    """
    sign = 1.0
    if a1.t_obs < a0.t_obs:
        a0, a1, sign = a1, a0, -1.0
    inside = (ct > a0.t_obs) & (ct < a1.t_obs)
    ts = np.concatenate([[a0.t_obs], ct[inside], [a1.t_obs]])
    vs = np.concatenate([[a0.value], cv[inside], [a1.value]])
    d = np.diff(vs)
    total_mj = float(d[d >= 0].sum())
    bridged = 0.0
    resets = 0
    extra = 0.0
    for k in np.nonzero(d < 0)[0]:
        if modulus:
            total_mj += float(d[k]) + float(modulus)
            continue
        a, b = float(ts[k]), float(ts[k + 1])
        gap = trace.integral(a, b)
        bridged += gap
        resets += 1
        pmax, _, _ = trace.span_stats(a, b)
        extra += pmax * period
    return sign * (total_mj / 1000.0 + bridged), bridged, resets, extra


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
) -> WindowEnergy:
    """Returns the energy of the window [t0_s, t1_s] (monotonic s) from recorded samples.

    ``samples``: the sampler's rows (power trace and counter readings). ``polls``: extra dense counter and
    power reads near the boundaries (from ``EnergyMonitor``); they sharpen the boundary correction but do
    not count as trace samples. ``counter_timing``: learned update edges per device (or one for all).
    ``counter_modulus_mj``: counter wrap modulus, mJ. ``device_kinds``: 'nvml'/'simulated'/'replay' per
    device, for ``method``. ``interval_s``: the sampling interval, for the too-few-samples check.
    ``sampler_error``: the sampler's error message, if it stopped early. ``boundary_correction=False``
    gives the plain counter delta between the readings nearest the boundaries (what Zeus/CodeCarbon do).
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
        ct, cv = m_i["t_mono_s"][ok], m_i["energy_mj"][ok]
        pt = pv = None
        if polls is not None and len(polls):
            p_i = polls.for_device(i)
            okp = np.isfinite(p_i["energy_mj"])
            order = np.argsort(p_i["t_mono_s"][okp], kind="stable")
            pt, pv = p_i["t_mono_s"][okp][order], p_i["energy_mj"][okp][order]
        timing = timings[i] if i < len(timings) else None
        p = timing.period_s if timing is not None else period
        a0 = _find_anchor(ct, cv, t0_s, p, timing, boundary_correction, pt, pv)
        a1 = _find_anchor(ct, cv, t1_s, p, timing, boundary_correction, pt, pv)
        if a0 is None or a1 is None:
            no_counter.append(i)
            counter_per_dev.append(None)
            e = trace_j if trace_j is not None else 0.0
            per_dev.append(e)
            if trace_j is not None:
                pmax, prange, gap = trace_all.span_stats(t0_s, t1_s)
                unc_per_dev.append(0.5 * prange * gap + 0.01 * abs(e))
            else:
                unc_per_dev.append(math.inf if duration > 0 else 0.0)
            continue
        chain_j, _bridged, resets, extra_unc = _chain_mj(ct, cv, a0, a1, moduli[i], trace_all, p)
        if resets:
            resets_total += resets
            warnings.append(make_warning(
                "counter_reset",
                f"device {i}: energy counter went backwards {resets} time(s); the power trace bridges the gap"))
        e_counter = chain_j
        unc = extra_unc + 2 * _QUANTUM_J
        for a, t in ((a0, t0_s), (a1, t1_s)):
            pmax, prange, gap = trace_all.span_stats(a.edge_s, t)
            if a.how == "plain":
                unc += pmax * p
                continue
            unc += pmax * a.half_width_s + 0.5 * prange * gap
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
            "energy_counter_unsupported", f"device(s) {no_counter}: energy is the integral of sampled power"))
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


# -- live windows -----------------------------------------------------------------------------------
class EnergyMonitor:
    """Zeus-like begin/end windows over devices, with the boundary correction done live.

    ``begin_window()`` / ``end_window(start)`` read every device's counter at the exact boundary and then
    poll counter and instant power every ``poll_interval_s`` until the counter steps (at most
    ``edge_timeout_s``), so the partial counter steps at both ends are filled from densely read power.
    With a running ``sampler`` the window's power trace gives the cross-check (``agreement``). Each
    completed window refines ``counter_timing`` (update period and phase per device), which
    ``window_energy`` can use for sub-windows of the recorded samples.
    """

    def __init__(
        self,
        devices: Sequence[Device],
        sampler=None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval_s: float = 0.002,
        edge_timeout_s: float = 0.35,
        boundary_correction: bool = True,
        counter_modulus_mj: Sequence[float | None] | None = None,
        calibrate: bool = True,
    ) -> None:
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
        self.uuids = tuple(d.uuid for d in self.devices)
        self.poll_count = 0
        self.read_errors = 0  # boundary reads that failed and were retried
        self.last_polls: Samples | None = None  # the boundary polls of the last completed window (both ends)

    # -- polling --------------------------------------------------------------------------------
    def _read(self, i: int) -> tuple[float, float, float, float]:
        """Returns (t_energy s, energy mJ, t_power s, power W); each time is the midpoint of its own read.

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
                break
            except Exception:
                if attempt == READ_RETRIES:
                    raise
                self.read_errors += 1
                self.sleep(self.poll_interval_s)
        self.poll_count += 1
        return (0.5 * (ta + tm), math.nan if e is None else float(e),
                0.5 * (tm + tb), math.nan if p is None else float(p))

    def _poll(self, until_edges: int, timeout_s: float) -> tuple[float, dict[int, list[tuple[float, float, float, float]]]]:
        """Reads all devices now, then polls each until its counter changed ``until_edges`` times."""
        t_boundary = self.clock()
        rows: dict[int, list[tuple[float, float, float, float]]] = {i: [self._read(i)] for i in range(len(self.devices))}
        changes = {i: 0 for i in rows}
        pending = {i for i in rows if math.isfinite(rows[i][0][1])}
        if not self.boundary_correction:
            return t_boundary, rows
        while pending and self.clock() - t_boundary < timeout_s:
            self.sleep(self.poll_interval_s)
            for i in list(pending):
                r = self._read(i)
                if r[1] != rows[i][-1][1]:
                    changes[i] += 1
                    if changes[i] >= until_edges:
                        pending.discard(i)
                rows[i].append(r)
        return t_boundary, rows

    @staticmethod
    def _rows_to_samples(rows: dict[int, list[tuple[float, float, float, float]]], uuids: tuple[str, ...]) -> Samples:
        """Returns the polls as Samples: one energy-only and one power-only row per poll."""
        n = 2 * sum(len(v) for v in rows.values())
        cols = {k: np.full(n, np.nan if dt.kind == "f" else -1, dtype=dt) for k, dt in COLUMNS.items()}
        j = 0
        now_ns = time.time_ns()
        now_mono = time.perf_counter()
        for i, lst in rows.items():
            for te, e, tp, p in lst:
                for t, col, v in ((te, "energy_mj", e), (tp, "power_w", p)):
                    cols["device_index"][j] = i
                    cols["t_mono_s"][j] = t
                    cols["utc_ns"][j] = now_ns + int((t - now_mono) * 1e9)
                    cols[col][j] = v
                    j += 1
        order = np.argsort(cols["t_mono_s"], kind="stable")
        return Samples({k: v[order] for k, v in cols.items()}, uuids)

    def calibrate(self, edges: int = 6, max_s: float = 1.2) -> list[CounterTiming | None]:
        """Learns each counter's update period and phase by tight polling (like Zeus's period inference).

        Polls until ``edges`` counter steps were seen (at most ``max_s`` s); the period is the span between
        the first and last bracketed step divided by the steps between them (median step as a guard).
        Returns the timings per device (None where no steps were seen).
        """
        _, rows = self._poll(until_edges=edges, timeout_s=max_s)
        for i, lst in rows.items():
            found: list[tuple[float, float]] = []  # (edge mid, half width)
            for (ta, ea, _, _), (tb, eb, _, _) in itertools.pairwise(lst):
                if math.isfinite(ea) and eb != ea:
                    found.append((0.5 * (ta + tb), 0.5 * (tb - ta)))
            if len(found) >= 2:
                mids = np.array([f[0] for f in found])
                step = float(np.median(np.diff(mids)))
                k = max(round((mids[-1] - mids[0]) / step), 1)
                period = float((mids[-1] - mids[0]) / k)
                hw = max(f[1] for f in found)
                self._period_rel_err[i] = 2 * hw / (k * period)
                self.counter_timing[i] = CounterTiming(period, float(mids[-1]), self._period_rel_err[i] * period)
        return list(self.counter_timing)

    # -- windows --------------------------------------------------------------------------------
    def begin_window(self) -> WindowStart:
        """Starts a window now; returns its start state (keep it for ``end_window``)."""
        if self._calibrate and self.boundary_correction and all(t is None for t in self.counter_timing):
            self.calibrate()
        utc = datetime.now(UTC)
        t0, rows = self._poll(until_edges=1, timeout_s=self.edge_timeout_s)
        rows_before = len(self.sampler.snapshot()) if self.sampler is not None else 0
        return WindowStart(t0, utc, self._rows_to_samples(rows, self.uuids), rows_before)

    def end_window(self, start: WindowStart) -> WindowEnergy:
        """Ends the window started by ``start``; returns its energy (see WindowEnergy)."""
        t1, rows = self._poll(until_edges=1, timeout_s=self.edge_timeout_s)
        polls = _merge(start.polls, self._rows_to_samples(rows, self.uuids))
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
        result = window_energy(
            samples, start.t_mono_s, t1, polls=polls, counter_timing=self.counter_timing,
            counter_modulus_mj=self.counter_modulus_mj, device_kinds=[d.kind for d in self.devices],
            interval_s=interval, sampler_error=error, boundary_correction=self.boundary_correction,
            n_devices=len(self.devices), start_utc=start.utc,
            end_utc=start.utc + timedelta(seconds=t1 - start.t_mono_s),
        )
        return result

    def _learn_timing(self, polls: Samples, t0: float, t1: float) -> None:
        for i in range(len(self.devices)):
            p = polls.for_device(i)
            t, e = p["t_mono_s"], p["energy_mj"]
            ok = np.isfinite(e)
            t, e = t[ok], e[ok]
            if len(t) < 2:
                continue
            ch = np.nonzero(e[1:] != e[:-1])[0] + 1
            edges = 0.5 * (t[ch] + t[ch - 1])
            first = edges[edges >= t0]
            last = edges[edges >= t1]
            if len(first) == 0 or len(last) == 0:
                continue
            e0, e1 = float(first[0]), float(last[0])
            prior = self.counter_timing[i].period_s if self.counter_timing[i] else DEFAULT_COUNTER_PERIOD_S
            k = round((e1 - e0) / prior)
            period = prior
            # refine the period only when the number of steps between the two edges is unambiguous
            if k >= 1 and k * self._period_rel_err[i] < 0.3:
                period = (e1 - e0) / k
                hw = float(np.max(t[ch] - t[ch - 1])) / 2 if len(ch) else 0.002
                self._period_rel_err[i] = min(self._period_rel_err[i], 2 * hw / (k * period))
            self.counter_timing[i] = CounterTiming(period, e1, self._period_rel_err[i] * period)
