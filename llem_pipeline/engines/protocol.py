"""The engine protocol: prompts (as token ids) in, per-request timing records out.

Engines know nothing of energy, storage or Dagster. torch / transformers / vllm are imported inside
engine functions only, never at module top level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.requests import RequestRecord


@dataclass(frozen=True)
class PromptSet:
    """Prompts tokenised once per experiment; every engine receives the same token ids."""

    token_ids: list[list[int]]
    source: str  # 'builtin', a JSONL path, or 'synthetic(input_len=…, seed=…)'
    truncated: int = 0  # prompts cut to max_input_tokens
    texts: list[str] | None = None

    @property
    def input_tokens(self) -> int:
        """Total prompt tokens."""
        return sum(len(t) for t in self.token_ids)


@dataclass
class EngineInfo:
    """What an engine reports about itself after load."""

    backend: str
    backend_version: str | None
    model_memory_mb: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """One loaded model on its devices."""

    info: EngineInfo

    def warmup(self, prompts: list[list[int]]) -> list[RequestRecord]:
        """Run full-length warmup requests; return their records (never counted in results)."""
        ...

    def run(self, prompts: list[list[int]]) -> list[RequestRecord]:
        """Generate for every prompt; return one RequestRecord per prompt, in prompt order.

        Times are ``time.perf_counter()`` seconds. On GPU the engine synchronises the device before
        returning so the last token is really done.
        """
        ...

    def peak_memory_mb(self) -> float | None:
        """Peak device memory since load, MB (None on CPU)."""
        ...

    def cleanup(self) -> None:
        """Free the model and device memory; safe to call twice and after errors."""
        ...


class EngineLoader(Protocol):
    """Loads an engine: ``load(config, device_indices) -> Engine`` (device indices are CUDA logical indices)."""

    def __call__(self, config: ExperimentConfig, device_indices: list[int]) -> Engine: ...
