"""The sampler: rows and columns, error handling, buffer size arithmetic, the Parquet sidecar."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from llem_pipeline.measure.devices.fake_pynvml import ErrorInjection
from llem_pipeline.measure.devices.simulated import FakeClock, SimulatedDevice
from llem_pipeline.measure.sampler import (
    DEFAULT_CHUNK_ROWS,
    ROW_BYTES,
    TIMESERIES_COLUMNS,
    ColumnBuffer,
    Sampler,
    buffer_bytes,
    read_timeseries_parquet,
    write_timeseries_parquet,
)
from llem_pipeline.measure.samples import COLUMNS
from llem_pipeline_tests.measure.sim_rig import make_rig


def _ticks(sampler: Sampler, clock: FakeClock, n: int, dt: float = 0.1) -> None:
    for _ in range(n):
        sampler.tick()
        clock.advance(dt)


def test_tick_stores_one_row_per_device_with_every_column():
    rig = make_rig(100.0, 250.0)
    s = Sampler(rig.devices, 0.1, clock=rig.clock, utc_ns=lambda: 1_700_000_000_000_000_000)
    _ticks(s, rig.clock, 5)
    out = s.stop()
    assert len(out) == 10 and set(out.columns) == set(COLUMNS)
    assert all(out[k].dtype == dt for k, dt in COLUMNS.items())
    assert out.device_uuids == tuple(d.uuid for d in rig.devices)
    assert list(out["device_index"][:4]) == [0, 1, 0, 1]
    assert np.allclose(out.for_device(1)["power_w"], 250.0)
    assert np.all(np.diff(out.for_device(0)["energy_mj"]) == 10_000)  # 100 W × 0.1 s per tick
    assert np.all(out["clock_event_reasons"] >= 0) and np.all(np.isfinite(out["temperature_c"]))
    rig.close()


def test_unsupported_quantities_are_nan_or_minus_one():
    rig = make_rig(100.0, fake_kwargs={"unsupported": ["energy", "clock_event_reasons"]})
    s = Sampler(rig.devices, clock=rig.clock)
    _ticks(s, rig.clock, 2)
    out = s.snapshot()
    assert np.all(np.isnan(out["energy_mj"])) and np.all(out["clock_event_reasons"] == -1)


def test_nvml_error_ends_sampling_with_the_samples_taken():
    rig = make_rig(100.0, fake_kwargs={"errors": [ErrorInjection(function="nvmlDeviceGetTotalEnergyConsumption",
                                                                 at_calls=[4], error_code=15)]})
    s = Sampler(rig.devices, clock=rig.clock)
    _ticks(s, rig.clock, 6)
    out = s.stop()
    assert len(out) == 3 and s.ticks == 3
    assert isinstance(s.error, rig.fake.NVMLError) and "GpuIsLost" in s.error_message
    assert s.error_at_s == pytest.approx(1000.3)
    assert not s.tick()


def test_thread_samples_until_stopped_and_survives_a_failing_device():
    """Real thread, no timing asserted: it samples, and an NVMLError stops it without raising."""
    rig = make_rig(100.0, fake_kwargs={"errors": [ErrorInjection(function="nvmlDeviceGetFieldValues", at_calls=[5])]})
    seen = threading.Event()

    class Watch:
        def __init__(self, dev):
            self.dev, self.uuid, self.kind = dev, dev.uuid, dev.kind

        def read(self):
            r = self.dev.read()
            seen.set()
            return r

    s = Sampler([Watch(rig.devices[0])], interval_s=0.001)
    with s:
        # both waits end as soon as the thread got there (milliseconds); 120 s only bounds a thread that never
        # does, so a loaded machine that schedules it late never fails the test
        assert seen.wait(120)
        s.mark("work")
        deadline = time.monotonic() + 120
        while s.error is None and time.monotonic() < deadline:
            threading.Event().wait(0.005)
    assert s.error is not None and s.ticks == 4 and len(s.snapshot()) == 4
    assert s.marks and s.marks[0][1] == "work" and s.thread_cpu_s >= 0.0


def test_one_hour_at_10_hz_for_8_gpus_fits_in_50_mb():
    assert ROW_BYTES == 62  # 58 + the 4-byte power_avg_w column
    n = buffer_bytes(3600, 0.1, 8)
    assert n < 50e6
    assert n == -(-288_000 // DEFAULT_CHUNK_ROWS) * DEFAULT_CHUNK_ROWS * ROW_BYTES
    buf = ColumnBuffer(chunk_rows=1000)
    row = {k: 0 for k in COLUMNS}
    for _ in range(2500):
        buf.append(row)
    assert buf.rows == 2500 and buf.nbytes == 3 * 1000 * ROW_BYTES == buffer_bytes(250, 0.1, 1, chunk_rows=1000)
    assert len(buf.to_columns()["t_mono_s"]) == 2500


def test_parquet_round_trip_at_native_resolution(tmp_path):
    rig = make_rig(100.0, 300.0)
    s = Sampler(rig.devices, clock=rig.clock)
    _ticks(s, rig.clock, 7, dt=0.037)
    out = s.stop()
    path = write_timeseries_parquet(out, tmp_path / "run" / "timeseries.parquet", t0_mono_s=1000.0,
                                    extra_columns={"experiment_id": "exp-1", "phase": ["w"] * len(out)})
    table = pq.read_table(path)
    assert table.column_names[: len(TIMESERIES_COLUMNS)] == list(TIMESERIES_COLUMNS)
    assert str(table.schema.field("utc").type) == "timestamp[ns, tz=UTC]"
    assert table.column("experiment_id").to_pylist() == ["exp-1"] * len(out)
    assert np.allclose(table.column("t_rel_s").to_numpy(), out["t_mono_s"] - 1000.0)
    assert table.column("device_uuid").to_pylist()[:2] == list(out.device_uuids)
    back = read_timeseries_parquet(path)
    assert back.device_uuids == out.device_uuids
    for k in COLUMNS:
        assert np.array_equal(back[k], out[k], equal_nan=True), k
    assert [p.name for p in path.parent.iterdir()] == ["timeseries.parquet"]  # no temp files left


def test_parquet_rejects_bad_extra_columns(tmp_path):
    s = Sampler([SimulatedDevice(1.0)], clock=FakeClock())
    s.tick()
    with pytest.raises(ValueError, match="collides"):
        write_timeseries_parquet(s.snapshot(), tmp_path / "x.parquet", 0.0, extra_columns={"power_w": 1})
    with pytest.raises(ValueError, match="expected 1"):
        write_timeseries_parquet(s.snapshot(), tmp_path / "x.parquet", 0.0, extra_columns={"a": [1, 2]})


def test_interval_dither_and_full_read_every_are_checked():
    with pytest.raises(ValueError, match="interval_s"):
        Sampler([], interval_s=0)
    with pytest.raises(ValueError, match="dither"):
        Sampler([], dither=1.5)
    with pytest.raises(ValueError, match="full_read_every"):
        Sampler([], full_read_every=0)


def test_dithered_schedule_puts_one_tick_at_a_random_instant_of_each_interval():
    s = Sampler([], interval_s=0.1, seed=3)
    offsets = [s.tick_offset_s(k) for k in range(2000)]
    assert offsets[0] == 0.0 and all(0.0 <= o < 0.1 for o in offsets)
    assert np.mean(offsets[1:]) == pytest.approx(0.05, abs=0.003)  # uniform over the interval
    again = Sampler([], interval_s=0.1, seed=3)
    assert [again.tick_offset_s(k) for k in range(5)] == offsets[:5]
    assert Sampler([], interval_s=0.1, dither=0.0).tick_offset_s(7) == 0.0


def test_fast_ticks_read_power_and_counter_and_hold_the_rest():
    rig = make_rig(100.0)
    s = Sampler(rig.devices, clock=rig.clock, full_read_every=5)
    _ticks(s, rig.clock, 10)
    out = s.snapshot()
    assert rig.fake.calls["nvmlDeviceGetTemperature"] == 2 and rig.fake.calls["nvmlDeviceGetUtilizationRates"] == 2
    assert rig.fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 10
    assert np.all(np.diff(out["energy_mj"]) == 10_000) and np.all(np.isfinite(out["temperature_c"]))
