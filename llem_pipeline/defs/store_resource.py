"""LlemStore: the DuckDB result store as a Dagster resource (CPU steps, the sensor and the report use it).

Thin: it only says where the file is; every call opens a short connection (ResultStore). The GPU step
never requires this resource.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from llem_pipeline.storage import ResultStore


class LlemStore(dg.ConfigurableResource):
    """Where results are stored: ``database`` '' = LLEM_DUCKDB or <data_dir>/llem.duckdb."""

    database: str = Field(default="", description="DuckDB file; '' = llem_pipeline.paths.duckdb_path()")
    lock_timeout_s: float = Field(default=120.0, ge=0, description="Total wait for the DuckDB file lock, s")

    def store(self) -> ResultStore:
        """Return a ResultStore on the configured file."""
        return ResultStore(self.database or None, lock_timeout_s=self.lock_timeout_s)
