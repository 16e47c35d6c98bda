"""Thermal / power throttling inside the measurement window (docs/methodology.md §3.7), from NVML clock-event reasons.

A sample "throttles" when its clock-event bitmask has any bit of ``THROTTLE_MASK`` (SW power cap, HW
slowdown, SW/HW thermal, HW power brake); GPU idle, application-clock and sync-boost bits do not count,
and an unknown bitmask (-1) counts as none. A throttled sample stands for its sampling interval: from
its read to the device's next read (the last one: to the window end). ``throttle_duration_sec`` is the
length of the union of those intervals over all devices (time with any device throttled).
Note: SW power cap is routine on power-capped GPUs; ``power`` and ``sw_power_cap`` make it visible.
"""

from __future__ import annotations

import numpy as np

from llem_pipeline.domain.metrics import ThermalThrottleInfo
from llem_pipeline.measure.devices.protocol import (
    CLOCK_EVENT_HW_POWER_BRAKE,
    CLOCK_EVENT_HW_SLOWDOWN,
    CLOCK_EVENT_HW_THERMAL,
    CLOCK_EVENT_SW_POWER_CAP,
    CLOCK_EVENT_SW_THERMAL,
    THROTTLE_MASK,
)
from llem_pipeline.measure.samples import Samples


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_start, cur_end = 0.0, None, None
    for a, b in sorted(intervals):
        if cur_end is None or a > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def throttle_info(samples: Samples, t0_mono_s: float, t1_mono_s: float) -> ThermalThrottleInfo:
    """Return throttle flags, duration (s), timestamps (s from ``t0_mono_s``) and temperatures (°C) in [t0, t1].

    ``samples``: the sampler's rows (any devices); ``t0_mono_s``/``t1_mono_s``: the window on the
    monotonic clock, s, with ``t0_mono_s`` the inference start. ``temperature_drift_c`` is last − first
    temperature of the device whose drift is largest in magnitude (sign kept), °C.
    """
    win = samples.between(t0_mono_s, t1_mono_s)
    if len(win) == 0:
        return ThermalThrottleInfo()
    raw = win["clock_event_reasons"].astype(np.int64)
    reasons = np.where(raw >= 0, raw, 0)

    def seen(bit: int) -> bool:
        return bool(np.any(reasons & bit))

    sw_thermal, hw_thermal = seen(CLOCK_EVENT_SW_THERMAL), seen(CLOCK_EVENT_HW_THERMAL)
    sw_power_cap, hw_power = seen(CLOCK_EVENT_SW_POWER_CAP), seen(CLOCK_EVENT_HW_POWER_BRAKE)
    hw_slowdown = seen(CLOCK_EVENT_HW_SLOWDOWN)
    throttled = (reasons & THROTTLE_MASK) != 0

    t = win["t_mono_s"].astype(np.float64)
    dev = win["device_index"]
    temp = win["temperature_c"].astype(np.float64)
    intervals: list[tuple[float, float]] = []
    drifts: list[float] = []
    for d in np.unique(dev):
        m = np.flatnonzero(dev == d)
        m = m[np.argsort(t[m], kind="stable")]
        td = t[m]
        ends = np.append(td[1:], t1_mono_s)
        for k in np.flatnonzero(throttled[m]):
            intervals.append((float(td[k]), float(max(ends[k], td[k]))))
        tempd = temp[m]
        tempd = tempd[np.isfinite(tempd)]
        if tempd.size:
            drifts.append(float(tempd[-1] - tempd[0]))

    finite_temp = temp[np.isfinite(temp)]
    stamps = np.unique(t[throttled] - t0_mono_s)
    return ThermalThrottleInfo(
        detected=bool(throttled.any()),
        thermal=sw_thermal or hw_thermal,
        power=sw_power_cap or hw_power,
        sw_thermal=sw_thermal,
        hw_thermal=hw_thermal,
        hw_power=hw_power,
        sw_power_cap=sw_power_cap,
        hw_slowdown=hw_slowdown,
        throttle_duration_sec=_union_length(intervals),
        throttle_timestamps=[float(x) for x in stamps],
        max_temperature_c=float(finite_temp.max()) if finite_temp.size else None,
        mean_temperature_c=float(finite_temp.mean()) if finite_temp.size else None,
        temperature_drift_c=max(drifts, key=abs) if drifts else None,
    )
