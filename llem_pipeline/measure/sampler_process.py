"""The sampler in its own process: NVML reads and boundary polls never share the engine's GIL.

A sampler thread inside the engine process costs the engine a GIL hand-off at every tick (about 0.6 ms
of a decoding step on the 2-core CI machine for 30 µs of sampling; on a GPU host every ctypes NVML call
hands the GIL over twice), and dense boundary polls at the window's start would cost dozens of those.
``ProcessSampler`` runs the same ``Sampler`` (thread, schedule, columns) and the energy monitor's edge
polls in a spawned child that opens the same GPUs itself (by UUID, through its own NVML handle), so the
engine process only sends a few commands outside the window and one at its start (like Zeus's
``PowerMonitor``, which samples from a separate process for the same reason).

Protocol (one duplex pipe, requests answered in order): ``start``, ``snapshot``, ``poll`` (dense counter
polls until the next update edge; asynchronous for the window's start, so the engine runs meanwhile)
and ``stop``. Readings from both processes are comparable: ``time.perf_counter`` is CLOCK_MONOTONIC,
shared by every process of the host, and the energy counter is the GPU's own.

Only devices that can be opened again in another process qualify (``child_opener``): NVML devices (the
real ``pynvml``, or a ``FakePynvml`` whose simulated GPUs run on the real monotonic clock, so both
processes read the same deterministic device). In-process simulated devices (the activity-driven demo
GPU, fake clocks) keep the thread sampler. The child dies with its parent (EOF on the pipe).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
import signal
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

from llem_pipeline.measure.samples import Samples

START_TIMEOUT_S = 120.0  # spawning a child and opening NVML in it; generous on a loaded host
REPLY_TIMEOUT_S = 30.0  # any command but a poll (which adds its own timeout)


class SamplerProcessError(RuntimeError):
    """The sampler process failed or is gone; the message says what happened."""


def _open_nvml_in_child(module: Any, uuids: list[str]) -> list[Any]:
    """Opens the NVML devices ``uuids`` in this process (``module`` None = ``import pynvml``); returns them."""
    from llem_pipeline.measure.devices.nvml import open_nvml_devices

    return open_nvml_devices(uuids, nvml=module, env={})


def child_opener(devices: Sequence[Any]) -> tuple[Callable[[], list[Any]] | None, str]:
    """Returns (a picklable callable that opens the same devices in another process, ''), or (None, why not).

    NVML devices qualify when they share one NVML module: the real ``pynvml`` (the child imports it) or a
    fake that can be rebuilt in the child (``FakePynvml`` on the real clock). Anything else (in-process
    simulated GPUs, replayed traces, a fake clock) returns None and a one-line reason.
    """
    if not devices:
        return None, "no devices to sample"
    if any(getattr(d, "kind", None) != "nvml" or not hasattr(d, "nvml") for d in devices):
        kinds = sorted({str(getattr(d, "kind", "?")) for d in devices})
        return None, f"device kind(s) {kinds} live in this process only (only NVML devices can be reopened)"
    module = devices[0].nvml
    if any(d.nvml is not module for d in devices):
        return None, "the devices come from different NVML modules"
    if type(module) is types.ModuleType:  # the real pynvml: the child imports its own
        child_module = None
    else:
        try:
            pickle.dumps(module)
        except Exception as exc:
            return None, f"the NVML module {type(module).__name__} cannot be rebuilt in a child ({exc})"
        child_module = module
    return functools.partial(_open_nvml_in_child, child_module, [d.uuid for d in devices]), ""


def _state(sampler: Any) -> dict[str, Any]:
    """Returns the sampler's columns and health as a picklable dict."""
    return {
        "columns": sampler.snapshot().columns,
        "error_message": sampler.error_message,
        "error_at_s": sampler.error_at_s,
        "ticks": sampler.ticks,
        "skipped_ticks": sampler.skipped_ticks,
        "thread_cpu_s": sampler.thread_cpu_s,
    }


def _child_main(conn: Any, opener: Callable[[], list[Any]], sampler_kwargs: dict[str, Any],
                poll_interval_s: float) -> None:
    """The child: open the devices, then serve commands until ``stop`` or the parent is gone."""
    from llem_pipeline.measure.devices.nvml import close_devices
    from llem_pipeline.measure.energy import EnergyMonitor
    from llem_pipeline.measure.sampler import Sampler

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    try:
        devices = opener()
    except BaseException as exc:
        conn.send(("fail", f"opening the devices in the sampler process failed: {type(exc).__name__}: {exc}"))
        return
    sampler = Sampler(devices, **sampler_kwargs)
    monitor = EnergyMonitor(devices, poll_interval_s=poll_interval_s, start_polls="inline")
    conn.send(("ok", {"pid": os.getpid(), "uuids": [d.uuid for d in devices]}))
    try:
        while True:
            try:
                cmd, arg = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            try:
                if cmd == "start":
                    sampler.start()
                    conn.send(("ok", None))
                elif cmd == "snapshot":
                    conn.send(("ok", _state(sampler)))
                elif cmd == "poll":
                    t0, rows = monitor.poll_edges(**arg)
                    conn.send(("ok", {"t_boundary": t0, "rows": rows, "polls": monitor.poll_count,
                                      "read_errors": monitor.read_errors}))
                elif cmd == "stop":
                    sampler.stop()
                    conn.send(("ok", _state(sampler)))
                    return
                else:
                    conn.send(("fail", f"unknown sampler command {cmd!r}"))
            except Exception as exc:
                conn.send(("fail", f"{type(exc).__name__}: {exc}"))
    finally:
        if sampler.running:
            sampler.stop()
        close_devices(devices)


class PendingPolls:
    """Boundary polls running in the sampler process; ``result()`` waits for them."""

    def __init__(self, owner: ProcessSampler, ticket: int, timeout_s: float) -> None:
        self._owner, self._ticket, self._timeout_s = owner, ticket, timeout_s

    def result(self) -> tuple[float, dict[int, list[tuple[float, float, float, float]]]]:
        """Returns (boundary time s, reads per device: (t_energy s, mJ, t_power s, W)); raises
        SamplerProcessError when the polls failed or the process is gone."""
        reply = self._owner._await(self._ticket, self._timeout_s + REPLY_TIMEOUT_S)
        self._owner.poll_count = reply["polls"]
        self._owner.read_errors = reply["read_errors"]
        return reply["t_boundary"], reply["rows"]


class ProcessSampler:
    """The Sampler's interface (start, snapshot, stop, error) served by a spawned child process.

    ``opener``: from ``child_opener(devices)``. ``device_uuids``: the parent's device order (the child's
    rows use the same ``device_index``). ``interval_s``/``dither``/``seed``/``full_read_every``: as for
    ``Sampler``. ``poll_interval_s``: period of the child's boundary polls, s. ``prepare()`` spawns the
    child early (e.g. during model load); ``start()`` waits for it and starts sampling.
    """

    def __init__(self, opener: Callable[[], list[Any]], device_uuids: Sequence[str], interval_s: float = 0.1, *,
                 dither: float = 1.0, seed: int | None = 0, full_read_every: int = 1,
                 poll_interval_s: float = 0.0005, clock: Callable[[], float] = time.perf_counter) -> None:
        self.device_uuids = tuple(device_uuids)
        self.interval_s = float(interval_s)
        self.clock = clock
        self._opener = opener
        self._sampler_kwargs = {"interval_s": self.interval_s, "dither": dither, "seed": seed,
                                "full_read_every": full_read_every}
        self._poll_interval_s = float(poll_interval_s)
        self._proc: Any = None
        self._conn: Any = None
        self._sent = 0  # requests sent (the first, the child's ready message, counts as request 0)
        self._received = 0
        self._replies: dict[int, tuple[str, Any]] = {}
        self._started = False
        self._dead = False  # the child is gone or stopped answering (a sampler error inside it is not that)
        self._stopped_samples: Samples | None = None
        self.pid: int | None = None
        self.error: BaseException | None = None
        self.error_message: str | None = None
        self.error_at_s: float | None = None
        self.ticks = 0
        self.skipped_ticks = 0
        self.thread_cpu_s = 0.0
        self.poll_count = 0
        self.read_errors = 0
        self.started_at_s: float | None = None
        self.stopped_at_s: float | None = None
        self.marks: list[tuple[float, str]] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def prepare(self) -> ProcessSampler:
        """Spawns the child (it opens the devices in the background); returns self. Idempotent."""
        if self._proc is None:
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe(duplex=True)
            self._proc = ctx.Process(target=_child_main, name="llem-sampler", daemon=True,
                                     args=(child, self._opener, self._sampler_kwargs, self._poll_interval_s))
            self._proc.start()
            child.close()
            self._sent = 1  # the ready message answers an implicit request 0
        return self

    def start(self) -> ProcessSampler:
        """Waits for the child's devices and starts sampling (first sample at once); returns self.

        Raises SamplerProcessError (the child could not open the devices, or died) and kills the child.
        """
        if self._started:
            raise RuntimeError("ProcessSampler.start(): already started; create a new one for a new run")
        self.prepare()
        try:
            info = self._await(0, START_TIMEOUT_S)
            self.pid = info["pid"]
            if tuple(info["uuids"]) != self.device_uuids:
                raise SamplerProcessError(f"the sampler process opened {info['uuids']}, expected {list(self.device_uuids)}")
            self.started_at_s = self.clock()
            self._await(self._send("start", None), REPLY_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        self._started = True
        return self

    def stop(self) -> Samples:
        """Stops sampling (one last sample if healthy) and ends the child; returns all samples.

        When the child is gone, returns what the last snapshot held (possibly nothing) with ``error`` set.
        """
        if self._stopped_samples is not None:
            return self._stopped_samples
        samples = Samples.empty(self.device_uuids)
        if self._started and not self._dead:  # a sampler error inside a live child still hands its rows over
            try:
                samples = self._apply(self._await(self._send("stop", None), REPLY_TIMEOUT_S))
            except SamplerProcessError:
                pass
        self.close(grace_s=5.0)
        self.stopped_at_s = self.clock()
        self._stopped_samples = samples
        return samples

    def close(self, grace_s: float = 0.0) -> None:
        """Ends the child (waits ``grace_s`` s for it to exit, then SIGKILL) and closes the pipe. Idempotent."""
        if self._proc is not None:
            self._proc.join(timeout=grace_s)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def running(self) -> bool:
        """Returns True while the child samples."""
        return self._started and self._stopped_samples is None and self._proc is not None and self._proc.is_alive()

    # -- commands -------------------------------------------------------------------------------
    def snapshot(self) -> Samples:
        """Returns a copy of the samples taken so far (a round trip to the child)."""
        if self._stopped_samples is not None:
            return self._stopped_samples
        try:
            return self._apply(self._await(self._send("snapshot", None), REPLY_TIMEOUT_S))
        except SamplerProcessError:
            return Samples.empty(self.device_uuids)

    def poll_edges_async(self, until_edges: int, timeout_s: float, min_s: float = 0.0,
                         power_span_s: float = 0.0) -> PendingPolls:
        """Starts boundary polls in the child (counter and power every ``poll_interval_s`` until the counter
        stepped ``until_edges`` times, at most ``timeout_s`` s; devices without a counter: power for
        ``power_span_s`` s) and returns at once; see ``PendingPolls``."""
        ticket = self._send("poll", {"until_edges": until_edges, "timeout_s": timeout_s, "min_s": min_s,
                                     "power_span_s": power_span_s})
        return PendingPolls(self, ticket, max(timeout_s, power_span_s))

    def mark(self, label: str) -> float:
        """Records a labelled instant (same clock as the child's rows); returns it, s."""
        t = self.clock()
        self.marks.append((t, label))
        return t

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, cmd: str, arg: Any) -> int:
        """Sends one request; returns its ticket (-1 when the child is gone: awaiting it raises)."""
        if self._conn is None or self._dead:
            return -1
        try:
            self._conn.send((cmd, arg))
        except (OSError, ValueError):
            self._fail(self._gone())
            return -1
        self._sent += 1
        return self._sent - 1

    def _await(self, ticket: int, timeout_s: float) -> Any:
        """Returns the payload of reply ``ticket``; raises SamplerProcessError on failure, death or timeout."""
        deadline = time.monotonic() + timeout_s
        while ticket >= 0 and ticket not in self._replies and not self._dead:
            left = deadline - time.monotonic()
            try:
                ready = left > 0 and self._conn.poll(left)
                if not ready:
                    self._fail(f"the sampler process did not answer within {timeout_s:.0f} s")
                    break
                self._replies[self._received] = self._conn.recv()
                self._received += 1
            except (EOFError, OSError):
                self._fail(self._gone())
        if ticket < 0 or ticket not in self._replies:
            raise SamplerProcessError(self.error_message or "the sampler process is gone")
        status, payload = self._replies.pop(ticket)
        if status != "ok":
            raise SamplerProcessError(str(payload))
        return payload

    def _gone(self) -> str:
        """Returns why the pipe broke: the child's exit (code, or -signal) as far as it is known."""
        code = None
        if self._proc is not None:
            self._proc.join(timeout=1.0)
            code = self._proc.exitcode
        return (f"the sampler process (pid {self.pid}) exited unexpectedly (exit code {code}); "
                "the samples it held are lost, the window's energy comes from the boundary polls")

    def _fail(self, message: str) -> None:
        """Records that the child is gone or unresponsive, and why sampling ended (the first reason wins)."""
        self._dead = True
        if self.error is None:
            self.error = SamplerProcessError(message)
            self.error_message = f"SamplerProcessError: {message}"
            self.error_at_s = self.clock()

    def _apply(self, state: dict[str, Any]) -> Samples:
        """Takes the child's health into this object; returns its samples."""
        self.ticks = state["ticks"]
        self.skipped_ticks = state["skipped_ticks"]
        self.thread_cpu_s = state["thread_cpu_s"]
        if state["error_message"] and self.error is None:
            self.error = SamplerProcessError(state["error_message"])
            self.error_message = state["error_message"]
            self.error_at_s = state["error_at_s"]
        return Samples(state["columns"], self.device_uuids)

    def __enter__(self) -> ProcessSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
