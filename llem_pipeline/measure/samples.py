"""Columnar power samples: the one in-memory shape shared by the sampler and every analysis.

One row per (tick, device). Times are seconds on the monotonic clock (``time.perf_counter``) plus the
UTC wall time in epoch nanoseconds. Unsupported quantities are NaN (floats) or -1 (integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLUMNS: dict[str, np.dtype] = {
    "device_index": np.dtype("int16"),   # position of the device in the measured device list
    "t_mono_s": np.dtype("float64"),     # monotonic time of the read, s
    "utc_ns": np.dtype("int64"),         # UTC wall time of the read, ns since the epoch
    "power_w": np.dtype("float32"),      # instant power, W
    "power_avg_w": np.dtype("float32"),  # the sensor's 1 s averaged power, W (read only without a counter; else NaN)
    "energy_mj": np.dtype("float64"),    # cumulative energy counter, mJ (NaN: no counter)
    "temperature_c": np.dtype("float32"),
    "sm_clock_mhz": np.dtype("float32"),
    "mem_clock_mhz": np.dtype("float32"),
    "gpu_util_pct": np.dtype("float32"),
    "mem_used_mb": np.dtype("float32"),
    "clock_event_reasons": np.dtype("int64"),  # NVML clock-event bitmask, -1 unknown
}


@dataclass(frozen=True)
class Samples:
    """Columns of equal length (see COLUMNS), rows ordered by time then device."""

    columns: dict[str, np.ndarray]
    device_uuids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.columns["t_mono_s"].shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def for_device(self, device_index: int) -> Samples:
        """Rows of one device."""
        return self._mask(self.columns["device_index"] == device_index)

    def between(self, t0_s: float, t1_s: float) -> Samples:
        """Rows with t0_s <= t_mono_s <= t1_s (monotonic seconds)."""
        t = self.columns["t_mono_s"]
        return self._mask((t >= t0_s) & (t <= t1_s))

    def _mask(self, mask: np.ndarray) -> Samples:
        return Samples({k: v[mask] for k, v in self.columns.items()}, self.device_uuids)

    @classmethod
    def empty(cls, device_uuids: tuple[str, ...] = ()) -> Samples:
        """Zero rows."""
        return cls({k: np.empty(0, dtype=dt) for k, dt in COLUMNS.items()}, tuple(device_uuids))
