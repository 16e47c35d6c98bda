"""GpuAllocator: leases are exclusive across processes (fcntl locks) and released when the block exits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocationError, GpuAllocator

HOLD = """
import fcntl, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


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


def test_lease_skips_a_gpu_held_by_another_process(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="0,1", lock_dir=str(tmp_path), wait_timeout_s=5, poll_interval_s=0.05)
    holder = _hold_in_other_process(tmp_path / "gpu-0.lock", 30)
    try:
        with alloc.acquire(1) as lease:
            assert lease.worker_devices == "1"
            assert lease.cuda_visible_devices == "1"
    finally:
        holder.kill()
        holder.wait()


def test_wait_times_out_while_all_gpus_are_held(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path), wait_timeout_s=0.3, poll_interval_s=0.05)
    holder = _hold_in_other_process(tmp_path / "gpu-simulated.lock", 30)
    try:
        with pytest.raises(GpuAllocationError, match="no 1 free GPU"), alloc.acquire(1):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_free_again_after_the_holder_dies(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path), wait_timeout_s=10, poll_interval_s=0.05)
    holder = _hold_in_other_process(tmp_path / "gpu-simulated.lock", 30)
    holder.kill()
    holder.wait()
    with alloc.acquire(1) as lease:
        assert lease.worker_devices == "simulated"


def test_two_devices_for_one_experiment_and_too_many(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="0,1", lock_dir=str(tmp_path), wait_timeout_s=0.2, poll_interval_s=0.05)
    with alloc.acquire(2) as lease:
        assert lease.worker_devices == "0,1"
        with pytest.raises(GpuAllocationError), alloc.acquire(1):
            pass
    with pytest.raises(GpuAllocationError, match="needs 3 GPUs"), alloc.acquire(3):
        pass
    start = time.monotonic()
    with alloc.acquire(1):
        assert time.monotonic() - start < 1.0
