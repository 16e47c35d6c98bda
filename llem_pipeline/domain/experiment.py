"""ExperimentResult v2.0 and the per-process models it aggregates.

``ExperimentResult`` follows the seed plan field for field (names, types, defaults, frozen, the
``AggregatedResult`` alias, ``duration_sec``, ``tokens_per_joule``) plus optional provenance fields
(input tokens, energy method, counter/trace agreement, device kind). ``compute_measurement_config_hash()``
identifies what was measured.

Values that can never be wrong are enforced: counts, energies, powers and monotonic durations are
non-negative, the counter/trace agreement is ≥ 0, ``schema_version`` is exactly "2.0", and J/token
equals energy / tokens (within a relative 1e-6) whenever both are positive. Wall-clock times are not
ordered (a clock step may put an end before its start) and latencies are left unconstrained.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.metrics import (
    DeviceKind,
    EnergyBreakdown,
    EnergyMethod,
    ExtendedEfficiencyMetrics,
    FlopsResult,
    LatencyStatistics,
    MultiGPUMetrics,
    ThermalThrottleInfo,
    WarmupResult,
)

if TYPE_CHECKING:
    from llem_pipeline.domain.config import ExperimentConfig

SCHEMA_VERSION = "2.0"
DEFAULT_REPRODUCIBILITY_NOTES = (
    "Energy measured via NVML polling. Accuracy +/-5%. Results may vary with thermal state and system load."
)
Methodology = Literal["total", "steady_state", "windowed"]
SchemaVersion = Literal["2.0"]
NonNegative = Annotated[float, Field(ge=0)]
J_PER_TOKEN_REL_TOL = 1e-6  # avg_energy_per_token_j vs total_energy_j / total_tokens (both computed in float64)


def compute_measurement_config_hash(config: ExperimentConfig) -> str:
    """SHA-256[:16] of ExperimentConfig. Layer 3 fields excluded by design.

    Runtime-only settings (output paths, GPU indices, DuckDB path, timeouts) are not fields of
    ExperimentConfig, so the hash depends only on what was measured. Returns 16 lowercase hex chars.
    """
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Timestamps(BaseModel):
    """Start and end of a span: UTC wall-clock datetimes and a monotonic duration."""

    start: datetime = Field(..., description="Start, timezone-aware UTC")
    end: datetime = Field(..., description="End, timezone-aware UTC")
    duration_sec: float = Field(..., ge=0, description="Duration from the monotonic clock, s")


class RawProcessResult(BaseModel):
    """What one engine process measured: its window, tokens, energy and quality signals.

    An ExperimentResult aggregates one or more of these (data parallelism = one per engine process).
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, description="Result schema version (exactly '2.0')")
    experiment_id: str = Field(..., description="Experiment identifier shared by all processes of one run")
    process_index: int = Field(default=0, ge=0, description="Engine process index (0-based)")
    backend: str = Field(default="pytorch", description="Inference backend used")
    backend_version: str | None = Field(default=None, description="Backend library version")
    device_kind: DeviceKind = Field(..., description="Power source: 'nvml', 'simulated' or 'replay'")
    device_uuids: list[str] = Field(default_factory=list, description="UUIDs of the devices this process measured")
    gpu_names: list[str] = Field(default_factory=list, description="Product names of those devices")
    timestamps: Timestamps = Field(..., description="Measurement window (UTC start/end, monotonic duration)")
    measurement_methodology: Methodology = Field(default="total", description="Which window the figures cover")
    steady_state_window: tuple[float, float] | None = Field(
        default=None, description="(start, end) of the reported window, s from inference start"
    )
    warmup_excluded_samples: int | None = Field(
        default=None, ge=0, description="Prompts excluded during warmup. None when methodology=total."
    )
    excluded_power_samples: int | None = Field(
        default=None, ge=0, description="Power samples of the inference window outside the reported window"
    )
    num_requests: int = Field(..., ge=0, description="Measured requests (warmup excluded)")
    input_tokens: int = Field(..., ge=0, description="Prompt tokens fed to the engine in the window")
    output_tokens: int = Field(..., ge=0, description="Generated tokens in the window (no padding, nothing after EOS)")
    inference_time_sec: float = Field(..., ge=0, description="Window length, s (monotonic)")
    energy_j: float = Field(..., ge=0, description="Raw GPU energy in the window, J, summed over this process's devices")
    energy_per_device_j: list[NonNegative] = Field(default_factory=list, description="Raw energy per device, J")
    energy_method: EnergyMethod = Field(..., description="How energy_j was obtained")
    trace_energy_j: float | None = Field(default=None, ge=0, description="Integral of sampled power over the window, J")
    energy_trace_agreement: float | None = Field(
        default=None, ge=0, description="|E_counter − ∫P dt| / E_counter (unitless); None without both"
    )
    energy_uncertainty_j: float | None = Field(
        default=None, ge=0, description="Remaining uncertainty of energy_j, J (inf when neither counter nor trace exists)"
    )
    baseline_power_w: float | None = Field(default=None, ge=0, description="Idle power of this process's devices, W")
    energy_adjusted_j: float | None = Field(default=None, ge=0, description="Baseline-adjusted energy, J, floored at 0")
    energy_breakdown: EnergyBreakdown | None = Field(default=None, description="Raw/baseline/adjusted with provenance")
    thermal_throttle: ThermalThrottleInfo | None = Field(default=None, description="Throttle reasons in the window")
    warmup_result: WarmupResult | None = Field(default=None, description="Warmup outcome")
    latency_stats: LatencyStatistics | None = Field(default=None, description="This process's request latencies")
    flops: FlopsResult | None = Field(default=None, description="FLOPs estimate of the measured tokens")
    extended_metrics: ExtendedEfficiencyMetrics | None = Field(default=None, description="Secondary metrics")
    sample_count: int = Field(default=0, ge=0, description="Power samples taken in the window (all devices)")
    measurement_warnings: list[str] = Field(default_factory=list, description="'code: detail' warnings")
    timeseries: str | None = Field(default=None, description="Relative filename of this process's power samples")
    requests_file: str | None = Field(default=None, description="Relative filename of this process's request records")

    model_config = {"frozen": True}


class AggregationMetadata(BaseModel):
    """How process results were combined into one ExperimentResult."""

    method: str = Field(
        default="sum_energy_pooled_window",
        description="Energy and tokens summed; window = earliest start to latest end; latency pooled from requests",
    )
    num_processes: int = Field(..., ge=0, description="Processes aggregated")
    temporal_overlap_verified: bool = Field(default=False, description="All process windows overlapped in time")
    gpu_attribution_verified: bool = Field(default=False, description="No device was measured by two processes")
    overlap_ratio: float | None = Field(
        default=None, ge=0, description="Common overlap / union of the process windows (1.0 = perfectly concurrent)"
    )
    warnings: list[str] = Field(default_factory=list, description="Aggregation warnings ('code: detail')")


class ExperimentResult(BaseModel):
    """Experiment result — the user-visible output of a measurement run.

    Combines raw results from all processes into a single result with proper
    aggregation (sum energy, average throughput). For single-GPU experiments,
    process_results has exactly one item.

    v2.0 schema: every field below is part of one version; ``schema_version`` is exactly "2.0".

    Fields beyond the seed (optional, default None): ``input_tokens`` (prompt tokens fed to
    the engine), ``energy_method`` ('nvml_counter' | 'trace_integral' | 'simulated'),
    ``energy_trace_agreement`` (|E_counter − ∫P dt| / E_counter), ``device_kind``
    ('nvml' | 'simulated' | 'replay'), ``excluded_power_samples`` (power samples outside the reported
    steady-state/explicit window; ``warmup_excluded_samples`` keeps the seed's meaning: warmup prompts).

    Constraints (module docstring): non-negative counts, energies, powers and durations; agreement ≥ 0;
    J/token consistent with energy / tokens when both are positive.
    """

    # Identity
    schema_version: SchemaVersion = Field(default="2.0", description="Result schema version (exactly '2.0')")
    experiment_id: str = Field(..., description="Unique experiment identifier")
    measurement_config_hash: str = Field(
        ..., description="SHA-256[:16] of ExperimentConfig (environment excluded)"
    )

    # Backend
    backend: str = Field(default="pytorch", description="Inference backend used")
    backend_version: str | None = Field(
        default=None, description="Backend version string for reproducibility"
    )

    # Methodology
    measurement_methodology: Methodology = Field(
        ..., description="What was measured — total run, steady-state window, or explicit window"
    )
    steady_state_window: tuple[float, float] | None = Field(
        default=None,
        description="(start_sec, end_sec) of measurement window relative to experiment start",
    )

    # Core metrics
    total_tokens: int = Field(..., ge=0, description="Total generated (output) tokens across all processes")
    total_energy_j: float = Field(..., ge=0, description="Total raw GPU energy, J (sum across processes and devices)")
    total_inference_time_sec: float = Field(..., ge=0, description="Measurement window, s (monotonic)")
    avg_tokens_per_second: float = Field(..., ge=0, description="Output throughput: total_tokens / window, tokens/s")
    avg_energy_per_token_j: float = Field(
        ..., ge=0, description="total_energy_j / total_tokens, J per output token (0 when no tokens were generated)"
    )
    total_flops: float = Field(..., ge=0, description="Total FLOPs (reference metadata)")

    # Energy detail
    baseline_power_w: float | None = Field(
        default=None, ge=0, description="Idle GPU power (W) measured before experiment"
    )
    energy_adjusted_j: float | None = Field(
        default=None, ge=0, description="Baseline-subtracted energy attributable to inference, J (floored at 0)"
    )
    energy_per_device_j: list[NonNegative] | None = Field(
        default=None, description="Per-GPU energy breakdown, J"
    )
    energy_breakdown: EnergyBreakdown | None = Field(
        default=None, description="Detailed energy breakdown with baseline adjustment"
    )

    # Multi-GPU
    multi_gpu: MultiGPUMetrics | None = Field(
        default=None, description="Multi-GPU metrics. None for single-GPU runs."
    )

    # Environment
    environment_snapshot: EnvironmentSnapshot | None = Field(
        default=None, description="Full software+hardware environment snapshot"
    )

    # Quality
    measurement_warnings: list[str] = Field(
        default_factory=list,
        description="Measurement quality warnings (e.g., short duration, thermal drift)",
    )
    warmup_excluded_samples: int | None = Field(
        default=None,
        ge=0,
        description="Number of prompts excluded during warmup. None when methodology=total.",
    )
    excluded_power_samples: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Power samples of the inference window excluded from the reported window (ramp-up and drain for "
            "steady_state, outside the explicit window for windowed). None when methodology=total."
        ),
    )
    reproducibility_notes: str = Field(
        default=DEFAULT_REPRODUCIBILITY_NOTES,
        description="Fixed disclaimer about measurement accuracy",
    )

    # Timeseries sidecar reference
    timeseries: str | None = Field(
        default=None, description="Relative filename of timeseries sidecar (e.g. 'timeseries.parquet')"
    )

    # Timestamps
    start_time: datetime = Field(..., description="Earliest process start time")
    end_time: datetime = Field(..., description="Latest process end time")

    # Effective configuration (for reproducibility)
    effective_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Full resolved config",
    )

    # Per-process breakdown (embedded in the result, not separate files)
    process_results: list[RawProcessResult] = Field(
        default_factory=list, description="Original per-process results"
    )
    aggregation: AggregationMetadata | None = Field(
        default=None, description="Aggregation metadata (populated for multi-GPU)"
    )

    # Carry-forward fields (v1.x compat, used by aggregation/CLI)
    thermal_throttle: ThermalThrottleInfo | None = Field(
        default=None, description="GPU thermal and power throttling information"
    )
    warmup_result: WarmupResult | None = Field(
        default=None, description="Warmup convergence detection result"
    )
    latency_stats: LatencyStatistics | None = Field(
        default=None, description="Computed TTFT/ITL statistics from streaming inference"
    )
    extended_metrics: ExtendedEfficiencyMetrics | None = Field(
        default=None, description="Extended efficiency metrics (when computed)"
    )

    # Provenance additions (optional; see the class docstring)
    input_tokens: int | None = Field(
        default=None, ge=0, description="Prompt tokens fed to the engine (after truncation)"
    )
    energy_method: EnergyMethod | None = Field(default=None, description="How total_energy_j was obtained")
    energy_trace_agreement: float | None = Field(
        default=None, ge=0, description="|E_counter − ∫P dt| / E_counter (unitless)"
    )
    device_kind: DeviceKind | None = Field(default=None, description="Power source: 'nvml', 'simulated' or 'replay'")

    model_config = {"frozen": True}

    @model_validator(mode="after")
    def _j_per_token_consistent(self) -> ExperimentResult:
        """Check avg_energy_per_token_j against total_energy_j / total_tokens when both are positive.

        Zero energy means none was recorded and zero tokens make every per-token figure 0: neither
        constrains J/token.
        """
        if self.total_tokens > 0 and self.total_energy_j > 0:
            expected = self.total_energy_j / self.total_tokens
            if not math.isclose(self.avg_energy_per_token_j, expected, rel_tol=J_PER_TOKEN_REL_TOL, abs_tol=1e-300):
                raise ValueError(
                    f"avg_energy_per_token_j={self.avg_energy_per_token_j!r} J is not total_energy_j / total_tokens = "
                    f"{self.total_energy_j!r} / {self.total_tokens} = {expected!r} J (relative tolerance "
                    f"{J_PER_TOKEN_REL_TOL:g}): compute it from the same totals"
                )
        return self

    @property
    def duration_sec(self) -> float:
        """Total experiment duration, s (end_time − start_time)."""
        return (self.end_time - self.start_time).total_seconds()

    @property
    def tokens_per_joule(self) -> float:
        """Overall energy efficiency, output tokens per J (0.0 when no energy was recorded)."""
        if self.total_energy_j > 0:
            return self.total_tokens / self.total_energy_j
        return 0.0


class SkippedExperiment(BaseModel):
    """A sweep point that did not yield a valid ExperimentConfig, and why."""

    overrides: dict[str, Any] = Field(..., description="The dotted-key values of the point")
    reason: str = Field(..., description="Validation message naming the field, the value and what is allowed")


class StudyResult(BaseModel):
    """Outcome of a study: the results of its experiments by reference, plus what was skipped."""

    name: str = Field(..., description="Study name")
    study_design_hash: str = Field(..., description="SHA-256[:16] of the study design (configs, cycles, order)")
    measurement_protocol: dict[str, Any] = Field(
        default_factory=dict, description="cycles, order, seed, gap_seconds"
    )
    experiments: list[ExperimentResult] = Field(default_factory=list, description="Results, when loaded")
    result_files: list[str] = Field(default_factory=list, description="Paths of result JSON files")
    skipped: list[SkippedExperiment] = Field(default_factory=list, description="Invalid sweep points")


AggregatedResult = ExperimentResult
