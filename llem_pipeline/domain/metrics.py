"""Measurement metric models: energy breakdown, multi-GPU, warmup, thermal, latency, FLOPs, efficiency.

Pydantic only. Every field says its unit (J, W, s, ms, MB, °C) in its name or description. Counts,
energies, powers, FLOPs, memory sizes and monotonic durations are non-negative (they can never be
otherwise); temperatures, latencies, CVs and wall-clock-derived ages are left unconstrained.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

EnergyMethod = Literal["nvml_counter", "trace_integral", "simulated"]
DeviceKind = Literal["nvml", "simulated", "replay"]
NonNegative = Annotated[float, Field(ge=0)]


class EnergyBreakdown(BaseModel):
    """Raw and baseline-adjusted energy of one measurement window, with how each number was obtained.

    Fields beyond the seed (optional, documented here): ``baseline_floored`` (adjusted energy was
    clamped at 0 J), ``baseline_measured_at`` / ``baseline_cache_age_sec`` (provenance of the idle power),
    ``energy_method`` (counter, trace integral or simulated), ``uncertainty_j`` (remaining error bound of
    the raw energy after boundary correction), ``trace_energy_j`` (integral of sampled power, the cross-check).
    """

    raw_energy_j: float = Field(..., ge=0, description="Raw GPU energy in the window, J, summed over devices (never baseline-adjusted)")
    baseline_power_w: float | None = Field(default=None, ge=0, description="Idle power of the same devices, W, summed over devices")
    baseline_duration_sec: float | None = Field(
        default=None, ge=0, description="Window duration the baseline power was multiplied by, s (monotonic clock)"
    )
    adjusted_energy_j: float | None = Field(
        default=None, ge=0, description="raw_energy_j − baseline_power_w × baseline_duration_sec, floored at 0 J"
    )
    adjustment_method: str | None = Field(
        default=None, description="How the baseline was applied, e.g. 'subtract_idle_power_x_window'; None when no baseline"
    )
    provenance: str = Field(
        default="nvml_polling",
        description="Where the idle power came from: 'fresh' (measured for this run), 'cached' (per-GPU-UUID cache) or 'unavailable'",
    )
    baseline_floored: bool = Field(default=False, description="True when the adjusted energy was clamped at 0 J")
    baseline_measured_at: str | None = Field(default=None, description="UTC ISO-8601 time the idle power was measured")
    baseline_cache_age_sec: float | None = Field(default=None, description="Age of the cached idle power when used, s")
    energy_method: EnergyMethod | None = Field(default=None, description="How raw_energy_j was obtained")
    uncertainty_j: float | None = Field(
        default=None, ge=0, description="Remaining uncertainty of raw_energy_j after boundary correction, J (± bound)"
    )
    trace_energy_j: float | None = Field(
        default=None, ge=0, description="Integral of the sampled instant power over the same window, J (cross-check)"
    )


class MultiGPUMetrics(BaseModel):
    """Per-device energy breakdown for multi-GPU experiments."""

    num_gpus: int = Field(..., ge=1, description="Number of GPUs used")
    energy_per_gpu_j: list[NonNegative] = Field(..., description="Per-device energy in joules")
    energy_total_j: float = Field(..., ge=0, description="Sum of energy across all devices, J")
    energy_per_output_token_j: float = Field(
        ..., ge=0, description="Primary cross-configuration efficiency metric: energy_total_j / output tokens, J/token"
    )


class WarmupResult(BaseModel):
    """Outcome of the warmup phase (fixed count or latency-CV convergence). Warmup never counts in results."""

    converged: bool = Field(..., description="True when the CV target was met (always True in fixed-count mode)")
    final_cv: float = Field(..., description="Coefficient of variation of the last window of warmup latencies (unitless)")
    iterations_completed: int = Field(..., ge=0, description="Warmup requests run")
    target_cv: float = Field(..., description="CV target (unitless); in fixed mode the configured target, not used to stop")
    max_prompts: int = Field(..., ge=0, description="Upper bound on warmup requests")
    latencies_ms: list[float] = Field(default_factory=list, description="End-to-end latency of each warmup request, ms")
    mode: Literal["fixed", "cv"] = Field(default="fixed", description="Warmup strategy used")
    thermal_floor_wait_s: float = Field(default=0.0, ge=0, description="Thermal floor wait after warmup, s")
    warmup_tokens: int = Field(default=0, ge=0, description="Output tokens generated during warmup (excluded from results)")


class ThermalThrottleInfo(BaseModel):
    """GPU clock-event (throttle) reasons and temperatures seen inside the measurement window."""

    detected: bool = Field(default=False, description="Any thermal, power-cap or HW slowdown event in the window")
    thermal: bool = Field(default=False, description="Any thermal slowdown (SW or HW thermal)")
    power: bool = Field(default=False, description="Any power-related slowdown (SW power cap or HW power brake)")
    sw_thermal: bool = Field(default=False, description="NVML clocksEventReasonSwThermalSlowdown seen")
    hw_thermal: bool = Field(default=False, description="NVML clocksEventReasonHwThermalSlowdown seen")
    hw_power: bool = Field(default=False, description="NVML clocksEventReasonHwPowerBrakeSlowdown seen")
    sw_power_cap: bool = Field(default=False, description="NVML clocksEventReasonSwPowerCap seen")
    hw_slowdown: bool = Field(default=False, description="NVML clocksEventReasonHwSlowdown seen")
    throttle_duration_sec: float = Field(default=0.0, ge=0, description="Time with any throttle reason active, s")
    throttle_timestamps: list[float] = Field(
        default_factory=list, description="Sample times with a throttle reason, s from inference start"
    )
    max_temperature_c: float | None = Field(default=None, description="Max GPU temperature in the window, °C")
    mean_temperature_c: float | None = Field(default=None, description="Mean GPU temperature in the window, °C")
    temperature_drift_c: float | None = Field(
        default=None, description="Last minus first temperature sample in the window, °C"
    )


class Percentiles(BaseModel):
    """Summary of a latency distribution, ms."""

    count: int = Field(..., ge=0, description="Number of values")
    mean_ms: float = Field(..., description="Mean, ms")
    p50_ms: float = Field(..., description="Median, ms")
    p90_ms: float = Field(..., description="90th percentile, ms")
    p95_ms: float = Field(..., description="95th percentile, ms")
    p99_ms: float = Field(..., description="99th percentile, ms")
    min_ms: float = Field(..., description="Minimum, ms")
    max_ms: float = Field(..., description="Maximum, ms")


class LatencyStatistics(BaseModel):
    """Per-request latency statistics pooled over all measured requests.

    TTFT: submit → first output token. ITL: gaps between consecutive output tokens (all gaps pooled).
    TPOT: per request (done − first token) / (output tokens − 1). E2E: submit → last token.
    """

    num_requests: int = Field(..., ge=0, description="Requests in the statistics")
    ttft: Percentiles | None = Field(default=None, description="Time to first token, ms")
    itl: Percentiles | None = Field(default=None, description="Inter-token latency (all gaps pooled), ms")
    tpot: Percentiles | None = Field(default=None, description="Time per output token after the first, per request, ms")
    e2e: Percentiles | None = Field(default=None, description="End-to-end request latency, ms")
    timing_source: str = Field(
        default="per_token_timestamps",
        description="How token times were observed: 'per_token_timestamps' (streamer / logits hook) or 'engine_metrics' (vLLM)",
    )


class FlopsResult(BaseModel):
    """FLOPs estimate of the measured (non-warmup) tokens; reference metadata, not a measurement."""

    value: float = Field(..., ge=0, description="Estimated FLOPs (floating-point operations, not per second)")
    method: Literal["palm_formula", "architecture", "parameter_estimate"] = Field(
        default="palm_formula", description="'palm_formula' = 2 · N_nonembedding · tokens"
    )
    confidence: Literal["high", "medium", "low"] = Field(default="medium", description="Confidence in the estimate")
    precision: str | None = Field(default=None, description="Compute precision of the run (fp32/fp16/bf16)")
    n_params_nonembedding: int | None = Field(default=None, ge=0, description="Parameters counted (embeddings excluded)")
    tokens: int | None = Field(default=None, ge=0, description="Tokens the estimate covers (input + output, warmup excluded)")
    notes: str | None = Field(default=None, description="What the estimate ignores (attention over context, etc.)")

    @property
    def is_valid(self) -> bool:
        """True when the estimate is a positive number of FLOPs."""
        return self.value > 0


class MemoryMetrics(BaseModel):
    """Device memory use, MB."""

    model_config = ConfigDict(protected_namespaces=())

    total_vram_mb: float | None = Field(default=None, ge=0, description="Device memory of the GPUs used, MB")
    model_memory_mb: float | None = Field(default=None, ge=0, description="Memory after model load, MB")
    peak_memory_mb: float | None = Field(default=None, ge=0, description="Peak memory during the window, MB")
    inference_memory_mb: float | None = Field(default=None, ge=0, description="max(0, peak − model), MB")


class ExtendedEfficiencyMetrics(BaseModel):
    """Secondary efficiency figures; every value is None when it cannot be computed."""

    tpot_ms: float | None = Field(default=None, description="Mean time per output token, ms")
    output_tokens_per_joule: float | None = Field(default=None, ge=0, description="Output tokens per J of raw energy")
    avg_power_w: float | None = Field(default=None, ge=0, description="Mean power over the window, W (raw energy / window)")
    peak_power_w: float | None = Field(default=None, ge=0, description="Max sampled power in the window, W (summed over devices)")
    sm_utilisation_mean: float | None = Field(default=None, description="Mean GPU utilisation in the window, %")
    flops_per_second: float | None = Field(default=None, ge=0, description="Estimated FLOPs / window, FLOP/s")
    flops_per_output_token: float | None = Field(default=None, ge=0, description="Estimated FLOPs / output token")
    memory: MemoryMetrics = Field(default_factory=MemoryMetrics, description="Device memory use")
    flops: FlopsResult | None = Field(default=None, description="The FLOPs estimate with its method and confidence")
