"""Quality checks of one ExperimentResult (docs/methodology.md, warnings), as plain functions returning CheckOutcome.

``experiment_results`` turns each outcome into a Dagster AssetCheckResult. Severities: ERROR when the
number cannot be trusted (schema, energy, counter/trace, throttling); WARN when it is usable but the
reader must know (short window, simulated device, regression against the previous run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from llem_pipeline.domain.experiment import SCHEMA_VERSION, ExperimentResult
from llem_pipeline.domain.warnings import warning_code
from llem_pipeline.measure.quality import MAX_UNCERTAINTY_FRACTION

AGREEMENT_LIMIT = 0.05  # |E_counter − ∫P dt| / E_counter
MIN_WINDOW_S = 30.0  # about 300 updates of the NVML energy counter
REGRESSION_LIMIT = 0.10  # J/token more than 10 % above the previous run of the same config
REPEATABILITY_CV_LIMIT = 0.05  # coefficient of variation of J/token over a config's runs of one day
UNCERTAINTY_LIMIT = MAX_UNCERTAINTY_FRACTION  # stated ± of the raw energy over the raw energy (the warning's limit)


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check: its name, pass/fail, severity ('ERROR' | 'WARN'), a sentence and numbers."""

    name: str
    passed: bool
    severity: str
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _codes(result: ExperimentResult) -> set[str]:
    return {warning_code(w) for w in result.measurement_warnings}


def check_schema_version(result: ExperimentResult) -> CheckOutcome:
    """Pass when schema_version is exactly "2.0"."""
    ok = result.schema_version == SCHEMA_VERSION
    return CheckOutcome("schema_version", ok, "ERROR",
                        f"schema_version={result.schema_version!r} (expected {SCHEMA_VERSION!r})",
                        {"schema_version": result.schema_version})


def check_energy_sane(result: ExperimentResult) -> CheckOutcome:
    """Pass when raw energy > 0 J and, with a baseline, 0 J < adjusted ≤ raw."""
    raw, adj = result.total_energy_j, result.energy_adjusted_j
    meta = {"total_energy_j": raw, **({"energy_adjusted_j": adj} if adj is not None else {})}
    if adj is None:
        return CheckOutcome("energy_sane", raw > 0, "ERROR",
                            f"raw energy {raw:.3f} J (no baseline: adjusted energy not computed)", meta)
    ok = raw > 0 and 0 < adj <= raw
    return CheckOutcome("energy_sane", ok, "ERROR", f"0 < adjusted {adj:.3f} J ≤ raw {raw:.3f} J: {ok}", meta)


def check_counter_trace_agreement(result: ExperimentResult) -> CheckOutcome:
    """Pass when |E_counter − ∫P dt| / E_counter ≤ 5 % (or when only one of the two exists)."""
    agreement = result.energy_trace_agreement
    if agreement is None:
        return CheckOutcome("counter_trace_agreement", True, "ERROR",
                            f"no cross-check available (energy_method={result.energy_method})", {})
    ok = agreement <= AGREEMENT_LIMIT
    return CheckOutcome("counter_trace_agreement", ok, "ERROR",
                        f"counter vs trace differ by {agreement:.2%} (limit {AGREEMENT_LIMIT:.0%})",
                        {"energy_trace_agreement": agreement})


def check_energy_certain(result: ExperimentResult) -> CheckOutcome:
    """Pass unless the energy's stated ± exceeds 0.5 % of it (or is unbounded) or the worker flagged a window
    ``energy_uncertain``: the check fails on exactly the results whose number is doubtful."""
    energy = result.total_energy_j
    unc = result.energy_breakdown.uncertainty_j if result.energy_breakdown is not None else None
    flagged = "energy_uncertain" in _codes(result)
    wide = unc is not None and (not math.isfinite(unc) or unc > UNCERTAINTY_LIMIT * energy)
    meta: dict[str, Any] = {"total_energy_j": energy}
    if unc is not None and math.isfinite(unc):
        meta["uncertainty_j"] = unc
        meta["uncertainty_pct"] = 100.0 * unc / energy if energy > 0 else None
    share = ("unknown" if unc is None else "unbounded" if not math.isfinite(unc)
             else f"{unc / energy:.2%}" if energy > 0 else "n/a")
    ok = not (flagged or wide)
    text = (f"energy {energy:.3f} J ± {share} (limit {UNCERTAINTY_LIMIT:.1%})"
            + ("; a window was flagged energy_uncertain" if flagged else ""))
    return CheckOutcome("energy_certain", ok, "WARN", text, {k: v for k, v in meta.items() if v is not None})


def check_window_length(result: ExperimentResult) -> CheckOutcome:
    """Pass when the window lasts ≥ 30 s and the worker raised no short_window warning."""
    window = result.total_inference_time_sec
    ok = window >= MIN_WINDOW_S and "short_window" not in _codes(result)
    return CheckOutcome("window_long_enough", ok, "WARN",
                        f"window {window:.2f} s (the energy counter needs ≥ {MIN_WINDOW_S:.0f} s for ±0.1 %)",
                        {"window_s": window})


def check_no_throttling(result: ExperimentResult) -> CheckOutcome:
    """Pass when no thermal / power-cap / HW slowdown clock event was active in the window."""
    info = result.thermal_throttle
    detected = bool(info and info.detected) or "thermal_throttling" in _codes(result)
    seconds = info.throttle_duration_sec if info else 0.0
    text = f"throttled for {seconds:.2f} s in the window" if detected else "no throttle reason in the window"
    if info is None and not detected:
        text = "no throttle information recorded"
    return CheckOutcome("no_throttling", not detected, "ERROR", text, {"throttle_duration_s": seconds})


def check_real_device(result: ExperimentResult) -> CheckOutcome:
    """Pass when energy comes from a live NVIDIA GPU (NVML); WARN for simulated or replayed devices."""
    kind = result.device_kind or "unknown"
    ok = kind == "nvml" and result.energy_method != "simulated"
    text = "energy from NVML" if ok else f"SIMULATED measurement: device_kind={kind}, not a real GPU reading"
    return CheckOutcome("real_device", ok, "WARN", text, {"device_kind": kind})


def check_regression(result: ExperimentResult, previous: tuple[float, Any, str] | None) -> CheckOutcome:
    """Pass unless J/token rose more than 10 % against the previous run of the same config on the same hardware.

    ``previous``: (J/token, run_date, run_id) of that run, or None when there is none.
    """
    now = result.avg_energy_per_token_j
    if previous is None or previous[0] <= 0:
        return CheckOutcome("no_regression", True, "WARN",
                            "no previous run of this config on this hardware to compare with", {"j_per_token": now})
    before, day, run_id = previous
    change = now / before - 1.0
    ok = change <= REGRESSION_LIMIT
    return CheckOutcome("no_regression", ok, "WARN",
                        f"J/token {now:.6g} vs {before:.6g} ({day} run {str(run_id)[:8]}): {change:+.1%} "
                        f"(limit +{REGRESSION_LIMIT:.0%})",
                        {"j_per_token": now, "previous_j_per_token": before, "change_pct": 100 * change})


def check_repeatability(stats: dict[str, Any] | None) -> CheckOutcome:
    """Pass while the J/token of this config's runs on this hardware that day vary by at most 5 % (CV).

    ``stats``: the config_stats row of (config, hardware, run date) after this run was stored, or None.
    """
    n = int(stats.get("n_runs") or 0) if stats else 0
    cv = stats.get("j_per_token_cv") if stats else None
    if n < 2 or cv is None:
        return CheckOutcome("repeatable", True, "WARN",
                            f"{n} run(s) of this config on this hardware today: repeatability needs ≥ 2 (study cycles)",
                            {"n_runs": n})
    ok = cv <= REPEATABILITY_CV_LIMIT
    meta = {"n_runs": n, "j_per_token_cv": cv}
    for k in ("j_per_token_ci_low", "j_per_token_ci_high"):
        if stats.get(k) is not None:
            meta[k] = stats[k]
    return CheckOutcome("repeatable", ok, "WARN",
                        f"J/token varies by CV {cv:.1%} over {n} runs (limit {REPEATABILITY_CV_LIMIT:.0%})", meta)


CHECK_DESCRIPTIONS: dict[str, str] = {
    "schema_version": "ExperimentResult.schema_version is exactly '2.0'.",
    "energy_sane": "Raw energy > 0 J and 0 J < baseline-adjusted energy ≤ raw energy.",
    "counter_trace_agreement": "NVML energy counter and integrated power trace agree within 5 %.",
    "energy_certain": "The stated ± of the raw energy is at most 0.5 % of it (no window flagged energy_uncertain).",
    "window_long_enough": "Measurement window ≥ 30 s (≈ 300 energy-counter updates).",
    "no_throttling": "No thermal, power-cap or HW slowdown clock event inside the window.",
    "real_device": "Energy read from a live NVIDIA GPU; simulated/replayed measurements are flagged.",
    "no_regression": "J/token at most 10 % above the previous run of the same config on the same hardware.",
    "repeatable": "J/token of the config's runs on this hardware that day vary by at most 5 % (CV over cycles).",
}


def run_checks(result: ExperimentResult, previous: tuple[float, Any, str] | None) -> list[CheckOutcome]:
    """Return the outcome of every check that needs only the result and the previous run (all but
    ``repeatable``, which reads the stored runs), in CHECK_DESCRIPTIONS order."""
    return [
        check_schema_version(result),
        check_energy_sane(result),
        check_counter_trace_agreement(result),
        check_energy_certain(result),
        check_window_length(result),
        check_no_throttling(result),
        check_real_device(result),
        check_regression(result, previous),
    ]
