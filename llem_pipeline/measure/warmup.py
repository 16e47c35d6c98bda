"""Warmup before the measurement window (docs/methodology.md §3.5): fixed count or latency-CV convergence, then the thermal floor.

Warmup requests are full-length requests run through ``engine.warmup(prompts)``; they never count in
tokens, energy or FLOPs (their output tokens are reported separately as ``warmup_tokens``).

- ``fixed``: exactly ``n_warmup`` requests. ``converged`` is always True; ``final_cv`` is the CV of the
  last ``window`` latencies, for information only.
- ``cv``: requests until the coefficient of variation (population std / mean) of the last ``window``
  request latencies is ≤ ``cv_target``, at most ``max_prompts`` requests. ``converged`` says whether the
  target was met.

Requests run ``batch_size`` at a time (1 = one request per call; the HF engine's batch size makes each
call one engine batch). A CV check happens after each call once ``window`` latencies exist. Prompts are
used round-robin from the given list.

After warmup the thermal floor waits ``thermal_floor_seconds`` through the injected ``sleep``; the time
actually waited (monotonic clock) is ``thermal_floor_wait_s``. With warmup disabled nothing runs and
nothing is waited for (a floor after no load only cools the GPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from llem_pipeline.domain.config import WarmupConfig
from llem_pipeline.domain.metrics import WarmupResult
from llem_pipeline.domain.requests import RequestRecord


class WarmupEngine(Protocol):
    """The part of the engine protocol warmup needs."""

    def warmup(self, prompts: list[list[int]]) -> list[RequestRecord]: ...


@dataclass(frozen=True)
class WarmupProgress:
    """A progress event: ``phase`` 'warmup' after each engine call, 'thermal_floor' before and after the wait.

    ``done``/``total``: warmup requests run / the most that may run. ``latency_ms``: last request's
    end-to-end latency, ms. ``cv``: CV of the last window (None until a window is full). ``wait_s``: the
    thermal floor wait, s (requested before the wait, measured after it).
    """

    phase: Literal["warmup", "thermal_floor"]
    done: int
    total: int
    latency_ms: float | None = None
    cv: float | None = None
    wait_s: float | None = None


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Return population std / mean of ``values`` (unitless); 0.0 for fewer than 2 values or a zero mean."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return 0.0
    mean = float(arr.mean())
    if mean == 0.0:
        return 0.0
    return float(arr.std() / abs(mean))


def run_warmup(
    engine: WarmupEngine,
    prompts: Sequence[list[int]],
    cfg: WarmupConfig,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[WarmupProgress], None] | None = None,
    *,
    batch_size: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> WarmupResult:
    """Run warmup requests and the thermal floor; return the WarmupResult.

    Latencies are per-request end-to-end latencies in ms; ``final_cv`` is unitless;
    ``thermal_floor_wait_s`` is the wait measured on ``clock`` (s); ``warmup_tokens`` counts the output
    tokens generated during warmup. Raises ValueError for an empty prompt list or batch_size < 1;
    engine errors propagate (the harness cleans up).
    """
    if batch_size < 1:
        raise ValueError(f"warmup batch_size={batch_size} must be >= 1")
    if not cfg.enabled:
        return WarmupResult(
            converged=False, final_cv=0.0, iterations_completed=0, target_cv=cfg.cv_target,
            max_prompts=0, latencies_ms=[], mode=cfg.mode, thermal_floor_wait_s=0.0, warmup_tokens=0,
        )
    if not prompts:
        raise ValueError("run_warmup got no prompts: pass at least one tokenised prompt (the measured set is fine)")

    limit = cfg.n_warmup if cfg.mode == "fixed" else cfg.max_prompts
    latencies: list[float] = []
    tokens = 0
    converged = cfg.mode == "fixed"
    cv = 0.0
    next_prompt = 0
    while len(latencies) < limit:
        count = min(batch_size, limit - len(latencies))
        batch = [list(prompts[(next_prompt + i) % len(prompts)]) for i in range(count)]
        next_prompt += count
        records = engine.warmup(batch)
        if len(records) != count:
            raise RuntimeError(f"engine.warmup returned {len(records)} records for {count} prompts; expected one per prompt")
        for rec in records:
            latencies.append(rec.e2e_s * 1000.0)
            tokens += rec.output_tokens
        window_full = len(latencies) >= cfg.window
        cv = coefficient_of_variation(latencies[-cfg.window:])
        if on_progress is not None:
            on_progress(WarmupProgress("warmup", len(latencies), limit, latencies[-1], cv if window_full else None))
        if cfg.mode == "cv" and window_full and cv <= cfg.cv_target:
            converged = True
            break

    wait = 0.0
    if cfg.thermal_floor_seconds > 0:
        if on_progress is not None:
            on_progress(WarmupProgress("thermal_floor", len(latencies), limit, wait_s=cfg.thermal_floor_seconds))
        t0 = clock()
        sleep(cfg.thermal_floor_seconds)
        wait = max(0.0, clock() - t0)
        if on_progress is not None:
            on_progress(WarmupProgress("thermal_floor", len(latencies), limit, wait_s=wait))

    return WarmupResult(
        converged=converged,
        final_cv=cv,
        iterations_completed=len(latencies),
        target_cv=cfg.cv_target,
        max_prompts=limit,
        latencies_ms=latencies,
        mode=cfg.mode,
        thermal_floor_wait_s=wait,
        warmup_tokens=tokens,
    )
