"""GpuAllocator cooldown: a lease waits the study's gap after the GPU's previous release (any process)."""

from __future__ import annotations

import time
from pathlib import Path

from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator


def test_a_lease_waits_the_gap_after_the_previous_release(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path))
    slept: list[float] = []
    with alloc.acquire(1, holder="first", gap_s=30.0, sleep=slept.append) as lease:
        assert lease.gap_wait_s == 0.0  # nothing was released before: no wait
    released = float((tmp_path / "gpu-simulated.released").read_text())
    before = time.monotonic()
    with alloc.acquire(1, holder="second", gap_s=30.0, sleep=slept.append) as lease:
        after = time.monotonic()
    # it asked to sleep until 30 s after the release (the sleep is injected, so nothing waits here)
    [wait] = slept
    assert lease.gap_wait_s == wait
    assert released + 30.0 - after <= wait <= released + 30.0 - before


def test_no_gap_no_wait_and_an_old_release_is_no_reason_to_wait(tmp_path: Path) -> None:
    alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path))
    (tmp_path / "gpu-simulated.released").write_text(f"{time.monotonic() - 100.0:.6f}\n")
    slept: list[float] = []
    with alloc.acquire(1, gap_s=30.0, sleep=slept.append) as lease:
        assert lease.gap_wait_s == 0.0
    with alloc.acquire(1, gap_s=0.0, sleep=slept.append) as lease:
        assert lease.gap_wait_s == 0.0
    assert slept == []


def test_a_busy_gpu_names_its_holder_once_while_the_lease_waits(tmp_path: Path) -> None:
    import fcntl

    import pytest

    from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocationError

    lock = tmp_path / "gpu-simulated.lock"
    with open(lock, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        held.write("run-before pid=1 since=0\n")
        held.flush()
        said: list[str] = []
        # the deadline (0.2 s) only ends this test's wait; what is checked is who was named, and how often
        alloc = GpuAllocator(devices="simulated", lock_dir=str(tmp_path), wait_timeout_s=0.2, poll_interval_s=0.01)
        with pytest.raises(GpuAllocationError), alloc.acquire(1, holder="next", on_wait=said.append):
            pass
    assert len(said) == 1 and "held by run-before pid=1" in said[0]
