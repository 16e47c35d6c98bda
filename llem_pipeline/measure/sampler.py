"""One sampler thread for all devices, columnar buffers, and the timeseries Parquet sidecar.

The thread wakes at ``start + (k + u_k × dither) × interval`` on the monotonic clock, u_k uniform in
[0, 1) from a seeded generator: no drift (the grid is fixed; late ticks are skipped, not bunched), and
with the default ``dither=1`` one sample falls at a random instant of every interval (stratified
sampling), so a periodic load cannot phase-lock with the sampler and bias the power-trace integral (a
plain 100 ms grid reads a 5 Hz burst at the same two phases forever: up to 60 % error in
bench/energy_accuracy.py). The price is random error instead (about 1-4 % at 100 ms on 30 s of 0.5-5 Hz
square bursts of 100-500 W; under 0.5 % at 10 ms); the energy counter stays the primary estimate.
Each tick reads every device once and appends one row per device to preallocated numpy columns
(``samples.COLUMNS``) that grow by chunks. Any exception in a read (an NVMLError, a lost GPU) ends
sampling: the rows taken so far are kept and ``Sampler.error`` says what happened.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llem_pipeline.measure.devices.protocol import Device, DeviceReading
from llem_pipeline.measure.samples import COLUMNS, Samples

DEFAULT_CHUNK_ROWS = 8192
ROW_BYTES = sum(dt.itemsize for dt in COLUMNS.values())  # 58 bytes per (tick, device)


def buffer_bytes(duration_s: float, interval_s: float, n_devices: int, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> int:
    """Returns the bytes the sampler's buffers hold after ``duration_s`` at ``interval_s`` for ``n_devices``.

    Rows are allocated in whole chunks of ``chunk_rows``, so this is rows rounded up to a chunk × ROW_BYTES.
    """
    rows = math.ceil(duration_s / interval_s) * n_devices
    chunks = max(1, math.ceil(rows / chunk_rows))
    return chunks * chunk_rows * ROW_BYTES


class ColumnBuffer:
    """Growable columnar storage with the columns of ``samples.COLUMNS``; grows by ``chunk_rows`` rows."""

    def __init__(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.chunk_rows = int(chunk_rows)
        self._chunks: list[dict[str, np.ndarray]] = []
        self._n_in_last = 0
        self.rows = 0

    def _new_chunk(self) -> dict[str, np.ndarray]:
        chunk = {k: np.empty(self.chunk_rows, dtype=dt) for k, dt in COLUMNS.items()}
        self._chunks.append(chunk)
        self._n_in_last = 0
        return chunk

    def append(self, values: Mapping[str, Any]) -> None:
        """Appends one row (every column of COLUMNS must be given)."""
        if not self._chunks or self._n_in_last == self.chunk_rows:
            self._new_chunk()
        chunk = self._chunks[-1]
        i = self._n_in_last
        for k in COLUMNS:
            chunk[k][i] = values[k]
        self._n_in_last += 1
        self.rows += 1

    @property
    def nbytes(self) -> int:
        """Returns the bytes allocated by the buffers, B."""
        return sum(a.nbytes for c in self._chunks for a in c.values())

    def to_columns(self) -> dict[str, np.ndarray]:
        """Returns a copy of the filled rows as contiguous columns."""
        if not self._chunks:
            return {k: np.empty(0, dtype=dt) for k, dt in COLUMNS.items()}
        parts = {k: [c[k] for c in self._chunks[:-1]] + [self._chunks[-1][k][: self._n_in_last]] for k in COLUMNS}
        return {k: np.concatenate(v) for k, v in parts.items()}


def _f(value: float | None) -> float:
    return math.nan if value is None else float(value)


class Sampler:
    """Samples every device every ``interval_s`` seconds in one daemon thread.

    ``clock``: monotonic seconds (default ``time.perf_counter``); ``utc_ns``: wall time in ns since the
    epoch. ``dither``/``seed``: the random offset of each tick within its interval (fraction of
    ``interval_s``; 0 = plain grid). ``full_read_every``: read every quantity on every n-th tick and only
    power and the energy counter in between (temperature, clocks, utilisation, memory and clock-event
    reasons then hold their last read); 1 (default) reads everything every tick. Without ``start()``,
    ``tick()`` takes one sample synchronously (tests and fake-clock benches).
    """

    def __init__(
        self,
        devices: Sequence[Device],
        interval_s: float = 0.1,
        *,
        clock: Callable[[], float] = time.perf_counter,
        utc_ns: Callable[[], int] = time.time_ns,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        dither: float = 1.0,
        seed: int | None = 0,
        full_read_every: int = 1,
    ) -> None:
        if not 0.0 <= dither <= 1.0:
            raise ValueError(f"Sampler: dither={dither} must be in [0, 1] (fraction of interval_s)")
        if interval_s <= 0:
            raise ValueError(f"Sampler: interval_s={interval_s} must be > 0 s (e.g. 0.1)")
        if full_read_every < 1:
            raise ValueError(f"Sampler: full_read_every={full_read_every} must be >= 1 (1 = every tick)")
        self.full_read_every = int(full_read_every)
        self._last_full: dict[int, DeviceReading] = {}
        self.devices = list(devices)
        self.device_uuids = tuple(d.uuid for d in self.devices)
        self.interval_s = float(interval_s)
        self.dither = float(dither)
        self._rng = random.Random(seed)
        self.clock = clock
        self.utc_ns = utc_ns
        self._buf = ColumnBuffer(chunk_rows)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.error_message: str | None = None
        self.error_at_s: float | None = None
        self.marks: list[tuple[float, str]] = []
        self.ticks = 0
        self.skipped_ticks = 0
        self.started_at_s: float | None = None
        self.stopped_at_s: float | None = None
        self.thread_cpu_s: float = 0.0  # CPU time the sampler thread used, s (measured when it exits)

    # -- sampling -------------------------------------------------------------------------------
    def tick(self) -> bool:
        """Reads every device once and stores the rows; returns False (and records ``error``) on failure."""
        if self.error is not None:
            return False
        rows = []
        full = self.ticks % self.full_read_every == 0
        try:
            for i, device in enumerate(self.devices):
                t_a = self.clock()
                if full or i not in self._last_full:
                    r = self._last_full[i] = device.read()
                else:  # fast tick: power and counter only; the slow quantities hold their last full read
                    r = dataclasses.replace(self._last_full[i], power_w=device.power_w(), energy_mj=device.energy_mj())
                    if r.energy_mj is None and hasattr(device, "average_power_w"):
                        r = dataclasses.replace(r, power_avg_w=device.average_power_w())
                t_b = self.clock()
                rows.append({
                    "device_index": i,
                    "t_mono_s": 0.5 * (t_a + t_b),
                    "utc_ns": self.utc_ns(),
                    "power_w": _f(r.power_w),
                    "power_avg_w": _f(r.power_avg_w),
                    "energy_mj": _f(r.energy_mj),
                    "temperature_c": _f(r.temperature_c),
                    "sm_clock_mhz": _f(r.sm_clock_mhz),
                    "mem_clock_mhz": _f(r.mem_clock_mhz),
                    "gpu_util_pct": _f(r.gpu_util_pct),
                    "mem_used_mb": _f(r.mem_used_mb),
                    "clock_event_reasons": -1 if r.clock_event_reasons is None else int(r.clock_event_reasons),
                })
            with self._lock:  # storing can fail too (a value the column cannot hold): that also ends sampling
                for row in rows:
                    self._buf.append(row)
                self.ticks += 1
        except Exception as exc:
            self._record_error(exc)
            return False
        return True

    def _record_error(self, exc: BaseException) -> None:
        """Records the exception that ended sampling (the first one wins)."""
        if self.error is None:
            self.error = exc
            self.error_message = f"{type(exc).__name__}: {exc}"
            self.error_at_s = self.clock()

    def tick_offset_s(self, k: int) -> float:
        """Returns the dither of scheduled tick ``k`` (draws the next value of the seeded stream), s.

        Uniform in [0, dither × interval): with dither 1 each interval holds one sample at a random instant
        (stratified sampling: the trace integral is unbiased for any load, periodic ones included). Tick 0
        is not dithered. Call once per scheduled tick, in order (the thread does; a fake-clock driver that
        schedules ticks itself should too, to sample exactly like the thread).
        """
        if k == 0 or self.dither == 0.0:
            return 0.0
        return self._rng.random() * self.dither * self.interval_s

    def _run(self) -> None:
        cpu0 = time.thread_time()
        start = self.started_at_s if self.started_at_s is not None else self.clock()
        k = 0
        try:
            while not self._stop.is_set():
                if not self.tick():
                    break
                k += 1
                now = self.clock()
                if now > start + (k + self.dither) * self.interval_s:  # late: skip missed slots, don't bunch
                    missed = math.floor((now - start) / self.interval_s) + 1 - k
                    self.skipped_ticks += missed
                    k += missed
                next_t = start + k * self.interval_s + self.tick_offset_s(k)
                if self._stop.wait(max(next_t - self.clock(), 0.0)):
                    break
        except Exception as exc:  # the thread must not die silently: record why sampling ended
            self._record_error(exc)
        finally:
            self.thread_cpu_s = time.thread_time() - cpu0

    def start(self) -> Sampler:
        """Starts the thread (first sample immediately); returns self."""
        if self._thread is not None:
            raise RuntimeError("Sampler.start(): already started; create a new Sampler for a new run")
        self.started_at_s = self.clock()
        self._thread = threading.Thread(target=self._run, name="llem-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Samples:
        """Stops the thread (takes one last sample if it is still healthy); returns all samples."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            if self.error is None:
                self.tick()
        self.stopped_at_s = self.clock()
        return self.snapshot()

    @property
    def running(self) -> bool:
        """Returns True while the thread is sampling."""
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> Samples:
        """Returns a copy of the samples taken so far (safe while running)."""
        with self._lock:
            return Samples(self._buf.to_columns(), self.device_uuids)

    def mark(self, label: str) -> float:
        """Records a labelled instant (e.g. 'inference_start'); returns its monotonic time, s."""
        t = self.clock()
        with self._lock:
            self.marks.append((t, label))
        return t

    @property
    def nbytes(self) -> int:
        """Returns the bytes allocated by the sample buffers, B."""
        return self._buf.nbytes

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- Parquet sidecar ------------------------------------------------------------------------------
TIMESERIES_COLUMNS = (
    "device_index", "device_uuid", "t_mono_s", "t_rel_s", "utc", "power_w", "energy_mj", "temperature_c",
    "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "mem_used_mb", "clock_event_reasons",
)


def write_timeseries_parquet(
    samples: Samples,
    path: str | os.PathLike[str],
    t0_mono_s: float,
    extra_columns: Mapping[str, Any] | None = None,
) -> Path:
    """Writes the samples at native resolution as Parquet, atomically (temp file + os.replace).

    Columns: TIMESERIES_COLUMNS (``t_rel_s`` = t_mono_s − t0_mono_s in s; ``utc`` = timestamp[ns, UTC])
    plus ``extra_columns`` (name -> scalar or array of len(samples)). The device UUID order is kept in the
    schema metadata. Returns the path written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = samples.columns
    n = len(samples)
    uuids = np.array(samples.device_uuids or [""], dtype=object)
    idx = c["device_index"].astype(np.int64)
    arrays: dict[str, pa.Array] = {
        "device_index": pa.array(c["device_index"], pa.int16()),
        "device_uuid": pa.array(uuids[idx] if n else np.empty(0, dtype=object), pa.string()),
        "t_mono_s": pa.array(c["t_mono_s"], pa.float64()),
        "t_rel_s": pa.array(c["t_mono_s"] - float(t0_mono_s), pa.float64()),
        "utc": pa.array(c["utc_ns"], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "power_w": pa.array(c["power_w"], pa.float32()),
        "energy_mj": pa.array(c["energy_mj"], pa.float64()),
        "temperature_c": pa.array(c["temperature_c"], pa.float32()),
        "sm_clock_mhz": pa.array(c["sm_clock_mhz"], pa.float32()),
        "mem_clock_mhz": pa.array(c["mem_clock_mhz"], pa.float32()),
        "gpu_util_pct": pa.array(c["gpu_util_pct"], pa.float32()),
        "mem_used_mb": pa.array(c["mem_used_mb"], pa.float32()),
        "clock_event_reasons": pa.array(c["clock_event_reasons"], pa.int64()),
    }
    for name, value in (extra_columns or {}).items():
        if name in arrays:
            raise ValueError(f"write_timeseries_parquet: extra column {name!r} collides with a standard column")
        if np.ndim(value) == 0:
            value = [value] * n
        if len(value) != n:
            raise ValueError(f"write_timeseries_parquet: extra column {name!r} has {len(value)} values, expected {n}")
        arrays[name] = pa.array(value)
    meta = {b"llem_device_uuids": json.dumps(list(samples.device_uuids)).encode(),
            b"llem_t0_mono_s": repr(float(t0_mono_s)).encode()}
    table = pa.table(arrays).replace_schema_metadata(meta)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    return path


def _unlink_quiet(path: str) -> None:
    """Removes a file if it exists (cleanup of a failed atomic write)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_timeseries_parquet(path: str | os.PathLike[str]) -> Samples:
    """Returns the Samples stored in a timeseries Parquet written by ``write_timeseries_parquet``."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    if b"llem_device_uuids" in meta:
        uuids = tuple(json.loads(meta[b"llem_device_uuids"]))
    else:
        idx = table.column("device_index").to_numpy()
        uu = table.column("device_uuid").to_pylist()
        order: dict[int, str] = {}
        for i, u in zip(idx, uu, strict=True):
            order.setdefault(int(i), u)
        uuids = tuple(order[i] for i in sorted(order))
    cols: dict[str, np.ndarray] = {}
    for name, dt in COLUMNS.items():
        if name == "utc_ns":
            arr = table.column("utc").cast("int64").to_numpy()
        elif name not in table.column_names:  # in memory only (power_avg_w): the run folder does not keep it
            arr = np.full(table.num_rows, np.nan if dt.kind == "f" else -1)
        else:
            arr = table.column(name).to_numpy()
        cols[name] = np.asarray(arr, dtype=dt)
    return Samples(cols, uuids)
