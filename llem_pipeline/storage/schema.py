"""The SQL interface: table allow-list, schema migrations and views (the SQL itself lives in .sql files).

``schema.sql`` is migration 1; later migrations live in ``migrations/NNN_*.sql`` and are listed in
``MIGRATIONS`` as ``(number, file, description)``. ``apply_schema`` applies every listed migration the
database has not recorded in ``schema_version``, in number order (so a migration merged in below the
highest applied number still runs), each followed by its Python step when ``PYTHON_STEPS`` names one
(migrate.py: back-fills SQL cannot compute). ``views.sql`` is re-applied (CREATE OR REPLACE) whenever
its SHA-256 differs from the one in ``schema_views``, so view changes need no migration.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib import resources

import duckdb

from llem_pipeline.storage.errors import StorageError

# The measurement tables: every row belongs to one run, identified by (config_hash, hardware_id, run_id)
# with run_date beside it; a write replaces the rows of the runs it writes and nothing else.
PARTITIONED_TABLES: tuple[str, ...] = (
    "experiment_results",
    "process_results",
    "environment_snapshots",
    "baselines",
    "power_samples",
    "requests",
)
TABLES: tuple[str, ...] = ("experiment_configs", *PARTITIONED_TABLES)
# The store's own bookkeeping, written by ResultStore in each write's transaction: what it wrote
# (migration 4, re-keyed by run in migration 6) and the statistics the views project (migration 6).
BOOKKEEPING_TABLES: tuple[str, ...] = ("partition_manifest", "write_sequence", "config_day_stats")
VIEWS: tuple[str, ...] = ("latest_results", "config_stats", "efficiency", "nightly_trend", "request_energy",
                          "energy_latency", "energy_at_target", "carbon_cost", "published_comparison")
# Tables the user maintains (migration 7): read by the views at query time, never part of a config hash.
USER_TABLES: tuple[str, ...] = ("latency_targets", "factors", "published_results")
# The columns that say which run a row belongs to (run_date beside the key of the measurement).
RUN_KEY_COLUMNS: tuple[str, ...] = ("run_date", "config_hash", "hardware_id", "run_id")

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "schema.sql", "initial schema: configs, results, processes, environment, baselines, samples, requests"),
    (2, "migrations/002_nightly_trend_columns.sql", "previous-night columns on experiment_results for nightly_trend"),
    (3, "migrations/003_schema_views.sql", "schema_views: which views.sql is applied"),
    (4, "migrations/004_partition_manifest.sql", "partition_manifest and write_sequence: what the store wrote (audit)"),
    (5, "migrations/005_retired_configs.sql", "experiment_configs.study_file and retired_at: configs no study defines"),
    (6, "migrations/006_run_identity.sql",
     "runs keyed by (config_hash, hardware_id, run_id): hardware_id, workload_hash, cycle, measurement_key, label; "
     "j_per_token / tokens_per_s; config_day_stats"),
    (7, "migrations/007_energy_attribution.sql",
     "energy per request and per phase (requests, experiment_results), tpot_p99_ms; latency_targets, factors, "
     "published_results"),
)
# Python steps run right after a migration's .sql file, by migration number (names in migrate.PYTHON_STEPS).
PYTHON_STEPS: dict[int, str] = {6: "backfill_run_identity"}
LATEST_VERSION = max(number for number, _, _ in MIGRATIONS)


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


def applied_versions(con: duckdb.DuckDBPyConnection) -> set[int]:
    """Return the migration numbers recorded in schema_version (empty for an empty database)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' AND schema_name = 'main'"
    ).fetchone()
    if not exists or exists[0] == 0:
        return set()
    return {int(r[0]) for r in con.execute("SELECT DISTINCT version FROM schema_version").fetchall()}


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """Return the highest applied migration number (0 for an empty database)."""
    return max(applied_versions(con), default=0)


def apply_schema(con: duckdb.DuckDBPyConnection, up_to: int | None = None) -> int:
    """Apply the migrations not yet applied (numbers <= ``up_to`` when given) and, when all are applied,
    (re)create the views if views.sql changed; all in the caller's transaction.

    Returns the schema version (the highest applied migration number). A current database runs no DDL
    here. ``up_to`` exists to build databases as an older version of this code left them (tests).

    Raises StorageError when the database is newer than this code.
    """
    applied = applied_versions(con)
    version = max(applied, default=0)
    if version > LATEST_VERSION:
        raise StorageError(
            f"database schema version {version} is newer than this llem_pipeline ({LATEST_VERSION}): "
            "upgrade llem_pipeline or point LLEM_DUCKDB at another file"
        )
    for number, filename, description in sorted(MIGRATIONS):
        if number in applied or (up_to is not None and number > up_to):
            continue
        con.execute(sql_text(filename))
        if number in PYTHON_STEPS:
            from llem_pipeline.storage.migrate import PYTHON_STEPS as STEPS  # imports the domain models

            STEPS[PYTHON_STEPS[number]](con)
        con.execute(
            "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
            [number, datetime.now(UTC), description],
        )
        applied.add(number)
        version = max(version, number)
    if up_to is not None and up_to < LATEST_VERSION:
        return version
    views = sql_text("views.sql")
    digest = hashlib.sha256(views.encode()).hexdigest()
    views_applied = con.execute("SELECT sha256 FROM schema_views").fetchall()
    present = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE schema_name = 'main' AND view_name IN (SELECT unnest(?::VARCHAR[]))",
        [list(VIEWS)],
    ).fetchone()
    if views_applied != [(digest,)] or not present or present[0] != len(VIEWS):
        con.execute(views)
        con.execute("DELETE FROM schema_views")
        con.execute("INSERT INTO schema_views VALUES (?, ?)", [digest, datetime.now(UTC)])
    return version
