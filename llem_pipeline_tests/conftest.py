"""Shared fixtures for the whole suite (keep additions additive; import heavy modules inside fixtures)."""

from __future__ import annotations

from pathlib import Path

# Hypothesis imports its optimiser on the first @given run. pytest rewrites the modules of its plugins on
# import, so that rewrite would parse an AST in the middle of a test; on CPython 3.11 an AST built while
# another thread (or a finalizer) formats a traceback can fail with "SystemError: AST constructor recursion
# depth mismatch" (seen once under make test-under-load). Importing it here, at collection, before any
# test starts a thread, takes that parse out of the tests.
import hypothesis.internal.conjecture.optimiser  # noqa: F401
import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Llama model (preset 'tiny', seed 0), built once per session in a temp dir (~0.3 s)."""
    from llem_pipeline.engines.tiny_model import make_model

    return make_model(tmp_path_factory.mktemp("models") / "tiny-llama", "tiny", 0)


TINY_RUN = {
    "model": "llem:tiny", "n": 8, "max_input_tokens": 48, "max_output_tokens": 12, "precision": "fp32",
    "warmup": {"n_warmup": 1, "thermal_floor_seconds": 0}, "baseline": {"duration_seconds": 0.5},
    "energy": {"sample_interval_ms": 50}, "pytorch": {"batch_size": 4},
}
MEASURED_DATE = "2026-12-01"
MEASURED_RUN_ID = "measured-run"


@pytest.fixture(scope="session")
def measured_run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder written by the real worker (tiny model, simulated GPU) under ``<root>/runs/<date>/<hash>/
    <run id>``, measured once per session (~10 s); tests copy it before changing anything."""
    import os

    from llem_pipeline.domain import ExperimentConfig, compute_measurement_config_hash
    from llem_pipeline.measure.run_folder import run_folder_path
    from llem_pipeline.measure.worker import run_measurement

    root = tmp_path_factory.mktemp("measured") / "runs"
    config = ExperimentConfig.model_validate(TINY_RUN)
    out = run_folder_path(root, MEASURED_DATE, compute_measurement_config_hash(config), MEASURED_RUN_ID)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run_measurement(config, "simulated", out, timeout_s=300, run_id=MEASURED_RUN_ID)
