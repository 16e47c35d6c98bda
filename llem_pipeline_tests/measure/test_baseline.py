"""Idle baseline: measurement, per-UUID cache with TTL shared across processes, EnergyBreakdown."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta

import pytest

from llem_pipeline.domain.metrics import EnergyBreakdown
from llem_pipeline.measure.baseline import (
    BaselineCache,
    BaselineResult,
    default_baseline_cache_path,
    energy_breakdown,
    measure_baseline,
)
from llem_pipeline.measure.devices.simulated import Constant, Noisy
from llem_pipeline_tests.measure.sim_rig import make_rig

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Now:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def test_fresh_baseline_is_the_idle_power_of_each_device(tmp_path):
    rig = make_rig(61.0, Noisy(Constant(48.0), 3.0, seed=2))
    now = Now()
    cache = BaselineCache(tmp_path / "baseline_cache.json")
    b = measure_baseline(rig.devices, 10.0, 0.1, cache=cache, clock=rig.clock, sleep=rig.clock.sleep, now_utc=now)
    assert b.provenance == "fresh" and b.cache_age_s is None
    assert b.idle_power_per_device_w[0] == pytest.approx(61.0, rel=1e-3)
    assert b.idle_power_per_device_w[1] == pytest.approx(48.0, rel=0.01)
    assert b.total_idle_power_w == pytest.approx(sum(b.idle_power_per_device_w))
    assert b.duration_s == pytest.approx(10.0, abs=0.11) and b.sample_count == 2 * 101
    assert b.measured_at == T0 and b.device_uuids == tuple(d.uuid for d in rig.devices)
    assert not b.warnings


def test_cache_hit_within_ttl_and_remeasure_after(tmp_path):
    rig = make_rig(70.0)
    now = Now()
    cache = BaselineCache(tmp_path / "c.json")
    kw = dict(cache=cache, ttl_s=3600, clock=rig.clock, sleep=rig.clock.sleep, now_utc=now)
    first = measure_baseline(rig.devices, 2.0, **kw)
    now.t = T0 + timedelta(minutes=30)
    reads = rig.fake.calls["nvmlDeviceGetTotalEnergyConsumption"]
    hit = measure_baseline(rig.devices, 2.0, **kw)
    assert hit.provenance == "cached" and hit.cache_age_s == pytest.approx(1800.0)
    assert hit.idle_power_per_device_w == first.idle_power_per_device_w and hit.measured_at == T0
    assert rig.fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == reads  # no device reads for a hit
    now.t = T0 + timedelta(hours=2)
    assert measure_baseline(rig.devices, 2.0, **kw).provenance == "fresh"


def test_corrupt_cache_is_ignored(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    assert BaselineCache(path).get("GPU-1", 3600) is None


def _child_put(path: str, uuid: str, watts: float, n: int) -> None:
    cache = BaselineCache(path)
    for i in range(n):
        cache.put({f"{uuid}-{i}": {"idle_w": watts, "duration_s": 1.0, "sample_count": 1,
                                   "measured_at": datetime.now(UTC).isoformat()}})


@pytest.mark.slow
def test_cache_is_shared_by_spawned_processes_without_lost_updates(tmp_path):
    path = str(tmp_path / "shared" / "baseline_cache.json")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child_put, args=(path, f"GPU-{k}", 50.0 + k, 25)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    cache = BaselineCache(path)
    for k in range(3):
        for i in range(25):
            entry, age = cache.get(f"GPU-{k}-{i}", 3600)
            assert entry["idle_w"] == 50.0 + k and age >= 0


def _baseline(total_w: float) -> BaselineResult:
    return BaselineResult(("GPU-a",), (total_w,), total_w, 30.0, 300, T0, "cached", 12.0)


def test_energy_breakdown_subtracts_idle_power_times_window_and_floors_at_zero():
    b = energy_breakdown(1000.0, _baseline(60.0), 10.0, "nvml_counter", 0.4, 990.0)
    assert isinstance(b, EnergyBreakdown)
    assert b.adjusted_energy_j == pytest.approx(400.0) and not b.baseline_floored
    assert b.baseline_power_w == 60.0 and b.baseline_duration_sec == 10.0 and b.provenance == "cached"
    assert b.baseline_cache_age_sec == 12.0 and b.baseline_measured_at == T0.isoformat()
    assert b.energy_method == "nvml_counter" and b.uncertainty_j == 0.4 and b.trace_energy_j == 990.0
    floored = energy_breakdown(500.0, _baseline(60.0), 10.0)
    assert floored.adjusted_energy_j == 0.0 and floored.baseline_floored
    none = energy_breakdown(500.0, None, 10.0, "simulated")
    assert none.adjusted_energy_j is None and none.provenance == "unavailable"


def test_default_cache_path_is_under_the_data_dir():
    assert default_baseline_cache_path({"LLEM_DATA_DIR": "/x/data"}).as_posix() == "/x/data/baseline_cache.json"
    assert default_baseline_cache_path({}).as_posix() == "data/baseline_cache.json"


def test_duration_must_be_positive():
    rig = make_rig(10.0)
    with pytest.raises(ValueError, match="duration_s"):
        measure_baseline(rig.devices, 0.0, clock=rig.clock, sleep=rig.clock.sleep)
