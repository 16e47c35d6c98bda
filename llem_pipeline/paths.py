"""Default locations of llem_pipeline's files: the data dir, the DuckDB file, the studies folder, models.

The Dagster code location configures its resources in ``llem_pipeline/defs/resources.py`` (environment
variables through ``dg.EnvVar``) and passes explicit values here; the command line (``llem``) and scripts
use the same defaults: ``LLEM_DATA_DIR`` (default ``<checkout>/data`` from a source checkout, else
``~/.local/share/llem``), ``LLEM_DUCKDB`` (default ``<data dir>/llem.duckdb``) and ``LLEM_STUDIES_DIR``
(default ``<checkout>/studies``). The README's configuration table lists every variable.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _in_checkout() -> bool:
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "llem_pipeline").is_dir()


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory (created if missing): ``override``, else LLEM_DATA_DIR, else the default."""
    env = override or os.environ.get("LLEM_DATA_DIR")
    path = Path(env) if env else (PROJECT_ROOT / "data" if _in_checkout() else Path.home() / ".local/share/llem")
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def duckdb_path(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the DuckDB file path: ``override``, else LLEM_DUCKDB, else ``<data_dir>/llem.duckdb``."""
    env = override or os.environ.get("LLEM_DUCKDB")
    return Path(env).expanduser().resolve() if env else data_dir() / "llem.duckdb"


def studies_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of ``*.yaml`` study files: ``override``, else LLEM_STUDIES_DIR, else ``<checkout>/studies``."""
    env = override or os.environ.get("LLEM_STUDIES_DIR")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "studies"


def models_dir() -> Path:
    """Return the folder for locally built models (``<data_dir>/models``)."""
    return data_dir() / "models"


def runs_dir() -> Path:
    """Return the root of run folders (``<data_dir>/runs``)."""
    return data_dir() / "runs"
