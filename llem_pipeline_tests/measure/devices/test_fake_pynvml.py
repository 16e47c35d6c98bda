"""The fake pynvml: NVML error model, error injection, installation into sys.modules."""

from __future__ import annotations

import sys

import pytest

from llem_pipeline.measure.devices.fake_pynvml import ErrorInjection, FakePynvml, install_fake_pynvml
from llem_pipeline.measure.devices.simulated import FakeClock, SimulatedDevice


def _fake(**kw) -> tuple[FakeClock, FakePynvml]:
    clock = FakeClock(0.0)
    return clock, FakePynvml([SimulatedDevice(100.0, clock=clock), SimulatedDevice(200.0, index=1, clock=clock)], **kw)


def test_error_codes_map_to_subclasses_and_calls_need_init():
    _, f = _fake()
    e = f.NVMLError(f.NVML_ERROR_NOT_SUPPORTED)
    assert isinstance(e, f.NVMLError_NotSupported) and e.value == 3 and str(e) == "Not Supported"
    with pytest.raises(f.NVMLError_Uninitialized):
        f.nvmlDeviceGetCount()
    f.nvmlInit()
    assert f.nvmlDeviceGetCount() == 2
    with pytest.raises(f.NVMLError_InvalidArgument):
        f.nvmlDeviceGetHandleByIndex(2)
    with pytest.raises(f.NVMLError_NotFound):
        f.nvmlDeviceGetHandleByUUID("GPU-nope")
    h = f.nvmlDeviceGetHandleByUUID(f.uuids[1])
    assert f.nvmlDeviceGetIndex(h) == 1 and f.nvmlDeviceGetName(h) == "Simulated GPU"
    assert f.nvmlSystemGetDriverVersion() and f.nvmlSystemGetNVMLVersion()
    f.nvmlShutdown()
    assert f.init_count == 0


def test_field_values_report_per_field_errors_like_the_binding():
    clock, f = _fake(unsupported=["power_instant"])
    f.nvmlInit()
    clock.set(2.0)
    h = f.nvmlDeviceGetHandleByIndex(0)
    inst, avg, other = f.nvmlDeviceGetFieldValues(h, [f.NVML_FI_DEV_POWER_INSTANT,
                                                      (f.NVML_FI_DEV_POWER_AVERAGE, f.NVML_POWER_SCOPE_GPU), 999])
    assert inst.nvmlReturn == f.NVML_ERROR_NOT_SUPPORTED
    assert avg.nvmlReturn == f.NVML_SUCCESS and avg.value.uiVal == 100_000
    assert other.nvmlReturn == f.NVML_ERROR_NOT_SUPPORTED


def test_error_injection_at_calls_after_calls_times_and_probability():
    clock, f = _fake(errors=[
        ErrorInjection(function="nvmlDeviceGetPowerUsage", at_calls=[2]),
        ErrorInjection(function="nvmlDeviceGetTemperature", after_calls=1, error_code=15),
        ErrorInjection(function="nvmlDeviceGetTotalEnergyConsumption", during_s=[(1.0, 2.0)], device_index=1),
    ])
    f.nvmlInit()
    h0, h1 = f.nvmlDeviceGetHandleByIndex(0), f.nvmlDeviceGetHandleByIndex(1)
    f.nvmlDeviceGetPowerUsage(h0)
    with pytest.raises(f.NVMLError_Unknown):
        f.nvmlDeviceGetPowerUsage(h0)
    f.nvmlDeviceGetPowerUsage(h0)
    f.nvmlDeviceGetTemperature(h0, 0)
    with pytest.raises(f.NVMLError_GpuIsLost):
        f.nvmlDeviceGetTemperature(h1, 0)
    clock.set(1.5)
    f.nvmlDeviceGetTotalEnergyConsumption(h0)
    with pytest.raises(f.NVMLError):
        f.nvmlDeviceGetTotalEnergyConsumption(h1)
    clock.set(2.5)
    assert f.nvmlDeviceGetTotalEnergyConsumption(h1) == 500_000  # 200 W × 2.5 s


def test_probabilistic_injection_is_seeded():
    def pattern(seed: int) -> list[bool]:
        _, f = _fake(errors=[ErrorInjection(probability=0.3, seed=seed)])
        f.nvmlInit()
        h = f.nvmlDeviceGetHandleByIndex(0)
        out = []
        for _ in range(40):
            try:
                f.nvmlDeviceGetPowerUsage(h)
                out.append(False)
            except f.NVMLError:
                out.append(True)
        return out

    assert pattern(1) == pattern(1)
    assert pattern(1) != pattern(2)
    assert 3 <= sum(pattern(1)) <= 25


def test_install_puts_the_fake_in_sys_modules_and_restores():
    before = sys.modules.get("pynvml")
    clock = FakeClock()
    with install_fake_pynvml([SimulatedDevice(42.0, clock=clock)]) as fake:
        import pynvml

        assert pynvml is fake
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        assert pynvml.nvmlDeviceGetPowerUsage(h) == 42_000
        assert hasattr(pynvml, "_nvmlGetFunctionPointer")  # Zeus checks for the official binding
        assert pynvml.c_nvmlMemory_t(-1, -1, -1).total == -1  # CodeCarbon's fallback shape
    assert sys.modules.get("pynvml") is before


def test_unknown_unsupported_key_is_rejected():
    with pytest.raises(ValueError, match="unsupported"):
        FakePynvml([], unsupported=["warp_drive"])
