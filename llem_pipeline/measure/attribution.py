"""Energy per request and per phase from the power timeline (method: docs/methodology-attribution.md).

Each sampler interval's energy (J) is split among the requests active in it, in proportion to the work
each did in that interval: prompt tokens prefilled (weight ``alpha``, J per prompt token) and tokens
decoded (weight ``beta``, J per output token). Only the ratio ``alpha / beta`` decides a split; it is
estimated per run by regressing interval energy on the interval's prefill and decode token counts
(``E_i = static_W * dt_i + alpha * prefill_i + beta * decode_i``, non-negative least squares), and falls
back to ``DEFAULT_RATIO`` (with its stated range) when the run cannot identify it. The ratio's range is
propagated to every figure as an uncertainty (J).

Where a request's work lies in time, from its timestamps (s from the process's inference start):

- prefill: ``input_tokens`` spread uniformly from the last engine event before its first token (any
  token of any request of the same process, or its submission when later) to its first token; the
  first token is the product of the prefill;
- decode: output token k >= 1 is one unit of work spread over the engine step that produced it: from the
  last engine event before it (token k-1, or a later token of another request, e.g. the end of another
  request's prefill that stalled the decode) to token k.

Intervals with no work are *idle* energy (not attributed). Of each request's energy the part the device
draws at its measured idle baseline (``baseline_w * dt`` of the interval, shared like the rest) is its
*baseline* share, reported separately. Pure numpy; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# alpha / beta when a run cannot estimate it: one prompt token prefilled costs about a tenth of one token
# decoded (docs/methodology-attribution.md gives the reasoning), within a factor of about 3 either way.
DEFAULT_RATIO = 0.1
DEFAULT_RATIO_RANGE = (0.03, 0.3)
# A regression needs this many intervals with work, and both kinds of work varying, to be trusted.
MIN_INTERVALS = 12
# The relative 95 % half-width of a fitted ratio above which the fit is not used (fallback to the default).
MAX_RATIO_REL_HALF_WIDTH = 0.5
# Attribution intervals last at least this long: consecutive sampler intervals are merged (at 10 Hz, three
# readings), which halves the per-request error of instant power readings (bench/attribution_accuracy.py).
MIN_INTERVAL_S = 0.3
# With fitted weights, measured energy is kept per block of this length and placed inside it by the fit.
MEASURED_RESOLUTION_S = 1.0
_EPS_S = 1e-6  # token times closer than this are one engine event, s


@dataclass(frozen=True)
class RequestTimes:
    """One request's work, times in s from its process's inference start."""

    process_index: int
    request_index: int
    input_tokens: int
    output_tokens: int
    submit_s: float
    first_token_s: float | None
    token_times_s: Sequence[float]


@dataclass(frozen=True)
class DeviceTrace:
    """One device's power samples: tick times (s from inference start, ascending) and power (W)."""

    process_index: int
    device_index: int
    t_s: np.ndarray
    power_w: np.ndarray
    baseline_w: float | None = None  # the device's idle power measured before the model loaded, W


@dataclass(frozen=True)
class PhaseWeights:
    """The weights of the split: ``ratio`` = alpha / beta (J per prompt token / J per decoded token) with
    its 95 % range, how it was obtained ('regression' or 'default'), and the fit's figures (J per token,
    static W, R², intervals used; None for the default)."""

    ratio: float
    ratio_low: float
    ratio_high: float
    method: str
    prefill_j_per_token: float | None = None
    decode_j_per_token: float | None = None
    static_w: float | None = None
    r2: float | None = None
    n_intervals: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class RequestEnergy:
    """One request's attributed energy, J: ``energy_j`` = ``prefill_energy_j`` + ``decode_energy_j``;
    ``baseline_energy_j`` is the part of it drawn at the idle baseline (None without a baseline);
    ``uncertainty_j`` the change of ``energy_j`` across the ratio's 95 % range."""

    process_index: int
    request_index: int
    energy_j: float
    prefill_energy_j: float
    decode_energy_j: float
    baseline_energy_j: float | None
    uncertainty_j: float


@dataclass(frozen=True)
class Attribution:
    """A run's attribution: per request (input order) and the run's totals, J.

    ``total_energy_j`` = ``attributed_energy_j`` + ``idle_energy_j``; ``prefill_share`` =
    prefill / attributed (a fraction); ``prefill_uncertainty_j`` the change of the prefill total across
    the ratio's range; ``scale`` the factor applied to the trace's intervals so that they sum to the
    measured window energy (1.0 when none was given); ``method`` names the procedure.
    ``prefill_direct_energy_j`` is the measured energy of the sampler intervals in which only prefill ran
    (no weights involved) and ``prefill_direct_coverage`` the fraction of prompt tokens prefilled in them:
    when an engine runs the phases apart (a batch of prefills, then decode) the coverage is near 1 and this
    is a direct measurement of the prefill energy; otherwise it covers that fraction only.
    """

    requests: list[RequestEnergy]
    weights: PhaseWeights
    total_energy_j: float
    attributed_energy_j: float
    idle_energy_j: float
    baseline_energy_j: float | None
    prefill_energy_j: float
    decode_energy_j: float
    prefill_share: float | None
    prefill_uncertainty_j: float
    scale: float
    method: str
    prefill_direct_energy_j: float = 0.0
    prefill_direct_coverage: float | None = None
    warnings: list[str] = field(default_factory=list)

    def request_energy_percentiles(self) -> dict[str, float | None]:
        """Return p50, p90, p99 and mean of ``energy_j`` over requests, J (None without requests)."""
        v = np.array([r.energy_j for r in self.requests], dtype=np.float64)
        if v.size == 0:
            return {"p50_j": None, "p90_j": None, "p99_j": None, "mean_j": None}
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        return {"p50_j": float(p50), "p90_j": float(p90), "p99_j": float(p99), "mean_j": float(v.mean())}

    def summary(self) -> dict[str, Any]:
        """Return the run's figures as JSON-able data (energies J, shares as fractions)."""
        return {
            "method": self.method,
            "total_energy_j": self.total_energy_j,
            "attributed_energy_j": self.attributed_energy_j,
            "idle_energy_j": self.idle_energy_j,
            "baseline_energy_j": self.baseline_energy_j,
            "prefill_energy_j": self.prefill_energy_j,
            "decode_energy_j": self.decode_energy_j,
            "prefill_share": self.prefill_share,
            "prefill_uncertainty_j": self.prefill_uncertainty_j,
            "prefill_direct_energy_j": self.prefill_direct_energy_j,
            "prefill_direct_coverage": self.prefill_direct_coverage,
            "request_energy": self.request_energy_percentiles(),
            "n_requests": len(self.requests),
            "scale": self.scale,
            "weights": asdict(self.weights),
            "warnings": list(self.warnings),
        }


# -- where the work lies ---------------------------------------------------------------------------------
def work_segments(requests: Sequence[RequestTimes]) -> tuple[np.ndarray, ...]:
    """Return the work of ``requests`` as segments (request position, start s, end s, prefill tokens, decode
    tokens), five arrays; a segment's tokens are spread uniformly over [start, end] (a point when equal)."""
    by_process: dict[int, np.ndarray] = {}
    for p in {r.process_index for r in requests}:
        times = [t for r in requests if r.process_index == p for t in r.token_times_s]
        by_process[p] = np.unique(np.asarray(times, dtype=np.float64))
    pos, start, end, pre, dec = [], [], [], [], []
    for i, r in enumerate(requests):
        times = np.asarray(r.token_times_s, dtype=np.float64)
        first = r.first_token_s if r.first_token_s is not None else (float(times[0]) if times.size else None)
        if first is None:
            continue
        events = by_process[r.process_index]
        k = int(np.searchsorted(events, first - _EPS_S, side="left"))
        begin = max(float(r.submit_s), float(events[k - 1]) if k > 0 else float(r.submit_s))
        pos.append(i)
        start.append(min(begin, first))
        end.append(first)
        pre.append(float(r.input_tokens))
        dec.append(0.0)
        if times.size >= 2:
            n = times.size - 1
            later = times[1:]
            k = np.searchsorted(events, later - _EPS_S, side="left")
            step_start = events[np.maximum(k - 1, 0)]
            pos += [i] * n
            start += np.maximum(times[:-1], step_start).tolist()
            end += later.tolist()
            pre += [0.0] * n
            dec += [1.0] * n
    return (np.asarray(pos, dtype=np.int64), np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64),
            np.asarray(pre, dtype=np.float64), np.asarray(dec, dtype=np.float64))


def _overlaps(edges: np.ndarray, seg: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Return (request position, interval index, prefill tokens, decode tokens) per (segment, interval)
    overlap: each segment's tokens split over the intervals [edges[i], edges[i+1]) by overlapping time."""
    pos, s, e, pre, dec = seg
    n_int = edges.size - 1
    if n_int <= 0 or pos.size == 0:
        empty = np.empty(0)
        return empty.astype(np.int64), empty.astype(np.int64), empty, empty
    i0 = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_int - 1)
    i1 = np.clip(np.searchsorted(edges, e, side="left") - 1, 0, n_int - 1)
    i1 = np.maximum(i1, i0)
    span = i1 - i0 + 1
    rep = np.repeat(np.arange(pos.size), span)
    offset = np.arange(rep.size) - np.repeat(np.cumsum(span) - span, span)
    idx = i0[rep] + offset
    lo = np.maximum(edges[idx], s[rep])
    hi = np.minimum(edges[idx + 1], e[rep])
    length = e[rep] - s[rep]
    frac = np.where(length > 0, np.clip(hi - lo, 0.0, None) / np.where(length > 0, length, 1.0), 1.0 / span[rep])
    inside = (s[rep] <= edges[-1]) & (e[rep] >= edges[0])
    frac = np.where(inside, frac, 0.0)
    return pos[rep], idx, pre[rep] * frac, dec[rep] * frac


# -- the weights ---------------------------------------------------------------------------------------
def _nnls_small(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the non-negative least-squares coefficients of y ~ x (few columns: every active set is tried)."""
    k = x.shape[1]
    best, best_err = np.zeros(k), float(np.sum(y * y))
    for mask in range(1, 1 << k):
        cols = [j for j in range(k) if mask >> j & 1]
        coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if np.any(coef < 0):
            continue
        err = float(np.sum((y - x[:, cols] @ coef) ** 2))
        if err < best_err - 1e-12 * max(best_err, 1.0):
            best, best_err = np.zeros(k), err
            best[cols] = coef
    return best


def fit_weights(energy_j: np.ndarray, dt_s: np.ndarray, prefill_tokens: np.ndarray,
                decode_tokens: np.ndarray) -> PhaseWeights:
    """Return the PhaseWeights fitted on intervals (energy J, length s, prefill and decode tokens each), or the
    default ratio with the reason when the intervals cannot identify it."""
    active = (prefill_tokens + decode_tokens) > 0
    n = int(active.sum())

    def default(reason: str) -> PhaseWeights:
        return PhaseWeights(DEFAULT_RATIO, *DEFAULT_RATIO_RANGE, method="default", n_intervals=n, reason=reason)

    if n < MIN_INTERVALS:
        return default(f"{n} interval(s) with work; the regression needs {MIN_INTERVALS}")
    if np.count_nonzero(prefill_tokens[active]) < 3 or np.count_nonzero(decode_tokens[active]) < 3:
        return default("prefill or decode work falls in fewer than 3 intervals")
    x = np.column_stack([dt_s[active], prefill_tokens[active], decode_tokens[active]])
    y = energy_j[active]
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    coef = _nnls_small(x / scale, y) / scale
    static_w, alpha, beta = (float(c) for c in coef)
    if beta <= 0 or alpha <= 0:
        return default(f"the fit gave alpha={alpha:.3g} J/prompt token, beta={beta:.3g} J/decoded token: one is 0")
    resid = y - x @ coef
    dof = max(n - 3, 1)
    sigma2 = float(resid @ resid) / dof
    try:
        cov = sigma2 * np.linalg.inv(x.T @ x)
    except np.linalg.LinAlgError:
        return default("prefill and decode counts are collinear")
    ratio = alpha / beta
    # delta method: var(a/b) = (var_a / b^2) + (a^2 var_b / b^4) - 2 a cov_ab / b^3
    var = cov[1, 1] / beta**2 + alpha**2 * cov[2, 2] / beta**4 - 2 * alpha * cov[1, 2] / beta**3
    half = 1.96 * math.sqrt(max(var, 0.0))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else None
    fitted = PhaseWeights(ratio, max(ratio - half, ratio * 0.01), ratio + half, "regression",
                          prefill_j_per_token=alpha, decode_j_per_token=beta, static_w=static_w, r2=r2, n_intervals=n)
    if half > MAX_RATIO_REL_HALF_WIDTH * ratio:
        return PhaseWeights(DEFAULT_RATIO, *DEFAULT_RATIO_RANGE, method="default", prefill_j_per_token=alpha,
                            decode_j_per_token=beta, static_w=static_w, r2=r2, n_intervals=n,
                            reason=f"fitted ratio {ratio:.3g} ± {half:.2g} (95 %) is too uncertain")
    return fitted


# -- the split -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Intervals:
    energy_j: np.ndarray
    dt_s: np.ndarray
    start_s: np.ndarray  # each interval's start, s from inference start
    baseline_w: float | None
    req: np.ndarray  # per overlap entry
    idx: np.ndarray
    pre: np.ndarray
    dec: np.ndarray


def _intervals(trace: DeviceTrace, seg: tuple[np.ndarray, ...], span: tuple[float, float],
               min_interval_s: float) -> _Intervals:
    """Return the trapezoid energy (J) of each interval of ``trace`` inside ``span`` (s; sampler intervals merged
    to at least ``min_interval_s``) and the work in it."""
    t = np.asarray(trace.t_s, dtype=np.float64)
    p = np.asarray(trace.power_w, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    a, b = span
    inside = (t > a) & (t < b)
    pa, pb = (np.interp(a, t, p), np.interp(b, t, p)) if t.size else (0.0, 0.0)
    edges = np.concatenate([[a], t[inside], [b]])
    power = np.concatenate([[pa], p[inside], [pb]])
    energy = 0.5 * (power[:-1] + power[1:]) * np.diff(edges)
    if min_interval_s > 0 and energy.size > 1:
        # merge consecutive sampler intervals until each lasts min_interval_s: an instant power reading
        # stands for its whole interval, and merging averages that error out at the cost of time resolution
        group = np.floor((edges[:-1] - a) / min_interval_s).astype(np.int64)
        starts = np.flatnonzero(np.diff(group, prepend=-1))
        energy = np.add.reduceat(energy, starts)
        edges = np.concatenate([edges[starts], [b]])
    dt = np.diff(edges)
    req, idx, pre, dec = _overlaps(edges, seg)
    return _Intervals(energy, dt, edges[:-1], trace.baseline_w, req, idx, pre, dec)


def _work(iv: _Intervals) -> tuple[np.ndarray, np.ndarray]:
    """Return the prefill and decode tokens of each interval of ``iv``."""
    n = iv.energy_j.size
    return (np.bincount(iv.idx, weights=iv.pre, minlength=n), np.bincount(iv.idx, weights=iv.dec, minlength=n))


def _replace(iv: _Intervals, energy_j: np.ndarray) -> _Intervals:
    """Return ``iv`` with other interval energies, J."""
    return _Intervals(energy_j, iv.dt_s, iv.start_s, iv.baseline_w, iv.req, iv.idx, iv.pre, iv.dec)


def _reconstruct(iv: _Intervals, weights: PhaseWeights, block_s: float) -> _Intervals:
    """Return ``iv`` (sampler intervals) with energies placed by the fitted model inside blocks of ``block_s``
    s: each block keeps its measured energy, shared among its intervals in proportion to the model's
    ``static_w·dt + alpha·prefill + beta·decode``. An instant power reading misstates its own interval's
    energy, but sums over a second of readings hold; the model says where inside the block it went."""
    pre, dec = _work(iv)
    model = (weights.static_w or 0.0) * iv.dt_s + (weights.prefill_j_per_token or 0.0) * pre \
        + (weights.decode_j_per_token or 0.0) * dec
    block = np.floor((iv.start_s - iv.start_s[0]) / block_s).astype(np.int64) if iv.start_s.size else iv.start_s
    measured = np.bincount(block, weights=iv.energy_j)
    modelled = np.bincount(block, weights=model)
    ok = modelled[block] > 0
    energy = np.where(ok, measured[block] * model / np.where(ok, modelled[block], 1.0), iv.energy_j)
    return _replace(iv, energy)


def _split(iv: _Intervals, ratio: float, n_req: int) -> tuple[np.ndarray, ...]:
    """Return per request (prefill J, decode J, baseline J) and the idle J of one device at ``ratio``."""
    n_int = iv.energy_j.size
    work = ratio * iv.pre + iv.dec
    total = np.bincount(iv.idx, weights=work, minlength=n_int)
    share = np.where(total[iv.idx] > 0, work / np.where(total[iv.idx] > 0, total[iv.idx], 1.0), 0.0)
    e = share * iv.energy_j[iv.idx]
    pre_part = np.where(work > 0, ratio * iv.pre / np.where(work > 0, work, 1.0), 0.0)
    prefill = np.bincount(iv.req, weights=e * pre_part, minlength=n_req)
    decode = np.bincount(iv.req, weights=e * (1.0 - pre_part), minlength=n_req)
    base_j = None if iv.baseline_w is None else np.minimum(iv.baseline_w * iv.dt_s, iv.energy_j)
    base = (np.bincount(iv.req, weights=share * base_j[iv.idx], minlength=n_req)
            if base_j is not None else np.full(n_req, np.nan))
    idle = float(iv.energy_j[total <= 0].sum())
    return prefill, decode, base, idle


def attribute(requests: Sequence[RequestTimes], traces: Sequence[DeviceTrace], *,
              window_energy_j: dict[int, float] | None = None,
              spans: dict[int, tuple[float, float]] | None = None,
              weights: PhaseWeights | None = None, min_interval_s: float = MIN_INTERVAL_S,
              measured_resolution_s: float = MEASURED_RESOLUTION_S) -> Attribution:
    """Return the Attribution of ``requests`` (one run) over the power ``traces`` of their processes' devices.

    ``spans``: per process, the time range attributed (s from inference start; default: first submission
    to last token). ``window_energy_j``: per process, the measured energy of that span (J, e.g. the energy
    counter's window energy): the trace's intervals are scaled to sum to it, so the attribution distributes
    the measured energy and the trace only says where in time it went. ``weights``: fixed PhaseWeights
    (default: fitted on this run, else the default ratio). ``min_interval_s``: sampler intervals are merged
    into intervals of at least this length, s, for the fit (and for the split when the default ratio is used).
    ``measured_resolution_s``: with fitted weights, each sampler interval's energy is the measured energy of
    its block of this length, placed inside the block by the fitted model (0: the merged intervals' trapezoid
    energies as they are). Energies J.
    """
    reqs = list(requests)
    n_req = len(reqs)
    warnings: list[str] = []
    seg = work_segments(reqs)
    spans = dict(spans or {})
    for p in {r.process_index for r in reqs}:
        if p not in spans:
            mine = [r for r in reqs if r.process_index == p]
            spans[p] = (min(r.submit_s for r in mine),
                        max(max(r.token_times_s, default=r.submit_s) for r in mine))
    fine: list[tuple[int, _Intervals]] = []
    merged: list[tuple[int, _Intervals]] = []
    scales: list[float] = []
    for trace in traces:
        if trace.process_index not in spans:
            continue
        mask = np.array([reqs[i].process_index == trace.process_index for i in seg[0]], dtype=bool) \
            if seg[0].size else np.zeros(0, dtype=bool)
        mine = tuple(a[mask] for a in seg)
        fine.append((trace.process_index, _intervals(trace, mine, spans[trace.process_index], 0.0)))
        merged.append((trace.process_index, _intervals(trace, mine, spans[trace.process_index], min_interval_s)))
    # scale each process's devices together so that their intervals sum to the measured window energy
    factors: dict[int, float] = {}
    for p in sorted({p for p, _ in fine}):
        trace_total = sum(float(iv.energy_j.sum()) for q, iv in fine if q == p)
        factors[p] = 1.0
        if window_energy_j and p in window_energy_j:
            if trace_total > 0:
                factors[p] = window_energy_j[p] / trace_total
            else:
                warnings.append(f"attribution_no_trace: process {p} has no power samples in its span")
        scales.append(factors[p])
    fine_ivs = [_replace(iv, iv.energy_j * factors[p]) for p, iv in fine]
    merged_ivs = [_replace(iv, iv.energy_j * factors[p]) for p, iv in merged]
    if weights is None:
        works = [_work(iv) for iv in merged_ivs]
        weights = fit_weights(*(np.concatenate(xs) if xs else np.empty(0) for xs in (
            [iv.energy_j for iv in merged_ivs], [iv.dt_s for iv in merged_ivs], [w[0] for w in works],
            [w[1] for w in works])))
    if weights.method == "default":
        warnings.append(f"attribution_default_ratio: prefill/decode weight ratio {weights.ratio} (range "
                        f"{weights.ratio_low}-{weights.ratio_high}) used because {weights.reason}")
    model_placed = weights.method == "regression" and measured_resolution_s > 0
    scaled = [_reconstruct(iv, weights, measured_resolution_s) for iv in fine_ivs] if model_placed else merged_ivs

    def run_at(ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        pre_j, dec_j, base_j, idle = np.zeros(n_req), np.zeros(n_req), np.zeros(n_req), 0.0
        for iv in scaled:
            a, b, c, d = _split(iv, ratio, n_req)
            pre_j += a
            dec_j += b
            base_j += c
            idle += d
        return pre_j, dec_j, base_j, idle

    pre_j, dec_j, base_j, idle = run_at(weights.ratio)
    lo_pre, lo_dec, _, _ = run_at(weights.ratio_low)
    hi_pre, hi_dec, _, _ = run_at(weights.ratio_high)
    energy = pre_j + dec_j
    unc = np.maximum(np.abs(lo_pre + lo_dec - energy), np.abs(hi_pre + hi_dec - energy))
    has_base = all(iv.baseline_w is not None for iv in scaled) and bool(scaled)
    out = [
        RequestEnergy(r.process_index, r.request_index, float(energy[i]), float(pre_j[i]), float(dec_j[i]),
                      float(base_j[i]) if has_base else None, float(unc[i]))
        for i, r in enumerate(reqs)
    ]
    attributed = float(energy.sum())
    prefill = float(pre_j.sum())
    prefill_unc = max(abs(float(lo_pre.sum()) - prefill), abs(float(hi_pre.sum()) - prefill))
    no_work = [r.request_index for r in reqs if r.first_token_s is None and not len(r.token_times_s)]
    if no_work:
        warnings.append(f"attribution_no_tokens: {len(no_work)} request(s) produced no token and got no energy")
    direct_j, pure_tokens, all_tokens = 0.0, 0.0, 0.0
    for iv in fine_ivs:  # measured (trapezoid, scaled) energies: the phases as they ran, no weights
        pre_t, dec_t = _work(iv)
        pure = (pre_t > 0) & (dec_t <= 0)
        direct_j += float(iv.energy_j[pure].sum())
        pure_tokens += float(pre_t[pure].sum())
        all_tokens += float(pre_t.sum())
    scale = float(np.mean(scales)) if scales else 1.0
    source = "scaled to the window energy" if window_energy_j else "power trace"
    if model_placed:
        source += f", placed by the fit within {measured_resolution_s:g} s"
    return Attribution(
        requests=out, weights=weights, total_energy_j=attributed + idle, attributed_energy_j=attributed,
        idle_energy_j=idle, baseline_energy_j=float(base_j.sum()) if has_base else None,
        prefill_energy_j=prefill, decode_energy_j=float(dec_j.sum()),
        prefill_share=prefill / attributed if attributed > 0 else None, prefill_uncertainty_j=prefill_unc,
        scale=scale, method=f"interval_split:{weights.method}_ratio ({source})",
        prefill_direct_energy_j=direct_j, prefill_direct_coverage=pure_tokens / all_tokens if all_tokens > 0 else None,
        warnings=warnings,
    )


def proportional(requests: Sequence[RequestTimes], total_energy_j: float) -> np.ndarray:
    """Return the proportional estimate per request, J: total energy / total output tokens × output tokens
    (the method that multiplies a steady J/token by the output length), for comparison."""
    out = np.array([r.output_tokens for r in requests], dtype=np.float64)
    return total_energy_j * out / out.sum() if out.sum() > 0 else np.zeros_like(out)
