"""Aggregation (docs/methodology.md §3.12): RawProcessResult list → ExperimentResult v2.0.

Contract for the process results (what the harness fills in each RawProcessResult):
- ``timestamps``: the REPORTED window of that process (UTC start/end; ``duration_sec`` monotonic) and
  ``inference_time_sec`` its length, s. For 'total' that is the inference window; for 'steady_state' /
  'windowed' the sub-window, whose (start, end) in s from that process's inference start is
  ``steady_state_window``.
- ``energy_j`` / ``energy_per_device_j`` / tokens / ``sample_count``: of exactly that window.
- ``baseline_power_w``: idle power of that process's devices, W (summed over them).

Rules:
- window = earliest start to latest end: the process starts are placed by their UTC start times and
  each process's end is its start + its monotonic duration; throughput divides by that window.
- energy, tokens, FLOPs and per-device energy are summed / concatenated in process order;
  ``energy_adjusted_j = max(0, Σ (E_i − P_baseline_i × duration_i))`` — each process's baseline over
  its own window (the devices of a process are only measured in that window); floored at 0 with the
  ``baseline_floored`` warning. ``energy_breakdown.baseline_duration_sec`` is the baseline-weighted
  duration, so raw − baseline_power_w × baseline_duration_sec = the unfloored adjusted energy.
- ``avg_energy_per_token_j`` and ``multi_gpu.energy_per_output_token_j`` are 0.0 when no tokens were
  generated (with the ``no_output_tokens`` warning): the fields are required floats and NaN does not
  survive JSON.
- latency is pooled from the raw request records (``requests``), never from percentiles.
- temporal overlap: common overlap = min(end) − max(start); verified when it is ≥ 50 % of the shortest
  process window; ``overlap_ratio`` = common overlap / union. GPU attribution: verified when every
  process names its devices and no device UUID appears in two processes.
- thermal: flags OR-ed, duration = the longest process's (processes run concurrently), timestamps
  shifted to the earliest inference start, max temperature max, mean temperature the mean of the
  process means, drift the largest in magnitude.
- Warnings: every process's warnings (exact duplicates removed) except ``baseline_floored`` and
  ``no_output_tokens``, which are decided again on the totals, plus aggregation warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.experiment import (
    AggregationMetadata,
    ExperimentResult,
    RawProcessResult,
    compute_measurement_config_hash,
)
from llem_pipeline.domain.metrics import (
    EnergyBreakdown,
    ExtendedEfficiencyMetrics,
    FlopsResult,
    MemoryMetrics,
    MultiGPUMetrics,
    ThermalThrottleInfo,
)
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.domain.warnings import make_warning, warning_code
from llem_pipeline.measure.latency import latency_statistics
from llem_pipeline.measure.quality import dedupe, reproducibility_notes

MIN_OVERLAP_OF_SHORTEST = 0.5
_RECOMPUTED_CODES = {"baseline_floored", "no_output_tokens"}
_METHOD_STRENGTH = {"nvml_counter": 0, "trace_integral": 1, "simulated": 2}


def _same(procs: Sequence[RawProcessResult], attr: str) -> object:
    values = {getattr(p, attr) for p in procs}
    if len(values) > 1:
        raise ValueError(f"cannot aggregate processes with different {attr}: {sorted(map(str, values))}; "
                         "all engine processes of one experiment must share it")
    return values.pop()


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(sum(values))  # type: ignore[arg-type]


def _merge_thermal(procs: Sequence[RawProcessResult], offsets: Sequence[float]) -> ThermalThrottleInfo | None:
    infos = [(p.thermal_throttle, off) for p, off in zip(procs, offsets, strict=True) if p.thermal_throttle]
    if not infos:
        return None
    flags = ("detected", "thermal", "power", "sw_thermal", "hw_thermal", "hw_power", "sw_power_cap", "hw_slowdown")
    merged = {f: any(getattr(t, f) for t, _ in infos) for f in flags}
    maxes = [t.max_temperature_c for t, _ in infos if t.max_temperature_c is not None]
    means = [t.mean_temperature_c for t, _ in infos if t.mean_temperature_c is not None]
    drifts = [t.temperature_drift_c for t, _ in infos if t.temperature_drift_c is not None]
    return ThermalThrottleInfo(
        **merged,
        throttle_duration_sec=max(t.throttle_duration_sec for t, _ in infos),
        throttle_timestamps=sorted(x + off for t, off in infos for x in t.throttle_timestamps),
        max_temperature_c=max(maxes) if maxes else None,
        mean_temperature_c=sum(means) / len(means) if means else None,
        temperature_drift_c=max(drifts, key=abs) if drifts else None,
    )


def _merge_flops(procs: Sequence[RawProcessResult], precision: str) -> FlopsResult | None:
    flops = [p.flops for p in procs]
    if not flops or any(f is None for f in flops):
        return None
    first = flops[0]
    assert first is not None
    tokens = [f.tokens for f in flops if f is not None]
    return FlopsResult(
        value=float(sum(f.value for f in flops if f is not None)),
        method=first.method, confidence=first.confidence, precision=first.precision or precision,
        n_params_nonembedding=first.n_params_nonembedding,
        tokens=None if any(t is None for t in tokens) else int(sum(t for t in tokens if t is not None)),
        notes=first.notes,
    )


def _merge_memory(procs: Sequence[RawProcessResult]) -> MemoryMetrics:
    mems = [p.extended_metrics.memory if p.extended_metrics else MemoryMetrics() for p in procs]
    total = _sum_or_none([m.total_vram_mb for m in mems])
    model = _sum_or_none([m.model_memory_mb for m in mems])
    peak = _sum_or_none([m.peak_memory_mb for m in mems])
    inference = max(0.0, peak - model) if peak is not None and model is not None else None
    return MemoryMetrics(total_vram_mb=total, model_memory_mb=model, peak_memory_mb=peak, inference_memory_mb=inference)


def aggregate(
    raw: list[RawProcessResult],
    *,
    config: ExperimentConfig,
    requests: list[RequestRecord] | None,
    environment: EnvironmentSnapshot | None,
    experiment_id: str,
    timeseries: str | None,
) -> ExperimentResult:
    """Return the ExperimentResult v2.0 of one or more process results (module docstring for the rules).

    Energies in J, powers in W, times in s, latencies in ms. ``requests``: every measured request of
    every process (for pooled latency; None falls back to a single process's own statistics).
    Raises ValueError for no processes, repeated process indices, or processes that disagree on
    backend, methodology or device kind.
    """
    if not raw:
        raise ValueError("aggregate() needs at least one RawProcessResult")
    procs = sorted(raw, key=lambda p: p.process_index)
    indices = [p.process_index for p in procs]
    if len(set(indices)) != len(indices):
        raise ValueError(f"process_index values repeat: {indices}; each engine process must have its own index")
    backend = _same(procs, "backend")
    methodology = _same(procs, "measurement_methodology")
    device_kind = _same(procs, "device_kind")
    p0 = procs[0]

    # --- the window -------------------------------------------------------------------------------
    start_time: datetime = min(p.timestamps.start for p in procs)
    end_time: datetime = max(p.timestamps.end for p in procs)
    starts = [(p.timestamps.start - start_time).total_seconds() for p in procs]
    ends = [s + p.inference_time_sec for s, p in zip(starts, procs, strict=True)]
    window = max(ends) - min(starts)
    # each process's inference start, s after the earliest one (for windows and throttle timestamps)
    inf_starts = [s - (p.steady_state_window[0] if p.steady_state_window else 0.0)
                  for s, p in zip(starts, procs, strict=True)]
    origin = min(inf_starts)
    offsets = [x - origin for x in inf_starts]
    if methodology == "total":
        ss_window = None
    else:
        ss_window = (min(s - origin for s in starts), max(e - origin for e in ends))

    warnings: list[str] = [w for p in procs for w in p.measurement_warnings if warning_code(w) not in _RECOMPUTED_CODES]
    agg_warnings: list[str] = []

    common = max(0.0, min(ends) - max(starts))
    shortest = min(p.inference_time_sec for p in procs)
    overlap_ratio = common / window if window > 0 else 1.0
    overlap_ok = common >= MIN_OVERLAP_OF_SHORTEST * shortest if shortest > 0 else True
    if not overlap_ok:
        agg_warnings.append(make_warning(
            "processes_not_overlapping",
            f"common overlap {common:.2f} s is < {MIN_OVERLAP_OF_SHORTEST:.0%} of the shortest process window "
            f"({shortest:.2f} s); throughput over the union window understates concurrent throughput"))
    uuids = [u for p in procs for u in p.device_uuids]
    repeated = sorted({u for u in uuids if uuids.count(u) > 1})
    if repeated:
        agg_warnings.append(make_warning(
            "gpu_attribution_conflict", f"device(s) {', '.join(repeated)} measured by more than one process"))
    attribution_ok = not repeated and all(p.device_uuids for p in procs)

    # --- energy and tokens ------------------------------------------------------------------------
    total_energy = float(sum(p.energy_j for p in procs))
    per_device = [e for p in procs for e in (p.energy_per_device_j or [p.energy_j])]
    total_tokens = int(sum(p.output_tokens for p in procs))
    input_tokens = int(sum(p.input_tokens for p in procs))
    tps = total_tokens / window if window > 0 else 0.0
    ept = total_energy / total_tokens if total_tokens > 0 else 0.0
    if total_tokens <= 0:
        warnings.append(make_warning("no_output_tokens", "the window holds no generated tokens; per-token figures are 0"))

    energy_method = max((p.energy_method for p in procs), key=lambda m: _METHOD_STRENGTH.get(m, 0))
    trace = _sum_or_none([p.trace_energy_j for p in procs])
    uncertainty = _sum_or_none([p.energy_uncertainty_j for p in procs])
    agreement = None
    if trace is not None and total_energy > 0 and any(p.energy_trace_agreement is not None for p in procs):
        agreement = abs(total_energy - trace) / total_energy

    baselines = [p.baseline_power_w for p in procs]
    bd0 = p0.energy_breakdown
    if all(b is not None for b in baselines):
        baseline = float(sum(b for b in baselines if b is not None))
        weighted = sum(b * p.inference_time_sec for b, p in zip(baselines, procs, strict=True) if b is not None)
        unfloored = total_energy - weighted
        adjusted = max(0.0, unfloored)
        floored = unfloored < 0
        baseline_duration = weighted / baseline if baseline > 0 else window
        provenance = bd0.provenance if bd0 is not None else "fresh"
        if floored:
            warnings.append(make_warning(
                "baseline_floored",
                f"raw {total_energy:.2f} J < idle {baseline:.2f} W × {baseline_duration:.2f} s; energy_adjusted_j = 0"))
    else:
        baseline = adjusted = baseline_duration = None
        floored = False
        provenance = "unavailable"
    breakdown = EnergyBreakdown(
        raw_energy_j=total_energy,
        baseline_power_w=baseline,
        baseline_duration_sec=baseline_duration,
        adjusted_energy_j=adjusted,
        adjustment_method="subtract_idle_power_x_window" if baseline is not None else None,
        provenance=provenance,
        baseline_floored=floored,
        baseline_measured_at=bd0.baseline_measured_at if bd0 else None,
        baseline_cache_age_sec=bd0.baseline_cache_age_sec if bd0 else None,
        energy_method=energy_method,
        uncertainty_j=uncertainty,
        trace_energy_j=trace,
    )
    multi_gpu = None
    if len(per_device) > 1:
        multi_gpu = MultiGPUMetrics(num_gpus=len(per_device), energy_per_gpu_j=per_device,
                                    energy_total_j=total_energy, energy_per_output_token_j=ept)

    # --- FLOPs, latency, extended metrics ----------------------------------------------------------
    flops = _merge_flops(procs, config.precision)
    total_flops = flops.value if flops is not None else 0.0
    source = next((p.latency_stats.timing_source for p in procs if p.latency_stats), "per_token_timestamps")
    if requests is not None:
        latency = latency_statistics(requests, timing_source=source)
    else:
        latency = p0.latency_stats if len(procs) == 1 else None
    utils = [p.extended_metrics.sm_utilisation_mean if p.extended_metrics else None for p in procs]
    weights = [p.inference_time_sec for p in procs]
    sm_util = (sum(u * w for u, w in zip(utils, weights, strict=True) if u is not None) / sum(weights)
               if utils and all(u is not None for u in utils) and sum(weights) > 0 else None)
    extended = ExtendedEfficiencyMetrics(
        tpot_ms=latency.tpot.mean_ms if latency is not None and latency.tpot is not None else None,
        output_tokens_per_joule=total_tokens / total_energy if total_energy > 0 else None,
        avg_power_w=total_energy / window if window > 0 else None,
        peak_power_w=(p0.extended_metrics.peak_power_w if len(procs) == 1 and p0.extended_metrics else None),
        sm_utilisation_mean=sm_util,
        flops_per_second=total_flops / window if flops is not None and window > 0 else None,
        flops_per_output_token=total_flops / total_tokens if flops is not None and total_tokens > 0 else None,
        memory=_merge_memory(procs),
        flops=flops,
    )

    excluded = [p.warmup_excluded_samples for p in procs if p.warmup_excluded_samples is not None]
    excluded_power = [p.excluded_power_samples for p in procs if p.excluded_power_samples is not None]
    notes = reproducibility_notes(
        energy_method, device_kind, config.energy.sample_interval_ms / 1000.0, uncertainty,
        boundary_correction=config.energy.boundary_correction, num_devices=len(per_device),
        methodology=methodology, window_s=window, steady_state_window=ss_window,
        energy_trace_agreement=agreement, baseline_power_w=baseline,
        baseline_provenance=provenance if baseline is not None else None,
    )
    return ExperimentResult(
        experiment_id=experiment_id,
        measurement_config_hash=compute_measurement_config_hash(config),
        backend=str(backend),
        backend_version=p0.backend_version,
        measurement_methodology=methodology,  # type: ignore[arg-type]
        steady_state_window=ss_window,
        total_tokens=total_tokens,
        total_energy_j=total_energy,
        total_inference_time_sec=window,
        avg_tokens_per_second=tps,
        avg_energy_per_token_j=ept,
        total_flops=total_flops,
        baseline_power_w=baseline,
        energy_adjusted_j=adjusted,
        energy_per_device_j=per_device,
        energy_breakdown=breakdown,
        multi_gpu=multi_gpu,
        environment_snapshot=environment,
        measurement_warnings=dedupe([*warnings, *agg_warnings]),
        warmup_excluded_samples=(int(sum(excluded)) if excluded and methodology != "total" else None),
        excluded_power_samples=(int(sum(excluded_power)) if excluded_power and methodology != "total" else None),
        reproducibility_notes=notes,
        timeseries=timeseries,
        start_time=start_time,
        end_time=end_time,
        effective_config=config.model_dump(mode="json"),
        process_results=procs,
        aggregation=AggregationMetadata(
            num_processes=len(procs), temporal_overlap_verified=overlap_ok, gpu_attribution_verified=attribution_ok,
            overlap_ratio=overlap_ratio, warnings=agg_warnings,
        ),
        thermal_throttle=_merge_thermal(procs, offsets),
        warmup_result=p0.warmup_result,
        latency_stats=latency,
        extended_metrics=extended,
        input_tokens=input_tokens,
        energy_method=energy_method,  # type: ignore[arg-type]
        energy_trace_agreement=agreement,
        device_kind=device_kind,  # type: ignore[arg-type]
    )
