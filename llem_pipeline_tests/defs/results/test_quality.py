"""Each quality check passes on a sound result and fails (with its severity) on the broken variant."""

from __future__ import annotations

import pytest

from llem_pipeline.defs.results import quality as Q
from llem_pipeline.domain import ThermalThrottleInfo
from llem_pipeline.domain.experiment import ExperimentResult
from llem_pipeline_tests.storage.record_factory import make_config, make_result


@pytest.fixture(scope="module")
def nvml_result() -> ExperimentResult:
    result, _ = make_result(make_config(), window_s=40.0, device_kind="nvml")
    return result.model_copy(update={"measurement_warnings": [], "energy_method": "nvml_counter",
                                     "device_kind": "nvml", "energy_trace_agreement": 0.01})


def test_sound_nvml_result_passes_everything(nvml_result: ExperimentResult) -> None:
    outcomes = Q.run_checks(nvml_result, (nvml_result.avg_energy_per_token_j, "2026-11-30", "run-before"))
    assert [o.name for o in outcomes if not o.passed] == []
    assert [o.name for o in outcomes] == [n for n in Q.CHECK_DESCRIPTIONS if n != "repeatable"]


def test_schema_version(nvml_result: ExperimentResult) -> None:
    bad = Q.check_schema_version(nvml_result.model_copy(update={"schema_version": "2.0.0"}))
    assert not bad.passed and bad.severity == "ERROR"


@pytest.mark.parametrize("adjusted", [0.0, -1.0, 1e9])
def test_energy_sane_needs_0_lt_adjusted_le_raw(nvml_result: ExperimentResult, adjusted: float) -> None:
    outcome = Q.check_energy_sane(nvml_result.model_copy(update={"energy_adjusted_j": adjusted}))
    assert not outcome.passed and outcome.severity == "ERROR"


def test_counter_trace_agreement_limit(nvml_result: ExperimentResult) -> None:
    assert Q.check_counter_trace_agreement(nvml_result.model_copy(update={"energy_trace_agreement": 0.05})).passed
    assert not Q.check_counter_trace_agreement(nvml_result.model_copy(update={"energy_trace_agreement": 0.051})).passed
    assert Q.check_counter_trace_agreement(nvml_result.model_copy(update={"energy_trace_agreement": None})).passed


def test_energy_certain_flags_exactly_the_results_whose_uncertainty_is_too_wide(nvml_result: ExperimentResult) -> None:
    energy = nvml_result.total_energy_j
    breakdown = nvml_result.energy_breakdown
    assert breakdown is not None

    def with_unc(unc: float, warnings: list[str] | None = None) -> ExperimentResult:
        return nvml_result.model_copy(update={"energy_breakdown": breakdown.model_copy(update={"uncertainty_j": unc}),
                                              "measurement_warnings": warnings or []})

    assert Q.check_energy_certain(with_unc(0.005 * energy)).passed
    wide = Q.check_energy_certain(with_unc(0.0051 * energy))
    assert not wide.passed and wide.severity == "WARN" and wide.metadata["uncertainty_pct"] > 0.5
    assert not Q.check_energy_certain(with_unc(float("inf"))).passed
    flagged = Q.check_energy_certain(with_unc(0.001 * energy, ["energy_uncertain: energy 1 J ± 0.1 J"]))
    assert not flagged.passed and "flagged" in flagged.description


def test_short_window_warns(nvml_result: ExperimentResult) -> None:
    outcome = Q.check_window_length(nvml_result.model_copy(update={"total_inference_time_sec": 5.0}))
    assert not outcome.passed and outcome.severity == "WARN"


def test_throttling_fails(nvml_result: ExperimentResult) -> None:
    throttled = ThermalThrottleInfo(detected=True, thermal=True, hw_thermal=True, throttle_duration_sec=2.5)
    outcome = Q.check_no_throttling(nvml_result.model_copy(update={"thermal_throttle": throttled}))
    assert not outcome.passed and outcome.severity == "ERROR" and "2.50 s" in outcome.description


def test_simulated_device_warns(nvml_result: ExperimentResult) -> None:
    outcome = Q.check_real_device(nvml_result.model_copy(update={"device_kind": "simulated"}))
    assert not outcome.passed and outcome.severity == "WARN" and "SIMULATED" in outcome.description


def test_regression_threshold_is_ten_percent(nvml_result: ExperimentResult) -> None:
    now = nvml_result.avg_energy_per_token_j
    assert Q.check_regression(nvml_result, (now / 1.0999, "2026-11-30", "prev-run")).passed
    worse = Q.check_regression(nvml_result, (now / 1.11, "2026-11-30", "prev-run"))
    assert not worse.passed and worse.severity == "WARN" and "2026-11-30" in worse.description
    assert Q.check_regression(nvml_result, None).passed  # nothing to compare with on this hardware


def test_repeatability_needs_two_runs_and_a_cv_within_five_percent() -> None:
    assert Q.check_repeatability(None).passed
    assert Q.check_repeatability({"n_runs": 1, "j_per_token_cv": None}).passed
    steady = Q.check_repeatability({"n_runs": 3, "j_per_token_cv": 0.049, "j_per_token_ci_low": 1.0,
                                    "j_per_token_ci_high": 1.1})
    assert steady.passed and steady.metadata["j_per_token_ci_high"] == 1.1
    noisy = Q.check_repeatability({"n_runs": 3, "j_per_token_cv": 0.08})
    assert not noisy.passed and noisy.severity == "WARN" and "8.0%" in noisy.description
