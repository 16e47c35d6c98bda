"""load_engine: dispatch by backend; tensorrt and a missing vllm fail before anything loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.engines.model_files import EngineLoadError
from llem_pipeline.engines.registry import EngineUnavailableError, load_engine
from llem_pipeline.engines.transformers_engine import TransformersEngine


def test_tensorrt_is_rejected_before_anything_loads(tmp_path: Path):
    cfg = ExperimentConfig(model=str(tmp_path / "does-not-exist"), backend="tensorrt", tensorrt={"tp_size": 1})
    with pytest.raises(EngineUnavailableError, match="TensorRT-LLM is not available in this release"):
        load_engine(cfg, [0])  # the missing model path is never looked at


def test_pytorch_backend_loads_the_transformers_engine(tiny_model_dir: Path):
    cfg = ExperimentConfig(model=str(tiny_model_dir), precision="fp32", max_output_tokens=3)
    engine = load_engine(cfg, [])
    try:
        assert isinstance(engine, TransformersEngine)
        assert [r.output_tokens for r in engine.run([[5, 6, 7]])] == [3]
    finally:
        engine.cleanup()


def test_missing_vllm_names_the_extra_and_the_cpu_target(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vllm were not installed
    cfg = ExperimentConfig(model=str(tiny_model_dir), backend="vllm", precision="fp32")
    with pytest.raises(EngineLoadError) as e:
        load_engine(cfg, [])
    assert "pip install 'llem-pipeline[vllm]'" in str(e.value) and "make test-vllm" in str(e.value)
