"""ReplayDevice plays back a recorded timeseries Parquet, time-shifted to now."""

from __future__ import annotations

import pytest

from llem_pipeline.measure.devices.protocol import Device
from llem_pipeline.measure.devices.replay import ReplayDevice
from llem_pipeline.measure.devices.simulated import FakeClock, Piecewise, SimulatedDevice
from llem_pipeline.measure.sampler import Sampler, read_timeseries_parquet, write_timeseries_parquet


def _record(tmp_path):
    clock = FakeClock(100.0)
    sims = [SimulatedDevice(Piecewise([(0.0, 100.0), (1.0, 300.0)]), clock=clock),
            SimulatedDevice(50.0, index=1, clock=clock)]
    s = Sampler(sims, 0.1, clock=clock)
    for _ in range(30):
        s.tick()
        clock.advance(0.1)
    path = write_timeseries_parquet(s.stop(), tmp_path / "ts.parquet", t0_mono_s=100.0)
    return path, sims


def _recorded(path, device_index):
    return read_timeseries_parquet(path).for_device(device_index)


def test_replay_follows_the_recording_shifted_to_now(tmp_path):
    path, sims = _record(tmp_path)
    clock = FakeClock(5000.0)
    dev = ReplayDevice(path, clock=clock)
    assert isinstance(dev, Device) and dev.kind == "replay" and dev.uuid == sims[0].uuid
    assert dev.power_w() == pytest.approx(100.0)
    clock.advance(1.55)  # the recorded row at 1.5 s
    r = dev.read()
    rec = _recorded(path, 0)
    assert r.power_w == pytest.approx(300.0)
    assert r.energy_mj == rec["energy_mj"][15]
    assert r.temperature_c is not None and r.clock_event_reasons is not None
    clock.advance(100.0)  # past the end: the last row holds
    assert dev.energy_mj() == rec["energy_mj"][-1]


def test_replay_loop_keeps_the_counter_rising(tmp_path):
    path, sims = _record(tmp_path)
    clock = FakeClock(0.0)
    dev = ReplayDevice(path, sims[1].uuid, clock=clock, loop=True)
    clock.advance(2.95)
    first = dev.energy_mj()
    clock.advance(2.9)
    assert dev.energy_mj() > first


def test_unknown_uuid_is_rejected(tmp_path):
    path, _ = _record(tmp_path)
    with pytest.raises(ValueError, match="not in the recording"):
        ReplayDevice(path, "GPU-unknown")
