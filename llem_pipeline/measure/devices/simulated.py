"""A deterministic simulated GPU: scripted power models, an NVML-like stepping energy counter, scripted
temperature and clock-event reasons.

Everything is a function of ``t`` = seconds since the device started (``clock() - start_s``), so a fake
clock makes every reading reproducible. Power models expose ``power_w(t)`` (W) and ``cumulative_j(t)``
(J from t=0 to t, exact), which gives the true energy of any window for tests and benchmarks.

The energy counter mimics NVML's ``nvmlDeviceGetTotalEnergyConsumption``: an integer in mJ that only
changes at update edges ``phase + k * period`` (default every 0.1 s); between edges it holds the energy
integrated up to the last edge. Optional wrap (modulus) and reset (the counter restarts at 0 at a time).
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from llem_pipeline.measure.devices.protocol import (
    CLOCK_EVENT_GPU_IDLE,
    CLOCK_EVENT_HW_THERMAL,
    CLOCK_EVENT_SW_THERMAL,
    DeviceKindName,
    DeviceReading,
)

_SIM_NAMESPACE = uuid_mod.UUID("6c1e3b5e-9a57-4d0e-8f0b-2b8d0f7a11e5")


@runtime_checkable
class PowerModel(Protocol):
    """Power as a function of time since device start."""

    def power_w(self, t: float) -> float:
        """Instant power at ``t`` s since start, W."""
        ...

    def cumulative_j(self, t: float) -> float:
        """Energy from 0 to ``t`` s since start, J (exact)."""
        ...


@dataclass(frozen=True)
class Constant:
    """Constant power, W."""

    watts: float

    def power_w(self, t: float) -> float:
        """Returns the constant power, W."""
        return float(self.watts)

    def cumulative_j(self, t: float) -> float:
        """Returns watts × max(t, 0), J."""
        return float(self.watts) * max(t, 0.0)


@dataclass(frozen=True)
class SquareBursts:
    """Square wave: ``high_w`` for ``duty`` of every period, ``low_w`` otherwise; ``phase_s`` shifts it."""

    frequency_hz: float
    duty: float
    low_w: float
    high_w: float
    phase_s: float = 0.0

    def __post_init__(self) -> None:
        if self.frequency_hz <= 0 or not 0.0 <= self.duty <= 1.0:
            raise ValueError(
                f"SquareBursts: frequency_hz={self.frequency_hz} must be > 0 and duty={self.duty} in [0, 1]"
            )

    def _cum_from_origin(self, u: float) -> float:
        period = 1.0 / self.frequency_hz
        n = math.floor(u / period)
        r = u - n * period
        on = self.duty * period
        per_period = on * self.high_w + (period - on) * self.low_w
        partial = min(r, on) * self.high_w + max(r - on, 0.0) * self.low_w
        return n * per_period + partial

    def power_w(self, t: float) -> float:
        """Returns high_w inside a burst, low_w outside, W."""
        period = 1.0 / self.frequency_hz
        r = (t - self.phase_s) % period
        return float(self.high_w if r < self.duty * period else self.low_w)

    def cumulative_j(self, t: float) -> float:
        """Returns the exact energy from 0 to t, J."""
        t = max(t, 0.0)
        return self._cum_from_origin(t - self.phase_s) - self._cum_from_origin(-self.phase_s)


@dataclass(frozen=True)
class Ramp:
    """Linear ramp from ``start_w`` (at ``t_start_s``) to ``end_w`` over ``duration_s``; flat before and after."""

    start_w: float
    end_w: float
    duration_s: float
    t_start_s: float = 0.0

    def power_w(self, t: float) -> float:
        """Returns the ramp power at t, W."""
        if t <= self.t_start_s:
            return float(self.start_w)
        if t >= self.t_start_s + self.duration_s:
            return float(self.end_w)
        f = (t - self.t_start_s) / self.duration_s
        return float(self.start_w + f * (self.end_w - self.start_w))

    def cumulative_j(self, t: float) -> float:
        """Returns the exact energy from 0 to t, J."""
        t = max(t, 0.0)
        a = min(t, self.t_start_s)
        e = a * self.start_w
        if t > self.t_start_s:
            u = min(t - self.t_start_s, self.duration_s)
            slope = (self.end_w - self.start_w) / self.duration_s
            e += self.start_w * u + 0.5 * slope * u * u
            if t > self.t_start_s + self.duration_s:
                e += (t - self.t_start_s - self.duration_s) * self.end_w
        return float(e)


class Piecewise:
    """Scripted trace: ``points`` = [(t_s, W), ...] ascending; 'step' holds each value, 'linear' interpolates.

    Before the first point the first value holds; after the last the last value holds.
    """

    def __init__(self, points: Sequence[tuple[float, float]], interpolation: str = "step") -> None:
        if not points:
            raise ValueError("Piecewise: points is empty; give at least one (t_s, watts) pair")
        if interpolation not in ("step", "linear"):
            raise ValueError(f"Piecewise: interpolation={interpolation!r}; use 'step' or 'linear'")
        ts = np.array([p[0] for p in points], dtype=float)
        if np.any(np.diff(ts) < 0):
            raise ValueError("Piecewise: point times must be ascending")
        self.t = ts
        self.w = np.array([p[1] for p in points], dtype=float)
        self.interpolation = interpolation
        # cumulative energy at each point time (from t=0, with the first value holding before t[0])
        seg = np.diff(self.t) * (self.w[:-1] if interpolation == "step" else 0.5 * (self.w[:-1] + self.w[1:]))
        self._cum = np.concatenate([[self.w[0] * self.t[0]], self.w[0] * self.t[0] + np.cumsum(seg)])

    def power_w(self, t: float) -> float:
        """Returns the scripted power at t, W."""
        if self.interpolation == "linear":
            return float(np.interp(t, self.t, self.w))
        i = int(np.searchsorted(self.t, t, side="right")) - 1
        return float(self.w[max(i, 0)])

    def cumulative_j(self, t: float) -> float:
        """Returns the exact energy from 0 to t, J."""
        t = max(t, 0.0)
        if t <= self.t[0]:
            return float(self.w[0] * t)
        i = int(np.searchsorted(self.t, t, side="right")) - 1
        if i >= len(self.t) - 1:
            return float(self._cum[-1] + (t - self.t[-1]) * self.w[-1])
        dt = t - self.t[i]
        if self.interpolation == "step":
            return float(self._cum[i] + dt * self.w[i])
        slope = (self.w[i + 1] - self.w[i]) / (self.t[i + 1] - self.t[i])
        return float(self._cum[i] + dt * self.w[i] + 0.5 * slope * dt * dt)


def spike_train(base_w: float, spike_w: float, duration_s: float, rate_hz: float, *,
                widths_s: Sequence[float] = (0.005, 0.02), seed: int = 0) -> Piecewise:
    """Returns a step trace at ``base_w`` W with short spikes to ``spike_w`` W over [0, duration_s] s: about
    ``rate_hz`` spikes per second at uniformly random instants, each as wide as one of ``widths_s`` (s,
    drawn at random). Spikes never overlap; the trace is exact, so its energy is known."""
    rng = np.random.default_rng(seed)
    points: list[tuple[float, float]] = [(0.0, base_w)]
    t = 0.0
    while True:
        t += float(rng.exponential(1.0 / rate_hz))
        width = float(rng.choice(np.asarray(widths_s, dtype=float)))
        if t + width >= duration_s:
            break
        points += [(t, spike_w), (t + width, base_w)]
        t += width
    return Piecewise(points)


def jittered_square(freq_hz: float, duty: float, low_w: float, high_w: float, duration_s: float, *,
                    jitter_s: float = 0.05, seed: int = 0) -> Piecewise:
    """Returns a square load over [0, duration_s] s: ``high_w`` for ``duty`` of each 1/``freq_hz`` period
    and ``low_w`` otherwise, each high phase's length moved by U(−jitter_s, +jitter_s) s (kept inside its
    period), so the load is not periodic and beats against no sampling or counter grid."""
    rng = np.random.default_rng(seed)
    period = 1.0 / freq_hz
    points: list[tuple[float, float]] = []
    for k in range(math.ceil(duration_s * freq_hz) + 1):
        t = k * period
        high = min(max(duty * period + float(rng.uniform(-jitter_s, jitter_s)), 0.1 * period), 0.9 * period)
        points += [(t, high_w), (t + high, low_w)]
    return Piecewise(points)


class Noisy:
    """Adds seeded Gaussian noise to a base model: piecewise constant on cells of ``cell_s``.

    The noise of cell k is drawn from ``default_rng([seed, block])`` so it does not depend on the order of
    queries; power is floored at 0 W. Exact integral from cached cumulative sums.
    """

    _BLOCK = 4096

    def __init__(self, base: PowerModel, std_w: float, seed: int = 0, cell_s: float = 0.01) -> None:
        self.base = base
        self.std_w = float(std_w)
        self.seed = int(seed)
        self.cell_s = float(cell_s)
        self._blocks: dict[int, tuple[np.ndarray, float]] = {}  # block -> (noise per cell, sum)
        self._lock = threading.Lock()

    def _block(self, b: int) -> np.ndarray:
        with self._lock:
            got = self._blocks.get(b)
            if got is None:
                noise = np.random.default_rng([self.seed, b]).normal(0.0, self.std_w, self._BLOCK)
                got = (noise, float(noise.sum()))
                self._blocks[b] = got
            return got[0]

    def _noise(self, k: int) -> float:
        return float(self._block(k // self._BLOCK)[k % self._BLOCK])

    def _noise_cum_j(self, t: float) -> float:
        """Integral of the noise term from 0 to t, J (before the 0 W floor; base models stay well above it)."""
        if t <= 0:
            return 0.0
        k_full = int(t // self.cell_s)
        total = 0.0
        nb = k_full // self._BLOCK
        for b in range(nb):
            self._block(b)
            total += self._blocks[b][1]
        rem = k_full - nb * self._BLOCK
        if rem:
            total += float(self._block(nb)[:rem].sum())
        total *= self.cell_s
        total += (t - k_full * self.cell_s) * self._noise(k_full)
        return total

    def power_w(self, t: float) -> float:
        """Returns base power plus the cell's noise, floored at 0 W."""
        k = int(max(t, 0.0) // self.cell_s)
        return max(0.0, self.base.power_w(t) + self._noise(k))

    def cumulative_j(self, t: float) -> float:
        """Returns the exact energy from 0 to t, J (assumes the base stays > 4 std above 0 W)."""
        return self.base.cumulative_j(t) + self._noise_cum_j(max(t, 0.0))


class ActivityDriven:
    """Power follows this process tree's CPU use: ``idle_w + (peak_w - idle_w) × busy``.

    ``busy`` is the CPU time of the process and its children per wall second, divided by ``cpus``
    (default: logical CPU count), clamped to [0, 1]. Re-measured at most every ``update_s``; power holds
    between updates, and the energy integral is kept from those held segments (so it is exact for what
    the device reported). Meant for the CPU demo, not for accuracy tests.
    """

    def __init__(self, idle_w: float = 60.0, peak_w: float = 300.0, update_s: float = 0.05,
                 cpus: int | None = None, pid: int | None = None) -> None:
        import psutil

        self.idle_w = float(idle_w)
        self.peak_w = float(peak_w)
        self.update_s = float(update_s)
        self.cpus = cpus or os.cpu_count() or 1
        self._proc = psutil.Process(pid)
        self._lock = threading.Lock()
        self._last_t: float | None = None
        self._last_cpu = 0.0
        self._power = self.idle_w
        self._cum = 0.0  # J up to _last_t
        self._hist_t: list[float] = []  # update times, s
        self._hist_cum: list[float] = []  # J up to each update time
        self._hist_p: list[float] = []  # power held from each update time, W

    def _cpu_seconds(self) -> float:
        total = 0.0
        procs = [self._proc]
        try:
            procs += self._proc.children(recursive=True)
        except Exception:
            pass
        for p in procs:
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except Exception:
                continue
        return total

    def _advance(self, t: float) -> None:
        with self._lock:
            if self._last_t is None:
                self._last_t = t
                self._last_cpu = self._cpu_seconds()
                self._hist_t.append(t)
                self._hist_cum.append(0.0)
                self._hist_p.append(self._power)
                return
            if t - self._last_t <= 0.0 or t - self._last_t < self.update_s:
                return
            cpu = self._cpu_seconds()
            dt = t - self._last_t
            self._cum += self._power * dt
            busy = min(max((cpu - self._last_cpu) / dt / self.cpus, 0.0), 1.0)
            self._power = self.idle_w + (self.peak_w - self.idle_w) * busy
            self._last_t, self._last_cpu = t, cpu
            self._hist_t.append(t)
            self._hist_cum.append(self._cum)
            self._hist_p.append(self._power)

    def power_w(self, t: float) -> float:
        """Returns the power implied by the recent CPU use of the process tree, W."""
        self._advance(t)
        return self._power

    def cumulative_j(self, t: float) -> float:
        """Returns the integral of the reported (held) power from the first query to t, J (past times are
        looked up in the update history, so the counter stays consistent)."""
        self._advance(t)
        with self._lock:
            if self._last_t is None or t <= self._hist_t[0]:
                return 0.0
            if t >= self._last_t:
                return self._cum + self._power * (t - self._last_t)
            i = bisect.bisect_right(self._hist_t, t) - 1
            return self._hist_cum[i] + self._hist_p[i] * (t - self._hist_t[i])


@dataclass(frozen=True)
class EnergyHeating:
    """Temperature rising with energy: ``ambient_c + c_per_kj × (J since start)/1000``, capped at ``max_c``."""

    ambient_c: float = 35.0
    c_per_kj: float = 0.05
    max_c: float = 92.0

    def __call__(self, t: float, energy_j: float) -> float:
        """Returns the temperature, °C."""
        return min(self.ambient_c + self.c_per_kj * energy_j / 1000.0, self.max_c)


@dataclass(frozen=True)
class ReasonSpan:
    """Clock-event reason bits active for ``start_s <= t < end_s`` (s since device start)."""

    start_s: float
    end_s: float
    reasons: int


class SimulatedDevice:
    """A deterministic stand-in GPU implementing the Device protocol (kind 'simulated', UUID 'SIM-…').

    Times given to the constructor (``counter_phase_s``, ``counter_reset_at_s``, reason spans) are seconds
    since device start; ``true_energy_j`` takes clock times (the same clock as the sampler's ``t_mono_s``).
    """

    def __init__(
        self,
        model: PowerModel | float,
        *,
        index: int = 0,
        uuid: str | None = None,
        name: str = "Simulated GPU",
        clock: Callable[[], float] = time.perf_counter,
        start_s: float | None = None,
        counter_period_s: float = 0.1,
        counter_phase_s: float = 0.0,
        counter_offset_mj: int = 0,
        counter_modulus_mj: int | None = None,
        counter_reset_at_s: float | Sequence[float] | None = None,
        energy_supported: bool = True,
        temperature: Callable[[float, float], float] | None = None,
        reason_spans: Sequence[ReasonSpan] = (),
        idle_w: float = 60.0,
        power_limit_w: float = 700.0,
        persistence_mode: bool | None = True,
        memory_total_mb: float = 81559.0,
        memory_used_mb: float = 1024.0,
        sm_clock_mhz: float = 1980.0,
        mem_clock_mhz: float = 2619.0,
    ) -> None:
        if counter_period_s <= 0:
            raise ValueError(f"SimulatedDevice: counter_period_s={counter_period_s} must be > 0 s")
        self.model: PowerModel = Constant(model) if isinstance(model, int | float) else model
        self.index = index
        self._uuid = uuid or "SIM-" + str(uuid_mod.uuid5(_SIM_NAMESPACE, f"{name}/{index}"))
        self._name = name
        self.clock = clock
        self.start_s = clock() if start_s is None else float(start_s)
        self.counter_period_s = float(counter_period_s)
        self.counter_phase_s = float(counter_phase_s)
        self.counter_offset_mj = int(counter_offset_mj)
        self.counter_modulus_mj = counter_modulus_mj
        self.counter_reset_at_s = counter_reset_at_s
        self.energy_supported = energy_supported
        self.temperature_model = temperature or EnergyHeating()
        self.reason_spans = tuple(reason_spans)
        self.idle_w = idle_w
        self._power_limit_w = power_limit_w
        self._persistence = persistence_mode
        self._memory_total_mb = memory_total_mb
        self.memory_used_mb = memory_used_mb
        self.base_sm_clock_mhz = sm_clock_mhz
        self.base_mem_clock_mhz = mem_clock_mhz

    @property
    def counter_reset_at_s(self) -> float | list[float] | None:
        """Returns the time(s) the counter restarts at 0, s since start (None: never)."""
        return self._reset_spec

    @counter_reset_at_s.setter
    def counter_reset_at_s(self, value: float | Sequence[float] | None) -> None:
        """Sets when the counter restarts at 0: one time or several, s since start (None: never); may change
        while the device runs (a driver reload at a chosen moment)."""
        self._reset_spec = value if value is None or isinstance(value, int | float) else sorted(value)
        self._resets = [] if value is None else (
            [float(value)] if isinstance(value, int | float) else [float(r) for r in sorted(value)])

    # -- identity -------------------------------------------------------------------------------
    @property
    def uuid(self) -> str:
        """Returns the simulated UUID ('SIM-…')."""
        return self._uuid

    @property
    def name(self) -> str:
        """Returns the product name."""
        return self._name

    @property
    def kind(self) -> DeviceKindName:
        """Returns 'simulated'."""
        return "simulated"

    # -- time helpers ---------------------------------------------------------------------------
    def elapsed_s(self, t_clock: float | None = None) -> float:
        """Returns seconds since device start for a clock time (default: now), s."""
        return (self.clock() if t_clock is None else t_clock) - self.start_s

    def last_counter_edge_s(self, t: float) -> float | None:
        """Returns the last counter update edge at or before ``t`` (s since start), or None before the first."""
        k = math.floor((t - self.counter_phase_s) / self.counter_period_s + 1e-12)
        edge = self.counter_phase_s + k * self.counter_period_s
        return edge if edge >= 0.0 else None

    def true_energy_j(self, t0_clock: float, t1_clock: float) -> float:
        """Returns the exact energy between two clock times, J (what an ideal meter would read)."""
        return self.model.cumulative_j(t1_clock - self.start_s) - self.model.cumulative_j(t0_clock - self.start_s)

    def counter_mj_at(self, t: float) -> int | None:
        """Returns the counter value at ``t`` s since start, mJ (None if unsupported)."""
        if not self.energy_supported:
            return None
        edge = self.last_counter_edge_s(t)
        k = bisect.bisect_right(self._resets, t)
        if k:
            r = self._resets[k - 1]
            e_j = 0.0 if edge is None or edge < r else self.model.cumulative_j(edge) - self.model.cumulative_j(r)
            value = math.floor(e_j * 1000.0 + 1e-9)
        else:
            e_j = 0.0 if edge is None else self.model.cumulative_j(edge)
            value = self.counter_offset_mj + math.floor(e_j * 1000.0 + 1e-9)
        if self.counter_modulus_mj:
            value %= int(self.counter_modulus_mj)
        return int(value)

    # -- reads ----------------------------------------------------------------------------------
    def power_at(self, t: float) -> float:
        """Returns the instant power at ``t`` s since start, W."""
        return float(self.model.power_w(t))

    def reasons_at(self, t: float) -> int:
        """Returns the active clock-event reason bits at ``t`` s since start (GPU_IDLE below idle+5 W)."""
        bits = 0
        for span in self.reason_spans:
            if span.start_s <= t < span.end_s:
                bits |= span.reasons
        if self.power_at(t) <= self.idle_w + 5.0:
            bits |= CLOCK_EVENT_GPU_IDLE
        return bits

    def temperature_at(self, t: float) -> float:
        """Returns the temperature at ``t`` s since start, °C."""
        return float(self.temperature_model(t, self.model.cumulative_j(t)))

    def util_at(self, t: float) -> float:
        """Returns the utilisation implied by power between idle and the power limit, %."""
        span = max(self._power_limit_w - self.idle_w, 1e-9)
        return float(min(max((self.power_at(t) - self.idle_w) / span, 0.0), 1.0) * 100.0)

    def sm_clock_at(self, t: float) -> float:
        """Returns the SM clock, MHz (reduced by 30 % while a thermal reason is active)."""
        thermal = self.reasons_at(t) & (CLOCK_EVENT_SW_THERMAL | CLOCK_EVENT_HW_THERMAL)
        return self.base_sm_clock_mhz * (0.7 if thermal else 1.0)

    def energy_mj(self) -> int | None:
        """Returns the cumulative energy counter now, mJ (None when unsupported)."""
        return self.counter_mj_at(self.elapsed_s())

    def power_w(self) -> float | None:
        """Returns the instant power now, W."""
        return self.power_at(self.elapsed_s())

    def read(self) -> DeviceReading:
        """Returns every sampled quantity at one instant."""
        t = self.elapsed_s()
        return DeviceReading(
            power_w=self.power_at(t),
            energy_mj=self.counter_mj_at(t),
            temperature_c=self.temperature_at(t),
            sm_clock_mhz=self.sm_clock_at(t),
            mem_clock_mhz=self.base_mem_clock_mhz,
            gpu_util_pct=self.util_at(t),
            mem_used_mb=self.memory_used_mb,
            clock_event_reasons=self.reasons_at(t),
        )

    def power_limit_w(self) -> float | None:
        """Returns the simulated enforced power limit, W."""
        return self._power_limit_w

    def persistence_mode(self) -> bool | None:
        """Returns the simulated persistence mode."""
        return self._persistence

    def memory_total_mb(self) -> float | None:
        """Returns the simulated device memory, MB."""
        return self._memory_total_mb

    def __repr__(self) -> str:
        return f"SimulatedDevice(uuid={self._uuid!r}, model={self.model!r})"


def simulated_devices(count: int = 1, *, idle_w: float = 60.0, peak_w: float = 300.0,
                      clock: Callable[[], float] = time.perf_counter) -> list[SimulatedDevice]:
    """Returns ``count`` activity-driven simulated GPUs (power follows this process tree's CPU use),
    for ``--devices simulated`` runs; each is labelled kind 'simulated' with a 'SIM-…' UUID."""
    return [SimulatedDevice(ActivityDriven(idle_w, peak_w), index=i, clock=clock, idle_w=idle_w,
                            name="Simulated GPU (CPU activity)") for i in range(count)]


class FakeClock:
    """A manual clock for tests and benches: ``clock()`` returns the time, ``sleep(dt)`` advances it, s."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.t = float(start_s)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, dt: float) -> None:
        """Advances the clock by ``dt`` seconds (no real waiting)."""
        self.advance(max(dt, 0.0))

    def advance(self, dt: float) -> float:
        """Advances the clock by ``dt`` s; returns the new time, s."""
        with self._lock:
            self.t += dt
            return self.t

    def set(self, t: float) -> None:
        """Sets the clock to ``t`` s (must not go backwards)."""
        with self._lock:
            if t < self.t:
                raise ValueError(f"FakeClock.set({t}) would go backwards from {self.t}")
            self.t = float(t)


class PhaseModel:
    """Power of a scripted serving engine: ``static_w`` plus each step's work, ``idle_w`` between steps.

    ``steps``: [(start_s, end_s, prefill_tokens, decode_tokens), ...] ascending and not overlapping (s since
    device start). During a step the power is ``static_w + (prefill_j_per_token × prefill_tokens +
    decode_j_per_token × decode_tokens) / (end_s − start_s)``, so a prompt token prefilled costs
    ``prefill_j_per_token`` J and a decoded token ``decode_j_per_token`` J above the static draw: a prefill
    draws a different power than a decode, and every step's energy is known exactly (``step_energy_j``).
    """

    def __init__(self, steps: Sequence[tuple[float, float, float, float]], *, idle_w: float = 60.0,
                 static_w: float = 60.0, prefill_j_per_token: float = 0.02, decode_j_per_token: float = 0.3,
                 decode_exponent: float = 1.0) -> None:
        if prefill_j_per_token < 0 or decode_j_per_token < 0 or idle_w < 0 or static_w < 0:
            raise ValueError(
                f"PhaseModel: idle_w={idle_w}, static_w={static_w}, prefill_j_per_token={prefill_j_per_token}, "
                f"decode_j_per_token={decode_j_per_token} must all be >= 0")
        self.steps = [(float(a), float(b), float(p), float(d)) for a, b, p, d in steps]
        self.idle_w, self.static_w = float(idle_w), float(static_w)
        self.prefill_j_per_token, self.decode_j_per_token = float(prefill_j_per_token), float(decode_j_per_token)
        if not 0 < decode_exponent <= 1:
            raise ValueError(f"PhaseModel: decode_exponent={decode_exponent} must be in (0, 1]")
        self.decode_exponent = float(decode_exponent)
        points: list[tuple[float, float]] = [(0.0, self.idle_w)]
        last_end = 0.0
        for a, b, p, d in self.steps:
            if b <= a or a < last_end - 1e-12:
                raise ValueError(f"PhaseModel: step ({a}, {b}) is empty or overlaps the previous one (ends {last_end})")
            if a > last_end:
                points.append((last_end, self.idle_w))
            points.append((a, self.step_power_w(a, b, p, d)))
            last_end = b
        points.append((last_end, self.idle_w))
        self._trace = Piecewise(points, "step")

    def step_power_w(self, start_s: float, end_s: float, prefill_tokens: float, decode_tokens: float) -> float:
        """Returns the power during a step, W."""
        return self.static_w + self.step_dynamic_j(prefill_tokens, decode_tokens) / (end_s - start_s)

    def step_dynamic_j(self, prefill_tokens: float, decode_tokens: float) -> float:
        """Returns a step's energy above the static draw, J: ``decode_j_per_token × decode_tokens **
        decode_exponent`` for its decode (an exponent below 1: a token decoded in a larger batch costs less)."""
        return self.prefill_j_per_token * prefill_tokens + self.decode_j_per_token * decode_tokens ** self.decode_exponent

    def power_w(self, t: float) -> float:
        """Returns the scripted power at t, W."""
        return self._trace.power_w(t)

    def cumulative_j(self, t: float) -> float:
        """Returns the exact energy from 0 to t, J."""
        return self._trace.cumulative_j(t)
