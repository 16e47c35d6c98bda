"""The harness: one engine process's measurement, in the order of docs/methodology.md §3.

model load → prompts (tokenised once) → sampler on → energy-counter calibration → warmup (+ thermal
floor) → window begin (returns at once; the start's counter-edge polls run beside the engine) → run → window end →
sampler off → cleanup (always, in ``finally``) → analysis of the reported window (total /
steady_state / windowed) → ``RawProcessResult``.

The environment snapshot and the idle baseline are taken by the worker before any engine process
starts (same devices, no model loaded) and passed in. Nothing here imports dagster or opens DuckDB.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.experiment import RawProcessResult, Timestamps
from llem_pipeline.domain.metrics import ExtendedEfficiencyMetrics, MemoryMetrics
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.domain.warnings import make_warning
from llem_pipeline.engines.protocol import Engine
from llem_pipeline.measure.baseline import BaselineResult, energy_breakdown
from llem_pipeline.measure.devices.protocol import Device
from llem_pipeline.measure.energy import EnergyMonitor, WindowEnergy
from llem_pipeline.measure.flops import count_nonembedding_params, estimate_flops
from llem_pipeline.measure.latency import latency_statistics
from llem_pipeline.measure.quality import collect_warnings
from llem_pipeline.measure.sampler import Sampler
from llem_pipeline.measure.sampler_process import ProcessSampler, child_opener
from llem_pipeline.measure.samples import Samples
from llem_pipeline.measure.throttle import throttle_info
from llem_pipeline.measure.warmup import run_warmup
from llem_pipeline.measure.windows import resolve_window, tokens_in_window

ProgressFn = Callable[[str, dict[str, Any]], None]


@dataclass
class ProcessOutcome:
    """What one engine process produced: its result, raw samples, request records and step timings.

    ``inference_start_mono_s``: monotonic time of the first request's submission (t = 0 of every
    relative time). ``step_seconds``: wall time of each harness step, s. ``sampler_mode``: 'process'
    or 'thread' (see ``make_sampler``).
    """

    raw: RawProcessResult
    samples: Samples
    requests: list[RequestRecord]
    inference_start_mono_s: float
    window_mono_s: tuple[float, float]
    step_seconds: dict[str, float] = field(default_factory=dict)
    sampler_mode: str = "thread"  # where the sampler ran: 'process' (its own) or 'thread' (the engine's)


def _noop(_event: str, _data: dict[str, Any]) -> None:
    return None


class _Steps:
    """Times each harness step (monotonic s) and reports it as a progress event."""

    def __init__(self, on_progress: ProgressFn) -> None:
        self.seconds: dict[str, float] = {}
        self._emit = on_progress

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self._emit("step_start", {"step": name})
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = time.perf_counter() - t
            self._emit("step_end", {"step": name, "seconds": round(self.seconds[name], 4)})


def count_model_params(model_ref: str, engine: Engine | None = None) -> int | None:
    """Return the non-embedding parameter count of the model (by module type), or None when unknown.

    Uses the loaded torch module when the engine exposes one (``engine.model``), else the
    architecture instantiated on the meta device (no weights, no memory).
    """
    model = getattr(engine, "model", None) if engine is not None else None
    if model is None:
        try:
            from llem_pipeline.engines.model_files import meta_model

            model = meta_model(model_ref)
        except Exception:
            return None
    try:
        return count_nonembedding_params(model)
    except Exception:
        return None


def make_sampler(devices: Sequence[Device], interval_s: float,
                 mode: str | None = None) -> tuple[Sampler | ProcessSampler, str]:
    """Returns (the sampler for ``devices`` at ``interval_s`` s, 'process' or 'thread').

    ``mode`` (default 'auto'; the worker's ``--sampler``, which the pipeline sets from LLEM_SAMPLER): 'process' samples from a spawned process that
    opens the same GPUs (no GIL shared with the engine; the start's edge polls run there while the engine
    starts) and raises ValueError for devices that cannot be reopened elsewhere; 'thread' samples from a
    thread of this process; 'auto' takes 'process' whenever the devices allow it (NVML GPUs) and 'thread'
    otherwise (in-process simulated devices). A process sampler is spawned here, so it opens NVML while
    the caller loads the model.
    """
    mode = mode or "auto"
    if mode not in ("auto", "process", "thread"):
        raise ValueError(f"sampler mode {mode!r} (--sampler, LLEM_SAMPLER) must be 'auto', 'process' or 'thread'")
    if mode != "thread":
        opener, why = child_opener(devices)
        if opener is not None:
            return ProcessSampler(opener, [d.uuid for d in devices], interval_s).prepare(), "process"
        if mode == "process":
            raise ValueError(f"sampler mode 'process' (--sampler, LLEM_SAMPLER): {why}; use 'thread' or 'auto'")
    return Sampler(devices, interval_s=interval_s), "thread"


def measure_process(
    config: ExperimentConfig,
    devices: Sequence[Device],
    *,
    engine_loader: Callable[[ExperimentConfig, list[int]], Engine],
    tokenizer_loader: Callable[[ExperimentConfig], Any],
    prompt_builder: Callable[[ExperimentConfig, Any], Any],
    device_indices: list[int],
    experiment_id: str,
    process_index: int = 0,
    baseline: BaselineResult | None = None,
    on_progress: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
    sampler_mode: str | None = None,
) -> ProcessOutcome:
    """Measure one engine process on ``devices``; returns its ProcessOutcome (energies J, times s).

    ``engine_loader(config, device_indices)`` loads the engine; ``tokenizer_loader(config)`` and
    ``prompt_builder(config, tokenizer)`` give the PromptSet (token ids, identical for every engine).
    ``baseline``: idle power of these devices (or None when disabled/unavailable). The engine is
    always cleaned up, also on error. Raises whatever the engine raises; the sampler never crashes
    the window (an NVML error ends sampling with the samples taken and a warning). ``sampler_mode``:
    'process', 'thread' or 'auto' (default 'auto'), see ``make_sampler``.
    """
    emit = on_progress or _noop
    steps = _Steps(emit)
    interval_s = config.energy.sample_interval_ms / 1000.0
    sampler, sampler_mode = make_sampler(devices, interval_s, sampler_mode)
    emit("sampler", {"mode": sampler_mode})
    try:
        tokenizer = steps.run("tokenizer", lambda: tokenizer_loader(config))
        prompts = steps.run("prompts", lambda: prompt_builder(config, tokenizer))
        engine = steps.run("model_load", lambda: engine_loader(config, device_indices))
        # The counter's update period/phase is learnt right after the sampler starts, before warmup: polling
        # it at the window's edge (up to 1.2 s with the engine idle) would undo the warmup just before the run.
        monitor = EnergyMonitor(devices, sampler, boundary_correction=config.energy.boundary_correction)
        try:
            warm, records, boundary = _warmup_and_window(config, engine, prompts, sampler, monitor, steps, emit, sleep)
            samples = sampler.stop()
            peak_mb = engine.peak_memory_mb()
        finally:
            if sampler.running:
                sampler.stop()
            steps.run("cleanup", engine.cleanup)
    finally:
        close = getattr(sampler, "close", None)
        if close is not None:  # a sampler process that never started (model load failed) or was left running
            close()
    n_params = count_model_params(config.model, engine)
    outcome = _analyse(config, devices, records, samples, boundary, monitor, sampler, warm, baseline,
                       experiment_id=experiment_id, process_index=process_index, n_params=n_params,
                       info=engine.info, peak_mb=peak_mb)
    outcome.step_seconds = steps.seconds
    outcome.sampler_mode = sampler_mode
    emit("process_done", {"process_index": process_index, "output_tokens": outcome.raw.output_tokens,
                          "energy_j": round(outcome.raw.energy_j, 4)})
    return outcome


def _warmup_and_window(config: ExperimentConfig, engine: Engine, prompts: Any, sampler: Sampler | ProcessSampler,
                       monitor: EnergyMonitor, steps: _Steps, emit: ProgressFn,
                       sleep: Callable[[float], None]) -> tuple[Any, list[RequestRecord], WindowEnergy]:
    """Start sampling, calibrate the counter, warm up, and run the measured window; returns (WarmupResult or
    None, the request records, the window's boundary energy)."""
    steps.run("sampler_start", sampler.start)
    if config.energy.boundary_correction:
        steps.run("counter_calibration", monitor.calibrate)
    warm = None
    if config.warmup.enabled:
        from llem_pipeline.engines.prompts import warmup_prompts

        k = config.warmup.n_warmup if config.warmup.mode == "fixed" else config.warmup.max_prompts
        warm_prompts = warmup_prompts(prompts, k)
        batch = config.pytorch.batch_size if config.backend == "pytorch" and config.pytorch else 1
        warm = steps.run("warmup", lambda: run_warmup(
            engine, warm_prompts, config.warmup, sleep=sleep, batch_size=batch,
            on_progress=lambda p: emit("warmup", {"done": p.done, "total": p.total, "phase": p.phase}),
        ))
    start = steps.run("window_begin", monitor.begin_window)
    records = steps.run("run", lambda: engine.run(prompts.token_ids))
    boundary = steps.run("window_end", lambda: monitor.end_window(start))
    return warm, records, boundary


def _analyse(config: ExperimentConfig, devices: Sequence[Device], records: list[RequestRecord], samples: Samples,
             boundary: WindowEnergy, monitor: EnergyMonitor, sampler: Sampler, warm: Any,
             baseline: BaselineResult | None, *, experiment_id: str, process_index: int, n_params: int | None,
             info: Any, peak_mb: float | None) -> ProcessOutcome:
    """Turn the run's records and samples into the RawProcessResult of the reported window."""
    if not records:
        raise RuntimeError("the engine returned no request records: nothing was measured")
    # The measurement window: first submission → last token (docs/methodology.md §1), inside the energy boundary polls.
    t_sub = min(r.submit_time_s for r in records)
    t_done = max(r.done_time_s for r in records)
    interval_s = config.energy.sample_interval_ms / 1000.0
    window = resolve_window(config.energy, samples, t_sub, t_done, records)
    methodology = config.energy.methodology
    extra_warnings: list[str] = []
    if methodology == "steady_state" and not window.found:
        methodology = "total"
        extra_warnings.append(make_warning("steady_state_not_found", window.reason or "no stable, saturated span"))
    a, b = t_sub + window.start_s, t_sub + window.end_s
    # The reported window's energy comes from the same evidence and the same computation as the boundary
    # window (sampler rows, the dense polls at both ends, counter timing): docs/methodology-energy.md.
    energy = boundary.over(a, b)
    if methodology == "total":
        out_tokens = sum(r.output_tokens for r in records)
        in_tokens = sum(r.input_tokens for r in records)
    else:
        out_tokens, in_tokens = tokens_in_window([_relative(r, t_sub) for r in records], window.start_s, window.end_s)
    duration = b - a
    in_window = samples.between(a, b)
    throttle = throttle_info(samples, a, b)
    throttle = throttle.model_copy(update={"throttle_timestamps": [t + window.start_s for t in throttle.throttle_timestamps]})
    baseline_w = baseline.total_idle_power_w if baseline is not None else None
    breakdown = energy_breakdown(energy.total_energy_j, baseline, duration, energy.method, energy.uncertainty_j,
                                 energy.trace_energy_j)
    kind = devices[0].kind if devices else "simulated"
    warnings = collect_warnings(
        window_s=duration, device_kind=kind, energy_method=energy.method, sample_interval_s=interval_s,
        sample_count=len(in_window), output_tokens=out_tokens, num_devices=len(devices),
        persistence_modes=[_optional(d.persistence_mode) for d in devices], device_uuids=[d.uuid for d in devices],
        temperature_drift_c=throttle.temperature_drift_c, energy_trace_agreement=energy.agreement,
        baseline_enabled=config.baseline.enabled, baseline_power_w=baseline_w,
        baseline_floored=breakdown.baseline_floored, throttle=throttle,
        steady_state=window if config.energy.methodology == "steady_state" else None,
        counter_updates=energy.counter_updates, energy_j=energy.energy_j, energy_uncertainty_j=energy.uncertainty_j,
        extra=[*energy.warnings, *(baseline.warnings if baseline else []), *extra_warnings],
    )
    flops = estimate_flops(n_params, in_tokens, out_tokens, config.precision) if n_params else None
    util = in_window["gpu_util_pct"].astype(np.float64)
    extended = ExtendedEfficiencyMetrics(
        output_tokens_per_joule=out_tokens / energy.total_energy_j if energy.total_energy_j > 0 else None,
        avg_power_w=energy.total_energy_j / duration if duration > 0 else None,
        peak_power_w=_peak_summed_power(in_window),
        sm_utilisation_mean=float(np.nanmean(util)) if np.isfinite(util).any() else None,
        flops_per_second=flops.value / duration if flops and duration > 0 else None,
        flops_per_output_token=flops.value / out_tokens if flops and out_tokens else None,
        memory=MemoryMetrics(
            total_vram_mb=sum(m for m in (_optional(d.memory_total_mb) for d in devices) if m) or None,
            model_memory_mb=info.model_memory_mb, peak_memory_mb=peak_mb,
            inference_memory_mb=max(0.0, peak_mb - info.model_memory_mb)
            if peak_mb is not None and info.model_memory_mb is not None else None,
        ),
        flops=flops,
    )
    latency = latency_statistics(records, timing_source=info.extras.get("timing_source", "per_token_timestamps"))
    if latency is not None and extended.tpot_ms is None and latency.tpot is not None:
        extended = extended.model_copy(update={"tpot_ms": latency.tpot.mean_ms})
    raw = RawProcessResult(
        experiment_id=experiment_id,
        process_index=process_index,
        backend=info.backend,
        backend_version=info.backend_version,
        device_kind=kind,
        device_uuids=[d.uuid for d in devices],
        gpu_names=[d.name for d in devices],
        timestamps=Timestamps(start=energy.start_utc, end=energy.end_utc, duration_sec=duration),
        measurement_methodology=methodology,
        steady_state_window=None if methodology == "total" else (window.start_s, window.end_s),
        warmup_excluded_samples=None if methodology == "total" else (warm.iterations_completed if warm else 0),
        excluded_power_samples=None if methodology == "total" else window.excluded_samples,
        num_requests=len(records),
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        inference_time_sec=duration,
        energy_j=energy.total_energy_j,
        energy_per_device_j=list(energy.energy_per_device_j),
        energy_method=energy.method,
        trace_energy_j=energy.trace_energy_j,
        energy_trace_agreement=energy.agreement,
        energy_uncertainty_j=energy.uncertainty_j,
        baseline_power_w=baseline_w,
        energy_adjusted_j=breakdown.adjusted_energy_j,
        energy_breakdown=breakdown,
        thermal_throttle=throttle,
        warmup_result=warm,
        latency_stats=latency,
        flops=flops,
        extended_metrics=extended,
        sample_count=len(in_window),
        measurement_warnings=warnings,
        timeseries="timeseries.parquet",
        requests_file="requests.parquet",
    )
    return ProcessOutcome(raw=raw, samples=samples, requests=records, inference_start_mono_s=t_sub,
                          window_mono_s=(a, b))


def _optional(read: Callable[[], Any]) -> Any:
    """Return a descriptive device read (persistence mode, total memory), or None when it fails after
    the window (a transient NVMLError must not discard a completed measurement)."""
    try:
        return read()
    except Exception:
        return None


def _relative(r: RequestRecord, t0: float) -> RequestRecord:
    """Return ``r`` with every time shifted to s from ``t0``."""
    return r.model_copy(update={
        "submit_time_s": r.submit_time_s - t0,
        "first_token_time_s": None if r.first_token_time_s is None else r.first_token_time_s - t0,
        "token_times_s": [t - t0 for t in r.token_times_s],
        "done_time_s": r.done_time_s - t0,
    })


def _peak_summed_power(samples: Samples) -> float | None:
    """Return the max over sampler ticks of the power summed across devices, W (None without samples)."""
    per_device = [samples.for_device(int(i))["power_w"] for i in np.unique(samples["device_index"])]
    n = min((len(p) for p in per_device), default=0)
    if n == 0:
        return None
    return float(np.nanmax(np.sum([p[:n] for p in per_device], axis=0)))
