"""Fixtures for storage tests: a temp data dir, a ResultStore on a temp DuckDB file, fabricated run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.run_folder_factory import make_config, write_run_folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def store(data_dir: Path) -> ResultStore:
    return ResultStore(data_dir / "llem.duckdb", data_dir=data_dir, lock_timeout_s=30)


@pytest.fixture
def run_folder(data_dir: Path) -> tuple[Path, str]:
    """A fabricated run folder (path, config_hash) for 2026-11-01 / run-0001."""
    config = make_config()
    return write_run_folder(data_dir, config=config), compute_measurement_config_hash(config)
