"""The harness on scripted simulated devices and a deterministic engine: known energy, window, tokens, warnings."""

from __future__ import annotations

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.warnings import warning_code
from llem_pipeline.engines.protocol import PromptSet
from llem_pipeline.measure.baseline import measure_baseline
from llem_pipeline.measure.devices.simulated import Constant, ReasonSpan, SimulatedDevice
from llem_pipeline.measure.harness import measure_process
from llem_pipeline_tests.engine_doubles import PacedEngine


def _measure(config, devices, engine, baseline=None, on_progress=None):
    prompts = PromptSet(token_ids=[[1, 2, 3, 4]] * config.n, source="test")
    return measure_process(
        config, devices, engine_loader=lambda c, idx: engine, tokenizer_loader=lambda c: None,
        prompt_builder=lambda c, tok: prompts, device_indices=[], experiment_id="exp-1", baseline=baseline,
        sleep=lambda s: None, on_progress=on_progress,
    )


def _within_uncertainty(raw, watts: float) -> bool:
    """True when the measured energy lies within its stated uncertainty of the exact energy of a constant-power
    device over the window (watts × window s). These runs are on the real clock, so how tight the boundaries
    get depends on how promptly the polls ran on this machine: the uncertainty states it, the test checks it."""
    return abs(raw.energy_j - watts * raw.inference_time_sec) <= raw.energy_uncertainty_j + 1e-9


def _config(**kw):
    base = dict(model="llem:tiny", n=6, max_output_tokens=10, precision="fp32",
                warmup={"n_warmup": 1, "thermal_floor_seconds": 0}, energy={"sample_interval_ms": 20})
    base.update(kw)
    return ExperimentConfig.model_validate(base)


def test_constant_power_window_energy_tokens_and_warnings():
    device = SimulatedDevice(Constant(200.0), index=0, idle_w=50.0)
    engine = PacedEngine(out_tokens=10, step_s=0.01)
    baseline = measure_baseline([device], 1.0, interval_s=0.02)
    out = _measure(_config(), [device], engine, baseline)
    raw = out.raw
    assert engine.cleaned == 1
    assert raw.output_tokens == 60 and raw.input_tokens == 24 and raw.num_requests == 6
    # energy = 200 W × window within the stated uncertainty (the simulated device is exact; the counter is
    # boundary-corrected)
    assert _within_uncertainty(raw, 200.0)
    assert raw.energy_method == "simulated" and raw.device_kind == "simulated"
    assert raw.baseline_power_w == pytest.approx(200.0, rel=0.01)  # the idle model of this device is its constant
    codes = {warning_code(w) for w in raw.measurement_warnings}
    assert {"simulated_device", "short_window"} <= codes
    assert raw.warmup_result is not None and raw.warmup_result.iterations_completed == 1
    assert raw.latency_stats.ttft.count == 6
    assert raw.timestamps.start.tzinfo is not None
    # the window is first submission → last token, so it is shorter than the run step
    assert raw.inference_time_sec == pytest.approx(out.window_mono_s[1] - out.window_mono_s[0])


def test_throttle_reasons_inside_the_window_are_reported():
    device = SimulatedDevice(Constant(300.0), index=0, reason_spans=[ReasonSpan(0.0, 1e6, 0x40)])
    out = _measure(_config(baseline={"enabled": False}), [device], PacedEngine(10, 0.005))
    assert out.raw.thermal_throttle.detected and out.raw.thermal_throttle.hw_thermal
    assert "thermal_throttling" in {warning_code(w) for w in out.raw.measurement_warnings}


def test_windowed_methodology_counts_energy_and_tokens_of_exactly_that_window():
    device = SimulatedDevice(Constant(100.0), index=0)
    cfg = _config(n=4, baseline={"enabled": False}, energy={"sample_interval_ms": 20, "methodology": "windowed",
                                                            "window": [0.1, 0.3]})
    engine = PacedEngine(out_tokens=10, step_s=0.012)
    records: list = []
    run = engine.run
    engine.run = lambda prompts: records.extend(run(prompts)) or records
    out = _measure(cfg, [device], engine)
    raw = out.raw
    assert raw.measurement_methodology == "windowed"
    assert raw.steady_state_window == (0.1, 0.3)
    assert raw.inference_time_sec == pytest.approx(0.2, abs=1e-9)
    assert _within_uncertainty(raw, 100.0)
    # exactly the tokens whose time falls inside the window count (about 0.2 / 0.012 ≈ 16 on a quiet machine;
    # the count comes from the engine's own token times, so a machine that oversleeps changes both alike)
    a, b = out.window_mono_s
    inside = sum(1 for r in records for t in r.token_times_s if a <= t <= b)
    assert raw.output_tokens == inside > 0
    assert raw.excluded_power_samples is not None and raw.excluded_power_samples > 0
    assert raw.warmup_excluded_samples == 1  # the one warmup prompt of _config (fixed mode, n_warmup=1)


def test_engine_is_cleaned_up_when_the_run_fails():
    class Failing(PacedEngine):
        def run(self, prompts):
            raise RuntimeError("CUDA out of memory")

    engine = Failing(5, 0.001)
    with pytest.raises(RuntimeError, match="out of memory"):
        _measure(_config(baseline={"enabled": False}), [SimulatedDevice(Constant(50.0))], engine)
    assert engine.cleaned == 1


@pytest.mark.parametrize("boundary_correction", [True, False])
def test_counter_calibration_runs_before_warmup_not_between_warmup_and_run(boundary_correction):
    # the run must follow warmup + thermal floor directly (only the edge poll of window_begin in between)
    steps: list[str] = []
    cfg = _config(n=2, baseline={"enabled": False},
                  energy={"sample_interval_ms": 20, "boundary_correction": boundary_correction})
    out = _measure(cfg, [SimulatedDevice(Constant(150.0), index=0)], PacedEngine(5, 0.005),
                   on_progress=lambda event, data: steps.append(data["step"]) if event == "step_start" else None)
    calibration = ["counter_calibration"] if boundary_correction else []
    assert steps == ["tokenizer", "prompts", "model_load", "sampler_start", *calibration, "warmup", "window_begin",
                     "run", "window_end", "cleanup"]
    assert list(out.step_seconds) == steps
    if boundary_correction:  # calibrated ahead of warmup, a short window is still measured right
        assert _within_uncertainty(out.raw, 150.0)
