"""Value constraints of the result models: what can never be true of a measurement is refused."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llem_pipeline.domain.experiment import ExperimentResult, RawProcessResult, Timestamps
from llem_pipeline.domain.metrics import (
    EnergyBreakdown,
    ExtendedEfficiencyMetrics,
    FlopsResult,
    MemoryMetrics,
    MultiGPUMetrics,
    Percentiles,
    ThermalThrottleInfo,
    WarmupResult,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 1, 12, 0, 10, tzinfo=UTC)
RESULT: dict[str, Any] = dict(
    experiment_id="e", measurement_config_hash="abcdef0123456789", measurement_methodology="total",
    total_tokens=1000, total_energy_j=50.0, total_inference_time_sec=10.0, avg_tokens_per_second=100.0,
    avg_energy_per_token_j=0.05, total_flops=1e12, start_time=T0, end_time=T1,
)
RAW: dict[str, Any] = dict(
    experiment_id="e", device_kind="simulated", timestamps=Timestamps(start=T0, end=T1, duration_sec=10.0),
    num_requests=4, input_tokens=100, output_tokens=1000, inference_time_sec=10.0, energy_j=50.0,
    energy_method="simulated",
)


def _error_fields(err: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in err.errors()}


@pytest.mark.parametrize(("field", "value"), [
    ("total_tokens", -1), ("total_energy_j", -0.5), ("total_inference_time_sec", -1.0),
    ("avg_tokens_per_second", -3.0), ("avg_energy_per_token_j", -0.05), ("total_flops", -1.0),
    ("baseline_power_w", -10.0), ("energy_adjusted_j", -1.0), ("energy_per_device_j", [20.0, -1.0]),
    ("warmup_excluded_samples", -2), ("input_tokens", -7), ("energy_trace_agreement", -0.01),
])
def test_negative_counts_energies_and_times_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentResult(**{**RESULT, field: value})
    assert any(f.startswith(field) for f in _error_fields(info.value)), info.value


@pytest.mark.parametrize(("field", "value"), [
    ("num_requests", -1), ("input_tokens", -1), ("output_tokens", -1), ("inference_time_sec", -0.1),
    ("energy_j", -5.0), ("energy_per_device_j", [-1.0]), ("trace_energy_j", -1.0), ("energy_trace_agreement", -1.0),
    ("energy_uncertainty_j", -0.1), ("baseline_power_w", -1.0), ("energy_adjusted_j", -1.0), ("sample_count", -1),
    ("process_index", -1), ("warmup_excluded_samples", -1),
])
def test_process_results_refuse_negative_values(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        RawProcessResult(**{**RAW, field: value})
    assert any(f.startswith(field) for f in _error_fields(info.value)), info.value


@pytest.mark.parametrize(("model", "kwargs"), [
    (Timestamps, dict(start=T0, end=T1, duration_sec=-1.0)),
    (EnergyBreakdown, dict(raw_energy_j=-1.0)),
    (EnergyBreakdown, dict(raw_energy_j=1.0, adjusted_energy_j=-0.5)),
    (EnergyBreakdown, dict(raw_energy_j=1.0, uncertainty_j=-0.5)),
    (MultiGPUMetrics, dict(num_gpus=0, energy_per_gpu_j=[], energy_total_j=0.0, energy_per_output_token_j=0.0)),
    (MultiGPUMetrics, dict(num_gpus=2, energy_per_gpu_j=[1.0, -1.0], energy_total_j=0.0, energy_per_output_token_j=0.0)),
    (WarmupResult, dict(converged=True, final_cv=0.0, iterations_completed=-1, target_cv=0.05, max_prompts=5)),
    (ThermalThrottleInfo, dict(throttle_duration_sec=-1.0)),
    (Percentiles, dict(count=-1, mean_ms=1, p50_ms=1, p90_ms=1, p95_ms=1, p99_ms=1, min_ms=1, max_ms=1)),
    (FlopsResult, dict(value=-1.0)),
    (MemoryMetrics, dict(peak_memory_mb=-1.0)),
    (ExtendedEfficiencyMetrics, dict(avg_power_w=-3.0)),
])
def test_metric_models_refuse_negative_values(model: type, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model(**kwargs)


def test_zero_is_allowed_everywhere_it_can_happen() -> None:
    # a run that produced no tokens, and a run with no energy recorded (the seed's tokens_per_joule == 0 case)
    ExperimentResult(**{**RESULT, "total_tokens": 0, "avg_tokens_per_second": 0.0, "avg_energy_per_token_j": 0.0})
    ExperimentResult(**{**RESULT, "total_energy_j": 0.0})
    RawProcessResult(**{**RAW, "output_tokens": 0, "energy_j": 0.0, "energy_uncertainty_j": math.inf})


def test_agreement_above_one_is_a_real_disagreement_not_an_error() -> None:
    # |E_counter − ∫P dt| / E_counter exceeds 1 when the trace integral is more than twice the counter
    assert ExperimentResult(**{**RESULT, "energy_trace_agreement": 5.0}).energy_trace_agreement == 5.0


@pytest.mark.parametrize("version", ["3.0", "2.0.0", "2", "", "1.0"])
def test_schema_version_is_exactly_2_0(version: str) -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        ExperimentResult(**{**RESULT, "schema_version": version})
    with pytest.raises(ValidationError, match="schema_version"):
        RawProcessResult(**{**RAW, "schema_version": version})
    assert ExperimentResult(**{**RESULT, "schema_version": "2.0"}).schema_version == "2.0"


def test_j_per_token_must_match_energy_over_tokens() -> None:
    with pytest.raises(ValidationError) as info:
        ExperimentResult(**{**RESULT, "avg_energy_per_token_j": 0.06})
    text = str(info.value)
    assert "avg_energy_per_token_j=0.06 J is not total_energy_j / total_tokens = 50.0 / 1000 = 0.05 J" in text
    within = 0.05 * (1 + 5e-7)
    assert ExperimentResult(**{**RESULT, "avg_energy_per_token_j": within}).avg_energy_per_token_j == within
    with pytest.raises(ValidationError):
        ExperimentResult(**{**RESULT, "avg_energy_per_token_j": 0.05 * (1 + 2e-6)})


@settings(max_examples=200, deadline=None)
@given(tokens=st.integers(1, 10**12), energy=st.floats(1e-9, 1e9, allow_nan=False, allow_infinity=False),
       factor=st.floats(0.5, 2.0))
def test_j_per_token_as_aggregation_computes_it_always_validates(tokens: int, energy: float, factor: float) -> None:
    ok = ExperimentResult(**{**RESULT, "total_tokens": tokens, "total_energy_j": energy,
                             "avg_energy_per_token_j": energy / tokens})
    again = ExperimentResult.model_validate_json(ok.model_dump_json())
    assert again == ok
    if abs(factor - 1.0) > 1e-5:
        with pytest.raises(ValidationError):
            ExperimentResult(**{**RESULT, "total_tokens": tokens, "total_energy_j": energy,
                                "avg_energy_per_token_j": energy / tokens * factor})
