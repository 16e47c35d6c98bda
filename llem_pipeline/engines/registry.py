"""Choosing the engine for a config: ``load_engine(config, device_indices) -> Engine``."""

from __future__ import annotations

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.engines.model_files import EngineLoadError
from llem_pipeline.engines.protocol import Engine

TENSORRT_UNAVAILABLE = (
    "TensorRT-LLM is not available in this release: backend='tensorrt' is accepted by the config schema "
    "but cannot run; use backend 'pytorch' or 'vllm'"
)


class EngineUnavailableError(EngineLoadError):
    """The chosen backend exists in the schema but cannot run in this release."""


def check_backend(config: ExperimentConfig) -> None:
    """Raise EngineUnavailableError for a backend that cannot run (tensorrt) before anything is loaded."""
    if config.backend == "tensorrt":
        raise EngineUnavailableError(TENSORRT_UNAVAILABLE)


def load_engine(config: ExperimentConfig, device_indices: list[int]) -> Engine:
    """Load the engine of ``config.backend`` onto ``device_indices`` (CUDA logical indices; [] = CPU); return it.

    'pytorch' -> TransformersEngine, 'vllm' -> VLLMEngine, 'tensorrt' -> EngineUnavailableError (raised
    before any import or load).
    """
    check_backend(config)
    if config.backend == "pytorch":
        from llem_pipeline.engines.transformers_engine import load_transformers_engine

        return load_transformers_engine(config, device_indices)
    if config.backend == "vllm":
        from llem_pipeline.engines.vllm_engine import load_vllm_engine

        return load_vllm_engine(config, device_indices)
    raise EngineLoadError(f"backend={config.backend!r} is not known; use 'pytorch' or 'vllm'")
