"""FakePynvml(gpu_settings=...): the host settings llem doctor reads, their defaults, and pickling."""

from __future__ import annotations

import pickle

import pytest

from llem_pipeline.measure.devices.fake_pynvml import FakeGpuSettings, FakeProcess, FakePynvml
from llem_pipeline.measure.devices.simulated import SimulatedDevice


def test_defaults_are_a_healthy_gpu_and_settings_apply_per_device():
    f = FakePynvml([SimulatedDevice(100.0, power_limit_w=500.0), SimulatedDevice(100.0, index=1)], gpu_settings=[
        None, FakeGpuSettings(default_power_limit_w=600.0, applications_clocks_mhz=(1410.0, 2619.0), ecc_mode=None,
                              mig_mode=(1, 1), processes=(FakeProcess(7, "a", 64.0), FakeProcess(8, "b", None, "graphics")))])
    f.nvmlInit()
    h0, h1 = f.nvmlDeviceGetHandleByIndex(0), f.nvmlDeviceGetHandleByIndex(1)
    assert f.nvmlDeviceGetPowerManagementDefaultLimit(h0) == f.nvmlDeviceGetEnforcedPowerLimit(h0) == 500_000
    assert f.nvmlDeviceGetPowerManagementDefaultLimit(h1) == 600_000
    assert f.nvmlDeviceGetEccMode(h0) == [1, 1] and f.nvmlDeviceGetMigMode(h0) == [0, 0]
    assert f.nvmlDeviceGetComputeRunningProcesses(h0) == [] and f.nvmlDeviceGetGraphicsRunningProcesses(h0) == []
    assert f.nvmlDeviceGetApplicationsClock(h0, f.NVML_CLOCK_GRAPHICS) == 1755
    assert f.nvmlDeviceGetApplicationsClock(h1, f.NVML_CLOCK_GRAPHICS) == 1410
    assert f.nvmlDeviceGetDefaultApplicationsClock(h1, f.NVML_CLOCK_MEM) == 2619
    assert f.nvmlDeviceGetMaxClockInfo(h1, f.NVML_CLOCK_SM) == 1980
    with pytest.raises(f.NVMLError_NotSupported):
        f.nvmlDeviceGetEccMode(h1)
    assert f.nvmlDeviceGetMigMode(h1) == [f.NVML_DEVICE_MIG_ENABLE, 1]
    (compute,) = f.nvmlDeviceGetComputeRunningProcesses(h1)
    (graphics,) = f.nvmlDeviceGetGraphicsRunningProcesses(h1)
    assert (compute.pid, compute.usedGpuMemory, graphics.pid, graphics.usedGpuMemory) == (7, 64 * 2**20, 8, None)
    assert f.nvmlSystemGetProcessName(8) == "b"
    with pytest.raises(f.NVMLError_NotFound):
        f.nvmlSystemGetProcessName(9)
    with pytest.raises(ValueError, match="gpu_settings"):
        FakePynvml([SimulatedDevice(1.0)], gpu_settings=[None, None])


def test_gpu_settings_survive_pickling():
    f = FakePynvml([SimulatedDevice(100.0)], gpu_settings=[FakeGpuSettings(processes=(FakeProcess(7),))])
    g = pickle.loads(pickle.dumps(f))
    g.nvmlInit()
    assert g.gpu_settings == f.gpu_settings
    assert [p.pid for p in g.nvmlDeviceGetComputeRunningProcesses(g.nvmlDeviceGetHandleByIndex(0))] == [7]
