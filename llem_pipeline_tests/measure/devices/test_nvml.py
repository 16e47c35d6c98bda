"""NvmlDevice and device resolution, exercised through the fake pynvml (the real NvmlDevice code path)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading

import pytest

from llem_pipeline.measure.devices.fake_pynvml import FakePynvml
from llem_pipeline.measure.devices.nvml import (
    NvmlDevice,
    NvmlUnavailableError,
    close_devices,
    load_nvml,
    nvml_refcount,
    open_nvml_devices,
)
from llem_pipeline.measure.devices.protocol import (
    CLOCK_EVENT_GPU_IDLE,
    CLOCK_EVENT_SW_THERMAL,
    Device,
    DeviceReading,
)
from llem_pipeline.measure.devices.simulated import FakeClock, ReasonSpan, SimulatedDevice, SquareBursts
from llem_pipeline_tests.measure.sim_rig import make_rig


def test_every_method_reads_the_simulated_gpu_in_nvml_units():
    rig = make_rig(300.0, sim_kwargs={"power_limit_w": 650.0, "persistence_mode": False,
                                      "memory_used_mb": 2048.0, "memory_total_mb": 81559.0,
                                      "reason_spans": [ReasonSpan(5.0, 6.0, CLOCK_EVENT_SW_THERMAL)]})
    (dev,), sim, clock = rig.devices, rig.sims[0], rig.clock
    assert isinstance(dev, Device)
    assert dev.kind == "nvml"
    assert dev.uuid == "GPU-" + sim.uuid.removeprefix("SIM-")
    assert dev.name == "Simulated GPU"
    clock.advance(2.05)  # 2.05 s since start: last counter edge at 2.0 s
    assert dev.energy_mj() == 600_000
    assert dev.instant_power_w() == pytest.approx(300.0)
    assert dev.average_power_w() == pytest.approx(300.0)
    assert dev.power_w() == pytest.approx(300.0) and dev.power_source == "instant_field"
    assert dev.temperature_c() == pytest.approx(round(sim.temperature_at(2.05)))
    assert dev.sm_clock_mhz() == 1980.0
    assert dev.mem_clock_mhz() == 2619.0
    assert dev.gpu_util_pct() == pytest.approx(round(sim.util_at(2.05)))
    assert dev.mem_used_mb() == pytest.approx(2048.0)
    assert dev.memory_total_mb() == pytest.approx(81559.0)
    assert dev.clock_event_reasons() == 0
    assert dev.power_limit_w() == pytest.approx(650.0)
    assert dev.persistence_mode() is False
    clock.advance(3.5)  # inside the thermal span: reason bit and reduced SM clock
    assert dev.clock_event_reasons() & CLOCK_EVENT_SW_THERMAL
    assert dev.sm_clock_mhz() == pytest.approx(round(1980 * 0.7))
    r = dev.read()
    assert isinstance(r, DeviceReading)
    assert r.energy_mj == 1_650_000 and r.power_w == pytest.approx(300.0)
    assert r.clock_event_reasons & CLOCK_EVENT_SW_THERMAL
    assert rig.fake.calls["nvmlDeviceGetFieldValues"] >= 3
    rig.close()


def test_power_falls_back_to_power_usage_which_is_a_one_second_average():
    clock = FakeClock()
    sim = SimulatedDevice(SquareBursts(1.0, 0.5, 100.0, 500.0), clock=clock)
    fake = FakePynvml([sim], unsupported=["power_instant"])
    (dev,) = open_nvml_devices(None, nvml=fake, env={})
    clock.advance(3.2)  # instant power is 500 W (burst), the 1 s average is 300 W
    assert dev.instant_power_w() is None
    assert dev.power_w() == pytest.approx(300.0)
    assert dev.power_source == "power_usage"
    assert not dev.supports("power_instant")
    dev.close()


def test_unsupported_quantities_return_none_and_are_not_asked_again():
    rig = make_rig(200.0, fake_kwargs={"unsupported": ["energy", "temperature", "clocks", "utilization", "memory",
                                                      "power_limit", "persistence_mode", "clock_event_reasons"]})
    (dev,) = rig.devices
    for _ in range(2):
        r = dev.read()
        assert r.energy_mj is None and r.temperature_c is None and r.sm_clock_mhz is None
        assert r.mem_clock_mhz is None and r.gpu_util_pct is None and r.mem_used_mb is None
        assert r.clock_event_reasons is None and r.power_w == pytest.approx(200.0)
    assert dev.power_limit_w() is None and dev.persistence_mode() is None and dev.memory_total_mb() is None
    assert rig.fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1
    rig.close()


def test_legacy_throttle_reasons_api_is_used_when_clocks_event_reasons_is_missing():
    rig = make_rig(50.0, fake_kwargs={"legacy_throttle_api": True}, sim_kwargs={"idle_w": 60.0})
    (dev,) = rig.devices
    assert dev.clock_event_reasons() == CLOCK_EVENT_GPU_IDLE
    assert rig.fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 1
    assert rig.fake.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 0
    rig.close()


def test_other_nvml_errors_propagate():
    from llem_pipeline.measure.devices.fake_pynvml import ErrorInjection

    rig = make_rig(100.0, fake_kwargs={"errors": [ErrorInjection(function="nvmlDeviceGetTotalEnergyConsumption",
                                                                 at_calls=[2], error_code=15)]})
    (dev,) = rig.devices
    assert dev.energy_mj() == 0
    with pytest.raises(rig.fake.NVMLError_GpuIsLost):
        dev.energy_mj()
    assert dev.supports("energy")  # a lost GPU is an error, not "unsupported"
    rig.close()


def _three_gpus() -> tuple[FakeClock, FakePynvml]:
    clock = FakeClock()
    sims = [SimulatedDevice(100.0 * (i + 1), index=i, clock=clock, name=f"GPU {i}") for i in range(3)]
    return clock, FakePynvml(sims, uuids=["GPU-aaaa1111", "GPU-bbbb2222", "GPU-cccc3333"])


def test_cuda_visible_devices_by_index_maps_logical_to_physical():
    _, fake = _three_gpus()
    devs = open_nvml_devices(None, nvml=fake, env={"CUDA_VISIBLE_DEVICES": "2,0"})
    assert [(d.index, d.nvml_index, d.uuid) for d in devs] == [(0, 2, "GPU-cccc3333"), (1, 0, "GPU-aaaa1111")]
    close_devices(devs)
    (d1,) = open_nvml_devices("1", nvml=fake, env={"CUDA_VISIBLE_DEVICES": "2,0"})
    assert d1.uuid == "GPU-aaaa1111" and d1.power_w() == pytest.approx(100.0)
    d1.close()


def test_cuda_visible_devices_by_uuid_and_prefix():
    _, fake = _three_gpus()
    devs = open_nvml_devices(["0", "1"], nvml=fake, env={"CUDA_VISIBLE_DEVICES": "GPU-bbbb2222,cccc"})
    assert [d.uuid for d in devs] == ["GPU-bbbb2222", "GPU-cccc3333"]
    assert [d.nvml_index for d in devs] == [1, 2]
    close_devices(devs)


def test_spec_by_uuid_and_all():
    _, fake = _three_gpus()
    devs = open_nvml_devices("GPU-cccc3333,GPU-aaaa", nvml=fake, env={})
    assert [d.nvml_index for d in devs] == [2, 0] and [d.index for d in devs] == [0, 1]
    close_devices(devs)
    assert len(open_nvml_devices("all", nvml=fake, env={})) == 3


def test_bad_specs_name_the_value_and_fix():
    _, fake = _three_gpus()
    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES='5'.*index 5"):
        open_nvml_devices(None, nvml=fake, env={"CUDA_VISIBLE_DEVICES": "5"})
    with pytest.raises(ValueError, match="logical GPU 1 does not exist"):
        open_nvml_devices("1", nvml=fake, env={"CUDA_VISIBLE_DEVICES": "0"})
    with pytest.raises(ValueError, match="matches 0 GPUs"):
        open_nvml_devices("GPU-zzzz", nvml=fake, env={})
    with pytest.raises(NvmlUnavailableError, match="MIG"):
        open_nvml_devices(None, nvml=fake, env={"CUDA_VISIBLE_DEVICES": "MIG-1234"})
    assert nvml_refcount(fake) == 0 and fake.init_count == 0  # failed opens release NVML


def test_nvml_library_missing_gives_the_clear_error():
    fake = FakePynvml([SimulatedDevice(1.0)], library_missing=True)
    with pytest.raises(NvmlUnavailableError) as err:
        open_nvml_devices(None, nvml=fake, env={})
    msg = str(err.value)
    assert "libnvidia-ml.so" in msg and "NVIDIA driver" in msg and "--devices simulated" in msg


def test_pynvml_module_missing_gives_the_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    with pytest.raises(NvmlUnavailableError, match=r"nvidia-ml-py.*--devices simulated"):
        load_nvml()
    with pytest.raises(NvmlUnavailableError):
        open_nvml_devices()


def test_init_and_shutdown_are_reference_counted_across_threads():
    _, fake = _three_gpus()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                devs = open_nvml_devices(None, nvml=fake, env={})
                assert fake.init_count == 1
                devs[0].read()
                close_devices(devs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    keep = open_nvml_devices("0", nvml=fake, env={})  # holds NVML open so the workers share it
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert fake.calls["nvmlInit"] == 1 and fake.init_count == 1
    close_devices(keep)
    keep[0].close()  # idempotent
    assert fake.init_count == 0 and fake.calls["nvmlShutdown"] == 1 and nvml_refcount(fake) == 0


def _child_open_close(q) -> None:
    clock = FakeClock()
    fake = FakePynvml([SimulatedDevice(10.0, clock=clock)])
    devs = open_nvml_devices(None, nvml=fake, env={})
    q.put((fake.init_count, devs[0].kind, nvml_refcount(fake)))
    close_devices(devs)
    q.put((fake.init_count, nvml_refcount(fake)))


def test_spawned_process_initialises_nvml_itself():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_open_close, args=(q,))
    p.start()
    first, second = q.get(timeout=60), q.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    assert first == (1, "nvml", 1) and second == (0, 0)


def test_device_repr_and_context_manager():
    _, fake = _three_gpus()
    (d,) = open_nvml_devices("0", nvml=fake, env={})
    with d as same:
        assert isinstance(same, NvmlDevice) and "GPU-aaaa1111" in repr(same)
    assert fake.init_count == 0
