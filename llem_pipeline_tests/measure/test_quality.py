"""Measurement warnings (stable codes, thresholds) and reproducibility notes naming the method used."""

from __future__ import annotations

import pytest

from llem_pipeline.domain.metrics import ThermalThrottleInfo
from llem_pipeline.domain.warnings import WARNING_CODES, warning_code
from llem_pipeline.measure.quality import collect_warnings, dedupe, reproducibility_notes
from llem_pipeline.measure.windows import SteadyState

CLEAN = dict(
    window_s=60.0, device_kind="nvml", energy_method="nvml_counter", sample_interval_s=0.1,
    sample_count=1200, output_tokens=5000, num_devices=2, persistence_modes=[True, True],
    device_uuids=["GPU-a", "GPU-b"], temperature_drift_c=4.0, energy_trace_agreement=0.01,
    baseline_enabled=True, baseline_power_w=70.0, baseline_floored=False,
    throttle=ThermalThrottleInfo(), steady_state=None,
)


def codes(**over) -> list[str]:
    return [warning_code(w) for w in collect_warnings(**{**CLEAN, **over})]


def test_clean_measurement_has_no_warnings():
    assert collect_warnings(**CLEAN) == []


@pytest.mark.parametrize(("override", "code"), [
    ({"window_s": 29.9, "sample_count": 598}, "short_window"),
    ({"persistence_modes": [True, False]}, "persistence_mode_off"),
    ({"temperature_drift_c": 10.5}, "temperature_drift"),
    ({"temperature_drift_c": -11.0}, "temperature_drift"),
    ({"sample_count": 959}, "too_few_samples"),          # 479.5 per device < 0.8 * 600
    ({"energy_trace_agreement": 0.051}, "counter_trace_disagreement"),
    ({"baseline_floored": True}, "baseline_floored"),
    ({"baseline_power_w": None}, "baseline_unavailable"),
    ({"throttle": ThermalThrottleInfo(detected=True, power=True, sw_power_cap=True, throttle_duration_sec=1.5)},
     "thermal_throttling"),
    ({"device_kind": "simulated", "energy_method": "simulated"}, "simulated_device"),
    ({"device_kind": "replay"}, "replay_device"),
    ({"output_tokens": 0}, "no_output_tokens"),
    ({"energy_method": "trace_integral", "energy_trace_agreement": None}, "energy_counter_unsupported"),
    ({"steady_state": SteadyState(0, 10, False, "power never settled", 0)}, "steady_state_not_found"),
    ({"energy_j": 1000.0, "energy_uncertainty_j": 5.01}, "energy_uncertain"),
    ({"energy_j": 1000.0, "energy_uncertainty_j": float("inf")}, "energy_uncertain"),
])
def test_each_condition_yields_exactly_its_code(override, code):
    assert code in WARNING_CODES
    assert codes(**override) == [code]


def test_thresholds_are_inclusive_limits():
    assert codes(window_s=30.0, sample_count=600) == []          # exactly 300 updates at 100 ms
    assert codes(temperature_drift_c=10.0) == []
    assert codes(energy_trace_agreement=0.05) == []
    assert codes(sample_count=960) == []                         # exactly 80 %
    assert codes(persistence_modes=[None, None]) == []           # unknown is not "off"
    assert codes(baseline_enabled=False, baseline_power_w=None) == []
    assert codes(counter_update_interval_s=0.25) == ["short_window"]   # 300 x 250 ms = 75 s > 60 s
    assert codes(energy_j=1000.0, energy_uncertainty_j=5.0) == []   # exactly 0.5 % of the energy
    assert codes(energy_j=1000.0, energy_uncertainty_j=None) == []  # no ± stated: nothing to judge


def test_details_name_the_numbers():
    w = collect_warnings(**{**CLEAN, "persistence_modes": [False, True], "window_s": 12.0, "sample_count": 240,
                            "throttle": ThermalThrottleInfo(detected=True, thermal=True, hw_thermal=True,
                                                            throttle_duration_sec=0.4)})
    text = "\n".join(w)
    assert "short_window: window 12.00 s < 30 s (300 counter updates at 100 ms)" in text
    assert "persistence mode is off on GPU-a" in text
    assert "hw_thermal active for 0.40 s" in text


def test_extra_warnings_merged_first_and_deduplicated():
    sampler = "sampler_error: NVML error after 3.2 s"
    w = collect_warnings(**{**CLEAN, "output_tokens": 0},
                         extra=[sampler, sampler, "no_output_tokens: the window holds no generated tokens; per-token figures are 0"])
    assert w[0] == sampler
    assert [warning_code(x) for x in w] == ["sampler_error", "no_output_tokens"]
    assert dedupe(["b", "a", "b"]) == ["b", "a"]


def test_all_codes_used_here_are_registered():
    # collect_warnings uses make_warning, which rejects unknown codes; drive every branch at once
    w = collect_warnings(
        window_s=1.0, device_kind="simulated", energy_method="simulated", sample_interval_s=0.1, sample_count=1,
        output_tokens=0, persistence_modes=[False], temperature_drift_c=20, energy_trace_agreement=0.5,
        baseline_enabled=True, baseline_power_w=None, baseline_floored=True,
        throttle=ThermalThrottleInfo(detected=True), steady_state=SteadyState(0, 1, False, "x", 0))
    assert len(w) == 11 and all(warning_code(x) in WARNING_CODES for x in w)


def test_notes_name_the_counter_method_with_boundary_correction():
    n = reproducibility_notes("nvml_counter", "nvml", 0.1, 0.42, num_devices=2, window_s=61.5,
                              energy_trace_agreement=0.0123, baseline_power_w=71.25, baseline_provenance="cached")
    assert n.startswith("Energy from the NVML cumulative energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ)")
    assert "with boundary correction" in n and "summed over 2 devices" in n
    assert "instant power sampled every 100 ms (difference 1.23%)" in n
    assert "±0.42 J" in n and "(61.50 s)" in n and "71.2 W, cached" in n
    assert "SIMULATED" not in n and "polling" not in n
    n2 = reproducibility_notes("nvml_counter", "nvml", 0.05, None, boundary_correction=False)
    assert "without boundary correction" in n2 and "every 50 ms" in n2 and "No idle baseline" in n2


def test_notes_for_simulated_replay_and_trace_integral():
    sim = reproducibility_notes("simulated", "simulated", 0.1, 0.0)
    assert sim.startswith("SIMULATED device: no real GPU energy was measured")
    assert "NVML cumulative energy counter" not in sim
    rep = reproducibility_notes("nvml_counter", "replay", 0.1, 1.0)
    assert rep.startswith("REPLAY device") and "energy counter" in rep
    tr = reproducibility_notes("trace_integral", "nvml", 0.1, 2.0)
    assert tr.startswith("The NVML energy counter is unsupported here")
    assert "1 s averaged power" in tr and "sampled every 100 ms" in tr


def test_notes_describe_the_window():
    ss = reproducibility_notes("nvml_counter", "nvml", 0.1, None, methodology="steady_state",
                               steady_state_window=(2.0, 20.5))
    assert "steady state (engine saturated, power stable), 2.00–20.50 s" in ss
    ex = reproducibility_notes("nvml_counter", "nvml", 0.1, None, methodology="windowed", steady_state_window=(1, 3))
    assert "explicit, 1.00–3.00 s" in ex


def test_codes_already_reported_by_the_energy_stage_are_not_repeated():
    energy_warns = ["too_few_samples: device 0: 100 power samples in 60.000 s, expected about 600",
                    "simulated_device: all energy comes from simulated devices"]
    w = collect_warnings(**{**CLEAN, "sample_count": 200, "device_kind": "simulated", "energy_method": "simulated"},
                         extra=energy_warns)
    assert w == energy_warns


def test_counter_updates_decide_short_window_when_given():
    assert codes(counter_updates=299.0) == ["short_window"]
    assert codes(window_s=20.0, sample_count=400, counter_updates=310.0) == []
    w = collect_warnings(**{**CLEAN, "counter_updates": 120.4})
    assert "about 120 energy-counter updates (< 300)" in w[0]
