"""The seed plan's 26 unit tests for ExperimentResult v2.0 (imports adapted to llem_pipeline)."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.experiment import (
    AggregatedResult,
    ExperimentResult,
    compute_measurement_config_hash,
)
from llem_pipeline.domain.metrics import EnergyBreakdown, MultiGPUMetrics


@pytest.fixture
def make_result():
    def _make(**kwargs):
        defaults = dict(
            experiment_id="test-001",
            measurement_config_hash="abcdef0123456789",
            measurement_methodology="total",
            total_tokens=1000,
            total_energy_j=50.0,
            total_inference_time_sec=10.0,
            avg_tokens_per_second=100.0,
            avg_energy_per_token_j=0.05,
            total_flops=1e12,
            start_time=datetime(2026, 2, 26, 14, 0, 0, tzinfo=UTC),
            end_time=datetime(2026, 2, 26, 14, 0, 10, tzinfo=UTC),
        )
        defaults.update(kwargs)
        return ExperimentResult(**defaults)

    return _make


def test_schema_version_default_is_2_0(make_result):
    r = make_result()
    assert r.schema_version == "2.0"
    assert r.schema_version != "2.0.0"


def test_measurement_config_hash_field(make_result):
    r = make_result(measurement_config_hash="abcdef0123456789")
    again = ExperimentResult.model_validate_json(r.model_dump_json())
    assert again.measurement_config_hash == "abcdef0123456789"


def test_measurement_methodology_total(make_result):
    assert make_result(measurement_methodology="total").measurement_methodology == "total"


def test_measurement_methodology_steady_state(make_result):
    assert make_result(measurement_methodology="steady_state").measurement_methodology == "steady_state"


def test_measurement_methodology_invalid(make_result):
    with pytest.raises(ValidationError):
        make_result(measurement_methodology="invalid")


def test_steady_state_window_tuple(make_result):
    r = make_result(measurement_methodology="steady_state", steady_state_window=(12.3, 67.8))
    assert r.steady_state_window == (12.3, 67.8)
    again = ExperimentResult.model_validate_json(r.model_dump_json())
    assert again.steady_state_window == (12.3, 67.8)
    assert isinstance(again.steady_state_window, tuple)


def test_steady_state_window_none(make_result):
    assert make_result(measurement_methodology="total", steady_state_window=None).steady_state_window is None


def test_baseline_power_w_optional(make_result):
    assert make_result().baseline_power_w is None
    assert make_result(baseline_power_w=42.5).baseline_power_w == 42.5


def test_energy_adjusted_j_optional(make_result):
    assert make_result().energy_adjusted_j is None
    assert make_result(energy_adjusted_j=30.0).energy_adjusted_j == 30.0


def test_energy_per_device_j_optional(make_result):
    assert make_result().energy_per_device_j is None
    assert make_result(energy_per_device_j=[20.0, 30.0]).energy_per_device_j == [20.0, 30.0]


def test_energy_breakdown_optional(make_result):
    assert make_result().energy_breakdown is None
    eb = EnergyBreakdown(raw_energy_j=50.0, baseline_power_w=2.0, baseline_duration_sec=10.0, adjusted_energy_j=30.0)
    assert make_result(energy_breakdown=eb).energy_breakdown.adjusted_energy_j == 30.0


def test_multi_gpu_optional(make_result):
    assert make_result().multi_gpu is None
    m = MultiGPUMetrics(num_gpus=2, energy_per_gpu_j=[20.0, 30.0], energy_total_j=50.0, energy_per_output_token_j=0.05)
    assert make_result(multi_gpu=m).multi_gpu.num_gpus == 2


def test_reproducibility_notes_default(make_result):
    notes = make_result().reproducibility_notes
    assert "NVML" in notes
    assert "accuracy" in notes.lower()


def test_measurement_warnings_default_empty(make_result):
    assert make_result().measurement_warnings == []


def test_warmup_excluded_samples_optional(make_result):
    assert make_result().warmup_excluded_samples is None
    assert make_result(warmup_excluded_samples=5).warmup_excluded_samples == 5


def test_timeseries_field(make_result):
    assert make_result(timeseries="timeseries.parquet").timeseries == "timeseries.parquet"
    assert make_result(timeseries=None).timeseries is None


def test_environment_snapshot_optional(make_result):
    assert make_result().environment_snapshot is None
    env = EnvironmentSnapshot(python_version="3.11.7", tool_version="0.1.0", platform="Linux")
    assert make_result(environment_snapshot=env).environment_snapshot.python_version == "3.11.7"


def test_frozen_model(make_result):
    r = make_result()
    with pytest.raises(ValidationError):
        r.total_tokens = 5


def test_aggregated_result_alias():
    assert AggregatedResult is ExperimentResult


def test_duration_sec_property(make_result):
    assert make_result().duration_sec == 10.0


def test_tokens_per_joule_property(make_result):
    assert make_result(total_tokens=1000, total_energy_j=50.0).tokens_per_joule == 20.0
    assert make_result(total_energy_j=0.0).tokens_per_joule == 0.0


def test_compute_measurement_config_hash():
    h = compute_measurement_config_hash(ExperimentConfig(model="gpt2"))
    assert len(h) == 16
    assert all(c in "0123456789abcdef" for c in h)


def test_config_hash_deterministic():
    a = compute_measurement_config_hash(ExperimentConfig(model="gpt2"))
    b = compute_measurement_config_hash(ExperimentConfig(model="gpt2"))
    assert a == b


def test_config_hash_different_configs():
    a = compute_measurement_config_hash(ExperimentConfig(model="gpt2"))
    b = compute_measurement_config_hash(ExperimentConfig(model="gpt2", max_output_tokens=64))
    c = compute_measurement_config_hash(ExperimentConfig(model="other"))
    assert len({a, b, c}) == 3


def test_multi_gpu_metrics_model():
    m = MultiGPUMetrics(num_gpus=2, energy_per_gpu_j=[10.0, 12.0], energy_total_j=22.0, energy_per_output_token_j=0.001)
    assert m.num_gpus == 2
    assert m.energy_total_j == 22.0
    with pytest.raises(ValidationError):
        MultiGPUMetrics(num_gpus=2, energy_per_gpu_j=[10.0])


def test_json_round_trip(make_result):
    env = EnvironmentSnapshot(python_version="3.11.7", tool_version="0.1.0", platform="Linux", gpu_names=["H200"])
    r = make_result(
        measurement_methodology="steady_state",
        steady_state_window=(1.5, 9.25),
        energy_breakdown=EnergyBreakdown(raw_energy_j=50.0, baseline_power_w=1.0, adjusted_energy_j=40.0),
        multi_gpu=MultiGPUMetrics(num_gpus=2, energy_per_gpu_j=[20.0, 30.0], energy_total_j=50.0,
                                  energy_per_output_token_j=0.05),
        environment_snapshot=env,
        measurement_warnings=["short_window: 10 s"],
        effective_config={"model": "gpt2", "nested": {"a": [1, 2]}},
        input_tokens=500,
        energy_method="nvml_counter",
        energy_trace_agreement=0.004,
        device_kind="nvml",
    )
    again = ExperimentResult.model_validate_json(r.model_dump_json())
    assert again == r
    assert again.start_time.tzinfo is not None
    assert again.model_dump() == r.model_dump()
