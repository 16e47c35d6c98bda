"""Measurement warnings with stable codes (docs/methodology.md §3.11) and reproducibility notes naming the method used.

Thresholds (module constants): a window shorter than 300 counter updates (≈ 30 s at the counter's
~100 ms update period); fewer samples than 80 % of window / interval per device; temperature drift
beyond 10 °C; counter/trace disagreement beyond 5 %. Warnings are ``"<code>: <detail>"`` strings from
``llem_pipeline.domain.warnings``; the list is de-duplicated and keeps first-seen order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from llem_pipeline.domain.metrics import ThermalThrottleInfo
from llem_pipeline.domain.warnings import make_warning, warning_code
from llem_pipeline.measure.windows import SteadyState

MIN_COUNTER_UPDATES = 300
COUNTER_UPDATE_INTERVAL_S = 0.1
MIN_SAMPLE_COVERAGE = 0.8
MAX_TEMPERATURE_DRIFT_C = 10.0
MAX_COUNTER_TRACE_DISAGREEMENT = 0.05
MAX_UNCERTAINTY_FRACTION = 0.005  # a window whose ± exceeds 0.5 % of its energy is doubtful


def dedupe(warnings: Iterable[str]) -> list[str]:
    """Return ``warnings`` without repeats, first-seen order kept."""
    seen: dict[str, None] = {}
    for w in warnings:
        seen.setdefault(w, None)
    return list(seen)


def _throttle_detail(t: ThermalThrottleInfo) -> str:
    names = [n for n in ("sw_thermal", "hw_thermal", "sw_power_cap", "hw_power", "hw_slowdown") if getattr(t, n)]
    return f"{', '.join(names)} active for {t.throttle_duration_sec:.2f} s of the window"


def collect_warnings(
    *,
    window_s: float,
    device_kind: str,
    energy_method: str | None,
    sample_interval_s: float,
    sample_count: int,
    output_tokens: int,
    num_devices: int = 1,
    counter_update_interval_s: float = COUNTER_UPDATE_INTERVAL_S,
    persistence_modes: Sequence[bool | None] = (),
    device_uuids: Sequence[str] = (),
    temperature_drift_c: float | None = None,
    energy_trace_agreement: float | None = None,
    baseline_enabled: bool = False,
    baseline_power_w: float | None = None,
    baseline_floored: bool = False,
    throttle: ThermalThrottleInfo | None = None,
    steady_state: SteadyState | None = None,
    counter_updates: float | None = None,
    energy_j: float | None = None,
    energy_uncertainty_j: float | None = None,
    max_uncertainty_fraction: float = MAX_UNCERTAINTY_FRACTION,
    extra: Iterable[str] = (),
) -> list[str]:
    """Return the measurement warnings of one window (stable codes, de-duplicated).

    ``window_s``: reported window, s; ``sample_interval_s``: sampler period, s; ``sample_count``: power
    samples inside the window over all ``num_devices`` devices; ``output_tokens``: generated tokens in
    the window; ``persistence_modes``/``device_uuids``: per device (None = unknown, not warned);
    ``temperature_drift_c``: °C; ``energy_trace_agreement``: |E_counter − ∫P dt| / E_counter;
    ``baseline_enabled``: a baseline was asked for (None power then warns ``baseline_unavailable``);
    ``steady_state``: the detection result when methodology is 'steady_state' (warns when not found);
    ``counter_updates``: counter steps in the window (``WindowEnergy.counter_updates``); when given it
    decides ``short_window`` instead of window_s / counter_update_interval_s.
    ``energy_j``/``energy_uncertainty_j``: the window's energy and its stated ± (J); ``energy_uncertain``
    is raised when the ± exceeds ``max_uncertainty_fraction`` of the energy (or is infinite).
    ``extra``: warnings from other stages (sampler, ``WindowEnergy.warnings``), merged in first; a code
    already present there is not emitted again (the earlier stage's detail wins).
    """
    out: list[str] = list(extra)
    n_extra = len(out)
    have = {warning_code(w) for w in out}
    if device_kind == "simulated":
        out.append(make_warning("simulated_device", "energy and power come from a simulated device, not a real GPU"))
    elif device_kind == "replay":
        out.append(make_warning("replay_device", "energy and power are replayed from a recorded trace, not measured live"))
    if device_kind == "nvml" and energy_method == "trace_integral":
        out.append(make_warning("energy_counter_unsupported",
                                "the NVML energy counter is unsupported; energy is the integral of sampled power"))

    min_window = MIN_COUNTER_UPDATES * counter_update_interval_s
    if counter_updates is not None and counter_updates < MIN_COUNTER_UPDATES:
        out.append(make_warning(
            "short_window",
            f"window {window_s:.2f} s spans about {counter_updates:.0f} energy-counter updates "
            f"(< {MIN_COUNTER_UPDATES}); relative energy error grows on short windows: use more requests"))
    elif counter_updates is None and window_s < min_window:
        out.append(make_warning(
            "short_window",
            f"window {window_s:.2f} s < {min_window:.0f} s ({MIN_COUNTER_UPDATES} counter updates at "
            f"{counter_update_interval_s * 1000:.0f} ms); relative energy error grows on short windows: use more requests"))

    if sample_interval_s > 0 and window_s > 0:
        expected = window_s / sample_interval_s
        per_device = sample_count / max(1, num_devices)
        if per_device < MIN_SAMPLE_COVERAGE * expected:
            out.append(make_warning(
                "too_few_samples",
                f"{per_device:.0f} power samples per device in a {window_s:.2f} s window; expected about "
                f"{expected:.0f} at {sample_interval_s * 1000:.0f} ms (< {MIN_SAMPLE_COVERAGE:.0%})"))

    off = [device_uuids[i] if i < len(device_uuids) else f"device {i}"
           for i, mode in enumerate(persistence_modes) if mode is False]
    if off:
        out.append(make_warning("persistence_mode_off",
                                f"persistence mode is off on {', '.join(off)} (enable with `nvidia-smi -pm 1`)"))

    if temperature_drift_c is not None and abs(temperature_drift_c) > MAX_TEMPERATURE_DRIFT_C:
        out.append(make_warning("temperature_drift",
                                f"temperature changed by {temperature_drift_c:+.1f} °C within the window "
                                f"(limit ±{MAX_TEMPERATURE_DRIFT_C:.0f} °C)"))

    if energy_trace_agreement is not None and energy_trace_agreement > MAX_COUNTER_TRACE_DISAGREEMENT:
        out.append(make_warning("counter_trace_disagreement",
                                f"energy counter and power-trace integral differ by {energy_trace_agreement:.1%} "
                                f"(limit {MAX_COUNTER_TRACE_DISAGREEMENT:.0%})"))

    if energy_uncertainty_j is not None and energy_j is not None and (
            not math.isfinite(energy_uncertainty_j) or energy_uncertainty_j > max_uncertainty_fraction * abs(energy_j)):
        share = (f"{energy_uncertainty_j / abs(energy_j):.2%}" if energy_j and math.isfinite(energy_uncertainty_j)
                 else "unbounded")
        out.append(make_warning("energy_uncertain",
                                f"energy {energy_j:.3f} J ± {energy_uncertainty_j:.3g} J ({share}, limit "
                                f"{max_uncertainty_fraction:.1%}): treat this number as doubtful"))

    if baseline_enabled and baseline_power_w is None:
        out.append(make_warning("baseline_unavailable", "no idle baseline power; energy_adjusted_j is unavailable"))
    if baseline_floored:
        out.append(make_warning("baseline_floored",
                                "raw energy was below idle power × window; energy_adjusted_j floored at 0 J"))

    if throttle is not None and throttle.detected:
        out.append(make_warning("thermal_throttling", _throttle_detail(throttle)))

    if steady_state is not None and not steady_state.found:
        out.append(make_warning("steady_state_not_found", f"{steady_state.reason}; the whole window was used"))

    if output_tokens <= 0:
        out.append(make_warning("no_output_tokens", "the window holds no generated tokens; per-token figures are 0"))
    own = [w for w in out[n_extra:] if warning_code(w) not in have]
    return dedupe(out[:n_extra] + own)


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def reproducibility_notes(
    energy_method: str | None,
    device_kind: str | None,
    sample_interval_s: float,
    uncertainty_j: float | None,
    *,
    boundary_correction: bool = True,
    num_devices: int = 1,
    methodology: str = "total",
    window_s: float | None = None,
    steady_state_window: tuple[float, float] | None = None,
    energy_trace_agreement: float | None = None,
    baseline_power_w: float | None = None,
    baseline_provenance: str | None = None,
) -> str:
    """Return a plain-text note naming how energy was actually obtained, the window and the baseline.

    ``sample_interval_s``: sampler period, s; ``uncertainty_j``: remaining ± bound on raw energy, J;
    ``window_s``: reported window, s; ``steady_state_window``: (start, end), s from inference start;
    ``baseline_power_w``: idle power, W.
    """
    every = _fmt_ms(sample_interval_s)
    devs = f"{num_devices} device{'s' if num_devices != 1 else ''}"
    parts: list[str] = []
    if device_kind == "simulated" or energy_method == "simulated":
        parts.append("SIMULATED device: no real GPU energy was measured. Power and energy come from a software "
                     f"model driven by engine activity, sampled every {every}; the figures exercise the pipeline "
                     "and say nothing about hardware efficiency.")
    else:
        if device_kind == "replay":
            parts.append("REPLAY device: power and energy were replayed from a recorded trace, not measured live.")
        if energy_method == "nvml_counter":
            corr = ("with boundary correction (the partial counter steps at both ends filled from instant power "
                    "polled densely until the counter's next update edge)" if boundary_correction else
                    "without boundary correction (each end may be off by up to one ~100 ms counter step)")
            text = (f"Energy from the NVML cumulative energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ) read "
                    f"at the window boundaries {corr}, summed over {devs}; cross-checked against the integral of "
                    f"instant power sampled every {every}")
            if energy_trace_agreement is not None:
                text += f" (difference {energy_trace_agreement:.2%})"
            parts.append(text + ".")
        elif energy_method == "trace_integral":
            parts.append(f"The NVML energy counter is unsupported here: energy comes from the 1 s averaged power "
                         "(nvmlDeviceGetPowerUsage) integrated over the window shifted by 1 s, corrected at both "
                         "ends from instant power polled densely for 1 s after each boundary (where no averaged "
                         f"power was read: the trapezoidal integral of instant power sampled every {every}), "
                         f"summed over {devs}.")
        else:
            parts.append("No energy method was recorded.")
    if uncertainty_j is not None:
        parts.append(f"Remaining uncertainty of the raw energy: ±{uncertainty_j:.3g} J.")
    if methodology == "steady_state" and steady_state_window is not None:
        a, b = steady_state_window
        parts.append(f"Window: steady state (engine saturated, power stable), {a:.2f}–{b:.2f} s from inference "
                     "start; ramp-up and drain excluded.")
    elif methodology == "windowed" and steady_state_window is not None:
        a, b = steady_state_window
        parts.append(f"Window: explicit, {a:.2f}–{b:.2f} s from inference start.")
    else:
        length = f" ({window_s:.2f} s)" if window_s is not None else ""
        parts.append(f"Window: the whole inference window{length}, first request submitted to last token.")
    if baseline_power_w is not None:
        prov = f", {baseline_provenance}" if baseline_provenance else ""
        parts.append(f"Adjusted energy subtracts idle power {baseline_power_w:.1f} W{prov} × window; "
                     "total_energy_j is raw.")
    else:
        parts.append("No idle baseline: only raw energy is reported.")
    parts.append("Per-token figures divide by generated (output) tokens; warmup is excluded. "
                 "Results vary with thermal state, clocks and concurrent load.")
    return " ".join(parts)
