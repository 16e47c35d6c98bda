"""Fixtures for the Dagster tests: an isolated data dir / DuckDB file, a test instance with pool limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.paths import PROJECT_ROOT


@pytest.fixture
def llem_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point LLEM_DATA_DIR / LLEM_DUCKDB at a temp folder, use the checkout's studies, LLEM_DEVICES=simulated."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("LLEM_DATA_DIR", str(data))
    monkeypatch.setenv("LLEM_DUCKDB", str(data / "llem.duckdb"))
    monkeypatch.setenv("LLEM_STUDIES_DIR", str(PROJECT_ROOT / "studies"))
    monkeypatch.setenv("LLEM_DEVICES", "simulated")
    return data


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent (SQLite, temp dir) Dagster instance whose pools default to a limit of 1."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(
        overrides={"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}},
        temp_dir=str(home),
    ) as inst:
        yield inst
