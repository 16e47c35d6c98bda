"""Pydantic domain models: configs, results, metrics. No I/O, no torch, no dagster."""

from llem_pipeline.domain.config import (
    BaselineConfig,
    DecoderConfig,
    EnergyConfig,
    ExperimentConfig,
    PyTorchConfig,
    SyntheticDatasetConfig,
    TensorRTConfig,
    VLLMConfig,
    WarmupConfig,
)
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.experiment import (
    AggregatedResult,
    AggregationMetadata,
    ExperimentResult,
    RawProcessResult,
    SkippedExperiment,
    StudyResult,
    Timestamps,
    compute_measurement_config_hash,
)
from llem_pipeline.domain.metrics import (
    EnergyBreakdown,
    ExtendedEfficiencyMetrics,
    FlopsResult,
    LatencyStatistics,
    MemoryMetrics,
    MultiGPUMetrics,
    Percentiles,
    ThermalThrottleInfo,
    WarmupResult,
)
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.domain.study import StudyConfig, StudyPlan

__all__ = [
    "AggregatedResult",
    "AggregationMetadata",
    "BaselineConfig",
    "ConfigError",
    "DecoderConfig",
    "EnergyBreakdown",
    "EnergyConfig",
    "EnvironmentSnapshot",
    "ExperimentConfig",
    "ExperimentResult",
    "ExtendedEfficiencyMetrics",
    "FlopsResult",
    "LatencyStatistics",
    "MemoryMetrics",
    "MultiGPUMetrics",
    "Percentiles",
    "PyTorchConfig",
    "RawProcessResult",
    "RequestRecord",
    "SkippedExperiment",
    "StudyConfig",
    "StudyPlan",
    "StudyResult",
    "SyntheticDatasetConfig",
    "TensorRTConfig",
    "ThermalThrottleInfo",
    "Timestamps",
    "VLLMConfig",
    "WarmupConfig",
    "WarmupResult",
    "compute_measurement_config_hash",
]
