"""Which devices a measurement may use: parse ``LLEM_DEVICES`` ('auto' | 'simulated' | '0,1' | 'GPU-uuid,...').

No silent fallback: 'auto' enumerates GPUs through NVML and fails with a message saying what to set
when NVML is unavailable. The NVML module is injectable (tests pass a FakePynvml).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

SIMULATED = "simulated"
AUTO = "auto"
DEVICES_HELP = (
    "set LLEM_DEVICES to 'simulated' (the simulated GPU; results are labelled simulated), "
    "to 'auto' (every GPU NVML reports) or to a comma list of GPU indices or UUIDs such as '0,1'"
)
_TOKEN = re.compile(r"^(\d{1,3}|(GPU|MIG)-[A-Za-z0-9-]{4,80})$")


class DeviceSpecError(ValueError):
    """LLEM_DEVICES cannot be used; the message names the value and the fix."""


@dataclass(frozen=True)
class DeviceSlot:
    """One lockable device: ``token`` goes to the worker's ``--devices`` and to CUDA_VISIBLE_DEVICES."""

    token: str
    simulated: bool = False

    @property
    def lock_name(self) -> str:
        """Return the lock file name of this device ('gpu-<token>.lock')."""
        return f"gpu-{self.token}.lock"


def _nvml_indices(nvml: ModuleType | None) -> list[str]:
    """Return the NVML device indices as strings; raises DeviceSpecError when NVML cannot be used."""
    try:
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py; imported only for 'auto'
        nvml.nvmlInit()
        try:
            count = int(nvml.nvmlDeviceGetCount())
        finally:
            nvml.nvmlShutdown()
    except Exception as err:  # NVMLError, ImportError, OSError: all mean "no usable NVML here"
        raise DeviceSpecError(
            f"LLEM_DEVICES='auto' but NVML is not available on this machine ({type(err).__name__}: {err}); "
            f"{DEVICES_HELP}"
        ) from None
    if count == 0:
        raise DeviceSpecError(f"LLEM_DEVICES='auto' but NVML reports no GPU; {DEVICES_HELP}")
    return [str(i) for i in range(count)]


def parse_devices(spec: str | None, nvml: ModuleType | None = None) -> list[DeviceSlot]:
    """Return the lockable device slots of an LLEM_DEVICES value.

    'simulated' → one simulated slot; 'auto' → one slot per NVML GPU; '0,1' / 'GPU-…' → those devices.
    Raises DeviceSpecError naming the value and the accepted forms.
    """
    value = (spec or "").strip()
    if not value:
        raise DeviceSpecError(f"LLEM_DEVICES is empty; {DEVICES_HELP}")
    if value == SIMULATED:
        return [DeviceSlot(token=SIMULATED, simulated=True)]
    if value == AUTO:
        return [DeviceSlot(token=i) for i in _nvml_indices(nvml)]
    tokens = [t.strip() for t in value.split(",")]
    bad = [t for t in tokens if not _TOKEN.match(t)]
    if bad:
        raise DeviceSpecError(f"LLEM_DEVICES={value!r}: {bad[0]!r} is not a GPU index or UUID; {DEVICES_HELP}")
    if len(set(tokens)) != len(tokens):
        raise DeviceSpecError(f"LLEM_DEVICES={value!r} lists a device twice; list each GPU once")
    return [DeviceSlot(token=t) for t in tokens]


def target_name(spec: str | None) -> str:
    """Return the hardware target this host's devices serve: 'sim' for the simulated GPU, 'gpu' otherwise.

    The target is part of every measurement partition key, so simulated and real measurements of a config
    are different partitions (and different rows in DuckDB: see domain.identity.hardware_id).
    """
    return "sim" if (spec or "").strip() == SIMULATED else "gpu"


TARGET_ENV = "LLEM_TARGET"
_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def host_target(spec: str | None, target: str | None = None) -> str:
    """Return the hardware target this host serves: ``target`` (LLEM_TARGET, a fleet host's target such as
    'h100') when given, else ``target_name(spec)``. Raises DeviceSpecError naming a malformed target."""
    name = (target or "").strip()
    if not name:
        return target_name(spec)
    if not _TARGET_NAME.match(name):
        raise DeviceSpecError(f"{TARGET_ENV}={name[:40]!r} is not a hardware target name: use lowercase letters, "
                              "digits and '-' (at most 32), the same names as a study's `hardware:` list")
    return name
