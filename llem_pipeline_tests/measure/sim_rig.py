"""Test rig: simulated GPUs behind the fake pynvml, opened as real NvmlDevices, on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

from llem_pipeline.measure.devices.fake_pynvml import FakePynvml
from llem_pipeline.measure.devices.nvml import NvmlDevice, close_devices, open_nvml_devices
from llem_pipeline.measure.devices.simulated import FakeClock, PowerModel, SimulatedDevice


@dataclass
class Rig:
    clock: FakeClock
    sims: list[SimulatedDevice]
    fake: FakePynvml
    devices: list[NvmlDevice]

    def close(self) -> None:
        close_devices(self.devices)


def make_rig(*models: PowerModel | float, fake_kwargs: dict | None = None, sim_kwargs: dict | None = None,
             env: dict | None = None, spec=None) -> Rig:
    """Returns simulated devices (one per model) opened through NvmlDevice on a FakePynvml, fake clock at 1000 s."""
    clock = FakeClock(1000.0)
    sims = [SimulatedDevice(m, index=i, clock=clock, **(sim_kwargs or {})) for i, m in enumerate(models)]
    fake = FakePynvml(sims, **(fake_kwargs or {}))
    devices = open_nvml_devices(spec, nvml=fake, env=env or {})
    return Rig(clock, sims, fake, devices)
