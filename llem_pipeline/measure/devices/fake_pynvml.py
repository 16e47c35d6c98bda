"""A fake ``pynvml`` module built on SimulatedDevices, with error injection.

``FakePynvml`` is a real ``types.ModuleType`` exposing the names of nvidia-ml-py that this project and the
peers we benchmark (Zeus, CodeCarbon) call on the NVML path, with the same units (mW, mJ, bytes, MHz) and
the same error model (``NVMLError(code)`` returns the ``NVMLError_*`` subclass for the code). Tests and
benches inject it as the ``nvml`` module of ``NvmlDevice``, or put it into ``sys.modules['pynvml']`` with
``install_fake_pynvml`` so that third-party code importing ``pynvml`` talks to the simulated GPUs.

``nvmlDeviceGetPowerUsage`` and ``NVML_FI_DEV_POWER_AVERAGE`` return the 1 s moving average of power
(what Ampere-and-newer GPUs report), ``NVML_FI_DEV_POWER_INSTANT`` the instant power.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from llem_pipeline.measure.devices.simulated import SimulatedDevice

# -- constants (values as in nvml.h / nvidia-ml-py) ----------------------------------------------
NVML_SUCCESS = 0
_ERROR_CODES = {
    "UNINITIALIZED": 1, "INVALID_ARGUMENT": 2, "NOT_SUPPORTED": 3, "NO_PERMISSION": 4,
    "ALREADY_INITIALIZED": 5, "NOT_FOUND": 6, "INSUFFICIENT_SIZE": 7, "INSUFFICIENT_POWER": 8,
    "DRIVER_NOT_LOADED": 9, "TIMEOUT": 10, "IRQ_ISSUE": 11, "LIBRARY_NOT_FOUND": 12,
    "FUNCTION_NOT_FOUND": 13, "CORRUPTED_INFOROM": 14, "GPU_IS_LOST": 15, "RESET_REQUIRED": 16,
    "OPERATING_SYSTEM": 17, "LIB_RM_VERSION_MISMATCH": 18, "IN_USE": 19, "MEMORY": 20, "NO_DATA": 21,
    "NOT_READY": 27, "GPU_NOT_FOUND": 28, "UNKNOWN": 999,
}
_CONSTANTS = {
    "NVML_SUCCESS": NVML_SUCCESS,
    **{f"NVML_ERROR_{k}": v for k, v in _ERROR_CODES.items()},
    "NVML_FEATURE_DISABLED": 0, "NVML_FEATURE_ENABLED": 1,
    "NVML_TEMPERATURE_GPU": 0,
    "NVML_CLOCK_GRAPHICS": 0, "NVML_CLOCK_SM": 1, "NVML_CLOCK_MEM": 2, "NVML_CLOCK_VIDEO": 3,
    "NVML_FI_DEV_POWER_AVERAGE": 185, "NVML_FI_DEV_POWER_INSTANT": 186,
    "NVML_POWER_SCOPE_GPU": 0, "NVML_POWER_SCOPE_MODULE": 1, "NVML_POWER_SCOPE_MEMORY": 2,
    "NVML_VALUE_TYPE_DOUBLE": 0, "NVML_VALUE_TYPE_UNSIGNED_INT": 1, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": 3,
    "NVML_DEVICE_ARCH_VOLTA": 5, "NVML_DEVICE_ARCH_AMPERE": 7, "NVML_DEVICE_ARCH_HOPPER": 9,
    "NVML_COMPUTEMODE_DEFAULT": 0,
}
_ERR_TEXT = {
    1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported", 4: "Insufficient Permissions",
    5: "Already Initialized", 6: "Not Found", 9: "Driver Not Loaded", 10: "Timeout",
    12: "NVML Shared Library Not Found", 13: "Function Not Found", 15: "GPU is lost", 999: "Unknown Error",
}

# Names of device functions that read a quantity, for `unsupported=` and error injection.
SUPPORT_KEYS = ("energy", "power_instant", "power_usage", "temperature", "clocks", "utilization", "memory",
                "clock_event_reasons", "power_limit", "persistence_mode")


def _make_error_classes() -> tuple[type[Exception], dict[str, type[Exception]]]:
    class NVMLError(Exception):
        """Fake NVML error: ``NVMLError(code)`` returns an instance of the code's subclass; ``.value`` = code."""

        _valClassMapping: dict[int, type] = {}

        def __new__(cls, value: int):
            if cls is NVMLError:
                cls = NVMLError._valClassMapping.get(value, cls)
            obj = Exception.__new__(cls)
            obj.value = value
            return obj

        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return _ERR_TEXT.get(self.value, f"NVML error {self.value}")

        def __reduce__(self):
            return (NVMLError, (self.value,))

    subclasses: dict[str, type[Exception]] = {}
    for key, code in _ERROR_CODES.items():
        cls_name = "NVMLError_" + "".join(part.capitalize() for part in key.split("_"))
        sub = type(cls_name, (NVMLError,), {})
        NVMLError._valClassMapping[code] = sub
        subclasses[cls_name] = sub
    return NVMLError, subclasses


@dataclass
class ErrorInjection:
    """When to raise ``NVMLError(error_code)`` from the fake.

    ``function``: NVML function name to affect (None = every call that takes a device handle). ``device_index``: only this
    fake device (None = all). ``at_calls``: 1-based ordinals of the affected calls. ``after_calls``: every
    affected call after this many. ``during_s``: (start, end) spans in seconds since the fake's devices
    started. ``probability``: seeded chance per affected call.
    """

    function: str | None = None
    device_index: int | None = None
    at_calls: Sequence[int] = ()
    after_calls: int | None = None
    during_s: Sequence[tuple[float, float]] = ()
    probability: float = 0.0
    seed: int = 0
    error_code: int = _ERROR_CODES["UNKNOWN"]
    _count: int = field(default=0, init=False)
    _rng: np.random.Generator | None = field(default=None, init=False)

    def fires(self, function: str, device: SimulatedDevice | None) -> bool:
        """Returns True when this call must fail (and counts it)."""
        if self.function is None and device is None:
            return False  # rules without a function name only hit device calls, not nvmlInit & co.
        if self.function is not None and self.function != function:
            return False
        if self.device_index is not None and (device is None or device.index != self.device_index):
            return False
        self._count += 1
        n = self._count
        if n in self.at_calls:
            return True
        if self.after_calls is not None and n > self.after_calls:
            return True
        if device is not None and self.during_s:
            t = device.elapsed_s()
            if any(a <= t < b for a, b in self.during_s):
                return True
        if self.probability > 0:
            if self._rng is None:
                self._rng = np.random.default_rng(self.seed)
            return bool(self._rng.random() < self.probability)
        return False


class _Handle:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<fake nvmlDevice_t {self.index}>"


class _Struct:
    """A ctypes-struct-like record: keyword fields as attributes."""

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__})"


class c_nvmlMemory_t(_Struct):
    """Memory info: total, free, used, bytes."""

    def __init__(self, total: int = 0, free: int = 0, used: int = 0) -> None:
        super().__init__(total=total, free=free, used=used)


class c_nvmlUtilization_t(_Struct):
    """Utilisation: gpu, memory, %."""


class c_nvmlValue_t(_Struct):
    """Field value union: dVal, uiVal, ulVal, ullVal, sllVal, siVal, usVal."""


class c_nvmlFieldValue_t(_Struct):
    """One field value: fieldId, scopeId, timestamp (µs), latencyUsec, valueType, nvmlReturn, value."""


class FakePynvml(types.ModuleType):
    """The fake module. ``devices`` are SimulatedDevices in NVML index order.

    ``uuids``: NVML UUIDs to report (default 'GPU-' + the simulated UUID without 'SIM-'). ``unsupported``:
    keys of SUPPORT_KEYS that raise NVMLError_NotSupported (or, for fields, return NOT_SUPPORTED in
    ``nvmlReturn``). ``errors``: ErrorInjection rules. ``legacy_throttle_api``: remove
    ``nvmlDeviceGetCurrentClocksEventReasons`` (old drivers/bindings). ``library_missing``: every call,
    ``nvmlInit`` included, raises NVMLError_LibraryNotFound. ``calls`` counts every call by name.
    ``gpu_settings``: per device (same order as ``devices``; missing or None = FakeGpuSettings()), the
    host settings ``llem doctor`` checks: default power limit, application/max clocks, ECC, MIG and the
    processes NVML lists on the GPU.
    """

    def __init__(
        self,
        devices: Sequence[SimulatedDevice],
        *,
        uuids: Sequence[str] | None = None,
        unsupported: Sequence[str] = (),
        errors: Sequence[ErrorInjection] = (),
        legacy_throttle_api: bool = False,
        library_missing: bool = False,
        driver_version: str = "580.95.05",
        nvml_version: str = "13.580.95.05",
        gpu_settings: Sequence[FakeGpuSettings | None] = (),
    ) -> None:
        super().__init__("pynvml", "Fake nvidia-ml-py module backed by llem_pipeline SimulatedDevices")
        bad = set(unsupported) - set(SUPPORT_KEYS)
        if bad:
            raise ValueError(f"FakePynvml: unsupported={sorted(bad)} not in {SUPPORT_KEYS}")
        self.__file__ = __file__
        self.sim_devices = list(devices)
        self.uuids = list(uuids) if uuids else ["GPU-" + d.uuid.removeprefix("SIM-") for d in self.sim_devices]
        self.unsupported = set(unsupported)
        self.errors = list(errors)
        self.library_missing = library_missing
        self.driver_version = driver_version
        self.nvml_version = nvml_version
        self.calls: Counter[str] = Counter()
        self.init_count = 0
        self._lock = threading.Lock()
        for k, v in _CONSTANTS.items():
            setattr(self, k, v)
        self.NVMLError, subclasses = _make_error_classes()
        for name, cls in subclasses.items():
            setattr(self, name, cls)
        self.c_nvmlMemory_t = c_nvmlMemory_t
        self.c_nvmlFieldValue_t = c_nvmlFieldValue_t
        self.legacy_throttle_api = legacy_throttle_api
        if legacy_throttle_api:
            self.__class__ = _LegacyFakePynvml
        self._init_gpu_settings(gpu_settings)

    def __reduce__(self):
        """Pickles as the arguments that rebuild this fake in another process (a sampler process): the same
        simulated GPUs, error rules (with their counts so far) and options; calls and init count start at 0.
        Raises TypeError when a simulated GPU runs on a clock other than ``time.perf_counter`` (a test
        clock): another process could not read the same values."""
        import time

        odd = [d.index for d in self.sim_devices if d.clock is not time.perf_counter]
        if odd:
            raise TypeError(f"FakePynvml: simulated GPU(s) {odd} run on a test clock; they cannot be read from another process")
        return (_rebuild_fake, (self.sim_devices, {
            "uuids": self.uuids, "unsupported": sorted(self.unsupported), "errors": self.errors,
            "legacy_throttle_api": self.legacy_throttle_api, "library_missing": self.library_missing,
            "driver_version": self.driver_version, "nvml_version": self.nvml_version,
            "gpu_settings": self.gpu_settings}))

    # -- plumbing -------------------------------------------------------------------------------
    def _enter(self, function: str, handle: _Handle | None = None, *, needs_init: bool = True) -> SimulatedDevice | None:
        with self._lock:
            self.calls[function] += 1
        if self.library_missing:
            raise self.NVMLError(_ERROR_CODES["LIBRARY_NOT_FOUND"])
        if needs_init and self.init_count <= 0:
            raise self.NVMLError(_ERROR_CODES["UNINITIALIZED"])
        device = None
        if handle is not None:
            if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self.sim_devices):
                raise self.NVMLError(_ERROR_CODES["INVALID_ARGUMENT"])
            device = self.sim_devices[handle.index]
        for rule in self.errors:
            if rule.fires(function, device):
                raise self.NVMLError(rule.error_code)
        return device

    def _check_supported(self, key: str) -> None:
        if key in self.unsupported:
            raise self.NVMLError(_ERROR_CODES["NOT_SUPPORTED"])

    @staticmethod
    def _avg_power_mw(device: SimulatedDevice) -> int:
        t = device.elapsed_s()
        if t <= 1e-6:
            return round(device.power_at(t) * 1000.0)
        span = min(1.0, t)
        return round((device.model.cumulative_j(t) - device.model.cumulative_j(t - span)) / span * 1000.0)

    # -- library --------------------------------------------------------------------------------
    def _nvmlGetFunctionPointer(self, name: str):
        """Exists so that tools checking for the official bindings (Zeus) accept the fake."""
        return getattr(self, name)

    def nvmlInit(self) -> None:
        """Initialise (reference counted, like NVML)."""
        self._enter("nvmlInit", needs_init=False)
        with self._lock:
            self.init_count += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        """Same as nvmlInit."""
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        """Shut down (decrements the init count; NVML_ERROR_UNINITIALIZED below zero)."""
        self._enter("nvmlShutdown")
        with self._lock:
            self.init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        """Returns the driver version string."""
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        """Returns the NVML version string."""
        self._enter("nvmlSystemGetNVMLVersion")
        return self.nvml_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        """Returns the CUDA driver version as an int (13000 = 13.0)."""
        self._enter("nvmlSystemGetCudaDriverVersion")
        return 13000

    def nvmlErrorString(self, code: int) -> str:
        """Returns the text of an error code."""
        return _ERR_TEXT.get(code, f"NVML error {code}")

    # -- handles --------------------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        """Returns the number of fake GPUs."""
        self._enter("nvmlDeviceGetCount")
        return len(self.sim_devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        """Returns the handle of the GPU at NVML index ``index``."""
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= int(index) < len(self.sim_devices):
            raise self.NVMLError(_ERROR_CODES["INVALID_ARGUMENT"])
        return _Handle(int(index))

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        """Returns the handle of the GPU with this UUID (NVML_ERROR_NOT_FOUND otherwise)."""
        self._enter("nvmlDeviceGetHandleByUUID")
        if isinstance(uuid, bytes):
            uuid = uuid.decode()
        for i, u in enumerate(self.uuids):
            if u == uuid:
                return _Handle(i)
        raise self.NVMLError(_ERROR_CODES["NOT_FOUND"])

    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        """Returns the NVML index of a handle."""
        self._enter("nvmlDeviceGetIndex", handle)
        return handle.index

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        """Returns the GPU UUID ('GPU-…')."""
        self._enter("nvmlDeviceGetUUID", handle)
        return self.uuids[handle.index]

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        """Returns the product name."""
        return self._enter("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetArchitecture(self, handle: _Handle) -> int:
        """Returns NVML_DEVICE_ARCH_HOPPER."""
        self._enter("nvmlDeviceGetArchitecture", handle)
        return self.NVML_DEVICE_ARCH_HOPPER

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        """Returns (9, 0)."""
        self._enter("nvmlDeviceGetCudaComputeCapability", handle)
        return (9, 0)

    def nvmlDeviceGetC2cModeInfoV(self, handle: _Handle):
        """Not a Grace Hopper module: raises NVMLError_NotSupported."""
        self._enter("nvmlDeviceGetC2cModeInfoV", handle)
        raise self.NVMLError(_ERROR_CODES["NOT_SUPPORTED"])

    # -- energy and power -----------------------------------------------------------------------
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        """Returns the energy counter, mJ."""
        d = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        self._check_supported("energy")
        value = d.energy_mj()
        if value is None:
            raise self.NVMLError(_ERROR_CODES["NOT_SUPPORTED"])
        return value

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        """Returns the 1 s average power, mW."""
        d = self._enter("nvmlDeviceGetPowerUsage", handle)
        self._check_supported("power_usage")
        return self._avg_power_mw(d)

    def nvmlDeviceGetFieldValues(self, handle: _Handle, fieldIds) -> list[c_nvmlFieldValue_t]:
        """Returns one c_nvmlFieldValue_t per requested field (ids or (id, scope) pairs); per-field errors
        are in ``nvmlReturn`` like the real binding. Supported: POWER_INSTANT and POWER_AVERAGE, mW."""
        d = self._enter("nvmlDeviceGetFieldValues", handle)
        out = []
        t = d.elapsed_s()
        for f in fieldIds:
            fid, scope = (f if isinstance(f, tuple | list) else (f, 0))
            ret, val = NVML_SUCCESS, 0
            if fid == self.NVML_FI_DEV_POWER_INSTANT and scope == 0 and "power_instant" not in self.unsupported:
                val = round(d.power_at(t) * 1000.0)
            elif fid == self.NVML_FI_DEV_POWER_AVERAGE and scope == 0 and "power_usage" not in self.unsupported:
                val = self._avg_power_mw(d)
            else:
                ret = _ERROR_CODES["NOT_SUPPORTED"]
            out.append(c_nvmlFieldValue_t(
                fieldId=fid, scopeId=scope, timestamp=int((d.start_s + t) * 1e6), latencyUsec=0,
                valueType=self.NVML_VALUE_TYPE_UNSIGNED_INT, nvmlReturn=ret,
                value=c_nvmlValue_t(uiVal=val, ulVal=val, ullVal=val, dVal=float(val), siVal=val, sllVal=val, usVal=val),
            ))
        return out

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        """Returns the enforced power limit, mW."""
        d = self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        self._check_supported("power_limit")
        return round(d.power_limit_w() * 1000)

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        """Returns the power management limit, mW."""
        d = self._enter("nvmlDeviceGetPowerManagementLimit", handle)
        return round(d.power_limit_w() * 1000)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        """Returns the default power limit, mW (FakeGpuSettings.default_power_limit_w, else the enforced limit)."""
        d = self._enter("nvmlDeviceGetPowerManagementDefaultLimit", handle)
        return round(self._default_power_limit_w(handle.index, d) * 1000)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        """Returns [min, max] power limit, mW."""
        d = self._enter("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        return [200_000, round(d.power_limit_w() * 1000)]

    # -- other quantities -----------------------------------------------------------------------
    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        """Returns the GPU temperature, °C (integer, like NVML)."""
        d = self._enter("nvmlDeviceGetTemperature", handle)
        self._check_supported("temperature")
        if sensor != 0:
            raise self.NVMLError(_ERROR_CODES["INVALID_ARGUMENT"])
        return round(d.temperature_at(d.elapsed_s()))

    def nvmlDeviceGetTemperatureV(self, handle: _Handle, sensor: int) -> int:
        """Same as nvmlDeviceGetTemperature, °C."""
        return self.nvmlDeviceGetTemperature(handle, sensor)

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        """Returns the current clock of a domain (NVML_CLOCK_GRAPHICS/SM/MEM), MHz."""
        d = self._enter("nvmlDeviceGetClockInfo", handle)
        self._check_supported("clocks")
        t = d.elapsed_s()
        if clock_type in (0, 1):
            return round(d.sm_clock_at(t))
        if clock_type == 2:
            return round(d.base_mem_clock_mhz)
        raise self.NVMLError(_ERROR_CODES["INVALID_ARGUMENT"])

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> c_nvmlUtilization_t:
        """Returns utilisation (.gpu, .memory), %."""
        d = self._enter("nvmlDeviceGetUtilizationRates", handle)
        self._check_supported("utilization")
        u = round(d.util_at(d.elapsed_s()))
        return c_nvmlUtilization_t(gpu=u, memory=u // 2)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version=None) -> c_nvmlMemory_t:
        """Returns memory (.total, .free, .used), bytes."""
        d = self._enter("nvmlDeviceGetMemoryInfo", handle)
        self._check_supported("memory")
        total = int(d.memory_total_mb() * 2**20)
        used = int(d.memory_used_mb * 2**20)
        return c_nvmlMemory_t(total, total - used, used)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        """Returns the clock-event reason bitmask."""
        d = self._enter("nvmlDeviceGetCurrentClocksEventReasons", handle)
        self._check_supported("clock_event_reasons")
        return d.reasons_at(d.elapsed_s())

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: _Handle) -> int:
        """Deprecated name of nvmlDeviceGetCurrentClocksEventReasons."""
        d = self._enter("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        self._check_supported("clock_event_reasons")
        return d.reasons_at(d.elapsed_s())

    def nvmlDeviceGetPersistenceMode(self, handle: _Handle) -> int:
        """Returns NVML_FEATURE_ENABLED (1) or NVML_FEATURE_DISABLED (0)."""
        d = self._enter("nvmlDeviceGetPersistenceMode", handle)
        self._check_supported("persistence_mode")
        return 1 if d.persistence_mode() else 0

    def nvmlDeviceGetComputeMode(self, handle: _Handle) -> int:
        """Returns NVML_COMPUTEMODE_DEFAULT."""
        self._enter("nvmlDeviceGetComputeMode", handle)
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list:
        """Returns the compute processes of FakeGpuSettings.processes (none by default)."""
        self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        return self._process_infos(handle.index, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list:
        """Returns the graphics processes of FakeGpuSettings.processes (none by default)."""
        self._enter("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return self._process_infos(handle.index, "graphics")

    # -- host settings that `llem doctor` checks (gpu_settings=) ----------------------------------
    def _init_gpu_settings(self, gpu_settings: Sequence[FakeGpuSettings | None]) -> None:
        if len(gpu_settings) > len(self.sim_devices):
            raise ValueError(f"FakePynvml: {len(gpu_settings)} gpu_settings for {len(self.sim_devices)} devices")
        self.gpu_settings = [s if s is not None else FakeGpuSettings() for s in gpu_settings]
        self.gpu_settings += [FakeGpuSettings()] * (len(self.sim_devices) - len(self.gpu_settings))
        for k, v in _HOST_CONSTANTS.items():
            setattr(self, k, v)
        self.c_nvmlProcessInfo_t = c_nvmlProcessInfo_t

    def _default_power_limit_w(self, index: int, device: SimulatedDevice) -> float:
        default = self.gpu_settings[index].default_power_limit_w
        return device.power_limit_w() if default is None else default

    def _process_infos(self, index: int, kind: str) -> list[c_nvmlProcessInfo_t]:
        return [c_nvmlProcessInfo_t(
                    pid=p.pid, usedGpuMemory=None if p.used_memory_mb is None else int(p.used_memory_mb * 2**20),
                    gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
                for p in self.gpu_settings[index].processes if p.kind == kind]

    def _clock_domain(self, clock_type: int) -> int:
        """Returns 0 for graphics/SM, 1 for memory (the position in the settings' (graphics, memory) pairs)."""
        if clock_type in (self.NVML_CLOCK_GRAPHICS, self.NVML_CLOCK_SM):
            return 0
        if clock_type == self.NVML_CLOCK_MEM:
            return 1
        raise self.NVMLError(_ERROR_CODES["INVALID_ARGUMENT"])

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, clock_type: int) -> int:
        """Returns the maximum clock of a domain, MHz (FakeGpuSettings.max_clocks_mhz, else the simulated
        device's base SM / memory clock)."""
        d = self._enter("nvmlDeviceGetMaxClockInfo", handle)
        self._check_supported("clocks")
        s = self.gpu_settings[handle.index]
        pair = s.max_clocks_mhz or (d.base_sm_clock_mhz, d.base_mem_clock_mhz)
        return round(pair[self._clock_domain(clock_type)])

    def nvmlDeviceGetApplicationsClock(self, handle: _Handle, clock_type: int) -> int:
        """Returns the application clock of a domain, MHz (FakeGpuSettings.applications_clocks_mhz, else
        the default application clocks)."""
        self._enter("nvmlDeviceGetApplicationsClock", handle)
        self._check_supported("clocks")
        s = self.gpu_settings[handle.index]
        pair = s.applications_clocks_mhz or s.default_applications_clocks_mhz
        return round(pair[self._clock_domain(clock_type)])

    def nvmlDeviceGetDefaultApplicationsClock(self, handle: _Handle, clock_type: int) -> int:
        """Returns the default application clock of a domain, MHz."""
        self._enter("nvmlDeviceGetDefaultApplicationsClock", handle)
        self._check_supported("clocks")
        s = self.gpu_settings[handle.index]
        return round(s.default_applications_clocks_mhz[self._clock_domain(clock_type)])

    def nvmlDeviceGetEccMode(self, handle: _Handle) -> list[int]:
        """Returns [current, pending] ECC mode (NVML_FEATURE_*); NVMLError_NotSupported when ecc_mode is None."""
        self._enter("nvmlDeviceGetEccMode", handle)
        mode = self.gpu_settings[handle.index].ecc_mode
        if mode is None:
            raise self.NVMLError(_ERROR_CODES["NOT_SUPPORTED"])
        return [int(mode[0]), int(mode[1])]

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        """Returns [current, pending] MIG mode (NVML_DEVICE_MIG_*); NVMLError_NotSupported when mig_mode is None."""
        self._enter("nvmlDeviceGetMigMode", handle)
        mode = self.gpu_settings[handle.index].mig_mode
        if mode is None:
            raise self.NVMLError(_ERROR_CODES["NOT_SUPPORTED"])
        return [int(mode[0]), int(mode[1])]

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        """Returns the name of a process listed in any device's FakeGpuSettings.processes (NVMLError_NotFound otherwise)."""
        self._enter("nvmlSystemGetProcessName")
        for s in self.gpu_settings:
            for p in s.processes:
                if p.pid == int(pid):
                    return p.name
        raise self.NVMLError(_ERROR_CODES["NOT_FOUND"])


# -- host settings that `llem doctor` checks (FakePynvml(gpu_settings=...)) ---------------------------
_HOST_CONSTANTS = {
    "NVML_DEVICE_MIG_DISABLE": 0, "NVML_DEVICE_MIG_ENABLE": 1,
    "NVML_CLOCK_ID_CURRENT": 0, "NVML_CLOCK_ID_APP_CLOCK_TARGET": 1, "NVML_CLOCK_ID_APP_CLOCK_DEFAULT": 2,
}


class c_nvmlProcessInfo_t(_Struct):
    """A process on a GPU: pid, usedGpuMemory (bytes; None when NVML cannot tell, like the binding),
    gpuInstanceId, computeInstanceId."""


@dataclass(frozen=True)
class FakeProcess:
    """A process NVML lists on a fake GPU: ``kind`` 'compute' or 'graphics'; ``used_memory_mb`` MiB (None:
    not available, which the binding reports as ``usedGpuMemory=None``)."""

    pid: int
    name: str = "python3"
    used_memory_mb: float | None = 1024.0
    kind: str = "compute"

    def __post_init__(self) -> None:
        if self.kind not in ("compute", "graphics"):
            raise ValueError(f"FakeProcess: kind={self.kind!r}; use 'compute' or 'graphics'")


@dataclass(frozen=True)
class FakeGpuSettings:
    """Host settings of one fake GPU (the defaults are a healthy H100 SXM).

    ``default_power_limit_w``: W (None = the enforced limit, i.e. not capped). Clock pairs are
    (graphics/SM, memory), MHz: ``applications_clocks_mhz`` None = the default application clocks;
    ``max_clocks_mhz`` None = the simulated device's base clocks. ``ecc_mode`` / ``mig_mode``:
    (current, pending), 1 = enabled; None = NVMLError_NotSupported. ``processes``: what
    nvmlDeviceGetCompute/GraphicsRunningProcesses list.
    """

    default_power_limit_w: float | None = None
    applications_clocks_mhz: tuple[float, float] | None = None
    default_applications_clocks_mhz: tuple[float, float] = (1755.0, 2619.0)
    max_clocks_mhz: tuple[float, float] | None = None
    ecc_mode: tuple[int, int] | None = (1, 1)
    mig_mode: tuple[int, int] | None = (0, 0)
    processes: tuple[FakeProcess, ...] = ()


class _LegacyFakePynvml(FakePynvml):
    """Old bindings/drivers: no nvmlDeviceGetCurrentClocksEventReasons (hasattr() is False)."""

    @property
    def nvmlDeviceGetCurrentClocksEventReasons(self):
        raise AttributeError("nvmlDeviceGetCurrentClocksEventReasons")


def _rebuild_fake(devices: Sequence[SimulatedDevice], kwargs: dict) -> FakePynvml:
    """Returns a FakePynvml rebuilt from what ``FakePynvml.__reduce__`` pickled."""
    return FakePynvml(devices, **kwargs)


@contextlib.contextmanager
def install_fake_pynvml(devices: Sequence[SimulatedDevice] | FakePynvml, **kwargs) -> Iterator[FakePynvml]:
    """Put a FakePynvml into ``sys.modules['pynvml']`` for the block (restores the previous entry).

    Code that imports ``pynvml`` inside the block (Zeus, CodeCarbon) gets the fake. Modules that already
    bound the real ``pynvml`` at import keep it, so import peers inside the block. Yields the fake.
    """
    fake = devices if isinstance(devices, FakePynvml) else FakePynvml(devices, **kwargs)
    previous = sys.modules.get("pynvml")
    sys.modules["pynvml"] = fake
    try:
        yield fake
    finally:
        if previous is None:
            sys.modules.pop("pynvml", None)
        else:
            sys.modules["pynvml"] = previous
