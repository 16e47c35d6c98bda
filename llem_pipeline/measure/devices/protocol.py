"""The device protocol: one interface for every power source (NVML, simulated, replay).

Devices are addressed by UUID. A device answers point reads; the sampler calls ``read()`` once per
tick and stores a ``DeviceReading``. Units are in the names: W, mJ, °C, MHz, %, MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

DeviceKindName = Literal["nvml", "simulated", "replay"]

# NVML clock-event (throttle) reason bits, as in nvml.h (nvmlClocksEventReason*).
CLOCK_EVENT_GPU_IDLE = 0x1
CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING = 0x2
CLOCK_EVENT_SW_POWER_CAP = 0x4
CLOCK_EVENT_HW_SLOWDOWN = 0x8
CLOCK_EVENT_SYNC_BOOST = 0x10
CLOCK_EVENT_SW_THERMAL = 0x20
CLOCK_EVENT_HW_THERMAL = 0x40
CLOCK_EVENT_HW_POWER_BRAKE = 0x80
CLOCK_EVENT_DISPLAY_CLOCK_SETTING = 0x100
# Reasons that mean the GPU is being slowed (idle, app clocks and sync boost do not count).
THROTTLE_MASK = (
    CLOCK_EVENT_SW_POWER_CAP | CLOCK_EVENT_HW_SLOWDOWN | CLOCK_EVENT_SW_THERMAL
    | CLOCK_EVENT_HW_THERMAL | CLOCK_EVENT_HW_POWER_BRAKE
)


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One read of every sampled quantity of a device. ``None`` = unsupported on this device."""

    power_w: float | None
    energy_mj: int | None
    temperature_c: float | None
    sm_clock_mhz: float | None
    mem_clock_mhz: float | None
    gpu_util_pct: float | None
    mem_used_mb: float | None
    clock_event_reasons: int | None
    power_avg_w: float | None = None  # the sensor's 1 s averaged power, W (read where the energy counter is missing)


@runtime_checkable
class Device(Protocol):
    """A GPU (or a stand-in) whose power and energy can be read."""

    @property
    def uuid(self) -> str:
        """Stable device UUID (e.g. 'GPU-…'; simulated devices use 'SIM-…')."""
        ...

    @property
    def name(self) -> str:
        """Product name."""
        ...

    @property
    def kind(self) -> DeviceKindName:
        """'nvml', 'simulated' or 'replay'."""
        ...

    def energy_mj(self) -> int | None:
        """Cumulative energy counter, mJ (None when the device has no counter). May wrap or reset."""
        ...

    def power_w(self) -> float | None:
        """Instant power, W (the average-power reading where no instant field exists)."""
        ...

    def read(self) -> DeviceReading:
        """All sampled quantities at once (one sampler tick)."""
        ...

    def power_limit_w(self) -> float | None:
        """Enforced power limit, W."""
        ...

    def persistence_mode(self) -> bool | None:
        """Persistence mode on/off (None when unknown)."""
        ...

    def memory_total_mb(self) -> float | None:
        """Device memory, MB."""
        ...
