"""Throttle detection from scripted clock-event bitmasks and temperatures."""

from __future__ import annotations

import numpy as np
import pytest

from llem_pipeline.measure.devices.protocol import (
    CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING,
    CLOCK_EVENT_GPU_IDLE,
    CLOCK_EVENT_HW_POWER_BRAKE,
    CLOCK_EVENT_HW_SLOWDOWN,
    CLOCK_EVENT_HW_THERMAL,
    CLOCK_EVENT_SW_POWER_CAP,
    CLOCK_EVENT_SW_THERMAL,
    CLOCK_EVENT_SYNC_BOOST,
)
from llem_pipeline.measure.samples import COLUMNS, Samples
from llem_pipeline.measure.throttle import throttle_info


def make_samples(per_device: dict[int, dict[str, list]]) -> Samples:
    """Samples from {device_index: {column: values}}; missing columns are NaN / -1."""
    parts = []
    for d, cols in per_device.items():
        n = len(cols["t_mono_s"])
        part = {}
        for k, dt in COLUMNS.items():
            if k == "device_index":
                part[k] = np.full(n, d, dtype=dt)
            elif k in cols:
                part[k] = np.asarray(cols[k], dtype=dt)
            else:
                part[k] = np.full(n, -1 if dt.kind == "i" else np.nan, dtype=dt)
        parts.append(part)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
    order = np.lexsort((merged["device_index"], merged["t_mono_s"]))
    return Samples({k: v[order] for k, v in merged.items()}, tuple(f"GPU-{d}" for d in per_device))


T0 = 1000.0


def times(n: int, dt: float = 0.1, offset: float = 0.0) -> list[float]:
    return [T0 + offset + i * dt for i in range(n)]


def test_no_throttle_and_non_throttle_bits_ignored():
    benign = [CLOCK_EVENT_GPU_IDLE, CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING, CLOCK_EVENT_SYNC_BOOST, -1, 0]
    s = make_samples({0: {"t_mono_s": times(5), "clock_event_reasons": benign,
                          "temperature_c": [50, 52, 54, 56, 58]}})
    info = throttle_info(s, T0, T0 + 0.5)
    assert not info.detected and not info.thermal and not info.power
    assert info.throttle_duration_sec == 0.0 and info.throttle_timestamps == []
    assert info.max_temperature_c == 58 and info.mean_temperature_c == pytest.approx(54)
    assert info.temperature_drift_c == pytest.approx(8)


def test_each_reason_maps_to_its_flag():
    cases = {
        CLOCK_EVENT_SW_THERMAL: ("sw_thermal", "thermal"),
        CLOCK_EVENT_HW_THERMAL: ("hw_thermal", "thermal"),
        CLOCK_EVENT_SW_POWER_CAP: ("sw_power_cap", "power"),
        CLOCK_EVENT_HW_POWER_BRAKE: ("hw_power", "power"),
        CLOCK_EVENT_HW_SLOWDOWN: ("hw_slowdown",),
    }
    flags = ["sw_thermal", "hw_thermal", "sw_power_cap", "hw_power", "hw_slowdown", "thermal", "power"]
    for bit, expected in cases.items():
        s = make_samples({0: {"t_mono_s": times(3), "clock_event_reasons": [0, bit | CLOCK_EVENT_GPU_IDLE, 0]}})
        info = throttle_info(s, T0, T0 + 0.3)
        assert info.detected
        for f in flags:
            assert getattr(info, f) is (f in expected), (bit, f)


def test_duration_timestamps_relative_to_inference_start_and_window_clipping():
    # 10 samples at 0.1 s; throttled at samples 3,4 and 9 (the last one lasts to the window end)
    reasons = [0, 0, 0, CLOCK_EVENT_SW_THERMAL, CLOCK_EVENT_SW_THERMAL, 0, 0, 0, 0, CLOCK_EVENT_SW_POWER_CAP]
    s = make_samples({0: {"t_mono_s": times(10), "clock_event_reasons": reasons}})
    info = throttle_info(s, T0, T0 + 0.95)
    assert info.throttle_timestamps == pytest.approx([0.3, 0.4, 0.9])
    assert info.throttle_duration_sec == pytest.approx(0.2 + 0.05)
    # a window that excludes the throttled samples sees nothing
    assert not throttle_info(s, T0 + 0.5, T0 + 0.85).detected
    # the window's t0 is the origin of the timestamps
    sub = throttle_info(s, T0 + 0.2, T0 + 0.95)
    assert sub.throttle_timestamps == pytest.approx([0.1, 0.2, 0.7])


def test_multi_device_duration_is_the_union_and_drift_is_the_largest():
    # device 0 throttled 0.0-0.3, device 1 throttled 0.2-0.5 (overlap 0.2-0.3) -> union 0.5 s
    r0 = [CLOCK_EVENT_HW_SLOWDOWN] * 3 + [0] * 3
    r1 = [0, 0] + [CLOCK_EVENT_HW_THERMAL] * 3 + [0]
    s = make_samples({
        0: {"t_mono_s": times(6), "clock_event_reasons": r0, "temperature_c": [60, 61, 62, 63, 64, 65]},
        1: {"t_mono_s": times(6, offset=0.001), "clock_event_reasons": r1,
            "temperature_c": [80, 78, 76, np.nan, 72, 68]},
    })
    info = throttle_info(s, T0, T0 + 0.6)
    assert info.throttle_duration_sec == pytest.approx(0.501, abs=1e-9)
    assert info.hw_slowdown and info.hw_thermal and info.thermal and not info.power
    assert info.max_temperature_c == 80
    assert info.temperature_drift_c == pytest.approx(-12)  # device 1: 68 - 80, larger than device 0's +5
    assert info.mean_temperature_c == pytest.approx(np.mean([60, 61, 62, 63, 64, 65, 80, 78, 76, 72, 68]))


def test_empty_window_returns_defaults():
    s = make_samples({0: {"t_mono_s": times(3), "clock_event_reasons": [CLOCK_EVENT_SW_THERMAL] * 3}})
    info = throttle_info(s, T0 + 5, T0 + 6)
    assert not info.detected and info.max_temperature_c is None and info.temperature_drift_c is None
