"""The SQL interface: table allow-list, schema migrations and views (the SQL itself lives in .sql files).

``schema.sql`` is migration 1; later migrations live in ``migrations/NNN_*.sql`` and are listed in
``MIGRATIONS`` as ``(number, file, description)``, applied in order by ``apply_schema``. ``views.sql`` is
re-applied (CREATE OR REPLACE) whenever its SHA-256 differs from the one in ``schema_views``, so view
changes need no migration.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib import resources

import duckdb

from llem_pipeline.storage.errors import StorageError

# Tables keyed by (run_date, config_hash, run_id); a write replaces a (run_date, config_hash) partition.
PARTITIONED_TABLES: tuple[str, ...] = (
    "experiment_results",
    "process_results",
    "environment_snapshots",
    "baselines",
    "power_samples",
    "requests",
)
TABLES: tuple[str, ...] = ("experiment_configs", *PARTITIONED_TABLES)
# The store's own bookkeeping (migration 4): written by ResultStore in each partition write's transaction.
BOOKKEEPING_TABLES: tuple[str, ...] = ("partition_manifest", "write_sequence")
VIEWS: tuple[str, ...] = ("latest_results", "efficiency", "nightly_trend")
PARTITION_COLUMNS: tuple[str, ...] = ("run_date", "config_hash", "run_id")

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "schema.sql", "initial schema: configs, results, processes, environment, baselines, samples, requests"),
    (2, "migrations/002_nightly_trend_columns.sql", "previous-night columns on experiment_results for nightly_trend"),
    (3, "migrations/003_schema_views.sql", "schema_views: which views.sql is applied"),
    (4, "migrations/004_partition_manifest.sql", "partition_manifest and write_sequence: what the store wrote (audit)"),
    (5, "migrations/005_retired_configs.sql", "experiment_configs.study_file and retired_at: configs no study defines"),
)
LATEST_VERSION = MIGRATIONS[-1][0]


def sql_text(name: str) -> str:
    """Return the text of a packaged .sql file of llem_pipeline.storage (e.g. 'schema.sql')."""
    return resources.files("llem_pipeline.storage").joinpath(name).read_text(encoding="utf-8")


def checked_table(name: str, allowed: tuple[str, ...] = TABLES) -> str:
    """Return ``name`` when it is in the allow-list; raise StorageError otherwise.

    Identifiers are never taken from user input without passing through here: every table name
    that reaches an SQL string is one of ``TABLES``.
    """
    if not isinstance(name, str) or name not in allowed:
        raise StorageError(f"table {name!r} is not one of the llem tables {', '.join(allowed)}")
    return name


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """Return the highest applied migration number (0 for an empty database)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' AND schema_name = 'main'"
    ).fetchone()
    if not exists or exists[0] == 0:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def apply_schema(con: duckdb.DuckDBPyConnection) -> int:
    """Apply pending migrations and (re)create the views when views.sql changed, in the caller's transaction.

    Returns the schema version. A current database runs no DDL here.

    Raises StorageError when the database is newer than this code.
    """
    version = current_version(con)
    if version > LATEST_VERSION:
        raise StorageError(
            f"database schema version {version} is newer than this llem_pipeline ({LATEST_VERSION}): "
            "upgrade llem_pipeline or point LLEM_DUCKDB at another file"
        )
    for number, filename, description in MIGRATIONS:
        if number <= version:
            continue
        con.execute(sql_text(filename))
        con.execute(
            "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
            [number, datetime.now(UTC), description],
        )
        version = number
    views = sql_text("views.sql")
    digest = hashlib.sha256(views.encode()).hexdigest()
    applied = con.execute("SELECT sha256 FROM schema_views").fetchall()
    present = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'main' AND view_name IN (SELECT unnest(?::VARCHAR[]))",
        [list(VIEWS)],
    ).fetchone()
    if applied != [(digest,)] or not present or present[0] != len(VIEWS):
        con.execute(views)
        con.execute("DELETE FROM schema_views")
        con.execute("INSERT INTO schema_views VALUES (?, ?)", [digest, datetime.now(UTC)])
    return version


# The writer refreshes the previous-night columns (migration 2) of the configs it touched, inside
# its transaction. ``{where}`` is a fixed predicate chosen by the caller (never user text).
REFRESH_TREND_SQL = """
UPDATE experiment_results AS e
SET prev_run_date = p.prev_run_date, prev_j_per_token = p.prev_j_per_token, prev_tokens_per_s = p.prev_tokens_per_s
FROM (
    SELECT rowid AS rid,
           lag(run_date)               OVER w AS prev_run_date,
           lag(avg_energy_per_token_j) OVER w AS prev_j_per_token,
           lag(avg_tokens_per_second)  OVER w AS prev_tokens_per_s
    FROM experiment_results
    WHERE {where}
    WINDOW w AS (PARTITION BY config_hash ORDER BY run_date)
) AS p
WHERE e.rowid = p.rid
"""
