"""Where llem_pipeline keeps its files: the data dir, the DuckDB file, run folders, studies, models.

``LLEM_DATA_DIR`` overrides the data dir (default: ``<checkout>/data`` when running from a source
checkout, else ``~/.local/share/llem``); ``LLEM_DUCKDB`` overrides the DuckDB file;
``LLEM_STUDIES_DIR`` overrides the studies folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONFIG_HASH = re.compile(r"^[0-9a-f]{16}$")
_RUN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _in_checkout() -> bool:
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "llem_pipeline").is_dir()


def data_dir() -> Path:
    """Return the data directory (created if missing)."""
    env = os.environ.get("LLEM_DATA_DIR")
    path = Path(env) if env else (PROJECT_ROOT / "data" if _in_checkout() else Path.home() / ".local/share/llem")
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def duckdb_path() -> Path:
    """Return the DuckDB file path (``LLEM_DUCKDB`` or ``<data_dir>/llem.duckdb``)."""
    env = os.environ.get("LLEM_DUCKDB")
    return Path(env).expanduser().resolve() if env else data_dir() / "llem.duckdb"


def studies_dir() -> Path:
    """Return the folder holding ``*.yaml`` study files (``LLEM_STUDIES_DIR`` or ``<checkout>/studies``)."""
    env = os.environ.get("LLEM_STUDIES_DIR")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "studies"


def models_dir() -> Path:
    """Return the folder for locally built models (``<data_dir>/models``)."""
    return data_dir() / "models"


def runs_dir() -> Path:
    """Return the root of run folders (``<data_dir>/runs``)."""
    return data_dir() / "runs"


def run_dir(run_date: str, config_hash: str, run_id: str) -> Path:
    """Return ``<data_dir>/runs/<run_date>/<config_hash>/<run_id>``, validating each part.

    Raises ValueError when a part could escape the data dir (wrong format, '..', separators).
    """
    if not _RUN_DATE.fullmatch(run_date):
        raise ValueError(f"run_date={run_date!r} must be YYYY-MM-DD")
    if not _CONFIG_HASH.fullmatch(config_hash):
        raise ValueError(f"config_hash={config_hash!r} must be 16 lowercase hex characters")
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run_id={run_id!r} must match [A-Za-z0-9_-]{{1,64}}")
    return runs_dir() / run_date / config_hash / run_id


def ensure_inside(path: Path, root: Path | None = None) -> Path:
    """Return ``path`` resolved; raise ValueError when it lies outside ``root`` (default: the data dir)."""
    root = (root or data_dir()).resolve()
    resolved = Path(path).expanduser().resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"path {str(path)!r} is outside the data dir {str(root)!r}: output paths must stay inside it")
    return resolved
