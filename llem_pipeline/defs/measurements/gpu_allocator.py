"""GpuAllocator: which GPU(s) a measurement gets, held by a per-GPU ``fcntl`` file lock.

Dagster's pool "gpu" counts how many GPU steps run at once; it does not say which GPU. The allocator
does: it locks ``<lock_dir>/gpu-<token>.lock`` for each device it hands out. The kernel drops the lock
when the holding process dies, so a crashed step never leaves a GPU taken.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import dagster as dg
from pydantic import Field

from llem_pipeline.defs.measurements.devices import SIMULATED, DeviceSlot, parse_devices
from llem_pipeline.paths import data_dir


@dataclass(frozen=True)
class GpuLease:
    """Devices held for one measurement, and how long the lease waited for the cooldown gap (s)."""

    slots: tuple[DeviceSlot, ...]
    gap_wait_s: float = 0.0

    @property
    def worker_devices(self) -> str:
        """Return the worker's ``--devices`` value: 'simulated' or a comma list of indices/UUIDs."""
        if any(s.simulated for s in self.slots):
            return SIMULATED
        return ",".join(s.token for s in self.slots)

    @property
    def cuda_visible_devices(self) -> str:
        """Return CUDA_VISIBLE_DEVICES for the worker ('' hides every GPU for a simulated measurement)."""
        return "" if any(s.simulated for s in self.slots) else self.worker_devices


def _cooldown(locks: list[Path], gap_s: float, sleep: Callable[[float], None]) -> float:
    """Sleep until ``gap_s`` s have passed since the last release of any of ``locks``; return the wait, s."""
    if gap_s <= 0:
        return 0.0
    released = [t for t in (_released_at(lock) for lock in locks) if t is not None]
    wait = max(0.0, max(released) + gap_s - time.monotonic()) if released else 0.0
    if wait > 0:
        sleep(wait)
    return wait


class GpuAllocationError(RuntimeError):
    """No lease could be given (too many devices asked for, or the wait timed out)."""


def _try_lock(path: Path, holder: str) -> IO[str] | None:
    """Return the open, locked file of ``path``, or None when another process holds it."""
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the lease's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{holder} pid={os.getpid()} since={time.time():.0f}\n")
    handle.flush()
    return handle


def _holder(lock: Path) -> str:
    """Return the holder line a lock file names ('' when unreadable)."""
    try:
        return lock.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _released_path(lock: Path) -> Path:
    """Return the file beside ``lock`` holding when its device was last released (monotonic s)."""
    return lock.with_suffix(".released")


def _mark_released(lock: Path) -> None:
    """Record now (``time.monotonic()``, s: the same clock in every process of the host) as the release time."""
    try:
        _released_path(lock).write_text(f"{time.monotonic():.6f}\n", encoding="utf-8")
    except OSError:
        pass  # a missing mark only skips the next lease's cooldown


def _released_at(lock: Path) -> float | None:
    """Return the last release time of the device of ``lock`` (monotonic s), or None when unknown."""
    try:
        return float(_released_path(lock).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


class GpuAllocator(dg.ConfigurableResource):
    """Hands out GPUs to measurement steps under a per-GPU file lock.

    ``devices``: 'auto' (every NVML GPU), 'simulated' (the simulated GPU, labelled simulated), or a
    comma list of GPU indices/UUIDs such as '0,1'. Set from the environment variable LLEM_DEVICES.
    """

    devices: str = Field(description="'auto' | 'simulated' | comma list of GPU indices or UUIDs (LLEM_DEVICES)")
    target: str = Field(default="", description="Hardware target this host serves (LLEM_TARGET, e.g. 'h100'); "
                        "'' = 'sim' for the simulated GPU, 'gpu' otherwise")
    lock_dir: str = Field(default="", description="Folder of the lock files; '' = <data_dir>/locks")
    wait_timeout_s: float = Field(default=6 * 3600.0, gt=0, description="Longest wait for free GPUs, s")
    poll_interval_s: float = Field(default=0.05, gt=0, description="Pause between lock attempts, s")

    def slots(self) -> list[DeviceSlot]:
        """Return the configured device slots; raises DeviceSpecError for a bad or unusable LLEM_DEVICES."""
        return parse_devices(self.devices)

    def lock_folder(self) -> Path:
        """Return the lock folder (created if missing)."""
        folder = Path(self.lock_dir) if self.lock_dir else data_dir() / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextmanager
    def acquire(self, count: int = 1, holder: str = "", gap_s: float = 0.0, lock_dir: Path | None = None,
                sleep: Callable[[float], None] = time.sleep,
                on_wait: Callable[[str], None] | None = None) -> Iterator[GpuLease]:
        """Yield a GpuLease of ``count`` devices, each locked until the block exits.

        ``gap_s``: the cooldown a study asks for between experiments, s: with the devices locked, the lease
        waits until ``gap_s`` s have passed since any of them was last released (by any process), so
        consecutive measurements on a GPU are at least that far apart whoever launched them. A simulated
        device is shared by design of the simulation but still locked, so two simulated measurements never
        overlap either. Raises GpuAllocationError when ``count`` exceeds the devices or no devices came free
        within ``wait_timeout_s`` seconds. ``lock_dir`` overrides the lock folder (the code location passes
        LlemPaths.locks()). ``on_wait(text)`` is called once if the devices are busy, naming their holders.
        """
        slots = self.slots()
        simulated = any(s.simulated for s in slots)
        need = 1 if simulated else count
        if need > len(slots):
            raise GpuAllocationError(
                f"the experiment needs {count} GPUs but LLEM_DEVICES={self.devices!r} offers {len(slots)}: "
                "list more devices or lower tensor_parallel_size / num_processes"
            )
        folder = Path(lock_dir) if lock_dir is not None else self.lock_folder()
        folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            with ExitStack() as stack:
                taken: list[DeviceSlot] = []
                for slot in slots:
                    handle = _try_lock(folder / slot.lock_name, holder)
                    if handle is None:
                        continue
                    stack.callback(handle.close)  # closing the file releases the flock
                    stack.callback(_mark_released, folder / slot.lock_name)  # runs before the close
                    taken.append(slot)
                    if len(taken) == need:
                        break
                if len(taken) == need:
                    waited = _cooldown([folder / s.lock_name for s in taken], gap_s, sleep)
                    yield GpuLease(slots=tuple(taken), gap_wait_s=waited)
                    return
            if on_wait is not None:
                on_wait(f"waiting for {need} GPU(s) among {[s.token for s in slots]}: held by "
                        + "; ".join(_holder(folder / s.lock_name) for s in slots))
                on_wait = None
            if time.monotonic() > deadline:
                raise GpuAllocationError(
                    f"no {need} free GPU(s) among {[s.token for s in slots]} within {self.wait_timeout_s:.0f} s "
                    f"(lock files in {folder} name the holders)"
                )
            time.sleep(self.poll_interval_s)
