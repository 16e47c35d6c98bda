"""Shared fixtures for the whole suite (keep additions additive; import heavy modules inside fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Llama model (preset 'tiny', seed 0), built once per session in a temp dir (~0.3 s)."""
    from llem_pipeline.engines.tiny_model import make_model

    return make_model(tmp_path_factory.mktemp("models") / "tiny-llama", "tiny", 0)
