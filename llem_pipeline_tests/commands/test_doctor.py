"""`llem doctor` end to end in-process: the WARN lines of the acceptance scenario, no NVML, JSON, the rich
table (no markup read from data), exit codes and the `llem` dispatcher."""

from __future__ import annotations

import io
import json
import types

import pytest

from llem_pipeline import cli
from llem_pipeline.commands.doctor import main_doctor
from llem_pipeline.measure.devices.fake_pynvml import (
    FakeGpuSettings,
    FakeProcess,
    FakePynvml,
    install_fake_pynvml,
)
from llem_pipeline.measure.devices.simulated import FakeClock, SimulatedDevice

TORCH = types.SimpleNamespace(__version__="2.13.0+cu130", version=types.SimpleNamespace(cuda="13.0"),
                              cuda=types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 1))
CPU_TORCH = types.SimpleNamespace(__version__="2.13.0+cpu", version=types.SimpleNamespace(cuda=None),
                                  cuda=types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0))


def fake_gpu(*, capped: bool = False, persistence: bool = True, processes: tuple[FakeProcess, ...] = (),
             **settings) -> tuple[FakeClock, FakePynvml]:
    clock = FakeClock(0.0)
    device = SimulatedDevice(75.0, clock=clock, name="NVIDIA H100 80GB HBM3", power_limit_w=500.0 if capped else 700.0,
                             persistence_mode=persistence)
    return clock, FakePynvml([device], gpu_settings=[FakeGpuSettings(default_power_limit_w=700.0,
                                                                     processes=processes, **settings)])


def doctor(argv: list[str], nvml: FakePynvml, clock: FakeClock, tmp_path, torch=TORCH) -> tuple[int, str]:
    out = io.StringIO()
    rc = main_doctor(argv, out=out, nvml=nvml, clock=clock, sleep=clock.sleep, import_torch=lambda: torch,
                     env={}, driver_paths=(), data_dir=tmp_path, own_pid=1)
    return rc, out.getvalue()


def test_capped_gpu_persistence_off_and_a_foreign_process_print_exactly_these_warn_lines(tmp_path):
    clock, fake = fake_gpu(capped=True, persistence=False, processes=(FakeProcess(4242, "python3 train.py", 2048.0),))
    rc, text = doctor(["--format", "plain"], fake, clock, tmp_path)
    assert rc == 0
    assert [line for line in text.splitlines() if not line.startswith("OK ")] == [
        "WARN  persistence_mode [GPU 0]: off: the driver may tear the GPU down between runs, so each run starts "
        "with re-initialisation and power-state changes that are not the workload's -- fix: sudo nvidia-smi -i 0 "
        "-pm 1 (or enable the nvidia-persistenced service)",
        "WARN  power_limit [GPU 0]: enforced 500 W is below the default 700 W: energy and speed would be those of a "
        "GPU with a non-default power cap -- fix: sudo nvidia-smi -i 0 -pl 700",
        "WARN  processes [GPU 0]: 1 other process(es) on this GPU, whose energy a measurement would count: pid 4242 "
        "python3 train.py (compute, 2048 MiB) -- fix: stop them before measuring (kill 4242), or measure on a GPU "
        "nobody else uses (CUDA_VISIBLE_DEVICES / LLEM_DEVICES)",
        "llem doctor: 13 OK, 3 WARN, 0 FAIL: measurements will run, but fix the WARN lines for valid, comparable numbers",
    ]
    assert "OK    energy_counter [GPU 0]: supported, updates every 100 ms (10 updates in 1.0 s)" in text.splitlines()


def test_healthy_gpu_prints_only_ok_lines(tmp_path):
    clock, fake = fake_gpu()
    rc, text = doctor(["--quick"], fake, clock, tmp_path)  # auto format on a StringIO: plain lines
    lines = text.splitlines()
    assert rc == 0 and len(lines) == 17 and all(line.startswith("OK    ") for line in lines[:-1])
    assert lines[-1] == "llem doctor: 16 OK, 0 WARN, 0 FAIL: ready to measure"
    assert clock() == 0.0  # --quick: the counter was not polled


def test_no_nvml_explains_itself_names_the_simulated_fallback_and_exits_0(tmp_path):
    clock = FakeClock(0.0)
    rc, text = doctor([], FakePynvml([], library_missing=True), clock, tmp_path, torch=CPU_TORCH)
    assert rc == 0 and "Traceback" not in text
    lines = text.splitlines()
    assert lines[0].startswith("WARN  nvml: NVML could not be loaded: the NVML shared library (libnvidia-ml.so) was "
                               "not found; this machine has no NVIDIA driver")
    assert lines[1].startswith("OK    simulated_fallback: `make demo` (LLEM_DEVICES=simulated) uses the simulated GPU")
    assert lines[-1] == ("llem doctor: 3 OK, 1 WARN, 0 FAIL: no usable NVIDIA GPU here; `make demo` runs on the "
                         "simulated GPU (results labelled simulated)")


def test_json_is_a_list_of_findings_and_a_fail_exits_1(tmp_path):
    clock, fake = fake_gpu(mig_mode=(1, 1))
    rc, text = doctor(["--format", "json", "--poll-s", "0.5"], fake, clock, tmp_path)
    rows = json.loads(text)
    assert rc == 1
    assert all(set(r) == {"status", "check", "device", "found", "fix"} for r in rows)
    assert [(r["status"], r["check"], r["device"]) for r in rows if r["status"] != "OK"] == [("FAIL", "mig", "GPU 0")]
    counter = next(r for r in rows if r["check"] == "energy_counter")
    assert counter["found"] == "supported, updates every 100 ms (5 updates in 0.5 s)"
    assert rows[0] == {"status": "OK", "check": "nvml", "device": None, "found": "loaded, NVML 13.580.95.05", "fix": None}


def test_table_prints_data_verbatim_never_as_rich_markup(tmp_path):
    clock, fake = fake_gpu(processes=(FakeProcess(31337, "[bold]evil[/bold][link=x]y[/link]", 10.0),))
    rc, text = doctor(["--format", "table", "--quick"], fake, clock, tmp_path)
    assert rc == 0
    assert "[bold]evil[/bold][link=x]y[/link]" in text
    assert "\x1b[" not in text  # not a terminal: no colour codes
    assert "┃ status" in text and "llem doctor: 15 OK, 1 WARN, 0 FAIL" in text


def test_bad_poll_s_is_a_usage_error(tmp_path, capsys):
    clock, fake = fake_gpu()
    assert doctor(["--poll-s", "0"], fake, clock, tmp_path) == (2, "")
    assert "--poll-s must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        doctor(["--format", "yaml"], fake, clock, tmp_path)
    assert exc.value.code == 2


def test_llem_dispatches_doctor(capsys, monkeypatch, tmp_path):
    assert cli.COMMANDS["doctor"][:2] == ("llem_pipeline.commands.doctor", "main_doctor")
    assert "doctor" in cli.usage()
    monkeypatch.setenv("LLEM_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "torch", CPU_TORCH)  # keep the real torch import out of this test
    with install_fake_pynvml(FakePynvml([], library_missing=True)):
        rc = cli.main(["doctor", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["check"] == "nvml" and rows[0]["found"].startswith("NVML could not be loaded")
    # WARN here; FAIL (exit 1) on a host whose NVIDIA driver files exist while this fake NVML is missing
    assert rc == (1 if any(r["status"] == "FAIL" for r in rows) else 0)
    assert any(r["check"] == "disk" and str(tmp_path) in r["found"] for r in rows)
