"""scripts/gpu_probe.py: counter-period inference on a scripted counter, reason decoding, the fake-NVML probe.

The probe polls as fast as it can for a set time; on the real clock its period estimate would depend on how
often this machine let it run. These tests put the simulated GPU and the poll loop on one stepping clock, so
the estimate is exact whatever the machine's load.
"""

from __future__ import annotations

import functools
import json

import pytest

from llem_pipeline.measure.devices.simulated import FakeClock


class SteppingClock(FakeClock):
    """A test clock that advances 0.1 ms at every reading: a busy poll loop on it moves time forward by itself."""

    def __call__(self) -> float:
        return self.advance(1e-4)


def _poll_on(monkeypatch, gpu_probe, clock: SteppingClock) -> None:
    """Make the probe's poll loop read ``clock`` instead of the real one."""
    monkeypatch.setattr(gpu_probe, "poll_energy_counter",
                        functools.partial(gpu_probe.poll_energy_counter, clock=clock))


class ScriptedCounter:
    """A counter stepping by ``step_mj`` every ``period_s`` on a fake clock that advances ``poll_s`` per read."""

    def __init__(self, period_s: float, step_mj: int, poll_s: float = 1e-4) -> None:
        self.t = 0.0
        self.period_s, self.step_mj, self.poll_s = period_s, step_mj, poll_s

    def clock(self) -> float:
        return self.t

    def read(self) -> int:
        self.t += self.poll_s
        return int(self.t // self.period_s) * self.step_mj


@pytest.mark.parametrize("period_s", [0.02, 0.1])
def test_period_and_power_from_a_stepping_counter(gpu_probe, period_s: float) -> None:
    c = ScriptedCounter(period_s, step_mj=round(300.0 * period_s * 1000))  # 300 W
    out = gpu_probe.poll_energy_counter(c.read, 1.0, clock=c.clock)
    assert out["period_ms"] == pytest.approx(period_s * 1e3, rel=0.01)
    assert out["step_mj_median"] == round(300.0 * period_s * 1000)
    assert out["power_from_counter_w"] == pytest.approx(300.0, rel=0.02)
    assert out["changes"] == pytest.approx(1.0 / period_s, abs=2)


def test_a_frozen_counter_has_no_period(gpu_probe) -> None:
    c = ScriptedCounter(10.0, step_mj=5)
    out = gpu_probe.poll_energy_counter(c.read, 0.5, clock=c.clock)
    assert out["changes"] == 0 and out["period_ms"] is None and out["power_from_counter_w"] is None


def test_decode_reasons(gpu_probe) -> None:
    assert gpu_probe.decode_reasons(0) == [] and gpu_probe.decode_reasons(None) == []
    assert gpu_probe.decode_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert gpu_probe.decode_reasons(0x1 | 0x10000) == ["gpu_idle", "0x10000"]


def test_probe_through_the_fake_pynvml(gpu_probe, tmp_path, capsys, monkeypatch) -> None:
    clock = SteppingClock()
    real_fake = gpu_probe.fake_nvml

    def fake_on_clock():
        nvml = real_fake()  # the dry run's own simulated GPU, moved onto the stepping clock
        for sim in nvml.sim_devices:
            sim.clock, sim.start_s = clock, clock()
        return nvml

    monkeypatch.setattr(gpu_probe, "fake_nvml", fake_on_clock)
    _poll_on(monkeypatch, gpu_probe, clock)
    out = tmp_path / "probe.json"
    assert gpu_probe.main(["--fake", "--poll-s", "0.5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["fake"] is True
    [dev] = result["devices"]
    assert dev["energy_counter_supported"] is True
    assert dev["energy_counter"]["period_ms"] == pytest.approx(100.0, rel=0.01)
    assert dev["power_instant_field"] == {"supported": True, "value_w": 75.0, "error": None}
    assert dev["power_limit_w"] == 700.0 and dev["persistence_mode"] is True
    assert "SIMULATED via fake pynvml" in capsys.readouterr().out


def test_unsupported_instant_field_is_reported(gpu_probe, monkeypatch) -> None:
    from llem_pipeline.measure.devices.fake_pynvml import FakePynvml
    from llem_pipeline.measure.devices.simulated import SimulatedDevice

    clock = SteppingClock()
    _poll_on(monkeypatch, gpu_probe, clock)
    nvml = FakePynvml([SimulatedDevice(80.0, counter_period_s=0.05, clock=clock)], unsupported=["power_instant"])
    result = gpu_probe.probe(nvml, poll_s=0.3, env={})
    [dev] = result["devices"]
    assert dev["power_instant_field"]["supported"] is False
    assert dev["power_average_field"]["supported"] is True
    assert dev["energy_counter"]["period_ms"] == pytest.approx(50.0, rel=0.01)
