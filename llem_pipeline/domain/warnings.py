"""Stable measurement-warning codes (docs/methodology.md §3.11).

A warning in ``measurement_warnings`` is a string ``"<code>: <detail>"``; the code is one of the keys
below and never changes meaning. ``warning_code()`` recovers the code from such a string.
"""

from __future__ import annotations

WARNING_CODES: dict[str, str] = {
    "short_window": "Window shorter than the energy counter needs (< 300 counter updates, about 30 s)",
    "persistence_mode_off": "GPU persistence mode is off: driver state and idle power can change between runs",
    "temperature_drift": "GPU temperature drifted by more than 10 °C within the window",
    "too_few_samples": "Fewer power samples than the window and interval imply",
    "counter_trace_disagreement": "Energy counter and integrated power trace disagree by more than 5 %",
    "baseline_floored": "Baseline-adjusted energy was negative and floored at 0 J",
    "thermal_throttling": "Clock-event (throttle) reasons were active inside the window",
    "simulated_device": "Energy comes from a simulated device, not a real GPU",
    "replay_device": "Energy comes from a replayed power trace, not a live GPU",
    "energy_counter_unsupported": "The NVML energy counter is unsupported; energy is the integral of sampled power",
    "sampler_error": "The power sampler stopped early on an NVML error; the window ends with the samples taken",
    "counter_reset": "The energy counter went backwards or wrapped inside the window; the trace integral covers the gap",
    "baseline_unavailable": "No idle baseline could be measured; adjusted energy is unavailable",
    "steady_state_not_found": "No steady-state span was found; the whole window was used",
    "processes_not_overlapping": "Engine processes did not overlap in time",
    "gpu_attribution_conflict": "A device was measured by more than one process, so its energy is counted twice",
    "no_output_tokens": "The window generated no output tokens",
    "energy_uncertain": "The stated ± of the window's energy exceeds 0.5 % of it: the number is doubtful",
}


def make_warning(code: str, detail: str) -> str:
    """Return the warning string ``"<code>: <detail>"``; raises ValueError for an unknown code."""
    if code not in WARNING_CODES:
        raise ValueError(f"unknown warning code {code!r}; known codes: {', '.join(sorted(WARNING_CODES))}")
    return f"{code}: {detail}"


def warning_code(warning: str) -> str:
    """Return the code part of a ``"<code>: <detail>"`` warning string."""
    return warning.split(":", 1)[0].strip()
