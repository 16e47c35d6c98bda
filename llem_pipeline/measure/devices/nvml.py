"""NVML devices (nvidia-ml-py, ``import pynvml``) behind the Device protocol.

The NVML module is injectable (``nvml=``): production passes nothing and gets ``pynvml``; tests and
benches pass ``FakePynvml``. NVML init/shutdown is reference counted per module under one module-level
lock, so threads and repeated opens share a single ``nvmlInit``; the count is per process (a spawned or
forked child starts from zero and initialises NVML itself).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from llem_pipeline.measure.devices.protocol import DeviceKindName, DeviceReading

_LOCK = threading.Lock()
_REFCOUNT: weakref.WeakKeyDictionary[ModuleType, int] = weakref.WeakKeyDictionary()  # module -> open count
_REFCOUNT_PID = os.getpid()

_MIB = float(2**20)


class NvmlUnavailableError(RuntimeError):
    """NVML cannot be used here; the message says why and what the options are; ``reason`` is the why alone."""

    reason: str = ""


def _unavailable(why: str) -> NvmlUnavailableError:
    err = NvmlUnavailableError(
        f"NVML is unavailable: {why}. Options: (1) on a machine with an NVIDIA GPU, install or repair the "
        "NVIDIA driver (nvidia-smi must work) and the Python bindings (`pip install nvidia-ml-py`); "
        "(2) run without a GPU using the simulated device (`--devices simulated`), whose energy is "
        "clearly labelled simulated (device_kind='simulated', warning 'simulated_device')."
    )
    err.reason = why
    return err


def load_nvml(nvml: ModuleType | None = None) -> ModuleType:
    """Returns the NVML module: ``nvml`` if given, else ``import pynvml``; raises NvmlUnavailableError."""
    if nvml is not None:
        return nvml
    try:
        import pynvml
    except ImportError as exc:
        raise _unavailable(f"the Python module 'pynvml' (package nvidia-ml-py) is not installed ({exc})") from exc
    return pynvml


def _check_pid() -> None:
    global _REFCOUNT_PID
    if os.getpid() != _REFCOUNT_PID:  # forked child: the parent's count does not apply
        _REFCOUNT.clear()
        _REFCOUNT_PID = os.getpid()


def nvml_acquire(nvml: ModuleType) -> None:
    """Initialises NVML on first use in this process (ref counted); raises NvmlUnavailableError."""
    with _LOCK:
        _check_pid()
        key = nvml
        if _REFCOUNT.get(key, 0) == 0:
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                reason = {
                    getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12): "the NVML shared library (libnvidia-ml.so) was not found",
                    getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9): "the NVIDIA kernel driver is not loaded",
                    getattr(nvml, "NVML_ERROR_NO_PERMISSION", 4): "no permission to access the GPU device files",
                }.get(code, f"nvmlInit failed: {exc}")
                raise _unavailable(reason) from exc
        _REFCOUNT[key] = _REFCOUNT.get(key, 0) + 1


def nvml_release(nvml: ModuleType) -> None:
    """Drops one reference; calls nvmlShutdown when the last user in this process releases."""
    with _LOCK:
        _check_pid()
        key = nvml
        n = _REFCOUNT.get(key, 0)
        if n <= 0:
            return
        if n == 1:
            _REFCOUNT.pop(key, None)
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass
        else:
            _REFCOUNT[key] = n - 1


def nvml_refcount(nvml: ModuleType) -> int:
    """Returns how many open users hold NVML initialised in this process."""
    with _LOCK:
        _check_pid()
        return _REFCOUNT.get(nvml, 0)


def _to_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlDevice:
    """One NVIDIA GPU read through NVML.

    ``index`` is the logical position (engine device i, after CUDA_VISIBLE_DEVICES); ``nvml_index`` the
    physical NVML index. Unsupported quantities return None (cached after the first NOT_SUPPORTED); any
    other NVMLError propagates to the caller (the sampler records it and stops).
    """

    def __init__(self, nvml: ModuleType, handle: Any, *, index: int = 0, nvml_index: int | None = None) -> None:
        self.nvml = nvml
        self.handle = handle
        self.index = index
        self.nvml_index = index if nvml_index is None else nvml_index
        self._uuid = _to_str(nvml.nvmlDeviceGetUUID(handle))
        self._name = _to_str(nvml.nvmlDeviceGetName(handle))
        self._unsupported: set[str] = set()
        self.power_source: str | None = None  # 'instant_field' or 'power_usage' once power was read
        self._closed = False

    # -- identity -------------------------------------------------------------------------------
    @property
    def uuid(self) -> str:
        """Returns the NVML UUID ('GPU-…')."""
        return self._uuid

    @property
    def name(self) -> str:
        """Returns the product name."""
        return self._name

    @property
    def kind(self) -> DeviceKindName:
        """Returns 'nvml'."""
        return "nvml"

    # -- helpers --------------------------------------------------------------------------------
    def _call(self, key: str, fn_name: str, *args: Any) -> Any:
        """Calls an NVML function; returns None when unsupported (remembered), re-raises other errors."""
        if key in self._unsupported:
            return None
        fn = getattr(self.nvml, fn_name, None)
        if fn is None:
            self._unsupported.add(key)
            return None
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError as exc:
            if getattr(exc, "value", None) in (self.nvml.NVML_ERROR_NOT_SUPPORTED,
                                              getattr(self.nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)):
                self._unsupported.add(key)
                return None
            raise

    def supports(self, key: str) -> bool:
        """Returns False once a quantity ('energy', 'power_instant', ...) was found unsupported."""
        return key not in self._unsupported

    # -- reads ----------------------------------------------------------------------------------
    def energy_mj(self) -> int | None:
        """Returns the cumulative energy counter (nvmlDeviceGetTotalEnergyConsumption), mJ; None if unsupported."""
        value = self._call("energy", "nvmlDeviceGetTotalEnergyConsumption")
        return None if value is None else int(value)

    def instant_power_w(self) -> float | None:
        """Returns NVML_FI_DEV_POWER_INSTANT, W; None when the field is unsupported."""
        if "power_instant" in self._unsupported:
            return None
        fid = getattr(self.nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if fid is None or not hasattr(self.nvml, "nvmlDeviceGetFieldValues"):
            self._unsupported.add("power_instant")
            return None
        try:
            value = self.nvml.nvmlDeviceGetFieldValues(self.handle, [fid])[0]
        except self.nvml.NVMLError as exc:
            if getattr(exc, "value", None) == self.nvml.NVML_ERROR_NOT_SUPPORTED:
                self._unsupported.add("power_instant")
                return None
            raise
        if value.nvmlReturn != self.nvml.NVML_SUCCESS:
            if value.nvmlReturn == self.nvml.NVML_ERROR_NOT_SUPPORTED:
                self._unsupported.add("power_instant")
                return None
            raise self.nvml.NVMLError(value.nvmlReturn)
        return value.value.uiVal / 1000.0

    def average_power_w(self) -> float | None:
        """Returns nvmlDeviceGetPowerUsage (a 1 s average on Ampere and newer), W; None if unsupported."""
        value = self._call("power_usage", "nvmlDeviceGetPowerUsage")
        return None if value is None else value / 1000.0

    def power_w(self) -> float | None:
        """Returns instant power (the instant field, else nvmlDeviceGetPowerUsage), W; None if neither works."""
        p = self.instant_power_w()
        if p is not None:
            self.power_source = "instant_field"
            return p
        p = self.average_power_w()
        if p is not None:
            self.power_source = "power_usage"
        return p

    def temperature_c(self) -> float | None:
        """Returns the GPU core temperature, °C."""
        value = self._call("temperature", "nvmlDeviceGetTemperature", self.nvml.NVML_TEMPERATURE_GPU)
        return None if value is None else float(value)

    def sm_clock_mhz(self) -> float | None:
        """Returns the current SM clock, MHz."""
        value = self._call("sm_clock", "nvmlDeviceGetClockInfo", self.nvml.NVML_CLOCK_SM)
        return None if value is None else float(value)

    def mem_clock_mhz(self) -> float | None:
        """Returns the current memory clock, MHz."""
        value = self._call("mem_clock", "nvmlDeviceGetClockInfo", self.nvml.NVML_CLOCK_MEM)
        return None if value is None else float(value)

    def gpu_util_pct(self) -> float | None:
        """Returns GPU utilisation over NVML's last sample period, %."""
        value = self._call("utilization", "nvmlDeviceGetUtilizationRates")
        return None if value is None else float(value.gpu)

    def _memory(self) -> Any:
        return self._call("memory", "nvmlDeviceGetMemoryInfo")

    def mem_used_mb(self) -> float | None:
        """Returns device memory in use, MB (MiB, 2**20 bytes)."""
        m = self._memory()
        return None if m is None else m.used / _MIB

    def memory_total_mb(self) -> float | None:
        """Returns device memory, MB (MiB, 2**20 bytes)."""
        m = self._memory()
        return None if m is None else m.total / _MIB

    def clock_event_reasons(self) -> int | None:
        """Returns the clock-event (throttle) reason bitmask (…ClocksEventReasons, else …ThrottleReasons)."""
        if "clock_event_reasons" not in self._unsupported and hasattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons"):
            value = self._call("clock_event_reasons", "nvmlDeviceGetCurrentClocksEventReasons")
            if value is not None:
                return int(value)
        value = self._call("throttle_reasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
        return None if value is None else int(value)

    def power_limit_w(self) -> float | None:
        """Returns the enforced power limit, W."""
        value = self._call("power_limit", "nvmlDeviceGetEnforcedPowerLimit")
        return None if value is None else value / 1000.0

    def persistence_mode(self) -> bool | None:
        """Returns persistence mode on/off (None when unknown)."""
        value = self._call("persistence_mode", "nvmlDeviceGetPersistenceMode")
        return None if value is None else value == self.nvml.NVML_FEATURE_ENABLED

    def read(self) -> DeviceReading:
        """Returns every sampled quantity (one sampler tick); NVMLErrors other than NOT_SUPPORTED propagate."""
        energy = self.energy_mj()
        return DeviceReading(
            power_w=self.power_w(),
            energy_mj=energy,
            temperature_c=self.temperature_c(),
            sm_clock_mhz=self.sm_clock_mhz(),
            mem_clock_mhz=self.mem_clock_mhz(),
            gpu_util_pct=self.gpu_util_pct(),
            mem_used_mb=self.mem_used_mb(),
            clock_event_reasons=self.clock_event_reasons(),
            power_avg_w=self.average_power_w() if energy is None else None,
        )

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Releases this device's NVML reference (nvmlShutdown when it was the last one). Idempotent."""
        if not self._closed:
            self._closed = True
            nvml_release(self.nvml)

    def __enter__(self) -> NvmlDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NvmlDevice(index={self.index}, nvml_index={self.nvml_index}, uuid={self._uuid!r}, name={self._name!r})"


def _split(spec: str | Sequence[str] | None) -> list[str] | None:
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    items = [s.strip() for s in items if s.strip()]
    if len(items) == 1 and items[0].lower() == "all":
        return None
    return items


def visible_nvml_indices(nvml: ModuleType, env: Mapping[str, str]) -> list[int]:
    """Returns the physical NVML indices visible to CUDA, in CUDA's logical order.

    ``CUDA_VISIBLE_DEVICES`` may list indices or UUIDs / unique UUID prefixes ('GPU-8f2…'); unset means
    all devices. Raises NvmlUnavailableError (MIG) or ValueError (unknown entry) naming the value and fix.
    """
    count = int(nvml.nvmlDeviceGetCount())
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count))
    entries = [e.strip() for e in raw.split(",") if e.strip()]
    uuids: list[str] | None = None
    out: list[int] = []
    for entry in entries:
        if entry.lstrip("-").isdigit():
            i = int(entry)
            if not 0 <= i < count:
                raise ValueError(
                    f"CUDA_VISIBLE_DEVICES={raw!r}: index {i} does not exist (NVML sees {count} GPUs, 0..{count - 1}); "
                    "fix CUDA_VISIBLE_DEVICES or unset it"
                )
            out.append(i)
            continue
        if entry.startswith("MIG"):
            raise NvmlUnavailableError(
                f"CUDA_VISIBLE_DEVICES={raw!r} names a MIG instance ({entry}); NVML cannot measure the energy of "
                "MIG slices. Measure the whole GPU: set CUDA_VISIBLE_DEVICES to the parent GPU's index or UUID"
            )
        if uuids is None:
            uuids = [_to_str(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
        matches = [i for i, u in enumerate(uuids) if u == entry or u.startswith(entry)
                   or u.removeprefix("GPU-").startswith(entry)]
        if len(matches) != 1:
            raise ValueError(
                f"CUDA_VISIBLE_DEVICES={raw!r}: entry {entry!r} matches {len(matches)} GPUs "
                f"(NVML UUIDs: {', '.join(uuids)}); use a full UUID or an index"
            )
        out.append(matches[0])
    return out


def open_nvml_devices(
    spec: str | Sequence[str] | None = None,
    nvml: ModuleType | None = None,
    env: Mapping[str, str] = os.environ,
) -> list[NvmlDevice]:
    """Opens NVML devices; returns them in the order asked.

    ``spec``: None / 'all' = every GPU visible to CUDA; otherwise a comma-separated string or a list of
    entries, each a logical index (engine device i, counted after CUDA_VISIBLE_DEVICES) or a UUID
    ('GPU-…', or a unique prefix). Each device holds one NVML reference; call ``close()`` on each (or use
    ``close_devices``). Raises NvmlUnavailableError when NVML is missing, ValueError for unknown entries.
    """
    module = load_nvml(nvml)
    nvml_acquire(module)
    try:
        visible = visible_nvml_indices(module, env)
        wanted = _split(spec)
        physical: list[int] = []
        if wanted is None:
            physical = list(visible)
        else:
            all_uuids: list[str] | None = None
            for entry in wanted:
                if entry.isdigit():
                    i = int(entry)
                    if i >= len(visible):
                        raise ValueError(
                            f"devices={entry!r}: logical GPU {i} does not exist; {len(visible)} GPU(s) are visible "
                            f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}); use 0..{len(visible) - 1} or a UUID"
                        )
                    physical.append(visible[i])
                    continue
                if all_uuids is None:
                    n = int(module.nvmlDeviceGetCount())
                    all_uuids = [_to_str(module.nvmlDeviceGetUUID(module.nvmlDeviceGetHandleByIndex(i))) for i in range(n)]
                matches = [i for i, u in enumerate(all_uuids) if u == entry or u.startswith(entry)]
                if len(matches) != 1:
                    raise ValueError(
                        f"devices={entry!r} matches {len(matches)} GPUs (NVML UUIDs: {', '.join(all_uuids)}); "
                        "give a full UUID, a unique prefix, or a logical index"
                    )
                physical.append(matches[0])
        devices: list[NvmlDevice] = []
        try:
            for logical, p in enumerate(physical):
                nvml_acquire(module)  # one reference per device
                try:
                    handle = module.nvmlDeviceGetHandleByIndex(p)
                    devices.append(NvmlDevice(module, handle, index=logical, nvml_index=p))
                except BaseException:
                    nvml_release(module)
                    raise
        except BaseException:
            close_devices(devices)
            raise
        return devices
    finally:
        nvml_release(module)  # the guard reference taken above; devices keep NVML initialised

def close_devices(devices: Sequence[Any]) -> None:
    """Closes every device that has a ``close()`` (NVML references are released)."""
    for d in devices:
        close = getattr(d, "close", None)
        if close is not None:
            close()
