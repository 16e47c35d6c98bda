"""Replay a recorded timeseries Parquet (the sampler's sidecar) as a live device.

The recording of one device UUID is shifted so that its first sample plays at the moment the device is
created (``clock()``); each read returns the last recorded row at or before the replay time (sample and
hold, like the real counter), so the energy counter steps exactly as recorded. After the end of the
recording the last row holds (or the recording loops with ``loop=True``, the counter continuing upward).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np

from llem_pipeline.measure.devices.protocol import DeviceKindName, DeviceReading
from llem_pipeline.measure.samples import Samples


def _opt(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


class ReplayDevice:
    """Plays back one device of a recorded Samples/Parquet (kind 'replay')."""

    def __init__(
        self,
        source: Samples | str | os.PathLike[str],
        uuid: str | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        loop: bool = False,
        name: str | None = None,
        power_limit_w: float | None = None,
        persistence_mode: bool | None = None,
        memory_total_mb: float | None = None,
    ) -> None:
        if not isinstance(source, Samples):
            from llem_pipeline.measure.sampler import read_timeseries_parquet

            source = read_timeseries_parquet(source)
        uuids = source.device_uuids
        if not uuids:
            raise ValueError("ReplayDevice: the recording names no device UUIDs")
        if uuid is None:
            uuid = uuids[0]
        if uuid not in uuids:
            raise ValueError(f"ReplayDevice: uuid={uuid!r} is not in the recording (recorded: {', '.join(uuids)})")
        rows = source.for_device(uuids.index(uuid))
        if len(rows) == 0:
            raise ValueError(f"ReplayDevice: the recording has no samples for {uuid!r}")
        order = np.argsort(rows["t_mono_s"], kind="stable")
        self._cols = {k: v[order] for k, v in rows.columns.items()}
        self._t = self._cols["t_mono_s"] - self._cols["t_mono_s"][0]
        self._uuid = uuid
        self._name = name or f"Replay of {uuid}"
        self.clock = clock
        self.start_s = clock()
        self.loop = loop
        self.duration_s = float(self._t[-1])
        e = self._cols["energy_mj"]
        finite = e[np.isfinite(e)]
        self._loop_energy_mj = float(finite[-1] - finite[0]) if len(finite) >= 2 else 0.0
        self._power_limit_w = power_limit_w
        self._persistence = persistence_mode
        self._memory_total_mb = memory_total_mb

    @property
    def uuid(self) -> str:
        """Returns the recorded device's UUID."""
        return self._uuid

    @property
    def name(self) -> str:
        """Returns a name saying this is a replay."""
        return self._name

    @property
    def kind(self) -> DeviceKindName:
        """Returns 'replay'."""
        return "replay"

    def _row(self) -> tuple[int, int]:
        """Returns (row index, completed loops) for now."""
        u = self.clock() - self.start_s
        laps = 0
        if self.loop and self.duration_s > 0 and u > self.duration_s:
            laps = int(u // self.duration_s)
            u -= laps * self.duration_s
        i = int(np.searchsorted(self._t, u, side="right")) - 1
        return max(i, 0), laps

    def energy_mj(self) -> int | None:
        """Returns the recorded counter at the replay time, mJ (None if the recording has none)."""
        i, laps = self._row()
        v = self._cols["energy_mj"][i]
        return None if not math.isfinite(v) else int(v + laps * self._loop_energy_mj)

    def power_w(self) -> float | None:
        """Returns the recorded power at the replay time, W."""
        i, _ = self._row()
        return _opt(self._cols["power_w"][i])

    def read(self) -> DeviceReading:
        """Returns the recorded row at the replay time."""
        i, laps = self._row()
        c = self._cols
        e = c["energy_mj"][i]
        reasons = int(c["clock_event_reasons"][i])
        return DeviceReading(
            power_w=_opt(c["power_w"][i]),
            energy_mj=None if not math.isfinite(e) else int(e + laps * self._loop_energy_mj),
            temperature_c=_opt(c["temperature_c"][i]),
            sm_clock_mhz=_opt(c["sm_clock_mhz"][i]),
            mem_clock_mhz=_opt(c["mem_clock_mhz"][i]),
            gpu_util_pct=_opt(c["gpu_util_pct"][i]),
            mem_used_mb=_opt(c["mem_used_mb"][i]),
            clock_event_reasons=None if reasons < 0 else reasons,
        )

    def power_limit_w(self) -> float | None:
        """Returns the power limit given at construction, W (None: not recorded)."""
        return self._power_limit_w

    def persistence_mode(self) -> bool | None:
        """Returns the persistence mode given at construction (None: not recorded)."""
        return self._persistence

    def memory_total_mb(self) -> float | None:
        """Returns the device memory given at construction, MB (None: not recorded)."""
        return self._memory_total_mb
