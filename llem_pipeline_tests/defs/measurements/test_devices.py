"""LLEM_DEVICES parsing: simulated, explicit lists, 'auto' through an injected NVML module, clear errors."""

from __future__ import annotations

import pytest

from llem_pipeline.defs.measurements.devices import DeviceSpecError, parse_devices
from llem_pipeline.measure.devices.fake_pynvml import FakePynvml
from llem_pipeline.measure.devices.simulated import SimulatedDevice


def test_simulated_is_one_simulated_slot() -> None:
    [slot] = parse_devices("simulated")
    assert slot.simulated and slot.token == "simulated" and slot.lock_name == "gpu-simulated.lock"


def test_explicit_indices_and_uuids() -> None:
    assert [s.token for s in parse_devices("0, 1")] == ["0", "1"]
    assert [s.token for s in parse_devices("GPU-8f3a2b1c-aaaa")] == ["GPU-8f3a2b1c-aaaa"]


@pytest.mark.parametrize("value", ["", "gpu0", "0,0", "../0", "0;rm"])
def test_bad_values_name_the_value_and_the_fix(value: str) -> None:
    with pytest.raises(DeviceSpecError, match="LLEM_DEVICES") as err:
        parse_devices(value)
    assert "simulated" in str(err.value) or "twice" in str(err.value)


def test_auto_enumerates_nvml_devices() -> None:
    nvml = FakePynvml([SimulatedDevice(100.0, index=0), SimulatedDevice(100.0, index=1)])
    assert [s.token for s in parse_devices("auto", nvml=nvml)] == ["0", "1"]


def test_auto_without_nvml_fails_clearly_instead_of_simulating() -> None:
    nvml = FakePynvml([SimulatedDevice(100.0)], library_missing=True)
    with pytest.raises(DeviceSpecError, match="NVML is not available") as err:
        parse_devices("auto", nvml=nvml)
    assert "LLEM_DEVICES to 'simulated'" in str(err.value)
