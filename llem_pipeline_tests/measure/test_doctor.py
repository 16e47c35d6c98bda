"""llem doctor's checks against the fake pynvml: a healthy GPU, the acceptance scenario (power limit below
default, persistence off, a foreign process), every other WARN/FAIL, no NVML, the counter probe on a
fake clock, disk and torch."""

from __future__ import annotations

import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest

from llem_pipeline.measure import doctor
from llem_pipeline.measure.devices.fake_pynvml import ErrorInjection, FakeGpuSettings, FakeProcess, FakePynvml
from llem_pipeline.measure.devices.nvml import nvml_refcount
from llem_pipeline.measure.devices.protocol import (
    CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING,
    CLOCK_EVENT_SW_POWER_CAP,
    CLOCK_EVENT_SW_THERMAL,
)
from llem_pipeline.measure.devices.simulated import Constant, FakeClock, ReasonSpan, SimulatedDevice
from llem_pipeline.measure.doctor import Finding, exit_code, probe_counter_periods, run_checks, summary

OWN_PID = 99_999  # the pid run_checks is told is its own
GPU_CHECKS = ["gpu", "persistence_mode", "power_limit", "clocks", "ecc", "mig", "processes", "energy_counter",
              "power_instant", "temperature", "clock_events"]
Usage = namedtuple("Usage", "total used free")


def cuda_torch(cuda: str | None = "13.0", available: bool = True, count: int = 1) -> types.SimpleNamespace:
    """A stand-in for the torch module: version, CUDA build, torch.cuda.is_available/device_count."""
    return types.SimpleNamespace(
        __version__="2.13.0" + (f"+cu{cuda.replace('.', '')}" if cuda else "+cpu"),
        version=types.SimpleNamespace(cuda=cuda),
        cuda=types.SimpleNamespace(is_available=lambda: available, device_count=lambda: count))


def make_fake(n: int = 1, *, sim: dict | None = None, settings: list[FakeGpuSettings | None] | None = None,
              **fake_kw) -> tuple[FakeClock, FakePynvml]:
    """``n`` simulated 75 W H100s (100 ms counter) on one FakeClock behind a FakePynvml."""
    clock = FakeClock(0.0)
    devices = [SimulatedDevice(75.0, index=i, clock=clock, name="NVIDIA H100 80GB HBM3", **(sim or {}))
               for i in range(n)]
    return clock, FakePynvml(devices, gpu_settings=settings or (), **fake_kw)


def check(tmp_path: Path, fake: FakePynvml | None, clock: FakeClock | None = None, **kw) -> list[Finding]:
    """run_checks on the fake, a tmp data dir, no driver files, a CUDA torch stand-in and the fake clock."""
    clock = clock or FakeClock(0.0)
    kw.setdefault("import_torch", lambda: cuda_torch(count=len(fake.sim_devices)) if fake else cuda_torch())
    kw.setdefault("env", {})
    kw.setdefault("driver_paths", ())
    return run_checks(data_dir=tmp_path, nvml=fake, clock=clock, sleep=clock.sleep, own_pid=OWN_PID, **kw)


def by_check(findings: list[Finding], device: str | None = "GPU 0") -> dict[str, Finding]:
    return {f.check: f for f in findings if f.device == device}


def not_ok(findings: list[Finding]) -> list[tuple[str, str, str | None]]:
    return [(f.status, f.check, f.device) for f in findings if f.status != "OK"]


def test_capped_gpu_with_persistence_off_and_a_foreign_process_gives_exactly_three_warns(tmp_path):
    clock, fake = make_fake(sim={"power_limit_w": 500.0, "persistence_mode": False}, settings=[FakeGpuSettings(
        default_power_limit_w=700.0,
        processes=(FakeProcess(4242, "python3 train.py", 2048.0), FakeProcess(OWN_PID, "llem doctor")))])
    findings = check(tmp_path, fake, clock)
    assert not_ok(findings) == [("WARN", "persistence_mode", "GPU 0"), ("WARN", "power_limit", "GPU 0"),
                                ("WARN", "processes", "GPU 0")]
    got = by_check(findings)
    assert got["persistence_mode"].found.startswith("off")
    assert got["persistence_mode"].fix == "sudo nvidia-smi -i 0 -pm 1 (or enable the nvidia-persistenced service)"
    assert got["power_limit"].found.startswith("enforced 500 W is below the default 700 W")
    assert got["power_limit"].fix == "sudo nvidia-smi -i 0 -pl 700"
    # the foreign process with its name, kind and memory; our own pid is not a foreign process
    assert "1 other process(es)" in got["processes"].found
    assert "pid 4242 python3 train.py (compute, 2048 MiB)" in got["processes"].found
    assert str(OWN_PID) not in got["processes"].found
    assert got["processes"].fix.startswith("stop them before measuring (kill 4242)")
    assert exit_code(findings) == 0
    assert summary(findings).startswith("13 OK, 3 WARN, 0 FAIL: measurements will run")
    assert nvml_refcount(fake) == 0 and fake.init_count == 0  # NVML shut down again


def test_a_healthy_fake_gpu_is_all_ok_with_every_check_in_order(tmp_path):
    clock, fake = make_fake()
    findings = check(tmp_path, fake, clock)
    assert not_ok(findings) == []
    assert [f.check for f in findings] == ["nvml", "driver", "gpus", *GPU_CHECKS, "disk", "torch"]
    got = by_check(findings)
    assert got["gpu"].found == f"NVIDIA H100 80GB HBM3, {fake.uuids[0]}, NVML index 0, 81559 MiB"
    assert got["power_limit"].found == "enforced 700 W = the default"
    assert got["energy_counter"].found == "supported, updates every 100 ms (10 updates in 1.0 s)"
    assert got["power_instant"].found == "supported (75.0 W now)"
    assert got["processes"].found == "no other process on this GPU (memory used: 1024 of 81559 MiB)"
    assert got["clocks"].found.endswith("no clock lock")
    host = by_check(findings, None)
    assert host["driver"].found == "NVIDIA driver 580.95.05, CUDA driver API 13.0"
    assert host["torch"].found == "torch 2.13.0+cu130 (CUDA 13.0 build), sees 1 CUDA device(s)"
    assert all(f.fix is None for f in findings)
    assert summary(findings) == "16 OK, 0 WARN, 0 FAIL: ready to measure"
    assert exit_code(findings) == 0


def test_no_nvml_library_says_why_and_what_the_demo_uses_and_exits_0(tmp_path):
    findings = check(tmp_path, FakePynvml([], library_missing=True), import_torch=lambda: cuda_torch(None, False, 0))
    assert [(f.status, f.check) for f in findings] == [
        ("WARN", "nvml"), ("OK", "simulated_fallback"), ("OK", "disk"), ("OK", "torch")]
    nvml, fallback = findings[0], findings[1]
    assert nvml.found.startswith("NVML could not be loaded: the NVML shared library (libnvidia-ml.so) was not found;")
    assert "no NVIDIA driver" in nvml.found and "make demo" in nvml.fix
    assert "simulated GPU" in fallback.found and "labelled simulated" in fallback.found
    assert findings[3].found == "torch 2.13.0+cpu (CPU build); no GPU to use here, so models run on the CPU"
    assert exit_code(findings) == 0
    assert "no usable NVIDIA GPU here" in summary(findings)


def test_no_nvml_with_an_nvidia_driver_installed_is_a_fail(tmp_path):
    driver_file = tmp_path / "version"
    driver_file.write_text("NVRM version: 580.95.05\n")
    findings = check(tmp_path, FakePynvml([], library_missing=True), driver_paths=(driver_file,))
    assert findings[0].status == "FAIL" and str(driver_file) in findings[0].found
    assert "nvidia-smi" in findings[0].fix
    assert findings[1].check == "simulated_fallback"
    assert exit_code(findings) == 1


def test_pynvml_not_installed_is_explained(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    findings = check(tmp_path, None)
    assert findings[0].status == "WARN"
    assert "the Python module 'pynvml' (package nvidia-ml-py) is not installed" in findings[0].found
    assert exit_code(findings) == 0


@pytest.mark.parametrize("how", ["nvml_unsupported", "simulated_without_counter"])
def test_an_unsupported_energy_counter_is_one_warn(tmp_path, how):
    clock, fake = make_fake(**({"unsupported": ["energy"]} if how == "nvml_unsupported" else {}),
                            sim={"energy_supported": False} if how == "simulated_without_counter" else None)
    findings = check(tmp_path, fake, clock)
    assert not_ok(findings) == [("WARN", "energy_counter", "GPU 0")]
    counter = by_check(findings)["energy_counter"]
    assert counter.found.startswith("not supported: energy would be the integral of sampled power")
    assert "nvmlDeviceGetTotalEnergyConsumption" in counter.fix


def test_counter_period_is_measured_on_the_fake_clock_and_quick_skips_it(tmp_path):
    clock, fake = make_fake(2, sim={"counter_period_s": 0.05})
    findings = check(tmp_path, fake, clock, counter_poll_s=2.0)
    for gpu in ("GPU 0", "GPU 1"):
        assert by_check(findings, gpu)["energy_counter"].found == "supported, updates every 50 ms (40 updates in 2.0 s)"
    assert clock() == pytest.approx(2.0, abs=0.01)  # both GPUs were polled together: 2 s, not 4
    clock, fake = make_fake()
    quick = check(tmp_path, fake, clock, counter_poll_s=None)
    assert by_check(quick)["energy_counter"].found == "supported (update period not measured: --quick)"
    assert clock() == 0.0 and fake.calls["nvmlDeviceGetTotalEnergyConsumption"] <= 2


def test_a_counter_that_does_not_move_or_fails_while_polled(tmp_path):
    clock, fake = make_fake()
    fake.sim_devices[0].model = Constant(0.0)  # 0 W: the counter never changes
    still = by_check(check(tmp_path, fake, clock))["energy_counter"]
    assert still.status == "WARN" and "changed 0 time(s) in 1.0 s" in still.found and "-r" in still.fix
    clock, fake = make_fake(errors=[ErrorInjection(function="nvmlDeviceGetTotalEnergyConsumption", after_calls=5,
                                                   error_code=15)])
    findings = check(tmp_path, fake, clock)
    failed = by_check(findings)["energy_counter"]
    assert failed.status == "FAIL" and failed.found.startswith("reading the counter failed while polling it: ")
    assert "GPU is lost" in failed.found
    assert exit_code(findings) == 1


def test_probe_counter_periods_dates_changes_between_polls():
    clock = FakeClock(10.0)
    probes = probe_counter_periods({"a": lambda: int(clock() / 0.25), "b": lambda: 7}, 3.0,
                                   clock=clock, sleep=clock.sleep, interval_s=0.01)
    assert probes["a"].period_s == pytest.approx(0.25, abs=0.011)
    assert probes["a"].changes == 12 and probes["a"].error is None
    assert probes["b"].changes == 0 and probes["b"].period_s is None
    assert probes["a"].polls == probes["b"].polls == pytest.approx(301, abs=1)


HOT = lambda t, e: 85.0  # noqa: E731 - a temperature model: always 85 °C


@pytest.mark.parametrize(("sim", "settings", "fake_kw", "expected"), [
    ({}, {"mig_mode": (1, 1)}, {}, ("FAIL", "mig", "-mig 0")),
    ({}, {"mig_mode": (0, 1)}, {}, ("WARN", "mig", "-mig 0")),
    ({}, {"mig_mode": None}, {}, None),  # a GPU without MIG
    ({}, {"ecc_mode": (0, 0)}, {}, ("WARN", "ecc", "-e 1")),
    ({}, {"ecc_mode": (1, 0)}, {}, ("WARN", "ecc", "-e 1")),
    ({}, {"ecc_mode": None}, {}, None),  # a GPU without ECC
    ({}, {"applications_clocks_mhz": (1410.0, 2619.0)}, {}, ("WARN", "clocks", "sudo nvidia-smi -i 0 -rac")),
    ({"sm_clock_mhz": 1410.0, "reason_spans": [ReasonSpan(0.0, 1e9, CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING)]},
     {"max_clocks_mhz": (1980.0, 2619.0)}, {}, ("WARN", "clocks", "sudo nvidia-smi -i 0 -rgc")),
    ({"power_limit_w": 800.0}, {"default_power_limit_w": 700.0}, {}, ("WARN", "power_limit", "-pl 700")),
    ({}, {}, {"unsupported": ["power_instant"]}, ("WARN", "power_instant", "nvidia-ml-py")),
    ({"temperature": HOT}, {}, {}, ("WARN", "temperature", "cool")),
    ({"reason_spans": [ReasonSpan(0.0, 1e9, CLOCK_EVENT_SW_THERMAL | CLOCK_EVENT_SW_POWER_CAP)]}, {}, {},
     ("WARN", "clock_events", "cool")),
    ({}, {"processes": (FakeProcess(77, "Xorg", None, "graphics"),)}, {}, ("WARN", "processes", "kill 77")),
    ({}, {}, {"unsupported": ["persistence_mode", "power_limit", "temperature", "clock_event_reasons"]},
     ("WARN", "power_limit", "nvidia-smi -q -d POWER")),
], ids=["mig_on", "mig_pending", "no_mig", "ecc_off", "ecc_off_pending", "no_ecc", "app_clocks", "locked_clocks",
        "limit_above_default", "no_instant_power", "hot", "throttled", "graphics_process", "unsupported_reads"])
def test_each_setting_gives_its_line(tmp_path, sim, settings, fake_kw, expected):
    clock, fake = make_fake(sim=sim, settings=[FakeGpuSettings(**settings)], **fake_kw)
    findings = check(tmp_path, fake, clock)
    if expected is None:
        assert not_ok(findings) == []
        return
    status, name, fix = expected
    assert not_ok(findings) == [(status, name, "GPU 0")]
    line = by_check(findings)[name]
    assert fix in line.fix
    assert exit_code(findings) == (1 if status == "FAIL" else 0)


def test_line_details_for_locks_throttling_and_graphics_processes(tmp_path):
    clock, fake = make_fake(sim={"sm_clock_mhz": 1410.0, "reason_spans": [
        ReasonSpan(0.0, 1e9, CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING | CLOCK_EVENT_SW_THERMAL)]},
        settings=[FakeGpuSettings(max_clocks_mhz=(1980.0, 2619.0),
                                  processes=(FakeProcess(77, "Xorg", None, "graphics"),))])
    got = by_check(check(tmp_path, fake, clock))
    assert got["clocks"].found.startswith("clocks are held by an application-clocks or locked-clocks setting below "
                                          "the max")
    assert "SM 987 MHz now, max 1980 MHz" in got["clocks"].found  # 1410 MHz, -30 % while thermally slowed
    assert got["clocks"].fix.startswith("sudo nvidia-smi -i 0 -rgc && sudo nvidia-smi -i 0 -rmc && "
                                        "sudo nvidia-smi -i 0 -rac")
    assert got["clock_events"].found == "slowed down now by: applications_clocks_setting, sw_thermal_slowdown"
    assert got["processes"].found.endswith("pid 77 Xorg (graphics, memory n/a)")


def test_cuda_visible_devices_decides_which_gpus_are_checked(tmp_path):
    clock, fake = make_fake(2, settings=[None, FakeGpuSettings(ecc_mode=(0, 0))])
    findings = check(tmp_path, fake, clock, env={"CUDA_VISIBLE_DEVICES": "1"}, import_torch=lambda: cuda_torch(count=1))
    assert by_check(findings, None)["gpus"].found == "1 GPU(s) to measure on, of 2 NVML sees (CUDA_VISIBLE_DEVICES='1')"
    assert {f.device for f in findings} == {None, "GPU 0 (NVML 1)"}
    assert not_ok(findings) == [("WARN", "ecc", "GPU 0 (NVML 1)")]
    assert by_check(findings, "GPU 0 (NVML 1)")["ecc"].fix.startswith("sudo nvidia-smi -i 1 -e 1")

    hidden = check(tmp_path, fake, clock, env={"CUDA_VISIBLE_DEVICES": ""})
    assert [(f.status, f.check) for f in hidden][2:4] == [("WARN", "gpus"), ("OK", "simulated_fallback")]
    assert exit_code(hidden) == 0
    wrong = check(tmp_path, fake, clock, env={"CUDA_VISIBLE_DEVICES": "7"})
    assert ("FAIL", "gpus", None) in not_ok(wrong) and "index 7 does not exist" in by_check(wrong, None)["gpus"].found
    assert nvml_refcount(fake) == 0


def test_an_nvml_error_inside_a_check_becomes_a_fail_line(tmp_path):
    clock, fake = make_fake(errors=[ErrorInjection(function="nvmlDeviceGetEccMode", error_code=999, at_calls=[1])])
    findings = check(tmp_path, fake, clock)
    assert not_ok(findings) == [("WARN", "ecc", "GPU 0")]  # ECC read via _read: an error text, not a crash
    clock, fake = make_fake(errors=[ErrorInjection(function="nvmlDeviceGetPersistenceMode", error_code=15,
                                                   at_calls=[1])])
    findings = check(tmp_path, fake, clock)
    assert not_ok(findings) == [("FAIL", "persistence_mode", "GPU 0")]
    assert "GPU is lost" in by_check(findings)["persistence_mode"].found


@pytest.mark.parametrize(("free_gib", "status"), [(500.0, "OK"), (5.0, "WARN"), (0.5, "FAIL")])
def test_disk_space_thresholds(tmp_path, free_gib, status):
    line = doctor.check_disk(tmp_path, disk_usage=lambda p: Usage(1000 * 2**30, 0, int(free_gib * 2**30)))
    assert line.status == status and f"{free_gib:.1f} GiB free of 1000 GiB under the data dir {tmp_path}" in line.found
    assert (line.fix is None) == (status == "OK")


def test_disk_reports_a_data_dir_that_cannot_be_created(tmp_path):
    def fails() -> Path:
        raise PermissionError(13, "Permission denied", "/nope/data")

    line = doctor.check_disk(fails)
    assert line.status == "FAIL" and "cannot create the data dir" in line.found and "LLEM_DATA_DIR" in line.fix
    assert doctor.check_disk(tmp_path).status in {"OK", "WARN"}  # the real disk_usage on a real folder


def test_torch_checks_never_raise():
    def missing():
        raise ImportError("No module named 'torch'")

    def broken():
        raise OSError("libtorch_cpu.so: cannot open shared object file")

    assert doctor.check_torch(missing).status == "WARN"
    assert doctor.check_torch(missing, gpus=2).status == "WARN"
    assert "OSError" in doctor.check_torch(broken).found
    cpu_on_gpu_host = doctor.check_torch(lambda: cuda_torch(None, False, 0), gpus=1, cuda_driver_version=13000)
    assert cpu_on_gpu_host.status == "FAIL" and "CUDA 13.0 or older" in cpu_on_gpu_host.fix
    newer = doctor.check_torch(lambda: cuda_torch("13.0"), gpus=1, cuda_driver_version=12080)
    assert newer.status == "WARN" and "the driver supports CUDA 12.8 only" in newer.found
    fewer = doctor.check_torch(lambda: cuda_torch("12.8", count=1), gpus=2, cuda_driver_version=13000)
    assert fewer.status == "WARN" and "NVML shows 2 visible GPU(s)" in fewer.found
    assert doctor.check_torch(lambda: cuda_torch("12.8", count=2), gpus=2, cuda_driver_version=13000).status == "OK"


def test_findings_need_a_fix_unless_ok_and_serialise_with_the_five_keys():
    with pytest.raises(ValueError, match="needs a fix"):
        Finding("WARN", "x", "found")
    with pytest.raises(ValueError, match="status"):
        Finding("MEH", "x", "found", "fix")  # type: ignore[arg-type]
    assert Finding("OK", "x", "y").as_dict() == {"status": "OK", "check": "x", "device": None, "found": "y", "fix": None}
    assert doctor.decode_clock_events(0x1 | 0x20 | 0x10000) == ["gpu_idle", "sw_thermal_slowdown", "0x10000"]
    assert doctor.decode_clock_events(None) == [] and doctor.cuda_version_text(12080) == "12.8"
