"""Scripted serving workloads with known answers: a continuous-batching schedule whose every request's
energy, and every phase's, is known exactly (the simulated device's PhaseModel draws it).

``serve`` schedules requests like a serving engine without chunked prefill: at each step, requests that
have arrived are admitted up to ``max_num_seqs`` running and prefilled together in one step (their first
tokens appear at its end); otherwise every running request decodes one token per step. Step lengths
grow with the tokens a step processes. The true energy of a request is its own work (prompt tokens ×
``prefill_j_per_token`` + decoded tokens × ``decode_j_per_token``) plus a share of each of its steps'
static draw (``static_w`` × step length) in proportion to its work in the step; gaps between steps draw
``idle_w`` and belong to no request (the convention of docs/methodology-attribution.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llem_pipeline.measure.devices.simulated import PhaseModel


@dataclass(frozen=True)
class ScriptedRequest:
    """A request of a scripted workload: arrival (s since device start), prompt and output tokens."""

    submit_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class EngineTiming:
    """Step lengths, s: a prefill step takes ``prefill_overhead_s + prefill_s_per_token × prompt tokens``, a
    decode step ``decode_step_s + decode_s_per_seq × running requests``."""

    prefill_overhead_s: float = 0.01
    prefill_s_per_token: float = 5e-5
    decode_step_s: float = 0.015
    decode_s_per_seq: float = 0.0005


@dataclass
class ServedRequest:
    """One served request: its times (s since device start) and its true energies, J."""

    index: int
    submit_s: float
    input_tokens: int
    output_tokens: int
    token_times_s: list[float] = field(default_factory=list)
    prefill_j: float = 0.0  # own prefill work + static share of its prefill step
    decode_j: float = 0.0  # own decode work + static share of its decode steps
    dynamic_j: float = 0.0  # own work only (above the static draw)

    @property
    def energy_j(self) -> float:
        """The request's true energy, J."""
        return self.prefill_j + self.decode_j

    @property
    def first_token_s(self) -> float | None:
        """Time of its first token, s (None before any)."""
        return self.token_times_s[0] if self.token_times_s else None


@dataclass
class ServedWorkload:
    """The schedule (steps for PhaseModel), the served requests and the idle energy between steps, J."""

    steps: list[tuple[float, float, float, float]]
    requests: list[ServedRequest]
    idle_j: float
    model: PhaseModel

    @property
    def span_s(self) -> tuple[float, float]:
        """First submission to last token, s."""
        return (min(r.submit_s for r in self.requests), max(r.token_times_s[-1] for r in self.requests))


def serve(requests: Sequence[ScriptedRequest], *, max_num_seqs: int = 16, timing: EngineTiming | None = None,
          idle_w: float = 60.0, static_w: float = 60.0, prefill_j_per_token: float = 0.02,
          decode_j_per_token: float = 0.3, decode_exponent: float = 1.0) -> ServedWorkload:
    """Return the ServedWorkload of ``requests`` (in arrival order) on an engine with ``max_num_seqs`` slots;
    powers W, energies J per token. A decode step of n requests costs ``decode_j_per_token × n **
    decode_exponent`` J, shared equally. Every request must ask for at least one output token."""
    if max_num_seqs < 1:
        raise ValueError(f"serve: max_num_seqs={max_num_seqs} must be >= 1")
    timing = timing or EngineTiming()
    served = [ServedRequest(i, r.submit_s, r.input_tokens, r.output_tokens) for i, r in enumerate(requests)]
    if any(r.output_tokens < 1 for r in served):
        raise ValueError("serve: every request needs output_tokens >= 1")
    order = deque(sorted(served, key=lambda r: r.submit_s))
    running: list[ServedRequest] = []
    steps: list[tuple[float, float, float, float]] = []
    t = 0.0
    idle_j = 0.0
    last_end = 0.0

    def close_step(start: float, end: float, work: list[tuple[ServedRequest, float, str]]) -> None:
        total = sum(w for _, w, _ in work)
        static = static_w * (end - start)
        for req, w, phase in work:
            part = w + static * w / total
            req.dynamic_j += w
            if phase == "prefill":
                req.prefill_j += part
            else:
                req.decode_j += part

    while order or running:
        if not running and order and order[0].submit_s > t:
            t = order[0].submit_s
        admitted = []
        while order and order[0].submit_s <= t and len(running) + len(admitted) < max_num_seqs:
            admitted.append(order.popleft())
        if t > last_end:
            idle_j += idle_w * (t - last_end)
        if admitted:
            tokens = sum(r.input_tokens for r in admitted)
            end = t + timing.prefill_overhead_s + timing.prefill_s_per_token * tokens
            steps.append((t, end, float(tokens), 0.0))
            close_step(t, end, [(r, prefill_j_per_token * r.input_tokens, "prefill") for r in admitted])
            for r in admitted:
                r.token_times_s.append(end)
            running += [r for r in admitted if r.output_tokens > 1]
        else:
            end = t + timing.decode_step_s + timing.decode_s_per_seq * len(running)
            steps.append((t, end, 0.0, float(len(running))))
            per_token = decode_j_per_token * len(running) ** decode_exponent / len(running)
            close_step(t, end, [(r, per_token, "decode") for r in running])
            for r in running:
                r.token_times_s.append(end)
            running = [r for r in running if len(r.token_times_s) < r.output_tokens]
        last_end = t = end
    model = PhaseModel(steps, idle_w=idle_w, static_w=static_w, prefill_j_per_token=prefill_j_per_token,
                       decode_j_per_token=decode_j_per_token, decode_exponent=decode_exponent)
    return ServedWorkload(steps, served, idle_j, model)


def mixed_workload(n: int, *, seed: int = 0, rate_per_s: float = 20.0, prompt_range: tuple[int, int] = (16, 4096),
                   output_range: tuple[int, int] = (16, 512), start_s: float = 1.0) -> list[ScriptedRequest]:
    """Return ``n`` requests arriving as a Poisson process (``rate_per_s``) from ``start_s``, with prompt and
    output lengths drawn log-uniformly and independently from the ranges (tokens); seeded."""
    rng = np.random.default_rng(seed)
    arrivals = start_s + np.cumsum(rng.exponential(1.0 / rate_per_s, n))

    def loguniform(lo: int, hi: int) -> np.ndarray:
        return np.round(np.exp(rng.uniform(np.log(lo), np.log(hi), n))).astype(int)

    prompts, outputs = loguniform(*prompt_range), loguniform(*output_range)
    return [ScriptedRequest(float(a), int(p), int(o)) for a, p, o in zip(arrivals, prompts, outputs, strict=True)]
