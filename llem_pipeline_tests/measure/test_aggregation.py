"""Aggregation of scripted process results into ExperimentResult v2.0: known energy, window and warnings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.experiment import (
    ExperimentResult,
    RawProcessResult,
    Timestamps,
    compute_measurement_config_hash,
)
from llem_pipeline.domain.metrics import (
    EnergyBreakdown,
    ExtendedEfficiencyMetrics,
    FlopsResult,
    LatencyStatistics,
    MemoryMetrics,
    ThermalThrottleInfo,
    WarmupResult,
)
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.domain.warnings import make_warning, warning_code
from llem_pipeline.measure.aggregation import aggregate

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
CONFIG = ExperimentConfig(model="tiny", n=4, max_output_tokens=8)


def proc(index=0, *, start_s=0.0, dur=40.0, energy=600.0, per_device=None, out=1200, inp=300, baseline=10.0,
         uuids=("GPU-0",), kind="nvml", method="nvml_counter", trace=606.0, unc=0.5, warnings=(), **extra):
    start = T0 + timedelta(seconds=start_s)
    fields = dict(
        experiment_id="exp", process_index=index, backend="pytorch", backend_version="5.24", device_kind=kind,
        device_uuids=list(uuids), gpu_names=["NVIDIA H200"] * len(uuids),
        timestamps=Timestamps(start=start, end=start + timedelta(seconds=dur), duration_sec=dur),
        num_requests=4, input_tokens=inp, output_tokens=out, inference_time_sec=dur, energy_j=energy,
        energy_per_device_j=per_device if per_device is not None else [energy], energy_method=method,
        trace_energy_j=trace, energy_trace_agreement=None if trace is None else abs(energy - trace) / energy,
        energy_uncertainty_j=unc, baseline_power_w=baseline,
        energy_breakdown=EnergyBreakdown(raw_energy_j=energy, baseline_power_w=baseline, provenance="cached",
                                         baseline_measured_at="2026-11-29T11:30:00+00:00", baseline_cache_age_sec=1800.0),
        warmup_result=WarmupResult(converged=True, final_cv=0.01, iterations_completed=5, target_cv=0.05,
                                   max_prompts=5, latencies_ms=[1.0] * 5),
        flops=FlopsResult(value=2.0 * 1000 * (out + inp), n_params_nonembedding=1000, tokens=out + inp, precision="bf16"),
        extended_metrics=ExtendedEfficiencyMetrics(
            peak_power_w=20.0, sm_utilisation_mean=80.0,
            memory=MemoryMetrics(total_vram_mb=1000.0, model_memory_mb=300.0, peak_memory_mb=450.0)),
        sample_count=int(dur * 10), measurement_warnings=list(warnings),
    )
    fields.update(extra)
    return RawProcessResult(**fields)


def reqs(process_index=0, offset=0.0):
    return [RequestRecord(request_index=k, input_tokens=75, output_tokens=3, submit_time_s=offset + k,
                          first_token_time_s=offset + k + 0.1, token_times_s=[offset + k + 0.1, offset + k + 0.2,
                                                                                offset + k + 0.4],
                          done_time_s=offset + k + 0.4, process_index=process_index) for k in range(4)]


def test_single_process_known_answers():
    p = proc(warnings=[make_warning("short_window", "window 40 s"), make_warning("short_window", "window 40 s")])
    r = aggregate([p], config=CONFIG, requests=reqs(), environment=None, experiment_id="exp-1",
                  timeseries="timeseries.parquet")
    assert r.schema_version == "2.0" and r.experiment_id == "exp-1"
    assert r.measurement_config_hash == compute_measurement_config_hash(CONFIG)
    assert r.effective_config == CONFIG.model_dump(mode="json")
    assert r.total_tokens == 1200 and r.input_tokens == 300
    assert r.total_inference_time_sec == pytest.approx(40.0)
    assert r.avg_tokens_per_second == pytest.approx(30.0)
    assert r.total_energy_j == 600.0 and r.avg_energy_per_token_j == pytest.approx(0.5)
    assert r.baseline_power_w == 10.0 and r.energy_adjusted_j == pytest.approx(200.0)
    assert r.energy_breakdown.baseline_duration_sec == pytest.approx(40.0)
    assert r.energy_breakdown.provenance == "cached" and r.energy_breakdown.baseline_cache_age_sec == 1800.0
    assert r.energy_breakdown.adjustment_method == "subtract_idle_power_x_window"
    assert not r.energy_breakdown.baseline_floored
    assert r.energy_per_device_j == [600.0] and r.multi_gpu is None
    assert r.energy_method == "nvml_counter" and r.device_kind == "nvml"
    assert r.energy_trace_agreement == pytest.approx(0.01)
    assert r.energy_breakdown.trace_energy_j == 606.0 and r.energy_breakdown.uncertainty_j == 0.5
    assert r.total_flops == 2.0 * 1000 * 1500
    assert r.extended_metrics.flops_per_second == pytest.approx(3e6 / 40)
    assert r.extended_metrics.flops_per_output_token == pytest.approx(3e6 / 1200)
    assert r.extended_metrics.avg_power_w == pytest.approx(15.0)
    assert r.extended_metrics.output_tokens_per_joule == pytest.approx(2.0)
    assert r.extended_metrics.peak_power_w == 20.0 and r.extended_metrics.sm_utilisation_mean == 80.0
    assert r.extended_metrics.memory.inference_memory_mb == 150.0
    assert r.latency_stats.num_requests == 4 and r.latency_stats.ttft.mean_ms == pytest.approx(100.0)
    assert r.extended_metrics.tpot_ms == pytest.approx(150.0)
    assert r.aggregation.num_processes == 1 and r.aggregation.overlap_ratio == 1.0
    assert r.aggregation.temporal_overlap_verified and r.aggregation.gpu_attribution_verified
    assert r.measurement_warnings == ["short_window: window 40 s"]
    assert r.measurement_methodology == "total" and r.steady_state_window is None
    assert r.warmup_excluded_samples is None
    assert r.warmup_result == p.warmup_result and r.timeseries == "timeseries.parquet"
    assert r.start_time == T0 and r.end_time == T0 + timedelta(seconds=40)
    assert r.reproducibility_notes.startswith("Energy from the NVML cumulative energy counter")
    assert "10.0 W, cached" in r.reproducibility_notes
    assert r.process_results == [p]
    assert ExperimentResult.model_validate_json(r.model_dump_json()) == r


def test_two_data_parallel_processes():
    p0 = proc(0, start_s=0.0, dur=40.0, energy=600.0, baseline=10.0, uuids=("GPU-0",), trace=606.0)
    p1 = proc(1, start_s=1.0, dur=38.0, energy=700.0, baseline=12.0, uuids=("GPU-1",), trace=714.0, out=1000)
    r = aggregate([p1, p0], config=CONFIG, requests=reqs(0) + reqs(1, 0.5), environment=None,
                  experiment_id="e", timeseries=None)
    assert [p.process_index for p in r.process_results] == [0, 1]
    assert r.total_inference_time_sec == pytest.approx(40.0)            # 0..40 and 1..39
    assert r.total_energy_j == 1300.0 and r.total_tokens == 2200
    assert r.avg_tokens_per_second == pytest.approx(2200 / 40)
    assert r.energy_per_device_j == [600.0, 700.0]
    assert r.multi_gpu.num_gpus == 2 and r.multi_gpu.energy_total_j == 1300.0
    assert r.multi_gpu.energy_per_output_token_j == pytest.approx(1300 / 2200)
    # baseline per process over its own window: 1300 - (10*40 + 12*38) = 444
    assert r.baseline_power_w == 22.0 and r.energy_adjusted_j == pytest.approx(444.0)
    bd = r.energy_breakdown
    assert bd.raw_energy_j - bd.baseline_power_w * bd.baseline_duration_sec == pytest.approx(444.0)
    assert r.energy_trace_agreement == pytest.approx(20 / 1300)
    assert bd.uncertainty_j == pytest.approx(1.0)
    assert r.aggregation.num_processes == 2
    assert r.aggregation.overlap_ratio == pytest.approx(38 / 40)
    assert r.aggregation.temporal_overlap_verified and r.aggregation.gpu_attribution_verified
    assert r.latency_stats.num_requests == 8
    assert r.extended_metrics.peak_power_w is None            # not derivable from per-process maxima
    assert r.extended_metrics.sm_utilisation_mean == pytest.approx(80.0)
    assert r.extended_metrics.memory.total_vram_mb == 2000.0
    assert r.total_flops == pytest.approx(2000.0 * 1500 + 2000.0 * 1300)
    assert "summed over 2 devices" in r.reproducibility_notes


def test_non_overlapping_processes_and_shared_device_are_flagged():
    p0 = proc(0, start_s=0.0, dur=10.0, uuids=("GPU-0",))
    p1 = proc(1, start_s=8.0, dur=10.0, uuids=("GPU-0",))
    r = aggregate([p0, p1], config=CONFIG, requests=None, environment=None, experiment_id="e", timeseries=None)
    assert r.total_inference_time_sec == pytest.approx(18.0)
    assert r.aggregation.overlap_ratio == pytest.approx(2 / 18)
    assert not r.aggregation.temporal_overlap_verified and not r.aggregation.gpu_attribution_verified
    codes = [warning_code(w) for w in r.measurement_warnings]
    assert "processes_not_overlapping" in codes and "gpu_attribution_conflict" in codes
    assert [warning_code(w) for w in r.aggregation.warnings] == ["processes_not_overlapping", "gpu_attribution_conflict"]
    assert r.latency_stats is None  # no request records for two processes


def test_baseline_floor_is_decided_on_the_totals():
    stale = make_warning("baseline_floored", "process-level")
    r = aggregate([proc(energy=300.0, baseline=10.0, trace=300.0, warnings=[stale])], config=CONFIG, requests=None,
                  environment=None, experiment_id="e", timeseries=None)
    assert r.energy_adjusted_j == 0.0 and r.energy_breakdown.baseline_floored
    floored = [w for w in r.measurement_warnings if warning_code(w) == "baseline_floored"]
    assert len(floored) == 1 and "300.00 J < idle 10.00 W × 40.00 s" in floored[0]
    r2 = aggregate([proc(baseline=None, warnings=[stale])], config=CONFIG, requests=None, environment=None,
                   experiment_id="e", timeseries=None)
    assert r2.energy_adjusted_j is None and r2.baseline_power_w is None
    assert r2.energy_breakdown.provenance == "unavailable" and r2.energy_breakdown.adjustment_method is None
    assert r2.measurement_warnings == []
    assert "No idle baseline" in r2.reproducibility_notes


def test_simulated_measurement_says_so_everywhere():
    sim_warn = make_warning("simulated_device", "energy and power come from a simulated device, not a real GPU")
    p = proc(kind="simulated", method="simulated", uuids=("SIM-0",), warnings=[sim_warn])
    r = aggregate([p], config=CONFIG, requests=None, environment=None, experiment_id="e", timeseries=None)
    assert r.device_kind == "simulated" and r.energy_method == "simulated"
    assert sim_warn in r.measurement_warnings
    assert r.reproducibility_notes.startswith("SIMULATED device: no real GPU energy was measured")


def test_no_output_tokens():
    r = aggregate([proc(out=0, flops=None)], config=CONFIG, requests=None, environment=None, experiment_id="e",
                  timeseries=None)
    assert r.total_tokens == 0 and r.avg_energy_per_token_j == 0.0 and r.avg_tokens_per_second == 0.0
    assert r.total_flops == 0.0 and r.extended_metrics.flops is None
    assert [warning_code(w) for w in r.measurement_warnings] == ["no_output_tokens"]


def test_steady_state_windows_and_excluded_samples():
    cfg = CONFIG.model_copy(update={"energy": CONFIG.energy.model_copy(update={"methodology": "steady_state"})})
    # process 0: inference starts at T0, steady 2..30 s; process 1: inference starts at T0+1, steady 3..31 s
    p0 = proc(0, start_s=2.0, dur=28.0, measurement_methodology="steady_state", steady_state_window=(2.0, 30.0),
              warmup_excluded_samples=5, excluded_power_samples=50, uuids=("GPU-0",),
              thermal_throttle=ThermalThrottleInfo(detected=True, power=True, sw_power_cap=True,
                                                   throttle_duration_sec=0.3, throttle_timestamps=[5.0],
                                                   max_temperature_c=70, mean_temperature_c=60,
                                                   temperature_drift_c=4.0))
    p1 = proc(1, start_s=4.0, dur=28.0, measurement_methodology="steady_state", steady_state_window=(3.0, 31.0),
              warmup_excluded_samples=5, excluded_power_samples=40, uuids=("GPU-1",),
              thermal_throttle=ThermalThrottleInfo(detected=True, thermal=True, hw_thermal=True,
                                                   throttle_duration_sec=0.5, throttle_timestamps=[4.0],
                                                   max_temperature_c=75, mean_temperature_c=64,
                                                   temperature_drift_c=-6.0))
    r = aggregate([p0, p1], config=cfg, requests=None, environment=None, experiment_id="e", timeseries=None)
    assert r.measurement_methodology == "steady_state"
    assert r.steady_state_window == pytest.approx((2.0, 32.0))   # p1's 3..31 shifted by its 1 s later start
    assert r.total_inference_time_sec == pytest.approx(30.0)
    assert r.warmup_excluded_samples == 10   # warmup prompts of both processes
    assert r.excluded_power_samples == 90
    t = r.thermal_throttle
    assert t.detected and t.thermal and t.power and t.hw_thermal and t.sw_power_cap
    assert t.throttle_timestamps == pytest.approx([5.0, 5.0]) and t.throttle_duration_sec == 0.5
    assert (t.max_temperature_c, t.mean_temperature_c, t.temperature_drift_c) == (75, 62, -6.0)
    assert "steady state (engine saturated, power stable), 2.00–32.00 s" in r.reproducibility_notes


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least one"):
        aggregate([], config=CONFIG, requests=None, environment=None, experiment_id="e", timeseries=None)
    with pytest.raises(ValueError, match=r"process_index values repeat: \[0, 0\]"):
        aggregate([proc(0), proc(0)], config=CONFIG, requests=None, environment=None, experiment_id="e", timeseries=None)
    with pytest.raises(ValueError, match="different backend"):
        aggregate([proc(0), proc(1, backend="vllm")], config=CONFIG, requests=None, environment=None,
                  experiment_id="e", timeseries=None)
    with pytest.raises(ValueError, match="different device_kind"):
        aggregate([proc(0), proc(1, kind="simulated")], config=CONFIG, requests=None, environment=None,
                  experiment_id="e", timeseries=None)


def test_latency_falls_back_to_single_process_stats():
    stats = LatencyStatistics(num_requests=3, timing_source="engine_metrics")
    r = aggregate([proc(latency_stats=stats)], config=CONFIG, requests=None, environment=None, experiment_id="e",
                  timeseries=None)
    assert r.latency_stats == stats
    r2 = aggregate([proc(latency_stats=stats)], config=CONFIG, requests=reqs(), environment=None, experiment_id="e",
                   timeseries=None)
    assert r2.latency_stats.timing_source == "engine_metrics" and r2.latency_stats.num_requests == 4
