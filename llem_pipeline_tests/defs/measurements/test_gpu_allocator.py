"""GpuAllocator: leases are exclusive across processes (fcntl locks) and released when the block exits.

Waiting is tested on a fake clock (the allocator's ``time`` replaced): a sleep advances it, so a timeout
of hours passes in no real time and "at once" means "without a single sleep", whatever the machine's load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import llem_pipeline.defs.measurements.gpu_allocator as gpu_allocator
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocationError, GpuAllocator

HOLD = """
import fcntl, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


class FakeTime:
    """Stands in for the ``time`` module of gpu_allocator: ``monotonic()`` reads a clock that only ``sleep`` moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(gpu_allocator, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep,
                                                               time=lambda: 1.8e9))
    return fake


def _hold_in_other_process(lock: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_simulated_lease_hides_gpus(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path))
    with alloc.acquire(1, holder="run-a") as lease:
        assert lease.worker_devices == "simulated"
        assert lease.cuda_visible_devices == ""
        assert "run-a" in (tmp_path / "gpu-simulated.lock").read_text()


def test_lease_skips_a_gpu_held_by_another_process(tmp_path: Path, fake_time: FakeTime) -> None:
    alloc = GpuAllocator(devices="0,1", lock_dir=str(tmp_path), wait_timeout_s=5, poll_interval_s=0.05)
    holder = _hold_in_other_process(tmp_path / "gpu-0.lock", 600)  # killed below; held until then
    try:
        with alloc.acquire(1) as lease:
            assert lease.worker_devices == "1"
            assert lease.cuda_visible_devices == "1"
        assert fake_time.sleeps == []  # the free GPU was taken on the first pass
    finally:
        holder.kill()
        holder.wait()


def test_wait_times_out_while_all_gpus_are_held(tmp_path: Path, fake_time: FakeTime) -> None:
    alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path), wait_timeout_s=3600, poll_interval_s=60)
    holder = _hold_in_other_process(tmp_path / "gpu-simulated.lock", 600)  # killed below; held until then
    try:
        with pytest.raises(GpuAllocationError, match=r"no 1 free GPU.*within 3600 s"), alloc.acquire(1):
            pass
    finally:
        holder.kill()
        holder.wait()
    # it tried every poll interval for the whole hour (on the fake clock), then gave up
    assert fake_time.sleeps == [60] * 61


def test_lock_is_free_again_after_the_holder_dies(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path), wait_timeout_s=10, poll_interval_s=0.05)
    holder = _hold_in_other_process(tmp_path / "gpu-simulated.lock", 600)
    holder.kill()
    holder.wait()  # the kernel drops a dead process's flock before wait() returns: free at the first try
    with alloc.acquire(1) as lease:
        assert lease.worker_devices == "simulated"


def test_two_devices_for_one_experiment_and_too_many(tmp_path: Path, fake_time: FakeTime) -> None:
    # binary fractions: the fake clock adds them exactly
    alloc = GpuAllocator(devices="0,1", lock_dir=str(tmp_path), wait_timeout_s=0.25, poll_interval_s=0.0625)
    with alloc.acquire(2) as lease:
        assert lease.worker_devices == "0,1"
        with pytest.raises(GpuAllocationError), alloc.acquire(1):
            pass
        assert fake_time.sleeps == [0.0625] * 5  # the inner request waited out its 0.25 s (fake) timeout
    with pytest.raises(GpuAllocationError, match="needs 3 GPUs"), alloc.acquire(3):
        pass
    fake_time.sleeps.clear()
    with alloc.acquire(1):
        assert fake_time.sleeps == []  # both devices were released with the block: taken at once, no waiting
