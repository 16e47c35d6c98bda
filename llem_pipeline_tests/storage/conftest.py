"""Fixtures for storage tests: a temp data dir, a ResultStore on a temp DuckDB file, a fabricated RunRecord."""

from __future__ import annotations

from pathlib import Path

import pytest

from llem_pipeline.storage import ResultStore, RunRecord
from llem_pipeline_tests.storage.record_factory import make_config, make_record


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def store(data_dir: Path) -> ResultStore:
    return ResultStore(data_dir / "llem.duckdb", lock_timeout_s=30)


@pytest.fixture
def record() -> RunRecord:
    """A fabricated simulated run of the default config on 2026-11-01, run_id run-0001 (100 samples, 8 requests)."""
    return make_record(make_config())
