"""Idle (baseline) power of the measured GPUs, cached per GPU UUID, and the baseline-adjusted breakdown.

``measure_baseline`` samples the idle devices for ``duration_s`` and takes each device's energy over
that span (counter with boundary correction, trace where unsupported) divided by the span, W. Results
are cached in a JSON file keyed by GPU UUID with a TTL; the file is shared by spawned worker processes
(an exclusive ``fcntl`` lock around read-modify-write, and atomic replace for the write).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from llem_pipeline.domain.metrics import EnergyBreakdown
from llem_pipeline.measure.devices.protocol import Device
from llem_pipeline.measure.energy import window_energy
from llem_pipeline.measure.sampler import Sampler

ADJUSTMENT_METHOD = "subtract_idle_power_x_window"


def default_baseline_cache_path(env: dict[str, str] | None = None) -> Path:
    """Returns ``$LLEM_DATA_DIR/baseline_cache.json`` (default data dir: ./data)."""
    env = dict(os.environ) if env is None else env
    return Path(env.get("LLEM_DATA_DIR", "data")) / "baseline_cache.json"


@dataclass(frozen=True)
class BaselineResult:
    """Idle power of a set of devices. Power in W, durations and ages in s, ``measured_at`` aware UTC."""

    device_uuids: tuple[str, ...]
    idle_power_per_device_w: tuple[float, ...]
    total_idle_power_w: float
    duration_s: float
    sample_count: int
    measured_at: datetime
    provenance: Literal["fresh", "cached"]
    cache_age_s: float | None = None
    warnings: list[str] = field(default_factory=list)


class BaselineCache:
    """A JSON file ``{uuid: {idle_w, duration_s, sample_count, measured_at}}`` shared across processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path) as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, OSError):
            return {}  # a corrupt cache is ignored and rewritten on the next put
        return data if isinstance(data, dict) else {}

    def get(self, uuid: str, ttl_s: float, now: datetime | None = None) -> tuple[dict[str, Any], float] | None:
        """Returns (entry, age s) for ``uuid`` when younger than ``ttl_s``; None otherwise."""
        now = now or datetime.now(UTC)
        with self._locked():
            entry = self._load().get(uuid)
        if not entry:
            return None
        try:
            measured = datetime.fromisoformat(entry["measured_at"])
        except (KeyError, ValueError):
            return None
        age = (now - measured).total_seconds()
        if age < 0 or age > ttl_s:
            return None
        return entry, age

    def put(self, entries: dict[str, dict[str, Any]]) -> None:
        """Merges entries (by UUID) into the file under the lock; the write is atomic."""
        with self._locked():
            data = self._load()
            data.update(entries)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(data, fh, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise


def measure_baseline(
    devices: Sequence[Device],
    duration_s: float,
    interval_s: float = 0.1,
    cache: BaselineCache | None = None,
    ttl_s: float = 3600.0,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    now_utc: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BaselineResult:
    """Returns the idle power of ``devices``: from ``cache`` when every UUID has an entry younger than
    ``ttl_s`` s, else measured now for ``duration_s`` s at ``interval_s`` s (and written to the cache).

    Each device's idle power is its window energy over the span divided by the span, W.
    """
    uuids = tuple(d.uuid for d in devices)
    if cache is not None:
        now = now_utc()
        hits = [cache.get(u, ttl_s, now) for u in uuids]
        if uuids and all(h is not None for h in hits):
            idle = tuple(float(h[0]["idle_w"]) for h in hits)
            oldest = max(hits, key=lambda h: h[1])
            return BaselineResult(
                device_uuids=uuids,
                idle_power_per_device_w=idle,
                total_idle_power_w=float(sum(idle)),
                duration_s=float(oldest[0].get("duration_s", 0.0)),
                sample_count=int(sum(int(h[0].get("sample_count", 0)) for h in hits)),
                measured_at=datetime.fromisoformat(oldest[0]["measured_at"]),
                provenance="cached",
                cache_age_s=float(oldest[1]),
            )
    if duration_s <= 0:
        raise ValueError(f"measure_baseline: duration_s={duration_s} must be > 0 s (e.g. 30)")
    sampler = Sampler(devices, interval_s, clock=clock)
    measured_at = now_utc()
    t0 = clock()
    k = 0
    while True:
        if not sampler.tick():
            break
        k += 1
        target = t0 + k * interval_s
        if target > t0 + duration_s:
            break
        delay = target - clock()
        if delay > 0:
            sleep(delay)
    samples = sampler.stop()
    t1 = float(samples["t_mono_s"].max()) if len(samples) else t0
    span = t1 - t0
    if span <= 0:
        raise RuntimeError(
            f"measure_baseline: no usable idle samples ({sampler.error_message or 'sampling ended at once'})")
    w = window_energy(samples, t0, t1, device_kinds=[d.kind for d in devices], interval_s=interval_s,
                      sampler_error=sampler.error_message, n_devices=len(devices))
    # Idle power = mean of the sampled power over the span (the trace integral / span): the counter's
    # ~100 ms steps make a plain delta err by up to one step at each end, ~4 % on a 1 s baseline.
    idle = tuple((tr if tr is not None else e) / span
                 for tr, e in zip(w.trace_energy_per_device_j, w.energy_per_device_j, strict=True))
    result = BaselineResult(
        device_uuids=uuids,
        idle_power_per_device_w=idle,
        total_idle_power_w=float(sum(idle)),
        duration_s=span,
        sample_count=len(samples),
        measured_at=measured_at,
        provenance="fresh",
        cache_age_s=None,
        warnings=[x for x in w.warnings if not x.startswith(("simulated_device", "replay_device"))],
    )
    if cache is not None and sampler.error is None:
        per_dev = max(len(samples) // max(len(devices), 1), 1)
        cache.put({
            u: {"idle_w": p, "duration_s": span, "sample_count": per_dev, "measured_at": measured_at.isoformat(),
                "kind": d.kind}
            for u, p, d in zip(uuids, idle, devices, strict=True)
        })
    return result


def energy_breakdown(
    raw_j: float,
    baseline: BaselineResult | None,
    window_s: float,
    method: str | None = None,
    uncertainty_j: float | None = None,
    trace_j: float | None = None,
) -> EnergyBreakdown:
    """Returns the EnergyBreakdown of a window: raw J, idle W × window s subtracted, floored at 0 J.

    Without a baseline the adjusted energy is None and provenance 'unavailable'.
    """
    if baseline is None:
        return EnergyBreakdown(
            raw_energy_j=raw_j, provenance="unavailable", energy_method=method,
            uncertainty_j=uncertainty_j, trace_energy_j=trace_j,
        )
    adjusted = raw_j - baseline.total_idle_power_w * window_s
    floored = adjusted < 0
    return EnergyBreakdown(
        raw_energy_j=raw_j,
        baseline_power_w=baseline.total_idle_power_w,
        baseline_duration_sec=window_s,
        adjusted_energy_j=max(adjusted, 0.0),
        adjustment_method=ADJUSTMENT_METHOD,
        provenance=baseline.provenance,
        baseline_floored=floored,
        baseline_measured_at=baseline.measured_at.isoformat(),
        baseline_cache_age_sec=baseline.cache_age_s,
        energy_method=method,
        uncertainty_j=uncertainty_j,
        trace_energy_j=trace_j,
    )
