"""SimulatedDevice: exact power-model integrals, the stepping counter (wrap, reset), scripted extras."""

from __future__ import annotations

import time

import numpy as np
import pytest

from llem_pipeline.measure.devices.protocol import CLOCK_EVENT_GPU_IDLE, CLOCK_EVENT_HW_THERMAL, Device
from llem_pipeline.measure.devices.simulated import (
    ActivityDriven,
    Constant,
    EnergyHeating,
    FakeClock,
    Noisy,
    Piecewise,
    Ramp,
    ReasonSpan,
    SimulatedDevice,
    SquareBursts,
    simulated_devices,
)

MODELS = {
    "constant": Constant(250.0),
    "square": SquareBursts(2.5, 0.3, 120.0, 480.0, phase_s=0.07),
    "ramp": Ramp(100.0, 600.0, 7.0, t_start_s=1.5),
    "step": Piecewise([(0.5, 100.0), (2.0, 400.0), (2.25, 150.0), (6.0, 300.0)]),
    "linear": Piecewise([(0.0, 100.0), (3.0, 700.0), (4.0, 200.0)], interpolation="linear"),
    "noisy": Noisy(Constant(300.0), 30.0, seed=3, cell_s=0.01),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_cumulative_energy_is_the_integral_of_power(name):
    model = MODELS[name]
    dt = 1e-4
    t = np.arange(0.0, 9.0, dt) + dt / 2  # midpoint rule
    numeric = np.cumsum([model.power_w(x) for x in t]) * dt
    for k in (1234, 40000, 89999):
        assert model.cumulative_j((k + 1) * dt) == pytest.approx(numeric[k], rel=2e-4, abs=0.05)


def test_noise_is_seeded_and_independent_of_query_order():
    a, b = Noisy(Constant(300.0), 30.0, seed=7), Noisy(Constant(300.0), 30.0, seed=7)
    ts = [50.0, 0.3, 12.7]
    assert [a.power_w(t) for t in ts] == [b.power_w(t) for t in reversed(ts)][::-1]
    assert a.cumulative_j(60.0) == b.cumulative_j(60.0)
    assert Noisy(Constant(300.0), 30.0, seed=8).power_w(0.3) != a.power_w(0.3)


def test_counter_steps_only_at_update_edges_with_the_integrated_energy():
    clock = FakeClock(500.0)
    dev = SimulatedDevice(Ramp(100.0, 500.0, 10.0), clock=clock, counter_period_s=0.1, counter_phase_s=0.03)
    assert isinstance(dev, Device) and dev.kind == "simulated" and dev.uuid.startswith("SIM-")
    values = []
    for t in np.arange(0.0, 2.0, 0.01):
        clock.set(500.0 + t)
        values.append(dev.energy_mj())
    steps = np.nonzero(np.diff(values))[0] + 1
    step_times = np.arange(0.0, 2.0, 0.01)[steps]
    assert np.allclose(step_times, 0.03 + 0.1 * np.arange(20), atol=1e-9)  # one step per 100 ms, on the phase
    assert dev.counter_mj_at(1.555) == int(dev.model.cumulative_j(1.53) * 1000)
    assert dev.true_energy_j(500.0, 501.555) == pytest.approx(dev.model.cumulative_j(1.555))


def test_counter_wraps_at_the_modulus_and_resets_at_the_chosen_time():
    clock = FakeClock(0.0)
    wrap = SimulatedDevice(1000.0, clock=clock, counter_modulus_mj=2_500_000)  # wraps every 2.5 s
    clock.set(3.05)
    assert wrap.energy_mj() == 3_000_000 - 2_500_000
    reset = SimulatedDevice(1000.0, clock=clock, start_s=0.0, counter_offset_mj=10**9, counter_reset_at_s=5.0)
    clock.set(4.95)
    assert reset.energy_mj() == 10**9 + 4_900_000
    clock.set(5.25)
    assert reset.energy_mj() == 200_000  # restarted at 0 at 5.0 s, last edge 5.2 s


def test_unsupported_counter_temperature_reasons_and_clocks():
    clock = FakeClock(0.0)
    dev = SimulatedDevice(
        Piecewise([(0.0, 50.0), (1.0, 600.0)]), clock=clock, energy_supported=False, idle_w=60.0,
        temperature=EnergyHeating(ambient_c=30.0, c_per_kj=2.0, max_c=80.0),
        reason_spans=[ReasonSpan(2.0, 3.0, CLOCK_EVENT_HW_THERMAL)],
    )
    clock.set(0.5)
    r0 = dev.read()
    assert r0.energy_mj is None and r0.clock_event_reasons == CLOCK_EVENT_GPU_IDLE and r0.gpu_util_pct == 0.0
    clock.set(2.5)
    r1 = dev.read()
    assert r1.clock_event_reasons == CLOCK_EVENT_HW_THERMAL and r1.sm_clock_mhz == pytest.approx(1980 * 0.7)
    assert r1.temperature_c == pytest.approx(30.0 + 2.0 * (50.0 + 1.5 * 600.0) / 1000.0)
    assert r1.gpu_util_pct == pytest.approx((600 - 60) / (700 - 60) * 100)
    clock.set(1000.0)
    assert dev.read().temperature_c == 80.0  # capped


def test_activity_driven_power_follows_this_process_cpu_use():
    model = ActivityDriven(idle_w=50.0, peak_w=250.0, update_s=0.0, cpus=1)
    t0 = time.perf_counter()
    assert model.power_w(t0) == 50.0  # first query only records the CPU time
    end = time.process_time() + 0.15
    x = 0
    while time.process_time() < end:  # burn CPU in this process
        x += 1
    t1 = time.perf_counter()
    p = model.power_w(t1)
    assert 50.0 < p <= 250.0
    assert model.cumulative_j(t1) == pytest.approx(50.0 * (t1 - t0))  # the held idle segment up to t1
    assert model.cumulative_j(0.5 * (t0 + t1)) == pytest.approx(25.0 * (t1 - t0))  # past times: history
    assert model.cumulative_j(t1 + 2.0) == pytest.approx(50.0 * (t1 - t0) + 2.0 * p)


def test_simulated_devices_for_the_cpu_demo_are_labelled():
    devs = simulated_devices(2, idle_w=40.0, peak_w=200.0)
    assert [d.kind for d in devs] == ["simulated"] * 2 and len({d.uuid for d in devs}) == 2
    assert all(d.uuid.startswith("SIM-") for d in devs)
    r = devs[0].read()
    assert 40.0 <= r.power_w <= 200.0 and r.energy_mj is not None


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="duty"):
        SquareBursts(1.0, 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="counter_period_s"):
        SimulatedDevice(1.0, counter_period_s=0.0)
    with pytest.raises(ValueError, match="ascending"):
        Piecewise([(1.0, 1.0), (0.0, 2.0)])
    with pytest.raises(ValueError, match="backwards"):
        FakeClock(5.0).set(4.0)
